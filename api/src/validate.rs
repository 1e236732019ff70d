//! Validation: what Calico's validator (`libcalico-go/lib/validator/v3`) and its CRD schemas
//! reject, reported with the path of the offending field (`spec.blockSize`, `metadata.name`).
//!
//! [`Resource::validate`] checks one resource on its own; [`validate_pools`] checks what only a
//! set of pools can show (overlapping CIDRs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::bgp::{BGPPassword, Community};
use crate::duration::parse_duration;
use crate::felix::{FelixConfigurationSpec, ProtoPort};
use crate::ipam::{affinity_name, block_name};
use crate::ippool::AllowedUse;
use crate::numorstring::PortOrRange;
use crate::{
    API_VERSION, BGPConfigurationSpec, BGPPeerSpec, BlockAffinitySpec, IPAMBlockSpec,
    IPAMHandleSpec, IPPool, IPPoolSpec, Kind, NodeSpec, ObjectMeta, Resource, Selector,
    WorkloadEndpointSpec,
};

/// One thing wrong with a resource: where (`spec.peerIP`) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The field's path as written in YAML: `metadata.name`, `spec.blockSize`,
    /// `spec.serviceClusterIPs[0].cidr`.
    pub field: String,
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

type Result<T = ()> = std::result::Result<T, ValidationError>;

/// Kubernetes: a DNS-1123 subdomain is at most 253 characters.
const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Kubernetes: a DNS-1123 label (and a label value or name part) is at most 63 characters.
const DNS1123_LABEL_MAX: usize = 63;
/// Calico: IPv4 blocks are /20 to /32.
pub const BLOCK_SIZE_RANGE_V4: std::ops::RangeInclusive<u8> = 20..=32;
/// Calico: IPv6 blocks are /116 to /128.
pub const BLOCK_SIZE_RANGE_V6: std::ops::RangeInclusive<u8> = 116..=128;
/// Linux: interface names are at most 15 bytes (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

impl Resource {
    /// Checks this resource on its own, as Calico does before a write. Returns the first problem
    /// found.
    pub fn validate(&self) -> Result {
        let kind = self.kind();
        let (api_version, kind_field) = match self {
            Resource::IPPool(o) => (&o.api_version, &o.kind),
            Resource::Node(o) => (&o.api_version, &o.kind),
            Resource::BGPConfiguration(o) => (&o.api_version, &o.kind),
            Resource::BGPPeer(o) => (&o.api_version, &o.kind),
            Resource::FelixConfiguration(o) => (&o.api_version, &o.kind),
            Resource::IPAMConfig(o) => (&o.api_version, &o.kind),
            Resource::ClusterInformation(o) => (&o.api_version, &o.kind),
            Resource::WorkloadEndpoint(o) => (&o.api_version, &o.kind),
            Resource::IPAMBlock(o) => (&o.api_version, &o.kind),
            Resource::BlockAffinity(o) => (&o.api_version, &o.kind),
            Resource::IPAMHandle(o) => (&o.api_version, &o.kind),
        };
        if api_version != API_VERSION {
            return Err(ValidationError::new(
                "apiVersion",
                format!("{api_version:?} is not {API_VERSION}"),
            ));
        }
        if kind_field != kind.as_str() {
            return Err(ValidationError::new(
                "kind",
                format!("{kind_field:?} does not match the resource type {kind}"),
            ));
        }
        validate_meta(kind, self.metadata())?;
        let name = self.name();
        match self {
            Resource::IPPool(o) => validate_ippool(&o.spec),
            Resource::Node(o) => validate_node(&o.spec),
            Resource::BGPConfiguration(o) => {
                per_node_name(name)?;
                validate_bgp_configuration(name, &o.spec)
            }
            Resource::BGPPeer(o) => validate_bgp_peer(&o.spec),
            Resource::FelixConfiguration(o) => {
                per_node_name(name)?;
                validate_felix(&o.spec)
            }
            Resource::IPAMConfig(_) | Resource::ClusterInformation(_) => singleton_name(name),
            Resource::WorkloadEndpoint(o) => validate_workload(&o.spec),
            Resource::IPAMBlock(o) => validate_block(name, &o.spec),
            Resource::BlockAffinity(o) => validate_affinity(name, &o.spec),
            Resource::IPAMHandle(o) => validate_handle(name, &o.spec),
        }
    }
}

