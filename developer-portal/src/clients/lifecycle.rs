//! A client's lifecycle settings, changed by staff (four-eyes): its dormancy period, after which
//! the sweeper ends a grant nobody used. One staff member asks for a value, a compliance member
//! approves that exact value (it travels in the request), and the approval sets it.
//!
//! The value can only shorten the bank's default (`lifecycle.dormancy_period`): a customer's
//! protection against forgotten grants is never weakened per client. `None` returns the client
//! to the default.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use platform::storage::AnyConnection;
use platform::storage::models::ClientStatus;
use platform::storage::models::GrantStatus;
use platform::storage::schema::{clients, grant_rows};

use super::{staff_get, ts};
use crate::approvals::{self, ApprovalAction, ApprovalRequest, ApprovalTarget};
use crate::error::{PortalError, PortalResult};

/// The dormancy periods a client may have, in whole days: longer than the bank's warning lead
/// time (`lifecycle.warning_lead_time`, else every use would be followed by a dormancy warning)
/// and at most the bank's default (`lifecycle.dormancy_period`: the customers' protection is
/// never lengthened per client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DormancyBounds {
    pub shortest: i64,
    pub longest: i64,
}

impl DormancyBounds {
    pub fn of(lifecycle: &platform::config::LifecycleSettings) -> Self {
        let day = 86_400;
        let lead = i64::try_from(lifecycle.warning_lead_time.get().as_secs()).unwrap_or(i64::MAX);
        let default = i64::try_from(lifecycle.dormancy_period.get().as_secs()).unwrap_or(i64::MAX);
        Self {
            shortest: lead / day + 1,
            longest: (default / day).min(i64::from(i32::MAX)),
        }
    }

    /// `days` checked against the bounds (`None`: the bank's default).
    fn check(self, days: Option<i64>) -> PortalResult<Option<i32>> {
        let Self { shortest, longest } = self;
        match days {
            None => Ok(None),
            Some(d) if (shortest..=longest).contains(&d) => i32::try_from(d)
                .map(Some)
                .map_err(|_| PortalError::field("dormancy_days", "too large")),
            Some(_) if shortest > longest => Err(PortalError::field(
                "dormancy_days",
                "the bank's settings leave no shorter period possible: only null (the default)",
            )),
            Some(_) => Err(PortalError::field(
                "dormancy_days",
                format!(
                    "must be null (the bank's default) or {shortest} to {longest} days (longer \
                     than the warning lead time, at most the default)"
                ),
            )),
        }
    }
}

/// Staff member `staff_id` asks to set `client_id`'s dormancy period to `days` (`None`: the
/// bank's default) within `bounds`; a compliance member must approve it.
pub fn request_dormancy_change(
    conn: &mut AnyConnection,
    staff_id: &str,
    client_id: &str,
    days: Option<i64>,
    bounds: DormancyBounds,
    justification: &str,
    now: DateTime<Utc>,
) -> PortalResult<ApprovalRequest> {
    let days = bounds.check(days)?;
    let client = staff_get(conn, client_id)?;
    if client.dormancy_days == days {
        return Err(PortalError::Conflict(
            "the client's dormancy period is already that".into(),
        ));
    }
    let (live_grants, idle_grants) = affected_grants(conn, client_id, days, now)?;
    let action = ApprovalAction::SetClientDormancy;
    Ok(approvals::request(
        conn,
        action,
        ApprovalTarget::new(action.target_kind(), client_id),
        serde_json::json!({
            "client_id": client_id,
            "dormancy_days": days,
            "current_dormancy_days": client.dormancy_days,
            // What the approver weighs: the client's live grants, and how many of them have
            // been idle longer than the new period (they end that period after the approval
            // unless used, their warning the lead time before), as of the request.
            "live_grants": live_grants,
            "grants_idle_longer_than_new_period": idle_grants,
        }),
        justification,
        staff_id,
        now,
    )?)
}

