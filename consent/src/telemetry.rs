//! Logging (tracing, text or JSON) and the Prometheus metrics recorder.

use std::sync::OnceLock;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use platform::config::LogFormat;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber (call once, from `main`).
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn,diesel=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The request span every log line of a request carries. Unlike tracing-actix-web's default it
/// logs no query values (authorization requests, login `next`, PKCE and state parameters would
/// otherwise sit in every log line of the request: only parameter names are kept) and the client
/// address as the throttles see it (`client_ip`: forwarding headers only from trusted proxies;
/// the default believes any `X-Forwarded-For`).
#[derive(Debug)]
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "default".to_string());
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route,
            http.target = %loggable_target(request.path(), request.query_string()),
            http.client_ip = %platform::web::client_ip(request.request()),
            request_id = %request_id,
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// The path, and the query's parameter names without their values (`/authorize?client_id&state`).
pub fn loggable_target(path: &str, query: &str) -> String {
    if query.is_empty() {
        return path.to_string();
    }
    let names: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
        .map(|k| if k.len() > 64 { "…" } else { k })
        .take(32)
        .collect();
    format!("{path}?{}", names.join("&"))
}

/// The process-wide Prometheus recorder. The `metrics` facade has one global recorder per process,
/// so every server instance in a process (tests run several) shares it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                // Batch sizes are counts, not seconds.
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("consent_db_batch_size".into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
                    )
                })
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours just stays empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use actix_web::{App, HttpResponse, test, web};
    use tracing_actix_web::TracingLogger;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn handler() -> HttpResponse {
        tracing::info!("handling");
        HttpResponse::Ok().finish()
    }

    /// Query values never reach the logs, and a spoofed X-Forwarded-For from an untrusted peer
    /// is not logged as the client's address.
    #[actix_web::test]
    async fn request_logs_keep_no_query_values_nor_spoofed_addresses() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = test::init_service(
            App::new()
                .wrap(TracingLogger::<RequestSpan>::new())
                .route("/oauth2/authorize", web::get().to(handler)),
        )
        .await;
        let req = test::TestRequest::get()
            .uri("/oauth2/authorize?client_id=cli_1&code_challenge=SECRETCHALLENGE&next=%2Fapps")
            .peer_addr("203.0.113.9:5000".parse().unwrap())
            .insert_header(("x-forwarded-for", "6.6.6.6"))
            .to_request();
        let resp = test::call_service(&app, req).await;
        assert!(resp.status().is_success());
        let logged = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(logged.contains("handling"), "{logged}");
        assert!(
            logged.contains("/oauth2/authorize?client_id&code_challenge&next"),
            "{logged}"
        );
        assert!(!logged.contains("SECRETCHALLENGE"), "{logged}");
        assert!(!logged.contains("cli_1"), "{logged}");
        assert!(logged.contains("203.0.113.9"), "{logged}");
        assert!(!logged.contains("6.6.6.6"), "{logged}");
    }

    #[actix_web::test]
    async fn targets_keep_names_only() {
        assert_eq!(loggable_target("/login", ""), "/login");
        assert_eq!(loggable_target("/a", "x=1&&y&z=%2F"), "/a?x&y&z");
    }
}
