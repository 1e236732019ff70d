//! The netns cluster harness and `tabby-lab`, the demo the README runs.
//!
//! - [`cluster`]: a router namespace between two underlay segments, nodes running
//!   `tabby-node`, pods made by exec'ing the CNI plugin, a recorded state file and Drop guards;
//! - [`report`]: per-node routes and BGP peers, and one packet's path across the cluster;
//! - [`lab`]: the `up` / `demo` / `down` / `add-node` commands;
//! - [`sys`]: commands, namespaces, processes, the Ctrl-C flag.

pub mod cluster;
pub mod lab;
pub mod report;
pub mod sys;

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{name} not found in {dir}: run `cargo build --release` first (or pass --bin-dir)")]
    MissingBinary { name: String, dir: PathBuf },
    #[error(
        "IPIP needs the kernel's ipip module, and this kernel has none ({detail}). \
         Nothing was built. Use --mode vxlan or --mode crosssubnet instead"
    )]
    NoIpip { detail: String },
    #[error(
        "a lab is already up in {dir}: run `tabby-lab down` first (or pick another --state-dir)"
    )]
    AlreadyUp { dir: PathBuf },
    #[error("no lab is up in {dir}")]
    NotUp { dir: PathBuf },
    #[error("{what}: {detail}")]
    Command { what: String, detail: String },
    #[error("state {file}: {detail}")]
    State { file: PathBuf, detail: String },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("interrupted: removing what was built")]
    Interrupted,
}
