//! A Kubernetes API server for tests: the subset of the API that tabby's Kubernetes datastore
//! backend (kube + k8s-openapi) relies on, with the semantics the Kubernetes documentation
//! gives it ("Kubernetes API Concepts", <https://kubernetes.io/docs/reference/using-api/api-concepts/>).
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), testapi::Error> {
//! let server = testapi::Server::start(testapi::Options {
//!     tls: true,
//!     token: Some("secret".into()),
//!     ..Default::default()
//! })
//! .await?;
//! server.register_crds_from_dir(std::path::Path::new("charts/tabby/crds"))?;
//! server.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! // … point a client at server.url() …
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! - [`Server::start`]`(`[`Options`]`)` binds (127.0.0.1, a free port by default) and serves
//!   on the current tokio runtime; dropping the [`Server`] or [`Server::shutdown`] stops it.
//! - [`Server::url`], [`Server::write_kubeconfig`], [`Server::ca_pem`],
//!   [`Server::write_service_account_dir`], [`Server::incluster_env`]: client configuration.
//! - [`Server::revision`], [`Server::compact`]: the global revision and etcd-style compaction.
//! - [`Server::put_object`], [`Server::get_object`], [`Server::delete_object`]: test seeds
//!   and checks that bypass HTTP.
//! - [`Server::register_crd`], [`Server::register_crds_from_dir`]: CustomResourceDefinitions
//!   (also registered by POSTing them to `/apis/apiextensions.k8s.io/v1/customresourcedefinitions`).
//! - [`Options`]: bookmark interval, bearer token, TLS, RBAC rules ([`PolicyRule`],
//!   [`rbac::rules_from_manifest`]), history limit, watcher buffer.
//! - [`client::Client`]: a raw HTTP/1.1 client for tests that check the wire.
//! - The `tabby-test-apiserver` binary runs one from the command line.
//!
//! # What is served
//!
//! - Core v1 `nodes`, `namespaces` (cluster-scoped) and `pods` (namespaced; `/api/v1/pods`
//!   lists and watches all namespaces), each with a `/status` subresource.
//! - `apiextensions.k8s.io/v1` `customresourcedefinitions`, and the custom resources they
//!   define (cluster-scoped or namespaced, every served version, `/status` where declared).
//! - `/version`, `/healthz`, and minimal discovery (`/api`, `/api/v1`, `/apis`, …).
//!
//! # Semantics
//!
//! - One global revision for every resource, like etcd's; each successful write takes the
//!   next one, failed writes none, an update that changes nothing keeps the old one.
//! - Create, get, update (PUT, with resourceVersion compare-and-swap), patch (merge, JSON,
//!   strategic-as-merge), delete (with uid / resourceVersion preconditions),
//!   deletecollection; errors are `metav1.Status` objects with the apiserver's reasons,
//!   codes and wording. See [`rest`], [`object`], [`patch`], [`status`].
//! - Lists with label and field selectors, `limit`/`continue` pages all served at the first
//!   page's revision, `resourceVersion`/`resourceVersionMatch`. See [`list`].
//! - Watches from a revision, from "now" with synthetic ADDED events, with bookmarks,
//!   timeouts, selectors, streaming lists (`sendInitialEvents`), and 410 for compacted
//!   revisions. See [`watch`].
//!
//! # Simplifications
//!
//! - Namespaces need not exist for namespaced objects to be created in them, and deleting a
//!   namespace deletes only the namespace object (no finalization, no cascading).
//! - Deletion is immediate: finalizers, grace periods, owner references and garbage
//!   collection are not honoured; `propagationPolicy` and `dryRun` are ignored.
//! - No server-side apply (`application/apply-patch+yaml` is 415), no schema validation,
//!   defaulting or version conversion for custom resources, no protobuf, no tables.
//! - Deleting a CRD stops serving its resources but leaves their objects stored.
//! - `generation` follows the custom-resource rule for every resource: +1 when anything
//!   outside metadata (and status, with a status subresource) changes.
//! - A watch without `timeoutSeconds` runs until the client or the server ends it.

pub mod client;
pub mod crd;
pub mod discovery;
pub mod harness;
pub mod http;
pub mod kubeconfig;
pub mod list;
pub mod object;
pub mod patch;
pub mod rbac;
pub mod resources;
pub mod rest;
pub mod route;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;
pub mod tls;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use harness::TestCluster;
pub use rbac::PolicyRule;
pub use server::{Options, Server};
pub use status::ApiError;

/// What can go wrong starting or driving the server from a test.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listening socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Generating certificates or configuring rustls failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A manifest could not be parsed.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A path that names no object this server serves.
    #[error("{0} is not the path of an object this server serves")]
    Path(String),
    /// The server refused the operation, as it would over HTTP.
    #[error("{path}: {status}")]
    Api {
        /// The object path.
        path: String,
        /// The Status the server would answer with.
        #[source]
        status: Box<ApiError>,
    },
}
