//! The SQL of [`crate::MetaStore`] and [`crate::AuthStore`], shared by both stores. As in
//! `journal.rs`, each statement is written once with `$n` placeholders (rewritten to `?n` for
//! SQLite); the few dialect differences (row locks, reading a JSON array parameter, substring
//! search) live in the [`Dialect`]. The implementations are one macro that each store instantiates
//! (`sqlite.rs`, `postgres.rs`), so this module names neither store; each store starts its own
//! write transactions (`write_tx`).
//!
//! Writes that read before they write run in one transaction that serialises with every other
//! write of the same name: SQLite starts it with `BEGIN IMMEDIATE` (a deferred transaction that
//! reads and then writes deadlocks with another writer, "database is locked", whatever the busy
//! timeout); PostgreSQL locks the name's row (`SELECT … FOR UPDATE`). Rows are always locked in
//! the same order (the name, then its versions; graph nodes and edges sorted) so that concurrent
//! transactions cannot deadlock.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, BTreeSet},
};

use crate::{NewVersion, SearchSort, dialect::Dialect};

pub(crate) const NAME_COLUMNS: &str =
    "name, tenant, owner, visibility, forked_from, latest, description, tags, stars, executions,
    created_at_ms, updated_at_ms";

/// A new name (the row its registration then locks).
pub(crate) const INSERT_NAME: &str = "INSERT INTO pattern_names
    (name, tenant, owner, visibility, forked_from, description, tags, created_at_ms, updated_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (name) DO NOTHING";
pub(crate) const NAME_OWNER: &str = "SELECT tenant, owner FROM pattern_names WHERE name = $1";
pub(crate) const DOCUMENT: &str = "SELECT document FROM patterns WHERE name = $1 AND version = $2";
pub(crate) const VERSION_ROWS: &str = "SELECT version, deprecated, description, tags FROM patterns WHERE name = $1";
pub(crate) const INSERT_VERSION: &str =
    "INSERT INTO patterns (name, version, owner, description, document, registered_at_ms, tags)
    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name, version) DO NOTHING";
pub(crate) const UPDATE_SUMMARY: &str = "UPDATE pattern_names SET latest = $2, description = $3, tags = $4,
    updated_at_ms = COALESCE($5, updated_at_ms) WHERE name = $1";
pub(crate) const NAME: &str =
    "SELECT name, tenant, owner, visibility, forked_from, latest, description, tags, stars, executions,
    created_at_ms, updated_at_ms FROM pattern_names WHERE name = $1";
pub(crate) const NAMES: &str =
    "SELECT name, tenant, owner, visibility, forked_from, latest, description, tags, stars, executions,
    created_at_ms, updated_at_ms FROM pattern_names ORDER BY name";
pub(crate) const VERSIONS: &str =
    "SELECT name, version, deprecated, deprecation_reason, registered_at_ms, executions, description
    FROM patterns WHERE name = $1";
pub(crate) const DEPRECATE: &str =
    "UPDATE patterns SET deprecated = $3, deprecation_reason = $4 WHERE name = $1 AND version = $2";
pub(crate) const MARK_NODE: &str =
    "INSERT INTO graph_nodes (id, kind, label, deprecated) VALUES ($1, 'pattern_version', $2, $3)
    ON CONFLICT (id) DO UPDATE SET deprecated = excluded.deprecated";
pub(crate) const SET_VISIBILITY: &str = "UPDATE pattern_names SET visibility = $2 WHERE name = $1";
pub(crate) const STAR: &str = "INSERT INTO stars (name, who) SELECT $1, $2
    WHERE EXISTS (SELECT 1 FROM pattern_names WHERE name = $1) ON CONFLICT (name, who) DO NOTHING";
pub(crate) const UNSTAR: &str = "DELETE FROM stars WHERE name = $1 AND who = $2";
pub(crate) const COUNT_STARS: &str = "UPDATE pattern_names SET stars = stars + $2 WHERE name = $1 RETURNING stars";
pub(crate) const STARRED: &str = "SELECT 1 AS one FROM stars WHERE name = $1 AND who = $2";
pub(crate) const NAME_EXECUTIONS: &str = "UPDATE pattern_names SET executions = executions + $3
    WHERE name = $1 AND EXISTS (SELECT 1 FROM patterns WHERE name = $1 AND version = $2)";
pub(crate) const VERSION_EXECUTIONS: &str =
    "UPDATE patterns SET executions = executions + $3 WHERE name = $1 AND version = $2";

