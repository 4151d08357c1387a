//! Four-eyes approval requests: a general mechanism for privileged staff actions.
//!
//! A staff member *requests* an action on a target with a justification; a second, distinct,
//! active staff member *decides* it (approve or reject, with their own justification) before it
//! expires. Deciding never performs the action: [`decide`] returns the decided request and the
//! caller executes an approved [`ApprovalAction`] in the same transaction (see
//! `crate::clients::execute_approved` for client suspension). The authorization server uses the
//! same functions for key rotation and staff access to a customer's grants.
//!
//! Every request and decision is audited in the caller's transaction. Plain Rust, no HTTP types.

use chrono::{DateTime, Duration, NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use platform::audit::{Actor, NewEvent, Target};
use platform::crypto::random_id;
use platform::storage::models::StaffStatus;
use platform::storage::schema::{approval_requests, staff};
use platform::storage::{AnyConnection, StorageError};

/// The privileged actions that need a second approver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalAction {
    /// Suspend a client (target `client`): its grants and refresh tokens are revoked.
    SuspendClient,
    /// Let a suspended client work again (target `client`); the grants it lost stay revoked.
    UnsuspendClient,
    /// Rotate the token signing keys (target `signing_keys`).
    RotateSigningKeys,
    /// Let a staff member see a customer's grants (target `customer`).
    AccessCustomerGrants,
    /// Set a client's dormancy period, or return it to the bank's default (target `client`;
    /// the value is the request's payload, executed by the approval).
    SetClientDormancy,
    /// Let a compliance member read a KYC submission outside its review (target
    /// `kyc_submission`).
    ReadKycSubmission,
}

/// What a staff member may approve. Anyone may ask; approving needs a role the action names
/// ([`ApprovalAction::approver_roles`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffRole {
    /// Front line: asks for access, approves nothing.
    Support,
    /// Approves access to customers' data, client suspensions and lifecycle settings.
    Compliance,
    /// Approves key rotation and client suspensions.
    Security,
}

impl StaffRole {
    pub const ALL: [StaffRole; 3] = [Self::Support, Self::Compliance, Self::Security];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Support => "support",
            Self::Compliance => "compliance",
            Self::Security => "security",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s.trim())
    }

    /// `support,compliance`: every name known, at least one, no repeats; stored sorted.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        let mut roles = Vec::new();
        for name in s.split(',') {
            let role = Self::parse(name).ok_or_else(|| {
                format!(
                    "unknown role {:?} (support, compliance, security)",
                    name.trim()
                )
            })?;
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        roles.sort_by_key(|r| Self::ALL.iter().position(|a| a == r));
        Ok(roles)
    }

    pub fn list(roles: &[Self]) -> String {
        roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl ApprovalAction {
    /// Whether the action gives its requester a credential of their own (access to a customer's
    /// grants or a KYC submission): then each staff member may have one request of it pending
    /// per target; for a change to shared state, one request per target is pending at a time.
    pub fn is_personal_access(self) -> bool {
        matches!(self, Self::AccessCustomerGrants | Self::ReadKycSubmission)
    }

    /// The roles of which the approver must have one.
    pub fn approver_roles(self) -> &'static [StaffRole] {
        match self {
            Self::SuspendClient | Self::UnsuspendClient => {
                &[StaffRole::Compliance, StaffRole::Security]
            }
            Self::RotateSigningKeys => &[StaffRole::Security],
            Self::AccessCustomerGrants | Self::SetClientDormancy | Self::ReadKycSubmission => {
                &[StaffRole::Compliance]
            }
        }
    }

    pub const ALL: [ApprovalAction; 6] = [
        Self::SuspendClient,
        Self::UnsuspendClient,
        Self::RotateSigningKeys,
        Self::AccessCustomerGrants,
        Self::SetClientDormancy,
        Self::ReadKycSubmission,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SuspendClient => "client.suspend",
            Self::UnsuspendClient => "client.unsuspend",
            Self::RotateSigningKeys => "keys.rotate",
            Self::AccessCustomerGrants => "customer.grants.access",
            Self::SetClientDormancy => "client.dormancy.set",
            Self::ReadKycSubmission => "kyc.read",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The target kind this action applies to.
    pub fn target_kind(self) -> &'static str {
        match self {
            Self::SuspendClient | Self::UnsuspendClient | Self::SetClientDormancy => "client",
            Self::RotateSigningKeys => "signing_keys",
            Self::AccessCustomerGrants => "customer",
            Self::ReadKycSubmission => "kyc_submission",
        }
    }

    /// How long a request stays open for a second approver.
    pub fn ttl(self) -> Duration {
        match self {
            Self::SuspendClient
            | Self::UnsuspendClient
            | Self::RotateSigningKeys
            | Self::SetClientDormancy => Duration::hours(24),
            Self::AccessCustomerGrants | Self::ReadKycSubmission => Duration::hours(4),
        }
    }
}

