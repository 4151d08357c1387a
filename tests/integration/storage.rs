//! Migrations (up, down, up again) on both backends, and the diesel schema matching them.

use diesel::prelude::*;
use e2e_tests::{Backend, PgTestDb, backends};
use platform::storage::schema::*;
use platform::storage::{AnyConnection, Db};

fn connect(backend: Backend, dir: &std::path::Path, pg: Option<&PgTestDb>) -> Db {
    let url = match backend {
        Backend::Sqlite => dir.join("m.db").to_string_lossy().into_owned(),
        Backend::Postgres => pg.unwrap().url.clone(),
    };
    Db::connect(&url, 2, std::time::Duration::from_secs(5)).unwrap()
}

fn user_tables(conn: &mut AnyConnection) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let sql = match conn {
        AnyConnection::Sqlite(_) => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> '__diesel_schema_migrations' ORDER BY name"
        }
        AnyConnection::Postgresql(_) => {
            "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations' ORDER BY table_name"
        }
    };
    diesel::sql_query(sql)
        .load::<Name>(conn)
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect()
}

/// Selecting every column of every table proves `schema.rs` and the migrations agree.
fn select_all_columns(conn: &mut AnyConnection) -> QueryResult<()> {
    macro_rules! probe {
        ($($t:ident),*) => {$(
            $t::table.select($t::all_columns).limit(1).execute(conn)?;
        )*};
    }
    probe!(
        customers,
        accounts,
        merchants,
        transactions,
        staff,
        developers,
        kyc_submissions,
        kyc_reviews,
        clients,
        grant_rows,
        refresh_tokens,
        issued_tokens,
        authorization_requests,
        authorization_codes,
        revocations,
        revocation_feed_head,
        signing_keys,
        audit_events,
        audit_links,
        audit_chain_head,
        audit_chain_legacy,
        approval_requests,
        webhook_outbox,
        sessions,
        ssf_streams,
        ssf_excluded_subjects,
        ssf_events,
        client_access_tokens,
        second_factors,
        recovery_codes,
        enrolment_codes,
        data_keys,
        staff_credentials,
        staff_broadcast,
        customer_identities
    );
    Ok(())
}

#[test]
fn migrations_apply_revert_and_reapply() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let pg = (backend == Backend::Postgres).then(PgTestDb::create);
        let db = connect(backend, dir.path(), pg.as_ref());
        assert!(db.has_pending_migrations().unwrap());
        let applied = db.migrate().unwrap();
        assert!(!applied.is_empty(), "{backend:?}");
        assert!(!db.has_pending_migrations().unwrap());
        assert!(db.migrate().unwrap().is_empty(), "idempotent");
        db.run_blocking(|c| {
            assert_eq!(
                user_tables(c).len(),
                36,
                "{backend:?}: {:?}",
                user_tables(c)
            );
            select_all_columns(c).unwrap_or_else(|e| panic!("{backend:?}: schema.rs drifted: {e}"));
            Ok(())
        })
        .unwrap();

        let reverted = db.revert_all().unwrap();
        assert_eq!(reverted.len(), applied.len());
        db.run_blocking(|c| {
            assert!(
                user_tables(c).is_empty(),
                "{backend:?}: down left {:?}",
                user_tables(c)
            );
            Ok(())
        })
        .unwrap();
        assert!(db.has_pending_migrations().unwrap());
        assert_eq!(
            db.migrate().unwrap(),
            applied,
            "{backend:?}: re-apply after down"
        );
        db.run_blocking(|c| {
            select_all_columns(c).unwrap();
            Ok(())
        })
        .unwrap();
    }
}

