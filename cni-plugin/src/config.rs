//! What the runtime hands a plugin: the network configuration on stdin (Calico's conflist
//! shape, with tabby's keys) and the `CNI_*` environment variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::spec::{Attachment, Dns, Version};

/// Where felix and the installer leave per-node state, as Calico's `/var/lib/calico`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tabby";

/// MTU when the config says 0 and felix has not written `<state_dir>/mtu`.
pub const DEFAULT_MTU: u32 = 1500;

/// The network configuration, as in a conflist entry:
///
/// ```json
/// { "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tabby",
///   "ipam": { "type": "tabby-ipam" }, "mtu": 0, "datastore": "dir:/var/lib/tabby/datastore" }
/// ```
#[derive(Clone, Debug, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub ipam: Option<IpamConf>,
    /// 0: read `<state_dir>/mtu` (felix writes it), else [`DEFAULT_MTU`].
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub nodename: Option<String>,
    /// Default `<state_dir>/nodename`.
    #[serde(default)]
    pub nodename_file: Option<PathBuf>,
    /// Same forms as tabbyctl's `--datastore` (`dir:/path`, …).
    #[serde(default)]
    pub datastore: Option<String>,
    /// Calico's way to name the datastore: `"kubernetes"` (with [`NetConf::kubernetes`]) or
    /// `"local"` (the directory datastore under the state dir). `datastore` wins when both are set.
    #[serde(default)]
    pub datastore_type: Option<String>,
    /// Calico's `kubernetes` section: the kubeconfig the plugin uses (written by
    /// `tabby-node install-cni`); without it, the in-cluster config or `KUBECONFIG`.
    #[serde(default)]
    pub kubernetes: Option<KubernetesConf>,
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub log_file_path: Option<PathBuf>,
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
    #[serde(default)]
    pub dns: Dns,
    /// Directory of the node's tabby state (`mtu`, `nodename`, `ipam.lock`); tests point it at
    /// a temporary directory.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Test only: ADD exits the process (as a kill -9 would, without any cleanup) right after
    /// step k of [`crate::plugin::AddStep`].
    #[serde(default)]
    pub test_exit_after_step: Option<u32>,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<serde_json::Value>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: Option<serde_json::Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// Calico's `kubernetes` section of the network configuration.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct KubernetesConf {
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
}

/// The `ipam` section. Calico allows the pools here too; when given here they win.
#[derive(Clone, Debug, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
    /// Calico: `"assign_ipv4": "true"` (default) / `"assign_ipv6": "false"` (default).
    #[serde(default)]
    pub assign_ipv4: Option<String>,
    #[serde(default)]
    pub assign_ipv6: Option<String>,
}

