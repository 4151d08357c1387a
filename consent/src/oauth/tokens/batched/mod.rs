//! The refresh grant and introspection on PostgreSQL under load: concurrent requests share their
//! statements.
//!
//! A refresh needs one read (the token, its grant and the grant's client) and one durable write
//! (the rotation). Run one by one, PostgreSQL spends most of a refresh on per-statement and
//! per-commit work - executor start-up, the WAL flush, round trips - rather than on the rows. Here
//! each of the two goes through a [`Batcher`]: the reads that arrive together are one
//! `token_hash = ANY($1)` query, and the rotations that arrive together are one statement and one
//! commit. Client authentication, the checks and minting stay per request, in the request's task.
//! Introspection of a minted access token reads the same way ([`introspect`]), and the code
//! exchange reads and writes the same way ([`exchange`]).
//!
//! Only the plain case is answered here: a known, active, unexpired token of an authorized,
//! unexpired grant, presented by its own client with valid credentials, whose grant's use was
//! recorded within the minute. Everything else (unknown token, another client's token, replay,
//! revocation, expiry, a concurrent use of the same token, use of the grant due to be recorded,
//! a failed batch statement) returns `None`, and the caller takes the transactional path in
//! [`super::refresh`], which gives the precise error and revokes on replay. A rotation that did
//! not happen is never reported as one: the rotation statement marks a token used only if it is
//! still active and its grant still authorized and unexpired, atomically with everything the
//! rotation writes.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use platform::crypto::{PlainToken, random_id};
use platform::storage::batch::{BatchCounts, Batcher};
use platform::storage::{Db, StorageError, StorageResult};

use super::super::OAuthService;
use super::super::clients::{self as oauth_clients, ClientCredentials};
use super::super::error::OAuthError;
use super::{
    Basis, CodeRow, Introspection, Issue, Minted, RefreshRow, TokenResponse, Verdict, dpop_only,
    load_codes, load_minteds, load_refreshes, mint_issue, use_due,
};
use ::grants::dpop::CheckedProof;
use statements::{Exchange, Keep, Refreshed, Rotation, exchange_batch, keep_batch, rotate_batch};

mod code;
mod statements;

pub use code::exchange;
#[cfg(test)]
mod tests;

/// At most this many requests share one statement.
const MAX_BATCH: usize = 128;

/// The batchers of the refresh grant and introspection (PostgreSQL only).
#[derive(Debug)]
pub struct TokenBatches {
    reads: Batcher<String, Option<RefreshRow>>,
    rotations: Batcher<Rotation, bool>,
    keeps: Batcher<Keep, bool>,
    minted: Batcher<String, Option<Minted>>,
    codes: Batcher<String, Option<CodeRow>>,
    exchanges: Batcher<Exchange, bool>,
}

impl TokenBatches {
    /// Starts the batch threads; `None` on SQLite, where one writer at a time is the rule anyway.
    pub fn start(db: &Db) -> StorageResult<Option<Self>> {
        if db.backend() != platform::storage::Backend::Postgres {
            return Ok(None);
        }
        fn spawn<J: Send + 'static, R: Send + 'static>(
            db: &Db,
            name: &'static str,
            run: impl Fn(&Db, &[J]) -> StorageResult<Vec<R>> + Send + 'static,
        ) -> StorageResult<Batcher<J, R>> {
            Batcher::spawn(db.clone(), name, MAX_BATCH, Box::new(run))
        }
        Ok(Some(Self {
            reads: spawn(db, "refresh-read", read_batch)?,
            rotations: spawn(db, "refresh-rotate", rotate_batch)?,
            keeps: spawn(db, "refresh-keep", keep_batch)?,
            minted: spawn(db, "introspect-read", minted_batch)?,
            codes: spawn(db, "code-read", code_batch)?,
            exchanges: spawn(db, "code-exchange", exchange_batch)?,
        }))
    }

    /// Batches run so far: (refresh reads, rotations, introspection reads, bound refreshes,
    /// code reads, code exchanges).
    pub fn counts(&self) -> [BatchCounts; 6] {
        [
            self.reads.counts(),
            self.rotations.counts(),
            self.minted.counts(),
            self.keeps.counts(),
            self.codes.counts(),
            self.exchanges.counts(),
        ]
    }
}

