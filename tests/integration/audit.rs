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
