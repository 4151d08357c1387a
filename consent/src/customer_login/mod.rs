//! Customer login through the bank's own OpenID Connect provider (the relying-party side; no
//! actix types). Authorization code with PKCE S256, a fresh `state` and `nonce` per attempt held
//! in an encrypted, HttpOnly, ten-minute cookie (so the attempt is bound to the browser that
//! started it), the ID token checked by `openidconnect` (signature against the provider's JWKS
//! with asymmetric algorithms only, `iss`, `aud`, `exp`, `nonce`) and, when configured, its `acr`.
//!
//! The provider's subject is linked to one customer record (`customer_identities`) at its first
//! login: by the configured username claim, or a new record where the bank allows it, or refused.
//! The login is audited with the provider's `acr` and `amr`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthenticationContextClass, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, TokenResponse,
};
use openidconnect::{JsonWebKey, JsonWebKeyId};
use platform::Platform;
use platform::audit::{Actor, NewEvent, Target};
use platform::config::CustomerLoginSettings;
use platform::crypto::{PlainToken, constant_time_eq, random_id};
use platform::session::{self, SessionKind};
use platform::storage::schema::{customer_identities, customers};
use platform::storage::{AnyConnection, StorageError};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

mod discovery;

/// How long a started login may take at the provider.
pub const ATTEMPT_TTL: Duration = Duration::from_secs(600);
/// Purpose of the key that encrypts the attempt cookie.
const COOKIE_PURPOSE: &str = "customer-login-attempt";

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a provider login did not log anyone in. Every variant is answered with a page; none
/// reveals more than the customer needs.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("login through the bank's provider is not configured")]
    NotConfigured,
    #[error("the bank's login service cannot be reached; try again in a moment")]
    ProviderUnavailable(String),
    #[error("this login attempt has expired or was started in another browser; start again")]
    BadAttempt,
    #[error("the bank's login service refused: {0}")]
    Refused(String),
    #[error("the bank's login service answered with an identity that could not be checked")]
    InvalidIdToken(String),
    #[error("the bank's login service did not confirm the required level of authentication")]
    AcrNotMet,
    #[error("no customer record is linked to this bank identity")]
    UnknownCustomer,
    #[error("the service is temporarily unavailable; try again")]
    Storage(#[from] StorageError),
}

/// What the attempt cookie carries (encrypted and authenticated with the master key).
#[derive(Debug, Serialize, Deserialize)]
struct Attempt {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
    expires_at: i64,
}

/// A login started: where to send the browser, and the cookie value that finishes it.
#[derive(Debug)]
pub struct Started {
    pub location: String,
    pub cookie: String,
}

/// A finished login: the new session's token and where to go.
#[derive(Debug)]
pub struct LoggedIn {
    pub token: PlainToken,
    pub customer_id: String,
    pub next: String,
}

