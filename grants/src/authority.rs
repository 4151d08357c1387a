//! Reading a token's blocks back: the authority block's facts (trusted, signed by the server)
//! and what attenuation blocks mention (untrusted hints, used only to pick candidates).

use std::collections::BTreeSet;

use biscuit_auth::BlockBuilder;
use biscuit_auth::builder::{Binary, Check, CheckKind, Op, Predicate, Term};
use chrono::{DateTime, Utc};

use crate::time::{TxWindow, from_secs};
use crate::vocab;
use crate::{AccountId, Action, ClientId, Environment, GrantId, MerchantId, SubjectId};

/// The authority block's content, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Authority {
    pub grant: GrantId,
    pub client: ClientId,
    pub subject: SubjectId,
    pub rights: Vec<Action>,
    pub accounts: Vec<AccountId>,
    pub window: Option<TxWindow>,
    /// Empty means no merchant limit.
    pub merchants: Vec<MerchantId>,
    /// The earliest `check if time($t), $t <= D` bound (token or grant expiry).
    pub expires_at: DateTime<Utc>,
    /// From the `environment` fact (absent: production).
    pub environment: Environment,
    /// From the `cnf_jkt` fact: the DPoP key the token is bound to.
    pub cnf_jkt: Option<String>,
    /// From the `cnf_x5t` fact: the TLS client certificate the token is bound to.
    pub cnf_x5t: Option<String>,
}

impl Authority {
    /// Datalog elements of the authority block (its facts and the two expiry checks), for the
    /// cost of loading it.
    pub fn elements(&self) -> u64 {
        let facts = 3
            + self.rights.len()
            + self.accounts.len()
            + self.merchants.len()
            + usize::from(self.environment == Environment::Sandbox)
            + usize::from(self.cnf_jkt.is_some())
            + usize::from(self.cnf_x5t.is_some());
        (facts + usize::from(self.window.is_some()) * 2 + 2 * 3) as u64
    }
}

fn single_str(p: &Predicate) -> Result<&str, String> {
    match p.terms.as_slice() {
        [Term::Str(s)] => Ok(s),
        _ => Err(format!("`{}` must have one string term", p.name)),
    }
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// `check if time($t), $t <= <date>` (any variable name), the only expiry form we write.
pub(crate) fn time_bound(check: &Check) -> Option<u64> {
    if check.kind != CheckKind::One {
        return None;
    }
    let [query] = check.queries.as_slice() else {
        return None;
    };
    let [pred] = query.body.as_slice() else {
        return None;
    };
    let [expr] = query.expressions.as_slice() else {
        return None;
    };
    let (Term::Variable(var), true) = (pred.terms.first()?, pred.name == vocab::TIME) else {
        return None;
    };
    if pred.terms.len() != 1 || !query.scopes.is_empty() {
        return None;
    }
    match expr.ops.as_slice() {
        [
            Op::Value(Term::Variable(v)),
            Op::Value(Term::Date(d)),
            Op::Binary(Binary::LessOrEqual),
        ] if v == var => Some(*d),
        _ => None,
    }
}

/// Parses and validates the authority block's Datalog source.
pub(crate) fn parse_authority(source: &str) -> Result<Authority, String> {
    let (facts, bounds) = match read_printed_authority(source) {
        Some(read) => read,
        None => read_any_authority(source)?,
    };
    validate_authority(&facts, &bounds)
}

/// General path: the Biscuit Datalog parser.
fn read_any_authority(source: &str) -> Result<(Vec<Predicate>, Vec<u64>), String> {
    let block = BlockBuilder::new()
        .code(source)
        .map_err(|e| format!("unreadable Datalog: {e}"))?;
    if !block.rules.is_empty() {
        return Err("unexpected rules".into());
    }
    let bounds = block.checks.iter().filter_map(time_bound).collect();
    Ok((
        block.facts.into_iter().map(|f| f.predicate).collect(),
        bounds,
    ))
}

/// Fast path for exactly what [`crate::mint`] writes, as Biscuit prints it: one fact or check
/// per line, string facts without quotes or escapes inside, `tx_window(date, date);` and
/// `check if time($t), $t <= date;`. Any other line returns `None` and the general parser
/// decides (so this only saves time, it never accepts something the parser would not).
fn read_printed_authority(source: &str) -> Option<(Vec<Predicate>, Vec<u64>)> {
    const STRING_FACTS: [&str; 8] = [
        vocab::GRANT,
        vocab::CLIENT,
        vocab::SUBJECT,
        vocab::RIGHT,
        vocab::ACCOUNT,
        vocab::MERCHANT,
        vocab::ENVIRONMENT,
        vocab::CNF_JKT,
    ];
    let date = |s: &str| -> Option<u64> {
        let t = crate::time::parse_timestamp(s).ok()?;
        (crate::time::format_timestamp(t) == s).then(|| crate::time::to_secs(t))
    };
    let mut facts = Vec::new();
    let mut bounds = Vec::new();
    for line in source.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let body = line.strip_suffix(';')?;
        if let Some(d) = body.strip_prefix("check if time($t), $t <= ") {
            bounds.push(date(d)?);
            continue;
        }
        let (name, rest) = body.split_once('(')?;
        let args = rest.strip_suffix(')')?;
        if name == vocab::TX_WINDOW {
            let (from, until) = args.split_once(", ")?;
            facts.push(Predicate::new(
                name.to_owned(),
                vec![Term::Date(date(from)?), Term::Date(date(until)?)],
            ));
        } else if STRING_FACTS.contains(&name) {
            let value = args.strip_prefix('"')?.strip_suffix('"')?;
            if value.contains(['"', '\\']) {
                return None;
            }
            facts.push(Predicate::new(
                name.to_owned(),
                vec![Term::Str(value.to_owned())],
            ));
        } else {
            return None;
        }
    }
    Some((facts, bounds))
}

