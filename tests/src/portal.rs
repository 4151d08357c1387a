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

    /// Creates an active staff member with every role (as `consent admin create --roles
    /// support,compliance,security` does) and returns its id.
    pub async fn create_staff(&self, username: &str) -> String {
        self.create_staff_with_roles(username, &developer_portal::StaffRole::ALL)
            .await
    }

    /// Creates an active staff member with `roles` and returns its id.
    pub async fn create_staff_with_roles(
        &self,
        username: &str,
        roles: &[developer_portal::StaffRole],
    ) -> String {
        let p = self.platform.clone();
        let username = username.to_string();
        let roles = roles.to_vec();
        tokio::task::spawn_blocking(move || {
            developer_portal::create_staff_user(&p, &username, "Staff Member", PASSWORD, &roles)
        })
        .await
        .unwrap()
        .expect("staff created")
        .0
        .id
    }

    /// A new enrolment code for staff member `staff_id` (as `consent admin reset-second-factor`
    /// gives one, without the reset), replacing the one given at creation.
    pub async fn enrolment_code(&self, staff_id: &str) -> String {
        let (id, now) = (staff_id.to_string(), self.platform.now());
        self.platform
            .db
            .write(move |c| {
                let code = developer_portal::second_factor::issue_enrolment_code(
                    c,
                    platform::audit::Actor::system("test"),
                    platform::session::SessionKind::Staff,
                    &id,
                    now,
                )
                .expect("enrolment code");
                Ok(code.to_string())
            })
            .await
            .expect("enrolment code")
    }

    /// The staff member whose login token `owing` is.
    pub async fn owing_staff_id(&self, owing: &str) -> String {
        let (token, now) = (owing.to_string(), self.platform.now());
        self.platform
            .db
            .run(move |c| {
                platform::session::load_owing(c, platform::session::SessionKind::Staff, &token, now)
            })
            .await
            .expect("session lookup")
            .expect("a login that owes a second factor")
            .0
            .subject_id
    }

    /// Creates a staff member, logs it in and sets up its authenticator (as at a first login);
    /// returns the full bearer token.
    pub async fn staff_token(&self, username: &str) -> String {
        self.staff_token_with_roles(username, &developer_portal::StaffRole::ALL)
            .await
    }

    /// [`TestApp::staff_token`] for a staff member created with `roles`.
    pub async fn staff_token_with_roles(
        &self,
        username: &str,
        roles: &[developer_portal::StaffRole],
    ) -> String {
        self.create_staff_with_roles(username, roles).await;
        let r = self.post_admin_login(username, PASSWORD).await;
        assert_eq!(r.status(), 200, "staff login");
        let login: Value = r.json().await.unwrap();
        assert_eq!(login["second_factor_due"], "enrol", "{login}");
        let (_, _, token) = self.enrol(login["access_token"].as_str().unwrap()).await;
        token
    }

    /// The id of staff member `username`.
    pub async fn staff_id(&self, username: &str) -> String {
        use diesel::prelude::*;
        use platform::storage::schema::staff;
        let username = username.to_string();
        self.platform
            .db
            .run(move |c| {
                Ok(staff::table
                    .filter(staff::username.eq(username))
                    .select(staff::id)
                    .first(c)?)
            })
            .await
            .unwrap()
    }

    /// Staff page client `staff` approves the first request it may decide on the approvals
    /// page, with `justification`: the answer to the decision.
    pub async fn approve_on_page(&self, staff: &reqwest::Client, justification: &str) -> Response {
        let approvals = self.page(staff, "/developers/staff/approvals").await;
        let decide =
            form_action(&approvals, "/developers/staff/approvals/").expect("a decision form");
        let csrf = csrf_from_html(&approvals).unwrap();
        self.submit(
            staff,
            &decide,
            &[
                ("decision", "approve"),
                ("justification", justification),
                ("csrf_token", &csrf),
            ],
        )
        .await
    }

    /// Staff page client `staff` takes the credential of its approved request from the
    /// credentials page: the page that shows it.
    pub async fn take_on_page(&self, staff: &reqwest::Client, csrf: &str) -> String {
        let page = self.page(staff, "/developers/staff/credentials").await;
        let request = hidden_value(&page, "request_id").expect("ready to take");
        self.submit(
            staff,
            "/developers/staff/credentials/take",
            &[("request_id", request.as_str()), ("csrf_token", csrf)],
        )
        .await
        .text()
        .await
        .unwrap()
    }

    /// Logs developer `email` (signed up with [`PASSWORD`]) in through the pages: a cookie
    /// client with a developer session.
    pub async fn developer_browser(&self, email: &str) -> reqwest::Client {
        let web = browser_client();
        let t = self.form_csrf(&web, "/developers/login").await;
        let r = self
            .submit(
                &web,
                "/developers/login",
                &[("email", email), ("password", PASSWORD), ("csrf_token", &t)],
            )
            .await;
        assert!(r.status().is_redirection(), "page login: {}", r.status());
        web
    }

    /// Logs staff member `username` (created with [`PASSWORD`], no authenticator yet) in on the
    /// login page: a cookie client whose session owes enrolment (checked: the answer sends it to
    /// the enrolment page).
    pub async fn staff_password_browser(&self, username: &str) -> reqwest::Client {
        let web = browser_client();
        let t = self.form_csrf(&web, "/developers/staff/login").await;
        let form = [
            ("username", username),
            ("password", PASSWORD),
            ("csrf_token", &t),
        ];
        let r = self.submit(&web, "/developers/staff/login", &form).await;
        assert_eq!(r.headers()["location"], "/developers/staff/second-factor");
        web
    }

    /// Creates a staff member and logs it in through the pages, setting up its authenticator:
    /// a cookie client with a full staff session.
    pub async fn staff_browser(&self, username: &str) -> reqwest::Client {
        self.staff_browser_with_roles(username, &developer_portal::StaffRole::ALL)
            .await
    }

    /// [`TestApp::staff_browser`] for a staff member created with `roles`.
    pub async fn staff_browser_with_roles(
        &self,
        username: &str,
        roles: &[developer_portal::StaffRole],
    ) -> reqwest::Client {
        let id = self.create_staff_with_roles(username, roles).await;
        let enrolment_code = self.enrolment_code(&id).await;
        let web = self.staff_password_browser(username).await;
        let t = self
            .form_csrf(&web, "/developers/staff/second-factor")
            .await;
        let started = self
            .submit(
                &web,
                "/developers/staff/second-factor",
                &[
                    ("step", "start"),
                    ("enrolment_code", &enrolment_code),
                    ("csrf_token", &t),
                ],
            )
            .await
            .text()
            .await
            .unwrap();
        let at = started.find("id=\"secret\">").expect("secret shown") + "id=\"secret\">".len();
        let secret: String = started[at..].chars().take_while(|c| *c != '<').collect();
        let r = self
            .submit(
                &web,
                "/developers/staff/second-factor",
                &[
                    ("code", self.totp_code(&secret, 0).as_str()),
                    ("csrf_token", &t),
                ],
            )
            .await;
        assert_eq!(r.status(), 200, "enrolled through the page");
        web
    }

    /// Enrols the staff member of the `owing` login token, with an enrolment code given to them
    /// now: (secret, recovery codes, full token).
    pub async fn enrol(&self, owing: &str) -> (String, Vec<String>, String) {
        let code = self.enrolment_code(&self.owing_staff_id(owing).await).await;
        let r = self
            .api(
                Method::POST,
                "/api/v1/admin/second-factor",
                Some(owing),
                Some(&json!({ "enrolment_code": code })),
            )
            .await;
        assert_eq!(r.status(), 200, "enrol");
        let secret = r.json::<Value>().await.unwrap()["secret"]
            .as_str()
            .unwrap()
            .to_string();
        let code = self.totp_code(&secret, 0);
        let r = self
            .api(
                Method::POST,
                "/api/v1/admin/second-factor/confirm",
                Some(owing),
                Some(&json!({ "code": code })),
            )
            .await;
        assert_eq!(r.status(), 200, "confirm");
        let v: Value = r.json().await.unwrap();
        let codes = v["recovery_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        let token = v["session"]["access_token"].as_str().unwrap().to_string();
        (secret, codes, token)
    }

    /// What an authenticator app with `secret` shows `steps_ahead` 30-second steps from the
    /// server's now.
    pub fn totp_code(&self, secret: &str, steps_ahead: i64) -> String {
        let totp = platform::totp::Totp::from_base32(secret).expect("base32 secret");
        totp.code_for_step(platform::totp::step_at(self.platform.now()) + steps_ahead)
    }

    /// Logs a staff member with an authenticator in: password, then the code of the step after
    /// the current one (the current one may have been used already); returns the full token.
    pub async fn staff_login_with(&self, username: &str, secret: &str) -> String {
        let r = self.post_admin_login(username, PASSWORD).await;
        assert_eq!(r.status(), 200, "staff login");
        let login: Value = r.json().await.unwrap();
        assert_eq!(login["second_factor_due"], "verify", "{login}");
        let r = self
            .api(
                Method::POST,
                "/api/v1/admin/login/second-factor",
                login["access_token"].as_str(),
                Some(&json!({ "code": self.totp_code(secret, 1) })),
            )
            .await;
        assert_eq!(r.status(), 200, "second factor");
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
        let html = self.page(client, path).await;
        csrf_from_html(&html).unwrap_or_else(|| panic!("no csrf_token on {path}: {html}"))
    }

    /// Signs `email` up through the sign-up page with `client` (which then holds the session).
    pub async fn sign_up_on_page(&self, client: &reqwest::Client, email: &str) -> Response {
        let t = self.form_csrf(client, "/developers/signup").await;
        self.submit(
            client,
            "/developers/signup",
            &[
                ("email", email),
                ("display_name", "Page"),
                ("password", PASSWORD),
                ("csrf_token", &t),
            ],
        )
        .await
    }

    /// POSTs `form` to `path` with `client` (its cookies).
    pub async fn submit(
        &self,
        client: &reqwest::Client,
        path: &str,
        form: &[(&str, &str)],
    ) -> Response {
        client.post(self.url(path)).form(form).send().await.unwrap()
    }

    /// The body of GET `path` with `client` (its cookies).
    pub async fn page(&self, client: &reqwest::Client, path: &str) -> String {
        client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Every audit event's action, oldest first.
    pub async fn audit_actions(&self) -> Vec<String> {
        use diesel::prelude::*;
        use platform::storage::schema::audit_events;
        self.platform
            .db
            .run(|c| {
                Ok(audit_events::table
                    .order(audit_events::seq.asc())
                    .select(audit_events::action)
                    .load::<String>(c)?)
            })
            .await
            .unwrap()
    }
}

/// The `action` of the first form on `html` whose action starts with `prefix`.
pub fn form_action(html: &str, prefix: &str) -> Option<String> {
    let at = html.find(&format!("action=\"{prefix}"))? + "action=\"".len();
    Some(html[at..].chars().take_while(|c| *c != '"').collect())
}

/// The value of the first input `name` in `html` (`name="..." value="..."`).
pub fn hidden_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))? + name.len() + 15;
    Some(html[at..].chars().take_while(|c| *c != '"').collect())
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
