//! Staff access to a customer's grants: four-eyes approved, time-boxed, revocable, audited at
//! every use (issue 18).
//!
//! 1. A staff member asks ([`request`]) with a justification and a reference (a ticket, a
//!    complaint number): an approval request `customer.grants.access` on the customer.
//! 2. A different staff member approves it (the portal's approval endpoints; no self-approval).
//! 3. Within `security.staff_redeem_window` of the approval ([`redeem_window`]; 15 minutes
//!    unless set), the requester (and only they) takes the
//!    credential ([`issue`]): a Biscuit signed with the server's key (see [`grants::staff`])
//!    for that action on that customer, valid `security.staff_credential_ttl` (15 minutes unless set); one per approval.
//! 4. Each read ([`customer_grants`]) presents it with the staff session; the signature,
//!    the holder, the action, the resource and the expiry are checked offline, then the row
//!    (not revoked) and the use is audited against the customer before anything is read.
//! 5. Any active staff member can revoke a credential ([`revoke`]).
//!
//! The same steps serve key rotation ([`request_key_rotation`], [`rotate_keys`]: the credential
//! is used up by the rotation) and reading a KYC submission outside its review ([`kyc`]).

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
use crate::oauth::keys::KeyPurpose;

pub mod kyc;

/// How long after its approval a request can still be turned into a credential
/// (`security.staff_redeem_window`).
pub fn redeem_window(oauth: &OAuthService) -> Duration {
    oauth
        .platform
        .settings
        .security
        .staff_redeem_window
        .as_chrono()
}
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

pub use developer_portal::approvals::StaffAccessCategory;

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

/// Opens the four-eyes request of `staff_id` for `action` on `target_id`, once `check` has
/// validated what the request carries (its payload) in the same transaction.
async fn open(
    oauth: &OAuthService,
    staff_id: String,
    action: ApprovalAction,
    target_id: String,
    justification: String,
    check: impl FnOnce(&mut AnyConnection) -> PortalResult<serde_json::Value> + Send + 'static,
) -> Result<ApprovalRequest, ApiError> {
    let now = oauth.platform.now();
    write(oauth, move |c| {
        let payload = check(c)?;
        Ok(approvals::request(
            c,
            action,
            ApprovalTarget::new(action.target_kind(), &target_id),
            payload,
            &justification,
            &staff_id,
            now,
        )?)
    })
    .await
}

/// Why a staff member asks to read someone's data: the justification every colleague sees, the
/// category the person concerned is told, the case it is for.
#[derive(Debug, Clone)]
pub struct Reason {
    pub justification: String,
    pub category: String,
    pub reference: String,
}

impl Reason {
    /// The category and the reference checked; the payload of the request.
    fn payload(&self) -> PortalResult<serde_json::Value> {
        let category = category(&self.category)?;
        let reference = reference(&self.reference)?;
        Ok(serde_json::json!({ "category": category, "reference": reference }))
    }
}

/// Staff member `staff_id` asks to see customer `customer_id`'s grants.
pub async fn request(
    oauth: &OAuthService,
    staff_id: String,
    customer_id: String,
    reason: Reason,
) -> Result<ApprovalRequest, ApiError> {
    let customer = customer_id.clone();
    let justification = reason.justification.clone();
    open(
        oauth,
        staff_id,
        ACTION,
        customer_id,
        justification,
        move |c| {
            let payload = reason.payload()?;
            let exists: i64 = customers::table
                .filter(customers::id.eq(&customer))
                .count()
                .get_result(c)?;
            if exists == 0 {
                return Err(PortalError::NotFound("customer"));
            }
            Ok(payload)
        },
    )
    .await
}

/// The approved actions a credential is issued for (a suspension is executed by its approval).
const CREDENTIAL_ACTIONS: [ApprovalAction; 3] = [
    ApprovalAction::AccessCustomerGrants,
    ApprovalAction::RotateSigningKeys,
    ApprovalAction::ReadKycSubmission,
];

/// A credential, shown once to the staff member it was issued to (never in Debug).
pub struct Issued {
    pub id: String,
    pub credential: String,
    pub action: &'static str,
    pub resource_type: String,
    pub resource_id: String,
    pub expires_at: DateTime<Utc>,
}

