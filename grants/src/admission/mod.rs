//! Admission of attenuation blocks, before any Datalog runs.
//!
//! Biscuit's evaluator bounds the facts it derives, its fixpoint iterations and its wall-clock
//! time, but it checks them only *between* iterations: one rule or check whose body joins several
//! predicates enumerates every combination of matching facts at once, and a check that derives
//! nothing never trips the fact limit. A holder can append such a block to any token (no key is
//! needed to attenuate), so limits on time alone cannot protect a server.
//!
//! Admission therefore reads every attenuation block and
//! 1. refuses blocks outside the static [`Limits`](crate::Limits) (facts, rules, checks, queries
//!    per check, predicates per body, variables per rule, expression size and closure nesting,
//!    string and collection sizes, recursive rules, foreign functions, regular expressions that
//!    are not literals or compile too large), then
//! 2. builds a [`Program`]: per run, an upper bound on the work the evaluator can do, from the
//!    number of facts each predicate can match (request facts of that run included) and the shape
//!    of every rule and query. The verifier charges each run against
//!    [`Limits::max_work`](crate::Limits::max_work) *before* running it, so a token whose
//!    evaluation could cost more is refused without evaluating anything.
//!
//! The bound follows how biscuit-auth 6 evaluates: a body of predicates `p1..pk` is a nested
//! loop in which level `i` scans every fact in scope once per partial match of `p1..p(i-1)`;
//! every complete match evaluates the expressions; every fixpoint iteration applies every rule
//! again (naive evaluation). It is an over-estimate (it ignores terms that filter matches and
//! assumes every rule fires), which is what makes it safe.
//!
//! This file holds the [`Limits`] and the static checks; `cost` the work estimate.

mod cost;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use biscuit_auth::BlockBuilder;
use biscuit_auth::builder::{Op, Rule, Term};

use cost::{BodyPredicate, RuleShape, Shape, Widths, expression_cost, rule_size, term_weight};
pub(crate) use cost::{OwnQuery, Program, RunFactCounts};

/// Bounds on the work one verification may do. The static limits apply to attenuation blocks
/// (the authority block is the server's own) and are checked before any Datalog runs; the work
/// limit bounds the whole verification, every Datalog run of it charged in advance (see the
/// crate documentation, "Errors and limits"). The defaults admit everything [`crate::Attenuation`]
/// writes and what a reasonable biscuit-python or biscuit-wasm user writes by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted token (base64 characters).
    pub max_token_len: usize,
    /// Most blocks (authority included).
    pub max_blocks: usize,
    /// Most facts in one attenuation block.
    pub max_block_facts: usize,
    /// Most rules in one attenuation block (rules must not be recursive).
    pub max_block_rules: usize,
    /// Most checks in one attenuation block.
    pub max_block_checks: usize,
    /// Most alternative queries (`or`) in one check.
    pub max_check_queries: usize,
    /// Most predicates in one rule or check body (the join width).
    pub max_body_predicates: usize,
    /// Most distinct variables in one rule or check.
    pub max_rule_variables: usize,
    /// Most expression operations in one rule or check.
    pub max_expression_ops: usize,
    /// Deepest nesting of closures (`.all($x -> ...)`, `.any(...)`).
    pub max_closure_depth: usize,
    /// Longest string or byte array literal (bytes).
    pub max_string_len: usize,
    /// Most elements of one set, array or map literal.
    pub max_collection_len: usize,
    /// Most work units one verification may do, summed over its Datalog runs and charged
    /// before each run from the blocks' shape (about 8 units per fact visited while matching a
    /// rule body; see the crate documentation).
    pub max_work: u64,
    /// Datalog: most facts per run.
    pub max_facts: u64,
    /// Datalog: most rule iterations per run.
    pub max_iterations: u64,
    /// Datalog: longest run.
    pub max_time: Duration,
    /// Most Datalog runs per verification (effective-scope evaluation runs one per candidate).
    pub max_runs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_token_len: 16 * 1024,
            max_blocks: 8,
            max_block_facts: 64,
            max_block_rules: 16,
            max_block_checks: 32,
            max_check_queries: 8,
            max_body_predicates: 4,
            max_rule_variables: 8,
            max_expression_ops: 64,
            max_closure_depth: 1,
            max_string_len: 256,
            max_collection_len: 256,
            max_work: DEFAULT_MAX_WORK,
            max_facts: 1_000,
            max_iterations: 100,
            // The work limit bounds the work deterministically; the wall-clock limit is a
            // backstop. It is generous because a preempted thread on a loaded machine can take
            // milliseconds for a run that normally needs ~20 µs (seen at 5 ms in benches).
            max_time: Duration::from_millis(20),
            max_runs: 256,
        }
    }
}

