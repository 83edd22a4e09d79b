//! `==` and `!=` between collections as go-cty's `Value.Equals`: two values
//! are equal only when their types are equal (a list never equals a tuple,
//! nor a map an object, nor a `list(string)` a `list(number)`) and then
//! their items are. standby's values do not carry cty types, so the types
//! are worked out from the operand expressions: constructors (`[...]`,
//! `{...}`, `for`) are tuples and objects of their items' types, a
//! variable has its declared type (or, declared `any`, the type of its
//! literal value), `tolist`/`toset`/`tomap` give lists, sets and maps,
//! `jsondecode` tuples and objects, and locals the type of their
//! expression. When the types are known the answer is Terraform's; when
//! only the kinds are known and differ (`var.names == []`) it is `false`;
//! otherwise the comparison is refused rather than guessed.

use super::eval::Scope;
use super::value::{Type, Value};
use hcl_edit::expr::{Expression, ObjectKey, TraversalOperator};
use std::collections::BTreeMap;

/// A cty type, fully known.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    String,
    Number,
    Bool,
    List(Box<Ty>),
    Set(Box<Ty>),
    Map(Box<Ty>),
    Tuple(Vec<Ty>),
    Object(BTreeMap<String, Ty>),
}

/// The kind of a collection type, when the whole type is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Primitive,
    List,
    Set,
    Map,
    Tuple,
    Object,
}

impl Ty {
    fn shape(&self) -> Shape {
        match self {
            Ty::String | Ty::Number | Ty::Bool => Shape::Primitive,
            Ty::List(_) => Shape::List,
            Ty::Set(_) => Shape::Set,
            Ty::Map(_) => Shape::Map,
            Ty::Tuple(_) => Shape::Tuple,
            Ty::Object(_) => Shape::Object,
        }
    }
}

/// How deep type inference follows locals and nesting.
const DEPTH: usize = 32;

