//! A Shared Signals push receiver (RFC 8935) for the end-to-end tests, and the check of SETs by
//! a stock JOSE library (`tests/python/ssf_receiver.py`, joserfc).

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/ssf_receiver.py");

/// One push the receiver got.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub content_type: String,
    pub authorization: String,
    pub set: String,
    /// When it arrived.
    pub at: std::time::Instant,
}

#[derive(Debug, Default)]
struct State {
    received: Mutex<Vec<Pushed>>,
    /// The status to answer (202 when 0).
    answer: Mutex<u16>,
}

/// An HTTP server on 127.0.0.1 recording every POST and answering 202, or what it is told.
pub struct SetReceiver {
    pub url: String,
    state: Arc<State>,
    handle: actix_web::dev::ServerHandle,
}

impl std::fmt::Debug for SetReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetReceiver")
            .field("url", &self.url)
            .finish()
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<Arc<State>>) -> HttpResponse {
    let h = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    state.received.lock().unwrap().push(Pushed {
        content_type: h("content-type"),
        authorization: h("authorization"),
        set: String::from_utf8_lossy(&body).into_owned(),
        at: std::time::Instant::now(),
    });
    match *state.answer.lock().unwrap() {
        0 | 202 => HttpResponse::Accepted().finish(),
        400 => HttpResponse::BadRequest().json(json!({
            "err": "invalid_audience", "description": "not for us"
        })),
        s => HttpResponse::build(actix_web::http::StatusCode::from_u16(s).unwrap()).finish(),
    }
}

impl SetReceiver {
    pub async fn start() -> Self {
        let state = Arc::new(State::default());
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/events", web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("receiver binds");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/events"),
            state,
            handle,
        }
    }

    /// Answer `status` from now on (202: accept).
    pub fn answer(&self, status: u16) {
        *self.state.answer.lock().unwrap() = status;
    }

    pub fn received(&self) -> Vec<Pushed> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits (up to `timeout`) until at least `n` pushes arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Pushed> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// Whether python3 with joserfc is here (a panic when CI requires it and it is not).
pub fn joserfc_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import joserfc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var("GRANTS_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
        panic!("GRANTS_REQUIRE_PYTHON=1 but python3 with joserfc is missing (pip install joserfc)");
    }
    ok
}

/// Verifies `sets` with joserfc against `jwks`: `Ok([{kid, claims}])`, or the script's complaint.
pub async fn verify_sets(
    jwks: &Value,
    sets: &[String],
    issuer: &str,
    audience: &str,
) -> Result<Vec<Value>, String> {
    let input =
        json!({ "jwks": jwks, "sets": sets, "issuer": issuer, "audience": audience }).to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
            Ok(v.as_array().unwrap().clone())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await
    .unwrap()
}

/// The claims of a compact JWS, unverified (for timing and ordering; [`verify_sets`] checks).
pub fn claims_of(jws: &str) -> Value {
    use base64::Engine;
    let payload = jws.split('.').nth(1).expect("a compact JWS");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("JSON claims")
}
