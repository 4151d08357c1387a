//! Append-only, keyed hash chain of audit events, with signed checkpoints.
//!
//! Writing is cheap and contention-free: [`record`] inserts one row inside the caller's own
//! transaction (so an event exists exactly when its state change committed). Linking is done
//! afterwards by [`link_pending`], in batches and under one lock (a PostgreSQL advisory lock, or
//! SQLite's write lock): each unlinked event, in commit order, gets the next `chain_index` and
//! `hash = HMAC-SHA-256(chain key, previous hash || canonical event)`, written as one row of the
//! insert-only `audit_links` (the event itself is never updated). Commit order: on SQLite, with
//! its one writer, `seq`; on PostgreSQL, each pass links the committed events that have no link
//! yet, from a floor before which all are linked (transaction id, seq; see [`link_pending`]). So an
//! event whose transaction commits late is linked after it commits, never skipped.
//!
//! [`verify`] walks the chain and recomputes every hash: an altered field, a deleted event or link
//! (a gap), or a reordered event is reported with its index. Both tables are also protected by
//! database triggers (no UPDATE, no DELETE).
//!
//! The chain key ([`ChainKey`]) is derived from the master key, which is not in the database:
//! whoever can write the database (and drop the triggers) but does not hold the master key cannot
//! compute a consistent chain for altered events. What they can still do is cut the end off
//! (delete the newest events and point the head at an earlier one), or unlink the newest events,
//! alter them and point the head back, so that a running server links them again under the key.
//! The linker refuses a head that disagrees with the linked events, and logs the head each time
//! it advances (an anchor outside the database when logs are shipped off the host), but only
//! evidence kept outside the database settles it. A [`Checkpoint`] is that evidence:
//! `consent audit checkpoint` signs the head (index, hash, time) with an Ed25519 key derived from
//! the master key; operators ship it off the database (log archive, ticket, WORM store), and
//! `consent audit verify --checkpoint FILE` proves that every event up to it is still there,
//! unaltered and in order.

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use serde::Serialize;

use crate::crypto::random_id;
use crate::storage::schema::audit_events;
use crate::storage::{AnyConnection, Db, StorageResult};

mod chain;
mod checkpoint;
mod custody;

pub use chain::*;
pub use checkpoint::*;
pub use custody::record_custody;

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub kind: &'static str,
    pub id: String,
}

impl Actor {
    pub fn customer(id: impl Into<String>) -> Self {
        Self {
            kind: "customer",
            id: id.into(),
        }
    }
    pub fn client(id: impl Into<String>) -> Self {
        Self {
            kind: "client",
            id: id.into(),
        }
    }
    pub fn developer(id: impl Into<String>) -> Self {
        Self {
            kind: "developer",
            id: id.into(),
        }
    }
    pub fn staff(id: impl Into<String>) -> Self {
        Self {
            kind: "staff",
            id: id.into(),
        }
    }
    /// The service itself (sweeper, start-up, CLI).
    pub fn system(component: impl Into<String>) -> Self {
        Self {
            kind: "system",
            id: component.into(),
        }
    }
}

/// What it was done to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub kind: &'static str,
    pub id: String,
}

impl Target {
    pub fn new(kind: &'static str, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
        }
    }
}

/// An event to record. `details` must never contain secrets or PII (ids and decisions only).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub actor: Actor,
    pub action: &'static str,
    pub target: Target,
    pub details: serde_json::Value,
}

impl NewEvent {
    pub fn new(actor: Actor, action: &'static str, target: Target) -> Self {
        Self {
            actor,
            action,
            target,
            details: serde_json::Value::Object(Default::default()),
        }
    }
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// An event's row as written: by [`record`], and by a statement that writes the event with the
/// change it records (a PostgreSQL CTE binds these columns; count it with [`recorded`] once that
/// statement has committed).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_events)]
pub struct PreparedEvent {
    pub event_id: String,
    pub occurred_at: NaiveDateTime,
    pub actor_type: &'static str,
    pub actor_id: String,
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: String,
    /// JSON.
    pub details: String,
}

impl NewEvent {
    /// Appends this event to the audit log at `at` (see [`record`]); returns its event id.
    pub fn record(
        &self,
        conn: &mut AnyConnection,
        at: chrono::DateTime<Utc>,
    ) -> StorageResult<String> {
        record(conn, self, at)
    }

