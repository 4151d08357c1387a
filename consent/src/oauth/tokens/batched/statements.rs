//! The two write statements of the batched refresh grant: the rotation (a bearer family: the
//! presented token is spent and a successor issued) and the keep (a DPoP-bound family: the token
//! stays and its expiry slides). Both write, for each job that counts, the new access token's
//! issued-token rows and the `token.refreshed` audit event, in one statement and one commit per
//! batch, and both take the jobs' common columns ([`Columns`]) as binds `$1` to `$12`.
//!
//! Lock order (`platform::revocation::lock_grants`): the grants are only read and key-share locked
//! (foreign keys), which conflicts with no lock but `FOR UPDATE` and deletion, and the refresh
//! tokens are locked in id order (`FOR NO KEY UPDATE` under `ORDER BY`), as that rule says.
//! Locked rows are skipped (`SKIP LOCKED`), never waited for: see [`run`].

use std::collections::HashSet;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use platform::storage::schema::{audit_events, refresh_tokens};
use platform::storage::{AnyConnection, Db, PgBind as B, PgStatement, StorageError, StorageResult};

/// What a batched refresh writes whichever statement runs it.
#[derive(Debug)]
pub(super) struct Refreshed {
    /// The request's time: the grant must be live then.
    pub(super) at: NaiveDateTime,
    pub(super) grant_id: String,
    pub(super) family: String,
    /// The refresh token's (new or extended) expiry.
    pub(super) refresh_expires: NaiveDateTime,
    pub(super) access_hash: String,
    pub(super) access_expires: NaiveDateTime,
    /// The access token's revocation ids, one per block (the first is the authority's).
    pub(super) revocation_ids: Vec<String>,
    pub(super) event_at: NaiveDateTime,
    pub(super) client_id: String,
    /// Audit details (JSON).
    pub(super) details: String,
}

/// One rotation: the token `old_id` is spent and `new_id` issued.
#[derive(Debug)]
pub(super) struct Rotation {
    pub(super) old_id: String,
    pub(super) new_id: String,
    pub(super) new_hash: String,
    pub(super) event_id: String,
    pub(super) refreshed: Refreshed,
}

/// One refresh of a DPoP-bound family: its refresh token stays (the expiry slides). `key` (unique
/// per job, the audit event's id) ties the issued-token rows to the job, since one token may be
/// refreshed twice in a batch.
#[derive(Debug)]
pub(super) struct Keep {
    pub(super) key: String,
    pub(super) token_id: String,
    pub(super) jkt: String,
    pub(super) refreshed: Refreshed,
}

/// One code exchange: the code (by hash) is spent, and the tokens of a new family issued.
#[derive(Debug)]
pub(super) struct Exchange {
    pub(super) code_hash: String,
    pub(super) refresh_id: String,
    pub(super) refresh_hash: String,
    pub(super) event_id: String,
    /// The DPoP key the family is bound to (refresh and access tokens).
    pub(super) jkt: Option<String>,
    pub(super) refreshed: Refreshed,
}

/// The common columns of a batch, as arrays of one element per job (`$1` to `$8`), and its
/// issued-token rows (`$9` to `$12`): one per revocation id, the authority block's carrying the
/// access token's hash, tied to their job by its key.
#[derive(Default)]
struct Columns {
    key: Vec<String>,
    at: Vec<NaiveDateTime>,
    grant_id: Vec<String>,
    family: Vec<String>,
    refresh_expires: Vec<NaiveDateTime>,
    event_at: Vec<NaiveDateTime>,
    client_id: Vec<String>,
    details: Vec<String>,
    issued_key: Vec<String>,
    issued_rid: Vec<String>,
    issued_hash: Vec<Option<String>>,
    issued_expires: Vec<NaiveDateTime>,
}

