//! The netns cluster: a router namespace between two underlay segments, one namespace per node
//! running `tabby-node`, pods made by exec'ing the CNI plugin.
//!
//! ```text
//!   segment a 192.0.2.0/24                      segment b 198.51.100.0/24
//!   node1 eth0 .11 ─┐                         ┌─ node3 eth0 .13
//!   node2 eth0 .12 ─┴─ br-a .1 ─ router ─ br-b .1 ─┴─ node4 eth0 .14
//!                      (ip_forward; BIRD as the ToR: learns every node's
//!                       blocks over iBGP so unencapsulated traffic crosses)
//! ```
//!
//! Everything built is recorded in `<state dir>/lab.json` as it is built, so `tabby-lab down`
//! can remove it after a crash; while a [`Cluster`] is armed, dropping it removes it all too.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::sys::{self, in_ns, ip, ip_in, run};

/// The pool every lab uses (DESIGN.md: pod pools in 198.18.0.0/15).
pub const POOL_CIDR: &str = "198.18.0.0/16";
pub const POOL_NAME: &str = "default-ipv4-ippool";
/// Calico's default AS, used by the nodes and the router alike (iBGP).
pub const ASN: u32 = 64512;

/// The pool's encapsulation, as `--mode` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    None,
    Vxlan,
    Ipip,
    Crosssubnet,
}

impl Mode {
    /// (ipipMode, vxlanMode) of the IPPool. CrossSubnet uses VXLAN, which every kernel has.
    pub fn pool_modes(self) -> (&'static str, &'static str) {
        match self {
            Mode::None => ("Never", "Never"),
            Mode::Vxlan => ("Never", "Always"),
            Mode::Ipip => ("Always", "Never"),
            Mode::Crosssubnet => ("Never", "CrossSubnet"),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Mode::None => "no encapsulation",
            Mode::Vxlan => "VXLAN Always",
            Mode::Ipip => "IPIP Always",
            Mode::Crosssubnet => "VXLAN CrossSubnet",
        }
    }

    /// The device a node routes a remote pod through: the underlay, `vxlan.calico` or `tunl0`.
    pub fn device(self, same_segment: bool) -> &'static str {
        match self {
            Mode::None => "eth0",
            Mode::Vxlan => "vxlan.calico",
            Mode::Ipip => "tunl0",
            Mode::Crosssubnet if same_segment => "eth0",
            Mode::Crosssubnet => "vxlan.calico",
        }
    }
}

/// IPIP needs the kernel's ipip module; say so before building anything.
pub fn check_ipip() -> Result<(), Error> {
    if Path::new("/sys/module/ipip").exists() {
        return Ok(());
    }
    let probe = sys::output(Command::new("modprobe").arg("ipip"));
    if probe.status.success() && Path::new("/sys/module/ipip").exists() {
        return Ok(());
    }
    let why = if probe.status.code() == Some(127) {
        "modprobe is not installed".to_string()
    } else {
        format!(
            "`modprobe ipip` failed: {}",
            sys::text(&probe.stderr).trim()
        )
    };
    Err(Error::NoIpip {
        detail: format!("/sys/module/ipip is absent and {why}"),
    })
}

/// The binaries the lab runs, found in one directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bins {
    pub dir: PathBuf,
}

