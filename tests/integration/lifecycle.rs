//! Grant lifecycle: expiry and dormancy sweeps with a controllable clock.

use chrono::{Duration, Utc};
use diesel::prelude::*;
use e2e_tests::lifecycle::{insert_grants, spawn_with_clock};
use e2e_tests::oauth::*;
use e2e_tests::{TestApp, backends};
use platform::clock::OffsetClock;
use platform::storage::schema::{audit_events, clients, grant_rows, revocations};
use serde_json::{Value, json};

const DEMO: (&str, &str) = (DEMO_CLIENT, DEMO_SECRET);

async fn app_with_clock(backend: e2e_tests::Backend) -> (TestApp, OffsetClock) {
    // Longer than the grants below: refresh tokens are capped at the grant's expiry.
    spawn_with_clock(backend, |s| {
        s.tokens.refresh_token_ttl = "180d".parse().unwrap()
    })
    .await
}

/// A real grant through PAR + consent + code exchange, ending on `expires` (YYYY-MM-DD).
async fn grant(app: &TestApp, expires: &str) -> Value {
    let (verifier, challenge) = pkce();
    let acc = app.account_ids("alice").await[0].clone();
    let rar = details(
        json!({"type": "account_access", "actions": ["accounts:read"], "expires_at": expires}),
    );
    let loc = app
        .authorize_with_par(
            DEMO,
            DEMO_REDIRECT,
            &rar,
            &challenge,
            &[
                ("decision", "approve"),
                ("account", &acc),
                ("action", "accounts:read"),
            ],
        )
        .await;
    let code = query_param(&loc, "code").unwrap();
    app.post_token(
        DEMO,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", DEMO_REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await
    .json()
    .await
    .unwrap()
}

async fn status_of(app: &TestApp, id: &str) -> (String, Option<String>) {
    let id = id.to_string();
    app.platform
        .db
        .run(move |c| {
            Ok(grant_rows::table
                .filter(grant_rows::id.eq(id))
                .select((grant_rows::status, grant_rows::revoked_by))
                .first(c)?)
        })
        .await
        .unwrap()
}

fn day(offset: i64) -> String {
    (Utc::now() + Duration::days(offset))
        .format("%Y-%m-%d")
        .to_string()
}

#[tokio::test]
async fn expired_and_dormant_grants_end_and_stop_working() {
    for backend in backends() {
        let (app, clock) = app_with_clock(backend).await;
        app.login_customer("alice").await;
        let short = grant(&app, &day(2)).await;
        let idle = grant(&app, &day(170)).await;
        let busy = grant(&app, &day(170)).await;

        // Day 3: the short grant expired; nothing else changes.
        clock.advance(Duration::days(3));
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!((r.expired, r.dormant), (1, 0), "{backend:?}");
        assert_eq!(
            status_of(&app, short["grant_id"].as_str().unwrap()).await,
            ("expired".into(), Some("expiry".into()))
        );
        let again = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!((again.expired, again.dormant), (0, 0), "idempotent");
        // An authorization request nobody decided is purged once expired.
        let (_, challenge) = pkce();
        let r = app
            .get_authorize(&[
                ("client_id", DEMO_CLIENT),
                ("response_type", "code"),
                ("redirect_uri", DEMO_REDIRECT),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("scope", "accounts:read"),
            ])
            .await;
        assert_eq!(r.status(), 303);
        let pending = || async {
            app.platform
                .db
                .run(|c| {
                    use platform::storage::schema::authorization_requests as ar;
                    Ok(ar::table
                        .filter(ar::status.eq("pending"))
                        .count()
                        .get_result::<i64>(c)?)
                })
                .await
                .unwrap()
        };
        assert_eq!(pending().await, 1);
        consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(
            pending().await,
            1,
            "{backend:?}: still within its 10 minutes"
        );
        clock.advance(Duration::minutes(11));
        let purged = consent::lifecycle::run_once(&app.platform)
            .await
            .unwrap()
            .purged;
        assert!(purged >= 1);
        assert_eq!(pending().await, 0, "{backend:?}: undecided request purged");
        let listed = |id: String| {
            let p = app.platform.clone();
            async move {
                p.db.run(move |c| {
                    Ok(revocations::table
                        .filter(revocations::grant_id.eq(id))
                        .filter(revocations::revocation_id.is_null())
                        .count()
                        .get_result::<i64>(c)?)
                })
                .await
                .unwrap()
            }
        };
        let short_id = short["grant_id"].as_str().unwrap().to_string();
        assert_eq!(
            listed(short_id.clone()).await,
            1,
            "{backend:?}: expiry listed"
        );
        let rt = short["refresh_token"].as_str().unwrap();
        assert_eq!(
            app.post_token(
                DEMO,
                &[("grant_type", "refresh_token"), ("refresh_token", rt)]
            )
            .await
            .status(),
            400
        );

        // Day 60: the busy app refreshes (counts as use); day 95: the idle one is dormant.
        clock.advance(Duration::days(57));
        let r = app
            .post_token(
                DEMO,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", busy["refresh_token"].as_str().unwrap()),
                ],
            )
            .await;
        assert_eq!(r.status(), 200);
        clock.advance(Duration::days(35));
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!((r.expired, r.dormant), (0, 1), "{backend:?}");
        assert_eq!(
            status_of(&app, idle["grant_id"].as_str().unwrap()).await,
            ("revoked".into(), Some("dormancy".into()))
        );
        assert_eq!(
            status_of(&app, busy["grant_id"].as_str().unwrap()).await.0,
            "authorized"
        );
        let rt = idle["refresh_token"].as_str().unwrap();
        let r = app
            .post_token(
                DEMO,
                &[("grant_type", "refresh_token"), ("refresh_token", rt)],
            )
            .await;
        assert_eq!(r.status(), 400);

        // The dormancy revocation is on the revocation list; the expiry's entry was dropped by
        // retention (its tokens expired 92 days ago). Both transitions are audited.
        assert_eq!(listed(short_id).await, 0, "{backend:?}: retention");
        let (listed, audited) = app
            .platform
            .db
            .run(|c| {
                Ok((
                    revocations::table
                        .filter(revocations::revocation_id.is_null())
                        .count()
                        .get_result::<i64>(c)?,
                    audit_events::table
                        .filter(audit_events::action.eq_any(["grant.expired", "grant.revoked"]))
                        .count()
                        .get_result::<i64>(c)?,
                ))
            })
            .await
            .unwrap();
        assert_eq!((listed, audited), (1, 2), "{backend:?}");
        app.stop().await;
    }
}

