//! The resource-server side: the sandbox bank API (`/sandbox/v1`) and usage reports
//! (`/api/v1/usage`), which verify Biscuits offline through the `grants` crate's public API only
//! (the published key document and the synced revocation list), on the verification pool.

use platform::web::no_store_json;
use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, get, post, web};
use chrono::SubsecRound;
use grants::dpop::{DpopError, ProofContext};
use grants::error::VerifyError;
use grants::{AccountId, Action, MerchantId, Request, TxWindow, Verifier};
use platform::problem::documented::Malformed;
use platform::problem::{ApiError, Problem};
use platform::web::mtls::presented_thumbprint;
use platform::web::{TokenScheme, presented_token};
use serde::Deserialize;

use crate::AppState;
use crate::oauth::dpop;
use crate::oauth::rar::parse_instant;
use crate::routes::State;
use crate::sandbox::{self, AccountView, BalanceView, TransactionView};

platform::documented_responses! {
    /// The answers of the sandbox API that every operation shares.
    TokenRefused(Problem) = 401,
        "Missing, invalid, expired or revoked token, a bound token without its DPoP \
         proof, or a refused proof";
    NotPermitted(Problem) = 403, "The token does not allow the operation";
    NoSuchAccount(Problem) = 404, "No such account of the customer's";
    VerifierBusy(Problem) = 503,
        "Verification at capacity (Retry-After) or revocation state unavailable";
}

/// Maps a verification failure to the resource-server answer (RFC 6750 and RFC 9449 semantics):
/// what the token does not allow is 403; a token that is not acceptable at all (bad signature,
/// expired, revoked, over the verification limits, a bound token without its proof) is 401 with
/// the reason; a refused DPoP proof is 401 `invalid_dpop_proof`; an unknown revocation state or
/// an unreachable replay store is 503.
fn refuse(e: VerifyError) -> ApiError {
    match e {
        VerifyError::Denied(reason) => {
            ApiError::Forbidden(format!("the token does not allow this: {reason}"))
        }
        VerifyError::RevocationUnavailable(_)
        | VerifyError::Dpop(DpopError::ReplayStoreUnavailable(_)) => {
            ApiError::Unavailable(Box::new(e))
        }
        VerifyError::Dpop(proof) => {
            tracing::info!(error = %proof, "sandbox: DPoP proof refused");
            ApiError::InvalidDpopProof(proof.to_string())
        }
        VerifyError::ProofRequired => ApiError::InvalidToken(
            "the token is bound to a DPoP key: present it as `Authorization: DPoP` with a proof"
                .into(),
        ),
        VerifyError::NotBound => ApiError::InvalidToken(
            "the token is not bound to a DPoP key: present it as a Bearer token".into(),
        ),
        other => {
            tracing::info!(error = %other, "sandbox: token refused");
            ApiError::InvalidToken(other.to_string())
        }
    }
}

/// A resource-server refusal: an [`ApiError`] whose 401 answers speak DPoP too (RFC 9449
/// section 7.1). A request that used the DPoP scheme gets its `invalid_token` in a `DPoP`
/// challenge; any other 401 offers the `DPoP` scheme beside the `Bearer` challenge.
#[derive(Debug)]
pub struct Refusal {
    error: ApiError,
    /// The request presented its token with the DPoP scheme.
    dpop: bool,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl<E: Into<ApiError>> From<E> for Refusal {
    fn from(e: E) -> Self {
        Refusal {
            error: e.into(),
            dpop: false,
        }
    }
}

impl actix_web::ResponseError for Refusal {
    fn status_code(&self) -> actix_web::http::StatusCode {
        self.error.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        use actix_web::http::header::WWW_AUTHENTICATE;
        let mut resp = self.error.error_response();
        if resp.status() != actix_web::http::StatusCode::UNAUTHORIZED {
            return resp;
        }
        match &self.error {
            ApiError::InvalidDpopProof(_) => {}
            ApiError::InvalidToken(reason) if self.dpop => {
                let challenge = platform::problem::dpop_challenge(Some(("invalid_token", reason)));
                resp.headers_mut().insert(WWW_AUTHENTICATE, challenge);
            }
            _ => {
                let challenge = platform::problem::dpop_challenge(None);
                resp.headers_mut().append(WWW_AUTHENTICATE, challenge);
            }
        }
        resp
    }
}

/// The access token of a resource request: `Authorization: Bearer <token>`, or
/// `Authorization: DPoP <token>` with its `DPoP` proof header, and what else of the request its
/// verification needs. Tokens in the query string are refused, never read.
#[derive(Debug)]
pub struct AccessToken {
    pub token: String,
    /// The `DPoP` proof, for a token presented with the DPoP scheme.
    pub proof: Option<String>,
    /// The thumbprint of the connection's TLS client certificate, if any.
    thumbprint: Option<String>,
    /// The request's method and path, which a DPoP proof must name.
    method: String,
    path: String,
}

impl FromRequest for AccessToken {
    type Error = Refusal;
    type Future = Ready<Result<Self, Refusal>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(access_token(req).map_err(Refusal::from))
    }
}

