//! private_key_jwt (RFC 7523, FAPI 2.0): a client registered with a JWK Set authenticates with
//! assertions it signs, at every endpoint; every bad assertion (and an unknown client) gets the
//! same `invalid_client`. Registration on the portal API checks the keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e_tests::oauth::*;
use e2e_tests::{Backend, TestApp, backends, spawn_demo_app};
use grants::dpop::DpopKey;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const FAPI: &str = "c_fapi";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn jwks(keys: &[(&DpopKey, &str)]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(k, kid)| {
            let mut jwk = k.public_jwk();
            jwk["kid"] = (*kid).into();
            jwk
        })
        .collect();
    json!({ "keys": keys })
}

/// An assertion for `client` signed by `key` under `kid`, with claims changed by `edit`.
fn assertion(
    app: &TestApp,
    client: &str,
    key: &DpopKey,
    kid: &str,
    edit: impl Fn(&mut Value),
) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": client, "sub": client, "aud": app.address,
        "exp": now + 30, "iat": now,
        "jti": platform::crypto::random_id("j_"),
    });
    edit(&mut claims);
    key.sign_jws(
        &json!({"alg": key.alg(), "kid": kid, "typ": "JWT"}),
        &claims,
    )
}

/// POSTs `form` plus the assertion's fields, with extra headers.
async fn post(
    app: &TestApp,
    path: &str,
    assertion: &str,
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut all = vec![
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
    ];
    all.extend_from_slice(form);
    let mut req = app.client.post(app.url(path)).form(&all);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// HS256 (HMAC-SHA256) over `input` with `secret`, written out (RFC 2104) so the test needs no
/// HMAC crate: what an attacker sends when the public key is used as the HMAC secret.
fn hs256(secret: &[u8], input: &[u8]) -> Vec<u8> {
    let mut key = [0u8; 64];
    key[..secret.len().min(64)].copy_from_slice(&secret[..secret.len().min(64)]);
    let pad = |b: u8| key.iter().map(|k| k ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(input)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

#[tokio::test]
async fn a_fapi_client_authenticates_with_assertions_and_binds_its_tokens() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let (key, rotated, stranger) = (
            DpopKey::generate_es256(),
            DpopKey::generate_ed25519(),
            DpopKey::generate_es256(),
        );
        let dpop = DpopKey::generate_es256();
        insert_client_with(
            &app,
            FAPI,
            "sandbox",
            DEMO_REDIRECT,
            ClientAuth::Keys(jwks(&[(&key, "k1"), (&rotated, "k2")])),
            true,
        )
        .await;

        // PAR, authorize, consent; the code exchanged with an assertion and a DPoP proof.
        let (verifier, challenge) = pkce();
        let rar = details(json!({"type": "account_access", "actions": ["accounts:read"]}));
        let par_proof = dpop.proof(
            "POST",
            &app.url("/oauth2/par"),
            None,
            None,
            chrono::Utc::now(),
        );
        let r = post(
            &app,
            "/oauth2/par",
            &assertion(&app, FAPI, &key, "k1", |_| {}),
            &par_form(DEMO_REDIRECT, &challenge, &rar),
            &[("DPoP", &par_proof)],
        )
        .await;
        let acc = app.account_ids("alice").await[0].clone();
        let fields = [
            ("decision", "approve"),
            ("account", acc.as_str()),
            ("action", "accounts:read"),
        ];
        let redirect = app.consent_to_pushed(FAPI, r, &fields).await;
        let code = query_param(&redirect, "code").unwrap();
        let token_url = app.url("/oauth2/token");
        let exchange = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", DEMO_REDIRECT),
            ("code_verifier", verifier.as_str()),
        ];
        let proof = dpop.proof("POST", &token_url, None, None, chrono::Utc::now());
        // The rotated-in key (EdDSA, kid k2) signs this one.
        let r = post(
            &app,
            "/oauth2/token",
            &assertion(&app, FAPI, &rotated, "k2", |_| {}),
            &exchange,
            &[("DPoP", &proof)],
        )
        .await;
        assert_eq!(r.status(), 200, "{backend:?}");
        let tokens: Value = r.json().await.unwrap();
        assert_eq!(tokens["token_type"], "DPoP");
        let rt = tokens["refresh_token"].as_str().unwrap().to_string();
        let refresh = [
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.as_str()),
        ];

        // A DPoP-bound client gets nothing without a proof.
        let (status, error, _) = oauth_error(
            post(
                &app,
                "/oauth2/token",
                &assertion(&app, FAPI, &key, "k1", |_| {}),
                &refresh,
                &[],
            )
            .await,
        )
        .await;
        assert_eq!((status, error.as_str()), (400, "invalid_dpop_proof"));

        // Introspection with an assertion: the same client, active, bound.
        let intro = |a: String| {
            let app = &app;
            let access = tokens["access_token"].as_str().unwrap().to_string();
            async move { post(app, "/oauth2/introspect", &a, &[("token", &access)], &[]).await }
        };
        let r = intro(assertion(&app, FAPI, &key, "k1", |_| {})).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["active"], true);
        assert_eq!(body["cnf"]["jkt"], dpop.thumbprint());

        // Every bad assertion is the same invalid_client; none of them is recorded.
        let now = chrono::Utc::now().timestamp();
        let replayed = assertion(&app, FAPI, &key, "k1", |_| {});
        assert_eq!(intro(replayed.clone()).await.status(), 200);
        let header = |alg: &str| {
            URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": "k1", "typ": "JWT"}).to_string())
        };
        let claims = URL_SAFE_NO_PAD.encode(
            json!({"iss": FAPI, "sub": FAPI, "aud": app.address, "exp": now + 30, "jti": "j-alg"})
                .to_string(),
        );
        let hs_input = format!("{}.{claims}", header("HS256"));
        let public_as_secret = jwks(&[(&key, "k1")])["keys"][0].to_string();
        let hs = format!(
            "{hs_input}.{}",
            URL_SAFE_NO_PAD.encode(hs256(public_as_secret.as_bytes(), hs_input.as_bytes()))
        );
        let refused: Vec<(&str, String)> = vec![
            ("replayed jti", replayed),
            ("unknown client", assertion(&app, "c_nobody", &key, "k1", |_| {})),
            ("another client's name", assertion(&app, DEMO_CLIENT, &key, "k1", |_| {})),
            ("aud is the token endpoint", assertion(&app, FAPI, &key, "k1", |c| c["aud"] = token_url.clone().into())),
            ("aud is an array", assertion(&app, FAPI, &key, "k1", |c| c["aud"] = json!([app.address]))),
            ("iss is not sub", assertion(&app, FAPI, &key, "k1", |c| c["iss"] = "c_other".into())),
            ("exp five minutes ahead", assertion(&app, FAPI, &key, "k1", |c| c["exp"] = (now + 300).into())),
            ("expired", assertion(&app, FAPI, &key, "k1", |c| c["exp"] = (now - 60).into())),
            ("iat in the future", assertion(&app, FAPI, &key, "k1", |c| c["iat"] = (now + 300).into())),
            ("no jti", assertion(&app, FAPI, &key, "k1", |c| { c.as_object_mut().unwrap().remove("jti"); })),
            ("unknown kid", assertion(&app, FAPI, &key, "k9", |_| {})),
            ("signed by a stranger under kid k1", assertion(&app, FAPI, &stranger, "k1", |_| {})),
            ("the other key's kid", assertion(&app, FAPI, &key, "k2", |_| {})),
            ("alg none", format!("{}.{claims}.", header("none"))),
            ("HS256 with the public key as the secret", hs),
            (
                "a DPoP proof as an assertion",
                key.sign_jws(
                    &json!({"alg": key.alg(), "typ": "dpop+jwt", "jwk": key.public_jwk()}),
                    &json!({"iss": FAPI, "sub": FAPI, "aud": app.address, "exp": now + 30, "jti": "j-dpop"}),
                ),
            ),
            ("not a JWS", "garbage".into()),
        ];
        let mut descriptions = std::collections::BTreeSet::new();
        for (case, a) in refused {
            let r = intro(a).await;
            let (status, error, description) = oauth_error(r).await;
            assert_eq!(
                (status, error.as_str()),
                (401, "invalid_client"),
                "{backend:?}: {case}"
            );
            descriptions.insert(description);
        }
        assert_eq!(
            descriptions.len(),
            1,
            "one answer for every failure: {descriptions:?}"
        );

        // A secret for a key client, two methods at once, a wrong assertion type.
        let access = tokens["access_token"].as_str().unwrap();
        let r = app
            .post_form(
                "/oauth2/introspect",
                Some((FAPI, "none:")),
                &[("token", access)],
            )
            .await;
        assert_eq!(r.status(), 401);
        let r = app
            .client
            .post(app.url("/oauth2/introspect"))
            .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
            .form(&[
                ("client_assertion_type", ASSERTION_TYPE),
                (
                    "client_assertion",
                    &assertion(&app, FAPI, &key, "k1", |_| {}),
                ),
                ("token", access),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(oauth_error(r).await.1, "invalid_request");
        let r = app
            .client
            .post(app.url("/oauth2/introspect"))
            .form(&[
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
                ),
                (
                    "client_assertion",
                    &assertion(&app, FAPI, &key, "k1", |_| {}),
                ),
                ("token", access),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(oauth_error(r).await.1, "invalid_request");

        // The refresh with an assertion and a proof works; revocation with an assertion ends it.
        let proof = dpop.proof("POST", &token_url, None, None, chrono::Utc::now());
        let r = post(
            &app,
            "/oauth2/token",
            &assertion(&app, FAPI, &key, "k1", |_| {}),
            &refresh,
            &[("DPoP", &proof)],
        )
        .await;
        assert_eq!(r.status(), 200);
        let r = post(
            &app,
            "/oauth2/revoke",
            &assertion(&app, FAPI, &key, "k1", |_| {}),
            &[("token", &rt)],
            &[],
        )
        .await;
        assert_eq!(r.status(), 200);
        let proof = dpop.proof("POST", &token_url, None, None, chrono::Utc::now());
        let r = post(
            &app,
            "/oauth2/token",
            &assertion(&app, FAPI, &key, "k1", |_| {}),
            &refresh,
            &[("DPoP", &proof)],
        )
        .await;
        assert_eq!(oauth_error(r).await.1, "invalid_grant");
        app.stop().await;
    }
}

#[tokio::test]
async fn the_portal_registers_keys_not_secrets_for_private_key_jwt_clients() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    let token = app.developer_token("keys@example.com").await;
    let key = DpopKey::generate_ed25519();
    let mut body = e2e_tests::portal::client_body("sandbox");
    body["token_endpoint_auth_method"] = "private_key_jwt".into();
    body["dpop_bound_access_tokens"] = true.into();
    // No keys; keys with a private member; keys for a secret client.
    let r = app.post_client(&token, &body).await;
    assert_eq!(r.status(), 400);
    let mut leaky = jwks(&[(&key, "k1")]);
    leaky["keys"][0]["d"] = "AAAA".into();
    body["jwks"] = leaky;
    assert_eq!(app.post_client(&token, &body).await.status(), 400);
    let mut secret_body = e2e_tests::portal::client_body("sandbox");
    secret_body["jwks"] = jwks(&[(&key, "k1")]);
    assert_eq!(app.post_client(&token, &secret_body).await.status(), 400);

    body["jwks"] = jwks(&[(&key, "k1")]);
    let r = app.post_client(&token, &body).await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert!(created.get("client_secret").is_none(), "{created}");
    assert_eq!(created["auth_method"], "private_key_jwt");
    assert_eq!(created["dpop_bound_access_tokens"], true);
    assert_eq!(created["jwks"]["keys"][0]["kid"], "k1");
    let id = created["client_id"].as_str().unwrap();
    // No secret to rotate; keys are rotated by updating them.
    let r = app
        .api(
            Method::POST,
            &format!("/api/v1/clients/{id}/secret"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status(), 409);
    let next = DpopKey::generate_es256();
    let r = app
        .api(
            Method::PATCH,
            &format!("/api/v1/clients/{id}"),
            Some(&token),
            Some(&json!({"jwks": jwks(&[(&key, "k1"), (&next, "k2")])})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["jwks"]["keys"][1]["kid"], "k2");
    // The server takes the rotated-in key at once.
    let now = chrono::Utc::now().timestamp();
    let a = next.sign_jws(
        &json!({"alg": next.alg(), "kid": "k2"}),
        &json!({"iss": id, "sub": id, "aud": app.address, "exp": now + 30, "jti": "j-1"}),
    );
    let r = app
        .client
        .post(app.url("/oauth2/introspect"))
        .form(&[
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", a.as_str()),
            ("token", "anything"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["active"], false);
    let m: Value = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        m["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("private_key_jwt"))
    );
    assert_eq!(
        m["token_endpoint_auth_signing_alg_values_supported"],
        json!(["ES256", "PS256", "EdDSA"])
    );
    app.stop().await;
}

/// A PS256 assertion (RSASSA-PSS, SHA-256) signed with the test RSA key, or with PKCS#1 v1.5
/// (RS256, which FAPI 2.0 forbids) when `pss` is false.
fn rsa_assertion(app: &TestApp, client: &str, pss: bool) -> String {
    let pem = include_str!("../fixtures/rsa-2048.pk8.pem");
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
    let now = chrono::Utc::now().timestamp();
    let header = json!({"alg": if pss { "PS256" } else { "RS256" }, "kid": "rsa-1"});
    let claims = json!({
        "iss": client, "sub": client, "aud": app.address,
        "exp": now + 30, "jti": platform::crypto::random_id("j_"),
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0u8; key.public().modulus_len()];
    let padding: &dyn ring::signature::RsaEncoding = if pss {
        &ring::signature::RSA_PSS_SHA256
    } else {
        &ring::signature::RSA_PKCS1_SHA256
    };
    key.sign(
        padding,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test]
async fn rsa_keys_authenticate_with_ps256_and_never_with_rs256() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    let mut jwk: Value =
        serde_json::from_str(include_str!("../fixtures/rsa-2048.public.jwk.json")).unwrap();
    jwk["kid"] = "rsa-1".into();
    insert_client_with(
        &app,
        "c_rsa",
        "sandbox",
        "https://fintech.example/cb",
        ClientAuth::Keys(json!({"keys": [jwk]})),
        false,
    )
    .await;
    let introspect = |assertion: String| {
        let app = &app;
        async move {
            post(
                app,
                "/oauth2/introspect",
                &assertion,
                &[("token", "rt_unknown")],
                &[],
            )
            .await
        }
    };
    let r = introspect(rsa_assertion(&app, "c_rsa", true)).await;
    assert_eq!(r.status(), 200, "PS256 authenticates");
    let r = introspect(rsa_assertion(&app, "c_rsa", false)).await;
    assert_eq!(oauth_error(r).await.1, "invalid_client", "RS256 does not");
    // Another client's name on the same key's assertion, and an unknown client: refused alike.
    for who in ["c_demo-client", "c_nobody"] {
        let r = introspect(rsa_assertion(&app, who, true)).await;
        assert_eq!(oauth_error(r).await.1, "invalid_client", "{who}");
    }
    let meta: Value = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["token_endpoint_auth_signing_alg_values_supported"],
        json!(["ES256", "PS256", "EdDSA"])
    );
    assert_eq!(
        meta["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA"])
    );
    app.stop().await;
}
