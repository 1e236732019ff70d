//! CustomResourceDefinitions: what a CRD object registers, and loading CRD manifests.
//!
//! "Extend the Kubernetes API with CustomResourceDefinitions": creating a CRD named
//! `<plural>.<group>` serves `/apis/<group>/<version>/[namespaces/<ns>/]<plural>` for every
//! version with `served: true`; `scope` is `Namespaced` or `Cluster`; a version with
//! `subresources.status` gets a `/status` subresource. Custom objects are stored without
//! conversion (every version shares the objects, as with `conversion: None`) and without
//! schema validation or defaulting.

use std::path::Path;

use serde_json::{Value, json};

use crate::Error;
use crate::resources::ResourceType;
use crate::status::{ApiError, Cause};

fn field<'a>(crd: &'a Value, pointer: &str) -> &'a str {
    crd.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The resource types a CRD object serves, or a 422 saying what is missing.
pub fn resource_types(crd_type: &ResourceType, crd: &Value) -> Result<Vec<ResourceType>, ApiError> {
    let name = field(crd, "/metadata/name");
    let group = field(crd, "/spec/group");
    let plural = field(crd, "/spec/names/plural");
    let kind = field(crd, "/spec/names/kind");
    let scope = field(crd, "/spec/scope");
    let invalid = |f: &str, message: String| {
        ApiError::invalid(
            crd_type,
            name,
            vec![Cause {
                reason: "FieldValueInvalid",
                field: f.into(),
                message,
            }],
        )
    };
    for (f, v) in [
        ("spec.group", group),
        ("spec.names.plural", plural),
        ("spec.names.kind", kind),
    ] {
        if v.is_empty() {
            return Err(invalid(f, "Required value".into()));
        }
    }
    if name != format!("{plural}.{group}") {
        return Err(invalid(
            "metadata.name",
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let namespaced = match scope {
        "Namespaced" => true,
        "Cluster" => false,
        other => {
            return Err(invalid(
                "spec.scope",
                format!(
                    "Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
                ),
            ));
        }
    };
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut types = Vec::new();
    for v in &versions {
        let version = v.get("name").and_then(Value::as_str).unwrap_or("");
        if version.is_empty() {
            return Err(invalid("spec.versions[].name", "Required value".into()));
        }
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let status_subresource = v.pointer("/subresources/status").is_some()
            || crd.pointer("/spec/subresources/status").is_some();
        types.push(ResourceType {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: match field(crd, "/spec/names/singular") {
                "" => kind.to_ascii_lowercase(),
                s => s.into(),
            },
            kind: kind.into(),
            list_kind: match field(crd, "/spec/names/listKind") {
                "" => format!("{kind}List"),
                s => s.into(),
            },
            namespaced,
            status_subresource,
        });
    }
    if types.is_empty() {
        return Err(invalid(
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version".into(),
        ));
    }
    Ok(types)
}

/// The status the apiextensions controller gives an accepted CRD: names accepted,
/// Established (so clients waiting for the `Established` condition go on).
pub fn accepted_status(crd: &Value) -> Value {
    let storage: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    let now = crate::object::now_rfc3339();
    json!({
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "storedVersions": storage,
    })
}

/// Every CustomResourceDefinition document in the `*.yaml`, `*.yml` and `*.json` files of
/// `dir` (multi-document YAML allowed), in file-name order. Other kinds are skipped.
pub fn load_dir(dir: &Path) -> Result<Vec<Value>, Error> {
    let read_err = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?
        .into_iter()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).map_err(|e| Error::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        crds.extend(
            docs.into_iter().filter(|d| {
                d.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition")
            }),
        );
    }
    Ok(crds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    fn crd_type() -> std::sync::Arc<ResourceType> {
        Registry::default()
            .get(
                crate::resources::CRD_GROUP,
                "v1",
                "customresourcedefinitions",
            )
            .unwrap()
    }

    #[test]
    fn a_crd_serves_its_served_versions() {
        let crd = json!({
            "metadata": {"name": "ippools.crd.projectcalico.org"},
            "spec": {
                "group": "crd.projectcalico.org",
                "names": {"plural": "ippools", "kind": "IPPool", "singular": "ippool"},
                "scope": "Cluster",
                "versions": [
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}},
                    {"name": "v0", "served": false, "storage": false},
                ],
            },
        });
        let types = resource_types(&crd_type(), &crd).unwrap();
        assert_eq!(types.len(), 1);
        let t = &types[0];
        assert_eq!(
            (t.group.as_str(), t.version.as_str()),
            ("crd.projectcalico.org", "v1")
        );
        assert_eq!(t.list_kind, "IPPoolList");
        assert!(!t.namespaced);
        assert!(t.status_subresource);
        assert_eq!(accepted_status(&crd)["storedVersions"], json!(["v1"]));
    }

    #[test]
    fn a_crd_named_wrong_is_invalid() {
        let crd = json!({
            "metadata": {"name": "pools.example.org"},
            "spec": {"group": "example.org", "names": {"plural": "ippools", "kind": "IPPool"},
                     "scope": "Cluster", "versions": [{"name": "v1", "served": true, "storage": true}]},
        });
        let err = resource_types(&crd_type(), &crd).unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(err.details.unwrap()["causes"][0]["field"], "metadata.name");
    }
}
