//! The client side of the CLI: calls a running Nexus over gRPC and prints the answers.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nexus_core::{document, pb, value};
use nexus_server::proto::nexus_service_client::NexusServiceClient;
use prost::Message;
use tonic::{
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use crate::{Target, Visibility, render};

/// A client of the Nexus API that sends the caller's credentials on every call.
pub type Client = NexusServiceClient<InterceptedService<Channel, Credentials>>;

/// Adds `authorization: Bearer <token>` to every request (nothing without a token). The value is
/// marked sensitive, so it never shows in debug output.
#[derive(Clone, Default)]
pub struct Credentials {
    authorization: Option<AsciiMetadataValue>,
}

impl Credentials {
    /// Credentials from `--token` / `NEXUS_TOKEN`; an empty token means none. The token itself is
    /// never part of an error message.
    pub fn from_token(token: Option<&str>) -> anyhow::Result<Self> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Self::default());
        };
        let mut value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            anyhow::anyhow!(
                "the token given with --token or NEXUS_TOKEN holds characters that cannot be sent in a header \
                 (it must be printable ASCII)"
            )
        })?;
        value.set_sensitive(true);
        Ok(Self { authorization: Some(value) })
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Connects to the Nexus at `target.addr` — TLS for `https://` (trusting `--ca-file` or the
/// system's roots), plaintext for `http://` — and every call made with the client carries the
/// target's credentials. The one place that builds API clients.
pub async fn connect(target: &Target) -> anyhow::Result<Client> {
    connect_to(&crate::profile::effective(target)?).await
}

/// Connects with settings already resolved (flags, variables, profile, defaults).
pub async fn connect_to(target: &crate::profile::Effective) -> anyhow::Result<Client> {
    let credentials = Credentials::from_token(target.token.as_deref())?;
    let endpoint = tonic::transport::Endpoint::from_shared(target.addr.clone())
        .with_context(|| format!("invalid address {}", target.addr))?;
    let uri = endpoint.uri().clone();
    let host = uri.host().ok_or_else(|| anyhow::anyhow!("invalid address {}: no host", target.addr))?;
    let tls = match uri.scheme_str() {
        Some("https") => {
            let options = nexus_server::tls::ClientTlsOptions {
                ca_file: target.ca_file.clone().map(|p| ("--ca-file".to_string(), p)),
                identity: None,
            };
            let config = nexus_server::tls::client_config(&options).map_err(|e| anyhow::anyhow!(e))?;
            Some(nexus_server::tls::ClientTls::new(config, host, None).map_err(|e| anyhow::anyhow!(e))?)
        }
        Some("http") => {
            if target.ca_file.is_some() {
                bail!("--ca-file is for https:// addresses, and {} is plaintext", target.addr);
            }
            if credentials.authorization.is_some() && !is_loopback(host) && !target.allow_plaintext_token {
                bail!(
                    "refusing to send the token in clear text to {} (plaintext http:// to an address that is not \
                     loopback: anyone on the path could read it). Use an https:// address (with --ca-file if its \
                     certificate is not from a CA in the system's roots), or --allow-plaintext-token to send it anyway",
                    target.addr
                );
            }
            None
        }
        _ => bail!("invalid address {}: use http://host:port or https://host:port", target.addr),
    };
    // A server that accepts connections and never answers must not hang the CLI.
    let endpoint = endpoint.connect_timeout(std::time::Duration::from_secs(10)).timeout(target.timeout);
    let channel = endpoint.connect_with_connector(nexus_server::tls::Connector::new(tls)).await.map_err(|e| {
        anyhow::Error::new(e).context(crate::exit::Unreachable(format!(
            "cannot reach Nexus at {} (is `nexus serve` running? set --addr or NEXUS_ADDR)",
            target.addr
        )))
    })?;
    Ok(NexusServiceClient::with_interceptor(channel, credentials))
}

/// `localhost`, 127.0.0.0/8 or ::1: a token sent there in clear never leaves the machine.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Turns a status into an error; diagnostics in its details are listed one per line.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    if let Ok(rpc) = nexus_server::RpcStatus::decode(s.details()) {
        for any in &rpc.details {
            if any.type_url.ends_with("nexus.v1.ValidatePatternResponse")
                && let Ok(v) = pb::ValidatePatternResponse::decode(any.value.as_slice())
            {
                return anyhow::Error::new(crate::exit::Rpc {
                    code: s.code(),
                    execution_failed: false,
                    text: render::diagnostics_report(&v.diagnostics),
                });
            }
        }
    }
    let id = s
        .metadata()
        .get(nexus_server::EXECUTION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|id| format!("\n(execution {id}: `nexus executions {id}` shows its steps)"))
        .unwrap_or_default();
    let hint = match s.code() {
        tonic::Code::Unauthenticated => {
            "\n(credentials go in --token or NEXUS_TOKEN: an API key from `nexus token create`, or a JWT)"
        }
        _ => "",
    };
    let execution_failed = !id.is_empty();
    anyhow::Error::new(crate::exit::Rpc {
        code: s.code(),
        execution_failed,
        text: format!("{}: {}{id}{hint}", nexus_server::code_name(s.code()), s.message()),
    })
}

