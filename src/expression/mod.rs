//! CEL expressions as Tessera admits them, below every room that compiles or evaluates one
//! (`config` checks them when it compiles, `policy` runs them). Admission is the one way a
//! claim value or a rule condition becomes a program. A tenant writes these, so each is bounded before anything can hurt the process:
//!
//! 1. before parsing, a lexical scan bounds the length and the nesting (cel 0.15's generated
//!    parser recurses once per level with no guard of its own: a stack overflow cannot be
//!    caught, so nothing deeper than [`MAX_NESTING`] ever reaches it);
//! 2. after parsing, a walk of the AST bounds comprehension nesting and estimates the cost of
//!    one evaluation against the largest variables the request path admits
//!    ([`variable_shape`]), in the spirit of Kubernetes' CEL cost estimator.

use std::sync::Arc;

use cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, operators};

mod shape;

pub use shape::limits;
pub(crate) use shape::{LIST_LIMITS, Shape, variable_shape};

/// Longest expression, in bytes (the CRDs' `maxLength` of `value` and `condition`).
pub const MAX_LENGTH: usize = 4096;
/// Deepest nesting: each parenthesis, bracket or brace weighs [`BRACKET_WEIGHT`], each operator
/// chained inside one weighs 1. In a debug build the parser's stack grows ~170 KiB per bracket
/// and ~40 KiB per chained operator: 28 keeps it within ~1.2 MiB of a 2 MiB tokio worker's.
pub const MAX_NESTING: u32 = 28;
pub const BRACKET_WEIGHT: u32 = 4;
/// Comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`) inside one another's body.
pub const MAX_COMPREHENSION_NESTING: u32 = 2;
/// Estimated cost of one evaluation, in steps of the interpreter (one node, or copying or
/// comparing 128 bytes); calibrated so the dearest admitted expression stays under 1 ms
/// (`benches/cel.rs`, BENCHMARKS.md).
pub const MAX_COST: u64 = 20_000;
/// Longest `matches()` pattern, and the compiled size it may have (`regex` compiles it again
/// on each call; its matching is linear in the text).
pub const MAX_REGEX_LENGTH: usize = 128;
pub const MAX_REGEX_SIZE: usize = 64 * 1024;
/// What compiling one admitted pattern costs, in steps (measured: `benches/cel.rs`).
const REGEX_COMPILE_COST: u64 = 1_000;

/// Why an expression was refused; the message says what to simplify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionError {
    #[error("is {0} bytes long; at most {MAX_LENGTH}")]
    TooLong(usize),
    #[error(
        "nests {0} deep (each parenthesis, bracket or brace counts {BRACKET_WEIGHT}, each operator chained inside one 1); at most {MAX_NESTING}: split it into simpler expressions"
    )]
    TooDeep(u32),
    #[error("is not a valid expression: {0}")]
    Lexical(String),
    #[error("does not compile: {0}")]
    Syntax(String),
    #[error(
        "nests comprehensions (all, exists, exists_one, map, filter) {0} deep; at most {MAX_COMPREHENSION_NESTING}"
    )]
    ComprehensionsTooDeep(u32),
    #[error("has an estimated cost of {} per evaluation, more than {}: {advice}", human(*cost), human(MAX_COST))]
    TooCostly { cost: u64, advice: String },
    #[error("{0}")]
    Regex(String),
}

fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

/// Compiles `source` if it is within every bound; the only way programs are made.
pub fn compile(source: &str) -> Result<cel::Program, ExpressionError> {
    admit(source).map(|(program, _)| program)
}

/// [`compile`], also giving the estimated cost of one evaluation.
pub fn admit(source: &str) -> Result<(cel::Program, u64), ExpressionError> {
    if source.len() > MAX_LENGTH {
        return Err(ExpressionError::TooLong(source.len()));
    }
    let depth = nesting(source)?;
    if depth > MAX_NESTING {
        return Err(ExpressionError::TooDeep(depth));
    }
    let program = cel::Program::compile(source).map_err(|e| ExpressionError::Syntax(e.to_string()))?;
    let mut estimate = Estimate { scopes: Vec::new(), comprehensions: 0, deepest: 0, regex_error: None };
    let (cost, _) = estimate.expr(program.expression());
    if let Some(e) = estimate.regex_error {
        return Err(ExpressionError::Regex(e));
    }
    if estimate.deepest > MAX_COMPREHENSION_NESTING {
        return Err(ExpressionError::ComprehensionsTooDeep(estimate.deepest));
    }
    if cost > MAX_COST {
        return Err(ExpressionError::TooCostly { cost, advice: advice(estimate.deepest) });
    }
    Ok((program, cost))
}

