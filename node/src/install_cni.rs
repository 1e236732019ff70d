//! `tabby-node install-cni`: the DaemonSet's init container, as Calico's `install-cni`.
//!
//! It puts on the host what the container runtime needs to call tabby's CNI plugin, in this
//! order, so that the network configuration (which tells the kubelet the network is ready)
//! only appears once everything it refers to is there:
//!
//! 1. the plugin binaries (`tabby`, `tabby-ipam`) from the image into the host's CNI bin dir;
//! 2. a kubeconfig for the plugin (mode 0600), made from this pod's service-account token and
//!    CA and `KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT`;
//! 3. the conflist, rendered from the template in `CNI_NETWORK_CONFIG` (the chart's
//!    ConfigMap), with Calico's placeholders filled in.
//!
//! Every file is written to a temporary name in its target directory and renamed into place:
//! a runtime exec'ing the plugin, or reading the conflist, sees the old file or the new one,
//! never half of one. Running it again writes the same files (binaries already identical are
//! left alone), so a restarted pod installs over its own earlier install.
//!
//! Paths: the host's directories are mounted under `/host` in the container; the paths
//! written into the conflist (`__KUBECONFIG_FILEPATH__`) are the host's own (`CNI_NET_DIR`,
//! default `/etc/cni/net.d`), since the runtime runs the plugin on the host.

use std::io::Write;
use std::net::Ipv6Addr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::Error;

/// The plugin binaries installed, as the conflist names them (`type`, `ipam.type`).
pub const PLUGIN_BINARIES: [&str; 2] = ["tabby", "tabby-ipam"];

/// Placeholders in the conflist template (Calico's names, plus `__DATASTORE__`).
pub const PLACEHOLDER_MTU: &str = "__CNI_MTU__";
pub const PLACEHOLDER_KUBECONFIG: &str = "__KUBECONFIG_FILEPATH__";
pub const PLACEHOLDER_NODE_NAME: &str = "__KUBERNETES_NODE_NAME__";
pub const PLACEHOLDER_DATASTORE: &str = "__DATASTORE__";

/// The template used when `CNI_NETWORK_CONFIG` is unset: the chart's default ConfigMap.
pub const DEFAULT_NETWORK_CONFIG: &str = r#"{
  "name": "k8s-pod-network",
  "cniVersion": "1.0.0",
  "plugins": [
    {
      "type": "tabby",
      "log_level": "info",
      "log_file_path": "/var/log/tabby/cni.log",
      "datastore": "__DATASTORE__",
      "nodename": "__KUBERNETES_NODE_NAME__",
      "mtu": __CNI_MTU__,
      "ipam": { "type": "tabby-ipam" }
    }
  ]
}
"#;

/// `tabby-node install-cni` flags; every one can come from the environment, which is how the
/// chart sets them.
#[derive(Clone, Debug, clap::Args)]
pub struct InstallCniArgs {
    /// Where the image keeps the plugin binaries.
    #[arg(long, env = "TABBY_CNI_SOURCE_DIR", default_value = "/opt/tabby/bin")]
    pub source_dir: PathBuf,
    /// The host's CNI bin dir, as mounted in this container.
    #[arg(long, env = "TABBY_CNI_BIN_DIR", default_value = "/host/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// The host's CNI config dir, as mounted in this container.
    #[arg(
        long,
        env = "TABBY_CNI_CONF_DIR",
        default_value = "/host/etc/cni/net.d"
    )]
    pub conf_dir: PathBuf,
    /// The same config dir as the host sees it: the kubeconfig path in the conflist.
    #[arg(long, env = "CNI_NET_DIR", default_value = "/etc/cni/net.d")]
    pub host_conf_dir: PathBuf,
    /// File name of the conflist (the runtime takes the first in sort order).
    #[arg(long, env = "CNI_CONF_NAME", default_value = "10-tabby.conflist")]
    pub conf_name: String,
    /// File name of the plugin's kubeconfig, in the config dir.
    #[arg(
        long,
        env = "TABBY_CNI_KUBECONFIG_NAME",
        default_value = "tabby-kubeconfig"
    )]
    pub kubeconfig_name: String,
    /// The conflist template (JSON with `__CNI_MTU__`, `__KUBECONFIG_FILEPATH__`,
    /// `__KUBERNETES_NODE_NAME__`, `__DATASTORE__`); default: tabby's plugin alone.
    #[arg(long, env = "CNI_NETWORK_CONFIG")]
    pub network_config: Option<String>,
    /// Pod MTU for `__CNI_MTU__`; 0: the plugin reads the MTU felix writes.
    #[arg(long, env = "CNI_MTU", default_value_t = 0)]
    pub mtu: u32,
    /// This node's name, for `__KUBERNETES_NODE_NAME__` (default: the hostname).
    #[arg(long, env = "NODENAME")]
    pub node_name: Option<String>,
    /// The pod's service-account mount: `token`, `ca.crt`.
    #[arg(
        long,
        env = "TABBY_SERVICE_ACCOUNT_DIR",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount"
    )]
    pub service_account_dir: PathBuf,
    /// The API server the plugin talks to (the kubelet sets it in every pod).
    #[arg(long, env = "KUBERNETES_SERVICE_HOST")]
    pub kubernetes_service_host: Option<String>,
    #[arg(long, env = "KUBERNETES_SERVICE_PORT", default_value = "443")]
    pub kubernetes_service_port: String,
    #[arg(long, env = "KUBERNETES_SERVICE_PROTOCOL", default_value = "https")]
    pub kubernetes_service_protocol: String,
}

