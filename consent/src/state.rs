//! The state one server instance shares with every handler (`web::Data<AppState>`).

use metrics_exporter_prometheus::PrometheusHandle;
use platform::Platform;

use crate::{customer_login, oauth, revocation_list, ssf};

/// Shared state of one server instance, handed to handlers as `web::Data<AppState>`.
#[derive(Debug, Clone)]
pub struct AppState {
    pub platform: Platform,
    pub oauth: oauth::OAuthService,
    /// The Shared Signals transmitter.
    pub ssf: ssf::SsfService,
    /// This instance's copy of the revocation feed (for offline verification in /sandbox).
    pub revocations: revocation_list::RevocationList,
    /// Public base URL / OAuth issuer, without trailing slash.
    pub issuer: String,
    /// The bank's OpenID Connect provider for customer login, when configured.
    pub customer_login: Option<customer_login::Upstream>,
    pub metrics: PrometheusHandle,
}
