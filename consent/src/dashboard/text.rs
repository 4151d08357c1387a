//! Plain-language wording: days, permissions, audit events, lifecycle notices.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::lifecycle::policy::{self, End};

use super::*;

/// Display format of a day in plain-language messages, e.g. `3 Dec 2026`.
pub fn format_day(t: DateTime<Utc>) -> String {
    t.format("%-d %b %Y").to_string()
}

/// Plain-language description of a permission.
pub fn describe_action(action: &str) -> &'static str {
    match action {
        "accounts:read" => "See the names, numbers and currencies of the chosen accounts",
        "balances:read" => "See the balances of those accounts",
        "transactions:read" => "See the transactions on those accounts",
        _ => "A permission this bank does not describe",
    }
}

/// Plain-language description of an audit action on a grant.
pub fn describe_event(action: &str, details: &serde_json::Value) -> String {
    let by = details.get("by").and_then(|v| v.as_str()).unwrap_or("");
    match action {
        "consent.approved" => "You allowed this app access".into(),
        "consent.denied" => "You refused this app access".into(),
        "token.issued" => "The app received access to your data".into(),
        "token.refreshed" => "The app renewed its access".into(),
        "access_token.revoked" => "The app gave up one of its access tokens".into(),
        "resource.read" => match details.get("resource").and_then(|v| v.as_str()) {
            Some("accounts") => "The app read your account list".into(),
            Some("balances") => "The app read an account balance".into(),
            Some("transactions") => "The app read your transactions".into(),
            _ => "The app read your data".into(),
        },
        "grant.revoked" => match by {
            "customer" => "You ended this app's access".into(),
            "client" => "The app ended its own access".into(),
            "staff" => "The bank ended this app's access".into(),
            "dormancy" => "Access ended because the app had not used it for a long time".into(),
            "security" => "The bank ended this access to protect you (suspicious reuse)".into(),
            _ => "This app's access was ended".into(),
        },
        "grant.expired" => "Access ended on its expiry date".into(),
        "grant.viewed_by_staff" => {
            let why = match details.get("category").and_then(|v| v.as_str()) {
                Some("customer_request") => "at your request",
                Some("complaint") => "to handle a complaint",
                Some("fraud_investigation") => "to investigate possible fraud",
                Some("regulatory_inquiry") => "for a regulator's inquiry",
                Some("technical_support") => "for technical support",
                _ => "with a colleague's approval",
            };
            format!("Bank staff looked at this access {why}")
        }
        "grant.expiry_warning" | "grant.expiring" => "Access is about to expire".into(),
        "grant.dormancy_warning" | "grant.dormant_soon" => {
            "Access is about to end because the app has not used it for a long time".into()
        }
        "grant.extended" => match details
            .get("expires_at")
            .and_then(|v| v.as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        {
            Some(t) => format!(
                "You extended this app's access until {}",
                format_day(t.with_timezone(&Utc))
            ),
            None => "You extended this app's access".into(),
        },
        "grant.merged" => "You gave this app more access (its earlier tokens ended)".into(),
        "grant.replaced" => "You changed this app's access (its earlier tokens ended)".into(),
        "authorization_code.reused" | "refresh_token.replayed" => {
            "A security check failed (a one-time code was reused); access was ended".into()
        }
        other => format!("Other activity ({other})"),
    }
}

/// The notice for an authorized grant ending at `expires_at` (or, if sooner, at its dormancy
/// `deadline` after its last activity at `active_since`), if that end is within the lead time.
pub(super) fn notice(
    expires_at: DateTime<Utc>,
    deadline: DateTime<Utc>,
    active_since: DateTime<Utc>,
    lead_time: Duration,
    now: DateTime<Utc>,
) -> Option<GrantNotice> {
    let (end, ends_at) = policy::upcoming_end(expires_at, deadline, lead_time, now)?;
    Some(if end == End::Expiry {
        GrantNotice {
            kind: NOTICE_EXPIRING.into(),
            message: format!(
                "This access ends on {}. Extend it to keep the app connected.",
                format_day(expires_at)
            ),
            ends_at,
        }
    } else {
        let when = if deadline <= now {
            "at the next check".to_string()
        } else {
            format!("on {}", format_day(deadline))
        };
        GrantNotice {
            kind: NOTICE_DORMANT_SOON.into(),
            message: format!(
                "This app has not used its access since {}; it will be disconnected {when} \
                 unless you extend it.",
                format_day(active_since)
            ),
            ends_at,
        }
    })
}

/// What an app may see, as the consent page and each dashboard card say it in one sentence, e.g.
/// "Moneybox will see balances and transactions of 2 accounts from 1 Jan 2026 to 30 Jun 2026,
/// until 30 Sep 2026." The consent page's script (`assets/consent.js`) writes the same sentence
/// as the customer narrows; `tests` below pin the wording both follow.
#[derive(Debug, Clone)]
pub struct AccessSummary<'a> {
    /// The app's name.
    pub app: &'a str,
    /// "will see" (consent), "can see" (live grant), "could see" (ended grant).
    pub verb: &'a str,
    /// The permissions (`accounts:read`, ...), in any order.
    pub actions: Vec<&'a str>,
    /// How many accounts.
    pub accounts: usize,
    /// The transaction period, first and last day; `None`: any date.
    pub window: Option<(NaiveDate, NaiveDate)>,
    /// The merchants' names; `None`: any merchant.
    pub merchants: Option<Vec<&'a str>>,
    /// The last day of access.
    pub until: NaiveDate,
}

