//! Timestamps: RFC 3339 in UTC, whole seconds (Biscuit dates have one-second resolution), and
//! the transaction window.

use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ParseError;

/// Latest supported instant (9999-12-31T23:59:59Z), as Unix seconds.
pub(crate) const MAX_SECS: i64 = 253_402_300_799;

/// Parses an RFC 3339 timestamp whose offset is UTC (`Z` or `+00:00`).
pub fn parse_timestamp(value: &str) -> Result<DateTime<Utc>, ParseError> {
    let invalid = || ParseError::InvalidTimestamp {
        value: value.chars().take(64).collect(),
    };
    if !(value.ends_with('Z') || value.ends_with('z') || value.ends_with("+00:00")) {
        return Err(invalid());
    }
    let parsed = DateTime::parse_from_rfc3339(value).map_err(|_| invalid())?;
    let utc = parsed.with_timezone(&Utc);
    check_range(utc)?;
    Ok(utc)
}

pub(crate) fn check_range(t: DateTime<Utc>) -> Result<(), ParseError> {
    if t.timestamp() < 0 || t.timestamp() > MAX_SECS {
        return Err(ParseError::TimestampOutOfRange {
            value: format_timestamp(t),
        });
    }
    Ok(())
}

/// Formats as `2026-01-01T00:00:00Z` (the form Biscuit Datalog prints and parses).
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Drops sub-second precision (rounds down).
pub(crate) fn floor_secs(t: DateTime<Utc>) -> DateTime<Utc> {
    from_secs(t.timestamp())
}

/// Rounds up to the next whole second when there is a fraction.
pub(crate) fn ceil_secs(t: DateTime<Utc>) -> DateTime<Utc> {
    if t.timestamp_subsec_nanos() == 0 {
        t
    } else {
        from_secs(t.timestamp().saturating_add(1))
    }
}

pub(crate) fn from_secs(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs.clamp(0, MAX_SECS), 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

pub(crate) fn to_secs(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp().clamp(0, MAX_SECS)).unwrap_or(0)
}

/// A closed interval of transaction dates, `from <= until`, in whole UTC seconds.
///
/// Built only through [`TxWindow::new`] / [`TxWindow::parse`] (and serde, which calls them):
/// `from` is rounded up and `until` down to whole seconds, so normalisation never widens it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct TxWindow {
    #[serde(serialize_with = "ser_ts")]
    from: DateTime<Utc>,
    #[serde(serialize_with = "ser_ts")]
    until: DateTime<Utc>,
}

fn ser_ts<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_timestamp(*t))
}

impl TxWindow {
    /// Validates bounds: both within 1970..=9999, `from <= until`.
    pub fn new(from: DateTime<Utc>, until: DateTime<Utc>) -> Result<Self, ParseError> {
        let from = ceil_secs(from);
        let until = floor_secs(until);
        check_range(from)?;
        check_range(until)?;
        if from > until {
            return Err(ParseError::WindowInverted {
                from: format_timestamp(from),
                until: format_timestamp(until),
            });
        }
        Ok(Self { from, until })
    }

    /// Parses two RFC 3339 UTC timestamps.
    pub fn parse(from: &str, until: &str) -> Result<Self, ParseError> {
        Self::new(parse_timestamp(from)?, parse_timestamp(until)?)
    }

    /// First instant of the window (inclusive).
    pub fn from(&self) -> DateTime<Utc> {
        self.from
    }

    /// Last instant of the window (inclusive).
    pub fn until(&self) -> DateTime<Utc> {
        self.until
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains_window(&self, other: &TxWindow) -> bool {
        self.from <= other.from && other.until <= self.until
    }

    /// Whether the instant lies inside the window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && t <= self.until
    }

    /// The overlap of two windows, if any.
    pub fn intersect(&self, other: &TxWindow) -> Option<TxWindow> {
        let from = self.from.max(other.from);
        let until = self.until.min(other.until);
        (from <= until).then_some(TxWindow { from, until })
    }
}

impl fmt::Display for TxWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}..{}",
            format_timestamp(self.from),
            format_timestamp(self.until)
        )
    }
}

impl fmt::Debug for TxWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxWindow({self})")
    }
}

impl<'de> Deserialize<'de> for TxWindow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            from: String,
            until: String,
        }
        let raw = Raw::deserialize(deserializer)?;
        Self::parse(&raw.from, &raw.until).map_err(serde::de::Error::custom)
    }
}

pub(crate) fn serialize_ts<S: serde::Serializer>(
    t: &DateTime<Utc>,
    s: S,
) -> Result<S::Ok, S::Error> {
    ser_ts(t, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_only() {
        assert!(parse_timestamp("2026-01-01T00:00:00Z").is_ok());
        assert!(parse_timestamp("2026-01-01T00:00:00+00:00").is_ok());
        assert!(parse_timestamp("2026-01-01T00:00:00.5Z").is_ok());
        for bad in [
            "2026-01-01T00:00:00+01:00",
            "2026-01-01",
            "yesterday",
            "",
            "2026-13-01T00:00:00Z",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_timestamp("1969-12-31T23:59:59Z"),
            Err(ParseError::TimestampOutOfRange { .. })
        ));
    }

    #[test]
    fn window_validates_and_never_widens() {
        let w = TxWindow::parse("2026-01-01T00:00:00.2Z", "2026-02-01T00:00:00.9Z").unwrap();
        assert_eq!(format_timestamp(w.from()), "2026-01-01T00:00:01Z");
        assert_eq!(format_timestamp(w.until()), "2026-02-01T00:00:00Z");
        assert!(matches!(
            TxWindow::parse("2026-02-01T00:00:00Z", "2026-01-01T00:00:00Z"),
            Err(ParseError::WindowInverted { .. })
        ));
        assert!(TxWindow::parse("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z").is_ok());
        let json = r#"{"from":"2026-01-01T00:00:00Z","until":"2025-01-01T00:00:00Z"}"#;
        assert!(serde_json::from_str::<TxWindow>(json).is_err());
        let json = r#"{"from":"2025-01-01T00:00:00Z","until":"2026-01-01T00:00:00Z"}"#;
        let w: TxWindow = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&w).unwrap(), json);
    }
}