/// The client's live grants, and those of them idle (no use since, else since authorization, else
/// since creation) for longer than `days` (none for the default).
fn affected_grants(
    conn: &mut AnyConnection,
    client_id: &str,
    days: Option<i32>,
    now: DateTime<Utc>,
) -> PortalResult<(i64, i64)> {
    let live = || {
        grant_rows::table
            .filter(grant_rows::client_id.eq(client_id))
            .filter(grant_rows::status.eq(GrantStatus::Authorized.as_str()))
    };
    let all: i64 = live().count().get_result(conn)?;
    let Some(days) = days else {
        return Ok((all, 0));
    };
    let cutoff = ts(now - chrono::Duration::days(i64::from(days)));
    let idle: i64 = live()
        .filter(
            grant_rows::last_used_at
                .lt(cutoff)
                .or(grant_rows::last_used_at.is_null().and(
                    grant_rows::authorized_at
                        .lt(cutoff)
                        .or(grant_rows::authorized_at
                            .is_null()
                            .and(grant_rows::created_at.lt(cutoff))),
                )),
        )
        .count()
        .get_result(conn)?;
    Ok((all, idle))
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
    let client_id = approved.target.id.as_str();
    let (from, since): (Option<i32>, Option<NaiveDateTime>) = clients::table
        .filter(clients::id.eq(client_id))
        .filter(clients::status.ne(ClientStatus::Deleted.as_str()))
        .select((clients::dormancy_days, clients::dormancy_since))
        .first(conn)
        .optional()?
        .ok_or(PortalError::NotFound("client"))?;
    // A shorter period counts from now for grants idle since before it (nothing ends at once);
    // a longer one keeps the moment the period was last shortened (changing the value back and
    // forth extends nothing); the default needs none.
    let shorter = match (from, to) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(old), Some(new)) => new < old,
    };
    let since = match to {
        None => None,
        Some(_) if shorter => Some(ts(now)),
        Some(_) => since,
    };
    diesel::update(clients::table.filter(clients::id.eq(client_id)))
        .set((
            clients::dormancy_days.eq(to),
            clients::dormancy_since.eq(since),
            clients::updated_at.eq(ts(now)),
        ))
        .execute(conn)?;
    // Each grant's deadline moved: a warning given for the old one no longer holds, and the
    // next pass warns again before the new one.
    diesel::update(
        grant_rows::table
            .filter(grant_rows::client_id.eq(client_id))
            .filter(grant_rows::status.eq(GrantStatus::Authorized.as_str()))
            .filter(grant_rows::dormancy_warned_at.is_not_null()),
    )
    .set(grant_rows::dormancy_warned_at.eq(None::<NaiveDateTime>))
    .execute(conn)?;
    Ok(serde_json::json!({ "from": from, "to": to }))
}

#[cfg(test)]
mod tests {
    use super::DormancyBounds;

    #[test]
    fn a_dormancy_period_only_shortens_the_default_and_outlasts_the_warning() {
        let b = DormancyBounds {
            shortest: 8,
            longest: 90,
        };
        assert_eq!(b.check(None).unwrap(), None);
        assert_eq!(b.check(Some(8)).unwrap(), Some(8));
        assert_eq!(b.check(Some(90)).unwrap(), Some(90));
        for bad in [0, -1, 7, 91, i64::MAX, i64::MIN] {
            assert!(b.check(Some(bad)).is_err(), "{bad}");
        }
        let none = DormancyBounds {
            shortest: 8,
            longest: 7,
        };
        assert!(none.check(Some(7)).is_err());
        assert_eq!(none.check(None).unwrap(), None);
    }

    #[test]
    fn the_bounds_follow_the_settings_and_never_exceed_a_stored_day_count() {
        let mut s = platform::config::Settings::default().lifecycle;
        s.warning_lead_time = "7d".parse().unwrap();
        s.dormancy_period = "90d".parse().unwrap();
        let b = DormancyBounds::of(&s);
        assert_eq!((b.shortest, b.longest), (8, 90));
        s.warning_lead_time = "36h".parse().unwrap();
        s.dormancy_period = "3000000000d".parse().unwrap();
        let b = DormancyBounds::of(&s);
        assert_eq!((b.shortest, b.longest), (2, i64::from(i32::MAX)));
    }
}
