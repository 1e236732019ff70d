//! The veth pair, addresses, routes and sysctls, for real, in namespaces this test creates.

mod common;

use std::net::IpAddr;

use cni_plugin::dataplane::{self, ROUTE_PROTOCOL, Session};
use common::{Netns, Node};

#[test]
fn veth_pair_addresses_routes_and_teardown() {
    let node = Node::new(1);
    let pod = Netns::new("pod");
    let pod_ns = pod.open();
    let node_ns = node.ns.open();
    let host = dataplane::host_veth_name(Some(("default", "dp-test")), "c1");
    let addr: IpAddr = "198.18.0.5".parse().unwrap();

    node_ns
        .run(|| {
            let dp = Session::new(Some(&pod_ns)).unwrap();
            let index = dp.create_veth(&host, "eth0", 1450).unwrap();
            let link = dp.configure_pod("eth0", &[addr]).unwrap();
            assert_eq!(dp.inspect_pod("eth0").unwrap().as_ref(), Some(&link));
            dp.configure_host(&host, index, &[addr]).unwrap();
            assert_eq!(link.mtu, 1450);
            assert_eq!(link.addrs, ["198.18.0.5/32".parse().unwrap()]);
            assert!(
                link.routes
                    .contains(&("169.254.1.1/32".parse().unwrap(), None))
            );
            assert!(link.routes.contains(&(
                "0.0.0.0/0".parse().unwrap(),
                Some("169.254.1.1".parse().unwrap())
            )));
            let h = dp.inspect_host(&host).unwrap().unwrap();
            assert_eq!(h.mac, "ee:ee:ee:ee:ee:ee");
            // A second pair with the same names replaces the first (a killed ADD's leftovers).
            let again = dp.create_veth(&host, "eth0", 1450).unwrap();
            assert_ne!(again, index);
            let link = dp.configure_pod("eth0", &[addr]).unwrap();
            dp.configure_host(&host, again, &[addr]).unwrap();
            assert_eq!(link.mtu, 1450);
            assert_eq!(h.routes, ["198.18.0.5/32".parse().unwrap()]);
        })
        .unwrap();

    // What `ip` sees: the host route with our protocol, the sysctls, the pod's routes.
    let routes = node.ns.ip(&["route", "show", "198.18.0.5"]);
    assert!(
        routes.contains(&format!("dev {host} proto {ROUTE_PROTOCOL} scope link")),
        "{routes}"
    );
    for (k, v) in [
        (format!("net.ipv4.conf.{host}.proxy_arp"), "1"),
        (format!("net.ipv4.neigh.{host}.proxy_delay"), "0"),
        (format!("net.ipv4.conf.{host}.forwarding"), "1"),
    ] {
        let out = node.ns.exec(&["sysctl", "-n", &k]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), v, "{k}");
    }
    let pod_routes = pod.ip(&["route"]);
    assert!(
        pod_routes.contains("default via 169.254.1.1 dev eth0"),
        "{pod_routes}"
    );
    assert!(
        pod_routes.contains("169.254.1.1 dev eth0 scope link"),
        "{pod_routes}"
    );

    // The pod reaches the node through proxy ARP, and learns ee:ee:ee:ee:ee:ee for the gateway.
    let ping = pod.exec(&["ping", "-c1", "-W2", &node.addr]);
    assert!(ping.status.success(), "{ping:?}");
    let neigh = pod.ip(&["neigh", "show", "169.254.1.1"]);
    assert!(neigh.contains("lladdr ee:ee:ee:ee:ee:ee"), "{neigh}");

    // Teardown is idempotent.
    node_ns
        .run(|| {
            let dp = Session::new(Some(&pod_ns)).unwrap();
            assert!(dp.delete_pod_link("eth0").unwrap());
            assert!(!dp.delete_pod_link("eth0").unwrap());
            assert_eq!(dp.inspect_host(&host).unwrap(), None);
            assert!(!dp.delete_host_veth(&host).unwrap());
        })
        .unwrap();
    assert!(node.ns.ip(&["route", "show", "198.18.0.5"]).is_empty());
}

#[test]
fn ipv6_pod_gets_default_via_host_link_local() {
    let node = Node::new(2);
    let pod = Netns::new("pod6");
    let (pod_ns, node_ns) = (pod.open(), node.ns.open());
    let host = dataplane::host_veth_name(None, "v6container");
    let addrs: Vec<IpAddr> = vec![
        "198.18.0.9".parse().unwrap(),
        "2001:db8::9".parse().unwrap(),
    ];
    node_ns
        .run(|| {
            let dp = Session::new(Some(&pod_ns)).unwrap();
            let index = dp.create_veth(&host, "eth0", 1500).unwrap();
            let link = dp.configure_pod("eth0", &addrs).unwrap();
            dp.configure_host(&host, index, &addrs).unwrap();
            assert!(link.addrs.contains(&"2001:db8::9/128".parse().unwrap()));
            assert!(link.routes.contains(&(
                "::/0".parse().unwrap(),
                Some(dataplane::host_veth_link_local().into())
            )));
            let h = dp.inspect_host(&host).unwrap().unwrap();
            assert!(h.routes.contains(&"2001:db8::9/128".parse().unwrap()));
        })
        .unwrap();
    let out = node
        .ns
        .exec(&["sysctl", "-n", &format!("net.ipv6.conf.{host}.proxy_ndp")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let link = node.ns.ip(&["-6", "addr", "show", "dev", &host]);
    assert!(link.contains("fe80::ecee:eeff:feee:eeee"), "{link}");
}

#[test]
fn missing_netns_is_a_clear_error() {
    let err =
        cni_plugin::netns::NetNs::open(std::path::Path::new("/run/netns/tabby-nope")).unwrap_err();
    assert!(err.to_string().contains("/run/netns/tabby-nope"), "{err}");
}
