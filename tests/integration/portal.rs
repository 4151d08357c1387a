//! Developer portal: sign-up, KYC, four-eyes review, clients (issue: developer portal).

use chrono::{Duration, NaiveDateTime, SubsecRound};
use diesel::prelude::*;
use e2e_tests::portal::{PASSWORD, browser_client, client_body, csrf_from_html, kyc_body};
use e2e_tests::{TestApp, backends, spawn_app};
use platform::crypto::{HashedToken, PlainToken};
use platform::storage::AnyConnection;
use platform::storage::schema::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn count(app: &TestApp, table: &'static str) -> i64 {
    app.platform
        .db
        .run(move |c| {
            Ok(match table {
                "developers" => developers::table.count().get_result(c)?,
                "clients" => clients::table.count().get_result(c)?,
                "kyc_submissions" => kyc_submissions::table.count().get_result(c)?,
                "kyc_reviews" => kyc_reviews::table.count().get_result(c)?,
                "approval_requests" => approval_requests::table.count().get_result(c)?,
                _ => unreachable!(),
            })
        })
        .await
        .unwrap()
}

async fn problem(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status(), status, "expected {status}");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], status);
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    v
}

#[tokio::test]
async fn full_path_from_sign_up_to_a_production_client() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let dev = app.developer_token("  Founder@Fintech.Example ").await;
        let me: Value = app
            .api(Method::GET, "/api/v1/developers/me", Some(&dev), None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(me["email"], "founder@fintech.example", "normalised");
        assert_eq!(me["kyc_status"], "none");

        // Sandbox at once; production refused without KYC.
        let (sandbox_id, _) = app.sandbox_client(&dev).await;
        assert!(sandbox_id.starts_with("c_"));
        let p = problem(app.post_client(&dev, &client_body("production")).await, 403).await;
        assert!(p["detail"].as_str().unwrap().contains("KYC"), "{p}");

        let submission = app.submitted_kyc(&dev).await;
        let ops_a = app.staff_token("ops-a").await;
        let ops_b = app.staff_token("ops-b").await;

        let queue: Value = app
            .api(Method::GET, "/api/v1/admin/kyc", Some(&ops_a), None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(queue["submissions"][0]["id"], submission.as_str());
        assert_eq!(
            queue["submissions"][0]["developer_email"],
            "founder@fintech.example"
        );

        // One approval is not enough.
        let r = app.review_kyc(&ops_a, &submission, "approve").await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["submission"]["status"], "submitted");
        assert_eq!(v["approvals_this_round"], 1);
        problem(app.post_client(&dev, &client_body("production")).await, 403).await;

        // The same staff member cannot approve twice.
        let p = problem(app.review_kyc(&ops_a, &submission, "approve").await, 409).await;
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .contains("another staff member")
        );

        // A second, distinct staff member approves.
        let r = app.review_kyc(&ops_b, &submission, "approve").await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["submission"]["status"], "approved");
        let reviews = v["reviews"].as_array().unwrap();
        assert_eq!(reviews.len(), 2);
        assert!(
            reviews
                .iter()
                .all(|r| r["justification"].as_str().unwrap().contains("registry"))
        );
        let usernames: Vec<&str> = reviews
            .iter()
            .map(|r| r["staff_username"].as_str().unwrap())
            .collect();
        assert_eq!(usernames, ["ops-a", "ops-b"]);

        // Decided: no more reviews, no more edits.
        problem(app.review_kyc(&ops_a, &submission, "reject").await, 409).await;
        problem(app.put_kyc(&dev, &kyc_body()).await, 409).await;

        // FAPI 2.0: a production client with a shared secret or bearer tokens is refused.
        let p = problem(app.post_client(&dev, &client_body("production")).await, 400).await;
        let fields: Vec<&str> = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["auth_method", "dpop_bound_access_tokens"], "{p}");
        let mut fapi = client_body("production");
        let key = grants::dpop::DpopKey::generate_es256();
        fapi["token_endpoint_auth_method"] = json!("private_key_jwt");
        fapi["jwks"] = json!({ "keys": [key.public_jwk()] });
        fapi["dpop_bound_access_tokens"] = json!(true);
        let r = app.post_client(&dev, &fapi).await;
        assert_eq!(r.status(), 201, "production allowed after approval");
        let prod: Value = r.json().await.unwrap();
        assert_eq!(prod["environment"], "production");
        let prod_id = prod["client_id"].as_str().unwrap().to_string();
        // Mutual TLS qualifies too: tls_client_auth and certificate-bound tokens (RFC 8705).
        let mut mtls = client_body("production");
        mtls["token_endpoint_auth_method"] = json!("tls_client_auth");
        mtls["tls_client_auth_subject_dn"] = json!("CN=prod-app,O=Acme Payments Ltd");
        mtls["tls_client_certificate_bound_access_tokens"] = json!(true);
        let r = app.post_client(&dev, &mtls).await;
        assert_eq!(r.status(), 201, "production mTLS client");

        // The consent page sees the verified legal name.
        let key = app.platform.master_key.clone();
        let (d_prod, d_sandbox) = app
            .platform
            .db
            .run(move |c| {
                Ok((
                    developer_portal::client_display(c, &key, &prod_id)?,
                    developer_portal::client_display(c, &key, &sandbox_id)?,
                ))
            })
            .await
            .unwrap();
        let d_prod = d_prod.unwrap();
        assert!(d_prod.kyc_verified);
        assert_eq!(
            d_prod.verified_legal_name.as_deref(),
            Some("Acme Payments Ltd")
        );
        assert_eq!(d_prod.badge(), "by Acme Payments Ltd (verified)");
        assert_eq!(d_sandbox.unwrap().environment, "sandbox");

        let actions = app.audit_actions().await;
        for a in [
            "developer.signed_up",
            "kyc.submitted",
            "kyc.reviewed",
            "kyc.approved",
            "client.created",
        ] {
            assert!(
                actions.iter().any(|x| x == a),
                "{backend:?}: audit has {a}: {actions:?}"
            );
        }
        assert_eq!(actions.iter().filter(|a| *a == "kyc.reviewed").count(), 2);
        app.stop().await;
    }
}

