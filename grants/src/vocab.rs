//! The token vocabulary (DESIGN.md "Token vocabulary"): fact names written by the server into
//! the authority block, and the distinct request fact names the verifier supplies. A `check if`
//! passes when *any* fact matches, so the two families must never share a name.

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use biscuit_auth::builder::{Check, Term};
use chrono::{DateTime, Utc};

use crate::time::to_secs;

// Authority (token) facts.
pub(crate) const GRANT: &str = "grant";
pub(crate) const CLIENT: &str = "client";
pub(crate) const SUBJECT: &str = "subject";
pub(crate) const RIGHT: &str = "right";
pub(crate) const ACCOUNT: &str = "account";
pub(crate) const TX_WINDOW: &str = "tx_window";
pub(crate) const MERCHANT: &str = "merchant";
/// `environment("sandbox")`: the grant was given to a sandbox client (absent: production).
pub(crate) const ENVIRONMENT: &str = "environment";
/// `cnf_jkt("<thumbprint>")`: the token is bound to this DPoP key (RFC 9449, RFC 7638).
pub(crate) const CNF_JKT: &str = "cnf_jkt";
/// `cnf_x5t("<thumbprint>")`: the token is bound to this TLS client certificate (RFC 8705
/// `x5t#S256`).
pub(crate) const CNF_X5T: &str = "cnf_x5t";

// Request facts (supplied by the verifier only).
pub(crate) const TIME: &str = "time";
pub(crate) const OPERATION: &str = "operation";
pub(crate) const REQ_ACCOUNT: &str = "req_account";
pub(crate) const REQ_TX_RANGE: &str = "req_tx_range";
pub(crate) const REQ_MERCHANT: &str = "req_merchant";

/// The authority block's expiry check; `{exp}` is a date parameter.
pub(crate) const EXPIRY_CHECK: &str = "check if time($t), $t <= {exp}";

/// [`EXPIRY_CHECK`] with `exp` set. Parsed once per process: every token minted carries two, and
/// parsing them from text was about 6% of a mint (criterion, BENCHMARKS.md).
pub(crate) fn expiry_check(exp: DateTime<Utc>) -> Result<Check, biscuit_auth::error::Token> {
    static PARSED: LazyLock<Result<Check, biscuit_auth::error::Token>> =
        LazyLock::new(|| Check::try_from(EXPIRY_CHECK));
    let mut check = PARSED.clone()?;
    check.set("exp", date_term(exp))?;
    Ok(check)
}

pub(crate) fn date_term(t: DateTime<Utc>) -> Term {
    Term::Date(to_secs(t))
}

pub(crate) fn string_set<'a>(items: impl IntoIterator<Item = &'a str>) -> Term {
    Term::Set(
        items
            .into_iter()
            .map(|s| Term::Str(s.to_owned()))
            .collect::<BTreeSet<_>>(),
    )
}

pub(crate) fn params(
    pairs: impl IntoIterator<Item = (&'static str, Term)>,
) -> HashMap<String, Term> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
