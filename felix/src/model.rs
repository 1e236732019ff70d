//! The desired dataplane: what the calculation produces and the managers reconcile the kernel to.
//! Plain data, ordered maps so that two states compare (and print) deterministically.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Calico: the IPIP device is the kernel's fallback tunnel device, `tunl0`.
pub const IPIP_DEVICE: &str = "tunl0";
/// Calico: the VXLAN device is `vxlan.calico`.
pub const VXLAN_DEVICE: &str = "vxlan.calico";
/// Calico: the IPv6 VXLAN device is `vxlan-v6.calico`.
pub const VXLAN6_DEVICE: &str = "vxlan-v6.calico";
/// Calico: VXLAN over IPv6 adds 70 bytes (outer IPv6 40 + UDP 8 + VXLAN 8 + Ethernet 14).
pub const VXLAN6_OVERHEAD: u32 = 70;
/// Calico: host-side workload veths are named `cali…`.
pub const WORKLOAD_PREFIX: &str = "cali";
/// Calico: IP-in-IP adds an outer IPv4 header (20 bytes).
pub const IPIP_OVERHEAD: u32 = 20;
/// Calico: VXLAN adds outer IPv4 + UDP + VXLAN + inner Ethernet headers (50 bytes).
pub const VXLAN_OVERHEAD: u32 = 50;
/// Used when no underlay interface is known yet.
pub const DEFAULT_UNDERLAY_MTU: u32 = 1500;

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts
                .next()
                .ok_or_else(|| format!("MAC {s:?}: too short"))?;
            *b = u8::from_str_radix(p, 16).map_err(|e| format!("MAC {s:?}: {e}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("MAC {s:?}: too long"));
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Where a route sends traffic. Devices are named; the route manager resolves names to indexes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteTarget {
    /// `blackhole BLOCK`: a local affine block (Calico: so that unallocated addresses in our own
    /// block are dropped here instead of bouncing to the default route).
    Blackhole,
    /// `DST dev DEV scope link`: a local workload on its cali veth.
    Link { dev: String },
    /// `DST via GW dev DEV [onlink]`.
    Via {
        gw: IpAddr,
        dev: String,
        onlink: bool,
    },
}

impl RouteTarget {
    pub fn dev(&self) -> Option<&str> {
        match self {
            RouteTarget::Blackhole => None,
            RouteTarget::Link { dev } | RouteTarget::Via { dev, .. } => Some(dev),
        }
    }
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteTarget::Blackhole => write!(f, "blackhole"),
            RouteTarget::Link { dev } => write!(f, "dev {dev} scope link"),
            RouteTarget::Via { gw, dev, onlink } => {
                write!(f, "via {gw} dev {dev}")?;
                if *onlink {
                    write!(f, " onlink")?;
                }
                Ok(())
            }
        }
    }
}

/// `tunl0` while any pool uses IPIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpipDevice {
    /// This node's IPIP tunnel address (a /32 on tunl0), from IPAM.
    pub address: Option<Ipv4Addr>,
    pub mtu: u32,
}

/// `vxlan.calico` while any pool uses VXLAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanDevice {
    pub vni: u32,
    pub port: u16,
    /// This node's underlay address: the outer source of encapsulated packets.
    pub local: IpAddr,
    /// The underlay interface the tunnel is bound to.
    pub parent: String,
    /// This node's VTEP MAC (Node `vxlanTunnelMACAddr`); the kernel picks one when absent.
    pub mac: Option<Mac>,
    /// This node's VTEP address (a /32 on vxlan.calico, a /128 on vxlan-v6.calico), from IPAM.
    pub address: Option<IpAddr>,
    pub mtu: u32,
}

/// The devices felix owns, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    pub ipip: Option<IpipDevice>,
    pub vxlan: Option<VxlanDevice>,
    /// `vxlan-v6.calico` while any IPv6 pool uses VXLAN.
    pub vxlan6: Option<VxlanDevice>,
}

