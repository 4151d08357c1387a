//! One way to authenticate a request, for every page and JSON handler of every crate. Handlers
//! take one of these extractors as their *last* argument (so a malformed path, query or body is
//! refused first, before any session lookup) and never read cookies or headers themselves:
//!
//! | extractor | credential | refused with |
//! |---|---|---|
//! | [`PageSession`] ([`CustomerSession`], [`DeveloperSession`], [`StaffSession`]) | session cookie | 303 to the login page; 503 page |
//! | [`CsrfForm`] | session cookie + the form's `csrf_token` | as above; 403 page |
//! | [`ApiSession`] | session cookie (JSON calls from the pages' own origin) | 401 problem |
//! | [`CsrfHeader`] | session cookie + [`CSRF_HEADER`] | 401 / 403 problem |
//! | [`BearerSession`] | `Authorization: Bearer` session token (no cookie, so no CSRF) | 401 problem |
//! | [`OwingBearer`], [`OwingPage`], [`OwingForm`] | a session that has passed the password and still owes its second factor (the only thing it can reach) | as their full-session peers |
//!
//! Each is typed by its [`Audience`] ([`Customer`], [`Developer`], [`Staff`]): a developer's
//! cookie or token can never stand for a staff session, and a staff session lasts only while
//! the staff member is active. CSRF tokens are compared in constant time
//! ([`Session::check_csrf`]).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::{Method, StatusCode, header};
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use maud::html;

use super::{bearer_token, current_session, page};
use crate::Platform;
use crate::problem::ApiError;
use crate::session::{self, SecondFactorDue, Session, SessionKind};

/// The header that carries the session's CSRF token on state-changing JSON calls.
pub const CSRF_HEADER: &str = "X-CSRF-Token";

/// Whose session: its kind and where its pages live.
pub trait Audience: 'static {
    const KIND: SessionKind;
    /// Where a logged-in visitor starts, and where a refused form offers to go back to.
    const HOME: &'static str;
    /// The login page a visitor without a session is sent to.
    const LOGIN: &'static str;
    /// Paths whose forms post back to the page itself: a visitor whose session ended while on
    /// one comes back to it after logging in (other forms come back to [`Self::HOME`]). `None`:
    /// the login page is not told where to come back to.
    const COME_BACK_TO_FORMS: Option<&'static [&'static str]>;
}

macro_rules! audiences {
    ($($(#[$doc:meta])* $name:ident: $kind:ident, home $home:literal, login $login:literal,
        come back to $forms:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl Audience for $name {
            const KIND: SessionKind = SessionKind::$kind;
            const HOME: &'static str = $home;
            const LOGIN: &'static str = $login;
            const COME_BACK_TO_FORMS: Option<&'static [&'static str]> = $forms;
        }
    )*};
}

audiences! {
    /// Bank customers (dashboard, consent pages).
    Customer: Customer, home "/account/apps", login "/login",
        come back to Some(&["/oauth2/consent/"]);
    /// Registered developers (portal pages and API).
    Developer: Developer, home "/developers", login "/developers/login", come back to None;
    /// Bank staff (KYC review, approvals).
    Staff: Staff, home "/developers/staff", login "/developers/staff/login", come back to None;
}

/// Where a visitor of `req` without a session of `A` is sent.
fn login_location<A: Audience>(req: &HttpRequest) -> String {
    let Some(form_pages) = A::COME_BACK_TO_FORMS else {
        return A::LOGIN.to_string();
    };
    let path = req.path();
    let page = req.method() == Method::GET
        || req.method() == Method::HEAD
        || form_pages.iter().any(|p| path.starts_with(p));
    let next = if page { path } else { A::HOME };
    // `next` is a path of ours; the login page checks it again before redirecting.
    let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    format!("{}?next={}", A::LOGIN, next.replace("%2F", "/"))
}

/// Why a page request has no usable session; renders as the page the visitor sees.
#[derive(Debug)]
pub enum PageRefusal {
    /// Not logged in: 303 to the login page.
    Login(String),
    /// The form's CSRF token is missing or wrong: 403 page with a way back.
    Csrf(&'static str),
    /// Sessions cannot be read (database down): 503 page.
    Unavailable,
}

impl fmt::Display for PageRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Login(_) => "not logged in",
            Self::Csrf(_) => "missing or wrong CSRF token",
            Self::Unavailable => "sessions unavailable",
        })
    }
}

impl ResponseError for PageRefusal {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Login(_) => StatusCode::SEE_OTHER,
            Self::Csrf(_) => StatusCode::FORBIDDEN,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Login(to) => HttpResponse::SeeOther()
                .insert_header((header::LOCATION, to.as_str()))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish(),
            Self::Csrf(back) => csrf_refused_page(back),
            Self::Unavailable => unavailable_page(),
        }
    }
}

/// A page with a title and one message (and a way back), not cached.
pub fn message_page(
    status: StatusCode,
    title: &str,
    message: &str,
    back: Option<&str>,
) -> HttpResponse {
    let body = page(
        title,
        html! {
            h1 { (title) }
            p.error { (message) }
            @if let Some(back) = back { p { a href=(back) { "Back" } } }
        },
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body.into_string())
}

