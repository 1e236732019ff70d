//! Convergence and memory in a namespace cluster (issue 6, "Benchmark").
//!
//! `cargo bench -p tests --bench convergence`, as root (BIRD 2, iproute2 as for the lab).
//! Builds a `TABBY_BENCH_NODES`-node (20) lab with the release binaries, no pods, then:
//!
//! - (a) full mesh, (b) mesh off with two route reflectors (node1, and the first node of
//!   segment b; one cluster ID): `TABBY_BENCH_TRIALS` (10) trials each. A trial is the CNI ADD
//!   of the first pod on a node that holds no block yet, so its IPAM claims a new block. One
//!   `ip -n NODE monitor route` per node, started before the ADD, timestamps the moment each
//!   node's kernel gets the block's proto-80 route (the origin: its blackhole route).
//!   Convergence = the last other node's route, measured from the ADD's start (the claim is
//!   inside the ADD, so this is an upper bound), and from the origin's blackhole route. The
//!   kernel routes to remote blocks come from the datastore's block affinities (felix's
//!   calculation), so the BGP side is timed too: from the ADD's start until every other
//!   node's RIB (`tabbyctl node routes`, polled every 10 ms once the ADD returned) has it.
//! - RSS: pods up to `TABBY_BENCH_PODS` (1,000) round-robin over the nodes (CNI ADDs), then
//!   VmRSS / VmHWM of every tabby-node from /proc/PID/status.
//!
//! The armed `Cluster` removes every namespace, process and the state dir when it drops, on
//! success, on error and on Ctrl-C (the wait loops see the flag).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tests::Error;
use tests::cluster::{Bins, Cluster, Mode};

const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);
const SETUP_TIMEOUT: Duration = Duration::from_secs(180);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("convergence: benchmark");
        return;
    }
    let unknown: Vec<&String> = args.iter().filter(|a| *a != "--bench").collect();
    if !unknown.is_empty() {
        println!("convergence: unknown arguments {unknown:?}; nothing run");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("convergence: skipped, it builds network namespaces and must run as root");
        return;
    }
    tests::sys::catch_interrupts();
    if let Err(e) = run() {
        eprintln!("convergence: {e}");
        std::process::exit(1);
    }
}

/// The release binaries next to this bench's (target/release), built once if absent.
fn bins() -> Result<Bins, Error> {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/release"));
    if Bins::locate(Some(dir.clone())).is_err() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "node", "-p", "cni-plugin"])
            .args(["-p", "ctl", "--bins"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .map_err(|e| Error::Command {
                what: "cargo build --release".into(),
                detail: e.to_string(),
            })?;
        if !status.success() {
            return Err(Error::Command {
                what: "cargo build --release".into(),
                detail: status.to_string(),
            });
        }
    }
    Bins::locate(Some(dir))
}

struct Trial {
    node: String,
    block: String,
    add: Duration,
    from_add: Duration,
    from_claim: Option<Duration>,
    /// Until every other node's BGP RIB (`tabbyctl node routes`) holds the block.
    bgp: Option<Duration>,
}

struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// Nearest-rank percentiles.
fn stats(mut v: Vec<Duration>) -> Option<Stats> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Some(Stats {
        p50: rank(0.50),
        p99: rank(0.99),
        max: *v.last().unwrap(),
    })
}

/// `ip monitor route` in every node's namespace, killed on drop.
struct Monitors(Vec<Child>);

