//! The refresh grant and introspection on PostgreSQL under load: concurrent requests share their
//! statements.
//!
//! A refresh needs one read (the token, its grant and the grant's client) and one durable write
//! (the rotation). Run one by one, PostgreSQL spends most of a refresh on per-statement and
//! per-commit work - executor start-up, the WAL flush, round trips - rather than on the rows. Here
//! each of the two goes through a [`Batcher`]: the reads that arrive together are one
//! `token_hash = ANY($1)` query, and the rotations that arrive together are one statement and one
//! commit. Client authentication, the checks and minting stay per request, in the request's task.
//! Introspection of a minted access token reads the same way ([`introspect`]).
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

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use platform::crypto::{PlainToken, random_id};
use platform::storage::batch::{BatchCounts, Batcher};
use platform::storage::schema::refresh_tokens;
use platform::storage::{AnyConnection, Db, PgBind as B, PgStatement, StorageError, StorageResult};

use super::super::OAuthService;
use super::super::clients::{self as oauth_clients, ClientCredentials};
use super::super::error::OAuthError;
use super::{
    Basis, Introspection, Minted, RefreshRow, TokenResponse, Verdict, dpop_only, load_minteds,
    load_refreshes, mint_issue, use_due,
};
use ::grants::dpop::CheckedProof;

/// At most this many requests share one statement.
const MAX_BATCH: usize = 128;

/// The batchers of the refresh grant and introspection (PostgreSQL only).
#[derive(Debug)]
pub struct TokenBatches {
    reads: Batcher<String, Option<RefreshRow>>,
    rotations: Batcher<Rotation, bool>,
    keeps: Batcher<Keep, bool>,
    minted: Batcher<String, Option<Minted>>,
}

impl TokenBatches {
    /// Starts the batch threads; `None` on SQLite, where one writer at a time is the rule anyway.
    pub fn start(db: &Db) -> StorageResult<Option<Self>> {
        if db.backend() != platform::storage::Backend::Postgres {
            return Ok(None);
        }
        Ok(Some(Self {
            reads: Batcher::spawn(db.clone(), "refresh-read", MAX_BATCH, Box::new(read_batch))?,
            rotations: Batcher::spawn(
                db.clone(),
                "refresh-rotate",
                MAX_BATCH,
                Box::new(rotate_batch),
            )?,
            keeps: Batcher::spawn(db.clone(), "refresh-keep", MAX_BATCH, Box::new(keep_batch))?,
            minted: Batcher::spawn(
                db.clone(),
                "introspect-read",
                MAX_BATCH,
                Box::new(minted_batch),
            )?,
        }))
    }
}

impl TokenBatches {
    /// Batches run so far: (refresh reads, rotations, introspection reads, bound refreshes).
    pub fn counts(&self) -> [BatchCounts; 4] {
        [
            self.reads.counts(),
            self.rotations.counts(),
            self.minted.counts(),
            self.keeps.counts(),
        ]
    }
}

/// One rotation: everything the statement writes for one request.
#[derive(Debug)]
struct Rotation {
    at: NaiveDateTime,
    old_id: String,
    grant_id: String,
    new_id: String,
    new_hash: String,
    family: String,
    refresh_expires: NaiveDateTime,
    access_hash: String,
    access_expires: NaiveDateTime,
    revocation_ids: Vec<String>,
    event_id: String,
    event_at: NaiveDateTime,
    client_id: String,
    details: String,
}

/// One refresh of a DPoP-bound family: its refresh token stays (the expiry slides), the new
/// access token and the audit event are written. `key` (unique per job) ties the issued-token
/// rows to the job, since one token may be refreshed twice in a batch.
#[derive(Debug)]
struct Keep {
    key: String,
    at: NaiveDateTime,
    token_id: String,
    grant_id: String,
    family: String,
    refresh_expires: NaiveDateTime,
    access_hash: String,
    access_expires: NaiveDateTime,
    revocation_ids: Vec<String>,
    jkt: String,
    event_at: NaiveDateTime,
    client_id: String,
    details: String,
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
    let hash = PlainToken::from_presented(token)
        .hash()
        .as_str()
        .to_string();
    // A read batch that failed on its statement is no answer: the transactional path reads
    // again on its own. An unreachable database is: the other path would only wait for a
    // connection as long again (nothing was written, so a retry is safe).
    let row = match batch.reads.submit(hash).await {
        Ok(Some(row)) => row,
        Err(e @ StorageError::Unavailable(_)) => return Batched::Answered(Err(e.into())),
        Ok(None) | Err(_) => return declined(false),
    };
    if row.client.id != creds.client_id() {
        // The general path authenticates the named client on its own.
        return declined(false);
    }
    // Authentication completes before anything about the token is decided.
    if let Err(e) = oauth_clients::verify(creds, Some(&row.client)) {
        return Batched::Answered(Err(e));
    }
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
        (Some(bound), Some(proven)) if bound == proven => keep(svc, batch, row, token, now).await,
        (None, None) if !row.client.must_use_dpop() => rotate(svc, batch, row, now).await,
        // Anything else (a missing or another key's proof, a proof on a bearer family) is
        // decided, with its precise error, by the transactional path.
        _ => declined,
    }
}

