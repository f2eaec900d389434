//! The hot-path benchmark: the 3-step `user_creation` pattern through Nexus against the same three
//! calls made directly to the same demo services, in the same process and the same run.
//!
//! Everything runs on loopback (127.0.0.1) and every phase is bounded by a request count AND a
//! time limit, so the benchmark always stops by itself.

pub mod events;
pub mod search;
pub mod soak;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use nexus_core::{document, pb, value};
use nexus_demo::pb::{
    asset::{UploadAssetRequest, asset_service_client::AssetServiceClient},
    notification::{SendEmailRequest, notification_service_client::NotificationServiceClient},
    user::{CreateUserRequest, user_service_client::UserServiceClient},
};
use nexus_server::proto::nexus_service_client::NexusServiceClient;
use tonic::transport::{Channel, Endpoint};

/// Steps in the measured pattern (the per-step overhead divides by this).
pub const STEPS: u32 = 3;

const PATTERN: &str = include_str!("../../patterns/user_creation.yaml");

/// The example without its `emit` step: the hot path is three backend calls, compared with the
/// same three calls made directly (events are measured on their own).
fn hot_path_pattern(durable: bool) -> String {
    let text = match (PATTERN.find("  - id: announce"), PATTERN.find("output:")) {
        (Some(a), Some(o)) if a < o => format!("{}{}", &PATTERN[..a], &PATTERN[o..]),
        _ => PATTERN.to_string(),
    };
    if durable { text.replace("durability: ephemeral", "durability: durable") } else { text }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Requests in the sequential latency phase (concurrency 1).
    pub latency_requests: usize,
    /// Requests in the throughput phase, split across `concurrency` clients.
    pub throughput_requests: usize,
    pub concurrency: usize,
    /// Upper bound on each phase, whatever the request counts.
    pub max_phase_time: Duration,
    pub warmup_requests: usize,
    /// Run the pattern as `durability: durable` (journaled in the store).
    pub durable: bool,
    /// Journal in this PostgreSQL database (a fresh schema is created) instead of SQLite.
    pub database_url: Option<String>,
    /// Run Nexus as its own process (this executable, re-run with `--serve-nexus`), so its CPU
    /// time and memory are measured alone. Otherwise it runs in the benchmark's process.
    pub nexus_process: Option<std::path::PathBuf>,
    /// Measure the 1-client latency again while costly CEL expressions run without pause beside
    /// it (each up to its cost budget): the p99 should not move.
    pub costly_background: bool,
    /// The throughput phase runs as this many rounds, direct then Nexus in each, so that a
    /// slower minute of a shared machine weighs on both paths alike rather than on one of them
    /// (each round gets its share of `throughput_requests` and of `max_phase_time`).
    pub rounds: usize,
}

/// A pattern whose `when` is a five-deep comprehension: it runs until its cost budget is spent.
const COSTLY: &str = r#"
name: costly_expression
version: 1.0.0
input: {type: object, properties: {xs: {type: array, items: {type: integer}}}}
steps:
  - id: mail
    when: "${{ input.xs.all(a, input.xs.all(b, input.xs.all(c, input.xs.all(d, input.xs.all(e, a + b + c + d + e >= 0))))) }}"
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: a@example.com, subject: hi, body: there}
"#;

/// The 1-client latency measured while costly expressions run.
#[derive(Debug, Clone)]
pub struct CostlyBackground {
    pub latency: Stats,
    /// Costly executions that ended meanwhile, and how long each took (mean, ms).
    pub costly_runs: u64,
    pub costly_mean_ms: f64,
    /// The status code they ended with (RESOURCE_EXHAUSTED expected).
    pub costly_code: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            latency_requests: 5_000,
            throughput_requests: 40_000,
            concurrency: 8,
            max_phase_time: Duration::from_secs(15),
            warmup_requests: 1_000,
            durable: false,
            database_url: None,
            nexus_process: None,
            costly_background: false,
            rounds: 4,
        }
    }
}

