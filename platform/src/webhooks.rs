//! Webhooks: events for client applications, written to the outbox (`webhook_outbox`) in the
//! caller's transaction, so an event exists exactly when the state change it reports committed
//! and nothing is lost if the process dies before delivery. The delivery worker (in `consent`)
//! sends them at least once, signed per [Standard Webhooks](https://www.standardwebhooks.com/):
//!
//! - headers `webhook-id` (the event id, stable across retries: receivers deduplicate on it),
//!   `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature: v1,<base64>`;
//! - the signature is HMAC-SHA256 over `"{webhook-id}.{webhook-timestamp}.{body}"` keyed with the
//!   base64-decoded part of the client's `whsec_...` secret; receivers reject timestamps more than
//!   five minutes from their clock (replay), compare in constant time, and may use any Standard
//!   Webhooks library.
//!
//! Events are only written for clients that have a webhook URL at the time of the change.

use crate::storage::models::ClientStatus;
use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SubsecRound, Utc};
use diesel::prelude::*;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::{CryptoError, PlainToken, random_id};
use crate::storage::schema::{clients, webhook_outbox};
use crate::storage::{AnyConnection, StorageResult};

/// The event types a client can receive.
pub const EVENT_TYPES: &[&str] = &[
    GRANT_REVOKED,
    GRANT_EXPIRED,
    GRANT_EXPIRING,
    GRANT_DORMANCY_WARNING,
    GRANT_EXTENDED,
    CLIENT_SUSPENDED,
];
pub const GRANT_REVOKED: &str = "grant.revoked";
pub const GRANT_EXPIRED: &str = "grant.expired";
pub const GRANT_EXPIRING: &str = "grant.expiring";
pub const GRANT_DORMANCY_WARNING: &str = "grant.dormancy_warning";
pub const GRANT_EXTENDED: &str = "grant.extended";
pub const CLIENT_SUSPENDED: &str = "client.suspended";

/// Secret prefix, as Standard Webhooks names it.
pub const SECRET_PREFIX: &str = "whsec_";

/// One event for one client.
#[derive(Debug, Clone)]
pub struct Event {
    pub client_id: String,
    pub event_type: &'static str,
    pub grant_id: Option<String>,
    /// The event's `data` object (the client id and, for grant events, the grant id are added).
    pub data: serde_json::Value,
}

impl Event {
    pub fn grant(
        event_type: &'static str,
        client_id: impl Into<String>,
        grant_id: impl Into<String>,
        data: serde_json::Value,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            event_type,
            grant_id: Some(grant_id.into()),
            data,
        }
    }

    /// The members of `data` (none when it is not an object).
    pub fn data_object(&self) -> serde_json::Map<String, serde_json::Value> {
        match &self.data {
            serde_json::Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = webhook_outbox, treat_none_as_default_value = false)]
struct NewRow {
    id: String,
    client_id: String,
    event_type: &'static str,
    grant_id: Option<String>,
    payload: String,
    status: &'static str,
    attempts: i32,
    next_attempt_at: chrono::NaiveDateTime,
    created_at: chrono::NaiveDateTime,
}

/// The outbox insert on PostgreSQL: new events, pending and due at `$1`, the same statement for
/// any number of them (arrays, one per column; up to [`crate::storage::ARRAY_ROWS`] each call).
const INSERT_OUTBOX_SQL: &str = "INSERT INTO webhook_outbox \
    (id, client_id, event_type, grant_id, payload, status, attempts, next_attempt_at, created_at) \
    SELECT i, c, t, g, p, 'pending', 0, $1, $1 \
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
    WITH ORDINALITY AS u(i, c, t, g, p, n) ORDER BY n";

