//! Namespace tests: felix programming real kernels in node namespaces, pods pinging across them.
//! Needs root, iproute2, nftables, tcpdump and iputils-ping; skipped otherwise.

mod common;

use std::time::Duration;

use api::EncapMode::{Always, CrossSubnet, Never};
use common::*;
use felix::Input;

const SLOW_RESYNC: Duration = Duration::from_secs(600);

#[test]
fn no_encap_two_nodes() {
    if !can_run() {
        return;
    }
    let mut c = Cluster::new("ne", &[&N1, &N2]);
    c.start_felix(pool(Never, Never, false), SLOW_RESYNC);
    c.wait_converged();
    assert_eq!(
        c.route("n1", N2.block),
        "198.18.0.64/26 via 192.0.2.12 dev eth0 proto 80"
    );
    assert!(
        c.route("n1", N1.block)
            .starts_with("blackhole 198.18.0.0/26 proto 80")
    );
    // The packet crosses the underlay as plain IP between the pods' addresses.
    let cap = c.node("n2").capture("eth0", "icmp or udp port 4789");
    assert!(c.pod("n1").ping(N2.pod_ip, 3), "pod n1 -> pod n2");
    let out = cap.finish();
    assert!(
        out.contains("IP 198.18.0.10 > 198.18.0.74: ICMP echo request"),
        "{out}"
    );
    assert!(!out.contains("VXLAN"), "{out}");
    wait_for("MTU file", Duration::from_secs(5), || {
        c.felix("n1").mtu_file().as_deref() == Some("1500\n")
    });
    assert!(
        c.node("n1")
            .ip(&["link", "show"])
            .find("vxlan.calico")
            .is_none(),
        "no tunnel device without a tunnel pool"
    );
    // The pod's permanent neighbour entry on its cali veth.
    let neigh = c.node("n1").ip(&["neigh", "show", "dev", &cali_name("n1")]);
    assert!(
        neigh.contains("198.18.0.10 lladdr") && neigh.contains("PERMANENT"),
        "{neigh}"
    );
}

#[test]
fn borrowed_addresses_are_routed_to_the_borrower() {
    if !can_run() {
        return;
    }
    let mut c = Cluster::new("bo", &[&N1, &N2]);
    c.start_felix(pool(Never, Always, false), SLOW_RESYNC);
    c.wait_converged();
    // n2 runs a pod whose address comes from n1's block (n2 borrowed it).
    let wep = c.add_pod("n2", "calibrw0000000", "198.18.0.20");
    c.send_all(wep);
    wait_for("n1: /32 to the borrower", Duration::from_secs(5), || {
        c.route("n1", "198.18.0.20")
            == "198.18.0.20 via 198.18.0.65 dev vxlan.calico proto 80 onlink"
    });
    assert!(
        c.route("n1", N1.block).starts_with("blackhole"),
        "the block stays blackholed"
    );
    wait_for("n2: local route", Duration::from_secs(5), || {
        c.route("n2", "198.18.0.20")
            .contains("dev calibrw0000000 proto 80 scope link")
    });
    assert!(
        c.pod("n1").ping("198.18.0.20", 2),
        "pod n1 -> borrowed pod on n2"
    );
    assert!(
        c.extra_pods[0].ping(N1.pod_ip, 2),
        "borrowed pod on n2 -> pod n1"
    );
}

