//! What an operator watches: `GET /metrics` (parsed by the Prometheus project's reference
//! OpenMetrics parser, not ours).

use std::{io::Write as _, path::PathBuf, process::Stdio};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tonic::Code;

use crate::common::{Harness, execute_request, register, register_examples, unique_email};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The samples of an OpenMetrics text, as the reference parser reads them (it refuses any
/// deviation from the format).
fn parse_openmetrics(text: &str) -> Result<Vec<Value>> {
    let python = repo_root().join(".interop/venv/bin/python");
    ensure!(
        python.exists(),
        "{} is missing: run `bash scripts/interop-setup.sh` first (it installs prometheus-client)",
        python.display()
    );
    let mut child = std::process::Command::new(python)
        .arg(repo_root().join("interop/python/openmetrics_check.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the OpenMetrics parser")?;
    child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "{}\n--- the text:\n{text}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The value of the sample named `name` whose labels include `labels`.
fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
}

async fn scrape(h: &Harness, headers: &[(&str, &str)]) -> Result<http::Response<bytes::Bytes>> {
    crate::ui::http1_get_with(h.addr, "/metrics", headers).await
}

#[tokio::test]
async fn metrics_count_executions_steps_errors_retries_and_the_journal() -> Result<()> {
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    // A durable variant, so the journal commits.
    let durable = include_str!("../../../../patterns/user_creation.yaml")
        .replace("name: user_creation", "name: user_creation_durable")
        .replace("durability: ephemeral", "durability: durable");
    register(&mut h.client, nexus_core::document::parse(&durable)?).await?;
    for name in ["user_creation", "user_creation", "user_creation_durable"] {
        let input = json!({"email": unique_email("metrics"), "name": "M"});
        h.client.execute_pattern(execute_request(name, input)?).await?;
    }
    // One retried step (UNAVAILABLE once, then OK), and one execution that fails for good.
    h.demo.fail_next(nexus_demo::method::CREATE_USER, 1, Code::Unavailable);
    h.client
        .execute_pattern(execute_request("user_creation", json!({"email": unique_email("r"), "name": "R"}))?)
        .await?;
    h.demo.fail_next(nexus_demo::method::CREATE_USER, 1, Code::InvalidArgument);
    let failed = h
        .client
        .execute_pattern(execute_request("user_creation", json!({"email": unique_email("f"), "name": "F"}))?)
        .await;
    ensure!(failed.is_err() || failed.as_ref().is_ok_and(|r| r.get_ref().status != 2), "{failed:?}");

    let response = scrape(&h, &[]).await?;
    ensure!(response.status() == 200, "GET /metrics answered {}", response.status());
    let content_type = response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    ensure!(content_type.is_some_and(|t| t.starts_with("application/openmetrics-text")), "{content_type:?}");
    let text = std::str::from_utf8(response.body())?;
    let samples = parse_openmetrics(text)?;

    let executions = |pattern: &str, status: &str| {
        sample(&samples, "nexus_executions_total", &[("pattern", pattern), ("version", "1.0.0"), ("status", status)])
    };
    ensure!(executions("user_creation", "SUCCEEDED") == Some(3.0), "{text}");
    ensure!(executions("user_creation_durable", "SUCCEEDED") == Some(1.0), "{text}");
    ensure!(
        executions("user_creation", "FAILED").is_some() || executions("user_creation", "COMPENSATED").is_some(),
        "{text}"
    );
    // Five executions called CreateUser six times (one retry); each attempt is observed.
    let create = nexus_demo::method::CREATE_USER;
    let attempts = sample(&samples, "nexus_step_attempt_duration_seconds_count", &[("action", create)]);
    ensure!(attempts == Some(6.0), "CreateUser attempts {attempts:?}\n{text}");
    ensure!(sample(&samples, "nexus_step_retries_total", &[("action", create)]) == Some(1.0), "{text}");
    ensure!(
        sample(&samples, "nexus_backend_errors_total", &[("action", create), ("code", "UNAVAILABLE")]) == Some(1.0)
    );
    ensure!(
        sample(&samples, "nexus_backend_errors_total", &[("action", create), ("code", "INVALID_ARGUMENT")])
            == Some(1.0)
    );
    let durations = sample(&samples, "nexus_execution_duration_seconds_count", &[("pattern", "user_creation")]);
    ensure!(durations == Some(4.0), "{durations:?}");
    ensure!(sample(&samples, "nexus_executions_in_flight", &[]) == Some(0.0), "{text}");
    // The durable execution's journal writes were committed (and measured).
    let commits = sample(&samples, "nexus_journal_commit_duration_seconds_count", &[]).unwrap_or(0.0);
    let batched = sample(&samples, "nexus_journal_commit_batch_size_sum", &[]).unwrap_or(0.0);
    ensure!(commits >= 1.0 && batched >= commits, "commits {commits}, writes {batched}\n{text}");
    // Families carry their type and unit as Prometheus names them.
    let family = |name: &str| samples.iter().find(|s| s["family"] == name).cloned().unwrap_or_default();
    ensure!(family("nexus_executions")["type"] == "counter", "{text}");
    ensure!(family("nexus_execution_duration_seconds")["type"] == "histogram", "{text}");
    ensure!(family("nexus_execution_duration_seconds")["unit"] == "seconds", "{text}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn metrics_need_a_credential_when_authentication_is_required() -> Result<()> {
    let auth = nexus_server::AuthConfig { require_auth: true, ..Default::default() };
    let h = Harness::start_with(crate::common::Options { auth, ..Default::default() }).await?;
    let refused = scrape(&h, &[]).await?;
    ensure!(refused.status() == 401, "GET /metrics without a credential answered {}", refused.status());
    h.stop().await;
    Ok(())
}
