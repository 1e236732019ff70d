//! The order in which a node tries a pool's blocks when it claims a new one.
//!
//! Calico (`randomBlockGenerator` in `libcalico-go/lib/ipam/ipam.go`): seed a PRNG with the
//! FNV-1 32-bit hash of the node name, draw a random starting block, then walk the pool's blocks
//! in address order from there, wrapping around, until every block has been offered once. The
//! seed makes one node's order stable across restarts and different nodes' orders differ, so
//! nodes that claim blocks at the same moment rarely reach for the same one. tabby draws the
//! start with SplitMix64 instead of Go's `math/rand`, so the starting block is not the one
//! Calico would pick for the same node; only the properties above are kept.

use ipnet::IpNet;

use crate::family::{Family, addr_to_u128, u128_to_addr};

/// Why a pool's blocks cannot be enumerated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("pool {pool}: block size /{block_prefix} does not fit (pool prefix /{}, family max /{})", pool.prefix_len(), pool.max_prefix_len())]
pub struct CandidateError {
    pub pool: IpNet,
    pub block_prefix: u8,
}

/// Every block of a pool, once each, in the node's order.
#[derive(Clone, Debug)]
pub struct CandidateBlocks {
    family: Family,
    base: u128,
    host_bits: u8,
    block_prefix: u8,
    num_blocks: u128,
    start: u128,
    next: u128,
}

impl CandidateBlocks {
    pub fn new(pool: IpNet, block_prefix: u8, node: &str) -> Result<Self, CandidateError> {
        let pool = pool.trunc();
        let err = CandidateError { pool, block_prefix };
        if block_prefix < pool.prefix_len() || block_prefix > pool.max_prefix_len() {
            return Err(err);
        }
        let index_bits = block_prefix - pool.prefix_len();
        if index_bits >= 128 {
            return Err(err);
        }
        let num_blocks = 1u128 << index_bits;
        let mut rng = SplitMix64(u64::from(fnv1_32(node.as_bytes())));
        let draw = (u128::from(rng.next()) << 64) | u128::from(rng.next());
        Ok(CandidateBlocks {
            family: Family::of_net(&pool),
            base: addr_to_u128(pool.network()),
            host_bits: pool.max_prefix_len() - block_prefix,
            block_prefix,
            num_blocks,
            start: draw % num_blocks,
            next: 0,
        })
    }

    /// How many blocks the pool has.
    pub fn num_blocks(&self) -> u128 {
        self.num_blocks
    }
}

impl Iterator for CandidateBlocks {
    type Item = IpNet;

    fn next(&mut self) -> Option<IpNet> {
        if self.next >= self.num_blocks {
            return None;
        }
        let index = (self.start + self.next) % self.num_blocks;
        self.next += 1;
        let offset = if self.host_bits >= 128 {
            0
        } else {
            index << self.host_bits
        };
        let addr = u128_to_addr(self.family, self.base + offset);
        Some(IpNet::new(addr, self.block_prefix).expect("prefix checked in new"))
    }
}

/// FNV-1 (multiply, then xor), 32 bits: Go's `hash/fnv.New32`, which Calico seeds with.
pub fn fnv1_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash = hash.wrapping_mul(0x0100_0193);
        hash ^= u32::from(*b);
    }
    hash
}

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast and good enough to spread starting points.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn fnv1_matches_go_reference_values() {
        // Go: fnv.New32(); h.Write([]byte(s)); h.Sum32()
        assert_eq!(fnv1_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1_32(b"a"), 0x050c_5d7e);
        assert_eq!(fnv1_32(b"foobar"), 0x31f0_b262);
    }

    #[test]
    fn every_block_once_in_a_rotated_address_order() {
        let blocks: Vec<IpNet> = CandidateBlocks::new(net("198.18.0.0/22"), 26, "n1")
            .unwrap()
            .collect();
        assert_eq!(blocks.len(), 16);
        let distinct: BTreeSet<_> = blocks.iter().collect();
        assert_eq!(distinct.len(), 16);
        for pair in blocks.windows(2) {
            let a = addr_to_u128(pair[0].network());
            let b = addr_to_u128(pair[1].network());
            assert!(b == a + 64 || b == addr_to_u128(net("198.18.0.0/22").network()));
        }
    }

    #[test]
    fn order_is_deterministic_per_node_and_differs_between_nodes() {
        let order = |node: &str| -> Vec<IpNet> {
            CandidateBlocks::new(net("198.18.0.0/16"), 26, node)
                .unwrap()
                .collect()
        };
        assert_eq!(order("n1"), order("n1"));
        let starts: BTreeSet<IpNet> = (0..8).map(|i| order(&format!("node-{i}"))[0]).collect();
        assert!(
            starts.len() >= 6,
            "starting blocks collide too much: {starts:?}"
        );
    }

    #[test]
    fn v6_pools_enumerate_lazily() {
        let mut c = CandidateBlocks::new(net("2001:db8::/64"), 122, "n1").unwrap();
        assert_eq!(c.num_blocks(), 1u128 << 58);
        let first = c.next().unwrap();
        assert_eq!(first.prefix_len(), 122);
        assert!(net("2001:db8::/64").contains(&first));
        let second = c.next().unwrap();
        assert_eq!(
            addr_to_u128(second.network()) - addr_to_u128(first.network()),
            64
        );
    }

    #[test]
    fn block_prefix_must_fit_the_pool() {
        assert!(CandidateBlocks::new(net("198.18.0.0/26"), 24, "n").is_err());
        assert!(CandidateBlocks::new(net("198.18.0.0/26"), 33, "n").is_err());
        let whole: Vec<_> = CandidateBlocks::new(net("198.18.0.0/26"), 26, "n")
            .unwrap()
            .collect();
        assert_eq!(whole, vec![net("198.18.0.0/26")]);
    }
}