/// Checks what only the set of pools shows: Calico refuses a pool whose CIDR overlaps another
/// pool's (`calicoctl`: "IPPool(x) CIDR overlaps with IPPool(y) CIDR").
pub fn validate_pools(pools: &[IPPool]) -> Result {
    for (i, a) in pools.iter().enumerate() {
        let Some(ca) = a.spec.cidr else { continue };
        for b in &pools[i + 1..] {
            let Some(cb) = b.spec.cidr else { continue };
            if ca.contains(&cb.network()) || cb.contains(&ca.network()) {
                return Err(ValidationError::new(
                    "spec.cidr",
                    format!(
                        "{cb} of IPPool {} overlaps {ca} of IPPool {}",
                        b.metadata.name, a.metadata.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

// ---- metadata and names -------------------------------------------------------------------

fn validate_meta(kind: Kind, meta: &ObjectMeta) -> Result {
    dns1123_subdomain(&meta.name).map_err(|r| ValidationError::new("metadata.name", r))?;
    let namespace = meta.namespace.as_deref().filter(|ns| !ns.is_empty());
    match (kind.namespaced(), namespace) {
        (true, None) => {
            return Err(ValidationError::new(
                "metadata.namespace",
                format!("a {kind} must be in a namespace"),
            ));
        }
        (true, Some(ns)) => {
            dns1123_label(ns).map_err(|r| ValidationError::new("metadata.namespace", r))?
        }
        (false, Some(ns)) => {
            return Err(ValidationError::new(
                "metadata.namespace",
                format!("{kind} is cluster-scoped; it cannot be in namespace {ns:?}"),
            ));
        }
        (false, None) => {}
    }
    for (key, value) in &meta.labels {
        label_key(key).map_err(|r| ValidationError::new("metadata.labels", r))?;
        label_value(value)
            .map_err(|r| ValidationError::new("metadata.labels", format!("label {key}: {r}")))?;
    }
    for key in meta.annotations.keys() {
        label_key(key).map_err(|r| ValidationError::new("metadata.annotations", r))?;
    }
    Ok(())
}

/// Kubernetes DNS-1123 subdomain, the rule Calico applies to resource names: lower-case
/// alphanumerics, `-` and `.`, starting and ending with an alphanumeric, each dot-separated part
/// non-empty, at most 253 characters.
pub fn dns1123_subdomain(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!(
            "{name:?} is longer than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    for part in name.split('.') {
        if !is_dns_label_shape(part) {
            return Err(format!(
                "{name:?} must consist of lower case alphanumeric characters, '-' or '.', and \
                 start and end with an alphanumeric character"
            ));
        }
    }
    Ok(())
}

/// Kubernetes DNS-1123 label (namespaces): like a subdomain part, at most 63 characters.
pub fn dns1123_label(name: &str) -> std::result::Result<(), String> {
    if name.len() > DNS1123_LABEL_MAX {
        return Err(format!(
            "{name:?} is longer than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !is_dns_label_shape(name) {
        return Err(format!(
            "{name:?} must consist of lower case alphanumeric characters or '-', and start and \
             end with an alphanumeric character"
        ));
    }
    Ok(())
}

fn is_dns_label_shape(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// Kubernetes qualified name: `[prefix/]name`, the prefix a DNS subdomain, the name at most 63
/// characters of alphanumerics, `-`, `_`, `.`, starting and ending with an alphanumeric.
fn label_key(key: &str) -> std::result::Result<(), String> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            dns1123_subdomain(prefix).map_err(|r| format!("key {key:?}: prefix {r}"))?;
            name
        }
        None => key,
    };
    if name.is_empty() || name.len() > DNS1123_LABEL_MAX || !is_label_value_shape(name) {
        return Err(format!(
            "key {key:?}: the name part must be 1 to 63 alphanumerics, '-', '_' or '.', starting \
             and ending with an alphanumeric"
        ));
    }
    Ok(())
}

/// Kubernetes label value: empty, or up to 63 alphanumerics, `-`, `_`, `.` that start and end
/// with an alphanumeric.
fn label_value(value: &str) -> std::result::Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > DNS1123_LABEL_MAX || !is_label_value_shape(value) {
        return Err(format!(
            "value {value:?} must be at most 63 alphanumerics, '-', '_' or '.', starting and \
             ending with an alphanumeric"
        ));
    }
    Ok(())
}

fn is_label_value_shape(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Calico: BGPConfiguration and FelixConfiguration are named `default` (cluster-wide) or
/// `node.<node name>` (one node's overrides).
fn per_node_name(name: &str) -> Result {
    if name == "default" {
        return Ok(());
    }
    match name.strip_prefix("node.") {
        Some(node) if dns1123_subdomain(node).is_ok() => Ok(()),
        _ => Err(ValidationError::new(
            "metadata.name",
            format!("{name:?} must be \"default\" or \"node.<node name>\""),
        )),
    }
}

/// Calico: ClusterInformation and IPAMConfig exist once, named `default`.
fn singleton_name(name: &str) -> Result {
    if name == "default" {
        Ok(())
    } else {
        Err(ValidationError::new(
            "metadata.name",
            format!("{name:?} must be \"default\""),
        ))
    }
}

// ---- field helpers ------------------------------------------------------------------------

fn selector(field: &str, value: &Option<String>) -> Result {
    if let Some(s) = value {
        Selector::parse(s).map_err(|e| ValidationError::new(field, e.reason))?;
    }
    Ok(())
}

fn duration(field: &str, value: &Option<String>) -> Result {
    if let Some(s) = value {
        parse_duration(s).map_err(|e| ValidationError::new(field, e.to_string()))?;
    }
    Ok(())
}

fn asn(field: &str, value: Option<u32>) -> Result {
    if value == Some(0) {
        return Err(ValidationError::new(field, "0 is not a valid AS number"));
    }
    Ok(())
}

fn one_of(field: &str, value: &Option<String>, allowed: &[&str]) -> Result {
    if let Some(v) = value
        && !allowed.contains(&v.as_str())
    {
        return Err(ValidationError::new(
            field,
            format!("{v:?} is not one of {}", allowed.join(", ")),
        ));
    }
    Ok(())
}

fn one_of_ignore_case(field: &str, value: &Option<String>, allowed: &[&str]) -> Result {
    if let Some(v) = value
        && !allowed.iter().any(|a| a.eq_ignore_ascii_case(v))
    {
        return Err(ValidationError::new(
            field,
            format!("{v:?} is not one of {}", allowed.join(", ")),
        ));
    }
    Ok(())
}

fn ip(field: &str, value: &str) -> Result<IpAddr> {
    value
        .parse::<IpAddr>()
        .map_err(|_| ValidationError::new(field, format!("{value:?} is not an IP address")))
}

fn ipv4(field: &str, value: &Option<String>) -> Result {
    if let Some(v) = value {
        v.parse::<Ipv4Addr>()
            .map_err(|_| ValidationError::new(field, format!("{v:?} is not an IPv4 address")))?;
    }
    Ok(())
}

fn ipv6(field: &str, value: &Option<String>) -> Result {
    if let Some(v) = value {
        v.parse::<Ipv6Addr>()
            .map_err(|_| ValidationError::new(field, format!("{v:?} is not an IPv6 address")))?;
    }
    Ok(())
}

fn opt_ip(field: &str, value: &Option<String>) -> Result {
    if let Some(v) = value {
        ip(field, v)?;
    }
    Ok(())
}

/// An address in CIDR form (`192.0.2.11/24`); host bits may be set, as for a node address.
fn cidr(field: &str, value: &str) -> Result<IpNet> {
    value.parse::<IpNet>().map_err(|_| {
        let hint = if value.parse::<IpAddr>().is_ok() {
            " (it needs a prefix length, e.g. /24)"
        } else {
            ""
        };
        ValidationError::new(field, format!("{value:?} is not in CIDR form{hint}"))
    })
}

/// An IP address or a CIDR (Calico's `net` validator: `cnet.ParseCIDROrIP`).
fn ip_or_cidr(field: &str, value: &str) -> Result {
    if value.parse::<IpNet>().is_ok() || value.parse::<IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("{value:?} is not an IP address or CIDR"),
        ))
    }
}

/// A CIDR whose host bits are all zero.
fn masked(field: &str, net: &IpNet) -> Result {
    if net.addr() != net.network() {
        return Err(ValidationError::new(
            field,
            format!("{net} has host bits set (did you mean {}?)", net.trunc()),
        ));
    }
    Ok(())
}

/// A MAC address: six octets in hex separated by `:` or `-` (Go `net.ParseMAC`'s EUI-48 forms).
pub fn parse_mac(value: &str) -> std::result::Result<[u8; 6], String> {
    let bad = || format!("{value:?} is not a MAC address (like ee:ee:ee:ee:ee:ee)");
    let sep = if value.contains('-') { '-' } else { ':' };
    let mut out = [0u8; 6];
    let mut parts = value.split(sep);
    for byte in &mut out {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

fn mac(field: &str, value: &Option<String>) -> Result {
    if let Some(v) = value {
        parse_mac(v).map_err(|r| ValidationError::new(field, r))?;
    }
    Ok(())
}

/// Parses a BGPPeer `peerIP`: `ip`, `ipv4:port` or `[ipv6]:port` (Calico's `IP:port`
/// validator). Returns the address and the port, if one was given.
pub fn parse_peer_ip(value: &str) -> std::result::Result<(IpAddr, Option<u16>), String> {
    let bad = || format!("{value:?} is not an IP address, <IPv4>:<port> or [<IPv6>]:<port>");
    let port = |p: &str| match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{value:?}: port {p:?} is not in 1..65535")),
        Ok(n) => Ok(n),
    };
    if let Ok(addr) = value.parse::<IpAddr>() {
        return Ok((addr, None));
    }
    if let Some(rest) = value.strip_prefix('[') {
        let (addr, p) = rest.split_once("]:").ok_or_else(bad)?;
        let addr: Ipv6Addr = addr.parse().map_err(|_| bad())?;
        return Ok((IpAddr::V6(addr), Some(port(p)?)));
    }
    let (addr, p) = value.rsplit_once(':').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    Ok((IpAddr::V4(addr), Some(port(p)?)))
}

// ---- IPPool -------------------------------------------------------------------------------

fn validate_ippool(spec: &IPPoolSpec) -> Result {
    let Some(net) = spec.cidr else {
        return Err(ValidationError::new("spec.cidr", "an IPPool needs a CIDR"));
    };
    masked("spec.cidr", &net)?;
    // Calico: pools must not overlap the link-local ranges (169.254.0.0/16, fe80::/10).
    let link_local: IpNet = match net {
        IpNet::V4(_) => "169.254.0.0/16".parse().expect("constant CIDR"),
        IpNet::V6(_) => "fe80::/10".parse().expect("constant CIDR"),
    };
    if net.contains(&link_local.network()) || link_local.contains(&net.network()) {
        return Err(ValidationError::new(
            "spec.cidr",
            format!("{net} overlaps the link-local range {link_local}"),
        ));
    }
    let (range, family) = match net {
        IpNet::V4(_) => (BLOCK_SIZE_RANGE_V4, "IPv4"),
        IpNet::V6(_) => (BLOCK_SIZE_RANGE_V6, "IPv6"),
    };
    let block = spec.block_size();
    if !range.contains(&block) {
        return Err(ValidationError::new(
            "spec.blockSize",
            format!(
                "{block} is outside {}..{} for {family}",
                range.start(),
                range.end()
            ),
        ));
    }
    // Calico checks this only for enabled pools: a disabled pool hands out no blocks.
    if !spec.disabled && net.prefix_len() > block {
        return Err(ValidationError::new(
            "spec.blockSize",
            format!(
                "/{block} blocks do not fit in {net}: the block size must be at least the \
                 pool's prefix length {}",
                net.prefix_len()
            ),
        ));
    }
    if matches!(net, IpNet::V6(_)) && spec.ipip_mode().enabled() {
        return Err(ValidationError::new(
            "spec.ipipMode",
            format!(
                "{} is not supported on an IPv6 pool; use Never",
                spec.ipip_mode().as_str()
            ),
        ));
    }
    if spec.ipip_mode().enabled() && spec.vxlan_mode().enabled() {
        return Err(ValidationError::new(
            "spec.ipipMode",
            "ipipMode and vxlanMode cannot both be enabled on the same pool",
        ));
    }
    selector("spec.nodeSelector", &spec.node_selector)?;
    selector("spec.namespaceSelector", &spec.namespace_selector)?;
    if let Some(uses) = &spec.allowed_uses
        && uses.contains(&AllowedUse::LoadBalancer)
    {
        if uses.iter().any(|u| *u != AllowedUse::LoadBalancer) {
            return Err(ValidationError::new(
                "spec.allowedUses",
                "LoadBalancer cannot be combined with Workload or Tunnel",
            ));
        }
        if spec.ipip_mode().enabled() || spec.vxlan_mode().enabled() {
            return Err(ValidationError::new(
                "spec.allowedUses",
                "a LoadBalancer pool cannot have IPIP or VXLAN enabled",
            ));
        }
    }
    Ok(())
}

// ---- Node ---------------------------------------------------------------------------------

fn validate_node(spec: &NodeSpec) -> Result {
    if let Some(bgp) = &spec.bgp {
        if *bgp == Default::default() {
            return Err(ValidationError::new(
                "spec.bgp",
                "must not be empty when present",
            ));
        }
        if let Some(a) = &bgp.ipv4_address {
            let net = cidr("spec.bgp.ipv4Address", a)?;
            if !matches!(net, IpNet::V4(_)) {
                return Err(ValidationError::new(
                    "spec.bgp.ipv4Address",
                    format!("{a:?} is not an IPv4 address"),
                ));
            }
        }
        if let Some(a) = &bgp.ipv6_address {
            let net = cidr("spec.bgp.ipv6Address", a)?;
            if !matches!(net, IpNet::V6(_)) {
                return Err(ValidationError::new(
                    "spec.bgp.ipv6Address",
                    format!("{a:?} is not an IPv6 address"),
                ));
            }
        }
        ipv4("spec.bgp.ipv4IPIPTunnelAddr", &bgp.ipv4_ipip_tunnel_addr)?;
        asn("spec.bgp.asNumber", bgp.as_number)?;
        // Calico: the cluster ID is written as an IPv4 address (BIRD's `rr cluster id`).
        ipv4(
            "spec.bgp.routeReflectorClusterID",
            &bgp.route_reflector_cluster_id,
        )?;
    }
    ipv4("spec.ipv4VXLANTunnelAddr", &spec.ipv4_vxlan_tunnel_addr)?;
    ipv6("spec.ipv6VXLANTunnelAddr", &spec.ipv6_vxlan_tunnel_addr)?;
    mac("spec.vxlanTunnelMACAddr", &spec.vxlan_tunnel_mac_addr)?;
    mac("spec.vxlanTunnelMACAddrV6", &spec.vxlan_tunnel_mac_addr_v6)?;
    for (i, a) in spec.addresses.iter().enumerate() {
        ip_or_cidr(&format!("spec.addresses[{i}].address"), &a.address)?;
        // Calico's `ipType` validator.
        one_of(
            &format!("spec.addresses[{i}].type"),
            &a.type_,
            &["InternalIP", "ExternalIP", "CalicoNodeIP"],
        )?;
    }
    for (i, r) in spec.orch_refs.iter().enumerate() {
        if r.orchestrator.is_empty() {
            return Err(ValidationError::new(
                format!("spec.orchRefs[{i}].orchestrator"),
                "must not be empty",
            ));
        }
    }
    if let Some(wg) = &spec.wireguard {
        ipv4(
            "spec.wireguard.interfaceIPv4Address",
            &wg.interface_ipv4_address,
        )?;
        ipv6(
            "spec.wireguard.interfaceIPv6Address",
            &wg.interface_ipv6_address,
        )?;
    }
    Ok(())
}

// ---- BGP ----------------------------------------------------------------------------------

fn password(field: &str, p: &Option<BGPPassword>) -> Result {
    if let Some(r) = p.as_ref().and_then(|p| p.secret_key_ref.as_ref()) {
        if r.name.is_empty() {
            return Err(ValidationError::new(
                format!("{field}.secretKeyRef.name"),
                "must name a secret",
            ));
        }
        if r.key.is_empty() {
            return Err(ValidationError::new(
                format!("{field}.secretKeyRef.key"),
                "must name a key of the secret",
            ));
        }
    }
    Ok(())
}

/// A community value: `aa:nn` (standard, RFC 1997: two 16-bit numbers) or `aa:nn:mm` (large,
/// RFC 8092: three 32-bit numbers).
fn community_value(value: &str) -> bool {
    let parts: Vec<&str> = value.split(':').collect();
    match parts.len() {
        2 => parts.iter().all(|p| p.parse::<u16>().is_ok()),
        3 => parts.iter().all(|p| p.parse::<u32>().is_ok()),
        _ => false,
    }
}

fn communities(spec: &BGPConfigurationSpec) -> Result {
    for (i, Community { name, value }) in spec.communities.iter().enumerate() {
        dns1123_subdomain(name)
            .map_err(|r| ValidationError::new(format!("spec.communities[{i}].name"), r))?;
        if !community_value(value) {
            return Err(ValidationError::new(
                format!("spec.communities[{i}].value"),
                format!("{value:?} is not aa:nn (16-bit numbers) or aa:nn:mm (32-bit numbers)"),
            ));
        }
    }
    for (i, adv) in spec.prefix_advertisements.iter().enumerate() {
        ip_or_cidr(&format!("spec.prefixAdvertisements[{i}].cidr"), &adv.cidr)?;
        for (j, c) in adv.communities.iter().enumerate() {
            let known = spec.communities.iter().any(|k| &k.name == c);
            if !known && !community_value(c) {
                return Err(ValidationError::new(
                    format!("spec.prefixAdvertisements[{i}].communities[{j}]"),
                    format!("{c:?} is neither a community defined in spec.communities nor a value"),
                ));
            }
        }
    }
    Ok(())
}

fn validate_bgp_configuration(name: &str, spec: &BGPConfigurationSpec) -> Result {
    one_of_ignore_case(
        "spec.logSeverityScreen",
        &spec.log_severity_screen,
        &["Debug", "Info", "Warning", "Error", "Fatal"],
    )?;
    asn("spec.asNumber", spec.as_number)?;
    for (field, list) in [
        ("serviceLoadBalancerIPs", &spec.service_load_balancer_ips),
        ("serviceExternalIPs", &spec.service_external_ips),
        ("serviceClusterIPs", &spec.service_cluster_ips),
    ] {
        for (i, c) in list.iter().enumerate() {
            ip_or_cidr(&format!("spec.{field}[{i}].cidr"), &c.cidr)?;
        }
    }
    if spec.listen_port == Some(0) {
        return Err(ValidationError::new(
            "spec.listenPort",
            "must be in 1..65535",
        ));
    }
    communities(spec)?;
    password("spec.nodeMeshPassword", &spec.node_mesh_password)?;
    duration(
        "spec.nodeMeshMaxRestartTime",
        &spec.node_mesh_max_restart_time,
    )?;
    one_of("spec.bindMode", &spec.bind_mode, &["None", "NodeIP"])?;
    one_of(
        "spec.serviceLoadBalancerAggregation",
        &spec.service_load_balancer_aggregation,
        &["Enabled", "Disabled"],
    )?;
    ipv4(
        "spec.localWorkloadPeeringIPV4",
        &spec.local_workload_peering_ipv4,
    )?;
    ipv6(
        "spec.localWorkloadPeeringIPV6",
        &spec.local_workload_peering_ipv6,
    )?;
    // Calico docs: these are "only valid on the global default BGPConfiguration".
    if name != "default" {
        let global_only = [
            (
                "spec.nodeToNodeMeshEnabled",
                spec.node_to_node_mesh_enabled.is_some(),
            ),
            ("spec.asNumber", spec.as_number.is_some()),
            ("spec.nodeMeshPassword", spec.node_mesh_password.is_some()),
            (
                "spec.nodeMeshMaxRestartTime",
                spec.node_mesh_max_restart_time.is_some(),
            ),
        ];
        if let Some((field, _)) = global_only.iter().find(|(_, set)| *set) {
            return Err(ValidationError::new(
                *field,
                "may only be set on the BGPConfiguration named \"default\"",
            ));
        }
    }
    if spec.node_to_node_mesh_enabled == Some(false)
        && (spec.node_mesh_password.is_some() || spec.node_mesh_max_restart_time.is_some())
    {
        let field = if spec.node_mesh_password.is_some() {
            "spec.nodeMeshPassword"
        } else {
            "spec.nodeMeshMaxRestartTime"
        };
        return Err(ValidationError::new(
            field,
            "requires the node-to-node mesh to be enabled",
        ));
    }
    Ok(())
}

fn validate_bgp_peer(spec: &BGPPeerSpec) -> Result {
    if let Some(node) = &spec.node {
        dns1123_subdomain(node).map_err(|r| ValidationError::new("spec.node", r))?;
        if spec.node_selector.is_some() {
            return Err(ValidationError::new(
                "spec.node",
                "must be empty when nodeSelector is specified",
            ));
        }
    }
    selector("spec.nodeSelector", &spec.node_selector)?;
    selector("spec.peerSelector", &spec.peer_selector)?;
    selector("spec.localWorkloadSelector", &spec.local_workload_selector)?;
    if let Some(p) = &spec.peer_ip {
        parse_peer_ip(p).map_err(|r| ValidationError::new("spec.peerIP", r))?;
    }
    asn("spec.asNumber", spec.as_number)?;
    asn("spec.localASNumber", spec.local_as_number)?;
    if spec.peer_selector.is_some() {
        if spec.peer_ip.is_some() {
            return Err(ValidationError::new(
                "spec.peerIP",
                "must be empty when peerSelector is specified",
            ));
        }
        if spec.as_number.is_some() {
            return Err(ValidationError::new(
                "spec.asNumber",
                "must be empty when peerSelector is specified (the remote node's AS is used)",
            ));
        }
    } else if spec.peer_ip.is_some() && spec.as_number.is_none() {
        return Err(ValidationError::new(
            "spec.asNumber",
            "a peer given by peerIP needs its AS number",
        ));
    } else if spec.peer_ip.is_none() && spec.local_workload_selector.is_none() {
        return Err(ValidationError::new(
            "spec.peerIP",
            "one of peerIP, peerSelector or localWorkloadSelector must be specified",
        ));
    }
    password("spec.password", &spec.password)?;
    one_of(
        "spec.sourceAddress",
        &spec.source_address,
        &["UseNodeIP", "None"],
    )?;
    duration("spec.maxRestartTime", &spec.max_restart_time)?;
    one_of(
        "spec.nextHopMode",
        &spec.next_hop_mode,
        &["Auto", "Self", "Keep"],
    )?;
    if spec.keep_original_next_hop == Some(true)
        && spec.next_hop_mode.as_deref().is_some_and(|m| m != "Keep")
    {
        return Err(ValidationError::new(
            "spec.nextHopMode",
            "contradicts keepOriginalNextHop: true (which means Keep)",
        ));
    }
    one_of(
        "spec.reversePeering",
        &spec.reverse_peering,
        &["Auto", "Manual"],
    )?;
    opt_ip("spec.reachableBy", &spec.reachable_by)?;
    for (i, f) in spec.filters.iter().enumerate() {
        dns1123_subdomain(f).map_err(|r| ValidationError::new(format!("spec.filters[{i}]"), r))?;
    }
    Ok(())
}

// ---- FelixConfiguration -------------------------------------------------------------------

fn proto_ports(field: &str, ports: &Option<Vec<ProtoPort>>) -> Result {
    for (i, p) in ports.iter().flatten().enumerate() {
        if !matches!(p.protocol.as_str(), "TCP" | "UDP" | "SCTP") {
            return Err(ValidationError::new(
                format!("{field}[{i}].protocol"),
                format!("{:?} is not TCP, UDP or SCTP", p.protocol),
            ));
        }
        if let Some(net) = &p.net {
            ip_or_cidr(&format!("{field}[{i}].net"), net)?;
        }
    }
    Ok(())
}

fn port_range(field: &str, value: Option<&PortOrRange>) -> Result {
    if let Some(v) = value {
        v.range().map_err(|r| ValidationError::new(field, r))?;
    }
    Ok(())
}

fn validate_felix(spec: &FelixConfigurationSpec) -> Result {
    let durations = [
        ("spec.routeRefreshInterval", &spec.route_refresh_interval),
        ("spec.reportingInterval", &spec.reporting_interval),
        (
            "spec.iptablesRefreshInterval",
            &spec.iptables_refresh_interval,
        ),
        (
            "spec.dataplaneWatchdogTimeout",
            &spec.dataplane_watchdog_timeout,
        ),
        (
            "spec.interfaceRefreshInterval",
            &spec.interface_refresh_interval,
        ),
        (
            "spec.iptablesPostWriteCheckInterval",
            &spec.iptables_post_write_check_interval,
        ),
        ("spec.iptablesLockTimeout", &spec.iptables_lock_timeout),
        (
            "spec.iptablesLockProbeInterval",
            &spec.iptables_lock_probe_interval,
        ),
        (
            "spec.nftablesRefreshInterval",
            &spec.nftables_refresh_interval,
        ),
        ("spec.ipsetsRefreshInterval", &spec.ipsets_refresh_interval),
        ("spec.xdpRefreshInterval", &spec.xdp_refresh_interval),
        ("spec.netlinkTimeout", &spec.netlink_timeout),
        ("spec.reportingTTL", &spec.reporting_ttl),
        (
            "spec.endpointReportingDelay",
            &spec.endpoint_reporting_delay,
        ),
        (
            "spec.usageReportingInitialDelay",
            &spec.usage_reporting_initial_delay,
        ),
        (
            "spec.usageReportingInterval",
            &spec.usage_reporting_interval,
        ),
        (
            "spec.bpfKubeProxyMinSyncPeriod",
            &spec.bpf_kube_proxy_min_sync_period,
        ),
        ("spec.wireguardKeepAlive", &spec.wireguard_keep_alive),
        ("spec.flowLogsFlushInterval", &spec.flow_logs_flush_interval),
        (
            "spec.debugSimulateCalcGraphHangAfter",
            &spec.debug_simulate_calc_graph_hang_after,
        ),
        (
            "spec.debugSimulateDataplaneHangAfter",
            &spec.debug_simulate_dataplane_hang_after,
        ),
        (
            "spec.debugSimulateDataplaneApplyDelay",
            &spec.debug_simulate_dataplane_apply_delay,
        ),
    ];
    for (field, value) in durations {
        duration(field, value)?;
    }
    if let Some(t) = &spec.bpf_conntrack_timeouts {
        for (name, value) in [
            ("creationGracePeriod", &t.creation_grace_period),
            ("tcpSynSent", &t.tcp_syn_sent),
            ("tcpEstablished", &t.tcp_established),
            ("tcpFinsSeen", &t.tcp_fins_seen),
            ("tcpResetSeen", &t.tcp_reset_seen),
            ("udpTimeout", &t.udp_timeout),
            ("genericTimeout", &t.generic_timeout),
            ("icmpTimeout", &t.icmp_timeout),
        ] {
            if value.as_deref() != Some("Auto") {
                duration(&format!("spec.bpfConntrackTimeouts.{name}"), value)?;
            }
        }
    }
    for (i, o) in spec.health_timeout_overrides.iter().flatten().enumerate() {
        parse_duration(&o.timeout).map_err(|e| {
            ValidationError::new(
                format!("spec.healthTimeoutOverrides[{i}].timeout"),
                e.to_string(),
            )
        })?;
    }
    let levels = ["Trace", "Debug", "Info", "Warning", "Error", "Fatal"];
    let levels_or_none = [
        "Trace", "Debug", "Info", "Warning", "Error", "Fatal", "None",
    ];
    one_of_ignore_case("spec.logSeverityScreen", &spec.log_severity_screen, &levels)?;
    one_of_ignore_case(
        "spec.logSeverityFile",
        &spec.log_severity_file,
        &levels_or_none,
    )?;
    one_of_ignore_case(
        "spec.logSeveritySys",
        &spec.log_severity_sys,
        &levels_or_none,
    )?;
    // VXLAN (RFC 7348 §5): the VNI is a 24-bit field.
    if let Some(vni) = spec.vxlan_vni
        && !(1..=0xff_ffff).contains(&vni)
    {
        return Err(ValidationError::new(
            "spec.vxlanVNI",
            format!("{vni} is not in 1..16777215"),
        ));
    }
    if spec.vxlan_port == Some(0) {
        return Err(ValidationError::new(
            "spec.vxlanPort",
            "must be in 1..65535",
        ));
    }
    // Linux route protocol numbers are one byte (`rtm_protocol`).
    if let Some(p) = spec.device_route_protocol
        && p > 255
    {
        return Err(ValidationError::new(
            "spec.deviceRouteProtocol",
            format!("{p} is not a route protocol number (0..255)"),
        ));
    }
    opt_ip("spec.natOutgoingAddress", &spec.nat_outgoing_address)?;
    ipv4(
        "spec.deviceRouteSourceAddress",
        &spec.device_route_source_address,
    )?;
    ipv6(
        "spec.deviceRouteSourceAddressIPv6",
        &spec.device_route_source_address_ipv6,
    )?;
    if let Some(prefix) = &spec.interface_prefix {
        // Calico: a comma-separated list of prefixes of interface-name characters.
        let ok = prefix.split(',').all(|p| {
            !p.is_empty()
                && p.len() <= IFNAME_MAX
                && p.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
        });
        if !ok {
            return Err(ValidationError::new(
                "spec.interfacePrefix",
                format!("{prefix:?} is not a comma-separated list of interface name prefixes"),
            ));
        }
    }
    one_of(
        "spec.iptablesBackend",
        &spec.iptables_backend,
        &["Legacy", "NFT", "Auto"],
    )?;
    one_of(
        "spec.nftablesMode",
        &spec.nftables_mode,
        &["Enabled", "Disabled", "Auto"],
    )?;
    one_of(
        "spec.chainInsertMode",
        &spec.chain_insert_mode,
        &["Insert", "Append"],
    )?;
    one_of(
        "spec.defaultEndpointToHostAction",
        &spec.default_endpoint_to_host_action,
        &["Drop", "Return", "Accept"],
    )?;
    for (field, value) in [
        (
            "spec.iptablesFilterAllowAction",
            &spec.iptables_filter_allow_action,
        ),
        (
            "spec.iptablesMangleAllowAction",
            &spec.iptables_mangle_allow_action,
        ),
        (
            "spec.nftablesFilterAllowAction",
            &spec.nftables_filter_allow_action,
        ),
        (
            "spec.nftablesMangleAllowAction",
            &spec.nftables_mangle_allow_action,
        ),
    ] {
        one_of(field, value, &["Accept", "Return"])?;
    }
    for (field, value) in [
        (
            "spec.iptablesFilterDenyAction",
            &spec.iptables_filter_deny_action,
        ),
        (
            "spec.nftablesFilterDenyAction",
            &spec.nftables_filter_deny_action,
        ),
    ] {
        one_of(field, value, &["Drop", "Reject"])?;
    }
    one_of(
        "spec.routeSource",
        &spec.route_source,
        &["CalicoIPAM", "WorkloadIPs"],
    )?;
    one_of(
        "spec.serviceLoopPrevention",
        &spec.service_loop_prevention,
        &["Drop", "Reject", "Disabled"],
    )?;
    one_of(
        "spec.natOutgoingExclusions",
        &spec.nat_outgoing_exclusions,
        &["IPPoolsOnly", "IPPoolsAndHostIPs"],
    )?;
    one_of(
        "spec.programClusterRoutes",
        &spec.program_cluster_routes,
        &["Enabled", "Disabled"],
    )?;
    one_of(
        "spec.ipForwarding",
        &spec.ip_forwarding,
        &["Enabled", "Disabled"],
    )?;
    proto_ports(
        "spec.failsafeInboundHostPorts",
        &spec.failsafe_inbound_host_ports,
    )?;
    proto_ports(
        "spec.failsafeOutboundHostPorts",
        &spec.failsafe_outbound_host_ports,
    )?;
    for (i, r) in spec.kube_node_port_ranges.iter().flatten().enumerate() {
        port_range(&format!("spec.kubeNodePortRanges[{i}]"), Some(r))?;
    }
    port_range("spec.natPortRange", spec.nat_port_range.as_ref())?;
    port_range("spec.bpfPSNATPorts", spec.bpf_psnat_ports.as_ref())?;
    let ranges = spec
        .route_table_range
        .iter()
        .map(|r| ("spec.routeTableRange".to_string(), r));
    let more = spec
        .route_table_ranges
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| (format!("spec.routeTableRanges[{i}]"), r));
    for (field, r) in ranges.chain(more) {
        // Linux reserves tables 0 (unspec) and 253..255 (default, main, local) but Calico only
        // requires a non-empty range that starts above 0.
        if r.min == 0 || r.min > r.max {
            return Err(ValidationError::new(
                field,
                format!(
                    "{}..{} is not a range of table indices starting at 1 or more",
                    r.min, r.max
                ),
            ));
        }
    }
    Ok(())
}

// ---- WorkloadEndpoint ---------------------------------------------------------------------

fn validate_workload(spec: &WorkloadEndpointSpec) -> Result {
    if let Some(node) = &spec.node {
        dns1123_subdomain(node).map_err(|r| ValidationError::new("spec.node", r))?;
    }
    for (i, n) in spec.ip_networks.iter().enumerate() {
        cidr(&format!("spec.ipNetworks[{i}]"), n)?;
    }
    for (field, value, v4) in [
        ("spec.ipv4Gateway", &spec.ipv4_gateway, true),
        ("spec.ipv6Gateway", &spec.ipv6_gateway, false),
    ] {
        if let Some(v) = value {
            let addr = ip(field, v)?;
            if addr.is_ipv4() != v4 {
                return Err(ValidationError::new(
                    field,
                    format!("{v:?} is not an IPv{} address", if v4 { 4 } else { 6 }),
                ));
            }
        }
    }
    mac("spec.mac", &spec.mac)?;
    if let Some(name) = &spec.interface_name
        && (name.is_empty() || name.len() > IFNAME_MAX || name.contains(['/', ' ']))
    {
        return Err(ValidationError::new(
            "spec.interfaceName",
            format!("{name:?} is not a Linux interface name (1 to 15 bytes, no '/' or space)"),
        ));
    }
    Ok(())
}

// ---- IPAM objects -------------------------------------------------------------------------

fn block_cidr(field: &str, value: Option<IpNet>) -> Result<IpNet> {
    let net = value.ok_or_else(|| ValidationError::new(field, "required"))?;
    masked(field, &net)?;
    Ok(net)
}

/// Calico: a block is named after its CIDR (`198-18-0-64-26`), every ordinal has an entry in
/// `allocations`, and allocation indices point into `attributes`.
fn validate_block(name: &str, spec: &IPAMBlockSpec) -> Result {
    let net = block_cidr("spec.cidr", spec.cidr)?;
    let want = block_name(&net);
    if name != want {
        return Err(ValidationError::new(
            "metadata.name",
            format!("{name:?} must be {want:?}, the name Calico forms from the block CIDR"),
        ));
    }
    if let Some(a) = &spec.affinity {
        let owner = a
            .strip_prefix("host:")
            .or_else(|| a.strip_prefix("virtual:"));
        if owner.is_none_or(str::is_empty) {
            return Err(ValidationError::new(
                "spec.affinity",
                format!("{a:?} must be host:<node name> (or virtual:<name>)"),
            ));
        }
    }
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    let size = 1usize.checked_shl(host_bits).unwrap_or(usize::MAX);
    if !spec.allocations.is_empty() && spec.allocations.len() != size {
        return Err(ValidationError::new(
            "spec.allocations",
            format!(
                "has {} entries; a /{} block has {size}",
                spec.allocations.len(),
                net.prefix_len()
            ),
        ));
    }
    for (i, a) in spec.allocations.iter().enumerate() {
        if let Some(idx) = a
            && *idx >= spec.attributes.len()
        {
            return Err(ValidationError::new(
                format!("spec.allocations[{i}]"),
                format!(
                    "attribute index {idx} is past the {} attributes",
                    spec.attributes.len()
                ),
            ));
        }
    }
    for (i, ord) in spec.unallocated.iter().enumerate() {
        if *ord >= size {
            return Err(ValidationError::new(
                format!("spec.unallocated[{i}]"),
                format!("ordinal {ord} is outside a block of {size} addresses"),
            ));
        }
    }
    Ok(())
}

/// Calico: an affinity is named `<node>-<block name>`.
fn validate_affinity(name: &str, spec: &BlockAffinitySpec) -> Result {
    let net = block_cidr("spec.cidr", spec.cidr)?;
    dns1123_subdomain(&spec.node).map_err(|r| ValidationError::new("spec.node", r))?;
    let want = affinity_name(&spec.node, &net);
    if name != want {
        return Err(ValidationError::new(
            "metadata.name",
            format!("{name:?} must be {want:?}, the name Calico forms from node and block"),
        ));
    }
    Ok(())
}

/// A handle is named by its handle ID, lower-cased so it is a valid object name.
fn validate_handle(name: &str, spec: &IPAMHandleSpec) -> Result {
    if spec.handle_id.is_empty() {
        return Err(ValidationError::new("spec.handleID", "must not be empty"));
    }
    let want = spec.handle_id.to_ascii_lowercase();
    if name != want {
        return Err(ValidationError::new(
            "metadata.name",
            format!("{name:?} must be {want:?}, the handle ID in lower case"),
        ));
    }
    for (block, count) in &spec.block {
        let net: IpNet = block.parse().map_err(|_| {
            ValidationError::new("spec.block", format!("key {block:?} is not a block CIDR"))
        })?;
        masked("spec.block", &net)?;
        if *count == 0 {
            return Err(ValidationError::new(
                "spec.block",
                format!("block {block} is listed with 0 addresses"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Object;

    fn pool(name: &str, cidr: &str) -> IPPool {
        Object::new(
            name,
            IPPoolSpec {
                cidr: Some(cidr.parse().unwrap()),
                ..Default::default()
            },
        )
    }

    #[test]
    fn display_is_field_then_reason() {
        let e = ValidationError::new("spec.blockSize", "33 is outside 20..32 for IPv4");
        assert_eq!(
            e.to_string(),
            "spec.blockSize: 33 is outside 20..32 for IPv4"
        );
    }

    #[test]
    fn block_size_message() {
        let mut p = pool("p", "198.18.0.0/16");
        p.spec.block_size = Some(33);
        let e = Resource::IPPool(p).validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.blockSize: 33 is outside 20..32 for IPv4"
        );
    }

    #[test]
    fn overlapping_pools() {
        let pools = [
            pool("a", "198.18.0.0/16"),
            pool("b", "198.19.0.0/16"),
            pool("c", "198.18.4.0/24"),
        ];
        let e = validate_pools(&pools).unwrap_err();
        assert_eq!(e.field, "spec.cidr");
        assert!(
            e.reason.contains("IPPool c") && e.reason.contains("IPPool a"),
            "{e}"
        );
        assert_eq!(validate_pools(&pools[..2]), Ok(()));
    }

    #[test]
    fn names() {
        for ok in ["a", "pool-1", "a.b.c", "0"] {
            assert_eq!(dns1123_subdomain(ok), Ok(()), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a..b", "a_b", ".a", &"a".repeat(254)] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad}");
        }
        assert!(per_node_name("node.n1").is_ok());
        assert!(per_node_name("default").is_ok());
        assert!(per_node_name("node.").is_err());
        assert!(per_node_name("global").is_err());
    }

    #[test]
    fn peer_ips() {
        assert_eq!(
            parse_peer_ip("192.0.2.1"),
            Ok(("192.0.2.1".parse().unwrap(), None))
        );
        assert_eq!(
            parse_peer_ip("192.0.2.1:1179"),
            Ok(("192.0.2.1".parse().unwrap(), Some(1179)))
        );
        assert_eq!(
            parse_peer_ip("2001:db8::1"),
            Ok(("2001:db8::1".parse().unwrap(), None))
        );
        assert_eq!(
            parse_peer_ip("[2001:db8::1]:179"),
            Ok(("2001:db8::1".parse().unwrap(), Some(179)))
        );
        for bad in [
            "192.0.2.300",
            "192.0.2.1:0",
            "192.0.2.1:70000",
            "[192.0.2.1]:179",
            "host:179",
            "[2001:db8::1]",
        ] {
            assert!(parse_peer_ip(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("ee:ee:ee:ee:ee:ee"), Ok([0xee; 6]));
        assert_eq!(
            parse_mac("66-cf-23-df-22-07"),
            Ok([0x66, 0xcf, 0x23, 0xdf, 0x22, 0x07])
        );
        for bad in [
            "ee:ee:ee:ee:ee",
            "ee:ee:ee:ee:ee:ee:ee",
            "eee:ee:ee:ee:ee:e",
            "gg:ee:ee:ee:ee:ee",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn communities_values() {
        assert!(community_value("65001:100"));
        assert!(community_value("4200000000:1:2"));
        assert!(!community_value("70000:1"));
        assert!(!community_value("1"));
        assert!(!community_value("a:b"));
    }
}
