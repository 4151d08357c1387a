//! Operations endpoints: liveness, readiness, Prometheus metrics.

use actix_web::http::header::ContentType;
use actix_web::{HttpRequest, HttpResponse, ResponseError, get, web};
use platform::crypto::constant_time_eq;
use platform::problem::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::routes::State;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the process answers.
    #[schema(value_type = crate::openapi::values::LiveState)]
    pub status: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready` when the database answers; `not_ready` otherwise.
    #[schema(value_type = crate::openapi::values::ReadyState)]
    pub status: String,
    #[schema(value_type = crate::openapi::values::DependencyState)]
    pub database: String,
    /// `degraded` when Redis is unreachable (the database still decides everything).
    #[schema(value_type = crate::openapi::values::CacheState)]
    pub cache: String,
    #[schema(value_type = crate::openapi::values::CacheKind)]
    pub cache_kind: String,
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Process is alive", body = Health)))]
#[get("/healthz")]
pub async fn healthz() -> web::Json<Health> {
    web::Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the database answers. A Redis outage degrades but does not fail readiness, since
/// the database is the source of truth.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = Readiness),
        (status = 503, description = "Database unavailable", body = Readiness)))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let p = &state.platform;
    let (db, cache) = tokio::join!(p.db.ping(), p.cache.ping());
    if let Err(e) = &db {
        tracing::warn!(error = %e, "readiness: database unavailable");
    }
    let body = Readiness {
        status: if db.is_ok() { "ready" } else { "not_ready" }.into(),
        database: if db.is_ok() { "ok" } else { "unavailable" }.into(),
        cache: if cache.is_ok() { "ok" } else { "degraded" }.into(),
        cache_kind: p.cache.kind().into(),
    };
    if db.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus metrics in the text exposition format, for loopback callers only, or (with
/// `server.metrics_token` set) for callers presenting that token as a bearer token.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 403, description = "Not a loopback caller, or not the configured metrics token", body = platform::problem::Problem)))]
#[get("/metrics")]
pub async fn metrics(state: State, req: HttpRequest) -> HttpResponse {
    let allowed = match &state.platform.settings.server.metrics_token {
        Some(token) => platform::web::bearer_token(&req)
            .is_some_and(|b| constant_time_eq(b.as_bytes(), token.expose().as_bytes())),
        // Loopback by the TCP peer and by the client address: behind a reverse proxy on the same
        // host (a trusted proxy on 127.0.0.1) every request comes from loopback.
        None => {
            req.peer_addr().is_some_and(|a| a.ip().is_loopback())
                && platform::web::client_ip(&req)
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    };
    if !allowed {
        return ApiError::Forbidden(
            "metrics are served to loopback callers, or with server.metrics_token".into(),
        )
        .error_response();
    }
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .insert_header(("Content-Type", "text/plain; version=0.0.4"))
        .body(state.metrics.render())
}
