//! Building the catalog: each backend's descriptors come from gRPC server reflection, a descriptor
//! set file, or `.proto` files compiled in-process (no protoc needed). Reflection speaks
//! `grpc.reflection.v1` and falls back to `v1alpha`, so grpcio, grpc-js, grpc-go and tonic
//! backends are all discovered.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};

use http::uri::PathAndQuery;
use nexus_core::{Catalog, catalog::DescriptorSource};
use nexus_store::{CachedDescriptors, DescriptorCache};
use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};
use protox::file::{FileResolver, GoogleFileResolver};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::transport::Endpoint;
use tonic_reflection::pb::v1::{
    ErrorResponse, ServerReflectionRequest, ServerReflectionResponse, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse,
};

use crate::config::ServiceConfig;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("backend `{backend}` ({endpoint}): {message}")]
    Backend { backend: String, endpoint: String, message: String },
    #[error(transparent)]
    Catalog(#[from] nexus_core::CatalogError),
}

fn backend_error(s: &ServiceConfig, message: impl Into<String>) -> DiscoveryError {
    DiscoveryError::Backend { backend: s.name.clone(), endpoint: s.endpoint.clone(), message: message.into() }
}

/// One backend's descriptors, as discovered (or read from the store's cache).
#[derive(Clone)]
pub struct Discovered {
    pub service: ServiceConfig,
    pub fds: FileDescriptorSet,
    pub source: DescriptorSource,
}

/// Fetches every configured backend's descriptors at start. Each successful discovery is stored
/// in `cache`; a backend whose reflection fails (unreachable, or not serving reflection) is
/// served from the descriptors cached by an earlier discovery, saying so in the log. Without a
/// cached copy, its error stops the start.
pub async fn discover_at_start(
    services: &[ServiceConfig],
    timeout: Duration,
    cache: &dyn DescriptorCache,
) -> Result<Vec<Discovered>, DiscoveryError> {
    let fetched = futures::future::join_all(services.iter().map(|s| descriptors_of(s, timeout))).await;
    let mut discovered = Vec::with_capacity(services.len());
    for (s, result) in services.iter().zip(fetched) {
        match result {
            Ok((fds, source)) => {
                save(cache, s, &fds, source).await;
                discovered.push(Discovered { service: s.clone(), fds, source });
            }
            // Files that cannot be read are a configuration error, not an unreachable backend.
            Err(e) if s.descriptor_set.is_some() || !s.protos.is_empty() => return Err(e),
            Err(e) => match cached(cache, s).await {
                Some((fds, at)) => {
                    let why = match &e {
                        DiscoveryError::Backend { message, .. } => message.clone(),
                        other => other.to_string(),
                    };
                    tracing::warn!("backend `{}`: unreachable ({why}); using descriptors cached at {at}", s.name);
                    discovered.push(Discovered { service: s.clone(), fds, source: DescriptorSource::Cache });
                }
                None => return Err(e),
            },
        }
    }
    Ok(discovered)
}

/// Stores a successful discovery (a failure to store is logged: the catalog is still good).
pub async fn save(cache: &dyn DescriptorCache, s: &ServiceConfig, fds: &FileDescriptorSet, source: DescriptorSource) {
    let record = CachedDescriptors {
        backend: s.name.clone(),
        endpoint: s.endpoint.clone(),
        source: source.as_str().to_string(),
        descriptors: fds.encode_to_vec(),
        discovered_at: std::time::SystemTime::now(),
    };
    if let Err(e) = cache.save_descriptors(&record).await {
        tracing::warn!(backend = %s.name, "cannot cache the backend's descriptors in the store: {e}");
    }
}

/// The cached descriptors of `s` and when they were discovered (RFC 3339), if the store has a
/// readable copy.
async fn cached(cache: &dyn DescriptorCache, s: &ServiceConfig) -> Option<(FileDescriptorSet, String)> {
    let record = match cache.cached_descriptors(&s.name).await {
        Ok(r) => r?,
        Err(e) => {
            tracing::warn!(backend = %s.name, "cannot read cached descriptors from the store: {e}");
            return None;
        }
    };
    match FileDescriptorSet::decode(record.descriptors.as_slice()) {
        Ok(fds) => Some((fds, prost_types::Timestamp::from(record.discovered_at).to_string())),
        Err(e) => {
            tracing::warn!(backend = %s.name, "the cached descriptors do not decode: {e}");
            None
        }
    }
}

