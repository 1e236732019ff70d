//! tabby's BGP-4 speaker. Knows nothing of Kubernetes and never programs the kernel: it turns
//! configuration and prefixes to originate into sessions, and sessions into best paths.
//!
//! - [`packet`]: the wire codec (RFC 4271 §4, RFC 4760, RFC 6793, RFC 2918, RFC 4724, RFC 8654),
//!   plain synchronous code over `bytes` and `nom`.
//! - [`fsm`]: the per-peer session state machine (RFC 4271 §8), sans-IO; [`collision`]: §6.8.
//! - [`session`]: the tokio task per peer that runs the FSMs over TCP, and the shared
//!   [`session::Listener`]; [`sockopt`]: TCP MD5 and GTSM socket options.
//! - [`rib`]: Adj-RIB-In, Loc-RIB and Adj-RIB-Out, pure and synchronous, with the decision
//!   process in [`decision`] and the advertisement rules (split horizon, route reflection,
//!   next hop) in [`reflection`].
//! - [`config`]: tabby-bgpd's configuration; [`policy`]: import, export and max-prefix rules.
//! - [`speaker`]: the API tabby-node and `tabby-bgpd` use: sessions, RIB and config changes
//!   wired together; [`control`]: the local control socket `tabbyctl node` reads.

pub mod collision;
pub mod config;
pub mod control;
pub mod decision;
pub mod fsm;
pub mod packet;
pub mod policy;
pub mod reflection;
pub mod rib;
pub mod session;
pub mod sockopt;
pub mod speaker;
