//! `nexus demo`: the demo backends and Nexus in one process, the example patterns registered and
//! `user_creation` executed, with the addresses and ready-to-paste commands printed.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use clap::Args;
use nexus_core::{document, pb, value};
use nexus_demo::DemoOptions;
use nexus_server::{Config, Nexus, ServiceConfig};

use crate::{Target, client, render};

/// The example patterns, compiled into the binary so the demo runs from anywhere.
pub const EXAMPLE_PATTERNS: &[(&str, &str)] = &[
    ("patterns/user_creation.yaml", include_str!("../../../patterns/user_creation.yaml")),
    ("patterns/subscribe_live_stream.yaml", include_str!("../../../patterns/subscribe_live_stream.yaml")),
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
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let options = DemoOptions { latency: Duration::from_millis(args.latency_ms), ..DemoOptions::default() };
    let (backend, _handle, demo) = nexus_demo::spawn(options).await.context("starting the demo services")?;
    let mut config = Config { listen: args.listen, in_memory: true, ..Config::default() };
    config.services.push(ServiceConfig::from_flag(&format!("demo=http://{backend}"))?);
    let nexus = Nexus::start(config).await.context("starting nexus")?;
    let addr = nexus.local_addr();
    let target = Target {
        addr: format!("http://{addr}"),
        json: false,
        token: None,
        ca_file: None,
        allow_plaintext_token: false,
        timeout: Duration::from_secs(60),
    };

    let mut client = client::connect(&target).await?;
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

    println!("\nNexus      http://{addr}  (gRPC, gRPC-Web and Connect JSON on one port)");
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
