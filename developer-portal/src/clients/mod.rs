//! OAuth clients owned by developers: registration, secrets (shown once, stored as SHA-256),
//! redirect URIs, webhooks; deletion and staff suspension with revocation of every grant; and the
//! facts the consent page shows about a client.
//!
//! [`registration`]: validation of a new client; [`webhooks`]: the webhook secret and
//! deliveries; [`suspension`]: staff suspension (four-eyes) and the execution of approved client
//! actions; [`lifecycle`]: a client's dormancy period (staff, four-eyes); [`display`]: what the
//! consent page shows.

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use platform::audit::{Actor, NewEvent, Target};
use platform::crypto::{MasterKey, PlainToken, random_id};
use platform::revocation::{Revocations, RevokedBy, end_grants};
use platform::storage::models::ClientStatus;
use platform::storage::models::GrantStatus;
use platform::storage::models::{AuthorizationRequestStatus, Client};
use platform::storage::schema::{authorization_requests, clients, grant_rows};
use platform::storage::{AnyConnection, StorageResult};

use crate::domain::{self, AuthMethod, Environment, Errors};
use crate::error::{PortalError, PortalResult};
use crate::kyc;

mod display;
mod lifecycle;
mod registration;
mod suspension;
mod webhooks;

pub use display::{ClientDisplay, approved_legal_name, client_display, developer_legal_name};
pub use lifecycle::{DormancyBounds, request_dormancy_change};
pub use registration::{KeyMaterial, NewClient};
pub use suspension::{decide_and_execute, request_status_change, staff_get};
pub use webhooks::{
    WEBHOOK_KEY, WebhookDelivery, redeliver, rotate_webhook_secret, webhook_aad, webhook_deliveries,
};

/// Clients per developer.
pub const MAX_CLIENTS: i64 = 50;

