//! felix: the only writer of kernel networking state on a node.
//!
//! Two halves, as in Calico's felix: [`calc`] turns inputs (resources and BGP routes) into the
//! desired dataplane ([`model::Desired`]); the managers ([`routes`], [`links`], [`neigh`],
//! [`sysctl`], [`nft`]) each reconcile one kernel table to it (read actual, diff, apply the
//! difference). [`agent`] wires them together.

pub mod agent;
pub mod calc;
pub mod links;
pub mod model;
pub mod mtu;
pub mod neigh;
pub mod netlink;
pub mod nft;
pub mod routes;
pub mod script;
pub mod sysctl;

pub use calc::{Calculator, Input, LocalNode};
pub use model::Desired;

/// The route protocol number on every route felix writes (`proto 80`), the one Calico's felix
/// uses. It is how felix finds its own routes and leaves everyone else's alone.
pub const PROTO_TABBY: u8 = 80;

/// felix's errors. Managers log them where they handle them, with what they were doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("netlink request failed: {0}")]
    Netlink(String),
    #[error("kernel refused the request: {0}")]
    Kernel(#[source] std::io::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nft: {0}")]
    Nft(String),
}
