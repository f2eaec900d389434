//! Start-up and shutdown: every long-running part stops on the one shutdown signal, and nothing
//! Nexus started is left running afterwards.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use nexus_core::pb;
use nexus_server::{Config, Nexus, ServiceConfig, proto::nexus_service_client::NexusServiceClient};

use crate::common::{execute_request, register_examples, unique_email};

/// Tasks alive on this test's runtime.
fn alive() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

#[tokio::test]
async fn nexus_stops_with_no_task_left_running() -> Result<()> {
    let (demo_addr, _demo, _demo_server) = nexus_demo::spawn(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let before = alive();
    let mut config =
        Config { listen: SocketAddr::from(([127, 0, 0, 1], 0)), data_dir: dir.path().into(), ..Config::default() };
    config.services.push(ServiceConfig::from_flag(&format!("demo=http://{demo_addr}"))?);
    let nexus = Nexus::start(config).await.context("starting nexus")?;
    assert!(nexus.tasks_running() >= 3, "journal writers, pattern refresh, usage counts: {}", nexus.tasks_running());
    {
        let mut client = NexusServiceClient::connect(format!("http://{}", nexus.local_addr())).await?;
        register_examples(&mut client).await?;
        let input = serde_json::json!({"email": unique_email("lifecycle"), "name": "Lin"});
        client.execute_pattern(execute_request("user_creation", input.clone())?).await?;
        // A streamed execution runs on a task of its own.
        let mut events = client.execute_pattern_stream(execute_request("user_creation", input)?).await?.into_inner();
        while let Some(e) = events.message().await? {
            if matches!(e.event, Some(pb::execution_event::Event::Finished(_))) {
                break;
            }
        }
    }
    let stopped = nexus.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stopped.tasks_left, 0);
    // Connections to the backends and from the client close once their owners are gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while alive() > before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} task(s) still alive 5 s after shutdown (before start: {before})",
            alive() - before
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
