//! The CustomResourceDefinitions in `charts/tabby/crds/` are generated from the api types
//! (`datastore::kubernetes::crd`). These tests fail when the checked-in files drift from the
//! types, when a schema is not structural (Kubernetes would refuse the CRD), when a kind tabby
//! keeps in Kubernetes has no CRD, and when a field of a documented manifest or of an IPAM object
//! has no place in its kind's schema (the API server would prune it).
//!
//! `TABBY_UPDATE_CRDS=1 cargo nextest run -p testapi crds` rewrites the files.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use api::{Kind, Resource};
use datastore::kubernetes::crd;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

const UPDATE_VAR: &str = "TABBY_UPDATE_CRDS";
const REGENERATE: &str = "TABBY_UPDATE_CRDS=1 cargo nextest run -p testapi crds";

fn crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/tabby/crds")
}

/// File name → generated text, for every CRD.
fn generated() -> BTreeMap<String, String> {
    crd::definitions()
        .iter()
        .map(|c| (crd::file_name(c), crd::to_yaml(c)))
        .collect()
}

/// File name → text of the CRD files checked in (`crd.projectcalico.org_*.yaml`).
fn checked_in() -> BTreeMap<String, String> {
    let Ok(entries) = fs::read_dir(crds_dir()) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.expect("readable directory entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_string();
            let ours = name.starts_with(&format!("{}_", crd::GROUP)) && name.ends_with(".yaml");
            ours.then(|| (name, fs::read_to_string(&path).expect("readable CRD file")))
        })
        .collect()
}

#[test]
fn crds_match_checked_in_files() {
    let want = generated();
    let have = checked_in();
    let mut drift = Vec::new();
    for (name, text) in &want {
        match have.get(name) {
            None => drift.push(format!("{name}: missing")),
            Some(old) if old != text => drift.push(format!("{name}: differs from the types")),
            Some(_) => {}
        }
    }
    for name in have.keys().filter(|n| !want.contains_key(*n)) {
        drift.push(format!("{name}: no kind generates it any more"));
    }
    if drift.is_empty() {
        return;
    }
    if std::env::var_os(UPDATE_VAR).is_some() {
        let dir = crds_dir();
        fs::create_dir_all(&dir).expect("create charts/tabby/crds");
        for (name, text) in &want {
            fs::write(dir.join(name), text).expect("write CRD file");
        }
        for name in have.keys().filter(|n| !want.contains_key(*n)) {
            fs::remove_file(dir.join(name)).expect("remove stale CRD file");
        }
        eprintln!("rewrote charts/tabby/crds:\n  {}", drift.join("\n  "));
        return;
    }
    panic!(
        "charts/tabby/crds is out of date with the api types:\n  {}\nregenerate with: {REGENERATE}",
        drift.join("\n  ")
    );
}

#[test]
fn crds_cover_every_kind_stored_in_kubernetes() {
    // Calico keeps these two elsewhere: Node data in annotations on the core Node, workload
    // endpoints in pods.
    let elsewhere = [Kind::Node, Kind::WorkloadEndpoint];
    let crds = crd::definitions();
    for kind in Kind::ALL {
        let found: Vec<&CustomResourceDefinition> = crds
            .iter()
            .filter(|c| c.spec.names.kind == kind.as_str())
            .collect();
        if elsewhere.contains(&kind) {
            assert!(found.is_empty(), "{kind} is not a custom resource");
            assert!(!crd::stored_as_crd(kind));
            continue;
        }
        assert!(crd::stored_as_crd(kind), "{kind}");
        let [c] = found[..] else {
            panic!("{kind}: expected one CRD, found {}", found.len());
        };
        let names = &c.spec.names;
        let lower = kind.as_str().to_ascii_lowercase();
        assert_eq!(
            c.metadata.name.as_deref(),
            Some(&*format!("{}.crd.projectcalico.org", kind.plural()))
        );
        assert_eq!(c.spec.group, "crd.projectcalico.org");
        assert_eq!(c.spec.scope, "Cluster", "{kind}");
        assert_eq!(names.plural, kind.plural());
        assert_eq!(names.singular.as_deref(), Some(lower.as_str()));
        assert_eq!(names.list_kind.as_deref(), Some(&*format!("{kind}List")));
        assert_eq!(
            names.short_names, None,
            "Calico gives these kinds no short names"
        );
        let [v] = &c.spec.versions[..] else {
            panic!("{kind}: expected exactly one version");
        };
        assert_eq!(
            (v.name.as_str(), v.served, v.storage),
            ("v1", true, true),
            "{kind}"
        );
        assert_eq!(
            crd::file_name(c),
            format!("crd.projectcalico.org_{}.yaml", kind.plural())
        );
    }
    assert_eq!(crds.len(), Kind::ALL.len() - elsewhere.len());
}

