//! Client suspension by staff: one staff member asks, another approves (four-eyes), and the
//! approval suspends the client and revokes every grant it holds.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use platform::audit::{Actor, NewEvent, Target};
use platform::revocation::Revocations;
use platform::storage::AnyConnection;
use platform::storage::models::ClientStatus;
use platform::storage::schema::clients;

use super::{ClientView, live, revoke_client_grants, ts};
use crate::approvals::{self, ApprovalAction, ApprovalRequest, ApprovalTarget};
use crate::error::{PortalError, PortalResult};

/// A client as staff see it (any developer's).
pub fn staff_get(conn: &mut AnyConnection, client_id: &str) -> PortalResult<ClientView> {
    live(conn, client_id)?
        .map(Into::into)
        .ok_or(PortalError::NotFound("client"))
}

/// Staff ask for a client's suspension (`suspend`) or for a suspended client to work again; a
/// second staff member must approve it.
pub fn request_status_change(
    conn: &mut AnyConnection,
    staff_id: &str,
    client_id: &str,
    suspend: bool,
    justification: &str,
    now: DateTime<Utc>,
) -> PortalResult<ApprovalRequest> {
    let c = staff_get(conn, client_id)?;
    let (from, action) = if suspend {
        (ClientStatus::Active, ApprovalAction::SuspendClient)
    } else {
        (ClientStatus::Suspended, ApprovalAction::UnsuspendClient)
    };
    if c.status != from.as_str() {
        return Err(PortalError::Conflict(format!(
            "the client is {}, not {}",
            c.status,
            from.as_str()
        )));
    }
    Ok(approvals::request(
        conn,
        action,
        ApprovalTarget::new("client", client_id),
        serde_json::json!({ "client_id": client_id }),
        justification,
        staff_id,
        now,
    )?)
}

/// Decides an approval request and, when approved, executes the portal's actions (client
/// suspension, a client's dormancy period) in the same transaction (inside [`crate::error::write_revoking`], so the grants a
/// suspension ends are announced after the commit). Actions owned by the authorization server
/// (key rotation, customer access) are returned approved for their caller to execute.
pub fn decide_and_execute(
    conn: &mut AnyConnection,
    revoked: &mut Revocations,
    request_id: &str,
    approver: &str,
    approve: bool,
    justification: &str,
    now: DateTime<Utc>,
) -> PortalResult<ApprovalRequest> {
    let decided = approvals::decide(conn, request_id, approver, approve, justification, now)?;
    let client_id = decided.target.id.as_str();
    match decided.approved_action() {
        Some(ApprovalAction::SuspendClient) => {
            move_status(
                conn,
                client_id,
                ClientStatus::Active,
                ClientStatus::Suspended,
                now,
            )?;
            let ended = suspended(conn, revoked, client_id, now)?;
            let extra = serde_json::json!({ "grants_revoked": ended });
            record_change(conn, &decided, "client.suspended", extra, now)?;
        }
        Some(ApprovalAction::UnsuspendClient) => {
            move_status(
                conn,
                client_id,
                ClientStatus::Suspended,
                ClientStatus::Active,
                now,
            )?;
            let extra = serde_json::json!({});
            record_change(conn, &decided, "client.unsuspended", extra, now)?;
        }
        Some(ApprovalAction::SetClientDormancy) => {
            let extra = super::lifecycle::set_dormancy(conn, &decided, now)?;
            record_change(conn, &decided, "client.dormancy_changed", extra, now)?;
        }
        // Executed by the authorization server with the credential the approval yields; a
        // rejection executes nothing.
        Some(
            ApprovalAction::RotateSigningKeys
            | ApprovalAction::AccessCustomerGrants
            | ApprovalAction::ReadKycSubmission,
        )
        | None => {}
    }
    Ok(decided)
}

/// What a suspension ends: every grant of the client (announced after the commit), and the
/// client is told; how many grants ended.
fn suspended(
    conn: &mut AnyConnection,
    revoked: &mut Revocations,
    client_id: &str,
    now: DateTime<Utc>,
) -> PortalResult<usize> {
    let ended = revoke_client_grants(conn, revoked, client_id, "staff", now)?;
    platform::webhooks::enqueue(
        conn,
        &[platform::webhooks::Event {
            client_id: client_id.to_string(),
            event_type: platform::webhooks::CLIENT_SUSPENDED,
            grant_id: None,
            data: serde_json::json!({
                "status": "suspended",
                "grants_revoked": ended.len(),
                "at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }),
        }],
        now,
    )?;
    Ok(ended.len())
}

/// Audits an approved status change as the approver's, with the request and its requester (and
/// `extra` details).
fn record_change(
    conn: &mut AnyConnection,
    approved: &ApprovalRequest,
    action: &'static str,
    mut extra: serde_json::Value,
    now: DateTime<Utc>,
) -> PortalResult<()> {
    extra["approval_request"] = approved.id.clone().into();
    extra["requested_by"] = approved.requested_by.clone().into();
    NewEvent::new(
        Actor::staff(approved.decided_by.clone().unwrap_or_default()),
        action,
        Target::new("client", &approved.target.id),
    )
    .details(extra)
    .record(conn, now)?;
    Ok(())
}

/// Moves the client from `from` to `to` (a conflict when it is no longer `from`: another
/// decision came first).
fn move_status(
    conn: &mut AnyConnection,
    client_id: &str,
    from: ClientStatus,
    to: ClientStatus,
    now: DateTime<Utc>,
) -> PortalResult<()> {
    let changed = diesel::update(
        clients::table
            .filter(clients::id.eq(client_id))
            .filter(clients::status.eq(from.as_str())),
    )
    .set((
        clients::status.eq(to.as_str()),
        clients::updated_at.eq(ts(now)),
    ))
    .execute(conn)?;
    if changed != 1 {
        return Err(PortalError::Conflict(format!(
            "the client is no longer {}; nothing to change",
            from.as_str()
        )));
    }
    Ok(())
}
