//! Staff pages under `/developers/staff`: log in, the KYC review queue, a submission with every
//! review and a review form, and four-eyes approval requests (with the forms that open them:
//! client suspension, unsuspension, dormancy period). Staff sessions use their own
//! cookie; every form carries the session's CSRF token.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::{Markup, html};
use platform::session::Session;

use super::markup::{csrf_input, error_page, render, see_other};
use super::session::{self, Posted, respond};
use super::{Data, Form};
use crate::api::approvals::approval_response;
use crate::approvals::{self, ApprovalStatus};
use crate::clients;
use crate::error::{PortalError, read, write};
use crate::kyc::{self, KycStatus};
use platform::web::auth::{CsrfForm, Staff, StaffSession};

fn nav(s: &Session) -> Markup {
    super::markup::nav_bar(
        &[
            ("/developers/staff", "KYC queue"),
            ("/developers/staff/approvals", "Approval requests"),
            ("/developers/staff/credentials", "Credentials"),
        ],
        "/developers/staff/logout",
        &s.csrf_token,
    )
}

async fn login_page(p: Data, req: HttpRequest) -> HttpResponse {
    session::login_page::<Staff>(&p, &req, html! {})
}

async fn login_submit(p: Data, req: HttpRequest, form: Form) -> HttpResponse {
    session::login_submit::<Staff>(&p, &req, &form).await
}

async fn logout(p: Data, form: CsrfForm<Staff>) -> HttpResponse {
    session::logout(&p, form).await
}

#[derive(Debug, serde::Deserialize)]
struct QueueQuery {
    status: Option<String>,
}

async fn queue(p: Data, q: web::Query<QueueQuery>, s: StaffSession) -> HttpResponse {
    let status = q
        .status
        .as_deref()
        .and_then(KycStatus::parse)
        .unwrap_or(KycStatus::Submitted);
    match read(&p, move |c| kyc::queue(c, Some(status))).await {
        Ok(items) => render(
            StatusCode::OK,
            "KYC queue",
            html! {
                (nav(&s))
                h1 { "KYC submissions: " (status.as_str()) }
                p {
                    @for st in ["submitted", "needs_information", "approved", "rejected"] {
                        a href=(format!("/developers/staff?status={st}")) { (st) } " "
                    }
                }
                @if items.is_empty() { p id="queue-empty" { "Nothing here." } }
                table id="queue" {
                    @for i in &items {
                        tr {
                            td { a href=(format!("/developers/staff/kyc/{}", i.id)) { (i.developer_email) } }
                            td { (i.country) }
                            td { "round " (i.round) }
                            td { (i.approvals_this_round) " of 2 approvals" }
                        }
                    }
                }
            },
        ),
        Err(e) => error_page(&e, "/developers/staff"),
    }
}

/// A submission: in full while it awaits review (the read is audited); outside review, its
/// outline and a form to ask a colleague for a credential to read it.
async fn detail(p: Data, path: web::Path<String>, s: StaffSession) -> HttpResponse {
    let id = path.into_inner();
    let staff = s.subject_id.clone();
    let outline = {
        let (id, staff) = (id.clone(), staff.clone());
        read(&p, move |c| kyc::staff_outline(c, &id, &staff)).await
    };
    match outline {
        Ok(o) if o.status != KycStatus::Submitted => return outline_page(&s, &o),
        Ok(_) => {}
        Err(e) => return error_page(&e, "/developers/staff"),
    }
    let cipher = p.master_key.cipher(kyc::PII_KEY);
    let now = p.now();
    match write(&p, move |c| kyc::staff_view(c, &cipher, &id, &staff, now)).await {
        Ok(v) => {
            let r = &v.record;
            let d = &r.details;
            let mine = v
                .reviews
                .iter()
                .any(|x| x.round == r.round && x.staff_id == s.subject_id);
            render(
                StatusCode::OK,
                "KYC submission",
                html! {
                    (nav(&s))
                    h1 { "KYC of " (v.developer_email) }
                    p { "Status: " strong id="kyc-status" { (r.status.as_str()) } " · round " (r.round) " · " (v.approvals_this_round) " of 2 approvals this round" }
                    (kyc_details(d))
                    (reviews_list(&v.reviews))
                    @if r.status == KycStatus::Submitted && !mine {
                        h2 { "Your review" }
                        form method="post" action=(format!("/developers/staff/kyc/{}/review", r.id)) {
                            (csrf_input(&s.csrf_token))
                            p {
                                label {
                                    "Decision "
                                    select name="decision" {
                                        option value="approve" { "approve" }
                                        option value="needs_information" { "needs information" }
                                        option value="reject" { "reject" }
                                    }
                                }
                            }
                            p { label { "Justification (visible to all staff) " br; textarea name="justification" rows="3" cols="60" required minlength="10" {} } }
                            button type="submit" { "Record review" }
                        }
                    } @else if mine {
                        p.muted { "You have reviewed this round; a second approval must come from another staff member." }
                    }
                },
            )
        }
        Err(e) => error_page(&e, "/developers/staff"),
    }
}

