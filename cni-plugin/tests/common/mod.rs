//! Namespaces for tests: each test makes its own and removes them when it ends, pass or fail.
#![allow(dead_code)]

pub mod cni;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique short tag for this process and call (netns and link names must stay short).
pub fn tag() -> String {
    format!(
        "{:x}{}",
        std::process::id() % 0xfffff,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `ip netns add NAME`, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = format!("tabby-{prefix}-{}", tag());
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip -n NAME ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["ip", "-n", &self.name];
        a.extend_from_slice(args);
        sh(&a)
    }

    /// `ip netns exec NAME ARGS`, whatever its outcome.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("running ip netns exec")
    }

    pub fn open(&self) -> cni_plugin::netns::NetNs {
        cni_plugin::netns::NetNs::open(&self.path()).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs a command that must succeed; returns its stdout.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A node namespace with an underlay link to an "uplink" namespace and a default route through
/// it: DESIGN.md, the kernel answers proxy ARP for 169.254.1.1 only if the node has a route
/// for it out of another interface. The node's underlay address is 192.0.2.N/24.
pub struct Node {
    pub ns: Netns,
    pub uplink: Netns,
    pub addr: String,
}

impl Node {
    pub fn new(n: u8) -> Node {
        let ns = Netns::new("node");
        let uplink = Netns::new("up");
        let t = tag();
        let (a, b) = (format!("tu{t}"), format!("tv{t}"));
        sh(&[
            "ip",
            "link",
            "add",
            &a,
            "netns",
            &ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &uplink.name,
        ]);
        let addr = format!("192.0.2.{n}");
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", &a]);
        ns.ip(&["link", "set", &a, "up"]);
        uplink.ip(&["addr", "add", "192.0.2.254/24", "dev", &b]);
        uplink.ip(&["link", "set", &b, "up"]);
        ns.ip(&["route", "add", "default", "via", "192.0.2.254"]);
        Node { ns, uplink, addr }
    }
}
