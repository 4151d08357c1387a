//! Browser sessions and CSRF tokens for customers, developers and staff.
//!
//! A session cookie carries a random [`PlainToken`]; the database stores only its SHA-256, the
//! subject, an expiry and the session's CSRF token (synchronizer-token pattern: every state-
//! changing form carries it and [`Session::check_csrf`] compares in constant time). Each kind of
//! user has its own cookie, so a developer session can never act as staff.
//!
//! Forms shown before login use a double-submit token instead ([`LoginCsrf`]).

use chrono::{DateTime, Duration, SubsecRound, Utc};
use diesel::prelude::*;

use crate::audit::NewEvent;
use crate::crypto::{PlainToken, constant_time_eq, random_id};
use crate::storage::models::StaffStatus;
use crate::storage::schema::{sessions, staff};
use crate::storage::{AnyConnection, StorageResult, write_tx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Customer,
    Developer,
    Staff,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Customer => "customer",
            SessionKind::Developer => "developer",
            SessionKind::Staff => "staff",
        }
    }

    /// Cookie name of this kind of session. Secure cookies carry the `__Host-` prefix: browsers
    /// then accept them only with `Secure`, `Path=/` and no `Domain`, so neither a sibling
    /// subdomain nor a plain-http page can plant or overwrite one (session fixation). Browsers
    /// refuse the prefix on non-Secure cookies, so the development setting drops both.
    pub fn cookie_name(self, secure: bool) -> &'static str {
        match (self, secure) {
            (SessionKind::Customer, true) => "__Host-consent_customer",
            (SessionKind::Developer, true) => "__Host-consent_developer",
            (SessionKind::Staff, true) => "__Host-consent_staff",
            (SessionKind::Customer, false) => "consent_customer",
            (SessionKind::Developer, false) => "consent_developer",
            (SessionKind::Staff, false) => "consent_staff",
        }
    }

    /// Idle-independent absolute lifetime: short for staff, longer for others.
    pub fn lifetime(self) -> Duration {
        match self {
            SessionKind::Customer => Duration::hours(1),
            SessionKind::Developer => Duration::hours(8),
            SessionKind::Staff => Duration::hours(4),
        }
    }
}

/// What a session that has passed the password still owes: until it is paid, the session can
/// do nothing but pay it (every extractor but the second-factor ones refuses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactorDue {
    /// The account has an authenticator: a code (or a recovery code) is due.
    Verify,
    /// A staff member without an authenticator: enrolment is due.
    Enrol,
}

impl SecondFactorDue {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Enrol => "enrol",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "verify" => Some(Self::Verify),
            "enrol" => Some(Self::Enrol),
            _ => None,
        }
    }

    /// How long a half-logged-in session lasts.
    pub fn lifetime(self) -> Duration {
        Duration::minutes(10)
    }
}

