//! Customer login through the bank's own OpenID Connect provider ([`e2e_tests::idp`]), on every
//! backend: linking, refusals of every broken ID token, the attempt bound to its browser and
//! used once, the required `acr`, and passwords switched off.

use diesel::prelude::*;
use e2e_tests::idp::{CLIENT_ID, CLIENT_SECRET, Mode, TestIdp};
use e2e_tests::oauth::{
    DEMO_CLIENT, DEMO_REDIRECT, DEMO_SECRET, details, location, pkce, query_param,
};
use e2e_tests::{Backend, TestApp, backends, spawn_app_with};
use platform::config::Secret;
use platform::storage::schema::{customer_identities, customers, sessions};
use serde_json::json;

async fn app_with(
    backend: Backend,
    idp: &TestIdp,
    tune: impl FnOnce(&mut platform::config::CustomerLoginSettings),
) -> TestApp {
    app_for_issuer(backend, idp.issuer.clone(), tune).await
}

/// The demo app logging customers in through the provider at `issuer`.
async fn app_for_issuer(
    backend: Backend,
    issuer: String,
    tune: impl FnOnce(&mut platform::config::CustomerLoginSettings),
) -> TestApp {
    spawn_app_with(
        backend,
        consent::startup::ServeOptions {
            demo: true,
            ..Default::default()
        },
        move |s| {
            let l = &mut s.customer_login;
            l.oidc_issuer = Some(issuer);
            l.oidc_client_id = Some(CLIENT_ID.into());
            l.oidc_client_secret = Some(Secret::new(CLIENT_SECRET.into()));
            tune(l);
        },
    )
    .await
}

/// Starts a login on `app` (its client keeps the attempt cookie), lets the provider log its
/// user in, and returns the callback's answer from `app`.
async fn log_in(app: &TestApp) -> reqwest::Response {
    let r = app.get("/login/oidc?next=/account/apps").await;
    assert_eq!(r.status(), 303, "to the provider");
    let at_provider = location(&r);
    let back = provider_redirect(&at_provider).await;
    app.get(&back).await
}

/// What the provider's authorization endpoint redirects to, as a path of the app.
async fn provider_redirect(url: &str) -> String {
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain.get(url).send().await.unwrap();
    assert_eq!(r.status(), 302, "the provider logs its user in");
    let to = url::Url::parse(&location(&r)).unwrap();
    assert_eq!(to.path(), "/login/oidc/callback");
    format!("{}?{}", to.path(), to.query().unwrap_or_default())
}

async fn session_count(app: &TestApp) -> i64 {
    app.platform
        .db
        .run(|c| Ok(sessions::table.count().get_result(c)?))
        .await
        .unwrap()
}

