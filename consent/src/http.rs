//! HTTP plumbing shared by every route: extractor error handling, security headers, metrics,
//! and turning framework errors (404, 405, ...) into problem details.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{DefaultHeaders, ErrorHandlerResponse, ErrorHandlers, Next};
use actix_web::{HttpRequest, HttpResponse, web};
use platform::problem::{self, ApiError, PROBLEM_JSON, Problem};

/// Bodies over this size are refused with 413 before parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn extractor_config(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            .error_handler(|e, _| problem::json_error(e).into()),
    )
    .app_data(
        web::FormConfig::default()
            .limit(MAX_BODY_BYTES)
            .error_handler(|e, _| problem::form_error(e).into()),
    )
    // Bodies read whole as bytes or text (OAuth forms parsed by hand, page forms, usage
    // reports): the same bound, not actix's 256 KiB default.
    .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
    .app_data(web::QueryConfig::default().error_handler(|e, _| problem::query_error(e).into()))
    .app_data(web::PathConfig::default().error_handler(|e, _| problem::path_error(e).into()));
}

/// Headers on every response. Pages are server-rendered with no third-party content, so the
/// policy allows only this origin, and nothing may frame us (clickjacking on consent). Served
/// over https (an https `server.public_url`), browsers are also told to use nothing else for a
/// year (HSTS), so a network attacker cannot downgrade a later visit.
pub fn security_headers(https: bool) -> DefaultHeaders {
    let headers = DefaultHeaders::new();
    let headers = if https {
        headers.add((
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ))
    } else {
        headers
    };
    headers
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self'; \
             script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'",
        ))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add(("Cross-Origin-Opener-Policy", "same-origin"))
}

/// Swagger UI (`/docs/`, vendored) sets inline styles from its script, which the site-wide
/// policy refuses; its pages alone may (styles only: scripts stay 'self'). Runs inside
/// [`security_headers`], which keeps a policy already set.
pub async fn docs_policy(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let docs = req.path().starts_with("/docs/");
    let mut res = next.call(req).await?;
    if docs {
        res.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                 script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                 frame-ancestors 'none'",
            ),
        );
    }
    Ok(res)
}

/// Counts requests and their latency per route pattern (never the raw path: ids would explode
/// the label cardinality).
pub async fn record_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    let res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let status = res.status().as_u16().to_string();
    metrics::counter!("consent_http_requests_total", "method" => method, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("consent_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    Ok(res)
}

/// The `method` label: the standard methods by name, any other `OTHER`. HTTP lets a client send
/// any token as its method (actix routes it to a 404 or 405), and every distinct label value is
/// a series the metrics registry keeps forever: raw methods would let anyone grow the server's
/// memory and `/metrics` without bound.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Error responses that are not already JSON or HTML (actix's own 404/405/400 plain-text bodies)
/// are rewritten into problem details, so every JSON client sees one error shape.
pub fn error_normalizer<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(normalize::<B>)
}

fn normalize<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let keep = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json") || ct.starts_with("text/html"));
    if keep {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (req, old) = res.into_parts();
    // A server error's own words (a framework or handler message) stay in the log, under a
    // reference the caller can quote; client errors say what was wrong with the request.
    let correlation_id = status.is_server_error().then(problem::correlation_id);
    let detail = match (&correlation_id, old.error()) {
        (Some(id), e) => {
            tracing::error!(correlation_id = %id, error = ?e, %status, "request failed");
            format!("an unexpected error occurred; quote {id} to support")
        }
        (None, Some(e)) => e.to_string(),
        (None, None) => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let body = Problem {
        type_uri: format!("/problems/http-{}", status.as_u16()),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail: Some(detail),
        errors: vec![],
        correlation_id,
    };
    let mut new = HttpResponse::build(status);
    new.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
    for name in [header::ALLOW, header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
        if let Some(v) = old.headers().get(&name) {
            new.insert_header((name, v.clone()));
        }
    }
    let new: HttpResponse<BoxBody> = new.body(serde_json::to_string(&body).unwrap_or_default());
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, new).map_into_right_body(),
    ))
}

