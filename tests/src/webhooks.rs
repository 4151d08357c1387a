//! A local webhook receiver for the end-to-end tests, and an independent implementation of the
//! Standard Webhooks signature check (written from the specification, not shared with the server).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("webhook body is JSON")
    }
}

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    /// Answer 503 to everything (the receiver is "down" but reachable).
    failing: Mutex<bool>,
}

/// An HTTP server on 127.0.0.1 recording every POST.
pub struct Receiver {
    pub url: String,
    pub port: u16,
    state: Arc<State>,
    handle: actix_web::dev::ServerHandle,
}

async fn hook(req: HttpRequest, body: web::Bytes, state: web::Data<Arc<State>>) -> HttpResponse {
    let h = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let failing = *state.failing.lock().unwrap();
    state.received.lock().unwrap().push(Received {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if failing {
        HttpResponse::ServiceUnavailable().finish()
    } else {
        HttpResponse::NoContent().finish()
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("url", &self.url).finish()
    }
}

impl Receiver {
    /// Starts on a free port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Starts on `port` (0: any free port).
    pub async fn start_on(port: u16) -> Self {
        let state = Arc::new(State::default());
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/hook", web::post().to(hook))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", port))
        .expect("receiver binds");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            port,
            state,
            handle,
        }
    }

    pub fn set_failing(&self, failing: bool) {
        *self.state.failing.lock().unwrap() = failing;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits (up to `timeout`) until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// HMAC-SHA256 (RFC 2104) over SHA-256, from the definition.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// The Standard Webhooks check a receiver makes: the timestamp within `tolerance` of `now`
/// (Unix seconds) and one of the space-separated `v1,<base64>` signatures matching
/// HMAC-SHA256(base64-decoded secret, "{id}.{timestamp}.{body}").
pub fn verify(secret: &str, r: &Received, now: i64, tolerance: i64) -> Result<(), String> {
    let ts: i64 = r
        .timestamp
        .parse()
        .map_err(|_| "bad timestamp".to_string())?;
    if (now - ts).abs() > tolerance {
        return Err(format!("timestamp {ts} too far from {now}"));
    }
    let key = STANDARD
        .decode(
            secret
                .strip_prefix("whsec_")
                .ok_or("secret without whsec_")?,
        )
        .map_err(|e| e.to_string())?;
    let expected = hmac_sha256(
        &key,
        format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes(),
    );
    for sig in r.signature.split(' ') {
        if let Some(b64) = sig.strip_prefix("v1,")
            && STANDARD.decode(b64).ok().as_deref() == Some(&expected[..])
        {
            return Ok(());
        }
    }
    Err("no matching signature".into())
}

/// A receiver that accepts connections and never answers (each request runs to the sender's
/// timeout). [`HangingReceiver::accepted`] resolves once per connection accepted.
#[derive(Debug)]
pub struct HangingReceiver {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    accepted: tokio::sync::mpsc::UnboundedReceiver<()>,
    holder: tokio::task::JoinHandle<()>,
}

impl HangingReceiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let url = format!("http://{}/hook", listener.local_addr().expect("bound"));
        let (tx, accepted) = tokio::sync::mpsc::unbounded_channel();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
                let _ = tx.send(());
            }
        });
        Self {
            url,
            accepted,
            holder,
        }
    }

    /// Waits (at most `timeout`) for the next connection; panics if none comes.
    pub async fn accepted(&mut self, timeout: Duration) {
        tokio::time::timeout(timeout, self.accepted.recv())
            .await
            .expect("a sender reached the hanging receiver");
    }
}

impl Drop for HangingReceiver {
    fn drop(&mut self) {
        self.holder.abort();
    }
}
