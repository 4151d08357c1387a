//! Reading a customer's grants into views (always scoped to the customer).

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use diesel::prelude::*;
use platform::crypto::MasterKey;
use platform::storage::models::{GrantRecord, GrantStatus};
use platform::storage::schema::{
    accounts, audit_events, clients, customers, grant_rows, merchants,
};
use platform::storage::{AnyConnection, StorageResult};

use super::text::notice;
use crate::lifecycle::policy;
use crate::oauth::rar::AccountAccessDetail;

use super::*;

pub(super) fn is_live(status: &str) -> bool {
    GrantStatus::parse(status).is_some_and(GrantStatus::is_live)
}

/// The grants of `customer_id`, newest first, live ones (`active`) and ended ones: every one, or
/// only the grant `only` (none when it does not exist or belongs to someone else).
pub fn grant_views(
    conn: &mut AnyConnection,
    master_key: &MasterKey,
    customer_id: &str,
    only: Option<&str>,
    policy: &LifecyclePolicy,
    now: DateTime<Utc>,
) -> StorageResult<Vec<GrantView>> {
    let mut query = grant_rows::table
        .filter(grant_rows::customer_id.eq(customer_id))
        .order((grant_rows::created_at.desc(), grant_rows::id.desc()))
        .select(GrantRecord::as_select())
        .into_boxed();
    if let Some(id) = only {
        query = query.filter(grant_rows::id.eq(id));
    }
    let rows: Vec<GrantRecord> = query.load(conn)?;
    let mut ctx = Lookup::default();
    rows.into_iter()
        .map(|r| view(conn, master_key, customer_id, &mut ctx, r, policy, now))
        .collect()
}

/// The audit events whose target is this grant, newest first (at most [`ACTIVITY_LIMIT`]);
/// `None` when the grant is not the customer's.
pub fn activity(
    conn: &mut AnyConnection,
    customer_id: &str,
    grant_id: &str,
) -> StorageResult<Option<Vec<ActivityEvent>>> {
    Ok(activity_page(conn, customer_id, grant_id, None, ACTIVITY_LIMIT)?.map(|p| p.events))
}

/// One page of a grant's history, newest first.
#[derive(Debug, Clone)]
pub struct ActivityPage {
    pub events: Vec<ActivityEvent>,
    /// The cursor of the next (older) page, when there is one.
    pub older: Option<i64>,
}

/// At most `limit` (1 to [`ACTIVITY_LIMIT`]) events of the grant older than the cursor `before`
/// (an audit sequence number, from [`ActivityPage::older`]); `None` when the grant is not the
/// customer's. A cursor, not an offset: events recorded while the customer pages do not shift
/// what the next page shows.
pub fn activity_page(
    conn: &mut AnyConnection,
    customer_id: &str,
    grant_id: &str,
    before: Option<i64>,
    limit: i64,
) -> StorageResult<Option<ActivityPage>> {
    if !owns(conn, customer_id, grant_id)? {
        return Ok(None);
    }
    let limit = limit.clamp(1, ACTIVITY_LIMIT);
    let mut query = audit_events::table
        .filter(audit_events::target_type.eq("grant"))
        .filter(audit_events::target_id.eq(grant_id))
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(audit_events::seq.lt(before));
    }
    let mut rows: Vec<(i64, String, NaiveDateTime, String, String, String)> = query
        .order(audit_events::seq.desc())
        .limit(limit + 1)
        .select((
            audit_events::seq,
            audit_events::event_id,
            audit_events::occurred_at,
            audit_events::action,
            audit_events::actor_type,
            audit_events::details,
        ))
        .load(conn)?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let older = if more { rows.last().map(|r| r.0) } else { None };
    let events = rows
        .into_iter()
        .map(|(_, event_id, at, action, actor_type, details)| {
            let details: serde_json::Value =
                serde_json::from_str(&details).unwrap_or(serde_json::Value::Null);
            ActivityEvent {
                event_id,
                occurred_at: at.and_utc(),
                description: describe_event(&action, &details),
                action,
                actor_type,
            }
        })
        .collect();
    Ok(Some(ActivityPage { events, older }))
}

/// The app's latest read of the customer's data through a grant: when, and in plain language
/// what (from the audit log).
#[derive(Debug, Clone)]
pub struct LastRead {
    pub at: DateTime<Utc>,
    pub description: String,
}

