//! What tabby-node writes before (and while) it runs, as calico-node's `startup` and
//! `allocateip` do: this node's Node resource, the default IPPool on a cluster's first start,
//! the tunnel addresses the pools call for, and the node-name file the CNI plugin reads.
//!
//! Every datastore write is a compare-and-swap loop: read, change, write with the revision
//! read, and start again on a conflict.
//!
//! # Default pool settings (environment, read once at start)
//!
//! | variable (`TABBY_…` alias wins) | default | Calico's |
//! |---|---|---|
//! | `CALICO_IPV4POOL_CIDR` / `TABBY_IPV4POOL_CIDR` | `192.168.0.0/16` | same |
//! | `CALICO_IPV4POOL_IPIP` / `TABBY_IPV4POOL_IPIP` | `Always`, or `Never` when VXLAN is on | `Always` (both on is an error) |
//! | `CALICO_IPV4POOL_VXLAN` / `TABBY_IPV4POOL_VXLAN` | `Never` | same |
//! | `CALICO_IPV4POOL_NAT_OUTGOING` / `TABBY_IPV4POOL_NAT_OUTGOING` | `true` | same |
//! | `CALICO_IPV4POOL_BLOCK_SIZE` / `TABBY_IPV4POOL_BLOCK_SIZE` | `26` | same |
//! | `CALICO_IPV4POOL_NODE_SELECTOR` / `TABBY_IPV4POOL_NODE_SELECTOR` | `all()` | same |
//! | `NO_DEFAULT_POOLS` / `TABBY_NO_DEFAULT_POOLS` | `false` | same |
//! | `AS` / `TABBY_AS` | unset: the cluster ASN | same (`AS`) |
//! | `CALICO_IPV6POOL_CIDR` / `TABBY_IPV6POOL_CIDR` | unset: no IPv6 pool | a random ULA /48 |
//! | `CALICO_IPV6POOL_VXLAN` / `TABBY_IPV6POOL_VXLAN` | `Never` | same |
//! | `CALICO_IPV6POOL_NAT_OUTGOING` / `TABBY_IPV6POOL_NAT_OUTGOING` | `false` | same |
//! | `CALICO_IPV6POOL_BLOCK_SIZE` / `TABBY_IPV6POOL_BLOCK_SIZE` | `122` | same |
//! | `CALICO_IPV6POOL_NODE_SELECTOR` / `TABBY_IPV6POOL_NODE_SELECTOR` | `all()` | same |
//!
//! Pools are created per family, as Calico does: the IPv4 default when there is no IPv4 pool,
//! the IPv6 default when one is configured and there is no IPv6 pool.
//!
//! Where Calico rejects `CALICO_IPV4POOL_VXLAN=Always` without `CALICO_IPV4POOL_IPIP=Never`,
//! tabby takes VXLAN alone to mean IPIP off: one variable is enough to choose VXLAN.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use api::{AllowedUse, EncapMode, IPPool, IPPoolSpec, Key, Kind, Node, Resource, Selector};
use datastore::Datastore;
use ipam::{AutoAssignRequest, Family, Ipam, ipip_tunnel_handle, vxlan_tunnel_handle};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use sha1::{Digest, Sha1};
use tracing::info;

use crate::Error;

/// Calico's name for the pool created at install.
pub const DEFAULT_POOL_NAME: &str = "default-ipv4-ippool";
/// Calico's default pool CIDR.
pub const DEFAULT_POOL_CIDR: &str = "192.168.0.0/16";
/// Where the CNI plugin looks for the node name (`nodename_file`), under the state dir.
pub const NODENAME_FILE: &str = "nodename";
/// The `spec.addresses` type of the address tabby-node detected (Calico's name).
pub const CALICO_NODE_IP: &str = "CalicoNodeIP";
/// Compare-and-swap rounds before a write gives up.
pub const MAX_RETRIES: usize = 100;

/// The default IPPool's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DefaultPool {
    /// `false` with `NO_DEFAULT_POOLS=true`.
    pub create: bool,
    pub cidr: Ipv4Net,
    pub ipip_mode: EncapMode,
    pub vxlan_mode: EncapMode,
    pub nat_outgoing: bool,
    pub block_size: u8,
    pub node_selector: String,
    /// The default IPv6 pool, created only when `CALICO_IPV6POOL_CIDR` is set (Calico invents
    /// a random ULA prefix instead; tabby asks for one).
    pub v6: Option<DefaultPool6>,
}

/// The default IPv6 IPPool's settings (`CALICO_IPV6POOL_*`).
#[derive(Clone, Debug, PartialEq)]
pub struct DefaultPool6 {
    pub cidr: Ipv6Net,
    pub vxlan_mode: EncapMode,
    /// Calico: `false` for IPv6 unless set.
    pub nat_outgoing: bool,
    pub block_size: u8,
    pub node_selector: String,
}

/// Calico's name for the IPv6 pool created at install.
pub const DEFAULT_POOL6_NAME: &str = "default-ipv6-ippool";

impl DefaultPool6 {
    pub fn pool(&self) -> IPPool {
        IPPool::new(
            DEFAULT_POOL6_NAME,
            IPPoolSpec {
                cidr: Some(IpNet::V6(self.cidr)),
                vxlan_mode: Some(self.vxlan_mode),
                ipip_mode: Some(EncapMode::Never),
                nat_outgoing: self.nat_outgoing,
                block_size: Some(self.block_size),
                node_selector: Some(self.node_selector.clone()),
                ..IPPoolSpec::default()
            },
        )
    }
}

impl Default for DefaultPool {
    fn default() -> Self {
        DefaultPool {
            create: true,
            cidr: DEFAULT_POOL_CIDR.parse().expect("constant"),
            ipip_mode: EncapMode::Always,
            vxlan_mode: EncapMode::Never,
            nat_outgoing: true,
            block_size: api::ippool::DEFAULT_BLOCK_SIZE_V4,
            node_selector: "all()".into(),
            v6: None,
        }
    }
}

