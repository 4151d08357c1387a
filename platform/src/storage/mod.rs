//! Storage: diesel over SQLite (embedded default) or PostgreSQL, one code path, chosen by URL.
//!
//! Queries are synchronous diesel calls run on tokio's blocking pool through [`Db::run`] /
//! [`Db::write`], so they never stall the async executor. Writes go through [`Db::write`], which
//! opens an `IMMEDIATE` transaction on SQLite (taking the write lock up front avoids
//! deadlock-prone lock upgrades) and a normal transaction on PostgreSQL.

pub mod batch;
pub mod commit_order;
pub mod models;
pub mod schema;

use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{
    ConnectionManager, CustomizeConnection, ManageConnection, Pool, PooledConnection,
};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// Raw SQL written with `?` placeholders, numbered `$1, $2, ...` for PostgreSQL (SQLite takes `?`
/// as is). For the few set-based queries diesel's DSL cannot express (locking clauses, COALESCE
/// over an expression index).
pub fn numbered(c: &AnyConnection, sql: &str) -> String {
    if !matches!(c, AnyConnection::Postgresql(_)) {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(ch);
        }
    }
    out
}

/// A bind value of a [`PgStatement`].
#[derive(Debug, Clone, Copy)]
pub enum PgBind<'a> {
    Text(&'a str),
    Timestamp(&'a chrono::NaiveDateTime),
    TextArray(&'a [String]),
    NullableTextArray(&'a [Option<String>]),
    TimestampArray(&'a [chrono::NaiveDateTime]),
    BigInt(i64),
    BigIntArray(&'a [i64]),
}

/// A fixed SQL statement for PostgreSQL that diesel prepares once per connection and reuses
/// (`diesel::sql_query` is never cached, so every call would be parsed and planned again). For
/// the hot paths that need what the query DSL cannot say, such as one statement that rotates a
/// refresh token and writes everything that goes with it through data-modifying CTEs. The SQL
/// must be a constant (the statement cache is keyed by its text); `$n` refers to the n-th bind
/// and may appear more than once. Every `$` is read as a bind reference, so the SQL must not use
/// `$` otherwise (no dollar quoting, no `$` inside literals or comments).
#[derive(Debug)]
pub struct PgStatement<'a> {
    sql: &'static str,
    binds: Vec<PgBind<'a>>,
}

impl<'a> PgStatement<'a> {
    pub fn new(sql: &'static str, binds: Vec<PgBind<'a>>) -> Self {
        Self { sql, binds }
    }
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for PgStatement<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamp};
        // `$n` in the SQL names the n-th bind. Diesel numbers placeholders itself as binds are
        // pushed, so each reference is emitted as a fresh placeholder carrying that value.
        let mut rest = self.sql;
        while let Some(at) = rest.find('$') {
            out.push_sql(&rest[..at]);
            let digits = rest[at + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            let n: usize = rest[at + 1..at + 1 + digits].parse().map_err(|_| {
                diesel::result::Error::QueryBuilderError("`$` without a bind number".into())
            })?;
            let bind = n
                .checked_sub(1)
                .and_then(|i| self.binds.get(i))
                .ok_or_else(|| {
                    diesel::result::Error::QueryBuilderError(format!("no bind ${n}").into())
                })?;
            match bind {
                PgBind::Text(v) => out.push_bind_param::<Text, str>(v)?,
                PgBind::Timestamp(v) => out.push_bind_param::<Timestamp, _>(*v)?,
                PgBind::TextArray(v) => out.push_bind_param::<Array<Text>, [String]>(v)?,
                PgBind::NullableTextArray(v) => {
                    out.push_bind_param::<Array<Nullable<Text>>, [Option<String>]>(v)?
                }
                PgBind::TimestampArray(v) => {
                    out.push_bind_param::<Array<Timestamp>, [chrono::NaiveDateTime]>(v)?
                }
                PgBind::BigInt(v) => out.push_bind_param::<BigInt, i64>(v)?,
                PgBind::BigIntArray(v) => out.push_bind_param::<Array<BigInt>, [i64]>(v)?,
            }
            rest = &rest[at + 1 + digits..];
        }
        out.push_sql(rest);
        Ok(())
    }
}

impl diesel::query_builder::QueryId for PgStatement<'_> {
    type QueryId = ();
    // Keyed by SQL text (and bind types) in diesel's statement cache.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for PgStatement<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl RunQueryDsl<PgConnection> for PgStatement<'_> {}

/// One column of `rows`, for a set-based insert on PostgreSQL: `INSERT ... SELECT ... FROM
/// unnest($1, $2, ...)` with one array bind per column. Unlike a multi-row `VALUES` list (a bind
/// per value, a new statement text for every row count, parsed and planned on each call), it is
/// one [`PgStatement`] whatever the number of rows, prepared once per connection.
pub fn column<T>(rows: &[T], f: impl Fn(&T) -> String) -> Vec<String> {
    rows.iter().map(f).collect()
}

/// The most rows one array insert carries (see [`column`]): a transaction that ends a million
/// grants sends statements of bounded size, as the `VALUES` lists it replaced did (1,000 rows).
pub const ARRAY_ROWS: usize = 10_000;

/// ` FOR NO KEY UPDATE OF <alias> SKIP LOCKED` on PostgreSQL, so that several instances running
/// the same background job take disjoint rows; nothing on SQLite, whose write transaction (BEGIN
/// IMMEDIATE) already serializes them. `NO KEY`: the jobs change no keys, and a plain `FOR UPDATE`
/// would also block rows of other tables that reference these (foreign-key checks take key-share
/// locks), e.g. a refresh inserting its new token under a grant the sweep holds.
pub fn skip_locked(c: &AnyConnection, alias: &str) -> String {
    if matches!(c, AnyConnection::Postgresql(_)) {
        format!(" FOR NO KEY UPDATE OF {alias} SKIP LOCKED")
    } else {
        String::new()
    }
}

/// Inserts many rows of one `Insertable` type in the caller's transaction: multi-row `INSERT`s
/// of up to 1,000 rows on PostgreSQL (one round trip each), one row per statement on SQLite (an
/// in-process call; diesel's `MultiConnection` cannot batch there because SQLite lacks the
/// `DEFAULT` keyword). Evaluates to the number of rows written, or returns the error.
#[macro_export]
macro_rules! insert_rows {
    ($conn:expr, $table:expr, $rows:expr) => {{
        use diesel::RunQueryDsl as _;
        let rows = $rows;
        let mut written = 0usize;
        match $conn {
            $crate::storage::AnyConnection::Postgresql(c) => {
                for chunk in rows.chunks(1_000) {
                    written += diesel::insert_into($table).values(chunk).execute(c)?;
                }
            }
            $crate::storage::AnyConnection::Sqlite(c) => {
                for row in rows.iter() {
                    written += diesel::insert_into($table).values(row).execute(c)?;
                }
            }
        }
        written
    }};
}

/// One connection type over both backends.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

impl std::fmt::Debug for AnyConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AnyConnection::Postgresql(_) => "AnyConnection::Postgresql",
            AnyConnection::Sqlite(_) => "AnyConnection::Sqlite",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Storage failures, mapped to HTTP in exactly one place (`crate::problem`).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("record not found")]
    NotFound,
    #[error("conflicting record: {0}")]
    Conflict(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(#[source] diesel::result::Error),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
}

impl From<diesel::result::Error> for StorageError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::NotFound => StorageError::NotFound,
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                StorageError::Conflict(info.message().to_string())
            }
            // Retrying can succeed: the client gets a 503, never a 500. `UnableToSendCommand` is
            // libpq failing to send on a connection the server dropped (a PostgreSQL restart:
            // "no connection to the server"); the connection is then broken and discarded.
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection
                | DatabaseErrorKind::UnableToSendCommand
                | DatabaseErrorKind::SerializationFailure,
                info,
            ) => StorageError::Unavailable(info.message().to_string()),
            // PostgreSQL broke a deadlock (SQLSTATE 40P01) by aborting this transaction: it
            // wrote nothing, and running it again can succeed. diesel has no kind for it, and
            // the server's message for it is fixed (with the default, English, lc_messages).
            Error::DatabaseError(DatabaseErrorKind::Unknown, info)
                if info.message().starts_with("deadlock detected") =>
            {
                StorageError::Unavailable(info.message().to_string())
            }
            other => StorageError::Query(other),
        }
    }
}

