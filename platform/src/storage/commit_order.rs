//! Finding the committed rows of an append-only table that a linker has not taken yet, in an
//! order that never skips a row whose transaction commits late. Two linkers use it: the audit
//! chain (`audit_events`, links in `audit_links`) and the revocation feed (`revocations`,
//! positions in `revocation_positions`). Each keeps its taken rows in an insert-only table keyed
//! by the row's `seq`, and a floor in its head row.
//!
//! # SQLite
//! One writer at a time, so rows commit in `seq` order: the floor is `(0, seq)`, the seq after
//! the last row taken, and the rows from it on are exactly the ones not taken.
//!
//! # PostgreSQL
//! A lower `seq` can commit after a higher one. Each row records its inserting transaction
//! (`xid xid8 DEFAULT pg_current_xact_id()`, 64-bit, never wraps; indexed with `seq`), and the
//! floor is an (xid, seq) before which every row is taken. A pass reads, in (xid, seq) order from
//! the floor, the rows that have no entry in the taken table: what it sees is committed, whatever
//! the commit order. The new floor ([`next_floor`]) is the earlier of `(running, 0)`, where
//! `running` is the oldest transaction still running when the pass began ([`oldest_running`]:
//! every transaction below it had ended, so all their rows are visible to the pass and read unless
//! taken), and, when the batch was full, the position just after the last row read (every visible
//! row not taken before it was read; when its transaction is below `running`, so is everything
//! before it). So no row is ever skipped, even in a transaction that wrote many thousands, and a
//! pass reads only rows from the oldest transaction then running on: one left open for long makes
//! each pass read more, never take wrongly.

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool};

/// PostgreSQL: the oldest transaction still running (`pg_snapshot_xmin` of a snapshot taken now).
/// Must be read in a statement before the one that reads the rows: every transaction below it has
/// ended by then, so a later statement's snapshot sees all it committed.
pub fn oldest_running(pg: &mut diesel::PgConnection) -> QueryResult<i64> {
    diesel::select(sql::<BigInt>(
        "pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
    ))
    .get_result(pg)
}

/// PostgreSQL: the floor after a pass that began with `running` the oldest transaction then
/// running, and read `last` (the (xid, seq) of its last row) when the batch was full. Never
/// below `floor`.
pub fn next_floor(
    floor: (i64, i64),
    running: i64,
    full_batch_last: Option<(i64, i64)>,
) -> (i64, i64) {
    let next = match full_batch_last {
        Some((xid, seq)) => (running, 0).min((xid, seq + 1)),
        None => (running, 0),
    };
    next.max(floor)
}

/// PostgreSQL: `table`'s rows from `floor` on, in (xid, seq) order, with no row in `taken` (whose
/// `seq` column is unique). Order the query by [`xid_order`]`(table)` then `seq`, which the
/// (xid, seq) index gives, and a LIMIT stops early.
pub fn not_taken_from(
    table: &'static str,
    taken: &'static str,
    (xid, seq): (i64, i64),
) -> diesel::expression::SqlLiteral<Bool, impl diesel::query_builder::QueryFragment<diesel::pg::Pg>>
{
    sql::<Bool>(&format!("({table}.xid, {table}.seq) >= (("))
        .bind::<BigInt, _>(xid)
        .sql(")::text::xid8, ")
        .bind::<BigInt, _>(seq)
        .sql(&format!(") AND {}", not_taken(table, taken)))
}

/// `table`'s row has no row in `taken`. Looked up per row (`OFFSET 0` keeps the subquery from
/// becoming a join): a hash anti-join would read every entry ever written, once per pass.
fn not_taken(table: &str, taken: &str) -> String {
    format!("NOT EXISTS (SELECT 1 FROM {taken} AS t WHERE t.seq = {table}.seq OFFSET 0)")
}

/// How many rows from the floor on, all taken, make a pass that takes nothing still move the floor
/// up: below it, reading them again on each pass costs less than writing the head.
pub const STALE_FLOOR_ROWS: i64 = 512;

