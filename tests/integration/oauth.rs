//! OAuth2 authorization server flows, end to end over HTTP, on every backend.

use std::sync::Arc;

use diesel::prelude::*;
use e2e_tests::oauth::*;
use e2e_tests::{Backend, TestApp, backends, spawn_app_with, spawn_demo_app};
use platform::storage::schema::{authorization_requests, grant_rows};
use serde_json::{Value, json};

const DEMO: (&str, &str) = (DEMO_CLIENT, DEMO_SECRET);
/// A second sandbox client with the demo redirect URI ([`insert_other_client`]).
const OTHER: (&str, &str) = ("c_other", "cs_other-secret-value-0123456789");

async fn insert_other_client(app: &TestApp) {
    insert_client(app, OTHER.0, "sandbox", DEMO_REDIRECT, OTHER.1).await;
}

fn rar_all() -> String {
    details(json!({
        "type": "account_access",
        "actions": ["accounts:read", "balances:read", "transactions:read"],
        "transactions_from": "2026-01-01",
        "transactions_until": "2026-06-30",
        "merchants": ["m_fresh_market", "m_bean_there"],
    }))
}

async fn count_grants(app: &TestApp) -> i64 {
    app.platform
        .db
        .run(|c| Ok(grant_rows::table.count().get_result(c)?))
        .await
        .unwrap()
}

async fn count_requests(app: &TestApp) -> i64 {
    app.platform
        .db
        .run(|c| Ok(authorization_requests::table.count().get_result(c)?))
        .await
        .unwrap()
}

/// Approves the whole request for alice's first account; returns (code, verifier).
async fn code_for(app: &TestApp, client: (&str, &str), redirect: &str) -> (String, String) {
    let (verifier, challenge) = pkce();
    let acc = app.account_ids("alice").await[0].clone();
    let loc = app
        .authorize_with_par(
            client,
            redirect,
            &rar_all(),
            &challenge,
            &[
                ("decision", "approve"),
                ("account", &acc),
                ("action", "accounts:read"),
                ("action", "balances:read"),
                ("action", "transactions:read"),
                ("merchant", "m_fresh_market"),
                ("merchant", "m_bean_there"),
            ],
        )
        .await;
    (
        query_param(&loc, "code").expect("code in redirect"),
        verifier,
    )
}

async fn exchange(
    app: &TestApp,
    client: (&str, &str),
    code: &str,
    verifier: &str,
) -> reqwest::Response {
    app.exchange_code(client, code, DEMO_REDIRECT, verifier)
        .await
}

/// A grant approved by alice for the demo client, exchanged: the token response.
async fn tokens_for(app: &TestApp) -> Value {
    let (code, verifier) = code_for(app, DEMO, DEMO_REDIRECT).await;
    let r = exchange(app, DEMO, &code, &verifier).await;
    assert_eq!(r.status(), 200, "code exchange");
    r.json().await.unwrap()
}

#[tokio::test]
async fn metadata_advertises_the_contract() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    let m: Value = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["issuer"], app.address);
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        m["authorization_details_types_supported"],
        json!(["account_access"])
    );
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    assert_eq!(
        m["pushed_authorization_request_endpoint"],
        format!("{}/oauth2/par", app.address)
    );
    assert_eq!(
        m["biscuit_keys_uri"],
        format!("{}/.well-known/biscuit-keys", app.address)
    );
    assert!(
        !m["grant_types_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "password" || g == "implicit")
    );
    let keys: Value = app
        .get("/.well-known/biscuit-keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    assert_eq!(keys["keys"][0]["alg"], "Ed25519");
    app.stop().await;
}

/// The whole flow with narrowing, then offline verification of the Biscuit, introspection,
/// refresh rotation and replay detection.
#[tokio::test]
async fn full_flow_with_narrowing_refresh_and_replay() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let accounts = app.account_ids("alice").await;
        let (verifier, challenge) = pkce();
        let loc = app
            .authorize_with_par(
                DEMO,
                DEMO_REDIRECT,
                &rar_all(),
                &challenge,
                &[
                    ("decision", "approve"),
                    ("account", &accounts[1]),
                    ("action", "transactions:read"),
                    ("transactions_from", "2026-02-01"),
                    ("transactions_until", "2026-03-31"),
                    ("merchant", "m_bean_there"),
                    (
                        "expires_at",
                        &(chrono::Utc::now() + chrono::Duration::days(30))
                            .format("%Y-%m-%d")
                            .to_string(),
                    ),
                ],
            )
            .await;
        assert!(loc.starts_with(DEMO_REDIRECT), "{loc}");
        assert_eq!(query_param(&loc, "state").as_deref(), Some("st-123"));
        assert_eq!(
            query_param(&loc, "iss").as_deref(),
            Some(app.address.as_str())
        );
        let code = query_param(&loc, "code").unwrap();

        let r = exchange(&app, DEMO, &code, &verifier).await;
        assert_eq!(r.status(), 200, "{backend:?}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let tokens: Value = r.json().await.unwrap();
        assert_eq!(tokens["token_type"], "Bearer");
        assert!(tokens["expires_in"].as_i64().unwrap() <= 600);
        assert_eq!(tokens["scope"], "transactions:read");
        let granted = &tokens["authorization_details"][0];
        assert_eq!(granted["accounts"], json!([accounts[1]]));
        assert_eq!(granted["merchants"], json!(["m_bean_there"]));
        assert_eq!(granted["transactions_from"], "2026-02-01T00:00:00Z");
        assert_eq!(granted["transactions_until"], "2026-03-31T23:59:59Z");
        let grant_id = tokens["grant_id"].as_str().unwrap().to_string();

        // A resource server verifies offline with the published keys.
        let keys = app
            .get("/.well-known/biscuit-keys")
            .await
            .text()
            .await
            .unwrap();
        let verifier_rs = ::grants::Verifier::new(
            ::grants::KeySet::from_json(&keys).unwrap(),
            ::grants::NoRevocationCheck,
        );
        let access = tokens["access_token"].as_str().unwrap();
        let now = chrono::Utc::now();
        let ok = verifier_rs
            .verify(
                access,
                &::grants::Request::new(::grants::Action::TransactionsRead, now)
                    .account(::grants::AccountId::parse(accounts[1].clone()).unwrap()),
            )
            .unwrap();
        assert_eq!(ok.scope.grant.as_str(), grant_id);
        assert!(
            verifier_rs
                .verify(
                    access,
                    &::grants::Request::new(::grants::Action::TransactionsRead, now)
                        .account(::grants::AccountId::parse(accounts[0].clone()).unwrap())
                )
                .is_err(),
            "an account the customer unticked is refused"
        );
        assert!(
            verifier_rs
                .verify(
                    access,
                    &::grants::Request::new(::grants::Action::BalancesRead, now)
                )
                .is_err()
        );

        let intro = app.post_introspect(DEMO, access).await;
        assert_eq!(intro["active"], true, "{intro}");
        assert_eq!(intro["grant_id"], grant_id.as_str());
        assert_eq!(intro["grant_status"], "authorized");
        assert_eq!(
            intro["authorization_details"][0]["accounts"],
            json!([accounts[1]])
        );

        // Refresh rotates; the old refresh token is single use, and its replay ends the grant.
        let rt1 = tokens["refresh_token"].as_str().unwrap().to_string();
        let r = app
            .post_token(
                DEMO,
                &[("grant_type", "refresh_token"), ("refresh_token", &rt1)],
            )
            .await;
        assert_eq!(r.status(), 200);
        let t2: Value = r.json().await.unwrap();
        let rt2 = t2["refresh_token"].as_str().unwrap().to_string();
        assert_ne!(rt1, rt2);
        assert_eq!(
            t2["authorization_details"], tokens["authorization_details"],
            "refresh never widens"
        );

        let r = app
            .post_token(
                DEMO,
                &[("grant_type", "refresh_token"), ("refresh_token", &rt1)],
            )
            .await;
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
        let r = app
            .post_token(
                DEMO,
                &[("grant_type", "refresh_token"), ("refresh_token", &rt2)],
            )
            .await;
        assert_eq!(
            r.status(),
            400,
            "the whole family is revoked after a replay"
        );
        let intro = app
            .post_introspect(DEMO, t2["access_token"].as_str().unwrap())
            .await;
        assert_eq!(intro["active"], false);
        assert_eq!(intro["grant_status"], "revoked");

        // Everything above left an audit trail that verifies.
        app.platform.audit.link_now().await.unwrap();
        let report = app.platform.audit.verify().await.unwrap();
        assert!(report.valid);
        let actions: Vec<String> = app
            .platform
            .db
            .run(|c| {
                Ok(platform::storage::schema::audit_events::table
                    .select(platform::storage::schema::audit_events::action)
                    .load(c)?)
            })
            .await
            .unwrap();
        for a in [
            "customer.login",
            "consent.approved",
            "token.issued",
            "token.refreshed",
            "refresh_token.replayed",
            "grant.revoked",
        ] {
            assert!(
                actions.iter().any(|x| x == a),
                "{backend:?}: audit has {a}: {actions:?}"
            );
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn redirect_uri_must_match_exactly_and_errors_never_redirect_to_it() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    let (_, challenge) = pkce();
    let variants = [
        "http://127.0.0.1:8081/callback/",
        "http://127.0.0.1:8081/Callback",
        "http://127.0.0.1:8081/callback?x=1",
        "http://127.0.0.1:8081/callback#frag",
        "http://127.0.0.1:8081/callbackx",
        "http://127.0.0.1:8081/",
        "http://localhost:8081/callback",
        "https://127.0.0.1:8081/callback",
        "http://evil.example/callback",
        "",
    ];
    for uri in variants {
        let r = app
            .get_authorize(&[
                ("client_id", DEMO_CLIENT),
                ("response_type", "code"),
                ("redirect_uri", uri),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("scope", "accounts:read"),
            ])
            .await;
        assert_eq!(r.status(), 400, "{uri:?}");
        assert!(
            r.headers().get("location").is_none(),
            "{uri:?}: must not redirect"
        );
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
    // Unknown client: error page too.
    let r = app
        .get_authorize(&[
            ("client_id", "c_nope"),
            ("redirect_uri", DEMO_REDIRECT),
            ("response_type", "code"),
        ])
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(count_requests(&app).await, 0, "nothing stored");
    app.stop().await;
}

/// An authorization error shown on our own page (400, HTML, no Location) naming `code`.
async fn assert_error_page(r: reqwest::Response, code: &str, case: &str) {
    assert_eq!(r.status(), 400, "{case}");
    assert!(r.headers().get("location").is_none(), "{case}: redirected");
    let body = r.text().await.unwrap();
    assert!(body.contains(code), "{case}: {body}");
}

#[tokio::test]
async fn pkce_is_required_and_s256_only() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    let (verifier, challenge) = pkce();
    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        ("missing", vec![]),
        (
            "plain",
            vec![
                ("code_challenge", verifier.as_str()),
                ("code_challenge_method", "plain"),
            ],
        ),
        (
            "no method (defaults to plain)",
            vec![("code_challenge", challenge.as_str())],
        ),
        (
            "malformed",
            vec![
                ("code_challenge", "short"),
                ("code_challenge_method", "S256"),
            ],
        ),
    ];
    for (name, extra) in cases {
        let mut params = vec![
            ("client_id", DEMO_CLIENT),
            ("response_type", "code"),
            ("redirect_uri", DEMO_REDIRECT),
            ("state", "s1"),
            ("scope", "accounts:read"),
        ];
        params.extend(extra);
        // An unpushed request of a sandbox client: the error is shown here, not redirected
        // (nobody vouches for that redirect URI: RFC 9700 4.11.2).
        let r = app.get_authorize(&params).await;
        assert_error_page(r, "invalid_request", name).await;
    }
    // PAR refuses them the same way.
    let r = app
        .post_par(
            DEMO,
            &[
                ("response_type", "code"),
                ("redirect_uri", DEMO_REDIRECT),
                ("scope", "accounts:read"),
                ("code_challenge", &verifier),
                ("code_challenge_method", "plain"),
            ],
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    assert_eq!(count_requests(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn code_is_bound_to_verifier_redirect_and_client_and_single_use() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        insert_other_client(&app).await;
        app.login_customer("alice").await;

        // Wrong verifier: refused (and the code is burnt).
        let (code, _) = code_for(&app, DEMO, DEMO_REDIRECT).await;
        let (wrong, _) = pkce();
        let r = exchange(&app, DEMO, &code, &wrong).await;
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");

        // Missing verifier, wrong redirect_uri.
        let (code, verifier) = code_for(&app, DEMO, DEMO_REDIRECT).await;
        let r = app
            .post_token(
                DEMO,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", DEMO_REDIRECT),
                ],
            )
            .await;
        assert_eq!(r.status(), 400);
        let (code2, verifier2) = code_for(&app, DEMO, DEMO_REDIRECT).await;
        let r = app
            .post_token(
                DEMO,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code2),
                    ("redirect_uri", "http://127.0.0.1:8081/other"),
                    ("code_verifier", &verifier2),
                ],
            )
            .await;
        assert_eq!(r.status(), 400);
        let _ = verifier;

        // Another client cannot redeem it.
        let (code3, verifier3) = code_for(&app, DEMO, DEMO_REDIRECT).await;
        let r = exchange(&app, OTHER, &code3, &verifier3).await;
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");

        // Reuse: the second exchange fails and revokes what the first one issued.
        let (code4, verifier4) = code_for(&app, DEMO, DEMO_REDIRECT).await;
        let first: Value = exchange(&app, DEMO, &code4, &verifier4)
            .await
            .json()
            .await
            .unwrap();
        assert!(first["access_token"].is_string(), "{first}");
        let r = exchange(&app, DEMO, &code4, &verifier4).await;
        assert_eq!(r.status(), 400, "{backend:?}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
        let intro = app
            .post_introspect(DEMO, first["access_token"].as_str().unwrap())
            .await;
        assert_eq!(
            intro["active"], false,
            "{backend:?}: tokens from the first use are revoked"
        );
        let r = app
            .post_token(
                DEMO,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", first["refresh_token"].as_str().unwrap()),
                ],
            )
            .await;
        assert_eq!(r.status(), 400);
        app.stop().await;
    }
}

