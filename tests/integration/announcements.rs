//! Every path that ends a grant or revokes a token announces it once committed: another
//! instance whose periodic sync is a minute away (`server.revocation_sync_interval = 60s` on
//! both) still refuses at once. A path that committed without announcing would leave its feed
//! rows unlinked and the other instance unaware for that minute, and fail here. Without Redis
//! (SQLite, the in-process cache: one instance only) the observer is the instance itself, woken
//! by its own announcement.

use std::time::{Duration, Instant};

use e2e_tests::dashboard::{connect_app, me_csrf, refresh};
use e2e_tests::oauth::*;
use e2e_tests::{TestApp, backends, spawn_app_with};
use platform::config::ConfigDuration;
use reqwest::Method;
use serde_json::Value;

const DEMO: (&str, &str) = (DEMO_CLIENT, DEMO_SECRET);
const AT_ONCE: Duration = Duration::from_secs(1);

/// Waits (at most [`AT_ONCE`]) until `b`'s revocation list has the grant.
async fn b_knows_grant(b: &TestApp, path: &str, grant: &str) {
    let list = b.state_revocations();
    let started = Instant::now();
    while list.is_revoked(grant, &[]) != Ok(true) {
        assert!(
            started.elapsed() < AT_ONCE,
            "{:?}: {path} ended {grant} but the other instance did not hear of it",
            b.backend
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (at most [`AT_ONCE`]) until `b`'s sandbox API refuses the access token.
async fn b_refuses_token(b: &TestApp, path: &str, access: &str) {
    let started = Instant::now();
    loop {
        let r = b
            .client
            .get(b.url("/sandbox/v1/accounts"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap();
        if r.status() == 401 {
            return;
        }
        assert!(
            started.elapsed() < AT_ONCE,
            "{:?}: {path} revoked the token but the other instance still accepts it",
            b.backend
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn grant_of(tokens: &Value) -> String {
    tokens["grant_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_revocation_path_reaches_another_instance_at_once() {
    for backend in backends() {
        let a = spawn_app_with(
            backend,
            consent::ServeOptions {
                demo: true,
                ..Default::default()
            },
            |s| s.server.revocation_sync_interval = ConfigDuration::secs(60),
        )
        .await;
        let other = a.another_instance().await;
        let b = if a.settings.redis.url.is_some() {
            &other
        } else {
            &a
        };
        a.login_customer("alice").await;
        let acc = a.account_ids("alice").await[0].clone();

        // The customer revokes one app (dashboard JSON API).
        let t = connect_app(&a, DEMO, DEMO_REDIRECT, &acc).await;
        let csrf = me_csrf(&a, &a.client).await;
        let grant = grant_of(&t);
        let r = a
            .client
            .delete(a.url(&format!("/api/v1/me/grants/{grant}")))
            .header("X-CSRF-Token", &csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{backend:?}");
        b_knows_grant(b, "DELETE /api/v1/me/grants/{id}", &grant).await;

        // The customer revokes everything.
        let t = connect_app(&a, DEMO, DEMO_REDIRECT, &acc).await;
        let r = a
            .client
            .post(a.url("/api/v1/me/grants/revoke-all"))
            .header("X-CSRF-Token", &csrf)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{backend:?}: {}", r.status());
        b_knows_grant(b, "POST /api/v1/me/grants/revoke-all", &grant_of(&t)).await;

        // The client ends the grant through its API.
        let t = connect_app(&a, DEMO, DEMO_REDIRECT, &acc).await;
        let grant = grant_of(&t);
        let r = a
            .client
            .delete(a.url(&format!("/api/v1/grants/{grant}")))
            .basic_auth(DEMO.0, Some(DEMO.1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        b_knows_grant(b, "DELETE /api/v1/grants/{id}", &grant).await;

        // RFC 7009: a refresh token (ends the grant), then an access token (lists its ids).
        let t = connect_app(&a, DEMO, DEMO_REDIRECT, &acc).await;
        let rt = t["refresh_token"].as_str().unwrap();
        let r = a
            .post_form("/oauth2/revoke", Some(DEMO), &[("token", rt)])
            .await;
        assert_eq!(r.status(), 200);
        b_knows_grant(b, "/oauth2/revoke (refresh token)", &grant_of(&t)).await;
        let t = connect_app(&a, DEMO, DEMO_REDIRECT, &acc).await;
        let access = t["access_token"].as_str().unwrap();
        let r = a
            .post_form("/oauth2/revoke", Some(DEMO), &[("token", access)])
            .await;
        assert_eq!(r.status(), 200);
        b_refuses_token(b, "/oauth2/revoke (access token)", access).await;
        // Revoking it again changes nothing: the feed does not grow (a client cannot inflate
        // what every instance syncs by repeating one revocation).
        let feed_len = |a: &TestApp| {
            let db = a.platform.db.clone();
            async move {
                db.run(|c| platform::revocation::read_feed(c, 0, 100_000))
                    .await
                    .unwrap()
                    .len()
            }
        };
        let before = feed_len(&a).await;
        for _ in 0..3 {
            let r = a
                .post_form("/oauth2/revoke", Some(DEMO), &[("token", access)])
                .await;
            assert_eq!(r.status(), 200);
        }
        assert_eq!(
            feed_len(&a).await,
            before,
            "{backend:?}: repeated revocation grew the feed"
        );

        // A replayed refresh token ends the grant.
        let t = connect_app(&a, DEMO, DEMO_REDIRECT, &acc).await;
        let rt = t["refresh_token"].as_str().unwrap();
        assert_eq!(refresh(&a, DEMO, rt).await.0, 200);
        assert_eq!(refresh(&a, DEMO, rt).await.0, 400);
        b_knows_grant(b, "refresh token replay", &grant_of(&t)).await;

        // A replayed authorization code ends the grant.
        let (code, verifier) = a
            .demo_code(&[
                ("decision", "approve"),
                ("account", &acc),
                ("action", "accounts:read"),
            ])
            .await;
        let exchange = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", DEMO_REDIRECT),
            ("code_verifier", verifier.as_str()),
        ];
        let r = a.post_token(DEMO, &exchange).await;
        assert_eq!(r.status(), 200);
        let t: Value = r.json().await.unwrap();
        assert_eq!(a.post_token(DEMO, &exchange).await.status(), 400);
        b_knows_grant(b, "authorization code replay", &grant_of(&t)).await;

        // A developer deletes a client: its grants end.
        let dev = a.developer_token("announce@fintech.example").await;
        let (cid, secret) = a.sandbox_client(&dev).await;
        let t = connect_app(&a, (&cid, &secret), "http://127.0.0.1:9000/callback", &acc).await;
        let r = a
            .api(
                Method::DELETE,
                &format!("/api/v1/clients/{cid}"),
                Some(&dev),
                None,
            )
            .await;
        assert_eq!(r.status(), 204);
        b_knows_grant(b, "DELETE /api/v1/clients/{id}", &grant_of(&t)).await;

        // Bank staff suspend a client (four eyes): its grants end.
        let (cid, _) = a.sandbox_client(&dev).await;
        let ids = e2e_tests::lifecycle::insert_grants(
            &a,
            &cid,
            1,
            chrono::Duration::days(30),
            chrono::Duration::hours(1),
        )
        .await;
        let (ops_a, ops_b) = (
            a.staff_token("announce-a").await,
            a.staff_token("announce-b").await,
        );
        let why = serde_json::json!({"justification": "fraud reports from three customers"});
        let r = a
            .api(
                Method::POST,
                &format!("/api/v1/admin/clients/{cid}/suspension"),
                Some(&ops_a),
                Some(&why),
            )
            .await;
        assert_eq!(r.status(), 202, "{backend:?}");
        let rid = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let r = a
            .api(
                Method::POST,
                &format!("/api/v1/admin/approvals/{rid}/approve"),
                Some(&ops_b),
                Some(&serde_json::json!({"justification": "confirmed with the fraud team"})),
            )
            .await;
        assert_eq!(r.status(), 200, "{backend:?}");
        b_knows_grant(b, "staff suspension", &ids[0]).await;

        // The lifecycle sweep ends an expired grant.
        let ids = e2e_tests::lifecycle::insert_grants(
            &a,
            DEMO_CLIENT,
            1,
            chrono::Duration::seconds(-1),
            chrono::Duration::hours(1),
        )
        .await;
        let report = consent::lifecycle::run_once(&a.platform).await.unwrap();
        assert_eq!(report.expired, 1, "{backend:?}");
        b_knows_grant(b, "lifecycle sweep", &ids[0]).await;

        other.stop().await;
        a.stop().await;
    }
}
