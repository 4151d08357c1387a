//! Staff access to a customer's grants: four-eyes approved, time-boxed, revocable, audited at
//! every use (issue 18).
//!
//! 1. A staff member asks ([`request`]) with a justification and a reference (a ticket, a
//!    complaint number): an approval request `customer.grants.access` on the customer.
//! 2. A different staff member approves it (the portal's approval endpoints; no self-approval).
//! 3. Within [`REDEEM_WITHIN`] of the approval, the requester (and only they) takes the
//!    credential ([`issue`]): a Biscuit signed with the server's key (see [`grants::staff`])
//!    for that action on that customer, valid [`CREDENTIAL_LIFETIME`]; one per approval.
//! 4. Each read ([`customer_grants`]) presents it with the staff session; the signature,
//!    the holder, the action, the resource and the expiry are checked offline, then the row
//!    (not revoked) and the use is audited against the customer before anything is read.
//! 5. Any active staff member can revoke a credential ([`revoke`]).

use chrono::{DateTime, Duration, NaiveDateTime, SubsecRound, Utc};
use developer_portal::approvals::{self, ApprovalAction, ApprovalRequest, ApprovalTarget};
use developer_portal::{PortalError, PortalResult};
use diesel::prelude::*;
use grants::staff::{StaffCredential, StaffUse, mint_staff_credential, verify_staff_credential};
use platform::audit::{Actor, NewEvent, Target};
use platform::crypto::random_id;
use platform::problem::ApiError;
use platform::storage::AnyConnection;
use platform::storage::schema::{customers, grant_rows, staff_credentials};

use crate::dashboard::{CustomerGrants, GrantView};
use crate::oauth::OAuthService;

/// How long a credential is valid once taken.
pub const CREDENTIAL_LIFETIME: Duration = Duration::minutes(15);
/// How long after its approval a request can still be turned into a credential.
pub const REDEEM_WITHIN: Duration = Duration::minutes(15);
const ACTION: ApprovalAction = ApprovalAction::AccessCustomerGrants;

fn ts(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc().trunc_subsecs(0)
}

async fn write<T: Send + 'static>(
    oauth: &OAuthService,
    f: impl FnOnce(&mut AnyConnection) -> PortalResult<T> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(developer_portal::error::write(&oauth.platform, f).await?)
}

platform::value_sets! {
    /// Why staff need to see a customer's data (the customer's history names it).
    StaffAccessCategory = [
        "customer_request",
        "complaint",
        "fraud_investigation",
        "regulatory_inquiry",
        "technical_support",
    ];
}

fn category(raw: &str) -> PortalResult<String> {
    StaffAccessCategory::VALUES
        .iter()
        .find(|c| **c == raw)
        .map(|c| (*c).to_string())
        .ok_or_else(|| {
            PortalError::field(
                "category",
                format!("must be one of {}", StaffAccessCategory::VALUES.join(", ")),
            )
        })
}

/// A reference to the case that needs the access: 1 to 100 printable characters.
fn reference(raw: &str) -> PortalResult<String> {
    let r = raw.trim();
    if r.is_empty() || r.chars().count() > 100 || r.chars().any(char::is_control) {
        return Err(PortalError::field(
            "reference",
            "must be 1 to 100 printable characters (a ticket or case number)",
        ));
    }
    Ok(r.to_string())
}

/// Staff member `staff_id` asks to see customer `customer_id`'s grants.
pub async fn request(
    oauth: &OAuthService,
    staff_id: String,
    customer_id: String,
    justification: String,
    category_text: String,
    reference_text: String,
) -> Result<ApprovalRequest, ApiError> {
    let now = oauth.platform.now();
    write(oauth, move |c| {
        let category = category(&category_text)?;
        let reference = reference(&reference_text)?;
        let exists: i64 = customers::table
            .filter(customers::id.eq(&customer_id))
            .count()
            .get_result(c)?;
        if exists == 0 {
            return Err(PortalError::NotFound("customer"));
        }
        Ok(approvals::request(
            c,
            ACTION,
            ApprovalTarget::new(ACTION.target_kind(), &customer_id),
            serde_json::json!({ "category": category, "reference": reference }),
            &justification,
            &staff_id,
            now,
        )?)
    })
    .await
}

/// A credential, shown once to the staff member it was issued to.
#[derive(Debug)]
pub struct Issued {
    pub id: String,
    pub credential: String,
    pub customer_id: String,
    pub expires_at: DateTime<Utc>,
}

