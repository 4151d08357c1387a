//! The work estimate: an upper bound, per Datalog run, on what biscuit-auth's nested-loop
//! evaluation can do for the admitted blocks and the run's facts (see the module above).

use std::collections::HashMap;

use biscuit_auth::builder::{Binary, Op, Predicate, Rule, Term, Unary};

use super::regex_ok;

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

/// The shape of a rule or check query, as far as its cost is concerned.
#[derive(Clone, Debug)]
pub(super) struct Shape {
    /// The body's predicates, in order.
    pub(super) body: Vec<BodyPredicate>,
    /// Cost of evaluating the expressions once (for one complete match).
    pub(super) expr: u64,
}

/// One predicate of a rule body.
#[derive(Clone, Debug)]
pub(super) struct BodyPredicate {
    pub(super) name: String,
    /// Every term is a constant or a variable bound by an earlier predicate of the body: facts
    /// are a set, so at most one fact matches it.
    pub(super) determined: bool,
}

/// A rule of an attenuation block: its head name and shape.
#[derive(Clone, Debug)]
pub(super) struct RuleShape {
    pub(super) head: String,
    pub(super) shape: Shape,
}

/// What admission learned about the attenuation blocks, to charge each run with.
#[derive(Clone, Debug, Default)]
pub(crate) struct Program {
    /// Facts of the attenuation blocks, by predicate name.
    pub(super) block_facts: HashMap<String, u64>,
    /// Rules of the attenuation blocks, in dependency order (heads before their uses).
    pub(super) rules: Vec<RuleShape>,
    /// Longest chain of rules feeding each other (fixpoint iterations = depth + 1).
    pub(super) depth: u64,
    /// Check queries of the attenuation blocks.
    pub(super) queries: Vec<Shape>,
    /// Datalog elements of every block (authority included): the cost of loading them per run.
    pub(super) elements: u64,
}

/// Largest collection a variable can be bound to (from the facts of the blocks; the server's
/// facts hold no collections).
#[derive(Clone, Copy, Debug)]
pub(super) struct Widths {
    pub(super) variable: u64,
}

/// Upper bound on the work of evaluating `ops` once. Values are cloned onto a stack and binary
/// operations on collections walk them, so the largest collection one expression can build
/// (every collection value it pushes, put together) bounds each operation; a closure runs its
/// body once per element.
pub(super) fn expression_cost(ops: &[Op], widths: Widths) -> Result<u64, String> {
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

/// Elements of a term (1 for a scalar).
pub(super) fn term_weight(t: &Term) -> u64 {
    match t {
        Term::Set(items) => items.iter().map(term_weight).sum::<u64>().max(1),
        Term::Array(items) => items.iter().map(term_weight).sum::<u64>().max(1),
        Term::Map(m) => m.values().map(term_weight).sum::<u64>().max(1) * 2,
        _ => 1,
    }
}

pub(super) fn rule_size(rule: &Rule) -> u64 {
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
