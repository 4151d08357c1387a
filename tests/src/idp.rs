//! A small OpenID Connect provider for the customer-login tests, served over real HTTP on a free
//! port: discovery, JWKS (one P-256 key), an authorization endpoint that logs the configured
//! user in at once, and a token endpoint that checks client authentication, the redirect URI,
//! single use of the code and PKCE S256, then signs an ID token (ES256, with ring). Its `Mode`
//! makes it answer with the broken ID tokens a relying party must refuse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "consent-service";
pub const CLIENT_SECRET: &str = "idp-client-secret-0123456789";

/// What the token endpoint does to the ID token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Good,
    /// Signed with a key that is not in the JWKS (same `kid`).
    BadSignature,
    WrongAudience,
    WrongNonce,
    Expired,
    OtherIssuer,
    /// `alg: none`, no signature.
    Unsigned,
}

#[derive(Debug)]
struct Grant {
    nonce: Option<String>,
    challenge: String,
    redirect_uri: String,
}

struct State {
    issuer: String,
    key: EcdsaKeyPair,
    other_key: EcdsaKeyPair,
    codes: Mutex<HashMap<String, Grant>>,
    mode: Mutex<Mode>,
    subject: Mutex<String>,
    claims: Mutex<Value>,
}

/// The running provider.
pub struct TestIdp {
    pub issuer: String,
    state: Arc<State>,
    handle: actix_web::dev::ServerHandle,
}

fn key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
}

impl std::fmt::Debug for TestIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIdp")
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl TestIdp {
    pub async fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            issuer: issuer.clone(),
            key: key(),
            other_key: key(),
            codes: Mutex::new(HashMap::new()),
            mode: Mutex::new(Mode::Good),
            subject: Mutex::new("alice".into()),
            claims: Mutex::new(json!({})),
        });
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route(
                    "/.well-known/openid-configuration",
                    web::get().to(discovery),
                )
                .route("/jwks", web::get().to(jwks))
                .route("/authorize", web::get().to(authorize))
                .route("/token", web::post().to(token))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            issuer,
            state,
            handle,
        }
    }

    /// The user the authorization endpoint logs in (the ID token's `sub`).
    pub fn log_in_as(&self, subject: &str) {
        *self.state.subject.lock().unwrap() = subject.to_string();
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Extra claims of the next ID tokens (`acr`, `amr`, `name`, ...).
    pub fn set_claims(&self, claims: Value) {
        *self.state.claims.lock().unwrap() = claims;
    }

    /// A back-channel logout token for `subject`, changed by `tweak` before it is signed (with
    /// a key not in the JWKS when `foreign_key`).
    pub fn logout_token(
        &self,
        subject: &str,
        foreign_key: bool,
        tweak: impl FnOnce(&mut Value),
    ) -> String {
        let mut claims = json!({
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "iat": chrono::Utc::now().timestamp(),
            "jti": format!("jti-{}", rand::random::<u64>()),
            "sub": subject,
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        });
        tweak(&mut claims);
        let mode = if foreign_key {
            Mode::BadSignature
        } else {
            Mode::Good
        };
        sign(&self.state, mode, &claims)
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn discovery(s: web::Data<State>) -> HttpResponse {
    let i = &s.issuer;
    HttpResponse::Ok().json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    }))
}

async fn jwks(s: web::Data<State>) -> HttpResponse {
    let public = s.key.public_key().as_ref();
    HttpResponse::Ok().json(json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
    }]}))
}

async fn authorize(s: web::Data<State>, q: web::Query<HashMap<String, String>>) -> HttpResponse {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("client_id") != CLIENT_ID
        || get("response_type") != "code"
        || get("code_challenge_method") != "S256"
    {
        return HttpResponse::BadRequest().body("bad authorization request");
    }
    let code = format!("code-{}", rand::random::<u64>());
    s.codes.lock().unwrap().insert(
        code.clone(),
        Grant {
            nonce: q.get("nonce").cloned(),
            challenge: get("code_challenge"),
            redirect_uri: get("redirect_uri"),
        },
    );
    let mut to = url::Url::parse(&get("redirect_uri")).unwrap();
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &get("state"));
    HttpResponse::Found()
        .insert_header(("Location", to.to_string()))
        .finish()
}

async fn token(
    s: web::Data<State>,
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if auth != Some(basic.as_str()) {
        return HttpResponse::Unauthorized().json(json!({"error": "invalid_client"}));
    }
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let Some(grant) = s.codes.lock().unwrap().remove(&get("code")) else {
        return HttpResponse::BadRequest().json(json!({"error": "invalid_grant"}));
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(get("code_verifier").as_bytes()));
    if challenge != grant.challenge || get("redirect_uri") != grant.redirect_uri {
        return HttpResponse::BadRequest().json(json!({"error": "invalid_grant"}));
    }
    let mode = *s.mode.lock().unwrap();
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": if mode == Mode::OtherIssuer { "https://elsewhere.example".to_string() } else { s.issuer.clone() },
        "sub": s.subject.lock().unwrap().clone(),
        "aud": if mode == Mode::WrongAudience { "another-client" } else { CLIENT_ID },
        "iat": if mode == Mode::Expired { now - 7200 } else { now },
        "exp": if mode == Mode::Expired { now - 3600 } else { now + 300 },
        "nonce": if mode == Mode::WrongNonce { Some("not-the-nonce".to_string()) } else { grant.nonce },
    });
    if let (Some(c), Some(extra)) = (claims.as_object_mut(), s.claims.lock().unwrap().as_object()) {
        c.extend(extra.clone());
    }
    let id_token = sign(&s, mode, &claims);
    HttpResponse::Ok().json(json!({
        "access_token": "at-unused", "token_type": "Bearer", "expires_in": 300,
        "id_token": id_token,
    }))
}

fn sign(s: &State, mode: Mode, claims: &Value) -> String {
    let alg = if mode == Mode::Unsigned {
        "none"
    } else {
        "ES256"
    };
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": "k1", "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    if mode == Mode::Unsigned {
        return format!("{input}.");
    }
    let key = if mode == Mode::BadSignature {
        &s.other_key
    } else {
        &s.key
    };
    let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}
