//! Built-in functions with Terraform's semantics (names, argument rules,
//! results and refusals), over evaluated values. `try`, `can` and
//! `templatefile` need the evaluator and live in `eval.rs`.

use super::number::{Flags, Number, go_format_int};
use super::value::{Type, Value, same_element, set_of};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Why a call failed.
pub enum FnError {
    /// Not a function standby knows.
    Unknown,
    /// A Terraform function standby does not implement.
    Unsupported,
    /// Wrong arguments or a failure; the text says which.
    Bad(String),
}

fn bad<T>(msg: impl Into<String>) -> Result<T, FnError> {
    Err(FnError::Bad(msg.into()))
}

/// Functions standby implements (for messages and docs/LANGUAGE.md).
pub const SUPPORTED: &[&str] = &[
    "abs",
    "alltrue",
    "anytrue",
    "can",
    "ceil",
    "chomp",
    "chunklist",
    "coalesce",
    "coalescelist",
    "compact",
    "concat",
    "contains",
    "distinct",
    "element",
    "endswith",
    "file",
    "flatten",
    "floor",
    "format",
    "formatlist",
    "indent",
    "index",
    "join",
    "jsondecode",
    "jsonencode",
    "keys",
    "length",
    "log",
    "lookup",
    "lower",
    "max",
    "merge",
    "min",
    "one",
    "parseint",
    "pow",
    "range",
    "regex",
    "regexall",
    "replace",
    "reverse",
    "setintersection",
    "setsubtract",
    "setunion",
    "signum",
    "slice",
    "sort",
    "split",
    "startswith",
    "strcontains",
    "strrev",
    "substr",
    "sum",
    "templatefile",
    "tobool",
    "tolist",
    "tomap",
    "tonumber",
    "toset",
    "tostring",
    "trim",
    "trimprefix",
    "trimspace",
    "trimsuffix",
    "try",
    "upper",
    "values",
    "zipmap",
];

/// Terraform functions standby refuses by name with "not supported".
const TERRAFORM_ONLY: &[&str] = &[
    "abspath",
    "base64decode",
    "base64encode",
    "base64gzip",
    "base64sha256",
    "base64sha512",
    "basename",
    "bcrypt",
    "cidrhost",
    "cidrnetmask",
    "cidrsubnet",
    "cidrsubnets",
    "csvdecode",
    "dirname",
    "filebase64",
    "filebase64sha256",
    "filebase64sha512",
    "fileexists",
    "filemd5",
    "fileset",
    "filesha1",
    "filesha256",
    "filesha512",
    "formatdate",
    "matchkeys",
    "md5",
    "nonsensitive",
    "pathexpand",
    "plantimestamp",
    "rsadecrypt",
    "sensitive",
    "setproduct",
    "sha1",
    "sha256",
    "sha512",
    "textdecodebase64",
    "textencodebase64",
    "timeadd",
    "timecmp",
    "timestamp",
    "title",
    "transpose",
    "type",
    "urlencode",
    "uuid",
    "uuidv5",
    "yamldecode",
    "yamlencode",
];

fn num(v: &Value, what: &str) -> Result<Number, FnError> {
    match Type::Number.convert(v.clone()) {
        Ok(Value::Number(n)) => Ok(n),
        _ => bad(format!("{what} must be a number, found {}", v.type_name())),
    }
}

/// A number argument as go-cty converts it to a Go float64 (nearest; an
/// infinity is an error).
fn float(v: &Value, what: &str) -> Result<f64, FnError> {
    let f = num(v, what)?.to_f64();
    if f.is_infinite() {
        return bad(format!("{what} must be between -1.8e308 and 1.8e308"));
    }
    Ok(f)
}

/// Go's `big.Int.SetString(s, base)`: an optional sign, then digits of
/// the base (`0-9a-z` case-insensitive up to 36; `A-Z` are 36..61 above).
fn parse_int(s: &str, base: u32) -> Option<num_bigint::BigInt> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v = num_bigint::BigInt::from(0);
    for c in digits.chars() {
        let d = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 10,
            'A'..='Z' if base <= 36 => c as u32 - 'A' as u32 + 10,
            'A'..='Z' => c as u32 - 'A' as u32 + 36,
            _ => return None,
        };
        if d >= base {
            return None;
        }
        v = v * base + d;
    }
    Some(if neg { -v } else { v })
}

/// A whole number argument (go-cty converts these to Go ints: a fraction
/// is an error, not truncated).
fn int(v: &Value, what: &str) -> Result<i64, FnError> {
    let n = num(v, what)?;
    match n.to_i64() {
        Some(i) => Ok(i),
        None => bad(format!("{what} must be a whole number, found {n}")),
    }
}

/// Refuse a set where go-cty needs a list or tuple (elements with indices).
fn no_set(v: &Value, msg: &str) -> Result<(), FnError> {
    match v {
        Value::Set(_) => bad(format!(
            "{msg} (a set's elements have no indices; use tolist() if the order does not matter)"
        )),
        _ => Ok(()),
    }
}

fn string(v: &Value, what: &str) -> Result<String, FnError> {
    match Type::String.convert(v.clone()) {
        Ok(Value::String(s)) => Ok(s),
        _ => bad(format!("{what} must be a string, found {}", v.type_name())),
    }
}