/// Looks `NAME` up as `TABBY_NAME` first, then `CALICO_NAME` (or the bare name for `AS` and
/// `NO_DEFAULT_POOLS`).
fn lookup(env: &dyn Fn(&str) -> Option<String>, calico: &str) -> Option<(String, String)> {
    let tabby = match calico.strip_prefix("CALICO_") {
        Some(rest) => format!("TABBY_{rest}"),
        None => format!("TABBY_{calico}"),
    };
    [tabby, calico.to_string()]
        .into_iter()
        .find_map(|n| env(&n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
}

fn setting(name: &str, value: &str, reason: impl Into<String>) -> Error {
    Error::Setting {
        name: name.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn parse_mode(name: &str, v: &str) -> Result<EncapMode, Error> {
    match v.trim().to_ascii_lowercase().as_str() {
        "always" => Ok(EncapMode::Always),
        "crosssubnet" | "cross-subnet" => Ok(EncapMode::CrossSubnet),
        "never" | "off" | "false" => Ok(EncapMode::Never),
        _ => Err(setting(name, v, "expected Always, CrossSubnet or Never")),
    }
}

fn parse_bool(name: &str, v: &str) -> Result<bool, Error> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(setting(name, v, "expected true or false")),
    }
}

impl DefaultPool {
    /// Reads the settings from an environment (`std::env::var` in the binary, a map in tests).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<DefaultPool, Error> {
        let mut p = DefaultPool::default();
        if let Some((n, v)) = lookup(env, "NO_DEFAULT_POOLS") {
            p.create = !parse_bool(&n, &v)?;
        }
        if let Some((n, v)) = lookup(env, "CALICO_IPV4POOL_CIDR") {
            let net: Ipv4Net = v
                .trim()
                .parse()
                .map_err(|e| setting(&n, &v, format!("not an IPv4 CIDR: {e}")))?;
            if net.trunc() != net {
                return Err(setting(
                    &n,
                    &v,
                    format!("host bits set; did you mean {}?", net.trunc()),
                ));
            }
            p.cidr = net;
        }
        let vxlan = lookup(env, "CALICO_IPV4POOL_VXLAN");
        if let Some((n, v)) = &vxlan {
            p.vxlan_mode = parse_mode(n, v)?;
        }
        match lookup(env, "CALICO_IPV4POOL_IPIP") {
            Some((n, v)) => {
                p.ipip_mode = parse_mode(&n, &v)?;
                if p.ipip_mode.enabled() && p.vxlan_mode.enabled() {
                    return Err(setting(
                        &n,
                        &v,
                        "IPIP and VXLAN cannot both be enabled on the default pool",
                    ));
                }
            }
            None if p.vxlan_mode.enabled() => p.ipip_mode = EncapMode::Never,
            None => {}
        }
        if let Some((n, v)) = lookup(env, "CALICO_IPV4POOL_NAT_OUTGOING") {
            p.nat_outgoing = parse_bool(&n, &v)?;
        }
        if let Some((n, v)) = lookup(env, "CALICO_IPV4POOL_BLOCK_SIZE") {
            let b: u8 = v
                .trim()
                .parse()
                .map_err(|_| setting(&n, &v, "not a number"))?;
            if !(20..=32).contains(&b) || b < p.cidr.prefix_len() {
                return Err(setting(
                    &n,
                    &v,
                    format!(
                        "must be within 20..=32 and not shorter than /{}",
                        p.cidr.prefix_len()
                    ),
                ));
            }
            p.block_size = b;
        }
        if let Some((n, v)) = lookup(env, "CALICO_IPV4POOL_NODE_SELECTOR") {
            Selector::parse(&v).map_err(|e| setting(&n, &v, e.to_string()))?;
            p.node_selector = v;
        }
        if let Some((n, v)) = lookup(env, "CALICO_IPV6POOL_CIDR") {
            let cidr: Ipv6Net = v
                .trim()
                .parse()
                .map_err(|e| setting(&n, &v, format!("not an IPv6 CIDR: {e}")))?;
            if cidr.trunc() != cidr {
                return Err(setting(
                    &n,
                    &v,
                    format!("host bits set; did you mean {}?", cidr.trunc()),
                ));
            }
            let mut p6 = DefaultPool6 {
                cidr,
                vxlan_mode: EncapMode::Never,
                nat_outgoing: false,
                block_size: api::ippool::DEFAULT_BLOCK_SIZE_V6,
                node_selector: "all()".into(),
            };
            if let Some((n, v)) = lookup(env, "CALICO_IPV6POOL_VXLAN") {
                p6.vxlan_mode = parse_mode(&n, &v)?;
            }
            if let Some((n, v)) = lookup(env, "CALICO_IPV6POOL_NAT_OUTGOING") {
                p6.nat_outgoing = parse_bool(&n, &v)?;
            }
            if let Some((n, v)) = lookup(env, "CALICO_IPV6POOL_BLOCK_SIZE") {
                let b: u8 = v
                    .trim()
                    .parse()
                    .map_err(|_| setting(&n, &v, "not a number"))?;
                if !(116..=128).contains(&b) || b < cidr.prefix_len() {
                    return Err(setting(
                        &n,
                        &v,
                        format!(
                            "must be within 116..=128 and not shorter than /{}",
                            cidr.prefix_len()
                        ),
                    ));
                }
                p6.block_size = b;
            }
            if let Some((n, v)) = lookup(env, "CALICO_IPV6POOL_NODE_SELECTOR") {
                Selector::parse(&v).map_err(|e| setting(&n, &v, e.to_string()))?;
                p6.node_selector = v;
            }
            p.v6 = Some(p6);
        }
        Ok(p)
    }

    pub fn pool(&self) -> IPPool {
        IPPool::new(
            DEFAULT_POOL_NAME,
            IPPoolSpec {
                cidr: Some(IpNet::V4(self.cidr)),
                ipip_mode: Some(self.ipip_mode),
                vxlan_mode: Some(self.vxlan_mode),
                nat_outgoing: self.nat_outgoing,
                block_size: Some(self.block_size),
                node_selector: Some(self.node_selector.clone()),
                ..IPPoolSpec::default()
            },
        )
    }
}

/// The node's ASN from `AS` / `TABBY_AS` (unset: the cluster-wide one applies).
pub fn as_number_from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<u32>, Error> {
    match lookup(env, "AS") {
        None => Ok(None),
        Some((n, v)) => api::numorstring::parse_as_number(v.trim())
            .map(Some)
            .map_err(|e| setting(&n, &v, e)),
    }
}

fn ds_err(what: impl Into<String>) -> impl FnOnce(datastore::Error) -> Error {
    let what = what.into();
    move |source| Error::Datastore { what, source }
}

/// Creates the default pools on a cluster's first start, per family as Calico does: the IPv4
/// one when there is no IPv4 pool, the IPv6 one (if configured) when there is no IPv6 pool.
/// Returns the names of the pools this call created; losing the race to another node is fine.
pub async fn ensure_default_pool(
    ds: &dyn Datastore,
    cfg: &DefaultPool,
) -> Result<Vec<String>, Error> {
    if !cfg.create {
        return Ok(Vec::new());
    }
    let pools = ds
        .list(Kind::IPPool)
        .await
        .map_err(ds_err("listing IPPools"))?;
    let present = |f: Family| {
        pools.items.iter().any(|r| {
            matches!(r, Resource::IPPool(p) if p.spec.cidr.is_some_and(|c| Family::of_net(&c) == f))
        })
    };
    let mut wanted = Vec::new();
    if !present(Family::V4) {
        wanted.push(cfg.pool());
    }
    if let Some(p6) = &cfg.v6
        && !present(Family::V6)
    {
        wanted.push(p6.pool());
    }
    let mut created = Vec::new();
    for pool in wanted {
        let name = pool.metadata.name.clone();
        let cidr = pool.spec.cidr;
        let mut pool = Resource::IPPool(pool);
        api::apply_defaults(&mut pool);
        match ds.create(pool).await {
            Ok(_) => {
                info!(cidr = ?cidr, "created the default IPPool {name}");
                created.push(name);
            }
            Err(datastore::Error::AlreadyExists(_)) => {}
            Err(e) => return Err(ds_err(format!("creating IPPool {name}"))(e)),
        }
    }
    Ok(created)
}

/// Reads this node's Node, lets `change` edit it (a fresh `Node` when there is none) and writes
/// it back if `change` returned true; retries on conflicts. Returns the stored Node.
pub async fn update_node(
    ds: &dyn Datastore,
    name: &str,
    mut change: impl FnMut(&mut Node) -> bool,
) -> Result<Node, Error> {
    let key = Key::new(Kind::Node, name);
    let what = format!("writing Node {name}");
    for _ in 0..MAX_RETRIES {
        let current = match ds.get(&key).await {
            Ok(Resource::Node(n)) => Some(n),
            Ok(other) => {
                return Err(Error::Setting {
                    name: "node".into(),
                    value: name.into(),
                    reason: format!(
                        "the datastore returned a {} for a Node key",
                        other.kind().as_str()
                    ),
                });
            }
            Err(datastore::Error::NotFound(_)) => None,
            Err(e) => return Err(ds_err(format!("reading Node {name}"))(e)),
        };
        let exists = current.is_some();
        let mut node = current.unwrap_or_else(|| Node::new(name, Default::default()));
        if !change(&mut node) && exists {
            return Ok(node);
        }
        let res = if exists {
            ds.update(Resource::Node(node)).await
        } else {
            ds.create(Resource::Node(node)).await
        };
        match res {
            Ok(Resource::Node(n)) => return Ok(n),
            Ok(_) => unreachable!("a Node write returns the Node"),
            Err(datastore::Error::Conflict { .. } | datastore::Error::AlreadyExists(_)) => continue,
            Err(datastore::Error::NotFound(_)) => continue,
            Err(e) => return Err(ds_err(what)(e)),
        }
    }
    Err(Error::Conflict {
        what,
        retries: MAX_RETRIES,
    })
}

/// Creates or updates this node's Node: its BGP addresses in CIDR form (an IPv6 one only
/// when the node has one: `IP6=none` clears it, as Calico does), and its ASN when one is
/// configured. Calico refuses to start when another node already claims an address; so does
/// tabby.
pub async fn ensure_node(
    ds: &dyn Datastore,
    name: &str,
    ipv4: Ipv4Net,
    ipv6: Option<Ipv6Net>,
    as_number: Option<u32>,
) -> Result<Node, Error> {
    let nodes = ds.list(Kind::Node).await.map_err(ds_err("listing Nodes"))?;
    let host = |a: Option<&str>| a.and_then(|a| a.split('/').next()).map(str::to_string);
    let mine: Vec<(String, String)> = std::iter::once(ipv4.to_string())
        .chain(ipv6.map(|n| n.to_string()))
        .map(|full| (host(Some(&full)).unwrap_or_default(), full))
        .collect();
    for r in &nodes.items {
        let Resource::Node(n) = r else { continue };
        if n.metadata.name == name {
            continue;
        }
        let bgp = n.spec.bgp.as_ref();
        let theirs = [
            host(bgp.and_then(|b| b.ipv4_address.as_deref())),
            host(bgp.and_then(|b| b.ipv6_address.as_deref())),
        ];
        if let Some((_, full)) = mine.iter().find(|(h, _)| theirs.contains(&Some(h.clone()))) {
            return Err(Error::Setting {
                name: "node address".into(),
                value: full.clone(),
                reason: format!("node {} already uses this address", n.metadata.name),
            });
        }
    }
    let node = update_node(ds, name, |n| {
        let before = n.spec.clone();
        let bgp = n.spec.bgp.get_or_insert_with(Default::default);
        bgp.ipv4_address = Some(ipv4.to_string());
        bgp.ipv6_address = ipv6.map(|a| a.to_string());
        if as_number.is_some() {
            bgp.as_number = as_number;
        }
        // Calico lists the addresses it detected as `CalicoNodeIP` in spec.addresses.
        n.spec
            .addresses
            .retain(|a| a.type_.as_deref() != Some(CALICO_NODE_IP));
        for (_, full) in &mine {
            n.spec.addresses.push(api::node::NodeAddress {
                address: full.clone(),
                type_: Some(CALICO_NODE_IP.into()),
            });
        }
        n.spec != before
    })
    .await?;
    info!(node = name, address = %ipv4, ipv6 = ?ipv6, asn = ?as_number, "Node resource up to date");
    Ok(node)
}

/// Calico generates a random VXLAN MAC once and stores it; tabby derives it from the node name
/// so that a node that lost its Node resource comes back with the same one: SHA-1 of the name,
/// first six bytes, locally administered (bit 1) and unicast (bit 0 clear).
pub fn vxlan_mac(node: &str) -> String {
    let h = Sha1::digest(node.as_bytes());
    let mut m = [0u8; 6];
    m.copy_from_slice(&h[..6]);
    m[0] = (m[0] | 0x02) & !0x01;
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Which encapsulation a tunnel address is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    Ipip,
    Vxlan,
    /// IPv6 VXLAN (`vxlan-v6.calico`); only for nodes with an IPv6 address.
    Vxlan6,
}

/// Calico's handle of a node's IPv6 VXLAN tunnel address.
pub fn vxlan_v6_tunnel_handle(node: &str) -> String {
    format!("vxlan-v6-tunnel-addr-{node}")
}

impl Tunnel {
    pub const ALL: [Tunnel; 3] = [Tunnel::Ipip, Tunnel::Vxlan, Tunnel::Vxlan6];

    pub fn handle(self, node: &str) -> String {
        match self {
            Tunnel::Ipip => ipip_tunnel_handle(node),
            Tunnel::Vxlan => vxlan_tunnel_handle(node),
            Tunnel::Vxlan6 => vxlan_v6_tunnel_handle(node),
        }
    }

    pub fn family(self) -> Family {
        match self {
            Tunnel::Vxlan6 => Family::V6,
            _ => Family::V4,
        }
    }

    fn mode(self, p: &IPPoolSpec) -> EncapMode {
        match self {
            Tunnel::Ipip => p.ipip_mode(),
            Tunnel::Vxlan | Tunnel::Vxlan6 => p.vxlan_mode(),
        }
    }
}

/// Pools this node needs a tunnel address from (Calico `allocateip`): enabled pools of the
/// tunnel's family with the encapsulation on, that allow tunnel addresses and select this node.
pub fn pools_needing(
    tunnel: Tunnel,
    pools: &[IPPool],
    labels: &BTreeMap<String, String>,
) -> Vec<(String, IpNet)> {
    pools
        .iter()
        .filter(|p| !p.spec.disabled && tunnel.mode(&p.spec).enabled())
        .filter(|p| p.spec.allows(AllowedUse::Tunnel))
        .filter(|p| Selector::parse(p.spec.node_selector()).is_ok_and(|s| s.matches(labels)))
        .filter_map(|p| match p.spec.cidr {
            Some(c) if Family::of_net(&c) == tunnel.family() => Some((p.metadata.name.clone(), c)),
            _ => None,
        })
        .collect()
}

/// Tunnel addresses after [`reconcile_tunnels`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunnelAddrs {
    pub ipip: Option<IpAddr>,
    pub vxlan: Option<IpAddr>,
    pub vxlan6: Option<IpAddr>,
}