fn access_token(req: &HttpRequest) -> Result<AccessToken, ApiError> {
    let in_query = url::form_urlencoded::parse(req.query_string().as_bytes())
        .any(|(k, _)| k == "access_token" || k == "token");
    if in_query {
        return Err(ApiError::BadRequest(
            "tokens are not accepted in the query string; use the Authorization header".into(),
        ));
    }
    let (scheme, token) = presented_token(req).ok_or(ApiError::Unauthorized)?;
    let proof = dpop::proof_header(req.headers()).map_err(ApiError::InvalidDpopProof)?;
    let proof = match (scheme, proof) {
        (TokenScheme::Bearer, None) => None,
        (TokenScheme::Dpop, Some(proof)) => Some(proof.to_string()),
        (TokenScheme::Dpop, None) => {
            return Err(ApiError::InvalidDpopProof(
                "a DPoP proof header is required with the DPoP scheme".into(),
            ));
        }
        (TokenScheme::Bearer, Some(_)) => {
            return Err(ApiError::InvalidDpopProof(
                "a DPoP proof goes with `Authorization: DPoP`, not Bearer".into(),
            ));
        }
    };
    Ok(AccessToken {
        token: token.to_string(),
        proof,
        thumbprint: presented_thumbprint(req),
        method: req.method().as_str().to_string(),
        path: req.path().to_string(),
    })
}

/// Verifies offline, through grants' public API, on the verification pool (never on this HTTP
/// worker, never holding a database connection): the KeySet of the published keys (built once
/// per key reload, not per request) and the local revocation list (which fails closed when
/// stale). A DPoP-presented token also needs its proof, for this method and URL, signed by the
/// key the token is bound to; the proof's single use is recorded in the shared cache once the
/// token verified.
async fn verify(
    state: &AppState,
    presented: AccessToken,
    request: Request,
) -> Result<grants::Authorization, Refusal> {
    let dpop = presented.proof.is_some();
    verify_presented(state, presented, request)
        .await
        .map_err(|error| Refusal { error, dpop })
}

async fn verify_presented(
    state: &AppState,
    presented: AccessToken,
    request: Request,
) -> Result<grants::Authorization, ApiError> {
    let keys = state.oauth.keys.current().keyset;
    let cache = state.oauth.decoded.clone();
    let list = state.revocations.clone();
    let check = move |grant: &grants::GrantId,
                      ids: &[String]|
          -> Result<bool, grants::error::RevocationLookupError> {
        list.is_revoked(grant.as_str(), ids)
            .map_err(grants::error::RevocationLookupError)
    };
    let AccessToken {
        token,
        proof,
        thumbprint,
        method,
        path,
    } = presented;
    // A certificate-bound token (`cnf_x5t`) verifies only over a connection with its certificate.
    let request = match thumbprint {
        Some(thumbprint) => request.client_certificate(thumbprint),
        None => request,
    };
    let busy = |busy: crate::verification::Busy| ApiError::Overloaded {
        reason: busy.to_string(),
        retry_after_secs: 1,
    };
    let Some(proof) = proof else {
        return state
            .oauth
            .verify
            .run(move || {
                Verifier::new(keys, RevocationFn(check))
                    .with_cache(cache)
                    .verify(&token, &request)
            })
            .await
            .map_err(busy)?
            .map_err(refuse);
    };
    let (url, now) = (state.oauth.proof_url(&path), request.now);
    let pending = state
        .oauth
        .verify
        .run(move || {
            let ctx = ProofContext::new(&method, &url, now);
            Verifier::new(keys, RevocationFn(check))
                .with_cache(cache)
                .verify_dpop_pending(&token, &request, &proof, ctx)
        })
        .await
        .map_err(busy)?
        .map_err(refuse)?;
    let first = state
        .oauth
        .first_use(pending.replay_entry(), now)
        .await
        .map_err(|e| ApiError::Unavailable(Box::new(e)))?;
    pending.accept(first).map_err(refuse)
}

