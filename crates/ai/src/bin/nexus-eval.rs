//! Measures GeneratePattern's synthesis on the evaluation set (`eval/generate/tasks.yaml`) and
//! SuggestPatterns' mining on synthetic histories.
//!
//! ```text
//! cargo run --release -p nexus-ai --bin nexus-eval -- generate        # per task and totals
//! cargo run --release -p nexus-ai --bin nexus-eval -- generate --check  # exit 1 below the goals
//! cargo run --release -p nexus-ai --bin nexus-eval -- mine            # recall, precision, speed
//! ```

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use nexus_ai::{Goal, GoalField, Index, Options, canon::Shape, generate};
use nexus_core::{Catalog, NoPatterns, catalog::DescriptorSource, compile, document};
use serde::Deserialize;

#[derive(Parser)]
#[command(about = "Evaluate Nexus's pattern synthesis and mining")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generation tasks: type-checks, correct up to renaming (top-1, top-5), time.
    Generate {
        /// The repository root (default: found from the current directory).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Only tasks whose id contains this.
        #[arg(long)]
        only: Option<String>,
        /// Exit 1 unless type-checks are 100 %, top-5 ≥ 80 % and p95 < 500 ms on the 500-action
        /// catalog.
        #[arg(long)]
        check: bool,
        /// Actions in the large catalog (the three catalogs plus generated services).
        #[arg(long, default_value_t = 500)]
        large: usize,
        /// Print the top candidate of each task that misses.
        #[arg(long)]
        verbose: bool,
        /// The p95 goal on the large catalog, in milliseconds (a looser one for debug builds).
        #[arg(long, default_value_t = 500)]
        p95_goal_ms: u64,
    },
    /// Mining: synthetic histories with planted composites and shared sub-sequences plus noise.
    Mine {
        /// Executions in the speed run.
        #[arg(long, default_value_t = 1_000_000)]
        executions: usize,
        #[arg(long)]
        check: bool,
        /// The goal for mining the speed run, in seconds (a looser one for debug builds).
        #[arg(long, default_value_t = 10)]
        time_goal_s: u64,
    },
}

#[derive(Deserialize)]
struct Task {
    id: String,
    catalog: String,
    goal: TaskGoal,
    reference: String,
}

#[derive(Deserialize, Default)]
struct TaskGoal {
    #[serde(default)]
    text: String,
    #[serde(default)]
    inputs: Vec<TaskField>,
    #[serde(default)]
    outputs: Vec<String>,
    end_with: Option<String>,
    #[serde(default, rename = "use")]
    use_actions: Vec<String>,
}

#[derive(Deserialize)]
struct TaskField {
    name: String,
    #[serde(default, rename = "type")]
    ty: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate { root, only, check, large, verbose, p95_goal_ms } => run_generate(
            &root.unwrap_or_else(find_root),
            only.as_deref(),
            check,
            large,
            verbose,
            Duration::from_millis(p95_goal_ms),
        ),
        Command::Mine { executions, check, time_goal_s } => {
            nexus_ai_mine(executions, check, Duration::from_secs(time_goal_s))
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("nexus-eval: {e}");
            ExitCode::from(2)
        }
    }
}

