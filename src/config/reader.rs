//! Reading one block body against its schema: unknown or repeated
//! attributes and blocks, required attributes, and typed values with the
//! span of the expression they came from.

use super::diag::{Diagnostic, Diagnostics, Loc, Source, did_you_mean};
use super::eval::{Out, Scope};
use super::value::{Ref, Value};
use crate::model::{Duration, Kind, ParseDurationError};
use hcl_edit::Span;
use hcl_edit::expr::Expression;
use hcl_edit::structure::{Attribute, Block, Body};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// The span of a block's header: its type and labels.
pub fn header(source: &Arc<Source>, b: &Block) -> Loc {
    let start = b.ident.span().map_or(0, |s| s.start);
    let end = b
        .labels
        .last()
        .and_then(|l| l.span())
        .or_else(|| b.ident.span())
        .map_or(start, |s| s.end);
    Loc::new(source, Some(start..end))
}

/// `type "NAME"` as people write it in messages.
pub fn describe(b: &Block) -> String {
    let mut s = b.ident.to_string();
    for l in &b.labels {
        s.push_str(&format!(" {:?}", l.as_str()));
    }
    s
}

/// The single label of a block that needs one, checked to be a valid name.
pub fn one_label(
    source: &Arc<Source>,
    b: &Block,
    diags: &mut Diagnostics,
) -> Option<(String, Loc)> {
    let ident = b.ident.as_str();
    if b.labels.len() != 1 {
        diags.push(
            Diagnostic::error(
                "standby::wrong_labels",
                header(source, b),
                format!(
                    "a `{ident}` block needs exactly one name, found {}",
                    b.labels.len()
                ),
            )
            .label("needs one name")
            .help(format!("write it as {ident} \"NAME\" {{ ... }}")),
        );
        return None;
    }
    let label = &b.labels[0];
    let name = label.as_str().to_string();
    let loc = Loc::new(source, label.span());
    if !super::checks::plain_name(&name) {
        diags.push(
            Diagnostic::error(
                "standby::invalid_name",
                loc,
                format!("{name:?} is not a valid name"),
            )
            .label("invalid name")
            .help("names use letters, digits, '_' and '-' only (at most 128)"),
        );
        return None;
    }
    Some((name, loc))
}

pub struct Reader<'s, 'b> {
    pub scope: Scope<'s>,
    pub body: &'b Body,
    pub header: Loc,
    /// `machine "db"`, for messages.
    pub what: String,
    /// Attribute names whose value came from a sensitive variable.
    pub sensitive: BTreeSet<String>,
    prefix: String,
    attrs: HashMap<&'b str, &'b Attribute>,
    /// Names already suggested for a misspelt attribute or block, so their
    /// absence is not reported a second time.
    pub suggested: BTreeSet<String>,
}

