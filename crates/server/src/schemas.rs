//! JSON Schemas for editors and tools, on the API port:
//!
//! - `GET /schema/pattern.json`: the pattern document, generated from `nexus.v1.Pattern`
//!   ([`nexus_core::schema::pattern_document_schema`]; public — it is the API's own contract);
//! - `GET /schema/actions/{package.Service/Method}.json`: an action's input (its `with:` block),
//!   from the catalog's real descriptors — enums by name and number, `oneof`s as "at most one",
//!   the protos' comments as descriptions. It names what backends offer, so with
//!   `--require-auth` it needs a credential like DescribeAction.

use std::sync::{Arc, LazyLock};

use axum::{
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, StatusCode, header};

use crate::{auth::Authenticator, registry::Registry};

pub const PATTERN_PATH: &str = "/schema/pattern.json";
pub const ACTIONS_PATH: &str = "/schema/actions/{*name}";

#[derive(Clone)]
pub struct Endpoint {
    pub registry: Arc<Registry>,
    pub auth: Arc<Authenticator>,
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/schema+json"), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    let body = serde_json::json!({"error": message}).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /schema/pattern.json`.
pub async fn pattern() -> Response {
    static SCHEMA: LazyLock<String> = LazyLock::new(|| {
        serde_json::to_string_pretty(&nexus_core::schema::pattern_document_schema()).unwrap_or_default()
    });
    json(StatusCode::OK, SCHEMA.clone())
}

/// `GET /schema/actions/{name}.json`.
pub async fn action(State(endpoint): State<Endpoint>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if let Err(e) = endpoint.auth.authenticate(&headers).await {
        return error(StatusCode::UNAUTHORIZED, e.to_string());
    }
    let Some(name) = name.strip_suffix(".json") else {
        return error(
            StatusCode::NOT_FOUND,
            format!("`/schema/actions/{name}`: ask for `/schema/actions/{name}.json` (package.Service/Method.json)"),
        );
    };
    let catalog = endpoint.registry.catalog();
    match catalog.action(name) {
        Some(action) => json(
            StatusCode::OK,
            serde_json::to_string_pretty(&nexus_core::schema::served_message_schema(&action.method.input()))
                .unwrap_or_default(),
        ),
        None => {
            let hint = nexus_core::diagnostic::suggest(name, catalog.action_names())
                .map(|s| format!(" Did you mean `{s}`?"))
                .unwrap_or_default();
            // The name is the caller's input: echo it cut short.
            let shown: String = name.chars().take(200).collect();
            error(StatusCode::NOT_FOUND, format!("no action `{shown}` in the catalog.{hint}"))
        }
    }
}