/// NAT-outgoing and forward rules, rendered into our own nft table by the nft manager.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatRules {
    /// Every pool's CIDR: "inside the cluster" for NAT, and accepted for forwarding.
    pub all_pools: BTreeSet<Ipv4Net>,
    /// Pools with `natOutgoing: true`.
    pub masq_pools: BTreeSet<Ipv4Net>,
    /// The same for IPv6 pools (always masqueraded: `natOutgoingAddress` is IPv4).
    pub all_pools6: BTreeSet<Ipv6Net>,
    pub masq_pools6: BTreeSet<Ipv6Net>,
    /// FelixConfiguration `natOutgoingAddress`: SNAT to this instead of masquerading.
    pub nat_outgoing_address: Option<Ipv4Addr>,
}

/// Everything felix wants the kernel to hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Routes in the main table (IPv4 and IPv6), all carrying [`crate::PROTO_TABBY`].
    pub routes: BTreeMap<IpNet, RouteTarget>,
    pub devices: Devices,
    /// Permanent neighbour entries: (device, IP) → MAC. VTEPs on the VXLAN devices, pods on
    /// cali*.
    pub neighbours: BTreeMap<(String, IpAddr), Mac>,
    /// Permanent FDB entries on a VXLAN device: (device, VTEP MAC) → the remote node's underlay
    /// address.
    pub fdb: BTreeMap<(String, Mac), IpAddr>,
    /// sysctl path under /proc/sys (with `/` separators) → value.
    pub sysctls: BTreeMap<String, String>,
    pub nat: NatRules,
    /// The MTU pods should use, written to the MTU file for the CNI plugin.
    pub pod_mtu: u32,
}

impl Desired {
    /// A stable, `ip`-like text form: one line per item. Used by replay tests and logs.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (dst, t) in &self.routes {
            out.push_str(&format!("route {dst} {t}\n"));
        }
        if let Some(i) = &self.devices.ipip {
            let addr = i.address.map(|a| a.to_string()).unwrap_or("-".into());
            out.push_str(&format!("device {IPIP_DEVICE} addr {addr} mtu {}\n", i.mtu));
        }
        for (name, v) in [
            (VXLAN_DEVICE, &self.devices.vxlan),
            (VXLAN6_DEVICE, &self.devices.vxlan6),
        ] {
            let Some(v) = v else { continue };
            let addr = v.address.map(|a| a.to_string()).unwrap_or("-".into());
            let mac = v.mac.map(|m| m.to_string()).unwrap_or("-".into());
            out.push_str(&format!(
                "device {name} vni {} port {} local {} dev {} mac {mac} addr {addr} mtu {}\n",
                v.vni, v.port, v.local, v.parent, v.mtu
            ));
        }
        for ((dev, ip), mac) in &self.neighbours {
            out.push_str(&format!("neigh {ip} lladdr {mac} dev {dev}\n"));
        }
        for ((dev, mac), ip) in &self.fdb {
            out.push_str(&format!("fdb {mac} dev {dev} dst {ip}\n"));
        }
        for (k, v) in &self.sysctls {
            out.push_str(&format!("sysctl {k}={v}\n"));
        }
        let nets = |s: &BTreeSet<Ipv4Net>| {
            s.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        out.push_str(&format!(
            "nat pools [{}] masq [{}]",
            nets(&self.nat.all_pools),
            nets(&self.nat.masq_pools)
        ));
        if !self.nat.all_pools6.is_empty() {
            let v6 = |s: &BTreeSet<Ipv6Net>| {
                s.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            out.push_str(&format!(
                " pools6 [{}] masq6 [{}]",
                v6(&self.nat.all_pools6),
                v6(&self.nat.masq_pools6)
            ));
        }
        if let Some(a) = self.nat.nat_outgoing_address {
            out.push_str(&format!(" snat {a}"));
        }
        out.push('\n');
        out.push_str(&format!("mtu {}\n", self.pod_mtu));
        out
    }
}
