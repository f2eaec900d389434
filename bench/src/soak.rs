//! The soak benchmark (issue 11): one Nexus process under a mixed, rate-bounded load for a long
//! time — ephemeral and durable executions, server-streaming executions read to the end, new
//! pattern versions registered, slow stream readers that sometimes hang up early, and a small
//! fixed rate of bad requests — with Nexus's RSS and CPU printed every interval. At the end: the
//! slope of RSS after warm-up, whether memory is flat, and every error that was not injected.
//!
//! Nexus runs as a child process (this executable with `--serve-nexus`), so its RSS and CPU are
//! its own; the demo services and the clients run in this process. Loopback only; the SQLite
//! journal lives in a temporary directory removed at the end.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use nexus_core::{document, pb, value};
use nexus_server::proto::nexus_service_client::NexusServiceClient;
use tonic::transport::Channel;

use crate::{NexusProcess, RunningNexus, channel, hot_path_pattern, process_cpu};

type Client = NexusServiceClient<Channel>;

const STREAM_PATTERN: &str = include_str!("../../patterns/subscribe_live_stream.yaml");
const DURABLE_NAME: &str = "user_creation_durable";
/// Registrations cycle through this many names (a new one every [`VERSIONS_PER_NAME`]
/// registrations until all exist): registered versions are kept forever by design, so the
/// registry grows by one small version per registration, never by a new name after that.
const REGISTERED_NAMES: u64 = 5;
const VERSIONS_PER_NAME: u64 = 60;

/// What runs, and how fast. The defaults keep Nexus at roughly 60–70 % of one core.
#[derive(Debug, Clone)]
pub struct Load {
    /// Concurrent clients executing `user_creation` (ephemeral), each at `ephemeral_rate`/s.
    pub ephemeral_clients: usize,
    pub ephemeral_rate: f64,
    /// Concurrent clients executing its durable variant (journaled), each at `durable_rate`/s.
    pub durable_clients: usize,
    pub durable_rate: f64,
    /// Clients running `subscribe_live_stream`, each `stream_rate` streams/s of `stream_chunks`
    /// chunks read to the end.
    pub stream_clients: usize,
    pub stream_rate: f64,
    pub stream_chunks: u32,
    /// Pause between two chunks of the demo's Subscribe.
    pub chunk_interval: Duration,
    /// New pattern versions registered per second.
    pub registration_rate: f64,
    /// Readers taking `slow_read` per message of a `slow_chunks`-chunk stream; every third one
    /// hangs up early.
    pub slow_readers: usize,
    pub slow_read: Duration,
    pub slow_chunks: u32,
    /// Bad requests per second (unknown pattern, invalid input, invalid document, in turn).
    pub injected_rate: f64,
}

impl Default for Load {
    fn default() -> Self {
        Self {
            ephemeral_clients: 4,
            ephemeral_rate: 150.0,
            durable_clients: 2,
            durable_rate: 60.0,
            stream_clients: 2,
            stream_rate: 2.0,
            stream_chunks: 20,
            chunk_interval: Duration::from_millis(10),
            registration_rate: 1.0,
            slow_readers: 4,
            slow_read: Duration::from_millis(100),
            slow_chunks: 60,
            injected_rate: 3.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub duration: Duration,
    /// RSS, CPU and the per-kind figures are printed every interval.
    pub interval: Duration,
    /// This executable (run with `--serve-nexus` as the Nexus process).
    pub nexus_exe: PathBuf,
    pub load: Load,
    /// Print each interval's line as it ends (the report keeps them too).
    pub print_progress: bool,
}

/// The kinds of load, in the order they are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ephemeral,
    Durable,
    Stream,
    Register,
    SlowReader,
    Injected,
}

pub const KINDS: [Kind; 6] =
    [Kind::Ephemeral, Kind::Durable, Kind::Stream, Kind::Register, Kind::SlowReader, Kind::Injected];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ephemeral => "ephemeral",
            Self::Durable => "durable",
            Self::Stream => "stream",
            Self::Register => "register",
            Self::SlowReader => "slow",
            Self::Injected => "injected",
        }
    }

    /// What its latency measures.
    pub fn measures(self) -> &'static str {
        match self {
            Self::Ephemeral | Self::Durable => "ExecutePattern call",
            Self::Stream => "ExecutePatternStream to its finished event",
            Self::Register => "RegisterPattern call",
            Self::SlowReader => "ExecutePatternStream to its first message",
            Self::Injected => "call to its (expected) error",
        }
    }
}

