//! The dashboard as its handlers call it: [`CustomerGrants`] is one logged-in customer's side,
//! each call on the database pool with the clock read once. A grant id that cannot exist is
//! unknown without a query; revocations are announced to every instance before a call returns.

use chrono::{DateTime, Utc};
use platform::Platform;
use platform::storage::{AnyConnection, StorageResult};

use std::collections::HashMap;

use super::{
    ActivityEvent, ActivityPage, ExtendOutcome, GrantView, LastRead, LifecyclePolicy,
    RevokeOutcome, activity, activity_page, customer_identity, extend, grant_views, last_reads,
    revoke, revoke_all,
};

/// Grant ids are `g_` + URL-safe characters; anything else cannot exist.
pub fn valid_grant_id(id: &str) -> bool {
    id.starts_with("g_")
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// One customer's connected apps.
#[derive(Debug, Clone)]
pub struct CustomerGrants {
    platform: Platform,
    customer: String,
    policy: LifecyclePolicy,
}

/// What a read of one grant runs: the connection, the customer's side, the grant id and now.
type OnGrant<T> = fn(&mut AnyConnection, &CustomerGrants, &str, DateTime<Utc>) -> StorageResult<T>;

impl CustomerGrants {
    pub fn new(platform: &Platform, customer: String) -> Self {
        Self {
            policy: LifecyclePolicy::from_settings(&platform.settings),
            platform: platform.clone(),
            customer,
        }
    }

    /// Reads one grant's data with `f`; `unknown` for an id that cannot exist.
    async fn read<T: Send + 'static>(
        &self,
        id: &str,
        unknown: T,
        f: OnGrant<T>,
    ) -> StorageResult<T> {
        if !valid_grant_id(id) {
            return Ok(unknown);
        }
        let (me, id, now) = (self.clone(), id.to_string(), self.platform.now());
        let db = self.platform.db.clone();
        db.run(move |c| f(c, &me, &id, now)).await
    }

    /// Every grant, newest first.
    pub async fn list(&self) -> StorageResult<Vec<GrantView>> {
        let (me, now) = (self.clone(), self.platform.now());
        let db = self.platform.db.clone();
        db.run(move |c| me.views(c, None, now)).await
    }

    /// One grant; `None` when it is not the customer's.
    pub async fn get(&self, id: &str) -> StorageResult<Option<GrantView>> {
        let one = |c: &mut AnyConnection, me: &Self, id: &str, now| me.views(c, Some(id), now);
        Ok(self.read(id, vec![], one).await?.pop())
    }

    fn views(
        &self,
        c: &mut AnyConnection,
        only: Option<&str>,
        now: DateTime<Utc>,
    ) -> StorageResult<Vec<GrantView>> {
        let key = &self.platform.master_key;
        grant_views(c, key, &self.customer, only, &self.policy, now)
    }

    /// What happened to or through one grant; `None` when it is not the customer's.
    pub async fn activity(&self, id: &str) -> StorageResult<Option<Vec<ActivityEvent>>> {
        self.read(id, None, |c, me, id, _| activity(c, &me.customer, id))
            .await
    }

    /// One page of a grant's history older than the cursor `before`; `None` when the grant is
    /// not the customer's.
    pub async fn history(
        &self,
        id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> StorageResult<Option<ActivityPage>> {
        if !valid_grant_id(id) {
            return Ok(None);
        }
        let (customer, id) = (self.customer.clone(), id.to_string());
        let db = self.platform.db.clone();
        db.run(move |c| activity_page(c, &customer, &id, before, limit))
            .await
    }

    /// The latest read through each of the customer's grants among `ids`.
    pub async fn last_reads(&self, ids: Vec<String>) -> StorageResult<HashMap<String, LastRead>> {
        let customer = self.customer.clone();
        let db = self.platform.db.clone();
        db.run(move |c| last_reads(c, &customer, &ids)).await
    }

    /// Revokes one grant (committed and announced to every instance before this returns).
    pub async fn revoke(&self, id: &str) -> StorageResult<RevokeOutcome> {
        if !valid_grant_id(id) {
            return Ok(RevokeOutcome::NotFound);
        }
        let (customer, id, now) = (self.customer.clone(), id.to_string(), self.platform.now());
        platform::revocation::write(&self.platform, move |c, r| {
            revoke(c, r, &customer, &id, now)
        })
        .await
    }

    /// Extends (re-confirms) one grant, committed before this returns.
    pub async fn extend(&self, id: &str) -> StorageResult<ExtendOutcome> {
        if !valid_grant_id(id) {
            return Ok(ExtendOutcome::NotFound);
        }
        let (me, id, now) = (self.clone(), id.to_string(), self.platform.now());
        let db = self.platform.db.clone();
        db.write(move |c| extend(c, &me.customer, &id, &me.policy, now))
            .await
    }

    /// Revokes every live grant; the ids that ended.
    pub async fn revoke_all(&self) -> StorageResult<Vec<String>> {
        let (customer, now) = (self.customer.clone(), self.platform.now());
        platform::revocation::write(&self.platform, move |c, r| revoke_all(c, r, &customer, now))
            .await
    }

    /// The customer's username and display name.
    pub async fn identity(&self) -> StorageResult<Option<(String, String)>> {
        let customer = self.customer.clone();
        let db = self.platform.db.clone();
        db.run(move |c| customer_identity(c, &customer)).await
    }
}