/// Adapter: a fallible closure as a `RevocationCheck`.
struct RevocationFn<F>(F);

impl<F> grants::RevocationCheck for RevocationFn<F>
where
    F: Fn(&grants::GrantId, &[String]) -> Result<bool, grants::error::RevocationLookupError>,
{
    fn is_revoked(
        &self,
        grant: &grants::GrantId,
        ids: &[String],
    ) -> Result<bool, grants::error::RevocationLookupError> {
        (self.0)(grant, ids)
    }
}

async fn report(state: &AppState, auth: &grants::Authorization, what: String) {
    let (grant, client) = (
        auth.scope.grant.as_str().to_string(),
        auth.scope.client.as_str().to_string(),
    );
    let now = state.platform.now();
    if let Err(e) = state
        .platform
        .db
        .write(move |c| sandbox::report_usage(c, &grant, &client, &what, true, now))
        .await
    {
        tracing::warn!(error = %e, "usage report failed");
    }
}

/// What a resource server served under a token.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// The operation served, e.g. `transactions:read`; the token must allow it.
    pub operation: String,
}

/// A resource server reports that it served data under a Biscuit (sent as the bearer token,
/// exactly as the client presented it; a DPoP-bound token needs a proof of its key for this
/// request like any other, so it is the client that reports it, and a thief holding only the
/// token can neither read data nor keep the grant alive). The grant counts as used, which keeps it from dormancy
/// revocation, and the read appears in the customer's activity. The token is verified like any
/// request (signature, expiry, revocation, the operation allowed); reports are recorded at most
/// once a minute per grant (`last_used_at` and one activity entry), so repeated reports cost a
/// verification and one conditional UPDATE, nothing more.
#[utoipa::path(post, path = "/api/v1/usage", tag = "client-grants",
    request_body = UsageReport,
    responses((status = 204, description = "Recorded"),
        (status = 400, description = "Malformed body or unknown operation", body = platform::problem::Problem),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = platform::problem::Problem),
        (status = 403, description = "The token does not allow the operation", body = platform::problem::Problem),
        (status = 503, description = "Revocation state or database unavailable", body = platform::problem::Problem)),
    security(("biscuit" = [])))]
#[post("/api/v1/usage")]
pub async fn usage_report(
    state: State,
    body: web::Bytes,
    token: AccessToken,
) -> Result<HttpResponse, Refusal> {
    let report: UsageReport = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed usage report: {e}")))?;
    let operation = match Action::parse(&report.operation) {
        Ok(Action::Other(_)) => Err(
            "unknown operation: use accounts:read, balances:read or transactions:read".to_string(),
        ),
        Ok(a) => Ok(a),
        Err(e) => Err(e.to_string()),
    }
    .map_err(|e| ApiError::field("operation", e))?;
    let now = state.platform.now();
    let auth = verify(&state, token, Request::new(operation.clone(), now)).await?;
    let (grant, client) = (
        auth.scope.grant.as_str().to_string(),
        auth.scope.client.as_str().to_string(),
    );
    let now = state.platform.now();
    let what = operation
        .as_str()
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string();
    state
        .platform
        .db
        .write(move |c| sandbox::report_usage(c, &grant, &client, &what, false, now))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

fn account_param(raw: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(raw.to_string()).map_err(|e| ApiError::field("id", e.to_string()))
}

/// The accounts the token allows (attenuation included).
#[utoipa::path(get, path = "/sandbox/v1/accounts", tag = "sandbox",
    responses((status = 200, body = [AccountView]), TokenRefused, NotPermitted, VerifierBusy),
    security(("biscuit" = [])))]
#[get("/sandbox/v1/accounts")]
pub async fn sandbox_accounts(state: State, token: AccessToken) -> Result<HttpResponse, Refusal> {
    let auth = verify(
        &state,
        token,
        Request::new(Action::AccountsRead, state.platform.now()),
    )
    .await?;
    let subject = auth.scope.subject.as_str().to_string();
    let allowed: Vec<String> = auth
        .scope
        .accounts
        .iter()
        .map(|a| a.as_str().to_string())
        .collect();
    let list = state
        .platform
        .db
        .run(move |c| sandbox::accounts_of(c, &subject, &allowed))
        .await?;
    report(&state, &auth, "accounts".into()).await;
    Ok(no_store_json(&list))
}

/// Balance of one account.
#[utoipa::path(get, path = "/sandbox/v1/accounts/{id}/balances", tag = "sandbox",
    params(("id" = String, Path, description = "Account id", pattern = "^acc_[A-Za-z0-9_-]+$", max_length = 64)),
    responses((status = 200, body = BalanceView), Malformed, TokenRefused, NotPermitted, NoSuchAccount, VerifierBusy),
    security(("biscuit" = [])))]
