//! Client grant management, revocation feed, sandbox bank API, revocation propagation.

use std::time::{Duration, Instant};

use e2e_tests::oauth::*;
use e2e_tests::{Backend, TestApp, backends, spawn_app_with, spawn_demo_app};
use serde_json::{Value, json};

const DEMO: (&str, &str) = (DEMO_CLIENT, DEMO_SECRET);
const OTHER: (&str, &str) = ("c_other", "cs_other-secret-value-0123456789");

/// Consent through plain query parameters (no PAR, so no cache involved), narrowed as
/// `fields` say. Returns the token response.
async fn tokens_for(app: &TestApp, fields: &[(&str, &str)]) -> Value {
    app.demo_tokens(fields).await
}

async fn sandbox(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn window_fields(acc: &str) -> Vec<(&'static str, String)> {
    let until = chrono::Utc::now().date_naive();
    let from = until - chrono::Duration::days(60);
    vec![
        ("decision", "approve".into()),
        ("account", acc.to_string()),
        ("action", "accounts:read".into()),
        ("action", "transactions:read".into()),
        ("transactions_from", from.to_string()),
        ("transactions_until", until.to_string()),
    ]
}

fn refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn sandbox_returns_only_what_the_effective_scope_allows() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let alice = app.account_ids("alice").await;
        let bob = app.account_ids("bob").await;
        let fields = window_fields(&alice[0]);
        let t = tokens_for(&app, &refs(&fields)).await;
        let token = t["access_token"].as_str().unwrap();

        let accounts: Value = sandbox(&app, "/sandbox/v1/accounts", token)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            accounts.as_array().unwrap().len(),
            1,
            "{backend:?}: {accounts}"
        );
        assert_eq!(accounts[0]["id"], alice[0].as_str());

        // Balances were unticked; other accounts were never granted; bob's are not alice's.
        assert_eq!(
            sandbox(
                &app,
                &format!("/sandbox/v1/accounts/{}/balances", alice[0]),
                token
            )
            .await
            .status(),
            403
        );
        for acc in [&alice[1], &bob[0]] {
            assert_eq!(
                sandbox(
                    &app,
                    &format!("/sandbox/v1/accounts/{acc}/transactions"),
                    token
                )
                .await
                .status(),
                403,
                "{acc}"
            );
        }

        let txs: Value = sandbox(
            &app,
            &format!("/sandbox/v1/accounts/{}/transactions?limit=500", alice[0]),
            token,
        )
        .await
        .json()
        .await
        .unwrap();
        let txs = txs.as_array().unwrap();
        assert!(!txs.is_empty());
        let from = chrono::Utc::now() - chrono::Duration::days(61);
        for tx in txs {
            let at =
                chrono::DateTime::parse_from_rfc3339(tx["booked_at"].as_str().unwrap()).unwrap();
            assert!(at >= from, "outside the granted window: {tx}");
        }
        // Asking beyond the window is refused, not silently widened.
        let r = sandbox(
            &app,
            &format!(
                "/sandbox/v1/accounts/{}/transactions?from=2020-01-01&to=2020-12-31",
                alice[0]
            ),
            token,
        )
        .await;
        assert_eq!(r.status(), 403);

        // Bad requests.
        assert_eq!(
            app.client
                .get(app.url("/sandbox/v1/accounts"))
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
        assert_eq!(
            sandbox(&app, "/sandbox/v1/accounts", "garbage")
                .await
                .status(),
            401
        );
        let r = app
            .get(&format!("/sandbox/v1/accounts?access_token={token}"))
            .await;
        assert_eq!(r.status(), 400, "tokens in the query string are refused");
        assert_eq!(
            sandbox(&app, "/sandbox/v1/accounts/not-an-id/balances", token)
                .await
                .status(),
            400
        );
        let r = sandbox(
            &app,
            &format!(
                "/sandbox/v1/accounts/{}/transactions?from=2026-01-01",
                alice[0]
            ),
            token,
        )
        .await;
        assert_eq!(r.status(), 400);

        // Reads are reported: the grant's history and last_used_at.
        let gid = t["grant_id"].as_str().unwrap().to_string();
        let reads: i64 = app
            .platform
            .db
            .run(move |c| {
                use diesel::prelude::*;
                use platform::storage::schema::audit_events as ae;
                Ok(ae::table
                    .filter(ae::target_id.eq(gid))
                    .filter(ae::action.eq("resource.read"))
                    .count()
                    .get_result(c)?)
            })
            .await
            .unwrap();
        assert!(reads >= 2, "{reads}");
        app.stop().await;
    }
}