/// Latency percentiles and throughput of one phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub count: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub per_sec: f64,
    /// CPU time of the whole process (client, Nexus and demo services) per execution, in µs.
    pub cpu_us_per_exec: f64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub direct_latency: Stats,
    pub nexus_latency: Stats,
    pub direct_throughput: Stats,
    pub nexus_throughput: Stats,
    pub concurrency: usize,
    /// The pattern ran durable (journaled).
    pub durable: bool,
    /// Resident set size of the process (client + Nexus + demo services) after the run.
    pub rss_after_kib: u64,
    /// Measured on Nexus's own process, when it runs as one.
    pub nexus_alone: Option<NexusAlone>,
    pub costly: Option<CostlyBackground>,
    /// Nexus executions/s over direct executions/s in each round of the throughput phase.
    pub round_ratios: Vec<f64>,
    /// Executions/s of each round: direct, then Nexus.
    pub round_rates: Vec<(f64, f64)>,
}

/// Nexus measured as its own process.
#[derive(Debug, Clone, Copy)]
pub struct NexusAlone {
    /// Nexus's CPU time per execution in the throughput phase, in µs.
    pub cpu_us_per_exec: f64,
    /// The same in the 1-client latency phase.
    pub cpu_us_per_exec_one_client: f64,
    /// Context switches of Nexus's threads per execution (voluntary and not), in the 1-client
    /// and the throughput phase: a thread that parks and is woken again costs a pair.
    pub switches_per_exec_one_client: f64,
    pub switches_per_exec: f64,
    /// Nexus's resident set size after the run, in KiB.
    pub rss_after_kib: u64,
    /// The part of it that is the executable's own pages mapped from its file (`RssFile`: code
    /// and read-only data; clean, shared, dropped by the kernel under pressure), in KiB.
    pub rss_file_kib: u64,
}

impl Report {
    /// Added latency per step at p50, in milliseconds.
    pub fn overhead_per_step_ms(&self) -> f64 {
        (self.nexus_latency.p50_us - self.direct_latency.p50_us) / 1000.0 / f64::from(STEPS)
    }

    /// Nexus executions/s over direct executions/s at `concurrency` clients.
    pub fn throughput_ratio(&self) -> f64 {
        self.nexus_throughput.per_sec / self.direct_throughput.per_sec.max(f64::MIN_POSITIVE)
    }

