//! The test API server as other crates' tests use it: started with tabby's CRDs (from
//! `charts/tabby/crds`) on a tokio runtime of its own, so a plain `#[test]` or an async one can
//! hold it, with a kubeconfig written for it; optionally listening inside a network namespace,
//! where a test's nodes reach it; and the chart's ClusterRole rules, so a test can give the
//! token exactly what tabby is granted in a cluster.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Options, PolicyRule, Server};

/// The chart's CRD directory (generated from the api types; see `testapi/tests/crds.rs`).
pub fn crd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/tabby/crds")
}

/// The rules of the chart's ClusterRole (the template's `rules:` part, which has no Helm
/// directives; `tests/tests/chart.rs` checks the rendered role is exactly this).
pub fn chart_rules() -> Vec<PolicyRule> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/tabby/templates/clusterrole.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let rules = &text[text
        .find("\nrules:")
        .expect("the chart's ClusterRole has rules")..];
    crate::rbac::rules_from_manifest(&format!("kind: ClusterRole{rules}"))
        .expect("the chart's ClusterRole rules parse")
}

/// A running test API server with tabby's CRDs, a scratch directory and a kubeconfig in it.
/// Dropping it stops the server and removes the directory.
pub struct TestCluster {
    server: Option<Server>,
    runtime: Option<tokio::runtime::Runtime>,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl TestCluster {
    /// A server on 127.0.0.1 (unless `options.listen` says otherwise).
    pub fn start(tag: &str, options: Options) -> TestCluster {
        TestCluster::start_in(tag, options, None)
    }

    /// A server whose listening socket is made inside the network namespace at `netns`
    /// (`/run/netns/NAME`): clients in that namespace, or routed to it, reach it there.
    pub fn start_in_netns(tag: &str, options: Options, netns: &Path) -> TestCluster {
        TestCluster::start_in(tag, options, Some(netns))
    }

    fn start_in(tag: &str, options: Options, netns: Option<&Path>) -> TestCluster {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tabby-testapi-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("building the server's runtime");
        // A thread of its own: blocking on our runtime works from inside a test's runtime too,
        // and joining a network namespace affects only that thread (and the socket it binds).
        let server = std::thread::scope(|s| {
            s.spawn(|| {
                if let Some(path) = netns {
                    let f = std::fs::File::open(path)
                        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
                    // SAFETY: setns on this short-lived thread only.
                    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "joining {}", path.display());
                }
                runtime.block_on(Server::start(options))
            })
            .join()
            .expect("the server thread")
            .expect("starting the test API server")
        });
        let n = server
            .register_crds_from_dir(&crd_dir())
            .expect("registering tabby's CRDs from charts/tabby/crds");
        assert_eq!(n, 9, "charts/tabby/crds holds the nine CRDs");
        let kubeconfig = dir.join("kubeconfig");
        server
            .write_kubeconfig(&kubeconfig)
            .expect("writing the kubeconfig");
        TestCluster {
            server: Some(server),
            runtime: Some(runtime),
            dir,
            kubeconfig,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("the server runs until drop")
    }

    /// The scratch directory, removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kubeconfig for the server (token and CA included when the options have them).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The datastore spec for this cluster: `kubernetes:KUBECONFIG`.
    pub fn spec(&self) -> String {
        format!("kubernetes:{}", self.kubeconfig.display())
    }

    /// Runs `f` on the cluster's runtime, from any thread or runtime, and waits for it.
    pub fn run<F, T>(&self, f: F) -> T
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let handle = self
            .runtime
            .as_ref()
            .expect("the runtime runs until drop")
            .handle()
            .clone();
        std::thread::scope(|s| s.spawn(move || handle.block_on(f)).join())
            .expect("the task ran to completion")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        drop(self.server.take());
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