fn list<'v>(v: &'v Value, what: &str) -> Result<&'v Vec<Value>, FnError> {
    match v {
        Value::List(l) | Value::Set(l) => Ok(l),
        _ => bad(format!("{what} must be a list, found {}", v.type_name())),
    }
}

fn map<'v>(v: &'v Value, what: &str) -> Result<&'v BTreeMap<String, Value>, FnError> {
    match v {
        Value::Map(m) => Ok(m),
        _ => bad(format!("{what} must be a map, found {}", v.type_name())),
    }
}

fn arity(name: &str, args: &[Value], min: usize, max: usize) -> Result<(), FnError> {
    if args.len() < min || args.len() > max {
        let want = if min == max {
            format!("{min}")
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("{min} to {max}")
        };
        return bad(format!(
            "{name}() takes {want} argument{}, got {}",
            if want == "1" { "" } else { "s" },
            args.len()
        ));
    }
    Ok(())
}

/// User-perceived characters (extended grapheme clusters), as Terraform's
/// `length` counts them.
pub fn graphemes(s: &str) -> usize {
    unicode_segmentation::UnicodeSegmentation::graphemes(s, true).count()
}

/// Case mapping per character, as Go's `strings.ToLower`/`ToUpper` (and so
/// Terraform) do it: a character whose mapping is several characters
/// (`ß` to `SS`) stays as it is, and Greek sigma has no final form.
fn map_case(s: &str, upper: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let mapped: Vec<char> = if upper {
            c.to_uppercase().collect()
        } else {
            c.to_lowercase().collect()
        };
        if mapped.len() == 1 {
            out.push(mapped[0]);
        } else {
            out.push(c);
        }
    }
    out
}