#[tokio::test]
async fn codes_expire_after_sixty_seconds() {
    let clock = platform::clock::OffsetClock::default();
    let app = spawn_app_with(
        Backend::Sqlite,
        consent::ServeOptions {
            demo: true,
            clock: Some(Arc::new(clock.clone())),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    app.login_customer("alice").await;
    let (code, verifier) = code_for(&app, DEMO, DEMO_REDIRECT).await;
    clock.advance(chrono::Duration::seconds(61));
    let r = exchange(&app, DEMO, &code, &verifier).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    app.stop().await;
}

#[tokio::test]
async fn client_authentication_failures_look_the_same() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    let form = [("grant_type", "refresh_token"), ("refresh_token", "rt_x")];
    let mut bodies = Vec::new();
    for creds in [
        (DEMO_CLIENT, "cs_wrong"),
        ("c_unknown", "cs_whatever"),
        (DEMO_CLIENT, ""),
    ] {
        let r = app.post_token(creds, &form).await;
        assert_eq!(r.status(), 401, "{creds:?}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
        bodies.push(r.json::<Value>().await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert_eq!(bodies[0]["error"], "invalid_client");
    // No credentials at all; and two methods at once.
    let r = app.post_form("/oauth2/token", None, &form).await;
    assert_eq!(r.status(), 401);
    let r = app
        .post_form(
            "/oauth2/token",
            Some(DEMO),
            &[
                ("grant_type", "refresh_token"),
                ("client_secret", DEMO_SECRET),
            ],
        )
        .await;
    assert_eq!(r.status(), 400);
    // client_secret_post works.
    let r = app
        .post_form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "rt_unknown"),
                ("client_id", DEMO_CLIENT),
                ("client_secret", DEMO_SECRET),
            ],
        )
        .await;
    assert_eq!(
        r.status(),
        400,
        "authenticated; the refresh token is what is wrong"
    );
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    app.stop().await;
}

#[tokio::test]
async fn token_endpoint_refuses_unsupported_and_malformed_requests() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    // client_credentials serves only scope=ssf (the Shared Signals API; tests in ssf.rs).
    let r = app
        .post_token(DEMO, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_scope");
    for gt in [
        "password",
        "implicit",
        "urn:ietf:params:oauth:grant-type:device_code",
    ] {
        let r = app
            .post_token(
                DEMO,
                &[("grant_type", gt), ("username", "alice"), ("password", "x")],
            )
            .await;
        assert_eq!(r.status(), 400, "{gt}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            "unsupported_grant_type"
        );
    }
    let r = app.post_token(DEMO, &[("code", "x")]).await;
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    let r = app
        .post_token(DEMO, &[("grant_type", "authorization_code")])
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    let r = app
        .post_token(
            DEMO,
            &[
                ("grant_type", "refresh_token"),
                ("grant_type", "refresh_token"),
            ],
        )
        .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_request",
        "repeated parameter"
    );
    let r = app
        .client
        .post(app.url("/oauth2/token"))
        .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
        .json(&json!({"grant_type": "refresh_token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "JSON bodies are refused");
    let r = app
        .post_token(
            DEMO,
            &[
                ("grant_type", "authorization_code"),
                ("code", "ac_forged"),
                ("redirect_uri", DEMO_REDIRECT),
                ("code_verifier", &"a".repeat(43)),
            ],
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    app.stop().await;
}

#[tokio::test]
async fn par_request_uris_are_single_use_and_bound_to_their_client() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        insert_other_client(&app).await;
        app.login_customer("alice").await;
        let (_, challenge) = pkce();
        let push = || async {
            let r = app
                .post_par(
                    DEMO,
                    &[
                        ("response_type", "code"),
                        ("redirect_uri", DEMO_REDIRECT),
                        ("code_challenge", &challenge),
                        ("code_challenge_method", "S256"),
                        ("scope", "accounts:read"),
                    ],
                )
                .await;
            assert_eq!(r.status(), 201);
            let body: Value = r.json().await.unwrap();
            assert!(body["expires_in"].as_i64().unwrap() <= 60);
            body["request_uri"].as_str().unwrap().to_string()
        };
        // Used by another client: refused with a page.
        let uri = push().await;
        let r = app
            .get_authorize(&[("client_id", "c_other"), ("request_uri", &uri)])
            .await;
        assert_eq!(r.status(), 400, "{backend:?}");
        assert!(r.headers().get("location").is_none());
        // Single use (the failed attempt above consumed it too).
        let r = app
            .get_authorize(&[("client_id", DEMO_CLIENT), ("request_uri", &uri)])
            .await;
        assert_eq!(r.status(), 400);
        let uri = push().await;
        assert_eq!(
            app.get_authorize(&[("client_id", DEMO_CLIENT), ("request_uri", &uri)])
                .await
                .status(),
            303
        );
        assert_eq!(
            app.get_authorize(&[("client_id", DEMO_CLIENT), ("request_uri", &uri)])
                .await
                .status(),
            400
        );
        // Forged and malformed.
        for forged in [
            "urn:ietf:params:oauth:request_uri:forged",
            "https://evil.example/req",
            "urn:ietf:params:oauth:request_uri:",
        ] {
            let r = app
                .get_authorize(&[("client_id", DEMO_CLIENT), ("request_uri", forged)])
                .await;
            assert_eq!(r.status(), 400, "{forged}");
        }
        // PAR itself: bad RAR, request_uri inside, unauthenticated.
        let r = app
            .post_par(
                DEMO,
                &[
                    ("response_type", "code"),
                    ("redirect_uri", DEMO_REDIRECT),
                    ("code_challenge", &challenge),
                    ("code_challenge_method", "S256"),
                    ("authorization_details", "[{\"type\":\"nope\"}]"),
                ],
            )
            .await;
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            "invalid_authorization_details"
        );
        let r = app
            .post_par(DEMO, &[("request_uri", "urn:x"), ("response_type", "code")])
            .await;
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
        let r = app
            .post_form(
                "/oauth2/par",
                None,
                &[("client_id", DEMO_CLIENT), ("response_type", "code")],
            )
            .await;
        assert_eq!(r.status(), 401);
        app.stop().await;
    }
}

#[tokio::test]
async fn production_clients_must_use_par() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    FapiClient::register(&app, "c_prod", "production", "https://fintech.example/cb").await;
    let (_, challenge) = pkce();
    let r = app
        .get_authorize(&[
            ("client_id", "c_prod"),
            ("response_type", "code"),
            ("redirect_uri", "https://fintech.example/cb"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("scope", "accounts:read"),
            ("state", "p"),
        ])
        .await;
    assert_eq!(r.status(), 303);
    let loc = location(&r);
    assert!(loc.starts_with("https://fintech.example/cb?"));
    assert_eq!(
        query_param(&loc, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(query_param(&loc, "state").as_deref(), Some("p"));
    app.stop().await;
}

#[tokio::test]
async fn bad_authorization_details_are_refused_and_nothing_is_stored() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    let (_, challenge) = pkce();
    let far = (chrono::Utc::now() + chrono::Duration::days(400))
        .format("%Y-%m-%d")
        .to_string();
    let cases = [
        ("not json", "invalid_authorization_details"),
        (
            r#"[{"type":"payment_initiation","actions":["accounts:read"]}]"#,
            "invalid_authorization_details",
        ),
        (
            r#"[{"type":"account_access","actions":["payments:write"]}]"#,
            "invalid_authorization_details",
        ),
        (
            r#"[{"type":"account_access","actions":["accounts:read"],"transactions_from":"2026-02-30","transactions_until":"2026-03-01"}]"#,
            "invalid_authorization_details",
        ),
        (
            r#"[{"type":"account_access","actions":["accounts:read"],"transactions_from":"2026-05-01","transactions_until":"2026-01-01"}]"#,
            "invalid_authorization_details",
        ),
        (
            &format!(
                r#"[{{"type":"account_access","actions":["accounts:read"],"expires_at":"{far}"}}]"#
            ),
            "invalid_authorization_details",
        ),
    ];
    for (rar, error) in cases {
        let r = app
            .get_authorize(&[
                ("client_id", DEMO_CLIENT),
                ("response_type", "code"),
                ("redirect_uri", DEMO_REDIRECT),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("authorization_details", rar),
            ])
            .await;
        assert_error_page(r, error, rar).await;
    }
    let r = app
        .get_authorize(&[
            ("client_id", DEMO_CLIENT),
            ("response_type", "token"),
            ("redirect_uri", DEMO_REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("scope", "accounts:read"),
        ])
        .await;
    assert_error_page(r, "unsupported_response_type", "no implicit grant").await;
    let r = app
        .get_authorize(&[
            ("client_id", DEMO_CLIENT),
            ("response_type", "code"),
            ("redirect_uri", DEMO_REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("scope", "openid accounts:read"),
        ])
        .await;
    assert_error_page(r, "invalid_scope", "openid").await;
    assert_eq!(count_requests(&app).await, 0);
    assert_eq!(count_grants(&app).await, 0);
    app.stop().await;
}

/// The customer may only narrow: tampered forms that widen anything are refused and write
/// nothing; a missing CSRF token is refused.
#[tokio::test]
async fn tampered_consent_forms_are_refused() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let alice = app.account_ids("alice").await;
        let bob = app.account_ids("bob").await;
        let (_, challenge) = pkce();
        let rar = details(json!({
            "type": "account_access",
            "actions": ["balances:read", "transactions:read"],
            "accounts": [alice[0]],
            "transactions_from": "2026-01-01",
            "transactions_until": "2026-06-30",
            "merchants": ["m_fresh_market"],
            "expires_at": (chrono::Utc::now() + chrono::Duration::days(30)).format("%Y-%m-%d").to_string(),
        }));
        let r = app
            .post_par(
                DEMO,
                &[
                    ("response_type", "code"),
                    ("redirect_uri", DEMO_REDIRECT),
                    ("code_challenge", &challenge),
                    ("code_challenge_method", "S256"),
                    ("authorization_details", &rar),
                ],
            )
            .await;
        let uri = r.json::<Value>().await.unwrap()["request_uri"]
            .as_str()
            .unwrap()
            .to_string();
        let (path, html) = app
            .get_consent_page(
                app.get_authorize(&[("client_id", DEMO_CLIENT), ("request_uri", &uri)])
                    .await,
            )
            .await;
        assert!(html.contains("demo-client"));
        // The demo developer passed KYC: its sandbox app names it, as the dashboard does
        // (one decision, `dashboard::operator_markup`), and says it is a sandbox app.
        assert!(
            html.contains("Operated by <strong>Demo Fintech Ltd</strong>"),
            "verified operator shown"
        );
        assert!(html.contains("A sandbox app"), "sandbox said");
        assert!(
            !html.contains(&alice[1]),
            "only the requested account is offered"
        );
        let later = (chrono::Utc::now() + chrono::Duration::days(60))
            .format("%Y-%m-%d")
            .to_string();
        let base = |extra: &[(&'static str, String)]| {
            let mut v: Vec<(&'static str, String)> = vec![
                ("decision", "approve".into()),
                ("account", alice[0].clone()),
                ("action", "balances:read".into()),
                ("merchant", "m_fresh_market".into()),
            ];
            v.extend_from_slice(extra);
            v
        };
        let tampered: Vec<(&str, Vec<(&'static str, String)>)> = vec![
            ("other account", base(&[("account", alice[1].clone())])),
            (
                "someone else's account",
                base(&[("account", bob[0].clone())]),
            ),
            ("extra action", base(&[("action", "accounts:read".into())])),
            (
                "extra merchant",
                base(&[("merchant", "m_sky_travel".into())]),
            ),
            (
                "earlier window start",
                base(&[
                    ("transactions_from", "2025-12-01".into()),
                    ("transactions_until", "2026-06-30".into()),
                ]),
            ),
            (
                "later window end",
                base(&[
                    ("transactions_from", "2026-01-01".into()),
                    ("transactions_until", "2026-07-31".into()),
                ]),
            ),
            ("later expiry", base(&[("expires_at", later)])),
            (
                "no accounts",
                vec![
                    ("decision", "approve".into()),
                    ("action", "balances:read".into()),
                    ("merchant", "m_fresh_market".into()),
                ],
            ),
            ("no decision", vec![("account", alice[0].clone())]),
        ];
        for (name, fields) in tampered {
            let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = app.post_consent(&path, &html, &refs).await;
            assert_eq!(r.status(), 400, "{backend:?} {name}");
            assert!(r.headers().get("location").is_none(), "{name}");
        }
        let r = app
            .post_form(
                &path,
                None,
                &[
                    ("decision", "approve"),
                    ("account", &alice[0]),
                    ("action", "balances:read"),
                    ("merchant", "m_fresh_market"),
                ],
            )
            .await;
        assert_eq!(r.status(), 403, "missing CSRF token");
        let r = app
            .post_form(
                &path,
                None,
                &[
                    ("csrf_token", "csrf_forged"),
                    ("decision", "approve"),
                    ("account", &alice[0]),
                    ("action", "balances:read"),
                    ("merchant", "m_fresh_market"),
                ],
            )
            .await;
        assert_eq!(r.status(), 403, "wrong CSRF token");
        assert_eq!(count_grants(&app).await, 0, "{backend:?}: nothing written");

        // A proper narrowing still works afterwards; deciding twice does not.
        let ok = app
            .post_consent(
                &path,
                &html,
                &[
                    ("decision", "approve"),
                    ("account", &alice[0]),
                    ("action", "balances:read"),
                    ("merchant", "m_fresh_market"),
                ],
            )
            .await;
        assert_eq!(ok.status(), 303);
        let again = app
            .post_consent(&path, &html, &[("decision", "deny")])
            .await;
        assert_eq!(again.status(), 400);
        assert_eq!(count_grants(&app).await, 1);
        app.stop().await;
    }
}

#[tokio::test]
async fn consent_page_requires_login_and_binds_to_the_customer() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    let (_, challenge) = pkce();
    let r = app
        .get_authorize(&[
            ("client_id", DEMO_CLIENT),
            ("response_type", "code"),
            ("redirect_uri", DEMO_REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("scope", "accounts:read"),
            ("state", "z"),
        ])
        .await;
    let consent = location(&r);
    let r = app.get(&consent).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("/login?next={consent}"));
    // Page headers: no framing.
    let login = app.get("/login").await;
    assert_eq!(login.headers()["x-frame-options"], "DENY");
    assert!(
        login.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    // Open redirects through `next` are neutralised.
    let page = login.text().await.unwrap();
    let csrf = csrf_from(&page);
    let r = app
        .post_form(
            "/login",
            None,
            &[
                ("csrf_token", &csrf),
                ("username", "alice"),
                ("password", DEMO_PASSWORD),
                ("next", "//evil.example/x"),
            ],
        )
        .await;
    assert_eq!(location(&r), "/");
    // Login CSRF and wrong password.
    let r = app
        .post_form(
            "/login",
            None,
            &[
                ("csrf_token", "forged"),
                ("username", "alice"),
                ("password", DEMO_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 403);
    // Alice opens it first; Bob cannot then decide it.
    let (path, _) = app
        .get_consent_page(
            app.get_authorize(&[
                ("client_id", DEMO_CLIENT),
                ("response_type", "code"),
                ("redirect_uri", DEMO_REDIRECT),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("scope", "accounts:read"),
            ])
            .await,
        )
        .await;
    let bob = e2e_tests::dashboard::customer_client(&app, "bob").await;
    let r = bob.get(app.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 400, "bound to alice");
    // Deny returns access_denied with state and iss.
    let (path, html) = app
        .get_consent_page(
            app.get_authorize(&[
                ("client_id", DEMO_CLIENT),
                ("response_type", "code"),
                ("redirect_uri", DEMO_REDIRECT),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("scope", "accounts:read"),
                ("state", "d"),
            ])
            .await,
        )
        .await;
    let r = app
        .post_consent(&path, &html, &[("decision", "deny")])
        .await;
    let loc = location(&r);
    assert_eq!(query_param(&loc, "error").as_deref(), Some("access_denied"));
    assert_eq!(query_param(&loc, "state").as_deref(), Some("d"));
    assert_eq!(
        query_param(&loc, "iss").as_deref(),
        Some(app.address.as_str())
    );
    app.stop().await;
}

#[tokio::test]
async fn revocation_endpoint_ends_the_grant() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let t = tokens_for(&app).await;
        let access = t["access_token"].as_str().unwrap();
        let refresh = t["refresh_token"].as_str().unwrap();
        // Unknown tokens: 200, nothing happens.
        assert_eq!(
            app.post_form("/oauth2/revoke", Some(DEMO), &[("token", "rt_unknown")])
                .await
                .status(),
            200
        );
        assert_eq!(app.post_introspect(DEMO, access).await["active"], true);
        // Another client cannot revoke it.
        insert_other_client(&app).await;
        app.post_form("/oauth2/revoke", Some(OTHER), &[("token", refresh)])
            .await;
        assert_eq!(app.post_introspect(DEMO, access).await["active"], true);
        // Its own client can.
        assert_eq!(
            app.post_form("/oauth2/revoke", Some(DEMO), &[("token", refresh)])
                .await
                .status(),
            200
        );
        let intro = app.post_introspect(DEMO, access).await;
        assert_eq!(intro["active"], false, "{backend:?}");
        assert_eq!(intro["grant_status"], "revoked");
        let r = app
            .post_token(
                DEMO,
                &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
            )
            .await;
        assert_eq!(r.status(), 400);
        // The revocation feed table got the grant and its token's revocation ids.
        let rows: i64 = app
            .platform
            .db
            .run(|c| {
                Ok(platform::storage::schema::revocations::table
                    .count()
                    .get_result(c)?)
            })
            .await
            .unwrap();
        assert!(rows >= 2, "{rows}");
        app.stop().await;
    }
}

#[tokio::test]
async fn introspection_of_garbage_and_foreign_tokens_is_inactive() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    for token in [
        "",
        "garbage",
        "rt_nothing",
        &"A".repeat(9000),
        "En0KEwoEZ3JhbnQ",
    ] {
        let r = app
            .post_form("/oauth2/introspect", Some(DEMO), &[("token", token)])
            .await;
        if token.is_empty() {
            assert_eq!(r.status(), 200);
        }
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["active"], false, "{token:.20}");
    }
    // A token signed by a key we never published.
    let foreign = ::grants::SigningKey::generate(1);
    let now = chrono::Utc::now();
    let grant = ::grants::Grant {
        id: ::grants::GrantId::parse("g_forged").unwrap(),
        client: ::grants::ClientId::parse(DEMO_CLIENT).unwrap(),
        subject: ::grants::SubjectId::parse("cust_x").unwrap(),
        environment: ::grants::Environment::Production,
        scope: ::grants::GrantScope::new(
            vec![::grants::AccountId::parse("acc_x").unwrap()],
            vec![::grants::Action::AccountsRead],
            None,
            None,
            now + chrono::Duration::days(1),
        )
        .unwrap(),
    };
    let forged = ::grants::mint(&foreign, &grant, now + chrono::Duration::minutes(5), now).unwrap();
    assert_eq!(
        app.post_introspect(DEMO, &forged.token).await["active"],
        false
    );
    app.stop().await;
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_verifiable() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    app.login_customer("alice").await;
    let t = tokens_for(&app).await;
    let p = app.platform.clone();
    let now = p.now();
    let kid =
        p.db.write(move |c| {
            consent::oauth::keys::rotate(
                c,
                &p.master_key,
                now,
                chrono::Duration::minutes(10),
                consent::oauth::keys::KeyPurpose::Biscuit,
                platform::audit::Actor::system("test"),
            )
        })
        .await
        .unwrap();
    // kid 1 is the first Biscuit key, kid 2 the Security Event Token key (kids are shared).
    assert_eq!(kid, 3);
    let p = app.platform.clone();
    let loaded =
        p.db.run(move |c| {
            consent::oauth::keys::load(
                c,
                &p.master_key.cipher("signing-keys"),
                now,
                consent::oauth::keys::KeyPurpose::Biscuit,
            )
        })
        .await
        .unwrap();
    assert_eq!(loaded.active.kid(), 3);
    assert_eq!(
        loaded.published.len(),
        2,
        "the retired key stays published; the SET key is not a Biscuit key"
    );
    let keys = serde_json::to_string(&::grants::BiscuitKeys {
        keys: loaded.published,
    })
    .unwrap();
    let v = ::grants::Verifier::new(
        ::grants::KeySet::from_json(&keys).unwrap(),
        ::grants::NoRevocationCheck,
    );
    assert!(
        v.verify_listing(
            t["access_token"].as_str().unwrap(),
            ::grants::Action::AccountsRead,
            now
        )
        .is_ok()
    );
    // Private keys are encrypted at rest.
    let stored: Vec<String> = app
        .platform
        .db
        .run(|c| {
            Ok(platform::storage::schema::signing_keys::table
                .select(platform::storage::schema::signing_keys::private_key_enc)
                .load(c)?)
        })
        .await
        .unwrap();
    assert!(stored.iter().all(|s| s.starts_with("v1.")));
    app.stop().await;
}

/// A stock OAuth client (npm oauth4webapi, unmodified) completes PAR, authorization-response
/// validation (state, iss), code exchange, a sandbox API call, refresh, introspection and
/// revocation, while the customer logs in and narrows the consent in real headless Chromium;
/// with bearer tokens, with everything bound to a DPoP key the library made, and (FAPI 2.0) with
/// DPoP and private_key_jwt client authentication.
#[tokio::test]
async fn stock_client_and_real_browser_complete_the_flow() {
    for backend in backends() {
        for mode in ["bearer", "dpop", "fapi"] {
            let app = spawn_demo_app(backend).await;
            let alice = app.account_ids("alice").await;
            let shot = std::env::temp_dir().join(format!("consent-page-{backend:?}-{mode}.png"));
            let (client, credential) = match mode {
                "fapi" => {
                    let secret: [u8; 32] = rand::random();
                    let key = grants::dpop::DpopKey::es256_from_bytes(&secret).unwrap();
                    let mut public = key.public_jwk();
                    public["kid"] = "k1".into();
                    let mut private = public.clone();
                    private["d"] = base64::Engine::encode(
                        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                        secret,
                    )
                    .into();
                    let jwks = json!({ "keys": [public] });
                    let keys = ClientAuth::Keys(jwks);
                    insert_client_with(&app, "c_fapi", "sandbox", DEMO_REDIRECT, keys, true).await;
                    ("c_fapi", private.to_string())
                }
                _ => (DEMO_CLIENT, DEMO_SECRET.to_string()),
            };
            let Some(r) = e2e_tests::browser::run(
                "oauth-flow.mjs",
                &[
                    &app.address,
                    client,
                    &credential,
                    DEMO_REDIRECT,
                    "alice",
                    DEMO_PASSWORD,
                    mode,
                    shot.to_str().unwrap(),
                ],
            )
            .await
            else {
                return;
            };
            assert_eq!(r["ok"], true, "{r}");
            assert_eq!(r["offeredAccounts"], json!(alice));
            assert_eq!(r["scope"], "accounts:read transactions:read", "{r}");
            assert_eq!(
                r["authorizationDetails"][0]["accounts"],
                json!([alice[0]]),
                "narrowed to one account"
            );
            assert_eq!(r["servedStatus"], 200, "{mode}: {r}");
            assert_eq!(r["servedAccounts"], json!([alice[0]]), "{mode}");
            assert_eq!(r["refreshedScope"], r["scope"]);
            assert_eq!(r["introspectionActive"], true);
            assert_eq!(r["introspectionAccounts"], json!([alice[0]]));
            assert_eq!(r["activeAfterRevocation"], false);
            assert_eq!(r["grantStatusAfterRevocation"], "revoked");
            if mode != "bearer" {
                // oauth4webapi reports the token type in lower case.
                assert!(
                    r["tokenType"]
                        .as_str()
                        .unwrap()
                        .eq_ignore_ascii_case("DPoP"),
                    "{r}"
                );
                assert_eq!(
                    r["bearerStatus"], 401,
                    "a bound token used as a bearer token"
                );
                assert!(
                    r["bearerChallenges"]
                        .as_str()
                        .unwrap()
                        .contains("DPoP algs="),
                    "{r}"
                );
                assert_eq!(
                    r["refreshRotated"], false,
                    "bound refresh tokens are not rotated"
                );
                assert!(r["introspectionJkt"].is_string(), "{r}");
            } else {
                assert!(
                    r["tokenType"]
                        .as_str()
                        .unwrap()
                        .eq_ignore_ascii_case("Bearer"),
                    "{r}"
                );
                assert_eq!(r["bearerStatus"], 200);
                assert_eq!(r["refreshRotated"], true);
                assert!(r["introspectionJkt"].is_null());
            }
            app.stop().await;
        }
    }
}

#[tokio::test]
async fn customer_login_is_throttled() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let page = app.get("/login").await.text().await.unwrap();
        let csrf = csrf_from(&page);
        let r = app
            .post_form(
                "/login",
                None,
                &[
                    ("csrf_token", &csrf),
                    ("username", "alice"),
                    ("password", "wrong-password"),
                ],
            )
            .await;
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..10], &[401; 10]);
    assert_eq!(&statuses[10..], &[429, 429], "{statuses:?}");
    // Even the right password is refused while throttled.
    let page = app.get("/login").await.text().await.unwrap();
    let csrf = csrf_from(&page);
    let r = app
        .post_form(
            "/login",
            None,
            &[
                ("csrf_token", &csrf),
                ("username", "alice"),
                ("password", DEMO_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 429);
    app.stop().await;
}

#[tokio::test]
async fn repeated_client_authentication_failures_block_that_address_for_the_client_id() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    let form = [("grant_type", "refresh_token"), ("refresh_token", "rt_x")];
    for i in 0..20 {
        let r = app.post_token((DEMO_CLIENT, "cs_wrong"), &form).await;
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    let r = app.post_token((DEMO_CLIENT, "cs_wrong"), &form).await;
    assert_eq!(r.status(), 401, "the 21st failure trips the block");
    // Now even the right secret waits out the block.
    let r = app.post_token(DEMO, &form).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "temporarily_unavailable"
    );
    // The block is per address: the fintech's own servers elsewhere are not locked out.
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let r = elsewhere
        .post(app.url("/oauth2/token"))
        .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "authenticated from another address");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    app.stop().await;
}

