//! Shared Signals (OpenID SSF 1.0, CAEP 1.0): the event streams clients and resource servers
//! subscribe to, and the queue of events waiting for each stream (`ssf_events`).
//!
//! Events are queued by [`enqueue`] in the transaction of the state change they report, from the
//! same [`crate::webhooks::Event`]s the webhooks carry (`webhooks::enqueue` calls it), so a
//! stream hears of exactly what committed and a crash loses nothing. A stream sees only events
//! about its own client's grants. Streams asking for [`REVOCATION`] instead read the revocation
//! feed (`revocations`, every grant) from a cursor kept on the stream; nothing is queued for
//! them per revocation.
//!
//! The SET (RFC 8417) is assembled and signed when it is sent (`consent::ssf`).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use diesel::prelude::*;

use crate::crypto::random_id;
use crate::storage::schema::{ssf_events, ssf_excluded_subjects, ssf_streams};
use crate::storage::{AnyConnection, StorageResult};
use crate::webhooks::{self, Event};

/// Declares the event types a stream may request, each named once: a constant per type, and
/// [`EVENTS_SUPPORTED`] listing them in this order.
macro_rules! event_types {
    ($($(#[$doc:meta])* $name:ident = $uri:literal;)+) => {
        $($(#[$doc])* pub const $name: &str = $uri;)+
        /// Every event type a stream may request, in the documented order (verification events
        /// are always delivered).
        pub const EVENTS_SUPPORTED: &[&str] = &[$($name),+];
    };
}

event_types! {
    /// Ours (consent-specific, documented in the README and the OpenAPI document).
    GRANT_REVOKED = "urn:consent:secevent:grant-revoked";
    GRANT_EXPIRED = "urn:consent:secevent:grant-expired";
    GRANT_EXPIRING = "urn:consent:secevent:grant-expiring";
    GRANT_DORMANCY_WARNING = "urn:consent:secevent:grant-dormancy-warning";
    GRANT_EXTENDED = "urn:consent:secevent:grant-extended";
    CLIENT_SUSPENDED = "urn:consent:secevent:client-suspended";
    /// CAEP 1.0: the subject's session (here: the grant, the client's access) was revoked.
    CAEP_SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
    /// CAEP 1.0: claims of the subject's tokens changed (a grant's accounts, merchants, window
    /// or actions changed through OpenID Grant Management).
    CAEP_TOKEN_CLAIMS_CHANGE =
        "https://schemas.openid.net/secevent/caep/event-type/token-claims-change";
    /// One entry of the revocation feed (every grant, for resource servers).
    REVOCATION = "urn:consent:secevent:revocation";
}

/// SSF 1.0 section 8.1.4: the answer to a verification request.
pub const SSF_VERIFICATION: &str =
    "https://schemas.openid.net/secevent/ssf/event-type/verification";

/// Event type of a change of a grant's scope, for [`enqueue`] only (no webhook carries it).
pub const GRANT_SCOPE_CHANGED: &str = "grant.scope_changed";

/// The SSF event types a webhook event becomes (each one a SET of its own, for the streams that
/// requested it).
fn event_types_for(webhook_type: &str) -> &'static [&'static str] {
    match webhook_type {
        webhooks::GRANT_REVOKED => &[GRANT_REVOKED, CAEP_SESSION_REVOKED],
        webhooks::GRANT_EXPIRED => &[GRANT_EXPIRED],
        webhooks::GRANT_EXPIRING => &[GRANT_EXPIRING],
        webhooks::GRANT_DORMANCY_WARNING => &[GRANT_DORMANCY_WARNING],
        webhooks::GRANT_EXTENDED => &[GRANT_EXTENDED],
        webhooks::CLIENT_SUSPENDED => &[CLIENT_SUSPENDED],
        GRANT_SCOPE_CHANGED => &[CAEP_TOKEN_CLAIMS_CHANGE],
        _ => &[],
    }
}

/// CAEP `initiating_entity` for who ended a grant.
fn initiating_entity(revoked_by: &str) -> &'static str {
    match revoked_by {
        "customer" => "user",
        "staff" => "admin",
        "dormancy" | "expiry" => "policy",
        _ => "system",
    }
}

/// The member of the SET's `events` claim for one event (the body under the event type URI).
fn event_body(event_type: &str, e: &Event, now: DateTime<Utc>) -> serde_json::Value {
    let mut body = e.data_object();
    body.insert("event_timestamp".into(), now.timestamp().into());
    match event_type {
        CAEP_SESSION_REVOKED => {
            let by = body
                .get("revoked_by")
                .and_then(|v| v.as_str())
                .unwrap_or("system")
                .to_string();
            let reason = body
                .get("reason")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string();
            serde_json::json!({
                "event_timestamp": now.timestamp(),
                "initiating_entity": initiating_entity(&by),
                "reason_admin": { "en": format!("grant ended by {by}: {reason}") },
            })
        }
        CAEP_TOKEN_CLAIMS_CHANGE => serde_json::json!({
            "event_timestamp": now.timestamp(),
            "claims": {
                "authorization_details":
                    body.get("authorization_details").cloned().unwrap_or_default(),
            },
        }),
        _ => serde_json::Value::Object(body),
    }
}

/// A stream's status (SSF 1.0 section 8.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    /// Events are queued and delivered.
    Enabled,
    /// Events are queued, not delivered, until the stream is enabled again.
    Paused,
    /// Events are dropped (and what was queued is dropped when the stream is disabled).
    Disabled,
}

impl StreamStatus {
    pub const ALL: &'static [StreamStatus] = &[
        StreamStatus::Enabled,
        StreamStatus::Paused,
        StreamStatus::Disabled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            StreamStatus::Enabled => "enabled",
            StreamStatus::Paused => "paused",
            StreamStatus::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

#[derive(Insertable, Debug)]
#[diesel(table_name = ssf_events, treat_none_as_default_value = true)]
pub struct NewEvent {
    pub jti: String,
    pub stream_id: String,
    pub event_type: String,
    pub subject: String,
    pub claims: String,
    pub status: &'static str,
    pub attempts: i32,
    pub created_at: chrono::NaiveDateTime,
}

impl NewEvent {
    /// One event for one stream, queued now.
    pub fn new(
        stream_id: &str,
        event_type: &str,
        subject: &str,
        body: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            jti: random_id("set_"),
            stream_id: stream_id.to_string(),
            event_type: event_type.to_string(),
            subject: subject.to_string(),
            claims: body.to_string(),
            status: "pending",
            attempts: 0,
            created_at: now.naive_utc().trunc_subsecs(6),
        }
    }
}

/// Queues `events` for every stream of their clients that delivers them (enabled or paused,
/// the subject not removed), in the caller's transaction. Returns how many were queued.
pub fn enqueue(
    conn: &mut AnyConnection,
    events: &[Event],
    now: DateTime<Utc>,
) -> StorageResult<usize> {
    let mut clients: Vec<&str> = events
        .iter()
        .filter(|e| !event_types_for(e.event_type).is_empty())
        .map(|e| e.client_id.as_str())
        .collect();
    if clients.is_empty() {
        return Ok(0);
    }
    clients.sort_unstable();
    clients.dedup();
    let mut streams: Vec<(String, String, String)> = Vec::new();
    for ids in clients.chunks(1_000) {
        streams.extend(
            ssf_streams::table
                .filter(ssf_streams::client_id.eq_any(ids))
                .filter(ssf_streams::status.ne(StreamStatus::Disabled.as_str()))
                .select((
                    ssf_streams::id,
                    ssf_streams::client_id,
                    ssf_streams::events_delivered,
                ))
                .load(conn)?,
        );
    }
    if streams.is_empty() {
        return Ok(0);
    }
    let stream_ids: Vec<&str> = streams.iter().map(|(id, _, _)| id.as_str()).collect();
    let excluded: HashSet<(String, String)> = ssf_excluded_subjects::table
        .filter(ssf_excluded_subjects::stream_id.eq_any(&stream_ids))
        .select((
            ssf_excluded_subjects::stream_id,
            ssf_excluded_subjects::grant_id,
        ))
        .load::<(String, String)>(conn)?
        .into_iter()
        .collect();
    let mut by_client: HashMap<&str, Vec<(&str, Vec<String>)>> = HashMap::new();
    for (id, client, delivered) in &streams {
        let types: Vec<String> = serde_json::from_str(delivered).unwrap_or_default();
        by_client
            .entry(client.as_str())
            .or_default()
            .push((id.as_str(), types));
    }
    let mut rows = Vec::new();
    for e in events {
        let Some(streams) = by_client.get(e.client_id.as_str()) else {
            continue;
        };
        let subject = e.grant_id.as_deref().unwrap_or(&e.client_id);
        for (stream, delivered) in streams {
            if excluded.contains(&(stream.to_string(), subject.to_string())) {
                continue;
            }
            for ty in event_types_for(e.event_type) {
                if delivered.iter().any(|d| d == ty) {
                    rows.push(NewEvent::new(
                        stream,
                        ty,
                        subject,
                        &event_body(ty, e, now),
                        now,
                    ));
                }
            }
        }
    }
    let written = crate::insert_rows!(conn, ssf_events::table, &rows);
    metrics::counter!("consent_ssf_events_enqueued_total").increment(written as u64);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_webhook_event_type_reaches_a_supported_ssf_type() {
        for ty in webhooks::EVENT_TYPES {
            let mapped = event_types_for(ty);
            assert!(!mapped.is_empty(), "{ty}");
            assert!(mapped.iter().all(|m| EVENTS_SUPPORTED.contains(m)), "{ty}");
        }
    }

    #[test]
    fn session_revoked_names_who_ended_the_grant() {
        let e = Event::grant(
            webhooks::GRANT_REVOKED,
            "cl_1",
            "gr_1",
            serde_json::json!({ "revoked_by": "customer", "reason": "customer request" }),
        );
        let body = event_body(CAEP_SESSION_REVOKED, &e, Utc::now());
        assert_eq!(body["initiating_entity"], "user");
        assert!(body["event_timestamp"].is_i64());
        let ours = event_body(GRANT_REVOKED, &e, Utc::now());
        assert_eq!(ours["revoked_by"], "customer");
    }
}
