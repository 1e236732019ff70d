//! `tabby`, the network plugin: ADD, DEL, CHECK, STATUS and GC for one pod attachment.
//!
//! ```text
//!  ADD: check input ─┬─▶ exec tabby-ipam ADD (handle <network>.<containerID>) ─┐
//!                    └─▶ open datastore, netlink session, veth pair ───────────┴─1─▶ ─2─▶
//!       pod side ─3─▶ host side ─4─▶ endpoint ─5─▶ result       any failure after 1 ─▶ rollback
//!
//!  DEL: ┬─▶ exec tabby-ipam DEL (release by handle) ───┐
//!       ├─▶ delete pod veth (the kernel takes ~20 ms) ─┼─▶ done
//!       └─▶ delete endpoint (a thread of its own) ─────┘
//! ```
//! The numbers are the [`AddStep`]s after which `test_exit_after_step` kills the process. The
//! IPAM plugin runs beside the kernel work because neither needs the other's result.

use std::net::IpAddr;
use std::sync::Arc;

use datastore::Datastore;
use ipnet::IpNet;

use crate::cli::{Invocation, Plugin, runtime};
use crate::config::NetConf;
use crate::dataplane::{self, HOST_VETH_MAC, POD_GATEWAY_V4, Session};
use crate::delegate;
use crate::endpoint::{Identity, NETWORK_ANNOTATION};
use crate::error::{Error, Result};
use crate::netns::NetNs;
use crate::spec::{CniResult, Interface, IpConfig, Route};

/// The steps of ADD after which state exists that a crash would leave behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddStep {
    /// The IPAM plugin has allocated the addresses.
    Allocated = 1,
    /// The veth pair exists.
    VethCreated = 2,
    /// The pod side has its addresses and routes.
    PodConfigured = 3,
    /// The host side is up with its sysctls and routes.
    HostConfigured = 4,
    /// The WorkloadEndpoint is recorded.
    EndpointWritten = 5,
}

impl AddStep {
    pub const ALL: [AddStep; 5] = [
        AddStep::Allocated,
        AddStep::VethCreated,
        AddStep::PodConfigured,
        AddStep::HostConfigured,
        AddStep::EndpointWritten,
    ];
}

/// Test only: die here, as a `kill -9` would, when the config asks for it.
fn fault_point(conf: &NetConf, step: AddStep) {
    tracing::debug!(?step, "ADD step done");
    if conf.test_exit_after_step == Some(step as u32) {
        // SAFETY: _exit ends the process at once, running nothing; that is the point.
        unsafe { libc::_exit(137) };
    }
}

pub struct Tabby;

fn ipam_type(conf: &NetConf) -> Result<&str> {
    conf.ipam.as_ref().map(|i| i.type_.as_str()).ok_or_else(|| {
        Error::InvalidConfig("missing `ipam` section (e.g. {\"type\": \"tabby-ipam\"})".into())
    })
}

fn open_datastore(conf: &NetConf) -> Result<Arc<dyn Datastore>> {
    let url = conf.datastore_url();
    datastore::open(&url).map_err(|e| Error::datastore(format!("opening {url}"), e))
}

fn open_netns(inv: &Invocation) -> Result<NetNs> {
    let path = inv.env.netns.as_ref().ok_or(Error::InvalidEnv {
        name: "CNI_NETNS",
        reason: "not set".into(),
    })?;
    NetNs::open(path).map_err(|e| Error::InvalidEnv {
        name: "CNI_NETNS",
        reason: e.to_string(),
    })
}

fn host_prefix(ip: IpAddr) -> IpNet {
    IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("host prefix is valid")
}

struct Attachment<'a> {
    inv: &'a Invocation,
    node: String,
    host_veth: String,
}

impl<'a> Attachment<'a> {
    fn new(inv: &'a Invocation) -> Result<Attachment<'a>> {
        Ok(Attachment {
            inv,
            node: inv.conf.node_name()?,
            host_veth: dataplane::host_veth_name(inv.env.args.pod(), &inv.env.container_id),
        })
    }

    fn identity(&self) -> Identity<'_> {
        Identity {
            node: &self.node,
            pod: self.inv.env.args.pod(),
            container_id: &self.inv.env.container_id,
            ifname: &self.inv.env.ifname,
        }
    }

