//! Enrolment: an authenticator is set up in the session that starts it, with (for staff) the
//! one-time enrolment code the operator handed over, and confirmed with its first code; then the
//! recovery codes. See the module documentation of [`super`].

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use platform::Platform;
use platform::audit::{Actor, NewEvent, Target};
use platform::crypto::verify_password;
use platform::session::{Session, SessionKind};
use platform::storage::AnyConnection;
use platform::storage::schema::{developers, enrolment_codes, recovery_codes, second_factors};
use platform::totp::Totp;
use zeroize::Zeroizing;

use super::{
    Factor, ISSUER, RECOVERY_CODES, code_hash, counted, enrolled, forget, random_code, ts, upgrade,
};
use crate::accounts::LoggedIn;
use crate::error::{PortalError, PortalResult, read, write};

/// How long an enrolment code stays good after the operator was given it.
pub const ENROLMENT_CODE_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(72);

/// A started enrolment: the secret to put into an authenticator app, shown once (never in Debug).
pub struct Enrolment {
    /// Base32, for typing in.
    pub secret: Zeroizing<String>,
    /// `otpauth://totp/...`, for apps that import a link (or a QR code made of it).
    pub uri: Zeroizing<String>,
}

impl Factor {
    /// Starts (or starts again) enrolment in this session: a new secret waits for its first
    /// code. Refused when the account already has a confirmed authenticator (remove it first),
    /// and for staff without their valid enrolment code.
    pub fn start_enrolment(
        &self,
        c: &mut AnyConnection,
        account_label: &str,
        enrolment_code: Option<&str>,
    ) -> PortalResult<Enrolment> {
        let (kind, id) = (self.kind, self.id.as_str());
        if enrolled(c, kind, id)? {
            return Err(PortalError::Conflict(
                "a second factor is already set up".into(),
            ));
        }
        if kind == SessionKind::Staff {
            self.check_enrolment_code(c, enrolment_code)?;
        }
        let Some(session) = &self.session else {
            return Err(PortalError::Forbidden("enrolment needs a session".into()));
        };
        let totp = Totp::generate();
        let secret_enc = self.cipher.encrypt(totp.expose(), &self.aad())?;
        // A clean slate: an unconfirmed secret started earlier is replaced.
        forget(c, kind, id)?;
        diesel::insert_into(second_factors::table)
            .values((
                second_factors::subject_type.eq(kind.as_str()),
                second_factors::subject_id.eq(id),
                second_factors::secret_enc.eq(&secret_enc),
                second_factors::last_step.eq(0_i64),
                second_factors::created_at.eq(ts(self.now)),
                second_factors::started_in.eq(session),
            ))
            .execute(c)?;
        self.record(c, "second_factor.enrolment_started")?;
        Ok(Enrolment::of(&totp, account_label))
    }

    /// Whether `presented` is the account's enrolment code, unexpired. A wrong one is a field
    /// error, so it counts towards the account's failure limit.
    fn check_enrolment_code(
        &self,
        c: &mut AnyConnection,
        presented: Option<&str>,
    ) -> PortalResult<()> {
        let presented = presented.map(str::trim).unwrap_or_default();
        let wrong = || {
            PortalError::field(
                "enrolment_code",
                "wrong or expired enrolment code: ask an administrator for a new one",
            )
        };
        if presented.len() > 64 {
            return Err(wrong());
        }
        if presented.is_empty() {
            return Err(PortalError::field(
                "enrolment_code",
                "required: the enrolment code your administrator gave you with your password",
            ));
        }
        let n: i64 = enrolment_codes::table
            .filter(enrolment_codes::subject_type.eq(self.kind.as_str()))
            .filter(enrolment_codes::subject_id.eq(&self.id))
            .filter(enrolment_codes::code_hash.eq(code_hash(presented)))
            .filter(enrolment_codes::expires_at.gt(ts(self.now)))
            .count()
            .get_result(c)?;
        if n == 1 { Ok(()) } else { Err(wrong()) }
    }

