//! The `nexus` binary end to end: the README's demo command, and the client commands against it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn nexus() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nexus"));
    c.env("NEXUS_LOG", "warn");
    c
}

#[test]
fn demo_once_registers_the_examples_and_runs_user_creation() {
    let out = nexus().args(["demo", "--once", "--listen", "127.0.0.1:0"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("registered user_creation@1.0.0"), "{stdout}");
    assert!(stdout.contains("registered subscribe_live_stream@1.0.0"), "{stdout}");
    assert!(stdout.contains("of user_creation@1.0.0: SUCCEEDED"), "{stdout}");
    assert!(stdout.contains("\"user_id\": \"usr_"), "{stdout}");
    assert!(stdout.contains("curl -s -H 'Content-Type: application/json'"), "{stdout}");
}

/// A demo served in the background; killed on drop.
struct Demo {
    child: Child,
    addr: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo() -> Demo {
    let mut child =
        nexus().args(["demo", "--listen", "127.0.0.1:0"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let started = Instant::now();
    let mut addr = None;
    while started.elapsed() < Duration::from_secs(60) {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.strip_prefix("Nexus      ") {
            addr = rest.split_whitespace().next().map(str::to_string);
        }
        if line.starts_with("Serving until Ctrl-C") {
            break;
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Demo { child, addr: addr.expect("the demo printed its address") }
}

#[test]
fn client_commands_talk_to_a_running_nexus() {
    let demo = start_demo();
    let run = |args: &[&str]| {
        let out = nexus().args(args).args(["--addr", &demo.addr]).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, stdout, stderr) = run(&["services"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("demo.user.v1.UserService/CreateUser"), "{stdout}");

    let (ok, stdout, stderr) = run(&["pattern", "list"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("user_creation") && stdout.contains("subscribe_live_stream"), "{stdout}");

    let (ok, stdout, stderr) =
        run(&["run", "user_creation", "--input", r#"{"email": "cli@example.com", "name": "Cli"}"#]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("SUCCEEDED") && stdout.contains("✓ user") && stdout.contains("- avatar"), "{stdout}");

    let (ok, stdout, _) =
        run(&["run", "user_creation", "--json", "--input", r#"{"email": "json@example.com", "name": "J"}"#]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["status"], "EXECUTION_STATUS_SUCCEEDED");

    // --follow shows each step and every streamed chunk live.
    let (ok, stdout, stderr) = run(&[
        "run",
        "subscribe_live_stream",
        "--follow",
        "--input",
        r#"{"broadcast_id": "public-cli", "user_id": "u1", "max_chunks": 3}"#,
    ]);
    assert!(ok, "{stderr}");
    for line in ["✓ access", "⤷ live #0", "⤷ live #2", "SUCCEEDED"] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("⤷ live #3"), "{stdout}");

    // Invalid documents: every problem, with its path, and a failing exit code.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: bad\nversion: 1.0.0\nsteps:\n  - id: a\n    call: demo.user.v1.UserService/CreateUser\n    with: {colour: red, email: 3}\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = run(&["pattern", "validate", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(stdout.contains("steps[0].with.colour") && stdout.contains("steps[0].with.email"), "{stdout}{stderr}");

    let (ok, _, stderr) = run(&["pattern", "register", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("steps[0].with.colour"), "{stderr}");

    // A failed execution names the step and points at the execution.
    let (ok, _, stderr) = run(&["run", "user_creation", "--input", r#"{"email": "cli@example.com", "name": "Again"}"#]);
    assert!(!ok);
    assert!(stderr.contains("ALREADY_EXISTS") || stderr.contains("AlreadyExists"), "{stderr}");
}
