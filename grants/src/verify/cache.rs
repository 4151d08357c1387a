//! Tokens already decoded, by the SHA-256 of their text.
//!
//! A holder presents the same token for its whole lifetime (minutes), so most of a verification
//! (base64, protobuf, one Ed25519 signature check per block, reading the authority block back,
//! parsing and admitting the attenuation blocks) repeats work whose result cannot change: it
//! depends only on the token's bytes, the root public key and the verifier's [`Limits`]. The
//! cache keeps that result. Everything that depends on the request or on time runs every time:
//! the key is looked up again (a key retired since is refused), and the bindings, environment,
//! expiry, revocation and the Datalog evaluation are checked per request.
//!
//! Only tokens whose signatures verified are kept: a forged token costs its full verification
//! every time and never displaces anything. Tokens that verified but whose blocks were refused
//! are kept with their refusal (holders can sign as many of those as they like either way).
//!
//! Memory is bounded by an estimate of each entry's size, in two generations: when the current
//! one is full it becomes the previous one and the older entries are dropped; a hit in the
//! previous generation moves the entry to the current one. The worst admissible traffic (every
//! request a new, maximal token) therefore costs at most twice the budget and turns the cache
//! into a miss every time, which is what verification costs without it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use biscuit_auth::Biscuit;
use sha2::{Digest, Sha256};

use crate::admission::{Limits, Program};
use crate::authority::{Authority, Hints};
use crate::error::VerifyError;
use crate::keys::PublicKey;

/// What a token's bytes decide, whatever the request.
pub(super) struct Decoded {
    pub token: Biscuit,
    /// The key id and the key that verified the signatures.
    pub kid: u32,
    pub root: PublicKey,
    pub authority: Authority,
    /// Revocation ids (hex), one per block.
    pub revocation_ids: Vec<String>,
    /// The attenuation blocks as read and admitted, or why they were refused (reported only
    /// after the binding and environment checks, as without the cache).
    pub admitted: Result<(Hints, Program), BlocksRefused>,
    /// The limits the blocks were admitted under.
    pub limits: Limits,
}

/// Why the attenuation blocks were refused.
pub(super) enum BlocksRefused {
    Unreadable(String),
    Inadmissible(String),
}

impl BlocksRefused {
    pub fn error(&self) -> VerifyError {
        match self {
            Self::Unreadable(e) => VerifyError::Malformed(e.clone()),
            Self::Inadmissible(e) => VerifyError::Inadmissible(e.clone()),
        }
    }
}

/// A cache of decoded tokens to share between verifiers (see [`crate::Verifier::with_cache`]).
/// Cloning shares it.
#[derive(Clone)]
pub struct DecodeCache {
    inner: Arc<Mutex<Generations>>,
    budget: usize,
}

#[derive(Default)]
struct Generations {
    current: HashMap<[u8; 32], (Arc<Decoded>, usize)>,
    current_bytes: usize,
    previous: HashMap<[u8; 32], (Arc<Decoded>, usize)>,
    previous_bytes: usize,
    hits: u64,
    misses: u64,
}

/// Hits and misses so far (for metrics and benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries held, both generations.
    pub entries: usize,
    /// Their estimated size in bytes, both generations.
    pub bytes: usize,
}

impl DecodeCache {
    /// Estimated bytes a generation holds before it is replaced (the cache holds up to twice
    /// this). A token of ordinary size (about 600 bytes) counts 13 KiB decoded, so the default
    /// keeps the last ~1,200-2,400 distinct tokens.
    pub const DEFAULT_BUDGET: usize = 16 * 1024 * 1024;

    /// A cache holding about `budget` bytes per generation (see [`Self::DEFAULT_BUDGET`]).
    pub fn new(budget: usize) -> Self {
        Self {
            inner: Arc::default(),
            budget,
        }
    }

    /// Hits, misses and size so far.
    pub fn stats(&self) -> CacheStats {
        let g = self.lock();
        CacheStats {
            hits: g.hits,
            misses: g.misses,
            entries: g.current.len() + g.previous.len(),
            bytes: g.current_bytes + g.previous_bytes,
        }
    }

    /// The bytes an entry for a token of `token_len` characters counts against the budget: the
    /// parsed token, the blocks read back and admitted, and the serialized form. Measured with a
    /// counting allocator (BENCHMARKS.md, "Review fixes: two caches bounded by bytes"): up to 20
    /// times the text for tokens of many small facts or checks, 1 to 16 KiB long.
    pub(super) fn estimate(token_len: usize) -> usize {
        token_len * 24 + 2048
    }

    pub(super) fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // A panic while holding the lock leaves nothing half-written: maps are replaced whole.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry for `key` admitted under `limits`, if any.
    pub(super) fn get(&self, key: &[u8; 32], limits: &Limits) -> Option<Arc<Decoded>> {
        let mut g = self.lock();
        let found = match g.current.get(key) {
            Some((d, _)) => Some(d.clone()),
            None => match g.previous.remove(key) {
                Some((d, size)) => {
                    g.previous_bytes -= size;
                    let found = d.clone();
                    g.insert(*key, d, size, self.budget);
                    Some(found)
                }
                None => None,
            },
        }
        .filter(|d| d.limits == *limits);
        if found.is_some() {
            g.hits += 1;
        } else {
            g.misses += 1;
        }
        found
    }

    pub(super) fn put(&self, key: [u8; 32], token_len: usize, decoded: Arc<Decoded>) {
        let size = Self::estimate(token_len);
        if size > self.budget {
            return;
        }
        self.lock().insert(key, decoded, size, self.budget);
    }
}

impl Generations {
    fn insert(&mut self, key: [u8; 32], decoded: Arc<Decoded>, size: usize, budget: usize) {
        if self.current_bytes + size > budget {
            self.previous = std::mem::take(&mut self.current);
            self.previous_bytes = std::mem::take(&mut self.current_bytes);
        }
        if let Some((_, old)) = self.current.insert(key, (decoded, size)) {
            self.current_bytes -= old;
        }
        self.current_bytes += size;
    }
}

impl Default for DecodeCache {
    fn default() -> Self {
        Self::new(Self::DEFAULT_BUDGET)
    }
}

impl fmt::Debug for DecodeCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodeCache")
            .field("budget", &self.budget)
            .field("stats", &self.stats())
            .finish()
    }
}
