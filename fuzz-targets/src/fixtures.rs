//! Seeded keys, grants, tokens and requests shared by the targets (built once per process).

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use chrono::{DateTime, Duration, TimeZone, Utc};
use grants::error::VerifyError;
use grants::{
    AccountId, Action, Attenuation, Authorization, ClientId, Grant, GrantId, GrantScope, KeySet,
    MerchantId, Request, SigningKey, SubjectId, TxWindow, Verifier,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::Seed;

/// The grant the revocation check reports as revoked.
pub(crate) const REVOKED_GRANT: &str = "g_revoked";

/// The verifier's revocation check: one fixed grant is revoked.
pub(crate) type Revoked = fn(&GrantId, &[String]) -> bool;

fn is_revoked(grant: &GrantId, _: &[String]) -> bool {
    grant.as_str() == REVOKED_GRANT
}

/// The clock of every verification.
pub(crate) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

pub(crate) fn acc(s: &str) -> AccountId {
    AccountId::parse(s).unwrap()
}

pub(crate) fn merchant(s: &str) -> MerchantId {
    MerchantId::parse(s).unwrap()
}

/// A token and what the verifier answers for each of [`Fixtures::requests`].
#[derive(Debug)]
pub(crate) struct Base {
    pub token: String,
    pub verdicts: Vec<Result<Authorization, VerifyError>>,
}

#[derive(Debug)]
pub(crate) struct Fixtures {
    pub verifier: Verifier<KeySet, Revoked>,
    /// Grant limited on every dimension: three accounts, a window, two merchants.
    pub limited: Base,
    /// Grant with no window and no merchant limit (candidates then come from the blocks).
    pub open: Base,
    /// The fixed requests an attenuated token is checked with.
    pub requests: Vec<Request>,
}

fn key(kid: u32, byte: u8) -> SigningKey {
    SigningKey::from_private_bytes(kid, &[byte; 32]).unwrap()
}

fn grant(id: &str, scope: GrantScope) -> Grant {
    Grant {
        id: GrantId::parse(id).unwrap(),
        client: ClientId::parse("c_app").unwrap(),
        subject: SubjectId::parse("cust_1").unwrap(),
        environment: grants::Environment::Production,
        scope,
    }
}

fn limited_grant(id: &str) -> Grant {
    grant(
        id,
        GrantScope::new(
            vec![acc("acc_1"), acc("acc_2"), acc("acc_3")],
            Action::KNOWN.to_vec(),
            Some(TxWindow::parse("2025-01-01T00:00:00Z", "2025-12-31T23:59:59Z").unwrap()),
            Some(vec![merchant("m_1"), merchant("m_2")]),
            now() + Duration::days(90),
        )
        .unwrap(),
    )
}

fn open_grant() -> Grant {
    grant(
        "g_2",
        GrantScope::new(
            vec![acc("acc_1"), acc("acc_2")],
            vec![Action::AccountsRead, Action::TransactionsRead],
            None,
            None,
            now() + Duration::days(90),
        )
        .unwrap(),
    )
}

fn mint(key: &SigningKey, grant: &Grant, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    grants::mint_with_rng(key, grant, now() + Duration::minutes(10), now(), &mut rng)
        .unwrap()
        .token
}

fn attenuate(token: &str, a: &Attenuation, seal: bool, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    grants::attenuate_with_rng(token, a, seal, &mut rng).unwrap()
}

fn requests() -> Vec<Request> {
    let tx = |n: DateTime<Utc>| Request::new(Action::TransactionsRead, n);
    vec![
        // A listing: every dimension open.
        tx(now()),
        // One per account (acc_3 is not in the open grant).
        tx(now()).account(acc("acc_1")),
        tx(now()).account(acc("acc_2")),
        tx(now()).account(acc("acc_3")),
        // One per merchant (m_3 is not in the limited grant).
        tx(now()).account(acc("acc_1")).merchant(merchant("m_1")),
        tx(now()).account(acc("acc_1")).merchant(merchant("m_2")),
        tx(now()).account(acc("acc_1")).merchant(merchant("m_3")),
        // A date range inside the limited grant's window.
        tx(now())
            .account(acc("acc_2"))
            .tx_range(TxWindow::parse("2025-02-01T00:00:00Z", "2025-03-01T00:00:00Z").unwrap()),
    ]
}

impl Fixtures {
    fn build() -> Self {
        let (k1, k2) = (key(1, 7), key(2, 9));
        let keys = KeySet::new([k1.published(None, None), k2.published(None, None)]).unwrap();
        let verifier = Verifier::new(keys, is_revoked as Revoked);
        let requests = requests();
        let base = |token: String| Base {
            verdicts: requests
                .iter()
                .map(|r| verifier.verify(&token, r))
                .collect(),
            token,
        };
        let limited = base(mint(&k1, &limited_grant("g_1"), 1));
        let open = base(mint(&k2, &open_grant(), 2));
        Self {
            limited,
            open,
            requests,
            verifier,
        }
    }
}

pub(crate) fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(Fixtures::build)
}

