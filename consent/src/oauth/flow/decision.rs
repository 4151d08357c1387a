//! The customer's decision: every check first ([`plan`], which writes nothing), then the writes:
//! the request is decided, the grant created (or changed: Grant Management), the code issued and
//! the event recorded.
//!
//! On PostgreSQL a decision that creates a grant is written by one statement ([`DECIDE_SQL`]),
//! which is its own transaction (autocommit: no `BEGIN` or `COMMIT` to send); the request's
//! `pending` status guards it as it guards the transactional path, so of two decisions on one
//! request exactly one writes anything. A Grant Management change (it locks the grant it changes
//! and ends that grant's tokens) and every decision on SQLite are written in a transaction.

use chrono::NaiveDateTime;
use diesel::sql_types::{Nullable, Text, Timestamp};
use platform::storage::models::GrantRecord;

use super::consent::{Row, offered_accounts, sandbox_allowed, with_params};
use super::loaded::{Loaded, load};
use super::*;

/// A decision that passed its checks, with what it writes.
struct Plan {
    row: Row,
    grant_id: String,
    status: GrantStatus,
    granted: AccessRequest,
    /// The customer narrowed what the app asked for.
    narrowed: bool,
    /// The decision creates its grant (it names none to change).
    creates: bool,
    /// Grant Management: the grant to change (locked) and how, once approved.
    change: Option<(GrantRecord, GrantAction)>,
}

/// Records the customer's decision and returns where to send the browser.
pub fn decide(
    c: &mut AnyConnection,
    revoked: &mut platform::revocation::Revocations,
    svc: &OAuthService,
    id: &str,
    customer_id: &str,
    decision: &Decision,
    now: DateTime<Utc>,
) -> Result<String, ConsentError> {
    let at = Written {
        svc,
        id,
        customer_id,
        now,
    };
    if matches!(c, AnyConnection::Postgresql(_)) {
        // Checked without a transaction; `None`: a Grant Management change, which locks.
        if let Some(plan) = plan(c, id, customer_id, decision, now, false)? {
            return at.at_once(c, plan);
        }
    }
    write_tx_as(c, |c| {
        let plan = plan(c, id, customer_id, decision, now, true)?
            .ok_or_else(|| ConsentError::Unavailable(StorageError::Conflict("no plan".into())))?;
        at.in_transaction(c, revoked, plan)
    })
}

/// Every check of a decision; nothing is written. A Grant Management change locks its grant
/// (so `locking` must be in a transaction); without `locking` such a request gives `None`.
fn plan(
    c: &mut AnyConnection,
    id: &str,
    customer_id: &str,
    decision: &Decision,
    now: DateTime<Utc>,
    locking: bool,
) -> Result<Option<Plan>, ConsentError> {
    let Loaded {
        row,
        client,
        test_customer,
        mut alongside,
        ..
    } = load(c, id, customer_id, now, false)?;
    // A client suspended or deleted since the page was shown gets nothing (as on the page).
    // Suspension and deletion also end the client's pending requests, so a decision that reads
    // the client as active just before either commits finds its request gone.
    if row.customer_id.as_deref() != Some(customer_id) || !client.is_active() {
        return Err(ConsentError::NotPending);
    }
    let requested = AccessRequest::from_stored(&row.authorization_details)
        .map_err(|e| ConsentError::Invalid(e.description().into()))?;
    // Grant Management: `merge` and `replace` change the named grant instead of creating one.
    let target = match (
        row.grant_action.as_deref().map(GrantAction::parse),
        row.grant_id.clone(),
    ) {
        (None, _) => None,
        (Some(Some(action)), Some(id)) => Some((action, id)),
        _ => return Err(ConsentError::NotPending),
    };
    if target.is_some() && !locking {
        return Ok(None);
    }
    let grant_id = match &target {
        Some((_, id)) => id.clone(),
        None => random_id("g_"),
    };
    let mut change = None;
    let (status, granted, narrowed_request) = match decision {
        Decision::Deny => {
            // A change names a grant of this customer's even when refused: nobody may record a
            // decision against someone else's grant.
            if let Some((_, id)) = &target
                && live_grant(c, id, &row.client_id, Some(customer_id), now)?.is_err()
            {
                return Err(ConsentError::InvalidGrantId);
            }
            (GrantStatus::Rejected, requested, false)
        }
        Decision::Approve(choice) => {
            sandbox_allowed(&client, test_customer)?;
            let offered = offered_accounts(alongside.accounts(c, customer_id)?, &requested);
            let chosen = narrowed(&requested, &offered, choice, now)?;
            let narrowed_request = chosen != requested;
            let granted = match &target {
                None => chosen,
                Some((action, id)) => {
                    let grant = lock_live(c, id, &row.client_id, customer_id, now)?
                        .map_err(|_| ConsentError::InvalidGrantId)?;
                    let granted = planned(&grant, *action, chosen)?;
                    change = Some((grant, *action));
                    granted
                }
            };
            (GrantStatus::Authorized, granted, narrowed_request)
        }
    };
    Ok(Some(Plan {
        row,
        grant_id,
        status,
        granted,
        narrowed: narrowed_request,
        creates: target.is_none(),
        change,
    }))
}

