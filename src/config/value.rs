//! Values of evaluated expressions: plain data plus references to blocks
//! (`site.onprem`, `machine.web["a"]`, `group.data`).

use super::number::Number;
use crate::model::Kind;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    /// go-cty's number (a big binary float with its precision).
    Number(Number),
    String(String),
    List(Vec<Value>),
    /// A set (from `toset`, a `set(...)` variable or a set function): items
    /// in cty's order without duplicates (see [`set_of`]). Kept apart from
    /// lists because Terraform treats them apart: `for_each` takes a set of
    /// strings but not a list, and a set element's key is its value.
    Set(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Ref(Ref),
}

/// go-cty's equality: numbers by [`Number::cty_equal`], sets by their
/// elements' identity (`toset([-0]) == toset([0])` is false).
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Number(a), Value::Number(b)) => a == b,
            (Value::String(a), Value::String(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Set(a), Value::Set(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_element(x, y))
            }
            (Value::Map(a), Value::Map(b)) => a == b,
            (Value::Ref(a), Value::Ref(b)) => a == b,
            _ => false,
        }
    }
}

/// A reference to a declared block, resolved by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ref {
    /// `KIND.NAME` or `KIND.NAME["KEY"]`.
    Object {
        kind: Kind,
        name: String,
        key: Option<String>,
    },
    /// `group.NAME` inside a recovery plan.
    Group(String),
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Object { kind, name, key } => {
                write!(f, "{kind}.{name}")?;
                if let Some(k) = key {
                    write!(f, "[{k:?}]")?;
                }
                Ok(())
            }
            Ref::Group(g) => write!(f, "group.{g}"),
        }
    }
}

impl Value {
    /// "a string", "a list", ...: for "expected X, found Y" messages.
    pub fn type_name(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bool(_) => "a bool".into(),
            Value::Number(_) => "a number".into(),
            Value::String(_) => "a string".into(),
            Value::List(_) => "a list".into(),
            Value::Set(_) => "a set".into(),
            Value::Map(_) => "a map".into(),
            Value::Ref(r) => format!("a reference to {r}"),
        }
    }

    /// The text a value takes inside a string template.
    pub fn to_template_string(&self) -> Option<String> {
        match self {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_text()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Ref(r) => Some(r.to_string()),
            _ => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            // The printed form (serde_json keeps it only as an f64).
            Value::Number(n) => serde_json::from_str::<serde_json::Number>(&n.to_text())
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::List(l) | Value::Set(l) => {
                serde_json::Value::Array(l.iter().map(Value::to_json).collect())
            }
            Value::Map(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            Value::Ref(r) => serde_json::Value::String(r.to_string()),
        }
    }
}

/// The number `text` as go-cty's `ParseNumberVal` reads it.
///
/// Errors: not a number, or past standby's range.
pub fn parse_literal(text: &str) -> Result<Number, ConvertError> {
    match Number::parse(text.trim()) {
        Some(Ok(n)) => Ok(n),
        Some(Err(e)) => Err(ConvertError::new(e.to_string())),
        None => Err(ConvertError::new(format!("{text:?} is not a number"))),
    }
}

/// A variable's declared type: `string`, `number`, `bool`, `any`,
/// `list(T)`, `set(T)`, `map(T)`, `object({NAME = T, ...})` (attributes may
/// be `optional(T)` or `optional(T, DEFAULT)`) and `tuple([T, ...])`.
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    Any,
    String,
    Number,
    Bool,
    List(Box<Type>),
    Set(Box<Type>),
    Map(Box<Type>),
    Object(BTreeMap<String, Attr>),
    Tuple(Vec<Type>),
}

/// One attribute of an object type.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub ty: Type,
    /// `optional(T)`: may be left out (or null); then the default, or null.
    pub optional: bool,
    pub default: Option<Value>,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Any => f.write_str("any"),
            Type::String => f.write_str("string"),
            Type::Number => f.write_str("number"),
            Type::Bool => f.write_str("bool"),
            Type::List(t) => write!(f, "list({t})"),
            Type::Set(t) => write!(f, "set({t})"),
            Type::Map(t) => write!(f, "map({t})"),
            Type::Object(attrs) => {
                f.write_str("object({")?;
                for (i, (k, a)) in attrs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    if a.optional {
                        write!(f, "{k} = optional({})", a.ty)?;
                    } else {
                        write!(f, "{k} = {}", a.ty)?;
                    }
                }
                f.write_str("})")
            }
            Type::Tuple(ts) => {
                f.write_str("tuple([")?;
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{t}")?;
                }
                f.write_str("])")
            }
        }
    }
}

