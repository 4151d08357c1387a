//! A second factor at login: TOTP (RFC 6238, [`platform::totp`]) with single-use recovery
//! codes. Mandatory for staff (a staff member without one can only enrol), optional for
//! developers.
//!
//! After the password, [`crate::accounts::login`] opens a session that owes the factor
//! ([`SecondFactorDue`]); no extractor but the second-factor ones accepts it. Paying it
//! ([`pay`]) ends that session and opens a full one under a new token, so a token seen before the
//! second factor is worth nothing after it.
//!
//! - Secrets are encrypted with the master key (purpose `second-factor`, bound to the account).
//! - A code counts once: the step it belongs to must be later than the last step accepted, and
//!   the conditional update that records it lets one of two concurrent uses win.
//! - Recovery codes carry 80 random bits, are stored as SHA-256 and deleted when used.
//! - A staff member enrols only with a one-time enrolment code ([`issue_enrolment_code`]) that
//!   the operator hands over out of band: a password alone, leaked before the first login, does
//!   not let anyone else set up the authenticator. The enrolment is bound to the session that
//!   started it: no other session is shown its secret or may confirm it.
//! - Attempts are capped per account ([`ATTEMPTS_PER_ACCOUNT`], counted before the check, so a
//!   burst of concurrent guesses is bounded too).
//! - Failures are counted per account ([`FAILURES_PER_ACCOUNT`] per [`FAILURE_WINDOW`], wherever
//!   they come from: whoever is guessing already has the password), then refused until the window
//!   ends.

use std::time::Duration as StdDuration;

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use platform::Platform;
use platform::audit::{Actor, NewEvent, Target};
use platform::crypto::{FieldCipher, PlainToken};
use platform::session::{self, SecondFactorDue, Session, SessionKind};
use platform::storage::AnyConnection;
use platform::storage::schema::{recovery_codes, second_factors};
use platform::totp::Totp;
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::accounts::LoggedIn;
use crate::error::{PortalError, PortalResult, read};

mod enrolment;
mod limits;

pub use enrolment::{
    ENROLMENT_CODE_LIFETIME, Enrolled, Enrolment, begin, confirm, enrolment_code_if_unenrolled,
    issue_enrolment_code, pending,
};

use limits::counted;

/// Recovery codes issued at enrolment.
pub const RECOVERY_CODES: usize = 10;
/// Failed codes an account may have per [`FAILURE_WINDOW`] before every attempt is refused.
pub const FAILURES_PER_ACCOUNT: u64 = 5;
pub const FAILURE_WINDOW: StdDuration = StdDuration::from_secs(900);
/// Codes an account may try per [`FAILURE_WINDOW`], right or wrong. Counted before the check:
/// failures are only known afterwards, so many guesses sent at once would all pass the failure
/// limit; this bounds such a burst.
pub const ATTEMPTS_PER_ACCOUNT: u64 = 10;
/// The issuer shown in authenticator apps.
pub const ISSUER: &str = "Consent";
fn ts(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc().trunc_subsecs(0)
}

/// One account's second factor as a request works on it: whose it is, the cipher of its secret
/// (the master key's purpose `second-factor`) and the request's time.
#[derive(Debug)]
pub struct Factor {
    cipher: FieldCipher,
    kind: SessionKind,
    id: String,
    now: DateTime<Utc>,
    /// The session the request comes from (its id hash): an enrolment belongs to the session
    /// that started it.
    session: Option<String>,
}

impl Factor {
    pub fn new(p: &Platform, kind: SessionKind, id: String) -> Self {
        Self {
            cipher: p.master_key.cipher("second-factor"),
            kind,
            id,
            now: p.now(),
            session: None,
        }
    }

    /// The factor of the account logged in as `s`, working within that session.
    pub fn in_session(p: &Platform, s: &Session) -> Self {
        Self {
            session: Some(s.binding().to_string()),
            ..Self::new(p, s.kind, s.subject_id.clone())
        }
    }

    /// The secret is bound to its account.
    fn aad(&self) -> String {
        format!("second-factor:{}:{}", self.kind.as_str(), self.id)
    }

    fn record(&self, c: &mut AnyConnection, action: &'static str) -> PortalResult<()> {
        let (kind, id) = (self.kind, self.id.as_str());
        let actor = match kind {
            SessionKind::Staff => Actor::staff(id),
            _ => Actor::developer(id),
        };
        NewEvent::new(actor, action, Target::new(kind.as_str(), id)).record(c, self.now)?;
        Ok(())
    }
}

/// Whether the account has a confirmed authenticator.
pub fn enrolled(c: &mut AnyConnection, kind: SessionKind, id: &str) -> PortalResult<bool> {
    let n: i64 = second_factors::table
        .filter(second_factors::subject_type.eq(kind.as_str()))
        .filter(second_factors::subject_id.eq(id))
        .filter(second_factors::confirmed_at.is_not_null())
        .count()
        .get_result(c)?;
    Ok(n == 1)
}

