//! The customer's consent: what is offered, the narrowing they choose, and the decision that
//! creates the grant and the authorization code.

use super::loaded::{Loaded, load};
use super::*;
use crate::sandbox::AccountView;

/// An account the customer may share.
#[derive(Debug, Clone)]
pub struct OfferedAccount {
    pub id: String,
    pub name: String,
    pub masked_number: String,
    pub currency: String,
}

/// What the consent page shows.
#[derive(Debug, Clone)]
pub struct PendingConsent {
    pub id: String,
    pub client: OAuthClient,
    /// Where the decision is sent (the page's CSP `form-action` must allow its origin).
    pub redirect_uri: String,
    pub requested: AccessRequest,
    pub accounts: Vec<OfferedAccount>,
    /// Requested merchants with their display names.
    pub merchants: Vec<(String, String)>,
    /// When the app asked for all merchants: the merchants of the offered accounts'
    /// transactions (id, name), which the customer may limit the access to.
    pub own_merchants: Vec<(String, String)>,
    /// KYC-verified legal name of the developer, when verified.
    pub verified_legal_name: Option<String>,
    /// The request changes a grant the customer already gave this client (Grant Management).
    pub change: Option<GrantChange>,
}

/// An existing grant a request merges into or replaces, as the consent page shows it.
#[derive(Debug, Clone)]
pub struct GrantChange {
    pub action: GrantAction,
    pub grant_id: String,
    /// What the grant allows now.
    pub current: AccessRequest,
}

/// Errors of the consent step: always shown as a page (the request may not be trustworthy).
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error("this authorization request is unknown, expired or already decided")]
    NotPending,
    #[error("none of the requested accounts belong to you")]
    NoAccounts,
    #[error("{0}")]
    Invalid(String),
    #[error(
        "this app is in its developer's sandbox: it has not been verified by the bank, and only \
         test customers can connect to it"
    )]
    SandboxOnly,
    #[error(
        "this request would change a connection you have not given this app, or one that has \
         ended (invalid_grant_id)"
    )]
    InvalidGrantId,
    #[error("the service is temporarily unavailable; try again")]
    Unavailable(#[from] StorageError),
}

impl From<diesel::result::Error> for ConsentError {
    fn from(e: diesel::result::Error) -> Self {
        ConsentError::Unavailable(e.into())
    }
}

/// At most this many of the customer's own merchants are offered to limit an app to.
const OWN_MERCHANTS_SHOWN: i64 = 50;

/// A pending authorization request, as the consent page and the decision read it.
#[derive(Debug, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = authorization_requests)]
pub(super) struct Row {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) state: Option<String>,
    pub(super) code_challenge: String,
    pub(super) authorization_details: String,
    /// The customer who opened it (once one has).
    pub(super) customer_id: Option<String>,
    /// The DPoP key the code will be bound to.
    pub(super) dpop_jkt: Option<String>,
    /// Grant Management: the grant a `merge` or `replace` changes.
    pub(super) grant_id: Option<String>,
    pub(super) grant_action: Option<String>,
}

/// The customer's accounts the request may cover.
pub(super) fn offered_accounts(
    accounts: Vec<AccountView>,
    requested: &AccessRequest,
) -> Vec<OfferedAccount> {
    accounts
        .into_iter()
        .filter(|a| {
            requested
                .accounts
                .as_ref()
                .is_none_or(|req| req.iter().any(|r| r.as_str() == a.id))
        })
        .map(|a| OfferedAccount {
            id: a.id,
            name: a.name,
            masked_number: a.masked_number,
            currency: a.currency,
        })
        .collect()
}

/// Sandbox clients need no KYC: only test customers may consent to them (checked before the
/// consent page is shown, and again when a decision is recorded).
pub(super) fn sandbox_allowed(
    client: &OAuthClient,
    test_customer: bool,
) -> Result<(), ConsentError> {
    if client.environment == "production" || test_customer {
        Ok(())
    } else {
        Err(ConsentError::SandboxOnly)
    }
}