pub fn read_pattern(path: &Path) -> anyhow::Result<pb::Pattern> {
    let text = read_bounded(path, document::MAX_DOCUMENT_BYTES)?;
    document::parse(&text)
        .map_err(|e| anyhow::Error::new(crate::exit::Invalid(e.to_string())))
        .with_context(|| format!("{}", path.display()))
}

/// Largest execution input read from a file or stdin (the server's message limit is 4 MiB).
const MAX_INPUT_BYTES: usize = 4 << 20;

/// `--input`: a JSON object given inline, `@FILE` to read it from a file, or `-` for stdin.
pub fn execution_input(arg: &str) -> anyhow::Result<prost_types::Struct> {
    let invalid = |m: String| anyhow::Error::new(crate::exit::Invalid(m));
    let (text, from) = if arg == "-" {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(MAX_INPUT_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| invalid(format!("reading --input from stdin: {e}")))?;
        if bytes.len() > MAX_INPUT_BYTES {
            return Err(invalid(format!("--input from stdin is over {MAX_INPUT_BYTES} bytes")));
        }
        (
            String::from_utf8(bytes).map_err(|e| invalid(format!("--input from stdin is not UTF-8 ({e})")))?,
            "stdin".into(),
        )
    } else if let Some(path) = arg.strip_prefix('@') {
        let path = Path::new(path);
        let text = read_bounded(path, MAX_INPUT_BYTES).map_err(|e| invalid(format!("--input: {e:#}")))?;
        (text, path.display().to_string())
    } else {
        (arg.to_string(), "--input".into())
    };
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| invalid(format!("{from} is not JSON ({e}); --input takes a JSON object, @FILE or - (stdin)")))?;
    value::serde_to_struct(&json)
        .ok_or_else(|| invalid(format!("{from} must be a JSON object, e.g. '{{\"email\": \"a@b.c\"}}'")))
}

/// A text file of at most `limit` bytes, refused before it is read whole (a huge file, or a
/// device like /dev/zero that never ends, must not fill memory).
fn read_bounded(path: &Path, limit: usize) -> anyhow::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let too_large =
        |size: String| anyhow::anyhow!("{}: {size}; a pattern document is at most {limit} bytes", path.display());
    if let Ok(meta) = file.metadata()
        && meta.len() > limit as u64
    {
        return Err(too_large(format!("{} bytes", meta.len())));
    }
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > limit {
        return Err(too_large("more than that".to_string()));
    }
    String::from_utf8(bytes).map_err(|e| anyhow::anyhow!("{}: not UTF-8 text ({e})", path.display()))
}

/// Every file read and parsed before anything is sent: a bad file fails the command at once,
/// server or not.
fn read_patterns(files: &[PathBuf]) -> anyhow::Result<Vec<(&PathBuf, pb::Pattern)>> {
    files.iter().map(|f| Ok((f, read_pattern(f)?))).collect()
}