impl TunnelAddrs {
    fn slot(&mut self, t: Tunnel) -> &mut Option<IpAddr> {
        match t {
            Tunnel::Ipip => &mut self.ipip,
            Tunnel::Vxlan => &mut self.vxlan,
            Tunnel::Vxlan6 => &mut self.vxlan6,
        }
    }
}

/// The VTEP MAC of the IPv6 VXLAN device: derived like [`vxlan_mac`], from another input, so
/// the two devices never share a MAC.
pub fn vxlan_mac_v6(node: &str) -> String {
    vxlan_mac(&format!("v6:{node}"))
}

/// Makes the node's tunnel addresses match the pools: allocates an IPIP (VXLAN, IPv6 VXLAN)
/// address through IPAM, handle `ipip-tunnel-addr-<node>` (`vxlan-tunnel-addr-<node>`,
/// `vxlan-v6-tunnel-addr-<node>`), while a pool needs one, releases it when none does or when
/// it is no longer inside such a pool, and records the result (plus the VTEP MACs) in the
/// Node. IPv6 VXLAN only for a node with an IPv6 address. Idempotent; run at start and
/// whenever IPPools or the node's labels change.
pub async fn reconcile_tunnels(ds: &Arc<dyn Datastore>, node: &str) -> Result<TunnelAddrs, Error> {
    let ipam = Ipam::new(ds.clone());
    let pools: Vec<IPPool> = ds
        .list(Kind::IPPool)
        .await
        .map_err(ds_err("listing IPPools"))?
        .items
        .into_iter()
        .filter_map(|r| match r {
            Resource::IPPool(p) => Some(p),
            _ => None,
        })
        .collect();
    let (labels, has_v6) = match ds.get(&Key::new(Kind::Node, node)).await {
        Ok(Resource::Node(n)) => {
            let v6 = n
                .spec
                .bgp
                .as_ref()
                .is_some_and(|b| b.ipv6_address.as_deref().is_some_and(|a| !a.is_empty()));
            (n.metadata.labels, v6)
        }
        _ => (BTreeMap::new(), false),
    };
    let mut out = TunnelAddrs::default();
    for tunnel in Tunnel::ALL {
        let handle = tunnel.handle(node);
        let needing = if tunnel == Tunnel::Vxlan6 && !has_v6 {
            Vec::new()
        } else {
            pools_needing(tunnel, &pools, &labels)
        };
        let ipam_err = |what: String| {
            move |source| Error::Ipam {
                what,
                source: Box::new(source),
            }
        };
        let current: Vec<IpAddr> = ipam
            .ips_by_handle(&handle)
            .await
            .map_err(ipam_err(format!("reading tunnel addresses of {handle}")))?
            .into_iter()
            .map(|n| n.addr())
            .collect();
        let keep = current
            .iter()
            .copied()
            .find(|ip| needing.iter().any(|(_, c)| c.contains(ip)));
        let addr = match keep {
            Some(a) => {
                let extra: Vec<IpAddr> = current.iter().copied().filter(|ip| *ip != a).collect();
                if !extra.is_empty() {
                    ipam.release_ips(&extra)
                        .await
                        .map_err(ipam_err(format!("releasing extra addresses of {handle}")))?;
                }
                Some(a)
            }
            None => {
                if !current.is_empty() {
                    let n = ipam
                        .release_by_handle(&handle)
                        .await
                        .map_err(ipam_err(format!("releasing {handle}")))?;
                    info!(%handle, released = n, "released tunnel address: no pool needs it");
                }
                if needing.is_empty() {
                    None
                } else {
                    let names: Vec<String> = needing.iter().map(|(n, _)| n.clone()).collect();
                    let mut req = AutoAssignRequest {
                        use_: AllowedUse::Tunnel,
                        ..AutoAssignRequest::new(handle.clone(), node)
                    };
                    match tunnel.family() {
                        Family::V4 => req.pools_v4 = names,
                        Family::V6 => {
                            req.num_v4 = 0;
                            req.num_v6 = 1;
                            req.pools_v6 = names;
                        }
                    }
                    let got = ipam
                        .auto_assign(&req)
                        .await
                        .map_err(ipam_err(format!("allocating {handle}")))?;
                    let a = got.v4.iter().chain(&got.v6).next().map(|n| n.addr());
                    info!(%handle, address = ?a, "allocated tunnel address");
                    a
                }
            }
        };
        *out.slot(tunnel) = addr;
    }
    let (mac, mac6) = (vxlan_mac(node), vxlan_mac_v6(node));
    update_node(ds.as_ref(), node, |n| {
        let before = n.spec.clone();
        let ipip = out.ipip.map(|a| a.to_string());
        if ipip.is_some() || n.spec.bgp.is_some() {
            n.spec
                .bgp
                .get_or_insert_with(Default::default)
                .ipv4_ipip_tunnel_addr = ipip;
        }
        n.spec.ipv4_vxlan_tunnel_addr = out.vxlan.map(|a| a.to_string());
        n.spec.vxlan_tunnel_mac_addr = out.vxlan.map(|_| mac.clone());
        n.spec.ipv6_vxlan_tunnel_addr = out.vxlan6.map(|a| a.to_string());
        n.spec.vxlan_tunnel_mac_addr_v6 = out.vxlan6.map(|_| mac6.clone());
        n.spec != before
    })
    .await?;
    Ok(out)
}