/// A declared type as a cty type; None where it holds `any`.
fn of_type(t: &Type) -> Option<Ty> {
    Some(match t {
        Type::Any => return None,
        Type::String => Ty::String,
        Type::Number => Ty::Number,
        Type::Bool => Ty::Bool,
        Type::List(t) => Ty::List(Box::new(of_type(t)?)),
        Type::Set(t) => Ty::Set(Box::new(of_type(t)?)),
        Type::Map(t) => Ty::Map(Box::new(of_type(t)?)),
        Type::Tuple(ts) => Ty::Tuple(ts.iter().map(of_type).collect::<Option<_>>()?),
        Type::Object(attrs) => Ty::Object(
            attrs
                .iter()
                .map(|(k, a)| Some((k.clone(), of_type(&a.ty)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

/// The shape of a declared type (known even when it holds `any` inside).
fn shape_of_type(t: &Type) -> Option<Shape> {
    Some(match t {
        Type::Any => return None,
        Type::String | Type::Number | Type::Bool => Shape::Primitive,
        Type::List(_) => Shape::List,
        Type::Set(_) => Shape::Set,
        Type::Map(_) => Shape::Map,
        Type::Tuple(_) => Shape::Tuple,
        Type::Object(_) => Shape::Object,
    })
}

/// The type of a value written as a literal (HCL or JSON): tuples and
/// objects of its items' types. None for null (cty's dynamic type) or a set.
fn literal(v: &Value) -> Option<Ty> {
    Some(match v {
        Value::String(_) => Ty::String,
        Value::Number(_) => Ty::Number,
        Value::Bool(_) => Ty::Bool,
        Value::List(l) => Ty::Tuple(l.iter().map(literal).collect::<Option<_>>()?),
        Value::Map(m) => Ty::Object(
            m.iter()
                .map(|(k, v)| Some((k.clone(), literal(v)?)))
                .collect::<Option<_>>()?,
        ),
        Value::Null | Value::Set(_) | Value::Ref(_) => return None,
    })
}

/// A primitive value's type.
fn primitive(v: &Value) -> Option<Ty> {
    match v {
        Value::String(_) => Some(Ty::String),
        Value::Number(_) => Some(Ty::Number),
        Value::Bool(_) => Some(Ty::Bool),
        _ => None,
    }
}

/// The one primitive type of a non-empty collection's items.
fn items_primitive<'v>(mut items: impl Iterator<Item = &'v Value>) -> Option<Ty> {
    let first = primitive(items.next()?)?;
    items
        .all(|v| primitive(v).as_ref() == Some(&first))
        .then_some(first)
}

/// The literal index of a traversal step (`[0]`, `.0`).
fn literal_index(op: &TraversalOperator) -> Option<usize> {
    match op {
        TraversalOperator::Index(Expression::Number(n)) => n.as_u64().map(|u| u as usize),
        TraversalOperator::LegacyIndex(n) => Some(**n as usize),
        _ => None,
    }
}

/// `ty` after the traversal steps `ops` (attribute and index steps).
fn project(ty: Ty, ops: &[&TraversalOperator]) -> Option<Ty> {
    let mut ty = ty;
    for op in ops {
        ty = match (ty, op) {
            (Ty::Object(mut attrs), TraversalOperator::GetAttr(id)) => attrs.remove(id.as_str())?,
            (Ty::Object(mut attrs), TraversalOperator::Index(Expression::String(s))) => {
                attrs.remove(s.as_str())?
            }
            (Ty::Map(t), TraversalOperator::GetAttr(_) | TraversalOperator::Index(_)) => *t,
            (Ty::List(t), TraversalOperator::Index(_) | TraversalOperator::LegacyIndex(_)) => *t,
            (Ty::Tuple(mut ts), op) => {
                let i = literal_index(op)?;
                (i < ts.len()).then(|| ts.swap_remove(i))?
            }
            _ => return None,
        };
    }
    Some(ty)
}

impl Scope<'_> {
    /// The cty type of `e`, whose value is `v`, when it is fully known.
    pub(super) fn cty_type(&self, e: &Expression, v: &Value, depth: usize) -> Option<Ty> {
        if depth > DEPTH {
            return None;
        }
        match v {
            Value::Null | Value::Ref(_) => return None,
            Value::String(_) | Value::Number(_) | Value::Bool(_) => return primitive(v),
            _ => {}
        }
        match e {
            Expression::Parenthesis(p) => self.cty_type(p.inner(), v, depth + 1),
            Expression::Array(a) => {
                let Value::List(items) = v else { return None };
                if a.len() != items.len() {
                    return None;
                }
                a.iter()
                    .zip(items)
                    .map(|(e, v)| self.cty_type(e, v, depth + 1))
                    .collect::<Option<_>>()
                    .map(Ty::Tuple)
            }
            Expression::Object(o) => {
                let Value::Map(m) = v else { return None };
                let mut attrs = BTreeMap::new();
                for (k, val) in o.iter() {
                    let name = match k {
                        ObjectKey::Ident(id) => id.as_str().to_string(),
                        ObjectKey::Expression(Expression::String(s)) => s.to_string(),
                        _ => return None,
                    };
                    let t = self.cty_type(val.expr(), m.get(&name)?, depth + 1)?;
                    attrs.insert(name, t);
                }
                (attrs.len() == m.len()).then_some(Ty::Object(attrs))
            }
            // A `for` builds a tuple or an object; its items' types are
            // known here when they are primitives.
            Expression::ForExpr(_) => match v {
                Value::List(l) => l
                    .iter()
                    .map(primitive)
                    .collect::<Option<_>>()
                    .map(Ty::Tuple),
                Value::Map(m) => m
                    .iter()
                    .map(|(k, v)| Some((k.clone(), literal(v)?)))
                    .collect::<Option<_>>()
                    .map(Ty::Object),
                _ => None,
            },
            Expression::Traversal(t) => {
                let Expression::Variable(root) = &t.expr else {
                    return None;
                };
                let ops: Vec<&TraversalOperator> = t.operators.iter().map(|o| o.value()).collect();
                let Some(TraversalOperator::GetAttr(first)) = ops.first() else {
                    return None;
                };
                if self.for_vars.iter().any(|(n, _)| n == root.as_str()) {
                    return None;
                }
                match root.as_str() {
                    "var" => {
                        let var = self.vars.get(first.as_str())?;
                        match of_type(&var.ty) {
                            Some(ty) => project(ty, &ops[1..]),
                            // Declared `any` (or untyped): the value is a literal.
                            None if var.ty == Type::Any => literal(v),
                            None => None,
                        }
                    }
                    "local" => {
                        let def = self.locals.defs.get(first.as_str())?;
                        let (lv, _) = self.cached_local(first.as_str())?;
                        let inner = Scope::top(&def.source, self.vars, self.locals, self.objects);
                        let ty = inner.cty_type(&def.expr, &lv, depth + 1)?;
                        project(ty, &ops[1..])
                    }
                    _ => None,
                }
            }
            Expression::FuncCall(f) => match (f.name.name.as_str(), v) {
                ("tolist", Value::List(l)) => {
                    items_primitive(l.iter()).map(|t| Ty::List(Box::new(t)))
                }
                ("toset", Value::Set(l)) => items_primitive(l.iter()).map(|t| Ty::Set(Box::new(t))),
                ("tomap", Value::Map(m)) => {
                    items_primitive(m.values()).map(|t| Ty::Map(Box::new(t)))
                }
                ("jsondecode", v) => literal(v),
                // go-cty's static return types.
                ("split" | "compact" | "sort" | "formatlist", Value::List(_)) => {
                    Some(Ty::List(Box::new(Ty::String)))
                }
                ("range", Value::List(_)) => Some(Ty::List(Box::new(Ty::Number))),
                _ => None,
            },
            _ => None,
        }
    }

    /// The kind of `e`'s type (list, tuple, ...) when known.
    pub(super) fn cty_shape(&self, e: &Expression, v: &Value) -> Option<Shape> {
        if let Some(t) = self.cty_type(e, v, 0) {
            return Some(t.shape());
        }
        match v {
            Value::Set(_) => return Some(Shape::Set),
            Value::String(_) | Value::Number(_) | Value::Bool(_) => return Some(Shape::Primitive),
            _ => {}
        }
        match e {
            Expression::Parenthesis(p) => self.cty_shape(p.inner(), v),
            Expression::Array(_) => Some(Shape::Tuple),
            Expression::Object(_) => Some(Shape::Object),
            Expression::ForExpr(f) if f.key_expr.is_some() => Some(Shape::Object),
            Expression::ForExpr(_) => Some(Shape::Tuple),
            Expression::FuncCall(f) => match f.name.name.as_str() {
                "tolist" => Some(Shape::List),
                "toset" => Some(Shape::Set),
                "tomap" => Some(Shape::Map),
                "jsondecode" => match v {
                    Value::List(_) => Some(Shape::Tuple),
                    Value::Map(_) => Some(Shape::Object),
                    _ => None,
                },
                _ => None,
            },
            Expression::Traversal(t) => {
                let Expression::Variable(root) = &t.expr else {
                    return None;
                };
                if root.as_str() != "var" || t.operators.len() != 1 {
                    return None;
                }
                let Some(TraversalOperator::GetAttr(name)) = t.operators.first().map(|o| o.value())
                else {
                    return None;
                };
                let var = self.vars.get(name.as_str())?;
                match shape_of_type(&var.ty) {
                    Some(s) => Some(s),
                    None => match v {
                        Value::List(_) => Some(Shape::Tuple),
                        Value::Map(_) => Some(Shape::Object),
                        _ => None,
                    },
                }
            }
            _ => None,
        }
    }

    /// `l == r` for two collections as go-cty answers it, or None when
    /// standby cannot tell their types.
    pub(super) fn collections_equal(
        &self,
        le: &Expression,
        l: &Value,
        re: &Expression,
        r: &Value,
    ) -> Option<bool> {
        if let (Some(a), Some(b)) = (self.cty_type(le, l, 0), self.cty_type(re, r, 0)) {
            return Some(a == b && l == r);
        }
        match (self.cty_shape(le, l), self.cty_shape(re, r)) {
            (Some(a), Some(b)) if a != b => Some(false),
            _ => None,
        }
    }
}
