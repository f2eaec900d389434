//! What one request's expressions may cost: a comprehension-heavy `${{ }}` stops at its cost
//! budget (RESOURCE_EXHAUSTED naming the step, the expression and the setting) or at the
//! execution's deadline (DEADLINE_EXCEEDED), and while one runs, other calls are served as usual.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use serde_json::json;
use tonic::Code;

use crate::common::{Harness, Options, execute_request, pattern, register, register_examples, to_json, unique_email};

/// 22^5 ≈ 5 M iterations of a five-deep `all`: minutes of interpreter time unmetered.
const HEAVY: &str = "${{ input.xs.all(a, input.xs.all(b, input.xs.all(c, input.xs.all(d, input.xs.all(e, a + b + c + d + e >= 0))))) }}";

fn heavy_pattern(name: &str, timeout: &str) -> Result<nexus_core::pb::Pattern> {
    pattern(&format!(
        r#"
name: {name}
version: 1.0.0
timeout: {timeout}
input:
  type: object
  properties:
    xs: {{type: array, items: {{type: integer}}}}
steps:
  - id: mail
    when: "{HEAVY}"
    call: demo.notification.v1.NotificationService/SendEmail
    with: {{to: a@example.com, subject: hi, body: there}}
"#
    ))
}

fn xs() -> serde_json::Value {
    json!({"xs": (0..22).collect::<Vec<i64>>()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_costly_expression_stops_at_its_budget_with_resource_exhausted() -> Result<()> {
    let mut h = Harness::start_with(Options { cel_cost: Some((200_000, 10_000_000)), ..Options::default() }).await?;
    register(&mut h.client, heavy_pattern("heavy_budget", "30s")?).await?;
    let started = Instant::now();
    let status = h
        .client
        .execute_pattern(execute_request("heavy_budget", xs())?)
        .await
        .err()
        .ok_or_else(|| anyhow!("succeeded"))?;
    ensure!(status.code() == Code::ResourceExhausted, "{status:?}");
    let message = status.message();
    for part in ["`mail`", "input.xs.all(a,", "200000 cost units", "limits.cel_cost_per_expression"] {
        ensure!(message.contains(part), "the message should say {part:?}: {message}");
    }
    ensure!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    ensure!(h.demo.calls(nexus_demo::method::SEND_EMAIL) == 0, "the step ran");
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_costly_expression_stops_at_the_deadline_and_never_stalls_other_calls() -> Result<()> {
    // A budget too large to matter: only the pattern's 2 s timeout stops the expression.
    let mut h =
        Harness::start_with(Options { cel_cost: Some((u64::MAX / 4, u64::MAX / 2)), ..Options::default() }).await?;
    register_examples(&mut h.client).await?;
    register(&mut h.client, heavy_pattern("heavy_deadline", "2s")?).await?;
    // Warm the backend channel.
    h.client
        .execute_pattern(execute_request("user_creation", json!({"email": unique_email("warm"), "name": "W"}))?)
        .await?;

    let mut heavy_client = h.client.clone();
    let started = Instant::now();
    let heavy = tokio::spawn(async move {
        let r = heavy_client.execute_pattern(execute_request("heavy_deadline", xs())?).await;
        anyhow::Ok((r, started.elapsed()))
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // While the expression runs, the server keeps serving: 40 executions, each quick.
    let mut slowest = Duration::ZERO;
    for i in 0..40 {
        let t = Instant::now();
        let out = h
            .client
            .execute_pattern(execute_request(
                "user_creation",
                json!({"email": unique_email(&format!("busy{i}")), "name": "B"}),
            )?)
            .await?
            .into_inner();
        ensure!(out.status == nexus_core::pb::ExecutionStatus::Succeeded as i32, "{out:?}");
        ensure!(to_json(out.output.as_ref().ok_or_else(|| anyhow!("no output"))?)["user_id"].is_string(), "{out:?}");
        slowest = slowest.max(t.elapsed());
    }
    ensure!(!heavy.is_finished(), "the heavy execution ended before the others ran alongside it");
    ensure!(slowest < Duration::from_millis(500), "a call took {slowest:?} while the expression ran");

    let (result, elapsed) = heavy.await??;
    let status = result.err().ok_or_else(|| anyhow!("the heavy execution succeeded"))?;
    ensure!(status.code() == Code::DeadlineExceeded, "{status:?}");
    ensure!(elapsed < Duration::from_secs(4), "it ran on for {elapsed:?} past its 2 s timeout");
    h.stop().await;
    Ok(())
}