/// Call a function that needs only its argument values. `dir` is the
/// configuration directory, for `file`.
pub fn call(name: &str, args: &[Value], dir: &Path) -> Result<Value, FnError> {
    let a = args;
    match name {
        "abs" => {
            arity(name, a, 1, 1)?;
            Ok(Value::Number(num(&a[0], "the argument")?.abs()))
        }
        "ceil" => {
            arity(name, a, 1, 1)?;
            Ok(Value::Number(num(&a[0], "the argument")?.ceil()))
        }
        "floor" => {
            arity(name, a, 1, 1)?;
            Ok(Value::Number(num(&a[0], "the argument")?.floor()))
        }
        // go-cty converts these arguments to float64 (log, pow) or int
        // (signum) and makes the result from that, as here.
        "log" | "pow" => {
            arity(name, a, 2, 2)?;
            let x = float(&a[0], "the first argument")?;
            let y = float(&a[1], "the second argument")?;
            let r = if name == "log" {
                super::number::go_log(x) / super::number::go_log(y)
            } else {
                super::number::go_pow(x, y)
            };
            match Number::from_f64(r) {
                Some(n) => Ok(Value::Number(n)),
                None if r.is_nan() => bad(format!("{name}(): the result is not a number")),
                None => bad(format!(
                    "{name}(): the result is infinite; Terraform would give an infinity, which standby does not support"
                )),
            }
        }
        "signum" => {
            arity(name, a, 1, 1)?;
            let i = int(&a[0], "the argument")?;
            Ok(Value::Number(Number::from_i64(i.signum())))
        }
        "parseint" => {
            arity(name, a, 2, 2)?;
            let Value::String(text) = &a[0] else {
                return bad(format!(
                    "parseint(): the first argument must be a string, not {}",
                    a[0].type_name()
                ));
            };
            let base = int(&a[1], "the base")?;
            if !(2..=62).contains(&base) {
                return bad(
                    "parseint(): the base must be a whole number between 2 and 62 inclusive",
                );
            }
            match parse_int(text, base as u32) {
                Some(i) => Ok(Value::Number(Number::from_bigint(&i))),
                None => bad(format!("cannot parse {text:?} as a base {base} integer")),
            }
        }
        "min" | "max" => {
            arity(name, a, 1, usize::MAX)?;
            // As go-cty: the first argument strictly beyond all before it.
            let mut best = num(&a[0], "each argument")?;
            for v in &a[1..] {
                let n = num(v, "each argument")?;
                let beyond = if name == "min" {
                    n.compare(&best).is_lt()
                } else {
                    n.compare(&best).is_gt()
                };
                if beyond {
                    best = n;
                }
            }
            Ok(Value::Number(best))
        }
        "length" => {
            arity(name, a, 1, 1)?;
            match &a[0] {
                Value::List(l) | Value::Set(l) => Ok(Value::Number(l.len().into())),
                Value::Map(m) => Ok(Value::Number(m.len().into())),
                Value::String(s) => Ok(Value::Number(graphemes(s).into())),
                v => bad(format!(
                    "length() takes a string, list or map, found {}",
                    v.type_name()
                )),
            }
        }
        "lower" | "upper" | "trimspace" | "chomp" => {
            arity(name, a, 1, 1)?;
            let s = string(&a[0], "the argument")?;
            Ok(Value::String(match name {
                "lower" => map_case(&s, false),
                "upper" => map_case(&s, true),
                "trimspace" => s.trim().to_string(),
                _ => s.trim_end_matches(['\r', '\n']).to_string(),
            }))
        }
        "trim" => {
            arity(name, a, 2, 2)?;
            let s = string(&a[0], "the string")?;
            let cut = string(&a[1], "the characters to cut")?;
            Ok(Value::String(
                s.trim_matches(|c| cut.contains(c)).to_string(),
            ))
        }
        "trimprefix" | "trimsuffix" | "startswith" | "endswith" => {
            arity(name, a, 2, 2)?;
            let s = string(&a[0], "the string")?;
            let p = string(&a[1], "the affix")?;
            Ok(match name {
                "trimprefix" => Value::String(s.strip_prefix(p.as_str()).unwrap_or(&s).to_string()),
                "trimsuffix" => Value::String(s.strip_suffix(p.as_str()).unwrap_or(&s).to_string()),
                "startswith" => Value::Bool(s.starts_with(&p)),
                _ => Value::Bool(s.ends_with(&p)),
            })
        }
        "substr" => {
            arity(name, a, 3, 3)?;
            let s = string(&a[0], "the string")?;
            // Grapheme clusters, as go-cty's substr counts.
            let chars: Vec<&str> =
                unicode_segmentation::UnicodeSegmentation::graphemes(s.as_str(), true).collect();
            let len = chars.len() as i64;
            let mut off = int(&a[1], "the offset")?;
            let n = int(&a[2], "the length")?;
            // go-cty's rules: a negative offset counts from the end (and
            // clamps at the start); an offset past the end gives "".
            if off < 0 {
                off = (off + len).max(0);
            } else if n == 0 || off >= len {
                return Ok(Value::String(String::new()));
            }
            let off = off.min(len);
            let end = if n <= 0 {
                len
            } else {
                off.saturating_add(n).min(len)
            };
            Ok(Value::String(chars[off as usize..end as usize].concat()))
        }
        "split" => {
            arity(name, a, 2, 2)?;
            let sep = string(&a[0], "the separator")?;
            let s = string(&a[1], "the string")?;
            if sep.is_empty() {
                return Ok(Value::List(
                    s.chars().map(|c| Value::String(c.to_string())).collect(),
                ));
            }
            Ok(Value::List(
                s.split(sep.as_str())
                    .map(|p| Value::String(p.to_string()))
                    .collect(),
            ))
        }
        "join" => {
            arity(name, a, 2, usize::MAX)?;
            let sep = string(&a[0], "the separator")?;
            let mut parts = Vec::new();
            for l in &a[1..] {
                for v in list(l, "each list to join")? {
                    if *v == Value::Null {
                        return bad("join(): a list holds null; remove it with compact()");
                    }
                    parts.push(string(v, "each item")?);
                }
            }
            Ok(Value::String(parts.join(&sep)))
        }
        "replace" => {
            arity(name, a, 3, 3)?;
            let s = string(&a[0], "the string")?;
            let find = string(&a[1], "the substring")?;
            let with = string(&a[2], "the replacement")?;
            if find.len() > 1 && find.starts_with('/') && find.ends_with('/') {
                let re = regex(&find[1..find.len() - 1])?;
                return Ok(Value::String(
                    re.replace_all(&s, with.as_str()).into_owned(),
                ));
            }
            Ok(Value::String(s.replace(&find, &with)))
        }
        "regex" | "regexall" => {
            arity(name, a, 2, 2)?;
            let re = regex(&string(&a[0], "the pattern")?)?;
            let s = string(&a[1], "the string")?;
            let one = |caps: regex::Captures| -> Value {
                let names: Vec<Option<&str>> = re.capture_names().skip(1).collect();
                if names.is_empty() {
                    return Value::String(caps.get(0).map_or("", |m| m.as_str()).into());
                }
                if names.iter().any(Option::is_some) {
                    return Value::Map(
                        names
                            .iter()
                            .enumerate()
                            .filter_map(|(i, n)| n.map(|n| (n.to_string(), group(&caps, i + 1))))
                            .collect(),
                    );
                }
                Value::List((1..=names.len()).map(|i| group(&caps, i)).collect())
            };
            if name == "regexall" {
                return Ok(Value::List(re.captures_iter(&s).map(one).collect()));
            }
            match re.captures(&s) {
                Some(c) => Ok(one(c)),
                None => bad("regex(): the pattern did not match any part of the string"),
            }
        }
        "format" => {
            arity(name, a, 1, usize::MAX)?;
            let f = string(&a[0], "the format")?;
            format(&f, &a[1..]).map(Value::String).map_err(FnError::Bad)
        }
        "formatlist" => {
            arity(name, a, 1, usize::MAX)?;
            let f = string(&a[0], "the format")?;
            let mut n: Option<usize> = None;
            // Sets iterate in their order, as in Terraform.
            for v in &a[1..] {
                if let Value::List(l) | Value::Set(l) = v {
                    if n.is_some_and(|n| n != l.len()) {
                        return bad("formatlist(): the lists must all have the same length");
                    }
                    n = Some(l.len());
                }
            }
            let n = n.unwrap_or(1);
            let mut res = Vec::new();
            for i in 0..n {
                let row: Vec<Value> = a[1..]
                    .iter()
                    .map(|v| match v {
                        Value::List(l) | Value::Set(l) => l[i].clone(),
                        v => v.clone(),
                    })
                    .collect();
                res.push(Value::String(format(&f, &row).map_err(FnError::Bad)?));
            }
            Ok(Value::List(res))
        }
        "range" => {
            arity(name, a, 1, 3)?;
            let ns: Vec<Number> = a
                .iter()
                .map(|v| num(v, "each argument"))
                .collect::<Result<_, _>>()?;
            // go-cty's RangeFunc: the defaults are whole numbers held at
            // 64 bits, each value is the previous one plus the step.
            let zero = Number::from_i64(0);
            let (start, limit) = if ns.len() == 1 {
                (zero.clone(), ns[0].clone())
            } else {
                (ns[0].clone(), ns[1].clone())
            };
            let step = ns.get(2).cloned().unwrap_or_else(|| {
                Number::from_i64(if limit.compare(&start).is_lt() { -1 } else { 1 })
            });
            if step.is_zero() {
                return bad("range(): the step must not be zero");
            }
            let down = step.sign() < 0;
            if (down && limit.compare(&start).is_gt()) || (!down && limit.compare(&start).is_lt()) {
                return bad("range(): the step moves away from the limit");
            }
            let mut v = Vec::new();
            let mut i = start;
            while (down && i.compare(&limit).is_gt()) || (!down && i.compare(&limit).is_lt()) {
                if v.len() >= 1024 {
                    return bad("range(): more than 1024 values");
                }
                v.push(Value::Number(i.clone()));
                i = i
                    .add(&step)
                    .map_err(|e| FnError::Bad(format!("range(): {e}")))?;
            }
            Ok(Value::List(v))
        }
        "keys" | "values" => {
            arity(name, a, 1, 1)?;
            let m = map(&a[0], "the argument")?;
            Ok(Value::List(if name == "keys" {
                m.keys().cloned().map(Value::String).collect()
            } else {
                m.values().cloned().collect()
            }))
        }
        "lookup" => {
            arity(name, a, 2, 3)?;
            let m = map(&a[0], "the first argument")?;
            let k = string(&a[1], "the key")?;
            match (m.get(&k), a.get(2)) {
                (Some(v), _) => Ok(v.clone()),
                (None, Some(d)) => Ok(d.clone()),
                (None, None) => bad(format!(
                    "lookup(): the map has no key {k:?} and no default was given"
                )),
            }
        }
        "merge" => {
            let mut all = BTreeMap::new();
            for v in a {
                match v {
                    Value::Null => {}
                    Value::Map(m) => all.extend(m.clone()),
                    v => return bad(format!("merge() takes maps, found {}", v.type_name())),
                }
            }
            Ok(Value::Map(all))
        }
        "zipmap" => {
            arity(name, a, 2, 2)?;
            no_set(
                &a[1],
                "zipmap(): values argument must be a list or tuple value, not a set",
            )?;
            let k = list(&a[0], "the keys")?;
            let v = list(&a[1], "the values")?;
            if k.len() != v.len() {
                return bad("zipmap(): the keys and values lists have different lengths");
            }
            let mut m = BTreeMap::new();
            for (k, v) in k.iter().zip(v) {
                m.insert(string(k, "each key")?, v.clone());
            }
            Ok(Value::Map(m))
        }
        "concat" => {
            let mut all = Vec::new();
            for l in a {
                no_set(
                    l,
                    "concat(): all arguments must be lists or tuples; got a set",
                )?;
                all.extend(list(l, "each argument")?.iter().cloned());
            }
            Ok(Value::List(all))
        }
        "flatten" => {
            arity(name, a, 1, 1)?;
            fn flat(l: &[Value], into: &mut Vec<Value>) {
                for v in l {
                    match v {
                        Value::List(inner) | Value::Set(inner) => flat(inner, into),
                        v => into.push(v.clone()),
                    }
                }
            }
            let mut all = Vec::new();
            flat(list(&a[0], "the argument")?, &mut all);
            Ok(Value::List(all))
        }
        "element" => {
            arity(name, a, 2, 2)?;
            no_set(&a[0], "element(): cannot read elements from a set")?;
            let l = list(&a[0], "the first argument")?;
            let i = int(&a[1], "the index")?;
            if l.is_empty() {
                return bad("element(): cannot use element() with an empty list");
            }
            // go-cty 1.16 (what Terraform ships) wraps a negative index
            // too: -1 is the last item.
            let n = i64::try_from(l.len()).unwrap_or(i64::MAX);
            Ok(l[i.rem_euclid(n) as usize].clone())
        }
        "index" => {
            arity(name, a, 2, 2)?;
            no_set(
                &a[0],
                "index(): argument must be a list or tuple, not a set",
            )?;
            let l = list(&a[0], "the first argument")?;
            match l.iter().position(|v| *v == a[1]) {
                Some(i) => Ok(Value::Number(i.into())),
                None => bad("index(): the item is not in the list"),
            }
        }
        "contains" => {
            arity(name, a, 2, 2)?;
            Ok(Value::Bool(
                list(&a[0], "the first argument")?.contains(&a[1]),
            ))
        }
        "distinct" => {
            arity(name, a, 1, 1)?;
            let mut seen: Vec<Value> = Vec::new();
            for v in &unified(name, list(&a[0], "the argument")?.clone())? {
                if !seen.contains(v) {
                    seen.push(v.clone());
                }
            }
            Ok(Value::List(seen))
        }
        "compact" => {
            arity(name, a, 1, 1)?;
            // compact takes a list of strings: other items convert first.
            let mut res = Vec::new();
            for v in list(&a[0], "the argument")? {
                match Type::String.convert(v.clone()) {
                    Ok(Value::String(s)) if s.is_empty() => {}
                    Ok(Value::Null) => {}
                    Ok(s) => res.push(s),
                    Err(found) => {
                        return bad(format!(
                            "compact() takes a list of strings, found {found} in it"
                        ));
                    }
                }
            }
            Ok(Value::List(res))
        }
        "reverse" => {
            arity(name, a, 1, 1)?;
            let mut l = list(&a[0], "the argument")?.clone();
            l.reverse();
            Ok(Value::List(l))
        }
        "slice" => {
            arity(name, a, 3, 3)?;
            no_set(
                &a[0],
                "slice(): cannot slice a set, because its elements do not have indices",
            )?;
            let l = list(&a[0], "the first argument")?;
            let (s, e) = (int(&a[1], "the start")?, int(&a[2], "the end")?);
            if s < 0 || e > l.len() as i64 || s > e {
                return bad(format!(
                    "slice(): indexes {s}..{e} do not fit a list of {}",
                    l.len()
                ));
            }
            Ok(Value::List(l[s as usize..e as usize].to_vec()))
        }
        "sort" => {
            arity(name, a, 1, 1)?;
            let mut l: Vec<String> = list(&a[0], "the argument")?
                .iter()
                .map(|v| string(v, "each item"))
                .collect::<Result<_, _>>()?;
            l.sort();
            Ok(Value::List(l.into_iter().map(Value::String).collect()))
        }
        "coalesce" => {
            // The arguments unify as in Terraform (go-cty's `Unify`): mixed
            // primitives become strings, a number and a bool alone fail.
            let refs: Vec<&Value> = a.iter().collect();
            let Some(ty) = super::value::unify(&refs) else {
                return bad("coalesce(): all arguments must have the same type");
            };
            for v in a {
                match v {
                    Value::Null => {}
                    Value::String(s) if s.is_empty() => {}
                    v => {
                        return ty.convert(v.clone()).or_else(|found| {
                            bad(format!("coalesce(): cannot convert {found} to {ty}"))
                        });
                    }
                }
            }
            bad("coalesce(): no non-null, non-empty-string arguments")
        }
        "coalescelist" => {
            for v in a {
                no_set(v, "coalescelist(): arguments must be lists or tuples")?;
                if !list(v, "each argument")?.is_empty() {
                    return Ok(v.clone());
                }
            }
            bad("coalescelist(): no non-empty list arguments")
        }
        "tostring" | "tonumber" | "tobool" => {
            arity(name, a, 1, 1)?;
            let ty = match name {
                "tostring" => Type::String,
                "tonumber" => Type::Number,
                _ => Type::Bool,
            };
            ty.convert(a[0].clone())
                .or_else(|found| bad(format!("{name}(): cannot convert {found} to {}", ty)))
        }
        "tolist" | "toset" => {
            arity(name, a, 1, 1)?;
            let l = unified(name, list(&a[0], "the argument")?.clone())?;
            Ok(if name == "toset" {
                Value::Set(set_of(l))
            } else {
                Value::List(l)
            })
        }
        "tomap" => {
            arity(name, a, 1, 1)?;
            let m = map(&a[0], "the argument")?;
            let vals = unified(name, m.values().cloned().collect())?;
            Ok(Value::Map(m.keys().cloned().zip(vals).collect()))
        }
        "jsonencode" => {
            arity(name, a, 1, 1)?;
            Ok(Value::String(json_encode(&a[0])))
        }
        "jsondecode" => {
            arity(name, a, 1, 1)?;
            let s = string(&a[0], "the argument")?;
            json_decode(&s).map_err(|e| FnError::Bad(format!("jsondecode(): {e}")))
        }
        "file" => {
            arity(name, a, 1, 1)?;
            let p = string(&a[0], "the path")?;
            read_config_file(dir, &p)
                .map(|t| Value::String(super::value::nfc(&t)))
                .map_err(FnError::Bad)
        }
        "alltrue" | "anytrue" => {
            arity(name, a, 1, 1)?;
            let mut bools = Vec::new();
            for v in list(&a[0], "the argument")? {
                match Type::Bool.convert(v.clone()) {
                    Ok(Value::Bool(b)) => bools.push(b),
                    // go-cty: a null item is not true.
                    Ok(Value::Null) => bools.push(false),
                    _ => {
                        return bad(format!(
                            "{name}() takes a list of bools, found {}",
                            v.type_name()
                        ));
                    }
                }
            }
            Ok(Value::Bool(if name == "alltrue" {
                bools.iter().all(|b| *b)
            } else {
                bools.iter().any(|b| *b)
            }))
        }
        "sum" => {
            arity(name, a, 1, 1)?;
            let l = list(&a[0], "the argument")?;
            if l.is_empty() {
                return bad("sum(): cannot sum an empty list");
            }
            let mut total = num(&l[0], "each item")?;
            for v in &l[1..] {
                if *v == Value::Null {
                    return bad("sum(): the list holds null");
                }
                let n = num(v, "each item")?;
                total = total
                    .add(&n)
                    .map_err(|e| FnError::Bad(format!("sum(): {e}")))?;
            }
            Ok(Value::Number(total))
        }
        "one" => {
            arity(name, a, 1, 1)?;
            match list(&a[0], "the argument")?.as_slice() {
                [] => Ok(Value::Null),
                [v] => Ok(v.clone()),
                l => bad(format!(
                    "one(): the list has {} items; it must have zero or one",
                    l.len()
                )),
            }
        }
        "strcontains" => {
            arity(name, a, 2, 2)?;
            let s = string(&a[0], "the string")?;
            let sub = string(&a[1], "the substring")?;
            Ok(Value::Bool(s.contains(&sub)))
        }
        "strrev" => {
            arity(name, a, 1, 1)?;
            let s = string(&a[0], "the argument")?;
            let mut g: Vec<&str> =
                unicode_segmentation::UnicodeSegmentation::graphemes(s.as_str(), true).collect();
            g.reverse();
            Ok(Value::String(g.concat()))
        }
        "indent" => {
            arity(name, a, 2, 2)?;
            let n = int(&a[0], "the number of spaces")?;
            if !(0..=1000).contains(&n) {
                return bad("indent(): the number of spaces must be a whole number from 0 to 1000");
            }
            let s = string(&a[1], "the string")?;
            let pad = " ".repeat(n as usize);
            Ok(Value::String(s.replace('\n', &format!("\n{pad}"))))
        }
        "chunklist" => {
            arity(name, a, 2, 2)?;
            let l = list(&a[0], "the list")?;
            let n = int(&a[1], "the chunk size")?;
            if n < 0 {
                return bad("chunklist(): the size must be a whole number from 0");
            }
            if n == 0 {
                return Ok(Value::List(vec![Value::List(l.clone())]));
            }
            Ok(Value::List(
                l.chunks(n as usize)
                    .map(|c| Value::List(c.to_vec()))
                    .collect(),
            ))
        }
        "setunion" | "setintersection" | "setsubtract" => {
            arity(
                name,
                a,
                if name == "setsubtract" { 2 } else { 1 },
                if name == "setsubtract" { 2 } else { usize::MAX },
            )?;
            let sets: Vec<Vec<Value>> = a
                .iter()
                .map(|v| list(v, "each argument").map(|l| set_of(l.clone())))
                .collect::<Result<_, _>>()?;
            let all: Vec<&Value> = sets.iter().flatten().collect();
            if super::value::unify(&all).is_none() {
                return bad(format!(
                    "{name}(): given sets must all have compatible element types"
                ));
            }
            let mut out = sets[0].clone();
            for s in &sets[1..] {
                match name {
                    "setunion" => out.extend(s.iter().cloned()),
                    // Membership is set identity (`-0` is not `0`).
                    "setintersection" => out.retain(|v| s.iter().any(|w| same_element(v, w))),
                    _ => out.retain(|v| !s.iter().any(|w| same_element(v, w))),
                }
            }
            Ok(Value::Set(set_of(out)))
        }
        _ if TERRAFORM_ONLY.contains(&name) => Err(FnError::Unsupported),
        _ => Err(FnError::Unknown),
    }
}

