//! Ending grants: the one place that turns grants into `revoked` (or `expired`), invalidates their
//! refresh tokens, and appends the grant id and the revocation ids of every unexpired token minted
//! for it to the revocation list (`revocations`, the feed offline verifiers sync from). Runs in
//! the caller's transaction, so the revocation is durable before it is acknowledged.
//!
//! # The feed: commit order, never a skipped row
//! Readers (every instance's revocation list, `GET /oauth2/revocations`) page by `position`, not
//! by the insert-time `seq`: a sequence value is taken when a row is inserted, so a transaction
//! that inserts early and commits late would put its rows *behind* a cursor that already moved
//! past them. Positions are handed out by [`link_feed`] to committed rows only, by one linker at
//! a time (an advisory lock on PostgreSQL, the write lock on SQLite), each run continuing after
//! the last position given; a row committed late simply gets a later position. So positions only
//! grow in the order rows become visible, and a reader that pages `position > cursor` sees every
//! committed row exactly once. A position is a row of its own in `revocation_positions` (inserted
//! once; the feed row is never rewritten), and the linker finds the rows that have none from a
//! floor that never passes a transaction still running ([`crate::storage::commit_order`]). The
//! instance that committed a revocation links it at once, when it announces it ([`write`],
//! [`run`]); every instance also links what is pending on each periodic sync (a crash between
//! commit and linking delays a row by at most that).
//!
//! # Retention
//! Each row carries `expires_at`: the expiry of the token it names, or for a whole grant the
//! latest expiry of any token minted for it (no token of an ended grant can be minted later).
//! After that plus [`RETENTION_MARGIN`] the row can refuse nothing, and [`purge_feed`] deletes
//! it. A reader whose cursor is older than the oldest row loses nothing it needs.

use crate::storage::models::RefreshTokenStatus;
use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::audit::{self, Actor, NewEvent, Target};
use crate::storage::models::GrantStatus;
use crate::storage::schema::revocation_feed_head as head;
use crate::storage::schema::{
    grant_rows, issued_tokens, refresh_tokens, revocation_positions, revocations,
};
use crate::storage::{AnyConnection, StorageResult, commit_order};
use crate::webhooks;

/// Who or what ended a grant (`grants.revoked_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedBy {
    Customer,
    Client,
    Staff,
    Dormancy,
    Expiry,
    /// The server itself, after a detected attack (authorization code or refresh token replay).
    Security,
}

impl RevokedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokedBy::Customer => "customer",
            RevokedBy::Client => "client",
            RevokedBy::Staff => "staff",
            RevokedBy::Dormancy => "dormancy",
            RevokedBy::Expiry => "expiry",
            RevokedBy::Security => "security",
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = revocations, treat_none_as_default_value = false)]
struct NewRevocation<'a> {
    grant_id: &'a str,
    revocation_id: Option<&'a str>,
    reason: &'a str,
    revoked_at: chrono::NaiveDateTime,
    expires_at: chrono::NaiveDateTime,
}

/// Positions `$1 + 1`, `$1 + 2`, ... for the rows `$2` (their `seq`, in feed order), on
/// PostgreSQL: the same statement for any number of them (a linker pass is bounded).
const INSERT_POSITIONS_SQL: &str = "INSERT INTO revocation_positions (position, seq) \
    SELECT $1 + n, s FROM unnest($2::bigint[]) WITH ORDINALITY AS u(s, n)";

/// The feed rows of ended grants on PostgreSQL, all of one reason and instant (`$1`, `$2`): the
/// same statement for any number of rows (arrays, one per column; up to
/// [`crate::storage::ARRAY_ROWS`] each call), in the order given.
const INSERT_FEED_SQL: &str = "INSERT INTO revocations \
    (grant_id, revocation_id, reason, revoked_at, expires_at) \
    SELECT g, r, $1, $2, e FROM unnest($3::text[], $4::text[], $5::timestamp[]) \
    WITH ORDINALITY AS u(g, r, e, n) ORDER BY n";

