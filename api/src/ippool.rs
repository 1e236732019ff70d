//! IPPool: a range pods (and tunnel addresses) get their addresses from, and how traffic to it is
//! encapsulated.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{Kind, Object, Spec};

pub type IPPool = Object<IPPoolSpec>;

/// Calico: IPv4 blocks are /26 unless the pool says otherwise.
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
/// Calico: IPv6 blocks are /122 unless the pool says otherwise.
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPPoolSpec {
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>", extend("format" = "cidr")))]
    pub cidr: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<EncapMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<EncapMode>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nat_outgoing: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    #[serde(
        rename = "disableBGPExport",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_bgp_export: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// Calico: pods get addresses from this pool only if their namespace matches too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_uses: Option<Vec<AllowedUse>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
}

impl Spec for IPPoolSpec {
    const KIND: Kind = Kind::IPPool;
}

impl IPPoolSpec {
    /// The block size, defaulted per address family as Calico does.
    pub fn block_size(&self) -> u8 {
        match (self.block_size, self.cidr) {
            (Some(b), _) => b,
            (None, Some(IpNet::V6(_))) => DEFAULT_BLOCK_SIZE_V6,
            _ => DEFAULT_BLOCK_SIZE_V4,
        }
    }

    pub fn ipip_mode(&self) -> EncapMode {
        self.ipip_mode.unwrap_or_default()
    }

    pub fn vxlan_mode(&self) -> EncapMode {
        self.vxlan_mode.unwrap_or_default()
    }

    /// Calico: an empty nodeSelector means every node.
    pub fn node_selector(&self) -> &str {
        match self.node_selector.as_deref() {
            Some(s) if !s.trim().is_empty() => s,
            _ => "all()",
        }
    }

    /// Calico: a pool with no allowedUses serves workloads and tunnel addresses.
    pub fn allows(&self, use_: AllowedUse) -> bool {
        match &self.allowed_uses {
            Some(uses) if !uses.is_empty() => uses.contains(&use_),
            _ => matches!(use_, AllowedUse::Workload | AllowedUse::Tunnel),
        }
    }
}

/// ipipMode / vxlanMode. Calico: an empty value means Never.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum EncapMode {
    #[default]
    Never,
    Always,
    CrossSubnet,
}

impl EncapMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EncapMode::Never => "Never",
            EncapMode::Always => "Always",
            EncapMode::CrossSubnet => "CrossSubnet",
        }
    }

    pub fn enabled(self) -> bool {
        self != EncapMode::Never
    }
}

/// What addresses from a pool may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum AllowedUse {
    Workload,
    Tunnel,
    LoadBalancer,
}

/// Whether IPAM hands out addresses from a pool without being asked for it by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum AssignmentMode {
    #[default]
    Automatic,
    Manual,
}