impl From<diesel::r2d2::PoolError> for StorageError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        StorageError::Unavailable(e.to_string())
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Applies per-connection SQLite settings: WAL for concurrent readers, a busy timeout instead of
/// immediate `SQLITE_BUSY`, enforced foreign keys, and `synchronous=FULL` so an acknowledged
/// write survives power loss.
#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<PoolConn, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut PoolConn) -> Result<(), diesel::r2d2::Error> {
        if let AnyConnection::Sqlite(c) = &mut conn.conn {
            // busy_timeout first, so the remaining statements wait instead of failing with
            // "database is locked" while other pool connections open. WAL is set once in
            // `Db::connect` (it is persistent in the file).
            c.batch_execute(
                "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;",
            )
            .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// A connection idle at least this long is pinged before it is handed out.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(5);

/// A pooled connection and when it was last handed out.
///
/// Pinging on every checkout cost one extra round trip per request, a large share of a token
/// grant. Busy connections are not pinged; one idle for [`PING_WHEN_IDLE_FOR`] is (a proxy or
/// firewall may have cut it, or the server restarted meanwhile), and a dead one is replaced before
/// any request sees it. A busy connection the server drops fails the one query that meets it
/// (503), and r2d2 discards it: any [`StorageError::Unavailable`] marks the connection broken
/// (`lost`), since diesel marks it so only inside a transaction (tested in
/// tests/integration/backends.rs, and for a connection cut mid-statement in the batched token
/// statements' tests).
#[derive(Debug)]
pub struct PoolConn {
    conn: AnyConnection,
    handed_out_at: Instant,
    /// A query on it failed as [`StorageError::Unavailable`]: the connection may be dead (a
    /// failure that left it usable, a deadlock say, costs only a new connection).
    lost: bool,
    /// The PostgreSQL server process serving the connection, read when it opened (`None` on
    /// SQLite).
    server: Option<ServerProcess>,
}

/// One PostgreSQL server process, told apart from a later one with the same pid by its start
/// time: what [`Db::end_server_process`] ends.
///
/// With a pooler in transaction mode between the service and PostgreSQL, this names whichever
/// server process answered when the connection opened, not the one a later statement runs on:
/// run the service against PostgreSQL directly or through a pooler in session mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct ServerProcess {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
    /// `backend_start` in microseconds since the epoch.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    started: i64,
}