impl NetConf {
    /// Decodes stdin: JSON errors are code 6, a version we do not speak is code 1, a missing or
    /// mistyped field is code 7.
    pub fn parse(bytes: &[u8]) -> Result<(NetConf, Version)> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|source| Error::Decode {
                what: "network configuration from stdin".into(),
                source,
            })?;
        let version = match value.get("cniVersion") {
            Some(serde_json::Value::String(v)) => Version::parse(v)
                .ok_or_else(|| Error::IncompatibleVersion { version: v.clone() })?,
            Some(other) => {
                return Err(Error::InvalidConfig(format!(
                    "cniVersion must be a string, got {other}"
                )));
            }
            None => return Err(Error::InvalidConfig("missing field `cniVersion`".into())),
        };
        let conf: NetConf =
            serde_json::from_value(value).map_err(|e| Error::InvalidConfig(format!("{e}")))?;
        if conf.name.is_empty() {
            return Err(Error::InvalidConfig("field `name` is empty".into()));
        }
        match conf.datastore_type.as_deref() {
            None | Some("kubernetes") | Some("local") => {}
            Some(other) => {
                return Err(Error::InvalidConfig(format!(
                    "field `datastore_type`: {other:?} is not supported (use \"kubernetes\" or \"local\")"
                )));
            }
        }
        Ok((conf, version))
    }

    pub fn state_dir(&self) -> &Path {
        self.state_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_STATE_DIR))
    }

    pub fn ipam_lock_path(&self) -> PathBuf {
        self.state_dir().join("ipam.lock")
    }

    /// The MTU for the veth pair: the configured one, or felix's file, or 1500.
    pub fn effective_mtu(&self) -> Result<u32> {
        if self.mtu != 0 {
            return Ok(self.mtu);
        }
        let path = self.state_dir().join("mtu");
        match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().parse().map_err(|_| {
                Error::InvalidConfig(format!("MTU file {} holds {:?}", path.display(), s.trim()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DEFAULT_MTU),
            Err(source) => Err(Error::Io {
                what: format!("MTU file {}", path.display()),
                source,
            }),
        }
    }

    /// The node name: `nodename`, else the contents of `nodename_file`, else the hostname.
    pub fn node_name(&self) -> Result<String> {
        if let Some(n) = self.nodename.as_ref().filter(|n| !n.is_empty()) {
            return Ok(n.clone());
        }
        let path = self
            .nodename_file
            .clone()
            .unwrap_or_else(|| self.state_dir().join("nodename"));
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Ok(_) => Err(Error::InvalidConfig(format!(
                "nodename file {} is empty",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => hostname(),
            Err(source) => Err(Error::Io {
                what: format!("nodename file {}", path.display()),
                source,
            }),
        }
    }

    pub fn datastore_url(&self) -> String {
        if let Some(spec) = &self.datastore {
            return spec.clone();
        }
        match self.datastore_type.as_deref() {
            Some("kubernetes") => {
                match self.kubernetes.as_ref().and_then(|k| k.kubeconfig.as_ref()) {
                    Some(path) => format!("kubernetes:{}", path.display()),
                    None => "kubernetes:".to_string(),
                }
            }
            _ => format!("dir:{}", self.state_dir().join("datastore").display()),
        }
    }

    pub fn ipv4_pools(&self) -> &[String] {
        match &self.ipam {
            Some(i) if !i.ipv4_pools.is_empty() => &i.ipv4_pools,
            _ => &self.ipv4_pools,
        }
    }

    pub fn ipv6_pools(&self) -> &[String] {
        match &self.ipam {
            Some(i) if !i.ipv6_pools.is_empty() => &i.ipv6_pools,
            _ => &self.ipv6_pools,
        }
    }

    /// Calico's defaults: IPv4 on, IPv6 off unless pools or `assign_ipv6` ask for it.
    pub fn assign_ipv4(&self) -> bool {
        match self.ipam.as_ref().and_then(|i| i.assign_ipv4.as_deref()) {
            Some(v) => v == "true",
            None => true,
        }
    }

    pub fn assign_ipv6(&self) -> bool {
        match self.ipam.as_ref().and_then(|i| i.assign_ipv6.as_deref()) {
            Some(v) => v == "true",
            None => !self.ipv6_pools().is_empty(),
        }
    }

    /// The IPAM handle of one attachment: Calico's `<network>.<containerID>`.
    pub fn handle(&self, container_id: &str) -> String {
        format!("{}.{}", self.name, container_id)
    }
}

fn hostname() -> Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(Error::Io {
            what: "hostname".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }
}

/// The `CNI_*` variables, checked for the command they come with.
#[derive(Clone, Debug)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

impl Env {
    pub fn from_process() -> Result<Env> {
        let vars: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("CNI_"))
            .collect();
        Env::from_vars(&vars)
    }

    /// SPEC.md, "Parameters": which variable each command needs and what a valid one is.
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Env> {
        let get = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        let command_s = get("CNI_COMMAND").ok_or(Error::InvalidEnv {
            name: "CNI_COMMAND",
            reason: "not set".into(),
        })?;
        let command = Command::parse(&command_s).ok_or_else(|| Error::InvalidEnv {
            name: "CNI_COMMAND",
            reason: format!(
                "unknown command {command_s:?} (expected ADD, DEL, CHECK, STATUS, GC or VERSION)"
            ),
        })?;
        let attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let require = |name: &'static str| -> Result<Option<String>> {
            match get(name) {
                Some(v) => Ok(Some(v)),
                None if attachment => Err(Error::InvalidEnv {
                    name,
                    reason: format!("not set (required for {command_s})"),
                }),
                None => Ok(None),
            }
        };
        let container_id = require("CNI_CONTAINERID")?.unwrap_or_default();
        if attachment {
            validate_container_id(&container_id)?;
        }
        let ifname = require("CNI_IFNAME")?.unwrap_or_default();
        if attachment {
            validate_ifname(&ifname)?;
        }
        let netns = match command {
            Command::Add | Command::Check => require("CNI_NETNS")?,
            _ => get("CNI_NETNS"),
        }
        .map(PathBuf::from);
        let path = match get("CNI_PATH") {
            Some(p) => std::env::split_paths(&p).collect(),
            None if command != Command::Version => {
                return Err(Error::InvalidEnv {
                    name: "CNI_PATH",
                    reason: format!("not set (required for {command_s})"),
                });
            }
            None => Vec::new(),
        };
        let args = CniArgs::parse(vars.get("CNI_ARGS").map(String::as_str).unwrap_or(""))?;
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }
}

/// SPEC.md: "alphanumeric, underscore (_), dot (.) and hyphen (-)", at least one character.
fn validate_container_id(id: &str) -> Result<()> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEnv {
            name: "CNI_CONTAINERID",
            reason: format!(
                "{id:?} must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"
            ),
        })
    }
}