/// What is due after a correct password: the code where an authenticator is set up, enrolment
/// for staff without one, nothing for a developer without one.
pub fn due_after_password(
    c: &mut AnyConnection,
    kind: SessionKind,
    id: &str,
) -> PortalResult<Option<SecondFactorDue>> {
    Ok(if enrolled(c, kind, id)? {
        Some(SecondFactorDue::Verify)
    } else if kind == SessionKind::Staff {
        Some(SecondFactorDue::Enrol)
    } else {
        None
    })
}

/// A stored authenticator as read for a check: its secret, the last step accepted, and its
/// ciphertext (which names this very secret in the update that records a use).
struct Stored {
    totp: Totp,
    last: i64,
    enc: String,
}

impl Factor {
    /// The stored secret and last accepted step; `confirmed` selects a confirmed one, or else
    /// the pending one started in this session.
    fn stored(&self, c: &mut AnyConnection, confirmed: bool) -> PortalResult<Option<Stored>> {
        type Row = (String, i64, Option<NaiveDateTime>, Option<String>);
        let row: Option<Row> = second_factors::table
            .filter(second_factors::subject_type.eq(self.kind.as_str()))
            .filter(second_factors::subject_id.eq(&self.id))
            .select((
                second_factors::secret_enc,
                second_factors::last_step,
                second_factors::confirmed_at,
                second_factors::started_in,
            ))
            .first(c)
            .optional()?;
        let mine = |r: &Row| match confirmed {
            true => r.2.is_some(),
            false => r.2.is_none() && r.3.is_some() && r.3 == self.session,
        };
        let Some((enc, last, _, _)) = row.filter(mine) else {
            return Ok(None);
        };
        let secret = self.cipher.decrypt(&enc, &self.aad())?;
        Ok(Some(Stored {
            totp: Totp::from_bytes(&secret),
            last,
            enc,
        }))
    }

    /// Checks `code` against the stored secret (confirmed or pending) and records its step as
    /// used if it is later than the last one (of two concurrent uses of one code, exactly one
    /// updates the row); `confirm` also marks enrolment done. The update names the very secret
    /// that was checked: an enrolment restarted meanwhile by another login (a new secret) is
    /// not confirmed by this one's code.
    fn use_code(
        &self,
        c: &mut AnyConnection,
        stored: &Stored,
        code: &str,
        confirm: bool,
    ) -> PortalResult<()> {
        let step = (stored.totp)
            .check(code, self.now, stored.last)
            .ok_or_else(wrong_code)?;
        let target = second_factors::table
            .filter(second_factors::subject_type.eq(self.kind.as_str()))
            .filter(second_factors::subject_id.eq(&self.id))
            .filter(second_factors::secret_enc.eq(&stored.enc))
            .filter(second_factors::confirmed_at.is_not_null().eq(!confirm))
            .filter(second_factors::last_step.lt(step));
        let n = if confirm {
            diesel::update(target)
                .set((
                    second_factors::last_step.eq(step),
                    second_factors::confirmed_at.eq(Some(ts(self.now))),
                ))
                .execute(c)?
        } else {
            diesel::update(target)
                .set(second_factors::last_step.eq(step))
                .execute(c)?
        };
        if n == 1 { Ok(()) } else { Err(wrong_code()) }
    }

    /// Checks and uses up a code from the authenticator (six digits) or a recovery code.
    pub fn verify(&self, c: &mut AnyConnection, code: &str) -> PortalResult<Proof> {
        let (kind, id) = (self.kind, self.id.as_str());
        let code = code.trim();
        if code.len() > 64 {
            return Err(wrong_code());
        }
        if code.len() == platform::totp::DIGITS as usize {
            let Some(confirmed) = self.stored(c, true)? else {
                return Err(wrong_code());
            };
            self.use_code(c, &confirmed, code, false)?;
            return Ok(Proof::Code);
        }
        let used = diesel::delete(
            recovery_codes::table
                .filter(recovery_codes::subject_type.eq(kind.as_str()))
                .filter(recovery_codes::subject_id.eq(id))
                .filter(recovery_codes::code_hash.eq(code_hash(code))),
        )
        .execute(c)?;
        if used == 1 && enrolled(c, kind, id)? {
            self.record(c, "second_factor.recovery_code_used")?;
            Ok(Proof::RecoveryCode)
        } else {
            Err(wrong_code())
        }
    }

    /// Removes a developer's authenticator (a current code proves the owner asks); staff cannot
    /// go without one.
    pub fn remove(&self, c: &mut AnyConnection, code: &str) -> PortalResult<()> {
        if self.kind == SessionKind::Staff {
            return Err(PortalError::Forbidden(
                "staff cannot remove their second factor".into(),
            ));
        }
        self.verify(c, code)?;
        forget(c, self.kind, &self.id)?;
        self.record(c, "second_factor.removed")?;
        Ok(())
    }
}

