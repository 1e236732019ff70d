//! The render: resources and a node name in, that node's BGP speaker configuration out. Pure: no
//! I/O, no clock; secrets are read by the caller ([`crate::secrets`]) and handed in through
//! [`Resources::secrets`].
//!
//! The rules follow Calico's confd (`confd/pkg/backends/calico/client.go` `updatePeersV1`,
//! `bgp_processor.go`, and the `bird.cfg` / `bird_ipam.cfg` templates):
//!
//! - **Identity.** Router id = the node's `spec.bgp.ipv4Address`; ASN = the node's `asNumber`,
//!   else the `default` BGPConfiguration's, else 64512. Listen port: the `node.<name>`
//!   BGPConfiguration's `listenPort`, else `default`'s, else 179.
//! - **Mesh.** Unless `nodeToNodeMeshEnabled: false`, a node peers with every other node that has
//!   an IPv4 BGP address. Route reflectors (nodes with `routeReflectorClusterID`) take no part:
//!   an RR renders no mesh at all, and no node meshes with an RR (Calico: "This node is
//!   configured as a route reflector ... ignore node-to-node mesh setting"). Mesh peers get the
//!   node mesh password and `nodeMeshMaxRestartTime` (default 120 s). The mesh is one-directional
//!   as in Calico: the side whose address *string* sorts higher is passive (Calico compares the
//!   strings, so `192.0.2.9` > `192.0.2.10`; using the same rule keeps a mixed tabby/Calico
//!   cluster from having both sides passive).
//! - **BGPPeers.** No `node` and no `nodeSelector` = global (every node); `node: X` or a
//!   `nodeSelector` = those nodes. The remote side is `peerIP` (`ip` or `ip:port`) with
//!   `asNumber`, or `peerSelector` = every selected node at its BGP address, ASN and listen port.
//!   Calico also renders the *reverse* of every peering between two Calico nodes, so that both
//!   ends are configured: the nodes a BGPPeer points at (by `peerSelector`, or by `peerIP` equal
//!   to a node's address with the same ASN) peer back with the nodes it applies to.
//! - **Route reflection.** When this node has a cluster id, every iBGP peer whose own cluster id
//!   differs (or that is not a node, or has none) is a route reflector client (Calico
//!   `buildPeerFromData`: `rr client; rr cluster id`).
//! - **Duplicates.** The speaker keeps one session per peer address. Calico's precedence, kept
//!   here: peerings from global BGPPeers first, then node-specific ones (Calico: "If we would be
//!   emitting a node-specific peering to a peer IP, and we already have a global peering to that
//!   IP, skip emitting the node-specific one"), then reverse peerings ("an explicit forwards
//!   peering is not overwritten by an implicit reverse peering"); BGPPeers are taken in name
//!   order (Calico iterates a Go map). Note that this is *not* "most specific wins": a global
//!   BGPPeer beats a node-specific one to the same address, as in Calico. Where Calico would
//!   render a mesh session *and* an explicit one to the same node, tabby keeps the explicit one.
//! - **Options.** `password.secretKeyRef` → TCP MD5 key (a missing secret renders the peer
//!   without a password and a warning, as Calico does); `nextHopMode: Self|Keep`, and
//!   `keepOriginalNextHop` towards eBGP peers → next hop; `maxRestartTime` → restart time;
//!   `ttlSecurity` (hops) → GTSM; `sourceAddress: UseNodeIP` (the default) → the node's address.
//!   Graceful restart is on for every peer, as in Calico's `bgp_template`.
//! - **Origination.** The node's confirmed block affinities whose block lies in a pool without
//!   `disableBGPExport`, plus the `default` BGPConfiguration's serviceClusterIPs,
//!   serviceExternalIPs and serviceLoadBalancerIPs (not on a node labelled
//!   `node.kubernetes.io/exclude-from-external-load-balancers=true`, as Calico). Blocks of a
//!   `disabled` pool are still originated: Calico exports them (`disabled` only stops new
//!   allocations) and the pods in them must stay reachable while an operator migrates them.
//! - **Import.** `pools` = every pool CIDR; mesh peers and peers that are cluster nodes accept
//!   only prefixes inside them, peers outside the cluster (a ToR) get `import_all`. The speaker
//!   refuses default routes from every peer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use api::{
    AffinityState, BGPConfiguration, BGPPeer, BGPPeerSpec, BlockAffinity, FelixConfiguration,
    FelixConfigurationSpec, IPPool, Node, Selector, WorkloadEndpoint,
};
use bgp::config::{
    BGP_PORT, Config, DEFAULT_CONNECT_RETRY, DEFAULT_HOLD_TIME, DEFAULT_RESTART_TIME,
    GracefulRestartConfig, MAX_MD5_KEY_LEN, NextHop, PeerConfig,
};
use bgp::policy::MaxPrefixAction;
use ipnet::IpNet;