#[test]
fn vxlan_two_nodes() {
    if !can_run() {
        return;
    }
    let mut c = Cluster::new("vx", &[&N1, &N2]);
    c.start_felix(pool(Never, Always, false), SLOW_RESYNC);
    c.wait_converged();
    assert_eq!(
        c.route("n1", N2.block),
        "198.18.0.64/26 via 198.18.0.65 dev vxlan.calico proto 80 onlink"
    );
    let link = c.node("n1").ip(&["-d", "link", "show", "vxlan.calico"]);
    for want in [
        "mtu 1450",
        "link/ether 66:00:00:00:00:01",
        "vxlan id 4096",
        "local 192.0.2.11",
        "dev eth0",
        "dstport 4789",
        "nolearning",
    ] {
        assert!(link.contains(want), "{want} in {link}");
    }
    let neigh = c.node("n1").ip(&["neigh", "show", "dev", "vxlan.calico"]);
    assert!(
        neigh.contains("198.18.0.65 lladdr 66:00:00:00:00:02 PERMANENT"),
        "{neigh}"
    );
    let fdb = must(&[
        "ip",
        "netns",
        "exec",
        &c.node("n1").name,
        "bridge",
        "fdb",
        "show",
        "dev",
        "vxlan.calico",
    ]);
    assert!(
        fdb.contains("66:00:00:00:00:02 dst 192.0.2.12 self permanent"),
        "{fdb}"
    );
    wait_for("MTU file", Duration::from_secs(5), || {
        c.felix("n1").mtu_file().as_deref() == Some("1450\n")
    });

    let tx_before = c.node("n1").link_stat("vxlan.calico", "tx_packets");
    let cap = c.node("n2").capture("eth0", "icmp or udp port 4789");
    assert!(c.pod("n1").ping(N2.pod_ip, 3), "pod n1 -> pod n2");
    let out = cap.finish();
    assert!(
        out.contains("192.0.2.11.") && out.contains("> 192.0.2.12.4789: VXLAN"),
        "{out}"
    );
    assert!(
        out.contains("IP 198.18.0.10 > 198.18.0.74: ICMP echo request"),
        "{out}"
    );
    let sent = c.node("n1").link_stat("vxlan.calico", "tx_packets") - tx_before;
    assert!(sent >= 3, "vxlan.calico sent {sent} packets");

    // A new VNI cannot be set in place: the device is recreated, routes and entries follow.
    c.send_all(Input::Config(Box::new(api::FelixConfigurationSpec {
        vxlan_vni: Some(4100),
        ..Default::default()
    })));
    for n in ["n1", "n2"] {
        wait_for(
            &format!("{n}: vxlan id 4100"),
            Duration::from_secs(5),
            || {
                let o = c
                    .node(n)
                    .exec(&["ip", "-d", "link", "show", "vxlan.calico"]);
                String::from_utf8_lossy(&o.stdout).contains("vxlan id 4100")
            },
        );
    }
    wait_for(
        "route back after recreation",
        Duration::from_secs(5),
        || c.route("n1", N2.block).contains("vxlan.calico"),
    );
    assert!(
        c.pod("n1").ping(N2.pod_ip, 2),
        "pods still reach each other on VNI 4100"
    );

    // A node leaves: its route, neighbour and FDB entry go; nothing else does.
    c.felix("n1").send(Input::AffinityRemove("n2-block".into()));
    c.felix("n1").send(Input::NodeRemove("n2".into()));
    wait_for("n2 forgotten", Duration::from_secs(5), || {
        c.route("n1", N2.block).is_empty()
            && !c
                .node("n1")
                .ip(&["neigh", "show", "dev", "vxlan.calico"])
                .contains("198.18.0.65")
    });
    let fdb = must(&[
        "ip",
        "netns",
        "exec",
        &c.node("n1").name,
        "bridge",
        "fdb",
        "show",
        "dev",
        "vxlan.calico",
    ]);
    assert!(!fdb.contains("66:00:00:00:00:02"), "{fdb}");
    assert!(c.route("n1", N1.block).contains("blackhole"));
}

