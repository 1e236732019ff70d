//! Where each kind lives in a Kubernetes cluster, and the conversion between our resources and
//! the objects stored there.
//!
//! Calico's Kubernetes datastore ("KDD") keeps most kinds as custom resources in
//! `crd.projectcalico.org/v1` (same spec shape as `projectcalico.org/v3`), a Node's BGP data as
//! `projectcalico.org/*` annotations on the core Node ([`super::node`]) and a WorkloadEndpoint as
//! annotations on its Pod ([`super::workload`]). tabby keeps them in the same places, so a cluster
//! can move between Calico and tabby.

use api::{Key, Kind, Resource};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use crate::Error;

/// The API group Calico's custom resources live in.
pub const CRD_GROUP: &str = "crd.projectcalico.org";
/// The version of Calico's custom resources.
pub const CRD_VERSION: &str = "v1";

/// Where one kind is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A cluster-scoped custom resource in `crd.projectcalico.org/v1`.
    Crd,
    /// Annotations and labels on the core `v1` Node.
    CoreNode,
    /// Annotations on the core `v1` Pod.
    Pod,
}

pub fn storage(kind: Kind) -> Storage {
    match kind {
        Kind::Node => Storage::CoreNode,
        Kind::WorkloadEndpoint => Storage::Pod,
        _ => Storage::Crd,
    }
}

/// The API resource a kind is stored in.
pub fn api_resource(kind: Kind) -> ApiResource {
    match storage(kind) {
        Storage::Crd => ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(CRD_GROUP, CRD_VERSION, kind.as_str()),
            kind.plural(),
        ),
        Storage::CoreNode => {
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Node"), "nodes")
        }
        Storage::Pod => {
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Pod"), "pods")
        }
    }
}

/// The metadata fields our resources carry over from a Kubernetes object. Everything else
/// (`managedFields`, `ownerReferences`, …) belongs to the cluster and is left out.
const KEPT_METADATA: [&str; 7] = [
    "name",
    "namespace",
    "labels",
    "annotations",
    "resourceVersion",
    "uid",
    "creationTimestamp",
];

/// The kept part of an object's metadata.
pub fn kept_metadata(object: &Value) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    if let Some(meta) = object.get("metadata").and_then(Value::as_object) {
        for field in KEPT_METADATA {
            if let Some(v) = meta.get(field)
                && !v.is_null()
            {
                out.insert(field.to_string(), v.clone());
            }
        }
    }
    out
}

/// A JSON object of strings (labels, annotations) as a map; other values are skipped.
pub fn string_map(v: Option<&Value>) -> std::collections::BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A custom resource object for `resource`, as stored in `crd.projectcalico.org/v1`.
pub fn to_custom_object(resource: &Resource) -> Result<Value, Error> {
    let mut v = serde_json::to_value(resource).map_err(|e| Error::Corrupt {
        what: resource.key().to_string(),
        reason: format!("encoding as JSON: {e}"),
    })?;
    v["apiVersion"] = Value::String(format!("{CRD_GROUP}/{CRD_VERSION}"));
    // Calico's BlockAffinity CRD keeps `deleted` as the string "true" / "false"
    // (libcalico-go ipam_affinity_v1.go parses it with ParseBool).
    if resource.kind() == Kind::BlockAffinity
        && let Some(deleted) = v.pointer_mut("/spec/deleted")
        && let Some(b) = deleted.as_bool()
    {
        *deleted = Value::String(b.to_string());
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        // Cluster-scoped: a namespace would be rejected.
        meta.remove("namespace");
        meta.remove("creationTimestamp");
        meta.remove("generation");
    }
    Ok(v)
}

/// Our resource for a custom object read back from the cluster.
pub fn from_custom_object(kind: Kind, object: &Value) -> Result<Resource, Error> {
    let mut v = serde_json::Map::new();
    v.insert("apiVersion".into(), Value::String(api::API_VERSION.into()));
    v.insert("kind".into(), Value::String(kind.as_str().into()));
    v.insert("metadata".into(), Value::Object(kept_metadata(object)));
    if let Some(spec) = object.get("spec") {
        let mut spec = spec.clone();
        if kind == Kind::BlockAffinity
            && let Some(deleted) = spec.get_mut("deleted")
            && let Some(s) = deleted.as_str()
        {
            *deleted = Value::Bool(s.eq_ignore_ascii_case("true"));
        }
        v.insert("spec".into(), spec);
    }
    if let Some(status) = object.get("status").filter(|s| !s.is_null()) {
        v.insert("status".into(), status.clone());
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    decode_leaving_out_unknown_fields(kind, name, Value::Object(v))
}

/// How many unknown fields one object may have before it is refused as corrupt.
const MAX_UNKNOWN_FIELDS: usize = 64;

/// Decodes an object, leaving out the spec and status fields tabby does not know. A cluster that
/// ran Calico holds objects with the fields of newer Calico versions (FelixConfiguration grows
/// with every release), and tabby must still read the rest of them; each field left out is
/// logged once per process.
fn decode_leaving_out_unknown_fields(
    kind: Kind,
    name: &str,
    mut value: Value,
) -> Result<Resource, Error> {
    let corrupt = |reason: String| Error::Corrupt {
        what: format!("{kind} {name} in the cluster"),
        reason,
    };
    for _ in 0..=MAX_UNKNOWN_FIELDS {
        let e = match Resource::from_json_value(value.clone()) {
            Ok(r) => return Ok(r),
            Err(e) => e.to_string(),
        };
        let Some(path) = unknown_field_path(&e) else {
            return Err(corrupt(e));
        };
        if !(path.starts_with("/spec/") || path.starts_with("/status/"))
            || !remove_pointer(&mut value, &path)
        {
            return Err(corrupt(e));
        }
        warn_once(kind, &path);
    }
    Err(corrupt(format!(
        "more than {MAX_UNKNOWN_FIELDS} fields tabby does not know"
    )))
}

/// The JSON pointer of the field an "unknown field" error names: `spec.a[0].b: unknown field
/// \`b\`, …` → `/spec/a/0/b`.
fn unknown_field_path(message: &str) -> Option<String> {
    let (path, rest) = message.split_once(": ")?;
    if !rest.starts_with("unknown field `") {
        return None;
    }
    let mut pointer = String::new();
    for part in path.split('.') {
        let (field, indices) = part.split_once('[').unwrap_or((part, ""));
        pointer.push('/');
        pointer.push_str(field);
        for index in indices.split('[') {
            let index = index.trim_end_matches(']');
            if !index.is_empty() {
                pointer.push('/');
                pointer.push_str(index);
            }
        }
    }
    Some(pointer)
}

fn remove_pointer(value: &mut Value, pointer: &str) -> bool {
    let Some((parent, field)) = pointer.rsplit_once('/') else {
        return false;
    };
    match value.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(field).is_some(),
        _ => false,
    }
}

