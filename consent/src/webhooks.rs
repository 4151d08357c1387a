//! Webhook delivery: the outbox worker every `consent serve` runs.
//!
//! Events are written to `webhook_outbox` by the state changes themselves (see
//! `platform::webhooks`). Each pass claims a batch of due events in a short transaction by
//! pushing their `next_attempt_at` forward by a lease (on PostgreSQL with `FOR NO KEY UPDATE SKIP
//! LOCKED`, so instances take disjoint batches), sends them without holding any lock, then records
//! the outcome. If the process dies between claim and outcome, the lease runs out and another
//! pass (on any instance) sends the event again: delivery is at least once, and receivers
//! deduplicate on `webhook-id`. Failed attempts back off exponentially (with jitter) up to
//! `webhooks.max_backoff`; after `webhooks.max_attempts` the event is `failed` and stays visible
//! to the developer in the portal. Redirects are not followed; only a 2xx counts as delivered.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamp};
use platform::Platform;
use platform::crypto::FieldCipher;
use platform::storage::models::{ClientStatus, WebhookStatus};
use platform::storage::schema::webhook_outbox;
use platform::storage::{AnyConnection, StorageResult, numbered, skip_locked};
use rand::Rng;
use std::net::{IpAddr, SocketAddr};

/// Events sent per pass and instance.
const BATCH: i64 = 50;

/// What one delivery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: usize,
    /// Attempts that failed and will be retried.
    pub retrying: usize,
    /// Events given up on (`failed`).
    pub failed: usize,
}

/// Deliveries go in two lanes that never wait for each other: production clients' (KYC'd) and
/// sandbox clients' (anyone may sign up). A pass waits for its slowest receiver, so slow
/// sandbox receivers, however many, cannot delay what production clients are sent (webhooks
/// here, SSF push in [`crate::ssf::push`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Production,
    Sandbox,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Production, Lane::Sandbox];

    /// The SQL condition on a client's row (aliased `cl`) for this lane.
    fn client_condition(self) -> &'static str {
        match self {
            Lane::Production => "cl.environment = 'production'",
            Lane::Sandbox => "cl.environment <> 'production'",
        }
    }
}

#[derive(QueryableByName, Debug)]
struct Due {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    client_id: String,
    #[diesel(sql_type = Text)]
    payload: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Text)]
    client_status: String,
    #[diesel(sql_type = Nullable<Text>)]
    webhook_url: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    webhook_secret_enc: Option<String>,
}

/// Claims up to `limit` due events of `lane`: each gets one more attempt and a lease until
/// `until`.
fn claim(
    c: &mut AnyConnection,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: i64,
    lane: Lane,
) -> StorageResult<Vec<Due>> {
    let sql = format!(
        "SELECT o.id AS id, o.client_id AS client_id, o.payload AS payload, \
                o.attempts AS attempts, cl.status AS client_status, cl.webhook_url AS webhook_url, \
                cl.webhook_secret_enc AS webhook_secret_enc \
         FROM webhook_outbox o JOIN clients cl ON cl.id = o.client_id \
         WHERE o.status = 'pending' AND o.next_attempt_at <= ? AND {} \
         ORDER BY o.next_attempt_at LIMIT ?{}",
        lane.client_condition(),
        skip_locked(c, "o")
    );
    let mut due = diesel::sql_query(numbered(c, &sql))
        .bind::<Timestamp, _>(now.naive_utc())
        .bind::<BigInt, _>(limit)
        .load::<Due>(c)?;
    let ids: Vec<&str> = due.iter().map(|d| d.id.as_str()).collect();
    diesel::update(webhook_outbox::table.filter(webhook_outbox::id.eq_any(&ids)))
        .set((
            webhook_outbox::attempts.eq(webhook_outbox::attempts + 1),
            webhook_outbox::next_attempt_at.eq(until.naive_utc()),
            webhook_outbox::last_attempt_at.eq(now.naive_utc().trunc_subsecs(6)),
        ))
        .execute(c)?;
    for d in &mut due {
        d.attempts += 1;
    }
    Ok(due)
}

