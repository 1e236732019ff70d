//! Every bad input gives the spec's error code and a message that says what was wrong, and
//! leaves nothing behind.

mod common;

use common::Netns;
use common::cni::Harness;
use serde_json::json;

const ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web";

#[test]
fn malformed_input() {
    let h = Harness::new();
    let pod = Netns::new("e");
    let p = Some(pod.path());
    let p = p.as_deref();

    h.exec("tabby", "ADD", "e1", p, ARGS, b"{not json")
        .cni_error(6, "decoding network configuration from stdin");
    let conf = h.conf("9.9.9", json!({}));
    let j = h
        .exec("tabby", "ADD", "e1", p, ARGS, conf.to_string().as_bytes())
        .cni_error(1, "unsupported cniVersion \"9.9.9\"");
    assert_eq!(j["cniVersion"], "1.1.0", "an error in a version we speak");
    let mut conf = h.conf("1.0.0", json!({}));
    conf.as_object_mut().unwrap().remove("ipam");
    h.exec("tabby", "ADD", "e1", p, ARGS, conf.to_string().as_bytes())
        .cni_error(7, "missing `ipam` section");
    let conf = h.conf("1.0.0", json!({"ipam": {"type": "no-such-ipam"}}));
    h.exec("tabby", "ADD", "e1", p, ARGS, conf.to_string().as_bytes())
        .cni_error(7, "\"no-such-ipam\" not found in CNI_PATH");
    let conf = h.conf("1.0.0", json!({"mtu": "big"}));
    h.exec("tabby", "ADD", "e1", p, ARGS, conf.to_string().as_bytes())
        .cni_error(7, "invalid network configuration");

    let conf = h.conf("1.0.0", json!({})).to_string();
    let j = h
        .exec("tabby", "ADD", "e1", None, ARGS, conf.as_bytes())
        .cni_error(4, "CNI_NETNS");
    assert_eq!(
        j["cniVersion"], "1.0.0",
        "errors speak the config's version"
    );
    h.exec("tabby", "FROB", "e1", p, ARGS, conf.as_bytes())
        .cni_error(4, "\"FROB\"");
    h.exec(
        "tabby",
        "ADD",
        "e1",
        p,
        "K8S_POD_NAME=web;COLOUR=blue",
        conf.as_bytes(),
    )
    .cni_error(4, "COLOUR");
    h.exec("tabby", "ADD", "bad/id", p, ARGS, conf.as_bytes())
        .cni_error(4, "CNI_CONTAINERID");
    h.exec(
        "tabby",
        "ADD",
        "e1",
        Some(std::path::Path::new("/run/netns/tabby-does-not-exist")),
        ARGS,
        conf.as_bytes(),
    )
    .cni_error(4, "/run/netns/tabby-does-not-exist");
    h.assert_clean();
}

#[test]
fn pool_exhausted() {
    // A /30 pool in one /30 block: four addresses.
    let h = Harness::with_pool("198.19.0.0/30", Some(30));
    let conf = h.conf("1.0.0", json!({}));
    let pods: Vec<Netns> = (0..5).map(|_| Netns::new("x")).collect();
    for (i, pod) in pods.iter().enumerate().take(4) {
        h.tabby("ADD", &format!("ex{i}"), &format!("p{i}"), Some(pod), &conf)
            .ok();
    }
    h.tabby("ADD", "ex4", "p4", Some(&pods[4]), &conf)
        .cni_error(103, "pool exhausted");
    assert_eq!(h.cali_links().len(), 4, "the failed ADD left no veth");
    for (i, pod) in pods.iter().enumerate() {
        h.tabby("DEL", &format!("ex{i}"), &format!("p{i}"), Some(pod), &conf)
            .ok();
    }
    h.assert_clean();
}

#[test]
fn datastore_unreadable() {
    let h = Harness::new();
    let pod = Netns::new("d");
    // A regular file where the datastore directory should be.
    let file = h.dir.join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let url = format!("dir:{}", file.display());
    let conf = h.conf("1.1.0", json!({"datastore": url}));
    h.tabby("ADD", "ds1", "web", Some(&pod), &conf)
        .cni_error(102, &url);
    h.tabby("STATUS", "", "", None, &conf).cni_error(50, &url);
    h.tabby("DEL", "ds1", "web", Some(&pod), &conf)
        .cni_error(102, &url);
    h.assert_clean();
}

#[test]
fn status_without_pools_is_not_available() {
    let h = Harness::new();
    let empty = h.dir.join("empty-datastore");
    let conf = h.conf(
        "1.1.0",
        json!({"datastore": format!("dir:{}", empty.display())}),
    );
    h.tabby("STATUS", "", "", None, &conf)
        .cni_error(50, "no enabled IP pool");
}

/// A failure after allocation (here: the kernel refuses the MTU) undoes the allocation.
#[test]
fn failure_after_allocation_rolls_back() {
    let h = Harness::new();
    let pod = Netns::new("r");
    let conf = h.conf("1.0.0", json!({"mtu": 70000}));
    h.tabby("ADD", "rb1", "web", Some(&pod), &conf)
        .cni_error(101, "creating veth");
    h.assert_clean();
    assert_eq!(
        pod.ip(&["-o", "link"]).lines().count(),
        1,
        "only lo in the pod"
    );
}
