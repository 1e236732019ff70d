//! [`Ipam`] against the in-memory datastore: affinity, borrowing, limits, pool rules, release,
//! crash recovery, check and repair. The allocator invariants under random operation sequences
//! are in `proptests.rs`; real multi-process contention is in `tests/concurrency.rs`.

use std::collections::BTreeMap;

use api::ippool::AssignmentMode;
use api::{IPAMConfig, IPPoolSpec, Node, NodeSpec};
use datastore::MemoryDatastore;

use super::*;

pub(crate) fn pool(name: &str, cidr: &str, block_size: u8) -> IPPool {
    IPPool::new(
        name,
        IPPoolSpec {
            cidr: Some(cidr.parse().unwrap()),
            block_size: Some(block_size),
            ..IPPoolSpec::default()
        },
    )
}

pub(crate) struct Fixture {
    pub ds: MemoryDatastore,
    pub ipam: Ipam,
}

pub(crate) async fn fixture(pools: Vec<IPPool>, nodes: &[&str]) -> Fixture {
    let ds = MemoryDatastore::new();
    for p in pools {
        ds.create(p.into()).await.unwrap();
    }
    for n in nodes {
        add_node(&ds, n, &[]).await;
    }
    let ipam = Ipam::new(Arc::new(ds.clone()));
    Fixture { ds, ipam }
}

pub(crate) async fn add_node(ds: &MemoryDatastore, name: &str, labels: &[(&str, &str)]) {
    let mut node = Node::new(name, NodeSpec::default());
    node.metadata.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ds.create(node.into()).await.unwrap();
}

pub(crate) async fn set_config(ds: &MemoryDatastore, strict: bool, max_blocks: Option<u32>) {
    let cfg = IPAMConfig::new(
        IPAM_CONFIG_NAME,
        IPAMConfigSpec {
            strict_affinity: strict,
            auto_allocate_blocks: None,
            max_blocks_per_host: max_blocks,
        },
    );
    match ds.create(cfg.clone().into()).await {
        Ok(_) => {}
        Err(DsError::AlreadyExists(_)) => {
            ds.update(cfg.into()).await.unwrap();
        }
        Err(e) => panic!("{e}"),
    }
}

