//! CLI conventions: `--json` errors (one object on standard output, one shape), profiles of
//! `~/.config/nexus/config.toml`, and `run`'s live progress on a terminal.

use std::process::Stdio;

use serde_json::Value;

use crate::{nexus, start_demo};

/// Runs `nexus ARGS`; returns (exit status, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = nexus().args(args).envs(env.iter().copied()).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Standard output as exactly one JSON value.
fn one_object(stdout: &str) -> Value {
    let mut values = serde_json::Deserializer::from_str(stdout).into_iter::<Value>();
    let first = values.next().unwrap_or_else(|| panic!("no JSON on stdout: {stdout:?}")).unwrap();
    assert!(values.next().is_none(), "more than one JSON value on stdout: {stdout}");
    first
}

#[test]
fn json_errors_are_one_object_of_one_shape_with_the_exit_status() {
    let demo = start_demo();
    let addr = demo.addr.as_str();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    std::fs::write(
        &missing,
        "name: json_missing_user\nversion: 1.0.0\nsteps:\n  - id: get\n    call: demo.user.v1.UserService/GetUser\n    \
         with: {user_id: usr_nobody}\n",
    )
    .unwrap();
    let (status, _, stderr) = run(&["pattern", "register", missing.to_str().unwrap(), "--addr", addr], &[]);
    assert_eq!(status, 0, "{stderr}");
    let bad_yaml = dir.path().join("bad.yaml");
    std::fs::write(&bad_yaml, "name: t\nsteps: [{id: a}\n").unwrap();

    for (args, code, exit) in [
        (vec!["run", "no_such_pattern", "--json", "--addr", addr], "NOT_FOUND", 2),
        (vec!["run", "user_creation", "--input", "{not json", "--json", "--addr", addr], "INVALID_ARGUMENT", 2),
        (vec!["pattern", "register", bad_yaml.to_str().unwrap(), "--json", "--addr", addr], "INVALID_ARGUMENT", 2),
        (vec!["pattern", "show", "no_such_pattern", "--json", "--addr", addr], "NOT_FOUND", 2),
        (vec!["whoami", "--json", "--addr", "http://127.0.0.1:1"], "UNAVAILABLE", 3),
        (
            vec!["whoami", "--json", "--addr", addr, "--token", "nxs_not_a_real_key_at_all_0000000000"],
            "UNAUTHENTICATED",
            4,
        ),
    ] {
        let (status, stdout, stderr) = run(&args, &[]);
        assert_eq!(status, exit, "{args:?}: {stdout} {stderr}");
        let error = one_object(&stdout);
        assert_eq!(error["error"]["code"], code, "{args:?}: {error}");
        assert_eq!(error["error"]["exit_status"], exit, "{args:?}: {error}");
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
        assert_eq!(error.as_object().map(|o| o.len()), Some(1), "{error}");
        assert!(stderr.is_empty(), "{args:?}: nothing but the object: {stderr}");
    }
    // The YAML parser's place of the mistake reaches the user.
    let (_, stdout, _) = run(&["pattern", "register", bad_yaml.to_str().unwrap(), "--json", "--addr", addr], &[]);
    let message = one_object(&stdout)["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("line 2, column 8") && message.contains("unclosed bracket"), "{message}");

    // An execution that ran and failed is its execution object (status and error), nothing else.
    let (status, stdout, _) = run(&["run", "json_missing_user", "--json", "--addr", addr], &[]);
    assert_eq!(status, 1);
    let execution = one_object(&stdout);
    assert_eq!(execution["status"], "EXECUTION_STATUS_FAILED", "{execution}");
    assert_eq!(execution["error"]["code"], "NOT_FOUND", "{execution}");
}

#[test]
fn profiles_choose_the_server_and_flags_win() {
    let demo = start_demo();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "current = \"demo\"\n\n[profiles.demo]\naddr = \"{}\"\ntimeout = \"20s\"\n\n[profiles.nowhere]\naddr = \
             \"http://127.0.0.1:1\"\n",
            demo.addr
        ),
    )
    .unwrap();
    let env = [("NEXUS_CLI_CONFIG", config.to_str().unwrap())];
    // No --addr: the current profile's server.
    let (status, stdout, stderr) = run(&["whoami"], &env);
    assert_eq!(status, 0, "{stdout} {stderr}");
    let (status, stdout, _) = run(&["profile", "list"], &env);
    assert_eq!(status, 0);
    assert!(stdout.contains("* demo") && stdout.contains("  nowhere"), "{stdout}");
    let (_, stdout, _) = run(&["profile", "show", "--json"], &env);
    let shown = one_object(&stdout);
    assert_eq!((shown["profile"].as_str(), shown["timeout_ms"].as_u64()), (Some("demo"), Some(20_000)), "{shown}");
    // --profile and NEXUS_PROFILE pick another; --addr wins over the profile.
    assert_eq!(run(&["whoami", "--profile", "nowhere"], &env).0, 3);
    assert_eq!(run(&["whoami"], &[env[0], ("NEXUS_PROFILE", "nowhere")]).0, 3);
    assert_eq!(run(&["whoami", "--profile", "nowhere", "--addr", &demo.addr], &env).0, 0);
    // Mistakes are named.
    let (status, _, stderr) = run(&["whoami", "--profile", "staging"], &env);
    assert!(status == 2 && stderr.contains("no profile `staging`") && stderr.contains("demo, nowhere"), "{stderr}");
    let readable = dir.path().join("readable.toml");
    std::fs::write(&readable, format!("[profiles.default]\naddr = \"{}\"\ntoken = \"nxs_secret\"\n", demo.addr))
        .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (status, _, stderr) = run(&["whoami"], &[("NEXUS_CLI_CONFIG", readable.to_str().unwrap())]);
        assert!(status == 2 && stderr.contains("chmod 600"), "{stderr}");
        assert!(!stderr.contains("nxs_secret"), "{stderr}");
    }
    std::fs::write(&readable, "[profiles.default]\nadress = \"typo\"\n").unwrap();
    let (status, _, stderr) = run(&["whoami"], &[("NEXUS_CLI_CONFIG", readable.to_str().unwrap())]);
    assert!(status == 2 && stderr.contains("adress"), "{stderr}");
}

