//! Events end to end on the embedded bus: triggers (one execution per event, whatever how often
//! it is published), durable waits (parked, resumed by the event, across a restart), the lookback
//! that lets an event published before its wait still resume it, `any`, timeouts, and
//! PublishEvent's checks.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nexus_core::pb;

use crate::common::*;

fn event(event_type: &str, data: serde_json::Value) -> Result<pb::PublishEventRequest> {
    Ok(pb::PublishEventRequest {
        event: Some(pb::Event { r#type: event_type.into(), data: Some(to_struct(data)?), ..Default::default() }),
    })
}

async fn executions(client: &mut Client, pattern: &str, status: pb::ExecutionStatus) -> Result<Vec<pb::Execution>> {
    Ok(client
        .list_executions(pb::ListExecutionsRequest {
            pattern_name: pattern.into(),
            status: status as i32,
            page_size: 1000,
            page_token: String::new(),
        })
        .await?
        .into_inner()
        .executions)
}

#[tokio::test]
async fn a_trigger_starts_one_execution_per_event_and_its_wait_resumes_on_the_matching_event() -> Result<()> {
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    register(&mut h.client, pattern_file("welcome_series")?).await?;
    let input = serde_json::json!({"email": unique_email("events"), "name": "Eve"});
    let created = h.client.execute_pattern(execute_request("user_creation", input)?).await?.into_inner();
    let user_id =
        to_json(created.output.as_ref().context("output")?)["user_id"].as_str().context("user_id")?.to_string();
    let waiting = eventually(Duration::from_secs(5), "welcome_series waiting", async || {
        let running = executions(&mut h.client, "welcome_series", pb::ExecutionStatus::Running).await?;
        ensure!(running.len() == 1, "{} running", running.len());
        Ok(running[0].id.clone())
    })
    .await?;
    // The same user.created again (a redelivery) starts nothing more.
    let again = pb::PublishEventRequest {
        event: Some(pb::Event {
            r#type: "user.created".into(),
            source: "nexus/patterns/user_creation".into(),
            id: format!("{}/announce", created.execution_id),
            data: Some(to_struct(serde_json::json!({"user_id": user_id, "email": "x@y.z", "name": "X"}))?),
            ..Default::default()
        }),
    };
    let r = h.client.publish_event(again).await?.into_inner();
    ensure!(r.duplicate, "{r:?}");
    // Another user's verification does not match; this user's does.
    h.client.publish_event(event("user.verified", serde_json::json!({"user_id": "usr_other"}))?).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    ensure!(executions(&mut h.client, "welcome_series", pb::ExecutionStatus::Running).await?.len() == 1);
    h.client.publish_event(event("user.verified", serde_json::json!({"user_id": user_id}))?).await?;
    let done = eventually(Duration::from_secs(5), "welcome_series succeeded", async || {
        let done = get_execution(&mut h.client, &waiting).await?;
        ensure!(done.status == pb::ExecutionStatus::Succeeded as i32, "status {}", done.status);
        Ok(done)
    })
    .await?;
    ensure!(step(&done, "guide")?.status == pb::StepStatus::Succeeded as i32);
    let all = executions(&mut h.client, "welcome_series", pb::ExecutionStatus::Unspecified).await?;
    ensure!(all.len() == 1, "one execution per event: {}", all.len());
    h.stop().await;
    Ok(())
}

const CORRELATED: &str = r#"
name: correlated
version: 1.0.0
durability: durable
input: {type: object, required: [key], properties: {key: {type: string}}}
steps:
  - id: got
    wait_for:
      event: test.ready
      match: "${{ event.data.key == input.key }}"
      timeout: 30s
output:
  key: "${{ steps.got.data.key }}"
"#;

const FIRST_OF: &str = r#"
name: first_of
version: 1.0.0
durability: durable
input: {type: object, required: [order], properties: {order: {type: string}}}
steps:
  - id: outcome
    wait_for:
      any:
        - {event: order.paid, match: "${{ event.data.order == input.order }}"}
        - {event: order.cancelled, match: "${{ event.data.order == input.order }}"}
output:
  how: "${{ steps.outcome.type }}"
"#;

const SHORT_WAIT: &str = r#"
name: short_wait
version: 1.0.0
durability: durable
steps:
  - id: never
    wait_for: {event: never.happens, timeout: 1s}
"#;

#[tokio::test]
async fn an_event_published_just_before_its_wait_registers_still_resumes_it() -> Result<()> {
    let mut h = Harness::start().await?;
    register(&mut h.client, pattern(CORRELATED)?).await?;
    // 1,000 events, each published 0–50 ms before the execution whose wait it matches starts
    // (50 at a time): every wait finds its event in the lookback window.
    let mut tasks = tokio::task::JoinSet::new();
    let mut resumed = 0;
    for n in 0..1000u64 {
        if tasks.len() >= 50 {
            resumed += tasks.join_next().await.context("a task")???;
        }
        let mut c = connect(&h).await?;
        tasks.spawn(async move {
            let key = format!("before-{n}");
            c.publish_event(event("test.ready", serde_json::json!({"key": key}))?).await?;
            tokio::time::sleep(Duration::from_millis(n * 37 % 51)).await;
            let r = c.execute_pattern(execute_request("correlated", serde_json::json!({"key": key}))?).await?;
            let r = r.into_inner();
            ensure!(r.status == pb::ExecutionStatus::Succeeded as i32, "{key}: {r:?}");
            ensure!(to_json(r.output.as_ref().context("output")?)["key"] == key.as_str());
            anyhow::Ok(1)
        });
    }
    while let Some(r) = tasks.join_next().await {
        resumed += r??;
    }
    ensure!(resumed == 1000, "{resumed} of 1000 resumed");
    // Racing: the event 0–20 ms before or after the execution starts; every one resumes.
    let mut ids = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..40u64 {
        let mut c = connect(&h).await?;
        let mut p = c.clone();
        let key = format!("race-{n}");
        tasks.spawn(async move {
            let data = serde_json::json!({"key": key});
            let publish = async move {
                tokio::time::sleep(Duration::from_millis(n % 21)).await;
                p.publish_event(event("test.ready", data)?).await?;
                anyhow::Ok(())
            };
            let run = c.execute_pattern(execute_request("correlated", serde_json::json!({"key": key}))?);
            let (published, ran) = tokio::join!(publish, run);
            published?;
            anyhow::Ok(ran?.into_inner().execution_id)
        });
    }
    while let Some(r) = tasks.join_next().await {
        ids.push(r??);
    }
    for id in ids {
        eventually(Duration::from_secs(10), "the racing execution succeeded", async || {
            let e = get_execution(&mut h.client, &id).await?;
            ensure!(e.status == pb::ExecutionStatus::Succeeded as i32, "status {}", e.status);
            Ok(())
        })
        .await?;
    }
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn wait_for_any_completes_on_the_first_and_a_timeout_fails_the_step() -> Result<()> {
    let mut h = Harness::start().await?;
    register(&mut h.client, pattern(FIRST_OF)?).await?;
    let r = h.client.execute_pattern(execute_request("first_of", serde_json::json!({"order": "o1"}))?).await?;
    let r = r.into_inner();
    ensure!(r.status == pb::ExecutionStatus::Running as i32, "parked: {r:?}");
    h.client.publish_event(event("order.cancelled", serde_json::json!({"order": "o1"}))?).await?;
    let done = eventually(Duration::from_secs(5), "first_of finished", async || {
        let e = get_execution(&mut h.client, &r.execution_id).await?;
        ensure!(e.status == pb::ExecutionStatus::Succeeded as i32, "status {}", e.status);
        Ok(e)
    })
    .await?;
    ensure!(to_json(done.output.as_ref().context("output")?)["how"] == "order.cancelled");
    // The other branch was withdrawn with it: a later order.paid resumes nothing, changes nothing.
    h.client.publish_event(event("order.paid", serde_json::json!({"order": "o1"}))?).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(get_execution(&mut h.client, &r.execution_id).await?.status == pb::ExecutionStatus::Succeeded as i32);

    register(&mut h.client, pattern(SHORT_WAIT)?).await?;
    let r = h.client.execute_pattern(execute_request("short_wait", serde_json::json!({}))?).await?.into_inner();
    let failed = eventually(Duration::from_secs(5), "the wait timed out", async || {
        let e = get_execution(&mut h.client, &r.execution_id).await?;
        ensure!(e.status == pb::ExecutionStatus::Failed as i32, "status {}", e.status);
        Ok(e)
    })
    .await?;
    let error = failed.error.context("error")?;
    ensure!(error.code == "DEADLINE_EXCEEDED" && error.message.contains("never.happens"), "{error:?}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn parked_executions_survive_a_restart_any_resumes_once_and_a_timeout_passed_while_down_fires() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = || Options { data_dir: Some(dir.path().into()), ..Default::default() };
    let mut h = Harness::start_with(options()).await?;
    register(&mut h.client, pattern(CORRELATED)?).await?;
    register(&mut h.client, pattern(FIRST_OF)?).await?;
    register(&mut h.client, pattern(SHORT_WAIT)?).await?;
    let start = async |c: &mut Client, name: &str, input: serde_json::Value| -> Result<String> {
        let r = c.execute_pattern(execute_request(name, input)?).await?.into_inner();
        ensure!(r.status == pb::ExecutionStatus::Running as i32, "{name} parked: {r:?}");
        Ok(r.execution_id)
    };
    let correlated = start(&mut h.client, "correlated", serde_json::json!({"key": "k1"})).await?;
    let first_of = start(&mut h.client, "first_of", serde_json::json!({"order": "o2"})).await?;
    let short = start(&mut h.client, "short_wait", serde_json::json!({})).await?;
    h.stop().await;
    // Down for longer than short_wait's timeout: it times out once the node is back.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let mut h = Harness::start_with(options()).await?;
    ensure!(get_execution(&mut h.client, &correlated).await?.status == pb::ExecutionStatus::Running as i32);
    h.client.publish_event(event("test.ready", serde_json::json!({"key": "k1"}))?).await?;
    h.client.publish_event(event("order.paid", serde_json::json!({"order": "o2"}))?).await?;
    let finished = async |c: &mut Client, id: &str, status: pb::ExecutionStatus| -> Result<pb::Execution> {
        eventually(Duration::from_secs(5), "finished after the restart", async || {
            let e = get_execution(c, id).await?;
            ensure!(e.status == status as i32, "status {}", e.status);
            Ok(e)
        })
        .await
    };
    finished(&mut h.client, &correlated, pb::ExecutionStatus::Succeeded).await?;
    let e = finished(&mut h.client, &first_of, pb::ExecutionStatus::Succeeded).await?;
    ensure!(to_json(e.output.as_ref().context("output")?)["how"] == "order.paid");
    let e = finished(&mut h.client, &short, pb::ExecutionStatus::Failed).await?;
    ensure!(e.error.as_ref().is_some_and(|e| e.code == "DEADLINE_EXCEEDED"), "{:?}", e.error);
    // The losing branch left nothing waiting.
    h.client.publish_event(event("order.cancelled", serde_json::json!({"order": "o2"}))?).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = get_execution(&mut h.client, &first_of).await?;
    ensure!(to_json(e.output.as_ref().context("output")?)["how"] == "order.paid");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn publish_event_names_what_is_wrong() -> Result<()> {
    let mut h = Harness::start().await?;
    let cases = [
        (pb::Event { r#type: "".into(), ..Default::default() }, "event.type"),
        (pb::Event { r#type: "has space".into(), ..Default::default() }, "not a valid event type"),
        (pb::Event { r#type: "a.b".into(), id: "x".repeat(300), ..Default::default() }, "event.id"),
        (
            pb::Event { r#type: "a.b".into(), datacontenttype: "text/xml".into(), ..Default::default() },
            "event.datacontenttype",
        ),
    ];
    for (e, says) in cases {
        let err = h.client.publish_event(pb::PublishEventRequest { event: Some(e) }).await.unwrap_err();
        ensure!(err.code() == tonic::Code::InvalidArgument && err.message().contains(says), "{err:?}");
    }
    let err = h.client.publish_event(pb::PublishEventRequest { event: None }).await.unwrap_err();
    ensure!(err.code() == tonic::Code::InvalidArgument, "{err:?}");
    h.stop().await;
    Ok(())
}

/// Two replicas sharing PostgreSQL (a schema of their own) and a JetStream stream (names of their
/// own): each event, published twice (once through each replica), starts one execution; every
/// execution parks, and the verification published through the other replica resumes it,
/// whichever replica routes it.
#[tokio::test]
async fn two_replicas_on_postgres_and_jetstream_trigger_once_and_resume_each_other_s_waits() -> Result<()> {
    let (url, schema, _guard) = crate::access::pg_schema().await?;
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let nats = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let events = nexus_server::EventsConfig {
        url: Some(nats.clone()),
        stream: format!("NEXUS_TEST_{unique}"),
        consumer: format!("router-{unique}"),
        subject_prefix: format!("test.{unique}.events"),
        ..Default::default()
    };
    let options = || Options {
        database: Some((url.clone(), schema.clone())),
        events: Some(events.clone()),
        ..Default::default()
    };
    let mut a = Harness::start_with(options()).await?;
    let mut b = Harness::start_with(options()).await?;
    register(&mut a.client, pattern_file("welcome_series")?).await?;
    // B learns of the pattern within its refresh interval (2 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    const USERS: usize = 40;
    for n in 0..USERS {
        let created = pb::PublishEventRequest {
            event: Some(pb::Event {
                r#type: "user.created".into(),
                source: "test/signup".into(),
                id: format!("signup-{n}"),
                data: Some(to_struct(serde_json::json!({
                    "user_id": format!("usr_{n}"), "email": format!("u{n}@example.com"), "name": format!("U{n}")
                }))?),
                ..Default::default()
            }),
        };
        let first = a.client.publish_event(created.clone()).await?.into_inner();
        let second = b.client.publish_event(created).await?.into_inner();
        ensure!(!first.duplicate && second.duplicate, "{first:?} {second:?}");
    }
    eventually(Duration::from_secs(20), "one waiting execution per user", async || {
        let running = executions(&mut a.client, "welcome_series", pb::ExecutionStatus::Running).await?;
        ensure!(running.len() == USERS, "{} running", running.len());
        Ok(())
    })
    .await?;
    for n in 0..USERS {
        let c = if n % 2 == 0 { &mut b.client } else { &mut a.client };
        c.publish_event(event("user.verified", serde_json::json!({"user_id": format!("usr_{n}")}))?).await?;
    }
    eventually(Duration::from_secs(20), "every execution resumed and finished", async || {
        let done = executions(&mut b.client, "welcome_series", pb::ExecutionStatus::Succeeded).await?;
        ensure!(done.len() == USERS, "{} succeeded", done.len());
        Ok(())
    })
    .await?;
    let all = executions(&mut a.client, "welcome_series", pb::ExecutionStatus::Unspecified).await?;
    ensure!(all.len() == USERS, "exactly one execution per event: {}", all.len());
    a.stop().await;
    b.stop().await;
    let client = async_nats::connect(&nats).await?;
    let _ = async_nats::jetstream::new(client).delete_stream(&events.stream).await;
    Ok(())
}

/// The knowledge graph learns events at registration: `impact` of an event type lists the
/// versions triggered by it, waiting for it and emitting it (and callers of the latter two),
/// with the visibility filtering of every graph query.
#[tokio::test]
async fn the_graph_knows_who_is_triggered_by_waits_for_and_emits_an_event() -> Result<()> {
    use nexus_store::AuthStore;
    let dir = tempfile::tempdir()?;
    let store = nexus_store::SqliteStore::open(dir.path()).await?;
    let auth = nexus_server::AuthConfig { require_auth: true, ..Default::default() };
    let mut h =
        Harness::start_with(Options { data_dir: Some(dir.path().to_path_buf()), auth, ..Default::default() }).await?;
    let key =
        |tenant: &str, subject: &str, role: &str| nexus_store::api_key::generate(tenant, subject, &[role.to_string()]);
    let (alice, a) = key("acme", "alice", "author");
    let (viewer, v) = key("globex", "gina", "viewer");
    store.insert_api_key(&a).await?;
    store.insert_api_key(&v).await?;
    for name in ["user_creation", "welcome_series"] {
        let p = pattern_file(name)?;
        h.client.register_pattern(authed(pb::RegisterPatternRequest { pattern: Some(p) }, &alice)).await?;
    }
    let private = pattern(
        r#"
name: private_listener
version: 1.0.0
visibility: private
on:
  - event: user.created
    filter: "${{ event.data.name == 'Zed' }}"
steps:
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ input.email }}", subject: "hi"}
"#,
    )?;
    h.client.register_pattern(authed(pb::RegisterPatternRequest { pattern: Some(private) }, &alice)).await?;

    let impact = |target: &str, key: &str| {
        authed(
            pb::QueryGraphRequest { query: Some(pb::query_graph_request::Query::Impact(target.into())), depth: 0 },
            key,
        )
    };
    let edges = |r: &pb::QueryGraphResponse| {
        let mut e: Vec<String> = r.edges.iter().map(|e| format!("{} -{}-> {}", e.from, e.kind, e.to)).collect();
        e.sort();
        e
    };
    // `user.created` and `event:user.created` are the same question.
    for target in ["user.created", "event:user.created"] {
        let r = h.client.query_graph(impact(target, &alice)).await?.into_inner();
        ensure!(
            edges(&r)
                == [
                    "pattern:private_listener@1.0.0 -TRIGGERED_BY-> event:user.created",
                    "pattern:user_creation@1.0.0 -EMITS-> event:user.created",
                    "pattern:welcome_series@1.0.0 -TRIGGERED_BY-> event:user.created",
                ],
            "{target}: {:?}",
            edges(&r)
        );
        let node = r.nodes.iter().find(|n| n.id == "event:user.created").context("the event node")?;
        ensure!(node.kind == "event" && node.label == "user.created", "{node:?}");
    }
    // Another tenant's viewer does not see the private pattern (nor its edge).
    let r = h.client.query_graph(impact("user.created", &viewer)).await?.into_inner();
    ensure!(!r.nodes.iter().any(|n| n.id.contains("private_listener")), "{:?}", r.nodes);
    ensure!(edges(&r).len() == 2, "{:?}", edges(&r));
    let r = h.client.query_graph(impact("event:user.verified", &viewer)).await?.into_inner();
    ensure!(edges(&r) == ["pattern:welcome_series@1.0.0 -WAITS_FOR-> event:user.verified"], "{:?}", edges(&r));
    // Actions are asked about as before.
    let r = h.client.query_graph(impact("demo.notification.v1.NotificationService/SendEmail", &alice)).await?;
    ensure!(
        r.get_ref().edges.iter().all(|e| e.kind == "USES") && r.get_ref().edges.len() == 3,
        "{:?}",
        edges(r.get_ref())
    );
    h.stop().await;
    Ok(())
}

/// SubscribeEvents: live events of the caller's tenant only, by type and CEL filter; over native
/// gRPC and over gRPC-Web (HTTP/1.1, as a browser calls it), frame by frame as they are published.
#[tokio::test]
async fn subscribers_see_their_tenant_s_events_filtered_over_grpc_and_grpc_web() -> Result<()> {
    use http_body_util::BodyExt;
    use nexus_store::AuthStore;
    use prost::Message;
    let dir = tempfile::tempdir()?;
    let store = nexus_store::SqliteStore::open(dir.path()).await?;
    let auth = nexus_server::AuthConfig { require_auth: true, ..Default::default() };
    let mut h =
        Harness::start_with(Options { data_dir: Some(dir.path().to_path_buf()), auth, ..Default::default() }).await?;
    let key = async |tenant: &str, role: &str| -> Result<String> {
        let (token, record) = nexus_store::api_key::generate(tenant, "someone", &[role.to_string()]);
        store.insert_api_key(&record).await?;
        Ok(token)
    };
    let (acme_viewer, acme_runner, other_runner) =
        (key("acme", "viewer").await?, key("acme", "runner").await?, key("other", "runner").await?);

    let subscribe = pb::SubscribeEventsRequest {
        types: vec!["order.paid".into()],
        filter: "${{ event.data.amount > 100 }}".into(),
    };
    let mut live = h.client.subscribe_events(authed(subscribe.clone(), &acme_viewer)).await?.into_inner();
    // gRPC-Web: the same subscription over HTTP/1.1, read as frames arrive.
    let stream = tokio::net::TcpStream::connect(h.addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::post("/nexus.v1.NexusService/SubscribeEvents")
        .header(http::header::HOST, h.addr.to_string())
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {acme_viewer}"))
        .body(http_body_util::Full::new(crate::transports::frame(0, &subscribe.encode_to_vec())))?;
    let mut web = sender.send_request(request).await?.into_body();

    let publish = |t: &str, amount: i64, token: &str| {
        authed(
            pb::PublishEventRequest {
                event: Some(pb::Event {
                    r#type: t.into(),
                    data: Some(to_struct(serde_json::json!({"amount": amount})).unwrap_or_default()),
                    ..Default::default()
                }),
            },
            token,
        )
    };
    // Subscriptions start listening asynchronously: publish until the first one arrives.
    let first = eventually(Duration::from_secs(5), "the subscriber sees an event", async || {
        h.client.publish_event(publish("order.paid", 500, &acme_runner)).await?;
        match tokio::time::timeout(Duration::from_millis(200), live.message()).await {
            Ok(Ok(Some(e))) => Ok(e),
            other => anyhow::bail!("nothing yet: {other:?}"),
        }
    })
    .await?;
    ensure!(first.r#type == "order.paid" && first.tenant == "acme", "{first:?}");
    // Filtered out: another type, a small amount, another tenant. Then one that passes.
    h.client.publish_event(publish("order.created", 500, &acme_runner)).await?;
    h.client.publish_event(publish("order.paid", 5, &acme_runner)).await?;
    h.client.publish_event(publish("order.paid", 900, &other_runner)).await?;
    h.client.publish_event(publish("order.paid", 777, &acme_runner)).await?;
    let mut next = live.message().await?.context("stream ended")?;
    while to_json(next.data.as_ref().context("data")?)["amount"] == 500 {
        next = live.message().await?.context("stream ended")?; // retries of the first publish
    }
    ensure!(next.tenant == "acme" && to_json(next.data.as_ref().context("data")?)["amount"] == 777, "{next:?}");
    // The gRPC-Web subscriber got the 777 one too, as a message frame of its own.
    let mut buffer = bytes::BytesMut::new();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let frame = web.frame().await.context("body ended")??;
            if let Ok(data) = frame.into_data() {
                buffer.extend_from_slice(&data);
            }
            while buffer.len() >= 5 {
                let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
                if buffer.len() < 5 + len {
                    break;
                }
                let message = buffer.split_to(5 + len);
                let e = pb::Event::decode(&message[5..])?;
                if to_json(e.data.as_ref().context("data")?)["amount"] == 777 {
                    return anyhow::Ok(e);
                }
            }
        }
    })
    .await
    .context("no gRPC-Web frame within 5 s")??;
    ensure!(got.r#type == "order.paid" && got.tenant == "acme", "{got:?}");
    // A filter that reads anything but `event` is refused up front.
    let bad = pb::SubscribeEventsRequest { types: vec![], filter: "${{ input.x }}".into() };
    let err = h.client.subscribe_events(authed(bad, &acme_viewer)).await.unwrap_err();
    ensure!(err.code() == tonic::Code::InvalidArgument && err.message().contains("filter"), "{err:?}");
    // Shutting down ends live subscriptions at once (not after the grace period).
    let stopping = std::time::Instant::now();
    h.stop().await;
    ensure!(stopping.elapsed() < Duration::from_secs(2), "shutdown took {:?}", stopping.elapsed());
    ensure!(live.message().await.ok().flatten().is_none(), "the subscription ended");
    drop((web, sender));
    Ok(())
}

/// `[auth.restricted_events]`: a restricted type (or prefix) is published and emitted only by its
/// roles — PublishEvent, `POST /events` and registration alike; other types stay open to runners.
#[tokio::test]
async fn restricted_event_types_are_published_and_emitted_only_by_their_roles() -> Result<()> {
    use nexus_store::AuthStore;
    let dir = tempfile::tempdir()?;
    let store = nexus_store::SqliteStore::open(dir.path()).await?;
    let mut auth = nexus_server::AuthConfig { require_auth: true, ..Default::default() };
    auth.restricted_events.insert("billing.*".into(), vec!["admin".into()]);
    let mut h =
        Harness::start_with(Options { data_dir: Some(dir.path().to_path_buf()), auth, ..Default::default() }).await?;
    let key = async |subject: &str, roles: &[&str]| -> Result<String> {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let (token, record) = nexus_store::api_key::generate("acme", subject, &roles);
        store.insert_api_key(&record).await?;
        Ok(token)
    };
    let (runner, author, admin) =
        (key("hook", &["runner"]).await?, key("dev", &["author"]).await?, key("boss", &["admin"]).await?);
    let publish = |t: &str, token: &str| authed(event(t, serde_json::json!({})).unwrap_or_default(), token);

    let err = h.client.publish_event(publish("billing.refund", &runner)).await.unwrap_err();
    ensure!(
        err.code() == tonic::Code::PermissionDenied && err.message().contains("`billing.refund` is restricted"),
        "{err:?}"
    );
    h.client.publish_event(publish("billingx.refund", &runner)).await.context("not under the prefix")?;
    h.client.publish_event(publish("order.paid", &runner)).await?;
    h.client.publish_event(publish("billing.refund", &admin)).await?;
    let audit = store.audit_log(10).await?;
    ensure!(audit.iter().any(|a| a.resource == "event:billing.refund" && a.subject == "hook"), "{audit:?}");

    // The HTTP binding asks the same question.
    let body = serde_json::json!({"specversion": "1.0", "id": "r1", "source": "s", "type": "billing.refund"});
    let response = crate::transports::http1_post(
        h.addr,
        "/events",
        &[("content-type", "application/cloudevents+json"), ("authorization", &format!("Bearer {runner}"))],
        bytes::Bytes::from(body.to_string()),
    )
    .await?;
    ensure!(response.status() == http::StatusCode::FORBIDDEN, "{}", response.status());

    // A pattern emitting it is registered only by those roles.
    let doc = r#"
name: refunder
version: 1.0.0
steps:
  - id: refund
    emit: {type: billing.refund, data: {why: "test"}}
"#;
    let err = h
        .client
        .register_pattern(authed(pb::RegisterPatternRequest { pattern: Some(pattern(doc)?) }, &author))
        .await
        .unwrap_err();
    ensure!(err.code() == tonic::Code::InvalidArgument && err.message().contains("steps[0].emit.type"), "{err:?}");
    h.client.register_pattern(authed(pb::RegisterPatternRequest { pattern: Some(pattern(doc)?) }, &admin)).await?;
    h.stop().await;
    Ok(())
}

/// A registered event type's schema types `event.data.*` of the patterns registered after it:
/// a trigger reading a property the schema does not declare is refused, naming the path.
#[tokio::test]
async fn an_event_types_schema_checks_the_triggers_that_read_its_data() -> Result<()> {
    let mut h = Harness::start().await?;
    let schema = serde_json::json!({
        "type": "object",
        "required": ["email"],
        "properties": {"email": {"type": "string"}, "name": {"type": "string"}}
    });
    let register_type = |schema: serde_json::Value| -> Result<pb::RegisterEventTypeRequest> {
        Ok(pb::RegisterEventTypeRequest {
            event_type: Some(pb::EventType {
                r#type: "user.created".into(),
                description: "a user signed up".into(),
                schema: Some(to_struct(schema)?),
                ..Default::default()
            }),
        })
    };
    let first = h.client.register_event_type(register_type(schema.clone())?).await?.into_inner();
    ensure!(first.r#type == "user.created" && first.registered_at.is_some(), "{first:?}");
    // The same schema again changes nothing.
    let again = h.client.register_event_type(register_type(schema)?).await?.into_inner();
    ensure!(again.registered_at == first.registered_at, "{again:?} vs {first:?}");
    let listed = h.client.list_event_types(pb::ListEventTypesRequest {}).await?.into_inner().event_types;
    ensure!(listed.len() == 1 && listed[0].r#type == "user.created", "{listed:?}");
    // A schema that is not one is refused, naming where.
    let bad = h.client.register_event_type(register_type(serde_json::json!({"type": "text"}))?).await;
    let status = bad.err().context("a bad schema was accepted")?;
    ensure!(
        status.code() == tonic::Code::InvalidArgument && status.message().contains("event_type.schema.type"),
        "{status:?}"
    );

    let doc = |path: &str| {
        pattern(&format!(
            r#"
name: greet_user
version: 1.0.0
input: {{type: object, properties: {{email: {{type: string}}}}}}
on:
  - event: user.created
    input: {{email: "${{{{ event.data.{path} }}}}"}}
steps:
  - id: send
    call: demo.notification.v1.NotificationService/SendEmail
    with: {{to: "${{{{ input.email }}}}"}}
"#
        ))
    };
    let refused = h.client.register_pattern(pb::RegisterPatternRequest { pattern: Some(doc("emial")?) }).await;
    let status = refused.err().context("a trigger reading event.data.emial was registered")?;
    ensure!(status.code() == tonic::Code::InvalidArgument, "{status:?}");
    let detail: pb::ValidatePatternResponse = status_detail(&status, "nexus.v1.ValidatePatternResponse")?;
    ensure!(
        detail.diagnostics.iter().any(|d| d.path == "on[0].input.email"
            && d.message.contains("`event.data` of `user.created` has no property `emial` (did you mean `email`?)")),
        "{:?}",
        detail.diagnostics
    );
    let r = register(&mut h.client, doc("email")?).await?;
    ensure!(r.created, "{r:?}");
    h.stop().await;
    Ok(())
}

const CANCEL_ME: &str = r#"
name: cancel_me
version: 1.0.0
durability: durable
on: [{event: test.cancel_me}]
input: {type: object, required: [email], properties: {email: {type: string}}}
steps:
  - id: user
    call: demo.user.v1.UserService/CreateUser
    with: {email: "${{ input.email }}", display_name: Waiting}
    compensate:
      call: demo.user.v1.UserService/DeleteUser
      with: {user_id: "${{ steps.user.user.id }}"}
  - id: verified
    wait_for: {event: user.verified, match: "${{ event.data.user_id == steps.user.user.id }}", timeout: 3600s}
  - id: mail
    depends_on: [verified]
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ input.email }}", subject: hi, body: there}
"#;

/// A durable execution parked on a wait (no task, no memory) is still cancellable: the wait is
/// resolved as cancelled in the store, the execution resumes, compensates and ends CANCELLED, and
/// the event it waited for no longer does anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_parked_execution_compensates_it_and_ends_it_cancelled() -> Result<()> {
    use nexus_demo::method;
    let mut h = Harness::start().await?;
    register(&mut h.client, pattern(CANCEL_ME)?).await?;
    h.client.publish_event(event("test.cancel_me", serde_json::json!({"email": unique_email("parked")}))?).await?;
    let id = eventually(Duration::from_secs(5), "cancel_me parked", async || {
        let running = executions(&mut h.client, "cancel_me", pb::ExecutionStatus::Running).await?;
        ensure!(running.len() == 1 && h.demo.calls(method::CREATE_USER) == 1, "{} running", running.len());
        Ok(running[0].id.clone())
    })
    .await?;
    // Parked: its wait is in the store, and it no longer runs on this replica.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let r = h
        .client
        .cancel_execution(pb::CancelExecutionRequest { execution_id: id.clone(), reason: "changed my mind".into() })
        .await?
        .into_inner();
    ensure!(r.cancelled, "{r:?}");
    let done = eventually(Duration::from_secs(5), "cancel_me cancelled", async || {
        let e = get_execution(&mut h.client, &id).await?;
        ensure!(e.status == pb::ExecutionStatus::Cancelled as i32, "status {}", e.status);
        Ok(e)
    })
    .await?;
    let error = done.error.as_ref().context("no error")?;
    ensure!(error.code == "CANCELLED" && error.message.contains("changed my mind"), "{error:?}");
    ensure!(h.demo.calls(method::DELETE_USER) == 1, "the created user is compensated");
    ensure!(h.demo.calls(method::SEND_EMAIL) == 0, "nothing after the wait ran");

    // Cancelling again changes nothing; the awaited event resumes nothing.
    let again = h
        .client
        .cancel_execution(pb::CancelExecutionRequest { execution_id: id.clone(), reason: String::new() })
        .await?
        .into_inner();
    ensure!(!again.cancelled, "{again:?}");
    h.stop().await;
    Ok(())
}
