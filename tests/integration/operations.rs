//! Health, readiness, metrics, landing page, docs, OpenAPI drift, error shape, shutdown.

use e2e_tests::{Backend, backends, spawn_app, spawn_app_with};
use serde_json::Value;

#[tokio::test]
async fn health_readiness_and_landing() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let r = app.get_healthz().await;
        assert_eq!(r.status(), 200, "{backend:?}");
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");

        let r = app.get_readyz().await;
        assert_eq!(r.status(), 200, "{backend:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["database"], "ok");
        assert_eq!(body["cache"], "ok", "{backend:?}: {body}");
        let expected_cache = if backend == Backend::Postgres && e2e_tests::redis_url().is_some() {
            "redis"
        } else {
            "in-process"
        };
        assert_eq!(body["cache_kind"], expected_cache);

        let r = app.get("/").await;
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        let html = r.text().await.unwrap();
        for link in ["/account/apps", "/developers", "/docs/"] {
            assert!(
                html.contains(&format!("href=\"{link}\"")),
                "landing links {link}"
            );
        }
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external assets"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn docs_are_served_offline_and_spec_matches_the_committed_file() {
    let app = spawn_app(Backend::Sqlite).await;
    let r = app.get("/docs/").await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "swagger UI index");
    assert!(
        !html.contains("unpkg.com") && !html.contains("cdn"),
        "no CDN: {html}"
    );
    // Without the slash: sent to it (the UI's relative assets need it).
    let r = app.get("/docs").await;
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/docs/");
    let r = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(r.status(), 200, "bundle served from the binary");
    let r = app.get("/docs/swagger-initializer.js").await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("/openapi.json"));

    let served: Value = app.get_openapi().await.json().await.unwrap();
    let generated: Value = serde_json::from_str(&consent::openapi::spec_json()).unwrap();
    assert_eq!(served, generated);
    app.stop().await;
}

/// `openapi/openapi.json` is generated from code; this fails when it drifts. Regenerate with
/// `cargo run -q -- openapi > openapi/openapi.json` (or UPDATE_OPENAPI=1 cargo test).
#[test]
fn committed_openapi_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
    let generated = consent::openapi::spec_json();
    if std::env::var("UPDATE_OPENAPI").as_deref() == Ok("1") {
        std::fs::write(path, format!("{generated}\n")).unwrap();
    }
    let committed = std::fs::read_to_string(path).expect("openapi/openapi.json exists");
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is stale: run `cargo run -q -- openapi > openapi/openapi.json`"
    );
    let spec: Value = serde_json::from_str(&committed).unwrap();
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert!(spec["paths"][path].is_object(), "{path} documented");
    }
    assert!(spec["components"]["schemas"]["Problem"].is_object());
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let app = spawn_app(Backend::Sqlite).await;
    app.get_healthz().await;
    let r = app.get_metrics().await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    assert!(text.contains("consent_http_requests_total{"), "{text}");
    assert!(text.contains("route=\"/healthz\""));
    app.stop().await;
}

