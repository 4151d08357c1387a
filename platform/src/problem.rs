//! One error shape for every JSON API: RFC 9457 problem details (`application/problem+json`).
//!
//! Typed errors become an [`ApiError`] in exactly one place each (`From` impls below); the client
//! sees a clean title and detail, while `Debug`/logs keep the whole cause chain. OAuth endpoints
//! use their own RFC 6749 shape (in the consent crate), not this one.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};

use crate::cache::CacheError;
use crate::storage::StorageError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// RFC 9457 problem details.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "https://consent.example/problems/validation",
    "title": "Invalid request",
    "status": 400,
    "detail": "redirect_uris[0]: must be an absolute https URL"
}))]
pub struct Problem {
    /// A URI identifying the problem type.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short, human-readable summary of the problem type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// Explanation specific to this occurrence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Field-level errors, when the request body failed validation.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<FieldError>,
    /// On server errors (5xx): a random reference to quote to support. It appears in the
    /// server's error log next to the cause; the body itself never says what went wrong inside.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub correlation_id: Option<String>,
}

/// A fresh reference for a server error: logged with its cause, shown to the caller.
pub fn correlation_id() -> String {
    crate::crypto::random_id("err_")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON pointer-ish path of the offending field, e.g. `redirect_uris[0]`.
    pub field: String,
    pub message: String,
}

