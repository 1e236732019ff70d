//! The Kubernetes backend ("KDD"): resources live where Calico keeps them in a Kubernetes
//! cluster, so a cluster can move between Calico and tabby.
//!
//! ```text
//!   IPPool, BGP*, FelixConfiguration,      ──▶ custom resources, crd.projectcalico.org/v1
//!   IPAM*, BlockAffinity, ClusterInformation      (mapping.rs; CRDs in charts/tabby/crds)
//!   Node                                    ──▶ core Node: projectcalico.org/* annotations
//!                                                + labels (node.rs)
//!   WorkloadEndpoint                        ──▶ core Pod: cni.projectcalico.org/* annotations
//!                                                (workload.rs)
//! ```
//!
//! Revisions are resourceVersions: compare-and-swap writes send the expected resourceVersion
//! (in the object for replace, in the patch for the annotation kinds, as a precondition for
//! delete) and a 409 Conflict becomes [`Error::Conflict`]. Watches follow one Kubernetes watch
//! per kind, resume from the last resourceVersion seen (events or bookmarks) when the server
//! ends a stream, and report a 410 Gone as [`Error::TooOld`] so the caller re-lists
//! (`watch.rs`). Lists are paginated.
//!
//! The client is made on first use, so [`crate::open`] stays synchronous: `kubernetes:` takes
//! the in-cluster config when `KUBERNETES_SERVICE_HOST` is set and `KUBECONFIG` /
//! `~/.kube/config` otherwise; `kubernetes:PATH` reads that kubeconfig.

#[cfg(feature = "crds")]
pub mod crd;
pub mod mapping;
pub mod node;
mod watch;
pub mod workload;

use std::path::PathBuf;

use api::{Key, Kind, Resource};
use async_trait::async_trait;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
};
use kube::core::Status;
use serde_json::Value;

use self::mapping::{Storage, object_revision, storage};
use crate::{Datastore, Error, Listing, Revision, Watch};

/// Items per page when listing (the API server may return fewer).
const PAGE_SIZE: u32 = 500;
/// Read-modify-write attempts for an unconditional write before giving up.
const RETRIES: usize = 50;

/// Where the client's configuration comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// In-cluster when `KUBERNETES_SERVICE_HOST` is set, else `KUBECONFIG` / `~/.kube/config`.
    Infer,
    /// This kubeconfig file.
    Kubeconfig(PathBuf),
}

pub struct KubeDatastore {
    source: ConfigSource,
    client: tokio::sync::OnceCell<kube::Client>,
}

