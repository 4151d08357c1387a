//! Helpers for the OAuth flows: PKCE, PAR, login, consent and token calls over HTTP.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use diesel::prelude::*;
use platform::crypto::PlainToken;
use platform::storage::schema::clients;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::TestApp;

pub const DEMO_CLIENT: &str = "c_demo-client";
pub const DEMO_SECRET: &str = "cs_test-demo-client-secret";
pub const DEMO_REDIRECT: &str = "http://127.0.0.1:8081/callback";
pub const DEMO_PASSWORD: &str = "demo-password-123";

/// The fields of a pushed authorization request for `rar` (state `st-123`).
pub fn par_form<'a>(
    redirect: &'a str,
    challenge: &'a str,
    rar: &'a str,
) -> [(&'a str, &'a str); 6] {
    [
        ("response_type", "code"),
        ("redirect_uri", redirect),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", "st-123"),
        ("authorization_details", rar),
    ]
}

/// A fresh PKCE pair (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    let verifier = PlainToken::generate("").expose().to_string();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The `account_access` request used by most tests.
pub fn details(json: Value) -> String {
    serde_json::to_string(&serde_json::json!([json])).unwrap()
}

/// Pulls `name="csrf_token" value="..."` out of a page.
pub fn csrf_from(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html
        .find(marker)
        .map(|i| i + marker.len())
        .expect("page has a csrf_token");
    html[start..].split('"').next().unwrap().to_string()
}

pub fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Registers an extra client directly in storage (the portal is not needed for OAuth tests).
pub async fn insert_client(
    app: &TestApp,
    id: &str,
    environment: &str,
    redirect: &str,
    secret: &str,
) {
    insert_client_with(
        app,
        id,
        environment,
        redirect,
        ClientAuth::Secret(secret),
        false,
    )
    .await;
}

