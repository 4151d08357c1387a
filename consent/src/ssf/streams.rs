//! Stream management (SSF 1.0 section 8.1): configuration, status, subjects and verification.
//! Every change is one transaction with its audit event.

use super::api::{
    CreateStream, DeliveryRequest, DeliveryView, StreamConfiguration, StreamStatusView,
    UpdateStatus, UpdateStream,
};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use platform::audit::{Actor, NewEvent, Target};
use platform::crypto::random_id;
use platform::problem::ApiError;
use platform::ssf::{self as events, StreamStatus};
use platform::storage::schema::{ssf_events, ssf_excluded_subjects, ssf_streams};
use platform::storage::{AnyConnection, StorageError, StorageResult};

use super::{
    HEADER_KEY, MAX_STREAMS_PER_CLIENT, MIN_VERIFICATION_INTERVAL, POLL, PUSH, SsfService,
    StreamRow, header_aad, stored,
};
use crate::oauth::clients::OAuthClient;

const MAX_EVENTS_REQUESTED: usize = 32;
const MAX_URI_LEN: usize = 256;
const MAX_AUTHORIZATION_HEADER: usize = 2048;
pub(super) const MAX_TEXT: usize = 500;

pub(super) fn text(field: &str, v: Option<&str>, max: usize) -> Result<(), ApiError> {
    match v {
        Some(s) if s.len() > max => Err(ApiError::field(
            field,
            format!("must be at most {max} characters"),
        )),
        Some(s) if s.chars().any(char::is_control) => Err(ApiError::field(
            field,
            "must not contain control characters",
        )),
        _ => Ok(()),
    }
}

/// The requested and delivered event types of a request (defaults when absent).
fn event_types(requested: Option<&[String]>) -> Result<(Vec<String>, Vec<String>), ApiError> {
    let requested: Vec<String> = match requested {
        None => events::EVENTS_SUPPORTED
            .iter()
            .filter(|t| t.starts_with("urn:consent:") && **t != events::REVOCATION)
            .map(|t| t.to_string())
            .collect(),
        Some(list) => {
            if list.len() > MAX_EVENTS_REQUESTED {
                return Err(ApiError::field(
                    "events_requested",
                    format!("must list at most {MAX_EVENTS_REQUESTED} event types"),
                ));
            }
            if list.iter().any(|t| t.len() > MAX_URI_LEN) {
                return Err(ApiError::field(
                    "events_requested",
                    format!("event type URIs are at most {MAX_URI_LEN} characters"),
                ));
            }
            // In the receiver's order, each type once.
            let mut out: Vec<String> = Vec::with_capacity(list.len());
            for t in list {
                if !out.contains(t) {
                    out.push(t.clone());
                }
            }
            out
        }
    };
    let delivered: Vec<String> = requested
        .iter()
        .filter(|t| events::EVENTS_SUPPORTED.contains(&t.as_str()))
        .cloned()
        .collect();
    if delivered.iter().any(|t| t == events::REVOCATION) && delivered.len() > 1 {
        return Err(ApiError::field(
            "events_requested",
            "the revocation feed (urn:consent:secevent:revocation) is a stream of its own: \
             request it alone",
        ));
    }
    Ok((requested, delivered))
}

/// A checked delivery: method, endpoint, encrypted-header plaintext.
struct Delivery {
    method: &'static str,
    endpoint_url: Option<String>,
    authorization_header: Option<String>,
}

/// The revocation feed is pushed only to production clients. A feed stream gets every entry of
/// every grant, and each one pushed costs a signature and an outgoing request within a pass
/// that waits for its slowest receiver: sandbox clients (no KYC, anyone may sign up for them)
/// pushing the feed to slow receivers by the hundred would hold up the passes that carry
/// revocations to real resource servers. Sandbox clients poll it (as `/oauth2/revocations`).
fn feed_push_allowed(client: &OAuthClient, method: &str, feed: bool) -> Result<(), ApiError> {
    if feed && method == "push" && !client.is_production() {
        return Err(ApiError::field(
            "delivery.method",
            "the revocation feed is pushed only to production clients; a sandbox client \
             polls it (urn:ietf:rfc:8936)",
        ));
    }
    Ok(())
}

