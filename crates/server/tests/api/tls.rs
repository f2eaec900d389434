//! TLS everywhere, with certificates made here by rcgen (nothing checked in that expires):
//! `https://` backends (a CA file, an SNI override, mTLS), Nexus's own TLS listener serving native
//! gRPC, gRPC-Web and Connect JSON on one port, its certificate reloaded when the files change
//! while open connections keep working, and PostgreSQL with `sslmode`.

use std::{net::SocketAddr, path::Path, pin::Pin, sync::Arc, time::Duration};

use anyhow::{Context, Result, anyhow, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use nexus_core::pb;
use nexus_demo::{DemoHandle, DemoOptions, DemoServer, method};
use nexus_server::{
    Config, Nexus, ServiceConfig,
    proto::nexus_service_client::NexusServiceClient,
    tls::{ClientTls, Connector},
};
use prost::Message;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::common::{check_user_creation_output, execute_request, pattern_file, register, to_json, unique_email};

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as PEM.
struct Issued {
    cert_pem: String,
    key_pem: String,
}

impl Issued {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()).collect::<Result<_, _>>().unwrap_or_default()
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).context("key PEM")
    }

    /// Writes `<name>.pem` and `<name>.key` into `dir`.
    fn write(&self, dir: &Path, name: &str) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
        let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&cert, &self.cert_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

impl Ca {
    fn new(name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key)?;
        Ok(Self { cert, key })
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    fn server(&self, names: &[&str], cn: &str) -> Result<Issued> {
        self.issue(names, cn, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self, cn: &str) -> Result<Issued> {
        self.issue(&[], cn, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, names: &[&str], cn: &str, usage: ExtendedKeyUsagePurpose) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// A TLS stream the demo's tonic server accepts (tonic knows TLS streams only with its own TLS
/// features, which Nexus does not use).
struct TlsIo(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The demo services over TLS with `identity`; with `client_ca`, a client certificate from that
/// CA is required (mTLS).
async fn tls_demo(identity: &Issued, client_ca: Option<&Ca>) -> Result<(SocketAddr, DemoHandle, DemoServer)> {
    let provider = nexus_server::tls::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.der())?;
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(identity.chain(), identity.key()?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // One handshake at a time is enough here; a failed one (no client certificate) is skipped.
    let incoming = futures::stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
        loop {
            let (tcp, _) = listener.accept().await.ok()?;
            if let Ok(tls) = acceptor.accept(tcp).await {
                return Some((Ok::<_, std::io::Error>(TlsIo(tls)), (listener, acceptor)));
            }
        }
    });
    let (handle, server) = nexus_demo::spawn_incoming(Box::pin(incoming), DemoOptions::default())?;
    Ok((addr, handle, server))
}

fn config(services: Vec<ServiceConfig>) -> Config {
    Config { listen: SocketAddr::from(([127, 0, 0, 1], 0)), in_memory: true, services, ..Config::default() }
}

async fn client_of(nexus: &Nexus) -> Result<NexusServiceClient<tonic::transport::Channel>> {
    Ok(NexusServiceClient::connect(format!("http://{}", nexus.local_addr())).await?)
}

/// Registers user_creation and runs it once; the output must be complete.
async fn run_user_creation(client: &mut NexusServiceClient<tonic::transport::Channel>) -> Result<()> {
    register(client, pattern_file("user_creation")?).await?;
    let input = json!({"email": unique_email("tls"), "name": "Tess", "avatar_url": "https://example.com/t.png"});
    let out = client.execute_pattern(execute_request("user_creation", input)?).await?.into_inner();
    check_user_creation_output(&to_json(out.output.as_ref().ok_or_else(|| anyhow!("no output"))?))
}

fn start_error(r: Result<Nexus, nexus_server::StartError>) -> Result<String> {
    match r {
        Ok(_) => Err(anyhow!("nexus started")),
        Err(e) => Ok(e.to_string()),
    }
}

/// A backend over TLS whose certificate names `backend.internal` only, reached at 127.0.0.1:
/// discovered and called through a pattern with the test's CA and `tls_server_name`; without the
/// override the name check fails, clearly.
#[tokio::test]
async fn tls_https_backend_with_a_ca_file_and_a_server_name() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("test backend CA")?;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem())?;
    let (addr, demo, _server) = tls_demo(&ca.server(&["backend.internal"], "backend")?, None).await?;
    let service = ServiceConfig {
        ca_file: Some(ca_file.clone()),
        tls_server_name: Some("backend.internal".into()),
        ..ServiceConfig::from_flag(&format!("secure=https://127.0.0.1:{}", addr.port()))?
    };
    let nexus = Nexus::start(config(vec![service.clone()])).await.context("starting nexus")?;
    let mut client = client_of(&nexus).await?;
    run_user_creation(&mut client).await?;
    ensure!(demo.calls(method::CREATE_USER) == 1, "CreateUser calls {}", demo.calls(method::CREATE_USER));
    nexus.shutdown(Duration::from_secs(2)).await;