pub use platform::storage::models::ApprovalStatus;

platform::value_sets! {
    /// Why staff need to see a customer's data or a KYC record (a customer's history names it).
    StaffAccessCategory = [
        "customer_request",
        "complaint",
        "fraud_investigation",
        "regulatory_inquiry",
        "technical_support",
    ];
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("approval request not found")]
    NotFound,
    #[error("the requester cannot approve their own request")]
    SelfApproval,
    #[error("the requesting staff member is not active")]
    RequesterInactive,
    #[error("the approving staff member is not active")]
    ApproverInactive,
    #[error("approving this needs the role {0}")]
    WrongRole(String),
    #[error("the approval request has expired")]
    Expired,
    #[error("the approval request is already {0}")]
    AlreadyDecided(&'static str),
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<diesel::result::Error> for ApprovalError {
    fn from(e: diesel::result::Error) -> Self {
        ApprovalError::Storage(e.into())
    }
}

/// What an approval request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalTarget {
    pub kind: String,
    pub id: String,
}

impl ApprovalTarget {
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            id: id.into(),
        }
    }
}

/// A stored approval request.
#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    pub id: String,
    pub action: ApprovalAction,
    pub target: ApprovalTarget,
    /// Action parameters (never secrets or PII).
    pub payload: serde_json::Value,
    pub justification: String,
    pub requested_by: String,
    /// Stored status; a pending request past `expires_at` is reported as expired.
    pub status: ApprovalStatus,
    pub decided_by: Option<String>,
    pub decision_justification: Option<String>,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
}

impl ApprovalRequest {
    /// The status as of `now` (pending requests past their expiry are expired).
    pub fn status_at(&self, now: DateTime<Utc>) -> ApprovalStatus {
        if self.status == ApprovalStatus::Pending && self.expires_at <= now {
            ApprovalStatus::Expired
        } else {
            self.status
        }
    }

    /// The action the caller must now execute, if the request was approved.
    pub fn approved_action(&self) -> Option<ApprovalAction> {
        (self.status == ApprovalStatus::Approved).then_some(self.action)
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = approval_requests)]
struct Row {
    id: String,
    action: String,
    target_type: String,
    target_id: String,
    payload: String,
    justification: String,
    requested_by: String,
    status: String,
    decided_by: Option<String>,
    decision_justification: Option<String>,
    created_at: NaiveDateTime,
    decided_at: Option<NaiveDateTime>,
    expires_at: NaiveDateTime,
}

impl TryFrom<Row> for ApprovalRequest {
    type Error = ApprovalError;
    fn try_from(r: Row) -> Result<Self, ApprovalError> {
        let corrupt = |what: &str| {
            ApprovalError::Storage(StorageError::Query(
                diesel::result::Error::DeserializationError(
                    format!("approval request {}: unknown {what}", r.id).into(),
                ),
            ))
        };
        Ok(Self {
            action: ApprovalAction::parse(&r.action).ok_or_else(|| corrupt("action"))?,
            status: ApprovalStatus::parse(&r.status).ok_or_else(|| corrupt("status"))?,
            payload: serde_json::from_str(&r.payload).unwrap_or(serde_json::Value::Null),
            target: ApprovalTarget::new(r.target_type, r.target_id),
            id: r.id,
            justification: r.justification,
            requested_by: r.requested_by,
            decided_by: r.decided_by,
            decision_justification: r.decision_justification,
            created_at: r.created_at.and_utc(),
            decided_at: r.decided_at.map(|t| t.and_utc()),
            expires_at: r.expires_at.and_utc(),
        })
    }
}

pub const JUSTIFICATION_MIN: usize = 10;
pub const JUSTIFICATION_MAX: usize = 2000;

/// A justification: trimmed, 10 to 2000 characters.
pub fn justification(raw: &str) -> Result<String, String> {
    let j = raw.trim();
    let n = j.chars().count();
    if n < JUSTIFICATION_MIN {
        return Err(format!(
            "must be at least {JUSTIFICATION_MIN} characters: say why"
        ));
    }
    if n > JUSTIFICATION_MAX {
        return Err(format!("must be at most {JUSTIFICATION_MAX} characters"));
    }
    if j.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err("must not contain control characters".into());
    }
    Ok(j.to_string())
}

fn staff_is_active(conn: &mut AnyConnection, id: &str) -> Result<bool, ApprovalError> {
    Ok(staff::table
        .filter(staff::id.eq(id))
        .filter(staff::status.eq(StaffStatus::Active.as_str()))
        .count()
        .get_result::<i64>(conn)?
        == 1)
}

fn ts(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc().trunc_subsecs(0)
}

