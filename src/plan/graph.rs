//! The plan's dependency graph: one node per object (changed or not), an edge
//! from each object to what it depends on. Protection -> its machine, target
//! site, vault, policy; machine -> its site; recovery plan -> the protections
//! covering its machines. Also the order `apply` walks it in, and DOT output.

use super::attributes::{self, Attributes};
use super::{Action, Change};
use crate::model::{Address, Kind};
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::fmt::Write as _;

/// One object seen by the diff, desired or recorded or both: what the
/// graph is built from (the diff fills these; the graph never calls it).
pub(super) struct Entry<'a> {
    pub address: &'a Address,
    pub desired: Option<Attributes>,
    pub recorded: Option<&'a Attributes>,
    /// Index into the plan's changes, `None` for a no-op.
    pub change: Option<usize>,
}

/// One object in the graph and what happens to it (`None`: nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphNode {
    pub address: Address,
    /// `+`, `~`, `-/+`, `-`, or absent when the object does not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// Edges point from an object to what it depends on.
#[derive(Debug, Clone, Default)]
pub struct DependencyGraph {
    pub graph: DiGraph<GraphNode, ()>,
}

/// One step of applying a plan, in the order `apply` runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub address: Address,
    pub op: StepOp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOp {
    Create,
    Update,
    Delete,
}

