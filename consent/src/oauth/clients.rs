//! OAuth clients as the authorization server sees them, and client authentication
//! (`client_secret_basic` / `client_secret_post`; `tls_client_auth` and
//! `self_signed_tls_client_auth` with the connection's certificate, RFC 8705; `private_key_jwt`
//! assertions are checked in [`super::assertion`] and arrive here proven).

use diesel::prelude::*;
use grants::Action;
use platform::crypto::{HashedToken, PlainToken};
use platform::storage::models::ClientStatus;
use platform::storage::schema::clients;
use platform::storage::{AnyConnection, StorageResult};
use platform::web::mtls::{self, ClientCertificate};
use serde::{Deserialize, Serialize};

use super::error::OAuthError;

#[derive(Debug, Clone)]
pub struct OAuthClient {
    pub id: String,
    pub developer_id: String,
    pub name: String,
    pub environment: String,
    pub redirect_uris: Vec<String>,
    pub auth_method: String,
    pub allowed_actions: Vec<Action>,
    pub status: String,
    /// The registered JWK Set of a `private_key_jwt` client (JSON, parsed when an assertion is
    /// checked).
    pub jwks: Option<String>,
    /// RFC 9449 section 5.2: tokens are issued to this client only with a DPoP proof.
    pub dpop_bound_access_tokens: bool,
    /// `tls_client_auth`: the subject DN of the client's certificate.
    pub tls_client_auth_subject_dn: Option<String>,
    /// RFC 8705 section 3: tokens are issued to this client only over mutual TLS, bound to the
    /// certificate.
    pub tls_client_certificate_bound_access_tokens: bool,
    secret_hash: String,
    /// The registration columns as stored, for recording a request checked against them.
    registration: Registration,
}

/// The columns of a client's row that decide whether an authorization request is valid, as
/// stored (JSON text). A pushed request keeps the registration it was checked against; it is
/// recorded only while the client is active and its row still says exactly this
/// (`flow::request`), so a change between the push and the authorization request is never
/// missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub environment: String,
    pub redirect_uris: String,
    pub allowed_actions: String,
}

/// What an authorization request is checked against: a client's registration, read.
#[derive(Debug, Clone)]
pub struct RequestPolicy {
    pub production: bool,
    pub redirect_uris: Vec<String>,
    pub allowed_actions: Vec<Action>,
}

impl RequestPolicy {
    /// Exact string comparison against the registered list: no prefix, no wildcard, no case
    /// folding, no normalisation.
    pub fn has_redirect_uri(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|r| r == uri)
    }
}

impl From<&Registration> for RequestPolicy {
    fn from(r: &Registration) -> Self {
        RequestPolicy {
            production: r.environment == "production",
            redirect_uris: redirect_uris(&r.redirect_uris),
            allowed_actions: allowed_actions(&r.allowed_actions),
        }
    }
}

/// A stored `redirect_uris` (a JSON array); unreadable is none.
fn redirect_uris(stored: &str) -> Vec<String> {
    serde_json::from_str(stored).unwrap_or_default()
}

/// A stored `allowed_actions` (a JSON array of names): the known actions; unreadable is none.
fn allowed_actions(stored: &str) -> Vec<Action> {
    serde_json::from_str::<Vec<String>>(stored)
        .unwrap_or_default()
        .iter()
        .filter_map(|a| Action::parse_known(a).ok())
        .collect()
}

impl OAuthClient {
    pub fn is_production(&self) -> bool {
        self.environment == "production"
    }

    pub fn is_active(&self) -> bool {
        self.status == ClientStatus::Active.as_str()
    }

    /// Tokens go to this client only with a DPoP proof: it registered
    /// `dpop_bound_access_tokens`, or it is a production client (FAPI 2.0) whose tokens are not
    /// bound to its certificate instead.
    pub fn must_use_dpop(&self) -> bool {
        self.dpop_bound_access_tokens
            || (self.is_production() && !self.tls_client_certificate_bound_access_tokens)
    }