/// A submission's decrypted details (the caller audited the read).
pub fn kyc_details(d: &kyc::KycDetails) -> Markup {
    html! {
        dl {
            dt { "Legal name" } dd id="legal-name" { (d.legal_name) }
            dt { "Registration number" } dd { (d.registration_number) }
            dt { "Country" } dd { (d.country) }
            dt { "Address" } dd { (d.address) }
            dt { "Contact person" } dd { (d.contact_person) }
            dt { "Documents" } dd { ul { @for doc in &d.documents { li { (doc.kind) ": " (doc.filename) " " code { (doc.sha256) } } } } }
        }
    }
}

/// Every review of a submission, with its justification.
pub fn reviews_list(reviews: &[kyc::ReviewView]) -> Markup {
    html! {
        h2 { "Reviews" }
        @if reviews.is_empty() { p { "No reviews yet." } }
        ul id="reviews" {
            @for x in reviews {
                li { "Round " (x.round) ": " strong { (x.staff_username) } " - " (x.decision) ": " (x.justification) }
            }
        }
    }
}

/// A submission outside review: no personal data, and the way to ask for it.
fn outline_page(s: &Session, o: &kyc::KycOutline) -> HttpResponse {
    render(
        StatusCode::OK,
        "KYC submission",
        html! {
            (nav(s))
            h1 { "KYC of " (o.developer_email) }
            p { "Status: " strong id="kyc-status" { (o.status.as_str()) } " · round " (o.round) " · " (o.approvals_this_round) " of 2 approvals this round" }
            (reviews_list(&o.reviews))
            h2 { "Read the submission" }
            @if !matches!(o.status, KycStatus::Approved | KycStatus::Rejected) {
                p.muted #kyc-editing { "The developer is still editing it: there is nothing for the bank to read until it is submitted again." }
            } @else {
            p.muted { "It is decided: its personal data and documents need a request approved by another compliance member. Take the credential on the credentials page; every read is audited." }
            form id="kyc-access" method="post" action="/developers/staff/credentials/kyc-requests" {
                (csrf_input(&s.csrf_token))
                input type="hidden" name="submission_id" value=(o.id);
                p { label { "Why "
                    select name="category" {
                        @for c in approvals::StaffAccessCategory::VALUES { option value=(c) { (c.replace('_', " ")) } }
                    } } }
                p { label { "Case reference " input type="text" name="reference" required maxlength="100"; } }
                p { label { "Justification " input type="text" name="justification" minlength="10" required size="60"; } }
                button type="submit" { "Ask to read it" }
            }
            }
        },
    )
}

