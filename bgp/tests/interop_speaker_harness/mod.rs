//! `tabby-bgpd` as a child process of a test: config, control socket and log in a directory
//! the test owns; killed (SIGKILL) on drop, also when the test panics, and with
//! `PR_SET_PDEATHSIG` when the test thread dies.
#![allow(dead_code)]

use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bgp::control::{self, Request, Response};
use bgp::speaker::{PeerStatus, Route, StatusReport};

pub const SECS: Duration = Duration::from_secs(20);

/// A `tabby-bgpd` process with its config, socket and log in `dir` (owned by the test, so
/// a restarted daemon finds its restart marker).
pub struct Bgpd {
    child: Option<Child>,
    dir: PathBuf,
}

impl Bgpd {
    pub fn start(dir: &Path, yaml: &str) -> Bgpd {
        Self::start_with(dir, yaml, &[])
    }

    /// [`Bgpd::start`] with more command-line arguments.
    pub fn start_with(dir: &Path, yaml: &str, args: &[&str]) -> Bgpd {
        std::fs::write(dir.join("bgpd.yaml"), yaml).expect("writing the config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("bgpd.log"))
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tabby-bgpd"));
        cmd.arg("--config")
            .arg(dir.join("bgpd.yaml"))
            .arg("--socket")
            .arg(dir.join("bgp.sock"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("starting tabby-bgpd");
        let b = Bgpd {
            child: Some(child),
            dir: dir.to_path_buf(),
        };
        let up = std::iter::repeat_with(|| {
            std::thread::sleep(Duration::from_millis(100));
            b.socket().exists()
        })
        .take(100)
        .any(|x| x);
        assert!(up, "tabby-bgpd did not start: {}", b.output());
        b
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("bgp.sock")
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("bgpd.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }

    /// Rewrites the config and sends SIGHUP.
    pub fn reload(&self, yaml: &str) {
        std::fs::write(self.dir.join("bgpd.yaml"), yaml).expect("writing the config");
        self.signal(libc::SIGHUP);
    }

    /// kill -9, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut c = self.child.take().expect("running");
        for _ in 0..100 {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        panic!("tabby-bgpd did not exit on SIGTERM: {}", self.output());
    }

    pub async fn status(&self) -> StatusReport {
        match control::request(&self.socket(), &Request::Status).await {
            Ok(Response::Status(s)) => s,
            other => panic!("status: {other:?}"),
        }
    }

    pub async fn routes(&self) -> Vec<Route> {
        match control::request(&self.socket(), &Request::Routes).await {
            Ok(Response::Routes(r)) => r,
            other => panic!("routes: {other:?}"),
        }
    }

    pub async fn find_peer(&self, addr: &str) -> Option<PeerStatus> {
        let a: IpAddr = addr.parse().unwrap();
        self.status()
            .await
            .peers
            .into_iter()
            .find(|p| p.address == a)
    }

    pub async fn peer(&self, addr: &str) -> PeerStatus {
        self.find_peer(addr)
            .await
            .unwrap_or_else(|| panic!("no peer {addr}"))
    }

    /// Waits until the session with `addr` is configured and Established.
    pub async fn wait_established(&self, addr: &str) -> PeerStatus {
        let end = tokio::time::Instant::now() + SECS;
        loop {
            let p = self.find_peer(addr).await;
            if let Some(p) = p.as_ref().filter(|p| p.state == "Established") {
                return p.clone();
            }
            assert!(
                tokio::time::Instant::now() < end,
                "session with {addr} not Established: {p:?}\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the Loc-RIB has `prefix` (with a route satisfying `pred`).
    pub async fn learns(&self, prefix: &str, pred: impl Fn(&Route) -> bool) -> Route {
        let p: ipnet::IpNet = prefix.parse().unwrap();
        let end = tokio::time::Instant::now() + SECS;
        loop {
            if let Some(r) = self
                .routes()
                .await
                .into_iter()
                .find(|r| r.prefix == p && pred(r))
            {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "tabby-bgpd did not learn {prefix}: {:?}\n{}",
                self.routes().await,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Bgpd {
    fn drop(&mut self) {
        self.kill9();
    }
}