impl KubeDatastore {
    /// A datastore that connects on first use.
    pub fn new(source: ConfigSource) -> KubeDatastore {
        KubeDatastore {
            source,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// A datastore over an existing client.
    pub fn with_client(client: kube::Client) -> KubeDatastore {
        KubeDatastore {
            source: ConfigSource::Infer,
            client: tokio::sync::OnceCell::new_with(Some(client)),
        }
    }

    async fn client(&self) -> Result<kube::Client, Error> {
        self.client
            .get_or_try_init(|| connect(&self.source))
            .await
            .cloned()
    }

    async fn api(&self, kind: Kind, namespace: Option<&str>) -> Result<Api<DynamicObject>, Error> {
        let client = self.client().await?;
        let ar = mapping::api_resource(kind);
        Ok(match namespace {
            Some(ns) => Api::namespaced_with(client, ns, &ar),
            None => Api::all_with(client, &ar),
        })
    }

    /// Every object of a kind's storage, page by page, and the revision of the first page (the
    /// API server serves every later page at that revision).
    async fn list_objects(&self, kind: Kind) -> Result<(Vec<Value>, Revision), Error> {
        let api = self.api(kind, None).await?;
        let what = format!("listing {}", mapping::api_resource(kind).plural);
        let mut items = Vec::new();
        let mut revision = None;
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default().limit(PAGE_SIZE);
            if let Some(t) = &token {
                params = params.continue_token(t);
            }
            let page = api
                .list(&params)
                .await
                .map_err(|e| api_error(&Key::new(kind, ""), &what, e))?;
            if revision.is_none() {
                let rv = page.metadata.resource_version.clone().unwrap_or_default();
                revision = Some(mapping::parse_revision(&Key::new(kind, ""), &rv)?);
            }
            for item in page.items {
                items.push(to_value(item)?);
            }
            match page.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok((items, revision.unwrap_or_default()))
    }

    async fn get_object(&self, key: &Key, name: &str) -> Result<Value, Error> {
        let api = self.api(key.kind, key.namespace.as_deref()).await?;
        let obj = api
            .get(name)
            .await
            .map_err(|e| api_error(key, &format!("reading {key}"), e))?;
        to_value(obj)
    }

    /// The current revision of `key`, for a Conflict error.
    async fn current_revision(&self, key: &Key) -> Result<Revision, Error> {
        match self.get(key).await {
            Ok(r) => Ok(Revision::of(&r)?.unwrap_or_default()),
            Err(e) => Err(e),
        }
    }

    async fn conflict(&self, key: &Key, expected: Revision) -> Error {
        match self.current_revision(key).await {
            Ok(current) => Error::Conflict {
                key: key.clone(),
                expected,
                current,
            },
            Err(e) => e,
        }
    }

    async fn patch_object(&self, key: &Key, name: &str, patch: &Value) -> Result<Value, Error> {
        let api = self.api(key.kind, key.namespace.as_deref()).await?;
        let obj = api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| api_error(key, &format!("patching {key}"), e))?;
        to_value(obj)
    }

    /// Deletes an object if it is still at `expected` (when given) and returns its last state.
    /// Some resources answer a delete with a Status rather than the object, so the last state is
    /// read first and the delete is made conditional on it.
    async fn delete_object(
        &self,
        key: &Key,
        name: &str,
        expected: Option<Revision>,
    ) -> Result<Value, Error> {
        let api = self.api(key.kind, key.namespace.as_deref()).await?;
        let what = format!("deleting {key}");
        for _ in 0..RETRIES {
            let last = self.get_object(key, name).await?;
            let current = object_revision(key, &last)?;
            if let Some(exp) = expected
                && exp != current
            {
                return Err(Error::Conflict {
                    key: key.clone(),
                    expected: exp,
                    current,
                });
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: Some(current.to_string()),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(name, &params).await {
                Ok(either) => return either.left().map(to_value).unwrap_or(Ok(last)),
                Err(kube::Error::Api(s)) if s.code == 409 && s.reason != "AlreadyExists" => {
                    match expected {
                        Some(exp) => return Err(self.conflict(key, exp).await),
                        None => continue,
                    }
                }
                Err(e) => return Err(api_error(key, &what, e)),
            }
        }
        Err(retries_exhausted(key))
    }

    // --- custom resources -------------------------------------------------------------------

    async fn update_custom(&self, resource: Resource) -> Result<Resource, Error> {
        let key = resource.key();
        let expected = Revision::of(&resource)?;
        let api = self.api(key.kind, None).await?;
        let what = format!("replacing {key}");
        for _ in 0..RETRIES {
            let mut object = mapping::to_custom_object(&resource)?;
            // Custom resources need a resourceVersion on update; an unconditional write takes
            // the current one.
            let rv = match expected {
                Some(r) => r,
                None => object_revision(&key, &self.get_object(&key, &key.name).await?)?,
            };
            object["metadata"]["resourceVersion"] = Value::String(rv.to_string());
            let dynamic = from_value(&key, object)?;
            match api
                .replace(&key.name, &PostParams::default(), &dynamic)
                .await
            {
                Ok(obj) => return mapping::from_custom_object(key.kind, &to_value(obj)?),
                Err(kube::Error::Api(s)) if s.code == 409 => match expected {
                    Some(exp) => return Err(self.conflict(&key, exp).await),
                    None => continue,
                },
                Err(e) => return Err(api_error(&key, &what, e)),
            }
        }
        Err(retries_exhausted(&key))
    }

    // --- Node: annotations on the core Node --------------------------------------------------

    async fn update_node(&self, resource: Resource) -> Result<Resource, Error> {
        let key = resource.key();
        let expected = Revision::of(&resource)?;
        let Resource::Node(node_resource) = &resource else {
            unreachable!("update_node is called for Nodes")
        };
        for _ in 0..RETRIES {
            let current = self.get_object(&key, &key.name).await?;
            let current_rv = object_revision(&key, &current)?;
            if let Some(exp) = expected
                && exp != current_rv
            {
                return Err(Error::Conflict {
                    key,
                    expected: exp,
                    current: current_rv,
                });
            }
            let patch = node::patch_for(&current, node_resource, &current_rv.to_string());
            match self.patch_object(&key, &key.name, &patch).await {
                Ok(obj) => return node::from_core(&obj),
                Err(Error::Conflict { .. }) => match expected {
                    Some(exp) => return Err(self.conflict(&key, exp).await),
                    None => continue,
                },
                Err(e) => return Err(e),
            }
        }
        Err(retries_exhausted(&key))
    }

    // --- WorkloadEndpoint: annotations on the Pod --------------------------------------------

    fn pod_key(resource: &Resource) -> Result<(Key, String), Error> {
        let key = resource.key();
        if key.namespace.as_deref().unwrap_or_default().is_empty() {
            return Err(Error::InvalidKey {
                key,
                reason: "a WorkloadEndpoint needs a namespace (its pod's)".into(),
            });
        }
        let pod = match resource {
            Resource::WorkloadEndpoint(w) => w
                .spec
                .pod
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| workload::pod_of(&key.name)),
            _ => workload::pod_of(&key.name),
        };
        Ok((key, pod))
    }

    /// The pod behind an endpoint key and its endpoint, if the pod carries this one.
    async fn pod_and_endpoint(
        &self,
        key: &Key,
        pod: &str,
    ) -> Result<(Value, Option<Resource>), Error> {
        let object = self.get_object(key, pod).await?;
        let wep = workload::from_pod(&object)?.filter(|w| w.name() == key.name);
        Ok((object, wep))
    }

    async fn write_endpoint(&self, resource: Resource, create: bool) -> Result<Resource, Error> {
        let (key, pod) = Self::pod_key(&resource)?;
        let expected = Revision::of(&resource)?;
        let Resource::WorkloadEndpoint(wep) = &resource else {
            unreachable!("write_endpoint is called for WorkloadEndpoints")
        };
        for _ in 0..RETRIES {
            let (object, current) = match self.pod_and_endpoint(&key, &pod).await {
                Err(Error::NotFound(_)) if create => {
                    return Err(Error::InvalidKey {
                        key: key.clone(),
                        reason: format!(
                            "no pod {}/{pod} to attach the endpoint to",
                            key.namespace.as_deref().unwrap_or_default()
                        ),
                    });
                }
                other => other?,
            };
            let pod_rv = object_revision(&key, &object)?;
            match (&current, create) {
                (Some(_), true) => return Err(Error::AlreadyExists(key)),
                (None, false) => return Err(Error::NotFound(key)),
                _ => {}
            }
            if workload::has_endpoint(&object) && current.is_none() && create {
                // The pod carries another endpoint (a different name): one endpoint per pod.
                return Err(Error::AlreadyExists(key));
            }
            if let (Some(exp), false) = (expected, create)
                && exp != pod_rv
            {
                return Err(Error::Conflict {
                    key,
                    expected: exp,
                    current: pod_rv,
                });
            }
            let patch = workload::write_patch(wep, &pod_rv.to_string());
            match self.patch_object(&key, &pod, &patch).await {
                Ok(obj) => {
                    return workload::from_pod(&obj)?.ok_or_else(|| Error::Corrupt {
                        what: key.to_string(),
                        reason: "the pod lost its endpoint annotations while they were written"
                            .into(),
                    });
                }
                Err(Error::Conflict { .. }) => match (expected, create) {
                    (Some(exp), false) => return Err(self.conflict(&key, exp).await),
                    _ => continue,
                },
                Err(e) => return Err(e),
            }
        }
        Err(retries_exhausted(&key))
    }

    async fn delete_endpoint(
        &self,
        key: &Key,
        expected: Option<Revision>,
    ) -> Result<Resource, Error> {
        let pod = workload::pod_of(&key.name);
        for _ in 0..RETRIES {
            let (object, current) = self.pod_and_endpoint(key, &pod).await?;
            let Some(last) = current else {
                return Err(Error::NotFound(key.clone()));
            };
            let pod_rv = object_revision(key, &object)?;
            if let Some(exp) = expected
                && exp != pod_rv
            {
                return Err(Error::Conflict {
                    key: key.clone(),
                    expected: exp,
                    current: pod_rv,
                });
            }
            match self
                .patch_object(key, &pod, &workload::clear_patch(&pod_rv.to_string()))
                .await
            {
                Ok(_) => return Ok(last),
                Err(Error::Conflict { .. }) => match expected {
                    Some(exp) => return Err(self.conflict(key, exp).await),
                    None => continue,
                },
                Err(e) => return Err(e),
            }
        }
        Err(retries_exhausted(key))
    }
}

async fn connect(source: &ConfigSource) -> Result<kube::Client, Error> {
    let config = match source {
        ConfigSource::Infer => kube::Config::infer().await.map_err(|e| {
            Error::Unavailable(format!(
                "no Kubernetes config (in-cluster, KUBECONFIG or ~/.kube/config): {e}"
            ))
        })?,
        ConfigSource::Kubeconfig(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                Error::Unavailable(format!("reading kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| Error::Unavailable(format!("kubeconfig {}: {e}", path.display())))?
        }
    };
    let server = config.cluster_url.to_string();
    kube::Client::try_from(config)
        .map_err(|e| Error::Unavailable(format!("Kubernetes client for {server}: {e}")))
}

fn to_value(obj: DynamicObject) -> Result<Value, Error> {
    serde_json::to_value(obj).map_err(|e| Error::Corrupt {
        what: "an object from the Kubernetes API".into(),
        reason: e.to_string(),
    })
}

fn from_value(key: &Key, v: Value) -> Result<DynamicObject, Error> {
    serde_json::from_value(v).map_err(|e| Error::Corrupt {
        what: key.to_string(),
        reason: format!("encoding for Kubernetes: {e}"),
    })
}

fn retries_exhausted(key: &Key) -> Error {
    Error::Unavailable(format!(
        "{key}: still conflicting after {RETRIES} read-modify-write attempts"
    ))
}

/// Whether a 404 is about the object (it has a name in the details) rather than the whole
/// resource type (CRDs not installed).
fn names_an_object(status: &Status) -> bool {
    status.details.as_ref().is_some_and(|d| !d.name.is_empty())
}

/// A Kubernetes error in our terms.
fn api_error(key: &Key, what: &str, e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) => {
            let s = *s;
            match s.code {
                404 if names_an_object(&s) || s.reason == "NotFound" && !key.name.is_empty() => {
                    if names_an_object(&s) {
                        Error::NotFound(key.clone())
                    } else {
                        Error::Api {
                            what: what.to_string(),
                            code: s.code,
                            reason: s.reason,
                            message: format!(
                                "{} (are tabby's CRDs installed? kubectl apply -f charts/tabby/crds)",
                                s.message
                            ),
                        }
                    }
                }
                409 if s.reason == "AlreadyExists" => Error::AlreadyExists(key.clone()),
                409 => Error::Conflict {
                    key: key.clone(),
                    expected: Revision(0),
                    current: Revision(0),
                },
                422 => Error::InvalidKey {
                    key: key.clone(),
                    reason: s.message,
                },
                _ => Error::Api {
                    what: what.to_string(),
                    code: s.code,
                    reason: s.reason,
                    message: s.message,
                },
            }
        }
        other => Error::Unavailable(format!("{what}: {other}")),
    }
}

#[async_trait]
impl Datastore for KubeDatastore {
    async fn get(&self, key: &Key) -> Result<Resource, Error> {
        match storage(key.kind) {
            Storage::Crd => {
                mapping::from_custom_object(key.kind, &self.get_object(key, &key.name).await?)
            }
            Storage::CoreNode => node::from_core(&self.get_object(key, &key.name).await?),
            Storage::Pod => {
                let (_, wep) = self
                    .pod_and_endpoint(key, &workload::pod_of(&key.name))
                    .await?;
                wep.ok_or_else(|| Error::NotFound(key.clone()))
            }
        }
    }

