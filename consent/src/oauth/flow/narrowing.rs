//! The customer's narrowing on the consent page: what they chose (raw form values), the quick
//! period choices, and the grant it makes of the request - only ever a narrowing.

use super::*;
use chrono::{Datelike, NaiveDate};

/// What the customer chose on the consent page (raw form values).
#[derive(Debug, Clone, Default)]
pub struct ConsentChoice {
    pub accounts: Vec<String>,
    pub actions: Vec<String>,
    pub transactions_from: Option<String>,
    pub transactions_until: Option<String>,
    pub merchants: Vec<String>,
    pub expires_at: Option<String>,
    /// A quick choice of transaction period (`this_year`, `last_3_months`, `last_12_months`)
    /// instead of the two dates; `dates` or absent: the dates.
    pub period: Option<String>,
}

/// The first and last day of a quick period choice, as of `now`; `None` for an unknown name.
pub fn preset_window(name: &str, now: DateTime<Utc>) -> Option<(NaiveDate, NaiveDate)> {
    let today = now.date_naive();
    let months_back = |n: u32| today.checked_sub_months(chrono::Months::new(n));
    match name {
        "this_year" => Some((
            NaiveDate::from_ymd_opt(today.year(), 1, 1)?,
            NaiveDate::from_ymd_opt(today.year(), 12, 31)?,
        )),
        "last_3_months" => Some((months_back(3)?, today)),
        "last_12_months" => Some((months_back(12)?, today)),
        _ => None,
    }
}

#[derive(Debug, Clone)]
pub enum Decision {
    Approve(ConsentChoice),
    Deny,
}

/// The grant the customer's `choice` makes of the `requested` access, given the accounts the
/// page `offered`: only ever a narrowing, or an error to show on the page.
pub fn narrowed(
    requested: &AccessRequest,
    offered: &[OfferedAccount],
    choice: &ConsentChoice,
    now: DateTime<Utc>,
) -> Result<AccessRequest, ConsentError> {
    let invalid = |m: &str| ConsentError::Invalid(m.to_string());
    let mut accounts = Vec::new();
    for a in &choice.accounts {
        if !offered.iter().any(|o| &o.id == a) {
            return Err(invalid("an account that was not offered was submitted"));
        }
        let id = AccountId::parse(a.clone()).map_err(|_| invalid("malformed account"))?;
        if !accounts.contains(&id) {
            accounts.push(id);
        }
    }
    if accounts.is_empty() {
        return Err(invalid("choose at least one account, or deny the request"));
    }
    let mut actions = Vec::new();
    for a in &choice.actions {
        let action = Action::parse_known(a).map_err(|_| invalid("unknown permission"))?;
        if !actions.contains(&action) {
            actions.push(action);
        }
    }
    if actions.is_empty() {
        return Err(invalid(
            "choose at least one permission, or deny the request",
        ));
    }
    // The page works in whole days; a date equal to the requested bound's date means "as
    // requested", an earlier start, a later end or a later expiry date is a widening.
    let preset = match choice.period.as_deref() {
        None | Some("" | "dates") => None,
        Some(name) => Some(preset_window(name, now).ok_or_else(|| invalid("unknown period"))?),
    };
    let window = if let Some((first, last)) = preset {
        // A quick choice is cut to the period the app asked for (it is a shortcut, not a date
        // the customer typed); nothing left of it is an error to show.
        let day = |d: NaiveDate, end: bool| parse_instant(&d.format("%Y-%m-%d").to_string(), end);
        let (mut from, mut until) = (
            day(first, false).map_err(|_| invalid("unknown period"))?,
            day(last, true).map_err(|_| invalid("unknown period"))?,
        );
        if let Some(w) = &requested.window {
            from = from.max(w.from());
            until = until.min(w.until());
        }
        if until < from {
            return Err(invalid(
                "that period is outside the one the app asked for; choose dates instead",
            ));
        }
        Some(TxWindow::new(from, until).map_err(|_| {
            invalid("that period is outside the one the app asked for; choose dates instead")
        })?)
    } else {
        match (
            choice
                .transactions_from
                .as_deref()
                .filter(|s| !s.is_empty()),
            choice
                .transactions_until
                .as_deref()
                .filter(|s| !s.is_empty()),
        ) {
            (None, None) => requested.window,
            (Some(f), Some(u)) => {
                let from = parse_instant(f, false)
                    .map_err(|_| invalid("transactions from: not a date"))?;
                let until = parse_instant(u, true)
                    .map_err(|_| invalid("transactions until: not a date"))?;
                let (from, until) = match &requested.window {
                    None => (from, until),
                    Some(w) => {
                        if from.date_naive() < w.from().date_naive()
                            || until.date_naive() > w.until().date_naive()
                        {
                            return Err(invalid("the transaction window can only be shortened"));
                        }
                        (from.max(w.from()), until.min(w.until()))
                    }
                };
                Some(
                    TxWindow::new(from, until)
                        .map_err(|_| invalid("the transaction window ends before it starts"))?,
                )
            }
            _ => return Err(invalid("give both ends of the transaction window")),
        }
    };
    // The merchants chosen: parsed, deduplicated, and refused past the most a grant may carry
    // before any more work (a form may repeat the field thousands of times).
    let mut chosen: Vec<MerchantId> = Vec::new();
    for m in &choice.merchants {
        let id = MerchantId::parse(m.clone()).map_err(|_| invalid("malformed merchant"))?;
        if !chosen.contains(&id) {
            if chosen.len() == ::grants::MAX_MERCHANTS {
                return Err(invalid("too many merchants"));
            }
            chosen.push(id);
        }
    }
    let merchants = match &requested.merchants {
        // The app asked for all merchants: the customer may still limit it to some. (Only ever
        // narrower than what was asked; ids unknown to the customer's data just match nothing.)
        None if chosen.is_empty() => None,
        Some(_) if chosen.is_empty() => {
            return Err(invalid("choose at least one merchant, or deny the request"));
        }
        _ => Some(chosen),
    };
    let expires_at = match choice.expires_at.as_deref().filter(|s| !s.is_empty()) {
        Some(e) => {
            let chosen = crate::oauth::rar::whole_seconds(
                parse_instant(e, true).map_err(|_| invalid("end date: not a date"))?,
            );
            if chosen.date_naive() > requested.expires_at.date_naive() {
                return Err(invalid("access can only end earlier than requested"));
            }
            chosen.min(requested.expires_at)
        }
        None => requested.expires_at,
    };
    if expires_at <= now {
        return Err(invalid("the end date is in the past"));
    }
    let n = AccessRequest {
        actions,
        accounts: Some(accounts),
        window,
        merchants,
        expires_at,
    };
    if !requested.contains(&n) {
        return Err(invalid("the consent can only be narrowed, never widened"));
    }
    Ok(n)
}
