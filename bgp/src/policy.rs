//! Import and export policy, pure: which prefixes tabby accepts from a peer and which it
//! announces to one, and the per-peer max-prefix check.
//!
//! These rules keep a pod network from hurting the underlay it runs on. A mesh or route
//! reflector peer may only hand us pod routes (prefixes inside the IP pools); nothing it says
//! may replace the host's default route or the route to a node's own address. Peers outside
//! the cluster (eBGP, top-of-rack routers) only hear this node's own blocks and the service
//! ranges it is told to advertise, never routes learned from other nodes.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

/// Why an imported prefix was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportReject {
    /// 0.0.0.0/0 or ::/0: the host owns its default route.
    DefaultRoute,
    /// Not inside any IP pool, from a peer without `import_all`.
    OutsidePools,
    /// The prefix contains this node or peer address: accepting it could route the underlay
    /// traffic that carries the BGP session itself into the pod network.
    CoversProtectedAddress(IpAddr),
}

impl std::fmt::Display for ImportReject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportReject::DefaultRoute => f.write_str("default route"),
            ImportReject::OutsidePools => f.write_str("outside all IP pools"),
            ImportReject::CoversProtectedAddress(a) => write!(f, "covers node address {a}"),
        }
    }
}

/// The import rules for one speaker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportPolicy {
    /// The IP pools (Calico IPPool CIDRs): pod routes must fall inside one of them.
    pub pools: Vec<IpNet>,
    /// Underlay addresses no imported prefix may contain: this node's and its peers'. Not
    /// tunnel addresses: those live inside other nodes' blocks, which must be imported.
    pub protected: Vec<IpAddr>,
}

impl ImportPolicy {
    /// Whether to accept `prefix` from a peer. `import_all` (per peer) lifts only the pool
    /// restriction: default routes and prefixes covering a protected address are refused from
    /// every peer.
    pub fn check(&self, prefix: &IpNet, import_all: bool) -> Result<(), ImportReject> {
        if prefix.prefix_len() == 0 {
            return Err(ImportReject::DefaultRoute);
        }
        if let Some(a) = self.protected.iter().find(|a| prefix.contains(*a)) {
            return Err(ImportReject::CoversProtectedAddress(*a));
        }
        if !import_all && !self.pools.iter().any(|pool| pool.contains(prefix)) {
            return Err(ImportReject::OutsidePools);
        }
        Ok(())
    }
}

/// Who a route is being exported to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Node-to-node mesh peers and route reflector peers or clients: the cluster's own
    /// routing, which route reflection (RFC 4456) and the mesh rules govern.
    Cluster,
    /// Anything else: eBGP peers, top-of-rack routers, explicit non-mesh peers.
    External,
}

/// The export rules for one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportPolicy {
    /// This node's affine IPAM blocks, announced exactly as they are.
    pub node_blocks: Vec<IpNet>,
    /// Service ranges this node advertises (Calico BGPConfiguration serviceClusterIPs,
    /// serviceExternalIPs, serviceLoadBalancerIPs); a prefix inside one of them may be
    /// announced.
    pub service_ranges: Vec<IpNet>,
}

impl ExportPolicy {
    /// Whether `prefix` may be announced to a peer of this kind.
    pub fn allows(&self, prefix: &IpNet, to: PeerKind) -> bool {
        match to {
            PeerKind::Cluster => true,
            PeerKind::External => {
                self.node_blocks.contains(prefix)
                    || self.service_ranges.iter().any(|r| r.contains(prefix))
            }
        }
    }
}

/// What to do when a peer sends more prefixes than allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaxPrefixAction {
    /// Close the session with Cease 6/1 (RFC 4486), via `Input::AutomaticStop`.
    #[default]
    Stop,
    /// Log and keep the session.
    Warn,
}

/// Outcome of [`check_max_prefix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxPrefixVerdict {
    /// Within the limit, or no limit.
    Ok,
    /// Over the limit; warn (once per crossing is the caller's business).
    Warn { count: usize, limit: u32 },
    /// Over the limit; stop the session with Cease 6/1.
    Stop { count: usize, limit: u32 },
}

/// Checks a peer's accepted-prefix count against its limit. Reaching the limit is fine;
/// exceeding it is not (RFC 4486 §4: "the upper bound ... exceeded").
pub fn check_max_prefix(
    count: usize,
    limit: Option<u32>,
    action: MaxPrefixAction,
) -> MaxPrefixVerdict {
    match limit {
        Some(limit) if count > limit as usize => match action {
            MaxPrefixAction::Stop => MaxPrefixVerdict::Stop { count, limit },
            MaxPrefixAction::Warn => MaxPrefixVerdict::Warn { count, limit },
        },
        _ => MaxPrefixVerdict::Ok,
    }
}

