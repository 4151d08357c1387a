//! The keyed hash chain: linking events in order under the chain key, and verifying it.

use std::sync::Arc;

use chrono::Utc;
use diesel::prelude::*;
use ed25519_dalek::SigningKey;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{Checkpoint, StoredEvent};
use crate::crypto::MasterKey;
use crate::storage::schema::{audit_chain_head, audit_events};
use crate::storage::{AnyConnection, StorageResult, write_tx};

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
        let (mut last_index, mut last_hash): (i64, String) = audit_chain_head::table
            .filter(audit_chain_head::id.eq(1))
            .select((audit_chain_head::last_index, audit_chain_head::last_hash))
            .first(conn)?;
        // Never extend a chain whose head disagrees with its events (a head moved backwards, or
        // events beyond it): that is tampering, and linking on would re-sign it.
        // Whether any exists, not how many, and in chain_index order: a count, or a bare
        // LIMIT 1, was planned as a scan of the whole log (15 ms a pass while the sweep wrote
        // 100,000 events); in index order it is one probe of the chain_index index.
        let beyond: Option<i64> = audit_events::table
            .filter(audit_events::chain_index.gt(last_index))
            .order(audit_events::chain_index.asc())
            .select(audit_events::seq)
            .first(conn)
            .optional()?;
        let at_head: Option<Option<String>> = audit_events::table
            .filter(audit_events::chain_index.eq(last_index))
            .select(audit_events::hash)
            .first(conn)
            .optional()?;
        let consistent = beyond.is_none()
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

/// Whether the latest linked event's hash is the one `key` gives it: a cheap check that `key` is
/// this chain's (`None` while nothing is linked).
pub fn last_link_verifies(conn: &mut AnyConnection, key: &ChainKey) -> StorageResult<Option<bool>> {
    let last: Option<StoredEvent> = audit_events::table
        .filter(audit_events::chain_index.is_not_null())
        .order(audit_events::chain_index.desc())
        .select(StoredEvent::as_select())
        .first(conn)
        .optional()?;
    Ok(last.map(|e| {
        let index = e.chain_index.unwrap_or_default();
        let prev = e.prev_hash.clone().unwrap_or_default();
        e.hash.as_deref() == Some(event_hash(key, &e, index, &prev).as_str())
    }))
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