/// Errors a JSON handler can return.
#[derive(thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    #[error("authentication required")]
    Unauthorized,
    /// A bearer token was refused (RFC 6750 `invalid_token`); the reason is shown to the caller
    /// (it describes their own token) in the problem body and `WWW-Authenticate`.
    #[error("the access token was refused: {0}")]
    InvalidToken(String),
    /// The DPoP proof of a request was refused (RFC 9449 `invalid_dpop_proof`); the reason goes
    /// in the problem body and the `WWW-Authenticate: DPoP` challenge.
    #[error("the DPoP proof was refused: {0}")]
    InvalidDpopProof(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("service temporarily unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A bounded resource is at capacity (503 with `Retry-After`).
    #[error("{reason}")]
    Overloaded {
        reason: String,
        retry_after_secs: u64,
    },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Debug for ApiError {
    // Debug prints the whole cause chain for logs; Display (what clients see) stays clean.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            write!(f, "\n  caused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(e))
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Validation(_) => "validation",
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidToken(_) => "invalid-token",
            ApiError::InvalidDpopProof(_) => "invalid-dpop-proof",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::PayloadTooLarge => "payload-too-large",
            ApiError::TooManyRequests { .. } => "rate-limited",
            ApiError::Unavailable(_) | ApiError::Overloaded { .. } => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn to_problem(&self) -> Problem {
        self.problem_with(None)
    }

    fn problem_with(&self, correlation_id: Option<String>) -> Problem {
        let status = self.status_code();
        let (title, detail, errors) = match self {
            ApiError::Validation(errs) => (
                "Invalid request".to_string(),
                Some(
                    errs.iter()
                        .map(|e| format!("{}: {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                errs.clone(),
            ),
            ApiError::Internal(_) => (
                "Internal server error".to_string(),
                Some(match &correlation_id {
                    Some(id) => format!("an unexpected error occurred; quote {id} to support"),
                    None => "an unexpected error occurred; it has been logged".to_string(),
                }),
                vec![],
            ),
            other => (
                status.canonical_reason().unwrap_or("Error").to_string(),
                Some(other.to_string()),
                vec![],
            ),
        };
        Problem {
            type_uri: format!("/problems/{}", self.slug()),
            title,
            status: status.as_u16(),
            detail,
            errors,
            correlation_id,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::InvalidToken(_) | ApiError::InvalidDpopProof(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // Failures of ours get a reference that ties the caller's report to the logged cause.
        let correlation =
            matches!(self, ApiError::Internal(_) | ApiError::Unavailable(_)).then(correlation_id);
        if let Some(id) = &correlation {
            tracing::error!(correlation_id = %id, error = ?self, "request failed");
        }
        let mut resp = HttpResponse::build(self.status_code());
        resp.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        resp.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        match self {
            ApiError::Unauthorized => {
                resp.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            ApiError::InvalidToken(reason) => {
                let value = format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    quotable(reason)
                );
                resp.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("Bearer")),
                ));
            }
            ApiError::InvalidDpopProof(reason) => {
                resp.insert_header((
                    header::WWW_AUTHENTICATE,
                    dpop_challenge(Some(("invalid_dpop_proof", reason))),
                ));
            }
            ApiError::TooManyRequests { retry_after_secs }
            | ApiError::Overloaded {
                retry_after_secs, ..
            } => {
                resp.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            _ => {}
        }
        resp.body(serde_json::to_string(&self.problem_with(correlation)).unwrap_or_default())
    }
}

/// The `algs` of a `DPoP` challenge (RFC 9449 section 7.1): the proof algorithms accepted.
pub const DPOP_ALGS: &str = "ES256 EdDSA";

/// A `WWW-Authenticate: DPoP` challenge (RFC 9449 section 7.1), with an error code and
/// description when given, and the accepted `algs`.
pub fn dpop_challenge(error: Option<(&str, &str)>) -> HeaderValue {
    let value = match error {
        Some((code, description)) => format!(
            "DPoP error=\"{code}\", error_description=\"{}\", algs=\"{DPOP_ALGS}\"",
            quotable(description)
        ),
        None => format!("DPoP algs=\"{DPOP_ALGS}\""),
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("DPoP"))
}

/// RFC 6750 section 3: challenge parameters are quoted strings; keep them plain printable ASCII.
fn quotable(reason: &str) -> String {
    reason
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => ' ',
        })
        .take(200)
        .collect()
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => ApiError::NotFound("resource"),
            StorageError::Conflict(_) => ApiError::Conflict("the resource already exists".into()),
            StorageError::Unavailable(_) => ApiError::Unavailable(Box::new(e)),
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

impl From<CacheError> for ApiError {
    fn from(e: CacheError) -> Self {
        ApiError::Unavailable(Box::new(e))
    }
}

/// Turns actix's body/query/path extractor failures into 400/413/415 problems (registered as the
/// error handler of `JsonConfig`, `QueryConfig`, `PathConfig` and `FormConfig`).
pub fn json_error(err: actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::ContentType => ApiError::UnsupportedMediaType("expected application/json".into()),
        E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::PayloadTooLarge,
        E::Deserialize(e) if e.is_data() => ApiError::BadRequest(format!("invalid JSON body: {e}")),
        E::Deserialize(e) => ApiError::BadRequest(format!("malformed JSON: {e}")),
        other => ApiError::BadRequest(format!("unreadable body: {other}")),
    }
}

pub fn query_error(err: actix_web::error::QueryPayloadError) -> ApiError {
    ApiError::BadRequest(format!("invalid query string: {err}"))
}

pub fn path_error(err: actix_web::error::PathError) -> ApiError {
    ApiError::BadRequest(format!("invalid path parameter: {err}"))
}

pub fn form_error(err: actix_web::error::UrlencodedError) -> ApiError {
    use actix_web::error::UrlencodedError as E;
    match err {
        E::ContentType => {
            ApiError::UnsupportedMediaType("expected application/x-www-form-urlencoded".into())
        }
        E::Overflow { .. } | E::UnknownLength => ApiError::PayloadTooLarge,
        other => ApiError::BadRequest(format!("invalid form body: {other}")),
    }
}

/// Declares documented error responses: for each `Name(Body) = status, "description";` a
/// `pub struct Name(pub Body)` that an operation names in its `responses(...)` list
/// (`responses((status = 200, ...), NotLoggedIn)`). `Body` is the type of the answer's body (a
/// [`Problem`], or another error shape such as an OAuth error), named by a single identifier in
/// scope; the caller's crate needs `utoipa`.
#[macro_export]
macro_rules! documented_responses {
    ($($(#[$doc:meta])* $name:ident($body:ident) = $status:literal, $description:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, utoipa::IntoResponses)]
        #[response(status = $status, description = $description)]
        pub struct $name(pub $body);
    )*};
}

/// Error responses that many operations document alike, written once: name one in an operation's
/// `responses(...)` list (`responses((status = 200, ...), NotLoggedIn)`); each is a [`Problem`].
pub mod documented {
    use super::Problem;

    crate::documented_responses! {
        /// The portal API without a developer's bearer token.
        NoDeveloperToken(Problem) = 401, "Missing or invalid bearer token";
        /// The staff API without a staff bearer token.
        NoStaffToken(Problem) = 401, "Missing or invalid staff token";
        /// The customer API without a session cookie.
        NotLoggedIn(Problem) = 401, "Not logged in";
        /// A state-changing customer call without the session's CSRF header.
        NoCsrfHeader(Problem) = 403, "Missing or wrong X-CSRF-Token";
        /// A client id that is not one of the calling developer's.
        NotYourClient(Problem) = 404, "No such client of yours";
        /// A grant id that is not one of the calling customer's.
        NotYourGrant(Problem) = 404, "No such grant for this customer";
        /// A body that is not the documented JSON.
        Malformed(Problem) = 400, "Malformed request";
        /// Login attempts over the limit for the account or the address.
        TooManyAttempts(Problem) = 429, "Too many attempts (see Retry-After)";
        /// A body over the size every endpoint accepts.
        TooLarge(Problem) = 413, "Body too large";
        /// Storage or a dependency is down, or the service is at capacity.
        Unavailable(Problem) = 503, "Temporarily unavailable (see Retry-After)";
        /// A body of another content type than the documented one.
        UnsupportedType(Problem) = 415, "Body of an unsupported content type";
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[test]
    fn internal_errors_hide_their_cause_from_clients_but_not_from_logs() {
        let e = ApiError::internal(std::io::Error::other("disk on fire at /var/secret"));
        let p = e.to_problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.unwrap().contains("disk"));
        assert!(format!("{e:?}").contains("disk on fire"));
        // The answer carries a reference to the logged cause, and nothing of the cause.
        let body = e.error_response().into_body().try_into_bytes().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let id = v["correlation_id"].as_str().unwrap();
        assert!(id.starts_with("err_") && id.len() > 20, "{v}");
        assert!(v["detail"].as_str().unwrap().contains(id));
        assert!(!String::from_utf8_lossy(&body).contains("disk"));
        let unavailable = ApiError::Unavailable(Box::new(std::io::Error::other("10.0.0.5:5432")));
        let body = unavailable
            .error_response()
            .into_body()
            .try_into_bytes()
            .unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("10.0.0.5"));
        assert!(String::from_utf8_lossy(&body).contains("correlation_id"));
    }

    #[test]
    fn problems_have_the_documented_shape() {
        let resp = ApiError::field("redirect_uris[0]", "must be https").error_response();
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.headers().get("content-type").unwrap(), PROBLEM_JSON);
        let body = resp.into_body().try_into_bytes().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "/problems/validation");
        assert_eq!(v["status"], 400);
        assert_eq!(v["errors"][0]["field"], "redirect_uris[0]");
        let resp = ApiError::TooManyRequests {
            retry_after_secs: 7,
        }
        .error_response();
        assert_eq!(resp.headers().get("retry-after").unwrap(), "7");
        let resp = ApiError::Overloaded {
            reason: "busy".into(),
            retry_after_secs: 1,
        }
        .error_response();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
        let resp =
            ApiError::InvalidToken("block 1: 65 facts, \"more\"\nthan 64".into()).error_response();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.headers().get("www-authenticate").unwrap(),
            "Bearer error=\"invalid_token\", error_description=\"block 1: 65 facts,  more  than 64\""
        );
    }

    #[test]
    fn storage_errors_map_in_one_place() {
        assert_eq!(ApiError::from(StorageError::NotFound).status_code(), 404);
        assert_eq!(
            ApiError::from(StorageError::Conflict("x".into())).status_code(),
            409
        );
        assert_eq!(
            ApiError::from(StorageError::Unavailable("pool".into())).status_code(),
            503
        );
    }
}
