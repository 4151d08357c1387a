//! Staff access to a customer's grants (issue 18): asked with a justification, approved by a
//! second staff member, taken once as a Biscuit credential for that customer, checked at every
//! use, revocable, audited, and shown in the customer's history by role and category.

use e2e_tests::dashboard::customer_client;
use e2e_tests::oauth::customer_id;
use e2e_tests::{TestApp, backends, spawn_demo_app};
use reqwest::{Method, Response};
use serde_json::{Value, json};

async fn answer(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn ask(app: &TestApp, staff: &str, customer: &str, category: &str) -> (u16, Value) {
    let path = format!("/api/v1/admin/customers/{customer}/access-requests");
    let body = json!({
        "justification": "Customer complains about an app reading their data",
        "category": category,
        "reference": "CASE-2026-0042",
    });
    answer(app.api(Method::POST, &path, Some(staff), Some(&body)).await).await
}

async fn post(app: &TestApp, staff: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    answer(app.api(Method::POST, path, Some(staff), body).await).await
}

/// `approver` approves `request` (with a justification), then `requester` takes its credential:
/// the answer to taking it.
async fn approved_credential(
    app: &TestApp,
    requester: &str,
    approver: &str,
    request: &str,
) -> (u16, Value) {
    let why = json!({ "justification": "Checked the ticket, the change is needed" });
    let approve = format!("/api/v1/admin/approvals/{request}/approve");
    assert_eq!(post(app, approver, &approve, Some(&why)).await.0, 200);
    let take = format!("/api/v1/admin/approvals/{request}/credential");
    post(app, requester, &take, None).await
}

async fn read_grants(
    app: &TestApp,
    staff: &str,
    customer: &str,
    credential: Option<&str>,
) -> (u16, Value) {
    let mut r = app
        .client
        .get(app.url(&format!("/api/v1/admin/customers/{customer}/grants")))
        .bearer_auth(staff);
    if let Some(c) = credential {
        r = r.header("X-Staff-Credential", c);
    }
    answer(r.send().await.unwrap()).await
}

#[tokio::test]
async fn staff_read_a_customers_grants_only_with_an_approved_credential_of_their_own() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let grant = app.approved_tokens().await["grant_id"]
            .as_str()
            .unwrap()
            .to_string();
        let alice = customer_id(&app, "alice").await;
        let bob = customer_id(&app, "bob").await;
        let a = app.staff_token("ops-a").await;
        let b = app.staff_token("ops-b").await;

        // No credential, no read.
        let (s, _) = read_grants(&app, &a, &alice, None).await;
        assert_eq!(s, 403, "{backend:?}");
        // Asking: a category from the list, an existing customer.
        let (s, v) = ask(&app, &a, &alice, "curiosity").await;
        assert_eq!(s, 400, "{v} {backend:?}");
        let (s, _) = ask(&app, &a, "cust_nobody", "complaint").await;
        assert_eq!(s, 404, "{backend:?}");
        let (s, v) = ask(&app, &a, &alice, "complaint").await;
        assert_eq!(s, 201, "{v} {backend:?}");
        let request = v["request_id"].as_str().unwrap().to_string();
        // One pending request per staff member and customer: the same member again is refused;
        // another member asks for a credential of their own.
        let (s, v) = ask(&app, &a, &alice, "complaint").await;
        assert_eq!(s, 400, "{v} {backend:?}");
        let (s, v) = ask(&app, &b, &alice, "complaint").await;
        assert_eq!(s, 201, "{v} {backend:?}");
        assert_ne!(v["request_id"].as_str(), Some(request.as_str()));
        let take = format!("/api/v1/admin/approvals/{request}/credential");
        // Not approved yet; not by the requester; not someone else's to take.
        assert_eq!(post(&app, &a, &take, None).await.0, 409, "{backend:?}");
        let approve = format!("/api/v1/admin/approvals/{request}/approve");
        let why = json!({ "justification": "Checked the complaint ticket, access is needed" });
        assert_eq!(
            post(&app, &a, &approve, Some(&why)).await.0,
            403,
            "{backend:?}"
        );
        assert_eq!(
            post(&app, &b, &approve, Some(&why)).await.0,
            200,
            "{backend:?}"
        );
        assert_eq!(post(&app, &b, &take, None).await.0, 404, "{backend:?}");
        let (s, v) = post(&app, &a, &take, None).await;
        assert_eq!(s, 201, "{v} {backend:?}");
        let credential = v["credential"].as_str().unwrap().to_string();
        let credential_id = v["credential_id"].as_str().unwrap().to_string();
        // Once per approval.
        assert_eq!(post(&app, &a, &take, None).await.0, 409, "{backend:?}");

        // Only its holder, only for that customer, only as issued.
        assert_eq!(
            read_grants(&app, &b, &alice, Some(&credential)).await.0,
            403
        );
        assert_eq!(read_grants(&app, &a, &bob, Some(&credential)).await.0, 403);
        // One character in the middle (the signed payload) changed.
        let mut tampered = credential.clone().into_bytes();
        let mid = tampered.len() / 2;
        tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(read_grants(&app, &a, &alice, Some(&tampered)).await.0, 403);
        assert_eq!(read_grants(&app, &a, &alice, Some("garbage")).await.0, 403);
        let (s, v) = read_grants(&app, &a, &alice, Some(&credential)).await;
        assert_eq!(s, 200, "{v} {backend:?}");
        assert!(
            v["grants"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["grant_id"] == grant),
            "{v}"
        );

        // Alice sees it in the app's history: bank staff, why, not who.
        let alice_web = customer_client(&app, "alice").await;
        let history: Value = alice_web
            .get(app.url(&format!("/api/v1/me/grants/{grant}/activity")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let seen = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "grant.viewed_by_staff")
            .unwrap_or_else(|| panic!("{history}"));
        assert_eq!(
            seen["description"],
            "Bank staff looked at this access to handle a complaint"
        );
        assert!(!history.to_string().contains("ops-a"), "{history}");

        // A colleague revokes it: no further reads.
        let revoke = format!("/api/v1/admin/credentials/{credential_id}/revocation");
        assert_eq!(post(&app, &b, &revoke, None).await.0, 204, "{backend:?}");
        assert_eq!(
            read_grants(&app, &a, &alice, Some(&credential)).await.0,
            403
        );
        assert_eq!(post(&app, &b, &revoke, None).await.0, 404, "{backend:?}");

        let actions = app.audit_actions().await;
        for expected in [
            "approval.requested",
            "staff_credential.issued",
            "customer.grants.viewed_by_staff",
            "grant.viewed_by_staff",
            "staff_credential.revoked",
        ] {
            assert!(
                actions.iter().any(|x| x == expected),
                "{expected} in {actions:?}"
            );
        }
        app.stop().await;
    }
}

