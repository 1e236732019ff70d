//! `ipam check`: a pure analysis of one snapshot of the IPAM objects, and the report it makes.
//!
//! Calico's `calicoctl ipam check` looks for the same things: addresses whose owner is gone
//! (leaked), handles that hold nothing, blocks whose node is gone, and claims left half-done.
//! The report is `Serialize + Deserialize` (camelCase JSON) so `tabbyctl ipam check -o
//! report.json` can be reviewed and later fed to `tabbyctl ipam release --from-report`, which
//! re-verifies every item against the datastore before it acts (see `Ipam::release_from_report`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use api::{AffinityState, AllocationAttribute, BlockAffinity, IPAMBlock, IPAMHandle};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::block::Block;

/// Everything `check` looks at, as read from the datastore.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub blocks: Vec<IPAMBlock>,
    pub affinities: Vec<BlockAffinity>,
    pub handles: Vec<IPAMHandle>,
    /// Names of the Node resources that exist.
    pub nodes: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// Allocated addresses whose handle object does not exist (or that have no handle at all).
    pub leaked_addresses: Vec<LeakedAddress>,
    /// Handle objects with no address in any block.
    pub handles_without_addresses: Vec<HandleRecord>,
    /// Handles whose per-block counts disagree with what the blocks hold.
    pub handle_mismatches: Vec<HandleMismatch>,
    /// Blocks affine to a node that has no Node resource.
    pub blocks_of_missing_nodes: Vec<OrphanBlock>,
    /// Affinities left Pending or PendingDeletion (a claim or release that did not finish).
    pub pending_affinities: Vec<PendingAffinity>,
    /// Blocks whose allocation data does not add up; reported only, never repaired.
    pub corrupt_blocks: Vec<CorruptBlock>,
    pub summary: CheckSummary,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeakedAddress {
    pub ip: IpAddr,
    pub block: IpNet,
    /// The handle the block records; `None` when the allocation has no handle.
    pub handle: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandleRecord {
    pub handle: String,
    /// The handle object's revision when checked; repair acts only if it is unchanged.
    pub resource_version: Option<String>,
    /// Block CIDR → count, as the handle records them.
    pub recorded: BTreeMap<String, u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandleMismatch {
    pub handle: String,
    pub resource_version: Option<String>,
    pub recorded: BTreeMap<String, u32>,
    /// Block CIDR → count, as the blocks hold them.
    pub actual: BTreeMap<String, u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrphanBlock {
    pub block: IpNet,
    pub node: String,
    pub in_use: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingAffinity {
    /// The BlockAffinity object's name.
    pub name: String,
    pub node: String,
    pub cidr: Option<IpNet>,
    pub state: AffinityState,
    pub resource_version: Option<String>,
    pub block_exists: bool,
    /// The block's `affinity` field when the block exists.
    pub block_affinity: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CorruptBlock {
    pub name: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckSummary {
    pub blocks: usize,
    pub affinities: usize,
    pub handles: usize,
    pub addresses_in_use: usize,
}

impl CheckReport {
    /// True when nothing needs attention.
    pub fn is_clean(&self) -> bool {
        self.leaked_addresses.is_empty()
            && self.handles_without_addresses.is_empty()
            && self.handle_mismatches.is_empty()
            && self.blocks_of_missing_nodes.is_empty()
            && self.pending_affinities.is_empty()
            && self.corrupt_blocks.is_empty()
    }
}

/// Analyses one snapshot.
pub fn analyze(snapshot: &Snapshot) -> CheckReport {
    let mut report = CheckReport {
        summary: CheckSummary {
            blocks: snapshot.blocks.len(),
            affinities: snapshot.affinities.len(),
            handles: snapshot.handles.len(),
            addresses_in_use: 0,
        },
        ..CheckReport::default()
    };
    let handles: BTreeMap<&str, &IPAMHandle> = snapshot
        .handles
        .iter()
        .map(|h| (h.spec.handle_id.as_str(), h))
        .collect();
    // handle → block CIDR → count, as the blocks hold them.
    let mut actual: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    let mut block_affinity: BTreeMap<IpNet, Option<String>> = BTreeMap::new();
    for obj in &snapshot.blocks {
        let block = match Block::from_spec(&obj.metadata.name, obj.spec.clone()) {
            Ok(b) => b,
            Err(e) => {
                report.corrupt_blocks.push(CorruptBlock {
                    name: obj.metadata.name.clone(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        block_affinity.insert(block.cidr(), block.spec().affinity.clone());
        report.summary.addresses_in_use += block.in_use();
        if let Some(node) = block.affine_node()
            && !snapshot.nodes.contains(node)
        {
            report.blocks_of_missing_nodes.push(OrphanBlock {
                block: block.cidr(),
                node: node.to_string(),
                in_use: block.in_use(),
            });
        }
        for (
            ip,
            AllocationAttribute {
                handle_id,
                secondary,
                ..
            },
        ) in block.allocated()
        {
            match handle_id {
                Some(h) if handles.contains_key(h.as_str()) => {
                    *actual
                        .entry(h.clone())
                        .or_default()
                        .entry(block.cidr().to_string())
                        .or_insert(0) += 1;
                }
                _ => report.leaked_addresses.push(LeakedAddress {
                    ip,
                    block: block.cidr(),
                    handle: handle_id.clone(),
                    attributes: secondary.clone(),
                }),
            }
        }
    }
    for h in &snapshot.handles {
        let recorded: BTreeMap<String, u32> = h
            .spec
            .block
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        let resource_version = h.metadata.resource_version.clone();
        match actual.get(&h.spec.handle_id) {
            None => report.handles_without_addresses.push(HandleRecord {
                handle: h.spec.handle_id.clone(),
                resource_version,
                recorded,
            }),
            Some(actual) if *actual != recorded => report.handle_mismatches.push(HandleMismatch {
                handle: h.spec.handle_id.clone(),
                resource_version,
                recorded,
                actual: actual.clone(),
            }),
            Some(_) => {}
        }
    }
    for a in &snapshot.affinities {
        if a.spec.state == AffinityState::Confirmed {
            continue;
        }
        let block = a.spec.cidr.and_then(|c| block_affinity.get(&c.trunc()));
        report.pending_affinities.push(PendingAffinity {
            name: a.metadata.name.clone(),
            node: a.spec.node.clone(),
            cidr: a.spec.cidr,
            state: a.spec.state,
            resource_version: a.metadata.resource_version.clone(),
            block_exists: block.is_some(),
            block_affinity: block.cloned().flatten(),
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use api::{BlockAffinitySpec, IPAMHandleSpec};

    use super::*;
    use crate::block::host_affinity;

    fn block_obj(cidr: &str, node: &str, handles: &[&str]) -> IPAMBlock {
        let cidr: IpNet = cidr.parse().unwrap();
        let mut b = Block::new(cidr, Some(host_affinity(node)), false).unwrap();
        for h in handles {
            b.auto_assign(1, Some(h), &BTreeMap::new());
        }
        IPAMBlock::new(api::ipam::block_name(&cidr), b.into_spec())
    }

    fn handle_obj(id: &str, counts: &[(&str, u32)]) -> IPAMHandle {
        let mut h = IPAMHandle::new(
            id,
            IPAMHandleSpec {
                handle_id: id.into(),
                block: counts.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
                deleted: false,
            },
        );
        h.metadata.resource_version = Some("7".into());
        h
    }

    fn affinity_obj(node: &str, cidr: &str, state: AffinityState) -> BlockAffinity {
        let cidr: IpNet = cidr.parse().unwrap();
        BlockAffinity::new(
            api::ipam::affinity_name(node, &cidr),
            BlockAffinitySpec {
                state,
                node: node.into(),
                cidr: Some(cidr),
                deleted: false,
                type_: Some("host".into()),
            },
        )
    }

    fn consistent() -> Snapshot {
        Snapshot {
            blocks: vec![block_obj("198.18.0.0/30", "n1", &["a", "b", "b"])],
            affinities: vec![affinity_obj(
                "n1",
                "198.18.0.0/30",
                AffinityState::Confirmed,
            )],
            handles: vec![
                handle_obj("a", &[("198.18.0.0/30", 1)]),
                handle_obj("b", &[("198.18.0.0/30", 2)]),
            ],
            nodes: BTreeSet::from(["n1".to_string()]),
        }
    }

    #[test]
    fn consistent_snapshot_is_clean() {
        let r = analyze(&consistent());
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(r.summary.addresses_in_use, 3);
    }

    #[test]
    fn every_inconsistency_is_reported() {
        let mut s = consistent();
        s.handles.remove(0); // "a" gone: its address leaks
        s.handles[0].spec.block.insert("198.18.0.0/30".into(), 5); // "b" overcounted
        s.handles.push(handle_obj("ghost", &[("198.18.0.4/30", 1)]));
        s.nodes.clear(); // n1 gone
        s.affinities
            .push(affinity_obj("n2", "198.18.0.8/30", AffinityState::Pending));
        let mut corrupt = block_obj("198.18.0.12/30", "n1", &[]);
        corrupt.spec.unallocated.clear();
        s.blocks.push(corrupt);

        let r = analyze(&s);
        assert_eq!(r.leaked_addresses.len(), 1);
        assert_eq!(
            r.leaked_addresses[0].ip,
            "198.18.0.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(r.leaked_addresses[0].handle.as_deref(), Some("a"));
        assert_eq!(r.handles_without_addresses.len(), 1);
        assert_eq!(r.handles_without_addresses[0].handle, "ghost");
        assert_eq!(r.handle_mismatches.len(), 1);
        assert_eq!(r.handle_mismatches[0].actual["198.18.0.0/30"], 2);
        assert_eq!(r.handle_mismatches[0].recorded["198.18.0.0/30"], 5);
        assert_eq!(r.blocks_of_missing_nodes.len(), 1);
        assert_eq!(r.blocks_of_missing_nodes[0].in_use, 3);
        assert_eq!(r.pending_affinities.len(), 1);
        assert!(!r.pending_affinities[0].block_exists);
        assert_eq!(r.corrupt_blocks.len(), 1);
        assert!(!r.is_clean());
    }

    #[test]
    fn report_round_trips_through_json() {
        let mut s = consistent();
        s.handles.remove(0);
        s.affinities
            .push(affinity_obj("n1", "198.18.0.0/30", AffinityState::Pending));
        let r = analyze(&s);
        let json = serde_json::to_string_pretty(&r).unwrap();
        assert!(json.contains("\"leakedAddresses\""), "{json}");
        let back: CheckReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
