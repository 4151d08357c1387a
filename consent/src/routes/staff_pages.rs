//! The staff page for elevated credentials (`/developers/staff/credentials`): ask to see a
//! customer's grants (or, from a KYC submission's page, to read it outside review), take the
//! credential of an approved request, use it, and see and revoke one's live credentials with the
//! time they have left. The rules are [`crate::staff_access`]'s;
//! approving is on the portal's approvals page.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, post, web};
use maud::{Markup, html};
use platform::problem::ApiError;
use platform::web::auth::{CsrfForm, Staff, StaffSession, message_page};
use platform::web::page;

use crate::routes::State;
use crate::staff_access::{self, StaffAccessCategory};

const PAGE: &str = "/developers/staff/credentials";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(credentials_page)
        .service(ask)
        .service(ask_kyc)
        .service(take)
        .service(use_credential)
        .service(use_kyc_credential)
        .service(revoke);
}

fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(token); }
}

fn render(title: &str, body: Markup) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(page(title, body).into_string())
}

fn nav() -> Markup {
    html! {
        nav {
            a href="/developers/staff" { "KYC queue" } " · "
            a href="/developers/staff/approvals" { "Approvals" } " · "
            a href=(PAGE) { "Credentials" }
        }
    }
}

/// A refusal as the page the staff member sees, with a way back.
fn refused(e: ApiError) -> HttpResponse {
    let p = e.to_problem();
    let detail = if p.errors.is_empty() {
        p.detail.unwrap_or_default()
    } else {
        p.errors
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join("; ")
    };
    message_page(
        StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST),
        &p.title,
        &detail,
        Some(PAGE),
    )
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", to))
        .finish()
}

