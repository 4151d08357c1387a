//! The `/account/apps` pages: session cookie, CSRF-checked forms, redirects back.

use super::markup::{apps_markup, detail_markup};
use super::*;

#[get("/account/apps")]
pub async fn apps_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: CustomerSession,
) -> HttpResponse {
    let customer = CustomerGrants::new(&state.platform, session.subject_id.clone());
    let Ok(grants) = customer.list().await else {
        return unavailable_page();
    };
    let name = customer
        .identity()
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
        .1;
    let extended =
        extended_param(&req).and_then(|id| grants.iter().find(|g| g.grant_id == id && g.active));
    html_response(apps_markup(&name, &grants, &session.csrf_token, extended))
}

#[get("/account/apps/{grant_id}")]
pub async fn app_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    session: CustomerSession,
) -> HttpResponse {
    let customer = CustomerGrants::new(&state.platform, session.subject_id.clone());
    let grant = match customer.get(&id).await {
        Ok(Some(g)) => g,
        Ok(None) => return not_found_page(),
        Err(_) => return unavailable_page(),
    };
    let events = match customer.activity(&id).await {
        Ok(e) => e.unwrap_or_default(),
        Err(_) => return unavailable_page(),
    };
    let extended = grant.active && extended_param(&req).as_deref() == Some(grant.grant_id.as_str());
    html_response(detail_markup(
        &grant,
        &events,
        &session.csrf_token,
        extended,
    ))
}

#[post("/account/apps/{grant_id}/revoke")]
pub async fn revoke_form(
    state: web::Data<AppState>,
    id: web::Path<String>,
    form: CsrfForm<Customer>,
) -> HttpResponse {
    match grants(&state, form.session).revoke(&id).await {
        Ok(RevokeOutcome::NotFound) => not_found_page(),
        Ok(_) => see_other("/account/apps"),
        Err(_) => unavailable_page(),
    }
}

/// The customer re-confirms a grant from the page; back to the page it was sent from, with a
/// confirmation.
#[post("/account/apps/{grant_id}/extend")]
pub async fn extend_form(
    state: web::Data<AppState>,
    id: web::Path<String>,
    form: CsrfForm<Customer>,
) -> HttpResponse {
    match grants(&state, form.session.clone()).extend(&id).await {
        Ok(ExtendOutcome::NotFound) => not_found_page(),
        Ok(ExtendOutcome::Ended { .. }) => error_page(
            StatusCode::CONFLICT,
            "Access has ended",
            "This app's access has already ended, so it cannot be extended. To connect the app \
             again, start from the app itself.",
        ),
        Ok(ExtendOutcome::Extended { .. }) => {
            // Only the two dashboard pages are valid destinations (no open redirect).
            let detail = format!("/account/apps/{id}");
            let back = match form.field("next") {
                n if n == detail => detail,
                _ => "/account/apps".to_string(),
            };
            see_other(&format!("{back}?extended={id}"))
        }
        Err(_) => unavailable_page(),
    }
}

#[post("/account/apps/revoke-all")]
pub async fn revoke_all_form(state: web::Data<AppState>, form: CsrfForm<Customer>) -> HttpResponse {
    match grants(&state, form.session).revoke_all().await {
        Ok(_) => see_other("/account/apps"),
        Err(_) => unavailable_page(),
    }
}

/// The grant id in the page's `?extended=` confirmation parameter, if any.
fn extended_param(req: &HttpRequest) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "extended")
        .map(|(_, v)| v.into_owned())
}
