//! Property tests: random allocate / release sequences across several nodes and pools, with
//! and without strictAffinity and maxBlocksPerHost, against the in-memory datastore. After
//! every step no address is held twice, every block balances (free + in use = total, with
//! `unallocated` exactly the free ordinals), the blocks hold exactly what the model says under
//! the right handles, handle objects agree with the blocks, affine blocks have their node's
//! Confirmed affinity, no empty block is left without one, and `check` is clean. Borrowing is
//! checked at each allocation: never under strictAffinity, and otherwise only when the node
//! could claim no block (none unclaimed in the chosen pools, or maxBlocksPerHost reached).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::tests::{fixture, pool, set_config};
use super::*;

const NODES: [&str; 3] = ["n0", "n1", "n2"];

#[derive(Clone, Debug)]
enum Op {
    Assign {
        node: usize,
        v4: usize,
        v6: usize,
        /// 0: automatic pool choice, 1: pool "a", 2: pool "b".
        pool: usize,
    },
    AssignIp {
        node: usize,
        offset: u8,
    },
    ReleaseHandle(usize),
    ReleaseIp(usize),
    ReleaseHostAffinities {
        node: usize,
        require_empty: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..4usize, 0..3usize, 0..3usize)
            .prop_map(|(node, v4, v6, pool)| Op::Assign { node, v4, v6, pool }),
        1 => (0..3usize, 0..16u8).prop_map(|(node, offset)| Op::AssignIp { node, offset }),
        2 => any::<prop::sample::Index>().prop_map(|i| Op::ReleaseHandle(i.index(1 << 16))),
        2 => any::<prop::sample::Index>().prop_map(|i| Op::ReleaseIp(i.index(1 << 16))),
        1 => (0..3usize, any::<bool>())
            .prop_map(|(node, require_empty)| Op::ReleaseHostAffinities { node, require_empty }),
    ]
}

/// What the allocator should hold: address → handle.
#[derive(Default)]
struct Model {
    live: BTreeMap<IpAddr, String>,
    next_handle: usize,
}