#[test]
fn cross_subnet_three_nodes() {
    if !can_run() {
        return;
    }
    let mut c = Cluster::new("cs", &[&N1, &N2, &N3]);
    c.start_felix(pool(Never, CrossSubnet, false), SLOW_RESYNC);
    c.wait_converged();
    // Inside the subnet: direct. Across the router: VXLAN.
    assert_eq!(
        c.route("n1", N2.block),
        "198.18.0.64/26 via 192.0.2.12 dev eth0 proto 80"
    );
    assert_eq!(
        c.route("n1", N3.block),
        "198.18.0.128/26 via 198.18.0.129 dev vxlan.calico proto 80 onlink"
    );
    assert_eq!(
        c.route("n3", N2.block),
        "198.18.0.64/26 via 198.18.0.65 dev vxlan.calico proto 80 onlink"
    );

    let cap = c.node("n2").capture("eth0", "icmp or udp port 4789");
    assert!(
        c.pod("n1").ping(N2.pod_ip, 3),
        "pod n1 -> pod n2 (same subnet)"
    );
    let out = cap.finish();
    assert!(
        out.contains("IP 198.18.0.10 > 198.18.0.74: ICMP echo request") && !out.contains("VXLAN"),
        "direct inside the subnet: {out}"
    );

    let cap = c.node("n3").capture("eth0", "icmp or udp port 4789");
    assert!(
        c.pod("n1").ping(N3.pod_ip, 3),
        "pod n1 -> pod n3 (across the router)"
    );
    assert!(
        c.pod("n3").ping(N2.pod_ip, 3),
        "pod n3 -> pod n2 (across the router)"
    );
    let out = cap.finish();
    assert!(
        out.contains("192.0.2.11.") && out.contains("> 198.51.100.13.4789: VXLAN"),
        "VXLAN across subnets: {out}"
    );
    assert!(
        !out.lines().any(|l| l.starts_with_ip_icmp()),
        "no bare pod ICMP across the router: {out}"
    );

    // No encapsulation at all: the route to a node behind the router resolves recursively to
    // the router (BIRD's `gateway recursive`), and the fabric routes pod blocks (here: static
    // routes on the router standing in for its BGP sessions with the nodes).
    let rtr = c.router.as_ref().unwrap();
    for d in [&N1, &N2, &N3] {
        rtr.ip(&[
            "route",
            "add",
            d.block,
            "via",
            d.addr.split('/').next().unwrap(),
        ]);
    }
    c.send_all(Input::PoolUpdate(
        "default".into(),
        pool(Never, Never, false),
    ));
    wait_for("n1 -> n3 via the router", Duration::from_secs(5), || {
        c.route("n1", N3.block) == "198.18.0.128/26 via 192.0.2.1 dev eth0 proto 80"
    });
    wait_for("n3 -> n1 via the router", Duration::from_secs(5), || {
        c.route("n3", N1.block) == "198.18.0.0/26 via 198.51.100.1 dev eth0 proto 80"
    });
    let cap = c.node("n3").capture("eth0", "icmp or udp port 4789");
    assert!(
        c.pod("n1").ping(N3.pod_ip, 2),
        "pod n1 -> pod n3 unencapsulated"
    );
    let out = cap.finish();
    assert!(
        out.contains("IP 198.18.0.10 > 198.18.0.138: ICMP echo request") && !out.contains("VXLAN"),
        "{out}"
    );
}

trait IcmpLine {
    fn starts_with_ip_icmp(&self) -> bool;
}

impl IcmpLine for str {
    /// A capture line for an unencapsulated pod packet (`HH:MM:SS.us IP 198.18...`).
    fn starts_with_ip_icmp(&self) -> bool {
        self.split_whitespace().nth(1) == Some("IP")
            && self
                .split_whitespace()
                .nth(2)
                .is_some_and(|s| s.starts_with("198.18."))
    }
}

