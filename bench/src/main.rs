//! `nexus-bench`: prints Nexus's hot-path latency and throughput against direct calls.

use std::time::Duration;

use clap::Parser;

/// mimalloc: the request path allocates many small, short-lived buffers (HTTP/2 frames,
/// messages, maps); glibc malloc took ~16% of CPU in the benchmark profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Benchmark user_creation through Nexus against direct calls (loopback only)")]
struct Args {
    /// Sequential executions measured for latency.
    #[arg(long, default_value_t = 5_000)]
    latency_requests: usize,
    /// Executions measured for throughput.
    #[arg(long, default_value_t = 40_000)]
    throughput_requests: usize,
    /// Concurrent clients in the throughput phase.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Time limit of each phase, in seconds.
    #[arg(long, default_value_t = 15)]
    max_phase_secs: u64,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
    /// Run user_creation as a durable pattern (journaled; SQLite file unless --database-url).
    #[arg(long)]
    durable: bool,
    /// With --durable: journal in PostgreSQL (a temporary schema is created and dropped).
    #[arg(long)]
    database_url: Option<String>,
    /// Instead: stream through Nexus to a slow reader for this many seconds and report memory.
    #[arg(long)]
    slow_stream_secs: Option<u64>,
    /// Run Nexus in the benchmark's own process (by default it runs as a separate process, so
    /// its CPU time and memory are measured alone).
    #[arg(long)]
    in_process: bool,
    /// Instead: register this many patterns through the API and measure ListPatterns searches
    /// (SQLite, or PostgreSQL with --database-url).
    #[arg(long)]
    search_patterns: Option<usize>,
    /// Instead: the events benchmark — event→start and event→resume latencies (this many
    /// samples each) and the memory of --waiting parked durable executions.
    #[arg(long)]
    events: Option<usize>,
    /// With --events: how many durable executions wait at once.
    #[arg(long, default_value_t = 10_000)]
    waiting: usize,
    /// With --events: NATS JetStream instead of the in-process bus (a stream of its own).
    #[arg(long)]
    events_url: Option<String>,
    /// The throughput phase as this many alternated rounds (direct, then Nexus, in each), so
    /// that the machine's slower moments weigh on both paths alike.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Also measure the 1-client latency while costly CEL expressions run beside it.
    #[arg(long)]
    costly_background: bool,
    /// Instead: the soak benchmark — mixed load (ephemeral, durable, streams, registrations, slow
    /// readers, injected errors) against one Nexus process for this many seconds, its RSS and CPU
    /// printed every --soak-interval-secs; fails if any error was not an injected one.
    #[arg(long)]
    soak_secs: Option<u64>,
    /// With --soak-secs: seconds between two samples.
    #[arg(long, default_value_t = 60)]
    soak_interval_secs: u64,
    /// With --soak-secs: new pattern versions registered per second (0 leaves the registry alone,
    /// to tell its growth from the rest).
    #[arg(long, default_value_t = 1.0)]
    soak_registrations_per_sec: f64,
    /// (Internal) run as the Nexus child process.
    #[arg(long, hide = true)]
    serve_nexus: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = nexus_bench::Options {
        latency_requests: args.latency_requests,
        throughput_requests: args.throughput_requests,
        concurrency: args.concurrency,
        max_phase_time: Duration::from_secs(args.max_phase_secs),
        warmup_requests: (args.latency_requests / 5).max(10),
        durable: args.durable,
        database_url: args.database_url.clone(),
        nexus_process: if args.in_process { None } else { Some(std::env::current_exe()?) },
        costly_background: args.costly_background,
        rounds: args.rounds.max(1),
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.serve_nexus {
        // As `nexus serve` does: NEXUS_WORKER_THREADS, else one worker per core.
        if let Some(n) = std::env::var("NEXUS_WORKER_THREADS").ok().and_then(|v| v.parse::<usize>().ok()) {
            runtime.worker_threads(n.clamp(1, 1024));
        }
    }
    let runtime = runtime.enable_all().build()?;
    nexus_bench::install_logging();
    if args.serve_nexus {
        return runtime.block_on(nexus_bench::serve_nexus_child());
    }
    if let Some(n) = args.search_patterns {
        let report = runtime.block_on(nexus_bench::search(n, 200, args.database_url.as_deref()))?;
        print!("{}", report.render());
        return Ok(());
    }
    if let Some(samples) = args.events {
        let report = runtime.block_on(nexus_bench::events::run(samples, args.waiting, args.events_url.clone()))?;
        print!("{}", report.render());
        return Ok(());
    }
    if let Some(secs) = args.soak_secs {
        let options = nexus_bench::soak::SoakOptions {
            duration: Duration::from_secs(secs),
            interval: Duration::from_secs(args.soak_interval_secs.max(1)),
            nexus_exe: std::env::current_exe()?,
            load: nexus_bench::soak::Load {
                registration_rate: args.soak_registrations_per_sec.max(0.0),
                ..nexus_bench::soak::Load::default()
            },
            print_progress: true,
        };
        let report = runtime.block_on(nexus_bench::soak::run(&options))?;
        print!("{}", report.render());
        anyhow::ensure!(report.unexpected_errors == 0, "{} unexpected errors", report.unexpected_errors);
        return Ok(());
    }
    if let Some(secs) = args.slow_stream_secs {
        let report = runtime.block_on(nexus_bench::slow_stream(Duration::from_secs(secs), Duration::from_millis(1)))?;
        print!("{}", report.render());
        return Ok(());
    }
    let report = runtime.block_on(nexus_bench::run(&options))?;
    if args.json {
        let s = |s: &nexus_bench::Stats| serde_json::json!({"count": s.count, "p50_us": s.p50_us, "p99_us": s.p99_us, "per_sec": s.per_sec, "cpu_us_per_exec": s.cpu_us_per_exec});
        println!(
            "{}",
            serde_json::json!({
                "direct_latency": s(&report.direct_latency),
                "nexus_latency": s(&report.nexus_latency),
                "direct_throughput": s(&report.direct_throughput),
                "nexus_throughput": s(&report.nexus_throughput),
                "overhead_per_step_ms": report.overhead_per_step_ms(),
                "throughput_ratio": report.throughput_ratio(),
                "rss_after_kib": report.rss_after_kib,
                "nexus_alone": report.nexus_alone.map(|n| serde_json::json!({"cpu_us_per_exec": n.cpu_us_per_exec, "cpu_us_per_exec_one_client": n.cpu_us_per_exec_one_client, "switches_per_exec_one_client": n.switches_per_exec_one_client, "switches_per_exec": n.switches_per_exec, "rss_after_kib": n.rss_after_kib, "rss_file_kib": n.rss_file_kib})),
            })
        );
    } else {
        print!("{}", report.render());
    }
    Ok(())
}