/// What the batched refresh made of a request.
#[derive(Debug)]
pub enum Batched {
    /// The answer (tokens, or a final error such as `invalid_client`).
    Answered(Result<TokenResponse, OAuthError>),
    /// Left to the transactional path; `proof_recorded` says whether the request's DPoP proof was
    /// already recorded here (after its client authenticated).
    Declined { proof_recorded: bool },
}

/// The plain refresh (see the module documentation); [`Batched::Declined`] sends the request down
/// the transactional path. An `invalid_client` answer is final: the presented client is the
/// token's client and its credentials failed, exactly as the transactional path would decide.
/// With a DPoP `proof`, its use is recorded once the client has authenticated (from the row the
/// read brought), and a bound family is refreshed by the keep statement.
pub async fn refresh(
    svc: &OAuthService,
    batch: &TokenBatches,
    creds: &ClientCredentials,
    token: &str,
    proof: Option<&CheckedProof>,
    now: DateTime<Utc>,
) -> Batched {
    let declined = |proof_recorded| Batched::Declined { proof_recorded };
    if token.is_empty() || token.len() > 256 {
        return declined(false);
    }
    let hash = PlainToken::from_presented(token).hash().into_string();
    let row = match read_authenticated(&batch.reads, hash, creds, |r| &r.client).await {
        Ok(row) => row,
        Err(Some(e)) => return Batched::Answered(Err(e)),
        Err(None) => return declined(false),
    };
    // The client is known: the proof's single use is recorded now.
    let proven = match proof {
        Some(p) => match svc.record_proof(p.clone(), now).await {
            Ok(jkt) => Some(jkt),
            Err(e) => return Batched::Answered(Err(e)),
        },
        None => None,
    };
    let declined = declined(proven.is_some());
    if row.verdict(&row.client.id, now) != Verdict::Valid
        // Use of the grant is due to be recorded (at most once a minute): the transactional path.
        || use_due(&row.grant, now)
        // Tokens bound to the client's certificate: the transactional path.
        || row.client.must_use_certificate()
    {
        return declined;
    }
    match (row.dpop_jkt.as_deref(), proven.as_deref()) {
        (Some(bound), Some(proven)) if bound == proven => write(svc, batch, row, token, now).await,
        (None, None) if !row.client.must_use_dpop() => write(svc, batch, row, token, now).await,
        // Anything else (a missing or another key's proof, a proof on a bearer family) is
        // decided, with its precise error, by the transactional path.
        _ => declined,
    }
}

/// A refresh through the write statements: a bound family's by the keep statement (the presented
/// refresh token stays and is answered back), a bearer family's by the rotation statement.
async fn write(
    svc: &OAuthService,
    batch: &TokenBatches,
    row: RefreshRow,
    presented: &str,
    now: DateTime<Utc>,
) -> Batched {
    let bound = row.dpop_jkt.clone();
    let declined = Batched::Declined {
        proof_recorded: bound.is_some(),
    };
    let cnf = bound.as_deref().map(dpop_only).unwrap_or_default();
    let Ok(mut issue) = mint_issue(svc, &row.grant, &row.client, &row.family, cnf, now) else {
        return declined;
    };
    let refreshed = refreshed(
        &mut issue,
        row.grant.id.clone(),
        row.family,
        row.client.id,
        now,
    );
    let written = match bound {
        Some(jkt) => {
            // The refresh token stays: the answer gives back the one presented.
            issue.response.refresh_token = presented.to_string();
            let key = random_id("evt_");
            let job = Keep {
                key,
                token_id: row.id,
                jkt,
                refreshed,
            };
            batch.keeps.submit(job).await
        }
        None => {
            let job = Rotation {
                old_id: row.id,
                new_id: random_id("rtk_"),
                new_hash: issue.refresh_hash,
                event_id: random_id("evt_"),
                refreshed,
            };
            batch.rotations.submit(job).await
        }
    };
    match written {
        Ok(true) => {
            platform::audit::recorded(1);
            Batched::Answered(Ok(issue.response))
        }
        Ok(false) => declined,
        Err(e) => Batched::Answered(Err(e.into())),
    }
}

