//! `tabby-node install-cni`, run as the init container runs it, against temporary directories
//! standing in for the image's binaries, the host's CNI dirs and the service-account mount.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0YWJieS1ub2RlIn0.c2lnbmF0dXJl";
const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBfakefakefake\n-----END CERTIFICATE-----\n";

/// A fresh tree: `src/` (fake plugin binaries), `bin/` and `net.d/` (the host's dirs),
/// `sa/` (the service-account mount). Removed on drop.
struct Tree {
    root: PathBuf,
}

impl Tree {
    fn new() -> Tree {
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "tabby-install-cni-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["src", "bin", "net.d", "sa"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for name in ["tabby", "tabby-ipam"] {
            std::fs::write(
                root.join("src").join(name),
                format!("#!/bin/sh\necho fake {name}\n"),
            )
            .unwrap();
        }
        std::fs::write(root.join("sa/token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(root.join("sa/ca.crt"), CA).unwrap();
        Tree { root }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p)
    }

    /// Runs `tabby-node install-cni` with this tree's dirs and `extra` environment.
    fn run(&self, extra: &[(&str, &str)]) -> (bool, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tabby-node"));
        cmd.arg("install-cni")
            .env_clear()
            .env("TABBY_CNI_SOURCE_DIR", self.path("src"))
            .env("TABBY_CNI_BIN_DIR", self.path("bin"))
            .env("TABBY_CNI_CONF_DIR", self.path("net.d"))
            .env("TABBY_SERVICE_ACCOUNT_DIR", self.path("sa"))
            .env("KUBERNETES_SERVICE_HOST", "192.0.2.1")
            .env("KUBERNETES_SERVICE_PORT", "6443")
            .env("NODENAME", "node-a");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Every file in `dir` with its bytes and mode.
    fn snapshot(&self, dir: &str) -> Vec<(String, Vec<u8>, u32)> {
        let mut v: Vec<_> = std::fs::read_dir(self.path(dir))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let mode = e.metadata().unwrap().permissions().mode() & 0o7777;
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                    mode,
                )
            })
            .collect();
        v.sort();
        v
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn conflist(t: &Tree, name: &str) -> Value {
    let text = std::fs::read_to_string(t.path("net.d").join(name)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}\n{text}"))
}

#[test]
fn installs_binaries_kubeconfig_and_conflist() {
    let t = Tree::new();
    let (ok, err) = t.run(&[("CNI_MTU", "1440")]);
    assert!(ok, "{err}");

    for name in ["tabby", "tabby-ipam"] {
        let p = t.path("bin").join(name);
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(t.path("src").join(name)).unwrap(),
            "{name} is a copy of the image's binary"
        );
        assert_eq!(mode(&p), 0o755, "{name} is executable");
    }

    let c = conflist(&t, "10-tabby.conflist");
    assert_eq!(c["name"], "k8s-pod-network");
    let p = &c["plugins"][0];
    assert_eq!(p["type"], "tabby");
    assert_eq!(p["ipam"]["type"], "tabby-ipam");
    assert_eq!(p["mtu"], 1440);
    assert_eq!(p["nodename"], "node-a");
    assert_eq!(p["datastore"], "kubernetes:/etc/cni/net.d/tabby-kubeconfig");

    let kc_path = t.path("net.d/tabby-kubeconfig");
    assert_eq!(mode(&kc_path), 0o600, "the kubeconfig holds a token");
    let kc: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&kc_path).unwrap()).expect("YAML");
    assert_eq!(kc["kind"], "Config");
    assert_eq!(kc["current-context"], "tabby");
    let cluster = &kc["clusters"][0]["cluster"];
    assert_eq!(cluster["server"], "https://192.0.2.1:6443");
    let ca = cluster["certificate-authority-data"].as_str().unwrap();
    assert_eq!(
        base64_decode(ca),
        CA.as_bytes(),
        "CA data is ca.crt, base64"
    );
    assert_eq!(kc["users"][0]["user"]["token"], TOKEN, "token, trimmed");
    assert_eq!(kc["contexts"][0]["context"]["user"], kc["users"][0]["name"]);
    assert_eq!(
        kc["contexts"][0]["context"]["cluster"],
        kc["clusters"][0]["name"]
    );
}