fn nexus_ai_mine(executions: usize, check: bool, time_goal: Duration) -> Result<bool, String> {
    use nexus_ai::{mine, synthetic};
    let mut ok = true;
    for (label, n) in [("accuracy", 100_000usize), ("speed", executions)] {
        let spec = synthetic::HistorySpec { executions: n, ..Default::default() };
        let started = Instant::now();
        let (traces, planted) = synthetic::history(&spec);
        let generated = started.elapsed();
        let started = Instant::now();
        let mined = mine::mine(&traces, &mine::MiningOptions::default());
        let took = started.elapsed();
        let found_composites: Vec<Vec<String>> = mined.composites.iter().map(|c| c.patterns.clone()).collect();
        let found_shared: Vec<Vec<String>> = mined.shared.iter().map(|s| s.calls.clone()).collect();
        let hits_c = planted.composites.iter().filter(|p| found_composites.contains(p)).count();
        let hits_s = planted.shared.iter().filter(|p| found_shared.contains(p)).count();
        let true_c = found_composites.iter().filter(|f| planted.composites.contains(f)).count();
        let true_s = found_shared.iter().filter(|f| planted.shared.contains(f)).count();
        let planted_n = planted.composites.len() + planted.shared.len();
        let found_n = found_composites.len() + found_shared.len();
        let recall = (hits_c + hits_s) as f64 / planted_n.max(1) as f64;
        let precision = (true_c + true_s) as f64 / found_n.max(1) as f64;
        println!(
            "{label}: {} executions ({:.0} % noise; generated in {:.1} s) mined in {:.2} s: composites {hits_c}/{} found, {true_c}/{} proposed are planted; shared sequences {hits_s}/{} found, {true_s}/{} proposed are planted; recall {:.0} %, precision {:.0} %",
            traces.len(),
            spec.noise * 100.0,
            generated.as_secs_f64(),
            took.as_secs_f64(),
            planted.composites.len(),
            found_composites.len(),
            planted.shared.len(),
            found_shared.len(),
            recall * 100.0,
            precision * 100.0
        );
        for f in found_composites.iter().filter(|f| !planted.composites.contains(f)) {
            println!("  not planted: composite {}", f.join(" → "));
        }
        for f in found_shared.iter().filter(|f| !planted.shared.contains(f)) {
            println!("  not planted: shared {}", f.join(" → "));
        }
        ok &= recall >= 0.9 && precision >= 0.8 && (label != "speed" || took < time_goal);
    }
    if check {
        println!(
            "goals (recall ≥ 90 %, precision ≥ 80 %, 1,000,000 executions mined in < 10 s): {}",
            if ok { "met" } else { "NOT met" }
        );
        return Ok(ok);
    }
    Ok(true)
}

fn find_root() -> PathBuf {
    let mut dir = std::env::current_dir().unwrap_or_default();
    loop {
        if dir.join("eval/generate/tasks.yaml").exists() {
            return dir;
        }
        if !dir.pop() {
            return PathBuf::from(".");
        }
    }
}