/// Attenuations as the `grants` builder writes them (one per dimension, and all at once).
fn attenuations() -> Vec<(&'static str, Attenuation)> {
    let window = TxWindow::parse("2025-02-01T00:00:00Z", "2025-02-28T23:59:59Z").unwrap();
    vec![
        ("accounts", Attenuation::new().accounts([acc("acc_1")])),
        (
            "actions",
            Attenuation::new().actions([Action::BalancesRead, Action::TransactionsRead]),
        ),
        (
            "merchants",
            Attenuation::new().merchants([merchant("m_1"), merchant("m_9")]),
        ),
        ("window", Attenuation::new().window(window)),
        (
            "expiry",
            Attenuation::new().expires_at(now() + Duration::minutes(5)),
        ),
        (
            "all",
            Attenuation::new()
                .accounts([acc("acc_1"), acc("acc_2")])
                .actions([Action::TransactionsRead])
                .merchants([merchant("m_2")])
                .window(window)
                .expires_at(now() + Duration::minutes(5)),
        ),
    ]
}

pub(crate) fn seeds() -> Vec<Seed> {
    let f = fixtures();
    let mut out: Vec<Seed> = Vec::new();
    let mut token = |name: &str, t: &str| {
        out.push(("token_verify", format!("{name}.b64"), t.as_bytes().to_vec()));
        // Raw mode (first byte 0): the decoded protobuf, so mutations hit its structure.
        let mut raw = vec![0u8];
        raw.extend(URL_SAFE.decode(t).unwrap());
        out.push(("token_verify", format!("{name}.raw"), raw));
    };
    token("minted_limited", &f.limited.token);
    token("minted_open", &f.open.token);
    let all = &attenuations()[5].1;
    let attenuated = attenuate(&f.limited.token, all, false, 3);
    token("attenuated_all", &attenuated);
    let twice = attenuate(&attenuated, &attenuations()[4].1, false, 4);
    token("attenuated_twice", &twice);
    token(
        "sealed",
        &attenuate(&f.open.token, &attenuations()[0].1, true, 5),
    );
    token(
        "revoked_grant",
        &mint(&key(1, 7), &limited_grant(REVOKED_GRANT), 6),
    );
    token("unknown_kid", &mint(&key(3, 11), &open_grant(), 7));
    for (name, a) in attenuations() {
        out.push((
            "attenuation_block",
            format!("builder_{name}.datalog"),
            a.datalog().unwrap().into_bytes(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attenuation target compares against these verdicts: they must not be vacuous.
    #[test]
    fn fixture_tokens_allow_what_their_grants_allow() {
        let f = fixtures();
        let ok = |b: &Base| b.verdicts.iter().map(Result::is_ok).collect::<Vec<_>>();
        // listing, acc_1, acc_2, acc_3, m_1, m_2, m_3, range
        assert_eq!(
            ok(&f.limited),
            [true, true, true, true, true, true, false, true]
        );
        assert_eq!(
            ok(&f.open),
            [true, true, true, false, true, true, true, true]
        );
    }

    #[test]
    fn seeds_are_accepted_where_they_should_be() {
        let f = fixtures();
        let request = Request::new(Action::TransactionsRead, now()).account(acc("acc_1"));
        for (target, name, content) in seeds() {
            if target == "token_verify" && name.ends_with(".b64") {
                let token = std::str::from_utf8(&content).unwrap();
                let verdict = f.verifier.verify(token, &request);
                let refused = ["revoked_grant", "unknown_kid"]
                    .iter()
                    .any(|n| name.contains(n));
                assert_eq!(verdict.is_err(), refused, "{name}: {verdict:?}");
            }
        }
    }
}
