//! 200 pods ADD then DEL with `tabby` + `tabby-ipam`, and in the same run the reference
//! `ptp` + `host-local` (Debian `containernetworking-plugins`, /usr/lib/cni) for the same 200
//! pods; median and p99 per command, and the ratio. Run as root: `cargo bench -p cni-plugin`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Netns;
use common::cni::Harness;
use serde_json::json;

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

/// Times ADD for every pod, then DEL for every pod, sequentially as a kubelet on a quiet node.
fn run(
    h: &Harness,
    pods: &[Netns],
    dir: &Path,
    plugin: &str,
    conf: &serde_json::Value,
    prefix: &str,
) -> (Stats, Stats) {
    let stdin = conf.to_string();
    let mut adds = Vec::with_capacity(PODS);
    let mut dels = Vec::with_capacity(PODS);
    let args =
        |i: usize| format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={prefix}{i}");
    for (i, pod) in pods.iter().enumerate() {
        let t = Instant::now();
        let out = h.exec_from(
            dir,
            plugin,
            "ADD",
            &format!("{prefix}{i}"),
            Some(&pod.path()),
            &args(i),
            stdin.as_bytes(),
        );
        adds.push(t.elapsed());
        assert_eq!(out.code, 0, "{plugin} ADD: {out:?}");
    }
    for (i, pod) in pods.iter().enumerate() {
        let t = Instant::now();
        let out = h.exec_from(
            dir,
            plugin,
            "DEL",
            &format!("{prefix}{i}"),
            Some(&pod.path()),
            &args(i),
            stdin.as_bytes(),
        );
        dels.push(t.elapsed());
        assert_eq!(out.code, 0, "{plugin} DEL: {out:?}");
    }
    (stats(adds), stats(dels))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let h = Harness::new();
    let pods: Vec<Netns> = (0..PODS).map(|_| Netns::new("b")).collect();
    let ours = common::cni::cni_path();

    let tabby_conf = h.conf("1.0.0", json!({"mtu": 1500}));
    let (t_add, t_del) = run(&h, &pods, &ours, "tabby", &tabby_conf, "t");
    h.assert_clean();

    let ptp_conf = json!({
        "cniVersion": "1.0.0", "name": "bench-ptp", "type": "ptp", "ipMasq": false, "mtu": 1500,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.19.0.0/23"}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": h.dir.join("host-local")}
    });
    let (r_add, r_del) = run(&h, &pods, Path::new(REFERENCE), "ptp", &ptp_conf, "r");

    println!("{PODS} pods, sequential, cniVersion 1.0.0 (times per command, exec to exit)");
    println!(
        "{:<22} {:>12} {:>12} {:>12} {:>12}",
        "", "ADD median", "ADD p99", "DEL median", "DEL p99"
    );
    for (name, add, del) in [
        ("tabby + tabby-ipam", &t_add, &t_del),
        ("ptp + host-local", &r_add, &r_del),
    ] {
        println!(
            "{name:<22} {:>9.2} ms {:>9.2} ms {:>9.2} ms {:>9.2} ms",
            ms(add.median),
            ms(add.p99),
            ms(del.median),
            ms(del.p99)
        );
    }
    println!(
        "ratio ptp/tabby: ADD median {:.2}x, DEL median {:.2}x",
        ms(r_add.median) / ms(t_add.median),
        ms(r_del.median) / ms(t_del.median)
    );
}
