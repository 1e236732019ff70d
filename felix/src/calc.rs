//! The calculation half of felix: inputs (resources and BGP routes) in, desired dataplane out.
//! Pure: no I/O, no clock. The agent feeds [`Input`]s one at a time; [`Calculator::desired`]
//! recomputes the whole desired state from the current inputs, which keeps the rules in one place
//! and is fast enough (10,000 blocks in a few milliseconds) to do on every change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use api::{
    BlockAffinitySpec, EncapMode, FelixConfigurationSpec, IPPoolSpec, NodeSpec,
    WorkloadEndpointSpec,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::model::{
    DEFAULT_UNDERLAY_MTU, Desired, Devices, IPIP_DEVICE, IPIP_OVERHEAD, IpipDevice, Mac, NatRules,
    RouteTarget, VXLAN_DEVICE, VXLAN_OVERHEAD, VXLAN6_DEVICE, VXLAN6_OVERHEAD, VxlanDevice,
};
use crate::mtu::{DEFAULT_MTU_IFACE_PATTERN, Pattern};

/// One change to felix's inputs. Resources are keyed by name; an update replaces the whole value.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Config(Box<FelixConfigurationSpec>),
    PoolUpdate(String, IPPoolSpec),
    PoolRemove(String),
    NodeUpdate(String, NodeSpec),
    NodeRemove(String),
    AffinityUpdate(String, BlockAffinitySpec),
    AffinityRemove(String),
    /// Keyed by the endpoint's full name. Local endpoints get their cali route; endpoints on other
    /// nodes matter only when their address is borrowed from a block affine to yet another node.
    WorkloadUpdate(String, WorkloadEndpointSpec),
    WorkloadRemove(String),
    /// The speaker's best route for a prefix (empty next hops = withdrawn).
    BgpRoute(IpNet, Vec<IpAddr>),
    /// MTU of a host interface (the agent feeds these from its link dump); `None` = gone.
    InterfaceMtu(String, Option<u32>),
}

/// This node's fixed identity: its name and the interface that carries node-to-node traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNode {
    pub name: String,
    pub underlay_dev: String,
}

/// Current inputs. Owned by the agent's calculation task.
#[derive(Clone, Debug)]
pub struct Calculator {
    local: LocalNode,
    config: FelixConfigurationSpec,
    pools: BTreeMap<String, IPPoolSpec>,
    nodes: BTreeMap<String, NodeSpec>,
    affinities: BTreeMap<String, BlockAffinitySpec>,
    workloads: BTreeMap<String, WorkloadEndpointSpec>,
    bgp: BTreeMap<IpNet, Vec<IpAddr>>,
    interface_mtus: BTreeMap<String, u32>,
}

/// A node as the route rules need it.
struct NodeInfo {
    ip: Ipv4Addr,
    vtep: Option<(Ipv4Addr, Mac)>,
}

impl Calculator {
    pub fn new(local: LocalNode) -> Calculator {
        Calculator {
            local,
            config: FelixConfigurationSpec::default(),
            pools: BTreeMap::new(),
            nodes: BTreeMap::new(),
            affinities: BTreeMap::new(),
            workloads: BTreeMap::new(),
            bgp: BTreeMap::new(),
            interface_mtus: BTreeMap::new(),
        }
    }

    pub fn local(&self) -> &LocalNode {
        &self.local
    }

    pub fn config(&self) -> &FelixConfigurationSpec {
        &self.config
    }

    /// Applies one input; returns whether anything changed.
    pub fn apply(&mut self, input: Input) -> bool {
        match input {
            Input::Config(c) => replace(&mut self.config, *c),
            Input::PoolUpdate(k, v) => upsert(&mut self.pools, k, v),
            Input::PoolRemove(k) => self.pools.remove(&k).is_some(),
            Input::NodeUpdate(k, v) => upsert(&mut self.nodes, k, v),
            Input::NodeRemove(k) => self.nodes.remove(&k).is_some(),
            Input::AffinityUpdate(k, v) => upsert(&mut self.affinities, k, v),
            Input::AffinityRemove(k) => self.affinities.remove(&k).is_some(),
            Input::WorkloadUpdate(k, v) => upsert(&mut self.workloads, k, v),
            Input::WorkloadRemove(k) => self.workloads.remove(&k).is_some(),
            Input::BgpRoute(p, hops) => {
                // Next hops of the prefix's own family only.
                let mut same: Vec<IpAddr> = hops
                    .into_iter()
                    .filter(|h| h.is_ipv4() == matches!(p, IpNet::V4(_)))
                    .collect();
                same.sort();
                let p = p.trunc();
                if same.is_empty() {
                    self.bgp.remove(&p).is_some()
                } else {
                    self.bgp.insert(p, same.clone()) != Some(same)
                }
            }
            Input::InterfaceMtu(k, Some(m)) => self.interface_mtus.insert(k, m) != Some(m),
            Input::InterfaceMtu(k, None) => self.interface_mtus.remove(&k).is_some(),
        }
    }

    fn my_address(&self) -> Option<Ipv4Net> {
        node_address(self.nodes.get(&self.local.name)?)
    }

    fn node_info(&self, name: &str) -> Option<NodeInfo> {
        let spec = self.nodes.get(name)?;
        let ip = node_address(spec)?.addr();
        let vtep = match (&spec.ipv4_vxlan_tunnel_addr, &spec.vxlan_tunnel_mac_addr) {
            (Some(a), Some(m)) => Some((parse_v4(a)?, m.parse().ok()?)),
            _ => None,
        };
        Some(NodeInfo { ip, vtep })
    }