/// Items converted to the one type go-cty unifies them to, as its
/// collection conversions (`tolist`, `toset`, `tomap`, `distinct`) do:
/// `[1, "x"]` becomes `["1", "x"]`.
fn unified(name: &str, items: Vec<Value>) -> Result<Vec<Value>, FnError> {
    let refs: Vec<&Value> = items.iter().collect();
    let Some(ty) = super::value::unify(&refs) else {
        // go-cty's words; a number and a bool only unify beside a string.
        let kind = match name {
            "toset" => "set",
            "tomap" => "map",
            _ => "list",
        };
        return bad(format!(
            "{name}(): all {kind} elements must have the same type (a collection holds items of one type, and no one type fits them all: a number and a bool convert only to a string, a list never to a number; use tostring() where strings are meant)"
        ));
    };
    items
        .into_iter()
        .map(|v| ty.convert(v))
        .collect::<Result<_, _>>()
        .or_else(|found| bad(format!("{name}(): cannot convert {found} to {ty}")))
}

fn group(caps: &regex::Captures, i: usize) -> Value {
    match caps.get(i) {
        Some(m) => Value::String(m.as_str().to_string()),
        None => Value::Null,
    }
}

fn regex(p: &str) -> Result<regex::Regex, FnError> {
    regex::Regex::new(p).or_else(|e| bad(format!("invalid regular expression: {e}")))
}

