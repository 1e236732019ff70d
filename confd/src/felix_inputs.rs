//! What felix is told: the resources its calculation reads, as [`felix::calc::Input`]s, and the
//! difference between two such states, so that the watch loop sends only what changed.

use std::collections::BTreeMap;

use felix::calc::Input;

use crate::render::{Resources, felix_config};

/// Identifies one felix input; ordered so that a batch applies configuration first, then pools,
/// nodes, affinities and workloads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum FelixKey {
    Config,
    Pool(String),
    Node(String),
    Affinity(String),
    /// `namespace/name`.
    Workload(String),
}

/// The whole of felix's resource inputs for one node.
pub type FelixState = BTreeMap<FelixKey, Input>;

/// felix's inputs for `node`: its merged FelixConfiguration and every pool, node, block affinity
/// and workload endpoint (of all nodes: felix needs remote endpoints whose address is borrowed
/// from a block affine to yet another node).
pub fn felix_state(res: &Resources, node: &str) -> FelixState {
    let mut s = FelixState::new();
    s.insert(
        FelixKey::Config,
        Input::Config(Box::new(felix_config(res, node))),
    );
    for p in &res.pools {
        let k = p.metadata.name.clone();
        s.insert(
            FelixKey::Pool(k.clone()),
            Input::PoolUpdate(k, p.spec.clone()),
        );
    }
    for n in &res.nodes {
        let k = n.metadata.name.clone();
        s.insert(
            FelixKey::Node(k.clone()),
            Input::NodeUpdate(k, n.spec.clone()),
        );
    }
    for a in &res.affinities {
        let k = a.metadata.name.clone();
        s.insert(
            FelixKey::Affinity(k.clone()),
            Input::AffinityUpdate(k, a.spec.clone()),
        );
    }
    for w in &res.workloads {
        let k = workload_key(w);
        s.insert(
            FelixKey::Workload(k.clone()),
            Input::WorkloadUpdate(k, w.spec.clone()),
        );
    }
    s
}

/// felix's key for a workload endpoint: `namespace/name`.
pub fn workload_key(w: &api::WorkloadEndpoint) -> String {
    format!(
        "{}/{}",
        w.metadata.namespace.as_deref().unwrap_or("default"),
        w.metadata.name
    )
}

/// The inputs that turn `old` into `new`: updates for what is new or changed, removes for what
/// is gone, in key order. Empty when nothing changed.
pub fn felix_diff(old: &FelixState, new: &FelixState) -> Vec<Input> {
    let mut out = Vec::new();
    for (k, v) in new {
        if old.get(k) != Some(v) {
            out.push(v.clone());
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(match k.clone() {
            FelixKey::Config => Input::Config(Box::default()),
            FelixKey::Pool(n) => Input::PoolRemove(n),
            FelixKey::Node(n) => Input::NodeRemove(n),
            FelixKey::Affinity(n) => Input::AffinityRemove(n),
            FelixKey::Workload(n) => Input::WorkloadRemove(n),
        });
    }
    out
}
