//! `tabby-bgpd` processes for the mesh test (`tests/mesh.rs`) and the receive benchmark
//! (`benches/receive_vs_bird.rs`, which includes this file with `#[path]`): starting a daemon
//! from a YAML config, asking its control socket, reloading its config, reading its CPU time
//! and peak memory from `/proc`, and the 50-speaker iBGP full mesh.
//!
//! Daemons are killed in `Drop` (also when a test panics) and get `PR_SET_PDEATHSIG`, so they
//! die with the thread that started them even if the test process is killed; configs, logs
//! and control sockets live in a `tempfile::TempDir` removed on drop. Callers run inside their
//! own network namespace (`daemons::in_netns`), so the 127.0.1.x addresses and port 179 are
//! theirs alone.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `tabby-bgpd` binary: `$TABBY_BGPD` if set, else the one Cargo built for this test or
/// bench (`CARGO_BIN_EXE_tabby-bgpd`, passed in by the including crate root), else `None`.
pub fn bgpd_binary(built: Option<&str>) -> Option<PathBuf> {
    std::env::var_os("TABBY_BGPD")
        .map(PathBuf::from)
        .or_else(|| built.map(PathBuf::from))
        .filter(|p| p.exists())
}

/// Spawns `cmd` with stdout and stderr to `log`, killed when the spawning thread ends.
pub fn spawn_with_pdeathsig(cmd: &mut Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("daemon log");
    let err = out.try_clone().expect("daemon log");
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

/// CPU time and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// utime + stime of all its threads.
    pub cpu: Duration,
    /// stime alone: the kernel's share of `cpu` (socket reads, futex wake-ups).
    pub sys: Duration,
    /// Peak resident set size (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// Current resident set size (VmRSS), KiB.
    pub rss_kib: u64,
}

impl ProcStats {
    /// Reads `/proc/PID/stat` and `/proc/PID/status`; `None` once the process is gone.
    pub fn of(pid: u32) -> Option<ProcStats> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        // proc(5): utime is field 14 and stime field 15; `fields[0]` is field 3 (state).
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Some(ProcStats {
            cpu: Duration::from_micros((utime + stime) * 1_000_000 / hz),
            sys: Duration::from_micros(stime * 1_000_000 / hz),
            peak_rss_kib: kib("VmHWM:"),
            rss_kib: kib("VmRSS:"),
        })
    }
}

/// One `tabby-bgpd --config FILE --socket PATH` process.
pub struct Bgpd {
    child: Child,
    dir: tempfile::TempDir,
    pub name: String,
}

impl Bgpd {
    /// Starts the daemon with this config and waits (up to 10 s) for its control socket.
    pub fn start(bin: &Path, name: &str, yaml: &str) -> Bgpd {
        Bgpd::start_with_env(bin, name, yaml, &[])
    }

    /// [`Bgpd::start`] with extra environment variables.
    pub fn start_with_env(bin: &Path, name: &str, yaml: &str, env: &[(&str, &str)]) -> Bgpd {
        let d = Bgpd::spawn_with_env(bin, name, yaml, env);
        let up = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            d.try_request(r#"{"command":"status"}"#).is_some()
        });
        assert!(up, "tabby-bgpd {name} did not start: {}", d.output());
        d
    }

    /// Starts the daemon without waiting for it.
    pub fn spawn(bin: &Path, name: &str, yaml: &str) -> Bgpd {
        Bgpd::spawn_with_env(bin, name, yaml, &[])
    }

    fn spawn_with_env(bin: &Path, name: &str, yaml: &str, env: &[(&str, &str)]) -> Bgpd {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("bgpd.yaml"), yaml).expect("writing bgpd.yaml");
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(dir.path().join("bgpd.yaml"))
            .arg("--socket")
            .arg(dir.path().join("bgp.sock"))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("info".into()),
            )
            .envs(env.iter().copied())
            .current_dir(dir.path());
        let child = spawn_with_pdeathsig(&mut cmd, &dir.path().join("bgpd.log"));
        Bgpd {
            child,
            dir,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("bgp.sock")
    }

    /// Sends one JSON request on the control socket and reads one JSON reply.
    pub fn try_request(&self, request: &str) -> Option<Value> {
        let mut s = UnixStream::connect(self.socket()).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        s.write_all(request.as_bytes()).ok()?;
        s.write_all(b"\n").ok()?;
        let mut r = BufReader::new(s);
        let mut text = String::new();
        // One reply per line; a server that closes after its reply ends it with EOF instead.
        loop {
            let n = r.read_line(&mut text).ok()?;
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                return Some(v);
            }
            if n == 0 {
                return None;
            }
        }
    }

    /// `{"command":"status"}`.
    pub fn status(&self) -> Option<Value> {
        self.try_request(r#"{"command":"status"}"#)
    }

    /// `{"command":"routes"}`.
    pub fn routes(&self) -> Option<Value> {
        self.try_request(r#"{"command":"routes"}"#)
    }

    /// Replaces the config file and tells the daemon to read it again (SIGHUP).
    pub fn reload(&self, yaml: &str) {
        let tmp = self.dir.path().join("bgpd.yaml.new");
        std::fs::write(&tmp, yaml).expect("writing bgpd.yaml");
        std::fs::rename(&tmp, self.dir.path().join("bgpd.yaml")).expect("replacing bgpd.yaml");
        // SAFETY: kill has no memory-safety preconditions; the pid is our live child.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(rc, 0, "SIGHUP to tabby-bgpd {}", self.name);
    }

    /// Sends SIGTERM (if the process is still ours to signal).
    pub fn terminate(&mut self) {
        if self.alive() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        }
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the daemon logged.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bgpd.log")).unwrap_or_default()
    }

    pub fn stats(&self) -> Option<ProcStats> {
        ProcStats::of(self.pid())
    }
}