/// Writes the node name where the CNI plugin reads it (`<state_dir>/nodename`), atomically.
pub fn write_nodename(state_dir: &Path, node: &str) -> Result<(), Error> {
    let io = |what: String| move |source| Error::Io { what, source };
    std::fs::create_dir_all(state_dir).map_err(io(format!("creating {}", state_dir.display())))?;
    let path = state_dir.join(NODENAME_FILE);
    let tmp = state_dir.join(format!(".{NODENAME_FILE}.tmp"));
    std::fs::write(&tmp, node).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(io(format!("writing {}", path.display())))?;
    Ok(())
}

/// IPAM usage of one node: blocks affine to it and addresses in use in them (metrics).
pub async fn ipam_usage(ds: &Arc<dyn Datastore>, node: &str) -> Result<(usize, usize), Error> {
    let usage = Ipam::new(ds.clone())
        .usage()
        .await
        .map_err(|source| Error::Ipam {
            what: "reading IPAM usage".into(),
            source: Box::new(source),
        })?;
    let mine = usage
        .pools
        .iter()
        .flat_map(|p| p.blocks.iter())
        .chain(usage.blocks_outside_pools.iter())
        .filter(|b| b.node.as_deref() == Some(node));
    let (mut blocks, mut addrs) = (0, 0);
    for b in mine {
        blocks += 1;
        addrs += b.in_use;
    }
    Ok((blocks, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore::MemoryDatastore;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn mem() -> Arc<dyn Datastore> {
        Arc::new(MemoryDatastore::new())
    }

    async fn pool(ds: &Arc<dyn Datastore>, name: &str) -> IPPool {
        match ds.get(&Key::new(Kind::IPPool, name)).await.unwrap() {
            Resource::IPPool(p) => p,
            _ => unreachable!(),
        }
    }

    async fn node(ds: &Arc<dyn Datastore>, name: &str) -> Node {
        match ds.get(&Key::new(Kind::Node, name)).await.unwrap() {
            Resource::Node(n) => n,
            _ => unreachable!(),
        }
    }

    async fn set_modes(ds: &Arc<dyn Datastore>, name: &str, ipip: EncapMode, vxlan: EncapMode) {
        let mut p = pool(ds, name).await;
        p.spec.ipip_mode = Some(ipip);
        p.spec.vxlan_mode = Some(vxlan);
        ds.update(Resource::IPPool(p)).await.unwrap();
    }

    #[test]
    fn default_pool_settings_follow_calico_env() {
        let d = DefaultPool::from_env(&env(&[])).unwrap();
        assert_eq!(d, DefaultPool::default());
        assert_eq!(d.cidr.to_string(), "192.168.0.0/16");
        assert_eq!(d.ipip_mode, EncapMode::Always);
        assert!(d.nat_outgoing);

        let d = DefaultPool::from_env(&env(&[
            ("CALICO_IPV4POOL_CIDR", "198.18.0.0/16"),
            ("CALICO_IPV4POOL_VXLAN", "CrossSubnet"),
            ("CALICO_IPV4POOL_NAT_OUTGOING", "false"),
            ("CALICO_IPV4POOL_BLOCK_SIZE", "28"),
        ]))
        .unwrap();
        assert_eq!(d.cidr.to_string(), "198.18.0.0/16");
        assert_eq!(
            (d.ipip_mode, d.vxlan_mode),
            (EncapMode::Never, EncapMode::CrossSubnet)
        );
        assert!(!d.nat_outgoing);
        assert_eq!(d.block_size, 28);

        // TABBY_ aliases win over CALICO_ ones.
        let d = DefaultPool::from_env(&env(&[
            ("CALICO_IPV4POOL_IPIP", "Always"),
            ("TABBY_IPV4POOL_IPIP", "Never"),
        ]))
        .unwrap();
        assert_eq!(d.ipip_mode, EncapMode::Never);
        assert!(
            !DefaultPool::from_env(&env(&[("NO_DEFAULT_POOLS", "true")]))
                .unwrap()
                .create
        );
    }

    #[test]
    fn bad_default_pool_settings_name_the_variable() {
        for (k, v) in [
            ("CALICO_IPV4POOL_CIDR", "198.18.0.1/16"),
            ("CALICO_IPV4POOL_CIDR", "2001:db8::/64"),
            ("CALICO_IPV4POOL_IPIP", "Sometimes"),
            ("CALICO_IPV4POOL_BLOCK_SIZE", "8"),
            ("CALICO_IPV4POOL_NAT_OUTGOING", "maybe"),
        ] {
            let e = DefaultPool::from_env(&env(&[(k, v)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(k), "{e}");
        }
        let e = DefaultPool::from_env(&env(&[
            ("CALICO_IPV4POOL_IPIP", "Always"),
            ("CALICO_IPV4POOL_VXLAN", "Always"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("both"), "{e}");
        assert_eq!(
            as_number_from_env(&env(&[("AS", "65001")])).unwrap(),
            Some(65001)
        );
        assert!(as_number_from_env(&env(&[("AS", "x")])).is_err());
    }

    #[tokio::test]
    async fn default_pool_is_created_once() {
        let ds = mem();
        let cfg = DefaultPool {
            cidr: "198.18.0.0/16".parse().unwrap(),
            ..DefaultPool::default()
        };
        assert_eq!(
            ensure_default_pool(ds.as_ref(), &cfg).await.unwrap(),
            [DEFAULT_POOL_NAME]
        );
        assert!(
            ensure_default_pool(ds.as_ref(), &cfg)
                .await
                .unwrap()
                .is_empty()
        );
        let p = pool(&ds, DEFAULT_POOL_NAME).await;
        assert_eq!(p.spec.cidr, Some("198.18.0.0/16".parse().unwrap()));
        assert_eq!(p.spec.ipip_mode(), EncapMode::Always);
        assert!(p.spec.nat_outgoing);
        assert_eq!(p.spec.block_size(), 26);

        // Not created when any pool exists, or when told not to.
        let other = mem();
        let mut p2 = cfg.pool();
        p2.metadata.name = "mine".into();
        other.create(Resource::IPPool(p2)).await.unwrap();
        assert!(
            ensure_default_pool(other.as_ref(), &cfg)
                .await
                .unwrap()
                .is_empty()
        );
        let none = mem();
        let off = DefaultPool {
            create: false,
            ..cfg
        };
        assert!(
            ensure_default_pool(none.as_ref(), &off)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(none.list(Kind::IPPool).await.unwrap().items.is_empty());
    }

    #[tokio::test]
    async fn node_resource_is_created_then_updated() {
        let ds = mem();
        let n = ensure_node(
            ds.as_ref(),
            "n1",
            "192.0.2.11/24".parse().unwrap(),
            None,
            None,
        )
        .await
        .unwrap();
        let bgp = n.spec.bgp.unwrap();
        assert_eq!(bgp.ipv4_address.as_deref(), Some("192.0.2.11/24"));
        assert_eq!(bgp.as_number, None);
        let rev = node(&ds, "n1").await.metadata.resource_version;

        // Same address again: no write.
        ensure_node(
            ds.as_ref(),
            "n1",
            "192.0.2.11/24".parse().unwrap(),
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(node(&ds, "n1").await.metadata.resource_version, rev);

        // New address and an ASN; labels someone else set are kept.
        let mut n = node(&ds, "n1").await;
        n.metadata.labels.insert("rack".into(), "r1".into());
        ds.update(Resource::Node(n)).await.unwrap();
        ensure_node(
            ds.as_ref(),
            "n1",
            "198.51.100.11/24".parse().unwrap(),
            Some("2001:db8::11/64".parse().unwrap()),
            Some(65010),
        )
        .await
        .unwrap();
        let n = node(&ds, "n1").await;
        let bgp = n.spec.bgp.unwrap();
        assert_eq!(bgp.ipv4_address.as_deref(), Some("198.51.100.11/24"));
        assert_eq!(bgp.as_number, Some(65010));
        assert_eq!(
            n.metadata.labels.get("rack").map(String::as_str),
            Some("r1")
        );
        assert_eq!(bgp.ipv6_address.as_deref(), Some("2001:db8::11/64"));
        assert_eq!(n.spec.addresses.len(), 2);
        assert_eq!(n.spec.addresses[0].address, "198.51.100.11/24");
        assert_eq!(n.spec.addresses[1].address, "2001:db8::11/64");
        assert_eq!(n.spec.addresses[0].type_.as_deref(), Some(CALICO_NODE_IP));

        // Another node with the same address is refused.
        let e = ensure_node(
            ds.as_ref(),
            "n2",
            "198.51.100.11/24".parse().unwrap(),
            None,
            None,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("n1"), "{e}");
        let e = ensure_node(
            ds.as_ref(),
            "n2",
            "198.51.100.12/24".parse().unwrap(),
            Some("2001:db8::11/64".parse().unwrap()),
            None,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("2001:db8::11/64"), "{e}");

        // IP6=none clears the IPv6 address.
        ensure_node(
            ds.as_ref(),
            "n1",
            "198.51.100.11/24".parse().unwrap(),
            None,
            None,
        )
        .await
        .unwrap();
        let n = node(&ds, "n1").await;
        assert_eq!(n.spec.bgp.unwrap().ipv6_address, None);
        assert_eq!(n.spec.addresses.len(), 1);
    }

    #[tokio::test]
    async fn concurrent_node_writers_do_not_lose_updates() {
        let ds = mem();
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let ds = ds.clone();
            tasks.push(tokio::spawn(async move {
                update_node(ds.as_ref(), "n1", |n| {
                    n.metadata.labels.insert(format!("k{i}"), "v".into());
                    true
                })
                .await
                .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(node(&ds, "n1").await.metadata.labels.len(), 8);
    }

    #[tokio::test]
    async fn tunnel_addresses_follow_the_pool_mode() {
        let ds = mem();
        let cfg = DefaultPool {
            cidr: "198.18.0.0/16".parse().unwrap(),
            ..DefaultPool::default()
        };
        ensure_default_pool(ds.as_ref(), &cfg).await.unwrap();
        ensure_node(
            ds.as_ref(),
            "n1",
            "192.0.2.11/24".parse().unwrap(),
            None,
            None,
        )
        .await
        .unwrap();
        let ipam = Ipam::new(ds.clone());

        // IPIP Always: an IPIP tunnel address, no VXLAN.
        let t = reconcile_tunnels(&ds, "n1").await.unwrap();
        let ipip = t.ipip.expect("IPIP address");
        assert!(IpNet::V4(cfg.cidr).contains(&ipip));
        assert_eq!(t.vxlan, None);
        let n = node(&ds, "n1").await;
        assert_eq!(
            n.spec.bgp.as_ref().unwrap().ipv4_ipip_tunnel_addr,
            Some(ipip.to_string())
        );
        assert_eq!(n.spec.vxlan_tunnel_mac_addr, None);
        assert_eq!(
            ipam.ips_by_handle("ipip-tunnel-addr-n1")
                .await
                .unwrap()
                .len(),
            1
        );

        // Idempotent: the same address, no Node write.
        let rev = node(&ds, "n1").await.metadata.resource_version;
        assert_eq!(reconcile_tunnels(&ds, "n1").await.unwrap(), t);
        assert_eq!(node(&ds, "n1").await.metadata.resource_version, rev);

        // Switch to VXLAN: IPIP address released, VXLAN address and MAC set.
        set_modes(&ds, DEFAULT_POOL_NAME, EncapMode::Never, EncapMode::Always).await;
        let t = reconcile_tunnels(&ds, "n1").await.unwrap();
        assert_eq!(t.ipip, None);
        let vx = t.vxlan.expect("VXLAN address");
        assert!(
            ipam.ips_by_handle("ipip-tunnel-addr-n1")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            ipam.ips_by_handle("vxlan-tunnel-addr-n1").await.unwrap()[0].addr(),
            vx
        );
        let n = node(&ds, "n1").await;
        assert_eq!(n.spec.bgp.as_ref().unwrap().ipv4_ipip_tunnel_addr, None);
        assert_eq!(n.spec.ipv4_vxlan_tunnel_addr, Some(vx.to_string()));
        assert_eq!(n.spec.vxlan_tunnel_mac_addr, Some(vxlan_mac("n1")));
        // The BGP address survives tunnel updates.
        assert_eq!(
            n.spec.bgp.as_ref().unwrap().ipv4_address.as_deref(),
            Some("192.0.2.11/24")
        );

        // No encapsulation: everything released.
        set_modes(&ds, DEFAULT_POOL_NAME, EncapMode::Never, EncapMode::Never).await;
        assert_eq!(
            reconcile_tunnels(&ds, "n1").await.unwrap(),
            TunnelAddrs::default()
        );
        assert!(
            ipam.ips_by_handle("vxlan-tunnel-addr-n1")
                .await
                .unwrap()
                .is_empty()
        );
        let n = node(&ds, "n1").await;
        assert_eq!(n.spec.ipv4_vxlan_tunnel_addr, None);
        assert_eq!(n.spec.vxlan_tunnel_mac_addr, None);
    }

    #[tokio::test]
    async fn tunnel_address_moves_when_its_pool_stops_needing_it() {
        let ds = mem();
        let a = DefaultPool {
            cidr: "198.18.0.0/24".parse().unwrap(),
            ipip_mode: EncapMode::Never,
            vxlan_mode: EncapMode::Always,
            ..DefaultPool::default()
        };
        ensure_default_pool(ds.as_ref(), &a).await.unwrap();
        let old = reconcile_tunnels(&ds, "n1").await.unwrap().vxlan.unwrap();
        let mut b = a.pool();
        b.metadata.name = "second".into();
        b.spec.cidr = Some("198.19.0.0/24".parse().unwrap());
        ds.create(Resource::IPPool(b)).await.unwrap();
        set_modes(&ds, DEFAULT_POOL_NAME, EncapMode::Never, EncapMode::Never).await;
        let new = reconcile_tunnels(&ds, "n1").await.unwrap().vxlan.unwrap();
        assert_ne!(old, new);
        assert!("198.19.0.0/24".parse::<IpNet>().unwrap().contains(&new));
        let held = Ipam::new(ds.clone())
            .ips_by_handle("vxlan-tunnel-addr-n1")
            .await
            .unwrap();
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn default_ipv6_pool_settings() {
        assert_eq!(DefaultPool::from_env(&env(&[])).unwrap().v6, None);
        let d = DefaultPool::from_env(&env(&[
            ("CALICO_IPV6POOL_CIDR", "2001:db8:42::/48"),
            ("CALICO_IPV6POOL_VXLAN", "Always"),
        ]))
        .unwrap();
        let v6 = d.v6.unwrap();
        assert_eq!(v6.cidr.to_string(), "2001:db8:42::/48");
        assert_eq!(v6.vxlan_mode, EncapMode::Always);
        assert!(!v6.nat_outgoing);
        assert_eq!(v6.block_size, 122);
        for (k, v) in [
            ("CALICO_IPV6POOL_CIDR", "198.18.0.0/16"),
            ("CALICO_IPV6POOL_CIDR", "2001:db8::1/64"),
        ] {
            let e = DefaultPool::from_env(&env(&[(k, v)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(k), "{e}");
        }
        let e = DefaultPool::from_env(&env(&[
            ("CALICO_IPV6POOL_CIDR", "2001:db8::/64"),
            ("CALICO_IPV6POOL_BLOCK_SIZE", "100"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("CALICO_IPV6POOL_BLOCK_SIZE"), "{e}");
    }

    #[tokio::test]
    async fn default_pools_are_created_per_family() {
        let ds = mem();
        let cfg = DefaultPool {
            cidr: "198.18.0.0/16".parse().unwrap(),
            v6: Some(DefaultPool6 {
                cidr: "2001:db8:42::/48".parse().unwrap(),
                vxlan_mode: EncapMode::Always,
                nat_outgoing: false,
                block_size: 122,
                node_selector: "all()".into(),
            }),
            ..DefaultPool::default()
        };
        // An IPv4 pool exists already: only the IPv6 default is created.
        let mut mine = cfg.pool();
        mine.metadata.name = "mine".into();
        ds.create(Resource::IPPool(mine)).await.unwrap();
        assert_eq!(
            ensure_default_pool(ds.as_ref(), &cfg).await.unwrap(),
            [DEFAULT_POOL6_NAME]
        );
        let p = pool(&ds, DEFAULT_POOL6_NAME).await;
        assert_eq!(p.spec.block_size(), 122);
        assert_eq!(p.spec.vxlan_mode(), EncapMode::Always);
        assert!(
            ensure_default_pool(ds.as_ref(), &cfg)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn ipv6_vxlan_tunnel_address_only_for_nodes_with_ipv6() {
        let ds = mem();
        let cfg = DefaultPool {
            cidr: "198.18.0.0/16".parse().unwrap(),
            ipip_mode: EncapMode::Never,
            v6: Some(DefaultPool6 {
                cidr: "2001:db8:42::/48".parse().unwrap(),
                vxlan_mode: EncapMode::Always,
                nat_outgoing: false,
                block_size: 122,
                node_selector: "all()".into(),
            }),
            ..DefaultPool::default()
        };
        ensure_default_pool(ds.as_ref(), &cfg).await.unwrap();
        ensure_node(
            ds.as_ref(),
            "n1",
            "192.0.2.11/24".parse().unwrap(),
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            reconcile_tunnels(&ds, "n1").await.unwrap(),
            TunnelAddrs::default()
        );

        ensure_node(
            ds.as_ref(),
            "n1",
            "192.0.2.11/24".parse().unwrap(),
            Some("2001:db8::11/64".parse().unwrap()),
            None,
        )
        .await
        .unwrap();
        let t = reconcile_tunnels(&ds, "n1").await.unwrap();
        let a6 = t.vxlan6.expect("IPv6 VTEP address");
        assert!("2001:db8:42::/48".parse::<IpNet>().unwrap().contains(&a6));
        assert_eq!((t.ipip, t.vxlan), (None, None));
        let n = node(&ds, "n1").await;
        assert_eq!(n.spec.ipv6_vxlan_tunnel_addr, Some(a6.to_string()));
        assert_eq!(n.spec.vxlan_tunnel_mac_addr_v6, Some(vxlan_mac_v6("n1")));
        assert_ne!(vxlan_mac_v6("n1"), vxlan_mac("n1"));
        assert_eq!(n.spec.vxlan_tunnel_mac_addr, None);

        set_modes(&ds, DEFAULT_POOL6_NAME, EncapMode::Never, EncapMode::Never).await;
        assert_eq!(
            reconcile_tunnels(&ds, "n1").await.unwrap(),
            TunnelAddrs::default()
        );
        let n = node(&ds, "n1").await;
        assert_eq!(n.spec.ipv6_vxlan_tunnel_addr, None);
        assert_eq!(n.spec.vxlan_tunnel_mac_addr_v6, None);
        assert!(
            Ipam::new(ds.clone())
                .ips_by_handle(&vxlan_v6_tunnel_handle("n1"))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn pools_needing_respects_disabled_uses_and_selectors() {
        let mk = |name: &str, cidr: &str, f: &dyn Fn(&mut IPPoolSpec)| {
            let mut s = IPPoolSpec {
                cidr: Some(cidr.parse().unwrap()),
                vxlan_mode: Some(EncapMode::Always),
                ..Default::default()
            };
            f(&mut s);
            IPPool::new(name, s)
        };
        let pools = vec![
            mk("on", "198.18.0.0/24", &|_| {}),
            mk("off", "198.18.1.0/24", &|s| s.disabled = true),
            mk("wl", "198.18.2.0/24", &|s| {
                s.allowed_uses = Some(vec![AllowedUse::Workload])
            }),
            mk("sel", "198.18.3.0/24", &|s| {
                s.node_selector = Some("rack == 'r1'".into())
            }),
            mk("v6", "2001:db8::/64", &|_| {}),
            mk("ipip", "198.18.4.0/24", &|s| {
                s.vxlan_mode = None;
                s.ipip_mode = Some(EncapMode::CrossSubnet)
            }),
        ];
        let names = |t, labels: &BTreeMap<String, String>| {
            pools_needing(t, &pools, labels)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        let mut labels = BTreeMap::new();
        assert_eq!(names(Tunnel::Vxlan, &labels), ["on"]);
        labels.insert("rack".into(), "r1".into());
        assert_eq!(names(Tunnel::Vxlan, &labels), ["on", "sel"]);
        assert_eq!(names(Tunnel::Ipip, &labels), ["ipip"]);
        assert_eq!(names(Tunnel::Vxlan6, &labels), ["v6"]);
    }

    #[tokio::test]
    async fn ipam_usage_counts_this_nodes_blocks() {
        let ds = mem();
        let cfg = DefaultPool {
            cidr: "198.18.0.0/16".parse().unwrap(),
            ipip_mode: EncapMode::Never,
            ..DefaultPool::default()
        };
        ensure_default_pool(ds.as_ref(), &cfg).await.unwrap();
        assert_eq!(ipam_usage(&ds, "n1").await.unwrap(), (0, 0));
        let ipam = Ipam::new(ds.clone());
        for pod in ["a", "b"] {
            ipam.auto_assign(&AutoAssignRequest::new(pod, "n1"))
                .await
                .unwrap();
        }
        ipam.auto_assign(&AutoAssignRequest::new("c", "n2"))
            .await
            .unwrap();
        assert_eq!(ipam_usage(&ds, "n1").await.unwrap(), (1, 2));
        assert_eq!(ipam_usage(&ds, "n2").await.unwrap(), (1, 1));
    }

    #[test]
    fn vxlan_mac_is_stable_unicast_and_locally_administered() {
        let m = vxlan_mac("node-1");
        assert_eq!(m, vxlan_mac("node-1"));
        assert_ne!(m, vxlan_mac("node-2"));
        let first = u8::from_str_radix(&m[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02, "{m}");
        assert_eq!(m.len(), 17);
    }

    #[test]
    fn nodename_file() {
        let dir = std::env::temp_dir().join(format!("tabby-node-test-{}", std::process::id()));
        write_nodename(&dir, "n7").unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("nodename")).unwrap(), "n7");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