const SERVER_PROCESS_SQL: &str = "SELECT pid, \
    (extract(epoch FROM backend_start) * 1000000)::int8 AS started \
    FROM pg_stat_activity WHERE pid = pg_backend_pid()";

#[derive(Debug)]
struct Manager(ConnectionManager<AnyConnection>, Backend, String);

impl ManageConnection for Manager {
    type Connection = PoolConn;
    type Error = diesel::r2d2::Error;

    /// Opens the configured backend only. `AnyConnection::establish` tries PostgreSQL, then
    /// SQLite with the same URL, and reports neither error ("Invalid connection url for
    /// multiconnection"): while PostgreSQL is down, the logs and every 503's cause would blame
    /// the URL instead of saying that the server refused the connection.
    fn connect(&self) -> Result<PoolConn, Self::Error> {
        use diesel::r2d2::Error::ConnectionError;
        let (conn, server) = match self.1 {
            Backend::Postgres => {
                let mut pg = PgConnection::establish(&self.2).map_err(ConnectionError)?;
                let server = diesel::sql_query(SERVER_PROCESS_SQL)
                    .get_result::<ServerProcess>(&mut pg)
                    .map_err(diesel::r2d2::Error::QueryError)?;
                (AnyConnection::Postgresql(pg), Some(server))
            }
            Backend::Sqlite => (
                AnyConnection::Sqlite(
                    SqliteConnection::establish(&self.2).map_err(ConnectionError)?,
                ),
                None,
            ),
        };
        Ok(PoolConn {
            conn,
            handed_out_at: Instant::now(),
            lost: false,
            server,
        })
    }