#[tokio::test]
async fn consent_page_shows_the_verified_legal_name_of_production_clients() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    let prod =
        FapiClient::register(&app, "c_prod", "production", "https://fintech.example/cb").await;
    app.login_customer("alice").await;
    let (_, challenge) = pkce();
    let r = prod
        .post(
            &app,
            "/oauth2/par",
            &[
                ("response_type", "code"),
                ("redirect_uri", "https://fintech.example/cb"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("scope", "accounts:read"),
            ],
            true,
        )
        .await;
    let uri = r.json::<Value>().await.unwrap()["request_uri"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, html) = app
        .get_consent_page(
            app.get_authorize(&[("client_id", "c_prod"), ("request_uri", &uri)])
                .await,
        )
        .await;
    assert!(
        html.contains("Operated by <strong>Demo Fintech Ltd</strong>"),
        "{html}"
    );
    assert!(!html.contains("Sandbox, unverified"));
    app.stop().await;
}

/// Introspection answers minted tokens from their hash and attenuated ones by full verification;
/// both go inactive when the grant ends.
#[tokio::test]
async fn introspection_covers_minted_and_attenuated_tokens() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let t = tokens_for(&app).await;
        let access = t["access_token"].as_str().unwrap();
        let narrowed = ::grants::attenuate(
            access,
            &::grants::Attenuation::new().actions([::grants::Action::AccountsRead]),
            false,
        )
        .unwrap();
        for token in [access, narrowed.as_str()] {
            let intro = app.post_introspect(DEMO, token).await;
            assert_eq!(intro["active"], true, "{backend:?}: {intro}");
            assert_eq!(intro["grant_id"], t["grant_id"]);
        }
        // A token of this client's grant presented by another client is inactive.
        insert_other_client(&app).await;
        let other = app.post_introspect(OTHER, access).await;
        assert_eq!(other, json!({"active": false}));
        app.post_form(
            "/oauth2/revoke",
            Some(DEMO),
            &[("token", t["refresh_token"].as_str().unwrap())],
        )
        .await;
        for token in [access, narrowed.as_str()] {
            assert_eq!(
                app.post_introspect(DEMO, token).await["active"],
                false,
                "{backend:?}"
            );
        }
        app.stop().await;
    }
}

