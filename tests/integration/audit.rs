//! The audit chain: concurrent writers, batched linking, verification, tamper detection.

use diesel::prelude::*;
use e2e_tests::{Backend, backends, spawn_app_with};
use platform::audit::{self, Actor, NewEvent, Target};
use platform::storage::AnyConnection;

fn event(i: usize) -> NewEvent {
    NewEvent::new(
        Actor::client(format!("c_{}", i % 7)),
        "token.issued",
        Target::new("grant", format!("g_{i}")),
    )
    .details(serde_json::json!({ "n": i }))
}

async fn quiet_app(backend: Backend) -> e2e_tests::TestApp {
    // The background linker is slowed down so the tests control when linking happens.
    spawn_app_with(backend, Default::default(), |s| {
        s.lifecycle.audit_chain_interval = "1h".parse().unwrap();
    })
    .await
}

/// Concurrent writers on separate connections, then concurrent linkers: every event is linked
/// exactly once, in one unbroken chain.
#[tokio::test]
async fn concurrent_writers_and_linkers_build_one_valid_chain() {
    for backend in backends() {
        let app = quiet_app(backend).await;
        let p = app.platform.clone();
        // Start-up writes its own events (signing key creation): count from there.
        p.audit.link_now().await.unwrap();
        let baseline = p.audit.verify().await.unwrap().events_checked;
        let mut writers = Vec::new();
        for w in 0..8 {
            let p = p.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..25 {
                    let e = event(w * 100 + i);
                    let now = p.now();
                    p.db.write(move |c| audit::record(c, &e, now))
                        .await
                        .unwrap();
                }
            }));
        }
        let mut linkers = Vec::new();
        for _ in 0..3 {
            let p = p.clone();
            linkers.push(tokio::spawn(async move {
                for _ in 0..5 {
                    p.audit.link_now().await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }));
        }
        for h in writers.into_iter().chain(linkers) {
            h.await.unwrap();
        }
        p.audit.link_now().await.unwrap();
        let report = p.audit.verify().await.unwrap();
        assert!(report.valid, "{backend:?}: {report:?}");
        assert_eq!(report.unlinked_events, 0);
        assert_eq!(report.events_checked, baseline + 200, "{backend:?}");
        assert_eq!(report.head_index, baseline + 200);
        app.stop().await;
    }
}

