//! Rich authorization requests (RFC 9396) of type `account_access`, and plain scopes as shorthand.
//!
//! A request is parsed into an [`AccessRequest`] built from the `grants` domain types, so every
//! id, action, date and window is validated on construction; anything invalid is an OAuth error
//! and nothing is stored.

use chrono::{DateTime, Duration, NaiveDate, SubsecRound, Utc};
use grants::{AccountId, Action, MerchantId, TxWindow};
use serde::{Deserialize, Serialize};

use super::error::OAuthError;

pub const ACCOUNT_ACCESS: &str = "account_access";
/// Default lifetime of a consent requested without `expires_at`.
const DEFAULT_LIFETIME_DAYS: i64 = 90;

/// One `authorization_details` entry as it appears on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountAccessDetail {
    #[serde(rename = "type")]
    #[schema(value_type = crate::openapi::values::DetailType)]
    pub kind: String,
    #[schema(value_type = Vec<crate::openapi::values::Permission>)]
    pub actions: Vec<String>,
    /// Account ids; absent means the customer chooses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<String>>,
    /// Start of the transaction window (RFC 3339 or `YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactions_from: Option<String>,
    /// End of the transaction window (RFC 3339 or `YYYY-MM-DD`, inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactions_until: Option<String>,
    /// Merchant ids; absent means all merchants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchants: Option<Vec<String>>,
    /// When the consent ends (RFC 3339 or `YYYY-MM-DD`); capped by the server's maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// A validated request for access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    pub actions: Vec<Action>,
    /// `None`: the customer picks among their accounts.
    pub accounts: Option<Vec<AccountId>>,
    pub window: Option<TxWindow>,
    /// `None`: all merchants.
    pub merchants: Option<Vec<MerchantId>>,
    pub expires_at: DateTime<Utc>,
}

/// A consent ends on a whole second: that is what is stored (RFC 3339 without a fraction) and
/// what a token carries (Biscuit dates), so the value read back equals the one parsed. Rounding
/// down only ever shortens the consent.
pub fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(0)
}

fn bad(msg: impl Into<String>) -> OAuthError {
    OAuthError::InvalidAuthorizationDetails(msg.into())
}

/// Parses an RFC 3339 timestamp or a calendar date (`end_of_day` picks 23:59:59 for "until").
pub fn parse_instant(value: &str, end_of_day: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        let time = if end_of_day {
            date.and_hms_opt(23, 59, 59)
        } else {
            date.and_hms_opt(0, 0, 0)
        };
        return time
            .map(|t| t.and_utc())
            .ok_or_else(|| format!("invalid date {value:?}"));
    }
    grants::parse_timestamp(value).map_err(|e| e.to_string())
}

