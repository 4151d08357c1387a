//! OAuth client registration on the JSON API (developer bearer token): clients, their secrets
//! and their webhook deliveries.

use actix_web::{HttpResponse, web};
use platform::problem::ApiError;
use platform::problem::documented::{NoDeveloperToken, NotYourClient};
use platform::web::no_store_json;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::{ClientId, EventId, PathId};
use crate::auth::DeveloperAuth;
use crate::clients::{self, ClientUpdate, ClientWithSecret, NewClient};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClientRequest {
    pub name: String,
    /// `production` needs approved KYC.
    #[schema(value_type = platform::values::Environment, example = "sandbox")]
    pub environment: String,
    /// Exact redirect URIs: https (http only on loopback, sandbox only), no fragment, no
    /// wildcard, no user info; 1 to 10, each at most 512 characters.
    #[schema(example = json!(["https://app.fintech.example/callback"]), min_items = 1, max_items = 10)]
    pub redirect_uris: Vec<String>,
    /// `client_secret_basic` (default), `client_secret_post`, `private_key_jwt` (FAPI 2.0:
    /// RFC 7523 assertions signed with a key of `jwks`), `tls_client_auth` (RFC 8705: mutual TLS
    /// with a certificate from an authority the bank trusts, carrying
    /// `tls_client_auth_subject_dn`) or `self_signed_tls_client_auth` (mutual TLS with a
    /// certificate registered in `jwks` as `x5c`). Only the first two get a secret. The RFC 7591
    /// name `token_endpoint_auth_method` is accepted too.
    #[serde(alias = "token_endpoint_auth_method")]
    #[schema(value_type = Option<crate::api::AuthMethod>)]
    pub auth_method: Option<String>,
    /// An RFC 7517 JWK Set given inline (URLs are never fetched): for `private_key_jwt` the
    /// client's public signing keys (1 to 10 P-256, RSA (PS256, 2048 to 8192 bits) or Ed25519 keys), for
    /// `self_signed_tls_client_auth` its certificates (each key's `x5c`, 1 to 10).
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    /// RFC 9449 section 5.2: the client always uses DPoP; tokens are never issued to it without
    /// a proof (default false).
    pub dpop_bound_access_tokens: Option<bool>,
    /// For `tls_client_auth`: the subject DN (RFC 4514, e.g. `CN=app,O=Fintech Ltd,C=GB`) of the
    /// client's certificate.
    pub tls_client_auth_subject_dn: Option<String>,
    /// RFC 8705 section 3: every access token is bound to the TLS certificate the client
    /// connects with; tokens are never issued to it without one (default false).
    pub tls_client_certificate_bound_access_tokens: Option<bool>,
    /// Subset of accounts:read, balances:read, transactions:read (default: all).
    pub allowed_actions: Option<Vec<String>>,
    pub webhook_url: Option<String>,
}

/// A field that may be absent (outer `None`), `null` (`Some(None)`) or a value.
pub(super) fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateClientRequest {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    /// New keys for a `private_key_jwt` client (rotate by listing the new key beside the old).
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    /// A URL sets the webhook; `null` removes it; absent leaves it unchanged.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub webhook_url: Option<Option<String>>,
}

/// A client as its owner sees it.
pub use crate::clients::ClientView as ClientResponse;

/// A client with its secret, returned once by create, secret rotation and (for the webhook
/// secret) the first update that sets a webhook URL.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientSecretResponse {
    #[serde(flatten)]
    pub client: ClientResponse,
    /// Shown only in this response; store it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Webhook signing secret, shown only once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryList {
    pub deliveries: Vec<clients::WebhookDelivery>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookSecretResponse {
    /// `whsec_...` (Standard Webhooks format), shown only in this response.
    pub webhook_secret: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientList {
    pub clients: Vec<ClientResponse>,
}

impl From<ClientWithSecret> for ClientSecretResponse {
    fn from(c: ClientWithSecret) -> Self {
        Self {
            client: c.client,
            client_secret: c.client_secret.map(|s| s.expose().to_string()),
            webhook_secret: c.webhook_secret.map(|s| s.expose().to_string()),
        }
    }
}

/// Register a client. The secret is in this response only.
#[utoipa::path(post, path = "/api/v1/clients", tag = "clients",
    security(("developer_token" = [])),
    request_body = CreateClientRequest,
    responses((status = 201, description = "Created; the secret is shown once", body = ClientSecretResponse),
        (status = 400, description = "Invalid field (e.g. a redirect URI)", body = platform::problem::Problem),
        NoDeveloperToken,
        (status = 403, description = "Production client without approved KYC", body = platform::problem::Problem)))]