    /// This event's row at `at`, under a new event id.
    pub fn prepared(&self, at: chrono::DateTime<Utc>) -> PreparedEvent {
        PreparedEvent {
            event_id: random_id("evt_"),
            occurred_at: at.naive_utc().trunc_subsecs(6),
            actor_type: self.actor.kind,
            actor_id: self.actor.id.clone(),
            action: self.action,
            target_type: self.target.kind,
            target_id: self.target.id.clone(),
            details: self.details.to_string(),
        }
    }
}

/// Counts `n` events written (the metric `consent_audit_events_recorded_total`).
pub fn recorded(n: u64) {
    metrics::counter!("consent_audit_events_recorded_total").increment(n);
}

/// Records `event` on `conn` (call it inside the transaction that makes the change). Returns the
/// event id.
pub fn record(
    conn: &mut AnyConnection,
    event: &NewEvent,
    at: chrono::DateTime<Utc>,
) -> StorageResult<String> {
    let row = event.prepared(at);
    diesel::insert_into(audit_events::table)
        .values(&row)
        .execute(conn)?;
    recorded(1);
    Ok(row.event_id)
}

/// Records many events with multi-row inserts (for set-based jobs such as the lifecycle sweep);
/// same guarantees as [`record`].
pub fn record_many(
    conn: &mut AnyConnection,
    events: &[NewEvent],
    at: chrono::DateTime<Utc>,
) -> StorageResult<()> {
    let rows: Vec<PreparedEvent> = events.iter().map(|e| e.prepared(at)).collect();
    if let AnyConnection::Postgresql(pg) = conn {
        use crate::storage::{ARRAY_ROWS, PgBind as B, PgStatement, column};
        let occurred_at = at.naive_utc().trunc_subsecs(6);
        for rows in rows.chunks(ARRAY_ROWS) {
            let event_id = column(rows, |r| r.event_id.clone());
            let actor_type = column(rows, |r| r.actor_type.to_string());
            let actor_id = column(rows, |r| r.actor_id.clone());
            let action = column(rows, |r| r.action.to_string());
            let target_type = column(rows, |r| r.target_type.to_string());
            let target_id = column(rows, |r| r.target_id.clone());
            let details = column(rows, |r| r.details.clone());
            PgStatement::new(
                INSERT_EVENTS_SQL,
                vec![
                    B::Timestamp(&occurred_at),
                    B::TextArray(&event_id),
                    B::TextArray(&actor_type),
                    B::TextArray(&actor_id),
                    B::TextArray(&action),
                    B::TextArray(&target_type),
                    B::TextArray(&target_id),
                    B::TextArray(&details),
                ],
            )
            .execute(pg)?;
        }
    } else {
        crate::insert_rows!(conn, audit_events::table, &rows);
    }
    recorded(events.len() as u64);
    Ok(())
}

/// [`record_many`] on PostgreSQL: the same statement for any number of events (arrays, one per
/// column), in the order given (`seq` follows it).
const INSERT_EVENTS_SQL: &str = "INSERT INTO audit_events \
    (event_id, occurred_at, actor_type, actor_id, action, target_type, target_id, details) \
    SELECT e, $1, a, b, c, d, f, g \
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) \
    WITH ORDINALITY AS u(e, a, b, c, d, f, g, n) ORDER BY n";

/// A stored event, as read back for queries and verification.
#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = audit_events)]
pub struct StoredEvent {
    pub seq: i64,
    pub event_id: String,
    pub occurred_at: NaiveDateTime,
    pub actor_type: String,
    pub actor_id: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub details: String,
}

/// Handle used by the server: records are written by services directly with [`record`]; this
/// runs the background linker and verification off the async executor.
#[derive(Debug, Clone)]
pub struct AuditLog {
    db: Db,
    key: ChainKey,
    /// HSM operations to write before each linking pass (an HSM-held master key).
    custody: Option<crate::crypto::CustodyJournal>,
}

impl AuditLog {
    pub fn new(db: Db, key: ChainKey) -> Self {
        Self {
            db,
            key,
            custody: None,
        }
    }