/// The default service: unknown routes are a 404 problem.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    tracing::debug!(path = %req.path(), "no route");
    Err(ApiError::NotFound("route"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{App, test};

    #[derive(serde::Deserialize)]
    struct Body {
        #[allow(dead_code)]
        name: String,
    }

    async fn echo(_: web::Json<Body>) -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    async fn raw(_: web::Bytes) -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    async fn query(_: web::Query<std::collections::HashMap<String, u32>>) -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    /// Every class of malformed input is a 4xx problem, never a 500.
    #[actix_web::test]
    async fn malformed_requests_get_problem_details() {
        let app = test::init_service(
            App::new()
                .wrap(error_normalizer())
                .configure(extractor_config)
                .route("/echo", web::post().to(echo))
                .route("/q", web::get().to(query))
                .route("/raw", web::post().to(raw))
                .default_service(web::to(not_found)),
        )
        .await;
        let post = |content_type: &str, body: String| {
            test::TestRequest::post()
                .uri("/echo")
                .insert_header(("content-type", content_type.to_string()))
                .set_payload(body)
        };
        let json = "application/json";
        let too_long = format!("{{\"name\":\"{}\"}}", "x".repeat(MAX_BODY_BYTES));
        let cases = [
            (post(json, "{not json".into()), 400),
            (post(json, "{\"name\": 5}".into()), 400),
            (post(json, "{}".into()), 400),
            (post("text/plain", "{\"name\":\"x\"}".into()), 415),
            (post(json, too_long.clone()), 413),
            (
                test::TestRequest::post()
                    .uri("/raw")
                    .insert_header(("content-type", "application/x-www-form-urlencoded"))
                    .set_payload(too_long),
                413,
            ),
            (test::TestRequest::get().uri("/q?n=notanumber"), 400),
            (test::TestRequest::get().uri("/missing"), 404),
            (test::TestRequest::get().uri("/echo"), 404),
        ];
        for (i, (req, expected)) in cases.into_iter().enumerate() {
            let resp = test::call_service(&app, req.to_request()).await;
            assert_eq!(resp.status().as_u16(), expected, "case {i}");
            assert_eq!(
                resp.headers().get("content-type").unwrap(),
                PROBLEM_JSON,
                "case {i}"
            );
            let body: serde_json::Value = test::read_body_json(resp).await;
            assert_eq!(body["status"], expected, "case {i}: {body}");
            assert!(
                body["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "case {i}: {body}"
            );
        }
        let ok = test::TestRequest::post()
            .uri("/echo")
            .insert_header(("content-type", "application/json"))
            .set_payload("{\"name\":\"x\"}")
            .to_request();
        assert_eq!(test::call_service(&app, ok).await.status(), 200);
    }

    /// A framework-level server error (not one of our typed errors) keeps its words out of the
    /// answer: the body carries a correlation id that the log line also carries.
    #[actix_web::test]
    async fn framework_server_errors_carry_a_reference_not_their_cause() {
        async fn broken() -> Result<HttpResponse, actix_web::Error> {
            Err(actix_web::error::ErrorInternalServerError(
                "pool at 10.0.0.5:5432 exhausted",
            ))
        }
        let app = test::init_service(
            App::new()
                .wrap(error_normalizer())
                .route("/broken", web::get().to(broken)),
        )
        .await;
        let resp =
            test::call_service(&app, test::TestRequest::get().uri("/broken").to_request()).await;
        assert_eq!(resp.status(), 500);
        let body: serde_json::Value = test::read_body_json(resp).await;
        let id = body["correlation_id"].as_str().unwrap();
        assert!(body["detail"].as_str().unwrap().contains(id), "{body}");
        assert!(!body.to_string().contains("10.0.0.5"), "{body}");
    }
}
