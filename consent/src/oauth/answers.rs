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

/// Bytes kept at most, as [`Entry::bytes`] counts them; past it, the cache starts over. An
/// answer holds its grant's authorization details (up to 16 KiB as pushed) twice, parsed and as
/// JSON, and a copy of its client's row (with a JWK Set of up to 64 KiB): by count alone, one
/// client refreshing and introspecting its way to [`CAPACITY`] entries could make the cache
/// hold a gigabyte. An ordinary answer counts a few KiB, so this keeps thousands.
const BUDGET: usize = 32 * 1024 * 1024;

#[derive(Debug)]
struct Entry {
    answer: Answer,
    basis: Basis,
    stored_at: Instant,
    epoch: u64,
    /// What the entry counts against [`BUDGET`] (see [`counted_bytes`]).
    bytes: usize,
}

/// About the memory an entry holds: the answer's JSON, the parsed answer (counted as twice the
/// JSON: its strings and their headers), the client's row, the revocation ids, the key, and the
/// maps' overhead.
fn counted_bytes(key: &str, answer: &Answer, basis: &Basis) -> usize {
    answer.json.len() * 3
        + basis.client.heap_bytes()
        + basis
            .revocation_ids
            .iter()
            .map(|r| r.capacity() + 24)
            .sum::<usize>()
        + basis.grant_id.capacity()
        + key.len()
        + 512
}

#[derive(Debug, Default)]
struct Entries {
    by_hash: HashMap<String, Arc<Entry>>,
    bytes: usize,
}

#[derive(Debug)]
pub struct AnswerCache {
    ttl: Duration,
    entries: Mutex<Entries>,
    signals: Arc<Signals>,
}

impl AnswerCache {
    /// `signals`: the instance's revocation announcements (an answer stored before one is never
    /// reused).
    pub fn new(ttl: Duration, signals: Arc<Signals>) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
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
            .by_hash
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
        let bytes = counted_bytes(&token_hash, &answer, &basis);
        let entry = Entry {
            answer,
            basis,
            stored_at: read_at,
            epoch,
            bytes,
        };
        if bytes > BUDGET / 16 {
            // Not worth a sixteenth of the cache.
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // More distinct tokens per TTL than we keep: start over (no scan under the lock). What
        // was dropped is freed after the lock is let go, not while every other introspection of
        // the instance waits for it; so is an entry replaced.
        let dropped = match entries.by_hash.len() >= CAPACITY || entries.bytes + bytes > BUDGET {
            true => Some(std::mem::take(&mut *entries)),
            false => None,
        };
        let replaced = entries.by_hash.insert(token_hash, Arc::new(entry));
        entries.bytes += bytes;
        if let Some(old) = &replaced {
            entries.bytes -= old.bytes;
        }
        drop(entries);
        drop(replaced);
        drop(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::clients::OAuthClient;
    use platform::crypto::PlainToken;

    fn answer(details: usize) -> Answer {
        Answer::new(Introspection {
            active: true,
            client_id: Some("c_1".into()),
            scope: Some("x".repeat(details)),
            ..Default::default()
        })
    }

    fn basis(client: &OAuthClient) -> Basis {
        Basis {
            client: client.clone(),
            grant_id: "g_1".into(),
            revocation_ids: vec!["ab".repeat(32)],
            token_expires_at: Utc::now() + chrono::Duration::minutes(10),
            grant_expires_at: Utc::now() + chrono::Duration::days(1),
        }
    }

    fn stored(cache: &AnswerCache) -> (usize, usize) {
        let entries = cache.entries.lock().unwrap();
        (entries.by_hash.len(), entries.bytes)
    }

    /// One client with a large JWK Set, whose answers carry large authorization details, fills
    /// the cache by bytes long before its entry count: what the cache holds stays within its
    /// budget, whoever asks.
    #[test]
    fn the_cache_holds_at_most_its_budget_in_bytes() {
        let cache = AnswerCache::new(Duration::from_secs(60), Arc::default());
        let secret = PlainToken::from_presented("s3cret");
        let heavy = OAuthClient::for_tests("c_1", secret.hash().as_str(), Some("k".repeat(60_000)));
        let epoch = (cache.epoch(), Instant::now());
        for n in 0..2_000 {
            cache.put(format!("h{n}"), answer(16 * 1024), basis(&heavy), epoch);
            let (entries, bytes) = stored(&cache);
            assert!(bytes <= BUDGET, "{bytes} bytes in {entries} entries");
        }
        let (entries, _) = stored(&cache);
        assert!(entries < 500, "{entries} entries of about 110 KiB each");
        // An ordinary answer counts a few KiB: the cache keeps thousands of them.
        let light = OAuthClient::for_tests("c_2", secret.hash().as_str(), None);
        let cache = AnswerCache::new(Duration::from_secs(60), Arc::default());
        for n in 0..5_000 {
            cache.put(format!("h{n}"), answer(600), basis(&light), epoch);
        }
        let (entries, bytes) = stored(&cache);
        assert_eq!(entries, 5_000, "{bytes} bytes");
        // Replacing an entry counts it once.
        cache.put("h0".into(), answer(600), basis(&light), epoch);
        assert_eq!(stored(&cache), (5_000, bytes));
    }
}
