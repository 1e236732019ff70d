//! The edges the harness runs on: commands (`ip`, `ping`, the tabby binaries), network
//! namespaces, processes, and the Ctrl-C flag.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Error;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT / SIGTERM set a flag that every wait loop checks, so an interrupted `up` or `demo`
/// unwinds through its Drop guards and removes what it built.
pub fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails with [`Error::Interrupted`] once Ctrl-C was pressed.
pub fn check_interrupt() -> Result<(), Error> {
    if interrupted() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Runs a command to completion; a non-zero exit is an error carrying its output.
pub fn run(cmd: &mut Command) -> Result<String, Error> {
    let what = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Command {
            what: what.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            what,
            detail: format!("{}: {}{}", out.status, text(&out.stdout), text(&out.stderr)),
        });
    }
    Ok(text(&out.stdout))
}

/// Runs a command and returns its output, whatever the exit status.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| Output {
            status: std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
            stdout: Vec::new(),
            stderr: e.to_string().into_bytes(),
        })
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// `ip ARGS`.
pub fn ip(args: &[&str]) -> Result<String, Error> {
    run(Command::new("ip").args(args))
}

/// `ip -n NS ARGS`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<String, Error> {
    run(Command::new("ip").arg("-n").arg(ns).args(args))
}

/// A command run inside namespace `ns` (`ip netns exec NS PROGRAM`).
pub fn in_ns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

/// Starts a long-running process in a session of its own, so that a Ctrl-C in the terminal
/// reaches only tabby-lab, which then stops the process itself.
pub fn spawn_detached(cmd: &mut Command) -> Result<Child, Error> {
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| Error::Command {
        what: describe(cmd),
        detail: e.to_string(),
    })
}

/// SIGKILL to `pid` if it still runs `program` (a recorded pid may have been reused since).
pub fn kill_if(pid: u32, program: &str) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains(program) {
        // SAFETY: plain kill(2) on a pid we started.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
        // Reap it if it is our child; otherwise wait for it to go.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            // SAFETY: waitpid on a pid; harmless when it is not our child.
            unsafe {
                libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// Deletes a namespace after killing every process still in it: a crash between starting a
/// process and recording it (BIRD in the router, a tabby-node) must not leave it running with
/// its namespace gone.
pub fn netns_del(name: &str) {
    let pids = output(Command::new("ip").args(["netns", "pids", name]));
    if pids.status.success() {
        for pid in text(&pids.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) on a process inside a namespace this lab created.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    let _ = output(Command::new("ip").args(["netns", "del", name]));
}

/// Polls `f` every 50 ms until it is true; the time it took, or an error naming `what`.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
) -> Result<Duration, Error> {
    let start = Instant::now();
    loop {
        check_interrupt()?;
        if f() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout {
                what: what.to_string(),
                after: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