/// The delay before attempt `attempts + 1`: `initial * 2^(attempts-1)`, at most `max`, minus up
/// to a quarter of jitter so that a receiver coming back is not hit by every sender at once.
pub fn backoff(attempts: i32, initial: Duration, max: Duration) -> Duration {
    let exp = attempts.saturating_sub(1).clamp(0, 30) as u32;
    let base = initial
        .checked_mul(2_i32.saturating_pow(exp))
        .unwrap_or(max)
        .min(max);
    let jitter = rand::thread_rng().gen_range(0.0..0.25);
    base - Duration::milliseconds((base.num_milliseconds() as f64 * jitter) as i64)
}

/// What one attempt changes on its outbox row (`None`: leave the column as it is).
#[derive(AsChangeset)]
#[diesel(table_name = webhook_outbox)]
struct AttemptOutcome {
    status: &'static str,
    last_status: Option<Option<i32>>,
    last_error: Option<Option<String>>,
    next_attempt_at: Option<chrono::NaiveDateTime>,
    delivered_at: Option<chrono::NaiveDateTime>,
}

enum Outcome {
    Delivered(u16),
    Failed {
        status: Option<u16>,
        error: String,
        /// Retrying cannot help (no URL any more, undecryptable secret).
        permanent: bool,
    },
}

async fn send(
    platform: &Platform,
    cipher: &FieldCipher,
    http: &reqwest::Client,
    due: &Due,
    now: i64,
) -> Outcome {
    let failed = |error: &str, permanent| Outcome::Failed {
        status: None,
        error: error.to_string(),
        permanent,
    };
    if due.client_status == ClientStatus::Deleted.as_str() {
        return failed("the client was deleted", true);
    }
    let (Some(url), Some(secret_enc)) = (&due.webhook_url, &due.webhook_secret_enc) else {
        return failed("the client has no webhook URL any more", true);
    };
    if !target_allowed(platform, url) {
        return failed(
            "the webhook URL points to a non-public address; use a public HTTPS endpoint",
            true,
        );
    }
    let Ok(secret) = cipher.decrypt_str(
        secret_enc,
        &developer_portal::clients::webhook_aad(&due.client_id),
    ) else {
        tracing::error!(client = %due.client_id, "webhook secret cannot be decrypted");
        return failed("the webhook secret cannot be used; rotate it", true);
    };
    let secret = zeroize::Zeroizing::new(secret);
    let Ok(signature) = platform::webhooks::sign(&secret, &due.id, now, due.payload.as_bytes())
    else {
        return failed("the webhook secret cannot be used; rotate it", true);
    };
    let result = http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &due.id)
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", signature)
        .body(due.payload.clone())
        .send()
        .await;
    match result {
        Ok(r) if r.status().is_success() => Outcome::Delivered(r.status().as_u16()),
        Ok(r) => Outcome::Failed {
            status: Some(r.status().as_u16()),
            error: format!("the receiver answered {}", r.status()),
            permanent: false,
        },
        Err(e) => {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "request failed"
            };
            failed(what, false)
        }
    }
}

/// One pass of each lane, one after the other (the delivery loop runs the lanes apart).
pub async fn deliver_due(
    platform: &Platform,
    http: &reqwest::Client,
) -> StorageResult<DeliveryReport> {
    let mut report = DeliveryReport::default();
    for lane in Lane::ALL {
        let r = deliver_lane(platform, http, lane).await?;
        report.delivered += r.delivered;
        report.retrying += r.retrying;
        report.failed += r.failed;
    }
    Ok(report)
}

