//! Server-rendered developer pages under `/developers` (maud escapes every value; no scripts).
//! Every form carries a CSRF token: the session's for logged-in forms, a double-submit cookie
//! for sign-up and login. A failed check is a 403 and changes nothing.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::{Markup, html};
use platform::Platform;
use platform::problem::ApiError;
use platform::session::{self, LoginCsrf, Session, SessionKind};
use platform::web::{clear_session_cookie, login_csrf_cookie, page, session_cookie};

use crate::accounts::{self, SignUp};
use crate::auth::{client_addr, page_session};
use crate::clients::{self, ClientUpdate, ClientView, NewClient};
use crate::domain::ACTIONS;
use crate::error::{PortalError, read, write, write_revoking};
use crate::kyc::{self, DOCUMENT_KINDS, KycDetails, KycDocument, KycRecord};

pub(crate) type Form = web::Form<HashMap<String, String>>;
type Data = web::Data<Platform>;

/// Document rows on the KYC form.
const DOC_ROWS: usize = 3;

pub(crate) fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> &'a str {
    form.get(name).map(String::as_str).unwrap_or_default()
}

pub(crate) fn render(status: StatusCode, title: &str, body: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page(title, body).into_string())
}

pub(crate) fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location.to_string()))
        .finish()
}

pub(crate) fn csrf_input(token: &str) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(token); }
}

/// An error page with a status that matches the failure, and a way back.
pub(crate) fn error_page(err: &PortalError, back: &str) -> HttpResponse {
    let api: ApiError = match err {
        PortalError::Validation(v) => ApiError::Validation(v.clone()),
        PortalError::InvalidCredentials => ApiError::Unauthorized,
        PortalError::Forbidden(m) => ApiError::Forbidden(m.clone()),
        PortalError::NotFound(w) => ApiError::NotFound(w),
        PortalError::Conflict(m) => ApiError::Conflict(m.clone()),
        PortalError::RateLimited(s) => ApiError::TooManyRequests {
            retry_after_secs: *s,
        },
        other => {
            tracing::error!(error = ?other, "portal page failed");
            ApiError::internal(std::io::Error::other("portal page failed"))
        }
    };
    let p = api.to_problem();
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST);
    render(
        status,
        &p.title,
        html! {
            h1 { (p.title) }
            @if p.errors.is_empty() {
                p.error { (p.detail.unwrap_or_default()) }
            } @else {
                ul.error { @for e in &p.errors { li { (e.field) ": " (e.message) } } }
            }
            p { a href=(back) { "Back" } }
        },
    )
}

pub(crate) fn csrf_refused(back: &str) -> HttpResponse {
    render(
        StatusCode::FORBIDDEN,
        "Forbidden",
        html! {
            h1 { "Forbidden" }
            p.error { "The form's security token is missing or wrong. Reload the page and try again." }
            p { a href=(back) { "Back" } }
        },
    )
}

/// The pre-login double-submit token: the cookie's value if it has one, else a new one (and the
/// cookie to set).
pub(crate) fn login_csrf(
    p: &Platform,
    req: &HttpRequest,
) -> (String, Option<actix_web::cookie::Cookie<'static>>) {
    match req.cookie(LoginCsrf::COOKIE) {
        Some(c) if c.value().len() >= 16 && c.value().len() <= 100 => (c.value().to_string(), None),
        _ => {
            let v = LoginCsrf::generate();
            let cookie = login_csrf_cookie(p, &v);
            (v, Some(cookie))
        }
    }
}

pub(crate) fn login_csrf_ok(req: &HttpRequest, form: &HashMap<String, String>) -> bool {
    let cookie = req.cookie(LoginCsrf::COOKIE);
    LoginCsrf::check(
        cookie.as_ref().map(|c| c.value()),
        field(form, "csrf_token"),
    )
}

pub(crate) fn with_cookie(
    mut resp: HttpResponse,
    cookie: Option<actix_web::cookie::Cookie<'static>>,
) -> HttpResponse {
    if let Some(c) = cookie {
        let _ = resp.add_cookie(&c);
    }
    resp
}

fn nav(s: &Session) -> Markup {
    html! {
        nav {
            a href="/developers" { "Dashboard" } " · "
            a href="/developers/kyc" { "KYC" } " · "
            a href="/developers/clients" { "Clients" } " · "
            form.inline method="post" action="/developers/logout" style="display:inline" {
                (csrf_input(&s.csrf_token))
                button type="submit" { "Log out" }
            }
        }
    }
}

