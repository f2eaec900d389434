//! `schedule:` on a real server and the demo backends, on a manual clock: each overlap policy
//! (`skip`, `buffer_one`, `allow_all`, with durable executions held open by a `wait_for` that a
//! published event releases), catch-up after downtime (the latest missed tick within the window
//! runs once; without a window it is skipped), no tick from before registration, one winner per
//! tick between two schedulers on one store, and the polling loop woken by the clock.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Result, bail, ensure};
use chrono::{DateTime, Utc};
use nexus_core::pb;
use nexus_demo::method;
use nexus_server::schedule::{Fired, ManualClock, Outcome, Scheduler};

use crate::common::*;

fn harness_options() -> Options {
    Options { no_scheduler: true, ..Default::default() }
}

/// The first multiple of `period` strictly after `t`.
fn boundary_after(t: SystemTime, period: Duration) -> SystemTime {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs((since / period.as_secs() + 1) * period.as_secs())
}

/// A durable pattern that waits for `release_event`, then sends an email.
fn held(name: &str, overlap: &str, release_event: &str) -> Result<pb::Pattern> {
    pattern(&format!(
        r#"
name: {name}
version: 1.0.0
durability: durable
schedule: {{cron: "0 * * * * *", overlap: {overlap}}}
steps:
  - id: hold
    wait_for: {{event: {release_event}}}
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    depends_on: [hold]
    with: {{to: "ops@example.com", subject: "scheduled {name}", body: "tick"}}
"#
    ))
}

fn only(fired: Vec<Fired>) -> Result<Fired> {
    match <[Fired; 1]>::try_from(fired) {
        Ok([f]) => Ok(f),
        Err(all) => bail!("expected one tick handled, got {all:?}"),
    }
}

fn started(f: &Fired) -> Result<String> {
    match &f.outcome {
        Outcome::Started(id) => Ok(id.clone()),
        other => bail!("tick {} of {} was {other:?}, not started", f.tick, f.pattern),
    }
}

/// The status GetExecution reports (RUNNING while it runs; FAILED_PRECONDITION was how older
/// servers said so).
async fn status_of(client: &mut Client, id: &str) -> Result<pb::ExecutionStatus> {
    match client.get_execution(pb::GetExecutionRequest { execution_id: id.to_string() }).await {
        Ok(r) => Ok(r.into_inner().status()),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(pb::ExecutionStatus::Running),
        Err(s) => bail!("GetExecution {id}: {s}"),
    }
}

async fn finishes(client: &mut Client, id: &str) -> Result<()> {
    eventually(Duration::from_secs(10), "the scheduled execution succeeding", async || {
        match status_of(client, id).await? {
            pb::ExecutionStatus::Succeeded => Ok(()),
            s => bail!("{s:?}"),
        }
    })
    .await
}

