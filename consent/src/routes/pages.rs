//! Customer pages: login, logout and the consent screen. Server-rendered, no JavaScript, CSRF
//! token on every form, output escaped by maud, `frame-ancestors 'none'` from the global headers.

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse, get, post};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use platform::crypto::verify_password;
use platform::ratelimit::{LoginAttempt, LoginLimits};
use platform::session::{self, LoginCsrf, SessionKind};
use platform::web::auth::{CsrfForm, Customer, CustomerSession, PageRefusal};
use platform::web::{clear_session_cookie, login_csrf_cookie, page, session_cookie};

use crate::AppState;
use crate::dashboard;
use crate::oauth::flow::{
    self, ConsentChoice, ConsentError, Decision as ConsentDecision, PendingConsent,
};
use crate::routes::State;
use crate::routes::oauth::{error_page, see_other};

/// Only same-site relative paths may be a post-login destination (no open redirects): see
/// [`platform::web::return_path`]; anything else goes to `/`.
fn safe_next(next: Option<&str>) -> String {
    next.and_then(platform::web::return_path)
        .unwrap_or_else(|| "/".to_string())
}

/// A form body's pairs, in order (repeated names kept: the consent form repeats `account`).
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The customer's decision in the consent form's pairs (the CSRF token is checked apart);
/// `None` when it is neither Allow nor Deny.
pub fn consent_decision(pairs: &[(String, String)]) -> Option<ConsentDecision> {
    let all = |name: &str| {
        pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    match field(pairs, "decision") {
        Some("approve") => Some(ConsentDecision::Approve(ConsentChoice {
            accounts: all("account"),
            actions: all("action"),
            transactions_from: field(pairs, "transactions_from").map(str::to_string),
            transactions_until: field(pairs, "transactions_until").map(str::to_string),
            merchants: all("merchant"),
            expires_at: field(pairs, "expires_at").map(str::to_string),
            period: field(pairs, "period").map(str::to_string),
        })),
        Some("deny") => Some(ConsentDecision::Deny),
        _ => None,
    }
}

/// How the login page offers to log in: the bank's provider (its button text), passwords.
struct LoginMethods<'a> {
    provider: Option<&'a str>,
    passwords: bool,
}

impl<'a> LoginMethods<'a> {
    fn of(state: &'a AppState) -> Self {
        Self {
            provider: state.customer_login.as_ref().map(|u| u.label()),
            passwords: state.platform.settings.customer_login.passwords,
        }
    }
}

