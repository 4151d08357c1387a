//! The second factor on the JSON API: enrolment (staff at their first login, developers when
//! they choose) and the code that completes a login. See [`crate::second_factor`].

use actix_web::{HttpResponse, web};
use platform::config::Secret;
use platform::problem::documented::{NoDeveloperToken, TooManyAttempts};
use platform::problem::{ApiError, Problem};
use platform::session::{SecondFactorDue, SessionKind};
use platform::web::auth::{Audience, Developer, OwingBearer, Staff};
use platform::web::no_store_json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Data;
use super::accounts::TokenResponse;
use crate::auth::DeveloperAuth;
use crate::second_factor::{self, Enrolment};
use crate::{accounts, error::read};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorCode {
    /// The authenticator's current six digits, or (to log in only) an unused recovery code.
    #[schema(value_type = String, example = "123456")]
    pub code: Secret<String>,
}

/// What a staff member's enrolment needs besides the login token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaffEnrolmentRequest {
    /// The one-time enrolment code the operator handed over with the password (printed by
    /// `consent admin create` and `consent admin reset-second-factor`; good for 72 hours).
    #[schema(value_type = String, example = "abcd-efgh-ijkl-mnop")]
    pub enrolment_code: Secret<String>,
}

/// What a developer's enrolment needs besides the session: the current password again, so that
/// a stolen session cannot set up an authenticator (and lock the owner out).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeveloperEnrolmentRequest {
    #[schema(value_type = String)]
    pub password: Secret<String>,
}

/// A started enrolment: put the secret into an authenticator app (typed in, or as the
/// `otpauth://` link), then confirm with its first code. Shown once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrolmentResponse {
    /// The shared secret, base32.
    #[schema(value_type = String)]
    pub secret: Secret<String>,
    /// `otpauth://totp/...` (Key Uri Format: SHA-1, 6 digits, 30 seconds).
    #[schema(value_type = String)]
    pub otpauth_uri: Secret<String>,
}

impl From<Enrolment> for EnrolmentResponse {
    fn from(e: Enrolment) -> Self {
        Self {
            secret: Secret::new(e.secret.to_string()),
            otpauth_uri: Secret::new(e.uri.to_string()),
        }
    }
}

/// Enrolment confirmed: the recovery codes (each logs in once in place of a code; shown once,
/// stored hashed) and, for a login that owed enrolment, the full session's token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrolledResponse {
    #[schema(value_type = Vec<String>)]
    pub recovery_codes: Secret<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<TokenResponse>,
}

/// Whether the developer has an authenticator set up.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SecondFactorStatus {
    pub enrolled: bool,
    pub recovery_codes_left: i64,
}

platform::documented_responses! {
    /// A wrong, malformed or already used code (nothing changes; it counts towards the limit).
    WrongCode(Problem) = 400, "Wrong or already used code";
    /// A token that does not owe a second factor (or owes something else).
    NoOwingToken(Problem) = 401, "Missing or invalid login token that owes a second factor";
}

fn owed<A: Audience>(
    owing: &platform::web::auth::Owing<A>,
    due: SecondFactorDue,
) -> Result<(), ApiError> {
    if owing.due == due {
        Ok(())
    } else {
        Err(match due {
            SecondFactorDue::Enrol => {
                ApiError::Conflict("a second factor is already set up".into())
            }
            SecondFactorDue::Verify => ApiError::Forbidden("set up a second factor first".into()),
        })
    }
}

async fn pay<A: Audience>(
    p: &Data,
    OwingBearer(owing): OwingBearer<A>,
    body: SecondFactorCode,
) -> Result<HttpResponse, ApiError> {
    owed(&owing, SecondFactorDue::Verify)?;
    let l = second_factor::pay(p, owing.session, owing.due, body.code.expose().clone()).await?;
    Ok(no_store_json(&TokenResponse::of(&l)))
}