impl<'s, 'b> Reader<'s, 'b> {
    /// Check `block` against the allowed attribute and block names.
    pub fn new(
        scope: Scope<'s>,
        block: &'b Block,
        allowed_attrs: &[&str],
        allowed_blocks: &[&str],
        diags: &mut Diagnostics,
    ) -> Reader<'s, 'b> {
        let source = scope.source.clone();
        let what = describe(block);
        let mut attrs: HashMap<&'b str, &'b Attribute> = HashMap::new();
        let mut suggested = BTreeSet::new();
        for a in block.body.attributes() {
            let key = a.key.as_str();
            let loc = Loc::new(&source, a.key.span());
            if !allowed_attrs.contains(&key) {
                let hint_block = allowed_blocks.contains(&key);
                let help = if hint_block {
                    format!("`{key}` is a block here: write {key} {{ ... }} without `=`")
                } else {
                    match did_you_mean(key, allowed_attrs.iter().copied()) {
                        Some(s) => {
                            suggested.insert(s.clone());
                            format!("did you mean `{s}`?")
                        }
                        None if allowed_attrs.is_empty() => {
                            format!("`{}` takes no attributes", block.ident.as_str())
                        }
                        None => format!(
                            "`{}` takes: {}",
                            block.ident.as_str(),
                            allowed_attrs.join(", ")
                        ),
                    }
                };
                diags.push(
                    Diagnostic::error(
                        "standby::unknown_attribute",
                        loc,
                        format!("unknown attribute `{key}` in {what}"),
                    )
                    .label("not expected here")
                    .help(help),
                );
                continue;
            }
            if let Some(first) = attrs.get(key) {
                diags.push(
                    Diagnostic::error(
                        "standby::duplicate_attribute",
                        loc,
                        format!("`{key}` is set twice in {what}"),
                    )
                    .label("second definition")
                    .help(format!(
                        "the first is at {}; keep one",
                        Loc::new(&source, first.key.span()).position()
                    )),
                );
                continue;
            }
            attrs.insert(key, a);
        }
        for b in block.body.blocks() {
            let ident = b.ident.as_str();
            if !allowed_blocks.contains(&ident) {
                let help = if allowed_attrs.contains(&ident) {
                    format!("`{ident}` is an attribute here: write {ident} = ...")
                } else {
                    match did_you_mean(ident, allowed_blocks.iter().copied()) {
                        Some(s) => {
                            suggested.insert(s.clone());
                            format!("did you mean `{s}`?")
                        }
                        None if allowed_blocks.is_empty() => {
                            format!("`{}` holds no blocks", block.ident.as_str())
                        }
                        None => format!(
                            "`{}` holds these blocks: {}",
                            block.ident.as_str(),
                            allowed_blocks.join(", ")
                        ),
                    }
                };
                diags.push(
                    Diagnostic::error(
                        "standby::unknown_block",
                        Loc::new(&source, b.ident.span()),
                        format!("unknown block `{ident}` in {what}"),
                    )
                    .label("not expected here")
                    .help(help),
                );
            }
        }
        Reader {
            header: header(&source, block),
            scope,
            body: &block.body,
            what,
            sensitive: BTreeSet::new(),
            prefix: String::new(),
            attrs,
            suggested,
        }
    }

    /// A reader for a nested block; sensitive names get `prefix.`.
    pub fn nested(
        &self,
        block: &'b Block,
        prefix: &str,
        allowed_attrs: &[&str],
        allowed_blocks: &[&str],
        diags: &mut Diagnostics,
    ) -> Reader<'s, 'b> {
        let mut r = Reader::new(
            self.scope.clone(),
            block,
            allowed_attrs,
            allowed_blocks,
            diags,
        );
        r.what = format!("{} in {}", r.what, self.what);
        r.prefix = format!("{}{prefix}.", self.prefix);
        r
    }

    pub fn source(&self) -> &Arc<Source> {
        self.scope.source
    }

    pub fn has(&self, name: &str) -> bool {
        self.attrs.contains_key(name)
    }

    pub fn key_loc(&self, name: &str) -> Option<Loc> {
        self.attrs
            .get(name)
            .map(|a| Loc::new(self.source(), a.key.span()))
    }

    /// Where an attribute's value is written.
    pub fn value_loc(&self, name: &str) -> Option<Loc> {
        self.attrs
            .get(name)
            .map(|a| Loc::new(self.source(), a.value.span()))
    }