/// Per kind: what one interval saw, and the whole run.
#[derive(Default)]
struct Tally {
    window: Vec<Duration>,
    window_errors: u64,
    all: Vec<Duration>,
    errors: u64,
}

#[derive(Default)]
struct Board {
    tallies: [Tally; 6],
    /// Distinct unexpected error messages (the first few) and how often each occurred.
    messages: BTreeMap<String, u64>,
    /// Injected errors by the status code they got.
    injected: BTreeMap<String, u64>,
}

const DISTINCT_MESSAGES: usize = 20;

struct Shared {
    board: Mutex<Board>,
    stop: AtomicBool,
    /// Makes every email (and so every demo user) unique.
    counter: AtomicU64,
}

impl Shared {
    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    fn record(&self, kind: Kind, outcome: Result<Duration, String>) {
        let mut board = self.board();
        let i = kind as usize;
        match outcome {
            Ok(latency) => {
                board.tallies[i].window.push(latency);
                board.tallies[i].all.push(latency);
            }
            Err(message) => {
                board.tallies[i].window_errors += 1;
                board.tallies[i].errors += 1;
                let key: String = format!("{}: {message}", kind.name()).chars().take(300).collect();
                let distinct = board.messages.len();
                if let Some(n) = board.messages.get_mut(&key) {
                    *n += 1;
                } else if distinct < DISTINCT_MESSAGES {
                    board.messages.insert(key, 1);
                }
            }
        }
    }

    fn injected(&self, code: tonic::Code) {
        *self.board().injected.entry(format!("{code:?}")).or_default() += 1;
    }
}

/// Latency figures of a set of samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Figures {
    fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 * q).ceil() as usize).saturating_sub(1).min(samples.len() - 1);
            samples[i].as_secs_f64() * 1e3
        };
        Self { count: samples.len(), p50_ms: at(0.50), p99_ms: at(0.99) }
    }
}

/// One interval's line.
#[derive(Debug, Clone)]
pub struct Sample {
    pub elapsed: Duration,
    pub rss_kib: u64,
    /// Nexus's CPU over the interval, in % of one core; and this process's (clients + demo).
    pub nexus_cpu_pct: f64,
    pub bench_cpu_pct: f64,
    pub threads: u64,
    pub fds: u64,
    /// Per kind (in [`KINDS`] order): completed, latencies, unexpected errors.
    pub kinds: Vec<(Figures, u64)>,
}

impl Sample {
    pub fn render(&self) -> String {
        let mut line = format!(
            "[{:>5.0} s] RSS {:>6.1} MiB  CPU {:>3.0} % (bench {:>3.0} %)  thr {:>2} fds {:>3}",
            self.elapsed.as_secs_f64(),
            self.rss_kib as f64 / 1024.0,
            self.nexus_cpu_pct,
            self.bench_cpu_pct,
            self.threads,
            self.fds
        );
        for (kind, (f, errors)) in KINDS.iter().zip(&self.kinds) {
            line +=
                &format!(" | {} {} p50 {:.2} p99 {:.2} ms err {}", kind.name(), f.count, f.p50_ms, f.p99_ms, errors);
        }
        line
    }
}

#[derive(Debug, Clone)]
pub struct SoakReport {
    pub duration: Duration,
    pub interval: Duration,
    /// RSS before the load started (patterns registered), in KiB.
    pub rss_start_kib: u64,
    pub samples: Vec<Sample>,
    /// Per kind, over the whole run: completed, latencies, unexpected errors.
    pub totals: Vec<(Figures, u64)>,
    pub unexpected_errors: u64,
    /// The first distinct unexpected error messages, with their counts.
    pub messages: Vec<(String, u64)>,
    pub injected: BTreeMap<String, u64>,
    pub versions_registered: u64,
}

