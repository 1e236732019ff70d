//! Pods that really talk, many pods at once, and ADDs killed at every step.

mod common;

use std::collections::BTreeSet;

use cni_plugin::plugin::AddStep;
use common::Netns;
use common::cni::{Harness, NETWORK};
use serde_json::json;

fn pod_ip(result: &serde_json::Value) -> String {
    let a = result["ips"][0]["address"].as_str().unwrap();
    a.trim_end_matches("/32").to_string()
}

#[test]
fn two_pods_ping_each_other_and_the_node() {
    let h = Harness::new();
    let (a, b) = (Netns::new("pa"), Netns::new("pb"));
    let conf = h.conf("1.0.0", json!({}));
    let ra = h.tabby("ADD", "pinga", "a", Some(&a), &conf).ok().json();
    let rb = h.tabby("ADD", "pingb", "b", Some(&b), &conf).ok().json();
    let (ipa, ipb) = (pod_ip(&ra), pod_ip(&rb));
    assert_ne!(ipa, ipb);
    for (from, to) in [
        (&a, &ipb),
        (&b, &ipa),
        (&a, &h.node.addr),
        (&b, &h.node.addr),
    ] {
        let out = from.exec(&["ping", "-c1", "-W2", to]);
        assert!(
            out.status.success(),
            "ping {to} from {}: {out:?}",
            from.name
        );
    }
    // The pod's ARP for its gateway was answered by the host veth's proxy ARP.
    for pod in [&a, &b] {
        let neigh = pod.ip(&["neigh", "show", "169.254.1.1", "dev", "eth0"]);
        assert!(neigh.contains("lladdr ee:ee:ee:ee:ee:ee"), "{neigh}");
    }
    h.tabby("DEL", "pinga", "a", Some(&a), &conf).ok();
    h.tabby("DEL", "pingb", "b", Some(&b), &conf).ok();
    h.assert_clean();
}

#[test]
fn fifty_concurrent_adds_then_fifty_dels() {
    const N: usize = 50;
    let h = Harness::new();
    let conf = h.conf("1.1.0", json!({}));
    let pods: Vec<Netns> = (0..N).map(|_| Netns::new("c")).collect();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let (h, conf) = (&h, &conf);
                s.spawn(move || {
                    h.tabby("ADD", &format!("par{i}"), &format!("p{i}"), Some(ns), conf)
                })
            })
            .collect();
        handles.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let ips: BTreeSet<String> = results.iter().map(|r| pod_ip(&r.ok().json())).collect();
    assert_eq!(ips.len(), N, "distinct addresses");
    assert_eq!(h.cali_links().len(), N);
    assert_eq!(h.our_routes().len(), N);
    assert_eq!(h.handles().len(), N);
    assert_eq!(h.allocated(), N);
    assert_eq!(h.endpoints().len(), N);

    std::thread::scope(|s| {
        for (i, ns) in pods.iter().enumerate() {
            let (h, conf) = (&h, &conf);
            s.spawn(move || {
                h.tabby("DEL", &format!("par{i}"), &format!("p{i}"), Some(ns), conf)
                    .ok();
            });
        }
    });
    h.assert_clean();
}

/// After an ADD killed right after step k, a retried ADD works and holds exactly one address,
/// and a DEL (or GC, then the runtime removing the netns) leaves nothing.
#[test]
fn add_killed_after_every_step_is_recoverable() {
    let h = Harness::new();
    let conf = h.conf("1.0.0", json!({}));
    for step in AddStep::ALL {
        let k = step as u32;
        let crash = h.conf("1.0.0", json!({"test_exit_after_step": k}));

        // Killed, then DEL.
        let pod = Netns::new("f");
        let cid = format!("fault{k}");
        let out = h.tabby("ADD", &cid, "web", Some(&pod), &crash);
        assert_eq!(out.code, 137, "step {k}: {out:?}");
        assert_eq!(out.stdout, "", "a killed ADD prints nothing");
        assert_eq!(h.handles(), [format!("{NETWORK}.{cid}")], "step {k}");
        h.tabby("DEL", &cid, "web", Some(&pod), &conf).ok();
        h.assert_clean();

        // Killed, then retried: one address, the same one, and a working pod.
        let out = h.tabby("ADD", &cid, "web", Some(&pod), &crash);
        assert_eq!(out.code, 137);
        let r = h.tabby("ADD", &cid, "web", Some(&pod), &conf).ok().json();
        assert_eq!(h.allocated(), 1, "step {k}");
        assert_eq!(h.cali_links().len(), 1, "step {k}");
        assert_eq!(h.our_routes().len(), 1, "step {k}");
        let ping = pod.exec(&["ping", "-c1", "-W2", &h.node.addr]);
        assert!(ping.status.success(), "step {k}: {ping:?}");
        let mut with_prev = conf.clone();
        with_prev["prevResult"] = r;
        h.tabby("CHECK", &cid, "web", Some(&pod), &with_prev).ok();
        h.tabby("DEL", &cid, "web", Some(&pod), &with_prev).ok();
        h.assert_clean();

        // Killed, then GC without it, then the runtime drops the netns.
        let out = h.tabby("ADD", &cid, "web", Some(&pod), &crash);
        assert_eq!(out.code, 137);
        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] = json!([]);
        h.tabby("GC", "", "", None, &gc).ok();
        drop(pod);
        h.assert_clean_eventually();
    }
}

/// Dual stack: an IPv4 and an IPv6 address, the IPv6 default route via the host veth's
/// link-local address, and the two pods reach each other over IPv6 (with the node's global
/// IPv6 forwarding on, as felix sets it).
#[test]
fn dual_stack_pods() {
    let h = Harness::new();
    h.add_pool("default-ipv6-ippool", "2001:db8:42::/120", Some(122));
    h.node
        .ns
        .exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    let (a, b) = (Netns::new("6a"), Netns::new("6b"));
    let conf = h.conf(
        "0.4.0",
        json!({"ipam": {"type": "tabby-ipam", "assign_ipv6": "true"}}),
    );
    let ra = h.tabby("ADD", "v6a", "a", Some(&a), &conf).ok().json();
    let rb = h.tabby("ADD", "v6b", "b", Some(&b), &conf).ok().json();
    for r in [&ra, &rb] {
        let ips = r["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 2, "{r}");
        assert_eq!(ips[0]["version"], "4");
        assert_eq!(ips[1]["version"], "6");
        assert!(ips[1]["address"].as_str().unwrap().ends_with("/128"), "{r}");
        assert_eq!(
            r["routes"][1],
            json!({"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"})
        );
    }
    let b6 = rb["ips"][1]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/128");
    let ping = a.exec(&["ping", "-6", "-c1", "-W3", b6]);
    assert!(ping.status.success(), "{ping:?}");
    assert_eq!(h.our_routes().len(), 2, "IPv4 host routes");
    let v6_routes = h.node.ns.ip(&["-6", "route", "show", "proto", "80"]);
    assert_eq!(v6_routes.lines().count(), 2, "{v6_routes}");
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = ra;
    h.tabby("CHECK", "v6a", "a", Some(&a), &with_prev).ok();
    h.tabby("DEL", "v6a", "a", Some(&a), &with_prev).ok();
    h.tabby("DEL", "v6b", "b", Some(&b), &conf).ok();
    h.assert_clean();
    assert!(
        h.node
            .ns
            .ip(&["-6", "route", "show", "proto", "80"])
            .is_empty()
    );
}