/// Why a value does not convert to a type: what was found, and where
/// inside the value (`["web"].disks[0]`; empty at the top).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConvertError {
    pub what: String,
    pub path: String,
}

impl ConvertError {
    fn new(what: impl Into<String>) -> Self {
        ConvertError {
            what: what.into(),
            path: String::new(),
        }
    }

    /// The same failure seen from the value holding this one at `step`.
    fn within(mut self, step: &str) -> Self {
        self.path.insert_str(0, step);
        self
    }
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.what)
        } else {
            write!(f, "{} at {}", self.what, self.path)
        }
    }
}

impl Type {
    /// Convert `v` to this type the way HCL does (numbers and bools become
    /// strings and back, objects lose attributes the type does not name,
    /// optional attributes left out become their default or null); `Err`
    /// names what was found and where (`a string at .port`).
    pub fn convert(&self, v: Value) -> Result<Value, ConvertError> {
        match (self, v) {
            (Type::Any, v) => Ok(v),
            // `list(any)`, `set(any)`, `map(any)`: the items take the one
            // type go-cty unifies them to (`[1, "a"]` is `["1", "a"]`).
            (
                Type::List(t) | Type::Set(t) | Type::Map(t),
                v @ (Value::List(_) | Value::Set(_) | Value::Map(_)),
            ) if **t == Type::Any
                && !matches!(
                    (self, &v),
                    (Type::Map(_), Value::List(_) | Value::Set(_))
                        | (Type::List(_) | Type::Set(_), Value::Map(_))
                ) =>
            {
                let items: Vec<&Value> = match &v {
                    Value::List(l) | Value::Set(l) => l.iter().collect(),
                    Value::Map(m) => m.values().collect(),
                    _ => Vec::new(),
                };
                let Some(ty) = unify(&items) else {
                    let kind = match self {
                        Type::Set(_) => "set",
                        Type::Map(_) => "map",
                        _ => "list",
                    };
                    return Err(ConvertError::new(format!(
                        "items with no common type (all {kind} elements must have the same type)"
                    )));
                };
                if ty == Type::Any {
                    // Only nulls (or block references): nothing to convert.
                    return Ok(match (self, v) {
                        (Type::List(_), Value::List(l) | Value::Set(l)) => Value::List(l),
                        (Type::Set(_), Value::List(l) | Value::Set(l)) => Value::Set(set_of(l)),
                        (_, v) => v,
                    });
                }
                let inner = match self {
                    Type::List(_) => Type::List(Box::new(ty)),
                    Type::Set(_) => Type::Set(Box::new(ty)),
                    _ => Type::Map(Box::new(ty)),
                };
                inner.convert(v)
            }
            (_, Value::Null) => Ok(Value::Null),
            (Type::String, Value::String(s)) => Ok(Value::String(s)),
            (Type::String, v @ (Value::Number(_) | Value::Bool(_))) => {
                Ok(Value::String(v.to_template_string().unwrap_or_default()))
            }
            (Type::Number, Value::Number(n)) => Ok(Value::Number(n)),
            (Type::Number, Value::String(s)) => match Number::parse(&s) {
                // The text is not shown: it may come from a sensitive variable.
                None => Err(ConvertError::new("a string that is not a number")),
                Some(Err(e)) => Err(ConvertError::new(format!(
                    "a string holding a number standby refuses: {e}"
                ))),
                Some(Ok(n)) => Ok(Value::Number(n)),
            },
            (Type::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
            // go-cty's string-to-bool conversion: "true"/"1", "false"/"0".
            (Type::Bool, Value::String(s))
                if matches!(s.as_str(), "true" | "1" | "false" | "0") =>
            {
                Ok(Value::Bool(s == "true" || s == "1"))
            }
            (Type::Bool, Value::String(s))
                if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") =>
            {
                Err(ConvertError::new(
                    "a string with a capital letter (to convert from a string, use lowercase \"true\" or \"false\")",
                ))
            }
            (Type::List(t), Value::List(items) | Value::Set(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| t.convert(v).map_err(|e| e.within(&format!("[{i}]"))))
                .collect::<Result<_, _>>()
                .map(Value::List),
            (Type::Set(t), Value::List(items) | Value::Set(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| t.convert(v).map_err(|e| e.within(&format!("[{i}]"))))
                .collect::<Result<Vec<_>, _>>()
                .map(|l| Value::Set(set_of(l))),
            (Type::Tuple(ts), Value::List(items)) => {
                if ts.len() != items.len() {
                    return Err(ConvertError::new(format!(
                        "a list of {} items where {} are needed",
                        items.len(),
                        ts.len()
                    )));
                }
                ts.iter()
                    .zip(items)
                    .enumerate()
                    .map(|(i, (t, v))| t.convert(v).map_err(|e| e.within(&format!("[{i}]"))))
                    .collect::<Result<_, _>>()
                    .map(Value::List)
            }
            (Type::Map(t), Value::Map(m)) => m
                .into_iter()
                .map(|(k, v)| {
                    let path = format!("[{k:?}]");
                    t.convert(v).map(|v| (k, v)).map_err(|e| e.within(&path))
                })
                .collect::<Result<_, _>>()
                .map(Value::Map),
            (Type::Object(attrs), Value::Map(mut m)) => {
                let mut res = BTreeMap::new();
                for (k, a) in attrs {
                    let v = m.remove(k).unwrap_or(Value::Null);
                    let v = match v {
                        Value::Null if a.optional => a.default.clone().unwrap_or(Value::Null),
                        Value::Null => {
                            return Err(ConvertError::new(format!(
                                "an object without the required attribute {k:?}"
                            )));
                        }
                        v => v,
                    };
                    res.insert(
                        k.clone(),
                        a.ty.convert(v).map_err(|e| e.within(&format!(".{k}")))?,
                    );
                }
                Ok(Value::Map(res))
            }
            (_, v) => Err(ConvertError::new(v.type_name())),
        }
    }
}

/// A set's items in cty's order: numbers numerically, other values by
/// their text; duplicates removed; mixed primitives become strings.
pub fn set_of(items: Vec<Value>) -> Vec<Value> {
    let all_num = items.iter().all(|v| matches!(v, Value::Number(_)));
    // Mixed primitives become strings, as [`unify`] makes them: only with
    // a string among them (a set of bools stays bools; a number beside a
    // bool has no common type, and callers unify first).
    let mixed = items
        .iter()
        .all(|v| matches!(v, Value::Number(_) | Value::String(_) | Value::Bool(_)))
        && items.iter().any(|v| matches!(v, Value::String(_)))
        && !items.iter().all(|v| matches!(v, Value::String(_)));
    let mut items: Vec<Value> = if mixed {
        items
            .into_iter()
            .map(|v| Type::String.convert(v).unwrap_or(Value::Null))
            .collect()
    } else {
        items
    };
    if all_num {
        // go-cty orders numerically; -0 and 0 compare equal but are two
        // elements (their hashes differ), and -0's hash sorts first.
        items.sort_by(|a, b| match (a, b) {
            (Value::Number(x), Value::Number(y)) => x
                .compare(y)
                .then_with(|| y.is_neg_zero().cmp(&x.is_neg_zero())),
            _ => std::cmp::Ordering::Equal,
        });
    } else if items
        .iter()
        .all(|v| matches!(v, Value::String(_) | Value::Bool(_)))
    {
        // go-cty: strings by their bytes (not their JSON text, whose
        // escapes would move `"` and `\\` after other characters), false
        // before true.
        items.sort_by(|a, b| match (a, b) {
            (Value::String(x), Value::String(y)) => x.cmp(y),
            (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
            _ => std::cmp::Ordering::Equal,
        });
    } else {
        items.sort_by_key(|v| v.to_json().to_string());
    }
    items.dedup_by(|a, b| same_element(a, b));
    items
}

/// Whether `a` and `b` are one element of a go-cty set: equal, and hashed
/// alike. The hash holds a number's `big.Float.String()`, so `-0` and `0`
/// (equal numbers) are two elements, at any depth.
pub fn same_element(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y && x.is_neg_zero() == y.is_neg_zero(),
        (Value::List(x), Value::List(y)) | (Value::Set(x), Value::Set(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_element(a, b))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k, a), (l, b))| k == l && same_element(a, b))
        }
        _ => a == b,
    }
}

