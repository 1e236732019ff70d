//! Throughput of the directory datastore: single-process create / update / get, and
//! compare-and-swap increments from several processes at once (how IPAM uses it), with and
//! without fsync. Run with `cargo bench -p datastore --bench dir_throughput`.
//!
//! Worker processes are this binary run again with `TABBY_BENCH_WORKER` set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use api::{IPAMHandle, IPAMHandleSpec, Key, Kind, Node, NodeSpec, Resource};
use datastore::{Datastore, DirDatastore, DirOptions, Error, MemoryDatastore};

const WORKER: &str = "TABBY_BENCH_WORKER";

fn node(name: &str) -> Resource {
    Node::new(name, NodeSpec::default()).into()
}

fn handle(name: &str) -> Resource {
    IPAMHandle::new(
        name,
        IPAMHandleSpec {
            handle_id: name.into(),
            ..IPAMHandleSpec::default()
        },
    )
    .into()
}

fn rate(n: usize, d: Duration) -> String {
    format!("{:>9.0} ops/s", n as f64 / d.as_secs_f64())
}

async fn single(ds: &dyn Datastore, label: &str, n: usize) {
    let t = Instant::now();
    let mut stored = Vec::with_capacity(n);
    for i in 0..n {
        stored.push(ds.create(node(&format!("n{i}"))).await.expect("create"));
    }
    let create = t.elapsed();
    let t = Instant::now();
    for r in stored.iter_mut() {
        let mut next = r.clone();
        next.metadata_mut()
            .annotations
            .insert("k".into(), "v".into());
        *r = ds.update(next).await.expect("update");
    }
    let update = t.elapsed();
    let t = Instant::now();
    for r in &stored {
        ds.get(&r.key()).await.expect("get");
    }
    let get = t.elapsed();
    let t = Instant::now();
    let listed = ds.list(Kind::Node).await.expect("list");
    let list = t.elapsed();
    assert_eq!(listed.items.len(), n);
    println!(
        "{label:<28} create {}  update {}  get {}  list of {n}: {list:?}",
        rate(n, create),
        rate(n, update),
        rate(n, get)
    );
}

/// `count` IPAM-like allocations: read this process's block, CAS-update it, create a handle
/// and a WorkloadEndpoint (three writes, two of them new objects).
async fn allocations(ds: &dyn Datastore, block: &Key, id: &str, count: usize) {
    for i in 0..count {
        increments(ds, block, 1).await;
        ds.create(handle(&format!("{id}-h{i}")))
            .await
            .expect("create handle");
        let mut wep = api::WorkloadEndpoint::new(format!("{id}-w{i}"), Default::default());
        wep.metadata.namespace = Some("default".into());
        ds.create(wep.into()).await.expect("create endpoint");
    }
}

/// What each worker process does.
#[derive(Clone, Copy)]
enum Load {
    /// Get + CAS-update of a key of its own.
    OwnKey,
    /// Get + CAS-update of one key all processes share.
    SharedKey,
    /// [`allocations`].
    Allocations,
}

/// `count` get + CAS-update increments of `key`, retrying on conflict. Returns the conflicts.
async fn increments(ds: &dyn Datastore, key: &Key, count: usize) -> usize {
    let mut conflicts = 0;
    for _ in 0..count {
        loop {
            let Resource::IPAMHandle(mut h) = ds.get(key).await.expect("get") else {
                unreachable!("a handle");
            };
            *h.spec.block.entry("count".into()).or_default() += 1;
            match ds.update(h.into()).await {
                Ok(_) => break,
                Err(Error::Conflict { .. }) => conflicts += 1,
                Err(e) => panic!("update: {e}"),
            }
        }
    }
    conflicts
}

fn contended(dir: &Path, label: &str, fsync: bool, processes: usize, count: usize, load: Load) {
    let rt = runtime();
    let ds = DirDatastore::open_with(
        dir,
        DirOptions {
            fsync,
            ..DirOptions::default()
        },
    )
    .unwrap();
    rt.block_on(async {
        for i in 0..processes {
            let _ = ds.create(handle(&format!("h{i}"))).await;
        }
        let _ = ds.create(handle("shared")).await;
    });
    let t = Instant::now();
    let children: Vec<_> = (0..processes)
        .map(|i| {
            let (key, alloc) = match load {
                Load::OwnKey => (format!("h{i}"), false),
                Load::SharedKey => ("shared".to_string(), false),
                Load::Allocations => (format!("h{i}"), true),
            };
            let spec = format!("{}|{key}|{count}|{fsync}|{alloc}", dir.display());
            Command::new(std::env::current_exe().unwrap())
                .env(WORKER, spec)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let d = t.elapsed();
    let what = match load {
        Load::Allocations => "allocations",
        Load::OwnKey | Load::SharedKey => "get+update",
    };
    println!(
        "{label:<28} {processes} processes x {count} {what}: {} (all processes)",
        rate(processes * count, d)
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn worker(spec: &str) {
    let mut parts = spec.split('|');
    let dir = PathBuf::from(parts.next().unwrap());
    let key = Key::new(Kind::IPAMHandle, parts.next().unwrap());
    let count: usize = parts.next().unwrap().parse().unwrap();
    let fsync: bool = parts.next().unwrap().parse().unwrap();
    let alloc: bool = parts.next().unwrap().parse().unwrap();
    let ds = DirDatastore::open_with(
        dir,
        DirOptions {
            fsync,
            ..DirOptions::default()
        },
    )
    .unwrap();
    if alloc {
        let id = key.name.clone();
        runtime().block_on(allocations(&ds, &key, &id, count));
    } else {
        runtime().block_on(increments(&ds, &key, count));
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        // TABBY_BENCH_DIR picks the file system (e.g. /dev/shm to leave the disk out of it).
        let base =
            std::env::var_os("TABBY_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let p = base.join(format!("tabby-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() {
    if let Ok(spec) = std::env::var(WORKER) {
        worker(&spec);
        return;
    }
    let n = 5_000;
    let rt = runtime();
    rt.block_on(single(&MemoryDatastore::new(), "memory", n));
    {
        let dir = TempDir::new("single");
        let ds = DirDatastore::open(&dir.0).unwrap();
        rt.block_on(single(&ds, "dir", n));
        let fresh = DirDatastore::open(&dir.0).unwrap();
        let t = Instant::now();
        let listed = rt.block_on(fresh.list(Kind::Node)).unwrap();
        println!(
            "{:<28} cold list of {} from a new handle: {:?}",
            "dir",
            listed.items.len(),
            t.elapsed()
        );
    }
    {
        let dir = TempDir::new("single-fsync");
        let ds = DirDatastore::open_with(
            &dir.0,
            DirOptions {
                fsync: true,
                ..DirOptions::default()
            },
        )
        .unwrap();
        rt.block_on(single(&ds, "dir, fsync", 500));
    }
    for (label, processes, fsync, load) in [
        ("dir, own key", 1, false, Load::OwnKey),
        ("dir, own keys", 4, false, Load::OwnKey),
        ("dir, one shared key", 4, false, Load::SharedKey),
        ("dir, own keys, fsync", 4, true, Load::OwnKey),
        ("dir, IPAM-like", 1, false, Load::Allocations),
        ("dir, IPAM-like", 4, false, Load::Allocations),
    ] {
        let dir = TempDir::new("contended");
        let count = if fsync { 200 } else { 2_000 };
        contended(&dir.0, label, fsync, processes, count, load);
    }
}
