//! The portal's service error, and its one mapping to HTTP problem details.

use platform::crypto::CryptoError;
use platform::problem::{ApiError, FieldError};
use platform::ratelimit::Decision;
use platform::revocation::Revocations;
use platform::storage::{AnyConnection, StorageError};

use crate::approvals::ApprovalError;

/// What a portal service can refuse or fail with. Display is safe to show to the caller (it never
/// contains PII or secrets); Debug keeps the cause for logs.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("too many attempts; retry after {0} seconds")]
    RateLimited(u64),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cryptographic failure")]
    Crypto(#[from] CryptoError),
}

impl PortalError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        PortalError::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }
}

impl From<diesel::result::Error> for PortalError {
    fn from(e: diesel::result::Error) -> Self {
        PortalError::Storage(e.into())
    }
}

impl From<ApprovalError> for PortalError {
    fn from(e: ApprovalError) -> Self {
        match e {
            ApprovalError::NotFound => PortalError::NotFound("approval request"),
            ApprovalError::SelfApproval => PortalError::Forbidden(
                "a request cannot be approved by the staff member who made it".into(),
            ),
            e @ ApprovalError::WrongRole(_) => PortalError::Forbidden(e.to_string()),
            ApprovalError::RequesterInactive | ApprovalError::ApproverInactive => {
                PortalError::Forbidden("staff member is not active".into())
            }
            ApprovalError::Expired => {
                PortalError::Conflict("the approval request has expired".into())
            }
            ApprovalError::AlreadyDecided(status) => {
                PortalError::Conflict(format!("the approval request is already {status}"))
            }
            ApprovalError::Invalid(field, msg) => PortalError::field(field, msg),
            ApprovalError::Storage(s) => PortalError::Storage(s),
        }
    }
}

impl From<PortalError> for ApiError {
    fn from(e: PortalError) -> Self {
        match e {
            PortalError::Validation(errs) => ApiError::Validation(errs),
            PortalError::InvalidCredentials => ApiError::Unauthorized,
            PortalError::Forbidden(m) => ApiError::Forbidden(m),
            PortalError::NotFound(what) => ApiError::NotFound(what),
            PortalError::Conflict(m) => ApiError::Conflict(m),
            PortalError::RateLimited(s) => ApiError::TooManyRequests {
                retry_after_secs: s,
            },
            PortalError::Storage(s) => ApiError::from(s),
            PortalError::Crypto(c) => ApiError::internal(c),
        }
    }
}

pub type PortalResult<T> = Result<T, PortalError>;

/// Runs `f` in one write transaction (see [`platform::storage::Db::write`]); any error, including
/// a refusal decided half-way, rolls every write back.
pub fn transaction<T, F>(conn: &mut AnyConnection, f: F) -> PortalResult<T>
where
    F: FnOnce(&mut AnyConnection) -> PortalResult<T>,
{
    platform::storage::write_tx_as(conn, f)
}

/// [`transaction`] on the blocking pool of `platform`'s database.
pub async fn write<T, F>(platform: &platform::Platform, f: F) -> PortalResult<T>
where
    T: Send + 'static,
    F: FnOnce(&mut AnyConnection) -> PortalResult<T> + Send + 'static,
{
    platform
        .db
        .run(move |conn| Ok(transaction(conn, f)))
        .await?
}

/// [`write`] for actions that end grants: once the transaction has committed, what `f` revoked
/// is announced to every instance (see [`platform::revocation::run`]).
pub async fn write_revoking<T, F>(platform: &platform::Platform, f: F) -> PortalResult<T>
where
    T: Send + 'static,
    F: FnOnce(&mut AnyConnection, &mut Revocations) -> PortalResult<T> + Send + 'static,
{
    platform::revocation::run(platform, move |conn, revoked| {
        transaction(conn, |c| f(c, revoked))
    })
    .await?
}

/// A read on the blocking pool.
pub async fn read<T, F>(platform: &platform::Platform, f: F) -> PortalResult<T>
where
    T: Send + 'static,
    F: FnOnce(&mut AnyConnection) -> PortalResult<T> + Send + 'static,
{
    platform.db.run(move |conn| Ok(f(conn))).await?
}

/// A rate limiter's decision as a result: over the limit is a 429 with its `Retry-After`.
pub(crate) fn limited(d: Decision) -> PortalResult<()> {
    match d {
        Decision::Allowed => Ok(()),
        Decision::Limited { retry_after_secs } => Err(PortalError::RateLimited(retry_after_secs)),
    }
}