fn login_page(csrf: &str, next: &str, error: Option<&str>, methods: &LoginMethods) -> Markup {
    let provider_href = format!(
        "/login/oidc?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("next", next)
            .finish()
    );
    page(
        "Log in",
        html! {
            h1 { "Log in to your bank" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            @if let Some(label) = methods.provider {
                p { a.button #provider-login href=(provider_href) { (label) } }
            }
            @if methods.passwords {
                @if methods.provider.is_some() { h2 { "Or with a password of this service" } }
                form method="post" action="/login" {
                    input type="hidden" name="csrf_token" value=(csrf);
                    input type="hidden" name="next" value=(next);
                    p { label { "Username " input type="text" name="username" autocomplete="username" required; } }
                    p { label { "Password " input type="password" name="password" autocomplete="current-password" required; } }
                    p { button type="submit" { "Log in" } }
                }
            }
        },
    )
}

#[derive(Debug, serde::Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

#[get("/login")]
pub async fn login_form(state: State, query: web::Query<LoginQuery>) -> HttpResponse {
    let csrf = LoginCsrf::generate();
    HttpResponse::Ok()
        .cookie(login_csrf_cookie(&state.platform, &csrf))
        .insert_header(("Cache-Control", "no-store"))
        .content_type("text/html; charset=utf-8")
        .body(
            login_page(
                &csrf,
                &safe_next(query.next.as_deref()),
                None,
                &LoginMethods::of(&state),
            )
            .into_string(),
        )
}

#[post("/login")]
pub async fn login(state: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    if !state.platform.settings.customer_login.passwords {
        return error_page(
            StatusCode::FORBIDDEN,
            "Log in with your bank",
            "This service takes no passwords: log in through your bank's login page.",
        );
    }
    let pairs = form_pairs(&body);
    let next = safe_next(field(&pairs, "next"));
    let cookie = platform::web::login_csrf_value(&state.platform, &req);
    if !LoginCsrf::check(
        cookie.as_deref(),
        field(&pairs, "csrf_token").unwrap_or_default(),
    ) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Form expired",
            "The form was not submitted from this site or has expired; reload the login page.",
        );
    }
    let username = field(&pairs, "username")
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let password = field(&pairs, "password").unwrap_or_default().to_string();
    let ip = platform::web::client_ip(&req);
    let retry = |msg: &str, status: StatusCode| {
        let csrf = LoginCsrf::generate();
        HttpResponse::build(status)
            .cookie(login_csrf_cookie(&state.platform, &csrf))
            .content_type("text/html; charset=utf-8")
            .body(login_page(&csrf, &next, Some(msg), &LoginMethods::of(&state)).into_string())
    };
    // Failures per account and address, per address and per account: see LoginLimits (an
    // attacker elsewhere cannot lock the owner out).
    let limiter = &state.platform.rate_limiter;
    let limits = LoginLimits::DEFAULT;
    let attempt = LoginAttempt::new("customer", &username, &ip);
    // No password is checked for these: nothing to count.
    if username.is_empty() || username.len() > 64 || password.is_empty() || password.len() > 256 {
        return retry("Wrong username or password.", StatusCode::UNAUTHORIZED);
    }
    // Counted before the password is checked (guesses sent at once see each other), given
    // back below when it is right or was never checked.
    let Ok(ticket) = limiter.login_begin(&limits, &attempt).await else {
        return retry(
            "Too many attempts. Wait a few minutes and try again.",
            StatusCode::TOO_MANY_REQUESTS,
        );
    };
    let now = state.platform.now();
    let user = username.clone();
    let found = state
        .platform
        .db
        .run(move |c| dashboard::customer_login(c, &user))
        .await;
    let unavailable = || {
        error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "The service is temporarily unavailable; try again.",
        )
    };
    let Ok(found) = found else {
        limiter.login_unchecked(ticket).await;
        return unavailable();
    };
    let stored = found.as_ref().map(|(_, h)| h.clone());
    // argon2 is deliberately slow: verify off the async executor. Unknown users verify a dummy
    // hash so both failures take the same time.
    let verified = state
        .platform
        .passwords
        .run(move || verify_password(&password, stored.as_deref()));
    let Ok(ok) = verified.await else {
        limiter.login_unchecked(ticket).await;
        return unavailable();
    };
    let Some((customer_id, _)) = found.filter(|_| ok) else {
        tracing::info!("customer login failed");
        ticket.failed();
        return retry("Wrong username or password.", StatusCode::UNAUTHORIZED);
    };
    limiter.login_succeeded(ticket).await;
    let address = ip.clone();
    let created = state
        .platform
        .db
        .run(move |c| {
            let event = platform::audit::NewEvent::new(
                platform::audit::Actor::customer(&customer_id),
                "customer.login",
                platform::audit::Target::new("customer", customer_id.clone()),
            )
            .details(serde_json::json!({ "client_address": address }));
            session::create_recorded(c, SessionKind::Customer, &customer_id, &event, now)
        })
        .await;
    match created {
        Ok((token, _)) => HttpResponse::SeeOther()
            .cookie(session_cookie(
                &state.platform,
                SessionKind::Customer,
                &token,
            ))
            .insert_header(("Location", next))
            .finish(),
        Err(_) => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "The service is temporarily unavailable; try again.",
        ),
    }
}

#[post("/logout")]
pub async fn logout(
    state: State,
    form: Result<CsrfForm<Customer>, actix_web::Error>,
) -> HttpResponse {
    // Without a session there is nothing to end (the cookie is cleared all the same); a wrong
    // CSRF token, or sessions that cannot be read, are answered as on any form.
    let form = match form {
        Ok(form) => Some(form),
        Err(e) if matches!(e.as_error(), Some(PageRefusal::Login(_))) => None,
        Err(e) => return e.error_response(),
    };
    if let Some(CsrfForm { session: s, .. }) = form {
        let _ = state
            .platform
            .db
            .write(move |c| session::delete(c, &s))
            .await;
    }
    HttpResponse::SeeOther()
        .cookie(clear_session_cookie(&state.platform, SessionKind::Customer))
        .insert_header(("Location", "/login"))
        .finish()
}

fn describe(action: &str) -> &'static str {
    match action {
        "accounts:read" => "See the names, numbers and currencies of the accounts you choose",
        "balances:read" => "See the balances of those accounts",
        "transactions:read" => "See the transactions on those accounts",
        _ => "A permission this bank does not describe",
    }
}

fn date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// The sentence at the top of the consent page: what the app would see if the customer allowed
/// the request as it stands (the script rewrites it as they narrow).
fn requested_summary(p: &PendingConsent) -> String {
    let r = &p.requested;
    dashboard::AccessSummary {
        app: &p.client.name,
        verb: "will see",
        actions: r.actions.iter().map(|a| a.as_str()).collect(),
        accounts: p.accounts.len(),
        window: r
            .window
            .as_ref()
            .map(|w| (w.from().date_naive(), w.until().date_naive())),
        merchants: (!p.merchants.is_empty())
            .then(|| p.merchants.iter().map(|(_, n)| n.as_str()).collect()),
        until: r.expires_at.date_naive(),
    }
    .sentence()
}

