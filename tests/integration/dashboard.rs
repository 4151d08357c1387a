//! Customer dashboard and /api/v1/me/grants.

use diesel::prelude::*;
use e2e_tests::dashboard::*;
use e2e_tests::oauth::*;
use e2e_tests::{TestApp, backends, spawn_demo_app};
use platform::storage::schema::accounts;
use serde_json::{Value, json};

const DEMO: (&str, &str) = (DEMO_CLIENT, DEMO_SECRET);

async fn account(app: &TestApp, id: &str) -> (String, String) {
    let id = id.to_string();
    app.platform
        .db
        .run(move |c| {
            Ok(accounts::table
                .filter(accounts::id.eq(id))
                .select((accounts::name, accounts::masked_number))
                .first(c)?)
        })
        .await
        .unwrap()
}

async fn page(app: &TestApp, path: &str) -> String {
    let r = app.get(path).await;
    assert_eq!(r.status(), 200, "{path}");
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.text().await.unwrap()
}

async fn list(app: &TestApp) -> Vec<Value> {
    let r = app.get("/api/v1/me/grants").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["grants"].as_array().unwrap().clone()
}

/// The part of the apps page between `<section id="{id}">` and the next top-level section.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let marker = format!("<section id=\"{id}\">");
    let start = html.find(&marker).expect("section present");
    let rest = &html[start + marker.len()..];
    let end = rest.find("<section id=\"").unwrap_or(rest.len());
    &rest[..end]
}

