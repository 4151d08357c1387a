//! The consent service's own value sets (see [`platform::values`]).

platform::value_sets! {
    /// A permission a grant can carry (`grants::Action::KNOWN`).
    Permission = ["accounts:read", "balances:read", "transactions:read"];
    /// Why a connected app shows a warning: `expiring` (the consent reaches its end date) or
    /// `dormant_soon` (the app has not used its access for a long time).
    NoticeKind = ["expiring", "dormant_soon"];
    /// What kind of token was introspected.
    IntrospectedTokenType = ["access_token", "refresh_token"];
    /// How to present an access token: `Bearer`, or `DPoP` for one bound to the client's DPoP
    /// key (RFC 9449).
    AccessTokenType = ["Bearer", "DPoP"];
    /// The one RFC 9396 authorization details type.
    DetailType = ["account_access"];
    /// OpenID Grant Management: what an authorization request does to the grant `grant_id`
    /// names.
    GrantManagementAction = ["create", "merge", "replace"];
    /// The only response type.
    ResponseType = ["code"];
    /// The only PKCE method.
    CodeChallengeMethod = ["S256"];
    /// Readiness of a dependency.
    DependencyState = ["ok", "unavailable"];
    /// The cache's state: Redis unreachable is `degraded` (the database still decides).
    CacheState = ["ok", "degraded"];
    /// Which cache the server runs with.
    CacheKind = ["redis", "in-process"];
    /// Readiness as a whole.
    ReadyState = ["ready", "not_ready"];
    /// Liveness.
    LiveState = ["ok"];
    /// A Shared Signals stream's status: `enabled` (events delivered), `paused` (queued, then
    /// delivered in order once enabled) or `disabled` (dropped).
    StreamStatusName = ["enabled", "paused", "disabled"];
    /// A Shared Signals event type (`platform::ssf::EVENTS_SUPPORTED`; the README says when each
    /// is sent and what its body holds). `urn:consent:secevent:*` are this service's own;
    /// session-revoked and token-claims-change are CAEP 1.0's; `revocation` is the revocation
    /// feed for resource servers, a stream of its own.
    SsfEventType = [
        "urn:consent:secevent:grant-revoked",
        "urn:consent:secevent:grant-expired",
        "urn:consent:secevent:grant-expiring",
        "urn:consent:secevent:grant-dormancy-warning",
        "urn:consent:secevent:grant-extended",
        "urn:consent:secevent:client-suspended",
        "https://schemas.openid.net/secevent/caep/event-type/session-revoked",
        "https://schemas.openid.net/secevent/caep/event-type/token-claims-change",
        "urn:consent:secevent:revocation",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_are_the_actions_tokens_know() {
        let known: Vec<&str> = grants::Action::KNOWN.iter().map(|a| a.as_str()).collect();
        assert_eq!(known, Permission::VALUES);
    }

    #[test]
    fn documented_event_types_and_stream_statuses_are_the_ones_the_code_knows() {
        assert_eq!(platform::ssf::EVENTS_SUPPORTED, SsfEventType::VALUES);
        let statuses: Vec<&str> = platform::ssf::StreamStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(statuses, StreamStatusName::VALUES);
    }
}

/// The `{id}` of a grant in a path.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // describes the path for the OpenAPI document; handlers read a String
pub struct GrantIdPath {
    /// Grant id
    #[param(pattern = "^g_[A-Za-z0-9_-]+$", max_length = 100)]
    id: String,
}