pub async fn create_client(
    auth: DeveloperAuth,
    body: web::Json<CreateClientRequest>,
) -> Result<HttpResponse, ApiError> {
    let new = NewClient::parse(
        &body.name,
        &body.environment,
        &body.redirect_uris,
        body.auth_method.as_deref(),
        body.allowed_actions.as_deref(),
        body.webhook_url.as_deref(),
    )?
    .with_keys(&clients::KeyMaterial {
        jwks: body.jwks.as_ref(),
        dpop_bound_access_tokens: body.dpop_bound_access_tokens.unwrap_or(false),
        tls_client_auth_subject_dn: body.tls_client_auth_subject_dn.as_deref(),
        tls_client_certificate_bound_access_tokens: body
            .tls_client_certificate_bound_access_tokens
            .unwrap_or(false),
    })?;
    let key = auth.platform.master_key.clone();
    let created = auth
        .write(move |c, dev, now| clients::create(c, &key, dev, &new, now))
        .await?;
    let location = format!("/api/v1/clients/{}", created.client.id);
    Ok(HttpResponse::Created()
        .insert_header(("Location", location))
        .insert_header(("Cache-Control", "no-store"))
        .json(ClientSecretResponse::from(created)))
}

/// The developer's clients.
#[utoipa::path(get, path = "/api/v1/clients", tag = "clients",
    security(("developer_token" = [])),
    responses((status = 200, description = "Clients", body = ClientList),
        NoDeveloperToken))]
pub async fn list_clients(auth: DeveloperAuth) -> Result<web::Json<ClientList>, ApiError> {
    let list = auth.read(move |c, dev, _| clients::list(c, dev)).await?;
    Ok(web::Json(ClientList { clients: list }))
}

/// One of the developer's clients.
#[utoipa::path(get, path = "/api/v1/clients/{client_id}", tag = "clients",
    security(("developer_token" = [])),
    params(ClientId),
    responses((status = 200, description = "The client", body = ClientResponse),
        NoDeveloperToken,
        NotYourClient))]
pub async fn get_client(
    auth: DeveloperAuth,
    PathId(id, ..): ClientId,
) -> Result<web::Json<ClientResponse>, ApiError> {
    let c = auth
        .read(move |c, dev, _| clients::get(c, dev, &id))
        .await?;
    Ok(web::Json(c))
}

/// Change a client's name, redirect URIs or webhook URL.
#[utoipa::path(patch, path = "/api/v1/clients/{client_id}", tag = "clients",
    security(("developer_token" = [])),
    params(ClientId),
    request_body = UpdateClientRequest,
    responses((status = 200, description = "Updated (webhook_secret present when a webhook was set for the first time)", body = ClientSecretResponse),
        (status = 400, description = "Invalid field", body = platform::problem::Problem),
        NoDeveloperToken,
        NotYourClient,
        (status = 409, description = "Client suspended", body = platform::problem::Problem)))]
pub async fn update_client(
    auth: DeveloperAuth,
    PathId(id, ..): ClientId,
    body: web::Json<UpdateClientRequest>,
) -> Result<web::Json<ClientSecretResponse>, ApiError> {
    let body = body.into_inner();
    if body.name.is_none()
        && body.redirect_uris.is_none()
        && body.webhook_url.is_none()
        && body.jwks.is_none()
    {
        return Err(ApiError::BadRequest(
            "nothing to update: give name, redirect_uris, webhook_url or jwks".into(),
        ));
    }
    let change = ClientUpdate {
        name: body.name,
        redirect_uris: body.redirect_uris,
        jwks: body.jwks,
        webhook_url: body.webhook_url,
    };
    let key = auth.platform.master_key.clone();
    let (client, webhook_secret) = auth
        .write(move |c, dev, now| clients::update(c, &key, dev, &id, &change, now))
        .await?;
    Ok(web::Json(ClientSecretResponse {
        client,
        client_secret: None,
        webhook_secret: webhook_secret.map(|s| s.expose().to_string()),
    }))
}