    /// New recovery codes (enrolment started from a clean slate, so there are no others):
    /// `xxxx-xxxx-xxxx-xxxx`, 80 random bits each, shown once.
    fn issue_recovery_codes(&self, c: &mut AnyConnection) -> PortalResult<Vec<Zeroizing<String>>> {
        let mut codes = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            let code = random_code();
            diesel::insert_into(recovery_codes::table)
                .values((
                    recovery_codes::subject_type.eq(self.kind.as_str()),
                    recovery_codes::subject_id.eq(&self.id),
                    recovery_codes::code_hash.eq(code_hash(&code)),
                    recovery_codes::created_at.eq(ts(self.now)),
                ))
                .execute(c)?;
            codes.push(code);
        }
        Ok(codes)
    }

    /// Confirms enrolment (started in this session) with the app's first code: the
    /// authenticator is set up, the enrolment code is used up, and the recovery codes are
    /// returned (once).
    pub fn confirm_enrolment(
        &self,
        c: &mut AnyConnection,
        code: &str,
    ) -> PortalResult<Vec<Zeroizing<String>>> {
        let Some(pending) = self.stored(c, false)? else {
            return Err(PortalError::Conflict(
                "no enrolment in progress: start one first".into(),
            ));
        };
        self.use_code(c, &pending, code.trim(), true)?;
        diesel::delete(
            enrolment_codes::table
                .filter(enrolment_codes::subject_type.eq(self.kind.as_str()))
                .filter(enrolment_codes::subject_id.eq(&self.id)),
        )
        .execute(c)?;
        let codes = self.issue_recovery_codes(c)?;
        self.record(c, "second_factor.enrolled")?;
        Ok(codes)
    }
}

impl Enrolment {
    fn of(totp: &Totp, account_label: &str) -> Self {
        Self {
            secret: totp.base32(),
            uri: totp.uri(ISSUER, account_label),
        }
    }
}

/// A new enrolment code for the account, replacing any earlier one; good for
/// [`ENROLMENT_CODE_LIFETIME`] and until an enrolment is confirmed. Shown once, stored hashed,
/// audited (`second_factor.enrolment_code_issued`, by `actor`).
pub fn issue_enrolment_code(
    c: &mut AnyConnection,
    actor: Actor,
    kind: SessionKind,
    id: &str,
    now: DateTime<Utc>,
) -> PortalResult<Zeroizing<String>> {
    let code = random_code();
    let expires_at = now + ENROLMENT_CODE_LIFETIME;
    diesel::delete(
        enrolment_codes::table
            .filter(enrolment_codes::subject_type.eq(kind.as_str()))
            .filter(enrolment_codes::subject_id.eq(id)),
    )
    .execute(c)?;
    diesel::insert_into(enrolment_codes::table)
        .values((
            enrolment_codes::subject_type.eq(kind.as_str()),
            enrolment_codes::subject_id.eq(id),
            enrolment_codes::code_hash.eq(code_hash(&code)),
            enrolment_codes::created_at.eq(ts(now)),
            enrolment_codes::expires_at.eq(ts(expires_at)),
        ))
        .execute(c)?;
    NewEvent::new(
        actor,
        "second_factor.enrolment_code_issued",
        Target::new(kind.as_str(), id),
    )
    .details(serde_json::json!({ "expires_at": ts(expires_at).and_utc() }))
    .record(c, now)?;
    Ok(code)
}

/// A new enrolment code for an account without an authenticator (the demo's staff members at
/// every start); `None` for one that has one.
pub async fn enrolment_code_if_unenrolled(
    p: &Platform,
    actor: Actor,
    kind: SessionKind,
    id: String,
) -> PortalResult<Option<Zeroizing<String>>> {
    let now = p.now();
    write(p, move |c| {
        if enrolled(c, kind, &id)? {
            return Ok(None);
        }
        issue_enrolment_code(c, actor, kind, &id, now).map(Some)
    })
    .await
}