/// An attenuated token introspects as what it allows, never as its grant: RFC 7662 callers act
/// on `scope` and `authorization_details`, and answering with the grant's whole scope undid the
/// attenuation for them. Narrowed by the documented facts and by Datalog of the holder's own.
#[tokio::test]
async fn an_attenuated_token_introspects_as_what_it_allows() {
    use ::grants::{Action, Attenuation, MerchantId, TxWindow};
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let t = tokens_for(&app).await;
        let access = t["access_token"].as_str().unwrap();
        // The demo grant: three actions, two merchants, the first half of 2026.
        let whole = app.post_introspect(DEMO, access).await;
        let granted = whole["authorization_details"][0].clone();
        assert_eq!(
            (&whole["scope"], &granted["merchants"]),
            (
                &json!("accounts:read balances:read transactions:read"),
                &json!(["m_fresh_market", "m_bean_there"])
            ),
            "{backend:?}: {whole}"
        );
        assert_eq!(granted["transactions_from"], "2026-01-01T00:00:00Z");

        let now = chrono::Utc::now();
        let until = chrono::SubsecRound::trunc_subsecs(now + chrono::Duration::minutes(3), 0);
        let window = |from: &str, to: &str| {
            let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap().to_utc();
            TxWindow::new(at(from), at(to)).unwrap()
        };
        let narrowing = Attenuation::new()
            .actions([Action::AccountsRead, Action::TransactionsRead])
            .merchants([MerchantId::parse("m_bean_there").unwrap()])
            .window(window("2026-02-01T00:00:00Z", "2026-03-31T23:59:59Z"))
            .expires_at(until);
        let narrowed = ::grants::attenuate(access, &narrowing, false).unwrap();
        let intro = app.post_introspect(DEMO, &narrowed).await;
        assert_eq!(intro["active"], true, "{backend:?}: {intro}");
        assert_eq!(intro["scope"], "accounts:read transactions:read", "{intro}");
        assert_eq!(intro["exp"], until.timestamp(), "{intro}");
        let d = &intro["authorization_details"][0];
        assert_eq!(d["accounts"], granted["accounts"], "{backend:?}: {intro}");
        assert_eq!(d["merchants"], json!(["m_bean_there"]), "{intro}");
        assert_eq!(d["transactions_from"], "2026-02-01T00:00:00Z", "{intro}");
        assert_eq!(d["transactions_until"], "2026-03-31T23:59:59Z", "{intro}");
        assert_eq!(
            d["expires_at"],
            ::grants::format_timestamp(until),
            "{intro}"
        );

        // Datalog of the holder's own beyond the documented forms: what it allows can depend on
        // the request as a whole (a check may tie an action to a merchant), and one entry could
        // say more. The answer states no scope: the resource server verifies such a token
        // offline, for the request at hand.
        let key = app.oauth.keys.current().active;
        let root = biscuit_auth::PublicKey::from_bytes(
            &key.public_key().to_bytes(),
            biscuit_auth::Algorithm::Ed25519,
        )
        .unwrap();
        let block = "check if operation(\"balances:read\") or operation(\"transactions:read\"), \
                     req_merchant(\"m_fresh_market\");";
        let custom = biscuit_auth::Biscuit::from_base64(access, root)
            .unwrap()
            .append(biscuit_auth::BlockBuilder::new().code(block).unwrap())
            .unwrap()
            .to_base64()
            .unwrap();
        let intro = app.post_introspect(DEMO, &custom).await;
        assert_eq!(intro["active"], true, "{backend:?}: {intro}");
        assert_eq!(intro["grant_id"], t["grant_id"], "{intro}");
        assert!(
            intro.get("scope").is_none() && intro.get("authorization_details").is_none(),
            "{backend:?}: nothing stated for Datalog of the holder's own: {intro}"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn concurrent_uses_of_one_refresh_token_rotate_once_and_end_the_grant() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let tokens = tokens_for(&app).await;
        let rt = tokens["refresh_token"].as_str().unwrap().to_string();
        let http = reqwest::Client::new();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let req = http
                .post(app.url("/oauth2/token"))
                .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]);
            set.spawn(async move {
                let r = req.send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            });
        }
        let mut outcomes = vec![];
        while let Some(r) = set.join_next().await {
            outcomes.push(r.unwrap());
        }
        let winners: Vec<&Value> = outcomes
            .iter()
            .filter(|(s, _)| *s == 200)
            .map(|(_, b)| b)
            .collect();
        assert_eq!(winners.len(), 1, "{backend:?}: {outcomes:?}");
        for (status, body) in outcomes.iter().filter(|(s, _)| *s != 200) {
            assert_eq!(*status, 400, "{backend:?}: {body}");
            assert_eq!(body["error"], "invalid_grant");
        }
        // Every other use was a replay: the grant ended, with the token the winner got.
        let intro = app
            .post_introspect(DEMO, winners[0]["access_token"].as_str().unwrap())
            .await;
        assert_eq!(intro["active"], false, "{backend:?}: {intro}");
        assert_eq!(intro["grant_status"], "revoked");
        let r = app
            .post_token(
                DEMO,
                &[
                    ("grant_type", "refresh_token"),
                    (
                        "refresh_token",
                        winners[0]["refresh_token"].as_str().unwrap(),
                    ),
                ],
            )
            .await;
        assert_eq!(r.status(), 400, "{backend:?}");
        // One refresh, at least one replay, and a chain that still verifies.
        app.platform.audit.link_now().await.unwrap();
        assert!(app.platform.audit.verify().await.unwrap().valid);
        let actions: Vec<String> = app
            .platform
            .db
            .run(|c| {
                Ok(platform::storage::schema::audit_events::table
                    .select(platform::storage::schema::audit_events::action)
                    .load(c)?)
            })
            .await
            .unwrap();
        assert_eq!(
            actions.iter().filter(|a| *a == "token.refreshed").count(),
            1,
            "{backend:?}"
        );
        assert!(actions.iter().any(|a| a == "refresh_token.replayed"));
        assert_eq!(
            actions.iter().filter(|a| *a == "grant.revoked").count(),
            1,
            "{backend:?}: replays detected at once end the grant once"
        );
        app.stop().await;
    }
}