/// Introspection of a minted access token (found by its hash) presented by its own client with
/// valid credentials; `None` sends anything else (refresh tokens, attenuated or unknown tokens,
/// another client asking, use of the grant due to be recorded) down [`super::introspect`].
pub async fn introspect(
    svc: &OAuthService,
    batch: &TokenBatches,
    creds: &ClientCredentials,
    token: &str,
    now: DateTime<Utc>,
) -> Option<Result<(Introspection, Option<Basis>), OAuthError>> {
    if token.is_empty() || token.len() > 8192 || token.starts_with("rt_") {
        return None;
    }
    let hash = PlainToken::from_presented(token).hash().into_string();
    let minted = match read_authenticated(&batch.minted, hash, creds, |m| &m.client).await {
        Ok(minted) => minted,
        Err(e) => return e.map(Err),
    };
    let Some(found) = minted.found(now) else {
        return Some(Ok((Introspection::default(), None)));
    };
    if found.is_live(now) && use_due(&found.grant, now) {
        return None;
    }
    Some(found.answer(svc, now))
}

/// What a write statement stores of a minted `issue` (whose access token's hash and revocation
/// ids move here) for a request at `now`.
fn refreshed(
    issue: &mut Issue,
    grant_id: String,
    family: String,
    client_id: String,
    now: DateTime<Utc>,
) -> Refreshed {
    let at = now.naive_utc();
    Refreshed {
        at,
        grant_id,
        family,
        refresh_expires: issue.refresh_expires,
        access_hash: std::mem::take(&mut issue.access_hash),
        access_expires: issue.access_expires,
        revocation_ids: std::mem::take(&mut issue.revocation_ids),
        event_at: at.trunc_subsecs(6),
        client_id,
        details: issue.details.to_string(),
    }
}

/// A batched read for a request by `creds`: the row `reads` finds for `hash`, once its client
/// (`client_of`) is the presented one and authenticates. `Err(None)` declines (not found, another
/// client's, a failed read statement: the transactional path reads and authenticates on its own);
/// `Err(Some(e))` is a final answer (`invalid_client`, or an unreachable database, which the
/// other path would only wait for as long again; nothing was written, so a retry is safe).
/// Authentication completes before anything about the row is decided.
async fn read_authenticated<R: Send + 'static>(
    reads: &Batcher<String, Option<R>>,
    hash: String,
    creds: &ClientCredentials,
    client_of: fn(&R) -> &super::super::clients::OAuthClient,
) -> Result<R, Option<OAuthError>> {
    let row = match reads.submit(hash).await {
        Ok(Some(row)) => row,
        Err(e @ StorageError::Unavailable(_)) => return Err(Some(e.into())),
        Ok(None) | Err(_) => return Err(None),
    };
    let client = client_of(&row);
    if client.id != creds.client_id() {
        return Err(None);
    }
    oauth_clients::verify(creds, Some(client)).map_err(Some)?;
    Ok(row)
}

/// The introspection reads of one batch: minted tokens by hash, with grant, client and
/// revocation status.
fn minted_batch(db: &Db, hashes: &[String]) -> StorageResult<Vec<Option<Minted>>> {
    let found = db.run_blocking(|c| load_minteds(c, hashes))?;
    Ok(distribute(hashes, found))
}

/// One result per key, in order; a key asked for more than once gets a copy each time.
fn distribute<T: Clone>(keys: &[String], found: Vec<(String, T)>) -> Vec<Option<T>> {
    let mut found: HashMap<String, T> = found.into_iter().collect();
    let mut remaining: HashMap<&str, usize> = HashMap::new();
    for k in keys {
        *remaining.entry(k.as_str()).or_default() += 1;
    }
    keys.iter()
        .map(|k| {
            let left = remaining.get_mut(k.as_str()).expect("counted above");
            *left -= 1;
            match *left {
                0 => found.remove(k),
                _ => found.get(k).cloned(),
            }
        })
        .collect()
}

/// The code reads of one batch: codes by hash, with grant and client.
fn code_batch(db: &Db, hashes: &[String]) -> StorageResult<Vec<Option<CodeRow>>> {
    let found = db.run_blocking(|c| load_codes(c, hashes))?;
    Ok(distribute(hashes, found))
}

/// The reads of one batch: one query for every presented hash.
fn read_batch(db: &Db, hashes: &[String]) -> StorageResult<Vec<Option<RefreshRow>>> {
    let found = db.run_blocking(|c| load_refreshes(c, hashes))?;
    Ok(distribute(hashes, found))
}
