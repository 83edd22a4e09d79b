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
    /// A set (from `toset`, a `set(...)` variable or a set function): items
    /// in cty's order without duplicates (see [`set_of`]). Kept apart from
    /// lists because Terraform treats them apart: `for_each` takes a set of
    /// strings but not a list, and a set element's key is its value.
    Set(Vec<Value>),
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
            Value::Set(_) => "a set".into(),
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
                    // The printed form, so JSON shows 0.3 where Terraform does.
                    serde_json::from_str::<serde_json::Number>(&format_number(*n))
                        .ok()
                        .or_else(|| serde_json::Number::from_f64(*n))
                        .map_or(serde_json::Value::Null, serde_json::Value::Number)
                }
            }
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

/// A number as Terraform prints it: whole numbers without a fraction,
/// others in the shortest form that reads back as the same f64. Sums,
/// differences, products and remainders are computed in decimal
/// ([`decimal`]), so `0.1 + 0.2` is `0.3` as in Terraform's big floats.
pub fn format_number(n: f64) -> String {
    // Whole numbers print exactly (every f64 from 2^53 up is whole).
    if n.fract() == 0.0 && n.abs() < 9.2e18 {
        return format!("{}", n as i64);
    }
    format!("{n}")
}

/// A decimal number's text as (negative, significant digits, exponent):
/// `-12.50e2` is (true, "125", 1); zero is (false, "", 0). None when the
/// text is not a decimal number.
fn normalize(text: &str) -> Option<(bool, String, i64)> {
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (mant, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i64>().ok()?),
        None => (t, 0),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let all = format!("{int}{frac}");
    let mut exp = exp.checked_sub(frac.len() as i64)?;
    let digits = all.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    exp = exp.checked_add((digits.len() - trimmed.len()) as i64)?;
    if trimmed.is_empty() {
        return Some((false, String::new(), 0));
    }
    Some((neg, trimmed.to_string(), exp))
}

/// Why a number cannot be held: standby's numbers are 64-bit floats, and
/// a value they would round is refused rather than silently changed.
pub fn inexact(text: &str, n: f64) -> String {
    let shown = if text.len() > 60 {
        format!("{}...", text.chars().take(60).collect::<String>())
    } else {
        text.to_string()
    };
    if n.is_finite() {
        format!(
            "standby represents numbers exactly only up to 2^53 / 17 significant digits: {shown} would be rounded to {}",
            format_number(n)
        )
    } else {
        format!("the number {shown} is too large: standby's numbers end near 1.8e308")
    }
}

/// The number `text` (a decimal, as written) if a 64-bit float holds it
/// exactly, else `Err` with [`inexact`]'s message.
pub fn exact(text: &str) -> Result<f64, String> {
    let n: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if n.is_finite() && normalize(text) == normalize(&format!("{n:e}")) {
        Ok(n)
    } else {
        Err(inexact(text, n))
    }
}

/// A number's shortest decimal form as (digits, exponent): 5.1 is (51, -1).
fn to_decimal(x: f64) -> Option<(i128, i64)> {
    let (neg, digits, exp) = normalize(&format!("{x:e}"))?;
    let d: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    Some((if neg { -d } else { d }, exp))
}

/// `x OP y` for `+ - * %` in exact decimal arithmetic on the numbers'
/// shortest decimal forms (as Terraform's big floats give for decimal
/// input). `Err` (a message naming the exact result) when a 64-bit float
/// cannot hold the result: it would be rounded, or it overflows.
pub fn decimal(x: f64, op: char, y: f64) -> Result<f64, String> {
    let too_many = || {
        let f = match op {
            '+' => x + y,
            '-' => x - y,
            '*' => x * y,
            _ => x % y,
        };
        inexact(
            &format!("{} {op} {}", format_number(x), format_number(y)),
            f,
        )
    };
    let ((a, ea), (b, eb)) = match (to_decimal(x), to_decimal(y)) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(too_many()),
    };
    let (m, exp) = if op == '*' {
        (a.checked_mul(b), ea + eb)
    } else {
        let e = ea.min(eb);
        let scale = |d: i128, by: i64| {
            u32::try_from(by)
                .ok()
                .and_then(|by| 10i128.checked_pow(by))
                .and_then(|p| d.checked_mul(p))
        };
        match (scale(a, ea - e), scale(b, eb - e)) {
            (Some(a), Some(b)) => (
                match op {
                    '+' => a.checked_add(b),
                    '-' => a.checked_sub(b),
                    // The remainder has the dividend's sign, as in Go and cty.
                    '%' if b != 0 => a.checked_rem(b),
                    _ => None,
                },
                e,
            ),
            _ => (None, e),
        }
    };
    let Some(m) = m else {
        return Err(too_many());
    };
    let text = format!("{m}e{exp}");
    exact(&text).map_err(|_| {
        let n: f64 = text.parse().unwrap_or(f64::NAN);
        inexact(&format_number_exact(m, exp), n)
    })
}

