//! Delivery by push (RFC 8935): every `consent serve` runs [`spawn_delivery`].
//!
//! A pass claims enabled push streams with something due by taking a lease on the stream (one
//! instance delivers a stream at a time), then POSTs its events one SET per request, in order.
//! An accepted SET (2xx) leaves the queue; one the receiver refuses (400 with an RFC 8935 error)
//! is kept as `failed` and the next one goes; anything else (no answer, 5xx, 429, ...) stops the
//! stream until a backoff has passed (`webhooks.initial_backoff` doubling up to
//! `webhooks.max_backoff`), and after `webhooks.max_attempts` tries a queued event is given up
//! (`failed`). Revocation-feed entries are never given up: a resource server must not miss one.
//! A crash between send and record sends the SET again: delivery is at least once, and receivers
//! deduplicate on `jti`. Endpoints must be public addresses, as for webhooks.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use platform::ssf::StreamStatus;
use platform::storage::models::ClientStatus;
use platform::storage::schema::{clients, ssf_events, ssf_streams};
use platform::storage::{AnyConnection, StorageResult};

use super::poll::{Due, advance_cursor, due};
use super::{HEADER_KEY, SsfService, StreamRow, header_aad, stored};
pub use crate::webhooks::Lane;
use crate::webhooks::{backoff, http_client, target_allowed};

/// Streams one pass and instance takes.
const STREAMS_PER_PASS: i64 = 20;
/// Events one stream gets per pass, at the most.
const EVENTS_PER_PASS: i64 = 100;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PushReport {
    pub delivered: usize,
    pub refused: usize,
    pub failed_attempts: usize,
}

/// Takes a lease on up to [`STREAMS_PER_PASS`] streams of `lane` with something to push.
fn claim(
    c: &mut AnyConnection,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    lane: Lane,
) -> StorageResult<Vec<StreamRow>> {
    let now_s = stored(now);
    // The feed's last position: a feed stream has work only while its cursor is behind it.
    let head = platform::revocation::feed_head(c)?;
    let mut candidates = ssf_streams::table
        .inner_join(clients::table)
        .filter(clients::status.ne(ClientStatus::Deleted.as_str()))
        .into_boxed();
    candidates = match lane {
        Lane::Production => candidates.filter(clients::environment.eq("production")),
        // The feed is pushed to production clients only (`streams::feed_push_allowed`; this
        // also holds for streams set up before that rule).
        Lane::Sandbox => candidates
            .filter(clients::environment.ne("production"))
            .filter(ssf_streams::feed_cursor.is_null()),
    };
    let candidates: Vec<String> = candidates
        .filter(ssf_streams::delivery_method.eq("push"))
        .filter(ssf_streams::status.eq(StreamStatus::Enabled.as_str()))
        .filter(
            ssf_streams::next_push_at
                .is_null()
                .or(ssf_streams::next_push_at.le(now_s)),
        )
        .filter(
            ssf_streams::push_lease_until
                .is_null()
                .or(ssf_streams::push_lease_until.le(now_s)),
        )
        // Something to push: feed entries past the cursor, or queued events.
        .filter(
            ssf_streams::feed_cursor
                .lt(head)
                .assume_not_null()
                .or(diesel::dsl::exists(
                    ssf_events::table
                        .filter(ssf_events::stream_id.eq(ssf_streams::id))
                        .filter(ssf_events::status.eq("pending")),
                )),
        )
        // Round robin: the stream whose last pass ended longest ago first (a released lease
        // keeps the time it was released), so more streams with work than a pass takes each
        // get their turn.
        .order((
            ssf_streams::push_lease_until.is_not_null(),
            ssf_streams::push_lease_until.asc(),
            ssf_streams::updated_at.asc(),
        ))
        .limit(STREAMS_PER_PASS)
        .select(ssf_streams::id)
        .load(c)?;
    let mut claimed = Vec::new();
    for id in candidates {
        // Compare and set: another instance may have taken it since.
        let took = diesel::update(
            ssf_streams::table.filter(ssf_streams::id.eq(&id)).filter(
                ssf_streams::push_lease_until
                    .is_null()
                    .or(ssf_streams::push_lease_until.le(now_s)),
            ),
        )
        .set(ssf_streams::push_lease_until.eq(stored(until)))
        .execute(c)?;
        if took == 1 {
            claimed.push(
                ssf_streams::table
                    .filter(ssf_streams::id.eq(&id))
                    .select(StreamRow::as_select())
                    .first(c)?,
            );
        }
    }
    Ok(claimed)
}

