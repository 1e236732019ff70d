//! The IPAM plugin exec'd as a runtime does, with Calico's `datastore_type: kubernetes` and a
//! kubeconfig, against the test API server that lets the token do exactly what the chart's
//! ClusterRole grants: addresses come from IPAM objects in the cluster and go back on DEL.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use testapi::TestCluster;

/// The test API server, with a token that may do only what the chart's ClusterRole grants, and
/// the pool an operator created (seeded: the chart's role may not create pools' specs).
fn cluster() -> TestCluster {
    let cluster = TestCluster::start(
        "cni",
        testapi::Options {
            token: Some("tabby-node-token".into()),
            rbac: Some(testapi::harness::chart_rules()),
            ..Default::default()
        },
    );
    cluster
        .server()
        .put_object(
            "/apis/crd.projectcalico.org/v1/ippools/default-ipv4-ippool",
            json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                "metadata": {"name": "default-ipv4-ippool"},
                "spec": {"cidr": "198.18.0.0/16", "blockSize": 26}}),
        )
        .unwrap();
    cluster
}

fn conf(cluster: &TestCluster) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "tabby",
        "ipam": {"type": "tabby-ipam"},
        "nodename": "n1",
        "datastore_type": "kubernetes",
        "kubernetes": {"kubeconfig": cluster.kubeconfig()},
        "state_dir": cluster.dir().join("state"),
    })
}

fn ipam(command: &str, container: &str, conf: &Value) -> (i32, Value) {
    let plugin = Path::new(env!("CARGO_BIN_EXE_tabby-ipam"));
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", "/var/run/netns/unused")
        .env("CNI_PATH", plugin.parent().unwrap())
        .env(
            "CNI_ARGS",
            format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-{container}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    };
    let code = out.status.code().unwrap_or(-1);
    if code != 0 {
        eprintln!("{command}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (code, value)
}

#[test]
fn ipam_plugin_allocates_and_releases_through_the_kubernetes_api() {
    let cluster = cluster();
    let conf = conf(&cluster);
    let mut addresses = Vec::new();
    for c in ["c1", "c2", "c3"] {
        let (code, result) = ipam("ADD", c, &conf);
        assert_eq!(code, 0, "ADD {c}: {result}");
        let ip = result["ips"][0]["address"].as_str().unwrap().to_string();
        assert!(ip.starts_with("198.18."), "{ip}");
        addresses.push(ip);
    }
    addresses.sort();
    addresses.dedup();
    assert_eq!(
        addresses.len(),
        3,
        "three different addresses: {addresses:?}"
    );
    // The allocations are IPAM objects in the cluster, where Calico keeps them.
    let handle = cluster
        .server()
        .get_object("/apis/crd.projectcalico.org/v1/ipamhandles/k8s-pod-network.c1")
        .expect("the handle of c1");
    assert_eq!(handle["kind"], "IPAMHandle");
    // The block holding c1's address is affine to n1 (Calico's names: dots and slash as dashes).
    let ip: std::net::Ipv4Addr = addresses[0].split('/').next().unwrap().parse().unwrap();
    let o = ip.octets();
    let name = format!("n1-{}-{}-{}-{}-26", o[0], o[1], o[2], o[3] & 0xc0);
    let affinity = cluster
        .server()
        .get_object(&format!(
            "/apis/crd.projectcalico.org/v1/blockaffinities/{name}"
        ))
        .unwrap_or_else(|| panic!("n1 holds an affinity {name}"));
    assert_eq!(affinity["spec"]["node"], "n1");
    assert_eq!(affinity["spec"]["state"], "confirmed");
    for c in ["c1", "c2", "c3"] {
        let (code, result) = ipam("DEL", c, &conf);
        assert_eq!(code, 0, "DEL {c}: {result}");
    }
    assert!(
        cluster
            .server()
            .get_object("/apis/crd.projectcalico.org/v1/ipamhandles/k8s-pod-network.c1")
            .is_none(),
        "DEL releases the handle"
    );
    // DEL again is fine (the runtime may repeat it).
    assert_eq!(ipam("DEL", "c1", &conf).0, 0);
}

#[test]
fn an_unknown_datastore_type_is_a_config_error() {
    let cluster = cluster();
    let mut conf = conf(&cluster);
    conf["datastore_type"] = json!("etcdv3");
    let (code, result) = ipam("ADD", "bad", &conf);
    assert_ne!(code, 0);
    assert_eq!(
        result["code"], 7,
        "CNI error 7, invalid network config: {result}"
    );
    assert!(
        result["msg"].as_str().unwrap().contains("datastore_type")
            || result["details"]
                .as_str()
                .unwrap_or_default()
                .contains("datastore_type"),
        "{result}"
    );
}