#[test]
fn template_placeholders_are_filled_and_paths_are_the_hosts() {
    let t = Tree::new();
    let template = r#"{
      "name": "k8s-pod-network", "cniVersion": "1.0.0",
      "plugins": [
        { "type": "tabby", "mtu": __CNI_MTU__, "nodename": "__KUBERNETES_NODE_NAME__",
          "datastore_type": "kubernetes",
          "kubernetes": { "kubeconfig": "__KUBECONFIG_FILEPATH__" },
          "ipam": { "type": "tabby-ipam" } },
        { "type": "portmap", "capabilities": { "portMappings": true } }
      ]
    }"#;
    let (ok, err) = t.run(&[
        ("CNI_NETWORK_CONFIG", template),
        ("CNI_CONF_NAME", "05-custom.conflist"),
        ("CNI_NET_DIR", "/srv/cni/net.d"),
    ]);
    assert!(ok, "{err}");
    assert!(!t.path("net.d/10-tabby.conflist").exists());
    let c = conflist(&t, "05-custom.conflist");
    assert_eq!(
        c["plugins"][0]["mtu"], 0,
        "CNI_MTU defaults to 0 (felix's file)"
    );
    assert_eq!(c["plugins"][0]["nodename"], "node-a");
    assert_eq!(
        c["plugins"][0]["kubernetes"]["kubeconfig"],
        "/srv/cni/net.d/tabby-kubeconfig"
    );
    assert_eq!(c["plugins"][1]["type"], "portmap");
    assert!(
        t.path("net.d/tabby-kubeconfig").exists(),
        "written into the mounted dir, named in the conflist by the host's path"
    );
}

#[test]
fn ipv6_api_server_is_bracketed() {
    let t = Tree::new();
    let (ok, err) = t.run(&[("KUBERNETES_SERVICE_HOST", "2001:db8::1")]);
    assert!(ok, "{err}");
    let kc: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(t.path("net.d/tabby-kubeconfig")).unwrap())
            .unwrap();
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        "https://[2001:db8::1]:6443"
    );
}

#[test]
fn running_again_is_idempotent_and_leaves_no_temporary_files() {
    let t = Tree::new();
    let (ok, err) = t.run(&[]);
    assert!(ok, "{err}");
    let (bin, net) = (t.snapshot("bin"), t.snapshot("net.d"));
    assert_eq!(
        bin.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        ["tabby", "tabby-ipam"]
    );
    assert_eq!(
        net.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        ["10-tabby.conflist", "tabby-kubeconfig"]
    );
    let (ok, err) = t.run(&[]);
    assert!(ok, "{err}");
    assert_eq!(t.snapshot("bin"), bin);
    assert_eq!(t.snapshot("net.d"), net);
}

