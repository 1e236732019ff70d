//! Authentication (bearer token), authorization (RBAC rules), TLS, client configuration
//! files and the `tabby-test-apiserver` binary.

use std::io::BufRead;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use serde_json::json;
use testapi::client::Client;
use testapi::{Options, PolicyRule, Server};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("testapi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// "Authenticating" (bearer tokens): a request without the token, or with another, is 401
/// with an Unauthorized Status; with it, the request goes through.
#[tokio::test]
async fn bearer_token_is_required() {
    let server = Server::start(Options {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let anonymous = Client::new(server.addr());
    let r = anonymous.get("/api/v1/nodes").await.unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );
    assert_eq!(
        Client::new(server.addr())
            .with_token("wrong")
            .get("/api/v1/nodes")
            .await
            .unwrap()
            .status,
        401
    );
    assert_eq!(anonymous.get("/version").await.unwrap().status, 401);
    let ok = Client::new(server.addr()).with_token("s3cret");
    assert_eq!(ok.get("/api/v1/nodes").await.unwrap().status, 200);
    assert_eq!(ok.get("/version").await.unwrap().json()["major"], "1");
}

/// "Using RBAC Authorization": a request is allowed only if a rule matches its verb, API
/// group and resource (subresources as `resource/subresource`), and its name when the rule
/// has resourceNames (list/watch name an object through a `metadata.name` field selector).
/// Denials are 403 Forbidden with the authorizer's message.
#[tokio::test]
async fn rbac_rules_limit_the_token() {
    let rules = vec![
        PolicyRule::new(&[""], &["nodes"], &["get", "list", "watch"]),
        PolicyRule::new(&[""], &["nodes"], &["patch", "update"]).with_names(&["n1"]),
        PolicyRule::new(&[""], &["pods/status"], &["patch"]),
        PolicyRule::new(&["crd.projectcalico.org"], &["*"], &["*"]),
        PolicyRule::new(&[""], &["pods"], &["list"]).with_names(&["p1"]),
    ];
    let server = Server::start(Options {
        token: Some("t".into()),
        rbac: Some(rules),
        ..Default::default()
    })
    .await
    .unwrap();
    server
        .put_object("/api/v1/nodes/n1", json!({"metadata": {"name": "n1"}}))
        .unwrap();
    server
        .put_object("/api/v1/nodes/n2", json!({"metadata": {"name": "n2"}}))
        .unwrap();
    server
        .put_object(
            "/api/v1/namespaces/ns/pods/p1",
            json!({"metadata": {"name": "p1"}}),
        )
        .unwrap();
    let c = Client::new(server.addr()).with_token("t");
    let patch = json!({"metadata": {"labels": {"a": "b"}}});

    assert_eq!(c.get("/api/v1/nodes").await.unwrap().status, 200);
    assert_eq!(c.get("/api/v1/nodes/n2").await.unwrap().status, 200);
    assert_eq!(
        c.patch("/api/v1/nodes/n1", "application/merge-patch+json", &patch)
            .await
            .unwrap()
            .status,
        200
    );
    let r = c
        .patch("/api/v1/nodes/n2", "application/merge-patch+json", &patch)
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "nodes \"n2\" is forbidden: User \"system:serviceaccount:kube-system:tabby\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope",
               "reason": "Forbidden", "details": {"name": "n2", "kind": "nodes"}, "code": 403})
    );
    let r = c
        .post("/api/v1/nodes", &json!({"metadata": {"name": "n3"}}))
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["message"],
        "nodes is forbidden: User \"system:serviceaccount:kube-system:tabby\" cannot create resource \"nodes\" in API group \"\" at the cluster scope"
    );

    // Subresources are separate resources.
    let status = json!({"status": {"phase": "Running"}});
    assert_eq!(
        c.patch(
            "/api/v1/namespaces/ns/pods/p1/status",
            "application/merge-patch+json",
            &status
        )
        .await
        .unwrap()
        .status,
        200
    );
    let r = c
        .patch(
            "/api/v1/namespaces/ns/pods/p1",
            "application/merge-patch+json",
            &status,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .ends_with("in the namespace \"ns\"")
    );

    // resourceNames and list: only with a field selector naming the object.
    assert_eq!(
        c.get("/api/v1/namespaces/ns/pods").await.unwrap().status,
        403
    );
    assert_eq!(
        c.get("/api/v1/namespaces/ns/pods?fieldSelector=metadata.name%3Dp1")
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        c.get("/api/v1/namespaces/ns/pods?fieldSelector=metadata.name%3Dp2")
            .await
            .unwrap()
            .status,
        403
    );

    // Wildcards; discovery is open to every authenticated client.
    assert_eq!(
        c.get("/apis/crd.projectcalico.org/v1/ippools")
            .await
            .unwrap()
            .status,
        404,
        "allowed, but not registered"
    );
    assert_eq!(c.get("/apis").await.unwrap().status, 200);
    assert_eq!(c.get("/api/v1/namespaces").await.unwrap().status, 403);
}

