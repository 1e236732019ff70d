//! What both binaries do around their commands: read `CNI_*` and stdin, answer VERSION, print
//! the result or the error JSON, and exit 0 or 1 (SPEC.md, "Execution protocol").

use std::io::{Read, Write};

use crate::config::{Command, Env, NetConf};
use crate::error::{Error, Result};
use crate::spec::{CURRENT_VERSION, CniResult, Version, VersionResult};

/// One call: the checked environment, the decoded configuration and the raw stdin (passed on
/// unchanged to delegated plugins).
pub struct Invocation {
    pub env: Env,
    pub conf: NetConf,
    pub version: Version,
    pub stdin: Vec<u8>,
}

/// The commands a plugin implements; VERSION is answered here.
pub trait Plugin {
    fn add(&self, inv: &Invocation) -> Result<CniResult>;
    fn del(&self, inv: &Invocation) -> Result<()>;
    fn check(&self, inv: &Invocation) -> Result<()>;
    fn status(&self, inv: &Invocation) -> Result<()>;
    fn gc(&self, inv: &Invocation) -> Result<()>;
}

/// Runs one command as the runtime asked; returns the process exit code.
pub fn main(plugin: &dyn Plugin) -> i32 {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let (out, code) = match read {
        Err(source) => (
            error_json(
                &Error::Io {
                    what: "network configuration from stdin".into(),
                    source,
                },
                &stdin,
            ),
            1,
        ),
        Ok(_) => match dispatch(plugin, stdin.clone()) {
            Ok(Some(v)) => (Some(v), 0),
            Ok(None) => (None, 0),
            Err(e) => {
                tracing::error!(code = e.code(), "{e}");
                (error_json(&e, &stdin), 1)
            }
        },
    };
    tracing::debug!(code, "command done");
    if let Some(v) = out {
        let mut s = serde_json::to_string(&v).expect("JSON values serialize");
        s.push('\n');
        let _ = std::io::stdout().write_all(s.as_bytes());
    }
    code
}

fn dispatch(plugin: &dyn Plugin, stdin: Vec<u8>) -> Result<Option<serde_json::Value>> {
    let env = Env::from_process()?;
    if env.command == Command::Version {
        return Ok(Some(
            serde_json::to_value(VersionResult::ours()).expect("serializes"),
        ));
    }
    let (conf, version) = NetConf::parse(&stdin)?;
    crate::log::init(&conf);
    let inv = Invocation {
        env,
        conf,
        version,
        stdin,
    };
    match inv.env.command {
        Command::Add => Ok(Some(plugin.add(&inv)?.to_version(version))),
        Command::Del => plugin.del(&inv).map(|()| None),
        Command::Check => {
            // SPEC.md: CHECK exists from 0.4.0 on.
            if version < Version::V0_4_0 {
                return Err(Error::IncompatibleVersion {
                    version: format!("{} (CHECK needs 0.4.0 or later)", version.as_str()),
                });
            }
            plugin.check(&inv).map(|()| None)
        }
        Command::Status => plugin.status(&inv).map(|()| None),
        Command::Gc => plugin.gc(&inv).map(|()| None),
        Command::Version => unreachable!("answered above"),
    }
}

/// The error JSON, in the cniVersion of the config when it has a readable one.
fn error_json(e: &Error, stdin: &[u8]) -> Option<serde_json::Value> {
    let version = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| Version::parse(v).is_some())
        .unwrap_or_else(|| CURRENT_VERSION.to_string());
    Some(serde_json::to_value(e.to_result(&version)).expect("serializes"))
}

/// A runtime for the datastore calls of one command (the plugins run one command and exit).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            what: "starting the async runtime".into(),
            source,
        })
}