/// A live session.
#[derive(Clone)]
pub struct Session {
    pub kind: SessionKind,
    pub subject_id: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
    id_hash: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("kind", &self.kind)
            .field("subject_id", &self.subject_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// What tells this session from any other of its account (the hash its token is stored
    /// under; not the token): for state that belongs to one session.
    pub fn binding(&self) -> &str {
        &self.id_hash
    }

    /// Constant-time check of a submitted CSRF token.
    pub fn check_csrf(&self, submitted: &str) -> bool {
        constant_time_eq(self.csrf_token.as_bytes(), submitted.as_bytes())
    }
}

/// Creates a session; returns the cookie value (shown once, stored hashed) and the session.
pub fn create(
    conn: &mut AnyConnection,
    kind: SessionKind,
    subject_id: &str,
    now: DateTime<Utc>,
) -> StorageResult<(PlainToken, Session)> {
    insert(conn, kind, subject_id, None, now)
}

/// Creates a session that owes its second factor (`due`): it lasts minutes and can do nothing
/// but pay what it owes ([`load_owing`]); paying it opens a full session under a new token.
pub fn create_owing(
    conn: &mut AnyConnection,
    kind: SessionKind,
    subject_id: &str,
    due: SecondFactorDue,
    now: DateTime<Utc>,
) -> StorageResult<(PlainToken, Session)> {
    insert(conn, kind, subject_id, Some(due), now)
}

/// A new session's token and row (not yet written).
fn fresh(
    kind: SessionKind,
    subject_id: &str,
    due: Option<SecondFactorDue>,
    now: DateTime<Utc>,
) -> (PlainToken, Session) {
    let token = PlainToken::generate("sess_");
    let id_hash = token.hash().into_string();
    let lifetime = due.map_or(kind.lifetime(), SecondFactorDue::lifetime);
    let session = Session {
        kind,
        subject_id: subject_id.to_string(),
        csrf_token: random_id("csrf_"),
        expires_at: (now + lifetime).trunc_subsecs(0),
        id_hash,
    };
    (token, session)
}

fn insert(
    conn: &mut AnyConnection,
    kind: SessionKind,
    subject_id: &str,
    due: Option<SecondFactorDue>,
    now: DateTime<Utc>,
) -> StorageResult<(PlainToken, Session)> {
    let (token, session) = fresh(kind, subject_id, due, now);
    diesel::insert_into(sessions::table)
        .values((
            sessions::id_hash.eq(&session.id_hash),
            sessions::subject_type.eq(kind.as_str()),
            sessions::subject_id.eq(subject_id),
            sessions::csrf_token.eq(&session.csrf_token),
            sessions::created_at.eq(now.naive_utc()),
            sessions::expires_at.eq(session.expires_at.naive_utc()),
            sessions::second_factor.eq(due.map(SecondFactorDue::as_str)),
        ))
        .execute(conn)?;
    Ok((token, session))
}

/// [`create`] and the audit event that records it (a login), written together: on PostgreSQL
/// in one statement ([`CREATE_RECORDED_SQL`], its own transaction: nothing else to send), on
/// SQLite in a transaction of the two inserts. Call it outside a transaction.
pub fn create_recorded(
    conn: &mut AnyConnection,
    kind: SessionKind,
    subject_id: &str,
    event: &NewEvent,
    now: DateTime<Utc>,
) -> StorageResult<(PlainToken, Session)> {
    if !matches!(conn, AnyConnection::Postgresql(_)) {
        return write_tx(conn, |c| {
            let created = create(c, kind, subject_id, now)?;
            event.record(c, now)?;
            Ok(created)
        });
    }
    use diesel::sql_types::{Text, Timestamp};
    let (token, session) = fresh(kind, subject_id, None, now);
    let e = event.prepared(now);
    diesel::sql_query(CREATE_RECORDED_SQL)
        .bind::<Text, _>(&session.id_hash)
        .bind::<Text, _>(kind.as_str())
        .bind::<Text, _>(subject_id)
        .bind::<Text, _>(&session.csrf_token)
        .bind::<Timestamp, _>(now.naive_utc())
        .bind::<Timestamp, _>(session.expires_at.naive_utc())
        .bind::<Text, _>(&e.event_id)
        .bind::<Timestamp, _>(e.occurred_at)
        .bind::<Text, _>(e.actor_type)
        .bind::<Text, _>(&e.actor_id)
        .bind::<Text, _>(e.action)
        .bind::<Text, _>(e.target_type)
        .bind::<Text, _>(&e.target_id)
        .bind::<Text, _>(&e.details)
        .execute(conn)?;
    crate::audit::recorded(1);
    Ok((token, session))
}

/// A full session and its event in one statement (see [`create_recorded`]).
const CREATE_RECORDED_SQL: &str = "\
WITH s AS ( \
    INSERT INTO sessions (id_hash, subject_type, subject_id, csrf_token, created_at, expires_at) \
    VALUES ($1, $2, $3, $4, $5, $6) \
    RETURNING id_hash \
) \
INSERT INTO audit_events (event_id, occurred_at, actor_type, actor_id, action, target_type, \
                          target_id, details) \
SELECT $7, $8, $9, $10, $11, $12, $13, $14 FROM s";

/// Looks up a live, full session of `kind` by its cookie (or bearer) value; a staff session
/// only while the staff member is active. A session that still owes its second factor is not
/// one ([`load_owing`] reads those).
pub fn load(
    conn: &mut AnyConnection,
    kind: SessionKind,
    cookie_value: &str,
    now: DateTime<Utc>,
) -> StorageResult<Option<Session>> {
    Ok(match load_any(conn, kind, cookie_value, now)? {
        Some((s, None)) => Some(s),
        _ => None,
    })
}

/// Looks up a live session of `kind` that owes its second factor, and what it owes.
pub fn load_owing(
    conn: &mut AnyConnection,
    kind: SessionKind,
    cookie_value: &str,
    now: DateTime<Utc>,
) -> StorageResult<Option<(Session, SecondFactorDue)>> {
    Ok(match load_any(conn, kind, cookie_value, now)? {
        Some((s, Some(due))) => Some((s, due)),
        _ => None,
    })
}

fn load_any(
    conn: &mut AnyConnection,
    kind: SessionKind,
    cookie_value: &str,
    now: DateTime<Utc>,
) -> StorageResult<Option<(Session, Option<SecondFactorDue>)>> {
    if cookie_value.is_empty() || cookie_value.len() > 200 {
        return Ok(None);
    }
    let id_hash = PlainToken::from_presented(cookie_value)
        .hash()
        .into_string();
    type Row = (String, String, chrono::NaiveDateTime, Option<String>);
    let row: Option<Row> = sessions::table
        .filter(sessions::id_hash.eq(&id_hash))
        .filter(sessions::subject_type.eq(kind.as_str()))
        .filter(sessions::expires_at.gt(now.naive_utc()))
        .select((
            sessions::subject_id,
            sessions::csrf_token,
            sessions::expires_at,
            sessions::second_factor,
        ))
        .first(conn)
        .optional()?;
    let Some((subject_id, csrf_token, expires_at, due)) = row else {
        return Ok(None);
    };
    // An unknown value owes something this build cannot take: refused both ways.
    let due = match due.as_deref().map(SecondFactorDue::parse) {
        None => None,
        Some(Some(d)) => Some(d),
        Some(None) => return Ok(None),
    };
    // A staff session lasts only while its staff member is active (suspension ends it at once).
    if kind == SessionKind::Staff && !staff_active(conn, &subject_id)? {
        return Ok(None);
    }
    Ok(Some((
        Session {
            kind,
            subject_id,
            csrf_token,
            expires_at: expires_at.and_utc(),
            id_hash,
        },
        due,
    )))
}

/// Whether a staff member exists and is active.
pub fn staff_active(conn: &mut AnyConnection, staff_id: &str) -> StorageResult<bool> {
    Ok(staff::table
        .filter(staff::id.eq(staff_id))
        .filter(staff::status.eq(StaffStatus::Active.as_str()))
        .count()
        .get_result::<i64>(conn)?
        == 1)
}

/// Ends a session (logout).
pub fn delete(conn: &mut AnyConnection, session: &Session) -> StorageResult<()> {
    diesel::delete(sessions::table.filter(sessions::id_hash.eq(&session.id_hash))).execute(conn)?;
    Ok(())
}

/// Ends every session of a subject (password change, account suspension).
pub fn delete_all_for(
    conn: &mut AnyConnection,
    kind: SessionKind,
    subject_id: &str,
) -> StorageResult<usize> {
    Ok(diesel::delete(
        sessions::table
            .filter(sessions::subject_type.eq(kind.as_str()))
            .filter(sessions::subject_id.eq(subject_id)),
    )
    .execute(conn)?)
}

/// Ends every other full session of `session`'s subject (a second factor was just set up:
/// sessions opened with the password alone, perhaps by whoever else knew it, must log in
/// again). Sessions that still owe a second factor stay: they now owe the new one.
pub fn delete_other_full(conn: &mut AnyConnection, session: &Session) -> StorageResult<usize> {
    Ok(diesel::delete(
        sessions::table
            .filter(sessions::subject_type.eq(session.kind.as_str()))
            .filter(sessions::subject_id.eq(&session.subject_id))
            .filter(sessions::id_hash.ne(&session.id_hash))
            .filter(sessions::second_factor.is_null()),
    )
    .execute(conn)?)
}

/// Removes expired sessions (called by the periodic sweep).
pub fn purge_expired(conn: &mut AnyConnection, now: DateTime<Utc>) -> StorageResult<usize> {
    Ok(
        diesel::delete(sessions::table.filter(sessions::expires_at.le(now.naive_utc())))
            .execute(conn)?,
    )
}

/// Double-submit CSRF token for forms shown before login: a random value in a cookie
/// ([`LoginCsrf::cookie_name`]) that the form must echo.
#[derive(Debug)]
pub struct LoginCsrf;

impl LoginCsrf {
    /// The cookie's name (`__Host-` prefixed when Secure, as for sessions).
    pub fn cookie_name(secure: bool) -> &'static str {
        if secure {
            "__Host-consent_csrf"
        } else {
            "consent_csrf"
        }
    }

    pub fn generate() -> String {
        random_id("lcsrf_")
    }

    pub fn check(cookie: Option<&str>, submitted: &str) -> bool {
        match cookie {
            Some(c) if c.len() >= 16 => constant_time_eq(c.as_bytes(), submitted.as_bytes()),
            _ => false,
        }
    }
}