/// A day as the summary writes it, e.g. `1 Jan 2026`.
pub fn summary_day(d: NaiveDate) -> String {
    d.format("%-d %b %Y").to_string()
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

impl AccessSummary<'_> {
    pub fn sentence(&self) -> String {
        const ORDER: [(&str, &str); 3] = [
            ("accounts:read", "account details"),
            ("balances:read", "balances"),
            ("transactions:read", "transactions"),
        ];
        let what: Vec<&str> = ORDER
            .iter()
            .filter(|(a, _)| self.actions.contains(a))
            .map(|(_, text)| *text)
            .collect();
        if what.is_empty() || self.accounts == 0 {
            return format!("{} {} nothing.", self.app, self.verb);
        }
        let accounts = match self.accounts {
            1 => "1 account".to_string(),
            n => format!("{n} accounts"),
        };
        let mut s = format!(
            "{} {} {} of {accounts}",
            self.app,
            self.verb,
            and_list(&what)
        );
        if self.actions.contains(&"transactions:read") {
            match self.window {
                Some((from, until)) => s.push_str(&format!(
                    " from {} to {}",
                    summary_day(from),
                    summary_day(until)
                )),
                None => s.push_str(" from any date"),
            }
            match self.merchants.as_deref() {
                Some(names) if names.len() <= 3 => {
                    s.push_str(&format!(", only with {}", and_list(names)));
                }
                Some(names) => s.push_str(&format!(", only with {} merchants", names.len())),
                None => {}
            }
        }
        s.push_str(&format!(", until {}.", summary_day(self.until)));
        s
    }
}

/// Who operates an app, as every page and the API tell the customer: decided here only. The
/// bank's KYC verification is the developer's, so a verified developer's app names its legal
/// name in sandbox and production alike; otherwise a warning.
pub fn operator_label(environment: &str, verified_legal_name: Option<&str>) -> String {
    match (verified_legal_name, environment) {
        (Some(name), _) => name.to_string(),
        (None, "sandbox") => "Sandbox, unverified".to_string(),
        (None, _) => "Unverified operator".to_string(),
    }
}

