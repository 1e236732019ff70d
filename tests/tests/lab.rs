//! End to end through `tabby-lab` and its harness: the demo, IPIP without the module, a node
//! joining and leaving, a node agent killed and restarted.
//!
//! Needs root, iproute2, iputils-ping, nftables and BIRD 2 (the lab's router). Each test uses
//! its own state dir and namespace prefix (`tl` + the lab process's pid), and removes what it
//! built when it ends, also when it fails: `tabby-lab down` from a Drop guard, or the
//! harness's own armed [`Cluster`].

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tests::cluster::{Bins, Cluster, Mode};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn state_dir(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "tabby-lab-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// tabby-node, tabby, tabby-ipam and tabbyctl live in other packages, whose binaries cargo
/// does not build for this package's tests: build them once, into `target/lab-e2e` (a target
/// dir of their own, so that other packages' running tests never see their binaries relinked).
fn bin_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = Path::new(env!("CARGO_BIN_EXE_tabby-lab"))
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("lab-e2e");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "node",
                "-p",
                "cni-plugin",
                "-p",
                "ctl",
                "--bins",
            ])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building the tabby binaries");
        target.join("debug")
    })
}

fn lab(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tabby-lab"))
        .arg("--state-dir")
        .arg(state)
        .arg("--bin-dir")
        .arg(bin_dir())
        .args(args)
        .output()
        .expect("running tabby-lab")
}