/// What one run did, for the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Installed {
    /// Binaries written (changed or new); the others were already identical.
    pub binaries_written: Vec<PathBuf>,
    pub binaries_unchanged: Vec<PathBuf>,
    pub kubeconfig: PathBuf,
    pub conflist: PathBuf,
}

fn fail(msg: impl Into<String>) -> Error {
    Error::InstallCni(msg.into())
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Does the whole install (see the module docs for the order).
pub fn install(args: &InstallCniArgs) -> Result<Installed, Error> {
    let mut done = Installed::default();
    for dir in [&args.bin_dir, &args.conf_dir] {
        if !dir.is_dir() {
            return Err(fail(format!(
                "{} is not a directory: is the host directory mounted there?",
                dir.display()
            )));
        }
    }
    for name in PLUGIN_BINARIES {
        let src = args.source_dir.join(name);
        let dst = args.bin_dir.join(name);
        if install_binary(&src, &dst)? {
            done.binaries_written.push(dst);
        } else {
            done.binaries_unchanged.push(dst);
        }
    }

    let kubeconfig = kubeconfig(args)?;
    done.kubeconfig = args.conf_dir.join(&args.kubeconfig_name);
    write_atomic(&done.kubeconfig, kubeconfig.as_bytes(), 0o600)?;

    let template = args
        .network_config
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or(DEFAULT_NETWORK_CONFIG);
    let host_kubeconfig = args.host_conf_dir.join(&args.kubeconfig_name);
    let node_name = match args.node_name.as_deref().map(str::trim) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => crate::hostname(),
    };
    let conflist = render_conflist(
        template,
        &Substitutions {
            mtu: args.mtu,
            kubeconfig: &host_kubeconfig.to_string_lossy(),
            node_name: &node_name,
            datastore: &format!("kubernetes:{}", host_kubeconfig.display()),
        },
    )?;
    done.conflist = args.conf_dir.join(&args.conf_name);
    write_atomic(&done.conflist, conflist.as_bytes(), 0o644)?;
    Ok(done)
}

/// Copies one binary unless the target already has the same bytes. Returns whether it wrote.
fn install_binary(src: &Path, dst: &Path) -> Result<bool, Error> {
    let bytes = std::fs::read(src).map_err(io(format!(
        "reading the CNI plugin binary {} from the image",
        src.display()
    )))?;
    if let Ok(existing) = std::fs::read(dst)
        && existing == bytes
        && dst
            .metadata()
            .is_ok_and(|m| m.permissions().mode() & 0o111 == 0o111)
    {
        return Ok(false);
    }
    write_atomic(dst, &bytes, 0o755)?;
    Ok(true)
}

/// Writes `bytes` to a temporary file beside `path` with `mode`, syncs it and renames it over
/// `path`. The rename is atomic within a directory, so a reader sees the old or the new file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let dir = path
        .parent()
        .ok_or_else(|| fail(format!("{} has no parent directory", path.display())))?;
    let name = path
        .file_name()
        .ok_or_else(|| fail(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tabby-tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        // A leftover from a killed run of this same pid namespace: start afresh.
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io(format!("creating {}", tmp.display())))?;
        f.write_all(bytes)
            .map_err(io(format!("writing {}", tmp.display())))?;
        // The umask may have narrowed the mode given to open().
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io(format!("setting mode {mode:o} on {}", tmp.display())))?;
        f.sync_all()
            .map_err(io(format!("syncing {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(io(format!(
            "renaming {} to {}",
            tmp.display(),
            path.display()
        )))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The values the conflist template's placeholders take.
