//! The sysctl manager: `net.ipv4.ip_forward` and, per cali* veth, `proxy_arp=1`,
//! `neigh.proxy_delay=0` and `forwarding=1` (Calico's workload interface settings: proxy ARP is
//! what answers the pod's ARP for 169.254.1.1). Every pass reads each value and writes only
//! those that differ. An interface that does not exist yet is skipped; its appearance is a link
//! event, which triggers a pass.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use tracing::{info, warn};

use crate::Error;

/// The seam: `/proc/sys` or a fake.
pub trait Sysctls {
    /// `key` is a path under /proc/sys with `/` separators (`net/ipv4/ip_forward`).
    fn read(&self, key: &str) -> io::Result<String>;
    fn write(&mut self, key: &str, value: &str) -> io::Result<()>;
}

/// The real thing. `/proc/sys/net` belongs to the network namespace of the thread that opens it.
pub struct ProcSys {
    pub root: PathBuf,
}

impl Default for ProcSys {
    fn default() -> Self {
        ProcSys {
            root: PathBuf::from("/proc/sys"),
        }
    }
}

impl Sysctls for ProcSys {
    fn read(&self, key: &str) -> io::Result<String> {
        std::fs::read_to_string(self.root.join(key))
    }
    fn write(&mut self, key: &str, value: &str) -> io::Result<()> {
        std::fs::write(self.root.join(key), value)
    }
}

/// An in-memory sysctl tree for unit tests.
#[derive(Debug, Default)]
pub struct FakeSysctls {
    pub values: BTreeMap<String, String>,
    pub writes: usize,
}

impl Sysctls for FakeSysctls {
    fn read(&self, key: &str) -> io::Result<String> {
        self.values
            .get(key)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn write(&mut self, key: &str, value: &str) -> io::Result<()> {
        self.writes += 1;
        match self.values.get_mut(key) {
            Some(v) => {
                *v = value.to_string();
                Ok(())
            }
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
}

pub struct SysctlManager<S: Sysctls> {
    fs: S,
    desired: BTreeMap<String, String>,
    dirty: bool,
}

impl<S: Sysctls> SysctlManager<S> {
    pub fn new(fs: S) -> Self {
        SysctlManager {
            fs,
            desired: BTreeMap::new(),
            dirty: true,
        }
    }

    pub fn fs(&mut self) -> &mut S {
        &mut self.fs
    }

    pub fn set_desired(&mut self, d: &BTreeMap<String, String>) {
        if self.desired != *d {
            self.desired = d.clone();
            self.dirty = true;
        }
    }

    /// Re-read everything on the next apply (sysctl writes raise no event: the agent polls).
    pub fn queue_resync(&mut self) {
        self.dirty = true;
    }

    /// Reads every desired sysctl and writes the ones that differ; returns how many it wrote.
    /// A value whose interface does not exist yet is skipped; the interface's arrival is a link
    /// event, which queues a resync.
    pub fn apply(&mut self) -> Result<usize, Error> {
        if !self.dirty {
            return Ok(0);
        }
        let mut written = 0;
        let mut first_err = None;
        for (k, v) in &self.desired {
            match self.fs.read(k) {
                Ok(cur) if cur.trim() == v => {}
                Ok(cur) => {
                    if let Err(e) = self.fs.write(k, v) {
                        warn!(key = %k, error = %e, "writing sysctl");
                        first_err.get_or_insert(Error::Io {
                            what: format!("writing sysctl {k}={v}"),
                            source: e,
                        });
                    } else {
                        info!(key = %k, from = %cur.trim(), to = %v, "sysctl set");
                        written += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_err.get_or_insert(Error::Io {
                        what: format!("reading sysctl {k}"),
                        source: e,
                    });
                }
            }
        }
        self.dirty = first_err.is_some();
        match first_err {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_what_differs_and_skips_missing_interfaces() {
        let mut fs = FakeSysctls::default();
        fs.values.insert("net/ipv4/ip_forward".into(), "0\n".into());
        fs.values
            .insert("net/ipv4/conf/cali1/proxy_arp".into(), "1\n".into());
        let mut m = SysctlManager::new(fs);
        m.set_desired(&BTreeMap::from([
            ("net/ipv4/ip_forward".to_string(), "1".to_string()),
            ("net/ipv4/conf/cali1/proxy_arp".to_string(), "1".to_string()),
            ("net/ipv4/conf/cali2/proxy_arp".to_string(), "1".to_string()),
        ]));
        assert_eq!(m.apply().unwrap(), 1);
        assert_eq!(m.apply().unwrap(), 0);
        // Drift: someone turns proxy ARP off. Seen on the next resync.
        m.fs()
            .values
            .insert("net/ipv4/conf/cali1/proxy_arp".into(), "0\n".into());
        assert_eq!(m.apply().unwrap(), 0, "not dirty: nothing read");
        m.queue_resync();
        assert_eq!(m.apply().unwrap(), 1);
        assert_eq!(m.fs().values["net/ipv4/conf/cali1/proxy_arp"], "1");
        assert_eq!(m.fs().writes, 2);
    }
}