const STAFF_CHANNEL_SECRET: &str = "whsec_c3RhZmYtY2hhbm5lbC1zZWNyZXQtZm9yLXRlc3Rz";

#[tokio::test]
async fn requests_decisions_credentials_and_uses_reach_the_staff_channel_in_order() {
    use e2e_tests::webhooks::{Receiver, verify};
    use std::time::Duration;
    for backend in backends() {
        let receiver = Receiver::start().await;
        // The channel is down at first: nothing is lost, the rest waits behind it.
        receiver.set_failing(true);
        let url = receiver.url.clone();
        let app = e2e_tests::spawn_app_with(
            backend,
            consent::startup::ServeOptions {
                demo: true,
                ..Default::default()
            },
            |s| {
                s.webhooks.staff_url = Some(url);
                s.webhooks.staff_secret =
                    Some(platform::config::Secret::new(STAFF_CHANNEL_SECRET.into()));
            },
        )
        .await;
        let alice = customer_id(&app, "alice").await;
        let a = app.staff_token("ops-a").await;
        let b = app.staff_token("ops-b").await;
        let (s, v) = ask(&app, &a, &alice, "fraud_investigation").await;
        assert_eq!(s, 201, "{v}");
        let request = v["request_id"].as_str().unwrap().to_string();
        let why = json!({ "justification": "Fraud team ticket checked, go ahead" });
        let approve = format!("/api/v1/admin/approvals/{request}/approve");
        assert_eq!(post(&app, &b, &approve, Some(&why)).await.0, 200);
        receiver.wait_for(1, Duration::from_secs(10)).await;
        receiver.set_failing(false);
        let take = format!("/api/v1/admin/approvals/{request}/credential");
        let credential = post(&app, &a, &take, None).await.1["credential"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            read_grants(&app, &a, &alice, Some(&credential)).await.0,
            200
        );

        let expected = [
            "staff.created",
            "second_factor.enrolled",
            "staff.created",
            "second_factor.enrolled",
            "approval.requested",
            "approval.approved",
            "staff_credential.issued",
            "customer.grants.viewed_by_staff",
        ];
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let delivered = loop {
            // What the channel accepted (the failed attempts answered 503 and were retried).
            let ok: Vec<_> = receiver.received();
            let mut seen: Vec<serde_json::Value> = Vec::new();
            for r in &ok {
                let v = r.json();
                if !seen.iter().any(|s| s["id"] == v["id"]) {
                    seen.push(v);
                }
            }
            let types: Vec<String> = seen
                .iter()
                .map(|v| v["type"].as_str().unwrap().to_string())
                .collect();
            if types.len() >= expected.len() || std::time::Instant::now() > deadline {
                break (types, ok, seen);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let (types, raw, seen) = delivered;
        assert_eq!(types, expected, "{backend:?}");
        // Signed, and in chain order.
        let now = chrono::Utc::now().timestamp();
        for r in &raw {
            verify(STAFF_CHANNEL_SECRET, r, now, 300).unwrap();
        }
        let indices: Vec<i64> = seen
            .iter()
            .map(|v| v["data"]["chain_index"].as_i64().unwrap())
            .collect();
        assert!(indices.windows(2).all(|w| w[0] < w[1]), "{indices:?}");
        // The first event was refused while the channel was down, and delivered after.
        assert!(
            raw.iter()
                .filter(|r| r.json()["id"] == seen[0]["id"])
                .count()
                >= 2,
            "{backend:?}"
        );
        let use_ = seen
            .iter()
            .find(|v| v["type"] == "customer.grants.viewed_by_staff")
            .unwrap();
        assert_eq!(use_["data"]["details"]["category"], "fraud_investigation");
        app.stop().await;
        receiver.stop().await;
    }
}

#[tokio::test]
async fn signing_keys_rotate_through_the_api_only_with_a_four_eyes_credential_used_once() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        let alice = customer_id(&app, "alice").await;
        let a = app.staff_token("ops-a").await;
        let b = app.staff_token("ops-b").await;
        let before = app.oauth.keys.current().active.kid();
        let ask_rotation = |purpose: &'static str| {
            let (app, a) = (&app, a.clone());
            async move {
                let path = format!("/api/v1/admin/keys/{purpose}/rotation-requests");
                let body = json!({
                    "justification": "Quarterly rotation of the token signing key",
                    "reference": "CHG-2026-1201",
                });
                post(app, &a, &path, Some(&body)).await
            }
        };
        assert_eq!(ask_rotation("nope").await.0, 404, "{backend:?}");
        let (s, v) = ask_rotation("biscuit").await;
        assert_eq!(s, 201, "{v} {backend:?}");
        assert_eq!(v["action"], "keys.rotate");
        assert_eq!(
            (v["target_type"].clone(), v["target_id"].clone()),
            (json!("signing_keys"), json!("biscuit"))
        );
        let request = v["request_id"].as_str().unwrap().to_string();
        let rotate = "/api/v1/admin/keys/biscuit/rotation";
        // Without a credential nothing rotates.
        assert_eq!(post(&app, &a, rotate, None).await.0, 403, "{backend:?}");
        let (s, v) = approved_credential(&app, &a, &b, &request).await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["action"], "keys.rotate");
        let credential = v["credential"].as_str().unwrap().to_string();
        let with_credential = |path: String| {
            let (app, a, credential) = (&app, a.clone(), credential.clone());
            async move {
                app.client
                    .post(app.url(&path))
                    .bearer_auth(&a)
                    .header("X-Staff-Credential", credential)
                    .send()
                    .await
                    .unwrap()
            }
        };
        // Not for another purpose, nor for reading a customer's grants.
        let r = with_credential("/api/v1/admin/keys/security_events/rotation".into()).await;
        assert_eq!(r.status(), 403, "{backend:?}");
        assert_eq!(
            read_grants(&app, &a, &alice, Some(&credential)).await.0,
            403
        );
        assert_eq!(app.oauth.keys.current().active.kid(), before);
        // With it: rotated, and this instance signs with the new key at once.
        let r = with_credential(rotate.into()).await;
        assert_eq!(r.status(), 200, "{backend:?}");
        let kid = r.json::<Value>().await.unwrap()["kid"].as_u64().unwrap() as u32;
        assert_ne!(kid, before);
        assert_eq!(app.oauth.keys.current().active.kid(), kid, "{backend:?}");
        // Used up.
        let r = with_credential(rotate.into()).await;
        assert_eq!(r.status(), 403, "{backend:?}");
        assert_eq!(app.oauth.keys.current().active.kid(), kid);
        let actions = app.audit_actions().await;
        for expected in ["signing_key.rotated", "staff_credential.used"] {
            assert!(
                actions.iter().any(|x| x == expected),
                "{expected} in {actions:?}"
            );
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn the_credentials_page_asks_takes_uses_and_revokes() {
    use e2e_tests::portal::{csrf_from_html, hidden_value};
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        app.approved_tokens().await;
        let alice = customer_id(&app, "alice").await;
        let a = app.staff_browser("ops-a").await;
        let b = app.staff_browser("ops-b").await;
        let page = app.page(&a, "/developers/staff/credentials").await;
        assert!(page.contains("Ask for access"), "{page}");
        let csrf = csrf_from_html(&page).unwrap();
        let ask = [
            ("customer_id", alice.as_str()),
            ("category", "customer_request"),
            ("reference", "CASE-77"),
            (
                "justification",
                "The customer asked us to check a connected app",
            ),
        ];
        // Without the session's CSRF token nothing is asked.
        let r = app
            .submit(&a, "/developers/staff/credentials/requests", &ask)
            .await;
        assert_eq!(r.status(), 403, "{backend:?}");
        let mut with_csrf = ask.to_vec();
        with_csrf.push(("csrf_token", &csrf));
        let r = app
            .submit(&a, "/developers/staff/credentials/requests", &with_csrf)
            .await;
        assert_eq!(r.status(), 303, "{backend:?}");
        // The colleague approves on the approvals page.
        let r = app
            .approve_on_page(&b, "Customer's request is on file")
            .await;
        assert_eq!(r.status(), 303, "{backend:?}");
        // Ready to take; taken once, shown once, used to read.
        let taken = app.take_on_page(&a, &csrf).await;
        let credential = hidden_value(&taken, "credential").expect("credential shown");
        let use_form = [
            ("credential", credential.as_str()),
            ("customer_id", alice.as_str()),
            ("csrf_token", &csrf),
        ];
        let read = app
            .submit(&a, "/developers/staff/credentials/use", &use_form)
            .await;
        assert_eq!(read.status(), 200, "{backend:?}");
        assert!(read.text().await.unwrap().contains("id=\"grants\""));
        // Listed with its time left; revoked from the page, it reads nothing more.
        let page = app.page(&a, "/developers/staff/credentials").await;
        assert!(page.contains("min left"), "{page}");
        let id = hidden_value(&page, "credential_id").unwrap();
        let r = app
            .submit(
                &a,
                "/developers/staff/credentials/revoke",
                &[("credential_id", id.as_str()), ("csrf_token", &csrf)],
            )
            .await;
        assert_eq!(r.status(), 303, "{backend:?}");
        assert!(
            !app.page(&a, "/developers/staff/credentials")
                .await
                .contains("min left")
        );
        let again = app
            .submit(&a, "/developers/staff/credentials/use", &use_form)
            .await;
        assert_eq!(again.status(), 403, "{backend:?}");
        app.stop().await;
    }
}