/// The catalog of these backends' descriptors.
pub fn catalog_of(discovered: &[Discovered]) -> Result<Catalog, DiscoveryError> {
    let mut builder = Catalog::builder();
    for d in discovered {
        builder.add_backend(&d.service.name, &d.service.endpoint, d.source, d.fds.clone(), &d.service.services)?;
    }
    Ok(builder.build())
}

/// Fetches one backend's descriptors from where its configuration says.
pub async fn fetch(s: &ServiceConfig, timeout: Duration) -> Result<Discovered, DiscoveryError> {
    let (fds, source) = descriptors_of(s, timeout).await?;
    Ok(Discovered { service: s.clone(), fds, source })
}

async fn descriptors_of(
    s: &ServiceConfig,
    timeout: Duration,
) -> Result<(FileDescriptorSet, DescriptorSource), DiscoveryError> {
    if let Some(path) = &s.descriptor_set {
        let bytes = std::fs::read(path)
            .map_err(|e| backend_error(s, format!("cannot read descriptor_set {}: {e}", path.display())))?;
        let fds = FileDescriptorSet::decode(bytes.as_slice())
            .map_err(|e| backend_error(s, format!("{} is not a FileDescriptorSet: {e}", path.display())))?;
        return Ok((fds, DescriptorSource::DescriptorSet));
    }
    if !s.protos.is_empty() {
        let mut includes = s.include.clone();
        if includes.is_empty() {
            for p in &s.protos {
                if let Some(dir) = p.parent()
                    && !includes.contains(&dir.to_path_buf())
                {
                    includes.push(dir.to_path_buf());
                }
            }
        }
        let files: Vec<_> = s
            .protos
            .iter()
            .map(|p| {
                includes
                    .iter()
                    .find_map(|inc| p.strip_prefix(inc).ok().map(|r| r.to_path_buf()))
                    .unwrap_or_else(|| p.clone())
            })
            .collect();
        let fds = protox::compile(&files, &includes).map_err(|e| backend_error(s, format!("compiling protos: {e}")))?;
        return Ok((fds, DescriptorSource::Protos));
    }
    reflect(s, timeout).await.map(|fds| (fds, DescriptorSource::Reflection))
}

/// The names servers serve reflection under, tried in this order: one protocol with the same
/// messages, only the service name differs. grpc-js serves both, tonic what the application
/// builds; grpcio (grpcio-reflection 1.85), older grpc-go (Debian's 1.33) and many Java servers
/// serve only v1alpha. grpcurl tries them in the same order.
const REFLECTION_SERVICES: [&str; 2] = ["grpc.reflection.v1", "grpc.reflection.v1alpha"];

/// Why one reflection attempt failed.
#[derive(Debug)]
enum AttemptError {
    /// The backend does not serve reflection under this name: try the next one.
    Unimplemented(String),
    /// Anything else (the next name is still tried: a server may be broken under one name only).
    Failed(String),
}

impl AttemptError {
    fn message(&self) -> &str {
        match self {
            Self::Unimplemented(m) | Self::Failed(m) => m,
        }
    }
}

/// `CODE "message"`, or just `CODE` when the message is empty.
fn describe(code: tonic::Code, message: &str) -> String {
    let code = nexus_engine::code_name(code);
    if message.is_empty() { code.to_string() } else { format!("{code} \"{message}\"") }
}

fn status_error(status: &tonic::Status) -> AttemptError {
    let mut message = describe(status.code(), status.message());
    // A transport failure ("transport error") says why only in its causes: a TLS alert such as
    // a backend refusing a connection without a client certificate.
    if let Some(cause) = std::error::Error::source(status) {
        message = format!("{message}: {}", error_chain(cause));
    }
    if status.code() == tonic::Code::Unimplemented {
        AttemptError::Unimplemented(message)
    } else {
        AttemptError::Failed(message)
    }
}

