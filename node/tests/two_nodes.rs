//! End to end: two nodes, each a network namespace running `tabby-node`, joined by a fabric
//! namespace with a bridge on 192.0.2.0/24; pods made by exec'ing the CNI plugin as a runtime
//! does; pods ping across nodes with the pool unencapsulated (routes over BGP), then after the
//! pool is patched to VXLAN (routes from the datastore).
//!
//! Needs root, iproute2 and ping. Everything the test creates (namespaces, processes, the temp
//! dir) is removed by Drop guards, also when an assertion fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use api::{EncapMode, Key, Kind, Resource};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn tag() -> String {
    format!(
        "{:x}{}",
        std::process::id() % 0xfffff,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn sh(args: &[&str]) -> String {
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

/// `ip netns add`, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(prefix: &str) -> Netns {
        let name = format!("tabby-{prefix}-{}", tag());
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["ip", "-n", &self.name];
        a.extend_from_slice(args);
        sh(&a)
    }

    fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("running ip netns exec")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A child process killed (SIGKILL) and reaped on drop, unless it already exited.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temp dir removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// target/debug, where cargo put tabby-node (and builds the CNI plugins).
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tabby-node"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The CNI plugins `tabby` and `tabby-ipam` live in another package, whose binaries cargo does
/// not build for this package's tests: build them once, into a target dir of their own. Not
/// the workspace's: building one package alone unifies features differently, so cargo would
/// relink `target/debug/tabby` while the cni-plugin tests may be exec'ing it.
fn cni_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = bin_dir().parent().unwrap().join("node-e2e");
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "cni-plugin", "--bins", "--target-dir"])
            .arg(&target)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("running cargo build -p cni-plugin");
        assert!(status.success(), "building the CNI plugins");
        let dir = target.join("debug");
        assert!(dir.join("tabby").exists() && dir.join("tabby-ipam").exists());
        dir
    })
}

/// One HTTP GET to 127.0.0.1:`port` inside `ns` (from a thread that joins the namespace).
fn http_get(ns: &Netns, port: u16, path: &str) -> Option<(u16, String)> {
    let nspath = ns.path();
    let path = path.to_string();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&nspath).ok()?;
        // SAFETY: setns on this thread only; the thread ends after the request.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let code = out.split(' ').nth(1)?.parse().ok()?;
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        Some((code, body))
    })
    .join()
    .ok()
    .flatten()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

struct NodeNs {
    name: String,
    ns: Netns,
    addr: String,
    state: PathBuf,
    socket: PathBuf,
    proc: Option<Proc>,
}

struct Cluster {
    // Field order is drop order: processes, pods, nodes, then the fabric and the temp dir.
    nodes: Vec<NodeNs>,
    pods: Vec<(Netns, String)>,
    fabric: Netns,
    dir: TempDir,
    datastore: String,
    /// Dual stack: IPv6 underlay (2001:db8:1::/64), an IPv6 VXLAN pool, IPv6 pod addresses.
    v6: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.proc.take();
        }
        self.pods.clear();
    }
}

const HEALTH_PORT: u16 = 9099;

impl Cluster {
    fn new(n: usize) -> Cluster {
        Cluster::with_v6(n, false)
    }

    fn with_v6(n: usize, v6: bool) -> Cluster {
        let dir = TempDir(std::env::temp_dir().join(format!("tabby-node-e2e-{}", tag())));
        std::fs::create_dir_all(&dir.0).unwrap();
        let fabric = Netns::new("fab");
        fabric.ip(&["link", "add", "br0", "type", "bridge"]);
        fabric.ip(&["addr", "add", "192.0.2.1/24", "dev", "br0"]);
        if v6 {
            fabric.ip(&["addr", "add", "2001:db8:1::1/64", "dev", "br0", "nodad"]);
        }
        fabric.ip(&["link", "set", "br0", "up"]);
        let datastore = format!("dir:{}", dir.0.join("datastore").display());
        let mut c = Cluster {
            nodes: Vec::new(),
            pods: Vec::new(),
            fabric,
            dir,
            datastore,
            v6,
        };
        for i in 0..n {
            let name = format!("node{}", i + 1);
            let ns = Netns::new("node");
            let t = tag();
            let host_side = format!("tf{t}");
            sh(&[
                "ip",
                "link",
                "add",
                "eth0",
                "netns",
                &ns.name,
                "type",
                "veth",
                "peer",
                "name",
                &host_side,
                "netns",
                &c.fabric.name,
            ]);
            c.fabric
                .ip(&["link", "set", &host_side, "master", "br0", "up"]);
            let addr = format!("192.0.2.{}", 11 + i);
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            ns.ip(&["link", "set", "eth0", "up"]);
            ns.ip(&["route", "add", "default", "via", "192.0.2.1"]);
            if v6 {
                let a6 = format!("2001:db8:1::{}/64", 11 + i);
                ns.ip(&["addr", "add", &a6, "dev", "eth0", "nodad"]);
                ns.ip(&["-6", "route", "add", "default", "via", "2001:db8:1::1"]);
            }
            let state = c.dir.0.join(&name);
            std::fs::create_dir_all(&state).unwrap();
            c.nodes.push(NodeNs {
                socket: state.join("bgp.sock"),
                name,
                ns,
                addr,
                state,
                proc: None,
            });
        }
        c
    }

