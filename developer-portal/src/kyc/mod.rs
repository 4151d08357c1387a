//! KYC: the developer's verified legal identity, and its staff review.
//!
//! Status machine: `draft` -> `submitted` -> `approved` | `rejected` (with reason) |
//! `needs_information` -> (edited, resubmitted) -> `submitted` again, in a new review *round*.
//! A rejection is final. Approval takes two `approve` reviews in the same round from two distinct
//! active staff members; one `reject` rejects and one `needs_information` sends it back.
//!
//! Four-eyes: the two approvals of a round *are* the four-eyes control for KYC. `kyc_reviews`
//! holds one row per (submission, round, staff member) (a unique constraint), each with its
//! decision and justification, visible to all staff and audited in the same transaction. (The
//! generic [`crate::approvals`] requests serve actions one person asks for and another approves,
//! such as client suspension; a KYC decision instead needs two independent reviews of the same
//! evidence.)
//!
//! PII (legal name, registration number, address, contact person, documents) is encrypted with
//! the `kyc-pii` key; the AAD binds each field to its row: `kyc_submissions.{field}:{row id}`.
//! The country is stored in clear (it drives routing of reviews and is not personal).
//!
//! This module: the status machine's types, validation, and the developer's side; [`review`]:
//! the staff queue and reviews.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use platform::audit::{Actor, NewEvent, Target};
use platform::crypto::{FieldCipher, random_id};
use platform::storage::AnyConnection;
use platform::storage::models::KycSubmission;
use platform::storage::schema::{kyc_reviews, kyc_submissions};
use serde::{Deserialize, Serialize};

use crate::domain::{self, Errors};
use crate::error::{PortalError, PortalResult};

mod review;

pub use review::{
    queue, read_outside_review, review, staff_outline, staff_view, submission_status,
};

/// The purpose label of the KYC field-encryption key.
pub const PII_KEY: &str = "kyc-pii";
pub const MAX_DOCUMENTS: usize = 20;

/// AAD of one encrypted field of one submission.
pub fn aad(field: &str, row_id: &str) -> String {
    format!("kyc_submissions.{field}:{row_id}")
}

pub use platform::storage::models::{KycStatus, ReviewDecision};

/// A staff decision as the review API and page name it.
pub fn parse_decision(s: &str) -> Result<ReviewDecision, String> {
    ReviewDecision::parse(s)
        .ok_or_else(|| "must be \"approve\", \"reject\" or \"needs_information\"".into())
}

/// Metadata of a supporting document (the document itself is exchanged out of band).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KycDocument {
    pub kind: String,
    pub filename: String,
    pub sha256: String,
}

impl fmt::Debug for KycDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KycDocument")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The kinds of KYC document (documented as the `DocumentKind` value set).
pub const DOCUMENT_KINDS: &[&str] = crate::api::DocumentKind::VALUES;

/// The validated KYC details. Debug is redacted: PII never reaches logs.
#[derive(Clone, PartialEq, Eq)]
pub struct KycDetails {
    pub legal_name: String,
    pub registration_number: String,
    pub country: String,
    pub address: String,
    pub contact_person: String,
    pub documents: Vec<KycDocument>,
}

impl fmt::Debug for KycDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KycDetails")
            .field("country", &self.country)
            .field("documents", &self.documents.len())
            .finish_non_exhaustive()
    }
}

impl KycDetails {
    /// Validates raw input, reporting every invalid field.
    #[allow(clippy::too_many_arguments)]
    pub fn parse(
        legal_name: &str,
        registration_number: &str,
        country: &str,
        address: &str,
        contact_person: &str,
        documents: &[KycDocument],
    ) -> PortalResult<Self> {
        let mut e = Errors::default();
        let legal_name = e.check("legal_name", domain::text(legal_name, 200));
        let registration_number =
            e.check("registration_number", domain::text(registration_number, 64));
        let country = e.check("country", domain::country(country));
        let address = e.check("address", domain::text(address, 500));
        let contact_person = e.check("contact_person", domain::text(contact_person, 200));
        if documents.is_empty() {
            e.push("documents", "list at least one supporting document");
        }
        if documents.len() > MAX_DOCUMENTS {
            e.push("documents", format!("at most {MAX_DOCUMENTS} documents"));
        }
        let mut docs = Vec::new();
        for (i, d) in documents.iter().enumerate().take(MAX_DOCUMENTS) {
            let kind = d.kind.trim();
            if !DOCUMENT_KINDS.contains(&kind) {
                e.push(
                    format!("documents[{i}].kind"),
                    format!("must be one of {}", DOCUMENT_KINDS.join(", ")),
                );
            }
            let filename = e.check(
                &format!("documents[{i}].filename"),
                domain::text(&d.filename, 255).and_then(|f| {
                    if f.contains('/') || f.contains('\\') {
                        Err("must be a file name, not a path".into())
                    } else {
                        Ok(f)
                    }
                }),
            );
            let sha = d.sha256.trim().to_ascii_lowercase();
            if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                e.push(
                    format!("documents[{i}].sha256"),
                    "must be a SHA-256 digest: 64 hexadecimal characters",
                );
            }
            if let Some(filename) = filename {
                docs.push(KycDocument {
                    kind: kind.to_string(),
                    filename,
                    sha256: sha,
                });
            }
        }
        e.into_result()?;
        Ok(Self {
            legal_name: legal_name.unwrap_or_default(),
            registration_number: registration_number.unwrap_or_default(),
            country: country.unwrap_or_default(),
            address: address.unwrap_or_default(),
            contact_person: contact_person.unwrap_or_default(),
            documents: docs,
        })
    }
}