/// Whether at least [`STALE_FLOOR_ROWS`] rows of `table` lie from the floor (`$1`, `$2`) on: a
/// bounded read of the (xid, seq) index. The ORDER BY keeps the planner from a sequential scan,
/// which would read the whole table to find the few rows at its end.
fn stale_floor_sql(table: &str) -> String {
    format!(
        "(SELECT count(*) FROM (SELECT 1 FROM {table} \
           WHERE ({table}.xid, {table}.seq) >= (($1)::text::xid8, $2) \
           ORDER BY {table}.xid, {table}.seq LIMIT {STALE_FLOOR_ROWS}) AS s) \
         >= {STALE_FLOOR_ROWS}"
    )
}

#[derive(QueryableByName)]
struct Answer {
    #[diesel(sql_type = Bool)]
    yes: bool,
}

fn ask(pg: &mut diesel::PgConnection, query: String, (xid, seq): (i64, i64)) -> QueryResult<bool> {
    Ok(diesel::sql_query(query)
        .bind::<BigInt, _>(xid)
        .bind::<BigInt, _>(seq)
        .get_result::<Answer>(pg)?
        .yes)
}

/// PostgreSQL: whether `table`'s floor lies [`STALE_FLOOR_ROWS`] rows or more behind. After a
/// burst of rows taken while some transaction was running, the floor stays below them until the
/// next pass that takes something; a pass that takes nothing moves it up when this holds, so
/// later passes do not read the burst again.
pub fn floor_worth_moving(
    pg: &mut diesel::PgConnection,
    table: &'static str,
    floor: (i64, i64),
) -> QueryResult<bool> {
    ask(
        pg,
        format!("SELECT {} AS yes", stale_floor_sql(table)),
        floor,
    )
}

/// PostgreSQL: whether a pass from `floor` has work: a committed row not taken, or a floor that
/// may move up ([`floor_worth_moving`]). One statement and no write transaction, for a linker
/// that probes before it takes its lock. The bounded count comes first: when it holds, the
/// anti-join need not read those rows.
pub fn pass_has_work(
    pg: &mut diesel::PgConnection,
    table: &'static str,
    taken: &'static str,
    floor: (i64, i64),
) -> QueryResult<bool> {
    let query = format!(
        "SELECT {} OR EXISTS (SELECT 1 FROM {table} \
           WHERE ({table}.xid, {table}.seq) >= (($1)::text::xid8, $2) AND {} \
           ORDER BY {table}.xid, {table}.seq LIMIT 1) AS yes",
        stale_floor_sql(table),
        not_taken(table, taken)
    );
    ask(pg, query, floor)
}

/// PostgreSQL: the row's inserting transaction as a bigint (for [`next_floor`]), qualified: a
/// bare `xid` in ORDER BY would name a selected output column, which no index orders.
pub fn xid_of(table: &'static str) -> diesel::expression::SqlLiteral<BigInt> {
    sql::<BigInt>(&format!("{table}.xid::text::bigint"))
}

/// PostgreSQL: ORDER BY the row's inserting transaction (the xid8 itself, which the index holds).
pub fn xid_order(table: &'static str) -> diesel::expression::SqlLiteral<BigInt> {
    sql::<BigInt>(&format!("{table}.xid"))
}

#[cfg(test)]
mod tests {
    use super::next_floor;

    #[test]
    fn the_floor_stops_at_the_oldest_running_writer_and_never_goes_back() {
        // A batch that was not full: everything below the oldest running transaction is taken.
        assert_eq!(next_floor((5, 0), 9, None), (9, 0));
        // A full batch whose last row is below the running writer: just after that row.
        assert_eq!(next_floor((5, 0), 9, Some((7, 40))), (7, 41));
        // A full batch reaching past the running writer (rows it could not see stay behind).
        assert_eq!(next_floor((5, 0), 9, Some((12, 40))), (9, 0));
        // The oldest running transaction is never below a floor already reached.
        assert_eq!(next_floor((9, 3), 9, None), (9, 3));
        assert_eq!(next_floor((10, 0), 9, Some((7, 40))), (10, 0));
    }
}
