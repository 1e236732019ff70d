//! Block IPAM: pools → blocks → addresses, with per-node block affinity, as Calico does it.
//!
//! Pure cores, each with its tests beside it:
//!
//! - [`block`]: one block's maths (assign, release, ordinals ↔ addresses, attributes);
//! - [`candidates`]: the order in which a node tries a pool's blocks;
//! - [`pools`]: which pools a request may use;
//! - [`affinity`]: the Pending → Confirmed → PendingDeletion state machine;
//! - [`check`]: the consistency analysis behind `tabbyctl ipam check`;
//! - [`usage`]: the summary behind `tabbyctl ipam show`.
//!
//! [`Ipam`] is the thin async layer that drives them over a [`datastore::Datastore`], every
//! write a bounded compare-and-swap loop.

pub mod affinity;
pub mod block;
pub mod candidates;
pub mod check;
mod error;
pub mod family;
mod ipam;
pub mod pools;
pub mod usage;

pub use check::{CheckReport, Snapshot};
pub use error::IpamError;
pub use family::Family;
pub use ipam::{
    ATTR_NODE, Assigned, AutoAssignRequest, DEFAULT_MAX_RETRIES, IPAM_CONFIG_NAME, Ipam,
    RepairSummary, ipip_tunnel_handle, pod_handle, vxlan_tunnel_handle,
};
pub use usage::{BlockUsage, PoolUsage, Usage};