/// The `openAPIV3Schema` of a CRD, as JSON.
fn schema(c: &CustomResourceDefinition) -> Value {
    let v = c.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("every version has a schema");
    serde_json::to_value(v).unwrap()
}

/// Kubernetes' rules for a structural schema (apiextensions "Specifying a structural schema"),
/// as far as tabby's schemas could break them. Appends what is wrong at `path` to `errors`.
fn check_structural(s: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(obj) = s.as_object() else {
        errors.push(format!("{path}: a schema must be an object, not {s}"));
        return;
    };
    let flag = |k: &str| obj.get(k) == Some(&Value::Bool(true));
    let int_or_string = flag("x-kubernetes-int-or-string");
    let preserve = flag("x-kubernetes-preserve-unknown-fields");
    for key in [
        "$ref",
        "$schema",
        "definitions",
        "allOf",
        "oneOf",
        "anyOf",
        "not",
    ] {
        if obj.contains_key(key) {
            errors.push(format!("{path}: has `{key}`"));
        }
    }
    for key in [
        "default",
        "title",
        "uniqueItems",
        "additionalItems",
        "patternProperties",
    ] {
        if obj.contains_key(key) {
            errors.push(format!(
                "{path}: has `{key}`, which tabby's schemas leave out"
            ));
        }
    }
    match obj.get("type") {
        Some(Value::String(t))
            if ["object", "array", "string", "integer", "number", "boolean"]
                .contains(&t.as_str()) =>
        {
            if int_or_string {
                errors.push(format!("{path}: int-or-string with a type"));
            }
        }
        Some(other) => errors.push(format!("{path}: type must be one name, not {other}")),
        None if int_or_string || preserve => {}
        None => errors.push(format!("{path}: no type")),
    }
    if obj.get("nullable").is_some_and(|n| !n.is_boolean()) {
        errors.push(format!("{path}: nullable must be a boolean"));
    }
    let props = obj.get("properties").and_then(Value::as_object);
    if props.is_some() && obj.contains_key("additionalProperties") {
        errors.push(format!(
            "{path}: properties and additionalProperties together"
        ));
    }
    if let Some(props) = props {
        for (name, p) in props {
            check_structural(p, &format!("{path}.{name}"), errors);
        }
        for r in obj
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !r.as_str().is_some_and(|r| props.contains_key(r)) {
                errors.push(format!("{path}: required {r} is not a property"));
            }
        }
    }
    match obj.get("additionalProperties") {
        None => {}
        Some(a @ Value::Object(_)) => check_structural(a, &format!("{path}.*"), errors),
        Some(other) => errors.push(format!(
            "{path}: additionalProperties {other} is not a schema"
        )),
    }
    match obj.get("items") {
        None if obj.get("type") == Some(&Value::from("array")) => {
            errors.push(format!("{path}: an array without items"));
        }
        None => {}
        Some(i @ Value::Object(_)) => check_structural(i, &format!("{path}[]"), errors),
        Some(other) => errors.push(format!("{path}: items must be one schema, not {other}")),
    }
}

#[test]
fn crds_are_structural() {
    for c in crd::definitions() {
        let kind = c.spec.names.kind.clone();
        let s = schema(&c);
        let mut errors = Vec::new();
        check_structural(&s, &kind, &mut errors);
        assert!(
            errors.is_empty(),
            "{kind} schema is not structural:\n  {}",
            errors.join("\n  ")
        );

        assert_eq!(s["type"], "object", "{kind}");
        let top: Vec<&String> = s["properties"].as_object().unwrap().keys().collect();
        assert_eq!(
            top,
            ["apiVersion", "kind", "metadata", "spec", "status"],
            "{kind}"
        );
        // Kubernetes validates metadata itself; a CRD may say no more than that it is an object.
        assert_eq!(
            s["properties"]["metadata"],
            serde_json::json!({"type": "object"}),
            "{kind}"
        );
        assert_eq!(s["properties"]["spec"]["type"], "object", "{kind}");
        assert!(
            s["properties"]["spec"]["properties"]
                .as_object()
                .is_some_and(|p| !p.is_empty()),
            "{kind}: spec has no properties"
        );
    }
}