/// Memory counts as flat when the least-squares slope of RSS after warm-up is below this…
pub const FLAT_SLOPE_MIB_PER_MIN: f64 = 1.0;
/// …and the last sample is within this fraction above the lowest sample after warm-up.
pub const FLAT_LAST_WITHIN: f64 = 0.10;

impl SoakReport {
    /// The samples after warm-up: the first interval's is left out.
    pub fn after_warmup(&self) -> &[Sample] {
        self.samples.get(1..).unwrap_or_default()
    }

    /// Least-squares slope of RSS over the samples after warm-up, in MiB per minute (None with
    /// fewer than two).
    pub fn slope_mib_per_min(&self) -> Option<f64> {
        let points: Vec<(f64, f64)> =
            self.after_warmup().iter().map(|s| (s.elapsed.as_secs_f64() / 60.0, s.rss_kib as f64 / 1024.0)).collect();
        if points.len() < 2 {
            return None;
        }
        let n = points.len() as f64;
        let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
        let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
        (sxx > 0.0).then(|| sxy / sxx)
    }

    /// The last sample over the lowest after warm-up (1.0 = at the minimum).
    pub fn last_over_min(&self) -> Option<f64> {
        let after = self.after_warmup();
        let min = after.iter().map(|s| s.rss_kib).min()?;
        let last = after.last()?.rss_kib;
        Some(last as f64 / min.max(1) as f64)
    }

    /// Whether memory is flat after warm-up (see [`FLAT_SLOPE_MIB_PER_MIN`], [`FLAT_LAST_WITHIN`]).
    pub fn flat(&self) -> Option<bool> {
        Some(self.slope_mib_per_min()? < FLAT_SLOPE_MIB_PER_MIN && self.last_over_min()? <= 1.0 + FLAT_LAST_WITHIN)
    }

    pub fn render(&self) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let secs = self.duration.as_secs_f64().max(f64::MIN_POSITIVE);
        let mut out = format!(
            "\nsoak summary: {:.0} s of mixed load against one Nexus process, a sample every {:.0} s\n",
            self.duration.as_secs_f64(),
            self.interval.as_secs_f64()
        );
        out += &format!("RSS before the load: {:.1} MiB\n", mib(self.rss_start_kib));
        out += "RSS samples (MiB):";
        for s in &self.samples {
            out += &format!(" {:.0}s={:.1}", s.elapsed.as_secs_f64(), mib(s.rss_kib));
        }
        out += "\n";
        let rule = format!(
            "flat = slope < {FLAT_SLOPE_MIB_PER_MIN} MiB/min and the last sample within {:.0} % of the lowest after warm-up",
            FLAT_LAST_WITHIN * 100.0
        );
        match (self.slope_mib_per_min(), self.last_over_min(), self.flat()) {
            (Some(slope), Some(ratio), Some(flat)) => {
                out += &format!(
                    "RSS slope after warm-up (first interval left out, least squares over {} samples): {slope:+.3} MiB/min; last / lowest = {ratio:.3}\n",
                    self.after_warmup().len()
                );
                out += &format!("memory: {} ({rule})\n", if flat { "FLAT" } else { "NOT FLAT" });
            }
            _ => out += &format!("memory: too few samples after warm-up to judge ({rule})\n"),
        }
        out += &format!(
            "pattern versions registered: {} (over {} names; each is kept in memory by design, so the registry grows with them)\n",
            self.versions_registered,
            REGISTERED_NAMES.min(self.versions_registered.div_ceil(VERSIONS_PER_NAME))
        );
        out += &format!(
            "{:<10} {:>9} {:>8} {:>9} {:>9} {:>6}  latency of\n",
            "kind", "done", "per s", "p50 ms", "p99 ms", "err"
        );
        for (kind, (f, errors)) in KINDS.iter().zip(&self.totals) {
            out += &format!(
                "{:<10} {:>9} {:>8.1} {:>9.2} {:>9.2} {:>6}  {}\n",
                kind.name(),
                f.count,
                f.count as f64 / secs,
                f.p50_ms,
                f.p99_ms,
                errors,
                kind.measures()
            );
        }
        let injected: Vec<String> = self.injected.iter().map(|(code, n)| format!("{code} {n}")).collect();
        out += &format!(
            "injected errors by code: {}\n",
            if injected.is_empty() { "none".into() } else { injected.join(", ") }
        );
        out += &format!("unexpected errors: {} (must be 0)\n", self.unexpected_errors);
        for (message, n) in &self.messages {
            out += &format!("  {n} × {message}\n");
        }
        out
    }
}

