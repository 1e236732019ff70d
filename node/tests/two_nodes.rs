//! End to end: two nodes, each a network namespace running `tabby-node`, joined by a fabric
//! namespace with a bridge on 192.0.2.0/24; pods made by exec'ing the CNI plugin as a runtime
//! does; pods ping across nodes with the pool unencapsulated (routes over BGP), then after the
//! pool is patched to VXLAN (routes from the datastore).
//!
//! Needs root, iproute2 and ping. Everything the test creates (namespaces, processes, the temp
//! dir) is removed by Drop guards, also when an assertion fails.

mod common;

use std::time::Duration;

use api::EncapMode;
use common::*;

#[test]
fn two_nodes_pods_ping_across_no_encap_then_vxlan() {
    let mut c = Cluster::new(2);
    c.start(0);
    c.start(1);
    // The nodes write the node-name file and the default pool before pods can be made.
    c.phase(|c| {
        wait_for("both node-name files", Duration::from_secs(20), || {
            c.nodes.iter().all(|n| n.state.join("nodename").exists())
        })
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
        // No encapsulation: the remote block is routed straight to the other node, learned
        // over BGP; the session shows on the control socket as `tabbyctl node status` reads it.
        let via = format!("via {} dev eth0 proto 80", c.nodes[1].addr);
        assert!(c.routes(0).contains(&via), "{}", c.routes(0));
        let st = c.bgp_status(0).expect("status over the control socket");
        assert_eq!(st.peers.len(), 1, "{st:?}");
        assert_eq!(st.peers[0].state, "Established", "{st:?}");
        assert_eq!(st.peers[0].address.to_string(), c.nodes[1].addr);
        assert_eq!(
            http_get(&c.nodes[0].ns, HEALTH_PORT, "/liveness").map(|r| r.0),
            Some(200)
        );
    });

    // SIGTERM node1: it exits 0, its routes stay in its kernel, and node2 keeps the route to
    // node1's block (graceful restart: the session dropped without a NOTIFICATION).
    c.phase(|c| {
        c.stop(0);
        let via1 = format!("via {} dev eth0 proto 80", c.nodes[0].addr);
        let via2 = format!("via {} dev eth0 proto 80", c.nodes[1].addr);
        for _ in 0..10 {
            assert!(
                c.routes(1).contains(&via1),
                "node2 lost node1's block:\n{}",
                c.routes(1)
            );
            assert!(
                c.routes(0).contains(&via2),
                "node1's routes went:\n{}",
                c.routes(0)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(
            c.ping(1, &ip1),
            "pods keep talking while node1's agent is down"
        );
        let st = c.bgp_status(1).expect("node2's status");
        assert!(
            st.peers[0].state != "Established" && st.peers[0].stale >= 1,
            "node2 should hold node1's routes as stale: {st:?}"
        );
        c.start(0);
        wait_for("node1 to converge again", Duration::from_secs(60), || {
            c.ready(0) && c.ready(1) && c.ping(0, &ip2) && c.ping(1, &ip1)
        });
    });

    c.set_pool_modes(EncapMode::Never, EncapMode::Always);
    let t = c.phase(|c| {
        let t = wait_for(
            "pods to ping across nodes (VXLAN)",
            Duration::from_secs(60),
            || c.routes(0).contains("dev vxlan.calico") && c.ping(0, &ip2) && c.ping(1, &ip1),
        );
        wait_for(
            "readiness after the switch",
            Duration::from_secs(30),
            || c.ready(0) && c.ready(1),
        );
        wait_for("IPAM usage in /metrics", Duration::from_secs(15), || {
            http_get(&c.nodes[0].ns, HEALTH_PORT, "/metrics").is_some_and(|(code, m)| {
                code == 200
                    && m.contains("tabby_felix_in_sync 1")
                    && m.contains("tabby_bgp_peers{state=\"Established\"} 1")
                    && m.contains("tabby_ipam_blocks{node=\"node1\"} 1")
            })
        });
        t
    });
    for i in 0..2 {
        eprintln!(
            "{}: VmRSS {} kB; VXLAN switch converged in {t:?}",
            c.nodes[i].name,
            vm_rss_kb(c.pid(i)).unwrap_or(0)
        );
    }

    if std::env::var_os("TABBY_E2E_LOGS").is_some() {
        for i in 0..2 {
            eprintln!("--- {} log:\n{}", c.nodes[i].name, c.log(i));
        }
    }

    // SIGTERM both: exit 0, and the kernel state stays: pods still reach each other.
    c.phase(|c| {
        c.stop(0);
        c.stop(1);
        assert!(c.routes(0).contains("dev vxlan.calico"), "{}", c.routes(0));
        assert!(
            c.ping(0, &ip2),
            "pods still reach each other with the agents stopped"
        );
    });
}

/// Dual stack: the nodes detect their IPv6 addresses too (`IP6=autodetect`), the IPv6 default
/// pool comes from `CALICO_IPV6POOL_*` with VXLAN, each node gets an IPv6 VTEP address from
/// IPAM, and pods reach each other over IPv4 (BGP, no encapsulation) and IPv6 (VXLAN).
#[test]
fn dual_stack_pods_ping_over_ipv4_and_ipv6_vxlan() {
    let mut c = Cluster::with_v6(2, true);
    c.start(0);
    c.start(1);
    c.phase(|c| {
        wait_for("both node-name files", Duration::from_secs(20), || {
            c.nodes.iter().all(|n| n.state.join("nodename").exists())
        })
    });
    let a = c.add_pod_all(0, "pod-a");
    let b = c.add_pod_all(1, "pod-b");
    c.phase(|c| {
        assert_eq!((a.len(), b.len()), (2, 2), "dual-stack pods: {a:?} {b:?}");
        assert!(a[1].starts_with("2001:db8:ff:"), "{a:?}");
        wait_for("readiness on both nodes", Duration::from_secs(60), || {
            c.ready(0) && c.ready(1)
        });
        wait_for("pods to ping over IPv4", Duration::from_secs(60), || {
            c.ping(0, &b[0]) && c.ping(1, &a[0])
        });
        wait_for(
            "pods to ping over IPv6 VXLAN",
            Duration::from_secs(60),
            || c.ping(0, &b[1]) && c.ping(1, &a[1]),
        );
        let routes6 = String::from_utf8_lossy(&c.nodes[0].ns.exec(&["ip", "-6", "route"]).stdout)
            .into_owned();
        assert!(routes6.contains("dev vxlan-v6.calico"), "{routes6}");
    });
}
