//! The per-account limits on second-factor codes: attempts counted before the check, failures
//! after it (see the module documentation of [`super`]).

use platform::Platform;
use platform::audit::{Actor, NewEvent, Target};
use platform::session::SessionKind;
use platform::storage::AnyConnection;

use super::{ATTEMPTS_PER_ACCOUNT, FAILURE_WINDOW, FAILURES_PER_ACCOUNT, Factor};
use crate::error::{PortalError, PortalResult, limited, write};

/// The failure counter of an account.
fn failures_key(kind: SessionKind, id: &str) -> String {
    format!("second-factor:{}:{id}", kind.as_str())
}

/// Counts one attempt, refused past [`ATTEMPTS_PER_ACCOUNT`].
async fn attempt(p: &Platform, kind: SessionKind, id: &str) -> PortalResult<()> {
    let bucket = format!("{}:attempts", failures_key(kind, id));
    limited(
        p.rate_limiter
            .check(&bucket, ATTEMPTS_PER_ACCOUNT, FAILURE_WINDOW)
            .await,
    )
}

async fn throttled(p: &Platform, kind: SessionKind, id: &str) -> PortalResult<()> {
    limited(
        p.rate_limiter
            .failures_allowed(
                &failures_key(kind, id),
                FAILURES_PER_ACCOUNT,
                FAILURE_WINDOW,
            )
            .await,
    )
}

/// Runs `f` (a check of a code) on `factor` under the account's failure limit: a wrong code
/// counts.
pub(super) async fn counted<T: Send + 'static>(
    p: &Platform,
    factor: Factor,
    f: impl FnOnce(&mut AnyConnection, &Factor) -> PortalResult<T> + Send + 'static,
) -> PortalResult<T> {
    admit(p, factor.kind, &factor.id).await?;
    settle(p, factor, f).await
}

/// Lets one attempt of the account through (refused while it is locked or past its attempts):
/// before any costly check, such as a password's argon2.
pub(super) async fn admit(p: &Platform, kind: SessionKind, id: &str) -> PortalResult<()> {
    throttled(p, kind, id).await?;
    attempt(p, kind, id).await
}

/// [`counted`] for an attempt already admitted ([`admit`]).
pub(super) async fn settle<T: Send + 'static>(
    p: &Platform,
    factor: Factor,
    f: impl FnOnce(&mut AnyConnection, &Factor) -> PortalResult<T> + Send + 'static,
) -> PortalResult<T> {
    let (kind, id) = (factor.kind, factor.id.clone());
    let id = id.as_str();
    let outcome = write(p, move |c| f(c, &factor)).await;
    if let Err(PortalError::Validation(_)) = &outcome {
        tracing::info!(kind = kind.as_str(), "second factor refused");
        p.rate_limiter
            .failed(&failures_key(kind, id), FAILURE_WINDOW)
            .await;
        // The failure that reaches the limit is the sign of someone guessing with the password
        // in hand: the audit log says so once per window (later attempts stop before counting).
        if throttled(p, kind, id).await.is_err() {
            tracing::warn!(
                kind = kind.as_str(),
                "second factor locked after repeated failures"
            );
            let (id, now) = (id.to_string(), p.now());
            let _ = write(p, move |c| {
                NewEvent::new(
                    Actor::system("second-factor"),
                    "second_factor.locked",
                    Target::new(kind.as_str(), &id),
                )
                .details(serde_json::json!({ "failures": FAILURES_PER_ACCOUNT }))
                .record(c, now)?;
                Ok(())
            })
            .await;
        }
    }
    outcome
}
