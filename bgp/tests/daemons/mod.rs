//! Harness for the session interop tests: a private network namespace per test, BIRD 2 and
//! GoBGP daemons started inside it, and a raw BGP peer built on a plain `TcpStream`.
//!
//! Needs root (to create the namespace) and Debian's `bird2` and `gobgpd` packages.
//!
//! Every test runs on its own thread that first `unshare(CLONE_NEWNET)`s: the test's sockets,
//! the daemons it starts (children inherit the thread's namespace) and their addresses all live
//! in a namespace that disappears with them, so tests can use the standard port 179 and
//! 127.0.0.x / 2001:db8::x addresses in parallel without meeting each other or the root
//! namespace. Daemons are killed in `Drop` (also when a test panics), and get
//! `PR_SET_PDEATHSIG` so they die even if the test process is killed; their config and log
//! files live in a `tempfile::TempDir` removed on drop.
#![allow(dead_code)]

use std::future::Future;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bgp::config::Config;
use bgp::packet::{DecodeContext, EncodeContext, Message, Open, frame_len};
use bgp::session::{SessionEvent, SessionEventKind};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Runs `test` on a fresh thread inside a new network namespace with `lo` up and the
/// addresses `v6` (2001:db8::/32) added to `lo`, on a current-thread tokio runtime.
pub fn in_netns<F, Fut>(v6: &[&str], test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let v6: Vec<String> = v6.iter().map(|s| s.to_string()).collect();
    let t = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespace membership.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) (the interop tests need root): {}",
            std::io::Error::last_os_error()
        );
        run(&["ip", "link", "set", "lo", "up"]);
        for a in &v6 {
            run(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{a}/128"),
                "dev",
                "lo",
                "nodad",
            ]);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(test());
    });
    if let Err(panic) = t.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs a command to completion; panics with its output if it fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Spawns a daemon that is killed when the spawning thread (the test) ends.