/// The quick choices of a transaction period (besides the dates themselves); the server reads
/// them (see `flow::consent::preset_window`), the script only fills in the dates to match.
const PERIODS: [(&str, &str); 3] = [
    ("this_year", "This year"),
    ("last_3_months", "The last 3 months"),
    ("last_12_months", "The last 12 months"),
];

fn consent_page(p: &PendingConsent, csrf: &str, error: Option<&str>, now: DateTime<Utc>) -> Markup {
    let r = &p.requested;
    let wants_transactions = r.actions.iter().any(|a| a.as_str() == "transactions:read");
    page(
        "Connect an app",
        html! {
            h1 { (p.client.name) " wants access to your bank data" }
            (dashboard::operator_markup(&p.client.environment, p.verified_legal_name.as_deref()))
            @if let Some(change) = &p.change { (change_notice(change, &p.accounts)) }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            p.summary #summary role="status" aria-live="polite" data-app=(p.client.name) { (requested_summary(p)) }
            p { "Choose exactly what to share. You can only share less than the app asked for, and you can end this access at any time from " a href="/account/apps" { "your connected apps" } "." }
            form #consent method="post" action={ "/oauth2/consent/" (p.id) } data-merchants-required[!p.merchants.is_empty()] {
                input type="hidden" name="csrf_token" value=(csrf);
                fieldset {
                    legend { "Accounts" }
                    @for a in &p.accounts {
                        p { label { input type="checkbox" name="account" value=(a.id) checked; " " (a.name) " (" (a.masked_number) ", " (a.currency) ")" } }
                    }
                }
                fieldset {
                    legend { "Permissions" }
                    @for action in &r.actions {
                        p { label { input type="checkbox" name="action" value=(action.as_str()) checked; " " (describe(action.as_str())) } }
                    }
                }
                @if wants_transactions {
                    fieldset #period {
                        legend { "Transactions from this period" }
                        @if r.window.is_none() {
                            p.muted { "The app asked for your whole transaction history. To share only a period, choose one or give both dates." }
                        }
                        div.quick {
                            label { input type="radio" name="period" value="dates" checked; "These dates" }
                            @for (value, text) in PERIODS {
                                label { input type="radio" name="period" value=(value); (text) }
                            }
                        }
                        @if let Some(w) = &r.window {
                            p { label { "From " input type="date" name="transactions_from" value=(date(w.from())) min=(date(w.from())) max=(date(w.until())); } }
                            p { label { "Until " input type="date" name="transactions_until" value=(date(w.until())) min=(date(w.from())) max=(date(w.until())); } }
                        } @else {
                            p { label { "From " input type="date" name="transactions_from"; } }
                            p { label { "Until " input type="date" name="transactions_until"; } }
                        }
                    }
                }
                @if wants_transactions && !p.own_merchants.is_empty() {
                    fieldset {
                        legend { "Merchants" }
                        p.muted { "The app asked for transactions with all merchants. To share only some, choose them; choose none to share all." }
                        @for (id, name) in &p.own_merchants {
                            p { label { input type="checkbox" name="merchant" value=(id) data-name=(name); " " (name) } }
                        }
                    }
                }
                @if !p.merchants.is_empty() {
                    fieldset {
                        legend { "Only transactions with these merchants" }
                        @for (id, name) in &p.merchants {
                            p { label { input type="checkbox" name="merchant" value=(id) data-name=(name) checked; " " (name) } }
                        }
                    }
                }
                fieldset {
                    legend { "Access ends on" }
                    p { label { "Last day " input type="date" name="expires_at" value=(date(r.expires_at)) min=(date(now)) max=(date(r.expires_at)); } }
                }
                p.actions-row {
                    button type="submit" name="decision" value="approve" { "Allow" }
                    button type="submit" name="decision" value="deny" { "Deny" }
                }
            }
            script src="/assets/consent.js" defer {}
        },
    )
}