/// Opens a request for `action` on `target`, by the active staff member `requester`. Refuses a
/// second open request for the same action and target.
pub fn request(
    conn: &mut AnyConnection,
    action: ApprovalAction,
    target: ApprovalTarget,
    payload: serde_json::Value,
    justification_text: &str,
    requester: &str,
    now: DateTime<Utc>,
) -> Result<ApprovalRequest, ApprovalError> {
    let justification = justification(justification_text)
        .map_err(|m| ApprovalError::Invalid("justification", m))?;
    if target.kind != action.target_kind() {
        return Err(ApprovalError::Invalid(
            "target",
            format!("{} applies to a {}", action.as_str(), action.target_kind()),
        ));
    }
    if !staff_is_active(conn, requester)? {
        return Err(ApprovalError::RequesterInactive);
    }
    // One opener at a time per action and target (and requester, for personal access): on
    // PostgreSQL, concurrent openers queue here until the first commits, so the next one's check
    // below sees its request; SQLite's single writer serialises them already.
    if let AnyConnection::Postgresql(pg) = conn {
        let requester_part = if action.is_personal_access() {
            requester
        } else {
            ""
        };
        let key = [action.as_str(), &target.kind, &target.id, requester_part].join("\n");
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind::<diesel::sql_types::Text, _>(key)
            .execute(pg)?;
    }
    let mut open = approval_requests::table
        .filter(approval_requests::action.eq(action.as_str()))
        .filter(approval_requests::target_type.eq(&target.kind))
        .filter(approval_requests::target_id.eq(&target.id))
        .filter(approval_requests::status.eq(ApprovalStatus::Pending.as_str()))
        .filter(approval_requests::expires_at.gt(ts(now)))
        .into_boxed();
    if action.is_personal_access() {
        open = open.filter(approval_requests::requested_by.eq(requester));
    }
    if open.count().get_result::<i64>(conn)? > 0 {
        return Err(ApprovalError::Invalid(
            "target",
            if action.is_personal_access() {
                "you already have an approval request for this action and target pending"
            } else {
                "an approval request for this action and target is already pending"
            }
            .into(),
        ));
    }
    let id = random_id("apr_");
    let created_at = now.trunc_subsecs(0);
    let expires_at = created_at + action.ttl();
    diesel::insert_into(approval_requests::table)
        .values((
            approval_requests::id.eq(&id),
            approval_requests::action.eq(action.as_str()),
            approval_requests::target_type.eq(&target.kind),
            approval_requests::target_id.eq(&target.id),
            approval_requests::payload.eq(payload.to_string()),
            approval_requests::justification.eq(&justification),
            approval_requests::requested_by.eq(requester),
            approval_requests::status.eq(ApprovalStatus::Pending.as_str()),
            approval_requests::created_at.eq(ts(created_at)),
            approval_requests::expires_at.eq(ts(expires_at)),
        ))
        .execute(conn)?;
    NewEvent::new(
        Actor::staff(requester),
        "approval.requested",
        Target::new("approval_request", &id),
    )
    .details(serde_json::json!({
        "action": action.as_str(),
        "target_type": target.kind,
        "target_id": target.id,
    }))
    .record(conn, now)?;
    Ok(ApprovalRequest {
        id,
        action,
        target,
        payload,
        justification,
        requested_by: requester.to_string(),
        status: ApprovalStatus::Pending,
        decided_by: None,
        decision_justification: None,
        created_at,
        decided_at: None,
        expires_at,
    })
}

/// Loads one request.
pub fn get(conn: &mut AnyConnection, id: &str) -> Result<ApprovalRequest, ApprovalError> {
    approval_requests::table
        .filter(approval_requests::id.eq(id))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .ok_or(ApprovalError::NotFound)?
        .try_into()
}

