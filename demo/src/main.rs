//! The `nexus-demo` binary: runs the demo backend services on one port until Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use nexus_demo::{DemoOptions, SERVICE_NAMES};
use tokio::net::TcpListener;

/// Demo backend gRPC services for Nexus (users, assets, notifications, broadcasts).
#[derive(Debug, Parser)]
#[command(name = "nexus-demo", version)]
struct Args {
    /// Address to listen on (plain HTTP/2).
    #[arg(long, env = "NEXUS_DEMO_LISTEN", default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
    /// Latency added to every unary call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Probability (0..=1) that a unary call fails with UNAVAILABLE.
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// Pause between Subscribe chunks, in milliseconds.
    #[arg(long, default_value_t = 50)]
    chunk_interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.failure_rate) {
        bail!("--failure-rate must be between 0 and 1, got {}", args.failure_rate);
    }
    let options = DemoOptions {
        latency: Duration::from_millis(args.latency_ms),
        failure_rate: args.failure_rate,
        chunk_interval: Duration::from_millis(args.chunk_interval_ms),
        capacity: 0,
    };

    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding --listen {}", args.listen))?;
    let address = listener.local_addr()?;
    println!("nexus-demo listening on {address} (h2c, with gRPC reflection)");
    for service in SERVICE_NAMES {
        println!("  {service}");
    }

    nexus_demo::serve(listener, options, async {
        // If the signal handler cannot be installed, stop rather than run unkillable by Ctrl-C.
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C; shutting down");
        }
        tracing::info!("shutting down");
    })
    .await
    .context("demo server failed")
}