    /// Deletes our endpoint, only if it still belongs to this container. The delete is a
    /// compare-and-swap against the copy read, so an endpoint that another container's ADD
    /// replaced in between is never deleted; on a lost race the endpoint is read again.
    fn delete_endpoint(&self, ds: &dyn Datastore, rt: &tokio::runtime::Runtime) -> Result<()> {
        let key = self.identity().api_key();
        let ours = Some(self.inv.env.container_id.as_str());
        for _ in 0..3 {
            let r = match rt.block_on(ds.get(&key)) {
                Ok(r) => r,
                Err(datastore::Error::NotFound(_)) => return Ok(()),
                Err(e) => return Err(Error::datastore(format!("reading {key}"), e)),
            };
            match &r {
                api::Resource::WorkloadEndpoint(w) if w.spec.container_id.as_deref() == ours => {}
                _ => return Ok(()),
            }
            let rev = datastore::Revision::of(&r).ok().flatten();
            match rt.block_on(ds.delete(&key, rev)) {
                Ok(_) | Err(datastore::Error::NotFound(_)) => return Ok(()),
                Err(datastore::Error::Conflict { .. }) => continue,
                Err(e) => return Err(Error::datastore(format!("deleting {key}"), e)),
            }
        }
        Err(Error::TryAgainLater(format!(
            "deleting {key}: it kept changing under us"
        )))
    }

    fn add(&self) -> Result<CniResult> {
        let inv = self.inv;
        let conf = &inv.conf;
        let ipam = ipam_type(conf)?;
        let netns = open_netns(inv)?;
        let mtu = conf.effective_mtu()?;
        tracing::debug!("ADD input checked");

        // The IPAM plugin runs while the datastore is opened and the veth pair made: the pair
        // needs no address.
        let allocation = delegate::start(ipam, &inv.env.path, "ADD", &inv.stdin)?;
        let prepared = open_datastore(conf).and_then(|ds| {
            let rt = runtime()?;
            let dp = Session::new(Some(&netns))?;
            let veth = dp.create_veth(&self.host_veth, &inv.env.ifname, mtu);
            Ok((ds, rt, dp, veth))
        });
        let allocated = allocation.finish_add();
        match (prepared, allocated) {
            (Ok((ds, rt, dp, veth)), Ok(allocated)) => {
                fault_point(conf, AddStep::Allocated);
                let ips: Vec<IpAddr> = allocated.ips.iter().map(|c| c.address.addr()).collect();
                let done =
                    veth.and_then(|index| self.plumb(&dp, index, &ips, mtu, ds.as_ref(), &rt));
                if let Err(e) = &done {
                    tracing::warn!(container_id = %inv.env.container_id, "ADD failed, rolling back: {e}");
                    self.rollback(&dp, ds.as_ref(), &rt);
                }
                done
            }
            // Nothing allocated: only the veth to undo.
            (Ok((_, _, dp, veth)), Err(e)) => {
                if veth.is_ok() {
                    self.remove_veth(&dp);
                }
                Err(e)
            }
            (Err(e), Ok(_)) => {
                self.release();
                Err(e)
            }
            (Err(e), Err(_)) => Err(e),
        }
    }

    /// Everything after allocation; on error the caller rolls back.
    fn plumb(
        &self,
        dp: &Session<'_>,
        host_index: u32,
        ips: &[IpAddr],
        mtu: u32,
        ds: &dyn Datastore,
        rt: &tokio::runtime::Runtime,
    ) -> Result<CniResult> {
        let inv = self.inv;
        let conf = &inv.conf;
        let ifname = &inv.env.ifname;
        if ips.is_empty() {
            return Err(Error::Ipam(format!(
                "IPAM plugin returned no address for handle {}",
                conf.handle(&inv.env.container_id)
            )));
        }
        fault_point(conf, AddStep::VethCreated);
        let pod = dp.configure_pod(ifname, ips)?;
        fault_point(conf, AddStep::PodConfigured);
        dp.configure_host(&self.host_veth, host_index, ips)?;
        fault_point(conf, AddStep::HostConfigured);

        let nets: Vec<IpNet> = ips.iter().copied().map(host_prefix).collect();
        let wep = self
            .identity()
            .endpoint(&conf.name, &self.host_veth, &pod.mac, &nets);
        let key = self.identity().api_key();
        match rt.block_on(ds.create(wep.clone().into())) {
            Ok(_) => {}
            Err(datastore::Error::AlreadyExists(_)) => {
                rt.block_on(ds.update(wep.into()))
                    .map_err(|e| Error::datastore(format!("replacing {key}"), e))?;
            }
            Err(e) => return Err(Error::datastore(format!("creating {key}"), e)),
        }
        fault_point(conf, AddStep::EndpointWritten);

        let mut routes = Vec::new();
        if ips.iter().any(IpAddr::is_ipv4) {
            routes.push(Route::new(
                "0.0.0.0/0".parse().expect("valid"),
                Some(POD_GATEWAY_V4.into()),
            ));
        }
        if ips.iter().any(IpAddr::is_ipv6) {
            routes.push(Route::new(
                "::/0".parse().expect("valid"),
                Some(dataplane::host_veth_link_local().into()),
            ));
        }
        Ok(CniResult {
            cni_version: crate::spec::CURRENT_VERSION.into(),
            interfaces: vec![
                Interface {
                    name: self.host_veth.clone(),
                    mac: Some(dataplane::format_mac(&HOST_VETH_MAC)),
                    mtu: Some(mtu),
                    ..Default::default()
                },
                Interface {
                    name: ifname.clone(),
                    mac: Some(pod.mac),
                    mtu: Some(mtu),
                    sandbox: Some(
                        inv.env
                            .netns
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                    ),
                    ..Default::default()
                },
            ],
            ips: nets
                .iter()
                .map(|n| IpConfig {
                    address: *n,
                    gateway: None,
                    interface: Some(1),
                })
                .collect(),
            routes,
            dns: conf.dns.clone(),
        })
    }

