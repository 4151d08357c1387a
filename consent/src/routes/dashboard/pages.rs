//! The `/account/apps` pages: session cookie, CSRF-checked forms, redirects back.

use super::markup::{Flash, Revoked, apps_markup, detail_markup};
use super::*;
use crate::routes::State;

#[get("/account/apps")]
pub async fn apps_page(state: State, req: HttpRequest, session: CustomerSession) -> HttpResponse {
    let customer = CustomerGrants::new(&state.platform, session.subject_id.clone());
    let Ok(grants) = customer.list().await else {
        return unavailable_page();
    };
    let ids = grants.iter().map(|g| g.grant_id.clone()).collect();
    let Ok(reads) = customer.last_reads(ids).await else {
        return unavailable_page();
    };
    let name = customer
        .identity()
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
        .1;
    let extended = query_param(&req, "extended")
        .and_then(|id| grants.iter().find(|g| g.grant_id == id && g.active));
    // `?revoked=` names the grant just ended (or `all`); only the customer's own grants are
    // named back, and only once they have ended.
    let revoked = match query_param(&req, "revoked").as_deref() {
        Some("all") => Some(Revoked::All),
        Some(id) => grants
            .iter()
            .find(|g| g.grant_id == id && !g.active)
            .map(Revoked::One),
        None => None,
    };
    let flash = Flash { extended, revoked };
    html_response(apps_markup(
        &name,
        &grants,
        &reads,
        &session.csrf_token,
        &flash,
    ))
}

/// Query parameters of the grant page: `before`, the history page's cursor.
#[derive(Debug, serde::Deserialize)]
pub struct HistoryQuery {
    before: Option<i64>,
    extended: Option<String>,
}

#[get("/account/apps/{grant_id}")]
pub async fn app_page(
    state: State,
    query: Option<web::Query<HistoryQuery>>,
    id: web::Path<String>,
    session: CustomerSession,
) -> HttpResponse {
    let (before, extended) = match query {
        Some(q) => (q.before.filter(|b| *b > 0), q.into_inner().extended),
        None => (None, None),
    };
    let customer = CustomerGrants::new(&state.platform, session.subject_id.clone());
    let grant = match customer.get(&id).await {
        Ok(Some(g)) => g,
        Ok(None) => return not_found_page(),
        Err(_) => return unavailable_page(),
    };
    let history = match customer.history(&id, before, dashboard::HISTORY_PAGE).await {
        Ok(Some(h)) => h,
        Ok(None) => return not_found_page(),
        Err(_) => return unavailable_page(),
    };
    let Ok(reads) = customer.last_reads(vec![grant.grant_id.clone()]).await else {
        return unavailable_page();
    };
    let extended = grant.active && extended.as_deref() == Some(grant.grant_id.as_str());
    html_response(detail_markup(
        &grant,
        reads.get(&grant.grant_id),
        &history,
        before.is_some(),
        &session.csrf_token,
        extended,
    ))
}

#[post("/account/apps/{grant_id}/revoke")]
pub async fn revoke_form(
    state: State,
    id: web::Path<String>,
    form: CsrfForm<Customer>,
) -> HttpResponse {
    match grants(&state, form.session).revoke(&id).await {
        Ok(RevokeOutcome::NotFound) => not_found_page(),
        Ok(_) => see_other(&format!("/account/apps?revoked={id}")),
        Err(_) => unavailable_page(),
    }
}

/// The customer re-confirms a grant from the page; back to the page it was sent from, with a
/// confirmation.
#[post("/account/apps/{grant_id}/extend")]
pub async fn extend_form(
    state: State,
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
pub async fn revoke_all_form(state: State, form: CsrfForm<Customer>) -> HttpResponse {
    match grants(&state, form.session).revoke_all().await {
        Ok(_) => see_other("/account/apps?revoked=all"),
        Err(_) => unavailable_page(),
    }
}

/// One parameter of the page's query string (the confirmations `?extended=` and `?revoked=`).
fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