// A client as its owner sees it (never the secret or its hash): the portal pages show it, the
// JSON API answers it as `ClientResponse`. (A `//` comment: a doc comment would become the
// schema's description.)
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = ClientResponse)]
pub struct ClientView {
    #[serde(rename = "client_id")]
    #[schema(example = "c_Zm9vYmFy")]
    pub id: String,
    pub name: String,
    #[schema(value_type = platform::values::Environment)]
    pub environment: String,
    #[schema(value_type = crate::api::ClientStatus)]
    pub status: String,
    pub redirect_uris: Vec<String>,
    /// `token_endpoint_auth_method` (RFC 7591).
    #[schema(value_type = crate::api::AuthMethod)]
    pub auth_method: String,
    /// The public keys of a `private_key_jwt` client, or the certificates (`x5c`) of a
    /// `self_signed_tls_client_auth` client (RFC 7517 JWK Set).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    /// RFC 9449 section 5.2: the client always uses DPoP.
    pub dpop_bound_access_tokens: bool,
    /// RFC 8705 2.1.2: the subject DN of a `tls_client_auth` client's certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_subject_dn: Option<String>,
    /// RFC 8705 section 3: every access token is bound to the client's TLS certificate.
    pub tls_client_certificate_bound_access_tokens: bool,
    pub allowed_actions: Vec<String>,
    pub webhook_url: Option<String>,
    /// Days without use after which the bank ends a grant of this client, when the bank set a
    /// period shorter than its default for it (staff, four-eyes); `null`: the bank's default.
    pub dormancy_days: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Client> for ClientView {
    fn from(c: Client) -> Self {
        Self {
            redirect_uris: serde_json::from_str(&c.redirect_uris).unwrap_or_default(),
            allowed_actions: serde_json::from_str(&c.allowed_actions).unwrap_or_default(),
            id: c.id,
            name: c.name,
            environment: c.environment,
            status: c.status,
            auth_method: c.auth_method,
            jwks: c.jwks.as_deref().and_then(|j| serde_json::from_str(j).ok()),
            dpop_bound_access_tokens: c.dpop_bound_access_tokens,
            tls_client_auth_subject_dn: c.tls_client_auth_subject_dn,
            tls_client_certificate_bound_access_tokens: c
                .tls_client_certificate_bound_access_tokens,
            webhook_url: c.webhook_url,
            dormancy_days: c.dormancy_days,
            created_at: c.created_at.and_utc(),
            updated_at: c.updated_at.and_utc(),
        }
    }
}

/// A client with the secrets shown exactly once (after creation or rotation).
#[derive(Debug)]
pub struct ClientWithSecret {
    pub client: ClientView,
    /// `None` for a client that authenticates with a key or certificate: it has no secret.
    pub client_secret: Option<PlainToken>,
    /// The webhook signing secret, when a webhook URL was set for the first time.
    pub webhook_secret: Option<PlainToken>,
}

/// A change to a client; `None` leaves a field as is. `webhook_url: Some(None)` removes it.
#[derive(Debug, Clone, Default)]
pub struct ClientUpdate {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    /// New keys for a `private_key_jwt` client (key rotation: list the new key beside the old
    /// one, switch, then drop the old one).
    pub jwks: Option<serde_json::Value>,
    pub webhook_url: Option<Option<String>>,
}

fn ts(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc().trunc_subsecs(0)
}

fn owned(conn: &mut AnyConnection, developer_id: &str, client_id: &str) -> PortalResult<Client> {
    // Another developer's client and a deleted client are indistinguishable from a missing one.
    clients::table
        .filter(clients::id.eq(client_id))
        .filter(clients::developer_id.eq(developer_id))
        .filter(clients::status.ne(ClientStatus::Deleted.as_str()))
        .select(Client::as_select())
        .first(conn)
        .optional()?
        .ok_or(PortalError::NotFound("client"))
}

/// Any developer's client, unless deleted.
fn live(conn: &mut AnyConnection, client_id: &str) -> QueryResult<Option<Client>> {
    clients::table
        .filter(clients::id.eq(client_id))
        .filter(clients::status.ne(ClientStatus::Deleted.as_str()))
        .select(Client::as_select())
        .first(conn)
        .optional()
}

/// The developer's client, refused unless it is active (a suspended client cannot be changed).
fn owned_active(
    conn: &mut AnyConnection,
    developer_id: &str,
    client_id: &str,
) -> PortalResult<Client> {
    let current = owned(conn, developer_id, client_id)?;
    if current.status != ClientStatus::Active.as_str() {
        return Err(PortalError::Conflict(format!(
            "the client is {} and cannot be changed",
            current.status
        )));
    }
    Ok(current)
}

/// Audits the developer's `action` on their client.
fn audit_developer(
    conn: &mut AnyConnection,
    developer_id: &str,
    action: &'static str,
    client_id: &str,
    details: serde_json::Value,
    now: DateTime<Utc>,
) -> PortalResult<()> {
    NewEvent::new(
        Actor::developer(developer_id),
        action,
        Target::new("client", client_id),
    )
    .details(details)
    .record(conn, now)?;
    Ok(())
}

/// Registers a client. Production clients require approved KYC.
pub fn create(
    conn: &mut AnyConnection,
    master_key: &MasterKey,
    developer_id: &str,
    new: &NewClient,
    now: DateTime<Utc>,
) -> PortalResult<ClientWithSecret> {
    if new.environment == Environment::Production && !kyc::is_approved(conn, developer_id)? {
        return Err(PortalError::Forbidden(
            "production clients require approved KYC: submit your KYC details and wait for \
             staff approval, or create a sandbox client"
                .into(),
        ));
    }
    // FAPI 2.0: production clients prove themselves with a key and hold only sender-constrained
    // tokens (sandbox clients may keep shared secrets and bearer tokens).
    if new.environment == Environment::Production {
        let mut e = Errors::default();
        if new.auth_method.uses_secret() {
            e.push(
                "auth_method",
                "production clients authenticate with private_key_jwt, tls_client_auth or \
                 self_signed_tls_client_auth (FAPI 2.0)",
            );
        }
        if !new.dpop_bound_access_tokens && !new.tls_client_certificate_bound_access_tokens {
            e.push(
                "dpop_bound_access_tokens",
                "production clients must use DPoP or certificate-bound tokens \
                 (tls_client_certificate_bound_access_tokens; FAPI 2.0 sender-constrained tokens)",
            );
        }
        e.into_result()?;
    }
    // Two creates at once for one developer wait for each other here, so the count below holds
    // (SQLite's write transactions are serial already).
    if let AnyConnection::Postgresql(pg) = conn {
        diesel::sql_query("SELECT 1 FROM developers WHERE id = $1 FOR NO KEY UPDATE")
            .bind::<diesel::sql_types::Text, _>(developer_id)
            .execute(pg)?;
    }
    let count: i64 = clients::table
        .filter(clients::developer_id.eq(developer_id))
        .filter(clients::status.ne(ClientStatus::Deleted.as_str()))
        .count()
        .get_result(conn)?;
    if count >= MAX_CLIENTS {
        return Err(PortalError::Conflict(format!(
            "at most {MAX_CLIENTS} clients per developer"
        )));
    }
    let id = random_id("c_");
    let secret = new
        .auth_method
        .uses_secret()
        .then(|| PlainToken::generate("cs_"));
    let webhook_secret = new
        .webhook_url
        .as_ref()
        .map(|_| platform::webhooks::generate_secret());
    let webhook_secret_enc = match &webhook_secret {
        Some(s) => Some(
            master_key
                .cipher(WEBHOOK_KEY)
                .encrypt_str(s.expose(), &webhook_aad(&id))?,
        ),
        None => None,
    };
    let row = Client {
        id: id.clone(),
        developer_id: developer_id.to_string(),
        name: new.name.clone(),
        environment: new.environment.as_str().into(),
        redirect_uris: serde_json::json!(new.redirect_uris).to_string(),
        auth_method: new.auth_method.as_str().into(),
        // A key-authenticated client has no secret: a value no SHA-256 hex digest can equal.
        secret_hash: match &secret {
            Some(s) => s.hash().as_str().to_string(),
            None => format!("none:{}", random_id("")),
        },
        allowed_actions: serde_json::json!(new.allowed_actions).to_string(),
        webhook_url: new.webhook_url.clone(),
        webhook_secret_enc,
        dormancy_days: None,
        dormancy_since: None,
        status: "active".into(),
        created_at: ts(now),
        updated_at: ts(now),
        jwks: new.jwks.clone(),
        dpop_bound_access_tokens: new.dpop_bound_access_tokens,
        tls_client_auth_subject_dn: new.tls_client_auth_subject_dn.clone(),
        tls_client_certificate_bound_access_tokens: new.tls_client_certificate_bound_access_tokens,
    };
    diesel::insert_into(clients::table)
        .values(&row)
        .execute(conn)?;
    audit_developer(
        conn,
        developer_id,
        "client.created",
        &id,
        serde_json::json!({
            "environment": row.environment,
            "auth_method": row.auth_method,
            "dpop_bound_access_tokens": row.dpop_bound_access_tokens,
            "tls_client_certificate_bound_access_tokens":
                row.tls_client_certificate_bound_access_tokens,
        }),
        now,
    )?;
    Ok(ClientWithSecret {
        client: row.into(),
        client_secret: secret,
        webhook_secret,
    })
}

/// The developer's clients (not deleted), newest first.
pub fn list(conn: &mut AnyConnection, developer_id: &str) -> PortalResult<Vec<ClientView>> {
    Ok(clients::table
        .filter(clients::developer_id.eq(developer_id))
        .filter(clients::status.ne(ClientStatus::Deleted.as_str()))
        .order(clients::created_at.desc())
        .select(Client::as_select())
        .load(conn)?
        .into_iter()
        .map(Into::into)
        .collect())
}

pub fn get(
    conn: &mut AnyConnection,
    developer_id: &str,
    client_id: &str,
) -> PortalResult<ClientView> {
    owned(conn, developer_id, client_id).map(Into::into)
}

/// Validates an update against the client's environment and applies it.
pub fn update(
    conn: &mut AnyConnection,
    master_key: &MasterKey,
    developer_id: &str,
    client_id: &str,
    change: &ClientUpdate,
    now: DateTime<Utc>,
) -> PortalResult<(ClientView, Option<PlainToken>)> {
    let current = owned_active(conn, developer_id, client_id)?;
    let env = Environment::parse(&current.environment).unwrap_or(Environment::Production);
    let mut e = Errors::default();
    let name = change
        .name
        .as_deref()
        .and_then(|n| e.check("name", domain::text(n, 100)));
    let redirect_uris = change
        .redirect_uris
        .as_ref()
        .map(|list| domain::redirect_uris(list, env, &mut e));
    let jwks = match &change.jwks {
        Some(j) => match AuthMethod::parse(&current.auth_method) {
            Ok(method) => e.check("jwks", method.check_jwks(j)),
            Err(why) => e.check("jwks", Err(why)),
        },
        None => None,
    };
    let webhook = match &change.webhook_url {
        Some(Some(w)) => e
            .check("webhook_url", domain::webhook_url(w, env))
            .map(Some),
        Some(None) => Some(None),
        None => None,
    };
    e.into_result()?;
    let name = name.unwrap_or(current.name.clone());
    let redirect_uris = match redirect_uris {
        Some(list) => serde_json::json!(list).to_string(),
        None => current.redirect_uris.clone(),
    };
    let (webhook_url, mut webhook_secret_enc) = match webhook {
        Some(w) => (w, current.webhook_secret_enc.clone()),
        None => (
            current.webhook_url.clone(),
            current.webhook_secret_enc.clone(),
        ),
    };
    let mut new_secret = None;
    if webhook_url.is_some() && webhook_secret_enc.is_none() {
        let s = platform::webhooks::generate_secret();
        webhook_secret_enc = Some(
            master_key
                .cipher(WEBHOOK_KEY)
                .encrypt_str(s.expose(), &webhook_aad(client_id))?,
        );
        new_secret = Some(s);
    }
    diesel::update(clients::table.filter(clients::id.eq(client_id)))
        .set((
            clients::name.eq(&name),
            clients::redirect_uris.eq(&redirect_uris),
            clients::webhook_url.eq(&webhook_url),
            clients::webhook_secret_enc.eq(&webhook_secret_enc),
            clients::jwks.eq(jwks.as_ref().or(current.jwks.as_ref())),
            clients::updated_at.eq(ts(now)),
        ))
        .execute(conn)?;
    audit_developer(
        conn,
        developer_id,
        "client.updated",
        client_id,
        serde_json::json!({
            "name": change.name.is_some(),
            "redirect_uris": change.redirect_uris.is_some(),
            "webhook_url": change.webhook_url.is_some(),
            "jwks": change.jwks.is_some(),
        }),
        now,
    )?;
    Ok((owned(conn, developer_id, client_id)?.into(), new_secret))
}

/// Replaces the client secret; the old one stops working at once, except that an introspection
/// answer stored before may be reused with it for at most `tokens.introspection_cache_ttl` (1 s
/// by default). Returns the new one (once).
pub fn rotate_secret(
    conn: &mut AnyConnection,
    developer_id: &str,
    client_id: &str,
    now: DateTime<Utc>,
) -> PortalResult<ClientWithSecret> {
    let current = owned_active(conn, developer_id, client_id)?;
    if !AuthMethod::parse(&current.auth_method).is_ok_and(AuthMethod::uses_secret) {
        return Err(PortalError::Conflict(format!(
            "this client authenticates with {} and has no secret: register new keys or \
             certificates (jwks) instead",
            current.auth_method
        )));
    }
    let secret = PlainToken::generate("cs_");
    diesel::update(clients::table.filter(clients::id.eq(client_id)))
        .set((
            clients::secret_hash.eq(secret.hash().as_str()),
            clients::updated_at.eq(ts(now)),
        ))
        .execute(conn)?;
    audit_developer(
        conn,
        developer_id,
        "client.secret_rotated",
        client_id,
        serde_json::json!({}),
        now,
    )?;
    Ok(ClientWithSecret {
        client: owned(conn, developer_id, client_id)?.into(),
        client_secret: Some(secret),
        webhook_secret: None,
    })
}

/// Deletes a client (status `deleted`; the row stays for the audit trail and foreign keys) and
/// revokes all its grants.
pub fn delete(
    conn: &mut AnyConnection,
    revoked: &mut Revocations,
    developer_id: &str,
    client_id: &str,
    now: DateTime<Utc>,
) -> PortalResult<()> {
    owned(conn, developer_id, client_id)?;
    diesel::update(clients::table.filter(clients::id.eq(client_id)))
        .set((
            clients::status.eq(ClientStatus::Deleted.as_str()),
            // Nothing can authenticate as a deleted client, even if its status were misread.
            clients::secret_hash.eq(format!("deleted:{}", random_id(""))),
            clients::updated_at.eq(ts(now)),
        ))
        .execute(conn)?;
    let ended = revoke_client_grants(conn, revoked, client_id, "client", now)?;
    audit_developer(
        conn,
        developer_id,
        "client.deleted",
        client_id,
        serde_json::json!({ "grants_revoked": ended.len() }),
        now,
    )?;
    Ok(())
}

/// Revokes every live grant of `client_id` in the caller's transaction: grants awaiting
/// authorization or authorized become `revoked` (`revoked_by` = `revoked_by`: `client` when the
/// developer deletes the client, `staff` when it is suspended), their refresh tokens `revoked`,
/// and the revocation feed gets one row per grant plus one per Biscuit revocation id issued for
/// it. Each grant's revocation is audited. Returns the revoked grant ids.
pub fn revoke_client_grants(
    conn: &mut AnyConnection,
    revoked: &mut Revocations,
    client_id: &str,
    revoked_by: &str,
    now: DateTime<Utc>,
) -> StorageResult<Vec<String>> {
    let (by, reason, actor) = match revoked_by {
        "client" => (
            RevokedBy::Client,
            "client_deleted",
            Actor::client(client_id),
        ),
        _ => (
            RevokedBy::Staff,
            "client_suspended",
            Actor::system("client-suspension"),
        ),
    };
    let live = |conn: &mut AnyConnection| {
        grant_rows::table
            .filter(grant_rows::client_id.eq(client_id))
            .filter(grant_rows::status.eq_any(GrantStatus::LIVE_STR))
            .order(grant_rows::id.asc())
            .select(grant_rows::id)
            .load::<String>(conn)
    };
    // The one place grants end (status, refresh tokens, revocation list, audit).
    let grant_ids = live(conn)?;
    let mut ended = end_grants(conn, revoked, &grant_ids, by, reason, &actor, now)?;
    // The client's undecided authorization requests go, so no customer's decision can give it
    // a grant from here on. A decision being written now holds its request's row: this waits
    // for it, and what it created is live below (each statement here reads what committed
    // before it). Done after the first ending, so a Grant Management decision (which locks its
    // grant before its request) and this (grants, then requests) take locks in one order.
    diesel::delete(
        authorization_requests::table
            .filter(authorization_requests::client_id.eq(client_id))
            .filter(
                authorization_requests::status.eq(AuthorizationRequestStatus::Pending.as_str()),
            ),
    )
    .execute(conn)?;
    let late = live(conn)?;
    ended.extend(end_grants(conn, revoked, &late, by, reason, &actor, now)?);
    Ok(ended)
}
