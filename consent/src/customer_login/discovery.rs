//! The provider's metadata and keys as this instance knows them: discovered, reused, refetched
//! for a rotated key at most once per [`REFRESH_GAP`], and a failure remembered for
//! [`FAILURE_GAP`].

use std::time::{Duration, Instant};

use openidconnect::IssuerUrl;
use openidconnect::core::CoreProviderMetadata;

use super::{LoginError, Upstream};

/// How long the provider's metadata and keys are reused before they are fetched again.
const METADATA_TTL: Duration = Duration::from_secs(600);
/// The shortest time between two fetches of the provider's metadata and keys.
const REFRESH_GAP: Duration = Duration::from_secs(30);
/// How long a failed fetch is remembered: logins meanwhile answer at once (with the last
/// metadata fetched, if any) instead of each waiting for the provider's timeout in turn.
const FAILURE_GAP: Duration = Duration::from_secs(10);

/// What this instance knows of the provider's metadata and keys.
#[derive(Default)]
pub(super) struct Discovery {
    /// The last metadata fetched, and when.
    fetched: Option<(Instant, CoreProviderMetadata)>,
    /// The last fetch that failed since, when, and why.
    failed: Option<(Instant, String)>,
}

impl Upstream {
    /// The provider's metadata and keys: discovered, then reused for ten minutes (`refresh`
    /// fetches them again, for a key the provider has just rotated in). One fetch at a time
    /// (the others wait for its result). While the provider is unreachable, the last metadata
    /// fetched keeps serving (except for a refresh), and a failure is remembered for
    /// [`FAILURE_GAP`], so logins answer at once rather than queueing behind a timeout each.
    pub(super) async fn metadata(&self, refresh: bool) -> Result<CoreProviderMetadata, LoginError> {
        let mut known = self.metadata.lock().await;
        // A refresh is asked for by a signature that did not verify, which anyone can send (a
        // forged logout token): at most one fetch per REFRESH_GAP, so nobody can make this
        // service hammer the provider.
        if let Some((at, m)) = known.fetched.as_ref()
            && (at.elapsed() < REFRESH_GAP || (!refresh && at.elapsed() < METADATA_TTL))
        {
            return Ok(m.clone());
        }
        let stale = known
            .fetched
            .as_ref()
            .map(|(_, m)| m.clone())
            .filter(|_| !refresh);
        if let Some((at, why)) = known.failed.as_ref()
            && at.elapsed() < FAILURE_GAP
        {
            return stale.ok_or_else(|| LoginError::ProviderUnavailable(why.clone()));
        }
        match self.discover().await {
            Ok(m) => {
                *known = Discovery {
                    fetched: Some((Instant::now(), m.clone())),
                    failed: None,
                };
                Ok(m)
            }
            Err(why) => {
                tracing::warn!(issuer = %self.issuer, error = %why, "the login provider's metadata could not be fetched");
                known.failed = Some((Instant::now(), why.clone()));
                stale.ok_or(LoginError::ProviderUnavailable(why))
            }
        }
    }

    async fn discover(&self) -> Result<CoreProviderMetadata, String> {
        let issuer = IssuerUrl::new(self.issuer.clone()).map_err(|e| e.to_string())?;
        CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| e.to_string())
    }
}