    /// IPv4 pools, most specific first, so the first containing pool wins.
    fn v4_pools(&self) -> Vec<(Ipv4Net, &IPPoolSpec)> {
        let mut v: Vec<(Ipv4Net, &IPPoolSpec)> = self
            .pools
            .values()
            .filter_map(|p| match p.cidr {
                Some(IpNet::V4(c)) => Some((c, p)),
                _ => None,
            })
            .collect();
        v.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()).then(a.0.cmp(&b.0)));
        v
    }

    /// The smallest MTU among underlay interfaces (Calico's `mtuIfacePattern`).
    fn underlay_mtu(&self) -> u32 {
        let pattern = self
            .config
            .mtu_iface_pattern
            .as_deref()
            .and_then(|p| Pattern::new(p).ok())
            .unwrap_or_else(|| Pattern::new(DEFAULT_MTU_IFACE_PATTERN).expect("default pattern"));
        self.interface_mtus
            .iter()
            .filter(|(name, _)| pattern.is_match(name) || **name == self.local.underlay_dev)
            .map(|(_, m)| *m)
            .min()
            .unwrap_or(DEFAULT_UNDERLAY_MTU)
    }

    /// The whole desired dataplane for the current inputs.
    pub fn desired(&self) -> Desired {
        let me = &self.local.name;
        let my_addr = self.my_address();
        let pools = self.v4_pools();
        let pool_for = |net: Ipv4Net| pools.iter().find(|(c, _)| c.contains(&net)).map(|p| p.1);
        let mut d = Desired::default();

        // Devices and MTUs.
        let ipip_used = pools.iter().any(|(_, p)| p.ipip_mode().enabled());
        let vxlan_used = pools.iter().any(|(_, p)| p.vxlan_mode().enabled());
        let underlay = self.underlay_mtu();
        let ipip_mtu = configured(self.config.ipip_mtu).unwrap_or(underlay - IPIP_OVERHEAD);
        let vxlan_mtu = configured(self.config.vxlan_mtu).unwrap_or(underlay - VXLAN_OVERHEAD);
        let my_spec = self.nodes.get(me);
        if ipip_used {
            d.devices.ipip = Some(IpipDevice {
                address: my_spec
                    .and_then(|s| s.bgp.as_ref())
                    .and_then(|b| b.ipv4_ipip_tunnel_addr.as_deref())
                    .and_then(parse_v4),
                mtu: ipip_mtu,
            });
        }
        if let (true, Some(local)) = (vxlan_used, my_addr) {
            d.devices.vxlan = Some(VxlanDevice {
                vni: self.config.vxlan_vni(),
                port: self.config.vxlan_port(),
                local: local.addr().into(),
                parent: self.local.underlay_dev.clone(),
                mac: my_spec
                    .and_then(|s| s.vxlan_tunnel_mac_addr.as_deref())
                    .and_then(|m| m.parse().ok()),
                address: my_spec
                    .and_then(|s| s.ipv4_vxlan_tunnel_addr.as_deref())
                    .and_then(parse_v4)
                    .map(IpAddr::V4),
                mtu: vxlan_mtu,
            });
        }
        d.pod_mtu = [
            d.devices.ipip.as_ref().map(|i| i.mtu),
            d.devices.vxlan.as_ref().map(|v| v.mtu),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(underlay);

        // How to reach `prefix` on node `node`, per the mode of the pool containing it.
        let remote = |prefix: Ipv4Net, node: &str| -> Option<RouteTarget> {
            let pool = pool_for(prefix)?;
            let info = self.node_info(node)?;
            remote_target(pool, &info, my_addr, &d.devices, &self.local.underlay_dev)
        };

        // Local affine blocks and remote blocks, from block affinities.
        let mut block_owner: Vec<(Ipv4Net, &str)> = Vec::new();
        for a in self.affinities.values().filter(|a| !a.deleted) {
            let Some(IpNet::V4(block)) = a.cidr else {
                continue;
            };
            block_owner.push((block, a.node.as_str()));
            if a.node == *me {
                d.routes.insert(block.into(), RouteTarget::Blackhole);
            } else if let Some(t) = remote(block, &a.node) {
                d.routes.insert(block.into(), t);
            }
        }

        // Workloads: local ones on their cali veth; remote ones only where borrowed.
        for w in self.workloads.values() {
            let node = w.node.as_deref().unwrap_or(me);
            for addr in w.ip_networks.iter().filter_map(|n| parse_v4_net(n)) {
                if node == me {
                    let Some(dev) = w.interface_name.clone() else {
                        continue;
                    };
                    d.routes
                        .insert(addr.into(), RouteTarget::Link { dev: dev.clone() });
                    if let Some(mac) = w.mac.as_deref().and_then(|m| m.parse().ok()) {
                        d.neighbours.insert((dev.clone(), addr.addr().into()), mac);
                    }
                    for (k, v) in [
                        (format!("net/ipv4/conf/{dev}/proxy_arp"), "1"),
                        (format!("net/ipv4/neigh/{dev}/proxy_delay"), "0"),
                        (format!("net/ipv4/conf/{dev}/forwarding"), "1"),
                    ] {
                        d.sysctls.insert(k, v.to_string());
                    }
                } else {
                    let owner = block_owner
                        .iter()
                        .filter(|(b, _)| b.contains(&addr))
                        .max_by_key(|(b, _)| b.prefix_len())
                        .map(|(_, n)| *n);
                    if owner != Some(node)
                        && let Some(t) = remote(addr, node)
                    {
                        d.routes.insert(addr.into(), t);
                    }
                }
            }
        }

        // BGP-learned routes fill in what the datastore does not say (no-encap and IPIP pools, and
        // prefixes outside every pool). VXLAN routes come only from the datastore.
        for (prefix, hops) in &self.bgp {
            let (IpNet::V4(p4), IpAddr::V4(gw)) = (prefix, hops[0]) else {
                continue;
            };
            if d.routes.contains_key(prefix) || my_addr.is_some_and(|m| m.addr() == gw) {
                continue;
            }
            let target = match pool_for(*p4) {
                Some(pool) if pool.vxlan_mode().enabled() => None,
                Some(pool) => {
                    let info = NodeInfo { ip: gw, vtep: None };
                    remote_target(pool, &info, my_addr, &d.devices, &self.local.underlay_dev)
                }
                None => Some(RouteTarget::Via {
                    gw: gw.into(),
                    dev: self.local.underlay_dev.clone(),
                    onlink: false,
                }),
            };
            if let Some(t) = target {
                d.routes.insert(*prefix, t);
            }
        }

        // VXLAN: a permanent neighbour and FDB entry for every remote VTEP.
        if d.devices.vxlan.is_some() {
            for name in self.nodes.keys().filter(|n| *n != me) {
                if let Some(NodeInfo {
                    ip,
                    vtep: Some((vip, vmac)),
                }) = self.node_info(name)
                {
                    d.neighbours
                        .insert((VXLAN_DEVICE.to_string(), vip.into()), vmac);
                    d.fdb.insert((VXLAN_DEVICE.to_string(), vmac), ip.into());
                }
            }
        }

        d.sysctls
            .insert("net/ipv4/ip_forward".to_string(), "1".to_string());
        d.nat = NatRules {
            all_pools: pools.iter().map(|(c, _)| *c).collect::<BTreeSet<_>>(),
            masq_pools: pools
                .iter()
                .filter(|(_, p)| p.nat_outgoing)
                .map(|(c, _)| *c)
                .collect(),
            nat_outgoing_address: self
                .config
                .nat_outgoing_address
                .as_deref()
                .and_then(parse_v4),
            ..Default::default()
        };
        self.desired_v6(&mut d);
        d
    }
}

