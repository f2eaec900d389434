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
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use include_dir::{Dir, include_dir};
use std::{borrow::Cow, path::PathBuf, sync::LazyLock};

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

/// `GET /ui/`.
pub async fn index() -> Response {
    file("index.html")
}

/// `GET /ui/{*path}`.
pub async fn asset(Path(path): Path<String>) -> Response {
    file(if path.is_empty() { "index.html" } else { &path })
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

fn file(path: &str) -> Response {
    let Some(bytes) = contents(path) else {
        return (StatusCode::NOT_FOUND, format!("no UI file `{path}`")).into_response();
    };
    let cache = if path.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
    let mut res = bytes.into_response();
    let h = res.headers_mut();
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
