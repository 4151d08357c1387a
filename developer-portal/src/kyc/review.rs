//! Staff review of KYC submissions: the queue, a submission awaiting review with every review
//! (viewing is audited), its outline outside review, and reviews with their consequences.

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use platform::audit::Actor;
use platform::crypto::{FieldCipher, random_id};
use platform::storage::AnyConnection;
use platform::storage::models::StaffStatus;
use platform::storage::models::{KycReview, KycSubmission};
use platform::storage::schema::{developers, kyc_reviews, kyc_submissions, staff};

use super::{
    KycOutline, KycStatus, QueueItem, ReviewDecision, ReviewView, StaffKycView, approvals_in_round,
    current_round, event, to_record, ts,
};
use crate::approvals::{StaffRole, justification};
use crate::error::{PortalError, PortalResult};

/// The review queue: submissions in `status` (default `submitted`), oldest first.
pub fn queue(conn: &mut AnyConnection, status: Option<KycStatus>) -> PortalResult<Vec<QueueItem>> {
    let status = status.unwrap_or(KycStatus::Submitted);
    let rows: Vec<(String, String, String, String, Option<NaiveDateTime>)> = kyc_submissions::table
        .inner_join(developers::table)
        .filter(kyc_submissions::status.eq(status.as_str()))
        .order(kyc_submissions::submitted_at.asc())
        .limit(500)
        .select((
            kyc_submissions::id,
            developers::email,
            kyc_submissions::country,
            kyc_submissions::status,
            kyc_submissions::submitted_at,
        ))
        .load(conn)?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, email, country, st, submitted_at) in rows {
        let round = current_round(conn, &id)?;
        let approvals = approvals_in_round(conn, &id, round)?;
        out.push(QueueItem {
            id,
            developer_email: email,
            country,
            status: KycStatus::parse(&st).unwrap_or(status),
            round,
            approvals_this_round: approvals,
            submitted_at: submitted_at.map(|t| t.and_utc()),
        });
    }
    Ok(out)
}

/// KYC records hold developers' personal data and documents: reading one and deciding on it
/// need the compliance role (support sees the queue only).
fn require_compliance(conn: &mut AnyConnection, staff_id: &str) -> PortalResult<()> {
    if crate::approvals::roles_of(conn, staff_id)?.contains(&StaffRole::Compliance) {
        return Ok(());
    }
    Err(PortalError::Forbidden(
        "reading or reviewing a KYC submission needs the compliance role".into(),
    ))
}

/// A submission awaiting review, with every review. Viewing decrypted PII needs the compliance
/// role and is audited. Outside review (decided, a draft, or back with the developer) it is
/// refused here: a decided one is read with a request approved by a second compliance member and
/// the credential it yields (the authorization server's staff access, which calls
/// [`read_outside_review`]); [`staff_outline`] shows what is not personal data.
pub fn staff_view(
    conn: &mut AnyConnection,
    cipher: &FieldCipher,
    submission_id: &str,
    viewer_staff_id: &str,
    now: DateTime<Utc>,
) -> PortalResult<StaffKycView> {
    require_compliance(conn, viewer_staff_id)?;
    let row = submission(conn, submission_id)?;
    if row.status != KycStatus::Submitted.as_str() {
        return Err(PortalError::Forbidden(format!(
            "the submission is {}, not awaiting review: reading it needs a request approved by \
             another compliance member (POST /api/v1/admin/kyc/{submission_id}/access-requests)",
            row.status
        )));
    }
    let view = load_staff_view(conn, cipher, &row)?;
    event(Actor::staff(viewer_staff_id), "kyc.viewed", submission_id).record(conn, now)?;
    Ok(view)
}

/// A submission outside review, for a compliance member whose approved staff credential for it
/// the caller has checked; the caller audits the read (with the credential and the request).
pub fn read_outside_review(
    conn: &mut AnyConnection,
    cipher: &FieldCipher,
    submission_id: &str,
    viewer_staff_id: &str,
) -> PortalResult<StaffKycView> {
    require_compliance(conn, viewer_staff_id)?;
    let row = submission(conn, submission_id)?;
    load_staff_view(conn, cipher, &row)
}

