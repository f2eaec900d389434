//! Queries over the knowledge graph kept in the store: impact of an action, lineage of a pattern,
//! neighbourhood of a node. Walks edges breadth-first (each hop one indexed query) and leaves out
//! every pattern version the caller may not see, with its edges.

use std::collections::{BTreeSet, HashSet, VecDeque};

use nexus_core::pb;
use nexus_store::{Direction, GraphEdge, MetaStore};

use crate::{
    auth::Principal,
    error::ApiError,
    registry::{Registry, visible_to},
};

/// Most nodes one query returns.
pub const MAX_NODES: usize = 5_000;

pub struct Graph<'a> {
    pub store: &'a dyn crate::registry::RegistryStore,
    pub registry: &'a Registry,
    pub caller: &'a Principal,
}

impl Graph<'_> {
    /// What depends on an action or an event type. `target` is `action:package.Service/Method`,
    /// `event:TYPE`, or either without its prefix (an action always has a `/`, an event type
    /// never does).
    ///
    /// An action: every pattern version that uses it, directly or through sub-patterns at any
    /// depth. An event type: every version triggered by it, waiting for it or emitting it, and
    /// the callers (at any depth) of those that wait for or emit it — a caller of a triggered
    /// pattern passes its own input, so the event does not reach it.
    pub async fn impact(&self, target: &str) -> Result<pb::QueryGraphResponse, ApiError> {
        let (start, direct_kinds, through_calls): (String, &[&str], &[&str]) = match impact_target(target) {
            Impacted::Action(a) => (format!("action:{a}"), &["USES"], &["USES"]),
            Impacted::Event(t) => {
                (format!("event:{t}"), &["TRIGGERED_BY", "EMITS", "WAITS_FOR"], &["EMITS", "WAITS_FOR"])
            }
        };
        let mut nodes = BTreeSet::from([start.clone()]);
        let mut edges = Vec::new();
        let direct = self.edges(&start, Direction::In, direct_kinds).await?;
        let mut queue: VecDeque<String> = VecDeque::new();
        let mut walked = HashSet::new();
        for e in direct {
            nodes.insert(e.from.clone());
            if through_calls.contains(&e.kind.as_str()) && walked.insert(e.from.clone()) {
                queue.push_back(e.from.clone());
            }
            edges.push(e);
        }
        while let Some(node) = queue.pop_front() {
            for e in self.edges(&node, Direction::In, &["CALLS_PATTERN"]).await? {
                if nodes.len() < MAX_NODES && walked.insert(e.from.clone()) {
                    nodes.insert(e.from.clone());
                    queue.push_back(e.from.clone());
                }
                edges.push(e);
            }
        }
        self.answer(nodes, edges).await
    }

    /// The fork tree `name` belongs to: up through FORKED_FROM to the root, then every fork
    /// of every version below it.
    pub async fn lineage(&self, name: &str) -> Result<pb::QueryGraphResponse, ApiError> {
        // Up: the root of the tree.
        let mut root = name.to_string();
        let mut seen = HashSet::from([root.clone()]);
        'up: loop {
            for v in self.registry.versions_of(&root) {
                let up = self.edges(&format!("pattern:{root}@{v}"), Direction::Out, &["FORKED_FROM"]).await?;
                if let Some(e) = up.first()
                    && let Some(source) = pattern_name(&e.to)
                    && seen.insert(source.to_string())
                {
                    root = source.to_string();
                    continue 'up;
                }
            }
            break;
        }
        // Down: every fork, breadth-first.
        let mut nodes = BTreeSet::new();
        let mut edges = Vec::new();
        let mut queue = VecDeque::from([root]);
        let mut names = HashSet::new();
        while let Some(n) = queue.pop_front() {
            if !names.insert(n.clone()) || nodes.len() >= MAX_NODES {
                continue;
            }
            for v in self.registry.versions_of(&n) {
                let id = format!("pattern:{n}@{v}");
                nodes.insert(id.clone());
                for e in self.edges(&id, Direction::In, &["FORKED_FROM"]).await? {
                    if let Some(fork) = pattern_name(&e.from) {
                        queue.push_back(fork.to_string());
                    }
                    nodes.insert(e.from.clone());
                    edges.push(e);
                }
            }
        }
        self.answer(nodes, edges).await
    }

    /// The nodes within `depth` edges of `node`, both directions, every kind.
    pub async fn neighbourhood(&self, node: &str, depth: u32) -> Result<pb::QueryGraphResponse, ApiError> {
        if pattern_name(node).is_some_and(|n| !self.can_see(n)) {
            return Err(ApiError::NotFound(format!("no node `{node}`")));
        }
        let mut nodes = BTreeSet::from([node.to_string()]);
        let mut edges = BTreeSet::new();
        let mut frontier = vec![node.to_string()];
        for _ in 0..depth {
            let mut next = Vec::new();
            for n in &frontier {
                let out = self.edges(n, Direction::Out, &[]).await?;
                let inc = self.edges(n, Direction::In, &[]).await?;
                for e in out.into_iter().chain(inc) {
                    for end in [&e.from, &e.to] {
                        if nodes.len() < MAX_NODES && nodes.insert(end.clone()) {
                            next.push(end.clone());
                        }
                    }
                    edges.insert((e.from, e.kind, e.to));
                }
            }
            frontier = next;
        }
        let edges = edges.into_iter().map(|(from, kind, to)| GraphEdge { from, kind, to }).collect();
        self.answer(nodes, edges).await
    }

    async fn edges(&self, node: &str, direction: Direction, kinds: &[&str]) -> Result<Vec<GraphEdge>, ApiError> {
        Ok(self.store.graph_edges(node, direction, kinds).await?)
    }

    fn can_see(&self, name: &str) -> bool {
        self.registry.name(name).is_some_and(|n| visible_to(&n, self.caller))
    }

    /// Keeps what the caller may see: pattern versions of patterns visible to them, and owners
    /// only through those; edges only between kept nodes.
    async fn answer(&self, nodes: BTreeSet<String>, edges: Vec<GraphEdge>) -> Result<pb::QueryGraphResponse, ApiError> {
        let ids: Vec<String> =
            nodes.into_iter().filter(|id| pattern_name(id).is_none_or(|n| self.can_see(n))).collect();
        let found = MetaStore::graph_nodes(self.store, &ids).await?;
        let kept: HashSet<&str> = found.iter().map(|n| n.id.as_str()).collect();
        let mut seen = HashSet::new();
        let edges: Vec<pb::GraphEdge> = edges
            .into_iter()
            .filter(|e| kept.contains(e.from.as_str()) && kept.contains(e.to.as_str()))
            .filter(|e| seen.insert((e.from.clone(), e.kind.clone(), e.to.clone())))
            .map(|e| pb::GraphEdge { from: e.from, kind: e.kind, to: e.to })
            .collect();
        // Owners are shown only as owners of something visible here.
        let owners: HashSet<&str> = edges.iter().filter(|e| e.kind == "OWNED_BY").map(|e| e.to.as_str()).collect();
        let nodes = found
            .iter()
            .filter(|n| n.kind != "owner" || owners.contains(n.id.as_str()))
            .map(|n| pb::GraphNode {
                id: n.id.clone(),
                kind: n.kind.clone(),
                label: n.label.clone(),
                deprecated: n.deprecated,
            })
            .collect();
        Ok(pb::QueryGraphResponse { nodes, edges })
    }
}

/// What an impact query asks about.
enum Impacted<'a> {
    Action(&'a str),
    Event(&'a str),
}

fn impact_target(target: &str) -> Impacted<'_> {
    if let Some(a) = target.strip_prefix("action:") {
        Impacted::Action(a)
    } else if let Some(t) = target.strip_prefix("event:") {
        Impacted::Event(t)
    } else if target.contains('/') {
        Impacted::Action(target)
    } else {
        Impacted::Event(target)
    }
}

/// `pattern:NAME@VERSION` → NAME.
fn pattern_name(id: &str) -> Option<&str> {
    id.strip_prefix("pattern:").and_then(|rest| rest.rsplit_once('@')).map(|(n, _)| n)
}
