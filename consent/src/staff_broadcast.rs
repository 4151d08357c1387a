//! The staff channel (issue 18): every privileged staff request, decision, credential and use,
//! and second-factor lockouts and resets, POSTed to `webhooks.staff_url` so that colleagues see
//! it at once.
//!
//! The audit log is the outbox: what is broadcast is exactly what was committed and audited, in
//! the order of the audit chain (the linker numbers events once committed, one at a time, so
//! reading by `chain_index` past a stored position skips nothing). One instance at a time sends,
//! under a lease; the position moves past an event only once the channel answered 2xx, so
//! delivery is at least once and in order (a down channel holds the rest back, retried every
//! pass). Bodies are signed per Standard Webhooks (`webhook-id` is the audit event's id, for
//! deduplication).

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use platform::Platform;
use platform::storage::StorageResult;
use platform::storage::schema::{audit_events, audit_links, staff_broadcast};

/// The audit actions the staff channel carries.
pub const ACTIONS: &[&str] = &[
    "approval.requested",
    "approval.approved",
    "approval.rejected",
    "approval.expired",
    "staff_credential.issued",
    "staff_credential.revoked",
    "staff_credential.used",
    "client.dormancy_changed",
    "client.suspended",
    "client.unsuspended",
    "customer.grants.viewed_by_staff",
    "kyc.viewed_by_staff",
    "second_factor.locked",
    "second_factor.reset",
    "second_factor.enrolled",
    "staff.created",
];

/// Whether the channel carries this event: the actions above, and of the second factor's only
/// staff members' (a developer's enrolment is not the staff's business). A staff member's
/// enrolment is announced because it is trust on first use: whoever logs in first with a new
/// staff member's password sets the authenticator up, and colleagues should see it happen.
fn carried(action: &str, target_type: &str) -> bool {
    ACTIONS.contains(&action) && (!action.starts_with("second_factor.") || target_type == "staff")
}

/// Events read per pass.
const BATCH: i64 = 100;
/// Deliveries per pass: each may take up to `webhooks.timeout`, and all of them must fit in
/// the lease (so that a stuck instance cannot send while another holds it).
const SENDS_PER_PASS: usize = 10;

type Row = (
    i64,
    String,
    NaiveDateTime,
    String,
    String,
    String,
    String,
    String,
    String,
);