    pub fn render(&self) -> String {
        let row = |name: &str, s: &Stats| {
            format!(
                "{name:<34} {:>8} {:>10.1} {:>10.1} {:>12.0} {:>12.1}\n",
                s.count, s.p50_us, s.p99_us, s.per_sec, s.cpu_us_per_exec
            )
        };
        let mut out = format!(
            "{:<34} {:>8} {:>10} {:>10} {:>12} {:>12}\n",
            "phase", "execs", "p50 µs", "p99 µs", "execs/s", "CPU µs/exec"
        );
        out += &row("direct, 1 client", &self.direct_latency);
        out += &row("nexus, 1 client", &self.nexus_latency);
        if let Some(c) = &self.costly {
            out += &row("nexus, 1 client, costly CEL beside", &c.latency);
        }
        out += &row(&format!("direct, {} clients", self.concurrency), &self.direct_throughput);
        out += &row(&format!("nexus, {} clients", self.concurrency), &self.nexus_throughput);
        // The targets of the issues: ephemeral (hot path) and durable (journaled, SQLite).
        let (step_target, cpu_target, rss_target) = if self.durable { (0.3, 300.0, 64.0) } else { (0.05, 0.0, 0.0) };
        out += &format!(
            "\nnexus overhead per step at p50: {:.3} ms (target ≤ {step_target})\n",
            self.overhead_per_step_ms()
        );
        if self.durable {
            out += &format!(
                "durable executions/s at {} clients: {:.0} (target ≥ 2700 on SQLite)\n",
                self.concurrency, self.nexus_throughput.per_sec
            );
        } else {
            out += &format!(
                "nexus / direct throughput at {} clients: {:.2} (target ≥ 0.50)\n",
                self.concurrency,
                self.throughput_ratio()
            );
        }
        if self.round_ratios.len() > 1 {
            let mut sorted = self.round_ratios.clone();
            sorted.sort_by(f64::total_cmp);
            let each: Vec<String> = self.round_ratios.iter().map(|r| format!("{r:.2}")).collect();
            out += &format!(
                "nexus / direct in each of {} alternated rounds: {} (median {:.2})\n",
                sorted.len(),
                each.join(" "),
                median(&sorted)
            );
            let rates: Vec<String> = self.round_rates.iter().map(|(d, n)| format!("{d:.0}/{n:.0}")).collect();
            out += &format!("executions/s in each round, direct/nexus: {}\n", rates.join(" "));
        }
        if let Some(c) = &self.costly {
            out += &format!(
                "beside it: {} costly executions (a five-deep all() each), {:.0} ms each on average, ending {}; p99 {:.1} µs vs {:.1} µs without\n",
                c.costly_runs, c.costly_mean_ms, c.costly_code, c.latency.p99_us, self.nexus_latency.p99_us
            );
        }
        match &self.nexus_alone {
            Some(n) => {
                let target =
                    |t: f64, unit: &str| if t > 0.0 { format!(" (target ≤ {t} {unit})") } else { String::new() };
                out += &format!(
                    "nexus process alone at {} clients: {:.1} µs CPU per execution{}; RSS after the run {:.1} MiB{} ({:.1} MiB of it mapped from the executable file)\n",
                    self.concurrency,
                    n.cpu_us_per_exec,
                    target(cpu_target, "µs"),
                    n.rss_after_kib as f64 / 1024.0,
                    target(rss_target, "MiB"),
                    n.rss_file_kib as f64 / 1024.0,
                );
                out += &format!(
                    "nexus process alone at 1 client: {:.1} µs CPU per execution; context switches per execution {:.1} at 1 client, {:.1} at {} clients\n",
                    n.cpu_us_per_exec_one_client, n.switches_per_exec_one_client, n.switches_per_exec, self.concurrency,
                );
                out += &format!(
                    "RSS after the run of the benchmark process (client + demo services): {:.1} MiB\n",
                    self.rss_after_kib as f64 / 1024.0
                );
            }
            None => {
                out += &format!(
                    "CPU per execution added by nexus at {} clients: {:.1} µs (whole process, nexus minus direct)\n",
                    self.concurrency,
                    self.nexus_throughput.cpu_us_per_exec - self.direct_throughput.cpu_us_per_exec
                );
                out += &format!(
                    "RSS after the run (client + nexus + demo services): {:.1} MiB\n",
                    self.rss_after_kib as f64 / 1024.0
                )
            }
        }
        out
    }
}

