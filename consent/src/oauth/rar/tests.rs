use super::*;

fn now() -> DateTime<Utc> {
    parse_instant("2026-06-01T00:00:00Z", false).unwrap()
}

fn parse(json: &str) -> Result<AccessRequest, OAuthError> {
    AccessRequest::parse(Some(json), None, now(), Duration::days(180))
}

fn grant(actions: &str, extra: &str) -> AccessRequest {
    parse(&format!(
        r#"[{{"type":"account_access","actions":[{actions}],"expires_at":"2026-09-01T00:00:00Z"{extra}}}]"#
    ))
    .unwrap()
}

/// Merges give exactly what either consent gave, never a combination neither did.
#[test]
fn merging_never_allows_more_than_either_side() {
    let a1 = r#","accounts":["acc_1"]"#;
    let a2 = r#","accounts":["acc_2"]"#;
    let win =
        |f: &str, u: &str| format!(r#","transactions_from":"{f}","transactions_until":"{u}""#);
    // One dimension apart: combined.
    let m = grant(r#""accounts:read""#, a1)
        .merged(&grant(r#""balances:read""#, a1))
        .unwrap();
    assert_eq!(m.actions.len(), 2);
    let m = grant(r#""balances:read""#, a1)
        .merged(&grant(r#""balances:read""#, a2))
        .unwrap();
    assert_eq!(m.accounts.unwrap().len(), 2);
    let tx = r#""transactions:read""#;
    let m = grant(tx, &format!("{a1}{}", win("2026-01-01", "2026-03-31")))
        .merged(&grant(
            tx,
            &format!("{a1}{}", win("2026-04-01", "2026-05-31")),
        ))
        .unwrap();
    assert_eq!(
        m.window.unwrap().from(),
        parse_instant("2026-01-01T00:00:00Z", false).unwrap()
    );
    // Transactions on one account and balances on another would give transactions on both.
    assert!(
        grant(tx, a1)
            .merged(&grant(r#""balances:read""#, a2))
            .is_err()
    );
    // Windows with months between them would cover those months.
    assert!(
        grant(tx, &format!("{a1}{}", win("2026-01-01", "2026-03-31")))
            .merged(&grant(
                tx,
                &format!("{a1}{}", win("2026-11-01", "2026-12-31"))
            ))
            .is_err()
    );
    // Balances (no period: none applies to balances) plus transactions for a period and one
    // merchant: the period and merchant stay.
    let m = grant(r#""balances:read""#, a1)
        .merged(&grant(
            tx,
            &format!(
                r#"{a1}{},"merchants":["m_1"]"#,
                win("2026-03-01", "2026-05-31")
            ),
        ))
        .unwrap();
    assert!(
        m.window.is_some() && m.merchants.as_ref().unwrap().len() == 1,
        "{m:?}"
    );
    assert_eq!(m.actions.len(), 2);
    // But transactions for all time plus transactions limited to a merchant on another
    // account would lift the merchant limit there: refused.
    assert!(
        grant(tx, a1)
            .merged(&grant(tx, &format!(r#"{a2},"merchants":["m_1"]"#)))
            .is_err()
    );
    // One containing the other: the larger one, whatever the order.
    let big = grant(r#""balances:read","accounts:read""#, a1);
    let small = grant(r#""balances:read""#, a1);
    assert_eq!(small.merged(&big).unwrap().actions.len(), 2);
    assert_eq!(big.merged(&small).unwrap().actions.len(), 2);
}

#[test]
fn full_request_round_trips() {
    let r = parse(
        r#"[{"type":"account_access","actions":["transactions:read","balances:read"],
        "accounts":["acc_1"],"transactions_from":"2026-01-01","transactions_until":"2026-03-31",
        "merchants":["m_1"],"expires_at":"2026-09-01T00:00:00Z"}]"#,
    )
    .unwrap();
    assert_eq!(r.actions.len(), 2);
    assert_eq!(
        r.window.as_ref().unwrap().until(),
        parse_instant("2026-03-31T23:59:59Z", false).unwrap()
    );
    let again = AccessRequest::from_stored(&r.to_json()).unwrap();
    assert_eq!(again, r);
}

#[test]
fn sub_second_expiry_is_rounded_down_and_survives_storage() {
    // Found by the `rar` fuzz target: the fraction was kept in memory and dropped by
    // `to_json`, so the stored consent differed from the parsed one.
    let r = parse(
        r#"[{"type":"account_access","actions":["accounts:read"],"expires_at":"2026-07-01T10:00:00.75Z"}]"#,
    )
    .unwrap();
    assert_eq!(
        r.expires_at,
        parse_instant("2026-07-01T10:00:00Z", false).unwrap()
    );
    assert_eq!(AccessRequest::from_stored(&r.to_json()).unwrap(), r);
    // The default lifetime from a clock with a fraction, as in production.
    let now = now() + Duration::milliseconds(250);
    let r = AccessRequest::parse(None, Some("accounts:read"), now, Duration::days(180)).unwrap();
    assert_eq!(r.expires_at, now.trunc_subsecs(0) + Duration::days(90));
    assert_eq!(AccessRequest::from_stored(&r.to_json()).unwrap(), r);
}

#[test]
fn scope_shorthand() {
    let r = AccessRequest::parse(
        None,
        Some("accounts:read balances:read"),
        now(),
        Duration::days(180),
    )
    .unwrap();
    assert_eq!(r.scope_string(), "accounts:read balances:read");
    assert!(r.accounts.is_none());
    assert_eq!(r.expires_at, now() + Duration::days(90));
}

#[test]
fn every_bad_request_is_refused() {
    let cases = [
        ("not json", "invalid_authorization_details"),
        ("{}", "invalid_authorization_details"),
        ("[]", "invalid_authorization_details"),
        (
            r#"[{"type":"payment_initiation","actions":["accounts:read"]}]"#,
            "invalid_authorization_details",
        ),
        (
            r#"[{"type":"account_access","actions":[]}]"#,
            "invalid_authorization_details",
        ),
        (
            r#"[{"type":"account_access","actions":["payments:write"]}]"#,
            "invalid_authorization_details",
        ),
        (
            r#"[{"type":"account_access","actions":["accounts:read"],"accounts":["bad id"]}]"#,
            "invalid_authorization_details",
        ),
        (
            r#"[{"type":"account_access","actions":["accounts:read"],"accounts":[]}]"#,
            "invalid_authorization_details",
        ),
        (
            r#"[{"type":"account_access","actions":["accounts:read"],"transactions_from":"2026-13-01","transactions_until":"2026-12-01"}]"#,
            "invalid_authorization_details",
        ),
        (
            r#"[{"type":"account_access","actions":["accounts:read"],"transactions_from":"2026-05-01","transactions_until":"2026-01-01"}]"#,
            "invalid_authorization_details",
        ),
        (
            r#"[{"type":"account_access","actions":["accounts:read"],"transactions_from":"2026-05-01"}]"#,
            "invalid_authorization_details",
        ),
        (
            r#"[{"type":"account_access","actions":["accounts:read"],"expires_at":"2027-06-01"}]"#,
            "invalid_authorization_details",
        ),
        (
            r#"[{"type":"account_access","actions":["accounts:read"],"expires_at":"2026-01-01"}]"#,
            "invalid_authorization_details",
        ),
        (
            r#"[{"type":"account_access","actions":["accounts:read"],"merchants":["m 1"]}]"#,
            "invalid_authorization_details",
        ),
        (
            r#"[{"type":"account_access","actions":["accounts:read"],"surprise":1}]"#,
            "invalid_authorization_details",
        ),
    ];
    for (json, code) in cases {
        let err = parse(json).unwrap_err();
        assert_eq!(err.code(), code, "{json}");
    }
    assert_eq!(
        AccessRequest::parse(None, Some("openid"), now(), Duration::days(1))
            .unwrap_err()
            .code(),
        "invalid_scope"
    );
    // Padding that the split would skip is refused before it is kept (PAR stores the request).
    let padded = format!("accounts:read{}balances:read", " ".repeat(2000));
    assert_eq!(
        AccessRequest::parse(None, Some(&padded), now(), Duration::days(1))
            .unwrap_err()
            .code(),
        "invalid_scope"
    );
    assert_eq!(
        AccessRequest::parse(None, None, now(), Duration::days(1))
            .unwrap_err()
            .code(),
        "invalid_request"
    );
}

#[test]
fn narrowing_is_checked_on_every_dimension() {
    let parent = parse(r#"[{"type":"account_access","actions":["transactions:read","balances:read"],
        "accounts":["acc_1","acc_2"],"transactions_from":"2026-01-01","transactions_until":"2026-03-31",
        "merchants":["m_1","m_2"],"expires_at":"2026-09-01"}]"#).unwrap();
    assert!(parent.contains(&parent));
    let mut n = parent.clone();
    n.accounts = Some(vec![AccountId::parse("acc_1").unwrap()]);
    n.merchants = Some(vec![MerchantId::parse("m_2").unwrap()]);
    n.actions = vec![Action::BalancesRead];
    assert!(parent.contains(&n));
    let widen = |f: &dyn Fn(&mut AccessRequest)| {
        let mut w = parent.clone();
        f(&mut w);
        assert!(!parent.contains(&w));
    };
    // One more id in a list the parent limits.
    fn add<T>(list: &mut Option<Vec<T>>, id: T) {
        list.as_mut().unwrap().push(id);
    }
    widen(&|w| add(&mut w.accounts, AccountId::parse("acc_3").unwrap()));
    widen(&|w| w.accounts = None);
    widen(&|w| w.actions.push(Action::AccountsRead));
    widen(&|w| w.merchants = None);
    widen(&|w| add(&mut w.merchants, MerchantId::parse("m_9").unwrap()));
    widen(&|w| w.window = None);
    widen(&|w| {
        w.window = Some(TxWindow::parse("2025-12-31T00:00:00Z", "2026-03-31T23:59:59Z").unwrap())
    });
    widen(&|w| w.expires_at += Duration::days(1));
}