    let without_name = ServiceConfig { tls_server_name: None, ..service.clone() };
    let e = start_error(Nexus::start(config(vec![without_name])).await)?;
    ensure!(e.contains("backend `secure`") && e.contains("certificate"), "{e}");

    let system_roots = ServiceConfig { ca_file: None, ..service };
    let e = start_error(Nexus::start(config(vec![system_roots])).await)?;
    ensure!(e.contains("certificate"), "{e}");
    Ok(())
}

/// A backend that requires a client certificate: without one Nexus does not start and says why;
/// with one from the backend's CA, patterns run.
#[tokio::test]
async fn tls_mtls_backend_requires_the_client_certificate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("test mTLS CA")?;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem())?;
    let (addr, demo, _server) = tls_demo(&ca.server(&["localhost"], "backend")?, Some(&ca)).await?;
    let plain = ServiceConfig {
        ca_file: Some(ca_file),
        ..ServiceConfig::from_flag(&format!("mtls=https://localhost:{}", addr.port()))?
    };
    let mut quick = config(vec![plain.clone()]);
    quick.discovery_timeout = Duration::from_secs(3);
    let e = start_error(Nexus::start(quick).await)?;
    ensure!(e.contains("backend `mtls`") && e.contains("requires a TLS client certificate: set cert_file"), "{e}");

    let (cert_file, key_file) = ca.client("nexus")?.write(dir.path(), "client")?;
    let with_cert = ServiceConfig { cert_file: Some(cert_file), key_file: Some(key_file.clone()), ..plain.clone() };
    let nexus = Nexus::start(config(vec![with_cert])).await.context("starting nexus with a client certificate")?;
    let mut client = client_of(&nexus).await?;
    run_user_creation(&mut client).await?;
    ensure!(demo.calls(method::CREATE_USER) == 1, "CreateUser calls {}", demo.calls(method::CREATE_USER));
    nexus.shutdown(Duration::from_secs(2)).await;

    // A key that is not the certificate's: refused at start, naming the file.
    let (other_cert, _) = ca.client("other")?.write(dir.path(), "other")?;
    let mismatched = ServiceConfig { cert_file: Some(other_cert), key_file: Some(key_file), ..plain };
    let e = start_error(Nexus::start(config(vec![mismatched])).await)?;
    ensure!(e.contains("key_file") && e.contains("does not match"), "{e}");
    Ok(())
}