/// Read a file named relative to the configuration directory; paths that
/// leave it (absolute, or through `..`) are refused, so a configuration
/// cannot read the machine's other files into a plan.
pub(crate) fn read_config_file(dir: &Path, p: &str) -> Result<String, String> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let rel = Path::new(p);
    let mut norm = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(x) => norm.push(x),
            Component::CurDir => {}
            Component::ParentDir if norm.pop() => {}
            _ => {
                return Err(format!(
                    "{p:?} is outside the configuration directory; file() and templatefile() read only files inside it"
                ));
            }
        }
    }
    let full = dir.join(&norm);
    // A symlink inside may still point outside.
    let (Ok(real), Ok(root)) = (full.canonicalize(), dir.canonicalize()) else {
        return Err(format!(
            "cannot read {p:?}: no such file in {}",
            super::display_path(dir)
        ));
    };
    if !real.starts_with(&root) {
        return Err(format!(
            "{p:?} leads outside the configuration directory (through a symbolic link)"
        ));
    }
    if !real.is_file() {
        return Err(format!("{p:?} is not a regular file"));
    }
    let bytes = std::fs::read(&real).map_err(|e| format!("cannot read {p:?}: {e}"))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("{p:?} is not UTF-8 text; file() reads text files only"))?;
    Ok(text)
}