#[tokio::test]
async fn concurrent_sweepers_make_each_transition_exactly_once() {
    for backend in backends() {
        let (app, clock) = app_with_clock(backend).await;
        // The client has a webhook, so each transition also writes one outbox event.
        app.platform
            .db
            .write(|c| {
                Ok(
                    diesel::update(clients::table.filter(clients::id.eq(DEMO_CLIENT)))
                        .set(clients::webhook_url.eq(Some("http://127.0.0.1:9/hook")))
                        .execute(c)?,
                )
            })
            .await
            .unwrap();
        insert_grants(
            &app,
            DEMO_CLIENT,
            1_500,
            Duration::days(1),
            Duration::days(1),
        )
        .await;
        // These are within the warning lead time once the clock moved on.
        insert_grants(&app, DEMO_CLIENT, 600, Duration::days(8), Duration::days(1)).await;
        clock.advance(Duration::days(2));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let p = app.platform.clone();
            tasks.push(tokio::spawn(async move {
                consent::lifecycle::run_once(&p).await.unwrap()
            }));
        }
        let (mut total, mut warned) = (0, 0);
        for t in tasks {
            let r = t.await.unwrap();
            total += r.expired;
            warned += r.expiry_warnings;
        }
        assert_eq!((total, warned), (1_500, 600), "{backend:?}");
        let (listed, audited, warnings, events) = app
            .platform
            .db
            .run(|c| {
                use platform::storage::schema::webhook_outbox as o;
                Ok((
                    revocations::table.count().get_result::<i64>(c)?,
                    audit_events::table
                        .filter(audit_events::action.eq("grant.expired"))
                        .count()
                        .get_result::<i64>(c)?,
                    audit_events::table
                        .filter(audit_events::action.eq("grant.expiry_warning"))
                        .count()
                        .get_result::<i64>(c)?,
                    (
                        o::table
                            .filter(o::event_type.eq("grant.expired"))
                            .count()
                            .get_result::<i64>(c)?,
                        o::table
                            .filter(o::event_type.eq("grant.expiring"))
                            .count()
                            .get_result::<i64>(c)?,
                    ),
                ))
            })
            .await
            .unwrap();
        assert_eq!(
            (listed, audited, warnings, events),
            (1_500, 1_500, 600, (1_500, 600)),
            "{backend:?}: each transition once"
        );
        app.stop().await;
    }
}

/// A problem answer with `status`.
async fn problem(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status(), status, "expected {status}");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let v: Value = r.json().await.unwrap();
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    v
}

/// Staff member `by` approves request `id` (the answer).
async fn approve(app: &TestApp, id: &str, by: &str) -> reqwest::Response {
    app.api(
        reqwest::Method::POST,
        &format!("/api/v1/admin/approvals/{id}/approve"),
        Some(by),
        Some(&json!({ "justification": "the agreement with the client says so" })),
    )
    .await
}

/// `client_id`'s dormancy period as stored.
async fn dormancy_days(app: &TestApp, client_id: &str) -> Option<i32> {
    let id = client_id.to_string();
    app.platform
        .db
        .run(move |c| {
            Ok(clients::table
                .filter(clients::id.eq(id))
                .select(clients::dormancy_days)
                .first(c)?)
        })
        .await
        .unwrap()
}

/// Staff member `requester` asks for `client_id`'s dormancy period to be `days` and `approver`
/// approves it (four-eyes): the request's id.
async fn set_dormancy(app: &TestApp, client_id: &str, days: Value) -> Value {
    // Fresh staff members per call (usernames are unique).
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let requester = app.staff_token(&format!("ops-dormancy-a{n}")).await;
    let approver = app.staff_token(&format!("ops-dormancy-b{n}")).await;
    let r = app
        .api(
            reqwest::Method::POST,
            &format!("/api/v1/admin/clients/{client_id}/dormancy"),
            Some(&requester),
            Some(&json!({ "dormancy_days": days, "justification": "contract: short-lived access only" })),
        )
        .await;
    assert_eq!(r.status(), 202);
    let req: Value = r.json().await.unwrap();
    assert_eq!(req["action"], "client.dormancy.set");
    assert_eq!(req["payload"]["dormancy_days"], days);
    let id = req["id"].as_str().unwrap().to_string();
    assert_eq!(approve(app, &id, &approver).await.status(), 200);
    req["payload"].clone()
}