async fn review(path: web::Path<String>, post: Posted<Staff>) -> HttpResponse {
    let back = format!("/developers/staff/kyc/{path}");
    let decision = match kyc::parse_decision(post.field("decision")) {
        Ok(d) => d,
        Err(m) => return error_page(&PortalError::field("decision", m), &back),
    };
    let justification = post.field("justification").to_string();
    let cipher = post.platform.master_key.cipher(kyc::PII_KEY);
    let reviewed = post
        .write(move |c, staff, now| {
            kyc::review(c, &cipher, &path, staff, decision, &justification, now)
        })
        .await;
    respond(reviewed, &back, |_| see_other(&back))
}

async fn approvals_page(p: Data, s: StaffSession) -> HttpResponse {
    let now = p.now();
    let bounds = clients::DormancyBounds::of(&p.settings.lifecycle);
    let me = s.subject_id.clone();
    let r = read(&p, move |c| {
        Ok((
            approvals::list(c, None, now, 100)?,
            approvals::roles_of(c, &me)?,
        ))
    })
    .await;
    match r {
        Ok((list, roles)) => render(
            StatusCode::OK,
            "Approval requests",
            html! {
                (nav(&s))
                h1 { "Four-eyes approval requests" }
                table id="approvals" {
                    thead { tr { th scope="col" { "Request" } th scope="col" { "Asked by, why" } th scope="col" { "Status" } th scope="col" { "Decision" } } }
                    @for r in list {
                        @let mine = r.requested_by == s.subject_id;
                        @let allowed = approvals::may_decide(r.action, &roles);
                        @let needs = r.action.approver_roles().iter().map(|x| x.as_str()).collect::<Vec<_>>().join(" or ");
                        @let v = approval_response(r, now);
                        tr {
                            td {
                                code { (v.action) } " on " (v.target_type) " " code { (v.target_id) }
                                (payload_list(&v.payload))
                            }
                            td { "by " (v.requested_by) ": " (v.justification) }
                            td.status { (v.status) }
                            td {
                                @if let Some(j) = &v.decision_justification { (v.decided_by.clone().unwrap_or_default()) ": " (j) }
                                @if v.status == ApprovalStatus::Pending.as_str() && !mine && !allowed {
                                    span.muted { "awaiting a staff member with the role " (needs) }
                                } @else if v.status == ApprovalStatus::Pending.as_str() && !mine {
                                    form method="post" action=(format!("/developers/staff/approvals/{}/decide", v.id)) {
                                        (csrf_input(&s.csrf_token))
                                        label { "Your justification " input type="text" name="justification" minlength="10" required; }
                                        " " button type="submit" name="decision" value="approve" { "Approve" }
                                        " " button type="submit" name="decision" value="reject" { "Reject" }
                                    }
                                } @else if mine && v.status == ApprovalStatus::Pending.as_str() {
                                    span.muted { "awaiting another staff member" }
                                }
                            }
                        }
                    }
                }
                (status_change_form(&s, "/developers/staff/suspensions", "Request a client suspension", "Request suspension"))
                (status_change_form(&s, "/developers/staff/unsuspensions", "Request that a suspended client works again", "Request unsuspension"))
                h2 { "Request a client's dormancy period" }
                p.muted { "A grant of the client that nobody uses for this many days ends: " (bounds.shortest) " to " (bounds.longest) " days (the bank's default), or " code { "default" } " to return the client to it. A compliance member must approve the value." }
                form method="post" action="/developers/staff/dormancy" {
                    (csrf_input(&s.csrf_token))
                    p { label { "Client id " input type="text" name="client_id" required; } }
                    p { label { "Days, or default " input type="text" name="dormancy_days" required size="8"; } }
                    p { label { "Justification " input type="text" name="justification" minlength="10" required size="60"; } }
                    button type="submit" { "Request dormancy period" }
                }
            },
        ),
        Err(e) => error_page(&e, "/developers/staff"),
    }
}