/// Starts enrolment in the caller's session, with `proof`: for a staff login that owes
/// enrolment, its enrolment code; for a developer's full session, the current password. A wrong
/// one counts towards the account's failure limit.
pub async fn begin(
    p: &Platform,
    session: &Session,
    account_label: String,
    proof: Option<String>,
) -> PortalResult<Enrolment> {
    let factor = Factor::in_session(p, session);
    if session.kind != SessionKind::Staff {
        // A developer proves the password again, checked outside the transaction (argon2 is
        // slow) and only once the attempt is admitted (so argon2 runs at most as often as the
        // account's attempts allow); a wrong one counts towards the limit like a wrong code.
        // An authenticator already set up is a conflict before any of that.
        let (kind, id) = (session.kind, session.subject_id.clone());
        if read(p, move |c| enrolled(c, kind, &id)).await? {
            return Err(PortalError::Conflict(
                "a second factor is already set up".into(),
            ));
        }
        super::limits::admit(p, session.kind, &session.subject_id).await?;
        let checked = password_matches(p, session.subject_id.clone(), proof).await?;
        return super::limits::settle(p, factor, move |c, f| {
            checked?;
            f.start_enrolment(c, &account_label, None)
        })
        .await;
    }
    let start = move |c: &mut AnyConnection, f: &Factor| {
        f.start_enrolment(c, &account_label, proof.as_deref())
    };
    let (id, now) = (session.subject_id.clone(), p.now());
    let outcome = counted(p, factor, start).await;
    if let Err(PortalError::Validation(_)) = &outcome {
        // A wrong enrolment code means someone has the password: the log says so each time
        // (the refused start itself was rolled back).
        let _ = write(p, move |c| {
            NewEvent::new(
                Actor::staff(&id),
                "second_factor.enrolment_code_refused",
                Target::new("staff", &id),
            )
            .record(c, now)?;
            Ok(())
        })
        .await;
    }
    outcome
}

/// Whether `presented` is developer `id`'s current password: `Err` (a field error) when it is
/// missing or wrong. A stolen session alone cannot set up an authenticator, which would lock the
/// owner out at their next login.
async fn password_matches(
    p: &Platform,
    id: String,
    presented: Option<String>,
) -> PortalResult<PortalResult<()>> {
    let presented = Zeroizing::new(presented.unwrap_or_default());
    if presented.is_empty() {
        return Ok(Err(PortalError::field(
            "password",
            "required: your current password",
        )));
    }
    let stored: Option<String> = read(p, move |c| {
        Ok(developers::table
            .filter(developers::id.eq(&id))
            .select(developers::password_hash)
            .first(c)
            .optional()?)
    })
    .await?;
    let ok = p
        .passwords
        .run(move || presented.len() <= 1024 && verify_password(&presented, stored.as_deref()))
        .await
        .map_err(|e| platform::storage::StorageError::Unavailable(e.to_string()))?;
    Ok(if ok {
        Ok(())
    } else {
        Err(PortalError::field("password", "wrong password"))
    })
}

/// Enrolment confirmed: the recovery codes (never in Debug), and for a session that owed
/// enrolment the full session that replaces it.
pub struct Enrolled {
    pub recovery_codes: Vec<Zeroizing<String>>,
    pub upgraded: Option<LoggedIn>,
}

/// Confirms the enrolment started in `session` with a first code; a session that owed it
/// (`owing`) is then replaced by a full one.
pub async fn confirm(
    p: &Platform,
    session: Session,
    owing: bool,
    code: String,
) -> PortalResult<Enrolled> {
    counted(p, Factor::in_session(p, &session), move |c, f| {
        let recovery_codes = f.confirm_enrolment(c, &code)?;
        // Full sessions opened with the password alone (another browser, or whoever else knew
        // it) end: from here on a login needs the authenticator too.
        platform::session::delete_other_full(c, &session)?;
        let upgraded = owing.then(|| upgrade(c, &session, f.now)).transpose()?;
        Ok(Enrolled {
            recovery_codes,
            upgraded,
        })
    })
    .await
}

/// The enrolment in progress in `session` (its secret again, for the page that confirms it), if
/// any.
pub async fn pending(
    p: &Platform,
    session: &Session,
    account_label: String,
) -> PortalResult<Option<Enrolment>> {
    let factor = Factor::in_session(p, session);
    read(p, move |c| {
        Ok(factor
            .stored(c, false)?
            .map(|s| Enrolment::of(&s.totp, &account_label)))
    })
    .await
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrolment([REDACTED])")
    }
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolled")
            .field("recovery_codes", &self.recovery_codes.len())
            .field("upgraded", &self.upgraded)
            .finish()
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn secrets_and_recovery_codes_never_reach_debug_output() {
        let e = Enrolment {
            secret: Zeroizing::new("JBSWY3DPEHPK3PXP".into()),
            uri: Zeroizing::new("otpauth://totp/x?secret=JBSWY3DPEHPK3PXP".into()),
        };
        assert!(!format!("{e:?}").contains("JBSWY3DP"));
        let done = Enrolled {
            recovery_codes: vec![Zeroizing::new("abcd-efgh-ijkl-mnop".into())],
            upgraded: None,
        };
        assert!(!format!("{done:?}").contains("abcd"));
    }
}
