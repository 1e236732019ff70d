//! apply / create / replace / delete / get / patch: resource commands over the datastore.

use std::io::{Read, Write};
use std::path::Path;

use api::{Key, Kind, Resource};
use datastore::{Datastore, Revision};

use crate::cli::Output;
use crate::error::CtlError;
use crate::output::print_resources;

/// How often a read-modify-write is retried when another writer got there first.
const CONFLICT_RETRIES: usize = 5;

/// What a file-driven command does with each resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Apply,
    Create { skip_exists: bool },
    Replace,
    Delete { skip_not_exists: bool },
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Apply => "applying",
            Action::Create { .. } => "creating",
            Action::Replace => "replacing",
            Action::Delete { .. } => "deleting",
        }
    }

    fn past(self) -> &'static str {
        match self {
            Action::Apply => "applied",
            Action::Create { .. } => "created",
            Action::Replace => "replaced",
            Action::Delete { .. } => "deleted",
        }
    }
}

/// Reads and parses a manifest file (`-` is stdin).
pub fn read_manifest(path: &Path) -> Result<Vec<Resource>, CtlError> {
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    read.map_err(|source| CtlError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    api::parse::parse_documents(&text).map_err(|source| CtlError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// Runs one action over every resource of a manifest. Each resource is handled on its own;
/// failures are collected and reported together, as calicoctl does.
pub async fn run_file(
    ds: &dyn Datastore,
    path: &Path,
    action: Action,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let resources = read_manifest(path)?;
    let total = resources.len();
    let mut kinds: Vec<Kind> = resources.iter().map(Resource::kind).collect();
    kinds.dedup();
    let mut failures = Vec::new();
    for resource in resources {
        let label = describe(&resource);
        let result = match action {
            Action::Delete { skip_not_exists } => {
                delete(ds, &resource.key(), skip_not_exists).await
            }
            _ => write(ds, resource, action).await,
        };
        if let Err(e) = result {
            failures.push(format!("  {label}: {e}"));
        }
    }
    let done = total - failures.len();
    let what = match kinds.as_slice() {
        [one] => format!("{done} '{one}' resource(s)"),
        _ => format!("{done} resource(s)"),
    };
    writeln!(out, "Successfully {} {what}", action.past()).map_err(|source| CtlError::Write {
        what: "standard output".into(),
        source,
    })?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CtlError::Partial {
            failed: failures.len(),
            total,
            messages: failures.join("\n"),
        })
    }
}

fn describe(resource: &Resource) -> String {
    resource.key().to_string()
}

/// Validates a resource on its own and against what it must not clash with.
async fn validate(
    ds: &dyn Datastore,
    resource: &Resource,
    action: &'static str,
) -> Result<(), CtlError> {
    let invalid = |source| CtlError::Invalid {
        action,
        resource: describe(resource),
        source,
    };
    resource.validate().map_err(invalid)?;
    if let Resource::IPPool(pool) = resource {
        let existing = ds
            .list(Kind::IPPool)
            .await
            .map_err(|source| CtlError::Datastore {
                action,
                resource: describe(resource),
                source,
            })?;
        let mut pools: Vec<api::IPPool> = existing
            .items
            .into_iter()
            .filter_map(|r| match r {
                Resource::IPPool(p) if p.metadata.name != pool.metadata.name => Some(p),
                _ => None,
            })
            .collect();
        pools.push(pool.clone());
        api::validate::validate_pools(&pools).map_err(invalid)?;
    }
    Ok(())
}

/// Calico refuses to change what addresses a pool hands out once it exists.
fn check_immutable(old: &Resource, new: &Resource) -> Result<(), api::validate::ValidationError> {
    if let (Resource::IPPool(old), Resource::IPPool(new)) = (old, new) {
        if old.spec.cidr != new.spec.cidr {
            return Err(api::validate::ValidationError::new(
                "spec.cidr",
                format!(
                    "cannot be changed on an existing pool (is {}, asked {})",
                    old.spec.cidr.map(|c| c.to_string()).unwrap_or_default(),
                    new.spec.cidr.map(|c| c.to_string()).unwrap_or_default()
                ),
            ));
        }
        if old.spec.block_size() != new.spec.block_size() {
            return Err(api::validate::ValidationError::new(
                "spec.blockSize",
                format!(
                    "cannot be changed on an existing pool (is {}, asked {})",
                    old.spec.block_size(),
                    new.spec.block_size()
                ),
            ));
        }
    }
    Ok(())
}

async fn write(ds: &dyn Datastore, mut resource: Resource, action: Action) -> Result<(), CtlError> {
    let verb = action.verb();
    if resource.kind().namespaced() && resource.metadata().namespace.is_none() {
        resource.metadata_mut().namespace = Some("default".into());
    }
    api::defaults::apply_defaults(&mut resource);
    validate(ds, &resource, verb).await?;
    let key = resource.key();
    let from_file = resource.metadata().resource_version.clone();
    let ds_err = |source| CtlError::Datastore {
        action: verb,
        resource: key.to_string(),
        source,
    };
    for _ in 0..CONFLICT_RETRIES {
        let existing = match ds.get(&key).await {
            Ok(r) => Some(r),
            Err(datastore::Error::NotFound(_)) => None,
            Err(e) => return Err(ds_err(e)),
        };
        let result = match (action, existing) {
            (Action::Create { skip_exists }, Some(_)) => {
                return if skip_exists {
                    Ok(())
                } else {
                    Err(ds_err(datastore::Error::AlreadyExists(key.clone())))
                };
            }
            (Action::Replace, None) => return Err(ds_err(datastore::Error::NotFound(key.clone()))),
            (_, None) => {
                let mut new = resource.clone();
                new.metadata_mut().resource_version = None;
                ds.create(new).await
            }
            (_, Some(old)) => {
                check_immutable(&old, &resource).map_err(|source| CtlError::Invalid {
                    action: verb,
                    resource: key.to_string(),
                    source,
                })?;
                let mut new = resource.clone();
                let meta = new.metadata_mut();
                // The file's resourceVersion, when given, is a compare-and-swap the operator asked
                // for; otherwise we swap against what we just read so a concurrent change is not
                // silently lost.
                meta.resource_version = from_file
                    .clone()
                    .or_else(|| old.metadata().resource_version.clone());
                if meta.uid.is_none() {
                    meta.uid = old.metadata().uid.clone();
                }
                if meta.creation_timestamp.is_none() {
                    meta.creation_timestamp = old.metadata().creation_timestamp.clone();
                }
                ds.update(new).await
            }
        };
        match result {
            Ok(_) => return Ok(()),
            Err(datastore::Error::Conflict { .. } | datastore::Error::AlreadyExists(_))
                if from_file.is_none() =>
            {
                continue;
            }
            Err(e) => return Err(ds_err(e)),
        }
    }
    Err(CtlError::Usage(format!(
        "{verb} {key}: gave up after {CONFLICT_RETRIES} revision conflicts with other writers"
    )))
}

async fn delete(ds: &dyn Datastore, key: &Key, skip_not_exists: bool) -> Result<(), CtlError> {
    match ds.delete(key, None).await {
        Ok(_) => Ok(()),
        Err(datastore::Error::NotFound(_)) if skip_not_exists => Ok(()),
        Err(source) => Err(CtlError::Datastore {
            action: "deleting",
            resource: key.to_string(),
            source,
        }),
    }
}

/// Resolves a kind name the way calicoctl does (singular, plural, short; any case).
pub fn parse_kind(name: &str) -> Result<Kind, CtlError> {
    Kind::from_any_name(name).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.cli_names()[0]).collect();
        CtlError::Usage(format!(
            "unknown resource type {name:?}; known types: {}",
            known.join(", ")
        ))
    })
}

