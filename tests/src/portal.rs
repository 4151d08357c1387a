//! Helpers for the developer-portal tests: one per endpoint, plus fixtures (staff users, KYC
//! bodies) and page-form helpers (CSRF tokens scraped from the rendered form).

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::TestApp;

pub const PASSWORD: &str = "correct horse battery staple";

/// A fresh cookie-jar client for page flows of a second user.
pub fn browser_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .expect("http client")
}

impl TestApp {
    /// A JSON request with an optional bearer token.
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let mut r = self.client.request(method, self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        r.send().await.expect("request")
    }

    pub async fn post_developers(&self, email: &str, password: &str) -> Response {
        self.api(
            Method::POST,
            "/api/v1/developers",
            None,
            Some(&json!({ "email": email, "password": password, "display_name": "Dev Eloper" })),
        )
        .await
    }

    pub async fn post_developer_login(&self, email: &str, password: &str) -> Response {
        self.api(
            Method::POST,
            "/api/v1/developers/login",
            None,
            Some(&json!({ "email": email, "password": password })),
        )
        .await
    }

    pub async fn post_admin_login(&self, username: &str, password: &str) -> Response {
        self.api(
            Method::POST,
            "/api/v1/admin/login",
            None,
            Some(&json!({ "username": username, "password": password })),
        )
        .await
    }

    /// Signs a developer up and returns a bearer token.
    pub async fn developer_token(&self, email: &str) -> String {
        let r = self.post_developers(email, PASSWORD).await;
        assert_eq!(
            r.status(),
            201,
            "sign up {email}: {}",
            r.text().await.unwrap_or_default()
        );
        let r = self.post_developer_login(email, PASSWORD).await;
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Creates an active staff member (as `consent admin create` does) and returns its id.
    pub async fn create_staff(&self, username: &str) -> String {
        let p = self.platform.clone();
        let username = username.to_string();
        tokio::task::spawn_blocking(move || {
            developer_portal::create_staff_user(&p, &username, "Staff Member", PASSWORD)
        })
        .await
        .unwrap()
        .expect("staff created")
        .id
    }

    /// Creates a staff member and returns a bearer token for it.
    pub async fn staff_token(&self, username: &str) -> String {
        self.create_staff(username).await;
        let r = self.post_admin_login(username, PASSWORD).await;
        assert_eq!(r.status(), 200, "staff login");
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn put_kyc(&self, token: &str, body: &Value) -> Response {
        self.api(
            Method::PUT,
            "/api/v1/developers/me/kyc",
            Some(token),
            Some(body),
        )
        .await
    }

    pub async fn submit_kyc(&self, token: &str) -> Response {
        self.api(
            Method::POST,
            "/api/v1/developers/me/kyc/submit",
            Some(token),
            None,
        )
        .await
    }

    /// Saves and submits [`kyc_body`]; returns the submission id.
    pub async fn submitted_kyc(&self, token: &str) -> String {
        let r = self.put_kyc(token, &kyc_body()).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        let r = self.submit_kyc(token).await;
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn review_kyc(
        &self,
        staff_token: &str,
        submission: &str,
        decision: &str,
    ) -> Response {
        self.api(
            Method::POST,
            &format!("/api/v1/admin/kyc/{submission}/reviews"),
            Some(staff_token),
            Some(&json!({ "decision": decision, "justification": format!("{decision}: checked the registry and documents") })),
        )
        .await
    }

    pub async fn post_client(&self, token: &str, body: &Value) -> Response {
        self.api(Method::POST, "/api/v1/clients", Some(token), Some(body))
            .await
    }

    /// Creates a sandbox client; returns (client id, secret).
    pub async fn sandbox_client(&self, token: &str) -> (String, String) {
        let r = self.post_client(token, &client_body("sandbox")).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        let v: Value = r.json().await.unwrap();
        (
            v["client_id"].as_str().unwrap().to_string(),
            v["client_secret"].as_str().unwrap().to_string(),
        )
    }

    /// GETs a page with `client` and returns the `csrf_token` of its first form.
    pub async fn form_csrf(&self, client: &reqwest::Client, path: &str) -> String {
        let html = client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        csrf_from_html(&html).unwrap_or_else(|| panic!("no csrf_token on {path}: {html}"))
    }
}

/// The value of the first `<input name="csrf_token">` in `html`.
pub fn csrf_from_html(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf_token\"")?;
    let rest = &html[at..];
    let v = rest.find("value=\"")? + 7;
    let end = rest[v..].find('"')?;
    Some(rest[v..v + end].to_string())
}

pub fn kyc_body() -> Value {
    json!({
        "legal_name": "Acme Payments Ltd",
        "registration_number": "HRB-123456",
        "country": "de",
        "address": "1 Example Street, 10115 Berlin",
        "contact_person": "Jane Compliance",
        "documents": [{
            "kind": "certificate_of_incorporation",
            "filename": "incorporation.pdf",
            "sha256": "a".repeat(64),
        }],
    })
}

pub fn client_body(environment: &str) -> Value {
    json!({
        "name": "Budget buddy",
        "environment": environment,
        "redirect_uris": [if environment == "sandbox" { "http://127.0.0.1:9000/callback" } else { "https://app.example.com/callback" }],
    })
}