/// What any compliance member sees of a submission without reading it: the developer's email,
/// the status and every review (no decrypted personal data, not audited, like the queue).
pub fn staff_outline(
    conn: &mut AnyConnection,
    submission_id: &str,
    viewer_staff_id: &str,
) -> PortalResult<KycOutline> {
    require_compliance(conn, viewer_staff_id)?;
    let row = submission(conn, submission_id)?;
    outline(conn, &row)
}

/// The status of submission `submission_id` (404 when there is none).
pub fn submission_status(conn: &mut AnyConnection, submission_id: &str) -> PortalResult<KycStatus> {
    let row = submission(conn, submission_id)?;
    Ok(KycStatus::parse(&row.status).unwrap_or(KycStatus::Draft))
}

fn submission(conn: &mut AnyConnection, submission_id: &str) -> PortalResult<KycSubmission> {
    kyc_submissions::table
        .filter(kyc_submissions::id.eq(submission_id))
        .select(KycSubmission::as_select())
        .first(conn)
        .optional()?
        .ok_or(PortalError::NotFound("KYC submission"))
}

fn load_staff_view(
    conn: &mut AnyConnection,
    cipher: &FieldCipher,
    row: &KycSubmission,
) -> PortalResult<StaffKycView> {
    let o = outline(conn, row)?;
    Ok(StaffKycView {
        record: to_record(conn, cipher, row)?,
        developer_email: o.developer_email,
        reviews: o.reviews,
        approvals_this_round: o.approvals_this_round,
    })
}

fn outline(conn: &mut AnyConnection, row: &KycSubmission) -> PortalResult<KycOutline> {
    let submission_id = row.id.as_str();
    let email: String = developers::table
        .filter(developers::id.eq(&row.developer_id))
        .select(developers::email)
        .first(conn)?;
    let round = current_round(conn, submission_id)?;
    let reviews: Vec<(KycReview, String)> = kyc_reviews::table
        .inner_join(staff::table.on(staff::id.eq(kyc_reviews::staff_id)))
        .filter(kyc_reviews::submission_id.eq(submission_id))
        .order((
            kyc_reviews::round.asc(),
            kyc_reviews::created_at.asc(),
            kyc_reviews::id.asc(),
        ))
        .select((KycReview::as_select(), staff::username))
        .load(conn)?;
    let approvals_this_round = reviews
        .iter()
        .filter(|(r, _)| r.round == round && r.decision == "approve")
        .count();
    Ok(KycOutline {
        id: row.id.clone(),
        status: KycStatus::parse(&row.status).unwrap_or(KycStatus::Draft),
        round,
        developer_email: email,
        reviews: reviews
            .into_iter()
            .map(|(r, username)| ReviewView {
                id: r.id,
                staff_id: r.staff_id,
                staff_username: username,
                decision: r.decision,
                justification: r.justification,
                round: r.round,
                created_at: r.created_at.and_utc(),
            })
            .collect(),
        approvals_this_round,
    })
}