/// Any token is a valid HTTP method. Each one used to become a `method` label value, a series
/// the registry keeps for the life of the process: a client inventing methods grew the server's
/// memory and `/metrics` without bound. Non-standard methods are all counted as `OTHER`.
#[tokio::test]
async fn invented_methods_do_not_grow_the_metrics() {
    let app = spawn_app(Backend::Sqlite).await;
    let invented: Vec<String> = (0..20).map(|i| format!("QZX{i}INVENTED")).collect();
    for name in &invented {
        let method = reqwest::Method::from_bytes(name.as_bytes()).unwrap();
        let r = app
            .client
            .request(method, app.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{name}: {}", r.status());
    }
    let text = app.get_metrics().await.text().await.unwrap();
    for name in &invented {
        assert!(!text.contains(name.as_str()), "{name} became a label");
    }
    assert!(text.contains("method=\"OTHER\""), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_problem_details() {
    let app = spawn_app(Backend::Sqlite).await;
    for (method, path) in [
        ("GET", "/nope"),
        ("POST", "/healthz"),
        ("DELETE", "/"),
        ("GET", "/api/v1/%ZZ"),
    ] {
        let r = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert!(status.is_client_error(), "{method} {path}: {status}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["status"], status.as_u16());
        assert!(p["title"].is_string() && p["type"].is_string());
    }
    app.stop().await;
}

#[tokio::test]
async fn redis_outage_degrades_readiness_but_keeps_serving() {
    let app = spawn_app_with(Backend::Sqlite, Default::default(), |s| {
        s.redis.url = Some(platform::config::Secret::new("redis://127.0.0.1:1".into()));
    })
    .await;
    let r = app.get_readyz().await;
    assert_eq!(r.status(), 200, "the database decides readiness");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["cache"], "degraded");
    assert_eq!(body["cache_kind"], "redis");
    assert_eq!(app.get_healthz().await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_links_pending_audit_events() {
    let app = spawn_app_with(Backend::Sqlite, Default::default(), |s| {
        // Long interval: only the shutdown pass can link the event.
        s.lifecycle.audit_chain_interval = "1h".parse().unwrap();
    })
    .await;
    let platform = app.platform.clone();
    // The linker's first tick fires at start; let it pass before writing.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    platform
        .audit
        .record_one(
            platform::audit::NewEvent::new(
                platform::audit::Actor::system("test"),
                "test.event",
                platform::audit::Target::new("test", "1"),
            ),
            platform.now(),
        )
        .await
        .unwrap();
    assert_eq!(platform.audit.verify().await.unwrap().unlinked_events, 1);
    app.stop().await;
    let report = platform.audit.verify().await.unwrap();
    assert_eq!(report.unlinked_events, 0, "linked on shutdown");
    assert!(report.valid);
}

#[tokio::test]
async fn landing_page_and_swagger_ui_render_in_chromium() {
    let app = spawn_app(Backend::Sqlite).await;
    if let Some(result) = e2e_tests::browser::run("smoke.mjs", &[&app.address]).await {
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(result["a11y"], serde_json::json!([]), "{result}");
    }
    app.stop().await;
}

/// Served over https, every answer tells browsers to keep to https (HSTS); over plain http (a
/// loopback demo) it would be meaningless and is not sent.
#[tokio::test]
async fn hsts_is_sent_when_served_over_https() {
    let backend = backends()[0];
    let plain = spawn_app(backend).await;
    let r = plain.get_healthz().await;
    assert!(
        r.headers().get("strict-transport-security").is_none(),
        "{:?}",
        r.headers()
    );
    plain.stop().await;
    let https = spawn_app_with(backend, Default::default(), |s| {
        s.server.public_url = Some("https://bank.example".into());
        s.security.secure_cookies = None;
    })
    .await;
    for path in ["/healthz", "/login", "/nowhere"] {
        let r = https.get(path).await;
        assert_eq!(
            r.headers()["strict-transport-security"],
            "max-age=31536000; includeSubDomains",
            "{path}"
        );
    }
    https.stop().await;
}

/// The Set-Cookie headers of `r`.
fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// Cookies are `Secure` and `__Host-` prefixed unless a development setting says otherwise
/// (whatever `public_url` is): a plain-http page or a sibling subdomain cannot plant a session or
/// CSRF cookie. Only the prefixed name is read back. `--demo` on loopback relaxes it.
#[tokio::test]
async fn cookies_are_host_prefixed_and_secure_by_default() {
    for backend in backends() {
        let app = spawn_app_with(backend, Default::default(), |s| {
            s.security.secure_cookies = None;
        })
        .await;
        let r = app.get("/login").await;
        let cookies = set_cookies(&r);
        let csrf_cookie = cookies
            .iter()
            .find(|c| c.starts_with("__Host-consent_csrf="))
            .unwrap_or_else(|| panic!("{cookies:?}"));
        assert!(csrf_cookie.contains("Secure") && csrf_cookie.contains("Path=/"));
        assert!(!csrf_cookie.to_ascii_lowercase().contains("domain="));
        let value = csrf_cookie
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("__Host-consent_csrf=")
            .to_string();
        let csrf = e2e_tests::oauth::csrf_from(&r.text().await.unwrap());
        let form = [
            ("csrf_token", csrf.as_str()),
            ("username", "alice"),
            ("password", "wrong password"),
            ("next", "/"),
        ];
        // The cookie under its unprefixed name (what a subdomain could plant) is not read.
        let plain = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = plain
            .post(app.url("/login"))
            .header("cookie", format!("consent_csrf={value}"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{backend:?}");
        // Under its own name it is: the form goes through (to a wrong-password answer).
        let r = plain
            .post(app.url("/login"))
            .header("cookie", format!("__Host-consent_csrf={value}"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{backend:?}");
        app.stop().await;
    }
    // The loopback demo relaxes it, so curl and plain-http clients keep their sessions.
    let backend = backends()[0];
    let demo = e2e_tests::spawn_app_with(
        backend,
        consent::ServeOptions {
            demo: true,
            ..Default::default()
        },
        |s| s.security.secure_cookies = None,
    )
    .await;
    let r = demo.get("/login").await;
    let cookies = set_cookies(&r);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("consent_csrf=") && !c.contains("Secure")),
        "{cookies:?}"
    );
    demo.stop().await;
}

/// `/metrics` is not public: with a metrics token configured, only a caller presenting it gets
/// the numbers (without one, only loopback callers, as every other test here is).
#[tokio::test]
async fn metrics_need_the_configured_token() {
    let backend = backends()[0];
    let app = spawn_app_with(backend, Default::default(), |s| {
        s.server.metrics_token = Some(platform::config::Secret::new(
            "mt_0123456789abcdef0123456789abcdef".into(),
        ));
    })
    .await;
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], 403);
    let r = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("mt_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("mt_0123456789abcdef0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("consent_http_requests_total")
    );
    app.stop().await;
    // Behind a reverse proxy on the same host, loopback is not enough: the forwarded client
    // address must be loopback too.
    let app = spawn_app_with(backend, Default::default(), |s| {
        s.server.trusted_proxies = "127.0.0.1/32".parse().unwrap();
    })
    .await;
    let r = app
        .client
        .get(app.url("/metrics"))
        .header("x-forwarded-for", "203.0.113.5")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "an internet caller through the local proxy"
    );
    assert_eq!(app.get("/metrics").await.status(), 200, "the host itself");
    app.stop().await;
}
