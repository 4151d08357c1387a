//! DPoP (RFC 9449) end to end: PAR binds the request to a key (a `DPoP` proof or `dpop_jkt`),
//! the code needs a proof from that key, the tokens are bound to it (`token_type: DPoP`,
//! `cnf_jkt` in the Biscuit, `cnf.jkt` in introspection), the refresh token too (not rotated,
//! so a retried refresh is not a replay), and the sandbox bank API serves a bound token only
//! with a fresh proof for the request. Every refusal is checked with its reason.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e_tests::oauth::*;
use e2e_tests::{Backend, TestApp, backends, spawn_demo_app};
use grants::dpop::{DpopKey, ProofContext, token_hash};
use serde_json::{Value, json};

const DEMO: (&str, &str) = (DEMO_CLIENT, DEMO_SECRET);

fn rar() -> String {
    details(json!({
        "type": "account_access",
        "actions": ["accounts:read", "balances:read", "transactions:read"],
    }))
}

/// A proof for `method` on `path` of `app`, naming `token` when given.
fn proof(app: &TestApp, key: &DpopKey, method: &str, path: &str, token: Option<&str>) -> String {
    key.proof(method, &app.url(path), token, None, chrono::Utc::now())
}

/// A proof with claims of the test's choosing (signed by `key`, honest header).
fn proof_with(key: &DpopKey, claims: Value) -> String {
    key.sign_jws(
        &json!({"typ": "dpop+jwt", "alg": key.alg(), "jwk": key.public_jwk()}),
        &claims,
    )
}

/// POST a form with client authentication and any extra headers.
async fn post(
    app: &TestApp,
    path: &str,
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(path))
        .basic_auth(DEMO.0, Some(DEMO.1))
        .form(form);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// PAR (with `extra` parameters and headers), authorize, alice approves everything for her
/// first account: (code, verifier).
async fn bound_code(
    app: &TestApp,
    extra: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> (String, String) {
    let (verifier, challenge) = pkce();
    let rar = rar();
    let mut form = par_form(DEMO_REDIRECT, &challenge, &rar).to_vec();
    form.extend_from_slice(extra);
    let r = post(app, "/oauth2/par", &form, headers).await;
    let acc = app.account_ids("alice").await[0].clone();
    let fields = [
        ("decision", "approve"),
        ("account", acc.as_str()),
        ("action", "accounts:read"),
        ("action", "balances:read"),
        ("action", "transactions:read"),
    ];
    let redirect = app.consent_to_pushed(DEMO.0, r, &fields).await;
    let code = query_param(&redirect, "code").expect("code");
    (code, verifier)
}

async fn exchange(
    app: &TestApp,
    code: &str,
    verifier: &str,
    dpop: Option<&str>,
) -> reqwest::Response {
    let headers: Vec<(&str, &str)> = dpop.map(|p| ("DPoP", p)).into_iter().collect();
    post(
        app,
        "/oauth2/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", DEMO_REDIRECT),
            ("code_verifier", verifier),
        ],
        &headers,
    )
    .await
}

async fn refresh(app: &TestApp, rt: &str, dpop: Option<&str>) -> reqwest::Response {
    let headers: Vec<(&str, &str)> = dpop.map(|p| ("DPoP", p)).into_iter().collect();
    post(
        app,
        "/oauth2/token",
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
        &headers,
    )
    .await
}

/// GET a sandbox path with the token under `scheme` and an optional proof.
async fn sandbox(
    app: &TestApp,
    path: &str,
    scheme: &str,
    token: &str,
    dpop: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .client
        .get(app.url(path))
        .header("authorization", format!("{scheme} {token}"));
    if let Some(p) = dpop {
        req = req.header("DPoP", p);
    }
    req.send().await.unwrap()
}