/// The structural check is not vacuous: each rule it enforces catches a schema that breaks it.
#[test]
fn crds_structural_check_finds_violations() {
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "a": {"$ref": "#/definitions/A", "type": "object"},
            "b": {"description": "no type"},
            "c": {"type": ["string", "null"]},
            "d": {"type": "object", "properties": {"x": {"type": "string"}},
                  "additionalProperties": {"type": "string"}},
            "e": {"x-kubernetes-int-or-string": true, "type": "integer"},
            "f": {"anyOf": [{"type": "string"}, {"type": "integer"}], "type": "string"},
            "g": {"type": "array"},
        },
        "required": ["h"],
    });
    let mut errors = Vec::new();
    check_structural(&bad, "T", &mut errors);
    for path in [
        "T.a:",
        "T.b:",
        "T.c:",
        "T.d:",
        "T.e:",
        "T.f:",
        "T.g:",
        "T: required",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(path)),
            "{path}: {errors:#?}"
        );
    }
}

/// Checks `value` against `schema` the way the API server would prune and validate it: every
/// field must be a property of its object (else it would be pruned), of the schema's type, and
/// one of the schema's `enum` values if it lists some.
fn check_fits(value: &Value, schema: &Value, path: &str, errors: &mut Vec<String>) {
    let flag = |k: &str| schema.get(k) == Some(&Value::Bool(true));
    if value.is_null() {
        if !flag("nullable") {
            errors.push(format!("{path}: null, and the schema is not nullable"));
        }
        return;
    }
    if flag("x-kubernetes-int-or-string") {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            errors.push(format!(
                "{path}: {value} is neither an integer nor a string"
            ));
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let fits = match ty {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => flag("x-kubernetes-preserve-unknown-fields"),
    };
    if !fits {
        errors.push(format!(
            "{path}: {value} is not of type {}",
            ty.unwrap_or("?")
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    let bound = |k: &str| schema.get(k).and_then(Value::as_f64);
    if let Some(n) = value.as_f64()
        && (bound("minimum").is_some_and(|min| n < min)
            || bound("maximum").is_some_and(|max| n > max))
    {
        errors.push(format!("{path}: {n} is outside the schema's bounds"));
    }
    match value {
        Value::Object(fields) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties");
            for (k, v) in fields {
                let sub = format!("{path}.{k}");
                match (props.and_then(|p| p.get(k)), extra) {
                    (Some(s), _) | (None, Some(s)) => check_fits(v, s, &sub, errors),
                    (None, None) if flag("x-kubernetes-preserve-unknown-fields") => {}
                    (None, None) => errors.push(format!("{sub}: not in the schema")),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_fits(v, &schema["items"], &format!("{path}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

/// The object as it is stored in Kubernetes: apiVersion `crd.projectcalico.org/v1`, and
/// BlockAffinity's `deleted` as the string Calico stores (see the `crd` module).
fn stored_form(resource: &Resource) -> Value {
    let mut v = serde_json::to_value(resource).unwrap();
    v["apiVersion"] = format!("{}/{}", crd::GROUP, crd::VERSION).into();
    if resource.kind() == Kind::BlockAffinity {
        let deleted = v["spec"]["deleted"].as_bool().unwrap_or(false);
        v["spec"]["deleted"] = deleted.to_string().into();
    }
    v
}

/// What does not fit, resource by resource, with the resource named.
fn misfits(resources: &[Resource]) -> Vec<String> {
    let schemas: BTreeMap<String, Value> = crd::definitions()
        .iter()
        .map(|c| (c.spec.names.kind.clone(), schema(c)))
        .collect();
    let mut errors = Vec::new();
    for r in resources.iter().filter(|r| crd::stored_as_crd(r.kind())) {
        let at = format!("{} {}", r.kind(), r.name());
        let mut stored = stored_form(r);
        // The API server checks metadata against ObjectMeta itself; the CRD only says "object".
        stored["metadata"] = serde_json::json!({});
        check_fits(&stored, &schemas[r.kind().as_str()], &at, &mut errors);
    }
    errors
}

/// The checker is not vacuous: it finds a field the schema lacks, a value of the wrong type, a
/// value outside an enum and a number outside its bounds.
#[test]
fn crds_fit_check_finds_misfits() {
    let pool = api::IPPool::new(
        "pool",
        api::IPPoolSpec {
            cidr: Some("198.18.0.0/16".parse().unwrap()),
            block_size: Some(26),
            ..Default::default()
        },
    );
    assert_eq!(misfits(&[pool.clone().into()]), Vec::<String>::new());
    let c = crd::definition(Kind::IPPool).unwrap();
    let mut v = serde_json::to_value(&pool).unwrap();
    v["metadata"] = serde_json::json!({});
    v["spec"]["bogus"] = true.into();
    v["spec"]["natOutgoing"] = "yes".into();
    v["spec"]["ipipMode"] = "Sometimes".into();
    v["spec"]["blockSize"] = 300.into();
    let mut errors = Vec::new();
    check_fits(&v, &schema(&c), "IPPool pool", &mut errors);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    for field in ["bogus", "natOutgoing", "ipipMode", "blockSize"] {
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("IPPool pool.spec.{field}:"))),
            "{field}: {errors:#?}"
        );
    }
}

#[test]
fn crds_accept_documented_manifests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/tests/manifests");
    let mut seen = BTreeMap::<Kind, usize>::new();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("api/tests/manifests exists")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&path).unwrap();
        // The api types reject unknown fields, so every field written in the manifest is in
        // what they read; serializing them back gives every field that was set.
        let resources = api::parse_documents(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        for r in resources.iter().filter(|r| crd::stored_as_crd(r.kind())) {
            *seen.entry(r.kind()).or_default() += 1;
        }
        let errors = misfits(&resources);
        assert!(errors.is_empty(), "{name}:\n  {}", errors.join("\n  "));
    }
    for kind in [
        Kind::IPPool,
        Kind::BGPConfiguration,
        Kind::BGPPeer,
        Kind::FelixConfiguration,
        Kind::IPAMConfig,
        Kind::ClusterInformation,
    ] {
        assert!(
            seen.contains_key(&kind),
            "no manifest of kind {kind} was checked"
        );
    }
}

/// IPAM objects are written by tabby, not by operators, so no manifest documents them; these
/// have every field set, in the shapes tabby's IPAM writes.
#[test]
fn crds_accept_ipam_objects() {
    let block = api::IPAMBlock::new(
        "198-18-0-64-26",
        api::IPAMBlockSpec {
            cidr: Some("198.18.0.64/26".parse().unwrap()),
            affinity: Some("host:node-1".into()),
            affinity_claim_time: Some("2025-01-01T00:00:00Z".into()),
            strict_affinity: false,
            allocations: vec![Some(0), None, Some(1)],
            unallocated: vec![1],
            attributes: vec![
                api::AllocationAttribute {
                    handle_id: Some("k8s-pod-network.abc".into()),
                    secondary: [
                        ("namespace".to_string(), "default".to_string()),
                        ("pod".to_string(), "web-0".to_string()),
                    ]
                    .into(),
                    released_at: Some("2026-11-23T08:00:00Z".into()),
                    ..Default::default()
                },
                api::AllocationAttribute {
                    handle_id: Some("ipip-tunnel-addr-node-1".into()),
                    secondary: [("node".to_string(), "node-1".to_string())].into(),
                    ..Default::default()
                },
            ],
            deleted: false,
            sequence_number: Some(7),
            sequence_number_for_allocation: [("0".to_string(), 3), ("2".to_string(), 6)].into(),
        },
    );
    let affinity = api::BlockAffinity::new(
        "node-1-198-18-0-64-26",
        api::BlockAffinitySpec {
            state: api::AffinityState::Confirmed,
            node: "node-1".into(),
            cidr: Some("198.18.0.64/26".parse().unwrap()),
            deleted: true,
            type_: Some("host".into()),
        },
    );
    let handle = api::IPAMHandle::new(
        "k8s-pod-network.abc",
        api::IPAMHandleSpec {
            handle_id: "k8s-pod-network.abc".into(),
            block: [("198.18.0.64/26".to_string(), 1)].into(),
            deleted: false,
        },
    );
    let config = api::IPAMConfig::new(
        "default",
        api::IPAMConfigSpec {
            strict_affinity: true,
            auto_allocate_blocks: Some(true),
            max_blocks_per_host: Some(4),
        },
    );
    let resources: Vec<Resource> =
        vec![block.into(), affinity.into(), handle.into(), config.into()];
    let errors = misfits(&resources);
    assert!(errors.is_empty(), "\n  {}", errors.join("\n  "));
}

#[test]
fn crds_are_readable_yaml() {
    for c in crd::definitions() {
        let name = crd::file_name(&c);
        let text = crd::to_yaml(&c);
        assert!(
            text.starts_with("# Generated") && text.contains(REGENERATE),
            "{name} does not say how it was made"
        );
        // testapi has no YAML reader of its own; api's (serde-saphyr) reads the text and then
        // refuses the document only for not being a Calico resource, naming what it read.
        let Err(api::ParseError::Document(e)) = api::parse_documents(&text) else {
            panic!("{name} is not a YAML document api can read");
        };
        assert_eq!(
            e.kind.as_deref(),
            Some("CustomResourceDefinition"),
            "{name}"
        );
        assert_eq!(e.name, c.metadata.name, "{name}");
        assert_eq!(e.field.as_deref(), Some("apiVersion"), "{name}");
        assert!(
            e.reason.contains("apiextensions.k8s.io/v1"),
            "{name}: {}",
            e.reason
        );
    }
}