pub(crate) const INSERT_API_KEY: &str =
    "INSERT INTO api_keys (id, secret_hash, tenant, subject, roles, created_at_ms, revoked_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(crate) const API_KEY: &str =
    "SELECT id, secret_hash, tenant, subject, roles, created_at_ms, revoked_at_ms FROM api_keys
    WHERE id = $1";
pub(crate) const API_KEYS: &str =
    "SELECT id, secret_hash, tenant, subject, roles, created_at_ms, revoked_at_ms FROM api_keys
    ORDER BY created_at_ms DESC, id DESC";
pub(crate) const REVOKE: &str = "UPDATE api_keys SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL";
pub(crate) const INSERT_AUDIT: &str = "INSERT INTO audit_log (id, at_ms, tenant, subject, action, resource, reason)
    VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(crate) const AUDIT_LOG: &str = "SELECT at_ms, tenant, subject, action, resource, reason FROM audit_log
    ORDER BY at_ms DESC, id DESC LIMIT $1";

pub(crate) const SAVE_DESCRIPTORS: &str =
    "INSERT INTO backend_descriptors (backend, endpoint, source, descriptors, discovered_at_ms)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (backend) DO UPDATE SET endpoint = excluded.endpoint, source = excluded.source,
        descriptors = excluded.descriptors, discovered_at_ms = excluded.discovered_at_ms";
pub(crate) const CACHED_DESCRIPTORS: &str =
    "SELECT backend, endpoint, source, descriptors, discovered_at_ms FROM backend_descriptors WHERE backend = $1";

/// Names whose versions are in `patterns` but not in `pattern_names` (registered before migration
/// 4, or since through [`crate::PatternStore::insert_pattern`], which knows no tenant): they
/// belong to tenant `default`, are visible to it, and are owned by the owner of their first
/// version.
pub(crate) const BACKFILL_NAMES: &str =
    "INSERT INTO pattern_names (name, tenant, owner, visibility, created_at_ms, updated_at_ms)
    SELECT p.name, 'default',
        (SELECT f.owner FROM patterns AS f WHERE f.name = p.name ORDER BY f.registered_at_ms, f.version LIMIT 1),
        'tenant', MIN(p.registered_at_ms), MAX(p.registered_at_ms)
    FROM patterns AS p
    WHERE NOT EXISTS (SELECT 1 FROM pattern_names AS n WHERE n.name = p.name)
    GROUP BY p.name
    ON CONFLICT (name) DO NOTHING";
/// Names whose `latest` was never computed (SQL cannot order semver, so the migration leaves it).
pub(crate) const LATEST_MISSING: &str = "SELECT name FROM pattern_names AS n WHERE latest IS NULL
    AND EXISTS (SELECT 1 FROM patterns AS p WHERE p.name = n.name AND p.deprecated = 0)";

