//! The kernel side of one pod attachment, Calico style:
//!
//! ```text
//!   node netns                                 pod netns (CNI_NETNS)
//!   caliXXXXXXXXXXX  ee:ee:ee:ee:ee:ee  <-veth->  eth0  198.18.0.5/32
//!     proxy_arp=1, proxy_delay=0,                   169.254.1.1 dev eth0 scope link
//!     forwarding=1, no address                      default via 169.254.1.1 dev eth0
//!   198.18.0.5 dev caliXXX scope link proto 80
//! ```
//!
//! The pod side of the pair is created straight inside the pod's namespace (`IFLA_NET_NS_FD` on
//! the veth peer), so no interface named `eth0` ever appears on the node, and two ADDs for the
//! same `CNI_IFNAME` cannot collide there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};
use sha1::{Digest, Sha1};

use crate::error::{Error, Result};
use crate::netns::{NetNs, write_sysctl};

/// The route protocol number on every route tabby writes (Calico's felix uses 80 too): felix
/// recognises the pod routes the CNI plugin added as its own by it, and never touches routes
/// with another protocol.
pub const ROUTE_PROTOCOL: u8 = 80;

/// Calico: every host-side veth has this MAC, so a pod sees the same gateway MAC on every node.
pub const HOST_VETH_MAC: [u8; 6] = [0xee; 6];

/// Calico: the pod's IPv4 gateway, answered by proxy ARP on the host veth.
pub const POD_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// Calico: host veths are `cali` + 11 hex characters.
pub const HOST_VETH_PREFIX: &str = "cali";