    /// Tokens go to this client only over mutual TLS, bound to its certificate (RFC 8705).
    pub fn must_use_certificate(&self) -> bool {
        self.tls_client_certificate_bound_access_tokens
    }

    /// Exact string comparison against the registered list: no prefix, no wildcard, no case
    /// folding, no normalisation.
    pub fn has_redirect_uri(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|r| r == uri)
    }

    /// The registration columns as they were read.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// What an authorization request for this client is checked against.
    pub fn request_policy(&self) -> RequestPolicy {
        RequestPolicy {
            production: self.is_production(),
            redirect_uris: self.redirect_uris.clone(),
            allowed_actions: self.allowed_actions.clone(),
        }
    }
}

/// A `clients` row as stored (for [`load`] and queries that join `clients`); see
/// [`OAuthClient`] for the parsed form.
#[derive(Queryable, Selectable, QueryableByName)]
#[diesel(table_name = clients)]
pub struct ClientRow {
    id: String,
    developer_id: String,
    name: String,
    environment: String,
    redirect_uris: String,
    auth_method: String,
    allowed_actions: String,
    status: String,
    secret_hash: String,
    jwks: Option<String>,
    dpop_bound_access_tokens: bool,
    tls_client_auth_subject_dn: Option<String>,
    tls_client_certificate_bound_access_tokens: bool,
}

impl std::fmt::Debug for ClientRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRow")
            .field("id", &self.id)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl OAuthClient {
    /// About the heap memory this client's copy holds (what a cache holding it counts): its
    /// strings' capacities, plus the vectors' slots.
    pub fn heap_bytes(&self) -> usize {
        let strings = [
            &self.id,
            &self.developer_id,
            &self.name,
            &self.environment,
            &self.auth_method,
            &self.status,
            &self.secret_hash,
            &self.registration.environment,
            &self.registration.redirect_uris,
            &self.registration.allowed_actions,
        ];
        let optional = [&self.jwks, &self.tls_client_auth_subject_dn];
        strings.iter().map(|s| s.capacity()).sum::<usize>()
            + optional
                .iter()
                .flat_map(|s| s.as_ref())
                .map(String::capacity)
                .sum::<usize>()
            + self
                .redirect_uris
                .iter()
                .map(|u| u.capacity() + 24)
                .sum::<usize>()
            + self.allowed_actions.capacity() * std::mem::size_of::<Action>()
    }
}

#[cfg(test)]
impl OAuthClient {
    /// An active sandbox `client_secret_basic` client with the SHA-256 `secret_hash` and the JWK
    /// Set `jwks`, for unit tests.
    pub(crate) fn for_tests(id: &str, secret_hash: &str, jwks: Option<String>) -> Self {
        ClientRow {
            id: id.into(),
            developer_id: "dev_1".into(),
            name: "App".into(),
            environment: "sandbox".into(),
            redirect_uris: "[]".into(),
            auth_method: "client_secret_basic".into(),
            allowed_actions: "[]".into(),
            status: ClientStatus::Active.as_str().into(),
            secret_hash: secret_hash.into(),
            jwks,
            dpop_bound_access_tokens: false,
            tls_client_auth_subject_dn: None,
            tls_client_certificate_bound_access_tokens: false,
        }
        .into()
    }
}

impl From<ClientRow> for OAuthClient {
    fn from(row: ClientRow) -> Self {
        OAuthClient {
            id: row.id,
            developer_id: row.developer_id,
            name: row.name,
            redirect_uris: redirect_uris(&row.redirect_uris),
            auth_method: row.auth_method,
            allowed_actions: allowed_actions(&row.allowed_actions),
            status: row.status,
            jwks: row.jwks,
            dpop_bound_access_tokens: row.dpop_bound_access_tokens,
            tls_client_auth_subject_dn: row.tls_client_auth_subject_dn,
            tls_client_certificate_bound_access_tokens: row
                .tls_client_certificate_bound_access_tokens,
            secret_hash: row.secret_hash,
            environment: row.environment.clone(),
            registration: Registration {
                environment: row.environment,
                redirect_uris: row.redirect_uris,
                allowed_actions: row.allowed_actions,
            },
        }
    }
}

