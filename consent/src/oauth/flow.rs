//! PAR, the authorization endpoint, and the customer's consent decision.

use ::grants::{AccountId, Action, MerchantId, TxWindow};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use diesel::prelude::*;
use platform::audit::{self, Actor, NewEvent, Target};
use platform::crypto::{PlainToken, random_id};
use platform::storage::models::GrantStatus;
use platform::storage::schema::{
    accounts, authorization_codes, authorization_requests, grants, merchants,
};
use platform::storage::{AnyConnection, StorageError, write_tx};
use serde::{Deserialize, Serialize};

use super::OAuthService;
use super::clients::{self, OAuthClient};
use super::error::OAuthError;
use super::rar::{AccessRequest, parse_instant};

pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
/// How long a customer has to log in and decide.
const DECISION_WINDOW_MINUTES: i64 = 10;

/// Authorization request parameters (query string of `/oauth2/authorize` or body of PAR).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
pub struct AuthorizationParams {
    pub client_id: Option<String>,
    /// Must be `code`.
    pub response_type: Option<String>,
    /// Exactly one of the client's registered redirect URIs.
    pub redirect_uri: Option<String>,
    pub state: Option<String>,
    /// BASE64URL(SHA-256(code_verifier)).
    pub code_challenge: Option<String>,
    /// Must be `S256`.
    pub code_challenge_method: Option<String>,
    /// Space-separated actions, shorthand for an `account_access` request.
    pub scope: Option<String>,
    /// JSON array with one `account_access` entry (RFC 9396).
    pub authorization_details: Option<String>,
    /// From PAR (RFC 9126).
    pub request_uri: Option<String>,
}

/// Why an authorization request failed, and how to tell the user agent.
#[derive(Debug)]
pub enum AuthorizeFailure {
    /// The client or redirect URI cannot be trusted: show an error page, never redirect.
    Page(String),
    /// Redirect to the (validated) redirect URI with an error.
    Redirect {
        redirect_uri: String,
        error: OAuthError,
        state: Option<String>,
    },
    /// The database or the cache could not answer: an error page saying to retry (503).
    Unavailable(String),
}

impl From<StorageError> for AuthorizeFailure {
    fn from(e: StorageError) -> Self {
        match OAuthError::from(e) {
            OAuthError::TemporarilyUnavailable(d) => AuthorizeFailure::Unavailable(d),
            other => AuthorizeFailure::Page(other.description().to_string()),
        }
    }
}

/// A request that passed every check.
#[derive(Debug, Clone)]
struct Validated {
    redirect_uri: String,
    state: Option<String>,
    code_challenge: String,
    access: AccessRequest,
}

fn is_pkce_charset(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Checks the client-facing parameters of an authorization request. `Page` failures are the
/// ones where the redirect URI is not (yet) trusted.
fn validate(
    client: &OAuthClient,
    p: &AuthorizationParams,
    now: DateTime<Utc>,
    max_lifetime: Duration,
) -> Result<Validated, AuthorizeFailure> {
    let redirect_uri = match p.redirect_uri.as_deref() {
        Some(uri) if client.has_redirect_uri(uri) => uri.to_string(),
        Some(_) => {
            return Err(AuthorizeFailure::Page(
                "redirect_uri is not registered for this client".into(),
            ));
        }
        None => return Err(AuthorizeFailure::Page("redirect_uri is required".into())),
    };
    let state = p.state.clone();
    let fail = |error: OAuthError| AuthorizeFailure::Redirect {
        redirect_uri: redirect_uri.clone(),
        error,
        state: state.clone(),
    };
    if state.as_ref().is_some_and(|s| s.len() > 512) {
        return Err(fail(OAuthError::InvalidRequest("state is too long".into())));
    }
    if p.response_type.as_deref() != Some("code") {
        return Err(fail(OAuthError::UnsupportedResponseType(
            "response_type must be \"code\"".into(),
        )));
    }
    let challenge = match (
        p.code_challenge.as_deref(),
        p.code_challenge_method.as_deref(),
    ) {
        (Some(c), Some("S256")) if (43..=128).contains(&c.len()) && is_pkce_charset(c) => {
            c.to_string()
        }
        (Some(_), Some("S256")) => {
            return Err(fail(OAuthError::InvalidRequest(
                "code_challenge is malformed".into(),
            )));
        }
        (None, _) => {
            return Err(fail(OAuthError::InvalidRequest(
                "PKCE is required: code_challenge is missing".into(),
            )));
        }
        (Some(_), _) => {
            return Err(fail(OAuthError::InvalidRequest(
                "code_challenge_method must be S256 (plain is not allowed)".into(),
            )));
        }
    };
    let access = AccessRequest::parse(
        p.authorization_details.as_deref(),
        p.scope.as_deref(),
        now,
        max_lifetime,
    )
    .map_err(fail)?;
    if let Some(a) = access
        .actions
        .iter()
        .find(|a| !client.allowed_actions.contains(a))
    {
        return Err(fail(OAuthError::InvalidScope(format!(
            "this client may not request {a}"
        ))));
    }
    Ok(Validated {
        redirect_uri,
        state,
        code_challenge: challenge,
        access,
    })
}

/// The response of a successful PAR.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParResponse {
    pub request_uri: String,
    pub expires_in: i64,
}