/// The bank's provider, as one instance talks to it.
#[derive(Clone)]
pub struct Upstream {
    settings: CustomerLoginSettings,
    issuer: String,
    redirect: String,
    http: reqwest::Client,
    metadata: Arc<Mutex<discovery::Discovery>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// The configured provider, if any; `public_url` is this service's base URL. A client that
    /// cannot be built stops start-up rather than leaving a configured login silently absent.
    pub fn from_settings(
        settings: &CustomerLoginSettings,
        public_url: &str,
    ) -> Result<Option<Self>, reqwest::Error> {
        let Some(issuer) = settings.oidc_issuer.clone() else {
            return Ok(None);
        };
        let http = reqwest::Client::builder()
            // The provider's endpoints answer directly: following a redirect would be an SSRF.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Some(Self {
            settings: settings.clone(),
            issuer,
            redirect: format!("{}/login/oidc/callback", public_url.trim_end_matches('/')),
            http,
            metadata: Arc::new(Mutex::new(discovery::Discovery::default())),
        }))
    }

    pub fn label(&self) -> &str {
        &self.settings.oidc_label
    }

    fn client(&self, metadata: CoreProviderMetadata) -> Result<Client, LoginError> {
        let id = self.settings.oidc_client_id.clone().unwrap_or_default();
        let secret = self
            .settings
            .oidc_client_secret
            .as_ref()
            .map(|s| ClientSecret::new(s.expose().clone()));
        let redirect = RedirectUrl::new(self.redirect.clone())
            .map_err(|e| LoginError::ProviderUnavailable(e.to_string()))?;
        Ok(
            CoreClient::from_provider_metadata(metadata, ClientId::new(id), secret)
                .set_redirect_uri(redirect),
        )
    }

    /// Starts a login that returns to `next` (already checked to be a path of this site).
    pub async fn start(
        &self,
        platform: &Platform,
        next: &str,
        now: DateTime<Utc>,
    ) -> Result<Started, LoginError> {
        let client = self.client(self.metadata(false).await?)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        if let Some(acr) = &self.settings.oidc_required_acr {
            request = request.add_auth_context_value(AuthenticationContextClass::new(acr.clone()));
        }
        let (url, state, nonce) = request.url();
        let attempt = Attempt {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            next: next.to_string(),
            expires_at: now.timestamp() + ATTEMPT_TTL.as_secs() as i64,
        };
        let json = serde_json::to_vec(&attempt).map_err(|_| LoginError::BadAttempt)?;
        let cookie = platform
            .master_key
            .cipher(COOKIE_PURPOSE)
            .encrypt(&json, COOKIE_PURPOSE)
            .map_err(|_| LoginError::BadAttempt)?;
        Ok(Started {
            location: url.to_string(),
            cookie,
        })
    }

    /// Finishes a login: `cookie` is the attempt cookie, `state` and `code` the callback's.
    pub async fn finish(
        &self,
        platform: &Platform,
        cookie: Option<&str>,
        state: &str,
        code: &str,
        client_address: &str,
    ) -> Result<LoggedIn, LoginError> {
        let now = platform.now();
        let attempt: Attempt = cookie
            .and_then(|c| {
                let plain = platform
                    .master_key
                    .cipher(COOKIE_PURPOSE)
                    .decrypt(c, COOKIE_PURPOSE)
                    .ok()?;
                serde_json::from_slice(&plain).ok()
            })
            .ok_or(LoginError::BadAttempt)?;
        if attempt.expires_at < now.timestamp()
            || !constant_time_eq(attempt.state.as_bytes(), state.as_bytes())
        {
            return Err(LoginError::BadAttempt);
        }
        if code.is_empty() || code.len() > 2048 {
            return Err(LoginError::Refused("no authorization code".into()));
        }
        let client = self.client(self.metadata(false).await?)?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| LoginError::ProviderUnavailable(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(attempt.verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| LoginError::Refused(e.to_string()))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| LoginError::InvalidIdToken("no ID token".into()))?;
        let nonce = Nonce::new(attempt.nonce.clone());
        let verify = |client: &Client| {
            let verifier = client.id_token_verifier().set_allowed_algs(vec![
                CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                CoreJwsSigningAlgorithm::RsaSsaPssSha256,
                CoreJwsSigningAlgorithm::EcdsaP256Sha256,
                CoreJwsSigningAlgorithm::EcdsaP384Sha384,
                CoreJwsSigningAlgorithm::EdDsa,
            ]);
            id_token.claims(&verifier, &nonce).cloned()
        };
        let claims = match verify(&client) {
            Ok(c) => c,
            // A key the provider rotated in since the metadata was fetched: fetch once more.
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) => {
                let fresh = self.client(self.metadata(true).await?)?;
                verify(&fresh).map_err(|e| LoginError::InvalidIdToken(e.to_string()))?
            }
            Err(e) => return Err(LoginError::InvalidIdToken(e.to_string())),
        };
        let acr = claims.auth_context_ref().map(|a| a.as_str().to_string());
        if let Some(required) = &self.settings.oidc_required_acr
            && acr.as_deref() != Some(required.as_str())
        {
            return Err(LoginError::AcrNotMet);
        }
        let amr: Vec<String> = claims
            .auth_method_refs()
            .map(|v| v.iter().map(|a| a.as_str().to_string()).collect())
            .unwrap_or_default();
        let subject = claims.subject().as_str().to_string();
        let username = match self.settings.oidc_username_claim.as_str() {
            "preferred_username" => claims.preferred_username().map(|u| u.as_str().to_string()),
            // An address the provider has not verified names nobody: anyone may put any
            // address on an account at many providers.
            "email" => claims
                .email()
                .filter(|_| claims.email_verified() == Some(true))
                .map(|e| e.as_str().to_string()),
            _ => Some(subject.clone()),
        }
        .map(|u| u.trim().to_ascii_lowercase())
        .filter(|u| !u.is_empty() && u.len() <= 64);
        let display_name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().chars().take(100).collect::<String>());
        let issuer = self.issuer.clone();
        let create = self.settings.oidc_create_customers;
        let address = client_address.to_string();
        let next = attempt.next.clone();
        let (token, customer_id) = platform
            .db
            .write(move |c| {
                let Some(customer_id) = link(
                    c,
                    &issuer,
                    &subject,
                    username.as_deref(),
                    display_name.as_deref(),
                    create,
                    now,
                )?
                else {
                    NewEvent::new(
                        Actor::system("customer-login"),
                        "customer.login_refused",
                        Target::new("identity", format!("{issuer}#{subject}")),
                    )
                    .details(serde_json::json!({ "reason": "no customer record" }))
                    .record(c, now)?;
                    return Ok(None);
                };
                let (token, _) = session::create(c, SessionKind::Customer, &customer_id, now)?;
                NewEvent::new(
                    Actor::customer(&customer_id),
                    "customer.login",
                    Target::new("customer", customer_id.clone()),
                )
                .details(serde_json::json!({
                    "client_address": address,
                    "method": "oidc",
                    "issuer": issuer,
                    "acr": acr,
                    "amr": amr,
                }))
                .record(c, now)?;
                Ok(Some((token, customer_id)))
            })
            .await?
            .ok_or(LoginError::UnknownCustomer)?;
        Ok(LoggedIn {
            token,
            customer_id,
            next,
        })
    }
}

