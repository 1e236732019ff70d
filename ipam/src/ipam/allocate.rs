//! Taking addresses (affine blocks, claims, borrowing) and giving them back, block by block.

use super::store::backoff;
use super::*;

impl Ipam {
    pub(super) async fn context(&self, node: &str) -> Result<Context, IpamError> {
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
    pub(super) async fn assign_family(
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
        let in_any_pool = |c: &IpNet| pool_containing(&ctx.pools, c).is_some();
        let strict = ctx.config.strict_affinity;
        let mut out: Vec<IpNet> = Vec::new();

        // 1. The node's own blocks. Half-done claims and releases (not Confirmed) are carried
        //    forward first; a Confirmed affinity is trusted until its block turns out missing or
        //    no longer ours, which saves reading every full block twice per allocation.
        let mut owned = 0;
        let mut affine: Vec<(IpNet, Option<BlockAffinity>)> = Vec::new();
        let mut affinities: Vec<BlockAffinity> = self
            .node_affinities(&req.node)
            .await?
            .into_iter()
            .filter(|a| a.spec.cidr.is_some_and(|c| Family::of_net(&c) == family))
            .collect();
        affinities.sort_by_key(|a| a.spec.cidr);
        for aff in affinities {
            let cidr = aff.spec.cidr.expect("filtered").trunc();
            if aff.spec.state == AffinityState::Confirmed {
                owned += 1;
                if in_pools(&cidr) {
                    affine.push((cidr, Some(aff)));
                }
            } else if self
                .drive_affinity(aff, strict, in_any_pool(&cidr))
                .await?
                .is_some()
            {
                owned += 1;
                if in_pools(&cidr) {
                    affine.push((cidr, None));
                }
            }
        }
        let host = host_affinity(&req.node);
        let mut usable = Vec::new();
        for (cidr, aff) in affine {
            if out.len() == n {
                break;
            }
            let (got, stale) = self
                .auto_assign_from(cidr, req, attrs, n - out.len(), Some(&host), taken)
                .await?;
            out.extend(got);
            match (stale, aff) {
                (false, _) | (true, None) => usable.push(cidr),
                (true, Some(aff)) => {
                    if self.drive_affinity(aff, strict, true).await?.is_none() {
                        owned -= 1;
                        continue;
                    }
                    usable.push(cidr);
                    let (got, _) = self
                        .auto_assign_from(cidr, req, attrs, n - out.len(), Some(&host), taken)
                        .await?;
                    out.extend(got);
                }
            }
        }
        let affine = usable;

        // 2. New blocks, up to maxBlocksPerHost. Blocks of this node that appeared after its
        //    affinities were listed (another process of the node claimed them) are used first,
        //    so two processes of one node do not claim two blocks where one will do.
        let max_blocks = ctx.config.max_blocks_per_host() as usize;
        let mut why = String::new();
        let mut existing: Option<BTreeSet<IpNet>> = None;
        while out.len() < n {
            if existing.is_none() {
                let listed = self.list_blocks().await?;
                let late: Vec<IpNet> = listed
                    .iter()
                    .map(|b| &b.block)
                    .filter(|b| {
                        b.spec().affinity.as_deref() == Some(host.as_str())
                            && b.family() == family
                            && in_pools(&b.cidr())
                            && !affine.contains(&b.cidr())
                    })
                    .map(Block::cidr)
                    .collect();
                existing = Some(listed.iter().map(|b| b.block.cidr()).collect());
                owned += late.len();
                for cidr in late {
                    if out.len() == n {
                        break;
                    }
                    let (got, _) = self
                        .auto_assign_from(cidr, req, attrs, n - out.len(), Some(&host), taken)
                        .await?;
                    out.extend(got);
                }
                continue;
            }
            if !ctx.config.auto_allocate_blocks() {
                why = "autoAllocateBlocks is off".to_string();
                break;
            }
            if owned >= max_blocks {
                why = format!("node holds {owned} blocks, the maxBlocksPerHost limit");
                break;
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
            let (got, _) = self
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
                    let (got, _) = self
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

    /// Takes up to `n` addresses from one block for the request. The flag is true when the
    /// block is missing or not affine as expected (its affinity needs carrying forward).
    pub(super) async fn auto_assign_from(
        &self,
        cidr: IpNet,
        req: &AutoAssignRequest,
        attrs: &BTreeMap<String, String>,
        n: usize,
        expect_affinity: Option<&str>,
        taken: &mut Vec<IpAddr>,
    ) -> Result<(Vec<IpNet>, bool), IpamError> {
        let (ips, stale) = self
            .update_block_with(cidr, &req.handle, n, expect_affinity, |b, k| {
                Ok(b.auto_assign(k, Some(&req.handle), attrs))
            })
            .await?;
        taken.extend(&ips);
        let nets = ips
            .into_iter()
            .map(|ip| IpNet::new(ip, cidr.prefix_len()).expect("block prefix"))
            .collect();
        Ok((nets, stale))
    }

    /// Takes addresses from one block with compare-and-swap. The handle is raised by up to
    /// `want` (capped by what the block has free) before the first block write and lowered
    /// by what was not taken afterwards. Returns no address when the block is missing, full,
    /// or no longer has `expect_affinity`; the flag says it was missing or not affine as
    /// expected.
    pub(super) async fn update_block_with<F>(
        &self,
        cidr: IpNet,
        handle: &str,
        want: usize,
        expect_affinity: Option<&str>,
        take: F,
    ) -> Result<(Vec<IpAddr>, bool), IpamError>
    where
        F: Fn(&mut Block, usize) -> Result<Vec<IpAddr>, crate::block::BlockError>,
    {
        let what = format!("assigning from block {cidr} to handle {handle}");
        let mut raised: usize = 0;
        let mut stale = false;
        let mut result = Err(IpamError::Conflict {
            what: what.clone(),
            retries: self.max_retries,
        });
        for attempt in 0..self.max_retries {
            let stored = match self.read_block(cidr).await {
                Ok(Some(sb)) => sb,
                Ok(None) => {
                    stale = true;
                    result = Ok(Vec::new());
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if expect_affinity.is_some_and(|a| stored.block.spec().affinity.as_deref() != Some(a)) {
                stale = true;
                result = Ok(Vec::new());
                break;
            }
            if stored.block.free() == 0 {
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
        result.map(|ips| (ips, stale))
    }

    /// Claims the first unclaimed block of `pools` in the node's candidate order; `None` when
    /// every block of every pool exists already.
    pub(super) async fn claim_new_block(
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
    pub(super) async fn claim_block(
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
        self.drive_affinity(aff, strict, true).await
    }

    /// Carries one affinity forward with [`next_step`] until the block is usable (`Some`) or
    /// the affinity is gone (`None`). With `may_create` false (the block's pool is gone) an
    /// affinity whose block is missing is deleted instead of getting a new block.
    pub(super) async fn drive_affinity(
        &self,
        mut aff: BlockAffinity,
        strict: bool,
        may_create: bool,
    ) -> Result<Option<StoredBlock>, IpamError> {
        let node = aff.spec.node.clone();
        let Some(cidr) = aff.spec.cidr.map(|c| c.trunc()) else {
            self.delete_affinity_obj(&aff).await?;
            return Ok(None);
        };
        let what = format!("claiming block {cidr} for node {node}");
        for attempt in 0..self.max_retries {
            let stored = self.read_block(cidr).await?;
            let step = match next_step(&aff.spec, stored.as_ref().map(|s| &s.block)) {
                AffinityStep::CreateBlock if !may_create => AffinityStep::Abandon,
                step => step,
            };
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
    pub(super) async fn release_in_block<F>(
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
}
