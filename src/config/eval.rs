//! Expression evaluation over hcl-edit syntax trees, so every error keeps the
//! exact span of the expression that caused it. References to blocks are
//! resolved by name lookups (never by building a context of all objects).

use super::diag::{Diagnostic, Diagnostics, Loc, Source, did_you_mean};
use super::funcs::FnError;
use super::number::{NumError, Number};
use super::value::{Ref, Type, Value, nfc};
use crate::model::Kind;
use hcl_edit::Span;
use hcl_edit::expr::{BinaryOperator, Expression, ObjectKey, TraversalOperator, UnaryOperator};
use hcl_edit::template::{Directive, Element, Template};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

thread_local! {
    /// How many `templatefile` templates are being rendered on this thread.
    static TEMPLATE_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The evaluation failed; its diagnostic has already been recorded.
#[derive(Debug, Clone, Copy)]
pub struct Failed;

pub type Eval<T> = Result<T, Failed>;

/// Where diagnostics go, and whether anything sensitive was read.
pub struct Out<'d> {
    pub diags: &'d mut Diagnostics,
    pub sensitive: bool,
}

impl Out<'_> {
    pub fn err(&mut self, d: Diagnostic) -> Failed {
        self.diags.push(d);
        Failed
    }
}

/// A resolved input variable.
#[derive(Debug, Clone)]
pub struct VarValue {
    pub value: Value,
    pub sensitive: bool,
    /// False when the variable has no usable value (already reported).
    pub known: bool,
    /// Its declared type (`any` when it declares none): `==` needs it.
    pub ty: Type,
}

/// One `locals` entry, evaluated on first use.
pub struct LocalDef {
    pub expr: Expression,
    pub source: Arc<Source>,
}

enum LocalState {
    InProgress,
    Done(Value, bool),
    Failed,
}

/// Locals are evaluated lazily, in whatever order references need them;
/// a reference back to a local still being evaluated is a cycle.
#[derive(Default)]
pub struct Locals {
    pub defs: HashMap<String, LocalDef>,
    /// Names in declaration order, so evaluation (and its errors) is deterministic.
    pub order: Vec<String>,
    state: RefCell<HashMap<String, LocalState>>,
    stack: RefCell<Vec<String>>,
    /// Depth of speculative evaluation (`try`, `can`, an untaken branch).
    speculative: std::cell::Cell<usize>,
}

/// Declared block names.
#[derive(Default)]
pub struct Objects {
    /// Per kind, each name and whether its block has `for_each`.
    pub names: HashMap<Kind, HashMap<String, bool>>,
    /// Blocks seen in files that failed to parse: references to them fail
    /// quietly, since the syntax error is what needs fixing.
    pub broken: HashSet<(Kind, String)>,
    /// Kinds with a block whose name is missing: an unknown name of such a
    /// kind may be that block, so it is not reported.
    pub unnamed: HashSet<Kind>,
}

/// Everything an expression may refer to.
#[derive(Clone)]
pub struct Scope<'a> {
    pub source: &'a Arc<Source>,
    pub vars: &'a HashMap<String, VarValue>,
    pub locals: &'a Locals,
    pub objects: &'a Objects,
    /// Group names of the recovery plan being read, if any.
    pub groups: Option<&'a [String]>,
    /// `each.key` and `each.value` inside a block with `for_each`.
    pub each: Option<(&'a str, &'a Value)>,
    /// Iteration variables of enclosing `for` expressions.
    pub for_vars: Vec<(String, Value)>,
}

impl<'a> Scope<'a> {
    /// A scope outside any recovery plan, `for_each` or `for` expression.
    pub fn top(
        source: &'a Arc<Source>,
        vars: &'a HashMap<String, VarValue>,
        locals: &'a Locals,
        objects: &'a Objects,
    ) -> Scope<'a> {
        Scope {
            source,
            vars,
            locals,
            objects,
            groups: None,
            each: None,
            for_vars: Vec::new(),
        }
    }
}

/// Nothing to refer to: the scope of variable declarations, variables files
/// and the backend block, which may not depend on anything.
#[derive(Default)]
pub struct Empty {
    vars: HashMap<String, VarValue>,
    locals: Locals,
    objects: Objects,
}

impl Empty {
    pub fn scope<'s>(&'s self, source: &'s Arc<Source>) -> Scope<'s> {
        Scope::top(source, &self.vars, &self.locals, &self.objects)
    }
}

const NAMESPACES: [&str; 11] = [
    "var",
    "local",
    "each",
    "vault",
    "site",
    "policy",
    "machine",
    "protection",
    "recovery_plan",
    "group",
    "path",
];

impl<'a> Scope<'a> {
    fn loc(&self, span: Option<Range<usize>>) -> Loc {
        Loc::new(self.source, span)
    }

