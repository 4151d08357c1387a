//! Mutual TLS (RFC 8705) end to end, with certificate authorities, server and client
//! certificates made in the test (rcgen): `serve` terminates TLS and asks for client
//! certificates; `tls_client_auth` authenticates by subject DN (only from the configured
//! authority), `self_signed_tls_client_auth` by a registered certificate; tokens of
//! certificate-bound clients carry `cnf_x5t` and work at the sandbox API only over a connection
//! with the same certificate; introspection answers `cnf.x5t#S256`; behind a proxy the
//! certificate header is believed only from trusted proxies.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use e2e_tests::oauth::*;
use e2e_tests::{Backend, TestApp, backends, spawn_app_with};
use platform::config::Settings;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use serde_json::{Value, json};
use std::time::Duration;

const REDIRECT: &str = "https://fintech.example/cb";
const SUBJECT: &str = "CN=mtls-app,O=Fintech Ltd";

/// A client certificate and its key.
struct Identity {
    /// Certificate and PKCS#8 key, PEM (what reqwest presents).
    pem: String,
    der: Vec<u8>,
}

impl Identity {
    fn thumbprint(&self) -> String {
        grants::mtls::certificate_thumbprint(&self.der)
    }
}

/// The test's PKI: a bank client CA, a server certificate for 127.0.0.1, files for the config.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

fn client_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    // ASN.1 order O, CN: the RFC 4514 string is `CN=<cn>,O=Fintech Ltd`.
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Fintech Ltd");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

fn identity(cert: &rcgen::Certificate, key: &KeyPair) -> Identity {
    Identity {
        pem: format!("{}{}", cert.pem(), key.serialize_pem()),
        der: cert.der().to_vec(),
    }
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Test bank client and server CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        Pki { dir, ca }
    }

    /// Serve TLS with the server certificate; `tls_client_auth` certificates come from the CA.
    fn configure(&self, s: &mut Settings) {
        s.server.tls_cert_file = Some(self.dir.path().join("server.pem"));
        s.server.tls_key_file = Some(self.dir.path().join("server.key"));
        s.server.client_ca_file = Some(self.dir.path().join("ca.pem"));
    }

    /// A client certificate from the bank's CA.
    fn issued(&self, cn: &str) -> Identity {
        let key = KeyPair::generate().unwrap();
        identity(&client_params(cn).signed_by(&key, &self.ca).unwrap(), &key)
    }

    /// A self-signed client certificate.
    fn self_signed(cn: &str) -> Identity {
        let key = KeyPair::generate().unwrap();
        identity(&client_params(cn).self_signed(&key).unwrap(), &key)
    }

    /// An HTTPS client trusting the test CA, presenting `identity` if given (cookies kept, no
    /// redirects followed, as the browser-like test client).
    fn client(&self, identity: Option<&Identity>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca.pem().as_bytes()).unwrap();
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30));
        if let Some(id) = identity {
            b = b.identity(reqwest::Identity::from_pem(id.pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    }
}

async fn spawn_tls(backend: Backend, pki: &Pki) -> TestApp {
    let options = consent::ServeOptions {
        demo: true,
        ..Default::default()
    };
    let mut app = spawn_app_with(backend, options, |s| pki.configure(s)).await;
    assert!(app.address.starts_with("https://"), "{}", app.address);
    // The customer's browser: trusts the server, has no certificate.
    app.client = pki.client(None);
    app
}

fn rar() -> String {
    details(json!({
        "type": "account_access",
        "actions": ["accounts:read", "balances:read", "transactions:read"],
    }))
}

/// PAR as `client_id` over `http` (authenticated by its certificate: no secret), alice approves:
/// (code, verifier).
async fn approved_code(app: &TestApp, http: &reqwest::Client, client_id: &str) -> (String, String) {
    approved_code_with(app, client_id, |form| {
        http.post(app.url("/oauth2/par")).form(form)
    })
    .await
}

/// [`approved_code`] with the PAR request `par` builds from the form.
async fn approved_code_with(
    app: &TestApp,
    client_id: &str,
    par: impl FnOnce(&[(&str, &str)]) -> reqwest::RequestBuilder,
) -> (String, String) {
    let (verifier, challenge) = pkce();
    let rar = rar();
    let mut form = par_form(REDIRECT, &challenge, &rar).to_vec();
    form.push(("client_id", client_id));
    let r = par(&form).send().await.unwrap();
    let acc = app.account_ids("alice").await[0].clone();
    let fields = [
        ("decision", "approve"),
        ("account", acc.as_str()),
        ("action", "accounts:read"),
        ("action", "balances:read"),
    ];
    let redirect = app.consent_to_pushed(client_id, r, &fields).await;
    (query_param(&redirect, "code").expect("code"), verifier)
}

async fn post(
    app: &TestApp,
    http: &reqwest::Client,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    http.post(app.url(path)).form(form).send().await.unwrap()
}

async fn exchange(
    app: &TestApp,
    http: &reqwest::Client,
    client_id: &str,
    code: &str,
    verifier: &str,
) -> reqwest::Response {
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ];
    post(app, http, "/oauth2/token", &form).await
}