fn delivery(
    svc: &SsfService,
    client: &OAuthClient,
    d: &DeliveryRequest,
) -> Result<Delivery, ApiError> {
    text(
        "delivery.authorization_header",
        d.authorization_header.as_deref(),
        MAX_AUTHORIZATION_HEADER,
    )?;
    match d.method.as_str() {
        POLL => Ok(Delivery {
            method: "poll",
            endpoint_url: None,
            authorization_header: None,
        }),
        PUSH => {
            let raw = d.endpoint_url.as_deref().ok_or_else(|| {
                ApiError::field(
                    "delivery.endpoint_url",
                    "push delivery needs an endpoint_url",
                )
            })?;
            let env = developer_portal::domain::Environment::parse(&client.environment)
                .unwrap_or(developer_portal::domain::Environment::Production);
            let url = developer_portal::domain::webhook_url(raw, env)
                .map_err(|e| ApiError::field("delivery.endpoint_url", e))?;
            if !crate::webhooks::target_allowed(&svc.platform, &url) {
                return Err(ApiError::field(
                    "delivery.endpoint_url",
                    "points to a non-public address; use a public HTTPS endpoint",
                ));
            }
            Ok(Delivery {
                method: "push",
                endpoint_url: Some(url),
                authorization_header: d.authorization_header.clone(),
            })
        }
        _ => Err(ApiError::field(
            "delivery.method",
            format!("must be {PUSH} (push) or {POLL} (poll)"),
        )),
    }
}

impl SsfService {
    /// The configuration a receiver reads back.
    pub fn view(&self, row: &StreamRow) -> StreamConfiguration {
        let endpoint_url = match row.delivery_method.as_str() {
            "poll" => format!("{}/ssf/poll/{}", self.issuer, row.id),
            _ => row.endpoint_url.clone().unwrap_or_default(),
        };
        StreamConfiguration {
            stream_id: row.id.clone(),
            iss: self.issuer.clone(),
            aud: row.client_id.clone(),
            events_supported: events::EVENTS_SUPPORTED
                .iter()
                .map(|s| s.to_string())
                .collect(),
            events_requested: serde_json::from_str(&row.events_requested).unwrap_or_default(),
            events_delivered: serde_json::from_str(&row.events_delivered).unwrap_or_default(),
            delivery: DeliveryView {
                method: if row.delivery_method == "poll" {
                    POLL
                } else {
                    PUSH
                }
                .into(),
                endpoint_url,
            },
            min_verification_interval: MIN_VERIFICATION_INTERVAL,
            description: row.description.clone(),
        }
    }

    fn encrypt_header(
        &self,
        stream_id: &str,
        header: Option<&str>,
    ) -> Result<Option<String>, ApiError> {
        header
            .map(|h| {
                self.platform
                    .master_key
                    .cipher(HEADER_KEY)
                    .encrypt(h.as_bytes(), &header_aad(stream_id))
                    .map_err(ApiError::internal)
            })
            .transpose()
    }