#[derive(Serialize, Deserialize)]
struct PushedRequest {
    client_id: String,
    params: AuthorizationParams,
}

/// RFC 9126: validates and stores the request for `par_ttl`, bound to the authenticated client.
pub async fn push(
    svc: &OAuthService,
    client: &OAuthClient,
    mut params: AuthorizationParams,
) -> Result<ParResponse, OAuthError> {
    if params.request_uri.is_some() {
        return Err(OAuthError::InvalidRequest(
            "request_uri is not allowed in a pushed request".into(),
        ));
    }
    if params
        .client_id
        .as_deref()
        .is_some_and(|id| id != client.id)
    {
        return Err(OAuthError::InvalidRequest(
            "client_id does not match the authenticated client".into(),
        ));
    }
    params.client_id = Some(client.id.clone());
    let now = svc.platform.now();
    match validate(client, &params, now, svc.max_lifetime()) {
        Ok(_) => {}
        Err(AuthorizeFailure::Page(msg)) => return Err(OAuthError::InvalidRequest(msg)),
        Err(AuthorizeFailure::Unavailable(msg)) => {
            return Err(OAuthError::TemporarilyUnavailable(msg));
        }
        Err(AuthorizeFailure::Redirect { error, .. }) => return Err(error),
    }
    let ttl = svc.platform.settings.tokens.par_ttl.get();
    let id = random_id("");
    let value = serde_json::to_string(&PushedRequest {
        client_id: client.id.clone(),
        params,
    })
    .map_err(|e| OAuthError::ServerError(e.to_string()))?;
    if !svc
        .platform
        .cache
        .put_once(&format!("par:{id}"), &value, ttl)
        .await?
    {
        return Err(OAuthError::ServerError("request_uri collision".into()));
    }
    Ok(ParResponse {
        request_uri: format!("{REQUEST_URI_PREFIX}{id}"),
        expires_in: ttl.as_secs() as i64,
    })
}

