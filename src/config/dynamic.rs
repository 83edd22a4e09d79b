//! `dynamic` blocks, as in Terraform: a block that generates one nested
//! block per item of its `for_each`, with an iterator (`disk.key`,
//! `disk.value`, or the name given by `iterator`) in scope inside `content`.
//!
//! ```hcl
//! dynamic "disk" {
//!   for_each = each.value.disks
//!   labels   = [disk.key]
//!   content { path = disk.value }
//! }
//! ```
//!
//! Expansion happens per block instance (so `each.value` can drive it) on a
//! copy of the block; the generated blocks keep the spans of their
//! `content` body, so errors inside point at the source as written.

use super::diag::{Diagnostic, Diagnostics, Loc};
use super::eval::{Out, Scope};
use super::value::Value;
use hcl_edit::Span;
use hcl_edit::expr::Expression;
use hcl_edit::structure::{Block, Body, Structure};
use std::collections::{BTreeMap, HashMap};

/// Where a generated block sits (positions from the root body) and its
/// iterator binding (name, `{key, value}`).
type Bound = (Vec<usize>, (String, Value));

/// A block with its `dynamic` blocks replaced by the blocks they generate,
/// at every depth: inside a generated block's `content` (with the outer
/// iterator in scope, as in Terraform) and inside plain nested blocks.
pub struct Expanded {
    pub block: Block,
    /// Iterator binding (name, `{key, value}`) of each generated block, by
    /// its path of positions from `block.body`.
    by_path: Vec<Bound>,
}

impl Expanded {
    /// Bindings keyed by the address of each generated block in
    /// `self.block`, for `Reader` (valid while `self` is not moved).
    pub fn bindings(&self) -> HashMap<usize, (String, Value)> {
        let mut map = HashMap::new();
        for (path, bind) in &self.by_path {
            let mut at = &self.block;
            for &i in path {
                match at.body.iter().nth(i) {
                    Some(Structure::Block(b)) => at = b,
                    _ => break,
                }
            }
            map.insert(at as *const Block as usize, bind.clone());
        }
        map
    }
}

/// Expand the `dynamic` blocks of `block`'s body; `allowed` names the block
/// types they may generate directly in it (deeper ones are checked by the
/// reader of their parent). None when a `dynamic` block is wrong (reported).
pub fn expand(
    scope: &Scope,
    block: &Block,
    allowed: &[&str],
    diags: &mut Diagnostics,
) -> Option<Expanded> {
    let mut by_path = Vec::new();
    let body = expand_body(scope, &block.body, Some(allowed), &[], &mut by_path, diags)?;
    let mut copy = block.clone();
    copy.body = body;
    Some(Expanded {
        block: copy,
        by_path,
    })
}

/// Whether a body holds a `dynamic` block at any depth.
fn has_dynamic(body: &Body) -> bool {
    body.blocks()
        .any(|b| b.ident.as_str() == "dynamic" || has_dynamic(&b.body))
}

/// `body` with its `dynamic` blocks expanded (see [`expand`]); `path` is
/// where `body` sits, for the bindings of generated blocks.
fn expand_body(
    scope: &Scope,
    body: &Body,
    allowed: Option<&[&str]>,
    path: &[usize],
    by_path: &mut Vec<Bound>,
    diags: &mut Diagnostics,
) -> Option<Body> {
    let mut out = Body::new();
    let mut ok = true;
    for s in body.iter() {
        match s {
            Structure::Block(d) if d.ident.as_str() == "dynamic" => {
                match generate(scope, d, allowed, diags) {
                    Some(blocks) => {
                        for (mut b, content, bind) in blocks {
                            let mut here = path.to_vec();
                            here.push(out.len());
                            // The content's own dynamic blocks see this iterator.
                            let mut inner = scope.clone();
                            inner.for_vars.push(bind.clone());
                            match expand_body(&inner, &content, None, &here, by_path, diags) {
                                Some(expanded) => b.body = expanded,
                                None => ok = false,
                            }
                            by_path.push((here, bind));
                            out.push(b);
                        }
                    }
                    None => ok = false,
                }
            }
            Structure::Block(b) if has_dynamic(&b.body) => {
                let mut here = path.to_vec();
                here.push(out.len());
                let mut copy = b.clone();
                match expand_body(scope, &b.body, None, &here, by_path, diags) {
                    Some(expanded) => copy.body = expanded,
                    None => ok = false,
                }
                out.push(copy);
            }
            other => out.push(other.clone()),
        }
    }
    ok.then_some(out)
}

/// A generated block: header, `content` body, iterator binding.
type Generated = (Block, Body, (String, Value));

