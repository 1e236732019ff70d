//! Garbage collection of pod addresses whose pod is gone.
//!
//! The CNI plugin frees a pod's address at DEL. A pod that never gets its DEL (force-deleted,
//! its node died and came back, a runtime that lost track) keeps its address forever, and a
//! churning cluster slowly drains its pools. Calico's kube-controllers runs an IPAM garbage
//! collector for this; tabby-node does it for the blocks affine to its own node, so no leader
//! election is needed: every allocation is looked after by the node that made it.
//!
//! An allocation is a candidate when it carries the pod's `namespace` and `pod` attributes (the
//! CNI plugin records them) and no WorkloadEndpoint of that pod holds the address. It is
//! released only after it has stayed a candidate for the whole grace period ([`Tracker`]):
//! between IPAM and the endpoint write, an ADD in progress looks exactly like a leak. Before
//! releasing, the endpoints are read again.
//!
//! ```text
//!   every INTERVAL: blocks affine to this node ─┐
//!                   WorkloadEndpoints ──────────┴─▶ candidates ─▶ Tracker (grace) ─▶ release_by_handle
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{IPAMBlock, Kind, Resource, WorkloadEndpoint};
use datastore::Datastore;
use ipam::Ipam;
use ipam::block::Block;
use tracing::{debug, info, warn};

/// How often tabby-node looks for leaked pod addresses.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// How long an address must stay without its pod before it is freed (Calico kube-controllers'
/// leak grace period is 15 minutes).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(15 * 60);

/// An address whose pod no longer has it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Orphan {
    pub ip: IpAddr,
    pub handle: String,
    pub namespace: String,
    pub pod: String,
}

/// (namespace, pod) → the addresses its endpoints hold.
pub type PodAddresses = BTreeMap<(String, String), BTreeSet<IpAddr>>;

/// What the endpoints say each pod holds.
pub fn pod_addresses(endpoints: &[WorkloadEndpoint]) -> PodAddresses {
    let mut out = PodAddresses::new();
    for w in endpoints {
        let (Some(ns), Some(pod)) = (w.metadata.namespace.as_ref(), w.spec.pod.as_ref()) else {
            continue;
        };
        let ips = out.entry((ns.clone(), pod.clone())).or_default();
        for net in &w.spec.ip_networks {
            if let Ok(ip) = net.split('/').next().unwrap_or(net).parse() {
                ips.insert(ip);
            }
        }
    }
    out
}

/// The pod addresses in `node`'s blocks that no endpoint of their pod holds.
pub fn orphans(blocks: &[IPAMBlock], node: &str, pods: &PodAddresses) -> Vec<Orphan> {
    let mut out = Vec::new();
    for obj in blocks {
        let Ok(block) = Block::from_spec(&obj.metadata.name, obj.spec.clone()) else {
            continue;
        };
        if block.affine_node() != Some(node) {
            continue;
        }
        for (ip, attr) in block.allocated() {
            let (Some(handle), Some(ns), Some(pod)) = (
                attr.handle_id.as_ref(),
                attr.secondary.get("namespace"),
                attr.secondary.get("pod"),
            ) else {
                continue;
            };
            let held = pods
                .get(&(ns.clone(), pod.clone()))
                .is_some_and(|ips| ips.contains(&ip));
            if !held {
                out.push(Orphan {
                    ip,
                    handle: handle.clone(),
                    namespace: ns.clone(),
                    pod: pod.clone(),
                });
            }
        }
    }
    out.sort();
    out
}

/// Remembers since when each orphan has been one; an address that is seen held again starts
/// over.
#[derive(Debug)]
pub struct Tracker {
    grace: Duration,
    since: BTreeMap<Orphan, Instant>,
}

impl Tracker {
    pub fn new(grace: Duration) -> Tracker {
        Tracker {
            grace,
            since: BTreeMap::new(),
        }
    }

    /// Records this pass's orphans and returns those that have been orphans for the whole
    /// grace period.
    pub fn observe(&mut self, now: Instant, orphans: Vec<Orphan>) -> Vec<Orphan> {
        let current: BTreeSet<Orphan> = orphans.into_iter().collect();
        self.since.retain(|o, _| current.contains(o));
        let mut due = Vec::new();
        for o in current {
            let since = *self.since.entry(o.clone()).or_insert(now);
            if now.duration_since(since) >= self.grace {
                due.push(o);
            }
        }
        due
    }

    pub fn forget(&mut self, orphan: &Orphan) {
        self.since.remove(orphan);
    }
}

async fn endpoints(ds: &dyn Datastore) -> Result<Vec<WorkloadEndpoint>, datastore::Error> {
    Ok(ds
        .list(Kind::WorkloadEndpoint)
        .await?
        .items
        .into_iter()
        .filter_map(|r| match r {
            Resource::WorkloadEndpoint(w) => Some(w),
            _ => None,
        })
        .collect())
}

