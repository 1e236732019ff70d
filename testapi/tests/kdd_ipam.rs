//! Concurrent IPAM from several OS processes through one Kubernetes API server: no address is
//! handed out twice, every handle is accounted for, and releasing everything leaves the blocks
//! empty. Calico's IPAM on KDD relies on exactly this: resourceVersion compare-and-swap on
//! IPAMBlock, BlockAffinity and IPAMHandle objects.
//!
//! The processes are this test binary run again (`current_exe() --exact ipam_worker_process`)
//! with [`WORKER_ENV`] telling the worker what to do; without it the worker test does nothing.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use api::{IPPool, IPPoolSpec, Key, Kind, Node, NodeSpec, Resource};
use common::Cluster;
use datastore::Datastore;
use datastore::kubernetes::{ConfigSource, KubeDatastore};
use ipam::{AutoAssignRequest, Ipam};
use ipnet::IpNet;

const WORKER_ENV: &str = "TABBY_KDD_IPAM_WORKER";
const WORKER_TEST: &str = "ipam_worker_process";
const PROCESSES: usize = 4;
const PER_PROCESS: usize = 150;

/// The worker: `MODE KUBECONFIG NODE HANDLE_PREFIX COUNT OUTPUT_FILE`, tab-separated.
#[test]
fn ipam_worker_process() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let f: Vec<String> = spec.split('\t').map(str::to_string).collect();
    let (mode, kubeconfig, node, prefix) = (&f[0], &f[1], &f[2], &f[3]);
    let count: usize = f[4].parse().unwrap();
    let out = PathBuf::from(&f[5]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ds: Arc<dyn Datastore> = Arc::new(KubeDatastore::new(ConfigSource::Kubeconfig(
            kubeconfig.into(),
        )));
        let ipam = Ipam::new(ds);
        let mut lines = String::new();
        for i in 0..count {
            let handle = format!("{prefix}-{i}");
            match mode.as_str() {
                "alloc" => {
                    let req = AutoAssignRequest::new(&handle, node);
                    let got = ipam
                        .auto_assign(&req)
                        .await
                        .unwrap_or_else(|e| panic!("worker {prefix}: {e}"));
                    lines.push_str(&format!("{handle} {}\n", got.v4[0].addr()));
                }
                "release" => {
                    let n = ipam
                        .release_by_handle(&handle)
                        .await
                        .unwrap_or_else(|e| panic!("worker {prefix}: {e}"));
                    lines.push_str(&format!("{handle} {n}\n"));
                }
                other => panic!("unknown worker mode {other}"),
            }
        }
        std::fs::write(&out, lines).unwrap();
    });
}

fn run_workers(cluster: &Cluster, mode: &str) -> Vec<String> {
    let mut children = Vec::new();
    let mut outs = Vec::new();
    for p in 0..PROCESSES {
        let out = cluster.dir().join(format!("{mode}-{p}.txt"));
        let job = [
            mode.to_string(),
            cluster.kubeconfig().display().to_string(),
            format!("node-{}", p % 2),
            format!("k8s-pod-network.p{p}"),
            PER_PROCESS.to_string(),
            out.display().to_string(),
        ]
        .join("\t");
        children.push(
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", WORKER_TEST, "--nocapture", "--test-threads=1"])
                .env(WORKER_ENV, job)
                .spawn()
                .unwrap(),
        );
        outs.push(out);
    }
    for mut c in children {
        let status = c.wait().unwrap();
        assert!(status.success(), "{mode} worker failed: {status}");
    }
    outs.iter().flat_map(|o| read_lines(o)).collect()
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn four_processes_allocate_and_release_through_the_api_server() {
    let cluster = common::cluster("ipam");
    let ds: Arc<dyn Datastore> = Arc::new(KubeDatastore::new(ConfigSource::Kubeconfig(
        cluster.kubeconfig().to_path_buf(),
    )));
    let setup = ds.clone();
    cluster.run(async move {
        let pool = IPPool::new(
            "default-ipv4-ippool",
            IPPoolSpec {
                cidr: Some("198.18.0.0/20".parse().unwrap()),
                block_size: Some(26),
                ..IPPoolSpec::default()
            },
        );
        setup.create(pool.into()).await.unwrap();
        for n in ["node-0", "node-1"] {
            setup
                .create(Node::new(n, NodeSpec::default()).into())
                .await
                .unwrap();
        }
    });

    let lines = run_workers(&cluster, "alloc");
    assert_eq!(lines.len(), PROCESSES * PER_PROCESS);
    let mut by_ip: BTreeMap<IpAddr, String> = BTreeMap::new();
    for line in &lines {
        let (handle, ip) = line.split_once(' ').unwrap();
        let ip: IpAddr = ip.parse().unwrap();
        if let Some(other) = by_ip.insert(ip, handle.to_string()) {
            panic!("{ip} handed to both {other} and {handle}");
        }
    }

    let check = ds.clone();
    cluster.run(async move {
        let ipam = Ipam::new(check.clone());
        for (ip, handle) in &by_ip {
            let Resource::IPAMHandle(h) = check
                .get(&Key::new(Kind::IPAMHandle, handle))
                .await
                .unwrap()
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
        // 300 addresses per node in /26 blocks: five blocks each, none borrowed or wasted.
        assert_eq!(usage.pools[0].blocks.len(), 10);
    });

    let released = run_workers(&cluster, "release");
    assert_eq!(released.len(), PROCESSES * PER_PROCESS);
    assert!(released.iter().all(|l| l.ends_with(" 1")), "{released:?}");

    cluster.run(async move {
        let ipam = Ipam::new(ds);
        let report = ipam.check().await.unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.summary.addresses_in_use, 0);
        assert_eq!(report.summary.handles, 0);
    });
}