/// Loads a client by id (any status but deleted; callers decide).
pub fn load(conn: &mut AnyConnection, client_id: &str) -> StorageResult<Option<OAuthClient>> {
    if client_id.is_empty() || client_id.len() > 128 {
        return Ok(None);
    }
    let row: Option<ClientRow> = clients::table
        .filter(clients::id.eq(client_id))
        .filter(clients::status.ne(ClientStatus::Deleted.as_str()))
        .select(ClientRow::as_select())
        .first(conn)
        .optional()?;
    Ok(row.map(OAuthClient::from))
}

/// Credentials presented by a client. `Debug` shows the client id and method only: a secret or
/// an unexpired assertion is a credential, and never reaches a log.
#[derive(Clone)]
pub enum ClientCredentials {
    /// `Authorization: Basic` (client_secret_basic).
    Basic {
        client_id: String,
        secret: PlainToken,
    },
    /// `client_id` + `client_secret` form fields (client_secret_post).
    Post {
        client_id: String,
        secret: PlainToken,
    },
    /// `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and a
    /// signed `client_assertion` (private_key_jwt, RFC 7523), not checked yet.
    Assertion {
        client_id: String,
        assertion: String,
    },
    /// An assertion [`super::assertion`] checked (signature by a registered key, claims, single
    /// use). Only that module makes one.
    Proven(Proven),
    /// `client_id` in the form and a TLS client certificate (`tls_client_auth`,
    /// `self_signed_tls_client_auth`, RFC 8705).
    Certificate {
        client_id: String,
        certificate: ClientCertificate,
    },
}

/// A client whose `private_key_jwt` assertion verified.
#[derive(Debug, Clone)]
pub struct Proven {
    pub(super) client_id: String,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let method = match self {
            ClientCredentials::Basic { .. } => "client_secret_basic",
            ClientCredentials::Post { .. } => "client_secret_post",
            ClientCredentials::Assertion { .. } => "private_key_jwt",
            ClientCredentials::Proven(_) => "private_key_jwt (proven)",
            ClientCredentials::Certificate { .. } => "tls_client_auth",
        };
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id())
            .field("method", &method)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    pub fn client_id(&self) -> &str {
        match self {
            ClientCredentials::Basic { client_id, .. }
            | ClientCredentials::Post { client_id, .. }
            | ClientCredentials::Assertion { client_id, .. }
            | ClientCredentials::Certificate { client_id, .. }
            | ClientCredentials::Proven(Proven { client_id }) => client_id,
        }
    }
}

fn invalid_client() -> OAuthError {
    // One message for every failure: unknown client, wrong secret, wrong method, suspended.
    OAuthError::InvalidClient("client authentication failed".into())
}

/// Authenticates a client. Unknown clients and wrong secrets take the same path (a SHA-256 and a
/// constant-time comparison against a dummy hash) and produce the same error.
pub fn authenticate(
    conn: &mut AnyConnection,
    creds: &ClientCredentials,
) -> Result<OAuthClient, OAuthError> {
    let client = load(conn, creds.client_id())?;
    verify(creds, client.as_ref())?;
    client.ok_or_else(invalid_client)
}

/// Authenticates against `known`, a client row a query already brought (e.g. joined with the
/// presented token's grant), when it is the presented client's; otherwise loads the client.
/// Either way the same checks run; this only saves a round trip.
pub fn authenticate_with(
    conn: &mut AnyConnection,
    creds: &ClientCredentials,
    known: Option<&OAuthClient>,
) -> Result<OAuthClient, OAuthError> {
    match known {
        Some(c) if c.id == creds.client_id() => {
            verify(creds, Some(c))?;
            Ok(c.clone())
        }
        _ => authenticate(conn, creds),
    }
}