fn challenges(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_dpop_client_binds_its_code_tokens_and_refresh_token_to_its_key() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let key = DpopKey::generate_es256();
        let other = DpopKey::generate_ed25519();
        let par_proof = proof(&app, &key, "POST", "/oauth2/par", None);
        let (code, verifier) = bound_code(&app, &[], &[("DPoP", &par_proof)]).await;

        // The code needs a proof from the key the request was bound to; a refusal leaves the
        // code unspent (a thief without the key cannot burn it).
        let r = exchange(&app, &code, &verifier, None).await;
        let (status, error, why) = oauth_error(r).await;
        assert_eq!(
            (status, error.as_str()),
            (400, "invalid_dpop_proof"),
            "{why}"
        );
        let wrong = proof(&app, &other, "POST", "/oauth2/token", None);
        let (status, error, why) =
            oauth_error(exchange(&app, &code, &verifier, Some(&wrong)).await).await;
        assert_eq!(
            (status, error.as_str()),
            (400, "invalid_dpop_proof"),
            "{why}"
        );
        assert!(why.contains("another key"), "{why}");
        // A proof for another endpoint (the PAR proof, replayed here) is refused.
        let (status, error, _) =
            oauth_error(exchange(&app, &code, &verifier, Some(&par_proof)).await).await;
        assert_eq!((status, error.as_str()), (400, "invalid_dpop_proof"));

        let good = proof(&app, &key, "POST", "/oauth2/token", None);
        let r = exchange(&app, &code, &verifier, Some(&good)).await;
        assert_eq!(r.status(), 200, "{backend:?}");
        let tokens: Value = r.json().await.unwrap();
        assert_eq!(tokens["token_type"], "DPoP");
        let access = tokens["access_token"].as_str().unwrap().to_string();
        let rt = tokens["refresh_token"].as_str().unwrap().to_string();

        // The Biscuit carries the binding; a bearer verifier refuses it.
        let info = grants::inspect(&access).unwrap();
        assert_eq!(
            info.grant.unwrap().cnf_jkt.as_deref(),
            Some(key.thumbprint().as_str())
        );
        let keys = app
            .get("/.well-known/biscuit-keys")
            .await
            .text()
            .await
            .unwrap();
        let rs = grants::Verifier::new(
            grants::KeySet::from_json(&keys).unwrap(),
            grants::NoRevocationCheck,
        );
        let listing = grants::Request::new(grants::Action::AccountsRead, chrono::Utc::now());
        assert!(matches!(
            rs.verify(&access, &listing),
            Err(grants::error::VerifyError::ProofRequired)
        ));

        // Introspection tells the resource server which key to demand.
        let intro = app.post_introspect(DEMO, &access).await;
        assert_eq!(intro["active"], true);
        assert_eq!(intro["cnf"]["jkt"], key.thumbprint());
        let intro = app.post_introspect(DEMO, &rt).await;
        assert_eq!(intro["cnf"]["jkt"], key.thumbprint());

        // The sandbox bank API: only with a fresh proof of the key, for this request.
        let path = "/sandbox/v1/accounts";
        let r = sandbox(&app, path, "Bearer", &access, None).await;
        assert_eq!(r.status(), 401, "a bound token as a bearer token");
        assert!(
            challenges(&r)
                .iter()
                .any(|c| c.starts_with("DPoP algs=\"ES256 EdDSA\"")),
            "{:?}",
            challenges(&r)
        );
        let p = proof(&app, &key, "GET", path, Some(&access));
        let r = sandbox(&app, path, "DPoP", &access, Some(&p)).await;
        assert_eq!(r.status(), 200, "{backend:?}");
        let r = sandbox(&app, path, "DPoP", &access, Some(&p)).await;
        assert_eq!(r.status(), 401, "the same proof twice");
        let c = challenges(&r);
        assert!(
            c[0].starts_with("DPoP error=\"invalid_dpop_proof\""),
            "{c:?}"
        );
        assert!(c[0].contains("already used"), "{c:?}");
        let now = chrono::Utc::now().timestamp();
        let url = app.url(path);
        let refused = [
            ("no proof", None),
            ("another key", Some(proof(&app, &other, "GET", path, Some(&access)))),
            ("wrong method", Some(proof(&app, &key, "POST", path, Some(&access)))),
            (
                "wrong URL",
                Some(proof(&app, &key, "GET", "/sandbox/v1/accountz", Some(&access))),
            ),
            ("no ath", Some(proof(&app, &key, "GET", path, None))),
            (
                "another token's ath",
                Some(proof(&app, &key, "GET", path, Some("another-token"))),
            ),
            (
                "stale iat",
                Some(proof_with(
                    &key,
                    json!({"jti": "j-stale", "htm": "GET", "htu": url, "iat": now - 600, "ath": token_hash(&access)}),
                )),
            ),
            (
                "iat in the future",
                Some(proof_with(
                    &key,
                    json!({"jti": "j-future", "htm": "GET", "htu": url, "iat": now + 600, "ath": token_hash(&access)}),
                )),
            ),
            (
                "alg none",
                Some(format!(
                    "{}.{}.",
                    URL_SAFE_NO_PAD.encode(
                        json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.public_jwk()})
                            .to_string()
                    ),
                    URL_SAFE_NO_PAD.encode(
                        json!({"jti": "j-none", "htm": "GET", "htu": url, "iat": now, "ath": token_hash(&access)})
                            .to_string()
                    )
                )),
            ),
        ];
        // Proof shapes no honest client sends: another typ, a crit header, a jwk of another
        // type than alg, and one far over the size limit.
        let claims = |jti: &str| json!({"jti": jti, "htm": "GET", "htu": url, "iat": now, "ath": token_hash(&access)});
        let header = |extra: Value| {
            let mut h = json!({"typ": "dpop+jwt", "alg": key.alg(), "jwk": key.public_jwk()});
            for (k, v) in extra.as_object().unwrap() {
                h[k] = v.clone();
            }
            h
        };
        let shapes = [
            (
                "typ JWT",
                key.sign_jws(&header(json!({"typ": "JWT"})), &claims("j-typ")),
            ),
            (
                "crit",
                key.sign_jws(&header(json!({"crit": ["exp"]})), &claims("j-crit")),
            ),
            (
                "jwk of another type",
                key.sign_jws(
                    &header(json!({"jwk": other.public_jwk()})),
                    &claims("j-jwk"),
                ),
            ),
            (
                "oversized",
                key.sign_jws(&header(json!({"pad": "x".repeat(5000)})), &claims("j-big")),
            ),
        ];
        let refused: Vec<(&str, Option<String>)> = refused
            .into_iter()
            .chain(shapes.into_iter().map(|(c, p)| (c, Some(p))))
            .collect();
        for (case, p) in &refused {
            let r = sandbox(&app, path, "DPoP", &access, p.as_deref()).await;
            assert_eq!(r.status(), 401, "{case}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(
                body["type"], "/problems/invalid-dpop-proof",
                "{case}: {body}"
            );
        }
        // A proof may not travel with the Bearer scheme.
        let p = proof(&app, &key, "GET", path, Some(&access));
        let r = sandbox(&app, path, "Bearer", &access, Some(&p)).await;
        assert_eq!(r.status(), 401);

        // Attenuated offline, the token stays bound: no block can remove `cnf_jkt`.
        let acc = app.account_ids("alice").await[0].clone();
        let narrowed = grants::attenuate(
            &access,
            &grants::Attenuation::new().actions(vec![grants::Action::BalancesRead]),
            false,
        )
        .unwrap();
        let balances = format!("/sandbox/v1/accounts/{acc}/balances");
        let r = sandbox(&app, &balances, "Bearer", &narrowed, None).await;
        assert_eq!(r.status(), 401, "an attenuated bound token as bearer");
        let p = proof(&app, &other, "GET", &balances, Some(&narrowed));
        let r = sandbox(&app, &balances, "DPoP", &narrowed, Some(&p)).await;
        assert_eq!(
            r.status(),
            401,
            "an attenuated bound token with another key's proof"
        );
        let p = proof(&app, &key, "GET", &balances, Some(&narrowed));
        let r = sandbox(&app, &balances, "DPoP", &narrowed, Some(&p)).await;
        assert_eq!(r.status(), 200, "{backend:?}");
        let intro = app.post_introspect(DEMO, &narrowed).await;
        assert_eq!(intro["active"], true, "{intro}");
        assert_eq!(intro["cnf"]["jkt"], key.thumbprint());

        // Refresh: bound to the same key, not rotated, so a retry is not a replay.
        let (status, error, _) = oauth_error(refresh(&app, &rt, None).await).await;
        assert_eq!((status, error.as_str()), (400, "invalid_dpop_proof"));
        let wrong = proof(&app, &other, "POST", "/oauth2/token", None);
        let (status, error, _) = oauth_error(refresh(&app, &rt, Some(&wrong)).await).await;
        assert_eq!((status, error.as_str()), (400, "invalid_dpop_proof"));
        let p = proof(&app, &key, "POST", "/oauth2/token", None);
        let r = refresh(&app, &rt, Some(&p)).await;
        assert_eq!(r.status(), 200, "{backend:?}");
        let t2: Value = r.json().await.unwrap();
        assert_eq!(t2["token_type"], "DPoP");
        assert_eq!(
            t2["refresh_token"],
            rt.as_str(),
            "not rotated, answered back"
        );
        let (status, error, _) = oauth_error(refresh(&app, &rt, Some(&p)).await).await;
        assert_eq!(
            (status, error.as_str()),
            (400, "invalid_dpop_proof"),
            "the same proof twice"
        );
        // The answer was "lost": the client retries with a new proof, and it works.
        let p = proof(&app, &key, "POST", "/oauth2/token", None);
        let r = refresh(&app, &rt, Some(&p)).await;
        assert_eq!(r.status(), 200, "a retried refresh of a bound token");
        let t3: Value = r.json().await.unwrap();
        assert_eq!(t3["refresh_token"], rt.as_str());
        if let Some(batches) = &app.oauth.batches {
            // On PostgreSQL, bound refreshes share the keep statement like bearer ones share
            // the rotation statement.
            assert!(batches.counts()[3].jobs >= 1, "{backend:?}");
        }
        let access3 = t3["access_token"].as_str().unwrap();
        let info = grants::inspect(access3).unwrap();
        assert_eq!(
            info.grant.unwrap().cnf_jkt.as_deref(),
            Some(key.thumbprint().as_str())
        );
        let intro = app.post_introspect(DEMO, access3).await;
        assert_eq!(intro["active"], true);
        assert_eq!(intro["grant_status"], "authorized");
        app.stop().await;
    }
}

