//! Client configuration files: a kubeconfig, and the in-cluster service-account directory.
//!
//! "Organizing Cluster Access Using kubeconfig Files": one cluster (`server`, and
//! `certificate-authority-data` when serving TLS), one user (`token` when the server wants
//! one), one context. "Accessing the Kubernetes API from a Pod": in a pod, clients read
//! `token`, `ca.crt` and `namespace` from `/var/run/secrets/kubernetes.io/serviceaccount/` and
//! the address from `KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT`.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::Error;

/// YAML double-quoted scalar (JSON string syntax is valid YAML).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// The kubeconfig text for a server.
pub fn render(url: &str, token: Option<&str>, ca_pem: Option<&str>) -> String {
    let mut cluster = format!("    server: {}\n", quoted(url));
    if let Some(ca) = ca_pem {
        cluster.push_str(&format!(
            "    certificate-authority-data: {}\n",
            STANDARD.encode(ca)
        ));
    }
    let user = match token {
        Some(t) => format!("  user:\n    token: {}\n", quoted(t)),
        None => "  user: {}\n".to_string(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testapi\n  cluster:\n{cluster}\
         users:\n- name: testapi\n{user}\
         contexts:\n- name: testapi\n  context:\n    cluster: testapi\n    user: testapi\n    namespace: default\n\
         current-context: testapi\npreferences: {{}}\n"
    )
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a kubeconfig file.
pub fn write_kubeconfig(
    path: &Path,
    url: &str,
    token: Option<&str>,
    ca_pem: Option<&str>,
) -> Result<(), Error> {
    write(path, &render(url, token, ca_pem))
}

/// Writes `token`, `ca.crt` and `namespace` into `dir` (created if missing).
pub fn write_service_account_dir(
    dir: &Path,
    token: &str,
    ca_pem: &str,
    namespace: &str,
) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write(&dir.join("token"), token)?;
    write(&dir.join("ca.crt"), ca_pem)?;
    write(&dir.join("namespace"), namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_is_yaml_with_the_cluster_and_user() {
        let text = render("https://127.0.0.1:1", Some("t\"k"), Some("PEM"));
        let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(v["clusters"][0]["cluster"]["server"], "https://127.0.0.1:1");
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            STANDARD.encode("PEM")
        );
        assert_eq!(v["users"][0]["user"]["token"], "t\"k");
        assert_eq!(v["current-context"], "testapi");
        let plain: serde_json::Value =
            serde_saphyr::from_str(&render("http://x", None, None)).unwrap();
        assert!(
            plain["clusters"][0]["cluster"]
                .get("certificate-authority-data")
                .is_none()
        );
    }
}
