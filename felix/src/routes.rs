//! The route manager: keeps the kernel's main IPv4 table holding exactly felix's desired routes
//! among the routes that carry [`PROTO_TABBY`], and never touches any other route.
//!
//! Like Calico's `routetable`: a dirty flag and one [`RouteManager::apply`]. A desired-state
//! change is diffed against the manager's cached view of the kernel (so a 100-route change makes
//! 100 kernel changes and no dump); a resync (timer, netlink event) re-reads the kernel first.
//! A prefix that changes target is rewritten with one `RTM_NEWROUTE` + `NLM_F_REPLACE`, so there
//! is never a moment with no route or with two routes for it.
//!
//! One deliberate exception to "never touch what is not ours": a route for the very prefix felix
//! wants, in the main table with metric 0 (e.g. the pod /32 the CNI plugin adds before felix
//! learns of the pod), is taken over by the replace, as Calico's felix does.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use tracing::{debug, warn};

use crate::model::RouteTarget;
use crate::netlink::{ACKED, Netlink, REPLACE};
use crate::{Error, PROTO_TABBY};

/// A route as the kernel holds it: devices by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelTarget {
    Blackhole,
    Link { oif: u32 },
    Via { gw: IpAddr, oif: u32, onlink: bool },
}

/// The seam between the route manager and the kernel: a real netlink table or a fake.
#[allow(async_fn_in_trait)]
pub trait RouteTable {
    /// Every route in the main table with our protocol number.
    async fn list(&mut self) -> Result<BTreeMap<IpNet, KernelTarget>, Error>;
    /// Create-or-replace each route; returns the ones that failed.
    async fn replace(&mut self, routes: &[(IpNet, KernelTarget)]) -> Vec<(IpNet, Error)>;
    /// Delete each route; returns the ones that failed.
    async fn delete(&mut self, routes: &[(IpNet, KernelTarget)]) -> Vec<(IpNet, Error)>;
}

/// What one apply pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteStats {
    pub replaced: usize,
    pub deleted: usize,
    pub failed: usize,
    /// Desired routes left out because their device does not exist (yet).
    pub no_device: usize,
}

impl RouteStats {
    /// Kernel changes made (or attempted).
    pub fn changes(&self) -> usize {
        self.replaced + self.deleted
    }
}

pub struct RouteManager<T: RouteTable> {
    table: T,
    desired: BTreeMap<IpNet, RouteTarget>,
    ifindex: BTreeMap<String, u32>,
    /// Off-link gateways resolved through the kernel's own routes: node IP → (next hop, oif).
    recursive: BTreeMap<IpAddr, (IpAddr, u32)>,
    /// Our view of the kernel's routes with our protocol; `None` until the first read.
    actual: Option<BTreeMap<IpNet, KernelTarget>>,
    dirty: bool,
}

impl<T: RouteTable> RouteManager<T> {
    pub fn new(table: T) -> Self {
        RouteManager {
            table,
            desired: BTreeMap::new(),
            ifindex: BTreeMap::new(),
            recursive: BTreeMap::new(),
            actual: None,
            dirty: true,
        }
    }

    pub fn table(&mut self) -> &mut T {
        &mut self.table
    }

    pub fn set_desired(&mut self, routes: &BTreeMap<IpNet, RouteTarget>) {
        if self.desired != *routes {
            self.desired = routes.clone();
            self.dirty = true;
        }
    }

    /// Interface name → index, from the agent's link dump.
    pub fn set_interfaces(&mut self, ifindex: &BTreeMap<String, u32>) {
        if self.ifindex != *ifindex {
            self.ifindex = ifindex.clone();
            self.dirty = true;
        }
    }

    /// Gateways that are not on-link, with the next hop the kernel uses to reach them (BIRD's
    /// `gateway recursive`, which Calico's BIRD config uses for iBGP routes): a no-encap route to
    /// a node behind a router goes via that router.
    pub fn set_recursive(&mut self, recursive: &BTreeMap<IpAddr, (IpAddr, u32)>) {
        if self.recursive != *recursive {
            self.recursive = recursive.clone();
            self.dirty = true;
        }
    }

