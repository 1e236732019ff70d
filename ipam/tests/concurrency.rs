//! Real contention: four OS processes allocate 250 addresses each, at the same time, against one
//! local-directory datastore, then release them all, also at the same time. Two processes share
//! each node, so they fight over the same blocks, affinities and claims, not just the datastore
//! lock.
//!
//! The processes are this test binary run again (`current_exe() --exact ipam_worker_process`)
//! with [`WORKER_ENV`] telling the worker what to do; without it the worker test does nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use api::{IPPool, IPPoolSpec, Key, Kind, Node, NodeSpec, Resource};
use datastore::{Datastore, DirDatastore};
use ipam::{AutoAssignRequest, Ipam};
use ipnet::IpNet;

const WORKER_ENV: &str = "TABBY_IPAM_TEST_WORKER";
const WORKER_TEST: &str = "ipam_worker_process";
const PROCESSES: usize = 4;
const PER_PROCESS: usize = 250;

/// A scratch directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("tabby-ipam-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one worker is told: `MODE DATASTORE_DIR NODE HANDLE_PREFIX COUNT OUTPUT_FILE`.
struct Job {
    mode: String,
    dir: PathBuf,
    node: String,
    prefix: String,
    count: usize,
    out: PathBuf,
}

impl Job {
    fn encode(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            self.mode,
            self.dir.display(),
            self.node,
            self.prefix,
            self.count,
            self.out.display()
        )
    }

    fn decode(s: &str) -> Job {
        let f: Vec<&str> = s.split('\t').collect();
        Job {
            mode: f[0].to_string(),
            dir: f[1].into(),
            node: f[2].to_string(),
            prefix: f[3].to_string(),
            count: f[4].parse().unwrap(),
            out: f[5].into(),
        }
    }
}

/// The worker: a no-op unless started by the test below.
#[test]
fn ipam_worker_process() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let job = Job::decode(&spec);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ds: Arc<dyn Datastore> = Arc::new(DirDatastore::open(&job.dir).unwrap());
        let ipam = Ipam::new(ds);
        let mut lines = String::new();
        for i in 0..job.count {
            let handle = format!("{}-{i}", job.prefix);
            match job.mode.as_str() {
                "alloc" => {
                    let mut req = AutoAssignRequest::new(&handle, &job.node);
                    req.attrs.insert("pod".into(), handle.clone());
                    let got = ipam
                        .auto_assign(&req)
                        .await
                        .unwrap_or_else(|e| panic!("worker {}: {e}", job.prefix));
                    lines.push_str(&format!("{handle} {}\n", got.v4[0].addr()));
                }
                "release" => {
                    let n = ipam
                        .release_by_handle(&handle)
                        .await
                        .unwrap_or_else(|e| panic!("worker {}: {e}", job.prefix));
                    lines.push_str(&format!("{handle} {n}\n"));
                }
                other => panic!("unknown worker mode {other}"),
            }
        }
        std::fs::write(&job.out, lines).unwrap();
    });
}

fn spawn_worker(job: &Job) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", WORKER_TEST, "--nocapture", "--test-threads=1"])
        .env(WORKER_ENV, job.encode())
        .spawn()
        .unwrap()
}

