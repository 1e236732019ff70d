//! The CNI delegation protocol: a plugin runs another (its IPAM) from `CNI_PATH` with the same
//! environment, `CNI_COMMAND` set to the command, and the network configuration on stdin
//! (SPEC.md, "Delegated plugins").

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

use crate::error::{Error, Result};
use crate::spec::{CniResult, ErrorResult};

/// Finds `plugin` in the `CNI_PATH` directories.
pub fn find(plugin: &str, path: &[PathBuf]) -> Result<PathBuf> {
    if plugin.is_empty() || plugin.contains('/') {
        return Err(Error::InvalidConfig(format!(
            "ipam.type {plugin:?} is not a plugin name"
        )));
    }
    path.iter()
        .map(|dir| dir.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::InvalidConfig(format!(
                "IPAM plugin {plugin:?} not found in CNI_PATH {}",
                std::env::join_paths(path)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ))
        })
}

/// Runs `plugin` for `command` (`ADD`, `DEL`, …) with `config` on stdin. Returns what it printed
/// on success (a result for ADD, usually nothing otherwise).
pub fn run(
    plugin: &str,
    path: &[PathBuf],
    command: &str,
    config: &[u8],
) -> Result<Option<serde_json::Value>> {
    start(plugin, path, command, config)?.finish()
}

/// A delegated plugin that is running; the caller may do other work before [`Running::finish`].
pub struct Running {
    plugin: String,
    command: String,
    exe: PathBuf,
    child: std::process::Child,
}

/// Starts `plugin` for `command` and hands it `config`; see [`run`].
pub fn start(plugin: &str, path: &[PathBuf], command: &str, config: &[u8]) -> Result<Running> {
    let exe = find(plugin, path)?;
    let mut child = Process::new(&exe)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::Delegate {
            plugin: plugin.to_string(),
            code: crate::spec::code::DELEGATE_FAILURE,
            msg: format!("starting {}: {e}", exe.display()),
            details: None,
        })?;
    // A plugin that exits without reading stdin closes the pipe; its exit status tells why.
    // The configuration fits in the pipe buffer, so this does not wait for the plugin.
    let _ = child.stdin.take().expect("piped").write_all(config);
    Ok(Running {
        plugin: plugin.to_string(),
        command: command.to_string(),
        exe,
        child,
    })
}

impl Running {
    /// Waits for the plugin and decodes what it printed.
    pub fn finish(self) -> Result<Option<serde_json::Value>> {
        let Running {
            plugin,
            command,
            exe,
            child,
        } = self;
        let out = child.wait_with_output().map_err(|e| Error::Delegate {
            plugin: plugin.clone(),
            code: crate::spec::code::DELEGATE_FAILURE,
            msg: format!("waiting for {}: {e}", exe.display()),
            details: None,
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(match serde_json::from_str::<ErrorResult>(&stdout) {
                Ok(e) => Error::Delegate {
                    plugin,
                    code: e.code,
                    msg: e.msg,
                    details: e.details,
                },
                Err(_) => Error::Delegate {
                    plugin,
                    code: crate::spec::code::DELEGATE_FAILURE,
                    msg: format!("{command} failed ({}) and printed {stdout:?}", out.status),
                    details: None,
                },
            });
        }
        if stdout.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&stdout)
            .map(Some)
            .map_err(|source| Error::Decode {
                what: format!("{command} result of IPAM plugin {plugin}"),
                source,
            })
    }

    /// Waits for an ADD and decodes its result (in whatever version the plugin wrote it).
    pub fn finish_add(self) -> Result<CniResult> {
        let plugin = self.plugin.clone();
        let value = self.finish()?.ok_or_else(|| Error::Delegate {
            plugin: plugin.clone(),
            code: crate::spec::code::DELEGATE_FAILURE,
            msg: "ADD printed no result".into(),
            details: None,
        })?;
        serde_json::from_value(value).map_err(|source| Error::Decode {
            what: format!("ADD result of IPAM plugin {plugin}"),
            source,
        })
    }
}
