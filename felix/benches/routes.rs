//! Route programming benchmark: felix's route manager against `ip -batch`, same routes, same run.
//!
//! 1. program 10,000 remote block routes from cold;
//! 2. resync 10,000 unchanged routes (dump + diff, no change) — beside it, `ip route show proto 80`;
//! 3. apply a 100-route change against 10,000 — must make exactly 100 kernel changes.
//!
//! Runs in a network namespace of its own (root needed). The blocks are /29s in 198.18.0.0/15
//! (the benchmarking range holds only 2,048 /26s), via 100 "nodes" on 192.0.2.0/24.
//! `cargo bench -p felix --bench routes`

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use felix::model::RouteTarget;
use felix::netlink::{Netlink, link_name};
use felix::routes::{NetlinkRoutes, RouteManager};
use futures_util::StreamExt;
use ipnet::{IpNet, Ipv4Net};

const ROUTES: u32 = 10_000;
const CHANGE: u32 = 100;
const RUNS: usize = 3;

fn sh(args: &[&str]) -> std::process::Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect(args[0]);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn block(i: u32) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::from(0xc612_0000u32 + (i << 3)), 29).unwrap()
}

fn gw(i: u32, shift: u32) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, (2 + (i + shift) % 100) as u8)
}

fn desired(shift_first: u32) -> BTreeMap<IpNet, RouteTarget> {
    (0..ROUTES)
        .map(|i| {
            let shift = if i < shift_first { 1 } else { 0 };
            (
                block(i).into(),
                RouteTarget::Via {
                    gw: gw(i, shift).into(),
                    dev: "veth0".into(),
                    onlink: false,
                },
            )
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `ip -batch` on a file of commands in the namespace; returns the wall time.
fn ip_batch(ns: &str, lines: &str) -> Duration {
    let path = std::env::temp_dir().join(format!("{ns}.batch"));
    std::fs::write(&path, lines).unwrap();
    let t = Instant::now();
    sh(&["ip", "-n", ns, "-batch", path.to_str().unwrap()]);
    let d = t.elapsed();
    let _ = std::fs::remove_file(path);
    d
}

fn batch_lines(verb: &str, shift_first: u32, count: u32) -> String {
    (0..count)
        .map(|i| {
            let shift = if i < shift_first { 1 } else { 0 };
            format!(
                "route {verb} {} via {} dev veth0 proto 80\n",
                block(i),
                gw(i, shift)
            )
        })
        .collect()
}

fn flush(ns: &str) {
    sh(&["ip", "-n", ns, "route", "flush", "proto", "80"]);
}

struct Ns(String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("routes bench: needs root for its network namespace; skipped");
        return;
    }
    let ns = Ns(format!("tfbench{}", std::process::id()));
    let name = ns.0.clone();
    sh(&["ip", "netns", "add", &name]);
    sh(&[
        "ip", "-n", &name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
    ]);
    sh(&[
        "ip",
        "-n",
        &name,
        "addr",
        "add",
        "192.0.2.1/24",
        "dev",
        "veth0",
    ]);
    sh(&["ip", "-n", &name, "link", "set", "veth0", "up"]);
    sh(&["ip", "-n", &name, "link", "set", "veth1", "up"]);

    // ip -batch, cold.
    let mut ip_cold = Vec::new();
    for _ in 0..RUNS {
        flush(&name);
        ip_cold.push(ip_batch(&name, &batch_lines("add", 0, ROUTES)));
    }
    flush(&name);
    let ip_cold = median(ip_cold);

    // ip: a dump of our routes (what a resync has to read).
    let mut ip_dump = Vec::new();

    let f = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
    let worker_ns = name.clone();
    let result = std::thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd, for this thread only.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let nl = Netlink::connect().unwrap();
            // An independent count of kernel changes: route notifications from the kernel.
            let (conn, _, mut events) =
                rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Ipv4Route])
                    .unwrap();
            tokio::spawn(conn);
            let mut drain = async move || {
                let mut n = 0usize;
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(200), events.next()).await
                {
                    n += 1;
                }
                n
            };
            let ifs: BTreeMap<String, u32> = nl
                .links()
                .await
                .unwrap()
                .iter()
                .filter_map(|l| Some((link_name(l)?.to_string(), l.header.index)))
                .collect();
            let mut cold = Vec::new();
            let mut resync = Vec::new();
            let mut change = Vec::new();
            let mut changes = Vec::new();
            let mut notified = Vec::new();
            for _ in 0..RUNS {
                flush(&worker_ns);
                let mut m = RouteManager::new(NetlinkRoutes::new(nl.clone()));
                m.set_interfaces(&ifs);
                m.set_desired(&desired(0));
                let t = Instant::now();
                let s = m.apply().await.unwrap();
                cold.push(t.elapsed());
                assert_eq!((s.replaced, s.failed), (ROUTES as usize, 0));
                for _ in 0..3 {
                    m.queue_resync();
                    let t = Instant::now();
                    let s = m.apply().await.unwrap();
                    resync.push(t.elapsed());
                    assert_eq!(s.changes(), 0);
                }
                drain().await;
                m.set_desired(&desired(CHANGE));
                let t = Instant::now();
                let s = m.apply().await.unwrap();
                change.push(t.elapsed());
                changes.push(s.changes());
                notified.push(drain().await);
            }
            (
                median(cold),
                median(resync),
                median(change),
                changes,
                notified,
            )
        })
    })
    .join()
    .unwrap();
    let (felix_cold, felix_resync, felix_change, changes, notified) = result;

    for _ in 0..RUNS {
        let t = Instant::now();
        let out = sh(&["ip", "-n", &name, "route", "show", "proto", "80"]);
        ip_dump.push(t.elapsed());
        assert_eq!(
            out.stdout.iter().filter(|b| **b == b'\n').count(),
            ROUTES as usize
        );
    }
    let ip_dump = median(ip_dump);
    // ip -batch: the same 100-route change (the state now has the first 100 shifted: shift back).
    let mut ip_change = Vec::new();
    for run in 0..RUNS {
        let shift = if run % 2 == 0 { 0 } else { CHANGE };
        ip_change.push(ip_batch(&name, &batch_lines("replace", shift, CHANGE)));
    }
    let ip_change = median(ip_change);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!("route programming, {ROUTES} routes, median of {RUNS} runs");
    println!(
        "  cold program       felix {:8.1} ms   ip -batch {:8.1} ms   ratio {:.2}x (target <= 1.5x)",
        ms(felix_cold),
        ms(ip_cold),
        ratio(felix_cold, ip_cold)
    );
    println!(
        "  resync, no change  felix {:8.1} ms   ip route show {:6.1} ms   ratio {:.2}x (target < 50 ms)",
        ms(felix_resync),
        ms(ip_dump),
        ratio(felix_resync, ip_dump)
    );
    println!(
        "  {CHANGE}-route change  felix {:8.1} ms   ip -batch {:8.1} ms   ratio {:.2}x",
        ms(felix_change),
        ms(ip_change),
        ratio(felix_change, ip_change),
    );
    println!(
        "  kernel changes per {CHANGE}-route change: felix requests {changes:?}, kernel route notifications {notified:?} (target exactly {CHANGE})"
    );
    drop(ns);
}
