//! Request authentication for the portal's handlers: bearer tokens for the JSON API (no cookies,
//! so no CSRF exposure), session cookies for pages.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use platform::Platform;
use platform::problem::ApiError;
use platform::session::{Session, SessionKind};
use platform::web::bearer_token;

use crate::accounts;
use crate::error::read;

/// The client's address, for rate limiting (the TCP peer: forwarded headers are spoofable).
pub fn client_addr(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

async fn from_bearer(
    platform: Option<web::Data<Platform>>,
    token: Option<String>,
    kind: SessionKind,
) -> Result<Session, ApiError> {
    let platform = platform
        .ok_or_else(|| ApiError::internal(std::io::Error::other("Platform is not registered")))?;
    let token = token.ok_or(ApiError::Unauthorized)?;
    let now = platform.now();
    read(&platform, move |c| {
        accounts::authenticate(c, kind, &token, now)
    })
    .await?
    .ok_or(ApiError::Unauthorized)
}

type Fut<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

/// The bearer session of `kind` behind `req`'s `Authorization` header.
fn bearer_session(req: &HttpRequest, kind: SessionKind) -> Fut<Session> {
    let p = req.app_data::<web::Data<Platform>>().cloned();
    let token = bearer_token(req).map(str::to_string);
    Box::pin(from_bearer(p, token, kind))
}

/// A developer authenticated by `Authorization: Bearer <token from /api/v1/developers/login>`.
#[derive(Debug)]
pub struct DeveloperAuth(pub Session);

impl FromRequest for DeveloperAuth {
    type Error = ApiError;
    type Future = Fut<Self>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = bearer_session(req, SessionKind::Developer);
        Box::pin(async move { session.await.map(DeveloperAuth) })
    }
}

/// An active staff member authenticated by `Authorization: Bearer <token from
/// /api/v1/admin/login>`.
#[derive(Debug)]
pub struct StaffAuth(pub Session);

impl FromRequest for StaffAuth {
    type Error = ApiError;
    type Future = Fut<Self>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = bearer_session(req, SessionKind::Staff);
        Box::pin(async move { session.await.map(StaffAuth) })
    }
}

/// The live page session of `kind` (cookie), if any.
pub async fn page_session(
    platform: &Platform,
    req: &HttpRequest,
    kind: SessionKind,
) -> Result<Option<Session>, ApiError> {
    let Some(cookie) = req.cookie(kind.cookie_name()) else {
        return Ok(None);
    };
    let value = cookie.value().to_string();
    let now = platform.now();
    Ok(read(platform, move |c| {
        accounts::authenticate(c, kind, &value, now)
    })
    .await?)
}