#[test]
fn mode_switches_converge_without_a_gap() {
    if !can_run() {
        return;
    }
    let mut c = Cluster::new("ms", &[&N1, &N2]);
    c.start_felix(pool(Never, Never, false), SLOW_RESYNC);
    c.wait_converged();
    assert!(c.pod("n1").ping(N2.pod_ip, 1));
    // A steady ping runs through every switch.
    let pinger = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.pod("n1").name,
            "ping",
            "-i",
            "0.05",
            "-c",
            "120",
            "-W",
            "1",
            N2.pod_ip,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let steps = [
        (
            Never,
            Always,
            "via 198.18.0.65 dev vxlan.calico proto 80 onlink",
        ),
        (Never, Never, "via 192.0.2.12 dev eth0 proto 80"),
        (Never, CrossSubnet, "via 192.0.2.12 dev eth0 proto 80"),
        (
            Never,
            Always,
            "via 198.18.0.65 dev vxlan.calico proto 80 onlink",
        ),
        (Never, Never, "via 192.0.2.12 dev eth0 proto 80"),
    ];
    for (ipip, vxlan, want) in steps {
        c.send_all(Input::PoolUpdate(
            "default".into(),
            pool(ipip, vxlan, false),
        ));
        for n in ["n1", "n2"] {
            wait_for(&format!("{n}: {want}"), Duration::from_secs(5), || {
                let r = c.route(n, if n == "n1" { N2.block } else { N1.block });
                r.lines().count() == 1 && r.contains(if n == "n1" { want } else { "proto 80" })
            });
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("");
    eprintln!("steady ping during mode switches: {summary}");
    let received: u32 = summary
        .split(", ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Replacing routes in one operation leaves no window; allow one in-flight loss per switch
    // while the peer's route is being replaced.
    assert!(received >= 120 - 5, "{summary}");
    // After the last switch the VXLAN device is gone again.
    wait_for("vxlan.calico removed", Duration::from_secs(5), || {
        !c.node("n1").ip(&["link", "show"]).contains("vxlan.calico")
    });
}

#[test]
fn nat_outgoing() {
    if !can_run() {
        return;
    }
    let mut c = Cluster::new("nat", &[&N1, &N2]);
    // A host outside every pool on the underlay segment.
    let ext = Netns::new(&format!("{}-ext", c.prefix));
    must(&[
        "ip",
        "link",
        "add",
        "eth0",
        "netns",
        &ext.name,
        "type",
        "veth",
        "peer",
        "name",
        "pext",
        "netns",
        &c.fabric.name,
    ]);
    c.fabric.ip(&["link", "set", "pext", "master", "br0", "up"]);
    ext.ip(&["addr", "add", "192.0.2.100/24", "dev", "eth0"]);
    ext.ip(&["link", "set", "eth0", "up"]);
    c.start_felix(pool(Never, Never, true), SLOW_RESYNC);
    c.wait_converged();
    wait_for("nft table", Duration::from_secs(5), || {
        c.node("n1")
            .exec(&["nft", "list", "table", "inet", "tabby"])
            .status
            .success()
    });

    let cap = ext.capture("eth0", "icmp");
    assert!(
        c.pod("n1").ping("192.0.2.100", 3),
        "pod -> host outside the pools"
    );
    let out = cap.finish();
    assert!(
        out.contains("IP 192.0.2.11 > 192.0.2.100: ICMP echo request"),
        "masqueraded: {out}"
    );
    assert!(!out.contains("198.18.0.10"), "{out}");

    let cap = c.pod("n2").capture("eth0", "icmp");
    assert!(c.pod("n1").ping(N2.pod_ip, 3));
    let out = cap.finish();
    assert!(
        out.contains("IP 198.18.0.10 > 198.18.0.74: ICMP echo request"),
        "unmasqueraded: {out}"
    );

    // natOutgoingAddress: SNAT to a configured address instead.
    c.felix("n1")
        .send(Input::Config(Box::new(api::FelixConfigurationSpec {
            nat_outgoing_address: Some("192.0.2.111".into()),
            ..Default::default()
        })));
    wait_for("snat rule", Duration::from_secs(5), || {
        let o = c
            .node("n1")
            .exec(&["nft", "list", "table", "inet", "tabby"]);
        String::from_utf8_lossy(&o.stdout).contains("snat ip to 192.0.2.111")
    });
    drop(ext);
}

#[test]
fn drift_is_repaired() {
    if !can_run() {
        return;
    }
    let mut c = Cluster::new("dr", &[&N1, &N2]);
    let resync = Duration::from_secs(3);
    c.start_felix(pool(Never, Always, true), resync);
    c.wait_converged();
    let n1 = c.node("n1");
    let cali = cali_name("n1");
    // Event-driven repairs must beat the resync timer by a wide margin.
    let fast = Duration::from_millis(1500);

    n1.ip(&["route", "del", N2.block]);
    let t = wait_for("route re-added", fast, || {
        c.route("n1", N2.block).contains("proto 80")
    });
    eprintln!("route deleted by hand: repaired in {t:?}");

    n1.ip(&["neigh", "del", N2.vtep_ip, "dev", "vxlan.calico"]);
    let t = wait_for("VTEP neighbour re-added", fast, || {
        n1.ip(&["neigh", "show", "dev", "vxlan.calico"])
            .contains("198.18.0.65 lladdr 66:00:00:00:00:02 PERMANENT")
    });
    eprintln!("VTEP neighbour deleted by hand: repaired in {t:?}");

    let fdb = || {
        must(&[
            "ip",
            "netns",
            "exec",
            &n1.name,
            "bridge",
            "fdb",
            "show",
            "dev",
            "vxlan.calico",
        ])
    };
    must(&[
        "ip",
        "netns",
        "exec",
        &n1.name,
        "bridge",
        "fdb",
        "del",
        N2.vtep_mac,
        "dev",
        "vxlan.calico",
        "dst",
        "192.0.2.12",
        "self",
    ]);
    let t = wait_for("FDB entry re-added", fast, || {
        fdb().contains("66:00:00:00:00:02 dst 192.0.2.12 self permanent")
    });
    eprintln!("FDB entry deleted by hand: repaired in {t:?}");

    let key = format!("net.ipv4.conf.{cali}.proxy_arp");
    n1.sysctl_set(&key, "0");
    let t = wait_for("proxy_arp back to 1", fast, || n1.sysctl(&key) == "1");
    eprintln!("proxy_arp=0: repaired in {t:?}");

    let key = format!("net.ipv4.conf.{cali}.forwarding");
    n1.sysctl_set(&key, "0");
    let t = wait_for("forwarding back to 1", fast, || n1.sysctl(&key) == "1");
    eprintln!("forwarding=0: repaired in {t:?}");

    let key = format!("net.ipv4.neigh.{cali}.proxy_delay");
    n1.sysctl_set(&key, "80");
    let t = wait_for("proxy_delay back to 0", fast, || n1.sysctl(&key) == "0");
    eprintln!("proxy_delay=80: repaired in {t:?}");

    n1.ip(&["link", "set", "vxlan.calico", "mtu", "1300"]);
    let t = wait_for("vxlan MTU back", fast, || {
        n1.ip(&["link", "show", "vxlan.calico"])
            .contains("mtu 1450")
    });
    eprintln!("vxlan.calico MTU changed: repaired in {t:?}");

    let index = |s: String| s.split(':').next().unwrap_or("").trim().to_string();
    let old = index(n1.ip(&["-o", "link", "show", "vxlan.calico"]));
    n1.ip(&["link", "del", "vxlan.calico"]);
    let t = wait_for("vxlan.calico and its route back", fast * 2, || {
        let now = n1.exec(&["ip", "-o", "link", "show", "vxlan.calico"]);
        now.status.success()
            && index(String::from_utf8_lossy(&now.stdout).into_owned()) != old
            && c.route("n1", N2.block).contains("vxlan.calico")
    });
    eprintln!("vxlan.calico deleted: repaired in {t:?}");
    assert!(
        c.pod("n1").ping(N2.pod_ip, 2),
        "datapath works after the repair"
    );

    must(&[
        "ip", "netns", "exec", &n1.name, "nft", "flush", "table", "inet", "tabby",
    ]);
    let t = wait_for("nft rules back", resync * 2, || {
        let o = n1.exec(&["nft", "list", "table", "inet", "tabby"]);
        String::from_utf8_lossy(&o.stdout).contains("masquerade")
    });
    eprintln!("nft table flushed (no netlink event): repaired in {t:?}");

    // Someone else's route is never touched, even across resyncs.
    n1.ip(&["route", "add", "203.0.113.0/24", "via", "192.0.2.1"]);
    std::thread::sleep(resync + Duration::from_millis(500));
    assert!(c.route("n1", "203.0.113.0/24").contains("via 192.0.2.1"));
}

#[test]
fn restart_keeps_state_until_in_sync() {
    if !can_run() {
        return;
    }
    let mut c = Cluster::new("rs", &[&N1, &N2]);
    c.start_felix(pool(Never, Never, false), SLOW_RESYNC);
    c.wait_converged();
    // Stop felix on n1 and start a fresh one that has not heard from the datastore yet.
    let old = c.felix.remove(0);
    drop(old);
    let f = Felix::start(c.node("n1"), "n1", "eth0", SLOW_RESYNC);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        c.route("n1", N2.block).contains("proto 80"),
        "kept while not in sync"
    );
    assert!(c.pod("n1").ping(N2.pod_ip, 1));
    // Once in sync with an empty datastore view, it removes what it owns, and only that.
    f.in_sync();
    wait_for("routes removed", Duration::from_secs(5), || {
        c.route("n1", N2.block).is_empty()
    });
    assert!(c.route("n1", "default").contains("via 192.0.2.1"));
    c.felix.insert(0, f);
}

#[test]
fn batched_route_writes_report_each_failure() {
    if !can_run() {
        return;
    }
    use felix::routes::{KernelTarget, NetlinkRoutes, RouteTable};
    let ns = Netns::new(&unique("bt"));
    ns.ip(&[
        "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
    ]);
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "veth0"]);
    ns.ip(&["link", "set", "veth0", "up"]);
    let oif: u32 = ns
        .ip(&["-o", "link", "show", "veth0"])
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
    let routes: Vec<(ipnet::IpNet, KernelTarget)> = (0..300)
        .map(|i| {
            let dst = net(&format!("198.18.{}.{}/30", i / 64, (i % 64) * 4));
            // Every 100th route names a device that does not exist.
            let oif = if i % 100 == 50 { 9999 } else { oif };
            (
                dst,
                KernelTarget::Via {
                    gw: "192.0.2.2".parse().unwrap(),
                    oif,
                    onlink: false,
                },
            )
        })
        .collect();
    let (failed, listed) = in_netns(&ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut t = NetlinkRoutes::new(felix::netlink::Netlink::connect().unwrap());
            let failed: Vec<ipnet::IpNet> = t
                .replace(&routes)
                .await
                .into_iter()
                .map(|(d, _)| d)
                .collect();
            (failed, t.list().await.unwrap().len())
        })
    });
    assert_eq!(
        failed,
        [
            net("198.18.0.200/30"),
            net("198.18.2.88/30"),
            net("198.18.3.232/30")
        ]
    );
    assert_eq!(listed, 297);
}

