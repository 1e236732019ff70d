//! What the KDD tests add to [`testapi::TestCluster`]: a kube client and pods.

#![allow(dead_code)]

use serde_json::{Value, json};
pub use testapi::TestCluster as Cluster;

/// A fresh API server with tabby's CRDs.
pub fn cluster(tag: &str) -> Cluster {
    Cluster::start(tag, testapi::Options::default())
}

/// A kube client for `cluster` (made on the cluster's runtime).
pub fn client(cluster: &Cluster) -> kube::Client {
    let path = cluster.kubeconfig().to_path_buf();
    cluster.run(async move {
        let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    })
}

/// Creates a pod `namespace/name` through the API, scheduled on `node` if given.
pub fn create_pod(cluster: &Cluster, namespace: &str, name: &str, node: Option<&str>) -> Value {
    let client = client(cluster);
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    let namespace = namespace.to_string();
    cluster.run(async move {
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(client, &namespace);
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).unwrap();
        let created = api
            .create(&Default::default(), &pod)
            .await
            .expect("create pod");
        serde_json::to_value(created).unwrap()
    })
}
