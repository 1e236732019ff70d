//! Whole-system benchmark (issue 4): how fast, how cheaply and in how little memory a
//! receiver takes a full feed, tabby-bgpd against BIRD 2 in the same run; and how fast a
//! 50-speaker tabby-bgpd iBGP full mesh converges on a new block.
//!
//! ```text
//!   BIRD sender 127.0.0.1 AS 65001          receiver 127.0.0.2 AS 65002 (passive)
//!   protocol static: N × 10.x.y.z/32  ──eBGP, packed UPDATEs──▶  (a) BIRD 2, kernel export none
//!   `birdc enable recv` starts the clock                        (b) tabby-bgpd
//! ```
//!
//! The sender is started once with its BGP protocol disabled and loads the N static routes
//! first; then, per run and receiver (BIRD and tabby-bgpd interleaved, 3 runs each, medians
//! printed): start the receiver, `enable` the sender's protocol, poll the receiver's
//! accepted-route count every 10 ms (BIRD: `birdc show protocols all`, tabby: its control
//! socket's status), and note when the session is Established and when the count reaches
//! 99 % and 100 % of N. Load times count from Established: BIRD takes most of a second to
//! start the session, for either receiver. The receiver's CPU time (utime + stime from
//! `/proc/PID/stat`, from just before the enable) and peak RSS (VmHWM from
//! `/proc/PID/status`) are read once it has settled, 1 s after 100 %. Then the sender's
//! protocol is disabled and the time, CPU and peak RSS until the receiver's table is empty
//! are measured too (session down of a full-feed peer). Neither receiver touches the
//! kernel's routes.
//!
//! The sender is asked for its protocol state at every poll: that wakes BIRD's event loop,
//! which otherwise sends its last, partly filled UPDATE up to 3 s late.
//!
//! Everything runs in a network namespace of its own (needs root, `bird2` from Debian).
//!
//! Run: `cargo bench -p bgp --bench receive_vs_bird` (N = 1,000,000; without `--bench`, as
//! under `cargo test --benches`, a smoke run with N = 10,000 and a mesh of 5). Environment:
//! `TABBY_BENCH_N` (routes, default 1000000), `TABBY_BENCH_MESH` (mesh speakers, default 50,
//! 0 to skip), `TABBY_BENCH_RUNS` (runs per receiver, default 3; medians are printed),
//! `TABBY_BENCH_TRACE` (print the count at each poll), `TABBY_BGPD` (the daemon to measure
//! instead of the one Cargo built, e.g. a script that runs it under valgrind).

#[path = "../tests/bgpd/mod.rs"]
mod bgpd;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bgpd::{Bgpd, ProcStats};
use serde_json::Value;

