//! Request targets: RAR `authorization_details` / `scope`, and the form bodies of the token/PAR
//! endpoints and the consent page.

use chrono::{DateTime, Duration, Utc};
use consent::oauth::OAuthError;
use consent::oauth::clients::ClientCredentials;
use consent::oauth::flow::{self, Decision, OfferedAccount};
use consent::oauth::rar::AccessRequest;
use consent::routes::oauth::{client_credentials, params_from, parse_form_body};
use consent::routes::pages::{consent_decision, form_pairs};

/// The server's clock: with a fraction of a second, as `Utc::now()` has.
fn now() -> DateTime<Utc> {
    crate::fixtures::now() + Duration::milliseconds(250)
}

/// The server's default maximum consent lifetime.
fn max_lifetime() -> Duration {
    Duration::days(180)
}

/// Splits at the first NUL byte: (before, after it if any).
fn split_nul(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}

/// The input as `authorization_details`, or, after a NUL byte, `authorization_details` NUL
/// `scope` (lossy UTF-8). Without a NUL, it is also tried as `scope` alone.
///
/// Checks (via [`check_access`]): parsing returns, never panics; an accepted request is valid,
/// survives storage (`to_json` then `from_stored`) and the token response (`to_json` parsed
/// again as a request) unchanged, contains itself, and its scope string means its actions.
pub fn rar(data: &[u8]) {
    let (details, scope) = split_nul(data);
    let details = String::from_utf8_lossy(details);
    let scope = scope.map(String::from_utf8_lossy);
    check_access(Some(&details), scope.as_deref(), now());
    if scope.is_none() {
        check_access(None, Some(&details), now());
    }
}

/// Parses like PAR does, then checks the properties [`rar`] lists; returns the request.
fn check_access(
    details: Option<&str>,
    scope: Option<&str>,
    now: DateTime<Utc>,
) -> Option<AccessRequest> {
    let request = AccessRequest::parse(details, scope, now, max_lifetime()).ok()?;
    check_request(&request, now);
    // What the token response returns, sent back as a request, asks for the same.
    let again = AccessRequest::parse(Some(&request.to_json()), None, now, max_lifetime());
    assert_eq!(again.as_ref().ok(), Some(&request), "{}", request.to_json());
    // The scope string names the same actions.
    let by_scope = AccessRequest::parse(None, Some(&request.scope_string()), now, max_lifetime())
        .expect("scope_string is not a valid scope");
    assert_eq!(by_scope.actions, request.actions);
    Some(request)
}

/// What holds of every request the server would store (parsed, or narrowed by the customer).
fn check_request(request: &AccessRequest, now: DateTime<Utc>) {
    assert!(!request.actions.is_empty());
    assert!(request.expires_at > now, "{request:?}");
    assert!(request.expires_at <= now + max_lifetime(), "{request:?}");
    assert!(
        request.contains(request),
        "does not contain itself: {request:?}"
    );
    // Stored as JSON, read back by the consent page and the token endpoint.
    let json = request.to_json();
    let stored = AccessRequest::from_stored(&json);
    assert_eq!(stored.as_ref().ok(), Some(request), "{json}");
}