#[tokio::test]
async fn par_binding_is_checked_and_dpop_jkt_binds_without_a_proof() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    app.login_customer("alice").await;
    let key = DpopKey::generate_ed25519();
    let other = DpopKey::generate_es256();
    let (_, challenge) = pkce();
    let rar = rar();
    let base = [
        ("response_type", "code"),
        ("redirect_uri", DEMO_REDIRECT),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("authorization_details", rar.as_str()),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut f = base.to_vec();
        f.extend_from_slice(extra);
        f
    };
    // A malformed thumbprint; a proof whose key is not the named one; a proof for another
    // endpoint; two proofs; a proof with a private key in its header.
    let (status, error, _) =
        oauth_error(post(&app, "/oauth2/par", &with(&[("dpop_jkt", "short")]), &[]).await).await;
    assert_eq!((status, error.as_str()), (400, "invalid_request"));
    let jkt = key.thumbprint();
    let mut form = base.to_vec();
    form.push(("dpop_jkt", &jkt));
    let p = proof(&app, &other, "POST", "/oauth2/par", None);
    let (status, error, _) =
        oauth_error(post(&app, "/oauth2/par", &form, &[("DPoP", &p)]).await).await;
    assert_eq!((status, error.as_str()), (400, "invalid_dpop_proof"));
    let p = proof(&app, &key, "POST", "/oauth2/token", None);
    let (status, error, _) =
        oauth_error(post(&app, "/oauth2/par", &base, &[("DPoP", &p)]).await).await;
    assert_eq!((status, error.as_str()), (400, "invalid_dpop_proof"));
    let (p1, p2) = (
        proof(&app, &key, "POST", "/oauth2/par", None),
        proof(&app, &key, "POST", "/oauth2/par", None),
    );
    let (status, error, _) =
        oauth_error(post(&app, "/oauth2/par", &base, &[("DPoP", &p1), ("DPoP", &p2)]).await).await;
    assert_eq!((status, error.as_str()), (400, "invalid_dpop_proof"));
    let mut leaky = key.public_jwk();
    leaky["d"] = "AAAA".into();
    let p = key.sign_jws(
        &json!({"typ": "dpop+jwt", "alg": key.alg(), "jwk": leaky}),
        &json!({"jti": "j1", "htm": "POST", "htu": app.url("/oauth2/par"), "iat": chrono::Utc::now().timestamp()}),
    );
    let (status, error, _) =
        oauth_error(post(&app, "/oauth2/par", &base, &[("DPoP", &p)]).await).await;
    assert_eq!((status, error.as_str()), (400, "invalid_dpop_proof"));

    // `dpop_jkt` alone binds the code: another key's proof, or none, is refused; the key's works.
    let (code, verifier) = bound_code(&app, &[("dpop_jkt", &jkt)], &[]).await;
    let wrong = proof(&app, &other, "POST", "/oauth2/token", None);
    let (status, error, _) =
        oauth_error(exchange(&app, &code, &verifier, Some(&wrong)).await).await;
    assert_eq!((status, error.as_str()), (400, "invalid_dpop_proof"));
    let good = proof(&app, &key, "POST", "/oauth2/token", None);
    let r = exchange(&app, &code, &verifier, Some(&good)).await;
    assert_eq!(r.status(), 200);
    let tokens: Value = r.json().await.unwrap();
    assert_eq!(tokens["token_type"], "DPoP");
    // Spent: the key holder presenting it again is a replay, which ends the grant.
    let again = proof(&app, &key, "POST", "/oauth2/token", None);
    let (status, error, _) =
        oauth_error(exchange(&app, &code, &verifier, Some(&again)).await).await;
    assert_eq!((status, error.as_str()), (400, "invalid_grant"));

    // A bearer client's code with a proof at the token endpoint: the tokens are bound from there.
    let (code, verifier) = bound_code(&app, &[], &[]).await;
    let p = proof(&app, &key, "POST", "/oauth2/token", None);
    let r = exchange(&app, &code, &verifier, Some(&p)).await;
    assert_eq!(r.status(), 200);
    let tokens: Value = r.json().await.unwrap();
    assert_eq!(tokens["token_type"], "DPoP");
    let info = grants::inspect(tokens["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(info.grant.unwrap().cnf_jkt.as_deref(), Some(jkt.as_str()));

    // And without any proof, nothing changes for bearer clients.
    let (code, verifier) = bound_code(&app, &[], &[]).await;
    let r = exchange(&app, &code, &verifier, None).await;
    assert_eq!(r.status(), 200);
    let tokens: Value = r.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["refresh_token"].is_string());

    let m: Value = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        m["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA"])
    );
    app.stop().await;
}

