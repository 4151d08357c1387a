//! A short-lived, per-instance memory of positive introspection answers for minted access tokens.
//!
//! Resource servers that cannot verify Biscuits offline introspect the same token many times in
//! its ten minutes. The database answer for an active token is kept for `tokens.introspection_cache_ttl`
//! (default 1 s; 0 turns it off) and reused only when, at the time of reuse:
//! - the asking client presents credentials that verify (constant time) against the client row the
//!   answer was made with, and it is the token's client;
//! - the token and its grant are still unexpired;
//! - the instance's revocation list is fresh (synced within 10 s) and lists neither the grant nor
//!   the token's revocation id;
//! - no revocation has been published by this process since the answer was read from the database
//!   ([`platform::revocation::Signals::epoch`]), so a revocation made here (by a customer, the client, staff,
//!   the sweeper or a detected replay) is seen by the very next introspection here.
//!
//! Anything else goes to the database, and only active answers are kept. A revocation made on
//! another instance reaches this one as the revocation list does (at once over Redis pub/sub, at
//! most 1 s by the database poll), the same bound offline verifiers have. Suspending a client ends
//! its grants, so that is covered too; a client whose secret was rotated or that was deleted, here
//! or elsewhere, can still be served a stored answer with its old secret for at most the TTL, and
//! a grant extension shows up to the TTL late.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use platform::revocation::Signals;

use super::clients::{self, ClientCredentials};
pub use super::tokens::Basis;
use super::tokens::Introspection;
use crate::revocation_list::RevocationList;

/// An introspection answer with its JSON, serialized once: a reused answer is sent as it was
/// first serialized (cloning either part shares it).
#[derive(Debug, Clone)]
pub struct Answer {
    introspection: Arc<Introspection>,
    json: bytes::Bytes,
}

impl Answer {
    pub fn new(introspection: Introspection) -> Self {
        // Plain strings, numbers and options: serialization cannot fail.
        let json = serde_json::to_vec(&introspection).unwrap_or_default();
        Self {
            introspection: Arc::new(introspection),
            json: json.into(),
        }
    }

    pub fn introspection(&self) -> &Introspection {
        &self.introspection
    }

    /// The answer's JSON (RFC 7662 section 2.2).
    pub fn json(&self) -> bytes::Bytes {
        self.json.clone()
    }
}

/// Entries kept at most; when full, the cache starts over.
const CAPACITY: usize = 20_000;

#[derive(Debug)]
struct Entry {
    answer: Answer,
    basis: Basis,
    stored_at: Instant,
    epoch: u64,
}

#[derive(Debug)]
pub struct AnswerCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    signals: Arc<Signals>,
}

impl AnswerCache {
    /// `signals`: the instance's revocation announcements (an answer stored before one is never
    /// reused).
    pub fn new(ttl: Duration, signals: Arc<Signals>) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
            signals,
        }
    }

    /// The instance's revocation epoch now (read it before the database read an answer is made
    /// from).
    pub fn epoch(&self) -> u64 {
        self.signals.epoch()
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// A stored answer for the token with SHA-256 `token_hash`, if every condition in the module
    /// documentation holds now.
    pub fn get(
        &self,
        token_hash: &str,
        creds: &ClientCredentials,
        now: DateTime<Utc>,
        revocations: &RevocationList,
    ) -> Option<Answer> {
        if !self.enabled() {
            return None;
        }
        // Shared, not copied: the lock is held only to find the entry.
        let e = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token_hash)?
            .clone();
        if e.stored_at.elapsed() >= self.ttl || e.epoch != self.signals.epoch() {
            return None;
        }
        let basis = &e.basis;
        if clients::verify(creds, Some(&basis.client)).is_err()
            || now >= basis.token_expires_at
            || now >= basis.grant_expires_at
            || revocations.is_revoked(&basis.grant_id, &basis.revocation_ids) != Ok(false)
        {
            return None;
        }
        metrics::counter!("consent_introspection_cache_hits_total").increment(1);
        Some(e.answer.clone())
    }

    /// Keeps an active answer made from the database, with the epoch and time read before that
    /// query (so a revocation published meanwhile makes it unusable, and its age counts from
    /// before the read).
    pub fn put(
        &self,
        token_hash: String,
        answer: Answer,
        basis: Basis,
        (epoch, read_at): (u64, Instant),
    ) {
        if !self.enabled() || !answer.introspection.active {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY {
            // More distinct tokens per TTL than we keep: start over (no scan under the lock).
            entries.clear();
        }
        let replaced = entries.insert(
            token_hash,
            Arc::new(Entry {
                answer,
                basis,
                stored_at: read_at,
                epoch,
            }),
        );
        // An entry replaced is freed after the lock is let go, not while every other
        // introspection of the instance waits for it.
        drop(entries);
        drop(replaced);
    }
}