impl Calculator {
    /// IPv6: local /128s on cali veths, blackholes for local blocks, unencapsulated routes to
    /// remote blocks via the node's IPv6 address, borrowed addresses and BGP routes, plus
    /// forwarding and proxy NDP. IPv6 encapsulation (Calico's `vxlan-v6.calico`) is not
    /// implemented: blocks of a v6 pool that asks for it get no remote route.
    fn desired_v6(&self, d: &mut Desired) {
        let me = &self.local.name;
        let mut pools: Vec<(Ipv6Net, &IPPoolSpec)> = self
            .pools
            .values()
            .filter_map(|p| match p.cidr {
                Some(IpNet::V6(c)) => Some((c, p)),
                _ => None,
            })
            .collect();
        pools.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()).then(a.0.cmp(&b.0)));
        let node6 = |name: &str| -> Option<Ipv6Addr> {
            let a = self
                .nodes
                .get(name)?
                .bgp
                .as_ref()?
                .ipv6_address
                .as_deref()?;
            a.split('/').next()?.parse().ok()
        };
        let my6 = node6(me);
        let my6_net: Option<Ipv6Net> = self
            .nodes
            .get(me)
            .and_then(|n| n.bgp.as_ref()?.ipv6_address.as_deref()?.parse().ok());
        // (VTEP address, VTEP MAC) of a node, from `ipv6VXLANTunnelAddr` / `vxlanTunnelMACAddrV6`.
        let vtep6 = |name: &str| -> Option<(Ipv6Addr, Mac)> {
            let n = self.nodes.get(name)?;
            Some((
                n.ipv6_vxlan_tunnel_addr.as_deref()?.parse().ok()?,
                n.vxlan_tunnel_mac_addr_v6.as_deref()?.parse().ok()?,
            ))
        };
        if let (true, Some(local)) = (pools.iter().any(|(_, p)| p.vxlan_mode().enabled()), my6) {
            let my_spec = self.nodes.get(me);
            d.devices.vxlan6 = Some(VxlanDevice {
                vni: self.config.vxlan_vni(),
                port: self.config.vxlan_port(),
                local: local.into(),
                parent: self.local.underlay_dev.clone(),
                mac: my_spec
                    .and_then(|s| s.vxlan_tunnel_mac_addr_v6.as_deref())
                    .and_then(|m| m.parse().ok()),
                address: my_spec
                    .and_then(|s| s.ipv6_vxlan_tunnel_addr.as_deref())
                    .and_then(|a| a.parse::<Ipv6Addr>().ok())
                    .map(IpAddr::V6),
                mtu: configured(self.config.vxlan_mtu_v6)
                    .unwrap_or(self.underlay_mtu() - VXLAN6_OVERHEAD),
            });
            d.pod_mtu = d.pod_mtu.min(d.devices.vxlan6.as_ref().expect("set").mtu);
        }
        let vxlan6_up = d.devices.vxlan6.is_some();
        // Calico: IPv6 traffic is encapsulated with VXLAN (Always, or CrossSubnet when the node
        // is outside our IPv6 prefix) or not at all; there is no IPv6 IP-in-IP.
        let remote = |prefix: Ipv6Net, node: &str| -> Option<RouteTarget> {
            let (_, pool) = pools.iter().find(|(c, _)| c.contains(&prefix))?;
            let node_ip = node6(node)?;
            let encap = match pool.vxlan_mode() {
                EncapMode::Never => false,
                EncapMode::Always => true,
                EncapMode::CrossSubnet => !my6_net.is_some_and(|m| m.contains(&node_ip)),
            };
            if encap {
                if !vxlan6_up {
                    return None;
                }
                return Some(RouteTarget::Via {
                    gw: vtep6(node)?.0.into(),
                    dev: VXLAN6_DEVICE.to_string(),
                    onlink: true,
                });
            }
            if pool.ipip_mode().enabled() && !pool.vxlan_mode().enabled() {
                return None;
            }
            Some(RouteTarget::Via {
                gw: node_ip.into(),
                dev: self.local.underlay_dev.clone(),
                onlink: false,
            })
        };
        if vxlan6_up {
            for name in self.nodes.keys().filter(|n| *n != me) {
                if let (Some(ip), Some((vip, vmac))) = (node6(name), vtep6(name)) {
                    d.neighbours
                        .insert((VXLAN6_DEVICE.to_string(), vip.into()), vmac);
                    d.fdb.insert((VXLAN6_DEVICE.to_string(), vmac), ip.into());
                }
            }
        }
        let mut block_owner: Vec<(Ipv6Net, &str)> = Vec::new();
        for a in self.affinities.values().filter(|a| !a.deleted) {
            let Some(IpNet::V6(block)) = a.cidr else {
                continue;
            };
            block_owner.push((block, a.node.as_str()));
            if a.node == *me {
                d.routes.insert(block.into(), RouteTarget::Blackhole);
            } else if let Some(t) = remote(block, &a.node) {
                d.routes.insert(block.into(), t);
            }
        }
        for w in self.workloads.values() {
            let node = w.node.as_deref().unwrap_or(me);
            for addr in w.ip_networks.iter().filter_map(|n| parse_v6_net(n)) {
                if node == me {
                    let Some(dev) = w.interface_name.clone() else {
                        continue;
                    };
                    d.routes
                        .insert(addr.into(), RouteTarget::Link { dev: dev.clone() });
                    if let Some(mac) = w.mac.as_deref().and_then(|m| m.parse().ok()) {
                        d.neighbours.insert((dev.clone(), addr.addr().into()), mac);
                    }
                    for k in [
                        format!("net/ipv6/conf/{dev}/proxy_ndp"),
                        format!("net/ipv6/conf/{dev}/forwarding"),
                    ] {
                        d.sysctls.insert(k, "1".to_string());
                    }
                } else {
                    let owner = block_owner
                        .iter()
                        .filter(|(b, _)| b.contains(&addr))
                        .max_by_key(|(b, _)| b.prefix_len())
                        .map(|(_, n)| *n);
                    if owner != Some(node)
                        && let Some(t) = remote(addr, node)
                    {
                        d.routes.insert(addr.into(), t);
                    }
                }
            }
        }
        for (prefix, hops) in &self.bgp {
            let (IpNet::V6(p6), IpAddr::V6(gw)) = (prefix, hops[0]) else {
                continue;
            };
            if d.routes.contains_key(prefix) || my6 == Some(gw) {
                continue;
            }
            let encap = pools
                .iter()
                .find(|(c, _)| c.contains(p6))
                .is_some_and(|(_, p)| p.vxlan_mode().enabled() || p.ipip_mode().enabled());
            if !encap {
                d.routes.insert(
                    *prefix,
                    RouteTarget::Via {
                        gw: gw.into(),
                        dev: self.local.underlay_dev.clone(),
                        onlink: false,
                    },
                );
            }
        }
        if !pools.is_empty() {
            d.sysctls
                .insert("net/ipv6/conf/all/forwarding".to_string(), "1".to_string());
        }
        d.nat.all_pools6 = pools.iter().map(|(c, _)| *c).collect();
        d.nat.masq_pools6 = pools
            .iter()
            .filter(|(_, p)| p.nat_outgoing)
            .map(|(c, _)| *c)
            .collect();
    }
}

