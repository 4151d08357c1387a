//! What every portal page shares: the HTML layout and response helpers, form fields, error pages
//! and the login form.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header;
use maud::{Markup, html};
use platform::problem::ApiError;
use platform::web::page;

use crate::error::PortalError;

pub(crate) fn field<'a>(form: &'a super::Form, name: &str) -> &'a str {
    form.get(name)
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

/// A navigation bar: `links` (path, text), then a logout button posting to `logout` with the
/// session's CSRF token.
pub(crate) fn nav_bar(links: &[(&str, &str)], logout: &str, csrf: &str) -> Markup {
    html! {
        nav {
            @for (href, text) in links { a href=(href) { (text) } " · " }
            form.inline method="post" action=(logout) {
                (csrf_input(csrf))
                button type="submit" { "Log out" }
            }
        }
    }
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

pub(crate) use platform::web::auth::csrf_refused_page as csrf_refused;

pub(crate) fn with_cookie(
    mut resp: HttpResponse,
    cookie: Option<actix_web::cookie::Cookie<'static>>,
) -> HttpResponse {
    if let Some(c) = cookie {
        let _ = resp.add_cookie(&c);
    }
    resp
}

/// A list of form errors, if any.
pub(crate) fn error_list(errors: &[String]) -> Markup {
    html! { @if !errors.is_empty() { ul.error { @for e in errors { li { (e) } } } } }
}

pub(crate) fn messages(e: &PortalError) -> Vec<String> {
    match e {
        PortalError::Validation(v) => v
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect(),
        // A concurrent write won (a unique key): the database's words stay in the log.
        PortalError::Storage(platform::storage::StorageError::Conflict(_)) => {
            vec!["Something changed at the same moment; please try again.".into()]
        }
        // Failures of ours say nothing of their cause on the page (database hosts, SQL): the
        // cause goes to the log under a reference the page shows.
        other if status_of(other).is_server_error() => {
            let id = platform::problem::correlation_id();
            tracing::error!(correlation_id = %id, error = ?other, "portal page failed");
            vec![format!(
                "Something went wrong on our side; please try again (reference {id})."
            )]
        }
        other => vec![other.to_string()],
    }
}

pub(crate) fn status_of(e: &PortalError) -> StatusCode {
    match e {
        PortalError::Validation(_) => StatusCode::BAD_REQUEST,
        PortalError::InvalidCredentials => StatusCode::UNAUTHORIZED,
        PortalError::Forbidden(_) => StatusCode::FORBIDDEN,
        PortalError::NotFound(_) => StatusCode::NOT_FOUND,
        PortalError::Conflict(_)
        | PortalError::Storage(platform::storage::StorageError::Conflict(_)) => {
            StatusCode::CONFLICT
        }
        PortalError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        PortalError::Storage(platform::storage::StorageError::Unavailable(_)) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
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

#[cfg(test)]
mod server_error_tests {
    use super::*;

    #[test]
    fn server_errors_show_a_reference_not_their_cause() {
        let e = PortalError::Storage(platform::storage::StorageError::Unavailable(
            "connection to 10.0.0.5:5432 refused".into(),
        ));
        let shown = messages(&e).join(" ");
        assert!(!shown.contains("10.0.0.5"), "{shown}");
        assert!(shown.contains("err_"), "{shown}");
        // Client errors still explain themselves.
        assert_eq!(
            messages(&PortalError::Conflict("name taken".into())),
            vec!["name taken".to_string()]
        );
    }
}