/// Unicode NFC, which go-cty gives every string (so `"é"` typed as one
/// character or as `e` and a combining accent is one string).
pub fn nfc(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    unicode_normalization::UnicodeNormalization::nfc(s).collect()
}

/// The type go-cty unifies values' types to (a conditional's two results):
/// null fits anything; different primitives become string when a string is
/// among them (a number and a bool alone have no common type); lists of one
/// length unify item by item, of different lengths to a list of one item
/// type; maps with the same keys unify key by key, else to a map of one
/// value type. None when they cannot be unified.
pub fn unify(values: &[&Value]) -> Option<Type> {
    let known: Vec<&Value> = values
        .iter()
        .copied()
        .filter(|v| !matches!(v, Value::Null))
        .collect();
    let Some(first) = known.first() else {
        return Some(Type::Any);
    };
    let same_kind = |f: fn(&Value) -> bool| known.iter().all(|v| f(v));
    if same_kind(|v| matches!(v, Value::Ref(_))) {
        return Some(Type::Any);
    }
    if same_kind(|v| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))) {
        if !known
            .iter()
            .all(|v| std::mem::discriminant(*v) == std::mem::discriminant(*first))
        {
            // go-cty's `convert.Unify`: the result is one of the given
            // types that every other converts to. Numbers and bools both
            // convert to string but not to each other, so without a string
            // among them there is no common type (`[1, true]`).
            if known.iter().any(|v| matches!(v, Value::String(_))) {
                return Some(Type::String);
            }
            return None;
        }
        return Some(match first {
            Value::Number(_) => Type::Number,
            Value::Bool(_) => Type::Bool,
            _ => Type::String,
        });
    }
    // A set among lists: the lists convert to the set's type, as in cty.
    if same_kind(|v| matches!(v, Value::Set(_) | Value::List(_)))
        && known.iter().any(|v| matches!(v, Value::Set(_)))
    {
        let all: Vec<&Value> = known
            .iter()
            .filter_map(|v| match v {
                Value::Set(l) | Value::List(l) => Some(l),
                _ => None,
            })
            .flatten()
            .collect();
        return unify(&all).map(|t| Type::Set(Box::new(t)));
    }
    if same_kind(|v| matches!(v, Value::List(_))) {
        let lists: Vec<&Vec<Value>> = known
            .iter()
            .filter_map(|v| {
                if let Value::List(l) = v {
                    Some(l)
                } else {
                    None
                }
            })
            .collect();
        let n = lists[0].len();
        if lists.iter().all(|l| l.len() == n) {
            let mut items = Vec::new();
            for i in 0..n {
                let at: Vec<&Value> = lists.iter().map(|l| &l[i]).collect();
                items.push(unify(&at)?);
            }
            return Some(Type::Tuple(items));
        }
        let all: Vec<&Value> = lists.iter().flat_map(|l| l.iter()).collect();
        return unify(&all).map(|t| Type::List(Box::new(t)));
    }
    if same_kind(|v| matches!(v, Value::Map(_))) {
        let maps: Vec<&BTreeMap<String, Value>> = known
            .iter()
            .filter_map(|v| if let Value::Map(m) = v { Some(m) } else { None })
            .collect();
        let keys: Vec<&String> = maps[0].keys().collect();
        if maps.iter().all(|m| m.keys().collect::<Vec<_>>() == keys) {
            let mut attrs = BTreeMap::new();
            for k in keys {
                let at: Vec<&Value> = maps.iter().filter_map(|m| m.get(k)).collect();
                let ty = unify(&at)?;
                // Optional, so a null attribute converts as itself.
                attrs.insert(
                    k.clone(),
                    Attr {
                        ty,
                        optional: true,
                        default: None,
                    },
                );
            }
            return Some(Type::Object(attrs));
        }
        let all: Vec<&Value> = maps.iter().flat_map(|m| m.values()).collect();
        return unify(&all).map(|t| Type::Map(Box::new(t)));
    }
    None
}
