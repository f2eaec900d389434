//! Identity: who is calling. API keys (`nxs_…`, looked up in the store by their public id and
//! checked against the stored hash) and JWT bearer tokens (HS256 with a shared secret, RS256 with
//! keys from a JWKS file; issuer, audience and expiry checked) map a call to a [`Principal`].
//!
//! Invariant: no credential (key, token, secret) is ever logged or put in an error message.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use nexus_store::{ApiKeyRecord, AuthStore, api_key};

use crate::error::ApiError;

use crate::config::{AuthConfig, JwtConfig};

/// How long a verified API key is trusted without looking at the store again: a revocation
/// takes effect on every replica within this long.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Everything within their tenant, including other owners' patterns.
    Admin,
    /// Registers and forks patterns.
    Author,
    /// Executes patterns and cancels executions.
    Runner,
    /// Reads patterns, the catalog and executions.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Author, Role::Runner, Role::Viewer];

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "admin" => Some(Self::Admin),
            "author" => Some(Self::Author),
            "runner" => Some(Self::Runner),
            "viewer" => Some(Self::Viewer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Author => "author",
            Self::Runner => "runner",
            Self::Viewer => "viewer",
        }
    }
}

/// The caller, as every RPC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: Arc<str>,
    pub subject: Arc<str>,
    pub roles: Vec<Role>,
    /// `api_key`, `jwt`, or `open` (no credentials, open loopback mode).
    pub via: &'static str,
}

impl Principal {
    /// The caller of an open (no authentication) server: an admin of the `default` tenant.
    pub fn open() -> Self {
        // Built once: every unauthenticated call of an open server gets a cheap clone.
        static OPEN: std::sync::LazyLock<Principal> = std::sync::LazyLock::new(|| Principal {
            tenant: Arc::from("default"),
            subject: Arc::from("local"),
            roles: vec![Role::Admin],
            via: "open",
        });
        OPEN.clone()
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn is_admin(&self) -> bool {
        self.has(Role::Admin)
    }

    /// Whether the caller has any of `roles` (admins have every role).
    pub fn any_of(&self, roles: &[Role]) -> bool {
        self.is_admin() || roles.iter().any(|r| self.has(*r))
    }

    /// `TENANT/SUBJECT`: the caller's identity across tenants (stars, graph owner nodes).
    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.subject)
    }

    pub fn viewer(&self) -> nexus_store::Viewer {
        nexus_store::Viewer {
            tenant: self.tenant.to_string(),
            subject: self.subject.to_string(),
            admin: self.is_admin(),
        }
    }
}

/// Turns request headers into a [`Principal`].
pub struct Authenticator {
    store: Arc<dyn AuthStore>,
    jwt: Option<JwtVerifier>,
    require: bool,
    /// Verified keys by id, with when they were looked up.
    keys: Mutex<HashMap<String, (ApiKeyRecord, Instant)>>,
}

impl Authenticator {
    pub fn new(config: &AuthConfig, store: Arc<dyn AuthStore>) -> Result<Self, String> {
        let jwt = config.jwt.as_ref().map(JwtVerifier::load).transpose()?;
        Ok(Self { store, jwt, require: config.require_auth, keys: Mutex::new(HashMap::new()) })
    }

    pub fn required(&self) -> bool {
        self.require
    }

    /// The caller of a request with these headers. Credentials that are present must be valid,
    /// whether or not authentication is required.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Principal, ApiError> {
        let Some(token) = credentials(headers)? else {
            if self.require {
                return Err(ApiError::Unauthenticated(
                    "this server requires credentials: send `authorization: Bearer <API key or JWT>`".into(),
                ));
            }
            return Ok(Principal::open());
        };
        if token.starts_with("nxs_") {
            return self.api_key(token).await;
        }
        match &self.jwt {
            Some(v) => v.verify(token),
            None => Err(ApiError::Unauthenticated(
                "invalid credentials: not an API key, and this server accepts no JWTs ([auth.jwt] is not configured)"
                    .into(),
            )),
        }
    }

    async fn api_key(&self, key: &str) -> Result<Principal, ApiError> {
        let invalid = || ApiError::Unauthenticated("invalid or revoked API key".into());
        let id = api_key::id_of(key).ok_or_else(invalid)?;
        let cached = {
            let keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            keys.get(id).filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL).map(|(r, _)| r.clone())
        };
        let record = match cached {
            Some(r) => r,
            None => {
                let record = self
                    .store
                    .api_key(id)
                    .await
                    .map_err(|e| ApiError::Unavailable(format!("cannot check the API key: {e}")))?
                    .ok_or_else(invalid)?;
                let mut keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if keys.len() > 10_000 {
                    keys.clear();
                }
                keys.insert(id.to_string(), (record.clone(), Instant::now()));
                record
            }
        };
        if !api_key::verify(&record, key) {
            return Err(invalid());
        }
        Ok(Principal {
            tenant: Arc::from(record.tenant.as_str()),
            subject: Arc::from(record.subject.as_str()),
            roles: record.roles.iter().filter_map(|r| Role::parse(r)).collect(),
            via: "api_key",
        })
    }
}