/// An approval is redeemed within 15 minutes or not at all, and a credential past its time in
/// the database is refused even while its signed expiry has not come (the row decides).
#[tokio::test]
async fn old_approvals_and_expired_credentials_give_no_access() {
    use diesel::prelude::*;
    use platform::storage::schema::{approval_requests, staff_credentials};
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        let alice = customer_id(&app, "alice").await;
        let a = app.staff_token("ops-a").await;
        let b = app.staff_token("ops-b").await;
        let why = json!({ "justification": "Checked the complaint ticket, access is needed" });
        let approved = |category: &'static str| {
            let (app, a, b, alice, why) = (&app, a.clone(), b.clone(), alice.clone(), why.clone());
            async move {
                let request = ask(app, &a, &alice, category).await.1["request_id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let approve = format!("/api/v1/admin/approvals/{request}/approve");
                assert_eq!(post(app, &b, &approve, Some(&why)).await.0, 200);
                request
            }
        };
        // Approved 16 minutes ago: too old to take.
        let old = approved("complaint").await;
        let id = old.clone();
        let past = (chrono::Utc::now() - chrono::Duration::minutes(16)).naive_utc();
        app.platform
            .db
            .write(move |c| {
                diesel::update(approval_requests::table.filter(approval_requests::id.eq(id)))
                    .set(approval_requests::decided_at.eq(Some(past)))
                    .execute(c)?;
                Ok(())
            })
            .await
            .unwrap();
        let take = format!("/api/v1/admin/approvals/{old}/credential");
        let (s, v) = post(&app, &a, &take, None).await;
        assert_eq!(s, 409, "{v} {backend:?}");

        // Taken in time, then its row expires: refused.
        let fresh = approved("customer_request").await;
        let (s, v) = post(
            &app,
            &a,
            &format!("/api/v1/admin/approvals/{fresh}/credential"),
            None,
        )
        .await;
        assert_eq!(s, 201, "{v} {backend:?}");
        let credential = v["credential"].as_str().unwrap().to_string();
        assert_eq!(
            read_grants(&app, &a, &alice, Some(&credential)).await.0,
            200
        );
        let id = v["credential_id"].as_str().unwrap().to_string();
        app.platform
            .db
            .write(move |c| {
                diesel::update(staff_credentials::table.filter(staff_credentials::id.eq(id)))
                    .set(staff_credentials::expires_at.eq(past))
                    .execute(c)?;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(
            read_grants(&app, &a, &alice, Some(&credential)).await.0,
            403,
            "{backend:?}"
        );
        app.stop().await;
    }
}

/// The credential's lifetime is the bank's to set (`security.staff_credential_ttl`), within
/// 1 to 60 minutes.
#[tokio::test]
async fn a_credential_lives_as_long_as_the_bank_configures() {
    let app = e2e_tests::spawn_app_with(
        e2e_tests::Backend::Sqlite,
        consent::startup::ServeOptions {
            demo: true,
            ..Default::default()
        },
        |s| s.security.staff_credential_ttl = platform::config::ConfigDuration::minutes(2),
    )
    .await;
    let alice = customer_id(&app, "alice").await;
    let a = app.staff_token("ops-a").await;
    let b = app.staff_token("ops-b").await;
    let (_, v) = ask(&app, &a, &alice, "complaint").await;
    let request = v["request_id"].as_str().unwrap().to_string();
    let (s, v) = approved_credential(&app, &a, &b, &request).await;
    assert_eq!(s, 201, "{v}");
    let expires: chrono::DateTime<chrono::Utc> = v["expires_at"].as_str().unwrap().parse().unwrap();
    let left = expires - chrono::Utc::now();
    assert!(
        left > chrono::Duration::seconds(90) && left <= chrono::Duration::minutes(2),
        "{left}"
    );
    app.stop().await;

    for ttl in ["30s", "2h"] {
        let r = platform::config::Settings::load_from(
            None,
            [(
                "CONSENT_SECURITY__STAFF_CREDENTIAL_TTL".to_string(),
                ttl.to_string(),
            )],
        );
        assert!(r.is_err(), "{ttl}");
    }
}

/// How long an approval can be turned into a credential is the bank's to set
/// (`security.staff_redeem_window`), within 1 to 60 minutes: past it, ask again.
#[tokio::test]
async fn an_approval_is_redeemed_within_the_window_the_bank_configures() {
    use diesel::prelude::*;
    use platform::storage::schema::approval_requests;
    let app = e2e_tests::spawn_app_with(
        e2e_tests::Backend::Sqlite,
        consent::startup::ServeOptions {
            demo: true,
            ..Default::default()
        },
        |s| s.security.staff_redeem_window = platform::config::ConfigDuration::minutes(2),
    )
    .await;
    let alice = customer_id(&app, "alice").await;
    let a = app.staff_token("ops-a").await;
    let b = app.staff_token("ops-b").await;
    let why = json!({ "justification": "Checked the complaint ticket, access is needed" });
    let mut taken = Vec::new();
    // Decided 3 minutes ago (past the window), then 1 minute ago (within it).
    for minutes_ago in [3, 1] {
        let (_, v) = ask(&app, &a, &alice, "complaint").await;
        let request = v["request_id"].as_str().unwrap().to_string();
        let approve = format!("/api/v1/admin/approvals/{request}/approve");
        assert_eq!(post(&app, &b, &approve, Some(&why)).await.0, 200);
        let (id, at) = (
            request.clone(),
            (app.platform.now() - chrono::Duration::minutes(minutes_ago)).naive_utc(),
        );
        app.platform
            .db
            .write(move |c| {
                diesel::update(approval_requests::table.filter(approval_requests::id.eq(id)))
                    .set(approval_requests::decided_at.eq(Some(at)))
                    .execute(c)?;
                Ok(())
            })
            .await
            .unwrap();
        let take = format!("/api/v1/admin/approvals/{request}/credential");
        taken.push(post(&app, &a, &take, None).await);
    }
    assert_eq!(taken[0].0, 409, "{}", taken[0].1);
    assert!(
        taken[0].1["detail"]
            .as_str()
            .unwrap()
            .contains("older than 2 minutes"),
        "{}",
        taken[0].1
    );
    assert_eq!(taken[1].0, 201, "{}", taken[1].1);
    app.stop().await;

    for window in ["30s", "2h"] {
        let r = platform::config::Settings::load_from(
            None,
            [(
                "CONSENT_SECURITY__STAFF_REDEEM_WINDOW".to_string(),
                window.to_string(),
            )],
        );
        assert!(r.is_err(), "{window}");
    }
}

/// Approving needs the role the action names: compliance for a customer's data, security for
/// key rotation, either for a client suspension; support approves nothing. Asking needs none.
#[tokio::test]
async fn approvals_need_the_right_role() {
    use developer_portal::StaffRole::{Compliance, Security, Support};
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        let alice = customer_id(&app, "alice").await;
        let support = app.staff_token_with_roles("desk-1", &[Support]).await;
        let compliance = app.staff_token_with_roles("comp-1", &[Compliance]).await;
        let security = app.staff_token_with_roles("sec-1", &[Security]).await;
        let why = json!({ "justification": "Checked the complaint ticket, access is needed" });
        let approve = |id: &str| format!("/api/v1/admin/approvals/{id}/approve");

        // A support agent asks for a customer's grants; only compliance may approve.
        let (s, v) = ask(&app, &support, &alice, "complaint").await;
        assert_eq!(s, 201, "{v}");
        let request = v["request_id"].as_str().unwrap().to_string();
        let (s, v) = post(&app, &security, &approve(&request), Some(&why)).await;
        assert_eq!(s, 403, "{backend:?} {v}");
        assert!(v["detail"].as_str().unwrap().contains("compliance"), "{v}");
        let (s, _) = post(&app, &support, &approve(&request), Some(&why)).await;
        assert_eq!(s, 403, "self-approval, and no role");
        // The approvals page offers the decision only to those who may take it.
        let approvals = "/developers/staff/approvals";
        let decide_form = format!("/developers/staff/approvals/{request}/decide");
        let sec = app.staff_browser_with_roles("sec-2", &[Security]).await;
        let html = app.page(&sec, approvals).await;
        assert!(!html.contains(&decide_form), "no form without the role");
        assert!(html.contains("awaiting a staff member with the role compliance"));
        let comp = app.staff_browser_with_roles("comp-2", &[Compliance]).await;
        let html = app.page(&comp, approvals).await;
        assert!(html.contains(&decide_form), "the form for compliance");
        let (s, v) = post(&app, &compliance, &approve(&request), Some(&why)).await;
        assert_eq!(s, 200, "{backend:?} {v}");

        // Key rotation: compliance may not approve it, security may.
        let (s, v) = post(
            &app,
            &support,
            "/api/v1/admin/keys/biscuit/rotation-requests",
            Some(&json!({
                "justification": "Quarterly rotation of the token signing key",
                "reference": "CHG-2026-1201",
            })),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        let request = v["request_id"].as_str().unwrap().to_string();
        assert_eq!(
            post(&app, &compliance, &approve(&request), Some(&why))
                .await
                .0,
            403
        );
        assert_eq!(
            post(&app, &security, &approve(&request), Some(&why))
                .await
                .0,
            200
        );
        let actions = app.audit_actions().await;
        assert_eq!(
            actions.iter().filter(|a| *a == "approval.approved").count(),
            2,
            "refusals change nothing: {actions:?}"
        );
        app.stop().await;
    }
}

/// Requests opened at the same moment still leave one pending: a shared change (a key rotation)
/// one per target whoever asks, a personal access one per staff member and customer. Without
/// the openers' lock, PostgreSQL's read-committed checks let two through.
#[tokio::test]
async fn requests_opened_at_once_leave_one_pending() {
    for backend in backends() {
        let app = std::sync::Arc::new(spawn_demo_app(backend).await);
        let alice = customer_id(&app, "alice").await;
        let staff = [
            app.staff_token("ops-a").await,
            app.staff_token("ops-b").await,
        ];
        let rotation = json!({
            "justification": "Quarterly rotation of the token signing key",
            "reference": "CHG-2026-1201",
        });
        let mut set = tokio::task::JoinSet::new();
        for i in 0..8 {
            let (app, token, body) = (app.clone(), staff[i % 2].clone(), rotation.clone());
            set.spawn(async move {
                let path = "/api/v1/admin/keys/biscuit/rotation-requests";
                ("rotation", post(&app, &token, path, Some(&body)).await.0)
            });
        }
        for _ in 0..6 {
            let (app, token, alice) = (app.clone(), staff[0].clone(), alice.clone());
            set.spawn(async move { ("access", ask(&app, &token, &alice, "complaint").await.0) });
        }
        let mut statuses = std::collections::BTreeMap::<&str, Vec<u16>>::new();
        while let Some(done) = set.join_next().await {
            let (kind, status) = done.unwrap();
            statuses.entry(kind).or_default().push(status);
        }
        for (kind, mut s) in statuses {
            s.sort();
            let mut expected = vec![400; s.len() - 1];
            expected.insert(0, 201);
            assert_eq!(s, expected, "{backend:?}: {kind}");
        }
        // Another staff member may still ask for their own access.
        let (s, v) = ask(&app, &staff[1], &alice, "complaint").await;
        assert_eq!(s, 201, "{backend:?}: {v}");
        std::sync::Arc::into_inner(app).unwrap().stop().await;
    }
}