enum Outcome {
    Accepted,
    /// The receiver refused this SET (RFC 8935 section 2.3): sending it again cannot help.
    Refused(String),
    Failed(String),
}

async fn send(svc: &SsfService, http: &reqwest::Client, stream: &StreamRow, d: &Due) -> Outcome {
    let Some(url) = stream.endpoint_url.as_deref() else {
        return Outcome::Failed("the stream has no endpoint_url".into());
    };
    if !target_allowed(&svc.platform, url) {
        return Outcome::Failed("the endpoint points to a non-public address".into());
    }
    let mut request = http
        .post(url)
        .header("content-type", "application/secevent+jwt")
        .header("accept", "application/json")
        .body(svc.sign(stream, d));
    if let Some(enc) = &stream.authorization_header_enc {
        match svc
            .platform
            .master_key
            .cipher(HEADER_KEY)
            .decrypt_str(enc, &header_aad(&stream.id))
        {
            Ok(h) => request = request.header("authorization", h),
            Err(_) => {
                return Outcome::Failed("the authorization header cannot be decrypted".into());
            }
        }
    }
    match request.send().await {
        Ok(r) if r.status().is_success() => Outcome::Accepted,
        Ok(r) if r.status() == reqwest::StatusCode::BAD_REQUEST => {
            Outcome::Refused(refusal(r).await)
        }
        Ok(r) => Outcome::Failed(format!("the receiver answered {}", r.status())),
        Err(e) if e.is_timeout() => Outcome::Failed("timed out".into()),
        Err(e) if e.is_connect() => Outcome::Failed("could not connect".into()),
        Err(_) => Outcome::Failed("request failed".into()),
    }
}

/// The most of a refusal's body that is read. RFC 8935's error object is a few hundred bytes,
/// and the receiver is whoever registered the stream: a body without end must not be read to
/// the request timeout into memory.
const REFUSAL_BODY_MAX: usize = 4 * 1024;

/// What a receiver's 400 says (RFC 8935 section 2.4: `err` and `description`), read from at
/// most [`REFUSAL_BODY_MAX`] bytes; a longer or unreadable body is a plain `invalid_request`.
async fn refusal(mut r: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut whole = false;
    while body.len() <= REFUSAL_BODY_MAX {
        match r.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => {
                whole = true;
                break;
            }
            Err(_) => break,
        }
    }
    let body: serde_json::Value = if whole && body.len() <= REFUSAL_BODY_MAX {
        serde_json::from_slice(&body).unwrap_or_default()
    } else {
        serde_json::Value::Null
    };
    let err = body["err"].as_str().unwrap_or("invalid_request");
    let description = body["description"].as_str().unwrap_or("");
    format!("{err}: {description}").chars().take(300).collect()
}