    pub fn expr(&self, name: &str) -> Option<&'b Expression> {
        self.attrs.get(name).map(|a| &a.value)
    }

    pub fn blocks(&self, ident: &'b str) -> impl Iterator<Item = &'b Block> + 'b {
        self.body
            .blocks()
            .filter(move |b| b.ident.as_str() == ident)
    }

    /// At most one block of this type; a second is reported.
    pub fn single_block(&self, ident: &'b str, diags: &mut Diagnostics) -> Option<&'b Block> {
        let mut it = self.blocks(ident);
        let first = it.next();
        for extra in it {
            diags.push(
                Diagnostic::error(
                    "standby::duplicate_block",
                    Loc::new(self.source(), extra.ident.span()),
                    format!("more than one `{ident}` block in {}", self.what),
                )
                .label("second block")
                .help(format!(
                    "a {} takes one `{ident}` block; merge them",
                    self.what
                )),
            );
        }
        first
    }

    /// Evaluate an attribute that is present.
    pub fn eval_expr(
        &mut self,
        name: &str,
        e: &Expression,
        diags: &mut Diagnostics,
    ) -> Option<(Value, Loc)> {
        let mut out = Out {
            diags,
            sensitive: false,
        };
        let v = self.scope.eval(e, &mut out).ok()?;
        if out.sensitive {
            self.sensitive.insert(format!("{}{name}", self.prefix));
        }
        Some((v, Loc::new(self.source(), e.span())))
    }

    pub fn optional(&mut self, name: &str, diags: &mut Diagnostics) -> Option<(Value, Loc)> {
        let e = self.expr(name)?;
        self.eval_expr(name, e, diags)
    }

    pub fn required(&mut self, name: &str, diags: &mut Diagnostics) -> Option<(Value, Loc)> {
        if !self.has(name) {
            self.missing(name, diags);
            return None;
        }
        self.optional(name, diags)
    }

    pub fn missing(&self, name: &str, diags: &mut Diagnostics) {
        if self.suggested.contains(name) {
            return;
        }
        diags.push(
            Diagnostic::error(
                "standby::missing_attribute",
                self.header.clone(),
                format!("{} is missing the required attribute `{name}`", self.what),
            )
            .label(format!("needs `{name}`"))
            .help(format!("add `{name} = ...` inside this block")),
        );
    }

    pub fn string(
        &mut self,
        name: &str,
        required: bool,
        diags: &mut Diagnostics,
    ) -> Option<String> {
        let (v, loc) = if required {
            self.required(name, diags)?
        } else {
            self.optional(name, diags)?
        };
        want_string(v, &loc, name, diags)
    }

    pub fn duration(
        &mut self,
        name: &str,
        required: bool,
        diags: &mut Diagnostics,
    ) -> Option<Duration> {
        let (v, loc) = if required {
            self.required(name, diags)?
        } else {
            self.optional(name, diags)?
        };
        let hide = self.sensitive.contains(&format!("{}{name}", self.prefix));
        want_duration(v, &loc, name, hide, diags)
    }

    /// The duration, or `default` seconds when the attribute is absent;
    /// None (reported) when it is present but wrong.
    pub fn duration_or(
        &mut self,
        name: &str,
        default: u64,
        diags: &mut Diagnostics,
    ) -> Option<Duration> {
        if !self.has(name) {
            return Some(Duration::from_secs(default));
        }
        self.duration(name, false, diags)
    }

    pub fn argv(
        &mut self,
        name: &str,
        required: bool,
        diags: &mut Diagnostics,
    ) -> Option<Vec<String>> {
        let (v, loc) = if required {
            self.required(name, diags)?
        } else {
            self.optional(name, diags)?
        };
        want_argv(v, &loc, name, diags)
    }

    pub fn bool_or(&mut self, name: &str, default: bool, diags: &mut Diagnostics) -> Option<bool> {
        let Some((v, loc)) = self.optional(name, diags) else {
            return if self.has(name) { None } else { Some(default) };
        };
        match v {
            Value::Bool(b) => Some(b),
            other => {
                wrong_type(&loc, name, "a bool (true or false)", &other, diags);
                None
            }
        }
    }

    pub fn number(&mut self, name: &str, diags: &mut Diagnostics) -> Option<(f64, Loc)> {
        let (v, loc) = self.optional(name, diags)?;
        match v {
            Value::Number(n) => Some((n, loc)),
            other => {
                wrong_type(&loc, name, "a number", &other, diags);
                None
            }
        }
    }

    /// A reference to a block of `kind`, as (name, key, loc).
    pub fn reference(
        &mut self,
        name: &str,
        kind: Kind,
        diags: &mut Diagnostics,
    ) -> Option<(String, Option<String>, Loc)> {
        let (v, loc) = self.required(name, diags)?;
        let (n, k) = want_ref(v, &loc, name, kind, diags)?;
        Some((n, k, loc))
    }

    /// Items of a list attribute, each with its own span when the list is
    /// written literally.
    pub fn list_items(&mut self, name: &str, diags: &mut Diagnostics) -> Option<Vec<(Value, Loc)>> {
        let e = self.expr(name)?;
        if let Expression::Array(a) = e {
            let mut items = Vec::new();
            let mut ok = true;
            for item in a.iter() {
                match self.eval_expr(name, item, diags) {
                    Some(x) => items.push(x),
                    None => ok = false,
                }
            }
            return ok.then_some(items);
        }
        let (v, loc) = self.eval_expr(name, e, diags)?;
        match v {
            Value::List(l) => Some(l.into_iter().map(|v| (v, loc.clone())).collect()),
            other => {
                wrong_type(&loc, name, "a list", &other, diags);
                None
            }
        }
    }
}