    fn remove_veth(&self, dp: &Session<'_>) {
        if let Err(e) = dp.delete_pod_link(&self.inv.env.ifname) {
            tracing::warn!("rollback: {e}");
        }
        if let Err(e) = dp.delete_host_veth(&self.host_veth) {
            tracing::warn!("rollback: {e}");
        }
    }

    /// Undoes a failed ADD: the veth (and so its routes), the endpoint, the allocation. Each
    /// part is tried even when another fails; failures are logged, the ADD error is reported.
    fn rollback(&self, dp: &Session<'_>, ds: &dyn Datastore, rt: &tokio::runtime::Runtime) {
        self.remove_veth(dp);
        if let Err(e) = self.delete_endpoint(ds, rt) {
            tracing::warn!("rollback: {e}");
        }
        self.release();
    }

    /// Rollback's last part: the IPAM plugin releases what it allocated for this ADD.
    fn release(&self) {
        let inv = self.inv;
        if let Ok(ipam) = ipam_type(&inv.conf)
            && let Err(e) = delegate::run(ipam, &inv.env.path, "DEL", &inv.stdin)
        {
            tracing::warn!("rollback: {e}");
        }
    }

    /// The IPAM plugin releases the addresses and the endpoint is deleted while the kernel
    /// deletes the veth, which takes it tens of milliseconds.
    fn del(&self) -> Result<()> {
        let inv = self.inv;
        let ipam = ipam_type(&inv.conf)?;
        let release = delegate::start(ipam, &inv.env.path, "DEL", &inv.stdin)?;
        let (veth, endpoint) = std::thread::scope(|s| {
            let endpoint = s.spawn(|| {
                let ds = open_datastore(&inv.conf)?;
                self.delete_endpoint(ds.as_ref(), &runtime()?)
            });
            // The pod side lives in the netns; deleting it takes the host side and its routes
            // along. A netns that is already gone took the pair with it.
            let veth = match inv.env.netns.as_ref().map(|p| NetNs::open(p)) {
                Some(Ok(netns)) => Session::new(Some(&netns))
                    .and_then(|dp| dp.delete_pod_link(&inv.env.ifname))
                    .map(|_| ()),
                _ => Ok(()),
            };
            tracing::debug!("DEL: veth deleted");
            let endpoint = endpoint
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            (veth, endpoint)
        });
        let released = release.finish();
        tracing::debug!("DEL done");
        veth?;
        released?;
        endpoint
    }