/// Starts the demo services and Nexus on loopback, then measures both paths.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    // Every execution, direct or through Nexus, creates a user and an asset in the demo's
    // in-memory stores: sized for the whole run up front, so that no store's rehash (a pause of
    // every call to it) lands in one path's phase rather than the other's. Without it, the
    // rehashes at 7/8 of 2^17 and 2^18 users fell in Nexus's 4th and 8th rounds and took
    // ~17 % off their rate.
    let executions = 2 * (options.warmup_requests + options.latency_requests)
        + 2 * options.throughput_requests.div_ceil(options.rounds.max(1)) * options.rounds.max(1);
    let demo_options = nexus_demo::DemoOptions { capacity: executions + executions / 8, ..Default::default() };
    let (backend, _handle, demo) = nexus_demo::spawn(demo_options).await?;
    // A real file (WAL) when durable, so the journal costs what it costs in production.
    let data_dir = tempfile::tempdir()?;
    let mut config = nexus_server::Config {
        listen: "127.0.0.1:0".parse()?,
        in_memory: !options.durable,
        data_dir: data_dir.path().to_path_buf(),
        ..nexus_server::Config::default()
    };
    let mut schema = None;
    if let (true, Some(url)) = (options.durable, &options.database_url) {
        schema = Some(BenchSchema::create(url, "nexus_bench", &mut config).await?);
    }
    config.services.push(nexus_server::ServiceConfig::from_flag(&format!("demo=http://{backend}"))?);
    let nexus = match &options.nexus_process {
        Some(exe) => RunningNexus::Process(NexusProcess::spawn(exe, &config)?),
        None => RunningNexus::InProcess(Box::new(nexus_server::Nexus::start(config).await?)),
    };
    let nexus_url = format!("http://{}", nexus.addr());
    let backend_url = format!("http://{backend}");

    let mut client = NexusServiceClient::new(channel(&nexus_url).await?);
    let text = hot_path_pattern(options.durable);
    client
        .register_pattern(pb::RegisterPatternRequest { pattern: Some(document::parse(&text)?) })
        .await
        .context("registering user_creation")?;

    let counter = Arc::new(AtomicU64::new(0));
    let direct = Target::Direct(Arc::new(backend_url));
    let via_nexus = Target::Nexus(Arc::new(nexus_url));

    // Warm both paths (connections, allocator, branch predictors) before measuring.
    phase(&direct, 1, options.warmup_requests, options.max_phase_time, &counter).await?;
    phase(&via_nexus, 1, options.warmup_requests, options.max_phase_time, &counter).await?;

    let direct_latency = phase(&direct, 1, options.latency_requests, options.max_phase_time, &counter).await?;
    let one_client_before = (nexus.process_cpu(), nexus.context_switches());
    let nexus_latency = phase(&via_nexus, 1, options.latency_requests, options.max_phase_time, &counter).await?;
    let one_client_after = (nexus.process_cpu(), nexus.context_switches());
    let costly = if options.costly_background {
        client
            .register_pattern(pb::RegisterPatternRequest { pattern: Some(document::parse(COSTLY)?) })
            .await
            .context("registering costly_expression")?;
        Some(with_costly_background(&mut client, &via_nexus, options, &counter).await?)
    } else {
        None
    };
    let c = options.concurrency;
    // Alternated rounds: direct, Nexus, direct, Nexus… Nexus's CPU and context switches are
    // counted over its rounds only.
    let rounds = options.rounds.max(1);
    let round_requests = options.throughput_requests.div_ceil(rounds);
    let round_time = options.max_phase_time / u32::try_from(rounds).unwrap_or(u32::MAX);
    let (mut direct_runs, mut nexus_runs, mut round_ratios, mut round_rates) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut nexus_cpu, mut nexus_switches) = (Some(Duration::ZERO), Some(0u64));
    for _ in 0..rounds {
        let d = run_phase(&direct, c, round_requests, round_time, &counter).await?;
        let (cpu_before, switches_before) = (nexus.process_cpu(), nexus.context_switches());
        let n = run_phase(&via_nexus, c, round_requests, round_time, &counter).await?;
        nexus_cpu = match (nexus_cpu, cpu_before, nexus.process_cpu()) {
            (Some(sum), Some(b), Some(a)) => Some(sum + a.saturating_sub(b)),
            _ => None,
        };
        nexus_switches = match (nexus_switches, switches_before, nexus.context_switches()) {
            (Some(sum), Some(b), Some(a)) => Some(sum + a.saturating_sub(b)),
            _ => None,
        };
        round_ratios.push(n.per_sec() / d.per_sec().max(f64::MIN_POSITIVE));
        round_rates.push((d.per_sec(), n.per_sec()));
        direct_runs.push(d);
        nexus_runs.push(n);
    }
    let direct_throughput = Stats::of(direct_runs);
    let nexus_throughput = Stats::of(nexus_runs);
    let per_exec = |before: Option<u64>, after: Option<u64>, count: usize| match (before, after) {
        (Some(b), Some(a)) => a.saturating_sub(b) as f64 / count.max(1) as f64,
        _ => 0.0,
    };
    let micros = |d: Option<Duration>| d.map(|d| d.as_micros() as u64);
    let nexus_alone = match (nexus_cpu, nexus.rss_kib("VmRSS:"), nexus.rss_kib("RssFile:")) {
        (Some(cpu), Some(rss), Some(rss_file)) => Some(NexusAlone {
            cpu_us_per_exec: cpu.as_secs_f64() * 1e6 / nexus_throughput.count.max(1) as f64,
            cpu_us_per_exec_one_client: per_exec(
                micros(one_client_before.0),
                micros(one_client_after.0),
                nexus_latency.count,
            ),
            switches_per_exec_one_client: per_exec(one_client_before.1, one_client_after.1, nexus_latency.count),
            switches_per_exec: per_exec(Some(0), nexus_switches, nexus_throughput.count),
            rss_after_kib: rss,
            rss_file_kib: rss_file,
        }),
        _ => None,
    };

    nexus.shutdown().await;
    let _ = demo.shutdown().await;
    if let Some(schema) = schema {
        schema.drop().await?;
    }
    Ok(Report {
        rss_after_kib: rss_kib(),
        direct_latency,
        nexus_latency,
        direct_throughput,
        nexus_throughput,
        concurrency: c,
        durable: options.durable,
        nexus_alone,
        costly,
        round_ratios,
        round_rates,
    })
}

