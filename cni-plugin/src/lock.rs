//! The per-host IPAM lock: Calico serialises IPAM on one host with a file lock
//! (`/var/run/calico/ipam.lock`), on top of the datastore's compare-and-swap across hosts, so
//! parallel ADDs on one node do not fight over the same block.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long an ADD waits for the lock before saying "try again later" (code 11).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(90);

/// Held while the file is locked; dropping it (or the process dying) releases the lock.
pub struct HostLock {
    _file: File,
}

impl HostLock {
    pub fn acquire(path: &Path, timeout: Duration) -> Result<HostLock> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                what: format!("creating lock directory {}", dir.display()),
                source,
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|source| Error::Io {
                what: format!("opening IPAM lock {}", path.display()),
                source,
            })?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            // SAFETY: the fd is open for the whole call.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(HostLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(Error::Io {
                    what: format!("locking {}", path.display()),
                    source: err,
                });
            }
            if start.elapsed() > timeout {
                return Err(Error::TryAgainLater(format!(
                    "IPAM lock {} still held by another process after {timeout:?}",
                    path.display()
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_times_out_with_code_11() {
        let path =
            std::env::temp_dir().join(format!("tabby-lock-{}/ipam.lock", std::process::id()));
        let held = HostLock::acquire(&path, LOCK_TIMEOUT).unwrap();
        let err = match HostLock::acquire(&path, Duration::from_millis(20)) {
            Err(e) => e,
            Ok(_) => panic!("lock taken twice"),
        };
        assert_eq!(err.code(), crate::spec::code::TRY_AGAIN_LATER);
        drop(held);
        assert!(HostLock::acquire(&path, Duration::from_millis(20)).is_ok());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
