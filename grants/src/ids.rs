//! Prefixed identifiers: `acc_...`, `m_...`, `g_...`, `c_...`, `cust_...`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ParseError;

/// Maximum length of any identifier, prefix included.
pub const MAX_ID_LEN: usize = 64;

const ID_CHARSET: &str = "ASCII letters, digits, `_` and `-`";

fn parse_prefixed(value: &str, kind: &'static str, prefix: &'static str) -> Result<(), ParseError> {
    if value.is_empty() {
        return Err(ParseError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(ParseError::TooLong {
            kind,
            max: MAX_ID_LEN,
        });
    }
    // The prefix alone is not an identifier: at least one character must follow it.
    if !value.starts_with(prefix) || value.len() == prefix.len() {
        return Err(ParseError::MissingPrefix { kind, prefix });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ParseError::InvalidCharacter {
            kind,
            allowed: ID_CHARSET,
        });
    }
    Ok(())
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The required prefix.
            pub const PREFIX: &'static str = $prefix;

            /// Validates `value`: the prefix, then at least one of `[A-Za-z0-9_-]`,
            /// at most 64 characters in all.
            pub fn parse(value: impl Into<String>) -> Result<Self, ParseError> {
                let value = value.into();
                parse_prefixed(&value, $kind, $prefix)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::parse(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// A customer's bank account, `acc_...`.
    AccountId, "account id", "acc_"
);
prefixed_id!(
    /// A merchant (counterparty of transactions), `m_...`.
    MerchantId, "merchant id", "m_"
);
prefixed_id!(
    /// A grant (one consent), `g_...`.
    GrantId, "grant id", "g_"
);
prefixed_id!(
    /// An OAuth client (a fintech's application), `c_...`.
    ClientId, "client id", "c_"
);
prefixed_id!(
    /// The pseudonymous customer (token subject), `cust_...`.
    SubjectId, "subject id", "cust_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_well_formed_ids() {
        assert_eq!(AccountId::parse("acc_1").unwrap().as_str(), "acc_1");
        assert!(MerchantId::parse("m_Ab-9_z").is_ok());
        assert!(GrantId::parse("g_x").is_ok());
        assert!(ClientId::parse("c_x").is_ok());
        assert!(SubjectId::parse("cust_x").is_ok());
        let max = format!("acc_{}", "a".repeat(MAX_ID_LEN - 4));
        assert!(AccountId::parse(max).is_ok());
    }

    #[test]
    fn refuses_each_bad_input_class() {
        assert_eq!(
            AccountId::parse(""),
            Err(ParseError::Empty { kind: "account id" })
        );
        assert!(matches!(
            AccountId::parse("acc_"),
            Err(ParseError::MissingPrefix { .. })
        ));
        assert!(matches!(
            AccountId::parse("m_1"),
            Err(ParseError::MissingPrefix { .. })
        ));
        assert!(matches!(
            AccountId::parse("ACC_1"),
            Err(ParseError::MissingPrefix { .. })
        ));
        for bad in ["acc_\"x", "acc_ 1", "acc_1\n", "acc_é", "acc_1)", "acc_1;"] {
            assert!(
                matches!(
                    AccountId::parse(bad),
                    Err(ParseError::InvalidCharacter { .. })
                ),
                "{bad:?}"
            );
        }
        let long = format!("acc_{}", "a".repeat(MAX_ID_LEN - 3));
        assert!(matches!(
            AccountId::parse(long),
            Err(ParseError::TooLong { .. })
        ));
    }

    #[test]
    fn serde_goes_through_parse() {
        let ok: AccountId = serde_json::from_str("\"acc_1\"").unwrap();
        assert_eq!(ok.as_str(), "acc_1");
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"acc_1\"");
        assert!(serde_json::from_str::<AccountId>("\"acc_\\\"1\"").is_err());
        assert!(serde_json::from_str::<GrantId>("\"c_1\"").is_err());
        assert!(serde_json::from_str::<GrantId>("7").is_err());
    }
}