fn spawn_daemon(cmd: &mut Command, log: &std::path::Path) -> Child {
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

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `f` every 200 ms until it returns Some or `timeout` passes.
pub async fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A BIRD 2 daemon in the foreground, with its control socket in a temp dir.
pub struct Bird {
    child: Child,
    dir: tempfile::TempDir,
}

impl Bird {
    /// Starts `bird` with this config (`log` and `router id` lines are the caller's).
    pub fn start(config: &str) -> Bird {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("bird.conf");
        std::fs::write(&conf, config).expect("writing bird.conf");
        let ctl = dir.path().join("bird.ctl");
        let mut cmd = Command::new("bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&ctl)
            .current_dir(dir.path());
        let child = spawn_daemon(&mut cmd, &dir.path().join("bird.out"));
        let bird = Bird { child, dir };
        let started = std::iter::repeat_with(|| {
            std::thread::sleep(Duration::from_millis(100));
            ctl.exists()
        })
        .take(50)
        .any(|x| x);
        assert!(started, "bird did not start: {}", bird.output());
        bird
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// `birdc` with these arguments.
    pub fn birdc(&self, args: &str) -> String {
        let ctl = self.dir.path().join("bird.ctl");
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&ctl)
            .args(args.split_whitespace())
            .output()
            .expect("running birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether protocol `name` is Established.
    pub fn established(&self, name: &str) -> bool {
        self.birdc(&format!("show protocols {name}"))
            .contains("Established")
    }

    /// What bird printed (and its log file, if the config logs to "bird.log").
    pub fn output(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("bird.out"), read("bird.log"))
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A GoBGP daemon, its gRPC API on 127.0.0.1:50051 of the test's namespace.
pub struct Gobgp {
    child: Child,
    dir: tempfile::TempDir,
}

impl Gobgp {
    pub fn start(toml: &str) -> Gobgp {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("gobgpd.toml");
        std::fs::write(&conf, toml).expect("writing gobgpd.toml");
        let mut cmd = Command::new("gobgpd");
        cmd.arg("-f")
            .arg(&conf)
            .args(["--api-hosts", "127.0.0.1:50051", "--pprof-disable", "-p"])
            .current_dir(dir.path());
        let child = spawn_daemon(&mut cmd, &dir.path().join("gobgpd.out"));
        let g = Gobgp { child, dir };
        let up = std::iter::repeat_with(|| {
            std::thread::sleep(Duration::from_millis(200));
            g.try_cli("global").is_some()
        })
        .take(50)
        .any(|x| x);
        assert!(up, "gobgpd did not start: {}", g.output());
        g
    }

    fn try_cli(&self, args: &str) -> Option<String> {
        let out = Command::new("gobgp")
            .args(["-u", "127.0.0.1", "-p", "50051"])
            .args(args.split_whitespace())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `gobgp` with these arguments; panics if it fails.
    pub fn cli(&self, args: &str) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("gobgp {args} failed; gobgpd said: {}", self.output()))
    }

    /// Whether the neighbor is Established.
    pub fn established(&self, neighbor: &str) -> bool {
        self.try_cli(&format!("neighbor {neighbor}"))
            .is_some_and(|o| o.to_lowercase().contains("bgp state = established"))
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gobgpd.out")).unwrap_or_default()
    }
}

impl Drop for Gobgp {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// tabby-bgpd's config from YAML (the test's `local` and `peers`).
pub fn config(yaml: &str) -> Config {
    Config::from_yaml(yaml).unwrap_or_else(|e| panic!("test config: {e}"))
}

/// The next session event, or a panic after `timeout`.
pub async fn next_event(rx: &mut mpsc::Receiver<SessionEvent>, timeout: Duration) -> SessionEvent {
    tokio::time::timeout(timeout, rx.recv())
        .await
        .expect("timed out waiting for a session event")
        .expect("session event channel closed")
}

/// Waits for the Established event, skipping nothing else: panics on any other event first.
pub async fn expect_established(
    rx: &mut mpsc::Receiver<SessionEvent>,
    timeout: Duration,
) -> bgp::session::Established {
    match next_event(rx, timeout).await.kind {
        SessionEventKind::Established(e) => *e,
        other => panic!("expected Established, got {other:?}"),
    }
}

/// Waits for an UPDATE event satisfying `pred`, skipping other UPDATEs (End-of-RIB etc.).
pub async fn expect_update(
    rx: &mut mpsc::Receiver<SessionEvent>,
    timeout: Duration,
    mut pred: impl FnMut(&bgp::packet::Update) -> bool,
) -> bgp::packet::Update {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        match next_event(rx, left).await.kind {
            SessionEventKind::Update(u) if pred(&u) => return u,
            SessionEventKind::Update(_) => {}
            other => panic!("expected an UPDATE, got {other:?}"),
        }
    }
}

/// A BGP peer written by hand on a plain TcpStream, for what no daemon will send.
pub struct RawPeer {
    pub stream: TcpStream,
    buf: BytesMut,
    pub ctx: DecodeContext,
}

impl RawPeer {
    pub fn new(stream: TcpStream) -> Self {
        RawPeer {
            stream,
            buf: BytesMut::new(),
            ctx: DecodeContext::default(),
        }
    }

    /// Connects from `local` (port chosen by the kernel) to `to`.
    pub async fn connect(local: IpAddr, to: std::net::SocketAddr) -> Self {
        let sock = if local.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .unwrap();
        sock.bind(std::net::SocketAddr::new(local, 0)).unwrap();
        RawPeer::new(sock.connect(to).await.expect("raw peer connect"))
    }

    pub async fn send(&mut self, m: &Message) {
        let b = m.encode(&EncodeContext::from(&self.ctx));
        self.send_raw(&b).await;
    }

    pub async fn send_raw(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.expect("raw peer write");
    }

    /// The next message, `None` on EOF; panics after `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Message> {
        tokio::time::timeout(timeout, async {
            loop {
                if let Some(n) = frame_len(&self.buf, &self.ctx).expect("framing") {
                    let frame = self.buf.split_to(n);
                    return Some(Message::decode(&frame, &self.ctx).expect("decoding"));
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("timed out waiting for a message from tabby")
    }

    /// The next message that is not a KEEPALIVE.
    pub async fn recv_non_keepalive(&mut self, timeout: Duration) -> Option<Message> {
        loop {
            match self.recv(timeout).await {
                Some(Message::Keepalive) => {}
                other => return other,
            }
        }
    }

    /// OPEN / KEEPALIVE exchange from this side; returns tabby's OPEN.
    pub async fn handshake(&mut self, open: Open) -> Open {
        self.send(&Message::Open(open.clone())).await;
        let Some(Message::Open(theirs)) = self.recv(Duration::from_secs(10)).await else {
            panic!("expected tabby's OPEN");
        };
        self.send(&Message::Keepalive).await;
        assert_eq!(
            self.recv(Duration::from_secs(10)).await,
            Some(Message::Keepalive)
        );
        self.ctx = DecodeContext::negotiated(&open, &theirs);
        theirs
    }
}