/// What to simplify when the estimate is over the limit.
fn advice(comprehensions: u32) -> String {
    let mut s = String::from("each comprehension multiplies its body's cost by the largest list it can iterate (");
    s.push_str(LIST_LIMITS);
    s.push(')');
    if comprehensions > 1 {
        s.push_str("; avoid comprehensions inside comprehensions");
    }
    s.push_str("; prefer `x in list` to `list.exists(...)`, and test the cheap conditions first");
    s
}

// ---------------------------------------------------------------------------------------------
// Before parsing: the lexical scan.

/// One open bracket of the scan: the operators of the element being read and the deepest
/// bracket inside it, and the deepest element already closed by a comma.
#[derive(Default)]
struct Group {
    ops: u32,
    logic: u32,
    inner: u32,
    closed: u32,
}

impl Group {
    /// Depth of the current element: each chained operator may add a level to the tree; `&&`
    /// and `||` are balanced by the parser, so `n` of them add about log2(n).
    fn element(&self) -> u32 {
        self.ops + (u32::BITS - self.logic.leading_zeros()) + self.inner
    }
    fn depth(&self) -> u32 {
        self.closed.max(self.element()).saturating_add(BRACKET_WEIGHT)
    }
}

/// An upper bound on how deep the parser and the tree it builds go for `source`, weighted by
/// the stack each level takes: a bracket [`BRACKET_WEIGHT`], an operator chained inside one 1. Refuses what CEL's lexer would not
/// read the same way (an unclosed string, an unknown escape or character): what is inside a
/// string or a comment must be exactly what the parser's lexer takes for one.
fn nesting(source: &str) -> Result<u32, ExpressionError> {
    let b = source.as_bytes();
    let mut stack = vec![Group::default()];
    let mut i = 0;
    let lexical = |at: usize, what: &str| Err(ExpressionError::Lexical(format!("{what} at offset {at}")));
    while i < b.len() {
        let c = b[i];
        let top = stack.len() - 1;
        match c {
            b' ' | b'\t' | b'\r' | b'\n' | 0x0c => i += 1,
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'\'' | b'"' => match string_end(b, i, false) {
                Some(end) => i = end,
                None => return lexical(i, "string literal not closed or with an invalid escape"),
            },
            b'`' => {
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b"_.-/ ".contains(&b[i])) {
                    i += 1;
                }
                if i == start + 1 || b.get(i) != Some(&b'`') {
                    return lexical(start, "backquoted identifier not closed");
                }
                i += 1;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &b[start..i];
                let prefix = matches!(word.to_ascii_lowercase().as_slice(), b"r" | b"b" | b"br");
                if prefix && matches!(b.get(i), Some(b'\'' | b'"')) {
                    let raw = word.eq_ignore_ascii_case(b"r") || word.eq_ignore_ascii_case(b"br");
                    match string_end(b, i, raw) {
                        Some(end) => i = end,
                        None => return lexical(start, "string literal not closed or with an invalid escape"),
                    }
                } else if word == b"in" {
                    stack[top].ops += 1;
                }
            }
            b'0'..=b'9' => {
                // Digits, hex digits, `x`, `u`, `.` and exponents; never `in` (`1in[1]`).
                while i < b.len() && (b[i].is_ascii_hexdigit() || b".xXuU".contains(&b[i])) {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                // `a[0][0]…` chains like an operator.
                if c == b'[' {
                    stack[top].ops += 1;
                }
                stack.push(Group::default());
                i += 1;
            }
            b')' | b']' | b'}' => {
                // A mismatched bracket is the parser's to report; it still closes a level here.
                if stack.len() > 1 {
                    close(&mut stack);
                }
                i += 1;
            }
            b',' => {
                let g = &mut stack[top];
                g.closed = g.closed.max(g.element());
                (g.ops, g.logic, g.inner) = (0, 0, 0);
                i += 1;
            }
            b'&' | b'|' if b.get(i + 1) == Some(&c) => {
                stack[top].logic += 1;
                i += 2;
            }
            b'=' if b.get(i + 1) == Some(&b'=') => {
                stack[top].ops += 1;
                i += 2;
            }
            b'!' | b'<' | b'>' => {
                stack[top].ops += 1;
                i += if b.get(i + 1) == Some(&b'=') { 2 } else { 1 };
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'.' | b'?' | b':' => {
                stack[top].ops += 1;
                i += 1;
            }
            _ => {
                let ch = source[i..].chars().next().unwrap_or('?');
                return lexical(i, &format!("unexpected character {ch:?}"));
            }
        }
    }
    // Unclosed brackets are the parser's to report; they are levels all the same.
    while stack.len() > 1 {
        close(&mut stack);
    }
    Ok(stack[0].depth() - BRACKET_WEIGHT)
}

/// Closes the innermost open bracket: its depth counts in the enclosing element.
fn close(stack: &mut Vec<Group>) {
    if let Some(group) = stack.pop()
        && let Some(parent) = stack.last_mut()
    {
        parent.inner = parent.inner.max(group.depth());
    }
}

/// Where the string literal opening at `b[start]` (a quote) ends, as CEL's lexer reads it:
/// single- or triple-quoted, raw or not; `None` when it is not closed or has an escape CEL
/// does not know (the lexer would then read its contents as code).
fn string_end(b: &[u8], start: usize, raw: bool) -> Option<usize> {
    let q = b[start];
    let triple = b.get(start + 1) == Some(&q) && b.get(start + 2) == Some(&q);
    let mut i = start + if triple { 3 } else { 1 };
    loop {
        let c = *b.get(i)?;
        if triple && c == q && b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q) {
            return Some(i + 3);
        }
        if !triple && c == q {
            return Some(i + 1);
        }
        if !triple && (c == b'\n' || c == b'\r') {
            return None;
        }
        if c == b'\\' && !raw {
            i += escape_len(&b[i..])?;
        } else {
            i += 1;
        }
    }
}