impl Bins {
    pub const NAMES: [&'static str; 4] = ["tabby-node", "tabby", "tabby-ipam", "tabbyctl"];

    /// `dir`, or the directory tabby-lab itself runs from (cargo puts them all there).
    pub fn locate(dir: Option<PathBuf>) -> Result<Bins, Error> {
        let dir = match dir {
            Some(d) => d,
            None => std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from(".")),
        };
        for name in Bins::NAMES {
            if !dir.join(name).is_file() {
                return Err(Error::MissingBinary {
                    name: name.to_string(),
                    dir,
                });
            }
        }
        Ok(Bins { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Segment {
    A,
    B,
}

impl Segment {
    pub fn subnet(self) -> &'static str {
        match self {
            Segment::A => "192.0.2",
            Segment::B => "198.51.100",
        }
    }

    pub fn bridge(self) -> &'static str {
        match self {
            Segment::A => "br-a",
            Segment::B => "br-b",
        }
    }

    pub fn gateway(self) -> Ipv4Addr {
        format!("{}.1", self.subnet()).parse().unwrap()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub ns: String,
    pub addr: Ipv4Addr,
    pub segment: Segment,
    /// Its tabby-node's state dir (node-name file, mtu, log, control socket).
    pub dir: PathBuf,
}

impl Node {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("bgp.sock")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("tabby-node.log")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pod {
    pub name: String,
    pub ns: String,
    pub node: usize,
    pub ip: Ipv4Addr,
    pub container_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    /// The program, checked against /proc/PID/cmdline before a kill.
    pub program: String,
    /// Which node (or "router") it serves.
    pub role: String,
}

/// Everything the lab built; `lab.json` in the state dir.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// Prefix of every namespace, unique per run (`tl` + pid), so parallel labs do not collide.
    pub prefix: String,
    pub state_dir: PathBuf,
    pub bins: Bins,
    pub mode: Mode,
    pub namespaces: Vec<String>,
    pub processes: Vec<Process>,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
}

impl Record {
    pub fn file(state_dir: &Path) -> PathBuf {
        state_dir.join("lab.json")
    }

    pub fn load(state_dir: &Path) -> Result<Option<Record>, Error> {
        let file = Record::file(state_dir);
        match std::fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::State {
                    file,
                    detail: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::State {
                file,
                detail: e.to_string(),
            }),
        }
    }

    fn save(&self) -> Result<(), Error> {
        let file = Record::file(&self.state_dir);
        let tmp = file.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(self).expect("the record serialises");
        std::fs::write(&tmp, body)
            .and_then(|_| std::fs::rename(&tmp, &file))
            .map_err(|e| Error::State {
                file,
                detail: e.to_string(),
            })
    }

    pub fn router_ns(&self) -> String {
        format!("{}-router", self.prefix)
    }

    pub fn datastore(&self) -> String {
        format!("dir:{}", self.state_dir.join("datastore").display())
    }

    /// Removes what the record names: processes, namespaces (which takes their veths), the
    /// state dir. Safe to run twice and on a half-built lab.
    pub fn teardown(&self) {
        for p in &self.processes {
            sys::kill_if(p.pid, &p.program);
        }
        for ns in self.namespaces.iter().rev() {
            sys::netns_del(ns);
        }
        // Anything with our prefix that a crash left unrecorded (created, not yet saved).
        if let Ok(rd) = std::fs::read_dir("/run/netns") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("{}-", self.prefix)) {
                    sys::netns_del(&name);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// A lab being built or run. Armed, it tears everything down on drop (a failed `up`, a test,
/// the demo); [`Cluster::keep`] disarms it so `up` can leave the lab running.
pub struct Cluster {
    pub rec: Record,
    armed: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.armed {
            self.rec.teardown();
        }
    }
}

impl Cluster {
    /// Starts an empty lab in `state_dir`: refuses when one is already recorded there.
    pub fn create(state_dir: &Path, bins: Bins, mode: Mode) -> Result<Cluster, Error> {
        if Record::file(state_dir).exists() {
            return Err(Error::AlreadyUp {
                dir: state_dir.to_path_buf(),
            });
        }
        std::fs::create_dir_all(state_dir).map_err(|e| Error::State {
            file: state_dir.to_path_buf(),
            detail: e.to_string(),
        })?;
        let state_dir = std::fs::canonicalize(state_dir).unwrap_or(state_dir.to_path_buf());
        let c = Cluster {
            rec: Record {
                prefix: format!("tl{:x}", std::process::id()),
                state_dir,
                bins,
                mode,
                namespaces: Vec::new(),
                processes: Vec::new(),
                nodes: Vec::new(),
                pods: Vec::new(),
            },
            armed: true,
        };
        c.rec.save()?;
        Ok(c)
    }

    /// The lab recorded in `state_dir`, not armed (a later command acting on a running lab).
    pub fn open(state_dir: &Path) -> Result<Cluster, Error> {
        match Record::load(state_dir)? {
            Some(rec) => Ok(Cluster { rec, armed: false }),
            None => Err(Error::NotUp {
                dir: state_dir.to_path_buf(),
            }),
        }
    }

    /// Leave everything running (after a successful `up`).
    pub fn keep(mut self) {
        self.armed = false;
    }

    pub fn arm(&mut self) {
        self.armed = true;
    }

    fn add_netns(&mut self, name: String) -> Result<String, Error> {
        // Recorded before it exists, so a crash in between still finds it.
        self.rec.namespaces.push(name.clone());
        self.rec.save()?;
        ip(&["netns", "add", &name])?;
        ip_in(&name, &["link", "set", "lo", "up"])?;
        Ok(name)
    }

    fn record_process(&mut self, pid: u32, program: &str, role: &str) -> Result<(), Error> {
        self.rec.processes.push(Process {
            pid,
            program: program.to_string(),
            role: role.to_string(),
        });
        self.rec.save()
    }

    /// The router namespace: one bridge per segment, forwarding on.
    pub fn build_router(&mut self) -> Result<(), Error> {
        let r = self.add_netns(self.rec.router_ns())?;
        for seg in [Segment::A, Segment::B] {
            ip_in(&r, &["link", "add", seg.bridge(), "type", "bridge"])?;
            let addr = format!("{}/24", seg.gateway());
            ip_in(&r, &["addr", "add", &addr, "dev", seg.bridge()])?;
            ip_in(&r, &["link", "set", seg.bridge(), "up"])?;
        }
        run(in_ns(&r, "sysctl").args(["-qw", "net.ipv4.ip_forward=1"]))?;
        Ok(())
    }

    /// Node `i` (0-based) of `n`: the first half on segment a, the rest on segment b.
    pub fn add_node(&mut self, total: usize) -> Result<usize, Error> {
        let i = self.rec.nodes.len();
        let name = format!("node{}", i + 1);
        let segment = if i < total.div_ceil(2) {
            Segment::A
        } else {
            Segment::B
        };
        let addr: Ipv4Addr = format!("{}.{}", segment.subnet(), 11 + i).parse().unwrap();
        let ns = self.add_netns(format!("{}-{name}", self.rec.prefix))?;
        let r = self.rec.router_ns();
        let port = format!("n{}", i + 1);
        ip(&[
            "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port, "netns", &r,
        ])?;
        ip_in(
            &r,
            &["link", "set", &port, "master", segment.bridge(), "up"],
        )?;
        ip_in(&ns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ip_in(&ns, &["link", "set", "eth0", "up"])?;
        // A default route: the kernel answers proxy ARP for 169.254.1.1 only with a route for
        // it out of another interface.
        let gw = segment.gateway().to_string();
        ip_in(&ns, &["route", "add", "default", "via", &gw])?;
        let dir = self.rec.state_dir.join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::State {
            file: dir.clone(),
            detail: e.to_string(),
        })?;
        self.rec.nodes.push(Node {
            name,
            ns,
            addr,
            segment,
            dir,
        });
        self.rec.save()?;
        Ok(i)
    }

    /// `tabbyctl ARGS` against the lab's datastore.
    pub fn tabbyctl(&self, args: &[&str]) -> Result<String, Error> {
        run(Command::new(self.rec.bins.path("tabbyctl"))
            .arg("--datastore")
            .arg(self.rec.datastore())
            .args(args))
    }

    /// `tabbyctl apply -f -` with `yaml` on stdin.
    pub fn apply(&self, yaml: &str) -> Result<(), Error> {
        let mut child = Command::new(self.rec.bins.path("tabbyctl"))
            .arg("--datastore")
            .arg(self.rec.datastore())
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Command {
                what: "tabbyctl apply".into(),
                detail: e.to_string(),
            })?;
        let _ = child.stdin.take().unwrap().write_all(yaml.as_bytes());
        let out = child.wait_with_output().map_err(|e| Error::Command {
            what: "tabbyctl apply".into(),
            detail: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(Error::Command {
                what: format!("tabbyctl apply of\n{yaml}"),
                detail: sys::text(&out.stderr),
            });
        }
        Ok(())
    }

    /// The router as every node's top-of-rack BGP peer (a BGPPeer per node, Calico's
    /// "AS per rack" shape with one AS), so that unencapsulated pod traffic can cross the
    /// router: it learns each node's blocks and routes them.
    pub fn peer_with_router(&self, i: usize) -> Result<(), Error> {
        let n = &self.rec.nodes[i];
        self.apply(&format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor-{}\n\
             spec:\n  node: {}\n  peerIP: {}\n  asNumber: {ASN}\n",
            n.name,
            n.name,
            n.segment.gateway()
        ))
    }

    /// (Re)writes the router's BIRD config for the current nodes and starts or reconfigures BIRD.
    pub fn run_router_bgp(&mut self) -> Result<(), Error> {
        let dir = self.rec.state_dir.join("router");
        let _ = std::fs::create_dir_all(&dir);
        let conf = dir.join("bird.conf");
        let sock = dir.join("bird.ctl");
        let mut s = format!(
            "# tabby-lab: the router between the segments, a ToR that learns pod blocks.\n\
             router id {};\n\
             protocol device {{ }}\n\
             protocol kernel {{ ipv4 {{ import none; export all; }}; }}\n\
             template bgp node {{\n  local as {ASN};\n  direct;\n  \
             ipv4 {{ import all; export none; gateway direct; }};\n}}\n",
            Segment::A.gateway()
        );
        for n in &self.rec.nodes {
            s += &format!(
                "protocol bgp {} from node {{ neighbor {} as {ASN}; }}\n",
                n.name, n.addr
            );
        }
        std::fs::write(&conf, s).map_err(|e| Error::State {
            file: conf.clone(),
            detail: e.to_string(),
        })?;
        if self.rec.processes.iter().any(|p| p.role == "router") {
            run(Command::new("birdc").arg("-s").arg(&sock).arg("configure"))?;
            return Ok(());
        }
        let log = std::fs::File::create(dir.join("bird.log")).map_err(|e| Error::State {
            file: dir.join("bird.log"),
            detail: e.to_string(),
        })?;
        let child = sys::spawn_detached(
            in_ns(&self.rec.router_ns(), "bird")
                .arg("-f")
                .arg("-c")
                .arg(&conf)
                .arg("-s")
                .arg(&sock)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )?;
        self.record_process(child.id(), "bird", "router")
    }

    /// Node `i` runs BIRD 2 with `config` instead of tabby-node's speaker (a mixed cluster).
    /// Without tabby-node the node needs what tabby-node would do first: its Node resource
    /// (BGP address), its node-name file for the CNI plugin, forwarding on.
    pub fn prepare_bird_node(&mut self, i: usize) -> Result<(), Error> {
        let n = self.rec.nodes[i].clone();
        self.apply(&format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {}\n\
             spec:\n  bgp:\n    ipv4Address: {}/24\n",
            n.name, n.addr
        ))?;
        std::fs::write(n.dir.join("nodename"), &n.name).map_err(|e| Error::State {
            file: n.dir.join("nodename"),
            detail: e.to_string(),
        })?;
        run(in_ns(&n.ns, "sysctl").args(["-qw", "net.ipv4.ip_forward=1"]))?;
        Ok(())
    }

    /// Starts BIRD on node `i` with `config` (recorded, so teardown stops it).
    pub fn run_bird_on_node(&mut self, i: usize, config: &str) -> Result<(), Error> {
        let n = self.rec.nodes[i].clone();
        let conf = n.dir.join("bird.conf");
        let log = n.dir.join("bird.log");
        let io = |e: std::io::Error, f: &Path| Error::State {
            file: f.to_path_buf(),
            detail: e.to_string(),
        };
        std::fs::write(&conf, config).map_err(|e| io(e, &conf))?;
        let out = std::fs::File::create(&log).map_err(|e| io(e, &log))?;
        let child = sys::spawn_detached(
            in_ns(&n.ns, "bird")
                .arg("-f")
                .arg("-c")
                .arg(&conf)
                .arg("-s")
                .arg(n.dir.join("bird.ctl"))
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        )?;
        self.record_process(child.id(), "bird", &n.name)
    }

    /// What felix does for a local pod's host veth (Calico: proxy ARP for 169.254.1.1,
    /// forwarding, no proxy delay), for a node whose felix does not run.
    pub fn host_veth_sysctls(&self, pod: usize) -> Result<(), Error> {
        let p = &self.rec.pods[pod];
        let ns = &self.rec.nodes[p.node].ns;
        let veth = self.route_dev(p.node, p.ip).unwrap_or_default();
        for kv in [
            format!("net.ipv4.conf.{veth}.proxy_arp=1"),
            format!("net.ipv4.conf.{veth}.forwarding=1"),
            format!("net.ipv4.neigh.{veth}.proxy_delay=0"),
        ] {
            run(in_ns(ns, "sysctl").args(["-qw", &kv]))?;
        }
        Ok(())
    }

    /// Starts node `i`'s tabby-node (appending to its log).
    pub fn start_node(&mut self, i: usize) -> Result<(), Error> {
        let n = self.rec.nodes[i].clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.log())
            .map_err(|e| Error::State {
                file: n.log(),
                detail: e.to_string(),
            })?;
        let (ipip, vxlan) = self.rec.mode.pool_modes();
        let child = sys::spawn_detached(
            in_ns(&n.ns, self.rec.bins.path("tabby-node"))
                .args(["--node-name", &n.name, "--datastore", &self.rec.datastore()])
                .arg("--state-dir")
                .arg(&n.dir)
                .arg("--control-socket")
                .arg(n.socket())
                .args(["--ip-autodetection-method", "interface=eth0"])
                .env("CALICO_IPV4POOL_CIDR", POOL_CIDR)
                .env("CALICO_IPV4POOL_IPIP", ipip)
                .env("CALICO_IPV4POOL_VXLAN", vxlan)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )?;
        self.record_process(child.id(), "tabby-node", &n.name)
    }