#[tokio::test]
async fn reviews_refuse_conflicts_of_interest_and_rounds_restart_after_needs_information() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let dev = app.developer_token("ops-c@bank.example").await;
        let submission = app.submitted_kyc(&dev).await;
        // A staff member whose username is the developer's email is the developer.
        let same_person = app.staff_token("ops-c@bank.example").await;
        let p = problem(
            app.review_kyc(&same_person, &submission, "approve").await,
            403,
        )
        .await;
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .contains("own developer account")
        );

        let ops_a = app.staff_token("ops-a").await;
        let ops_b = app.staff_token("ops-b").await;
        // Bad decision and short justification.
        let r = app
            .api(
                Method::POST,
                &format!("/api/v1/admin/kyc/{submission}/reviews"),
                Some(&ops_a),
                Some(&json!({ "decision": "maybe", "justification": "looks fine to me really" })),
            )
            .await;
        problem(r, 400).await;
        let r = app
            .api(
                Method::POST,
                &format!("/api/v1/admin/kyc/{submission}/reviews"),
                Some(&ops_a),
                Some(&json!({ "decision": "approve", "justification": "ok" })),
            )
            .await;
        let p = problem(r, 400).await;
        assert_eq!(p["errors"][0]["field"], "justification");
        assert_eq!(
            count(&app, "kyc_reviews").await,
            0,
            "refusals write nothing"
        );

        // Round 1: one approval, then a request for information.
        assert_eq!(
            app.review_kyc(&ops_a, &submission, "approve")
                .await
                .status(),
            200
        );
        assert_eq!(
            app.review_kyc(&ops_b, &submission, "needs_information")
                .await
                .status(),
            200
        );
        let k: Value = app
            .api(Method::GET, "/api/v1/developers/me/kyc", Some(&dev), None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(k["status"], "needs_information");
        assert!(k["decision_reason"].as_str().unwrap().contains("registry"));
        problem(app.review_kyc(&ops_a, &submission, "approve").await, 409).await;

        // Resubmission starts round 2: the round-1 approval does not count.
        let mut body = kyc_body();
        body["address"] = json!("2 Example Street, 10115 Berlin");
        assert_eq!(app.put_kyc(&dev, &body).await.status(), 200);
        let r: Value = app.submit_kyc(&dev).await.json().await.unwrap();
        assert_eq!(
            (r["status"].as_str(), r["round"].as_i64()),
            (Some("submitted"), Some(2))
        );
        let v: Value = app
            .review_kyc(&ops_a, &submission, "approve")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            v["submission"]["status"], "submitted",
            "one approval in round 2"
        );
        let v: Value = app
            .review_kyc(&ops_b, &submission, "approve")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["submission"]["status"], "approved");
        assert_eq!(
            v["reviews"].as_array().unwrap().len(),
            4,
            "every review stays visible"
        );

        // A rejection rejects at once.
        let dev2 = app.developer_token("second@fintech.example").await;
        let s2 = app.submitted_kyc(&dev2).await;
        assert_eq!(app.review_kyc(&ops_a, &s2, "reject").await.status(), 200);
        let k: Value = app
            .api(Method::GET, "/api/v1/developers/me/kyc", Some(&dev2), None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(k["status"], "rejected");
        problem(app.submit_kyc(&dev2).await, 409).await;
        app.stop().await;
    }
}

#[tokio::test]
async fn pii_is_encrypted_at_rest_and_secrets_are_shown_once_and_stored_hashed() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let dev = app.developer_token("pii@fintech.example").await;
        let submission = app.submitted_kyc(&dev).await;
        let sid = submission.clone();
        let raw: (String, String, String, String, String, String) = app
            .platform
            .db
            .run(move |c| {
                Ok(kyc_submissions::table
                    .filter(kyc_submissions::id.eq(&sid))
                    .select((
                        kyc_submissions::legal_name_enc,
                        kyc_submissions::registration_number_enc,
                        kyc_submissions::address_enc,
                        kyc_submissions::contact_enc,
                        kyc_submissions::documents_enc,
                        kyc_submissions::country,
                    ))
                    .first(c)?)
            })
            .await
            .unwrap();
        let all = format!("{} {} {} {} {}", raw.0, raw.1, raw.2, raw.3, raw.4);
        for plain in [
            "Acme",
            "HRB-123456",
            "Example Street",
            "Jane",
            "incorporation.pdf",
        ] {
            assert!(!all.contains(plain), "{backend:?}: {plain} in clear");
        }
        assert_eq!(raw.5, "DE");
        // Bound to its row and column.
        let cipher = app.platform.master_key.cipher("kyc-pii");
        assert_eq!(
            cipher
                .decrypt_str(&raw.0, &format!("kyc_submissions.legal_name:{submission}"))
                .unwrap(),
            "Acme Payments Ltd"
        );
        assert!(
            cipher
                .decrypt_str(&raw.0, &format!("kyc_submissions.address:{submission}"))
                .is_err()
        );

        // Secret: in the create response only, stored as its SHA-256.
        let r = app.post_client(&dev, &client_body("sandbox")).await;
        assert_eq!(r.headers()["cache-control"], "no-store");
        let created: Value = r.json().await.unwrap();
        let id = created["client_id"].as_str().unwrap().to_string();
        let secret = created["client_secret"].as_str().unwrap().to_string();
        assert!(secret.starts_with("cs_") && secret.len() > 40);
        assert_eq!(created["auth_method"], "client_secret_basic");
        assert_eq!(
            created["allowed_actions"],
            json!(["accounts:read", "balances:read", "transactions:read"])
        );
        let got: Value = app
            .api(
                Method::GET,
                &format!("/api/v1/clients/{id}"),
                Some(&dev),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        assert!(got.get("client_secret").is_none(), "{got}");
        let list = app
            .api(Method::GET, "/api/v1/clients", Some(&dev), None)
            .await
            .text()
            .await
            .unwrap();
        assert!(!list.contains(&secret));
        let stored_hash = |app: &TestApp, id: String| {
            let db = app.platform.db.clone();
            async move {
                db.run(move |c| {
                    Ok(clients::table
                        .filter(clients::id.eq(&id))
                        .select(clients::secret_hash)
                        .first::<String>(c)?)
                })
                .await
                .unwrap()
            }
        };
        let h1 = stored_hash(&app, id.clone()).await;
        assert!(!h1.contains(&secret));
        assert!(HashedToken::from_stored(h1.clone()).matches(&PlainToken::from_presented(&secret)));

        // Rotation: a new secret, the old one no longer matches.
        let r: Value = app
            .api(
                Method::POST,
                &format!("/api/v1/clients/{id}/secret"),
                Some(&dev),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        let secret2 = r["client_secret"].as_str().unwrap();
        assert_ne!(secret2, secret);
        let h2 = stored_hash(&app, id.clone()).await;
        assert!(HashedToken::from_stored(h2.clone()).matches(&PlainToken::from_presented(secret2)));
        assert!(!HashedToken::from_stored(h2).matches(&PlainToken::from_presented(&secret)));

        // Bearer tokens are stored hashed too.
        let tokens: Vec<String> = app
            .platform
            .db
            .run(|c| Ok(sessions::table.select(sessions::id_hash).load(c)?))
            .await
            .unwrap();
        assert!(tokens.iter().all(|t| !t.starts_with("sess_")));
        app.stop().await;
    }
}