/// The route to a remote node for a prefix in `pool`. VXLAN wins over IPIP when a pool (invalidly)
/// asks for both, as Calico's validation forbids the combination.
fn remote_target(
    pool: &IPPoolSpec,
    node: &NodeInfo,
    my_addr: Option<Ipv4Net>,
    devices: &Devices,
    underlay: &str,
) -> Option<RouteTarget> {
    // Calico CrossSubnet: encapsulate only when the remote node is outside our subnet.
    let same_subnet = my_addr.is_some_and(|m| m.contains(&node.ip));
    let encap = |mode: EncapMode| match mode {
        EncapMode::Never => false,
        EncapMode::Always => true,
        EncapMode::CrossSubnet => !same_subnet,
    };
    if encap(pool.vxlan_mode()) {
        devices.vxlan.as_ref()?;
        let (vtep, _) = node.vtep?;
        return Some(RouteTarget::Via {
            gw: vtep.into(),
            dev: VXLAN_DEVICE.to_string(),
            onlink: true,
        });
    }
    if encap(pool.ipip_mode()) {
        devices.ipip.as_ref()?;
        return Some(RouteTarget::Via {
            gw: node.ip.into(),
            dev: IPIP_DEVICE.to_string(),
            onlink: true,
        });
    }
    Some(RouteTarget::Via {
        gw: node.ip.into(),
        dev: underlay.to_string(),
        onlink: false,
    })
}

fn configured(v: Option<u32>) -> Option<u32> {
    v.filter(|m| *m > 0)
}

fn node_address(spec: &NodeSpec) -> Option<Ipv4Net> {
    let a = spec.bgp.as_ref()?.ipv4_address.as_deref()?;
    a.parse::<Ipv4Net>()
        .ok()
        .or_else(|| parse_v4(a).map(|ip| Ipv4Net::new(ip, 32).expect("/32")))
}

fn parse_v4(s: &str) -> Option<Ipv4Addr> {
    s.split('/').next()?.parse().ok()
}

fn parse_v6_net(s: &str) -> Option<Ipv6Net> {
    s.parse::<Ipv6Net>()
        .ok()
        .or_else(|| Some(Ipv6Net::new(s.parse().ok()?, 128).expect("/128")))
        .map(|n| n.trunc())
}

fn parse_v4_net(s: &str) -> Option<Ipv4Net> {
    s.parse::<Ipv4Net>()
        .ok()
        .or_else(|| Some(Ipv4Net::new(s.parse().ok()?, 32).expect("/32")))
        .map(|n| n.trunc())
}

fn upsert<V: PartialEq>(m: &mut BTreeMap<String, V>, k: String, v: V) -> bool {
    match m.get(&k) {
        Some(old) if *old == v => false,
        _ => {
            m.insert(k, v);
            true
        }
    }
}

