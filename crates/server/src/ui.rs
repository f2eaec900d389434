//! The web composer: the Vite bundle built from `ui/` (committed in `ui/dist`), embedded in the
//! binary and served under `/ui/` on the one port, so `nexus demo` needs no Node step.
//!
//! The UI is a client of the public API like any other (gRPC-Web on the same origin); this module
//! only serves files. Hashed assets are immutable; `index.html` is revalidated every time so a new
//! binary's UI is picked up at once.
//!
//! `NEXUS_UI_DIR` (for working on the UI: `npm --prefix ui run build -- --watch`) serves the files
//! of that directory instead of the embedded ones, read at each request.

use axum::{
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use include_dir::{Dir, include_dir};
use std::{borrow::Cow, collections::HashMap, io::Write, path::PathBuf, sync::LazyLock};

static DIST: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../ui/dist");

/// `NEXUS_UI_DIR`, when set: a directory served instead of the embedded bundle.
static DISK: LazyLock<Option<PathBuf>> = LazyLock::new(|| std::env::var_os("NEXUS_UI_DIR").map(PathBuf::from));

/// Where the UI is served.
pub const PATH: &str = "/ui/";

/// The page security policy: everything from this origin; inline styles only because the canvas
/// library positions nodes with them.
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `GET /` → the UI.
pub async fn root() -> Redirect {
    Redirect::to(PATH)
}

/// The embedded text files gzipped, compressed once on the first request that accepts gzip (the
/// bundle is a few hundred KB of JavaScript; compressed it is about a third).
static GZIPPED: LazyLock<HashMap<&'static str, Vec<u8>>> = LazyLock::new(|| {
    let mut out = HashMap::new();
    let mut stack = vec![&DIST];
    while let Some(dir) = stack.pop() {
        stack.extend(dir.dirs());
        for f in dir.files() {
            let Some(path) = f.path().to_str() else { continue };
            if !matches!(path.rsplit_once('.').map(|(_, e)| e), Some("js" | "css" | "html" | "svg" | "json")) {
                continue;
            }
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            if gz.write_all(f.contents()).is_ok()
                && let Ok(bytes) = gz.finish()
            {
                out.insert(path, bytes);
            }
        }
    }
    out
});

/// `GET /ui/`.
pub async fn index(headers: HeaderMap) -> Response {
    file("index.html", &headers)
}

/// `GET /ui/{*path}`.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    file(if path.is_empty() { "index.html" } else { &path }, &headers)
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |e| {
            let mut parts = e.split(';');
            parts.next().is_some_and(|n| n.trim().eq_ignore_ascii_case("gzip"))
                && !parts.any(|p| {
                    p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()).is_some_and(|q| q <= 0.0)
                })
        },
    )
}

/// The bytes of `path` (relative, `/`-separated) from the disk override or the embedded bundle.
fn contents(path: &str) -> Option<Cow<'static, [u8]>> {
    match DISK.as_ref() {
        // Only plain relative names: nothing outside the directory is ever read.
        Some(dir) => {
            if path.split('/').any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\\')) {
                return None;
            }
            std::fs::read(dir.join(path)).ok().map(Cow::Owned)
        }
        None => DIST.get_file(path).map(|f| Cow::Borrowed(f.contents())),
    }
}

fn file(path: &str, request: &HeaderMap) -> Response {
    let Some(bytes) = contents(path) else {
        return (StatusCode::NOT_FOUND, format!("no UI file `{path}`")).into_response();
    };
    let cache = if path.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
    let gzipped = (DISK.is_none() && accepts_gzip(request)).then(|| GZIPPED.get(path)).flatten();
    let mut res = match gzipped {
        Some(gz) => {
            let mut res = gz.as_slice().into_response();
            res.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            res
        }
        None => bytes.into_response(),
    };
    let h = res.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    res
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_is_embedded_and_its_index_references_only_embedded_assets() {
        let index = std::str::from_utf8(DIST.get_file("index.html").expect("index.html").contents()).expect("utf-8");
        let mut seen = 0;
        for part in index.split("/ui/assets/").skip(1) {
            let name = part.split(['"', '\'']).next().unwrap_or_default();
            assert!(DIST.get_file(format!("assets/{name}")).is_some(), "index.html names missing asset {name}");
            seen += 1;
        }
        assert!(seen >= 1, "index.html references no asset: {index}");
    }
}