impl Drop for Monitors {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The pool's proto-80 destinations node `ns` has now.
fn proto80(ns: &str) -> HashSet<String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "route", "show", "proto", "80"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&out)
        .ok()
        .and_then(|v| {
            Some(
                v.as_array()?
                    .iter()
                    .filter_map(|r| Some(r["dst"].as_str()?.to_string()))
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// A new proto-80 pool route in an `ip monitor route` line: (destination, blackhole?).
fn new_route(line: &str, known: &HashSet<String>) -> Option<(String, bool)> {
    if line.starts_with("Deleted") || !line.contains("proto 80") {
        return None;
    }
    let mut words = line.split_whitespace();
    let first = words.next()?;
    let (dst, blackhole) = if first == "blackhole" {
        (words.next()?, true)
    } else {
        (first, false)
    };
    (dst.starts_with("198.18.") && dst.contains('/') && !known.contains(dst))
        .then(|| (dst.to_string(), blackhole))
}

/// CNI ADD of the first pod on `origin`; when each node's kernel got its new block's route.
fn trial(c: &mut Cluster, origin: usize) -> Result<Trial, Error> {
    let n = c.rec.nodes.len();
    let (tx, rx) = mpsc::channel::<(usize, Instant, String, bool)>();
    let mut mons = Monitors(Vec::new());
    for i in 0..n {
        let ns = c.rec.nodes[i].ns.clone();
        let known = proto80(&ns);
        let mut child = Command::new("ip")
            .args(["-n", &ns, "monitor", "route"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Command {
                what: "ip monitor route".into(),
                detail: e.to_string(),
            })?;
        let out = child.stdout.take().unwrap();
        mons.0.push(child);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some((dst, bh)) = new_route(&line, &known)
                    && (i != origin || bh)
                {
                    let _ = tx.send((i, Instant::now(), dst, bh));
                    break;
                }
            }
        });
    }
    drop(tx);
    // Let every monitor subscribe before the claim.
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    c.add_pod(origin)?;
    let add = t0.elapsed();
    // The BGP side: poll every other node's RIB (a /26, the default block size).
    let ip = u32::from(c.rec.pods.last().unwrap().ip) & !63;
    let rib_block = format!("{}/26", std::net::Ipv4Addr::from(ip));
    let pollers: Vec<_> = (0..n)
        .filter(|&i| i != origin)
        .map(|i| {
            let ctl = c.rec.bins.path("tabbyctl");
            let sock = c.rec.nodes[i].socket();
            let want = format!(" {rib_block} ");
            std::thread::spawn(move || {
                while t0.elapsed() < ROUTE_TIMEOUT {
                    let out = Command::new(&ctl)
                        .args(["node", "routes", "--socket"])
                        .arg(&sock)
                        .output();
                    if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&want)) {
                        return Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                None
            })
        })
        .collect();
    let mut seen: Vec<Option<(Instant, String)>> = vec![None; n];
    let deadline = t0 + ROUTE_TIMEOUT;
    while seen.iter().any(Option::is_none) {
        tests::sys::check_interrupt()?;
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok((i, at, dst, _)) => seen[i] = Some((at, dst)),
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => break,
        }
    }
    drop(mons);
    let rib: Vec<Option<Instant>> = pollers
        .into_iter()
        .map(|p| p.join().ok().flatten())
        .collect();
    let node = c.rec.nodes[origin].name.clone();
    let missing: Vec<&str> = (0..n)
        .filter(|&i| i != origin && seen[i].is_none())
        .map(|i| c.rec.nodes[i].name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Timeout {
            what: format!("{node}'s new block's route on {}", missing.join(", ")),
            after: ROUTE_TIMEOUT,
        });
    }
    let others = (0..n).filter(|&i| i != origin);
    let last = others
        .clone()
        .map(|i| seen[i].as_ref().unwrap().0)
        .max()
        .unwrap_or(t0);
    let block = seen[origin]
        .as_ref()
        .map(|s| s.1.clone())
        .or_else(|| {
            others
                .clone()
                .find_map(|i| Some(seen[i].as_ref()?.1.clone()))
        })
        .unwrap_or_default();
    // The route each monitor saw is the same block, and it is in every kernel now.
    for i in others {
        let s = &seen[i].as_ref().unwrap().1;
        if *s != block || !proto80(&c.rec.nodes[i].ns).contains(&block) {
            return Err(Error::Command {
                what: format!("{node}'s trial"),
                detail: format!("{} saw {s}, expected {block}", c.rec.nodes[i].name),
            });
        }
    }
    let bgp = (rib_block == block && rib.iter().all(Option::is_some)).then(|| {
        rib.iter()
            .flatten()
            .max()
            .unwrap()
            .saturating_duration_since(t0)
    });
    Ok(Trial {
        node,
        block,
        add,
        from_add: last.saturating_duration_since(t0),
        from_claim: seen[origin]
            .as_ref()
            .map(|s| last.saturating_duration_since(s.0)),
        bgp,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn trials(c: &mut Cluster, label: &str, origins: &[usize]) -> Result<Vec<Trial>, Error> {
    println!("### {label}: {} trials", origins.len());
    println!(
        "  {:<7} {:<17} {:>10} {:>16} {:>18} {:>14}",
        "node", "block", "CNI ADD", "from ADD start", "from its blackhole", "BGP RIBs"
    );
    let mut out = Vec::new();
    for &o in origins {
        let t = trial(c, o)?;
        println!(
            "  {:<7} {:<17} {:>10} {:>16} {:>18} {:>14}",
            t.node,
            t.block,
            ms(t.add),
            ms(t.from_add),
            t.from_claim.map(ms).unwrap_or_else(|| "-".into()),
            t.bgp.map(ms).unwrap_or_else(|| "-".into())
        );
        out.push(t);
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(out)
}

/// Mesh off, node `rrs` reflect (one cluster ID), every node peers with them; waits until each
/// client has exactly the reflectors (and its router) and every session is Established.
fn route_reflectors(c: &Cluster, rrs: &[usize]) -> Result<Duration, Error> {
    let t0 = Instant::now();
    let patch = r#"{"metadata":{"labels":{"route-reflector":"true"}},"spec":{"bgp":{"routeReflectorClusterID":"244.0.0.1"}}}"#;
    for &r in rrs {
        c.tabbyctl(&["patch", "node", &c.rec.nodes[r].name, "-p", patch])?;
    }
    c.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: peer-with-rrs\n\
         spec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n",
    )?;
    c.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
         spec:\n  nodeToNodeMeshEnabled: false\n  asNumber: 64512\n",
    )?;
    let n = c.rec.nodes.len();
    tests::sys::wait_for("the route reflector topology", SETUP_TIMEOUT, || {
        (0..n).all(|i| {
            let peers = c.bgp_peers(i);
            let want = if rrs.contains(&i) { n } else { rrs.len() + 1 };
            peers.len() == want && peers.iter().all(|p| p.1)
        })
    })?;
    Ok(t0.elapsed())
}

/// (pid, VmRSS kB, VmHWM kB) of every tabby-node.
fn memory(c: &Cluster) -> Vec<(String, u64, u64)> {
    let field = |s: &str, k: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    c.rec
        .processes
        .iter()
        .filter(|p| p.program == "tabby-node")
        .map(|p| {
            let s = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).unwrap_or_default();
            (p.role.clone(), field(&s, "VmRSS:"), field(&s, "VmHWM:"))
        })
        .collect()
}