/// RFC 4486 §4: the data of a Cease 6/1 NOTIFICATION: AFI (2 octets), SAFI (1 octet) and the
/// prefix upper bound (4 octets).
pub fn max_prefix_cease_data(afi: u16, safi: u8, limit: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(7);
    data.extend_from_slice(&afi.to_be_bytes());
    data.push(safi);
    data.extend_from_slice(&limit.to_be_bytes());
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn import_policy() -> ImportPolicy {
        ImportPolicy {
            pools: vec![net("198.18.0.0/15"), net("2001:db8:1::/48")],
            protected: vec![
                "192.0.2.1".parse().unwrap(),
                "192.0.2.2".parse().unwrap(),
                "2001:db8:ffff::1".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn import_table() {
        use ImportReject::*;
        let covers = |a: &str| Err(CoversProtectedAddress(a.parse().unwrap()));
        let cases: &[(&str, bool, Result<(), ImportReject>)] = &[
            ("198.18.4.0/26", false, Ok(())),
            ("198.19.255.192/26", false, Ok(())),
            ("198.18.0.0/15", false, Ok(())),
            ("198.18.4.7/32", false, Ok(())),
            ("2001:db8:1:2::/122", false, Ok(())),
            ("198.16.0.0/14", false, Err(OutsidePools)),
            ("203.0.113.0/24", false, Err(OutsidePools)),
            ("2001:db8:2::/64", false, Err(OutsidePools)),
            ("203.0.113.0/24", true, Ok(())),
            ("0.0.0.0/0", false, Err(DefaultRoute)),
            ("0.0.0.0/0", true, Err(DefaultRoute)),
            ("::/0", true, Err(DefaultRoute)),
            ("192.0.2.0/24", true, covers("192.0.2.1")),
            ("192.0.2.2/32", true, covers("192.0.2.2")),
            ("2001:db8:ffff::/64", true, covers("2001:db8:ffff::1")),
            ("192.0.2.128/25", true, Ok(())),
        ];
        let policy = import_policy();
        for (prefix, import_all, want) in cases {
            assert_eq!(
                policy.check(&net(prefix), *import_all),
                *want,
                "{prefix} import_all={import_all}"
            );
        }
    }

    #[test]
    fn import_without_pools_accepts_nothing_from_mesh_peers() {
        let policy = ImportPolicy::default();
        assert_eq!(
            policy.check(&net("198.18.4.0/26"), false),
            Err(ImportReject::OutsidePools)
        );
    }

    #[test]
    fn export_table() {
        let policy = ExportPolicy {
            node_blocks: vec![net("198.18.4.0/26"), net("2001:db8:1::/122")],
            service_ranges: vec![net("203.0.113.0/24")],
        };
        let cases = [
            ("198.18.4.0/26", PeerKind::External, true),
            ("2001:db8:1::/122", PeerKind::External, true),
            ("203.0.113.0/24", PeerKind::External, true),
            ("203.0.113.10/32", PeerKind::External, true),
            // Another node's block, learned over the mesh: not ours to announce outside.
            ("198.18.4.64/26", PeerKind::External, false),
            // Aggregates and parts of our blocks are not our blocks.
            ("198.18.0.0/15", PeerKind::External, false),
            ("198.18.4.0/27", PeerKind::External, false),
            ("203.0.112.0/23", PeerKind::External, false),
            ("198.18.4.64/26", PeerKind::Cluster, true),
            ("198.18.4.0/26", PeerKind::Cluster, true),
        ];
        for (prefix, to, want) in cases {
            assert_eq!(policy.allows(&net(prefix), to), want, "{prefix} to {to:?}");
        }
    }

    #[test]
    fn max_prefix_table() {
        use MaxPrefixAction::*;
        use MaxPrefixVerdict as V;
        let cases = [
            (5, None, Stop, V::Ok),
            (10, Some(10), Stop, V::Ok),
            (
                11,
                Some(10),
                Stop,
                V::Stop {
                    count: 11,
                    limit: 10,
                },
            ),
            (
                11,
                Some(10),
                Warn,
                V::Warn {
                    count: 11,
                    limit: 10,
                },
            ),
            (0, Some(0), Stop, V::Ok),
            (1, Some(0), Warn, V::Warn { count: 1, limit: 0 }),
        ];
        for (count, limit, action, want) in cases {
            assert_eq!(
                check_max_prefix(count, limit, action),
                want,
                "{count} {limit:?} {action:?}"
            );
        }
    }

    #[test]
    fn max_prefix_cease_data_is_afi_safi_limit() {
        assert_eq!(
            max_prefix_cease_data(1, 1, 10000),
            vec![0, 1, 1, 0, 0, 0x27, 0x10]
        );
    }
}