    pub fn eval(&self, e: &Expression, out: &mut Out) -> Eval<Value> {
        match e {
            Expression::Null(_) => Ok(Value::Null),
            Expression::Bool(b) => Ok(Value::Bool(**b)),
            Expression::Number(n) => {
                // The literal as written, parsed as go-cty does (512 bits).
                let text = n
                    .span()
                    .and_then(|r| self.source.text.get(r))
                    .map(str::trim)
                    .map(str::to_string)
                    .or_else(|| n.as_f64().map(|f| format!("{f:e}")))
                    .unwrap_or_default();
                super::value::parse_literal(&text)
                    .map(Value::Number)
                    .map_err(|msg| {
                        out.err(
                            Diagnostic::error("standby::number_range", self.loc(n.span()), msg.to_string())
                                .label("this number")
                                .help("Terraform would keep it; write a number of a sensible size, or a string if it is an identifier"),
                        )
                    })
            }
            Expression::String(s) => Ok(Value::String(nfc(s))),
            Expression::Array(a) => a
                .iter()
                .map(|i| self.eval(i, out))
                .collect::<Eval<_>>()
                .map(Value::List),
            Expression::Object(o) => {
                let mut map = BTreeMap::new();
                for (k, v) in o.iter() {
                    let key = match k {
                        ObjectKey::Ident(id) => id.as_str().to_string(),
                        ObjectKey::Expression(ke @ Expression::Traversal(_)) => {
                            // hclsyntax: `a.b = 1` could mean the reference or the
                            // literal name "a.b"; Terraform refuses to guess.
                            return Err(out.err(
                                Diagnostic::error(
                                    "standby::ambiguous_key",
                                    self.loc(ke.span()),
                                    "ambiguous object key",
                                )
                                .label("a reference or a name with dots?")
                                .help("wrap a reference in parentheses: (var.name) = ...; quote a literal name: \"a.b\" = ..."),
                            ));
                        }
                        ObjectKey::Expression(ke) => {
                            let kv = self.eval(ke, out)?;
                            self.key_string(kv, ke.span(), out)?
                        }
                    };
                    // Two keys that evaluate alike: the later wins, as in HCL.
                    map.insert(key, self.eval(v.expr(), out)?);
                }
                Ok(Value::Map(map))
            }
            Expression::StringTemplate(t) => self.template_value(t, out),
            Expression::HeredocTemplate(h) => {
                // The parser has already dedented `<<-EOT` (a plain `<<EOT`
                // keeps its indentation, as in HCL), but only outside
                // directives: lines inside `%{ if }`/`%{ for }` are done here.
                match h.indent() {
                    Some(n) if h.template.iter().any(Element::is_directive) => {
                        let mut t = h.template.clone();
                        dedent_directives(&mut t, n);
                        self.template_value(&t, out)
                    }
                    _ => self.template_value(&h.template, out),
                }
            }
            Expression::Parenthesis(p) => self.eval(p.inner(), out),
            Expression::Variable(v) => self.bare_variable(v.as_str(), v.span(), out),
            Expression::Traversal(t) => self.traversal(t, out),
            Expression::Conditional(c) => self.conditional(c, out),
            Expression::FuncCall(f) => self.call(f, out),
            Expression::UnaryOp(u) => {
                let v = self.eval(&u.expr, out)?;
                match *u.operator.value() {
                    UnaryOperator::Neg => {
                        Ok(Value::Number(self.operand_number(&u.expr, v, out)?.neg()))
                    }
                    UnaryOperator::Not => match Type::Bool.convert(v.clone()) {
                        Ok(Value::Bool(b)) => Ok(Value::Bool(!b)),
                        _ => Err(self.type_error(&u.expr, "a bool", &v, out)),
                    },
                }
            }
            Expression::BinaryOp(b) => self.binary(b, out),
            Expression::ForExpr(f) => self.for_expr(f, out),
        }
    }

    fn type_error(&self, e: &Expression, expected: &str, found: &Value, out: &mut Out) -> Failed {
        out.err(
            Diagnostic::error(
                "standby::wrong_type",
                self.loc(e.span()),
                format!("expected {expected}, found {}", found.type_name()),
            )
            .label(format!("this is {}", found.type_name())),
        )
    }

    /// An arithmetic operand as a number (`"5"` converts, as in HCL); a
    /// string that does not says why (`"inf"`: an infinity), never its text.
    fn operand_number(&self, e: &Expression, v: Value, out: &mut Out) -> Eval<Number> {
        match Type::Number.convert(v.clone()) {
            Ok(Value::Number(n)) => Ok(n),
            Err(why) if matches!(v, Value::String(_)) => Err(out.err(
                Diagnostic::error(
                    "standby::wrong_type",
                    self.loc(e.span()),
                    format!("expected a number, found {why}"),
                )
                .label("this is a string"),
            )),
            _ => Err(self.type_error(e, "a number", &v, out)),
        }
    }

    fn key_string(&self, v: Value, span: Option<Range<usize>>, out: &mut Out) -> Eval<String> {
        match v {
            Value::String(s) => Ok(s),
            v @ (Value::Number(_) | Value::Bool(_)) => {
                Ok(v.to_template_string().unwrap_or_default())
            }
            v => Err(out.err(
                Diagnostic::error(
                    "standby::wrong_type",
                    self.loc(span),
                    format!("a map key must be a string, found {}", v.type_name()),
                )
                .label("not a string"),
            )),
        }
    }

    /// A template's value: a template that is one interpolation and nothing
    /// else (`"${var.list}"`) is that value unchanged, as in HCL.
    fn template_value(&self, t: &Template, out: &mut Out) -> Eval<Value> {
        let els: Vec<&Element> = t.iter().collect();
        if let [Element::Interpolation(i)] = els.as_slice() {
            return self.eval(&i.expr, out);
        }
        let mut s = String::new();
        self.render(t, false, false, &mut s, out)?;
        Ok(Value::String(s))
    }

    /// Render a template into `s`. `~` strip markers remove the whitespace
    /// (newlines too) of the literal next to them; `trim_first`/`trim_last`
    /// are the markers of an enclosing directive that touch this template's
    /// first and last literal.
    fn render(
        &self,
        t: &Template,
        trim_first: bool,
        trim_last: bool,
        s: &mut String,
        out: &mut Out,
    ) -> Eval<()> {
        let els: Vec<&Element> = t.iter().collect();
        // (strips the literal before it, strips the literal after it)
        let marks = |e: &Element| -> (bool, bool) {
            match e {
                Element::Literal(_) => (false, false),
                Element::Interpolation(i) => (i.strip.strip_start(), i.strip.strip_end()),
                Element::Directive(d) => match &**d {
                    Directive::If(d) => (
                        d.if_expr.strip.strip_start(),
                        d.endif_expr.strip.strip_end(),
                    ),
                    Directive::For(d) => (
                        d.for_expr.strip.strip_start(),
                        d.endfor_expr.strip.strip_end(),
                    ),
                },
            }
        };
        for (i, el) in els.iter().enumerate() {
            match el {
                Element::Literal(l) => {
                    let mut text: &str = l.value();
                    let trim_start = if i == 0 {
                        trim_first
                    } else {
                        marks(els[i - 1]).1
                    };
                    let trim_end = if i + 1 == els.len() {
                        trim_last
                    } else {
                        marks(els[i + 1]).0
                    };
                    if trim_start {
                        text = text.trim_start();
                    }
                    if trim_end {
                        text = text.trim_end();
                    }
                    s.push_str(&nfc(text));
                }
                Element::Interpolation(it) => {
                    let v = self.eval(&it.expr, out)?;
                    s.push_str(&self.template_piece(v, &it.expr, out)?);
                }
                Element::Directive(d) => match &**d {
                    Directive::If(d) => {
                        let c = self.eval(&d.if_expr.cond_expr, out)?;
                        let c = match Type::Bool.convert(c.clone()) {
                            Ok(Value::Bool(b)) => b,
                            _ => {
                                return Err(self.type_error(
                                    &d.if_expr.cond_expr,
                                    "a bool",
                                    &c,
                                    out,
                                ));
                            }
                        };
                        let end_strip = d.endif_expr.strip.strip_start();
                        if c {
                            let last = match &d.else_expr {
                                Some(e) => e.strip.strip_start(),
                                None => end_strip,
                            };
                            self.render(
                                &d.if_expr.template,
                                d.if_expr.strip.strip_end(),
                                last,
                                s,
                                out,
                            )?;
                        } else if let Some(e) = &d.else_expr {
                            self.render(&e.template, e.strip.strip_end(), end_strip, s, out)?;
                        }
                    }
                    Directive::For(d) => {
                        let f = &d.for_expr;
                        let coll = self.eval(&f.collection_expr, out)?;
                        let items = self.for_items(coll, &f.collection_expr, out)?;
                        for (k, v) in items {
                            let mut scope = self.clone();
                            if let Some(kv) = &f.key_var {
                                scope.for_vars.push((kv.to_string(), k));
                            }
                            scope.for_vars.push((f.value_var.to_string(), v));
                            scope.render(
                                &f.template,
                                f.strip.strip_end(),
                                d.endfor_expr.strip.strip_start(),
                                s,
                                out,
                            )?;
                        }
                    }
                },
            }
        }
        Ok(())
    }