/// A bound family's refresh through the keep statement.
async fn keep(
    svc: &OAuthService,
    batch: &TokenBatches,
    row: RefreshRow,
    presented: &str,
    now: DateTime<Utc>,
) -> Batched {
    let naive_now = now.naive_utc();
    let declined = Batched::Declined {
        proof_recorded: true,
    };
    let Some(jkt) = row.dpop_jkt.clone() else {
        return declined;
    };
    let Ok(mut issue) = mint_issue(
        svc,
        &row.grant,
        &row.client,
        &row.family,
        dpop_only(&jkt),
        now,
    ) else {
        return declined;
    };
    let job = Keep {
        key: random_id("evt_"),
        at: naive_now,
        token_id: row.id,
        grant_id: row.grant.id.clone(),
        family: row.family,
        refresh_expires: issue.refresh_expires,
        access_hash: issue.access_hash,
        access_expires: issue.access_expires,
        revocation_ids: issue.revocation_ids,
        jkt,
        event_at: naive_now.trunc_subsecs(6),
        client_id: row.client.id,
        details: issue.details.to_string(),
    };
    match batch.keeps.submit(job).await {
        Ok(true) => {
            metrics::counter!("consent_audit_events_recorded_total").increment(1);
            // The refresh token stays: the answer gives back the one presented.
            issue.response.refresh_token = presented.to_string();
            Batched::Answered(Ok(issue.response))
        }
        Ok(false) => declined,
        Err(e) => Batched::Answered(Err(e.into())),
    }
}

