//! The render as a BIRD 2 configuration file, so a node can run BIRD instead of the embedded
//! speaker and still peer with tabby nodes. It is made from the same [`Plan`] as the speaker
//! config, so the two cannot disagree on peers, ASNs, route reflection or what is announced.
//!
//! What the file contains, and how it maps the speaker's behaviour:
//!
//! - `router id`, `protocol device`, and `protocol direct` (interface routes, so that BGP next
//!   hops resolve; `cali*`, tunnel and `kube-ipvs*` devices excluded, as Calico does).
//! - `protocol kernel`: imports the host's own routes (not pod routes) for next-hop resolution,
//!   and exports the routes learned over BGP, except default routes and routes of VXLAN and
//!   IPIP pools: felix programs VXLAN routes, and upstream BIRD 2 cannot program Calico's
//!   `tunl0 onlink` routes (Calico's BIRD fork has `krt_tunnel` for that). `persist` and
//!   `graceful restart` keep the routes while BIRD restarts. With
//!   [`BirdOptions::kernel_export`] off it exports nothing.
//! - `protocol static tabby_originate_v4/_v6`: the node's blocks and service ranges as blackhole
//!   routes (never exported to the kernel: felix owns the local blackholes).
//! - One `protocol bgp` per peer, named as Calico names them (`Mesh_192_0_2_12`,
//!   `Global_192_0_2_1_port_1179`, `Node_…`), with the same ASNs, ports, passive side, MD5
//!   password, `rr client; rr cluster id`, GTSM, graceful restart time and next-hop mode; mesh
//!   and iBGP sessions are `multihop` as in Calico's `bgp_template`.
//! - Import: from cluster peers only prefixes inside the pools; from every peer no default
//!   route and no prefix covering a node or peer address (the speaker's `ImportPolicy`).
//!   Export: to cluster peers the node's own routes and pool routes learned over BGP (which
//!   BIRD's iBGP and route reflection rules then govern); to external peers only the node's own
//!   blocks and service ranges (the speaker's `ExportPolicy`).
//!
//! One difference stays: the speaker carries IPv4 and IPv6 routes over every session, a BIRD
//! session carries the family of its neighbour address only.

use std::fmt::Write;
use std::net::IpAddr;

use bgp::config::{BGP_PORT, NextHop, PeerConfig};
use bgp::policy::MaxPrefixAction;
use ipnet::IpNet;

use crate::render::{PeerOrigin, Plan, RenderError, Resources, plan};

/// Choices the speaker config has no equivalent for.
#[derive(Clone, Debug)]
pub struct BirdOptions {
    /// Export routes learned over BGP to the kernel (BIRD programs them). Off: `export none`,
    /// for a BIRD that only speaks BGP.
    pub kernel_export: bool,
}

impl Default for BirdOptions {
    fn default() -> Self {
        BirdOptions {
            kernel_export: true,
        }
    }
}