pub async fn register(target: &Target, files: &[PathBuf]) -> anyhow::Result<()> {
    let patterns = read_patterns(files)?;
    let mut client = connect(target).await?;
    let mut failed = 0;
    for (f, pattern) in patterns {
        match client.register_pattern(pb::RegisterPatternRequest { pattern: Some(pattern) }).await {
            Ok(r) => {
                let r = r.into_inner();
                let p = r.pattern_ref.unwrap_or_default();
                if target.json {
                    say!(
                        "{}",
                        serde_json::json!({"file": f, "name": p.name, "version": p.version, "created": r.created})
                    );
                } else {
                    let what = if r.created { "registered" } else { "already registered (identical)" };
                    say!("{what} {}@{} from {}", p.name, p.version, f.display());
                    for d in &r.diagnostics {
                        say!("  warning: {}: {}", d.path, d.message);
                    }
                }
            }
            Err(s) => {
                failed += 1;
                say_err!("{}: {}", f.display(), status_error(s));
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} file(s) were not registered", files.len());
    }
    Ok(())
}

pub async fn validate(target: &Target, files: &[PathBuf]) -> anyhow::Result<()> {
    let patterns = read_patterns(files)?;
    let mut client = connect(target).await?;
    let mut invalid = 0;
    for (f, pattern) in patterns {
        let r = client
            .validate_pattern(pb::ValidatePatternRequest { pattern: Some(pattern) })
            .await
            .map_err(status_error)?
            .into_inner();
        if target.json {
            let diags: Vec<_> =
                r.diagnostics.iter().map(|d| serde_json::json!({"path": d.path, "message": d.message})).collect();
            say!("{}", serde_json::json!({"file": f, "valid": r.valid, "diagnostics": diags}));
        } else if r.valid {
            say!("{}: valid", f.display());
        } else {
            say!("{}: {}", f.display(), render::diagnostics_report(&r.diagnostics));
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

/// What `pattern list` filters and sorts by.
pub struct ListFilter {
    pub query: String,
    pub owner: String,
    pub tag: String,
    pub action: String,
    pub sort: pb::PatternSort,
}

impl ListFilter {
    fn request(&self, page_size: u32, page_token: String) -> pb::ListPatternsRequest {
        pb::ListPatternsRequest {
            query: self.query.clone(),
            owner: self.owner.clone(),
            tag: self.tag.clone(),
            page_size,
            page_token,
            action: self.action.clone(),
            sort: self.sort as i32,
        }
    }
}

/// Lists patterns: every page, or (with a page size or token) one page and the next page's token.
pub async fn list(
    target: &Target,
    filter: ListFilter,
    page_size: Option<u32>,
    page_token: Option<String>,
) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    if page_size.is_some() || page_token.is_some() {
        let r = client
            .list_patterns(filter.request(page_size.unwrap_or(0), page_token.unwrap_or_default()))
            .await
            .map_err(status_error)?
            .into_inner();
        if target.json {
            say!("{}", render::message_json(&r, "nexus.v1.ListPatternsResponse"));
        } else {
            say_raw!("{}", render::pattern_table(&r.patterns));
            if !r.next_page_token.is_empty() {
                say!("next page: --page-token {}", r.next_page_token);
            }
        }
        return Ok(());
    }
    let mut token = String::new();
    let mut all = Vec::new();
    loop {
        let r = client.list_patterns(filter.request(200, token)).await.map_err(status_error)?.into_inner();
        all.extend(r.patterns);
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    if target.json {
        say!("{}", serde_json::Value::Array(all.iter().map(document::to_json).collect()));
    } else {
        say_raw!("{}", render::pattern_table(&all));
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
        say!("{}", serde_json::to_string_pretty(&document::to_json(&pattern))?);
    } else {
        say_raw!("{}{}", render::pattern_events(&pattern), document::to_yaml(&pattern));
    }
    Ok(())
}

pub async fn run(
    target: &Target,
    name: &str,
    input: &str,
    version: Option<String>,
    idempotency_key: Option<String>,
    progress: bool,
) -> anyhow::Result<()> {
    let input = execution_input(input)?;
    let mut client = connect(target).await?;
    let request = pb::ExecutePatternRequest {
        pattern_name: name.to_string(),
        version: version.unwrap_or_default(),
        input: Some(input),
        idempotency_key: idempotency_key.unwrap_or_default(),
    };
    let (id, failure) = if progress {
        run_with_progress(&mut client, request).await?
    } else {
        match &client.execute_pattern(request).await {
            Ok(r) => (r.get_ref().execution_id.clone(), None),
            Err(s) => match s.metadata().get(nexus_server::EXECUTION_ID_HEADER).and_then(|v| v.to_str().ok()) {
                Some(id) => (id.to_string(), Some(format!("{}: {}", nexus_server::code_name(s.code()), s.message()))),
                None => return Err(status_error(s.clone())),
            },
        }
    };
    let execution =
        client.get_execution(pb::GetExecutionRequest { execution_id: id }).await.map_err(status_error)?.into_inner();
    if target.json {
        say!("{}", render::execution_json(&execution));
    } else {
        say_raw!("{}", render::timeline(&execution));
    }
    match failure {
        Some(why) => {
            Err(anyhow::Error::new(crate::exit::ExecutionFailed { text: format!("the execution failed: {why}") }))
        }
        None => Ok(()),
    }
}

/// Runs the request over ExecutePatternStream with a live status line on standard error (the
/// same execution as the unary call: an idempotency key is honoured the same way). Returns the
/// execution's id and, when it did not succeed, why.
async fn run_with_progress(
    client: &mut Client,
    request: pb::ExecutePatternRequest,
) -> anyhow::Result<(String, Option<String>)> {
    use pb::execution_event::Event as E;
    let mut progress = crate::progress::Progress::new(&request.pattern_name);
    let mut stream = client.execute_pattern_stream(request).await.map_err(status_error)?.into_inner();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    let mut id = String::new();
    let outcome = loop {
        tokio::select! {
            event = stream.message() => match event {
                Ok(Some(event)) => {
                    if id.is_empty() {
                        id.clone_from(&event.execution_id);
                    }
                    progress.apply(&event);
                    crate::progress::draw(&progress.line());
                    if let Some(E::Finished(f)) = event.event {
                        break Ok(f);
                    }
                }
                Ok(None) => break Err(anyhow::anyhow!("the stream ended without a result")),
                Err(s) => break Err(status_error(s)),
            },
            _ = tick.tick() => crate::progress::draw(&progress.line()),
        }
    };
    crate::progress::clear();
    let finished = outcome?;
    if finished.status == pb::ExecutionStatus::Succeeded as i32 {
        return Ok((finished.execution_id, None));
    }
    let e = finished.error.unwrap_or_default();
    let id = if finished.execution_id.is_empty() { id } else { finished.execution_id };
    Ok((id, Some(format!("{}: {}", e.code, e.message))))
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
        say!("{}", serde_json::Value::Array(services));
    } else {
        say_raw!("{}", render::services(&r.services));
    }
    Ok(())
}

pub async fn refresh(target: &Target, backend: Option<String>, dry_run: bool) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let req = pb::RefreshServicesRequest { backend: backend.unwrap_or_default(), dry_run };
    let r = client.refresh_services(req).await.map_err(status_error)?.into_inner();
    if target.json {
        say!("{}", render::message_json(&r, "nexus.v1.RefreshServicesResponse"));
    } else {
        say_raw!("{}", render::refresh(&r, dry_run));
    }
    if r.broken.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{} pattern version(s) no longer type-check against the refreshed catalog", r.broken.len()))
    }
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
            say!("{}", render::execution_json(&e));
        } else {
            say_raw!("{}", render::timeline(&e));
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
        say!(
            "{}",
            serde_json::Value::Array(
                r.executions
                    .iter()
                    .map(|e| serde_json::from_str(&render::execution_json(e)).unwrap_or_default())
                    .collect()
            )
        );
    } else {
        say_raw!("{}", render::execution_table(&r.executions));
    }
    Ok(())
}

