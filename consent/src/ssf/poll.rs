//! What a stream has to deliver, in order, and delivery by poll (RFC 8936).
//!
//! A stream's events are its queued events (`ssf_events`, in `seq` order), then, for a stream
//! reading the revocation feed, the feed's entries after the stream's cursor (in feed order). A
//! queued event leaves the queue when acknowledged (poll) or accepted (push); a feed entry is
//! passed when it, or a later entry, is acknowledged: the cursor moves to the highest position
//! acknowledged, as with `GET /oauth2/revocations?since=`.

use std::collections::BTreeMap;
use std::time::Duration;

use diesel::prelude::*;
use platform::problem::ApiError;
use platform::ssf::{self as events, StreamStatus};
use platform::storage::schema::{ssf_events, ssf_streams};
use platform::storage::{AnyConnection, StorageError, StorageResult};
use serde::{Deserialize, Serialize};

use super::set::{SetClaims, sign};
use super::{SsfService, StreamRow, unix};
use crate::oauth::clients::OAuthClient;

/// Events one poll returns at the most (a larger `maxEvents` gets this many).
pub const MAX_EVENTS: i64 = 100;
/// How long a poll without `returnImmediately` waits for an event.
pub const LONG_POLL: Duration = Duration::from_secs(10);
const MAX_ACKS: usize = 1000;
const MAX_JTI: usize = 128;

/// An event due for a stream, not yet signed.
#[derive(Debug, Clone)]
pub struct Due {
    pub jti: String,
    pub event_type: String,
    pub subject: String,
    pub body: serde_json::Value,
    pub iat: i64,
    /// Queued events: their `seq`; feed entries: `None`.
    pub seq: Option<i64>,
    /// Feed entries: their position.
    pub position: Option<i64>,
}

/// Up to `limit` events of `stream`, in order.
pub fn due(c: &mut AnyConnection, stream: &StreamRow, limit: i64) -> StorageResult<Vec<Due>> {
    type Queued = (i64, String, String, String, String, chrono::NaiveDateTime);
    let queued: Vec<Queued> = ssf_events::table
        .filter(ssf_events::stream_id.eq(&stream.id))
        .filter(ssf_events::status.eq("pending"))
        .order(ssf_events::seq.asc())
        .limit(limit)
        .select((
            ssf_events::seq,
            ssf_events::jti,
            ssf_events::event_type,
            ssf_events::subject,
            ssf_events::claims,
            ssf_events::created_at,
        ))
        .load(c)?;
    let mut out: Vec<Due> = queued
        .into_iter()
        .map(|(seq, jti, event_type, subject, claims, at)| Due {
            jti,
            event_type,
            subject,
            body: serde_json::from_str(&claims).unwrap_or_default(),
            iat: unix(at),
            seq: Some(seq),
            position: None,
        })
        .collect();
    let room = limit - out.len() as i64;
    if let (Some(cursor), true) = (stream.feed_cursor, room > 0) {
        for e in platform::revocation::read_feed(c, cursor, room)? {
            let position = e.position;
            let mut body = serde_json::json!({
                "event_timestamp": unix(e.revoked_at),
                "revoked_at": unix(e.revoked_at),
                "expires_at": unix(e.expires_at),
            });
            if let Some(r) = &e.revocation_id {
                body["revocation_id"] = r.clone().into();
            }
            out.push(Due {
                jti: format!("{}.{position}", stream.id),
                event_type: events::REVOCATION.into(),
                subject: e.grant_id,
                body,
                iat: unix(e.revoked_at),
                seq: None,
                position: Some(position),
            });
        }
    }
    Ok(out)
}

