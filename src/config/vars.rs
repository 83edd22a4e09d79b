//! Input variables: declarations and their values from, lowest to highest
//! precedence, the default, `STANDBY_VAR_NAME`, `standby.vars.hcl`, each
//! `--var-file`, and `--var NAME=VALUE`.

use super::diag::{Diagnostic, Diagnostics, Loc, Source, did_you_mean};
use super::eval::{Empty, Out, VarValue};
use super::value::{Type, Value};
use super::{VarInputs, parse};
use hcl_edit::Span;
use hcl_edit::expr::Expression;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// One `variable "NAME" { ... }` block, read but not yet given a value.
pub struct Declared {
    pub name: String,
    pub label: Loc,
    pub ty: Type,
    pub default: Option<(Expression, Arc<Source>)>,
    pub description: Option<String>,
    pub sensitive: bool,
    /// How a value from `--var` or `STANDBY_VAR_*` is read, as Terraform's
    /// `VariableParsingMode`: true (no type, or a primitive type) takes the
    /// text as a literal string; false (`any` and every collection or
    /// structural type) parses it as an HCL expression.
    pub literal: bool,
}

/// Parse a type expression: `string`, `list(string)`, `map(number)`,
/// `set(T)`, `object({ a = T, b = optional(T, DEFAULT) })`, `tuple([T, ...])`.
pub fn parse_type(e: &Expression, source: &Arc<Source>, diags: &mut Diagnostics) -> Option<Type> {
    parse_type_in(e, source, diags, false).map(|(t, _)| t)
}

/// `in_object`: `optional(...)` is allowed (as an attribute's type); the
/// result says whether it was optional and its default.
fn parse_type_in(
    e: &Expression,
    source: &Arc<Source>,
    diags: &mut Diagnostics,
    in_object: bool,
) -> Option<(Type, Option<Option<Value>>)> {
    let simple = |name: &str| match name {
        "string" => Some(Type::String),
        "number" => Some(Type::Number),
        "bool" => Some(Type::Bool),
        "any" => Some(Type::Any),
        _ => None,
    };
    let fail = |diags: &mut Diagnostics, e: &Expression| {
        diags.push(
            Diagnostic::error(
                "standby::wrong_type",
                Loc::new(source, e.span()),
                "not a type",
            )
            .label("expected a type")
            .help("write one of: string, number, bool, any, list(TYPE), set(TYPE), map(TYPE), object({NAME = TYPE, ...}), tuple([TYPE, ...]); optional(TYPE) inside object({...})"),
        );
        None
    };
    let found = match e {
        Expression::Variable(v) => simple(v.as_str()),
        Expression::FuncCall(f) => {
            let args: Vec<&Expression> = f.args.iter().collect();
            match (f.name.name.as_str(), args.as_slice()) {
                ("list", [inner]) => {
                    parse_type(inner, source, diags).map(|t| Type::List(Box::new(t)))
                }
                ("set", [inner]) => {
                    parse_type(inner, source, diags).map(|t| Type::Set(Box::new(t)))
                }
                ("map", [inner]) => {
                    parse_type(inner, source, diags).map(|t| Type::Map(Box::new(t)))
                }
                ("object", [Expression::Object(o)]) => {
                    let mut attrs = std::collections::BTreeMap::new();
                    for (k, v) in o.iter() {
                        let name = match k {
                            hcl_edit::expr::ObjectKey::Ident(id) => id.as_str().to_string(),
                            hcl_edit::expr::ObjectKey::Expression(Expression::String(s)) => {
                                s.to_string()
                            }
                            hcl_edit::expr::ObjectKey::Expression(ke) => return fail(diags, ke),
                        };
                        let (ty, opt) = parse_type_in(v.expr(), source, diags, true)?;
                        attrs.insert(
                            name,
                            super::value::Attr {
                                ty,
                                optional: opt.is_some(),
                                default: opt.flatten(),
                            },
                        );
                    }
                    Some(Type::Object(attrs))
                }
                ("tuple", [Expression::Array(a)]) => {
                    let mut ts = Vec::new();
                    for t in a.iter() {
                        ts.push(parse_type(t, source, diags)?);
                    }
                    Some(Type::Tuple(ts))
                }
                ("optional", [inner, rest @ ..]) if in_object && rest.len() <= 1 => {
                    let ty = parse_type(inner, source, diags)?;
                    let default = match rest.first() {
                        Some(d) => {
                            let v = eval_const(d, source, diags)?;
                            match ty.convert(v) {
                                Ok(v) => Some(v),
                                Err(found) => {
                                    diags.push(
                                        Diagnostic::error(
                                            "standby::wrong_type",
                                            Loc::new(source, d.span()),
                                            format!("the default does not fit the attribute's type {ty}: found {found}"),
                                        )
                                        .label("wrong default")
                                        .help(format!("give a default of type {ty}")),
                                    );
                                    return None;
                                }
                            }
                        }
                        None => None,
                    };
                    return Some((ty, Some(default)));
                }
                _ => None,
            }
        }
        _ => None,
    };
    match found {
        Some(t) => Some((t, None)),
        None => fail(diags, e),
    }
}