impl Model {
    fn handles(&self) -> Vec<String> {
        self.live
            .values()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

async fn run(ops: Vec<Op>, strict: bool, max_blocks: Option<u32>) -> Result<(), TestCaseError> {
    let f = fixture(
        vec![
            pool("a", "198.18.0.0/28", 30),
            pool("b", "198.18.1.0/29", 30),
            pool("c", "2001:db8::/124", 126),
        ],
        &NODES,
    )
    .await;
    set_config(&f.ds, strict, max_blocks).await;
    let max = max_blocks.unwrap_or(api::ipam::DEFAULT_MAX_BLOCKS_PER_HOST) as usize;
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Assign { node, v4, v6, pool } => {
                let node = NODES[node];
                let handle = format!("h{}", m.next_handle);
                m.next_handle += 1;
                let pools_v4 = match pool {
                    1 => vec!["a".to_string()],
                    2 => vec!["198.18.1.0/29".to_string()],
                    _ => Vec::new(),
                };
                let owned_before = owned_per_family(&f.ipam, node).await;
                let req = AutoAssignRequest {
                    num_v4: v4,
                    num_v6: v6,
                    pools_v4: pools_v4.clone(),
                    ..AutoAssignRequest::new(&handle, node)
                };
                match f.ipam.auto_assign(&req).await {
                    Ok(got) => {
                        prop_assert_eq!(got.v4.len(), v4);
                        prop_assert_eq!(got.v6.len(), v6);
                        for n in got.v4.iter().chain(&got.v6) {
                            let prev = m.live.insert(n.addr(), handle.clone());
                            prop_assert!(prev.is_none(), "{} handed out twice", n.addr());
                        }
                        let blocks = f.ipam.list_blocks().await.unwrap();
                        for n in got.v4.iter().chain(&got.v6) {
                            let b = blocks
                                .iter()
                                .find(|b| b.block.cidr().contains(&n.addr()))
                                .expect("address in a block");
                            if b.block.affine_node() == Some(node) {
                                continue;
                            }
                            // Borrowed: only without strictAffinity, and only when the node
                            // could not claim a block (none unclaimed, or at its limit).
                            prop_assert!(!strict, "borrowed {} under strictAffinity", n.addr());
                            let fam = Family::of_addr(&n.addr());
                            let owned = owned_per_family(&f.ipam, node).await;
                            let pool_cidrs: Vec<IpNet> = match (fam, pool) {
                                (Family::V6, _) => vec![net("2001:db8::/124")],
                                (_, 1) => vec![net("198.18.0.0/28")],
                                (_, 2) => vec![net("198.18.1.0/29")],
                                _ => vec![net("198.18.0.0/28"), net("198.18.1.0/29")],
                            };
                            let all_claimed = pool_cidrs.iter().all(|p| {
                                p.subnets(if fam == Family::V4 { 30 } else { 126 })
                                    .unwrap()
                                    .all(|c| blocks.iter().any(|b| b.block.cidr() == c))
                            });
                            prop_assert!(
                                all_claimed || owned[&fam] >= max,
                                "{node} borrowed {} with unclaimed blocks and {} < {max} owned",
                                n.addr(),
                                owned[&fam]
                            );
                        }
                    }
                    Err(e) => {
                        prop_assert!(
                            matches!(e, IpamError::Exhausted { .. }),
                            "unexpected error: {}",
                            e
                        );
                        prop_assert!(f.ipam.ips_by_handle(&handle).await.unwrap().is_empty());
                        prop_assert!(f.ipam.get_handle(&handle).await.unwrap().is_none());
                    }
                }
                let owned_after = owned_per_family(&f.ipam, node).await;
                for fam in [Family::V4, Family::V6] {
                    prop_assert!(
                        owned_after[&fam] <= max.max(owned_before[&fam]),
                        "{node} holds {} {fam} blocks, limit {max}",
                        owned_after[&fam]
                    );
                }
            }
            Op::AssignIp { node, offset } => {
                let addr = u128_addr(net("198.18.0.0/28"), offset);
                let handle = format!("h{}", m.next_handle);
                m.next_handle += 1;
                let res = f
                    .ipam
                    .assign_ip(addr, &handle, &BTreeMap::new(), NODES[node])
                    .await;
                match (res, m.live.contains_key(&addr)) {
                    (Ok(()), false) => {
                        m.live.insert(addr, handle);
                    }
                    (Err(IpamError::Block { .. }), true) => {}
                    (res, held) => prop_assert!(false, "assign_ip {addr} (held: {held}): {res:?}"),
                }
            }
            Op::ReleaseHandle(i) => {
                let handles = m.handles();
                if handles.is_empty() {
                    continue;
                }
                let h = &handles[i % handles.len()];
                let expected = m.live.values().filter(|v| *v == h).count();
                let freed = f.ipam.release_by_handle(h).await.unwrap();
                prop_assert_eq!(freed, expected);
                m.live.retain(|_, v| v != h);
            }
            Op::ReleaseIp(i) => {
                if m.live.is_empty() {
                    continue;
                }
                let addr = *m.live.keys().nth(i % m.live.len()).unwrap();
                // A second address that may or may not be held: released or reported missing.
                let stranger = match u128_addr(net("2001:db8::/124"), 15) {
                    s if s == addr => u128_addr(net("2001:db8::/124"), 14),
                    s => s,
                };
                let missing = f.ipam.release_ips(&[addr, stranger]).await.unwrap();
                m.live.remove(&addr);
                prop_assert!(!missing.contains(&addr));
                prop_assert_eq!(missing.contains(&stranger), !m.live.contains_key(&stranger));
                m.live.remove(&stranger);
            }
            Op::ReleaseHostAffinities {
                node,
                require_empty,
            } => {
                f.ipam
                    .release_host_affinities(NODES[node], require_empty)
                    .await
                    .unwrap();
                if !require_empty {
                    prop_assert!(
                        f.ipam
                            .node_affinities(NODES[node])
                            .await
                            .unwrap()
                            .is_empty()
                    );
                }
            }
        }
        invariants(&f.ipam, &m).await?;
    }
    Ok(())
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn u128_addr(pool: IpNet, offset: u8) -> IpAddr {
    crate::family::u128_to_addr(
        Family::of_net(&pool),
        crate::family::addr_to_u128(pool.network()) + u128::from(offset),
    )
}

async fn owned_per_family(ipam: &Ipam, node: &str) -> BTreeMap<Family, usize> {
    let mut out = BTreeMap::from([(Family::V4, 0), (Family::V6, 0)]);
    for a in ipam.node_affinities(node).await.unwrap() {
        *out.get_mut(&Family::of_net(&a.spec.cidr.unwrap())).unwrap() += 1;
    }
    out
}

async fn invariants(ipam: &Ipam, m: &Model) -> Result<(), TestCaseError> {
    let listing = ipam.ds.list(Kind::IPAMBlock).await.unwrap();
    let mut held: BTreeMap<IpAddr, String> = BTreeMap::new();
    for r in listing.items {
        let Resource::IPAMBlock(obj) = r else {
            unreachable!()
        };
        // from_spec checks the layout: one slot per address, unallocated = free ordinals.
        let block = Block::from_spec(&obj.metadata.name, obj.spec)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(block.free() + block.in_use(), block.size());
        // An empty block without affinity is deleted when its last address goes.
        prop_assert!(
            block.affine_node().is_some() || !block.is_empty(),
            "{}",
            block.cidr()
        );
        // A block affine to a node has that node's Confirmed affinity, and only then.
        if let Some(node) = block.affine_node() {
            let aff = ipam.get_affinity(node, &block.cidr()).await.unwrap();
            prop_assert_eq!(aff.map(|a| a.spec.state), Some(AffinityState::Confirmed));
        }
        for (addr, attr) in block.allocated() {
            let prev = held.insert(addr, attr.handle_id.clone().unwrap_or_default());
            prop_assert!(prev.is_none(), "{addr} in two blocks");
        }
    }
    prop_assert_eq!(&held, &m.live);
    let report = ipam.check().await.unwrap();
    prop_assert!(report.is_clean(), "check: {:?}", report);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_never_double_allocate_and_always_balance(
        ops in prop::collection::vec(op(), 1..40),
        strict in any::<bool>(),
        max_blocks in prop::option::of(1u32..4),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops, strict, max_blocks))?;
    }
}