async fn linked(app: &TestApp) -> Vec<(String, String)> {
    app.platform
        .db
        .run(|c| {
            Ok(customer_identities::table
                .select((
                    customer_identities::subject,
                    customer_identities::customer_id,
                ))
                .order(customer_identities::subject)
                .load(c)?)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_customer_logs_in_through_the_banks_provider() {
    for backend in backends() {
        let idp = TestIdp::start().await;
        idp.set_claims(json!({"acr": "urn:bank:loa:high", "amr": ["pwd", "otp"]}));
        let app = app_with(backend, &idp, |_| {}).await;
        let page = app.get("/login").await.text().await.unwrap();
        assert!(page.contains("href=\"/login/oidc?next=%2F\""), "{page}");
        assert!(page.contains("Log in with your bank"));

        let r = log_in(&app).await;
        assert_eq!(r.status(), 303, "{backend:?}: {}", r.text().await.unwrap());
        assert_eq!(location(&r), "/account/apps");
        let r = app.get("/account/apps").await;
        assert_eq!(r.status(), 200, "a customer session");
        assert!(r.text().await.unwrap().contains("Alice"));
        let alice = e2e_tests::oauth::customer_id(&app, "alice").await;
        assert_eq!(
            linked(&app).await,
            vec![("alice".to_string(), alice.clone())]
        );
        let actions = app.audit_actions().await;
        assert!(
            actions.contains(&"customer.identity_linked".to_string()),
            "{actions:?}"
        );
        let details: String = app
            .platform
            .db
            .run(|c| {
                use platform::storage::schema::audit_events as a;
                Ok(a::table
                    .filter(a::action.eq("customer.login"))
                    .select(a::details)
                    .first(c)?)
            })
            .await
            .unwrap();
        let details: serde_json::Value = serde_json::from_str(&details).unwrap();
        assert_eq!(details["method"], "oidc");
        assert_eq!(details["acr"], "urn:bank:loa:high");
        assert_eq!(details["amr"], json!(["pwd", "otp"]));
        assert_eq!(details["issuer"], idp.issuer);

        // A second login uses the link; nothing more is linked.
        let r = log_in(&app).await;
        assert_eq!(r.status(), 303);
        assert_eq!(linked(&app).await.len(), 1);

        // A subject with no customer record is refused, and nothing is created.
        idp.log_in_as("mallory");
        let sessions_before = session_count(&app).await;
        let r = log_in(&app).await;
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("no customer record"));
        assert_eq!(session_count(&app).await, sessions_before);
        assert_eq!(linked(&app).await.len(), 1);
        app.stop().await;
        idp.stop().await;
    }
}

/// Linked by `email`: only an address the provider says it verified links a subject to the
/// customer with that username (anyone may put any address on an account at many providers).
#[tokio::test]
async fn an_unverified_email_links_nobody() {
    for backend in backends() {
        let idp = TestIdp::start().await;
        idp.log_in_as("Z-77");
        let app = app_with(backend, &idp, |l| l.oidc_username_claim = "email".into()).await;
        for claims in [
            json!({"email": "alice", "email_verified": false}),
            json!({"email": "alice"}),
        ] {
            idp.set_claims(claims.clone());
            let r = log_in(&app).await;
            assert_eq!(r.status(), 403, "{backend:?}: {claims}");
            assert!(linked(&app).await.is_empty(), "{backend:?}: {claims}");
        }
        idp.set_claims(json!({"email": "alice", "email_verified": true}));
        let r = log_in(&app).await;
        assert_eq!(r.status(), 303, "{backend:?}");
        let alice = e2e_tests::oauth::customer_id(&app, "alice").await;
        assert_eq!(linked(&app).await, vec![("Z-77".to_string(), alice)]);
        app.stop().await;
        idp.stop().await;
    }
}

#[tokio::test]
async fn a_new_subject_gets_a_customer_record_where_the_bank_allows_it() {
    let idp = TestIdp::start().await;
    idp.log_in_as("Z-1234");
    idp.set_claims(json!({"preferred_username": "new.customer", "name": "New Customer"}));
    let app = app_with(Backend::Sqlite, &idp, |l| {
        l.oidc_create_customers = true;
        l.oidc_username_claim = "preferred_username".into();
    })
    .await;
    let r = log_in(&app).await;
    assert_eq!(r.status(), 303);
    let (name, hash): (String, String) = app
        .platform
        .db
        .run(|c| {
            Ok(customers::table
                .filter(customers::username.eq("new.customer"))
                .select((customers::display_name, customers::password_hash))
                .first(c)?)
        })
        .await
        .unwrap();
    assert_eq!(name, "New Customer");
    assert!(
        !platform::crypto::verify_password("!", Some(&hash)),
        "no password works"
    );
    assert_eq!(linked(&app).await[0].0, "Z-1234");
    app.stop().await;
    idp.stop().await;
}

/// Bad signature, another audience, another nonce, expired, another issuer, unsigned: each is
/// refused with a page and logs nobody in.
#[tokio::test]
async fn id_tokens_that_do_not_check_out_are_refused() {
    for backend in backends() {
        let idp = TestIdp::start().await;
        let app = app_with(backend, &idp, |_| {}).await;
        for mode in [
            Mode::BadSignature,
            Mode::WrongAudience,
            Mode::WrongNonce,
            Mode::Expired,
            Mode::OtherIssuer,
            Mode::Unsigned,
        ] {
            idp.set_mode(mode);
            let r = log_in(&app).await;
            assert_eq!(r.status(), 400, "{backend:?} {mode:?}");
            assert!(
                r.text()
                    .await
                    .unwrap()
                    .contains("an identity that could not be checked"),
                "{mode:?}"
            );
            assert_eq!(session_count(&app).await, 0, "{mode:?}");
            assert_eq!(app.get("/account/apps").await.status(), 303, "{mode:?}");
        }
        assert!(linked(&app).await.is_empty());
        idp.set_mode(Mode::Good);
        assert_eq!(
            log_in(&app).await.status(),
            303,
            "and then a good one works"
        );
        app.stop().await;
        idp.stop().await;
    }
}

/// The callback works once, in the browser that started the login, with its own `state`.
#[tokio::test]
async fn a_login_attempt_is_bound_to_its_browser_and_used_once() {
    let idp = TestIdp::start().await;
    let app = app_with(Backend::Sqlite, &idp, |_| {}).await;

    // Another browser (no attempt cookie) cannot finish this browser's attempt.
    let r = app.get("/login/oidc").await;
    let back = provider_redirect(&location(&r)).await;
    let stranger = app.client_from("127.0.0.2");
    let r = stranger.get(app.url(&back)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // Nor with another state; and once an attempt has been answered it is gone.
    let tampered = back.replace("state=", "state=x");
    assert_eq!(app.get(&tampered).await.status(), 400);
    assert_eq!(
        app.get(&back).await.status(),
        400,
        "the attempt was cleared"
    );

    let r = app.get("/login/oidc").await;
    let back = provider_redirect(&location(&r)).await;
    assert_eq!(app.get(&back).await.status(), 303);
    assert_eq!(app.get(&back).await.status(), 400, "a callback works once");
    // An error from the provider, and a callback with nothing, log nobody in.
    assert_eq!(
        app.get("/login/oidc/callback?error=access_denied&state=x")
            .await
            .status(),
        400
    );
    assert_eq!(app.get("/login/oidc/callback").await.status(), 400);
    // `next` stays on this site.
    let r = app.get("/login/oidc?next=https://evil.example/").await;
    let back = provider_redirect(&location(&r)).await;
    let r = app.get(&back).await;
    assert_eq!(location(&r), "/");
    app.stop().await;
    idp.stop().await;
}

#[tokio::test]
async fn a_required_level_of_authentication_is_enforced() {
    let idp = TestIdp::start().await;
    let app = app_with(Backend::Sqlite, &idp, |l| {
        l.oidc_required_acr = Some("urn:bank:loa:high".into());
    })
    .await;
    let r = app.get("/login/oidc").await;
    let at_provider = location(&r);
    assert!(
        at_provider.contains("acr_values=urn%3Abank%3Aloa%3Ahigh"),
        "{at_provider}"
    );
    idp.set_claims(json!({"acr": "urn:bank:loa:low"}));
    let back = provider_redirect(&at_provider).await;
    assert_eq!(app.get(&back).await.status(), 403);
    idp.set_claims(json!({"acr": "urn:bank:loa:high"}));
    assert_eq!(log_in(&app).await.status(), 303);
    app.stop().await;
    idp.stop().await;
}

#[tokio::test]
async fn passwords_can_be_switched_off() {
    let idp = TestIdp::start().await;
    let app = app_with(Backend::Sqlite, &idp, |l| l.passwords = false).await;
    let page = app.get("/login").await.text().await.unwrap();
    assert!(!page.contains("type=\"password\""), "no password form");
    assert!(page.contains("/login/oidc"));
    let r = app
        .post_form(
            "/login",
            None,
            &[
                ("csrf_token", "no-form-no-token"),
                ("username", "alice"),
                ("password", e2e_tests::oauth::DEMO_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(session_count(&app).await, 0);
    app.stop().await;
    idp.stop().await;

    // Without a provider, switching passwords off would lock every customer out; an issuer
    // over plain http is refused (except on loopback).
    let load = |pairs: &[(&str, &str)]| {
        platform::config::Settings::load_from(
            None,
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    };
    assert!(load(&[("CONSENT_CUSTOMER_LOGIN__PASSWORDS", "false")]).is_err());
    let remote = [
        (
            "CONSENT_CUSTOMER_LOGIN__OIDC_ISSUER",
            "http://idp.bank.example",
        ),
        ("CONSENT_CUSTOMER_LOGIN__OIDC_CLIENT_ID", "c"),
        ("CONSENT_CUSTOMER_LOGIN__OIDC_CLIENT_SECRET", "s"),
    ];
    assert!(load(&remote).is_err());
    let https = [
        (
            "CONSENT_CUSTOMER_LOGIN__OIDC_ISSUER",
            "https://idp.bank.example",
        ),
        ("CONSENT_CUSTOMER_LOGIN__OIDC_CLIENT_ID", "c"),
        ("CONSENT_CUSTOMER_LOGIN__OIDC_CLIENT_SECRET", "s"),
        ("CONSENT_CUSTOMER_LOGIN__PASSWORDS", "false"),
    ];
    assert!(load(&https).is_ok());
    assert!(
        load(&[(
            "CONSENT_CUSTOMER_LOGIN__OIDC_ISSUER",
            "https://idp.bank.example"
        )])
        .is_err(),
        "no client"
    );
}

/// The provider ends a customer's sessions server to server; a logout token that does not check
/// out ends nothing.
#[tokio::test]
async fn the_provider_logs_a_customer_out_through_the_back_channel() {
    for backend in backends() {
        let idp = TestIdp::start().await;
        let app = app_with(backend, &idp, |_| {}).await;
        assert_eq!(log_in(&app).await.status(), 303);
        assert_eq!(app.get("/account/apps").await.status(), 200);
        let post = |token: String| {
            let app = &app;
            async move {
                app.post_form(
                    "/login/oidc/backchannel-logout",
                    None,
                    &[("logout_token", token.as_str())],
                )
                .await
            }
        };
        let now = chrono::Utc::now().timestamp();
        let refused: Vec<(&str, String)> = vec![
            ("foreign key", idp.logout_token("alice", true, |_| {})),
            (
                "other issuer",
                idp.logout_token("alice", false, |c| {
                    c["iss"] = json!("https://elsewhere.example")
                }),
            ),
            (
                "other audience",
                idp.logout_token("alice", false, |c| c["aud"] = json!("another")),
            ),
            (
                "stale",
                idp.logout_token("alice", false, |c| c["iat"] = json!(now - 3600)),
            ),
            (
                "no event",
                idp.logout_token("alice", false, |c| c["events"] = json!({})),
            ),
            (
                "a nonce",
                idp.logout_token("alice", false, |c| c["nonce"] = json!("n")),
            ),
            (
                "no sub",
                idp.logout_token("alice", false, |c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
            ),
            (
                "no jti",
                idp.logout_token("alice", false, |c| {
                    c.as_object_mut().unwrap().remove("jti");
                }),
            ),
            ("not a JWT", "not-a-jwt".to_string()),
            ("unsigned", {
                let t = idp.logout_token("alice", false, |_| {});
                let mut parts: Vec<&str> = t.split('.').collect();
                let none = base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    r#"{"alg":"none"}"#,
                );
                parts[0] = &none;
                format!("{}.{}.", parts[0], parts[1])
            }),
        ];
        for (why, token) in refused {
            let r = post(token).await;
            assert_eq!(r.status(), 400, "{backend:?} {why}");
            assert_eq!(
                r.headers()["content-type"],
                "application/problem+json",
                "{why}"
            );
            assert_eq!(
                app.get("/account/apps").await.status(),
                200,
                "{why}: still logged in"
            );
        }
        // Someone linked to nobody: nothing ends, and the answer is the same.
        assert_eq!(
            post(idp.logout_token("mallory", false, |_| {}))
                .await
                .status(),
            200
        );
        assert_eq!(app.get("/account/apps").await.status(), 200);

        let token = idp.logout_token("alice", false, |_| {});
        let r = post(token.clone()).await;
        assert_eq!(r.status(), 200);
        assert_eq!(app.get("/account/apps").await.status(), 303, "logged out");
        assert_eq!(session_count(&app).await, 0);
        // The same token again, once the customer is back: refused, and they stay logged in.
        assert_eq!(log_in(&app).await.status(), 303);
        assert_eq!(app.get("/account/apps").await.status(), 200);
        let r = post(token).await;
        assert_eq!(r.status(), 400, "{backend:?}: a replay");
        assert_eq!(app.get("/account/apps").await.status(), 200, "{backend:?}");
        assert!(
            app.audit_actions()
                .await
                .contains(&"customer.logged_out_by_provider".to_string())
        );
        app.stop().await;
        idp.stop().await;
    }
}

/// End to end in Chromium against an OpenID-certified provider (npm `oidc-provider`, its own
/// login and consent pages): the dashboard, the login page's provider button, the provider, and
/// back to the dashboard logged in as the customer the provider's subject is linked to.
#[tokio::test]
async fn upstream_login_in_chromium_against_oidc_provider() {
    if !e2e_tests::browser::available("upstream login") {
        return;
    }
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (app_port, idp_port) = (free_port(), free_port());
    let redirect = format!("http://127.0.0.1:{app_port}/login/oidc/callback");
    let _idp = e2e_tests::browser::start_node(
        "idp.mjs",
        &[&idp_port.to_string(), CLIENT_ID, CLIENT_SECRET, &redirect],
    )
    .await;
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let app = spawn_app_with(
        Backend::Sqlite,
        consent::startup::ServeOptions {
            demo: true,
            ..Default::default()
        },
        |s| {
            s.server.bind = format!("127.0.0.1:{app_port}");
            let l = &mut s.customer_login;
            l.oidc_issuer = Some(issuer.clone());
            l.oidc_client_id = Some(CLIENT_ID.into());
            l.oidc_client_secret = Some(Secret::new(CLIENT_SECRET.into()));
        },
    )
    .await;
    // A fintech's authorization request (PAR), opened in the browser.
    let (verifier, challenge) = pkce();
    let rar = details(json!({"type": "account_access", "actions": ["balances:read"]}));
    let authorize = app.pushed_authorize_url(&rar, &challenge).await;
    let r = e2e_tests::browser::run(
        "upstream-login.mjs",
        &[&app.address, &authorize, DEMO_REDIRECT, "alice"],
    )
    .await
    .expect("the browser is available");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["a11y"], json!([]), "{r}");
    assert!(
        r["providerUrl"].as_str().unwrap().starts_with(&issuer),
        "{r}"
    );
    assert!(
        r["consentUrl"]
            .as_str()
            .unwrap()
            .starts_with(&app.url("/oauth2/consent/")),
        "back from the provider to the consent page: {r}"
    );
    assert!(
        r["summary"]
            .as_str()
            .unwrap()
            .contains(" will see balances of "),
        "{r}"
    );
    assert!(r["loggedInAs"].as_str().unwrap().contains("Alice"), "{r}");
    let code = query_param(r["callbackUrl"].as_str().unwrap(), "code").expect("a code");
    let t = app
        .exchange_code((DEMO_CLIENT, DEMO_SECRET), &code, DEMO_REDIRECT, &verifier)
        .await;
    assert_eq!(t.status(), 200);
    let tokens: serde_json::Value = t.json().await.unwrap();
    assert_eq!(
        r["apps"],
        json!([tokens["grant_id"]]),
        "the dashboard lists the app: {r}"
    );
    let alice = e2e_tests::oauth::customer_id(&app, "alice").await;
    assert_eq!(linked(&app).await, vec![("alice".to_string(), alice)]);
    app.stop().await;
}

/// A provider that accepts connections and never answers costs the first login its timeout
/// (10 s); the logins after it are answered at once (503) instead of each queueing behind a
/// timeout of its own, and nothing is written.
#[tokio::test]
async fn a_provider_that_does_not_answer_holds_up_one_login_not_all() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    // Accept and hold every connection, answering nothing.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let app = app_for_issuer(Backend::Sqlite, issuer, |_| {}).await;
    let sessions_before = session_count(&app).await;
    let started = std::time::Instant::now();
    let first = app.get("/login/oidc?next=/account/apps").await;
    assert_eq!(first.status(), 503, "the provider is unavailable");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(9),
        "the first login waited for the provider"
    );
    let started = std::time::Instant::now();
    let login = || app.get("/login/oidc?next=/account/apps");
    let (a, b, c, d) = tokio::join!(login(), login(), login(), login());
    for r in [a, b, c, d] {
        assert_eq!(r.status(), 503);
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "the failure was remembered: {:?}",
        started.elapsed()
    );
    assert_eq!(
        session_count(&app).await,
        sessions_before,
        "nothing written"
    );
}
