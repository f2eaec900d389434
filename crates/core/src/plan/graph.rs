//! The step graph: explicit `depends_on` edges added to the inferred ones, cycles found and
//! reported once each, and the dependants and roots the engine schedules by.

use crate::{diagnostic::Diagnostics, pb};

use super::ids::{StepIds, unknown_step};

/// Pass 13: `depends_on`, after the edges inferred from expressions (the order the engine sees
/// them in `CompiledStep::deps`).
pub(super) fn add_depends_on(doc: &pb::Pattern, ids: &StepIds<'_>, deps: &mut [Vec<usize>], diags: &mut Diagnostics) {
    for (i, step) in doc.steps.iter().enumerate() {
        for (j, dep) in step.depends_on.iter().enumerate() {
            match ids.get(dep.as_str()) {
                Some(&t) if t == i => {
                    diags.error(format!("steps[{i}].depends_on[{j}]"), "a step cannot depend on itself")
                }
                Some(&t) => {
                    if !deps[i].contains(&t) {
                        deps[i].push(t);
                    }
                }
                None => diags.error(format!("steps[{i}].depends_on[{j}]"), unknown_step(dep, ids)),
            }
        }
    }
}

/// Pass 16: cycles. Run even when other checks failed: a cycle is independent of them, and an
/// author should see every problem in one round trip.
pub(super) fn check_cycles(deps: &[Vec<usize>], doc: &pb::Pattern, diags: &mut Diagnostics) {
    // Kahn's algorithm; whatever cannot be ordered sits on or behind a cycle.
    let n = deps.len();
    let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
    let dependants = dependants(deps);
    let mut queue: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut done = vec![false; n];
    while let Some(i) = queue.pop() {
        done[i] = true;
        for &j in &dependants[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                queue.push(j);
            }
        }
    }
    // Report each cycle once, by walking dependencies from an unfinished step until one repeats.
    let mut reported = vec![false; n];
    for start in 0..n {
        if done[start] || reported[start] {
            continue;
        }
        let mut path = vec![start];
        let mut cur = start;
        while let Some(&next) = deps[cur].iter().find(|&&d| !done[d]) {
            if let Some(pos) = path.iter().position(|&p| p == next) {
                let cycle = &path[pos..];
                if cycle.iter().all(|&c| !reported[c]) {
                    let names: Vec<&str> = cycle.iter().rev().map(|&c| doc.steps[c].id.as_str()).collect();
                    let first = *cycle.iter().min().unwrap_or(&start);
                    diags.error(
                        format!("steps[{first}]"),
                        format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]),
                    );
                }
                for &c in cycle {
                    reported[c] = true;
                }
                break;
            }
            path.push(next);
            cur = next;
        }
        reported[start] = true;
    }
}

/// For each step, the steps that depend on it (in step order).
pub(super) fn dependants(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut dependants = vec![Vec::new(); deps.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependants[d].push(i);
        }
    }
    dependants
}

/// Steps with no dependencies: where execution starts.
pub(super) fn roots(deps: &[Vec<usize>]) -> Vec<usize> {
    (0..deps.len()).filter(|&i| deps[i].is_empty()).collect()
}