/// See [`Limits::max_work`].
const DEFAULT_MAX_WORK: u64 = 1_000_000;

/// Compiled size allowed for a regular expression literal (bytes of the compiled program).
const REGEX_SIZE_LIMIT: usize = 16 * 1024;

/// The predicate names every block mentions (facts, rule heads and bodies, check bodies).
pub(crate) type Mentions = BTreeSet<String>;

/// Reads and admits the attenuation blocks (`blocks[0]` is the first block after the
/// authority). `authority_elements` is the size of the authority block.
pub(crate) fn admit(
    blocks: &[BlockBuilder],
    authority_elements: u64,
    limits: &Limits,
) -> Result<(Program, Mentions), String> {
    let mut program = Program {
        elements: authority_elements,
        ..Program::default()
    };
    let mut mentions = Mentions::new();
    let mut rules = Vec::new();
    let widths = Widths {
        variable: blocks
            .iter()
            .flat_map(|b| &b.facts)
            .flat_map(|f| &f.predicate.terms)
            .map(term_weight)
            .max()
            .unwrap_or(1),
    };
    for (i, block) in blocks.iter().enumerate() {
        let n = i + 1;
        let at = |what: String| format!("block {n}: {what}");
        check_count("facts", block.facts.len(), limits.max_block_facts).map_err(at)?;
        check_count("rules", block.rules.len(), limits.max_block_rules).map_err(at)?;
        check_count("checks", block.checks.len(), limits.max_block_checks).map_err(at)?;
        for fact in &block.facts {
            let p = &fact.predicate;
            let size = terms_size(&p.terms, limits).map_err(at)?;
            program.elements += 1 + size;
            *program.block_facts.entry(p.name.clone()).or_default() += 1;
            mentions.insert(p.name.clone());
        }
        for rule in &block.rules {
            let shape = shape_of(rule, widths, limits).map_err(at)?;
            program.elements += 1 + rule_size(rule);
            mentions.insert(rule.head.name.clone());
            mentions.extend(shape.body.iter().map(|b| b.name.clone()));
            rules.push(RuleShape {
                head: rule.head.name.clone(),
                shape,
            });
        }
        for check in &block.checks {
            check_count(
                "queries in one check",
                check.queries.len(),
                limits.max_check_queries,
            )
            .map_err(at)?;
            for query in &check.queries {
                let shape = shape_of(query, widths, limits).map_err(at)?;
                program.elements += 1 + rule_size(query);
                mentions.extend(shape.body.iter().map(|b| b.name.clone()));
                program.queries.push(shape);
            }
        }
    }
    let (ordered, depth) = order_rules(rules)?;
    program.rules = ordered;
    program.depth = depth;
    Ok((program, mentions))
}

fn check_count(what: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        return Err(format!("{n} {what}, more than {max}"));
    }
    Ok(())
}