async fn accounts(app: &TestApp, http: &reqwest::Client, token: &str) -> reqwest::Response {
    http.get(app.url("/sandbox/v1/accounts"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn tls_client_auth_clients_get_tokens_bound_to_their_certificate() {
    for backend in backends() {
        let pki = Pki::new();
        let app = spawn_tls(backend, &pki).await;
        insert_client_with(
            &app,
            "c_mtls",
            "sandbox",
            REDIRECT,
            ClientAuth::SubjectDn(SUBJECT),
            false,
        )
        .await;
        let cert = pki.issued("mtls-app");
        let fintech = pki.client(Some(&cert));
        app.login_customer("alice").await;

        // Metadata advertises mutual TLS.
        let meta: Value = app
            .get("/.well-known/oauth-authorization-server")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
        assert_eq!(
            meta["mtls_endpoint_aliases"]["token_endpoint"],
            app.url("/oauth2/token")
        );
        let methods = meta["token_endpoint_auth_methods_supported"].to_string();
        assert!(methods.contains("\"tls_client_auth\""), "{methods}");
        assert!(methods.contains("self_signed_tls_client_auth"), "{methods}");

        let (code, verifier) = approved_code(&app, &fintech, "c_mtls").await;

        // Who cannot authenticate as the client, with the code in hand: no certificate, the same
        // subject from a self-signed certificate, another subject from the bank's CA. None of them
        // spends the code.
        let impostors = [
            pki.client(None),
            pki.client(Some(&Pki::self_signed("mtls-app"))),
            pki.client(Some(&pki.issued("other-app"))),
        ];
        for impostor in &impostors {
            let r = exchange(&app, impostor, "c_mtls", &code, &verifier).await;
            assert_eq!(oauth_error(r).await.1, "invalid_client");
        }

        let r = exchange(&app, &fintech, "c_mtls", &code, &verifier).await;
        assert_eq!(r.status(), 200);
        let tokens: Value = r.json().await.unwrap();
        // RFC 8705: a certificate-bound token is still presented as a Bearer token.
        assert_eq!(tokens["token_type"], "Bearer");
        let at = tokens["access_token"].as_str().unwrap().to_string();
        let rt = tokens["refresh_token"].as_str().unwrap().to_string();
        let info = grants::inspect(&at).unwrap();
        let summary = info.grant.unwrap();
        assert_eq!(summary.cnf_x5t.as_deref(), Some(cert.thumbprint().as_str()));
        assert_eq!(summary.cnf_jkt, None);

        // The sandbox API serves it over a connection with that certificate only.
        assert_eq!(accounts(&app, &fintech, &at).await.status(), 200);
        for impostor in &impostors {
            let r = accounts(&app, impostor, &at).await;
            assert_eq!(r.status(), 401);
            let problem: Value = r.json().await.unwrap();
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap()
                    .contains("TLS client certificate"),
                "{problem}"
            );
        }

        // A narrowed copy (attenuated offline) keeps the binding.
        let narrowed = grants::attenuate(
            &at,
            &grants::Attenuation::new().actions(vec![grants::Action::AccountsRead]),
            false,
        )
        .unwrap();
        assert_eq!(accounts(&app, &fintech, &narrowed).await.status(), 200);
        assert_eq!(accounts(&app, &impostors[2], &narrowed).await.status(), 401);

        // Introspection reports the binding, for the minted token and the narrowed copy.
        for token in [&at, &narrowed] {
            let r = post(
                &app,
                &fintech,
                "/oauth2/introspect",
                &[("client_id", "c_mtls"), ("token", token)],
            )
            .await;
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["active"], true, "{body}");
            assert_eq!(body["cnf"]["x5t#S256"], cert.thumbprint(), "{body}");
            assert!(body["cnf"].get("jkt").is_none(), "{body}");
        }

        // Refresh: the client's family is not rotated (FAPI 2.0), so a retried refresh is one
        // more refresh, and each access token is bound to the certificate of the connection.
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", "c_mtls"),
            ("refresh_token", rt.as_str()),
        ];
        for _ in 0..2 {
            let r = post(&app, &fintech, "/oauth2/token", &form).await;
            assert_eq!(r.status(), 200);
            let again: Value = r.json().await.unwrap();
            assert_eq!(again["refresh_token"], rt.as_str());
            let at = again["access_token"].as_str().unwrap();
            assert_eq!(accounts(&app, &fintech, at).await.status(), 200);
        }
        // The client renewed its certificate (same subject, same CA): it authenticates, and the
        // new tokens are bound to the new certificate.
        let renewed = pki.issued("mtls-app");
        let renewed_http = pki.client(Some(&renewed));
        let r = post(&app, &renewed_http, "/oauth2/token", &form).await;
        assert_eq!(r.status(), 200);
        let fresh: Value = r.json().await.unwrap();
        let at = fresh["access_token"].as_str().unwrap();
        assert_eq!(accounts(&app, &renewed_http, at).await.status(), 200);
        assert_eq!(accounts(&app, &fintech, at).await.status(), 401);
        // Without a certificate the client is not even authenticated.
        let r = post(&app, &impostors[0], "/oauth2/token", &form).await;
        assert_eq!(oauth_error(r).await.1, "invalid_client");

        // A certificate-bound client that authenticates otherwise still needs the certificate.
        insert_client(
            &app,
            "c_secret_bound",
            "sandbox",
            REDIRECT,
            "cs_bound-secret-1",
        )
        .await;
        set_certificate_bound(&app, "c_secret_bound").await;
        let (code, verifier) = approved_code_with(&app, "c_secret_bound", |form| {
            impostors[0]
                .post(app.url("/oauth2/par"))
                .basic_auth("c_secret_bound", Some("cs_bound-secret-1"))
                .form(form)
        })
        .await;
        let token_form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.as_str()),
        ];
        let bare = impostors[0]
            .post(app.url("/oauth2/token"))
            .basic_auth("c_secret_bound", Some("cs_bound-secret-1"))
            .form(&token_form)
            .send()
            .await
            .unwrap();
        let (status, error, description) = oauth_error(bare).await;
        assert_eq!((status, error.as_str()), (400, "invalid_request"));
        assert!(description.contains("certificate"), "{description}");
        // The code was not spent by that refusal.
        let r = fintech
            .post(app.url("/oauth2/token"))
            .basic_auth("c_secret_bound", Some("cs_bound-secret-1"))
            .form(&token_form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let at = body["access_token"].as_str().unwrap();
        assert_eq!(accounts(&app, &fintech, at).await.status(), 200);
        assert_eq!(accounts(&app, &impostors[0], at).await.status(), 401);
        app.stop().await;
    }
}