impl Columns {
    fn of<'a>(jobs: impl Iterator<Item = (&'a String, &'a Refreshed)>) -> Self {
        let mut c = Self::default();
        for (key, j) in jobs {
            c.key.push(key.clone());
            c.at.push(j.at);
            c.grant_id.push(j.grant_id.clone());
            c.family.push(j.family.clone());
            c.refresh_expires.push(j.refresh_expires);
            c.event_at.push(j.event_at);
            c.client_id.push(j.client_id.clone());
            c.details.push(j.details.clone());
            for (n, rid) in j.revocation_ids.iter().enumerate() {
                c.issued_key.push(key.clone());
                c.issued_rid.push(rid.clone());
                c.issued_hash.push((n == 0).then(|| j.access_hash.clone()));
                c.issued_expires.push(j.access_expires);
            }
        }
        c
    }

    /// `$1` to `$12`, then the statement's own columns.
    fn binds<'a>(&'a self, own: impl IntoIterator<Item = B<'a>>) -> Vec<B<'a>> {
        let mut binds = vec![
            B::TextArray(&self.key),
            B::TimestampArray(&self.at),
            B::TextArray(&self.grant_id),
            B::TextArray(&self.family),
            B::TimestampArray(&self.refresh_expires),
            B::TimestampArray(&self.event_at),
            B::TextArray(&self.client_id),
            B::TextArray(&self.details),
            B::TextArray(&self.issued_key),
            B::TextArray(&self.issued_rid),
            B::NullableTextArray(&self.issued_hash),
            B::TimestampArray(&self.issued_expires),
        ];
        binds.extend(own);
        binds
    }
}

/// Every rotation of a batch in one statement, so one commit. A token is marked used only if it
/// is still active, belongs to the stated grant and that grant is authorized and unexpired at the
/// request's time, and only the rotations that marked their token get their new refresh token,
/// issued-token rows and audit event. Returns the ids of the tokens it rotated.
const ROTATE_BATCH_SQL: &str = "\
WITH input AS ( \
    SELECT * FROM unnest($1::text[], $2::timestamp[], $3::text[], $4::text[], $5::timestamp[], \
                         $6::timestamp[], $7::text[], $8::text[], $13::text[], $14::text[], \
                         $15::text[]) WITH ORDINALITY \
        AS i(old_id, at, grant_id, family, refresh_expires, event_at, client_id, details, \
             new_id, new_hash, event_id, n) \
    WHERE set_config('lock_timeout', '1s', true) IS NOT NULL \
), live AS MATERIALIZED ( \
    SELECT g.id, g.expires_at FROM grants g \
    WHERE g.id = ANY(ARRAY(SELECT grant_id FROM input)) AND g.status = 'authorized' \
), locked AS ( \
    SELECT r.id FROM refresh_tokens r JOIN input i ON r.id = i.old_id \
    WHERE r.id = ANY(ARRAY(SELECT old_id FROM input)) \
      AND r.status = 'active' AND r.grant_id = i.grant_id \
      AND EXISTS (SELECT 1 FROM live g WHERE g.id = i.grant_id AND g.expires_at > i.at) \
    ORDER BY r.id \
    FOR NO KEY UPDATE OF r SKIP LOCKED \
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
    FROM unnest($9::text[], $10::text[], $11::text[], $12::timestamp[]) AS t(key, rid, hash, expires) \
    JOIN ok ON ok.old_id = t.key \
), event AS ( \
    INSERT INTO audit_events \
        (event_id, occurred_at, actor_type, actor_id, action, target_type, target_id, details) \
    SELECT event_id, event_at, 'client', client_id, 'token.refreshed', 'grant', grant_id, details \
    FROM ok ORDER BY n \
) \
SELECT id FROM used";

/// Every bound-family refresh of a batch in one statement: a job counts only if its token is
/// still active, bound, of the stated grant, and that grant authorized and unexpired at the
/// request's time. Those get the token's expiry extended (not rotated: sender-constrained), their
/// issued-token rows and audit event. A token refreshed twice in one batch counts twice (both
/// requests held the key). Returns the keys of the jobs that counted.
const KEEP_BATCH_SQL: &str = "\
WITH input AS ( \
    SELECT * FROM unnest($1::text[], $2::timestamp[], $3::text[], $4::text[], $5::timestamp[], \
                         $6::timestamp[], $7::text[], $8::text[], $13::text[], $14::text[]) \
        AS i(key, at, grant_id, family, refresh_expires, event_at, client_id, details, \
             token_id, jkt) \
    WHERE set_config('lock_timeout', '1s', true) IS NOT NULL \
), live AS MATERIALIZED ( \
    SELECT g.id, g.expires_at FROM grants g \
    WHERE g.id = ANY(ARRAY(SELECT grant_id FROM input)) AND g.status = 'authorized' \
), locked AS ( \
    SELECT r.id, r.grant_id FROM refresh_tokens r \
    WHERE r.id = ANY(ARRAY(SELECT token_id FROM input)) AND r.status = 'active' \
      AND r.dpop_jkt IS NOT NULL \
    ORDER BY r.id \
    FOR NO KEY UPDATE OF r SKIP LOCKED \
), ok AS ( \
    SELECT i.* FROM input i JOIN locked l ON l.id = i.token_id AND l.grant_id = i.grant_id \
    WHERE EXISTS (SELECT 1 FROM live g WHERE g.id = i.grant_id AND g.expires_at > i.at) \
), kept AS ( \
    UPDATE refresh_tokens r SET expires_at = o.refresh_expires \
    FROM (SELECT token_id, max(refresh_expires) AS refresh_expires FROM ok GROUP BY token_id) o \
    WHERE r.id = o.token_id \
), issued AS ( \
    INSERT INTO issued_tokens (revocation_id, grant_id, family_id, token_hash, expires_at, dpop_jkt) \
    SELECT t.rid, ok.grant_id, ok.family, t.hash, t.expires, ok.jkt \
    FROM unnest($9::text[], $10::text[], $11::text[], $12::timestamp[]) AS t(key, rid, hash, expires) \
    JOIN ok ON ok.key = t.key \
), event AS ( \
    INSERT INTO audit_events \
        (event_id, occurred_at, actor_type, actor_id, action, target_type, target_id, details) \
    SELECT key, event_at, 'client', client_id, 'token.refreshed', 'grant', grant_id, details \
    FROM ok ORDER BY key \
) \
SELECT key AS id FROM ok";

