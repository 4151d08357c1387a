//! Append-only, keyed hash chain of audit events, with signed checkpoints.
//!
//! Writing is cheap and contention-free: [`record`] inserts one row inside the caller's own
//! transaction (so an event exists exactly when its state change committed). Linking is done
//! afterwards by [`link_pending`], in batches and under one lock (a PostgreSQL advisory lock, or
//! SQLite's write lock): each unlinked event, in `seq` order, gets the next `chain_index`, the
//! previous event's hash, and `hash = HMAC-SHA-256(chain key, prev_hash || canonical event)`. An
//! event committed late (lower `seq` than one already linked) is simply linked in the next batch;
//! chain order is `chain_index`, so no committed event is ever skipped.
//!
//! [`verify`] walks the chain and recomputes every hash: an altered field, a deleted event (a gap
//! or a broken `prev_hash`), or a reordered event is reported with its index. Chained rows are
//! also protected by database triggers.
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

use std::sync::Arc;

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::{MasterKey, random_id};
use crate::storage::schema::{audit_chain_head, audit_events};
use crate::storage::{AnyConnection, Db, StorageResult, write_tx};

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

#[derive(Insertable)]
#[diesel(table_name = audit_events)]
struct InsertEvent<'a> {
    event_id: &'a str,
    occurred_at: NaiveDateTime,
    actor_type: &'a str,
    actor_id: &'a str,
    action: &'a str,
    target_type: &'a str,
    target_id: &'a str,
    details: &'a str,
}

/// Records `event` on `conn` (call it inside the transaction that makes the change). Returns the
/// event id.
impl NewEvent {
    /// Appends this event to the audit log at `at` (see [`record`]); returns its event id.
    pub fn record(
        &self,
        conn: &mut AnyConnection,
        at: chrono::DateTime<Utc>,
    ) -> StorageResult<String> {
        record(conn, self, at)
    }
}

pub fn record(
    conn: &mut AnyConnection,
    event: &NewEvent,
    at: chrono::DateTime<Utc>,
) -> StorageResult<String> {
    let event_id = random_id("evt_");
    let details = event.details.to_string();
    diesel::insert_into(audit_events::table)
        .values(InsertEvent {
            event_id: &event_id,
            occurred_at: at.naive_utc().trunc_subsecs(6),
            actor_type: event.actor.kind,
            actor_id: &event.actor.id,
            action: event.action,
            target_type: event.target.kind,
            target_id: &event.target.id,
            details: &details,
        })
        .execute(conn)?;
    metrics::counter!("consent_audit_events_recorded_total").increment(1);
    Ok(event_id)
}

/// Records many events with multi-row inserts (for set-based jobs such as the lifecycle sweep);
/// same guarantees as [`record`].
pub fn record_many(
    conn: &mut AnyConnection,
    events: &[NewEvent],
    at: chrono::DateTime<Utc>,
) -> StorageResult<()> {
    let occurred_at = at.naive_utc().trunc_subsecs(6);
    let owned: Vec<(String, String)> = events
        .iter()
        .map(|e| (random_id("evt_"), e.details.to_string()))
        .collect();
    let rows: Vec<InsertEvent<'_>> = events
        .iter()
        .zip(&owned)
        .map(|(e, (id, details))| InsertEvent {
            event_id: id,
            occurred_at,
            actor_type: e.actor.kind,
            actor_id: &e.actor.id,
            action: e.action,
            target_type: e.target.kind,
            target_id: &e.target.id,
            details,
        })
        .collect();
    crate::insert_rows!(conn, audit_events::table, &rows);
    metrics::counter!("consent_audit_events_recorded_total").increment(events.len() as u64);
    Ok(())
}

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
    pub chain_index: Option<i64>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The key the chain's hashes are computed under, and the checkpoint signing key, both derived
