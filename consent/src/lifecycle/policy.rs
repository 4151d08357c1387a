//! The lifecycle rules, written once for the sweeper and the dashboard: how long a grant may
//! stay unused (the bank's dormancy period, or a client's shorter one), what counts as its last
//! activity, and when a grant is close enough to its end to warn about it.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use platform::config::Settings;

/// The lifecycle settings (from `lifecycle.*` and `tokens.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecyclePolicy {
    /// Cap on a grant's lifetime, also on the lifetime an extension grants.
    pub max_grant_lifetime: Duration,
    /// Default dormancy period (a client may have a shorter one).
    pub dormancy_period: Duration,
    /// How long before its end a grant carries a notice.
    pub warning_lead_time: Duration,
    /// Lifetime of a refresh token (extension lifts capped refresh tokens up to it).
    pub refresh_token_ttl: Duration,
}

impl LifecyclePolicy {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            max_grant_lifetime: s.lifecycle.max_grant_lifetime.as_chrono(),
            dormancy_period: s.lifecycle.dormancy_period.as_chrono(),
            warning_lead_time: s.lifecycle.warning_lead_time.as_chrono(),
            refresh_token_ttl: s.tokens.refresh_token_ttl.as_chrono(),
        }
    }
}

/// The dormancy period of a client's grants: its own `dormancy_days` when positive and shorter
/// than the bank's default, else the default.
pub fn dormancy_period(client_days: Option<i32>, default: Duration) -> Duration {
    client_days
        .filter(|d| *d > 0)
        .map(|d| Duration::days(i64::from(d)).min(default))
        .unwrap_or(default)
}

/// The instant dormancy is measured from: the last use, else the authorization, else the
/// creation. [`ACTIVITY_SQL`] is the same rule for the sweeper's queries.
pub fn active_since(
    last_used_at: Option<NaiveDateTime>,
    authorized_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
) -> DateTime<Utc> {
    last_used_at
        .or(authorized_at)
        .unwrap_or(created_at)
        .and_utc()
}

/// [`active_since`] in SQL over `grants g`; the partial expression index `grants_activity_idx`
/// covers exactly this expression for authorized grants.
pub const ACTIVITY_SQL: &str = "COALESCE(g.last_used_at, g.authorized_at, g.created_at)";

/// Which end of a grant comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Expiry,
    Dormancy,
}

/// The grant's first end (its expiry, or its dormancy `deadline` if sooner) when it is within
/// `lead` of `now` (or already passed): the moment to warn the customer and the client.
pub fn upcoming_end(
    expires_at: DateTime<Utc>,
    deadline: DateTime<Utc>,
    lead: Duration,
    now: DateTime<Utc>,
) -> Option<(End, DateTime<Utc>)> {
    let ends_at = expires_at.min(deadline);
    if ends_at - now > lead {
        return None;
    }
    Some(if expires_at <= deadline {
        (End::Expiry, ends_at)
    } else {
        (End::Dormancy, ends_at)
    })
}

/// Grants last active at or before this instant are within `lead` of their dormancy deadline
/// (the sweeper's warning pass; the same moment [`upcoming_end`] reports as `Dormancy`).
pub fn dormancy_warning_cutoff(
    now: DateTime<Utc>,
    period: Duration,
    lead: Duration,
) -> DateTime<Utc> {
    now - (period - lead).max(Duration::zero())
}