/// A bearer family's refresh through the rotation statement.
async fn rotate(
    svc: &OAuthService,
    batch: &TokenBatches,
    row: RefreshRow,
    now: DateTime<Utc>,
) -> Batched {
    let naive_now = now.naive_utc();
    let declined = Batched::Declined {
        proof_recorded: false,
    };
    let Ok(issue) = mint_issue(
        svc,
        &row.grant,
        &row.client,
        &row.family,
        Default::default(),
        now,
    ) else {
        return declined;
    };
    let rotation = Rotation {
        at: naive_now,
        old_id: row.id,
        grant_id: row.grant.id.clone(),
        new_id: random_id("rtk_"),
        new_hash: issue.refresh_hash,
        family: row.family,
        refresh_expires: issue.refresh_expires,
        access_hash: issue.access_hash,
        access_expires: issue.access_expires,
        revocation_ids: issue.revocation_ids,
        event_id: random_id("evt_"),
        event_at: naive_now.trunc_subsecs(6),
        client_id: row.client.id,
        details: issue.details.to_string(),
    };
    match batch.rotations.submit(rotation).await {
        Ok(true) => {
            metrics::counter!("consent_audit_events_recorded_total").increment(1);
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
    let hash = PlainToken::from_presented(token)
        .hash()
        .as_str()
        .to_string();
    let minted = match batch.minted.submit(hash).await {
        Ok(Some(minted)) => minted,
        Err(e @ StorageError::Unavailable(_)) => return Some(Err(e.into())),
        Ok(None) | Err(_) => return None,
    };
    if minted.client.id != creds.client_id() {
        return None;
    }
    if let Err(e) = oauth_clients::verify(creds, Some(&minted.client)) {
        return Some(Err(e));
    }
    let Some(found) = minted.found(now) else {
        return Some(Ok((Introspection::default(), None)));
    };
    if found.is_live(now) && use_due(&found.grant, now) {
        return None;
    }
    Some(found.answer(svc, now))
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

/// The reads of one batch: one query for every presented hash.
fn read_batch(db: &Db, hashes: &[String]) -> StorageResult<Vec<Option<RefreshRow>>> {
    let found = db.run_blocking(|c| load_refreshes(c, hashes))?;
    Ok(distribute(hashes, found))
}

/// Every rotation of a batch in one statement, so one commit. Token rows are locked in id order
/// (`FOR NO KEY UPDATE` under `ORDER BY`), a token is marked used only if it is still active,
/// belongs to the stated grant and that grant is authorized and unexpired at the request's time,
/// and only the rotations that marked their token get their new refresh token, issued-token rows
/// and audit event. Lock order (`platform::revocation::lock_grants`): the grants are only read
/// and key-share locked (foreign keys), which conflicts with no lock but `FOR UPDATE`/deletion,
/// and tokens are locked in id order as that rule says.
/// Returns the ids of the tokens it rotated.
const ROTATE_BATCH_SQL: &str = "\
WITH input AS ( \
    SELECT * FROM unnest($1::text[], $2::timestamp[], $3::text[], $4::text[], $5::text[], \
                         $6::text[], $7::timestamp[], $8::text[], $9::timestamp[], $10::text[], \
                         $11::text[]) WITH ORDINALITY \
        AS i(old_id, at, grant_id, new_id, new_hash, family, refresh_expires, event_id, \
             event_at, client_id, details, n) \
), locked AS ( \
    SELECT r.id FROM refresh_tokens r JOIN input i ON r.id = i.old_id \
    WHERE r.status = 'active' AND r.grant_id = i.grant_id \
      AND EXISTS (SELECT 1 FROM grants g \
                  WHERE g.id = i.grant_id AND g.status = 'authorized' AND g.expires_at > i.at) \
    ORDER BY r.id \
    FOR NO KEY UPDATE OF r \
), used AS ( \
    UPDATE refresh_tokens r SET status = 'used', used_at = i.at \
    FROM input i \
    WHERE r.id = i.old_id AND r.status = 'active' AND r.id IN (SELECT id FROM locked) \
    RETURNING r.id \
), ok AS ( \
    SELECT i.* FROM input i JOIN used u ON u.id = i.old_id \
), new_refresh AS ( \
    INSERT INTO refresh_tokens (id, token_hash, grant_id, family_id, status, created_at, expires_at) \
    SELECT new_id, new_hash, grant_id, family, 'active', at, refresh_expires FROM ok ORDER BY n \
), issued AS ( \
    INSERT INTO issued_tokens (revocation_id, grant_id, family_id, token_hash, expires_at) \
    SELECT t.rid, ok.grant_id, ok.family, t.hash, t.expires \
    FROM unnest($12::text[], $13::text[], $14::text[], $15::timestamp[]) AS t(old_id, rid, hash, expires) \
    JOIN ok ON ok.old_id = t.old_id \
), event AS ( \
    INSERT INTO audit_events \
        (event_id, occurred_at, actor_type, actor_id, action, target_type, target_id, details) \
    SELECT event_id, event_at, 'client', client_id, 'token.refreshed', 'grant', grant_id, details \
    FROM ok ORDER BY n \
) \
SELECT id FROM used";

/// How long the rotation statement waits for a row lock before giving up (and the requests take
/// the transactional path).
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '1s'";

#[derive(QueryableByName)]
struct Rotated {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// Runs a batch statement in its own transaction under [`LOCK_TIMEOUT`]: every refresh of the
/// instance queues behind it, so a lock held elsewhere (a long revocation, a sweep) must not stall
/// them all. Past the timeout the statement rolls back and each request takes the transactional
/// path. Returns the ids the statement selects.
fn run_under_lock_timeout(db: &Db, statement: PgStatement<'_>) -> StorageResult<Vec<Rotated>> {
    db.run_blocking(|c| {
        let AnyConnection::Postgresql(pg) = c else {
            return Err(StorageError::Unavailable(
                "batched statements need PostgreSQL".into(),
            ));
        };
        pg.transaction(|pg| {
            diesel::sql_query(LOCK_TIMEOUT).execute(pg)?;
            statement.load::<Rotated>(pg)
        })
        .map_err(StorageError::from)
    })
}

fn rotate_batch(db: &Db, jobs: &[Rotation]) -> StorageResult<Vec<bool>> {
    // A token presented twice in one batch: only its first rotation is attempted; the others
    // report "not rotated" and the transactional path treats them as the replays they are.
    let mut seen = HashSet::new();
    let take: Vec<bool> = jobs.iter().map(|j| seen.insert(&j.old_id)).collect();
    let picked = || jobs.iter().zip(&take).filter(|(_, t)| **t).map(|(j, _)| j);
    let texts = |f: fn(&Rotation) -> &String| picked().map(|j| f(j).clone()).collect::<Vec<_>>();
    let times = |f: fn(&Rotation) -> NaiveDateTime| picked().map(f).collect::<Vec<_>>();
    let (old_id, grant_id, new_id, new_hash) = (
        texts(|j| &j.old_id),
        texts(|j| &j.grant_id),
        texts(|j| &j.new_id),
        texts(|j| &j.new_hash),
    );
    let (family, event_id, client_id, details) = (
        texts(|j| &j.family),
        texts(|j| &j.event_id),
        texts(|j| &j.client_id),
        texts(|j| &j.details),
    );
    let (at, refresh_expires, event_at) = (
        times(|j| j.at),
        times(|j| j.refresh_expires),
        times(|j| j.event_at),
    );
    // Issued-token rows: one per revocation id; the authority block's carries the token hash.
    let (mut rid_old, mut rid, mut rid_hash, mut rid_expires) = (vec![], vec![], vec![], vec![]);
    for j in picked() {
        for (n, r) in j.revocation_ids.iter().enumerate() {
            rid_old.push(j.old_id.clone());
            rid.push(r.clone());
            rid_hash.push((n == 0).then(|| j.access_hash.clone()));
            rid_expires.push(j.access_expires);
        }
    }
    let statement = PgStatement::new(
        ROTATE_BATCH_SQL,
        vec![
            B::TextArray(&old_id),
            B::TimestampArray(&at),
            B::TextArray(&grant_id),
            B::TextArray(&new_id),
            B::TextArray(&new_hash),
            B::TextArray(&family),
            B::TimestampArray(&refresh_expires),
            B::TextArray(&event_id),
            B::TimestampArray(&event_at),
            B::TextArray(&client_id),
            B::TextArray(&details),
            B::TextArray(&rid_old),
            B::TextArray(&rid),
            B::NullableTextArray(&rid_hash),
            B::TimestampArray(&rid_expires),
        ],
    );
    let result = run_under_lock_timeout(db, statement);
    let rotated: HashSet<String> = match result {
        Ok(rows) => rows.into_iter().map(|r| r.id).collect(),
        // The connection failed, perhaps after the commit: the new tokens' hashes tell, read on
        // a fresh connection. Had the requests failed instead, their clients' retries would be
        // replays that end their grants. If even that read fails, the requests fail (503).
        Err(e @ StorageError::Unavailable(_)) => {
            tracing::warn!(error = %e, jobs = jobs.len(), "batched rotation: outcome unknown; checking");
            committed(db, picked()).map_err(|_| e)?
        }
        // PostgreSQL rejected the statement (it rolled back as a whole: a lock timeout, a
        // deadlock): each request takes the transactional path on its own.
        Err(e) => {
            tracing::warn!(error = %e, jobs = jobs.len(), "batched rotation failed; retrying one by one");
            HashSet::new()
        }
    };
    Ok(jobs
        .iter()
        .zip(&take)
        .map(|(j, t)| *t && rotated.contains(&j.old_id))
        .collect())
}

/// Every bound-family refresh of a batch in one statement: the refresh tokens are locked in id
/// order (`FOR NO KEY UPDATE`, the lock order of `platform::revocation::lock_grants`: grants only
/// read), and a job counts only if its token is still active, bound, of the stated grant, and
/// that grant authorized and unexpired at the request's time. Those get the token's expiry
/// extended (not rotated: sender-constrained), their issued-token rows and audit event. A token
/// refreshed twice in one batch counts twice (both requests held the key). Returns the keys of
/// the jobs that counted.
const KEEP_BATCH_SQL: &str = "\
WITH input AS ( \
    SELECT * FROM unnest($1::text[], $2::timestamp[], $3::text[], $4::text[], $5::timestamp[], \
                         $6::timestamp[], $7::text[], $8::text[]) \
        AS i(key, at, token_id, grant_id, refresh_expires, event_at, client_id, details) \
), locked AS ( \
    SELECT r.id, r.grant_id FROM refresh_tokens r \
    WHERE r.id IN (SELECT token_id FROM input) AND r.status = 'active' \
      AND r.dpop_jkt IS NOT NULL \
    ORDER BY r.id \
    FOR NO KEY UPDATE OF r \
), ok AS ( \
    SELECT i.* FROM input i JOIN locked l ON l.id = i.token_id AND l.grant_id = i.grant_id \
    WHERE EXISTS (SELECT 1 FROM grants g \
                  WHERE g.id = i.grant_id AND g.status = 'authorized' AND g.expires_at > i.at) \
), kept AS ( \
    UPDATE refresh_tokens r SET expires_at = o.refresh_expires \
    FROM (SELECT token_id, max(refresh_expires) AS refresh_expires FROM ok GROUP BY token_id) o \
    WHERE r.id = o.token_id \
), issued AS ( \
    INSERT INTO issued_tokens (revocation_id, grant_id, family_id, token_hash, expires_at, dpop_jkt) \
    SELECT t.rid, ok.grant_id, t.family, t.hash, t.expires, t.jkt \
    FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::timestamp[], $14::text[]) \
        AS t(key, rid, family, hash, expires, jkt) \
    JOIN ok ON ok.key = t.key \
), event AS ( \
    INSERT INTO audit_events \
        (event_id, occurred_at, actor_type, actor_id, action, target_type, target_id, details) \
    SELECT key, event_at, 'client', client_id, 'token.refreshed', 'grant', grant_id, details \
    FROM ok ORDER BY key \
) \
SELECT key AS id FROM ok";

fn keep_batch(db: &Db, jobs: &[Keep]) -> StorageResult<Vec<bool>> {
    let texts = |f: fn(&Keep) -> &String| jobs.iter().map(|j| f(j).clone()).collect::<Vec<_>>();
    let times = |f: fn(&Keep) -> NaiveDateTime| jobs.iter().map(f).collect::<Vec<_>>();
    let (key, token_id, grant_id) = (
        texts(|j| &j.key),
        texts(|j| &j.token_id),
        texts(|j| &j.grant_id),
    );
    let (client_id, details) = (texts(|j| &j.client_id), texts(|j| &j.details));
    let (at, refresh_expires, event_at) = (
        times(|j| j.at),
        times(|j| j.refresh_expires),
        times(|j| j.event_at),
    );
    // Issued-token rows: one per revocation id; the authority block's carries the token hash.
    let (mut r_key, mut rid, mut r_family, mut r_hash, mut r_expires, mut r_jkt) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for j in jobs {
        for (n, r) in j.revocation_ids.iter().enumerate() {
            r_key.push(j.key.clone());
            rid.push(r.clone());
            r_family.push(j.family.clone());
            r_hash.push((n == 0).then(|| j.access_hash.clone()));
            r_expires.push(j.access_expires);
            r_jkt.push(j.jkt.clone());
        }
    }
    let statement = PgStatement::new(
        KEEP_BATCH_SQL,
        vec![
            B::TextArray(&key),
            B::TimestampArray(&at),
            B::TextArray(&token_id),
            B::TextArray(&grant_id),
            B::TimestampArray(&refresh_expires),
            B::TimestampArray(&event_at),
            B::TextArray(&client_id),
            B::TextArray(&details),
            B::TextArray(&r_key),
            B::TextArray(&rid),
            B::TextArray(&r_family),
            B::NullableTextArray(&r_hash),
            B::TimestampArray(&r_expires),
            B::TextArray(&r_jkt),
        ],
    );
    let result = run_under_lock_timeout(db, statement);
    let counted: HashSet<String> = match result {
        Ok(rows) => rows.into_iter().map(|r| r.id).collect(),
        // Unknown outcome: a job counted if its audit event exists (only this statement writes
        // an event with the job's key). A retry after a lost answer is harmless here anyway: a
        // bound refresh token is not single use.
        Err(e @ StorageError::Unavailable(_)) => {
            tracing::warn!(error = %e, jobs = jobs.len(), "batched bound refresh: outcome unknown; checking");
            let keys = key.clone();
            db.run_blocking(|c| {
                use platform::storage::schema::audit_events;
                Ok(audit_events::table
                    .filter(audit_events::event_id.eq_any(&keys))
                    .select(audit_events::event_id)
                    .load::<String>(c)?)
            })
            .map_err(|_| e)?
            .into_iter()
            .collect()
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs = jobs.len(), "batched bound refresh failed; retrying one by one");
            HashSet::new()
        }
    };
    Ok(jobs.iter().map(|j| counted.contains(&j.key)).collect())
}

/// The tokens of `jobs` whose rotation committed, told by their successors' hashes (only the
/// rotation statement inserts them): for settling a batch whose outcome the connection could not
/// report.
fn committed<'a>(
    db: &Db,
    jobs: impl Iterator<Item = &'a Rotation> + Clone,
) -> StorageResult<HashSet<String>> {
    let hashes: Vec<String> = jobs.clone().map(|j| j.new_hash.clone()).collect();
    let found: Vec<String> = db.run_blocking(|c| {
        Ok(refresh_tokens::table
            .filter(refresh_tokens::token_hash.eq_any(&hashes))
            .select(refresh_tokens::token_hash)
            .load(c)?)
    })?;
    let found: HashSet<String> = found.into_iter().collect();
    Ok(jobs
        .filter(|j| found.contains(&j.new_hash))
        .map(|j| j.old_id.clone())
        .collect())
}

#[cfg(test)]
mod tests {
    //! The rotation statement's guards, driven directly (PostgreSQL only: set
    //! `TEST_DATABASE_URL`). Over HTTP a request reaches the statement only with a token its read
    //! found active, so these are the cases where something changed between read and write.

    use super::*;
    use diesel::connection::SimpleConnection;

    struct TempDb {
        admin: String,
        name: String,
        url: String,
        db: Db,
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            if let Ok(mut c) = diesel::pg::PgConnection::establish(&self.admin) {
                let _ = c.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name));
            }
        }
    }

    fn temp_db() -> Option<TempDb> {
        let Some(admin) = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            // CI promises PostgreSQL: there, a missing URL is an error, not a skip.
            assert!(
                std::env::var("CONSENT_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "CONSENT_REQUIRE_SERVICES=1 but TEST_DATABASE_URL is not set"
            );
            return None;
        };
        let name = format!("consent_unit_{}", random_id("").to_lowercase());
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let mut c =
            diesel::pg::PgConnection::establish(&admin).expect("TEST_DATABASE_URL reachable");
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        let db = Db::connect(url.as_str(), 2, std::time::Duration::from_secs(10)).unwrap();
        db.migrate().unwrap();
        Some(TempDb {
            admin,
            name,
            url: url.to_string(),
            db,
        })
    }

    fn job(old_id: &str, grant_id: &str, at: NaiveDateTime) -> Rotation {
        Rotation {
            at,
            old_id: old_id.into(),
            grant_id: grant_id.into(),
            new_id: random_id("rtk_"),
            new_hash: random_id("h_"),
            family: format!("fam_{old_id}"),
            refresh_expires: at + chrono::Duration::days(1),
            access_hash: random_id("a_"),
            access_expires: at + chrono::Duration::minutes(10),
            revocation_ids: vec![random_id("rid_"), random_id("rid_")],
            event_id: random_id("evt_"),
            event_at: at,
            client_id: "c_1".into(),
            details: "{}".into(),
        }
    }

    fn count(c: &mut AnyConnection, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query(sql).get_result::<N>(c).unwrap().n
    }

    fn keep(token_id: &str, grant_id: &str, at: NaiveDateTime) -> Keep {
        Keep {
            key: random_id("evt_"),
            at,
            token_id: token_id.into(),
            grant_id: grant_id.into(),
            family: "f".into(),
            refresh_expires: at + chrono::Duration::days(2),
            access_hash: random_id("a_"),
            access_expires: at + chrono::Duration::minutes(10),
            revocation_ids: vec![random_id("rid_")],
            jkt: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".into(),
            event_at: at,
            client_id: "c_1".into(),
            details: "{}".into(),
        }
    }

    /// The keep statement: only active, bound tokens of their stated, live grant count; a token
    /// refreshed twice in one batch counts twice; nothing is rotated or spent.
    #[test]
    fn only_bound_active_tokens_of_live_grants_are_kept() {
        let Some(t) = temp_db() else {
            eprintln!("TEST_DATABASE_URL is not set: the PostgreSQL keep statement is not tested");
            return;
        };
        let now = chrono::Utc::now().naive_utc().trunc_subsecs(6);
        t.db.run_blocking(|c| {
            c.batch_execute(
                "INSERT INTO customers VALUES ('cust_1', 'u', 'U', 'x', now()); \
                 INSERT INTO developers VALUES ('dev_1', 'd@example.com', 'D', 'x', now()); \
                 INSERT INTO clients (id, developer_id, name, environment, redirect_uris, \
                     auth_method, secret_hash, allowed_actions, status, created_at, updated_at) \
                     VALUES ('c_1', 'dev_1', 'App', 'sandbox', '[]', 'client_secret_basic', 'x', \
                     '[]', 'active', now(), now()); \
                 INSERT INTO grants (id, customer_id, client_id, status, authorization_details, \
                     created_at, expires_at, updated_at) VALUES \
                     ('g_live', 'cust_1', 'c_1', 'authorized', '{}', now(), now() + interval '1 day', now()), \
                     ('g_revoked', 'cust_1', 'c_1', 'revoked', '{}', now(), now() + interval '1 day', now()); \
                 INSERT INTO refresh_tokens (id, token_hash, grant_id, family_id, status, created_at, expires_at, dpop_jkt) VALUES \
                     ('rt_bound', 'h1', 'g_live', 'f', 'active', now(), now() + interval '1 hour', 'k'), \
                     ('rt_bearer', 'h2', 'g_live', 'f', 'active', now(), now() + interval '1 hour', NULL), \
                     ('rt_revoked', 'h3', 'g_live', 'f', 'revoked', now(), now() + interval '1 hour', 'k'), \
                     ('rt_ended', 'h4', 'g_revoked', 'f', 'active', now(), now() + interval '1 hour', 'k');",
            )?;
            Ok(())
        })
        .unwrap();
        let jobs = vec![
            keep("rt_bound", "g_live", now),
            keep("rt_bound", "g_live", now),
            keep("rt_bearer", "g_live", now),
            keep("rt_revoked", "g_live", now),
            keep("rt_ended", "g_revoked", now),
            keep("rt_bound", "g_revoked", now),
            keep("rt_unknown", "g_live", now),
        ];
        let out = keep_batch(&t.db, &jobs).unwrap();
        assert_eq!(out, [true, true, false, false, false, false, false]);
        t.db.run_blocking(|c| {
            let extended = "SELECT count(*) AS n FROM refresh_tokens WHERE id = 'rt_bound' \
                AND status = 'active' AND expires_at > now() + interval '1 day'";
            assert_eq!(count(c, extended), 1);
            let untouched = "SELECT count(*) AS n FROM refresh_tokens \
                WHERE id <> 'rt_bound' AND expires_at < now() + interval '2 hours'";
            assert_eq!(count(c, untouched), 3);
            assert_eq!(count(c, "SELECT count(*) AS n FROM refresh_tokens"), 4);
            let issued = "SELECT count(*) AS n FROM issued_tokens WHERE dpop_jkt IS NOT NULL \
                AND token_hash IS NOT NULL AND grant_id = 'g_live'";
            assert_eq!(count(c, issued), 2);
            assert_eq!(count(c, "SELECT count(*) AS n FROM issued_tokens"), 2);
            let events = "SELECT count(*) AS n FROM audit_events \
                WHERE action = 'token.refreshed' AND target_id = 'g_live'";
            assert_eq!(count(c, events), 2);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn only_active_tokens_of_live_grants_rotate_and_nothing_else_is_written() {
        let Some(t) = temp_db() else {
            eprintln!(
                "TEST_DATABASE_URL is not set: the PostgreSQL rotation statement is not tested"
            );
            return;
        };
        let now = chrono::Utc::now().naive_utc().trunc_subsecs(6);
        t.db.run_blocking(|c| {
            c.batch_execute(
                "INSERT INTO customers VALUES ('cust_1', 'u', 'U', 'x', now()); \
                 INSERT INTO developers VALUES ('dev_1', 'd@example.com', 'D', 'x', now()); \
                 INSERT INTO clients (id, developer_id, name, environment, redirect_uris, \
                     auth_method, secret_hash, allowed_actions, status, created_at, updated_at) \
                     VALUES ('c_1', 'dev_1', 'App', 'sandbox', '[]', 'client_secret_basic', 'x', \
                     '[]', 'active', now(), now()); \
                 INSERT INTO grants (id, customer_id, client_id, status, authorization_details, \
                     created_at, expires_at, updated_at) VALUES \
                     ('g_live', 'cust_1', 'c_1', 'authorized', '{}', now(), now() + interval '1 day', now()), \
                     ('g_live2', 'cust_1', 'c_1', 'authorized', '{}', now(), now() + interval '1 day', now()), \
                     ('g_revoked', 'cust_1', 'c_1', 'revoked', '{}', now(), now() + interval '1 day', now()), \
                     ('g_expired', 'cust_1', 'c_1', 'authorized', '{}', now(), now() - interval '1 second', now()); \
                 INSERT INTO refresh_tokens (id, token_hash, grant_id, family_id, status, created_at, expires_at) VALUES \
                     ('rt_a', 'ha', 'g_live', 'f', 'active', now(), now() + interval '1 day'), \
                     ('rt_b', 'hb', 'g_live', 'f', 'active', now(), now() + interval '1 day'), \
                     ('rt_used', 'hu', 'g_live', 'f', 'used', now(), now() + interval '1 day'), \
                     ('rt_rev', 'hr', 'g_revoked', 'f', 'active', now(), now() + interval '1 day'), \
                     ('rt_exp', 'he', 'g_expired', 'f', 'active', now(), now() + interval '1 day'), \
                     ('rt_c', 'hc', 'g_live', 'f', 'active', now(), now() + interval '1 day');",
            )?;
            Ok(())
        })
        .unwrap();
        let jobs = vec![
            job("rt_a", "g_live", now),
            // The same token twice in one batch: the first use only.
            job("rt_a", "g_live", now),
            // Used by a request that committed since this one's read.
            job("rt_used", "g_live", now),
            // Grant revoked, or expired, since the read.
            job("rt_rev", "g_revoked", now),
            job("rt_exp", "g_expired", now),
            // A token stated with another grant than its own.
            job("rt_b", "g_live2", now),
            job("rt_unknown", "g_live", now),
        ];
        let out = rotate_batch(&t.db, &jobs).unwrap();
        assert_eq!(out, [true, false, false, false, false, false, false]);
        // rt_b was left as it was by the job naming another grant.
        let rt_b = [job("rt_b", "g_live", now)];
        assert_eq!(rotate_batch(&t.db, &rt_b).unwrap(), [true]);
        t.db.run_blocking(|c| {
            let statuses = "SELECT count(*) AS n FROM refresh_tokens WHERE \
                (id IN ('rt_a', 'rt_b', 'rt_used') AND status = 'used') OR \
                (id IN ('rt_rev', 'rt_exp') AND status = 'active')";
            assert_eq!(count(c, statuses), 5);
            // Two new refresh tokens, in their families, with everything that goes with them.
            let fresh = "SELECT count(*) AS n FROM refresh_tokens WHERE status = 'active' \
                AND grant_id = 'g_live' AND family_id IN ('fam_rt_a', 'fam_rt_b')";
            assert_eq!(count(c, fresh), 2);
            assert_eq!(count(c, "SELECT count(*) AS n FROM refresh_tokens"), 8);
            assert_eq!(count(c, "SELECT count(*) AS n FROM issued_tokens"), 4);
            let hashed = "SELECT count(*) AS n FROM issued_tokens WHERE token_hash IS NOT NULL";
            assert_eq!(count(c, hashed), 2);
            let events = "SELECT count(*) AS n FROM audit_events \
                WHERE action = 'token.refreshed' AND target_id = 'g_live' AND actor_id = 'c_1'";
            assert_eq!(count(c, events), 2);
            assert_eq!(count(c, "SELECT count(*) AS n FROM audit_events"), 2);
            Ok(())
        })
        .unwrap();
        // A batch with nothing to rotate writes nothing and says so.
        let again = rotate_batch(&t.db, &jobs[..1]).unwrap();
        assert_eq!(again, [false]);
        // Settling an unknown outcome: the rotations that committed are found by their
        // successors, the others (the duplicate of rt_a, used, revoked, ...) are not.
        let settled = committed(&t.db, jobs[1..].iter().chain(&rt_b)).unwrap();
        assert_eq!(settled, HashSet::from(["rt_b".to_string()]));
        let settled = committed(&t.db, jobs[..1].iter()).unwrap();
        assert_eq!(settled, HashSet::from(["rt_a".to_string()]));

        // A token locked elsewhere (a long revocation, say): the batch gives up after the lock
        // timeout instead of stalling every refresh queued behind it, rotates nothing, and the
        // request takes the transactional path; once the lock is gone it rotates.
        let mut locker = diesel::pg::PgConnection::establish(&t.url).unwrap();
        locker
            .batch_execute("BEGIN; SELECT 1 FROM refresh_tokens WHERE id = 'rt_c' FOR UPDATE;")
            .unwrap();
        let rt_c = [job("rt_c", "g_live", now)];
        let started = std::time::Instant::now();
        assert_eq!(rotate_batch(&t.db, &rt_c).unwrap(), [false]);
        let waited = started.elapsed();
        assert!(
            waited < std::time::Duration::from_secs(5),
            "waited {waited:?}"
        );
        locker.batch_execute("ROLLBACK").unwrap();
        assert_eq!(rotate_batch(&t.db, &rt_c).unwrap(), [true]);
    }
}
