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
use utoipa::openapi::{ObjectBuilder, Required, Type};

pub mod accounts;
pub mod approvals;
pub mod clients;
pub mod kyc;
pub mod second_factor;

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
    /// The shape of the ids we issue (prefix, then URL-safe characters), for the document.
    const PATTERN: &'static str;
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
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(K::PATTERN))
                        .max_length(Some(100)),
                ))
                .build(),
        ]
    }
}

macro_rules! id_kinds {
    ($($(#[$doc:meta])* $alias:ident($kind:ident) = $param:literal, $what:literal, $desc:literal, $pattern:literal;)*) => {$(
        #[derive(Debug)]
        pub(crate) enum $kind {}
        impl IdKind for $kind {
            const PARAM: &'static str = $param;
            const WHAT: &'static str = $what;
            const DESCRIPTION: &'static str = $desc;
            const PATTERN: &'static str = $pattern;
        }
        $(#[$doc])*
        pub(crate) type $alias = PathId<$kind>;
    )*};
}

id_kinds! {
    /// `{client_id}`
    ClientId(Client) = "client_id", "client", "Client id", "^c_[A-Za-z0-9_-]+$";
    /// `{event_id}` (a webhook event of a client)
    EventId(Event) = "event_id", "webhook event", "Event id", "^msg_[A-Za-z0-9_-]+$";
    /// `{request_id}` (a four-eyes approval request)
    ApprovalId(Approval) = "request_id", "approval request", "Approval request id", "^apr_[A-Za-z0-9_-]+$";
    /// `{submission_id}` (a KYC submission)
    SubmissionId(Submission) = "submission_id", "KYC submission", "KYC submission id", "^kyc_[A-Za-z0-9_-]+$";
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
    routes! { cfg;
        "/api/v1/developers" => post accounts::sign_up;
        "/api/v1/developers/login" => post accounts::developer_login;
        "/api/v1/developers/login/second-factor" => post second_factor::developer_second_factor_login;
        "/api/v1/developers/logout" => post accounts::developer_logout;
        "/api/v1/developers/me" => get accounts::me;
        "/api/v1/developers/me/second-factor" => get second_factor::developer_status, post second_factor::developer_enrol;
        "/api/v1/developers/me/second-factor/confirm" => post second_factor::developer_confirm;
        "/api/v1/developers/me/second-factor/removal" => post second_factor::developer_remove;
        "/api/v1/developers/me/kyc" => get kyc::get_kyc, put kyc::put_kyc;
        "/api/v1/developers/me/kyc/submit" => post kyc::submit_kyc;
        "/api/v1/clients" => get clients::list_clients, post clients::create_client;
        "/api/v1/clients/{client_id}" => get clients::get_client, patch clients::update_client, delete clients::delete_client;
        "/api/v1/clients/{client_id}/secret" => post clients::rotate_secret;
        "/api/v1/clients/{client_id}/webhook-secret" => post clients::rotate_webhook_secret;
        "/api/v1/clients/{client_id}/webhook-deliveries" => get clients::webhook_deliveries;
        "/api/v1/clients/{client_id}/webhook-deliveries/{event_id}/retry" => post clients::redeliver_webhook;
        "/api/v1/admin/login" => post accounts::staff_login;
        "/api/v1/admin/login/second-factor" => post second_factor::staff_second_factor_login;
        "/api/v1/admin/second-factor" => post second_factor::staff_enrol;
        "/api/v1/admin/second-factor/confirm" => post second_factor::staff_confirm;
        "/api/v1/admin/kyc" => get kyc::kyc_queue;
        "/api/v1/admin/kyc/{submission_id}" => get kyc::kyc_detail;
        "/api/v1/admin/kyc/{submission_id}/reviews" => post kyc::kyc_review;
        "/api/v1/admin/approvals" => get approvals::list_approvals;
        "/api/v1/admin/approvals/{request_id}" => get approvals::get_approval;
        "/api/v1/admin/approvals/{request_id}/approve" => post approvals::approve;
        "/api/v1/admin/approvals/{request_id}/reject" => post approvals::reject;
        "/api/v1/admin/clients/{client_id}/suspension" => post approvals::request_suspension;
        "/api/v1/admin/clients/{client_id}/unsuspension" => post approvals::request_unsuspension;
        "/api/v1/admin/clients/{client_id}/dormancy" => post approvals::request_dormancy_change;
    }
}

platform::value_sets! {
    /// How a session token is presented.
    SessionTokenType = ["Bearer"];
    /// What a login token still owes: a code (`verify`) or enrolment of an authenticator (`enrol`).
    SecondFactorDue = ["verify", "enrol"];
    /// Where a KYC submission stands.
    KycStatus = ["draft", "submitted", "approved", "rejected", "needs_information"];
    /// A developer's KYC status: `none` before any details are saved.
    DeveloperKycStatus = ["none", "draft", "submitted", "approved", "rejected", "needs_information"];
    /// A staff decision on a KYC submission.
    KycDecision = ["approve", "reject", "needs_information"];
    /// What a KYC document is.
    DocumentKind = [
        "certificate_of_incorporation",
        "proof_of_address",
        "identity_document",
        "license",
        "ownership_structure",
        "other",
    ];
    /// How a client authenticates at the token endpoint (RFC 7591 `token_endpoint_auth_method`).
    AuthMethod = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "tls_client_auth",
        "self_signed_tls_client_auth",
    ];
    /// A client's status as its developer sees it.
    ClientStatus = ["active", "suspended"];
    /// A four-eyes request's status; a pending request past its time to live is `expired`.
    ApprovalStatus = ["pending", "approved", "rejected", "expired"];
    /// The privileged actions that need a second approver.
    ApprovalActionName = [
        "client.suspend",
        "client.unsuspend",
        "keys.rotate",
        "customer.grants.access",
        "client.dormancy.set",
        "kyc.read",
    ];
    /// A webhook event's delivery: `pending` (retried with backoff), `delivered`, `failed`
    /// (given up).
    WebhookStatus = ["pending", "delivered", "failed"];
    /// The webhook event types.
    WebhookEventType = [
        "grant.revoked",
        "grant.expired",
        "grant.expiring",
        "grant.dormancy_warning",
        "grant.extended",
        "client.suspended",
    ];
}

#[cfg(test)]
mod value_set_tests {
    use platform::storage::models as m;

    fn names<T: Copy>(all: &[T], f: impl Fn(T) -> &'static str) -> Vec<&'static str> {
        all.iter().map(|v| f(*v)).collect()
    }

    /// The documented sets are the ones the code reads and writes.
    #[test]
    fn documented_value_sets_match_the_code() {
        assert_eq!(
            names(m::KycStatus::ALL, m::KycStatus::as_str),
            super::KycStatus::VALUES
        );
        assert_eq!(
            super::DeveloperKycStatus::VALUES[1..],
            *super::KycStatus::VALUES
        );
        assert_eq!(
            names(m::ReviewDecision::ALL, m::ReviewDecision::as_str),
            super::KycDecision::VALUES
        );
        assert_eq!(
            names(m::ApprovalStatus::ALL, m::ApprovalStatus::as_str),
            super::ApprovalStatus::VALUES
        );
        assert_eq!(
            names(&crate::approvals::ApprovalAction::ALL, |a| a.as_str()),
            super::ApprovalActionName::VALUES
        );
        assert_eq!(
            names(m::WebhookStatus::ALL, m::WebhookStatus::as_str),
            super::WebhookStatus::VALUES
        );
        assert_eq!(
            platform::webhooks::EVENT_TYPES,
            super::WebhookEventType::VALUES
        );
        for method in super::AuthMethod::VALUES {
            assert_eq!(
                crate::domain::AuthMethod::parse(method).unwrap().as_str(),
                *method
            );
        }
        for env in platform::values::Environment::VALUES {
            assert_eq!(
                crate::domain::Environment::parse(env).unwrap().as_str(),
                *env
            );
        }
        let shown = [m::ClientStatus::Active, m::ClientStatus::Suspended];
        assert_eq!(
            names(&shown, m::ClientStatus::as_str),
            super::ClientStatus::VALUES
        );
    }
}