/// Runs costly executions back to back on one client while the 1-client latency phase runs again.
async fn with_costly_background(
    client: &mut NexusServiceClient<Channel>,
    via_nexus: &Target,
    options: &Options,
    counter: &Arc<AtomicU64>,
) -> anyhow::Result<CostlyBackground> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut heavy = client.clone();
    let flag = stop.clone();
    let background = tokio::spawn(async move {
        let input = value::serde_to_struct(&serde_json::json!({"xs": (0..22).collect::<Vec<i64>>()}));
        let (mut runs, mut total, mut code) = (0u64, Duration::ZERO, String::new());
        while !flag.load(Ordering::Relaxed) {
            let started = Instant::now();
            let r = heavy
                .execute_pattern(pb::ExecutePatternRequest {
                    pattern_name: "costly_expression".into(),
                    input: input.clone(),
                    ..Default::default()
                })
                .await;
            total += started.elapsed();
            runs += 1;
            code = match r {
                Ok(_) => "OK".into(),
                Err(s) => format!("{:?}", s.code()),
            };
        }
        (runs, total, code)
    });
    // Let the first costly evaluation start.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let latency = phase(via_nexus, 1, options.latency_requests, options.max_phase_time, counter).await?;
    stop.store(true, Ordering::Relaxed);
    let (costly_runs, total, costly_code) = background.await?;
    Ok(CostlyBackground {
        latency,
        costly_runs,
        costly_mean_ms: total.as_secs_f64() * 1e3 / costly_runs.max(1) as f64,
        costly_code,
    })
}

/// Nexus under test: in this process, or as a child process of its own.
enum RunningNexus {
    InProcess(Box<nexus_server::Nexus>),
    Process(NexusProcess),
}

impl RunningNexus {
    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Self::InProcess(n) => n.local_addr(),
            Self::Process(p) => p.addr,
        }
    }

    fn process_cpu(&self) -> Option<Duration> {
        match self {
            Self::InProcess(_) => None,
            Self::Process(p) => Some(cpu_of(&format!("/proc/{}/stat", p.child.id()))),
        }
    }

    /// Context switches of all the process's threads so far (`/proc/<pid>/task/*/status`).
    fn context_switches(&self) -> Option<u64> {
        let Self::Process(p) = self else { return None };
        let tasks = std::fs::read_dir(format!("/proc/{}/task", p.child.id())).ok()?;
        let mut total = 0;
        for task in tasks.flatten() {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
            total += status
                .lines()
                .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
        Some(total)
    }

    /// A line of the process's `/proc/<pid>/status` (`VmRSS:`, `RssFile:`), in KiB.
    fn rss_kib(&self, field: &str) -> Option<u64> {
        match self {
            Self::InProcess(_) => None,
            Self::Process(p) => Some(status_kib(&format!("/proc/{}/status", p.child.id()), field)),
        }
    }

    async fn shutdown(self) {
        match self {
            Self::InProcess(n) => {
                n.shutdown(Duration::from_secs(5)).await;
            }
            Self::Process(mut p) => {
                // Closing its stdin is the child's signal to shut down.
                drop(p.child.stdin.take());
                let _ = tokio::task::spawn_blocking(move || p.child.wait()).await;
            }
        }
    }
}