    /// Forget the cached kernel view: the next apply re-reads it.
    pub fn queue_resync(&mut self) {
        self.actual = None;
        self.dirty = true;
    }

    pub fn dirty(&self) -> bool {
        self.dirty
    }

    fn resolve(&self, t: &RouteTarget) -> Option<KernelTarget> {
        let oif = |dev: &str| self.ifindex.get(dev).copied();
        Some(match t {
            RouteTarget::Blackhole => KernelTarget::Blackhole,
            RouteTarget::Link { dev } => KernelTarget::Link { oif: oif(dev)? },
            RouteTarget::Via {
                gw, onlink: false, ..
            } if self.recursive.contains_key(gw) => {
                let (nh, oif) = self.recursive[gw];
                KernelTarget::Via {
                    gw: nh,
                    oif,
                    onlink: false,
                }
            }
            RouteTarget::Via { gw, dev, onlink } => KernelTarget::Via {
                gw: *gw,
                oif: oif(dev)?,
                onlink: *onlink,
            },
        })
    }

    pub async fn apply(&mut self) -> Result<RouteStats, Error> {
        let mut stats = RouteStats::default();
        if !self.dirty {
            return Ok(stats);
        }
        let mut actual = match self.actual.take() {
            Some(a) => a,
            None => self.table.list().await?,
        };
        let mut want: BTreeMap<IpNet, KernelTarget> = BTreeMap::new();
        for (dst, t) in &self.desired {
            match self.resolve(t) {
                Some(k) => {
                    want.insert(*dst, k);
                }
                None => stats.no_device += 1,
            }
        }
        let to_replace: Vec<(IpNet, KernelTarget)> = want
            .iter()
            .filter(|(d, k)| actual.get(d) != Some(k))
            .map(|(d, k)| (*d, *k))
            .collect();
        let to_delete: Vec<(IpNet, KernelTarget)> = actual
            .iter()
            .filter(|(d, _)| !want.contains_key(d))
            .map(|(d, k)| (*d, *k))
            .collect();
        stats.replaced = to_replace.len();
        stats.deleted = to_delete.len();
        let mut failed = Vec::new();
        if !to_replace.is_empty() {
            failed.extend(self.table.replace(&to_replace).await);
            for (d, k) in &to_replace {
                actual.insert(*d, *k);
            }
        }
        if !to_delete.is_empty() {
            failed.extend(self.table.delete(&to_delete).await);
            for (d, _) in &to_delete {
                actual.remove(d);
            }
        }
        stats.failed = failed.len();
        for (dst, e) in &failed {
            warn!(%dst, error = %e, "programming route");
        }
        if stats.changes() > 0 {
            debug!(?stats, "routes reconciled");
        }
        // A failure leaves our view unsure: read the kernel again on the next pass.
        self.actual = if failed.is_empty() {
            Some(actual)
        } else {
            None
        };
        self.dirty = !failed.is_empty() || stats.no_device > 0;
        Ok(stats)
    }
}

/// The kernel's main table through netlink.
pub struct NetlinkRoutes {
    nl: Netlink,
}

impl NetlinkRoutes {
    pub fn new(nl: Netlink) -> Self {
        NetlinkRoutes { nl }
    }
}

fn route_message(dst: IpNet, k: KernelTarget) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = match dst {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    m.header.destination_prefix_length = dst.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::from(PROTO_TABBY);
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(
            dst.network(),
        )));
    match k {
        KernelTarget::Blackhole => m.header.kind = RouteType::BlackHole,
        KernelTarget::Link { oif } => {
            m.header.scope = RouteScope::Link;
            m.attributes.push(RouteAttribute::Oif(oif));
        }
        KernelTarget::Via { gw, oif, onlink } => {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
            m.attributes.push(RouteAttribute::Oif(oif));
            if onlink {
                m.header.flags = RouteFlags::Onlink;
            }
        }
    }
    m
}

