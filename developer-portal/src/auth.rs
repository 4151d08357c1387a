//! Request authentication for the portal's handlers: bearer tokens for the JSON API (no cookies,
//! so no CSRF exposure), session cookies for pages.

use platform::web::auth::{BearerSession, Developer, Staff};

/// The client's address, for rate limiting (the TCP peer: forwarded headers are spoofable).
pub use platform::web::peer_ip as client_addr;

/// A developer authenticated by `Authorization: Bearer <token from /api/v1/developers/login>`.
pub type DeveloperAuth = BearerSession<Developer>;

/// An active staff member authenticated by `Authorization: Bearer <token from
/// /api/v1/admin/login>`.
pub type StaffAuth = BearerSession<Staff>;