/// The latest read recorded through grant `?`: its time and details. The kind of event is written
/// out, not bound, so that the database can use `audit_events_grant_reads_idx`, which holds only
/// these events (a test reads the plan on both backends); a grant's other events, millions over
/// its life, are not read.
pub const LAST_READ_SQL: &str = "SELECT occurred_at, details FROM audit_events \
     WHERE target_type = 'grant' AND action = 'resource.read' AND target_id = ? \
     ORDER BY occurred_at DESC, seq DESC LIMIT 1";

/// The latest read through each of `grant_ids` that has one (each id is checked to be the
/// customer's). One indexed query per grant ([`LAST_READ_SQL`]): a customer has few grants.
pub fn last_reads(
    conn: &mut AnyConnection,
    customer_id: &str,
    grant_ids: &[String],
) -> StorageResult<HashMap<String, LastRead>> {
    let mine: Vec<String> = grant_rows::table
        .filter(grant_rows::customer_id.eq(customer_id))
        .filter(grant_rows::id.eq_any(grant_ids))
        .select(grant_rows::id)
        .load(conn)?;
    #[derive(QueryableByName)]
    struct Read {
        #[diesel(sql_type = diesel::sql_types::Timestamp)]
        occurred_at: NaiveDateTime,
        #[diesel(sql_type = diesel::sql_types::Text)]
        details: String,
    }
    let mut out = HashMap::new();
    for id in mine {
        let row = diesel::sql_query(platform::storage::numbered(conn, LAST_READ_SQL))
            .bind::<diesel::sql_types::Text, _>(&id)
            .get_result::<Read>(conn)
            .optional()?;
        if let Some(Read {
            occurred_at: at,
            details,
        }) = row
        {
            let details: serde_json::Value =
                serde_json::from_str(&details).unwrap_or(serde_json::Value::Null);
            out.insert(
                id,
                LastRead {
                    at: at.and_utc(),
                    description: describe_event("resource.read", &details),
                },
            );
        }
    }
    Ok(out)
}

/// The id and password hash of the customer with this username, for the login page.
pub fn customer_login(
    conn: &mut AnyConnection,
    username: &str,
) -> StorageResult<Option<(String, String)>> {
    Ok(customers::table
        .filter(customers::username.eq(username))
        .select((customers::id, customers::password_hash))
        .first::<(String, String)>(conn)
        .optional()?)
}

/// The customer's username and display name; `None` for an unknown id.
pub fn customer_identity(
    conn: &mut AnyConnection,
    customer_id: &str,
) -> StorageResult<Option<(String, String)>> {
    let customer = customers::table.filter(customers::id.eq(customer_id));
    let names = customer.select((customers::username, customers::display_name));
    Ok(names.first(conn).optional()?)
}

