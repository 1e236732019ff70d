//! tabbyctl against a Kubernetes cluster (the test API server): through KUBECONFIG, and with
//! the in-cluster config (service-account token and CA where a pod has them, HTTPS).

use std::process::{Command, Output};

use testapi::TestCluster as Cluster;

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "tabbyctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const POOL: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 198.18.0.0/16
  ipipMode: Always
  natOutgoing: true
";

#[test]
fn tabbyctl_manages_a_cluster_through_kubeconfig() {
    let cluster = Cluster::start("kubeconfig", testapi::Options::default());
    let ctl = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tabbyctl"));
        cmd.args(["--datastore", "kubernetes"])
            .args(args)
            .env_remove("TABBY_DATASTORE")
            .env("KUBECONFIG", cluster.kubeconfig())
            .env_remove("KUBERNETES_SERVICE_HOST");
        match stdin {
            None => cmd.output().unwrap(),
            Some(text) => {
                use std::io::Write;
                let mut child = cmd
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(text.as_bytes())
                    .unwrap();
                child.wait_with_output().unwrap()
            }
        }
    };
    ok(ctl(&["apply", "-f", "-"], Some(POOL)));
    // The pool is the custom resource Calico would have written.
    let stored = cluster
        .server()
        .get_object("/apis/crd.projectcalico.org/v1/ippools/pool-a")
        .expect("the pool in crd.projectcalico.org/v1");
    assert_eq!(stored["spec"]["ipipMode"], "Always");
    // Switching the pool to CrossSubnet, as an operator does with calicoctl.
    ok(ctl(
        &[
            "patch",
            "ippool",
            "pool-a",
            "-p",
            r#"{"spec":{"ipipMode":"CrossSubnet"}}"#,
        ],
        None,
    ));
    let stored = cluster
        .server()
        .get_object("/apis/crd.projectcalico.org/v1/ippools/pool-a")
        .unwrap();
    assert_eq!(stored["spec"]["ipipMode"], "CrossSubnet");
    let listed = ok(ctl(&["get", "ippools", "-o", "wide"], None));
    assert!(
        listed.contains("pool-a") && listed.contains("CrossSubnet"),
        "{listed}"
    );
    let usage = ok(ctl(&["ipam", "show"], None));
    assert!(usage.contains("198.18.0.0/16"), "{usage}");
    ok(ctl(&["delete", "ippool", "pool-a"], None));
    assert!(
        cluster
            .server()
            .get_object("/apis/crd.projectcalico.org/v1/ippools/pool-a")
            .is_none()
    );
}

/// In a pod, tabbyctl (like tabby-node) finds the API server from KUBERNETES_SERVICE_HOST/PORT
/// and authenticates with the service account's token, trusting its CA. The test mounts a
/// service-account directory where a pod has it, in a mount namespace of its own.
#[test]
fn tabbyctl_uses_the_in_cluster_config() {
    let cluster = Cluster::start(
        "incluster",
        testapi::Options {
            tls: true,
            token: Some("in-cluster-token".into()),
            ..Default::default()
        },
    );
    cluster
        .server()
        .put_object(
            "/apis/crd.projectcalico.org/v1/ippools/seen-in-cluster",
            serde_json::json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                "metadata": {"name": "seen-in-cluster"},
                "spec": {"cidr": "198.19.0.0/16"}}),
        )
        .unwrap();
    // /var/run is /run: the pod's /var/run/secrets/kubernetes.io/serviceaccount.
    let run = cluster.dir().join("run");
    cluster
        .server()
        .write_service_account_dir(
            &run.join("secrets/kubernetes.io/serviceaccount"),
            "kube-system",
        )
        .unwrap();
    let in_pod = |token_ok: bool| {
        if !token_ok {
            std::fs::write(
                run.join("secrets/kubernetes.io/serviceaccount/token"),
                "wrong-token",
            )
            .unwrap();
        }
        let script = format!(
            "mount --bind {} /run && exec {} --datastore kubernetes get ippools -o json",
            run.display(),
            env!("CARGO_BIN_EXE_tabbyctl")
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env_remove("KUBECONFIG")
            .env_remove("TABBY_DATASTORE")
            .env("HOME", cluster.dir());
        for (k, v) in cluster.server().incluster_env() {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let listed = ok(in_pod(true));
    assert!(listed.contains("seen-in-cluster"), "{listed}");
    let refused = in_pod(false);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("401") || stderr.contains("Unauthorized"),
        "{stderr}"
    );
}