/// Asks the backend, over gRPC server reflection, for its services and the files that define
/// them and everything they import — `grpc.reflection.v1` first, `v1alpha` if v1 is not served —
/// all within `timeout`. The error names every attempt and why it failed.
async fn reflect(s: &ServiceConfig, timeout: Duration) -> Result<FileDescriptorSet, DiscoveryError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut endpoint = Endpoint::from_shared(s.endpoint.clone())
        .map_err(|e| backend_error(s, format!("invalid endpoint: {e}")))?
        .connect_timeout(timeout.min(Duration::from_secs(5)));
    // `tls_server_name` is also the `:authority`, as for the invoker's calls.
    if let Some(name) = &s.tls_server_name {
        let port = endpoint.uri().port_u16().unwrap_or(443);
        let origin = format!("https://{name}:{port}")
            .parse()
            .map_err(|e| backend_error(s, format!("tls_server_name `{name}`: {e}")))?;
        endpoint = endpoint.origin(origin);
    }
    // Plaintext or TLS (`https://`) by Nexus's own connector (tls.rs), as the invoker dials.
    let connector = crate::tls::Connector::new(crate::tls::backend_tls(s).map_err(|e| backend_error(s, e))?);
    let channel = match tokio::time::timeout_at(deadline, endpoint.connect_with_connector(connector)).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => return Err(backend_error(s, format!("cannot connect: {}", error_chain(&e)))),
        Err(_) => return Err(backend_error(s, format!("cannot connect within {timeout:?}"))),
    };
    let mut tried = Vec::new();
    let mut failed_otherwise = false;
    for service in REFLECTION_SERVICES {
        let attempt = tokio::time::timeout_at(deadline, reflect_with(channel.clone(), service, &s.services)).await;
        match attempt {
            Ok(Ok(fds)) => {
                if tried.is_empty() {
                    tracing::debug!(backend = %s.name, reflection = service, files = fds.file.len(), "discovered");
                } else {
                    // Falling back is normal when v1 is not served; a v1 that is served but
                    // broken is worth a line in the log.
                    if failed_otherwise {
                        tracing::warn!(backend = %s.name, reflection = service, earlier = %tried.join("; "), "discovered after a failed attempt");
                    } else {
                        tracing::debug!(backend = %s.name, reflection = service, earlier = %tried.join("; "), "discovered");
                    }
                }
                return Ok(fds);
            }
            Ok(Err(e)) => {
                failed_otherwise |= matches!(e, AttemptError::Failed(_));
                tried.push(format!("{service}: {}", e.message()));
            }
            Err(_) => {
                // No time left for another attempt: say so rather than leave it out.
                tried.push(format!("{service}: no answer within {timeout:?}"));
                break;
            }
        }
    }
    for service in REFLECTION_SERVICES.iter().skip(tried.len()) {
        tried.push(format!("{service}: not tried (discovery_timeout spent)"));
    }
    let tried = tried.join("; ");
    // A backend that refuses the connection without a client certificate (TLS 1.3 says so only
    // after the handshake, at the first request) is not a reflection problem.
    if tried.contains("CertificateRequired") {
        return Err(backend_error(
            s,
            format!(
                "the backend requires a TLS client certificate: set cert_file and key_file on the service \
                 ({tried})"
            ),
        ));
    }
    Err(backend_error(
        s,
        format!(
            "gRPC server reflection failed ({tried}). Does the backend serve reflection? Otherwise give Nexus its \
             descriptors with `descriptor_set` or `protos`"
        ),
    ))
}

/// `e` and its causes, for errors (such as tonic's transport errors) whose `Display` is only
/// "transport error".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        // Wrappers often repeat their cause's text ("transport error: transport error: …").
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// One reflection stream to the backend under the service name `service`.
struct Conversation {
    channel: tonic::transport::Channel,
    service: String,
    tx: mpsc::Sender<ServerReflectionRequest>,
    responses: tonic::Streaming<ServerReflectionResponse>,
    /// The server ended the stream with an error status (tonic answers an unknown file with
    /// NOT_FOUND that way, not with an `ErrorResponse`): the next question opens a new one.
    ended: bool,
}

fn reflection_request(req: MessageRequest) -> ServerReflectionRequest {
    ServerReflectionRequest { host: String::new(), message_request: Some(req) }
}

impl Conversation {
    /// Opens the stream with `first` already queued on it. grpc-js, grpcio and grpc-go send the
    /// response headers only together with their first response message, so a client that awaits
    /// the headers before sending its first request waits for a server that waits for it.
    async fn open(
        channel: tonic::transport::Channel,
        service: &str,
        first: MessageRequest,
    ) -> Result<Self, AttemptError> {
        let (tx, rx) = mpsc::channel(16);
        tx.try_send(reflection_request(first))
            .map_err(|_| AttemptError::Failed("cannot queue the first reflection request".into()))?;
        let path = PathAndQuery::try_from(format!("/{service}.ServerReflection/ServerReflectionInfo"))
            .map_err(|e| AttemptError::Failed(format!("bad reflection path: {e}")))?;
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.map_err(|e| AttemptError::Failed(format!("not ready: {}", error_chain(&e))))?;
        // The messages of v1 and v1alpha are the same on the wire; v1's Rust types serve both.
        let codec = tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default();
        let responses = grpc
            .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, codec)
            .await
            .map_err(|e| status_error(&e))?
            .into_inner();
        Ok(Self { channel, service: service.to_string(), tx, responses, ended: false })
    }

    /// The answer to the request sent last (an `ErrorResponse` is an answer too).
    async fn answer(&mut self) -> Result<MessageResponse, AttemptError> {
        match self.responses.next().await {
            Some(Ok(r)) => r.message_response.ok_or_else(|| AttemptError::Failed("empty reflection response".into())),
            Some(Err(e)) => {
                self.ended = true;
                Err(status_error(&e))
            }
            None => Err(AttemptError::Failed("the reflection stream ended early".into())),
        }
    }

    async fn ask(&mut self, req: MessageRequest) -> Result<MessageResponse, AttemptError> {
        if self.ended {
            *self = Self::open(self.channel.clone(), &self.service, req).await?;
            return self.answer().await;
        }
        self.tx
            .send(reflection_request(req))
            .await
            .map_err(|_| AttemptError::Failed("the reflection stream closed".into()))?;
        self.answer().await
    }
}