/// The blocks one `dynamic` block generates: each with its header (spans
/// at the `dynamic` block), its `content` body (not yet expanded) and its
/// iterator binding.
fn generate(
    scope: &Scope,
    d: &Block,
    allowed: Option<&[&str]>,
    diags: &mut Diagnostics,
) -> Option<Vec<Generated>> {
    let source = scope.source;
    let header = super::reader::header(source, d);
    let err = |diags: &mut Diagnostics, loc: Loc, msg: String, help: String| {
        diags.push(
            Diagnostic::error("standby::dynamic_block", loc, msg)
                .label("in this dynamic block")
                .help(help),
        );
        None
    };
    let [label] = d.labels.as_slice() else {
        return err(
            diags,
            header,
            "a `dynamic` block needs the type of block it generates".into(),
            format!(
                "write dynamic \"{}\" {{ ... }}",
                allowed.and_then(|a| a.first()).unwrap_or(&"disk")
            ),
        );
    };
    let ty = label.as_str();
    if let Some(allowed) = allowed
        && !allowed.contains(&ty)
    {
        return err(
            diags,
            Loc::new(source, label.span()),
            format!("a `dynamic` block here cannot generate `{ty}` blocks"),
            format!("here it can generate: {}", allowed.join(", ")),
        );
    }
    for a in d.body.attributes() {
        if !["for_each", "iterator", "labels"].contains(&a.key.as_str()) {
            return err(
                diags,
                Loc::new(source, a.key.span()),
                format!("unknown attribute `{}` in a dynamic block", a.key.as_str()),
                "a dynamic block takes for_each, iterator, labels and one content block".into(),
            );
        }
    }
    let contents: Vec<&Block> = d.body.blocks().collect();
    let [content] = contents.as_slice() else {
        return err(
            diags,
            header,
            format!(
                "a dynamic block needs exactly one `content` block, found {} blocks",
                contents.len()
            ),
            "put the generated block's attributes in content { ... }".into(),
        );
    };
    if content.ident.as_str() != "content" {
        return err(
            diags,
            Loc::new(source, content.ident.span()),
            format!(
                "unexpected block `{}` in a dynamic block",
                content.ident.as_str()
            ),
            "a dynamic block holds one content { ... } block".into(),
        );
    }
    let iterator = match d.body.get_attribute("iterator") {
        None => ty.to_string(),
        Some(a) => match &a.value {
            Expression::Variable(v) => v.as_str().to_string(),
            other => {
                return err(
                    diags,
                    Loc::new(source, other.span()),
                    "`iterator` is a bare name".into(),
                    "write iterator = NAME (no quotes)".into(),
                );
            }
        },
    };
    let Some(fe) = d.body.get_attribute("for_each") else {
        return err(
            diags,
            header,
            "a dynamic block needs `for_each`".into(),
            "for_each = a list or map; one block is generated per item".into(),
        );
    };
    let mut out = Out {
        diags: &mut *diags,
        sensitive: false,
    };
    let coll = scope.eval(&fe.value, &mut out).ok()?;
    let items: Vec<(Value, Value)> = match coll {
        Value::List(l) => l
            .into_iter()
            .enumerate()
            .map(|(i, v)| (Value::Number(i.into()), v))
            .collect(),
        // A set element's key is its value, as in Terraform.
        Value::Set(l) => l.into_iter().map(|v| (v.clone(), v)).collect(),
        Value::Map(m) => m.into_iter().map(|(k, v)| (Value::String(k), v)).collect(),
        other => {
            return err(
                diags,
                Loc::new(source, fe.value.span()),
                format!(
                    "the for_each of a dynamic block needs a list, set or map, found {}",
                    other.type_name()
                ),
                "one block is generated per item".into(),
            );
        }
    };
    let start = d.ident.span().map_or(0, |s| s.start);
    let mut res = Vec::new();
    for (k, v) in items {
        let bind = Value::Map(BTreeMap::from([
            ("key".to_string(), k),
            ("value".to_string(), v),
        ]));
        let mut inner = scope.clone();
        inner.for_vars.push((iterator.clone(), bind.clone()));
        let mut labels = Vec::new();
        if let Some(la) = d.body.get_attribute("labels") {
            let mut out = Out {
                diags: &mut *diags,
                sensitive: false,
            };
            match inner.eval(&la.value, &mut out).ok()? {
                Value::List(l) => {
                    for x in l {
                        match x {
                            Value::String(s) => labels.push(s),
                            v @ (Value::Number(_) | Value::Bool(_)) => {
                                labels.push(v.to_template_string().unwrap_or_default())
                            }
                            other => {
                                return err(
                                    diags,
                                    Loc::new(source, la.value.span()),
                                    format!(
                                        "block labels are strings, found {}",
                                        other.type_name()
                                    ),
                                    format!("labels = [{iterator}.key]"),
                                );
                            }
                        }
                    }
                }
                other => {
                    return err(
                        diags,
                        Loc::new(source, la.value.span()),
                        format!(
                            "`labels` needs a list of strings, found {}",
                            other.type_name()
                        ),
                        format!("labels = [{iterator}.key]"),
                    );
                }
            }
        }
        // Parse the generated header at the dynamic block's offset, so the
        // new block's type and labels point at `dynamic "..."` in the source.
        let quoted: Vec<String> = labels
            .iter()
            .map(|l| {
                serde_json::to_string(l)
                    .unwrap_or_default()
                    .replace("${", "$${")
                    .replace("%{", "%%{")
            })
            .collect();
        let text = format!("{}{ty} {} {{}}\n", " ".repeat(start), quoted.join(" "));
        let b = match hcl_edit::parser::parse_body(&text)
            .ok()
            .and_then(|body| body.into_blocks().next())
        {
            Some(b) => b,
            None => Block::new(hcl_edit::Ident::new(ty.to_string())),
        };
        res.push((b, content.body.clone(), (iterator.clone(), bind)));
    }
    Some(res)
}