/// The host veth's IPv6 link-local address: EUI-64 of [`HOST_VETH_MAC`], which is what the
/// kernel gives it (`addr_gen_mode` eui64), so the pod's IPv6 gateway is known before the link
/// is up.
pub fn host_veth_link_local() -> Ipv6Addr {
    let m = HOST_VETH_MAC;
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([m[0] ^ 0x02, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    )
}

/// Calico's host veth name: `cali` + the first 11 hex characters of SHA-1(`namespace.pod`),
/// or of the container id when the runtime gave no Kubernetes names.
pub fn host_veth_name(pod: Option<(&str, &str)>, container_id: &str) -> String {
    let input = match pod {
        Some((ns, name)) => format!("{ns}.{name}"),
        None => container_id.to_string(),
    };
    let digest = Sha1::digest(input.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{HOST_VETH_PREFIX}{}", &hex[..11])
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

/// The link called `name`, or `None` when there is none.
async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

fn link_mac(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => Some(format_mac(m)),
        _ => None,
    })
}

fn link_mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

fn netns_err(e: crate::netns::NetNsError) -> Error {
    Error::dataplane("entering network namespace", e)
}

/// Netlink handles on the node (the calling thread's namespace) and, when there is one, in the
/// pod's namespace, driven from the calling thread. One command opens one session: a single
/// runtime and two sockets, no matter how many steps it takes.
pub struct Session<'a> {
    rt: tokio::runtime::Runtime,
    host: Handle,
    pod: Option<(Handle, &'a NetNs)>,
}

impl<'a> Session<'a> {
    pub fn new(netns: Option<&'a NetNs>) -> Result<Session<'a>> {
        let pod_socket = netns
            .map(crate::netns::route_socket_in)
            .transpose()
            .map_err(netns_err)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| Error::dataplane("starting the netlink runtime", e))?;
        let (host, pod) = rt.block_on(async {
            let (conn, host, _) = rtnetlink::new_connection()
                .map_err(|e| Error::dataplane("opening a netlink socket on the node", e))?;
            tokio::spawn(conn);
            let pod = pod_socket.map(crate::netns::handle_from_socket);
            Ok::<_, Error>((host, pod))
        })?;
        Ok(Session {
            rt,
            host,
            pod: pod.zip(netns),
        })
    }

    fn pod(&self) -> (&Handle, &'a NetNs) {
        let (h, ns) = self.pod.as_ref().expect("session opened without a netns");
        (h, ns)
    }

    /// Deletes the host veth `name` if it exists (a leftover of an ADD that was killed).
    /// Returns whether there was one.
    pub fn delete_host_veth(&self, name: &str) -> Result<bool> {
        self.rt
            .block_on(delete_link(&self.host, name))
            .map_err(|e| Error::dataplane(format!("deleting host veth {name}"), e))
    }

    /// Deletes `ifname` inside the pod (its host peer and routes go with it). Returns whether
    /// it existed.
    pub fn delete_pod_link(&self, ifname: &str) -> Result<bool> {
        let (h, ns) = self.pod();
        self.rt.block_on(delete_link(h, ifname)).map_err(|e| {
            Error::dataplane(format!("deleting {ifname} in {}", ns.path().display()), e)
        })
    }

    /// Creates the veth pair: `host_name` on the node with [`HOST_VETH_MAC`], its peer
    /// `pod_ifname` directly inside the pod's netns. Returns the host side's index.
    ///
    /// When either name is taken (an earlier ADD of this attachment was killed, or the pod was
    /// recreated), the old links are deleted and the pair created again, as Calico does.
    pub fn create_veth(&self, host_name: &str, pod_ifname: &str, mtu: u32) -> Result<u32> {
        match self.try_create_veth(host_name, pod_ifname, mtu) {
            Err((e, true)) => {
                tracing::info!("{e}: replacing the leftover links");
                self.delete_pod_link(pod_ifname)?;
                self.delete_host_veth(host_name)?;
                self.try_create_veth(host_name, pod_ifname, mtu)
                    .map_err(|(e, _)| e)
            }
            r => r.map_err(|(e, _)| e),
        }
    }

    /// As [`Session::create_veth`], without replacing; the flag says "a name was taken".
    fn try_create_veth(
        &self,
        host_name: &str,
        pod_ifname: &str,
        mtu: u32,
    ) -> Result<u32, (Error, bool)> {
        let (_, netns) = self.pod();
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(pod_ifname.to_string())
            .mtu(mtu)
            .setns_by_fd(netns.fd())
            .build();
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(host_name.to_string())
            .mtu(mtu)
            .address(HOST_VETH_MAC.to_vec())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        let what = format!(
            "creating veth {host_name} <-> {pod_ifname} in {}",
            netns.path().display()
        );
        self.rt
            .block_on(async {
                self.host.link().add(msg).execute().await?;
                let link = link_by_name(&self.host, host_name).await?;
                Ok::<_, rtnetlink::Error>(link.map(|l| l.header.index))
            })
            .map_err(|e| {
                let exists = is_errno(&e, libc::EEXIST);
                (Error::dataplane(&what, e), exists)
            })?
            .ok_or_else(|| {
                (
                    Error::dataplane(&what, "link vanished after creation"),
                    false,
                )
            })
    }

    /// Brings the pod side up with its addresses (/32, /128) and the routes via the gateway.
    pub fn configure_pod(&self, ifname: &str, addrs: &[IpAddr]) -> Result<PodLink> {
        let (h, netns) = self.pod();
        let what = format!("configuring {ifname} in {}", netns.path().display());
        if addrs.iter().any(IpAddr::is_ipv6) {
            // The pod's IPv6 must be on, and the address usable at once (no DAD wait).
            netns
                .run(|| {
                    write_sysctl(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0")?;
                    write_sysctl(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0")
                })
                .map_err(netns_err)?
                .map_err(|e| Error::dataplane(&what, e))?;
        }
        self.rt
            .block_on(configure_pod(h, ifname, addrs))
            .map_err(|e| Error::dataplane(&what, e))?
            .ok_or_else(|| Error::dataplane(&what, "link not found"))
    }

    /// Sysctls, link up and the host routes to the pod (`POD_IP/32 dev caliX scope link
    /// proto 80`).
    pub fn configure_host(&self, host_name: &str, host_index: u32, addrs: &[IpAddr]) -> Result<()> {
        let what = format!("configuring host veth {host_name}");
        let sysctl =
            |k: String, v: &str| write_sysctl(&k, v).map_err(|e| Error::dataplane(&what, e));
        if addrs.iter().any(IpAddr::is_ipv4) {
            sysctl(format!("net/ipv4/conf/{host_name}/proxy_arp"), "1")?;
            sysctl(format!("net/ipv4/neigh/{host_name}/proxy_delay"), "0")?;
            sysctl(format!("net/ipv4/conf/{host_name}/forwarding"), "1")?;
        }
        if addrs.iter().any(IpAddr::is_ipv6) {
            sysctl(format!("net/ipv6/conf/{host_name}/accept_ra"), "0")?;
            sysctl(format!("net/ipv6/conf/{host_name}/proxy_ndp"), "1")?;
            sysctl(format!("net/ipv6/conf/{host_name}/forwarding"), "1")?;
        }
        self.rt
            .block_on(async {
                self.host
                    .link()
                    .set(LinkUnspec::new_with_index(host_index).up().build())
                    .execute()
                    .await?;
                for addr in addrs {
                    self.host
                        .route()
                        .add(host_route(*addr, host_index))
                        .replace()
                        .execute()
                        .await?;
                }
                Ok(())
            })
            .map_err(|e: rtnetlink::Error| Error::dataplane(&what, e))
    }

    /// The pod side as the kernel has it, or `None` when `ifname` does not exist.
    pub fn inspect_pod(&self, ifname: &str) -> Result<Option<PodLink>> {
        let (h, netns) = self.pod();
        self.rt.block_on(inspect_pod(h, ifname)).map_err(|e| {
            Error::dataplane(format!("reading {ifname} in {}", netns.path().display()), e)
        })
    }

    /// The host side as the kernel has it, or `None` when there is no link `name`.
    pub fn inspect_host(&self, name: &str) -> Result<Option<HostLink>> {
        self.rt
            .block_on(async {
                let Some(link) = link_by_name(&self.host, name).await? else {
                    return Ok(None);
                };
                let index = link.header.index;
                let routes = routes_via(&self.host, index)
                    .await?
                    .iter()
                    .filter(|r| r.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL))
                    .filter_map(route_dst)
                    .collect();
                Ok(Some(HostLink {
                    index,
                    mac: link_mac(&link).unwrap_or_default(),
                    routes,
                }))
            })
            .map_err(|e: rtnetlink::Error| Error::dataplane(format!("reading host veth {name}"), e))
    }
}

async fn delete_link(h: &Handle, name: &str) -> Result<bool, rtnetlink::Error> {
    let Some(link) = link_by_name(h, name).await? else {
        return Ok(false);
    };
    match h.link().del(link.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The pod side after [`Session::configure_pod`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodLink {
    pub index: u32,
    pub mac: String,
    pub mtu: u32,
    pub addrs: Vec<IpNet>,
    /// (destination, gateway) of every route through the link, sorted.
    pub routes: Vec<(IpNet, Option<IpAddr>)>,
}

async fn configure_pod(
    h: &Handle,
    ifname: &str,
    addrs: &[IpAddr],
) -> Result<Option<PodLink>, rtnetlink::Error> {
    let Some(link) = link_by_name(h, ifname).await? else {
        return Ok(None);
    };
    let index = link.header.index;
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await?;
    for addr in addrs {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        let mut req = h.address().add(index, *addr, prefix).replace();
        req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        req.execute().await?;
    }
    let mut routes = Vec::new();
    if addrs.iter().any(IpAddr::is_ipv4) {
        let gw = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(POD_GATEWAY_V4, 32)
            .output_interface(index)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Boot)
            .build();
        h.route().add(gw).replace().execute().await?;
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(POD_GATEWAY_V4)
            .output_interface(index)
            .protocol(RouteProtocol::Boot)
            .build();
        h.route().add(default).replace().execute().await?;
        routes.push((IpNet::new(POD_GATEWAY_V4.into(), 32).expect("valid"), None));
        routes.push((
            IpNet::new(Ipv4Addr::UNSPECIFIED.into(), 0).expect("valid"),
            Some(POD_GATEWAY_V4.into()),
        ));
    }
    if addrs.iter().any(IpAddr::is_ipv6) {
        let default = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(host_veth_link_local())
            .output_interface(index)
            .protocol(RouteProtocol::Boot)
            .build();
        h.route().add(default).replace().execute().await?;
        routes.push((
            IpNet::new(Ipv6Addr::UNSPECIFIED.into(), 0).expect("valid"),
            Some(host_veth_link_local().into()),
        ));
    }
    routes.sort();
    Ok(Some(PodLink {
        index,
        mac: link_mac(&link).unwrap_or_default(),
        mtu: link_mtu(&link).unwrap_or_default(),
        addrs: addrs
            .iter()
            .map(|a| IpNet::new(*a, if a.is_ipv4() { 32 } else { 128 }).expect("valid"))
            .collect(),
        routes,
    }))
}

fn host_route(addr: IpAddr, index: u32) -> RouteMessage {
    let prefix = if addr.is_ipv4() { 32 } else { 128 };
    RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(addr, prefix)
        .expect("prefix matches family")
        .output_interface(index)
        .scope(RouteScope::Link)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .build()
}

fn route_dst(r: &RouteMessage) -> Option<IpNet> {
    let len = r.header.destination_prefix_length;
    let addr = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    });
    let addr = match (addr, r.header.address_family) {
        (Some(a), _) => a,
        (None, AddressFamily::Inet) => Ipv4Addr::UNSPECIFIED.into(),
        (None, AddressFamily::Inet6) => Ipv6Addr::UNSPECIFIED.into(),
        _ => return None,
    };
    IpNet::new(addr, len).ok()
}

fn route_gw(r: &RouteMessage) -> Option<IpAddr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Gateway(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })
}

fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

async fn routes_via(h: &Handle, index: u32) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
    let mut out = Vec::new();
    for req in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let routes: Vec<RouteMessage> = h.route().get(req).execute().try_collect().await?;
        out.extend(
            routes
                .into_iter()
                .filter(|r| route_oif(r) == Some(index) && r.header.table == 254),
        );
    }
    Ok(out)
}

async fn inspect_pod(h: &Handle, ifname: &str) -> Result<Option<PodLink>, rtnetlink::Error> {
    let Some(link) = link_by_name(h, ifname).await? else {
        return Ok(None);
    };
    let index = link.header.index;
    let addrs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await?;
    let addrs = addrs
        .iter()
        .filter_map(|a| {
            let ip = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })?;
            // Kernel-made link-local addresses are not ours.
            if let IpAddr::V6(v6) = ip
                && v6.is_unicast_link_local()
            {
                return None;
            }
            IpNet::new(ip, a.header.prefix_len).ok()
        })
        .collect();
    let mut routes: Vec<_> = routes_via(h, index)
        .await?
        .iter()
        .filter(|r| {
            !matches!(route_dst(r), Some(IpNet::V6(n))
                if n.addr().is_unicast_link_local() || n.addr().is_multicast())
        })
        .filter_map(|r| Some((route_dst(r)?, route_gw(r))))
        .collect();
    routes.sort();
    Ok(Some(PodLink {
        index,
        mac: link_mac(&link).unwrap_or_default(),
        mtu: link_mtu(&link).unwrap_or_default(),
        addrs,
        routes,
    }))
}

/// The host side as the kernel has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLink {
    pub index: u32,
    pub mac: String,
    /// Destinations of our (protocol [`ROUTE_PROTOCOL`]) routes through the link.
    pub routes: Vec<IpNet>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected name comes from `echo -n default.web | sha1sum` (68caf03a5f4a…).
    #[test]
    fn veth_names_follow_calico() {
        assert_eq!(
            host_veth_name(Some(("default", "web")), "c1"),
            "cali68caf03a5f4"
        );
        assert_ne!(host_veth_name(None, "c1"), "cali68caf03a5f4");
    }

    #[test]
    fn host_link_local_is_eui64_of_the_mac() {
        assert_eq!(
            host_veth_link_local(),
            "fe80::ecee:eeff:feee:eeee".parse::<Ipv6Addr>().unwrap()
        );
    }
}