/// Code exchanges at once: every code is spent exactly once. A code presented twice at once
/// gets one answer with tokens and one refusal, and the refusal is a replay that ends the grant;
/// codes presented once each all get working tokens, each audited once. On PostgreSQL the
/// exchanges go through the batch statements.
#[tokio::test]
async fn concurrent_code_exchanges_spend_each_code_once() {
    const CODES: usize = 6;
    for backend in backends() {
        let app = Arc::new(spawn_demo_app(backend).await);
        app.login_customer("alice").await;
        let mut twice = vec![];
        for _ in 0..CODES {
            twice.push(code_for(&app, DEMO, DEMO_REDIRECT).await);
        }
        let mut set = tokio::task::JoinSet::new();
        for (i, (code, verifier)) in twice.iter().enumerate() {
            for _ in 0..2 {
                let (app, code, verifier) = (app.clone(), code.clone(), verifier.clone());
                set.spawn(async move {
                    let r = exchange(&app, DEMO, &code, &verifier).await;
                    (i, r.status().as_u16(), r.json::<Value>().await.unwrap())
                });
            }
        }
        let mut answers = vec![vec![]; CODES];
        while let Some(done) = set.join_next().await {
            let (i, status, body) = done.unwrap();
            answers[i].push((status, body));
        }
        for pair in &answers {
            let mut statuses: Vec<u16> = pair.iter().map(|(s, _)| *s).collect();
            statuses.sort();
            assert_eq!(statuses, [200, 400], "{backend:?}: {pair:?}");
            let (_, refused) = pair.iter().find(|(s, _)| *s == 400).unwrap();
            assert_eq!(refused["error"], "invalid_grant", "{backend:?}");
            let (_, tokens) = pair.iter().find(|(s, _)| *s == 200).unwrap();
            let grant_id = tokens["grant_id"].as_str().unwrap();
            assert_eq!(
                e2e_tests::dashboard::grant_status(&app, grant_id).await.0,
                "revoked",
                "{backend:?}: a code used twice ends its grant"
            );
        }

        let mut once = vec![];
        for _ in 0..CODES {
            once.push(code_for(&app, DEMO, DEMO_REDIRECT).await);
        }
        let mut set = tokio::task::JoinSet::new();
        for (code, verifier) in once {
            let app = app.clone();
            set.spawn(async move {
                let r = exchange(&app, DEMO, &code, &verifier).await;
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.unwrap()
            });
        }
        let mut grants = std::collections::HashSet::new();
        while let Some(done) = set.join_next().await {
            let tokens = done.unwrap();
            let grant_id = tokens["grant_id"].as_str().unwrap();
            let status = e2e_tests::dashboard::grant_status(&app, grant_id).await.0;
            assert_eq!(status, "authorized", "{backend:?}");
            grants.insert(grant_id.to_string());
            let access = tokens["access_token"].as_str().unwrap();
            let introspected = app.post_introspect(DEMO, access).await;
            assert_eq!(introspected["active"], true, "{backend:?}");
            let r = app
                .post_token(
                    DEMO,
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
                    ],
                )
                .await;
            assert_eq!(r.status(), 200, "{backend:?}: the refresh token works");
        }
        assert_eq!(grants.len(), CODES);
        let actions: Vec<String> = app
            .platform
            .db
            .run(|c| {
                Ok(platform::storage::schema::audit_events::table
                    .select(platform::storage::schema::audit_events::action)
                    .load(c)?)
            })
            .await
            .unwrap();
        let count = |a: &str| actions.iter().filter(|x| *x == a).count();
        assert_eq!(count("token.issued"), 2 * CODES, "{backend:?}");
        assert_eq!(count("authorization_code.reused"), CODES, "{backend:?}");
        let exchanges = batch_counts(&app)[5].0;
        match backend {
            Backend::Postgres => assert!(exchanges >= CODES as u64, "{backend:?}: {exchanges}"),
            Backend::Sqlite => assert_eq!(exchanges, 0),
        }
        assert!(app.platform.audit.verify().await.unwrap().valid);
        Arc::into_inner(app).unwrap().stop().await;
    }
}

/// Decisions on one request at once (two tabs, a double click; approvals and denials mixed):
/// exactly one is recorded, with its one grant and one event, and the others are told the
/// request is no longer pending. On PostgreSQL a decision is one statement guarded by the
/// request's status.
#[tokio::test]
async fn concurrent_decisions_on_one_request_record_one() {
    for backend in backends() {
        let app = Arc::new(spawn_demo_app(backend).await);
        app.login_customer("alice").await;
        let acc = app.account_ids("alice").await[0].clone();
        let grant_count = || async {
            let n: i64 = app
                .platform
                .db
                .run(|c| {
                    Ok(platform::storage::schema::grant_rows::table
                        .count()
                        .get_result(c)?)
                })
                .await
                .unwrap();
            n
        };
        let grants_before = grant_count().await;
        for round in 0..3 {
            let (verifier, challenge) = pkce();
            let rar = details(json!({"type": "account_access", "actions": ["accounts:read"]}));
            let url = app.pushed_authorize_url(&rar, &challenge).await;
            let authorize = app.client.get(url).send().await.unwrap();
            let (path, html) = app.get_consent_page(authorize).await;
            let mut set = tokio::task::JoinSet::new();
            for i in 0..6 {
                let (app, path, html, acc) = (app.clone(), path.clone(), html.clone(), acc.clone());
                set.spawn(async move {
                    let decision = if i % 2 == 0 { "approve" } else { "deny" };
                    let fields = [
                        ("decision", decision),
                        ("account", acc.as_str()),
                        ("action", "accounts:read"),
                    ];
                    let r = app.post_consent(&path, &html, &fields).await;
                    let location = (r.status() == 303).then(|| location(&r));
                    (r.status().as_u16(), location)
                });
            }
            let mut redirects = vec![];
            while let Some(done) = set.join_next().await {
                let (status, location) = done.unwrap();
                match location {
                    Some(l) => redirects.push(l),
                    None => assert!((400..500).contains(&status), "{backend:?}: {status}"),
                }
            }
            assert_eq!(
                redirects.len(),
                1,
                "{backend:?} round {round}: {redirects:?}"
            );
            if let Some(code) = query_param(&redirects[0], "code") {
                let r = exchange(&app, DEMO, &code, &verifier).await;
                assert_eq!(r.status(), 200, "{backend:?}: the one code works");
            } else {
                assert_eq!(
                    query_param(&redirects[0], "error").as_deref(),
                    Some("access_denied")
                );
            }
        }
        assert_eq!(grant_count().await, grants_before + 3, "{backend:?}");
        let actions: Vec<String> = app
            .platform
            .db
            .run(|c| {
                Ok(platform::storage::schema::audit_events::table
                    .select(platform::storage::schema::audit_events::action)
                    .load(c)?)
            })
            .await
            .unwrap();
        let decided = actions
            .iter()
            .filter(|a| *a == "consent.approved" || *a == "consent.denied")
            .count();
        assert_eq!(decided, 3, "{backend:?}: one event per request");
        assert!(app.platform.audit.verify().await.unwrap().valid);
        Arc::into_inner(app).unwrap().stop().await;
    }
}

/// This instance's batch counters (refresh reads, rotations, introspection reads, bound
/// refreshes, code reads, code exchanges), as (jobs, batches); zeros where nothing is batched (SQLite).
fn batch_counts(app: &TestApp) -> [(u64, u64); 6] {
    app.oauth
        .batches
        .as_ref()
        .map(|b| b.counts().map(|c| (c.jobs, c.batches)))
        .unwrap_or_default()
}

