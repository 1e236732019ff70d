//! `tabby-ipam`, the IPAM plugin: Calico block IPAM ([`ipam::Ipam`]) behind the CNI IPAM
//! protocol. Every command that writes takes the per-host lock first ([`crate::lock`]), as
//! calico-ipam does.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use datastore::Datastore;
use ipam::{AutoAssignRequest, Ipam, IpamError};
use ipnet::IpNet;

use crate::cli::{Invocation, Plugin, runtime};
use crate::config::NetConf;
use crate::error::{Error, Result};
use crate::lock::{HostLock, LOCK_TIMEOUT};
use crate::spec::{CniResult, IpConfig};

pub struct TabbyIpam;

fn ipam_error(e: IpamError) -> Error {
    match e {
        e @ (IpamError::Exhausted { .. } | IpamError::NoPools { .. }) => {
            Error::PoolExhausted(e.to_string())
        }
        IpamError::Conflict { .. } => Error::TryAgainLater(e.to_string()),
        e => Error::Ipam(e.to_string()),
    }
}

fn open(conf: &NetConf) -> Result<Arc<dyn Datastore>> {
    let url = conf.datastore_url();
    datastore::open(&url).map_err(|e| Error::datastore(format!("opening {url}"), e))
}

fn lock(conf: &NetConf) -> Result<HostLock> {
    HostLock::acquire(&conf.ipam_lock_path(), LOCK_TIMEOUT)
}

/// The pod's address as a host route: the block's prefix is IPAM's business, the pod's
/// interface gets /32 (/128), as Calico's.
fn host_net(n: &IpNet) -> IpNet {
    let a = n.addr();
    IpNet::new(a, if a.is_ipv4() { 32 } else { 128 }).expect("host prefix is valid")
}

fn result_of(nets: &[IpNet]) -> CniResult {
    let mut nets: Vec<IpNet> = nets.iter().map(host_net).collect();
    // IPv4 first, as Calico lists them.
    nets.sort_by_key(|n| n.addr().is_ipv6());
    CniResult {
        cni_version: crate::spec::CURRENT_VERSION.into(),
        ips: nets
            .into_iter()
            .map(|address| IpConfig {
                address,
                gateway: None,
                interface: None,
            })
            .collect(),
        ..Default::default()
    }
}

impl Plugin for TabbyIpam {
    /// Assigns the attachment's addresses, or returns the ones its handle already holds (an
    /// ADD retried after a crash must not allocate twice).
    fn add(&self, inv: &Invocation) -> Result<CniResult> {
        let conf = &inv.conf;
        let handle = conf.handle(&inv.env.container_id);
        let node = conf.node_name()?;
        let ds = open(conf)?;
        let rt = runtime()?;
        let _lock = lock(conf)?;
        tracing::debug!("IPAM ADD: datastore open, host lock held");
        let ipam = Ipam::new(ds);
        let held = rt
            .block_on(ipam.ips_by_handle(&handle))
            .map_err(ipam_error)?;
        if !held.is_empty() {
            return Ok(result_of(&held));
        }
        let mut attrs = BTreeMap::new();
        if let Some((ns, pod)) = inv.env.args.pod() {
            attrs.insert("namespace".to_string(), ns.to_string());
            attrs.insert("pod".to_string(), pod.to_string());
        }
        let mut req = AutoAssignRequest::new(&handle, &node);
        req.attrs = attrs;
        req.num_v4 = usize::from(conf.assign_ipv4());
        req.num_v6 = usize::from(conf.assign_ipv6());
        req.pools_v4 = conf.ipv4_pools().to_vec();
        req.pools_v6 = conf.ipv6_pools().to_vec();
        let assigned = match rt.block_on(ipam.auto_assign(&req)) {
            Ok(a) => a,
            Err(e) => {
                // A partial assignment (IPv4 done, IPv6 failed) must not stay behind.
                let _ = rt.block_on(ipam.release_by_handle(&handle));
                return Err(ipam_error(e));
            }
        };
        tracing::debug!("IPAM ADD: assigned");
        let nets: Vec<IpNet> = assigned.v4.iter().chain(&assigned.v6).copied().collect();
        Ok(result_of(&nets))
    }