#[tokio::test]
async fn dashboard_shows_connected_apps_with_their_narrowed_scope() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let alice = app.account_ids("alice").await;
        let tokens = connect_app(&app, DEMO, DEMO_REDIRECT, &alice[1]).await;
        let grant_id = tokens["grant_id"].as_str().unwrap().to_string();
        insert_unverified_client(
            &app,
            "c_unverified",
            DEMO_REDIRECT,
            "cs_unverified-secret-0123456789abcdef",
        )
        .await;
        let other = connect_app(
            &app,
            ("c_unverified", "cs_unverified-secret-0123456789abcdef"),
            DEMO_REDIRECT,
            &alice[0],
        )
        .await;
        let other_id = other["grant_id"].as_str().unwrap().to_string();

        // The page: names, masked numbers, plain-language actions, window, merchants, labels.
        let html = page(&app, "/account/apps").await;
        let (name1, masked1) = account(&app, &alice[1]).await;
        let (_, masked0) = account(&app, &alice[0]).await;
        let bean = merchant_name(&app, "m_bean_there").await;
        let active = section(&html, "active");
        assert!(
            active.contains(&grant_id) && active.contains(&other_id),
            "{backend:?}"
        );
        let demo_card = active
            .split("<section class=\"app\"")
            .find(|c| c.contains(&grant_id))
            .unwrap();
        assert!(demo_card.contains("demo-client"), "{demo_card}");
        assert!(
            demo_card.contains("Operated by <strong>Demo Fintech Ltd</strong>"),
            "verified legal name"
        );
        assert!(
            demo_card.contains("A sandbox app"),
            "the same line as the consent page"
        );
        assert!(demo_card.contains(&name1) && demo_card.contains(&masked1));
        assert!(!demo_card.contains(&masked0), "only the chosen account");
        assert!(demo_card.contains("See the transactions on those accounts"));
        assert!(
            !demo_card.contains("See the balances"),
            "balances were narrowed away"
        );
        assert!(demo_card.contains("From 1 Feb 2026 to 31 Mar 2026"));
        assert!(demo_card.contains(&bean) && !demo_card.contains("Fresh Market"));
        assert!(demo_card.contains("Access ends on") && demo_card.contains("Last used"));
        assert!(demo_card.contains(&format!("action=\"/account/apps/{grant_id}/revoke\"")));
        let other_card = active
            .split("<section class=\"app\"")
            .find(|c| c.contains(&other_id))
            .unwrap();
        assert!(other_card.contains("Sandbox, unverified"), "{other_card}");
        assert!(!other_card.contains("Demo Fintech Ltd"));
        assert!(section(&html, "past").contains("None."));
        assert!(html.contains("action=\"/logout\""), "logout form");
        assert!(html.contains("action=\"/account/apps/revoke-all\""));

        // The JSON list and detail say the same.
        let grants = list(&app).await;
        assert_eq!(grants.len(), 2);
        let g = grants.iter().find(|g| g["grant_id"] == grant_id).unwrap();
        assert_eq!(g["status"], "authorized");
        assert_eq!(g["active"], true);
        assert_eq!(g["client_id"], DEMO_CLIENT);
        assert_eq!(g["verified"], true);
        assert_eq!(g["verified_legal_name"], "Demo Fintech Ltd");
        assert_eq!(g["accounts"][0]["id"], alice[1]);
        assert_eq!(g["accounts"][0]["masked_number"], masked1);
        assert_eq!(g["accounts"].as_array().unwrap().len(), 1);
        assert_eq!(
            g["merchants"],
            json!([{"id": "m_bean_there", "name": bean}])
        );
        assert_eq!(
            g["authorization_details"], tokens["authorization_details"],
            "the same details the tokens carry"
        );
        let o = grants.iter().find(|g| g["grant_id"] == other_id).unwrap();
        assert_eq!(o["verified"], false);
        assert!(o.get("verified_legal_name").is_none());
        assert_eq!(o["operator_label"], "Sandbox, unverified");

        let r = app.get(&format!("/api/v1/me/grants/{grant_id}")).await;
        assert_eq!(r.status(), 200);
        let d: Value = r.json().await.unwrap();
        assert_eq!(&d, g);
        assert_eq!(d["client_name"], "demo-client");
        assert_eq!(
            d["authorization_details"][0]["actions"],
            json!(["accounts:read", "transactions:read"])
        );
        assert!(d["expires_at"].is_string() && d["created_at"].is_string());

        // Unknown or malformed ids: 404, as problem details.
        for id in ["g_doesnotexist", "not-a-grant", "g_%2E%2E%2Fx"] {
            let r = app.get(&format!("/api/v1/me/grants/{id}")).await;
            assert_eq!(r.status(), 404, "{id}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            assert_eq!(app.get(&format!("/account/apps/{id}")).await.status(), 404);
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn revoking_from_the_page_ends_the_grant_everywhere() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let alice = app.account_ids("alice").await;
        let tokens = connect_app(&app, DEMO, DEMO_REDIRECT, &alice[0]).await;
        let grant_id = tokens["grant_id"].as_str().unwrap().to_string();
        let access = tokens["access_token"].as_str().unwrap();
        let refresh_token = tokens["refresh_token"].as_str().unwrap();
        let html = page(&app, "/account/apps").await;
        let csrf = csrf_from(&html);
        let path = format!("/account/apps/{grant_id}/revoke");

        // Missing or wrong CSRF token: 403, nothing changes.
        for form in [vec![], vec![("csrf_token", "csrf_wrong-token-value")]] {
            let r = app.post_form(&path, None, &form).await;
            assert_eq!(r.status(), 403, "{backend:?}");
        }
        assert_eq!(grant_status(&app, &grant_id).await.0, "authorized");
        assert_eq!(app.post_introspect(DEMO, access).await["active"], true);

        let r = app.post_form(&path, None, &[("csrf_token", &csrf)]).await;
        assert_eq!(r.status(), 303);
        // Back to the list, which confirms the revocation.
        assert_eq!(location(&r), format!("/account/apps?revoked={grant_id}"));
        assert_eq!(
            grant_status(&app, &grant_id).await,
            ("revoked".to_string(), Some("customer".to_string()))
        );
        let (status, body) = refresh(&app, DEMO, refresh_token).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_grant");
        let intro = app.post_introspect(DEMO, access).await;
        assert_eq!(intro["active"], false);

        // It moved to the past section, without a revoke button.
        let html = page(&app, "/account/apps").await;
        assert!(!section(&html, "active").contains(&grant_id));
        let past = section(&html, "past");
        assert!(past.contains(&grant_id) && past.contains("Ended by you"));
        assert!(!past.contains(&path));

        // Idempotent: revoking again is harmless.
        let r = app.post_form(&path, None, &[("csrf_token", &csrf)]).await;
        assert_eq!(r.status(), 303);

        // The history, newest first, in plain language.
        let detail = page(&app, &format!("/account/apps/{grant_id}")).await;
        assert!(
            detail.contains("You ended this app&#39;s access")
                || detail.contains("You ended this app's access"),
            "{detail}"
        );
        assert!(detail.contains("The app received access to your data"));
        assert!(detail.contains("You allowed this app access"));
        let r = app
            .get(&format!("/api/v1/me/grants/{grant_id}/activity"))
            .await;
        assert_eq!(r.status(), 200);
        let a: Value = r.json().await.unwrap();
        let actions: Vec<&str> = a["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions.first(), Some(&"grant.revoked"), "{actions:?}");
        assert!(actions.contains(&"token.issued"));
        assert_eq!(actions.last(), Some(&"consent.approved"), "{actions:?}");
        assert_eq!(
            actions.iter().filter(|a| **a == "grant.revoked").count(),
            1,
            "the second revocation was a no-op"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn revoke_all_from_the_page_and_the_api() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let alice = app.account_ids("alice").await;
        let t1 = connect_app(&app, DEMO, DEMO_REDIRECT, &alice[0]).await;
        let t2 = connect_app(&app, DEMO, DEMO_REDIRECT, &alice[1]).await;
        let html = page(&app, "/account/apps").await;
        let csrf = csrf_from(&html);
        let r = app
            .post_form(
                "/account/apps/revoke-all",
                None,
                &[("csrf_token", "csrf_nope")],
            )
            .await;
        assert_eq!(r.status(), 403);
        assert!(list(&app).await.iter().all(|g| g["active"] == true));
        let r = app
            .post_form("/account/apps/revoke-all", None, &[("csrf_token", &csrf)])
            .await;
        assert_eq!(r.status(), 303, "{backend:?}");
        assert_eq!(location(&r), "/account/apps?revoked=all");
        for t in [&t1, &t2] {
            let id = t["grant_id"].as_str().unwrap();
            assert_eq!(grant_status(&app, id).await.0, "revoked");
            let (status, _) = refresh(&app, DEMO, t["refresh_token"].as_str().unwrap()).await;
            assert_eq!(status, 400);
        }
        let html = page(&app, "/account/apps").await;
        assert!(section(&html, "active").contains("No apps are connected"));

        // The JSON equivalent, with the X-CSRF-Token header.
        let t3 = connect_app(&app, DEMO, DEMO_REDIRECT, &alice[0]).await;
        let t4 = connect_app(&app, DEMO, DEMO_REDIRECT, &alice[1]).await;
        let url = app.url("/api/v1/me/grants/revoke-all");
        let r = app.client.post(&url).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let r = app
            .client
            .post(&url)
            .header("X-CSRF-Token", "csrf_wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(
            list(&app)
                .await
                .iter()
                .filter(|g| g["active"] == true)
                .count(),
            2
        );
        let csrf = me_csrf(&app, &app.client).await;
        let r = app
            .client
            .post(&url)
            .header("X-CSRF-Token", &csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["revoked"], 2);
        for t in [&t3, &t4] {
            assert_eq!(
                app.post_introspect(DEMO, t["access_token"].as_str().unwrap())
                    .await["active"],
                false
            );
        }
        // Nothing left to revoke.
        let r = app
            .client
            .post(&url)
            .header("X-CSRF-Token", &csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 0);
        app.stop().await;
    }
}

#[tokio::test]
async fn json_api_revokes_one_grant_with_the_csrf_header() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let alice = app.account_ids("alice").await;
        let tokens = connect_app(&app, DEMO, DEMO_REDIRECT, &alice[0]).await;
        let keep = connect_app(&app, DEMO, DEMO_REDIRECT, &alice[1]).await;
        let grant_id = tokens["grant_id"].as_str().unwrap();
        let me: Value = app.get("/api/v1/me").await.json().await.unwrap();
        assert_eq!(me["username"], "alice");
        let csrf = me["csrf_token"].as_str().unwrap().to_string();
        let url = app.url(&format!("/api/v1/me/grants/{grant_id}"));

        for header in [None, Some("csrf_wrong"), Some("")] {
            let mut req = app.client.delete(&url);
            if let Some(h) = header {
                req = req.header("X-CSRF-Token", h);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 403, "{header:?}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
        assert_eq!(grant_status(&app, grant_id).await.0, "authorized");

        let r = app
            .client
            .delete(&url)
            .header("X-CSRF-Token", &csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{backend:?}");
        let (status, body) = refresh(&app, DEMO, tokens["refresh_token"].as_str().unwrap()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        let intro = app
            .post_introspect(DEMO, tokens["access_token"].as_str().unwrap())
            .await;
        assert_eq!(intro["active"], false);
        // The other grant is untouched.
        assert_eq!(
            grant_status(&app, keep["grant_id"].as_str().unwrap())
                .await
                .0,
            "authorized"
        );
        let (status, _) = refresh(&app, DEMO, keep["refresh_token"].as_str().unwrap()).await;
        assert_eq!(status, 200);

        // Idempotent: 204 again, nothing recorded twice.
        let r = app
            .client
            .delete(&url)
            .header("X-CSRF-Token", &csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let d: Value = app
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(d["status"], "revoked");
        assert_eq!(d["active"], false);
        assert_eq!(d["revoked_by"], "customer");
        assert!(d["revoked_at"].is_string());

        let a: Value = app
            .get(&format!("/api/v1/me/grants/{grant_id}/activity"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(a["grant_id"], grant_id);
        let events = a["events"].as_array().unwrap();
        assert_eq!(events[0]["action"], "grant.revoked");
        assert_eq!(events[0]["description"], "You ended this app's access");
        assert!(events.iter().any(|e| e["action"] == "token.issued"
            && e["description"] == "The app received access to your data"));
        // The other grant's history shows its refresh.
        let a: Value = app
            .get(&format!(
                "/api/v1/me/grants/{}/activity",
                keep["grant_id"].as_str().unwrap()
            ))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(a["events"][0]["action"], "token.refreshed");

        // Unknown grant: 404 (with a valid CSRF header).
        let r = app
            .client
            .delete(app.url("/api/v1/me/grants/g_unknown"))
            .header("X-CSRF-Token", &csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        app.stop().await;
    }
}

#[tokio::test]
async fn another_customer_can_neither_see_nor_revoke_a_grant() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let alice = app.account_ids("alice").await;
        let tokens = connect_app(&app, DEMO, DEMO_REDIRECT, &alice[0]).await;
        let grant_id = tokens["grant_id"].as_str().unwrap();
        let bob = customer_client(&app, "bob").await;
        let bob_csrf = me_csrf(&app, &bob).await;

        let v: Value = bob
            .get(app.url("/api/v1/me/grants"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["grants"], json!([]), "{backend:?}");
        for path in [
            format!("/api/v1/me/grants/{grant_id}"),
            format!("/api/v1/me/grants/{grant_id}/activity"),
            format!("/account/apps/{grant_id}"),
        ] {
            let r = bob.get(app.url(&path)).send().await.unwrap();
            assert_eq!(r.status(), 404, "{path}");
        }
        let r = bob
            .delete(app.url(&format!("/api/v1/me/grants/{grant_id}")))
            .header("X-CSRF-Token", &bob_csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let html = bob
            .get(app.url("/account/apps"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!html.contains(grant_id));
        let r = bob
            .post(app.url(&format!("/account/apps/{grant_id}/revoke")))
            .form(&[("csrf_token", bob_csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        // Bob's revoke-all ends only bob's grants.
        let r = bob
            .post(app.url("/api/v1/me/grants/revoke-all"))
            .header("X-CSRF-Token", &bob_csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 0);
        let r = bob
            .post(app.url("/account/apps/revoke-all"))
            .form(&[("csrf_token", bob_csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        // Alice's CSRF token does not work in bob's session either.
        let alice_csrf = me_csrf(&app, &app.client).await;
        let r = bob
            .delete(app.url(&format!("/api/v1/me/grants/{grant_id}")))
            .header("X-CSRF-Token", &alice_csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);

        assert_eq!(grant_status(&app, grant_id).await.0, "authorized");
        assert_eq!(
            app.post_introspect(DEMO, tokens["access_token"].as_str().unwrap())
                .await["active"],
            true
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn without_a_session_pages_redirect_to_login_and_json_is_401() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        let r = app.get("/account/apps").await;
        assert_eq!(r.status(), 303);
        assert_eq!(location(&r), "/login?next=/account/apps");
        let r = app.get("/account/apps/g_abc").await;
        assert_eq!(r.status(), 303);
        assert_eq!(location(&r), "/login?next=/account/apps/g_abc");
        for path in ["/account/apps/g_abc/revoke", "/account/apps/revoke-all"] {
            let r = app.post_form(path, None, &[("csrf_token", "x")]).await;
            assert_eq!(r.status(), 303, "{path}");
            assert!(location(&r).starts_with("/login"));
        }
        let c = &app.client;
        for req in [
            c.get(app.url("/api/v1/me")),
            c.get(app.url("/api/v1/me/grants")),
            c.get(app.url("/api/v1/me/grants/g_abc")),
            c.get(app.url("/api/v1/me/grants/g_abc/activity")),
            c.delete(app.url("/api/v1/me/grants/g_abc"))
                .header("X-CSRF-Token", "x"),
            c.post(app.url("/api/v1/me/grants/revoke-all"))
                .header("X-CSRF-Token", "x"),
        ] {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 401, "{backend:?}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
        // A forged session cookie is no session.
        let r = c
            .get(app.url("/api/v1/me/grants"))
            .header("cookie", "consent_customer=sess_forged")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        // After logout the session is gone.
        app.login_customer("alice").await;
        let html = page(&app, "/account/apps").await;
        let r = app
            .post_form("/logout", None, &[("csrf_token", &csrf_from(&html))])
            .await;
        assert_eq!(r.status(), 303);
        assert_eq!(app.get("/account/apps").await.status(), 303);
        app.stop().await;
    }
}

#[tokio::test]
async fn dashboard_in_a_real_browser() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let alice = app.account_ids("alice").await;
        let tokens = connect_app(&app, DEMO, DEMO_REDIRECT, &alice[1]).await;
        let grant_id = tokens["grant_id"].as_str().unwrap();
        let (_, masked) = account(&app, &alice[1]).await;
        let shot = e2e_tests::browser::screenshot_path("dashboard", backend);
        let Some(r) = e2e_tests::browser::run(
            "dashboard.mjs",
            &[
                &app.address,
                "alice",
                DEMO_PASSWORD,
                grant_id,
                shot.to_str().unwrap(),
            ],
        )
        .await
        else {
            return;
        };
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["a11y"], json!([]), "axe-core and reflow");
        assert!(
            r["confirmation"]
                .as_str()
                .unwrap()
                .contains("can no longer see your data"),
            "{r}"
        );
        assert_eq!(r["activeBefore"], json!([grant_id]), "{r}");
        assert!(r["cardText"].as_str().unwrap().contains(&masked), "{r}");
        assert!(r["cardText"].as_str().unwrap().contains("Demo Fintech Ltd"));
        assert_eq!(r["activeAfter"], json!([]), "{r}");
        assert_eq!(r["pastAfter"], json!([grant_id]), "{r}");
        assert!(
            r["historyText"]
                .as_str()
                .unwrap()
                .contains("You ended this app")
        );
        assert_eq!(grant_status(&app, grant_id).await.0, "revoked");
        let intro = app
            .post_introspect(DEMO, tokens["access_token"].as_str().unwrap())
            .await;
        assert_eq!(intro["active"], false);
        app.stop().await;
    }
}

/// A login never sends the customer off the site, whatever `next` carries (RFC 9700 4.11; the
/// classic bypasses: tab, newline, backslash, encoded slashes, schemes, userinfo).
#[tokio::test]
async fn login_never_redirects_off_site() {
    let cases = [
        ("/%09/evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("/\n/evil.example", "/"),
        ("/%0a/evil.example", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("/%2F%2Fevil.example", "/"),
        ("/%252F%252Fevil.example", "/"),
        ("https://evil.example/", "/"),
        ("https:evil.example", "/"),
        ("//user@evil.example", "/"),
        ("/account/apps", "/account/apps"),
    ];
    // Logins per address are limited: a fresh server for every few attempts.
    for batch in cases.chunks(7) {
        let app = spawn_demo_app(backends()[0]).await;
        for &(next, expected) in batch {
            try_login_with_next(&app, next, expected).await;
        }
        app.stop().await;
    }
}

async fn try_login_with_next(app: &TestApp, next: &str, expected: &str) {
    {
        // The login page carries only the cleaned destination.
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("next", next)
            .finish();
        let page = app.get(&format!("/login?{q}")).await.text().await.unwrap();
        assert!(!page.contains("evil.example"), "{next:?}: {page}");
        let csrf = csrf_from(&page);
        let r = app
            .post_form(
                "/login",
                None,
                &[
                    ("csrf_token", &csrf),
                    ("username", "alice"),
                    ("password", DEMO_PASSWORD),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(r.status(), 303, "{next:?}");
        assert_eq!(location(&r), expected, "{next:?}");
    }
}