/// from the master key (HKDF, one purpose each).
#[derive(Clone)]
pub struct ChainKey {
    /// HMAC keyed once (the 32-byte key zero-padded to SHA-256's block, as HMAC itself does).
    mac: Hmac<Sha256>,
    signing: Arc<SigningKey>,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainKey")
            .field("checkpoint_public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl ChainKey {
    pub fn derive(master: &MasterKey) -> Self {
        let seed = master.mac_key("audit-checkpoint-ed25519");
        let mut block = Zeroizing::new([0u8; 64]);
        block[..32].copy_from_slice(master.mac_key("audit-chain").as_ref());
        Self {
            mac: <Hmac<Sha256> as hmac::digest::KeyInit>::new(block.as_ref().into()),
            signing: Arc::new(SigningKey::from_bytes(&seed)),
        }
    }

    /// The checkpoint verification key (hex), for anyone who checks checkpoints.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().as_bytes())
    }
}

/// The hash of an event at `index` following `prev_hash`: HMAC-SHA-256 under the chain key. Every
/// field is covered, in a fixed JSON encoding, so changing any of them (or the position) changes
/// the hash.
pub fn event_hash(key: &ChainKey, e: &StoredEvent, index: i64, prev_hash: &str) -> String {
    let canonical = serde_json::json!([
        index,
        e.seq,
        e.event_id,
        e.occurred_at
            .and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        e.actor_type,
        e.actor_id,
        e.action,
        e.target_type,
        e.target_id,
        e.details,
    ]);
    let mut h = key.mac.clone();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical.to_string().as_bytes());
    hex::encode(h.finalize().into_bytes())
}

/// Arbitrary constant identifying the chainer's PostgreSQL advisory lock.
const CHAIN_LOCK_KEY: i64 = 0x636f_6e73_656e_7401;

/// Links up to `batch` unlinked events into the chain; returns how many were linked. Safe to run
/// concurrently on many instances.
pub fn link_pending(conn: &mut AnyConnection, key: &ChainKey, batch: i64) -> StorageResult<usize> {
    write_tx(conn, |conn| {
        if let AnyConnection::Postgresql(_) = conn {
            diesel::sql_query(format!("SELECT pg_advisory_xact_lock({CHAIN_LOCK_KEY})"))
                .execute(conn)?;
        }
        let (mut last_index, mut last_hash): (i64, String) = audit_chain_head::table
            .filter(audit_chain_head::id.eq(1))
            .select((audit_chain_head::last_index, audit_chain_head::last_hash))
            .first(conn)?;
        // Never extend a chain whose head disagrees with its events (a head moved backwards, or
        // events beyond it): that is tampering, and linking on would re-sign it.
        let beyond: i64 = audit_events::table
            .filter(audit_events::chain_index.gt(last_index))
            .count()
            .get_result(conn)?;
        let at_head: Option<Option<String>> = audit_events::table
            .filter(audit_events::chain_index.eq(last_index))
            .select(audit_events::hash)
            .first(conn)
            .optional()?;
        let consistent = beyond == 0
            && match at_head {
                Some(hash) => hash.as_deref() == Some(last_hash.as_str()),
                None => last_index == 0 && last_hash == GENESIS_HASH,
            };
        if !consistent {
            tracing::error!(
                last_index,
                "audit chain head disagrees with the linked events; not linking (run consent audit verify)"
            );
            return Err(crate::storage::StorageError::Conflict(
                "the audit chain head disagrees with the linked events".into(),
            ));
        }
        let pending: Vec<StoredEvent> = audit_events::table
            .filter(audit_events::chain_index.is_null())
            .order(audit_events::seq.asc())
            .limit(batch)
            .select(StoredEvent::as_select())
            .load(conn)?;
        let mut links = Vec::with_capacity(pending.len());
        for e in &pending {
            let index = last_index + 1;
            let hash = event_hash(key, e, index, &last_hash);
            links.push((e.seq, index, std::mem::replace(&mut last_hash, hash)));
            last_index = index;
        }
        write_links(conn, links, &last_hash)?;
        if !pending.is_empty() {
            // The head as it advances, in the log: shipped off the host, the log is an anchor
            // the database's writers cannot rewrite (as checkpoints are).
            tracing::info!(index = last_index, hash = %last_hash, "audit chain head");
            diesel::update(audit_chain_head::table.filter(audit_chain_head::id.eq(1)))
                .set((
                    audit_chain_head::last_index.eq(last_index),
                    audit_chain_head::last_hash.eq(&last_hash),
                    audit_chain_head::updated_at.eq(Utc::now().naive_utc()),
                ))
                .execute(conn)?;
        }
        Ok(pending.len())
    })
}

