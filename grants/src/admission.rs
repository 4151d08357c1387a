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

use std::collections::{BTreeSet, HashMap};

use biscuit_auth::BlockBuilder;
use biscuit_auth::builder::{Binary, Op, Predicate, Rule, Term, Unary};

use crate::verify::Limits;

/// Work units, calibrated so that one unit is about a nanosecond of biscuit-auth 6 evaluation
/// on the reference machine (BENCHMARKS.md, `cargo bench -p grants --bench hostile`): matching one
/// body predicate scans every fact in scope (`VISIT` each: a name comparison); each fact that
/// matches extends the partial match (`BIND`: a clone of the bindings and a nested iterator);
/// each expression operation costs `OP`, and one element of a collection copied or compared
/// `ELEMENT`.
const VISIT: u64 = 10;
const BIND: u64 = 300;
const OP: u64 = 50;
const ELEMENT: u64 = 5;
/// Biscuit compiles a `matches` pattern on every evaluation.
const REGEX_EVAL: u64 = 40_000;
/// Building the authorizer (loading and translating every block) per run, per Datalog element.
const LOAD_PER_ELEMENT: u64 = 40;
/// Compiled size allowed for a regular expression literal (bytes of the compiled program).
const REGEX_SIZE_LIMIT: usize = 16 * 1024;

/// The shape of a rule or check query, as far as its cost is concerned.
#[derive(Clone, Debug)]
struct Shape {
    /// The body's predicates, in order.
    body: Vec<BodyPredicate>,
    /// Cost of evaluating the expressions once (for one complete match).
    expr: u64,
}

/// One predicate of a rule body.
#[derive(Clone, Debug)]
struct BodyPredicate {
    name: String,
    /// Every term is a constant or a variable bound by an earlier predicate of the body: facts
    /// are a set, so at most one fact matches it.
    determined: bool,
}

/// A rule of an attenuation block: its head name and shape.
#[derive(Clone, Debug)]
struct RuleShape {
    head: String,
    shape: Shape,
}

/// What admission learned about the attenuation blocks, to charge each run with.
#[derive(Clone, Debug, Default)]
pub(crate) struct Program {
    /// Facts of the attenuation blocks, by predicate name.
    block_facts: HashMap<String, u64>,
    /// Rules of the attenuation blocks, in dependency order (heads before their uses).
    rules: Vec<RuleShape>,
    /// Longest chain of rules feeding each other (fixpoint iterations = depth + 1).
    depth: u64,
    /// Check queries of the attenuation blocks.
    queries: Vec<Shape>,
    /// Datalog elements of every block (authority included): the cost of loading them per run.
    elements: u64,
}

/// Largest collection a variable can be bound to (from the facts of the blocks; the server's
/// facts hold no collections).
#[derive(Clone, Copy, Debug)]
struct Widths {
    variable: u64,
}

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

/// Upper bound on the work of evaluating `ops` once. Values are cloned onto a stack and binary
/// operations on collections walk them, so the largest collection one expression can build
/// (every collection value it pushes, put together) bounds each operation; a closure runs its
/// body once per element.
fn expression_cost(ops: &[Op], widths: Widths) -> Result<u64, String> {
    let widest = widest_collection(ops, widths);
    ops_cost(ops, widest)
}

fn widest_collection(ops: &[Op], widths: Widths) -> u64 {
    ops.iter()
        .map(|op| match op {
            Op::Value(Term::Variable(_)) => widths.variable,
            Op::Value(t) => term_weight(t),
            Op::Closure(_, inner) => widest_collection(inner, widths),
            _ => 0,
        })
        .sum()
}

fn ops_cost(ops: &[Op], widest: u64) -> Result<u64, String> {
    let mut cost = 0u64;
    let mut last_literal: Option<&str> = None;
    for op in ops {
        let c = match op {
            Op::Value(t) => {
                last_literal = match t {
                    Term::Str(s) => Some(s),
                    _ => None,
                };
                OP + ELEMENT * term_weight(t)
            }
            Op::Unary(Unary::Ffi(name)) | Op::Binary(Binary::Ffi(name)) => {
                return Err(format!("foreign function `{name}` is not available here"));
            }
            Op::Unary(_) => OP + ELEMENT * widest,
            Op::Binary(Binary::Regex) => {
                // Biscuit compiles the pattern at each evaluation: only a literal pattern,
                // compiled small, is accepted (a pattern bound from a fact is not).
                let Some(pattern) = last_literal else {
                    return Err("`matches` needs a literal pattern".into());
                };
                regex_ok(pattern)?;
                REGEX_EVAL
            }
            Op::Binary(_) => OP + ELEMENT * widest,
            Op::Closure(_, inner) => {
                // The closure's body runs once per element of the collection it is applied to.
                widest.max(1).saturating_mul(ops_cost(inner, widest)?)
            }
        };
        if !matches!(op, Op::Value(_)) {
            last_literal = None;
        }
        cost = cost.saturating_add(c);
    }
    Ok(cost)
}

fn regex_ok(pattern: &str) -> Result<(), String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(|_| ())
        .map_err(|_| "a `matches` pattern is invalid or too complex".to_string())
}