#[get("/sandbox/v1/accounts/{id}/balances")]
pub async fn sandbox_balances(
    state: State,
    id: web::Path<String>,
    token: AccessToken,
) -> Result<HttpResponse, Refusal> {
    let account = account_param(&id)?;
    let auth = verify(
        &state,
        token,
        Request::new(Action::BalancesRead, state.platform.now()).account(account.clone()),
    )
    .await?;
    let subject = auth.scope.subject.as_str().to_string();
    let acc = account.as_str().to_string();
    let balance = state
        .platform
        .db
        .run(move |c| sandbox::balance(c, &subject, &acc))
        .await?
        .ok_or(ApiError::NotFound("account"))?;
    report(&state, &auth, format!("balances:{}", account.as_str())).await;
    Ok(no_store_json(&balance))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct TxQuery {
    /// Start (RFC 3339 or YYYY-MM-DD); default: the token's window start.
    from: Option<String>,
    /// End, inclusive (RFC 3339 or YYYY-MM-DD); default: the token's window end.
    to: Option<String>,
    /// Only this merchant.
    #[param(pattern = "^m_[A-Za-z0-9_-]+$", max_length = 64)]
    merchant: Option<String>,
    /// At most this many (default 100), newest first.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// Transactions of one account, within the token's window and merchants.
#[utoipa::path(get, path = "/sandbox/v1/accounts/{id}/transactions", tag = "sandbox",
    params(("id" = String, Path, description = "Account id", pattern = "^acc_[A-Za-z0-9_-]+$", max_length = 64), TxQuery),
    responses((status = 200, body = [TransactionView]), Malformed, TokenRefused, NotPermitted, NoSuchAccount, VerifierBusy),
    security(("biscuit" = [])))]
#[get("/sandbox/v1/accounts/{id}/transactions")]
pub async fn sandbox_transactions(
    state: State,
    id: web::Path<String>,
    q: web::Query<TxQuery>,
    token: AccessToken,
) -> Result<HttpResponse, Refusal> {
    let account = account_param(&id)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 500").into());
    }
    let from = q
        .from
        .as_deref()
        .map(|f| parse_instant(f, false))
        .transpose()
        .map_err(|e| ApiError::field("from", e))?;
    let to =
        q.to.as_deref()
            .map(|t| parse_instant(t, true))
            .transpose()
            .map_err(|e| ApiError::field("to", e))?;
    let merchant = q
        .merchant
        .as_deref()
        .map(|m| MerchantId::parse(m.to_string()))
        .transpose()
        .map_err(|e| ApiError::field("merchant", e.to_string()))?;
    let now = state.platform.now();
    let mut request = Request::new(Action::TransactionsRead, now).account(account.clone());
    if let (Some(f), Some(t)) = (from, to) {
        request = request.tx_range(
            TxWindow::new(f.trunc_subsecs(0), t.trunc_subsecs(0))
                .map_err(|e| ApiError::field("from", e.to_string()))?,
        );
    } else if from.is_some() || to.is_some() {
        return Err(ApiError::field("from", "give both from and to, or neither").into());
    }
    if let Some(m) = &merchant {
        request = request.merchant(m.clone());
    }
    let auth = verify(&state, token, request).await?;
    // Filter by the effective scope: the window (intersected with the request) and merchants.
    let scope = &auth.scope;
    let (mut lo, mut hi) = (from, to);
    if let Some(w) = &scope.window {
        lo = Some(lo.map_or(w.from(), |f| f.max(w.from())));
        hi = Some(hi.map_or(w.until(), |t| t.min(w.until())));
    }
    let merchants: Option<Vec<String>> = match (&merchant, &scope.merchants) {
        (Some(m), _) => Some(vec![m.as_str().to_string()]),
        (None, Some(list)) => Some(list.iter().map(|m| m.as_str().to_string()).collect()),
        (None, None) => None,
    };
    let subject = scope.subject.as_str().to_string();
    let acc = account.as_str().to_string();
    let txs = state
        .platform
        .db
        .run(move |c| {
            sandbox::transactions_of(c, &subject, &acc, lo, hi, merchants.as_deref(), limit)
        })
        .await?
        .ok_or(ApiError::NotFound("account"))?;
    report(&state, &auth, format!("transactions:{}", account.as_str())).await;
    Ok(no_store_json(&txs))
}