/// Reads one of our routes back; `None` for anything felix would not have written.
fn parse_route(m: &RouteMessage) -> Option<(IpNet, KernelTarget)> {
    let v6 = match m.header.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    if u8::from(m.header.protocol) != PROTO_TABBY {
        return None;
    }
    let addr = |a: &RouteAddress| match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    };
    let mut dst = if v6 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let mut gw = None;
    let mut oif = None;
    let mut table = u32::from(m.header.table);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = addr(d)?,
            RouteAttribute::Gateway(g) => gw = addr(g),
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let net = IpNet::new(dst, m.header.destination_prefix_length).ok()?;
    let k = match (m.header.kind, gw, oif) {
        (RouteType::BlackHole, _, _) => KernelTarget::Blackhole,
        (RouteType::Unicast, Some(gw), Some(oif)) => KernelTarget::Via {
            gw,
            oif,
            onlink: m.header.flags.contains(RouteFlags::Onlink),
        },
        (RouteType::Unicast, None, Some(oif)) => KernelTarget::Link { oif },
        _ => return None,
    };
    Some((net, k))
}

/// Asks the kernel how it reaches each gateway (`ip route get GW`); returns those it reaches
/// through another next hop. Our own routes are ignored (they never cover node addresses; if
/// one did, following it would be a loop).
pub async fn resolve_gateways(
    nl: &Netlink,
    gateways: impl IntoIterator<Item = IpAddr>,
) -> BTreeMap<IpAddr, (IpAddr, u32)> {
    let mut out = BTreeMap::new();
    for gw in gateways {
        let mut req = RouteMessage::default();
        req.header.address_family = if gw.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        req.header.destination_prefix_length = if gw.is_ipv4() { 32 } else { 128 };
        req.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(gw)));
        let Ok(replies) = nl
            .request(RouteNetlinkMessage::GetRoute(req), crate::netlink::GET)
            .await
        else {
            continue;
        };
        for r in replies {
            let RouteNetlinkMessage::NewRoute(r) = r else {
                continue;
            };
            let mut nh = None;
            let mut oif = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => nh = Some(IpAddr::V4(*g)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(g)) => nh = Some(IpAddr::V6(*g)),
                    RouteAttribute::Oif(o) => oif = Some(*o),
                    _ => {}
                }
            }
            if let (Some(nh), Some(oif)) = (nh, oif)
                && u8::from(r.header.protocol) != PROTO_TABBY
            {
                out.insert(gw, (nh, oif));
            }
        }
    }
    out
}

impl RouteTable for NetlinkRoutes {
    async fn list(&mut self) -> Result<BTreeMap<IpNet, KernelTarget>, Error> {
        // AF_UNSPEC: IPv4 and IPv6 in one dump.
        let req = RouteMessage::default();
        let msgs = self.nl.dump(RouteNetlinkMessage::GetRoute(req)).await?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => parse_route(r),
                _ => None,
            })
            .collect())
    }

    async fn replace(&mut self, routes: &[(IpNet, KernelTarget)]) -> Vec<(IpNet, Error)> {
        let msgs = routes
            .iter()
            .map(|(d, k)| {
                (
                    RouteNetlinkMessage::NewRoute(route_message(*d, *k)),
                    REPLACE,
                )
            })
            .collect();
        match crate::netlink::batch(msgs) {
            Ok(f) => f.into_iter().map(|(i, e)| (routes[i].0, e)).collect(),
            Err(e) => {
                let msg = e.to_string();
                routes
                    .iter()
                    .map(|(d, _)| (*d, Error::Netlink(msg.clone())))
                    .collect()
            }
        }
    }

    async fn delete(&mut self, routes: &[(IpNet, KernelTarget)]) -> Vec<(IpNet, Error)> {
        let msgs = routes
            .iter()
            .map(|(d, k)| (RouteNetlinkMessage::DelRoute(route_message(*d, *k)), ACKED))
            .collect();
        let failures = match crate::netlink::batch(msgs) {
            Ok(f) => f,
            Err(e) => {
                let msg = e.to_string();
                (0..routes.len())
                    .map(|i| (i, Error::Netlink(msg.clone())))
                    .collect()
            }
        };
        failures
            .into_iter()
            // Already gone is what we wanted.
            .filter(
                |(_, e)| !matches!(e, Error::Kernel(io) if io.raw_os_error() == Some(libc::ESRCH)),
            )
            .map(|(i, e)| (routes[i].0, e))
            .collect()
    }
}