async fn release(client: &mut Client, event_type: &str) -> Result<()> {
    client
        .publish_event(pb::PublishEventRequest {
            event: Some(pb::Event { r#type: event_type.into(), ..Default::default() }),
        })
        .await?;
    Ok(())
}

/// Registers `doc` with the clock just before: the first poll finds only ticks from before the
/// registration, and fires none. Returns the scheduler and the first minute boundary after.
async fn registered(h: &mut Harness, doc: pb::Pattern) -> Result<(Arc<ManualClock>, Arc<Scheduler>, SystemTime)> {
    let clock = ManualClock::new(SystemTime::now());
    register(&mut h.client, doc).await?;
    let scheduler = h.nexus().scheduler(clock.clone());
    let fired = scheduler.tick_once().await;
    ensure!(fired.is_empty(), "a tick from before the registration fired: {fired:?}");
    Ok((clock.clone(), scheduler, boundary_after(clock_now(&clock), Duration::from_secs(60))))
}

fn clock_now(clock: &ManualClock) -> SystemTime {
    nexus_server::schedule::Clock::now(clock)
}

#[tokio::test]
async fn skip_starts_nothing_while_the_previous_execution_runs() -> Result<()> {
    let mut h = Harness::start_with(harness_options()).await?;
    let (clock, scheduler, first) = registered(&mut h, held("sched_skip", "skip", "sched.release.skip")?).await?;

    clock.set(first + Duration::from_secs(1));
    let one = only(scheduler.tick_once().await)?;
    ensure!(one.tick == DateTime::<Utc>::from(first), "{one:?}");
    let id = started(&one)?;
    ensure!(scheduler.tick_once().await.is_empty(), "the tick fired twice");
    ensure!(status_of(&mut h.client, &id).await? == pb::ExecutionStatus::Running);

    // The next minute: the first execution is parked on its wait, so the tick is skipped.
    clock.set(first + Duration::from_secs(61));
    let two = only(scheduler.tick_once().await)?;
    ensure!(two.outcome == Outcome::Overlapping, "{two:?}");
    ensure!(h.demo.calls(method::SEND_EMAIL) == 0);

    release(&mut h.client, "sched.release.skip").await?;
    finishes(&mut h.client, &id).await?;
    ensure!(h.demo.calls(method::SEND_EMAIL) == 1);
    // Nothing buffered: the skipped tick stays skipped; the next one starts.
    ensure!(scheduler.tick_once().await.is_empty());
    clock.set(first + Duration::from_secs(121));
    let three = only(scheduler.tick_once().await)?;
    let id3 = started(&three)?;
    ensure!(id3 != id);
    // Its wait sees the release in the event buffer (the lookback), so it ends at once.
    finishes(&mut h.client, &id3).await?;
    let execution = get_execution(&mut h.client, &id3).await?;
    ensure!(execution.idempotency_key == format!("schedule:1.0.0:{}", three.tick.format("%Y-%m-%dT%H:%M:%SZ")));
    ensure!(execution.tenant == "default", "the pattern's tenant: {}", execution.tenant);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn buffer_one_keeps_one_tick_and_starts_it_when_the_running_one_ends() -> Result<()> {
    let mut h = Harness::start_with(harness_options()).await?;
    let (clock, scheduler, first) =
        registered(&mut h, held("sched_buffer", "buffer_one", "sched.release.buffer")?).await?;

    clock.set(first + Duration::from_secs(1));
    let id = started(&only(scheduler.tick_once().await)?)?;
    clock.set(first + Duration::from_secs(61));
    let two = only(scheduler.tick_once().await)?;
    ensure!(two.outcome == Outcome::Buffered, "{two:?}");
    clock.set(first + Duration::from_secs(121));
    let three = only(scheduler.tick_once().await)?;
    ensure!(three.outcome == Outcome::Overlapping, "one tick waits at most: {three:?}");

    release(&mut h.client, "sched.release.buffer").await?;
    finishes(&mut h.client, &id).await?;
    // The first poll after it ended starts the buffered tick (the second minute's).
    let buffered = only(scheduler.tick_once().await)?;
    ensure!(buffered.tick == two.tick, "{buffered:?}");
    let id2 = started(&buffered)?;
    ensure!(id2 != id);
    finishes(&mut h.client, &id2).await?;
    let execution = get_execution(&mut h.client, &id2).await?;
    ensure!(execution.idempotency_key.ends_with(&two.tick.format("%H:%M:%SZ").to_string()), "{execution:?}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn allow_all_starts_every_tick() -> Result<()> {
    let mut h = Harness::start_with(harness_options()).await?;
    let (clock, scheduler, first) =
        registered(&mut h, held("sched_allow", "allow_all", "sched.release.allow")?).await?;

    clock.set(first + Duration::from_secs(1));
    let id1 = started(&only(scheduler.tick_once().await)?)?;
    clock.set(first + Duration::from_secs(61));
    let id2 = started(&only(scheduler.tick_once().await)?)?;
    ensure!(id1 != id2);
    for id in [&id1, &id2] {
        ensure!(status_of(&mut h.client, id).await? == pb::ExecutionStatus::Running, "{id} runs");
    }
    release(&mut h.client, "sched.release.allow").await?;
    finishes(&mut h.client, &id1).await?;
    finishes(&mut h.client, &id2).await?;
    ensure!(h.demo.calls(method::SEND_EMAIL) == 2);
    h.stop().await;
    Ok(())
}

fn hourly(name: &str, catchup: &str) -> Result<pb::Pattern> {
    pattern(&format!(
        r#"
name: {name}
version: 1.0.0
schedule: {{cron: "0 0 * * * *"{catchup}}}
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {{to: "ops@example.com", subject: "hourly", body: "tick"}}
"#
    ))
}

#[tokio::test]
async fn after_downtime_the_latest_tick_within_the_window_runs_once_and_older_ones_are_skipped() -> Result<()> {
    let mut h = Harness::start_with(harness_options()).await?;
    let clock = ManualClock::new(SystemTime::now());
    register(&mut h.client, hourly("sched_catchup", ", catchup_window: 1800s")?).await?;
    register(&mut h.client, hourly("sched_no_catchup", "")?).await?;
    let scheduler = h.nexus().scheduler(clock.clone());
    ensure!(scheduler.tick_once().await.is_empty());
    let hour = boundary_after(clock_now(&clock), Duration::from_secs(3600));

    // On time: both run.
    clock.set(hour + Duration::from_secs(1));
    let fired = scheduler.tick_once().await;
    ensure!(fired.len() == 2 && fired.iter().all(|f| matches!(f.outcome, Outcome::Started(_))), "{fired:?}");

    // Every replica down for three hours and twenty minutes: ticks at +1h, +2h, +3h missed.
    clock.set(hour + Duration::from_secs(3 * 3600 + 20 * 60));
    let fired = scheduler.tick_once().await;
    let latest = DateTime::<Utc>::from(hour + Duration::from_secs(3 * 3600));
    ensure!(fired.len() == 2, "{fired:?}");
    let catchup = &fired[0];
    ensure!(catchup.pattern == "sched_catchup" && catchup.tick == latest, "{catchup:?}");
    let id = started(catchup)?;
    finishes(&mut h.client, &id).await?;
    let skipped = &fired[1];
    ensure!(skipped.pattern == "sched_no_catchup" && skipped.tick == latest, "{skipped:?}");
    ensure!(skipped.outcome == Outcome::Missed, "without a window a missed tick is skipped: {skipped:?}");
    ensure!(scheduler.tick_once().await.is_empty(), "catch-up runs once");
    eventually(Duration::from_secs(10), "three emails", async || {
        ensure!(h.demo.calls(method::SEND_EMAIL) == 3, "{} calls", h.demo.calls(method::SEND_EMAIL));
        Ok(())
    })
    .await?;

    // Down again, past the window: the latest missed tick (40 minutes old) is skipped too.
    clock.set(hour + Duration::from_secs(5 * 3600 + 40 * 60));
    let fired = scheduler.tick_once().await;
    ensure!(fired.len() == 2 && fired.iter().all(|f| f.outcome == Outcome::Missed), "{fired:?}");

    // Two replicas poll the next tick at once: one starts it, the other finds it taken.
    let other = h.nexus().scheduler(clock.clone());
    clock.set(hour + Duration::from_secs(6 * 3600 + 2));
    let (a, b) = tokio::join!(scheduler.tick_once(), other.tick_once());
    let all: Vec<&Fired> = a.iter().chain(&b).collect();
    for name in ["sched_catchup", "sched_no_catchup"] {
        let of: Vec<&&Fired> = all.iter().filter(|f| f.pattern == name).collect();
        let starts = of.iter().filter(|f| matches!(f.outcome, Outcome::Started(_))).count();
        let taken = of.iter().filter(|f| f.outcome == Outcome::Taken).count();
        ensure!((starts, taken) == (1, 1), "{name}: {of:?}");
    }
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_polling_loop_fires_when_the_clock_reaches_the_tick() -> Result<()> {
    let mut h = Harness::start_with(harness_options()).await?;
    let clock = ManualClock::new(SystemTime::now());
    register(&mut h.client, hourly("sched_loop", "")?).await?;
    let scheduler = h.nexus().scheduler(clock.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(scheduler.run(stop.clone()));
    let hour = boundary_after(clock_now(&clock), Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(100)).await;
    ensure!(h.demo.calls(method::SEND_EMAIL) == 0, "nothing is due before the hour");
    clock.set(hour + Duration::from_secs(1));
    until(Duration::from_secs(10), "the hourly email", || h.demo.calls(method::SEND_EMAIL) == 1).await?;
    // The clock stands still: no further tick, however long the loop polls.
    tokio::time::sleep(Duration::from_millis(200)).await;
    clock.advance(Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(200)).await;
    ensure!(h.demo.calls(method::SEND_EMAIL) == 1);
    stop.cancel();
    running.await?;
    h.stop().await;
    Ok(())
}
