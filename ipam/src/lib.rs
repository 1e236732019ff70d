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
//!
//! # Where Calico's behaviour was unclear, what tabby does
//!
//! - **Borrowing** happens only without strictAffinity, and only when the node cannot claim a
//!   block: the chosen pools have no unclaimed block left, or the node already holds
//!   maxBlocksPerHost blocks (Calico's `autoAssign` falls through to borrowing in both cases).
//!   Borrowed-from blocks are tried in address order, not shuffled.
//! - **Candidate order**: Calico seeds Go's `math/rand` with FNV-1 of the node name and walks
//!   the pool from a random block; tabby keeps the seed and the walk, and draws the start with
//!   SplitMix64, so the first block differs from Calico's for the same node.
//! - **maxBlocksPerHost** counts the node's affinities of the request's address family across
//!   all pools.
//! - **Explicitly named pools** must still be enabled, allow the use and select the node (an
//!   error says which rule failed); Manual pools are used only when named.
//! - **A node without a Node resource** has no labels: only pools selecting every node serve it.
//! - **`assign_ip`** needs a pool containing the address but, like Calico's `AssignIP`, accepts a
//!   disabled pool and ignores maxBlocksPerHost; a missing block is claimed by the node.
//! - **Handles** are stored under their ID as the object name; `release_by_handle` deletes the
//!   handle object after releasing what the blocks hold, even if its counts disagreed.
//! - **Empty blocks**: an affine block stays with its node when it empties (Calico); a block
//!   without affinity is deleted when its last address is freed.

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