/// Where and when a decision is written.
struct Written<'a> {
    svc: &'a OAuthService,
    id: &'a str,
    customer_id: &'a str,
    now: DateTime<Utc>,
}

/// What a planned decision writes besides the request's status: the grant's row (when it
/// creates one), the code (when approved) and the event, with where the browser goes.
struct Rows {
    now_naive: NaiveDateTime,
    code: Option<PlainToken>,
    code_expires: NaiveDateTime,
    event: NewEvent,
    location: String,
}

impl Written<'_> {
    fn rows(&self, plan: &Plan) -> Rows {
        let approved = plan.status == GrantStatus::Authorized;
        let code = approved.then(|| PlainToken::generate("ac_"));
        let actor = Actor::customer(self.customer_id);
        let target = Target::new("grant", plan.grant_id.clone());
        let client_id = &plan.row.client_id;
        let event = if approved {
            NewEvent::new(actor, "consent.approved", target).details(serde_json::json!({
                "client_id": client_id,
                "narrowed": plan.narrowed,
                "authorization_details": serde_json::from_str::<serde_json::Value>(
                    &plan.granted.to_json()
                ).unwrap_or_default(),
            }))
        } else {
            NewEvent::new(actor, "consent.denied", target)
                .details(serde_json::json!({ "client_id": client_id }))
        };
        let mut params = match &code {
            Some(code) => vec![("code", code.expose())],
            None => vec![
                ("error", "access_denied"),
                ("error_description", "the customer denied the request"),
            ],
        };
        if let Some(s) = plan.row.state.as_deref() {
            params.push(("state", s));
        }
        params.push(("iss", self.svc.issuer.as_str()));
        let location = with_params(&plan.row.redirect_uri, &params);
        let code_ttl = self.svc.platform.settings.tokens.code_ttl.as_chrono();
        Rows {
            now_naive: self.now.naive_utc().trunc_subsecs(0),
            code,
            code_expires: (self.now + code_ttl).naive_utc(),
            event,
            location,
        }
    }

    /// The writes, one by one, in the caller's transaction.
    fn in_transaction(
        &self,
        c: &mut AnyConnection,
        revoked: &mut platform::revocation::Revocations,
        plan: Plan,
    ) -> Result<String, ConsentError> {
        let rows = self.rows(&plan);
        let updated = diesel::update(
            authorization_requests::table
                .filter(authorization_requests::id.eq(self.id))
                .filter(
                    authorization_requests::status.eq(AuthorizationRequestStatus::Pending.as_str()),
                ),
        )
        .set((
            authorization_requests::status.eq(request_status(plan.status)),
            authorization_requests::grant_id.eq(&plan.grant_id),
        ))
        .execute(c)?;
        if updated != 1 {
            return Err(ConsentError::NotPending);
        }
        let row = &plan.row;
        if let Some((grant, action)) = &plan.change {
            apply(
                c,
                revoked,
                grant,
                *action,
                &plan.granted,
                self.customer_id,
                self.now,
            )?;
        }
        if plan.creates {
            diesel::insert_into(grant_rows::table)
                .values((
                    grant_rows::id.eq(&plan.grant_id),
                    grant_rows::customer_id.eq(self.customer_id),
                    grant_rows::client_id.eq(&row.client_id),
                    grant_rows::status.eq(plan.status.as_str()),
                    grant_rows::authorization_details.eq(plan.granted.to_json()),
                    grant_rows::created_at.eq(rows.now_naive),
                    grant_rows::authorized_at.eq(authorized_at(&plan, rows.now_naive)),
                    grant_rows::expires_at.eq(plan.granted.expires_at.naive_utc()),
                    grant_rows::updated_at.eq(rows.now_naive),
                ))
                .execute(c)?;
        }
        if let Some(code) = &rows.code {
            diesel::insert_into(authorization_codes::table)
                .values((
                    authorization_codes::code_hash.eq(code.hash().as_str()),
                    authorization_codes::grant_id.eq(&plan.grant_id),
                    authorization_codes::client_id.eq(&row.client_id),
                    authorization_codes::redirect_uri.eq(&row.redirect_uri),
                    authorization_codes::code_challenge.eq(&row.code_challenge),
                    authorization_codes::dpop_jkt.eq(&row.dpop_jkt),
                    authorization_codes::created_at.eq(self.now.naive_utc()),
                    authorization_codes::expires_at.eq(rows.code_expires),
                ))
                .execute(c)?;
        }
        rows.event.record(c, self.now)?;
        Ok(rows.location)
    }

    /// The writes of a decision that creates a grant, in one statement ([`DECIDE_SQL`]).
    fn at_once(&self, c: &mut AnyConnection, plan: Plan) -> Result<String, ConsentError> {
        let rows = self.rows(&plan);
        let row = &plan.row;
        let event = rows.event.prepared(self.now);
        let code_hash = rows.code.as_ref().map(|c| c.hash().as_str().to_string());
        // The rows the statement's SELECT returns: 1 when the request was decided.
        let decided = diesel::sql_query(DECIDE_SQL)
            .bind::<Text, _>(self.id)
            .bind::<Text, _>(request_status(plan.status))
            .bind::<Text, _>(&plan.grant_id)
            .bind::<Text, _>(self.customer_id)
            .bind::<Text, _>(&row.client_id)
            .bind::<Text, _>(plan.status.as_str())
            .bind::<Text, _>(plan.granted.to_json())
            .bind::<Timestamp, _>(rows.now_naive)
            .bind::<Nullable<Timestamp>, _>(authorized_at(&plan, rows.now_naive))
            .bind::<Timestamp, _>(plan.granted.expires_at.naive_utc())
            .bind::<Nullable<Text>, _>(code_hash)
            .bind::<Text, _>(&row.redirect_uri)
            .bind::<Text, _>(&row.code_challenge)
            .bind::<Nullable<Text>, _>(&row.dpop_jkt)
            .bind::<Timestamp, _>(self.now.naive_utc())
            .bind::<Timestamp, _>(rows.code_expires)
            .bind::<Text, _>(&event.event_id)
            .bind::<Timestamp, _>(event.occurred_at)
            .bind::<Text, _>(event.actor_type)
            .bind::<Text, _>(&event.actor_id)
            .bind::<Text, _>(event.action)
            .bind::<Text, _>(event.target_type)
            .bind::<Text, _>(&event.target_id)
            .bind::<Text, _>(&event.details)
            .execute(c)
            .map_err(StorageError::from)?;
        if decided != 1 {
            return Err(ConsentError::NotPending);
        }
        platform::audit::recorded(1);
        Ok(rows.location)
    }
}