    fn is_valid(&self, conn: &mut PoolConn) -> Result<(), Self::Error> {
        if conn.handed_out_at.elapsed() >= PING_WHEN_IDLE_FOR {
            self.0.is_valid(&mut conn.conn)?;
        }
        conn.handed_out_at = Instant::now();
        Ok(())
    }

    fn has_broken(&self, conn: &mut PoolConn) -> bool {
        conn.lost || self.0.has_broken(&mut conn.conn)
    }
}

/// A pool of connections to one database.
#[derive(Clone)]
pub struct Db {
    pool: Pool<Manager>,
    backend: Backend,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Db {
    /// Connects to `url` (`postgres://...`, `sqlite://path`, or a file path).
    pub fn connect(url: &str, pool_size: u32, connect_timeout: Duration) -> StorageResult<Self> {
        let (backend, conn_url) = if is_postgres_url(url) {
            (Backend::Postgres, url.to_string())
        } else {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            if path.is_empty() {
                return Err(StorageError::InvalidUrl("empty SQLite path".into()));
            }
            if let Some(parent) = Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StorageError::InvalidUrl(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            // WAL lets readers proceed during a write; it is a property of the file, so set it
            // once on a dedicated connection before the pool opens its connections.
            let mut c = SqliteConnection::establish(path)
                .map_err(|e| StorageError::Unavailable(e.to_string()))?;
            c.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL;")?;
            (Backend::Sqlite, path.to_string())
        };
        let manager = Manager(
            ConnectionManager::<AnyConnection>::new(conn_url.clone()),
            backend,
            conn_url,
        );
        let pool = Pool::builder()
            .max_size(pool_size)
            // `Manager::is_valid` pings only connections idle for a while.
            .test_on_check_out(true)
            .connection_timeout(connect_timeout)
            .connection_customizer(Box::new(SqlitePragmas))
            .build(manager)?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn conn(&self) -> StorageResult<PooledConnection<Manager>> {
        Ok(self.pool.get()?)
    }

    /// Applies pending migrations for this backend; returns the versions applied.
    pub fn migrate(&self) -> StorageResult<Vec<String>> {
        self.migrations(false)
    }

    pub fn has_pending_migrations(&self) -> StorageResult<bool> {
        let mut conn = self.conn()?;
        match &mut conn.conn {
            AnyConnection::Sqlite(c) => c.has_pending_migration(SQLITE_MIGRATIONS),
            AnyConnection::Postgresql(c) => c.has_pending_migration(POSTGRES_MIGRATIONS),
        }
        .map_err(|e| StorageError::Migration(e.to_string()))
    }

    /// Reverts every applied migration (used by tests and `consent migrate --revert-all`).
    pub fn revert_all(&self) -> StorageResult<Vec<String>> {
        self.migrations(true)
    }

    /// Applies the pending migrations, or reverts every applied one; the versions touched.
    fn migrations(&self, revert: bool) -> StorageResult<Vec<String>> {
        fn on<DB: diesel::backend::Backend>(
            harness: &mut impl MigrationHarness<DB>,
            source: EmbeddedMigrations,
            revert: bool,
        ) -> StorageResult<Vec<String>> {
            let versions = if revert {
                harness.revert_all_migrations(source)
            } else {
                harness.run_pending_migrations(source)
            };
            versions
                .map(|v| v.into_iter().map(|v| v.to_string()).collect())
                .map_err(|e| StorageError::Migration(e.to_string()))
        }
        let mut conn = self.conn()?;
        match &mut conn.conn {
            AnyConnection::Sqlite(c) => on(c, SQLITE_MIGRATIONS, revert),
            AnyConnection::Postgresql(c) => on(c, POSTGRES_MIGRATIONS, revert),
        }
    }

    /// Runs `f` on a pooled connection on the blocking thread pool.
    pub async fn run<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut AnyConnection) -> StorageResult<T> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.on_conn(|c| f(&mut c.conn)))
            .await
            .map_err(|e| StorageError::Unavailable(format!("database task failed: {e}")))?
    }

