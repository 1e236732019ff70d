//! Where resources live. One async trait, [`Datastore`], with compare-and-swap writes and watches
//! that resume from a revision; backends implement it and nothing above them knows which one
//! they talk to.
//!
//! Revisions are one cluster-wide, monotonically increasing counter: every write gets the next
//! one, and a resource's `metadata.resourceVersion` is the revision of its last write (as etcd's
//! `mod_revision` and Kubernetes' `resourceVersion` are). A watch from revision R delivers every
//! change with a revision greater than R, exactly once and in order.
//!
//! Backends: [`DirDatastore`], a local directory shared by every process on a host (the
//! embedded default), and [`MemoryDatastore`] for tests; [`open`] picks one from a spec such as
//! `dir:/var/lib/tabby`. [`conformance`] is the behaviour they all share, as a test suite.

pub mod conformance;
pub mod dir;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod memory;

use std::fmt;
use std::sync::Arc;

use api::{Key, Kind, Resource};
use async_trait::async_trait;
pub use dir::{DirDatastore, DirOptions};
pub use memory::MemoryDatastore;

/// The environment variable tabby's binaries read a datastore spec from (see [`open`]).
pub const DATASTORE_ENV: &str = "TABBY_DATASTORE";

/// Opens the datastore a spec names, as given to `--datastore` or in `TABBY_DATASTORE`:
///
/// - `dir:PATH` — the local-directory datastore in `PATH` (created if missing);
/// - `memory:` — a fresh, empty in-memory datastore (for tests and dry runs);
/// - `kubernetes:` — the Kubernetes API (Calico's "KDD" layout), in-cluster when
///   `KUBERNETES_SERVICE_HOST` is set, else `KUBECONFIG` / `~/.kube/config`;
///   `kubernetes:PATH` reads the kubeconfig at `PATH` (needs the `kubernetes` feature).
pub fn open(spec: &str) -> Result<Arc<dyn Datastore>, Error> {
    let invalid = |reason: &str| Error::InvalidSpec {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    // `kubernetes` alone, as calicoctl's DATASTORE_TYPE=kubernetes.
    let spec_or_alias = if spec == "kubernetes" {
        "kubernetes:"
    } else {
        spec
    };
    match spec_or_alias.split_once(':') {
        Some(("dir", "")) => Err(invalid("dir: needs a path, as in dir:/var/lib/tabby")),
        Some(("dir", path)) => Ok(Arc::new(DirDatastore::open(path)?)),
        Some(("memory", "")) => Ok(Arc::new(MemoryDatastore::new())),
        Some(("memory", _)) => Err(invalid("memory: takes no argument")),
        #[cfg(feature = "kubernetes")]
        Some(("kubernetes", "")) => Ok(Arc::new(kubernetes::KubeDatastore::new(
            kubernetes::ConfigSource::Infer,
        ))),
        #[cfg(feature = "kubernetes")]
        Some(("kubernetes", path)) => Ok(Arc::new(kubernetes::KubeDatastore::new(
            kubernetes::ConfigSource::Kubeconfig(path.into()),
        ))),
        #[cfg(not(feature = "kubernetes"))]
        Some(("kubernetes", _)) => Err(invalid(
            "this build has no Kubernetes support (datastore feature `kubernetes`)",
        )),
        _ => Err(invalid(
            "expected dir:PATH, memory:, kubernetes: or kubernetes:KUBECONFIG",
        )),
    }
}

/// A datastore revision. 0 means "before anything was written".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub u64);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Revision {
    /// The revision recorded in a resource's `metadata.resourceVersion`, if it has one.
    pub fn of(resource: &Resource) -> Result<Option<Revision>, Error> {
        match resource.resource_version() {
            None | Some("") => Ok(None),
            Some(s) => s
                .parse()
                .map(|n| Some(Revision(n)))
                .map_err(|_| Error::InvalidRevision {
                    key: resource.key(),
                    value: s.to_string(),
                }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(Key),
    #[error("{0} already exists")]
    AlreadyExists(Key),
    /// The write carried a revision that is no longer the resource's current one.
    #[error("{key}: revision conflict (expected {expected}, current {current})")]
    Conflict {
        key: Key,
        expected: Revision,
        current: Revision,
    },
    #[error("{key}: resourceVersion {value:?} is not a revision")]
    InvalidRevision { key: Key, value: String },
    /// A watch asked for changes after a revision whose history has been compacted away: the
    /// watcher must list again and watch from the list's revision.
    #[error("watch from revision {requested} is too old (oldest kept is {oldest}): re-list")]
    TooOld {
        requested: Revision,
        oldest: Revision,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: corrupt data: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("datastore unavailable: {0}")]
    Unavailable(String),
    /// The backend cannot store a resource under this key.
    #[error("{key}: cannot be stored: {reason}")]
    InvalidKey { key: Key, reason: String },
    #[error("datastore spec {spec:?}: {reason}")]
    InvalidSpec { spec: String, reason: String },
    /// The Kubernetes API server refused a request for a reason none of the above covers.
    #[error("{what}: the Kubernetes API server answered {code} {reason}: {message}")]
    Api {
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
}

/// One list: the items and the revision they were read at (watch from it to follow changes).
#[derive(Clone, Debug, PartialEq)]
pub struct Listing {
    pub items: Vec<Resource>,
    pub revision: Revision,
}

/// What happened to one resource, at which revision.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    Added {
        revision: Revision,
        resource: Resource,
    },
    Modified {
        revision: Revision,
        resource: Resource,
    },
    /// `resource` is the last state before deletion.
    Deleted {
        revision: Revision,
        resource: Resource,
    },
}

impl WatchEvent {
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Added { revision, .. }
            | WatchEvent::Modified { revision, .. }
            | WatchEvent::Deleted { revision, .. } => *revision,
        }
    }

    pub fn resource(&self) -> &Resource {
        match self {
            WatchEvent::Added { resource, .. }
            | WatchEvent::Modified { resource, .. }
            | WatchEvent::Deleted { resource, .. } => resource,
        }
    }
}