/// Loads a pending request for the logged-in customer, binding it to them on first view (a
/// request cannot then be decided from another customer's session).
pub fn pending(
    c: &mut AnyConnection,
    svc: &OAuthService,
    id: &str,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<PendingConsent, ConsentError> {
    let loaded = load(c, id, customer_id, now, true)?;
    sandbox_allowed(&loaded.client, loaded.test_customer)?;
    match loaded.row.customer_id.as_deref() {
        Some(b) if b != customer_id => return Err(ConsentError::NotPending),
        Some(_) => {}
        // The read tried to bind it and could not: bound meanwhile, or the client is inactive.
        None if loaded.bind_tried => return Err(ConsentError::NotPending),
        None => {
            let n = diesel::update(
                authorization_requests::table
                    .filter(authorization_requests::id.eq(id))
                    .filter(authorization_requests::customer_id.is_null()),
            )
            .set(authorization_requests::customer_id.eq(customer_id))
            .execute(c)?;
            if n != 1 {
                return Err(ConsentError::NotPending);
            }
        }
    }
    if !loaded.client.is_active() {
        return Err(ConsentError::NotPending);
    }
    let Loaded {
        row:
            Row {
                client_id,
                redirect_uri,
                authorization_details: details,
                grant_id,
                grant_action,
                ..
            },
        client,
        mut alongside,
        ..
    } = loaded;
    let change = change_of(c, grant_id, grant_action, &client_id, customer_id, now)?;
    let requested = AccessRequest::from_stored(&details)
        .map_err(|e| ConsentError::Invalid(e.description().into()))?;
    let accounts = offered_accounts(alongside.accounts(c, customer_id)?, &requested);
    if accounts.is_empty() {
        return Err(ConsentError::NoAccounts);
    }
    // The requested merchants with their names; or, when the app asked for all, the merchants
    // of the offered accounts' transactions, which the customer may limit it to.
    let (merchants, own_merchants) = match &requested.merchants {
        Some(list) => {
            let ids: Vec<&str> = list.iter().map(|m| m.as_str()).collect();
            let names: Vec<(String, String)> = merchants::table
                .filter(merchants::id.eq_any(&ids))
                .select((merchants::id, merchants::name))
                .load(c)?;
            let named = list
                .iter()
                .map(|m| {
                    let name = names.iter().find(|(id, _)| id == m.as_str());
                    let name = name.map_or(m.as_str(), |(_, n)| n.as_str());
                    (m.as_str().to_string(), name.to_string())
                })
                .collect();
            (named, vec![])
        }
        None => {
            use platform::storage::schema::transactions;
            let ids: Vec<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
            let own = transactions::table
                .inner_join(merchants::table)
                .filter(transactions::account_id.eq_any(&ids))
                .select((merchants::id, merchants::name))
                .distinct()
                .order(merchants::name)
                .limit(OWN_MERCHANTS_SHOWN)
                .load(c)?;
            (vec![], own)
        }
    };
    let verified_legal_name = alongside.verified_legal_name(c, svc, &client.developer_id)?;
    Ok(PendingConsent {
        id: id.to_string(),
        client,
        redirect_uri,
        requested,
        accounts,
        merchants,
        own_merchants,
        verified_legal_name,
        change,
    })
}

/// The grant a pending request changes, when it is a live grant of this client and customer.
fn change_of(
    c: &mut AnyConnection,
    grant_id: Option<String>,
    grant_action: Option<String>,
    client_id: &str,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<GrantChange>, ConsentError> {
    let (Some(id), Some(action)) = (
        grant_id,
        grant_action.as_deref().and_then(GrantAction::parse),
    ) else {
        return Ok(None);
    };
    let grant = live_grant(c, &id, client_id, Some(customer_id), now)?
        .map_err(|_| ConsentError::InvalidGrantId)?;
    let current = AccessRequest::from_stored(&grant.authorization_details)
        .map_err(|e| ConsentError::Invalid(e.description().into()))?;
    Ok(Some(GrantChange {
        action,
        grant_id: id,
        current,
    }))
}

pub(super) fn with_params(uri: &str, params: &[(&str, &str)]) -> String {
    let mut url = match url::Url::parse(uri) {
        Ok(u) => u,
        Err(_) => return uri.to_string(),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    url.to_string()
}