#[tokio::test]
async fn a_client_may_have_a_shorter_dormancy_period() {
    for backend in backends() {
        let (app, clock) = app_with_clock(backend).await;
        insert_client(
            &app,
            "c_short",
            "sandbox",
            DEMO_REDIRECT,
            "cs_short-secret-value-0123456789ab",
        )
        .await;
        // Set by staff, four-eyes (the refusals are `a_dormancy_period_needs_...` below), a
        // month ago (a change's own grace is `shortening_a_period_...` below).
        set_dormancy(&app, "c_short", json!(10)).await;
        assert_eq!(dormancy_days(&app, "c_short").await, Some(10));
        clock.advance(Duration::days(30));
        let short =
            insert_grants(&app, "c_short", 3, Duration::days(100), Duration::days(11)).await;
        let fresh = insert_grants(&app, "c_short", 2, Duration::days(100), Duration::days(9)).await;
        let demo = insert_grants(
            &app,
            DEMO_CLIENT,
            2,
            Duration::days(100),
            Duration::days(11),
        )
        .await;
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(r.dormant, 3, "{backend:?}: {r:?}");
        for id in &short {
            assert_eq!(status_of(&app, id).await.1.as_deref(), Some("dormancy"));
        }
        for id in fresh.iter().chain(&demo) {
            assert_eq!(status_of(&app, id).await.0, "authorized");
        }
        app.stop().await;
    }
}

/// A client's period set when the warning lead time was 7 days (8 days, the shortest staff could
/// set then) still gives its grants the whole lead time once the bank warns 14 days ahead: it
/// counts as 15 days, so a grant idle for 9 days is warned, not ended.
#[tokio::test]
async fn a_raised_warning_lead_time_lengthens_a_client_period_below_it() {
    for backend in backends() {
        let (app, _clock) = spawn_with_clock(backend, |s| {
            s.tokens.refresh_token_ttl = "180d".parse().unwrap();
            s.lifecycle.warning_lead_time = "14d".parse().unwrap();
        })
        .await;
        let secret = "cs_short-secret-value-0123456789ab";
        insert_client(&app, "c_short", "sandbox", DEMO_REDIRECT, secret).await;
        let long_ago = (app.platform.now() - Duration::days(60)).naive_utc();
        app.platform
            .db
            .write(move |c| {
                Ok(
                    diesel::update(clients::table.filter(clients::id.eq("c_short")))
                        .set((
                            clients::dormancy_days.eq(Some(8)),
                            clients::dormancy_since.eq(Some(long_ago)),
                        ))
                        .execute(c)?,
                )
            })
            .await
            .unwrap();
        let idle = insert_grants(&app, "c_short", 2, Duration::days(100), Duration::days(9)).await;
        let gone = insert_grants(&app, "c_short", 1, Duration::days(100), Duration::days(16)).await;
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(
            (r.dormant, r.dormancy_warnings),
            (1, 2),
            "{backend:?}: {r:?}"
        );
        assert_eq!(
            status_of(&app, &gone[0]).await.1.as_deref(),
            Some("dormancy")
        );
        for id in &idle {
            assert_eq!(status_of(&app, id).await.0, "authorized", "{backend:?}");
        }
        app.stop().await;
    }
}

/// Shortening a client's period ends nothing at once: a grant idle for longer than the new
/// period gets the whole new period from the change, and its warning the lead time before.
#[tokio::test]
async fn shortening_a_period_gives_idle_grants_the_whole_new_period_and_a_warning() {
    for backend in backends() {
        let (app, clock) = app_with_clock(backend).await;
        let mut idle = Vec::new();
        for client in ["c_short", "c_longer"] {
            let secret = format!("cs_{client}-secret-value-0123456789ab");
            insert_client(&app, client, "sandbox", DEMO_REDIRECT, &secret).await;
            idle.push(
                insert_grants(&app, client, 2, Duration::days(100), Duration::days(30)).await,
            );
            // The approver is shown what the change weighs on: 2 live grants, both idle longer
            // than the new period.
            let asked = set_dormancy(&app, client, json!(10)).await;
            assert_eq!(asked["live_grants"], 2, "{asked}");
            assert_eq!(asked["grants_idle_longer_than_new_period"], 2, "{asked}");
        }
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(
            (r.dormant, r.dormancy_warnings),
            (0, 0),
            "{backend:?}: {r:?}"
        );
        // 7 days before the new deadline (the lead time): warned, not ended.
        clock.advance(Duration::days(4));
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(
            (r.dormant, r.dormancy_warnings),
            (0, 4),
            "{backend:?}: {r:?}"
        );
        // Lengthened to 20 days: counted from the same moment (day 0), and the warning given
        // for the old deadline no longer holds.
        set_dormancy(&app, "c_longer", json!(20)).await;
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(
            (r.dormant, r.dormancy_warnings),
            (0, 0),
            "{backend:?}: {r:?}"
        );
        // Ten days after the change: c_short's end; c_longer's are warned at day 13.
        clock.advance(Duration::days(7));
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(
            (r.dormant, r.dormancy_warnings),
            (2, 0),
            "{backend:?}: {r:?}"
        );
        for id in &idle[0] {
            assert_eq!(status_of(&app, id).await.1.as_deref(), Some("dormancy"));
        }
        clock.advance(Duration::days(3));
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(
            (r.dormant, r.dormancy_warnings),
            (0, 2),
            "{backend:?}: {r:?}"
        );
        clock.advance(Duration::days(7));
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(r.dormant, 2, "{backend:?}: 20 days after day 0: {r:?}");
        for id in &idle[1] {
            assert_eq!(status_of(&app, id).await.1.as_deref(), Some("dormancy"));
        }
        app.stop().await;
    }
}