/// The 403 page for a form whose CSRF token is missing or wrong (nothing was changed).
pub fn csrf_refused_page(back: &str) -> HttpResponse {
    message_page(
        StatusCode::FORBIDDEN,
        "Form expired",
        "The form was not submitted from this site or has expired; reload the page and try again.",
        Some(back),
    )
}

/// The 503 page shown when the service cannot answer (database or Redis unreachable).
pub fn unavailable_page() -> HttpResponse {
    message_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        "The service is temporarily unavailable; try again in a moment.",
        None,
    )
}

type Fut<T, E> = Pin<Box<dyn Future<Output = Result<T, E>>>>;

fn platform_of(req: &HttpRequest) -> Result<web::Data<Platform>, ApiError> {
    req.app_data::<web::Data<Platform>>()
        .cloned()
        .ok_or_else(|| ApiError::internal(std::io::Error::other("Platform is not registered")))
}

/// The live cookie session of `A` on `req`, if any.
async fn cookie_session<A: Audience>(req: &HttpRequest) -> Result<Option<Session>, ApiError> {
    let p = platform_of(req)?;
    current_session(&p, req, A::KIND).await
}

/// The page session of `A`, or the page to show instead.
async fn page_session<A: Audience>(req: &HttpRequest) -> Result<Session, PageRefusal> {
    match cookie_session::<A>(req).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(PageRefusal::Login(login_location::<A>(req))),
        Err(e) => {
            tracing::error!(error = ?e, "session lookup failed");
            Err(PageRefusal::Unavailable)
        }
    }
}

macro_rules! session_wrapper {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name<A>(pub Session, pub PhantomData<A>);

        impl<A> $name<A> {
            pub fn into_inner(self) -> Session {
                self.0
            }
        }

        impl<A> Deref for $name<A> {
            type Target = Session;
            fn deref(&self) -> &Session {
                &self.0
            }
        }

        impl<A> fmt::Debug for $name<A> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.0).finish()
            }
        }
    };
}

session_wrapper!(
    /// The live page session (cookie) of `A`; without one, the login page (or a 503 page).
    PageSession
);
session_wrapper!(
    /// The cookie session of `A` behind a JSON call; 401 without one.
    ApiSession
);
session_wrapper!(
    /// The cookie session of `A` behind a state-changing JSON call, which must carry the
    /// session's CSRF token in [`CSRF_HEADER`] (401 without a session, 403 without the token).
    CsrfHeader
);
session_wrapper!(
    /// A session of `A` presented as `Authorization: Bearer <token>` (the portal API's login
    /// token); 401 without a valid one.
    BearerSession
);

pub type CustomerSession = PageSession<Customer>;
pub type DeveloperSession = PageSession<Developer>;
pub type StaffSession = PageSession<Staff>;

impl<A: Audience> FromRequest for PageSession<A> {
    type Error = PageRefusal;
    type Future = Fut<Self, PageRefusal>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Ok(Self(page_session::<A>(&req).await?, PhantomData)) })
    }
}

impl<A: Audience> FromRequest for ApiSession<A> {
    type Error = ApiError;
    type Future = Fut<Self, ApiError>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let s = cookie_session::<A>(&req).await?;
            Ok(Self(s.ok_or(ApiError::Unauthorized)?, PhantomData))
        })
    }
}

impl<A: Audience> FromRequest for CsrfHeader<A> {
    type Error = ApiError;
    type Future = Fut<Self, ApiError>;
    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = ApiSession::<A>::from_request(req, payload);
        let submitted = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Box::pin(async move {
            let ApiSession(s, _) = session.await?;
            if submitted.is_empty() || !s.check_csrf(&submitted) {
                return Err(ApiError::Forbidden(format!(
                    "missing or wrong {CSRF_HEADER} header; read csrf_token from GET /api/v1/me"
                )));
            }
            Ok(Self(s, PhantomData))
        })
    }
}

impl<A: Audience> FromRequest for BearerSession<A> {
    type Error = ApiError;
    type Future = Fut<Self, ApiError>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let p = platform_of(req);
        let token = bearer_token(req).map(str::to_string);
        Box::pin(async move {
            let p = p?;
            let token = token.ok_or(ApiError::Unauthorized)?;
            let now = p.now();
            let s =
                p.db.run(move |c| session::load(c, A::KIND, &token, now))
                    .await?;
            Ok(Self(s.ok_or(ApiError::Unauthorized)?, PhantomData))
        })
    }
}

/// The fields of a posted `application/x-www-form-urlencoded` body, in order (a repeated name
/// keeps every value; [`FormFields::get`] reads the first).
#[derive(Debug, Default, Clone)]
pub struct FormFields(Vec<(String, String)>);