#[test]
fn run_shows_live_progress_on_a_terminal_and_the_same_timeline() {
    let demo = start_demo();
    let input = r#"{"email": "progress@example.com", "name": "P"}"#;
    // Forced, into a pipe: the status line on stderr, redrawn in place, then cleared.
    let (status, stdout, stderr) =
        run(&["run", "user_creation", "--input", input, "--progress", "always", "--addr", &demo.addr], &[]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stderr.contains("\r\u{1b}[2K") && stderr.contains("user_creation@1.0.0"), "{stderr:?}");
    assert!(stderr.contains("✓ user") && stderr.contains("✓ welcome"), "{stderr:?}");
    assert!(stderr.ends_with("\r\u{1b}[2K"), "the line is cleared at the end: {stderr:?}");
    assert!(stdout.contains("SUCCEEDED") && stdout.contains("user"), "the timeline: {stdout}");
    // Not a terminal, by default: no status line.
    let input2 = r#"{"email": "progress2@example.com", "name": "P"}"#;
    let (status, plain, stderr) = run(&["run", "user_creation", "--input", input2, "--addr", &demo.addr], &[]);
    assert_eq!(status, 0);
    assert!(stderr.is_empty() && plain.contains("SUCCEEDED"), "{stderr:?}");
    // A terminal (a pseudo-terminal from util-linux's `script`): on by default.
    let command = format!(
        "{} run user_creation --addr {} --input '{}'",
        env!("CARGO_BIN_EXE_nexus"),
        demo.addr,
        r#"{"email": "tty@example.com", "name": "T"}"#
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("NEXUS_CLI_CONFIG", "/nonexistent/nexus-cli-config.toml")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux's `script` runs the CLI under a pseudo-terminal");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(tty.contains("\u{1b}[2K") && tty.contains("✓ user") && tty.contains("SUCCEEDED"), "{tty:?}");
}
