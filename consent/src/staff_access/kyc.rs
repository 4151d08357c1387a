//! Reading a KYC submission outside its review (issue 18). While a submission awaits review,
//! compliance members read it in the review queue (each read audited); once it is decided
//! (approved or rejected), its personal data and documents are a privileged read (a draft, or one
//! back with its developer, is not the bank's to read: the developer is still editing it):
//!
//! 1. A compliance member asks ([`request`]) with a justification, a category and a reference.
//! 2. A different compliance member approves it.
//! 3. The requester takes the credential (the shared [`super::issue`]).
//! 4. Each read ([`read`]) presents it: checked offline and against its row, audited against the
//!    submission with the request's category and reference before anything is decrypted.

use developer_portal::approvals::{self, ApprovalAction, ApprovalRequest, StaffRole};
use developer_portal::kyc::{self, KycStatus, StaffKycView};
use developer_portal::{PortalError, PortalResult};
use platform::audit::{Actor, NewEvent, Target};
use platform::problem::ApiError;
use platform::storage::AnyConnection;

use super::{Reason, live, open, verify_use, write};
use crate::oauth::OAuthService;

const ACTION: ApprovalAction = ApprovalAction::ReadKycSubmission;

/// Only compliance members read KYC records, in review or outside it.
fn compliance_only(c: &mut AnyConnection, staff_id: &str) -> PortalResult<()> {
    if approvals::roles_of(c, staff_id)?.contains(&StaffRole::Compliance) {
        return Ok(());
    }
    Err(PortalError::Forbidden(
        "reading a KYC submission needs the compliance role".into(),
    ))
}

/// Refuses a submission that is not decided (approved or rejected): one awaiting review is read
/// in the review queue; a draft or one back with its developer holds what the developer is
/// still editing, which the bank has not been sent.
fn decided(c: &mut AnyConnection, submission_id: &str) -> PortalResult<()> {
    match kyc::submission_status(c, submission_id)? {
        KycStatus::Approved | KycStatus::Rejected => Ok(()),
        KycStatus::Submitted => Err(PortalError::Conflict(
            "the submission awaits review: compliance members read it in the review queue".into(),
        )),
        other => Err(PortalError::Conflict(format!(
            "the submission is {}: the developer has not sent it to the bank",
            other.as_str()
        ))),
    }
}

/// Compliance member `staff_id` asks to read submission `submission_id` outside its review.
pub async fn request(
    oauth: &OAuthService,
    staff_id: String,
    submission_id: String,
    reason: Reason,
) -> Result<ApprovalRequest, ApiError> {
    let (id, requester) = (submission_id.clone(), staff_id.clone());
    let justification = reason.justification.clone();
    open(
        oauth,
        staff_id,
        ACTION,
        submission_id,
        justification,
        move |c| {
            compliance_only(c, &requester)?;
            let payload = reason.payload()?;
            decided(c, &id)?;
            Ok(payload)
        },
    )
    .await
}

/// Submission `submission_id`, read by `staff_id` with `credential`: refused unless the
/// credential is ours, unchanged, this staff member's, for this submission, unexpired and not
/// revoked, and the reader still holds the compliance role; the read is audited (with the
/// request's category and reference) in the transaction that decrypts.
pub async fn read(
    oauth: &OAuthService,
    staff_id: String,
    submission_id: String,
    credential: &str,
) -> Result<StaffKycView, ApiError> {
    let cipher = oauth.platform.master_key.cipher(kyc::PII_KEY);
    let now = oauth.platform.now();
    let id = verify_use(oauth, credential, &staff_id, ACTION, &submission_id)?;
    write(oauth, move |c| {
        let request_id = live(c, &id, &staff_id, now)?;
        decided(c, &submission_id)?;
        let payload = approvals::get(c, &request_id)?.payload;
        let view = kyc::read_outside_review(c, &cipher, &submission_id, &staff_id)?;
        NewEvent::new(
            Actor::staff(&staff_id),
            "kyc.viewed_by_staff",
            Target::new("kyc_submission", &submission_id),
        )
        .details(serde_json::json!({
            "category": payload.get("category"),
            "reference": payload.get("reference"),
            "staff_credential": id,
            "approval_request": request_id,
        }))
        .record(c, now)?;
        Ok(view)
    })
    .await
}