/// `tabby-lab down` on drop: whatever happened, the namespaces and processes go.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = lab(&self.0, &["down"]);
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn demo_passes_end_to_end() {
    let dir = state_dir("demo");
    let _down = Down(dir.clone());
    let out = lab(&dir, &["demo"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    eprintln!("{t}");
    // 3 pods, 6 pairs: after up and after each of the three switches.
    assert_eq!(t.matches("all 6 pod pairs ping").count(), 4, "{t}");
    assert_eq!(t.matches("; convergence time ").count(), 3, "{t}");
    for mode in ["VXLAN Always", "VXLAN CrossSubnet", "no encapsulation"] {
        assert!(t.contains(&format!("→ {mode}")), "{mode}: {t}");
    }
    assert!(t.contains("ENCAPSULATED in VXLAN"), "{t}");
    assert!(t.contains("NOT encapsulated"), "{t}");
    assert!(t.contains("Established"), "{t}");
    assert!(!dir.exists(), "demo leaves its state dir behind");
}

#[test]
fn ipip_without_the_module_says_so_and_builds_nothing() {
    if Path::new("/sys/module/ipip").exists() {
        eprintln!("skipped: this kernel has the ipip module");
        return;
    }
    let dir = state_dir("ipip");
    let _down = Down(dir.clone());
    let out = lab(&dir, &["up", "--mode", "ipip"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("IPIP needs the kernel's ipip module"), "{t}");
    assert!(!dir.exists(), "nothing should be built: {t}");
}

#[test]
fn down_after_a_crash_removes_everything() {
    let dir = state_dir("crash");
    let _down = Down(dir.clone());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tabby-lab"))
        .arg("--state-dir")
        .arg(&dir)
        .arg("--bin-dir")
        .arg(bin_dir())
        .args(["up", "--nodes", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it mid-build, once the nodes' agents run.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60)
        && !std::fs::read_to_string(dir.join("lab.json")).is_ok_and(|s| s.contains("tabby-node"))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let rec = std::fs::read_to_string(dir.join("lab.json")).expect("the record survives");
    let rec: serde_json::Value = serde_json::from_str(&rec).unwrap();
    let prefix = rec["prefix"].as_str().unwrap().to_string();
    let out = lab(&dir, &["down"]);
    assert!(out.status.success(), "{}", text(&out));
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{prefix}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    for p in rec["processes"].as_array().unwrap() {
        let pid = p["pid"].as_u64().unwrap();
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!cmd.contains("tabby-node"), "tabby-node {pid} still runs");
    }
    assert!(!dir.exists());
}

/// Ctrl-C during `up`: tabby-lab removes what it built before it exits.
#[test]
fn ctrl_c_during_up_cleans_up() {
    let dir = state_dir("sigint");
    let _down = Down(dir.clone());
    let child = Command::new(env!("CARGO_BIN_EXE_tabby-lab"))
        .arg("--state-dir")
        .arg(&dir)
        .arg("--bin-dir")
        .arg(bin_dir())
        .args(["up", "--nodes", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60)
        && !std::fs::read_to_string(dir.join("lab.json")).is_ok_and(|s| s.contains("tabby-node"))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let rec = std::fs::read_to_string(dir.join("lab.json")).expect("lab.json");
    let rec: serde_json::Value = serde_json::from_str(&rec).unwrap();
    let prefix = rec["prefix"].as_str().unwrap().to_string();
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("interrupted"), "{t}");
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{prefix}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(!dir.exists(), "state dir left");
}

/// A 3-node lab from the harness itself, torn down when the returned Cluster drops.
fn harness_lab(what: &str, mode: Mode) -> Cluster {
    harness_lab_n(what, mode, 3)
}

fn harness_lab_n(what: &str, mode: Mode, nodes: usize) -> Cluster {
    let bins = Bins::locate(Some(bin_dir().to_path_buf())).unwrap();
    let mut c = Cluster::create(&state_dir(what), bins, mode).unwrap();
    if let Err(e) = tests::lab::build(&mut c, nodes, 1) {
        panic!("building the lab: {e}\n{}", c.logs_tail(30));
    }
    c
}

/// kill -9 one tabby-node: the other nodes keep its routes (graceful restart; its kernel
/// state stays), so its pods stay reachable throughout; restarted, it converges again.
#[test]
fn kill_9_and_restart_keeps_pods_reachable() {
    let mut c = harness_lab("kill9", Mode::None);
    let victim = 0;
    let pairs: Vec<(usize, usize)> = (0..c.rec.pods.len())
        .filter(|&p| c.rec.pods[p].node != victim)
        .flat_map(|a| {
            let to: Vec<usize> = (0..c.rec.pods.len())
                .filter(|&p| c.rec.pods[p].node == victim)
                .collect();
            to.into_iter().flat_map(move |b| [(a, b), (b, a)])
        })
        .collect();
    c.kill_node(victim);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let failed = c.ping_pairs(&pairs);
        assert!(
            failed.is_empty(),
            "with node1's agent down: {}\n{}",
            c.pairs_text(&failed),
            c.logs_tail(20)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    c.start_node(victim).unwrap();
    let start = Instant::now();
    // Through the restart, too.
    while start.elapsed() < Duration::from_secs(8) {
        let failed = c.ping_pairs(&pairs);
        assert!(
            failed.is_empty(),
            "while node1 restarts: {}\n{}",
            c.pairs_text(&failed),
            c.logs_tail(20)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let st = Command::new(c.rec.bins.path("tabbyctl"))
        .args(["node", "status", "--socket"])
        .arg(c.rec.nodes[victim].socket())
        .output()
        .unwrap();
    let mut ok = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline && !ok {
        let out = Command::new(c.rec.bins.path("tabbyctl"))
            .args(["node", "status", "--socket"])
            .arg(c.rec.nodes[victim].socket())
            .output()
            .unwrap();
        last = text(&out);
        ok = last.matches("Established").count() >= 3;
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(ok, "restarted node1's sessions: {last}\n{}", text(&st));
    c.wait_converged(Mode::None, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs_tail(20)));
}

/// A 4th node joins and every pod reaches its pod (and it reaches every pod); then it leaves
/// (switched off, its Node deleted): its blocks' routes disappear from every node, and
/// `tabbyctl ipam check` then `ipam release --from-report` frees its blocks.
#[test]
fn node_join_then_leave() {
    let mut c = harness_lab("join", Mode::None);
    let (i, _, t) = tests::lab::join_node(&mut c)
        .unwrap_or_else(|e| panic!("node4 joining: {e}\n{}", c.logs_tail(30)));
    eprintln!("node4 joined; all pairs ping after {t:?}");
    assert_eq!(c.rec.nodes.len(), 4);
    assert_eq!(c.rec.pods.len(), 4);
    let blocks = c.blocks_of(i);
    assert!(!blocks.is_empty(), "node4 holds no block");
    for n in 0..3 {
        for b in &blocks {
            assert!(c.routes(n).contains(b.as_str()), "node{} lacks {b}", n + 1);
        }
    }

    let (gone, pods) = c.remove_last_node().unwrap();
    // Its pods' addresses: `ipam check` finds leaks by handle, and the pods' handles remain
    // (no CNI DEL ran), so release them by address, as Calico's docs have operators do for
    // pods that no longer exist.
    for p in &pods {
        c.tabbyctl(&["ipam", "release", "--ip", &p.ip.to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let report = c.rec.state_dir.join("ipam-report.json");
    let check = Command::new(c.rec.bins.path("tabbyctl"))
        .arg("--datastore")
        .arg(c.rec.datastore())
        .args(["ipam", "check", "-o"])
        .arg(&report)
        .output()
        .unwrap();
    let check_text = text(&check);
    assert!(report.exists(), "ipam check wrote no report: {check_text}");
    assert!(
        check_text.contains(&gone.name) || blocks.iter().any(|b| check_text.contains(b.as_str())),
        "ipam check should report {}'s blocks: {check_text}",
        gone.name
    );
    let release = c
        .tabbyctl(&["ipam", "release", "--from-report", report.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{check_text}\n{release}");
    tests::sys::wait_for(
        "node4's block routes to disappear everywhere",
        Duration::from_secs(30),
        || (0..3).all(|n| blocks.iter().all(|b| !c.routes(n).contains(b.as_str()))),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            (0..3).map(|n| c.routes(n)).collect::<Vec<_>>().join("\n")
        )
    });
    let show = c.tabbyctl(&["ipam", "show", "--show-blocks"]).unwrap();
    for b in &blocks {
        assert!(!show.contains(b.as_str()), "{b} still allocated:\n{show}");
    }
    let again = c.tabbyctl(&["ipam", "check"]).unwrap();
    assert!(!again.contains(&gone.name), "{again}");
    c.wait_converged(Mode::None, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("the remaining pods: {e}"));
}

/// Two route reflectors (node1 on segment a, node3 on segment b, one cluster ID) and the
/// node-to-node mesh off, configured as in Calico's docs: a label and
/// `routeReflectorClusterID` on the reflectors' Nodes, a BGPConfiguration, one BGPPeer
/// `all()` → `route-reflector == 'true'`. Clients then peer only with the reflectors, learn
/// each other's blocks through them, and all pods reach each other.
#[test]
fn two_route_reflectors_with_the_mesh_off() {
    let c = harness_lab_n("rr", Mode::None, 4);
    let rr_patch = r#"{"metadata":{"labels":{"route-reflector":"true"}},"spec":{"bgp":{"routeReflectorClusterID":"244.0.0.1"}}}"#;
    for rr in ["node1", "node3"] {
        c.tabbyctl(&["patch", "node", rr, "-p", rr_patch])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    c.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: peer-with-rrs\n\
         spec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n",
    )
    .unwrap();
    c.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
         spec:\n  nodeToNodeMeshEnabled: false\n  asNumber: 64512\n",
    )
    .unwrap();
    let addr = |i: usize| std::net::IpAddr::V4(c.rec.nodes[i].addr);
    let gw = |i: usize| std::net::IpAddr::V4(c.rec.nodes[i].segment.gateway());
    // Who peers with whom: reflectors with everyone, clients with the reflectors (and each
    // node with its router).
    let expect = |i: usize| -> Vec<std::net::IpAddr> {
        let mut v: Vec<_> = match i {
            0 | 2 => (0..4).filter(|&j| j != i).map(addr).collect(),
            _ => vec![addr(0), addr(2)],
        };
        v.push(gw(i));
        v.sort();
        v
    };
    let mut last = String::new();
    tests::sys::wait_for(
        "the route reflector topology",
        Duration::from_secs(90),
        || {
            (0..4).all(|i| {
                let peers = c.bgp_peers(i);
                let mut got: Vec<_> = peers.iter().map(|p| p.0).collect();
                got.sort();
                let ok = got == expect(i) && peers.iter().all(|p| p.1);
                if !ok {
                    last = format!("node{}: {}", i + 1, c.bgp_status(i));
                }
                ok
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{last}\n{}", c.logs_tail(20)));
    // node2 (a client) learns node4's block (another client's) through a reflector.
    let block4 = c.blocks_of(3).remove(0);
    let routes_of = |i: usize| {
        let out = Command::new(c.rec.bins.path("tabbyctl"))
            .args(["node", "routes", "--socket"])
            .arg(c.rec.nodes[i].socket())
            .output()
            .unwrap();
        text(&out)
    };
    tests::sys::wait_for(
        "node2 to learn node4's block",
        Duration::from_secs(30),
        || routes_of(1).contains(&block4),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", routes_of(1)));
    c.wait_converged(Mode::None, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs_tail(20)));
}