    /// Evaluate without reporting: for `try`, `can` and the branch of a
    /// conditional that is not taken. Locals that fail here are not
    /// remembered as failed, so a later real use reports their error.
    pub(super) fn speculate(&self, e: &Expression, out: &mut Out) -> Option<Value> {
        self.quietly(e, out).0.ok()
    }

    /// Evaluate `e` with its diagnostics collected apart (returned) instead
    /// of reported; sensitivity still flows into `out`.
    fn quietly(&self, e: &Expression, out: &mut Out) -> (Eval<Value>, Diagnostics) {
        let mut scratch = Diagnostics::default();
        let mut inner = Out {
            diags: &mut scratch,
            sensitive: false,
        };
        self.locals
            .speculative
            .set(self.locals.speculative.get() + 1);
        let v = self.eval(e, &mut inner);
        self.locals
            .speculative
            .set(self.locals.speculative.get() - 1);
        if inner.sensitive {
            out.sensitive = true;
        }
        (v, scratch)
    }

    /// For `try` and `can`: Ok(None) when `e` fails at evaluation, but a
    /// static mistake (an undeclared name, an unknown function) is still
    /// an error, as in Terraform, so a typo is not taken for "absent".
    fn attempt(&self, e: &Expression, out: &mut Out) -> Eval<Option<Value>> {
        let (v, scratch) = self.quietly(e, out);
        if v.is_ok() {
            return Ok(v.ok());
        }
        let is_static = |d: &Diagnostic| {
            matches!(
                d.code,
                "standby::unknown_function"
                    | "standby::unsupported_function"
                    | "standby::each_outside_for_each"
                    | "standby::cycle"
            ) || (d.code == "standby::unknown_reference" && d.message.starts_with("unknown reference"))
                // standby's own limits are not failures Terraform would
                // have: try() must not turn them into its fallback.
                || matches!(d.code, "standby::number_range" | "standby::unsupported_comparison" | "standby::unsupported_path")
                || ["are not supported by standby"]
                    .iter()
                    .any(|m| d.message.contains(m))
        };
        if scratch.items.iter().any(is_static) {
            for d in scratch.items.into_iter().filter(is_static) {
                out.diags.push(d);
            }
            return Err(Failed);
        }
        Ok(None)
    }

    fn template_piece(&self, v: Value, e: &Expression, out: &mut Out) -> Eval<String> {
        match v.to_template_string() {
            Some(piece) => Ok(piece),
            None => Err(out.err(
                Diagnostic::error(
                    "standby::wrong_type",
                    self.loc(e.span()),
                    format!("cannot interpolate {} into a string", v.type_name()),
                )
                .label(format!("this is {}", v.type_name()))
                .help("only strings, numbers and bools can appear inside \"${...}\" with other text; use join() or jsonencode() for a list or map"),
            )),
        }
    }