fn request_status(status: GrantStatus) -> &'static str {
    match status {
        GrantStatus::Authorized => AuthorizationRequestStatus::Approved.as_str(),
        _ => AuthorizationRequestStatus::Denied.as_str(),
    }
}

fn authorized_at(plan: &Plan, now: NaiveDateTime) -> Option<NaiveDateTime> {
    (plan.status == GrantStatus::Authorized).then_some(now)
}

/// A decision that creates a grant, in one statement: the request is decided only while pending
/// (`$1`), and only then are the grant, the code (when `$11`, its hash, is given) and the event
/// written. Returns the request's id when it was decided, nothing otherwise.
const DECIDE_SQL: &str = "\
WITH req AS ( \
    UPDATE authorization_requests SET status = $2, grant_id = $3 \
    WHERE id = $1 AND status = 'pending' \
    RETURNING id \
), new_grant AS ( \
    INSERT INTO grants (id, customer_id, client_id, status, authorization_details, created_at, \
                        authorized_at, expires_at, updated_at) \
    SELECT $3, $4, $5, $6, $7, $8, $9, $10, $8 FROM req \
), code AS ( \
    INSERT INTO authorization_codes (code_hash, grant_id, client_id, redirect_uri, \
                                     code_challenge, dpop_jkt, created_at, expires_at) \
    SELECT $11, $3, $5, $12, $13, $14, $15, $16 FROM req WHERE $11::text IS NOT NULL \
), event AS ( \
    INSERT INTO audit_events (event_id, occurred_at, actor_type, actor_id, action, target_type, \
                              target_id, details) \
    SELECT $17, $18, $19, $20, $21, $22, $23, $24 FROM req \
) \
SELECT id FROM req";