fn validate_authority(facts: &[Predicate], bounds: &[u64]) -> Result<Authority, String> {
    let (mut grant, mut client, mut subject, mut environment) = (None, None, None, None);
    let (mut cnf_jkt, mut cnf_x5t) = (None, None);
    let mut rights = Vec::new();
    let mut accounts = Vec::new();
    let mut merchants = Vec::new();
    let mut window: Option<TxWindow> = None;
    let once = |slot: &mut Option<String>, p: &Predicate| -> Result<(), String> {
        let v = single_str(p)?.to_owned();
        if slot.replace(v).is_some() {
            return Err(format!("more than one `{}` fact", p.name));
        }
        Ok(())
    };
    for p in facts {
        match p.name.as_str() {
            vocab::GRANT => once(&mut grant, p)?,
            vocab::CLIENT => once(&mut client, p)?,
            vocab::SUBJECT => once(&mut subject, p)?,
            vocab::ENVIRONMENT => once(&mut environment, p)?,
            vocab::CNF_JKT => once(&mut cnf_jkt, p)?,
            vocab::CNF_X5T => once(&mut cnf_x5t, p)?,
            vocab::RIGHT => push_unique(
                &mut rights,
                Action::parse(single_str(p)?).map_err(|e| e.to_string())?,
            ),
            vocab::ACCOUNT => push_unique(
                &mut accounts,
                AccountId::parse(single_str(p)?).map_err(|e| e.to_string())?,
            ),
            vocab::MERCHANT => push_unique(
                &mut merchants,
                MerchantId::parse(single_str(p)?).map_err(|e| e.to_string())?,
            ),
            vocab::TX_WINDOW => {
                let w = match p.terms.as_slice() {
                    [Term::Date(f), Term::Date(u)] => TxWindow::new(
                        from_secs(i64::try_from(*f).unwrap_or(i64::MAX)),
                        from_secs(i64::try_from(*u).unwrap_or(i64::MAX)),
                    )
                    .map_err(|e| e.to_string())?,
                    _ => return Err("`tx_window` must have two dates".into()),
                };
                if window.replace(w).is_some() {
                    return Err("more than one `tx_window` fact".into());
                }
            }
            // Request fact names must never appear in a token's authority block.
            vocab::TIME
            | vocab::OPERATION
            | vocab::REQ_ACCOUNT
            | vocab::REQ_TX_RANGE
            | vocab::REQ_MERCHANT => {
                return Err(format!("request fact `{}` in the authority block", p.name));
            }
            // Facts added by a newer server are ignored here (the Datalog still sees them).
            _ => {}
        }
    }
    let expires_at = bounds.iter().copied().min().ok_or("no expiry check")?;
    let missing = |what: &str| format!("missing `{what}` fact");
    let grant =
        GrantId::parse(grant.ok_or_else(|| missing("grant"))?).map_err(|e| e.to_string())?;
    let client =
        ClientId::parse(client.ok_or_else(|| missing("client"))?).map_err(|e| e.to_string())?;
    let subject =
        SubjectId::parse(subject.ok_or_else(|| missing("subject"))?).map_err(|e| e.to_string())?;
    if rights.is_empty() {
        return Err(missing("right"));
    }
    if accounts.is_empty() {
        return Err(missing("account"));
    }
    let environment = match environment.as_deref() {
        None => Environment::Production,
        Some(e) => Environment::parse(e).ok_or_else(|| format!("unknown environment {e:?}"))?,
    };
    Ok(Authority {
        environment,
        cnf_jkt,
        cnf_x5t,
        grant,
        client,
        subject,
        rights,
        accounts,
        window,
        merchants,
        expires_at: from_secs(i64::try_from(expires_at).unwrap_or(i64::MAX)),
    })
}

