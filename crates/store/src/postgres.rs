//! The shared store: PostgreSQL, for several Nexus replicas.

use std::{str::FromStr, time::Duration};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::{Error, Result};

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

impl PgStore {
    /// Connects (within 5 s), then applies the embedded migrations. `schema`, when given, is used
    /// as the search path (it must exist), so several deployments or test runs can share a database.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self> {
        let location = redact_url(url);
        let open_err = |cause| Error::Open { location: location.clone(), cause };
        let mut options = PgConnectOptions::from_str(url).map_err(open_err)?;
        if let Some(schema) = schema {
            options = options.options([("search_path", schema)]);
        }
        // One connection first: the pool only reports "timed out" when it cannot connect, while
        // a direct attempt says why (refused, unknown host, authentication, no such database).
        match tokio::time::timeout(
            Duration::from_secs(5),
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
        )
        .await
        {
            Ok(Ok(conn)) => {
                let _ = sqlx::Connection::close(conn).await;
            }
            Ok(Err(cause)) => return Err(open_err(cause)),
            Err(_) => return Err(open_err(sqlx::Error::PoolTimedOut)),
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(open_err)?;
        crate::migrate::postgres(&pool).await?;
        let store = Self { pool };
        store.backfill_meta().await?;
        Ok(store)
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