#[tokio::test]
async fn a_failed_write_transaction_leaves_nothing_behind() {
    for backend in backends() {
        let app = e2e_tests::spawn_app(backend).await;
        let p = app.platform.clone();
        let result: Result<(), _> =
            p.db.write(|c| {
                diesel::insert_into(merchants::table)
                    .values((
                        merchants::id.eq("m_tx"),
                        merchants::name.eq("T"),
                        merchants::category.eq("x"),
                    ))
                    .execute(c)?;
                // Duplicate primary key: the whole transaction must roll back.
                diesel::insert_into(merchants::table)
                    .values((
                        merchants::id.eq("m_tx"),
                        merchants::name.eq("T"),
                        merchants::category.eq("x"),
                    ))
                    .execute(c)?;
                Ok(())
            })
            .await;
        assert!(
            matches!(result, Err(platform::storage::StorageError::Conflict(_))),
            "{backend:?}: {result:?}"
        );
        let n: i64 =
            p.db.run(|c| Ok(merchants::table.count().get_result(c)?))
                .await
                .unwrap();
        assert_eq!(n, 0, "{backend:?}: partial write survived");
        app.stop().await;
    }
}

#[tokio::test]
async fn postgres_server_refuses_to_start_with_pending_migrations() {
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pg = PgTestDb::create();
    let settings = e2e_tests::test_settings(Backend::Postgres, dir.path(), Some(&pg));
    let err = consent::Application::build(settings, Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("consent migrate"), "{err}");
}

/// A write transaction inside another (a service composed into its caller's) is a savepoint on
/// both backends: its failure rolls back only its own writes, and the outer one commits or rolls
/// back as a whole (a nested BEGIN IMMEDIATE once failed on SQLite).
#[tokio::test]
async fn a_nested_write_transaction_is_a_savepoint() {
    use platform::storage::write_tx;
    let merchant = |id: &'static str| {
        (
            merchants::id.eq(id),
            merchants::name.eq("T"),
            merchants::category.eq("x"),
        )
    };
    for backend in backends() {
        let app = e2e_tests::spawn_app(backend).await;
        let p = app.platform.clone();
        p.db.write(move |c| {
            diesel::insert_into(merchants::table)
                .values(merchant("m_outer"))
                .execute(c)?;
            let inner: Result<(), _> = write_tx(c, |c| {
                diesel::insert_into(merchants::table)
                    .values(merchant("m_inner"))
                    .execute(c)?;
                diesel::insert_into(merchants::table)
                    .values(merchant("m_inner"))
                    .execute(c)?;
                Ok(())
            });
            assert!(inner.is_err(), "the duplicate fails the inner transaction");
            write_tx(c, |c| {
                diesel::insert_into(merchants::table)
                    .values(merchant("m_kept"))
                    .execute(c)?;
                Ok(())
            })
        })
        .await
        .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        let ids: Vec<String> =
            p.db.run(|c| {
                Ok(merchants::table
                    .filter(merchants::id.eq_any(["m_outer", "m_inner", "m_kept"]))
                    .order(merchants::id.asc())
                    .select(merchants::id)
                    .load(c)?)
            })
            .await
            .unwrap();
        assert_eq!(ids, ["m_kept", "m_outer"], "{backend:?}");
        app.stop().await;
    }
}

/// The plan the database chose for `sql` (literal values, no parameters), as text; on
/// PostgreSQL with sequential scans disabled, so that an index it can prove applies is used
/// (on a small table it would read the table either way) and one it cannot is visibly not.
fn plan_of(db: &Db, sql: &str) -> String {
    use diesel::sql_types::Text;
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text)]
        detail: String,
    }
    let sql = sql.to_string();
    db.write_blocking(move |c| {
        let lines = match c {
            AnyConnection::Sqlite(_) => {
                diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}")).load::<Line>(c)?
            }
            AnyConnection::Postgresql(_) => {
                diesel::sql_query("SET LOCAL enable_seqscan = off").execute(c)?;
                // EXPLAIN's column is named "QUERY PLAN"; a function gives it a usable name.
                diesel::sql_query(
                    "CREATE OR REPLACE FUNCTION pg_temp.plan_of(q text) RETURNS SETOF text \
                     LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY EXECUTE 'EXPLAIN ' || q; END $$",
                )
                .execute(c)?;
                diesel::sql_query("SELECT pg_temp.plan_of($1) AS detail")
                    .bind::<Text, _>(sql)
                    .load::<Line>(c)?
            }
        };
        Ok(lines
            .into_iter()
            .map(|l| l.detail)
            .collect::<Vec<_>>()
            .join("\n"))
    })
    .unwrap()
}