#[derive(Clone, Debug)]
pub struct Substitutions<'a> {
    pub mtu: u32,
    pub kubeconfig: &'a str,
    pub node_name: &'a str,
    pub datastore: &'a str,
}

/// Fills in the placeholders and checks the result is a conflist: a JSON object with a
/// `plugins` list and no placeholder left over.
pub fn render_conflist(template: &str, s: &Substitutions) -> Result<String, Error> {
    // String values are JSON-escaped (without their quotes): the template has the quotes.
    let escape = |v: &str| {
        let quoted = serde_json::to_string(v).expect("strings serialize");
        quoted[1..quoted.len() - 1].to_string()
    };
    let out = template
        .replace(PLACEHOLDER_MTU, &s.mtu.to_string())
        .replace(PLACEHOLDER_KUBECONFIG, &escape(s.kubeconfig))
        .replace(PLACEHOLDER_NODE_NAME, &escape(s.node_name))
        .replace(PLACEHOLDER_DATASTORE, &escape(s.datastore));
    if let Some(left) = leftover_placeholder(&out) {
        return Err(fail(format!(
            "CNI_NETWORK_CONFIG: unknown placeholder {left} (known: {PLACEHOLDER_MTU}, \
             {PLACEHOLDER_KUBECONFIG}, {PLACEHOLDER_NODE_NAME}, {PLACEHOLDER_DATASTORE})"
        )));
    }
    let value: serde_json::Value = serde_json::from_str(&out).map_err(|e| {
        fail(format!(
            "CNI_NETWORK_CONFIG is not valid JSON once rendered: {e}"
        ))
    })?;
    match value.get("plugins") {
        Some(serde_json::Value::Array(p)) if !p.is_empty() => {}
        _ => {
            return Err(fail(
                "CNI_NETWORK_CONFIG is not a conflist: it needs a non-empty \"plugins\" list",
            ));
        }
    }
    if !value.get("name").is_some_and(|n| n.is_string()) {
        return Err(fail(
            "CNI_NETWORK_CONFIG is not a conflist: it needs a \"name\"",
        ));
    }
    Ok(out)
}

/// The first `__UPPER_CASE__` word left in `s`, if any.
fn leftover_placeholder(s: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(off) = s[from..].find("__") {
        let start = from + off;
        let run = s[start + 2..]
            .bytes()
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
            .count();
        let word = &s[start + 2..start + 2 + run];
        if let Some(inner) = word.strip_suffix("__")
            && !inner.is_empty()
            && !inner.starts_with('_')
        {
            return Some(&s[start..start + 2 + run]);
        }
        from = start + 2;
    }
    None
}

/// The API server URL: `https://HOST:PORT`, an IPv6 host in brackets.
pub fn server_url(protocol: &str, host: &str, port: &str) -> String {
    let host = host.trim();
    let host = if host.parse::<Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    format!("{protocol}://{host}:{}", port.trim())
}

/// The plugin's kubeconfig, from the service-account mount.
pub fn kubeconfig(args: &InstallCniArgs) -> Result<String, Error> {
    let token_path = args.service_account_dir.join("token");
    let ca_path = args.service_account_dir.join("ca.crt");
    let token = std::fs::read_to_string(&token_path).map_err(io(format!(
        "reading the service-account token {} (is the pod's service account token mounted?)",
        token_path.display()
    )))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(fail(format!(
            "the service-account token {} is empty",
            token_path.display()
        )));
    }
    let ca = std::fs::read(&ca_path).map_err(io(format!(
        "reading the service-account CA {}",
        ca_path.display()
    )))?;
    if !ca.starts_with(b"-----BEGIN") {
        return Err(fail(format!(
            "the service-account CA {} is not PEM (it does not start with -----BEGIN)",
            ca_path.display()
        )));
    }
    let host = match args.kubernetes_service_host.as_deref().map(str::trim) {
        Some(h) if !h.is_empty() => h,
        _ => {
            return Err(fail(
                "KUBERNETES_SERVICE_HOST is not set: the plugin's kubeconfig needs the API \
                 server's address (the kubelet sets it in every pod)",
            ));
        }
    };
    let server = server_url(
        &args.kubernetes_service_protocol,
        host,
        &args.kubernetes_service_port,
    );
    Ok(render_kubeconfig(&server, &ca, token))
}