/// Evaluate an expression that may not refer to anything (a default or a
/// value from a variables file).
fn eval_const(e: &Expression, source: &Arc<Source>, diags: &mut Diagnostics) -> Option<Value> {
    let empty = Empty::default();
    let scope = empty.scope(source);
    let mut scratch = Diagnostics::default();
    let mut out = Out {
        diags: &mut scratch,
        sensitive: false,
    };
    let v = scope.eval(e, &mut out).ok();
    // Nothing is in scope here, so any reference is a misplaced one.
    for d in scratch.items {
        diags.push(if d.code == "standby::unknown_reference" {
            Diagnostic::error(
                "standby::not_constant",
                d.loc,
                "a variable's value cannot refer to other values",
            )
            .label("reference")
            .help("write a literal value here; combine variables in a `locals` block instead")
        } else {
            d
        });
    }
    v
}

fn convert(d: &Declared, v: Value, loc: Loc, diags: &mut Diagnostics) -> Option<Value> {
    match d.ty.convert(v) {
        Ok(v) => Some(v),
        Err(found) => {
            diags.push(
                Diagnostic::error(
                    "standby::wrong_type",
                    loc,
                    format!(
                        "wrong type for variable `{}`: expected {}, found {found}",
                        d.name, d.ty
                    ),
                )
                .label(format!("expected {}", d.ty))
                .help(format!(
                    "variable `{}` is declared at {} with type {}",
                    d.name,
                    d.label.position(),
                    d.ty
                )),
            );
            None
        }
    }
}

/// Read `name = value` lines from a variables file into `values`.
fn read_file(
    source: &Arc<Source>,
    declared: &HashMap<&str, &Declared>,
    values: &mut HashMap<String, Value>,
    diags: &mut Diagnostics,
) {
    let Some(body) = parse::parse(source, diags) else {
        return;
    };
    for s in body.iter() {
        if let Some(b) = s.as_block() {
            diags.push(
                Diagnostic::error(
                    "standby::unexpected_block",
                    Loc::new(source, b.ident.span()),
                    "a variables file holds only `name = value` lines",
                )
                .label("block")
                .help("declare variables in a *.hcl configuration file; set their values here"),
            );
            continue;
        }
        let Some(a) = s.as_attribute() else { continue };
        let name = a.key.as_str();
        let Some(d) = declared.get(name) else {
            unknown_variable(name, Loc::new(source, a.key.span()), declared, diags);
            continue;
        };
        let mut scratch = Diagnostics::default();
        let sink = if d.sensitive {
            &mut scratch
        } else {
            &mut *diags
        };
        if let Some(v) = eval_const(&a.value, source, sink)
            && let Some(v) = convert(d, v, Loc::new(source, a.value.span()), sink)
        {
            values.insert(name.to_string(), v);
        }
        if scratch.has_errors() {
            let (line, _) = source.line_col(a.key.span().map_or(0, |s| s.start));
            hidden_value_error(d, &format!("{} line {line}", source.name), diags);
        }
    }
}

