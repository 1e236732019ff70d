//! tabby-node: the per-node agent. It wires the datastore, confd, the BGP speaker and felix
//! together in one process; the logic lives in those crates.
//!
//! - [`autodetect`]: which address is this node's (Calico's `IP_AUTODETECTION_METHOD`).
//! - [`startup`]: the Node resource, the default IPPool, tunnel addresses, the node-name file.
//! - [`metrics`]: health and Prometheus text, and the tiny HTTP responder that serves them.
//! - [`agent`]: the tasks and channels (diagram at the top of the file).
//! - [`install_cni`]: `tabby-node install-cni`, the DaemonSet's init container.
//! - [`ipam_gc`]: frees the addresses of this node's pods that are gone without a CNI DEL.

pub mod agent;
pub mod autodetect;
pub mod install_cni;
pub mod ipam_gc;
pub mod metrics;
pub mod startup;

/// tabby-node's errors: what was being done, and why it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("autodetecting the node address: {0}")]
    Autodetect(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Datastore {
        what: String,
        #[source]
        source: datastore::Error,
    },
    #[error("{what}: {source}")]
    Ipam {
        what: String,
        #[source]
        source: Box<ipam::IpamError>,
    },
    #[error("{what}: revision conflict after {retries} retries")]
    Conflict { what: String, retries: usize },
    #[error("invalid setting {name}={value:?}: {reason}")]
    Setting {
        name: String,
        value: String,
        reason: String,
    },
    #[error("BGP speaker: {0}")]
    Speaker(#[from] bgp::speaker::SpeakerError),
    #[error("control socket: {0}")]
    Control(#[from] bgp::control::ControlError),
    #[error("installing the CNI plugin: {0}")]
    InstallCni(String),
}

/// This host's name (`/proc/sys/kernel/hostname`), the node name when none is given.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