/// What a request carries (its parameters: a value to set, a category, a reference), for the
/// approver to read before deciding.
fn payload_list(payload: &serde_json::Value) -> Markup {
    let entries: Vec<(String, String)> = payload
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.as_str() != "client_id")
                .map(|(k, v)| {
                    let shown = match v {
                        serde_json::Value::Null => "the bank's default".to_string(),
                        serde_json::Value::String(t) => t.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), shown)
                })
                .collect()
        })
        .unwrap_or_default();
    html! {
        @if !entries.is_empty() {
            ul.payload { @for (k, v) in &entries { li { (k) ": " strong { (v) } } } }
        }
    }
}

/// A form asking a colleague to approve a client's suspension or unsuspension.
fn status_change_form(s: &Session, action: &str, title: &str, button: &str) -> Markup {
    html! {
        h2 { (title) }
        form method="post" action=(action) {
            (csrf_input(&s.csrf_token))
            p { label { "Client id " input type="text" name="client_id" required; } }
            p { label { "Justification " input type="text" name="justification" minlength="10" required size="60"; } }
            button type="submit" { (button) }
        }
    }
}

/// Where the approval forms go back to.
const APPROVALS: &str = "/developers/staff/approvals";

async fn decide(path: web::Path<String>, post: Posted<Staff>) -> HttpResponse {
    let approve = match post.field("decision") {
        "approve" => true,
        "reject" => false,
        _ => {
            return error_page(
                &PortalError::field("decision", "must be approve or reject"),
                APPROVALS,
            );
        }
    };
    let justification = post.field("justification").to_string();
    let decided = post
        .write_revoking(move |c, r, staff, now| {
            clients::decide_and_execute(c, r, &path, staff, approve, &justification, now)
        })
        .await;
    respond(decided, APPROVALS, |_| see_other(APPROVALS))
}

async fn request_suspension(post: Posted<Staff>) -> HttpResponse {
    request_status_change(post, true).await
}

async fn request_unsuspension(post: Posted<Staff>) -> HttpResponse {
    request_status_change(post, false).await
}

async fn request_status_change(post: Posted<Staff>, suspend: bool) -> HttpResponse {
    let client_id = post.field("client_id").trim().to_string();
    let justification = post.field("justification").to_string();
    let requested = post
        .write(move |c, staff, now| {
            clients::request_status_change(c, staff, &client_id, suspend, &justification, now)
        })
        .await;
    respond(requested, APPROVALS, |_| see_other(APPROVALS))
}

async fn request_dormancy_change(post: Posted<Staff>) -> HttpResponse {
    let client_id = post.field("client_id").trim().to_string();
    // Stated explicitly, as on the API: an empty field is not a silent return to the default.
    let days = match post.field("dormancy_days").trim() {
        "default" => None,
        n => match n.parse::<i64>() {
            Ok(d) => Some(d),
            Err(_) => {
                return error_page(
                    &PortalError::field(
                        "dormancy_days",
                        "must be a whole number of days, or default",
                    ),
                    APPROVALS,
                );
            }
        },
    };
    let bounds = clients::DormancyBounds::of(&post.platform.settings.lifecycle);
    let justification = post.field("justification").to_string();
    let requested = post
        .write(move |c, staff, now| {
            clients::request_dormancy_change(
                c,
                staff,
                &client_id,
                days,
                bounds,
                &justification,
                now,
            )
        })
        .await;
    respond(requested, APPROVALS, |_| see_other(APPROVALS))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    routes! { cfg;
        "/developers/staff" => get queue;
        "/developers/staff/login" => get login_page, post login_submit;
        "/developers/staff/logout" => post logout;
        "/developers/staff/kyc/{submission_id}" => get detail;
        "/developers/staff/kyc/{submission_id}/review" => post review;
        "/developers/staff/approvals" => get approvals_page;
        "/developers/staff/approvals/{request_id}/decide" => post decide;
        "/developers/staff/suspensions" => post request_suspension;
        "/developers/staff/unsuspensions" => post request_unsuspension;
        "/developers/staff/dormancy" => post request_dormancy_change;
    }
}