/// Calico's default AS number.
pub const DEFAULT_ASN: u32 = api::bgp::DEFAULT_AS_NUMBER;
/// The node label that keeps a node from advertising service ranges (Calico
/// `ExcludeServiceAdvertisement`).
pub const EXCLUDE_FROM_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// Everything the render reads. Plain lists of resources as stored; order does not matter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    pub pools: Vec<IPPool>,
    pub nodes: Vec<Node>,
    pub bgp_configurations: Vec<BGPConfiguration>,
    pub bgp_peers: Vec<BGPPeer>,
    pub felix_configurations: Vec<FelixConfiguration>,
    pub affinities: Vec<BlockAffinity>,
    /// Only felix needs these (see [`crate::felix_inputs`]); the speaker render ignores them.
    pub workloads: Vec<WorkloadEndpoint>,
    /// Secret values by secret name, then key: what `secretKeyRef`s point at. Filled by
    /// [`crate::secrets::load`] from a directory.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
}

impl Resources {
    /// Adds one resource to its list; kinds the render does not read are ignored.
    pub fn insert(&mut self, r: api::Resource) {
        use api::Resource as R;
        match r {
            R::IPPool(o) => self.pools.push(o),
            R::Node(o) => self.nodes.push(o),
            R::BGPConfiguration(o) => self.bgp_configurations.push(o),
            R::BGPPeer(o) => self.bgp_peers.push(o),
            R::FelixConfiguration(o) => self.felix_configurations.push(o),
            R::BlockAffinity(o) => self.affinities.push(o),
            R::WorkloadEndpoint(o) => self.workloads.push(o),
            R::IPAMConfig(_) | R::ClusterInformation(_) | R::IPAMBlock(_) | R::IPAMHandle(_) => {}
        }
    }
}

impl FromIterator<api::Resource> for Resources {
    fn from_iter<I: IntoIterator<Item = api::Resource>>(iter: I) -> Resources {
        let mut res = Resources::default();
        for r in iter {
            res.insert(r);
        }
        res
    }
}

/// Why a node's configuration cannot be rendered at all. Problems with single BGPPeers are
/// [`Warning`]s instead: the peer is skipped and the rest still renders.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("rendering BGP config for node {0}: no Node resource with that name")]
    NodeNotFound(String),
    #[error(
        "rendering BGP config for node {0}: spec.bgp.ipv4Address is not set, so there is no \
         router id (the speaker needs an IPv4 address)"
    )]
    NoIpv4Address(String),
    #[error("rendering BGP config for node {node}: {field}: {value:?} is not valid: {reason}")]
    InvalidField {
        node: String,
        field: &'static str,
        value: String,
        reason: String,
    },
}

/// Something skipped or adjusted while rendering, with the resource it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// `BGPPeer/tor`, `Node/n2`, `BGPConfiguration/default`.
    pub resource: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.resource, self.message)
    }
}

/// Where a peering came from, in Calico's precedence order (the lowest wins a duplicate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerOrigin {
    /// A BGPPeer without `node` and `nodeSelector`.
    Global,
    /// A BGPPeer with `node` or `nodeSelector` that selects this node.
    Node,
    /// The reverse of a BGPPeer that points at this node.
    Reverse,
    /// The node-to-node mesh.
    Mesh,
}