    pub async fn create(
        &self,
        client: &OAuthClient,
        req: CreateStream,
    ) -> Result<StreamConfiguration, ApiError> {
        text("description", req.description.as_deref(), MAX_TEXT)?;
        let d = delivery(self, client, &req.delivery)?;
        let (requested, delivered) = event_types(req.events_requested.as_deref())?;
        let id = random_id("ssf_");
        let header = self.encrypt_header(&id, d.authorization_header.as_deref())?;
        let feed = delivered.iter().any(|t| t == events::REVOCATION);
        feed_push_allowed(client, d.method, feed)?;
        let (client_id, now) = (client.id.clone(), self.platform.now());
        let row = self
            .platform
            .db
            .write(move |c| {
                // Two creates at once for one client wait for each other here, so the count
                // below holds (SQLite's write transactions are serial already).
                if let AnyConnection::Postgresql(pg) = c {
                    diesel::sql_query("SELECT 1 FROM clients WHERE id = $1 FOR NO KEY UPDATE")
                        .bind::<diesel::sql_types::Text, _>(&client_id)
                        .execute(pg)?;
                }
                let existing: i64 = ssf_streams::table
                    .filter(ssf_streams::client_id.eq(&client_id))
                    .count()
                    .get_result(c)?;
                if existing >= MAX_STREAMS_PER_CLIENT {
                    return Err(StorageError::Conflict(format!(
                        "a client has at most {MAX_STREAMS_PER_CLIENT} streams; delete one first"
                    )));
                }
                diesel::insert_into(ssf_streams::table)
                    .values((
                        ssf_streams::id.eq(&id),
                        ssf_streams::client_id.eq(&client_id),
                        ssf_streams::delivery_method.eq(d.method),
                        ssf_streams::endpoint_url.eq(&d.endpoint_url),
                        ssf_streams::authorization_header_enc.eq(&header),
                        ssf_streams::events_requested.eq(json(&requested)),
                        ssf_streams::events_delivered.eq(json(&delivered)),
                        ssf_streams::description.eq(&req.description),
                        ssf_streams::status.eq(StreamStatus::Enabled.as_str()),
                        // A new resource server reads every entry still retained.
                        ssf_streams::feed_cursor.eq(feed.then_some(0_i64)),
                        ssf_streams::push_failures.eq(0),
                        ssf_streams::created_at.eq(stored(now)),
                        ssf_streams::updated_at.eq(stored(now)),
                    ))
                    .execute(c)?;
                audit(
                    c,
                    &client_id,
                    "ssf.stream.created",
                    &id,
                    serde_json::json!({
                        "delivery": d.method, "events_delivered": delivered,
                    }),
                    now,
                )?;
                load(c, &id)
            })
            .await
            .map_err(conflict)?;
        Ok(self.view(&row))
    }

    pub async fn list(&self, client: &OAuthClient) -> Result<Vec<StreamConfiguration>, ApiError> {
        let client_id = client.id.clone();
        let rows = self
            .platform
            .db
            .run(move |c| {
                Ok(ssf_streams::table
                    .filter(ssf_streams::client_id.eq(&client_id))
                    .order(ssf_streams::created_at.asc())
                    .select(StreamRow::as_select())
                    .load(c)?)
            })
            .await?;
        Ok(rows.iter().map(|r| self.view(r)).collect())
    }

    /// The caller's stream `id`, or 404 (also for another client's stream).
    async fn read(&self, client: &OAuthClient, id: String) -> Result<StreamRow, ApiError> {
        let client_id = client.id.clone();
        self.platform
            .db
            .run(move |c| super::find(c, &client_id, &id))
            .await?
            .ok_or(ApiError::NotFound("stream"))
    }

    pub async fn get(
        &self,
        client: &OAuthClient,
        id: String,
    ) -> Result<StreamConfiguration, ApiError> {
        Ok(self.view(&self.read(client, id).await?))
    }

    /// The one shape of every change to an existing stream: in one write transaction, the
    /// caller's stream `id` (404 for another client's, as for none), `change`, and the audit
    /// event `action` with the details `change` returns. A [`Refused`] change must refuse before
    /// it writes anything (nothing is audited then).
    pub(super) async fn change<T, F>(
        &self,
        client: &OAuthClient,
        id: String,
        action: &'static str,
        change: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut AnyConnection, StreamRow, DateTime<Utc>) -> StorageResult<Changed<T>>
            + Send
            + 'static,
    {
        let client_id = client.id.clone();
        let now = self.platform.now();
        let outcome = self
            .platform
            .db
            .write(move |c| {
                let stream = super::find(c, &client_id, &id)?.ok_or(StorageError::NotFound)?;
                let stream_id = stream.id.clone();
                Ok(match change(c, stream, now)? {
                    Ok((value, details)) => {
                        audit(c, &client_id, action, &stream_id, details, now)?;
                        Ok(value)
                    }
                    Err(refused) => Err(refused),
                })
            })
            .await
            .map_err(conflict)?;
        outcome.map_err(|Refused(e)| e)
    }