    /// SIGKILL node `i`'s tabby-node (a crash; kernel state stays).
    pub fn kill_node(&mut self, i: usize) {
        let name = self.rec.nodes[i].name.clone();
        let procs = std::mem::take(&mut self.rec.processes);
        for p in procs {
            if p.role == name && p.program == "tabby-node" {
                sys::kill_if(p.pid, &p.program);
            } else {
                self.rec.processes.push(p);
            }
        }
        let _ = self.rec.save();
    }

    /// `tabbyctl node status` for node `i`, as an operator runs it.
    pub fn bgp_status(&self, i: usize) -> String {
        let out = sys::output(
            Command::new(self.rec.bins.path("tabbyctl"))
                .args(["node", "status", "--socket"])
                .arg(self.rec.nodes[i].socket()),
        );
        sys::text(&out.stdout) + &sys::text(&out.stderr)
    }

    /// Node `i`'s BGP peers from `tabbyctl node status`: (address, Established?).
    pub fn bgp_peers(&self, i: usize) -> Vec<(std::net::IpAddr, bool)> {
        self.bgp_status(i)
            .lines()
            .filter_map(|l| {
                let addr = l
                    .strip_prefix("| ")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some((addr, l.contains("Established")))
            })
            .collect()
    }

    /// True when every BGP session of node `i` is Established (and it has some).
    pub fn bgp_established(&self, i: usize) -> bool {
        let peers = self.bgp_peers(i);
        !peers.is_empty() && peers.iter().all(|p| p.1)
    }