/// One rendered peer with where it came from, for the BIRD rendering and for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedPeer {
    pub config: PeerConfig,
    pub origin: PeerOrigin,
    /// The BGPPeer it came from (`None` for the mesh).
    pub bgp_peer: Option<String>,
    /// The node at the other end, when it is a cluster node.
    pub node: Option<String>,
}

/// The full result of a render: the speaker configuration and what it was made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub node: String,
    pub config: Config,
    /// Same order as `config.peers`.
    pub peers: Vec<RenderedPeer>,
    /// The node's own blocks, a subset of `config.originate`.
    pub blocks: Vec<IpNet>,
    /// Service ranges, the rest of `config.originate`.
    pub service_ranges: Vec<IpNet>,
    pub warnings: Vec<Warning>,
}

/// The speaker configuration for `node`.
pub fn render(res: &Resources, node: &str) -> Result<Config, RenderError> {
    plan(res, node).map(|p| p.config)
}

/// A node as the peering rules need it.
struct NodeInfo<'a> {
    name: &'a str,
    labels: &'a BTreeMap<String, String>,
    v4: Option<Ipv4Addr>,
    v6: Option<IpAddr>,
    asn: u32,
    port: u16,
    cluster_id: Option<Ipv4Addr>,
}

impl NodeInfo<'_> {
    fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.v4.map(IpAddr::V4).into_iter().chain(self.v6)
    }
}

struct Ctx<'a> {
    res: &'a Resources,
    nodes: Vec<NodeInfo<'a>>,
    global_asn: u32,
    default_bgp: Option<&'a api::BGPConfigurationSpec>,
    warnings: Vec<Warning>,
}

fn addr_part(s: &str) -> &str {
    s.split('/').next().unwrap_or(s)
}

fn warn(w: &mut Vec<Warning>, resource: String, message: impl Into<String>) {
    w.push(Warning {
        resource,
        message: message.into(),
    });
}