/// A Nexus child process started by [`NexusProcess::spawn`]; killed if the benchmark fails.
struct NexusProcess {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Drop for NexusProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl NexusProcess {
    /// Runs `exe --serve-nexus` with `config` passed as `NEXUS_*` environment variables.
    fn spawn(exe: &std::path::Path, config: &nexus_server::Config) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let services: Vec<String> = config.services.iter().map(|s| format!("{}={}", s.name, s.endpoint)).collect();
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("--serve-nexus")
            .env("NEXUS_LISTEN", config.listen.to_string())
            .env("NEXUS_DATA_DIR", &config.data_dir)
            .env("NEXUS_IN_MEMORY", if config.in_memory { "true" } else { "false" })
            .env("NEXUS_SERVICES", services.join(","))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        // Experiments on the Nexus process alone (its runtime, its allocator): a variable
        // `NEXUS_BENCH_CHILD_X=v` of the benchmark reaches the child as `X=v`.
        for (k, v) in std::env::vars_os() {
            if let Some(name) = k.to_str().and_then(|k| k.strip_prefix("NEXUS_BENCH_CHILD_")) {
                cmd.env(name, v);
            }
        }
        if let Some(url) = &config.store.url {
            cmd.env("NEXUS_DATABASE_URL", url);
        }
        if let Some(schema) = &config.store.schema {
            cmd.env("NEXUS_DATABASE_SCHEMA", schema);
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {}", exe.display()))?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line.trim().parse().with_context(|| format!("the Nexus child printed `{}`", line.trim()))?;
        Ok(Self { child, addr })
    }
}

/// Logging as `nexus serve` sets it up (quieter by default: warnings only, `NEXUS_LOG` to
/// change it). Every process of the benchmark installs it — the Nexus child, and the benchmark
/// itself, whose clients and demo services (and Nexus, with `--in-process`) use h2 too: without a
/// subscriber, `tracing`'s `log` fallback still builds the spans h2 opens around every frame
/// (`Span::log`, `Span::record_all`: ~8 % of the instructions of an `--in-process` run), a cost
/// no service with a subscriber pays.
pub fn install_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The child side of [`Options::nexus_process`]: starts Nexus from `NEXUS_*` variables, prints
/// its address, and shuts down when stdin closes.
pub async fn serve_nexus_child() -> anyhow::Result<()> {
    install_logging();
    let mut config = nexus_server::Config::default();
    config.apply_env(|k| std::env::var(k).ok())?;
    let nexus = nexus_server::Nexus::start(config).await?;
    println!("{}", nexus.local_addr());
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await??;
    nexus.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[derive(Clone)]
enum Target {
    Direct(Arc<String>),
    Nexus(Arc<String>),
}

pub(crate) async fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_string())?.tcp_nodelay(true).connect().await?)
}

/// Runs `total` executions over `clients` concurrent clients (each with its own connection).
async fn phase(
    target: &Target,
    clients: usize,
    total: usize,
    limit: Duration,
    counter: &Arc<AtomicU64>,
) -> anyhow::Result<Stats> {
    Ok(Stats::of(vec![run_phase(target, clients, total, limit, counter).await?]))
}

/// What one phase measured, before it is summed up with others into [`Stats`].
struct PhaseRun {
    latencies: Vec<Duration>,
    elapsed: Duration,
    /// This process's CPU time over the phase.
    cpu: Duration,
}

impl PhaseRun {
    fn per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

impl Stats {
    /// Several phases of the same kind as one: percentiles over all their executions, the rate
    /// and the CPU over their summed time.
    fn of(runs: Vec<PhaseRun>) -> Self {
        let elapsed: Duration = runs.iter().map(|r| r.elapsed).sum();
        let cpu: Duration = runs.iter().map(|r| r.cpu).sum();
        let mut latencies: Vec<Duration> = runs.into_iter().flat_map(|r| r.latencies).collect();
        latencies.sort_unstable();
        let pct = |p: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let i = ((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1).min(latencies.len() - 1);
            latencies[i].as_secs_f64() * 1e6
        };
        Stats {
            count: latencies.len(),
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            per_sec: latencies.len() as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
            cpu_us_per_exec: cpu.as_secs_f64() * 1e6 / latencies.len().max(1) as f64,
        }
    }
}

/// The median of sorted values (0 for none).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

async fn run_phase(
    target: &Target,
    clients: usize,
    total: usize,
    limit: Duration,
    counter: &Arc<AtomicU64>,
) -> anyhow::Result<PhaseRun> {
    let per_client = total.div_ceil(clients.max(1));
    let cpu_start = process_cpu();
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let target = target.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move { client_loop(target, per_client, deadline, counter).await }));
    }
    let mut latencies = Vec::with_capacity(total);
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_start);
    Ok(PhaseRun { latencies, elapsed, cpu })
}