/// Elements of a term (1 for a scalar).
fn term_weight(t: &Term) -> u64 {
    match t {
        Term::Set(items) => items.iter().map(term_weight).sum::<u64>().max(1),
        Term::Array(items) => items.iter().map(term_weight).sum::<u64>().max(1),
        Term::Map(m) => m.values().map(term_weight).sum::<u64>().max(1) * 2,
        _ => 1,
    }
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

fn rule_size(rule: &Rule) -> u64 {
    let preds: u64 = std::iter::once(&rule.head)
        .chain(&rule.body)
        .map(|p: &Predicate| 1 + p.terms.iter().map(term_weight).sum::<u64>())
        .sum();
    let ops: u64 = rule
        .expressions
        .iter()
        .map(|e| e.ops.iter().map(op_size).sum::<u64>())
        .sum();
    preds + ops
}

fn op_size(op: &Op) -> u64 {
    match op {
        Op::Value(t) => term_weight(t),
        Op::Closure(_, inner) => 1 + inner.iter().map(op_size).sum::<u64>(),
        _ => 1,
    }
}

/// Facts by predicate name that one run supplies besides the attenuation blocks: the authority
/// block's and the verifier's own (request facts).
#[derive(Clone, Debug, Default)]
pub(crate) struct RunFactCounts(pub HashMap<&'static str, u64>);

/// A query the verifier itself runs (its checks and allow policy), by body predicate names.
pub(crate) struct OwnQuery {
    pub body: &'static [&'static str],
}

impl Program {
    /// Upper bound on the work of one run: loading the blocks, the rules' fixpoint (every
    /// iteration applies every rule), every check query of the blocks and the verifier's own
    /// queries, each counted as the nested loop biscuit-auth runs.
    pub(crate) fn run_cost(&self, base: &RunFactCounts, own: &[OwnQuery]) -> u64 {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for (name, n) in &base.0 {
            *counts.entry(name).or_default() += n;
        }
        for (name, n) in &self.block_facts {
            *counts.entry(name.as_str()).or_default() += n;
        }
        // Derived facts, in dependency order: at most one per complete match of each rule.
        let mut derived: HashMap<&str, u64> = HashMap::new();
        for r in &self.rules {
            let matches = r.shape.body.iter().fold(1u64, |acc, b| {
                let n = counts.get(b.name.as_str()).copied().unwrap_or(0)
                    + derived.get(b.name.as_str()).copied().unwrap_or(0);
                acc.saturating_mul(if b.determined { n.min(1) } else { n })
            });
            let d = derived.entry(r.head.as_str()).or_default();
            *d = d.saturating_add(matches);
        }
        for (name, n) in derived {
            let c = counts.entry(name).or_default();
            *c = c.saturating_add(n);
        }
        let in_scope: u64 = counts.values().fold(0u64, |a, n| a.saturating_add(*n));
        let trusted: u64 = base.0.values().fold(0u64, |a, n| a.saturating_add(*n));
        // Facts one body predicate can match: at most one when its terms are determined.
        let count = |b: &BodyPredicate| {
            let n = counts.get(b.name.as_str()).copied().unwrap_or(0);
            if b.determined { n.min(1) } else { n }
        };

        // Building the authorizer: every element loaded, and every string interned into a table
        // that is searched linearly (biscuit-auth's SymbolTable), about (facts)^2 / 2 compares.
        let mut total = self
            .elements
            .saturating_add(in_scope)
            .saturating_mul(LOAD_PER_ELEMENT)
            .saturating_add(in_scope.saturating_mul(in_scope) / 2);
        let iterations = self.depth + 1;
        for r in &self.rules {
            let c = body_cost(r.shape.body.iter().map(count), in_scope, r.shape.expr);
            total = total.saturating_add(c.saturating_mul(iterations));
        }
        for q in &self.queries {
            total = total.saturating_add(body_cost(q.body.iter().map(count), in_scope, q.expr));
        }
        // The verifier's own queries see only the authority's and its own facts (blocks are not
        // trusted), whose values are distinct, and every request value it supplies was taken
        // from the authority block (or checked against it first): each level's first binding
        // succeeds, so a query costs one scan per predicate.
        for q in own {
            let per_level = trusted.saturating_mul(VISIT).saturating_add(BIND);
            total = total.saturating_add(per_level.saturating_mul(q.body.len() as u64) + OP);
        }
        total
    }
}

/// Nested-loop cost of one body, nothing assumed about which matches succeed: level `i` scans
/// `in_scope` facts once per partial match of the levels before it and extends each of its `n`
/// matches; each complete match evaluates the expressions (`expr`).
fn body_cost(counts: impl Iterator<Item = u64>, in_scope: u64, expr: u64) -> u64 {
    let mut partial = 1u64;
    let mut cost = 0u64;
    let mut bind = BIND;
    for n in counts {
        let level = in_scope
            .saturating_mul(VISIT)
            .saturating_add(n.saturating_mul(bind));
        cost = cost.saturating_add(partial.saturating_mul(level));
        partial = partial.saturating_mul(n);
        // Deeper levels clone more bindings.
        bind += BIND / 3;
    }
    cost.saturating_add(partial.saturating_mul(bind + expr))
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
