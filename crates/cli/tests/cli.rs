//! The `nexus` binary end to end: the README's demo command, and the client commands against it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

#[path = "cli/conventions.rs"]
mod conventions;
#[path = "cli/logs.rs"]
mod logs;
#[path = "cli/tls.rs"]
mod tls;

pub(crate) fn nexus() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nexus"));
    // No profile of the machine's user applies to the tests.
    c.env("NEXUS_LOG", "warn").env("NEXUS_CLI_CONFIG", "/nonexistent/nexus-cli-config.toml");
    for var in ["NEXUS_ADDR", "NEXUS_TOKEN", "NEXUS_PROFILE", "NEXUS_TIMEOUT", "NEXUS_PROGRESS"] {
        c.env_remove(var);
    }
    c
}

#[test]
fn demo_once_registers_the_examples_and_runs_user_creation() {
    let out = nexus().args(["demo", "--once", "--listen", "127.0.0.1:0"]).env("NEXUS_LOG", "info").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Logs to a pipe (not a terminal) carry no colour codes.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("INFO") && !stderr.contains('\u{1b}'), "{stderr}");
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("registered user_creation@1.0.0"), "{stdout}");
    assert!(stdout.contains("registered subscribe_live_stream@1.0.0"), "{stdout}");
    assert!(stdout.contains("of user_creation@1.0.0: SUCCEEDED"), "{stdout}");
    assert!(stdout.contains("\"user_id\": \"usr_"), "{stdout}");
    assert!(stdout.contains("curl -s -H 'Content-Type: application/json'"), "{stdout}");
}

