//! The request and response bodies of stream management (SSF 1.0 section 8.1).

use serde::{Deserialize, Serialize};

/// How a stream's events reach the receiver.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct DeliveryRequest {
    /// `urn:ietf:rfc:8935` (push) or `urn:ietf:rfc:8936` (poll).
    pub method: String,
    /// Push: the receiver's endpoint (https; http only on loopback for sandbox clients). Poll:
    /// ignored (the transmitter assigns it).
    pub endpoint_url: Option<String>,
    /// Push: the `Authorization` header value sent with every event. Write-only.
    pub authorization_header: Option<String>,
}

/// `POST /ssf/streams`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateStream {
    pub delivery: DeliveryRequest,
    /// Event type URIs. Absent: every consent event (not the revocation feed, not CAEP).
    /// `urn:consent:secevent:revocation` (the revocation feed, every grant) makes a stream of
    /// its own and cannot be combined with other types.
    pub events_requested: Option<Vec<String>>,
    pub description: Option<String>,
}

/// `PATCH /ssf/streams` (the members given change) and `PUT /ssf/streams` (the stream becomes
/// what is given; read-only members are ignored).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UpdateStream {
    pub stream_id: String,
    pub delivery: Option<DeliveryRequest>,
    pub events_requested: Option<Vec<String>>,
    pub description: Option<String>,
}

/// Where a stream's events go (the authorization header is never returned).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub method: String,
    /// Push: the receiver's endpoint; poll: where the receiver polls.
    pub endpoint_url: String,
}

/// A stream's configuration (SSF 1.0 section 8.1.1).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamConfiguration {
    pub stream_id: String,
    pub iss: String,
    /// The receiving client.
    pub aud: String,
    #[schema(value_type = Vec<crate::openapi::values::SsfEventType>)]
    pub events_supported: Vec<String>,
    /// As the receiver asked (types this transmitter does not know are kept, not delivered).
    pub events_requested: Vec<String>,
    #[schema(value_type = Vec<crate::openapi::values::SsfEventType>)]
    pub events_delivered: Vec<String>,
    pub delivery: DeliveryView,
    /// Seconds between two verification requests, at the least.
    pub min_verification_interval: i64,
    pub description: Option<String>,
}

/// A stream's status (SSF 1.0 section 8.1.2).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamStatusView {
    pub stream_id: String,
    /// `enabled` (delivered), `paused` (queued, delivered in order once enabled) or `disabled`
    /// (dropped).
    #[schema(value_type = crate::openapi::values::StreamStatusName)]
    pub status: String,
    pub reason: Option<String>,
}

/// `POST /ssf/status`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UpdateStatus {
    pub stream_id: String,
    #[schema(value_type = crate::openapi::values::StreamStatusName)]
    pub status: String,
    pub reason: Option<String>,
}

/// A subject (RFC 9493): here always `{"format": "opaque", "id": "<grant id>"}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubjectId {
    pub format: String,
    pub id: String,
}

/// `POST /ssf/subjects:add` and `/ssf/subjects:remove`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SubjectRequest {
    pub stream_id: String,
    pub subject: SubjectId,
    /// Accepted and ignored (the transmitter knows its grants).
    pub verified: Option<bool>,
}

/// `POST /ssf/verify`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct VerifyRequest {
    pub stream_id: String,
    /// Echoed in the verification event.
    pub state: Option<String>,
}
