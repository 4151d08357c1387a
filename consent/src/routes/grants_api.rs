//! Grant management for clients (`/api/v1/grants/{id}`), the revocation feed
//! (`/oauth2/revocations`) and the sandbox bank API (`/sandbox/v1`), which verifies Biscuits
//! offline through the `grants` crate's public API only: the published key document and the
//! synced revocation list.

use platform::web::no_store_json;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, delete, get, web};
use platform::audit::Actor;
use platform::problem::ApiError;
use platform::problem::documented::{TooManyAttempts, Unavailable};
use platform::revocation::{RevokedBy, end_grants};
use platform::storage::models::GrantRecord;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::bank_api;
use crate::AppState;
use crate::oauth::OAuthError;
use crate::oauth::clients::OAuthClient;
use crate::oauth::rar::{AccessRequest, AccountAccessDetail};
use crate::routes::{Answer, PathId, State};

/// A client calling the grants API.
type GrantsCaller = CallingClient<GrantsApi>;
use crate::sandbox::{AccountView, BalanceView, TransactionView};

/// OpenAPI fragment merged into the server's document.
#[derive(Debug, OpenApi)]
#[openapi(
    paths(client_grant, client_revoke_grant, revocation_feed, bank_api::usage_report, bank_api::sandbox_accounts, bank_api::sandbox_balances, bank_api::sandbox_transactions),
    components(schemas(bank_api::UsageReport, ClientGrantView, RevocationFeed, RevocationEntry, AccountView, BalanceView, TransactionView)),
    tags(
        (name = "client-grants", description = "Grant status and revocation for the client that holds the grant (HTTP Basic client authentication)"),
        (name = "sandbox", description = "Sandbox bank API: Biscuit bearer tokens verified offline; data filtered by the effective scope"),
    )
)]
pub struct ApiDoc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(client_grant)
        .service(client_revoke_grant)
        .service(revocation_feed)
        .service(bank_api::usage_report)
        .service(bank_api::sandbox_accounts)
        .service(bank_api::sandbox_balances)
        .service(bank_api::sandbox_transactions);
}

/// Where a client authenticates (its failures are throttled per endpoint).
pub trait ClientEndpoint: 'static {
    const NAME: &'static str;
}

/// `/api/v1/grants/{id}`.
#[derive(Debug)]
pub enum GrantsApi {}

impl ClientEndpoint for GrantsApi {
    const NAME: &'static str = "grants-api";
}

/// `/oauth2/revocations`.
#[derive(Debug)]
pub enum Feed {}

impl ClientEndpoint for Feed {
    const NAME: &'static str = "revocations";
}

/// The OAuth client that authenticated this request at `E` (HTTP Basic or its registered
/// method); 401 otherwise, 429 while its failures are blocked.
#[derive(Debug)]
pub struct CallingClient<E>(pub OAuthClient, pub PhantomData<E>);

impl<E: ClientEndpoint> FromRequest for CallingClient<E> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .cloned()
                .ok_or_else(|| ApiError::internal(std::io::Error::other("no AppState")))?;
            let client = client_from(&state, &req, E::NAME).await?;
            Ok(Self(client, PhantomData))
        })
    }
}

async fn client_from(
    state: &AppState,
    req: &HttpRequest,
    endpoint: &'static str,
) -> Result<OAuthClient, ApiError> {
    // The SSF API also takes the tokens of the client_credentials grant (`ssf::access`).
    if endpoint == crate::routes::ssf::Ssf::NAME {
        let bearer = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        if let Some(token) = bearer {
            let now = state.platform.now();
            return state
                .platform
                .db
                .run(move |c| crate::ssf::access::client_of(c, &token, now))
                .await?
                .ok_or(ApiError::Unauthorized);
        }
    }
    crate::routes::oauth::ClientPost::without_form(req)
        .authenticate(state, endpoint)
        .await
        .map_err(|e| match e {
            OAuthError::AuthenticationBlocked(_) => ApiError::TooManyRequests {
                retry_after_secs: 60,
            },
            OAuthError::TemporarilyUnavailable(reason) => ApiError::Overloaded {
                reason,
                retry_after_secs: 1,
            },
            OAuthError::InvalidClient(_) | OAuthError::InvalidRequest(_) => ApiError::Unauthorized,
            other => ApiError::BadRequest(other.description().to_string()),
        })
}

/// A grant as its client sees it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClientGrantView {
    pub grant_id: String,
    #[schema(value_type = platform::storage::models::GrantStatus)]
    pub status: String,
    /// OpenID Grant Management: the grant's actions as a scope (one entry).
    pub scopes: Vec<GrantScope>,
    pub authorization_details: Vec<AccountAccessDetail>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    #[schema(value_type = Option<platform::values::RevokedBy>)]
    pub revoked_by: Option<String>,
}

/// A scope entry of a grant (OpenID Grant Management).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GrantScope {
    /// Space-separated actions.
    pub scope: String,
}

fn ts(t: chrono::NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn load_client_grant(
    state: &AppState,
    client: &OAuthClient,
    id: String,
) -> Result<GrantRecord, ApiError> {
    if id.len() > 64 {
        return Err(ApiError::NotFound("grant"));
    }
    let cid = client.id.clone();
    state
        .platform
        .db
        .run(move |c| crate::oauth::clients::client_grant(c, &cid, &id))
        .await?
        .ok_or(ApiError::NotFound("grant"))
}

/// Status and scope of one of the authenticated client's grants.
#[utoipa::path(get, path = "/api/v1/grants/{id}", tag = "client-grants",
    params(crate::openapi::values::GrantIdPath),
    responses(
        (status = 200, body = ClientGrantView),
        (status = 401, body = platform::problem::Problem),
        (status = 404, description = "Unknown, or another client's grant", body = platform::problem::Problem),
        TooManyAttempts, Unavailable),
    security(("client_basic" = []), ("mutual_tls" = [])))]
