//! tabbyctl exec'd as an operator runs it, against a local-directory datastore in a temp dir.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A datastore directory removed when the test ends, pass or fail.
struct TempStore(PathBuf);

impl TempStore {
    fn new(name: &str) -> TempStore {
        let dir = std::env::temp_dir().join(format!("tabbyctl-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating temp dir");
        TempStore(dir)
    }

    fn spec(&self) -> String {
        format!("dir:{}", self.0.join("ds").display())
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_stdin(args, "")
    }

    fn ctl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tabbyctl"))
            .args(args)
            .env("TABBY_DATASTORE", self.spec())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning tabbyctl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().expect("waiting for tabbyctl")
    }

    /// Runs tabbyctl and insists it succeeds; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "tabbyctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn apply(&self, yaml: &str) -> Output {
        self.ctl_stdin(&["apply", "-f", "-"], yaml)
    }

    /// Runs tabbyctl expecting failure; returns stderr.
    fn fails(&self, args: &[&str], stdin: &str) -> String {
        let out = self.ctl_stdin(args, stdin);
        assert!(
            !out.status.success(),
            "tabbyctl {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/tests/manifests")
}

const POOL: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 198.18.0.0/16
  ipipMode: Always
  natOutgoing: true
"#;

fn get_json(store: &TempStore, kind: &str, name: &str) -> serde_json::Value {
    serde_json::from_str(&store.ok(&["get", kind, name, "-o", "json"]))
        .expect("get -o json prints JSON")
}

#[test]
fn every_documented_manifest_applies_and_reads_back_equivalent() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "expected the documented manifests in {:?}",
        manifests_dir()
    );
    for (n, file) in files.iter().enumerate() {
        // The documented examples reuse CIDRs, so each file gets a datastore of its own.
        let store = TempStore::new(&format!("manifests-{n}"));
        let text = std::fs::read_to_string(file).unwrap();
        let written = api::parse::parse_documents(&text).unwrap();
        let out = store.ctl(&["apply", "-f", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        for mut want in written {
            api::defaults::apply_defaults(&mut want);
            let key = want.key();
            let mut args = vec!["get", key.kind.as_str(), &key.name, "-o", "yaml"];
            if let Some(ns) = key.namespace.as_deref() {
                args.extend(["-n", ns]);
            }
            let yaml = store.ok(&args);
            let mut got = api::parse::parse_documents(&yaml)
                .expect("get -o yaml output parses back")
                .remove(0);
            assert!(
                got.resource_version().is_some(),
                "{key}: read back without a resourceVersion"
            );
            got.metadata_mut().resource_version = None;
            want.metadata_mut().resource_version = None;
            assert_eq!(
                got,
                want,
                "{}: {key} did not read back as written",
                file.display()
            );
        }
    }
}

#[test]
fn invalid_resources_are_rejected_with_field_path_and_nothing_is_written() {
    let store = TempStore::new("invalid");
    let cases = [
        ("cidr: 198.18.0.1/16", "spec.cidr"),
        ("cidr: 198.18.0.0/16\n  blockSize: 33", "spec.blockSize"),
        (
            "cidr: 198.18.0.0/16\n  ipipMode: Always\n  vxlanMode: Always",
            "Mode",
        ),
        ("cidr: 2001:db8::/64\n  ipipMode: Always", "spec.ipipMode"),
        ("cidr: 198.18.0.0/16\n  ipipMode: Sometimes", "ipipMode"),
        (
            "cidr: 198.18.0.0/16\n  nodeSelector: \"has(\"",
            "spec.nodeSelector",
        ),
        ("cidr: 198.18.0.0/16\n  natOutgoin: true", "natOutgoin"),
    ];
    for (spec, field) in cases {
        let yaml = format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: bad\nspec:\n  {spec}\n"
        );
        let err = store.fails(&["apply", "-f", "-"], &yaml);
        assert!(
            err.contains(field),
            "for {spec:?} expected {field:?} in: {err}"
        );
    }
    let out = store.ok(&["get", "ippools", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        0,
        "an invalid pool was stored: {out}"
    );
}

#[test]
fn patch_switches_ipip_mode_like_calicoctl() {
    let store = TempStore::new("patch");
    assert!(store.apply(POOL).status.success());
    let before = get_json(&store, "ippool", "default-ipv4-ippool");
    assert_eq!(before["spec"]["ipipMode"], "Always");
    store.ok(&[
        "patch",
        "ippool",
        "default-ipv4-ippool",
        "-p",
        r#"{"spec":{"ipipMode":"Never"}}"#,
    ]);
    let after = get_json(&store, "ippool", "default-ipv4-ippool");
    assert_eq!(after["spec"]["ipipMode"], "Never");
    assert_eq!(
        after["spec"]["natOutgoing"], true,
        "patch must keep the other fields"
    );
    assert_ne!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );
    // To VXLAN in one patch: IPIP off and VXLAN on together.
    store.ok(&[
        "patch",
        "ippools",
        "default-ipv4-ippool",
        "-p",
        r#"{"spec":{"vxlanMode":"CrossSubnet"}}"#,
    ]);
    assert_eq!(
        get_json(&store, "pool", "default-ipv4-ippool")["spec"]["vxlanMode"],
        "CrossSubnet"
    );
    // A patch that would make the pool invalid is refused and changes nothing.
    let err = store.fails(
        &[
            "patch",
            "ippool",
            "default-ipv4-ippool",
            "-p",
            r#"{"spec":{"ipipMode":"Always"}}"#,
        ],
        "",
    );
    assert!(err.contains("Mode"), "{err}");
    assert_eq!(
        get_json(&store, "ippool", "default-ipv4-ippool")["spec"]["ipipMode"],
        "Never"
    );
    // A pool's CIDR cannot change under its allocations.
    let err = store.fails(
        &[
            "patch",
            "ippool",
            "default-ipv4-ippool",
            "-p",
            r#"{"spec":{"cidr":"198.19.0.0/16"}}"#,
        ],
        "",
    );
    assert!(err.contains("spec.cidr"), "{err}");
}

