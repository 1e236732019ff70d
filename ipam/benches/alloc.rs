//! Allocations per second against the local-directory datastore: one process alone, then four
//! OS processes contending on the same store, printed side by side with the ratio.
//!
//! The four-process cases are what a busy host sees: every CNI `ADD` on a node is its own
//! process, and all of them share the node's store. "same node" has all four allocate for one
//! node (they share its blocks and race to claim new ones); "4 nodes" gives each its own node
//! (they share only the store's lock).
//!
//! Each worker is this bench binary run again with `TABBY_IPAM_BENCH_WORKER` set. Workers open
//! the store, report ready, wait for a start signal and time only their allocation loop; the
//! rate is all allocations over the span from the first start to the last finish. The single
//! process makes as many allocations as the four together, so both fill the same blocks.
//!
//! `cargo bench -p ipam` (set `TABBY_IPAM_BENCH_N` to change the allocations per process of the
//! four-process cases; the default 250, 1000 in all, keeps one node within Calico's default
//! maxBlocksPerHost of 20 /26 blocks, 1280 addresses).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::{IPPool, IPPoolSpec, Node, NodeSpec};
use datastore::{Datastore, DirDatastore};
use ipam::{AutoAssignRequest, Ipam};

const WORKER_ENV: &str = "TABBY_IPAM_BENCH_WORKER";

fn main() {
    if let Ok(job) = std::env::var(WORKER_ENV) {
        worker(&job);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    // Test runners list a target's tests first (`--list`); this target has none to list.
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes --bench; run as a test (`cargo test --benches`), a short smoke run.
    let default_n = if args.iter().any(|a| a == "--bench") {
        250
    } else {
        20
    };
    let n: usize = std::env::var("TABBY_IPAM_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_n);
    let one = scenario("1 process", 1, 4 * n, false);
    let same = scenario("4 processes, same node", 4, n, false);
    let spread = scenario("4 processes, 4 nodes", 4, n, true);
    println!();
    println!(
        "{:<28} {:>12} {:>12} {:>10}",
        "scenario", "allocations", "alloc/s", "vs 1 proc"
    );
    for (name, total, rate) in [&one, &same, &spread] {
        println!("{name:<28} {total:>12} {rate:>12.0} {:>9.2}x", rate / one.2);
    }
}

/// Runs `procs` workers of `n` allocations each on a fresh store; returns (name, total, rate).
fn scenario(name: &str, procs: usize, n: usize, own_nodes: bool) -> (String, usize, f64) {
    let dir = TempDir::new();
    let store = dir.0.join("store");
    setup(&store, procs);
    let exe = std::env::current_exe().expect("bench binary path");
    let mut children = Vec::new();
    for p in 0..procs {
        let node = if own_nodes {
            format!("node-{p}")
        } else {
            "node-0".to_string()
        };
        let job = format!(
            "{}\t{node}\tp{p}\t{n}\t{}",
            store.display(),
            dir.0.display()
        );
        children.push(
            Command::new(&exe)
                .env(WORKER_ENV, job)
                .spawn()
                .expect("spawning bench worker"),
        );
    }
    // Start everyone at once, after all have opened the store.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..procs).any(|p| !dir.0.join(format!("ready-p{p}")).exists()) {
        assert!(Instant::now() < deadline, "bench workers did not get ready");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::fs::write(dir.0.join("go"), b"").expect("writing start signal");
    for mut c in children {
        let status = c.wait().expect("waiting for bench worker");
        assert!(status.success(), "bench worker failed: {status}");
    }
    let (mut first, mut last) = (u128::MAX, 0u128);
    for p in 0..procs {
        let text =
            std::fs::read_to_string(dir.0.join(format!("done-p{p}"))).expect("worker result");
        let mut parts = text
            .split_whitespace()
            .map(|s| s.parse::<u128>().expect("number"));
        first = first.min(parts.next().expect("start"));
        last = last.max(parts.next().expect("end"));
    }
    let total = procs * n;
    let secs = (last - first) as f64 / 1e9;
    let rate = total as f64 / secs;
    println!("{name}: {total} allocations in {secs:.3} s = {rate:.0} alloc/s");
    (name.to_string(), total, rate)
}

fn setup(store: &Path, nodes: usize) {
    let rt = runtime();
    rt.block_on(async {
        let ds = DirDatastore::open(store).expect("opening store");
        let pool = IPPool::new(
            "default-ipv4-ippool",
            IPPoolSpec {
                cidr: Some("198.18.0.0/16".parse().expect("cidr")),
                block_size: Some(26),
                ..IPPoolSpec::default()
            },
        );
        ds.create(pool.into()).await.expect("creating pool");
        for i in 0..nodes {
            ds.create(Node::new(format!("node-{i}"), NodeSpec::default()).into())
                .await
                .expect("creating node");
        }
    });
}

fn worker(job: &str) {
    let f: Vec<&str> = job.split('\t').collect();
    let (store, node, tag, n, dir) = (
        f[0],
        f[1],
        f[2],
        f[3].parse::<usize>().expect("n"),
        Path::new(f[4]),
    );
    let rt = runtime();
    rt.block_on(async {
        let ds: Arc<dyn Datastore> = Arc::new(DirDatastore::open(store).expect("opening store"));
        let ipam = Ipam::new(ds);
        ipam.usage().await.expect("warming up");
        std::fs::write(dir.join(format!("ready-{tag}")), b"").expect("ready file");
        while !dir.join("go").exists() {
            std::thread::sleep(Duration::from_micros(200));
        }
        let start = now_ns();
        for i in 0..n {
            let req = AutoAssignRequest::new(format!("k8s-pod-network.{tag}-{i}"), node);
            ipam.auto_assign(&req).await.expect("allocation");
        }
        let end = now_ns();
        std::fs::write(dir.join(format!("done-{tag}")), format!("{start} {end}")).expect("result");
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "tabby-ipam-bench-{}-{}",
            std::process::id(),
            now_ns()
        ));
        std::fs::create_dir_all(&path).expect("creating temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