fn run_workers(dir: &Path, mode: &str) -> Vec<String> {
    let mut children = Vec::new();
    let mut outs = Vec::new();
    for p in 0..PROCESSES {
        let out = dir.join(format!("{mode}-{p}.txt"));
        let job = Job {
            mode: mode.to_string(),
            dir: dir.join("store"),
            node: format!("node-{}", p % 2),
            prefix: format!("k8s-pod-network.p{p}"),
            count: PER_PROCESS,
            out: out.clone(),
        };
        children.push(spawn_worker(&job));
        outs.push(out);
    }
    for mut c in children {
        let status = c.wait().unwrap();
        assert!(status.success(), "{mode} worker failed: {status}");
    }
    outs.iter()
        .flat_map(|o| {
            std::fs::read_to_string(o)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A store in `dir/store` with one /20 pool of /26 blocks and nodes node-0 and node-1.
fn setup(rt: &tokio::runtime::Runtime, dir: &Path) -> (Arc<dyn Datastore>, Ipam) {
    let ds: Arc<dyn Datastore> = Arc::new(DirDatastore::open(dir.join("store")).unwrap());
    rt.block_on(async {
        let pool = IPPool::new(
            "default-ipv4-ippool",
            IPPoolSpec {
                cidr: Some("198.18.0.0/20".parse().unwrap()),
                block_size: Some(26),
                ..IPPoolSpec::default()
            },
        );
        ds.create(pool.into()).await.unwrap();
        for n in ["node-0", "node-1"] {
            ds.create(Node::new(n, NodeSpec::default()).into())
                .await
                .unwrap();
        }
    });
    (ds.clone(), Ipam::new(ds))
}

#[test]
fn four_processes_allocate_and_release_on_one_dir_datastore() {
    let tmp = TempDir::new("concurrency");
    let rt = runtime();
    let (ds, ipam) = setup(&rt, &tmp.0);

    let lines = run_workers(&tmp.0, "alloc");
    assert_eq!(lines.len(), PROCESSES * PER_PROCESS);
    let mut by_ip: BTreeMap<IpAddr, String> = BTreeMap::new();
    for line in &lines {
        let (handle, ip) = line.split_once(' ').unwrap();
        let ip: IpAddr = ip.parse().unwrap();
        if let Some(other) = by_ip.insert(ip, handle.to_string()) {
            panic!("{ip} handed to both {other} and {handle}");
        }
    }

    rt.block_on(async {
        // Every handle is accounted for: its object exists and counts its one address.
        for (ip, handle) in &by_ip {
            let got = ipam.ips_by_handle(handle).await.unwrap();
            assert_eq!(got.len(), 1, "{handle}");
            assert_eq!(got[0].addr(), *ip, "{handle}");
            let Resource::IPAMHandle(h) =
                ds.get(&Key::new(Kind::IPAMHandle, handle)).await.unwrap()
            else {
                unreachable!()
            };
            let block = IpNet::new(*ip, 26).unwrap().trunc().to_string();
            assert_eq!(h.spec.block, BTreeMap::from([(block, 1)]), "{handle}");
        }
        let report = ipam.check().await.unwrap();
        assert!(report.is_clean(), "{report:?}");
        let usage = ipam.usage().await.unwrap();
        assert_eq!(usage.pools[0].in_use, (PROCESSES * PER_PROCESS) as u128);
        let nodes: BTreeSet<Option<String>> = usage.pools[0]
            .blocks
            .iter()
            .map(|b| b.node.clone())
            .collect();
        assert_eq!(
            nodes,
            BTreeSet::from([Some("node-0".to_string()), Some("node-1".to_string())])
        );
        // 500 addresses per node in /26 blocks: 8 blocks each, none borrowed or wasted.
        assert_eq!(usage.pools[0].blocks.len(), 16);
    });

    let released = run_workers(&tmp.0, "release");
    assert_eq!(released.len(), PROCESSES * PER_PROCESS);
    assert!(released.iter().all(|l| l.ends_with(" 1")), "{released:?}");

    rt.block_on(async {
        let report = ipam.check().await.unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.summary.addresses_in_use, 0);
        assert_eq!(report.summary.handles, 0);
        let usage = ipam.usage().await.unwrap();
        assert!(!usage.pools[0].blocks.is_empty());
        for b in &usage.pools[0].blocks {
            assert_eq!(b.in_use, 0, "{b:?}");
            assert_eq!(b.free, b.total, "{b:?}");
        }
    });
}

/// Workers killed with SIGKILL in the middle of allocating leave only what `check` finds and
/// `release_from_report` repairs (over-counted handles, half-done claims), never a double
/// allocation or a leaked address; afterwards allocation goes on.
#[test]
fn killed_workers_leave_only_repairable_state() {
    let tmp = TempDir::new("crash");
    let rt = runtime();
    let (ds, ipam) = setup(&rt, &tmp.0);
    let mut children: Vec<_> = (0..2)
        .map(|p| {
            spawn_worker(&Job {
                mode: "alloc".into(),
                dir: tmp.0.join("store"),
                node: "node-0".into(),
                prefix: format!("k8s-pod-network.crash{p}"),
                count: 600,
                out: tmp.0.join(format!("crash-{p}.txt")),
            })
        })
        .collect();
    // Let them get going, then kill both mid-flight.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let handles = rt.block_on(ds.list(Kind::IPAMHandle)).unwrap().items.len();
        if handles >= 100 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workers made no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for c in &mut children {
        c.kill().unwrap();
        c.wait().unwrap();
    }

    rt.block_on(async {
        let report = ipam.check().await.unwrap();
        assert!(report.leaked_addresses.is_empty(), "{report:?}");
        assert!(report.corrupt_blocks.is_empty(), "{report:?}");
        let summary = ipam.release_from_report(&report).await.unwrap();
        assert!(summary.skipped.is_empty(), "{summary:?}");
        let after = ipam.check().await.unwrap();
        assert!(after.is_clean(), "{after:?}");
        // Every surviving handle holds exactly what its object says.
        let listing = ds.list(Kind::IPAMHandle).await.unwrap();
        let mut seen = BTreeSet::new();
        for r in listing.items {
            let Resource::IPAMHandle(h) = r else {
                unreachable!()
            };
            let ips = ipam.ips_by_handle(&h.spec.handle_id).await.unwrap();
            assert_eq!(ips.len() as u32, h.spec.block.values().sum::<u32>());
            for ip in ips {
                assert!(seen.insert(ip.addr()), "{} held twice", ip.addr());
            }
        }
        let more = ipam
            .auto_assign(&AutoAssignRequest::new("k8s-pod-network.after", "node-0"))
            .await
            .unwrap();
        assert!(!seen.contains(&more.v4[0].addr()));
    });
}