    /// Runs `f` inside one write transaction: every acknowledged write is committed before the
    /// caller answers, and an error rolls everything back (no partial writes).
    pub async fn write<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut AnyConnection) -> StorageResult<T> + Send + 'static,
    {
        self.run(move |conn| write_tx(conn, f)).await
    }

    /// Synchronous variant of [`Db::write`] for CLI commands and blocking contexts.
    pub fn write_blocking<T, F>(&self, f: F) -> StorageResult<T>
    where
        F: FnOnce(&mut AnyConnection) -> StorageResult<T>,
    {
        self.on_conn(|c| write_tx(&mut c.conn, f))
    }

    /// Synchronous read for CLI commands and blocking contexts.
    pub fn run_blocking<T, F>(&self, f: F) -> StorageResult<T>
    where
        F: FnOnce(&mut AnyConnection) -> StorageResult<T>,
    {
        self.on_conn(|c| f(&mut c.conn))
    }

    /// Runs `f` on a pooled connection, which the pool discards afterwards if `f` failed as
    /// [`StorageError::Unavailable`].
    fn on_conn<T>(&self, f: impl FnOnce(&mut PoolConn) -> StorageResult<T>) -> StorageResult<T> {
        let mut conn = self.conn()?;
        let result = f(&mut conn);
        if matches!(result, Err(StorageError::Unavailable(_))) {
            conn.lost = true;
        }
        result
    }

    /// [`Db::run_blocking`], also telling `f` the server process the connection is served by
    /// (for [`Db::end_server_process`] should the connection fail while a statement runs).
    pub fn run_blocking_on<T, F>(&self, f: F) -> StorageResult<T>
    where
        F: FnOnce(&mut AnyConnection, Option<ServerProcess>) -> StorageResult<T>,
    {
        self.on_conn(|c| f(&mut c.conn, c.server))
    }

    /// Ends `server` if it still runs, and returns once it has ended; from then on, nothing it
    /// was doing can still commit. For a statement whose connection failed before it answered:
    /// PostgreSQL may still be running it (a connection cut on the way, by a proxy or the
    /// network, is not seen by the server process until it next writes to it), so its outcome
    /// can be read only after this. A process already gone is fine; one that does not end within
    /// 5 s, or a role without the right to end it, is an error ([`StorageError::Unavailable`]).
    pub fn end_server_process(&self, server: ServerProcess) -> StorageResult<()> {
        #[derive(QueryableByName)]
        struct Ended {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            ended: bool,
        }
        let ended: Vec<Ended> = self.run_blocking(|c| {
            let sql = "SELECT pg_terminate_backend(pid, 5000) AS ended FROM pg_stat_activity \
                WHERE pid = $1 AND (extract(epoch FROM backend_start) * 1000000)::int8 = $2";
            Ok(diesel::sql_query(sql)
                .bind::<diesel::sql_types::Integer, _>(server.pid)
                .bind::<diesel::sql_types::BigInt, _>(server.started)
                .load(c)?)
        })?;
        match ended.iter().all(|e| e.ended) {
            true => Ok(()),
            false => Err(StorageError::Unavailable(format!(
                "PostgreSQL process {} did not end within 5 s",
                server.pid
            ))),
        }
    }

    /// Cheap liveness query for `/readyz`.
    pub async fn ping(&self) -> StorageResult<()> {
        self.run(|conn| {
            diesel::sql_query("SELECT 1").execute(conn)?;
            Ok(())
        })
        .await
    }
}

/// [`write_tx`] for work with an error type of its own: any error rolls the transaction back and
/// is returned as it is.
pub fn write_tx_as<T, E, F>(conn: &mut AnyConnection, f: F) -> Result<T, E>
where
    E: From<StorageError>,
    F: FnOnce(&mut AnyConnection) -> Result<T, E>,
{
    let mut refusal = None;
    let result = write_tx(conn, |c| {
        f(c).map_err(|e| {
            refusal = Some(e);
            // Only a marker to make `write_tx` roll back; replaced by the real error below.
            StorageError::Conflict("rolled back".into())
        })
    });
    match (result, refusal) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(e.into()),
    }
}

