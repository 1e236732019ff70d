//! [`Ipam`]: the thin async layer that reads and writes blocks, affinities and handles through
//! the [`Datastore`] trait and leaves every decision to the pure modules.
//!
//! ```text
//!  auto_assign ─▶ select_pools ─▶ node's affinities ─▶ next_step (recover / use) ─▶ block CAS
//!                                        │ full
//!                                        ▼
//!                         CandidateBlocks ─▶ claim: affinity Pending ─▶ block ─▶ Confirmed
//!                                        │ no unclaimed block / maxBlocksPerHost reached
//!                                        ▼
//!                         borrow from other blocks (strictAffinity off) or "pool exhausted"
//! ```
//!
//! Every write is compare-and-swap on `metadata.resourceVersion`, retried at most
//! [`Ipam::max_retries`] times (re-reading on each round) before it fails with
//! [`IpamError::Conflict`]. Following Calico (`assignFromExistingBlock`), an allocation raises
//! the handle's count before it writes the block and a release writes the block before it lowers
//! the count, so in between (or after a crash) a handle over-counts and never under-counts: no
//! address is ever in a block without its handle knowing.
//!
//! This file holds the public API; the work behind it is in `ipam/allocate.rs` (taking and
//! giving back addresses, claiming blocks), `ipam/repair.rs` (acting on a check report) and
//! `ipam/store.rs` (typed datastore reads and CAS writes).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use api::ipam::{affinity_name, block_name};
use api::{
    AffinityState, AllowedUse, BlockAffinity, BlockAffinitySpec, IPAMBlock, IPAMConfigSpec,
    IPAMHandle, IPAMHandleSpec, IPPool, Key, Kind, ObjectMeta, Resource,
};
use datastore::{Datastore, Error as DsError, Revision};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::affinity::{AffinityStep, next_step};
use crate::block::{Block, host_affinity};
use crate::candidates::CandidateBlocks;
use crate::check::{self, CheckReport, Snapshot};
use crate::error::IpamError;
use crate::family::{Family, containing_net};
use crate::pools::{pool_containing, select_pools};
use crate::usage::{self, Usage};

/// Calico's CAS retry bound for IPAM writes (`datastoreRetries` in `libcalico-go/lib/ipam`).
pub const DEFAULT_MAX_RETRIES: usize = 100;

/// The IPAMConfig object IPAM reads its settings from, as in Calico.
pub const IPAM_CONFIG_NAME: &str = "default";

/// Calico's secondary attribute key for the node an address was assigned on.
pub const ATTR_NODE: &str = "node";

/// Handle of a pod's addresses: `<network>.<containerID>` (Calico CNI `getHandleID`).
pub fn pod_handle(network: &str, container_id: &str) -> String {
    format!("{network}.{container_id}")
}

/// Handle of a node's IPIP tunnel address (Calico `ipip-tunnel-addr-<node>`).
pub fn ipip_tunnel_handle(node: &str) -> String {
    format!("ipip-tunnel-addr-{node}")
}

/// Handle of a node's VXLAN tunnel address (Calico `vxlan-tunnel-addr-<node>`).
pub fn vxlan_tunnel_handle(node: &str) -> String {
    format!("vxlan-tunnel-addr-{node}")
}

/// One request for automatically chosen addresses.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoAssignRequest {
    /// Recorded in an IPAMHandle object and in the block; release by it later.
    pub handle: String,
    /// Secondary attributes stored with the allocation (Calico: node, namespace, pod,
    /// timestamp). `node` is added when absent.
    pub attrs: BTreeMap<String, String>,
    pub node: String,
    pub num_v4: usize,
    pub num_v6: usize,
    /// Pool names or CIDRs to use instead of the automatic choice (CNI `ipv4_pools`).
    pub pools_v4: Vec<String>,
    pub pools_v6: Vec<String>,
    pub use_: AllowedUse,
}

