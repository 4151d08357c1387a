//! OpenID Grant Management: `grant_id` + `grant_management_action` on PAR. `merge` widens a grant
//! the customer already gave (same id, both scopes), `replace` swaps its scope; either way the
//! grant's earlier refresh and access tokens end (access tokens through the revocation feed, so
//! offline verifiers refuse them too). A grant of another client, of another customer, or none
//! at all is `invalid_grant_id`.

use e2e_tests::dashboard::customer_client;
use e2e_tests::oauth::*;
use e2e_tests::{Backend, TestApp, backends, spawn_demo_app};
use serde_json::{Value, json};

const DEMO: (&str, &str) = (DEMO_CLIENT, DEMO_SECRET);

fn rar(actions: &[&str]) -> String {
    details(json!({ "type": "account_access", "actions": actions }))
}

/// PAR for `actions` with `extra` parameters (grant management), by the demo client.
async fn push(
    app: &TestApp,
    actions: &[&str],
    extra: &[(&str, &str)],
) -> (reqwest::Response, String) {
    let (verifier, challenge) = pkce();
    let rar = rar(actions);
    let mut form: Vec<(&str, &str)> = par_form(DEMO_REDIRECT, &challenge, &rar).to_vec();
    form.extend_from_slice(extra);
    (app.post_par(DEMO, &form).await, verifier)
}

/// The logged-in customer consents (to `actions` on `account`); the code is exchanged.
async fn connect(app: &TestApp, account: &str, actions: &[&str], extra: &[(&str, &str)]) -> Value {
    let (par, verifier) = push(app, actions, extra).await;
    let mut fields = vec![("decision", "approve"), ("account", account)];
    fields.extend(actions.iter().map(|a| ("action", *a)));
    let loc = app.consent_to_pushed(DEMO_CLIENT, par, &fields).await;
    let code = query_param(&loc, "code").expect("code");
    let r = app
        .exchange_code(DEMO, &code, DEMO_REDIRECT, &verifier)
        .await;
    assert_eq!(r.status(), 200, "code exchange");
    r.json().await.unwrap()
}

/// Alice (logged in on `app.client`) connects the demo client for `accounts:read` on her first
/// account: (that account, the token response, its grant id).
async fn alice_connected(app: &TestApp) -> (String, Value, String) {
    app.login_customer("alice").await;
    let acc = app.account_ids("alice").await[0].clone();
    let first = connect(app, &acc, &["accounts:read"], &[]).await;
    let grant = first["grant_id"].as_str().unwrap().to_string();
    (acc, first, grant)
}

fn actions_of(introspection: &Value) -> Vec<String> {
    let mut a: Vec<String> =
        serde_json::from_value(introspection["authorization_details"][0]["actions"].clone())
            .unwrap();
    a.sort();
    a
}

async fn refresh_status(app: &TestApp, token: &Value) -> u16 {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", token["refresh_token"].as_str().unwrap()),
    ];
    app.post_token(DEMO, &form).await.status().as_u16()
}