#[tokio::test]
async fn attenuated_tokens_read_only_their_narrowed_scope() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    app.login_customer("alice").await;
    let alice = app.account_ids("alice").await;
    let fields = [
        ("decision", "approve"),
        ("account", alice[0].as_str()),
        ("account", alice[1].as_str()),
        ("action", "accounts:read"),
        ("action", "transactions:read"),
    ];
    let t = tokens_for(&app, &fields).await;
    let token = t["access_token"].as_str().unwrap();
    let narrowed = ::grants::attenuate(
        token,
        &::grants::Attenuation::new()
            .accounts([::grants::AccountId::parse(alice[1].clone()).unwrap()])
            .merchants([::grants::MerchantId::parse("m_bean_there").unwrap()]),
        false,
    )
    .unwrap();
    let accounts: Value = sandbox(&app, "/sandbox/v1/accounts", &narrowed)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(accounts.as_array().unwrap().len(), 1, "{accounts}");
    assert_eq!(accounts[0]["id"], alice[1].as_str());
    assert!(
        accounts[0]["masked_number"]
            .as_str()
            .unwrap()
            .starts_with("••••")
    );
    assert_eq!(
        sandbox(
            &app,
            &format!("/sandbox/v1/accounts/{}/transactions", alice[0]),
            &narrowed
        )
        .await
        .status(),
        403
    );
    let txs: Value = sandbox(
        &app,
        &format!("/sandbox/v1/accounts/{}/transactions?limit=500", alice[1]),
        &narrowed,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(
        txs.as_array()
            .unwrap()
            .iter()
            .all(|t| t["merchant_id"] == "m_bean_there"),
        "{txs}"
    );
    let r = sandbox(
        &app,
        &format!(
            "/sandbox/v1/accounts/{}/transactions?merchant=m_fresh_market",
            alice[1]
        ),
        &narrowed,
    )
    .await;
    assert_eq!(r.status(), 403);
    // The parent token still sees both accounts.
    let accounts: Value = sandbox(&app, "/sandbox/v1/accounts", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(accounts.as_array().unwrap().len(), 2);

    // biscuit-python attenuation gets the same treatment, when available.
    let keys: Value = app
        .get("/.well-known/biscuit-keys")
        .await
        .json()
        .await
        .unwrap();
    let pk = keys["keys"][0]["public_key"]
        .as_str()
        .unwrap()
        .trim_start_matches("ed25519/")
        .to_string();
    let script = format!(
        "from biscuit_auth import Algorithm, Biscuit, BlockBuilder, PublicKey\n\
         root = PublicKey.from_bytes(bytes.fromhex('{pk}'), Algorithm.Ed25519)\n\
         t = Biscuit.from_base64('{token}', root)\n\
         t = t.append(BlockBuilder('check if req_account($a), {{\"{acc}\"}}.contains($a); check if req_merchant($m), {{\"m_bean_there\"}}.contains($m);'))\n\
         print(t.to_base64())\n",
        acc = alice[1]
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let py = String::from_utf8(o.stdout).unwrap().trim().to_string();
            let txs: Value = sandbox(
                &app,
                &format!("/sandbox/v1/accounts/{}/transactions?limit=500", alice[1]),
                &py,
            )
            .await
            .json()
            .await
            .unwrap();
            assert!(!txs.as_array().unwrap().is_empty());
            assert!(
                txs.as_array()
                    .unwrap()
                    .iter()
                    .all(|t| t["merchant_id"] == "m_bean_there"),
                "{txs}"
            );
            assert_eq!(
                sandbox(
                    &app,
                    &format!("/sandbox/v1/accounts/{}/transactions", alice[0]),
                    &py
                )
                .await
                .status(),
                403
            );
        }
        other => {
            assert!(
                std::env::var("GRANTS_REQUIRE_PYTHON").as_deref() != Ok("1"),
                "biscuit-python unavailable: {other:?}"
            );
            eprintln!("skipping the biscuit-python part: {other:?}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn clients_manage_their_grants_and_the_feed_lists_revocations() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        insert_client(&app, OTHER.0, "sandbox", DEMO_REDIRECT, OTHER.1).await;
        app.login_customer("alice").await;
        let alice = app.account_ids("alice").await;
        let t = tokens_for(&app, &refs(&window_fields(&alice[0]))).await;
        let gid = t["grant_id"].as_str().unwrap().to_string();
        let path = format!("/api/v1/grants/{gid}");

        let r = app
            .client
            .get(app.url(&path))
            .basic_auth(DEMO.0, Some(DEMO.1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let g: Value = r.json().await.unwrap();
        assert_eq!(g["status"], "authorized");
        assert_eq!(g["authorization_details"][0]["accounts"], json!([alice[0]]));
        // Other clients and anonymous callers see nothing.
        let r = app
            .client
            .get(app.url(&path))
            .basic_auth(OTHER.0, Some(OTHER.1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(
            app.client
                .delete(app.url(&path))
                .basic_auth(OTHER.0, Some(OTHER.1))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        assert_eq!(app.get(&path).await.status(), 401);
        assert_eq!(
            app.client
                .get(app.url("/api/v1/grants/g_unknown"))
                .basic_auth(DEMO.0, Some(DEMO.1))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );

        let feed = |since: i64, limit: i64| {
            let app = &app;
            async move {
                app.client
                    .get(app.url(&format!("/oauth2/revocations?since={since}&limit={limit}")))
                    .basic_auth(DEMO.0, Some(DEMO.1))
                    .send()
                    .await
                    .unwrap()
            }
        };
        let empty: Value = feed(0, 10).await.json().await.unwrap();
        assert_eq!(empty["revocations"], json!([]));

        // The fintech ends the consent.
        let r = app
            .client
            .delete(app.url(&path))
            .basic_auth(DEMO.0, Some(DEMO.1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let r = app
            .client
            .delete(app.url(&path))
            .basic_auth(DEMO.0, Some(DEMO.1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "idempotent");
        let g: Value = app
            .client
            .get(app.url(&path))
            .basic_auth(DEMO.0, Some(DEMO.1))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(g["status"], "revoked");
        assert_eq!(g["revoked_by"], "client");
        let r = app
            .post_token(
                DEMO,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", t["refresh_token"].as_str().unwrap()),
                ],
            )
            .await;
        assert_eq!(r.status(), 400);
        assert_eq!(
            app.post_introspect(DEMO, t["access_token"].as_str().unwrap())
                .await["active"],
            false
        );

        // The feed has the grant and the token's revocation id, in pages.
        let page1: Value = feed(0, 1).await.json().await.unwrap();
        assert_eq!(page1["revocations"].as_array().unwrap().len(), 1);
        assert_eq!(page1["has_more"], true);
        let page2: Value = feed(page1["next_cursor"].as_i64().unwrap(), 10)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(page2["has_more"], false);
        let all: Vec<Value> = [page1["revocations"].clone(), page2["revocations"].clone()]
            .iter()
            .flat_map(|v| v.as_array().unwrap().clone())
            .collect();
        assert!(all.iter().all(|e| e["grant_id"] == gid.as_str()));
        assert!(all.iter().any(|e| e["revocation_id"].is_string()));
        let last: Value = feed(page2["next_cursor"].as_i64().unwrap(), 10)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(last["revocations"], json!([]));
        assert_eq!(
            last["next_cursor"], page2["next_cursor"],
            "an empty page keeps the cursor"
        );

        // Bad input.
        assert_eq!(feed(-1, 10).await.status(), 400);
        assert_eq!(feed(0, 0).await.status(), 400);
        assert_eq!(feed(0, 5000).await.status(), 400);
        assert_eq!(app.get("/oauth2/revocations").await.status(), 401);
        app.stop().await;
    }
}

/// Two instances on one database (+ Redis when configured): a revocation on one is refused by
/// the other's sandbox API within a second or two. Prints the observed propagation time.
#[tokio::test]
async fn revocation_reaches_another_instance() {
    for backend in backends() {
        let a = spawn_demo_app(backend).await;
        let (db_url, prefix, master) = shared_settings(&a);
        let b = spawn_app_with(backend, Default::default(), |s| {
            s.database.url = Some(platform::config::Secret::new(db_url.clone()));
            s.redis.key_prefix = prefix.clone();
            s.security.master_key = Some(platform::config::Secret::new(master.clone()));
        })
        .await;
        a.login_customer("alice").await;
        let alice = a.account_ids("alice").await;
        let t = tokens_for(&a, &refs(&window_fields(&alice[0]))).await;
        let token = t["access_token"].as_str().unwrap();
        assert_eq!(
            sandbox(&b, "/sandbox/v1/accounts", token).await.status(),
            200,
            "{backend:?}: B verifies A's token"
        );
        let gid = t["grant_id"].as_str().unwrap();
        let r = a
            .client
            .delete(a.url(&format!("/api/v1/grants/{gid}")))
            .basic_auth(DEMO.0, Some(DEMO.1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let started = Instant::now();
        loop {
            let status = sandbox(&b, "/sandbox/v1/accounts", token).await.status();
            if status == 401 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{backend:?}: B still accepts after {:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!(
            "{backend:?}: revocation reached the other instance in {:?}",
            started.elapsed()
        );
        b.stop().await;
        a.stop().await;
    }
}

fn shared_settings(app: &TestApp) -> (String, String, String) {
    let s = &app.platform.settings;
    let db = platform::database_url(s);
    (
        db,
        s.redis.key_prefix.clone(),
        app.platform
            .master_key
            .to_base64()
            .expect("the test servers' master key is in memory"),
    )
}

/// With Redis unreachable, the flow still works (no PAR: pushed requests live in the cache) and
/// a revoked token is still refused, because the revocation list syncs from the database.
#[tokio::test]
async fn revoked_tokens_stay_refused_without_redis() {
    for backend in backends() {
        // On PostgreSQL too: the shared database with Redis unreachable.
        let app = spawn_app_with(
            backend,
            consent::ServeOptions {
                demo: true,
                ..Default::default()
            },
            |s| {
                s.redis.url = Some(platform::config::Secret::new("redis://127.0.0.1:1".into()));
            },
        )
        .await;
        app.login_customer("alice").await;
        let alice = app.account_ids("alice").await;
        let t = tokens_for(&app, &refs(&window_fields(&alice[0]))).await;
        let token = t["access_token"].as_str().unwrap();
        assert_eq!(
            sandbox(&app, "/sandbox/v1/accounts", token).await.status(),
            200
        );
        let gid = t["grant_id"].as_str().unwrap();
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/grants/{gid}")))
            .basic_auth(DEMO.0, Some(DEMO.1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let started = Instant::now();
        while sandbox(&app, "/sandbox/v1/accounts", token).await.status() != 401 {
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{backend:?}: revoked token accepted without Redis"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(app.post_introspect(DEMO, token).await["active"], false);
        let r = app
            .post_token(
                DEMO,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", t["refresh_token"].as_str().unwrap()),
                ],
            )
            .await;
        assert_eq!(r.status(), 400);
        app.stop().await;
    }
}

/// The end-to-end promise: the customer revokes from the dashboard, and the sandbox API
/// refuses the token, the refresh token fails and introspection says inactive.
#[tokio::test]
async fn dashboard_revocation_stops_the_sandbox_api() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let alice = app.account_ids("alice").await;
        let t = tokens_for(&app, &refs(&window_fields(&alice[0]))).await;
        let token = t["access_token"].as_str().unwrap();
        assert_eq!(
            sandbox(&app, "/sandbox/v1/accounts", token).await.status(),
            200
        );
        let me: Value = app.get("/api/v1/me").await.json().await.unwrap();
        let csrf = me["csrf_token"].as_str().unwrap();
        let gid = t["grant_id"].as_str().unwrap();
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/me/grants/{gid}")))
            .header("X-CSRF-Token", csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let started = Instant::now();
        while sandbox(&app, "/sandbox/v1/accounts", token).await.status() != 401 {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{backend:?}: sandbox still accepts"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = app
            .post_token(
                DEMO,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", t["refresh_token"].as_str().unwrap()),
                ],
            )
            .await;
        assert_eq!(r.status(), 400);
        assert_eq!(app.post_introspect(DEMO, token).await["active"], false);
        app.stop().await;
    }
}
