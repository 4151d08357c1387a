//! Developer and staff accounts: sign-up, login (sessions for pages, bearer tokens for the JSON
//! API, both rows of the `sessions` table, stored hashed), staff creation for `consent admin
//! create`.

use platform::storage::models::StaffStatus;
use std::time::Duration as StdDuration;

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use platform::Platform;
use platform::audit::{Actor, NewEvent, Target};
use platform::crypto::{PlainToken, hash_password, random_id, verify_password};
use platform::ratelimit::{LoginAttempt, LoginLimits};
use platform::session::{self, SecondFactorDue, Session, SessionKind};
use platform::storage::models::{Developer, Staff};
use platform::storage::schema::{developers, staff};
use platform::storage::{AnyConnection, StorageError};
use zeroize::Zeroizing;

use crate::approvals::StaffRole;
use crate::domain::{self, Email, Errors, NewPassword};
use crate::error::{PortalError, PortalResult, limited, read, transaction, write};
use crate::second_factor;

/// Sign-ups allowed per client address per [`SIGNUP_WINDOW`].
pub const SIGNUP_LIMIT_PER_ADDRESS: u64 = 30;
pub const SIGNUP_WINDOW: StdDuration = StdDuration::from_secs(3600);

/// A developer account as shown to its owner.
#[derive(Debug, Clone)]
pub struct DeveloperAccount {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
}

impl From<Developer> for DeveloperAccount {
    fn from(d: Developer) -> Self {
        Self {
            id: d.id,
            email: d.email,
            display_name: d.display_name,
            created_at: d.created_at.and_utc(),
        }
    }
}