/// What the attenuation blocks (all but the authority) mention. Untrusted: used only to decide
/// which dimensions need per-candidate evaluation and to propose candidate values, every one of
/// which is then checked by the full Datalog evaluation.
#[derive(Clone, Debug, Default)]
pub(crate) struct Hints {
    blocks: Vec<BlockBuilder>,
    mentions: BTreeSet<String>,
    parsed: std::sync::OnceLock<Literals>,
}

/// Literals and parsed checks of the attenuation blocks (collected only when needed).
#[derive(Clone, Debug, Default)]
pub(crate) struct Literals {
    pub strings: BTreeSet<String>,
    pub dates: BTreeSet<u64>,
    /// `Some(min bound)` when every mention of `time` in the blocks is a plain
    /// `check if time($t), $t <= D` (the form this crate and the DESIGN vocabulary write).
    pub simple_expiry: Option<Option<u64>>,
    /// `Some` when the blocks hold nothing but checks of the exact forms [`crate::Attenuation`]
    /// writes (and the DESIGN vocabulary documents); what they narrow, put together.
    pub simple: Option<Narrowing>,
}

/// What blocks made only of the documented check forms narrow, each dimension intersected over
/// every check (`None`: not narrowed):
/// ```text
/// check if req_account($a), {"acc_1", ...}.contains($a);
/// check if operation($o), {"balances:read", ...}.contains($o);
/// check if req_merchant($m), {"m_1", ...}.contains($m);
/// check if req_tx_range($f, $u), $f >= <from>, $u <= <until>;
/// check if time($t), $t <= <expiry>;
/// ```
/// For such blocks a request value is allowed exactly when it is in every set (and its range
/// within every bound), so the effective scope is computed here instead of by one Datalog run
/// per candidate value. Any other form (facts, rules, other checks, `check all`, `reject if`,
/// `trusting`) makes the blocks not simple, and they are evaluated candidate by candidate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Narrowing {
    pub accounts: Option<BTreeSet<String>>,
    pub actions: Option<BTreeSet<String>>,
    pub merchants: Option<BTreeSet<String>>,
    /// Latest `from` bound and earliest `until` bound on requested ranges.
    pub range_from: Option<u64>,
    pub range_until: Option<u64>,
}

impl Narrowing {
    /// Reads one block; `false` if it is not made of the documented forms only.
    fn add_block(&mut self, block: &BlockBuilder) -> bool {
        if !block.facts.is_empty() || !block.rules.is_empty() || !block.scopes.is_empty() {
            return false;
        }
        block.checks.iter().all(|c| self.add_check(c))
    }