/// A client configuration trusting `ca`, offering `alpn`.
fn client_config(ca: &Ca, alpn: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der())?;
    let mut config = rustls::ClientConfig::builder_with_provider(nexus_server::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// Native gRPC over TLS to Nexus (ALPN h2), trusting `ca`.
async fn grpc_over_tls(ca: &Ca, addr: SocketAddr) -> Result<NexusServiceClient<tonic::transport::Channel>> {
    let tls = ClientTls::new(client_config(ca, b"h2")?, "localhost", None).map_err(|e| anyhow!(e))?;
    let channel = tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", addr.port()))?
        .connect_with_connector(Connector::new(Some(tls)))
        .await
        .context("connecting over TLS")?;
    Ok(NexusServiceClient::new(channel))
}

/// A TLS session to Nexus offering `alpn`; returns the stream and the certificate it was shown.
async fn tls_session(
    ca: &Ca,
    addr: SocketAddr,
    alpn: &[u8],
) -> Result<(tokio_rustls::client::TlsStream<tokio::net::TcpStream>, CertificateDer<'static>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost")?;
    let stream = tokio_rustls::TlsConnector::from(client_config(ca, alpn)?).connect(name, tcp).await?;
    let cert =
        stream.get_ref().1.peer_certificates().and_then(|c| c.first().cloned()).ok_or_else(|| anyhow!("no cert"))?;
    Ok((stream, cert))
}

/// One HTTP/1.1 POST over TLS (ALPN http/1.1), as a browser would send gRPC-Web or Connect.
async fn https1_post(
    ca: &Ca,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<http::Response<Bytes>> {
    let (stream, _) = tls_session(ca, addr, b"http/1.1").await?;
    ensure!(stream.get_ref().1.alpn_protocol() == Some(b"http/1.1"), "ALPN {:?}", stream.get_ref().1.alpn_protocol());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let mut request = http::Request::post(path).header(http::header::HOST, format!("localhost:{}", addr.port()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender.send_request(request.body(Full::new(body))?).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    connection.abort();
    Ok(http::Response::from_parts(parts, body))
}

/// Starts Nexus on TLS with `identity` (written into `dir`), in front of the plaintext demo.
async fn tls_nexus(
    dir: &Path,
    identity: &Issued,
    demo: SocketAddr,
) -> Result<(Nexus, std::path::PathBuf, std::path::PathBuf)> {
    let (cert_file, key_file) = identity.write(dir, "nexus")?;
    let mut config = config(vec![ServiceConfig::from_flag(&format!("demo=http://{demo}"))?]);
    config.tls = nexus_server::TlsConfig { cert_file: Some(cert_file.clone()), key_file: Some(key_file.clone()) };
    let nexus = Nexus::start(config).await.context("starting nexus on TLS")?;
    ensure!(nexus.scheme() == "https");
    Ok((nexus, cert_file, key_file))
}

/// Native gRPC (h2), gRPC-Web and Connect JSON (HTTP/1.1) on the one TLS port.
#[tokio::test]
async fn tls_listener_serves_grpc_grpc_web_and_connect_on_one_port() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("test nexus CA")?;
    let (demo_addr, _demo, _demo_server) = nexus_demo::spawn(DemoOptions::default()).await?;
    let (nexus, _, _) = tls_nexus(dir.path(), &ca.server(&["localhost"], "nexus")?, demo_addr).await?;
    let addr = nexus.local_addr();

    let mut grpc = grpc_over_tls(&ca, addr).await?;
    register(&mut grpc, pattern_file("user_creation")?).await?;
    let input = json!({"email": unique_email("tls-grpc"), "name": "G", "avatar_url": "https://example.com/g.png"});
    let out = grpc.execute_pattern(execute_request("user_creation", input)?).await?.into_inner();
    check_user_creation_output(&to_json(out.output.as_ref().ok_or_else(|| anyhow!("no output"))?))?;

    let input = json!({"email": unique_email("tls-connect"), "name": "C", "avatar_url": "https://example.com/c.png"});
    let response = https1_post(
        &ca,
        addr,
        "/nexus.v1.NexusService/ExecutePattern",
        &[("content-type", "application/json"), ("connect-protocol-version", "1")],
        Bytes::from(json!({"patternName": "user_creation", "input": input}).to_string()),
    )
    .await?;
    ensure!(response.status() == http::StatusCode::OK, "Connect: HTTP {} {:?}", response.status(), response.body());
    let body: serde_json::Value = serde_json::from_slice(response.body())?;
    check_user_creation_output(&body["output"])?;

    let request = execute_request(
        "user_creation",
        json!({"email": unique_email("tls-web"), "name": "W", "avatar_url": "https://example.com/w.png"}),
    )?;
    let response = https1_post(
        &ca,
        addr,
        "/nexus.v1.NexusService/ExecutePattern",
        &[("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1")],
        crate::transports::frame(0, &request.encode_to_vec()),
    )
    .await?;
    ensure!(response.status() == http::StatusCode::OK, "gRPC-Web: HTTP {}", response.status());
    let body = crate::transports::parse_grpc_web(response.body().clone())?;
    ensure!(crate::transports::grpc_web_status(&response, &body).as_deref() == Some("0"), "{:?}", body.trailers);
    let decoded = pb::ExecutePatternResponse::decode(body.messages.first().cloned().unwrap_or_default())?;
    check_user_creation_output(&to_json(decoded.output.as_ref().ok_or_else(|| anyhow!("no output"))?))?;

    // Plaintext to the TLS port gets nowhere.
    let plain = NexusServiceClient::connect(format!("http://{addr}")).await;
    if let Ok(mut plain) = plain {
        ensure!(plain.list_services(pb::ListServicesRequest::default()).await.is_err(), "plaintext call answered");
    }
    nexus.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

/// New files are picked up by new connections; a connection opened before keeps working; a bad
/// file leaves the certificate in use.
#[tokio::test]
async fn tls_listener_reloads_its_certificate_without_dropping_connections() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("test nexus CA")?;
    let (demo_addr, _demo, _demo_server) = nexus_demo::spawn(DemoOptions::default()).await?;
    let first = ca.server(&["localhost"], "first")?;
    let (nexus, cert_file, key_file) = tls_nexus(dir.path(), &first, demo_addr).await?;
    let addr = nexus.local_addr();
    let (_, seen) = tls_session(&ca, addr, b"h2").await?;
    ensure!(seen == first.chain()[0], "not the first certificate");
    let mut old = grpc_over_tls(&ca, addr).await?;
    old.list_services(pb::ListServicesRequest::default()).await?;

    // Key first, then certificate: in between the pair does not match, which is refused and
    // logged; the next look at the files finds them consistent.
    let second = ca.server(&["localhost"], "second")?;
    std::fs::write(&key_file, &second.key_pem)?;
    std::fs::write(&cert_file, &second.cert_pem)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, seen) = tls_session(&ca, addr, b"h2").await?;
        if seen == second.chain()[0] {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "the new certificate was not served within 10s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection from before the reload still works.
    old.list_services(pb::ListServicesRequest::default()).await.context("the old connection after the reload")?;

    // A broken certificate file: the second certificate stays.
    std::fs::write(&cert_file, "not a certificate")?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, seen) = tls_session(&ca, addr, b"h2").await?;
    ensure!(seen == second.chain()[0], "a bad file replaced the certificate in use");
    let mut fresh = grpc_over_tls(&ca, addr).await?;
    fresh.list_services(pb::ListServicesRequest::default()).await?;
    nexus.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

/// Start-up errors for the listener's files name the key and the file.
#[tokio::test]
async fn tls_listener_file_errors_name_the_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "")?;
    let ca = Ca::new("ca")?;
    let (_, key_file) = ca.server(&["localhost"], "x")?.write(dir.path(), "x")?;
    let mut c = config(Vec::new());
    c.tls = nexus_server::TlsConfig { cert_file: Some(empty.clone()), key_file: Some(key_file) };
    let e = start_error(Nexus::start(c).await)?;
    ensure!(e.contains(&format!("tls.cert_file {}: no certificate in the file", empty.display())), "{e}");
    Ok(())
}

/// A PostgreSQL stand-in that answers every SSLRequest with `N` (no TLS here), as a server with
/// `ssl = off` does.
async fn postgres_without_tls() -> Result<SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            if tcp.read_exact(&mut request).await.is_ok() {
                let _ = tcp.write_all(b"N").await;
            }
        }
    });
    Ok(addr)
}

