//! Hostile holders against the running server: tokens with blocks written to burn CPU are
//! refused with a reason on every path that verifies Biscuits, cannot take the HTTP workers,
//! and a full verification pool answers 503 with `Retry-After`, never a 500.

use std::time::Duration;

use biscuit_auth::{Algorithm, Biscuit, BlockBuilder, PublicKey};
use e2e_tests::oauth::{DEMO_CLIENT, DEMO_SECRET};
use e2e_tests::{Backend, TestApp, backends, spawn_app_with, spawn_demo_app};
use serde_json::Value;

/// `token` with one more block (what any holder can do offline, with no key).
fn append(app: &TestApp, token: &str, source: &str) -> String {
    let key = app.oauth.keys.current().active;
    let root = PublicKey::from_bytes(&key.public_key().to_bytes(), Algorithm::Ed25519).unwrap();
    Biscuit::from_base64(token, root)
        .unwrap()
        .append(BlockBuilder::new().code(source).unwrap())
        .unwrap()
        .to_base64()
        .unwrap()
}

fn facts(n: usize) -> String {
    (0..n).map(|i| format!("n({i});")).collect()
}

/// The block from the report: 120 facts and a four-way join that matches nothing.
fn reported_block() -> String {
    format!(
        "{} check if n($a), n($b), n($c), n($d), $a + $b + $c + $d < 0;",
        facts(120)
    )
}

/// Admitted, and close to the most work the limits allow (a few milliseconds): a two-way join
/// over 26 facts that matches nothing (`cargo bench -p grants --bench hostile` finds the largest
/// admitted size of this shape).
fn costly_block() -> String {
    format!("{} check if n($a), n($b), $a + $b < 0;", facts(26))
}

async fn accounts(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/sandbox/v1/accounts"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn hostile_blocks_are_refused_with_a_reason_on_every_path() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let tokens = app.approved_tokens().await;
        let access = tokens["access_token"].as_str().unwrap();
        let hostile = append(&app, access, &reported_block());

        // Resource server (sandbox): 401 invalid_token, reason in the body and the header.
        let r = accounts(&app, &hostile).await;
        assert_eq!(r.status(), 401, "{backend:?}");
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        assert!(challenge.contains("120 facts"), "{challenge}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["status"], 401);
        assert!(
            problem["detail"].as_str().unwrap().contains("more than 64"),
            "{problem}"
        );
        // Usage reports verify the same way.
        let r = app
            .client
            .post(app.url("/api/v1/usage"))
            .bearer_auth(&hostile)
            .json(&serde_json::json!({"operation": "accounts:read"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        // Introspection: simply inactive.
        let v = app
            .post_introspect((DEMO_CLIENT, DEMO_SECRET), &hostile)
            .await;
        assert_eq!(v, serde_json::json!({"active": false}));
        // Revocation (RFC 7009): 200 as for any unknown token, and nothing is listed.
        let (before, _) = feed_len(&app).await;
        let r = app
            .post_form(
                "/oauth2/revoke",
                Some((DEMO_CLIENT, DEMO_SECRET)),
                &[("token", hostile.as_str())],
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(feed_len(&app).await.0, before);
        // The token it came from still works: nothing was spent on it.
        assert_eq!(accounts(&app, access).await.status(), 200);
    }
}

async fn feed_len(app: &TestApp) -> (usize, i64) {
    let v: Value = app
        .client
        .get(app.url("/oauth2/revocations?limit=1000"))
        .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        v["revocations"].as_array().unwrap().len(),
        v["next_cursor"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn eight_hostile_holders_do_not_stop_ordinary_requests() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    app.login_customer("alice").await;
    let tokens = app.approved_tokens().await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let hostile = [
        append(&app, &access, &reported_block()),
        append(&app, &access, &costly_block()),
    ];
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (client, url, token) = (
            app.client.clone(),
            app.url("/sandbox/v1/accounts"),
            hostile[i % 2].clone(),
        );
        attackers.spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..10 {
                let r = client.get(&url).bearer_auth(&token).send().await.unwrap();
                statuses.push(r.status().as_u16());
            }
            statuses
        });
    }
    // Meanwhile ordinary requests and liveness keep being answered.
    for _ in 0..20 {
        let r = tokio::time::timeout(Duration::from_secs(5), accounts(&app, &access))
            .await
            .expect("an ordinary request is answered while attackers run");
        assert_eq!(r.status(), 200);
        let r = tokio::time::timeout(Duration::from_secs(5), app.get_healthz())
            .await
            .expect("healthz answers");
        assert_eq!(r.status(), 200);
    }
    while let Some(statuses) = attackers.join_next().await {
        for s in statuses.unwrap() {
            // Refused at admission (401), denied by its own check (403), or turned away by a
            // full pool (503): never accepted, never a 500.
            assert!([401, 403, 503].contains(&s), "hostile request answered {s}");
        }
    }
}

#[tokio::test]
async fn a_full_verification_pool_answers_503_with_retry_after() {
    let app = spawn_app_with(
        Backend::Sqlite,
        consent::ServeOptions {
            demo: true,
            ..Default::default()
        },
        |s| {
            s.server.verify_threads = 1;
            s.server.verify_queue = 1;
        },
    )
    .await;
    app.login_customer("alice").await;
    let tokens = app.approved_tokens().await;
    let costly = append(
        &app,
        tokens["access_token"].as_str().unwrap(),
        &costly_block(),
    );
    let r = accounts(&app, &costly).await;
    assert_eq!(r.status(), 403, "admitted, then denied by its own check");
    let mut seen_503 = false;
    for _round in 0..5 {
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let (client, url, token) = (
                app.client.clone(),
                app.url("/sandbox/v1/accounts"),
                costly.clone(),
            );
            requests
                .spawn(async move { client.get(&url).bearer_auth(&token).send().await.unwrap() });
        }
        while let Some(r) = requests.join_next().await {
            let r = r.unwrap();
            match r.status().as_u16() {
                403 => {}
                503 => {
                    seen_503 = true;
                    assert_eq!(r.headers()["retry-after"], "1");
                    let p: Value = r.json().await.unwrap();
                    assert_eq!(p["status"], 503);
                    assert!(p["detail"].as_str().unwrap().contains("capacity"), "{p}");
                }
                other => panic!("unexpected status {other}"),
            }
        }
        if seen_503 {
            break;
        }
    }
    assert!(
        seen_503,
        "32 concurrent costly verifications never filled a pool of 1 + 1"
    );
}
