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

/// The dormancy period of a client's grants: its own `dormancy_days` when positive, else the
/// bank's default. Never longer than the default, and never shorter than a day more than the
/// warning lead time `lead`: staff can only set a period that long, but a bank that raises
/// `lifecycle.warning_lead_time` later would otherwise give that client's grants less notice than
/// the lead time (a warning at once after every use).
pub fn dormancy_period(client_days: Option<i32>, default: Duration, lead: Duration) -> Duration {
    client_days
        .filter(|d| *d > 0)
        .map(|d| {
            Duration::days(i64::from(d))
                .max(lead + Duration::days(1))
                .min(default)
        })
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

/// [`active_since`] in SQL over `grants g`.
pub const ACTIVITY_SQL: &str = "COALESCE(g.last_used_at, g.authorized_at, g.created_at)";

/// The day of [`ACTIVITY_SQL`]: a generated column (`grants_activity_day_idx` indexes it for
/// authorized grants). The sweeper selects by day first (`activity_day <= date(cutoff)`, which
/// every grant active at or before the cutoff satisfies), then by the exact instant. Indexing
/// the day rather than the instant keeps the recording of a use, which changes the instant but
/// rarely the day, a HOT update on PostgreSQL (no index entries written).
pub const ACTIVITY_DAY_SQL: &str = "g.activity_day";

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

/// A client's own dormancy rule: its `period`, set by staff at `since` (none for the bank's
/// default rule), under the bank's `default` period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DormancyClock {
    pub period: Duration,
    pub since: Option<DateTime<Utc>>,
    pub default: Duration,
}

impl DormancyClock {
    /// The moment a grant last active at `active_since` becomes dormant: `period` after its
    /// activity, or after `since` if that is later (a shortened period gives every grant the
    /// whole new period, and its warning, from the change), and never later than `default`
    /// after its activity.
    pub fn deadline(&self, active_since: DateTime<Utc>) -> DateTime<Utc> {
        let period = self.period.min(self.default);
        let own = active_since.max(self.since.unwrap_or(active_since)) + period;
        own.min(active_since + self.default)
    }

    /// The grants that reach their [`DormancyClock::deadline`] by `at` are those last active at
    /// or before the instant returned (one instant for all of a client's grants, as `since` is
    /// the client's): `at - period` once `since` is that old, else `at - default`.
    pub fn activity_cutoff(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let own = at - self.period.min(self.default);
        match self.since {
            Some(s) if s > own => at - self.default,
            _ => own,
        }
    }

    /// Grants last active at or before this instant are within `lead` of their dormancy deadline
    /// (the sweeper's warning pass; the same moment [`upcoming_end`] reports as `Dormancy`).
    pub fn warning_cutoff(&self, now: DateTime<Utc>, lead: Duration) -> DateTime<Utc> {
        self.activity_cutoff(now + lead).min(now)
    }
}

#[cfg(test)]
mod tests {
    use super::{DormancyClock, dormancy_period};
    use chrono::{DateTime, Duration, Utc};

    /// A client's own period applies within its bounds: at least a day more than the lead time
    /// (a bank that raised the lead time after staff set the period), at most the default.
    #[test]
    fn a_client_period_stays_between_the_lead_time_and_the_default() {
        let (default, lead) = (Duration::days(90), Duration::days(7));
        let period = |days| dormancy_period(days, default, lead);
        assert_eq!(period(None), default);
        assert_eq!(period(Some(0)), default);
        assert_eq!(period(Some(-3)), default);
        assert_eq!(period(Some(30)), Duration::days(30));
        assert_eq!(period(Some(8)), Duration::days(8));
        // Set as 8 days when the lead was 7; the bank now warns 14 days ahead.
        assert_eq!(
            dormancy_period(Some(8), default, Duration::days(14)),
            Duration::days(15)
        );
        assert_eq!(period(Some(1)), Duration::days(8));
        assert_eq!(period(Some(365)), default);
        assert_eq!(period(Some(i32::MAX)), default);
        // A lead time close to the default: the default still bounds it.
        assert_eq!(
            dormancy_period(Some(10), default, Duration::days(89) + Duration::hours(12)),
            default
        );
    }

    /// The sweeper selects by one activity cutoff per client; that selection must be exactly the
    /// grants whose deadline has come, for every activity, setting time and moment.
    #[test]
    fn the_activity_cutoff_selects_exactly_the_grants_past_their_deadline() {
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let day = Duration::days(1);
        let settings = [None, Some(t0), Some(t0 + day * 5), Some(t0 + day * 40)];
        for (since, period) in settings.into_iter().flat_map(|s| [(s, 10), (s, 120)]) {
            let clock = DormancyClock {
                period: day * period,
                since,
                default: day * 90,
            };
            for at_day in 0..150 {
                let at = t0 + day * at_day;
                let cutoff = clock.activity_cutoff(at);
                for active_day in -100..150 {
                    let active = t0 + day * active_day;
                    assert_eq!(
                        clock.deadline(active) <= at,
                        active <= cutoff,
                        "since {since:?}, at day {at_day}, active day {active_day}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_shortened_period_counts_from_its_setting_for_older_grants() {
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let day = Duration::days(1);
        let clock = DormancyClock {
            period: day * 10,
            since: Some(t0),
            default: day * 90,
        };
        // Idle for 30 days when the period was set: 10 more days, not at once.
        assert_eq!(clock.deadline(t0 - day * 30), t0 + day * 10);
        // Idle for 85 days: the bank's default comes first.
        assert_eq!(clock.deadline(t0 - day * 85), t0 + day * 5);
        // Used after the change: the period from the use.
        assert_eq!(clock.deadline(t0 + day * 3), t0 + day * 13);
        // The warning comes the lead time before.
        let lead = day * 7;
        assert_eq!(clock.warning_cutoff(t0 + day * 3, lead), t0);
    }
}