/// An in-memory route table for unit tests: counts every change it is asked to make.
#[derive(Debug, Default)]
pub struct FakeRoutes {
    pub routes: BTreeMap<IpNet, KernelTarget>,
    pub lists: usize,
    pub replaces: usize,
    pub deletes: usize,
    /// Prefixes whose replace fails (e.g. a gateway the kernel rejects).
    pub reject: Vec<IpNet>,
}

impl RouteTable for FakeRoutes {
    async fn list(&mut self) -> Result<BTreeMap<IpNet, KernelTarget>, Error> {
        self.lists += 1;
        Ok(self.routes.clone())
    }

    async fn replace(&mut self, routes: &[(IpNet, KernelTarget)]) -> Vec<(IpNet, Error)> {
        let mut failed = Vec::new();
        for (d, k) in routes {
            self.replaces += 1;
            if self.reject.contains(d) {
                failed.push((*d, Error::Netlink("rejected by the fake".into())));
            } else {
                self.routes.insert(*d, *k);
            }
        }
        failed
    }

    async fn delete(&mut self, routes: &[(IpNet, KernelTarget)]) -> Vec<(IpNet, Error)> {
        for (d, _) in routes {
            self.deletes += 1;
            self.routes.remove(d);
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::Ipv4Net;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn via(gw: &str, dev: &str, onlink: bool) -> RouteTarget {
        RouteTarget::Via {
            gw: gw.parse().unwrap(),
            dev: dev.into(),
            onlink,
        }
    }

    fn manager() -> RouteManager<FakeRoutes> {
        let mut m = RouteManager::new(FakeRoutes::default());
        m.set_interfaces(&BTreeMap::from([
            ("eth0".to_string(), 2),
            ("tunl0".to_string(), 3),
            ("vxlan.calico".to_string(), 4),
        ]));
        m
    }

    fn block(i: u32) -> IpNet {
        Ipv4Net::new(Ipv4Addr::from(0xc612_0000u32 + (i << 6)), 26)
            .unwrap()
            .into()
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn programs_diffs_and_leaves_nothing_to_do() {
        run(async {
            let mut m = manager();
            let mut d = BTreeMap::new();
            for i in 0..100 {
                d.insert(block(i), via("192.0.2.12", "eth0", false));
            }
            d.insert(net("198.18.255.0/26"), RouteTarget::Blackhole);
            m.set_desired(&d);
            let s = m.apply().await.unwrap();
            assert_eq!((s.replaced, s.deleted), (101, 0));
            assert!(!m.dirty());
            assert_eq!(m.apply().await.unwrap(), RouteStats::default());
            // Change 10 routes: exactly 10 replaces, no dump.
            for i in 0..10 {
                d.insert(block(i), via("192.0.2.12", "tunl0", true));
            }
            m.set_desired(&d);
            let lists = m.table().lists;
            let s = m.apply().await.unwrap();
            assert_eq!((s.replaced, s.deleted), (10, 0));
            assert_eq!(m.table().lists, lists);
            assert_eq!(
                m.table().deletes,
                0,
                "a mode switch replaces, never deletes first"
            );
        });
    }

    #[test]
    fn resync_repairs_drift_and_removes_stale_routes() {
        run(async {
            let mut m = manager();
            let d = BTreeMap::from([(block(1), via("192.0.2.12", "eth0", false))]);
            m.set_desired(&d);
            m.apply().await.unwrap();
            // Someone deletes our route and a stale route of ours is left from a previous run.
            m.table().routes.remove(&block(1));
            m.table().routes.insert(block(2), KernelTarget::Blackhole);
            assert_eq!(m.apply().await.unwrap().changes(), 0, "not dirty: no read");
            m.queue_resync();
            let s = m.apply().await.unwrap();
            assert_eq!((s.replaced, s.deleted), (1, 1));
            assert_eq!(m.table().routes.len(), 1);
        });
    }

    #[test]
    fn routes_wait_for_their_device() {
        run(async {
            let mut m = manager();
            let d = BTreeMap::from([
                (
                    block(1),
                    RouteTarget::Link {
                        dev: "cali1".into(),
                    },
                ),
                (block(2), RouteTarget::Blackhole),
            ]);
            m.set_desired(&d);
            let s = m.apply().await.unwrap();
            assert_eq!((s.replaced, s.no_device), (1, 1));
            assert!(m.dirty(), "retried once the device shows up");
            let mut ifs = BTreeMap::from([("cali1".to_string(), 9)]);
            ifs.insert("eth0".into(), 2);
            m.set_interfaces(&ifs);
            let s = m.apply().await.unwrap();
            assert_eq!((s.replaced, s.no_device), (1, 0));
            assert_eq!(m.table().routes[&block(1)], KernelTarget::Link { oif: 9 });
        });
    }

    #[test]
    fn failures_are_retried_after_a_reread() {
        run(async {
            let mut m = manager();
            m.table().reject.push(block(1));
            m.set_desired(&BTreeMap::from([(
                block(1),
                via("192.0.2.12", "eth0", false),
            )]));
            assert_eq!(m.apply().await.unwrap().failed, 1);
            assert!(m.dirty());
            m.table().reject.clear();
            let lists = m.table().lists;
            assert_eq!(m.apply().await.unwrap().replaced, 1);
            assert_eq!(m.table().lists, lists + 1);
        });
    }

    #[test]
    fn off_link_gateways_follow_the_kernels_next_hop() {
        run(async {
            let mut m = manager();
            m.set_desired(&BTreeMap::from([
                (block(1), via("198.51.100.13", "eth0", false)),
                (block(2), via("198.51.100.13", "tunl0", true)),
            ]));
            let router: IpAddr = "192.0.2.1".parse().unwrap();
            m.set_recursive(&BTreeMap::from([(
                "198.51.100.13".parse().unwrap(),
                (router, 2),
            )]));
            m.apply().await.unwrap();
            assert_eq!(
                m.table().routes[&block(1)],
                KernelTarget::Via {
                    gw: router,
                    oif: 2,
                    onlink: false
                }
            );
            // Onlink (tunnel) routes keep the node address: the tunnel needs it.
            assert!(matches!(
                m.table().routes[&block(2)],
                KernelTarget::Via {
                    oif: 3,
                    onlink: true,
                    ..
                }
            ));
        });
    }

    #[test]
    fn netlink_messages_round_trip() {
        for k in [
            KernelTarget::Blackhole,
            KernelTarget::Link { oif: 7 },
            KernelTarget::Via {
                gw: "192.0.2.12".parse().unwrap(),
                oif: 3,
                onlink: true,
            },
            KernelTarget::Via {
                gw: "192.0.2.12".parse().unwrap(),
                oif: 2,
                onlink: false,
            },
        ] {
            let m = route_message(block(3), k);
            assert_eq!(parse_route(&m), Some((block(3), k)));
        }
        let v6: IpNet = "2001:db8:ff::40/122".parse().unwrap();
        let k = KernelTarget::Via {
            gw: "2001:db8:1::12".parse().unwrap(),
            oif: 2,
            onlink: false,
        };
        assert_eq!(parse_route(&route_message(v6, k)), Some((v6, k)));
        let mut foreign = route_message(block(3), KernelTarget::Blackhole);
        foreign.header.protocol = RouteProtocol::Static;
        assert_eq!(parse_route(&foreign), None, "not ours: ignored");
    }
}