/// How an inserted client authenticates.
#[derive(Debug)]
pub enum ClientAuth<'a> {
    /// `client_secret_basic` with this secret.
    Secret(&'a str),
    /// `private_key_jwt` with this JWK Set.
    Keys(Value),
    /// `tls_client_auth` with this certificate subject DN; tokens bound to the certificate.
    SubjectDn(&'a str),
    /// `self_signed_tls_client_auth` with the certificates (`x5c`) of this JWK Set; tokens bound
    /// to the certificate.
    Certificates(Value),
}

/// [`insert_client`] with any authentication method, and `dpop_bound_access_tokens`.
pub async fn insert_client_with(
    app: &TestApp,
    id: &str,
    environment: &str,
    redirect: &str,
    auth: ClientAuth<'_>,
    dpop_bound: bool,
) {
    let (id, environment, redirect) = (
        id.to_string(),
        environment.to_string(),
        redirect.to_string(),
    );
    let certificate_bound = matches!(auth, ClientAuth::SubjectDn(_) | ClientAuth::Certificates(_));
    let mut subject_dn = None;
    let (method, hash, jwks) = match auth {
        ClientAuth::Secret(secret) => (
            "client_secret_basic",
            PlainToken::from_presented(secret)
                .hash()
                .as_str()
                .to_string(),
            None,
        ),
        ClientAuth::Keys(jwks) => (
            "private_key_jwt",
            "none:".to_string(),
            Some(jwks.to_string()),
        ),
        ClientAuth::SubjectDn(dn) => {
            subject_dn = Some(dn.to_string());
            ("tls_client_auth", "none:".to_string(), None)
        }
        ClientAuth::Certificates(jwks) => (
            "self_signed_tls_client_auth",
            "none:".to_string(),
            Some(jwks.to_string()),
        ),
    };
    let now = chrono::Utc::now().naive_utc();
    app.platform
        .db
        .write(move |c| {
            let dev: String = platform::storage::schema::developers::table
                .select(platform::storage::schema::developers::id)
                .first(c)?;
            diesel::insert_into(clients::table)
                .values((
                    clients::id.eq(&id),
                    clients::developer_id.eq(dev),
                    clients::name.eq(format!("{id} app")),
                    clients::environment.eq(environment),
                    clients::redirect_uris.eq(serde_json::json!([redirect]).to_string()),
                    clients::auth_method.eq(method),
                    clients::secret_hash.eq(hash),
                    clients::allowed_actions
                        .eq(r#"["accounts:read","balances:read","transactions:read"]"#),
                    clients::status.eq("active"),
                    clients::created_at.eq(now),
                    clients::updated_at.eq(now),
                    clients::jwks.eq(jwks),
                    clients::dpop_bound_access_tokens.eq(dpop_bound),
                    clients::tls_client_auth_subject_dn.eq(subject_dn),
                    clients::tls_client_certificate_bound_access_tokens.eq(certificate_bound),
                ))
                .execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
}

/// A FAPI 2.0 client, as production clients must be: `private_key_jwt` with `key` (kid `k1`)
/// and DPoP with `dpop` (`dpop_bound_access_tokens`).
#[derive(Debug)]
pub struct FapiClient {
    pub id: String,
    pub key: grants::dpop::DpopKey,
    pub dpop: grants::dpop::DpopKey,
}

/// `client_assertion_type` of RFC 7523.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

impl FapiClient {
    /// Registers it in storage.
    pub async fn register(app: &TestApp, id: &str, environment: &str, redirect: &str) -> Self {
        let key = grants::dpop::DpopKey::generate_es256();
        let mut jwk = key.public_jwk();
        jwk["kid"] = "k1".into();
        let keys = ClientAuth::Keys(serde_json::json!({ "keys": [jwk] }));
        insert_client_with(app, id, environment, redirect, keys, true).await;
        Self {
            id: id.to_string(),
            key,
            dpop: grants::dpop::DpopKey::generate_es256(),
        }
    }

    /// A fresh assertion for `app`.
    pub fn assertion(&self, app: &TestApp) -> String {
        let now = chrono::Utc::now().timestamp();
        self.key.sign_jws(
            &serde_json::json!({"alg": self.key.alg(), "kid": "k1", "typ": "JWT"}),
            &serde_json::json!({
                "iss": self.id, "sub": self.id, "aud": app.address,
                "exp": now + 30, "jti": platform::crypto::random_id("j_"),
            }),
        )
    }

    /// POSTs `form` to an OAuth endpoint with an assertion, and a DPoP proof for that endpoint
    /// when `proof` is set.
    pub async fn post(
        &self,
        app: &TestApp,
        path: &str,
        form: &[(&str, &str)],
        proof: bool,
    ) -> reqwest::Response {
        let assertion = self.assertion(app);
        let mut all = vec![
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion.as_str()),
        ];
        all.extend_from_slice(form);
        let mut req = app.client.post(app.url(path)).form(&all);
        if proof {
            let p = self
                .dpop
                .proof("POST", &app.url(path), None, None, chrono::Utc::now());
            req = req.header("DPoP", p);
        }
        req.send().await.expect("request")
    }

    /// PAR (with a proof), authorize, and the logged-in customer's decision: the redirect URL.
    pub async fn authorize(
        &self,
        app: &TestApp,
        redirect: &str,
        rar: &str,
        challenge: &str,
        fields: &[(&str, &str)],
    ) -> String {
        let form = par_form(redirect, challenge, rar);
        let par = self.post(app, "/oauth2/par", &form, true).await;
        app.consent_to_pushed(&self.id, par, fields).await
    }

    /// A GET of the sandbox API with a bound access token and a fresh proof.
    pub async fn get(&self, app: &TestApp, path: &str, access_token: &str) -> reqwest::Response {
        let p = self.dpop.proof(
            "GET",
            &app.url(path),
            Some(access_token),
            None,
            chrono::Utc::now(),
        );
        app.client
            .get(app.url(path))
            .header("authorization", format!("DPoP {access_token}"))
            .header("DPoP", p)
            .send()
            .await
            .expect("request")
    }
}

impl TestApp {
    pub async fn post_form(
        &self,
        path: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        req.send().await.expect("request")
    }

    pub async fn post_par(&self, client: (&str, &str), form: &[(&str, &str)]) -> reqwest::Response {
        self.post_form("/oauth2/par", Some(client), form).await
    }

    pub async fn post_token(
        &self,
        client: (&str, &str),
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        self.post_form("/oauth2/token", Some(client), form).await
    }

    pub async fn post_introspect(&self, client: (&str, &str), token: &str) -> Value {
        self.post_form("/oauth2/introspect", Some(client), &[("token", token)])
            .await
            .json()
            .await
            .unwrap()
    }

    /// Logs a demo customer in (this client keeps the session cookie).
    pub async fn login_customer(&self, username: &str) {
        let page = self.get("/login").await.text().await.unwrap();
        let csrf = csrf_from(&page);
        let r = self
            .post_form(
                "/login",
                None,
                &[
                    ("csrf_token", &csrf),
                    ("username", username),
                    ("password", DEMO_PASSWORD),
                    ("next", "/"),
                ],
            )
            .await;
        assert_eq!(r.status(), 303, "login of {username}");
    }

    /// GET /oauth2/authorize with `params`; returns the response (not followed).
    pub async fn get_authorize(&self, params: &[(&str, &str)]) -> reqwest::Response {
        let url = url::Url::parse_with_params(&self.url("/oauth2/authorize"), params).unwrap();
        self.client.get(url).send().await.unwrap()
    }

    /// Opens the consent page a successful authorize redirected to; returns (path, html).
    pub async fn get_consent_page(&self, authorize: reqwest::Response) -> (String, String) {
        assert_eq!(authorize.status(), 303, "authorize redirects to consent");
        let path = location(&authorize);
        assert!(path.starts_with("/oauth2/consent/"), "{path}");
        let r = self.get(&path).await;
        assert_eq!(r.status(), 200, "consent page for {path}");
        (path, r.text().await.unwrap())
    }

    /// Submits the consent form with `fields` (csrf added); returns the response.
    pub async fn post_consent(
        &self,
        path: &str,
        html: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let csrf = csrf_from(html);
        let mut form: Vec<(&str, &str)> = vec![("csrf_token", &csrf)];
        form.extend_from_slice(fields);
        self.post_form(path, None, &form).await
    }

    /// PAR + authorize + (already logged-in) consent with `fields`; returns the redirect URL.
    pub async fn authorize_with_par(
        &self,
        client: (&str, &str),
        redirect: &str,
        rar: &str,
        challenge: &str,
        fields: &[(&str, &str)],
    ) -> String {
        let r = self
            .post_par(client, &par_form(redirect, challenge, rar))
            .await;
        self.consent_to_pushed(client.0, r, fields).await
    }

    /// PAR for the demo client with `rar` and `challenge`; the authorization URL a browser
    /// opens for it.
    pub async fn pushed_authorize_url(&self, rar: &str, challenge: &str) -> String {
        let r = self
            .post_par(
                (DEMO_CLIENT, DEMO_SECRET),
                &par_form(DEMO_REDIRECT, challenge, rar),
            )
            .await;
        assert_eq!(r.status(), 201, "PAR accepted");
        let body: Value = r.json().await.unwrap();
        url::Url::parse_with_params(
            &self.url("/oauth2/authorize"),
            &[
                ("client_id", DEMO_CLIENT),
                ("request_uri", body["request_uri"].as_str().unwrap()),
            ],
        )
        .unwrap()
        .to_string()
    }

    /// `grant_type=authorization_code` for `code` (sent back to `redirect`) with its PKCE verifier.
    pub async fn exchange_code(
        &self,
        client: (&str, &str),
        code: &str,
        redirect: &str,
        verifier: &str,
    ) -> reqwest::Response {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ];
        self.post_token(client, &form).await
    }

    /// After a PAR response: authorize with its `request_uri` and decide on the consent page
    /// (the customer is logged in); returns the redirect URL.
    pub async fn consent_to_pushed(
        &self,
        client_id: &str,
        par: reqwest::Response,
        fields: &[(&str, &str)],
    ) -> String {
        assert_eq!(par.status(), 201, "PAR accepted");
        let body: Value = par.json().await.unwrap();
        let request_uri = body["request_uri"].as_str().unwrap().to_string();
        let auth = self
            .get_authorize(&[("client_id", client_id), ("request_uri", &request_uri)])
            .await;
        self.decide(auth, fields).await
    }

    /// After an authorize response that went to the consent page: the logged-in customer's
    /// decision with `fields`; returns the redirect URL.
    pub async fn decide(&self, authorize: reqwest::Response, fields: &[(&str, &str)]) -> String {
        let (path, html) = self.get_consent_page(authorize).await;
        let r = self.post_consent(&path, &html, fields).await;
        assert_eq!(r.status(), 303, "consent decision redirects");
        location(&r)
    }

    /// Consent by the logged-in customer through plain query parameters (no PAR, so no cache
    /// involved) for the demo client, narrowed as `fields` say: the authorization code and its
    /// PKCE verifier.
    pub async fn demo_code(&self, fields: &[(&str, &str)]) -> (String, String) {
        let (verifier, challenge) = pkce();
        let rar = details(
            serde_json::json!({"type": "account_access", "actions": ["accounts:read", "balances:read", "transactions:read"]}),
        );
        let r = self
            .get_authorize(&[
                ("client_id", DEMO_CLIENT),
                ("response_type", "code"),
                ("redirect_uri", DEMO_REDIRECT),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("authorization_details", &rar),
            ])
            .await;
        let (path, html) = self.get_consent_page(r).await;
        let r = self.post_consent(&path, &html, fields).await;
        assert_eq!(r.status(), 303, "consent");
        let code = query_param(&location(&r), "code").expect("code");
        (code, verifier)
    }

    /// [`TestApp::demo_code`], then the code exchange: the token response.
    pub async fn demo_tokens(&self, fields: &[(&str, &str)]) -> Value {
        let (code, verifier) = self.demo_code(fields).await;
        let r = self
            .exchange_code((DEMO_CLIENT, DEMO_SECRET), &code, DEMO_REDIRECT, &verifier)
            .await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// [`TestApp::demo_tokens`] approving everything asked for alice's first account (the
    /// customer must be logged in).
    pub async fn approved_tokens(&self) -> Value {
        let acc = self.account_ids("alice").await[0].clone();
        self.demo_tokens(&[
            ("decision", "approve"),
            ("account", &acc),
            ("action", "accounts:read"),
            ("action", "balances:read"),
            ("action", "transactions:read"),
        ])
        .await
    }

    /// The customer's account ids, in id order.
    pub async fn account_ids(&self, username: &str) -> Vec<String> {
        use platform::storage::schema::{accounts, customers};
        let username = username.to_string();
        self.platform
            .db
            .run(move |c| {
                Ok(accounts::table
                    .inner_join(customers::table)
                    .filter(customers::username.eq(username))
                    .order(accounts::id.asc())
                    .select(accounts::id)
                    .load::<String>(c)?)
            })
            .await
            .unwrap()
    }
}

/// An OAuth error answer: (status, `error`, `error_description`).
pub async fn oauth_error(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or_default();
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    (status, text("error"), text("error_description"))
}

/// The customer id of a demo user.
pub async fn customer_id(app: &TestApp, username: &str) -> String {
    use platform::storage::schema::customers;
    let username = username.to_string();
    app.platform
        .db
        .run(move |c| {
            Ok(customers::table
                .filter(customers::username.eq(username))
                .select(customers::id)
                .first::<String>(c)?)
        })
        .await
        .unwrap()
}