/// Every code exchange of a batch in one statement, so one commit. The grants are locked first,
/// in id order, and only while authorized (the lock order of `platform::revocation::lock_grants`,
/// so a concurrent revocation or Grant Management change is wholly before or after this); a code
/// is spent only if it is unused, unexpired, of the stated grant and client, and that grant is
/// authorized and unexpired at the request's time, as the locked row says. Only the exchanges
/// that spent their code get their refresh token, issued-token rows, grant use and audit event.
/// Returns the hashes of the codes it spent.
const EXCHANGE_BATCH_SQL: &str = "\
WITH input AS ( \
    SELECT * FROM unnest($1::text[], $2::timestamp[], $3::text[], $4::text[], $5::timestamp[], \
                         $6::timestamp[], $7::text[], $8::text[], $13::text[], $14::text[], \
                         $15::text[], $16::text[]) WITH ORDINALITY \
        AS i(code_hash, at, grant_id, family, refresh_expires, event_at, client_id, details, \
             refresh_id, refresh_hash, event_id, jkt, n) \
    WHERE set_config('lock_timeout', '1s', true) IS NOT NULL \
), locked AS MATERIALIZED ( \
    SELECT g.id, g.expires_at FROM grants g \
    WHERE g.id = ANY(ARRAY(SELECT grant_id FROM input)) AND g.status = 'authorized' \
    ORDER BY g.id \
    FOR NO KEY UPDATE OF g SKIP LOCKED \
), spent AS ( \
    UPDATE authorization_codes a SET used_at = i.at \
    FROM input i \
    WHERE a.code_hash = i.code_hash AND a.used_at IS NULL AND a.expires_at > i.at \
      AND a.grant_id = i.grant_id AND a.client_id = i.client_id \
      AND EXISTS (SELECT 1 FROM locked l WHERE l.id = i.grant_id AND l.expires_at > i.at) \
    RETURNING a.code_hash \
), ok AS ( \
    SELECT i.* FROM input i JOIN spent s ON s.code_hash = i.code_hash \
), new_refresh AS ( \
    INSERT INTO refresh_tokens \
        (id, token_hash, grant_id, family_id, status, created_at, expires_at, dpop_jkt) \
    SELECT refresh_id, refresh_hash, grant_id, family, 'active', at, refresh_expires, jkt \
    FROM ok ORDER BY n \
), issued AS ( \
    INSERT INTO issued_tokens (revocation_id, grant_id, family_id, token_hash, expires_at, dpop_jkt) \
    SELECT t.rid, ok.grant_id, ok.family, t.hash, t.expires, ok.jkt \
    FROM unnest($9::text[], $10::text[], $11::text[], $12::timestamp[]) AS t(key, rid, hash, expires) \
    JOIN ok ON ok.code_hash = t.key \
), used AS ( \
    UPDATE grants g SET last_used_at = date_trunc('second', o.at) \
    FROM (SELECT grant_id, max(at) AS at FROM ok GROUP BY grant_id) o \
    WHERE g.id = o.grant_id \
      AND (g.last_used_at IS NULL OR g.last_used_at < o.at - interval '1 minute') \
), event AS ( \
    INSERT INTO audit_events \
        (event_id, occurred_at, actor_type, actor_id, action, target_type, target_id, details) \
    SELECT event_id, event_at, 'client', client_id, 'token.issued', 'grant', grant_id, details \
    FROM ok ORDER BY n \
) \
SELECT code_hash AS id FROM spent";