fn error_response(e: &ErrorResponse) -> String {
    describe(tonic::Code::from_i32(e.error_code), &e.error_message)
}

async fn reflect_with(
    channel: tonic::transport::Channel,
    service: &str,
    wanted: &[String],
) -> Result<FileDescriptorSet, AttemptError> {
    // Always list first: it is the one request every server answers, and it tells which
    // configured services are missing.
    let mut conversation = Conversation::open(channel, service, MessageRequest::ListServices(String::new())).await?;
    let listed: Vec<String> = match conversation.answer().await? {
        MessageResponse::ListServicesResponse(l) => l.service.into_iter().map(|s| s.name).collect(),
        MessageResponse::ErrorResponse(e) => {
            return Err(AttemptError::Failed(format!("list_services: {}", error_response(&e))));
        }
        _ => return Err(AttemptError::Failed("unexpected answer to list_services".into())),
    };
    let services: Vec<String> = if wanted.is_empty() {
        listed.into_iter().filter(|n| !n.starts_with("grpc.reflection.") && !n.starts_with("grpc.health.")).collect()
    } else {
        if let Some(missing) = wanted.iter().find(|w| !listed.contains(w)) {
            return Err(AttemptError::Failed(format!(
                "the backend does not serve `{missing}` (it lists: {})",
                listed.join(", ")
            )));
        }
        wanted.to_vec()
    };
    if services.is_empty() {
        return Err(AttemptError::Failed("the backend lists no services".into()));
    }

    let mut files = Files::default();
    for name in &services {
        match conversation.ask(MessageRequest::FileContainingSymbol(name.clone())).await? {
            MessageResponse::FileDescriptorResponse(fdr) => files.absorb(fdr.file_descriptor_proto)?,
            MessageResponse::ErrorResponse(e) => {
                return Err(AttemptError::Failed(format!("file_containing_symbol {name}: {}", error_response(&e))));
            }
            _ => return Err(AttemptError::Failed(format!("unexpected answer to file_containing_symbol {name}"))),
        }
    }
    // Servers usually send the transitive imports along (tonic does; grpcio and grpc-js send a
    // file's direct imports at most): ask for each file still missing, by name, once.
    while let Some((name, importer)) = files.next_missing() {
        let why_not = match conversation.ask(MessageRequest::FileByFilename(name.clone())).await {
            Ok(MessageResponse::FileDescriptorResponse(fdr)) => {
                files.absorb(fdr.file_descriptor_proto)?;
                (!files.has(&name)).then(|| "not in the answer".to_string())
            }
            Ok(MessageResponse::ErrorResponse(e)) => Some(error_response(&e)),
            Ok(_) => return Err(AttemptError::Failed(format!("unexpected answer to file_by_filename {name}"))),
            // Some servers end the stream over an unknown file; the conversation reopens.
            Err(e) if conversation.ended => Some(e.message().to_string()),
            Err(e) => return Err(e),
        };
        if let Some(why) = why_not
            && !files.use_bundled(&name)
        {
            return Err(AttemptError::Failed(format!(
                "the backend does not serve {name}, imported by {importer}: {why}"
            )));
        }
    }
    let mut files = files.files;
    link(&mut files);
    Ok(FileDescriptorSet { file: topological(files) })
}

/// Most descriptor files one backend may hand over by reflection: far above any real service,
/// low enough that a backend answering with ever new imports cannot exhaust memory.
const MAX_DESCRIPTOR_FILES: usize = 10_000;

/// The well-known types' files, as bundled with protox.
const WELL_KNOWN_FILES: [&str; 11] = [
    "google/protobuf/any.proto",
    "google/protobuf/api.proto",
    "google/protobuf/descriptor.proto",
    "google/protobuf/duration.proto",
    "google/protobuf/empty.proto",
    "google/protobuf/field_mask.proto",
    "google/protobuf/source_context.proto",
    "google/protobuf/struct.proto",
    "google/protobuf/timestamp.proto",
    "google/protobuf/type.proto",
    "google/protobuf/wrappers.proto",
];

