//! The client side of the CLI: calls a running Nexus over gRPC and prints the answers.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nexus_core::{document, pb, value};
use nexus_server::proto::nexus_service_client::NexusServiceClient;
use prost::Message;
use tonic::transport::Channel;

use crate::{Target, render};

pub async fn connect(target: &Target) -> anyhow::Result<NexusServiceClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(target.addr.clone())
        .with_context(|| format!("invalid address {}", target.addr))?
        .connect()
        .await
        .with_context(|| {
            format!("cannot reach Nexus at {} (is `nexus serve` running? set --addr or NEXUS_ADDR)", target.addr)
        })?;
    Ok(NexusServiceClient::new(channel))
}

/// Turns a status into an error; diagnostics in its details are listed one per line.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    if let Ok(rpc) = nexus_server::RpcStatus::decode(s.details()) {
        for any in &rpc.details {
            if any.type_url.ends_with("nexus.v1.ValidatePatternResponse")
                && let Ok(v) = pb::ValidatePatternResponse::decode(any.value.as_slice())
            {
                return anyhow::anyhow!("{}", render::diagnostics_report(&v.diagnostics));
            }
        }
    }
    let id = s
        .metadata()
        .get(nexus_server::EXECUTION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|id| format!("\n(execution {id}: `nexus executions {id}` shows its steps)"))
        .unwrap_or_default();
    anyhow::anyhow!("{:?}: {}{id}", s.code(), s.message())
}

pub fn read_pattern(path: &Path) -> anyhow::Result<pb::Pattern> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    document::parse(&text).with_context(|| format!("{}", path.display()))
}

pub async fn register(target: &Target, files: &[PathBuf]) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let mut failed = 0;
    for f in files {
        let pattern = read_pattern(f)?;
        match client.register_pattern(pb::RegisterPatternRequest { pattern: Some(pattern) }).await {
            Ok(r) => {
                let r = r.into_inner();
                let p = r.pattern_ref.unwrap_or_default();
                if target.json {
                    println!(
                        "{}",
                        serde_json::json!({"file": f, "name": p.name, "version": p.version, "created": r.created})
                    );
                } else {
                    let what = if r.created { "registered" } else { "already registered (identical)" };
                    println!("{what} {}@{} from {}", p.name, p.version, f.display());
                    for d in &r.diagnostics {
                        println!("  warning: {}: {}", d.path, d.message);
                    }
                }
            }
            Err(s) => {
                failed += 1;
                eprintln!("{}: {}", f.display(), status_error(s));
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} file(s) were not registered", files.len());
    }
    Ok(())
}

pub async fn validate(target: &Target, files: &[PathBuf]) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let mut invalid = 0;
    for f in files {
        let pattern = read_pattern(f)?;
        let r = client
            .validate_pattern(pb::ValidatePatternRequest { pattern: Some(pattern) })
            .await
            .map_err(status_error)?
            .into_inner();
        if target.json {
            let diags: Vec<_> =
                r.diagnostics.iter().map(|d| serde_json::json!({"path": d.path, "message": d.message})).collect();
            println!("{}", serde_json::json!({"file": f, "valid": r.valid, "diagnostics": diags}));
        } else if r.valid {
            println!("{}: valid", f.display());
        } else {
            println!("{}: {}", f.display(), render::diagnostics_report(&r.diagnostics));
        }
        if !r.valid {
            invalid += 1;
        }
    }
    if invalid > 0 {
        bail!("{invalid} of {} file(s) are invalid", files.len());
    }
    Ok(())
}