/// A demo served in the background; killed on drop.
pub(crate) struct Demo {
    child: Child,
    pub(crate) addr: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_demo() -> Demo {
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

    let (ok, stdout, stderr) = run(&["services", "refresh"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("demo: no changes (via reflection)"), "{stdout}");
    assert!(stdout.contains("nothing changed: the catalog stays as it was"), "{stdout}");
    let (ok, _, stderr) = run(&["services", "refresh", "nope"]);
    assert!(!ok && stderr.contains("no backend named `nope`"), "{stderr}");

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

    // The marketplace and the graph: fork, a new version on the fork, diff, lineage, impact.
    let (ok, stdout, stderr) = run(&["pattern", "fork", "user_creation", "my_onboarding"]);
    assert!(ok && stdout.contains("my_onboarding"), "{stdout}{stderr}");
    let (ok, stdout, stderr) = run(&["pattern", "show", "my_onboarding"]);
    assert!(ok, "{stderr}");
    let v2 = dir.path().join("v2.yaml");
    std::fs::write(&v2, stdout.replace("version: \"1.0.0\"", "version: 1.1.0").replace("timeout: 2s", "timeout: 5s"))
        .unwrap();
    let (ok, _, stderr) = run(&["pattern", "register", v2.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = run(&["pattern", "diff", "my_onboarding", "1.0.0", "1.1.0"]);
    assert!(ok && stdout.contains("~ steps.user.timeout"), "{stdout}{stderr}");
    let (ok, stdout, stderr) = run(&["graph", "lineage", "user_creation"]);
    assert!(
        ok && stdout.contains("pattern:my_onboarding@1.0.0 -FORKED_FROM-> pattern:user_creation@1.0.0"),
        "{stdout}{stderr}"
    );
    let (ok, stdout, stderr) = run(&["graph", "impact", "demo.user.v1.UserService/CreateUser"]);
    assert!(
        ok && stdout.contains("pattern:user_creation@1.0.0") && stdout.contains("pattern:my_onboarding@1.1.0"),
        "{stdout}{stderr}"
    );
    // Events: `pattern show` lists triggers and event steps first (as comments, so the output
    // stays a registrable document, as the fork above shows); the graph knows who uses an event.
    let (ok, stdout, stderr) = run(&["pattern", "show", "welcome_series"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("# on: user.created (input mapped)\n# step verified: wait_for user.verified [match "),
        "{stdout}"
    );
    let (ok, stdout, stderr) = run(&["pattern", "show", "user_creation"]);
    assert!(ok && stdout.starts_with("# step announce: emit user.created\n"), "{stdout}{stderr}");
    let (ok, stdout, stderr) = run(&["graph", "impact", "user.created"]);
    assert!(
        ok && stdout.contains("pattern:user_creation@1.0.0 -EMITS-> event:user.created")
            && stdout.contains("pattern:welcome_series@1.0.0 -TRIGGERED_BY-> event:user.created")
            && stdout.contains("event:user.created")
            && stdout.contains("  event"),
        "{stdout}{stderr}"
    );
    let (ok, stdout, _) = run(&["graph", "impact", "event:user.verified"]);
    assert!(ok && stdout.contains("pattern:welcome_series@1.0.0 -WAITS_FOR-> event:user.verified"), "{stdout}");
    let (ok, stdout, stderr) = run(&["pattern", "versions", "my_onboarding"]);
    assert!(ok && stdout.contains("1.1.0") && stdout.contains("user_creation@1.0.0"), "{stdout}{stderr}");
    let (ok, stdout, stderr) = run(&["whoami"]);
    assert!(ok && stdout.contains("open"), "{stdout}{stderr}");
}

/// `nexus token …` against a fresh data directory (no server, no database URL from the
/// environment).
fn token_cmd(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = nexus()
        .arg("token")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("NEXUS_DATABASE_URL")
        .env_remove("NEXUS_DATABASE_SCHEMA")
        .env_remove("NEXUS_DATA_DIR")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn is_api_key(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("nxs_") else { return false };
    let Some((id, secret)) = rest.split_once('_') else { return false };
    id.len() == 12
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && !secret.is_empty()
        && secret.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[test]
fn token_create_list_and_revoke_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = token_cmd(
        dir.path(),
        &["create", "--tenant", "acme", "--subject", "ci-bot", "--role", "runner", "--role", "viewer"],
    );
    assert!(ok, "{stderr}");
    // The key alone on stdout, one line; the note goes to stderr.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout must hold only the key:\n{stdout}");
    let key = lines[0];
    assert!(is_api_key(key), "not an API key: {key:?}");
    assert!(stderr.contains("once"), "{stderr}");
    let secret = key.splitn(3, '_').nth(2).unwrap();
    let short_id = &key[4..16];

    // The list shows the key's id and who it is for, never the secret.
    let (ok, list, stderr) = token_cmd(dir.path(), &["list"]);
    assert!(ok, "{stderr}");
    assert!(!list.contains(secret) && !list.contains(key), "the secret leaked:\n{list}");
    let row = list.lines().find(|l| l.contains(short_id)).unwrap_or_else(|| panic!("no row for {short_id}:\n{list}"));
    assert!(row.contains("acme") && row.contains("ci-bot") && row.contains("runner,viewer"), "{row}");
    let id = row.split_whitespace().next().unwrap().to_string();
    assert!(row.trim_end().ends_with('-'), "a new key is not revoked:\n{row}");

    let (ok, json, _) = token_cmd(dir.path(), &["list", "--json"]);
    assert!(ok);
    let keys: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(keys[0]["id"], id.as_str());
    assert!(keys[0]["revoked_at"].is_null());
    assert!(!json.contains(secret));

    // Revoked: the list says so; revoking again is an error naming the id.
    let (ok, _, stderr) = token_cmd(dir.path(), &["revoke", &id]);
    assert!(ok, "{stderr}");
    let (ok, list, _) = token_cmd(dir.path(), &["list"]);
    assert!(ok);
    let row = list.lines().find(|l| l.contains(short_id)).unwrap();
    assert!(!row.trim_end().ends_with(" -"), "the key is not shown revoked:\n{list}");
    let (ok, json, _) = token_cmd(dir.path(), &["list", "--json"]);
    assert!(ok);
    let keys: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert!(keys[0]["revoked_at"].is_string(), "{json}");
    let (ok, _, stderr) = token_cmd(dir.path(), &["revoke", &id]);
    assert!(!ok);
    assert!(stderr.contains(&id), "{stderr}");
    let (ok, _, stderr) = token_cmd(dir.path(), &["revoke", "nosuchkey000"]);
    assert!(!ok);
    assert!(stderr.contains("nosuchkey000"), "{stderr}");

    // --json: the record with the key (this once), the revocation, and an error, each one object.
    let (ok, json, _) =
        token_cmd(dir.path(), &["create", "--tenant", "acme", "--subject", "svc", "--role", "viewer", "--json"]);
    assert!(ok);
    let created: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let key = created["key"].as_str().unwrap_or_default();
    assert!(is_api_key(key) && created["roles"] == serde_json::json!(["viewer"]), "{created}");
    let new_id = created["id"].as_str().unwrap_or_default().to_string();
    let (ok, json, _) = token_cmd(dir.path(), &["revoke", &new_id, "--json"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<serde_json::Value>(json.trim()).unwrap(), serde_json::json!({"revoked": new_id}));
    let (ok, json, stderr) = token_cmd(dir.path(), &["revoke", &new_id, "--json"]);
    assert!(!ok && stderr.is_empty(), "{stderr}");
    let error: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert!(error["error"]["message"].as_str().is_some_and(|m| m.contains(&new_id)), "{error}");
}

#[test]
fn token_create_refuses_unknown_roles_and_blank_names() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) =
        token_cmd(dir.path(), &["create", "--tenant", "acme", "--subject", "bob", "--role", "wizard"]);
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("wizard") && stderr.contains("admin, author, runner, viewer"), "{stderr}");

    let (ok, stdout, stderr) =
        token_cmd(dir.path(), &["create", "--tenant", "", "--subject", "bob", "--role", "admin"]);
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("--tenant"), "{stderr}");

    let (ok, _, stderr) = token_cmd(dir.path(), &["create", "--tenant", "acme", "--subject", "bob"]);
    assert!(!ok);
    assert!(stderr.contains("--role"), "{stderr}");

    // Nothing was stored by the refused attempts.
    let (ok, list, stderr) = token_cmd(dir.path(), &["list"]);
    assert!(ok, "{stderr}");
    assert!(list.starts_with("no API keys"), "{list}");
}

/// Starts `nexus serve` with `args`; returns whether it printed its address (it is then killed)
/// and what it wrote on stderr before exiting or being killed.
fn serve_outcome(args: &[&str]) -> (bool, String) {
    let mut child = nexus()
        .args(["serve", "--in-memory"])
        .args(args)
        .env("NEXUS_LOG", "warn")
        .env_remove("NEXUS_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = lines.next().is_some_and(|l| l.is_ok_and(|l| l.contains("nexus listening")));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (started, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn serving_beyond_loopback_needs_auth_or_insecure_and_open_mode_says_so_loudly() {
    let (started, stderr) = serve_outcome(&["--listen", "0.0.0.0:0"]);
    assert!(!started, "an open server must not listen on every interface");
    assert!(
        stderr.contains("0.0.0.0:0") && stderr.contains("--require-auth") && stderr.contains("--insecure"),
        "{stderr}"
    );

    let (started, stderr) = serve_outcome(&["--listen", "0.0.0.0:0", "--insecure"]);
    assert!(started, "{stderr}");
    let (started, stderr) = serve_outcome(&["--listen", "0.0.0.0:0", "--require-auth"]);
    assert!(started, "{stderr}");

    let (started, stderr) = serve_outcome(&["--listen", "127.0.0.1:0"]);
    assert!(started, "{stderr}");
    assert!(stderr.contains("AUTHENTICATION IS OFF"), "the open mode is announced: {stderr}");
}

/// The threads of process `pid` named `tokio-rt-worker` (the runtime's workers).
fn runtime_workers(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "tokio-rt-worker")
        .count()
}

#[test]
fn worker_threads_sets_the_runtime_workers_and_refuses_zero() {
    for (args, env, expected) in [(&["--worker-threads", "3"][..], None, 3), (&[][..], Some("1"), 1)] {
        let mut cmd = nexus();
        cmd.args(["serve", "--in-memory", "--listen", "127.0.0.1:0"]).args(args).env("NEXUS_LOG", "warn");
        match env {
            Some(v) => cmd.env("NEXUS_WORKER_THREADS", v),
            None => cmd.env_remove("NEXUS_WORKER_THREADS"),
        };
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = lines.next().is_some_and(|l| l.is_ok_and(|l| l.contains("nexus listening")));
        let workers = runtime_workers(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(started, "{args:?} {env:?}: nexus serve did not start");
        assert_eq!(workers, expected, "{args:?} {env:?}");
    }
    let out = nexus().args(["serve", "--in-memory", "--worker-threads", "0"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--worker-threads") && stderr.contains("1..=1024"), "{stderr}");
}

#[test]
fn an_unreachable_database_stops_serve_with_the_reason_and_no_password() {
    let out = nexus()
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", "postgres://nexus:hunter2@127.0.0.1:1/nexus"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("postgres://nexus:***@127.0.0.1:1/nexus"), "the URL, redacted: {stderr}");
    assert!(stderr.contains("Connection refused"), "the reason: {stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert_eq!(stderr.matches("Connection refused").count(), 1, "said once: {stderr}");
}

#[test]
fn audit_shows_refused_calls_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use nexus_store::AuthStore;
        let store = nexus_store::SqliteStore::open(dir.path()).await.unwrap();
        store
            .audit(&nexus_store::AuditEntry {
                at: std::time::SystemTime::now(),
                tenant: "acme".into(),
                subject: "mallory".into(),
                action: "DeprecatePattern".into(),
                resource: "pattern:user_creation@1.0.0".into(),
                reason: "only its owner or an admin of its tenant may change it".into(),
            })
            .await
            .unwrap();
    });
    let out = nexus().args(["audit", "--data-dir"]).arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("acme/mallory  DeprecatePattern  pattern:user_creation@1.0.0  only its owner"), "{stdout}");
}

#[test]
fn a_server_that_never_answers_times_out_and_huge_files_are_refused_unread() {
    // Accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let out = nexus().args(["pattern", "list", "--addr", &addr, "--timeout", "1s"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}: {stderr}", started.elapsed());
    drop(silent);

    // A device that never ends: refused after reading just past the limit, not read into memory.
    let started = Instant::now();
    let out = nexus().args(["pattern", "validate", "/dev/zero", "--addr", "http://127.0.0.1:9"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("/dev/zero") && stderr.contains("at most 1048576 bytes"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    // A regular file over the limit is refused by its size.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; 2 << 20]).unwrap();
    let out =
        nexus().args(["pattern", "validate", big.to_str().unwrap(), "--addr", "http://127.0.0.1:9"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2097152 bytes") && stderr.contains("at most 1048576 bytes"), "{stderr}");
}

#[test]
fn version_names_the_git_revision_and_completions_and_man_page_are_generated() {
    let out = nexus().arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{version}");
    // `nexus 0.1.0 (0123456789ab)`, `(0123456789ab-modified)` from a changed tree.
    let rev = version.split('(').nth(1).and_then(|r| r.split(')').next()).unwrap_or_default();
    let hex = rev.trim_end_matches("-modified");
    assert!(
        version.starts_with(&format!("nexus {} (", env!("CARGO_PKG_VERSION")))
            && hex.len() == 12
            && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{version}"
    );
    let completions = |shell: &str| {
        let out = nexus().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = completions("bash");
    assert!(bash.contains("complete -F") && bash.contains("register") && bash.contains("--log-format"), "{bash}");
    assert!(completions("zsh").starts_with("#compdef nexus"));
    assert!(completions("fish").contains("complete -c nexus"));
    let man = nexus().arg("man").output().unwrap();
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(man.status.success() && page.contains(".TH nexus") && page.contains("serve"), "{page}");
}

#[test]
fn exit_statuses_tell_failures_apart_and_input_comes_from_a_file_or_stdin() {
    use std::io::Write as _;
    let demo = start_demo();
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut child = nexus()
            .args(args)
            .args(["--addr", &demo.addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let input = dir.path().join("input.json");
    std::fs::write(&input, r#"{"email": "file@example.com", "name": "From A File"}"#).unwrap();
    let from_file = format!("@{}", input.display());
    assert_eq!(run(&["run", "user_creation", "--input", &from_file], None).0, 0);
    let stdin = r#"{"email": "stdin@example.com", "name": "From Stdin"}"#;
    assert_eq!(run(&["run", "user_creation", "--input", "-"], Some(stdin)).0, 0);

    // 2: invalid input, refused locally or by the server; codes printed as the protocol names them.
    for (args, fragment) in [
        (vec!["run", "user_creation", "--input", "[1, 2]"], "must be a JSON object"),
        (vec!["run", "user_creation", "--input", "{not json"], "is not JSON"),
        (vec!["run", "user_creation", "--input", "@/no/such/file.json"], "cannot read /no/such/file.json"),
        (vec!["run", "no_such_pattern"], "NOT_FOUND: "),
        (vec!["run", "user_creation", "--input", r#"{"name": "no email"}"#], "INVALID_ARGUMENT: "),
    ] {
        let (status, stderr) = run(&args, None);
        assert_eq!(status, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(fragment) && !stderr.contains("NotFound"), "{args:?}: {stderr}");
    }
    // 1: the execution ran and failed (the backend's NOT_FOUND is the execution's outcome).
    let missing = dir.path().join("missing.yaml");
    std::fs::write(
        &missing,
        "name: get_missing_user\nversion: 1.0.0\nsteps:\n  - id: get\n    call: demo.user.v1.UserService/GetUser\n    \
         with: {user_id: usr_nobody}\n",
    )
    .unwrap();
    assert_eq!(run(&["pattern", "register", missing.to_str().unwrap()], None).0, 0);
    let (status, stderr) = run(&["run", "get_missing_user"], None);
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("NOT_FOUND") && stderr.contains("execution "), "{stderr}");
    // 4: not authorized (a key this server never issued).
    let (status, stderr) = run(&["whoami", "--token", "nxs_not_a_real_key_at_all_0000000000"], None);
    assert_eq!(status, 4, "{stderr}");
    // 3: unreachable.
    let out = nexus().args(["whoami", "--addr", "http://127.0.0.1:1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}
