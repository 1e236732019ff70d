//! The block-affinity state machine: what to do next with one of a node's affinities, given the
//! block it names (or its absence).
//!
//! Calico claims a block in two steps (`claimAffineBlock` in `libcalico-go/lib/ipam`):
//!
//! ```text
//!   (none) --create--> Pending --create block host:<node>--> Pending --update--> Confirmed
//!                         |                                                      |
//!                         +-- block exists, someone else's: delete affinity      |
//!   Confirmed --update--> PendingDeletion --delete empty block--> delete affinity
//!                               +-- block not empty: back to Confirmed
//! ```
//!
//! A crash can leave an affinity in any state with any block; [`next_step`] says how to carry
//! it forward, so the same function drives a fresh claim, recovery at the next allocation, and
//! `release_from_report`.

use api::{AffinityState, BlockAffinitySpec};

use crate::block::{Block, host_affinity};

/// The next write for one affinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffinityStep {
    /// Confirmed, and the block is ours: allocate from it.
    Use,
    /// The block does not exist: create it, affine to the node.
    CreateBlock,
    /// The block exists and is affine to the node: mark the affinity confirmed (also the way
    /// back from PendingDeletion when the block turned out not to be empty).
    Confirm,
    /// The block belongs to another node or to none: this affinity is void, delete it.
    Abandon,
    /// PendingDeletion and the block is ours and empty: delete the block, then the affinity.
    FinishRelease,
}

/// What to do with `affinity` (of `node`) given the block it names as currently stored.
pub fn next_step(affinity: &BlockAffinitySpec, block: Option<&Block>) -> AffinityStep {
    let Some(block) = block else {
        return match affinity.state {
            AffinityState::PendingDeletion => AffinityStep::Abandon,
            AffinityState::Pending | AffinityState::Confirmed => AffinityStep::CreateBlock,
        };
    };
    let ours = block.spec().affinity.as_deref() == Some(host_affinity(&affinity.node).as_str());
    match (affinity.state, ours) {
        (_, false) => AffinityStep::Abandon,
        (AffinityState::Pending, true) => AffinityStep::Confirm,
        (AffinityState::Confirmed, true) => AffinityStep::Use,
        (AffinityState::PendingDeletion, true) if block.is_empty() => AffinityStep::FinishRelease,
        (AffinityState::PendingDeletion, true) => AffinityStep::Confirm,
    }
}

#[cfg(test)]
mod tests {
    use ipnet::IpNet;

    use super::*;

    fn aff(state: AffinityState) -> BlockAffinitySpec {
        BlockAffinitySpec {
            state,
            node: "n1".into(),
            cidr: Some("198.18.0.0/30".parse().unwrap()),
            deleted: false,
            type_: Some("host".into()),
        }
    }

    fn block(owner: Option<&str>, used: usize) -> Block {
        let cidr: IpNet = "198.18.0.0/30".parse().unwrap();
        let mut b = Block::new(cidr, owner.map(host_affinity), false).unwrap();
        b.auto_assign(used, Some("h"), &Default::default());
        b
    }

    #[test]
    fn claim_path() {
        use AffinityState::*;
        assert_eq!(next_step(&aff(Pending), None), AffinityStep::CreateBlock);
        assert_eq!(
            next_step(&aff(Pending), Some(&block(Some("n1"), 0))),
            AffinityStep::Confirm
        );
        assert_eq!(
            next_step(&aff(Confirmed), Some(&block(Some("n1"), 3))),
            AffinityStep::Use
        );
    }

    #[test]
    fn lost_races_abandon() {
        use AffinityState::*;
        for state in [Pending, Confirmed, PendingDeletion] {
            assert_eq!(
                next_step(&aff(state), Some(&block(Some("n2"), 0))),
                AffinityStep::Abandon,
                "{state:?}"
            );
            assert_eq!(
                next_step(&aff(state), Some(&block(None, 1))),
                AffinityStep::Abandon,
                "{state:?}"
            );
        }
    }

    #[test]
    fn confirmed_without_block_recreates_it() {
        assert_eq!(
            next_step(&aff(AffinityState::Confirmed), None),
            AffinityStep::CreateBlock
        );
    }

    #[test]
    fn release_path() {
        use AffinityState::*;
        assert_eq!(
            next_step(&aff(PendingDeletion), Some(&block(Some("n1"), 0))),
            AffinityStep::FinishRelease
        );
        assert_eq!(
            next_step(&aff(PendingDeletion), Some(&block(Some("n1"), 1))),
            AffinityStep::Confirm
        );
        assert_eq!(
            next_step(&aff(PendingDeletion), None),
            AffinityStep::Abandon
        );
    }
}