/// JSON as Terraform's jsonencode writes it: compact, keys sorted, `<`,
/// `>` and `&` escaped as Go's encoder does, numbers written out in full
/// without an exponent (`100000000000000000000`, `0.000001`).
pub fn json_encode(v: &Value) -> String {
    let mut out = String::new();
    json_write(v, &mut out);
    out
}

fn json_write(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_text()),
        Value::String(s) => out.push_str(&json_string(s)),
        Value::Ref(r) => out.push_str(&json_string(&r.to_string())),
        Value::List(l) | Value::Set(l) => {
            out.push('[');
            for (i, x) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_write(x, out);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&json_string(k));
                out.push(':');
                json_write(x, out);
            }
            out.push('}');
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// Parse JSON as go-cty's jsondecode does: an object with a key twice is
/// an error (`duplicate "a" property in JSON object`), and numbers are
/// read from their text at 512 bits (`cty.ParseNumberVal`), not as f64.
pub(crate) fn json_decode(s: &str) -> Result<Value, String> {
    use serde::de::Deserializer;
    // serde_json would read numbers as f64: each valid number token is
    // parsed here and replaced by `0` padded with spaces (so positions in
    // error messages stay right); the visitor takes them back in order.
    let (text, numbers) = json_numbers(s)?;
    let queue = std::cell::RefCell::new(numbers.into_iter());
    let mut de = serde_json::Deserializer::from_str(&text);
    let parsed = de
        .deserialize_any(JsonVisitor(&queue))
        .and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| format!("not valid JSON: {e}"))
}

