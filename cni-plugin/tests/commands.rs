//! Every command and every cniVersion, run as a runtime runs the plugins, with each result's
//! JSON shape checked against SPEC.md.

mod common;

use common::Netns;
use common::cni::{Harness, NETWORK};
use serde_json::{Value, json};

const VERSIONS: [&str; 4] = ["1.1.0", "1.0.0", "0.4.0", "0.3.1"];

/// SPEC.md "Success": the ADD result shape for `version`.
#[track_caller]
fn assert_add_shape(r: &Value, version: &str, netns: &Netns) {
    assert_eq!(r["cniVersion"], version, "{r}");
    let ifs = r["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 2, "{r}");
    assert!(ifs[0]["name"].as_str().unwrap().starts_with("cali"), "{r}");
    assert_eq!(ifs[0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert!(ifs[0].get("sandbox").is_none());
    assert_eq!(ifs[1]["name"], "eth0");
    assert_eq!(ifs[1]["sandbox"], netns.path().display().to_string());
    let mac = ifs[1]["mac"].as_str().unwrap();
    assert_eq!(mac.len(), 17, "{mac}");
    // Interface mtu is 1.1.0's.
    assert_eq!(ifs[1].get("mtu").is_some(), version == "1.1.0", "{r}");
    let ips = r["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 1);
    assert_eq!(ips[0]["interface"], 1);
    let addr = ips[0]["address"].as_str().unwrap();
    assert!(
        addr.starts_with("198.18.") && addr.ends_with("/32"),
        "{addr}"
    );
    // Before 1.0.0 each IP carries its family.
    if version.starts_with("0.") {
        assert_eq!(ips[0]["version"], "4", "{r}");
    } else {
        assert!(ips[0].get("version").is_none(), "{r}");
    }
    assert_eq!(
        r["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}])
    );
    assert_eq!(r["dns"], json!({"nameservers": ["198.18.0.10"]}));
    // Nothing outside the spec's keys.
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    for k in keys {
        assert!(
            ["cniVersion", "interfaces", "ips", "routes", "dns"].contains(&k),
            "{k}"
        );
    }
}

#[test]
fn every_command_in_every_version() {
    let h = Harness::new();
    for (i, version) in VERSIONS.into_iter().enumerate() {
        let pod = Netns::new("pod");
        let cid = format!("cmd{i}");
        let conf = h.conf(version, json!({}));

        let v = h.tabby("VERSION", &cid, "p", None, &json!({"cniVersion": version}));
        assert_eq!(
            v.ok().json(),
            json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );

        let add = h.tabby("ADD", &cid, "web", Some(&pod), &conf);
        let result = add.ok().json();
        assert_add_shape(&result, version, &pod);
        assert_eq!(h.cali_links().len(), 1);
        assert_eq!(h.handles(), [format!("{NETWORK}.{cid}")]);

        let mut with_prev = conf.clone();
        with_prev["prevResult"] = result.clone();
        let check = h.tabby("CHECK", &cid, "web", Some(&pod), &with_prev);
        if version == "0.3.1" {
            check.cni_error(1, "CHECK needs 0.4.0");
        } else {
            assert_eq!(check.ok().stdout, "", "CHECK prints nothing");
        }

        let status = h.tabby("STATUS", &cid, "web", None, &conf);
        assert_eq!(status.ok().stdout, "");

        // GC keeping our attachment changes nothing.
        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID": cid, "ifname": "eth0"}]);
        assert_eq!(h.tabby("GC", &cid, "web", None, &gc).ok().stdout, "");
        assert_eq!(h.handles().len(), 1);
        assert_eq!(h.endpoints().len(), 1);

        let del = h.tabby("DEL", &cid, "web", Some(&pod), &with_prev);
        assert_eq!(del.ok().stdout, "");
        h.assert_clean();
        // DEL is idempotent, with or without the netns.
        h.tabby("DEL", &cid, "web", Some(&pod), &with_prev).ok();
        drop(pod);
        h.tabby("DEL", &cid, "web", None, &conf).ok();
        h.assert_clean_eventually();
    }
}

#[test]
fn check_notices_each_difference() {
    let h = Harness::new();
    let pod = Netns::new("pod");
    let conf = h.conf("1.0.0", json!({}));
    let result = h.tabby("ADD", "chk", "web", Some(&pod), &conf).ok().json();
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = result.clone();
    h.tabby("CHECK", "chk", "web", Some(&pod), &with_prev).ok();

    // An address the allocation does not hold.
    let mut wrong = with_prev.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!("198.18.200.200/32");
    h.tabby("CHECK", "chk", "web", Some(&pod), &wrong)
        .cni_error(105, "prevResult says");
    // The pod's address removed behind our back.
    let addr = result["ips"][0]["address"].as_str().unwrap();
    pod.ip(&["addr", "del", addr, "dev", "eth0"]);
    h.tabby("CHECK", "chk", "web", Some(&pod), &with_prev)
        .cni_error(105, "lacks address");
    pod.ip(&["addr", "add", addr, "dev", "eth0"]);
    // Removing the last address flushed the routes through eth0; put them back.
    pod.ip(&[
        "route",
        "replace",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    pod.ip(&[
        "route",
        "replace",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    h.tabby("CHECK", "chk", "web", Some(&pod), &with_prev).ok();
    // The host route removed.
    let host = result["interfaces"][0]["name"].as_str().unwrap();
    let pod_ip = addr.trim_end_matches("/32");
    h.node.ns.ip(&["route", "del", pod_ip, "dev", host]);
    h.tabby("CHECK", "chk", "web", Some(&pod), &with_prev)
        .cni_error(105, "no host route");
    // No prevResult at all.
    h.tabby("CHECK", "chk", "web", Some(&pod), &conf)
        .cni_error(7, "prevResult");
    h.tabby("DEL", "chk", "web", Some(&pod), &with_prev).ok();
    h.assert_clean();
}

#[test]
fn gc_releases_only_attachments_the_runtime_no_longer_holds() {
    let h = Harness::new();
    let (a, b) = (Netns::new("pa"), Netns::new("pb"));
    let conf = h.conf("1.1.0", json!({}));
    h.tabby("ADD", "gca", "a", Some(&a), &conf).ok();
    h.tabby("ADD", "gcb", "b", Some(&b), &conf).ok();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "gca", "ifname": "eth0"}]);
    h.tabby("GC", "", "", None, &gc).ok();
    assert_eq!(h.handles(), [format!("{NETWORK}.gca")]);
    assert_eq!(h.allocated(), 1);
    let eps = h.endpoints();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].spec.container_id.as_deref(), Some("gca"));
    // Another network's GC touches nothing of ours.
    let mut other = gc.clone();
    other["name"] = json!("other-net");
    other["cni.dev/valid-attachments"] = json!([]);
    h.tabby("GC", "", "", None, &other).ok();
    assert_eq!(h.allocated(), 1);
    h.tabby("DEL", "gca", "a", Some(&a), &conf).ok();
    h.tabby("DEL", "gcb", "b", Some(&b), &conf).ok();
    h.assert_clean();
}

#[test]
fn del_never_touches_another_containers_attachment() {
    let h = Harness::new();
    let (a, b) = (Netns::new("pa"), Netns::new("pb"));
    let conf = h.conf("1.0.0", json!({}));
    // Same pod, sandbox recreated: old container "old1", new container "new1".
    h.tabby("ADD", "new1", "web", Some(&a), &conf).ok();
    h.tabby("DEL", "old1", "web", Some(&b), &conf).ok();
    h.tabby("DEL", "old1", "web", None, &conf).ok();
    assert_eq!(h.handles(), [format!("{NETWORK}.new1")]);
    assert_eq!(h.endpoints().len(), 1);
    assert_eq!(h.cali_links().len(), 1);
    assert_eq!(h.our_routes().len(), 1);
    h.tabby("DEL", "new1", "web", Some(&a), &conf).ok();
    h.assert_clean();
}

#[test]
fn endpoint_records_the_attachment() {
    let h = Harness::new();
    let pod = Netns::new("pod");
    let conf = h.conf("1.0.0", json!({}));
    let r = h
        .tabby("ADD", "wep1", "web-0", Some(&pod), &conf)
        .ok()
        .json();
    let eps = h.endpoints();
    assert_eq!(eps.len(), 1);
    let w = &eps[0];
    assert_eq!(w.metadata.name, "node--1-k8s-web--0-eth0");
    assert_eq!(w.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(w.spec.node.as_deref(), Some("node-1"));
    assert_eq!(w.spec.pod.as_deref(), Some("web-0"));
    assert_eq!(w.spec.container_id.as_deref(), Some("wep1"));
    assert_eq!(w.spec.endpoint.as_deref(), Some("eth0"));
    assert_eq!(
        w.spec.ip_networks,
        [r["ips"][0]["address"].as_str().unwrap()]
    );
    assert_eq!(
        w.spec.interface_name.as_deref(),
        r["interfaces"][0]["name"].as_str()
    );
    assert_eq!(w.spec.mac.as_deref(), r["interfaces"][1]["mac"].as_str());
    h.tabby("DEL", "wep1", "web-0", Some(&pod), &conf).ok();
    h.assert_clean();
}