/// Delete a client; all its grants and refresh tokens are revoked.
#[utoipa::path(delete, path = "/api/v1/clients/{client_id}", tag = "clients",
    security(("developer_token" = [])),
    params(ClientId),
    responses((status = 204, description = "Deleted"),
        NoDeveloperToken,
        NotYourClient))]
pub async fn delete_client(
    auth: DeveloperAuth,
    PathId(id, ..): ClientId,
) -> Result<HttpResponse, ApiError> {
    auth.write_revoking(move |c, r, dev, now| clients::delete(c, r, dev, &id, now))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Replace the client secret; the old one stops working at once.
///
/// One exception: an introspection answer stored before the rotation (by this instance or
/// another) may be reused with the old secret for at most `tokens.introspection_cache_ttl`
/// (1 s by default, 10 s at most).
#[utoipa::path(post, path = "/api/v1/clients/{client_id}/secret", tag = "clients",
    security(("developer_token" = [])),
    params(ClientId),
    responses((status = 200, description = "New secret, shown once", body = ClientSecretResponse),
        NoDeveloperToken,
        NotYourClient,
        (status = 409, description = "Client suspended", body = platform::problem::Problem)))]
pub async fn rotate_secret(
    auth: DeveloperAuth,
    PathId(id, ..): ClientId,
) -> Result<HttpResponse, ApiError> {
    let r = auth
        .write(move |c, dev, now| clients::rotate_secret(c, dev, &id, now))
        .await?;
    Ok(no_store_json(&ClientSecretResponse::from(r)))
}

/// The client's webhook events and their delivery status, newest first (at most 100).
#[utoipa::path(get, path = "/api/v1/clients/{client_id}/webhook-deliveries", tag = "clients",
    security(("developer_token" = [])),
    params(ClientId),
    responses((status = 200, description = "Recent events", body = WebhookDeliveryList),
        NoDeveloperToken,
        NotYourClient))]
pub async fn webhook_deliveries(
    auth: DeveloperAuth,
    PathId(id, ..): ClientId,
) -> Result<web::Json<WebhookDeliveryList>, ApiError> {
    let deliveries = auth
        .read(move |c, dev, _| clients::webhook_deliveries(c, dev, &id, 100))
        .await?;
    Ok(web::Json(WebhookDeliveryList { deliveries }))
}

/// Send a failed webhook event again (after fixing the receiver).
#[utoipa::path(post, path = "/api/v1/clients/{client_id}/webhook-deliveries/{event_id}/retry", tag = "clients",
    security(("developer_token" = [])),
    params(ClientId, EventId),
    responses((status = 202, description = "Queued for delivery"),
        NoDeveloperToken,
        (status = 404, description = "No such client or event", body = platform::problem::Problem),
        (status = 409, description = "The event is not failed, or the client is not active", body = platform::problem::Problem)))]
pub async fn redeliver_webhook(
    auth: DeveloperAuth,
    PathId(id, ..): ClientId,
    PathId(event, ..): EventId,
) -> Result<HttpResponse, ApiError> {
    auth.write(move |c, dev, now| clients::redeliver(c, dev, &id, &event, now))
        .await?;
    Ok(HttpResponse::Accepted().finish())
}

/// Replace the webhook signing secret; the old one stops at once.
#[utoipa::path(post, path = "/api/v1/clients/{client_id}/webhook-secret", tag = "clients",
    security(("developer_token" = [])),
    params(ClientId),
    responses((status = 200, description = "New webhook secret, shown once", body = WebhookSecretResponse),
        NoDeveloperToken,
        NotYourClient,
        (status = 409, description = "Client suspended or without webhook URL", body = platform::problem::Problem)))]
pub async fn rotate_webhook_secret(
    auth: DeveloperAuth,
    PathId(id, ..): ClientId,
) -> Result<HttpResponse, ApiError> {
    let key = auth.platform.master_key.clone();
    let secret = auth
        .write(move |c, dev, now| clients::rotate_webhook_secret(c, &key, dev, &id, now))
        .await?;
    Ok(no_store_json(&WebhookSecretResponse {
        webhook_secret: secret.expose().to_string(),
    }))
}