/// The event a back-channel logout token carries (OpenID Connect Back-Channel Logout 1.0).
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// How old a logout token may be.
const LOGOUT_TOKEN_MAX_AGE: i64 = 300;

/// Why a back-channel logout token was refused.
#[derive(Debug, thiserror::Error)]
pub enum LogoutError {
    #[error("login through the bank's provider is not configured")]
    NotConfigured,
    #[error("the logout token is invalid: {0}")]
    Invalid(&'static str),
    #[error("the provider's keys cannot be fetched")]
    ProviderUnavailable,
    #[error("the service is temporarily unavailable")]
    Storage(#[from] StorageError),
    #[error("the service is temporarily unavailable")]
    Cache(#[from] platform::cache::CacheError),
}

impl Upstream {
    /// A back-channel logout from the provider: checks the logout token (signature against the
    /// provider's keys with an asymmetric algorithm, `iss`, `aud`, `iat` within five minutes, the
    /// back-channel event, a `sub`, no `nonce`, a `jti` not seen before) and ends every session
    /// of the customer linked to its subject; returns how many ended. A subject linked to nobody
    /// ends nothing. A token is accepted once (its `jti` is remembered past its lifetime): a
    /// captured one replayed later does not end the sessions the customer started since.
    pub async fn backchannel_logout(
        &self,
        platform: &Platform,
        logout_token: &str,
    ) -> Result<usize, LogoutError> {
        let invalid = LogoutError::Invalid;
        if logout_token.len() > 8192 {
            return Err(invalid("too long"));
        }
        let mut parts = logout_token.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a signed JWT"));
        };
        let decode = |s: &str| {
            URL_SAFE_NO_PAD
                .decode(s)
                .map_err(|_| invalid("not base64url"))
        };
        let header: serde_json::Value =
            serde_json::from_slice(&decode(h)?).map_err(|_| invalid("bad header"))?;
        let claims: serde_json::Value =
            serde_json::from_slice(&decode(p)?).map_err(|_| invalid("bad claims"))?;
        let signature = decode(sig)?;
        let alg: CoreJwsSigningAlgorithm =
            serde_json::from_value(header["alg"].clone()).map_err(|_| invalid("unknown alg"))?;
        if !matches!(
            alg,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256
                | CoreJwsSigningAlgorithm::RsaSsaPssSha256
                | CoreJwsSigningAlgorithm::EcdsaP256Sha256
                | CoreJwsSigningAlgorithm::EcdsaP384Sha384
                | CoreJwsSigningAlgorithm::EdDsa
        ) {
            return Err(invalid("alg not allowed"));
        }
        let kid = header["kid"]
            .as_str()
            .map(|k| JsonWebKeyId::new(k.to_string()));
        let message = format!("{h}.{p}");
        let verified = |m: &CoreProviderMetadata| {
            m.jwks().keys().iter().any(|k| {
                (kid.is_none() || k.key_id() == kid.as_ref())
                    && k.verify_signature(&alg, message.as_bytes(), &signature)
                        .is_ok()
            })
        };
        let metadata = self
            .metadata(false)
            .await
            .map_err(|_| LogoutError::ProviderUnavailable)?;
        if !verified(&metadata) {
            let fresh = self
                .metadata(true)
                .await
                .map_err(|_| LogoutError::ProviderUnavailable)?;
            if !verified(&fresh) {
                return Err(invalid("bad signature"));
            }
        }
        if claims["iss"].as_str() != Some(self.issuer.as_str()) {
            return Err(invalid("another issuer"));
        }
        let client_id = self.settings.oidc_client_id.as_deref().unwrap_or_default();
        let audience_ok = match &claims["aud"] {
            serde_json::Value::String(a) => a == client_id,
            serde_json::Value::Array(list) => list.iter().any(|a| a.as_str() == Some(client_id)),
            _ => false,
        };
        if !audience_ok {
            return Err(invalid("another audience"));
        }
        let now = platform.now();
        let iat = claims["iat"].as_i64().ok_or(invalid("no iat"))?;
        if iat > now.timestamp() + 60 || iat < now.timestamp() - LOGOUT_TOKEN_MAX_AGE {
            return Err(invalid("too old or from the future"));
        }
        if claims["events"].get(BACKCHANNEL_EVENT).is_none() {
            return Err(invalid("not a logout event"));
        }
        if claims.get("nonce").is_some() {
            return Err(invalid("a nonce"));
        }
        let Some(subject) = claims["sub"].as_str().map(str::to_string) else {
            // Logout by session id alone is not supported: sessions here are not the provider's.
            return Err(invalid("no sub"));
        };
        let jti = claims["jti"]
            .as_str()
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or(invalid("no jti"))?;
        // Hashed: the key holds nothing the provider chose verbatim.
        let replay_key = {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(format!("{}\n{jti}", self.issuer).as_bytes());
            format!("logout-jti:{}", hex::encode(digest))
        };
        let remember = std::time::Duration::from_secs(LOGOUT_TOKEN_MAX_AGE as u64 + 120);
        if !platform.cache.put_once(&replay_key, "1", remember).await? {
            return Err(invalid("replayed"));
        }
        let issuer = self.issuer.clone();
        let ended = platform
            .db
            .write(move |c| {
                let customer: Option<String> = customer_identities::table
                    .filter(customer_identities::issuer.eq(&issuer))
                    .filter(customer_identities::subject.eq(&subject))
                    .select(customer_identities::customer_id)
                    .first(c)
                    .optional()?;
                let Some(customer) = customer else {
                    return Ok(0);
                };
                let ended = session::delete_all_for(c, SessionKind::Customer, &customer)?;
                NewEvent::new(
                    Actor::system("customer-login"),
                    "customer.logged_out_by_provider",
                    Target::new("customer", customer.clone()),
                )
                .details(serde_json::json!({ "issuer": issuer, "sessions": ended }))
                .record(c, now)?;
                Ok(ended)
            })
            .await;
        if ended.is_err() {
            // Nothing ended: the provider's retry of this token must not count as a replay.
            let _ = platform.cache.take(&replay_key).await;
        }
        Ok(ended?)
    }
}

/// The customer the provider's `subject` is, linking it at its first login: to the customer
/// named by `username`, or to a new customer when `create`; `None`: refused.
fn link(
    c: &mut AnyConnection,
    issuer: &str,
    subject: &str,
    username: Option<&str>,
    display_name: Option<&str>,
    create: bool,
    now: DateTime<Utc>,
) -> Result<Option<String>, StorageError> {
    let known: Option<String> = customer_identities::table
        .filter(customer_identities::issuer.eq(issuer))
        .filter(customer_identities::subject.eq(subject))
        .select(customer_identities::customer_id)
        .first(c)
        .optional()?;
    if let Some(id) = known {
        diesel::update(
            customer_identities::table
                .filter(customer_identities::issuer.eq(issuer))
                .filter(customer_identities::subject.eq(subject)),
        )
        .set(customer_identities::last_login_at.eq(now.naive_utc()))
        .execute(c)?;
        return Ok(Some(id));
    }
    let Some(username) = username else {
        return Ok(None);
    };
    let existing: Option<String> = customers::table
        .filter(customers::username.eq(username))
        .select(customers::id)
        .first(c)
        .optional()?;
    // A customer already linked to another subject of this provider is not taken over.
    if let Some(id) = &existing {
        let linked: i64 = customer_identities::table
            .filter(customer_identities::issuer.eq(issuer))
            .filter(customer_identities::customer_id.eq(id))
            .count()
            .get_result(c)?;
        if linked > 0 {
            return Ok(None);
        }
    }
    let customer_id = match existing {
        Some(id) => id,
        None if create => {
            let id = random_id("cust_");
            diesel::insert_into(customers::table)
                .values((
                    customers::id.eq(&id),
                    customers::username.eq(username),
                    customers::display_name.eq(display_name.unwrap_or(username)),
                    // No password here: this customer logs in through the provider only.
                    customers::password_hash.eq("!"),
                    customers::created_at.eq(now.naive_utc()),
                    customers::is_test.eq(false),
                ))
                .execute(c)?;
            NewEvent::new(
                Actor::system("customer-login"),
                "customer.created",
                Target::new("customer", id.clone()),
            )
            .details(serde_json::json!({ "issuer": issuer }))
            .record(c, now)?;
            id
        }
        None => return Ok(None),
    };
    diesel::insert_into(customer_identities::table)
        .values((
            customer_identities::issuer.eq(issuer),
            customer_identities::subject.eq(subject),
            customer_identities::customer_id.eq(&customer_id),
            customer_identities::created_at.eq(now.naive_utc()),
            customer_identities::last_login_at.eq(now.naive_utc()),
        ))
        .execute(c)?;
    NewEvent::new(
        Actor::customer(&customer_id),
        "customer.identity_linked",
        Target::new("customer", customer_id.clone()),
    )
    .details(serde_json::json!({ "issuer": issuer }))
    .record(c, now)?;
    Ok(Some(customer_id))
}
