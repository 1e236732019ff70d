//! The commands: `up`, `demo`, `add-node`, `down`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Error;
use crate::cluster::{Bins, Cluster, Mode, Record, check_ipip};
use crate::report;

const CONVERGE: Duration = Duration::from_secs(120);

fn prepare(bin_dir: Option<PathBuf>, mode: Mode) -> Result<Bins, Error> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::Command {
            what: "building namespaces".into(),
            detail: "tabby-lab must run as root (sudo)".into(),
        });
    }
    if mode == Mode::Ipip {
        check_ipip()?;
    }
    let bins = Bins::locate(bin_dir)?;
    for (tool, package) in [
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
        ("bird", "bird2"),
    ] {
        if !in_path(tool) {
            return Err(Error::Command {
                what: format!("looking for `{tool}`"),
                detail: format!("not found: apt-get install {package}"),
            });
        }
    }
    Ok(bins)
}

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Router, nodes, BGP, tabby-node processes, pods; then waits for all pairs to ping.
pub fn build(c: &mut Cluster, nodes: usize, pods_per_node: usize) -> Result<Duration, Error> {
    let start = Instant::now();
    println!(
        "building {nodes} nodes in {} (namespaces {}-*, state in {})",
        c.rec.mode.label(),
        c.rec.prefix,
        c.rec.state_dir.display()
    );
    c.build_router()?;
    for _ in 0..nodes {
        c.add_node(nodes)?;
    }
    for i in 0..nodes {
        c.peer_with_router(i)?;
    }
    c.run_router_bgp()?;
    for i in 0..nodes {
        c.start_node(i)?;
    }
    for i in 0..nodes {
        c.wait_node_started(i)?;
    }
    for n in &c.rec.nodes {
        println!(
            "  {:<6} {:<15} on {}.0/24  tabby-node log {}",
            n.name,
            n.addr,
            n.segment.subnet(),
            n.log().display()
        );
    }
    for i in 0..nodes {
        for _ in 0..pods_per_node {
            c.add_pod(i)?;
        }
    }
    for p in &c.rec.pods {
        println!(
            "  {:<14} {:<15} on {} (CNI ADD, netns {})",
            p.name, p.ip, c.rec.nodes[p.node].name, p.ns
        );
    }
    let mode = c.rec.mode;
    let t = c.wait_converged(mode, CONVERGE)?;
    let bgp = c.wait_bgp(CONVERGE)?;
    println!("BGP: every session Established ({bgp:.1?} after the pods pinged)");
    let n = c.rec.pods.len();
    println!(
        "connectivity: all {} pod pairs ping ({}), {:.1?} after the pods were made, {:.1?} in all\n",
        n * n.saturating_sub(1),
        mode.label(),
        t,
        start.elapsed()
    );
    Ok(t)
}

/// On failure, the nodes' logs help; on Ctrl-C they do not.
fn explain<T>(c: &Cluster, r: Result<T, Error>) -> Result<T, Error> {
    if let Err(e) = &r
        && !matches!(e, Error::Interrupted)
    {
        eprintln!("tabby-lab: {e}\n{}", c.logs_tail(15));
    }
    r
}

pub fn up(
    state_dir: &Path,
    bin_dir: Option<PathBuf>,
    nodes: usize,
    mode: Mode,
    pods_per_node: usize,
) -> Result<(), Error> {
    let bins = prepare(bin_dir, mode)?;
    let mut c = Cluster::create(state_dir, bins, mode)?;
    let r = build(&mut c, nodes.max(1), pods_per_node.max(1));
    explain(&c, r)?;
    print!("{}", report::full(&c));
    println!(
        "the lab is up; `tabby-lab down{}` removes it",
        state_flag(state_dir)
    );
    c.keep();
    Ok(())
}

fn state_flag(state_dir: &Path) -> String {
    if state_dir == Path::new("/var/run/tabby-lab") {
        String::new()
    } else {
        format!(" --state-dir {}", state_dir.display())
    }
}

pub fn demo(state_dir: &Path, bin_dir: Option<PathBuf>) -> Result<(), Error> {
    let bins = prepare(bin_dir, Mode::None)?;
    let mut c = Cluster::create(state_dir, bins, Mode::None)?;
    let r = build(&mut c, 3, 1);
    explain(&c, r)?;
    print!("{}", report::full(&c));
    let mut times = Vec::new();
    for mode in [Mode::Vxlan, Mode::Crosssubnet, Mode::None] {
        let from = c.rec.mode;
        println!(
            "### switching the pool {} → {}: tabbyctl patch ippool {} -p '{{\"spec\":{{\"ipipMode\":\"{}\",\"vxlanMode\":\"{}\"}}}}'",
            from.label(),
            mode.label(),
            crate::cluster::POOL_NAME,
            mode.pool_modes().0,
            mode.pool_modes().1
        );
        let t0 = Instant::now();
        let r = c.patch_mode(mode);
        explain(&c, r)?;
        let r = c.wait_converged(mode, CONVERGE);
        explain(&c, r)?;
        let t = t0.elapsed();
        let n = c.rec.pods.len();
        println!(
            "connectivity: all {} pod pairs ping ({}); convergence time {:.0?} (from the patch until every route uses the new device and all pairs ping)\n",
            n * (n - 1),
            mode.label(),
            t
        );
        for (a, b) in report::interesting_pairs(&c) {
            println!("{}", report::packet_path(&c, a, b));
        }
        times.push((from, mode, t));
    }
    println!("### convergence times");
    for (from, to, t) in &times {
        println!("  {:<18} → {:<18} {:.0?}", from.label(), to.label(), t);
    }
    println!("### down");
    drop(c);
    println!(
        "removed every namespace, process and {}",
        state_dir.display()
    );
    Ok(())
}

/// A node joins a running lab (on segment b once half the nodes are on a), with one pod;
/// waits until every pod reaches every other. (node index, pod index, time to converge).
pub fn join_node(c: &mut Cluster) -> Result<(usize, usize, Duration), Error> {
    let total = c.rec.nodes.len() + 1;
    let i = c.add_node(total)?;
    c.peer_with_router(i)?;
    c.run_router_bgp()?;
    c.start_node(i)?;
    c.wait_node_started(i)?;
    let p = c.add_pod(i)?;
    let mode = c.rec.mode;
    let t = c.wait_converged(mode, CONVERGE)?;
    Ok((i, p, t))
}

pub fn add_node(state_dir: &Path) -> Result<(), Error> {
    let mut c = Cluster::open(state_dir)?;
    let r = join_node(&mut c);
    let (i, p, t) = explain(&c, r)?;
    let n = &c.rec.nodes[i];
    println!(
        "added {} ({}) with {} ({}); all pod pairs ping after {t:.1?}",
        n.name, n.addr, c.rec.pods[p].name, c.rec.pods[p].ip
    );
    Ok(())
}

pub fn down(state_dir: &Path) -> Result<(), Error> {
    match Record::load(state_dir)? {
        None => {
            println!(
                "no lab recorded in {}: nothing to remove",
                state_dir.display()
            );
            Ok(())
        }
        Some(rec) => {
            rec.teardown();
            println!(
                "removed {} processes, {} namespaces ({}-*) and {}",
                rec.processes.len(),
                rec.namespaces.len(),
                rec.prefix,
                rec.state_dir.display()
            );
            Ok(())
        }
    }
}