#[test]
fn a_new_image_replaces_the_binaries() {
    let t = Tree::new();
    assert!(t.run(&[]).0);
    // An older, non-executable leftover must not survive either.
    std::fs::set_permissions(
        t.path("bin/tabby-ipam"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(t.path("src/tabby"), "#!/bin/sh\necho v2\n").unwrap();
    let (ok, err) = t.run(&[]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(t.path("bin/tabby")).unwrap(),
        "#!/bin/sh\necho v2\n"
    );
    assert_eq!(mode(&t.path("bin/tabby-ipam")), 0o755);
}

#[test]
fn missing_token_is_an_error_naming_the_path_and_installs_no_conflist() {
    let t = Tree::new();
    std::fs::remove_file(t.path("sa/token")).unwrap();
    let (ok, err) = t.run(&[]);
    assert!(!ok);
    let token = t.path("sa/token");
    assert!(err.contains(&token.display().to_string()), "{err}");
    assert!(err.contains("token"), "{err}");
    assert!(
        !t.path("net.d/10-tabby.conflist").exists(),
        "no conflist: the kubelet must not think the network is ready"
    );
}

#[test]
fn bad_inputs_are_errors_that_say_what_is_wrong() {
    let t = Tree::new();
    let (ok, err) = t.run(&[("KUBERNETES_SERVICE_HOST", "")]);
    assert!(!ok);
    assert!(err.contains("KUBERNETES_SERVICE_HOST"), "{err}");

    let (ok, err) = t.run(&[("CNI_NETWORK_CONFIG", r#"{"name": "x", "plugins": [}"#)]);
    assert!(!ok);
    assert!(
        err.contains("CNI_NETWORK_CONFIG") && err.contains("JSON"),
        "{err}"
    );

    let (ok, err) = t.run(&[(
        "CNI_NETWORK_CONFIG",
        r#"{"name": "x", "plugins": [{"type": "tabby", "x": "__LOG_LEVEL__"}]}"#,
    )]);
    assert!(!ok);
    assert!(err.contains("__LOG_LEVEL__"), "{err}");

    std::fs::write(t.path("sa/ca.crt"), "not a certificate").unwrap();
    let (ok, err) = t.run(&[]);
    assert!(!ok);
    assert!(
        err.contains(&t.path("sa/ca.crt").display().to_string()),
        "{err}"
    );

    std::fs::remove_file(t.path("src/tabby-ipam")).unwrap();
    let (ok, err) = t.run(&[]);
    assert!(!ok);
    assert!(
        err.contains(&t.path("src/tabby-ipam").display().to_string()),
        "{err}"
    );

    let (ok, err) = t.run(&[("TABBY_CNI_BIN_DIR", "/nonexistent/tabby/bin")]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/tabby/bin"), "{err}");
}

/// Standard base64 (RFC 4648), decoded by hand so the test does not share the code under test.
fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("{c} is not base64")) as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// tabby-node keeps the plugin's token current: the kubelet rotates the pod's projected token,
/// and the kubeconfig written at install must follow it (calico-node does the same).
#[test]
fn a_rotated_token_is_written_to_the_plugins_kubeconfig() {
    let t = Tree::new();
    let args = node::install_cni::InstallCniArgs {
        source_dir: t.path("src"),
        bin_dir: t.path("bin"),
        conf_dir: t.path("net.d"),
        host_conf_dir: "/etc/cni/net.d".into(),
        conf_name: "10-tabby.conflist".into(),
        kubeconfig_name: "tabby-kubeconfig".into(),
        network_config: None,
        mtu: 0,
        node_name: Some("node-a".into()),
        service_account_dir: t.path("sa"),
        kubernetes_service_host: Some("192.0.2.1".into()),
        kubernetes_service_port: "6443".into(),
        kubernetes_service_protocol: "https".into(),
    };
    // Before install-cni ran there is nothing to refresh, and nothing is created.
    assert!(!node::install_cni::refresh_kubeconfig(&args).unwrap());
    assert!(!t.path("net.d/tabby-kubeconfig").exists());
    let (ok, err) = t.run(&[]);
    assert!(ok, "{err}");
    assert!(
        !node::install_cni::refresh_kubeconfig(&args).unwrap(),
        "same token: no write"
    );
    std::fs::write(t.path("sa/token"), "rotated-token\n").unwrap();
    assert!(node::install_cni::refresh_kubeconfig(&args).unwrap());
    let kc_path = t.path("net.d/tabby-kubeconfig");
    let kc: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&kc_path).unwrap()).expect("YAML");
    assert_eq!(kc["users"][0]["user"]["token"], "rotated-token");
    assert_eq!(mode(&kc_path), 0o600);
    assert!(!node::install_cni::refresh_kubeconfig(&args).unwrap());
}