/// `rbac::rules_from_manifest` reads the rules of the ClusterRoles in a manifest, so a test
/// can run with exactly what the chart grants.
#[tokio::test]
async fn rules_from_a_cluster_role_manifest() {
    let manifest = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: tabby-node\nrules:\n\
                    - apiGroups: [\"\"]\n  resources: [nodes]\n  verbs: [get, list, watch]\n";
    let rules = testapi::rbac::rules_from_manifest(manifest).unwrap();
    let server = Server::start(Options {
        token: Some("t".into()),
        rbac: Some(rules),
        ..Default::default()
    })
    .await
    .unwrap();
    let c = Client::new(server.addr()).with_token("t");
    assert_eq!(c.get("/api/v1/nodes").await.unwrap().status, 200);
    assert_eq!(c.get("/api/v1/pods").await.unwrap().status, 403);
}

/// TLS with a generated CA: the kubeconfig carries the server URL, the CA as
/// certificate-authority-data and the token ("Organizing Cluster Access Using kubeconfig
/// Files"), and kube, verifying the certificate for 127.0.0.1, talks to the server through
/// it. The service-account directory holds token, ca.crt and namespace ("Accessing the
/// Kubernetes API from a Pod").
#[tokio::test]
async fn tls_kubeconfig_and_service_account_files_work_with_kube() {
    let server = Server::start(Options {
        tls: true,
        token: Some("tok".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(server.url().starts_with("https://127.0.0.1:"));
    server
        .put_object("/api/v1/nodes/n1", json!({"metadata": {"name": "n1"}}))
        .unwrap();
    let dir = temp_dir("tls");
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();

    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let nodes: Api<Node> = Api::all(client);
    let list = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("n1"));

    // Plain HTTP on the TLS port gets no API answer.
    let plain = Client::new(server.addr()).with_token("tok");
    let r = tokio::time::timeout(Duration::from_secs(5), plain.get("/api/v1/nodes"))
        .await
        .unwrap();
    assert!(r.map(|r| r.status != 200).unwrap_or(true));

    let sa = dir.join("serviceaccount");
    server
        .write_service_account_dir(&sa, "kube-system")
        .unwrap();
    assert_eq!(std::fs::read_to_string(sa.join("token")).unwrap(), "tok");
    assert_eq!(
        std::fs::read_to_string(sa.join("namespace")).unwrap(),
        "kube-system"
    );
    let ca = std::fs::read_to_string(sa.join("ca.crt")).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(Some(ca.as_str()), server.ca_pem());
    let env = server.incluster_env();
    assert_eq!(env[0], ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_string()));
    assert_eq!(env[1].1, server.addr().port().to_string());
    std::fs::remove_dir_all(&dir).unwrap();

    // Without TLS there is no service-account directory to write.
    let plain_server = Server::start(Options::default()).await.unwrap();
    assert!(
        plain_server
            .write_service_account_dir(&temp_dir("nosa"), "x")
            .is_err()
    );
}

/// The binary prints its URL on stdout, writes a kubeconfig, loads CRDs from a directory,
/// wants the token, and serves until killed.
#[tokio::test]
async fn the_binary_serves_until_killed() {
    let dir = temp_dir("bin");
    let crds = dir.join("crds");
    std::fs::create_dir_all(&crds).unwrap();
    std::fs::write(
        crds.join("ippools.yaml"),
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: ippools.crd.projectcalico.org\n\
         spec:\n  group: crd.projectcalico.org\n  scope: Cluster\n  names: {kind: IPPool, plural: ippools}\n\
         \x20 versions: [{name: v1, served: true, storage: true}]\n",
    )
    .unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tabby-test-apiserver"))
        .args(["--listen", "127.0.0.1:0", "--token", "bin-token", "--crds"])
        .arg(&crds)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let addr = url.trim_start_matches("http://").parse().unwrap();
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains(&url) && text.contains("bin-token"), "{text}");

    let c = Client::new(addr).with_token("bin-token");
    let r = c
        .get("/apis/crd.projectcalico.org/v1/ippools")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["kind"], "IPPoolList");
    assert_eq!(
        Client::new(addr)
            .get("/apis/crd.projectcalico.org/v1/ippools")
            .await
            .unwrap()
            .status,
        401
    );

    child.kill().unwrap();
    child.wait().unwrap();
    assert!(Client::new(addr).get("/version").await.is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