/// Complete a developer login with the authenticator's code (or a recovery code): answers the
/// full bearer token; the login token ends.
#[utoipa::path(post, path = "/api/v1/developers/login/second-factor", tag = "developers",
    security(("developer_token" = [])),
    request_body = SecondFactorCode,
    responses((status = 200, description = "Logged in", body = TokenResponse),
        WrongCode, NoOwingToken, TooManyAttempts))]
pub async fn developer_second_factor_login(
    p: Data,
    body: web::Json<SecondFactorCode>,
    owing: OwingBearer<Developer>,
) -> Result<HttpResponse, ApiError> {
    pay(&p, owing, body.into_inner()).await
}

/// Complete a staff login with the authenticator's code (or a recovery code): answers the full
/// bearer token for `/api/v1/admin`; the login token ends.
#[utoipa::path(post, path = "/api/v1/admin/login/second-factor", tag = "staff",
    security(("staff_token" = [])),
    request_body = SecondFactorCode,
    responses((status = 200, description = "Logged in", body = TokenResponse),
        WrongCode, NoOwingToken,
        (status = 403, description = "No authenticator yet: enrol first", body = platform::problem::Problem),
        TooManyAttempts))]
pub async fn staff_second_factor_login(
    p: Data,
    body: web::Json<SecondFactorCode>,
    owing: OwingBearer<Staff>,
) -> Result<HttpResponse, ApiError> {
    pay(&p, owing, body.into_inner()).await
}

/// Set up the staff member's authenticator, with the login token of a staff member who has none
/// (`second_factor_due: enrol`) and the enrolment code the operator handed over: answers the
/// secret. Starting again replaces an unconfirmed one; only this login token may confirm it.
#[utoipa::path(post, path = "/api/v1/admin/second-factor", tag = "staff",
    security(("staff_token" = [])),
    request_body = StaffEnrolmentRequest,
    responses((status = 200, description = "Secret to put into an authenticator app", body = EnrolmentResponse),
        (status = 400, description = "Missing, wrong or expired enrolment code (it counts towards the limit), or a malformed body", body = Problem),
        NoOwingToken,
        (status = 409, description = "Already set up", body = Problem),
        TooManyAttempts))]
pub async fn staff_enrol(
    p: Data,
    OwingBearer(owing): OwingBearer<Staff>,
    body: Result<web::Json<StaffEnrolmentRequest>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    // The token first: without one the answer is 401, whatever the body.
    owed(&owing, SecondFactorDue::Enrol)?;
    let body = match body {
        Ok(body) => body,
        Err(refused) => return Ok(refused.error_response()),
    };
    let label = staff_label(&p, owing.session.subject_id.clone()).await?;
    let code = body.into_inner().enrolment_code.expose().clone();
    let e = second_factor::begin(&p, &owing.session, label, Some(code)).await?;
    Ok(no_store_json(&EnrolmentResponse::from(e)))
}

async fn staff_label(p: &Data, id: String) -> Result<String, ApiError> {
    Ok(read(p, move |c| Ok(accounts::staff_member(c, &id)?.username)).await?)
}

/// Confirm the staff member's authenticator with its first code: answers the recovery codes and
/// the full bearer token; the login token ends.
#[utoipa::path(post, path = "/api/v1/admin/second-factor/confirm", tag = "staff",
    security(("staff_token" = [])),
    request_body = SecondFactorCode,
    responses((status = 200, description = "Set up; logged in", body = EnrolledResponse),
        WrongCode, NoOwingToken,
        (status = 409, description = "No enrolment started, or already set up", body = platform::problem::Problem),
        TooManyAttempts))]
pub async fn staff_confirm(
    p: Data,
    body: web::Json<SecondFactorCode>,
    OwingBearer(owing): OwingBearer<Staff>,
) -> Result<HttpResponse, ApiError> {
    owed(&owing, SecondFactorDue::Enrol)?;
    let code = body.into_inner().code.expose().clone();
    let done = second_factor::confirm(&p, owing.session, true, code).await?;
    Ok(no_store_json(&enrolled(done)))
}

