//! A test cluster: the test API server with tabby's CRDs, run on a runtime of its own (so that
//! any test, sync or async, can hold one), and a kubeconfig pointing at it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde_json::{Value, json};

/// A scratch directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("tabby-kdd-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The chart's CRD directory.
pub fn crd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/tabby/crds")
}

pub struct Cluster {
    pub dir: TempDir,
    pub kubeconfig: PathBuf,
    pub url: String,
    server: testapi::Server,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Cluster {
    /// A fresh API server with tabby's CRDs from charts/tabby/crds.
    pub fn start(tag: &str) -> Cluster {
        Cluster::start_with(tag, testapi::Options::default())
    }

    pub fn start_with(tag: &str, options: testapi::Options) -> Cluster {
        let dir = TempDir::new(tag);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let kubeconfig = dir.0.join("kubeconfig");
        // Blocking on our runtime from a thread of its own works from inside a test's runtime too.
        let server = std::thread::scope(|s| {
            s.spawn(|| {
                runtime.block_on(async {
                    let server = testapi::Server::start(options)
                        .await
                        .expect("start the API server");
                    let n = server
                        .register_crds_from_dir(&crd_dir())
                        .expect("register tabby's CRDs from charts/tabby/crds");
                    assert_eq!(n, 9, "charts/tabby/crds holds the nine CRDs");
                    server.write_kubeconfig(&kubeconfig).unwrap();
                    server
                })
            })
            .join()
            .expect("the API server started")
        });
        let url = server.url().to_string();
        Cluster {
            dir,
            kubeconfig,
            url,
            server,
            runtime: Some(runtime),
        }
    }

    pub fn server(&self) -> &testapi::Server {
        &self.server
    }

    /// The `TABBY_DATASTORE` / `--datastore` spec for this cluster.
    pub fn spec(&self) -> String {
        format!("kubernetes:{}", self.kubeconfig.display())
    }

    /// Runs `f` on the cluster's own runtime, from any thread or runtime.
    pub fn run<F, T>(&self, f: F) -> T
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let handle = self.runtime.as_ref().unwrap().handle().clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(handle.block_on(f));
        });
        rx.recv().expect("the cluster's runtime ran the task")
    }

    /// A kube client for this cluster (made on the cluster's runtime).
    pub fn client(&self) -> kube::Client {
        let path = self.kubeconfig.clone();
        self.run(async move {
            let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            kube::Client::try_from(config).unwrap()
        })
    }

    /// Creates a pod `namespace/name` scheduled on `node` (as the scheduler would have).
    pub fn create_pod(&self, namespace: &str, name: &str, node: Option<&str>) -> Value {
        let client = self.client();
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
        self.run(async move {
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
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
