//! A small netns cluster harness for felix's namespace tests: node namespaces on underlay
//! bridges in a fabric namespace (with a router namespace between two subnets), pods wired the
//! way the CNI plugin wires them, and felix running on a thread inside each node namespace, fed
//! its inputs directly. Every namespace is removed by a Drop guard, also when a test panics.
#![allow(dead_code)]

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use api::{
    AffinityState, BlockAffinitySpec, EncapMode, IPPoolSpec, NodeBgpSpec, NodeSpec,
    WorkloadEndpointSpec,
};
use felix::agent::{AgentConfig, AgentMsg, Status, channels, run};
use felix::{Input, LocalNode};
use tokio::sync::{mpsc, watch};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short prefix for this test's namespaces (interface names stay under 15 chars).
pub fn unique(tag: &str) -> String {
    format!(
        "tf{}{}{tag}",
        std::process::id() % 100000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Skips (returns false) unless we are root with the tools the tests need.
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: namespace tests need root");
        return false;
    }
    for tool in ["ip", "nft", "tcpdump", "ping"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            eprintln!("skipping: {tool} not installed");
            return false;
        }
    }
    true
}

pub fn run_cmd(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn must(args: &[&str]) -> String {
    let out = run_cmd(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        must(&["ip", "netns", "add", name]);
        let ns = Netns { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        must(&v)
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        run_cmd(&v)
    }

    pub fn sysctl_set(&self, key: &str, value: &str) {
        let out = self.exec(&["sysctl", "-qw", &format!("{key}={value}")]);
        assert!(out.status.success(), "sysctl {key}={value}");
    }

    pub fn sysctl(&self, key: &str) -> String {
        let out = self.exec(&["sysctl", "-n", key]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn ping(&self, dst: &str, count: u32) -> bool {
        self.exec(&[
            "ping",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            dst,
        ])
        .status
        .success()
    }

    /// Starts tcpdump on `iface` and waits until it listens.
    pub fn capture(&self, iface: &str, filter: &str) -> Capture {
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "tcpdump", "-l", "-n", "-i", iface,
            ])
            .args(filter.split_whitespace())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        // tcpdump prints "listening on ..." to stderr once the socket is up.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut r = std::io::BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
                line.clear();
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("tcpdump did not start");
        Capture { child: Some(child) }
    }

    pub fn link_stat(&self, iface: &str, stat: &str) -> u64 {
        let out = self.exec(&["cat", &format!("/sys/class/net/{iface}/statistics/{stat}")]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub struct Capture {
    child: Option<Child>,
}

impl Capture {
    /// Stops the capture and returns the decoded packets, one per line.
    pub fn finish(mut self) -> String {
        std::thread::sleep(Duration::from_millis(300));
        let child = self.child.take().expect("running");
        // SAFETY: kill(2) on a child we started and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let out = child.wait_with_output().expect("tcpdump output");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// felix running on its own thread inside a node namespace.
pub struct Felix {
    pub tx: Option<mpsc::Sender<AgentMsg>>,
    pub status: watch::Receiver<Status>,
    thread: Option<JoinHandle<()>>,
    mtu_dir: std::path::PathBuf,
}

impl Felix {
    pub fn start(ns: &Netns, node: &str, underlay: &str, resync: Duration) -> Felix {
        let (h, rx, stx) = channels();
        let mtu_dir = std::env::temp_dir().join(format!("{}-felix", ns.name));
        let mut cfg = AgentConfig::new(LocalNode {
            name: node.into(),
            underlay_dev: underlay.into(),
        });
        cfg.mtu_file = Some(mtu_dir.join("mtu"));
        cfg.resync_interval = Some(resync);
        let path = format!("/run/netns/{}", ns.name);
        let thread = std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("netns file");
            // SAFETY: setns on a valid namespace fd; affects only this thread, which is what we
            // want: every socket and child process felix makes from here is in the node.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            if let Err(e) = rt.block_on(run(cfg, rx, stx)) {
                eprintln!("felix in {path}: {e}");
            }
        });
        Felix {
            tx: Some(h.tx),
            status: h.status,
            thread: Some(thread),
            mtu_dir,
        }
    }

    pub fn send(&self, i: Input) {
        self.tx
            .as_ref()
            .expect("running")
            .blocking_send(AgentMsg::Input(i))
            .expect("felix alive");
    }

    pub fn in_sync(&self) {
        self.tx
            .as_ref()
            .expect("running")
            .blocking_send(AgentMsg::InSync)
            .expect("felix alive");
    }

    pub fn mtu_file(&self) -> Option<String> {
        std::fs::read_to_string(self.mtu_dir.join("mtu")).ok()
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }
}

impl Drop for Felix {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.mtu_dir);
    }
}

/// Polls `f` until it holds or `timeout` passes; returns the time it took.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// One node of a test cluster.
pub struct NodeDef {
    pub name: &'static str,
    /// CIDR form, e.g. `192.0.2.11/24`.
    pub addr: &'static str,
    pub gateway: &'static str,
    /// Which underlay segment (bridge) it is on: 0 = 192.0.2.0/24, 1 = 198.51.100.0/24.
    pub segment: usize,
    pub block: &'static str,
    pub pod_ip: &'static str,
    pub vtep_ip: &'static str,
    pub vtep_mac: &'static str,
}

pub const N1: NodeDef = NodeDef {
    name: "n1",
    addr: "192.0.2.11/24",
    gateway: "192.0.2.1",
    segment: 0,
    block: "198.18.0.0/26",
    pod_ip: "198.18.0.10",
    vtep_ip: "198.18.0.1",
    vtep_mac: "66:00:00:00:00:01",
};
pub const N2: NodeDef = NodeDef {
    name: "n2",
    addr: "192.0.2.12/24",
    gateway: "192.0.2.1",
    segment: 0,
    block: "198.18.0.64/26",
    pod_ip: "198.18.0.74",
    vtep_ip: "198.18.0.65",
    vtep_mac: "66:00:00:00:00:02",
};
pub const N3: NodeDef = NodeDef {
    name: "n3",
    addr: "198.51.100.13/24",
    gateway: "198.51.100.1",
    segment: 1,
    block: "198.18.0.128/26",
    pod_ip: "198.18.0.138",
    vtep_ip: "198.18.0.129",
    vtep_mac: "66:00:00:00:00:03",
};

pub const POOL: &str = "198.18.0.0/16";

/// Host-side veth name of a node's test pod (Calico style: `cali` + 11 hex chars).
pub fn cali_name(node: &str) -> String {
    format!("cali{node:0<11}")
}

pub struct Cluster {
    // Field order is drop order: felix threads stop before their namespaces go.
    pub felix: Vec<Felix>,
    pub extra_pods: Vec<Netns>,
    pub pods: Vec<Netns>,
    pub nodes: Vec<Netns>,
    pub defs: Vec<&'static NodeDef>,
    pub router: Option<Netns>,
    pub fabric: Netns,
    pub prefix: String,
}

impl Cluster {
    /// Builds the namespaces: a fabric with one bridge per segment used (and a router between
    /// them when there are two), one namespace per node and one pod per node.
    pub fn new(tag: &str, defs: &[&'static NodeDef]) -> Cluster {
        let prefix = unique(tag);
        let fabric = Netns::new(&format!("{prefix}-fab"));
        let two_segments = defs.iter().any(|d| d.segment == 1);
        for (seg, gw) in [(0, "192.0.2.1/24"), (1, "198.51.100.1/24")] {
            if seg == 1 && !two_segments {
                continue;
            }
            let br = format!("br{seg}");
            fabric.ip(&["link", "add", &br, "type", "bridge"]);
            fabric.ip(&["link", "set", &br, "up"]);
            let _ = gw;
        }
        let router = two_segments.then(|| {
            let r = Netns::new(&format!("{prefix}-rtr"));
            for (seg, addr) in [(0, "192.0.2.1/24"), (1, "198.51.100.1/24")] {
                let ifc = format!("r{seg}");
                must(&[
                    "ip",
                    "link",
                    "add",
                    &ifc,
                    "netns",
                    &r.name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &format!("rp{seg}"),
                    "netns",
                    &fabric.name,
                ]);
                r.ip(&["addr", "add", addr, "dev", &ifc]);
                r.ip(&["link", "set", &ifc, "up"]);
                fabric.ip(&[
                    "link",
                    "set",
                    &format!("rp{seg}"),
                    "master",
                    &format!("br{seg}"),
                    "up",
                ]);
            }
            r.sysctl_set("net.ipv4.ip_forward", "1");
            r
        });
        if router.is_none() {
            // One segment: the fabric bridge itself is the nodes' default gateway.
            fabric.ip(&["addr", "add", "192.0.2.1/24", "dev", "br0"]);
        }
        let mut nodes = Vec::new();
        let mut pods = Vec::new();
        for d in defs {
            let n = Netns::new(&format!("{prefix}-{}", d.name));
            let port = format!("p{}", d.name);
            must(&[
                "ip",
                "link",
                "add",
                "eth0",
                "netns",
                &n.name,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &fabric.name,
            ]);
            fabric.ip(&[
                "link",
                "set",
                &port,
                "master",
                &format!("br{}", d.segment),
                "up",
            ]);
            n.ip(&["addr", "add", d.addr, "dev", "eth0"]);
            n.ip(&["link", "set", "eth0", "up"]);
            // Proxy ARP for 169.254.1.1 answers only with a route out of another interface.
            n.ip(&["route", "add", "default", "via", d.gateway, "dev", "eth0"]);
            // A pod, wired the way the CNI plugin wires it.
            let p = Netns::new(&format!("{prefix}-{}p", d.name));
            let cali = cali_name(d.name);
            must(&[
                "ip", "link", "add", &cali, "netns", &n.name, "type", "veth", "peer", "name",
                "eth0", "netns", &p.name,
            ]);
            n.ip(&["link", "set", &cali, "address", "ee:ee:ee:ee:ee:ee", "up"]);
            p.ip(&["addr", "add", &format!("{}/32", d.pod_ip), "dev", "eth0"]);
            p.ip(&["link", "set", "eth0", "mtu", "1400", "up"]);
            p.ip(&[
                "route",
                "add",
                "169.254.1.1",
                "dev",
                "eth0",
                "scope",
                "link",
            ]);
            p.ip(&[
                "route",
                "add",
                "default",
                "via",
                "169.254.1.1",
                "dev",
                "eth0",
            ]);
            nodes.push(n);
            pods.push(p);
        }
        Cluster {
            felix: Vec::new(),
            extra_pods: Vec::new(),
            pods,
            nodes,
            defs: defs.to_vec(),
            router,
            fabric,
            prefix,
        }
    }

    /// Starts felix in every node and feeds it the whole cluster.
    pub fn start_felix(&mut self, pool: IPPoolSpec, resync: Duration) {
        for (i, d) in self.defs.iter().enumerate() {
            let f = Felix::start(&self.nodes[i], d.name, "eth0", resync);
            for input in self.inputs(d, &pool) {
                f.send(input);
            }
            f.in_sync();
            self.felix.push(f);
        }
    }

    pub fn inputs(&self, me: &NodeDef, pool: &IPPoolSpec) -> Vec<Input> {
        let mut v = vec![Input::PoolUpdate("default".into(), pool.clone())];
        for d in &self.defs {
            v.push(Input::NodeUpdate(
                d.name.into(),
                NodeSpec {
                    bgp: Some(NodeBgpSpec {
                        ipv4_address: Some(d.addr.into()),
                        ..Default::default()
                    }),
                    ipv4_vxlan_tunnel_addr: Some(d.vtep_ip.into()),
                    vxlan_tunnel_mac_addr: Some(d.vtep_mac.into()),
                    ..Default::default()
                },
            ));
            v.push(Input::AffinityUpdate(
                format!("{}-block", d.name),
                BlockAffinitySpec {
                    state: AffinityState::Confirmed,
                    node: d.name.into(),
                    cidr: Some(d.block.parse().unwrap()),
                    ..Default::default()
                },
            ));
        }
        // The pod's own MAC, as the CNI plugin records it in the WorkloadEndpoint.
        let mac = self.pod(me.name).ip(&["-o", "link", "show", "eth0"]);
        let mac = mac
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(String::from);
        v.push(Input::WorkloadUpdate(
            format!("{}-pod", me.name),
            WorkloadEndpointSpec {
                node: Some(me.name.into()),
                interface_name: Some(cali_name(me.name)),
                ip_networks: vec![format!("{}/32", me.pod_ip)],
                mac,
                ..Default::default()
            },
        ));
        v
    }

    /// Adds a pod to `node` with an address of the test's choosing (e.g. borrowed from another
    /// node's block); returns its namespace and its WorkloadEndpoint input.
    pub fn add_pod(&mut self, node: &str, veth: &str, ip: &str) -> Input {
        let p = Netns::new(&format!("{}-{veth}", self.prefix));
        let n = self.node(node).name.clone();
        must(&[
            "ip", "link", "add", veth, "netns", &n, "type", "veth", "peer", "name", "eth0",
            "netns", &p.name,
        ]);
        must(&[
            "ip",
            "-n",
            &n,
            "link",
            "set",
            veth,
            "address",
            "ee:ee:ee:ee:ee:ee",
            "up",
        ]);
        p.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        p.ip(&["link", "set", "eth0", "mtu", "1400", "up"]);
        p.ip(&[
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ]);
        p.ip(&[
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ]);
        self.extra_pods.push(p);
        Input::WorkloadUpdate(
            format!("{node}-{veth}"),
            WorkloadEndpointSpec {
                node: Some(node.into()),
                interface_name: Some(veth.into()),
                ip_networks: vec![format!("{ip}/32")],
                ..Default::default()
            },
        )
    }

    /// Sends an input to every node's felix.
    pub fn send_all(&self, i: Input) {
        for f in &self.felix {
            f.send(i.clone());
        }
    }

    pub fn node(&self, name: &str) -> &Netns {
        &self.nodes[self.defs.iter().position(|d| d.name == name).unwrap()]
    }

    pub fn pod(&self, name: &str) -> &Netns {
        &self.pods[self.defs.iter().position(|d| d.name == name).unwrap()]
    }

    pub fn felix(&self, name: &str) -> &Felix {
        &self.felix[self.defs.iter().position(|d| d.name == name).unwrap()]
    }

    /// `ip route show PREFIX` on a node, trimmed.
    pub fn route(&self, node: &str, prefix: &str) -> String {
        self.node(node)
            .ip(&["route", "show", prefix])
            .trim()
            .to_string()
    }

    /// Waits until every node has a route to every other node's block.
    pub fn wait_converged(&self) {
        for me in &self.defs {
            for other in &self.defs {
                if me.name == other.name {
                    continue;
                }
                wait_for(
                    &format!("{} route to {}", me.name, other.block),
                    Duration::from_secs(10),
                    || self.route(me.name, other.block).contains("proto 80"),
                );
            }
            wait_for(
                &format!("{} pod route", me.name),
                Duration::from_secs(10),
                || self.route(me.name, me.pod_ip).contains("proto 80"),
            );
        }
    }
}

pub fn pool(ipip: EncapMode, vxlan: EncapMode, nat: bool) -> IPPoolSpec {
    IPPoolSpec {
        cidr: Some(POOL.parse().unwrap()),
        ipip_mode: Some(ipip),
        vxlan_mode: Some(vxlan),
        nat_outgoing: nat,
        ..Default::default()
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Runs `f` on a thread inside namespace `ns`, with a current-thread tokio runtime.
pub fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        // SAFETY: setns on a valid namespace fd, for this thread only.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
    .join()
    .expect("netns thread")
}