/// Writes `(seq, chain_index, prev_hash)` for each event; each event's hash is the next one's
/// `prev_hash`, and the last one's is the head's. One `UPDATE ... FROM unnest(...)` per batch on
/// PostgreSQL (a statement per event made the chainer cost as much as the writes it follows);
/// one statement per event on SQLite, where a statement is an in-process call.
fn write_links(
    conn: &mut AnyConnection,
    links: Vec<(i64, i64, String)>,
    last_hash: &str,
) -> StorageResult<()> {
    let hashes: Vec<String> = links
        .iter()
        .skip(1)
        .map(|(_, _, prev)| prev.clone())
        .chain(std::iter::once(last_hash.to_string()))
        .collect();
    match conn {
        AnyConnection::Postgresql(pg) => {
            use diesel::sql_types::{Array, BigInt, Text};
            if links.is_empty() {
                return Ok(());
            }
            let (seqs, indexes, prevs): (Vec<i64>, Vec<i64>, Vec<String>) = links.into_iter().fold(
                (vec![], vec![], vec![]),
                |(mut s, mut i, mut p), (a, b, c)| {
                    s.push(a);
                    i.push(b);
                    p.push(c);
                    (s, i, p)
                },
            );
            let linked = diesel::sql_query(
                "UPDATE audit_events AS e SET chain_index = v.idx, prev_hash = v.prev, hash = v.hash \
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) AS v(seq, idx, prev, hash) \
                 WHERE e.seq = v.seq",
            )
            .bind::<Array<BigInt>, _>(&seqs)
            .bind::<Array<BigInt>, _>(&indexes)
            .bind::<Array<Text>, _>(&prevs)
            .bind::<Array<Text>, _>(&hashes)
            .execute(pg)?;
            if linked != seqs.len() {
                // Never move the head past events that were not linked.
                return Err(diesel::result::Error::RollbackTransaction.into());
            }
        }
        AnyConnection::Sqlite(_) => {
            for ((seq, index, prev), hash) in links.into_iter().zip(&hashes) {
                diesel::update(audit_events::table.filter(audit_events::seq.eq(seq)))
                    .set((
                        audit_events::chain_index.eq(index),
                        audit_events::prev_hash.eq(&prev),
                        audit_events::hash.eq(hash),
                    ))
                    .execute(conn)?;
            }
        }
    }
    Ok(())
}

