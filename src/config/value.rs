//! Values of evaluated expressions: plain data plus references to blocks
//! (`site.onprem`, `machine.web["a"]`, `group.data`).

use crate::model::Kind;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Ref(Ref),
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
            Value::Map(_) => "a map".into(),
            Value::Ref(r) => format!("a reference to {r}"),
        }
    }

    /// The text a value takes inside a string template.
    pub fn to_template_string(&self) -> Option<String> {
        match self {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(format_number(*n)),
            Value::Bool(b) => Some(b.to_string()),
            Value::Ref(r) => Some(r.to_string()),
            _ => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => {
                if n.fract() == 0.0 && n.abs() < 9e15 {
                    serde_json::json!(*n as i64)
                } else {
                    serde_json::Number::from_f64(*n)
                        .map_or(serde_json::Value::Null, serde_json::Value::Number)
                }
            }
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::List(l) => serde_json::Value::Array(l.iter().map(Value::to_json).collect()),
            Value::Map(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            Value::Ref(r) => serde_json::Value::String(r.to_string()),
        }
    }
}

pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// A variable's declared type: `string`, `number`, `bool`, `list(T)`,
/// `set(T)`, `map(T)` or `any`.
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    Any,
    String,
    Number,
    Bool,
    List(Box<Type>),
    Map(Box<Type>),
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Any => f.write_str("any"),
            Type::String => f.write_str("string"),
            Type::Number => f.write_str("number"),
            Type::Bool => f.write_str("bool"),
            Type::List(t) => write!(f, "list({t})"),
            Type::Map(t) => write!(f, "map({t})"),
        }
    }
}

impl Type {
    /// Convert `v` to this type the way HCL does (numbers and bools become
    /// strings and back); `Err` names what was found.
    pub fn convert(&self, v: Value) -> Result<Value, String> {
        match (self, v) {
            (Type::Any, v) => Ok(v),
            (_, Value::Null) => Ok(Value::Null),
            (Type::String, Value::String(s)) => Ok(Value::String(s)),
            (Type::String, v @ (Value::Number(_) | Value::Bool(_))) => {
                Ok(Value::String(v.to_template_string().unwrap_or_default()))
            }
            (Type::Number, Value::Number(n)) => Ok(Value::Number(n)),
            (Type::Number, Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .map(Value::Number)
                .map_err(|_| "a string that is not a number".to_string()),
            (Type::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
            (Type::Bool, Value::String(s)) if s == "true" || s == "false" => {
                Ok(Value::Bool(s == "true"))
            }
            (Type::List(t), Value::List(items)) => items
                .into_iter()
                .map(|i| t.convert(i))
                .collect::<Result<_, _>>()
                .map(Value::List),
            (Type::Map(t), Value::Map(m)) => m
                .into_iter()
                .map(|(k, v)| t.convert(v).map(|v| (k, v)))
                .collect::<Result<_, _>>()
                .map(Value::Map),
            (_, v) => Err(v.type_name()),
        }
    }
}