/// The bundled file defining the well-known type `full_name` (`google.protobuf.Struct`).
fn bundled_defining(full_name: &str) -> Option<FileDescriptorProto> {
    let short = full_name.strip_prefix("google.protobuf.")?;
    let top = short.split('.').next()?;
    let resolver = GoogleFileResolver::new();
    WELL_KNOWN_FILES.iter().filter_map(|name| resolver.open_file(name).ok()).find_map(|file| {
        let f = file.file_descriptor_proto();
        let defines = f.message_type.iter().any(|m| m.name() == top) || f.enum_type.iter().any(|e| e.name() == top);
        defines.then(|| f.clone())
    })
}

/// Every message, enum and service `file` defines, by full name (no leading dot).
fn symbols_of(file: &FileDescriptorProto, into: &mut HashMap<String, String>) {
    fn message(scope: &str, m: &DescriptorProto, file: &str, into: &mut HashMap<String, String>) {
        let name = join(scope, m.name());
        for nested in &m.nested_type {
            message(&name, nested, file, into);
        }
        for e in &m.enum_type {
            into.insert(join(&name, e.name()), file.to_string());
        }
        into.insert(name, file.to_string());
    }
    let package = file.package();
    for m in &file.message_type {
        message(package, m, file.name(), into);
    }
    for e in &file.enum_type {
        into.insert(join(package, e.name()), file.name().to_string());
    }
    for s in &file.service {
        into.insert(join(package, s.name()), file.name().to_string());
    }
}

fn join(scope: &str, name: &str) -> String {
    if scope.is_empty() { name.to_string() } else { format!("{scope}.{name}") }
}

/// Resolves a type reference the way protoc does: `.a.b.C` is absolute; `b.C` is looked up in
/// `scope`, then in each enclosing scope.
fn resolve(reference: &str, scope: &str, symbols: &HashMap<String, String>) -> Option<String> {
    if let Some(absolute) = reference.strip_prefix('.') {
        return symbols.contains_key(absolute).then(|| absolute.to_string());
    }
    let mut scope = scope;
    loop {
        let candidate = join(scope, reference);
        if symbols.contains_key(&candidate) {
            return Some(candidate);
        }
        if scope.is_empty() {
            return None;
        }
        scope = scope.rfind('.').map_or("", |i| &scope[..i]);
    }
}

/// Makes what some reflection servers send into a set that builds, as protoc would have written
/// it: every type reference fully qualified and every file importing the files it uses. grpc-js
/// (`@grpc/reflection` over protobufjs) merges each package into one `<package>.proto`, declares
/// no imports and writes relative references, and serves the well-known types as a
/// `google_protobuf.proto` of its own (with camelCase field names and map entries named
/// `Fields`); those are replaced by the real `google/protobuf/*.proto`. A well-formed set (tonic,
/// grpcio, grpc-go) comes out as it went in.
fn link(files: &mut BTreeMap<String, FileDescriptorProto>) {
    // A home-made google.protobuf file that no file imports by name: the real ones replace it.
    let imported: HashSet<String> = files.values().flat_map(|f| f.dependency.iter().cloned()).collect();
    files.retain(|name, f| {
        !(f.package() == "google.protobuf" && !name.starts_with("google/protobuf/") && !imported.contains(name))
    });
    let mut symbols = HashMap::new();
    for f in files.values() {
        symbols_of(f, &mut symbols);
    }
    let names: Vec<String> = files.keys().cloned().collect();
    for name in names {
        let Some(mut file) = files.remove(&name) else { continue };
        let mut uses = Vec::new();
        let mut fix =
            |reference: &mut Option<String>, scope: &str, files: &mut BTreeMap<String, FileDescriptorProto>| {
                let Some(r) = reference.as_deref().filter(|r| !r.is_empty()) else { return };
                let mut found = resolve(r, scope, &symbols);
                if found.is_none() {
                    // A well-known type nobody sent (or only grpc-js's own copy of): the real file.
                    let full = r.trim_start_matches('.');
                    if let Some(wkt) = bundled_defining(full) {
                        symbols_of(&wkt, &mut symbols);
                        files.insert(wkt.name().to_string(), wkt);
                        found = resolve(r, scope, &symbols);
                    }
                }
                if let Some(full) = found {
                    if let Some(defining) = symbols.get(&full) {
                        uses.push(defining.clone());
                    }
                    *reference = Some(format!(".{full}"));
                }
            };
        fn walk(
            scope: &str,
            m: &mut DescriptorProto,
            files: &mut BTreeMap<String, FileDescriptorProto>,
            fix: &mut impl FnMut(&mut Option<String>, &str, &mut BTreeMap<String, FileDescriptorProto>),
        ) {
            let name = join(scope, m.name());
            for field in m.field.iter_mut().chain(m.extension.iter_mut()) {
                fix(&mut field.type_name, &name, files);
                fix(&mut field.extendee, &name, files);
            }
            for nested in &mut m.nested_type {
                walk(&name, nested, files, fix);
            }
        }
        let package = file.package().to_string();
        for m in &mut file.message_type {
            walk(&package, m, files, &mut fix);
        }
        for field in &mut file.extension {
            fix(&mut field.type_name, &package, files);
            fix(&mut field.extendee, &package, files);
        }
        for service in &mut file.service {
            for method in &mut service.method {
                fix(&mut method.input_type, &package, files);
                fix(&mut method.output_type, &package, files);
            }
        }
        for used in uses {
            if used != name && !file.dependency.contains(&used) {
                file.dependency.push(used);
            }
        }
        files.insert(name, file);
    }
}