/// A submission with its details decrypted.
#[derive(Debug, Clone)]
pub struct KycRecord {
    pub id: String,
    pub developer_id: String,
    pub status: KycStatus,
    pub round: i32,
    pub details: KycDetails,
    pub decision_reason: Option<String>,
    pub times: KycTimes,
}

/// When a submission was created, last changed, (last) submitted and decided.
#[derive(Debug, Clone, Copy)]
pub struct KycTimes {
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
}

impl KycTimes {
    fn of(row: &KycSubmission) -> Self {
        Self {
            created_at: row.created_at.and_utc(),
            updated_at: row.updated_at.and_utc(),
            submitted_at: row.submitted_at.map(|t| t.and_utc()),
            decided_at: row.decided_at.map(|t| t.and_utc()),
        }
    }
}

/// One staff review, as every staff member sees it.
#[derive(Debug, Clone)]
pub struct ReviewView {
    pub id: String,
    pub staff_id: String,
    pub staff_username: String,
    pub decision: String,
    pub justification: String,
    pub round: i32,
    pub created_at: DateTime<Utc>,
}

/// What a reviewer sees: the decrypted submission, the developer's email, every review.
#[derive(Debug, Clone)]
pub struct StaffKycView {
    pub record: KycRecord,
    pub developer_email: String,
    pub reviews: Vec<ReviewView>,
    /// Approvals in the current round.
    pub approvals_this_round: usize,
}

/// A submission as any compliance member sees it without reading it: no PII beyond the
/// developer's email.
#[derive(Debug, Clone)]
pub struct KycOutline {
    pub id: String,
    pub developer_email: String,
    pub status: KycStatus,
    pub round: i32,
    pub reviews: Vec<ReviewView>,
    /// Approvals in the current round.
    pub approvals_this_round: usize,
}

/// A queue entry (no PII beyond the developer's email).
#[derive(Debug, Clone)]
pub struct QueueItem {
    pub id: String,
    pub developer_email: String,
    pub country: String,
    pub status: KycStatus,
    pub round: i32,
    pub approvals_this_round: usize,
    pub submitted_at: Option<DateTime<Utc>>,
}

fn ts(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc().trunc_subsecs(0)
}

fn encrypt_all(cipher: &FieldCipher, id: &str, d: &KycDetails) -> PortalResult<[String; 5]> {
    let docs = serde_json::to_string(&d.documents)
        .map_err(|e| PortalError::field("documents", e.to_string()))?;
    Ok([
        cipher.encrypt_str(&d.legal_name, &aad("legal_name", id))?,
        cipher.encrypt_str(&d.registration_number, &aad("registration_number", id))?,
        cipher.encrypt_str(&d.address, &aad("address", id))?,
        cipher.encrypt_str(&d.contact_person, &aad("contact", id))?,
        cipher.encrypt_str(&docs, &aad("documents", id))?,
    ])
}

fn decrypt(cipher: &FieldCipher, row: &KycSubmission) -> PortalResult<KycDetails> {
    let id = &row.id;
    let documents_json = cipher.decrypt_str(&row.documents_enc, &aad("documents", id))?;
    Ok(KycDetails {
        legal_name: cipher.decrypt_str(&row.legal_name_enc, &aad("legal_name", id))?,
        registration_number: cipher.decrypt_str(
            &row.registration_number_enc,
            &aad("registration_number", id),
        )?,
        country: row.country.clone(),
        address: cipher.decrypt_str(&row.address_enc, &aad("address", id))?,
        contact_person: cipher.decrypt_str(&row.contact_enc, &aad("contact", id))?,
        documents: serde_json::from_str(&documents_json)
            .map_err(|_| PortalError::Crypto(platform::crypto::CryptoError::Decrypt))?,
    })
}

