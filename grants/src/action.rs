//! Actions (OAuth RAR `actions`, Biscuit `right` facts).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ParseError;

const MAX_ACTION_LEN: usize = 64;

/// Something a grant allows its client to do, written `resource:verb`.
///
/// The known actions are variants; any other syntactically valid action (for example a future
/// `payments:initiate`) parses to [`Action::Other`] so that a resource server running an older
/// version of this crate still reads newer tokens. Whether an unknown action may be *granted*
/// is the authorization server's decision: [`crate::GrantScope::new`] only accepts known actions.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// `accounts:read`: list the granted accounts and their details.
    AccountsRead,
    /// `balances:read`: read balances of granted accounts.
    BalancesRead,
    /// `transactions:read`: read transactions of granted accounts (within window and merchants).
    TransactionsRead,
    /// A well-formed action this version does not know. Only constructed by [`Action::parse`].
    Other(OtherAction),
}

/// The text of an action unknown to this version (validated by [`Action::parse`]).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct OtherAction(String);

impl OtherAction {
    /// The action text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Action {
    /// Every action this version knows, in a stable order.
    pub const KNOWN: [Action; 3] = [
        Action::AccountsRead,
        Action::BalancesRead,
        Action::TransactionsRead,
    ];

    /// Parses `resource:verb` (lowercase ASCII letters, digits and `_` on each side, at most
    /// 64 characters).
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        const KIND: &str = "action";
        match value {
            "accounts:read" => return Ok(Action::AccountsRead),
            "balances:read" => return Ok(Action::BalancesRead),
            "transactions:read" => return Ok(Action::TransactionsRead),
            _ => {}
        }
        if value.is_empty() {
            return Err(ParseError::Empty { kind: KIND });
        }
        if value.len() > MAX_ACTION_LEN {
            return Err(ParseError::TooLong {
                kind: KIND,
                max: MAX_ACTION_LEN,
            });
        }
        let part_ok = |p: &str| {
            p.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        match value.split_once(':') {
            Some((resource, verb)) if part_ok(resource) && part_ok(verb) => {
                Ok(Action::Other(OtherAction(value.to_owned())))
            }
            _ => Err(ParseError::InvalidCharacter {
                kind: KIND,
                allowed: "`resource:verb` in lowercase letters, digits and `_`",
            }),
        }
    }

    /// Parses and additionally requires a known action.
    pub fn parse_known(value: &str) -> Result<Self, ParseError> {
        let action = Self::parse(value)?;
        if action.is_known() {
            Ok(action)
        } else {
            Err(ParseError::UnknownAction(value.to_owned()))
        }
    }

    /// The wire form, e.g. `transactions:read`.
    pub fn as_str(&self) -> &str {
        match self {
            Action::AccountsRead => "accounts:read",
            Action::BalancesRead => "balances:read",
            Action::TransactionsRead => "transactions:read",
            Action::Other(other) => &other.0,
        }
    }

    /// Whether this version knows the action.
    pub fn is_known(&self) -> bool {
        !matches!(self, Action::Other(_))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Action({:?})", self.as_str())
    }
}

impl std::str::FromStr for Action {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_actions_round_trip() {
        for a in Action::KNOWN {
            assert_eq!(Action::parse(a.as_str()).unwrap(), a);
            assert_eq!(Action::parse_known(a.as_str()).unwrap(), a);
        }
    }

    #[test]
    fn future_actions_parse_but_are_not_known() {
        let pay = Action::parse("payments:initiate").unwrap();
        assert!(!pay.is_known());
        assert_eq!(pay.as_str(), "payments:initiate");
        assert_eq!(
            Action::parse_known("payments:initiate"),
            Err(ParseError::UnknownAction("payments:initiate".into()))
        );
    }

    #[test]
    fn malformed_actions_are_refused() {
        for bad in [
            "",
            "accounts",
            ":read",
            "accounts:",
            "Accounts:read",
            "a:b:c",
            "a:\"b",
            "a b:c",
            "1a:b",
        ] {
            assert!(Action::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Action::parse(&format!("a:{}", "b".repeat(70))).is_err());
        assert!(serde_json::from_str::<Action>("\"x\"").is_err());
        let a: Action = serde_json::from_str("\"balances:read\"").unwrap();
        assert_eq!(a, Action::BalancesRead);
    }
}
