//! `ipam show [--show-blocks]`: how full each pool and each of its blocks is.
//!
//! As in `calicoctl ipam show`, a pool's total is its whole CIDR (blocks not yet claimed count as
//! free), and a block row says which node it is affine to.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use api::IPPool;

use crate::block::Block;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub pools: Vec<PoolUsage>,
    /// Blocks inside no current pool (their pool was deleted while they held addresses).
    pub blocks_outside_pools: Vec<BlockUsage>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    pub name: String,
    pub cidr: IpNet,
    /// Addresses in the pool's CIDR (u128: an IPv6 /64 has 2^64).
    pub total: u128,
    pub in_use: u128,
    pub free: u128,
    pub blocks: Vec<BlockUsage>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockUsage {
    pub cidr: IpNet,
    pub total: usize,
    pub in_use: usize,
    pub free: usize,
    /// The node the block is affine to, if any.
    pub node: Option<String>,
}

impl BlockUsage {
    pub fn of(block: &Block) -> BlockUsage {
        BlockUsage {
            cidr: block.cidr(),
            total: block.size(),
            in_use: block.in_use(),
            free: block.free(),
            node: block.affine_node().map(str::to_string),
        }
    }
}

/// Sums blocks up per pool; blocks are sorted by address within each pool.
pub fn summarize(pools: &[IPPool], blocks: &[Block]) -> Usage {
    let mut usage = Usage::default();
    let mut sorted: Vec<&Block> = blocks.iter().collect();
    sorted.sort_by_key(|b| b.cidr());
    let mut placed = vec![false; sorted.len()];
    for pool in pools {
        let Some(cidr) = pool.spec.cidr.map(|c| c.trunc()) else {
            continue;
        };
        let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
        let total = 1u128.checked_shl(host_bits).unwrap_or(u128::MAX);
        let mut p = PoolUsage {
            name: pool.metadata.name.clone(),
            cidr,
            total,
            in_use: 0,
            free: total,
            blocks: Vec::new(),
        };
        for (i, b) in sorted.iter().enumerate() {
            if !placed[i] && cidr.contains(&b.cidr()) {
                placed[i] = true;
                p.in_use += b.in_use() as u128;
                p.blocks.push(BlockUsage::of(b));
            }
        }
        p.free = total - p.in_use;
        usage.pools.push(p);
    }
    usage.blocks_outside_pools = sorted
        .iter()
        .zip(placed)
        .filter(|(_, placed)| !placed)
        .map(|(b, _)| BlockUsage::of(b))
        .collect();
    usage
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use api::IPPoolSpec;

    use super::*;
    use crate::block::host_affinity;

    #[test]
    fn sums_per_pool_and_lists_strays() {
        let pools = vec![
            IPPool::new(
                "v4",
                IPPoolSpec {
                    cidr: Some("198.18.0.0/24".parse().unwrap()),
                    ..Default::default()
                },
            ),
            IPPool::new(
                "v6",
                IPPoolSpec {
                    cidr: Some("2001:db8::/64".parse().unwrap()),
                    ..Default::default()
                },
            ),
        ];
        let mut a = Block::new(
            "198.18.0.64/26".parse().unwrap(),
            Some(host_affinity("n1")),
            false,
        )
        .unwrap();
        a.auto_assign(5, Some("h"), &BTreeMap::new());
        let b = Block::new("198.18.0.0/26".parse().unwrap(), None, false).unwrap();
        let mut c = Block::new("2001:db8::/122".parse().unwrap(), None, false).unwrap();
        c.auto_assign(2, Some("h"), &BTreeMap::new());
        let stray = Block::new("198.19.0.0/26".parse().unwrap(), None, false).unwrap();
        let u = summarize(&pools, &[a, b, c, stray]);
        assert_eq!(u.pools[0].total, 256);
        assert_eq!(u.pools[0].in_use, 5);
        assert_eq!(u.pools[0].free, 251);
        assert_eq!(u.pools[0].blocks.len(), 2);
        assert_eq!(u.pools[0].blocks[0].cidr.to_string(), "198.18.0.0/26");
        assert_eq!(u.pools[0].blocks[1].node.as_deref(), Some("n1"));
        assert_eq!(u.pools[0].blocks[1].free, 59);
        assert_eq!(u.pools[1].total, 1u128 << 64);
        assert_eq!(u.pools[1].in_use, 2);
        assert_eq!(u.blocks_outside_pools.len(), 1);
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(serde_json::from_str::<Usage>(&json).unwrap(), u);
    }
}