#[get("/api/v1/grants/{id}")]
pub async fn client_grant(state: State, id: PathId, caller: GrantsCaller) -> Answer {
    let g = load_client_grant(&state, &caller.0, id.into_inner()).await?;
    let access = AccessRequest::from_stored(&g.authorization_details).ok();
    Ok(no_store_json(&ClientGrantView {
        grant_id: g.id,
        status: g.status,
        scopes: access
            .iter()
            .map(|a| GrantScope {
                scope: a.scope_string(),
            })
            .collect(),
        authorization_details: access.iter().map(AccessRequest::to_detail).collect(),
        created_at: ts(g.created_at),
        expires_at: ts(g.expires_at),
        last_used_at: g.last_used_at.map(ts),
        revoked_at: g.revoked_at.map(ts),
        revoked_by: g.revoked_by,
    }))
}

/// The client ends the consent: the grant is revoked, its refresh tokens invalidated and its
/// tokens put on the revocation list. Idempotent (204 again for an ended grant).
#[utoipa::path(delete, path = "/api/v1/grants/{id}", tag = "client-grants",
    params(crate::openapi::values::GrantIdPath),
    responses(
        (status = 204, description = "Revoked (or already ended)"),
        (status = 401, body = platform::problem::Problem),
        (status = 404, body = platform::problem::Problem),
        TooManyAttempts, Unavailable),
    security(("client_basic" = []), ("mutual_tls" = [])))]
#[delete("/api/v1/grants/{id}")]
pub async fn client_revoke_grant(state: State, id: PathId, caller: GrantsCaller) -> Answer {
    let client = caller.0;
    let grant_id = load_client_grant(&state, &client, id.into_inner())
        .await?
        .id;
    let now = state.platform.now();
    let cid = client.id.clone();
    platform::revocation::write(&state.platform, move |c, r| {
        end_grants(
            c,
            r,
            &[grant_id],
            RevokedBy::Client,
            "revoked_by_client",
            &Actor::client(&cid),
            now,
        )
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct FeedQuery {
    /// Cursor from the previous page's `next_cursor` (0 or absent: from the beginning).
    #[param(minimum = 0)]
    since: Option<i64>,
    /// Page size (default 500).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevocationEntry {
    /// This entry's position in the feed (pass the last one seen as `since`).
    pub cursor: i64,
    pub grant_id: String,
    /// A Biscuit revocation id (hex) when a single token was revoked; absent when the whole
    /// grant ended (every token carrying `grant(<grant_id>)` is then invalid).
    pub revocation_id: Option<String>,
    pub revoked_at: String,
    /// When the entry stops mattering: every token it names has expired by then, so a
    /// verifier may forget it (a little after, if its clock may run behind).
    pub expires_at: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevocationFeed {
    pub revocations: Vec<RevocationEntry>,
    /// Pass as `since` to get what follows.
    pub next_cursor: i64,
    pub has_more: bool,
}

/// Revocation feed for offline verifiers: grant ids and token revocation ids ended since a
/// cursor, in order. Client-authenticated (HTTP Basic).
///
/// Guarantee: entries appear in the order they were committed, and a reader that pages with
/// `since=next_cursor` sees every entry exactly once, whatever the commit order of the
/// transactions that wrote them (positions are assigned to committed entries only, one linker
/// at a time). An entry is retained until its `expires_at` plus one hour; a cursor older than
/// the oldest retained entry stays valid (what was dropped names only expired tokens).
#[utoipa::path(get, path = "/oauth2/revocations", tag = "oauth", params(FeedQuery),
    responses(
        (status = 200, body = RevocationFeed),
        (status = 400, body = platform::problem::Problem),
        (status = 401, body = platform::problem::Problem),
        TooManyAttempts, Unavailable),
    security(("client_basic" = []), ("mutual_tls" = [])))]
#[get("/oauth2/revocations")]
pub async fn revocation_feed(
    state: State,
    q: web::Query<FeedQuery>,
    _client: CallingClient<Feed>,
) -> Answer {
    let since = q.since.unwrap_or(0);
    let limit = q.limit.unwrap_or(500);
    if since < 0 {
        return Err(ApiError::field(
            "since",
            "must be a cursor returned by this endpoint (>= 0)",
        ));
    }
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    let rows = state
        .platform
        .db
        .run(move |c| platform::revocation::read_feed(c, since, limit + 1))
        .await?;
    let has_more = rows.len() as i64 > limit;
    let entries: Vec<RevocationEntry> = rows
        .into_iter()
        .take(limit as usize)
        .map(|r| RevocationEntry {
            cursor: r.position,
            grant_id: r.grant_id,
            revocation_id: r.revocation_id,
            revoked_at: ts(r.revoked_at),
            expires_at: ts(r.expires_at),
        })
        .collect();
    let next_cursor = entries.last().map(|e| e.cursor).unwrap_or(since);
    Ok(no_store_json(&RevocationFeed {
        revocations: entries,
        next_cursor,
        has_more,
    }))
}