/// PostgreSQL, where a transaction that wrote first can commit last: each event is linked once
/// its transaction has committed, in commit order, and the one that commits late is linked after
/// it commits, never skipped; an aborted writer holds nothing up. (SQLite has one writer at a
/// time, so there commit order is insert order.)
#[tokio::test]
async fn an_event_committed_late_is_linked_not_skipped() {
    use diesel::connection::SimpleConnection;
    use platform::storage::schema::{audit_events, audit_links};
    let Some(backend) = backends().into_iter().find(|b| *b == Backend::Postgres) else {
        return;
    };
    let app = quiet_app(backend).await;
    app.platform.audit.link_now().await.unwrap();
    let base = app.platform.audit.verify().await.unwrap();
    let url = platform::database_url(&app.platform.settings);
    let own = || AnyConnection::Postgresql(diesel::PgConnection::establish(&url).unwrap());
    let (mut a, mut b, mut aborted) = (own(), own(), own());
    let now = app.platform.now();
    let write = |c: &mut AnyConnection, i: usize| audit::record(c, &event(i), now).unwrap();

    a.batch_execute("BEGIN").unwrap();
    write(&mut a, 1); // the lower seq, committed last
    // B writes more events than a linking pass takes (1,000), in one transaction.
    b.batch_execute("BEGIN").unwrap();
    for i in 1000..3500 {
        write(&mut b, i);
    }
    b.batch_execute("COMMIT").unwrap();
    aborted.batch_execute("BEGIN").unwrap();
    write(&mut aborted, 3);
    aborted.batch_execute("ROLLBACK").unwrap();

    app.platform.audit.link_now().await.unwrap();
    let report = app.platform.audit.verify().await.unwrap();
    assert!(report.valid, "{report:?}");
    assert_eq!(
        report.head_index,
        base.head_index + 2500,
        "the committed events are linked while the earlier writer is still open"
    );
    assert_eq!(report.unlinked_events, 0);
    // More passes while the early writer is open: its event stays out of the chain.
    for i in 4..6 {
        app.platform
            .audit
            .record_one(event(i), app.platform.now())
            .await
            .unwrap();
        app.platform.audit.link_now().await.unwrap();
    }

    a.batch_execute("COMMIT").unwrap();
    app.platform.audit.link_now().await.unwrap();
    let report = app.platform.audit.verify().await.unwrap();
    assert!(report.valid, "{report:?}");
    assert_eq!(report.unlinked_events, 0);
    assert_eq!(report.head_index, base.head_index + 2503);
    let linked: Vec<String> = app
        .platform
        .db
        .run(move |c| {
            Ok(audit_links::table
                .inner_join(audit_events::table)
                .filter(audit_links::chain_index.gt(base.head_index))
                .filter(audit_events::action.eq("token.issued"))
                .order(audit_links::chain_index.asc())
                .select(audit_events::details)
                .load(c)?)
        })
        .await
        .unwrap();
    let expected: Vec<String> = (1000..3500)
        .chain([4, 5, 1])
        .map(|n| format!(r#"{{"n":{n}}}"#))
        .collect();
    assert_eq!(linked, expected, "in commit order");
    app.stop().await;
}

async fn seeded_chain(app: &e2e_tests::TestApp, n: usize) {
    for i in 0..n {
        app.platform
            .audit
            .record_one(event(i), app.platform.now())
            .await
            .unwrap();
    }
    app.platform.audit.link_now().await.unwrap();
    assert!(app.platform.audit.verify().await.unwrap().valid);
}

fn drop_guards(conn: &mut AnyConnection) {
    let sql = match conn {
        AnyConnection::Sqlite(_) => {
            "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete; \
             DROP TRIGGER audit_links_no_update; DROP TRIGGER audit_links_no_delete;"
        }
        // One implicit transaction: the links first, as every reader and the linker lock them
        // (the other order can deadlock with one of them).
        AnyConnection::Postgresql(_) => {
            "DROP TRIGGER audit_links_append_only ON audit_links; \
             DROP TRIGGER audit_events_append_only ON audit_events;"
        }
    };
    diesel::connection::SimpleConnection::batch_execute(conn, sql).unwrap();
}

/// Neither an event nor a link can be changed or deleted through SQL (and on PostgreSQL neither
/// table can be truncated): each statement is refused by the guard itself (its message), not by
/// a mistake in the statement, and the chain is as it was.
#[tokio::test]
async fn linked_events_cannot_be_changed_through_sql() {
    for backend in backends() {
        let app = quiet_app(backend).await;
        seeded_chain(&app, 3).await;
        let run = |sql: String| {
            let db = app.platform.db.clone();
            async move {
                db.run(move |c| Ok(diesel::sql_query(sql).execute(c)))
                    .await
                    .unwrap()
            }
        };
        let second = "(SELECT seq FROM audit_links WHERE chain_index = 2)";
        let mut refused = vec![
            format!("UPDATE audit_events SET details = '{{}}' WHERE seq = {second}"),
            format!("DELETE FROM audit_events WHERE seq = {second}"),
            "UPDATE audit_links SET hash = 'x' WHERE chain_index = 2".to_string(),
            "DELETE FROM audit_links WHERE chain_index = 2".to_string(),
            // Not yet linked events are not open to change either (event 50, recorded below;
            // named by content, not by its missing link, as a linker pass may run meanwhile).
            "UPDATE audit_events SET details = '{}' WHERE details = '{\"n\":50}'".to_string(),
        ];
        if backend == Backend::Postgres {
            refused.push("TRUNCATE audit_events".into());
            refused.push("TRUNCATE audit_links".into());
        }
        app.platform
            .audit
            .record_one(event(50), app.platform.now())
            .await
            .unwrap();
        let before = app.platform.audit.verify().await.unwrap();
        assert_eq!(before.unlinked_events, 1, "{backend:?}");
        for sql in refused {
            let affected = run(sql.clone()).await;
            assert!(
                matches!(&affected, Err(e) if e.to_string().contains("is append-only")),
                "{backend:?}: {sql} must be refused by the guard: {affected:?}"
            );
        }
        // The same kind of statement on an unguarded table does run.
        assert_eq!(
            run("UPDATE audit_chain_head SET updated_at = updated_at".into())
                .await
                .unwrap(),
            1
        );
        // Nothing changed: the same events link into a valid chain (linked now, as the
        // background linker's first pass may have linked event 50 meanwhile).
        app.platform.audit.link_now().await.unwrap();
        let after = app.platform.audit.verify().await.unwrap();
        assert!(after.valid, "{backend:?}: {after:?}");
        assert_eq!(
            (after.events_checked, after.unlinked_events),
            (before.events_checked + before.unlinked_events, 0),
            "{backend:?}"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn tampering_is_detected_at_the_altered_event() {
    // Each case: an attacker with owner rights drops the guards and edits history.
    let at = |i: i64| format!("seq = (SELECT seq FROM audit_links WHERE chain_index = {i})");
    let cases: [(&str, String, i64); 7] = [
        (
            "altered details",
            format!(
                "UPDATE audit_events SET details = '{{\"n\":999}}' WHERE {}",
                at(3)
            ),
            3,
        ),
        (
            "altered actor",
            format!(
                "UPDATE audit_events SET actor_id = 'c_evil' WHERE {}",
                at(2)
            ),
            2,
        ),
        (
            "deleted event",
            format!("DELETE FROM audit_events WHERE {}", at(4)),
            4,
        ),
        (
            "deleted last event",
            format!("DELETE FROM audit_events WHERE {}", at(5)),
            5,
        ),
        (
            "deleted link",
            "DELETE FROM audit_links WHERE chain_index = 3".into(),
            3,
        ),
        (
            "altered link",
            "UPDATE audit_links SET hash = (SELECT hash FROM audit_links WHERE chain_index = 1) \
             WHERE chain_index = 4"
                .into(),
            4,
        ),
        ("swapped order", String::new(), 2),
    ];
    for backend in backends() {
        for (name, sql, at) in cases.clone() {
            let app = quiet_app(backend).await;
            seeded_chain(&app, 5).await;
            app.platform
                .db
                .run(move |c| {
                    use platform::storage::schema::audit_links;
                    drop_guards(c);
                    if sql.is_empty() {
                        // The events at 2 and 3 trade places (through a free seq: it is UNIQUE).
                        let seq = |c: &mut AnyConnection, i: i64| {
                            audit_links::table
                                .filter(audit_links::chain_index.eq(i))
                                .select(audit_links::seq)
                                .first::<i64>(c)
                        };
                        let (two, three) = (seq(c, 2)?, seq(c, 3)?);
                        for (i, to) in [(2, -1), (3, two), (2, three)] {
                            diesel::update(
                                audit_links::table.filter(audit_links::chain_index.eq(i)),
                            )
                            .set(audit_links::seq.eq(to))
                            .execute(c)?;
                        }
                    } else {
                        assert_eq!(diesel::sql_query(sql).execute(c)?, 1);
                    }
                    Ok(())
                })
                .await
                .unwrap();
            let report = app.platform.audit.verify().await.unwrap();
            assert!(!report.valid, "{backend:?} {name}: tampering not detected");
            assert_eq!(
                report.first_error.as_ref().unwrap().chain_index,
                at,
                "{backend:?} {name}: {report:?}"
            );
            app.stop().await;
        }
    }
}

/// Rewrites the whole chain and its head consistently, as an attacker with database write
/// access would, computing each hash under `key` (which is not the deployment's).
fn rewrite_chain(
    c: &mut AnyConnection,
    key: &audit::ChainKey,
) -> platform::storage::StorageResult<()> {
    use platform::storage::schema::{audit_chain_head, audit_events, audit_links};
    drop_guards(c);
    let links: Vec<(i64, audit::StoredEvent)> = audit_links::table
        .inner_join(audit_events::table)
        .order(audit_links::chain_index.asc())
        .select((audit_links::chain_index, audit::StoredEvent::as_select()))
        .load(c)?;
    let mut prev = audit::GENESIS_HASH.to_string();
    let mut last = 0;
    for (index, e) in &links {
        let hash = audit::event_hash(key, e, *index, &prev);
        diesel::update(audit_links::table.filter(audit_links::chain_index.eq(index)))
            .set(audit_links::hash.eq(&hash))
            .execute(c)?;
        prev = hash;
        last = *index;
    }
    diesel::update(audit_chain_head::table)
        .set((
            audit_chain_head::last_index.eq(last),
            audit_chain_head::last_hash.eq(&prev),
        ))
        .execute(c)?;
    Ok(())
}

/// The chain is keyed: someone who can write the database but does not hold the master key
/// cannot recompute a consistent history, even rewriting every row and the head. The one thing
/// left to them, cutting the end off, is caught by a signed checkpoint taken earlier; a
/// checkpoint that was altered or signed by another key is refused.
#[tokio::test]
async fn keyed_chain_and_checkpoints_defeat_a_database_writer() {
    for backend in backends() {
        // A consistent rewrite under another key is detected at the first event.
        let app = quiet_app(backend).await;
        seeded_chain(&app, 5).await;
        let attacker_key =
            audit::ChainKey::try_derive(&platform::crypto::MasterKey::generate()).unwrap();
        app.platform
            .db
            .run(move |c| {
                rewrite_chain(c, &attacker_key)?;
                diesel::sql_query(
                    "UPDATE audit_events SET details = '{\"n\":999}' \
                     WHERE seq = (SELECT seq FROM audit_links WHERE chain_index = 3)",
                )
                .execute(c)?;
                Ok(())
            })
            .await
            .unwrap();
        let report = app.platform.audit.verify().await.unwrap();
        assert!(
            !report.valid,
            "{backend:?}: rewrite under another key passed"
        );
        assert_eq!(report.first_error.unwrap().chain_index, 1, "{backend:?}");
        app.stop().await;

        // Truncation: invisible to the chain alone, caught by the checkpoint.
        let app = quiet_app(backend).await;
        seeded_chain(&app, 5).await;
        let cp = app.platform.audit.checkpoint().await.unwrap().unwrap();
        assert!(cp.chain_index >= 5);
        assert!(
            app.platform
                .audit
                .verify_against(cp.clone())
                .await
                .unwrap()
                .valid,
            "{backend:?}: an intact chain verifies against its checkpoint"
        );
        for i in 5..8 {
            app.platform
                .audit
                .record_one(event(i), app.platform.now())
                .await
                .unwrap();
        }
        app.platform.audit.link_now().await.unwrap();
        assert!(
            app.platform
                .audit
                .verify_against(cp.clone())
                .await
                .unwrap()
                .valid,
            "{backend:?}: events after the checkpoint are fine"
        );
        let cut_from = cp.chain_index - 1;
        app.platform
            .db
            .run(move |c| {
                use platform::storage::schema::{audit_chain_head, audit_events, audit_links};
                drop_guards(c);
                let cut = audit_links::table
                    .filter(audit_links::chain_index.ge(cut_from))
                    .select(audit_links::seq);
                diesel::delete(audit_events::table.filter(audit_events::seq.eq_any(cut)))
                    .execute(c)?;
                diesel::delete(audit_links::table.filter(audit_links::chain_index.ge(cut_from)))
                    .execute(c)?;
                let (index, hash): (i64, String) = audit_links::table
                    .order(audit_links::chain_index.desc())
                    .select((audit_links::chain_index, audit_links::hash))
                    .first(c)?;
                diesel::update(audit_chain_head::table)
                    .set((
                        audit_chain_head::last_index.eq(index),
                        audit_chain_head::last_hash.eq(hash),
                    ))
                    .execute(c)?;
                Ok(())
            })
            .await
            .unwrap();
        assert!(
            app.platform.audit.verify().await.unwrap().valid,
            "the cut chain is consistent on its own (which is why checkpoints exist)"
        );
        let report = app.platform.audit.verify_against(cp.clone()).await.unwrap();
        assert!(
            !report.valid,
            "{backend:?}: truncation not caught by the checkpoint"
        );
        assert_eq!(
            report.first_error.unwrap().chain_index,
            cut_from,
            "{backend:?}"
        );

        // Forged checkpoints are refused before anything is compared.
        let mut moved = cp.clone();
        moved.chain_index -= 2;
        let report = app.platform.audit.verify_against(moved).await.unwrap();
        assert!(!report.valid);
        assert!(
            report
                .first_error
                .unwrap()
                .reason
                .contains("does not verify")
        );
        let other = platform::audit::ChainKey::try_derive(&platform::crypto::MasterKey::generate())
            .unwrap();
        let mut foreign = cp.clone();
        foreign.public_key = other.public_key_hex();
        let report = app.platform.audit.verify_against(foreign).await.unwrap();
        assert!(!report.valid);
        assert!(report.first_error.unwrap().reason.contains("another key"));
        app.stop().await;
    }
}

/// `consent audit checkpoint` prints a signed head that `consent audit verify --checkpoint`
/// accepts, and an altered checkpoint makes verification fail with exit status 1.
#[test]
fn the_audit_commands_sign_and_check_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run =
        |args: &[&str]| e2e_tests::run_consent(env!("CARGO_BIN_EXE_consent-e2e"), &data, &[], args);
    // The audit commands never migrate (a migration could change what they check).
    assert!(!run(&["audit", "verify"]).status.success());
    // Something to chain: a key rotation is audited (and migrates the embedded database).
    assert!(run(&["keys", "rotate"]).status.success());
    let out = run(&["audit", "checkpoint"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(cp["chain_index"].as_i64().unwrap() >= 1, "{cp}");
    assert_eq!(cp["format"], "consent-audit-checkpoint/1");
    let file = dir.path().join("checkpoint.json");
    std::fs::write(&file, cp.to_string()).unwrap();
    let out = run(&["audit", "verify", "--checkpoint", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut forged = cp.clone();
    forged["hash"] = serde_json::json!("00".repeat(32));
    std::fs::write(&file, forged.to_string()).unwrap();
    let out = run(&["audit", "verify", "--checkpoint", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false, "{report}");
}

/// The linker never extends a chain whose head disagrees with its events (moved back while
/// later events are still linked): it would re-sign a tampered history.
#[tokio::test]
async fn the_linker_refuses_a_head_moved_back() {
    for backend in backends() {
        let app = quiet_app(backend).await;
        seeded_chain(&app, 5).await;
        app.platform
            .db
            .write(|c| {
                use platform::storage::schema::{audit_chain_head, audit_links};
                // Between linking passes (a pass that had read the head before this moves it
                // back would write its own head over it when it commits).
                if let AnyConnection::Postgresql(_) = c {
                    let key = platform::audit::CHAIN_LOCK_KEY;
                    diesel::sql_query(format!("SELECT pg_advisory_xact_lock({key})")).execute(c)?;
                }
                let head: i64 = audit_chain_head::table
                    .select(audit_chain_head::last_index)
                    .first(c)?;
                let hash: String = audit_links::table
                    .filter(audit_links::chain_index.eq(head - 2))
                    .select(audit_links::hash)
                    .first(c)?;
                diesel::update(audit_chain_head::table)
                    .set((
                        audit_chain_head::last_index.eq(head - 2),
                        audit_chain_head::last_hash.eq(hash),
                    ))
                    .execute(c)?;
                Ok(())
            })
            .await
            .unwrap();
        app.platform
            .audit
            .record_one(event(99), app.platform.now())
            .await
            .unwrap();
        assert!(
            app.platform.audit.link_now().await.is_err(),
            "{backend:?}: linked onto a head that was moved back"
        );
        let report = app.platform.audit.verify().await.unwrap();
        assert!(!report.valid, "{backend:?}");
        assert_eq!(
            report.unlinked_events, 1,
            "{backend:?}: the new event stays unlinked"
        );
        app.stop().await;
    }
}