    /// The (key, value) pairs a `for` walks: index and item of a list, key
    /// and value of a map (keys in lexical order, as in HCL).
    fn for_items(&self, coll: Value, e: &Expression, out: &mut Out) -> Eval<Vec<(Value, Value)>> {
        match coll {
            Value::List(l) => Ok(l
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Value::Number(Number::from(i)), v))
                .collect()),
            // A set element's key is the element itself, as in HCL.
            Value::Set(l) => Ok(l.into_iter().map(|v| (v.clone(), v)).collect()),
            Value::Map(m) => Ok(m.into_iter().map(|(k, v)| (Value::String(k), v)).collect()),
            other => Err(self.type_error(e, "a list or a map", &other, out)),
        }
    }

    /// `c ? a : b`: the condition must be a bool; results of different
    /// types are unified as HCL does (primitives become strings), and
    /// results that cannot be unified are an error even when not chosen.
    fn conditional(&self, c: &hcl_edit::expr::Conditional, out: &mut Out) -> Eval<Value> {
        let cv = self.eval(&c.cond_expr, out)?;
        let cond = match Type::Bool.convert(cv.clone()) {
            Ok(Value::Bool(b)) => b,
            _ => return Err(self.type_error(&c.cond_expr, "a bool", &cv, out)),
        };
        // Only the chosen result's errors count (`var.x != null ? var.x.a : ""`),
        // but the other result's type is still checked when it has one.
        let (t, f) = if cond {
            let t = self.eval(&c.true_expr, out)?;
            (t, self.speculate(&c.false_expr, out).unwrap_or(Value::Null))
        } else {
            let f = self.eval(&c.false_expr, out)?;
            (self.speculate(&c.true_expr, out).unwrap_or(Value::Null), f)
        };
        // A set against a list or tuple of mixed item types: go-cty keeps
        // the set's element type only when the other side is a tuple, and
        // standby's values do not tell a tuple from a list, so refuse
        // rather than answer differently (`true ? toset([1]) : [1, "2"]`).
        if let (Value::Set(_), Value::List(items)) | (Value::List(items), Value::Set(_)) = (&t, &f)
        {
            let mut kinds = items
                .iter()
                .filter(|v| !matches!(v, Value::Null))
                .map(std::mem::discriminant);
            if let Some(first) = kinds.next()
                && kinds.any(|k| k != first)
            {
                return Err(out.err(
                    Diagnostic::error(
                        "standby::unsupported_conversion",
                        self.loc(c.span()),
                        "not supported: a conditional whose results are a set and a list or tuple of items of different types",
                    )
                    .label("Terraform's answer depends on whether the list is a tuple")
                    .help("give both results one element type, e.g. tolist([...]) or toset([...]) on both sides"),
                ));
            }
        }
        // go-cty's type unification: both results must share a type, and
        // the chosen one is converted to it (`true ? 1 : "a"` is "1").
        let Some(ty) = super::value::unify(&[&t, &f]) else {
            let detail = if std::mem::discriminant(&t) == std::mem::discriminant(&f) {
                format!(
                    "both are {} but their items or attributes have types that do not fit together",
                    t.type_name()
                )
            } else {
                format!(
                    "the true result is {}, the false result is {}",
                    t.type_name(),
                    f.type_name()
                )
            };
            return Err(out.err(
                Diagnostic::error(
                    "standby::inconsistent_types",
                    self.loc(c.span()),
                    format!("inconsistent conditional result types: {detail}"),
                )
                .label("both results must have the same type")
                .help("make both results the same type, or use null for \"not set\""),
            ));
        };
        let chosen = if cond { t } else { f };
        Ok(ty.convert(chosen.clone()).unwrap_or(chosen))
    }

    fn bare_variable(&self, name: &str, span: Option<Range<usize>>, out: &mut Out) -> Eval<Value> {
        if let Some((_, v)) = self.for_vars.iter().rev().find(|(n, _)| n == name) {
            return Ok(v.clone());
        }
        if TEMPLATE_DEPTH.get() > 0 {
            // Inside a templatefile() template only its variables exist.
            let mut given: Vec<&str> = self.for_vars.iter().map(|(n, _)| n.as_str()).collect();
            given.sort_unstable();
            given.dedup();
            return Err(out.err(
                Diagnostic::error(
                    "standby::unknown_reference",
                    self.loc(span),
                    format!("the template refers to `{name}`, which templatefile() was not given"),
                )
                .label("not among the template's variables")
                .help(match did_you_mean(name, given.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("pass it in the call: templatefile(PATH, {{ {name} = ... }})"),
                }),
            ));
        }
        let help = if NAMESPACES.contains(&name) {
            format!("`{name}` needs a name after it, like `{name}.NAME`")
        } else if let Some(s) = did_you_mean(name, NAMESPACES) {
            format!("did you mean `{s}.NAME`? Strings must be quoted: \"{name}\"")
        } else {
            format!(
                "references start with one of: {}. Strings must be quoted: \"{name}\"",
                NAMESPACES.join(", ")
            )
        };
        Err(out.err(
            Diagnostic::error(
                "standby::unknown_reference",
                self.loc(span),
                format!("unknown reference `{name}`"),
            )
            .label("not declared")
            .help(help),
        ))
    }

    fn traversal(&self, t: &hcl_edit::expr::Traversal, out: &mut Out) -> Eval<Value> {
        let ops: Vec<&TraversalOperator> = t.operators.iter().map(|o| o.value()).collect();
        let root = match &t.expr {
            Expression::Variable(v) => v.as_str(),
            other => {
                let v = self.eval(other, out)?;
                return self.apply_ops(v, &ops, out);
            }
        };
        if self.for_vars.iter().any(|(n, _)| n == root) {
            let v = self.bare_variable(root, None, out)?;
            return self.apply_ops(v, &ops, out);
        }
        let whole = self.loc(t.span());
        let first = match ops.first() {
            Some(TraversalOperator::GetAttr(id)) => Some(id.as_str()),
            _ => None,
        };
        let Some(first) = first else {
            return self.bare_variable(root, t.expr.span(), out);
        };
        let rest = &ops[1..];
        match root {
            "var" => match self.vars.get(first) {
                Some(v) if !v.known => Err(Failed),
                Some(v) => {
                    if v.sensitive {
                        out.sensitive = true;
                    }
                    self.apply_ops(v.value.clone(), rest, out)
                }
                None => Err(self.unknown(
                    whole,
                    "var",
                    first,
                    self.vars.keys().map(String::as_str),
                    "declare it with a `variable` block",
                    out,
                )),
            },
            "local" => {
                if !self.locals.defs.contains_key(first) {
                    return Err(self.unknown(
                        whole,
                        "local",
                        first,
                        self.locals.defs.keys().map(String::as_str),
                        "define it in a `locals` block",
                        out,
                    ));
                }
                let (v, sensitive) = self.local(first, whole, out)?;
                if sensitive {
                    out.sensitive = true;
                }
                self.apply_ops(v, rest, out)
            }
            "each" => {
                let Some((key, value)) = self.each else {
                    return Err(out.err(
                        Diagnostic::error(
                            "standby::each_outside_for_each",
                            whole,
                            format!("`each.{first}` is only available in a block with `for_each`"),
                        )
                        .label("no for_each here")
                        .help("add `for_each = ...` to this machine or protection block, or use a fixed value"),
                    ));
                };
                match first {
                    "key" => self.apply_ops(Value::String(key.to_string()), rest, out),
                    "value" => self.apply_ops(value.clone(), rest, out),
                    other => Err(self.unknown(
                        whole,
                        "each",
                        other,
                        ["key", "value"],
                        "`each` has only `each.key` and `each.value`",
                        out,
                    )),
                }
            }
            "count" => Err(out.err(
                Diagnostic::error(
                    "standby::each_outside_for_each",
                    whole,
                    format!("`count.{first}` is only available in a block with `count`"),
                )
                .label("no count here")
                .help("add `count = N` to this machine or protection block (count.index is then 0 to N-1)"),
            )),
            // The root module's paths, as Terraform gives them when run in
            // the configuration directory: file() and templatefile() read
            // relative to it, so "${path.module}/x" names the same file.
            "path" => match first {
                "module" | "root" => self.apply_ops(Value::String(".".into()), rest, out),
                "cwd" => Err(out.err(
                    Diagnostic::error(
                        "standby::unsupported_path",
                        whole,
                        "`path.cwd` is not supported: it would make the plan depend on where standby runs",
                    )
                    .label("not supported")
                    .help("use path.module (the configuration directory, \".\") or a relative path"),
                )),
                other => Err(self.unknown(
                    whole,
                    "path",
                    other,
                    ["module", "root"],
                    "`path` has path.module and path.root",
                    out,
                )),
            },
            "group" => {
                let Some(groups) = self.groups else {
                    return Err(out.err(
                        Diagnostic::error(
                            "standby::unknown_reference",
                            whole,
                            format!("`group.{first}` can only be used inside a recovery_plan"),
                        )
                        .label("outside a recovery plan")
                        .help("groups are local to their recovery_plan block"),
                    ));
                };
                if !groups.iter().any(|g| g == first) {
                    return Err(self.unknown(
                        whole,
                        "group",
                        first,
                        groups.iter().map(String::as_str),
                        "declare it with a `group` block in this recovery_plan",
                        out,
                    ));
                }
                if !rest.is_empty() {
                    return Err(self.no_attributes(t, &format!("group.{first}"), out));
                }
                Ok(Value::Ref(Ref::Group(first.to_string())))
            }
            ns => {
                let Some(kind) = Kind::from_block_name(ns) else {
                    let help = match did_you_mean(ns, NAMESPACES) {
                        Some(s) => format!("did you mean `{s}.{first}`?"),
                        None => format!("references start with one of: {}", NAMESPACES.join(", ")),
                    };
                    return Err(out.err(
                        Diagnostic::error(
                            "standby::unknown_reference",
                            self.loc(t.span()),
                            format!("unknown reference `{ns}.{first}`"),
                        )
                        .label(format!(
                            "`{ns}` is not something a reference can start with"
                        ))
                        .help(help),
                    ));
                };
                let names = self.objects.names.get(&kind);
                let Some(&has_for_each) = names.and_then(|n| n.get(first)) else {
                    if self.objects.unnamed.contains(&kind)
                        || self.objects.broken.contains(&(kind, first.to_string()))
                    {
                        return Err(Failed);
                    }
                    let candidates = names.into_iter().flat_map(|n| n.keys().map(String::as_str));
                    return Err(self.unknown(
                        whole,
                        ns,
                        first,
                        candidates,
                        &format!("declare it with a `{ns} \"{first}\"` block"),
                        out,
                    ));
                };
                let mut key = None;
                let mut rest = rest;
                if let Some(TraversalOperator::Index(ie)) = rest.first() {
                    if !has_for_each {
                        return Err(out.err(
                            Diagnostic::error(
                                "standby::wrong_type",
                                self.loc(ie.span()),
                                format!("`{ns}.{first}` has no for_each, so it takes no key"),
                            )
                            .label("unexpected key")
                            .help(format!("write `{ns}.{first}` without the [...]")),
                        ));
                    }
                    let kv = self.eval(ie, out)?;
                    key = Some(self.key_string(kv, ie.span(), out)?);
                    rest = &rest[1..];
                }
                if !rest.is_empty() {
                    return Err(self.no_attributes(t, &format!("{ns}.{first}"), out));
                }
                Ok(Value::Ref(Ref::Object {
                    kind,
                    name: first.to_string(),
                    key,
                }))
            }
        }
    }

    fn no_attributes(&self, t: &hcl_edit::expr::Traversal, what: &str, out: &mut Out) -> Failed {
        out.err(
            Diagnostic::error(
                "standby::unsupported",
                self.loc(t.span()),
                format!("cannot read attributes of `{what}`"),
            )
            .label("attribute access")
            .help(format!("refer to the block itself: `{what}`")),
        )
    }

    fn unknown<'c>(
        &self,
        loc: Loc,
        ns: &str,
        name: &str,
        candidates: impl IntoIterator<Item = &'c str>,
        fallback: &str,
        out: &mut Out,
    ) -> Failed {
        let help = match did_you_mean(name, candidates) {
            Some(s) => format!("did you mean `{ns}.{s}`?"),
            None => fallback.to_string(),
        };
        out.err(
            Diagnostic::error(
                "standby::unknown_reference",
                loc,
                format!("unknown reference `{ns}.{name}`"),
            )
            .label("not declared")
            .help(help),
        )
    }

    /// A local's value if it has been evaluated.
    pub(super) fn cached_local(&self, name: &str) -> Option<(Value, bool)> {
        match self.locals.state.borrow().get(name) {
            Some(LocalState::Done(v, s)) => Some((v.clone(), *s)),
            _ => None,
        }
    }

    fn local(&self, name: &str, at: Loc, out: &mut Out) -> Eval<(Value, bool)> {
        match self.locals.state.borrow().get(name) {
            Some(LocalState::Done(v, s)) => return Ok((v.clone(), *s)),
            Some(LocalState::Failed) => return Err(Failed),
            Some(LocalState::InProgress) => {
                let stack = self.locals.stack.borrow();
                let start = stack.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..]
                    .iter()
                    .map(|n| format!("local.{n}"))
                    .collect();
                cycle.push(format!("local.{name}"));
                return Err(out.err(
                    Diagnostic::error(
                        "standby::cycle",
                        at,
                        format!(
                            "locals refer to each other in a cycle: {}",
                            cycle.join(" -> ")
                        ),
                    )
                    .label("this reference closes the cycle")
                    .help("break the cycle: one of these locals must not depend on the others"),
                ));
            }
            None => {}
        }
        let Some(def) = self.locals.defs.get(name) else {
            return Err(Failed);
        };
        self.locals
            .state
            .borrow_mut()
            .insert(name.to_string(), LocalState::InProgress);
        self.locals.stack.borrow_mut().push(name.to_string());
        let scope = Scope::top(&def.source, self.vars, self.locals, self.objects);
        let mut inner = Out {
            diags: &mut *out.diags,
            sensitive: false,
        };
        let result = scope.eval(&def.expr, &mut inner);
        let sensitive = inner.sensitive;
        self.locals.stack.borrow_mut().pop();
        let state = match &result {
            Ok(v) => Some(LocalState::Done(v.clone(), sensitive)),
            Err(_) if self.locals.speculative.get() == 0 => Some(LocalState::Failed),
            // Its errors went to a scratch list: evaluate again when used for real.
            Err(_) => None,
        };
        match state {
            Some(state) => self
                .locals
                .state
                .borrow_mut()
                .insert(name.to_string(), state),
            None => self.locals.state.borrow_mut().remove(name),
        };
        result.map(|v| (v, sensitive))
    }

    fn apply_ops(&self, mut v: Value, ops: &[&TraversalOperator], out: &mut Out) -> Eval<Value> {
        for (i, op) in ops.iter().enumerate() {
            v = match op {
                TraversalOperator::GetAttr(id) => {
                    self.index(v, Value::String(id.to_string()), id.span(), out)?
                }
                TraversalOperator::Index(ie) => {
                    let k = self.eval(ie, out)?;
                    self.index(v, k, ie.span(), out)?
                }
                TraversalOperator::LegacyIndex(n) => self.index(
                    v,
                    Value::Number(Number::from_i64(i64::try_from(**n).unwrap_or(i64::MAX))),
                    n.span(),
                    out,
                )?,
                TraversalOperator::AttrSplat(_) | TraversalOperator::FullSplat(_) => {
                    // A splat over null is an empty list, over a single value a
                    // one-item list (HCL). `[*]` applies every later step to
                    // each item; `.*` only the attribute steps right after it.
                    let items = match v {
                        Value::List(l) | Value::Set(l) => l,
                        Value::Null => Vec::new(),
                        other => vec![other],
                    };
                    let rest = &ops[i + 1..];
                    let n = match op {
                        TraversalOperator::FullSplat(_) => rest.len(),
                        _ => rest
                            .iter()
                            .take_while(|o| {
                                matches!(
                                    o,
                                    TraversalOperator::GetAttr(_)
                                        | TraversalOperator::LegacyIndex(_)
                                )
                            })
                            .count(),
                    };
                    let mapped = items
                        .into_iter()
                        .map(|item| self.apply_ops(item, &rest[..n], out))
                        .collect::<Eval<Vec<_>>>()?;
                    return self.apply_ops(Value::List(mapped), &rest[n..], out);
                }
            };
        }
        Ok(v)
    }

    fn index(&self, v: Value, k: Value, span: Option<Range<usize>>, out: &mut Out) -> Eval<Value> {
        // HCL converts a string index of a list ("1") to a number.
        let k = match (&v, k) {
            (Value::List(_), Value::String(s)) => {
                match Type::Number.convert(Value::String(s.clone())) {
                    Ok(n) => n,
                    Err(_) => Value::String(s),
                }
            }
            (_, k) => k,
        };
        match (&v, &k) {
            (Value::Null, _) => Err(out.err(
                Diagnostic::error(
                    "standby::wrong_type",
                    self.loc(span),
                    "attempt to index a null value",
                )
                .label("the value here is null")
                .help("check the value for null first: x == null ? DEFAULT : x[KEY], or use try()"),
            )),
            (Value::Map(m), _) => {
                let key = self.key_string(k, span.clone(), out)?;
                match m.get(&key) {
                    Some(x) => Ok(x.clone()),
                    None => {
                        let help = match did_you_mean(&key, m.keys().map(String::as_str)) {
                            // Keys of a sensitive value are not shown.
                            _ if out.sensitive => {
                                "the map comes from a sensitive value; check the key".to_string()
                            }
                            Some(s) => format!("did you mean {s:?}?"),
                            None => format!(
                                "the map has keys: {}",
                                m.keys()
                                    .map(|k| format!("{k:?}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        };
                        Err(out.err(
                            Diagnostic::error(
                                "standby::unknown_reference",
                                self.loc(span),
                                format!("the map has no key {key:?}"),
                            )
                            .label("no such key")
                            .help(help),
                        ))
                    }
                }
            }
            (Value::Set(_), _) => Err(out.err(
                Diagnostic::error("standby::wrong_type", self.loc(span), "cannot index a set")
                    .label("a set")
                    .help("elements of a set are identified only by their value; use tolist(...) to index them, or a for expression"),
            )),
            // HCL's own words for the index kinds that are never valid.
            (Value::List(_), Value::Number(n)) if !n.is_int() || n.sign() < 0 => {
                let why = if n.is_int() {
                    "a negative number is not a valid index for a sequence"
                } else {
                    "indexing a sequence requires a whole number, but the given index has a fractional part"
                };
                Err(out.err(
                    Diagnostic::error("standby::wrong_type", self.loc(span), format!("invalid index {n}: {why}"))
                        .label("not a whole number from 0")
                        .help("lists are indexed by whole numbers from 0; use floor() or ceil() to make one"),
                ))
            }
            (Value::List(l), Value::Number(n)) => match n.as_usize() {
                Some(i) if i < l.len() => Ok(l[i].clone()),
                _ => Err(out.err(
                    Diagnostic::error(
                        "standby::wrong_type",
                        self.loc(span),
                        format!(
                            "index {n} is out of range (the list has {} items)",
                            l.len()
                        ),
                    )
                    .label("out of range"),
                )),
            },
            _ => Err(out.err(
                Diagnostic::error(
                    "standby::wrong_type",
                    self.loc(span),
                    format!("cannot index {} with {}", v.type_name(), k.type_name()),
                )
                .label("bad index")
                .help("maps take string keys, lists take whole numbers from 0"),
            )),
        }
    }

    fn binary(&self, b: &hcl_edit::expr::BinaryOp, out: &mut Out) -> Eval<Value> {
        use BinaryOperator as B;
        let op = *b.operator.value();
        let l = self.eval(&b.lhs_expr, out)?;
        let r = self.eval(&b.rhs_expr, out)?;
        if matches!(op, B::Eq | B::NotEq) {
            // go-cty's == compares types, then values: a list never equals
            // a tuple (`var.names == []` is false in Terraform). The types
            // come from the operand expressions (equality.rs); where they
            // cannot be told, the comparison is refused, not guessed.
            let same_kind = matches!(
                (&l, &r),
                (Value::List(_), Value::List(_)) | (Value::Map(_), Value::Map(_))
            );
            if same_kind {
                let Some(eq) = self.collections_equal(&b.lhs_expr, &l, &b.rhs_expr, &r) else {
                    return Err(out.err(
                        Diagnostic::error(
                            "standby::unsupported_comparison",
                            self.loc(b.span()),
                            "comparing these collections with == or != is not supported: standby cannot tell their types",
                        )
                        .label("two collections")
                        .help(
                            "Terraform compares types first (a list never equals a tuple, a map never an object); standby knows the types of [...], {...}, for expressions, typed variables, locals of those, tolist/toset/tomap, split/compact/sort/formatlist/range and jsondecode. Test emptiness with length(x) == 0, or compare items with jsonencode(x) == jsonencode(y)",
                        ),
                    ));
                };
                return Ok(Value::Bool(if op == B::Eq { eq } else { !eq }));
            }
        }
        match op {
            B::Eq => return Ok(Value::Bool(l == r)),
            B::NotEq => return Ok(Value::Bool(l != r)),
            B::And | B::Or => {
                // HCL checks both operands (no short cut around a bad one).
                let Ok(Value::Bool(x)) = Type::Bool.convert(l.clone()) else {
                    return Err(self.type_error(&b.lhs_expr, "a bool", &l, out));
                };
                let Ok(Value::Bool(y)) = Type::Bool.convert(r.clone()) else {
                    return Err(self.type_error(&b.rhs_expr, "a bool", &r, out));
                };
                return Ok(Value::Bool(if op == B::And { x && y } else { x || y }));
            }
            _ => {}
        }
        // Numbers, or strings that are numbers ("5" + 1 is 6), as in HCL.
        let x = self.operand_number(&b.lhs_expr, l, out)?;
        let y = self.operand_number(&b.rhs_expr, r, out)?;
        let n = match op {
            B::Plus => x.add(&y),
            B::Minus => x.sub(&y),
            B::Mul => x.mul(&y),
            B::Div => x.div(&y),
            // go-cty: the remainder takes the dividend's sign; x % 0 is x.
            B::Mod => x.rem(&y),
            B::Less => return Ok(Value::Bool(x.compare(&y).is_lt())),
            B::LessEq => return Ok(Value::Bool(x.compare(&y).is_le())),
            B::Greater => return Ok(Value::Bool(x.compare(&y).is_gt())),
            B::GreaterEq => return Ok(Value::Bool(x.compare(&y).is_ge())),
            B::Eq | B::NotEq | B::And | B::Or => return Ok(Value::Null),
        };
        match n {
            Ok(n) => Ok(Value::Number(n)),
            Err(NumError::DivZero) => Err(out.err(
                Diagnostic::error(
                    "standby::division_by_zero",
                    self.loc(b.rhs_expr.span()),
                    "division by zero",
                )
                .label("this is zero")
                .help(
                    "Terraform gives an infinity here (or an error for 0/0); standby refuses both",
                ),
            )),
            Err(e) => Err(out.err(
                Diagnostic::error("standby::number_range", self.loc(b.span()), e.to_string())
                    .label("this result")
                    .help("Terraform would compute it; keep numbers to a sensible size"),
            )),
        }
    }

    fn for_expr(&self, f: &hcl_edit::expr::ForExpr, out: &mut Out) -> Eval<Value> {
        let coll = self.eval(&f.intro.collection_expr, out)?;
        let items = self.for_items(coll, &f.intro.collection_expr, out)?;
        let mut list = Vec::new();
        let mut map: BTreeMap<String, Value> = BTreeMap::new();
        // Which item produced each key, to name both sides of a duplicate.
        let mut first_of: HashMap<String, Value> = HashMap::new();
        for (k, v) in items {
            let mut scope = self.clone();
            if let Some(kv) = &f.intro.key_var {
                scope.for_vars.push((kv.to_string(), k.clone()));
            }
            scope.for_vars.push((f.intro.value_var.to_string(), v));
            if let Some(cond) = &f.cond {
                let c = scope.eval(&cond.expr, out)?;
                match Type::Bool.convert(c.clone()) {
                    Ok(Value::Bool(true)) => {}
                    Ok(Value::Bool(false)) => continue,
                    _ => return Err(scope.type_error(&cond.expr, "a bool", &c, out)),
                }
            }
            let Some(ke) = &f.key_expr else {
                list.push(scope.eval(&f.value_expr, out)?);
                continue;
            };
            let kv = scope.eval(ke, out)?;
            if kv == Value::Null {
                return Err(out.err(
                    Diagnostic::error(
                        "standby::wrong_type",
                        self.loc(ke.span()),
                        format!("the key of item {} is null", item_name(&k)),
                    )
                    .label("null key")
                    .help("every item of a `for` that builds a map needs a string key"),
                ));
            }
            let key = scope.key_string(kv, ke.span(), out)?;
            let value = scope.eval(&f.value_expr, out)?;
            if f.grouping {
                match map.entry(key) {
                    std::collections::btree_map::Entry::Occupied(mut e) => {
                        if let Value::List(l) = e.get_mut() {
                            l.push(value);
                        }
                    }
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(Value::List(vec![value]));
                    }
                }
                continue;
            }
            if let Some(first) = first_of.get(&key) {
                if out.sensitive {
                    return Err(out.err(
                        Diagnostic::error(
                            "standby::duplicate_key",
                            self.loc(ke.span()),
                            "duplicate object key (key hidden: it comes from a sensitive variable)",
                        )
                        .label("a key produced twice")
                        .help("keys must be unique; group items with `...` after the value"),
                    ));
                }
                return Err(out.err(
                    Diagnostic::error(
                        "standby::duplicate_key",
                        self.loc(ke.span()),
                        format!(
                            "duplicate object key {key:?}: items {} and {} of the `for` both produce it",
                            item_name(first),
                            item_name(&k)
                        ),
                    )
                    .label(format!("{key:?} twice"))
                    .help("keys must be unique (Terraform: \"Duplicate object key\"); rename one of the items, or group them with `...` after the value: { for x in LIST : x.name => x... }"),
                ));
            }
            first_of.insert(key.clone(), k);
            map.insert(key, value);
        }
        Ok(if f.key_expr.is_some() {
            Value::Map(map)
        } else {
            Value::List(list)
        })
    }

    fn call(&self, f: &hcl_edit::expr::FuncCall, out: &mut Out) -> Eval<Value> {
        let name = f.name.name.as_str();
        let span = f.span();
        let bad = |out: &mut Out, msg: String| {
            out.err(
                Diagnostic::error("standby::wrong_type", self.loc(span.clone()), msg)
                    .label(format!("in this call to {name}()")),
            )
        };
        let exprs: Vec<&Expression> = f.args.iter().collect();
        match name {
            // These look at whether their arguments fail, so they evaluate them.
            "try" => {
                if exprs.is_empty() {
                    return Err(bad(out, "try() needs at least one argument".into()));
                }
                for e in &exprs {
                    if let Some(v) = self.attempt(e, out)? {
                        return Ok(v);
                    }
                }
                return Err(bad(
                    out,
                    "try(): no expression succeeded (each argument failed to evaluate)".into(),
                ));
            }
            "can" => {
                let [e] = exprs.as_slice() else {
                    return Err(bad(
                        out,
                        format!("can() takes 1 argument, got {}", exprs.len()),
                    ));
                };
                return Ok(Value::Bool(self.attempt(e, out)?.is_some()));
            }
            _ => {}
        }
        let mut args: Vec<Value> = exprs
            .iter()
            .map(|a| self.eval(a, out))
            .collect::<Eval<_>>()?;
        if f.args.expand_final() {
            // f(a, list...): the last argument's items become arguments.
            match args.pop() {
                Some(Value::List(l) | Value::Set(l)) => args.extend(l),
                Some(other) => {
                    let e = exprs.last().copied();
                    return Err(out.err(
                        Diagnostic::error(
                            "standby::wrong_type",
                            self.loc(e.and_then(|e| e.span())),
                            format!("`...` expands a list, found {}", other.type_name()),
                        )
                        .label("not a list")
                        .help("only a list (or tuple) can be expanded into arguments"),
                    ));
                }
                None => {}
            }
        }
        let dir = self.dir();
        if name == "templatefile" {
            let before = out.diags.items.len();
            return match self.templatefile(&args, &dir, out) {
                Ok(v) => Ok(v),
                // The template's own error is reported, pointing into it:
                // say where it was called from there, not in a second error.
                Err(_) if out.diags.items.len() > before => {
                    let at = self.loc(span.clone()).position();
                    for d in &mut out.diags.items[before..] {
                        let note = format!("the template is rendered by templatefile() at {at}");
                        d.help = Some(match d.help.take() {
                            Some(h) => format!("{h} ({note})"),
                            None => note,
                        });
                    }
                    Err(Failed)
                }
                Err(m) => Err(bad(out, m)),
            };
        }
        match super::funcs::call(name, &args, &dir) {
            Ok(v) => Ok(v),
            // The message may quote an argument: not one from a sensitive variable.
            Err(FnError::Bad(_)) if out.sensitive => Err(bad(
                out,
                format!(
                    "{name}() failed; details hidden because an argument comes from a sensitive variable"
                ),
            )),
            Err(FnError::Bad(msg)) => Err(bad(out, msg)),
            Err(FnError::Unsupported) => Err(out.err(
                Diagnostic::error(
                    "standby::unsupported_function",
                    self.loc(f.name.name.span()),
                    format!("the Terraform function `{name}` is not supported by standby"),
                )
                .label("not supported")
                .help("docs/LANGUAGE.md lists the functions standby supports"),
            )),
            Err(FnError::Unknown) => {
                let help = match did_you_mean(name, super::funcs::SUPPORTED.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "available functions: {}",
                        super::funcs::SUPPORTED.join(", ")
                    ),
                };
                Err(out.err(
                    Diagnostic::error(
                        "standby::unknown_function",
                        self.loc(f.name.name.span()),
                        format!("unknown function `{name}`"),
                    )
                    .label("not a function")
                    .help(help),
                ))
            }
        }
    }

    /// The configuration directory: where the file being evaluated lives.
    fn dir(&self) -> std::path::PathBuf {
        std::path::Path::new(&self.source.name)
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    }

    /// `templatefile(PATH, VARS)`: the file is a template that sees only
    /// VARS (as in Terraform); its errors point into the file itself.
    fn templatefile(
        &self,
        args: &[Value],
        dir: &std::path::Path,
        out: &mut Out,
    ) -> Result<Value, String> {
        let [path, vars] = args else {
            return Err(format!(
                "templatefile() takes 2 arguments, got {}",
                args.len()
            ));
        };
        let Value::String(path) = path else {
            return Err(format!(
                "the path must be a string, found {}",
                path.type_name()
            ));
        };
        let Value::Map(vars) = vars else {
            return Err(format!(
                "the variables must be a map, found {}",
                vars.type_name()
            ));
        };
        if TEMPLATE_DEPTH.get() > 0 {
            // As in Terraform: a template calling templatefile could recurse forever.
            return Err("templatefile() cannot be called from inside a template".into());
        }
        let text = super::funcs::read_config_file(dir, path)?;
        let shown = super::display_path(&dir.join(path));
        let src = Source::new(shown.clone(), text);
        let t = match hcl_edit::parser::parse_template(&src.text) {
            Ok(t) => t,
            Err(e) => {
                let at = e.location().offset().min(src.text.len());
                out.err(
                    Diagnostic::error(
                        "standby::syntax",
                        Loc::new(&src, Some(at..at)),
                        format!("syntax error in template: {}", e.message()),
                    )
                    .label("the parser stopped here"),
                );
                return Err(format!("{shown} is not a valid template"));
            }
        };
        let empty = Empty::default();
        let mut scope = empty.scope(&src);
        scope.for_vars = vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        // As in Terraform, a template that is one interpolation gives its
        // value unchanged (`${jsonencode(x)}` or `${true}`).
        TEMPLATE_DEPTH.set(TEMPLATE_DEPTH.get() + 1);
        let rendered = scope.template_value(&t, out);
        TEMPLATE_DEPTH.set(TEMPLATE_DEPTH.get() - 1);
        match rendered {
            Ok(v) => Ok(v),
            Err(Failed) => Err(format!("the template {shown} failed (see the error in it)")),
        }
    }
}

/// An item of a `for` as people name it: `[2]` for a list, `["web"]` for a map.
fn item_name(k: &Value) -> String {
    match k {
        Value::String(s) => format!("[{s:?}]"),
        other => format!("[{}]", other.to_template_string().unwrap_or_default()),
    }
}

/// Remove up to `n` columns of indentation from the lines of literals
/// inside directives (a flush heredoc's lines there, which hcl-edit's
/// dedent does not reach).
fn dedent_directives(t: &mut Template, n: usize) {
    fn lines(t: &mut Template, n: usize) {
        for el in t.iter_mut() {
            match el {
                Element::Literal(l) => {
                    let mut res = String::new();
                    for (i, line) in l.split('\n').enumerate() {
                        if i > 0 {
                            res.push('\n');
                            let cut = line
                                .char_indices()
                                .take(n)
                                .take_while(|(_, c)| *c == ' ' || *c == '\t')
                                .last()
                                .map_or(0, |(i, c)| i + c.len_utf8());
                            res.push_str(&line[cut..]);
                        } else {
                            res.push_str(line);
                        }
                    }
                    *l.as_mut() = res;
                }
                Element::Directive(d) => nested(d, n),
                Element::Interpolation(_) => {}
            }
        }
    }
    fn nested(d: &mut Directive, n: usize) {
        match d {
            Directive::If(d) => {
                lines(&mut d.if_expr.template, n);
                if let Some(e) = &mut d.else_expr {
                    lines(&mut e.template, n);
                }
            }
            Directive::For(d) => lines(&mut d.for_expr.template, n),
        }
    }
    for el in t.iter_mut() {
        if let Element::Directive(d) = el {
            nested(d, n);
        }
    }
}