pub(crate) fn unavailable(e: &ApiError) -> HttpResponse {
    tracing::error!(error = ?e, "session lookup failed");
    render(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        html! { h1 { "Temporarily unavailable" } p { "Please try again in a moment." } },
    )
}

async fn session(p: &Platform, req: &HttpRequest) -> Result<Option<Session>, HttpResponse> {
    page_session(p, req, SessionKind::Developer)
        .await
        .map_err(|e| unavailable(&e))
}

/// Resolves the logged-in developer, or the response to send instead (redirect to login).
macro_rules! require_session {
    ($p:expr, $req:expr) => {
        match session(&$p, &$req).await {
            Ok(Some(s)) => s,
            Ok(None) => return see_other("/developers/login"),
            Err(resp) => return resp,
        }
    };
}

/// Checks the session's CSRF token on a posted form.
macro_rules! require_csrf {
    ($s:expr, $form:expr, $back:expr) => {
        if !$s.check_csrf(field(&$form, "csrf_token")) {
            return csrf_refused($back);
        }
    };
}

// ----- landing, sign up, log in -----

async fn index(p: Data, req: HttpRequest) -> HttpResponse {
    let Ok(Some(s)) = session(&p, &req).await else {
        return render(
            StatusCode::OK,
            "Developer portal",
            html! {
                h1 { "Developer portal" }
                p { "Register your app, pass KYC, and create sandbox and production OAuth clients." }
                ul.links {
                    li { a href="/developers/signup" { "Sign up" } }
                    li { a href="/developers/login" { "Log in" } }
                    li { a href="/developers/staff" { "Staff: KYC review" } }
                    li { a href="/docs/" { "API documentation" } }
                }
            },
        );
    };
    let id = s.subject_id.clone();
    let cipher = p.master_key.cipher(kyc::PII_KEY);
    let r = read(&p, move |c| {
        let dev = accounts::developer(c, &id)?;
        let kyc = kyc::for_developer(c, &cipher, &id)?;
        let n = clients::list(c, &id)?.len();
        Ok((dev, kyc.map(|k| k.status.as_str()), n))
    })
    .await;
    match r {
        Ok((dev, kyc_status, n)) => render(
            StatusCode::OK,
            "Developer portal",
            html! {
                (nav(&s))
                h1 { "Welcome, " (dev.display_name) }
                p { "Signed in as " strong { (dev.email) } }
                p { "KYC status: " strong id="kyc-status" { (kyc_status.unwrap_or("not started")) } " - " a href="/developers/kyc" { "KYC details" } }
                p { (n) " client(s) - " a href="/developers/clients" { "manage clients" } }
            },
        ),
        Err(e) => error_page(&e, "/developers"),
    }
}

fn signup_form(csrf: &str, email: &str, name: &str, errors: &[String]) -> Markup {
    html! {
        h1 { "Create a developer account" }
        @if !errors.is_empty() { ul.error { @for e in errors { li { (e) } } } }
        form method="post" action="/developers/signup" {
            (csrf_input(csrf))
            p { label { "Email " input type="email" name="email" value=(email) required; } }
            p { label { "Your name " input type="text" name="display_name" value=(name) required; } }
            p { label { "Password (12 characters or more) " input type="password" name="password" minlength="12" required; } }
            button type="submit" { "Sign up" }
        }
        p { "Already registered? " a href="/developers/login" { "Log in" } }
    }
}

async fn signup_page(p: Data, req: HttpRequest) -> HttpResponse {
    let (csrf, cookie) = login_csrf(&p, &req);
    with_cookie(
        render(StatusCode::OK, "Sign up", signup_form(&csrf, "", "", &[])),
        cookie,
    )
}

pub(crate) fn messages(e: &PortalError) -> Vec<String> {
    match e {
        PortalError::Validation(v) => v
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect(),
        other => vec![other.to_string()],
    }
}

