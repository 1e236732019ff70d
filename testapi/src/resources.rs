//! The resource types the server serves: the built-in core ones and those registered from
//! CustomResourceDefinitions.
//!
//! A resource is addressed by group, version and plural (Kubernetes API concepts, "Resource
//! URIs": `/api/v1/…` for the core group, `/apis/GROUP/VERSION/…` otherwise). Objects are
//! stored per group and plural, whatever the version they were written through, like the
//! apiserver's storage keys (`/registry/<group>/<plural>/…`).

use std::collections::BTreeMap;
use std::sync::Arc;

/// One served resource, at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: String,
    /// API version within the group (`v1`).
    pub version: String,
    /// Plural resource name used in paths (`pods`, `ippools`).
    pub plural: String,
    /// Singular name, for discovery.
    pub singular: String,
    /// Kind of the objects (`Pod`, `IPPool`).
    pub kind: String,
    /// Kind of the list (`PodList`).
    pub list_kind: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether the resource has a `/status` subresource: then writes to the main resource
    /// keep the stored status, and `/status` writes change nothing but the status.
    pub status_subresource: bool,
}

impl ResourceType {
    fn builtin(group: &str, plural: &str, kind: &str, namespaced: bool) -> ResourceType {
        ResourceType {
            group: group.into(),
            version: "v1".into(),
            plural: plural.into(),
            singular: kind.to_ascii_lowercase(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            namespaced,
            status_subresource: true,
        }
    }

    /// `apiVersion` of the objects: `v1` or `group/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage identity shared by all versions: `group/plural`.
    pub fn storage_key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// `pods` or `ippools.crd.projectcalico.org`, as error messages name a resource.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod` or `IPPool.crd.projectcalico.org`, as Invalid messages name a kind.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether the name must be a DNS-1123 label (namespaces) rather than a subdomain.
    pub fn name_is_label(&self) -> bool {
        self.group.is_empty() && self.plural == "namespaces"
    }

    /// Whether a successful DELETE answers with the deleted object (`ReturnDeletedObject` in
    /// the apiserver's registry: pods, namespaces and custom resources do; nodes answer with
    /// a Success Status).
    pub fn returns_deleted_object(&self) -> bool {
        !(self.group.is_empty() && self.plural == "nodes")
    }

    /// Whether this is the CustomResourceDefinition resource itself.
    pub fn is_crd(&self) -> bool {
        self.group == CRD_GROUP && self.plural == "customresourcedefinitions"
    }
}

/// The group of CustomResourceDefinition objects.
pub const CRD_GROUP: &str = "apiextensions.k8s.io";

/// All served resource types, by (group, version, plural).
#[derive(Debug, Clone)]
pub struct Registry {
    types: BTreeMap<(String, String, String), Arc<ResourceType>>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut r = Registry {
            types: BTreeMap::new(),
        };
        for ty in [
            ResourceType::builtin("", "nodes", "Node", false),
            ResourceType::builtin("", "pods", "Pod", true),
            ResourceType::builtin("", "namespaces", "Namespace", false),
            ResourceType::builtin(
                CRD_GROUP,
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            ),
        ] {
            r.insert(ty);
        }
        r
    }
}

impl Registry {
    /// Adds (or replaces) one resource version.
    pub fn insert(&mut self, ty: ResourceType) {
        self.types.insert(
            (ty.group.clone(), ty.version.clone(), ty.plural.clone()),
            Arc::new(ty),
        );
    }

    /// Removes every version of `group/plural`.
    pub fn remove_all(&mut self, group: &str, plural: &str) {
        self.types
            .retain(|(g, _, p), _| !(g == group && p == plural));
    }

    /// The type served at `group/version/plural`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Every served type, in (group, version, plural) order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }
}