/// Single use of proofs is shared by every instance: a proof recorded by one is refused by
/// another (Redis; without it each instance keeps its own record).
#[tokio::test]
async fn proof_replay_is_refused_across_instances() {
    for backend in backends() {
        if backend == Backend::Sqlite {
            continue;
        }
        let a = spawn_demo_app(backend).await;
        let b = a.another_instance().await;
        let key = DpopKey::generate_es256();
        let now = chrono::Utc::now();
        let url = a.url("/oauth2/token");
        let p = key.proof("POST", &url, None, None, now);
        let ctx = ProofContext::new("POST", &url, now);
        let checked = grants::dpop::check_proof(&p, &ctx).unwrap();
        let jkt = a.oauth.record_proof(checked.clone(), now).await.unwrap();
        assert_eq!(jkt, key.thumbprint());
        let again = b.oauth.record_proof(checked, now).await;
        assert!(
            matches!(again, Err(consent::oauth::OAuthError::InvalidDpopProof(_))),
            "{again:?}"
        );
        b.stop().await;
        a.stop().await;
    }
}

/// What the review of the first cut asked for: a stranger's proof (failed client authentication)
/// is not recorded, a proof on a bearer family binds the access token while the refresh token
/// stays bearer and rotates, the DPoP scheme with an unbound token is refused in a DPoP
/// challenge, and usage reports of bound tokens need a proof.
#[tokio::test]
async fn strangers_bearer_families_unbound_tokens_and_usage_reports() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let key = DpopKey::generate_es256();
        let (code, verifier) = bound_code(&app, &[], &[]).await;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", DEMO_REDIRECT),
            ("code_verifier", verifier.as_str()),
        ];
        let p = proof(&app, &key, "POST", "/oauth2/token", None);
        let r = app
            .client
            .post(app.url("/oauth2/token"))
            .basic_auth(DEMO.0, Some("cs_wrong-secret"))
            .header("DPoP", &p)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "a stranger");
        // The same proof, with the right credentials: not burnt by the stranger's attempt.
        let r = post(&app, "/oauth2/token", &form, &[("DPoP", &p)]).await;
        assert_eq!(r.status(), 200, "{backend:?}");

        // A bearer family refreshed with a proof: the access token is bound, the refresh token
        // stays bearer and rotates.
        let (code, verifier) = bound_code(&app, &[], &[]).await;
        let bearer: Value = exchange(&app, &code, &verifier, None)
            .await
            .json()
            .await
            .unwrap();
        let rt = bearer["refresh_token"].as_str().unwrap();
        let p = proof(&app, &key, "POST", "/oauth2/token", None);
        let r = refresh(&app, rt, Some(&p)).await;
        assert_eq!(r.status(), 200);
        let t: Value = r.json().await.unwrap();
        assert_eq!(t["token_type"], "DPoP");
        assert_ne!(t["refresh_token"], rt, "rotated");
        let info = grants::inspect(t["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(info.grant.unwrap().cnf_jkt, Some(key.thumbprint()));
        let r = refresh(&app, t["refresh_token"].as_str().unwrap(), None).await;
        assert_eq!(r.status(), 200, "the family itself is not bound");

        // An unbound token with the DPoP scheme: invalid_token, in a DPoP challenge.
        let access = bearer["access_token"].as_str().unwrap();
        let path = "/sandbox/v1/accounts";
        let p = proof(&app, &key, "GET", path, Some(access));
        let r = sandbox(&app, path, "DPoP", access, Some(&p)).await;
        assert_eq!(r.status(), 401);
        let c = challenges(&r);
        assert!(c[0].starts_with("DPoP error=\"invalid_token\""), "{c:?}");
        assert!(c[0].contains("not bound"), "{c:?}");

        // Usage reports: a bound token needs its proof; a bearer token goes as before.
        let bound: Value = {
            let (code, verifier) = bound_code(&app, &[], &[]).await;
            let p = proof(&app, &key, "POST", "/oauth2/token", None);
            exchange(&app, &code, &verifier, Some(&p))
                .await
                .json()
                .await
                .unwrap()
        };
        let bound_access = bound["access_token"].as_str().unwrap();
        let report = |scheme: &str, token: &str, dpop: Option<String>| {
            let mut req = app
                .client
                .post(app.url("/api/v1/usage"))
                .header("authorization", format!("{scheme} {token}"))
                .json(&json!({"operation": "accounts:read"}));
            if let Some(p) = dpop {
                req = req.header("DPoP", p);
            }
            req.send()
        };
        assert_eq!(
            report("Bearer", bound_access, None).await.unwrap().status(),
            401
        );
        let p = proof(&app, &key, "POST", "/api/v1/usage", Some(bound_access));
        assert_eq!(
            report("DPoP", bound_access, Some(p))
                .await
                .unwrap()
                .status(),
            204
        );
        assert_eq!(report("Bearer", access, None).await.unwrap().status(), 204);

        app.stop().await;
    }
}