pub fn key_for(kind: Kind, name: &str, namespace: Option<&str>) -> Key {
    if kind.namespaced() {
        Key::namespaced(kind, namespace.unwrap_or("default"), name)
    } else {
        Key::new(kind, name)
    }
}

pub async fn delete_one(
    ds: &dyn Datastore,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    skip_not_exists: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let kind = parse_kind(kind)?;
    delete(ds, &key_for(kind, name, namespace), skip_not_exists).await?;
    writeln!(out, "Successfully deleted 1 '{kind}' resource(s)").map_err(|source| CtlError::Write {
        what: "standard output".into(),
        source,
    })
}

pub async fn get(
    ds: &dyn Datastore,
    kind: &str,
    name: Option<&str>,
    namespace: Option<&str>,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let kind = parse_kind(kind)?;
    let (items, revision) = match name {
        Some(name) => {
            let key = key_for(kind, name, namespace);
            let r = ds.get(&key).await.map_err(|source| CtlError::Datastore {
                action: "getting",
                resource: key.to_string(),
                source,
            })?;
            (vec![r], None)
        }
        None => {
            let listing = ds.list(kind).await.map_err(|source| CtlError::Datastore {
                action: "listing",
                resource: kind.plural().to_string(),
                source,
            })?;
            let items = listing
                .items
                .into_iter()
                .filter(|r| namespace.is_none() || r.metadata().namespace.as_deref() == namespace)
                .collect();
            (items, Some(listing.revision.to_string()))
        }
    };
    print_resources(out, kind, &items, output, name.is_some(), revision)
}

