//! The events benchmark: how long an event takes to start the execution it triggers (against
//! ExecutePattern starting the same pattern, and a direct backend call, in the same run), how
//! much memory a parked (waiting) durable execution holds, and how long an event takes to resume
//! one. Nexus runs in this process on the embedded store (a SQLite file) and the in-process bus,
//! or on NATS JetStream (`--events-url`).

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, ensure};
use nexus_core::{document, pb, value};
use nexus_server::proto::nexus_service_client::NexusServiceClient;
use tonic::transport::Channel;

use crate::{channel, rss_kib};

const TRIGGERED: &str = r#"
name: bench_triggered
version: 1.0.0
durability: durable
on: [{event: bench.start, input: {n: "${{ event.data.n }}"}}]
input: {type: object, required: [n], properties: {n: {type: integer}}}
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "bench@example.com", subject: "n ${{ input.n }}"}
"#;

const WAITING: &str = r#"
name: bench_waiting
version: 1.0.0
durability: durable
input: {type: object, required: [key], properties: {key: {type: string}}}
steps:
  - id: go
    wait_for: {event: bench.go, match: "${{ event.data.key == input.key }}", timeout: 3600s}
"#;

pub struct EventsReport {
    pub bus: String,
    pub trigger_start: Latencies,
    pub execute_start: Latencies,
    pub direct_call: Latencies,
    pub waiting: usize,
    pub park_secs: f64,
    pub rss_before_kib: u64,
    pub rss_waiting_kib: u64,
    pub resume: Latencies,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Latencies {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Latencies {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1));
            samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        Self { count: samples.len(), p50_ms: at(0.50), p99_ms: at(0.99) }
    }
}

impl EventsReport {
    pub fn render(&self) -> String {
        let l = |name: &str, l: &Latencies| {
            format!("{name:<44} n={:<6} p50 {:>7.2} ms  p99 {:>7.2} ms\n", l.count, l.p50_ms, l.p99_ms)
        };
        let per_waiting =
            (self.rss_waiting_kib.saturating_sub(self.rss_before_kib)) as f64 * 1024.0 / self.waiting as f64;
        let mut out = format!("events on {}\n", self.bus);
        out += &l("event → triggered execution started", &self.trigger_start);
        out += &l("ExecutePattern → execution started (same run)", &self.execute_start);
        out += &l("direct backend call (same run)", &self.direct_call);
        out += &format!(
            "{} durable executions parked in {:.1} s; RSS {:.1} → {:.1} MiB: {:.0} bytes in RAM per waiting execution (goal ≤ 2048)\n",
            self.waiting,
            self.park_secs,
            self.rss_before_kib as f64 / 1024.0,
            self.rss_waiting_kib as f64 / 1024.0,
            per_waiting
        );
        out += &l("event → waiting execution resumed", &self.resume);
        out
    }
}

fn started_at(e: &pb::Execution) -> anyhow::Result<SystemTime> {
    let t = e.started_at.context("no started_at")?;
    SystemTime::try_from(t).map_err(|e| anyhow::anyhow!("started_at: {e}"))
}

async fn execution(client: &mut NexusServiceClient<Channel>, id: &str) -> anyhow::Result<pb::Execution> {
    Ok(client.get_execution(pb::GetExecutionRequest { execution_id: id.into() }).await?.into_inner())
}