    /// Releases by handle only: an address another container holds has another handle.
    fn del(&self, inv: &Invocation) -> Result<()> {
        let conf = &inv.conf;
        let handle = conf.handle(&inv.env.container_id);
        let ds = open(conf)?;
        let rt = runtime()?;
        let _lock = lock(conf)?;
        tracing::debug!("IPAM DEL: datastore open, host lock held");
        rt.block_on(Ipam::new(ds).release_by_handle(&handle))
            .map_err(ipam_error)?;
        tracing::debug!("IPAM DEL: released");
        Ok(())
    }

    fn check(&self, inv: &Invocation) -> Result<()> {
        let conf = &inv.conf;
        let handle = conf.handle(&inv.env.container_id);
        let prev: CniResult = match &conf.prev_result {
            Some(v) => serde_json::from_value(v.clone()).map_err(|source| Error::Decode {
                what: "prevResult".into(),
                source,
            })?,
            None => return Err(Error::InvalidConfig("CHECK needs prevResult".into())),
        };
        let ds = open(conf)?;
        let rt = runtime()?;
        let mut held: Vec<IpAddr> = rt
            .block_on(Ipam::new(ds).ips_by_handle(&handle))
            .map_err(ipam_error)?
            .iter()
            .map(IpNet::addr)
            .collect();
        let mut want: Vec<IpAddr> = prev.ips.iter().map(|i| i.address.addr()).collect();
        held.sort();
        want.sort();
        if held != want {
            return Err(Error::CheckMismatch(format!(
                "handle {handle} holds {held:?}, prevResult says {want:?}"
            )));
        }
        Ok(())
    }

    /// Pods can be added when the datastore answers and holds an enabled pool.
    fn status(&self, inv: &Invocation) -> Result<()> {
        let url = inv.conf.datastore_url();
        let ds = datastore::open(&url)
            .map_err(|e| Error::NotAvailable(format!("datastore {url} unreachable: {e}")))?;
        let pools = runtime()?
            .block_on(ds.list(api::Kind::IPPool))
            .map_err(|e| Error::NotAvailable(format!("datastore {url}: listing IP pools: {e}")))?;
        let enabled = pools
            .items
            .iter()
            .any(|r| matches!(r, api::Resource::IPPool(p) if !p.spec.disabled));
        if enabled {
            Ok(())
        } else {
            Err(Error::NotAvailable(format!(
                "datastore {url} has no enabled IP pool"
            )))
        }
    }

    /// Releases this network's handles (`<network>.<containerID>`) whose container is not in
    /// `cni.dev/valid-attachments`.
    fn gc(&self, inv: &Invocation) -> Result<()> {
        let conf = &inv.conf;
        let valid: Vec<String> = conf
            .valid_attachments
            .iter()
            .flatten()
            .map(|a| conf.handle(&a.container_id))
            .collect();
        let prefix = format!("{}.", conf.name);
        let ds = open(conf)?;
        let rt = runtime()?;
        let _lock = lock(conf)?;
        let handles = rt
            .block_on(ds.list(api::Kind::IPAMHandle))
            .map_err(|e| Error::datastore("listing IPAMHandles", e))?;
        let ipam = Ipam::new(ds);
        for r in handles.items {
            let api::Resource::IPAMHandle(h) = r else {
                continue;
            };
            let id = &h.spec.handle_id;
            if id.starts_with(&prefix) && !valid.contains(id) {
                rt.block_on(ipam.release_by_handle(id))
                    .map_err(ipam_error)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_host_prefixes_ipv4_first() {
        let r = result_of(&[
            "2001:db8:42::5/122".parse().unwrap(),
            "198.18.0.65/26".parse().unwrap(),
        ]);
        let addrs: Vec<String> = r.ips.iter().map(|i| i.address.to_string()).collect();
        assert_eq!(addrs, ["198.18.0.65/32", "2001:db8:42::5/128"]);
        assert!(r.interfaces.is_empty() && r.routes.is_empty());
    }

    #[test]
    fn ipam_errors_map_to_codes() {
        let e = ipam_error(IpamError::Conflict {
            what: "claiming block".into(),
            retries: 100,
        });
        assert_eq!(e.code(), crate::spec::code::TRY_AGAIN_LATER);
        assert!(e.to_string().contains("claiming block"));
    }
}