#[tokio::test]
async fn every_bad_input_class_gets_a_clear_error_and_changes_nothing() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let dev = app.developer_token("taken@fintech.example").await;
        let (client_id, _) = app.sandbox_client(&dev).await;
        let (devs, clients_before) = (
            count(&app, "developers").await,
            count(&app, "clients").await,
        );

        // Raw bodies: malformed JSON, wrong content type, missing field, wrong type, unknown field.
        let raw = |ct: &'static str, body: &'static str| {
            app.client
                .post(app.url("/api/v1/developers"))
                .header("content-type", ct)
                .body(body)
                .send()
        };
        problem(raw("application/json", "{\"email\":").await.unwrap(), 400).await;
        problem(raw("text/plain", "{}").await.unwrap(), 415).await;
        let p = problem(
            raw(
                "application/json",
                r#"{"password":"correct horse battery","display_name":"x"}"#,
            )
            .await
            .unwrap(),
            400,
        )
        .await;
        assert!(p["detail"].as_str().unwrap().contains("email"), "{p}");
        problem(
            raw(
                "application/json",
                r#"{"email":5,"password":"x","display_name":"x"}"#,
            )
            .await
            .unwrap(),
            400,
        )
        .await;
        problem(raw("application/json", r#"{"email":"a@b.example","password":"correct horse battery","display_name":"x","admin":true}"#).await.unwrap(), 400).await;

        // Field validation.
        for (email, password, field) in [
            ("not-an-email", PASSWORD, "email"),
            ("a@b", PASSWORD, "email"),
            ("", PASSWORD, "email"),
            ("ok@fintech.example", "short", "password"),
            ("ok@fintech.example", &"x".repeat(257), "password"),
        ] {
            let p = problem(app.post_developers(email, password).await, 400).await;
            assert_eq!(p["errors"][0]["field"], field, "{email}: {p}");
        }
        let p = problem(
            app.post_developers(" TAKEN@fintech.example", PASSWORD)
                .await,
            409,
        )
        .await;
        assert!(p["detail"].as_str().unwrap().contains("already exists"));
        assert_eq!(count(&app, "developers").await, devs);

        // Auth: missing, malformed, unknown bearer -> 401; a staff token is not a developer token.
        for auth in [
            None,
            Some("Bearer "),
            Some("Bearer sess_forged"),
            Some("Basic Zm9vOmJhcg=="),
        ] {
            let mut r = app.client.get(app.url("/api/v1/clients"));
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            problem(r, 401).await;
        }
        let staff = app.staff_token("ops-a").await;
        problem(
            app.api(Method::GET, "/api/v1/clients", Some(&staff), None)
                .await,
            401,
        )
        .await;
        problem(
            app.api(Method::GET, "/api/v1/admin/kyc", Some(&dev), None)
                .await,
            401,
        )
        .await;
        problem(
            app.post_developer_login("taken@fintech.example", "wrong password!!")
                .await,
            401,
        )
        .await;
        problem(
            app.post_developer_login("nobody@fintech.example", PASSWORD)
                .await,
            401,
        )
        .await;

        // Redirect URIs of every bad kind, and other client fields.
        let long = format!("https://app.example.com/{}", "a".repeat(600));
        let eleven: Vec<String> = (0..11)
            .map(|i| format!("https://app.example.com/{i}"))
            .collect();
        let cases: Vec<(Value, &str)> = vec![
            (json!(["http://app.example.com/cb"]), "redirect_uris[0]"),
            (
                json!(["https://app.example.com/cb#frag"]),
                "redirect_uris[0]",
            ),
            (json!(["https://*.example.com/cb"]), "redirect_uris[0]"),
            (
                json!(["https://user:pw@app.example.com/cb"]),
                "redirect_uris[0]",
            ),
            (json!(["/relative/cb"]), "redirect_uris[0]"),
            (json!(["javascript:alert(1)"]), "redirect_uris[0]"),
            (json!([long]), "redirect_uris[0]"),
            (json!(eleven), "redirect_uris"),
            (json!([]), "redirect_uris"),
            (
                json!(["https://a.example/cb", "https://a.example/cb"]),
                "redirect_uris[1]",
            ),
        ];
        for (uris, field) in cases {
            let mut body = client_body("sandbox");
            body["redirect_uris"] = uris.clone();
            let p = problem(app.post_client(&dev, &body).await, 400).await;
            assert_eq!(p["errors"][0]["field"], field, "{uris}: {p}");
        }
        // Loopback http is for sandbox only.
        let mut body = client_body("sandbox");
        body["environment"] = json!("production");
        problem(app.post_client(&dev, &body).await, 400).await;
        for (k, v, field) in [
            ("environment", json!("staging"), "environment"),
            ("auth_method", json!("none"), "auth_method"),
            (
                "allowed_actions",
                json!(["payments:write"]),
                "allowed_actions",
            ),
            ("allowed_actions", json!([]), "allowed_actions"),
            ("name", json!("  "), "name"),
            (
                "webhook_url",
                json!("http://hooks.example.com/x"),
                "webhook_url",
            ),
        ] {
            let mut body = client_body("sandbox");
            body[k] = v;
            let p = problem(app.post_client(&dev, &body).await, 400).await;
            assert_eq!(p["errors"][0]["field"], field, "{p}");
        }
        // KYC fields.
        for (k, v, field) in [
            ("country", json!("XX"), "country"),
            ("legal_name", json!(""), "legal_name"),
            ("documents", json!([]), "documents"),
            (
                "documents",
                json!([{"kind":"selfie","filename":"a.pdf","sha256":"a".repeat(64)}]),
                "documents[0].kind",
            ),
            (
                "documents",
                json!([{"kind":"other","filename":"../etc/passwd","sha256":"a".repeat(64)}]),
                "documents[0].filename",
            ),
            (
                "documents",
                json!([{"kind":"other","filename":"a.pdf","sha256":"xyz"}]),
                "documents[0].sha256",
            ),
        ] {
            let mut body = kyc_body();
            body[k] = v;
            let p = problem(app.put_kyc(&dev, &body).await, 400).await;
            assert_eq!(p["errors"][0]["field"], field, "{p}");
        }
        problem(app.submit_kyc(&dev).await, 404).await;
        // Updates: bad redirect URI, empty patch, unknown client, suspended/deleted clients.
        let r = app
            .api(
                Method::PATCH,
                &format!("/api/v1/clients/{client_id}"),
                Some(&dev),
                Some(&json!({"redirect_uris": ["https://x.example/#f"]})),
            )
            .await;
        problem(r, 400).await;
        problem(
            app.api(
                Method::PATCH,
                &format!("/api/v1/clients/{client_id}"),
                Some(&dev),
                Some(&json!({})),
            )
            .await,
            400,
        )
        .await;
        problem(
            app.api(Method::GET, "/api/v1/clients/c_unknown", Some(&dev), None)
                .await,
            404,
        )
        .await;
        problem(
            app.api(
                Method::GET,
                &format!("/api/v1/clients/{}", "x".repeat(300)),
                Some(&dev),
                None,
            )
            .await,
            404,
        )
        .await;
        problem(
            app.api(
                Method::DELETE,
                "/api/v1/clients/c_unknown",
                Some(&dev),
                None,
            )
            .await,
            404,
        )
        .await;
        problem(
            app.api(
                Method::GET,
                "/api/v1/admin/kyc?status=bogus",
                Some(&staff),
                None,
            )
            .await,
            400,
        )
        .await;
        problem(
            app.api(
                Method::GET,
                "/api/v1/admin/kyc/kyc_nope",
                Some(&staff),
                None,
            )
            .await,
            404,
        )
        .await;
        problem(
            app.api(
                Method::POST,
                "/api/v1/admin/approvals/apr_nope/approve",
                Some(&staff),
                Some(&json!({"justification": "because I say so"})),
            )
            .await,
            404,
        )
        .await;

        assert_eq!(
            count(&app, "clients").await,
            clients_before,
            "{backend:?}: nothing created"
        );
        assert_eq!(count(&app, "kyc_submissions").await, 0);
        let c: Value = app
            .api(
                Method::GET,
                &format!("/api/v1/clients/{client_id}"),
                Some(&dev),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            c["redirect_uris"],
            json!(["http://127.0.0.1:9000/callback"]),
            "unchanged"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn clients_belong_to_their_developer_and_can_be_updated_and_deleted() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let alice = app.developer_token("alice@fintech.example").await;
        let mallory = app.developer_token("mallory@fintech.example").await;
        let (id, _) = app.sandbox_client(&alice).await;
        for (m, body) in [
            (Method::GET, None),
            (Method::PATCH, Some(json!({"name": "pwned"}))),
            (Method::DELETE, None),
        ] {
            problem(
                app.api(
                    m,
                    &format!("/api/v1/clients/{id}"),
                    Some(&mallory),
                    body.as_ref(),
                )
                .await,
                404,
            )
            .await;
        }
        problem(
            app.api(
                Method::POST,
                &format!("/api/v1/clients/{id}/secret"),
                Some(&mallory),
                None,
            )
            .await,
            404,
        )
        .await;
        let list: Value = app
            .api(Method::GET, "/api/v1/clients", Some(&mallory), None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(list["clients"], json!([]));

        let r = app.api(Method::PATCH, &format!("/api/v1/clients/{id}"), Some(&alice),
            Some(&json!({"name": "Renamed", "redirect_uris": ["https://a.example/cb", "http://[::1]:8080/cb"], "webhook_url": "https://hooks.example/x"}))).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["name"], "Renamed");
        assert!(
            v["webhook_secret"].as_str().unwrap().starts_with("whsec_"),
            "shown once"
        );
        let r = app
            .api(
                Method::PATCH,
                &format!("/api/v1/clients/{id}"),
                Some(&alice),
                Some(&json!({"webhook_url": null})),
            )
            .await;
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["webhook_url"], Value::Null);
        assert_eq!(v["name"], "Renamed", "absent fields unchanged");

        let r = app
            .api(
                Method::DELETE,
                &format!("/api/v1/clients/{id}"),
                Some(&alice),
                None,
            )
            .await;
        assert_eq!(r.status(), 204);
        problem(
            app.api(
                Method::GET,
                &format!("/api/v1/clients/{id}"),
                Some(&alice),
                None,
            )
            .await,
            404,
        )
        .await;
        let key = app.platform.master_key.clone();
        let shown = app
            .platform
            .db
            .run(move |c| developer_portal::client_display(c, &key, &id))
            .await
            .unwrap();
        assert!(
            shown.is_none(),
            "a deleted client is not shown on the consent page"
        );

        // Logging out ends the bearer token.
        assert_eq!(
            app.api(
                Method::POST,
                "/api/v1/developers/logout",
                Some(&alice),
                None
            )
            .await
            .status(),
            204
        );
        problem(
            app.api(Method::GET, "/api/v1/clients", Some(&alice), None)
                .await,
            401,
        )
        .await;
        app.stop().await;
    }
}