/// Records `staff_id`'s review of a submitted submission, and applies its consequence: a
/// rejection rejects, a request for information sends it back to the developer, and the second
/// approval of the round by a distinct staff member approves. Refuses a second review by the same
/// staff member in a round, reviewers whose username is the developer's email, and staff without
/// the compliance role.
pub fn review(
    conn: &mut AnyConnection,
    cipher: &FieldCipher,
    submission_id: &str,
    staff_id: &str,
    decision: ReviewDecision,
    justification_text: &str,
    now: DateTime<Utc>,
) -> PortalResult<StaffKycView> {
    let justification =
        justification(justification_text).map_err(|m| PortalError::field("justification", m))?;
    let (status, developer_id): (String, String) = kyc_submissions::table
        .filter(kyc_submissions::id.eq(submission_id))
        .select((kyc_submissions::status, kyc_submissions::developer_id))
        .first(conn)
        .optional()?
        .ok_or(PortalError::NotFound("KYC submission"))?;
    // Touching the row takes its write lock (PostgreSQL; SQLite's write lock is already held), so
    // concurrent reviews of one submission are serialised and the second one counts the first's
    // approval: two simultaneous approvals cannot both see "one approval so far".
    let locked = diesel::update(
        kyc_submissions::table
            .filter(kyc_submissions::id.eq(submission_id))
            .filter(kyc_submissions::status.eq(KycStatus::Submitted.as_str())),
    )
    .set(kyc_submissions::updated_at.eq(ts(now)))
    .execute(conn)?;
    if status != "submitted" || locked != 1 {
        return Err(PortalError::Conflict(format!(
            "the submission is {status}, not awaiting review"
        )));
    }
    let (username, staff_status): (String, String) = staff::table
        .filter(staff::id.eq(staff_id))
        .select((staff::username, staff::status))
        .first(conn)
        .optional()?
        .ok_or(PortalError::Forbidden("unknown staff member".into()))?;
    if staff_status != StaffStatus::Active.as_str() {
        return Err(PortalError::Forbidden("staff member is not active".into()));
    }
    require_compliance(conn, staff_id)?;
    let developer_email: String = developers::table
        .filter(developers::id.eq(&developer_id))
        .select(developers::email)
        .first(conn)?;
    if username.trim().eq_ignore_ascii_case(developer_email.trim()) {
        return Err(PortalError::Forbidden(
            "you cannot review the KYC of your own developer account".into(),
        ));
    }
    let round = current_round(conn, submission_id)?;
    let mine: i64 = kyc_reviews::table
        .filter(kyc_reviews::submission_id.eq(submission_id))
        .filter(kyc_reviews::round.eq(round))
        .filter(kyc_reviews::staff_id.eq(staff_id))
        .count()
        .get_result(conn)?;
    if mine > 0 {
        return Err(PortalError::Conflict(
            "you have already reviewed this submission in this round; a second approval must \
             come from another staff member"
                .into(),
        ));
    }
    let review_id = random_id("rev_");
    diesel::insert_into(kyc_reviews::table)
        .values(KycReview {
            id: review_id.clone(),
            submission_id: submission_id.to_string(),
            staff_id: staff_id.to_string(),
            decision: decision.as_str().into(),
            justification: justification.clone(),
            round,
            // Microseconds: reviews of one round are listed in the order they were made.
            created_at: now.naive_utc().trunc_subsecs(6),
        })
        .execute(conn)?;
    event(Actor::staff(staff_id), "kyc.reviewed", submission_id)
        .details(serde_json::json!({
            "review_id": review_id,
            "decision": decision.as_str(),
            "round": round,
        }))
        .record(conn, now)?;
    let outcome = match decision {
        ReviewDecision::Approve => {
            (approvals_in_round(conn, submission_id, round)? >= 2).then_some(KycStatus::Approved)
        }
        ReviewDecision::Reject => Some(KycStatus::Rejected),
        ReviewDecision::NeedsInformation => Some(KycStatus::NeedsInformation),
    };
    if let Some(new_status) = outcome {
        let reason = (new_status != KycStatus::Approved).then_some(justification);
        let changed = diesel::update(
            kyc_submissions::table
                .filter(kyc_submissions::id.eq(submission_id))
                .filter(kyc_submissions::status.eq(KycStatus::Submitted.as_str())),
        )
        .set((
            kyc_submissions::status.eq(new_status.as_str()),
            kyc_submissions::decision_reason.eq(reason),
            kyc_submissions::decided_at.eq(ts(now)),
            kyc_submissions::updated_at.eq(ts(now)),
        ))
        .execute(conn)?;
        if changed != 1 {
            return Err(PortalError::Conflict(
                "the submission changed during the review; reload and try again".into(),
            ));
        }
        event(
            Actor::staff(staff_id),
            match new_status {
                KycStatus::Approved => "kyc.approved",
                KycStatus::Rejected => "kyc.rejected",
                _ => "kyc.needs_information",
            },
            submission_id,
        )
        .details(serde_json::json!({ "round": round, "developer_id": developer_id }))
        .record(conn, now)?;
    }
    let row = submission(conn, submission_id)?;
    load_staff_view(conn, cipher, &row)
}