/// Writes `events` to the outbox in the caller's transaction (one statement on PostgreSQL), and queues them
/// for the clients' Shared Signals streams ([`crate::ssf::enqueue`]). Webhook events of clients
/// without a webhook URL, or deleted, are dropped. Returns how many webhook events were written.
pub fn enqueue(
    conn: &mut AnyConnection,
    events: &[Event],
    now: DateTime<Utc>,
) -> StorageResult<usize> {
    if events.is_empty() {
        return Ok(0);
    }
    // The same events, as Security Event Tokens for the clients' SSF streams.
    crate::ssf::enqueue(conn, events, now)?;
    let mut ids: Vec<&str> = events.iter().map(|e| e.client_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let with_hook: HashSet<String> = clients::table
        .filter(clients::id.eq_any(&ids))
        .filter(clients::webhook_url.is_not_null())
        .filter(clients::status.ne(ClientStatus::Deleted.as_str()))
        .select(clients::id)
        .load::<String>(conn)?
        .into_iter()
        .collect();
    if with_hook.is_empty() {
        return Ok(0);
    }
    let at = now.naive_utc().trunc_subsecs(6);
    let rows: Vec<NewRow> = events
        .iter()
        .filter(|e| with_hook.contains(&e.client_id))
        .map(|e| {
            let id = random_id("msg_");
            let mut data = e.data_object();
            data.insert("client_id".into(), e.client_id.clone().into());
            if let Some(g) = &e.grant_id {
                data.insert("grant_id".into(), g.clone().into());
            }
            let payload = serde_json::json!({
                "id": id,
                "type": e.event_type,
                "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "data": data,
            })
            .to_string();
            NewRow {
                id,
                client_id: e.client_id.clone(),
                event_type: e.event_type,
                grant_id: e.grant_id.clone(),
                payload,
                status: "pending",
                attempts: 0,
                next_attempt_at: at,
                created_at: at,
            }
        })
        .collect();
    let written = match conn {
        AnyConnection::Postgresql(pg) => {
            use crate::storage::{ARRAY_ROWS, PgBind as B, PgStatement, column};
            let mut written = 0;
            for rows in rows.chunks(ARRAY_ROWS) {
                let grant_id: Vec<Option<String>> =
                    rows.iter().map(|r| r.grant_id.clone()).collect();
                written += PgStatement::new(
                    INSERT_OUTBOX_SQL,
                    vec![
                        B::Timestamp(&at),
                        B::TextArray(&column(rows, |r| r.id.clone())),
                        B::TextArray(&column(rows, |r| r.client_id.clone())),
                        B::TextArray(&column(rows, |r| r.event_type.to_string())),
                        B::NullableTextArray(&grant_id),
                        B::TextArray(&column(rows, |r| r.payload.clone())),
                    ],
                )
                .execute(pg)?;
            }
            written
        }
        AnyConnection::Sqlite(_) => crate::insert_rows!(conn, webhook_outbox::table, &rows),
    };
    metrics::counter!("consent_webhook_events_enqueued_total").increment(written as u64);
    Ok(written)
}

/// A new webhook secret: `whsec_` + base64 of 32 random bytes (the Standard Webhooks format).
pub fn generate_secret() -> PlainToken {
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(bytes.as_mut());
    PlainToken::from_presented(&format!(
        "{SECRET_PREFIX}{}",
        STANDARD.encode(bytes.as_ref())
    ))
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` for a `whsec_...` secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, CryptoError> {
    let key = Zeroizing::new(
        STANDARD
            .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
            .map_err(|_| CryptoError::Decrypt)?,
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| CryptoError::Decrypt)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks specification's test vectors.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn generated_secrets_decode_to_32_bytes() {
        let s = generate_secret();
        let b64 = s.expose().strip_prefix(SECRET_PREFIX).unwrap();
        assert_eq!(STANDARD.decode(b64).unwrap().len(), 32);
        assert!(
            sign(s.expose(), "msg_1", 1, b"{}")
                .unwrap()
                .starts_with("v1,")
        );
    }

    #[test]
    fn a_malformed_secret_is_an_error_not_a_panic() {
        assert!(sign("whsec_***", "msg_1", 1, b"{}").is_err());
    }
}