/// The BIRD 2 configuration equivalent to [`crate::render()`] for `node`.
pub fn render_bird(res: &Resources, node: &str, opts: &BirdOptions) -> Result<String, RenderError> {
    let plan = plan(res, node)?;
    bird_config(&plan, res, opts)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
    fn of_addr(a: &IpAddr) -> Family {
        if a.is_ipv4() { Family::V4 } else { Family::V6 }
    }
    fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
    fn channel(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// A BIRD prefix set `[ a+, b+ ]` (each prefix and everything inside it), or `None` if empty.
fn prefix_set<'a>(nets: impl Iterator<Item = &'a IpNet>) -> Option<String> {
    let items: Vec<String> = nets.map(|n| format!("{n}+")).collect();
    (!items.is_empty()).then(|| format!("[ {} ]", items.join(", ")))
}

fn string(node: &str, field: &'static str, s: &str) -> Result<String, RenderError> {
    // BIRD strings have no escapes: a double quote or a newline cannot be written.
    if s.contains(['"', '\n', '\r']) {
        return Err(RenderError::InvalidField {
            node: node.into(),
            field,
            value: "(hidden)".into(),
            reason: "contains a double quote or a line break, which a BIRD string cannot hold"
                .into(),
        });
    }
    Ok(format!("\"{s}\""))
}

fn protocol_name(origin: PeerOrigin, p: &PeerConfig) -> String {
    let prefix = match origin {
        PeerOrigin::Mesh => "Mesh",
        PeerOrigin::Global => "Global",
        PeerOrigin::Node | PeerOrigin::Reverse => "Node",
    };
    let mut name = format!(
        "{prefix}_{}",
        p.address.to_string().replace(['.', ':'], "_")
    );
    if p.port != BGP_PORT {
        let _ = write!(name, "_port_{}", p.port);
    }
    name
}

/// Writes the configuration for a rendered plan.
pub fn bird_config(
    plan: &Plan,
    res: &Resources,
    opts: &BirdOptions,
) -> Result<String, RenderError> {
    let c = &plan.config;
    let mut families = vec![Family::V4];
    if c.peers.iter().any(|p| p.address.is_ipv6())
        || c.pools
            .iter()
            .chain(&c.originate)
            .any(|n| Family::of(n) == Family::V6)
    {
        families.push(Family::V6);
    }
    let listen_port = c.listen.first().map(|a| a.port()).unwrap_or(BGP_PORT);

    let mut o = String::new();
    let _ = writeln!(
        o,
        "# BIRD 2 configuration for node {}, generated by tabby confd.",
        plan.node
    );
    let _ = writeln!(
        o,
        "# Do not edit: it is rewritten on every change of the cluster's resources."
    );
    for w in &plan.warnings {
        let _ = writeln!(o, "# warning: {}", w.to_string().replace('\n', " "));
    }
    let _ = writeln!(o, "\nrouter id {};", c.router_id);

    // Sets.
    let _ = writeln!(o);
    let mut protected: Vec<IpAddr> = vec![IpAddr::V4(c.router_id)];
    for p in &c.peers {
        protected.push(p.address);
        protected.extend(p.source_address);
    }
    protected.sort();
    protected.dedup();
    let no_kernel: Vec<IpNet> = res
        .pools
        .iter()
        .filter(|p| p.spec.vxlan_mode().enabled() || p.spec.ipip_mode().enabled())
        .filter_map(|p| p.spec.cidr.map(|c| c.trunc()))
        .collect();
    for f in &families {
        let s = f.suffix().to_uppercase();
        if let Some(set) = prefix_set(c.pools.iter().filter(|n| Family::of(n) == *f)) {
            let _ = writeln!(o, "define TABBY_POOLS_{s} = {set};");
        }
        if let Some(set) = prefix_set(no_kernel.iter().filter(|n| Family::of(n) == *f)) {
            let _ = writeln!(o, "define TABBY_FELIX_POOLS_{s} = {set};");
        }
    }
    let has_pools = |f: Family| c.pools.iter().any(|n| Family::of(n) == f);
    let has_felix_pools = |f: Family| no_kernel.iter().any(|n| Family::of(n) == f);

    // Filters.
    for &f in &families {
        let s = f.suffix();
        let _ = writeln!(
            o,
            "\n# Prefixes that contain this node's or a peer's address are never imported:"
        );
        let _ = writeln!(
            o,
            "# they could pull the sessions' own traffic into the pod network."
        );
        let _ = writeln!(o, "function tabby_covers_protected_{s}()\n{{");
        for a in protected.iter().filter(|a| Family::of_addr(a) == f) {
            let _ = writeln!(o, "  if {a} ~ net then return true;");
        }
        let _ = writeln!(o, "  return false;\n}}");
    }
    for &f in &families {
        let s = f.suffix();
        let up = s.to_uppercase();
        let _ = writeln!(
            o,
            "\n# From mesh, route reflector and other cluster peers: pod routes only."
        );
        let _ = writeln!(o, "filter tabby_import_cluster_{s}\n{{");
        let _ = writeln!(o, "  if net.len = 0 then reject;");
        let _ = writeln!(o, "  if tabby_covers_protected_{s}() then reject;");
        if has_pools(f) {
            let _ = writeln!(o, "  if net ~ TABBY_POOLS_{up} then accept;");
        }
        let _ = writeln!(o, "  reject;\n}}");
        let _ = writeln!(
            o,
            "\n# From peers outside the cluster: anything but a default route."
        );
        let _ = writeln!(o, "filter tabby_import_external_{s}\n{{");
        let _ = writeln!(o, "  if net.len = 0 then reject;");
        let _ = writeln!(o, "  if tabby_covers_protected_{s}() then reject;");
        let _ = writeln!(o, "  accept;\n}}");
        let _ = writeln!(
            o,
            "\n# To cluster peers: our blocks, and pod routes learned over BGP (BIRD's iBGP and"
        );
        let _ = writeln!(
            o,
            "# route reflection rules decide which of those are passed on)."
        );
        let _ = writeln!(o, "filter tabby_export_cluster_{s}\n{{");
        let _ = writeln!(o, "  if proto = \"tabby_originate_{s}\" then accept;");
        if has_pools(f) {
            let _ = writeln!(
                o,
                "  if source = RTS_BGP && net ~ TABBY_POOLS_{up} then accept;"
            );
        }
        let _ = writeln!(o, "  reject;\n}}");
        let _ = writeln!(
            o,
            "\n# To peers outside the cluster: our blocks and service ranges only."
        );
        let _ = writeln!(o, "filter tabby_export_external_{s}\n{{");
        let _ = writeln!(o, "  if proto = \"tabby_originate_{s}\" then accept;");
        let _ = writeln!(o, "  reject;\n}}");
        let _ = writeln!(
            o,
            "\n# Host routes in (for next-hop resolution), pod routes not."
        );
        let _ = writeln!(o, "filter tabby_kernel_import_{s}\n{{");
        if has_pools(f) {
            let _ = writeln!(o, "  if net ~ TABBY_POOLS_{up} then reject;");
        }
        let _ = writeln!(o, "  accept;\n}}");
        let _ = writeln!(
            o,
            "\n# Routes learned over BGP out; VXLAN and IPIP pools are felix's."
        );
        let _ = writeln!(o, "filter tabby_kernel_export_{s}\n{{");
        let _ = writeln!(o, "  if source != RTS_BGP then reject;");
        let _ = writeln!(o, "  if net.len = 0 then reject;");
        if has_felix_pools(f) {
            let _ = writeln!(o, "  if net ~ TABBY_FELIX_POOLS_{up} then reject;");
        }
        let _ = writeln!(o, "  accept;\n}}");
    }

    // Base protocols.
    let _ = writeln!(o, "\nprotocol device {{\n  scan time 10;\n}}");
    for &f in &families {
        let s = f.suffix();
        let _ = writeln!(o, "\nprotocol direct direct_{s} {{");
        let _ = writeln!(o, "  {};", f.channel());
        let _ = writeln!(
            o,
            "  interface -\"cali*\", -\"kube-ipvs*\", -\"tunl0\", -\"vxlan.calico\", -\"vxlan-v6.calico\", \"*\";\n}}"
        );
        let _ = writeln!(o, "\nprotocol kernel kernel_{s} {{");
        let _ = writeln!(
            o,
            "  learn;             # the host's own routes, for next-hop resolution"
        );
        let _ = writeln!(
            o,
            "  persist;           # keep routes while BIRD restarts (graceful restart)"
        );
        let _ = writeln!(o, "  graceful restart on;");
        let _ = writeln!(
            o,
            "  merge paths on;    # ECMP, e.g. through two route reflectors"
        );
        let _ = writeln!(o, "  {} {{", f.channel());
        let _ = writeln!(o, "    import filter tabby_kernel_import_{s};");
        if opts.kernel_export {
            let _ = writeln!(o, "    export filter tabby_kernel_export_{s};");
        } else {
            let _ = writeln!(o, "    export none;");
        }
        let _ = writeln!(o, "  }};\n}}");
        let _ = writeln!(o, "\nprotocol static tabby_originate_{s} {{");
        let _ = writeln!(o, "  {};", f.channel());
        for n in c.originate.iter().filter(|n| Family::of(n) == f) {
            let what = if plan.blocks.contains(n) {
                "block"
            } else {
                "service range"
            };
            let _ = writeln!(o, "  route {n} blackhole;   # {what}");
        }
        let _ = writeln!(o, "}}");
    }

    // Peers.
    for rp in &plan.peers {
        let p = &rp.config;
        let f = Family::of_addr(&p.address);
        let s = f.suffix();
        let _ = writeln!(o, "\nprotocol bgp {} {{", protocol_name(rp.origin, p));
        let what = match (rp.origin, &rp.bgp_peer, &rp.node) {
            (PeerOrigin::Mesh, _, Some(n)) => format!("node {n}, node-to-node mesh"),
            (PeerOrigin::Reverse, Some(b), Some(n)) => format!("node {n}, reverse of BGPPeer {b}"),
            (_, Some(b), Some(n)) => format!("node {n}, BGPPeer {b}"),
            (_, Some(b), None) => format!("BGPPeer {b}"),
            _ => "peer".to_string(),
        };
        let _ = writeln!(
            o,
            "  description {};",
            string(&plan.node, "description", &what)?
        );
        let mut local = String::from("  local");
        if let Some(src) = p.source_address {
            let _ = write!(local, " {src}");
        }
        if listen_port != BGP_PORT {
            let _ = write!(local, " port {listen_port}");
        }
        let _ = writeln!(o, "{local} as {};", c.asn);
        let _ = writeln!(o, "  neighbor {} port {} as {};", p.address, p.port, p.asn);
        if p.ttl_security {
            let _ = writeln!(o, "  ttl security on;");
        } else {
            let _ = writeln!(o, "  multihop;");
        }
        if p.passive {
            let _ = writeln!(
                o,
                "  passive on;   # the mesh is one-directional: the peer connects"
            );
        }
        if let Some(pw) = &p.password {
            let _ = writeln!(o, "  password {};", string(&plan.node, "password", pw)?);
        }
        if let (true, Some(id)) = (p.rr_client, c.cluster_id) {
            let _ = writeln!(o, "  rr client;\n  rr cluster id {id};");
        }
        let _ = writeln!(o, "  hold time {};", p.hold_time);
        if let Some(k) = p.keepalive {
            let _ = writeln!(o, "  keepalive time {k};");
        }
        let _ = writeln!(
            o,
            "  connect retry time {};",
            p.connect_retry.as_secs().max(1)
        );
        if p.graceful_restart {
            let _ = writeln!(
                o,
                "  graceful restart on;\n  graceful restart time {};",
                p.restart_time
            );
        } else {
            let _ = writeln!(o, "  graceful restart off;");
        }
        let kind = if rp.node.is_some() || rp.origin == PeerOrigin::Mesh {
            "cluster"
        } else {
            "external"
        };
        let import = if p.import_all { "external" } else { "cluster" };
        let _ = writeln!(o, "  {} {{", f.channel());
        let _ = writeln!(o, "    import filter tabby_import_{import}_{s};");
        let _ = writeln!(o, "    export filter tabby_export_{kind}_{s};");
        match p.next_hop {
            NextHop::Default => {}
            NextHop::SelfAddress => {
                let _ = writeln!(o, "    next hop self;");
            }
            NextHop::Keep => {
                let _ = writeln!(o, "    next hop keep;");
            }
        }
        if !p.ttl_security {
            let _ = writeln!(o, "    gateway recursive;");
        }
        if let Some(m) = p.max_prefix {
            let action = match p.max_prefix_action {
                MaxPrefixAction::Stop => "disable",
                MaxPrefixAction::Warn => "warn",
            };
            let _ = writeln!(o, "    receive limit {m} action {action};");
        }
        let _ = writeln!(o, "  }};\n}}");
    }
    Ok(o)
}

#[cfg(test)]
mod tests;
