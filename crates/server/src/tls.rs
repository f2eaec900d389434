//! TLS with rustls and its ring provider (no OpenSSL): client settings for `https://` backends
//! and the CLI (system roots or a CA file, an optional client certificate, an SNI/authority
//! override, ALPN `h2`), and Nexus's own listener, whose certificate is reloaded on SIGHUP or when
//! its files change, without dropping the connections already open.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, OnceLock, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    client::ResolvesClientCert,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

/// A TLS problem with a file or setting, worded as `key path: why`
/// (e.g. "tls.cert_file /x.pem: no certificate in the file").
#[derive(Debug, Clone, thiserror::Error)]
#[error("{key} {path}: {message}")]
pub struct TlsError {
    pub key: String,
    pub path: String,
    pub message: String,
}

fn file_error(key: &str, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError { key: key.to_string(), path: path.display().to_string(), message: message.into() }
}

/// The one crypto provider of the process: ring (what sqlx's `tls-rustls-ring-*` feature uses
/// too), installed as the process default on first use so that every rustls user agrees.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            // Fails only if another provider was installed first; ours is still used explicitly.
            let _ = rustls::crypto::ring::default_provider().install_default();
            Arc::new(rustls::crypto::ring::default_provider())
        })
        .clone()
}

/// The certificates of a PEM file (`key` names the setting in errors).
pub fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_error(key, path, format!("cannot read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_error(key, path, format!("cannot read: {e}")))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => file_error(key, path, "no private key in the file"),
        e => file_error(key, path, format!("not a PEM private key file: {e}")),
    })
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(
    (cert_key, cert_file): (&str, &Path),
    (key_key, key_file): (&str, &Path),
) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs(cert_key, cert_file)?;
    let key = read_key(key_key, key_file)?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            file_error(key_key, key_file, format!("the key does not match the certificate in {}", cert_file.display()))
        }
        e => file_error(key_key, key_file, format!("unusable private key: {e}")),
    })
}

/// The system's root certificates (read once per process). rustls-native-certs rather than
/// webpki-roots: an operator's own CAs installed in the system store (`update-ca-certificates`)
/// are trusted as by grpcurl, curl and every other tool on the machine, and the roots are updated
/// with the OS rather than with a Nexus release.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
                return Err(format!("no system root certificates found{why}: give a CA file"));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// What a TLS client needs: whom to trust, and what to show.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsOptions {
    /// PEM file of the CAs to trust instead of the system's roots, and the name of its setting.
    pub ca_file: Option<(String, PathBuf)>,
    /// Client certificate chain and key (mTLS), each with the name of its setting.
    pub identity: Option<((String, PathBuf), (String, PathBuf))>,
}

