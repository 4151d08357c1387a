//! The portal's JSON API (`/api/v1/developers`, `/api/v1/clients`, `/api/v1/admin/...`). Handlers
//! are thin: parse, authenticate, call a service, shape the response. Errors are RFC 9457
//! problems.
//!
//! One module per resource: [`accounts`] (sign-up, login), [`kyc`] (the developer's submission and
//! its staff review), [`clients`] (registration, secrets, webhooks) and [`approvals`] (four-eyes
//! requests). This module holds the routes and the parameter helpers they share.

use std::future::{Ready, ready};
use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use platform::Platform;
use platform::problem::ApiError;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{Object, Required, Type};

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

/// What a path id names: its route parameter, and the word a 404 uses.
pub(crate) trait IdKind: 'static {
    const PARAM: &'static str;
    const WHAT: &'static str;
    /// The parameter's description in the OpenAPI document.
    const DESCRIPTION: &'static str;
}

/// An id from the request path (`PathId(id, ..): ClientId`). Ids longer than any id we issue
/// cannot exist: 404, before any lookup.
#[derive(Debug)]
pub(crate) struct PathId<K>(pub String, PhantomData<K>);

impl<K: IdKind> FromRequest for PathId<K> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let id = req.match_info().get(K::PARAM).unwrap_or_default();
        ready(if id.is_empty() || id.len() > 100 {
            Err(ApiError::NotFound(K::WHAT))
        } else {
            Ok(Self(id.to_string(), PhantomData))
        })
    }
}

/// The path parameter, documented once for every route that takes it (`params(ClientId)`).
impl<K: IdKind> IntoParams for PathId<K> {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name(K::PARAM)
                .parameter_in(ParameterIn::Path)
                .description(Some(K::DESCRIPTION))
                .required(Required::True)
                .schema(Some(Object::with_type(Type::String)))
                .build(),
        ]
    }
}

macro_rules! id_kinds {
    ($($(#[$doc:meta])* $alias:ident($kind:ident) = $param:literal, $what:literal, $desc:literal;)*) => {$(
        #[derive(Debug)]
        pub(crate) enum $kind {}
        impl IdKind for $kind {
            const PARAM: &'static str = $param;
            const WHAT: &'static str = $what;
            const DESCRIPTION: &'static str = $desc;
        }
        $(#[$doc])*
        pub(crate) type $alias = PathId<$kind>;
    )*};
}

id_kinds! {
    /// `{client_id}`
    ClientId(Client) = "client_id", "client", "Client id";
    /// `{event_id}` (a webhook event of a client)
    EventId(Event) = "event_id", "webhook event", "Event id (msg_...)";
    /// `{request_id}` (a four-eyes approval request)
    ApprovalId(Approval) = "request_id", "approval request", "Approval request id";
    /// `{submission_id}` (a KYC submission)
    SubmissionId(Submission) = "submission_id", "KYC submission", "KYC submission id";
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