/// Links everything pending (batches of 1,000).
pub fn link_all(conn: &mut AnyConnection, key: &ChainKey) -> StorageResult<usize> {
    let mut total = 0;
    loop {
        let n = link_pending(conn, key, 1_000)?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}

/// Result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChainReport {
    /// True when every linked event verifies and the head matches.
    pub valid: bool,
    /// Linked events checked.
    pub events_checked: i64,
    /// Events written but not yet linked (normally only the last second's).
    pub unlinked_events: i64,
    /// Chain index of the head.
    pub head_index: i64,
    /// First problem found, if any.
    pub first_error: Option<ChainError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChainError {
    /// Chain index at which verification failed.
    pub chain_index: i64,
    pub reason: String,
}

/// Recomputes the whole chain, from one snapshot of the database: the head and every page of
/// events are read in one read transaction (REPEATABLE READ on PostgreSQL; on SQLite in WAL mode
/// a transaction reads one snapshot), so a linker running meanwhile on any instance cannot make
/// the head and the events disagree. Must not be called inside another transaction.
pub fn verify(conn: &mut AnyConnection, key: &ChainKey) -> StorageResult<ChainReport> {
    Ok(verify_with(conn, key, None)?.0)
}

/// [`verify`], and also that the chain still holds the checkpointed event with the
/// checkpointed hash (so nothing up to it was altered, deleted, reordered or cut off). The
/// checkpoint's signature must be this deployment's (see [`Checkpoint::check_signature`]).
pub fn verify_against(
    conn: &mut AnyConnection,
    key: &ChainKey,
    checkpoint: &Checkpoint,
) -> StorageResult<ChainReport> {
    if let Err(reason) = checkpoint.check_signature(key) {
        return Ok(ChainReport {
            valid: false,
            events_checked: 0,
            unlinked_events: 0,
            head_index: 0,
            first_error: Some(ChainError {
                chain_index: checkpoint.chain_index,
                reason,
            }),
        });
    }
    Ok(verify_with(conn, key, Some(checkpoint))?.0)
}

fn verify_with(
    conn: &mut AnyConnection,
    key: &ChainKey,
    checkpoint: Option<&Checkpoint>,
) -> StorageResult<(ChainReport, String)> {
    conn.transaction(|c| {
        if let AnyConnection::Postgresql(pg) = c {
            diesel::sql_query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(pg)?;
        }
        let (mut report, head_hash) = verify_snapshot(c, key, checkpoint)?;
        if let Some(cp) = checkpoint
            && report.valid
            && report.head_index < cp.chain_index
        {
            report.valid = false;
            report.first_error = Some(ChainError {
                chain_index: report.head_index + 1,
                reason: format!(
                    "the chain ends at {} but the checkpoint vouches for {}: events were removed",
                    report.head_index, cp.chain_index
                ),
            });
        }
        Ok((report, head_hash))
    })
}

fn verify_snapshot(
    conn: &mut AnyConnection,
    key: &ChainKey,
    checkpoint: Option<&Checkpoint>,
) -> StorageResult<(ChainReport, String)> {
    let (head_index, head_hash): (i64, String) = audit_chain_head::table
        .filter(audit_chain_head::id.eq(1))
        .select((audit_chain_head::last_index, audit_chain_head::last_hash))
        .first(conn)?;
    let unlinked_events: i64 = audit_events::table
        .filter(audit_events::chain_index.is_null())
        .count()
        .get_result(conn)?;
    let mut report = ChainReport {
        valid: true,
        events_checked: 0,
        unlinked_events,
        head_index,
        first_error: None,
    };
    let fail = |report: &mut ChainReport, index: i64, reason: String| {
        report.valid = false;
        report.first_error = Some(ChainError {
            chain_index: index,
            reason,
        });
    };
    let mut expected_index = 1_i64;
    let mut prev_hash = GENESIS_HASH.to_string();
    loop {
        let page: Vec<StoredEvent> = audit_events::table
            .filter(audit_events::chain_index.ge(expected_index))
            .order(audit_events::chain_index.asc())
            .limit(1_000)
            .select(StoredEvent::as_select())
            .load(conn)?;
        if page.is_empty() {
            break;
        }
        for e in page {
            let index = e.chain_index.unwrap_or_default();
            if index != expected_index {
                fail(
                    &mut report,
                    expected_index,
                    format!("event {expected_index} is missing"),
                );
                return Ok((report, head_hash));
            }
            if e.prev_hash.as_deref() != Some(prev_hash.as_str()) {
                fail(&mut report, index, "previous-hash link is broken".into());
                return Ok((report, head_hash));
            }
            let hash = event_hash(key, &e, index, &prev_hash);
            if e.hash.as_deref() != Some(hash.as_str()) {
                fail(
                    &mut report,
                    index,
                    "event content does not match its hash".into(),
                );
                return Ok((report, head_hash));
            }
            if let Some(cp) = checkpoint
                && cp.chain_index == index
                && cp.hash != hash
            {
                fail(
                    &mut report,
                    index,
                    "the chain up to here differs from the checkpoint".into(),
                );
                return Ok((report, head_hash));
            }
            report.events_checked += 1;
            expected_index += 1;
            prev_hash = hash;
        }
    }
    if expected_index - 1 != head_index || prev_hash != head_hash {
        fail(
            &mut report,
            expected_index,
            format!(
                "chain ends at {} but the head says {head_index}",
                expected_index - 1
            ),
        );
    }
    Ok((report, head_hash))
}

/// A signed statement of the chain's head: "event `chain_index` has hash `hash`" (and so, by
/// the chain, every event before it), signed at `issued_at` with the deployment's checkpoint key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Always `consent-audit-checkpoint/1`.
    pub format: String,
    pub chain_index: i64,
    pub hash: String,
    /// RFC 3339.
    pub issued_at: String,
    /// Hex Ed25519 public key of the signer (the deployment's, derived from its master key).
    pub public_key: String,
    /// Hex Ed25519 signature over [`Checkpoint::signed_bytes`].
    pub signature: String,
}