/// Orders versions: valid semver by precedence, above anything that does not parse (ordered by
/// text).
pub(crate) fn cmp_versions(a: &str, b: &str) -> Ordering {
    let key = |v: &str| semver::Version::parse(v).ok();
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

/// What `latest` and the search fields of a name are computed from.
pub(crate) struct VersionRow {
    pub(crate) version: String,
    pub(crate) deprecated: bool,
    pub(crate) description: String,
    /// As stored (`,a,b,`).
    pub(crate) tags: String,
}

/// `latest`, description and tags of a name.
pub(crate) struct Summary {
    pub(crate) latest: Option<String>,
    pub(crate) description: String,
    pub(crate) tags: String,
}

/// The highest version that is not deprecated is `latest`; description and tags come from it, or
/// from the highest version when every one is deprecated.
pub(crate) fn summarize(rows: &[VersionRow]) -> Summary {
    let highest = |deprecated_too: bool| {
        rows.iter().filter(|r| deprecated_too || !r.deprecated).max_by(|a, b| cmp_versions(&a.version, &b.version))
    };
    let latest = highest(false);
    match latest.or_else(|| highest(true)) {
        Some(source) => Summary {
            latest: latest.map(|r| r.version.clone()),
            description: source.description.clone(),
            tags: source.tags.clone(),
        },
        None => Summary { latest: None, description: String::new(), tags: String::new() },
    }
}

/// Tags as stored: `,a,b,` (so `,x,` finds a tag exactly), or empty. A tag cannot hold a comma:
/// commas are removed (as they are from the tag searched for); empty tags are dropped.
pub(crate) fn join_tags(tags: &[String]) -> String {
    let tags: Vec<String> = tags.iter().map(|t| t.replace(',', "")).filter(|t| !t.is_empty()).collect();
    if tags.is_empty() { String::new() } else { format!(",{},", tags.join(",")) }
}

pub(crate) fn split_tags(stored: &str) -> Vec<String> {
    stored.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect()
}

/// `text` as a literal `LIKE` pattern (with `ESCAPE '\'`).
pub(crate) fn like_literal(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(crate) fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The graph nodes (id, kind, label) and edges (from, kind, to) of a registered version, as
/// JSON arrays of triples, sorted (see the module documentation about lock order). The version is
/// OWNED_BY the name's owner (`tenant`, `owner`: an admin who adds a version does not become its
/// owner); FORKED_FROM only when the registration created the name; TRIGGERED_BY, EMITS and
/// WAITS_FOR to an `event:TYPE` node (kind `event`) per event type of its triggers, emit steps and
/// wait branches.
pub(crate) fn graph_of(v: &NewVersion, tenant: &str, owner: &str, new_name: bool) -> (String, String) {
    let p = &v.pattern;
    let mut nodes = BTreeMap::new();
    let mut edges = BTreeSet::new();
    let me = format!("pattern:{}@{}", p.name, p.version);
    nodes.insert(me.clone(), ("pattern_version", format!("{}@{}", p.name, p.version)));
    let owner_id = format!("owner:{tenant}/{owner}");
    nodes.insert(owner_id.clone(), ("owner", format!("{tenant}/{owner}")));
    edges.insert((me.clone(), "OWNED_BY", owner_id));
    for action in &v.uses {
        let service = action.split_once('/').map_or(action.as_str(), |(service, _)| service);
        let (action_id, service_id) = (format!("action:{action}"), format!("service:{service}"));
        nodes.insert(action_id.clone(), ("action", action.clone()));
        nodes.insert(service_id.clone(), ("service", service.to_string()));
        edges.insert((me.clone(), "USES", action_id.clone()));
        edges.insert((action_id, "PART_OF", service_id));
    }
    for called in &v.calls {
        let id = format!("pattern:{called}");
        nodes.entry(id.clone()).or_insert_with(|| ("pattern_version", called.clone()));
        edges.insert((me.clone(), "CALLS_PATTERN", id));
    }
    let e = &v.events;
    for (kind, types) in [("TRIGGERED_BY", &e.triggers), ("EMITS", &e.emits), ("WAITS_FOR", &e.waits)] {
        for t in types {
            let id = format!("event:{t}");
            nodes.insert(id.clone(), ("event", t.clone()));
            edges.insert((me.clone(), kind, id));
        }
    }
    if let Some(source) = v.forked_from.as_ref().filter(|_| new_name) {
        let id = format!("pattern:{source}");
        nodes.entry(id.clone()).or_insert_with(|| ("pattern_version", source.clone()));
        edges.insert((me, "FORKED_FROM", id));
    }
    let nodes: Vec<_> = nodes.into_iter().map(|(id, (kind, label))| serde_json::json!([id, kind, label])).collect();
    let edges: Vec<_> = edges.into_iter().map(|(from, kind, to)| serde_json::json!([from, kind, to])).collect();
    (serde_json::Value::Array(nodes).to_string(), serde_json::Value::Array(edges).to_string())
}

/// The search statement for one sort. Parameters: `$1` viewer tenant, `$2` viewer subject, `$3`
/// viewer is admin, `$4` text as a `%…%` pattern (empty: any), `$5` owner (empty: any), `$6`
/// `,tag,` (empty: any), `$7` `action:X` (empty: any), `$8` limit, `$9` offset; with text and
/// relevance also `$10` the text and `$11` the text as a prefix pattern.
pub(crate) fn search_sql(d: Dialect, sort: SearchSort, has_text: bool) -> String {
    let order = match sort {
        SearchSort::Relevance if has_text => {
            "CASE WHEN LOWER(name) = LOWER($10) THEN 0
                WHEN LOWER(name) LIKE LOWER($11) ESCAPE '\\' THEN 1
                WHEN LOWER(name) LIKE LOWER($4) ESCAPE '\\' THEN 2
                WHEN LOWER(description) LIKE LOWER($4) ESCAPE '\\' THEN 3
                ELSE 4 END, name"
        }
        SearchSort::Relevance | SearchSort::Name => "name",
        SearchSort::Popularity => "stars DESC, executions DESC, name",
        SearchSort::Recent => "updated_at_ms DESC, name",
    };
    let find = d.find();
    d.sql(&format!(
        "SELECT {NAME_COLUMNS} FROM pattern_names
        WHERE (visibility = 'public' OR (tenant = $1 AND (visibility = 'tenant' OR owner = $2 OR $3)))
            AND ($4 = '' OR LOWER(name) LIKE LOWER($4) ESCAPE '\\' OR LOWER(description) LIKE LOWER($4) ESCAPE '\\'
                OR LOWER(tags) LIKE LOWER($4) ESCAPE '\\')
            AND ($5 = '' OR owner = $5)
            AND ($6 = '' OR {find}(tags, $6) > 0)
            AND ($7 = '' OR EXISTS (SELECT 1 FROM graph_edges AS e
                WHERE e.src = 'pattern:' || pattern_names.name || '@' || pattern_names.latest
                    AND e.kind = 'USES' AND e.dst = $7))
        ORDER BY {order} LIMIT $8 OFFSET $9"
    ))
}

/// Inserts a version's graph (see [`graph_of`]).
pub(crate) fn graph_sql(d: Dialect) -> (String, String) {
    let rows = d.json_rows();
    // (SQLite: the `WHERE true` lets the upsert parse after a SELECT.)
    let nodes = format!(
        "INSERT INTO graph_nodes (id, kind, label) SELECT value->>0, value->>1, value->>2 FROM {rows} WHERE true
        ON CONFLICT (id) DO NOTHING"
    );
    let edges = format!(
        "INSERT INTO graph_edges (src, kind, dst) SELECT value->>0, value->>1, value->>2 FROM {rows} WHERE true
        ON CONFLICT (src, kind, dst) DO NOTHING"
    );
    (d.sql(&nodes), d.sql(&edges))
}

/// [`crate::MetaStore`] and [`crate::AuthStore`] for a store (`$store`, with a `pool` field and a
/// `write_tx()` that starts a write transaction) on the sqlx database `$db`, in `$dialect` (a
/// macro for the reason given at `journal::journal_impl`). The items live in an anonymous
/// constant, so the store's module keeps its namespace; `backfill_meta` is the one method the
/// store calls itself.
macro_rules! meta_store_impl {
    ($store:ty, $db:ty, $dialect:expr) => {
        const _: () = {
            type DbRow = <$db as sqlx::Database>::Row;
            type DbConnection = <$db as sqlx::Database>::Connection;

            use std::{cmp::Ordering, collections::BTreeMap, time::SystemTime};

            use sqlx::Row;
            use $crate::{
                ApiKeyRecord, AuditEntry, CachedDescriptors, Direction, GraphEdge, GraphNode, NewVersion, PatternName,
                RegisterOutcome, Result, SearchPage, SearchQuery, SearchSort, VersionInfo,
                dialect::Dialect,
                meta_sql::*,
                time::{from_ms, ms},
            };

            const D: Dialect = $dialect;

            fn q(sql: &str) -> String {
                D.sql(sql)
            }

            fn name_of(r: &DbRow) -> Result<PatternName> {
                Ok(PatternName {
                    name: r.try_get("name")?,
                    tenant: r.try_get("tenant")?,
                    owner: r.try_get("owner")?,
                    visibility: r.try_get("visibility")?,
                    forked_from: r.try_get("forked_from")?,
                    latest: r.try_get("latest")?,
                    description: r.try_get("description")?,
                    tags: split_tags(&r.try_get::<String, _>("tags")?),
                    stars: count(r.try_get("stars")?),
                    executions: count(r.try_get("executions")?),
                    created_at: from_ms(r.try_get("created_at_ms")?),
                    updated_at: from_ms(r.try_get("updated_at_ms")?),
                })
            }

            fn api_key_of(r: &DbRow) -> Result<ApiKeyRecord> {
                Ok(ApiKeyRecord {
                    id: r.try_get("id")?,
                    secret_hash: r.try_get("secret_hash")?,
                    tenant: r.try_get("tenant")?,
                    subject: r.try_get("subject")?,
                    roles: r
                        .try_get::<String, _>("roles")?
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(Into::into)
                        .collect(),
                    created_at: from_ms(r.try_get("created_at_ms")?),
                    revoked_at: r.try_get::<Option<i64>, _>("revoked_at_ms")?.map(from_ms),
                })
            }

            async fn version_rows(conn: &mut DbConnection, name: &str) -> Result<Vec<VersionRow>> {
                sqlx::query(&q(VERSION_ROWS))
                    .bind(name)
                    .fetch_all(&mut *conn)
                    .await?
                    .iter()
                    .map(|r| {
                        Ok(VersionRow {
                            version: r.try_get("version")?,
                            deprecated: r.try_get::<i64, _>("deprecated")? != 0,
                            description: r.try_get("description")?,
                            tags: r.try_get("tags")?,
                        })
                    })
                    .collect()
            }

            /// Stores `latest`, description and tags of a name (and `updated_at_ms` when given).
            async fn write_summary(
                conn: &mut DbConnection,
                name: &str,
                s: &Summary,
                updated_at_ms: Option<i64>,
            ) -> Result<()> {
                sqlx::query(&q(UPDATE_SUMMARY))
                    .bind(name)
                    .bind(&s.latest)
                    .bind(&s.description)
                    .bind(&s.tags)
                    .bind(updated_at_ms)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }

            /// Locks a name's row for the rest of the transaction (PostgreSQL; SQLite's write
            /// transaction already excludes every other writer).
            async fn lock_name(conn: &mut DbConnection, name: &str) -> Result<Option<(String, String)>> {
                let row = sqlx::query(&q(&format!("{NAME_OWNER}{}", D.lock_row())))
                    .bind(name)
                    .fetch_optional(&mut *conn)
                    .await?;
                row.map(|r| Ok((r.try_get("tenant")?, r.try_get("owner")?))).transpose()
            }

            /// Identical or Conflict, for a version that exists.
            async fn same_document(
                conn: &mut DbConnection,
                name: &str,
                version: &str,
                document: &str,
            ) -> Result<Option<bool>> {
                let doc: Option<(String,)> =
                    sqlx::query_as(&q(DOCUMENT)).bind(name).bind(version).fetch_optional(&mut *conn).await?;
                Ok(doc.map(|(doc,)| doc == document))
            }

            impl $store {
                /// Brings `pattern_names` up to date with `patterns` (see [`BACKFILL_NAMES`] and
                /// [`LATEST_MISSING`]); cheap when there is nothing to do, so it runs at every start.
                pub(crate) async fn backfill_meta(&self) -> Result<()> {
                    sqlx::query(&q(BACKFILL_NAMES)).execute(&self.pool).await?;
                    let names: Vec<(String,)> = sqlx::query_as(&q(LATEST_MISSING)).fetch_all(&self.pool).await?;
                    for (name,) in names {
                        let mut tx = self.write_tx().await?;
                        lock_name(&mut tx, &name).await?;
                        let summary = summarize(&version_rows(&mut tx, &name).await?);
                        write_summary(&mut tx, &name, &summary, None).await?;
                        tx.commit().await?;
                    }
                    Ok(())
                }
            }

            #[async_trait::async_trait]
            impl $crate::MetaStore for $store {
                async fn register_version(&self, v: &NewVersion) -> Result<RegisterOutcome> {
                    let p = &v.pattern;
                    let at = ms(p.registered_at);
                    let tags = join_tags(&v.tags);
                    let mut tx = self.write_tx().await?;
                    // Create the name if it is new, then lock its row: concurrent registrations of
                    // one name, new or not, run one after the other. Every refusal rolls back.
                    let new_name = sqlx::query(&q(INSERT_NAME))
                        .bind(&p.name)
                        .bind(&v.tenant)
                        .bind(&p.owner)
                        .bind(&v.visibility)
                        .bind(&v.forked_from)
                        .bind(&p.description)
                        .bind(&tags)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        == 1;
                    let Some((tenant, owner)) = lock_name(&mut tx, &p.name).await? else {
                        // Only a concurrent deletion could get here, and names are never deleted.
                        tx.rollback().await?;
                        return Err(sqlx::Error::RowNotFound.into());
                    };
                    if let Some(same) = same_document(&mut tx, &p.name, &p.version, &p.document).await? {
                        tx.rollback().await?;
                        return Ok(if same { RegisterOutcome::Identical } else { RegisterOutcome::Conflict });
                    }
                    if !new_name {
                        if v.forked_from.is_some() {
                            tx.rollback().await?;
                            return Ok(RegisterOutcome::NameTaken);
                        }
                        if tenant != v.tenant || (owner != p.owner && !v.admin) {
                            tx.rollback().await?;
                            return Ok(RegisterOutcome::NotOwner { tenant, owner });
                        }
                    }
                    // (A new name may have versions too: inserted through `insert_pattern`.)
                    let mut rows = version_rows(&mut tx, &p.name).await?;
                    // Past every version still in use: a deprecated one keeps its number (the
                    // equal-version check above) but does not hold the name back — a mistaken
                    // 18446744073709551615.0.0, deprecated, does not burn the name for good.
                    let in_use = rows.iter().filter(|r| !r.deprecated).map(|r| &r.version);
                    if let Some(highest) = in_use.max_by(|a, b| cmp_versions(a, b)) {
                        if cmp_versions(&p.version, highest) != Ordering::Greater {
                            let highest = highest.clone();
                            tx.rollback().await?;
                            return Ok(RegisterOutcome::NotGreater { highest });
                        }
                    }
                    let inserted = sqlx::query(&q(INSERT_VERSION))
                        .bind(&p.name)
                        .bind(&p.version)
                        .bind(&p.owner)
                        .bind(&p.description)
                        .bind(&p.document)
                        .bind(at)
                        .bind(&tags)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if inserted == 0 {
                        // Raced by `insert_pattern`, which takes no lock.
                        let same = same_document(&mut tx, &p.name, &p.version, &p.document).await?;
                        tx.rollback().await?;
                        return Ok(if same == Some(true) {
                            RegisterOutcome::Identical
                        } else {
                            RegisterOutcome::Conflict
                        });
                    }
                    rows.push(VersionRow {
                        version: p.version.clone(),
                        deprecated: false,
                        description: p.description.clone(),
                        tags,
                    });
                    write_summary(&mut tx, &p.name, &summarize(&rows), Some(at)).await?;
                    let (nodes, edges) = graph_of(v, &tenant, &owner, new_name);
                    static GRAPH: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
                    let (nodes_sql, edges_sql) = GRAPH.get_or_init(|| graph_sql(D));
                    sqlx::query(nodes_sql).bind(nodes).execute(&mut *tx).await?;
                    sqlx::query(edges_sql).bind(edges).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(RegisterOutcome::Created)
                }

                async fn pattern_name(&self, name: &str) -> Result<Option<PatternName>> {
                    let row = sqlx::query(&q(NAME)).bind(name).fetch_optional(&self.pool).await?;
                    row.as_ref().map(name_of).transpose()
                }

                async fn pattern_names(&self) -> Result<Vec<PatternName>> {
                    sqlx::query(&q(NAMES)).fetch_all(&self.pool).await?.iter().map(name_of).collect()
                }

                async fn versions(&self, name: &str) -> Result<Vec<VersionInfo>> {
                    let mut versions = sqlx::query(&q(VERSIONS))
                        .bind(name)
                        .fetch_all(&self.pool)
                        .await?
                        .iter()
                        .map(|r| {
                            Ok(VersionInfo {
                                name: r.try_get("name")?,
                                version: r.try_get("version")?,
                                deprecated: r.try_get::<i64, _>("deprecated")? != 0,
                                deprecation_reason: r.try_get("deprecation_reason")?,
                                registered_at: from_ms(r.try_get("registered_at_ms")?),
                                executions: count(r.try_get("executions")?),
                                description: r.try_get("description")?,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    versions.sort_by(|a, b| cmp_versions(&a.version, &b.version));
                    Ok(versions)
                }

                async fn set_deprecated(
                    &self,
                    name: &str,
                    version: &str,
                    deprecated: bool,
                    reason: &str,
                ) -> Result<Option<Option<String>>> {
                    let mut tx = self.write_tx().await?;
                    lock_name(&mut tx, name).await?;
                    let reason = if deprecated { reason } else { "" };
                    let changed = sqlx::query(&q(DEPRECATE))
                        .bind(name)
                        .bind(version)
                        .bind(i64::from(deprecated))
                        .bind(reason)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if changed == 0 {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    let summary = summarize(&version_rows(&mut tx, name).await?);
                    write_summary(&mut tx, name, &summary, None).await?;
                    sqlx::query(&q(MARK_NODE))
                        .bind(format!("pattern:{name}@{version}"))
                        .bind(format!("{name}@{version}"))
                        .bind(i64::from(deprecated))
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(Some(summary.latest))
                }

                async fn set_visibility(&self, name: &str, visibility: &str) -> Result<bool> {
                    let done = sqlx::query(&q(SET_VISIBILITY)).bind(name).bind(visibility).execute(&self.pool).await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn star(&self, name: &str, who: &str, on: bool) -> Result<u64> {
                    let mut tx = self.write_tx().await?;
                    let changed = sqlx::query(&q(if on { STAR } else { UNSTAR }))
                        .bind(name)
                        .bind(who)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    // An increment (not a recount): it applies to the row as the last committed star
                    // left it, even when a concurrent star held the row.
                    let delta = if on { int(changed) } else { -int(changed) };
                    let stars: Option<(i64,)> =
                        sqlx::query_as(&q(COUNT_STARS)).bind(name).bind(delta).fetch_optional(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(stars.map_or(0, |(n,)| count(n)))
                }

                async fn starred(&self, name: &str, who: &str) -> Result<bool> {
                    let row = sqlx::query(&q(STARRED)).bind(name).bind(who).fetch_optional(&self.pool).await?;
                    Ok(row.is_some())
                }

                async fn add_executions(&self, counts: &[(String, String, u64)]) -> Result<()> {
                    // Summed per version and sorted: rows are locked name first, then version, in
                    // one order for every transaction.
                    let mut sums: BTreeMap<(&str, &str), u64> = BTreeMap::new();
                    for (name, version, n) in counts {
                        let sum = sums.entry((name.as_str(), version.as_str())).or_default();
                        *sum = sum.saturating_add(*n);
                    }
                    sums.retain(|_, n| *n > 0);
                    if sums.is_empty() {
                        return Ok(());
                    }
                    let mut tx = self.write_tx().await?;
                    for ((name, version), n) in sums {
                        for sql in [NAME_EXECUTIONS, VERSION_EXECUTIONS] {
                            sqlx::query(&q(sql)).bind(name).bind(version).bind(int(n)).execute(&mut *tx).await?;
                        }
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn search(&self, s: &SearchQuery) -> Result<SearchPage> {
                    let has_text = !s.text.is_empty();
                    let text = if has_text { format!("%{}%", like_literal(&s.text)) } else { String::new() };
                    let tag = s.tag.replace(',', "");
                    let tag = if tag.is_empty() { String::new() } else { format!(",{tag},") };
                    let action = if s.action.is_empty() { String::new() } else { format!("action:{}", s.action) };
                    let limit = s.limit.min(i64::MAX as usize - 1);
                    let sql = search_sql(D, s.sort, has_text);
                    let mut query = sqlx::query(&sql)
                        .bind(&s.viewer.tenant)
                        .bind(&s.viewer.subject)
                        .bind(s.viewer.admin)
                        .bind(text)
                        .bind(&s.owner)
                        .bind(tag)
                        .bind(action)
                        .bind(limit as i64 + 1)
                        .bind(i64::try_from(s.offset).unwrap_or(i64::MAX));
                    if has_text && s.sort == SearchSort::Relevance {
                        query = query.bind(&s.text).bind(format!("{}%", like_literal(&s.text)));
                    }
                    let rows = query.fetch_all(&self.pool).await?;
                    let more = rows.len() > limit;
                    let names = rows.iter().take(limit).map(name_of).collect::<Result<Vec<_>>>()?;
                    Ok(SearchPage { names, more })
                }

                async fn graph_edges(
                    &self,
                    node: &str,
                    direction: Direction,
                    kinds: &[&str],
                ) -> Result<Vec<GraphEdge>> {
                    let column = match direction {
                        Direction::Out => "src",
                        Direction::In => "dst",
                    };
                    let filter =
                        if kinds.is_empty() { String::new() } else { format!(" AND kind IN {}", D.strings(2)) };
                    let sql = q(&format!(
                        "SELECT src, kind, dst FROM graph_edges WHERE {column} = $1{filter} ORDER BY kind, src, dst"
                    ));
                    let mut query = sqlx::query(&sql).bind(node);
                    if !kinds.is_empty() {
                        query = query.bind(serde_json::json!(kinds).to_string());
                    }
                    query
                        .fetch_all(&self.pool)
                        .await?
                        .iter()
                        .map(|r| {
                            Ok(GraphEdge { from: r.try_get("src")?, kind: r.try_get("kind")?, to: r.try_get("dst")? })
                        })
                        .collect()
                }

                async fn graph_nodes(&self, ids: &[String]) -> Result<Vec<GraphNode>> {
                    if ids.is_empty() {
                        return Ok(Vec::new());
                    }
                    let sql = q(&format!(
                        "SELECT id, kind, label, deprecated FROM graph_nodes WHERE id IN {} ORDER BY id",
                        D.strings(1)
                    ));
                    sqlx::query(&sql)
                        .bind(serde_json::json!(ids).to_string())
                        .fetch_all(&self.pool)
                        .await?
                        .iter()
                        .map(|r| {
                            Ok(GraphNode {
                                id: r.try_get("id")?,
                                kind: r.try_get("kind")?,
                                label: r.try_get("label")?,
                                deprecated: r.try_get::<i64, _>("deprecated")? != 0,
                            })
                        })
                        .collect()
                }
            }

            #[async_trait::async_trait]
            impl $crate::DescriptorCache for $store {
                async fn save_descriptors(&self, d: &CachedDescriptors) -> Result<()> {
                    sqlx::query(&q(SAVE_DESCRIPTORS))
                        .bind(&d.backend)
                        .bind(&d.endpoint)
                        .bind(&d.source)
                        .bind(&d.descriptors)
                        .bind(ms(d.discovered_at))
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn cached_descriptors(&self, backend: &str) -> Result<Option<CachedDescriptors>> {
                    let row = sqlx::query(&q(CACHED_DESCRIPTORS)).bind(backend).fetch_optional(&self.pool).await?;
                    row.map(|r| {
                        Ok(CachedDescriptors {
                            backend: r.try_get("backend")?,
                            endpoint: r.try_get("endpoint")?,
                            source: r.try_get("source")?,
                            descriptors: r.try_get("descriptors")?,
                            discovered_at: from_ms(r.try_get("discovered_at_ms")?),
                        })
                    })
                    .transpose()
                }
            }

            #[async_trait::async_trait]
            impl $crate::AuthStore for $store {
                async fn insert_api_key(&self, k: &ApiKeyRecord) -> Result<()> {
                    sqlx::query(&q(INSERT_API_KEY))
                        .bind(&k.id)
                        .bind(&k.secret_hash)
                        .bind(&k.tenant)
                        .bind(&k.subject)
                        .bind(k.roles.join(","))
                        .bind(ms(k.created_at))
                        .bind(k.revoked_at.map(ms))
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
                    let row = sqlx::query(&q(API_KEY)).bind(id).fetch_optional(&self.pool).await?;
                    row.as_ref().map(api_key_of).transpose()
                }

                async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
                    sqlx::query(&q(API_KEYS)).fetch_all(&self.pool).await?.iter().map(api_key_of).collect()
                }

                async fn revoke_api_key(&self, id: &str) -> Result<bool> {
                    let done = sqlx::query(&q(REVOKE)).bind(id).bind(ms(SystemTime::now())).execute(&self.pool).await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn audit(&self, e: &AuditEntry) -> Result<()> {
                    sqlx::query(&q(INSERT_AUDIT))
                        .bind(uuid::Uuid::now_v7().to_string())
                        .bind(ms(e.at))
                        .bind(&e.tenant)
                        .bind(&e.subject)
                        .bind(&e.action)
                        .bind(&e.resource)
                        .bind(&e.reason)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>> {
                    sqlx::query(&q(AUDIT_LOG))
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?
                        .iter()
                        .map(|r| {
                            Ok(AuditEntry {
                                at: from_ms(r.try_get("at_ms")?),
                                tenant: r.try_get("tenant")?,
                                subject: r.try_get("subject")?,
                                action: r.try_get("action")?,
                                resource: r.try_get("resource")?,
                                reason: r.try_get("reason")?,
                            })
                        })
                        .collect()
                }
            }
        };
    };
}

pub(crate) use meta_store_impl;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_semver_then_text() {
        let mut v = vec!["1.10.0", "1.9.0", "1.0.0-rc.1", "1.0.0", "garbage", "0.1.0"];
        v.sort_by(|a, b| cmp_versions(a, b));
        assert_eq!(v, ["garbage", "0.1.0", "1.0.0-rc.1", "1.0.0", "1.9.0", "1.10.0"]);
    }

    #[test]
    fn latest_skips_deprecated_versions() {
        let row = |version: &str, deprecated: bool| VersionRow {
            version: version.into(),
            deprecated,
            description: format!("d{version}"),
            tags: format!(",t{version},"),
        };
        let s = summarize(&[row("1.0.0", false), row("2.0.0", true), row("1.5.0", false)]);
        assert_eq!((s.latest.as_deref(), s.description.as_str()), (Some("1.5.0"), "d1.5.0"));
        let s = summarize(&[row("1.0.0", true), row("2.0.0", true)]);
        assert_eq!((s.latest, s.description.as_str(), s.tags.as_str()), (None, "d2.0.0", ",t2.0.0,"));
        assert!(summarize(&[]).latest.is_none());
    }

    #[test]
    fn tags_are_stored_between_commas() {
        assert_eq!(join_tags(&["a".into(), "b,c".into(), String::new()]), ",a,bc,");
        assert_eq!(join_tags(&[]), "");
        assert_eq!(split_tags(",a,bc,"), ["a", "bc"]);
        assert!(split_tags("").is_empty());
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_literal(r"50%_a\b"), r"50\%\_a\\b");
    }

    #[test]
    fn search_sql_is_rewritten_for_sqlite() {
        let sql = search_sql(Dialect::Sqlite, SearchSort::Relevance, true);
        assert!(sql.contains("?11") && !sql.contains('$'), "{sql}");
        assert!(sql.contains("instr(tags, ?6)"), "{sql}");
        assert!(search_sql(Dialect::Postgres, SearchSort::Popularity, false).contains("strpos(tags, $6)"));
    }
}