/// Turns the approved request `request_id` of `staff_id` into a credential (once).
pub async fn issue(
    oauth: &OAuthService,
    staff_id: String,
    request_id: String,
) -> Result<Issued, ApiError> {
    let now = oauth.platform.now().trunc_subsecs(0);
    let lifetime = oauth
        .platform
        .settings
        .security
        .staff_credential_ttl
        .as_chrono();
    let expires_at = now + lifetime;
    let window = redeem_window(oauth);
    let id = random_id("scr_");
    let row = {
        let id = id.clone();
        write(oauth, move |c| {
            let approved = approvals::get(c, &request_id)?;
            if !CREDENTIAL_ACTIONS.contains(&approved.action) || approved.requested_by != staff_id {
                // Someone else's request, or another action: nothing to hand out here.
                return Err(PortalError::NotFound("approval request"));
            }
            if approved.approved_action().is_none() {
                return Err(PortalError::Conflict(format!(
                    "the request is {}, not approved",
                    approved.status.as_str()
                )));
            }
            if approved.decided_at.is_none_or(|at| at + window <= now) {
                return Err(PortalError::Conflict(format!(
                    "the approval is older than {} minutes: ask again",
                    window.num_minutes()
                )));
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
                    staff_credentials::action.eq(approved.action.as_str()),
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
                "action": approved.action.as_str(),
                "target_type": approved.target.kind,
                "target_id": approved.target.id,
                "approved_by": approved.decided_by,
                "expires_at": expires_at,
            }))
            .record(c, now)?;
            Ok(StaffCredential {
                id,
                staff_id,
                action: approved.action.as_str().into(),
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
        action: ApprovalAction::parse(&row.action).map_or("", ApprovalAction::as_str),
        resource_type: row.resource_kind,
        resource_id: row.resource_id,
        expires_at,
    })
}

/// Checks `credential` offline for `staff_id` doing `action` on `resource_id` (of the action's
/// target kind): the credential's id.
fn verify_use(
    oauth: &OAuthService,
    credential: &str,
    staff_id: &str,
    action: ApprovalAction,
    resource_id: &str,
) -> Result<String, ApiError> {
    let use_ = StaffUse {
        staff_id,
        action: action.as_str(),
        resource_kind: action.target_kind(),
        resource_id,
    };
    let keys = oauth.keys.current().keyset;
    verify_staff_credential(credential, &keys, &use_, oauth.platform.now())
        .map_err(|e| ApiError::Forbidden(format!("staff credential refused: {e}")))
}

/// The approval request behind live credential `id` of `staff_id` (refused when revoked or
/// expired).
fn live(
    c: &mut AnyConnection,
    id: &str,
    staff_id: &str,
    now: DateTime<Utc>,
) -> PortalResult<String> {
    staff_credentials::table
        .filter(staff_credentials::id.eq(id))
        .filter(staff_credentials::staff_id.eq(staff_id))
        .filter(staff_credentials::revoked_at.is_null())
        .filter(staff_credentials::expires_at.gt(ts(now)))
        .select(staff_credentials::approval_request_id)
        .first(c)
        .optional()?
        .ok_or_else(|| {
            PortalError::Forbidden("staff credential refused: revoked or expired".into())
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
    let id = verify_use(oauth, credential, &staff_id, ACTION, &customer_id)?;
    {
        let (staff_id, customer_id) = (staff_id.clone(), customer_id.clone());
        write(oauth, move |c| {
            let request_id = live(c, &id, &staff_id, now)?;
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

/// The purposes of signing keys staff may rotate through the API.
pub fn key_purpose(raw: &str) -> Option<KeyPurpose> {
    match raw {
        "biscuit" => Some(KeyPurpose::Biscuit),
        "security_events" => Some(KeyPurpose::SecurityEvents),
        _ => None,
    }
}

/// Staff member `staff_id` asks to rotate the signing keys of `purpose`.
pub async fn request_key_rotation(
    oauth: &OAuthService,
    staff_id: String,
    purpose: KeyPurpose,
    justification: String,
    reference_text: String,
) -> Result<ApprovalRequest, ApiError> {
    let action = ApprovalAction::RotateSigningKeys;
    let target = purpose.as_str().to_string();
    open(oauth, staff_id, action, target, justification, move |_| {
        Ok(serde_json::json!({ "reference": reference(&reference_text)? }))
    })
    .await
}

/// Rotates the signing keys of `purpose` with `credential` (approved for exactly that; used up
/// by the rotation, in the same transaction); the new key id.
pub async fn rotate_keys(
    oauth: &OAuthService,
    staff_id: String,
    purpose: KeyPurpose,
    credential: &str,
) -> Result<u32, ApiError> {
    let now = oauth.platform.now();
    let action = ApprovalAction::RotateSigningKeys;
    let id = verify_use(oauth, credential, &staff_id, action, purpose.as_str())?;
    let access_ttl = oauth.platform.settings.tokens.access_token_ttl.as_chrono();
    let master = oauth.platform.master_key.clone();
    write(oauth, move |c| {
        live(c, &id, &staff_id, now)?;
        // The server made both purposes' keys at start-up: this rotates an existing key.
        let kid = crate::oauth::keys::rotate(
            c,
            &master,
            now,
            access_ttl,
            purpose,
            Actor::staff(&staff_id),
        )?;
        end_credential(c, &id, &staff_id, "staff_credential.used", now)?;
        Ok(kid)
    })
    .await
}

/// Marks live credential `id` ended by `staff_id` (used up or revoked) and audits it.
fn end_credential(
    c: &mut AnyConnection,
    id: &str,
    staff_id: &str,
    action: &'static str,
    now: DateTime<Utc>,
) -> PortalResult<()> {
    let changed = diesel::update(
        staff_credentials::table
            .filter(staff_credentials::id.eq(id))
            .filter(staff_credentials::revoked_at.is_null()),
    )
    .set((
        staff_credentials::revoked_at.eq(Some(ts(now))),
        staff_credentials::revoked_by.eq(Some(staff_id)),
    ))
    .execute(c)?;
    if changed != 1 {
        return Err(PortalError::NotFound("live staff credential"));
    }
    NewEvent::new(
        Actor::staff(staff_id),
        action,
        Target::new("staff_credential", id),
    )
    .record(c, now)?;
    Ok(())
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
        end_credential(
            c,
            &credential_id,
            &staff_id,
            "staff_credential.revoked",
            now,
        )
    })
    .await
}

/// A live credential of a staff member, for their page (never the token itself).
#[derive(Debug, Clone)]
pub struct LiveCredential {
    pub id: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub expires_at: DateTime<Utc>,
}

/// What a staff member's credentials page shows: their approved requests still to be taken (in
/// the redeem window, none taken yet) and their live credentials.
#[derive(Debug, Default)]
pub struct Overview {
    pub ready: Vec<ApprovalRequest>,
    pub live: Vec<LiveCredential>,
}

/// The credentials page of `staff_id`.
pub async fn overview(oauth: &OAuthService, staff_id: String) -> Result<Overview, ApiError> {
    let now = oauth.platform.now();
    let window = redeem_window(oauth);
    Ok(developer_portal::error::read(&oauth.platform, move |c| {
        let taken: Vec<String> = staff_credentials::table
            .filter(staff_credentials::staff_id.eq(&staff_id))
            .select(staff_credentials::approval_request_id)
            .load(c)?;
        let ready = approvals::list(c, Some(approvals::ApprovalStatus::Approved), now, 200)?
            .into_iter()
            .filter(|r| {
                r.requested_by == staff_id
                    && CREDENTIAL_ACTIONS.contains(&r.action)
                    && !taken.contains(&r.id)
                    && r.decided_at.is_some_and(|at| at + window > now)
            })
            .collect();
        let live = staff_credentials::table
            .filter(staff_credentials::staff_id.eq(&staff_id))
            .filter(staff_credentials::revoked_at.is_null())
            .filter(staff_credentials::expires_at.gt(ts(now)))
            .order(staff_credentials::expires_at.asc())
            .select((
                staff_credentials::id,
                staff_credentials::action,
                staff_credentials::target_type,
                staff_credentials::target_id,
                staff_credentials::expires_at,
            ))
            .load::<(String, String, String, String, NaiveDateTime)>(c)?
            .into_iter()
            .map(|(id, action, target_type, target_id, at)| LiveCredential {
                id,
                action,
                target_type,
                target_id,
                expires_at: at.and_utc(),
            })
            .collect();
        Ok(Overview { ready, live })
    })
    .await?)
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("id", &self.id)
            .field("action", &self.action)
            .field("resource_type", &self.resource_type)
            .field("resource_id", &self.resource_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}
