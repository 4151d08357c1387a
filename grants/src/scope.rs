//! What a customer granted: [`GrantScope`].

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ParseError;
use crate::time::{check_range, floor_secs};
use crate::{AccountId, Action, MerchantId, TxWindow};

/// Upper bound on accounts in one grant (keeps tokens and Datalog runs small).
pub const MAX_ACCOUNTS: usize = 100;
/// Upper bound on merchants in one grant.
pub const MAX_MERCHANTS: usize = 200;
/// Upper bound on actions in one grant.
pub const MAX_ACTIONS: usize = 16;

/// The granted authorization details of one consent.
///
/// Invariants (checked by [`GrantScope::new`] and by deserialization):
/// * `accounts` is non-empty: a grant always names its accounts (there is no "all accounts").
/// * `actions` is non-empty and every action is known to this version.
/// * `merchants`: `None` means no merchant limit; `Some` must be non-empty.
/// * `window`: `None` means no transaction window limit.
/// * no duplicates; lists are kept sorted so equal scopes compare equal.
/// * `expires_at` is the grant's own expiry, in whole seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GrantScope {
    accounts: Vec<AccountId>,
    actions: Vec<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<TxWindow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    merchants: Option<Vec<MerchantId>>,
    #[serde(serialize_with = "crate::time::serialize_ts")]
    expires_at: DateTime<Utc>,
}

fn dedup_sorted<T: Ord + Clone + ToString>(
    items: Vec<T>,
    field: &'static str,
    max: usize,
) -> Result<Vec<T>, ParseError> {
    if items.is_empty() {
        return Err(ParseError::EmptyList { field });
    }
    if items.len() > max {
        return Err(ParseError::TooMany { field, max });
    }
    let mut seen = BTreeSet::new();
    for item in &items {
        if !seen.insert(item.clone()) {
            return Err(ParseError::Duplicate {
                field,
                value: item.to_string(),
            });
        }
    }
    Ok(seen.into_iter().collect())
}

impl GrantScope {
    /// Validates and normalises a scope (see the type's invariants).
    pub fn new(
        accounts: Vec<AccountId>,
        actions: Vec<Action>,
        window: Option<TxWindow>,
        merchants: Option<Vec<MerchantId>>,
        expires_at: DateTime<Utc>,
    ) -> Result<Self, ParseError> {
        let accounts = dedup_sorted(accounts, "accounts", MAX_ACCOUNTS)?;
        let actions = dedup_sorted(actions, "actions", MAX_ACTIONS)?;
        if let Some(unknown) = actions.iter().find(|a| !a.is_known()) {
            return Err(ParseError::UnknownAction(unknown.to_string()));
        }
        let merchants = merchants
            .map(|m| dedup_sorted(m, "merchants", MAX_MERCHANTS))
            .transpose()?;
        let expires_at = floor_secs(expires_at);
        check_range(expires_at)?;
        Ok(Self {
            accounts,
            actions,
            window,
            merchants,
            expires_at,
        })
    }

    /// Granted accounts (sorted, non-empty).
    pub fn accounts(&self) -> &[AccountId] {
        &self.accounts
    }
    /// Granted actions (sorted, non-empty).
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }
    /// Transaction window, `None` = unlimited.
    pub fn window(&self) -> Option<&TxWindow> {
        self.window.as_ref()
    }
    /// Merchants, `None` = unlimited.
    pub fn merchants(&self) -> Option<&[MerchantId]> {
        self.merchants.as_deref()
    }
    /// When the grant itself ends.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }

    /// Whether `self` grants nothing that `parent` does not: the check the authorization
    /// server applies when a customer edits the consent form or a refresh asks for a scope.
    pub fn is_narrowing_of(&self, parent: &GrantScope) -> bool {
        let subset = |a: &[AccountId], b: &[AccountId]| a.iter().all(|x| b.contains(x));
        let accounts = subset(&self.accounts, &parent.accounts);
        let actions = self.actions.iter().all(|a| parent.actions.contains(a));
        let window = match (&parent.window, &self.window) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(p), Some(c)) => p.contains_window(c),
        };
        let merchants = match (&parent.merchants, &self.merchants) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(p), Some(c)) => c.iter().all(|m| p.contains(m)),
        };
        accounts && actions && window && merchants && self.expires_at <= parent.expires_at
    }
}