    /// PATCH (`replace` false) or PUT (`replace` true).
    pub async fn update(
        &self,
        client: &OAuthClient,
        req: UpdateStream,
        replace: bool,
    ) -> Result<StreamConfiguration, ApiError> {
        text("description", req.description.as_deref(), MAX_TEXT)?;
        if replace && req.delivery.is_none() {
            return Err(ApiError::field(
                "delivery",
                "PUT replaces the whole stream: give delivery",
            ));
        }
        let d = req
            .delivery
            .as_ref()
            .map(|d| delivery(self, client, d))
            .transpose()?;
        let types = if replace || req.events_requested.is_some() {
            Some(event_types(req.events_requested.as_deref())?)
        } else {
            None
        };
        let header = match &d {
            Some(d) => {
                Some(self.encrypt_header(&req.stream_id, d.authorization_header.as_deref())?)
            }
            None => None,
        };
        let id = req.stream_id.clone();
        let sandbox = client.clone();
        let row = self
            .change(client, id, "ssf.stream.updated", move |c, current, now| {
                // The stream as this change leaves it, read under its row lock (two changes at
                // once cannot each pass a check that their sum fails).
                if let AnyConnection::Postgresql(pg) = c {
                    diesel::sql_query("SELECT 1 FROM ssf_streams WHERE id = $1 FOR UPDATE")
                        .bind::<diesel::sql_types::Text, _>(&current.id)
                        .execute(pg)?;
                }
                let current = load(c, &current.id)?;
                let method = d
                    .as_ref()
                    .map_or(current.delivery_method.as_str(), |d| d.method);
                let feed = match &types {
                    Some((_, delivered)) => delivered.iter().any(|t| t == events::REVOCATION),
                    None => current.feed_cursor.is_some(),
                };
                if let Err(e) = feed_push_allowed(&sandbox, method, feed) {
                    return Ok(Err(Refused(e)));
                }
                let target = ssf_streams::table.filter(ssf_streams::id.eq(&current.id));
                if let Some(d) = &d {
                    diesel::update(target)
                        .set((
                            ssf_streams::delivery_method.eq(d.method),
                            ssf_streams::endpoint_url.eq(&d.endpoint_url),
                            ssf_streams::authorization_header_enc.eq(header.flatten()),
                            ssf_streams::push_failures.eq(0),
                            ssf_streams::next_push_at.eq(None::<chrono::NaiveDateTime>),
                        ))
                        .execute(c)?;
                }
                if let Some((requested, delivered)) = &types {
                    let feed = delivered.iter().any(|t| t == events::REVOCATION);
                    // A stream that starts reading the feed starts at its beginning.
                    let cursor = feed.then(|| current.feed_cursor.unwrap_or(0));
                    diesel::update(target)
                        .set((
                            ssf_streams::events_requested.eq(json(requested)),
                            ssf_streams::events_delivered.eq(json(delivered)),
                            ssf_streams::feed_cursor.eq(cursor),
                        ))
                        .execute(c)?;
                }
                if replace || req.description.is_some() {
                    diesel::update(target)
                        .set(ssf_streams::description.eq(&req.description))
                        .execute(c)?;
                }
                diesel::update(target)
                    .set(ssf_streams::updated_at.eq(stored(now)))
                    .execute(c)?;
                let details = serde_json::json!({
                    "replace": replace,
                    "delivery": d.as_ref().map(|d| d.method),
                    "events_delivered": types.as_ref().map(|t| &t.1),
                });
                Ok(Ok((load(c, &current.id)?, details)))
            })
            .await?;
        Ok(self.view(&row))
    }

