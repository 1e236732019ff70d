//! The Kubernetes backend keeps resources where Calico keeps them, pages through long lists,
//! and keeps a quiet watch alive across server-ended streams thanks to bookmarks.

mod common;

use std::time::Duration;

use api::{
    BlockAffinity, BlockAffinitySpec, IPAMHandle, IPAMHandleSpec, IPPool, IPPoolSpec, Key, Kind,
    NodeBgpSpec, Resource, WorkloadEndpoint, WorkloadEndpointSpec,
};
use common::Cluster;
use datastore::kubernetes::{ConfigSource, KubeDatastore};
use datastore::{Datastore, Error, WatchEvent};
use serde_json::json;

fn store(cluster: &Cluster) -> std::sync::Arc<KubeDatastore> {
    std::sync::Arc::new(KubeDatastore::new(ConfigSource::Kubeconfig(
        cluster.kubeconfig().to_path_buf(),
    )))
}

fn pool(name: &str, cidr: &str) -> Resource {
    IPPool::new(
        name,
        IPPoolSpec {
            cidr: Some(cidr.parse().unwrap()),
            ..Default::default()
        },
    )
    .into()
}

#[test]
fn resources_live_where_calico_keeps_them() {
    let cluster = common::cluster("layout");
    let server = cluster.server();
    // The kubelet registered the node: labels and status addresses are the kubelet's.
    server
        .put_object(
            "/api/v1/nodes/n1",
            json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}]}}),
        )
        .unwrap();
    // A pod the scheduler put on n1, and one that Calico's CNI plugin already wired.
    server
        .put_object(
            "/api/v1/namespaces/shop/pods/web",
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}}),
        )
        .unwrap();
    server
        .put_object(
            "/api/v1/namespaces/shop/pods/db",
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "db", "namespace": "shop", "annotations": {
                    "cni.projectcalico.org/podIP": "198.18.0.7/32",
                    "cni.projectcalico.org/podIPs": "198.18.0.7/32",
                    "cni.projectcalico.org/containerID": "c0ffee"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}}),
        )
        .unwrap();
    // A block Calico's IPAM wrote, with the fields only Calico uses.
    server
        .put_object(
            "/apis/crd.projectcalico.org/v1/ipamblocks/198-18-1-0-26",
            json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
                "metadata": {"name": "198-18-1-0-26"},
                "spec": {"cidr": "198.18.1.0/26", "affinity": "host:n1", "strictAffinity": false,
                    "allocations": [0, null], "unallocated": [1],
                    "attributes": [{"handle_id": "k8s-pod-network.abc",
                        "secondary": {"namespace": "shop", "pod": "web"},
                        "alternateOwnerAttrs": {"pod": "web-old"},
                        "releasedAt": "2026-11-23T08:00:00Z"}],
                    "deleted": false, "sequenceNumber": 4,
                    "sequenceNumberForAllocation": {"0": 3}}}),
        )
        .unwrap();
    let ds = store(&cluster);
    let d = ds.clone();
    cluster.run(async move {
        // Calico's IPAM objects read as they are, and write back unchanged.
        let block = d
            .get(&Key::new(Kind::IPAMBlock, "198-18-1-0-26"))
            .await
            .expect("a block Calico wrote reads");
        let Resource::IPAMBlock(b) = &block else {
            unreachable!()
        };
        assert_eq!(b.spec.sequence_number_for_allocation["0"], 3);
        assert_eq!(b.spec.attributes[0].alternate_owner_attrs["pod"], "web-old");
        d.update(block).await.expect("and writes back");

        // Custom resources in crd.projectcalico.org/v1.
        d.create(pool("p1", "198.18.0.0/16")).await.unwrap();
        d.create(
            BlockAffinity::new(
                "n1-198-18-0-0-26",
                BlockAffinitySpec {
                    node: "n1".into(),
                    cidr: Some("198.18.0.0/26".parse().unwrap()),
                    ..Default::default()
                },
            )
            .into(),
        )
        .await
        .unwrap();

        // The Node: BGP fields become annotations on the kubelet's Node.
        let Resource::Node(mut n) = d.get(&Key::new(Kind::Node, "n1")).await.unwrap() else {
            unreachable!()
        };
        assert_eq!(n.metadata.labels["kubernetes.io/hostname"], "n1");
        assert!(n.spec.addresses.iter().any(|a| a.address == "192.0.2.11"));
        n.spec.bgp = Some(NodeBgpSpec {
            ipv4_address: Some("192.0.2.11/24".into()),
            as_number: Some(64513),
            ipv4_ipip_tunnel_addr: Some("198.18.0.1".into()),
            ..Default::default()
        });
        n.spec.ipv4_vxlan_tunnel_addr = Some("198.18.0.2".into());
        n.spec.vxlan_tunnel_mac_addr = Some("66:0a:0b:0c:0d:0e".into());
        d.update(n.into()).await.unwrap();

        // A WorkloadEndpoint, as the CNI plugin writes it at ADD.
        let mut w = WorkloadEndpoint::new(
            "n1-k8s-web-eth0",
            WorkloadEndpointSpec {
                orchestrator: Some("k8s".into()),
                node: Some("n1".into()),
                pod: Some("web".into()),
                endpoint: Some("eth0".into()),
                container_id: Some("abc123".into()),
                ip_networks: vec!["198.18.0.5/32".into()],
                interface_name: Some("cali1234567890a".into()),
                mac: Some("ee:ee:ee:ee:ee:ee".into()),
                ..Default::default()
            },
        );
        w.metadata.namespace = Some("shop".into());
        d.create(w.into()).await.unwrap();
    });

    let block = server
        .get_object("/apis/crd.projectcalico.org/v1/ipamblocks/198-18-1-0-26")
        .unwrap();
    assert_eq!(block["spec"]["sequenceNumberForAllocation"]["0"], 3);
    assert_eq!(
        block["spec"]["attributes"][0]["releasedAt"],
        "2026-11-23T08:00:00Z"
    );
    let pool = server
        .get_object("/apis/crd.projectcalico.org/v1/ippools/p1")
        .expect("the IPPool is a custom resource");
    assert_eq!(pool["kind"], "IPPool");
    assert_eq!(pool["spec"]["cidr"], "198.18.0.0/16");
    let aff = server
        .get_object("/apis/crd.projectcalico.org/v1/blockaffinities/n1-198-18-0-0-26")
        .expect("the BlockAffinity is a custom resource");
    assert_eq!(
        aff["spec"]["deleted"], "false",
        "Calico keeps it as a string"
    );

    let node = server.get_object("/api/v1/nodes/n1").unwrap();
    let a = &node["metadata"]["annotations"];
    assert_eq!(a["projectcalico.org/IPv4Address"], "192.0.2.11/24");
    assert_eq!(a["projectcalico.org/ASNumber"], "64513");
    assert_eq!(a["projectcalico.org/IPv4IPIPTunnelAddr"], "198.18.0.1");
    assert_eq!(a["projectcalico.org/IPv4VXLANTunnelAddr"], "198.18.0.2");
    assert_eq!(
        a["projectcalico.org/VXLANTunnelMACAddr"],
        "66:0a:0b:0c:0d:0e"
    );
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"], "n1",
        "the kubelet's labels stay"
    );
    assert_eq!(
        node["status"]["addresses"][0]["address"], "192.0.2.11",
        "the kubelet's status stays"
    );

    let pod = server
        .get_object("/api/v1/namespaces/shop/pods/web")
        .unwrap();
    let a = &pod["metadata"]["annotations"];
    assert_eq!(a["cni.projectcalico.org/podIP"], "198.18.0.5/32");
    assert_eq!(a["cni.projectcalico.org/podIPs"], "198.18.0.5/32");
    assert_eq!(a["cni.projectcalico.org/containerID"], "abc123");

    let d = ds.clone();
    cluster.run(async move {
        // Both pods are endpoints: ours as written, Calico's derived as Calico derives it.
        let weps = d.list(Kind::WorkloadEndpoint).await.unwrap().items;
        let mut names: Vec<&str> = weps.iter().map(|w| w.name()).collect();
        names.sort();
        assert_eq!(names, ["n1-k8s-db-eth0", "n1-k8s-web-eth0"]);
        let Resource::WorkloadEndpoint(db) = d
            .get(&Key::namespaced(
                Kind::WorkloadEndpoint,
                "shop",
                "n1-k8s-db-eth0",
            ))
            .await
            .unwrap()
        else {
            unreachable!()
        };
        assert_eq!(db.spec.ip_networks, ["198.18.0.7/32"]);
        assert_eq!(db.spec.container_id.as_deref(), Some("c0ffee"));
        assert_eq!(db.spec.node.as_deref(), Some("n1"));
        let Resource::WorkloadEndpoint(web) = d
            .get(&Key::namespaced(
                Kind::WorkloadEndpoint,
                "shop",
                "n1-k8s-web-eth0",
            ))
            .await
            .unwrap()
        else {
            unreachable!()
        };
        assert_eq!(web.spec.mac.as_deref(), Some("ee:ee:ee:ee:ee:ee"));
        // CNI DEL: the endpoint goes, the pod stays.
        let key = Resource::from(web).key();
        d.delete(&key, None).await.unwrap();
        assert!(matches!(d.get(&key).await, Err(Error::NotFound(_))));
    });
    let pod = server
        .get_object("/api/v1/namespaces/shop/pods/web")
        .unwrap();
    let annotations = pod["metadata"]["annotations"].as_object();
    assert!(
        annotations.is_none_or(|a| !a.keys().any(|k| k.starts_with("cni.projectcalico.org/"))),
        "DEL clears the annotations: {pod}"
    );
}