fn run() -> Result<(), Error> {
    let nodes = env_usize("TABBY_BENCH_NODES", 20).max(3);
    let want_trials = env_usize("TABBY_BENCH_TRIALS", 10).max(1);
    let want_pods = env_usize("TABBY_BENCH_PODS", 1000);
    let bins = bins()?;
    let state = std::env::temp_dir().join(format!("tabby-bench-{}", std::process::id()));
    let mut c = Cluster::create(&state, bins, Mode::None)?;
    let r = bench(&mut c, nodes, want_trials, want_pods);
    if let Err(e) = &r
        && !matches!(e, Error::Interrupted)
    {
        eprintln!("{}", c.logs_tail(15));
    }
    drop(c);
    println!(
        "removed the lab's namespaces, processes and {}",
        state.display()
    );
    r
}

fn bench(c: &mut Cluster, nodes: usize, want_trials: usize, want_pods: usize) -> Result<(), Error> {
    let t0 = Instant::now();
    tests::lab::build(c, nodes, 0)?;
    println!("{nodes} nodes up, no pods, in {:.1?}\n", t0.elapsed());
    // One reflector per segment; trial origins: the clients first, then the reflectors.
    let rrs = [0, nodes.div_ceil(2)];
    let order: Vec<usize> = (0..nodes).filter(|i| !rrs.contains(i)).chain(rrs).collect();
    let per = want_trials.min(nodes / 2);
    if per < want_trials {
        println!("{per} trials per topology: each trial is a node's first block, {nodes} nodes\n");
    }
    let mesh = trials(c, "full mesh", &order[..per])?;
    let rr_time = route_reflectors(c, &rrs)?;
    println!(
        "\nmesh off, route reflectors {} and {}: topology up in {:.1?}\n",
        c.rec.nodes[rrs[0]].name, c.rec.nodes[rrs[1]].name, rr_time
    );
    let rr = trials(c, "two route reflectors", &order[per..2 * per])?;

    let t1 = Instant::now();
    let mut next = 0;
    while c.rec.pods.len() < want_pods {
        tests::sys::check_interrupt()?;
        c.add_pod(next % nodes)?;
        next += 1;
        if c.rec.pods.len().is_multiple_of(100) {
            println!("  {} pods ({:.0?})", c.rec.pods.len(), t1.elapsed());
        }
    }
    println!(
        "\n{} pods over {nodes} nodes (CNI ADDs) in {:.0?}",
        c.rec.pods.len(),
        t1.elapsed()
    );
    std::thread::sleep(Duration::from_secs(3));
    let mem = memory(c);
    for (node, rss, hwm) in &mem {
        println!("  {node:<7} VmRSS {rss:>7} kB  VmHWM {hwm:>7} kB");
    }

    println!("\n### summary ({nodes} nodes, {} pods)", c.rec.pods.len());
    println!(
        "  {:<42} {:>6} {:>10} {:>10} {:>10}  p99 < 1 s",
        "convergence", "trials", "p50", "p99", "max"
    );
    for (label, ts) in [("full mesh", &mesh), ("two route reflectors", &rr)] {
        for (what, v) in [
            ("from ADD start", ts.iter().map(|t| t.from_add).collect()),
            (
                "from blackhole",
                ts.iter().filter_map(|t| t.from_claim).collect::<Vec<_>>(),
            ),
            (
                "BGP RIBs, from ADD",
                ts.iter().filter_map(|t| t.bgp).collect::<Vec<_>>(),
            ),
        ] {
            if let Some(s) = stats(v.clone()) {
                println!(
                    "  {:<42} {:>6} {:>10} {:>10} {:>10}  {}",
                    format!("{label}, {what}"),
                    v.len(),
                    ms(s.p50),
                    ms(s.p99),
                    ms(s.max),
                    if s.p99 < Duration::from_secs(1) {
                        "yes"
                    } else {
                        "NO"
                    }
                );
            }
        }
    }
    if !mem.is_empty() {
        let mb = |kb: u64| kb as f64 / 1024.0;
        let max_rss = mem.iter().map(|m| m.1).max().unwrap_or(0);
        let max_hwm = mem.iter().map(|m| m.2).max().unwrap_or(0);
        let mean_rss = mem.iter().map(|m| m.1).sum::<u64>() / mem.len() as u64;
        let mean_hwm = mem.iter().map(|m| m.2).sum::<u64>() / mem.len() as u64;
        println!(
            "  tabby-node RSS ({} agents): VmRSS max {:.1} MiB mean {:.1} MiB; VmHWM max {:.1} MiB mean {:.1} MiB",
            mem.len(),
            mb(max_rss),
            mb(mean_rss),
            mb(max_hwm),
            mb(mean_hwm)
        );
    }
    Ok(())
}
