//! Reading a KYC submission outside its review (issue 18): while it awaits review compliance
//! members read it in the queue; once decided, its personal data and documents need a request
//! approved by a second compliance member and the credential it yields, checked and audited at
//! every read.

use developer_portal::StaffRole;
use e2e_tests::{TestApp, backends, spawn_app};
use reqwest::{Method, Response};
use serde_json::{Value, json};

async fn answer(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn ask(app: &TestApp, staff: &str, submission: &str, category: &str) -> (u16, Value) {
    let path = format!("/api/v1/admin/kyc/{submission}/access-requests");
    let body = json!({
        "justification": "Regulator asks for the onboarding file of this fintech",
        "category": category,
        "reference": "REG-2026-0007",
    });
    answer(app.api(Method::POST, &path, Some(staff), Some(&body)).await).await
}

async fn read(
    app: &TestApp,
    staff: &str,
    submission: &str,
    credential: Option<&str>,
) -> (u16, Value) {
    let mut r = app
        .client
        .get(app.url(&format!("/api/v1/admin/kyc/{submission}/record")))
        .bearer_auth(staff);
    if let Some(c) = credential {
        r = r.header("X-Staff-Credential", c);
    }
    answer(r.send().await.unwrap()).await
}

async fn post(app: &TestApp, staff: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    answer(app.api(Method::POST, path, Some(staff), body).await).await
}

async fn count_actions(app: &TestApp, action: &str) -> usize {
    app.audit_actions()
        .await
        .iter()
        .filter(|a| *a == action)
        .count()
}

/// A submission `dev_email` submitted and compliance member `reviewer` rejected.
async fn decided_submission(app: &TestApp, dev_email: &str, reviewer: &str) -> String {
    let dev = app.developer_token(dev_email).await;
    let submission = app.submitted_kyc(&dev).await;
    assert_eq!(
        app.review_kyc(reviewer, &submission, "reject")
            .await
            .status(),
        200
    );
    submission
}

#[tokio::test]
async fn a_decided_kyc_submission_is_read_only_with_a_four_eyes_credential_of_ones_own() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let a = app
            .staff_token_with_roles("compliance-a", &[StaffRole::Compliance])
            .await;
        let b = app
            .staff_token_with_roles("compliance-b", &[StaffRole::Compliance])
            .await;
        let support = app
            .staff_token_with_roles("support-k", &[StaffRole::Support, StaffRole::Security])
            .await;
        let dev = app.developer_token("onboarded@fintech.example").await;
        let submission = app.submitted_kyc(&dev).await;
        let detail = format!("/api/v1/admin/kyc/{submission}");

        // In review: read in the queue; no request needed (nor possible).
        let r = app.api(Method::GET, &detail, Some(&a), None).await;
        assert_eq!(r.status(), 200, "{backend:?}");
        assert_eq!(
            ask(&app, &a, &submission, "regulatory_inquiry").await.0,
            409
        );
        assert_eq!(count_actions(&app, "kyc.viewed").await, 1);

        // Decided: the review view refuses it and reads nothing.
        assert_eq!(
            app.review_kyc(&a, &submission, "reject").await.status(),
            200
        );
        let r = app.api(Method::GET, &detail, Some(&a), None).await;
        let (status, p) = answer(r).await;
        assert_eq!(status, 403, "{backend:?}: {p}");
        assert!(
            p["detail"].as_str().unwrap().contains("access-requests"),
            "{p}"
        );
        assert_eq!(count_actions(&app, "kyc.viewed").await, 1, "{backend:?}");

        // Bad requests open nothing.
        assert_eq!(
            ask(&app, &support, &submission, "regulatory_inquiry")
                .await
                .0,
            403
        );
        assert_eq!(ask(&app, &a, &submission, "curiosity").await.0, 400);
        assert_eq!(ask(&app, &a, "kyc_nope", "regulatory_inquiry").await.0, 404);
        // A draft is the developer's, not yet the bank's.
        let drafter = app.developer_token("drafting@fintech.example").await;
        let r = app.put_kyc(&drafter, &e2e_tests::portal::kyc_body()).await;
        let draft = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(ask(&app, &a, &draft, "regulatory_inquiry").await.0, 409);
        let r = app
            .api(
                Method::POST,
                &format!("/api/v1/admin/kyc/{submission}/access-requests"),
                None,
                Some(&json!({ "justification": "x", "category": "complaint", "reference": "r" })),
            )
            .await;
        assert_eq!(r.status(), 401);
        assert_eq!(count_actions(&app, "approval.requested").await, 0);

        let (s, v) = ask(&app, &a, &submission, "regulatory_inquiry").await;
        assert_eq!(s, 201, "{backend:?}: {v}");
        assert_eq!(v["action"], "kyc.read");
        assert_eq!(v["target_type"], "kyc_submission");
        let request = v["request_id"].as_str().unwrap().to_string();
        // One pending request per member and submission: the same member again is refused;
        // another member asks for a credential of their own.
        let (s, v) = ask(&app, &a, &submission, "regulatory_inquiry").await;
        assert_eq!(s, 400, "{backend:?}: {v}");
        let (s, v) = ask(&app, &b, &submission, "complaint").await;
        assert_eq!(s, 201, "{backend:?}: {v}");
        assert_ne!(v["request_id"].as_str(), Some(request.as_str()));
        let why = json!({ "justification": "Regulator letter REG-2026-0007 is on file" });
        let approve = format!("/api/v1/admin/approvals/{request}/approve");
        // Not oneself, not without the compliance role.
        assert_eq!(post(&app, &a, &approve, Some(&why)).await.0, 403);
        assert_eq!(post(&app, &support, &approve, Some(&why)).await.0, 403);
        let take = format!("/api/v1/admin/approvals/{request}/credential");
        assert_eq!(post(&app, &a, &take, None).await.0, 409, "not approved yet");
        assert_eq!(post(&app, &b, &approve, Some(&why)).await.0, 200);
        // Only the requester takes it.
        assert_eq!(post(&app, &b, &take, None).await.0, 404);
        let (s, v) = post(&app, &a, &take, None).await;
        assert_eq!(s, 201, "{backend:?}: {v}");
        assert_eq!(v["resource_type"], "kyc_submission");
        let credential = v["credential"].as_str().unwrap().to_string();
        let credential_id = v["credential_id"].as_str().unwrap().to_string();

        // Refused: no credential, another's credential, another submission, a changed one.
        assert_eq!(read(&app, &a, &submission, None).await.0, 403);
        assert_eq!(read(&app, &b, &submission, Some(&credential)).await.0, 403);
        let other = decided_submission(&app, "other@fintech.example", &b).await;
        assert_eq!(read(&app, &a, &other, Some(&credential)).await.0, 403);
        // One character in the middle changed (the signed bytes differ).
        let mut changed = credential.clone().into_bytes();
        let mid = changed.len() / 2;
        changed[mid] = if changed[mid] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(changed).unwrap();
        assert_eq!(read(&app, &a, &submission, Some(&changed)).await.0, 403);
        assert_eq!(count_actions(&app, "kyc.viewed_by_staff").await, 0);

        let (s, v) = read(&app, &a, &submission, Some(&credential)).await;
        assert_eq!(s, 200, "{backend:?}: {v}");
        assert_eq!(v["submission"]["legal_name"], "Acme Payments Ltd");
        assert_eq!(v["submission"]["status"], "rejected");
        // Audited against the submission, with the request's category and reference.
        let details: Vec<String> = {
            use diesel::prelude::*;
            use platform::storage::schema::audit_events as e;
            let submission = submission.clone();
            app.platform
                .db
                .run(move |c| {
                    Ok(e::table
                        .filter(e::action.eq("kyc.viewed_by_staff"))
                        .filter(e::target_id.eq(submission))
                        .select(e::details)
                        .load(c)?)
                })
                .await
                .unwrap()
        };
        assert_eq!(details.len(), 1, "{backend:?}");
        let d: Value = serde_json::from_str(&details[0]).unwrap();
        assert_eq!(d["category"], "regulatory_inquiry");
        assert_eq!(d["reference"], "REG-2026-0007");
        assert_eq!(d["approval_request"], request.as_str());

        // A reader who lost the compliance role reads no more, credential or not.
        set_roles(&app, "compliance-a", StaffRole::Support).await;
        assert_eq!(read(&app, &a, &submission, Some(&credential)).await.0, 403);
        set_roles(&app, "compliance-a", StaffRole::Compliance).await;
        assert_eq!(read(&app, &a, &submission, Some(&credential)).await.0, 200);

        // Revoked: refused at once.
        let revoke = format!("/api/v1/admin/credentials/{credential_id}/revocation");
        assert_eq!(post(&app, &b, &revoke, None).await.0, 204);
        assert_eq!(read(&app, &a, &submission, Some(&credential)).await.0, 403);
        assert_eq!(count_actions(&app, "kyc.viewed_by_staff").await, 2);
        app.stop().await;
    }
}