/// Read a JSON variables file (`{"name": value, ...}`, as Terraform's
/// `.tfvars.json`) into `values`. Keys twice are errors and numbers read at
/// 512 bits, as in `jsondecode`.
fn read_json_file(
    source: &Arc<Source>,
    declared: &HashMap<&str, &Declared>,
    values: &mut HashMap<String, Value>,
    diags: &mut Diagnostics,
) {
    // A JSON file is often one line: a snippet of it would show every
    // value, so with a sensitive variable declared, messages name the file
    // and key without quoting it.
    let hide = declared.values().any(|d| d.sensitive);
    let blank = Source::new(source.name.clone(), "");
    let at = |span: Option<std::ops::Range<usize>>| {
        if hide {
            Loc::new(&blank, None)
        } else {
            Loc::new(source, span)
        }
    };
    let whole = at(Some(0..source.text.trim_end().len()));
    let obj = match super::funcs::json_decode(&source.text) {
        Ok(Value::Map(m)) => m,
        Ok(other) => {
            diags.push(
                Diagnostic::error(
                    "standby::wrong_type",
                    whole,
                    format!(
                        "a JSON variables file holds one object, found {}",
                        other.type_name()
                    ),
                )
                .label("not an object")
                .help("write {\"name\": value, ...}"),
            );
            return;
        }
        Err(e) => {
            // The message may quote the file's text: only the file is named
            // when it sets a sensitive variable.
            let msg = if hide {
                "the file is not valid JSON (details hidden: it may set a sensitive variable)"
                    .to_string()
            } else {
                e
            };
            diags.push(
                Diagnostic::error("standby::syntax", whole, msg)
                    .label("in this file")
                    .help("a JSON variables file is one object: {\"name\": value, ...}"),
            );
            return;
        }
    };
    for (name, v) in obj {
        // The key as written, for the position of messages about it.
        let span = source
            .text
            .find(&format!("\"{name}\""))
            .map(|i| i..i + name.len() + 2);
        let loc = at(span);
        let Some(d) = declared.get(name.as_str()) else {
            unknown_variable(&name, loc, declared, diags);
            continue;
        };
        let mut scratch = Diagnostics::default();
        let sink = if d.sensitive {
            &mut scratch
        } else {
            &mut *diags
        };
        if let Some(v) = convert(d, v, loc, sink) {
            values.insert(name.clone(), v);
        }
        if scratch.has_errors() {
            hidden_value_error(d, &source.name, diags);
        }
    }
}

fn unknown_variable(
    name: &str,
    loc: Loc,
    declared: &HashMap<&str, &Declared>,
    diags: &mut Diagnostics,
) {
    let help = match did_you_mean(name, declared.keys().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("declare it first: variable \"{name}\" {{}}"),
    };
    diags.push(
        Diagnostic::error(
            "standby::unknown_variable",
            loc,
            format!("a value is set for `{name}`, but no variable of that name is declared"),
        )
        .label("not declared")
        .help(help),
    );
}

/// Like [`from_text_raw`], but a sensitive value never reaches a message:
/// its errors are replaced by one that shows no text.
fn from_text(d: &Declared, source: &Arc<Source>, diags: &mut Diagnostics) -> Option<Value> {
    if !d.sensitive {
        return from_text_raw(d, source, diags);
    }
    let mut scratch = Diagnostics::default();
    let v = from_text_raw(d, source, &mut scratch);
    if scratch.has_errors() {
        hidden_value_error(d, &source.name, diags);
    }
    v
}

/// A bad value of a sensitive variable, reported without showing it.
fn hidden_value_error(d: &Declared, from: &str, diags: &mut Diagnostics) {
    {
        let hidden = Source::new(from, "(sensitive)");
        diags.push(
            Diagnostic::error(
                "standby::wrong_type",
                Loc::new(&hidden, Some(0..hidden.text.len())),
                format!(
                    "the value of sensitive variable `{}` is not a valid {}",
                    d.name, d.ty
                ),
            )
            .label("value hidden")
            .help(format!(
                "variable `{}` is declared at {} with type {}",
                d.name,
                d.label.position(),
                d.ty
            )),
        );
    }
}

/// A value from the environment or the command line, read as Terraform
/// reads it: for a string (or a variable without a type) the text as is;
/// numbers and bools convert from the text; `any` and collection or
/// structural types parse it as an HCL expression (`--var 'a="web"'` is
/// `web`, `--var a=1.50` the number 1.5, `--var 'a=["x"]'` a tuple).
fn from_text_raw(d: &Declared, source: &Arc<Source>, diags: &mut Diagnostics) -> Option<Value> {
    match d.ty {
        Type::String => return Some(Value::String(super::value::nfc(&source.text))),
        // No type at all: a literal string, as Terraform reads it.
        Type::Any if d.literal => return Some(Value::String(super::value::nfc(&source.text))),
        // Scalars convert from the text itself, so `--var n=three` is a type error, not a reference.
        Type::Number | Type::Bool => {
            return convert(
                d,
                Value::String(source.text.clone()),
                Loc::new(source, Some(0..source.text.len())),
                diags,
            );
        }
        _ => {}
    }
    let e = match hcl_edit::parser::parse_expr(&source.text) {
        Ok(e) => e,
        Err(err) => {
            let at = err.location().offset();
            diags.push(
                Diagnostic::error("standby::syntax", Loc::new(source, Some(at..at + 1)), format!("cannot read the value of `{}`: {}", d.name, err.message()))
                    .label("here")
                    .help(format!("`{}` has type {}; write it in HCL syntax, e.g. [\"a\", \"b\"] or {{ k = \"v\" }}", d.name, d.ty)),
            );
            return None;
        }
    };
    let mut scratch = Diagnostics::default();
    let v = eval_const(&e, source, &mut scratch);
    for mut x in scratch.items {
        // A bare word is a reference in HCL: the user most likely meant a string.
        if x.code == "standby::not_constant" {
            x.help = Some(format!(
                "`{n}` has type {t}, so its value is read as an HCL expression (as Terraform reads -var and TF_VAR_*): quote a string, e.g. --var '{n}=\"web\"', or declare the variable with type = string",
                n = d.name,
                t = d.ty
            ));
        }
        diags.push(x);
    }
    convert(d, v?, Loc::new(source, Some(0..source.text.len())), diags)
}