    /// Writes the HSM operations `journal` collects into the log (see [`AuditLog::link_now`]).
    pub fn with_custody(mut self, journal: Option<crate::crypto::CustodyJournal>) -> Self {
        self.custody = journal;
        self
    }

    /// Writes the HSM operations done since the last call (one event each); on failure they
    /// stay queued for the next call.
    pub async fn flush_custody(&self) -> StorageResult<usize> {
        let Some(journal) = &self.custody else {
            return Ok(0);
        };
        let events = journal.take();
        if events.is_empty() {
            return Ok(0);
        }
        let copy = events.clone();
        match self.db.write(move |c| record_custody(c, &copy)).await {
            Ok(n) => Ok(n),
            Err(e) => {
                journal.restore(events);
                Err(e)
            }
        }
    }

    /// [`AuditLog::flush_custody`] for synchronous callers (start-up, one-off commands).
    pub fn flush_custody_blocking(&self) -> StorageResult<usize> {
        let Some(journal) = &self.custody else {
            return Ok(0);
        };
        let events = journal.take();
        if events.is_empty() {
            return Ok(0);
        }
        match self.db.write_blocking(|c| record_custody(c, &events)) {
            Ok(n) => Ok(n),
            Err(e) => {
                journal.restore(events);
                Err(e)
            }
        }
    }

    /// The chain key (for one-off commands that link or verify on their own connection).
    pub fn key(&self) -> &ChainKey {
        &self.key
    }

    /// Links everything pending now (after writing the HSM operations done since the last pass).
    pub async fn link_now(&self) -> StorageResult<usize> {
        if let Err(e) = self.flush_custody().await {
            tracing::warn!(error = %e, "writing HSM audit events failed; will retry");
        }
        let key = self.key.clone();
        self.db.run(move |c| link_all(c, &key)).await
    }

    pub async fn verify(&self) -> StorageResult<ChainReport> {
        let key = self.key.clone();
        self.db.run(move |c| verify(c, &key)).await
    }

    /// [`verify_against`] a checkpoint.
    pub async fn verify_against(&self, checkpoint: Checkpoint) -> StorageResult<ChainReport> {
        let key = self.key.clone();
        self.db
            .run(move |c| verify_against(c, &key, &checkpoint))
            .await
    }

    /// A signed checkpoint of the current head ([`checkpoint`]).
    pub async fn checkpoint(&self) -> StorageResult<Result<Checkpoint, ChainReport>> {
        let key = self.key.clone();
        let now = Utc::now();
        self.db.run(move |c| checkpoint(c, &key, now)).await
    }

    /// Records a single event in its own transaction (for actions with no other write).
    pub async fn record_one(
        &self,
        event: NewEvent,
        at: chrono::DateTime<Utc>,
    ) -> StorageResult<String> {
        self.db.write(move |conn| record(conn, &event, at)).await
    }

    /// Runs the linker every `interval` until `shutdown` fires, then links once more.
    pub fn spawn_linker(
        &self,
        interval: std::time::Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => {
                        let _ = this.link_now().await;
                        return;
                    }
                }
                match this.link_now().await {
                    Ok(n) if n > 0 => {
                        metrics::counter!("consent_audit_events_linked_total").increment(n as u64)
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "audit chain linking failed; will retry"),
                }
            }
        })
    }
}