/// The current review round: 1, plus one for every time staff asked for more information.
fn current_round(conn: &mut AnyConnection, submission_id: &str) -> PortalResult<i32> {
    let n: i64 = kyc_reviews::table
        .filter(kyc_reviews::submission_id.eq(submission_id))
        .filter(kyc_reviews::decision.eq(ReviewDecision::NeedsInformation.as_str()))
        .count()
        .get_result(conn)?;
    Ok(1 + i32::try_from(n).unwrap_or(i32::MAX - 1))
}

fn approvals_in_round(
    conn: &mut AnyConnection,
    submission_id: &str,
    round: i32,
) -> PortalResult<usize> {
    let n: i64 = kyc_reviews::table
        .filter(kyc_reviews::submission_id.eq(submission_id))
        .filter(kyc_reviews::round.eq(round))
        .filter(kyc_reviews::decision.eq(ReviewDecision::Approve.as_str()))
        .count()
        .get_result(conn)?;
    Ok(usize::try_from(n).unwrap_or_default())
}

fn to_record(
    conn: &mut AnyConnection,
    cipher: &FieldCipher,
    row: &KycSubmission,
) -> PortalResult<KycRecord> {
    Ok(KycRecord {
        id: row.id.clone(),
        developer_id: row.developer_id.clone(),
        status: KycStatus::parse(&row.status).unwrap_or(KycStatus::Draft),
        round: current_round(conn, &row.id)?,
        details: decrypt(cipher, row)?,
        decision_reason: row.decision_reason.clone(),
        times: KycTimes::of(row),
    })
}

fn row_for_developer(
    conn: &mut AnyConnection,
    developer_id: &str,
) -> PortalResult<Option<KycSubmission>> {
    Ok(kyc_submissions::table
        .filter(kyc_submissions::developer_id.eq(developer_id))
        .select(KycSubmission::as_select())
        .first(conn)
        .optional()?)
}

/// The developer's submission as a change in this transaction left it.
fn reload(
    conn: &mut AnyConnection,
    cipher: &FieldCipher,
    developer_id: &str,
) -> PortalResult<KycRecord> {
    let row =
        row_for_developer(conn, developer_id)?.ok_or(PortalError::NotFound("KYC submission"))?;
    to_record(conn, cipher, &row)
}

/// An audit event on submission `id`.
fn event(actor: Actor, action: &'static str, id: &str) -> NewEvent {
    NewEvent::new(actor, action, Target::new("kyc_submission", id))
}

/// The developer's own submission, decrypted.
pub fn for_developer(
    conn: &mut AnyConnection,
    cipher: &FieldCipher,
    developer_id: &str,
) -> PortalResult<Option<KycRecord>> {
    match row_for_developer(conn, developer_id)? {
        Some(row) => Ok(Some(to_record(conn, cipher, &row)?)),
        None => Ok(None),
    }
}

/// A read of a submission by bank staff outside its review, as its developer is told of it: when
/// and why (the category of the approved request), never who.
#[derive(Debug, Clone)]
pub struct StaffRead {
    pub at: DateTime<Utc>,
    pub category: String,
}

/// The reads of the developer's submission by bank staff outside its review, newest first (at
/// most 50).
pub fn staff_reads(conn: &mut AnyConnection, developer_id: &str) -> PortalResult<Vec<StaffRead>> {
    use platform::storage::schema::audit_events;
    let Some(row) = row_for_developer(conn, developer_id)? else {
        return Ok(Vec::new());
    };
    let rows: Vec<(NaiveDateTime, String)> = audit_events::table
        .filter(audit_events::target_type.eq("kyc_submission"))
        .filter(audit_events::target_id.eq(&row.id))
        .filter(audit_events::action.eq("kyc.viewed_by_staff"))
        .order(audit_events::seq.desc())
        .limit(50)
        .select((audit_events::occurred_at, audit_events::details))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(at, details)| StaffRead {
            at: at.and_utc(),
            category: serde_json::from_str::<serde_json::Value>(&details)
                .ok()
                .and_then(|d| d["category"].as_str().map(str::to_string))
                .unwrap_or_default(),
        })
        .collect())
}

/// The status of the developer's submission, if any.
pub fn status_of(conn: &mut AnyConnection, developer_id: &str) -> PortalResult<Option<KycStatus>> {
    let s: Option<String> = kyc_submissions::table
        .filter(kyc_submissions::developer_id.eq(developer_id))
        .select(kyc_submissions::status)
        .first(conn)
        .optional()?;
    Ok(s.as_deref().and_then(KycStatus::parse))
}

