//! What an operator watches: `GET /metrics` (parsed by the Prometheus project's reference
//! OpenMetrics parser, not ours).

use std::{io::Write as _, path::PathBuf, process::Stdio};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tonic::Code;

use crate::common::{Harness, execute_request, register, register_examples, unique_email};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The samples of an OpenMetrics text, as the reference parser reads them (it refuses any
/// deviation from the format).
fn parse_openmetrics(text: &str) -> Result<Vec<Value>> {
    let python = repo_root().join(".interop/venv/bin/python");
    ensure!(
        python.exists(),
        "{} is missing: run `bash scripts/interop-setup.sh` first (it installs prometheus-client)",
        python.display()
    );
    let mut child = std::process::Command::new(python)
        .arg(repo_root().join("interop/python/openmetrics_check.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the OpenMetrics parser")?;
    child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "{}\n--- the text:\n{text}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The value of the sample named `name` whose labels include `labels`.
fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
}

async fn scrape(h: &Harness, headers: &[(&str, &str)]) -> Result<http::Response<bytes::Bytes>> {
    crate::ui::http1_get_with(h.addr, "/metrics", headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_executions_steps_errors_retries_and_the_journal() -> Result<()> {
    let mut h = Harness::start().await?;
    register_examples(&mut h.client).await?;
    // A durable variant, so the journal commits.
    let durable = include_str!("../../../../patterns/user_creation.yaml")
        .replace("name: user_creation", "name: user_creation_durable")
        .replace("durability: ephemeral", "durability: durable");
    register(&mut h.client, nexus_core::document::parse(&durable)?).await?;
    for name in ["user_creation", "user_creation", "user_creation_durable"] {
        let input = json!({"email": unique_email("metrics"), "name": "M"});
        h.client.execute_pattern(execute_request(name, input)?).await?;
    }
    // One retried step (UNAVAILABLE once, then OK), and one execution that fails for good.
    h.demo.fail_next(nexus_demo::method::CREATE_USER, 1, Code::Unavailable);
    h.client
        .execute_pattern(execute_request("user_creation", json!({"email": unique_email("r"), "name": "R"}))?)
        .await?;
    h.demo.fail_next(nexus_demo::method::CREATE_USER, 1, Code::InvalidArgument);
    let failed = h
        .client
        .execute_pattern(execute_request("user_creation", json!({"email": unique_email("f"), "name": "F"}))?)
        .await;
    ensure!(failed.is_err() || failed.as_ref().is_ok_and(|r| r.get_ref().status != 2), "{failed:?}");

    let response = scrape(&h, &[]).await?;
    ensure!(response.status() == 200, "GET /metrics answered {}", response.status());
    let content_type = response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    ensure!(content_type.is_some_and(|t| t.starts_with("application/openmetrics-text")), "{content_type:?}");
    let text = std::str::from_utf8(response.body())?;
    let samples = parse_openmetrics(text)?;

    let executions = |pattern: &str, status: &str| {
        sample(&samples, "nexus_executions_total", &[("pattern", pattern), ("version", "1.0.0"), ("status", status)])
    };
    ensure!(executions("user_creation", "SUCCEEDED") == Some(3.0), "{text}");
    ensure!(executions("user_creation_durable", "SUCCEEDED") == Some(1.0), "{text}");
    ensure!(
        executions("user_creation", "FAILED").is_some() || executions("user_creation", "COMPENSATED").is_some(),
        "{text}"
    );
    // Five executions called CreateUser six times (one retry); each attempt is observed.
    let create = nexus_demo::method::CREATE_USER;
    let attempts = sample(&samples, "nexus_step_attempt_duration_seconds_count", &[("action", create)]);
    ensure!(attempts == Some(6.0), "CreateUser attempts {attempts:?}\n{text}");
    ensure!(sample(&samples, "nexus_step_retries_total", &[("action", create)]) == Some(1.0), "{text}");
    ensure!(
        sample(&samples, "nexus_backend_errors_total", &[("action", create), ("code", "UNAVAILABLE")]) == Some(1.0)
    );
    ensure!(
        sample(&samples, "nexus_backend_errors_total", &[("action", create), ("code", "INVALID_ARGUMENT")])
            == Some(1.0)
    );
    let durations = sample(&samples, "nexus_execution_duration_seconds_count", &[("pattern", "user_creation")]);
    ensure!(durations == Some(4.0), "{durations:?}");
    ensure!(sample(&samples, "nexus_executions_in_flight", &[]) == Some(0.0), "{text}");
    // The durable execution's journal writes were committed (and measured).
    let commits = sample(&samples, "nexus_journal_commit_duration_seconds_count", &[]).unwrap_or(0.0);
    let batched = sample(&samples, "nexus_journal_commit_batch_size_sum", &[]).unwrap_or(0.0);
    ensure!(commits >= 1.0 && batched >= commits, "commits {commits}, writes {batched}\n{text}");
    // Families carry their type and unit as Prometheus names them.
    let family = |name: &str| samples.iter().find(|s| s["family"] == name).cloned().unwrap_or_default();
    ensure!(family("nexus_executions")["type"] == "counter", "{text}");
    ensure!(family("nexus_execution_duration_seconds")["type"] == "histogram", "{text}");
    ensure!(family("nexus_execution_duration_seconds")["unit"] == "seconds", "{text}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn metrics_need_a_credential_when_authentication_is_required() -> Result<()> {
    let auth = nexus_server::AuthConfig { require_auth: true, ..Default::default() };
    let h = Harness::start_with(crate::common::Options { auth, ..Default::default() }).await?;
    let refused = scrape(&h, &[]).await?;
    ensure!(refused.status() == 401, "GET /metrics without a credential answered {}", refused.status());
    h.stop().await;
    Ok(())
}

mod traces {
    use std::{net::SocketAddr, time::Duration};

    use anyhow::{Context, Result, anyhow, ensure};
    use opentelemetry_proto::tonic::{
        collector::trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
        common::v1::any_value,
        trace::v1::{Span, span::SpanKind},
    };
    use prost::Message as _;
    use serde_json::json;
    use tokio::sync::mpsc;

    use crate::common::{Harness, Options, execute_request, register_examples, unique_email};

    const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN: &str = "00f067aa0ba902b7";

    /// An OTLP/gRPC collector: what it receives goes to the channel.
    struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let _ = self.0.send(request.into_inner());
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    async fn grpc_collector() -> Result<(SocketAddr, mpsc::UnboundedReceiver<ExportTraceServiceRequest>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Collector(tx)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Ok((addr, rx))
    }

    /// An OTLP/HTTP collector (protobuf bodies POSTed to /v1/traces).
    async fn http_collector() -> Result<(SocketAddr, mpsc::UnboundedReceiver<ExportTraceServiceRequest>)> {
        use http_body_util::BodyExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let ok = req.uri().path() == "/v1/traces"
                            && req
                                .headers()
                                .get(http::header::CONTENT_TYPE)
                                .is_some_and(|v| v == "application/x-protobuf");
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let status = match ExportTraceServiceRequest::decode(body) {
                            Ok(r) if ok => {
                                let _ = tx.send(r);
                                200
                            }
                            _ => 400,
                        };
                        http::Response::builder().status(status).body(http_body_util::Full::new(bytes::Bytes::new()))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Ok((addr, rx))
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn text_attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
        span.attributes.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// Runs user_creation under the caller's trace and checks the tree the collector receives.
    async fn one_execution_is_one_tree(
        protocol: nexus_server::OtlpProtocol,
        (addr, mut received): (SocketAddr, mpsc::UnboundedReceiver<ExportTraceServiceRequest>),
    ) -> Result<()> {
        let telemetry = nexus_server::TelemetryConfig {
            otlp_endpoint: Some(format!("http://{addr}")),
            otlp_protocol: protocol,
            service_name: "nexus-under-test".into(),
            ..Default::default()
        };
        let mut h = Harness::start_with(Options { telemetry: Some(telemetry), ..Options::default() }).await?;
        register_examples(&mut h.client).await?;
        let mut request =
            tonic::Request::new(execute_request("user_creation", json!({"email": unique_email("otel"), "name": "O"}))?);
        request.metadata_mut().insert("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01").parse()?);
        request.metadata_mut().insert("tracestate", "congo=t61rcWkgMzE".parse()?);
        h.client.execute_pattern(request).await?;

        // Spans are sent within a second; collect this trace's until the execution's own arrives.
        let mut spans: Vec<Span> = Vec::new();
        let mut service_names = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !spans.iter().any(|s| s.kind == SpanKind::Server as i32) {
            let batch = tokio::time::timeout_at(deadline, received.recv())
                .await
                .map_err(|_| anyhow!("no execution span within 10 s; got {spans:#?}"))?
                .context("the collector stopped")?;
            for rs in batch.resource_spans {
                let name = rs.resource.as_ref().and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"));
                service_names.push(format!("{:?}", name.and_then(|a| a.value.clone())));
                for ss in rs.scope_spans {
                    spans.extend(ss.spans.into_iter().filter(|s| hex(&s.trace_id) == CALLER_TRACE));
                }
            }
        }
        ensure!(service_names.iter().all(|n| n.contains("nexus-under-test")), "{service_names:?}");
        let execution = spans.iter().find(|s| s.kind == SpanKind::Server as i32).context("the execution span")?;
        ensure!(execution.name == "execute user_creation", "{execution:?}");
        ensure!(hex(&execution.parent_span_id) == CALLER_SPAN, "the caller's span is the parent: {execution:?}");
        ensure!(execution.trace_state == "congo=t61rcWkgMzE", "{execution:?}");
        ensure!(text_attribute(execution, "nexus.execution.status") == Some("SUCCEEDED"), "{execution:?}");
        ensure!(execution.end_time_unix_nano > execution.start_time_unix_nano, "{execution:?}");
        let calls: Vec<&Span> = spans.iter().filter(|s| s.kind == SpanKind::Client as i32).collect();
        let mut names: Vec<&str> = calls.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        ensure!(
            names
                == [
                    "demo.notification.v1.NotificationService/SendEmail",
                    "demo.user.v1.UserService/CreateUser",
                    "emit:user.created"
                ],
            "{names:?}"
        );
        for call in &calls {
            ensure!(call.parent_span_id == execution.span_id, "an attempt is the execution's child: {call:?}");
            ensure!(call.start_time_unix_nano >= execution.start_time_unix_nano, "{call:?}");
            ensure!(call.end_time_unix_nano <= execution.end_time_unix_nano, "{call:?}");
        }
        // Each backend call carried its attempt's span as the parent of what the backend does.
        for method in [nexus_demo::method::CREATE_USER, nexus_demo::method::SEND_EMAIL] {
            let seen = h.demo.last_traceparent(method).context("the backend got no traceparent")?;
            let span = calls.iter().find(|s| s.name == method).context("the attempt's span")?;
            ensure!(seen == format!("00-{CALLER_TRACE}-{}-01", hex(&span.span_id)), "{method}: {seen}");
        }
        h.stop().await;
        Ok(())
    }

    #[tokio::test]
    async fn an_execution_is_exported_as_a_tree_of_spans_over_otlp_grpc() -> Result<()> {
        one_execution_is_one_tree(nexus_server::OtlpProtocol::Grpc, grpc_collector().await?).await
    }

    #[tokio::test]
    async fn an_execution_is_exported_as_a_tree_of_spans_over_otlp_http() -> Result<()> {
        one_execution_is_one_tree(nexus_server::OtlpProtocol::Http, http_collector().await?).await
    }
}