/// Records one SET's outcome; `false` when the stream must stop for now.
fn record(
    c: &mut AnyConnection,
    stream: &StreamRow,
    d: &Due,
    outcome: &Outcome,
    max_attempts: i32,
    retry_at: DateTime<Utc>,
) -> StorageResult<bool> {
    let this = ssf_events::table
        .filter(ssf_events::stream_id.eq(&stream.id))
        .filter(ssf_events::seq.eq(d.seq.unwrap_or(-1)));
    let feed_done = |c: &mut AnyConnection| match d.position {
        Some(p) => {
            let from: Option<i64> = ssf_streams::table
                .filter(ssf_streams::id.eq(&stream.id))
                .select(ssf_streams::feed_cursor)
                .first(c)?;
            advance_cursor(c, &stream.id, from.unwrap_or(p), p)
        }
        None => Ok(()),
    };
    match outcome {
        Outcome::Accepted => {
            diesel::delete(this).execute(c)?;
            feed_done(c)?;
            Ok(true)
        }
        Outcome::Refused(error) => {
            diesel::update(this)
                .set((
                    ssf_events::status.eq("failed"),
                    ssf_events::last_error.eq(error),
                ))
                .execute(c)?;
            feed_done(c)?;
            Ok(true)
        }
        Outcome::Failed(error) => {
            diesel::update(this)
                .set(ssf_events::attempts.eq(ssf_events::attempts + 1))
                .execute(c)?;
            let attempts: Option<i32> = this.select(ssf_events::attempts).first(c).optional()?;
            if attempts.is_some_and(|a| a >= max_attempts) {
                diesel::update(this)
                    .set((
                        ssf_events::status.eq("failed"),
                        ssf_events::last_error.eq(error),
                    ))
                    .execute(c)?;
            }
            diesel::update(ssf_streams::table.filter(ssf_streams::id.eq(&stream.id)))
                .set((
                    ssf_streams::push_failures.eq(ssf_streams::push_failures + 1),
                    ssf_streams::next_push_at.eq(stored(retry_at)),
                    ssf_streams::last_error.eq(error),
                ))
                .execute(c)?;
            Ok(false)
        }
    }
}

/// Pushes one claimed stream's due events in order, then releases its lease.
async fn push_stream(
    svc: &SsfService,
    http: &reqwest::Client,
    stream: StreamRow,
    lease: std::time::Duration,
) -> StorageResult<PushReport> {
    let settings = svc.platform.settings.webhooks.clone();
    // Another instance may claim the stream once the lease runs out: a pass stops while one
    // more attempt (bounded by the timeout) and its record still fit, so it never overlaps
    // another instance's pass (which would send out of order).
    let stop_at = tokio::time::Instant::now() + lease
        - settings.timeout.get()
        - std::time::Duration::from_secs(10);
    let s = stream.clone();
    let due = svc
        .platform
        .db
        .run(move |c| {
            // The head first: entries up to it are all readable when the feed is read next.
            let head = platform::revocation::feed_head(c)?;
            let due = due(c, &s, EVENTS_PER_PASS)?;
            // Nothing retained between the cursor and the head (those entries expired and were
            // purged): the cursor moves to the head, so the stream has no work until there is
            // more (it would otherwise be claimed on every pass).
            if let (true, Some(cursor)) = (due.is_empty(), s.feed_cursor)
                && cursor < head
            {
                super::poll::advance_cursor(c, &s.id, cursor, head)?;
            }
            Ok(due)
        })
        .await?;
    let mut report = PushReport::default();
    let mut healthy = true;
    for d in &due {
        if tokio::time::Instant::now() >= stop_at {
            break;
        }
        let outcome = send(svc, http, &stream, d).await;
        match &outcome {
            Outcome::Accepted => report.delivered += 1,
            Outcome::Refused(_) => report.refused += 1,
            Outcome::Failed(_) => report.failed_attempts += 1,
        }
        let retry_at = svc.platform.now()
            + backoff(
                stream.push_failures + 1,
                settings.initial_backoff.as_chrono(),
                settings.max_backoff.as_chrono(),
            );
        let (s, d) = (stream.clone(), d.clone());
        let max_attempts = settings.max_attempts as i32;
        healthy = svc
            .platform
            .db
            .write(move |c| record(c, &s, &d, &outcome, max_attempts, retry_at))
            .await?;
        if !healthy {
            break;
        }
    }
    let id = stream.id.clone();
    // The lease stays, expired, as the time this pass ended: the order streams are claimed in.
    let released = stored(svc.platform.now());
    svc.platform
        .db
        .write(move |c| {
            let target = ssf_streams::table.filter(ssf_streams::id.eq(&id));
            if healthy {
                diesel::update(target)
                    .set((
                        ssf_streams::push_failures.eq(0),
                        ssf_streams::push_lease_until.eq(released),
                    ))
                    .execute(c)?;
            } else {
                diesel::update(target)
                    .set(ssf_streams::push_lease_until.eq(released))
                    .execute(c)?;
            }
            Ok(())
        })
        .await?;
    Ok(report)
}

