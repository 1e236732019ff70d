//! The tabby CNI plugin and the tabby-ipam IPAM plugin.
//!
//! `tabby` ([`plugin`]) creates a pod's veth pair, routes and WorkloadEndpoint and delegates
//! addresses to the IPAM plugin named in `ipam.type`, normally `tabby-ipam` ([`ipam_plugin`]),
//! through the CNI delegation protocol ([`delegate`]). Both are thin `main.rs` files over
//! [`cli::main`].

pub mod cli;
pub mod config;
pub mod dataplane;
pub mod delegate;
pub mod endpoint;
pub mod error;
pub mod ipam_plugin;
pub mod lock;
pub mod log;
pub mod netns;
pub mod plugin;
pub mod spec;

pub use error::{Error, Result};