/// Deletes the account's authenticator and recovery codes, whatever their state.
fn forget(c: &mut AnyConnection, kind: SessionKind, id: &str) -> PortalResult<()> {
    diesel::delete(
        second_factors::table
            .filter(second_factors::subject_type.eq(kind.as_str()))
            .filter(second_factors::subject_id.eq(id)),
    )
    .execute(c)?;
    diesel::delete(
        recovery_codes::table
            .filter(recovery_codes::subject_type.eq(kind.as_str()))
            .filter(recovery_codes::subject_id.eq(id)),
    )
    .execute(c)?;
    Ok(())
}

/// `xxxx-xxxx-xxxx-xxxx`: 80 random bits (a recovery or an enrolment code).
fn random_code() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 10]);
    OsRng.fill_bytes(bytes.as_mut());
    let b32 = Zeroizing::new(
        data_encoding::BASE32_NOPAD
            .encode(bytes.as_ref())
            .to_lowercase(),
    );
    Zeroizing::new(
        b32.as_bytes()
            .chunks(4)
            .map(|g| String::from_utf8_lossy(g).into_owned())
            .collect::<Vec<_>>()
            .join("-"),
    )
}

/// The stored form of a recovery or enrolment code (case, spaces and dashes do not count).
fn code_hash(code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(|ch| ch.is_ascii_alphanumeric())
        .map(|ch| ch.to_ascii_lowercase())
        .collect();
    PlainToken::from_presented(&normalized).hash().into_string()
}

fn wrong_code() -> PortalError {
    PortalError::field("code", "wrong or already used code")
}

/// How a login's second factor was proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Code,
    RecoveryCode,
}

/// Recovery codes an account has left.
pub fn recovery_codes_left(
    c: &mut AnyConnection,
    kind: SessionKind,
    id: &str,
) -> PortalResult<i64> {
    Ok(recovery_codes::table
        .filter(recovery_codes::subject_type.eq(kind.as_str()))
        .filter(recovery_codes::subject_id.eq(id))
        .count()
        .get_result(c)?)
}

/// `consent admin reset-second-factor`: a staff member who lost both the authenticator and the
/// recovery codes enrols again at the next login, with the new enrolment code returned here.
/// Their sessions end; the reset is audited as the operator's. Blocking (for the CLI).
pub fn reset_staff(
    platform: &Platform,
    username: &str,
) -> PortalResult<(crate::StaffAccount, Zeroizing<String>)> {
    let now = platform.now();
    let username =
        crate::domain::staff_username(username).map_err(|m| PortalError::field("username", m))?;
    platform.db.run_blocking(|c| {
        Ok(crate::error::transaction(c, |c| {
            let member = crate::accounts::staff_by_username(c, &username)?;
            forget(c, SessionKind::Staff, &member.id)?;
            session::delete_all_for(c, SessionKind::Staff, &member.id)?;
            NewEvent::new(
                Actor::system("cli"),
                "second_factor.reset",
                Target::new("staff", &member.id),
            )
            .record(c, now)?;
            let code =
                issue_enrolment_code(c, Actor::system("cli"), SessionKind::Staff, &member.id, now)?;
            Ok((member, code))
        }))
    })?
}

/// Opens the full session that replaces `owing` (in the same transaction as the proof).
fn upgrade(c: &mut AnyConnection, owing: &Session, now: DateTime<Utc>) -> PortalResult<LoggedIn> {
    session::delete(c, owing)?;
    let (token, session) = session::create(c, owing.kind, &owing.subject_id, now)?;
    Ok(LoggedIn {
        token,
        session,
        due: None,
    })
}

/// Pays a session's `Verify` debt with a code or recovery code: the full session, under a new
/// token. Wrong codes count towards the account's limit.
pub async fn pay(
    p: &Platform,
    owing: Session,
    due: SecondFactorDue,
    code: String,
) -> PortalResult<LoggedIn> {
    if due != SecondFactorDue::Verify {
        return Err(PortalError::Forbidden(
            "set up a second factor first".into(),
        ));
    }
    let factor = Factor::new(p, owing.kind, owing.subject_id.clone());
    counted(p, factor, move |c, f| {
        let action = match f.verify(c, &code)? {
            Proof::Code => "second_factor.verified",
            Proof::RecoveryCode => "second_factor.verified_with_recovery_code",
        };
        f.record(c, action)?;
        upgrade(c, &owing, f.now)
    })
    .await
}

/// Removes a developer's authenticator, proven with a current code (which counts if wrong).
pub async fn remove_for(
    p: &Platform,
    kind: SessionKind,
    id: String,
    code: String,
) -> PortalResult<()> {
    counted(p, Factor::new(p, kind, id), move |c, f| f.remove(c, &code)).await
}

/// Whether the account has an authenticator, and how many recovery codes it has left.
pub async fn status(p: &Platform, kind: SessionKind, id: String) -> PortalResult<(bool, i64)> {
    read(p, move |c| {
        Ok((enrolled(c, kind, &id)?, recovery_codes_left(c, kind, &id)?))
    })
    .await
}
