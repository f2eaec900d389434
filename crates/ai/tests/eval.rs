//! The evaluation's goals hold (accuracy asserted here; the figures that count for speed come
//! from the release build, `cargo run --release -p nexus-ai --bin nexus-eval -- generate`, so the
//! time goals are loose guards in this debug build).

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-eval"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .unwrap_or_else(|e| panic!("running nexus-eval: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn generation_meets_its_goals_on_the_evaluation_set() {
    let (ok, text) = run(&["generate", "--check", "--p95-goal-ms", "10000"]);
    assert!(ok, "{text}");
    assert!(text.contains("66 tasks, type-checks 100 %"), "{text}");
}

#[test]
fn mining_meets_its_goals_on_synthetic_histories() {
    let (ok, text) = run(&["mine", "--check", "--executions", "200000", "--time-goal-s", "120"]);
    assert!(ok, "{text}");
}