    fn start(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        // Appended to, so that a restarted node's log follows the first run's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.state.join("tabby-node.log"))
            .unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &n.ns.name])
            .arg(env!("CARGO_BIN_EXE_tabby-node"))
            .args(["--node-name", &n.name, "--datastore", &self.datastore])
            .arg("--state-dir")
            .arg(&n.state)
            .arg("--control-socket")
            .arg(&n.socket)
            .args(["--ip-autodetection-method", "interface=eth0"])
            .env("CALICO_IPV4POOL_CIDR", "198.18.0.0/16")
            .env("CALICO_IPV4POOL_IPIP", "Never")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if self.v6 {
            cmd.args([
                "--ip6",
                "autodetect",
                "--ip6-autodetection-method",
                "interface=eth0",
            ])
            .env("CALICO_IPV6POOL_CIDR", "2001:db8:ff::/48")
            .env("CALICO_IPV6POOL_VXLAN", "Always");
        }
        let child = cmd.spawn().expect("starting tabby-node");
        n.proc = Some(Proc { child });
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].state.join("tabby-node.log")).unwrap_or_default()
    }

    fn pid(&self, i: usize) -> u32 {
        self.nodes[i].proc.as_ref().unwrap().child.id()
    }

    /// A pod on node `i`, made by `tabby ADD` exactly as a runtime runs it; returns its IPv4
    /// address.
    fn add_pod(&mut self, i: usize, pod: &str) -> String {
        self.add_pod_all(i, pod).remove(0)
    }

    /// As [`Cluster::add_pod`]; returns every address of the pod, IPv4 first.
    fn add_pod_all(&mut self, i: usize, pod: &str) -> Vec<String> {
        let node = &self.nodes[i];
        let ns = Netns::new("pod");
        let cid = format!("{pod}-{}", tag());
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "tabby",
            "ipam": {"type": "tabby-ipam"},
            "mtu": 0,
            "datastore": self.datastore,
            "state_dir": node.state,
        });
        let mut conf = conf;
        if self.v6 {
            conf["ipv6_pools"] = serde_json::json!(["default-ipv6-ippool"]);
        }
        let cni = cni_dir();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &node.ns.name])
            .arg(cni.join("tabby"))
            .env_clear()
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", &cid)
            .env("CNI_NETNS", ns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", cni)
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={cid}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "CNI ADD {pod}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let mut ips: Vec<String> = result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a["address"]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        ips.sort_by_key(|a| a.contains(':'));
        self.pods.push((ns, ips[0].clone()));
        ips
    }

    fn ping(&self, from: usize, to_ip: &str) -> bool {
        self.pods[from]
            .0
            .exec(&["ping", "-c1", "-W1", to_ip])
            .status
            .success()
    }

    fn ready(&self, i: usize) -> bool {
        http_get(&self.nodes[i].ns, HEALTH_PORT, "/readiness").is_some_and(|(c, _)| c == 200)
    }

    fn set_pool_modes(&self, ipip: EncapMode, vxlan: EncapMode) {
        let ds = datastore::open(&self.datastore).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // tabbyctl patch: read, change, write with the revision read.
            loop {
                let key = Key::new(Kind::IPPool, "default-ipv4-ippool");
                let Resource::IPPool(mut p) = ds.get(&key).await.unwrap() else {
                    unreachable!()
                };
                p.spec.ipip_mode = Some(ipip);
                p.spec.vxlan_mode = Some(vxlan);
                match ds.update(Resource::IPPool(p)).await {
                    Ok(_) => break,
                    Err(datastore::Error::Conflict { .. }) => continue,
                    Err(e) => panic!("patching the pool: {e}"),
                }
            }
        });
    }

    fn dump(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let routes = n.ns.exec(&["ip", "route"]);
            s += &format!(
                "--- {} routes:\n{}\n--- {} log (tail):\n{}\n",
                n.name,
                String::from_utf8_lossy(&routes.stdout),
                n.name,
                self.log(i)
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        s
    }
}

fn vm_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl Cluster {
    /// Runs one phase of a test; on failure, prints routes and logs of every node first.
    fn phase<T>(&mut self, f: impl FnOnce(&mut Cluster) -> T) -> T {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}", self.dump());
                std::panic::resume_unwind(e);
            }
        }
    }

    fn routes(&self, i: usize) -> String {
        String::from_utf8_lossy(&self.nodes[i].ns.exec(&["ip", "route"]).stdout).into_owned()
    }

    /// SIGTERM to node `i`'s tabby-node; it must exit 0.
    fn stop(&mut self, i: usize) {
        let pid = self.pid(i);
        sh(&["kill", "-TERM", &pid.to_string()]);
        let mut p = self.nodes[i].proc.take().unwrap();
        let status = p.child.wait().unwrap();
        assert!(status.success(), "tabby-node exit status {status}");
    }

    fn bgp_status(&self, i: usize) -> Option<bgp::speaker::StatusReport> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        match rt.block_on(bgp::control::request(
            &self.nodes[i].socket,
            &bgp::control::Request::Status,
        )) {
            Ok(bgp::control::Response::Status(r)) => Some(r),
            _ => None,
        }
    }
}

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