impl FormFields {
    pub fn parse(body: &[u8]) -> Self {
        Self(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.first(name).unwrap_or_default()
    }

    /// The first value of `name`, if present.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.first(name).is_some()
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

impl FromRequest for FormFields {
    type Error = actix_web::Error;
    type Future = Fut<Self, actix_web::Error>;
    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = Bytes::from_request(req, payload);
        Box::pin(async move { Ok(Self::parse(&body.await?)) })
    }
}

/// A form posted from one of `A`'s pages: the session `S` it was posted in (by default the page
/// session; [`OwingForm`] for the second-factor pages), and the fields, whose `csrf_token`
/// matched that session's (otherwise the 403 page, and nothing changes).
#[derive(Debug)]
pub struct CsrfForm<A, S = Session> {
    pub session: S,
    pub fields: FormFields,
    audience: PhantomData<A>,
}

impl<A, S> CsrfForm<A, S> {
    /// The value of field `name`, empty when absent.
    pub fn field(&self, name: &str) -> &str {
        self.fields.get(name)
    }
}

/// What a posted form's CSRF token is checked against: a full page session of `A`, or one that
/// still owes its second factor ([`Owing`]).
pub trait FormSession<A>: Sized + 'static {
    /// Where the 403 page leads back to.
    const BACK: &'static str;
    /// The session by its cookie; a refusal page when there is none.
    fn load(req: HttpRequest) -> Fut<Self, PageRefusal>;
    fn session(&self) -> &Session;
}

impl<A: Audience> FormSession<A> for Session {
    const BACK: &'static str = A::HOME;
    fn load(req: HttpRequest) -> Fut<Self, PageRefusal> {
        Box::pin(async move { page_session::<A>(&req).await })
    }
    fn session(&self) -> &Session {
        self
    }
}

impl<A: Audience, S: FormSession<A>> FromRequest for CsrfForm<A, S> {
    type Error = actix_web::Error;
    type Future = Fut<Self, actix_web::Error>;
    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let fields = FormFields::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            let fields = fields.await?;
            let session = S::load(req).await?;
            if !session.session().check_csrf(fields.get("csrf_token")) {
                return Err(PageRefusal::Csrf(S::BACK).into());
            }
            Ok(Self {
                session,
                fields,
                audience: PhantomData,
            })
        })
    }
}

/// A session of `A` that still owes its second factor ([`SecondFactorDue`]): what the
/// second-factor endpoints and pages take, and nothing else does (full-session extractors refuse
/// it, so a password alone reaches nothing).
#[derive(Debug)]
pub struct Owing<A> {
    pub session: Session,
    pub due: SecondFactorDue,
    audience: PhantomData<A>,
}

/// [`Owing`] presented as `Authorization: Bearer <token>`; 401 otherwise.
#[derive(Debug)]
pub struct OwingBearer<A>(pub Owing<A>);

/// [`Owing`] by its session cookie; the login page otherwise.
#[derive(Debug)]
pub struct OwingPage<A>(pub Owing<A>);

/// A form posted from a second-factor page: [`Owing`] by its cookie, with the session's CSRF
/// token in the form (else the 403 page, and nothing changes).
pub type OwingForm<A> = CsrfForm<A, Owing<A>>;

async fn owing<A: Audience>(
    req: &HttpRequest,
    presented: Option<String>,
) -> Result<Option<Owing<A>>, ApiError> {
    let p = platform_of(req)?;
    let Some(token) = presented else {
        return Ok(None);
    };
    let now = p.now();
    let found =
        p.db.run(move |c| session::load_owing(c, A::KIND, &token, now))
            .await?;
    Ok(found.map(|(session, due)| Owing {
        session,
        due,
        audience: PhantomData,
    }))
}

async fn owing_page<A: Audience>(req: &HttpRequest) -> Result<Owing<A>, PageRefusal> {
    let p = platform_of(req).map_err(|_| PageRefusal::Unavailable)?;
    let cookie = req
        .cookie(super::session_cookie_name(&p, A::KIND))
        .map(|c| c.value().to_string());
    match owing::<A>(req, cookie).await {
        Ok(Some(o)) => Ok(o),
        Ok(None) => Err(PageRefusal::Login(A::LOGIN.to_string())),
        Err(e) => {
            tracing::error!(error = ?e, "session lookup failed");
            Err(PageRefusal::Unavailable)
        }
    }
}

impl<A: Audience> FromRequest for OwingBearer<A> {
    type Error = ApiError;
    type Future = Fut<Self, ApiError>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        let token = bearer_token(&req).map(str::to_string);
        Box::pin(async move {
            let token = token.ok_or(ApiError::Unauthorized)?;
            Ok(Self(
                owing::<A>(&req, Some(token))
                    .await?
                    .ok_or(ApiError::Unauthorized)?,
            ))
        })
    }
}

impl<A: Audience> FromRequest for OwingPage<A> {
    type Error = PageRefusal;
    type Future = Fut<Self, PageRefusal>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Ok(Self(owing_page::<A>(&req).await?)) })
    }
}

impl<A: Audience> FormSession<A> for Owing<A> {
    const BACK: &'static str = A::LOGIN;
    fn load(req: HttpRequest) -> Fut<Self, PageRefusal> {
        Box::pin(async move { owing_page::<A>(&req).await })
    }
    fn session(&self) -> &Session {
        &self.session
    }
}