/// Refreshes of many grants at once: on PostgreSQL they share their read and rotation
/// statements (a batch holds several), and still every request gets its own, working tokens
/// (introspected through the read batch there), each refresh is audited once, and every old token
/// is spent.
#[tokio::test]
async fn concurrent_refreshes_of_many_grants_share_statements_and_each_rotates_once() {
    const GRANTS: usize = 12;
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let mut current = vec![];
        for _ in 0..GRANTS {
            let t = tokens_for(&app).await;
            current.push(t["refresh_token"].as_str().unwrap().to_string());
        }
        let http = reqwest::Client::new();
        let (mut rounds, mut spent) = (0, vec![]);
        // Rounds of simultaneous refreshes until one batch held several (at least three rounds).
        while rounds < 3 || (backend == Backend::Postgres && rounds < 10) {
            let mut set = tokio::task::JoinSet::new();
            for (i, rt) in current.iter().enumerate() {
                let req = http
                    .post(app.url("/oauth2/token"))
                    .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)]);
                set.spawn(async move {
                    let r = req.send().await.unwrap();
                    (i, r.status().as_u16(), r.json::<Value>().await.unwrap())
                });
            }
            let mut next = current.clone();
            while let Some(r) = set.join_next().await {
                let (i, status, body) = r.unwrap();
                assert_eq!(status, 200, "{backend:?}: {body}");
                let intro = app
                    .post_introspect(DEMO, body["access_token"].as_str().unwrap())
                    .await;
                assert_eq!(intro["active"], true, "{backend:?}: {intro}");
                assert_eq!(intro["grant_id"], body["grant_id"]);
                next[i] = body["refresh_token"].as_str().unwrap().to_string();
            }
            spent.extend(std::mem::replace(&mut current, next));
            rounds += 1;
            let (jobs, batches) = batch_counts(&app)[1];
            if rounds >= 3 && backend == Backend::Postgres && jobs > batches {
                break;
            }
        }
        let [reads, (jobs, batches), introspections, ..] = batch_counts(&app);
        let all = (rounds * GRANTS) as u64;
        match backend {
            // Every refresh went through the batches, and at least one batch was shared; the
            // first introspection of each new token was answered through the read batch.
            Backend::Postgres => {
                assert_eq!(reads.0, all, "refresh reads");
                assert_eq!(jobs, all, "rotations: {jobs} in {batches}");
                assert!(
                    jobs > batches,
                    "no batch held two rotations: {jobs} in {batches}"
                );
                assert_eq!(introspections.0, all, "introspections");
            }
            Backend::Sqlite => assert_eq!([reads, (jobs, batches), introspections], [(0, 0); 3]),
        }
        app.platform.audit.link_now().await.unwrap();
        assert!(app.platform.audit.verify().await.unwrap().valid);
        let refreshed: i64 = app
            .platform
            .db
            .run(|c| {
                use platform::storage::schema::audit_events::dsl::*;
                Ok(audit_events
                    .filter(action.eq("token.refreshed"))
                    .count()
                    .get_result(c)?)
            })
            .await
            .unwrap();
        assert_eq!(refreshed as usize, rounds * GRANTS, "{backend:?}");
        // A spent token is a replay: refused, and its grant ends.
        let r = app
            .post_token(
                DEMO,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &spent[0]),
                ],
            )
            .await;
        assert_eq!(r.status(), 400, "{backend:?}");
        app.stop().await;
    }
}

async fn introspection_cache_hits(app: &TestApp) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("consent_introspection_cache_hits_total"))
        .and_then(|l| l.split_whitespace().last())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

/// Active introspection answers are reused for a moment (`tokens.introspection_cache_ttl`), but
/// never for a wrong secret or another client, and never after a revocation made on this
/// instance (including a detected refresh-token replay); one written elsewhere (straight into the
/// feed here) shows as soon as the revocation list has it.
#[tokio::test]
async fn reused_introspection_answers_never_outlive_a_revocation() {
    for backend in backends() {
        // The longest TTL allowed, so that a revocation seen within 2 s below is the revocation
        // list's doing, not the answer's expiry.
        let app = spawn_app_with(
            backend,
            consent::ServeOptions {
                demo: true,
                ..Default::default()
            },
            |s| s.tokens.introspection_cache_ttl = "10s".parse().unwrap(),
        )
        .await;
        app.login_customer("alice").await;
        let mut tokens = vec![];
        for _ in 0..3 {
            let t = tokens_for(&app).await;
            tokens.push(t);
        }
        let access = tokens[0]["access_token"].as_str().unwrap();
        let first = app.post_introspect(DEMO, access).await;
        assert_eq!(first["active"], true, "{backend:?}");
        let hits = introspection_cache_hits(&app).await;
        let again = app.post_introspect(DEMO, access).await;
        assert_eq!(again, first, "a reused answer is the same answer");
        assert!(
            introspection_cache_hits(&app).await > hits,
            "{backend:?}: reused"
        );

        // A stored answer does not vouch for credentials.
        let r = app
            .post_form(
                "/oauth2/introspect",
                Some((DEMO_CLIENT, "cs_wrong")),
                &[("token", access)],
            )
            .await;
        assert_eq!(r.status(), 401, "{backend:?}");
        insert_other_client(&app).await;
        let other = app.post_introspect(OTHER, access).await;
        assert_eq!(other, json!({ "active": false }), "{backend:?}");

        // Revoked here: the very next introspection says so.
        assert_eq!(
            app.post_form("/oauth2/revoke", Some(DEMO), &[("token", access)])
                .await
                .status(),
            200
        );
        let after = app.post_introspect(DEMO, access).await;
        assert_eq!(after["active"], false, "{backend:?}: {after}");

        // A replayed refresh token ends its grant here: the next introspection says so.
        let access3 = tokens[2]["access_token"].as_str().unwrap();
        let rt3 = tokens[2]["refresh_token"].as_str().unwrap();
        assert_eq!(app.post_introspect(DEMO, access3).await["active"], true);
        assert_eq!(app.post_introspect(DEMO, access3).await["active"], true);
        let refresh = [("grant_type", "refresh_token"), ("refresh_token", rt3)];
        assert_eq!(app.post_token(DEMO, &refresh).await.status(), 200);
        assert_eq!(app.post_token(DEMO, &refresh).await.status(), 400);
        let after = app.post_introspect(DEMO, access3).await;
        assert_eq!(after["active"], false, "{backend:?}: {after}");
        assert_eq!(after["grant_status"], "revoked");

        // Revoked elsewhere (the feed row another instance would write): seen as soon as the
        // revocation list syncs (each second), long before the 10 s TTL.
        let access2 = tokens[1]["access_token"].as_str().unwrap().to_string();
        assert_eq!(app.post_introspect(DEMO, &access2).await["active"], true);
        assert_eq!(app.post_introspect(DEMO, &access2).await["active"], true);
        let grant2 = tokens[1]["grant_id"].as_str().unwrap().to_string();
        app.platform
            .db
            .write(move |c| {
                use platform::storage::schema::{grant_rows, revocations};
                diesel::update(grant_rows::table.filter(grant_rows::id.eq(&grant2)))
                    .set(grant_rows::status.eq("revoked"))
                    .execute(c)?;
                diesel::insert_into(revocations::table)
                    .values((
                        revocations::grant_id.eq(&grant2),
                        revocations::reason.eq("test"),
                        revocations::revoked_at.eq(chrono::Utc::now().naive_utc()),
                        revocations::expires_at
                            .eq((chrono::Utc::now() + chrono::Duration::hours(1)).naive_utc()),
                    ))
                    .execute(c)?;
                Ok(())
            })
            .await
            .unwrap();
        let start = std::time::Instant::now();
        loop {
            if app.post_introspect(DEMO, &access2).await["active"] == false {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(2),
                "{backend:?}: still active 2 s after the revocation"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        app.stop().await;
    }
}

/// Refreshing records use of the grant (dormancy is measured from it) at most once a minute: the
/// one-statement rotation skips it, the transactional path writes it when it is due.
#[tokio::test]
async fn refreshes_record_use_of_the_grant_once_a_minute() {
    for backend in backends() {
        let (app, clock) = e2e_tests::lifecycle::spawn_with_clock(backend, |_| {}).await;
        app.login_customer("alice").await;
        let t = tokens_for(&app).await;
        let grant_id = t["grant_id"].as_str().unwrap().to_string();
        let last_used = || {
            let id = grant_id.clone();
            let db = app.platform.db.clone();
            async move {
                db.run(move |c| {
                    Ok(grant_rows::table
                        .filter(grant_rows::id.eq(&id))
                        .select(grant_rows::last_used_at)
                        .first::<Option<chrono::NaiveDateTime>>(c)?)
                })
                .await
                .unwrap()
                .expect("the code exchange recorded use")
            }
        };
        let at_exchange = last_used().await;
        let mut rt = t["refresh_token"].as_str().unwrap().to_string();
        let refresh = async |rt: &mut String| {
            let r = app
                .post_token(
                    DEMO,
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", rt.as_str()),
                    ],
                )
                .await;
            assert_eq!(r.status(), 200, "{backend:?}");
            let body: Value = r.json().await.unwrap();
            *rt = body["refresh_token"].as_str().unwrap().to_string();
        };
        clock.advance(chrono::Duration::seconds(20));
        refresh(&mut rt).await;
        assert_eq!(
            last_used().await,
            at_exchange,
            "{backend:?}: within the minute"
        );
        clock.advance(chrono::Duration::seconds(61));
        refresh(&mut rt).await;
        let later = last_used().await;
        assert!(
            later > at_exchange + chrono::Duration::seconds(80),
            "{backend:?}: {later}"
        );
        refresh(&mut rt).await;
        assert_eq!(last_used().await, later, "{backend:?}: once a minute");
        app.stop().await;
    }
}

/// Someone failing alice's password from one address cannot lock her out: from her own address
/// the right password still logs her in. While her account is under attack, any other address
/// gets one attempt.
#[tokio::test]
async fn failed_logins_elsewhere_do_not_lock_the_customer_out() {
    async fn login(app: &TestApp, client: &reqwest::Client, password: &str) -> u16 {
        page_login(app, client, "alice", password).await
    }
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        let attacker = app.client_from("127.0.0.1");
        let mut statuses = Vec::new();
        for _ in 0..12 {
            statuses.push(login(&app, &attacker, "wrong-password").await);
        }
        assert_eq!(&statuses[10..], &[429, 429], "{backend:?}: {statuses:?}");
        // The owner, elsewhere.
        let alice = app.client_from("127.0.0.2");
        assert_eq!(login(&app, &alice, DEMO_PASSWORD).await, 303, "{backend:?}");
        // A third address while the account is under attack: one attempt.
        let other = app.client_from("127.0.0.3");
        assert_eq!(login(&app, &other, "wrong-again").await, 401, "{backend:?}");
        assert_eq!(login(&app, &other, DEMO_PASSWORD).await, 429, "{backend:?}");
        app.stop().await;
    }
}