/// Runs the soak: starts the demo services and a Nexus process (SQLite journal in a temporary
/// directory), registers the patterns, runs the load for `options.duration` and stops.
pub async fn run(options: &SoakOptions) -> anyhow::Result<SoakReport> {
    let load = &options.load;
    let demo_options =
        nexus_demo::DemoOptions { chunk_interval: load.chunk_interval, ..nexus_demo::DemoOptions::default() };
    let (backend, _handle, demo) = nexus_demo::spawn(demo_options).await?;
    let data_dir = tempfile::tempdir()?;
    let mut config = nexus_server::Config {
        listen: "127.0.0.1:0".parse()?,
        in_memory: false,
        data_dir: data_dir.path().to_path_buf(),
        ..nexus_server::Config::default()
    };
    config.services.push(nexus_server::ServiceConfig::from_flag(&format!("demo=http://{backend}"))?);
    let nexus = RunningNexus::Process(NexusProcess::spawn(&options.nexus_exe, &config)?);
    let url = format!("http://{}", nexus.addr());

    let mut client = NexusServiceClient::new(channel(&url).await?);
    let durable = hot_path_pattern(true).replacen("name: user_creation\n", &format!("name: {DURABLE_NAME}\n"), 1);
    for (what, text) in [
        ("user_creation", hot_path_pattern(false)),
        (DURABLE_NAME, durable),
        ("subscribe_live_stream", STREAM_PATTERN.into()),
    ] {
        client
            .register_pattern(pb::RegisterPatternRequest { pattern: Some(document::parse(&text)?) })
            .await
            .with_context(|| format!("registering {what}"))?;
    }

    let shared = Arc::new(Shared { board: Mutex::default(), stop: AtomicBool::new(false), counter: AtomicU64::new(0) });
    let registered = Arc::new(AtomicU64::new(0));
    let rss_start_kib = nexus.rss_kib("VmRSS:").unwrap_or(0);
    let mut workers = tokio::task::JoinSet::new();
    let period = |rate: f64| Duration::from_secs_f64(1.0 / rate.max(0.001));
    for _ in 0..load.ephemeral_clients {
        let c = NexusServiceClient::new(channel(&url).await?);
        workers.spawn(executions(c, shared.clone(), Kind::Ephemeral, "user_creation", period(load.ephemeral_rate)));
    }
    for _ in 0..load.durable_clients {
        let c = NexusServiceClient::new(channel(&url).await?);
        workers.spawn(executions(c, shared.clone(), Kind::Durable, DURABLE_NAME, period(load.durable_rate)));
    }
    for _ in 0..load.stream_clients {
        let c = NexusServiceClient::new(channel(&url).await?);
        workers.spawn(streams(c, shared.clone(), period(load.stream_rate), load.stream_chunks));
    }
    for reader in 0..load.slow_readers {
        let c = NexusServiceClient::new(channel(&url).await?);
        workers.spawn(slow_reader(c, shared.clone(), reader as u64, load.slow_read, load.slow_chunks));
    }
    if load.registration_rate > 0.0 {
        let c = NexusServiceClient::new(channel(&url).await?);
        workers.spawn(registrations(c, shared.clone(), period(load.registration_rate), registered.clone()));
    }
    if load.injected_rate > 0.0 {
        let c = NexusServiceClient::new(channel(&url).await?);
        workers.spawn(injected(c, shared.clone(), period(load.injected_rate)));
    }

    let started = Instant::now();
    let pid = match &nexus {
        RunningNexus::Process(p) => p.child.id(),
        RunningNexus::InProcess(_) => std::process::id(),
    };
    let mut samples = Vec::new();
    let (mut nexus_cpu, mut bench_cpu, mut at) = (nexus.process_cpu().unwrap_or_default(), process_cpu(), started);
    let interval = options.interval.max(Duration::from_millis(100));
    loop {
        let next = (at + interval).min(started + options.duration);
        tokio::time::sleep_until(next.into()).await;
        let now = Instant::now();
        let wall = now.duration_since(at).as_secs_f64().max(f64::MIN_POSITIVE);
        let (n_cpu, b_cpu) = (nexus.process_cpu().unwrap_or_default(), process_cpu());
        let kinds = {
            let mut board = shared.board();
            board
                .tallies
                .iter_mut()
                .map(|t| {
                    let f = Figures::of(&mut t.window);
                    t.window.clear();
                    (f, std::mem::take(&mut t.window_errors))
                })
                .collect()
        };
        let sample = Sample {
            elapsed: now.duration_since(started),
            rss_kib: nexus.rss_kib("VmRSS:").unwrap_or(0),
            nexus_cpu_pct: n_cpu.saturating_sub(nexus_cpu).as_secs_f64() / wall * 100.0,
            bench_cpu_pct: b_cpu.saturating_sub(bench_cpu).as_secs_f64() / wall * 100.0,
            threads: status_field(pid, "Threads:"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
            kinds,
        };
        if options.print_progress {
            println!("{}", sample.render());
        }
        samples.push(sample);
        (nexus_cpu, bench_cpu, at) = (n_cpu, b_cpu, now);
        if now >= started + options.duration {
            break;
        }
    }
    let duration = started.elapsed();

    shared.stop.store(true, Ordering::Relaxed);
    // Every worker checks the flag at least every slow read or pacing tick; a stuck one is
    // aborted (and reported) rather than waited for.
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(joined) = workers.join_next().await {
            joined?;
        }
        anyhow::Ok(())
    })
    .await;
    match drained {
        Ok(result) => result?,
        Err(_) => {
            shared.record(Kind::Ephemeral, Err("a load task did not stop within 30 s of the end".into()));
            workers.abort_all();
        }
    }
    drop(client);
    nexus.shutdown().await;
    let _ = demo.shutdown().await;
    drop(data_dir);

    let mut board = shared.board();
    let totals: Vec<(Figures, u64)> = board.tallies.iter_mut().map(|t| (Figures::of(&mut t.all), t.errors)).collect();
    Ok(SoakReport {
        duration,
        interval,
        rss_start_kib,
        samples,
        unexpected_errors: totals.iter().map(|t| t.1).sum(),
        totals,
        messages: std::mem::take(&mut board.messages).into_iter().collect(),
        injected: std::mem::take(&mut board.injected),
        versions_registered: registered.load(Ordering::Relaxed),
    })
}