/// Whether the developer's KYC is approved.
pub fn is_approved(conn: &mut AnyConnection, developer_id: &str) -> PortalResult<bool> {
    Ok(kyc_submissions::table
        .filter(kyc_submissions::developer_id.eq(developer_id))
        .filter(kyc_submissions::status.eq(KycStatus::Approved.as_str()))
        .count()
        .get_result::<i64>(conn)?
        == 1)
}

/// Creates or updates the developer's details (allowed in `draft` and `needs_information`).
pub fn save(
    conn: &mut AnyConnection,
    cipher: &FieldCipher,
    developer_id: &str,
    details: &KycDetails,
    now: DateTime<Utc>,
) -> PortalResult<KycRecord> {
    let existing = row_for_developer(conn, developer_id)?;
    let id = match &existing {
        Some(row) => {
            let status = KycStatus::parse(&row.status).unwrap_or(KycStatus::Draft);
            if !status.editable() {
                return Err(PortalError::Conflict(format!(
                    "KYC is {} and can no longer be edited",
                    status.as_str()
                )));
            }
            row.id.clone()
        }
        None => random_id("kyc_"),
    };
    let [legal, reg, address, contact, docs] = encrypt_all(cipher, &id, details)?;
    if existing.is_some() {
        diesel::update(kyc_submissions::table.filter(kyc_submissions::id.eq(&id)))
            .set((
                kyc_submissions::legal_name_enc.eq(legal),
                kyc_submissions::registration_number_enc.eq(reg),
                kyc_submissions::country.eq(&details.country),
                kyc_submissions::address_enc.eq(address),
                kyc_submissions::contact_enc.eq(contact),
                kyc_submissions::documents_enc.eq(docs),
                kyc_submissions::updated_at.eq(ts(now)),
            ))
            .execute(conn)?;
    } else {
        diesel::insert_into(kyc_submissions::table)
            .values(KycSubmission {
                id: id.clone(),
                developer_id: developer_id.to_string(),
                status: "draft".into(),
                legal_name_enc: legal,
                registration_number_enc: reg,
                country: details.country.clone(),
                address_enc: address,
                contact_enc: contact,
                documents_enc: docs,
                decision_reason: None,
                created_at: ts(now),
                updated_at: ts(now),
                submitted_at: None,
                decided_at: None,
            })
            .execute(conn)?;
    }
    event(Actor::developer(developer_id), "kyc.saved", &id).record(conn, now)?;
    reload(conn, cipher, developer_id)
}

/// Submits (or, after `needs_information`, resubmits) the developer's details for review.
pub fn submit(
    conn: &mut AnyConnection,
    cipher: &FieldCipher,
    developer_id: &str,
    now: DateTime<Utc>,
) -> PortalResult<KycRecord> {
    let row = row_for_developer(conn, developer_id)?.ok_or(PortalError::NotFound(
        "KYC submission (save your details first)",
    ))?;
    let status = KycStatus::parse(&row.status).unwrap_or(KycStatus::Draft);
    if !status.editable() {
        return Err(PortalError::Conflict(format!(
            "KYC is {} and cannot be submitted again",
            status.as_str()
        )));
    }
    diesel::update(
        kyc_submissions::table
            .filter(kyc_submissions::id.eq(&row.id))
            .filter(kyc_submissions::status.eq(&row.status)),
    )
    .set((
        kyc_submissions::status.eq(KycStatus::Submitted.as_str()),
        kyc_submissions::submitted_at.eq(ts(now)),
        kyc_submissions::updated_at.eq(ts(now)),
        kyc_submissions::decision_reason.eq(None::<String>),
        kyc_submissions::decided_at.eq(None::<NaiveDateTime>),
    ))
    .execute(conn)?;
    let round = current_round(conn, &row.id)?;
    event(
        Actor::developer(developer_id),
        if status == KycStatus::Draft {
            "kyc.submitted"
        } else {
            "kyc.resubmitted"
        },
        &row.id,
    )
    .details(serde_json::json!({ "round": round }))
    .record(conn, now)?;
    reload(conn, cipher, developer_id)
}

/// The legal name of a developer whose KYC is approved (decrypted), for display to customers.
pub fn verified_legal_name(
    conn: &mut AnyConnection,
    cipher: &FieldCipher,
    developer_id: &str,
) -> PortalResult<Option<String>> {
    let row: Option<(String, String)> = kyc_submissions::table
        .filter(kyc_submissions::developer_id.eq(developer_id))
        .filter(kyc_submissions::status.eq(KycStatus::Approved.as_str()))
        .select((kyc_submissions::id, kyc_submissions::legal_name_enc))
        .first(conn)
        .optional()?;
    match row {
        Some((id, enc)) => Ok(Some(cipher.decrypt_str(&enc, &aad("legal_name", &id))?)),
        None => Ok(None),
    }
}
