//! 200 pods ADD then DEL with `tabby` + `tabby-ipam`, and in the same run the reference
//! `ptp` + `host-local` (Debian `containernetworking-plugins`, /usr/lib/cni) for the same 200
//! pods; median and p99 per command, and the ratio. Beside them, the kernel's own time to delete a pod's veth (one
//! netlink request from a process already running, on a pair set up as tabby sets one up), the
//! floor for any DEL.
//!
//! Run as root: `cargo bench -p cni-plugin --bench add_del`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use cni_plugin::dataplane::Session;
use common::Netns;
use common::cni::Harness;
use serde_json::{Value, json};

const PODS: usize = 200;
const REFERENCE: &str = "/usr/lib/cni";

struct Stats {
    median: Duration,
    p99: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    Stats {
        median: v[v.len() / 2],
        p99: v[(v.len() * 99).div_ceil(100) - 1],
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Pause before each timed call: `TABBY_BENCH_SETTLE_MS`, default 0 (a busy kubelet).
fn settle() -> Duration {
    let ms = std::env::var("TABBY_BENCH_SETTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_millis(ms)
}

struct Plugin<'a> {
    dir: &'a Path,
    name: &'a str,
    conf: String,
    prefix: &'a str,
    adds: Vec<Duration>,
    dels: Vec<Duration>,
}

impl Plugin<'_> {
    fn call(&mut self, h: &Harness, command: &str, i: usize, pod: &Netns) {
        // Let the kernel finish work deferred from the previous call (addrconf, linkwatch,
        // RCU) so that it is not charged to this one.
        std::thread::sleep(settle());
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={}{i}",
            self.prefix
        );
        let t = Instant::now();
        let out = h.exec_from(
            self.dir,
            self.name,
            command,
            &format!("{}{i}", self.prefix),
            Some(&pod.path()),
            &args,
            self.conf.as_bytes(),
        );
        let took = t.elapsed();
        assert_eq!(out.code, 0, "{} {command}: {out:?}", self.name);
        match command {
            "ADD" => self.adds.push(took),
            _ => self.dels.push(took),
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; test runners (`cargo test --all-targets`, nextest's
    // `--list`) do not, and get nothing to run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let h = Harness::new();
    let ours = common::cni::cni_path();
    let ptp_conf: Value = json!({
        "cniVersion": "1.0.0", "name": "bench-ptp", "type": "ptp", "ipMasq": false, "mtu": 1500,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.19.0.0/23"}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": h.dir.join("host-local")}
    });
    let mut tabby = Plugin {
        dir: &ours,
        name: "tabby",
        conf: h.conf("1.0.0", json!({"mtu": 1500})).to_string(),
        prefix: "t",
        adds: Vec::new(),
        dels: Vec::new(),
    };
    let mut ptp = Plugin {
        dir: Path::new(REFERENCE),
        name: "ptp",
        conf: ptp_conf.to_string(),
        prefix: "r",
        adds: Vec::new(),
        dels: Vec::new(),
    };
    let pods: Vec<Netns> = (0..PODS).map(|_| Netns::new("b")).collect();

    // Each plugin adds all 200 pods, then deletes them, so that each pays for the kernel work
    // its own calls leave behind. The order is tabby, ptp, ptp, tabby, so that drift in the
    // machine's load (it is shared) weighs on both alike.
    for turn in [0, 1, 1, 0] {
        let plugin = if turn == 0 { &mut tabby } else { &mut ptp };
        for (i, pod) in pods.iter().enumerate() {
            plugin.call(&h, "ADD", i, pod);
        }
        for (i, pod) in pods.iter().enumerate() {
            plugin.call(&h, "DEL", i, pod);
        }
    }
    h.assert_clean();

    // Veth pairs set up as a pod's (up, addresses, routes, sysctls), for the kernel's own
    // time to delete one.
    let node = h.node.ns.open();
    let k_ns: Vec<_> = pods.iter().map(Netns::open).collect();
    node.run(|| {
        for (i, ns) in k_ns.iter().enumerate() {
            let dp = Session::new(Some(ns)).unwrap();
            let host = format!("bench{i}");
            let index = dp.create_veth(&host, "eth0", 1500).unwrap();
            let ip = std::net::Ipv4Addr::new(198, 19, 200 + (i / 250) as u8, (i % 250) as u8 + 1);
            dp.configure_pod("eth0", &[ip.into()]).unwrap();
            dp.configure_host(&host, index, &[ip.into()]).unwrap();
        }
    })
    .unwrap();
    let mut kernel = Vec::new();
    for ns in &k_ns {
        node.run(|| {
            let dp = Session::new(Some(ns)).unwrap();
            std::thread::sleep(settle());
            let t = Instant::now();
            assert!(dp.delete_pod_link("eth0").unwrap());
            kernel.push(t.elapsed());
        })
        .unwrap();
    }

    let (t_add, t_del) = (stats(tabby.adds), stats(tabby.dels));
    let (r_add, r_del) = (stats(ptp.adds), stats(ptp.dels));
    let k = stats(kernel);
    println!(
        "{PODS} pods ADD then DEL, twice per plugin (order tabby, ptp, ptp, tabby), one call at a \
         time, {} ms pause before each (TABBY_BENCH_SETTLE_MS); cniVersion 1.0.0; exec to exit",
        settle().as_millis()
    );
    println!(
        "{:<24} {:>12} {:>12} {:>12} {:>12}",
        "", "ADD median", "ADD p99", "DEL median", "DEL p99"
    );
    for (name, add, del) in [
        ("tabby + tabby-ipam", &t_add, &t_del),
        ("ptp + host-local", &r_add, &r_del),
    ] {
        println!(
            "{name:<24} {:>9.2} ms {:>9.2} ms {:>9.2} ms {:>9.2} ms",
            ms(add.median),
            ms(add.p99),
            ms(del.median),
            ms(del.p99)
        );
    }
    println!(
        "{:<24} {:>12} {:>12} {:>9.2} ms {:>9.2} ms",
        "kernel veth delete",
        "",
        "",
        ms(k.median),
        ms(k.p99)
    );
    println!(
        "speed-up over ptp + host-local (median): ADD {:.2}x, DEL {:.2}x; tabby DEL / kernel veth delete: {:.2}",
        ms(r_add.median) / ms(t_add.median),
        ms(r_del.median) / ms(t_del.median),
        ms(t_del.median) / ms(k.median)
    );
}