/// Orders rules so that every rule comes after the rules producing its body's predicates;
/// refuses recursion (a rule whose head feeds, directly or not, its own body). Returns the
/// order and the longest chain.
fn order_rules(rules: Vec<RuleShape>) -> Result<(Vec<RuleShape>, u64), String> {
    let mut remaining = rules;
    let mut ordered: Vec<RuleShape> = Vec::new();
    let mut level: HashMap<String, u64> = HashMap::new();
    let mut depth = 0;
    while !remaining.is_empty() {
        // A rule is ready when no remaining rule produces any predicate of its body.
        let (ready, blocked): (Vec<RuleShape>, Vec<RuleShape>) =
            remaining.iter().cloned().partition(|r| {
                !r.shape
                    .body
                    .iter()
                    .any(|b| remaining.iter().any(|o| o.head == b.name))
            });
        if ready.is_empty() {
            return Err(
                "recursive rules (a rule's head feeds its own body) are not accepted".into(),
            );
        }
        for r in &ready {
            let below = r
                .shape
                .body
                .iter()
                .filter_map(|b| level.get(&b.name))
                .max()
                .copied()
                .unwrap_or(0);
            let l = level.entry(r.head.clone()).or_default();
            *l = (*l).max(below + 1);
            depth = depth.max(*l);
        }
        ordered.extend(ready);
        remaining = blocked;
    }
    Ok((ordered, depth))
}

/// Checks one rule or query against the limits and returns its cost shape.
fn shape_of(rule: &Rule, widths: Widths, limits: &Limits) -> Result<Shape, String> {
    check_count(
        "predicates in one rule or check body",
        rule.body.len(),
        limits.max_body_predicates,
    )?;
    let mut variables = BTreeSet::new();
    for p in rule.body.iter().chain(std::iter::once(&rule.head)) {
        terms_size(&p.terms, limits)?;
        for t in &p.terms {
            if let Term::Variable(v) = t {
                variables.insert(v.as_str());
            }
        }
    }
    let mut ops = 0;
    let mut expr = 0u64;
    for e in &rule.expressions {
        ops += count_ops(&e.ops, 0, limits)?;
        collect_variables(&e.ops, &mut variables);
        expr = expr.saturating_add(expression_cost(&e.ops, widths)?);
    }
    check_count(
        "expression operations in one rule or check",
        ops,
        limits.max_expression_ops,
    )?;
    check_count(
        "variables in one rule or check",
        variables.len(),
        limits.max_rule_variables,
    )?;
    let mut bound = BTreeSet::new();
    let body = rule
        .body
        .iter()
        .map(|p| {
            let determined = p.terms.iter().all(|t| match t {
                Term::Variable(v) => bound.contains(v.as_str()),
                _ => true,
            });
            for t in &p.terms {
                if let Term::Variable(v) = t {
                    bound.insert(v.as_str());
                }
            }
            BodyPredicate {
                name: p.name.clone(),
                determined,
            }
        })
        .collect();
    Ok(Shape { body, expr })
}

fn collect_variables<'a>(ops: &'a [Op], out: &mut BTreeSet<&'a str>) {
    for op in ops {
        match op {
            Op::Value(Term::Variable(v)) => {
                out.insert(v.as_str());
            }
            Op::Closure(params, inner) => {
                out.extend(params.iter().map(String::as_str));
                collect_variables(inner, out);
            }
            _ => {}
        }
    }
}

/// Number of operations, checking closure nesting and the size of literal values.
fn count_ops(ops: &[Op], depth: usize, limits: &Limits) -> Result<usize, String> {
    if depth > limits.max_closure_depth {
        return Err(format!(
            "closures nested more than {} deep",
            limits.max_closure_depth
        ));
    }
    let mut n = 0;
    for op in ops {
        n += 1;
        match op {
            Op::Value(t) => term_ok(t, limits)?,
            Op::Closure(_, inner) => n += count_ops(inner, depth + 1, limits)?,
            _ => {}
        }
    }
    Ok(n)
}

pub(super) fn regex_ok(pattern: &str) -> Result<(), String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(|_| ())
        .map_err(|_| "a `matches` pattern is invalid or too complex".to_string())
}

/// Checks string and collection sizes of terms; returns their total weight.
fn terms_size(terms: &[Term], limits: &Limits) -> Result<u64, String> {
    let mut total = 0;
    for t in terms {
        term_ok(t, limits)?;
        total += term_weight(t);
    }
    Ok(total)
}