pub const CHECKPOINT_FORMAT: &str = "consent-audit-checkpoint/1";

impl Checkpoint {
    /// What is signed: format, index, hash and time, one per line.
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "{}\n{}\n{}\n{}",
            self.format, self.chain_index, self.hash, self.issued_at
        )
        .into_bytes()
    }

    /// Refuses a checkpoint not signed by this deployment's key (or altered since).
    pub fn check_signature(&self, key: &ChainKey) -> Result<(), String> {
        if self.format != CHECKPOINT_FORMAT {
            return Err(format!("unknown checkpoint format {:?}", self.format));
        }
        let ours = key.signing.verifying_key();
        if self.public_key != hex::encode(ours.as_bytes()) {
            return Err("the checkpoint was signed by another key than this deployment's".into());
        }
        let signature = hex::decode(&self.signature)
            .ok()
            .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
            .ok_or("the checkpoint's signature is malformed")?;
        ours.verify_strict(&self.signed_bytes(), &signature)
            .map_err(|_| "the checkpoint's signature does not verify".to_string())
    }
}

/// Links everything pending, verifies the whole chain, and signs its head. Refuses (returns the
/// failing report) when the chain does not verify: a checkpoint vouches only for a sound chain.
pub fn checkpoint(
    conn: &mut AnyConnection,
    key: &ChainKey,
    at: chrono::DateTime<Utc>,
) -> StorageResult<Result<Checkpoint, ChainReport>> {
    link_all(conn, key)?;
    // The head's index and hash from the snapshot that was verified (a linker on another
    // instance may move the head meanwhile: a later read could pair this index with its hash).
    let (report, hash) = verify_with(conn, key, None)?;
    if !report.valid {
        return Ok(Err(report));
    }
    let mut cp = Checkpoint {
        format: CHECKPOINT_FORMAT.into(),
        chain_index: report.head_index,
        hash,
        issued_at: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        public_key: key.public_key_hex(),
        signature: String::new(),
    };
    cp.signature = hex::encode(key.signing.sign(&cp.signed_bytes()).to_bytes());
    Ok(Ok(cp))
}

/// Handle used by the server: records are written by services directly with [`record`]; this
/// runs the background linker and verification off the async executor.
#[derive(Debug, Clone)]
pub struct AuditLog {
    db: Db,
    key: ChainKey,
}

impl AuditLog {
    pub fn new(db: Db, key: ChainKey) -> Self {
        Self { db, key }
    }

    /// The chain key (for one-off commands that link or verify on their own connection).
    pub fn key(&self) -> &ChainKey {
        &self.key
    }

    /// Links everything pending now.
    pub async fn link_now(&self) -> StorageResult<usize> {
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