/// Grant Management: what the decision does to the access the customer already gave the app,
/// with what it allows now in full (accounts by name, period, merchants, end date).
fn change_notice(change: &flow::GrantChange, offered: &[flow::OfferedAccount]) -> Markup {
    let c = &change.current;
    let account_name = |id: &str| {
        offered
            .iter()
            .find(|a| a.id == id)
            .map_or(id.to_string(), |a| {
                format!("{} ({})", a.name, a.masked_number)
            })
    };
    html! {
        section.change {
            @match change.action {
                flow::GrantAction::Merge => {
                    h2 { "This adds to the access you already gave this app" }
                    p { "If you allow, the app keeps what it has now and gains what you choose below. The two must fit in one consent: if together they would allow more than either (say, transactions on an account you only shared balances of), nothing changes and you are told so. The access then lasts until the later of its current end and the end you choose." }
                }
                flow::GrantAction::Replace => {
                    h2 { "This replaces the access you already gave this app" }
                    p { "If you allow, the app has only what you choose below; what it has now ends." }
                }
            }
            p { "What it has now:" }
            ul {
                @for action in &c.actions { li { (describe(action.as_str())) } }
                @match &c.accounts {
                    Some(list) => { @for a in list { li { "account " (account_name(a.as_str())) } } }
                    None => { li { "all your accounts" } }
                }
                @if c.actions.iter().any(|a| a.as_str() == "transactions:read") {
                    @match &c.window {
                        Some(w) => { li { "transactions from " (date(w.from())) " until " (date(w.until())) } }
                        None => { li { "transactions of any date" } }
                    }
                    @match &c.merchants {
                        Some(list) => { li { "only transactions with " (list.len()) " merchant(s)" } }
                        None => { li { "transactions with any merchant" } }
                    }
                }
                li { "until " (date(c.expires_at)) }
            }
            p.muted { "Either way the app's current access tokens stop working (within seconds everywhere); it receives new ones for the access you allow." }
        }
    }
}

/// The consent page's response. Browsers apply CSP `form-action` to the redirect that follows a
/// form submission, so the policy names the client's registered redirect origin (and nothing
/// else) besides 'self'.
fn consent_response(status: StatusCode, p: &PendingConsent, markup: Markup) -> HttpResponse {
    let origin = url::Url::parse(&p.redirect_uri)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let csp = format!(
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self' {origin}; frame-ancestors 'none'"
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Content-Security-Policy", csp))
        .body(markup.into_string())
}

fn consent_error(e: &ConsentError) -> HttpResponse {
    match e {
        ConsentError::Unavailable(_) => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            &e.to_string(),
        ),
        _ => error_page(
            StatusCode::BAD_REQUEST,
            "This request cannot be completed",
            &e.to_string(),
        ),
    }
}

fn valid_request_id(id: &str) -> bool {
    id.starts_with("areq_") && id.len() <= 64
}

/// The page for a consent request id that cannot exist.
fn unknown_request() -> HttpResponse {
    error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "Unknown authorization request.",
    )
}

#[get("/oauth2/consent/{id}")]
pub async fn consent_form(
    state: State,
    id: web::Path<String>,
    session: CustomerSession,
) -> HttpResponse {
    let id = id.into_inner();
    if !valid_request_id(&id) {
        return unknown_request();
    }
    let now = state.platform.now();
    let svc = state.oauth.clone();
    let customer = session.subject_id.clone();
    let result = state
        .platform
        .db
        .run(move |c| Ok(flow::pending(c, &svc, &id, &customer, now)))
        .await;
    match result {
        Ok(Ok(p)) => consent_response(
            StatusCode::OK,
            &p,
            consent_page(&p, &session.csrf_token, None, now),
        ),
        Ok(Err(e)) => consent_error(&e),
        Err(e) => consent_error(&ConsentError::Unavailable(e)),
    }
}

#[post("/oauth2/consent/{id}")]
pub async fn consent_decide(
    state: State,
    id: web::Path<String>,
    form: CsrfForm<Customer>,
) -> HttpResponse {
    let id = id.into_inner();
    if !valid_request_id(&id) {
        return unknown_request();
    }
    let CsrfForm {
        session, fields, ..
    } = form;
    let Some(decision) = consent_decision(fields.pairs()) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid form",
            "Choose Allow or Deny.",
        );
    };
    let now = state.platform.now();
    let svc = state.oauth.clone();
    let customer = session.subject_id.clone();
    let rid = id.clone();
    // A merge or replace ends the grant's earlier tokens: announced once committed.
    let result = platform::revocation::run(&state.platform, move |c, revoked| {
        flow::decide(c, revoked, &svc, &rid, &customer, &decision, now)
    })
    .await;
    match result {
        Ok(Ok(location)) => see_other(&location),
        Ok(Err(ConsentError::Invalid(msg))) => {
            // Show the form again with the reason; nothing was written.
            let svc = state.oauth.clone();
            let customer = session.subject_id.clone();
            match state
                .platform
                .db
                .run(move |c| Ok(flow::pending(c, &svc, &id, &customer, now)))
                .await
            {
                Ok(Ok(p)) => consent_response(
                    StatusCode::BAD_REQUEST,
                    &p,
                    consent_page(&p, &session.csrf_token, Some(&msg), now),
                ),
                _ => error_page(
                    StatusCode::BAD_REQUEST,
                    "This request cannot be completed",
                    &msg,
                ),
            }
        }
        Ok(Err(e)) => consent_error(&e),
        Err(e) => consent_error(&ConsentError::Unavailable(e)),
    }
}
