//! The portal's JSON API (`/api/v1/developers`, `/api/v1/clients`, `/api/v1/admin/...`). Handlers
//! are thin: parse, authenticate, call a service, shape the response. Errors are RFC 9457
//! problems.
//!
//! One module per resource: [`accounts`] (sign-up, login), [`kyc`] (the developer's submission and
//! its staff review), [`clients`] (registration, secrets, webhooks) and [`approvals`] (four-eyes
//! requests). This module holds the routes and the parameter helpers they share.

use actix_web::web;
use platform::Platform;
use platform::problem::ApiError;
use serde::Deserialize;

pub mod accounts;
pub mod approvals;
pub mod clients;
pub mod kyc;

pub(crate) type Data = web::Data<Platform>;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    /// Filter by status.
    pub status: Option<String>,
}

/// Path ids longer than any id we issue cannot exist.
pub(crate) fn id_param(id: &str, what: &'static str) -> Result<String, ApiError> {
    if id.is_empty() || id.len() > 100 {
        return Err(ApiError::NotFound(what));
    }
    Ok(id.to_string())
}

/// The optional `status` filter of a listing, parsed with `parse`; `expected` lists the values.
pub(crate) fn status_param<T>(
    q: &StatusQuery,
    parse: impl FnOnce(&str) -> Option<T>,
    expected: &'static str,
) -> Result<Option<T>, ApiError> {
    match q.status.as_deref() {
        None => Ok(None),
        Some(s) => parse(s)
            .map(Some)
            .ok_or_else(|| ApiError::field("status", expected)),
    }
}

/// Mounts the JSON routes (full paths, no scopes: `/api/v1/admin` is shared with the server).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/developers").route(web::post().to(accounts::sign_up)))
        .service(
            web::resource("/api/v1/developers/login")
                .route(web::post().to(accounts::developer_login)),
        )
        .service(
            web::resource("/api/v1/developers/logout")
                .route(web::post().to(accounts::developer_logout)),
        )
        .service(web::resource("/api/v1/developers/me").route(web::get().to(accounts::me)))
        .service(
            web::resource("/api/v1/developers/me/kyc")
                .route(web::get().to(kyc::get_kyc))
                .route(web::put().to(kyc::put_kyc)),
        )
        .service(
            web::resource("/api/v1/developers/me/kyc/submit")
                .route(web::post().to(kyc::submit_kyc)),
        )
        .service(
            web::resource("/api/v1/clients")
                .route(web::get().to(clients::list_clients))
                .route(web::post().to(clients::create_client)),
        )
        .service(
            web::resource("/api/v1/clients/{client_id}")
                .route(web::get().to(clients::get_client))
                .route(web::patch().to(clients::update_client))
                .route(web::delete().to(clients::delete_client)),
        )
        .service(
            web::resource("/api/v1/clients/{client_id}/secret")
                .route(web::post().to(clients::rotate_secret)),
        )
        .service(
            web::resource("/api/v1/clients/{client_id}/webhook-secret")
                .route(web::post().to(clients::rotate_webhook_secret)),
        )
        .service(
            web::resource("/api/v1/clients/{client_id}/webhook-deliveries")
                .route(web::get().to(clients::webhook_deliveries)),
        )
        .service(
            web::resource("/api/v1/clients/{client_id}/webhook-deliveries/{event_id}/retry")
                .route(web::post().to(clients::redeliver_webhook)),
        )
        .service(web::resource("/api/v1/admin/login").route(web::post().to(accounts::staff_login)))
        .service(web::resource("/api/v1/admin/kyc").route(web::get().to(kyc::kyc_queue)))
        .service(
            web::resource("/api/v1/admin/kyc/{submission_id}")
                .route(web::get().to(kyc::kyc_detail)),
        )
        .service(
            web::resource("/api/v1/admin/kyc/{submission_id}/reviews")
                .route(web::post().to(kyc::kyc_review)),
        )
        .service(
            web::resource("/api/v1/admin/approvals")
                .route(web::get().to(approvals::list_approvals)),
        )
        .service(
            web::resource("/api/v1/admin/approvals/{request_id}")
                .route(web::get().to(approvals::get_approval)),
        )
        .service(
            web::resource("/api/v1/admin/approvals/{request_id}/approve")
                .route(web::post().to(approvals::approve)),
        )
        .service(
            web::resource("/api/v1/admin/approvals/{request_id}/reject")
                .route(web::post().to(approvals::reject)),
        )
        .service(
            web::resource("/api/v1/admin/clients/{client_id}/suspension")
                .route(web::post().to(approvals::request_suspension)),
        );
}