impl Drop for Bgpd {
    /// SIGTERM first (tabby-bgpd closes its sessions and exits; a profiler wrapping it gets
    /// to write its output), SIGKILL after 10 s.
    fn drop(&mut self) {
        self.terminate();
        let end = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every string in a JSON document (keys excluded), for format-agnostic lookups such as
/// "does this routes listing hold 198.18.0.64/26".
pub fn json_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| json_strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| json_strings(x, out)),
        _ => {}
    }
}

/// Runs `f` on a fresh thread inside a new network namespace with `lo` up (as
/// `daemons::in_netns` does for the interop tests, but without a runtime: the daemons are
/// other processes, and they inherit the thread's namespace). Needs root.
pub fn in_own_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let t = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespace membership.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) (needs root): {}",
            std::io::Error::last_os_error()
        );
        let ok = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip link set lo up");
        f()
    });
    t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// The loopback address of mesh speaker `i` (1-based): 127.0.1.i.
pub fn mesh_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, u8::try_from(i).expect("at most 254 speakers"))
}

/// The /26 block speaker `i` originates: the i-th /26 of 198.18.0.0/15 (Calico's default
/// block size), numbered from 198.18.0.0 for speaker 1.
pub fn mesh_block(i: usize) -> String {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    format!("{}/26", Ipv4Addr::from(base + 64 * (i as u32 - 1)))
}

/// The block speaker 1 adds after the mesh has converged: outside every speaker's own block.
pub fn mesh_new_block() -> String {
    "198.19.255.192/26".to_string()
}