async fn set_certificate_bound(app: &TestApp, id: &str) {
    use diesel::prelude::*;
    use platform::storage::schema::clients;
    let id = id.to_string();
    app.platform
        .db
        .write(move |c| {
            diesel::update(clients::table.filter(clients::id.eq(&id)))
                .set(clients::tls_client_certificate_bound_access_tokens.eq(true))
                .execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn self_signed_clients_authenticate_with_a_registered_certificate() {
    let pki = Pki::new();
    let app = spawn_tls(Backend::Sqlite, &pki).await;
    let cert = Pki::self_signed("my-app");
    let jwks = json!({"keys": [{"kty": "EC", "x5c": [STANDARD.encode(&cert.der)]}]});
    insert_client_with(
        &app,
        "c_selfsigned",
        "sandbox",
        REDIRECT,
        ClientAuth::Certificates(jwks),
        false,
    )
    .await;
    let fintech = pki.client(Some(&cert));
    app.login_customer("alice").await;
    let (code, verifier) = approved_code(&app, &fintech, "c_selfsigned").await;
    // Another self-signed certificate with the same subject, and one from the bank's CA: not
    // registered, so not this client.
    for other in [Pki::self_signed("my-app"), pki.issued("my-app")] {
        let r = exchange(
            &app,
            &pki.client(Some(&other)),
            "c_selfsigned",
            &code,
            &verifier,
        )
        .await;
        assert_eq!(oauth_error(r).await.1, "invalid_client");
    }
    let r = exchange(&app, &fintech, "c_selfsigned", &code, &verifier).await;
    assert_eq!(r.status(), 200);
    let tokens: Value = r.json().await.unwrap();
    let at = tokens["access_token"].as_str().unwrap();
    assert_eq!(accounts(&app, &fintech, at).await.status(), 200);
    assert_eq!(accounts(&app, &pki.client(None), at).await.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn behind_a_proxy_the_certificate_header_counts_only_from_trusted_proxies() {
    let pki = Pki::new();
    let ca = pki.dir.path().join("ca.pem");
    let app = spawn_app_with(
        Backend::Sqlite,
        consent::ServeOptions {
            demo: true,
            ..Default::default()
        },
        |s| {
            s.server.client_ca_file = Some(ca);
            s.server.client_cert_header = Some("client-cert".into());
            s.server.trusted_proxies = serde_json::from_value(json!("127.0.0.2")).unwrap();
        },
    )
    .await;
    insert_client_with(
        &app,
        "c_mtls",
        "sandbox",
        REDIRECT,
        ClientAuth::SubjectDn(SUBJECT),
        false,
    )
    .await;
    let cert = pki.issued("mtls-app");
    let header = format!(":{}:", STANDARD.encode(&cert.der));
    app.login_customer("alice").await;
    let (_, challenge) = pkce();
    let rar = rar();
    let mut form = par_form(REDIRECT, &challenge, &rar).to_vec();
    form.push(("client_id", "c_mtls"));
    // From an address that is not a trusted proxy, the header is the client's own word.
    let r = app
        .client
        .post(app.url("/oauth2/par"))
        .header("client-cert", &header)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_error(r).await.1, "invalid_client");
    // From the proxy it is the certificate the proxy verified.
    let proxy = app.client_from("127.0.0.2");
    let (code, verifier) = approved_code_with(&app, "c_mtls", |form| {
        proxy
            .post(app.url("/oauth2/par"))
            .header("client-cert", &header)
            .form(form)
    })
    .await;
    let r = proxy
        .post(app.url("/oauth2/token"))
        .header("client-cert", &header)
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "c_mtls"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tokens: Value = r.json().await.unwrap();
    let at = tokens["access_token"].as_str().unwrap();
    let get = |client: &reqwest::Client, with_header: bool| {
        let mut req = client.get(app.url("/sandbox/v1/accounts")).bearer_auth(at);
        if with_header {
            req = req.header("client-cert", &header);
        }
        req.send()
    };
    assert_eq!(get(&proxy, true).await.unwrap().status(), 200);
    assert_eq!(get(&proxy, false).await.unwrap().status(), 401);
    assert_eq!(get(&app.client, true).await.unwrap().status(), 401);
    // Metadata: mutual TLS is available through the proxy.
    let meta: Value = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
    app.stop().await;
}

#[tokio::test]
async fn without_mutual_tls_the_metadata_does_not_offer_it() {
    let app = e2e_tests::spawn_app(Backend::Sqlite).await;
    let meta: Value = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], false);
    assert!(meta.get("mtls_endpoint_aliases").is_none(), "{meta}");
    assert!(
        !meta["token_endpoint_auth_methods_supported"]
            .to_string()
            .contains("tls_client_auth")
    );
    app.stop().await;
}

#[tokio::test]
async fn the_portal_registers_certificates_and_subjects_for_mtls_clients() {
    let app = e2e_tests::spawn_demo_app(Backend::Sqlite).await;
    let token = app.developer_token("mtls@example.com").await;
    let mut body = e2e_tests::portal::client_body("sandbox");
    body["token_endpoint_auth_method"] = "tls_client_auth".into();
    body["tls_client_certificate_bound_access_tokens"] = true.into();
    // No subject; a subject that is not a DN; a subject for another method.
    assert_eq!(app.post_client(&token, &body).await.status(), 400);
    body["tls_client_auth_subject_dn"] = "not a dn".into();
    assert_eq!(app.post_client(&token, &body).await.status(), 400);
    let mut secret_body = e2e_tests::portal::client_body("sandbox");
    secret_body["tls_client_auth_subject_dn"] = SUBJECT.into();
    assert_eq!(app.post_client(&token, &secret_body).await.status(), 400);

    body["tls_client_auth_subject_dn"] = "CN=mtls-app, O=Fintech Ltd".into();
    let r = app.post_client(&token, &body).await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert!(created.get("client_secret").is_none(), "{created}");
    assert_eq!(created["auth_method"], "tls_client_auth");
    // Stored in one canonical spelling.
    assert_eq!(created["tls_client_auth_subject_dn"], SUBJECT);
    assert_eq!(created["tls_client_certificate_bound_access_tokens"], true);
    let id = created["client_id"].as_str().unwrap();
    let r = app
        .api(
            reqwest::Method::POST,
            &format!("/api/v1/clients/{id}/secret"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status(), 409);

    // Self-signed: the certificates go in jwks as x5c; keys without one are refused.
    let cert = Pki::self_signed("my-app");
    let mut body = e2e_tests::portal::client_body("sandbox");
    body["token_endpoint_auth_method"] = "self_signed_tls_client_auth".into();
    body["jwks"] = json!({"keys": [{"kty": "EC", "crv": "P-256"}]});
    assert_eq!(app.post_client(&token, &body).await.status(), 400);
    body["jwks"] = json!({"keys": [{"x5c": [STANDARD.encode(&cert.der)]}]});
    let r = app.post_client(&token, &body).await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["auth_method"], "self_signed_tls_client_auth");
    app.stop().await;
}