/// A field of /proc/<pid>/status as a number (0 if missing).
fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// Ticks every `period` (a late tick delays the next ones: no bursts) until the soak stops.
struct Pace {
    tick: tokio::time::Interval,
    shared: Arc<Shared>,
}

impl Pace {
    fn new(period: Duration, shared: Arc<Shared>) -> Self {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { tick, shared }
    }

    async fn next(&mut self) -> bool {
        self.tick.tick().await;
        !self.shared.stopped()
    }
}

fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

fn request(pattern: &str, input: serde_json::Value) -> pb::ExecutePatternRequest {
    pb::ExecutePatternRequest {
        pattern_name: pattern.into(),
        input: value::serde_to_struct(&input),
        ..Default::default()
    }
}

fn user_input(i: u64) -> serde_json::Value {
    serde_json::json!({
        "email": format!("soak{i}@bench.local"),
        "name": format!("Soak {i}"),
        "avatar_url": format!("https://example.com/{i}.png"),
    })
}

/// user_creation (ephemeral or durable), one call per tick.
async fn executions(mut client: Client, shared: Arc<Shared>, kind: Kind, pattern: &'static str, period: Duration) {
    let mut pace = Pace::new(period, shared.clone());
    while pace.next().await {
        let t = Instant::now();
        let outcome = client.execute_pattern(request(pattern, user_input(shared.next()))).await;
        shared.record(kind, outcome.map(|_| t.elapsed()).map_err(|s| describe(&s)));
    }
}