/// One pass of `lane`: claim, send, record.
pub async fn deliver_lane(
    platform: &Platform,
    http: &reqwest::Client,
    lane: Lane,
) -> StorageResult<DeliveryReport> {
    let settings = platform.settings.webhooks.clone();
    let now = platform.now();
    // The lease outlives the attempt (timeout) with room for recording the outcome.
    let lease = settings.timeout.as_chrono() * 3 + Duration::seconds(5);
    let due = platform
        .db
        .write(move |c| claim(c, now, now + lease, BATCH, lane))
        .await?;
    if due.is_empty() {
        return Ok(DeliveryReport::default());
    }
    let stamp = now.timestamp();
    let cipher = platform
        .master_key
        .cipher(developer_portal::clients::WEBHOOK_KEY);
    let outcomes =
        futures_util::future::join_all(due.iter().map(|d| send(platform, &cipher, http, d, stamp)))
            .await;
    let mut report = DeliveryReport::default();
    let mut updates = Vec::with_capacity(due.len());
    let mut deferred: std::collections::HashMap<String, DateTime<Utc>> = Default::default();
    let done_at = platform.now();
    for (d, outcome) in due.iter().zip(outcomes) {
        match outcome {
            Outcome::Delivered(status) => {
                report.delivered += 1;
                updates.push((d.id.clone(), "delivered", Some(status), None, None));
            }
            Outcome::Failed {
                status,
                error,
                permanent,
            } => {
                if permanent || d.attempts >= settings.max_attempts as i32 {
                    report.failed += 1;
                    updates.push((d.id.clone(), "failed", status, Some(error), None));
                } else {
                    report.retrying += 1;
                    let next = done_at
                        + backoff(
                            d.attempts,
                            settings.initial_backoff.as_chrono(),
                            settings.max_backoff.as_chrono(),
                        );
                    updates.push((d.id.clone(), "pending", status, Some(error), Some(next)));
                    // The receiver is down (no answer, 5xx, 429): the client's other due events
                    // wait as long, so a dead endpoint with a large backlog costs one attempt per
                    // backoff, not whole passes that every other client's events queue behind.
                    if status.is_none_or(|s| s >= 500 || s == 429) {
                        let earliest = deferred.entry(d.client_id.clone()).or_insert(next);
                        *earliest = (*earliest).min(next);
                    }
                }
            }
        }
    }
    platform
        .db
        .write(move |c| {
            for (id, status, code, error, next) in updates {
                let delivered = status == "delivered";
                diesel::update(
                    webhook_outbox::table
                        .filter(webhook_outbox::id.eq(&id))
                        .filter(webhook_outbox::status.eq(WebhookStatus::Pending.as_str())),
                )
                .set(&AttemptOutcome {
                    status,
                    last_status: Some(code.map(i32::from)),
                    last_error: Some(error),
                    next_attempt_at: next.map(|t| t.naive_utc()),
                    delivered_at: delivered.then(|| done_at.naive_utc().trunc_subsecs(6)),
                })
                .execute(c)?;
            }
            for (client, until) in deferred {
                // Only events due before then (claimed ones hold a later lease and keep it).
                diesel::sql_query(numbered(c, DEFER_CLIENT_SQL))
                    .bind::<Timestamp, _>(until.naive_utc())
                    .bind::<Text, _>(&client)
                    .bind::<Timestamp, _>(until.naive_utc())
                    .execute(c)?;
            }
            Ok(())
        })
        .await?;
    metrics::counter!("consent_webhooks_delivered_total").increment(report.delivered as u64);
    metrics::counter!("consent_webhooks_attempts_failed_total")
        .increment((report.retrying + report.failed) as u64);
    metrics::counter!("consent_webhooks_given_up_total").increment(report.failed as u64);
    Ok(report)
}

/// Moves a client's pending events due before `?` to that time (its receiver is backing off).
/// The status is written out, not bound: then even a generic plan reads the pending events
/// through `webhook_outbox_due_idx` rather than every event kept for the client (delivered ones
/// are kept 30 days, failed ones 90; measured on 250,000 kept events with a forced generic plan:
/// 46 ms bound, 2 ms written out).
const DEFER_CLIENT_SQL: &str = "UPDATE webhook_outbox SET next_attempt_at = ? \
     WHERE status = 'pending' AND client_id = ? AND next_attempt_at < ?";

/// Whether `ip` is a globally reachable unicast address, the only kind a webhook may reach
/// unless `webhooks.allow_private_targets` is set. Everything in the IANA special-purpose
/// registries that is not globally reachable is refused, and so is every address that tunnels or
/// embeds another one (6to4, Teredo, NAT64, IPv4-compatible), whose real target cannot be told.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            let special = v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || a == 0 // 0.0.0.0/8, "this network"
                || a >= 240 // 240.0.0.0/4, reserved
                || (a == 100 && (b & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
                || (a == 192 && b == 0 && c == 0) // 192.0.0.0/24, protocol assignments
                || (a == 192 && b == 52 && c == 193) // 192.52.193.0/24, AMT
                || (a == 192 && b == 88 && c == 99) // 192.88.99.0/24, 6to4 relay anycast
                || (a == 192 && b == 175 && c == 48) // 192.175.48.0/24, direct delegation AS112
                || (a == 198 && (b & 0xfe) == 18); // 198.18.0.0/15, benchmarking
            !special
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // Only global unicast (2000::/3) can be public: this leaves out ::/96 (IPv4-
            // compatible), 64:ff9b::/96 and 64:ff9b:1::/48 (NAT64), 100::/64 (discard),
            // 5f00::/16 (SRv6), fc00::/7, fe80::/10, fec0::/10 (site-local) and ff00::/8.
            let global_unicast = (s[0] & 0xe000) == 0x2000;
            // 2001::/23 (Teredo, benchmarking, ORCHID...) and 2001:db8::/32 (documentation).
            let special = (s[0] == 0x2001 && (s[1] < 0x0200 || s[1] == 0x0db8))
                || s[0] == 0x2002 // 6to4: embeds an IPv4 address
                || (s[0] & 0xfff0) == 0x3ff0; // 3fff::/20, documentation
            global_unicast && !special
        }
    }
}