/// Two nodes with IPv6 underlay addresses (2001:db8:1::11, ::12) and a dual-stack pod each,
/// felix fed an IPv6 pool as well as the IPv4 one.
fn v6_cluster(tag: &str, pool6: api::IPPoolSpec) -> Cluster {
    let mut c = Cluster::new(tag, &[&N1, &N2]);
    let v6 = [
        (
            "n1",
            "2001:db8:1::11",
            "2001:db8:ff::10",
            "2001:db8:ff::/122",
        ),
        (
            "n2",
            "2001:db8:1::12",
            "2001:db8:ff::50",
            "2001:db8:ff::40/122",
        ),
    ];
    for (n, node_ip, pod_ip, _) in v6 {
        c.node(n).ip(&[
            "addr",
            "add",
            &format!("{node_ip}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        let p = c.pod(n);
        p.ip(&[
            "addr",
            "add",
            &format!("{pod_ip}/128"),
            "dev",
            "eth0",
            "nodad",
        ]);
        // Calico: the pod's IPv6 gateway is the host veth's link-local address (from its MAC).
        p.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fe80::ecee:eeff:feee:eeee",
            "dev",
            "eth0",
        ]);
    }
    c.start_felix(pool(Never, Never, false), SLOW_RESYNC);
    for (i, (n, _, pod_ip, _)) in v6.iter().enumerate() {
        let f = &c.felix[i];
        f.send(Input::PoolUpdate("v6".into(), pool6.clone()));
        for (m, node_ip, _, block) in v6 {
            let def = if m == "n1" { &N1 } else { &N2 };
            f.send(Input::NodeUpdate(
                m.into(),
                api::NodeSpec {
                    bgp: Some(api::NodeBgpSpec {
                        ipv4_address: Some(def.addr.into()),
                        ipv6_address: Some(format!("{node_ip}/64")),
                        ..Default::default()
                    }),
                    ipv6_vxlan_tunnel_addr: Some(
                        if m == "n1" {
                            "2001:db8:ff::1"
                        } else {
                            "2001:db8:ff::41"
                        }
                        .into(),
                    ),
                    vxlan_tunnel_mac_addr_v6: Some(
                        if m == "n1" {
                            "66:00:00:00:06:01"
                        } else {
                            "66:00:00:00:06:02"
                        }
                        .into(),
                    ),
                    ..Default::default()
                },
            ));
            f.send(Input::AffinityUpdate(
                format!("{m}-v6"),
                api::BlockAffinitySpec {
                    state: api::AffinityState::Confirmed,
                    node: m.into(),
                    cidr: Some(block.parse().unwrap()),
                    ..Default::default()
                },
            ));
        }
        f.send(Input::WorkloadUpdate(
            format!("{n}-pod"),
            api::WorkloadEndpointSpec {
                node: Some((*n).into()),
                interface_name: Some(cali_name(n)),
                ip_networks: vec![
                    format!("{}/32", if *n == "n1" { N1.pod_ip } else { N2.pod_ip }),
                    format!("{pod_ip}/128"),
                ],
                ..Default::default()
            },
        ));
    }
    c
}

#[test]
fn ipv6_no_encap_two_nodes() {
    if !can_run() {
        return;
    }
    let c = v6_cluster(
        "v6",
        api::IPPoolSpec {
            cidr: Some("2001:db8:ff::/48".parse().unwrap()),
            nat_outgoing: true,
            ..Default::default()
        },
    );
    wait_for(
        "n1 IPv6 route to n2's block",
        Duration::from_secs(5),
        || {
            c.node("n1")
                .ip(&["-6", "route", "show", "2001:db8:ff::40/122"])
                .contains("via 2001:db8:1::12 dev eth0 proto 80")
        },
    );
    wait_for("n2 IPv6 pod route", Duration::from_secs(5), || {
        c.node("n2")
            .ip(&["-6", "route", "show", "2001:db8:ff::50"])
            .contains(&format!("dev {} proto 80", cali_name("n2")))
    });
    assert_eq!(c.node("n1").sysctl("net.ipv6.conf.all.forwarding"), "1");
    let cap = c.node("n2").capture("eth0", "icmp6");
    // The host veth's link-local address may still be doing DAD: retry for a few seconds.
    wait_for("pod n1 -> pod n2 over IPv6", Duration::from_secs(8), || {
        c.pod("n1")
            .exec(&["ping", "-6", "-c", "1", "-W", "1", "2001:db8:ff::50"])
            .status
            .success()
    });
    let out = cap.finish();
    assert!(
        out.contains("2001:db8:ff::10 > 2001:db8:ff::50: ICMP6, echo request"),
        "{out}"
    );
    // IPv4 keeps working beside it.
    assert!(c.pod("n1").ping(N2.pod_ip, 1));

    // NAT-outgoing for IPv6: a host outside every pool (the fabric's bridge address) sees the
    // node's address.
    c.fabric
        .ip(&["addr", "add", "2001:db8:1::1/64", "dev", "br0", "nodad"]);
    let cap = c.fabric.capture("br0", "icmp6 and host 2001:db8:1::1");
    wait_for("pod n1 -> 2001:db8:1::1", Duration::from_secs(5), || {
        c.pod("n1")
            .exec(&["ping", "-6", "-c", "1", "-W", "1", "2001:db8:1::1"])
            .status
            .success()
    });
    let out = cap.finish();
    assert!(
        out.contains("2001:db8:1::11 > 2001:db8:1::1: ICMP6, echo request"),
        "{out}"
    );
    assert!(!out.contains("2001:db8:ff::10"), "{out}");
}

#[test]
fn ipv6_vxlan_two_nodes() {
    if !can_run() {
        return;
    }
    let c = v6_cluster(
        "v6x",
        api::IPPoolSpec {
            cidr: Some("2001:db8:ff::/48".parse().unwrap()),
            vxlan_mode: Some(Always),
            ..Default::default()
        },
    );
    wait_for("n1 IPv6 VXLAN route", Duration::from_secs(5), || {
        c.node("n1")
            .ip(&["-6", "route", "show", "2001:db8:ff::40/122"])
            .contains("via 2001:db8:ff::41 dev vxlan-v6.calico proto 80 metric 1024 onlink")
    });
    let link = c.node("n1").ip(&["-d", "link", "show", "vxlan-v6.calico"]);
    for want in [
        "mtu 1430",
        "link/ether 66:00:00:00:06:01",
        "vxlan id 4096",
        "local 2001:db8:1::11",
        "nolearning",
    ] {
        assert!(link.contains(want), "{want} in {link}");
    }
    let fdb = must(&[
        "ip",
        "netns",
        "exec",
        &c.node("n1").name,
        "bridge",
        "fdb",
        "show",
        "dev",
        "vxlan-v6.calico",
    ]);
    assert!(
        fdb.contains("66:00:00:00:06:02 dst 2001:db8:1::12 self permanent"),
        "{fdb}"
    );
    assert!(
        c.node("n1")
            .ip(&["addr", "show", "dev", "vxlan-v6.calico"])
            .contains("2001:db8:ff::1/128")
    );
    wait_for("n2 IPv6 VXLAN route", Duration::from_secs(5), || {
        c.node("n2")
            .ip(&["-6", "route", "show", "2001:db8:ff::/122"])
            .contains("via 2001:db8:ff::1 dev vxlan-v6.calico proto 80 metric 1024 onlink")
    });
    let cap = c.node("n2").capture("eth0", "udp port 4789 or icmp6");
    wait_for(
        "pod n1 -> pod n2 over IPv6 VXLAN",
        Duration::from_secs(8),
        || {
            c.pod("n1")
                .exec(&["ping", "-6", "-c", "1", "-W", "1", "2001:db8:ff::50"])
                .status
                .success()
        },
    );
    let out = cap.finish();
    assert!(
        out.contains("2001:db8:1::11.") && out.contains("> 2001:db8:1::12.4789: VXLAN"),
        "{out}"
    );
    assert!(
        out.contains("2001:db8:ff::10 > 2001:db8:ff::50: ICMP6, echo request"),
        "{out}"
    );
}