/// `dpop_jkt` on a plain (not pushed) authorization request binds the code too (RFC 9449
/// section 10), and a malformed one is refused before anything is stored.
#[tokio::test]
async fn dpop_jkt_on_the_authorization_endpoint_binds_the_code() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    app.login_customer("alice").await;
    let key = DpopKey::generate_es256();
    let jkt = key.thumbprint();
    let (verifier, challenge) = pkce();
    let rar = rar();
    let params = |jkt: &str| {
        vec![
            ("client_id", DEMO.0.to_string()),
            ("response_type", "code".into()),
            ("redirect_uri", DEMO_REDIRECT.into()),
            ("code_challenge", challenge.clone()),
            ("code_challenge_method", "S256".into()),
            ("authorization_details", rar.clone()),
            ("dpop_jkt", jkt.to_string()),
        ]
    };
    let owned = params("not-a-thumbprint");
    let borrowed: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = app.get_authorize(&borrowed).await;
    assert_eq!(
        r.status(),
        400,
        "a sandbox client's error is shown on our page"
    );
    let owned = params(&jkt);
    let borrowed: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let acc = app.account_ids("alice").await[0].clone();
    let fields = [
        ("decision", "approve"),
        ("account", acc.as_str()),
        ("action", "accounts:read"),
    ];
    let redirect = app
        .decide(app.get_authorize(&borrowed).await, &fields)
        .await;
    let code = query_param(&redirect, "code").unwrap();
    let (status, error, _) = oauth_error(exchange(&app, &code, &verifier, None).await).await;
    assert_eq!((status, error.as_str()), (400, "invalid_dpop_proof"));
    let p = proof(&app, &key, "POST", "/oauth2/token", None);
    let r = exchange(&app, &code, &verifier, Some(&p)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["token_type"], "DPoP");
    app.stop().await;
}

