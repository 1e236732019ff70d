//! What the lab prints: per node its routes and BGP peers, and one packet's path across the
//! cluster, derived from the kernel's actual routes, neighbours and FDB entries (the walk an
//! operator does by hand with `ip route get`, `ip neigh`, `bridge fdb`).

use std::net::Ipv4Addr;

use crate::cluster::{Cluster, word_after};
use crate::sys::{self, in_ns, ip_in};

/// Per node: its tabby routes (proto 80) and `tabbyctl node status`.
pub fn nodes(c: &Cluster) -> String {
    let mut s = String::new();
    for (i, n) in c.rec.nodes.iter().enumerate() {
        s += &format!(
            "=== {} ({}, segment {}, netns {})\n",
            n.name,
            n.addr,
            n.segment.subnet(),
            n.ns
        );
        s += &format!("$ ip -n {} route show proto 80\n", n.ns);
        match ip_in(&n.ns, &["route", "show", "proto", "80"]) {
            Ok(r) => s += &r,
            Err(e) => s += &format!("  ({e})\n"),
        }
        s += &format!("$ tabbyctl node status --socket {}\n", n.socket().display());
        s += &c.bgp_status(i);
        s.push('\n');
    }
    s
}

/// The pod pairs whose path is worth walking: node1's first pod to the last node's (across
/// the router), and to node2's when node2 shares node1's segment.
pub fn interesting_pairs(c: &Cluster) -> Vec<(usize, usize)> {
    let first_on = |i: usize| c.rec.pods.iter().position(|p| p.node == i);
    let mut pairs = Vec::new();
    let Some(a) = first_on(0) else {
        return pairs;
    };
    let last = c.rec.nodes.len() - 1;
    if let Some(b) = first_on(last).filter(|_| last > 0) {
        pairs.push((a, b));
    }
    if last > 1
        && c.rec.nodes[1].segment == c.rec.nodes[0].segment
        && let Some(b) = first_on(1)
    {
        pairs.push((a, b));
    }
    pairs
}

fn route_get(ns: &str, to: &str) -> String {
    ip_in(ns, &["route", "get", to])
        .map(|s| {
            s.lines()
                .next()
                .unwrap_or("")
                .trim()
                .trim_end_matches(" uid 0")
                .to_string()
        })
        .unwrap_or_else(|e| format!("({e})"))
}

/// The proto-80 route that covers `to` on a node (the block route felix or BGP put there).
fn tabby_route(ns: &str, to: Ipv4Addr) -> Option<String> {
    let out = ip_in(
        ns,
        &["route", "show", "match", &to.to_string(), "proto", "80"],
    )
    .ok()?;
    out.lines()
        .filter(|l| !l.starts_with("default"))
        .max_by_key(|l| {
            l.split_whitespace()
                .next()
                .and_then(|p| p.split('/').nth(1))
                .and_then(|b| b.parse::<u8>().ok())
                .unwrap_or(32)
        })
        .map(|l| l.trim().to_string())
}