/// Runs a pattern over ExecutePatternStream, printing events as they happen.
pub async fn follow(target: &Target, name: &str, input: &str, version: Option<String>) -> anyhow::Result<()> {
    use pb::execution_event::Event as E;
    let input = execution_input(input)?;
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
            say!("{}", render::message_json(&event, "nexus.v1.ExecutionEvent"));
        } else if let Some(line) = render::event_line(&event) {
            say!("{line}");
        }
        if let Some(E::Finished(f)) = event.event {
            last = Some(f);
        }
    }
    match last {
        Some(f) if f.status == pb::ExecutionStatus::Succeeded as i32 => Ok(()),
        Some(f) => {
            let e = f.error.unwrap_or_default();
            Err(anyhow::Error::new(crate::exit::ExecutionFailed {
                text: format!("the execution did not succeed: {}: {}", e.code, e.message),
            }))
        }
        None => Err(anyhow::anyhow!("the stream ended without a result")),
    }
}

/// Every version of a pattern, and the facts of its name.
pub async fn versions(target: &Target, name: &str) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let r = client
        .list_pattern_versions(pb::ListPatternVersionsRequest { name: name.to_string() })
        .await
        .map_err(status_error)?
        .into_inner();
    if target.json {
        say!("{}", render::message_json(&r, "nexus.v1.ListPatternVersionsResponse"));
    } else {
        say_raw!("{}", render::versions(&r));
    }
    Ok(())
}

