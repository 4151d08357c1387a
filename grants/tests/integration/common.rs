use chrono::{DateTime, Duration, Utc};
use grants::{
    AccountId, Action, Attenuation, Grant, GrantId, GrantScope, KeySet, MerchantId,
    NoRevocationCheck, Request, SigningKey, TxWindow, Verifier,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

pub fn ts(s: &str) -> DateTime<Utc> {
    grants::parse_timestamp(s).unwrap()
}

/// The fixed clock of the fixtures.
pub fn now() -> DateTime<Utc> {
    ts("2026-03-01T12:00:00Z")
}

pub fn acc(s: &str) -> AccountId {
    AccountId::parse(s).unwrap()
}

pub fn mer(s: &str) -> MerchantId {
    MerchantId::parse(s).unwrap()
}

pub fn window(from: &str, until: &str) -> TxWindow {
    TxWindow::parse(from, until).unwrap()
}

/// A deterministic signing key: same seed, same key, same signatures.
pub fn key(kid: u32) -> SigningKey {
    SigningKey::from_private_bytes(kid, &[kid as u8 + 1; 32]).unwrap()
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn grant(scope: GrantScope) -> Grant {
    Grant {
        id: GrantId::parse("g_1").unwrap(),
        client: grants::ClientId::parse("c_app").unwrap(),
        subject: grants::SubjectId::parse("cust_1").unwrap(),
        environment: grants::Environment::Production,
        scope,
    }
}

/// acc_1..acc_3, every known action, window 2025, merchants m_1..m_3, grant expiry in 90 days.
pub fn full_scope() -> GrantScope {
    GrantScope::new(
        vec![acc("acc_1"), acc("acc_2"), acc("acc_3")],
        Action::KNOWN.to_vec(),
        Some(window("2025-01-01T00:00:00Z", "2025-12-31T23:59:59Z")),
        Some(vec![mer("m_1"), mer("m_2"), mer("m_3")]),
        now() + Duration::days(90),
    )
    .unwrap()
}

/// Same but without window and merchant limits.
pub fn open_scope() -> GrantScope {
    GrantScope::new(
        vec![acc("acc_1"), acc("acc_2")],
        Action::KNOWN.to_vec(),
        None,
        None,
        now() + Duration::days(90),
    )
    .unwrap()
}

pub fn mint(scope: GrantScope) -> String {
    grants::mint_with_rng(
        &key(1),
        &grant(scope),
        now() + Duration::minutes(10),
        now(),
        &mut rng(1),
    )
    .unwrap()
    .token
}

pub fn attenuate(token: &str, a: &Attenuation) -> String {
    grants::attenuate_with_rng(token, a, false, &mut rng(2)).unwrap()
}

pub fn keys() -> KeySet {
    KeySet::new([key(1).published(None, None)]).unwrap()
}

pub fn verifier() -> Verifier<KeySet, NoRevocationCheck> {
    Verifier::new(keys(), NoRevocationCheck)
}

pub fn req(op: Action) -> Request {
    Request::new(op, now())
}

/// `token` with one more block of Datalog `code`, appended offline as a holder would (with any
/// Biscuit library: nothing checks what it says).
pub fn append_block(token: &str, code: &str) -> String {
    let root = biscuit_auth::PublicKey::from_bytes(
        &key(1).public_key().to_bytes(),
        biscuit_auth::Algorithm::Ed25519,
    )
    .unwrap();
    biscuit_auth::Biscuit::from_base64(token, root)
        .unwrap()
        .append(biscuit_auth::BlockBuilder::new().code(code).unwrap())
        .unwrap()
        .to_base64()
        .unwrap()
}