/// The input as a form body (before a NUL byte) and an `Authorization` header value (after it).
/// The body is read as the token/PAR endpoints read theirs and as the consent page reads its
/// POST.
///
/// Checks: nothing panics; the endpoints' parser (repeated names refused) agrees with the
/// consent page's (repeated names kept); client credentials are taken from exactly one place
/// and never leave `client_secret` in the form; the PAR parameters go through
/// [`rar`]'s checks; a customer's choice is narrowed against two requests, and every grant it
/// makes is within the request, on offered accounts only, valid for a token, and survives storage.
pub fn oauth_form(data: &[u8]) {
    let (body, authorization) = split_nul(data);
    let authorization = authorization.map(String::from_utf8_lossy);
    let pairs = form_pairs(body);

    // Token / PAR / revoke / introspect endpoints.
    match parse_form_body(Some("application/x-www-form-urlencoded"), body) {
        Ok(form) => {
            assert_eq!(form.len(), pairs.len(), "a pair was lost");
            for (k, v) in &pairs {
                assert_eq!(form.get(k), Some(v));
            }
            let params = params_from(&form);
            check_access(
                params.authorization_details.as_deref(),
                params.scope.as_deref(),
                now(),
            );
            let mut rest = form.clone();
            match client_credentials(authorization.as_deref(), &mut rest, None) {
                Ok(ClientCredentials::Basic { client_id, .. }) => {
                    assert!(!form.contains_key("client_secret"));
                    if let Some(id) = form.get("client_id") {
                        assert_eq!(id, &client_id);
                    }
                }
                Ok(ClientCredentials::Post { client_id, .. }) => {
                    assert!(form.contains_key("client_secret"));
                    assert_eq!(
                        form.get("client_id").cloned().unwrap_or_default(),
                        client_id
                    );
                }
                Ok(ClientCredentials::Assertion { client_id, .. }) => {
                    assert!(!form.contains_key("client_secret"));
                    assert_eq!(
                        form.get("client_assertion_type").map(String::as_str),
                        Some(consent::oauth::assertion::ASSERTION_TYPE)
                    );
                    if let Some(id) = form.get("client_id") {
                        assert_eq!(id, &client_id);
                    }
                }
                Ok(ClientCredentials::Proven(_)) => {
                    panic!("only a checked assertion is proven, never a parsed form")
                }
                Ok(ClientCredentials::Certificate { .. }) => {
                    panic!("no certificate was presented")
                }
                Err(OAuthError::InvalidRequest(_) | OAuthError::InvalidClient(_)) => {}
                Err(e) => panic!("unexpected credentials error {e:?}"),
            }
            assert!(!rest.contains_key("client_secret"));
            assert!(!rest.contains_key("client_assertion"));
        }
        Err(OAuthError::InvalidRequest(_)) => {
            let mut keys: Vec<_> = pairs.iter().map(|(k, _)| k).collect();
            keys.sort();
            let before = keys.len();
            keys.dedup();
            assert!(keys.len() < before, "refused a form with no repeated name");
        }
        Err(e) => panic!("unexpected form error {e:?}"),
    }
    let wrong_type = parse_form_body(Some("application/json"), body);
    assert!(wrong_type.is_err());

    // The consent page's POST.
    if let Some(Decision::Approve(choice)) = consent_decision(&pairs) {
        let offered = offered();
        for requested in consent_requests() {
            let Ok(granted) = flow::narrowed(&requested, &offered, &choice, now()) else {
                continue;
            };
            check_request(&granted, now());
            assert!(requested.contains(&granted));
            let accounts = granted.accounts.clone().unwrap_or_default();
            assert!(!accounts.is_empty());
            assert!(
                accounts
                    .iter()
                    .all(|a| offered.iter().any(|o| o.id == a.as_str()))
            );
            // A merchant limit stays; an app that asked for all merchants is limited only to
            // the ones the customer chose.
            match (&requested.merchants, &granted.merchants) {
                (Some(_), granted) => assert!(granted.is_some()),
                (None, None) => assert!(choice.merchants.is_empty()),
                (None, Some(limit)) => assert!(
                    !limit.is_empty()
                        && limit
                            .iter()
                            .all(|m| choice.merchants.iter().any(|c| c == m.as_str()))
                ),
            }
            // The grant must be mintable: tokens are made from it at the token endpoint.
            grants::GrantScope::new(
                accounts,
                granted.actions.clone(),
                granted.window,
                granted.merchants.clone(),
                granted.expires_at,
            )
            .unwrap_or_else(|e| panic!("granted {granted:?} cannot be minted: {e}"));
        }
    }
}

fn offered() -> Vec<OfferedAccount> {
    ["acc_1", "acc_2", "acc_3"]
        .into_iter()
        .map(|id| OfferedAccount {
            id: id.into(),
            name: "Current".into(),
            masked_number: "****1234".into(),
            currency: "EUR".into(),
        })
        .collect()
}

/// What a consent page may have been asked for: everything limited, and nearly nothing.
fn consent_requests() -> Vec<AccessRequest> {
    let limited = r#"[{"type":"account_access","actions":["accounts:read","transactions:read"],
        "accounts":["acc_1","acc_2"],"transactions_from":"2025-01-01","transactions_until":"2025-12-31",
        "merchants":["m_1","m_2"],"expires_at":"2026-06-01"}]"#;
    [Some(limited), None]
        .into_iter()
        .map(|d| {
            AccessRequest::parse(
                d,
                Some("accounts:read transactions:read"),
                now(),
                max_lifetime(),
            )
            .unwrap()
        })
        .collect()
}