/// One packet from pod `a` to pod `b`, hop by hop.
pub fn packet_path(c: &Cluster, a: usize, b: usize) -> String {
    let pa = &c.rec.pods[a];
    let pb = &c.rec.pods[b];
    let na = &c.rec.nodes[pa.node];
    let nb = &c.rec.nodes[pb.node];
    let mut s = format!(
        "--- one packet: {} ({}, on {}) → {} ({}, on {}), pool mode {}\n",
        pa.name,
        pa.ip,
        na.name,
        pb.name,
        pb.ip,
        nb.name,
        c.rec.mode.label()
    );
    let mut step = 0;
    let mut say = |s: &mut String, line: String| {
        step += 1;
        *s += &format!("{step:>2}. {line}\n");
    };
    let pod_default = ip_in(&pa.ns, &["route", "show", "default"]).unwrap_or_default();
    say(
        &mut s,
        format!(
            "{} eth0 {} sends to {}: its only route is `{}`; the host answers ARP for \
             169.254.1.1 by proxy ARP (MAC ee:ee:ee:ee:ee:ee)",
            pa.name,
            pa.ip,
            pb.ip,
            pod_default.trim()
        ),
    );
    let host_veth = c
        .route_dev(pa.node, pa.ip)
        .unwrap_or_else(|| "cali?".into());
    say(
        &mut s,
        format!(
            "it leaves the pod's eth0 and enters {} on {} (the host end of the veth pair)",
            host_veth, na.name
        ),
    );
    let got = route_get(&na.ns, &pb.ip.to_string());
    let dev = word_after(&got, "dev").unwrap_or_default();
    let gw = word_after(&got, "via");
    say(
        &mut s,
        format!(
            "{} routes it: `{}` (route: `{}`)",
            na.name,
            got,
            tabby_route(&na.ns, pb.ip).unwrap_or_else(|| "none with proto 80".into())
        ),
    );
    // Where the packet (or its outer packet) is headed on the underlay.
    let outer_dst: String = match dev.as_str() {
        "vxlan.calico" => {
            let vtep = gw.clone().unwrap_or_default();
            let neigh =
                ip_in(&na.ns, &["neigh", "show", &vtep, "dev", "vxlan.calico"]).unwrap_or_default();
            let mac = word_after(&neigh, "lladdr").unwrap_or_default();
            let fdb =
                sys::output(in_ns(&na.ns, "bridge").args(["fdb", "show", "dev", "vxlan.calico"]));
            let fdb = sys::text(&fdb.stdout);
            let dst = fdb
                .lines()
                .find(|l| !mac.is_empty() && l.starts_with(&mac))
                .and_then(|l| word_after(l, "dst"))
                .unwrap_or_else(|| "?".into());
            say(
                &mut s,
                format!(
                    "ENCAPSULATED in VXLAN by vxlan.calico: remote VTEP {vtep} is {mac} \
                     (permanent neighbour), and {mac} lives at {dst} (FDB entry); the inner \
                     frame goes out as UDP {} → {dst}:4789, VNI 4096",
                    na.addr
                ),
            );
            dst
        }
        "tunl0" => {
            let dst = gw.clone().unwrap_or_default();
            say(
                &mut s,
                format!(
                    "ENCAPSULATED in IP-in-IP by tunl0: outer packet {} → {dst}, protocol 4",
                    na.addr
                ),
            );
            dst
        }
        _ => {
            say(
                &mut s,
                format!(
                    "NOT encapsulated: the pod packet itself goes out of {dev} with \
                     destination {}",
                    pb.ip
                ),
            );
            pb.ip.to_string()
        }
    };
    let under = route_get(&na.ns, &outer_dst);
    let next = word_after(&under, "via").unwrap_or_else(|| outer_dst.clone());
    let via_router = next == na.segment.gateway().to_string();
    say(
        &mut s,
        format!(
            "underlay on {}: `{}`{}",
            na.name,
            under,
            if via_router {
                " → to the router"
            } else {
                " → straight to the other node on the same segment (one L2 hop over the bridge)"
            }
        ),
    );
    if via_router {
        let r = route_get(&c.rec.router_ns(), &outer_dst);
        let how = if outer_dst == pb.ip.to_string() {
            "the router knows the pod block from BGP (BIRD, proto bird)"
        } else {
            "the router only sees node addresses"
        };
        say(
            &mut s,
            format!(
                "router {} → {}: `{}`; {how}",
                na.segment.bridge(),
                nb.segment.bridge(),
                r
            ),
        );
    }
    let arrive = match dev.as_str() {
        "vxlan.calico" => format!(
            "arrives on {}'s eth0 ({}), UDP 4789 → vxlan.calico decapsulates it",
            nb.name, nb.addr
        ),
        "tunl0" => format!(
            "arrives on {}'s eth0 ({}), protocol 4 → tunl0 decapsulates it",
            nb.name, nb.addr
        ),
        _ => format!("arrives on {}'s eth0 ({})", nb.name, nb.addr),
    };
    say(&mut s, arrive);
    let last = route_get(&nb.ns, &pb.ip.to_string());
    let veth = word_after(&last, "dev").unwrap_or_default();
    say(
        &mut s,
        format!(
            "{} routes it to the pod: `{}` → host veth {veth} → {}'s eth0 {}",
            nb.name, last, pb.name, pb.ip
        ),
    );
    s
}

/// Everything `up` prints after the checks.
pub fn full(c: &Cluster) -> String {
    let mut s = nodes(c);
    for (a, b) in interesting_pairs(c) {
        s += &packet_path(c, a, b);
        s.push('\n');
    }
    s
}