/// The files received so far, by name, and the names already asked for.
#[derive(Default)]
struct Files {
    files: BTreeMap<String, FileDescriptorProto>,
    asked: HashSet<String>,
}

impl Files {
    fn absorb(&mut self, encoded: Vec<Vec<u8>>) -> Result<(), AttemptError> {
        for bytes in encoded {
            let file = FileDescriptorProto::decode(bytes.as_slice())
                .map_err(|e| AttemptError::Failed(format!("undecodable file descriptor: {e}")))?;
            self.files.entry(file.name().to_string()).or_insert(file);
            if self.files.len() > MAX_DESCRIPTOR_FILES {
                return Err(AttemptError::Failed(format!(
                    "the backend's descriptors span more than {MAX_DESCRIPTOR_FILES} files; refusing to load more"
                )));
            }
        }
        Ok(())
    }

    fn has(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    /// An import not received and not asked for yet (marked as asked), with a file importing it.
    fn next_missing(&mut self) -> Option<(String, String)> {
        let (name, importer) = self
            .files
            .values()
            .flat_map(|f| f.dependency.iter().map(move |d| (d, f.name())))
            .find(|(d, _)| !self.files.contains_key(*d) && !self.asked.contains(*d))
            .map(|(d, f)| (d.clone(), f.to_string()))?;
        self.asked.insert(name.clone());
        Some((name, importer))
    }

    /// Adds the well-known type `name` (`google/protobuf/….proto`) from the copy bundled with
    /// protox, for servers that cannot serve it (grpcurl does the same). The well-known types are
    /// frozen, so the bundled copy is the backend's copy.
    fn use_bundled(&mut self, name: &str) -> bool {
        if !name.starts_with("google/protobuf/") {
            return false;
        }
        match GoogleFileResolver::new().open_file(name) {
            Ok(file) => {
                tracing::debug!(file = name, "well-known type not served by the backend; using the bundled copy");
                self.files.insert(name.to_string(), file.file_descriptor_proto().clone());
                true
            }
            Err(_) => false,
        }
    }
}

/// Orders files so each comes after its dependencies.
fn topological(mut files: BTreeMap<String, FileDescriptorProto>) -> Vec<FileDescriptorProto> {
    let mut out = Vec::with_capacity(files.len());
    let mut done = HashSet::new();
    fn visit(
        name: &str,
        files: &mut BTreeMap<String, FileDescriptorProto>,
        done: &mut HashSet<String>,
        out: &mut Vec<FileDescriptorProto>,
    ) {
        if done.contains(name) {
            return;
        }
        done.insert(name.to_string());
        let Some(file) = files.remove(name) else { return };
        for dep in &file.dependency {
            visit(dep, files, done, out);
        }
        out.push(file);
    }
    let names: Vec<String> = files.keys().cloned().collect();
    for n in names {
        visit(&n, &mut files, &mut done, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    //! Discovery against in-process tonic servers on 127.0.0.1:0 serving reflection under one
    //! name, both, or none. (The other stacks, grpcio and grpc-js, are in the integration tests:
    //! tests/api/interop.rs.)

    use std::net::SocketAddr;

    use tokio::sync::oneshot;
    use tokio_stream::wrappers::TcpListenerStream;

    use super::*;

    const PROTO: &str = r#"
        syntax = "proto3";
        package probe.v1;
        import "google/protobuf/empty.proto";
        import "google/protobuf/struct.proto";
        import "google/protobuf/timestamp.proto";
        message Ping { google.protobuf.Timestamp at = 1; google.protobuf.Struct data = 2; }
        service Probe {
          rpc Ping(probe.v1.Ping) returns (google.protobuf.Empty);
        }
    "#;

    /// The probe service's files, with the well-known types it imports unless `without_wkt`.
    fn descriptors(without_wkt: bool) -> FileDescriptorSet {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("probe.proto"), PROTO).unwrap();
        let mut fds = protox::compile(["probe.proto"], [dir.path()]).unwrap();
        if without_wkt {
            fds.file.retain(|f| !f.name().starts_with("google/"));
        }
        fds
    }

    enum Reflection {
        V1,
        V1Alpha,
        None,
    }

    /// A tonic server with health and the given reflection; stops when the sender drops.
    async fn server(reflection: Reflection, fds: FileDescriptorSet) -> (SocketAddr, oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let (_, health) = tonic_health::server::health_reporter();
        let builder = tonic_reflection::server::Builder::configure()
            .register_file_descriptor_set(fds)
            .include_reflection_service(false);
        let router = tonic::transport::Server::builder().add_service(health);
        let router = match reflection {
            Reflection::V1 => router.add_service(builder.build_v1().unwrap()),
            Reflection::V1Alpha => router.add_service(builder.build_v1alpha().unwrap()),
            Reflection::None => router,
        };
        tokio::spawn(router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            stopped.await.ok();
        }));
        (addr, stop)
    }