#[derive(QueryableByName)]
struct Counted {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// Runs a batch statement: one statement, so one transaction of its own (autocommit, no `BEGIN`
/// or `COMMIT` to send). Every refresh of the instance queues behind it, so a lock held elsewhere
/// (a long revocation, a grant's extension, a sweep) must not stall them all, nor fail the other
/// jobs of the batch: each statement locks its rows `SKIP LOCKED`, so a job whose token (or, for
/// a code exchange, grant) another transaction holds is passed over at once and its request takes
/// the transactional path, which waits for the lock and decides with the row as it is then. The
/// other jobs go on. Whatever else the statement might wait for (a foreign key's share lock on a
/// grant another transaction locked `FOR UPDATE`) is bounded by a `lock_timeout` of one second,
/// which each statement's `input` sets for its own transaction (`set_config(.., true)`) as it
/// reads its first row; every locking scan looks its rows up by an array of `input`'s ids
/// (`= ANY(ARRAY(SELECT ..))`), computed before the scan starts. That form also keeps the lookups
/// on the primary keys whatever the table statistics say: grants joined with `input` were planned
/// as a scan of every grant while the statistics were stale (right after a bulk load: 14 ms a
/// batch at 31,000 grants), so the live grants are read that way too (`live`).
/// Past the timeout the statement rolls back and each request takes the transactional path. Returns the ids the statement selects, or, where the connection failed (perhaps after
/// the commit), what `settle` reads on a fresh connection once the statement's server process
/// has ended: had the requests failed instead, a bearer client's retries would be replays that
/// end its grant. If the process cannot be ended or that read fails, the requests fail (503). A statement PostgreSQL rejected (a lock timeout, a deadlock: it rolled
/// back as a whole) counts nothing.
fn run(
    db: &Db,
    what: &str,
    jobs: usize,
    statement: PgStatement<'_>,
    settle: impl FnOnce() -> StorageResult<HashSet<String>>,
) -> StorageResult<HashSet<String>> {
    let mut server = None;
    let result = db.run_blocking_on(|c, serving| {
        server = serving;
        let AnyConnection::Postgresql(pg) = c else {
            return Err(StorageError::Unavailable(
                "batched statements need PostgreSQL".into(),
            ));
        };
        statement.load::<Counted>(pg).map_err(StorageError::from)
    });
    match result {
        Ok(rows) => Ok(rows.into_iter().map(|r| r.id).collect()),
        Err(e @ StorageError::Unavailable(_)) => {
            tracing::warn!(error = %e, jobs, "batched {what}: outcome unknown; checking");
            // PostgreSQL may still be running the statement (the connection was cut on the
            // way): read the outcome only once it can no longer commit, or a request declined
            // here would find its token spent by the statement later, and take that for a
            // replay that ends the customer's grant.
            let ended = server.map_or(Ok(()), |s| db.end_server_process(s));
            ended.and_then(|()| settle()).map_err(|settling| {
                tracing::warn!(error = %settling, jobs, "batched {what}: outcome still unknown");
                e
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs, "batched {what} failed; retrying one by one");
            Ok(HashSet::new())
        }
    }
}

pub(super) fn rotate_batch(db: &Db, jobs: &[Rotation]) -> StorageResult<Vec<bool>> {
    single_use_batch(db, "rotation", ROTATE_BATCH_SQL, jobs)
}

pub(super) fn exchange_batch(db: &Db, jobs: &[Exchange]) -> StorageResult<Vec<bool>> {
    single_use_batch(db, "code exchange", EXCHANGE_BATCH_SQL, jobs)
}

/// A job that uses something up (a bearer refresh token, a code) and issues a new refresh token.
pub(super) trait SingleUse {
    /// Whether the statement takes the jobs' DPoP keys (`$16`).
    const BOUND: bool;
    /// What the job uses up; the statement returns it for each job that did.
    fn used(&self) -> &String;
    /// The new refresh token's id and hash, and the audit event's id (`$13` to `$15`).
    fn issued(&self) -> [&String; 3];
    fn jkt(&self) -> Option<String>;
    fn refreshed(&self) -> &Refreshed;
}

impl SingleUse for Rotation {
    const BOUND: bool = false;
    fn used(&self) -> &String {
        &self.old_id
    }
    fn issued(&self) -> [&String; 3] {
        [&self.new_id, &self.new_hash, &self.event_id]
    }
    fn jkt(&self) -> Option<String> {
        None
    }
    fn refreshed(&self) -> &Refreshed {
        &self.refreshed
    }
}

impl SingleUse for Exchange {
    const BOUND: bool = true;
    fn used(&self) -> &String {
        &self.code_hash
    }
    fn issued(&self) -> [&String; 3] {
        [&self.refresh_id, &self.refresh_hash, &self.event_id]
    }
    fn jkt(&self) -> Option<String> {
        self.jkt.clone()
    }
    fn refreshed(&self) -> &Refreshed {
        &self.refreshed
    }
}

/// Runs a single-use statement over a batch. Something presented twice in one batch: only its
/// first use is attempted; the others report "not done" and the transactional path treats them
/// as the replays they are. An unknown outcome is settled by [`committed`]: had the requests
/// failed instead, a client's retry would be a replay that ends the customer's grant.
fn single_use_batch<J: SingleUse>(
    db: &Db,
    what: &str,
    sql: &'static str,
    jobs: &[J],
) -> StorageResult<Vec<bool>> {
    let mut seen = HashSet::new();
    let take: Vec<bool> = jobs.iter().map(|j| seen.insert(j.used())).collect();
    let picked: Vec<&J> = jobs
        .iter()
        .zip(&take)
        .filter(|(_, t)| **t)
        .map(|(j, _)| j)
        .collect();
    let columns = Columns::of(picked.iter().map(|j| (j.used(), j.refreshed())));
    let own = |n: usize| {
        picked
            .iter()
            .map(|j| j.issued()[n].clone())
            .collect::<Vec<_>>()
    };
    let (new_id, new_hash, event_id) = (own(0), own(1), own(2));
    let jkt: Vec<Option<String>> = picked.iter().map(|j| j.jkt()).collect();
    let mut binds = vec![
        B::TextArray(&new_id),
        B::TextArray(&new_hash),
        B::TextArray(&event_id),
    ];
    if J::BOUND {
        binds.push(B::NullableTextArray(&jkt));
    }
    let statement = PgStatement::new(sql, columns.binds(binds));
    let done = run(db, what, jobs.len(), statement, || {
        committed(db, picked.iter().copied())
    })?;
    Ok(jobs
        .iter()
        .zip(&take)
        .map(|(j, t)| *t && done.contains(j.used()))
        .collect())
}

pub(super) fn keep_batch(db: &Db, jobs: &[Keep]) -> StorageResult<Vec<bool>> {
    let columns = Columns::of(jobs.iter().map(|j| (&j.key, &j.refreshed)));
    let token_id: Vec<String> = jobs.iter().map(|j| j.token_id.clone()).collect();
    let jkt: Vec<String> = jobs.iter().map(|j| j.jkt.clone()).collect();
    let statement = PgStatement::new(
        KEEP_BATCH_SQL,
        columns.binds([B::TextArray(&token_id), B::TextArray(&jkt)]),
    );
    // Unknown outcome: a job counted if its audit event exists (only this statement writes an
    // event with the job's key). A retry after a lost answer is harmless here anyway: a bound
    // refresh token is not single use.
    let settle = || {
        db.run_blocking(|c| {
            Ok(audit_events::table
                .filter(audit_events::event_id.eq_any(&columns.key))
                .select(audit_events::event_id)
                .load::<String>(c)?)
        })
        .map(|found| found.into_iter().collect())
    };
    let counted = run(db, "bound refresh", jobs.len(), statement, settle)?;
    Ok(jobs.iter().map(|j| counted.contains(&j.key)).collect())
}

/// What `jobs` used up in a committed statement, told by their new refresh tokens' hashes (only
/// the statement inserts them): for settling a batch whose outcome the connection could not
/// report.
pub(super) fn committed<'a, J: SingleUse + 'a>(
    db: &Db,
    jobs: impl Iterator<Item = &'a J> + Clone,
) -> StorageResult<HashSet<String>> {
    let hashes: Vec<String> = jobs.clone().map(|j| j.issued()[1].clone()).collect();
    let found: Vec<String> = db.run_blocking(|c| {
        Ok(refresh_tokens::table
            .filter(refresh_tokens::token_hash.eq_any(&hashes))
            .select(refresh_tokens::token_hash)
            .load(c)?)
    })?;
    let found: HashSet<String> = found.into_iter().collect();
    Ok(jobs
        .filter(|j| found.contains(j.issued()[1]))
        .map(|j| j.used().clone())
        .collect())
}
