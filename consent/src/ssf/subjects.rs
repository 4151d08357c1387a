//! Subjects (SSF 1.0 section 8.1.3) and verification (section 8.1.4) of a stream.

use diesel::prelude::*;
use platform::problem::ApiError;
use platform::ssf::{self as events, StreamStatus};
use platform::storage::schema::{grant_rows, ssf_events, ssf_excluded_subjects, ssf_streams};

use super::api::{SubjectRequest, VerifyRequest};
use super::streams::{MAX_TEXT, Refused, text};
use super::{MIN_VERIFICATION_INTERVAL, SsfService, stored};
use crate::oauth::clients::OAuthClient;

impl SsfService {
    /// Adds (`add`) or removes a subject: a grant of the calling client. Another client's grant
    /// is refused the same way as a grant that does not exist.
    pub async fn subject(
        &self,
        client: &OAuthClient,
        req: SubjectRequest,
        add: bool,
    ) -> Result<(), ApiError> {
        if req.subject.format != "opaque" {
            return Err(ApiError::field(
                "subject.format",
                "must be \"opaque\" (a grant id)",
            ));
        }
        text("subject.id", Some(&req.subject.id), 128)?;
        let action = if add {
            "ssf.subject.added"
        } else {
            "ssf.subject.removed"
        };
        let grant = req.subject.id;
        self.change(client, req.stream_id, action, move |c, stream, now| {
            let theirs: i64 = grant_rows::table
                .filter(grant_rows::id.eq(&grant))
                .filter(grant_rows::client_id.eq(&stream.client_id))
                .count()
                .get_result(c)?;
            if theirs == 0 {
                return Ok(Err(Refused(ApiError::field(
                    "subject.id",
                    "is not a grant of this client",
                ))));
            }
            let excluded = ssf_excluded_subjects::table
                .filter(ssf_excluded_subjects::stream_id.eq(&stream.id))
                .filter(ssf_excluded_subjects::grant_id.eq(&grant));
            if add {
                diesel::delete(excluded).execute(c)?;
            } else if excluded.count().get_result::<i64>(c)? == 0 {
                diesel::insert_into(ssf_excluded_subjects::table)
                    .values((
                        ssf_excluded_subjects::stream_id.eq(&stream.id),
                        ssf_excluded_subjects::grant_id.eq(&grant),
                        ssf_excluded_subjects::created_at.eq(stored(now)),
                    ))
                    .execute(c)?;
            }
            Ok(Ok(((), serde_json::json!({ "grant_id": grant }))))
        })
        .await
    }

    /// Queues a verification event (SSF 1.0 section 8.1.4), at most one per
    /// [`MIN_VERIFICATION_INTERVAL`] seconds.
    pub async fn verify(&self, client: &OAuthClient, req: VerifyRequest) -> Result<(), ApiError> {
        text("state", req.state.as_deref(), MAX_TEXT)?;
        let action = "ssf.stream.verification_requested";
        self.change(client, req.stream_id, action, move |c, stream, now| {
            let last: Option<chrono::NaiveDateTime> = ssf_streams::table
                .filter(ssf_streams::id.eq(&stream.id))
                .select(ssf_streams::last_verification_at)
                .first(c)?;
            let since = last.map(|t| (now.naive_utc() - t).num_seconds());
            if since.is_some_and(|s| s < MIN_VERIFICATION_INTERVAL) {
                return Ok(Err(Refused(ApiError::TooManyRequests {
                    retry_after_secs: MIN_VERIFICATION_INTERVAL as u64,
                })));
            }
            diesel::update(ssf_streams::table.filter(ssf_streams::id.eq(&stream.id)))
                .set(ssf_streams::last_verification_at.eq(stored(now)))
                .execute(c)?;
            if stream.status() != StreamStatus::Disabled {
                let body = match &req.state {
                    Some(s) => serde_json::json!({ "state": s }),
                    None => serde_json::json!({}),
                };
                let event = events::NewEvent::new(
                    &stream.id,
                    events::SSF_VERIFICATION,
                    &stream.id,
                    &body,
                    now,
                );
                diesel::insert_into(ssf_events::table)
                    .values(&event)
                    .execute(c)?;
            }
            Ok(Ok(((), serde_json::json!({}))))
        })
        .await
    }
}
