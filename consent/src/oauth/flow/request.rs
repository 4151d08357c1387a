//! Pushed authorization requests (RFC 9126) and the authorization endpoint: validating what a
//! client asks for before the customer sees it.

use super::*;

pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
/// How long a customer has to log in and decide.
pub(super) const DECISION_WINDOW_MINUTES: i64 = 10;

/// Authorization request parameters (query string of `/oauth2/authorize` or body of PAR).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
pub struct AuthorizationParams {
    pub client_id: Option<String>,
    #[param(value_type = Option<crate::openapi::values::ResponseType>)]
    #[schema(value_type = Option<crate::openapi::values::ResponseType>)]
    pub response_type: Option<String>,
    /// Exactly one of the client's registered redirect URIs.
    pub redirect_uri: Option<String>,
    pub state: Option<String>,
    /// BASE64URL(SHA-256(code_verifier)).
    pub code_challenge: Option<String>,
    #[param(value_type = Option<crate::openapi::values::CodeChallengeMethod>)]
    #[schema(value_type = Option<crate::openapi::values::CodeChallengeMethod>)]
    pub code_challenge_method: Option<String>,
    /// Space-separated actions, shorthand for an `account_access` request.
    pub scope: Option<String>,
    /// JSON array with one `account_access` entry (RFC 9396).
    pub authorization_details: Option<String>,
    /// From PAR (RFC 9126).
    pub request_uri: Option<String>,
    /// RFC 9449 section 10: the RFC 7638 thumbprint of the DPoP key the code will be bound to
    /// (at PAR, a `DPoP` proof header does the same).
    pub dpop_jkt: Option<String>,
    /// OpenID Grant Management: the grant a `merge` or `replace` changes (the `grant_id` of an
    /// earlier token response).
    #[param(pattern = "^g_[A-Za-z0-9_-]+$", max_length = 100)]
    #[schema(pattern = "^g_[A-Za-z0-9_-]+$", max_length = 100)]
    pub grant_id: Option<String>,
    /// OpenID Grant Management: `create` (the default: a new grant), `merge` (add what the
    /// customer consents to now to the grant) or `replace` (the grant allows only what the
    /// customer consents to now).
    #[param(value_type = Option<crate::openapi::values::GrantManagementAction>)]
    #[schema(value_type = Option<crate::openapi::values::GrantManagementAction>)]
    pub grant_management_action: Option<String>,
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
pub(super) struct Validated {
    pub(super) redirect_uri: String,
    pub(super) state: Option<String>,
    pub(super) code_challenge: String,
    pub(super) access: AccessRequest,
    pub(super) dpop_jkt: Option<String>,
    /// Grant Management: the grant the request changes, and how.
    pub(super) change: Option<(GrantAction, String)>,
}

pub(super) fn is_pkce_charset(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Checks the client-facing parameters of an authorization request. `Page` failures are the
/// ones where the redirect URI is not (yet) trusted.
pub(super) fn validate(
    client: &RequestPolicy,
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
    if p.dpop_jkt
        .as_deref()
        .is_some_and(|j| !super::super::dpop::is_thumbprint(j))
    {
        return Err(fail(OAuthError::InvalidRequest(
            "dpop_jkt must be an RFC 7638 SHA-256 thumbprint (43 base64url characters)".into(),
        )));
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
    let change = requested(p).map_err(fail)?;
    Ok(Validated {
        redirect_uri,
        state,
        code_challenge: challenge,
        access,
        dpop_jkt: p.dpop_jkt.clone(),
        change,
    })
}

/// The response of a successful PAR.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParResponse {
    pub request_uri: String,
    pub expires_in: i64,
}

#[derive(Serialize, Deserialize)]
pub(super) struct PushedRequest {
    pub(super) client_id: String,
    pub(super) params: AuthorizationParams,
    /// The client's registration the request was checked against (absent in requests pushed
    /// before it was kept).
    #[serde(default)]
    pub(super) registration: Option<Registration>,
}

/// RFC 9126: validates and stores the request for `par_ttl`, bound to the authenticated client.
/// `proven_jkt` is the key of the request's recorded DPoP proof: the code will be bound to it
/// (and a `dpop_jkt` parameter must name the same key).
pub async fn push(
    svc: &OAuthService,
    client: &OAuthClient,
    mut params: AuthorizationParams,
    proven_jkt: Option<&str>,
) -> Result<ParResponse, OAuthError> {
    match (params.dpop_jkt.as_deref(), proven_jkt) {
        (Some(named), Some(proven)) if named != proven => {
            return Err(OAuthError::InvalidDpopProof(
                "dpop_jkt names another key than the one that signed the DPoP proof".into(),
            ));
        }
        (None, Some(proven)) => params.dpop_jkt = Some(proven.to_string()),
        _ => {}
    }
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
    match validate(&client.request_policy(), &params, now, svc.max_lifetime()) {
        Ok(v) => check_target(svc, &v, &client.id, now)
            .await
            .map_err(|f| match f {
                AuthorizeFailure::Redirect { error, .. } => error,
                AuthorizeFailure::Page(msg) => OAuthError::InvalidRequest(msg),
                AuthorizeFailure::Unavailable(msg) => OAuthError::TemporarilyUnavailable(msg),
            })?,
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
        registration: Some(client.registration().clone()),
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

/// Grant Management: the grant a `merge` or `replace` names must be a live grant of this client
/// (whose customer is checked once they log in).
async fn check_target(
    svc: &OAuthService,
    v: &Validated,
    client_id: &str,
    now: DateTime<Utc>,
) -> Result<(), AuthorizeFailure> {
    let Some((_, id)) = v.change.clone() else {
        return Ok(());
    };
    let client_id = client_id.to_string();
    let found = svc
        .platform
        .db
        .run(move |c| live_grant(c, &id, &client_id, None, now))
        .await?;
    found
        .map(|_| ())
        .map_err(|error| AuthorizeFailure::Redirect {
            redirect_uri: v.redirect_uri.clone(),
            error,
            state: v.state.clone(),
        })
}

/// RFC 9700 4.11.2: an error is sent back to the redirect URI only when someone answers for
/// that URI: a production client, whose developer passed KYC. Anyone may register a sandbox
/// client with any redirect URI (and push requests for it, say one that expires before use), so
/// redirecting its errors would make our origin an open redirector: the error is shown on our
/// page instead.
fn shown_unless_vouched_for(failure: AuthorizeFailure, production: bool) -> AuthorizeFailure {
    match failure {
        AuthorizeFailure::Redirect { error, .. } if !production => {
            AuthorizeFailure::Page(format!("{}: {}", error.code(), error.description()))
        }
        other => other,
    }
}

/// The authorization endpoint: resolves PAR, validates, and records a pending request the
/// customer will decide on. Returns its id.
///
/// A pushed request was checked against its client's registration when it was pushed; it is
/// checked again against that registration and recorded by one statement that inserts only while
/// the client is active and its row still holds exactly that registration. Otherwise (the client
/// changed or was suspended since, or any check fails) it is checked against the client as it is
/// now, which decides the answer.
pub async fn authorize(
    svc: &OAuthService,
    params: AuthorizationParams,
) -> Result<String, AuthorizeFailure> {
    let Some(client_id) = params.client_id.clone().filter(|c| !c.is_empty()) else {
        return Err(AuthorizeFailure::Page("client_id is required".into()));
    };
    let Some(uri) = params.request_uri.as_deref() else {
        let client = active(svc, &client_id).await?;
        front_channel_allowed(&client, &params)?;
        return checked_and_recorded(svc, &client_id, client.registration(), &params)
            .await?
            .ok_or_else(inactive);
    };
    let pushed = take_pushed(svc, uri).await?;
    if pushed.client_id != client_id {
        return Err(AuthorizeFailure::Page(
            "request_uri was pushed by another client".into(),
        ));
    }
    if let Some(registration) = &pushed.registration
        && let Ok(Some(id)) =
            checked_and_recorded(svc, &client_id, registration, &pushed.params).await
    {
        return Ok(id);
    }
    let client = active(svc, &client_id).await?;
    checked_and_recorded(svc, &client_id, client.registration(), &pushed.params)
        .await?
        .ok_or_else(inactive)
}

fn inactive() -> AuthorizeFailure {
    AuthorizeFailure::Page("unknown or inactive client".into())
}

async fn active(svc: &OAuthService, client_id: &str) -> Result<OAuthClient, AuthorizeFailure> {
    svc.active_client(client_id).await?.ok_or_else(inactive)
}

/// Takes a pushed request (it is single-use) by its `request_uri`.
async fn take_pushed(svc: &OAuthService, uri: &str) -> Result<PushedRequest, AuthorizeFailure> {
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
    serde_json::from_str(&stored)
        .map_err(|_| AuthorizeFailure::Page("request_uri is unreadable".into()))
}

/// What a request sent through the front channel (not pushed) may not be.
fn front_channel_allowed(
    client: &OAuthClient,
    params: &AuthorizationParams,
) -> Result<(), AuthorizeFailure> {
    // Changing an existing grant takes an authenticated request: a front-channel link anyone can
    // forge (knowing a grant id) must not be able to end its tokens.
    if matches!(
        params.grant_management_action.as_deref(),
        Some("merge" | "replace")
    ) {
        return Err(AuthorizeFailure::Page(
            "grant_management_action merge and replace need a pushed request (PAR)".into(),
        ));
    }
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
            _ => AuthorizeFailure::Page("production clients must use PAR (request_uri)".into()),
        });
    }
    Ok(())
}

/// Checks a request against a client's registration and records it, in one statement that
/// inserts only while the client is active and registered exactly so. `None`: it was not
/// (nothing was written).
async fn checked_and_recorded(
    svc: &OAuthService,
    client_id: &str,
    registration: &Registration,
    params: &AuthorizationParams,
) -> Result<Option<String>, AuthorizeFailure> {
    let policy = RequestPolicy::from(registration);
    let now = svc.platform.now();
    let v = validate(&policy, params, now, svc.max_lifetime())
        .map_err(|f| shown_unless_vouched_for(f, policy.production))?;
    check_target(svc, &v, client_id, now)
        .await
        .map_err(|f| shown_unless_vouched_for(f, policy.production))?;
    let id = random_id("areq_");
    let row_id = id.clone();
    let client_id = client_id.to_string();
    let registration = registration.clone();
    let inserted = svc
        .platform
        .db
        .run(move |c| {
            use diesel::sql_types::{Nullable, Text, Timestamp};
            use platform::storage::models::ClientStatus;
            use platform::storage::schema::clients;
            let expires = now + Duration::minutes(DECISION_WINDOW_MINUTES);
            let change = v.change.as_ref();
            // One statement, atomic and durable on its own: no transaction around it.
            Ok(diesel::insert_into(authorization_requests::table)
                .values(
                    clients::table
                        .filter(clients::id.eq(&client_id))
                        .filter(clients::status.eq(ClientStatus::Active.as_str()))
                        .filter(clients::environment.eq(&registration.environment))
                        .filter(clients::redirect_uris.eq(&registration.redirect_uris))
                        .filter(clients::allowed_actions.eq(&registration.allowed_actions))
                        .select((
                            row_id.into_sql::<Text>(),
                            clients::id,
                            v.redirect_uri.into_sql::<Text>(),
                            v.state.into_sql::<Nullable<Text>>(),
                            v.code_challenge.into_sql::<Text>(),
                            v.dpop_jkt.into_sql::<Nullable<Text>>(),
                            v.access.to_json().into_sql::<Text>(),
                            change
                                .map(|(_, id)| id.clone())
                                .into_sql::<Nullable<Text>>(),
                            change
                                .map(|(a, _)| a.as_str().to_string())
                                .into_sql::<Nullable<Text>>(),
                            AuthorizationRequestStatus::Pending
                                .as_str()
                                .into_sql::<Text>(),
                            now.naive_utc().into_sql::<Timestamp>(),
                            expires.naive_utc().into_sql::<Timestamp>(),
                        )),
                )
                .into_columns((
                    authorization_requests::id,
                    authorization_requests::client_id,
                    authorization_requests::redirect_uri,
                    authorization_requests::state,
                    authorization_requests::code_challenge,
                    authorization_requests::dpop_jkt,
                    authorization_requests::authorization_details,
                    authorization_requests::grant_id,
                    authorization_requests::grant_action,
                    authorization_requests::status,
                    authorization_requests::created_at,
                    authorization_requests::expires_at,
                ))
                .execute(c)?)
        })
        .await?;
    Ok((inserted == 1).then_some(id))
}