/// Length of the escape sequence at the start of `b` (a backslash), if CEL knows it.
fn escape_len(b: &[u8]) -> Option<usize> {
    let hex = |n: usize| b.len() > n && b[2..=n].iter().all(u8::is_ascii_hexdigit);
    match *b.get(1)? {
        b'a' | b'b' | b'f' | b'n' | b'r' | b't' | b'v' | b'"' | b'\'' | b'\\' | b'?' | b'`' => Some(2),
        b'0'..=b'3' if b.len() > 3 && b[2..4].iter().all(|c| (b'0'..=b'7').contains(c)) => Some(4),
        b'x' | b'X' if hex(3) => Some(4),
        b'u' if hex(5) => Some(6),
        b'U' if hex(9) => Some(10),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// After parsing: comprehension nesting and the cost estimate.

struct Estimate {
    /// Variables bound by the comprehensions around the node being estimated.
    scopes: Vec<(String, Shape)>,
    comprehensions: u32,
    deepest: u32,
    regex_error: Option<String>,
}

/// A cost in steps, saturating.
fn add(costs: impl IntoIterator<Item = u64>) -> u64 {
    costs.into_iter().fold(0, u64::saturating_add)
}

impl Estimate {
    /// The cost of evaluating `e` once, and the shape of what it gives.
    fn expr(&mut self, e: &IdedExpr) -> (u64, Shape) {
        match &e.expr {
            Expr::Unspecified => (1, Shape::Scalar),
            Expr::Literal(LiteralValue::String(s)) => (1, Shape::Text(s.inner().len() as u64)),
            Expr::Literal(LiteralValue::Bytes(s)) => (1, Shape::Text(s.inner().len() as u64)),
            Expr::Literal(_) => (1, Shape::Scalar),
            Expr::Ident(name) => {
                let bound = self.scopes.iter().rev().find(|(n, _)| n == name).map(|(_, s)| s.clone());
                (1, bound.or_else(|| variable_shape(name)).unwrap_or(Shape::Scalar))
            }
            Expr::Select(s) => {
                let (cost, shape) = self.expr(&s.operand);
                let out = if s.test { Shape::Scalar } else { shape.field(&s.field) };
                (cost.saturating_add(1), out)
            }
            Expr::List(l) => {
                let mut cost = 1u64;
                let mut elem = Shape::Scalar;
                for x in &l.elements {
                    let (c, s) = self.expr(x);
                    // Each element is copied into the list.
                    cost = add([cost, c, s.weight()]);
                    elem = elem.join(&s);
                }
                (cost, Shape::List(l.elements.len() as u64, Arc::new(elem)))
            }
            Expr::Map(m) => self.entries(m.entries.iter()),
            Expr::Struct(s) => self.entries(s.entries.iter()),
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Call(call) => self.call(call),
        }
    }

    fn entries<'a>(&mut self, entries: impl Iterator<Item = &'a cel::common::ast::IdedEntryExpr>) -> (u64, Shape) {
        let mut cost = 1u64;
        let (mut keys, mut values, mut n) = (Shape::Scalar, Shape::Scalar, 0u64);
        for entry in entries {
            let ((ck, k), (cv, v)) = match &entry.expr {
                EntryExpr::MapEntry(m) => (self.expr(&m.key), self.expr(&m.value)),
                EntryExpr::StructField(f) => ((1, Shape::Text(f.field.len() as u64)), self.expr(&f.value)),
            };
            cost = add([cost, ck, cv, k.weight(), v.weight()]);
            keys = keys.join(&k);
            values = values.join(&v);
            n += 1;
        }
        (cost, Shape::Map(n, Arc::new(keys), Arc::new(values)))
    }

    fn comprehension(&mut self, c: &ComprehensionExpr) -> (u64, Shape) {
        let (range_cost, range) = self.expr(&c.iter_range);
        let (init_cost, init) = self.expr(&c.accu_init);
        let n = range.len();
        let (first, second) = match (&range, &c.iter_var2) {
            (_, None) => (range.elem(), None),
            (Shape::Map(..), Some(v)) => (range.elem(), Some((v.clone(), range.index()))),
            (_, Some(v)) => (Shape::Scalar, Some((v.clone(), range.elem()))),
        };
        self.comprehensions += 1;
        self.deepest = self.deepest.max(self.comprehensions);
        let scopes = self.scopes.len();
        self.scopes.push((c.iter_var.clone(), first));
        self.scopes.extend(second);
        let append = appended(c);
        let (step_cost, result_shape) = match append {
            Some((guard, items)) => {
                let (g, _) = guard.map_or((0, Shape::Scalar), |g| self.expr(g));
                let (i, shape) = self.expr(items);
                // The appended items are copied into the result.
                (add([g, i, shape.weight()]), Shape::List(n, Arc::new(shape.elem())))
            }
            None => {
                self.scopes.push((c.accu_var.clone(), init.clone()));
                let (s, shape) = self.expr(&c.loop_step);
                (s, init.join(&shape))
            }
        };
        let (cond_cost, _) = self.expr(&c.loop_cond);
        self.scopes.truncate(scopes);
        self.comprehensions -= 1;
        self.scopes.push((c.accu_var.clone(), result_shape));
        let (result_cost, shape) = self.expr(&c.result);
        self.scopes.truncate(scopes);
        // Each iteration copies its element, evaluates the condition and the step.
        let per_item = add([cond_cost, step_cost, 1]);
        (add([range_cost, init_cost, range.weight(), n.saturating_mul(per_item), result_cost]), shape)
    }

    fn call(&mut self, call: &cel::common::ast::CallExpr) -> (u64, Shape) {
        let name = call.func_name.as_str();
        // `optional.of(x)` and the like: a call on a namespace, not on a value.
        let namespaced =
            matches!(call.target.as_deref(), Some(IdedExpr { expr: Expr::Ident(ns), .. }) if ns == "optional");
        let target = match &call.target {
            Some(t) if !namespaced => Some(self.expr(t)),
            _ => None,
        };
        if name == operators::CONDITIONAL && call.args.len() == 3 {
            let (c, _) = self.expr(&call.args[0]);
            let (t, ts) = self.expr(&call.args[1]);
            let (f, fs) = self.expr(&call.args[2]);
            return (add([c, t.max(f), 1]), ts.join(&fs));
        }
        if name == "matches" {
            self.check_pattern(call);
        }
        let args: Vec<(u64, Shape)> = call.args.iter().map(|a| self.expr(a)).collect();
        let all: Vec<&(u64, Shape)> = target.iter().chain(args.iter()).collect();
        let base = add(all.iter().map(|(c, _)| *c)).saturating_add(1);
        let weights = add(all.iter().map(|(_, s)| s.weight()));
        let shape = |i: usize| all.get(i).map_or(Shape::Scalar, |(_, s)| s.clone());
        match name {
            operators::LOGICAL_AND | operators::LOGICAL_OR | operators::LOGICAL_NOT | operators::NEGATE => {
                (base, Shape::Scalar)
            }
            operators::NOT_STRICTLY_FALSE | operators::SUBSTRACT | operators::MULTIPLY | operators::DIVIDE => {
                (base, Shape::Scalar)
            }
            operators::MODULO | "size" | "type" | "hasValue" => (base, Shape::Scalar),
            // Concatenation copies both sides.
            operators::ADD => (add([base, weights]), shape(0).concat(&shape(1))),
            // Comparisons stop at the shorter operand; `contains` reads both.
            operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS
            | "startsWith"
            | "endsWith" => (add([base, shape(0).weight().min(shape(1).weight())]), Shape::Scalar),
            "contains" => (add([base, weights]), Shape::Scalar),
            operators::IN => {
                let (needle, haystack) = (shape(0), shape(1));
                let each = needle.weight().min(haystack.elem().weight()).saturating_add(1);
                (add([base, haystack.len().saturating_mul(each)]), Shape::Scalar)
            }
            operators::INDEX | operators::OPT_INDEX => (add([base, shape(1).weight()]), shape(0).index()),
            operators::OPT_SELECT => (base, shape(0).index()),
            "matches" => (add([base, weights, REGEX_COMPILE_COST]), Shape::Scalar),
            "string" | "bytes" => (add([base, weights]), Shape::Text(shape(0).bytes().saturating_add(32))),
            "dyn" | "of" | "ofNonZeroValue" | "value" => (base, shape(0)),
            "or" | "orValue" => (base, shape(0).join(&shape(1))),
            _ => {
                // Conversions, time accessors and anything else: linear in the arguments.
                (add([base, weights]), Shape::Scalar)
            }
        }
    }

    /// `matches` takes a literal pattern, compiled here within the bounds it has at run time.
    fn check_pattern(&mut self, call: &cel::common::ast::CallExpr) {
        let pattern = call.args.last().and_then(|a| match &a.expr {
            Expr::Literal(LiteralValue::String(s)) => Some(s.inner().to_owned()),
            _ => None,
        });
        let error = match pattern {
            None => Some("calls matches() with a computed pattern: write the pattern as a string literal".to_owned()),
            Some(p) if p.len() > MAX_REGEX_LENGTH => {
                Some(format!("has a matches() pattern of {} bytes; at most {MAX_REGEX_LENGTH}", p.len()))
            }
            Some(p) => regex::RegexBuilder::new(&p).size_limit(MAX_REGEX_SIZE).build().err().map(|e| {
                format!("has a matches() pattern that is refused (at most {MAX_REGEX_SIZE} bytes compiled): {e}")
            }),
        };
        if self.regex_error.is_none() {
            self.regex_error = error;
        }
    }
}

/// The guard and the items of a `map`/`filter` step (`@result + [e]`, perhaps guarded): the
/// interpreter appends them in place rather than copying the accumulator.
fn appended(c: &ComprehensionExpr) -> Option<(Option<&IdedExpr>, &IdedExpr)> {
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if *n == c.accu_var);
    let items = |e: &'_ IdedExpr| -> Option<()> {
        match &e.expr {
            Expr::Call(call) if call.func_name == operators::ADD && call.target.is_none() => match call.args.as_slice()
            {
                [l, r] if is_accu(l) && matches!(r.expr, Expr::List(_)) => Some(()),
                _ => None,
            },
            _ => None,
        }
    };
    let Expr::Call(step) = &c.loop_step.expr else { return None };
    if step.func_name == operators::CONDITIONAL && step.args.len() == 3 && is_accu(&step.args[2]) {
        items(&step.args[1])?;
        let Expr::Call(add) = &step.args[1].expr else { return None };
        return Some((Some(&step.args[0]), &add.args[1]));
    }
    items(&c.loop_step)?;
    Some((None, &step.args[1]))
}

#[cfg(test)]
mod tests;