    async fn list(&self, kind: Kind) -> Result<Listing, Error> {
        let (objects, revision) = self.list_objects(kind).await?;
        let mut items = Vec::with_capacity(objects.len());
        for o in &objects {
            match storage(kind) {
                Storage::Crd => items.push(mapping::from_custom_object(kind, o)?),
                Storage::CoreNode => items.push(node::from_core(o)?),
                Storage::Pod => items.extend(workload::from_pod(o)?),
            }
        }
        Ok(Listing { items, revision })
    }

    async fn create(&self, resource: Resource) -> Result<Resource, Error> {
        let key = resource.key();
        if resource.metadata().name.is_empty() {
            return Err(Error::InvalidKey {
                key,
                reason: "metadata.name is empty".into(),
            });
        }
        let object = match (storage(key.kind), &resource) {
            (Storage::Pod, _) => return self.write_endpoint(resource, true).await,
            (Storage::CoreNode, Resource::Node(n)) => node::to_new_core(n),
            (Storage::CoreNode, _) => unreachable!("only Nodes are stored as core Nodes"),
            (Storage::Crd, _) => {
                let mut o = mapping::to_custom_object(&resource)?;
                if let Some(meta) = o["metadata"].as_object_mut() {
                    meta.remove("resourceVersion");
                    meta.remove("uid");
                }
                o
            }
        };
        let api = self.api(key.kind, None).await?;
        let created = api
            .create(&PostParams::default(), &from_value(&key, object)?)
            .await
            .map_err(|e| api_error(&key, &format!("creating {key}"), e))?;
        let created = to_value(created)?;
        match storage(key.kind) {
            Storage::CoreNode => node::from_core(&created),
            _ => mapping::from_custom_object(key.kind, &created),
        }
    }

    async fn update(&self, resource: Resource) -> Result<Resource, Error> {
        match storage(resource.kind()) {
            Storage::Crd => self.update_custom(resource).await,
            Storage::CoreNode => self.update_node(resource).await,
            Storage::Pod => self.write_endpoint(resource, false).await,
        }
    }

    async fn delete(&self, key: &Key, expected: Option<Revision>) -> Result<Resource, Error> {
        let last = match storage(key.kind) {
            Storage::Pod => return self.delete_endpoint(key, expected).await,
            _ => self.delete_object(key, &key.name, expected).await?,
        };
        match storage(key.kind) {
            Storage::CoreNode => node::from_core(&last),
            _ => mapping::from_custom_object(key.kind, &last),
        }
    }

    async fn watch(&self, kind: Option<Kind>, after: Revision) -> Result<Watch, Error> {
        let client = self.client().await?;
        Ok(watch::start(client, kind, after))
    }
}