impl<'a> Ctx<'a> {
    fn new(res: &'a Resources) -> Ctx<'a> {
        let default_bgp = res
            .bgp_configurations
            .iter()
            .find(|c| c.metadata.name == "default")
            .map(|c| &c.spec);
        let global_asn = default_bgp.and_then(|c| c.as_number).unwrap_or(DEFAULT_ASN);
        let global_port = default_bgp.and_then(|c| c.listen_port).unwrap_or(BGP_PORT);
        let mut warnings = Vec::new();
        let mut nodes: Vec<NodeInfo> = res
            .nodes
            .iter()
            .map(|n| {
                let bgp = n.spec.bgp.as_ref();
                let who = || format!("Node/{}", n.metadata.name);
                let v4 = bgp.and_then(|b| b.ipv4_address.as_deref()).and_then(|a| {
                    let parsed = addr_part(a).parse::<Ipv4Addr>().ok();
                    if parsed.is_none() {
                        warn(&mut warnings, who(), format!("ipv4Address {a:?} is not an IPv4 address"));
                    }
                    parsed
                });
                let v6 = bgp.and_then(|b| b.ipv6_address.as_deref()).and_then(|a| {
                    let parsed = addr_part(a).parse::<std::net::Ipv6Addr>().ok();
                    if parsed.is_none() {
                        warn(&mut warnings, who(), format!("ipv6Address {a:?} is not an IPv6 address"));
                    }
                    parsed.map(IpAddr::V6)
                });
                let cluster_id = bgp
                    .and_then(|b| b.route_reflector_cluster_id.as_deref())
                    .filter(|s| !s.is_empty())
                    .and_then(|s| {
                        let parsed = s.parse::<Ipv4Addr>().ok();
                        if parsed.is_none() {
                            warn(&mut warnings, who(), format!("routeReflectorClusterID {s:?} is not an IPv4 address: not treated as a route reflector"));
                        }
                        parsed
                    });
                let node_cfg = format!("node.{}", n.metadata.name);
                let port = res
                    .bgp_configurations
                    .iter()
                    .find(|c| c.metadata.name == node_cfg)
                    .and_then(|c| c.spec.listen_port)
                    .unwrap_or(global_port);
                NodeInfo {
                    name: &n.metadata.name,
                    labels: &n.metadata.labels,
                    v4,
                    v6,
                    asn: bgp.and_then(|b| b.as_number).unwrap_or(global_asn),
                    port,
                    cluster_id,
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(b.name));
        Ctx {
            res,
            nodes,
            global_asn,
            default_bgp,
            warnings,
        }
    }

    fn node(&self, name: &str) -> Option<&NodeInfo<'a>> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Nodes a selector matches, in name order; a bad selector matches none, with a warning.
    fn select(&mut self, who: &str, field: &str, sel: &str) -> Vec<usize> {
        match Selector::parse(sel) {
            Ok(s) => (0..self.nodes.len())
                .filter(|&i| s.matches(self.nodes[i].labels))
                .collect(),
            Err(e) => {
                warn(
                    &mut self.warnings,
                    who.to_string(),
                    format!(
                        "{field} {sel:?} does not parse ({}): selects nothing",
                        e.reason
                    ),
                );
                Vec::new()
            }
        }
    }

    fn secret(&mut self, who: &str, pw: Option<&api::bgp::BGPPassword>) -> Option<String> {
        let r = pw?.secret_key_ref.as_ref()?;
        match self.res.secrets.get(&r.name).and_then(|s| s.get(&r.key)) {
            Some(v) if v.is_empty() => None,
            Some(v) if v.len() > MAX_MD5_KEY_LEN => {
                warn(
                    &mut self.warnings,
                    who.to_string(),
                    format!(
                        "password from secret {}/{} is {} bytes, TCP MD5 allows {MAX_MD5_KEY_LEN}: peering without a password",
                        r.name,
                        r.key,
                        v.len()
                    ),
                );
                None
            }
            Some(v) => Some(v.clone()),
            None => {
                if r.optional != Some(true) {
                    warn(
                        &mut self.warnings,
                        who.to_string(),
                        format!(
                            "password secret {}/{} not found: peering without a password",
                            r.name, r.key
                        ),
                    );
                }
                None
            }
        }
    }
}

/// A peering before the speaker settings are filled in.
struct Candidate {
    address: IpAddr,
    port: u16,
    asn: u32,
    origin: PeerOrigin,
    bgp_peer: Option<String>,
    node: Option<String>,
    /// The remote node's route reflector cluster id, if it is one.
    remote_cluster_id: Option<Ipv4Addr>,
    spec: Option<BGPPeerSpec>,
}

/// Renders `node` with everything it was made of (see [`Plan`]).
pub fn plan(res: &Resources, node: &str) -> Result<Plan, RenderError> {
    let mut cx = Ctx::new(res);
    let Some(me) = cx.node(node) else {
        return Err(RenderError::NodeNotFound(node.to_string()));
    };
    let Some(router_id) = me.v4 else {
        return Err(RenderError::NoIpv4Address(node.to_string()));
    };
    if router_id.is_unspecified() {
        return Err(RenderError::InvalidField {
            node: node.into(),
            field: "spec.bgp.ipv4Address",
            value: router_id.to_string(),
            reason: "the BGP identifier must be non-zero (RFC 6286)".into(),
        });
    }
    let my_asn = me.asn;
    let my_port = me.port;
    let my_cluster_id = me.cluster_id;
    let my_addrs: Vec<IpAddr> = me.addresses().collect();
    let my_v6 = me.v6;
    let my_labels = me.labels;
    let default_bgp = cx.default_bgp;

    let mut candidates = peerings_from_bgp_peers(&mut cx, node);
    candidates.extend(mesh(&cx, node));
    // Precedence: origin (Calico's emission order), then BGPPeer name; first per address wins.
    candidates
        .sort_by(|a, b| (a.origin, &a.bgp_peer, &a.node).cmp(&(b.origin, &b.bgp_peer, &b.node)));
    let mut seen = BTreeSet::new();
    let mut peers: Vec<RenderedPeer> = Vec::new();
    for c in candidates {
        if my_addrs.contains(&c.address) || !seen.insert(c.address) {
            continue;
        }
        let who = match &c.bgp_peer {
            Some(p) => format!("BGPPeer/{p}"),
            None => format!("Node/{}", c.node.as_deref().unwrap_or("?")),
        };
        if c.address.is_unspecified() || c.address.is_multicast() {
            warn(
                &mut cx.warnings,
                who,
                format!("{} is not a unicast address: skipped", c.address),
            );
            continue;
        }
        let ibgp = c.asn == my_asn;
        let spec = c.spec.as_ref();
        let password = match (c.origin, spec) {
            (PeerOrigin::Mesh, _) => cx.secret(
                &who,
                default_bgp.and_then(|b| b.node_mesh_password.as_ref()),
            ),
            (_, Some(s)) => cx.secret(&who, s.password.as_ref()),
            (_, None) => None,
        };
        let restart = match (c.origin, spec) {
            (PeerOrigin::Mesh, _) => default_bgp
                .and_then(|b| b.node_mesh_max_restart_time.as_deref())
                .and_then(|t| {
                    restart_seconds(
                        &mut cx.warnings,
                        "BGPConfiguration/default",
                        "nodeMeshMaxRestartTime",
                        t,
                    )
                }),
            (_, Some(s)) => s
                .max_restart_time
                .as_deref()
                .and_then(|t| restart_seconds(&mut cx.warnings, &who, "maxRestartTime", t)),
            _ => None,
        }
        .unwrap_or(DEFAULT_RESTART_TIME);
        let next_hop = match spec {
            None => NextHop::Default,
            Some(s) => match s.next_hop_mode.as_deref() {
                Some("Self") => NextHop::SelfAddress,
                Some("Keep") => NextHop::Keep,
                _ if s.keep_original_next_hop == Some(true) && !ibgp => NextHop::Keep,
                _ => NextHop::Default,
            },
        };
        let ttl_hops = spec.and_then(|s| s.ttl_security).unwrap_or(0);
        if ttl_hops > 1 {
            warn(
                &mut cx.warnings,
                who.clone(),
                format!(
                    "ttlSecurity {ttl_hops}: the speaker's GTSM accepts only directly connected peers (TTL 255)"
                ),
            );
        }
        if spec.is_some_and(|s| s.local_as_number.is_some()) {
            warn(
                &mut cx.warnings,
                who.clone(),
                "localASNumber is not supported: using the node's AS number",
            );
        }
        let source_address = match spec.and_then(|s| s.source_address.as_deref()) {
            Some("None") => None,
            _ => match c.address {
                IpAddr::V4(_) => Some(IpAddr::V4(router_id)),
                IpAddr::V6(_) => my_v6,
            },
        };
        // Calico: mesh and global peerings between two Calico nodes are one-directional; the
        // higher address (as a string) waits.
        let passive = matches!(c.origin, PeerOrigin::Mesh | PeerOrigin::Global)
            && c.node.is_some()
            && c.address.to_string() > source_address.unwrap_or(IpAddr::V4(router_id)).to_string();
        let rr_client = ibgp && my_cluster_id.is_some() && c.remote_cluster_id != my_cluster_id;
        peers.push(RenderedPeer {
            config: PeerConfig {
                address: c.address,
                asn: c.asn,
                port: c.port,
                passive,
                rr_client,
                password,
                hold_time: DEFAULT_HOLD_TIME,
                keepalive: None,
                connect_retry: Duration::from_secs(DEFAULT_CONNECT_RETRY.into()),
                ttl_security: ttl_hops > 0,
                max_prefix: None,
                max_prefix_action: MaxPrefixAction::default(),
                import_all: c.node.is_none(),
                source_address,
                graceful_restart: true,
                restart_time: restart,
                next_hop,
            },
            origin: c.origin,
            bgp_peer: c.bgp_peer,
            node: c.node,
        });
    }
    peers.sort_by_key(|p| (p.config.address, p.config.port));

    let mut pools: Vec<IpNet> = res
        .pools
        .iter()
        .filter_map(|p| p.spec.cidr)
        .map(|c| c.trunc())
        .collect();
    pools.sort();
    pools.dedup();
    pools.retain(|p| p.prefix_len() > 0);
    let blocks = originated_blocks(res, node);
    let service_ranges = if my_labels.get(EXCLUDE_FROM_LB_LABEL).map(String::as_str) == Some("true")
    {
        Vec::new()
    } else {
        service_ranges(&mut cx.warnings, default_bgp)
    };
    let mut originate: Vec<IpNet> = blocks.iter().chain(&service_ranges).copied().collect();
    originate.sort();
    originate.dedup();

    let bind_node_ip = default_bgp.and_then(|b| b.bind_mode.as_deref()) == Some("NodeIP");
    let mut listen = vec![SocketAddr::new(
        if bind_node_ip {
            IpAddr::V4(router_id)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        },
        my_port,
    )];
    if let (true, Some(v6)) = (bind_node_ip, my_v6) {
        listen.push(SocketAddr::new(v6, my_port));
    }
    let mesh_restart = default_bgp
        .and_then(|b| b.node_mesh_max_restart_time.as_deref())
        .and_then(|t| restart_seconds(&mut Vec::new(), "", "", t))
        .unwrap_or(DEFAULT_RESTART_TIME);
    let config = Config {
        asn: my_asn,
        router_id,
        listen,
        cluster_id: my_cluster_id,
        pools,
        originate,
        graceful_restart: GracefulRestartConfig {
            enabled: true,
            restart_time: mesh_restart,
        },
        peers: peers.iter().map(|p| p.config.clone()).collect(),
    };
    Ok(Plan {
        node: node.to_string(),
        config,
        peers,
        blocks,
        service_ranges,
        warnings: cx.warnings,
    })
}

/// Seconds for a restart time, clamped to what RFC 4724 can carry (1–4095).
fn restart_seconds(w: &mut Vec<Warning>, who: &str, field: &str, t: &str) -> Option<u16> {
    match api::parse_duration(t) {
        Ok(d) => {
            let secs = d.as_secs_f64().round() as u64;
            let clamped = secs.clamp(1, 4095) as u16;
            if u64::from(clamped) != secs {
                warn(
                    w,
                    who.to_string(),
                    format!("{field} {t:?} is outside 1s..4095s (RFC 4724): using {clamped}s"),
                );
            }
            Some(clamped)
        }
        Err(e) => {
            warn(
                w,
                who.to_string(),
                format!(
                    "{field} {t:?} is not a duration ({}): using the default",
                    e.reason
                ),
            );
            None
        }
    }
}

/// The mesh peerings of `node` (Calico `processMeshPeers`).
fn mesh(cx: &Ctx, node: &str) -> Vec<Candidate> {
    let Some(me) = cx.node(node) else {
        return Vec::new();
    };
    let enabled = cx.default_bgp.is_none_or(|b| b.node_to_node_mesh_enabled());
    if !enabled || me.cluster_id.is_some() {
        return Vec::new();
    }
    cx.nodes
        .iter()
        .filter(|n| n.name != node && n.cluster_id.is_none())
        .filter_map(|n| {
            Some(Candidate {
                address: IpAddr::V4(n.v4?),
                port: n.port,
                asn: n.asn,
                origin: PeerOrigin::Mesh,
                bgp_peer: None,
                node: Some(n.name.to_string()),
                remote_cluster_id: None,
                spec: None,
            })
        })
        .collect()
}

/// Every peering the BGPPeers give `node`, forward and reverse (Calico `updatePeersV1`).
fn peerings_from_bgp_peers(cx: &mut Ctx, node: &str) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut bgp_peers: Vec<&BGPPeer> = cx.res.bgp_peers.iter().collect();
    bgp_peers.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let Some(me_idx) = cx.nodes.iter().position(|n| n.name == node) else {
        return out;
    };
    for bp in bgp_peers {
        let who = format!("BGPPeer/{}", bp.metadata.name);
        let s = &bp.spec;
        let node_field = s.node.as_deref().filter(|n| !n.is_empty());
        let node_sel = s.node_selector.as_deref().filter(|n| !n.is_empty());
        let peer_sel = s.peer_selector.as_deref().filter(|n| !n.is_empty());
        let global = node_field.is_none() && node_sel.is_none();

        // The nodes this BGPPeer applies to ("local" side).
        let locals: Vec<usize> = match (node_sel, node_field) {
            (Some(sel), _) => cx.select(&who, "nodeSelector", sel),
            (None, Some(n)) => cx
                .nodes
                .iter()
                .position(|x| x.name == n)
                .into_iter()
                .collect(),
            (None, None) => (0..cx.nodes.len()).collect(),
        };
        // The remote side: selected nodes, or a peerIP.
        let remote = match (peer_sel, s.peer_ip.as_deref().filter(|p| !p.is_empty())) {
            (Some(sel), _) => Remote::Nodes(cx.select(&who, "peerSelector", sel)),
            (None, Some(ip)) => match api::validate::parse_peer_ip(ip) {
                Ok((addr, port)) => Remote::Ip(addr, port),
                Err(e) => {
                    warn(&mut cx.warnings, who, format!("peerIP: {e}: skipped"));
                    continue;
                }
            },
            (None, None) => {
                warn(
                    &mut cx.warnings,
                    who,
                    "neither peerIP nor peerSelector: skipped",
                );
                continue;
            }
        };

        // Forward: this node is a local node.
        if locals.contains(&me_idx) {
            let origin = if global {
                PeerOrigin::Global
            } else {
                PeerOrigin::Node
            };
            match &remote {
                Remote::Nodes(idx) => {
                    for &i in idx {
                        if let Some(c) = node_candidate(cx, i, origin, bp) {
                            out.push(c);
                        }
                    }
                }
                Remote::Ip(addr, port) => {
                    let asn = s.as_number.unwrap_or(cx.global_asn);
                    let peer_node = cx
                        .nodes
                        .iter()
                        .find(|n| n.addresses().any(|a| a == *addr) && n.asn == asn);
                    out.push(Candidate {
                        address: *addr,
                        port: port.or(peer_node.map(|n| n.port)).unwrap_or(BGP_PORT),
                        asn,
                        origin,
                        bgp_peer: Some(bp.metadata.name.clone()),
                        node: peer_node.map(|n| n.name.to_string()),
                        remote_cluster_id: peer_node.and_then(|n| n.cluster_id),
                        spec: Some(s.clone()),
                    });
                }
            }
        }

        // Reverse: this node is a remote node; peer back with every local node.
        let i_am_remote = match &remote {
            Remote::Nodes(idx) => idx.contains(&me_idx),
            Remote::Ip(addr, port) => {
                let me = &cx.nodes[me_idx];
                let asn = s.as_number.unwrap_or(cx.global_asn);
                me.addresses().any(|a| a == *addr)
                    && me.asn == asn
                    && port.is_none_or(|p| p == me.port)
            }
        };
        if i_am_remote {
            let v6_too = matches!(remote, Remote::Nodes(_))
                || matches!(remote, Remote::Ip(IpAddr::V6(_), _));
            for i in locals {
                if let Some(mut c) = node_candidate(cx, i, PeerOrigin::Reverse, bp) {
                    if !v6_too && c.address.is_ipv6() {
                        continue;
                    }
                    c.origin = PeerOrigin::Reverse;
                    out.push(c);
                }
            }
        }
    }
    out
}

enum Remote {
    Nodes(Vec<usize>),
    Ip(IpAddr, Option<u16>),
}

/// A peering with node `i` at its IPv4 BGP address (the speaker carries IPv6 routes over the
/// same session, so no second IPv6 session is rendered), or its IPv6 one if it has no IPv4.
fn node_candidate(cx: &Ctx, i: usize, origin: PeerOrigin, bp: &BGPPeer) -> Option<Candidate> {
    let n = &cx.nodes[i];
    let address = n.v4.map(IpAddr::V4).or(n.v6)?;
    Some(Candidate {
        address,
        port: n.port,
        asn: n.asn,
        origin,
        bgp_peer: Some(bp.metadata.name.clone()),
        node: Some(n.name.to_string()),
        remote_cluster_id: n.cluster_id,
        spec: Some(bp.spec.clone()),
    })
}

/// Whether blocks of this pool are announced. Calico's `bird_ipam.cfg` rejects only
/// `disableBGPExport` pools; `disabled` stops allocation, not routing.
pub fn pool_exported(pool: &IPPool) -> bool {
    !pool.spec.disable_bgp_export
}

/// The node's confirmed blocks inside an exported pool, sorted.
fn originated_blocks(res: &Resources, node: &str) -> Vec<IpNet> {
    let pools: Vec<&IPPool> = res.pools.iter().filter(|p| p.spec.cidr.is_some()).collect();
    let mut blocks: Vec<IpNet> = res
        .affinities
        .iter()
        .filter(|a| {
            a.spec.node == node && a.spec.state == AffinityState::Confirmed && !a.spec.deleted
        })
        .filter_map(|a| a.spec.cidr.map(|c| c.trunc()))
        .filter(|b| {
            // The most specific pool containing the block decides.
            pools
                .iter()
                .filter(|p| p.spec.cidr.is_some_and(|c| c.contains(b)))
                .max_by_key(|p| p.spec.cidr.map(|c| c.prefix_len()))
                .is_some_and(|p| pool_exported(p))
        })
        .collect();
    blocks.sort();
    blocks.dedup();
    blocks
}

fn service_ranges(w: &mut Vec<Warning>, cfg: Option<&api::BGPConfigurationSpec>) -> Vec<IpNet> {
    let Some(cfg) = cfg else { return Vec::new() };
    let mut out = Vec::new();
    for (field, list) in [
        ("serviceClusterIPs", &cfg.service_cluster_ips),
        ("serviceExternalIPs", &cfg.service_external_ips),
        ("serviceLoadBalancerIPs", &cfg.service_load_balancer_ips),
    ] {
        for s in list {
            match s.cidr.trim().parse::<IpNet>() {
                Ok(n) if n.prefix_len() > 0 => out.push(n.trunc()),
                _ => warn(
                    w,
                    "BGPConfiguration/default".into(),
                    format!(
                        "{field}: {:?} is not a CIDR (a default route is not allowed): not advertised",
                        s.cidr
                    ),
                ),
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Felix's configuration for `node`: the `default` FelixConfiguration with the fields set in
/// `node.<name>` on top (Calico: per-node settings override the global ones field by field).
pub fn felix_config(res: &Resources, node: &str) -> FelixConfigurationSpec {
    let find = |name: &str| {
        res.felix_configurations
            .iter()
            .find(|c| c.metadata.name == name)
            .map(|c| &c.spec)
    };
    let global = find("default");
    let local = find(&format!("node.{node}"));
    match (global, local) {
        (None, None) => FelixConfigurationSpec::default(),
        (Some(g), None) => g.clone(),
        (None, Some(l)) => l.clone(),
        (Some(g), Some(l)) => {
            // Every field is optional and skipped when unset, so overlaying the JSON objects
            // is a field-by-field merge.
            let (Ok(serde_json::Value::Object(mut merged)), Ok(serde_json::Value::Object(over))) =
                (serde_json::to_value(g), serde_json::to_value(l))
            else {
                return l.clone();
            };
            merged.extend(over);
            serde_json::from_value(serde_json::Value::Object(merged)).unwrap_or_else(|_| l.clone())
        }
    }
}

#[cfg(test)]
mod tests;
