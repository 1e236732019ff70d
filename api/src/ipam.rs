//! The IPAM objects: IPAMConfig, IPAMBlock, BlockAffinity, IPAMHandle. Their shapes follow
//! Calico's, so a datastore written by one can be read by the other.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{Kind, Object, Spec};

pub type IPAMConfig = Object<IPAMConfigSpec>;
pub type IPAMBlock = Object<IPAMBlockSpec>;
pub type BlockAffinity = Object<BlockAffinitySpec>;
pub type IPAMHandle = Object<IPAMHandleSpec>;

/// Calico: a node may hold at most this many blocks unless IPAMConfig says otherwise.
pub const DEFAULT_MAX_BLOCKS_PER_HOST: u32 = 20;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAMConfigSpec {
    #[serde(default)]
    pub strict_affinity: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_allocate_blocks: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_blocks_per_host: Option<u32>,
}

impl Spec for IPAMConfigSpec {
    const KIND: Kind = Kind::IPAMConfig;
}

impl IPAMConfigSpec {
    pub fn max_blocks_per_host(&self) -> u32 {
        match self.max_blocks_per_host {
            Some(0) | None => DEFAULT_MAX_BLOCKS_PER_HOST,
            Some(n) => n,
        }
    }

    pub fn auto_allocate_blocks(&self) -> bool {
        self.auto_allocate_blocks.unwrap_or(true)
    }
}

/// One block of a pool. `allocations[i]` is the index into `attributes` of the allocation that
/// holds ordinal `i`, or null when free; `unallocated` is the queue of free ordinals (freed ones
/// go to its back).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAMBlockSpec {
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>", extend("format" = "cidr")))]
    pub cidr: Option<IpNet>,
    /// `host:<node>` while the block is affine to a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_claim_time: Option<String>,
    #[serde(default)]
    pub strict_affinity: bool,
    #[serde(default)]
    pub allocations: Vec<Option<usize>>,
    #[serde(default)]
    pub unallocated: Vec<usize>,
    #[serde(default)]
    pub attributes: Vec<AllocationAttribute>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    /// Calico's per-ordinal sequence numbers (libcalico-go `IPAMBlockSpec`): kept as written so
    /// that blocks Calico wrote read back unchanged; tabby's allocator does not use them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
}

impl Spec for IPAMBlockSpec {
    const KIND: Kind = Kind::IPAMBlock;
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AllocationAttribute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secondary: BTreeMap<String, String>,
    /// Calico's: attributes of an address's other owner during a handover, and when it was
    /// released. Kept as written, not interpreted.
    #[serde(
        rename = "alternateOwnerAttrs",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub alternate_owner_attrs: BTreeMap<String, String>,
    #[serde(
        rename = "releasedAt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub released_at: Option<String>,
}

/// A node's claim on a block. The claim is made in two steps (pending, then confirmed once the
/// block exists) so that a crash between them is recognisable and repairable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockAffinitySpec {
    pub state: AffinityState,
    pub node: String,
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>", extend("format" = "cidr")))]
    pub cidr: Option<IpNet>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

impl Spec for BlockAffinitySpec {
    const KIND: Kind = Kind::BlockAffinity;
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    #[default]
    Pending,
    Confirmed,
    PendingDeletion,
}

/// Which blocks hold addresses for one handle, and how many in each (keyed by block CIDR).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAMHandleSpec {
    #[serde(rename = "handleID")]
    pub handle_id: String,
    #[serde(default)]
    pub block: BTreeMap<String, u32>,
    #[serde(default)]
    pub deleted: bool,
}

impl Spec for IPAMHandleSpec {
    const KIND: Kind = Kind::IPAMHandle;
}

/// Calico's object name for a block: the CIDR with `.`, `:` and `/` turned into `-`
/// (`198.18.0.64/26` → `198-18-0-64-26`).
pub fn block_name(cidr: &IpNet) -> String {
    cidr.to_string().replace(['.', ':', '/'], "-")
}

/// Calico's object name for a node's affinity to a block: `<node>-<block name>`.
pub fn affinity_name(node: &str, cidr: &IpNet) -> String {
    format!("{node}-{}", block_name(cidr))
}
