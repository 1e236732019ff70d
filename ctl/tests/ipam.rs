//! `tabbyctl ipam show | check | release` against addresses handed out by the ipam crate into
//! the same local-directory datastore.

use std::path::PathBuf;
use std::process::Command;

use api::Key;
use ipam::{AutoAssignRequest, Ipam};

/// A datastore directory removed when the test ends, pass or fail.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ctl(spec: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tabbyctl"))
        .args(args)
        .env("TABBY_DATASTORE", spec)
        .output()
        .expect("running tabbyctl");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

const SETUP: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 198.18.0.0/24
  blockSize: 26
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: n1
spec:
  bgp:
    ipv4Address: 192.0.2.11/24
"#;

#[tokio::test]
async fn show_check_and_release_through_tabbyctl() {
    let dir = TempDir(std::env::temp_dir().join(format!("tabbyctl-ipam-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let spec = format!("dir:{}", dir.0.join("ds").display());
    let manifest = dir.0.join("setup.yaml");
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(&manifest, SETUP).unwrap();
    let (ok, _, err) = ctl(&spec, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(ok, "{err}");

    let ds = datastore::open(&spec).unwrap();
    let ipam = Ipam::new(ds.clone());
    let mut ips = Vec::new();
    for pod in ["a", "b", "c"] {
        let got = ipam
            .auto_assign(&AutoAssignRequest::new(
                format!("k8s-pod-network.{pod}"),
                "n1",
            ))
            .await
            .unwrap();
        ips.push(got.v4[0].addr());
    }

    let (ok, show, err) = ctl(&spec, &["ipam", "show"]);
    assert!(ok, "{err}");
    let pool_row: Vec<&str> = show.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        pool_row,
        [
            "IP",
            "Pool",
            "198.18.0.0/24",
            "256",
            "3",
            "(1%)",
            "253",
            "(98%)"
        ],
        "{show}"
    );
    let (ok, blocks, err) = ctl(&spec, &["ipam", "show", "--show-blocks"]);
    assert!(ok, "{err}");
    let block_line = blocks
        .lines()
        .find(|l| l.starts_with("Block"))
        .expect(&blocks);
    assert!(
        block_line.contains("/26") && block_line.ends_with("n1"),
        "{blocks}"
    );
    assert!(
        block_line.contains(" 64 ") && block_line.contains("3 (4%)"),
        "{blocks}"
    );

    let (ok, clean, err) = ctl(&spec, &["ipam", "check"]);
    assert!(ok, "{err}");
    assert!(clean.contains("no problems found"), "{clean}");

    // Lose one handle object, as a crashed plugin could: its address is now leaked.
    ds.delete(&Key::new(api::Kind::IPAMHandle, "k8s-pod-network.b"), None)
        .await
        .unwrap();
    let report = dir.0.join("report.json");
    let (ok, found, err) = ctl(&spec, &["ipam", "check", "-o", report.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        found.contains(&format!("Leaked address {}", ips[1])),
        "{found}"
    );
    let (ok, released, err) = ctl(
        &spec,
        &["ipam", "release", "--from-report", report.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    assert!(released.starts_with("Released 1 address(es)"), "{released}");
    let (_, clean, _) = ctl(&spec, &["ipam", "check"]);
    assert!(clean.contains("no problems found"), "{clean}");

    // Release one address by hand; a second release says it is not allocated.
    let ip = ips[0].to_string();
    let (ok, _, err) = ctl(&spec, &["ipam", "release", "--ip", &ip]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctl(&spec, &["ipam", "release", "--ip", &ip]);
    assert!(!ok && err.contains("not allocated"), "{err}");
    let (_, show, _) = ctl(&spec, &["ipam", "show"]);
    assert!(show.contains(" 1 (0%)"), "{show}");
}