/// Requests, newest first; with `status`, only those in that status as of `now`.
pub fn list(
    conn: &mut AnyConnection,
    status: Option<ApprovalStatus>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ApprovalRequest>, ApprovalError> {
    let mut q = approval_requests::table
        .select(Row::as_select())
        .order(approval_requests::created_at.desc())
        .limit(limit)
        .into_boxed();
    match status {
        Some(ApprovalStatus::Pending) => {
            q = q
                .filter(approval_requests::status.eq(ApprovalStatus::Pending.as_str()))
                .filter(approval_requests::expires_at.gt(ts(now)));
        }
        Some(ApprovalStatus::Expired) => {
            q = q.filter(
                approval_requests::status
                    .eq(ApprovalStatus::Expired.as_str())
                    .or(approval_requests::status
                        .eq(ApprovalStatus::Pending.as_str())
                        .and(approval_requests::expires_at.le(ts(now)))),
            );
        }
        Some(s) => q = q.filter(approval_requests::status.eq(s.as_str())),
        None => {}
    }
    q.load::<Row>(conn)?
        .into_iter()
        .map(ApprovalRequest::try_from)
        .collect()
}

/// Approves or rejects request `id` as `approver`. Refuses self-approval, inactive approvers,
/// decided and expired requests. On approval the caller executes
/// [`ApprovalRequest::approved_action`] in the same transaction.
/// A staff member's roles (none for an unknown id).
pub fn roles_of(conn: &mut AnyConnection, staff_id: &str) -> Result<Vec<StaffRole>, ApprovalError> {
    let held: Option<String> = staff::table
        .filter(staff::id.eq(staff_id))
        .select(staff::roles)
        .first(conn)
        .optional()?;
    Ok(held
        .and_then(|h| StaffRole::parse_list(&h).ok())
        .unwrap_or_default())
}

/// Whether a staff member holding `roles` may decide requests for `action`.
pub fn may_decide(action: ApprovalAction, roles: &[StaffRole]) -> bool {
    action.approver_roles().iter().any(|r| roles.contains(r))
}

pub fn decide(
    conn: &mut AnyConnection,
    id: &str,
    approver: &str,
    approve: bool,
    justification_text: &str,
    now: DateTime<Utc>,
) -> Result<ApprovalRequest, ApprovalError> {
    let justification = justification(justification_text)
        .map_err(|m| ApprovalError::Invalid("justification", m))?;
    let mut req = get(conn, id)?;
    match req.status_at(now) {
        ApprovalStatus::Pending => {}
        ApprovalStatus::Expired => return Err(ApprovalError::Expired),
        s => return Err(ApprovalError::AlreadyDecided(s.as_str())),
    }
    if req.requested_by == approver {
        return Err(ApprovalError::SelfApproval);
    }
    if !staff_is_active(conn, approver)? {
        return Err(ApprovalError::ApproverInactive);
    }
    let needed = req.action.approver_roles();
    let held = roles_of(conn, approver)?;
    if !may_decide(req.action, &held) {
        return Err(ApprovalError::WrongRole(
            needed
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or "),
        ));
    }
    let status = if approve {
        ApprovalStatus::Approved
    } else {
        ApprovalStatus::Rejected
    };
    // Conditional update: of two concurrent deciders exactly one wins.
    let changed = diesel::update(
        approval_requests::table
            .filter(approval_requests::id.eq(id))
            .filter(approval_requests::status.eq(ApprovalStatus::Pending.as_str())),
    )
    .set((
        approval_requests::status.eq(status.as_str()),
        approval_requests::decided_by.eq(approver),
        approval_requests::decision_justification.eq(&justification),
        approval_requests::decided_at.eq(ts(now)),
    ))
    .execute(conn)?;
    if changed != 1 {
        return Err(ApprovalError::AlreadyDecided("decided"));
    }
    NewEvent::new(
        Actor::staff(approver),
        if approve {
            "approval.approved"
        } else {
            "approval.rejected"
        },
        Target::new("approval_request", id),
    )
    .details(serde_json::json!({
        "action": req.action.as_str(),
        "target_type": req.target.kind,
        "target_id": req.target.id,
        "requested_by": req.requested_by,
    }))
    .record(conn, now)?;
    req.status = status;
    req.decided_by = Some(approver.to_string());
    req.decision_justification = Some(justification);
    req.decided_at = Some(now.trunc_subsecs(0));
    Ok(req)
}

/// Marks pending requests past their expiry as expired, each with an `approval.expired` audit
/// event (the lifecycle sweep runs it in its transaction); returns how many. Reads already report
/// such a request as expired (`status_at`): this makes the stored status say so too.
pub fn expire_stale(conn: &mut AnyConnection, now: DateTime<Utc>) -> Result<usize, StorageError> {
    let stale = approval_requests::table
        .filter(approval_requests::status.eq(ApprovalStatus::Pending.as_str()))
        .filter(approval_requests::expires_at.le(ts(now)));
    let ids: Vec<(String, String)> = stale
        .select((approval_requests::id, approval_requests::action))
        .order(approval_requests::id)
        .limit(10_000)
        .load(conn)?;
    if ids.is_empty() {
        return Ok(0);
    }
    let only: Vec<&str> = ids.iter().map(|(id, _)| id.as_str()).collect();
    diesel::update(stale.filter(approval_requests::id.eq_any(&only)))
        .set(approval_requests::status.eq(ApprovalStatus::Expired.as_str()))
        .execute(conn)?;
    let events: Vec<NewEvent> = ids
        .iter()
        .map(|(id, action)| {
            NewEvent::new(
                Actor::system("lifecycle-sweeper"),
                "approval.expired",
                Target::new("approval_request", id.clone()),
            )
            .details(serde_json::json!({ "action": action }))
        })
        .collect();
    platform::audit::record_many(conn, &events, now)?;
    Ok(ids.len())
}