pub(super) fn owns(
    conn: &mut AnyConnection,
    customer_id: &str,
    grant_id: &str,
) -> StorageResult<bool> {
    let n: i64 = grant_rows::table
        .filter(grant_rows::id.eq(grant_id))
        .filter(grant_rows::customer_id.eq(customer_id))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

/// Caches of names looked up while building several views.
#[derive(Debug, Default)]
struct Lookup {
    accounts: Option<HashMap<String, AccountView>>,
    merchants: HashMap<String, String>,
    clients: HashMap<String, Option<developer_portal::ClientDisplay>>,
    /// Each client's own dormancy period in days, if it has one, and when it was set.
    dormancy_days: HashMap<String, (Option<i32>, Option<NaiveDateTime>)>,
}

/// The dormancy period that applies to `client_id`'s grants: the bank's default, or the client's
/// own shorter one (`clients.dormancy_days`), as the lifecycle sweeper applies it.
fn effective_dormancy(
    conn: &mut AnyConnection,
    ctx: &mut Lookup,
    client_id: &str,
    default: Duration,
    lead: Duration,
) -> StorageResult<policy::DormancyClock> {
    let (days, since) = match ctx.dormancy_days.get(client_id) {
        Some(d) => *d,
        None => {
            let d: (Option<i32>, Option<NaiveDateTime>) = clients::table
                .filter(clients::id.eq(client_id))
                .select((clients::dormancy_days, clients::dormancy_since))
                .first(conn)
                .optional()?
                .unwrap_or_default();
            ctx.dormancy_days.insert(client_id.to_string(), d);
            d
        }
    };
    let period = policy::dormancy_period(days, default, lead);
    Ok(policy::DormancyClock {
        period,
        since: since.filter(|_| period < default).map(|s| s.and_utc()),
        default,
    })
}

fn view(
    conn: &mut AnyConnection,
    master_key: &MasterKey,
    customer_id: &str,
    ctx: &mut Lookup,
    r: GrantRecord,
    policy: &LifecyclePolicy,
    now: DateTime<Utc>,
) -> StorageResult<GrantView> {
    let details: Vec<AccountAccessDetail> =
        serde_json::from_str(&r.authorization_details).unwrap_or_default();
    if ctx.accounts.is_none() {
        let rows: Vec<(String, String, String, String)> = accounts::table
            .filter(accounts::customer_id.eq(customer_id))
            .select((
                accounts::id,
                accounts::name,
                accounts::masked_number,
                accounts::currency,
            ))
            .load(conn)?;
        ctx.accounts = Some(
            rows.into_iter()
                .map(|(id, name, masked_number, currency)| {
                    (
                        id.clone(),
                        AccountView {
                            id,
                            name,
                            masked_number,
                            currency,
                        },
                    )
                })
                .collect(),
        );
    }
    let known = ctx.accounts.as_ref();
    let mut actions = Vec::new();
    let mut account_views = Vec::new();
    let mut merchant_ids: Option<Vec<String>> = None;
    let (mut from, mut until) = (None, None);
    for d in &details {
        for a in &d.actions {
            if !actions.iter().any(|v: &ActionView| &v.action == a) {
                actions.push(ActionView {
                    action: a.clone(),
                    description: describe_action(a).into(),
                });
            }
        }
        for id in d.accounts.iter().flatten() {
            let v = known
                .and_then(|m| m.get(id))
                .cloned()
                .unwrap_or_else(|| AccountView {
                    id: id.clone(),
                    name: id.clone(),
                    masked_number: String::new(),
                    currency: String::new(),
                });
            account_views.push(v);
        }
        if let Some(m) = &d.merchants {
            merchant_ids.get_or_insert_with(Vec::new).extend(m.clone());
        }
        from = from.or(d.transactions_from.clone());
        until = until.or(d.transactions_until.clone());
    }
    let merchant_views = match merchant_ids {
        None => None,
        Some(ids) => {
            let missing: Vec<String> = ids
                .iter()
                .filter(|id| !ctx.merchants.contains_key(*id))
                .cloned()
                .collect();
            if !missing.is_empty() {
                let rows: Vec<(String, String)> = merchants::table
                    .filter(merchants::id.eq_any(&missing))
                    .select((merchants::id, merchants::name))
                    .load(conn)?;
                ctx.merchants.extend(rows);
            }
            Some(
                ids.into_iter()
                    .map(|id| MerchantView {
                        name: ctx
                            .merchants
                            .get(&id)
                            .cloned()
                            .unwrap_or_else(|| id.clone()),
                        id,
                    })
                    .collect(),
            )
        }
    };
    let client = match ctx.clients.get(&r.client_id) {
        Some(c) => c.clone(),
        None => {
            let c = developer_portal::client_display(conn, master_key, &r.client_id)?;
            ctx.clients.insert(r.client_id.clone(), c.clone());
            c
        }
    };
    let (client_name, environment, verified_legal_name) = match client {
        Some(c) => (c.name, c.environment, c.verified_legal_name),
        None => ("Deleted app".to_string(), "unknown".to_string(), None),
    };
    let operator_label = super::operator_label(&environment, verified_legal_name.as_deref());
    let expires_at = r.expires_at.and_utc();
    let status = if is_live(&r.status) && expires_at <= now {
        "expired".to_string()
    } else {
        r.status
    };
    let (dormancy_deadline, grant_notice) = if status == GrantStatus::Authorized.as_str() {
        let active_since = policy::active_since(r.last_used_at, r.authorized_at, r.created_at);
        let clock = effective_dormancy(
            conn,
            ctx,
            &r.client_id,
            policy.dormancy_period,
            policy.warning_lead_time,
        )?;
        let deadline = clock.deadline(active_since);
        (
            Some(deadline),
            notice(
                expires_at,
                deadline,
                active_since,
                policy.warning_lead_time,
                now,
            ),
        )
    } else {
        (None, None)
    };
    Ok(GrantView {
        grant_id: r.id,
        client_id: r.client_id,
        client_name,
        environment,
        verified: verified_legal_name.is_some(),
        verified_legal_name,
        operator_label,
        active: is_live(&status),
        status,
        revoked_by: r.revoked_by,
        created_at: r.created_at.and_utc(),
        authorized_at: r.authorized_at.map(|t| t.and_utc()),
        expires_at,
        last_used_at: r.last_used_at.map(|t| t.and_utc()),
        revoked_at: r.revoked_at.map(|t| t.and_utc()),
        actions,
        accounts: account_views,
        transactions_from: from,
        transactions_until: until,
        merchants: merchant_views,
        authorization_details: details,
        dormancy_deadline,
        notice: grant_notice,
    })
}