/// Takes the lease if free; the position to send from.
fn claim(
    c: &mut platform::storage::AnyConnection,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> StorageResult<Option<i64>> {
    let taken = diesel::update(
        staff_broadcast::table
            .filter(staff_broadcast::id.eq(1))
            .filter(
                staff_broadcast::lease_until
                    .is_null()
                    .or(staff_broadcast::lease_until.lt(now.naive_utc())),
            ),
    )
    .set(staff_broadcast::lease_until.eq(Some(until.naive_utc())))
    .execute(c)?;
    if taken != 1 {
        return Ok(None);
    }
    Ok(Some(
        staff_broadcast::table
            .filter(staff_broadcast::id.eq(1))
            .select(staff_broadcast::chain_index)
            .first(c)?,
    ))
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub sent: usize,
    /// Whether there may be more to read at once.
    pub more: bool,
    /// Whether the channel refused or did not answer (the rest waits for the next pass).
    pub stalled: bool,
}

/// One pass: the events linked since the stored position, in chain order, sent one by one.
pub async fn broadcast_pass(platform: &Platform, http: &reqwest::Client) -> StorageResult<Pass> {
    let settings = &platform.settings.webhooks;
    let (Some(url), Some(secret)) = (&settings.staff_url, &settings.staff_secret) else {
        return Ok(Pass::default());
    };
    let now = platform.now();
    let lease = settings.timeout.as_chrono() * (SENDS_PER_PASS as i32 + 2);
    let Some(from) = platform
        .db
        .write(move |c| claim(c, now, now + lease))
        .await?
    else {
        return Ok(Pass::default());
    };
    let rows: Vec<Row> = platform
        .db
        .run(move |c| {
            Ok(audit_links::table
                .inner_join(audit_events::table)
                .filter(audit_links::chain_index.gt(from))
                .order(audit_links::chain_index.asc())
                .limit(BATCH)
                .select((
                    audit_links::chain_index,
                    audit_events::event_id,
                    audit_events::occurred_at,
                    audit_events::actor_type,
                    audit_events::actor_id,
                    audit_events::action,
                    audit_events::target_type,
                    audit_events::target_id,
                    audit_events::details,
                ))
                .load(c)?)
        })
        .await?;
    let mut position = from;
    let mut pass = Pass {
        more: rows.len() as i64 == BATCH,
        ..Pass::default()
    };
    let mut error = None;
    for (index, event_id, at, actor_type, actor_id, action, target_type, target_id, details) in rows
    {
        if carried(&action, &target_type) {
            if pass.sent == SENDS_PER_PASS {
                pass.more = true;
                break;
            }
            let details: serde_json::Value =
                serde_json::from_str(&details).unwrap_or(serde_json::Value::Null);
            let body = serde_json::json!({
                "id": event_id,
                "type": action,
                "timestamp": at.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "data": {
                    "actor": { "type": actor_type, "id": actor_id },
                    "target": { "type": target_type, "id": target_id },
                    "details": details,
                    "chain_index": index,
                },
            })
            .to_string();
            match send(http, url, secret.expose(), &event_id, &body, platform.now()).await {
                Ok(()) => pass.sent += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "staff channel: delivery failed; will retry");
                    error = Some(e);
                    pass.stalled = true;
                    break;
                }
            }
        }
        position = index;
    }
    let done = platform.now();
    platform
        .db
        .write(move |c| {
            diesel::update(staff_broadcast::table.filter(staff_broadcast::id.eq(1)))
                .set((
                    staff_broadcast::chain_index.eq(position),
                    staff_broadcast::lease_until.eq(None::<NaiveDateTime>),
                    staff_broadcast::last_error.eq(error),
                    staff_broadcast::updated_at.eq(done.naive_utc()),
                ))
                .execute(c)?;
            Ok(())
        })
        .await?;
    metrics::counter!("consent_staff_broadcasts_sent_total").increment(pass.sent as u64);
    Ok(pass)
}

async fn send(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    id: &str,
    body: &str,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let stamp = now.timestamp();
    let signature =
        platform::webhooks::sign(secret, id, stamp, body.as_bytes()).map_err(|e| e.to_string())?;
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", stamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", r.status()))
    }
}

/// Runs [`broadcast_pass`] every `webhooks.delivery_interval` until shutdown (nothing when the
/// channel is not configured).
pub fn spawn(
    platform: Platform,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if platform.settings.webhooks.staff_url.is_none() {
            return;
        }
        // The operators chose this address: no public-only resolver, but no proxies either and
        // no redirects (a redirect would carry the signed body elsewhere).
        let http = match reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(platform.settings.webhooks.timeout.get())
            .build()
        {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "staff channel disabled: no HTTP client");
                return;
            }
        };
        let interval = platform.settings.webhooks.delivery_interval.get();
        crate::webhooks::drain_every(interval, shutdown, || async {
            match broadcast_pass(&platform, &http).await {
                Ok(p) => Ok(p.more && !p.stalled),
                Err(e) => Err(format!("staff channel pass failed: {e}")),
            }
        })
        .await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_carries_staff_events_and_no_developers_second_factor() {
        assert!(carried("approval.requested", "approval_request"));
        assert!(carried("second_factor.enrolled", "staff"));
        assert!(carried("second_factor.locked", "staff"));
        assert!(!carried("second_factor.enrolled", "developer"));
        assert!(!carried("second_factor.locked", "developer"));
        assert!(!carried("token.issued", "grant"));
    }
}