/// Removes acknowledged events from the queue (and moves the feed cursor); events reported as
/// errors are kept as `failed`, with the receiver's error, and not delivered again.
pub fn acknowledge(
    c: &mut AnyConnection,
    stream: &StreamRow,
    acks: &[String],
    errors: &BTreeMap<String, SetError>,
) -> StorageResult<()> {
    if !acks.is_empty() {
        diesel::delete(
            ssf_events::table
                .filter(ssf_events::stream_id.eq(&stream.id))
                .filter(ssf_events::jti.eq_any(acks)),
        )
        .execute(c)?;
    }
    // One read finds which reported jtis are queued here: made-up ones cost nothing more.
    let reported: Vec<&String> = errors.keys().collect();
    let queued: Vec<String> = if reported.is_empty() {
        Vec::new()
    } else {
        ssf_events::table
            .filter(ssf_events::stream_id.eq(&stream.id))
            .filter(ssf_events::status.eq("pending"))
            .filter(ssf_events::jti.eq_any(&reported))
            .select(ssf_events::jti)
            .load(c)?
    };
    for jti in &queued {
        let Some(e) = errors.get(jti) else { continue };
        diesel::update(
            ssf_events::table
                .filter(ssf_events::stream_id.eq(&stream.id))
                .filter(ssf_events::jti.eq(jti)),
        )
        .set((
            ssf_events::status.eq("failed"),
            ssf_events::last_error.eq(e.to_string()),
        ))
        .execute(c)?;
    }
    if let Some(cursor) = stream.feed_cursor {
        let prefix = format!("{}.", stream.id);
        let acked = acks
            .iter()
            .chain(errors.keys())
            .filter_map(|j| j.strip_prefix(&prefix)?.parse::<i64>().ok())
            .max();
        if let Some(acked) = acked.filter(|a| *a > cursor) {
            // Never past the feed's end: a made-up position cannot skip entries to come.
            let head = platform::revocation::feed_head(c)?;
            let to = acked.min(head).max(cursor);
            advance_cursor(c, &stream.id, cursor, to)?;
        }
    }
    Ok(())
}

/// Moves a stream's feed cursor from `from` to `to` (only if nobody moved it meanwhile).
pub fn advance_cursor(
    c: &mut AnyConnection,
    stream: &str,
    from: i64,
    to: i64,
) -> StorageResult<()> {
    diesel::update(
        ssf_streams::table
            .filter(ssf_streams::id.eq(stream))
            .filter(ssf_streams::feed_cursor.eq(from)),
    )
    .set(ssf_streams::feed_cursor.eq(to))
    .execute(c)?;
    Ok(())
}

/// A receiver's error for one SET (RFC 8936 section 2.4.2).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct SetError {
    /// An RFC 8935 error code, e.g. `invalid_key`.
    pub err: String,
    pub description: Option<String>,
}

impl std::fmt::Display for SetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let err: String = self.err.chars().take(64).collect();
        match &self.description {
            Some(d) => write!(f, "{err}: {}", d.chars().take(256).collect::<String>()),
            None => f.write_str(&err),
        }
    }
}

/// `POST /ssf/poll/{stream_id}` (RFC 8936 section 2.4).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PollRequest {
    /// At most this many SETs (0: only acknowledge; above 100: 100). Default 25.
    #[serde(rename = "maxEvents")]
    pub max_events: Option<i64>,
    /// `false` (the default): wait up to 10 seconds for an event when none is queued.
    #[serde(rename = "returnImmediately")]
    pub return_immediately: Option<bool>,
    /// `jti`s of SETs received and processed.
    #[serde(default)]
    pub ack: Vec<String>,
    /// `jti`s of SETs refused, with the reason.
    #[serde(rename = "setErrs", default)]
    pub set_errs: BTreeMap<String, SetError>,
}

/// The answer to a poll.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PollResponse {
    /// SETs by `jti`, each a compact JWS (`application/secevent+jwt`).
    pub sets: BTreeMap<String, String>,
    /// More events are queued than were returned.
    #[serde(rename = "moreAvailable")]
    pub more_available: bool,
}

fn check(req: &PollRequest) -> Result<i64, ApiError> {
    let max = req.max_events.unwrap_or(25);
    if max < 0 {
        return Err(ApiError::field("maxEvents", "must be 0 or more"));
    }
    if req.ack.len() + req.set_errs.len() > MAX_ACKS {
        return Err(ApiError::field(
            "ack",
            format!("at most {MAX_ACKS} acknowledgements and errors per poll"),
        ));
    }
    if req
        .ack
        .iter()
        .chain(req.set_errs.keys())
        .any(|j| j.is_empty() || j.len() > MAX_JTI)
    {
        return Err(ApiError::field(
            "ack",
            format!("a jti is 1 to {MAX_JTI} characters"),
        ));
    }
    Ok(max.min(MAX_EVENTS))
}