#[get("/developers/staff/credentials")]
async fn credentials_page(state: State, s: StaffSession) -> HttpResponse {
    let overview = match staff_access::overview(&state.oauth, s.subject_id.clone()).await {
        Ok(o) => o,
        Err(e) => return refused(e),
    };
    let now = state.platform.now();
    let window = staff_access::redeem_window(&state.oauth).num_minutes();
    let lasts = state
        .platform
        .settings
        .security
        .staff_credential_ttl
        .as_chrono()
        .num_minutes();
    render(
        "Elevated credentials",
        html! {
            (nav())
            h1 { "Elevated credentials" }
            h2 { "Ask to see a customer's grants" }
            p { "A colleague approves it on the approvals page; then take the credential here within " (window) " minutes. It lasts " (lasts) " minutes; every use is audited and shown to the customer." }
            form method="post" action="/developers/staff/credentials/requests" {
                (csrf(&s.csrf_token))
                p { label { "Customer id " input type="text" name="customer_id" required maxlength="100"; } }
                p { label { "Why "
                    select name="category" {
                        @for c in StaffAccessCategory::VALUES { option value=(c) { (c.replace('_', " ")) } }
                    } } }
                p { label { "Case reference " input type="text" name="reference" required maxlength="100"; } }
                p { label { "Justification " input type="text" name="justification" minlength="10" required size="60"; } }
                button type="submit" { "Ask for access" }
            }
            h2 { "Approved, ready to take" }
            @if overview.ready.is_empty() { p.muted #ready-none { "Nothing approved for you right now." } }
            ul #ready {
                @for r in &overview.ready {
                    li {
                        code { (r.action.as_str()) } " on " (r.target.kind) " " code { (r.target.id) } " "
                        form.inline method="post" action="/developers/staff/credentials/take" {
                            (csrf(&s.csrf_token))
                            input type="hidden" name="request_id" value=(r.id);
                            button type="submit" { "Take the credential" }
                        }
                    }
                }
            }
            h2 { "My live credentials" }
            table #live {
                @for c in &overview.live {
                    tr {
                        td { code { (c.action) } " on " (c.target_type) " " code { (c.target_id) } }
                        td.left { ((c.expires_at - now).num_minutes().max(0)) " min left" }
                        td {
                            form method="post" action="/developers/staff/credentials/revoke" {
                                (csrf(&s.csrf_token))
                                input type="hidden" name="credential_id" value=(c.id);
                                button type="submit" { "Revoke" }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The reason a request form states, and its target (the form field `target`).
fn asked(form: &CsrfForm<Staff>, target: &str) -> (String, String, staff_access::Reason) {
    let field = |n: &str| form.field(n).to_string();
    let reason = staff_access::Reason {
        justification: field("justification"),
        category: field("category"),
        reference: field("reference"),
    };
    let staff = form.session.subject_id.clone();
    (staff, field(target).trim().to_string(), reason)
}

/// Where a request goes next: to the approvals page, where a colleague decides it.
fn opened<T>(r: Result<T, ApiError>) -> HttpResponse {
    match r {
        Ok(_) => see_other("/developers/staff/approvals"),
        Err(e) => refused(e),
    }
}

#[post("/developers/staff/credentials/requests")]
async fn ask(state: State, form: CsrfForm<Staff>) -> HttpResponse {
    let (staff, customer, reason) = asked(&form, "customer_id");
    opened(staff_access::request(&state.oauth, staff, customer, reason).await)
}

/// Where a credential for resources of `kind` is used on these pages: the form's action, the
/// field naming the resource, the button (none for key rotation, which is an API call).
fn use_form(kind: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match kind {
        "customer" => Some((
            "/developers/staff/credentials/use",
            "customer_id",
            "View the customer's grants now",
        )),
        "kyc_submission" => Some((
            "/developers/staff/credentials/use-kyc",
            "submission_id",
            "Read the KYC submission now",
        )),
        _ => None,
    }
}

#[post("/developers/staff/credentials/take")]
async fn take(state: State, form: CsrfForm<Staff>) -> HttpResponse {
    let request = form.field("request_id").to_string();
    let issued =
        match staff_access::issue(&state.oauth, form.session.subject_id.clone(), request).await {
            Ok(i) => i,
            Err(e) => return refused(e),
        };
    render(
        "Credential",
        html! {
            (nav())
            h1 { "Your credential" }
            p { "Shown once. It allows " code { (issued.action) } " on " (issued.resource_type) " "
                code { (issued.resource_id) } " until " (issued.expires_at.format("%H:%M UTC")) "." }
            p { "For the API, send it as " code { "X-Staff-Credential" } " with your staff token:" }
            textarea #credential readonly rows="4" cols="80" { (issued.credential) }
            @if let Some((action, field, label)) = use_form(&issued.resource_type) {
                form method="post" action=(action) {
                    (csrf(&form.session.csrf_token))
                    input type="hidden" name="credential" value=(issued.credential);
                    input type="hidden" name=(field) value=(issued.resource_id);
                    button type="submit" { (label) }
                }
            }
        },
    )
}

#[post("/developers/staff/credentials/use")]
async fn use_credential(state: State, form: CsrfForm<Staff>) -> HttpResponse {
    let customer = form.field("customer_id").to_string();
    let grants = match staff_access::customer_grants(
        &state.oauth,
        form.session.subject_id.clone(),
        customer.clone(),
        form.field("credential"),
    )
    .await
    {
        Ok(g) => g,
        Err(e) => return refused(e),
    };
    render(
        "Customer's grants",
        html! {
            (nav())
            h1 { "Grants of " code { (customer) } }
            p.muted { "This read is in the audit log and in the customer's history." }
            table #grants {
                tr { th { "App" } th { "Operator" } th { "Status" } th { "Expires" } }
                @for g in &grants {
                    tr {
                        td { (g.client_name) }
                        td { (g.operator_label) }
                        td.status { (g.status) }
                        td { (g.expires_at.format("%Y-%m-%d")) }
                    }
                }
            }
        },
    )
}

#[post("/developers/staff/credentials/kyc-requests")]
async fn ask_kyc(state: State, form: CsrfForm<Staff>) -> HttpResponse {
    let (staff, submission, reason) = asked(&form, "submission_id");
    opened(staff_access::kyc::request(&state.oauth, staff, submission, reason).await)
}

#[post("/developers/staff/credentials/use-kyc")]
async fn use_kyc_credential(state: State, form: CsrfForm<Staff>) -> HttpResponse {
    let submission = form.field("submission_id").to_string();
    let v = match staff_access::kyc::read(
        &state.oauth,
        form.session.subject_id.clone(),
        submission,
        form.field("credential"),
    )
    .await
    {
        Ok(v) => v,
        Err(e) => return refused(e),
    };
    let (r, d) = (&v.record, &v.record.details);
    render(
        "KYC submission",
        html! {
            (nav())
            h1 { "KYC of " (v.developer_email) }
            p.muted { "This read is in the audit log, with your request's reference." }
            p { "Status: " strong #kyc-status { (r.status.as_str()) } " · round " (r.round) }
            @if let Some(reason) = &r.decision_reason { p { "Decision reason: " (reason) } }
            (developer_portal::kyc_details(d))
            (developer_portal::reviews_list(&v.reviews))
        },
    )
}

#[post("/developers/staff/credentials/revoke")]
async fn revoke(state: State, form: CsrfForm<Staff>) -> HttpResponse {
    let id = form.field("credential_id").to_string();
    match staff_access::revoke(&state.oauth, form.session.subject_id.clone(), id).await {
        Ok(()) => see_other(PAGE),
        Err(e) => refused(e),
    }
}
