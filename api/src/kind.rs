//! The kinds of resource tabby knows, with the names operators type for them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Every resource kind, named as in Calico's `projectcalico.org/v3` API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    IPPool,
    Node,
    BGPConfiguration,
    BGPPeer,
    FelixConfiguration,
    IPAMConfig,
    ClusterInformation,
    WorkloadEndpoint,
    IPAMBlock,
    BlockAffinity,
    IPAMHandle,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::IPPool,
        Kind::Node,
        Kind::BGPConfiguration,
        Kind::BGPPeer,
        Kind::FelixConfiguration,
        Kind::IPAMConfig,
        Kind::ClusterInformation,
        Kind::WorkloadEndpoint,
        Kind::IPAMBlock,
        Kind::BlockAffinity,
        Kind::IPAMHandle,
    ];

    /// The `kind:` value in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::IPPool => "IPPool",
            Kind::Node => "Node",
            Kind::BGPConfiguration => "BGPConfiguration",
            Kind::BGPPeer => "BGPPeer",
            Kind::FelixConfiguration => "FelixConfiguration",
            Kind::IPAMConfig => "IPAMConfig",
            Kind::ClusterInformation => "ClusterInformation",
            Kind::WorkloadEndpoint => "WorkloadEndpoint",
            Kind::IPAMBlock => "IPAMBlock",
            Kind::BlockAffinity => "BlockAffinity",
            Kind::IPAMHandle => "IPAMHandle",
        }
    }

    /// Lower-case plural, as used in CRD names and directory names (`ippools`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::IPPool => "ippools",
            Kind::Node => "nodes",
            Kind::BGPConfiguration => "bgpconfigurations",
            Kind::BGPPeer => "bgppeers",
            Kind::FelixConfiguration => "felixconfigurations",
            Kind::IPAMConfig => "ipamconfigs",
            Kind::ClusterInformation => "clusterinformations",
            Kind::WorkloadEndpoint => "workloadendpoints",
            Kind::IPAMBlock => "ipamblocks",
            Kind::BlockAffinity => "blockaffinities",
            Kind::IPAMHandle => "ipamhandles",
        }
    }

    /// Names accepted on the command line, as calicoctl accepts them: singular, plural, short.
    pub fn cli_names(self) -> &'static [&'static str] {
        match self {
            Kind::IPPool => &["ippool", "ippools", "ipp", "ipps", "pool", "pools"],
            Kind::Node => &["node", "nodes", "no", "nos"],
            Kind::BGPConfiguration => &[
                "bgpconfiguration",
                "bgpconfigurations",
                "bgpconfig",
                "bgpconfigs",
            ],
            Kind::BGPPeer => &["bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"],
            Kind::FelixConfiguration => &[
                "felixconfiguration",
                "felixconfigurations",
                "felixconfig",
                "felixconfigs",
            ],
            Kind::IPAMConfig => &[
                "ipamconfig",
                "ipamconfigs",
                "ipamconfiguration",
                "ipamconfigurations",
            ],
            Kind::ClusterInformation => &[
                "clusterinformation",
                "clusterinformations",
                "clusterinfo",
                "clusterinfos",
            ],
            Kind::WorkloadEndpoint => &["workloadendpoint", "workloadendpoints", "wep", "weps"],
            Kind::IPAMBlock => &["ipamblock", "ipamblocks"],
            Kind::BlockAffinity => &["blockaffinity", "blockaffinities", "affinity", "affinities"],
            Kind::IPAMHandle => &["ipamhandle", "ipamhandles"],
        }
    }

    /// Look a kind up by its YAML name (`IPPool`) or any of its command-line names, ignoring case.
    pub fn from_any_name(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|k| {
            k.as_str().eq_ignore_ascii_case(name) || k.cli_names().contains(&lower.as_str())
        })
    }

    /// Whether resources of this kind live in a Kubernetes namespace (only WorkloadEndpoint).
    pub fn namespaced(self) -> bool {
        matches!(self, Kind::WorkloadEndpoint)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::from_any_name(s).ok_or_else(|| format!("unknown resource kind {s:?}"))
    }
}

/// Where one resource lives: its kind, its namespace (WorkloadEndpoint only) and its name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
}

impl Key {
    /// A key for a cluster-scoped resource.
    pub fn new(kind: Kind, name: impl Into<String>) -> Key {
        Key {
            kind,
            namespace: None,
            name: name.into(),
        }
    }

    /// A key for a namespaced resource.
    pub fn namespaced(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Key {
        Key {
            kind,
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}
