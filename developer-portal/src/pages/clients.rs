//! The developer's OAuth clients: list, create, show (with webhook deliveries), edit, rotate the
//! secret, redeliver a webhook, delete.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use maud::html;
use platform::session::Session;

use super::markup::{
    csrf_input, error_list, error_page, field, messages, render, see_other, status_of,
};
use super::session::{Posted, respond};
use super::{Data, Form, nav};
use crate::clients::{self, ClientUpdate, ClientView, NewClient};
use crate::domain::ACTIONS;
use crate::error::read;
use platform::web::auth::{Developer, DeveloperSession};

fn client_detail(
    s: &Session,
    c: &ClientView,
    secret: Option<&str>,
    webhook_secret: Option<&str>,
    deliveries: &[clients::WebhookDelivery],
    status: StatusCode,
) -> HttpResponse {
    render(
        status,
        &format!("Client {}", c.name),
        html! {
            (nav(s))
            h1 { "Client " (c.name) }
            @if let Some(secret) = secret {
                div.secret {
                    p { strong { "Client secret (shown only now - copy it; we store only its hash):" } }
                    p { code id="client-secret" { (secret) } }
                }
            }
            @if let Some(w) = webhook_secret {
                p { "Webhook signing secret (shown only now): " code id="webhook-secret" { (w) } }
            }
            dl {
                dt { "Client id" } dd { code id="client-id" { (c.id) } }
                dt { "Environment" } dd id="client-environment" { (c.environment) }
                dt { "Status" } dd { (c.status) }
                dt { "Authentication" } dd id="client-auth-method" { (c.auth_method) }
                @if let Some(jwks) = &c.jwks {
                    dt { "Public keys" } dd { ul { @for k in key_labels(jwks) { li { code { (k) } } } } }
                }
                dt { "DPoP" } dd id="client-dpop" { @if c.dpop_bound_access_tokens { "required (every token is bound to the client's key)" } @else { "optional" } }
                @if let Some(dn) = &c.tls_client_auth_subject_dn {
                    dt { "Certificate subject" } dd id="client-subject-dn" { (dn) }
                }
                dt { "Mutual TLS" } dd id="client-mtls" { @if c.tls_client_certificate_bound_access_tokens { "required (every token is bound to the client's certificate)" } @else { "optional" } }
                dt { "Allowed actions" } dd { (c.allowed_actions.join(", ")) }
                dt { "Redirect URIs" } dd { ul { @for u in &c.redirect_uris { li { code { (u) } } } } }
                dt { "Webhook" } dd { (c.webhook_url.as_deref().unwrap_or("none")) }
                dt { "Dormancy" } dd id="client-dormancy" {
                    @match c.dormancy_days {
                        Some(d) => { "a grant unused for " (d) " days ends (set by the bank for this client)" }
                        None => { "the bank's default period" }
                    }
                }
            }
            @if c.status == "active" {
                h2 { "Edit" }
                form method="post" action=(format!("/developers/clients/{}", c.id)) {
                    (csrf_input(&s.csrf_token))
                    p { label { "Name " input type="text" name="name" value=(c.name) required; } }
                    p { label { "Redirect URIs (one per line) " br; textarea name="redirect_uris" rows="4" cols="60" { (c.redirect_uris.join("\n")) } } }
                    p { label { "Webhook URL (empty: none) " input type="url" name="webhook_url" value=(c.webhook_url.as_deref().unwrap_or_default()); } }
                    @if let Some(jwks) = &c.jwks {
                        p { label { "Public keys (JWK Set; to rotate, add the new key, switch, then remove the old) " br; textarea name="jwks" rows="6" cols="80" { (jwks) } } }
                    }
                    button type="submit" { "Save" }
                }
                @if c.jwks.is_none() {
                    h2 { "Secret" }
                    form method="post" action=(format!("/developers/clients/{}/rotate", c.id)) {
                        (csrf_input(&s.csrf_token))
                        button id="rotate" type="submit" { "Rotate secret" }
                    }
                }
            }
            @if c.webhook_url.is_some() {
                h2 { "Webhook deliveries" }
                p.muted { "Signed per Standard Webhooks (headers webhook-id, webhook-timestamp, webhook-signature). Failed attempts are retried with exponential backoff." }
                @if deliveries.is_empty() {
                    p id="no-deliveries" { "No events yet." }
                } @else {
                    table id="webhook-deliveries" {
                        thead { tr { th { "Event" } th { "Type" } th { "Status" } th { "Attempts" } th { "Last result" } th { "Next attempt / delivered" } th {} } }
                        tbody {
                            @for d in deliveries {
                                tr data-event=(d.id) data-status=(d.status) {
                                    td { code { (d.id) } }
                                    td { (d.event_type) }
                                    td { (d.status) }
                                    td { (d.attempts) }
                                    td {
                                        @if let Some(code) = d.last_status { (code) " " }
                                        (d.last_error.as_deref().unwrap_or_default())
                                    }
                                    td {
                                        @if let Some(t) = d.delivered_at { (t.format("%Y-%m-%d %H:%M:%S UTC")) }
                                        @else if let Some(t) = d.next_attempt_at { (t.format("%Y-%m-%d %H:%M:%S UTC")) }
                                    }
                                    td {
                                        @if d.status == "failed" && c.status == "active" {
                                            form method="post" action=(format!("/developers/clients/{}/webhooks/{}/retry", c.id, d.id)) {
                                                (csrf_input(&s.csrf_token))
                                                button type="submit" { "Send again" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Delete" }
            form method="post" action=(format!("/developers/clients/{}/delete", c.id)) {
                (csrf_input(&s.csrf_token))
                p.muted { "Deleting revokes every grant customers gave this client." }
                button type="submit" { "Delete client" }
            }
        },
    )
}

pub(super) async fn clients_list(p: Data, s: DeveloperSession) -> HttpResponse {
    let id = s.subject_id.clone();
    match read(&p, move |c| clients::list(c, &id)).await {
        Ok(list) => render(
            StatusCode::OK,
            "Clients",
            html! {
                (nav(&s))
                h1 { "Clients" }
                p { a id="new-client" href="/developers/clients/new" { "Create a client" } }
                @if list.is_empty() { p { "No clients yet." } }
                table {
                    @for c in &list {
                        tr {
                            td { a href=(format!("/developers/clients/{}", c.id)) { (c.name) } }
                            td { (c.environment) }
                            td { (c.status) }
                            td { code { (c.id) } }
                        }
                    }
                }
            },
        ),
        Err(e) => error_page(&e, "/developers"),
    }
}

fn new_client_form(
    s: &Session,
    form: Option<&Form>,
    errors: &[String],
    status: StatusCode,
) -> HttpResponse {
    let v = |n: &str| form.map(|f| field(f, n).to_string()).unwrap_or_default();
    let env = form
        .map(|f| field(f, "environment").to_string())
        .unwrap_or_else(|| "sandbox".into());
    render(
        status,
        "New client",
        html! {
            (nav(s))
            h1 { "Create a client" }
            (error_list(errors))
            form method="post" action="/developers/clients/new" {
                (csrf_input(&s.csrf_token))
                p { label { "Name " input type="text" name="name" value=(v("name")) required; } }
                p { label { "Environment "
                    select name="environment" {
                        option value="sandbox" selected[env == "sandbox"] { "sandbox" }
                        option value="production" selected[env == "production"] { "production (requires approved KYC)" }
                    }
                } }
                p { label { "Redirect URIs (one per line) " br; textarea name="redirect_uris" rows="4" cols="60" required { (v("redirect_uris")) } } }
                p { label { "Client authentication "
                    select name="auth_method" {
                        option value="client_secret_basic" { "client_secret_basic" }
                        option value="client_secret_post" selected[v("auth_method") == "client_secret_post"] { "client_secret_post" }
                        option value="private_key_jwt" selected[v("auth_method") == "private_key_jwt"] { "private_key_jwt (FAPI 2.0; no secret)" }
                        option value="tls_client_auth" selected[v("auth_method") == "tls_client_auth"] { "tls_client_auth (mutual TLS, certificate from the bank's authority; no secret)" }
                        option value="self_signed_tls_client_auth" selected[v("auth_method") == "self_signed_tls_client_auth"] { "self_signed_tls_client_auth (mutual TLS, registered certificate; no secret)" }
                    }
                } }
                p { label { "Keys (a JWK Set: {\"keys\": [...]}): public P-256, RSA or Ed25519 keys for private_key_jwt, or certificates (x5c) for self_signed_tls_client_auth " br; textarea name="jwks" rows="6" cols="80" { (v("jwks")) } } }
                p { label { "Certificate subject DN for tls_client_auth (e.g. CN=app,O=Fintech Ltd,C=GB) " input type="text" name="tls_client_auth_subject_dn" size="60" value=(v("tls_client_auth_subject_dn")); } }
                p { label { input type="checkbox" name="dpop_bound_access_tokens" value="on" checked[!v("dpop_bound_access_tokens").is_empty()]; " Always use DPoP (tokens bound to the client's key)" } }
                p { label { input type="checkbox" name="tls_client_certificate_bound_access_tokens" value="on" checked[!v("tls_client_certificate_bound_access_tokens").is_empty()]; " Bind tokens to the client's TLS certificate (mutual TLS)" } }
                fieldset {
                    legend { "Allowed actions" }
                    @for a in ACTIONS {
                        label { input type="checkbox" name=(format!("action_{a}")) value="on" checked[form.is_none() || !v(&format!("action_{a}")).is_empty()]; " " (a) } " "
                    }
                }
                p { label { "Webhook URL (optional) " input type="url" name="webhook_url" value=(v("webhook_url")); } }
                button type="submit" { "Create client" }
            }
        },
    )
}

pub(super) async fn new_client_page(_p: Data, s: DeveloperSession) -> HttpResponse {
    new_client_form(&s, None, &[], StatusCode::OK)
}

/// A form field holding JSON (a JWK Set): `None` when empty.
fn json_field(form: &Form, name: &str) -> crate::error::PortalResult<Option<serde_json::Value>> {
    let raw = field(form, name).trim();
    if raw.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(raw)
        .map(Some)
        .map_err(|e| crate::error::PortalError::field(name, format!("is not JSON: {e}")))
}

/// One line per registered key: its type, kid and thumbprint.
fn key_labels(jwks: &serde_json::Value) -> Vec<String> {
    // A self_signed_tls_client_auth client's set holds certificates.
    if let Ok(certificates) = platform::web::mtls::registered_certificates(jwks) {
        return certificates
            .iter()
            .map(|t| format!("certificate x5t#S256={t}"))
            .collect();
    }
    match grants::jws::JwkSet::parse(jwks) {
        Ok(set) => set
            .keys()
            .iter()
            .map(|k| {
                format!(
                    "{} kid={} thumbprint={}",
                    k.alg(),
                    k.kid().unwrap_or("-"),
                    k.thumbprint()
                )
            })
            .collect(),
        Err(e) => vec![format!("unreadable: {e}")],
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

pub(super) async fn new_client_submit(post: Posted<Developer>) -> HttpResponse {
    let form = &post.fields;
    let actions: Vec<String> = ACTIONS
        .iter()
        .filter(|a| !field(form, &format!("action_{a}")).is_empty())
        .map(|a| a.to_string())
        .collect();
    let webhook = field(form, "webhook_url").trim();
    let parsed = NewClient::parse(
        field(form, "name"),
        field(form, "environment"),
        &lines(field(form, "redirect_uris")),
        Some(field(form, "auth_method")).filter(|m| !m.is_empty()),
        Some(&actions),
        (!webhook.is_empty()).then_some(webhook),
    );
    let parsed = parsed.and_then(|new| {
        let jwks = json_field(form, "jwks")?;
        let dn = field(form, "tls_client_auth_subject_dn");
        new.with_keys(&clients::KeyMaterial {
            jwks: jwks.as_ref(),
            dpop_bound_access_tokens: !field(form, "dpop_bound_access_tokens").is_empty(),
            tls_client_auth_subject_dn: (!dn.trim().is_empty()).then_some(dn),
            tls_client_certificate_bound_access_tokens: !field(
                form,
                "tls_client_certificate_bound_access_tokens",
            )
            .is_empty(),
        })
    });
    let key = post.platform.master_key.clone();
    let result = match parsed {
        Ok(new) => {
            post.write(move |c, dev, now| clients::create(c, &key, dev, &new, now))
                .await
        }
        Err(e) => Err(e),
    };
    let s = &post.session;
    match result {
        Ok(created) => client_detail(
            s,
            &created.client,
            created.client_secret.as_ref().map(|s| s.expose()),
            created.webhook_secret.as_ref().map(|w| w.expose()),
            &[],
            StatusCode::CREATED,
        ),
        Err(e) => new_client_form(s, Some(form), &messages(&e), status_of(&e)),
    }
}

/// The client's page, where its forms go back to.
fn client_page(id: &str) -> String {
    format!("/developers/clients/{id}")
}

/// The client's page after a change, with a secret shown once.
fn client_changed(
    s: &Session,
    c: &ClientView,
    secret: Option<&str>,
    webhook_secret: Option<&str>,
) -> HttpResponse {
    client_detail(s, c, secret, webhook_secret, &[], StatusCode::OK)
}

pub(super) async fn client_get(
    p: Data,
    path: web::Path<String>,
    s: DeveloperSession,
) -> HttpResponse {
    let dev = s.subject_id.clone();
    let id = path.into_inner();
    let got = read(&p, move |c| {
        let client = clients::get(c, &dev, &id)?;
        let deliveries = clients::webhook_deliveries(c, &dev, &id, 50)?;
        Ok((client, deliveries))
    })
    .await;
    match got {
        Ok((c, deliveries)) => client_detail(&s, &c, None, None, &deliveries, StatusCode::OK),
        Err(e) => error_page(&e, "/developers/clients"),
    }
}

pub(super) async fn webhook_retry(
    path: web::Path<(String, String)>,
    post: Posted<Developer>,
) -> HttpResponse {
    let (id, event) = path.into_inner();
    let back = client_page(&id);
    let done = post
        .write(move |c, dev, now| clients::redeliver(c, dev, &id, &event, now))
        .await;
    respond(done, &back, |()| see_other(&back))
}

pub(super) async fn client_update(
    path: web::Path<String>,
    post: Posted<Developer>,
) -> HttpResponse {
    let form = &post.fields;
    let id = path.into_inner();
    let back = client_page(&id);
    let webhook = field(form, "webhook_url").trim().to_string();
    let jwks = match json_field(form, "jwks") {
        Ok(j) => j,
        Err(e) => return error_page(&e, &back),
    };
    let change = ClientUpdate {
        name: Some(field(form, "name").to_string()),
        redirect_uris: Some(lines(field(form, "redirect_uris"))),
        jwks,
        webhook_url: Some((!webhook.is_empty()).then_some(webhook)),
    };
    let key = post.platform.master_key.clone();
    let updated = post
        .write(move |c, dev, now| clients::update(c, &key, dev, &id, &change, now))
        .await;
    respond(updated, &back, |(c, webhook_secret)| {
        let webhook_secret = webhook_secret.as_ref().map(|w| w.expose());
        client_changed(&post.session, &c, None, webhook_secret)
    })
}

pub(super) async fn client_rotate(
    path: web::Path<String>,
    post: Posted<Developer>,
) -> HttpResponse {
    let back = client_page(&path);
    let rotated = post
        .write(move |c, dev, now| clients::rotate_secret(c, dev, &path, now))
        .await;
    respond(rotated, &back, |r| {
        let secret = r.client_secret.as_ref().map(|s| s.expose());
        client_changed(&post.session, &r.client, secret, None)
    })
}

pub(super) async fn client_delete(
    path: web::Path<String>,
    post: Posted<Developer>,
) -> HttpResponse {
    let back = client_page(&path);
    let deleted = post
        .write_revoking(move |c, r, dev, now| clients::delete(c, r, dev, &path, now))
        .await;
    respond(deleted, &back, |()| see_other("/developers/clients"))
}
