//! A client's lifecycle settings, changed by staff (four-eyes): its dormancy period, after which
//! the sweeper ends a grant nobody used. One staff member asks for a value, a compliance member
//! approves that exact value (it travels in the request), and the approval sets it.
//!
//! The value can only shorten the bank's default (`lifecycle.dormancy_period`): a customer's
//! protection against forgotten grants is never weakened per client. `None` returns the client
//! to the default.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use platform::storage::AnyConnection;
use platform::storage::models::ClientStatus;
use platform::storage::schema::clients;

use super::{staff_get, ts};
use crate::approvals::{self, ApprovalAction, ApprovalRequest, ApprovalTarget};
use crate::error::{PortalError, PortalResult};

/// The longest dormancy period a client may have: the bank's default, in whole days.
pub fn longest_days(bank_default: chrono::Duration) -> i64 {
    bank_default.num_days()
}

/// `days` checked against the bank's default of `longest` days.
fn checked(days: Option<i64>, longest: i64) -> PortalResult<Option<i32>> {
    match days {
        None => Ok(None),
        Some(d) if (1..=longest).contains(&d) => Ok(Some(d as i32)),
        Some(_) if longest < 1 => Err(PortalError::field(
            "dormancy_days",
            "the bank's default dormancy period is under a day: only null (the default) is possible",
        )),
        Some(_) => Err(PortalError::field(
            "dormancy_days",
            format!("must be null (the bank's default) or 1 to {longest} days"),
        )),
    }
}

/// Staff member `staff_id` asks to set `client_id`'s dormancy period to `days` (`None`: the
/// bank's default of `longest` days); a compliance member must approve it.
pub fn request_dormancy_change(
    conn: &mut AnyConnection,
    staff_id: &str,
    client_id: &str,
    days: Option<i64>,
    longest: i64,
    justification: &str,
    now: DateTime<Utc>,
) -> PortalResult<ApprovalRequest> {
    let days = checked(days, longest)?;
    let client = staff_get(conn, client_id)?;
    if client.dormancy_days == days {
        return Err(PortalError::Conflict(
            "the client's dormancy period is already that".into(),
        ));
    }
    let action = ApprovalAction::SetClientDormancy;
    Ok(approvals::request(
        conn,
        action,
        ApprovalTarget::new(action.target_kind(), client_id),
        serde_json::json!({
            "client_id": client_id,
            "dormancy_days": days,
            "current_dormancy_days": client.dormancy_days,
        }),
        justification,
        staff_id,
        now,
    )?)
}

/// Sets the dormancy period the approved request `approved` carries; the change's audit details
/// (`from`, `to`). A client deleted meanwhile is a 404 and the approval is rolled back with it.
pub(super) fn set_dormancy(
    conn: &mut AnyConnection,
    approved: &ApprovalRequest,
    now: DateTime<Utc>,
) -> PortalResult<serde_json::Value> {
    // The request was checked when opened; a stored payload that no longer reads is refused
    // rather than guessed at.
    let to = match approved.payload.get("dormancy_days") {
        Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .and_then(|d| i32::try_from(d).ok())
                .filter(|d| *d > 0)
                .ok_or_else(|| PortalError::Conflict("the request's value is unreadable".into()))?,
        ),
        None => return Err(PortalError::Conflict("the request carries no value".into())),
    };
    let from = staff_get(conn, &approved.target.id)?.dormancy_days;
    let changed = diesel::update(
        clients::table
            .filter(clients::id.eq(&approved.target.id))
            .filter(clients::status.ne(ClientStatus::Deleted.as_str())),
    )
    .set((
        clients::dormancy_days.eq(to),
        clients::updated_at.eq(ts(now)),
    ))
    .execute(conn)?;
    if changed != 1 {
        return Err(PortalError::NotFound("client"));
    }
    Ok(serde_json::json!({ "from": from, "to": to }))
}

#[cfg(test)]
mod tests {
    use super::checked;

    #[test]
    fn a_dormancy_period_only_shortens_the_default() {
        assert_eq!(checked(None, 90).unwrap(), None);
        assert_eq!(checked(Some(1), 90).unwrap(), Some(1));
        assert_eq!(checked(Some(90), 90).unwrap(), Some(90));
        for bad in [0, -1, 91, i64::MAX, i64::MIN] {
            assert!(checked(Some(bad), 90).is_err(), "{bad}");
        }
        assert!(checked(Some(1), 0).is_err());
        assert_eq!(checked(None, 0).unwrap(), None);
    }
}
