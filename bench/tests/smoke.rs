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
    };
    let report = nexus_bench::run(&options).await.expect("benchmark run");
    for s in [report.direct_latency, report.nexus_latency, report.direct_throughput, report.nexus_throughput] {
        assert!(s.count > 0 && s.p50_us > 0.0 && s.p99_us >= s.p50_us && s.per_sec > 0.0, "{s:?}");
    }
    assert!(report.render().contains("overhead per step"));
}
