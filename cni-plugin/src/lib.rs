//! The tabby CNI plugin and the tabby-ipam IPAM plugin.

pub mod config;
pub mod error;
pub mod spec;

pub use error::{Error, Result};
pub mod dataplane;
pub mod netns;
