//! Expression evaluation over hcl-edit syntax trees, so every error keeps the
//! exact span of the expression that caused it. References to blocks are
//! resolved by name lookups (never by building a context of all objects).

use super::diag::{Diagnostic, Diagnostics, Loc, Source, did_you_mean};
use super::value::{Ref, Value, format_number};
use crate::model::Kind;
use hcl_edit::Span;
use hcl_edit::expr::{BinaryOperator, Expression, ObjectKey, TraversalOperator, UnaryOperator};
use hcl_edit::template::{Element, Template};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

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

const NAMESPACES: [&str; 10] = [
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
];

const FUNCTIONS: [&str; 13] = [
    "concat", "format", "keys", "length", "lower", "merge", "range", "toset", "tostring",
    "tonumber", "upper", "values", "join",
];

impl<'a> Scope<'a> {
    fn loc(&self, span: Option<Range<usize>>) -> Loc {
        Loc::new(self.source, span)
    }

    pub fn eval(&self, e: &Expression, out: &mut Out) -> Eval<Value> {
        match e {
            Expression::Null(_) => Ok(Value::Null),
            Expression::Bool(b) => Ok(Value::Bool(**b)),
            Expression::Number(n) => Ok(Value::Number(n.as_f64().unwrap_or(f64::NAN))),
            Expression::String(s) => Ok(Value::String(s.to_string())),
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
                        ObjectKey::Expression(ke) => {
                            let kv = self.eval(ke, out)?;
                            self.key_string(kv, ke.span(), out)?
                        }
                    };
                    map.insert(key, self.eval(v.expr(), out)?);
                }
                Ok(Value::Map(map))
            }
            Expression::StringTemplate(t) => self.template(t, out),
            Expression::HeredocTemplate(h) => {
                let mut h = (**h).clone();
                h.dedent();
                self.template(&h.template, out)
            }
            Expression::Parenthesis(p) => self.eval(p.inner(), out),
            Expression::Variable(v) => self.bare_variable(v.as_str(), v.span(), out),
            Expression::Traversal(t) => self.traversal(t, out),
            Expression::Conditional(c) => match self.eval(&c.cond_expr, out)? {
                Value::Bool(true) => self.eval(&c.true_expr, out),
                Value::Bool(false) => self.eval(&c.false_expr, out),
                other => Err(self.type_error(&c.cond_expr, "a bool", &other, out)),
            },
            Expression::FuncCall(f) => self.call(f, out),
            Expression::UnaryOp(u) => {
                let v = self.eval(&u.expr, out)?;
                match (*u.operator.value(), v) {
                    (UnaryOperator::Neg, Value::Number(n)) => Ok(Value::Number(-n)),
                    (UnaryOperator::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
                    (UnaryOperator::Neg, v) => Err(self.type_error(&u.expr, "a number", &v, out)),
                    (UnaryOperator::Not, v) => Err(self.type_error(&u.expr, "a bool", &v, out)),
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

    fn template(&self, t: &Template, out: &mut Out) -> Eval<Value> {
        let mut s = String::new();
        for el in t.iter() {
            match el {
                Element::Literal(l) => s.push_str(l.value()),
                Element::Interpolation(i) => {
                    let v = self.eval(&i.expr, out)?;
                    match v.to_template_string() {
                        Some(piece) => s.push_str(&piece),
                        None => {
                            return Err(out.err(
                                Diagnostic::error(
                                    "standby::wrong_type",
                                    self.loc(i.expr.span()),
                                    format!("cannot interpolate {} into a string", v.type_name()),
                                )
                                .label(format!("this is {}", v.type_name()))
                                .help(
                                    "only strings, numbers and bools can appear inside \"${...}\"",
                                ),
                            ));
                        }
                    }
                }
                Element::Directive(d) => {
                    return Err(out.err(
                        Diagnostic::error(
                            "standby::unsupported",
                            self.loc(d.span()),
                            "template directives (%{if}, %{for}) are not supported",
                        )
                        .label("directive")
                        .help("build the value with a conditional or a `for` expression instead"),
                    ));
                }
            }
        }
        Ok(Value::String(s))
    }

    fn bare_variable(&self, name: &str, span: Option<Range<usize>>, out: &mut Out) -> Eval<Value> {
        if let Some((_, v)) = self.for_vars.iter().rev().find(|(n, _)| n == name) {
            return Ok(v.clone());
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
                return self.apply_ops(v, &ops, t, out);
            }
        };
        if self.for_vars.iter().any(|(n, _)| n == root) {
            let v = self.bare_variable(root, None, out)?;
            return self.apply_ops(v, &ops, t, out);
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
                    self.apply_ops(v.value.clone(), rest, t, out)
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
                self.apply_ops(v, rest, t, out)
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
                    "key" => self.apply_ops(Value::String(key.to_string()), rest, t, out),
                    "value" => self.apply_ops(value.clone(), rest, t, out),
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
            Ok(v) => LocalState::Done(v.clone(), sensitive),
            Err(_) => LocalState::Failed,
        };
        self.locals
            .state
            .borrow_mut()
            .insert(name.to_string(), state);
        result.map(|v| (v, sensitive))
    }

    fn apply_ops(
        &self,
        mut v: Value,
        ops: &[&TraversalOperator],
        t: &hcl_edit::expr::Traversal,
        out: &mut Out,
    ) -> Eval<Value> {
        for op in ops {
            v = match op {
                TraversalOperator::GetAttr(id) => {
                    self.index(v, Value::String(id.to_string()), id.span(), out)?
                }
                TraversalOperator::Index(ie) => {
                    let k = self.eval(ie, out)?;
                    self.index(v, k, ie.span(), out)?
                }
                TraversalOperator::LegacyIndex(i) => {
                    self.index(v, Value::Number(**i as f64), i.span(), out)?
                }
                TraversalOperator::AttrSplat(_) | TraversalOperator::FullSplat(_) => {
                    return Err(out.err(
                        Diagnostic::error(
                            "standby::unsupported",
                            self.loc(t.span()),
                            "splat expressions (`[*]`) are not supported",
                        )
                        .label("splat")
                        .help("use a `for` expression: [for x in LIST : x.attr]"),
                    ));
                }
            };
        }
        Ok(v)
    }

    fn index(&self, v: Value, k: Value, span: Option<Range<usize>>, out: &mut Out) -> Eval<Value> {
        match (&v, &k) {
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
            (Value::List(l), Value::Number(n)) => {
                let i = *n as usize;
                if n.fract() == 0.0 && *n >= 0.0 && i < l.len() {
                    Ok(l[i].clone())
                } else {
                    Err(out.err(
                        Diagnostic::error(
                            "standby::wrong_type",
                            self.loc(span),
                            format!(
                                "index {} is out of range (the list has {} items)",
                                format_number(*n),
                                l.len()
                            ),
                        )
                        .label("out of range"),
                    ))
                }
            }
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
        if matches!(op, B::And | B::Or) {
            let Value::Bool(lb) = l else {
                return Err(self.type_error(&b.lhs_expr, "a bool", &l, out));
            };
            if (op == B::And && !lb) || (op == B::Or && lb) {
                return Ok(Value::Bool(lb));
            }
            return match self.eval(&b.rhs_expr, out)? {
                Value::Bool(rb) => Ok(Value::Bool(rb)),
                r => Err(self.type_error(&b.rhs_expr, "a bool", &r, out)),
            };
        }
        let r = self.eval(&b.rhs_expr, out)?;
        match op {
            B::Eq => return Ok(Value::Bool(l == r)),
            B::NotEq => return Ok(Value::Bool(l != r)),
            _ => {}
        }
        let Value::Number(x) = l else {
            return Err(self.type_error(&b.lhs_expr, "a number", &l, out));
        };
        let Value::Number(y) = r else {
            return Err(self.type_error(&b.rhs_expr, "a number", &r, out));
        };
        Ok(match op {
            B::Plus => Value::Number(x + y),
            B::Minus => Value::Number(x - y),
            B::Mul => Value::Number(x * y),
            B::Div => Value::Number(x / y),
            B::Mod => Value::Number(x % y),
            B::Less => Value::Bool(x < y),
            B::LessEq => Value::Bool(x <= y),
            B::Greater => Value::Bool(x > y),
            B::GreaterEq => Value::Bool(x >= y),
            B::Eq | B::NotEq | B::And | B::Or => Value::Null,
        })
    }

    fn for_expr(&self, f: &hcl_edit::expr::ForExpr, out: &mut Out) -> Eval<Value> {
        let coll = self.eval(&f.intro.collection_expr, out)?;
        let items: Vec<(Value, Value)> = match coll {
            Value::List(l) => l
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Value::Number(i as f64), v))
                .collect(),
            Value::Map(m) => m.into_iter().map(|(k, v)| (Value::String(k), v)).collect(),
            other => {
                return Err(self.type_error(
                    &f.intro.collection_expr,
                    "a list or a map",
                    &other,
                    out,
                ));
            }
        };
        let mut list = Vec::new();
        let mut map = BTreeMap::new();
        for (k, v) in items {
            let mut scope = self.clone();
            if let Some(kv) = &f.intro.key_var {
                scope.for_vars.push((kv.to_string(), k));
            }
            scope.for_vars.push((f.intro.value_var.to_string(), v));
            if let Some(cond) = &f.cond {
                match scope.eval(&cond.expr, out)? {
                    Value::Bool(true) => {}
                    Value::Bool(false) => continue,
                    other => return Err(scope.type_error(&cond.expr, "a bool", &other, out)),
                }
            }
            let value = scope.eval(&f.value_expr, out)?;
            match &f.key_expr {
                Some(ke) => {
                    let kv = scope.eval(ke, out)?;
                    let key = scope.key_string(kv, ke.span(), out)?;
                    map.insert(key, value);
                }
                None => list.push(value),
            }
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
        let args: Vec<Value> = f
            .args
            .iter()
            .map(|a| self.eval(a, out))
            .collect::<Eval<_>>()?;
        let bad = |out: &mut Out, msg: String| {
            out.err(
                Diagnostic::error("standby::wrong_type", self.loc(span.clone()), msg)
                    .label(format!("in this call to {name}")),
            )
        };
        let num = |v: &Value| {
            if let Value::Number(n) = v {
                Some(*n)
            } else {
                None
            }
        };
        match (name, args.as_slice()) {
            ("range", [n]) | ("range", [_, n]) => {
                let start = if args.len() == 2 {
                    num(&args[0])
                } else {
                    Some(0.0)
                };
                match (start, num(n)) {
                    (Some(a), Some(b)) if b - a <= 100_000.0 => {
                        let mut v = Vec::new();
                        let mut i = a;
                        while i < b {
                            v.push(Value::Number(i));
                            i += 1.0;
                        }
                        Ok(Value::List(v))
                    }
                    _ => Err(bad(out, "range takes numbers (at most 100000 apart): range(END) or range(START, END)".into())),
                }
            }
            ("format", [Value::String(fmt), rest @ ..]) => match format(fmt, rest) {
                Ok(s) => Ok(Value::String(s)),
                Err(e) => Err(bad(out, format!("format: {e}"))),
            },
            ("length", [Value::List(l)]) => Ok(Value::Number(l.len() as f64)),
            ("length", [Value::Map(m)]) => Ok(Value::Number(m.len() as f64)),
            ("length", [Value::String(s)]) => Ok(Value::Number(s.chars().count() as f64)),
            ("keys", [Value::Map(m)]) => {
                Ok(Value::List(m.keys().cloned().map(Value::String).collect()))
            }
            ("values", [Value::Map(m)]) => Ok(Value::List(m.values().cloned().collect())),
            ("lower", [Value::String(s)]) => Ok(Value::String(s.to_lowercase())),
            ("upper", [Value::String(s)]) => Ok(Value::String(s.to_uppercase())),
            ("tostring", [v]) if v.to_template_string().is_some() => {
                Ok(Value::String(v.to_template_string().unwrap_or_default()))
            }
            ("tonumber", [v]) => super::value::Type::Number
                .convert(v.clone())
                .map_err(|found| bad(out, format!("tonumber: cannot convert {found} to a number"))),
            ("join", [Value::String(sep), Value::List(l)]) => {
                let parts: Option<Vec<String>> = l.iter().map(Value::to_template_string).collect();
                match parts {
                    Some(p) => Ok(Value::String(p.join(sep))),
                    None => Err(bad(
                        out,
                        "join takes a separator and a list of strings".into(),
                    )),
                }
            }
            ("toset", [Value::List(l)]) => {
                let mut seen = Vec::new();
                for v in l {
                    if !seen.contains(v) {
                        seen.push(v.clone());
                    }
                }
                Ok(Value::List(seen))
            }
            ("concat", lists) if lists.iter().all(|l| matches!(l, Value::List(_))) => {
                Ok(Value::List(
                    lists
                        .iter()
                        .flat_map(|l| {
                            if let Value::List(l) = l {
                                l.clone()
                            } else {
                                Vec::new()
                            }
                        })
                        .collect(),
                ))
            }
            ("merge", maps) if maps.iter().all(|m| matches!(m, Value::Map(_))) => {
                let mut all = BTreeMap::new();
                for m in maps {
                    if let Value::Map(m) = m {
                        all.extend(m.clone());
                    }
                }
                Ok(Value::Map(all))
            }
            _ if FUNCTIONS.contains(&name) => {
                let found: Vec<String> = args.iter().map(Value::type_name).collect();
                Err(bad(
                    out,
                    format!("wrong arguments for {name}(): got ({})", found.join(", ")),
                ))
            }
            _ => {
                let help = match did_you_mean(name, FUNCTIONS) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("available functions: {}", FUNCTIONS.join(", ")),
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
}

/// `format("web-%02d", 3)`: `%s`, `%d` with optional zero padding, `%%`.
fn format(fmt: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut width = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(*d);
            chars.next();
        }
        let verb = chars.next().ok_or("the format ends with %")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let arg = args.next().ok_or("more % verbs than arguments")?;
        let text = match (verb, arg) {
            ('d', Value::Number(n)) => format!("{}", *n as i64),
            ('s', v) => v
                .to_template_string()
                .ok_or("%s needs a string, number or bool")?,
            ('v', v) => v
                .to_template_string()
                .ok_or("%v needs a string, number or bool")?,
            _ => return Err(format!("%{verb} does not fit {}", arg.type_name())),
        };
        let w: usize = width.parse().unwrap_or(0);
        let pad = if width.starts_with('0') { '0' } else { ' ' };
        for _ in text.chars().count()..w {
            out.push(pad);
        }
        out.push_str(&text);
    }
    Ok(out)
}
