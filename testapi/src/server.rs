//! The server: options, the listening task, and the test-facing handle.
//!
//! ```text
//!   Server::start ──spawns──▶ accept task ──one task per connection──▶ hyper http1
//!                                  │ (TLS handshake first, if on)         │
//!                                  ▼                                      ▼
//!                             JoinSet of connections              http::handle(Shared)
//!                                                                        │
//!   Server (handle) ───────── Arc<Shared> { Mutex<Store>, Options } ◀────┘
//! ```
//! Dropping the [`Server`] aborts the accept task, whose JoinSet aborts every connection
//! (watch streams included).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::rbac::PolicyRule;
use crate::route::{self, Route};
use crate::status::ApiError;
use crate::store::Store;
use crate::{Error, crd, http, kubeconfig, rest, tls};

/// How to run the server. `Options::default()` is plain HTTP on 127.0.0.1, a free port, no
/// authentication, 1 s bookmarks, unlimited history.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on (default `127.0.0.1:0`, a free port).
    pub listen: SocketAddr,
    /// Interval between watch bookmarks (default 1 s; real apiservers send one about every
    /// minute).
    pub bookmark_interval: Duration,
    /// Bearer token every request must carry (401 Unauthorized otherwise).
    pub token: Option<String>,
    /// Serve HTTPS with a certificate from a CA generated at start.
    pub tls: bool,
    /// If set, the token may do only what these rules allow (403 Forbidden otherwise).
    pub rbac: Option<Vec<PolicyRule>>,
    /// The user name 403 messages name (default `system:serviceaccount:kube-system:tabby`).
    pub user: String,
    /// Keep at most this many revisions of history; older ones are compacted away as the
    /// writes go (default: keep everything until [`Server::compact`]).
    pub history_limit: Option<usize>,
    /// How many revisions a watcher may fall behind before it is closed (default 10,000).
    pub watch_buffer: usize,
    /// End every watch after at most this long, whatever `timeoutSeconds` asked for (real
    /// apiservers end watches after `--min-request-timeout`, 30–60 min by default); clients must
    /// watch again from the last revision they saw. Default: no cap.
    pub max_watch_timeout: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            bookmark_interval: Duration::from_secs(1),
            token: None,
            tls: false,
            rbac: None,
            user: "system:serviceaccount:kube-system:tabby".into(),
            history_limit: None,
            watch_buffer: 10_000,
            max_watch_timeout: None,
        }
    }
}

/// What every connection shares.
pub struct Shared {
    /// The store, behind the one write lock.
    pub store: Mutex<Store>,
    /// The options the server was started with.
    pub options: Options,
    /// The address actually bound.
    pub addr: SocketAddr,
}

/// A running server. Dropping it stops it.
pub struct Server {
    shared: Arc<Shared>,
    ca_pem: Option<String>,
    task: Option<JoinHandle<()>>,
}