/// An optional list of ids: absent, or present and not empty, each parsed.
fn id_list<T, E: std::fmt::Display>(
    field: &str,
    list: Option<&[String]>,
    parse: impl Fn(String) -> Result<T, E>,
) -> Result<Option<Vec<T>>, OAuthError> {
    let Some(list) = list else {
        return Ok(None);
    };
    if list.is_empty() {
        return Err(bad(format!("{field} must not be empty when present")));
    }
    list.iter()
        .map(|id| parse(id.clone()).map_err(|e| bad(format!("{field}: {e}"))))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

impl AccessRequest {
    /// Parses `authorization_details` (a JSON array with one `account_access` entry) and/or
    /// `scope`. With both, they must ask for the same actions.
    pub fn parse(
        authorization_details: Option<&str>,
        scope: Option<&str>,
        now: DateTime<Utc>,
        max_lifetime: Duration,
    ) -> Result<Self, OAuthError> {
        if scope.is_some_and(|s| s.len() > MAX_SCOPE_BYTES) {
            return Err(OAuthError::InvalidScope(format!(
                "scope is longer than {MAX_SCOPE_BYTES} bytes"
            )));
        }
        let from_scope = scope
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_scope)
            .transpose()?;
        let Some(raw) = authorization_details
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            let actions = from_scope.ok_or_else(|| {
                OAuthError::InvalidRequest("authorization_details or scope is required".into())
            })?;
            return Ok(Self {
                actions,
                accounts: None,
                window: None,
                merchants: None,
                expires_at: whole_seconds(
                    now + Duration::days(DEFAULT_LIFETIME_DAYS).min(max_lifetime),
                ),
            });
        };
        if raw.len() > 16 * 1024 {
            return Err(bad("authorization_details is too large"));
        }
        let entries: Vec<serde_json::Value> = serde_json::from_str(raw)
            .map_err(|e| bad(format!("authorization_details must be a JSON array: {e}")))?;
        let [entry] = entries.as_slice() else {
            return Err(bad("exactly one authorization_details entry is supported"));
        };
        if entry.get("type").and_then(|t| t.as_str()) != Some(ACCOUNT_ACCESS) {
            return Err(bad(
                "unsupported authorization_details type; expected \"account_access\"",
            ));
        }
        let detail: AccountAccessDetail = serde_json::from_value(entry.clone())
            .map_err(|e| bad(format!("invalid account_access entry: {e}")))?;
        let request = Self::from_detail(&detail, now, max_lifetime)?;
        if let Some(scope_actions) = from_scope {
            let mut a = scope_actions;
            let mut b = request.actions.clone();
            a.sort();
            b.sort();
            if a != b {
                return Err(OAuthError::InvalidScope(
                    "scope and authorization_details ask for different actions".into(),
                ));
            }
        }
        Ok(request)
    }

    pub fn from_detail(
        d: &AccountAccessDetail,
        now: DateTime<Utc>,
        max_lifetime: Duration,
    ) -> Result<Self, OAuthError> {
        if d.kind != ACCOUNT_ACCESS {
            return Err(bad("unsupported authorization_details type"));
        }
        if d.actions.is_empty() {
            return Err(bad("actions must not be empty"));
        }
        let mut actions = Vec::new();
        for a in &d.actions {
            let action = Action::parse_known(a).map_err(|e| bad(format!("actions: {e}")))?;
            if !actions.contains(&action) {
                actions.push(action);
            }
        }
        let accounts = id_list("accounts", d.accounts.as_deref(), AccountId::parse)?;
        let window = match (&d.transactions_from, &d.transactions_until) {
            (None, None) => None,
            (Some(from), Some(until)) => {
                let from = parse_instant(from, false)
                    .map_err(|e| bad(format!("transactions_from: {e}")))?;
                let until = parse_instant(until, true)
                    .map_err(|e| bad(format!("transactions_until: {e}")))?;
                Some(
                    TxWindow::new(from, until)
                        .map_err(|e| bad(format!("transaction window: {e}")))?,
                )
            }
            _ => return Err(bad("transactions_from and transactions_until go together")),
        };
        let merchants = id_list("merchants", d.merchants.as_deref(), MerchantId::parse)?;
        let cap = now.checked_add_signed(max_lifetime);
        let expires_at = whole_seconds(match &d.expires_at {
            Some(e) => parse_instant(e, true).map_err(|e| bad(format!("expires_at: {e}")))?,
            None => now + Duration::days(DEFAULT_LIFETIME_DAYS).min(max_lifetime),
        });
        if expires_at <= now {
            return Err(bad("expires_at is in the past"));
        }
        if cap.is_some_and(|cap| expires_at > cap) {
            return Err(bad(format!(
                "expires_at is beyond the maximum consent lifetime of {} days",
                max_lifetime.num_days()
            )));
        }
        // Validate sizes and duplicates exactly as the token will.
        grants::GrantScope::new(
            accounts
                .clone()
                .unwrap_or_else(|| vec![placeholder_account()]),
            actions.clone(),
            window,
            merchants.clone(),
            expires_at,
        )
        .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            actions,
            accounts,
            window,
            merchants,
            expires_at,
        })
    }

    /// The RFC 9396 representation (what is stored and returned in token responses).
    pub fn to_detail(&self) -> AccountAccessDetail {
        AccountAccessDetail {
            kind: ACCOUNT_ACCESS.into(),
            actions: self
                .actions
                .iter()
                .map(|a| a.as_str().to_string())
                .collect(),
            accounts: self
                .accounts
                .as_ref()
                .map(|v| v.iter().map(|a| a.as_str().to_string()).collect()),
            transactions_from: self
                .window
                .as_ref()
                .map(|w| grants::format_timestamp(w.from())),
            transactions_until: self
                .window
                .as_ref()
                .map(|w| grants::format_timestamp(w.until())),
            merchants: self
                .merchants
                .as_ref()
                .map(|v| v.iter().map(|m| m.as_str().to_string()).collect()),
            expires_at: Some(grants::format_timestamp(self.expires_at)),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&[self.to_detail()]).unwrap_or_default()
    }

    /// Reads back a stored representation (written by [`AccessRequest::to_json`]).
    pub fn from_stored(json: &str) -> Result<Self, OAuthError> {
        let details: Vec<AccountAccessDetail> = serde_json::from_str(json).map_err(|e| {
            OAuthError::ServerError(format!("stored authorization details unreadable: {e}"))
        })?;
        let [d] = details.as_slice() else {
            return Err(OAuthError::ServerError(
                "stored authorization details malformed".into(),
            ));
        };
        // Stored details were validated when written; re-validate without the lifetime cap
        // (`checked_add_signed` overflows to "no cap").
        Self::from_detail(d, DateTime::<Utc>::MIN_UTC, Duration::MAX)
    }

    /// The space-separated scope string of the actions.
    pub fn scope_string(&self) -> String {
        self.actions
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// OpenID Grant Management `merge`: one grant that allows exactly what either allows - never
    /// more - until the later expiry. A grant is one `account_access` entry (actions x accounts x
    /// window x merchants), so that exists only when one side contains the other, or when the two
    /// differ in one dimension alone (more actions over the same accounts, window and merchants;
    /// more accounts; more merchants; windows that overlap or touch). Anything else (say,
    /// transactions on account A merged with balances on account B, which would also give
    /// transactions on B) is refused: the client asks again with `replace` or `create`. A period
    /// and merchants only limit transaction reads, so they do not count for a side without them.
    pub fn merged(&self, other: &AccessRequest) -> Result<AccessRequest, OAuthError> {
        fn set<T: Clone + Ord>(v: &[T]) -> Vec<T> {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v
        }
        fn union<T: Clone + Ord>(a: &[T], b: &[T]) -> Vec<T> {
            let mut out = a.to_vec();
            out.extend(b.iter().filter(|x| !a.contains(x)).cloned());
            out
        }
        let expires_at = self.expires_at.max(other.expires_at);
        let scope_of = |r: &AccessRequest| AccessRequest {
            expires_at,
            ..r.clone()
        };
        let (mut a, mut b) = (scope_of(self), scope_of(other));
        // A period and merchants limit transaction reads only: a side that cannot read
        // transactions places no limit there that a merge could lose.
        let reads_transactions = |r: &AccessRequest| r.actions.contains(&Action::TransactionsRead);
        if !reads_transactions(&a) {
            (a.window, a.merchants) = (b.window, b.merchants.clone());
        }
        if !reads_transactions(&b) {
            (b.window, b.merchants) = (a.window, a.merchants.clone());
        }
        let merged = if a.contains(&b) {
            a
        } else if b.contains(&a) {
            b
        } else {
            let same_actions = set(&a.actions) == set(&b.actions);
            let same_accounts = a.accounts.as_deref().map(set) == b.accounts.as_deref().map(set);
            let same_window = a.window == b.window;
            let same_merchants = a.merchants.as_deref().map(set) == b.merchants.as_deref().map(set);
            let differing = [same_actions, same_accounts, same_window, same_merchants]
                .iter()
                .filter(|same| !**same)
                .count();
            let refuse = || {
                OAuthError::InvalidRequest(
                    "these two consents cannot be combined into one grant without allowing more \
                     than either (they differ in more than one of permissions, accounts, period \
                     and merchants); the app can ask to replace the grant instead"
                        .into(),
                )
            };
            if differing != 1 {
                return Err(refuse());
            }
            let mut m = a.clone();
            if !same_actions {
                m.actions = union(&a.actions, &b.actions);
            } else if !same_accounts {
                // Both are lists here (no limit on one side would contain the other).
                m.accounts = Some(union(
                    a.accounts.as_deref().unwrap_or_default(),
                    b.accounts.as_deref().unwrap_or_default(),
                ));
            } else if !same_merchants {
                m.merchants = Some(union(
                    a.merchants.as_deref().unwrap_or_default(),
                    b.merchants.as_deref().unwrap_or_default(),
                ));
            } else {
                let (Some(x), Some(y)) = (&a.window, &b.window) else {
                    return Err(refuse());
                };
                // The span is the union only when no day lies between them.
                let gap = chrono::Duration::seconds(1);
                if x.from() > y.until() + gap || y.from() > x.until() + gap {
                    return Err(refuse());
                }
                m.window = Some(
                    TxWindow::new(x.from().min(y.from()), x.until().max(y.until()))
                        .map_err(|e| OAuthError::InvalidRequest(e.to_string()))?,
                );
            }
            m
        };
        AccessRequest::from_stored(&merged.to_json())
    }

    /// Whether `narrower` asks for no more than `self` (the customer may only narrow).
    pub fn contains(&self, narrower: &AccessRequest) -> bool {
        let actions_ok = narrower.actions.iter().all(|a| self.actions.contains(a));
        let accounts_ok = match (&self.accounts, &narrower.accounts) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(p), Some(c)) => c.iter().all(|a| p.contains(a)),
        };
        let window_ok = match (&self.window, &narrower.window) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(p), Some(c)) => p.contains_window(c),
        };
        let merchants_ok = match (&self.merchants, &narrower.merchants) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(p), Some(c)) => c.iter().all(|m| p.contains(m)),
        };
        actions_ok
            && accounts_ok
            && window_ok
            && merchants_ok
            && narrower.expires_at <= self.expires_at
    }
}

fn placeholder_account() -> AccountId {
    // Only used to run GrantScope's validation when the customer picks accounts later.
    AccountId::parse("acc_placeholder").unwrap_or_else(|_| unreachable!("valid literal id"))
}

/// The longest `scope` taken: every known action, space-separated, is far shorter. The request
/// is kept as sent (PAR stores it until it is used), so padding must not pass.
const MAX_SCOPE_BYTES: usize = 1024;

fn parse_scope(scope: &str) -> Result<Vec<Action>, OAuthError> {
    let mut actions = Vec::new();
    for item in scope.split(' ').filter(|s| !s.is_empty()) {
        let action = Action::parse_known(item)
            .map_err(|_| OAuthError::InvalidScope(format!("unknown scope {item:?}")))?;
        if !actions.contains(&action) {
            actions.push(action);
        }
    }
    if actions.is_empty() {
        return Err(OAuthError::InvalidScope("scope is empty".into()));
    }
    Ok(actions)
}

#[cfg(test)]
mod tests;