fn req(handle: &str, node: &str, v4: usize, v6: usize) -> AutoAssignRequest {
    AutoAssignRequest {
        num_v4: v4,
        num_v6: v6,
        ..AutoAssignRequest::new(handle, node)
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn block_of(f: &Fixture, cidr: &str) -> Block {
    f.ipam.read_block(net(cidr)).await.unwrap().unwrap().block
}

async fn affinity_state(f: &Fixture, node: &str, cidr: &str) -> Option<AffinityState> {
    f.ipam
        .get_affinity(node, &net(cidr))
        .await
        .unwrap()
        .map(|a| a.spec.state)
}

fn blocks_of(a: &[IpNet]) -> BTreeSet<IpNet> {
    a.iter().map(|n| n.trunc()).collect()
}

#[tokio::test]
async fn allocates_from_own_block_first() {
    let f = fixture(vec![pool("p", "198.18.0.0/24", 26)], &["n1"]).await;
    let a = f.ipam.auto_assign(&req("h1", "n1", 1, 0)).await.unwrap();
    let b = f.ipam.auto_assign(&req("h2", "n1", 2, 0)).await.unwrap();
    assert_eq!(a.v4[0].prefix_len(), 26);
    let block = a.v4[0].trunc();
    assert_eq!(blocks_of(&b.v4), BTreeSet::from([block]));
    let stored = block_of(&f, &block.to_string()).await;
    assert_eq!(stored.affine_node(), Some("n1"));
    assert_eq!(stored.in_use(), 3);
    assert_eq!(
        affinity_state(&f, "n1", &block.to_string()).await,
        Some(AffinityState::Confirmed)
    );
    let attrs = stored.attribute_of(a.v4[0].addr()).unwrap();
    assert_eq!(attrs.handle_id.as_deref(), Some("h1"));
    assert_eq!(
        attrs.secondary.get(ATTR_NODE).map(String::as_str),
        Some("n1")
    );
    let h = f.ipam.get_handle("h2").await.unwrap().unwrap();
    assert_eq!(h.spec.block, BTreeMap::from([(block.to_string(), 2)]));
}

#[tokio::test]
async fn claims_new_block_when_full() {
    let f = fixture(vec![pool("p", "198.18.0.0/28", 30)], &["n1"]).await;
    let a = f.ipam.auto_assign(&req("h1", "n1", 4, 0)).await.unwrap();
    assert_eq!(blocks_of(&a.v4).len(), 1);
    let b = f.ipam.auto_assign(&req("h2", "n1", 1, 0)).await.unwrap();
    let second = b.v4[0].trunc();
    assert!(!blocks_of(&a.v4).contains(&second));
    assert_eq!(
        block_of(&f, &second.to_string()).await.affine_node(),
        Some("n1")
    );
    // One request can span blocks: 5 more take the rest of the second and a third block.
    let c = f.ipam.auto_assign(&req("h3", "n1", 5, 0)).await.unwrap();
    assert_eq!(c.v4.len(), 5);
    assert_eq!(f.ipam.node_affinities("n1").await.unwrap().len(), 3);
    let h = f.ipam.get_handle("h3").await.unwrap().unwrap();
    assert_eq!(h.spec.block.values().sum::<u32>(), 5);
    assert_eq!(h.spec.block.len(), 2);
}

#[tokio::test]
async fn respects_max_blocks_per_host() {
    let f = fixture(vec![pool("p", "198.18.0.0/26", 30)], &["n1", "n2"]).await;
    set_config(&f.ds, true, Some(2)).await;
    f.ipam.auto_assign(&req("h1", "n1", 8, 0)).await.unwrap();
    let err = f
        .ipam
        .auto_assign(&req("h2", "n1", 1, 0))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("pool exhausted"), "{msg}");
    assert!(msg.contains("maxBlocksPerHost"), "{msg}");
    assert_eq!(f.ipam.node_affinities("n1").await.unwrap().len(), 2);

    // Without strictAffinity the node at its limit borrows rather than claiming a third block.
    set_config(&f.ds, false, Some(2)).await;
    let n2 = f.ipam.auto_assign(&req("g1", "n2", 1, 0)).await.unwrap();
    let borrowed = f.ipam.auto_assign(&req("h2", "n1", 1, 0)).await.unwrap();
    assert_eq!(borrowed.v4[0].trunc(), n2.v4[0].trunc());
    assert_eq!(f.ipam.node_affinities("n1").await.unwrap().len(), 2);
    assert_eq!(
        block_of(&f, &n2.v4[0].trunc().to_string())
            .await
            .affine_node(),
        Some("n2")
    );
}

#[tokio::test]
async fn borrows_only_when_pool_has_no_free_block() {
    // Two /30 blocks in the pool.
    let f = fixture(vec![pool("p", "198.18.0.0/29", 30)], &["n1", "n2"]).await;
    let a = f.ipam.auto_assign(&req("a", "n1", 1, 0)).await.unwrap();
    let b = f.ipam.auto_assign(&req("b", "n2", 1, 0)).await.unwrap();
    let (block_a, block_b) = (a.v4[0].trunc(), b.v4[0].trunc());
    assert_ne!(block_a, block_b);
    // n1 fills its own block before anything else.
    let more = f.ipam.auto_assign(&req("c", "n1", 3, 0)).await.unwrap();
    assert_eq!(blocks_of(&more.v4), BTreeSet::from([block_a]));
    // Now there is no unclaimed block: n1 borrows from n2's.
    let borrowed = f.ipam.auto_assign(&req("d", "n1", 2, 0)).await.unwrap();
    assert_eq!(blocks_of(&borrowed.v4), BTreeSet::from([block_b]));
    assert_eq!(
        block_of(&f, &block_b.to_string()).await.affine_node(),
        Some("n2")
    );
    assert_eq!(f.ipam.node_affinities("n1").await.unwrap().len(), 1);

    // With a free block in the pool, a full node claims it instead of borrowing.
    let g = fixture(vec![pool("p", "198.18.0.0/28", 30)], &["n1", "n2"]).await;
    g.ipam.auto_assign(&req("b", "n2", 1, 0)).await.unwrap();
    let own = g.ipam.auto_assign(&req("a", "n1", 4, 0)).await.unwrap();
    let next = g.ipam.auto_assign(&req("c", "n1", 1, 0)).await.unwrap();
    let blk = block_of(&g, &next.v4[0].trunc().to_string()).await;
    assert_eq!(blk.affine_node(), Some("n1"));
    assert!(!blocks_of(&own.v4).contains(&blk.cidr()));
}

#[tokio::test]
async fn strict_affinity_fails_with_pool_exhausted_and_leaks_nothing() {
    let f = fixture(vec![pool("p", "198.18.0.0/29", 30)], &["n1", "n2"]).await;
    set_config(&f.ds, true, None).await;
    f.ipam.auto_assign(&req("a", "n1", 4, 0)).await.unwrap();
    f.ipam.auto_assign(&req("b", "n2", 1, 0)).await.unwrap();
    let err = f.ipam.auto_assign(&req("c", "n1", 2, 0)).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("assigning 2 IPv4 address(es) to handle c on node n1: pool exhausted in p (198.18.0.0/29)"),
        "{msg}"
    );
    assert!(msg.contains("strictAffinity forbids borrowing"), "{msg}");
    assert!(f.ipam.get_handle("c").await.unwrap().is_none());
    let usage = f.ipam.usage().await.unwrap();
    assert_eq!(usage.pools[0].in_use, 5);
    assert!(f.ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn node_selector_disabled_and_allowed_uses_are_respected() {
    let mut rack_a = pool("rack-a", "198.18.1.0/24", 26);
    rack_a.spec.node_selector = Some("rack == 'a'".into());
    let mut off = pool("off", "198.18.2.0/24", 26);
    off.spec.disabled = true;
    let mut tunnels = pool("tunnels", "198.18.3.0/24", 26);
    tunnels.spec.allowed_uses = Some(vec![AllowedUse::Tunnel]);
    let f = fixture(vec![rack_a, off, tunnels], &[]).await;
    add_node(&f.ds, "na", &[("rack", "a")]).await;
    add_node(&f.ds, "nb", &[("rack", "b")]).await;

    let a = f.ipam.auto_assign(&req("a", "na", 1, 0)).await.unwrap();
    assert!(net("198.18.1.0/24").contains(&a.v4[0].addr()));
    let err = f.ipam.auto_assign(&req("b", "nb", 1, 0)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "no enabled IPv4 pool allows Workload addresses for node nb"
    );
    let t = f
        .ipam
        .auto_assign(&AutoAssignRequest {
            use_: AllowedUse::Tunnel,
            ..req(&vxlan_tunnel_handle("nb"), "nb", 1, 0)
        })
        .await
        .unwrap();
    assert!(net("198.18.3.0/24").contains(&t.v4[0].addr()));
    let err = f
        .ipam
        .auto_assign(&AutoAssignRequest {
            pools_v4: vec!["rack-a".into()],
            ..req("c", "nb", 1, 0)
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not select the node"),
        "{err}"
    );
    let err = f
        .ipam
        .auto_assign(&AutoAssignRequest {
            pools_v4: vec!["198.18.2.0/24".into()],
            ..req("c", "na", 1, 0)
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "pool off cannot serve node na: it is disabled"
    );
}

#[tokio::test]
async fn manual_pools_only_when_named() {
    let mut manual = pool("manual", "198.18.4.0/24", 26);
    manual.spec.assignment_mode = Some(AssignmentMode::Manual);
    let f = fixture(vec![pool("auto", "198.18.0.0/24", 26), manual], &["n1"]).await;
    for i in 0..5 {
        let a = f
            .ipam
            .auto_assign(&req(&format!("h{i}"), "n1", 1, 0))
            .await
            .unwrap();
        assert!(net("198.18.0.0/24").contains(&a.v4[0].addr()));
    }
    let m = f
        .ipam
        .auto_assign(&AutoAssignRequest {
            pools_v4: vec!["manual".into()],
            ..req("m", "n1", 1, 0)
        })
        .await
        .unwrap();
    assert!(net("198.18.4.0/24").contains(&m.v4[0].addr()));
}

#[tokio::test]
async fn dual_stack_assign_lookup_and_release_by_handle() {
    let f = fixture(
        vec![
            pool("v4", "198.18.0.0/24", 26),
            pool("v6", "2001:db8::/120", 122),
        ],
        &["n1"],
    )
    .await;
    let handle = pod_handle("k8s-pod-network", "abc123");
    assert_eq!(handle, "k8s-pod-network.abc123");
    let got = f.ipam.auto_assign(&req(&handle, "n1", 1, 2)).await.unwrap();
    assert_eq!(got.v4.len(), 1);
    assert_eq!(got.v6.len(), 2);
    assert_eq!(got.v6[0].prefix_len(), 122);
    let mut listed = f.ipam.ips_by_handle(&handle).await.unwrap();
    listed.sort();
    let mut expected: Vec<IpNet> = got.v4.iter().chain(&got.v6).copied().collect();
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(f.ipam.release_by_handle(&handle).await.unwrap(), 3);
    assert!(f.ipam.get_handle(&handle).await.unwrap().is_none());
    assert!(f.ipam.ips_by_handle(&handle).await.unwrap().is_empty());
    assert_eq!(f.ipam.release_by_handle(&handle).await.unwrap(), 0);
    let usage = f.ipam.usage().await.unwrap();
    assert!(usage.pools.iter().all(|p| p.in_use == 0));
    // Affine blocks stay with their node after they empty, as in Calico.
    assert_eq!(usage.pools[0].blocks.len(), 1);
    assert!(f.ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn failure_partway_releases_what_was_taken() {
    let f = fixture(vec![pool("v4", "198.18.0.0/24", 26)], &["n1"]).await;
    let err = f.ipam.auto_assign(&req("h", "n1", 2, 1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::NoPools {
                family: Family::V6,
                ..
            }
        ),
        "{err}"
    );
    assert!(f.ipam.get_handle("h").await.unwrap().is_none());
    assert_eq!(f.ipam.usage().await.unwrap().pools[0].in_use, 0);
    // And within one family: 3 of 4 fit, so none is kept.
    let g = fixture(vec![pool("v4", "198.18.0.0/30", 30)], &["n1"]).await;
    g.ipam.auto_assign(&req("x", "n1", 1, 0)).await.unwrap();
    g.ipam.auto_assign(&req("h", "n1", 4, 0)).await.unwrap_err();
    assert_eq!(g.ipam.usage().await.unwrap().pools[0].in_use, 1);
    assert!(g.ipam.get_handle("h").await.unwrap().is_none());
    assert!(g.ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn assign_ip_and_release_ips() {
    let f = fixture(vec![pool("p", "198.18.0.0/24", 26)], &["n1", "n2"]).await;
    let attrs = BTreeMap::from([("pod".to_string(), "web-0".to_string())]);
    f.ipam
        .assign_ip(ip("198.18.0.70"), "h1", &attrs, "n1")
        .await
        .unwrap();
    let blk = block_of(&f, "198.18.0.64/26").await;
    assert_eq!(blk.affine_node(), Some("n1"));
    assert_eq!(
        blk.attribute_of(ip("198.18.0.70")).unwrap().secondary["pod"],
        "web-0"
    );
    let err = f
        .ipam
        .assign_ip(ip("198.18.0.70"), "h2", &attrs, "n2")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("already assigned (handle h1)"),
        "{err}"
    );
    // Another node may take a given address from n1's block (borrowing).
    f.ipam
        .assign_ip(ip("198.18.0.71"), "h2", &attrs, "n2")
        .await
        .unwrap();
    let err = f
        .ipam
        .assign_ip(ip("203.0.113.1"), "h3", &attrs, "n1")
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "address 203.0.113.1 is not in any IP pool");

    let missing = f
        .ipam
        .release_ips(&[ip("198.18.0.70"), ip("198.18.0.72"), ip("203.0.113.1")])
        .await
        .unwrap();
    assert_eq!(missing, vec![ip("203.0.113.1"), ip("198.18.0.72")]);
    assert!(f.ipam.get_handle("h1").await.unwrap().is_none());
    // The freed ordinal went to the back of the queue.
    let blk = block_of(&f, "198.18.0.64/26").await;
    assert_eq!(blk.spec().unallocated.last(), Some(&6));
    assert!(f.ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn released_affinity_of_busy_block_leaves_it_borrowable_until_empty() {
    let f = fixture(vec![pool("p", "198.18.0.0/24", 26)], &["n1"]).await;
    let a = f.ipam.auto_assign(&req("h", "n1", 2, 0)).await.unwrap();
    let cidr = a.v4[0].trunc();
    let err = f.ipam.release_affinity(cidr, "n1", true).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("block {cidr} of node n1 still holds 2 address(es)")
    );
    f.ipam.release_affinity(cidr, "n1", false).await.unwrap();
    assert_eq!(affinity_state(&f, "n1", &cidr.to_string()).await, None);
    assert_eq!(block_of(&f, &cidr.to_string()).await.affine_node(), None);
    f.ipam.release_ips(&[a.v4[0].addr()]).await.unwrap();
    assert!(f.ipam.read_block(cidr).await.unwrap().is_some());
    // Freeing its last address deletes the unaffine block.
    f.ipam.release_ips(&[a.v4[1].addr()]).await.unwrap();
    assert!(f.ipam.read_block(cidr).await.unwrap().is_none());
    assert!(f.ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn release_host_affinities_frees_empty_blocks() {
    let f = fixture(vec![pool("p", "198.18.0.0/28", 30)], &["n1"]).await;
    let keep = f.ipam.auto_assign(&req("keep", "n1", 4, 0)).await.unwrap();
    let gone = f.ipam.auto_assign(&req("gone", "n1", 1, 0)).await.unwrap();
    f.ipam.release_by_handle("gone").await.unwrap();
    assert_eq!(f.ipam.release_host_affinities("n1", true).await.unwrap(), 1);
    assert!(
        f.ipam
            .read_block(gone.v4[0].trunc())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(f.ipam.node_affinities("n1").await.unwrap().len(), 1);
    assert_eq!(
        f.ipam.release_host_affinities("n1", false).await.unwrap(),
        1
    );
    assert!(f.ipam.node_affinities("n1").await.unwrap().is_empty());
    let blk = block_of(&f, &keep.v4[0].trunc().to_string()).await;
    assert_eq!(blk.affine_node(), None);
    assert_eq!(blk.in_use(), 4);
}

async fn put_affinity(f: &Fixture, node: &str, cidr: &str, state: AffinityState) -> BlockAffinity {
    let cidr = net(cidr);
    let aff = BlockAffinity::new(
        affinity_name(node, &cidr),
        BlockAffinitySpec {
            state,
            node: node.into(),
            cidr: Some(cidr),
            deleted: false,
            type_: Some("host".into()),
        },
    );
    match f.ds.create(aff.into()).await.unwrap() {
        Resource::BlockAffinity(a) => a,
        _ => unreachable!(),
    }
}

async fn put_block(f: &Fixture, cidr: &str, node: Option<&str>) {
    let b = Block::new(net(cidr), node.map(host_affinity), false).unwrap();
    f.ds.create(IPAMBlock::new(block_name(&net(cidr)), b.into_spec()).into())
        .await
        .unwrap();
}

#[tokio::test]
async fn crash_after_block_creation_is_confirmed_at_next_allocation() {
    let f = fixture(vec![pool("p", "198.18.0.0/24", 26)], &["n1"]).await;
    put_affinity(&f, "n1", "198.18.0.128/26", AffinityState::Pending).await;
    put_block(&f, "198.18.0.128/26", Some("n1")).await;
    let a = f.ipam.auto_assign(&req("h", "n1", 1, 0)).await.unwrap();
    assert_eq!(a.v4[0].trunc(), net("198.18.0.128/26"));
    assert_eq!(
        affinity_state(&f, "n1", "198.18.0.128/26").await,
        Some(AffinityState::Confirmed)
    );
}

#[tokio::test]
async fn crash_before_block_creation_is_retried_or_cleaned() {
    let f = fixture(vec![pool("p", "198.18.0.0/24", 26)], &["n1", "n2"]).await;
    // Pending without a block: the claim is carried on.
    put_affinity(&f, "n1", "198.18.0.192/26", AffinityState::Pending).await;
    // Pending for a block someone else got: the affinity is dropped.
    put_block(&f, "198.18.0.0/26", Some("n2")).await;
    put_affinity(&f, "n1", "198.18.0.0/26", AffinityState::Pending).await;
    let a = f.ipam.auto_assign(&req("h", "n1", 1, 0)).await.unwrap();
    assert_eq!(a.v4[0].trunc(), net("198.18.0.192/26"));
    assert_eq!(
        affinity_state(&f, "n1", "198.18.0.192/26").await,
        Some(AffinityState::Confirmed)
    );
    assert_eq!(affinity_state(&f, "n1", "198.18.0.0/26").await, None);
    assert_eq!(
        block_of(&f, "198.18.0.0/26").await.affine_node(),
        Some("n2")
    );
}

#[tokio::test]
async fn check_reports_and_repairs_a_leaked_address() {
    let f = fixture(vec![pool("p", "198.18.0.0/24", 26)], &["n1"]).await;
    let a = f.ipam.auto_assign(&req("gone", "n1", 1, 0)).await.unwrap();
    f.ipam.auto_assign(&req("live", "n1", 1, 0)).await.unwrap();
    f.ds.delete(&Key::new(Kind::IPAMHandle, "gone"), None)
        .await
        .unwrap();
    let report = f.ipam.check().await.unwrap();
    assert_eq!(report.leaked_addresses.len(), 1);
    assert_eq!(report.leaked_addresses[0].ip, a.v4[0].addr());
    assert_eq!(report.leaked_addresses[0].handle.as_deref(), Some("gone"));
    // The report survives a trip through JSON, as `ipam check -o` / `release --from-report` do.
    let report: CheckReport =
        serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    let sum = f.ipam.release_from_report(&report).await.unwrap();
    assert_eq!(sum.released_addresses, vec![a.v4[0].addr()]);
    let after = f.ipam.check().await.unwrap();
    assert!(after.is_clean(), "{after:?}");
    assert_eq!(after.summary.addresses_in_use, 1);
}

#[tokio::test]
async fn stale_report_does_not_free_a_live_address() {
    let f = fixture(vec![pool("p", "198.18.0.0/24", 26)], &["n1"]).await;
    let a = f.ipam.auto_assign(&req("gone", "n1", 1, 0)).await.unwrap();
    let addr = a.v4[0].addr();
    f.ds.delete(&Key::new(Kind::IPAMHandle, "gone"), None)
        .await
        .unwrap();
    let stale = f.ipam.check().await.unwrap();
    assert_eq!(stale.leaked_addresses.len(), 1);
    // Meanwhile the address is freed and handed to a new pod.
    f.ipam.release_ips(&[addr]).await.unwrap();
    f.ipam
        .assign_ip(addr, "new-pod", &BTreeMap::new(), "n1")
        .await
        .unwrap();
    let sum = f.ipam.release_from_report(&stale).await.unwrap();
    assert!(sum.released_addresses.is_empty());
    assert_eq!(sum.skipped.len(), 1, "{sum:?}");
    assert_eq!(
        f.ipam.ips_by_handle("new-pod").await.unwrap(),
        vec![IpNet::new(addr, 26).unwrap()]
    );
    assert!(f.ipam.check().await.unwrap().is_clean());

    // Same for a handle the report thought empty that has since been given an address.
    f.ipam
        .adjust_handle("ghost", &net("198.18.0.0/26"), 1)
        .await
        .unwrap();
    let stale = f.ipam.check().await.unwrap();
    assert_eq!(stale.handles_without_addresses.len(), 1);
    f.ipam.auto_assign(&req("ghost", "n1", 1, 0)).await.unwrap();
    let sum = f.ipam.release_from_report(&stale).await.unwrap();
    assert!(sum.deleted_handles.is_empty(), "{sum:?}");
    assert_eq!(f.ipam.ips_by_handle("ghost").await.unwrap().len(), 1);
}

#[tokio::test]
async fn check_reports_and_repairs_handle_problems() {
    let f = fixture(vec![pool("p", "198.18.0.0/24", 26)], &["n1"]).await;
    let a = f.ipam.auto_assign(&req("h", "n1", 2, 0)).await.unwrap();
    let cidr = a.v4[0].trunc();
    f.ipam.adjust_handle("h", &cidr, 3).await.unwrap();
    f.ipam.adjust_handle("empty", &cidr, 1).await.unwrap();
    let report = f.ipam.check().await.unwrap();
    assert_eq!(report.handle_mismatches.len(), 1);
    assert_eq!(report.handle_mismatches[0].recorded[&cidr.to_string()], 5);
    assert_eq!(report.handle_mismatches[0].actual[&cidr.to_string()], 2);
    assert_eq!(report.handles_without_addresses.len(), 1);
    let sum = f.ipam.release_from_report(&report).await.unwrap();
    assert_eq!(sum.corrected_handles, vec!["h".to_string()]);
    assert_eq!(sum.deleted_handles, vec!["empty".to_string()]);
    assert!(f.ipam.check().await.unwrap().is_clean());
    assert_eq!(f.ipam.release_by_handle("h").await.unwrap(), 2);
}

#[tokio::test]
async fn check_reports_and_repairs_blocks_of_deleted_nodes() {
    let f = fixture(vec![pool("p", "198.18.0.0/24", 26)], &["n1", "n2"]).await;
    let a = f.ipam.auto_assign(&req("h1", "n1", 1, 0)).await.unwrap();
    let b = f.ipam.auto_assign(&req("h2", "n2", 1, 0)).await.unwrap();
    f.ipam.release_by_handle("h2").await.unwrap();
    f.ds.delete(&Key::new(Kind::Node, "n1"), None)
        .await
        .unwrap();
    f.ds.delete(&Key::new(Kind::Node, "n2"), None)
        .await
        .unwrap();
    let report = f.ipam.check().await.unwrap();
    assert_eq!(report.blocks_of_missing_nodes.len(), 2);
    // n2 comes back before the repair: its block is left alone.
    add_node(&f.ds, "n2", &[]).await;
    let sum = f.ipam.release_from_report(&report).await.unwrap();
    assert_eq!(sum.released_blocks, vec![a.v4[0].trunc()]);
    assert_eq!(sum.skipped.len(), 1, "{sum:?}");
    // n1's block still holds h1's address: it loses its affinity but stays.
    let blk = block_of(&f, &a.v4[0].trunc().to_string()).await;
    assert_eq!(blk.affine_node(), None);
    assert_eq!(blk.in_use(), 1);
    assert_eq!(
        block_of(&f, &b.v4[0].trunc().to_string())
            .await
            .affine_node(),
        Some("n2")
    );
    assert!(f.ipam.check().await.unwrap().is_clean());
    // Its last address freed, the unaffine block goes.
    f.ipam.release_by_handle("h1").await.unwrap();
    assert!(f.ipam.read_block(a.v4[0].trunc()).await.unwrap().is_none());
}

#[tokio::test]
async fn check_reports_and_repairs_pending_affinities() {
    let f = fixture(vec![pool("p", "198.18.0.0/24", 26)], &["n1", "n2"]).await;
    put_affinity(&f, "n1", "198.18.0.0/26", AffinityState::Pending).await;
    put_affinity(&f, "n1", "198.18.0.64/26", AffinityState::Pending).await;
    put_block(&f, "198.18.0.64/26", Some("n1")).await;
    put_affinity(&f, "n2", "198.18.0.128/26", AffinityState::Pending).await;
    put_block(&f, "198.18.0.128/26", Some("n1")).await;
    let stale_one = put_affinity(&f, "n2", "198.18.0.192/26", AffinityState::Pending).await;
    let report = f.ipam.check().await.unwrap();
    assert_eq!(report.pending_affinities.len(), 4);
    // One claim moves on after the report: the repair must leave it alone.
    let mut moved = stale_one.clone();
    moved.spec.type_ = Some("host".into());
    f.ds.update(moved.into()).await.unwrap();
    let sum = f.ipam.release_from_report(&report).await.unwrap();
    assert_eq!(sum.resolved_affinities.len(), 3, "{sum:?}");
    assert_eq!(sum.skipped.len(), 1, "{sum:?}");
    assert_eq!(affinity_state(&f, "n1", "198.18.0.0/26").await, None);
    assert_eq!(
        affinity_state(&f, "n1", "198.18.0.64/26").await,
        Some(AffinityState::Confirmed)
    );
    assert_eq!(affinity_state(&f, "n2", "198.18.0.128/26").await, None);
    assert_eq!(
        affinity_state(&f, "n2", "198.18.0.192/26").await,
        Some(AffinityState::Pending)
    );
}

#[tokio::test]
async fn tunnel_handles_follow_calico_names() {
    assert_eq!(ipip_tunnel_handle("n1"), "ipip-tunnel-addr-n1");
    assert_eq!(vxlan_tunnel_handle("n1"), "vxlan-tunnel-addr-n1");
    let f = fixture(vec![pool("p", "198.18.0.0/24", 26)], &["n1"]).await;
    let a = f
        .ipam
        .auto_assign(&AutoAssignRequest {
            use_: AllowedUse::Tunnel,
            ..req(&ipip_tunnel_handle("n1"), "n1", 1, 0)
        })
        .await
        .unwrap();
    assert_eq!(
        f.ipam.ips_by_handle("ipip-tunnel-addr-n1").await.unwrap(),
        a.v4
    );
}

#[tokio::test]
async fn usage_reports_per_pool_and_block() {
    let f = fixture(vec![pool("p", "198.18.0.0/24", 26)], &["n1", "n2"]).await;
    f.ipam.auto_assign(&req("a", "n1", 3, 0)).await.unwrap();
    f.ipam.auto_assign(&req("b", "n2", 1, 0)).await.unwrap();
    let u = f.ipam.usage().await.unwrap();
    assert_eq!(u.pools.len(), 1);
    assert_eq!(
        (u.pools[0].total, u.pools[0].in_use, u.pools[0].free),
        (256, 4, 252)
    );
    let per_node: BTreeMap<_, _> = u.pools[0]
        .blocks
        .iter()
        .map(|b| (b.node.clone().unwrap(), (b.total, b.in_use, b.free)))
        .collect();
    assert_eq!(per_node["n1"], (64, 3, 61));
    assert_eq!(per_node["n2"], (64, 1, 63));
}

#[tokio::test]
async fn stale_confirmed_affinities_are_carried_forward_when_met() {
    let f = fixture(vec![pool("p", "198.18.0.0/24", 26)], &["n1", "n2"]).await;
    // Confirmed, but the block is gone (deleted by hand): recreated and used.
    put_affinity(&f, "n1", "198.18.0.0/26", AffinityState::Confirmed).await;
    // Confirmed, but a release that crashed left the block without affinity: abandoned.
    put_affinity(&f, "n2", "198.18.0.64/26", AffinityState::Confirmed).await;
    put_block(&f, "198.18.0.64/26", None).await;
    let a = f.ipam.auto_assign(&req("a", "n1", 1, 0)).await.unwrap();
    assert_eq!(a.v4[0].trunc(), net("198.18.0.0/26"));
    assert_eq!(
        block_of(&f, "198.18.0.0/26").await.affine_node(),
        Some("n1")
    );
    let b = f.ipam.auto_assign(&req("b", "n2", 1, 0)).await.unwrap();
    assert_ne!(b.v4[0].trunc(), net("198.18.0.64/26"));
    assert_eq!(affinity_state(&f, "n2", "198.18.0.64/26").await, None);
    assert_eq!(f.ipam.node_affinities("n2").await.unwrap().len(), 1);
}

/// A datastore whose block updates always lose the compare-and-swap.
struct AlwaysConflicting(MemoryDatastore);

#[async_trait::async_trait]
impl Datastore for AlwaysConflicting {
    async fn get(&self, key: &Key) -> Result<Resource, DsError> {
        self.0.get(key).await
    }
    async fn list(&self, kind: Kind) -> Result<datastore::Listing, DsError> {
        self.0.list(kind).await
    }
    async fn create(&self, resource: Resource) -> Result<Resource, DsError> {
        self.0.create(resource).await
    }
    async fn update(&self, resource: Resource) -> Result<Resource, DsError> {
        if resource.kind() == Kind::IPAMBlock {
            return Err(DsError::Conflict {
                key: resource.key(),
                expected: Revision(1),
                current: Revision(2),
            });
        }
        self.0.update(resource).await
    }
    async fn delete(&self, key: &Key, expected: Option<Revision>) -> Result<Resource, DsError> {
        self.0.delete(key, expected).await
    }
    async fn watch(
        &self,
        kind: Option<Kind>,
        after: Revision,
    ) -> Result<datastore::Watch, DsError> {
        self.0.watch(kind, after).await
    }
}

#[tokio::test]
async fn lost_compare_and_swap_gives_up_after_the_bound_and_undoes_the_handle() {
    let f = fixture(vec![pool("p", "198.18.0.0/24", 26)], &["n1"]).await;
    let ipam = Ipam::new(Arc::new(AlwaysConflicting(f.ds.clone()))).with_max_retries(3);
    let err = ipam.auto_assign(&req("h", "n1", 1, 0)).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("assigning from block 198.18.0.")
            && msg.ends_with("to handle h: revision conflict after 3 retries"),
        "{msg}"
    );
    assert!(f.ipam.get_handle("h").await.unwrap().is_none());
    assert!(f.ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn pending_claim_in_a_deleted_pool_is_dropped_not_completed() {
    let f = fixture(vec![pool("p", "198.18.0.0/24", 26)], &["n1"]).await;
    put_affinity(&f, "n1", "198.19.0.0/26", AffinityState::Pending).await;
    f.ipam.auto_assign(&req("h", "n1", 1, 0)).await.unwrap();
    assert_eq!(affinity_state(&f, "n1", "198.19.0.0/26").await, None);
    assert!(
        f.ipam
            .read_block(net("198.19.0.0/26"))
            .await
            .unwrap()
            .is_none()
    );
}