fn enrolled(done: second_factor::Enrolled) -> EnrolledResponse {
    EnrolledResponse {
        recovery_codes: Secret::new(done.recovery_codes.iter().map(|c| c.to_string()).collect()),
        session: done.upgraded.as_ref().map(TokenResponse::of),
    }
}

/// Whether the developer has an authenticator set up.
#[utoipa::path(get, path = "/api/v1/developers/me/second-factor", tag = "developers",
    security(("developer_token" = [])),
    responses((status = 200, description = "Second factor", body = SecondFactorStatus),
        NoDeveloperToken))]
pub async fn developer_status(
    p: Data,
    auth: DeveloperAuth,
) -> Result<web::Json<SecondFactorStatus>, ApiError> {
    let (enrolled, recovery_codes_left) =
        second_factor::status(&p, SessionKind::Developer, auth.session.subject_id.clone()).await?;
    Ok(web::Json(SecondFactorStatus {
        enrolled,
        recovery_codes_left,
    }))
}

/// Start setting up an authenticator for the developer's logins, with the current password:
/// answers the secret. Only this session may confirm it.
#[utoipa::path(post, path = "/api/v1/developers/me/second-factor", tag = "developers",
    security(("developer_token" = [])),
    request_body = DeveloperEnrolmentRequest,
    responses((status = 200, description = "Secret to put into an authenticator app", body = EnrolmentResponse),
        (status = 400, description = "Missing or wrong password (it counts towards the limit), or a malformed body", body = Problem),
        NoDeveloperToken,
        (status = 409, description = "Already set up", body = Problem),
        TooManyAttempts))]
pub async fn developer_enrol(
    p: Data,
    auth: DeveloperAuth,
    body: Result<web::Json<DeveloperEnrolmentRequest>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    // The token first: without one the answer is 401, whatever the body.
    let body = match body {
        Ok(body) => body,
        Err(refused) => return Ok(refused.error_response()),
    };
    let password = body.into_inner().password.expose().clone();
    let id = auth.session.subject_id.clone();
    let label = {
        let id = id.clone();
        read(&p, move |c| Ok(accounts::developer(c, &id)?.email)).await?
    };
    let e = second_factor::begin(&p, &auth.session, label, Some(password)).await?;
    Ok(no_store_json(&EnrolmentResponse::from(e)))
}

/// Confirm the developer's authenticator with its first code: from the next login on, a code is
/// due after the password. Answers the recovery codes.
#[utoipa::path(post, path = "/api/v1/developers/me/second-factor/confirm", tag = "developers",
    security(("developer_token" = [])),
    request_body = SecondFactorCode,
    responses((status = 200, description = "Set up", body = EnrolledResponse),
        WrongCode, NoDeveloperToken,
        (status = 409, description = "No enrolment started, or already set up", body = platform::problem::Problem),
        TooManyAttempts))]
pub async fn developer_confirm(
    p: Data,
    body: web::Json<SecondFactorCode>,
    auth: DeveloperAuth,
) -> Result<HttpResponse, ApiError> {
    let code = body.into_inner().code.expose().clone();
    let done = second_factor::confirm(&p, auth.session.clone(), false, code).await?;
    Ok(no_store_json(&enrolled(done)))
}

/// Remove the developer's authenticator (and recovery codes), proven with a current code.
#[utoipa::path(post, path = "/api/v1/developers/me/second-factor/removal", tag = "developers",
    security(("developer_token" = [])),
    request_body = SecondFactorCode,
    responses((status = 204, description = "Removed"),
        WrongCode, NoDeveloperToken, TooManyAttempts))]
pub async fn developer_remove(
    p: Data,
    body: web::Json<SecondFactorCode>,
    auth: DeveloperAuth,
) -> Result<HttpResponse, ApiError> {
    let id = auth.session.subject_id.clone();
    second_factor::remove_for(
        &p,
        SessionKind::Developer,
        id,
        body.into_inner().code.expose().clone(),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