#[tokio::test]
async fn login_is_throttled() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        app.developer_token("throttle@fintech.example").await;
        let mut limited = None;
        for _ in 0..15 {
            let r = app
                .post_developer_login("throttle@fintech.example", "wrong password!!")
                .await;
            if r.status() == 429 {
                limited = Some(r);
                break;
            }
            assert_eq!(r.status(), 401);
        }
        let r = limited.expect("throttled within 15 attempts");
        assert!(
            r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 0
        );
        problem(r, 429).await;
        // Even the right password is refused while throttled.
        assert_eq!(
            app.post_developer_login("throttle@fintech.example", PASSWORD)
                .await
                .status(),
            429
        );
        app.stop().await;
    }
}

type GrantRow = (String, String, Option<String>, Option<NaiveDateTime>);
type RevocationRow = (String, Option<String>, String);

struct GrantFixture {
    client_id: String,
    live: Vec<String>,
    ended: String,
}

/// A customer, a client and grants in every state, with refresh tokens and issued tokens.
fn insert_grants(
    c: &mut AnyConnection,
    developer_id: &str,
    client_id: &str,
) -> QueryResult<GrantFixture> {
    let now: NaiveDateTime = chrono::Utc::now().naive_utc().trunc_subsecs(0);
    let cust = format!("cust_{client_id}");
    diesel::insert_into(customers::table)
        .values((
            customers::id.eq(&cust),
            customers::username.eq(&cust),
            customers::display_name.eq("C"),
            customers::password_hash.eq("x"),
            customers::created_at.eq(now),
        ))
        .execute(c)?;
    if developer_id != "existing" {
        diesel::insert_into(clients::table)
            .values((
                clients::id.eq(client_id),
                clients::developer_id.eq(developer_id),
                clients::name.eq("fixture"),
                clients::environment.eq("sandbox"),
                clients::redirect_uris.eq("[]"),
                clients::auth_method.eq("client_secret_basic"),
                clients::secret_hash.eq("h"),
                clients::allowed_actions.eq("[]"),
                clients::status.eq("active"),
                clients::created_at.eq(now),
                clients::updated_at.eq(now),
            ))
            .execute(c)?;
    }
    let mut live = vec![];
    let mut ended = String::new();
    for (i, status) in ["authorized", "awaiting_authorization", "rejected"]
        .iter()
        .enumerate()
    {
        let gid = format!("g_{client_id}_{i}");
        diesel::insert_into(grant_rows::table)
            .values((
                grant_rows::id.eq(&gid),
                grant_rows::customer_id.eq(&cust),
                grant_rows::client_id.eq(client_id),
                grant_rows::status.eq(status),
                grant_rows::authorization_details.eq("[]"),
                grant_rows::created_at.eq(now),
                grant_rows::expires_at.eq(now + Duration::days(30)),
                grant_rows::updated_at.eq(now),
            ))
            .execute(c)?;
        diesel::insert_into(refresh_tokens::table)
            .values((
                refresh_tokens::id.eq(format!("rt_{gid}")),
                refresh_tokens::token_hash.eq(format!("hash_{gid}")),
                refresh_tokens::grant_id.eq(&gid),
                refresh_tokens::family_id.eq(format!("fam_{gid}")),
                refresh_tokens::status.eq("active"),
                refresh_tokens::created_at.eq(now),
                refresh_tokens::expires_at.eq(now + Duration::days(30)),
            ))
            .execute(c)?;
        for j in 0..2 {
            diesel::insert_into(issued_tokens::table)
                .values((
                    issued_tokens::revocation_id.eq(format!("rid_{gid}_{j}")),
                    issued_tokens::grant_id.eq(&gid),
                    issued_tokens::expires_at.eq(now + Duration::minutes(10)),
                ))
                .execute(c)?;
        }
        if *status == "rejected" {
            ended = gid
        } else {
            live.push(gid)
        }
    }
    Ok(GrantFixture {
        client_id: client_id.to_string(),
        live,
        ended,
    })
}