/// User + system CPU time this process has used so far.
pub fn process_cpu() -> Duration {
    cpu_of("/proc/self/stat")
}

fn cpu_of(stat_path: &str) -> Duration {
    // /proc/<pid>/stat fields 14 and 15 (utime, stime) are in clock ticks (100 Hz on Linux).
    let Ok(stat) = std::fs::read_to_string(stat_path) else { return Duration::ZERO };
    let Some(after_comm) = stat.rsplit_once(')').map(|(_, rest)| rest) else { return Duration::ZERO };
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After the command name, utime is the 12th field and stime the 13th (0-based 11 and 12).
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

async fn client_loop(
    target: Target,
    n: usize,
    deadline: Instant,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(n);
    match target {
        Target::Direct(url) => {
            let ch = channel(&url).await?;
            let mut users = UserServiceClient::new(ch.clone());
            let mut assets = AssetServiceClient::new(ch.clone());
            let mut mail = NotificationServiceClient::new(ch);
            for _ in 0..n {
                if Instant::now() >= deadline {
                    break;
                }
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                // The same work as user_creation: create the user, then the avatar upload and the
                // welcome email concurrently.
                let user = users
                    .create_user(CreateUserRequest {
                        email: format!("user{i}@bench.local"),
                        display_name: format!("User {i}"),
                        roles: Vec::new(),
                    })
                    .await?
                    .into_inner()
                    .user
                    .unwrap_or_default();
                let (a, m) = tokio::join!(
                    assets.upload_asset(UploadAssetRequest {
                        owner_id: user.id.clone(),
                        source_url: format!("https://example.com/{i}.png"),
                        content_type: String::new(),
                    }),
                    mail.send_email(SendEmailRequest {
                        to: format!("user{i}@bench.local"),
                        subject: format!("Welcome User {i}"),
                        body: format!("Your account {} is ready.", user.id),
                    })
                );
                a?;
                m?;
                latencies.push(t.elapsed());
            }
        }
        Target::Nexus(url) => {
            let mut client = NexusServiceClient::new(channel(&url).await?);
            for _ in 0..n {
                if Instant::now() >= deadline {
                    break;
                }
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let input = serde_json::json!({
                    "email": format!("user{i}@bench.local"),
                    "name": format!("User {i}"),
                    "avatar_url": format!("https://example.com/{i}.png"),
                });
                let t = Instant::now();
                client
                    .execute_pattern(pb::ExecutePatternRequest {
                        pattern_name: "user_creation".into(),
                        version: String::new(),
                        input: value::serde_to_struct(&input),
                        idempotency_key: String::new(),
                    })
                    .await?;
                latencies.push(t.elapsed());
            }
        }
    }
    Ok(latencies)
}

/// Figures of the slow-reader streaming run.
#[derive(Debug, Clone, Copy)]
pub struct StreamReport {
    pub consumed: u64,
    pub elapsed: Duration,
    pub rss_start_kib: u64,
    pub rss_max_kib: u64,
}

impl StreamReport {
    pub fn render(&self) -> String {
        format!(
            "slow reader: {} messages in {:.1} s ({:.0}/s); RSS {:.1} MiB at start, {:.1} MiB at most (+{:.1} MiB)\n",
            self.consumed,
            self.elapsed.as_secs_f64(),
            self.consumed as f64 / self.elapsed.as_secs_f64(),
            self.rss_start_kib as f64 / 1024.0,
            self.rss_max_kib as f64 / 1024.0,
            (self.rss_max_kib.saturating_sub(self.rss_start_kib)) as f64 / 1024.0,
        )
    }
}

/// Resident set size of this process, in KiB (Linux).
pub fn rss_kib() -> u64 {
    rss_of("/proc/self/status")
}

fn rss_of(status_path: &str) -> u64 {
    status_kib(status_path, "VmRSS:")
}

fn status_kib(status_path: &str, field: &str) -> u64 {
    std::fs::read_to_string(status_path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// A backend that streams as fast as it can (no pause between chunks) through Nexus to a reader
/// that takes `per_message` for each message, for `duration`: memory must not grow with the
/// amount the backend could have produced (backpressure), and the stream must keep flowing.
pub async fn slow_stream(duration: Duration, per_message: Duration) -> anyhow::Result<StreamReport> {
    let options = nexus_demo::DemoOptions { chunk_interval: Duration::ZERO, ..nexus_demo::DemoOptions::default() };
    let (backend, _handle, demo) = nexus_demo::spawn(options).await?;
    let mut config =
        nexus_server::Config { listen: "127.0.0.1:0".parse()?, in_memory: true, ..nexus_server::Config::default() };
    config.services.push(nexus_server::ServiceConfig::from_flag(&format!("demo=http://{backend}"))?);
    let nexus = nexus_server::Nexus::start(config).await?;
    let mut client = NexusServiceClient::new(channel(&format!("http://{}", nexus.local_addr())).await?);
    let doc = include_str!("../../patterns/subscribe_live_stream.yaml");
    client.register_pattern(pb::RegisterPatternRequest { pattern: Some(document::parse(doc)?) }).await?;
    let input = serde_json::json!({"broadcast_id": "public-bench", "user_id": "u", "max_chunks": 2_000_000_000});
    let rss_start_kib = rss_kib();
    let mut stream = client
        .execute_pattern_stream(pb::ExecutePatternRequest {
            pattern_name: "subscribe_live_stream".into(),
            version: String::new(),
            input: value::serde_to_struct(&input),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner();
    let started = Instant::now();
    let mut consumed = 0u64;
    let mut rss_max_kib = rss_start_kib;
    while started.elapsed() < duration {
        let Some(event) = stream.message().await? else { break };
        if matches!(event.event, Some(pb::execution_event::Event::Message(_))) {
            consumed += 1;
            tokio::time::sleep(per_message).await;
            if consumed.is_multiple_of(100) {
                rss_max_kib = rss_max_kib.max(rss_kib());
            }
        }
    }
    let elapsed = started.elapsed();
    drop(stream);
    nexus.shutdown(Duration::from_secs(5)).await;
    let _ = demo.shutdown().await;
    Ok(StreamReport { consumed, elapsed, rss_start_kib, rss_max_kib })
}

/// The search benchmark: `n` patterns registered in a Nexus with a real store (a SQLite file, or
/// a fresh PostgreSQL schema), then `searches` ListPatterns calls.
pub async fn search(n: usize, searches: usize, database_url: Option<&str>) -> anyhow::Result<search::SearchReport> {
    let (backend, _handle, demo) = nexus_demo::spawn(nexus_demo::DemoOptions::default()).await?;
    let data_dir = tempfile::tempdir()?;
    let mut config = nexus_server::Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data_dir.path().to_path_buf(),
        ..nexus_server::Config::default()
    };
    let mut schema = None;
    if let Some(url) = database_url {
        schema = Some(BenchSchema::create(url, "nexus_bench_search", &mut config).await?);
    }
    config.services.push(nexus_server::ServiceConfig::from_flag(&format!("demo=http://{backend}"))?);
    let nexus = nexus_server::Nexus::start(config).await?;
    let store = if database_url.is_some() { "postgres" } else { "sqlite" };
    let report = search::run(&format!("http://{}", nexus.local_addr()), store, n, searches).await;
    nexus.shutdown(Duration::from_secs(5)).await;
    let _ = demo.shutdown().await;
    if let Some(schema) = schema {
        schema.drop().await?;
    }
    report
}

/// A PostgreSQL schema of the benchmark's own (recreated if a previous run left it), set as
/// `config`'s store; dropped by [`BenchSchema::drop`].
struct BenchSchema {
    conn: sqlx::PgConnection,
    name: String,
}

impl BenchSchema {
    async fn create(url: &str, prefix: &str, config: &mut nexus_server::Config) -> anyhow::Result<Self> {
        let name = format!("{prefix}_{}", std::process::id());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
        sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await?;
        config.store =
            nexus_server::StoreConfig { url: Some(url.to_string()), schema: Some(name.clone()), ..Default::default() };
        Ok(Self { conn, name })
    }

    async fn drop(mut self) -> anyhow::Result<()> {
        sqlx::raw_sql(&format!("DROP SCHEMA {} CASCADE", self.name)).execute(&mut self.conn).await?;
        Ok(())
    }
}