/// The selections that run often or against large tables read the indexes made for them, on
/// both backends: the sweep's expiry selections the index of live grants' expiries (a partial
/// index, usable only by a query whose status condition matches its predicate), its purge of
/// undecided requests and the dashboard's latest read their partial indexes (the conditions
/// written out, not bound), and introspection's revocation checks the index of token
/// revocation ids (without it, every answer not cached read the whole revocation feed), and the
/// sweep's purges of webhook and Shared Signals events by age their indexes on creation time.
#[test]
fn the_hot_selections_read_their_indexes() {
    let at = "'2026-12-06 12:00:00'";
    let until = "'2026-12-13 12:00:00'";
    let month = "'2026-11-06 12:00:00'";
    let quarter = "'2026-09-07 12:00:00'";
    // One statement, one partial index per arm of its condition.
    let outbox_purge = consent::lifecycle::OUTBOX_PURGE_SQL
        .replacen('?', month, 1)
        .replacen('?', quarter, 1);
    let selections = [
        (
            "expired grants",
            consent::lifecycle::EXPIRED_SQL
                .replacen('?', at, 1)
                .replacen('?', "1000", 1),
            "grants_live_expiry_idx",
        ),
        (
            "expiring grants",
            consent::lifecycle::EXPIRING_SQL
                .replacen('?', at, 1)
                .replacen('?', until, 1)
                .replacen('?', "1000", 1),
            "grants_live_expiry_idx",
        ),
        (
            "undecided authorization requests (the sweep's purge)",
            consent::lifecycle::STALE_REQUESTS_SQL.replacen('?', at, 1),
            "authorization_requests_pending_idx",
        ),
        (
            "a grant's latest read (the dashboard)",
            consent::dashboard::LAST_READ_SQL.replacen('?', "'g_x'", 1),
            "audit_events_grant_reads_idx",
        ),
        (
            "revoked token ids (introspection of a verified token)",
            "SELECT COUNT(*) FROM revocations WHERE revocation_id IN ('rid_a', 'rid_b')".into(),
            "revocations_revocation_id_idx",
        ),
        (
            "minted tokens with their revocation (introspection)",
            "SELECT t.token_hash, r.seq FROM issued_tokens t \
             LEFT JOIN revocations r ON r.revocation_id = t.revocation_id \
             WHERE t.token_hash IN ('h_a', 'h_b')"
                .into(),
            "revocations_revocation_id_idx",
        ),
        (
            "delivered webhook events (the sweep's purge)",
            outbox_purge.clone(),
            "webhook_outbox_delivered_idx",
        ),
        (
            "failed webhook events (the sweep's purge)",
            outbox_purge,
            "webhook_outbox_failed_idx",
        ),
        (
            "Shared Signals events (the sweep's purge)",
            consent::lifecycle::SSF_PURGE_SQL
                .replacen('?', quarter, 1)
                .replacen('?', month, 1),
            "ssf_events_created_idx",
        ),
    ];
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let pg = (backend == Backend::Postgres).then(PgTestDb::create);
        let db = connect(backend, dir.path(), pg.as_ref());
        db.migrate().unwrap();
        for (name, sql, index) in &selections {
            assert!(!sql.contains('?'), "{name}: every parameter replaced");
            let plan = plan_of(&db, sql);
            assert!(
                plan.contains(index),
                "{backend:?}, {name}: {index}?\n{plan}"
            );
            assert!(!plan.contains("Seq Scan"), "{backend:?}, {name}:\n{plan}");
        }
    }
}