/// Logs `user` in on the login page with `client` (its own cookies and address); the status.
async fn page_login(app: &TestApp, client: &reqwest::Client, user: &str, password: &str) -> u16 {
    let page = client.get(app.url("/login")).send().await.unwrap();
    let csrf = csrf_from(&page.text().await.unwrap());
    let form = [
        ("csrf_token", csrf.as_str()),
        ("username", user),
        ("password", password),
    ];
    let r = client
        .post(app.url("/login"))
        .form(&form)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

/// Wrong passwords sent all at once get no more guesses than sent one after another: each attempt
/// is counted before its password is checked, so of 30 at once from one address exactly the
/// pair's allowance (10) is checked and the rest are refused; and the right password, sent
/// alone afterwards, counts nothing against the owner.
#[tokio::test]
async fn a_burst_of_wrong_passwords_gets_no_more_guesses_than_one_at_a_time() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        // The right password first, three times: it uses nothing up.
        let owner = app.client_from("127.0.0.1");
        for _ in 0..3 {
            let status = page_login(&app, &owner, "alice", DEMO_PASSWORD).await;
            assert_eq!(status, 303, "{backend:?}");
        }
        // Thirty browsers at one address, each with its own login form, post at once.
        let mut forms = Vec::new();
        for _ in 0..30 {
            let client = app.client_from("127.0.0.1");
            let page = client.get(app.url("/login")).send().await.unwrap();
            forms.push((client, csrf_from(&page.text().await.unwrap())));
        }
        let mut burst = tokio::task::JoinSet::new();
        for (client, csrf) in forms {
            let url = app.url("/login");
            burst.spawn(async move {
                let form = [
                    ("csrf_token", csrf.as_str()),
                    ("username", "alice"),
                    ("password", "wrong-password"),
                ];
                client
                    .post(url)
                    .form(&form)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            });
        }
        let mut statuses = burst.join_all().await;
        statuses.sort_unstable();
        let checked = statuses.iter().filter(|s| **s == 401).count();
        let refused = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!((checked, refused), (10, 20), "{backend:?}: {statuses:?}");
        app.stop().await;
    }
}

/// An address that is blocked cannot push anybody else's account under attack: its refused
/// attempts count nothing. After spraying 50 wrong passwords over unknown names (its address
/// allowance), 15 more tries at alice's account from it are refused, and alice, from her own
/// address, still has her full allowance (two typos, then her password).
#[tokio::test]
async fn a_blocked_address_cannot_put_other_accounts_under_attack() {
    let login = page_login;
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        let attacker = app.client_from("127.0.0.1");
        for n in 0..50 {
            let user = format!("nobody-{n}");
            assert_eq!(
                login(&app, &attacker, &user, "guess").await,
                401,
                "{backend:?}"
            );
        }
        for _ in 0..15 {
            assert_eq!(
                login(&app, &attacker, "alice", "guess").await,
                429,
                "{backend:?}"
            );
        }
        let alice = app.client_from("127.0.0.2");
        assert_eq!(
            login(&app, &alice, "alice", "typo-1").await,
            401,
            "{backend:?}"
        );
        assert_eq!(
            login(&app, &alice, "alice", "typo-2").await,
            401,
            "{backend:?}"
        );
        assert_eq!(
            login(&app, &alice, "alice", DEMO_PASSWORD).await,
            303,
            "{backend:?}"
        );
        app.stop().await;
    }
}

/// Behind a trusted reverse proxy, throttles key on the address it forwards, so one attacker
/// does not block every customer behind the proxy; from any other peer forwarding headers are
/// ignored, so an attacker cannot rotate `X-Forwarded-For` to get fresh buckets.
#[tokio::test]
async fn throttles_believe_forwarded_addresses_only_from_trusted_proxies() {
    async fn login(app: &TestApp, client: &reqwest::Client, xff: &str, password: &str) -> u16 {
        let page = client
            .get(app.url("/login"))
            .header("x-forwarded-for", xff)
            .send()
            .await
            .unwrap();
        let csrf = csrf_from(&page.text().await.unwrap());
        let r = client
            .post(app.url("/login"))
            .header("x-forwarded-for", xff)
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("username", "alice"),
                ("password", password),
            ])
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }
    for backend in backends() {
        let app = spawn_app_with(
            backend,
            consent::ServeOptions {
                demo: true,
                ..Default::default()
            },
            |s| s.server.trusted_proxies = "127.0.0.1/32".parse().unwrap(),
        )
        .await;
        // Through the proxy (peer 127.0.0.1): the attacker's forwarded address is blocked...
        let proxy = app.client_from("127.0.0.1");
        let mut statuses = Vec::new();
        for _ in 0..11 {
            statuses.push(login(&app, &proxy, "198.51.100.1", "wrong-password").await);
        }
        assert_eq!(statuses[10], 429, "{backend:?}: {statuses:?}");
        // ...while alice, through the same proxy from her own address, logs in.
        assert_eq!(
            login(&app, &proxy, "203.0.113.7, 198.51.100.2", DEMO_PASSWORD).await,
            303,
            "{backend:?}"
        );
        // The audit trail records where the login came from: the forwarded address.
        let details: Vec<String> = app
            .platform
            .db
            .run(|c| {
                use platform::storage::schema::audit_events;
                Ok(audit_events::table
                    .filter(audit_events::action.eq("customer.login"))
                    .select(audit_events::details)
                    .load(c)?)
            })
            .await
            .unwrap();
        assert_eq!(
            details,
            vec![r#"{"client_address":"198.51.100.2"}"#.to_string()],
            "{backend:?}"
        );
        // An untrusted peer's X-Forwarded-For is ignored: rotating it buys no fresh bucket.
        let direct = app.client_from("127.0.0.3");
        let mut statuses = Vec::new();
        for i in 0..12 {
            statuses.push(login(&app, &direct, &format!("192.0.2.{i}"), "wrong-password").await);
        }
        assert_eq!(statuses.last(), Some(&429), "{backend:?}: {statuses:?}");
        app.stop().await;
    }
}

/// The consent page of a client that is then suspended or deleted: approving gives the client
/// nothing. The decision refuses a client that is no longer active, and suspension and deletion
/// end the client's undecided requests (so a decision racing them finds its request gone).
#[tokio::test]
async fn a_client_suspended_or_deleted_while_its_consent_page_is_open_gets_no_grant() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let acc = app.account_ids("alice").await[0].clone();
        let dev = app.developer_token("ended@fintech.example").await;
        let open_page = |client: (String, String)| {
            let app = &app;
            async move {
                let (_, challenge) = pkce();
                let rar = rar_all();
                let form = par_form("http://127.0.0.1:9000/callback", &challenge, &rar);
                let r = app.post_par((&client.0, &client.1), &form).await;
                assert_eq!(r.status(), 201);
                let body: Value = r.json().await.unwrap();
                let uri = body["request_uri"].as_str().unwrap().to_string();
                let auth = app
                    .get_authorize(&[("client_id", &client.0), ("request_uri", &uri)])
                    .await;
                app.get_consent_page(auth).await
            }
        };
        let count = |table: &'static str, client: &str| {
            let client = client.to_string();
            app.platform.db.run(move |c| {
                Ok(match table {
                    "grants" => grant_rows::table
                        .filter(grant_rows::client_id.eq(client))
                        .count()
                        .get_result::<i64>(c)?,
                    _ => authorization_requests::table
                        .filter(authorization_requests::client_id.eq(client))
                        .filter(authorization_requests::status.eq("pending"))
                        .count()
                        .get_result::<i64>(c)?,
                })
            })
        };
        let approve = [
            ("decision", "approve"),
            ("account", acc.as_str()),
            ("action", "accounts:read"),
            ("merchant", "m_bean_there"),
        ];

        // An active client gets its grant with this approval.
        let active = app.sandbox_client(&dev).await;
        let (path, html) = open_page(active.clone()).await;
        let r = app.post_consent(&path, &html, &approve).await;
        assert_eq!(r.status(), 303, "{backend:?}: {}", r.text().await.unwrap());
        assert_eq!(count("grants", &active.0).await.unwrap(), 1, "{backend:?}");

        // Suspended after the page was shown (the status alone: the decision checks it).
        let suspended = app.sandbox_client(&dev).await;
        let (path, html) = open_page(suspended.clone()).await;
        let id = suspended.0.clone();
        app.platform
            .db
            .write(move |c| {
                use platform::storage::schema::clients;
                Ok(diesel::update(clients::table.filter(clients::id.eq(id)))
                    .set(clients::status.eq("suspended"))
                    .execute(c)?)
            })
            .await
            .unwrap();
        let r = app.post_consent(&path, &html, &approve).await;
        assert_eq!(r.status(), 400, "{backend:?}: {}", r.text().await.unwrap());
        assert_eq!(
            count("grants", &suspended.0).await.unwrap(),
            0,
            "{backend:?}"
        );

        // Deleted by its developer after the page was shown: its undecided requests end too.
        let deleted = app.sandbox_client(&dev).await;
        let (path, html) = open_page(deleted.clone()).await;
        assert_eq!(count("requests", &deleted.0).await.unwrap(), 1);
        let r = app
            .api(
                reqwest::Method::DELETE,
                &format!("/api/v1/clients/{}", deleted.0),
                Some(&dev),
                None,
            )
            .await;
        assert_eq!(r.status(), 204);
        assert_eq!(
            count("requests", &deleted.0).await.unwrap(),
            0,
            "{backend:?}"
        );
        let r = app.post_consent(&path, &html, &approve).await;
        assert_eq!(r.status(), 400, "{backend:?}");
        assert_eq!(count("grants", &deleted.0).await.unwrap(), 0, "{backend:?}");
        app.stop().await;
    }
}