/// The sandbox API's answer to `token` (offline verification against the revocation list).
async fn sandbox_status(app: &TestApp, token: &Value) -> u16 {
    let r = app
        .client
        .get(app.url("/sandbox/v1/accounts"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

#[tokio::test]
async fn merge_widens_and_replace_swaps_a_grant_and_the_old_tokens_end() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        let (acc, first, grant) = alice_connected(&app).await;
        assert_eq!(sandbox_status(&app, &first).await, 200, "{backend:?}");

        // merge: the consent page says what changes; the grant keeps its id and gains balances.
        let (par, _) = push(
            &app,
            &["balances:read"],
            &[("grant_id", &grant), ("grant_management_action", "merge")],
        )
        .await;
        let body: Value = par.json().await.unwrap();
        let auth = app
            .get_authorize(&[
                ("client_id", DEMO_CLIENT),
                ("request_uri", body["request_uri"].as_str().unwrap()),
            ])
            .await;
        let (_, html) = app.get_consent_page(auth).await;
        assert!(
            html.contains("This adds to the access you already gave this app"),
            "{backend:?}"
        );
        let merged = connect(
            &app,
            &acc,
            &["balances:read"],
            &[("grant_id", &grant), ("grant_management_action", "merge")],
        )
        .await;
        assert_eq!(
            merged["grant_id"],
            grant.as_str(),
            "{backend:?}: same grant"
        );
        let seen = app
            .post_introspect(DEMO, merged["access_token"].as_str().unwrap())
            .await;
        assert_eq!(
            actions_of(&seen),
            ["accounts:read", "balances:read"],
            "{backend:?}"
        );
        // The first tokens ended: the refresh token at once, the access token offline too.
        assert_eq!(refresh_status(&app, &first).await, 400, "{backend:?}");
        let old = app
            .post_introspect(DEMO, first["access_token"].as_str().unwrap())
            .await;
        assert_eq!(old["active"], false, "{backend:?}: {old}");
        assert_eq!(sandbox_status(&app, &first).await, 401, "{backend:?}");
        assert_eq!(sandbox_status(&app, &merged).await, 200, "{backend:?}");

        // replace: only what is consented now; the merged tokens end.
        let replaced = connect(
            &app,
            &acc,
            &["transactions:read"],
            &[("grant_id", &grant), ("grant_management_action", "replace")],
        )
        .await;
        assert_eq!(replaced["grant_id"], grant.as_str(), "{backend:?}");
        let seen = app
            .post_introspect(DEMO, replaced["access_token"].as_str().unwrap())
            .await;
        assert_eq!(actions_of(&seen), ["transactions:read"], "{backend:?}");
        assert_eq!(refresh_status(&app, &merged).await, 400, "{backend:?}");
        assert_eq!(sandbox_status(&app, &merged).await, 401, "{backend:?}");
        // Its introspection was answered (and may be remembered) before: not any more.
        let old = app
            .post_introspect(DEMO, merged["access_token"].as_str().unwrap())
            .await;
        assert_eq!(old["active"], false, "{backend:?}: {old}");
        assert_eq!(refresh_status(&app, &replaced).await, 200, "{backend:?}");

        // The grant management endpoint (the client grant API) answers the grant as it is.
        let r = app
            .client
            .get(app.url(&format!("/api/v1/grants/{grant}")))
            .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
            .send()
            .await
            .unwrap();
        let view: Value = r.json().await.unwrap();
        assert_eq!(
            view["authorization_details"][0]["actions"],
            json!(["transactions:read"])
        );
        assert_eq!(view["scopes"], json!([{ "scope": "transactions:read" }]));
        assert!(view["created_at"].is_string() && view["expires_at"].is_string());

        // create (explicit): a new grant beside it.
        let created = connect(
            &app,
            &acc,
            &["accounts:read"],
            &[("grant_management_action", "create")],
        )
        .await;
        assert_ne!(created["grant_id"], grant.as_str(), "{backend:?}");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_denied_merge_leaves_the_grant_and_its_tokens_alone() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    let (_, first, grant) = alice_connected(&app).await;
    let (par, _) = push(
        &app,
        &["balances:read"],
        &[("grant_id", &grant), ("grant_management_action", "merge")],
    )
    .await;
    let loc = app
        .consent_to_pushed(DEMO_CLIENT, par, &[("decision", "deny")])
        .await;
    assert_eq!(query_param(&loc, "error").as_deref(), Some("access_denied"));
    let seen = app
        .post_introspect(DEMO, first["access_token"].as_str().unwrap())
        .await;
    assert_eq!(seen["active"], true);
    assert_eq!(actions_of(&seen), ["accounts:read"]);
    assert_eq!(refresh_status(&app, &first).await, 200);
    app.stop().await;
}

#[tokio::test]
async fn grant_ids_that_are_not_the_clients_or_the_customers_are_refused() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    let (_, first, grant) = alice_connected(&app).await;

    let refused = |extra: Vec<(&'static str, String)>, error: &'static str| {
        let app = &app;
        async move {
            let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (r, _) = push(app, &["accounts:read"], &extra).await;
            assert_eq!(r.status(), 400, "{extra:?}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], error, "{extra:?}: {body}");
        }
    };
    let merge = || ("grant_management_action", "merge".to_string());
    // No such grant; a malformed id; an action without a grant; a grant without an action.
    refused(
        vec![("grant_id", "g_nosuchgrant".into()), merge()],
        "invalid_grant_id",
    )
    .await;
    refused(
        vec![("grant_id", "not-a-grant".into()), merge()],
        "invalid_grant_id",
    )
    .await;
    refused(vec![merge()], "invalid_request").await;
    refused(vec![("grant_id", grant.clone())], "invalid_request").await;
    refused(
        vec![
            ("grant_id", grant.clone()),
            ("grant_management_action", "delete".into()),
        ],
        "invalid_request",
    )
    .await;

    // Another client's grant.
    e2e_tests::dashboard::insert_unverified_client(
        &app,
        "c_other",
        DEMO_REDIRECT,
        "cs_other-secret",
    )
    .await;
    let (verifier, challenge) = pkce();
    let _ = verifier;
    let rar = rar(&["accounts:read"]);
    let mut form: Vec<(&str, &str)> = par_form(DEMO_REDIRECT, &challenge, &rar).to_vec();
    form.extend([
        ("grant_id", grant.as_str()),
        ("grant_management_action", "merge"),
    ]);
    let r = app.post_par(("c_other", "cs_other-secret"), &form).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_grant_id"
    );

    // Another customer's: bob cannot merge into alice's grant, even through her client.
    let (par, _) = push(
        &app,
        &["accounts:read"],
        &[("grant_id", &grant), ("grant_management_action", "merge")],
    )
    .await;
    let body: Value = par.json().await.unwrap();
    let bob = customer_client(&app, "bob").await;
    let url = url::Url::parse_with_params(
        &app.url("/oauth2/authorize"),
        [
            ("client_id", DEMO_CLIENT),
            ("request_uri", body["request_uri"].as_str().unwrap()),
        ],
    )
    .unwrap();
    let r = bob.get(url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let page = bob.get(app.url(&location(&r))).send().await.unwrap();
    assert_eq!(page.status(), 400);
    assert!(page.text().await.unwrap().contains("invalid_grant_id"));
    // Alice's grant and tokens are untouched.
    assert_eq!(refresh_status(&app, &first).await, 200);

    // The metadata says what is supported.
    let meta: Value = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["grant_management_actions_supported"],
        json!(["create", "merge", "replace"])
    );
    assert_eq!(meta["grant_management_action_required"], false);
    assert!(
        meta["grant_management_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/api/v1/grants")
    );
    app.stop().await;
}

/// A code the customer's earlier change produced, not yet exchanged, does not outlive the next
/// change: refused as unknown, and the grant stays.
#[tokio::test]
async fn a_code_from_before_a_change_is_not_exchanged_after_it() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    let (acc, _, grant) = alice_connected(&app).await;
    let merge = [
        ("grant_id", grant.as_str()),
        ("grant_management_action", "merge"),
    ];
    let code_of = |loc: String| query_param(&loc, "code").expect("code");
    let fields = [
        ("decision", "approve"),
        ("account", acc.as_str()),
        ("action", "balances:read"),
    ];
    let (par, stale_verifier) = push(&app, &["balances:read"], &merge).await;
    let stale = code_of(app.consent_to_pushed(DEMO_CLIENT, par, &fields).await);
    let (par, verifier) = push(&app, &["balances:read"], &merge).await;
    let fresh = code_of(app.consent_to_pushed(DEMO_CLIENT, par, &fields).await);

    let r = app
        .exchange_code(DEMO, &stale, DEMO_REDIRECT, &stale_verifier)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let r = app
        .exchange_code(DEMO, &fresh, DEMO_REDIRECT, &verifier)
        .await;
    assert_eq!(
        r.status(),
        200,
        "the grant was not ended as for a replayed code"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["grant_id"], grant.as_str());
    app.stop().await;
}

/// A merge that one grant cannot hold without allowing more than either consent (transactions
/// on one account, balances on another) is refused on the page; the grant and its tokens stay.
/// Merge and replace need PAR; and nobody can record a decision against another's grant.
#[tokio::test]
async fn merges_that_would_widen_forged_links_and_foreign_denials_change_nothing() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    app.login_customer("alice").await;
    let accounts = app.account_ids("alice").await;
    let first = connect(&app, &accounts[0], &["transactions:read"], &[]).await;
    let grant = first["grant_id"].as_str().unwrap().to_string();
    let merge = [
        ("grant_id", grant.as_str()),
        ("grant_management_action", "merge"),
    ];

    let (par, _) = push(&app, &["balances:read"], &merge).await;
    let body: Value = par.json().await.unwrap();
    let auth = app
        .get_authorize(&[
            ("client_id", DEMO_CLIENT),
            ("request_uri", body["request_uri"].as_str().unwrap()),
        ])
        .await;
    let (path, html) = app.get_consent_page(auth).await;
    let fields = [
        ("decision", "approve"),
        ("account", accounts[1].as_str()),
        ("action", "balances:read"),
    ];
    let r = app.post_consent(&path, &html, &fields).await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("cannot be combined into one grant")
    );
    let seen = app
        .post_introspect(DEMO, first["access_token"].as_str().unwrap())
        .await;
    assert_eq!(seen["active"], true);
    assert_eq!(actions_of(&seen), ["transactions:read"]);
    assert_eq!(refresh_status(&app, &first).await, 200);

    // A front-channel link cannot change a grant.
    let (_, challenge) = pkce();
    let rar = rar(&["balances:read"]);
    let r = app
        .get_authorize(&[
            ("client_id", DEMO_CLIENT),
            ("response_type", "code"),
            ("redirect_uri", DEMO_REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("authorization_details", &rar),
            ("grant_id", &grant),
            ("grant_management_action", "replace"),
        ])
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("need a pushed request"));

    // Bob cannot deny a change of Alice's grant on her behalf.
    let (par, _) = push(&app, &["balances:read"], &merge).await;
    let body: Value = par.json().await.unwrap();
    let bob = customer_client(&app, "bob").await;
    let url = url::Url::parse_with_params(
        &app.url("/oauth2/authorize"),
        [
            ("client_id", DEMO_CLIENT),
            ("request_uri", body["request_uri"].as_str().unwrap()),
        ],
    )
    .unwrap();
    let r = bob.get(url).send().await.unwrap();
    let consent_path = location(&r);
    // Opening the page binds the request to him (and shows him the refusal).
    let page = bob.get(app.url(&consent_path)).send().await.unwrap();
    assert_eq!(page.status(), 400);
    let csrf = e2e_tests::dashboard::me_csrf(&app, &bob).await;
    let r = bob
        .post(app.url(&consent_path))
        .form(&[("csrf_token", csrf.as_str()), ("decision", "deny")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("invalid_grant_id"));
    // (Its refresh token was rotated above: the access token tells the grant is untouched.)
    let seen = app
        .post_introspect(DEMO, first["access_token"].as_str().unwrap())
        .await;
    assert_eq!(seen["active"], true);
    app.stop().await;
}