/// The authorization endpoint: resolves PAR, validates, and records a pending request the
/// customer will decide on. Returns its id.
pub async fn authorize(
    svc: &OAuthService,
    params: AuthorizationParams,
) -> Result<String, AuthorizeFailure> {
    let Some(client_id) = params.client_id.clone().filter(|c| !c.is_empty()) else {
        return Err(AuthorizeFailure::Page("client_id is required".into()));
    };
    let cid = client_id.clone();
    let client = svc
        .platform
        .db
        .run(move |c| clients::load(c, &cid))
        .await?
        .filter(OAuthClient::is_active)
        .ok_or_else(|| AuthorizeFailure::Page("unknown or inactive client".into()))?;

    let params = match params.request_uri.as_deref() {
        Some(uri) => {
            let id = uri
                .strip_prefix(REQUEST_URI_PREFIX)
                .filter(|id| !id.is_empty() && id.len() <= 64)
                .ok_or_else(|| AuthorizeFailure::Page("request_uri is malformed".into()))?;
            let stored = svc
                .platform
                .cache
                .take(&format!("par:{id}"))
                .await
                .map_err(|_| {
                    AuthorizeFailure::Unavailable(
                        "the service is temporarily unavailable; try again".into(),
                    )
                })?
                .ok_or_else(|| {
                    AuthorizeFailure::Page("request_uri is unknown, expired or already used".into())
                })?;
            let pushed: PushedRequest = serde_json::from_str(&stored)
                .map_err(|_| AuthorizeFailure::Page("request_uri is unreadable".into()))?;
            if pushed.client_id != client.id {
                return Err(AuthorizeFailure::Page(
                    "request_uri was pushed by another client".into(),
                ));
            }
            pushed.params
        }
        None => {
            if client.is_production() {
                // FAPI 2.0: production clients must push their requests.
                return Err(match params.redirect_uri.as_deref() {
                    Some(uri) if client.has_redirect_uri(uri) => AuthorizeFailure::Redirect {
                        redirect_uri: uri.to_string(),
                        error: OAuthError::InvalidRequest(
                            "production clients must use PAR (request_uri)".into(),
                        ),
                        state: params.state.clone(),
                    },
                    _ => AuthorizeFailure::Page(
                        "production clients must use PAR (request_uri)".into(),
                    ),
                });
            }
            params
        }
    };

    let now = svc.platform.now();
    let v = validate(&client, &params, now, svc.max_lifetime())?;
    let id = random_id("areq_");
    let row_id = id.clone();
    let client_id = client.id.clone();
    svc.platform
        .db
        .write(move |c| {
            diesel::insert_into(authorization_requests::table)
                .values((
                    authorization_requests::id.eq(&row_id),
                    authorization_requests::client_id.eq(&client_id),
                    authorization_requests::redirect_uri.eq(&v.redirect_uri),
                    authorization_requests::state.eq(&v.state),
                    authorization_requests::code_challenge.eq(&v.code_challenge),
                    authorization_requests::authorization_details.eq(v.access.to_json()),
                    authorization_requests::status.eq("pending"),
                    authorization_requests::created_at.eq(now.naive_utc()),
                    authorization_requests::expires_at
                        .eq((now + Duration::minutes(DECISION_WINDOW_MINUTES)).naive_utc()),
                ))
                .execute(c)?;
            Ok(())
        })
        .await?;
    Ok(id)
}

/// An account the customer may share.
#[derive(Debug, Clone)]
pub struct OfferedAccount {
    pub id: String,
    pub name: String,
    pub masked_number: String,
    pub currency: String,
}

/// What the consent page shows.
#[derive(Debug, Clone)]
pub struct PendingConsent {
    pub id: String,
    pub client: OAuthClient,
    /// Where the decision is sent (the page's CSP `form-action` must allow its origin).
    pub redirect_uri: String,
    pub requested: AccessRequest,
    pub accounts: Vec<OfferedAccount>,
    /// Requested merchants with their display names.
    pub merchants: Vec<(String, String)>,
    /// KYC-verified legal name of the developer, when verified.
    pub verified_legal_name: Option<String>,
}

/// Errors of the consent step: always shown as a page (the request may not be trustworthy).
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error("this authorization request is unknown, expired or already decided")]
    NotPending,
    #[error("none of the requested accounts belong to you")]
    NoAccounts,
    #[error("{0}")]
    Invalid(String),
    #[error("the service is temporarily unavailable; try again")]
    Unavailable(#[from] StorageError),
}

impl From<diesel::result::Error> for ConsentError {
    fn from(e: diesel::result::Error) -> Self {
        ConsentError::Unavailable(e.into())
    }
}

type Row = (
    String,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
);

fn load_request(c: &mut AnyConnection, id: &str, now: DateTime<Utc>) -> Result<Row, ConsentError> {
    authorization_requests::table
        .filter(authorization_requests::id.eq(id))
        .filter(authorization_requests::status.eq("pending"))
        .filter(authorization_requests::expires_at.gt(now.naive_utc()))
        .select((
            authorization_requests::client_id,
            authorization_requests::redirect_uri,
            authorization_requests::state,
            authorization_requests::code_challenge,
            authorization_requests::authorization_details,
            authorization_requests::customer_id,
        ))
        .first(c)
        .optional()?
        .ok_or(ConsentError::NotPending)
}