/// Rewrites the plugin's kubeconfig when the service-account token (or CA, or API server) has
/// changed since it was written, as calico-node does for its CNI plugin: the kubelet rotates a
/// pod's projected token, and the copy the plugin holds must follow it. Does nothing until
/// install-cni has written the file once. Returns whether it wrote.
pub fn refresh_kubeconfig(args: &InstallCniArgs) -> Result<bool, Error> {
    let path = args.conf_dir.join(&args.kubeconfig_name);
    let current = match std::fs::read_to_string(&path) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(Error::Io {
                what: format!("reading the CNI kubeconfig {}", path.display()),
                source,
            });
        }
    };
    let fresh = kubeconfig(args)?;
    if fresh == current {
        return Ok(false);
    }
    write_atomic(&path, fresh.as_bytes(), 0o600)?;
    Ok(true)
}

/// A kubeconfig with one cluster, one token user and one context. Scalars are written as
/// JSON strings, which YAML reads as double-quoted scalars.
pub fn render_kubeconfig(server: &str, ca_pem: &[u8], token: &str) -> String {
    let q = |v: &str| serde_json::to_string(v).expect("strings serialize");
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "# Written by tabby-node install-cni: the tabby CNI plugin's access to the API server,\n\
         # as the tabby-node service account.\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: local\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n\
         - name: tabby-cni\n  user:\n    token: {token}\n\
         contexts:\n\
         - name: tabby\n  context:\n    cluster: local\n    user: tabby-cni\n\
         current-context: tabby\n",
        server = q(server),
        ca = q(&ca),
        token = q(token),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs() -> Substitutions<'static> {
        Substitutions {
            mtu: 1440,
            kubeconfig: "/etc/cni/net.d/tabby-kubeconfig",
            node_name: "n1",
            datastore: "kubernetes:/etc/cni/net.d/tabby-kubeconfig",
        }
    }

    #[test]
    fn default_template_renders_to_a_conflist() {
        let out = render_conflist(DEFAULT_NETWORK_CONFIG, &subs()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let p = &v["plugins"][0];
        assert_eq!(p["type"], "tabby");
        assert_eq!(p["ipam"]["type"], "tabby-ipam");
        assert_eq!(p["mtu"], 1440);
        assert_eq!(p["nodename"], "n1");
        assert_eq!(p["datastore"], "kubernetes:/etc/cni/net.d/tabby-kubeconfig");
    }

    #[test]
    fn unknown_placeholders_and_bad_json_are_refused() {
        let e = render_conflist(
            r#"{"name":"x","plugins":[{"type":"tabby","v":"__SERVICEACCOUNT_TOKEN__"}]}"#,
            &subs(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("__SERVICEACCOUNT_TOKEN__"), "{e}");
        let e = render_conflist(r#"{"name":"x","plugins":[{"mtu": __CNI_MTU__,}]}"#, &subs())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = render_conflist(r#"{"name":"x","type":"tabby"}"#, &subs())
            .unwrap_err()
            .to_string();
        assert!(e.contains("plugins"), "{e}");
    }

    #[test]
    fn values_are_json_escaped() {
        let s = Substitutions {
            node_name: "we\"ird",
            ..subs()
        };
        let out = render_conflist(DEFAULT_NETWORK_CONFIG, &s).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["plugins"][0]["nodename"], "we\"ird");
    }

    #[test]
    fn leftover_placeholder_finds_only_whole_words() {
        assert_eq!(leftover_placeholder("a __FOO_BAR__ b"), Some("__FOO_BAR__"));
        assert_eq!(leftover_placeholder("__init__ ___ x__y"), None);
        assert_eq!(leftover_placeholder("____"), None);
        assert_eq!(leftover_placeholder(""), None);
    }

    #[test]
    fn ipv6_api_server_goes_in_brackets() {
        assert_eq!(
            server_url("https", "2001:db8::1", "6443"),
            "https://[2001:db8::1]:6443"
        );
        assert_eq!(
            server_url("https", "192.0.2.1", "443"),
            "https://192.0.2.1:443"
        );
        assert_eq!(
            server_url("https", "api.example", "443"),
            "https://api.example:443"
        );
    }
}
