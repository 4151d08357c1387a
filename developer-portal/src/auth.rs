//! Request authentication for the portal's JSON API: bearer tokens (no cookies, so no CSRF
//! exposure). Pages use platform's cookie extractors (`platform::web::auth`); their form posts
//! reach the same [`Caller`] through `pages::session::Posted`.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use chrono::{DateTime, Utc};
use platform::Platform;
use platform::problem::ApiError;
use platform::revocation::Revocations;
use platform::session::Session;
use platform::storage::AnyConnection;
use platform::web::auth::{Audience, BearerSession, Developer, Staff};

use crate::error::{PortalResult, read, write, write_revoking};

/// The client's address, for rate limiting (the TCP peer, or what a trusted proxy says it is).
pub use platform::web::client_ip as client_addr;

/// The authenticated caller of a JSON API call (a bearer session of `A`), with what its service
/// call needs: the platform and the time of the request. [`Caller::read`], [`Caller::write`]
/// and [`Caller::write_revoking`] run a service function with the caller's id and that time.
#[derive(Debug)]
pub struct Caller<A> {
    pub platform: web::Data<Platform>,
    pub session: Session,
    pub now: DateTime<Utc>,
    audience: PhantomData<A>,
}

/// A developer authenticated by `Authorization: Bearer <token from /api/v1/developers/login>`.
pub type DeveloperAuth = Caller<Developer>;

/// An active staff member authenticated by `Authorization: Bearer <token from
/// /api/v1/admin/login>`.
pub type StaffAuth = Caller<Staff>;

/// A service call for a [`Caller`]: `f(connection, caller id, now)`.
pub trait CallerFn<T>:
    FnOnce(&mut AnyConnection, &str, DateTime<Utc>) -> PortalResult<T> + Send + 'static
{
}

impl<T, F> CallerFn<T> for F where
    F: FnOnce(&mut AnyConnection, &str, DateTime<Utc>) -> PortalResult<T> + Send + 'static
{
}

impl<A> Caller<A> {
    /// The caller of `session` (already authenticated as an `A`), now.
    pub fn new(platform: web::Data<Platform>, session: Session) -> Self {
        Self {
            now: platform.now(),
            platform,
            session,
            audience: PhantomData,
        }
    }

    /// `f` with the caller's id and the time of the request bound: `f(connection)`.
    fn bind<T>(
        &self,
        f: impl CallerFn<T>,
    ) -> impl FnOnce(&mut AnyConnection) -> PortalResult<T> + Send + 'static {
        let (id, now) = (self.session.subject_id.clone(), self.now);
        move |c| f(c, &id, now)
    }

    /// `f(connection, caller id, now)` on the database pool.
    pub async fn read<T: Send + 'static>(&self, f: impl CallerFn<T>) -> PortalResult<T> {
        read(&self.platform, self.bind(f)).await
    }

    /// `f(connection, caller id, now)` in one write transaction.
    pub async fn write<T: Send + 'static>(&self, f: impl CallerFn<T>) -> PortalResult<T> {
        write(&self.platform, self.bind(f)).await
    }

    /// As [`Caller::write`], for a change that ends grants (announced once committed).
    pub async fn write_revoking<T, F>(&self, f: F) -> PortalResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut AnyConnection, &mut Revocations, &str, DateTime<Utc>) -> PortalResult<T>
            + Send
            + 'static,
    {
        let (id, now) = (self.session.subject_id.clone(), self.now);
        write_revoking(&self.platform, move |c, r| f(c, r, &id, now)).await
    }
}

impl<A: Audience> FromRequest for Caller<A> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;
    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = BearerSession::<A>::from_request(req, payload);
        let platform = req.app_data::<web::Data<Platform>>().cloned();
        Box::pin(async move {
            let session = session.await?.0;
            let platform = platform.ok_or_else(|| {
                ApiError::internal(std::io::Error::other("Platform is not registered"))
            })?;
            Ok(Self::new(platform, session))
        })
    }
}