#[tokio::test]
async fn revoke_client_grants_revokes_grants_refresh_tokens_and_publishes_revocation_ids() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let dev = app.developer_token("revoke@fintech.example").await;
        let dev_id: String = app
            .api(Method::GET, "/api/v1/developers/me", Some(&dev), None)
            .await
            .json::<Value>()
            .await
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .into();
        let now = app.platform.now();
        let fx = app
            .platform
            .db
            .write(move |c| Ok(insert_grants(c, &dev_id, "c_fixture")?))
            .await
            .unwrap();
        let cid = fx.client_id.clone();
        let mut revoked = platform::revocation::write(&app.platform, move |c, r| {
            developer_portal::revoke_client_grants(c, r, &cid, "staff", now)
        })
        .await
        .unwrap();
        revoked.sort();
        let mut expected = fx.live.clone();
        expected.sort();
        assert_eq!(revoked, expected, "{backend:?}: only live grants");

        let cid = fx.client_id.clone();
        let (grant_rows, rt, revs): (Vec<GrantRow>, Vec<(String, String)>, Vec<RevocationRow>) =
            app.platform
                .db
                .run(move |c| {
                    Ok((
                        grant_rows::table
                            .filter(grant_rows::client_id.eq(&cid))
                            .order(grant_rows::id.asc())
                            .select((
                                grant_rows::id,
                                grant_rows::status,
                                grant_rows::revoked_by,
                                grant_rows::revoked_at,
                            ))
                            .load(c)?,
                        refresh_tokens::table
                            .order(refresh_tokens::grant_id.asc())
                            .select((refresh_tokens::grant_id, refresh_tokens::status))
                            .load(c)?,
                        revocations::table
                            .order(revocations::seq.asc())
                            .select((
                                revocations::grant_id,
                                revocations::revocation_id,
                                revocations::reason,
                            ))
                            .load(c)?,
                    ))
                })
                .await
                .unwrap();
        for (id, status, by, at) in &grant_rows {
            if fx.live.contains(id) {
                assert_eq!((status.as_str(), by.as_deref()), ("revoked", Some("staff")));
                assert!(at.is_some());
            } else {
                assert_eq!(
                    (status.as_str(), by.as_deref()),
                    ("rejected", None),
                    "ended grants untouched"
                );
            }
        }
        for (gid, status) in &rt {
            assert_eq!(
                status,
                if fx.live.contains(gid) {
                    "revoked"
                } else {
                    "active"
                },
                "{gid}"
            );
        }
        assert_eq!(
            revs.len(),
            2 + 4,
            "one per grant + one per issued token: {revs:?}"
        );
        assert!(
            revs.iter()
                .all(|(g, _, reason)| fx.live.contains(g) && reason == "client_suspended")
        );
        assert!(revs.iter().all(|(g, _, _)| *g != fx.ended));
        assert_eq!(revs.iter().filter(|(_, r, _)| r.is_none()).count(), 2);
        let actions = app.audit_actions().await;
        assert_eq!(actions.iter().filter(|a| *a == "grant.revoked").count(), 2);

        // Idempotent.
        let cid = fx.client_id.clone();
        let again = platform::revocation::write(&app.platform, move |c, r| {
            developer_portal::revoke_client_grants(c, r, &cid, "staff", now)
        })
        .await
        .unwrap();
        assert!(again.is_empty());

        // Deleting a client through the API revokes its grants with revoked_by = client.
        let (api_client, _) = app.sandbox_client(&dev).await;
        let id = api_client.clone();
        app.platform
            .db
            .write(move |c| Ok(insert_grants(c, "existing", &id)?))
            .await
            .unwrap();
        assert_eq!(
            app.api(
                Method::DELETE,
                &format!("/api/v1/clients/{api_client}"),
                Some(&dev),
                None
            )
            .await
            .status(),
            204
        );
        let id = api_client.clone();
        let (statuses, reasons): (Vec<(String, Option<String>)>, Vec<String>) = app
            .platform
            .db
            .run(move |c| {
                Ok((
                    grant_rows::table
                        .filter(grant_rows::client_id.eq(&id))
                        .filter(grant_rows::status.ne("rejected"))
                        .select((grant_rows::status, grant_rows::revoked_by))
                        .load(c)?,
                    revocations::table
                        .filter(revocations::grant_id.like(format!("g_{id}%")))
                        .select(revocations::reason)
                        .load(c)?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(
            statuses,
            vec![("revoked".to_string(), Some("client".to_string())); 2]
        );
        assert_eq!(reasons.len(), 6);
        assert!(reasons.iter().all(|r| r == "client_deleted"));
        app.stop().await;
    }
}

#[tokio::test]
async fn client_suspension_needs_a_second_distinct_staff_member() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let dev = app.developer_token("suspend@fintech.example").await;
        let (client_id, _) = app.sandbox_client(&dev).await;
        let id = client_id.clone();
        app.platform
            .db
            .write(move |c| Ok(insert_grants(c, "existing", &id)?))
            .await
            .unwrap();
        let ops_a = app.staff_token("ops-a").await;
        let ops_b = app.staff_token("ops-b").await;

        let path = format!("/api/v1/admin/clients/{client_id}/suspension");
        problem(
            app.api(
                Method::POST,
                &path,
                Some(&ops_a),
                Some(&json!({"justification": "no"})),
            )
            .await,
            400,
        )
        .await;
        let r = app
            .api(
                Method::POST,
                &path,
                Some(&ops_a),
                Some(&json!({"justification": "fraud reports from three customers"})),
            )
            .await;
        assert_eq!(r.status(), 202);
        let req: Value = r.json().await.unwrap();
        assert_eq!(
            (req["status"].as_str(), req["action"].as_str()),
            (Some("pending"), Some("client.suspend"))
        );
        let rid = req["id"].as_str().unwrap().to_string();
        // A second open request for the same target is refused.
        problem(
            app.api(
                Method::POST,
                &path,
                Some(&ops_b),
                Some(&json!({"justification": "fraud reports again, duplicate"})),
            )
            .await,
            400,
        )
        .await;

        // Self-approval refused; nothing changes.
        let approve = format!("/api/v1/admin/approvals/{rid}/approve");
        let p = problem(
            app.api(
                Method::POST,
                &approve,
                Some(&ops_a),
                Some(&json!({"justification": "approving my own request"})),
            )
            .await,
            403,
        )
        .await;
        assert!(p["detail"].as_str().unwrap().contains("made it"));
        let c: Value = app
            .api(
                Method::GET,
                &format!("/api/v1/clients/{client_id}"),
                Some(&dev),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(c["status"], "active");

        let r = app
            .api(
                Method::POST,
                &approve,
                Some(&ops_b),
                Some(&json!({"justification": "verified the fraud reports"})),
            )
            .await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "approved");
        assert!(v["decided_by"].as_str().unwrap().starts_with("staff_"));
        let c: Value = app
            .api(
                Method::GET,
                &format!("/api/v1/clients/{client_id}"),
                Some(&dev),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(c["status"], "suspended");
        let id = client_id.clone();
        let by: Vec<Option<String>> = app
            .platform
            .db
            .run(move |c| {
                Ok(grant_rows::table
                    .filter(grant_rows::client_id.eq(&id))
                    .filter(grant_rows::status.eq("revoked"))
                    .select(grant_rows::revoked_by)
                    .load(c)?)
            })
            .await
            .unwrap();
        assert_eq!(by, vec![Some("staff".to_string()); 2]);
        // Decided once; a suspended client cannot be changed by its developer.
        problem(
            app.api(
                Method::POST,
                &approve,
                Some(&ops_b),
                Some(&json!({"justification": "approving it twice now"})),
            )
            .await,
            409,
        )
        .await;
        problem(
            app.api(
                Method::POST,
                &format!("/api/v1/clients/{client_id}/secret"),
                Some(&dev),
                None,
            )
            .await,
            409,
        )
        .await;
        let list: Value = app
            .api(
                Method::GET,
                "/api/v1/admin/approvals?status=approved",
                Some(&ops_a),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(list["requests"].as_array().unwrap().len(), 1);
        app.stop().await;
    }
}

#[tokio::test]
async fn approval_service_refuses_self_approval_expired_and_inactive_approvers() {
    use developer_portal::approvals::{
        self, ApprovalAction, ApprovalError, ApprovalStatus, ApprovalTarget,
    };
    for backend in backends() {
        let app = spawn_app(backend).await;
        let a = app.create_staff("ops-a").await;
        let b = app.create_staff("ops-b").await;
        let now = app.platform.now();
        let (a2, b2) = (a.clone(), b.clone());
        app.platform
            .db
            .write(move |c| {
                let r = approvals::request(
                    c,
                    ApprovalAction::RotateSigningKeys,
                    ApprovalTarget::new("signing_keys", "current"),
                    json!({"reason": "scheduled"}),
                    "quarterly key rotation",
                    &a2,
                    now,
                )
                .map_err(|e| platform::storage::StorageError::Conflict(e.to_string()))?;
                assert!(matches!(
                    approvals::decide(c, &r.id, &a2, true, "self approval attempt", now),
                    Err(ApprovalError::SelfApproval)
                ));
                let late = now + Duration::hours(25);
                assert!(matches!(
                    approvals::decide(c, &r.id, &b2, true, "too late to approve", late),
                    Err(ApprovalError::Expired)
                ));
                assert_eq!(
                    approvals::get(c, &r.id).unwrap().status_at(late),
                    ApprovalStatus::Expired
                );
                let ok = approvals::decide(c, &r.id, &b2, true, "rotation is due", now).unwrap();
                assert_eq!(
                    ok.approved_action(),
                    Some(ApprovalAction::RotateSigningKeys),
                    "the caller executes it"
                );
                // Wrong target kind and a missing justification are refused.
                assert!(matches!(
                    approvals::request(
                        c,
                        ApprovalAction::SuspendClient,
                        ApprovalTarget::new("customer", "x"),
                        json!({}),
                        "a good reason here",
                        &a2,
                        now
                    ),
                    Err(ApprovalError::Invalid(..))
                ));
                assert!(matches!(
                    approvals::request(
                        c,
                        ApprovalAction::AccessCustomerGrants,
                        ApprovalTarget::new("customer", "x"),
                        json!({}),
                        "",
                        &a2,
                        now
                    ),
                    Err(ApprovalError::Invalid(..))
                ));
                // A disabled approver cannot decide.
                let r = approvals::request(
                    c,
                    ApprovalAction::AccessCustomerGrants,
                    ApprovalTarget::new("customer", "cust_1"),
                    json!({}),
                    "customer complaint #42",
                    &a2,
                    now,
                )
                .unwrap();
                diesel::update(staff::table.filter(staff::id.eq(&b2)))
                    .set(staff::status.eq("disabled"))
                    .execute(c)?;
                assert!(matches!(
                    approvals::decide(c, &r.id, &b2, false, "rejecting as disabled", now),
                    Err(ApprovalError::ApproverInactive)
                ));
                Ok(())
            })
            .await
            .unwrap();
        app.stop().await;
    }
}

#[tokio::test]
async fn page_forms_refuse_missing_or_wrong_csrf_tokens_and_change_nothing() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let web = browser_client();
        // Sign-up without / with a wrong double-submit token.
        let token = app.form_csrf(&web, "/developers/signup").await;
        for csrf in [None, Some("lcsrf_wrong-wrong-wrong")] {
            let mut form = vec![
                ("email", "page@fintech.example"),
                ("display_name", "Page"),
                ("password", PASSWORD),
            ];
            if let Some(c) = csrf {
                form.push(("csrf_token", c));
            }
            let r = web
                .post(app.url("/developers/signup"))
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{backend:?}");
        }
        assert_eq!(count(&app, "developers").await, 0);
        // With the right token: signed up and logged in.
        let r = web
            .post(app.url("/developers/signup"))
            .form(&[
                ("email", "page@fintech.example"),
                ("display_name", "Page"),
                ("password", PASSWORD),
                ("csrf_token", &token),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(count(&app, "developers").await, 1);

        let form_token = app.form_csrf(&web, "/developers/clients/new").await;
        let fields = [
            ("name", "Paged"),
            ("environment", "sandbox"),
            ("redirect_uris", "http://127.0.0.1:9000/cb"),
            ("action_accounts:read", "on"),
        ];
        for csrf in [None, Some("csrf_wrong")] {
            let mut form = fields.to_vec();
            if let Some(c) = csrf {
                form.push(("csrf_token", c));
            }
            let r = web
                .post(app.url("/developers/clients/new"))
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403);
        }
        assert_eq!(count(&app, "clients").await, 0, "nothing created");
        // Another session's token does not work either.
        let other = browser_client();
        app.sign_up_on_page(&other, "other@fintech.example").await;
        let other_token = app.form_csrf(&other, "/developers/clients/new").await;
        let mut form = fields.to_vec();
        form.push(("csrf_token", &other_token));
        assert_eq!(
            web.post(app.url("/developers/clients/new"))
                .form(&form)
                .send()
                .await
                .unwrap()
                .status(),
            403
        );
        assert_eq!(count(&app, "clients").await, 0);

        let mut form = fields.to_vec();
        form.push(("csrf_token", &form_token));
        let r = web
            .post(app.url("/developers/clients/new"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let html = r.text().await.unwrap();
        assert!(html.contains("id=\"client-secret\""), "secret shown once");
        assert_eq!(count(&app, "clients").await, 1);
        // The detail page never shows it again.
        let list = web
            .get(app.url("/developers/clients"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let id_at = list.find("/developers/clients/c_").unwrap() + "/developers/clients/".len();
        let id: String = list[id_at..].chars().take_while(|c| *c != '"').collect();
        let detail = web
            .get(app.url(&format!("/developers/clients/{id}")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!detail.contains("client-secret"));
        assert!(csrf_from_html(&detail).is_some());

        // Staff pages: not logged in -> login page; a developer session is not a staff session.
        let r = web.get(app.url("/developers/staff")).send().await.unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/developers/staff/login");
        app.stop().await;
    }
}

#[tokio::test]
async fn portal_pages_work_in_chromium() {
    let app = spawn_app(e2e_tests::Backend::Sqlite).await;
    let a = app.create_staff("ops-a").await;
    let b = app.create_staff("ops-b").await;
    let (code_a, code_b) = (app.enrolment_code(&a).await, app.enrolment_code(&b).await);
    let args = [app.address.as_str(), PASSWORD, &code_a, &code_b];
    if let Some(result) = e2e_tests::browser::run("portal.mjs", &args).await {
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(result["a11y"], serde_json::json!([]), "axe-core and reflow");
        assert_eq!(result["kycStatus"], "approved", "{result}");
    }
    let statuses: Vec<String> = app
        .platform
        .db
        .run(|c| {
            Ok(kyc_submissions::table
                .select(kyc_submissions::status)
                .load(c)?)
        })
        .await
        .unwrap();
    if e2e_tests::browser::unavailable_reason().is_none() {
        assert_eq!(statuses, ["approved"]);
    }
    app.stop().await;
}

#[tokio::test]
async fn two_simultaneous_approvals_approve() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let ops_a = app.staff_token("ops-a").await;
        let ops_b = app.staff_token("ops-b").await;
        for i in 0..3 {
            let dev = app
                .developer_token(&format!("race{i}@fintech.example"))
                .await;
            let s = app.submitted_kyc(&dev).await;
            let (a, b) = tokio::join!(
                app.review_kyc(&ops_a, &s, "approve"),
                app.review_kyc(&ops_b, &s, "approve")
            );
            assert_eq!(
                (a.status().as_u16(), b.status().as_u16()),
                (200, 200),
                "{backend:?}"
            );
            let k: Value = app
                .api(Method::GET, "/api/v1/developers/me/kyc", Some(&dev), None)
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(k["status"], "approved", "{backend:?} round {i}");
        }
        app.stop().await;
    }
}

/// Wrong passwords sent all at once are counted before they are checked: of 30 at once, exactly
/// the allowance (10) is checked and the rest are refused, for developers and staff alike; and
/// right passwords count nothing.
#[tokio::test]
async fn a_burst_of_wrong_passwords_is_capped_at_the_allowance() {
    async fn burst(app: &TestApp, path: &str, body: Value) -> (usize, usize) {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..30 {
            let (client, url, body) = (app.client.clone(), app.url(path), body.clone());
            set.spawn(async move {
                client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            });
        }
        let statuses = set.join_all().await;
        let checked = statuses.iter().filter(|s| **s == 401).count();
        let refused = statuses.iter().filter(|s| **s == 429).count();
        (checked, refused)
    }
    for backend in backends() {
        let app = spawn_app(backend).await;
        app.developer_token("burst@fintech.example").await;
        for _ in 0..3 {
            let r = app
                .post_developer_login("burst@fintech.example", PASSWORD)
                .await;
            assert_eq!(r.status(), 200, "{backend:?}");
        }
        let wrong = json!({ "email": "burst@fintech.example", "password": "wrong password!!" });
        let developer = burst(&app, "/api/v1/developers/login", wrong).await;
        assert_eq!(developer, (10, 20), "{backend:?}");
        app.staff_token("ops1").await;
        let wrong = json!({ "username": "ops1", "password": "wrong password!!" });
        let staff = burst(&app, "/api/v1/admin/login", wrong).await;
        assert_eq!(staff, (10, 20), "{backend:?}");
        app.stop().await;
    }
}

/// A developer or staff member whose password someone is guessing from one address still logs in
/// from their own.
#[tokio::test]
async fn failed_logins_elsewhere_do_not_lock_developers_or_staff_out() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        app.developer_token("owner@fintech.example").await;
        for _ in 0..12 {
            app.post_developer_login("owner@fintech.example", "wrong password!!")
                .await;
        }
        assert_eq!(
            app.post_developer_login("owner@fintech.example", PASSWORD)
                .await
                .status(),
            429,
            "{backend:?}"
        );
        let r = app
            .client_from("127.0.0.2")
            .post(app.url("/api/v1/developers/login"))
            .json(&serde_json::json!({ "email": "owner@fintech.example", "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{backend:?}");
        // Staff the same way: failures from one address do not stop ops1 elsewhere (four-eyes
        // approvals need both staff members).
        app.staff_token("ops1").await;
        for _ in 0..12 {
            app.post_admin_login("ops1", "wrong password!!").await;
        }
        assert_eq!(
            app.post_admin_login("ops1", PASSWORD).await.status(),
            429,
            "{backend:?}"
        );
        let r = app
            .client_from("127.0.0.3")
            .post(app.url("/api/v1/admin/login"))
            .json(&serde_json::json!({ "username": "ops1", "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{backend:?}");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_suspended_client_works_again_only_with_a_second_staff_member() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let dev = app.developer_token("unsuspend@fintech.example").await;
        let (client_id, _) = app.sandbox_client(&dev).await;
        let ops_a = app.staff_token("ops-a").await;
        let ops_b = app.staff_token("ops-b").await;
        let why = |text: &str| json!({ "justification": text });
        let decide = |rid: String, who: String| {
            let app = &app;
            async move {
                app.api(
                    Method::POST,
                    &format!("/api/v1/admin/approvals/{rid}/approve"),
                    Some(&who),
                    Some(&json!({ "justification": "checked the evidence in the ticket" })),
                )
                .await
            }
        };
        let unsuspend = format!("/api/v1/admin/clients/{client_id}/unsuspension");
        // An active client has nothing to restore.
        problem(
            app.api(
                Method::POST,
                &unsuspend,
                Some(&ops_a),
                Some(&why("restore it please")),
            )
            .await,
            409,
        )
        .await;
        let suspend = format!("/api/v1/admin/clients/{client_id}/suspension");
        let r = app
            .api(
                Method::POST,
                &suspend,
                Some(&ops_a),
                Some(&why("fraud reports from customers")),
            )
            .await;
        let rid = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            decide(rid, ops_b.clone()).await.status(),
            200,
            "{backend:?}"
        );
        let status = || {
            let (app, dev, id) = (&app, dev.clone(), client_id.clone());
            async move {
                app.api(
                    Method::GET,
                    &format!("/api/v1/clients/{id}"),
                    Some(&dev),
                    None,
                )
                .await
                .json::<Value>()
                .await
                .unwrap()["status"]
                    .clone()
            }
        };
        assert_eq!(status().await, "suspended");

        let r = app
            .api(
                Method::POST,
                &unsuspend,
                Some(&ops_b),
                Some(&why("the fraud reports were mistaken")),
            )
            .await;
        assert_eq!(r.status(), 202, "{backend:?}");
        let req: Value = r.json().await.unwrap();
        assert_eq!(req["action"], "client.unsuspend");
        let rid = req["id"].as_str().unwrap().to_string();
        // Not by the requester; nothing changes.
        assert_eq!(decide(rid.clone(), ops_b.clone()).await.status(), 403);
        assert_eq!(status().await, "suspended");
        assert_eq!(
            decide(rid, ops_a.clone()).await.status(),
            200,
            "{backend:?}"
        );
        assert_eq!(status().await, "active", "{backend:?}");
        assert!(
            app.audit_actions()
                .await
                .iter()
                .any(|a| a == "client.unsuspended")
        );
        app.stop().await;
    }
}

/// KYC records hold developers' personal data: support and security staff see the queue, but
/// reading a submission and reviewing it need the compliance role; a refusal reads and writes
/// nothing (no review, no `kyc.viewed` event).
#[tokio::test]
async fn reading_and_reviewing_kyc_need_the_compliance_role() {
    use developer_portal::StaffRole;
    for backend in backends() {
        let app = spawn_app(backend).await;
        let dev = app.developer_token("kyc-roles@dev.example").await;
        let submission = app.submitted_kyc(&dev).await;
        let detail = format!("/api/v1/admin/kyc/{submission}");
        for (name, roles) in [
            ("support-1", &[StaffRole::Support][..]),
            ("security-1", &[StaffRole::Security, StaffRole::Support][..]),
        ] {
            let token = app.staff_token_with_roles(name, roles).await;
            let queue = app
                .api(Method::GET, "/api/v1/admin/kyc", Some(&token), None)
                .await;
            assert_eq!(queue.status(), 200, "{name} sees the queue");
            let r = app.api(Method::GET, &detail, Some(&token), None).await;
            let p = problem(r, 403).await;
            assert!(p["detail"].as_str().unwrap().contains("compliance role"));
            problem(app.review_kyc(&token, &submission, "approve").await, 403).await;
        }
        assert_eq!(count(&app, "kyc_reviews").await, 0, "no review written");
        let viewed = app.audit_actions().await.into_iter();
        let viewed = viewed.filter(|a| a == "kyc.viewed").count();
        assert_eq!(viewed, 0, "nothing was read");

        let compliance = app
            .staff_token_with_roles("compliance-1", &[StaffRole::Compliance])
            .await;
        let r = app.api(Method::GET, &detail, Some(&compliance), None).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            app.review_kyc(&compliance, &submission, "approve")
                .await
                .status(),
            200
        );
        assert_eq!(count(&app, "kyc_reviews").await, 1);
    }
}

/// The cap on clients per developer holds when creates arrive at once: with five places left,
/// twenty concurrent creates make exactly five clients, and the rest are refused (409).
#[tokio::test]
async fn concurrent_creates_never_pass_the_client_cap() {
    use developer_portal::clients::MAX_CLIENTS;
    for backend in backends() {
        let app = spawn_app(backend).await;
        let dev = app.developer_token("many@fintech.example").await;
        for _ in 0..MAX_CLIENTS - 5 {
            let r = app.post_client(&dev, &client_body("sandbox")).await;
            assert_eq!(r.status(), 201, "{backend:?}");
        }
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (client, url, dev) = (app.client.clone(), app.url("/api/v1/clients"), dev.clone());
            set.spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(dev)
                    .json(&client_body("sandbox"));
                r.send().await.unwrap().status().as_u16()
            });
        }
        let mut statuses = set.join_all().await;
        statuses.sort_unstable();
        let made = statuses.iter().filter(|s| **s == 201).count();
        let refused = statuses.iter().filter(|s| **s == 409).count();
        assert_eq!((made, refused), (5, 15), "{backend:?}: {statuses:?}");
        let r = app.post_client(&dev, &client_body("sandbox")).await;
        assert_eq!(r.status(), 409, "{backend:?}");
        app.stop().await;
    }
}
