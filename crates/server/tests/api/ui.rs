//! The web UI on the one port: `/` leads to it, the embedded bundle is served with the right
//! types, caching and security headers, nothing outside it is reachable, and the API it calls
//! (gRPC-Web on the same origin) is unaffected by the routes.

use std::net::SocketAddr;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST, LOCATION};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::common::Harness;

async fn http1_get(addr: SocketAddr, path: &str) -> Result<http::Response<Bytes>> {
    http1_get_with(addr, path, &[]).await
}

pub(crate) async fn http1_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<http::Response<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.context("connecting")?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.context("HTTP/1.1 handshake")?;
    let connection = tokio::spawn(connection);
    let mut request = http::Request::get(path).header(HOST, addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await.context("sending the request")?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.context("reading the response body")?.to_bytes();
    drop(sender);
    connection.abort();
    Ok(http::Response::from_parts(parts, body))
}

fn header(r: &http::Response<Bytes>, name: http::header::HeaderName) -> &str {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

#[tokio::test]
async fn the_ui_is_served_from_the_binary_on_the_api_port() -> Result<()> {
    let h = Harness::start().await?;

    let root = http1_get(h.addr, "/").await?;
    ensure!(root.status().is_redirection(), "GET / answered {}", root.status());
    ensure!(header(&root, LOCATION) == "/ui/", "GET / redirects to {:?}", header(&root, LOCATION));

    let index = http1_get(h.addr, "/ui/").await?;
    ensure!(index.status() == 200, "GET /ui/ answered {}", index.status());
    ensure!(header(&index, CONTENT_TYPE).starts_with("text/html"), "{:?}", index.headers());
    ensure!(header(&index, CACHE_CONTROL) == "no-cache", "{:?}", index.headers());
    ensure!(header(&index, CONTENT_SECURITY_POLICY).contains("default-src 'self'"), "{:?}", index.headers());
    let html = std::str::from_utf8(index.body())?;
    ensure!(html.contains("<div id=\"root\">"), "{html}");

    // Every script the page loads is served as JavaScript, cacheable for good (hashed names).
    let scripts: Vec<&str> =
        html.split("src=\"").skip(1).filter_map(|s| s.split('"').next()).filter(|s| s.ends_with(".js")).collect();
    ensure!(!scripts.is_empty(), "no script in {html}");
    for src in scripts {
        let js = http1_get(h.addr, src).await?;
        ensure!(js.status() == 200, "GET {src} answered {}", js.status());
        ensure!(header(&js, CONTENT_TYPE).starts_with("text/javascript"), "{src}: {:?}", js.headers());
        ensure!(header(&js, CACHE_CONTROL).contains("immutable"), "{src}: {:?}", js.headers());
        ensure!(js.body().len() > 1000, "{src} is {} bytes", js.body().len());
        // Compressed for clients that accept it, and the same bytes once inflated.
        let gz = http1_get_with(h.addr, src, &[("accept-encoding", "br, gzip;q=0.9")]).await?;
        ensure!(header(&gz, CONTENT_ENCODING) == "gzip", "{src}: {:?}", gz.headers());
        ensure!(gz.body().len() < js.body().len(), "{src}: gzip {} ≥ plain {}", gz.body().len(), js.body().len());
        let mut inflated = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz.body()[..]), &mut inflated)?;
        ensure!(inflated == js.body()[..], "{src}: the gzipped body inflates to something else");
        let refused = http1_get_with(h.addr, src, &[("accept-encoding", "gzip;q=0")]).await?;
        ensure!(header(&refused, CONTENT_ENCODING).is_empty(), "{src}: {:?}", refused.headers());
    }

    for missing in ["/ui/assets/nope.js", "/ui/../Cargo.toml", "/ui/%2e%2e/Cargo.toml", "/ui//etc/passwd"] {
        let r = http1_get(h.addr, missing).await?;
        ensure!(r.status() == 404, "GET {missing} answered {}", r.status());
    }
    h.stop().await;
    Ok(())
}