    /// Waits until every node's BGP sessions are Established; the time it took.
    pub fn wait_bgp(&self, timeout: Duration) -> Result<Duration, Error> {
        sys::wait_for("every BGP session to be Established", timeout, || {
            (0..self.rec.nodes.len()).all(|i| self.bgp_established(i))
        })
    }

    /// The pod blocks node `i` holds (its blackhole routes).
    pub fn blocks_of(&self, i: usize) -> Vec<String> {
        ip_in(
            &self.rec.nodes[i].ns,
            &["route", "show", "proto", "80", "type", "blackhole"],
        )
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
    }

    /// Node `i`'s tabby routes, one per line.
    pub fn routes(&self, i: usize) -> String {
        ip_in(&self.rec.nodes[i].ns, &["route", "show", "proto", "80"]).unwrap_or_default()
    }

    /// The last node leaves as a machine does when it is switched off: its agent and pods
    /// die where they stand (no CNI DEL); Kubernetes deletes its pods (here: their
    /// WorkloadEndpoints, named as Calico names them), the operator its Node and its router
    /// peering. Its IPAM blocks stay until `tabbyctl ipam check` / `release` frees them.
    pub fn remove_last_node(&mut self) -> Result<(Node, Vec<Pod>), Error> {
        let i = self.rec.nodes.len() - 1;
        self.kill_node(i);
        let node = self.rec.nodes.pop().expect("a node to remove");
        let (gone, kept): (Vec<Pod>, Vec<Pod>) = std::mem::take(&mut self.rec.pods)
            .into_iter()
            .partition(|p| p.node == i);
        self.rec.pods = kept;
        for ns in gone.iter().map(|p| &p.ns).chain([&node.ns]) {
            sys::netns_del(ns);
            self.rec.namespaces.retain(|n| n != ns);
        }
        self.rec.save()?;
        for p in &gone {
            let wep = format!(
                "{}-k8s-{}-eth0",
                node.name.replace('-', "--"),
                p.name.replace('-', "--")
            );
            self.tabbyctl(&["delete", "workloadendpoint", &wep, "-n", "default"])?;
        }
        self.tabbyctl(&["delete", "node", &node.name])?;
        self.tabbyctl(&["delete", "bgppeer", &format!("tor-{}", node.name)])?;
        self.run_router_bgp()?;
        Ok((node, gone))
    }

