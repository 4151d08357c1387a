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
            "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;"
        }
        AnyConnection::Postgresql(_) => "DROP TRIGGER audit_events_append_only ON audit_events;",
    };
    diesel::connection::SimpleConnection::batch_execute(conn, sql).unwrap();
}

#[tokio::test]
async fn linked_events_cannot_be_changed_through_sql() {
    for backend in backends() {
        let app = quiet_app(backend).await;
        seeded_chain(&app, 3).await;
        let err = app
            .platform
            .db
            .run(|c| {
                Ok(diesel::sql_query(
                    "UPDATE audit_events SET details = '{}' WHERE chain_index = 2",
                )
                .execute(c))
            })
            .await
            .unwrap();
        assert!(
            err.is_err(),
            "{backend:?}: update of a linked event must be refused"
        );
        let err = app
            .platform
            .db
            .run(|c| {
                Ok(diesel::sql_query("DELETE FROM audit_events WHERE chain_index = 2").execute(c))
            })
            .await
            .unwrap();
        assert!(
            err.is_err(),
            "{backend:?}: delete of a linked event must be refused"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn tampering_is_detected_at_the_altered_event() {
    // Each case: an attacker with owner rights drops the guards and edits history.
    let cases: [(&str, &str, i64); 5] = [
        (
            "altered details",
            "UPDATE audit_events SET details = '{\"n\":999}' WHERE chain_index = 3",
            3,
        ),
        (
            "altered actor",
            "UPDATE audit_events SET actor_id = 'c_evil' WHERE chain_index = 2",
            2,
        ),
        (
            "deleted event",
            "DELETE FROM audit_events WHERE chain_index = 4",
            4,
        ),
        (
            "deleted last event",
            "DELETE FROM audit_events WHERE chain_index = 5",
            5,
        ),
        (
            "swapped order",
            "UPDATE audit_events SET chain_index = CASE chain_index WHEN 2 THEN 3 ELSE 2 END WHERE chain_index IN (2, 3)",
            2,
        ),
    ];
    for backend in backends() {
        for (name, sql, at) in cases {
            let app = quiet_app(backend).await;
            seeded_chain(&app, 5).await;
            let sql = sql.to_string();
            app.platform
                .db
                .run(move |c| {
                    drop_guards(c);
                    if sql.contains("CASE") {
                        // Swap through a temporary index to dodge the UNIQUE constraint.
                        diesel::sql_query(
                            "UPDATE audit_events SET chain_index = -1 WHERE chain_index = 2",
                        )
                        .execute(c)?;
                        diesel::sql_query(
                            "UPDATE audit_events SET chain_index = 2 WHERE chain_index = 3",
                        )
                        .execute(c)?;
                        diesel::sql_query(
                            "UPDATE audit_events SET chain_index = 3 WHERE chain_index = -1",
                        )
                        .execute(c)?;
                    } else {
                        diesel::sql_query(sql).execute(c)?;
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
    use platform::storage::schema::{audit_chain_head, audit_events};
    drop_guards(c);
    let events: Vec<audit::StoredEvent> = audit_events::table
        .filter(audit_events::chain_index.is_not_null())
        .order(audit_events::chain_index.asc())
        .select(audit::StoredEvent::as_select())
        .load(c)?;
    let mut prev = audit::GENESIS_HASH.to_string();
    let mut last = 0;
    for e in &events {
        let index = e.chain_index.unwrap();
        let hash = audit::event_hash(key, e, index, &prev);
        diesel::update(audit_events::table.filter(audit_events::seq.eq(e.seq)))
            .set((
                audit_events::prev_hash.eq(&prev),
                audit_events::hash.eq(&hash),
            ))
            .execute(c)?;
        prev = hash;
        last = index;
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
                diesel::sql_query(
                    "UPDATE audit_events SET details = '{\"n\":999}' WHERE chain_index = 3",
                )
                .execute(c)
                .ok();
                rewrite_chain(c, &attacker_key)
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
                use platform::storage::schema::{audit_chain_head, audit_events};
                drop_guards(c);
                diesel::delete(audit_events::table.filter(audit_events::chain_index.ge(cut_from)))
                    .execute(c)?;
                let (index, hash): (i64, Option<String>) = audit_events::table
                    .filter(audit_events::chain_index.is_not_null())
                    .order(audit_events::chain_index.desc())
                    .select((
                        audit_events::chain_index.assume_not_null(),
                        audit_events::hash,
                    ))
                    .first(c)?;
                diesel::update(audit_chain_head::table)
                    .set((
                        audit_chain_head::last_index.eq(index),
                        audit_chain_head::last_hash.eq(hash.unwrap()),
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
                use platform::storage::schema::{audit_chain_head, audit_events};
                // Between linking passes (a pass that had read the head before this moves it
                // back would write its own head over it when it commits).
                if let AnyConnection::Postgresql(_) = c {
                    let key = platform::audit::CHAIN_LOCK_KEY;
                    diesel::sql_query(format!("SELECT pg_advisory_xact_lock({key})")).execute(c)?;
                }
                let head: i64 = audit_chain_head::table
                    .select(audit_chain_head::last_index)
                    .first(c)?;
                let hash: Option<String> = audit_events::table
                    .filter(audit_events::chain_index.eq(head - 2))
                    .select(audit_events::hash)
                    .first(c)?;
                diesel::update(audit_chain_head::table)
                    .set((
                        audit_chain_head::last_index.eq(head - 2),
                        audit_chain_head::last_hash.eq(hash.unwrap()),
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