/// How long a feed entry is kept after the tokens it names have expired: verifiers whose clocks
/// run behind still refuse them. Documented with the feed (`GET /oauth2/revocations`).
pub const RETENTION_MARGIN: chrono::Duration = chrono::Duration::hours(1);

/// Arbitrary constant identifying the feed linker's PostgreSQL advisory lock.
const FEED_LOCK_KEY: i64 = 0x636f_6e73_656e_7402;

/// Gives the next positions to committed feed rows that have none, oldest writer first, up to
/// `batch` of them; returns how many. Safe to run on every instance at once (see the module
/// documentation).
pub fn link_feed(conn: &mut AnyConnection, batch: i64) -> StorageResult<usize> {
    if !any_pending(conn)? {
        return Ok(0);
    }
    crate::storage::write_tx(conn, |conn| {
        if let AnyConnection::Postgresql(_) = conn {
            // Held until commit, so the next linker (which waits here) starts after these
            // positions are visible, and its own snapshot sees every row committed before.
            diesel::sql_query(format!("SELECT pg_advisory_xact_lock({FEED_LOCK_KEY})"))
                .execute(conn)?;
        }
        let (last, floor) = read_head(conn)?;
        let (pending, next_floor) = pending_from(conn, floor, batch)?;
        if pending.is_empty() && next_floor == floor {
            return Ok(0);
        }
        if let AnyConnection::Postgresql(pg) = conn {
            use crate::storage::{PgBind as B, PgStatement};
            PgStatement::new(
                INSERT_POSITIONS_SQL,
                vec![B::BigInt(last), B::BigIntArray(&pending)],
            )
            .execute(pg)?;
        } else {
            let positions: Vec<NewPosition> = (last + 1..)
                .zip(&pending)
                .map(|(position, &seq)| NewPosition { position, seq })
                .collect();
            crate::insert_rows!(conn, revocation_positions::table, &positions);
        }
        diesel::update(head::table.filter(head::id.eq(1)))
            .set((
                head::last_position.eq(last + pending.len() as i64),
                head::link_floor_xid.eq(next_floor.0),
                head::link_floor_seq.eq(next_floor.1),
            ))
            .execute(conn)?;
        Ok(pending.len())
    })
}

/// Whether a linking pass has work ([`commit_order::pass_has_work`]; on SQLite, a row from the
/// floor on): the common case, nothing pending, costs two index reads and no write transaction.
fn any_pending(conn: &mut AnyConnection) -> StorageResult<bool> {
    let (_, floor) = read_head(conn)?;
    Ok(match conn {
        AnyConnection::Postgresql(pg) => {
            commit_order::pass_has_work(pg, "revocations", "revocation_positions", floor)?
        }
        AnyConnection::Sqlite(c) => revocations::table
            .filter(revocations::seq.ge(floor.1))
            .select(revocations::seq)
            .first::<i64>(c)
            .optional()?
            .is_some(),
    })
}

/// One feed row's position.
#[derive(Insertable)]
#[diesel(table_name = revocation_positions)]
struct NewPosition {
    position: i64,
    seq: i64,
}

/// The feed head: the last position handed out, and the link floor
/// ([`crate::storage::commit_order`]).
fn read_head(conn: &mut AnyConnection) -> StorageResult<(i64, (i64, i64))> {
    let (last, xid, seq) = head::table
        .filter(head::id.eq(1))
        .select((
            head::last_position,
            head::link_floor_xid,
            head::link_floor_seq,
        ))
        .first::<(i64, i64, i64)>(conn)?;
    Ok((last, (xid, seq)))
}

