//! The keyed hash chain: linking events in order under the chain key, and verifying it.

use std::sync::Arc;

use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use ed25519_dalek::SigningKey;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{Checkpoint, StoredEvent};
use crate::crypto::MasterKey;
use crate::storage::schema::{audit_chain_head, audit_events, audit_links};
use crate::storage::{AnyConnection, StorageResult, commit_order, write_tx};

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The key the chain's hashes are computed under, and the checkpoint signing key, both derived
/// from the master key (HKDF, one purpose each).
#[derive(Clone)]
pub struct ChainKey {
    /// HMAC keyed once (the 32-byte key zero-padded to SHA-256's block, as HMAC itself does).
    mac: Hmac<Sha256>,
    pub(super) signing: Arc<SigningKey>,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainKey")
            .field("checkpoint_public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl ChainKey {
    /// The chain's keys, derived from the master key; an error when an HSM-held master key
    /// cannot derive them (start-up uses this, so a broken HSM stops it rather than chaining
    /// under a wrong key).
    pub fn try_derive(master: &MasterKey) -> Result<Self, crate::crypto::CryptoError> {
        let seed = master.try_mac_key("audit-checkpoint-ed25519")?;
        let chain = master.try_mac_key("audit-chain")?;
        Ok(Self::from_keys(&seed, &chain))
    }

    fn from_keys(seed: &[u8; 32], chain: &[u8; 32]) -> Self {
        let mut block = Zeroizing::new([0u8; 64]);
        block[..32].copy_from_slice(chain);
        Self {
            mac: <Hmac<Sha256> as hmac::digest::KeyInit>::new(block.as_ref().into()),
            signing: Arc::new(SigningKey::from_bytes(seed)),
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

/// Arbitrary constant identifying the chainer's PostgreSQL advisory lock (every linking pass
/// holds it for its transaction).
pub const CHAIN_LOCK_KEY: i64 = 0x636f_6e73_656e_7401;

/// Links up to `batch` unlinked events into the chain; returns how many were linked. Safe to run
/// concurrently on many instances.
pub fn link_pending(conn: &mut AnyConnection, key: &ChainKey, batch: i64) -> StorageResult<usize> {
    write_tx(conn, |conn| {
        if let AnyConnection::Postgresql(_) = conn {
            diesel::sql_query(format!("SELECT pg_advisory_xact_lock({CHAIN_LOCK_KEY})"))
                .execute(conn)?;
        }
        let (mut last_index, mut last_hash, floor) = read_head(conn)?;
        // Never extend a chain whose head disagrees with its links (a head moved backwards, or
        // links beyond it): that is tampering, and linking on would re-sign it.
        // Whether any exists, not how many, and in chain_index order: one probe of the primary key.
        let beyond: Option<i64> = audit_links::table
            .filter(audit_links::chain_index.gt(last_index))
            .order(audit_links::chain_index.asc())
            .select(audit_links::chain_index)
            .first(conn)
            .optional()?;
        let at_head: Option<String> = audit_links::table
            .filter(audit_links::chain_index.eq(last_index))
            .select(audit_links::hash)
            .first(conn)
            .optional()?;
        let consistent = beyond.is_none()
            && match at_head {
                Some(hash) => hash == last_hash,
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
        let (pending, next_floor) = unlinked_events(conn, floor, batch)?;
        if pending.is_empty() {
            // Nothing to link; the floor still moves up past a burst linked while some older
            // transaction ran (commit_order::floor_worth_moving).
            if let AnyConnection::Postgresql(pg) = conn
                && next_floor != floor
                && commit_order::floor_worth_moving(pg, "audit_events", floor)?
            {
                diesel::update(audit_chain_head::table.filter(audit_chain_head::id.eq(1)))
                    .set((
                        audit_chain_head::link_floor_xid.eq(next_floor.0),
                        audit_chain_head::link_floor_seq.eq(next_floor.1),
                    ))
                    .execute(conn)?;
            }
            return Ok(0);
        }
        let mut links = Vec::with_capacity(pending.len());
        for e in &pending {
            let index = last_index + 1;
            last_hash = event_hash(key, e, index, &last_hash);
            links.push(NewLink {
                chain_index: index,
                seq: e.seq,
                hash: last_hash.clone(),
            });
            last_index = index;
        }
        if let AnyConnection::Postgresql(pg) = conn {
            use crate::storage::{PgBind as B, PgStatement, column};
            let index: Vec<i64> = links.iter().map(|l| l.chain_index).collect();
            let seq: Vec<i64> = links.iter().map(|l| l.seq).collect();
            let hash = column(&links, |l| l.hash.clone());
            PgStatement::new(
                INSERT_LINKS_SQL,
                vec![
                    B::BigIntArray(&index),
                    B::BigIntArray(&seq),
                    B::TextArray(&hash),
                ],
            )
            .execute(pg)?;
        } else {
            crate::insert_rows!(conn, audit_links::table, &links);
        }
        // The head as it advances, in the log: shipped off the host, the log is an anchor
        // the database's writers cannot rewrite (as checkpoints are).
        tracing::info!(index = last_index, hash = %last_hash, "audit chain head");
        diesel::update(audit_chain_head::table.filter(audit_chain_head::id.eq(1)))
            .set((
                audit_chain_head::last_index.eq(last_index),
                audit_chain_head::last_hash.eq(&last_hash),
                audit_chain_head::link_floor_xid.eq(next_floor.0),
                audit_chain_head::link_floor_seq.eq(next_floor.1),
                audit_chain_head::updated_at.eq(Utc::now().naive_utc()),
            ))
            .execute(conn)?;
        Ok(pending.len())
    })
}

/// The chain head: last index, last hash, and the link floor (see [`unlinked_events`]).
fn read_head(conn: &mut AnyConnection) -> StorageResult<(i64, String, (i64, i64))> {
    let (index, hash, floor_xid, floor_seq) = audit_chain_head::table
        .filter(audit_chain_head::id.eq(1))
        .select((
            audit_chain_head::last_index,
            audit_chain_head::last_hash,
            audit_chain_head::link_floor_xid,
            audit_chain_head::link_floor_seq,
        ))
        .first::<(i64, String, i64, i64)>(conn)?;
    Ok((index, hash, (floor_xid, floor_seq)))
}

/// The links of one pass on PostgreSQL (a pass is bounded): the same statement for any number
/// of them (arrays, one per column).
const INSERT_LINKS_SQL: &str = "INSERT INTO audit_links (chain_index, seq, hash) \
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[])";

/// One link: event `seq` at `chain_index`, with its hash.
#[derive(Insertable)]
#[diesel(table_name = audit_links)]
struct NewLink {
    chain_index: i64,
    seq: i64,
    hash: String,
}

/// Up to `batch` committed events that have no link, oldest writer first, and the head's next
/// link floor: every event before it is linked once these are (the floor and why no event that
/// commits late is skipped: [`crate::storage::commit_order`]).
fn unlinked_events(
    conn: &mut AnyConnection,
    floor: (i64, i64),
    batch: i64,
) -> StorageResult<(Vec<StoredEvent>, (i64, i64))> {
    match conn {
        AnyConnection::Postgresql(pg) => {
            let running = commit_order::oldest_running(pg)?;
            let rows: Vec<(StoredEvent, i64)> = audit_events::table
                .filter(unlinked_from(floor))
                .order(commit_order::xid_order("audit_events"))
                .then_order_by(audit_events::seq.asc())
                .limit(batch)
                .select((
                    StoredEvent::as_select(),
                    commit_order::xid_of("audit_events"),
                ))
                .load(pg)?;
            let full = rows.len() as i64 == batch;
            let last = rows.last().filter(|_| full).map(|(e, xid)| (*xid, e.seq));
            let next = commit_order::next_floor(floor, running, last);
            Ok((rows.into_iter().map(|(e, _)| e).collect(), next))
        }
        AnyConnection::Sqlite(c) => {
            let events: Vec<StoredEvent> = audit_events::table
                .filter(audit_events::seq.ge(floor.1))
                .order(audit_events::seq.asc())
                .limit(batch)
                .select(StoredEvent::as_select())
                .load(c)?;
            let next = events.last().map_or(floor, |e| (0, e.seq + 1));
            Ok((events, next))
        }
    }
}

/// PostgreSQL: events from `floor` on with no link.
fn unlinked_from(
    floor: (i64, i64),
) -> diesel::expression::SqlLiteral<Bool, impl diesel::query_builder::QueryFragment<diesel::pg::Pg>>
{
    commit_order::not_taken_from("audit_events", "audit_links", floor)
}

/// Events written but not linked yet (committed or not yet linkable), for reports.
fn unlinked_count(conn: &mut AnyConnection, floor: (i64, i64)) -> StorageResult<i64> {
    Ok(match conn {
        AnyConnection::Postgresql(pg) => audit_events::table
            .filter(unlinked_from(floor))
            .count()
            .get_result(pg)?,
        AnyConnection::Sqlite(c) => audit_events::table
            .filter(audit_events::seq.ge(floor.1))
            .count()
            .get_result(c)?,
    })
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

/// Whether the latest linked event's hash is the one `key` gives it: a cheap check that `key` is
/// this chain's (`None` while nothing is linked).
pub fn last_link_verifies(conn: &mut AnyConnection, key: &ChainKey) -> StorageResult<Option<bool>> {
    let last: Option<(i64, String, StoredEvent)> = audit_links::table
        .inner_join(audit_events::table)
        .order(audit_links::chain_index.desc())
        .select((
            audit_links::chain_index,
            audit_links::hash,
            StoredEvent::as_select(),
        ))
        .first(conn)
        .optional()?;
    let Some((index, hash, e)) = last else {
        return Ok(None);
    };
    let prev = if index == 1 {
        Some(GENESIS_HASH.to_string())
    } else {
        audit_links::table
            .filter(audit_links::chain_index.eq(index - 1))
            .select(audit_links::hash)
            .first(conn)
            .optional()?
    };
    Ok(Some(prev.is_some_and(|prev| {
        hash == event_hash(key, &e, index, &prev)
    })))
}

pub(super) fn verify_with(
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
    let (head_index, head_hash, floor) = read_head(conn)?;
    let unlinked_events = unlinked_count(conn, floor)?;
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
        let page: Vec<(i64, String, StoredEvent)> = audit_links::table
            .inner_join(audit_events::table)
            .filter(audit_links::chain_index.ge(expected_index))
            .order(audit_links::chain_index.asc())
            .limit(1_000)
            .select((
                audit_links::chain_index,
                audit_links::hash,
                StoredEvent::as_select(),
            ))
            .load(conn)?;
        if page.is_empty() {
            break;
        }
        for (index, stored_hash, e) in page {
            if index != expected_index {
                fail(
                    &mut report,
                    expected_index,
                    format!("event {expected_index} is missing"),
                );
                return Ok((report, head_hash));
            }
            let hash = event_hash(key, &e, index, &prev_hash);
            if stored_hash != hash {
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