/// A resolver that only returns public addresses, so a webhook host cannot be pointed at the
/// bank's network through DNS (including rebinding between check and connect: the connection
/// uses exactly the addresses returned here).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err("the webhook host has no public address".into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Refuses URLs whose host is a non-public IP literal (names are checked by [`PublicOnly`]).
pub(crate) fn target_allowed(platform: &Platform, url: &str) -> bool {
    if platform.settings.webhooks.allow_private_targets {
        return true;
    }
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Ipv4(ip)) => is_public(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_public(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => true,
        None => false,
    }
}

/// The HTTP client deliveries use: bounded time, no redirects, no cookies, public addresses only
/// (unless `webhooks.allow_private_targets`).
pub fn http_client(platform: &Platform) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(platform.settings.webhooks.timeout.get())
        .connect_timeout(platform.settings.webhooks.timeout.get())
        .redirect(reqwest::redirect::Policy::none())
        // Never through a proxy from the environment (HTTP(S)_PROXY): the address checks must
        // apply to the receiver itself, not to a proxy that would then reach anything.
        .no_proxy()
        .user_agent(concat!("consent-webhooks/", env!("CARGO_PKG_VERSION")));
    if platform.settings.webhooks.allow_private_targets {
        builder.build()
    } else {
        builder
            .dns_resolver(std::sync::Arc::new(PublicOnly))
            .build()
    }
}

/// Runs [`deliver_due`] every `webhooks.delivery_interval` until shutdown.
pub fn spawn_delivery(
    platform: Platform,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = match http_client(&platform) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "webhook delivery disabled: no HTTP client");
                return;
            }
        };
        let interval = platform.settings.webhooks.delivery_interval.get();
        let lane = |lane: Lane| {
            let (platform, http) = (&platform, &http);
            drain_every(interval, shutdown.clone(), move || async move {
                match deliver_lane(platform, http, lane).await {
                    Ok(r) => Ok(r.delivered + r.retrying + r.failed >= BATCH as usize),
                    Err(e) => Err(format!("webhook delivery pass failed ({lane:?}): {e}")),
                }
            })
        };
        tokio::join!(lane(Lane::Production), lane(Lane::Sandbox));
    })
}

/// Every `interval` until `shutdown`: `pass` again and again while it says there may be more
/// (`Ok(true)`), then wait for the next tick; an `Err` is logged and waits for the next tick.
pub(crate) async fn drain_every<F, Fut>(
    interval: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        while !*shutdown.borrow() {
            match pass().await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "background pass failed; will retry");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::a00:1",
            "2001:db8::1",
            // Tunnels and embeddings whose real target cannot be told.
            "2002:a00:1::1",                        // 6to4 of 10.0.0.1
            "2002:7f00:1::1",                       // 6to4 of 127.0.0.1
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
            "::a00:1",                              // IPv4-compatible 10.0.0.1
            "::7f00:1",                             // IPv4-compatible 127.0.0.1
            "fec0::1",                              // site-local
            "100::1",                               // discard
            "5f00::1",                              // SRv6
            "3fff::1",                              // documentation
            "ff02::1",
            "2001:2::1",    // benchmarking
            "192.88.99.1",  // 6to4 relay anycast
            "192.52.193.1", // AMT
            "192.175.48.1", // AS112
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "240.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn backoff_doubles_within_bounds() {
        let (initial, max) = (Duration::seconds(30), Duration::hours(6));
        for attempts in 1..40 {
            let d = backoff(attempts, initial, max);
            let base = if attempts > 20 {
                max
            } else {
                (initial * 2_i32.pow((attempts - 1) as u32)).min(max)
            };
            assert!(d <= base && d >= base * 3 / 4, "{attempts}: {d}");
        }
    }
}
