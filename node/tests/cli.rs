//! The binary refuses bad settings before touching anything, naming the setting.

use std::process::Command;

fn tabby_node(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tabby-node"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("NODENAME")
        .env_remove("IP_AUTODETECTION_METHOD")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BASE: &[&str] = &[
    "--node-name",
    "n1",
    "--datastore",
    "memory:",
    "--ip",
    "192.0.2.99/24",
    "--underlay-dev",
    "lo",
];

#[test]
fn bad_pool_settings_stop_the_node() {
    for (k, v) in [
        ("CALICO_IPV4POOL_CIDR", "198.18.0.1/16"),
        ("CALICO_IPV4POOL_VXLAN", "Sometimes"),
        ("AS", "not-a-number"),
    ] {
        let (code, err) = tabby_node(BASE, &[(k, v)]);
        assert_eq!(code, 1, "{k}={v}: {err}");
        assert!(err.contains(k), "{k}={v}: {err}");
    }
}

#[test]
fn bad_autodetection_method_stops_the_node() {
    let (code, err) = tabby_node(
        &[
            "--node-name",
            "n1",
            "--datastore",
            "memory:",
            "--ip-autodetection-method",
            "interface=(eth",
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("interface=(eth"), "{err}");
}

#[test]
fn an_address_no_interface_holds_needs_an_underlay_device() {
    let (code, err) = tabby_node(
        &[
            "--node-name",
            "n1",
            "--datastore",
            "memory:",
            "--ip",
            "203.0.113.77/24",
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--underlay-dev"), "{err}");
}