/// Where a BGP session's routes may take no longer than this to load.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(10);
const SETTLE: Duration = Duration::from_secs(1);

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` (or `--all-targets`) runs this
    // binary without it: then a smoke run, small enough for a test suite.
    let full = std::env::args().any(|a| a == "--bench");
    let n: u32 = env_or("TABBY_BENCH_N", if full { 1_000_000 } else { 10_000 });
    let mesh_n: usize = env_or("TABBY_BENCH_MESH", if full { 50 } else { 5 });
    let runs: usize = env_or("TABBY_BENCH_RUNS", if full { 3 } else { 1 }).max(1);
    let bin = bgpd::bgpd_binary(Some(env!("CARGO_BIN_EXE_tabby-bgpd")))
        .expect("the tabby-bgpd binary (or $TABBY_BGPD)");
    let b = bin.clone();
    let (bird, tabby) = bgpd::in_own_netns(move || receive(n, runs, &b));
    print_table(n, &bird, &tabby);
    if mesh_n > 1 {
        let f = bgpd::in_own_netns(move || bgpd::run_mesh(&bin, mesh_n, Duration::from_secs(120)))
            .unwrap_or_else(|e| panic!("mesh: {e}"));
        println!();
        println!(
            "mesh: {} tabby-bgpd speakers, iBGP full mesh on 127.0.1.1-{}",
            f.speakers, f.speakers
        );
        println!(
            "  all {} sessions Established after start:                         {:.3} s",
            f.speakers * (f.speakers - 1) / 2,
            f.sessions_up.as_secs_f64()
        );
        println!(
            "  initial convergence (start to every speaker holding every block): {:.3} s",
            f.initial.as_secs_f64()
        );
        println!(
            "  new block from speaker 1 (SIGHUP) until all {} others have it:    {:.3} s",
            f.speakers - 1,
            f.new_block.as_secs_f64()
        );
        println!(
            "  all speakers' CPU {:.2} s, largest peak RSS {:.1} MB",
            f.cpu.as_secs_f64(),
            f.max_peak_rss_kib as f64 / 1024.0
        );
    }
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// One receiver's figures.
#[derive(Debug, Clone)]
struct Figures {
    name: String,
    /// From the sender's `enable` until its session is Established (not the receiver's
    /// work: BIRD takes most of a second to start the session).
    established: Duration,
    /// From Established until 99 % of the routes are in the receiver's RIB.
    to_99: Duration,
    to_100: Duration,
    /// Receiver CPU from just before the sender was enabled until it settled.
    cpu: Duration,
    /// Of `cpu`, in the kernel.
    sys: Duration,
    /// Receiver CPU when 100 % were in.
    cpu_at_100: Duration,
    peak_rss_kib: u64,
    /// VmRSS once settled after the load.
    rss_kib: u64,
    /// From the sender's `disable` until the receiver's table is empty.
    down: Duration,
    /// Receiver CPU for that (BIRD's includes answering `show route count` every 50 ms).
    down_cpu: Duration,
    /// VmHWM after the withdrawal: the peak over load and withdrawal.
    down_peak_rss_kib: u64,
    runs: usize,
}

impl Figures {
    /// Each figure's median over the runs (the upper one for an even count).
    fn median(runs: &[Figures]) -> Figures {
        fn med<T: Ord + Copy>(runs: &[Figures], f: impl Fn(&Figures) -> T) -> T {
            let mut v: Vec<T> = runs.iter().map(f).collect();
            v.sort();
            v[v.len() / 2]
        }
        Figures {
            name: runs[0].name.clone(),
            established: med(runs, |f| f.established),
            to_99: med(runs, |f| f.to_99),
            to_100: med(runs, |f| f.to_100),
            cpu: med(runs, |f| f.cpu),
            sys: med(runs, |f| f.sys),
            cpu_at_100: med(runs, |f| f.cpu_at_100),
            peak_rss_kib: med(runs, |f| f.peak_rss_kib),
            rss_kib: med(runs, |f| f.rss_kib),
            down: med(runs, |f| f.down),
            down_cpu: med(runs, |f| f.down_cpu),
            down_peak_rss_kib: med(runs, |f| f.down_peak_rss_kib),
            runs: runs.len(),
        }
    }
}

fn print_table(n: u32, bird: &Figures, tabby: &Figures) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "receive benchmark: N = {n} IPv4 /32s, eBGP from a BIRD 2 sender; medians of {} runs",
        bird.runs
    );
    let _ = writeln!(
        out,
        "{:<12} {:>8} {:>10} {:>11} {:>8} {:>6} {:>12} {:>8} {:>13}",
        "receiver",
        "estab s",
        "load 99 %",
        "load 100 %",
        "CPU s",
        "sys s",
        "CPU@100 % s",
        "RSS MB",
        "RSS B/prefix"
    );
    for f in [bird, tabby] {
        let _ = writeln!(
            out,
            "{:<12} {:>8.3} {:>10.3} {:>11.3} {:>8.3} {:>6.2} {:>12.3} {:>8.1} {:>13.1}",
            f.name,
            f.established.as_secs_f64(),
            f.to_99.as_secs_f64(),
            f.to_100.as_secs_f64(),
            f.cpu.as_secs_f64(),
            f.sys.as_secs_f64(),
            f.cpu_at_100.as_secs_f64(),
            f.peak_rss_kib as f64 / 1024.0,
            f.peak_rss_kib as f64 * 1024.0 / f64::from(n)
        );
    }
    {
        let t = tabby;
        let r = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        let _ = writeln!(
            out,
            "{:<12} {:>8} {:>10.2} {:>11.2} {:>8.2} {:>6} {:>12.2} {:>8.2}",
            "tabby/BIRD",
            "",
            r(t.to_99.as_secs_f64(), bird.to_99.as_secs_f64()),
            r(t.to_100.as_secs_f64(), bird.to_100.as_secs_f64()),
            r(t.cpu.as_secs_f64(), bird.cpu.as_secs_f64()),
            "",
            r(t.cpu_at_100.as_secs_f64(), bird.cpu_at_100.as_secs_f64()),
            r(t.peak_rss_kib as f64, bird.peak_rss_kib as f64),
        );
        let _ = writeln!(
            out,
            "target: tabby/BIRD CPU < 1 ({}), RSS <= 1 ({})",
            if t.cpu < bird.cpu { "met" } else { "missed" },
            if t.peak_rss_kib <= bird.peak_rss_kib {
                "met"
            } else {
                "missed"
            }
        );
    }
    let _ = writeln!(
        out,
        "\nsession down (sender disabled) until the receiver's table is empty:"
    );
    let _ = writeln!(
        out,
        "{:<12} {:>10} {:>8} {:>16} {:>22}",
        "receiver", "withdraw s", "CPU s", "RSS after load MB", "peak RSS load+down MB"
    );
    for f in [bird, tabby] {
        let _ = writeln!(
            out,
            "{:<12} {:>10.3} {:>8.3} {:>16.1} {:>22.1}",
            f.name,
            f.down.as_secs_f64(),
            f.down_cpu.as_secs_f64(),
            f.rss_kib as f64 / 1024.0,
            f.down_peak_rss_kib as f64 / 1024.0
        );
    }
    print!("{out}");
}

/// Runs both receivers, one after the other, against one sender; `bin` is tabby-bgpd.
fn receive(n: u32, runs: usize, bin: &Path) -> (Figures, Figures) {
    let t = Instant::now();
    let sender = Bird::start("sender", &sender_config(n), LOAD_TIMEOUT);
    let loaded = poll_until(LOAD_TIMEOUT, || {
        (bird_imported(&sender.birdc("show protocols all feed"))? >= u64::from(n)).then_some(())
    });
    assert!(
        loaded.is_some(),
        "sender did not load its routes: {}",
        sender.output()
    );
    eprintln!(
        "sender: {n} static routes loaded in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let (mut birds, mut tabbies) = (Vec::new(), Vec::new());
    // Interleaved, so that drift on a shared machine hits both receivers alike.
    for _ in 0..runs {
        let bird = {
            let r = Bird::start("receiver", RECEIVER_BIRD, Duration::from_secs(10));
            measure(
                "BIRD 2",
                n,
                &sender,
                r.pid(),
                || bird_imported(&r.birdc("show protocols all send")),
                || bird_route_count(&r.birdc("show route count")),
            )
        };
        eprintln!("{bird:?}");
        birds.push(bird);
        let tabby = {
            let r = Bgpd::start(bin, "receiver", &receiver_tabby_config());
            measure(
                "tabby-bgpd",
                n,
                &sender,
                r.pid(),
                || tabby_accepted(&r.status()?),
                || r.status()?.get("status")?.get("routes")?.as_u64(),
            )
        };
        eprintln!("{tabby:?}");
        tabbies.push(tabby);
    }
    (Figures::median(&birds), Figures::median(&tabbies))
}

/// Enables the sender's session to a freshly started receiver and measures the receiver.
fn measure(
    name: &str,
    n: u32,
    sender: &Bird,
    pid: u32,
    mut count: impl FnMut() -> Option<u64>,
    mut in_table: impl FnMut() -> Option<u64>,
) -> Figures {
    let n = u64::from(n);
    let before = ProcStats::of(pid).expect("receiver running");
    let t0 = Instant::now();
    sender.birdc("enable recv");
    let mut established = None;
    let mut to_99 = None;
    let mut last = 0;
    let to_100 = loop {
        // Asking the sender something every round also wakes its event loop, which otherwise
        // sits on its last, partly filled UPDATE for up to 3 s.
        let s = sender.birdc("show protocols recv");
        let c = count().unwrap_or(0);
        last = c.max(last);
        let t = t0.elapsed();
        if established.is_none() && (s.contains("Established") || c > 0) {
            established = Some(t);
        }
        if std::env::var_os("TABBY_BENCH_TRACE").is_some() {
            eprintln!("{:.3} {c}", t.as_secs_f64());
        }
        if to_99.is_none() && c * 100 >= n * 99 {
            to_99 = Some(t);
        }
        if c >= n {
            break t;
        }
        assert!(
            t < LOAD_TIMEOUT,
            "{name} received only {last} of {n} routes in {LOAD_TIMEOUT:?}; sender: {}",
            sender.birdc("show protocols all recv")
        );
        std::thread::sleep(POLL);
    };
    let established = established.unwrap_or_default();
    let at_100 = ProcStats::of(pid).expect("receiver running");
    std::thread::sleep(SETTLE);
    let settled = ProcStats::of(pid).expect("receiver running");

    // Session down: the receiver withdraws all N routes.
    let t1 = Instant::now();
    sender.birdc("disable recv");
    let gone = poll_until(LOAD_TIMEOUT, || (in_table()? == 0).then_some(()));
    assert!(
        gone.is_some(),
        "{name} kept routes after the session went down"
    );
    let down = t1.elapsed();
    std::thread::sleep(SETTLE);
    let after_down = ProcStats::of(pid).expect("receiver running");
    Figures {
        down,
        down_cpu: after_down.cpu.saturating_sub(settled.cpu),
        down_peak_rss_kib: after_down.peak_rss_kib.max(settled.peak_rss_kib),
        rss_kib: settled.rss_kib,
        name: name.to_string(),
        to_99: to_99.unwrap_or(to_100).saturating_sub(established),
        to_100: to_100.saturating_sub(established),
        established,
        cpu: settled.cpu.saturating_sub(before.cpu),
        sys: settled.sys.saturating_sub(before.sys),
        runs: 1,
        cpu_at_100: at_100.cpu.saturating_sub(before.cpu),
        peak_rss_kib: settled.peak_rss_kib,
    }
}

fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sender: N /32s from 10.0.0.0 up (198.18.0.0/15 holds only 131,072 of them), all with
/// the same attributes so that BIRD packs them into full UPDATEs; its session starts
/// disabled.
fn sender_config(n: u32) -> String {
    let mut c = String::with_capacity(40 * n as usize + 1024);
    c.push_str("router id 127.0.0.1;\nprotocol device {}\nprotocol static feed {\n  ipv4;\n");
    let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
    for i in 0..n {
        let _ = writeln!(c, "  route {}/32 blackhole;", Ipv4Addr::from(base + i));
    }
    c.push_str(
        "}\nprotocol bgp recv {\n  local 127.0.0.1 as 65001;\n  neighbor 127.0.0.2 as 65002;\n  strict bind yes;\n  multihop;\n  connect delay time 0;\n  connect retry time 1;\n  disabled;\n  ipv4 { import none; export all; };\n}\n",
    );
    c
}

/// BIRD as receiver: everything imported into its table, nothing to the kernel.
const RECEIVER_BIRD: &str = "router id 127.0.0.2;
protocol device {}
protocol kernel { ipv4 { export none; }; }
protocol bgp send {
  local 127.0.0.2 as 65002;
  neighbor 127.0.0.1 as 65001;
  strict bind yes;
  multihop;
  passive on;
  ipv4 { import all; export none; };
}
";

/// tabby-bgpd as receiver: the same session; `import_all` since the feed is outside the
/// pool (a route reflector outside the cluster takes full feeds this way).
fn receiver_tabby_config() -> String {
    "asn: 65002
router_id: 127.0.0.2
listen: [\"127.0.0.2:179\"]
pools: [\"198.18.0.0/15\"]
peers:
  - address: 127.0.0.1
    asn: 65001
    passive: true
    import_all: true
"
    .to_string()
}

/// The imported count on BIRD's `Routes:` line of `show protocols all`.
fn bird_imported(out: &str) -> Option<u64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Routes:"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
}

/// The route count of `show route count` ("N of N routes for N networks in table master4").
fn bird_route_count(out: &str) -> Option<u64> {
    out.lines()
        .find(|l| l.contains("routes for"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
}

/// The largest `accepted` (else `received`) prefix count anywhere in tabby-bgpd's status
/// (`status.peers[].accepted`; searched for, so that added fields do not break the bench).
fn tabby_accepted(status: &Value) -> Option<u64> {
    fn find(v: &Value, key: &str, best: &mut Option<u64>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    if let Some(c) = x.as_u64().filter(|_| k.contains(key)) {
                        *best = Some(best.map_or(c, |b| b.max(c)));
                    }
                    find(x, key, best);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| find(x, key, best)),
            _ => {}
        }
    }
    let mut best = None;
    find(status, "accepted", &mut best);
    if best.is_none() {
        find(status, "received", &mut best);
    }
    best
}

/// A BIRD 2 daemon in the foreground with its control socket in a temp dir.
struct Bird {
    child: Child,
    dir: tempfile::TempDir,
}

impl Bird {
    fn start(name: &str, config: &str, timeout: Duration) -> Bird {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("bird.conf");
        std::fs::write(&conf, config).expect("writing bird.conf");
        let mut cmd = Command::new("bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(dir.path().join("bird.ctl"))
            .current_dir(dir.path());
        let child = bgpd::spawn_with_pdeathsig(&mut cmd, &dir.path().join("bird.out"));
        let bird = Bird { child, dir };
        let up = poll_until(timeout, || {
            bird.birdc("show status")
                .contains("Daemon is up")
                .then_some(())
        });
        assert!(up.is_some(), "bird {name} did not start: {}", bird.output());
        bird
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ctl(&self) -> PathBuf {
        self.dir.path().join("bird.ctl")
    }

    fn birdc(&self, args: &str) -> String {
        Command::new("birdc")
            .arg("-s")
            .arg(self.ctl())
            .args(args.split_whitespace())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bird.out")).unwrap_or_default()
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