    fn add_check(&mut self, check: &Check) -> bool {
        if time_bound(check).is_some() {
            return true; // the expiry is read by `simple_expiry`
        }
        let [query] = check.queries.as_slice() else {
            return false;
        };
        if check.kind != CheckKind::One || !query.scopes.is_empty() {
            return false;
        }
        let [pred] = query.body.as_slice() else {
            return false;
        };
        let var = |t: Option<&Term>| match t {
            Some(Term::Variable(v)) => Some(v.clone()),
            _ => None,
        };
        match (pred.name.as_str(), pred.terms.len()) {
            (vocab::REQ_ACCOUNT | vocab::OPERATION | vocab::REQ_MERCHANT, 1) => {
                let Some(v) = var(pred.terms.first()) else {
                    return false;
                };
                let [expr] = query.expressions.as_slice() else {
                    return false;
                };
                let set = match expr.ops.as_slice() {
                    [
                        Op::Value(Term::Set(items)),
                        Op::Value(Term::Variable(x)),
                        Op::Binary(Binary::Contains),
                    ] if *x == v => items,
                    _ => return false,
                };
                let mut strings = BTreeSet::new();
                for item in set {
                    match item {
                        Term::Str(s) => strings.insert(s.clone()),
                        // A set of other terms never contains a string request value.
                        _ => continue,
                    };
                }
                let slot = match pred.name.as_str() {
                    vocab::REQ_ACCOUNT => &mut self.accounts,
                    vocab::OPERATION => &mut self.actions,
                    _ => &mut self.merchants,
                };
                *slot = Some(match slot.take() {
                    Some(current) => current.intersection(&strings).cloned().collect(),
                    None => strings,
                });
                true
            }
            (vocab::REQ_TX_RANGE, 2) => {
                let (Some(f), Some(u)) = (var(pred.terms.first()), var(pred.terms.get(1))) else {
                    return false;
                };
                if f == u || query.expressions.len() != 2 {
                    return false;
                }
                for expr in &query.expressions {
                    match expr.ops.as_slice() {
                        [
                            Op::Value(Term::Variable(x)),
                            Op::Value(Term::Date(d)),
                            Op::Binary(Binary::GreaterOrEqual),
                        ] if *x == f => {
                            self.range_from = Some(self.range_from.map_or(*d, |c| c.max(*d)));
                        }
                        [
                            Op::Value(Term::Variable(x)),
                            Op::Value(Term::Date(d)),
                            Op::Binary(Binary::LessOrEqual),
                        ] if *x == u => {
                            self.range_until = Some(self.range_until.map_or(*d, |c| c.min(*d)));
                        }
                        _ => return false,
                    }
                }
                true
            }
            _ => false,
        }
    }
}

impl Hints {
    /// `blocks` as admitted, with the predicate names they mention.
    pub fn new(blocks: Vec<BlockBuilder>, mentions: BTreeSet<String>) -> Self {
        Self {
            blocks,
            mentions,
            parsed: std::sync::OnceLock::new(),
        }
    }

    /// Whether the token has attenuation blocks at all.
    pub fn any(&self) -> bool {
        !self.blocks.is_empty()
    }

    /// Whether some block uses predicate `name` (in a fact, a rule or a check).
    pub fn mentions(&self, name: &str) -> bool {
        self.mentions.contains(name)
    }

    pub fn literals(&self) -> &Literals {
        let blocks = &self.blocks;
        self.parsed.get_or_init(|| {
            let mut lit = Literals {
                simple_expiry: Some(None),
                simple: Some(Narrowing::default()),
                ..Literals::default()
            };
            for block in blocks {
                lit.add_block(block);
                if let Some(n) = &mut lit.simple
                    && !n.add_block(block)
                {
                    lit.simple = None;
                }
            }
            lit
        })
    }
}

impl Literals {
    fn add_block(&mut self, block: &BlockBuilder) {
        for fact in &block.facts {
            self.opaque_if_time(&fact.predicate);
            self.predicate(&fact.predicate);
        }
        for rule in &block.rules {
            self.opaque_if_time(&rule.head);
            rule.body.iter().for_each(|p| self.opaque_if_time(p));
        }
        for check in &block.checks {
            let mentions_time = check
                .queries
                .iter()
                .any(|q| q.body.iter().any(|p| p.name == vocab::TIME));
            if mentions_time {
                match (time_bound(check), self.simple_expiry) {
                    (Some(d), Some(current)) => {
                        self.simple_expiry = Some(Some(current.map_or(d, |c| c.min(d))));
                    }
                    _ => self.simple_expiry = None,
                }
            }
        }
        let rules = block
            .rules
            .iter()
            .chain(block.checks.iter().flat_map(|c| c.queries.iter()));
        for rule in rules {
            self.predicate(&rule.head);
            for p in &rule.body {
                self.predicate(p);
            }
            for e in &rule.expressions {
                self.ops(&e.ops);
            }
        }
    }