pub async fn list(
    target: &Target,
    query: Option<String>,
    owner: Option<String>,
    tag: Option<String>,
) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let mut token = String::new();
    let mut all = Vec::new();
    loop {
        let r = client
            .list_patterns(pb::ListPatternsRequest {
                query: query.clone().unwrap_or_default(),
                owner: owner.clone().unwrap_or_default(),
                tag: tag.clone().unwrap_or_default(),
                page_size: 200,
                page_token: token,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        all.extend(r.patterns);
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    if target.json {
        println!("{}", serde_json::Value::Array(all.iter().map(document::to_json).collect()));
    } else {
        print!("{}", render::pattern_table(&all));
    }
    Ok(())
}

pub async fn show(target: &Target, name: &str, version: Option<String>) -> anyhow::Result<()> {
    let path = Path::new(name);
    let pattern = if path.exists() {
        read_pattern(path)?
    } else {
        let mut client = connect(target).await?;
        client
            .get_pattern(pb::GetPatternRequest { name: name.to_string(), version: version.unwrap_or_default() })
            .await
            .map_err(status_error)?
            .into_inner()
    };
    if target.json {
        println!("{}", serde_json::to_string_pretty(&document::to_json(&pattern))?);
    } else {
        print!("{}", document::to_yaml(&pattern));
    }
    Ok(())
}

pub async fn run(
    target: &Target,
    name: &str,
    input: &str,
    version: Option<String>,
    idempotency_key: Option<String>,
) -> anyhow::Result<()> {
    let input: serde_json::Value = serde_json::from_str(input).context("--input must be a JSON object")?;
    let input =
        value::serde_to_struct(&input).context("--input must be a JSON object, e.g. '{\"email\": \"a@b.c\"}'")?;
    let mut client = connect(target).await?;
    let result = client
        .execute_pattern(pb::ExecutePatternRequest {
            pattern_name: name.to_string(),
            version: version.unwrap_or_default(),
            input: Some(input),
            idempotency_key: idempotency_key.unwrap_or_default(),
        })
        .await;
    let (id, failure) = match &result {
        Ok(r) => (r.get_ref().execution_id.clone(), None),
        Err(s) => match s.metadata().get(nexus_server::EXECUTION_ID_HEADER).and_then(|v| v.to_str().ok()) {
            Some(id) => (id.to_string(), Some(s.clone())),
            None => return Err(status_error(s.clone())),
        },
    };
    let execution =
        client.get_execution(pb::GetExecutionRequest { execution_id: id }).await.map_err(status_error)?.into_inner();
    if target.json {
        println!("{}", render::execution_json(&execution));
    } else {
        print!("{}", render::timeline(&execution));
    }
    match failure {
        Some(s) => Err(anyhow::anyhow!("the execution failed: {:?}: {}", s.code(), s.message())),
        None => Ok(()),
    }
}

pub async fn services(target: &Target) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let r = client.list_services(pb::ListServicesRequest {}).await.map_err(status_error)?.into_inner();
    if target.json {
        let services: Vec<_> = r
            .services
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name, "endpoint": s.endpoint, "backend": s.backend, "source": s.source,
                    "actions": s.actions.iter().map(|a| serde_json::json!({
                        "name": a.name, "input_type": a.input_type, "output_type": a.output_type,
                        "server_streaming": a.server_streaming,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(services));
    } else {
        print!("{}", render::services(&r.services));
    }
    Ok(())
}

pub async fn executions(
    target: &Target,
    id: Option<String>,
    pattern: Option<String>,
    limit: u32,
) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    if let Some(id) = id {
        let e = client
            .get_execution(pb::GetExecutionRequest { execution_id: id })
            .await
            .map_err(status_error)?
            .into_inner();
        if target.json {
            println!("{}", render::execution_json(&e));
        } else {
            print!("{}", render::timeline(&e));
        }
        return Ok(());
    }
    let r = client
        .list_executions(pb::ListExecutionsRequest {
            pattern_name: pattern.unwrap_or_default(),
            status: 0,
            page_size: limit,
            page_token: String::new(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if target.json {
        println!(
            "{}",
            serde_json::Value::Array(
                r.executions
                    .iter()
                    .map(|e| serde_json::from_str(&render::execution_json(e)).unwrap_or_default())
                    .collect()
            )
        );
    } else {
        print!("{}", render::execution_table(&r.executions));
    }
    Ok(())
}

/// Runs a pattern over ExecutePatternStream, printing events as they happen.
pub async fn follow(target: &Target, name: &str, input: &str, version: Option<String>) -> anyhow::Result<()> {
    use pb::execution_event::Event as E;
    let input: serde_json::Value = serde_json::from_str(input).context("--input must be a JSON object")?;
    let input = value::serde_to_struct(&input).context("--input must be a JSON object")?;
    let mut client = connect(target).await?;
    let mut stream = client
        .execute_pattern_stream(pb::ExecutePatternRequest {
            pattern_name: name.to_string(),
            version: version.unwrap_or_default(),
            input: Some(input),
            idempotency_key: String::new(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut last = None;
    while let Some(event) = stream.message().await.map_err(status_error)? {
        if target.json {
            println!("{}", render::message_json(&event, "nexus.v1.ExecutionEvent"));
        } else if let Some(line) = render::event_line(&event) {
            println!("{line}");
        }
        if let Some(E::Finished(f)) = event.event {
            last = Some(f);
        }
    }
    match last {
        Some(f) if f.status == pb::ExecutionStatus::Succeeded as i32 => Ok(()),
        Some(f) => {
            let e = f.error.unwrap_or_default();
            Err(anyhow::anyhow!("the execution did not succeed: {}: {}", e.code, e.message))
        }
        None => Err(anyhow::anyhow!("the stream ended without a result")),
    }
}