/// A write transaction on an existing connection (see [`Db::write`]).
pub fn write_tx<T, F>(conn: &mut AnyConnection, f: F) -> StorageResult<T>
where
    F: FnOnce(&mut AnyConnection) -> StorageResult<T>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    if let AnyConnection::Sqlite(c) = conn
        && AnsiTransactionManager::transaction_manager_status_mut(c)
            .transaction_depth()?
            .is_none()
    {
        // `BEGIN IMMEDIATE` through diesel's transaction manager (as
        // `SqliteConnection::immediate_transaction` does), so nested transactions inside `f`
        // become savepoints; the multi-connection delegates its transaction state to `c`.
        // Already inside a transaction (a service composed into a caller's), `transaction`
        // below makes a savepoint: a second BEGIN would fail.
        AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?;
        let result = f(conn);
        let AnyConnection::Sqlite(c) = conn else {
            unreachable!("the backend of a connection does not change")
        };
        return match result {
            Ok(v) => {
                AnsiTransactionManager::commit_transaction(c)?;
                Ok(v)
            }
            Err(e) => {
                // A failed rollback marks the connection broken; r2d2 then discards it.
                let _ = AnsiTransactionManager::rollback_transaction(c);
                Err(e)
            }
        };
    }
    conn.transaction(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_unavailable_not_query_errors() {
        use diesel::result::{DatabaseErrorKind, Error};
        for kind in [
            DatabaseErrorKind::ClosedConnection,
            DatabaseErrorKind::UnableToSendCommand,
            DatabaseErrorKind::SerializationFailure,
        ] {
            let e = Error::DatabaseError(kind, Box::new("no connection to the server".to_string()));
            assert!(
                matches!(StorageError::from(e), StorageError::Unavailable(_)),
                "{kind:?} is a 503"
            );
        }
        let e = Error::DatabaseError(DatabaseErrorKind::Unknown, Box::new("syntax".to_string()));
        assert!(matches!(StorageError::from(e), StorageError::Query(_)));
        let deadlock = "deadlock detected".to_string();
        let e = Error::DatabaseError(DatabaseErrorKind::Unknown, Box::new(deadlock));
        assert!(
            matches!(StorageError::from(e), StorageError::Unavailable(_)),
            "a transaction PostgreSQL aborted to break a deadlock is a 503"
        );
    }

    #[test]
    fn a_refused_connection_says_so() {
        // Nothing listens on port 1: the pool's error (what a 503 logs as its cause) names the
        // refused connection, not the URL.
        let url = "postgres://postgres@127.0.0.1:1/nothing?sslmode=disable";
        let Err(StorageError::Unavailable(e)) = Db::connect(url, 1, Duration::from_millis(300))
        else {
            panic!("connected to 127.0.0.1:1");
        };
        assert!(e.contains("127.0.0.1") && e.contains("refused"), "{e}");
        assert!(!e.contains("Invalid connection url"), "{e}");
    }

    #[test]
    fn pg_statement_emits_one_placeholder_per_reference() {
        let now = chrono::NaiveDate::from_ymd_opt(2026, 11, 24)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        let ids = vec!["a".to_string(), "b".to_string()];
        let binds = [
            PgBind::Timestamp(&now),
            PgBind::Text("t"),
            PgBind::TextArray(&ids),
        ];
        let stmt = PgStatement::new(
            "SELECT $2, $1 WHERE x = $2 AND y = ANY($3::text[]) AND z < $10",
            binds.to_vec(),
        );
        // `$10` names a bind that does not exist: the statement cannot be built (never sent).
        use std::fmt::Write as _;
        let mut sql = String::new();
        assert!(write!(sql, "{}", diesel::debug_query::<diesel::pg::Pg, _>(&stmt)).is_err());
        let stmt = PgStatement::new(
            "SELECT $2, $1 WHERE x = $2 AND y = ANY($3::text[])",
            binds.to_vec(),
        );
        let sql = diesel::debug_query::<diesel::pg::Pg, _>(&stmt).to_string();
        assert!(
            sql.starts_with("SELECT $1, $2 WHERE x = $3 AND y = ANY($4::text[])"),
            "{sql}"
        );
        assert!(
            sql.contains(r#"binds: ["t", 2026-11-24T12:00:00, "t", ["a", "b"]]"#),
            "{sql}"
        );
    }
}
