//! Synthetic execution histories with planted structure, to measure mining: composites (pairs
//! and chains of patterns with a value flowing from one's output into the next's input, for a
//! share of the first's executions) and shared step sequences (a run of actions embedded in
//! several patterns), among patterns of random steps, plus noise — executions with a value
//! reused at random from any earlier output (spurious flows), and runs that fail part-way.

use crate::mine::{StepTrace, Trace, value_hash};

/// A small deterministic generator (SplitMix64): the same seed, the same history.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

#[derive(Debug, Clone)]
pub struct Planted {
    /// Composites: pattern names in order.
    pub composites: Vec<Vec<String>>,
    /// Shared sequences: their calls.
    pub shared: Vec<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct HistorySpec {
    pub executions: usize,
    pub patterns: usize,
    pub actions: usize,
    pub composites: usize,
    pub chains: usize,
    pub shared: usize,
    /// Share of executions that are noise.
    pub noise: f64,
    pub seed: u64,
}

impl Default for HistorySpec {
    fn default() -> Self {
        Self {
            executions: 100_000,
            patterns: 60,
            actions: 200,
            composites: 8,
            chains: 2,
            shared: 5,
            noise: 0.10,
            seed: 7,
        }
    }
}

/// Generates a history and what was planted in it.
pub fn history(spec: &HistorySpec) -> (Vec<Trace>, Planted) {
    let mut rng = Rng::new(spec.seed);
    let action = |i: usize| format!("svc{}.v1.Service{}/Method{}", i % 17, i % 23, i);
    // Shared sequences: runs of 3–4 actions from a reserved range.
    let mut shared: Vec<Vec<String>> = Vec::new();
    for k in 0..spec.shared {
        let len = 3 + k % 2;
        shared.push((0..len).map(|j| action(spec.actions + k * 10 + j)).collect());
    }
    // Patterns: 3–7 random steps; some embed a shared sequence.
    let mut steps_of: Vec<Vec<String>> = Vec::new();
    for p in 0..spec.patterns {
        let n = 3 + rng.below(5);
        let mut calls: Vec<String> = (0..n).map(|_| action(rng.below(spec.actions))).collect();
        // Patterns 0..shared*4 carry shared sequence p / 4 (4 patterns each).
        if p < spec.shared * 4 {
            let at = rng.below(calls.len() + 1);
            let seq = &shared[p / 4];
            for (j, c) in seq.iter().enumerate() {
                calls.insert(at + j, c.clone());
            }
        }
        steps_of.push(calls);
    }
    let name = |p: usize| format!("pattern_{p:03}");
    // Composites: disjoint pairs from the back of the list, then chains of three.
    let mut composites: Vec<Vec<usize>> = Vec::new();
    let mut next = spec.patterns;
    for _ in 0..spec.composites {
        next -= 2;
        composites.push(vec![next, next + 1]);
    }
    for _ in 0..spec.chains {
        next -= 3;
        composites.push(vec![next, next + 1, next + 2]);
    }
    // Which composite a pattern starts, and with what share of its executions.
    let mut starts: Vec<Option<(usize, f64)>> = vec![None; spec.patterns];
    for (ci, c) in composites.iter().enumerate() {
        starts[c[0]] = Some((ci, 0.3 + 0.1 * (ci % 4) as f64));
    }

    let mut traces = Vec::with_capacity(spec.executions);
    let mut clock: u64 = 1_700_000_000_000;
    let mut counter: u64 = 0;
    let mut fresh = |rng: &mut Rng| {
        counter += 1;
        value_hash(&format!("v{}-{}", counter, rng.next_u64()))
    };
    let mut recent_outputs: Vec<ValueLike> = Vec::new();
    let make = |p: usize,
                id: u64,
                started: u64,
                input: Vec<(String, u64)>,
                output: Vec<(String, u64)>,
                rng: &mut Rng,
                steps_of: &Vec<Vec<String>>| {
        let fail_at = if rng.chance(0.03) { Some(rng.below(steps_of[p].len())) } else { None };
        let steps: Vec<StepTrace> = steps_of[p]
            .iter()
            .enumerate()
            .take(fail_at.map_or(usize::MAX, |f| f + 1))
            .map(|(j, c)| StepTrace {
                step_id: format!("s{j}"),
                call: c.clone(),
                succeeded: fail_at != Some(j),
                attempts: 1,
                first_code: if fail_at == Some(j) { "INTERNAL".into() } else { "OK".into() },
                duration_ms: 1.0 + (rng.below(20) as f64),
            })
            .collect();
        Trace {
            id: format!("exec-{id:08}"),
            tenant: "default".into(),
            pattern: name(p),
            version: "1.0.0".into(),
            started_ms: started,
            ended_ms: started + 20,
            succeeded: fail_at.is_none(),
            input,
            output,
            steps,
        }
    };
    while traces.len() < spec.executions {
        clock += 1 + rng.below(40) as u64;
        let noise = rng.chance(spec.noise);
        let p = rng.below(spec.patterns);
        let id = traces.len() as u64;
        let mut input = vec![("key".to_string(), fresh(&mut rng)), ("name".to_string(), fresh(&mut rng))];
        if noise && !recent_outputs.is_empty() {
            // A value reused from a random earlier output: a spurious flow.
            let v = recent_outputs[rng.below(recent_outputs.len())];
            input.push(("ref_id".into(), v.0));
        }
        let output = vec![("result_id".to_string(), fresh(&mut rng)), ("code".to_string(), fresh(&mut rng))];
        let trace = make(p, id, clock, input, output.clone(), &mut rng, &steps_of);
        let ok = trace.succeeded;
        let ended = trace.ended_ms;
        traces.push(trace);
        if recent_outputs.len() < 4096 {
            recent_outputs.push(ValueLike(output[0].1));
        } else {
            let at = rng.below(recent_outputs.len());
            recent_outputs[at] = ValueLike(output[0].1);
        }
        // Planted continuation: the next pattern(s) of the composite, fed the result.
        if let Some((ci, share)) = starts[p]
            && ok
            && !noise
            && rng.chance(share)
        {
            let chain = composites[ci].clone();
            let mut value = output[0].1;
            let mut at = ended;
            for &q in &chain[1..] {
                if traces.len() >= spec.executions {
                    break;
                }
                at += 5 + rng.below(2000) as u64;
                let id = traces.len() as u64;
                let input = vec![("user_id".to_string(), value), ("extra".to_string(), fresh(&mut rng))];
                let out = vec![("result_id".to_string(), fresh(&mut rng))];
                value = out[0].1;
                let t = make(q, id, at, input, out, &mut rng, &steps_of);
                traces.push(t);
            }
        }
    }
    let planted =
        Planted { composites: composites.iter().map(|c| c.iter().map(|&p| name(p)).collect()).collect(), shared };
    (traces, planted)
}

#[derive(Clone, Copy)]
struct ValueLike(u64);