fn offered_accounts(
    c: &mut AnyConnection,
    customer_id: &str,
    requested: &AccessRequest,
) -> Result<Vec<OfferedAccount>, ConsentError> {
    let rows: Vec<(String, String, String, String)> = accounts::table
        .filter(accounts::customer_id.eq(customer_id))
        .order(accounts::id.asc())
        .select((
            accounts::id,
            accounts::name,
            accounts::masked_number,
            accounts::currency,
        ))
        .load(c)?;
    Ok(rows
        .into_iter()
        .filter(|(id, ..)| {
            requested
                .accounts
                .as_ref()
                .is_none_or(|req| req.iter().any(|a| a.as_str() == id))
        })
        .map(|(id, name, masked_number, currency)| OfferedAccount {
            id,
            name,
            masked_number,
            currency,
        })
        .collect())
}

/// Loads a pending request for the logged-in customer, binding it to them on first view (a
/// request cannot then be decided from another customer's session).
pub fn pending(
    c: &mut AnyConnection,
    svc: &OAuthService,
    id: &str,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<PendingConsent, ConsentError> {
    let (client_id, redirect_uri, _, _, details, bound) = load_request(c, id, now)?;
    match bound {
        Some(b) if b != customer_id => return Err(ConsentError::NotPending),
        Some(_) => {}
        None => {
            let n = diesel::update(
                authorization_requests::table
                    .filter(authorization_requests::id.eq(id))
                    .filter(authorization_requests::customer_id.is_null()),
            )
            .set(authorization_requests::customer_id.eq(customer_id))
            .execute(c)?;
            if n != 1 {
                return Err(ConsentError::NotPending);
            }
        }
    }
    let client = clients::load(c, &client_id)?
        .filter(OAuthClient::is_active)
        .ok_or(ConsentError::NotPending)?;
    let requested = AccessRequest::from_stored(&details)
        .map_err(|e| ConsentError::Invalid(e.description().into()))?;
    let accounts = offered_accounts(c, customer_id, &requested)?;
    if accounts.is_empty() {
        return Err(ConsentError::NoAccounts);
    }
    let merchants = match &requested.merchants {
        None => vec![],
        Some(list) => {
            let ids: Vec<&str> = list.iter().map(|m| m.as_str()).collect();
            let names: Vec<(String, String)> = merchants::table
                .filter(merchants::id.eq_any(&ids))
                .select((merchants::id, merchants::name))
                .load(c)?;
            list.iter()
                .map(|m| {
                    let name = names
                        .iter()
                        .find(|(id, _)| id == m.as_str())
                        .map(|(_, n)| n.clone());
                    (
                        m.as_str().to_string(),
                        name.unwrap_or_else(|| m.as_str().to_string()),
                    )
                })
                .collect()
        }
    };
    let verified_legal_name = verified_legal_name(c, svc, &client)?;
    Ok(PendingConsent {
        id: id.to_string(),
        client,
        redirect_uri,
        requested,
        accounts,
        merchants,
        verified_legal_name,
    })
}

/// The developer's KYC-verified legal name (decrypted), when their KYC is approved - the
/// developer portal owns that data and its decryption.
fn verified_legal_name(
    c: &mut AnyConnection,
    svc: &OAuthService,
    client: &OAuthClient,
) -> Result<Option<String>, ConsentError> {
    Ok(
        developer_portal::client_display(c, &svc.platform.master_key, &client.id)?
            .and_then(|d| d.verified_legal_name),
    )
}

/// What the customer chose on the consent page (raw form values).
#[derive(Debug, Clone, Default)]
pub struct ConsentChoice {
    pub accounts: Vec<String>,
    pub actions: Vec<String>,
    pub transactions_from: Option<String>,
    pub transactions_until: Option<String>,
    pub merchants: Vec<String>,
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Decision {
    Approve(ConsentChoice),
    Deny,
}

/// The grant the customer's `choice` makes of the `requested` access, given the accounts the
/// page `offered`: only ever a narrowing, or an error to show on the page.
pub fn narrowed(
    requested: &AccessRequest,
    offered: &[OfferedAccount],
    choice: &ConsentChoice,
    now: DateTime<Utc>,
) -> Result<AccessRequest, ConsentError> {
    let invalid = |m: &str| ConsentError::Invalid(m.to_string());
    let mut accounts = Vec::new();
    for a in &choice.accounts {
        if !offered.iter().any(|o| &o.id == a) {
            return Err(invalid("an account that was not offered was submitted"));
        }
        let id = AccountId::parse(a.clone()).map_err(|_| invalid("malformed account"))?;
        if !accounts.contains(&id) {
            accounts.push(id);
        }
    }
    if accounts.is_empty() {
        return Err(invalid("choose at least one account, or deny the request"));
    }
    let mut actions = Vec::new();
    for a in &choice.actions {
        let action = Action::parse_known(a).map_err(|_| invalid("unknown permission"))?;
        if !actions.contains(&action) {
            actions.push(action);
        }
    }
    if actions.is_empty() {
        return Err(invalid(
            "choose at least one permission, or deny the request",
        ));
    }
    // The page works in whole days; a date equal to the requested bound's date means "as
    // requested", an earlier start, a later end or a later expiry date is a widening.
    let window = match (
        choice
            .transactions_from
            .as_deref()
            .filter(|s| !s.is_empty()),
        choice
            .transactions_until
            .as_deref()
            .filter(|s| !s.is_empty()),
    ) {
        (None, None) => requested.window,
        (Some(f), Some(u)) => {
            let from =
                parse_instant(f, false).map_err(|_| invalid("transactions from: not a date"))?;
            let until =
                parse_instant(u, true).map_err(|_| invalid("transactions until: not a date"))?;
            let (from, until) = match &requested.window {
                None => (from, until),
                Some(w) => {
                    if from.date_naive() < w.from().date_naive()
                        || until.date_naive() > w.until().date_naive()
                    {
                        return Err(invalid("the transaction window can only be shortened"));
                    }
                    (from.max(w.from()), until.min(w.until()))
                }
            };
            Some(
                TxWindow::new(from, until)
                    .map_err(|_| invalid("the transaction window ends before it starts"))?,
            )
        }
        _ => return Err(invalid("give both ends of the transaction window")),
    };
    let merchants = match &requested.merchants {
        None => None,
        Some(_) => {
            let mut list = Vec::new();
            for m in &choice.merchants {
                let id = MerchantId::parse(m.clone()).map_err(|_| invalid("malformed merchant"))?;
                if !list.contains(&id) {
                    list.push(id);
                }
            }
            if list.is_empty() {
                return Err(invalid("choose at least one merchant, or deny the request"));
            }
            Some(list)
        }
    };
    let expires_at = match choice.expires_at.as_deref().filter(|s| !s.is_empty()) {
        Some(e) => {
            let chosen = super::rar::whole_seconds(
                parse_instant(e, true).map_err(|_| invalid("end date: not a date"))?,
            );
            if chosen.date_naive() > requested.expires_at.date_naive() {
                return Err(invalid("access can only end earlier than requested"));
            }
            chosen.min(requested.expires_at)
        }
        None => requested.expires_at,
    };
    if expires_at <= now {
        return Err(invalid("the end date is in the past"));
    }
    let n = AccessRequest {
        actions,
        accounts: Some(accounts),
        window,
        merchants,
        expires_at,
    };
    if !requested.contains(&n) {
        return Err(invalid("the consent can only be narrowed, never widened"));
    }
    Ok(n)
}

fn with_params(uri: &str, params: &[(&str, &str)]) -> String {
    let mut url = match url::Url::parse(uri) {
        Ok(u) => u,
        Err(_) => return uri.to_string(),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    url.to_string()
}

/// Records the customer's decision and returns where to send the browser.
pub fn decide(
    c: &mut AnyConnection,
    svc: &OAuthService,
    id: &str,
    customer_id: &str,
    decision: &Decision,
    now: DateTime<Utc>,
) -> Result<String, ConsentError> {
    let code_ttl = svc.platform.settings.tokens.code_ttl.as_chrono();
    let issuer = svc.issuer.clone();
    write_tx(
        c,
        |c| -> Result<Result<String, ConsentError>, StorageError> {
            let (client_id, redirect_uri, state, challenge, details, bound) =
                match load_request(c, id, now) {
                    Ok(r) => r,
                    Err(e) => return Ok(Err(e)),
                };
            if bound.as_deref() != Some(customer_id) {
                return Ok(Err(ConsentError::NotPending));
            }
            let requested = match AccessRequest::from_stored(&details) {
                Ok(r) => r,
                Err(e) => return Ok(Err(ConsentError::Invalid(e.description().into()))),
            };
            let grant_id = random_id("g_");
            let now_naive = now.naive_utc().trunc_subsecs(0);
            let (status, new_status, granted) = match decision {
                Decision::Deny => (GrantStatus::Rejected, "denied", requested.clone()),
                Decision::Approve(choice) => {
                    let offered = match offered_accounts(c, customer_id, &requested) {
                        Ok(o) => o,
                        Err(e) => return Ok(Err(e)),
                    };
                    match narrowed(&requested, &offered, choice, now) {
                        Ok(n) => (GrantStatus::Authorized, "approved", n),
                        Err(e) => return Ok(Err(e)),
                    }
                }
            };
            let updated = diesel::update(
                authorization_requests::table
                    .filter(authorization_requests::id.eq(id))
                    .filter(authorization_requests::status.eq("pending")),
            )
            .set((
                authorization_requests::status.eq(new_status),
                authorization_requests::grant_id.eq(&grant_id),
            ))
            .execute(c)?;
            if updated != 1 {
                return Ok(Err(ConsentError::NotPending));
            }
            diesel::insert_into(grants::table)
                .values((
                    grants::id.eq(&grant_id),
                    grants::customer_id.eq(customer_id),
                    grants::client_id.eq(&client_id),
                    grants::status.eq(status.as_str()),
                    grants::authorization_details.eq(granted.to_json()),
                    grants::created_at.eq(now_naive),
                    grants::authorized_at
                        .eq((status == GrantStatus::Authorized).then_some(now_naive)),
                    grants::expires_at.eq(granted.expires_at.naive_utc()),
                    grants::updated_at.eq(now_naive),
                ))
                .execute(c)?;
            let state_ref = state.as_deref();
            let location = if status == GrantStatus::Authorized {
                let code = PlainToken::generate("ac_");
                diesel::insert_into(authorization_codes::table)
                    .values((
                        authorization_codes::code_hash.eq(code.hash().as_str()),
                        authorization_codes::grant_id.eq(&grant_id),
                        authorization_codes::client_id.eq(&client_id),
                        authorization_codes::redirect_uri.eq(&redirect_uri),
                        authorization_codes::code_challenge.eq(&challenge),
                        authorization_codes::created_at.eq(now.naive_utc()),
                        authorization_codes::expires_at.eq((now + code_ttl).naive_utc()),
                    ))
                    .execute(c)?;
                audit::record(
                c,
                &NewEvent::new(Actor::customer(customer_id), "consent.approved", Target::new("grant", grant_id.clone()))
                    .details(serde_json::json!({
                        "client_id": client_id,
                        "narrowed": granted != requested,
                        "authorization_details": serde_json::from_str::<serde_json::Value>(&granted.to_json()).unwrap_or_default(),
                    })),
                now,
            )?;
                let mut params = vec![("code", code.expose())];
                if let Some(s) = state_ref {
                    params.push(("state", s));
                }
                params.push(("iss", issuer.as_str()));
                with_params(&redirect_uri, &params)
            } else {
                audit::record(
                    c,
                    &NewEvent::new(
                        Actor::customer(customer_id),
                        "consent.denied",
                        Target::new("grant", grant_id.clone()),
                    )
                    .details(serde_json::json!({ "client_id": client_id })),
                    now,
                )?;
                let mut params = vec![
                    ("error", "access_denied"),
                    ("error_description", "the customer denied the request"),
                ];
                if let Some(s) = state_ref {
                    params.push(("state", s));
                }
                params.push(("iss", issuer.as_str()));
                with_params(&redirect_uri, &params)
            };
            Ok(Ok(location))
        },
    )?
}
