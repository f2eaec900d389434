//! The shared store: PostgreSQL, for several Nexus replicas.

use std::{str::FromStr, time::Duration};

use sqlx::{
    Row,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
};

use crate::{Error, InsertOutcome, PatternStore, Result, StoredPattern};

pub struct PgStore {
    pub(crate) pool: PgPool,
}

/// The URL with its password replaced, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(an unparsable database URL)".to_string(),
    }
}

fn to_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn from_ms(ms: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

impl PgStore {
    /// Connects (within 5 s), then applies the embedded migrations. `schema`, when given, is used
    /// as the search path (it must exist), so several deployments or test runs can share a database.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self> {
        let location = redact_url(url);
        let open_err = |source| Error::Open { location: location.clone(), source };
        let mut options = PgConnectOptions::from_str(url).map_err(open_err)?;
        if let Some(schema) = schema {
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(open_err)?;
        crate::migrate::postgres(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait::async_trait]
impl PatternStore for PgStore {
    async fn insert_pattern(&self, p: &StoredPattern) -> Result<InsertOutcome> {
        let inserted = sqlx::query(
            "INSERT INTO patterns (name, version, owner, description, document, registered_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, version) DO NOTHING",
        )
        .bind(&p.name)
        .bind(&p.version)
        .bind(&p.owner)
        .bind(&p.description)
        .bind(&p.document)
        .bind(to_ms(p.registered_at))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(InsertOutcome::Created);
        }
        let (doc,): (String,) = sqlx::query_as("SELECT document FROM patterns WHERE name = $1 AND version = $2")
            .bind(&p.name)
            .bind(&p.version)
            .fetch_one(&self.pool)
            .await?;
        Ok(if doc == p.document { InsertOutcome::Identical } else { InsertOutcome::Conflict })
    }

    async fn list_patterns(&self) -> Result<Vec<StoredPattern>> {
        let rows = sqlx::query(
            "SELECT name, version, owner, description, document, registered_at_ms FROM patterns
             ORDER BY registered_at_ms, name, version",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredPattern {
                    name: r.try_get("name")?,
                    version: r.try_get("version")?,
                    owner: r.try_get("owner")?,
                    description: r.try_get("description")?,
                    document: r.try_get("document")?,
                    registered_at: from_ms(r.try_get("registered_at_ms")?),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_redacted_urls() {
        assert_eq!(redact_url("postgres://nexus:s3cret@db:5432/nexus"), "postgres://nexus:***@db:5432/nexus");
        assert_eq!(redact_url("postgres://nexus@db/nexus"), "postgres://nexus@db/nexus");
        assert!(!redact_url("postgres://u:p%40ss@h/d").contains("p%40ss"));
    }
}