    fn config(addr: SocketAddr) -> ServiceConfig {
        ServiceConfig::from_flag(&format!("probe=http://{addr}")).unwrap()
    }

    fn names(fds: &FileDescriptorSet) -> Vec<&str> {
        fds.file.iter().map(|f| f.name()).collect()
    }

    /// Every file comes after its imports and the set builds a descriptor pool.
    fn check_complete(fds: FileDescriptorSet) {
        let names = names(&fds);
        assert_eq!(names.last(), Some(&"probe.proto"), "{names:?}");
        for wkt in ["google/protobuf/empty.proto", "google/protobuf/struct.proto", "google/protobuf/timestamp.proto"] {
            assert!(names.contains(&wkt), "{wkt} missing from {names:?}");
        }
        let pool = prost_reflect::DescriptorPool::from_file_descriptor_set(fds).unwrap();
        assert!(pool.get_service_by_name("probe.v1.Probe").is_some());
    }

    #[tokio::test]
    async fn reflect_v1_with_transitive_imports() {
        let (addr, _stop) = server(Reflection::V1, descriptors(false)).await;
        let fds = reflect(&config(addr), Duration::from_secs(5)).await.unwrap();
        check_complete(fds);
    }

    #[tokio::test]
    async fn reflect_falls_back_to_v1alpha() {
        let (addr, _stop) = server(Reflection::V1Alpha, descriptors(false)).await;
        let fds = reflect(&config(addr), Duration::from_secs(5)).await.unwrap();
        check_complete(fds);
    }

    #[tokio::test]
    async fn reflect_uses_bundled_well_known_types_the_backend_cannot_serve() {
        let (addr, _stop) = server(Reflection::V1, descriptors(true)).await;
        let fds = reflect(&config(addr), Duration::from_secs(5)).await.unwrap();
        check_complete(fds);
    }

    #[tokio::test]
    async fn reflect_without_reflection_names_both_attempts() {
        let (addr, _stop) = server(Reflection::None, descriptors(false)).await;
        let err = reflect(&config(addr), Duration::from_secs(5)).await.unwrap_err().to_string();
        assert!(err.starts_with(&format!("backend `probe` (http://{addr}): gRPC server reflection failed")), "{err}");
        assert!(err.contains("grpc.reflection.v1: UNIMPLEMENTED"), "{err}");
        assert!(err.contains("grpc.reflection.v1alpha: UNIMPLEMENTED"), "{err}");
        assert!(err.contains("descriptor_set"), "{err}");
    }

    #[tokio::test]
    async fn reflect_names_a_configured_service_the_backend_lacks() {
        let (addr, _stop) = server(Reflection::V1, descriptors(false)).await;
        let mut s = config(addr);
        s.services = vec!["probe.v1.Nope".into()];
        let err = reflect(&s, Duration::from_secs(5)).await.unwrap_err().to_string();
        assert!(err.contains("does not serve `probe.v1.Nope` (it lists: probe.v1.Probe"), "{err}");
    }