impl DependencyGraph {
    pub(super) fn build(entries: &[Entry<'_>], changes: &[Change]) -> DependencyGraph {
        let mut graph = DiGraph::with_capacity(entries.len(), entries.len() * 2);
        let mut index: HashMap<&Address, NodeIndex> = HashMap::with_capacity(entries.len());
        for e in entries {
            let action = e.change.map(|i| changes[i].action.symbol().to_string());
            let n = graph.add_node(GraphNode {
                address: e.address.clone(),
                action,
            });
            index.insert(e.address, n);
        }
        // Which protections cover each machine, for recovery plan edges.
        let mut covering: HashMap<Address, Vec<NodeIndex>> = HashMap::new();
        for e in entries
            .iter()
            .filter(|e| e.address.kind == Kind::Protection)
        {
            let attrs = current(e);
            if let Some(m) = attrs.get("machine").and_then(|v| v.as_str()?.parse().ok()) {
                covering.entry(m).or_default().push(index[e.address]);
            }
        }
        for e in entries {
            let from = index[e.address];
            let attrs = current(e);
            let mut targets: Vec<NodeIndex> = if e.address.kind == Kind::RecoveryPlan {
                attributes::plan_machines(attrs)
                    .iter()
                    .flat_map(|m| covering.get(m).into_iter().flatten().copied())
                    .collect()
            } else {
                attributes::references(e.address.kind, attrs)
                    .iter()
                    .filter_map(|a| index.get(a).copied())
                    .collect()
            };
            // add_edge, not update_edge: a plan of many machines would scan
            // its own edge list once per machine.
            targets.sort_unstable();
            targets.dedup();
            for to in targets {
                graph.add_edge(from, to, ());
            }
        }
        DependencyGraph { graph }
    }

    /// The order to apply changes in: deletes (and the delete half of each
    /// replace) with dependents first, then creates and updates (and the
    /// create half of each replace) with dependencies first.
    pub fn apply_order(&self, changes: &[Change]) -> Vec<Step> {
        let by_address: HashMap<&Address, &Action> =
            changes.iter().map(|c| (&c.address, &c.action)).collect();
        // toposort puts an object before what it depends on; on a cycle
        // (impossible for checked configurations) fall back to node order.
        let order = petgraph::algo::toposort(&self.graph, None)
            .unwrap_or_else(|_| self.graph.node_indices().collect());
        let mut steps = Vec::new();
        for n in &order {
            let address = &self.graph[*n].address;
            if let Some(Action::Delete | Action::Replace { .. }) = by_address.get(address) {
                steps.push(Step {
                    address: address.clone(),
                    op: StepOp::Delete,
                });
            }
        }
        for n in order.iter().rev() {
            let address = &self.graph[*n].address;
            let op = match by_address.get(address) {
                Some(Action::Create | Action::Replace { .. }) => StepOp::Create,
                Some(Action::Update) => StepOp::Update,
                _ => continue,
            };
            steps.push(Step {
                address: address.clone(),
                op,
            });
        }
        steps
    }

    /// The addresses an object depends on.
    pub fn dependencies(&self, address: &Address) -> Vec<&Address> {
        self.graph
            .node_indices()
            .find(|n| &self.graph[*n].address == address)
            .map(|n| {
                let mut deps: Vec<&Address> = self
                    .graph
                    .neighbors_directed(n, Direction::Outgoing)
                    .map(|d| &self.graph[d].address)
                    .collect();
                deps.sort();
                deps
            })
            .unwrap_or_default()
    }

    /// Graphviz DOT: nodes labelled with their action and address, edges from
    /// an object to what it depends on.
    pub fn to_dot(&self) -> String {
        let mut out =
            String::from("digraph plan {\n  rankdir = \"LR\";\n  node [shape = \"box\"];\n");
        for n in self.graph.node_indices() {
            let node = &self.graph[n];
            let id = node.address.to_string();
            let label = match &node.action {
                Some(a) => format!("{a} {id}"),
                None => id.clone(),
            };
            let _ = writeln!(out, "  {} [label = {}];", quoted(&id), quoted(&label));
        }
        for e in self.graph.edge_indices() {
            if let Some((a, b)) = self.graph.edge_endpoints(e) {
                let _ = writeln!(
                    out,
                    "  {} -> {};",
                    quoted(&self.graph[a].address.to_string()),
                    quoted(&self.graph[b].address.to_string())
                );
            }
        }
        out.push_str("}\n");
        out
    }
}

/// The attributes that define an object's dependencies now: desired if it
/// stays, recorded if it goes.
fn current<'a>(e: &'a Entry<'_>) -> &'a Attributes {
    e.desired.as_ref().or(e.recorded).unwrap_or(&EMPTY)
}

static EMPTY: Attributes = Attributes::new();

/// A DOT double-quoted string.
fn quoted(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// The serialized form: nodes, and edges as `[from, to]` address pairs.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphDoc {
    nodes: Vec<GraphNode>,
    edges: Vec<(Address, Address)>,
}

impl Serialize for DependencyGraph {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let g = &self.graph;
        GraphDoc {
            nodes: g.node_weights().cloned().collect(),
            edges: g
                .edge_indices()
                .filter_map(|e| g.edge_endpoints(e))
                .map(|(a, b)| (g[a].address.clone(), g[b].address.clone()))
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for DependencyGraph {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DependencyGraph, D::Error> {
        let doc = GraphDoc::deserialize(d)?;
        let mut graph = DiGraph::with_capacity(doc.nodes.len(), doc.edges.len());
        let mut index = HashMap::new();
        for node in doc.nodes {
            let address = node.address.clone();
            index.insert(address, graph.add_node(node));
        }
        for (a, b) in doc.edges {
            match (index.get(&a), index.get(&b)) {
                (Some(x), Some(y)) => {
                    graph.add_edge(*x, *y, ());
                }
                _ => {
                    return Err(serde::de::Error::custom(format!(
                        "graph edge {a} -> {b} names an object that is not a node"
                    )));
                }
            }
        }
        Ok(DependencyGraph { graph })
    }
}

impl PartialEq for DependencyGraph {
    fn eq(&self, other: &Self) -> bool {
        let edges = |g: &DiGraph<GraphNode, ()>| -> Vec<(usize, usize)> {
            g.edge_indices()
                .filter_map(|e| g.edge_endpoints(e))
                .map(|(a, b)| (a.index(), b.index()))
                .collect()
        };
        self.graph.node_weights().eq(other.graph.node_weights())
            && edges(&self.graph) == edges(&other.graph)
    }
}