/// A staff account (never its password hash).
#[derive(Debug, Clone)]
pub struct StaffAccount {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

impl From<Staff> for StaffAccount {
    fn from(s: Staff) -> Self {
        Self {
            id: s.id,
            username: s.username,
            display_name: s.display_name,
            status: s.status,
            created_at: s.created_at.and_utc(),
        }
    }
}

/// A validated sign-up.
#[derive(Debug)]
pub struct SignUp {
    pub email: Email,
    pub password: NewPassword,
    pub display_name: String,
}

impl SignUp {
    pub fn parse(email: &str, password: &str, display_name: &str) -> PortalResult<Self> {
        let mut e = Errors::default();
        let email = e.check("email", Email::parse(email));
        let password = e.check("password", NewPassword::parse(password));
        let display_name = e.check("display_name", domain::text(display_name, 100));
        e.into_result()?;
        match (email, password, display_name) {
            (Some(email), Some(password), Some(display_name)) => Ok(Self {
                email,
                password,
                display_name,
            }),
            _ => Err(PortalError::field("request", "invalid sign-up")),
        }
    }
}

fn ts(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc().trunc_subsecs(0)
}

/// Inserts a developer (the password already hashed). A taken email is a clean conflict.
pub fn insert_developer(
    conn: &mut AnyConnection,
    email: &Email,
    display_name: &str,
    password_hash: &str,
    now: DateTime<Utc>,
) -> PortalResult<DeveloperAccount> {
    let taken: i64 = developers::table
        .filter(developers::email.eq(email.as_str()))
        .count()
        .get_result(conn)?;
    if taken > 0 {
        return Err(PortalError::Conflict(
            "an account with this email already exists".into(),
        ));
    }
    let row = Developer {
        id: random_id("dev_"),
        email: email.as_str().to_string(),
        display_name: display_name.to_string(),
        password_hash: password_hash.to_string(),
        created_at: ts(now),
    };
    diesel::insert_into(developers::table)
        .values(&row)
        .execute(conn)
        .map_err(|e| match StorageError::from(e) {
            // A concurrent sign-up with the same email lost the race.
            StorageError::Conflict(_) => {
                PortalError::Conflict("an account with this email already exists".into())
            }
            other => other.into(),
        })?;
    NewEvent::new(
        Actor::developer(&row.id),
        "developer.signed_up",
        Target::new("developer", &row.id),
    )
    .record(conn, now)?;
    Ok(row.into())
}

/// Signs a developer up: validates, rate-limits by client address, hashes the password off the
/// async executor, inserts.
pub async fn sign_up(
    platform: &Platform,
    input: SignUp,
    client_addr: &str,
) -> PortalResult<DeveloperAccount> {
    limited(
        platform
            .rate_limiter
            .check(
                &format!(
                    "portal-signup:{}",
                    platform::web::throttle_unit(client_addr)
                ),
                SIGNUP_LIMIT_PER_ADDRESS,
                SIGNUP_WINDOW,
            )
            .await,
    )?;
    let SignUp {
        email,
        password,
        display_name,
    } = input;
    let hash = platform
        .passwords
        .run(move || hash_password(password.expose()))
        .await
        .map_err(|e| StorageError::Unavailable(e.to_string()))??;
    let now = platform.now();
    write(platform, move |c| {
        insert_developer(c, &email, &display_name, &hash, now)
    })
    .await
}

/// A freshly created session: the token (for a cookie or a bearer header; shown once, stored
/// hashed) and the session.
#[derive(Debug)]
pub struct LoggedIn {
    pub token: PlainToken,
    pub session: Session,
    /// What the session still owes ([`crate::second_factor`]); `None`: a full session.
    pub due: Option<SecondFactorDue>,
}

/// Logs a developer (`kind` Developer, by email) or staff member (`kind` Staff, by username) in.
/// Throttled per account and per client address; unknown accounts and wrong passwords take the
/// same time and give the same error.
pub async fn login(
    platform: &Platform,
    kind: SessionKind,
    name: &str,
    password: &str,
    client_addr: &str,
) -> PortalResult<LoggedIn> {
    let (field, normalized) = match kind {
        SessionKind::Developer => ("email", Email::parse(name).map(|e| e.as_str().to_string())),
        SessionKind::Staff => ("username", domain::staff_username(name)),
        SessionKind::Customer => {
            return Err(PortalError::Forbidden("customers log in elsewhere".into()));
        }
    };
    let mut e = Errors::default();
    let normalized = e.check(field, normalized);
    if password.is_empty() {
        e.push("password", "must not be empty");
    } else if password.chars().count() > domain::PASSWORD_MAX {
        e.push("password", "is too long");
    }
    e.into_result()?;
    let normalized = normalized.unwrap_or_default();
    // Failures per account and address, per address and per account: see LoginLimits (an
    // attacker elsewhere cannot lock the owner out).
    let rl = &platform.rate_limiter;
    let limits = LoginLimits::DEFAULT;
    let attempt = LoginAttempt::new(kind.as_str(), &normalized, client_addr);
    // Counted before the password is checked (guesses sent at once see each other), taken
    // back below when it is right.
    let ticket = rl
        .login_begin(&limits, &attempt)
        .await
        .map_err(|refused| PortalError::RateLimited(refused.retry_after_secs))?;
    let lookup = normalized.clone();
    let found: PortalResult<Option<(String, String)>> = read(platform, move |c| {
        Ok(match kind {
            SessionKind::Developer => developers::table
                .filter(developers::email.eq(&lookup))
                .select((developers::id, developers::password_hash))
                .first(c)
                .optional()?,
            _ => staff::table
                .filter(staff::username.eq(&lookup))
                .filter(staff::status.eq(StaffStatus::Active.as_str()))
                .select((staff::id, staff::password_hash))
                .first(c)
                .optional()?,
        })
    })
    .await;
    let found = match found {
        Ok(found) => found,
        Err(e) => {
            rl.login_unchecked(ticket).await;
            return Err(e);
        }
    };
    let stored = found.as_ref().map(|(_, h)| h.clone());
    let presented = password.to_string();
    let ok = platform
        .passwords
        .run(move || verify_password(&presented, stored.as_deref()))
        .await;
    let ok = match ok {
        Ok(ok) => ok,
        Err(e) => {
            rl.login_unchecked(ticket).await;
            return Err(StorageError::Unavailable(e.to_string()).into());
        }
    };
    let Some((subject_id, _)) = found.filter(|_| ok) else {
        tracing::info!(kind = kind.as_str(), "portal login failed");
        ticket.failed();
        return Err(PortalError::InvalidCredentials);
    };
    rl.login_succeeded(ticket).await;
    let now = platform.now();
    let address = client_addr.to_string();
    write(platform, move |c| {
        // The password alone opens a full session only for a developer without an
        // authenticator; otherwise a session that owes the second factor.
        let due = second_factor::due_after_password(c, kind, &subject_id)?;
        let (token, session) = match due {
            Some(due) => session::create_owing(c, kind, &subject_id, due, now)?,
            None => session::create(c, kind, &subject_id, now)?,
        };
        let actor = match kind {
            SessionKind::Staff => Actor::staff(&subject_id),
            _ => Actor::developer(&subject_id),
        };
        NewEvent::new(
            actor,
            match kind {
                SessionKind::Staff => "staff.logged_in",
                _ => "developer.logged_in",
            },
            Target::new(kind.as_str(), &subject_id),
        )
        // Where a login came from is what a security review of the account asks first.
        .details(serde_json::json!({
            "client_address": address,
            "second_factor_due": due.map(SecondFactorDue::as_str),
        }))
        .record(c, now)?;
        Ok(LoggedIn {
            token,
            session,
            due,
        })
    })
    .await
}

/// Opens a page session of `kind` for `subject` (after sign-up); returns its token, once.
pub async fn start_session(
    platform: &Platform,
    kind: SessionKind,
    subject: String,
) -> PortalResult<PlainToken> {
    let now = platform.now();
    write(platform, move |c| {
        Ok(session::create(c, kind, &subject, now)?.0)
    })
    .await
}

/// Ends a session (logout).
pub fn logout(conn: &mut AnyConnection, s: &Session, now: DateTime<Utc>) -> PortalResult<()> {
    session::delete(conn, s)?;
    let actor = match s.kind {
        SessionKind::Staff => Actor::staff(&s.subject_id),
        _ => Actor::developer(&s.subject_id),
    };
    NewEvent::new(
        actor,
        "session.ended",
        Target::new(s.kind.as_str(), &s.subject_id),
    )
    .record(conn, now)?;
    Ok(())
}

pub fn developer(conn: &mut AnyConnection, id: &str) -> PortalResult<DeveloperAccount> {
    developers::table
        .filter(developers::id.eq(id))
        .select(Developer::as_select())
        .first(conn)
        .optional()?
        .map(Into::into)
        .ok_or(PortalError::NotFound("developer"))
}

pub fn staff_member(conn: &mut AnyConnection, id: &str) -> PortalResult<StaffAccount> {
    staff::table
        .filter(staff::id.eq(id))
        .select(Staff::as_select())
        .first(conn)
        .optional()?
        .map(Into::into)
        .ok_or(PortalError::NotFound("staff member"))
}

/// The staff member with `username` (normalized), whatever their status.
pub fn staff_by_username(conn: &mut AnyConnection, username: &str) -> PortalResult<StaffAccount> {
    let id: Option<String> = staff::table
        .filter(staff::username.eq(username))
        .select(staff::id)
        .first(conn)
        .optional()?;
    staff_member(conn, &id.ok_or(PortalError::NotFound("staff member"))?)
}

/// Inserts a staff member (password already hashed).
pub fn insert_staff(
    conn: &mut AnyConnection,
    username: &str,
    display_name: &str,
    password_hash: &str,
    roles: &[StaffRole],
    now: DateTime<Utc>,
) -> PortalResult<StaffAccount> {
    if roles.is_empty() {
        return Err(PortalError::field("roles", "at least one role"));
    }
    let username =
        domain::staff_username(username).map_err(|m| PortalError::field("username", m))?;
    let display_name =
        domain::text(display_name, 100).map_err(|m| PortalError::field("display_name", m))?;
    let taken: i64 = staff::table
        .filter(staff::username.eq(&username))
        .count()
        .get_result(conn)?;
    if taken > 0 {
        return Err(PortalError::Conflict(format!(
            "a staff member named {username:?} already exists"
        )));
    }
    let row = Staff {
        id: random_id("staff_"),
        username,
        display_name,
        password_hash: password_hash.to_string(),
        status: "active".into(),
        created_at: ts(now),
        roles: StaffRole::list(roles),
    };
    diesel::insert_into(staff::table)
        .values(&row)
        .execute(conn)?;
    NewEvent::new(
        Actor::system("cli"),
        "staff.created",
        Target::new("staff", &row.id),
    )
    .details(serde_json::json!({ "username": row.username, "roles": StaffRole::list(roles) }))
    .record(conn, now)?;
    Ok(row.into())
}

/// `consent admin create`: creates an active staff member with `roles`, and the one-time
/// enrolment code their first login needs to set up an authenticator (to hand over with the
/// password). Blocking (for the CLI).
pub fn create_staff_user(
    platform: &Platform,
    username: &str,
    display_name: &str,
    password: &str,
    roles: &[StaffRole],
) -> PortalResult<(StaffAccount, Zeroizing<String>)> {
    let password = NewPassword::parse(password).map_err(|m| PortalError::field("password", m))?;
    let hash = hash_password(password.expose())?;
    let now = platform.now();
    platform.db.run_blocking(|c| {
        Ok(transaction(c, |c| {
            let staff = insert_staff(c, username, display_name, &hash, roles, now)?;
            let code = second_factor::issue_enrolment_code(
                c,
                Actor::system("cli"),
                SessionKind::Staff,
                &staff.id,
                now,
            )?;
            Ok((staff, code))
        }))
    })?
}

/// `consent admin set-staff-roles`: replaces a staff member's roles (audited). Blocking.
pub fn set_staff_roles(
    platform: &Platform,
    username: &str,
    roles: &[StaffRole],
) -> PortalResult<()> {
    if roles.is_empty() {
        return Err(PortalError::field("roles", "at least one role"));
    }
    let now = platform.now();
    let list = StaffRole::list(roles);
    platform.db.run_blocking(|c| {
        Ok(transaction(c, |c| {
            let id: Option<String> = staff::table
                .filter(staff::username.eq(username))
                .select(staff::id)
                .first(c)
                .optional()?;
            let Some(id) = id else {
                return Err(PortalError::NotFound("staff member"));
            };
            diesel::update(staff::table.filter(staff::id.eq(&id)))
                .set(staff::roles.eq(&list))
                .execute(c)?;
            NewEvent::new(
                Actor::system("cli"),
                "staff.roles_changed",
                Target::new("staff", &id),
            )
            .details(serde_json::json!({ "roles": list }))
            .record(c, now)?;
            Ok(())
        }))
    })?
}