/// The JSON text with every valid number token (outside strings) blanked
/// to `0`, and those numbers in document order.
fn json_numbers(s: &str) -> Result<(String, Vec<Number>), String> {
    let b = s.as_bytes();
    let mut out = s.to_string().into_bytes();
    let mut nums = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            c if c == b'-' || c.is_ascii_digit() => {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_digit() || matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    i += 1;
                }
                let tok = &s[start..i];
                if json_number_token(tok) {
                    nums.push(super::value::parse_literal(tok).map_err(|e| e.to_string())?);
                    out[start] = b'0';
                    for o in &mut out[start + 1..i] {
                        *o = b' ';
                    }
                }
            }
            _ => i += 1,
        }
    }
    Ok((String::from_utf8(out).unwrap_or_default(), nums))
}

/// JSON's number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn json_number_token(t: &str) -> bool {
    let b = t.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - s
    };
    let start = i;
    let n = digits(&mut i);
    if n == 0 || (n > 1 && b[start] == b'0') {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

type Numbers<'q> = std::cell::RefCell<std::vec::IntoIter<Number>>;

struct JsonVisitor<'q>(&'q Numbers<'q>);

impl<'de> serde::de::Visitor<'de> for JsonVisitor<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Value, E> {
        self.number()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Value, E> {
        self.number()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Value, E> {
        self.number()
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(super::value::nfc(s)))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut l = Vec::new();
        while let Some(v) = seq.next_element_seed(JsonSeed(self.0))? {
            l.push(v);
        }
        Ok(Value::List(l))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = BTreeMap::new();
        while let Some(k) = map.next_key::<String>()? {
            let k = super::value::nfc(&k);
            let v = map.next_value_seed(JsonSeed(self.0))?;
            if m.contains_key(&k) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate {k:?} property in JSON object"
                )));
            }
            m.insert(k, v);
        }
        Ok(Value::Map(m))
    }
}

impl JsonVisitor<'_> {
    fn number<E: serde::de::Error>(&self) -> Result<Value, E> {
        match self.0.borrow_mut().next() {
            Some(n) => Ok(Value::Number(n)),
            None => Err(E::custom("a number could not be read")),
        }
    }
}

struct JsonSeed<'q>(&'q Numbers<'q>);

impl<'de> serde::de::DeserializeSeed<'de> for JsonSeed<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(JsonVisitor(self.0))
    }
}