/// A merge or replace changes what the grant's tokens claim: the client's Shared Signals
/// receivers get a CAEP token-claims-change with the new scope.
#[tokio::test]
async fn a_replaced_grant_is_a_token_claims_change_for_the_clients_receivers() {
    use base64::Engine;
    let app = spawn_demo_app(Backend::Sqlite).await;
    let r = app
        .client
        .post(app.url("/ssf/streams"))
        .basic_auth(DEMO.0, Some(DEMO.1))
        .json(&json!({
            "delivery": { "method": "urn:ietf:rfc:8936" },
            "events_requested": [platform::ssf::CAEP_TOKEN_CLAIMS_CHANGE],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let stream: Value = r.json().await.unwrap();
    let (acc, _, grant) = alice_connected(&app).await;
    connect(
        &app,
        &acc,
        &["transactions:read"],
        &[("grant_id", &grant), ("grant_management_action", "replace")],
    )
    .await;
    let r = app
        .client
        .post(stream["delivery"]["endpoint_url"].as_str().unwrap())
        .basic_auth(DEMO.0, Some(DEMO.1))
        .json(&json!({ "returnImmediately": true }))
        .send()
        .await
        .unwrap();
    let polled: Value = r.json().await.unwrap();
    let sets = polled["sets"].as_object().unwrap();
    assert_eq!(sets.len(), 1, "{polled}");
    let jws = sets.values().next().unwrap().as_str().unwrap();
    let payload = jws.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub_id"]["id"], grant.as_str());
    let change = &claims["events"][platform::ssf::CAEP_TOKEN_CLAIMS_CHANGE];
    assert_eq!(
        change["claims"]["authorization_details"][0]["actions"],
        json!(["transactions:read"]),
        "{claims}"
    );
    app.stop().await;
}