impl<'de> Deserialize<'de> for GrantScope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            accounts: Vec<AccountId>,
            actions: Vec<Action>,
            #[serde(default)]
            window: Option<TxWindow>,
            #[serde(default)]
            merchants: Option<Vec<MerchantId>>,
            expires_at: String,
        }
        let raw = Raw::deserialize(deserializer)?;
        let expires_at =
            crate::time::parse_timestamp(&raw.expires_at).map_err(serde::de::Error::custom)?;
        Self::new(
            raw.accounts,
            raw.actions,
            raw.window,
            raw.merchants,
            expires_at,
        )
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_timestamp;

    fn acc(s: &str) -> AccountId {
        AccountId::parse(s).unwrap()
    }

    fn scope(accounts: &[&str]) -> Result<GrantScope, ParseError> {
        GrantScope::new(
            accounts.iter().map(|a| acc(a)).collect(),
            vec![Action::AccountsRead],
            None,
            None,
            parse_timestamp("2027-01-01T00:00:00Z").unwrap(),
        )
    }

    #[test]
    fn requires_accounts_and_actions() {
        assert_eq!(scope(&[]), Err(ParseError::EmptyList { field: "accounts" }));
        assert!(matches!(
            scope(&["acc_1", "acc_1"]),
            Err(ParseError::Duplicate { .. })
        ));
        let no_actions = GrantScope::new(
            vec![acc("acc_1")],
            vec![],
            None,
            None,
            parse_timestamp("2027-01-01T00:00:00Z").unwrap(),
        );
        assert_eq!(no_actions, Err(ParseError::EmptyList { field: "actions" }));
        let unknown = GrantScope::new(
            vec![acc("acc_1")],
            vec![Action::parse("payments:initiate").unwrap()],
            None,
            None,
            parse_timestamp("2027-01-01T00:00:00Z").unwrap(),
        );
        assert!(matches!(unknown, Err(ParseError::UnknownAction(_))));
        let empty_merchants = GrantScope::new(
            vec![acc("acc_1")],
            vec![Action::AccountsRead],
            None,
            Some(vec![]),
            parse_timestamp("2027-01-01T00:00:00Z").unwrap(),
        );
        assert!(matches!(empty_merchants, Err(ParseError::EmptyList { .. })));
    }

    #[test]
    fn narrowing() {
        let parent = scope(&["acc_1", "acc_2"]).unwrap();
        assert!(scope(&["acc_2"]).unwrap().is_narrowing_of(&parent));
        assert!(!scope(&["acc_3"]).unwrap().is_narrowing_of(&parent));
        assert!(!parent.is_narrowing_of(&scope(&["acc_1"]).unwrap()));
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let json = r#"{"accounts":["acc_2","acc_1"],"actions":["balances:read"],"merchants":["m_1"],"expires_at":"2027-01-01T00:00:00Z"}"#;
        let s: GrantScope = serde_json::from_str(json).unwrap();
        assert_eq!(s.accounts()[0].as_str(), "acc_1");
        let again: GrantScope = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(s, again);
        let bad =
            r#"{"accounts":[],"actions":["balances:read"],"expires_at":"2027-01-01T00:00:00Z"}"#;
        assert!(serde_json::from_str::<GrantScope>(bad).is_err());
        let extra = r#"{"accounts":["acc_1"],"actions":["balances:read"],"expires_at":"2027-01-01T00:00:00Z","admin":true}"#;
        assert!(serde_json::from_str::<GrantScope>(extra).is_err());
    }
}