/// Terraform's `format`: Go-style verbs `%v %#v %t %d %b %o %x %X %e %E %f
/// %g %G %s %q %%`, flags `-+ 0#`, width, precision and `%[N]` argument
/// indexes; too many or too few arguments are errors.
pub(crate) fn format(fmt: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let chars: Vec<char> = fmt.chars().collect();
    let mut i = 0;
    let mut next = 0usize;
    let mut used = vec![false; args.len()];
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if c != '%' {
            out.push(c);
            continue;
        }
        let start = i;
        let mut flags = Flags::default();
        while i < chars.len() {
            match chars[i] {
                '-' => flags.minus = true,
                '+' => flags.plus = true,
                ' ' => flags.space = true,
                '0' => flags.zero = true,
                '#' => flags.sharp = true,
                _ => break,
            }
            i += 1;
        }
        let Flags {
            minus, zero, sharp, ..
        } = flags;
        let read_num = |i: &mut usize| -> Option<usize> {
            let start = *i;
            while *i < chars.len() && chars[*i].is_ascii_digit() {
                *i += 1;
            }
            (start != *i).then(|| {
                chars[start..*i]
                    .iter()
                    .collect::<String>()
                    .parse()
                    .unwrap_or(0)
            })
        };
        if i < chars.len() && chars[i] == '[' {
            i += 1;
            let n = read_num(&mut i).ok_or("%[ needs an argument number")?;
            if i >= chars.len() || chars[i] != ']' || n == 0 {
                return Err("invalid %[N] argument index".into());
            }
            i += 1;
            next = n - 1;
        }
        let width = read_num(&mut i);
        let mut prec = None;
        if i < chars.len() && chars[i] == '.' {
            i += 1;
            prec = Some(read_num(&mut i).unwrap_or(0));
        }
        // A configuration must not be able to ask for gigabytes of padding.
        if width.unwrap_or(0) > 1000 || prec.unwrap_or(0) > 1000 {
            return Err("a width or precision above 1000 is not supported".into());
        }
        let verb = *chars
            .get(i)
            .ok_or("the format ends with an unfinished % verb")?;
        i += 1;
        if verb == '%' {
            // go-cty takes `%%` only as written: a flag, width, precision
            // or index before it makes `%` an unrecognized character.
            if i - 1 != start {
                let offset: usize = chars[..i - 1].iter().map(|c| c.len_utf8()).sum();
                return Err(format!(
                    "unrecognized format character '%' at offset {offset} (write %% alone for a percent sign)"
                ));
            }
            out.push('%');
            continue;
        }
        // A verb is a letter; anything else is not part of a verb at all.
        if !verb.is_ascii_alphabetic() {
            let offset: usize = chars[..i - 1].iter().map(|c| c.len_utf8()).sum();
            return Err(format!(
                "unrecognized format character '{verb}' at offset {offset} (write %% for a percent sign)"
            ));
        }
        let arg = args.get(next).ok_or_else(|| {
            format!(
                "not enough arguments for the format: %{verb} needs argument {}",
                next + 1
            )
        })?;
        used[next] = true;
        next += 1;
        let number = |v: &Value| match Type::Number.convert(v.clone()) {
            Ok(Value::Number(n)) => Ok(n),
            Err(why) if matches!(v, Value::String(_)) => {
                Err(format!("%{verb} needs a number, found {why}"))
            }
            _ => Err(format!("%{verb} needs a number, found {}", v.type_name())),
        };
        let text = match verb {
            'v' if sharp => super::funcs::json_encode(arg),
            'v' => match arg {
                Value::Null => "null".into(),
                Value::Number(n) => n.text('g', -1),
                Value::List(_) | Value::Map(_) => super::funcs::json_encode(arg),
                v => v.to_template_string().unwrap_or_default(),
            },
            's' => match Type::String.convert(arg.clone()) {
                Ok(Value::String(s)) => match prec {
                    Some(p) if p > 0 => take_graphemes(&s, p),
                    _ => s,
                },
                _ => return Err(format!("%s needs a string, found {}", arg.type_name())),
            },
            'q' => match Type::String.convert(arg.clone()) {
                Ok(Value::String(s)) => {
                    let s = match prec {
                        Some(p) if p > 0 => take_graphemes(&s, p),
                        _ => s,
                    };
                    json_string(&s)
                }
                _ => return Err(format!("%q needs a string, found {}", arg.type_name())),
            },
            't' => match Type::Bool.convert(arg.clone()) {
                Ok(Value::Bool(b)) => b.to_string(),
                _ => return Err(format!("%t needs a bool, found {}", arg.type_name())),
            },
            // Numbers are formatted by Go's big.Int / big.Float Format,
            // which do their own padding (go-cty hands them the verb).
            'd' | 'b' | 'o' | 'x' | 'X' => {
                let n = number(arg)?;
                let (i, acc) = n.trunc();
                if acc != std::cmp::Ordering::Equal {
                    return Err(format!("%{verb} needs a whole number, found {n}"));
                }
                out.push_str(&go_format_int(&i, verb, &flags, width, prec));
                continue;
            }
            // Not `%F`: go-cty does not take it.
            'e' | 'E' | 'f' | 'g' | 'G' => {
                let n = number(arg)?;
                out.push_str(&n.go_format(verb, &flags, width, prec));
                continue;
            }
            // go-cty's words: the verb as written and the offset of its `%`.
            _ => {
                let text: String = chars[start - 1..i].iter().collect();
                let offset: usize = chars[..start - 1].iter().map(|c| c.len_utf8()).sum();
                return Err(format!(
                    "unsupported format verb '{verb}' in {text:?} at offset {offset} (the verbs are %v %t %d %b %o %x %X %e %E %f %g %G %s %q)"
                ));
            }
        };
        // go-cty writes %t without padding.
        if verb == 't' {
            out.push_str(&text);
            continue;
        }
        // go-cty's formatPadWidth: width counts grapheme clusters; the pad
        // is zeros with the `0` flag (on either side), else spaces.
        let len = graphemes(&text);
        let pad = width.unwrap_or(0).saturating_sub(len);
        let fill: String = std::iter::repeat_n(if zero { '0' } else { ' ' }, pad).collect();
        if minus {
            out.push_str(&text);
            out.push_str(&fill);
        } else {
            out.push_str(&fill);
            out.push_str(&text);
        }
    }
    // As go-cty: arguments past the highest one a verb used are too many
    // (`%[2]s` may skip the first).
    let highest = used.iter().rposition(|u| *u).map_or(0, |i| i + 1);
    if highest < args.len() {
        return Err(if highest == 0 {
            "too many arguments; no verbs in the format".to_string()
        } else {
            format!("too many arguments; only {highest} used by the format")
        });
    }
    Ok(out)
}

fn take_graphemes(s: &str, n: usize) -> String {
    unicode_segmentation::UnicodeSegmentation::graphemes(s, true)
        .take(n)
        .collect()
}
