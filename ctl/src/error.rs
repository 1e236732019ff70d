//! tabbyctl's errors: each names the resource, the field and the reason.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {what}: {source}")]
    Write {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<api::parse::ParseError>,
    },
    #[error("{action} {resource}: {source}")]
    Invalid {
        action: &'static str,
        resource: String,
        #[source]
        source: api::validate::ValidationError,
    },
    #[error("{action} {resource}: {source}")]
    Datastore {
        action: &'static str,
        resource: String,
        #[source]
        source: datastore::Error,
    },
    #[error("opening datastore {spec:?}: {source}")]
    Open {
        spec: String,
        #[source]
        source: datastore::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{action}: {source}")]
    Ipam {
        action: String,
        #[source]
        source: ipam::IpamError,
    },
    /// Several resources in one file failed; each message is on its own line.
    #[error("{failed} of {total} resources failed:\n{messages}")]
    Partial {
        failed: usize,
        total: usize,
        messages: String,
    },
}
