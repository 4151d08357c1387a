//! Request authentication for the portal's handlers: bearer tokens for the JSON API (no cookies,
//! so no CSRF exposure), session cookies for pages.

use actix_web::HttpRequest;
use platform::web::auth::{BearerSession, Developer, Staff};

/// The client's address, for rate limiting (the TCP peer: forwarded headers are spoofable).
pub fn client_addr(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// A developer authenticated by `Authorization: Bearer <token from /api/v1/developers/login>`.
pub type DeveloperAuth = BearerSession<Developer>;

/// An active staff member authenticated by `Authorization: Bearer <token from
/// /api/v1/admin/login>`.
pub type StaffAuth = BearerSession<Staff>;