/// Compiles every `.proto` under `dir` (imports resolved from `dir`) into a catalog backend.
fn add_protos(builder: &mut nexus_core::CatalogBuilder, backend: &str, dir: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    collect_protos(dir, dir, &mut files)?;
    files.sort();
    let fds = protox::compile(&files, [dir]).map_err(|e| format!("{}: {e}", dir.display()))?;
    builder
        .add_backend(backend, "http://127.0.0.1:1", DescriptorSource::Protos, fds, &[])
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn collect_protos(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_protos(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            let rel = path.strip_prefix(root).map_err(|e| e.to_string())?;
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

fn catalog_of(root: &Path, names: &[&str], filler: usize) -> Result<Catalog, String> {
    let mut builder = Catalog::builder();
    for name in names {
        let dir = if *name == "demo" { root.join("proto/demo") } else { root.join("eval/catalogs").join(name) };
        add_protos(&mut builder, name, &dir)?;
    }
    if filler > 0 {
        let dir = std::env::temp_dir().join(format!("nexus-eval-filler-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        write_filler(&dir, filler)?;
        let result = add_protos(&mut builder, "filler", &dir);
        let _ = std::fs::remove_dir_all(&dir);
        result?;
    }
    Ok(builder.build())
}

/// Entities of the generated services: many share words with the evaluation's catalogs
/// (customer, order, user, video, account, payment) the way unrelated teams' APIs do.
const ENTITIES: &[(&str, &str)] = &[
    ("crm", "Contact"),
    ("crm", "Lead"),
    ("crm", "Deal"),
    ("support", "Ticket"),
    ("support", "Agent"),
    ("hr", "Employee"),
    ("hr", "Team"),
    ("hr", "Leave"),
    ("project", "Project"),
    ("project", "Task"),
    ("project", "Milestone"),
    ("docs", "Document"),
    ("docs", "Folder"),
    ("booking", "Reservation"),
    ("booking", "Room"),
    ("fleet", "Vehicle"),
    ("fleet", "Driver"),
    ("fleet", "Route"),
    ("iot", "Device"),
    ("iot", "Sensor"),
    ("iot", "Alert"),
    ("ops", "Incident"),
    ("ops", "Runbook"),
    ("finance", "Invoice"),
    ("finance", "Ledger"),
    ("finance", "Refund"),
    ("school", "Course"),
    ("school", "Student"),
    ("school", "Grade"),
    ("health", "Patient"),
    ("health", "Appointment"),
    ("legal", "Contract"),
    ("legal", "Signature"),
    ("events", "Venue"),
    ("events", "Ticket"),
    ("survey", "Survey"),
    ("survey", "Response"),
    ("wiki", "Page"),
    ("chat", "Channel"),
    ("chat", "Thread"),
    ("forum", "Post"),
    ("auth", "Session"),
    ("auth", "Token"),
    ("billing", "Plan"),
    ("warehouse", "Pallet"),
    ("warehouse", "Shelf"),
    ("recruit", "Candidate"),
    ("recruit", "Interview"),
    ("social", "Profile"),
    ("social", "Follow"),
];

const VERBS: &[(&str, &str)] = &[
    ("Create", "Creates a new"),
    ("Get", "Reads one"),
    ("Update", "Changes the fields of a"),
    ("Delete", "Deletes a"),
    ("List", "Lists, a page at a time, every"),
    ("Archive", "Archives a"),
    ("Assign", "Assigns an owner to a"),
    ("Approve", "Approves a"),
    ("Export", "Exports as a file a"),
    ("Search", "Searches by text for"),
];

/// Writes services with `actions` RPCs in total, one file per entity.
fn write_filler(dir: &Path, actions: usize) -> Result<(), String> {
    let mut written = 0;
    let mut round = 0;
    while written < actions {
        for (i, (domain, entity)) in ENTITIES.iter().enumerate() {
            if written >= actions {
                break;
            }
            let lower = snake(entity);
            let package = format!("filler{round}.{domain}.{lower}.v1");
            let other = snake(ENTITIES[(i + 7) % ENTITIES.len()].1);
            let owner = ["user", "customer", "account", "employee", "team"][i % 5];
            let mut rpcs = String::new();
            let mut messages = format!(
                "// A {lower} of the {domain} domain.\nmessage {entity} {{\n  // Server-assigned id.\n  string id = 1;\n  string title = 2;\n  // The {owner} who owns it.\n  string {owner}_id = 3;\n  // The related {other}.\n  string {other}_id = 4;\n  int64 version = 5;\n  string status = 6;\n  string email = 7;\n}}\n"
            );
            for (verb, phrase) in VERBS {
                if written >= actions {
                    break;
                }
                let method = format!("{verb}{entity}");
                rpcs.push_str(&format!(
                    "  // {phrase} {lower}.\n  rpc {method}({method}Request) returns ({method}Response);\n"
                ));
                let request = match *verb {
                    "Create" => format!(
                        "  string title = 1;\n  // The {owner} who owns it.\n  string {owner}_id = 2;\n  string {other}_id = 3;\n  string email = 4;\n"
                    ),
                    "List" | "Search" => format!(
                        "  string query = 1;\n  int32 page_size = 2;\n  string page_token = 3;\n  string {owner}_id = 4;\n"
                    ),
                    "Assign" => {
                        format!("  string {lower}_id = 1;\n  // The {owner} to assign.\n  string {owner}_id = 2;\n")
                    }
                    _ => format!("  string {lower}_id = 1;\n  string reason = 2;\n"),
                };
                let response = match *verb {
                    "List" | "Search" => format!("  repeated {entity} items = 1;\n  string next_page_token = 2;\n"),
                    "Delete" | "Archive" => "  bool done = 1;\n".to_string(),
                    "Export" => "  string url = 1;\n  int64 bytes = 2;\n".to_string(),
                    _ => format!("  {entity} {lower} = 1;\n"),
                };
                messages.push_str(&format!(
                    "message {method}Request {{\n{request}}}\nmessage {method}Response {{\n{response}}}\n"
                ));
                written += 1;
            }
            let text = format!(
                "// Generated service of the 500-action evaluation catalog.\nsyntax = \"proto3\";\npackage {package};\n\n// {entity}s of the {domain} domain.\nservice {entity}Service {{\n{rpcs}}}\n\n{messages}"
            );
            let file = dir.join(format!("r{round}_{domain}_{lower}.proto"));
            std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
        }
        round += 1;
    }
    Ok(())
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

struct Outcome {
    id: String,
    checked: bool,
    candidates: usize,
    top1: bool,
    top5: bool,
    time: Duration,
    note: String,
}

fn run_generate(
    root: &Path,
    only: Option<&str>,
    check: bool,
    large: usize,
    verbose: bool,
    p95_goal: Duration,
) -> Result<bool, String> {
    let path = root.join("eval/generate/tasks.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tasks: Vec<Task> = serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let tasks: Vec<Task> = tasks.into_iter().filter(|t| only.is_none_or(|o| t.id.contains(o))).collect();

    let mut catalogs: HashMap<String, (Catalog, Index)> = HashMap::new();
    for name in ["demo", "commerce", "media"] {
        let catalog = catalog_of(root, &[name], 0)?;
        let index = Index::new(&catalog);
        catalogs.insert(name.to_string(), (catalog, index));
    }
    let base_actions: usize = catalogs.values().map(|(c, _)| c.actions().count()).sum();
    let big = catalog_of(root, &["demo", "commerce", "media"], large.saturating_sub(base_actions))?;
    let big_index = Index::new(&big);
    let together = HashMap::new();
    let options = Options { limit: 5, allowed: None, together: &together };

    println!(
        "{:<14} {:>6} {:>5} {:>5} {:>5} {:>9}   {:>5} {:>5} {:>9}",
        "task", "checks", "cands", "top1", "top5", "time", "top1", "top5", "time"
    );
    println!(
        "{:<14} {:>6} {:>5} {:>5} {:>5} {:>9}   {:>27}",
        "",
        "",
        "",
        "",
        "",
        "",
        format!("({}-action catalog)", big_index.actions.len())
    );
    let mut own = Vec::new();
    let mut bigs = Vec::new();
    let mut references_ok = true;
    for task in &tasks {
        let Some((catalog, index)) = catalogs.get(&task.catalog) else {
            return Err(format!("task {}: unknown catalog `{}`", task.id, task.catalog));
        };
        let reference = document::parse(&task.reference).map_err(|e| format!("task {}: reference: {e}", task.id))?;
        if let Err(diags) = compile(&reference, catalog, &NoPatterns) {
            references_ok = false;
            println!(
                "{}: the reference does not type-check: {}",
                task.id,
                diags.iter().map(|d| format!("{}: {}", d.path, d.message)).collect::<Vec<_>>().join("; ")
            );
        }
        let goal = goal_of(task);
        let wanted: Vec<String> = goal.outputs.iter().map(|o| o.name.clone()).collect();
        let want = Shape::of(&reference);
        let run = |catalog: &Catalog, index: &Index| -> Outcome {
            let started = Instant::now();
            let result = generate(&goal, index, catalog, &NoPatterns, &options);
            let time = started.elapsed();
            match result {
                Ok(g) => {
                    let shapes: Vec<Shape> = g.candidates.iter().map(|c| Shape::of(&c.pattern)).collect();
                    let top1 = shapes.first().is_some_and(|s| s.matches(&want, &wanted));
                    let top5 = shapes.iter().take(5).any(|s| s.matches(&want, &wanted));
                    let note = if !top1 && verbose {
                        shapes.first().map(|s| differences(s, &want, &wanted)).unwrap_or_else(|| "no candidate".into())
                    } else {
                        String::new()
                    };
                    // Every candidate was compiled by `generate`; a rejected one counts as a
                    // failed type-check.
                    Outcome {
                        id: task.id.clone(),
                        checked: g.rejected == 0,
                        candidates: g.candidates.len(),
                        top1,
                        top5,
                        time,
                        note,
                    }
                }
                Err(e) => Outcome {
                    id: task.id.clone(),
                    checked: true,
                    candidates: 0,
                    top1: false,
                    top5: false,
                    time,
                    note: e.to_string(),
                },
            }
        };
        let a = run(catalog, index);
        let b = run(&big, &big_index);
        println!(
            "{:<14} {:>6} {:>5} {:>5} {:>5} {:>7.1}ms   {:>5} {:>5} {:>7.1}ms",
            a.id,
            if a.checked { "yes" } else { "NO" },
            a.candidates,
            mark(a.top1),
            mark(a.top5),
            a.time.as_secs_f64() * 1e3,
            mark(b.top1),
            mark(b.top5),
            b.time.as_secs_f64() * 1e3
        );
        if !a.note.is_empty() {
            let g = &task.goal;
            println!(
                "    goal: text={:?} inputs={:?} outputs={:?} end_with={:?} use={:?}",
                g.text,
                g.inputs.iter().map(|f| format!("{}:{}", f.name, f.ty)).collect::<Vec<_>>(),
                g.outputs,
                g.end_with,
                g.use_actions
            );
            println!("    {}", a.note.replace('\n', "\n    "));
        }
        own.push(a);
        bigs.push(b);
    }
    let summary = |name: &str, outcomes: &[Outcome]| -> (f64, f64, f64, Duration) {
        let n = outcomes.len().max(1) as f64;
        let checked = outcomes.iter().filter(|o| o.checked).count() as f64 / n;
        let top1 = outcomes.iter().filter(|o| o.top1).count() as f64 / n;
        let top5 = outcomes.iter().filter(|o| o.top5).count() as f64 / n;
        let mut times: Vec<Duration> = outcomes.iter().map(|o| o.time).collect();
        times.sort();
        let p = |q: f64| times.get(((times.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default();
        println!(
            "{name}: {} tasks, type-checks {:.0} %, top-1 {:.0} %, top-5 {:.0} %, time p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            outcomes.len(),
            checked * 100.0,
            top1 * 100.0,
            top5 * 100.0,
            p(0.5).as_secs_f64() * 1e3,
            p(0.95).as_secs_f64() * 1e3,
            times.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
        (checked, top1, top5, p(0.95))
    };
    println!();
    for catalog in ["demo", "commerce", "media"] {
        let subset: Vec<Outcome> = own.iter().filter(|o| o.id.starts_with(catalog)).map(clone_outcome).collect();
        if !subset.is_empty() {
            summary(catalog, &subset);
        }
    }
    let (checked, _, top5, _) = summary("total (own catalogs)", &own);
    let (big_checked, _, _, big_p95) = summary(&format!("total ({}-action catalog)", big_index.actions.len()), &bigs);
    let ok = references_ok && checked == 1.0 && big_checked == 1.0 && top5 >= 0.8 && big_p95 < p95_goal;
    if check {
        println!(
            "goals (type-checks 100 %, top-5 ≥ 80 %, p95 < {} ms on the large catalog): {}",
            p95_goal.as_millis(),
            if ok { "met" } else { "NOT met" }
        );
        return Ok(ok);
    }
    Ok(true)
}

/// What a candidate has that the reference has not (`+`) and the reverse (`-`).
fn differences(got: &Shape, want: &Shape, wanted: &[String]) -> String {
    let mut out = Vec::new();
    for c in &got.calls {
        if !want.calls.contains(c) {
            out.push(format!("+call {c}"));
        }
    }
    for c in &want.calls {
        if !got.calls.contains(c) {
            out.push(format!("-call {c}"));
        }
    }
    for w in got.wires.difference(&want.wires) {
        out.push(format!("+wire {}.{} -> {}.{}", short(&w.0), w.1, short(&w.2), w.3));
    }
    for w in want.wires.difference(&got.wires) {
        out.push(format!("-wire {}.{} -> {}.{}", short(&w.0), w.1, short(&w.2), w.3));
    }
    for o in wanted {
        if got.outputs.get(o) != want.outputs.get(o) {
            out.push(format!("output {o}: got {:?}, want {:?}", got.outputs.get(o), want.outputs.get(o)));
        }
    }
    out.join("\n")
}

fn short(action: &str) -> &str {
    action.rsplit('.').next().unwrap_or(action)
}

fn clone_outcome(o: &Outcome) -> Outcome {
    Outcome {
        id: o.id.clone(),
        checked: o.checked,
        candidates: o.candidates,
        top1: o.top1,
        top5: o.top5,
        time: o.time,
        note: String::new(),
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "ok" } else { "-" }
}

fn goal_of(task: &Task) -> Goal {
    Goal {
        text: task.goal.text.clone(),
        inputs: task.goal.inputs.iter().map(|f| GoalField { name: f.name.clone(), ty: f.ty.clone() }).collect(),
        outputs: task
            .goal
            .outputs
            .iter()
            .map(|o| match o.split_once(':') {
                Some((n, t)) => GoalField { name: n.trim().to_string(), ty: t.trim().to_string() },
                None => GoalField { name: o.clone(), ty: String::new() },
            })
            .collect(),
        end_with: task.goal.end_with.clone(),
        use_actions: task.goal.use_actions.clone(),
        name: Some(task.id.replace('-', "_")),
    }
}
