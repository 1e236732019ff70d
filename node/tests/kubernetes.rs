//! tabby-node in a Kubernetes cluster: the datastore is the Kubernetes API (the test API
//! server, listening on the fabric over HTTPS), tabby-node finds it in-cluster (service-account
//! token and CA where a pod has them, KUBERNETES_SERVICE_HOST/PORT), the CNI plugin through its
//! kubeconfig, and the token may do only what the chart's ClusterRole grants. Pods ping across
//! the nodes with the pool unencapsulated, then VXLAN after the pool is switched; a pod deleted
//! without a CNI DEL has its address freed by its node.
//!
//! Needs root, iproute2, util-linux (unshare) and ping; everything is removed on drop.

mod common;

use std::time::Duration;

use api::EncapMode;
use common::*;

#[test]
fn two_nodes_in_cluster_on_the_kubernetes_datastore() {
    let mut c = Cluster::with_kubernetes(2);
    c.start(0);
    c.start(1);
    c.phase(|c| {
        wait_for("both node-name files", Duration::from_secs(30), || {
            c.nodes.iter().all(|n| n.state.join("nodename").exists())
        });
        // tabby-node made the default pool: a custom resource, where Calico keeps it.
        wait_for("the default pool", Duration::from_secs(30), || {
            c.kube
                .as_ref()
                .unwrap()
                .server()
                .get_object("/apis/crd.projectcalico.org/v1/ippools/default-ipv4-ippool")
                .is_some()
        });
    });
    let ip1 = c.add_pod(0, "pod-a");
    let ip2 = c.add_pod(1, "pod-b");
    c.phase(|c| {
        wait_for("readiness on both nodes", Duration::from_secs(60), || {
            c.ready(0) && c.ready(1)
        });
        wait_for(
            "pods to ping across nodes (no encapsulation)",
            Duration::from_secs(60),
            || c.ping(0, &ip2) && c.ping(1, &ip1),
        );
        let server = c.kube.as_ref().unwrap().server();
        // The node's BGP address is an annotation on the kubelet's Node.
        let node = server.get_object("/api/v1/nodes/node1").unwrap();
        assert_eq!(
            node["metadata"]["annotations"]["projectcalico.org/IPv4Address"],
            format!("{}/24", c.nodes[0].addr),
            "{node}"
        );
        assert_eq!(
            node["metadata"]["labels"]["kubernetes.io/hostname"],
            "node1"
        );
        // The pod's address is Calico's annotation on the pod.
        let pod = server
            .get_object("/api/v1/namespaces/default/pods/pod-a")
            .unwrap();
        assert_eq!(
            pod["metadata"]["annotations"]["cni.projectcalico.org/podIP"],
            format!("{ip1}/32"),
            "{pod}"
        );
        let via = format!("via {} dev eth0 proto 80", c.nodes[1].addr);
        assert!(c.routes(0).contains(&via), "{}", c.routes(0));
    });

    c.set_pool_modes(EncapMode::Never, EncapMode::Always);
    c.phase(|c| {
        wait_for(
            "pods to ping across nodes (VXLAN)",
            Duration::from_secs(60),
            || c.routes(0).contains("dev vxlan.calico") && c.ping(0, &ip2) && c.ping(1, &ip1),
        );
        // The VTEP fields are annotations too.
        let node = c
            .kube
            .as_ref()
            .unwrap()
            .server()
            .get_object("/api/v1/nodes/node2")
            .unwrap();
        let a = &node["metadata"]["annotations"];
        assert!(
            a["projectcalico.org/IPv4VXLANTunnelAddr"].is_string(),
            "{node}"
        );
        assert!(
            a["projectcalico.org/VXLANTunnelMACAddr"].is_string(),
            "{node}"
        );
        for i in 0..2 {
            eprintln!(
                "{}: VmRSS {} kB on the Kubernetes datastore",
                c.nodes[i].name,
                vm_rss_kb(c.pid(i)).unwrap_or(0)
            );
        }
    });
    // pod-b is force-deleted: no CNI DEL comes. node2's tabby-node frees its address once
    // the grace period is over; pod-a's stays.
    c.phase(|c| {
        let kube = c.kube.as_ref().unwrap();
        assert!(kube.allocated(&ip2));
        kube.server()
            .delete_object("/api/v1/namespaces/default/pods/pod-b")
            .unwrap();
        wait_for(
            "node2 to free the address of the deleted pod",
            Duration::from_secs(30),
            || !kube.allocated(&ip2),
        );
        assert!(kube.allocated(&ip1), "pod-a's address stays");
    });
    c.phase(|c| {
        c.stop(0);
        c.stop(1);
    });
}