/// tabby-bgpd's config for speaker `i` of an `n`-speaker iBGP full mesh in AS 64512 (Calico's
/// default ASN), originating `originate`.
pub fn mesh_config(i: usize, n: usize, originate: &[String]) -> String {
    let me = mesh_addr(i);
    let mut y = format!(
        "asn: 64512\nrouter_id: {me}\nlisten: [\"{me}:179\"]\npools: [\"198.18.0.0/15\"]\noriginate: [{}]\npeers:\n",
        originate
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for j in (1..=n).filter(|&j| j != i) {
        y.push_str(&format!(
            "  - address: {}\n    asn: 64512\n    source_address: {me}\n    connect_retry: 1\n",
            mesh_addr(j)
        ));
    }
    y
}

/// A running mesh of tabby-bgpd speakers.
pub struct Mesh {
    pub speakers: Vec<Bgpd>,
}

impl Drop for Mesh {
    /// Stops all speakers at once rather than one after the other.
    fn drop(&mut self) {
        self.speakers.iter_mut().for_each(Bgpd::terminate);
    }
}

/// What a mesh run measured.
#[derive(Debug, Clone, Copy)]
pub struct MeshFigures {
    pub speakers: usize,
    /// From starting the first process until every session is Established.
    pub sessions_up: Duration,
    /// From starting the first process until every speaker has every other's block.
    pub initial: Duration,
    /// From speaker 1's config reload until every other speaker has the new block.
    pub new_block: Duration,
    /// Summed CPU time of all speakers at the end.
    pub cpu: Duration,
    /// Largest peak RSS of one speaker, KiB.
    pub max_peak_rss_kib: u64,
}

impl Mesh {
    /// Starts `n` speakers on 127.0.1.1–127.0.1.n (inside the caller's namespace).
    pub fn start(bin: &Path, n: usize) -> Mesh {
        let speakers: Vec<Bgpd> = (1..=n)
            .map(|i| Bgpd::spawn(bin, &format!("s{i}"), &mesh_config(i, n, &[mesh_block(i)])))
            .collect();
        Mesh { speakers }
    }

    /// The prefixes in speaker `i`'s (0-based) control-socket routes, or `None` if it did
    /// not answer.
    pub fn routes_of(&self, i: usize) -> Option<Vec<String>> {
        let v = self.speakers[i].routes()?;
        let mut s = Vec::new();
        json_strings(&v, &mut s);
        Some(s)
    }

    /// Next hops per prefix in speaker `i`'s (0-based) `routes`
    /// (`{"routes":[{"prefix":…,"next_hops":[…]}]}`).
    pub fn next_hops_of(&self, i: usize) -> Option<HashMap<String, Vec<String>>> {
        let v = self.speakers[i].routes()?;
        let routes = v.get("routes")?.as_array()?;
        Some(
            routes
                .iter()
                .filter_map(|r| {
                    let prefix = r.get("prefix")?.as_str()?.to_string();
                    let mut nh = Vec::new();
                    json_strings(r.get("next_hops")?, &mut nh);
                    Some((prefix, nh))
                })
                .collect(),
        )
    }

    /// How many of speaker `i`'s (0-based) peers are Established, from its status.
    pub fn established_of(&self, i: usize) -> Option<usize> {
        let v = self.speakers[i].status()?;
        let peers = v.get("status")?.get("peers")?.as_array()?;
        Some(
            peers
                .iter()
                .filter(|p| p.get("state").and_then(Value::as_str) == Some("Established"))
                .count(),
        )
    }

    /// Polls until every speaker has all its peers Established (or `timeout` after `start`);
    /// returns the time since `start`.
    pub fn wait_established(
        &mut self,
        start: Instant,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let n = self.speakers.len();
        let mut pending: Vec<usize> = (0..n).collect();
        loop {
            pending.retain(|&i| self.established_of(i) != Some(n - 1));
            if pending.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                let first = pending[0];
                return Err(format!(
                    "after {timeout:?}, {} speakers still have sessions down; {}: {}; its log:\n{}",
                    pending.len(),
                    self.speakers[first].name,
                    self.speakers[first]
                        .status()
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                    tail(&self.speakers[first].output(), 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls every speaker in `which` until each has all `prefixes` (or `timeout` after
    /// `start`); returns the time since `start`, or a description of who was missing what.
    pub fn wait_for(
        &mut self,
        start: Instant,
        which: &[usize],
        prefixes: impl Fn(usize) -> Vec<String>,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let mut pending: Vec<usize> = which.to_vec();
        loop {
            pending.retain(|&i| {
                let Some(have) = self.routes_of(i) else {
                    return true;
                };
                !prefixes(i).iter().all(|p| have.contains(p))
            });
            if pending.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                let first = pending[0];
                let have = self.routes_of(first);
                let missing: Vec<String> = prefixes(first)
                    .into_iter()
                    .filter(|p| have.as_ref().is_none_or(|h| !h.contains(p)))
                    .collect();
                let dead: Vec<String> = self
                    .speakers
                    .iter_mut()
                    .filter_map(|s| (!s.alive()).then(|| s.name.clone()))
                    .collect();
                return Err(format!(
                    "after {timeout:?}, {} speakers lack routes (dead: {dead:?}); {} misses {} of them, e.g. {:?}; its status: {}; its log:\n{}",
                    pending.len(),
                    self.speakers[first].name,
                    missing.len(),
                    missing.iter().take(5).collect::<Vec<_>>(),
                    self.speakers[first]
                        .status()
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                    tail(&self.speakers[first].output(), 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs the whole mesh measurement: `n` speakers, each learns every other's block, then
/// speaker 1 originates [`mesh_new_block`] by a config reload and every other speaker must
/// learn it. Errors say which speaker missed what.
pub fn run_mesh(bin: &Path, n: usize, timeout: Duration) -> Result<MeshFigures, String> {
    let t0 = Instant::now();
    let mut mesh = Mesh::start(bin, n);
    let all: Vec<usize> = (0..n).collect();
    let others =
        |i: usize| -> Vec<String> { (1..=n).filter(|&j| j != i + 1).map(mesh_block).collect() };
    let sessions_up = mesh.wait_established(t0, timeout)?;
    let initial = mesh.wait_for(t0, &all, others, timeout)?;
    // iBGP without reflection: each block is learned straight from its originator, whose
    // address is the next hop (RFC 4271 §5.1.3: unchanged towards iBGP peers).
    for i in 0..n {
        let nh = mesh
            .next_hops_of(i)
            .ok_or_else(|| format!("s{}: no routes answer", i + 1))?;
        for j in (1..=n).filter(|&j| j != i + 1) {
            let want = vec![mesh_addr(j).to_string()];
            if nh.get(&mesh_block(j)) != Some(&want) {
                return Err(format!(
                    "s{}: {} has next hops {:?}, want {want:?}",
                    i + 1,
                    mesh_block(j),
                    nh.get(&mesh_block(j))
                ));
            }
        }
    }

    let t1 = Instant::now();
    mesh.speakers[0].reload(&mesh_config(1, n, &[mesh_block(1), mesh_new_block()]));
    let rest: Vec<usize> = (1..n).collect();
    let new_block = mesh.wait_for(t1, &rest, |_| vec![mesh_new_block()], timeout)?;

    let stats: Vec<ProcStats> = mesh.speakers.iter().filter_map(|s| s.stats()).collect();
    Ok(MeshFigures {
        speakers: n,
        sessions_up,
        initial,
        new_block,
        cpu: stats.iter().map(|s| s.cpu).sum(),
        max_peak_rss_kib: stats.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0),
    })
}