fn warn_once(kind: Kind, path: &str) {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let key = format!("{kind}{path}");
    let first = SEEN
        .get_or_init(Default::default)
        .lock()
        .map(|mut seen| seen.insert(key))
        .unwrap_or(false);
    if first {
        tracing::warn!(%kind, field = path, "field tabby does not know, left out when reading");
    }
}

/// The object's `metadata.resourceVersion` as a revision.
pub fn object_revision(key: &Key, object: &Value) -> Result<crate::Revision, Error> {
    let s = object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    parse_revision(key, s)
}

/// Kubernetes calls resourceVersion opaque, but an etcd-backed API server hands out etcd's
/// revision, one counter for the whole cluster; our watches compare them across kinds.
pub fn parse_revision(key: &Key, s: &str) -> Result<crate::Revision, Error> {
    s.parse()
        .map(crate::Revision)
        .map_err(|_| Error::InvalidRevision {
            key: key.clone(),
            value: s.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{IPPool, IPPoolSpec};

    #[test]
    fn custom_objects_round_trip() {
        let mut pool = IPPool::new(
            "p1",
            IPPoolSpec {
                cidr: Some("198.18.0.0/16".parse().unwrap()),
                ..Default::default()
            },
        );
        pool.metadata.resource_version = Some("7".into());
        pool.metadata.labels.insert("a".into(), "b".into());
        let r: Resource = pool.into();
        let mut o = to_custom_object(&r).unwrap();
        assert_eq!(o["apiVersion"], "crd.projectcalico.org/v1");
        assert_eq!(o["kind"], "IPPool");
        o["metadata"]["managedFields"] = serde_json::json!([{"manager": "x"}]);
        let back = from_custom_object(Kind::IPPool, &o).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn block_affinity_deleted_is_a_string_as_in_calico() {
        let aff = api::BlockAffinity::new(
            "n1-198-18-0-0-26",
            api::BlockAffinitySpec {
                deleted: true,
                ..Default::default()
            },
        );
        let r: Resource = aff.into();
        let o = to_custom_object(&r).unwrap();
        assert_eq!(o["spec"]["deleted"], "true");
        assert_eq!(from_custom_object(Kind::BlockAffinity, &o).unwrap(), r);
    }

    #[test]
    fn fields_of_newer_calico_versions_are_left_out() {
        let o = serde_json::json!({
            "apiVersion": "crd.projectcalico.org/v1", "kind": "FelixConfiguration",
            "metadata": {"name": "default", "resourceVersion": "3"},
            "spec": {"logSeverityScreen": "Info", "bpfFutureKnob": true,
                "vxlanVNI": 4096, "aNewList": [{"x": 1}]}
        });
        let Resource::FelixConfiguration(f) = from_custom_object(Kind::FelixConfiguration, &o)
            .expect("read despite the unknown fields")
        else {
            panic!("not a FelixConfiguration")
        };
        assert_eq!(f.spec.vxlan_vni, Some(4096));
        assert_eq!(f.spec.log_severity_screen.as_deref(), Some("Info"));
        // Only spec and status fields are left out; anything else still fails.
        assert!(
            decode_leaving_out_unknown_fields(
                Kind::IPPool,
                "p",
                serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "p", "bogus": 1}, "spec": {"cidr": "198.18.0.0/16"}})
            )
            .is_err()
        );
        assert_eq!(
            unknown_field_path("spec.attributes[0].foo: unknown field `foo`, expected one of"),
            Some("/spec/attributes/0/foo".to_string())
        );
    }

    #[test]
    fn kinds_live_where_calico_keeps_them() {
        let ar = api_resource(Kind::BlockAffinity);
        assert_eq!(ar.api_version, "crd.projectcalico.org/v1");
        assert_eq!(ar.plural, "blockaffinities");
        assert_eq!(api_resource(Kind::Node).api_version, "v1");
        assert_eq!(api_resource(Kind::WorkloadEndpoint).plural, "pods");
    }
}
