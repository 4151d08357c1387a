//! Route table. Handlers are thin: parse, call a service, render.

pub mod assets;
pub mod bank_api;
pub mod customer_login;
pub mod dashboard;
pub mod grants_api;
pub mod health;
pub mod landing;
pub mod oauth;
pub mod pages;
pub mod ssf;
pub mod staff;
pub mod staff_pages;

use std::future::Future;
use std::pin::Pin;

use actix_web::{HttpRequest, web};
use platform::problem::ApiError;

use crate::AppState;

/// This instance's state, as a handler receives it.
pub type State = web::Data<AppState>;
/// An id in a request's path. utoipa infers no parameter from this alias (it would from
/// `web::Path<String>`), so each handler documents its path parameters in `params(...)` itself.
pub type PathId = web::Path<String>;
/// What a JSON handler answers.
pub type Answer = Result<actix_web::HttpResponse, ApiError>;

/// What an extractor of this crate returns.
pub type Extracted<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

/// This instance's state, for an extractor.
pub fn app_state(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal(std::io::Error::other("AppState is not registered")))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(landing::index)
        .service(assets::asset)
        .service(landing::docs)
        .service(health::healthz)
        .service(health::readyz)
        .service(health::metrics)
        .service(oauth::server_metadata)
        .service(oauth::biscuit_keys)
        .service(oauth::par_endpoint)
        .service(oauth::authorize_endpoint)
        .service(oauth::token_endpoint)
        .service(oauth::revoke_endpoint)
        .service(oauth::introspect_endpoint)
        .service(customer_login::start)
        .service(customer_login::callback)
        .service(customer_login::backchannel_logout)
        .service(pages::login_form)
        .service(pages::login)
        .service(pages::logout)
        .service(pages::consent_form)
        .service(pages::consent_decide)
        .configure(dashboard::configure)
        .configure(grants_api::configure)
        .configure(ssf::configure)
        .configure(staff::configure)
        .configure(staff_pages::configure);
}