/// Turns the approved request `request_id` of `staff_id` into a credential (once).
pub async fn issue(
    oauth: &OAuthService,
    staff_id: String,
    request_id: String,
) -> Result<Issued, ApiError> {
    let now = oauth.platform.now().trunc_subsecs(0);
    let expires_at = now + CREDENTIAL_LIFETIME;
    let id = random_id("scr_");
    let row = {
        let id = id.clone();
        write(oauth, move |c| {
            let approved = approvals::get(c, &request_id)?;
            if approved.action != ACTION || approved.requested_by != staff_id {
                // Someone else's request, or another action: nothing to hand out here.
                return Err(PortalError::NotFound("approval request"));
            }
            if approved.approved_action().is_none() {
                return Err(PortalError::Conflict(format!(
                    "the request is {}, not approved",
                    approved.status.as_str()
                )));
            }
            if approved
                .decided_at
                .is_none_or(|at| at + REDEEM_WITHIN <= now)
            {
                return Err(PortalError::Conflict(
                    "the approval is older than 15 minutes: ask again".into(),
                ));
            }
            let taken: i64 = staff_credentials::table
                .filter(staff_credentials::approval_request_id.eq(&approved.id))
                .count()
                .get_result(c)?;
            if taken > 0 {
                return Err(PortalError::Conflict(
                    "a credential was already issued for this approval".into(),
                ));
            }
            diesel::insert_into(staff_credentials::table)
                .values((
                    staff_credentials::id.eq(&id),
                    staff_credentials::approval_request_id.eq(&approved.id),
                    staff_credentials::staff_id.eq(&staff_id),
                    staff_credentials::action.eq(ACTION.as_str()),
                    staff_credentials::target_type.eq(&approved.target.kind),
                    staff_credentials::target_id.eq(&approved.target.id),
                    staff_credentials::issued_at.eq(ts(now)),
                    staff_credentials::expires_at.eq(ts(expires_at)),
                ))
                .execute(c)?;
            NewEvent::new(
                Actor::staff(&staff_id),
                "staff_credential.issued",
                Target::new("staff_credential", &id),
            )
            .details(serde_json::json!({
                "approval_request": approved.id,
                "action": ACTION.as_str(),
                "target_type": approved.target.kind,
                "target_id": approved.target.id,
                "approved_by": approved.decided_by,
                "expires_at": expires_at,
            }))
            .record(c, now)?;
            Ok(StaffCredential {
                id,
                staff_id,
                action: ACTION.as_str().into(),
                resource_kind: approved.target.kind,
                resource_id: approved.target.id,
                expires_at,
            })
        })
        .await?
    };
    let key = oauth.keys.current().active;
    let credential = mint_staff_credential(&key, &row).map_err(ApiError::internal)?;
    Ok(Issued {
        id,
        credential,
        customer_id: row.resource_id,
        expires_at,
    })
}

/// The grants of `customer_id`, read by `staff_id` with `credential`: refused unless the
/// credential is ours, unchanged, this staff member's, for this customer, unexpired and not
/// revoked; the use is audited (against the customer, whose history shows it) before the read.
pub async fn customer_grants(
    oauth: &OAuthService,
    staff_id: String,
    customer_id: String,
    credential: &str,
) -> Result<Vec<GrantView>, ApiError> {
    let now = oauth.platform.now();
    let keys = oauth.keys.current().keyset;
    let use_ = StaffUse {
        staff_id: &staff_id,
        action: ACTION.as_str(),
        resource_kind: ACTION.target_kind(),
        resource_id: &customer_id,
    };
    let id = verify_staff_credential(credential, &keys, &use_, now)
        .map_err(|e| ApiError::Forbidden(format!("staff credential refused: {e}")))?;
    {
        let (staff_id, customer_id) = (staff_id.clone(), customer_id.clone());
        write(oauth, move |c| {
            let live: Option<String> = staff_credentials::table
                .filter(staff_credentials::id.eq(&id))
                .filter(staff_credentials::staff_id.eq(&staff_id))
                .filter(staff_credentials::revoked_at.is_null())
                .filter(staff_credentials::expires_at.gt(ts(now)))
                .select(staff_credentials::approval_request_id)
                .first(c)
                .optional()?;
            let Some(request_id) = live else {
                return Err(PortalError::Forbidden(
                    "staff credential refused: revoked or expired".into(),
                ));
            };
            let payload = approvals::get(c, &request_id)?.payload;
            let details = serde_json::json!({
                "role": "staff",
                "category": payload.get("category"),
                "reference": payload.get("reference"),
                "staff_credential": id,
                "approval_request": request_id,
            });
            // The customer's history of each app shows the look (by role, not by name).
            let grant_ids: Vec<String> = grant_rows::table
                .filter(grant_rows::customer_id.eq(&customer_id))
                .select(grant_rows::id)
                .load(c)?;
            let mut events = vec![
                NewEvent::new(
                    Actor::staff(&staff_id),
                    "customer.grants.viewed_by_staff",
                    Target::new("customer", &customer_id),
                )
                .details(details.clone()),
            ];
            events.extend(grant_ids.iter().map(|g| {
                NewEvent::new(
                    Actor::staff(&staff_id),
                    "grant.viewed_by_staff",
                    Target::new("grant", g),
                )
                .details(details.clone())
            }));
            platform::audit::record_many(c, &events, now)?;
            Ok(())
        })
        .await?;
    }
    Ok(CustomerGrants::new(&oauth.platform, customer_id)
        .list()
        .await?)
}

/// Ends credential `credential_id` at once (any active staff member may: a colleague who sees
/// misuse does not wait for its holder).
pub async fn revoke(
    oauth: &OAuthService,
    staff_id: String,
    credential_id: String,
) -> Result<(), ApiError> {
    let now = oauth.platform.now();
    write(oauth, move |c| {
        let changed = diesel::update(
            staff_credentials::table
                .filter(staff_credentials::id.eq(&credential_id))
                .filter(staff_credentials::revoked_at.is_null()),
        )
        .set((
            staff_credentials::revoked_at.eq(Some(ts(now))),
            staff_credentials::revoked_by.eq(Some(&staff_id)),
        ))
        .execute(c)?;
        if changed != 1 {
            return Err(PortalError::NotFound("live staff credential"));
        }
        NewEvent::new(
            Actor::staff(&staff_id),
            "staff_credential.revoked",
            Target::new("staff_credential", &credential_id),
        )
        .record(c, now)?;
        Ok(())
    })
    .await
}