impl AutoAssignRequest {
    /// A request for one IPv4 workload address and nothing else.
    pub fn new(handle: impl Into<String>, node: impl Into<String>) -> AutoAssignRequest {
        AutoAssignRequest {
            handle: handle.into(),
            attrs: BTreeMap::new(),
            node: node.into(),
            num_v4: 1,
            num_v6: 0,
            pools_v4: Vec::new(),
            pools_v6: Vec::new(),
            use_: AllowedUse::Workload,
        }
    }
}

/// Addresses handed out, each with its block's prefix length (`198.18.0.65/26`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assigned {
    pub v4: Vec<IpNet>,
    pub v6: Vec<IpNet>,
}

/// What `release_from_report` did, and what it left alone because the report was stale.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairSummary {
    pub released_addresses: Vec<IpAddr>,
    pub deleted_handles: Vec<String>,
    pub corrected_handles: Vec<String>,
    /// Blocks whose affinity to a vanished node was released.
    pub released_blocks: Vec<IpNet>,
    /// Pending affinities confirmed, deleted or finished.
    pub resolved_affinities: Vec<String>,
    /// One line per reported item not acted on, saying why.
    pub skipped: Vec<String>,
}

/// A block as read, with the metadata (revision) to write it back with.
#[derive(Clone, Debug)]
struct StoredBlock {
    meta: ObjectMeta,
    block: Block,
}

/// Everything one request reads once.
struct Context {
    config: IPAMConfigSpec,
    labels: BTreeMap<String, String>,
    pools: Vec<IPPool>,
}

/// Block IPAM over one datastore. Cheap to clone; share it between tasks.
#[derive(Clone)]
pub struct Ipam {
    ds: Arc<dyn Datastore>,
    max_retries: usize,
}

impl Ipam {
    pub fn new(ds: Arc<dyn Datastore>) -> Ipam {
        Ipam {
            ds,
            max_retries: DEFAULT_MAX_RETRIES,
        }
    }

    /// The same, with another bound on compare-and-swap rounds per write.
    pub fn with_max_retries(mut self, max_retries: usize) -> Ipam {
        self.max_retries = max_retries.max(1);
        self
    }

    pub fn max_retries(&self) -> usize {
        self.max_retries
    }

    pub fn datastore(&self) -> &Arc<dyn Datastore> {
        &self.ds
    }