pub fn wrong_type(loc: &Loc, attr: &str, expected: &str, found: &Value, diags: &mut Diagnostics) {
    let mut d = Diagnostic::error(
        "standby::wrong_type",
        loc.clone(),
        format!(
            "wrong type for `{attr}`: expected {expected}, found {}",
            found.type_name()
        ),
    )
    .label(format!("this is {}", found.type_name()));
    if let (Value::String(s), true) = (found, expected.starts_with("a reference")) {
        d = d.help(format!("references are written without quotes: {s}"));
    } else if let (Value::Ref(r), true) = (found, expected.starts_with("a list")) {
        d = d.help(format!("write a list in brackets: {attr} = [{r}]"));
    } else if expected.starts_with("a list") {
        d = d.help(format!("write a list in brackets: {attr} = [\"...\"]"));
    } else if let (Value::Ref(_), Some(kind)) = (found, expected.strip_prefix("a reference to a "))
    {
        let kind = kind.split(' ').next().unwrap_or(kind);
        d = d.help(format!("`{attr}` names a {kind}: write {kind}.NAME"));
    } else if let Value::Ref(_) = found {
        d = d.help(format!(
            "`{attr}` takes {expected}, not a reference to a block"
        ));
    } else if expected == "a string" && matches!(found, Value::Number(_) | Value::Bool(_)) {
        d = d.help(format!("put the value in quotes: {attr} = \"...\""));
    } else {
        d = d.help(format!("`{attr}` takes {expected}"));
    }
    diags.push(d);
}

pub fn want_string(v: Value, loc: &Loc, attr: &str, diags: &mut Diagnostics) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        other => {
            wrong_type(loc, attr, "a string", &other, diags);
            None
        }
    }
}

pub fn want_duration(
    v: Value,
    loc: &Loc,
    attr: &str,
    hide: bool,
    diags: &mut Diagnostics,
) -> Option<Duration> {
    let s = want_string(v, loc, attr, diags)?;
    match s.parse::<Duration>() {
        Ok(d) => super::checks::duration(attr, d, loc, diags),
        Err(e) => {
            let message = if hide {
                format!(
                    "`{attr}` is not a duration: the value (from a sensitive variable): {}",
                    e.reason
                )
            } else {
                format!("`{attr}` is not a duration: {:?}: {}", e.input, e.reason)
            };
            diags.push(
                Diagnostic::error("standby::bad_duration", loc.clone(), message)
                    .label("not a duration")
                    .help(ParseDurationError::HINT),
            );
            None
        }
    }
}

pub fn want_argv(v: Value, loc: &Loc, attr: &str, diags: &mut Diagnostics) -> Option<Vec<String>> {
    let expected = "a list of strings (a command and its arguments)";
    match v {
        Value::List(items) if !items.is_empty() => {
            let mut out = Vec::new();
            for i in items {
                match i {
                    Value::String(s) => out.push(s),
                    other => {
                        wrong_type(loc, attr, expected, &other, diags);
                        return None;
                    }
                }
            }
            Some(out)
        }
        Value::List(_) => {
            diags.push(
                Diagnostic::error(
                    "standby::wrong_type",
                    loc.clone(),
                    format!("`{attr}` is an empty command"),
                )
                .label("empty list")
                .help(format!(
                    "give the program and its arguments: {attr} = [\"sh\", \"script.sh\"]"
                )),
            );
            None
        }
        Value::String(s) => {
            diags.push(
                Diagnostic::error("standby::wrong_type", loc.clone(), format!("wrong type for `{attr}`: expected {expected}, found a string"))
                    .label("this is a string")
                    .help(format!("commands run without a shell; write {attr} = [\"sh\", \"-c\", {s:?}] to use one")),
            );
            None
        }
        other => {
            wrong_type(loc, attr, expected, &other, diags);
            None
        }
    }
}

pub fn want_ref(
    v: Value,
    loc: &Loc,
    attr: &str,
    kind: Kind,
    diags: &mut Diagnostics,
) -> Option<(String, Option<String>)> {
    match v {
        Value::Ref(Ref::Object { kind: k, name, key }) if k == kind => Some((name, key)),
        other => {
            wrong_type(
                loc,
                attr,
                &format!("a reference to a {kind} (like {kind}.NAME)"),
                &other,
                diags,
            );
            None
        }
    }
}