/// Give every declared variable its value; report unknown and unset ones.
pub fn resolve(
    decls: &[Declared],
    dir: &Path,
    inputs: &VarInputs,
    diags: &mut Diagnostics,
) -> (
    HashMap<String, VarValue>,
    BTreeMap<String, crate::model::Variable>,
) {
    let declared: HashMap<&str, &Declared> = decls.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut values: HashMap<String, Value> = HashMap::new();
    for d in decls {
        if let Some((e, src)) = &d.default
            && let Some(v) = eval_const(e, src, diags)
            && let Some(v) = convert(d, v, Loc::new(src, e.span()), diags)
        {
            values.insert(d.name.clone(), v);
        }
    }
    for d in decls {
        let env = format!("STANDBY_VAR_{}", d.name);
        if let Ok(text) = std::env::var(&env) {
            let src = Source::new(format!("${env}"), text);
            if let Some(v) = from_text(d, &src, diags) {
                values.insert(d.name.clone(), v);
            }
        }
    }
    let mut files = Vec::new();
    let default_file = dir.join("standby.vars.hcl");
    if default_file.is_file() {
        files.push(default_file);
    }
    files.extend(inputs.files.iter().cloned());
    for f in files {
        let name = super::display_path(&f);
        match std::fs::read_to_string(&f) {
            // `*.json`: Terraform's `.tfvars.json` form, one object of values.
            Ok(text) if f.extension().is_some_and(|e| e == "json") => {
                read_json_file(&Source::new(name, text), &declared, &mut values, diags)
            }
            Ok(text) => read_file(&Source::new(name, text), &declared, &mut values, diags),
            Err(e) => diags.push(Diagnostic::unreadable(
                &name,
                format!("cannot read variables file {name}: {e}"),
                "check the path given to --var-file",
            )),
        }
    }
    for arg in &inputs.cli {
        let cmdline = Source::new("command line", format!("--var {arg}"));
        let Some((name, text)) = arg.split_once('=') else {
            diags.push(
                Diagnostic::error(
                    "standby::syntax",
                    Loc::new(&cmdline, Some(6..cmdline.text.len())),
                    format!("`--var {arg}` has no `=`"),
                )
                .label("expected NAME=VALUE")
                .help("write --var NAME=VALUE, e.g. --var region=westeurope"),
            );
            continue;
        };
        let Some(d) = declared.get(name) else {
            unknown_variable(
                name,
                Loc::new(&cmdline, Some(6..6 + name.len())),
                &declared,
                diags,
            );
            continue;
        };
        if let Some(v) = from_text(d, &Source::new(format!("--var {name}"), text), diags) {
            values.insert(name.to_string(), v);
        }
    }
    let mut resolved = HashMap::new();
    let mut model = BTreeMap::new();
    for d in decls {
        let Some(v) = values.remove(&d.name) else {
            if d.default.is_none() {
                diags.push(
                    Diagnostic::error("standby::unset_variable", d.label.clone(), format!("variable `{}` has no value", d.name))
                        .label("declared here without a default")
                        .help(format!(
                            "set it with `--var {n}=VALUE`, a line `{n} = VALUE` in standby.vars.hcl, or the environment variable STANDBY_VAR_{n}; or give it a default",
                            n = d.name
                        )),
                );
            }
            // Known to be missing or wrong: references to it are not reported again.
            resolved.insert(
                d.name.clone(),
                VarValue {
                    value: Value::Null,
                    sensitive: d.sensitive,
                    known: false,
                    ty: d.ty.clone(),
                },
            );
            continue;
        };
        model.insert(
            d.name.clone(),
            crate::model::Variable {
                name: d.name.clone(),
                description: d.description.clone(),
                sensitive: d.sensitive,
                value: v.to_json(),
            },
        );
        resolved.insert(
            d.name.clone(),
            VarValue {
                value: v,
                sensitive: d.sensitive,
                known: true,
                ty: d.ty.clone(),
            },
        );
    }
    (resolved, model)
}
