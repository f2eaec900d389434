//! `nexus`: run the gateway (`serve`, `demo`) and talk to a running one (patterns, runs, catalog).

mod client;
mod demo;
mod render;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use nexus_server::{Config, ServiceConfig};

/// mimalloc: the request path allocates many small, short-lived buffers (HTTP/2 frames,
/// messages, maps); glibc malloc took ~16% of CPU in the benchmark profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "nexus", version, about = "Nexus: one endpoint that runs typed patterns across gRPC services")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct Target {
    /// Address of a running Nexus.
    #[arg(long, global = true, env = "NEXUS_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Start the demo services and Nexus in one process, register the example patterns and run one.
    Demo(demo::DemoArgs),
    /// Register, validate, list and show patterns.
    #[command(subcommand)]
    Pattern(PatternCommand),
    /// Execute a pattern and print its step timeline.
    Run {
        /// Pattern name.
        name: String,
        /// Execution input as a JSON object.
        #[arg(long, short, default_value = "{}")]
        input: String,
        /// Exact version (default: latest).
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Show each step and each streamed message live (ExecutePatternStream).
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List the catalog: services and their actions.
    Services {
        #[command(flatten)]
        target: Target,
    },
    /// List recent executions, or show one.
    Executions {
        /// Show this execution in full.
        id: Option<String>,
        /// Only executions of this pattern.
        #[arg(long)]
        pattern: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum PatternCommand {
    /// Validate and register pattern files (YAML or JSON).
    Register {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Type-check pattern files against the catalog without registering them.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// List registered patterns (latest version of each).
    List {
        /// Free-text search in names, descriptions and tags.
        #[arg(long, short)]
        query: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Show a registered pattern (or a local file) as YAML.
    Show {
        /// A pattern name, or a path to a pattern file.
        name: String,
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (gRPC, gRPC-Web and Connect JSON on one port).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// A backend to plug in, as NAME=URL (descriptors by gRPC server reflection). Repeatable.
    #[arg(long = "service", value_name = "NAME=URL")]
    services: Vec<String>,
    /// nexus.toml with [[services]] and other settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the embedded store lives (default .nexus).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep patterns in memory only.
    #[arg(long)]
    in_memory: bool,
    /// Share state with other replicas in PostgreSQL (postgres://user:password@host/db).
    #[arg(long, env = "NEXUS_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(cli.command, Command::Serve(_) | Command::Demo(_)));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(server: bool) {
    let default = if server { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Pattern(PatternCommand::Register { files, target }) => client::register(&target, &files).await,
        Command::Pattern(PatternCommand::Validate { files, target }) => client::validate(&target, &files).await,
        Command::Pattern(PatternCommand::List { query, owner, tag, target }) => {
            client::list(&target, query, owner, tag).await
        }
        Command::Pattern(PatternCommand::Show { name, version, target }) => client::show(&target, &name, version).await,
        Command::Run { name, input, version, idempotency_key, follow, target } => {
            if follow {
                client::follow(&target, &name, &input, version).await
            } else {
                client::run(&target, &name, &input, version, idempotency_key).await
            }
        }
        Command::Services { target } => client::services(&target).await,
        Command::Executions { id, pattern, limit, target } => client::executions(&target, id, pattern, limit).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    config.apply_env(|k| std::env::var(k).ok())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    for s in &args.services {
        config.services.push(ServiceConfig::from_flag(s)?);
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if args.in_memory {
        config.in_memory = true;
    }
    if let Some(url) = args.database_url {
        config.store.url = Some(url);
    }
    let store = match (&config.store.url, config.in_memory) {
        (Some(url), _) => nexus_store::redact_url(url),
        (None, true) => "in memory".to_string(),
        (None, false) => config.data_dir.display().to_string(),
    };
    let nexus = nexus_server::Nexus::start(config).await.context("nexus could not start")?;
    println!("nexus listening on http://{} (store: {store}, {} services)", nexus.local_addr(), nexus.service_count());
    tokio::select! {
        r = shutdown_signal() => r?,
        _ = std::future::pending::<()>() => {}
    }
    let grace = nexus.shutdown_grace();
    println!("shutting down: durable executions handed back to the cluster, ephemeral ones get {grace:?} to finish");
    nexus.shutdown(grace).await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