fn replace<V: PartialEq>(slot: &mut V, v: V) -> bool {
    if *slot == v {
        false
    } else {
        *slot = v;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{AffinityState, NodeBgpSpec};

    const N1: &str = "n1";

    pub(crate) fn node(addr: &str, ipip: Option<&str>, vtep: Option<(&str, &str)>) -> NodeSpec {
        NodeSpec {
            bgp: Some(NodeBgpSpec {
                ipv4_address: Some(addr.into()),
                ipv4_ipip_tunnel_addr: ipip.map(Into::into),
                ..Default::default()
            }),
            ipv4_vxlan_tunnel_addr: vtep.map(|v| v.0.into()),
            vxlan_tunnel_mac_addr: vtep.map(|v| v.1.into()),
            ..Default::default()
        }
    }

    fn pool(cidr: &str, ipip: EncapMode, vxlan: EncapMode) -> IPPoolSpec {
        IPPoolSpec {
            cidr: Some(cidr.parse().unwrap()),
            ipip_mode: Some(ipip),
            vxlan_mode: Some(vxlan),
            ..Default::default()
        }
    }

    fn affinity(node: &str, cidr: &str) -> Input {
        Input::AffinityUpdate(
            format!("{node}-{cidr}"),
            BlockAffinitySpec {
                state: AffinityState::Confirmed,
                node: node.into(),
                cidr: Some(cidr.parse().unwrap()),
                ..Default::default()
            },
        )
    }

    fn wep(node: &str, iface: &str, ip: &str) -> Input {
        Input::WorkloadUpdate(
            format!("{node}-{iface}"),
            WorkloadEndpointSpec {
                node: Some(node.into()),
                interface_name: Some(iface.into()),
                ip_networks: vec![format!("{ip}/32")],
                mac: Some("0a:58:c6:12:00:05".into()),
                ..Default::default()
            },
        )
    }

    /// n1 (192.0.2.11/24) and n2 (192.0.2.12/24) share a subnet; n3 (198.51.100.13/24) does not.
    fn cluster(ipip: EncapMode, vxlan: EncapMode) -> Calculator {
        let mut c = Calculator::new(LocalNode {
            name: N1.into(),
            underlay_dev: "eth0".into(),
        });
        let inputs = vec![
            Input::InterfaceMtu("eth0".into(), Some(1500)),
            Input::PoolUpdate("p".into(), pool("198.18.0.0/16", ipip, vxlan)),
            Input::NodeUpdate(
                "n1".into(),
                node(
                    "192.0.2.11/24",
                    Some("198.18.0.1"),
                    Some(("198.18.0.2", "66:00:00:00:00:01")),
                ),
            ),
            Input::NodeUpdate(
                "n2".into(),
                node(
                    "192.0.2.12/24",
                    Some("198.18.0.65"),
                    Some(("198.18.0.66", "66:00:00:00:00:02")),
                ),
            ),
            Input::NodeUpdate(
                "n3".into(),
                node(
                    "198.51.100.13/24",
                    Some("198.18.0.129"),
                    Some(("198.18.0.130", "66:00:00:00:00:03")),
                ),
            ),
            affinity("n1", "198.18.0.0/26"),
            affinity("n2", "198.18.0.64/26"),
            affinity("n3", "198.18.0.128/26"),
            wep("n1", "cali1234567890a", "198.18.0.5"),
        ];
        for i in inputs {
            assert!(c.apply(i));
        }
        c
    }

    fn route(d: &Desired, dst: &str) -> String {
        d.routes
            .get(&dst.parse().unwrap())
            .map(|t| t.to_string())
            .unwrap_or_else(|| "none".into())
    }

    #[test]
    fn local_workloads_and_blocks() {
        let d = cluster(EncapMode::Never, EncapMode::Never).desired();
        assert_eq!(route(&d, "198.18.0.0/26"), "blackhole");
        assert_eq!(route(&d, "198.18.0.5/32"), "dev cali1234567890a scope link");
        for k in [
            "net/ipv4/ip_forward",
            "net/ipv4/conf/cali1234567890a/proxy_arp",
            "net/ipv4/conf/cali1234567890a/forwarding",
        ] {
            assert_eq!(d.sysctls[k], "1", "{k}");
        }
        assert_eq!(d.sysctls["net/ipv4/neigh/cali1234567890a/proxy_delay"], "0");
        assert_eq!(
            d.neighbours[&("cali1234567890a".to_string(), "198.18.0.5".parse().unwrap())],
            "0a:58:c6:12:00:05".parse().unwrap()
        );
    }

    #[test]
    fn no_encap() {
        let d = cluster(EncapMode::Never, EncapMode::Never).desired();
        assert_eq!(route(&d, "198.18.0.64/26"), "via 192.0.2.12 dev eth0");
        assert_eq!(route(&d, "198.18.0.128/26"), "via 198.51.100.13 dev eth0");
        assert_eq!(d.devices, Devices::default());
        assert!(d.fdb.is_empty());
        assert_eq!(d.pod_mtu, 1500);
    }

    #[test]
    fn ipip_always() {
        let d = cluster(EncapMode::Always, EncapMode::Never).desired();
        assert_eq!(
            route(&d, "198.18.0.64/26"),
            "via 192.0.2.12 dev tunl0 onlink"
        );
        assert_eq!(
            route(&d, "198.18.0.128/26"),
            "via 198.51.100.13 dev tunl0 onlink"
        );
        let ipip = d.devices.ipip.clone().unwrap();
        assert_eq!(ipip.address, Some("198.18.0.1".parse().unwrap()));
        assert_eq!((ipip.mtu, d.pod_mtu), (1480, 1480));
        assert!(d.devices.vxlan.is_none());
    }

    #[test]
    fn vxlan_always() {
        let d = cluster(EncapMode::Never, EncapMode::Always).desired();
        assert_eq!(
            route(&d, "198.18.0.64/26"),
            "via 198.18.0.66 dev vxlan.calico onlink"
        );
        assert_eq!(
            route(&d, "198.18.0.128/26"),
            "via 198.18.0.130 dev vxlan.calico onlink"
        );
        let v = d.devices.vxlan.clone().unwrap();
        assert_eq!((v.vni, v.port, v.mtu), (4096, 4789, 1450));
        assert_eq!(v.local, "192.0.2.11".parse::<IpAddr>().unwrap());
        assert_eq!(v.parent, "eth0");
        assert_eq!(v.mac, Some("66:00:00:00:00:01".parse().unwrap()));
        assert_eq!(v.address, Some("198.18.0.2".parse().unwrap()));
        let mac2: Mac = "66:00:00:00:00:02".parse().unwrap();
        assert_eq!(
            d.neighbours[&("vxlan.calico".to_string(), "198.18.0.66".parse().unwrap())],
            mac2
        );
        assert_eq!(
            d.fdb[&("vxlan.calico".to_string(), mac2)],
            "192.0.2.12".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            d.fdb.len(),
            2,
            "one FDB entry per remote VTEP, none for ourselves"
        );
        assert_eq!(d.pod_mtu, 1450);
        assert!(d.devices.ipip.is_none());
    }

    #[test]
    fn ipip_cross_subnet_both_ways() {
        let d = cluster(EncapMode::CrossSubnet, EncapMode::Never).desired();
        assert_eq!(route(&d, "198.18.0.64/26"), "via 192.0.2.12 dev eth0");
        assert_eq!(
            route(&d, "198.18.0.128/26"),
            "via 198.51.100.13 dev tunl0 onlink"
        );
        assert!(d.devices.ipip.is_some());
    }

    #[test]
    fn vxlan_cross_subnet_both_ways() {
        let d = cluster(EncapMode::Never, EncapMode::CrossSubnet).desired();
        assert_eq!(route(&d, "198.18.0.64/26"), "via 192.0.2.12 dev eth0");
        assert_eq!(
            route(&d, "198.18.0.128/26"),
            "via 198.18.0.130 dev vxlan.calico onlink"
        );
        assert!(d.devices.vxlan.is_some());
    }

    #[test]
    fn cross_subnet_follows_our_own_prefix() {
        // Widen n1's prefix so that n3 is "inside" it: now n3 is reached directly too.
        let mut c = cluster(EncapMode::CrossSubnet, EncapMode::Never);
        c.apply(Input::NodeUpdate(
            "n1".into(),
            node("192.0.2.11/8", Some("198.18.0.1"), None),
        ));
        let d = c.desired();
        assert_eq!(
            route(&d, "198.18.0.128/26"),
            "via 198.51.100.13 dev tunl0 onlink"
        );
        c.apply(Input::NodeUpdate(
            "n1".into(),
            node("192.0.2.11/1", Some("198.18.0.1"), None),
        ));
        assert_eq!(
            route(&c.desired(), "198.18.0.128/26"),
            "via 198.51.100.13 dev eth0"
        );
    }

    #[test]
    fn vxlan_needs_the_remote_vtep() {
        let mut c = cluster(EncapMode::Never, EncapMode::Always);
        c.apply(Input::NodeUpdate(
            "n2".into(),
            node("192.0.2.12/24", None, None),
        ));
        let d = c.desired();
        assert_eq!(route(&d, "198.18.0.64/26"), "none");
        assert_eq!(d.fdb.len(), 1);
    }

    #[test]
    fn borrowed_addresses() {
        let mut c = cluster(EncapMode::Never, EncapMode::Always);
        // n2 runs a pod with an address from n3's block, and one from ours.
        c.apply(wep("n2", "calib", "198.18.0.140"));
        c.apply(wep("n2", "calic", "198.18.0.9"));
        // n3 runs a pod from its own block: no /32 needed.
        c.apply(wep("n3", "calid", "198.18.0.141"));
        // We run a pod borrowed from n2's block: the local /32 wins over the block route.
        c.apply(wep("n1", "calie", "198.18.0.70"));
        let d = c.desired();
        assert_eq!(
            route(&d, "198.18.0.140/32"),
            "via 198.18.0.66 dev vxlan.calico onlink"
        );
        assert_eq!(
            route(&d, "198.18.0.9/32"),
            "via 198.18.0.66 dev vxlan.calico onlink"
        );
        assert_eq!(route(&d, "198.18.0.0/26"), "blackhole");
        assert_eq!(route(&d, "198.18.0.141/32"), "none");
        assert_eq!(route(&d, "198.18.0.70/32"), "dev calie scope link");
        // Borrowed routes follow CrossSubnet like block routes do.
        c.apply(Input::PoolUpdate(
            "p".into(),
            pool("198.18.0.0/16", EncapMode::Never, EncapMode::CrossSubnet),
        ));
        assert_eq!(
            route(&c.desired(), "198.18.0.140/32"),
            "via 192.0.2.12 dev eth0"
        );
    }

    #[test]
    fn disabled_pools_keep_routing_existing_blocks() {
        // Calico: `disabled` stops new allocations; pods already in the pool keep working.
        let mut c = cluster(EncapMode::Always, EncapMode::Never);
        let mut p = pool("198.18.0.0/16", EncapMode::Always, EncapMode::Never);
        p.disabled = true;
        p.nat_outgoing = true;
        c.apply(Input::PoolUpdate("p".into(), p));
        let d = c.desired();
        assert_eq!(
            route(&d, "198.18.0.64/26"),
            "via 192.0.2.12 dev tunl0 onlink"
        );
        assert!(d.devices.ipip.is_some());
        assert_eq!(d.nat.masq_pools.len(), 1);
    }

    #[test]
    fn blocks_outside_every_pool_are_not_routed() {
        let mut c = cluster(EncapMode::Never, EncapMode::Never);
        c.apply(affinity("n2", "203.0.113.0/26"));
        c.apply(Input::PoolRemove("p".into()));
        let d = c.desired();
        assert_eq!(route(&d, "203.0.113.0/26"), "none");
        assert_eq!(route(&d, "198.18.0.64/26"), "none");
        // Our own blocks stay blackholed: they are ours whatever the pools say.
        assert_eq!(route(&d, "198.18.0.0/26"), "blackhole");
    }

    #[test]
    fn mode_switch_sequence() {
        let mut c = cluster(EncapMode::Always, EncapMode::Never);
        let steps = [
            (
                EncapMode::Always,
                EncapMode::Never,
                "via 198.51.100.13 dev tunl0 onlink",
                true,
                false,
            ),
            (
                EncapMode::Never,
                EncapMode::Never,
                "via 198.51.100.13 dev eth0",
                false,
                false,
            ),
            (
                EncapMode::Never,
                EncapMode::Always,
                "via 198.18.0.130 dev vxlan.calico onlink",
                false,
                true,
            ),
            (
                EncapMode::Never,
                EncapMode::CrossSubnet,
                "via 198.18.0.130 dev vxlan.calico onlink",
                false,
                true,
            ),
            (
                EncapMode::CrossSubnet,
                EncapMode::Never,
                "via 198.51.100.13 dev tunl0 onlink",
                true,
                false,
            ),
            (
                EncapMode::Always,
                EncapMode::Never,
                "via 198.51.100.13 dev tunl0 onlink",
                true,
                false,
            ),
        ];
        for (ipip, vxlan, want, tunl, vx) in steps {
            c.apply(Input::PoolUpdate(
                "p".into(),
                pool("198.18.0.0/16", ipip, vxlan),
            ));
            let d = c.desired();
            assert_eq!(route(&d, "198.18.0.128/26"), want, "{ipip:?}/{vxlan:?}");
            assert_eq!(d.devices.ipip.is_some(), tunl, "{ipip:?}/{vxlan:?}");
            assert_eq!(d.devices.vxlan.is_some(), vx, "{ipip:?}/{vxlan:?}");
            // Every remote block has exactly one route in every mode.
            assert_eq!(d.routes.len(), 4);
        }
    }

    #[test]
    fn two_pools_two_modes() {
        let mut c = cluster(EncapMode::Always, EncapMode::Never);
        c.apply(Input::PoolUpdate(
            "q".into(),
            pool("198.19.0.0/16", EncapMode::Never, EncapMode::Always),
        ));
        c.apply(affinity("n3", "198.19.0.0/26"));
        let d = c.desired();
        assert_eq!(
            route(&d, "198.18.0.128/26"),
            "via 198.51.100.13 dev tunl0 onlink"
        );
        assert_eq!(
            route(&d, "198.19.0.0/26"),
            "via 198.18.0.130 dev vxlan.calico onlink"
        );
        assert_eq!(d.pod_mtu, 1450, "the smallest encapsulation MTU wins");
    }

    #[test]
    fn mtu_rules() {
        let mut c = cluster(EncapMode::Always, EncapMode::Never);
        c.apply(Input::InterfaceMtu("eth1".into(), Some(9000)));
        c.apply(Input::InterfaceMtu("cali99".into(), Some(1000)));
        c.apply(Input::InterfaceMtu("eth0".into(), Some(1400)));
        assert_eq!(c.desired().devices.ipip.unwrap().mtu, 1380);
        c.apply(Input::Config(Box::new(FelixConfigurationSpec {
            ipip_mtu: Some(1300),
            ..Default::default()
        })));
        let d = c.desired();
        assert_eq!((d.devices.ipip.unwrap().mtu, d.pod_mtu), (1300, 1300));
        c.apply(Input::Config(Box::new(FelixConfigurationSpec {
            mtu_iface_pattern: Some("^eth1$".into()),
            ..Default::default()
        })));
        // The underlay device always counts, whatever the pattern says.
        assert_eq!(c.desired().devices.ipip.unwrap().mtu, 1380);
        c.apply(Input::InterfaceMtu("eth0".into(), None));
        assert_eq!(c.desired().devices.ipip.unwrap().mtu, 8980);
    }

    #[test]
    fn vxlan_config() {
        let mut c = cluster(EncapMode::Never, EncapMode::Always);
        c.apply(Input::Config(Box::new(FelixConfigurationSpec {
            vxlan_vni: Some(4100),
            vxlan_port: Some(8472),
            vxlan_mtu: Some(1400),
            ..Default::default()
        })));
        let v = c.desired().devices.vxlan.unwrap();
        assert_eq!((v.vni, v.port, v.mtu), (4100, 8472, 1400));
    }

    #[test]
    fn nat_rules() {
        let mut c = cluster(EncapMode::Never, EncapMode::Never);
        let mut p = pool("198.19.0.0/16", EncapMode::Never, EncapMode::Never);
        p.nat_outgoing = true;
        c.apply(Input::PoolUpdate("q".into(), p));
        c.apply(Input::Config(Box::new(FelixConfigurationSpec {
            nat_outgoing_address: Some("192.0.2.99".into()),
            ..Default::default()
        })));
        let n = c.desired().nat;
        assert_eq!(n.all_pools.len(), 2);
        assert_eq!(
            n.masq_pools
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            ["198.19.0.0/16"]
        );
        assert_eq!(n.nat_outgoing_address, Some("192.0.2.99".parse().unwrap()));
    }

    #[test]
    fn bgp_routes() {
        let mut c = cluster(EncapMode::Always, EncapMode::Never);
        let nh = |s: &str| vec![s.parse::<IpAddr>().unwrap()];
        // A block the datastore does not know (e.g. from a node we have no affinity for yet).
        c.apply(Input::BgpRoute(
            "198.18.1.0/26".parse().unwrap(),
            nh("192.0.2.12"),
        ));
        // The datastore wins for prefixes it knows.
        c.apply(Input::BgpRoute(
            "198.18.0.64/26".parse().unwrap(),
            nh("192.0.2.99"),
        ));
        // Outside every pool: plain routing via the next hop.
        c.apply(Input::BgpRoute(
            "203.0.113.0/24".parse().unwrap(),
            nh("192.0.2.1"),
        ));
        // Our own advertisement reflected back.
        c.apply(Input::BgpRoute(
            "198.18.2.0/26".parse().unwrap(),
            nh("192.0.2.11"),
        ));
        let d = c.desired();
        assert_eq!(
            route(&d, "198.18.1.0/26"),
            "via 192.0.2.12 dev tunl0 onlink"
        );
        assert_eq!(
            route(&d, "198.18.0.64/26"),
            "via 192.0.2.12 dev tunl0 onlink"
        );
        assert_eq!(route(&d, "203.0.113.0/24"), "via 192.0.2.1 dev eth0");
        assert_eq!(route(&d, "198.18.2.0/26"), "none");
        // VXLAN pools ignore BGP.
        c.apply(Input::PoolUpdate(
            "p".into(),
            pool("198.18.0.0/16", EncapMode::Never, EncapMode::Always),
        ));
        assert_eq!(route(&c.desired(), "198.18.1.0/26"), "none");
        // Withdrawal.
        assert!(c.apply(Input::BgpRoute("203.0.113.0/24".parse().unwrap(), vec![])));
        assert_eq!(route(&c.desired(), "203.0.113.0/24"), "none");
    }

    #[test]
    fn unchanged_inputs_report_no_change() {
        let mut c = cluster(EncapMode::Always, EncapMode::Never);
        assert!(!c.apply(affinity("n2", "198.18.0.64/26")));
        assert!(!c.apply(Input::InterfaceMtu("eth0".into(), Some(1500))));
        assert!(!c.apply(Input::PoolRemove("nope".into())));
    }

    #[test]
    fn ipv6_no_encap() {
        let mut c = cluster(EncapMode::Always, EncapMode::Never);
        let v6node = |v4: &str, v6: &str| {
            let mut n = node(v4, None, None);
            n.bgp.as_mut().unwrap().ipv6_address = Some(v6.into());
            n
        };
        c.apply(Input::NodeUpdate(
            "n1".into(),
            v6node("192.0.2.11/24", "2001:db8:1::11/64"),
        ));
        c.apply(Input::NodeUpdate(
            "n2".into(),
            v6node("192.0.2.12/24", "2001:db8:1::12/64"),
        ));
        c.apply(Input::PoolUpdate(
            "v6".into(),
            IPPoolSpec {
                cidr: Some("2001:db8:ff::/48".parse().unwrap()),
                ..Default::default()
            },
        ));
        c.apply(affinity("n1", "2001:db8:ff::/122"));
        c.apply(affinity("n2", "2001:db8:ff::40/122"));
        c.apply(Input::WorkloadUpdate(
            "n1-v6".into(),
            WorkloadEndpointSpec {
                node: Some("n1".into()),
                interface_name: Some("cali6".into()),
                ip_networks: vec!["198.18.0.6/32".into(), "2001:db8:ff::6/128".into()],
                mac: Some("0a:58:c6:12:00:06".into()),
                ..Default::default()
            },
        ));
        c.apply(Input::BgpRoute(
            "2001:db8:aa::/64".parse().unwrap(),
            vec![
                "2001:db8:1::12".parse().unwrap(),
                "192.0.2.12".parse().unwrap(),
            ],
        ));
        let d = c.desired();
        assert_eq!(route(&d, "2001:db8:ff::/122"), "blackhole");
        assert_eq!(route(&d, "2001:db8:ff::6/128"), "dev cali6 scope link");
        assert_eq!(route(&d, "198.18.0.6/32"), "dev cali6 scope link");
        assert_eq!(
            route(&d, "2001:db8:ff::40/122"),
            "via 2001:db8:1::12 dev eth0"
        );
        assert_eq!(route(&d, "2001:db8:aa::/64"), "via 2001:db8:1::12 dev eth0");
        assert_eq!(d.sysctls["net/ipv6/conf/cali6/proxy_ndp"], "1");
        let mac: Mac = "0a:58:c6:12:00:06".parse().unwrap();
        for ip in ["198.18.0.6", "2001:db8:ff::6"] {
            assert_eq!(
                d.neighbours[&("cali6".to_string(), ip.parse().unwrap())],
                mac
            );
        }
        assert_eq!(d.sysctls["net/ipv6/conf/cali6/forwarding"], "1");
        assert_eq!(d.sysctls["net/ipv6/conf/all/forwarding"], "1");
        // The IPv4 side is unchanged by the IPv6 pool.
        assert_eq!(
            route(&d, "198.18.0.64/26"),
            "via 192.0.2.12 dev tunl0 onlink"
        );
        assert_eq!((d.nat.all_pools.len(), d.nat.all_pools6.len()), (1, 1));
        // VXLAN for IPv6 needs the remote node's IPv6 VTEP: without one, no remote route rather
        // than a wrong one.
        c.apply(Input::PoolUpdate(
            "v6".into(),
            IPPoolSpec {
                cidr: Some("2001:db8:ff::/48".parse().unwrap()),
                vxlan_mode: Some(EncapMode::Always),
                ..Default::default()
            },
        ));
        let d = c.desired();
        assert_eq!(route(&d, "2001:db8:ff::40/122"), "none");
        assert_eq!(route(&d, "2001:db8:ff::/122"), "blackhole");
    }

    #[test]
    fn ipv6_vxlan_always_and_cross_subnet() {
        let mut c = cluster(EncapMode::Never, EncapMode::Never);
        let v6node = |v4: &str, v6: &str, vtep: &str, mac: &str| {
            let mut n = node(v4, None, None);
            n.bgp.as_mut().unwrap().ipv6_address = Some(v6.into());
            n.ipv6_vxlan_tunnel_addr = Some(vtep.into());
            n.vxlan_tunnel_mac_addr_v6 = Some(mac.into());
            n
        };
        c.apply(Input::NodeUpdate(
            "n1".into(),
            v6node(
                "192.0.2.11/24",
                "2001:db8:1::11/64",
                "2001:db8:ff::1",
                "66:00:00:00:06:01",
            ),
        ));
        c.apply(Input::NodeUpdate(
            "n2".into(),
            v6node(
                "192.0.2.12/24",
                "2001:db8:1::12/64",
                "2001:db8:ff::41",
                "66:00:00:00:06:02",
            ),
        ));
        c.apply(Input::NodeUpdate(
            "n3".into(),
            v6node(
                "198.51.100.13/24",
                "2001:db8:2::13/64",
                "2001:db8:ff::81",
                "66:00:00:00:06:03",
            ),
        ));
        let v6pool = |mode| IPPoolSpec {
            cidr: Some("2001:db8:ff::/48".parse().unwrap()),
            vxlan_mode: Some(mode),
            ..Default::default()
        };
        c.apply(Input::PoolUpdate("v6".into(), v6pool(EncapMode::Always)));
        c.apply(affinity("n2", "2001:db8:ff::40/122"));
        c.apply(affinity("n3", "2001:db8:ff::80/122"));
        let d = c.desired();
        assert_eq!(
            route(&d, "2001:db8:ff::40/122"),
            "via 2001:db8:ff::41 dev vxlan-v6.calico onlink"
        );
        let v = d.devices.vxlan6.clone().unwrap();
        assert_eq!(v.local, "2001:db8:1::11".parse::<IpAddr>().unwrap());
        assert_eq!(v.address, Some("2001:db8:ff::1".parse().unwrap()));
        assert_eq!((v.mtu, d.pod_mtu), (1430, 1430));
        assert!(
            d.devices.vxlan.is_none(),
            "the IPv4 pool does not use VXLAN"
        );
        let mac: Mac = "66:00:00:00:06:02".parse().unwrap();
        assert_eq!(
            d.neighbours[&(
                "vxlan-v6.calico".to_string(),
                "2001:db8:ff::41".parse().unwrap()
            )],
            mac
        );
        assert_eq!(
            d.fdb[&("vxlan-v6.calico".to_string(), mac)],
            "2001:db8:1::12".parse::<IpAddr>().unwrap()
        );
        c.apply(Input::PoolUpdate(
            "v6".into(),
            v6pool(EncapMode::CrossSubnet),
        ));
        let d = c.desired();
        assert_eq!(
            route(&d, "2001:db8:ff::40/122"),
            "via 2001:db8:1::12 dev eth0"
        );
        assert_eq!(
            route(&d, "2001:db8:ff::80/122"),
            "via 2001:db8:ff::81 dev vxlan-v6.calico onlink"
        );
        c.apply(Input::PoolUpdate("v6".into(), v6pool(EncapMode::Never)));
        let d = c.desired();
        assert!(d.devices.vxlan6.is_none());
        assert!(d.fdb.is_empty());
    }

    #[test]
    fn nothing_known_about_ourselves_yet() {
        // Before our own Node arrives: no VXLAN device (no local address), routes still computed.
        let mut c = Calculator::new(LocalNode {
            name: N1.into(),
            underlay_dev: "eth0".into(),
        });
        c.apply(Input::PoolUpdate(
            "p".into(),
            pool("198.18.0.0/16", EncapMode::Never, EncapMode::Always),
        ));
        let d = c.desired();
        assert!(d.devices.vxlan.is_none());
        assert_eq!(d.sysctls.len(), 1);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use api::{AffinityState, NodeBgpSpec};
    use proptest::prelude::*;

    const MODES: [EncapMode; 3] = [EncapMode::Never, EncapMode::Always, EncapMode::CrossSubnet];

    /// Inputs drawn from a small universe, so that they collide and overwrite each other.
    fn input() -> impl Strategy<Value = Input> {
        prop_oneof![
            (0..2usize, 0..3usize, 0..3usize, any::<bool>()).prop_map(|(p, i, v, nat)| {
                Input::PoolUpdate(
                    format!("p{p}"),
                    IPPoolSpec {
                        cidr: Some(["198.18.0.0/16", "198.19.0.0/16"][p].parse().unwrap()),
                        ipip_mode: Some(MODES[i]),
                        vxlan_mode: Some(MODES[v]),
                        nat_outgoing: nat,
                        ..Default::default()
                    },
                )
            }),
            (0..2usize).prop_map(|p| Input::PoolRemove(format!("p{p}"))),
            (0..4usize, any::<bool>()).prop_map(|(n, far)| {
                let ip = if far {
                    format!("198.51.100.{}/24", 10 + n)
                } else {
                    format!("192.0.2.{}/24", 10 + n)
                };
                Input::NodeUpdate(
                    format!("n{n}"),
                    NodeSpec {
                        bgp: Some(NodeBgpSpec {
                            ipv4_address: Some(ip),
                            ipv4_ipip_tunnel_addr: Some(format!("198.18.255.{n}")),
                            ..Default::default()
                        }),
                        ipv4_vxlan_tunnel_addr: Some(format!("198.18.254.{n}")),
                        vxlan_tunnel_mac_addr: Some(format!("66:00:00:00:00:0{n}")),
                        ..Default::default()
                    },
                )
            }),
            (0..4usize).prop_map(|n| Input::NodeRemove(format!("n{n}"))),
            (0..8u32, 0..4usize, 0..2usize).prop_map(|(b, n, p)| Input::AffinityUpdate(
                format!("b{b}-{p}"),
                BlockAffinitySpec {
                    state: AffinityState::Confirmed,
                    node: format!("n{n}"),
                    cidr: Some(format!("198.{}.{}.0/26", 18 + p, b).parse().unwrap()),
                    ..Default::default()
                },
            )),
            (0..8u32, 0..2usize).prop_map(|(b, p)| Input::AffinityRemove(format!("b{b}-{p}"))),
            (0..6u32, 0..4usize, 0..8u32).prop_map(|(w, n, b)| Input::WorkloadUpdate(
                format!("w{w}"),
                WorkloadEndpointSpec {
                    node: Some(format!("n{n}")),
                    interface_name: Some(format!("cali{w}")),
                    ip_networks: vec![format!("198.18.{b}.{}/32", 5 + w)],
                    ..Default::default()
                },
            )),
            (0..4u32, 0..4u8).prop_map(|(b, h)| Input::BgpRoute(
                format!("198.18.{}.64/26", b).parse().unwrap(),
                if h == 0 {
                    vec![]
                } else {
                    vec![format!("192.0.2.{}", 10 + h).parse().unwrap()]
                },
            )),
        ]
    }

    fn calc() -> Calculator {
        Calculator::new(LocalNode {
            name: "n0".into(),
            underlay_dev: "eth0".into(),
        })
    }

    proptest! {
        /// The desired state depends on the inputs' final values, not on the order in which
        /// different resources arrived.
        #[test]
        fn order_of_distinct_resources_does_not_matter(
            inputs in proptest::collection::vec(input(), 1..40),
            seed in any::<u64>(),
        ) {
            // Keep the last update per resource so that reordering cannot change final values.
            let mut last: BTreeMap<String, Input> = BTreeMap::new();
            for i in inputs {
                let key = match &i {
                    Input::PoolUpdate(k, _) | Input::PoolRemove(k) => format!("pool/{k}"),
                    Input::NodeUpdate(k, _) | Input::NodeRemove(k) => format!("node/{k}"),
                    Input::AffinityUpdate(k, _) | Input::AffinityRemove(k) => format!("aff/{k}"),
                    Input::WorkloadUpdate(k, _) | Input::WorkloadRemove(k) => format!("wep/{k}"),
                    Input::BgpRoute(p, _) => format!("bgp/{p}"),
                    Input::Config(_) => "config".into(),
                    Input::InterfaceMtu(k, _) => format!("mtu/{k}"),
                };
                last.insert(key, i);
            }
            let forward: Vec<Input> = last.values().cloned().collect();
            let mut shuffled = forward.clone();
            // A deterministic shuffle from the seed.
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let (mut a, mut b) = (calc(), calc());
            forward.into_iter().for_each(|i| { a.apply(i); });
            shuffled.into_iter().for_each(|i| { b.apply(i); });
            prop_assert_eq!(a.desired(), b.desired());
        }

        /// Whatever the inputs: routes only use devices that exist or are desired, tunnel routes
        /// only exist with their device, and every VXLAN next hop has its neighbour entry.
        #[test]
        fn routes_are_consistent_with_devices(inputs in proptest::collection::vec(input(), 1..60)) {
            let mut c = calc();
            for i in inputs {
                c.apply(i);
                let d = c.desired();
                for (dst, t) in &d.routes {
                    match t {
                        RouteTarget::Blackhole => {}
                        RouteTarget::Link { dev } => prop_assert!(dev.starts_with("cali")),
                        RouteTarget::Via { gw, dev, onlink } => {
                            match dev.as_str() {
                                "eth0" => prop_assert!(!onlink),
                                "tunl0" => prop_assert!(d.devices.ipip.is_some() && *onlink),
                                "vxlan.calico" => {
                                    let IpAddr::V4(gw) = gw else { panic!("v6 gw") };
                                    prop_assert!(d.devices.vxlan.is_some() && *onlink);
                                    prop_assert!(
                                        d.neighbours.contains_key(&(VXLAN_DEVICE.to_string(), IpAddr::V4(*gw))),
                                        "{dst} via {gw}: no neighbour entry"
                                    );
                                }
                                other => prop_assert!(false, "unexpected device {other}"),
                            }
                        }
                    }
                }
            }
        }
    }
}
