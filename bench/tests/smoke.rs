//! Keeps the benchmark runnable: a tiny run must complete and produce sane figures.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_run_measures_both_paths() {
    let options = nexus_bench::Options {
        latency_requests: 30,
        throughput_requests: 60,
        concurrency: 4,
        max_phase_time: Duration::from_secs(10),
        warmup_requests: 10,
        durable: false,
        database_url: None,
        nexus_process: None,
        costly_background: true,
        rounds: 2,
    };
    let report = nexus_bench::run(&options).await.expect("benchmark run");
    for s in [report.direct_latency, report.nexus_latency, report.direct_throughput, report.nexus_throughput] {
        assert!(s.count > 0 && s.p50_us > 0.0 && s.p99_us >= s.p50_us && s.per_sec > 0.0, "{s:?}");
    }
    let costly = report.costly.as_ref().expect("the costly phase ran");
    assert!(costly.latency.count > 0 && costly.costly_runs > 0, "{costly:?}");
    assert_eq!(costly.costly_code, "ResourceExhausted", "{costly:?}");
    assert_eq!(report.round_ratios.len(), 2, "{report:?}");
    let text = report.render();
    assert!(text.contains("overhead per step") && text.contains("in each of 2 alternated rounds"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_reader_keeps_memory_bounded() {
    let report = nexus_bench::slow_stream(Duration::from_secs(2), Duration::from_millis(2)).await.expect("stream run");
    println!("{}", report.render());
    assert!(report.consumed > 50, "the stream kept flowing: {report:?}");
    // The backend could produce millions of chunks in that time; backpressure must hold it back.
    let growth_mib = report.rss_max_kib.saturating_sub(report.rss_start_kib) / 1024;
    assert!(growth_mib < 64, "RSS grew by {growth_mib} MiB: {report:?}");
}

/// Durable, with Nexus as its own process (how the figures of Nexus alone are measured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_run_measures_nexus_as_its_own_process() {
    let options = nexus_bench::Options {
        latency_requests: 30,
        throughput_requests: 60,
        concurrency: 4,
        max_phase_time: Duration::from_secs(10),
        warmup_requests: 10,
        durable: true,
        database_url: None,
        nexus_process: Some(env!("CARGO_BIN_EXE_nexus-bench").into()),
        costly_background: false,
        rounds: 1,
    };
    let report = nexus_bench::run(&options).await.expect("benchmark run");
    let alone = report.nexus_alone.expect("figures of the Nexus process");
    assert!(alone.rss_after_kib > 1024 && alone.cpu_us_per_exec > 0.0, "{alone:?}");
    let text = report.render();
    assert!(text.contains("durable executions/s") && text.contains("nexus process alone"), "{text}");
}

/// The search benchmark, small: every search finds something and the figures are sane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_search_run_measures_list_patterns() {
    let report = nexus_bench::search(60, 20, None).await.expect("search run");
    assert_eq!(report.patterns, 60);
    assert!(report.results > 0 && report.p50_ms > 0.0 && report.p99_ms >= report.p50_ms, "{report:?}");
    assert!(report.render().contains("ListPatterns searches"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_events_run_measures_starts_parking_and_resumes() {
    let report = nexus_bench::events::run(20, 50, None).await.unwrap();
    assert_eq!(report.trigger_start.count, 20);
    assert_eq!(report.execute_start.count, 20);
    assert_eq!(report.resume.count, 20);
    assert!(report.trigger_start.p50_ms > 0.0 && report.resume.p99_ms > 0.0, "{}", report.render());
    assert!(report.render().contains("bytes in RAM per waiting execution"));
}
