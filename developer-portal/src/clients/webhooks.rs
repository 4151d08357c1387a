//! Client webhooks as the developer manages them: the signing secret (encrypted at rest), the
//! recent deliveries, and redelivery of a failed event.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use platform::crypto::{MasterKey, PlainToken};
use platform::storage::AnyConnection;
use platform::storage::models::{ClientStatus, WebhookStatus};
use platform::storage::schema::clients;

use super::{audit_developer, owned, owned_active, ts};
use crate::error::{PortalError, PortalResult};

/// The purpose label of the webhook-secret encryption key.
pub const WEBHOOK_KEY: &str = "webhook-secrets";

pub fn webhook_aad(client_id: &str) -> String {
    format!("clients.webhook_secret:{client_id}")
}
/// One webhook event and its delivery, as the developer sees it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WebhookDelivery {
    /// The event id (the `webhook-id` header; stable across retries).
    pub id: String,
    #[schema(value_type = crate::api::WebhookEventType)]
    pub event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    #[schema(value_type = crate::api::WebhookStatus)]
    pub status: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the next attempt is due (pending events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt, if the receiver answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The signed body, exactly as sent.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

type DeliveryRow = (
    String,
    String,
    Option<String>,
    String,
    i32,
    NaiveDateTime,
    Option<NaiveDateTime>,
    NaiveDateTime,
    Option<NaiveDateTime>,
    Option<i32>,
    Option<String>,
    String,
);

/// The client's most recent webhook events (newest first), at most `limit`.
pub fn webhook_deliveries(
    conn: &mut AnyConnection,
    developer_id: &str,
    client_id: &str,
    limit: i64,
) -> PortalResult<Vec<WebhookDelivery>> {
    use platform::storage::schema::webhook_outbox as o;
    owned(conn, developer_id, client_id)?;
    let rows: Vec<DeliveryRow> = o::table
        .filter(o::client_id.eq(client_id))
        .order((o::created_at.desc(), o::id.desc()))
        .limit(limit.clamp(1, 200))
        .select((
            o::id,
            o::event_type,
            o::grant_id,
            o::status,
            o::attempts,
            o::created_at,
            o::last_attempt_at,
            o::next_attempt_at,
            o::delivered_at,
            o::last_status,
            o::last_error,
            o::payload,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                event_type,
                grant_id,
                status,
                attempts,
                created,
                last,
                next,
                delivered,
                code,
                error,
                payload,
            )| {
                let pending = status == "pending";
                WebhookDelivery {
                    id,
                    event_type,
                    grant_id,
                    status,
                    attempts,
                    created_at: created.and_utc(),
                    last_attempt_at: last.map(|t| t.and_utc()),
                    next_attempt_at: pending.then(|| next.and_utc()),
                    delivered_at: delivered.map(|t| t.and_utc()),
                    last_status: code,
                    last_error: error,
                    payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                }
            },
        )
        .collect())
}

/// Queues a failed event for delivery again (after the developer fixed the receiver): it becomes
/// `pending`, due now, with a fresh attempt budget.
pub fn redeliver(
    conn: &mut AnyConnection,
    developer_id: &str,
    client_id: &str,
    event_id: &str,
    now: DateTime<Utc>,
) -> PortalResult<()> {
    use platform::storage::schema::webhook_outbox as o;
    let client = owned(conn, developer_id, client_id)?;
    if client.status != ClientStatus::Active.as_str() {
        return Err(PortalError::Conflict(format!(
            "the client is {}; its webhooks cannot be redelivered",
            client.status
        )));
    }
    let status: Option<String> = o::table
        .filter(o::id.eq(event_id))
        .filter(o::client_id.eq(client_id))
        .select(o::status)
        .first(conn)
        .optional()?;
    match status.as_deref() {
        None => return Err(PortalError::NotFound("webhook event")),
        Some("failed") => {}
        Some(other) => {
            return Err(PortalError::Conflict(format!(
                "the event is {other}; only failed events can be redelivered"
            )));
        }
    }
    diesel::update(
        o::table
            .filter(o::id.eq(event_id))
            .filter(o::status.eq(WebhookStatus::Failed.as_str())),
    )
    .set((
        o::status.eq(WebhookStatus::Pending.as_str()),
        o::attempts.eq(0),
        o::next_attempt_at.eq(ts(now)),
    ))
    .execute(conn)?;
    audit_developer(
        conn,
        developer_id,
        "webhook.redelivery_requested",
        client_id,
        serde_json::json!({ "event": event_id }),
        now,
    )?;
    Ok(())
}

/// Replaces the webhook signing secret (the old one stops at once: events still pending are
/// signed with the new one when sent). Returns the new secret, shown once.
pub fn rotate_webhook_secret(
    conn: &mut AnyConnection,
    master_key: &MasterKey,
    developer_id: &str,
    client_id: &str,
    now: DateTime<Utc>,
) -> PortalResult<PlainToken> {
    let current = owned_active(conn, developer_id, client_id)?;
    if current.webhook_url.is_none() {
        return Err(PortalError::Conflict(
            "the client has no webhook URL; set one first".into(),
        ));
    }
    let secret = platform::webhooks::generate_secret();
    let enc = master_key
        .cipher(WEBHOOK_KEY)
        .encrypt_str(secret.expose(), &webhook_aad(client_id))?;
    diesel::update(clients::table.filter(clients::id.eq(client_id)))
        .set((
            clients::webhook_secret_enc.eq(Some(enc)),
            clients::updated_at.eq(ts(now)),
        ))
        .execute(conn)?;
    audit_developer(
        conn,
        developer_id,
        "client.webhook_secret_rotated",
        client_id,
        serde_json::json!({}),
        now,
    )?;
    Ok(secret)
}
