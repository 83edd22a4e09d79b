//! The graph of apply steps, from a plan's changes and dependency graph.

use super::steps::ApplyStep;
use crate::model::Address;
use crate::plan::{Plan, StepOp};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::HashMap;

/// The graph of apply steps. Deletes wait for the deletes of what depends
/// on them; creates and updates wait for the creates and updates of what
/// they depend on; the create half of a replace waits for its delete half.
/// Edges point from a step to a step it depends on.
pub fn step_graph(plan: &Plan) -> (DiGraph<ApplyStep, ()>, HashMap<(Address, bool), NodeIndex>) {
    let index_of: HashMap<&Address, usize> = plan
        .changes
        .iter()
        .enumerate()
        .map(|(i, c)| (&c.address, i))
        .collect();
    let mut g = DiGraph::new();
    // Key: (address, is_delete).
    let mut nodes: HashMap<(Address, bool), NodeIndex> = HashMap::new();
    for s in plan.graph.apply_order(&plan.changes) {
        let Some(&change) = index_of.get(&s.address) else {
            continue;
        };
        let delete = s.op == StepOp::Delete;
        let n = g.add_node(ApplyStep {
            address: s.address.clone(),
            op: s.op,
            change,
        });
        nodes.insert((s.address, delete), n);
    }
    let pg = &plan.graph.graph;
    for e in pg.edge_indices() {
        let Some((a, b)) = pg.edge_endpoints(e) else {
            continue;
        };
        // `a` depends on `b`.
        let (a, b) = (&pg[a].address, &pg[b].address);
        if let (Some(da), Some(db)) = (nodes.get(&(a.clone(), true)), nodes.get(&(b.clone(), true)))
        {
            g.update_edge(*db, *da, ());
        }
        if let (Some(ca), Some(cb)) = (
            nodes.get(&(a.clone(), false)),
            nodes.get(&(b.clone(), false)),
        ) {
            g.update_edge(*ca, *cb, ());
        }
    }
    let pairs: Vec<(NodeIndex, NodeIndex)> = nodes
        .iter()
        .filter(|((_, delete), _)| !*delete)
        .filter_map(|((a, _), c)| Some((*c, *nodes.get(&(a.clone(), true))?)))
        .collect();
    for (create, delete) in pairs {
        g.update_edge(create, delete, ());
    }
    (g, nodes)
}