/// The operator line of the consent page and the dashboard (see [`operator_label`]); a sandbox
/// app also says it only works with test customers.
pub fn operator_markup(environment: &str, verified_legal_name: Option<&str>) -> maud::Markup {
    let label = operator_label(environment, verified_legal_name);
    let sandbox = environment == "sandbox";
    maud::html! {
        @if verified_legal_name.is_some() {
            p.operator { "Operated by " strong { (label) } " - identity verified by your bank."
                @if sandbox { " A sandbox app: it works only with test customers and test data." } }
        } @else if sandbox {
            p.operator.warning { strong { (label) } " - a test app; its operator's identity has not been verified." }
        } @else {
            p.operator.warning { strong { (label) } " - the operator of this app has not been verified." }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_what_an_app_may_see_in_one_sentence() {
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let mut s = AccessSummary {
            app: "Moneybox",
            verb: "will see",
            actions: vec!["transactions:read", "balances:read"],
            accounts: 2,
            window: Some((day("2026-01-01"), day("2026-06-30"))),
            merchants: None,
            until: day("2026-09-30"),
        };
        assert_eq!(
            s.sentence(),
            "Moneybox will see balances and transactions of 2 accounts from 1 Jan 2026 to \
             30 Jun 2026, until 30 Sep 2026."
        );
        s.merchants = Some(vec!["Car Finance Co"]);
        s.window = None;
        s.accounts = 1;
        assert_eq!(
            s.sentence(),
            "Moneybox will see balances and transactions of 1 account from any date, only with \
             Car Finance Co, until 30 Sep 2026."
        );
        s.merchants = Some(vec!["A", "B", "C", "D"]);
        assert!(s.sentence().contains(", only with 4 merchants,"));
        s.actions = vec!["accounts:read", "balances:read"];
        assert_eq!(
            s.sentence(),
            "Moneybox will see account details and balances of 1 account, until 30 Sep 2026."
        );
        s.accounts = 0;
        assert_eq!(s.sentence(), "Moneybox will see nothing.");
    }

    #[test]
    fn events_are_described_in_plain_language() {
        let none = serde_json::json!({});
        assert_eq!(
            describe_event("token.issued", &none),
            "The app received access to your data"
        );
        assert_eq!(
            describe_event("grant.revoked", &serde_json::json!({"by": "customer"})),
            "You ended this app's access"
        );
        assert_eq!(
            describe_event(
                "resource.read",
                &serde_json::json!({"resource": "balances"})
            ),
            "The app read an account balance"
        );
        assert!(describe_event("weird.thing", &none).contains("weird.thing"));
        assert_eq!(
            describe_event(
                "grant.extended",
                &serde_json::json!({"expires_at": "2026-12-03T10:00:00Z"})
            ),
            "You extended this app's access until 3 Dec 2026"
        );
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_notice_appears_within_the_lead_time_of_the_sooner_end() {
        let now = at("2026-11-26T12:00:00Z");
        let lead = Duration::days(7);
        let far = at("2027-03-01T00:00:00Z");
        let since = at("2026-09-01T08:00:00Z");
        // Far from both ends: nothing.
        assert_eq!(notice(far, far, since, lead, now), None);
        // Expiry first, within the lead time.
        let n = notice(at("2026-12-03T10:00:00Z"), far, since, lead, now).unwrap();
        assert_eq!(n.kind, NOTICE_EXPIRING);
        assert_eq!(n.ends_at, at("2026-12-03T10:00:00Z"));
        assert_eq!(
            n.message,
            "This access ends on 3 Dec 2026. Extend it to keep the app connected."
        );
        // Exactly at the lead time: still a notice; one second later: none.
        assert!(notice(now + lead, far, since, lead, now).is_some());
        assert!(notice(now + lead + Duration::seconds(1), far, since, lead, now).is_none());
        // Dormancy first.
        let n = notice(far, at("2026-11-30T08:00:00Z"), since, lead, now).unwrap();
        assert_eq!(n.kind, NOTICE_DORMANT_SOON);
        assert_eq!(n.ends_at, at("2026-11-30T08:00:00Z"));
        assert_eq!(
            n.message,
            "This app has not used its access since 1 Sep 2026; it will be disconnected on \
             30 Nov 2026 unless you extend it."
        );
        // Dormancy deadline already passed (not yet swept).
        let n = notice(far, now - Duration::hours(1), since, lead, now).unwrap();
        assert!(
            n.message.contains("disconnected at the next check"),
            "{n:?}"
        );
    }
}
