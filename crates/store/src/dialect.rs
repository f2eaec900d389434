//! The two SQL dialects the stores speak, and the few places where they differ.
//!
//! Every statement and migration is written once; a [`Dialect`] renders what differs. Nothing
//! else in the crate matches on the database: adding a difference means adding a method here.

/// SQLite (the embedded store) or PostgreSQL (the shared one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// A statement written with PostgreSQL's `$n` placeholders, for this dialect: SQLite takes
    /// `?n` (numbered, so the binding order is the same in both).
    pub(crate) fn sql(self, sql: &str) -> String {
        match self {
            Self::Sqlite => sql.replace('$', "?"),
            Self::Postgres => sql.to_string(),
        }
    }

    /// Schema SQL (a migration) for this dialect: `{int}` becomes [`Dialect::integer`],
    /// `{bytes}` [`Dialect::bytes`].
    pub(crate) fn ddl(self, template: &str) -> String {
        template.replace("{int}", self.integer()).replace("{bytes}", self.bytes())
    }

    /// A column of raw bytes: SQLite's `BLOB`, PostgreSQL's `BYTEA`.
    fn bytes(self) -> &'static str {
        match self {
            Self::Sqlite => "BLOB",
            Self::Postgres => "BYTEA",
        }
    }

    /// The 64-bit integer type of the first tables (`patterns`, `schema_migrations`): SQLite's
    /// `INTEGER` (for `INTEGER PRIMARY KEY`, an alias of the rowid), PostgreSQL's `BIGINT`. Later
    /// migrations write `BIGINT` for both (SQLite gives it the same integer affinity); a released
    /// migration never changes, so both spellings stay.
    fn integer(self) -> &'static str {
        match self {
            Self::Sqlite => "INTEGER",
            Self::Postgres => "BIGINT",
        }
    }

    /// Appended to the SELECT of a row that the rest of the transaction must hold. SQLite needs
    /// nothing: its write transaction (`BEGIN IMMEDIATE`) already excludes every other writer.
    pub(crate) fn lock_row(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE",
        }
    }

    /// Appended to the SELECT of rows to take over: concurrent PostgreSQL claimers skip each
    /// other's rows instead of waiting or claiming twice; SQLite has a single writer, so its
    /// UPDATE is atomic as it is.
    pub(crate) fn lock_unclaimed(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The elements of the JSON array parameter `$1` as rows with a column `value` (for
    /// `value->>0`).
    pub(crate) fn json_rows(self) -> &'static str {
        match self {
            Self::Sqlite => "json_each($1)",
            Self::Postgres => "jsonb_array_elements($1::jsonb) AS j(value)",
        }
    }

    /// The strings of the JSON array parameter `$n` as a subquery, for `IN`: one parameter
    /// however many strings, so no statement per item and no size-bound `IN` list.
    pub(crate) fn strings(self, n: u8) -> String {
        match self {
            Self::Sqlite => format!("(SELECT value FROM json_each(${n}))"),
            Self::Postgres => format!("(SELECT jsonb_array_elements_text(${n}::jsonb))"),
        }
    }

    /// The pairs of strings of the JSON array parameter `$n` (`[["a","b"], …]`) as a subquery of
    /// two columns, for a row value `(x, y) IN …`.
    pub(crate) fn pairs(self, n: u8) -> String {
        match self {
            Self::Sqlite => format!("(SELECT value->>0, value->>1 FROM json_each(${n}))"),
            Self::Postgres => {
                format!("(SELECT value->>0, value->>1 FROM jsonb_array_elements(${n}::jsonb) AS j(value))")
            }
        }
    }

    /// `f(haystack, needle)`: the 1-based position of `needle` in `haystack`, 0 when absent.
    pub(crate) fn find(self) -> &'static str {
        match self {
            Self::Sqlite => "instr",
            Self::Postgres => "strpos",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Dialect;

    #[test]
    fn placeholders_are_rewritten_for_sqlite() {
        assert_eq!(Dialect::Sqlite.sql("a = $2 AND b = $12"), "a = ?2 AND b = ?12");
        assert_eq!(Dialect::Postgres.sql("a = $2"), "a = $2");
    }

    #[test]
    fn integers_are_each_dialects_own() {
        let ddl = "CREATE TABLE t (version {int} PRIMARY KEY)";
        assert_eq!(Dialect::Sqlite.ddl(ddl), "CREATE TABLE t (version INTEGER PRIMARY KEY)");
        assert_eq!(Dialect::Postgres.ddl(ddl), "CREATE TABLE t (version BIGINT PRIMARY KEY)");
        assert_eq!(Dialect::Sqlite.ddl("d {bytes}"), "d BLOB");
        assert_eq!(Dialect::Postgres.ddl("d {bytes}"), "d BYTEA");
    }
}
