//! A short soak (10 s, a sample every 2 s, a light load): every kind of load completes, the
//! injected errors get their codes, and nothing else fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use nexus_bench::soak::{KINDS, Load, SoakOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_has_no_unexpected_error() {
    let options = SoakOptions {
        duration: Duration::from_secs(10),
        interval: Duration::from_secs(2),
        nexus_exe: env!("CARGO_BIN_EXE_nexus-bench").into(),
        load: Load {
            ephemeral_clients: 2,
            ephemeral_rate: 20.0,
            durable_clients: 1,
            durable_rate: 10.0,
            stream_clients: 1,
            stream_rate: 2.0,
            stream_chunks: 10,
            registration_rate: 2.0,
            slow_readers: 2,
            slow_chunks: 10,
            injected_rate: 3.0,
            ..Load::default()
        },
        print_progress: true,
    };
    let report = run(&options).await.expect("soak run");
    let text = report.render();
    println!("{text}");
    assert_eq!(report.unexpected_errors, 0, "{text}");
    assert_eq!(report.samples.len(), 5, "{text}");
    assert!(report.samples.iter().all(|s| s.rss_kib > 1024), "{text}");
    for (kind, (figures, _)) in KINDS.iter().zip(&report.totals) {
        assert!(figures.count > 0, "nothing completed of {}: {text}", kind.name());
    }
    assert!(report.injected.contains_key("NotFound") && report.injected.contains_key("InvalidArgument"), "{text}");
    assert!(report.slope_mib_per_min().is_some() && text.contains("memory: "), "{text}");
}