/// A client's dormancy period is a lifecycle setting: one staff member asks for a value, a
/// compliance member other than them approves that value, and only then is it set. Every bad
/// request is a 4xx that opens nothing; a refused decision changes nothing.
#[tokio::test]
async fn a_dormancy_period_needs_a_second_compliance_member_and_a_sane_value() {
    use developer_portal::StaffRole;
    use reqwest::Method;
    for backend in backends() {
        // The demo's customers hold the grants that the request counts.
        let app = e2e_tests::spawn_demo_app(backend).await;
        let dev = app.developer_token("dormancy@fintech.example").await;
        let (client_id, _) = app.sandbox_client(&dev).await;
        let support = app
            .staff_token_with_roles("support-d", &[StaffRole::Support])
            .await;
        let security = app
            .staff_token_with_roles("security-d", &[StaffRole::Security])
            .await;
        let compliance = app
            .staff_token_with_roles("compliance-d", &[StaffRole::Compliance])
            .await;
        let path = format!("/api/v1/admin/clients/{client_id}/dormancy");
        let ask = |body: Value| {
            let (app, path, support) = (&app, path.clone(), support.clone());
            async move {
                app.api(Method::POST, &path, Some(&support), Some(&body))
                    .await
            }
        };
        let why = "contract: short-lived access only";
        for (body, status) in [
            (json!({ "justification": why }), 400),
            (json!({ "dormancy_days": 0, "justification": why }), 400),
            // Not longer than the 7-day warning lead time: every use would be followed by a
            // dormancy warning.
            (json!({ "dormancy_days": 7, "justification": why }), 400),
            (json!({ "dormancy_days": -5, "justification": why }), 400),
            (json!({ "dormancy_days": 91, "justification": why }), 400),
            (json!({ "dormancy_days": 1e30, "justification": why }), 400),
            (json!({ "dormancy_days": "7", "justification": why }), 400),
            (
                json!({ "dormancy_days": 10, "justification": "short" }),
                400,
            ),
            (
                json!({ "dormancy_days": 10, "justification": why, "extra": 1 }),
                400,
            ),
            // Already the bank's default.
            (json!({ "dormancy_days": null, "justification": why }), 409),
        ] {
            problem(ask(body.clone()).await, status).await;
        }
        let unknown = app
            .api(
                Method::POST,
                "/api/v1/admin/clients/c_nobody/dormancy",
                Some(&support),
                Some(&json!({ "dormancy_days": 10, "justification": why })),
            )
            .await;
        problem(unknown, 404).await;
        let r = app
            .api(
                Method::POST,
                &path,
                None,
                Some(&json!({ "dormancy_days": 10, "justification": why })),
            )
            .await;
        assert_eq!(r.status(), 401, "{backend:?}");
        assert!(
            !app.audit_actions()
                .await
                .iter()
                .any(|a| a == "approval.requested"),
            "{backend:?}: no bad request opened anything"
        );

        // The request shows the approver the client's live grants and those idle longer than
        // the new period (an ended one counts in neither).
        let one = |idle| insert_grants(&app, &client_id, 1, Duration::days(100), idle);
        one(Duration::days(30)).await;
        one(Duration::days(2)).await;
        let ended = one(Duration::days(40)).await;
        let end = ended[0].clone();
        app.platform
            .db
            .write(move |c| {
                Ok(
                    diesel::update(grant_rows::table.filter(grant_rows::id.eq(end)))
                        .set(grant_rows::status.eq("revoked"))
                        .execute(c)?,
                )
            })
            .await
            .unwrap();
        let r = ask(json!({ "dormancy_days": 10, "justification": why })).await;
        assert_eq!(r.status(), 202, "{backend:?}");
        let req = r.json::<Value>().await.unwrap();
        assert_eq!(req["payload"]["live_grants"], 2, "{req}");
        assert_eq!(
            req["payload"]["grants_idle_longer_than_new_period"], 1,
            "{req}"
        );
        let id = req["id"].as_str().unwrap().to_string();
        // One open request per client, whoever asks (a change to shared state).
        problem(
            ask(json!({ "dormancy_days": 12, "justification": why })).await,
            400,
        )
        .await;
        let other = json!({ "dormancy_days": 12, "justification": why });
        let r = app.api(Method::POST, &path, Some(&compliance), Some(&other));
        problem(r.await, 400).await;
        // Not by the requester, not by a role that does not approve lifecycle settings.
        problem(approve(&app, &id, &support).await, 403).await;
        problem(approve(&app, &id, &security).await, 403).await;
        assert_eq!(dormancy_days(&app, &client_id).await, None, "{backend:?}");

        assert_eq!(approve(&app, &id, &compliance).await.status(), 200);
        assert_eq!(dormancy_days(&app, &client_id).await, Some(10));
        // The developer sees it on their client.
        let mine = app
            .api(
                Method::GET,
                &format!("/api/v1/clients/{client_id}"),
                Some(&dev),
                None,
            )
            .await;
        assert_eq!(mine.json::<Value>().await.unwrap()["dormancy_days"], 10);
        let web = app.developer_browser("dormancy@fintech.example").await;
        let page = app
            .page(&web, &format!("/developers/clients/{client_id}"))
            .await;
        assert!(
            page.contains("unused for 10 days ends"),
            "{backend:?}: {page}"
        );
        // Audited as the approver's change, with the request and both values.
        let (actor, details): (String, String) = {
            let client_id = client_id.clone();
            app.platform
                .db
                .run(move |c| {
                    Ok(audit_events::table
                        .filter(audit_events::action.eq("client.dormancy_changed"))
                        .filter(audit_events::target_id.eq(client_id))
                        .select((audit_events::actor_id, audit_events::details))
                        .first(c)?)
                })
                .await
                .unwrap()
        };
        let details: Value = serde_json::from_str(&details).unwrap();
        assert_eq!(
            (details["from"].clone(), details["to"].clone()),
            (Value::Null, json!(10))
        );
        assert_eq!(details["approval_request"], id.as_str());
        assert_eq!(actor, app.staff_id("compliance-d").await, "{backend:?}");

        // Back to the bank's default, the same way.
        set_dormancy(&app, &client_id, Value::Null).await;
        assert_eq!(dormancy_days(&app, &client_id).await, None, "{backend:?}");
        app.stop().await;
    }
}