/// Sandbox clients need no KYC: a real customer never reaches a sandbox client's consent page
/// (and nothing is bound or granted), a test customer does; sandbox tokens carry
/// `environment("sandbox")` and a production resource server refuses them, while a production
/// client's tokens pass it.
#[tokio::test]
async fn sandbox_clients_are_for_test_customers_and_their_tokens_for_sandboxes() {
    use platform::storage::models::{Account, Customer};
    use platform::storage::schema::{accounts, customers};
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        let hash = platform::crypto::hash_password(DEMO_PASSWORD).unwrap();
        app.platform
            .db
            .write(move |c| {
                let now = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now().naive_utc(), 0);
                diesel::insert_into(customers::table)
                    .values(Customer {
                        id: "cust_carol".into(),
                        username: "carol".into(),
                        display_name: "Carol Real".into(),
                        password_hash: hash,
                        created_at: now,
                        is_test: false,
                    })
                    .execute(c)?;
                diesel::insert_into(accounts::table)
                    .values(Account {
                        id: "acc_carol".into(),
                        customer_id: "cust_carol".into(),
                        name: "Current".into(),
                        masked_number: "•••• 1111".into(),
                        currency: "EUR".into(),
                        balance_minor: 100,
                        created_at: now,
                    })
                    .execute(c)?;
                Ok(())
            })
            .await
            .unwrap();

        // Carol, a real customer, and the demo (sandbox) client: refused before any consent.
        app.login_customer("carol").await;
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
        let path = location(&r);
        let page = app.get(&path).await;
        assert_eq!(page.status(), 400, "{backend:?}");
        let html = page.text().await.unwrap();
        assert!(html.contains("sandbox"), "{html}");
        assert!(!html.contains("csrf_token"), "no consent form: {html}");
        let bound: Vec<Option<String>> = app
            .platform
            .db
            .run(|c| {
                Ok(authorization_requests::table
                    .select(authorization_requests::customer_id)
                    .load(c)?)
            })
            .await
            .unwrap();
        assert_eq!(bound, vec![None], "{backend:?}: the request stays unbound");
        // A forged decision for it is refused too.
        let r = app
            .post_form(
                &path,
                None,
                &[
                    ("csrf_token", "x"),
                    ("decision", "approve"),
                    ("account", "acc_carol"),
                ],
            )
            .await;
        assert!(r.status().is_client_error(), "{backend:?}");
        assert_eq!(count_grants(&app).await, 0, "{backend:?}");

        // Alice, a test customer: the sandbox token says sandbox.
        app.login_customer("alice").await;
        let sandbox = app.approved_tokens().await;
        let keys = app
            .get("/.well-known/biscuit-keys")
            .await
            .text()
            .await
            .unwrap();
        let keys = ::grants::KeySet::from_json(&keys).unwrap();
        let production_rs = ::grants::Verifier::new(keys.clone(), ::grants::NoRevocationCheck)
            .environment(::grants::Environment::Production);
        let acc = app.account_ids("alice").await[0].clone();
        let request = ::grants::Request::new(::grants::Action::AccountsRead, chrono::Utc::now())
            .account(::grants::AccountId::parse(acc.clone()).unwrap());
        assert!(
            matches!(
                production_rs.verify(sandbox["access_token"].as_str().unwrap(), &request),
                Err(::grants::error::VerifyError::WrongEnvironment { .. })
            ),
            "{backend:?}"
        );

        // A production client's token passes the production verifier (with its DPoP proof:
        // production clients are FAPI 2.0 clients).
        let prod =
            FapiClient::register(&app, "c_prod", "production", "https://fintech.example/cb").await;
        let (verifier, challenge) = pkce();
        let rar = details(json!({"type": "account_access", "actions": ["accounts:read"]}));
        let redirect = prod
            .authorize(
                &app,
                "https://fintech.example/cb",
                &rar,
                &challenge,
                &[
                    ("decision", "approve"),
                    ("account", &acc),
                    ("action", "accounts:read"),
                ],
            )
            .await;
        let code = query_param(&redirect, "code").expect("code");
        let exchange = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "https://fintech.example/cb"),
            ("code_verifier", verifier.as_str()),
        ];
        let r = prod.post(&app, "/oauth2/token", &exchange, true).await;
        assert_eq!(r.status(), 200, "{backend:?}");
        let production: Value = r.json().await.unwrap();
        let access = production["access_token"].as_str().unwrap();
        let url = "https://bank.example/sandbox/v1/accounts";
        let proof = prod
            .dpop
            .proof("GET", url, Some(access), None, chrono::Utc::now());
        let replay = ::grants::dpop::InMemoryReplayStore::default();
        let ok = production_rs
            .verify_dpop(
                access,
                &request,
                &proof,
                ::grants::dpop::ProofContext::new("GET", url, chrono::Utc::now()),
                &replay,
            )
            .unwrap();
        assert_eq!(ok.environment, ::grants::Environment::Production);
        app.stop().await;
    }
}

/// Each valid authorization request stores a pending row: one address gets 120 a minute, then a
/// 429 page that says when to come back.
#[tokio::test]
async fn authorization_requests_from_one_address_are_bounded() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    for i in 0..120 {
        let r = app.get_authorize(&[("client_id", "c_nobody")]).await;
        assert_eq!(
            r.status(),
            400,
            "request {i}: an error page, not yet limited"
        );
    }
    let r = app.get_authorize(&[("client_id", "c_nobody")]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    app.stop().await;
}

/// The app asked for transactions with every merchant; the customer shares only those with
/// one of theirs (chosen among the merchants of their own transactions, offered on the page).
#[tokio::test]
async fn a_customer_limits_an_app_that_asked_for_all_merchants_to_one() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    app.login_customer("alice").await;
    let acc = app.account_ids("alice").await[0].clone();
    let rar = details(json!({"type": "account_access", "actions": ["transactions:read"]}));
    let (_, challenge) = pkce();
    let r = app
        .get_authorize(&[
            ("client_id", DEMO_CLIENT),
            ("response_type", "code"),
            ("redirect_uri", DEMO_REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("authorization_details", &rar),
        ])
        .await;
    let (path, html) = app.get_consent_page(r).await;
    assert!(html.contains("The app asked for transactions with all merchants"));
    assert!(
        html.contains("name=\"merchant\" value=\"m_bean_there\""),
        "own merchants offered"
    );
    // More merchants than a grant may carry are refused before anything else is done.
    let many: Vec<String> = (0..=grants::MAX_MERCHANTS)
        .map(|i| format!("m_x{i}"))
        .collect();
    let mut fields = vec![
        ("decision", "approve"),
        ("account", acc.as_str()),
        ("action", "transactions:read"),
    ];
    fields.extend(many.iter().map(|m| ("merchant", m.as_str())));
    let r = app.post_consent(&path, &html, &fields).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("too many merchants"));

    let tokens = app
        .demo_tokens(&[
            ("decision", "approve"),
            ("account", &acc),
            ("action", "transactions:read"),
            ("merchant", "m_bean_there"),
        ])
        .await;
    assert_eq!(
        tokens["authorization_details"][0]["merchants"],
        json!(["m_bean_there"])
    );
    let r = app
        .client
        .get(app.url(&format!("/sandbox/v1/accounts/{acc}/transactions")))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Vec<Value> = r.json().await.unwrap();
    assert!(!list.is_empty(), "alice buys coffee");
    assert!(
        list.iter().all(|t| t["merchant_id"] == "m_bean_there"),
        "{list:?}"
    );

    // Choosing none shares all, as asked.
    let all = app
        .demo_tokens(&[
            ("decision", "approve"),
            ("account", &acc),
            ("action", "transactions:read"),
        ])
        .await;
    assert!(all["authorization_details"][0].get("merchants").is_none());
    app.stop().await;
}

/// A pushed request is recorded with the client's registration it was checked against only while
/// the client is active and registered exactly so; a change between the push and the
/// authorization request (redirect URIs, allowed actions, suspension) is decided by the client as
/// it is then, and a refused request writes nothing.
#[tokio::test]
async fn a_pushed_request_is_checked_again_when_its_client_changed_since() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        insert_other_client(&app).await;
        let rar = details(json!({"type": "account_access", "actions": ["accounts:read"]}));
        let push = || async {
            let (_, challenge) = pkce();
            let r = app
                .post_par(OTHER, &par_form(DEMO_REDIRECT, &challenge, &rar))
                .await;
            assert_eq!(r.status(), 201, "{backend:?}: PAR");
            let body: Value = r.json().await.unwrap();
            body["request_uri"].as_str().unwrap().to_string()
        };
        let authorize = |uri: String| {
            let app = &app;
            async move {
                app.get_authorize(&[("client_id", OTHER.0), ("request_uri", &uri)])
                    .await
            }
        };
        let set = |column: &'static str, value: &'static str| {
            let p = app.platform.clone();
            async move {
                p.db.write(move |c| {
                    use platform::storage::schema::clients;
                    let target = clients::table.filter(clients::id.eq(OTHER.0));
                    match column {
                        "redirect_uris" => diesel::update(target)
                            .set(clients::redirect_uris.eq(value))
                            .execute(c)?,
                        "allowed_actions" => diesel::update(target)
                            .set(clients::allowed_actions.eq(value))
                            .execute(c)?,
                        _ => diesel::update(target)
                            .set(clients::status.eq(value))
                            .execute(c)?,
                    };
                    Ok(())
                })
                .await
                .unwrap()
            }
        };
        let registered = serde_json::to_string(&[DEMO_REDIRECT]).unwrap();
        let registered: &'static str = Box::leak(registered.into_boxed_str());
        let both = serde_json::to_string(&[DEMO_REDIRECT, "https://other.example/cb"]).unwrap();
        let both: &'static str = Box::leak(both.into_boxed_str());

        // Unchanged: recorded.
        let before = count_requests(&app).await;
        let r = authorize(push().await).await;
        assert_eq!(r.status(), 303, "{backend:?}: unchanged client");
        assert!(location(&r).starts_with("/oauth2/consent/"));
        assert_eq!(count_requests(&app).await, before + 1);

        // Changed but still allowing the request (another redirect URI added): recorded.
        let uri = push().await;
        set("redirect_uris", both).await;
        let r = authorize(uri).await;
        assert_eq!(r.status(), 303, "{backend:?}: a redirect URI added");
        assert_eq!(count_requests(&app).await, before + 2);

        // The request's redirect URI removed after the push: refused on our page, nothing
        // written.
        let uri = push().await;
        set("redirect_uris", r#"["https://other.example/cb"]"#).await;
        assert_error_page(
            authorize(uri).await,
            "redirect_uri is not registered",
            "redirect URI removed",
        )
        .await;
        assert_eq!(count_requests(&app).await, before + 2);
        set("redirect_uris", registered).await;

        // The requested action no longer allowed.
        let uri = push().await;
        set("allowed_actions", r#"["balances:read"]"#).await;
        assert_error_page(
            authorize(uri).await,
            "this client may not request accounts:read",
            "action withdrawn",
        )
        .await;
        assert_eq!(count_requests(&app).await, before + 2);
        set("allowed_actions", r#"["accounts:read","balances:read"]"#).await;

        // Suspended after the push.
        let uri = push().await;
        set("status", "suspended").await;
        assert_error_page(
            authorize(uri).await,
            "unknown or inactive client",
            "suspended",
        )
        .await;
        assert_eq!(count_requests(&app).await, before + 2, "{backend:?}");
        // Active again: a request pushed now is recorded.
        set("status", "active").await;
        let r = authorize(push().await).await;
        assert_eq!(r.status(), 303, "{backend:?}: active again");
        assert_eq!(count_requests(&app).await, before + 3);
        app.stop().await;
    }
}

/// Two customers opening one request's consent page at once: it is bound to exactly one of
/// them, who sees the page; the other gets the "not pending" page (on PostgreSQL the binding is
/// part of the page's one read statement).
#[tokio::test]
async fn a_request_opened_by_two_customers_at_once_is_bound_to_one() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        let alice = e2e_tests::dashboard::customer_client(&app, "alice").await;
        let bob = e2e_tests::dashboard::customer_client(&app, "bob").await;
        for round in 0..8 {
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
            let path = location(&r);
            let id = path.trim_start_matches("/oauth2/consent/").to_string();
            let url = app.url(&path);
            let (a, b) = tokio::join!(alice.get(&url).send(), bob.get(&url).send());
            let (a, b) = (a.unwrap().status().as_u16(), b.unwrap().status().as_u16());
            let bound: Option<String> = app
                .platform
                .db
                .run(move |c| {
                    Ok(authorization_requests::table
                        .filter(authorization_requests::id.eq(&id))
                        .select(authorization_requests::customer_id)
                        .first(c)?)
                })
                .await
                .unwrap();
            let case = format!("{backend:?} round {round}: alice {a}, bob {b}, bound {bound:?}");
            match (a, b) {
                (200, 400) => {
                    assert_eq!(bound, Some(consent::demo::customer_id("alice")), "{case}")
                }
                (400, 200) => assert_eq!(bound, Some(consent::demo::customer_id("bob")), "{case}"),
                _ => panic!("exactly one page: {case}"),
            }
        }
        app.stop().await;
    }
}
