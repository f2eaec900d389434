//! The CLI and TLS: `https://` addresses with `--ca-file` (against `nexus serve --tls-cert
//! --tls-key`, certificates made here by rcgen), and no token sent in clear beyond loopback.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use super::nexus;

/// `nexus <args>`: whether it succeeded, and its stderr.
fn outcome(args: &[&str]) -> (bool, String) {
    let out = nexus().args(args).env_remove("NEXUS_TOKEN").env_remove("NEXUS_ADDR").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn token_is_refused_over_plaintext_to_a_non_loopback_address() {
    let secret = "nxk_do-not-leak-me";
    // 0.0.0.0 is not loopback (on Linux a connection there would reach this machine, and fail fast).
    let started = Instant::now();
    let (ok, stderr) = outcome(&["services", "--addr", "http://0.0.0.0:1", "--token", secret]);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("refusing to send the token in clear text to http://0.0.0.0:1"), "{stderr}");
    assert!(stderr.contains("https://") && stderr.contains("--allow-plaintext-token"), "{stderr}");
    assert!(!stderr.contains(secret), "the token leaked: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "refused before connecting");

    // The override gets past the check (and then fails to connect: nothing listens there).
    let (ok, stderr) =
        outcome(&["services", "--addr", "http://0.0.0.0:1", "--token", secret, "--allow-plaintext-token"]);
    assert!(!ok && stderr.contains("cannot reach Nexus"), "{stderr}");
    // Loopback, and no token at all, are fine in clear.
    for (addr, token) in
        [("http://127.0.0.1:1", Some(secret)), ("http://localhost:1", Some(secret)), ("http://0.0.0.0:1", None)]
    {
        let mut args = vec!["services", "--addr", addr];
        if let Some(t) = token {
            args.extend(["--token", t]);
        }
        let (ok, stderr) = outcome(&args);
        assert!(!ok && stderr.contains("cannot reach Nexus") && !stderr.contains("refusing"), "{addr}: {stderr}");
    }
}

/// `nexus serve` on TLS; killed on drop.
struct TlsServe {
    child: Child,
    addr: String,
}

impl Drop for TlsServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn cli_speaks_tls_to_https_addresses_with_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    let (ca_file, cert_file, key_file) =
        (dir.path().join("ca.pem"), dir.path().join("nexus.pem"), dir.path().join("nexus.key"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();

    let mut child = nexus()
        .args(["serve", "--in-memory", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert_file)
        .arg("--tls-key")
        .arg(&key_file)
        .env_remove("NEXUS_DATABASE_URL")
        .env("NEXUS_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The server's log, line by line, for the SIGHUP check below.
    let (log_tx, log) = std::sync::mpsc::channel::<String>();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().and_then(Result::ok).unwrap_or_default();
    std::thread::spawn(move || for _ in lines {});
    let port = line
        .strip_prefix("nexus listening on https://127.0.0.1:")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no https address in {line:?}"))
        .to_string();
    let serve = TlsServe { child, addr: format!("https://localhost:{port}") };

    let ca = ca_file.to_str().unwrap();
    let out = nexus().args(["pattern", "list", "--addr", &serve.addr, "--ca-file", ca]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A token over TLS to any address is fine.
    let out = nexus().args(["whoami", "--addr", &serve.addr, "--ca-file", ca, "--token", "nxk_x"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("refusing"), "{stderr}");
    // Without the CA, the system's roots do not know the certificate.
    let (ok, stderr) = outcome(&["pattern", "list", "--addr", &serve.addr]);
    assert!(!ok && stderr.contains("cannot reach Nexus"), "{stderr}");
    assert!(stderr.contains("certificate") || stderr.contains("UnknownIssuer"), "{stderr}");
    // --ca-file with http:// is a mistake worth saying.
    let (ok, stderr) = outcome(&["pattern", "list", "--addr", "http://127.0.0.1:1", "--ca-file", ca]);
    assert!(!ok && stderr.contains("--ca-file is for https://"), "{stderr}");

    // SIGHUP reloads the certificate (and does not stop the server).
    let hup = std::process::Command::new("kill").args(["-HUP", &serve.child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reloaded = false;
    while !reloaded && Instant::now() < deadline {
        if let Ok(line) = log.recv_timeout(Duration::from_millis(200)) {
            reloaded = line.contains("TLS certificate reloaded (SIGHUP)");
        }
    }
    assert!(reloaded, "no reload logged after SIGHUP");
    let out = nexus().args(["pattern", "list", "--addr", &serve.addr, "--ca-file", ca]).output().unwrap();
    assert!(out.status.success(), "after SIGHUP: {}", String::from_utf8_lossy(&out.stderr));
    drop(serve);
}
