//! The one error type of the plugins, and how each failure maps to a CNI error code.

use crate::spec::{self, ErrorResult, code};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unsupported cniVersion {version:?}: this plugin supports {}", spec::SUPPORTED_VERSIONS.join(", "))]
    IncompatibleVersion { version: String },
    #[error("reading {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("decoding {what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    #[error("invalid environment variable {name}: {reason}")]
    InvalidEnv { name: &'static str, reason: String },
    #[error("{0}")]
    TryAgainLater(String),
    #[error("IPAM: {0}")]
    Ipam(String),
    #[error("IPAM: pool exhausted: {0}")]
    PoolExhausted(String),
    #[error("{what}: {reason}")]
    Dataplane { what: String, reason: String },
    #[error("datastore: {what}: {reason}")]
    Datastore { what: String, reason: String },
    /// A delegated plugin failed; its code and message are passed on.
    #[error("IPAM plugin {plugin}: {msg}")]
    Delegate {
        plugin: String,
        code: u32,
        msg: String,
        details: Option<String>,
    },
    #[error("CHECK: {0}")]
    CheckMismatch(String),
    /// STATUS: pods cannot be added now.
    #[error("{0}")]
    NotAvailable(String),
}

impl Error {
    pub fn code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion { .. } => code::INCOMPATIBLE_VERSION,
            Error::Io { .. } => code::IO_FAILURE,
            Error::Decode { .. } => code::DECODING_FAILURE,
            Error::InvalidConfig(_) => code::INVALID_NETWORK_CONFIG,
            Error::InvalidEnv { .. } => code::INVALID_ENVIRONMENT_VARIABLES,
            Error::TryAgainLater(_) => code::TRY_AGAIN_LATER,
            Error::Ipam(_) => code::IPAM_FAILURE,
            Error::PoolExhausted(_) => code::POOL_EXHAUSTED,
            Error::Dataplane { .. } => code::DATAPLANE_FAILURE,
            Error::Datastore { .. } => code::DATASTORE_FAILURE,
            Error::Delegate { code, .. } => *code,
            Error::CheckMismatch(_) => code::CHECK_MISMATCH,
            Error::NotAvailable(_) => code::PLUGIN_NOT_AVAILABLE,
        }
    }

    pub fn dataplane(what: impl Into<String>, reason: impl std::fmt::Display) -> Error {
        Error::Dataplane {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub fn datastore(what: impl Into<String>, reason: impl std::fmt::Display) -> Error {
        Error::Datastore {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// The JSON a plugin prints on stdout for this error.
    pub fn to_result(&self, cni_version: &str) -> ErrorResult {
        let details = match self {
            Error::Delegate { details, .. } => details.clone(),
            _ => None,
        };
        ErrorResult {
            cni_version: cni_version.to_string(),
            code: self.code(),
            msg: self.to_string(),
            details,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