    /// Assigns `num_v4` IPv4 and `num_v6` IPv6 addresses to `req.handle` on `req.node`
    /// (Calico `AutoAssign`). All or nothing: when any address cannot be had, those already
    /// taken are released before the error is returned.
    pub async fn auto_assign(&self, req: &AutoAssignRequest) -> Result<Assigned, IpamError> {
        let ctx = self.context(&req.node).await?;
        let mut attrs = req.attrs.clone();
        attrs
            .entry(ATTR_NODE.to_string())
            .or_insert_with(|| req.node.clone());
        let mut taken = Vec::new();
        let mut out = Assigned::default();
        let result = async {
            out.v4 = self
                .assign_family(req, &attrs, &ctx, Family::V4, &mut taken)
                .await?;
            out.v6 = self
                .assign_family(req, &attrs, &ctx, Family::V6, &mut taken)
                .await?;
            Ok::<(), IpamError>(())
        }
        .await;
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                if !taken.is_empty()
                    && let Err(undo) = self.release_ips(&taken).await
                {
                    tracing::error!(handle = %req.handle, error = %undo, "releasing addresses of a failed request");
                }
                Err(e)
            }
        }
    }

    /// Assigns one given address (Calico `AssignIP`, used for `cni.projectcalico.org/ipAddrs`).
    /// The address must be inside a pool; disabled pools are allowed, as in Calico, since the
    /// operator named the address. When its block does not exist yet, `node` claims it.
    pub async fn assign_ip(
        &self,
        ip: IpAddr,
        handle: &str,
        attrs: &BTreeMap<String, String>,
        node: &str,
    ) -> Result<(), IpamError> {
        let ctx = self.context(node).await?;
        let pool =
            pool_containing(&ctx.pools, &IpNet::from(ip)).ok_or(IpamError::NotInPool { ip })?;
        let cidr = containing_net(ip, pool.spec.block_size()).ok_or(IpamError::NotInPool { ip })?;
        let mut attrs = attrs.clone();
        attrs
            .entry(ATTR_NODE.to_string())
            .or_insert_with(|| node.to_string());
        for _ in 0..self.max_retries {
            let Some(stored) = self.read_block(cidr).await? else {
                // Claim it; if another node won the race the block exists now and we borrow.
                self.claim_block(node, cidr, ctx.config.strict_affinity)
                    .await?;
                continue;
            };
            if stored.block.attribute_of(ip).is_some() {
                let err = stored.block.clone().assign(ip, Some(handle), &attrs);
                let what = format!("assigning {ip} to handle {handle} on node {node}");
                return Err(IpamError::block(
                    what,
                    err.expect_err("an allocated address cannot be assigned"),
                ));
            }
            let (got, _) = self
                .update_block_with(cidr, handle, 1, None, |b, _| {
                    b.assign(ip, Some(handle), &attrs).map(|()| vec![ip])
                })
                .await?;
            if !got.is_empty() {
                return Ok(());
            }
        }
        Err(IpamError::Conflict {
            what: format!("assigning {ip} to handle {handle} on node {node}"),
            retries: self.max_retries,
        })
    }

    /// Releases addresses (Calico `ReleaseIPs`); returns those that were not allocated. A block
    /// that this empties and that has no affinity (one freed by `release_affinity` while still
    /// in use) is deleted, as Calico does.
    pub async fn release_ips(&self, ips: &[IpAddr]) -> Result<Vec<IpAddr>, IpamError> {
        let blocks = self.list_blocks().await?;
        let mut by_block: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
        let mut not_allocated = Vec::new();
        for &ip in ips {
            match blocks.iter().find(|b| b.block.cidr().contains(&ip)) {
                Some(b) => by_block.entry(b.block.cidr()).or_default().push(ip),
                None => not_allocated.push(ip),
            }
        }
        for (cidr, ips) in by_block {
            let (released, missing) = self
                .release_in_block(cidr, |b| b.release(&ips), &format!("releasing {ips:?}"))
                .await?;
            not_allocated.extend(missing);
            for (handle, n) in released {
                self.adjust_handle(&handle, &cidr, -i64::from(n)).await?;
            }
        }
        Ok(not_allocated)
    }

    /// Releases every address of a handle and deletes the handle (Calico
    /// `ReleaseByHandle`); returns how many addresses were freed. An unknown handle frees
    /// nothing and is not an error (CNI DEL must be idempotent).
    pub async fn release_by_handle(&self, handle: &str) -> Result<usize, IpamError> {
        let Some(h) = self.get_handle(handle).await? else {
            return Ok(0);
        };
        let mut freed = 0;
        for cidr_text in h.spec.block.keys() {
            let Ok(cidr) = cidr_text.parse::<IpNet>() else {
                tracing::warn!(%handle, block = %cidr_text, "handle names a block that is not a CIDR");
                continue;
            };
            let what = format!("releasing handle {handle}");
            let (released, _) = self
                .release_in_block(
                    cidr,
                    |b| {
                        let ips = b.ips_by_handle(handle);
                        b.release(&ips)
                    },
                    &what,
                )
                .await?;
            freed += released.values().sum::<u32>() as usize;
        }
        self.delete_handle(handle).await?;
        Ok(freed)
    }

    /// The addresses held under a handle, each with its block's prefix length.
    pub async fn ips_by_handle(&self, handle: &str) -> Result<Vec<IpNet>, IpamError> {
        let Some(h) = self.get_handle(handle).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for cidr in h.spec.block.keys().filter_map(|c| c.parse::<IpNet>().ok()) {
            if let Some(sb) = self.read_block(cidr).await? {
                out.extend(
                    sb.block
                        .ips_by_handle(handle)
                        .into_iter()
                        .map(|ip| IpNet::new(ip, cidr.prefix_len()).expect("block prefix")),
                );
            }
        }
        Ok(out)
    }

    /// Releases a node's affinity to one block (Calico `ReleaseAffinity`). An empty block is
    /// deleted with its affinity; a block still in use is an error when `require_empty`, and
    /// otherwise loses its affinity (it stays, borrowable, until its last address is freed).
    pub async fn release_affinity(
        &self,
        cidr: IpNet,
        node: &str,
        require_empty: bool,
    ) -> Result<(), IpamError> {
        let cidr = cidr.trunc();
        let what = format!("releasing affinity of block {cidr} for node {node}");
        for _ in 0..self.max_retries {
            let aff = self.get_affinity(node, &cidr).await?;
            let stored = self.read_block(cidr).await?;
            let ours = stored
                .as_ref()
                .is_some_and(|s| s.block.affine_node() == Some(node));
            match (aff, stored) {
                (None, None) => return Ok(()),
                (Some(aff), None) => {
                    if self.delete_affinity_obj(&aff).await? {
                        return Ok(());
                    }
                }
                (aff, Some(sb)) if ours && !sb.block.is_empty() => {
                    if require_empty {
                        return Err(IpamError::BlockNotEmpty {
                            cidr,
                            node: node.to_string(),
                            in_use: sb.block.in_use(),
                        });
                    }
                    let mut b = sb.block.clone();
                    b.set_affinity(None);
                    if !self.write_block(&sb.meta, b, &what).await? {
                        continue;
                    }
                    if let Some(aff) = aff
                        && !self.delete_affinity_obj(&aff).await?
                    {
                        continue;
                    }
                    return Ok(());
                }
                (None, Some(sb)) if ours => {
                    if self.delete_block(&sb, &what).await? {
                        return Ok(());
                    }
                }
                (None, Some(_)) => return Ok(()),
                (Some(mut aff), Some(_)) => {
                    if aff.spec.state != AffinityState::PendingDeletion {
                        aff.spec.state = AffinityState::PendingDeletion;
                        match self.ds.update(aff.into()).await {
                            Ok(Resource::BlockAffinity(a)) => aff = a,
                            Ok(_) => unreachable!("update returns the kind it was given"),
                            Err(DsError::Conflict { .. } | DsError::NotFound(_)) => continue,
                            Err(e) => return Err(IpamError::datastore(what, e)),
                        }
                    }
                    if self.drive_affinity(aff, false, true).await?.is_none() {
                        return Ok(());
                    }
                    // The block filled up meanwhile and the affinity went back to Confirmed:
                    // go round and take the non-empty path.
                }
            }
        }
        Err(IpamError::Conflict {
            what,
            retries: self.max_retries,
        })
    }

    /// Releases all of a node's block affinities (Calico `ReleaseHostAffinities`), as when a
    /// node is removed. With `require_empty`, blocks still in use are skipped. Returns how many
    /// affinities were released.
    pub async fn release_host_affinities(
        &self,
        node: &str,
        require_empty: bool,
    ) -> Result<usize, IpamError> {
        let mut released = 0;
        for aff in self.node_affinities(node).await? {
            let Some(cidr) = aff.spec.cidr else { continue };
            match self.release_affinity(cidr, node, require_empty).await {
                Ok(()) => released += 1,
                Err(IpamError::BlockNotEmpty { .. }) if require_empty => {}
                Err(e) => return Err(e),
            }
        }
        Ok(released)
    }

    /// Per pool and per block: total, in use, free, and the block's node.
    pub async fn usage(&self) -> Result<Usage, IpamError> {
        let pools = self.list_pools().await?;
        let blocks: Vec<Block> = self
            .list_blocks()
            .await?
            .into_iter()
            .map(|s| s.block)
            .collect();
        Ok(usage::summarize(&pools, &blocks))
    }

    /// Reads blocks, affinities, handles and nodes and reports what is inconsistent.
    ///
    /// The four lists are read one after the other, not atomically, so operations in flight
    /// can show up: an allocation (handle written before block) as a handle without
    /// addresses, a release that finished between the two reads as a leaked address.
    /// `release_from_report` re-verifies every item, so acting on such a report is still safe.
    pub async fn check(&self) -> Result<CheckReport, IpamError> {
        let snapshot = Snapshot {
            blocks: self
                .list_kind(Kind::IPAMBlock, "listing blocks", |r| match r {
                    Resource::IPAMBlock(b) => Some(b),
                    _ => None,
                })
                .await?,
            affinities: self
                .list_kind(
                    Kind::BlockAffinity,
                    "listing block affinities",
                    |r| match r {
                        Resource::BlockAffinity(a) => Some(a),
                        _ => None,
                    },
                )
                .await?,
            handles: self
                .list_kind(Kind::IPAMHandle, "listing handles", |r| match r {
                    Resource::IPAMHandle(h) => Some(h),
                    _ => None,
                })
                .await?,
            nodes: self
                .list_kind(Kind::Node, "listing nodes", |r| match r {
                    Resource::Node(n) => Some(n.metadata.name),
                    _ => None,
                })
                .await?
                .into_iter()
                .collect(),
        };
        Ok(check::analyze(&snapshot))
    }

    /// Repairs what a [`CheckReport`] lists, re-verifying each item against the datastore first
    /// so that a report that went stale never frees a live address:
    ///
    /// - a leaked address is freed only if its block still holds it under the reported handle
    ///   and that handle still does not exist (the block write is CAS on the revision read
    ///   before the handle was checked);
    /// - a handle is deleted or corrected only if its revision is still the reported one, and
    ///   only to match what the blocks hold now;
    /// - a block's affinity is released only if its node still has no Node resource;
    /// - a pending affinity is acted on only if its revision is still the reported one: one
    ///   whose block is ours is confirmed, one whose block is missing or someone else's is
    ///   deleted, a PendingDeletion is finished.
    pub async fn release_from_report(
        &self,
        report: &CheckReport,
    ) -> Result<RepairSummary, IpamError> {
        let mut sum = RepairSummary::default();
        for leak in &report.leaked_addresses {
            self.repair_leak(leak, &mut sum).await?;
        }
        for h in &report.handles_without_addresses {
            self.repair_handle(&h.handle, h.resource_version.as_deref(), &mut sum)
                .await?;
        }
        for h in &report.handle_mismatches {
            self.repair_handle(&h.handle, h.resource_version.as_deref(), &mut sum)
                .await?;
        }
        for orphan in &report.blocks_of_missing_nodes {
            match self.ds.get(&Key::new(Kind::Node, &orphan.node)).await {
                Ok(_) => sum.skipped.push(format!(
                    "block {}: node {} exists again",
                    orphan.block, orphan.node
                )),
                Err(DsError::NotFound(_)) => {
                    self.release_affinity(orphan.block, &orphan.node, false)
                        .await?;
                    sum.released_blocks.push(orphan.block);
                }
                Err(e) => {
                    return Err(IpamError::datastore(
                        format!("reading node {}", orphan.node),
                        e,
                    ));
                }
            }
        }
        for p in &report.pending_affinities {
            let key = Key::new(Kind::BlockAffinity, &p.name);
            let current = match self.ds.get(&key).await {
                Ok(Resource::BlockAffinity(a)) => a,
                Ok(_) => continue,
                Err(DsError::NotFound(_)) => {
                    sum.skipped
                        .push(format!("affinity {}: already gone", p.name));
                    continue;
                }
                Err(e) => {
                    return Err(IpamError::datastore(
                        format!("reading affinity {}", p.name),
                        e,
                    ));
                }
            };
            if current.metadata.resource_version != p.resource_version {
                sum.skipped
                    .push(format!("affinity {}: changed since the report", p.name));
                continue;
            }
            let block = match current.spec.cidr {
                Some(c) => self.read_block(c.trunc()).await?,
                None => None,
            };
            if block.is_none() && current.spec.state == AffinityState::Pending {
                // A claim that never created its block: clean it, CAS on the reported revision
                // so a claim that has since moved on is left alone.
                if self.delete_affinity_obj(&current).await? {
                    sum.resolved_affinities.push(p.name.clone());
                } else {
                    sum.skipped
                        .push(format!("affinity {}: changed while repairing", p.name));
                }
                continue;
            }
            self.drive_affinity(current, false, true).await?;
            sum.resolved_affinities.push(p.name.clone());
        }
        Ok(sum)
    }
}

mod allocate;
mod repair;
mod store;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
