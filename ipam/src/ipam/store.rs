//! Typed reads and compare-and-swap writes of blocks, affinities and handles.

use super::*;

impl Ipam {
    pub(super) async fn read_block(&self, cidr: IpNet) -> Result<Option<StoredBlock>, IpamError> {
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
    pub(super) async fn write_block(
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
    pub(super) async fn delete_block(
        &self,
        sb: &StoredBlock,
        what: &str,
    ) -> Result<bool, IpamError> {
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

    pub(super) async fn list_blocks(&self) -> Result<Vec<StoredBlock>, IpamError> {
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

    pub(super) async fn list_pools(&self) -> Result<Vec<IPPool>, IpamError> {
        self.list_kind(Kind::IPPool, "listing IP pools", |r| match r {
            Resource::IPPool(p) => Some(p),
            _ => None,
        })
        .await
    }

    pub(super) async fn list_kind<T>(
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

    pub(super) async fn node_affinities(
        &self,
        node: &str,
    ) -> Result<Vec<BlockAffinity>, IpamError> {
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

    pub(super) async fn get_affinity(
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
    pub(super) async fn delete_affinity_obj(&self, aff: &BlockAffinity) -> Result<bool, IpamError> {
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

    pub(super) async fn get_handle(&self, handle: &str) -> Result<Option<IPAMHandle>, IpamError> {
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
    pub(super) async fn adjust_handle(
        &self,
        handle: &str,
        cidr: &IpNet,
        delta: i64,
    ) -> Result<(), IpamError> {
        if delta == 0 {
            return Ok(());
        }
        let what = format!("updating handle {handle} for block {cidr} by {delta}");
        let block_key = cidr.to_string();
        let create = || async {
            let obj = IPAMHandle::new(
                handle,
                IPAMHandleSpec {
                    handle_id: handle.to_string(),
                    block: BTreeMap::from([(block_key.clone(), delta as u32)]),
                    deleted: false,
                },
            );
            match self.ds.create(obj.into()).await {
                Ok(_) => Ok(true),
                Err(DsError::AlreadyExists(_)) => Ok(false),
                Err(e) => Err(IpamError::datastore(what.clone(), e)),
            }
        };
        // Most handles are new (one per pod): try to create before reading.
        if delta > 0 && create().await? {
            return Ok(());
        }
        for attempt in 0..self.max_retries {
            let Some(mut h) = self.get_handle(handle).await? else {
                if delta < 0 {
                    return Ok(());
                }
                if create().await? {
                    return Ok(());
                }
                continue;
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
    pub(super) async fn delete_handle(&self, handle: &str) -> Result<(), IpamError> {
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
pub(super) async fn backoff(attempt: usize) {
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