/// Deprecates a version (or lifts its deprecation) and prints the new latest.
pub async fn deprecate(
    target: &Target,
    name: &str,
    version: &str,
    reason: Option<String>,
    undo: bool,
) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let r = client
        .deprecate_pattern(pb::DeprecatePatternRequest {
            name: name.to_string(),
            version: version.to_string(),
            reason: reason.unwrap_or_default(),
            undo,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if target.json {
        say!("{}", render::message_json(&r, "nexus.v1.DeprecatePatternResponse"));
    } else {
        let what = if undo { "no longer deprecated" } else { "deprecated" };
        let latest = if r.latest.is_empty() {
            "no version is latest now (all are deprecated)".to_string()
        } else {
            format!("latest is {name}@{}", r.latest)
        };
        say!("{name}@{version} {what}; {latest}");
    }
    Ok(())
}

/// Prints the changes from `name@v1` to `v2` of `name` (or of `to_name`), one line each.
pub async fn diff(target: &Target, name: &str, v1: &str, v2: &str, to_name: Option<String>) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let to_name = to_name.unwrap_or_default();
    let r = client
        .diff_patterns(pb::DiffPatternsRequest {
            name: name.to_string(),
            from_version: v1.to_string(),
            to_version: v2.to_string(),
            to_name: to_name.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if target.json {
        say!("{}", render::message_json(&r, "nexus.v1.DiffPatternsResponse"));
    } else if r.changes.is_empty() {
        let other = if to_name.is_empty() { name } else { &to_name };
        say_err!("no changes from {name}@{v1} to {other}@{v2}");
    } else {
        for change in &r.changes {
            say!("{}", render::change_line(change));
        }
    }
    Ok(())
}

/// Forks a version under a new name owned by the caller.
pub async fn fork(target: &Target, name: &str, new_name: &str, version: Option<String>) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let version = version.unwrap_or_default();
    let r = client
        .fork_pattern(pb::ForkPatternRequest {
            name: name.to_string(),
            version: version.clone(),
            new_name: new_name.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if target.json {
        say!("{}", render::message_json(&r, "nexus.v1.RegisterPatternResponse"));
    } else {
        let p = r.pattern_ref.unwrap_or_default();
        let source = if version.is_empty() { format!("{name} (latest)") } else { format!("{name}@{version}") };
        let what = if r.created { "forked" } else { "already forked (identical)" };
        say!("{what} {source} as {}@{}", p.name, p.version);
        for d in &r.diagnostics {
            say!("  warning: {}: {}", d.path, d.message);
        }
    }
    Ok(())
}

/// Sets who may see a pattern.
pub async fn share(target: &Target, name: &str, visibility: Visibility) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let r = client
        .set_visibility(pb::SetVisibilityRequest {
            name: name.to_string(),
            visibility: visibility.as_str().to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if target.json {
        say!("{}", render::message_json(&r, "nexus.v1.SetVisibilityResponse"));
    } else {
        say!("{name} is now {}", r.visibility);
    }
    Ok(())
}

/// Stars or unstars a pattern.
pub async fn star(target: &Target, name: &str, unstar: bool) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let r = client.star(pb::StarRequest { name: name.to_string(), unstar }).await.map_err(status_error)?.into_inner();
    if target.json {
        say!("{}", render::message_json(&r, "nexus.v1.StarResponse"));
    } else {
        let what = if r.starred { "starred" } else { "not starred" };
        say!("{name}: {what} by you; {} star{}", r.stars, if r.stars == 1 { "" } else { "s" });
    }
    Ok(())
}

/// A knowledge-graph query.
pub enum GraphQuery {
    /// Pattern versions that use an action.
    Impact(String),
    /// The fork tree of a pattern.
    Lineage(String),
    /// The nodes near a node.
    Neighbourhood(String),
}

/// Queries the knowledge graph and prints its nodes, then its edges.
pub async fn graph(target: &Target, query: GraphQuery, depth: Option<u32>) -> anyhow::Result<()> {
    use pb::query_graph_request::Query;
    let query = match query {
        GraphQuery::Impact(action) => Query::Impact(action),
        GraphQuery::Lineage(name) => Query::Lineage(name),
        GraphQuery::Neighbourhood(node) => Query::Neighbourhood(node),
    };
    let mut client = connect(target).await?;
    let r = client
        .query_graph(pb::QueryGraphRequest { query: Some(query), depth: depth.unwrap_or(0) })
        .await
        .map_err(status_error)?
        .into_inner();
    if target.json {
        say!("{}", render::message_json(&r, "nexus.v1.QueryGraphResponse"));
    } else {
        say_raw!("{}", render::graph(&r));
    }
    Ok(())
}

/// Prints the identity the server sees for the target's credentials.
pub async fn publish_event(
    target: &Target,
    event_type: String,
    data: &str,
    id: Option<String>,
    source: Option<String>,
    subject: Option<String>,
) -> anyhow::Result<()> {
    let data: serde_json::Value = serde_json::from_str(data).context("--data is not JSON")?;
    let data = value::serde_to_struct(&data).context("--data must be a JSON object")?;
    let mut client = connect(target).await?;
    let event = pb::Event {
        r#type: event_type,
        id: id.unwrap_or_default(),
        source: source.unwrap_or_default(),
        subject: subject.unwrap_or_default(),
        data: Some(data),
        ..Default::default()
    };
    let r =
        client.publish_event(pb::PublishEventRequest { event: Some(event) }).await.map_err(status_error)?.into_inner();
    if target.json {
        say!("{}", render::message_json(&r, "nexus.v1.PublishEventResponse"));
    } else if r.duplicate {
        say!("already published: {} from {} (nothing happened again)", r.id, r.source);
    } else {
        say!("published {} from {}", r.id, r.source);
    }
    Ok(())
}

pub async fn tail_events(target: &Target, types: Vec<String>, filter: Option<String>) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let request = pb::SubscribeEventsRequest { types, filter: filter.unwrap_or_default() };
    let mut stream = client.subscribe_events(request).await.map_err(status_error)?.into_inner();
    while let Some(e) = stream.message().await.map_err(status_error)? {
        if target.json {
            say!("{}", render::message_json(&e, "nexus.v1.Event"));
        } else {
            let data = e.data.as_ref().map(value::struct_to_serde).unwrap_or_default();
            say!("{}  {}  {}  {}", e.r#type, e.source, e.id, data);
        }
    }
    Ok(())
}

pub async fn suggest(
    target: &Target,
    pattern: Option<String>,
    kinds: &[String],
    min_support: Option<u32>,
    limit: u32,
    show: bool,
) -> anyhow::Result<()> {
    let mut kind_numbers = Vec::new();
    for k in kinds {
        let name = format!("SUGGESTION_KIND_{}", k.to_ascii_uppercase());
        let kind = pb::SuggestionKind::from_str_name(&name).ok_or_else(|| {
            anyhow::anyhow!(
                "--kind {k}: not a kind (composite, shared_subpattern, retry_policy, parallelize, unread_output)"
            )
        })?;
        kind_numbers.push(kind as i32);
    }
    let mut client = connect(target).await?;
    let req = pb::SuggestPatternsRequest {
        kinds: kind_numbers,
        pattern_name: pattern.unwrap_or_default(),
        min_support: min_support.unwrap_or(0),
        limit,
        ..Default::default()
    };
    let r = client.suggest_patterns(req).await.map_err(status_error)?.into_inner();
    if target.json {
        say!("{}", render::message_json(&r, "nexus.v1.SuggestPatternsResponse"));
    } else {
        say_raw!("{}", render::suggestions(&r, show));
    }
    Ok(())
}

/// What `nexus generate` asks for.
pub struct GoalArgs {
    pub goal: Option<String>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub use_actions: Vec<String>,
    pub end_with: Option<String>,
    pub name: Option<String>,
    pub limit: u32,
    pub save: Option<std::path::PathBuf>,
}

fn goal_field(text: &str) -> pb::GoalField {
    match text.split_once(':') {
        Some((name, ty)) => pb::GoalField { name: name.trim().to_string(), r#type: ty.trim().to_string() },
        None => pb::GoalField { name: text.trim().to_string(), r#type: String::new() },
    }
}

pub async fn generate(target: &Target, g: GoalArgs) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let req = pb::GeneratePatternRequest {
        goal: g.goal.unwrap_or_default(),
        inputs: g.inputs.iter().map(|i| goal_field(i)).collect(),
        outputs: g.outputs.iter().map(|o| goal_field(o)).collect(),
        use_actions: g.use_actions,
        end_with: g.end_with.unwrap_or_default(),
        name: g.name.unwrap_or_default(),
        limit: g.limit,
        offline: false,
    };
    let r = client.generate_pattern(req).await.map_err(status_error)?.into_inner();
    if let (Some(path), Some(best)) = (&g.save, r.candidates.first()) {
        std::fs::write(path, &best.yaml).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    if target.json {
        say!("{}", render::message_json(&r, "nexus.v1.GeneratePatternResponse"));
    } else {
        say_raw!("{}", render::generated(&r));
        if let (Some(path), false) = (&g.save, r.candidates.is_empty()) {
            say!("best candidate written to {}", path.display());
        }
    }
    if r.candidates.is_empty() {
        anyhow::bail!("no candidate: {}", r.notes.join("; "));
    }
    Ok(())
}

pub async fn whoami(target: &Target) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let r = client.who_am_i(pb::WhoAmIRequest {}).await.map_err(status_error)?.into_inner();
    if target.json {
        say!("{}", render::message_json(&r, "nexus.v1.Principal"));
    } else {
        say_raw!("{}", render::principal(&r));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorization(credentials: &mut Credentials) -> Option<String> {
        let request = credentials.call(tonic::Request::new(())).unwrap();
        request.metadata().get("authorization").map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn every_request_carries_the_bearer_token() {
        let mut credentials = Credentials::from_token(Some("nxs_abc_def")).unwrap();
        assert_eq!(authorization(&mut credentials).as_deref(), Some("Bearer nxs_abc_def"));
        assert_eq!(authorization(&mut credentials).as_deref(), Some("Bearer nxs_abc_def"));
        let value = credentials.authorization.as_ref().unwrap();
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("nxs_abc_def"));
    }

    #[test]
    fn no_token_means_no_header_and_bad_tokens_are_not_echoed() {
        assert_eq!(authorization(&mut Credentials::from_token(None).unwrap()), None);
        assert_eq!(authorization(&mut Credentials::from_token(Some("  ")).unwrap()), None);
        let err = Credentials::from_token(Some("sec\nret")).err().unwrap().to_string();
        assert!(err.contains("NEXUS_TOKEN") && !err.contains("sec"), "{err}");
    }
}