    fn check(&self) -> Result<()> {
        let inv = self.inv;
        let ipam = ipam_type(&inv.conf)?;
        let prev: CniResult = match &inv.conf.prev_result {
            Some(v) => serde_json::from_value(v.clone()).map_err(|source| Error::Decode {
                what: "prevResult".into(),
                source,
            })?,
            None => return Err(Error::InvalidConfig("CHECK needs prevResult".into())),
        };
        delegate::run(ipam, &inv.env.path, "CHECK", &inv.stdin)?;
        let netns = open_netns(inv)?;
        let dp = Session::new(Some(&netns))?;
        let ifname = &inv.env.ifname;
        let pod = dp.inspect_pod(ifname)?.ok_or_else(|| {
            Error::CheckMismatch(format!(
                "interface {ifname} not found in {}",
                netns.path().display()
            ))
        })?;
        for ip in &prev.ips {
            let want = host_prefix(ip.address.addr());
            if !pod.addrs.contains(&want) {
                return Err(Error::CheckMismatch(format!(
                    "{ifname} lacks address {want} (has {:?})",
                    pod.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>()
                )));
            }
        }
        if let Some(i) = prev
            .interfaces
            .iter()
            .find(|i| &i.name == ifname && i.sandbox.is_some())
            && i.mac
                .as_deref()
                .is_some_and(|m| !m.eq_ignore_ascii_case(&pod.mac))
        {
            return Err(Error::CheckMismatch(format!(
                "{ifname} has MAC {}, prevResult says {}",
                pod.mac,
                i.mac.as_deref().unwrap_or_default()
            )));
        }
        let has_v4 = prev.ips.iter().any(|i| i.address.addr().is_ipv4());
        if has_v4
            && !pod.routes.iter().any(|(dst, gw)| {
                dst.prefix_len() == 0 && dst.addr().is_ipv4() && *gw == Some(POD_GATEWAY_V4.into())
            })
        {
            return Err(Error::CheckMismatch(format!(
                "{ifname} has no default route via {POD_GATEWAY_V4}"
            )));
        }
        let host = dp.inspect_host(&self.host_veth)?.ok_or_else(|| {
            Error::CheckMismatch(format!("host veth {} not found", self.host_veth))
        })?;
        for ip in &prev.ips {
            let want = host_prefix(ip.address.addr());
            if !host.routes.contains(&want) {
                return Err(Error::CheckMismatch(format!(
                    "no host route {want} dev {}",
                    self.host_veth
                )));
            }
        }
        let ds = open_datastore(&inv.conf)?;
        let rt = runtime()?;
        let key = self.identity().api_key();
        match rt.block_on(ds.get(&key)) {
            Ok(api::Resource::WorkloadEndpoint(w))
                if w.spec.container_id.as_deref() == Some(&inv.env.container_id) =>
            {
                Ok(())
            }
            Ok(_) | Err(datastore::Error::NotFound(_)) => Err(Error::CheckMismatch(format!(
                "WorkloadEndpoint {key} of container {} not found",
                inv.env.container_id
            ))),
            Err(e) => Err(Error::datastore(format!("reading {key}"), e)),
        }
    }
}

impl Plugin for Tabby {
    fn add(&self, inv: &Invocation) -> Result<CniResult> {
        Attachment::new(inv)?.add()
    }

    fn del(&self, inv: &Invocation) -> Result<()> {
        Attachment::new(inv)?.del()
    }

    fn check(&self, inv: &Invocation) -> Result<()> {
        Attachment::new(inv)?.check()
    }

    /// Pods can be added when the datastore answers; the IPAM plugin says whether it has pools.
    fn status(&self, inv: &Invocation) -> Result<()> {
        let url = inv.conf.datastore_url();
        let ds = datastore::open(&url)
            .map_err(|e| Error::NotAvailable(format!("datastore {url} unreachable: {e}")))?;
        runtime()?
            .block_on(ds.list(api::Kind::IPPool))
            .map_err(|e| Error::NotAvailable(format!("datastore {url}: listing IP pools: {e}")))?;
        delegate::run(ipam_type(&inv.conf)?, &inv.env.path, "STATUS", &inv.stdin)?;
        Ok(())
    }

    /// The IPAM plugin releases stale allocations; here, this network's endpoints on this node
    /// whose attachment the runtime no longer holds are deleted.
    fn gc(&self, inv: &Invocation) -> Result<()> {
        delegate::run(ipam_type(&inv.conf)?, &inv.env.path, "GC", &inv.stdin)?;
        let valid: Vec<&str> = inv
            .conf
            .valid_attachments
            .iter()
            .flatten()
            .map(|a| a.container_id.as_str())
            .collect();
        let node = inv.conf.node_name()?;
        let ds = open_datastore(&inv.conf)?;
        let rt = runtime()?;
        let listing = rt
            .block_on(ds.list(api::Kind::WorkloadEndpoint))
            .map_err(|e| Error::datastore("listing WorkloadEndpoints", e))?;
        for r in listing.items {
            let api::Resource::WorkloadEndpoint(w) = &r else {
                continue;
            };
            let ours = w.metadata.annotations.get(NETWORK_ANNOTATION) == Some(&inv.conf.name)
                && w.spec.node.as_deref() == Some(node.as_str());
            let held = w
                .spec
                .container_id
                .as_deref()
                .is_some_and(|c| valid.contains(&c));
            if ours && !held {
                let key = r.key();
                let rev = datastore::Revision::of(&r).ok().flatten();
                match rt.block_on(ds.delete(&key, rev)) {
                    Ok(_) | Err(datastore::Error::NotFound(_)) => {}
                    Err(e) => return Err(Error::datastore(format!("deleting {key}"), e)),
                }
            }
        }
        Ok(())
    }
}
