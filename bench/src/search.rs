//! The marketplace search benchmark: N patterns registered through the API (RegisterPattern, as
//! users do), then ListPatterns with a mix of queries (text, tag, action, owner, sorts, pages),
//! measured end to end over gRPC on loopback. SQLite (a file) or PostgreSQL (a fresh schema).

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use nexus_core::{document, pb};
use nexus_server::proto::nexus_service_client::NexusServiceClient;

/// Figures of one search run.
#[derive(Debug, Clone)]
pub struct SearchReport {
    pub store: String,
    pub patterns: usize,
    pub register_secs: f64,
    pub searches: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Patterns returned over all searches (a sanity check that the searches match things).
    pub results: usize,
}

impl SearchReport {
    pub fn render(&self) -> String {
        format!(
            "{}: {} patterns registered through the API in {:.1} s; {} ListPatterns searches returned {} patterns: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p50 < 50 ms)\n",
            self.store,
            self.patterns,
            self.register_secs,
            self.searches,
            self.results,
            self.p50_ms,
            self.p99_ms,
            self.max_ms
        )
    }
}

const ACTIONS: [&str; 4] = [
    "demo.notification.v1.NotificationService/SendEmail",
    "demo.notification.v1.NotificationService/SendPush",
    "demo.user.v1.UserService/GetUser",
    "demo.asset.v1.AssetService/UploadAsset",
];

const WORDS: [&str; 8] = ["billing", "welcome", "audit", "report", "sync", "export", "invite", "cleanup"];

fn document_for(i: usize) -> anyhow::Result<pb::Pattern> {
    let word = WORDS[i % WORDS.len()];
    let action = ACTIONS[i % ACTIONS.len()];
    let with = match i % ACTIONS.len() {
        0 => r#"{to: "${{ input.email }}", subject: "hello"}"#,
        1 => r#"{user_id: "${{ input.email }}", title: "hello"}"#,
        2 => r#"{user_id: "${{ input.email }}"}"#,
        _ => r#"{owner_id: "${{ input.email }}", source_url: "https://x/a.png"}"#,
    };
    let visibility = ["public", "tenant", "private"][i % 3];
    let yaml = format!(
        "name: {word}_flow_{i:05}\nversion: 1.0.0\nvisibility: {visibility}\ndescription: The {word} flow number {i} of the search benchmark\ntags: [{word}, team{}]\nsteps:\n  - id: s\n    call: {action}\n    with: {with}\n",
        i % 50
    );
    document::parse(&yaml).with_context(|| format!("pattern {i}"))
}

/// Registers `n` patterns and runs `searches` ListPatterns calls against `nexus_url`.
pub async fn run(nexus_url: &str, store: &str, n: usize, searches: usize) -> anyhow::Result<SearchReport> {
    let channel = tonic::transport::Endpoint::from_shared(nexus_url.to_string())?.tcp_nodelay(true).connect().await?;
    let client = NexusServiceClient::new(channel);
    let started = Instant::now();
    let mut registered = futures::stream::iter(0..n)
        .map(|i| {
            let mut client = client.clone();
            async move {
                let pattern = document_for(i)?;
                client
                    .register_pattern(pb::RegisterPatternRequest { pattern: Some(pattern) })
                    .await
                    .with_context(|| format!("registering pattern {i}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8);
    while let Some(r) = registered.next().await {
        r?;
    }
    drop(registered);
    let register_secs = started.elapsed().as_secs_f64();

    let sorts =
        [pb::PatternSort::Relevance, pb::PatternSort::Popularity, pb::PatternSort::Name, pb::PatternSort::Recent];
    let mut client = client;
    let mut latencies = Vec::with_capacity(searches);
    let mut results = 0;
    for q in 0..searches {
        let word = WORDS[q % WORDS.len()];
        let mut req =
            pb::ListPatternsRequest { sort: sorts[q % sorts.len()] as i32, page_size: 20, ..Default::default() };
        match q % 5 {
            0 => req.query = word.to_string(),
            1 => req.query = format!("flow_{:03}", q % 100),
            2 => req.tag = format!("team{}", q % 50),
            3 => req.action = ACTIONS[q % ACTIONS.len()].to_string(),
            _ => {
                req.query = word.to_string();
                req.page_token = "40".into();
            }
        }
        let t = Instant::now();
        let page = client.list_patterns(req).await.context("ListPatterns")?.into_inner();
        latencies.push(t.elapsed());
        results += page.patterns.len();
    }
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied();
    Ok(SearchReport {
        store: store.to_string(),
        patterns: n,
        register_secs,
        searches,
        p50_ms: pct(0.5).map(ms).unwrap_or_default(),
        p99_ms: pct(0.99).map(ms).unwrap_or_default(),
        max_ms: latencies.last().copied().map(ms).unwrap_or_default(),
        results,
    })
}