/// The bearer token or API key of a request, if any.
fn credentials(headers: &http::HeaderMap) -> Result<Option<&str>, ApiError> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| ApiError::Unauthenticated("the authorization header is not text".into()))?;
        let token = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).ok_or_else(|| {
            ApiError::Unauthenticated("the authorization header must be `Bearer <API key or JWT>`".into())
        })?;
        return Ok(Some(token.trim()));
    }
    if let Some(v) = headers.get(crate::headers::X_API_KEY) {
        let v = v.to_str().map_err(|_| ApiError::Unauthenticated("the x-api-key header is not text".into()))?;
        return Ok(Some(v.trim()));
    }
    Ok(None)
}

/// Verifies JWTs: signature (HS256 or RS256 by `kid` from the JWKS), `exp`, `nbf`, `iss`, `aud`.
struct JwtVerifier {
    hs256: Option<jsonwebtoken::DecodingKey>,
    /// RS256 keys by `kid` (a key without `kid` under "").
    rs256: HashMap<String, jsonwebtoken::DecodingKey>,
    issuer: String,
    audience: String,
    tenant_claim: String,
    roles_claim: String,
}

impl JwtVerifier {
    fn load(c: &JwtConfig) -> Result<Self, String> {
        let hs256 = match &c.hs256_secret_file {
            Some(path) => {
                let secret =
                    std::fs::read(path).map_err(|e| format!("auth.jwt.hs256_secret_file {}: {e}", path.display()))?;
                let secret = secret.trim_ascii();
                if secret.len() < 32 {
                    return Err(format!(
                        "auth.jwt.hs256_secret_file {}: the secret must be at least 32 bytes",
                        path.display()
                    ));
                }
                Some(jsonwebtoken::DecodingKey::from_secret(secret))
            }
            None => None,
        };
        let mut rs256 = HashMap::new();
        if let Some(path) = &c.jwks_file {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("auth.jwt.jwks_file {}: {e}", path.display()))?;
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text)
                .map_err(|e| format!("auth.jwt.jwks_file {}: not a JWKS: {e}", path.display()))?;
            for jwk in &set.keys {
                let key = jsonwebtoken::DecodingKey::from_jwk(jwk)
                    .map_err(|e| format!("auth.jwt.jwks_file {}: unusable key: {e}", path.display()))?;
                rs256.insert(jwk.common.key_id.clone().unwrap_or_default(), key);
            }
            if rs256.is_empty() {
                return Err(format!("auth.jwt.jwks_file {}: no keys", path.display()));
            }
        }
        if c.issuer.is_empty() || c.audience.is_empty() {
            return Err("auth.jwt: set `issuer` and `audience` (both are checked on every token)".into());
        }
        Ok(Self {
            hs256,
            rs256,
            issuer: c.issuer.clone(),
            audience: c.audience.clone(),
            tenant_claim: c.tenant_claim.clone().unwrap_or_else(|| "tenant".into()),
            roles_claim: c.roles_claim.clone().unwrap_or_else(|| "roles".into()),
        })
    }

    fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
        let invalid = |why: &str| ApiError::Unauthenticated(format!("invalid token: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed"))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref().ok_or_else(|| invalid("HS256 tokens are not accepted"))?,
            Algorithm::RS256 => {
                let kid = header.kid.unwrap_or_default();
                self.rs256.get(&kid).ok_or_else(|| invalid("signed with an unknown key"))?
            }
            _ => return Err(invalid("only HS256 and RS256 are accepted")),
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => invalid("expired"),
                ErrorKind::ImmatureSignature => invalid("not valid yet"),
                ErrorKind::InvalidSignature => invalid("bad signature"),
                ErrorKind::InvalidIssuer => invalid("wrong issuer"),
                ErrorKind::InvalidAudience => invalid("wrong audience"),
                ErrorKind::MissingRequiredClaim(c) => invalid(&format!("missing claim `{c}`")),
                _ => invalid("malformed"),
            })?;
        let claims = data.claims;
        let text = |k: &str| claims.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
        let subject = text("sub").ok_or_else(|| invalid("missing claim `sub`"))?;
        let tenant =
            text(&self.tenant_claim).ok_or_else(|| invalid(&format!("missing claim `{}`", self.tenant_claim)))?;
        let roles = claims
            .get(&self.roles_claim)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|r| r.as_str().and_then(Role::parse)).collect())
            .unwrap_or_default();
        Ok(Principal { tenant: Arc::from(tenant), subject: Arc::from(subject), roles, via: "jwt" })
    }
}