async fn set_last_used(app: &TestApp, id: &str, ago: Duration) {
    let (id, at) = (id.to_string(), (app.platform.now() - ago).naive_utc());
    app.platform
        .db
        .write(move |c| {
            Ok(
                diesel::update(grant_rows::table.filter(grant_rows::id.eq(id)))
                    .set(grant_rows::last_used_at.eq(at))
                    .execute(c)?,
            )
        })
        .await
        .unwrap();
}

async fn last_used(app: &TestApp, id: &str) -> chrono::NaiveDateTime {
    let id = id.to_string();
    app.platform
        .db
        .run(move |c| {
            Ok(grant_rows::table
                .filter(grant_rows::id.eq(id))
                .select(grant_rows::last_used_at)
                .first::<Option<chrono::NaiveDateTime>>(c)?
                .unwrap())
        })
        .await
        .unwrap()
}

async fn post_usage(app: &TestApp, token: Option<&str>, body: &str) -> reqwest::Response {
    let mut r = app
        .client
        .post(app.url("/api/v1/usage"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn introspection_and_resource_server_usage_reports_count_as_use() {
    for backend in backends() {
        let (app, clock) = app_with_clock(backend).await;
        app.login_customer("alice").await;
        let t = grant(&app, &day(150)).await;
        let (gid, access) = (
            t["grant_id"].as_str().unwrap().to_string(),
            t["access_token"].as_str().unwrap().to_string(),
        );

        // Introspection by the client is use.
        set_last_used(&app, &gid, Duration::days(89)).await;
        let before = last_used(&app, &gid).await;
        let v = app.post_introspect(DEMO, &access).await;
        assert_eq!(v["active"], true, "{backend:?}");
        let after = last_used(&app, &gid).await;
        assert!(after > before + Duration::days(88), "{backend:?}");

        // So is a resource server's report, authenticated by the token it served.
        set_last_used(&app, &gid, Duration::days(89)).await;
        let before = last_used(&app, &gid).await;
        // Bad reports change nothing.
        let refused = [
            (None, r#"{"operation": "accounts:read"}"#, 401),
            (
                Some("not-a-biscuit"),
                r#"{"operation": "accounts:read"}"#,
                401,
            ),
            (Some(access.as_str()), r#"{"operation": "#, 400),
            (
                Some(access.as_str()),
                r#"{"operation": "accounts:write"}"#,
                400,
            ),
            (
                Some(access.as_str()),
                r#"{"operation": "accounts:read", "x": 1}"#,
                400,
            ),
            (
                Some(access.as_str()),
                r#"{"operation": "transactions:read"}"#,
                403,
            ),
        ];
        for (token, body, status) in refused {
            let r = post_usage(&app, token, body).await;
            assert_eq!(r.status(), status, "{backend:?}: {body}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            assert_eq!(last_used(&app, &gid).await, before, "{backend:?}: {body}");
        }
        let r = post_usage(&app, Some(&access), r#"{"operation": "accounts:read"}"#).await;
        assert_eq!(r.status(), 204, "{backend:?}");
        assert!(last_used(&app, &gid).await > before + Duration::days(88));

        // A day later the grant is 1 day idle, not 90: nothing is revoked.
        clock.advance(Duration::days(1));
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(r.dormant, 0, "{backend:?}");
        assert_eq!(status_of(&app, &gid).await.0, "authorized");

        // A revoked grant's token is refused (the revocation list decides): take a fresh access
        // token (the first expired with the clock), see it accepted, revoke, see it refused.
        let fresh: Value = app
            .post_token(
                DEMO,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", t["refresh_token"].as_str().unwrap()),
                ],
            )
            .await
            .json()
            .await
            .unwrap();
        let access = fresh["access_token"].as_str().unwrap().to_string();
        let r = post_usage(&app, Some(&access), r#"{"operation": "accounts:read"}"#).await;
        assert_eq!(r.status(), 204, "{backend:?}");
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/grants/{gid}")))
            .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let r = post_usage(&app, Some(&access), r#"{"operation": "accounts:read"}"#).await;
            if r.status() == 401 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{backend:?}: {}",
                r.status()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        app.stop().await;
    }
}

/// Four-eyes requests nobody decided in time are stored as expired by the sweep, each with an
/// audit event; decided ones and those still in time are left alone.
#[tokio::test]
async fn the_sweep_expires_undecided_approval_requests() {
    use developer_portal::approvals::{self, ApprovalAction, ApprovalStatus, ApprovalTarget};
    for backend in backends() {
        let (app, clock) = app_with_clock(backend).await;
        let a = app.create_staff("ops-a").await;
        let b = app.create_staff("ops-b").await;
        let now = app.platform.now();
        let ask = move |c: &mut platform::storage::AnyConnection, key: &str, at| {
            approvals::request(
                c,
                ApprovalAction::RotateSigningKeys,
                ApprovalTarget::new("signing_keys", key),
                json!({}),
                "the quarterly key rotation",
                &a,
                at,
            )
            .unwrap()
            .id
        };
        let (stale, decided) = {
            let (ask, b) = (ask.clone(), b.clone());
            app.platform
                .db
                .write(move |c| {
                    let stale = ask(c, "k1", now);
                    let decided = ask(c, "k2", now);
                    approvals::decide(c, &decided, &b, false, "not needed this quarter", now)
                        .unwrap();
                    Ok((stale, decided))
                })
                .await
                .unwrap()
        };
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(r.approvals_expired, 0, "{backend:?}: still in time");

        clock.advance(Duration::hours(25));
        let fresh = {
            let (ask, later) = (ask.clone(), app.platform.now());
            app.platform
                .db
                .write(move |c| Ok(ask(c, "k3", later)))
                .await
                .unwrap()
        };
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(r.approvals_expired, 1, "{backend:?}");
        let (s, d, f) = (stale.clone(), decided.clone(), fresh.clone());
        let (statuses, events) = app
            .platform
            .db
            .run(move |c| {
                let status = |c: &mut platform::storage::AnyConnection, id: &str| {
                    approvals::get(c, id).unwrap().status
                };
                let statuses = [status(c, &s), status(c, &d), status(c, &f)];
                let events: i64 = audit_events::table
                    .filter(audit_events::action.eq("approval.expired"))
                    .filter(audit_events::target_id.eq(&s))
                    .count()
                    .get_result(c)?;
                Ok((statuses, events))
            })
            .await
            .unwrap();
        assert_eq!(
            statuses,
            [
                ApprovalStatus::Expired,
                ApprovalStatus::Rejected,
                ApprovalStatus::Pending
            ],
            "{backend:?}"
        );
        assert_eq!(events, 1, "{backend:?}");
        let again = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(again.approvals_expired, 0, "{backend:?}: once");
        app.stop().await;
    }
}

/// Issued-token and refresh-token rows of `grant`.
async fn token_rows(app: &TestApp, grant: &str) -> (i64, i64) {
    use platform::storage::schema::{issued_tokens, refresh_tokens};
    let grant = grant.to_string();
    app.platform
        .db
        .run(move |c| {
            let issued = issued_tokens::table
                .filter(issued_tokens::grant_id.eq(&grant))
                .count()
                .get_result(c)?;
            let refresh = refresh_tokens::table
                .filter(refresh_tokens::grant_id.eq(&grant))
                .count()
                .get_result(c)?;
            Ok((issued, refresh))
        })
        .await
        .unwrap()
}

/// Spent tokens are purged by the sweep: issued-token rows once their access token has expired
/// (plus the revocation list's margin), refresh tokens a week past their expiry. Until then a
/// used refresh token is kept (a replay is recognised); after it, it is an unknown token:
/// refused as invalid, with nothing ended and no error.
#[tokio::test]
async fn spent_tokens_are_purged_after_their_retention() {
    for backend in backends() {
        let (app, clock) = e2e_tests::lifecycle::spawn_with_clock(backend, |_| {}).await;
        app.login_customer("alice").await;
        let first = app.approved_tokens().await;
        let grant = first["grant_id"].as_str().unwrap().to_string();
        let used = first["refresh_token"].as_str().unwrap().to_string();
        let (status, second) = e2e_tests::dashboard::refresh(&app, DEMO, &used).await;
        assert_eq!(status, 200);
        let access = second["access_token"].as_str().unwrap().to_string();
        let rotated = second["refresh_token"].as_str().unwrap().to_string();
        let (issued, refresh) = token_rows(&app, &grant).await;
        assert!(issued >= 2, "{backend:?}: {issued}");
        assert_eq!(refresh, 2, "{backend:?}: the used token and its successor");

        // Access tokens live 10 minutes; the margin is an hour.
        clock.advance(Duration::minutes(69));
        consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(token_rows(&app, &grant).await, (issued, 2), "{backend:?}");
        assert_eq!(app.post_introspect(DEMO, &access).await["active"], false);
        clock.advance(Duration::minutes(2));
        // A pass purges for a bounded time: with none left, one batch (here of one row).
        let now = app.platform.now();
        let one = app
            .platform
            .db
            .run(move |c| consent::lifecycle::purge_spent(c, now, 1, std::time::Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(one, 1, "{backend:?}");
        assert_eq!(
            token_rows(&app, &grant).await,
            (issued - 1, 2),
            "{backend:?}"
        );
        let report = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert!(
            report.purged >= issued as usize - 1,
            "{backend:?}: {report:?}"
        );
        assert_eq!(token_rows(&app, &grant).await, (0, 2), "{backend:?}");
        assert_eq!(
            app.post_introspect(DEMO, &access).await["active"],
            false,
            "{backend:?}: the same answer without the row"
        );

        // Refresh tokens live 30 days here, and are kept a week after that.
        clock.advance(Duration::days(36));
        consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(token_rows(&app, &grant).await, (0, 2), "{backend:?}");
        clock.advance(Duration::days(1));
        consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(token_rows(&app, &grant).await, (0, 0), "{backend:?}");
        for token in [&used, &rotated] {
            let (status, body) = e2e_tests::dashboard::refresh(&app, DEMO, token).await;
            assert_eq!(status, 400, "{backend:?}");
            assert_eq!(body["error"], "invalid_grant", "{backend:?}: {body}");
        }
        assert_eq!(
            status_of(&app, &grant).await,
            ("authorized".to_string(), None),
            "{backend:?}: an unknown token ends nothing"
        );
    }
}

/// Dormancy is selected by the day of a grant's activity, then by its exact instant: a grant
/// last used a minute before the cutoff ends, one last used a minute after it (the same day,
/// most of the time) stays. On PostgreSQL, recording a use rewrites no index entry (a HOT
/// update: the indexed day is unchanged), while a change of an indexed column does.
#[tokio::test]
async fn dormancy_is_decided_to_the_instant_and_recording_a_use_writes_no_index() {
    use diesel::sql_types::{BigInt, Text};
    for backend in backends() {
        let (app, _clock) = app_with_clock(backend).await;
        app.login_customer("alice").await;
        let id = |t: &Value| t["grant_id"].as_str().unwrap().to_string();
        let (before, after) = (grant(&app, &day(170)).await, grant(&app, &day(170)).await);
        // The bank's default period: 90 days.
        set_last_used(
            &app,
            &id(&before),
            Duration::days(90) + Duration::minutes(1),
        )
        .await;
        set_last_used(&app, &id(&after), Duration::days(90) - Duration::minutes(1)).await;
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(r.dormant, 1, "{backend:?}");
        assert_eq!(
            status_of(&app, &id(&before)).await,
            ("revoked".into(), Some("dormancy".into())),
            "{backend:?}"
        );
        assert_eq!(status_of(&app, &id(&after)).await.0, "authorized");

        if backend == e2e_tests::Backend::Postgres {
            #[derive(QueryableByName)]
            struct Hot {
                #[diesel(sql_type = BigInt)]
                hot: i64,
            }
            let gid = id(&after);
            let hot = app
                .platform
                .db
                .write(move |c| {
                    // This transaction's own counts, so other connections cannot disturb them.
                    let hot = |c: &mut platform::storage::AnyConnection| {
                        diesel::sql_query(
                            "SELECT pg_stat_get_xact_tuples_hot_updated('grants'::regclass) AS hot",
                        )
                        .get_result::<Hot>(c)
                        .map(|h| h.hot)
                    };
                    let start = hot(c)?;
                    // A use, as the token paths record it: a minute later, or earlier when later
                    // would be the next day (the clock is the real one: this runs at any hour).
                    diesel::sql_query(
                        "UPDATE grants SET last_used_at = date_trunc('second', CASE \
                         WHEN CAST(last_used_at + interval '1 minute' AS DATE) = CAST(last_used_at AS DATE) \
                         THEN last_used_at + interval '1 minute' \
                         ELSE last_used_at - interval '1 minute' END) WHERE id = $1",
                    )
                    .bind::<Text, _>(&gid)
                    .execute(c)?;
                    let used = hot(c)?;
                    // A change of an indexed column is not HOT: the counter can tell them apart.
                    diesel::sql_query(
                        "UPDATE grants SET expires_at = expires_at - interval '1 day' WHERE id = $1",
                    )
                    .bind::<Text, _>(&gid)
                    .execute(c)?;
                    let moved = hot(c)?;
                    Ok((used - start, moved - used))
                })
                .await
                .unwrap();
            assert_eq!(hot, (1, 0), "(use, expiry change) HOT updates");

            // An update is HOT only with room on its row's page: the tables updated on every
            // token request keep a tenth of each page free (a page filled by inserts has none).
            #[derive(QueryableByName)]
            struct Fill {
                #[diesel(sql_type = Text)]
                relname: String,
                #[diesel(sql_type = Text)]
                options: String,
            }
            let fill = app
                .platform
                .db
                .run(|c| {
                    diesel::sql_query(
                        "SELECT relname::text AS relname, \
                         coalesce(array_to_string(reloptions, ','), '') AS options \
                         FROM pg_class WHERE oid IN ('grants'::regclass, \
                         'refresh_tokens'::regclass, 'authorization_codes'::regclass) \
                         ORDER BY relname",
                    )
                    .load::<Fill>(c)
                    .map_err(Into::into)
                })
                .await
                .unwrap();
            let fill: Vec<(String, String)> =
                fill.into_iter().map(|f| (f.relname, f.options)).collect();
            let want = |t: &str| (t.to_string(), "fillfactor=90".to_string());
            assert_eq!(
                fill,
                vec![
                    want("authorization_codes"),
                    want("grants"),
                    want("refresh_tokens")
                ]
            );
        }
        app.stop().await;
    }
}

/// The sweep deletes webhook events by age and outcome (delivered after 30 days, failed after 90,
/// pending never) and Shared Signals events (any after 90 days, pending after 30), and nothing
/// younger.
#[tokio::test]
async fn old_webhook_and_shared_signals_events_are_purged_after_their_retention() {
    use platform::storage::schema::{ssf_events, ssf_streams, webhook_outbox};
    // (status, age in days, kept)
    const OUTBOX: [(&str, i64, bool); 5] = [
        ("delivered", 29, true),
        ("delivered", 31, false),
        ("failed", 89, true),
        ("failed", 91, false),
        ("pending", 400, true),
    ];
    const EVENTS: [(&str, i64, bool); 4] = [
        ("pending", 29, true),
        ("pending", 31, false),
        ("failed", 89, true),
        ("failed", 91, false),
    ];
    for backend in backends() {
        let (app, _clock) = spawn_with_clock(backend, |_| {}).await;
        let now = app.platform.now().naive_utc();
        app.platform
            .db
            .run(move |c| {
                diesel::insert_into(ssf_streams::table)
                    .values((
                        ssf_streams::id.eq("st_purge"),
                        ssf_streams::client_id.eq(DEMO_CLIENT),
                        ssf_streams::delivery_method.eq("poll"),
                        ssf_streams::events_requested.eq("[]"),
                        ssf_streams::events_delivered.eq("[]"),
                        ssf_streams::status.eq("enabled"),
                        ssf_streams::push_failures.eq(0),
                        ssf_streams::created_at.eq(now),
                        ssf_streams::updated_at.eq(now),
                    ))
                    .execute(c)?;
                for (n, (status, age, _)) in OUTBOX.iter().enumerate() {
                    diesel::insert_into(webhook_outbox::table)
                        .values((
                            webhook_outbox::id.eq(format!("whe_purge_{n}")),
                            webhook_outbox::client_id.eq(DEMO_CLIENT),
                            webhook_outbox::event_type.eq("grant.revoked"),
                            webhook_outbox::payload.eq("{}"),
                            webhook_outbox::status.eq(*status),
                            webhook_outbox::attempts.eq(1),
                            // Not due during the test: the pending one stays pending.
                            webhook_outbox::next_attempt_at.eq(now + Duration::days(1)),
                            webhook_outbox::created_at.eq(now - Duration::days(*age)),
                        ))
                        .execute(c)?;
                }
                for (n, (status, age, _)) in EVENTS.iter().enumerate() {
                    diesel::insert_into(ssf_events::table)
                        .values((
                            ssf_events::jti.eq(format!("jti_purge_{n}")),
                            ssf_events::stream_id.eq("st_purge"),
                            ssf_events::event_type.eq("session-revoked"),
                            ssf_events::subject.eq("{}"),
                            ssf_events::claims.eq("{}"),
                            ssf_events::status.eq(*status),
                            ssf_events::attempts.eq(0),
                            ssf_events::created_at.eq(now - Duration::days(*age)),
                        ))
                        .execute(c)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        consent::lifecycle::run_once(&app.platform).await.unwrap();
        let (outbox, events) = app
            .platform
            .db
            .run(|c| {
                let outbox: Vec<String> = webhook_outbox::table
                    .filter(webhook_outbox::id.like("whe_purge_%"))
                    .select(webhook_outbox::id)
                    .order(webhook_outbox::id)
                    .load(c)?;
                let events: Vec<String> = ssf_events::table
                    .filter(ssf_events::jti.like("jti_purge_%"))
                    .select(ssf_events::jti)
                    .order(ssf_events::jti)
                    .load(c)?;
                Ok((outbox, events))
            })
            .await
            .unwrap();
        let kept = |prefix: &str, rows: &[(&str, i64, bool)]| -> Vec<String> {
            (0..rows.len())
                .filter(|n| rows[*n].2)
                .map(|n| format!("{prefix}{n}"))
                .collect()
        };
        assert_eq!(outbox, kept("whe_purge_", &OUTBOX), "{backend:?}");
        assert_eq!(events, kept("jti_purge_", &EVENTS), "{backend:?}");
    }
}
