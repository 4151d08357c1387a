//! The sandbox bank's data, read strictly within an effective scope computed by `grants`
//! verification: only the token subject's accounts, only the scope's accounts, window and
//! merchants. Plain Rust over storage.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, SubsecRound, Utc};
use diesel::backend::Backend;
use diesel::deserialize::FromStaticSqlRow;
use diesel::prelude::*;
use diesel::sql_types::Timestamp;
use platform::audit::{Actor, NewEvent, Target};
use platform::storage::schema::{accounts, grant_rows, merchants, transactions};
use platform::storage::{AnyConnection, StorageResult};
use serde::{Deserialize, Serialize};

/// An account as the sandbox API returns it.
#[derive(Debug, Clone, Serialize, Deserialize, Queryable, utoipa::ToSchema)]
#[schema(as = SandboxAccount)]
pub struct AccountView {
    pub id: String,
    pub name: String,
    pub masked_number: String,
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BalanceView {
    pub account_id: String,
    /// Minor units (cents).
    pub amount_minor: i64,
    pub currency: String,
}

// Read from a row of (id, booked_at, amount_minor, currency, merchant_id, merchant name,
// category, description).
#[derive(Debug, Clone, Serialize, Deserialize, Queryable, utoipa::ToSchema)]
pub struct TransactionView {
    pub id: String,
    #[diesel(deserialize_as = ApiTime)]
    pub booked_at: String,
    pub amount_minor: i64,
    pub currency: String,
    pub merchant_id: String,
    pub merchant_name: String,
    pub category: String,
    pub description: String,
}

/// A stored time as the API shows it: RFC 3339, whole seconds, `Z`.
#[doc(hidden)]
#[derive(Debug)]
pub struct ApiTime(String);

impl<DB> Queryable<Timestamp, DB> for ApiTime
where
    DB: Backend,
    NaiveDateTime: FromStaticSqlRow<Timestamp, DB>,
{
    type Row = NaiveDateTime;

    fn build(at: NaiveDateTime) -> diesel::deserialize::Result<Self> {
        Ok(Self(
            at.and_utc().to_rfc3339_opts(SecondsFormat::Secs, true),
        ))
    }
}

impl From<ApiTime> for String {
    fn from(t: ApiTime) -> String {
        t.0
    }
}

/// Every account of `customer_id`, in id order, as its owner may see it.
pub fn customer_accounts(
    c: &mut AnyConnection,
    customer_id: &str,
) -> StorageResult<Vec<AccountView>> {
    Ok(accounts::table
        .filter(accounts::customer_id.eq(customer_id))
        .order(accounts::id.asc())
        .select((
            accounts::id,
            accounts::name,
            accounts::masked_number,
            accounts::currency,
        ))
        .load(c)?)
}

/// Accounts of `subject` among `allowed`.
pub fn accounts_of(
    c: &mut AnyConnection,
    subject: &str,
    allowed: &[String],
) -> StorageResult<Vec<AccountView>> {
    let mut accounts = customer_accounts(c, subject)?;
    accounts.retain(|a| allowed.contains(&a.id));
    Ok(accounts)
}

pub fn balance(
    c: &mut AnyConnection,
    subject: &str,
    account: &str,
) -> StorageResult<Option<BalanceView>> {
    let row: Option<(i64, String)> = accounts::table
        .filter(accounts::customer_id.eq(subject))
        .filter(accounts::id.eq(account))
        .select((accounts::balance_minor, accounts::currency))
        .first(c)
        .optional()?;
    Ok(row.map(|(amount_minor, currency)| BalanceView {
        account_id: account.to_string(),
        amount_minor,
        currency,
    }))
}

/// Transactions of `subject`'s `account` within `[from, until]`, restricted to `merchants` when
/// given; newest first, at most `limit`. `None` when the account is not the subject's.
pub fn transactions_of(
    c: &mut AnyConnection,
    subject: &str,
    account: &str,
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    merchant_filter: Option<&[String]>,
    limit: i64,
) -> StorageResult<Option<Vec<TransactionView>>> {
    let owned: i64 = accounts::table
        .filter(accounts::customer_id.eq(subject))
        .filter(accounts::id.eq(account))
        .count()
        .get_result(c)?;
    if owned == 0 {
        return Ok(None);
    }
    let mut q = transactions::table
        .inner_join(merchants::table)
        .filter(transactions::account_id.eq(account))
        .into_boxed();
    if let Some(f) = from {
        q = q.filter(transactions::booked_at.ge(f.naive_utc()));
    }
    if let Some(u) = until {
        q = q.filter(transactions::booked_at.le(u.naive_utc()));
    }
    if let Some(m) = merchant_filter {
        q = q.filter(transactions::merchant_id.eq_any(m.to_vec()));
    }
    let rows = q
        .order(transactions::booked_at.desc())
        .limit(limit)
        .select((
            transactions::id,
            transactions::booked_at,
            transactions::amount_minor,
            transactions::currency,
            transactions::merchant_id,
            merchants::name,
            merchants::category,
            transactions::description,
        ))
        .load(c)?;
    Ok(Some(rows))
}

/// Records that a resource server served data under `grant`: the grant's `last_used_at`, which
/// dormancy is measured from (written at most once a minute), and the customer's activity
/// history (`resource.read`; for every read when `every_read`, else only with the once-a-minute
/// write, so that reports from outside cannot flood the audit log).
pub fn report_usage(
    c: &mut AnyConnection,
    grant: &str,
    client: &str,
    what: &str,
    every_read: bool,
    now: DateTime<Utc>,
) -> StorageResult<()> {
    let cutoff = (now - chrono::Duration::minutes(1)).naive_utc();
    let touched = diesel::update(
        grant_rows::table.filter(grant_rows::id.eq(grant)).filter(
            grant_rows::last_used_at
                .is_null()
                .or(grant_rows::last_used_at.lt(cutoff)),
        ),
    )
    .set(grant_rows::last_used_at.eq(now.naive_utc().trunc_subsecs(0)))
    .execute(c)?;
    if touched == 0 && !every_read {
        return Ok(());
    }
    let target = Target::new("grant", grant.to_string());
    NewEvent::new(Actor::client(client), "resource.read", target)
        .details(serde_json::json!({ "resource": what }))
        .record(c, now)?;
    Ok(())
}
