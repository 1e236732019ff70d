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
            let got = self
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
                    if self.drive_affinity(aff, false).await?.is_none() {
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
            self.drive_affinity(current, false).await?;
            sum.resolved_affinities.push(p.name.clone());
        }
        Ok(sum)
    }

    // ---- allocation -------------------------------------------------------------------

    async fn context(&self, node: &str) -> Result<Context, IpamError> {
        let config = match self
            .ds
            .get(&Key::new(Kind::IPAMConfig, IPAM_CONFIG_NAME))
            .await
        {
            Ok(Resource::IPAMConfig(c)) => c.spec,
            Ok(_) => IPAMConfigSpec::default(),
            Err(DsError::NotFound(_)) => IPAMConfigSpec::default(),
            Err(e) => return Err(IpamError::datastore("reading IPAMConfig default", e)),
        };
        // A node without a Node resource has no labels: only pools that select all nodes
        // serve it. Calico fails instead; tabby lets the CNI plugin work on a bare datastore.
        let labels = match self.ds.get(&Key::new(Kind::Node, node)).await {
            Ok(Resource::Node(n)) => n.metadata.labels,
            Ok(_) | Err(DsError::NotFound(_)) => BTreeMap::new(),
            Err(e) => return Err(IpamError::datastore(format!("reading node {node}"), e)),
        };
        let pools = self.list_pools().await?;
        Ok(Context {
            config,
            labels,
            pools,
        })
    }

    /// One family of one request: affine blocks, then new blocks, then borrowing.
    async fn assign_family(
        &self,
        req: &AutoAssignRequest,
        attrs: &BTreeMap<String, String>,
        ctx: &Context,
        family: Family,
        taken: &mut Vec<IpAddr>,
    ) -> Result<Vec<IpNet>, IpamError> {
        let n = match family {
            Family::V4 => req.num_v4,
            Family::V6 => req.num_v6,
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        let requested = match family {
            Family::V4 => &req.pools_v4,
            Family::V6 => &req.pools_v6,
        };
        let pools = select_pools(
            &ctx.pools,
            &req.node,
            &ctx.labels,
            family,
            requested,
            req.use_,
        )?;
        let in_pools = |c: &IpNet| {
            pools
                .iter()
                .any(|p| p.spec.cidr.is_some_and(|pc| pc.contains(c)))
        };
        let strict = ctx.config.strict_affinity;
        let mut out: Vec<IpNet> = Vec::new();

        // 1. The node's own blocks, recovering half-done claims and releases on the way.
        let mut owned = 0;
        let mut affine = Vec::new();
        let mut affinities: Vec<BlockAffinity> = self
            .node_affinities(&req.node)
            .await?
            .into_iter()
            .filter(|a| a.spec.cidr.is_some_and(|c| Family::of_net(&c) == family))
            .collect();
        affinities.sort_by_key(|a| a.spec.cidr);
        for aff in affinities {
            let cidr = aff.spec.cidr.expect("filtered").trunc();
            if let Some(sb) = self.drive_affinity(aff, strict).await? {
                owned += 1;
                if in_pools(&cidr) {
                    affine.push(sb.block.cidr());
                }
            }
        }
        let host = host_affinity(&req.node);
        for cidr in &affine {
            if out.len() == n {
                break;
            }
            let got = self
                .auto_assign_from(*cidr, req, attrs, n - out.len(), Some(&host), taken)
                .await?;
            out.extend(got);
        }

        // 2. New blocks, up to maxBlocksPerHost.
        let max_blocks = ctx.config.max_blocks_per_host() as usize;
        let mut why = String::new();
        let mut existing: Option<BTreeSet<IpNet>> = None;
        while out.len() < n {
            if !ctx.config.auto_allocate_blocks() {
                why = "autoAllocateBlocks is off".to_string();
                break;
            }
            if owned >= max_blocks {
                why = format!("node holds {owned} blocks, the maxBlocksPerHost limit");
                break;
            }
            if existing.is_none() {
                existing = Some(
                    self.list_blocks()
                        .await?
                        .iter()
                        .map(|b| b.block.cidr())
                        .collect(),
                );
            }
            let existing = existing.as_mut().expect("just set");
            let Some(cidr) = self
                .claim_new_block(&req.node, &pools, strict, existing)
                .await?
            else {
                why = "no unclaimed block left".to_string();
                break;
            };
            owned += 1;
            let got = self
                .auto_assign_from(cidr, req, attrs, n - out.len(), Some(&host), taken)
                .await?;
            out.extend(got);
        }

        // 3. Borrow from blocks affine to other nodes (or to none), only without strictAffinity.
        if out.len() < n {
            if strict {
                why.push_str(", and strictAffinity forbids borrowing");
            } else {
                for sb in self.list_blocks().await? {
                    if out.len() == n {
                        break;
                    }
                    let cidr = sb.block.cidr();
                    if sb.block.free() == 0
                        || sb.block.family() != family
                        || !in_pools(&cidr)
                        || sb.block.spec().affinity.as_deref() == Some(host.as_str())
                    {
                        continue;
                    }
                    let got = self
                        .auto_assign_from(cidr, req, attrs, n - out.len(), None, taken)
                        .await?;
                    out.extend(got);
                }
                why.push_str(", and no other block has a free address");
            }
        }
        if out.len() < n {
            return Err(IpamError::Exhausted {
                handle: req.handle.clone(),
                node: req.node.clone(),
                family,
                requested: n,
                pools: pools
                    .iter()
                    .map(|p| {
                        format!(
                            "{} ({})",
                            p.metadata.name,
                            p.spec.cidr.map(|c| c.to_string()).unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                reason: format!("{} assigned; {why}", out.len()),
            });
        }
        Ok(out)
    }

    async fn auto_assign_from(
        &self,
        cidr: IpNet,
        req: &AutoAssignRequest,
        attrs: &BTreeMap<String, String>,
        n: usize,
        expect_affinity: Option<&str>,
        taken: &mut Vec<IpAddr>,
    ) -> Result<Vec<IpNet>, IpamError> {
        let ips = self
            .update_block_with(cidr, &req.handle, n, expect_affinity, |b, k| {
                Ok(b.auto_assign(k, Some(&req.handle), attrs))
            })
            .await?;
        taken.extend(&ips);
        Ok(ips
            .into_iter()
            .map(|ip| IpNet::new(ip, cidr.prefix_len()).expect("block prefix"))
            .collect())
    }

    /// Takes addresses from one block with compare-and-swap. The handle is raised by up to
    /// `want` (capped by what the block has free) before the first block write and lowered
    /// by what was not taken afterwards. Returns no address when the block is missing, full,
    /// or no longer has `expect_affinity`.
    async fn update_block_with<F>(
        &self,
        cidr: IpNet,
        handle: &str,
        want: usize,
        expect_affinity: Option<&str>,
        take: F,
    ) -> Result<Vec<IpAddr>, IpamError>
    where
        F: Fn(&mut Block, usize) -> Result<Vec<IpAddr>, crate::block::BlockError>,
    {
        let what = format!("assigning from block {cidr} to handle {handle}");
        let mut raised: usize = 0;
        let mut result = Err(IpamError::Conflict {
            what: what.clone(),
            retries: self.max_retries,
        });
        for attempt in 0..self.max_retries {
            let stored = match self.read_block(cidr).await {
                Ok(Some(sb)) => sb,
                Ok(None) => {
                    result = Ok(Vec::new());
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if expect_affinity.is_some_and(|a| stored.block.spec().affinity.as_deref() != Some(a))
                || stored.block.free() == 0
            {
                result = Ok(Vec::new());
                break;
            }
            if raised == 0 {
                raised = want.min(stored.block.free());
                if let Err(e) = self.adjust_handle(handle, &cidr, raised as i64).await {
                    raised = 0;
                    result = Err(e);
                    break;
                }
            }
            let mut block = stored.block.clone();
            let ips = match take(&mut block, raised) {
                Ok(ips) => ips,
                Err(e) => {
                    result = Err(IpamError::block(what.clone(), e));
                    break;
                }
            };
            if ips.is_empty() {
                result = Ok(ips);
                break;
            }
            match self.write_block(&stored.meta, block, &what).await {
                Ok(true) => {
                    result = Ok(ips);
                    break;
                }
                Ok(false) => backoff(attempt).await,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let got = result.as_ref().map(Vec::len).unwrap_or(0);
        if raised > got {
            self.adjust_handle(handle, &cidr, -((raised - got) as i64))
                .await?;
        }
        result
    }

    /// Claims the first unclaimed block of `pools` in the node's candidate order; `None` when
    /// every block of every pool exists already.
    async fn claim_new_block(
        &self,
        node: &str,
        pools: &[&IPPool],
        strict: bool,
        existing: &mut BTreeSet<IpNet>,
    ) -> Result<Option<IpNet>, IpamError> {
        for pool in pools {
            let Some(pool_cidr) = pool.spec.cidr else {
                continue;
            };
            for cidr in CandidateBlocks::new(pool_cidr, pool.spec.block_size(), node)? {
                if existing.contains(&cidr) {
                    continue;
                }
                existing.insert(cidr);
                if self.claim_block(node, cidr, strict).await?.is_some() {
                    return Ok(Some(cidr));
                }
            }
        }
        Ok(None)
    }

    /// Calico `claimAffineBlock`: affinity Pending, block affine to the node, affinity
    /// Confirmed. `None` when another node got the block first.
    async fn claim_block(
        &self,
        node: &str,
        cidr: IpNet,
        strict: bool,
    ) -> Result<Option<StoredBlock>, IpamError> {
        let aff = BlockAffinity::new(
            affinity_name(node, &cidr),
            BlockAffinitySpec {
                state: AffinityState::Pending,
                node: node.to_string(),
                cidr: Some(cidr),
                deleted: false,
                type_: Some("host".to_string()),
            },
        );
        let aff = match self.ds.create(aff.clone().into()).await {
            Ok(Resource::BlockAffinity(a)) => a,
            Ok(_) => unreachable!("create returns the kind it was given"),
            // Another task of this node is claiming the same block: join it.
            Err(DsError::AlreadyExists(_)) => match self.get_affinity(node, &cidr).await? {
                Some(a) => a,
                None => return Ok(None),
            },
            Err(e) => {
                return Err(IpamError::datastore(
                    format!("claiming block {cidr} for node {node}"),
                    e,
                ));
            }
        };
        self.drive_affinity(aff, strict).await
    }

    /// Carries one affinity forward with [`next_step`] until the block is usable (`Some`) or
    /// the affinity is gone (`None`).
    async fn drive_affinity(
        &self,
        mut aff: BlockAffinity,
        strict: bool,
    ) -> Result<Option<StoredBlock>, IpamError> {
        let node = aff.spec.node.clone();
        let Some(cidr) = aff.spec.cidr.map(|c| c.trunc()) else {
            self.delete_affinity_obj(&aff).await?;
            return Ok(None);
        };
        let what = format!("claiming block {cidr} for node {node}");
        for attempt in 0..self.max_retries {
            let stored = self.read_block(cidr).await?;
            let step = next_step(&aff.spec, stored.as_ref().map(|s| &s.block));
            match step {
                AffinityStep::Use => return Ok(stored),
                AffinityStep::CreateBlock => {
                    let block = Block::new(cidr, Some(host_affinity(&node)), strict)
                        .map_err(|e| IpamError::block(what.clone(), e))?;
                    let obj = IPAMBlock::new(block_name(&cidr), block.into_spec());
                    match self.ds.create(obj.into()).await {
                        Ok(_) | Err(DsError::AlreadyExists(_)) => {}
                        Err(e) => return Err(IpamError::datastore(what, e)),
                    }
                }
                AffinityStep::Confirm => {
                    let mut next = aff.clone();
                    next.spec.state = AffinityState::Confirmed;
                    match self.ds.update(next.into()).await {
                        Ok(Resource::BlockAffinity(a)) => {
                            aff = a;
                            continue;
                        }
                        Ok(_) => unreachable!("update returns the kind it was given"),
                        Err(DsError::Conflict { .. } | DsError::NotFound(_)) => {
                            backoff(attempt).await
                        }
                        Err(e) => return Err(IpamError::datastore(what, e)),
                    }
                }
                AffinityStep::Abandon => {
                    if self.delete_affinity_obj(&aff).await? {
                        return Ok(None);
                    }
                }
                AffinityStep::FinishRelease => {
                    let sb = stored.expect("FinishRelease has a block");
                    if self.delete_block(&sb, &what).await?
                        && self.delete_affinity_obj(&aff).await?
                    {
                        return Ok(None);
                    }
                }
            }
            // Re-read the affinity: someone else may have moved it on (or removed it, in which
            // case a block that is ours gets a fresh Pending affinity).
            aff = match self.get_affinity(&node, &cidr).await? {
                Some(a) => a,
                None => {
                    let stored = self.read_block(cidr).await?;
                    if stored.is_none_or(|s| s.block.affine_node() != Some(node.as_str())) {
                        return Ok(None);
                    }
                    let fresh = BlockAffinity::new(
                        affinity_name(&node, &cidr),
                        BlockAffinitySpec {
                            state: AffinityState::Pending,
                            node: node.clone(),
                            cidr: Some(cidr),
                            deleted: false,
                            type_: Some("host".to_string()),
                        },
                    );
                    match self.ds.create(fresh.into()).await {
                        Ok(Resource::BlockAffinity(a)) => a,
                        Ok(_) => unreachable!("create returns the kind it was given"),
                        Err(DsError::AlreadyExists(_)) => continue,
                        Err(e) => return Err(IpamError::datastore(what, e)),
                    }
                }
            };
        }
        Err(IpamError::Conflict {
            what,
            retries: self.max_retries,
        })
    }

    // ---- release ----------------------------------------------------------------------

    /// Applies `release` to one block with compare-and-swap, deleting the block when it ends up
    /// empty without affinity. Returns the count freed per handle and the addresses that were
    /// not allocated.
    async fn release_in_block<F>(
        &self,
        cidr: IpNet,
        release: F,
        what: &str,
    ) -> Result<(BTreeMap<String, u32>, Vec<IpAddr>), IpamError>
    where
        F: Fn(&mut Block) -> crate::block::Released,
    {
        let what = format!("{what} in block {cidr}");
        for attempt in 0..self.max_retries {
            let Some(stored) = self.read_block(cidr).await? else {
                return Ok((BTreeMap::new(), Vec::new()));
            };
            let mut block = stored.block.clone();
            let released = release(&mut block);
            if released.released.is_empty() {
                return Ok((BTreeMap::new(), released.not_allocated));
            }
            let written = if block.is_empty() && block.spec().affinity.is_none() {
                self.delete_block(&stored, &what).await?
            } else {
                self.write_block(&stored.meta, block, &what).await?
            };
            if written {
                return Ok((released.per_handle(), released.not_allocated));
            }
            backoff(attempt).await;
        }
        Err(IpamError::Conflict {
            what,
            retries: self.max_retries,
        })
    }

    // ---- repair -----------------------------------------------------------------------

    async fn repair_leak(
        &self,
        leak: &check::LeakedAddress,
        sum: &mut RepairSummary,
    ) -> Result<(), IpamError> {
        let what = format!("releasing leaked address {}", leak.ip);
        for attempt in 0..self.max_retries {
            let Some(stored) = self.read_block(leak.block).await? else {
                sum.skipped
                    .push(format!("{}: block {} is gone", leak.ip, leak.block));
                return Ok(());
            };
            let holder = stored
                .block
                .attribute_of(leak.ip)
                .map(|a| a.handle_id.clone());
            if holder.as_ref() != Some(&leak.handle) {
                sum.skipped.push(format!(
                    "{}: no longer held by handle {}",
                    leak.ip,
                    leak.handle.as_deref().unwrap_or("<none>")
                ));
                return Ok(());
            }
            if let Some(h) = &leak.handle
                && self.get_handle(h).await?.is_some()
            {
                sum.skipped
                    .push(format!("{}: handle {h} exists again", leak.ip));
                return Ok(());
            }
            let mut block = stored.block.clone();
            block.release(&[leak.ip]);
            let written = if block.is_empty() && block.spec().affinity.is_none() {
                self.delete_block(&stored, &what).await?
            } else {
                self.write_block(&stored.meta, block, &what).await?
            };
            if written {
                sum.released_addresses.push(leak.ip);
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(IpamError::Conflict {
            what,
            retries: self.max_retries,
        })
    }

    /// Sets a handle's counts to what the blocks hold now, deleting it when they hold nothing;
    /// only if its revision is still `reported`.
    async fn repair_handle(
        &self,
        handle: &str,
        reported: Option<&str>,
        sum: &mut RepairSummary,
    ) -> Result<(), IpamError> {
        let what = format!("repairing handle {handle}");
        let Some(current) = self.get_handle(handle).await? else {
            sum.skipped.push(format!("handle {handle}: already gone"));
            return Ok(());
        };
        if current.metadata.resource_version.as_deref() != reported {
            sum.skipped
                .push(format!("handle {handle}: changed since the report"));
            return Ok(());
        }
        let mut actual: BTreeMap<String, u32> = BTreeMap::new();
        for sb in self.list_blocks().await? {
            let n = sb.block.ips_by_handle(handle).len() as u32;
            if n > 0 {
                actual.insert(sb.block.cidr().to_string(), n);
            }
        }
        let rev = Revision::of(&Resource::IPAMHandle(current.clone()))
            .map_err(|e| IpamError::datastore(what.clone(), e))?;
        let outcome = if actual.is_empty() {
            self.ds
                .delete(&Key::new(Kind::IPAMHandle, handle), rev)
                .await
                .map(|_| true)
        } else {
            let mut next = current.clone();
            next.spec.block = actual;
            self.ds.update(next.into()).await.map(|_| false)
        };
        match outcome {
            Ok(true) => sum.deleted_handles.push(handle.to_string()),
            Ok(false) => sum.corrected_handles.push(handle.to_string()),
            Err(DsError::Conflict { .. } | DsError::NotFound(_)) => sum
                .skipped
                .push(format!("handle {handle}: changed while repairing")),
            Err(e) => return Err(IpamError::datastore(what, e)),
        }
        Ok(())
    }

    // ---- datastore helpers ------------------------------------------------------------

    async fn read_block(&self, cidr: IpNet) -> Result<Option<StoredBlock>, IpamError> {
        let name = block_name(&cidr);
        match self.ds.get(&Key::new(Kind::IPAMBlock, &name)).await {
            Ok(Resource::IPAMBlock(obj)) => {
                let block = Block::from_spec(&name, obj.spec)
                    .map_err(|e| IpamError::block(format!("reading block {cidr}"), e))?;
                Ok(Some(StoredBlock {
                    meta: obj.metadata,
                    block,
                }))
            }
            Ok(_) => Err(IpamError::WrongKind {
                what: format!("block {name}"),
                expected: "IPAMBlock",
            }),
            Err(DsError::NotFound(_)) => Ok(None),
            Err(e) => Err(IpamError::datastore(format!("reading block {cidr}"), e)),
        }
    }

    /// CAS write of a block; `false` when the revision moved on (or the block vanished).
    async fn write_block(
        &self,
        meta: &ObjectMeta,
        block: Block,
        what: &str,
    ) -> Result<bool, IpamError> {
        let mut obj = IPAMBlock::new(meta.name.clone(), block.into_spec());
        obj.metadata = meta.clone();
        match self.ds.update(obj.into()).await {
            Ok(_) => Ok(true),
            Err(DsError::Conflict { .. } | DsError::NotFound(_)) => Ok(false),
            Err(e) => Err(IpamError::datastore(what, e)),
        }
    }

    /// CAS delete of a block at the revision it was read at.
    async fn delete_block(&self, sb: &StoredBlock, what: &str) -> Result<bool, IpamError> {
        let rev = meta_revision(&sb.meta).map_err(|e| IpamError::datastore(what, e))?;
        match self
            .ds
            .delete(&Key::new(Kind::IPAMBlock, &sb.meta.name), rev)
            .await
        {
            Ok(_) => Ok(true),
            Err(DsError::Conflict { .. }) => Ok(false),
            Err(DsError::NotFound(_)) => Ok(true),
            Err(e) => Err(IpamError::datastore(what, e)),
        }
    }

    async fn list_blocks(&self) -> Result<Vec<StoredBlock>, IpamError> {
        let objs = self
            .list_kind(Kind::IPAMBlock, "listing blocks", |r| match r {
                Resource::IPAMBlock(b) => Some(b),
                _ => None,
            })
            .await?;
        let mut out = Vec::with_capacity(objs.len());
        for obj in objs {
            match Block::from_spec(&obj.metadata.name, obj.spec) {
                Ok(block) => out.push(StoredBlock {
                    meta: obj.metadata,
                    block,
                }),
                Err(e) => tracing::warn!(error = %e, "skipping unreadable block"),
            }
        }
        Ok(out)
    }

    async fn list_pools(&self) -> Result<Vec<IPPool>, IpamError> {
        self.list_kind(Kind::IPPool, "listing IP pools", |r| match r {
            Resource::IPPool(p) => Some(p),
            _ => None,
        })
        .await
    }

    async fn list_kind<T>(
        &self,
        kind: Kind,
        what: &str,
        pick: impl Fn(Resource) -> Option<T>,
    ) -> Result<Vec<T>, IpamError> {
        let listing = self
            .ds
            .list(kind)
            .await
            .map_err(|e| IpamError::datastore(what, e))?;
        Ok(listing.items.into_iter().filter_map(pick).collect())
    }

    async fn node_affinities(&self, node: &str) -> Result<Vec<BlockAffinity>, IpamError> {
        Ok(self
            .list_kind(
                Kind::BlockAffinity,
                "listing block affinities",
                |r| match r {
                    Resource::BlockAffinity(a) => Some(a),
                    _ => None,
                },
            )
            .await?
            .into_iter()
            .filter(|a| a.spec.node == node)
            .collect())
    }

    async fn get_affinity(
        &self,
        node: &str,
        cidr: &IpNet,
    ) -> Result<Option<BlockAffinity>, IpamError> {
        let name = affinity_name(node, cidr);
        match self.ds.get(&Key::new(Kind::BlockAffinity, &name)).await {
            Ok(Resource::BlockAffinity(a)) => Ok(Some(a)),
            Ok(_) => Err(IpamError::WrongKind {
                what: format!("affinity {name}"),
                expected: "BlockAffinity",
            }),
            Err(DsError::NotFound(_)) => Ok(None),
            Err(e) => Err(IpamError::datastore(format!("reading affinity {name}"), e)),
        }
    }

    /// CAS delete of an affinity at the revision it was read at; `false` when it changed.
    async fn delete_affinity_obj(&self, aff: &BlockAffinity) -> Result<bool, IpamError> {
        let what = format!("deleting affinity {}", aff.metadata.name);
        let rev =
            meta_revision(&aff.metadata).map_err(|e| IpamError::datastore(what.clone(), e))?;
        match self
            .ds
            .delete(&Key::new(Kind::BlockAffinity, &aff.metadata.name), rev)
            .await
        {
            Ok(_) | Err(DsError::NotFound(_)) => Ok(true),
            Err(DsError::Conflict { .. }) => Ok(false),
            Err(e) => Err(IpamError::datastore(what, e)),
        }
    }

    async fn get_handle(&self, handle: &str) -> Result<Option<IPAMHandle>, IpamError> {
        match self.ds.get(&Key::new(Kind::IPAMHandle, handle)).await {
            Ok(Resource::IPAMHandle(h)) => Ok(Some(h)),
            Ok(_) => Err(IpamError::WrongKind {
                what: format!("handle {handle}"),
                expected: "IPAMHandle",
            }),
            Err(DsError::NotFound(_)) => Ok(None),
            Err(e) => Err(IpamError::datastore(format!("reading handle {handle}"), e)),
        }
    }

    /// Adds `delta` to a handle's count for one block (Calico `incrementHandle` /
    /// `decrementHandle`), creating the handle on first use and deleting it when its last
    /// count reaches zero.
    async fn adjust_handle(&self, handle: &str, cidr: &IpNet, delta: i64) -> Result<(), IpamError> {
        if delta == 0 {
            return Ok(());
        }
        let what = format!("updating handle {handle} for block {cidr} by {delta}");
        let block_key = cidr.to_string();
        for attempt in 0..self.max_retries {
            let Some(mut h) = self.get_handle(handle).await? else {
                if delta < 0 {
                    return Ok(());
                }
                let obj = IPAMHandle::new(
                    handle,
                    IPAMHandleSpec {
                        handle_id: handle.to_string(),
                        block: BTreeMap::from([(block_key.clone(), delta as u32)]),
                        deleted: false,
                    },
                );
                match self.ds.create(obj.into()).await {
                    Ok(_) => return Ok(()),
                    Err(DsError::AlreadyExists(_)) => continue,
                    Err(e) => return Err(IpamError::datastore(what, e)),
                }
            };
            let current = i64::from(h.spec.block.get(&block_key).copied().unwrap_or(0));
            let next = (current + delta).max(0);
            if next == 0 {
                h.spec.block.remove(&block_key);
            } else {
                h.spec.block.insert(block_key.clone(), next as u32);
            }
            let outcome = if h.spec.block.is_empty() {
                let rev = meta_revision(&h.metadata)
                    .map_err(|e| IpamError::datastore(what.clone(), e))?;
                self.ds
                    .delete(&Key::new(Kind::IPAMHandle, handle), rev)
                    .await
                    .map(|_| ())
            } else {
                self.ds.update(h.into()).await.map(|_| ())
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(DsError::Conflict { .. } | DsError::NotFound(_)) => backoff(attempt).await,
                Err(e) => return Err(IpamError::datastore(what, e)),
            }
        }
        Err(IpamError::Conflict {
            what,
            retries: self.max_retries,
        })
    }

    /// Deletes a handle object whatever it records (after its addresses were released).
    async fn delete_handle(&self, handle: &str) -> Result<(), IpamError> {
        let what = format!("deleting handle {handle}");
        for attempt in 0..self.max_retries {
            let Some(h) = self.get_handle(handle).await? else {
                return Ok(());
            };
            let rev =
                meta_revision(&h.metadata).map_err(|e| IpamError::datastore(what.clone(), e))?;
            match self
                .ds
                .delete(&Key::new(Kind::IPAMHandle, handle), rev)
                .await
            {
                Ok(_) | Err(DsError::NotFound(_)) => return Ok(()),
                Err(DsError::Conflict { .. }) => backoff(attempt).await,
                Err(e) => return Err(IpamError::datastore(what, e)),
            }
        }
        Err(IpamError::Conflict {
            what,
            retries: self.max_retries,
        })
    }
}

fn meta_revision(meta: &ObjectMeta) -> Result<Option<Revision>, DsError> {
    match meta.resource_version.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(|n| Some(Revision(n)))
            .map_err(|_| DsError::Corrupt {
                what: meta.name.clone(),
                reason: format!("resourceVersion {s:?} is not a revision"),
            }),
    }
}

/// After a lost compare-and-swap: go again at once the first times, then wait a few random
/// milliseconds so that contending writers spread out instead of colliding in lockstep.
async fn backoff(attempt: usize) {
    if attempt < 2 {
        return;
    }
    let cap = (attempt as u64).min(20);
    tokio::time::sleep(Duration::from_micros(jitter() % (cap * 500))).await;
}

fn jitter() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            t ^ (u64::from(std::process::id()) << 32) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