fn stream_input(i: u64, chunks: u32) -> serde_json::Value {
    serde_json::json!({"broadcast_id": format!("public-soak-{i}"), "user_id": "soak", "max_chunks": chunks})
}

/// How a streamed execution ended, as the client saw it.
fn finished(event: &pb::ExecutionEvent) -> Option<Result<(), String>> {
    match &event.event {
        Some(pb::execution_event::Event::Finished(done)) => Some(if done.status() == pb::ExecutionStatus::Succeeded {
            Ok(())
        } else {
            Err(format!(
                "the streamed execution ended {:?}: {}",
                done.status(),
                done.error.as_ref().map_or("", |e| e.message.as_str())
            ))
        }),
        _ => None,
    }
}

/// subscribe_live_stream, one stream per tick, read to its end as fast as it comes.
async fn streams(mut client: Client, shared: Arc<Shared>, period: Duration, chunks: u32) {
    let mut pace = Pace::new(period, shared.clone());
    while pace.next().await {
        let t = Instant::now();
        let outcome = read_stream(&mut client, stream_input(shared.next(), chunks), chunks).await;
        shared.record(Kind::Stream, outcome.map(|()| t.elapsed()));
    }
}

async fn read_stream(client: &mut Client, input: serde_json::Value, chunks: u32) -> Result<(), String> {
    let mut stream = client
        .execute_pattern_stream(request("subscribe_live_stream", input))
        .await
        .map_err(|s| describe(&s))?
        .into_inner();
    let (mut messages, mut end) = (0u32, None);
    while let Some(event) = stream.message().await.map_err(|s| describe(&s))? {
        if matches!(event.event, Some(pb::execution_event::Event::Message(_))) {
            messages += 1;
        }
        end = finished(&event).or(end);
    }
    end.unwrap_or_else(|| Err("the stream ended without a finished event".into()))?;
    if messages != chunks {
        return Err(format!("{messages} stream messages, {chunks} expected"));
    }
    Ok(())
}