/// Concurrent refreshes of one bound family, each with its own proof: every one is served (the
/// key holder refreshing from several workers is not a replay), each gets a bound access token,
/// the refresh token stays the same, and the grant stays authorized. On PostgreSQL they share
/// the keep statement.
#[tokio::test]
async fn concurrent_refreshes_of_one_bound_family_are_all_served() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let key = DpopKey::generate_ed25519();
        let par_proof = proof(&app, &key, "POST", "/oauth2/par", None);
        let (code, verifier) = bound_code(&app, &[], &[("DPoP", &par_proof)]).await;
        let p = proof(&app, &key, "POST", "/oauth2/token", None);
        let tokens: Value = exchange(&app, &code, &verifier, Some(&p))
            .await
            .json()
            .await
            .unwrap();
        let rt = tokens["refresh_token"].as_str().unwrap().to_string();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (http, url, rt) = (app.client.clone(), app.url("/oauth2/token"), rt.clone());
            let p = key.proof("POST", &url, None, None, chrono::Utc::now());
            set.spawn(async move {
                let r = http
                    .post(url)
                    .basic_auth(DEMO.0, Some(DEMO.1))
                    .header("DPoP", p)
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", rt.as_str()),
                    ])
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            });
        }
        let mut access = std::collections::HashSet::new();
        while let Some(done) = set.join_next().await {
            let (status, body) = done.unwrap();
            assert_eq!(status, 200, "{backend:?}: {body}");
            assert_eq!(body["token_type"], "DPoP");
            assert_eq!(body["refresh_token"], rt.as_str());
            access.insert(body["access_token"].as_str().unwrap().to_string());
        }
        assert_eq!(access.len(), 8, "each refresh its own access token");
        let intro = app.post_introspect(DEMO, &rt).await;
        assert_eq!(intro["active"], true, "{backend:?}: {intro}");
        assert_eq!(intro["grant_status"], "authorized");
        app.stop().await;
    }
}