/// Checks presented credentials against `client`, a row loaded earlier: the presented client id,
/// the secret (constant time), an active status and a shared-secret method. `None` (unknown
/// client) takes the same path against a dummy hash.
pub fn verify(creds: &ClientCredentials, client: Option<&OAuthClient>) -> Result<(), OAuthError> {
    let (secret, method) = match creds {
        ClientCredentials::Basic { secret, .. } => (secret, "client_secret_basic"),
        ClientCredentials::Post { secret, .. } => (secret, "client_secret_post"),
        // Proven before the connection was taken; the row read since must still be that active
        // private_key_jwt client.
        ClientCredentials::Proven(Proven { client_id }) => {
            return match client {
                Some(c)
                    if c.id == *client_id
                        && c.is_active()
                        && c.auth_method == "private_key_jwt" =>
                {
                    Ok(())
                }
                _ => Err(invalid_client()),
            };
        }
        // Never proven: refused (`with_credentials_or` proves assertions before this).
        ClientCredentials::Assertion { .. } => return Err(invalid_client()),
        ClientCredentials::Certificate {
            client_id,
            certificate,
        } => {
            return match client {
                Some(c)
                    if c.id == *client_id
                        && c.is_active()
                        && certificate_authenticates(c, certificate) =>
                {
                    Ok(())
                }
                _ => Err(invalid_client()),
            };
        }
    };
    let stored = client
        .map(|c| c.secret_hash.clone())
        .unwrap_or_else(|| "0".repeat(64));
    let secret_ok = HashedToken::from_stored(stored).matches(secret);
    match client {
        // Production clients never authenticate with a shared secret (FAPI 2.0), even one
        // registered before that rule.
        Some(c)
            if secret_ok
                && c.id == creds.client_id()
                && c.is_active()
                && !c.is_production()
                && method_allowed(&c.auth_method, method) =>
        {
            Ok(())
        }
        _ => Err(invalid_client()),
    }
}

/// RFC 8705 section 2: a `tls_client_auth` client's certificate chains to a configured authority
/// and carries the registered subject DN; a `self_signed_tls_client_auth` client's certificate
/// is one it registered (x5c in its JWK Set, compared by SHA-256 thumbprint).
fn certificate_authenticates(client: &OAuthClient, cert: &ClientCertificate) -> bool {
    match client.auth_method.as_str() {
        "tls_client_auth" => match (&cert.subject_dn, &client.tls_client_auth_subject_dn) {
            (Some(presented), Some(registered)) => {
                cert.chain_trusted && mtls::subject_matches(presented, registered)
            }
            _ => false,
        },
        "self_signed_tls_client_auth" => client
            .jwks
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .and_then(|j| mtls::registered_certificates(&j).ok())
            .is_some_and(|registered| registered.contains(&cert.thumbprint)),
        _ => false,
    }
}

/// A client registered for `client_secret_basic` may also use `client_secret_post` and vice versa
/// (both are shared-secret methods of equal strength); other methods are not accepted here.
fn method_allowed(registered: &str, used: &str) -> bool {
    matches!(registered, "client_secret_basic" | "client_secret_post")
        && matches!(used, "client_secret_basic" | "client_secret_post")
}

/// One of `client_id`'s grants (the client grant API); `None` when unknown or another client's.
pub fn client_grant(
    c: &mut AnyConnection,
    client_id: &str,
    grant_id: &str,
) -> StorageResult<Option<platform::storage::models::GrantRecord>> {
    use platform::storage::models::GrantRecord;
    use platform::storage::schema::grant_rows;
    Ok(grant_rows::table
        .filter(grant_rows::id.eq(grant_id))
        .filter(grant_rows::client_id.eq(client_id))
        .select(GrantRecord::as_select())
        .first(c)
        .optional()?)
}
