//! `nexus demo`: the demo backends and Nexus in one process, the example patterns registered and
//! `user_creation` executed, with the addresses and ready-to-paste commands printed.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use clap::Args;
use nexus_core::{document, pb, value};
use nexus_demo::DemoOptions;
use nexus_server::{Config, Nexus, ServiceConfig};

use crate::{client, render};

/// The example patterns, compiled into the binary so the demo runs from anywhere.
pub const EXAMPLE_PATTERNS: &[(&str, &str)] = &[
    ("patterns/user_creation.yaml", include_str!("../../../patterns/user_creation.yaml")),
    ("patterns/subscribe_live_stream.yaml", include_str!("../../../patterns/subscribe_live_stream.yaml")),
    ("patterns/welcome_series.yaml", include_str!("../../../patterns/welcome_series.yaml")),
];

#[derive(Args)]
pub struct DemoArgs {
    /// Where Nexus listens.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Latency injected into every demo backend call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Exit after the example execution instead of serving until Ctrl-C.
    #[arg(long)]
    once: bool,
    /// Threads that run requests [default: one per core].
    #[arg(long, env = "NEXUS_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
}

/// The newest execution of `pattern` with `status`, waiting up to 10 s for one to appear.
async fn wait_for_execution(
    client: &mut client::Client,
    pattern: &str,
    status: pb::ExecutionStatus,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = client
            .list_executions(pb::ListExecutionsRequest {
                pattern_name: pattern.into(),
                status: status as i32,
                page_size: 1,
                page_token: String::new(),
            })
            .await
            .map_err(client::status_error)?
            .into_inner();
        if let Some(e) = page.executions.first() {
            return Ok(e.id.clone());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("no {} execution of {pattern} within 10 s", status.as_str_name());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let options = DemoOptions { latency: Duration::from_millis(args.latency_ms), ..DemoOptions::default() };
    let (backend, _handle, demo) = nexus_demo::spawn(options).await.context("starting the demo services")?;
    let mut config = Config { listen: args.listen, in_memory: true, ..Config::default() };
    config.services.push(ServiceConfig::from_flag(&format!("demo=http://{backend}"))?);
    let nexus = Nexus::start(config).await.context("starting nexus")?;
    let addr = nexus.local_addr();
    // The demo's own server: no profile applies.
    let target = crate::profile::Effective {
        addr: format!("http://{addr}"),
        token: None,
        ca_file: None,
        allow_plaintext_token: false,
        timeout: Duration::from_secs(60),
        profile: None,
    };

    let mut client = client::connect_to(&target).await?;
    for (file, text) in EXAMPLE_PATTERNS {
        let pattern = document::parse(text).with_context(|| file.to_string())?;
        let r = client
            .register_pattern(pb::RegisterPatternRequest { pattern: Some(pattern) })
            .await
            .map_err(client::status_error)
            .with_context(|| format!("registering {file}"))?
            .into_inner();
        let p = r.pattern_ref.unwrap_or_default();
        println!("registered {}@{} ({file})", p.name, p.version);
    }

    let input = serde_json::json!({
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "avatar_url": "https://example.com/ada.png"
    });
    let result = client
        .execute_pattern(pb::ExecutePatternRequest {
            pattern_name: "user_creation".into(),
            version: String::new(),
            input: value::serde_to_struct(&input),
            idempotency_key: String::new(),
        })
        .await
        .map_err(client::status_error)
        .context("executing user_creation")?
        .into_inner();
    let execution = client
        .get_execution(pb::GetExecutionRequest { execution_id: result.execution_id })
        .await
        .map_err(client::status_error)?
        .into_inner();
    println!("\nexecuted user_creation with {input}");
    print!("{}", render::timeline(&execution));

    // The `user.created` it emitted started welcome_series, which now waits (parked in the
    // journal) for `user.verified`; verify the address and watch it finish.
    let user_id = result
        .output
        .as_ref()
        .and_then(|o| o.fields.get("user_id"))
        .and_then(|v| match &v.kind {
            Some(prost_types::value::Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .context("user_creation returned no user_id")?;
    let waiting = wait_for_execution(&mut client, "welcome_series", pb::ExecutionStatus::Running).await?;
    println!("\nuser.created started welcome_series: execution {waiting}, waiting for user.verified");
    client
        .publish_event(pb::PublishEventRequest {
            event: Some(pb::Event {
                r#type: "user.verified".into(),
                source: "demo/verification-link".into(),
                data: value::serde_to_struct(&serde_json::json!({ "user_id": user_id })),
                ..Default::default()
            }),
        })
        .await
        .map_err(client::status_error)
        .context("publishing user.verified")?;
    println!("published user.verified for {user_id}");
    let done = wait_for_execution(&mut client, "welcome_series", pb::ExecutionStatus::Succeeded).await?;
    let execution = client
        .get_execution(pb::GetExecutionRequest { execution_id: done })
        .await
        .map_err(client::status_error)?
        .into_inner();
    print!("{}", render::timeline(&execution));

    // Usage the system learns from: a few users sign up, then each watches the keynote with the
    // user id sign-up returned. SuggestPatterns finds the flow and proposes one pattern for it.
    for (i, name) in ["Grace Hopper", "Alan Turing", "Katherine Johnson", "Edsger Dijkstra"].iter().enumerate() {
        let email = format!("viewer{i}@example.com");
        let signed_up = client
            .execute_pattern(pb::ExecutePatternRequest {
                pattern_name: "user_creation".into(),
                input: value::serde_to_struct(&serde_json::json!({"email": email, "name": name})),
                ..Default::default()
            })
            .await
            .map_err(client::status_error)
            .context("executing user_creation")?
            .into_inner();
        let user_id = signed_up
            .output
            .as_ref()
            .and_then(|o| o.fields.get("user_id"))
            .and_then(|v| match &v.kind {
                Some(prost_types::value::Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .context("user_creation returned no user_id")?;
        client
            .execute_pattern(pb::ExecutePatternRequest {
                pattern_name: "subscribe_live_stream".into(),
                input: value::serde_to_struct(
                    &serde_json::json!({"broadcast_id": "public-keynote", "user_id": user_id, "max_chunks": 2}),
                ),
                ..Default::default()
            })
            .await
            .map_err(client::status_error)
            .context("executing subscribe_live_stream")?;
    }
    println!(
        "
ran user_creation then subscribe_live_stream (with the new user_id) for 4 users"
    );
    let suggested = client
        .suggest_patterns(pb::SuggestPatternsRequest {
            kinds: vec![pb::SuggestionKind::Composite as i32],
            ..Default::default()
        })
        .await
        .map_err(client::status_error)
        .context("SuggestPatterns")?
        .into_inner();
    print!("SuggestPatterns: {}", render::suggestions(&suggested, true));

    println!("\nNexus      http://{addr}  (gRPC, gRPC-Web, Connect JSON and CloudEvents at /events on one port)");
    println!("Web UI     http://{addr}/ui/  (composer, catalog, marketplace, executions, graph)");
    println!("backends   http://{backend}  (demo.user.v1.UserService, demo.asset.v1.AssetService,");
    println!("           demo.notification.v1.NotificationService, demo.broadcast.v1.BroadcastService)");
    println!("\nTry it:");
    println!(
        "  curl -s -H 'Content-Type: application/json' -d '{{\"pattern_name\": \"user_creation\", \"input\": {{\"email\": \"grace@example.com\", \"name\": \"Grace Hopper\"}}}}' http://{addr}/nexus.v1.NexusService/ExecutePattern"
    );
    println!(
        "  cargo run -q --bin nexus -- run user_creation --addr http://{addr} --input '{{\"email\": \"alan@example.com\", \"name\": \"Alan Turing\"}}'"
    );
    println!("  cargo run -q --bin nexus -- services --addr http://{addr}");

    if !args.once {
        println!("\nServing until Ctrl-C.");
        crate::shutdown_signal().await?;
    }
    nexus.shutdown(Duration::from_secs(10)).await;
    let _ = demo.shutdown().await;
    Ok(())
}