/// `m * 10^exp` written out without an exponent (for messages).
fn format_number_exact(m: i128, exp: i64) -> String {
    let neg = m < 0;
    let digits = m.unsigned_abs().to_string();
    let s = if exp >= 0 {
        if exp > 40 {
            return format!("{m}e{exp}");
        }
        format!("{digits}{}", "0".repeat(exp as usize))
    } else {
        let k = (-exp) as usize;
        if k > 60 {
            return format!("{m}e{exp}");
        }
        let padded = format!(
            "{}{digits}",
            "0".repeat((k + 1).saturating_sub(digits.len()))
        );
        let (i, f) = padded.split_at(padded.len() - k);
        format!("{i}.{f}")
    };
    if neg { format!("-{s}") } else { s }
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

/// Where inside a value a conversion failed: `["web"].disks[0]`.
fn at(path: &str, inner: String) -> String {
    if inner.contains(" at ") {
        let (what, rest) = inner.split_once(" at ").unwrap_or((&inner, ""));
        format!("{what} at {path}{rest}")
    } else {
        format!("{inner} at {path}")
    }
}

impl Type {
    /// Convert `v` to this type the way HCL does (numbers and bools become
    /// strings and back, objects lose attributes the type does not name,
    /// optional attributes left out become their default or null); `Err`
    /// names what was found and where (`a string at .port`).
    pub fn convert(&self, v: Value) -> Result<Value, String> {
        match (self, v) {
            (Type::Any, v) => Ok(v),
            (_, Value::Null) => Ok(Value::Null),
            (Type::String, Value::String(s)) => Ok(Value::String(s)),
            (Type::String, v @ (Value::Number(_) | Value::Bool(_))) => {
                Ok(Value::String(v.to_template_string().unwrap_or_default()))
            }
            (Type::Number, Value::Number(n)) => Ok(Value::Number(n)),
            (Type::Number, Value::String(s)) => match parse_number(&s) {
                // The text is not shown: it may come from a sensitive variable.
                None => Err("a string that is not a number".to_string()),
                Some(_) if exact(&s).is_err() => Err(
                    "a string holding a number standby would round (it keeps numbers exactly only up to 2^53 / 17 significant digits)".to_string(),
                ),
                Some(n) => Ok(Value::Number(n)),
            },
            (Type::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
            // go-cty's string-to-bool conversion: "true"/"1", "false"/"0".
            (Type::Bool, Value::String(s)) if matches!(s.as_str(), "true" | "1" | "false" | "0") => {
                Ok(Value::Bool(s == "true" || s == "1"))
            }
            (Type::Bool, Value::String(s)) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => {
                Err("a string with a capital letter (to convert from a string, use lowercase \"true\" or \"false\")".to_string())
            }
            (Type::List(t), Value::List(items) | Value::Set(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| t.convert(v).map_err(|e| at(&format!("[{i}]"), e)))
                .collect::<Result<_, _>>()
                .map(Value::List),
            (Type::Set(t), Value::List(items) | Value::Set(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| t.convert(v).map_err(|e| at(&format!("[{i}]"), e)))
                .collect::<Result<Vec<_>, _>>()
                .map(|l| Value::Set(set_of(l))),
            (Type::Tuple(ts), Value::List(items)) => {
                if ts.len() != items.len() {
                    return Err(format!("a list of {} items where {} are needed", items.len(), ts.len()));
                }
                ts.iter()
                    .zip(items)
                    .enumerate()
                    .map(|(i, (t, v))| t.convert(v).map_err(|e| at(&format!("[{i}]"), e)))
                    .collect::<Result<_, _>>()
                    .map(Value::List)
            }
            (Type::Map(t), Value::Map(m)) => m
                .into_iter()
                .map(|(k, v)| {
                    let path = format!("[{k:?}]");
                    t.convert(v).map(|v| (k, v)).map_err(|e| at(&path, e))
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
                            return Err(format!("an object without the required attribute {k:?}"));
                        }
                        v => v,
                    };
                    res.insert(k.clone(), a.ty.convert(v).map_err(|e| at(&format!(".{k}"), e))?);
                }
                Ok(Value::Map(res))
            }
            (_, v) => Err(v.type_name()),
        }
    }
}

/// A number written as HCL and Terraform accept it in a string: decimal,
/// optionally signed, with a fraction and exponent (no hex, no `inf`).
pub fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    let ok = !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        && t.chars().any(|c| c.is_ascii_digit());
    if !ok || t != s {
        return None;
    }
    t.parse().ok()
}

/// A set's items in cty's order: numbers numerically, other values by
/// their text; duplicates removed; mixed primitives become strings.
pub fn set_of(items: Vec<Value>) -> Vec<Value> {
    let all_num = items.iter().all(|v| matches!(v, Value::Number(_)));
    let all_prim = items
        .iter()
        .all(|v| matches!(v, Value::Number(_) | Value::String(_) | Value::Bool(_)));
    let mut items: Vec<Value> = if all_prim && !all_num {
        items
            .into_iter()
            .map(|v| Type::String.convert(v).unwrap_or(Value::Null))
            .collect()
    } else {
        items
    };
    if all_num {
        items.sort_by(|a, b| match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.total_cmp(y),
            _ => std::cmp::Ordering::Equal,
        });
    } else {
        items.sort_by_key(|v| v.to_json().to_string());
    }
    items.dedup();
    items
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
/// null fits anything; different primitives become string; lists of one
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
            return Some(Type::String);
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