/// SPEC.md: at most 15 bytes (IFNAMSIZ - 1), not `.` or `..`, no `/`, `:` or whitespace.
fn validate_ifname(name: &str) -> Result<()> {
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        Err(Error::InvalidEnv {
            name: "CNI_IFNAME",
            reason: format!("{name:?} is not a valid interface name"),
        })
    } else {
        Ok(())
    }
}

/// `CNI_ARGS`: `K=V` pairs split by `;`. Keys we do not know are errors unless
/// `IgnoreUnknown` is `1` or `true` (containernetworking/cni `pkg/types/args.go`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub k8s_pod_namespace: Option<String>,
    pub k8s_pod_name: Option<String>,
    pub k8s_pod_infra_container_id: Option<String>,
}

impl CniArgs {
    pub fn parse(s: &str) -> Result<CniArgs> {
        let mut pairs = Vec::new();
        for part in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| Error::InvalidEnv {
                name: "CNI_ARGS",
                reason: format!("{part:?} is not KEY=VALUE"),
            })?;
            pairs.push((k, v));
        }
        let ignore_unknown = pairs
            .iter()
            .any(|(k, v)| *k == "IgnoreUnknown" && matches!(*v, "1" | "true" | "True"));
        let mut args = CniArgs::default();
        for (k, v) in pairs {
            let v = Some(v.to_string()).filter(|v| !v.is_empty());
            match k {
                "K8S_POD_NAMESPACE" => args.k8s_pod_namespace = v,
                "K8S_POD_NAME" => args.k8s_pod_name = v,
                "K8S_POD_INFRA_CONTAINER_ID" => args.k8s_pod_infra_container_id = v,
                "IgnoreUnknown" => {}
                _ if ignore_unknown => {}
                _ => {
                    return Err(Error::InvalidEnv {
                        name: "CNI_ARGS",
                        reason: format!("unknown key {k:?} (and IgnoreUnknown is not set)"),
                    });
                }
            }
        }
        Ok(args)
    }

    /// Both Kubernetes names, when the runtime gave them.
    pub fn pod(&self) -> Option<(&str, &str)> {
        Some((
            self.k8s_pod_namespace.as_deref()?,
            self.k8s_pod_name.as_deref()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::code;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn calico_like_conf() {
        let j = br#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"tabby",
            "ipam":{"type":"tabby-ipam","ipv4_pools":["198.18.0.0/16"]},"mtu":0,
            "nodename":"n1","datastore":"dir:/tmp/x","log_level":"info",
            "ipv4_pools":["198.19.0.0/16"], "dns":{"nameservers":["198.18.0.10"]},
            "unknownField": 1}"#;
        let (c, v) = NetConf::parse(j).unwrap();
        assert_eq!(v, Version::V1_0_0);
        assert_eq!(c.ipam.as_ref().unwrap().type_, "tabby-ipam");
        assert_eq!(c.ipv4_pools(), ["198.18.0.0/16"]);
        assert!(c.assign_ipv4());
        assert!(!c.assign_ipv6());
        assert_eq!(c.node_name().unwrap(), "n1");
        assert_eq!(c.handle("abc"), "k8s-pod-network.abc");
        assert_eq!(c.dns.nameservers, ["198.18.0.10"]);
    }

    #[test]
    fn calico_datastore_type_picks_kubernetes() {
        let (c, _) = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"tabby",
            "datastore_type":"kubernetes","kubernetes":{"kubeconfig":"/etc/cni/net.d/tabby-kubeconfig"}}"#,
        )
        .unwrap();
        assert_eq!(
            c.datastore_url(),
            "kubernetes:/etc/cni/net.d/tabby-kubeconfig"
        );
        let (c, _) = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"tabby","datastore_type":"kubernetes"}"#,
        )
        .unwrap();
        assert_eq!(c.datastore_url(), "kubernetes:");
        let e = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"tabby","datastore_type":"etcdv3"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("datastore_type"), "{e}");
    }

    #[test]
    fn mtu_from_state_dir() {
        let dir = std::env::temp_dir().join(format!("tabby-mtu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let j = format!(
            r#"{{"cniVersion":"1.1.0","name":"n","type":"tabby","state_dir":"{}"}}"#,
            dir.display()
        );
        let (c, _) = NetConf::parse(j.as_bytes()).unwrap();
        assert_eq!(c.effective_mtu().unwrap(), 1500);
        std::fs::write(dir.join("mtu"), "1430\n").unwrap();
        assert_eq!(c.effective_mtu().unwrap(), 1430);
        std::fs::write(dir.join("nodename"), "node-7\n").unwrap();
        assert_eq!(c.node_name().unwrap(), "node-7");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_configs_have_the_spec_codes() {
        let e = NetConf::parse(b"{not json").unwrap_err();
        assert_eq!(e.code(), code::DECODING_FAILURE);
        assert!(e.to_string().contains("network configuration from stdin"));
        let e = NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n","type":"tabby"}"#).unwrap_err();
        assert_eq!(e.code(), code::INCOMPATIBLE_VERSION);
        assert!(e.to_string().contains("\"9.9.9\""), "{e}");
        let e = NetConf::parse(br#"{"name":"n","type":"tabby"}"#).unwrap_err();
        assert_eq!(e.code(), code::INVALID_NETWORK_CONFIG);
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","type":"tabby"}"#).unwrap_err();
        assert_eq!(e.code(), code::INVALID_NETWORK_CONFIG);
        assert!(e.to_string().contains("name"), "{e}");
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"tabby","mtu":"x"}"#)
            .unwrap_err();
        assert_eq!(e.code(), code::INVALID_NETWORK_CONFIG);
    }

    #[test]
    fn env_per_command() {
        let base = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;FOO=bar",
            ),
        ];
        let e = Env::from_vars(&vars(&base)).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.path.len(), 2);
        assert_eq!(e.args.pod(), Some(("default", "web")));

        for missing in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
            let v: Vec<_> = base
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let err = Env::from_vars(&vars(&v)).unwrap_err();
            assert_eq!(err.code(), code::INVALID_ENVIRONMENT_VARIABLES);
            assert!(err.to_string().contains(missing), "{err}");
        }
        // DEL does not need the netns.
        let mut v = vars(&base);
        v.insert("CNI_COMMAND".into(), "DEL".into());
        v.remove("CNI_NETNS");
        assert!(Env::from_vars(&v).is_ok());
        // VERSION needs nothing else.
        assert!(Env::from_vars(&vars(&[("CNI_COMMAND", "VERSION")])).is_ok());
        let err = Env::from_vars(&vars(&[("CNI_COMMAND", "FROB")])).unwrap_err();
        assert!(err.to_string().contains("FROB"));
        let mut v = vars(&base);
        v.insert("CNI_CONTAINERID".into(), "-bad/id".into());
        assert!(
            Env::from_vars(&v)
                .unwrap_err()
                .to_string()
                .contains("-bad/id")
        );
        let mut v = vars(&base);
        v.insert("CNI_IFNAME".into(), "a-very-long-ifname".into());
        assert_eq!(Env::from_vars(&v).unwrap_err().code(), 4);
    }

    #[test]
    fn cni_args() {
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        let a = CniArgs::parse("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=c")
            .unwrap();
        assert_eq!(a.pod(), Some(("ns", "p")));
        assert_eq!(a.k8s_pod_infra_container_id.as_deref(), Some("c"));
        let e = CniArgs::parse("K8S_POD_NAME=p;FOO=bar").unwrap_err();
        assert!(e.to_string().contains("FOO"));
        assert!(CniArgs::parse("IgnoreUnknown=true;FOO=bar").is_ok());
        assert!(CniArgs::parse("garbage").is_err());
    }
}