/// Streams read one message per `per_message`; every third one is dropped after a few messages
/// (the execution must be cancelled, not leaked). Latency: to the first message.
async fn slow_reader(mut client: Client, shared: Arc<Shared>, reader: u64, per_message: Duration, chunks: u32) {
    let mut session = reader;
    while !shared.stopped() {
        session += 1;
        let hang_up_after = session.is_multiple_of(3).then_some(1 + (session * 7) % u64::from(chunks / 2).max(1));
        let outcome = read_slowly(&mut client, &shared, per_message, chunks, hang_up_after).await;
        shared.record(Kind::SlowReader, outcome);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn read_slowly(
    client: &mut Client,
    shared: &Shared,
    per_message: Duration,
    chunks: u32,
    hang_up_after: Option<u64>,
) -> Result<Duration, String> {
    let t = Instant::now();
    let mut stream = client
        .execute_pattern_stream(request("subscribe_live_stream", stream_input(shared.next(), chunks)))
        .await
        .map_err(|s| describe(&s))?
        .into_inner();
    let (mut messages, mut first, mut end) = (0u64, None, None);
    while let Some(event) = stream.message().await.map_err(|s| describe(&s))? {
        if matches!(event.event, Some(pb::execution_event::Event::Message(_))) {
            messages += 1;
            first.get_or_insert_with(|| t.elapsed());
            // Hanging up (also when the soak ends): dropping the stream cancels the execution.
            if hang_up_after.is_some_and(|n| messages >= n) || shared.stopped() {
                return first.ok_or_else(|| "no message".into());
            }
            tokio::time::sleep(per_message).await;
        }
        end = finished(&event).or(end);
    }
    end.unwrap_or_else(|| Err("the stream ended without a finished event".into()))?;
    if messages != u64::from(chunks) {
        return Err(format!("{messages} stream messages, {chunks} expected"));
    }
    first.ok_or_else(|| "the stream had no message".into())
}

fn registered_pattern(name: u64, version: u64) -> String {
    format!(
        r#"
name: soak_registered_{name}
version: 1.0.{version}
description: Registered by the soak benchmark (version {version}).
input: {{type: object, properties: {{n: {{type: integer}}}}}}
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {{to: "soak@example.com", subject: "v{version} ${{{{ input.n }}}}"}}
"#
    )
}

/// A new version per tick, of one of [`REGISTERED_NAMES`] names.
async fn registrations(mut client: Client, shared: Arc<Shared>, period: Duration, registered: Arc<AtomicU64>) {
    let mut pace = Pace::new(period, shared.clone());
    let mut n = 0u64;
    while pace.next().await {
        let name = (n / VERSIONS_PER_NAME) % REGISTERED_NAMES;
        let t = Instant::now();
        let outcome = match document::parse(&registered_pattern(name, n)) {
            Ok(doc) => client
                .register_pattern(pb::RegisterPatternRequest { pattern: Some(doc) })
                .await
                .map_err(|s| describe(&s))
                .and_then(|r| {
                    if r.into_inner().created { Ok(t.elapsed()) } else { Err("the version already existed".into()) }
                }),
            Err(e) => Err(format!("the soak's own document: {e}")),
        };
        if outcome.is_ok() {
            registered.fetch_add(1, Ordering::Relaxed);
        }
        shared.record(Kind::Register, outcome);
        n += 1;
    }
}

/// A pattern that parses but does not compile: `SendEmail` has no such field.
const INVALID_DOCUMENT: &str = r#"
name: soak_invalid
version: 1.0.0
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "soak@example.com", no_such_field: 1}
"#;

/// Bad requests in turn, each expected to fail with its code: an unknown pattern (NOT_FOUND),
/// an input missing a required property (INVALID_ARGUMENT), a document that does not compile
/// (INVALID_ARGUMENT). Any other outcome is an unexpected error.
async fn injected(mut client: Client, shared: Arc<Shared>, period: Duration) {
    let mut pace = Pace::new(period, shared.clone());
    let mut n = 0u64;
    while pace.next().await {
        let t = Instant::now();
        let (what, expected, result) = match n % 3 {
            0 => (
                "unknown pattern",
                tonic::Code::NotFound,
                client.execute_pattern(request("soak_no_such_pattern", serde_json::json!({}))).await.map(|_| ()),
            ),
            1 => (
                "invalid input",
                tonic::Code::InvalidArgument,
                client
                    .execute_pattern(request("user_creation", serde_json::json!({"name": "no email"})))
                    .await
                    .map(|_| ()),
            ),
            _ => (
                "invalid document",
                tonic::Code::InvalidArgument,
                match document::parse(INVALID_DOCUMENT) {
                    Ok(doc) => {
                        client.register_pattern(pb::RegisterPatternRequest { pattern: Some(doc) }).await.map(|_| ())
                    }
                    Err(e) => Err(tonic::Status::internal(format!("the soak's own document: {e}"))),
                },
            ),
        };
        n += 1;
        let outcome = match result {
            Err(s) if s.code() == expected => {
                shared.injected(expected);
                Ok(t.elapsed())
            }
            Err(s) => Err(format!("{what}: {expected:?} expected, got {}", describe(&s))),
            Ok(()) => Err(format!("{what}: {expected:?} expected, but it succeeded")),
        };
        shared.record(Kind::Injected, outcome);
    }
}
