//! felix: the only writer of kernel networking state on a node.
//!
//! Two halves, as in Calico's felix: [`calc`] turns inputs (resources and BGP routes) into the
//! desired dataplane ([`model::Desired`]); the managers ([`routes`], [`links`], [`neigh`],
//! [`sysctl`], [`nft`]) each reconcile one kernel table to it (read actual, diff, apply the
//! difference). [`agent`] wires them together.
//!
//! # What the node agent calls
//!
//! ```no_run
//! # async fn example() -> Result<(), felix::Error> {
//! use felix::agent::{AgentConfig, AgentMsg, channels, run};
//! use felix::{Input, LocalNode};
//!
//! let (handle, rx, status) = channels();
//! let cfg = AgentConfig::new(LocalNode { name: "n1".into(), underlay_dev: "eth0".into() });
//! tokio::spawn(run(cfg, rx, status));
//! // Datastore snapshot, then watch events, as they come:
//! handle.tx.send(AgentMsg::Input(Input::PoolRemove("old-pool".into()))).await.unwrap();
//! // ...every resource once, then:
//! handle.tx.send(AgentMsg::InSync).await.unwrap();
//! // BGP best routes from the speaker:
//! handle.tx.send(AgentMsg::Input(Input::BgpRoute(
//!     "198.18.1.0/26".parse().unwrap(), vec!["192.0.2.12".parse().unwrap()],
//! ))).await.unwrap();
//! // handle.status: a watch of passes, route stats and the last error (health, metrics).
//! # Ok(()) }
//! ```
//!
//! felix removes nothing before `InSync`, and keeps the dataplane as it is when inputs stop
//! (datastore outage) or the channel closes.

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
    #[error("nft is not installed: NAT-outgoing and forward rules are not programmed")]
    NftMissing,
}
