//! `nexus serve --log-format json` with the access log on, at debug level for every crate (hyper,
//! h2, tonic included): every line is one JSON object, every RPC has its access line (method,
//! code, duration, principal, execution), an execution's own lines carry its id and trace id, and
//! no credential ever reaches the log — an API key, a JWT and a wrong key are all sent.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::nexus;

/// A JWT-shaped token (header.payload.signature, base64url) this server does not accept.
const FOREIGN_JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJtYWxsb3J5IiwidGVuYW50IjoiYWNtZSJ9.c2VjcmV0LXNpZ25hdHVyZS1kby1ub3QtbG9n";
const WRONG_KEY: &str = "nxs_wrongwrongwrongwrongwrongwrongwrong";

#[test]
fn json_logs_have_an_access_line_per_rpc_the_execution_ids_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = nexus()
        .args(["token", "create", "--tenant", "acme", "--subject", "ci-bot", "--role", "admin", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(key.len() > 20, "{key}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend, _demo, _guard) =
        runtime.block_on(nexus_demo::spawn(nexus_demo::DemoOptions::default())).expect("the demo services");
    let log_path = dir.path().join("nexus.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(["serve", "--listen", "127.0.0.1:0", "--require-auth", "--service"])
        .arg(format!("demo=http://{backend}"))
        .arg("--data-dir")
        .arg(&data)
        .env("NEXUS_LOG", "debug")
        .env("NEXUS_LOG_FORMAT", "json")
        .env("NEXUS_ACCESS_LOG", "true")
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let line = lines.next().expect("nexus printed its address").unwrap();
    let addr = line.split_whitespace().find(|w| w.starts_with("http://")).expect("an address").to_string();
    std::thread::spawn(move || for _ in lines {});

    let cli = |token: &str, args: &[&str]| {
        let out = nexus().args(args).args(["--addr", &addr, "--token", token]).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let pattern = concat!(env!("CARGO_MANIFEST_DIR"), "/../../patterns/user_creation.yaml");
    assert!(cli(&key, &["pattern", "register", pattern]).0);
    let (ok, run) = cli(&key, &["run", "user_creation", "--input", r#"{"email":"logs@example.com","name":"L"}"#]);
    assert!(ok, "{run}");
    assert!(!cli(FOREIGN_JWT, &["whoami"]).0, "a JWT from elsewhere is refused");
    assert!(!cli(WRONG_KEY, &["whoami"]).0, "a wrong key is refused");
    assert!(cli(&key, &["whoami"]).0);

    // The access line of the last call is written when its response ends: wait for it.
    let started = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log_path).unwrap();
        let whoamis = text.lines().filter(|l| l.contains("WhoAmI") && l.contains("nexus::access")).count();
        if whoamis >= 3 || started.elapsed() > Duration::from_secs(10) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = server.kill();
    let _ = server.wait();

    for secret in [key.as_str(), FOREIGN_JWT, WRONG_KEY] {
        assert!(!text.contains(secret), "a credential is in the log:\n{text}");
        // Nor its distinctive middle (a log that cut or re-encoded it).
        let middle = &secret[secret.len() / 3..secret.len() * 2 / 3];
        assert!(!text.contains(middle), "part of a credential ({middle}) is in the log:\n{text}");
    }
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}")))
        .collect();
    assert!(records.len() > 10, "{text}");
    assert!(records.iter().all(|r| r["level"].is_string() && r["timestamp"].is_string()), "{text}");
    let access: Vec<&Value> = records.iter().filter(|r| r["target"] == "nexus::access").collect();
    let whoami = |code: &str| {
        access.iter().filter(|r| r["method"] == "/nexus.v1.NexusService/WhoAmI" && r["code"] == code).count()
    };
    assert_eq!((whoami("OK"), whoami("UNAUTHENTICATED")), (1, 2), "{access:#?}");
    let execute = access
        .iter()
        .find(|r| r["method"] == "/nexus.v1.NexusService/ExecutePattern")
        .unwrap_or_else(|| panic!("no access line for ExecutePattern: {access:#?}"));
    assert_eq!((execute["code"].as_str(), execute["tenant"].as_str()), (Some("OK"), Some("acme")), "{execute}");
    assert_eq!(execute["subject"], "ci-bot", "{execute}");
    assert!(execute["duration_us"].as_u64().is_some(), "{execute}");
    let execution_id = execute["execution"].as_str().expect("the execution id in the access line");
    assert!(run.contains(execution_id), "{run}");
    // Lines logged while the execution ran carry its span: id and trace id.
    let inside: Vec<&Value> = records.iter().filter(|r| r["span"]["id"] == execution_id).collect();
    assert!(!inside.is_empty(), "no line inside execution {execution_id}:\n{text}");
    let trace_id = inside[0]["span"]["trace_id"].as_str().unwrap_or_default();
    assert!(trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()), "{:?}", inside[0]);
}
