//! The one error type of the crate.

use std::net::IpAddr;

use api::AllowedUse;
use ipnet::IpNet;

use crate::block::BlockError;
use crate::candidates::CandidateError;
use crate::family::Family;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// A datastore call failed for a reason other than a lost compare-and-swap.
    #[error("{what}: {source}")]
    Datastore {
        what: String,
        #[source]
        source: datastore::Error,
    },
    /// A compare-and-swap loop lost every round.
    #[error("{what}: revision conflict after {retries} retries")]
    Conflict { what: String, retries: usize },
    #[error("no enabled {family} pool allows {use_:?} addresses for node {node}")]
    NoPools {
        node: String,
        family: Family,
        use_: AllowedUse,
    },
    #[error("requested pool {requested} does not exist")]
    PoolNotFound { requested: String },
    #[error("pool {pool} cannot serve node {node}: {reason}")]
    PoolUnusable {
        pool: String,
        node: String,
        reason: String,
    },
    /// Calico's "no more free affine blocks and strict affinity is set" / "no IPs available".
    #[error(
        "assigning {requested} {family} address(es) to handle {handle} on node {node}: pool exhausted in {pools} ({reason})"
    )]
    Exhausted {
        handle: String,
        node: String,
        family: Family,
        requested: usize,
        pools: String,
        reason: String,
    },
    #[error("address {ip} is not in any IP pool")]
    NotInPool { ip: IpAddr },
    #[error("block {cidr} of node {node} still holds {in_use} address(es)")]
    BlockNotEmpty {
        cidr: IpNet,
        node: String,
        in_use: usize,
    },
    #[error("{what}: {source}")]
    Block {
        what: String,
        #[source]
        source: BlockError,
    },
    #[error(transparent)]
    Candidates(#[from] CandidateError),
    #[error("{what}: stored object is not a {expected}")]
    WrongKind {
        what: String,
        expected: &'static str,
    },
}

impl IpamError {
    pub(crate) fn datastore(what: impl Into<String>, source: datastore::Error) -> IpamError {
        IpamError::Datastore {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn block(what: impl Into<String>, source: BlockError) -> IpamError {
        IpamError::Block {
            what: what.into(),
            source,
        }
    }
}