fn term_ok(t: &Term, limits: &Limits) -> Result<(), String> {
    let long = |n: usize| {
        (n > limits.max_string_len).then(|| {
            format!(
                "a string or byte array of {n} bytes, more than {}",
                limits.max_string_len
            )
        })
    };
    let wide = |n: usize| {
        (n > limits.max_collection_len).then(|| {
            format!(
                "a collection of {n} elements, more than {}",
                limits.max_collection_len
            )
        })
    };
    let error = match t {
        Term::Str(s) => long(s.len()),
        Term::Bytes(b) => long(b.len()),
        Term::Set(items) => wide(items.len()),
        Term::Array(items) => wide(items.len()),
        Term::Map(m) => wide(m.len()),
        _ => None,
    };
    if let Some(e) = error {
        return Err(e);
    }
    match t {
        Term::Set(items) => items.iter().try_for_each(|i| term_ok(i, limits)),
        Term::Array(items) => items.iter().try_for_each(|i| term_ok(i, limits)),
        Term::Map(m) => m.values().try_for_each(|i| term_ok(i, limits)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(src: &str) -> Result<Program, String> {
        let block = BlockBuilder::new().code(src).map_err(|e| e.to_string())?;
        admit(&[block], 10, &Limits::default()).map(|(p, _)| p)
    }

    fn base() -> RunFactCounts {
        RunFactCounts(HashMap::from([
            ("time", 1),
            ("operation", 1),
            ("req_account", 1),
        ]))
    }

    #[test]
    fn builder_blocks_are_cheap() {
        let p = program(
            r#"check if req_account($a), {"acc_1", "acc_2"}.contains($a);
               check if operation($o), {"balances:read"}.contains($o);
               check if req_tx_range($f, $u), $f >= 2026-01-01T00:00:00Z, $u <= 2026-02-01T00:00:00Z;
               check if time($t), $t <= 2026-03-01T00:00:00Z;"#,
        )
        .unwrap();
        assert!(
            p.run_cost(&base(), &[]) < 50_000,
            "{}",
            p.run_cost(&base(), &[])
        );
    }

    #[test]
    fn combinatorial_checks_cost_what_they_enumerate() {
        let facts: String = (0..40).map(|i| format!("n({i});")).collect();
        let p = program(&format!(
            "{facts} check if n($a), n($b), n($c), n($d), $a + $b + $c + $d < 0;"
        ))
        .unwrap();
        // 40^4 complete matches at least.
        assert!(p.run_cost(&base(), &[]) > 40u64.pow(4));
    }

    #[test]
    fn static_limits_refuse_with_a_reason() {
        let facts: String = (0..65).map(|i| format!("n({i});")).collect();
        assert!(program(&facts).unwrap_err().contains("65 facts"));
        let e = program("check if a($a), b($b), c($c), d($d), e($e);").unwrap_err();
        assert!(e.contains("predicates"), "{e}");
        let e = program("p($x) <- q($x); q($x) <- p($x);").unwrap_err();
        assert!(e.contains("recursive"), "{e}");
        let e = program("p($x) <- p($x);").unwrap_err();
        assert!(e.contains("recursive"), "{e}");
        let e = program(r#"pat("a+"); check if req_account($a), pat($p), $a.matches($p);"#)
            .unwrap_err();
        assert!(e.contains("literal pattern"), "{e}");
        let e = program(r#"check if req_account($a), $a.matches("(\\w{100}){100}");"#).unwrap_err();
        assert!(e.contains("too complex"), "{e}");
        let long = "x".repeat(300);
        let e = program(&format!(r#"check if req_account("{long}");"#)).unwrap_err();
        assert!(e.contains("300 bytes"), "{e}");
        let e = program(
            "check if [1,2,3].all($x -> [1,2].all($y -> [3].all($z -> $x + $y + $z > 0)));",
        )
        .unwrap_err();
        assert!(e.contains("nested"), "{e}");
    }

    #[test]
    fn rule_chains_are_ordered_and_charged_per_iteration() {
        let p = program("b($x) <- a($x); c($x) <- b($x); a(1); a(2); check if c(1);").unwrap();
        assert_eq!(p.depth, 2);
        assert_eq!(p.rules[0].head, "b");
        let one = program("b($x) <- a($x); a(1); a(2); check if b(1);").unwrap();
        assert!(p.run_cost(&base(), &[]) > one.run_cost(&base(), &[]));
    }
}