async fn serve_connection<I>(io: I, shared: Arc<Shared>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| http::handle(shared.clone(), req));
    if let Err(e) = http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tls: Option<TlsAcceptor>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let tls = tls.clone();
                    connections.spawn(async move {
                        match tls {
                            Some(acceptor) => match acceptor.accept(stream).await {
                                Ok(stream) => serve_connection(stream, shared).await,
                                Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                            },
                            None => serve_connection(stream, shared).await,
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn api_error(path: &str, status: ApiError) -> Error {
    Error::Api {
        path: path.to_string(),
        status: Box::new(status),
    }
}

impl Server {
    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(options: Options) -> Result<Server, Error> {
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: options.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: options.listen,
            source,
        })?;
        let (ca_pem, acceptor) = if options.tls {
            let t = tls::generate(addr.ip())?;
            (Some(t.ca_pem), Some(t.acceptor))
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(options.watch_buffer, options.history_limit)),
            options,
            addr,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone(), acceptor));
        Ok(Server {
            shared,
            ca_pem,
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.shared.addr)
    }

    /// The bearer token clients must send, if any.
    pub fn token(&self) -> Option<&str> {
        self.shared.options.token.as_deref()
    }

    /// The CA certificate (PEM) that signed the server certificate, when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Writes a kubeconfig for this server: its URL, the token if any, the CA if TLS.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        kubeconfig::write_kubeconfig(path, &self.url(), self.token(), self.ca_pem())
    }

    /// Writes an in-cluster service-account directory (`token`, `ca.crt`, `namespace`), as
    /// mounted at `/var/run/secrets/kubernetes.io/serviceaccount`. Needs TLS and a token.
    pub fn write_service_account_dir(&self, dir: &Path, namespace: &str) -> Result<(), Error> {
        match (self.token(), self.ca_pem()) {
            (Some(token), Some(ca)) => {
                kubeconfig::write_service_account_dir(dir, token, ca, namespace)
            }
            _ => Err(Error::Tls(
                "a service-account directory needs a server started with tls and a token".into(),
            )),
        }
    }

    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` for in-cluster clients.
    pub fn incluster_env(&self) -> [(&'static str, String); 2] {
        [
            ("KUBERNETES_SERVICE_HOST", self.shared.addr.ip().to_string()),
            (
                "KUBERNETES_SERVICE_PORT",
                self.shared.addr.port().to_string(),
            ),
        ]
    }

    /// The current revision (the resourceVersion of the last write).
    pub fn revision(&self) -> u64 {
        self.shared.store.lock().expect("store lock").revision()
    }

    /// etcd-style compaction: forgets history at or below `keep_after_revision`. Watches from
    /// and continue tokens at older revisions get 410 Expired afterwards.
    pub fn compact(&self, keep_after_revision: u64) {
        self.shared
            .store
            .lock()
            .expect("store lock")
            .compact(keep_after_revision);
    }

    /// Creates or replaces the object at `path` (e.g. `/api/v1/namespaces/default/pods/p`)
    /// unconditionally and as given, status included: a test seed that bypasses
    /// authentication and the status rules. Returns the stored object.
    pub fn put_object(&self, path: &str, object: Value) -> Result<Value, Error> {
        let (ty, ns, name) = self.object_path(path)?;
        let mut store = self.shared.store.lock().expect("store lock");
        rest::put(&mut store, &ty, ns.as_deref(), &name, object).map_err(|e| api_error(path, e))
    }

    /// The object at `path`, if it exists.
    pub fn get_object(&self, path: &str) -> Option<Value> {
        let (ty, ns, name) = self.object_path(path).ok()?;
        let store = self.shared.store.lock().expect("store lock");
        rest::get(&store, &ty, ns.as_deref(), &name).ok()
    }

    /// Deletes the object at `path`; returns its last state.
    pub fn delete_object(&self, path: &str) -> Result<Value, Error> {
        let (ty, ns, name) = self.object_path(path)?;
        let mut store = self.shared.store.lock().expect("store lock");
        let old = rest::get(&store, &ty, ns.as_deref(), &name).map_err(|e| api_error(path, e))?;
        rest::delete(&mut store, &ty, ns.as_deref(), &name, &Value::Null)
            .map_err(|e| api_error(path, e))?;
        Ok(old)
    }

    /// Registers a CustomResourceDefinition (creating or replacing the CRD object).
    pub fn register_crd(&self, crd: Value) -> Result<(), Error> {
        let name = crate::object::meta_str(&crd, "name").to_string();
        self.put_object(
            &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"),
            crd,
        )
        .map(drop)
    }

    /// Registers every CRD in the `*.yaml` / `*.yml` / `*.json` files of `dir`
    /// (multi-document YAML allowed); returns how many.
    pub fn register_crds_from_dir(&self, dir: &Path) -> Result<usize, Error> {
        let crds = crd::load_dir(dir)?;
        let n = crds.len();
        for c in crds {
            self.register_crd(c)?;
        }
        Ok(n)
    }

    /// Stops serving: closes the listener and every connection.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn object_path(
        &self,
        path: &str,
    ) -> Result<(Arc<crate::resources::ResourceType>, Option<String>, String), Error> {
        let not_an_object = || Error::Path(path.to_string());
        let Route::Resource(r) = route::parse("PUT", path, false) else {
            return Err(not_an_object());
        };
        let name = r.name.clone().ok_or_else(not_an_object)?;
        if r.subresource.is_some() {
            return Err(not_an_object());
        }
        let ty = self
            .shared
            .store
            .lock()
            .expect("store lock")
            .registry
            .get(&r.group, &r.version, &r.resource)
            .ok_or_else(|| api_error(path, ApiError::unknown_resource()))?;
        if ty.namespaced != r.namespace.is_some() {
            return Err(not_an_object());
        }
        Ok((ty, r.namespace, name))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