#[test]
fn long_lists_are_read_page_by_page() {
    let cluster = common::cluster("pages");
    let ds = store(&cluster);
    cluster.run(async move {
        const N: usize = 1_100;
        for i in 0..N {
            ds.create(IPAMHandle::new(format!("h-{i:04}"), IPAMHandleSpec::default()).into())
                .await
                .unwrap();
        }
        let listing = ds.list(Kind::IPAMHandle).await.unwrap();
        assert_eq!(listing.items.len(), N, "every page was read");
        let mut names: Vec<&str> = listing.items.iter().map(|r| r.name()).collect();
        names.dedup();
        assert_eq!(names.len(), N, "no item twice");
    });
}

/// A watch on a quiet kind is renewed each time the server ends its stream; bookmarks move its
/// revision on, so after the history before it has been compacted away it still resumes
/// (without bookmarks it would resume from the old revision and be told it is too old).
#[test]
fn quiet_watches_resume_from_bookmarks_after_compaction() {
    let cluster = Cluster::start(
        "bookmarks",
        testapi::Options {
            bookmark_interval: Duration::from_millis(200),
            max_watch_timeout: Some(Duration::from_secs(1)),
            ..Default::default()
        },
    );
    let ds = store(&cluster);
    let d = ds.clone();
    let mut watch = cluster.run(async move {
        let start = d.list(Kind::IPPool).await.unwrap().revision;
        d.watch(Some(Kind::IPPool), start).await.unwrap()
    });
    let d = ds.clone();
    cluster.run(async move {
        for i in 0..20 {
            d.create(IPAMHandle::new(format!("busy-{i}"), IPAMHandleSpec::default()).into())
                .await
                .unwrap();
        }
    });
    // Let bookmarks carry the watch past the handle writes.
    std::thread::sleep(Duration::from_millis(1_500));
    cluster.server().compact(cluster.server().revision());
    // The server ends the stream (max 1 s); the watch renews itself from its bookmark.
    std::thread::sleep(Duration::from_millis(2_500));
    let d = ds.clone();
    let event = cluster.run(async move {
        d.create(pool("late", "198.19.0.0/16")).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), watch.next()).await
    });
    match event {
        Ok(Some(Ok(WatchEvent::Added { resource, .. }))) => assert_eq!(resource.name(), "late"),
        other => panic!("expected the new pool, got {other:?}"),
    }
}
