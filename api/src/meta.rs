//! Object metadata and the `apiVersion / kind / metadata / spec` envelope.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The API group and version every resource is written in, as with calicoctl.
pub const API_VERSION: &str = "projectcalico.org/v3";

/// Kubernetes-style object metadata. `resourceVersion` is the datastore revision the object was
/// read at; writes that carry it are compare-and-swap against it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    // The rest of Kubernetes' ObjectMeta, so that a resource exported with `kubectl get -o yaml`
    // (which calicoctl accepts) is accepted too. Kept as written, never interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_fields: Vec<serde_json::Value>,
}

/// One resource of a known spec type: the envelope Calico's YAML uses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: S,
    /// Read-only status some kinds carry (Node); kept as written, never interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// Implemented by every spec type: which kind it belongs to.
pub trait Spec: Default {
    const KIND: crate::Kind;
}

impl<S: Spec> Object<S> {
    /// A new object of this kind with the given name and spec.
    pub fn new(name: impl Into<String>, spec: S) -> Self {
        Object {
            api_version: API_VERSION.to_string(),
            kind: S::KIND.as_str().to_string(),
            metadata: ObjectMeta {
                name: name.into(),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }
}