/// One pass over the streams of `lane` with something to push.
pub async fn deliver_due(
    svc: &SsfService,
    http: &reqwest::Client,
    lane: Lane,
) -> StorageResult<PushReport> {
    let now = svc.platform.now();
    // The lease outlives a stream's pass (each attempt is bounded by the timeout).
    let lease = svc.platform.settings.webhooks.timeout.as_chrono() * 3 + Duration::seconds(30);
    let streams = svc
        .platform
        .db
        .write(move |c| claim(c, now, now + lease, lane))
        .await?;
    let results = futures_util::future::join_all(
        streams
            .into_iter()
            .map(|s| push_stream(svc, http, s, lease.to_std().unwrap_or_default())),
    )
    .await;
    let mut report = PushReport::default();
    for r in results {
        match r {
            Ok(r) => {
                report.delivered += r.delivered;
                report.refused += r.refused;
                report.failed_attempts += r.failed_attempts;
            }
            Err(e) => tracing::warn!(error = %e, "SSF push to one stream failed; will retry"),
        }
    }
    metrics::counter!("consent_ssf_sets_pushed_total").increment(report.delivered as u64);
    metrics::counter!("consent_ssf_push_failures_total").increment(report.failed_attempts as u64);
    Ok(report)
}

/// Runs [`deliver_due`] for each [`Lane`], each on its own, every `webhooks.delivery_interval`
/// and after every revocation committed on any instance, until shutdown.
pub fn spawn_delivery(
    svc: SsfService,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = match http_client(&svc.platform) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "SSF push delivery disabled: no HTTP client");
                return;
            }
        };
        tokio::join!(
            lane_loop(&svc, &http, Lane::Production, shutdown.clone()),
            lane_loop(&svc, &http, Lane::Sandbox, shutdown),
        );
    })
}

async fn lane_loop(
    svc: &SsfService,
    http: &reqwest::Client,
    lane: Lane,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(svc.platform.settings.webhooks.delivery_interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A revocation committed on this instance, or announced by another one on the revocation
    // channel (Redis), starts a pass at once; other events wait a tick.
    let mut wake = svc.platform.revocation_signals.wakeups();
    let channel = platform::revocation::REVOCATION_CHANNEL;
    let mut announced = svc.platform.cache.subscribe(channel);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.changed() => {}
            msg = announced.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = msg {
                    announced = svc.platform.cache.subscribe(channel);
                }
            }
            _ = shutdown.changed() => return,
        }
        if let Err(e) = deliver_due(svc, http, lane).await {
            tracing::warn!(error = %e, ?lane, "SSF push pass failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A receiver on a local port that answers every request with a 400 whose body is `head`
    /// followed, when `endless`, by padding that never ends.
    async fn receiver(head: &'static str, endless: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    let framing = if endless {
                        "transfer-encoding: chunked".to_string()
                    } else {
                        format!("content-length: {}", head.len())
                    };
                    let start = format!(
                        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
                    );
                    let _ = socket.write_all(start.as_bytes()).await;
                    if !endless {
                        let _ = socket.write_all(head.as_bytes()).await;
                        return;
                    }
                    let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
                    if socket.write_all(chunk(head).as_bytes()).await.is_err() {
                        return;
                    }
                    let padding = chunk(&" ".repeat(8192));
                    // Until the client hangs up.
                    while socket.write_all(padding.as_bytes()).await.is_ok() {}
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn a_refusal_is_read_from_a_bounded_body() {
        let http = reqwest::Client::new();
        let url = receiver(
            r#"{"err":"invalid_key","description":"unknown kid"}"#,
            false,
        )
        .await;
        let r = http.post(&url).send().await.unwrap();
        assert_eq!(refusal(r).await, "invalid_key: unknown kid");

        // A body without end is read no further than the bound: the answer comes at once (not
        // at the request timeout), and it is the plain refusal.
        let url = receiver(r#"{"err":"invalid_key","description":"unknown kid""#, true).await;
        let r = http.post(&url).send().await.unwrap();
        let read = tokio::time::timeout(std::time::Duration::from_secs(20), refusal(r));
        assert_eq!(read.await.expect("read to the bound"), "invalid_request: ");
    }
}
