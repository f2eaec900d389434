//! GeneratePattern's optional LLM provider: an OpenAI-compatible `POST …/chat/completions`.
//!
//! The model is given the goal and the part of the catalog that matters (actions with their
//! input and output fields and comments: it is grounded in what exists), asked for one pattern
//! document, and its answer goes through `Registry::validate` like any document; the
//! diagnostics go back to it for a bounded number of repair rounds. What still does not
//! validate is rejected, never shown as a candidate. Requests are plain HTTP/1.1 (or TLS with
//! the system's roots for `https://`), one connection per request, with a deadline and a cap on
//! the response size.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::{config::AiConfig, tls};

/// Largest answer read from the provider.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the LLM provider at {endpoint} could not be reached: {message}")]
    Unreachable { endpoint: String, message: String },
    #[error("the LLM provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the LLM provider answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the LLM provider's answer is not a chat completion: {0}")]
    Malformed(String),
}

/// One configured provider.
pub struct LlmProvider {
    /// `http://host:port/base` as configured (for messages).
    endpoint: String,
    address: String,
    host: String,
    path: String,
    model: String,
    api_key: Option<String>,
    timeout: Duration,
    pub max_repair_rounds: u32,
    tls: Option<tls::ClientTls>,
}

impl LlmProvider {
    /// The provider `config` names, or `None` when none is configured. `env` reads the API key
    /// variable.
    pub fn from_config(config: &AiConfig, env: impl Fn(&str) -> Option<String>) -> Result<Option<Arc<Self>>, String> {
        if config.llm_endpoint.trim().is_empty() {
            return Ok(None);
        }
        let url = url::Url::parse(config.llm_endpoint.trim())
            .map_err(|e| format!("ai.llm_endpoint `{}`: {e}", config.llm_endpoint))?;
        let secure = match url.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(format!("ai.llm_endpoint: scheme `{other}` is not http or https")),
        };
        let host =
            url.host_str().ok_or_else(|| format!("ai.llm_endpoint `{}` has no host", config.llm_endpoint))?.to_string();
        let port = url.port_or_known_default().unwrap_or(if secure { 443 } else { 80 });
        if config.llm_model.trim().is_empty() {
            return Err("ai.llm_model is empty: name the model the endpoint should use".into());
        }
        let api_key = if config.llm_api_key_env.is_empty() {
            None
        } else {
            Some(env(&config.llm_api_key_env).ok_or_else(|| {
                format!("ai.llm_api_key_env names `{}`, which is not set in the environment", config.llm_api_key_env)
            })?)
        };
        let tls = if secure {
            let mut client = (*tls::client_config(&tls::ClientTlsOptions::default())?).clone();
            client.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tls::ClientTls::new(Arc::new(client), &host, None)?)
        } else {
            None
        };
        let base = url.path().trim_end_matches('/');
        Ok(Some(Arc::new(Self {
            endpoint: config.llm_endpoint.clone(),
            address: format!("{}:{port}", if host.contains(':') { format!("[{host}]") } else { host.clone() }),
            host,
            path: format!("{base}/chat/completions"),
            model: config.llm_model.clone(),
            api_key,
            timeout: config.llm_timeout,
            max_repair_rounds: config.llm_max_repair_rounds.min(5),
            tls,
        })))
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Sends the conversation and returns the first choice's content.
    pub async fn chat(&self, messages: &[Value]) -> Result<String, LlmError> {
        match tokio::time::timeout(self.timeout, self.request(messages)).await {
            Ok(result) => result,
            Err(_) => Err(LlmError::Timeout(self.timeout)),
        }
    }

    async fn request(&self, messages: &[Value]) -> Result<String, LlmError> {
        let unreachable = |message: String| LlmError::Unreachable { endpoint: self.endpoint.clone(), message };
        let stream = tls::dial(&self.address, self.tls.as_ref()).await.map_err(unreachable)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let driver = tokio::spawn(connection);
        let body = json!({"model": self.model, "messages": messages, "temperature": 0});
        let mut request = http::Request::post(&self.path)
            .header(http::header::HOST, &self.host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json");
        if let Some(key) = &self.api_key {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| LlmError::Malformed(format!("building the request: {e}")))?;
        let response = sender.send_request(request).await.map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| LlmError::Malformed(format!("reading the answer (at most {MAX_RESPONSE_BYTES} bytes): {e}")))?
            .to_bytes();
        driver.abort();
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
            return Err(LlmError::Status { status: status.as_u16(), body: text });
        }
        let answer: Value = serde_json::from_slice(&bytes).map_err(|e| LlmError::Malformed(e.to_string()))?;
        answer
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| LlmError::Malformed("no choices[0].message.content".into()))
    }
}

/// The document in a model's answer: the first fenced block (```yaml / ```json / ```), else the
/// whole answer.
pub fn extract_document(answer: &str) -> &str {
    if let Some(start) = answer.find("```") {
        let after = &answer[start + 3..];
        let body_start = after.find('\n').map_or(0, |n| n + 1);
        let body = &after[body_start..];
        if let Some(end) = body.find("```") {
            return body[..end].trim();
        }
    }
    answer.trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_taken_from_fenced_blocks() {
        assert_eq!(extract_document("Here:\n```yaml\nname: a\n```\nDone."), "name: a");
        assert_eq!(extract_document("name: b\n"), "name: b");
        assert_eq!(extract_document("```\n{\"name\": \"c\"}\n```"), "{\"name\": \"c\"}");
    }

    #[test]
    fn a_provider_needs_a_model_and_its_key_variable() {
        let mut c = AiConfig { llm_endpoint: "http://127.0.0.1:11434/v1".into(), ..AiConfig::default() };
        assert!(LlmProvider::from_config(&c, |_| None).err().is_some_and(|e| e.contains("llm_model")));
        c.llm_model = "m".into();
        c.llm_api_key_env = "NEXUS_TEST_KEY".into();
        assert!(LlmProvider::from_config(&c, |_| None).err().is_some_and(|e| e.contains("NEXUS_TEST_KEY")));
        let p = LlmProvider::from_config(&c, |_| Some("k".into())).ok().flatten();
        assert!(p.is_some_and(|p| p.path == "/v1/chat/completions" && p.address == "127.0.0.1:11434"));
        c.llm_endpoint = "ftp://x".into();
        assert!(LlmProvider::from_config(&c, |_| None).is_err());
        assert!(LlmProvider::from_config(&AiConfig::default(), |_| None).is_ok_and(|p| p.is_none()));
    }
}