/// Every refresh writes a row to each of these tables (the rotation: a new refresh token, the
/// access token's issued-token row and its audit event), so each index on them is an entry (and
/// a WAL record) per refresh and per code exchange, and no index is here that no query reads:
/// adding one should be a measured decision, not a default. The dropped family index of refresh
/// tokens was such an entry (no query reads refresh tokens by family).
#[test]
fn the_token_tables_carry_only_the_indexes_their_queries_read() {
    use diesel::sql_types::Text;
    #[derive(QueryableByName)]
    struct Index {
        #[diesel(sql_type = Text)]
        tbl: String,
        #[diesel(sql_type = Text)]
        name: String,
    }
    // PostgreSQL. Recorded events: by sequence (the chain, primary key) and by commit order (the
    // linker), a target's history, a grant's reads (the dashboard; partial, reads only), event
    // ids unique. Issued tokens: by revocation id (primary key: the feed), by hash
    // (introspection), by grant (revoking it), by expiry (the spent-token purge, BRIN). Refresh
    // tokens: by id (primary key: the batch statements), by hash (the refresh grant), by grant
    // (revoking or extending it), by creation (the purge, BRIN).
    let postgres = [
        ("audit_events", "audit_events_commit_order_idx"),
        ("audit_events", "audit_events_event_id_key"),
        ("audit_events", "audit_events_grant_reads_idx"),
        ("audit_events", "audit_events_target_seq_idx"),
        ("issued_tokens", "issued_tokens_expiry_brin"),
        ("issued_tokens", "issued_tokens_grant_idx"),
        ("issued_tokens", "issued_tokens_token_hash_key"),
        ("refresh_tokens", "refresh_tokens_created_brin"),
        ("refresh_tokens", "refresh_tokens_grant_idx"),
        ("refresh_tokens", "refresh_tokens_token_hash_key"),
    ];
    // SQLite: the same, less what only PostgreSQL has (commit order, BRIN, which are B-trees
    // here), and UNIQUE constraints are its own `sqlite_autoindex_*`.
    let sqlite = [
        ("audit_events", "audit_events_grant_reads_idx"),
        ("audit_events", "audit_events_target_seq_idx"),
        ("issued_tokens", "issued_tokens_expiry_idx"),
        ("issued_tokens", "issued_tokens_grant_idx"),
        ("refresh_tokens", "refresh_tokens_created_idx"),
        ("refresh_tokens", "refresh_tokens_grant_idx"),
    ];
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let pg = (backend == Backend::Postgres).then(PgTestDb::create);
        let db = connect(backend, dir.path(), pg.as_ref());
        db.migrate().unwrap();
        let sql = match backend {
            // Created indexes only: primary keys and UNIQUE constraints are SQLite's
            // `sqlite_autoindex_*` (or the rowid) there, and in the list on PostgreSQL.
            Backend::Sqlite => {
                "SELECT tbl_name AS tbl, name FROM sqlite_master WHERE type = 'index' \
                 AND tbl_name IN ('audit_events', 'issued_tokens', 'refresh_tokens') \
                 AND name NOT LIKE 'sqlite_autoindex_%' ORDER BY tbl_name, name"
            }
            Backend::Postgres => {
                "SELECT tablename AS tbl, indexname AS name FROM pg_indexes \
                 WHERE schemaname = 'public' \
                 AND tablename IN ('audit_events', 'issued_tokens', 'refresh_tokens') \
                 AND indexname NOT LIKE '%_pkey' ORDER BY tablename, indexname"
            }
        };
        let found: Vec<(String, String)> = db
            .run_blocking(move |c| Ok(diesel::sql_query(sql).load::<Index>(c)?))
            .unwrap()
            .into_iter()
            .map(|i| (i.tbl, i.name))
            .collect();
        let want: Vec<(String, String)> = match backend {
            Backend::Sqlite => &sqlite[..],
            Backend::Postgres => &postgres[..],
        }
        .iter()
        .map(|(t, n)| (t.to_string(), n.to_string()))
        .collect();
        assert_eq!(found, want, "{backend:?}");
    }
}