/// A stream of watch events. Dropping it stops the watch.
pub struct Watch {
    rx: tokio::sync::mpsc::Receiver<Result<WatchEvent, Error>>,
}

impl Watch {
    /// A watch fed by a backend through a channel.
    pub fn from_channel(rx: tokio::sync::mpsc::Receiver<Result<WatchEvent, Error>>) -> Watch {
        Watch { rx }
    }

    /// The next event; `None` once the backend has ended the watch. An `Err(TooOld)` ends it too.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, Error>> {
        self.rx.recv().await
    }
}

/// The one interface to stored resources.
#[async_trait]
pub trait Datastore: Send + Sync {
    async fn get(&self, key: &Key) -> Result<Resource, Error>;

    /// Every resource of one kind, and the revision the list was read at.
    async fn list(&self, kind: Kind) -> Result<Listing, Error>;

    /// Creates a resource that must not exist yet; returns it with its new resourceVersion.
    async fn create(&self, resource: Resource) -> Result<Resource, Error>;

    /// Replaces a resource. Compare-and-swap: when `metadata.resourceVersion` is set and is not
    /// the current revision of the resource, nothing is written and the result is `Conflict`.
    /// Without a resourceVersion the write is unconditional.
    async fn update(&self, resource: Resource) -> Result<Resource, Error>;

    /// Deletes a resource, only if its revision is `expected` when that is given. Returns the
    /// last state.
    async fn delete(&self, key: &Key, expected: Option<Revision>) -> Result<Resource, Error>;

    /// Changes to resources of `kind` (every kind when `None`) with a revision greater than
    /// `after`, in revision order, each exactly once.
    async fn watch(&self, kind: Option<Kind>, after: Revision) -> Result<Watch, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_parses_specs() {
        assert!(open("memory:").is_ok());
        for bad in ["", "memory:x", "dir:", "etcd:http://x", "/var/lib/tabby"] {
            assert!(
                matches!(open(bad), Err(Error::InvalidSpec { .. })),
                "{bad:?} should be rejected"
            );
        }
        let dir = std::env::temp_dir().join(format!("tabby-open-spec-{}", std::process::id()));
        assert!(open(&format!("dir:{}", dir.display())).is_ok());
        assert!(dir.join("log").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
