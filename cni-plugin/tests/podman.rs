//! A real runtime: rootful podman 4 on its CNI backend runs containers on a network whose
//! conflist uses `tabby`. Needs Debian `podman`, `runc` and `busybox-static`.
//!
//! Three settings this machine needs (see the podman recipe): podman runs under
//! `nsenter --net=<node netns>` (not `ip netns exec`, which remounts /sys and hides cgroups),
//! `default_ulimits` is set, and the OCI runtime is runc.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::cni::{Harness, cni_path};

const IMAGE: &str = "localhost/tabby-busybox:latest";
const NETWORK: &str = "tabby-podman";

struct Podman<'a> {
    h: &'a Harness,
    dir: PathBuf,
}

impl Podman<'_> {
    fn new(h: &Harness) -> Podman<'_> {
        let dir = h.dir.join("podman");
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{}", "/usr/lib/cni"]
network_config_dir = "{}"
"#,
                cni_path().display(),
                dir.join("net.d").display()
            ),
        )
        .unwrap();
        // podman 4.3 (libcni 1.1) speaks CNI up to 1.0.0.
        let mut conf = h.conf("1.0.0", serde_json::json!({}));
        let plugin = conf.as_object_mut().unwrap();
        plugin.remove("cniVersion");
        plugin.remove("name");
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [conf],
        });
        std::fs::write(
            dir.join("net.d").join("tabby.conflist"),
            conflist.to_string(),
        )
        .unwrap();
        let p = Podman { h, dir };
        p.import_busybox();
        p
    }

    fn podman(&self, args: &[&str]) -> Output {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.h.node.ns.path().display()))
            .arg("podman")
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .output()
            .expect("running podman (Debian package podman)");
        eprintln!(
            "podman {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(out.status.success(), "podman {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An image made of busybox-static, so no registry is needed.
    fn import_busybox(&self) {
        let root = self.dir.join("rootfs");
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))
            .expect("copying /bin/busybox (Debian package busybox-static)");
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
            }
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
        let tar = root.with_extension("tar");
        common::sh(&[
            "tar",
            "-C",
            root.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ]);
        self.ok(&[
            "import",
            "--change",
            r#"CMD ["/bin/sh"]"#,
            tar.to_str().unwrap(),
            IMAGE,
        ]);
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-af", "-t", "0"]);
        // Storage holds overlay mounts; podman removes them.
        let _ = self.podman(&["system", "reset", "-f"]);
    }
}

fn ipv4_of(ip_addr_output: &str) -> String {
    ip_addr_output
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no inet in {ip_addr_output:?}"))
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn podman_runs_containers_on_a_tabby_network() {
    let h = Harness::new();
    {
        let p = Podman::new(&h);
        p.ok(&[
            "run",
            "-d",
            "--name",
            "a",
            "--network",
            NETWORK,
            IMAGE,
            "sleep",
            "120",
        ]);
        let a_addr = p.ok(&["exec", "a", "ip", "-4", "-o", "addr", "show", "eth0"]);
        let a_ip = ipv4_of(&a_addr);
        assert!(a_ip.starts_with("198.18."), "{a_ip}");
        assert_eq!(h.cali_links().len(), 1);
        assert_eq!(h.endpoints().len(), 1);

        // A second container reaches the first, and the node.
        let out = p.ok(&[
            "run",
            "--rm",
            "--network",
            NETWORK,
            IMAGE,
            "sh",
            "-c",
            &format!(
                "ip -4 -o addr show eth0 && ping -c1 -W2 {a_ip} && ping -c1 -W2 {}",
                h.node.addr
            ),
        ]);
        let b_ip = ipv4_of(&out);
        assert_ne!(a_ip, b_ip);
        assert!(out.contains("1 packets received"), "{out}");

        p.ok(&["rm", "-f", "-t", "0", "a"]);
        h.assert_clean_eventually();
    }
}