/// Gives staff member `username` the one role `role` (as the `consent staff roles` command).
async fn set_roles(app: &TestApp, username: &'static str, role: StaffRole) {
    let platform = app.platform.clone();
    tokio::task::spawn_blocking(move || {
        developer_portal::set_staff_roles(&platform, username, &[role]).unwrap()
    })
    .await
    .unwrap();
}

/// The staff pages: a decided submission shows its outline (no personal data) and a form to ask
/// for it; the credential taken on the credentials page reads it.
#[tokio::test]
async fn the_pages_ask_for_a_decided_submission_and_read_it_with_the_credential() {
    use e2e_tests::portal::{csrf_from_html, hidden_value};
    for backend in backends() {
        let app = spawn_app(backend).await;
        let a = app.staff_browser("ops-a").await;
        let b = app.staff_browser("ops-b").await;
        let reviewer = app.staff_token("ops-r").await;
        let submission = decided_submission(&app, "paged@fintech.example", &reviewer).await;

        let outline = app
            .page(&a, &format!("/developers/staff/kyc/{submission}"))
            .await;
        assert!(outline.contains("id=\"kyc-access\""), "{outline}");
        assert!(outline.contains("rejected"), "{outline}");
        assert!(
            !outline.contains("Acme Payments"),
            "no personal data: {outline}"
        );
        assert_eq!(count_actions(&app, "kyc.viewed").await, 0);
        let csrf = csrf_from_html(&outline).unwrap();
        let r = app
            .submit(
                &a,
                "/developers/staff/credentials/kyc-requests",
                &[
                    ("submission_id", submission.as_str()),
                    ("category", "complaint"),
                    ("reference", "CASE-9"),
                    ("justification", "Customer complaint about this fintech"),
                    ("csrf_token", &csrf),
                ],
            )
            .await;
        assert_eq!(r.status(), 303, "{backend:?}");

        let approvals = app.page(&b, "/developers/staff/approvals").await;
        assert!(approvals.contains("kyc.read"), "{approvals}");
        assert!(
            approvals.contains("CASE-9"),
            "the approver sees the reference"
        );
        let r = app.approve_on_page(&b, "Complaint CASE-9 is on file").await;
        assert_eq!(r.status(), 303, "{backend:?}");

        let taken = app.take_on_page(&a, &csrf).await;
        assert!(taken.contains("Read the KYC submission now"), "{taken}");
        let credential = hidden_value(&taken, "credential").expect("credential shown");
        let r = app
            .submit(
                &a,
                "/developers/staff/credentials/use-kyc",
                &[
                    ("credential", credential.as_str()),
                    ("submission_id", submission.as_str()),
                    ("csrf_token", &csrf),
                ],
            )
            .await;
        assert_eq!(r.status(), 200, "{backend:?}");
        assert!(r.text().await.unwrap().contains("Acme Payments Ltd"));
        assert_eq!(count_actions(&app, "kyc.viewed_by_staff").await, 1);

        // The developer is told: when and why, not who.
        let dev = app.developer_browser("paged@fintech.example").await;
        let kyc = app.page(&dev, "/developers/kyc").await;
        let at = kyc.find("id=\"staff-reads\"").expect("the read is listed");
        let listed = &kyc[at..kyc[at..].find("</ul>").unwrap() + at];
        assert!(listed.contains("complaint"), "{listed}");
        // Also on the form's error page.
        let t = e2e_tests::portal::csrf_from_html(&kyc).unwrap();
        let r = app
            .submit(
                &dev,
                "/developers/kyc",
                &[("legal_name", ""), ("action", "save"), ("csrf_token", &t)],
            )
            .await;
        assert!(r.status().is_client_error(), "{backend:?}: {}", r.status());
        assert!(r.text().await.unwrap().contains("id=\"staff-reads\""));
        let reader = app.staff_id("ops-a").await;
        assert!(
            !kyc.contains(&reader) && !kyc.contains("ops-a"),
            "never who: {listed}"
        );
        app.stop().await;
    }
}
