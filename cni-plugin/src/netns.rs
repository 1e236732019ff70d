//! Running code inside a network namespace.
//!
//! `setns(2)` moves only the calling thread, and a netlink socket stays in the namespace it was
//! created in. So a short-lived thread joins the pod's namespace and opens a netlink socket
//! there ([`route_socket_in`]); the caller's thread, which never moves, then drives both that
//! socket and one of its own on the node. Sysctls (`/proc/sys/net` is per thread's namespace)
//! are written on such a thread too ([`NetNs::run`]).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use rtnetlink::Handle;

/// An open network namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`).
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

/// Why a namespace could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("opening network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a network namespace: {source}")]
    Setns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting a netlink connection: {0}")]
    Netlink(std::io::Error),
}

impl NetNs {
    pub fn open(path: &Path) -> Result<NetNs, NetNsError> {
        let file = File::open(path).map_err(|source| NetNsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` on a new thread that has joined this namespace, and waits for it.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetNsError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: fd is an open namespace file owned by self for the whole call.
                if unsafe { libc::setns(self.fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(NetNsError::Setns {
                        path: self.path.clone(),
                        source: std::io::Error::last_os_error(),
                    });
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

/// A netlink route socket (bound, non-blocking) created inside `netns`: the socket stays in
/// that namespace whichever thread later uses it, so one thread can drive both the node's and
/// the pod's side without moving.
pub fn route_socket_in(netns: &NetNs) -> Result<OwnedFd, NetNsError> {
    netns
        .run(|| {
            let mut s = rtnetlink::sys::Socket::new(rtnetlink::sys::protocols::NETLINK_ROUTE)?;
            s.bind_auto()?;
            s.set_non_blocking(true)?;
            // SAFETY: into_raw_fd hands over sole ownership of the descriptor.
            Ok(unsafe { OwnedFd::from_raw_fd(s.into_raw_fd()) })
        })?
        .map_err(NetNsError::Netlink)
}

/// A netlink handle over `fd` (from [`route_socket_in`]); must be called inside a runtime.
pub fn handle_from_socket(fd: OwnedFd) -> Handle {
    // SAFETY: fd is an open netlink socket we own; TokioSocket takes it over.
    let socket = unsafe { rtnetlink::sys::TokioSocket::from_raw_fd(fd.into_raw_fd()) };
    let (conn, handle, _) = rtnetlink::from_socket(socket);
    tokio::spawn(conn);
    handle
}

/// Writes a sysctl of the calling thread's network namespace (`net/ipv4/conf/eth0/forwarding`).
pub fn write_sysctl(name: &str, value: &str) -> std::io::Result<()> {
    let path = Path::new("/proc/sys").join(name);
    std::fs::write(&path, value).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("writing {} = {value}: {e}", path.display()),
        )
    })
}