/// Up to `batch` committed feed rows (their `seq`) that have no position, oldest writer first,
/// and the head's next floor: every row before it has a position once these do (the floor and
/// why no row that commits late is skipped: [`crate::storage::commit_order`]).
fn pending_from(
    conn: &mut AnyConnection,
    floor: (i64, i64),
    batch: i64,
) -> StorageResult<(Vec<i64>, (i64, i64))> {
    match conn {
        AnyConnection::Postgresql(pg) => {
            let running = commit_order::oldest_running(pg)?;
            let rows: Vec<(i64, i64)> = revocations::table
                .filter(commit_order::not_taken_from(
                    "revocations",
                    "revocation_positions",
                    floor,
                ))
                .order(commit_order::xid_order("revocations"))
                .then_order_by(revocations::seq.asc())
                .limit(batch)
                .select((revocations::seq, commit_order::xid_of("revocations")))
                .load(pg)?;
            let full = rows.len() as i64 == batch;
            let last = rows.last().filter(|_| full).map(|&(seq, xid)| (xid, seq));
            let next = commit_order::next_floor(floor, running, last);
            Ok((rows.into_iter().map(|(seq, _)| seq).collect(), next))
        }
        AnyConnection::Sqlite(c) => {
            let seqs: Vec<i64> = revocations::table
                .filter(revocations::seq.ge(floor.1))
                .order(revocations::seq.asc())
                .limit(batch)
                .select(revocations::seq)
                .load(c)?;
            let next = seqs.last().map_or(floor, |seq| (0, seq + 1));
            Ok((seqs, next))
        }
    }
}

/// Links everything pending (batches of 10,000).
pub fn link_feed_all(conn: &mut AnyConnection) -> StorageResult<usize> {
    let mut total = 0;
    loop {
        let n = link_feed(conn, 10_000)?;
        total += n;
        if n < 10_000 {
            return Ok(total);
        }
    }
}

/// Deletes feed rows whose tokens expired more than [`RETENTION_MARGIN`] ago (rows with a
/// position only, at most `batch`), and their positions; returns how many.
pub fn purge_feed(
    conn: &mut AnyConnection,
    now: DateTime<Utc>,
    batch: i64,
) -> StorageResult<usize> {
    let cutoff = (now - RETENTION_MARGIN).naive_utc();
    let doomed: Vec<i64> = revocations::table
        .inner_join(revocation_positions::table)
        .filter(revocations::expires_at.lt(cutoff))
        .select(revocations::seq)
        .limit(batch)
        .load(conn)?;
    if doomed.is_empty() {
        return Ok(0);
    }
    crate::storage::write_tx(conn, |conn| {
        diesel::delete(
            revocation_positions::table.filter(revocation_positions::seq.eq_any(&doomed)),
        )
        .execute(conn)?;
        Ok(
            diesel::delete(revocations::table.filter(revocations::seq.eq_any(&doomed)))
                .execute(conn)?,
        )
    })
}

/// One row of the revocation feed, with its position.
#[derive(Debug, Clone, Queryable)]
pub struct FeedEntry {
    /// The reader's cursor after this row.
    pub position: i64,
    pub grant_id: String,
    /// `None`: the whole grant ended; else one token's revocation id.
    pub revocation_id: Option<String>,
    pub revoked_at: chrono::NaiveDateTime,
    /// After this the row can refuse nothing (see the module documentation).
    pub expires_at: chrono::NaiveDateTime,
}

/// The last position the feed has handed out: every entry up to it is committed and readable
/// ([`read_feed`]); later ones get later positions.
pub fn feed_head(conn: &mut AnyConnection) -> StorageResult<i64> {
    Ok(read_head(conn)?.0)
}

/// Up to `limit` feed rows after the cursor `after`, in commit order (every reader pages this
/// way: the instances' revocation lists and `GET /oauth2/revocations`).
pub fn read_feed(
    conn: &mut AnyConnection,
    after: i64,
    limit: i64,
) -> StorageResult<Vec<FeedEntry>> {
    Ok(revocation_positions::table
        .inner_join(revocations::table)
        .filter(revocation_positions::position.gt(after))
        .order(revocation_positions::position.asc())
        .limit(limit)
        .select((
            revocation_positions::position,
            revocations::grant_id,
            revocations::revocation_id,
            revocations::revoked_at,
            revocations::expires_at,
        ))
        .load(conn)?)
}