    #[tokio::test]
    async fn reflect_reports_a_backend_that_is_not_there() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = reflect(&config(addr), Duration::from_secs(5)).await.unwrap_err().to_string();
        assert!(err.contains("backend `probe`") && err.contains("cannot connect"), "{err}");
    }

    /// What grpc-js's `@grpc/reflection` sends (seen from 1.0.4): one file per package with
    /// no imports and relative references, and its own `google_protobuf.proto`.
    #[test]
    fn link_repairs_grpc_js_descriptors() {
        use prost_types::{
            FieldDescriptorProto, MethodDescriptorProto, ServiceDescriptorProto,
            field_descriptor_proto::{Label, Type},
        };
        let field = |name: &str, number: i32, type_name: &str| FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(Label::Optional as i32),
            r#type: Some(Type::Message as i32),
            type_name: Some(type_name.into()),
            ..Default::default()
        };
        let message = |name: &str, fields: Vec<FieldDescriptorProto>| DescriptorProto {
            name: Some(name.into()),
            field: fields,
            ..Default::default()
        };
        let file = |name: &str, package: &str, messages: Vec<DescriptorProto>| FileDescriptorProto {
            name: Some(name.into()),
            package: Some(package.into()),
            syntax: Some("proto3".into()),
            message_type: messages,
            ..Default::default()
        };
        let mut app = file(
            "app_v1.proto",
            "app.v1",
            vec![message(
                "Req",
                vec![
                    field("at", 1, "google.protobuf.Timestamp"),
                    field("data", 2, "google.protobuf.Struct"),
                    field("money", 3, "common.v1.Money"),
                    field("inner", 4, "Inner"),
                ],
            )],
        );
        app.message_type[0].nested_type.push(message("Inner", vec![]));
        app.service.push(ServiceDescriptorProto {
            name: Some("App".into()),
            method: vec![MethodDescriptorProto {
                name: Some("Do".into()),
                input_type: Some(".app.v1.Req".into()),
                output_type: Some(".google.protobuf.Empty".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        let common = file("common_v1.proto", "common.v1", vec![message("Money", vec![])]);
        // grpc-js's own well-known types: camelCase fields, a map entry named `Fields`.
        let homemade = file("google_protobuf.proto", "google.protobuf", vec![message("Timestamp", vec![])]);
        let mut files: BTreeMap<String, FileDescriptorProto> =
            [app, common, homemade].into_iter().map(|f| (f.name().to_string(), f)).collect();

        link(&mut files);

        assert!(!files.contains_key("google_protobuf.proto"));
        let app = &files["app_v1.proto"];
        let mut deps = app.dependency.clone();
        deps.sort();
        assert_eq!(
            deps,
            [
                "common_v1.proto",
                "google/protobuf/empty.proto",
                "google/protobuf/struct.proto",
                "google/protobuf/timestamp.proto"
            ]
        );
        let refs: Vec<&str> = app.message_type[0].field.iter().map(|f| f.type_name()).collect();
        assert_eq!(
            refs,
            [".google.protobuf.Timestamp", ".google.protobuf.Struct", ".common.v1.Money", ".app.v1.Req.Inner"]
        );
        let pool =
            prost_reflect::DescriptorPool::from_file_descriptor_set(FileDescriptorSet { file: topological(files) })
                .unwrap();
        let req = pool.get_message_by_name("app.v1.Req").unwrap();
        assert_eq!(
            req.get_field_by_name("data").unwrap().kind().as_message().unwrap().full_name(),
            "google.protobuf.Struct"
        );
    }

    #[test]
    fn link_leaves_a_well_formed_set_alone() {
        let fds = descriptors(false);
        let mut files: BTreeMap<String, FileDescriptorProto> =
            fds.file.iter().cloned().map(|f| (f.name().to_string(), f)).collect();
        link(&mut files);
        let mut before = fds.file.clone();
        before.sort_by(|a, b| a.name().cmp(b.name()));
        assert_eq!(files.into_values().collect::<Vec<_>>(), before);
    }

    #[test]
    fn topological_puts_imports_first() {
        let file = |name: &str, deps: &[&str]| FileDescriptorProto {
            name: Some(name.into()),
            dependency: deps.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        };
        let files: BTreeMap<_, _> =
            [file("a.proto", &["c.proto", "b.proto"]), file("b.proto", &["c.proto"]), file("c.proto", &[])]
                .into_iter()
                .map(|f| (f.name().to_string(), f))
                .collect();
        let ordered: Vec<String> = topological(files).iter().map(|f| f.name().to_string()).collect();
        assert_eq!(ordered, ["c.proto", "b.proto", "a.proto"]);
    }
}