    /// Deletes a stream and what it queued.
    pub async fn delete(&self, client: &OAuthClient, id: String) -> Result<(), ApiError> {
        self.change(client, id, "ssf.stream.deleted", |c, row, _| {
            diesel::delete(ssf_events::table.filter(ssf_events::stream_id.eq(&row.id)))
                .execute(c)?;
            diesel::delete(
                ssf_excluded_subjects::table.filter(ssf_excluded_subjects::stream_id.eq(&row.id)),
            )
            .execute(c)?;
            diesel::delete(ssf_streams::table.filter(ssf_streams::id.eq(&row.id))).execute(c)?;
            Ok(Ok(((), serde_json::json!({}))))
        })
        .await
    }

    pub async fn status(
        &self,
        client: &OAuthClient,
        id: String,
    ) -> Result<StreamStatusView, ApiError> {
        Ok(status_view(&self.read(client, id).await?))
    }

    /// Enabling delivers what a pause queued, in order; disabling drops what is queued.
    pub async fn set_status(
        &self,
        client: &OAuthClient,
        req: UpdateStatus,
    ) -> Result<StreamStatusView, ApiError> {
        let status = StreamStatus::parse(&req.status).ok_or_else(|| {
            ApiError::field("status", "must be \"enabled\", \"paused\" or \"disabled\"")
        })?;
        text("reason", req.reason.as_deref(), MAX_TEXT)?;
        let id = req.stream_id.clone();
        let row = self
            .change(
                client,
                id,
                "ssf.stream.status_changed",
                move |c, current, now| {
                    diesel::update(ssf_streams::table.filter(ssf_streams::id.eq(&current.id)))
                        .set((
                            ssf_streams::status.eq(status.as_str()),
                            ssf_streams::status_reason.eq(&req.reason),
                            ssf_streams::updated_at.eq(stored(now)),
                            ssf_streams::push_failures.eq(0),
                            ssf_streams::next_push_at.eq(None::<chrono::NaiveDateTime>),
                        ))
                        .execute(c)?;
                    let dropped = if status == StreamStatus::Disabled {
                        diesel::delete(
                            ssf_events::table.filter(ssf_events::stream_id.eq(&current.id)),
                        )
                        .execute(c)?
                    } else {
                        0
                    };
                    let details = serde_json::json!({
                        "from": current.status, "to": status.as_str(), "reason": req.reason,
                        "events_dropped": dropped,
                    });
                    Ok(Ok((load(c, &current.id)?, details)))
                },
            )
            .await?;
        Ok(status_view(&row))
    }
}

/// A change refused after the stream was found (before anything was written).
#[derive(Debug)]
pub(super) struct Refused(pub ApiError);

/// What a change to a stream did: its value and the details of its audit event, or a refusal.
pub(super) type Changed<T> = Result<(T, serde_json::Value), Refused>;

fn status_view(row: &StreamRow) -> StreamStatusView {
    StreamStatusView {
        stream_id: row.id.clone(),
        status: row.status.clone(),
        reason: row.status_reason.clone(),
    }
}

fn json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

fn load(c: &mut AnyConnection, id: &str) -> Result<StreamRow, StorageError> {
    Ok(ssf_streams::table
        .filter(ssf_streams::id.eq(id))
        .select(StreamRow::as_select())
        .first(c)?)
}

pub(super) fn audit(
    c: &mut AnyConnection,
    client_id: &str,
    action: &'static str,
    stream_id: &str,
    details: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    NewEvent::new(
        Actor::client(client_id),
        action,
        Target::new("ssf_stream", stream_id),
    )
    .details(details)
    .record(c, now)
    .map(|_| ())
}

pub(super) fn conflict(e: StorageError) -> ApiError {
    match e {
        StorageError::NotFound => ApiError::NotFound("stream"),
        StorageError::Conflict(m) => ApiError::Conflict(m),
        other => other.into(),
    }
}