#[test]
fn get_prints_calicoctl_columns() {
    let store = TempStore::new("columns");
    assert!(store.apply(POOL).status.success());
    let table = store.ok(&["get", "ippool"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CIDR", "SELECTOR"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row, ["default-ipv4-ippool", "198.18.0.0/16", "all()"]);
    let wide = store.ok(&["get", "ippools", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header[..6],
        ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED"]
    );
    let row: Vec<&str> = wide.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..6],
        [
            "default-ipv4-ippool",
            "198.18.0.0/16",
            "true",
            "Always",
            "Never",
            "false"
        ]
    );
}

#[test]
fn create_replace_delete_follow_calicoctl_rules() {
    let store = TempStore::new("crud");
    store.ok(&["version"]);
    let created = store.ctl_stdin(&["create", "-f", "-"], POOL);
    assert!(created.status.success());
    assert!(
        String::from_utf8_lossy(&created.stdout)
            .contains("Successfully created 1 'IPPool' resource(s)")
    );
    let err = store.fails(&["create", "-f", "-"], POOL);
    assert!(err.contains("already exists"), "{err}");
    assert!(
        store
            .ctl_stdin(&["create", "--skip-exists", "-f", "-"], POOL)
            .status
            .success()
    );
    let other = POOL
        .replace("default-ipv4-ippool", "other")
        .replace("198.18.0.0/16", "198.19.0.0/16");
    let err = store.fails(&["replace", "-f", "-"], &other);
    assert!(err.contains("not found"), "{err}");
    // Overlapping another pool is refused.
    let overlap = POOL
        .replace("default-ipv4-ippool", "overlap")
        .replace("198.18.0.0/16", "198.18.128.0/17");
    let err = store.fails(&["apply", "-f", "-"], &overlap);
    assert!(err.contains("spec.cidr"), "{err}");
    store.ok(&["delete", "ippool", "default-ipv4-ippool"]);
    let err = store.fails(&["delete", "ippool", "default-ipv4-ippool"], "");
    assert!(err.contains("not found"), "{err}");
    store.ok(&[
        "delete",
        "ippool",
        "default-ipv4-ippool",
        "--skip-not-exists",
    ]);
    let err = store.fails(&["get", "nosuchkind"], "");
    assert!(err.contains("unknown resource type"), "{err}");
}