pub(crate) fn status_of(e: &PortalError) -> StatusCode {
    match e {
        PortalError::Validation(_) => StatusCode::BAD_REQUEST,
        PortalError::InvalidCredentials => StatusCode::UNAUTHORIZED,
        PortalError::Forbidden(_) => StatusCode::FORBIDDEN,
        PortalError::NotFound(_) => StatusCode::NOT_FOUND,
        PortalError::Conflict(_) => StatusCode::CONFLICT,
        PortalError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        PortalError::Storage(platform::storage::StorageError::Unavailable(_)) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) async fn start_session(
    p: &Platform,
    kind: SessionKind,
    subject: String,
) -> Result<platform::crypto::PlainToken, PortalError> {
    let now = p.now();
    write(p, move |c| Ok(session::create(c, kind, &subject, now)?.0)).await
}

async fn signup_submit(p: Data, req: HttpRequest, form: Form) -> HttpResponse {
    if !login_csrf_ok(&req, &form) {
        return csrf_refused("/developers/signup");
    }
    let (csrf, _) = login_csrf(&p, &req);
    let email = field(&form, "email");
    let name = field(&form, "display_name");
    let result = match SignUp::parse(email, field(&form, "password"), name) {
        Ok(input) => accounts::sign_up(&p, input, &client_addr(&req)).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(dev) => match start_session(&p, SessionKind::Developer, dev.id).await {
            Ok(token) => with_cookie(
                see_other("/developers/kyc"),
                Some(session_cookie(&p, SessionKind::Developer, &token)),
            ),
            Err(e) => error_page(&e, "/developers/login"),
        },
        Err(e) => render(
            status_of(&e),
            "Sign up",
            signup_form(&csrf, email, name, &messages(&e)),
        ),
    }
}

pub(crate) fn login_form(
    action: &str,
    csrf: &str,
    name_field: &str,
    label: &str,
    value: &str,
    error: Option<&str>,
) -> Markup {
    html! {
        @if let Some(e) = error { p.error { (e) } }
        form method="post" action=(action) {
            (csrf_input(csrf))
            p { label { (label) " " input type="text" name=(name_field) value=(value) required; } }
            p { label { "Password " input type="password" name="password" required; } }
            button type="submit" { "Log in" }
        }
    }
}

async fn login_page(p: Data, req: HttpRequest) -> HttpResponse {
    let (csrf, cookie) = login_csrf(&p, &req);
    with_cookie(
        render(
            StatusCode::OK,
            "Developer log in",
            html! {
                h1 { "Developer log in" }
                (login_form("/developers/login", &csrf, "email", "Email", "", None))
                p { "No account yet? " a href="/developers/signup" { "Sign up" } }
            },
        ),
        cookie,
    )
}

async fn login_submit(p: Data, req: HttpRequest, form: Form) -> HttpResponse {
    if !login_csrf_ok(&req, &form) {
        return csrf_refused("/developers/login");
    }
    let email = field(&form, "email");
    match accounts::login(
        &p,
        SessionKind::Developer,
        email,
        field(&form, "password"),
        &client_addr(&req),
    )
    .await
    {
        Ok(l) => with_cookie(
            see_other("/developers"),
            Some(session_cookie(&p, SessionKind::Developer, &l.token)),
        ),
        Err(e) => {
            let (csrf, _) = login_csrf(&p, &req);
            let msg = match &e {
                PortalError::InvalidCredentials => "Wrong email or password.".to_string(),
                other => messages(other).join("; "),
            };
            render(
                status_of(&e),
                "Developer log in",
                html! {
                    h1 { "Developer log in" }
                    (login_form("/developers/login", &csrf, "email", "Email", email, Some(&msg)))
                },
            )
        }
    }
}

async fn logout(p: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let s = require_session!(p, req);
    require_csrf!(s, form, "/developers");
    let now = p.now();
    if let Err(e) = write(&p, move |c| accounts::logout(c, &s, now)).await {
        return error_page(&e, "/developers");
    }
    with_cookie(
        see_other("/developers/login"),
        Some(clear_session_cookie(&p, SessionKind::Developer)),
    )
}

// ----- KYC -----

fn kyc_page(
    s: &Session,
    record: Option<&KycRecord>,
    draft: Option<&HashMap<String, String>>,
    errors: &[String],
    status: StatusCode,
) -> HttpResponse {
    let d: Option<&KycDetails> = record.map(|r| &r.details);
    let val = |name: &str, from_record: Option<&str>| -> String {
        match draft {
            Some(f) => field(f, name).to_string(),
            None => from_record.unwrap_or_default().to_string(),
        }
    };
    let editable = record.is_none_or(|r| r.status.editable());
    let doc_val = |i: usize, part: &str| -> String {
        match draft {
            Some(f) => field(f, &format!("doc{i}_{part}")).to_string(),
            None => d
                .and_then(|d| d.documents.get(i))
                .map(|x| match part {
                    "kind" => x.kind.clone(),
                    "filename" => x.filename.clone(),
                    _ => x.sha256.clone(),
                })
                .unwrap_or_default(),
        }
    };
    render(
        status,
        "KYC",
        html! {
            (nav(s))
            h1 { "Know your customer" }
            @match record {
                None => p { "Status: " strong id="kyc-status" { "not started" } },
                Some(r) => {
                    p { "Status: " strong id="kyc-status" { (r.status.as_str()) } " (review round " (r.round) ")" }
                    @if let Some(reason) = &r.decision_reason { p { "Reason from our staff: " em id="kyc-reason" { (reason) } } }
                }
            }
            @if !errors.is_empty() { ul.error { @for e in errors { li { (e) } } } }
            @if editable {
                form method="post" action="/developers/kyc" {
                    (csrf_input(&s.csrf_token))
                    p { label { "Legal name " input type="text" name="legal_name" value=(val("legal_name", d.map(|d| d.legal_name.as_str()))) required; } }
                    p { label { "Registration number " input type="text" name="registration_number" value=(val("registration_number", d.map(|d| d.registration_number.as_str()))) required; } }
                    p { label { "Country (ISO 3166 alpha-2) " input type="text" name="country" maxlength="2" value=(val("country", d.map(|d| d.country.as_str()))) required; } }
                    p { label { "Registered address " textarea name="address" rows="3" required { (val("address", d.map(|d| d.address.as_str()))) } } }
                    p { label { "Contact person " input type="text" name="contact_person" value=(val("contact_person", d.map(|d| d.contact_person.as_str()))) required; } }
                    fieldset {
                        legend { "Supporting documents (metadata; send files through the secure channel)" }
                        @for i in 0..DOC_ROWS {
                            p {
                                select name=(format!("doc{i}_kind")) {
                                    option value="" { "-" }
                                    @for k in DOCUMENT_KINDS {
                                        option value=(k) selected[doc_val(i, "kind") == k] { (k) }
                                    }
                                }
                                " " input type="text" name=(format!("doc{i}_filename")) placeholder="file name" value=(doc_val(i, "filename"));
                                " " input type="text" name=(format!("doc{i}_sha256")) placeholder="SHA-256 (hex)" size="66" value=(doc_val(i, "sha256"));
                            }
                        }
                    }
                    button type="submit" name="action" value="save" { "Save draft" }
                    " "
                    button type="submit" name="action" value="submit" { "Save and submit for review" }
                }
            } @else if let Some(d) = d {
                dl {
                    dt { "Legal name" } dd { (d.legal_name) }
                    dt { "Registration number" } dd { (d.registration_number) }
                    dt { "Country" } dd { (d.country) }
                    dt { "Address" } dd { (d.address) }
                    dt { "Contact person" } dd { (d.contact_person) }
                    dt { "Documents" } dd { ul { @for doc in &d.documents { li { (doc.kind) ": " (doc.filename) } } } }
                }
            }
        },
    )
}

async fn kyc_get(p: Data, req: HttpRequest) -> HttpResponse {
    let s = require_session!(p, req);
    let cipher = p.master_key.cipher(kyc::PII_KEY);
    let id = s.subject_id.clone();
    match read(&p, move |c| kyc::for_developer(c, &cipher, &id)).await {
        Ok(r) => kyc_page(&s, r.as_ref(), None, &[], StatusCode::OK),
        Err(e) => error_page(&e, "/developers"),
    }
}

async fn kyc_post(p: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let s = require_session!(p, req);
    require_csrf!(s, form, "/developers/kyc");
    let docs: Vec<KycDocument> = (0..DOC_ROWS)
        .filter(|i| {
            !(field(&form, &format!("doc{i}_kind")).is_empty()
                && field(&form, &format!("doc{i}_filename")).trim().is_empty()
                && field(&form, &format!("doc{i}_sha256")).trim().is_empty())
        })
        .map(|i| KycDocument {
            kind: field(&form, &format!("doc{i}_kind")).to_string(),
            filename: field(&form, &format!("doc{i}_filename")).to_string(),
            sha256: field(&form, &format!("doc{i}_sha256")).to_string(),
        })
        .collect();
    let submit = field(&form, "action") == "submit";
    let cipher = p.master_key.cipher(kyc::PII_KEY);
    let id = s.subject_id.clone();
    let now = p.now();
    let parsed = KycDetails::parse(
        field(&form, "legal_name"),
        field(&form, "registration_number"),
        field(&form, "country"),
        field(&form, "address"),
        field(&form, "contact_person"),
        &docs,
    );
    let result = match parsed {
        Ok(details) => {
            write(&p, move |c| {
                let r = kyc::save(c, &cipher, &id, &details, now)?;
                if submit {
                    kyc::submit(c, &cipher, &id, now)
                } else {
                    Ok(r)
                }
            })
            .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => see_other("/developers/kyc"),
        Err(e) => {
            let cipher = p.master_key.cipher(kyc::PII_KEY);
            let id = s.subject_id.clone();
            let current = read(&p, move |c| kyc::for_developer(c, &cipher, &id))
                .await
                .ok()
                .flatten();
            kyc_page(
                &s,
                current.as_ref(),
                Some(&form),
                &messages(&e),
                status_of(&e),
            )
        }
    }
}

// ----- clients -----

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
                dt { "Authentication" } dd { (c.auth_method) }
                dt { "Allowed actions" } dd { (c.allowed_actions.join(", ")) }
                dt { "Redirect URIs" } dd { ul { @for u in &c.redirect_uris { li { code { (u) } } } } }
                dt { "Webhook" } dd { (c.webhook_url.as_deref().unwrap_or("none")) }
            }
            @if c.status == "active" {
                h2 { "Edit" }
                form method="post" action=(format!("/developers/clients/{}", c.id)) {
                    (csrf_input(&s.csrf_token))
                    p { label { "Name " input type="text" name="name" value=(c.name) required; } }
                    p { label { "Redirect URIs (one per line) " br; textarea name="redirect_uris" rows="4" cols="60" { (c.redirect_uris.join("\n")) } } }
                    p { label { "Webhook URL (empty: none) " input type="url" name="webhook_url" value=(c.webhook_url.as_deref().unwrap_or_default()); } }
                    button type="submit" { "Save" }
                }
                h2 { "Secret" }
                form method="post" action=(format!("/developers/clients/{}/rotate", c.id)) {
                    (csrf_input(&s.csrf_token))
                    button id="rotate" type="submit" { "Rotate secret" }
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

async fn clients_list(p: Data, req: HttpRequest) -> HttpResponse {
    let s = require_session!(p, req);
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
    form: Option<&HashMap<String, String>>,
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
            @if !errors.is_empty() { ul.error { @for e in errors { li { (e) } } } }
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
                    }
                } }
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

async fn new_client_page(p: Data, req: HttpRequest) -> HttpResponse {
    let s = require_session!(p, req);
    new_client_form(&s, None, &[], StatusCode::OK)
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

async fn new_client_submit(p: Data, req: HttpRequest, form: Form) -> HttpResponse {
    let s = require_session!(p, req);
    require_csrf!(s, form, "/developers/clients/new");
    let actions: Vec<String> = ACTIONS
        .iter()
        .filter(|a| !field(&form, &format!("action_{a}")).is_empty())
        .map(|a| a.to_string())
        .collect();
    let webhook = field(&form, "webhook_url").trim();
    let parsed = NewClient::parse(
        field(&form, "name"),
        field(&form, "environment"),
        &lines(field(&form, "redirect_uris")),
        Some(field(&form, "auth_method")).filter(|m| !m.is_empty()),
        Some(&actions),
        (!webhook.is_empty()).then_some(webhook),
    );
    let key = p.master_key.clone();
    let dev = s.subject_id.clone();
    let now = p.now();
    let result = match parsed {
        Ok(new) => write(&p, move |c| clients::create(c, &key, &dev, &new, now)).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(created) => client_detail(
            &s,
            &created.client,
            Some(created.client_secret.expose()),
            created.webhook_secret.as_ref().map(|w| w.expose()),
            &[],
            StatusCode::CREATED,
        ),
        Err(e) => new_client_form(&s, Some(&form), &messages(&e), status_of(&e)),
    }
}

async fn client_get(p: Data, req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let s = require_session!(p, req);
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

async fn webhook_retry(
    p: Data,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    form: Form,
) -> HttpResponse {
    let s = require_session!(p, req);
    let (id, event) = path.into_inner();
    let back = format!("/developers/clients/{id}");
    require_csrf!(s, form, &back);
    let dev = s.subject_id.clone();
    let now = p.now();
    match write(&p, move |c| clients::redeliver(c, &dev, &id, &event, now)).await {
        Ok(()) => see_other(&back),
        Err(e) => error_page(&e, &back),
    }
}

async fn client_update(
    p: Data,
    req: HttpRequest,
    path: web::Path<String>,
    form: Form,
) -> HttpResponse {
    let s = require_session!(p, req);
    let id = path.into_inner();
    let back = format!("/developers/clients/{id}");
    require_csrf!(s, form, &back);
    let webhook = field(&form, "webhook_url").trim().to_string();
    let change = ClientUpdate {
        name: Some(field(&form, "name").to_string()),
        redirect_uris: Some(lines(field(&form, "redirect_uris"))),
        webhook_url: Some((!webhook.is_empty()).then_some(webhook)),
    };
    let key = p.master_key.clone();
    let dev = s.subject_id.clone();
    let now = p.now();
    match write(&p, move |c| {
        clients::update(c, &key, &dev, &id, &change, now)
    })
    .await
    {
        Ok((c, webhook_secret)) => client_detail(
            &s,
            &c,
            None,
            webhook_secret.as_ref().map(|w| w.expose()),
            &[],
            StatusCode::OK,
        ),
        Err(e) => error_page(&e, &back),
    }
}

async fn client_rotate(
    p: Data,
    req: HttpRequest,
    path: web::Path<String>,
    form: Form,
) -> HttpResponse {
    let s = require_session!(p, req);
    let id = path.into_inner();
    let back = format!("/developers/clients/{id}");
    require_csrf!(s, form, &back);
    let dev = s.subject_id.clone();
    let now = p.now();
    match write(&p, move |c| clients::rotate_secret(c, &dev, &id, now)).await {
        Ok(r) => client_detail(
            &s,
            &r.client,
            Some(r.client_secret.expose()),
            None,
            &[],
            StatusCode::OK,
        ),
        Err(e) => error_page(&e, &back),
    }
}

async fn client_delete(
    p: Data,
    req: HttpRequest,
    path: web::Path<String>,
    form: Form,
) -> HttpResponse {
    let s = require_session!(p, req);
    let id = path.into_inner();
    let back = format!("/developers/clients/{id}");
    require_csrf!(s, form, &back);
    let dev = s.subject_id.clone();
    let now = p.now();
    match write_revoking(&p, move |c, r| clients::delete(c, r, &dev, &id, now)).await {
        Ok(()) => see_other("/developers/clients"),
        Err(e) => error_page(&e, &back),
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/developers").route(web::get().to(index)))
        .service(
            web::resource("/developers/signup")
                .route(web::get().to(signup_page))
                .route(web::post().to(signup_submit)),
        )
        .service(
            web::resource("/developers/login")
                .route(web::get().to(login_page))
                .route(web::post().to(login_submit)),
        )
        .service(web::resource("/developers/logout").route(web::post().to(logout)))
        .service(
            web::resource("/developers/kyc")
                .route(web::get().to(kyc_get))
                .route(web::post().to(kyc_post)),
        )
        .service(web::resource("/developers/clients").route(web::get().to(clients_list)))
        .service(
            web::resource("/developers/clients/new")
                .route(web::get().to(new_client_page))
                .route(web::post().to(new_client_submit)),
        )
        .service(
            web::resource("/developers/clients/{client_id}")
                .route(web::get().to(client_get))
                .route(web::post().to(client_update)),
        )
        .service(
            web::resource("/developers/clients/{client_id}/rotate")
                .route(web::post().to(client_rotate)),
        )
        .service(
            web::resource("/developers/clients/{client_id}/webhooks/{event_id}/retry")
                .route(web::post().to(webhook_retry)),
        )
        .service(
            web::resource("/developers/clients/{client_id}/delete")
                .route(web::post().to(client_delete)),
        );
}
