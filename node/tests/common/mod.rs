//! The two-node harness: a fabric namespace with a bridge on 192.0.2.0/24, node namespaces
//! running `tabby-node`, pods made by exec'ing the CNI plugin as a runtime does.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use api::{EncapMode, Key, Kind, Resource};

pub static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn tag() -> String {
    format!(
        "{:x}{}",
        std::process::id() % 0xfffff,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

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

/// `ip netns add`, deleted on drop.
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

    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["ip", "-n", &self.name];
        a.extend_from_slice(args);
        sh(&a)
    }

    pub fn exec(&self, args: &[&str]) -> Output {
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
pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temp dir removed on drop.
pub struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// target/debug, where cargo put tabby-node (and builds the CNI plugins).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tabby-node"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The CNI plugins `tabby` and `tabby-ipam` live in another package, whose binaries cargo does
/// not build for this package's tests: build them once, into a target dir of their own. Not
/// the workspace's: building one package alone unifies features differently, so cargo would
/// relink `target/debug/tabby` while the cni-plugin tests may be exec'ing it.
pub fn cni_dir() -> &'static Path {
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
pub fn http_get(ns: &Netns, port: u16, path: &str) -> Option<(u16, String)> {
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

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub struct NodeNs {
    pub name: String,
    pub ns: Netns,
    pub addr: String,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub proc: Option<Proc>,
}

pub struct Cluster {
    // Field order is drop order: processes, pods, nodes, then the fabric and the temp dir.
    pub nodes: Vec<NodeNs>,
    pub pods: Vec<(Netns, String)>,
    pub fabric: Netns,
    pub dir: TempDir,
    pub datastore: String,
    /// Set when the cluster's datastore is a Kubernetes API server (see [`KubeApi`]).
    pub kube: Option<KubeApi>,
    /// Dual stack: IPv6 underlay (2001:db8:1::/64), an IPv6 VXLAN pool, IPv6 pod addresses.
    pub v6: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.proc.take();
        }
        self.pods.clear();
    }
}

pub const HEALTH_PORT: u16 = 9099;

impl Cluster {
    pub fn new(n: usize) -> Cluster {
        Cluster::with_v6(n, false)
    }

    pub fn with_v6(n: usize, v6: bool) -> Cluster {
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
            kube: None,
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

    pub fn start(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        // Appended to, so that a restarted node's log follows the first run's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.state.join("tabby-node.log"))
            .unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &n.ns.name]);
        if let Some(kube) = &self.kube {
            // In a pod: the service account where Kubernetes mounts it (/var/run is /run), in a
            // mount namespace of tabby-node's own, and the API server from the environment.
            cmd.args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "mount --bind {} /run && exec \"$0\" \"$@\"",
                    kube.run_dir.display()
                ));
            for (k, v) in &kube.env {
                cmd.env(k, v);
            }
        }
        cmd.arg(env!("CARGO_BIN_EXE_tabby-node"))
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

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].state.join("tabby-node.log")).unwrap_or_default()
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.nodes[i].proc.as_ref().unwrap().child.id()
    }

    /// A pod on node `i`, made by `tabby ADD` exactly as a runtime runs it; returns its IPv4
    /// address.
    pub fn add_pod(&mut self, i: usize, pod: &str) -> String {
        self.add_pod_all(i, pod).remove(0)
    }

    /// As [`Cluster::add_pod`]; returns every address of the pod, IPv4 first.
    pub fn add_pod_all(&mut self, i: usize, pod: &str) -> Vec<String> {
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
        if let Some(kube) = &self.kube {
            conf.as_object_mut().unwrap().remove("datastore");
            conf["datastore_type"] = serde_json::json!("kubernetes");
            conf["kubernetes"] = serde_json::json!({"kubeconfig": kube.kubeconfig()});
            kube.seed_pod(pod, &node.name);
        }
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

    pub fn ping(&self, from: usize, to_ip: &str) -> bool {
        self.pods[from]
            .0
            .exec(&["ping", "-c1", "-W1", to_ip])
            .status
            .success()
    }

    pub fn ready(&self, i: usize) -> bool {
        http_get(&self.nodes[i].ns, HEALTH_PORT, "/readiness").is_some_and(|(c, _)| c == 200)
    }

    pub fn set_pool_modes(&self, ipip: EncapMode, vxlan: EncapMode) {
        if let Some(kube) = &self.kube {
            kube.set_pool_modes(ipip, vxlan);
            return;
        }
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

    pub fn dump(&self) -> String {
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

pub fn vm_rss_kb(pid: u32) -> Option<u64> {
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
    pub fn phase<T>(&mut self, f: impl FnOnce(&mut Cluster) -> T) -> T {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}", self.dump());
                std::panic::resume_unwind(e);
            }
        }
    }

    pub fn routes(&self, i: usize) -> String {
        String::from_utf8_lossy(&self.nodes[i].ns.exec(&["ip", "route"]).stdout).into_owned()
    }

    /// SIGTERM to node `i`'s tabby-node; it must exit 0.
    pub fn stop(&mut self, i: usize) {
        let pid = self.pid(i);
        sh(&["kill", "-TERM", &pid.to_string()]);
        let mut p = self.nodes[i].proc.take().unwrap();
        let status = p.child.wait().unwrap();
        assert!(status.success(), "tabby-node exit status {status}");
    }

    pub fn bgp_status(&self, i: usize) -> Option<bgp::speaker::StatusReport> {
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

/// A Kubernetes API server (the test one) on the fabric, at 192.0.2.1:6443 over HTTPS, with
/// a service-account token limited to the chart's ClusterRole: what tabby-node and the CNI
/// plugin would find in a cluster.
pub struct KubeApi {
    pub cluster: testapi::TestCluster,
    /// Bound over /run for tabby-node: holds secrets/kubernetes.io/serviceaccount.
    pub run_dir: PathBuf,
    /// KUBERNETES_SERVICE_HOST / _PORT.
    pub env: Vec<(String, String)>,
}

impl KubeApi {
    pub fn server(&self) -> &testapi::Server {
        self.cluster.server()
    }

    /// The CNI plugin's kubeconfig (as `tabby-node install-cni` writes one).
    pub fn kubeconfig(&self) -> &Path {
        self.cluster.kubeconfig()
    }

    fn seed_pod(&self, pod: &str, node: &str) {
        self.server()
            .put_object(
                &format!("/api/v1/namespaces/default/pods/{pod}"),
                serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod, "namespace": "default", "labels": {"app": pod}},
                    "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}),
            )
            .unwrap();
    }

    /// Whether the IPAM block holding `ip` (a /26 of the default pool) has it allocated.
    pub fn allocated(&self, ip: &str) -> bool {
        let ip: std::net::Ipv4Addr = ip.parse().unwrap();
        let o = ip.octets();
        let base = o[3] & 0xc0;
        let name = format!("{}-{}-{}-{}-26", o[0], o[1], o[2], base);
        let block = self
            .server()
            .get_object(&format!("/apis/crd.projectcalico.org/v1/ipamblocks/{name}"))
            .unwrap_or_else(|| panic!("block {name}"));
        !block["spec"]["allocations"][usize::from(o[3] - base)].is_null()
    }

    /// `tabbyctl patch ippool default-ipv4-ippool` as the operator does it.
    fn set_pool_modes(&self, ipip: EncapMode, vxlan: EncapMode) {
        let path = "/apis/crd.projectcalico.org/v1/ippools/default-ipv4-ippool";
        let mut pool = self.server().get_object(path).expect("the default pool");
        pool["spec"]["ipipMode"] = serde_json::to_value(ipip).unwrap();
        pool["spec"]["vxlanMode"] = serde_json::to_value(vxlan).unwrap();
        self.server().put_object(path, pool).unwrap();
    }
}

impl Cluster {
    /// As [`Cluster::new`], with the Kubernetes API as the datastore: the API server listens on
    /// the fabric, the kubelet has registered every node, and tabby-node runs in-cluster.
    pub fn with_kubernetes(n: usize) -> Cluster {
        let mut c = Cluster::new(n);
        let cluster = testapi::TestCluster::start_in_netns(
            "node-e2e",
            testapi::Options {
                listen: "192.0.2.1:6443".parse().unwrap(),
                tls: true,
                token: Some(format!("tabby-node-{}", tag())),
                rbac: Some(testapi::harness::chart_rules()),
                ..Default::default()
            },
            &c.fabric.path(),
        );
        let server = cluster.server();
        let run_dir = cluster.dir().join("run");
        server
            .write_service_account_dir(
                &run_dir.join("secrets/kubernetes.io/serviceaccount"),
                "kube-system",
            )
            .unwrap();
        for node in &c.nodes {
            server
                .put_object(
                    &format!("/api/v1/nodes/{}", node.name),
                    serde_json::json!({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": node.name,
                            "labels": {"kubernetes.io/hostname": node.name}},
                        "status": {"addresses": [{"type": "InternalIP", "address": node.addr}]}}),
                )
                .unwrap();
        }
        let mut env: Vec<(String, String)> = server
            .incluster_env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        // Leaked pod addresses are freed after a second, not Calico's 15 minutes.
        env.push(("TABBY_IPAM_GC_GRACE_SECONDS".into(), "1".into()));
        env.push(("TABBY_IPAM_GC_INTERVAL_SECONDS".into(), "1".into()));
        c.datastore = "kubernetes:".to_string();
        c.kube = Some(KubeApi {
            cluster,
            run_dir,
            env,
        });
        c
    }
}