/// PostgreSQL over TLS through sqlx's rustls (ring, system roots): `sslmode=require` against a
/// server without TLS fails naming TLS; `disable` and `prefer` still work. When the local test
/// server serves TLS (`ssl = on`, Debian's self-signed `ssl-cert-snakeoil.pem` for `localhost`),
/// `require` connects, `verify-full` without its CA fails on the certificate, and `verify-full`
/// with `sslrootcert` pointing at that certificate connects.
#[tokio::test]
async fn tls_postgres_sslmode() -> Result<()> {
    use sqlx::Connection;
    let url =
        std::env::var("NEXUS_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let with = |url: &str, params: &str| format!("{url}{}{params}", if url.contains('?') { '&' } else { '?' });
    let schema = format!("nexus_test_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&url).await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut admin).await?;
    let server_tls =
        sqlx::query_scalar::<_, String>("SHOW ssl").fetch_one(&mut admin).await.ok().as_deref() == Some("on");
    let store = |url: String| {
        let mut c = config(Vec::new());
        c.in_memory = false;
        c.store = nexus_server::StoreConfig { url: Some(url), schema: Some(schema.clone()), ..Default::default() };
        c
    };
    let result = async {
        let fake = postgres_without_tls().await?;
        let e = start_error(Nexus::start(store(format!("postgres://postgres@{fake}/test?sslmode=require"))).await)?;
        ensure!(e.contains("TLS") && e.contains("server does not support TLS"), "{e}");

        for mode in ["sslmode=disable", "sslmode=prefer"] {
            let nexus = Nexus::start(store(with(&url, mode))).await.with_context(|| mode.to_string())?;
            nexus.shutdown(Duration::from_secs(2)).await;
        }
        if server_tls {
            let nexus = Nexus::start(store(with(&url, "sslmode=require"))).await.context("sslmode=require")?;
            nexus.shutdown(Duration::from_secs(2)).await;
            let e = start_error(Nexus::start(store(with(&url, "sslmode=verify-full"))).await)?;
            ensure!(e.contains("certificate"), "{e}");
            let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
            if Path::new(snakeoil).exists() {
                let local = url.replace("@127.0.0.1", "@localhost");
                let verified = with(&local, &format!("sslmode=verify-full&sslrootcert={snakeoil}"));
                let nexus = Nexus::start(store(verified)).await.context("sslmode=verify-full with sslrootcert")?;
                nexus.shutdown(Duration::from_secs(2)).await;
            }
        }
        Ok(())
    }
    .await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut admin).await?;
    result
}