/// A rustls client configuration offering ALPN `h2` (gRPC).
pub fn client_config(options: &ClientTlsOptions) -> Result<Arc<ClientConfig>, String> {
    let roots = match &options.ca_file {
        Some((key, path)) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(key, path).map_err(|e| e.to_string())? {
                roots.add(cert).map_err(|e| format!("{key} {}: unusable CA certificate: {e}", path.display()))?;
            }
            Arc::new(roots)
        }
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    let mut config = match &options.identity {
        Some(((cert_key, cert_file), (key_key, key_file))) => {
            let identity = certified_key((cert_key, cert_file), (key_key, key_file)).map_err(|e| e.to_string())?;
            builder.with_client_cert_resolver(Arc::new(ClientIdentity(Arc::new(identity))))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Always offers the one configured client certificate (the key was checked against it).
#[derive(Debug)]
struct ClientIdentity(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientIdentity {
    fn resolve(&self, _issuers: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// TLS towards one server: the client configuration and the name its certificate must carry
/// (sent as SNI).
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl ClientTls {
    /// For `host`, or for `server_name` when given (an override of both SNI and the name checked).
    pub fn new(config: Arc<ClientConfig>, host: &str, server_name: Option<&str>) -> Result<Self, String> {
        let name = server_name.unwrap_or(host).trim_start_matches('[').trim_end_matches(']');
        let server_name =
            ServerName::try_from(name.to_string()).map_err(|e| format!("`{name}` is not a DNS name or IP: {e}"))?;
        Ok(Self { config, server_name })
    }
}

/// Opens a TCP connection to `address` (with TCP_NODELAY) and, with `tls`, a TLS session over it.
pub async fn dial(address: &str, tls: Option<&ClientTls>) -> Result<ClientStream, String> {
    let tcp = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let Some(tls) = tls else { return Ok(ClientStream::Plain(tcp)) };
    let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
        .connect(tls.server_name.clone(), tcp)
        .await
        .map_err(|e| format!("TLS handshake with {address}: {}", tls_io_error(&e)))?;
    Ok(ClientStream::Tls(Box::new(stream)))
}

/// The rustls error inside an I/O error, when there is one (it says why a handshake failed).
fn tls_io_error(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}

/// A client connection, plaintext or TLS.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for ClientStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A connector for tonic's `Endpoint::connect_with_connector`: dials the URI's host and port,
/// with TLS when given. tonic is built without its own TLS features, so an `https://` URI goes
/// through this connector untouched.
#[derive(Clone)]
pub struct Connector {
    tls: Option<ClientTls>,
}

impl Connector {
    pub fn new(tls: Option<ClientTls>) -> Self {
        Self { tls }
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<ClientStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| std::io::Error::other(format!("{uri} has no host")))?;
            let port = uri.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
            let stream = dial(&format!("{host}:{port}"), tls.as_ref()).await.map_err(std::io::Error::other)?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// Nexus's listener certificate: `[tls] cert_file` and `key_file`, served to every new
/// connection from an `Arc<CertifiedKey>` that a reload swaps (connections already open keep the
/// session they negotiated).
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    /// Loads the files; an error names the setting and the file.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let key = certified_key(("tls.cert_file", cert_file), ("tls.key_file", key_file))?;
        Ok(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// Reads the files again and serves them to new connections; on an error the certificate in
    /// use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = certified_key(("tls.cert_file", &self.cert_file), ("tls.key_file", &self.key_file))?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
        Ok(())
    }

    /// The server configuration: TLS 1.2 and 1.3, ALPN `h2` (native gRPC) and `http/1.1`
    /// (gRPC-Web, Connect JSON), the certificate from `self`.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| file_error("tls.cert_file", &self.cert_file, e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(cert_file = %self.cert_file.display(), "TLS certificate reloaded ({why})"),
            Err(e) => tracing::warn!("TLS certificate not reloaded ({why}), the current one stays: {e}"),
        }
    }

    /// Reloads on SIGHUP and whenever the files' contents change (looked at every `poll`), until
    /// `stop`. The SIGHUP handler is in place when this returns (before the future first runs),
    /// so a SIGHUP right after start reloads rather than ending the process.
    pub fn watch(
        self: Arc<Self>,
        poll: Duration,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        #[cfg(unix)]
        let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP (TLS certificates reload only on file changes): {e}");
                None
            }
        };
        #[cfg(not(unix))]
        let hangup = None::<()>;
        self.watch_with(hangup, poll, stop)
    }

    async fn watch_with(
        self: Arc<Self>,
        #[cfg(unix)] mut hangup: Option<tokio::signal::unix::Signal>,
        #[cfg(not(unix))] _hangup: Option<()>,
        poll: Duration,
        stop: CancellationToken,
    ) {
        let read = |this: &Self| (std::fs::read(&this.cert_file).ok(), std::fs::read(&this.key_file).ok());
        let mut seen = read(&self);
        loop {
            #[cfg(unix)]
            let signal = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let signal = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = signal => {
                    seen = read(&self);
                    self.reload_and_log("SIGHUP");
                }
                _ = tokio::time::sleep(poll) => {
                    let now = read(&self);
                    if now != seen {
                        seen = now;
                        self.reload_and_log("the files changed");
                    }
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}

/// Accepted connections after their TLS handshake, for `axum::serve`. Handshakes run on tasks of
/// their own (within 10 s), so a slow or silent client never holds up the next accept; a failed
/// handshake is logged and dropped.
pub struct TlsListener {
    accepted: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        // Ends when the listener (the receiver) is dropped.
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = tx.closed() => return,
                    r = listener.accept() => match r {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of file descriptors and the like: wait, as axum's own listener does.
                            tracing::debug!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!("cannot set TCP_NODELAY: {e}");
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {}", tls_io_error(&e)),
                        Err(_) => tracing::debug!(%peer, "TLS handshake not finished within 10s"),
                    }
                });
            }
        });
        Ok(Self { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept task ends only once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The TLS settings of a backend: `None` for `http://`; for `https://`, its CA file (or the
/// system's roots), client certificate and server name. Errors name the service and the key.
pub fn backend_tls(s: &crate::config::ServiceConfig) -> Result<Option<ClientTls>, String> {
    let uri: http::Uri = s.endpoint.parse().map_err(|e| format!("invalid endpoint {}: {e}", s.endpoint))?;
    if uri.scheme_str() != Some("https") {
        return Ok(None);
    }
    let host = uri.host().ok_or_else(|| format!("endpoint {} has no host", s.endpoint))?;
    let named = |key: &str| format!("service `{}` {key}", s.name);
    let options = ClientTlsOptions {
        ca_file: s.ca_file.clone().map(|p| (named("ca_file"), p)),
        identity: match (&s.cert_file, &s.key_file) {
            (Some(cert), Some(key)) => Some(((named("cert_file"), cert.clone()), (named("key_file"), key.clone()))),
            _ => None,
        },
    };
    let config = client_config(&options)?;
    ClientTls::new(config, host, s.tls_server_name.as_deref())
        .map(Some)
        .map_err(|e| format!("{}: {e}", named("tls_server_name")))
}