impl SsfService {
    /// Signs `due` for `stream`'s receiver with the active key.
    pub fn sign(&self, stream: &StreamRow, due: &Due) -> String {
        sign(
            &self.keys.current(),
            &SetClaims {
                issuer: &self.issuer,
                jti: &due.jti,
                iat: due.iat,
                audience: &stream.client_id,
                subject: &due.subject,
                event_type: &due.event_type,
                body: due.body.clone(),
            },
        )
    }

    /// One poll: acknowledgements first (committed), then what is due, waiting for it unless
    /// `returnImmediately`. A paused or disabled stream returns nothing.
    pub async fn poll(
        &self,
        client: &OAuthClient,
        stream_id: String,
        req: PollRequest,
    ) -> Result<PollResponse, ApiError> {
        let max = check(&req)?;
        let client_id = client.id.clone();
        let stream = self
            .platform
            .db
            .write(move |c| {
                let stream =
                    super::find(c, &client_id, &stream_id)?.ok_or(StorageError::NotFound)?;
                if stream.delivery_method != "poll" {
                    return Ok(Err(stream));
                }
                acknowledge(c, &stream, &req.ack, &req.set_errs)?;
                // The cursor may have moved: read the stream again.
                Ok(Ok(
                    super::find(c, &client_id, &stream.id)?.ok_or(StorageError::NotFound)?
                ))
            })
            .await
            .map_err(|e| match e {
                StorageError::NotFound => ApiError::NotFound("stream"),
                other => other.into(),
            })?
            .map_err(|_| ApiError::BadRequest("this stream is delivered by push".into()))?;
        if max == 0 || stream.status() != StreamStatus::Enabled {
            return Ok(PollResponse {
                sets: BTreeMap::new(),
                more_available: false,
            });
        }
        let guard = if req.return_immediately.unwrap_or(false) {
            None
        } else {
            self.begin_wait(&stream.id)
        };
        let wait = guard.is_some();
        let deadline = tokio::time::Instant::now() + LONG_POLL;
        // Woken at once by revocations committed on this instance or announced by another one
        // (Redis); anything else is seen within 250 ms.
        let mut wake = self.platform.revocation_signals.wakeups();
        let mut announced = self
            .platform
            .cache
            .subscribe(platform::revocation::REVOCATION_CHANNEL);
        let result = loop {
            let s = stream.clone();
            let found = self.platform.db.run(move |c| due(c, &s, max + 1)).await;
            match found {
                Ok(found) if found.is_empty() && wait && tokio::time::Instant::now() < deadline => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                        _ = wake.changed() => {}
                        _ = announced.recv() => {}
                    }
                }
                other => break other,
            }
        };
        drop(guard);
        let mut found = result?;
        let more_available = found.len() as i64 > max;
        found.truncate(max as usize);
        let sets = found
            .iter()
            .map(|d| (d.jti.clone(), self.sign(&stream, d)))
            .collect();
        metrics::counter!("consent_ssf_sets_polled_total").increment(found.len() as u64);
        Ok(PollResponse {
            sets,
            more_available,
        })
    }

    /// A guard if this poll may wait: one waiting poll per stream and instance (others return
    /// at once, so a receiver cannot hold many connections open on one stream). Dropping the
    /// guard, also when the receiver hangs up, lets the next poll wait.
    fn begin_wait(&self, stream: &str) -> Option<WaitGuard> {
        let mut w = self.waiting.lock().ok()?;
        w.insert(stream.to_string()).then(|| WaitGuard {
            waiting: self.waiting.clone(),
            stream: stream.to_string(),
        })
    }
}

#[derive(Debug)]
struct WaitGuard {
    waiting: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    stream: String,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&self.stream);
        }
    }
}