    fn opaque_if_time(&mut self, p: &Predicate) {
        if p.name == vocab::TIME {
            self.simple_expiry = None;
        }
    }

    fn predicate(&mut self, p: &Predicate) {
        for t in &p.terms {
            self.term(t);
        }
    }

    fn ops(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Value(t) => self.term(t),
                Op::Closure(_, inner) => self.ops(inner),
                Op::Unary(_) | Op::Binary(_) => {}
            }
        }
    }

    fn term(&mut self, t: &Term) {
        match t {
            Term::Str(s) => {
                self.strings.insert(s.clone());
            }
            Term::Date(d) => {
                self.dates.insert(*d);
            }
            Term::Set(items) => items.iter().for_each(|i| self.term(i)),
            Term::Array(items) => items.iter().for_each(|i| self.term(i)),
            Term::Map(m) => m.values().for_each(|i| self.term(i)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRINTED: &str = "grant(\"g_1\");\nclient(\"c_app\");\nsubject(\"cust_1\");\n\
        right(\"balances:read\");\naccount(\"acc_1\");\naccount(\"acc_2\");\n\
        tx_window(2025-01-01T00:00:00Z, 2025-12-31T23:59:59Z);\nmerchant(\"m_1\");\n\
        check if time($t), $t <= 2026-03-01T12:10:00Z;\n\
        check if time($t), $t <= 2026-05-30T12:00:00Z;\n";

    #[test]
    fn fast_and_general_readers_agree() {
        let fast = read_printed_authority(PRINTED).unwrap();
        let general = read_any_authority(PRINTED).unwrap();
        assert_eq!(fast, general);
        assert_eq!(
            validate_authority(&fast.0, &fast.1),
            validate_authority(&general.0, &general.1)
        );
    }

    #[test]
    fn fast_reader_handles_what_mint_writes() {
        // If Biscuit's printing changes, this fails (and the general parser still works).
        let key = crate::SigningKey::from_private_bytes(1, &[2; 32]).unwrap();
        let t = |s: &str| crate::parse_timestamp(s).unwrap();
        let grant = crate::Grant {
            id: GrantId::parse("g_1").unwrap(),
            client: ClientId::parse("c_app").unwrap(),
            subject: SubjectId::parse("cust_1").unwrap(),
            environment: crate::Environment::Production,
            scope: crate::GrantScope::new(
                vec![AccountId::parse("acc_1").unwrap()],
                Action::KNOWN.to_vec(),
                Some(TxWindow::parse("2025-01-01T00:00:00Z", "2025-12-31T23:59:59Z").unwrap()),
                Some(vec![MerchantId::parse("m_1").unwrap()]),
                t("2026-05-30T12:00:00Z"),
            )
            .unwrap(),
        };
        let now = t("2026-03-01T12:00:00Z");
        let minted = crate::mint(&key, &grant, t("2026-03-01T12:10:00Z"), now).unwrap();
        let source = biscuit_auth::UnverifiedBiscuit::from_base64(&minted.token)
            .unwrap()
            .print_block_source(0)
            .unwrap();
        let fast = read_printed_authority(&source).expect("fast path applies");
        assert_eq!(fast, read_any_authority(&source).unwrap());
    }

    #[test]
    fn fast_reader_defers_on_anything_unusual() {
        for odd in [
            "account($a) <- req_account($a);",
            "req_account(\"acc_1\");",
            "account(\"acc_1\\\"\");",
            "check if time($x), $x <= 2026-03-01T12:10:00Z;",
            "check if time($t), $t < 2026-03-01T12:10:00Z;",
            "tx_window(2025-01-01, 2025-12-31);",
            "future_fact(\"x\");",
            "grant(\"g_1\")",
        ] {
            assert!(read_printed_authority(odd).is_none(), "{odd}");
        }
    }
}