/// Puts single tokens on the revocation list (RFC 7009 revocation of an access token): their
/// revocation ids (one per block), kept until `expires_at`, the token's expiry. Returns how many
/// ids were newly listed (0: already revoked; nothing changed).
pub fn revoke_tokens(
    conn: &mut AnyConnection,
    revoked: &mut Revocations,
    grant_id: &str,
    revocation_ids: &[String],
    reason: &str,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StorageResult<usize> {
    let until = expires_at.max(now).naive_utc();
    // Ids already listed for at least as long are not listed again: revoking one token over and
    // over must not grow the feed every instance syncs (nor announce anything).
    let listed: Vec<Option<String>> = revocations::table
        .filter(revocations::revocation_id.eq_any(revocation_ids))
        .filter(revocations::expires_at.ge(until))
        .select(revocations::revocation_id)
        .load(conn)?;
    let rows: Vec<NewRevocation<'_>> = revocation_ids
        .iter()
        .filter(|rid| !listed.iter().any(|l| l.as_deref() == Some(rid.as_str())))
        .map(|rid| NewRevocation {
            grant_id,
            revocation_id: Some(rid),
            reason,
            revoked_at: now.naive_utc(),
            expires_at: until,
        })
        .collect();
    if rows.is_empty() {
        return Ok(0);
    }
    crate::insert_rows!(conn, revocations::table, &rows);
    revoked.tokens += rows.len();
    Ok(rows.len())
}

/// What one transaction revoked, to announce once it has committed. [`end_grants`] and
/// [`revoke_tokens`] record into it, and only [`write`], [`run`] and [`collect`] create one:
/// the first two announce it when the closure returns, the last hands back an [`Unannounced`]
/// receipt. So no path can end a grant and skip the announcement. (A rolled-back transaction
/// announces nothing through [`write`]; through [`run`], where the closure commits on its own, an
/// announcement after a rollback only wakes readers up for nothing: they read the feed in the
/// database.)
#[derive(Debug)]
pub struct Revocations {
    grant_ids: Vec<String>,
    tokens: usize,
}

impl Revocations {
    fn new() -> Self {
        Self {
            grant_ids: Vec::new(),
            tokens: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.grant_ids.is_empty() && self.tokens == 0
    }

    /// Tells every instance, after the commit: links the new feed rows (so readers can see them
    /// at once), wakes this process's lists, then one Redis message per 1,000 ended grant ids
    /// (space-separated). Receivers only need the wake-up (they sync from the revocation feed in
    /// the database), so a failure is logged, not returned: the database stays authoritative,
    /// and every instance also links and polls it periodically.
    async fn publish(self, platform: &crate::Platform) {
        if self.is_empty() {
            return;
        }
        platform.revocation_signals.announce();
        if let Err(e) = platform.db.run(link_feed_all).await {
            tracing::warn!(error = %e, "linking the revocation feed failed; the periodic linker retries");
        }
        // This process's own lists sync at once, whatever Redis does.
        platform.revocation_signals.wake();
        // Single-token revocations end no grant: an empty message still wakes the others up.
        let empty: [String; 0] = [];
        let messages = if self.grant_ids.is_empty() {
            vec![&empty[..]]
        } else {
            self.grant_ids.chunks(1_000).collect()
        };
        for ids in messages {
            if let Err(e) = platform
                .cache
                .publish(REVOCATION_CHANNEL, &ids.join(" "))
                .await
            {
                tracing::warn!(error = %e, "revocation publish failed; the database remains authoritative");
            }
        }
    }
}

/// Runs `f` in one write transaction ([`crate::storage::Db::write`]); once it has committed,
/// announces what `f` revoked to every instance. The way to call [`end_grants`].
pub async fn write<T, F>(platform: &crate::Platform, f: F) -> StorageResult<T>
where
    T: Send + 'static,
    F: FnOnce(&mut AnyConnection, &mut Revocations) -> StorageResult<T> + Send + 'static,
{
    let (value, pending) = platform
        .db
        .write(move |c| match collect(c, f) {
            (Ok(value), pending) => Ok((value, pending)),
            // Rolled back: nothing to announce.
            (Err(e), _) => Err(e),
        })
        .await?;
    pending.announce(platform).await;
    Ok(value)
}

/// Runs `f` on a pooled connection (`f` opens and commits its own transactions, as the token
/// endpoint does, which commits a replay's revocation and still answers an error); once it
/// returns, announces what it revoked.
pub async fn run<T, F>(platform: &crate::Platform, f: F) -> StorageResult<T>
where
    T: Send + 'static,
    F: FnOnce(&mut AnyConnection, &mut Revocations) -> T + Send + 'static,
{
    let (value, pending) = platform.db.run(move |c| Ok(collect(c, f))).await?;
    pending.announce(platform).await;
    Ok(value)
}

/// Runs `f` on a connection the caller holds and manages (its own transaction), collecting what
/// it revokes into an [`Unannounced`] receipt that the caller must announce after the commit.
/// For callers that cannot use [`write`] or [`run`] (tests driving two transactions by hand).
pub fn collect<T>(
    conn: &mut AnyConnection,
    f: impl FnOnce(&mut AnyConnection, &mut Revocations) -> T,
) -> (T, Unannounced) {
    let mut revoked = Revocations::new();
    let value = f(conn, &mut revoked);
    (value, Unannounced(Some(revoked)))
}

/// Revocations committed (or about to be) that no instance has heard of yet. Announce it once
/// the transaction has committed: dropped unannounced, other instances would only notice on
/// their next periodic sync.
#[must_use = "announce the revocations once the transaction has committed"]
#[derive(Debug)]
pub struct Unannounced(Option<Revocations>);

impl Unannounced {
    /// Tells every instance (see [`Revocations`]).
    pub async fn announce(mut self, platform: &crate::Platform) {
        if let Some(revoked) = self.0.take() {
            revoked.publish(platform).await;
        }
    }
}

/// This instance's view of its own announcements (one per [`crate::Platform`], shared by its
/// clones).
#[derive(Debug)]
pub struct Signals {
    /// Counts announcements (revocations committed here, grants or single tokens), so caches of
    /// token answers can tell that something was revoked since they stored an answer, without
    /// waiting for the revocation feed.
    epoch: std::sync::atomic::AtomicU64,
    /// Wakes this instance's revocation lists after an announcement linked new rows, without a
    /// round trip through Redis (which may be down).
    wake: tokio::sync::watch::Sender<u64>,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            epoch: std::sync::atomic::AtomicU64::new(0),
            wake: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Signals {
    /// The current revocation epoch of this instance.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Subscribe, and sync whenever the value changes.
    pub fn wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        self.wake.subscribe()
    }

    fn announce(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn wake(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Channel on which ended grant ids are published to every instance.
pub const REVOCATION_CHANNEL: &str = "revocations";

/// Which refresh tokens [`lock_grants`] locks after the grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenLocks {
    /// None: the caller locks the one token it needs itself, after the grant.
    None,
    /// Every active refresh token of the grants.
    Active,
}

/// The lock order for grants and their refresh tokens, the one rule every writer follows
/// (PostgreSQL; SQLite's write transaction serializes writers anyway): grants first, in id
/// order, then refresh tokens, in id order (the order the batched rotation statement locks its
/// tokens in). Following it, two concurrent calls for one grant (say, two replays detected at
/// once) cannot both see it live: the second waits, then reads it ended; and a rotation batch
/// holding tokens of several grants and a revocation of those grants cannot each wait for a row
/// the other holds. The rows locked are those the caller's UPDATEs would lock anyway.
pub fn lock_grants(
    conn: &mut AnyConnection,
    grant_ids: &[String],
    tokens: TokenLocks,
) -> StorageResult<()> {
    if let AnyConnection::Postgresql(pg) = conn {
        use diesel::sql_types::{Array, Text};
        diesel::sql_query("SELECT 1 FROM grants WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
            .bind::<Array<Text>, _>(grant_ids)
            .execute(pg)?;
        if tokens == TokenLocks::Active {
            lock_active_tokens(pg, grant_ids)?;
        }
    }
    Ok(())
}

/// The second step of [`lock_grants`]: every active refresh token of the grants, in id order.
fn lock_active_tokens(pg: &mut diesel::PgConnection, grant_ids: &[String]) -> StorageResult<()> {
    use diesel::sql_types::{Array, Text};
    diesel::sql_query(
        "SELECT 1 FROM refresh_tokens WHERE grant_id = ANY($1) AND status = 'active' \
         ORDER BY id FOR NO KEY UPDATE",
    )
    .bind::<Array<Text>, _>(grant_ids)
    .execute(pg)?;
    Ok(())
}

/// Ends the given grants that are still live. Returns the ids that actually changed (already
/// ended ones are skipped, so calling twice is harmless).
pub fn end_grants(
    conn: &mut AnyConnection,
    revoked: &mut Revocations,
    grant_ids: &[String],
    by: RevokedBy,
    reason: &str,
    actor: &Actor,
    now: DateTime<Utc>,
) -> StorageResult<Vec<String>> {
    if grant_ids.is_empty() {
        return Ok(vec![]);
    }
    lock_grants(conn, grant_ids, TokenLocks::Active)?;
    let mut live: Vec<(String, String)> = Vec::new();
    for ids in grant_ids.chunks(1_000) {
        live.extend(
            grant_rows::table
                .filter(grant_rows::id.eq_any(ids))
                .filter(grant_rows::status.eq_any(GrantStatus::LIVE_STR))
                .select((grant_rows::id, grant_rows::client_id))
                .load::<(String, String)>(conn)?,
        );
    }
    let ending = Ending {
        by,
        reason,
        actor,
        now,
    };
    end_live(conn, revoked, live, ending)
}

/// [`end_grants`] for grants this transaction has already locked (on PostgreSQL, `FOR NO KEY
/// UPDATE`, as a selection with [`crate::storage::skip_locked`] does) and selected as live, each
/// with its client: the lifecycle sweep's batches. Saves locking and reading them again; their
/// refresh tokens are locked here, after the grants, as [`lock_grants`] would.
pub fn end_locked_grants(
    conn: &mut AnyConnection,
    revoked: &mut Revocations,
    live: Vec<(String, String)>,
    ending: Ending<'_>,
) -> StorageResult<Vec<String>> {
    if let AnyConnection::Postgresql(pg) = conn
        && !live.is_empty()
    {
        let ids: Vec<String> = live.iter().map(|(id, _)| id.clone()).collect();
        lock_active_tokens(pg, &ids)?;
    }
    end_live(conn, revoked, live, ending)
}

/// Why, by whom and when grants end ([`end_locked_grants`]).
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    pub by: RevokedBy,
    pub reason: &'a str,
    pub actor: &'a Actor,
    pub now: DateTime<Utc>,
}

/// Ends `live` grants (id, client), which the caller has locked and found live.
fn end_live(
    conn: &mut AnyConnection,
    revoked: &mut Revocations,
    live: Vec<(String, String)>,
    ending: Ending<'_>,
) -> StorageResult<Vec<String>> {
    let Ending {
        by,
        reason,
        actor,
        now,
    } = ending;
    if live.is_empty() {
        return Ok(vec![]);
    }
    let (live, client_of): (Vec<String>, Vec<String>) = live.into_iter().unzip();
    let now_naive = now.naive_utc();
    let status = if by == RevokedBy::Expiry {
        GrantStatus::Expired
    } else {
        GrantStatus::Revoked
    };
    // Large sets (the lifecycle sweep) go in chunks; each statement stays within bind limits.
    for ids in live.chunks(1_000) {
        diesel::update(grant_rows::table.filter(grant_rows::id.eq_any(ids)))
            .set((
                grant_rows::status.eq(status.as_str()),
                grant_rows::revoked_at.eq(now_naive),
                grant_rows::revoked_by.eq(by.as_str()),
                grant_rows::updated_at.eq(now_naive),
            ))
            .execute(conn)?;
        diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::grant_id.eq_any(ids))
                .filter(refresh_tokens::status.ne(RefreshTokenStatus::Revoked.as_str())),
        )
        .set(refresh_tokens::status.eq(RefreshTokenStatus::Revoked.as_str()))
        .execute(conn)?;
    }
    let mut tokens: Vec<(String, String, chrono::NaiveDateTime)> = Vec::new();
    for ids in live.chunks(1_000) {
        tokens.extend(
            issued_tokens::table
                .filter(issued_tokens::grant_id.eq_any(ids))
                .filter(issued_tokens::expires_at.gt(now_naive))
                .select((
                    issued_tokens::grant_id,
                    issued_tokens::revocation_id,
                    issued_tokens::expires_at,
                ))
                .load(conn)?,
        );
    }
    // A grant's entry matters until the last token minted for it expires (none can be minted
    // once this commits).
    let mut last_expiry: std::collections::HashMap<&str, chrono::NaiveDateTime> =
        std::collections::HashMap::new();
    for (grant_id, _, expires_at) in &tokens {
        let e = last_expiry.entry(grant_id.as_str()).or_insert(now_naive);
        *e = (*e).max(*expires_at);
    }
    // The revocation feed: one row per grant, one per unexpired token minted for it.
    let feed: Vec<NewRevocation<'_>> = live
        .iter()
        .map(|id| NewRevocation {
            grant_id: id,
            revocation_id: None,
            reason,
            revoked_at: now_naive,
            expires_at: last_expiry.get(id.as_str()).copied().unwrap_or(now_naive),
        })
        .chain(
            tokens
                .iter()
                .map(|(grant_id, revocation_id, expires_at)| NewRevocation {
                    grant_id,
                    revocation_id: Some(revocation_id),
                    reason,
                    revoked_at: now_naive,
                    expires_at: *expires_at,
                }),
        )
        .collect();
    if let AnyConnection::Postgresql(pg) = conn {
        use crate::storage::{ARRAY_ROWS, PgBind as B, PgStatement, column};
        for feed in feed.chunks(ARRAY_ROWS) {
            let revocation_id: Vec<Option<String>> = feed
                .iter()
                .map(|r| r.revocation_id.map(str::to_string))
                .collect();
            let expires_at: Vec<chrono::NaiveDateTime> =
                feed.iter().map(|r| r.expires_at).collect();
            PgStatement::new(
                INSERT_FEED_SQL,
                vec![
                    B::Text(reason),
                    B::Timestamp(&now_naive),
                    B::TextArray(&column(feed, |r| r.grant_id.to_string())),
                    B::NullableTextArray(&revocation_id),
                    B::TimestampArray(&expires_at),
                ],
            )
            .execute(pg)?;
        }
    } else {
        crate::insert_rows!(conn, revocations::table, &feed);
    }
    let action = if status == GrantStatus::Expired {
        "grant.expired"
    } else {
        "grant.revoked"
    };
    let events: Vec<NewEvent> = live
        .iter()
        .map(|id| {
            NewEvent::new(actor.clone(), action, Target::new("grant", id.clone()))
                .details(serde_json::json!({ "by": by.as_str(), "reason": reason }))
        })
        .collect();
    audit::record_many(conn, &events, now)?;
    // The client hears of it through its webhook (same transaction: the outbox).
    let hooks: Vec<webhooks::Event> = live
        .iter()
        .zip(&client_of)
        .map(|(id, client)| {
            webhooks::Event::grant(
                action,
                client.clone(),
                id.clone(),
                serde_json::json!({
                    "status": status,
                    "revoked_by": by.as_str(),
                    "reason": reason,
                    "at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                }),
            )
        })
        .collect();
    webhooks::enqueue(conn, &hooks, now)?;
    revoked.grant_ids.extend(live.iter().cloned());
    Ok(live)
}
