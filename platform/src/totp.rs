//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP) as every authenticator app
//! computes them from an `otpauth://` URI: HMAC-SHA-1, 6 digits, 30-second steps.
//!
//! A code is accepted for its own step and one step either side (clock drift), and only for a
//! step later than the last one accepted ([`Totp::check`] returns the step; the caller stores
//! it), so a code seen over someone's shoulder or in a log cannot be used again.

use chrono::{DateTime, Utc};
use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha1::Sha1;
use zeroize::Zeroizing;

use crate::crypto::constant_time_eq;

/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Seconds per step.
pub const STEP_SECS: i64 = 30;
/// Steps accepted either side of the current one.
pub const SKEW_STEPS: i64 = 1;
/// Bytes of a generated secret (160 bits, RFC 4226's recommendation).
pub const SECRET_BYTES: usize = 20;

/// A TOTP shared secret (never logged).
#[derive(Clone)]
pub struct Totp(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Totp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Totp([REDACTED])")
    }
}

impl Totp {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        OsRng.fill_bytes(&mut bytes);
        Self(Zeroizing::new(bytes))
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// The secret as authenticator apps take it typed in: base32 without padding.
    pub fn from_base32(encoded: &str) -> Option<Self> {
        let cleaned: String = encoded
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        BASE32_NOPAD
            .decode(cleaned.as_bytes())
            .ok()
            .filter(|b| !b.is_empty())
            .map(|b| Self(Zeroizing::new(b)))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret in base32 (no padding), for typing into an app.
    pub fn base32(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE32_NOPAD.encode(&self.0))
    }

    /// The `otpauth://totp/` URI (Key Uri Format) an app imports: `issuer` and `account` label
    /// the entry.
    pub fn uri(&self, issuer: &str, account: &str) -> Zeroizing<String> {
        let enc = |s: &str| -> String {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        Zeroizing::new(format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
            enc(issuer),
            enc(account),
            self.base32().as_str(),
            enc(issuer),
        ))
    }

    /// The code for `step` (empty, which matches nothing, if HMAC refused the key: it takes
    /// keys of any length, so never).
    pub fn code_for_step(&self, step: i64) -> String {
        hotp(&self.0, step.max(0) as u64, DIGITS)
            .map(|value| format!("{value:0width$}", width = DIGITS as usize))
            .unwrap_or_default()
    }

    /// The code at `at`.
    pub fn code_at(&self, at: DateTime<Utc>) -> String {
        self.code_for_step(step_at(at))
    }

    /// The step `code` belongs to, if it is the code of the step of `now` or of one step either
    /// side and that step is later than `after` (the last step accepted). Every candidate is
    /// compared in constant time.
    pub fn check(&self, code: &str, now: DateTime<Utc>, after: i64) -> Option<i64> {
        if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let current = step_at(now);
        let mut found = None;
        for step in (current - SKEW_STEPS)..=(current + SKEW_STEPS) {
            let matches = constant_time_eq(self.code_for_step(step).as_bytes(), code.as_bytes());
            if matches && step > after && found.is_none() {
                found = Some(step);
            }
        }
        found
    }
}

/// The step of `at`: whole periods since the Unix epoch.
pub fn step_at(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(STEP_SECS)
}

/// HOTP (RFC 4226 section 5.3): dynamic truncation of HMAC-SHA-1(key, counter), `digits` long.
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> Option<u32> {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).ok()?;
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    Some(binary % 10u32.pow(digits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const RFC_KEY: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc4226_appendix_d_hotp_values() {
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, want) in expected.into_iter().enumerate() {
            assert_eq!(
                hotp(RFC_KEY, counter as u64, 6),
                Some(want),
                "counter {counter}"
            );
        }
    }

    #[test]
    fn rfc6238_appendix_b_sha1_values() {
        // (time, 8-digit TOTP) for the SHA-1 key of the RFC.
        let vectors = [
            (59, 94287082),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ];
        for (t, want) in vectors {
            let at = Utc.timestamp_opt(t, 0).unwrap();
            assert_eq!(hotp(RFC_KEY, step_at(at) as u64, 8), Some(want), "t={t}");
            let six = Totp::from_bytes(RFC_KEY).code_at(at);
            assert_eq!(six, format!("{:06}", want % 1_000_000), "t={t}");
        }
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_only_after_the_last_step() {
        let totp = Totp::generate();
        let now = Utc.timestamp_opt(1_800_000_015, 0).unwrap();
        let step = step_at(now);
        for (s, ok) in [
            (step - 2, false),
            (step - 1, true),
            (step, true),
            (step + 1, true),
            (step + 2, false),
        ] {
            let code = totp.code_for_step(s);
            // Another step may share the code by chance (one in a million): skip that case.
            if (step - 1..=step + 1).any(|o| o != s && totp.code_for_step(o) == code) {
                continue;
            }
            assert_eq!(
                totp.check(&code, now, 0).is_some(),
                ok,
                "step offset {}",
                s - step
            );
        }
        let code = totp.code_at(now);
        assert_eq!(totp.check(&code, now, step - 1), Some(step));
        assert_eq!(totp.check(&code, now, step), None, "replayed");
        for bad in ["", "12345", "1234567", "12345a", " 12345", "１２３４５６"] {
            assert_eq!(totp.check(bad, now, 0), None, "{bad:?}");
        }
    }

    #[test]
    fn base32_and_uri_round_trip() {
        let totp = Totp::generate();
        let b32 = totp.base32();
        assert_eq!(b32.len(), 32);
        let back = Totp::from_base32(&b32.to_lowercase()).unwrap();
        assert_eq!(back.expose(), totp.expose());
        let uri = totp.uri("Consent Bank", "ops 1@bank");
        assert!(uri.starts_with("otpauth://totp/Consent%20Bank:ops%201%40bank?secret="));
        assert!(uri.contains(&format!("secret={}", b32.as_str())));
        assert!(uri.ends_with("&issuer=Consent%20Bank&algorithm=SHA1&digits=6&period=30"));
        assert!(Totp::from_base32("not base32!").is_none());
        assert!(format!("{totp:?}").contains("REDACTED"));
    }
}
