//! Building the catalog: each backend's descriptors come from gRPC server reflection, a descriptor
//! set file, or `.proto` files compiled in-process (no protoc needed).

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use nexus_core::{Catalog, catalog::DescriptorSource};
use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::transport::Endpoint;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
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

/// Fetches every configured backend's descriptors and builds the catalog.
pub async fn build_catalog(services: &[ServiceConfig], timeout: Duration) -> Result<Catalog, DiscoveryError> {
    let fetched = futures::future::join_all(services.iter().map(|s| descriptors_of(s, timeout))).await;
    let mut builder = Catalog::builder();
    for (s, result) in services.iter().zip(fetched) {
        let (fds, source) = result?;
        builder.add_backend(&s.name, &s.endpoint, source, fds, &s.services)?;
    }
    Ok(builder.build())
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
    match tokio::time::timeout(timeout, reflect(s)).await {
        Ok(r) => r.map(|fds| (fds, DescriptorSource::Reflection)),
        Err(_) => Err(backend_error(
            s,
            format!(
                "no answer to gRPC server reflection within {timeout:?}; is the backend running and does it serve reflection?"
            ),
        )),
    }
}

/// Asks the backend, over gRPC server reflection (v1), for its services and their files.
async fn reflect(s: &ServiceConfig) -> Result<FileDescriptorSet, DiscoveryError> {
    let channel = Endpoint::from_shared(s.endpoint.clone())
        .map_err(|e| backend_error(s, format!("invalid endpoint: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| backend_error(s, format!("cannot connect: {e}")))?;
    let mut client = ServerReflectionClient::new(channel);
    let (tx, rx) = mpsc::channel(16);
    let mut responses = client
        .server_reflection_info(ReceiverStream::new(rx))
        .await
        .map_err(|e| {
            backend_error(s, format!("reflection call failed: {} (does it serve grpc.reflection.v1?)", e.message()))
        })?
        .into_inner();
    let mut ask = async |req: MessageRequest| -> Result<MessageResponse, DiscoveryError> {
        tx.send(ServerReflectionRequest { host: String::new(), message_request: Some(req) })
            .await
            .map_err(|_| backend_error(s, "reflection stream closed"))?;
        match responses.next().await {
            Some(Ok(r)) => match r.message_response {
                Some(MessageResponse::ErrorResponse(e)) => {
                    Err(backend_error(s, format!("reflection error {}: {}", e.error_code, e.error_message)))
                }
                Some(other) => Ok(other),
                None => Err(backend_error(s, "empty reflection response")),
            },
            Some(Err(e)) => Err(backend_error(s, format!("reflection failed: {}", e.message()))),
            None => Err(backend_error(s, "reflection stream ended early")),
        }
    };

    let services: Vec<String> = if s.services.is_empty() {
        match ask(MessageRequest::ListServices(String::new())).await? {
            MessageResponse::ListServicesResponse(l) => l
                .service
                .into_iter()
                .map(|s| s.name)
                .filter(|n| !n.starts_with("grpc.reflection.") && !n.starts_with("grpc.health."))
                .collect(),
            _ => return Err(backend_error(s, "unexpected answer to list_services")),
        }
    } else {
        s.services.clone()
    };
    if services.is_empty() {
        return Err(backend_error(s, "the backend lists no services"));
    }

    let mut files: BTreeMap<String, FileDescriptorProto> = BTreeMap::new();
    let absorb =
        |resp: MessageResponse, files: &mut BTreeMap<String, FileDescriptorProto>| -> Result<(), DiscoveryError> {
            let MessageResponse::FileDescriptorResponse(fdr) = resp else {
                return Err(backend_error(s, "unexpected reflection answer"));
            };
            for bytes in fdr.file_descriptor_proto {
                let file = FileDescriptorProto::decode(bytes.as_slice())
                    .map_err(|e| backend_error(s, format!("undecodable file descriptor: {e}")))?;
                files.insert(file.name().to_string(), file);
            }
            Ok(())
        };
    for service in &services {
        let resp = ask(MessageRequest::FileContainingSymbol(service.clone())).await?;
        absorb(resp, &mut files)?;
    }
    // Servers usually send transitive dependencies along; fetch whatever is still missing.
    loop {
        let missing: Vec<String> = files
            .values()
            .flat_map(|f| f.dependency.iter().cloned())
            .filter(|d| !files.contains_key(d))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            break;
        }
        for name in missing {
            let resp = ask(MessageRequest::FileByFilename(name)).await?;
            absorb(resp, &mut files)?;
        }
    }
    Ok(FileDescriptorSet { file: topological(files) })
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