/// One pass: finds this node's orphans and frees those past the grace period. Returns the
/// addresses freed.
pub async fn pass(
    ds: &Arc<dyn Datastore>,
    node: &str,
    tracker: &mut Tracker,
    now: Instant,
) -> Result<Vec<IpAddr>, datastore::Error> {
    let blocks: Vec<IPAMBlock> = ds
        .list(Kind::IPAMBlock)
        .await?
        .items
        .into_iter()
        .filter_map(|r| match r {
            Resource::IPAMBlock(b) => Some(b),
            _ => None,
        })
        .collect();
    let mut candidates = orphans(&blocks, node, &BTreeMap::new());
    if candidates.is_empty() {
        tracker.observe(now, Vec::new());
        return Ok(Vec::new());
    }
    candidates = orphans(
        &blocks,
        node,
        &pod_addresses(&endpoints(ds.as_ref()).await?),
    );
    let due = tracker.observe(now, candidates);
    if due.is_empty() {
        return Ok(Vec::new());
    }
    // Read the endpoints again: a pod's endpoint may have been written since.
    let pods = pod_addresses(&endpoints(ds.as_ref()).await?);
    let ipam = Ipam::new(ds.clone());
    let mut freed = Vec::new();
    for o in due {
        if pods
            .get(&(o.namespace.clone(), o.pod.clone()))
            .is_some_and(|ips| ips.contains(&o.ip))
        {
            tracker.forget(&o);
            continue;
        }
        match ipam.release_by_handle(&o.handle).await {
            Ok(n) => {
                info!(
                    ip = %o.ip, handle = %o.handle, pod = %format!("{}/{}", o.namespace, o.pod),
                    released = n,
                    "freed the address of a pod that is gone (no CNI DEL came)"
                );
                freed.push(o.ip);
                tracker.forget(&o);
            }
            Err(e) => {
                warn!(ip = %o.ip, handle = %o.handle, error = %e, "freeing a leaked pod address")
            }
        }
    }
    Ok(freed)
}

/// Runs [`pass`] every `interval` for ever.
pub async fn run(ds: Arc<dyn Datastore>, node: String, grace: Duration, interval: Duration) {
    let mut tracker = Tracker::new(grace);
    loop {
        tokio::time::sleep(interval).await;
        if let Err(e) = pass(&ds, &node, &mut tracker, Instant::now()).await {
            debug!(error = %e, "looking for leaked pod addresses");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{IPPool, IPPoolSpec, Node, NodeSpec, WorkloadEndpointSpec};
    use datastore::MemoryDatastore;
    use ipam::AutoAssignRequest;

    fn orphan(ip: &str) -> Orphan {
        Orphan {
            ip: ip.parse().unwrap(),
            handle: format!("h-{ip}"),
            namespace: "ns".into(),
            pod: "p".into(),
        }
    }

    #[test]
    fn an_orphan_is_due_only_after_the_whole_grace_period() {
        let t0 = Instant::now();
        let mut t = Tracker::new(Duration::from_secs(10));
        assert!(t.observe(t0, vec![orphan("198.18.0.1")]).is_empty());
        assert!(
            t.observe(t0 + Duration::from_secs(9), vec![orphan("198.18.0.1")])
                .is_empty()
        );
        // Held again in between: the clock starts over.
        t.observe(t0 + Duration::from_secs(9), vec![]);
        assert!(
            t.observe(t0 + Duration::from_secs(12), vec![orphan("198.18.0.1")])
                .is_empty()
        );
        let due = t.observe(t0 + Duration::from_secs(22), vec![orphan("198.18.0.1")]);
        assert_eq!(due, vec![orphan("198.18.0.1")]);
    }

    async fn allocate(ipam: &Ipam, handle: &str, node: &str, pod: &str) -> IpAddr {
        let mut req = AutoAssignRequest::new(handle, node);
        req.attrs.insert("namespace".into(), "default".into());
        req.attrs.insert("pod".into(), pod.into());
        ipam.auto_assign(&req).await.unwrap().v4[0].addr()
    }

    fn endpoint(pod: &str, ip: IpAddr) -> Resource {
        let mut w = WorkloadEndpoint::new(
            format!("n1-k8s-{pod}-eth0"),
            WorkloadEndpointSpec {
                pod: Some(pod.into()),
                node: Some("n1".into()),
                ip_networks: vec![format!("{ip}/32")],
                ..Default::default()
            },
        );
        w.metadata.namespace = Some("default".into());
        w.into()
    }

    #[tokio::test]
    async fn addresses_of_gone_pods_are_freed_and_live_ones_kept() {
        let ds: Arc<dyn Datastore> = Arc::new(MemoryDatastore::new());
        ds.create(
            IPPool::new(
                "pool",
                IPPoolSpec {
                    cidr: Some("198.18.0.0/16".parse().unwrap()),
                    ..Default::default()
                },
            )
            .into(),
        )
        .await
        .unwrap();
        for n in ["n1", "n2"] {
            ds.create(Node::new(n, NodeSpec::default()).into())
                .await
                .unwrap();
        }
        let ipam = Ipam::new(ds.clone());
        let live = allocate(&ipam, "h-live", "n1", "live").await;
        let gone = allocate(&ipam, "h-gone", "n1", "gone").await;
        let other = allocate(&ipam, "h-other", "n2", "other").await;
        // A tunnel address has no pod: never a candidate.
        let mut tunnel = AutoAssignRequest::new("ipip-tunnel-addr-n1", "n1");
        tunnel.attrs.insert("node".into(), "n1".into());
        ipam.auto_assign(&tunnel).await.unwrap();
        ds.create(endpoint("live", live)).await.unwrap();

        let mut tracker = Tracker::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(pass(&ds, "n1", &mut tracker, t0).await.unwrap().is_empty());
        // Within the grace period nothing is freed, even though "gone" has no endpoint.
        assert!(
            pass(&ds, "n1", &mut tracker, t0 + Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty()
        );
        let freed = pass(&ds, "n1", &mut tracker, t0 + Duration::from_secs(61))
            .await
            .unwrap();
        assert_eq!(freed, vec![gone]);
        assert!(ipam.ips_by_handle("h-gone").await.unwrap().is_empty());
        assert_eq!(ipam.ips_by_handle("h-live").await.unwrap().len(), 1);
        assert_eq!(
            ipam.ips_by_handle("ipip-tunnel-addr-n1")
                .await
                .unwrap()
                .len(),
            1
        );
        // n2's pod is n2's business, whatever its state.
        assert_eq!(
            ipam.ips_by_handle("h-other").await.unwrap()[0].addr(),
            other
        );
    }
}
