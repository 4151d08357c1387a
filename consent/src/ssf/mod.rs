//! The Shared Signals transmitter (OpenID SSF 1.0, CAEP 1.0): stream management for clients,
//! delivery by poll (RFC 8936, [`poll`]) and push (RFC 8935, [`push`]), and Security Event
//! Tokens signed with their own key ([`set`]).
//!
//! A client manages its own streams only (any other stream is "not found"), and a stream carries
//! events about its client's grants only (`platform::ssf::enqueue`). A stream that requests
//! [`platform::ssf::REVOCATION`] is a resource server's view of the revocation feed (every
//! grant, as `GET /oauth2/revocations`), read from a cursor kept on the stream.

pub mod access;
pub mod api;
pub mod poll;
pub mod push;
pub mod set;
pub mod streams;
pub mod subjects;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use platform::Platform;
use platform::ssf::{self as events, StreamStatus};
use platform::storage::schema::ssf_streams;
use platform::storage::{AnyConnection, StorageResult};

use crate::oauth::keys::KeyRing;

/// Delivery by push (RFC 8935).
pub const PUSH: &str = "urn:ietf:rfc:8935";
/// Delivery by poll (RFC 8936).
pub const POLL: &str = "urn:ietf:rfc:8936";
/// The least time between two verification requests of one stream, in seconds.
pub const MIN_VERIFICATION_INTERVAL: i64 = 30;
/// Streams one client may have.
pub const MAX_STREAMS_PER_CLIENT: i64 = 5;

/// What the transmitter shares with every handler.
#[derive(Debug, Clone)]
pub struct SsfService {
    pub platform: Platform,
    /// The `security_events` signing keys.
    pub keys: KeyRing,
    pub issuer: String,
    /// Streams with a long poll waiting on this instance (one at a time per stream).
    waiting: Arc<Mutex<HashSet<String>>>,
}

impl SsfService {
    pub fn new(platform: Platform, keys: KeyRing, issuer: String) -> Self {
        Self {
            platform,
            keys,
            issuer,
            waiting: Arc::default(),
        }
    }

    /// The transmitter configuration metadata (SSF 1.0 section 7.1).
    pub fn configuration(&self) -> TransmitterConfiguration {
        let at = |path: &str| format!("{}{path}", self.issuer);
        TransmitterConfiguration {
            spec_version: "1_0".into(),
            issuer: self.issuer.clone(),
            jwks_uri: at("/ssf/jwks"),
            delivery_methods_supported: vec![PUSH.into(), POLL.into()],
            configuration_endpoint: at("/ssf/streams"),
            status_endpoint: at("/ssf/status"),
            add_subject_endpoint: at("/ssf/subjects:add"),
            remove_subject_endpoint: at("/ssf/subjects:remove"),
            verification_endpoint: at("/ssf/verify"),
            critical_subject_members: vec!["format".into(), "id".into()],
            authorization_schemes: vec![
                serde_json::json!({ "spec_urn": "urn:ietf:rfc:6749" }),
                serde_json::json!({ "spec_urn": "urn:ietf:rfc:8705" }),
            ],
            default_subjects: "ALL".into(),
            events_supported: events::EVENTS_SUPPORTED
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// `GET /.well-known/ssf-configuration`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TransmitterConfiguration {
    /// `1_0`.
    pub spec_version: String,
    pub issuer: String,
    /// The keys Security Event Tokens are signed with.
    pub jwks_uri: String,
    pub delivery_methods_supported: Vec<String>,
    pub configuration_endpoint: String,
    pub status_endpoint: String,
    pub add_subject_endpoint: String,
    pub remove_subject_endpoint: String,
    pub verification_endpoint: String,
    pub critical_subject_members: Vec<String>,
    /// Receivers authenticate as OAuth clients (RFC 6749 client authentication, or mutual TLS).
    pub authorization_schemes: Vec<serde_json::Value>,
    /// `ALL`: a stream carries events about every grant of its client but those removed.
    pub default_subjects: String,
    /// Not an SSF member: the event types streams may request.
    #[schema(value_type = Vec<crate::openapi::values::SsfEventType>)]
    pub events_supported: Vec<String>,
}

/// One stream as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ssf_streams)]
pub struct StreamRow {
    pub id: String,
    pub client_id: String,
    pub delivery_method: String,
    pub endpoint_url: Option<String>,
    pub authorization_header_enc: Option<String>,
    pub events_requested: String,
    pub events_delivered: String,
    pub description: Option<String>,
    pub status: String,
    pub status_reason: Option<String>,
    pub feed_cursor: Option<i64>,
    pub push_failures: i32,
    pub last_error: Option<String>,
    pub updated_at: chrono::NaiveDateTime,
}

impl StreamRow {
    pub fn status(&self) -> StreamStatus {
        StreamStatus::parse(&self.status).unwrap_or(StreamStatus::Disabled)
    }
}

/// The stream `id` of `client_id`; `None` for another client's stream or none at all (the two
/// are not told apart).
pub fn find(c: &mut AnyConnection, client_id: &str, id: &str) -> StorageResult<Option<StreamRow>> {
    let row: Option<StreamRow> = ssf_streams::table
        .find(id)
        .select(StreamRow::as_select())
        .first(c)
        .optional()?;
    Ok(row.filter(|r| r.client_id == client_id))
}

/// The AAD binding an encrypted authorization header to its stream.
pub fn header_aad(stream_id: &str) -> String {
    format!("ssf_streams.authorization_header:{stream_id}")
}

/// Field-encryption purpose of receivers' authorization headers.
pub const HEADER_KEY: &str = "ssf-authorization-header";

/// Seconds since the epoch of a stored time.
pub fn unix(t: chrono::NaiveDateTime) -> i64 {
    t.and_utc().timestamp()
}

/// `now`, as stored.
pub fn stored(now: DateTime<Utc>) -> chrono::NaiveDateTime {
    use chrono::SubsecRound;
    now.naive_utc().trunc_subsecs(6)
}