    /// Waits until node `i` has written its node-name file (the CNI plugin reads it).
    pub fn wait_node_started(&self, i: usize) -> Result<(), Error> {
        let n = &self.rec.nodes[i];
        sys::wait_for(
            &format!("{} to start (see {})", n.name, n.log().display()),
            Duration::from_secs(30),
            || n.dir.join("nodename").exists(),
        )
        .map(|_| ())
    }

    /// A pod on node `i`, made by `tabby ADD` exactly as a container runtime runs it: the CNI
    /// environment variables and the network config as JSON on stdin, inside the node's
    /// namespace.
    pub fn add_pod(&mut self, i: usize) -> Result<usize, Error> {
        let node = self.rec.nodes[i].clone();
        let k = self.rec.pods.iter().filter(|p| p.node == i).count() + 1;
        let name = format!("pod-{}-{k}", node.name);
        let ns = self.add_netns(format!("{}-{name}", self.rec.prefix))?;
        let cid = format!("{}-{name}", self.rec.prefix);
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "tabby",
            "ipam": {"type": "tabby-ipam"},
            "mtu": 0,
            "datastore": self.rec.datastore(),
            "state_dir": node.dir,
        });
        let mut child = in_ns(&node.ns, self.rec.bins.path("tabby"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", &cid)
            .env("CNI_NETNS", format!("/run/netns/{ns}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.rec.bins.dir)
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};\
                     K8S_POD_INFRA_CONTAINER_ID={cid}"
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Command {
                what: "tabby ADD".into(),
                detail: e.to_string(),
            })?;
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes());
        let out = child.wait_with_output().map_err(|e| Error::Command {
            what: "tabby ADD".into(),
            detail: e.to_string(),
        })?;
        let stdout = sys::text(&out.stdout);
        if !out.status.success() {
            return Err(Error::Command {
                what: format!("CNI ADD of {name} on {}", node.name),
                detail: format!("{stdout}{}", sys::text(&out.stderr)),
            });
        }
        let ip = serde_json::from_str::<serde_json::Value>(&stdout)
            .ok()
            .and_then(|v| {
                v["ips"].as_array()?.iter().find_map(|a| {
                    a["address"]
                        .as_str()?
                        .split('/')
                        .next()?
                        .parse::<Ipv4Addr>()
                        .ok()
                })
            })
            .ok_or_else(|| Error::Command {
                what: format!("CNI ADD of {name}"),
                detail: format!("no IPv4 address in the result: {stdout}"),
            })?;
        self.rec.pods.push(Pod {
            name,
            ns,
            node: i,
            ip,
            container_id: cid,
        });
        self.rec.save()?;
        Ok(self.rec.pods.len() - 1)
    }

    /// Pings every pod from every other pod, all at once; the pairs that failed.
    pub fn ping_all(&self) -> Vec<(usize, usize)> {
        let pairs: Vec<(usize, usize)> = (0..self.rec.pods.len())
            .flat_map(|a| (0..self.rec.pods.len()).map(move |b| (a, b)))
            .filter(|(a, b)| a != b)
            .collect();
        self.ping_pairs(&pairs)
    }

    /// Pings each (from, to) pod pair concurrently; the pairs that failed.
    pub fn ping_pairs(&self, pairs: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let children: Vec<_> = pairs
            .iter()
            .map(|&(a, b)| {
                let child = in_ns(&self.rec.pods[a].ns, "ping")
                    .args(["-c1", "-W1", &self.rec.pods[b].ip.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn();
                ((a, b), child)
            })
            .collect();
        children
            .into_iter()
            .filter_map(|(pair, child)| {
                let ok = child
                    .ok()
                    .and_then(|mut c| c.wait().ok())
                    .is_some_and(|s| s.success());
                (!ok).then_some(pair)
            })
            .collect()
    }

    /// `ip route get POD_IP` on node `i`: the device the kernel would send it out of.
    pub fn route_dev(&self, i: usize, to: Ipv4Addr) -> Option<String> {
        let out = ip_in(&self.rec.nodes[i].ns, &["route", "get", &to.to_string()]).ok()?;
        word_after(&out, "dev")
    }

    /// True when every node routes every remote pod through the device `mode` calls for.
    pub fn routes_match(&self, mode: Mode) -> bool {
        self.rec.nodes.iter().enumerate().all(|(i, n)| {
            self.rec.pods.iter().filter(|p| p.node != i).all(|p| {
                let same = self.rec.nodes[p.node].segment == n.segment;
                self.route_dev(i, p.ip).as_deref() == Some(mode.device(same))
            })
        })
    }

    /// Waits until the routes are `mode`'s and all pairs ping; the time it took.
    pub fn wait_converged(&self, mode: Mode, timeout: Duration) -> Result<Duration, Error> {
        let mut last_failed = Vec::new();
        let r = sys::wait_for(
            &format!("all pods to reach each other ({})", mode.label()),
            timeout,
            || {
                if !self.routes_match(mode) {
                    return false;
                }
                last_failed = self.ping_all();
                last_failed.is_empty()
            },
        );
        r.map_err(|e| match e {
            Error::Timeout { what, after } if !last_failed.is_empty() => Error::Timeout {
                what: format!("{what}; still failing: {}", self.pairs_text(&last_failed)),
                after,
            },
            e => e,
        })
    }

    pub fn pairs_text(&self, pairs: &[(usize, usize)]) -> String {
        pairs
            .iter()
            .map(|&(a, b)| format!("{} → {}", self.rec.pods[a].name, self.rec.pods[b].name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Switches the pool with `tabbyctl patch`, as an operator would.
    pub fn patch_mode(&mut self, mode: Mode) -> Result<(), Error> {
        let (ipip, vxlan) = mode.pool_modes();
        let patch = format!(r#"{{"spec":{{"ipipMode":"{ipip}","vxlanMode":"{vxlan}"}}}}"#);
        self.tabbyctl(&["patch", "ippool", POOL_NAME, "-p", &patch])?;
        self.rec.mode = mode;
        self.rec.save()
    }

    /// Tail of every node's log, for failures.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        for n in &self.rec.nodes {
            let log = std::fs::read_to_string(n.log()).unwrap_or_default();
            let all: Vec<&str> = log.lines().collect();
            s += &format!("--- {} ({}):\n", n.name, n.log().display());
            for l in &all[all.len().saturating_sub(lines)..] {
                s += l;
                s.push('\n');
            }
        }
        s
    }
}

/// The word after `key` in `ip` output (`dev eth0` → `eth0`).
pub fn word_after(s: &str, key: &str) -> Option<String> {
    let mut it = s.split_whitespace();
    while let Some(w) = it.next() {
        if w == key {
            return it.next().map(str::to_string);
        }
    }
    None
}