/// Runs the events benchmark: `samples` latencies of each kind, `waiting` parked executions.
pub async fn run(samples: usize, waiting: usize, events_url: Option<String>) -> anyhow::Result<EventsReport> {
    let (backend, _handle, demo) = nexus_demo::spawn(nexus_demo::DemoOptions::default()).await?;
    let data_dir = tempfile::tempdir()?;
    let mut config = nexus_server::Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data_dir.path().to_path_buf(),
        execution_history: 100,
        ..nexus_server::Config::default()
    };
    let unique = format!("{}", SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_nanos());
    let bus = match &events_url {
        Some(url) => {
            config.events.url = Some(url.clone());
            config.events.stream = format!("NEXUS_BENCH_{unique}");
            config.events.consumer = format!("bench-{unique}");
            config.events.subject_prefix = format!("bench.{unique}.events");
            format!("NATS JetStream ({url}), SQLite journal")
        }
        None => "the in-process bus, SQLite journal (embedded)".to_string(),
    };
    config.services.push(nexus_server::ServiceConfig::from_flag(&format!("demo=http://{backend}"))?);
    let nexus = nexus_server::Nexus::start(config).await?;
    let nexus_url = format!("http://{}", nexus.local_addr());
    let mut client = NexusServiceClient::new(channel(&nexus_url).await?);
    for doc in [TRIGGERED, WAITING] {
        client.register_pattern(pb::RegisterPatternRequest { pattern: Some(document::parse(doc)?) }).await?;
    }
    let publish = |event_type: &str, data: serde_json::Value| pb::PublishEventRequest {
        event: Some(pb::Event { r#type: event_type.into(), data: value::serde_to_struct(&data), ..Default::default() }),
    };

    // Event → start: one event at a time; the execution's journaled start against the publish.
    let mut trigger = Vec::with_capacity(samples);
    for n in 0..samples {
        let t0 = SystemTime::now();
        let mut start = publish("bench.start", serde_json::json!({"n": n}));
        if let Some(e) = start.event.as_mut() {
            e.source = "bench".into();
            e.id = format!("start-{n}");
        }
        client.publish_event(start).await?;
        let key = format!("event:1.0.0:bench:start-{n}");
        // Sequential: wait until it exists, so one start does not queue behind another.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let page = client
                .list_executions(pb::ListExecutionsRequest {
                    pattern_name: "bench_triggered".into(),
                    page_size: 1,
                    ..Default::default()
                })
                .await?
                .into_inner();
            if let Some(e) = page.executions.first().filter(|e| e.idempotency_key == key) {
                trigger.push(started_at(e)?.duration_since(t0).unwrap_or_default());
                break;
            }
            ensure!(Instant::now() < deadline, "event {n} started no execution within 10 s");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    // ExecutePattern → start, the same pattern, and a direct call of its one backend action.
    let mut execute = Vec::with_capacity(samples);
    for n in 0..samples {
        let t0 = SystemTime::now();
        let r = client
            .execute_pattern(pb::ExecutePatternRequest {
                pattern_name: "bench_triggered".into(),
                input: value::serde_to_struct(&serde_json::json!({"n": 1_000_000 + n})),
                ..Default::default()
            })
            .await?
            .into_inner();
        let e =
            execution(&mut client, &r.execution_id).await.with_context(|| format!("ExecutePattern phase: {r:?}"))?;
        execute.push(started_at(&e)?.duration_since(t0).unwrap_or_default());
    }
    let mut direct = Vec::with_capacity(samples);
    let mut backend_client = nexus_demo::pb::notification::notification_service_client::NotificationServiceClient::new(
        channel(&format!("http://{backend}")).await?,
    );
    for _ in 0..samples {
        let t0 = Instant::now();
        backend_client
            .send_email(nexus_demo::pb::notification::SendEmailRequest {
                to: "bench@example.com".into(),
                subject: "direct".into(),
                ..Default::default()
            })
            .await?;
        direct.push(t0.elapsed());
    }

    // Parked executions: memory held while they wait.
    let rss_before_kib = rss_kib();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut parked_ids = Vec::with_capacity(waiting);
    for k in 0..waiting {
        if tasks.len() >= 32 {
            let (k, id) = tasks.join_next().await.context("a task")???;
            parked_ids.push((k, id));
        }
        let mut c = client.clone();
        tasks.spawn(async move {
            let r = c
                .execute_pattern(pb::ExecutePatternRequest {
                    pattern_name: "bench_waiting".into(),
                    input: value::serde_to_struct(&serde_json::json!({"key": format!("k{k}")})),
                    ..Default::default()
                })
                .await?
                .into_inner();
            ensure!(r.status == pb::ExecutionStatus::Running as i32, "not parked: {r:?}");
            anyhow::Ok((k, r.execution_id))
        });
    }
    let mut ids = vec![String::new(); waiting];
    for (k, id) in parked_ids {
        ids[k] = id;
    }
    while let Some(r) = tasks.join_next().await {
        let (k, id) = r??;
        ids[k] = id;
    }
    let park_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_waiting_kib = rss_kib();

    // Event → resume, one at a time, on the first `samples` keys.
    let mut resume = Vec::with_capacity(samples);
    for k in 0..samples.min(waiting) {
        let t0 = SystemTime::now();
        client.publish_event(publish("bench.go", serde_json::json!({"key": format!("k{k}")}))).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let id = ids.get(k).context("an id")?;
        loop {
            // Still running (parked, or resuming): FAILED_PRECONDITION until it has finished.
            let e = match client.get_execution(pb::GetExecutionRequest { execution_id: id.clone() }).await {
                Ok(e) => Some(e.into_inner()),
                Err(s) if s.code() == tonic::Code::FailedPrecondition => None,
                Err(s) => return Err(anyhow::Error::from(s).context(format!("resuming k{k}"))),
            };
            if let Some(e) = e.filter(|e| e.status == pb::ExecutionStatus::Succeeded as i32) {
                resume.push(started_at(&e)?.duration_since(t0).unwrap_or_default());
                break;
            }
            ensure!(Instant::now() < deadline, "bench.go k{k} resumed nothing within 10 s");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    nexus.shutdown(Duration::from_secs(10)).await;
    let _ = demo.shutdown().await;
    // The stream was the run's own: leave nothing behind on the server.
    if let Some(url) = &events_url {
        let client = async_nats::connect(url).await?;
        let _ = async_nats::jetstream::new(client).delete_stream(format!("NEXUS_BENCH_{unique}")).await;
    }
    Ok(EventsReport {
        bus,
        trigger_start: Latencies::of(trigger),
        execute_start: Latencies::of(execute),
        direct_call: Latencies::of(direct),
        waiting,
        park_secs,
        rss_before_kib,
        rss_waiting_kib,
        resume: Latencies::of(resume),
    })
}