/// RFC 7386 JSON merge patch: objects merge key by key, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match patch {
        serde_json::Value::Object(fields) => {
            if !target.is_object() {
                *target = serde_json::Value::Object(Default::default());
            }
            let map = target.as_object_mut().expect("made an object above");
            for (k, v) in fields {
                if v.is_null() {
                    map.remove(k);
                } else {
                    merge_patch(map.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

pub async fn patch(
    ds: &dyn Datastore,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    patch_text: &str,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let kind = parse_kind(kind)?;
    let key = key_for(kind, name, namespace);
    let patch: serde_json::Value = serde_json::from_str(patch_text)
        .map_err(|e| CtlError::Usage(format!("patch for {key} is not valid JSON: {e}")))?;
    let ds_err = |source| CtlError::Datastore {
        action: "patching",
        resource: key.to_string(),
        source,
    };
    for _ in 0..CONFLICT_RETRIES {
        let current = ds.get(&key).await.map_err(ds_err)?;
        let revision = Revision::of(&current).map_err(ds_err)?;
        let mut value = serde_json::to_value(&current).expect("resources serialize");
        merge_patch(&mut value, &patch);
        let mut patched = Resource::from_json_value(value).map_err(|e| {
            CtlError::Usage(format!(
                "patching {key}: the patched resource is not valid: {e}"
            ))
        })?;
        if patched.key() != key {
            return Err(CtlError::Usage(format!(
                "patching {key}: a patch cannot change kind, namespace or name"
            )));
        }
        patched.metadata_mut().resource_version = revision.map(|r| r.to_string());
        api::defaults::apply_defaults(&mut patched);
        validate(ds, &patched, "patching").await?;
        check_immutable(&current, &patched).map_err(|source| CtlError::Invalid {
            action: "patching",
            resource: key.to_string(),
            source,
        })?;
        match ds.update(patched).await {
            Ok(_) => {
                return writeln!(out, "Successfully patched 1 '{kind}' resource").map_err(
                    |source| CtlError::Write {
                        what: "standard output".into(),
                        source,
                    },
                );
            }
            Err(datastore::Error::Conflict { .. }) => continue,
            Err(e) => return Err(ds_err(e)),
        }
    }
    Err(CtlError::Usage(format!(
        "patching {key}: gave up after {CONFLICT_RETRIES} revision conflicts"
    )))
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    /// The examples of RFC 7386 Appendix A.
    #[test]
    fn merge_patch_rfc7386_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
        }
    }
}
