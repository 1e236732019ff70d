//! CustomResourceDefinitions for Calico's kinds, generated from the `api` types.
//!
//! In a Kubernetes cluster Calico keeps its resources as custom resources in
//! `crd.projectcalico.org/v1`, and tabby keeps them in the same place, so that a cluster can move
//! between the two. The manifests in `charts/tabby/crds/` are the output of [`definitions`] and
//! [`to_yaml`]; testapi's `crds` test fails when they drift from the types
//! (`TABBY_UPDATE_CRDS=1 cargo nextest run -p testapi crds` rewrites them).
//!
//! What carries over from Calico's own CRDs (libcalico-go/config/crd): the group, one version `v1`
//! that is served and stored, every kind Cluster-scoped, the names (`ippools.crd.projectcalico.org`,
//! singular `ippool`, list kind `IPPoolList`, no short names), and the stored form of each spec.
//!
//! The `spec` schema is derived (schemars) from the spec type tabby reads and writes
//! ([`api::IPPoolSpec`] and so on), then put in the form Kubernetes requires of a structural
//! schema: everything inline (no `$ref`), one `type` per node with `nullable: true` for optional
//! fields, `x-kubernetes-int-or-string` for numbers-or-strings, no `additionalProperties` beside
//! `properties`. Two choices differ from what schemars would write:
//!
//! - No `default`s. tabby's types apply Calico's defaults when they read an object; an API server
//!   that filled them in as well would change objects behind tabby's back.
//! - Formats Kubernetes does not know (`uint32`, …) are dropped; the bounds stay.
//!
//! An optional enum (`ipipMode`) lists `null` among its values: the API server checks `enum`
//! even for a nullable field, and Kubernetes accepts a literal null there since 1.23.
//!
//! `status` is kept as written (`x-kubernetes-preserve-unknown-fields`): every object tabby
//! stores carries its status through untouched ([`api::Object::status`]), so none may be pruned.
//! There is no status subresource; the status is written with the object.
//!
//! One field is stored in a different form than the api type has it: BlockAffinity's `deleted` is
//! a string (`"true"` / `"false"`) in Calico's CRD ("for compatibility with older releases that
//! mistakenly treat this field as a string"; Calico's `ipam_affinity_v1.go` converts), and the
//! CRD says so; the Kubernetes backend converts the boolean on the way in and out.

use std::fmt::Write as _;

use api::Kind;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames, CustomResourceDefinitionSpec,
    CustomResourceDefinitionVersion, CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::generate::SchemaSettings;
use schemars::transform::{Transform, transform_subschemas};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

/// Calico's API group for resources stored as custom resources.
pub const GROUP: &str = "crd.projectcalico.org";
/// The one version of [`GROUP`], served and stored.
pub const VERSION: &str = "v1";

/// Whether resources of this kind are stored as custom resources. Calico keeps the other two
/// elsewhere in a Kubernetes cluster: a Node's BGP data in `projectcalico.org/*` annotations on
/// the core Node, a WorkloadEndpoint in the pod it describes.
pub fn stored_as_crd(kind: Kind) -> bool {
    !matches!(kind, Kind::Node | Kind::WorkloadEndpoint)
}

/// The CRD's name: `<plural>.crd.projectcalico.org`.
pub fn crd_name(kind: Kind) -> String {
    format!("{}.{GROUP}", kind.plural())
}

/// The file a CRD is kept in, named as Calico names its own: `crd.projectcalico.org_ippools.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// The CRD of every kind [`stored_as_crd`], in [`Kind::ALL`] order.
///
/// # Panics
///
/// If a spec type's schema cannot be put in structural form (a type whose serde form the
/// conversion does not know); the `crds` test runs this on every build of the types.
pub fn definitions() -> Vec<CustomResourceDefinition> {
    Kind::ALL.into_iter().filter_map(definition).collect()
}

/// The CRD of one kind, or `None` if the kind is not [`stored_as_crd`].
///
/// # Panics
///
/// As [`definitions`].
pub fn definition(kind: Kind) -> Option<CustomResourceDefinition> {
    let spec = spec_schema(kind)?;
    let root = json!({
        "description": format!(
            "Calico's {kind} (projectcalico.org/v3 {kind}) as stored in Kubernetes."
        ),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": format!("Always {GROUP}/{VERSION}."),
                "type": "string",
            },
            "kind": {
                "description": format!("Always {kind}."),
                "type": "string",
            },
            "metadata": {"type": "object"},
            "spec": spec,
            "status": {
                "description": "Kept as written; tabby does not interpret it.",
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
            },
        },
    });
    let singular = kind.as_str().to_ascii_lowercase();
    Some(CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(crd_name(kind)),
            ..ObjectMeta::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: GROUP.to_string(),
            names: CustomResourceDefinitionNames {
                kind: kind.as_str().to_string(),
                list_kind: Some(format!("{kind}List")),
                plural: kind.plural().to_string(),
                singular: Some(singular),
                ..CustomResourceDefinitionNames::default()
            },
            scope: "Cluster".to_string(),
            versions: vec![CustomResourceDefinitionVersion {
                name: VERSION.to_string(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(schema_props(kind, root)),
                }),
                ..CustomResourceDefinitionVersion::default()
            }],
            ..CustomResourceDefinitionSpec::default()
        },
        status: None,
    })
}

/// The schema of one kind's `spec`, in structural form.
fn spec_schema(kind: Kind) -> Option<Value> {
    let mut spec = match kind {
        Kind::IPPool => structural::<api::IPPoolSpec>(),
        Kind::BGPConfiguration => structural::<api::BGPConfigurationSpec>(),
        Kind::BGPPeer => structural::<api::BGPPeerSpec>(),
        Kind::FelixConfiguration => structural::<api::FelixConfigurationSpec>(),
        Kind::IPAMConfig => structural::<api::IPAMConfigSpec>(),
        Kind::ClusterInformation => structural::<api::ClusterInformationSpec>(),
        Kind::IPAMBlock => structural::<api::IPAMBlockSpec>(),
        Kind::BlockAffinity => structural::<api::BlockAffinitySpec>(),
        Kind::IPAMHandle => structural::<api::IPAMHandleSpec>(),
        Kind::Node | Kind::WorkloadEndpoint => return None,
    };
    let obj = spec.as_object_mut().expect("a spec type is a struct");
    obj.entry("description").or_insert_with(|| {
        format!("The {kind}'s settings, as in projectcalico.org/v3 and calicoctl.").into()
    });
    if kind == Kind::BlockAffinity {
        let deleted = obj
            .get_mut("properties")
            .and_then(|p| p.get_mut("deleted"))
            .expect("BlockAffinitySpec has a `deleted` field");
        *deleted = json!({
            "description": "\"true\" while the affinity is being deleted. A string, as Calico \
                            stores it.",
            "type": "string",
        });
    }
    Some(spec)
}

/// `T`'s schema, inlined and in the form Kubernetes accepts.
fn structural<T: JsonSchema>() -> Value {
    let mut generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(kube_core::schema::StructuralSchemaRewriter)
        .with_transform(kube_core::schema::OptionalEnum)
        .with_transform(kube_core::schema::OptionalIntOrString)
        .with_transform(KubernetesForm)
        .into_generator();
    generator.root_schema_for::<T>().to_value()
}

/// Formats Kubernetes' OpenAPI validation knows (k8s.io/kube-openapi `strfmt`); any other format
/// would be ignored by the API server and warned about by kubectl.
const KNOWN_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
    "duration",
    "cidr",
    "ipv4",
    "ipv6",
    "mac",
    "uri",
    "uuid",
    "hostname",
    "email",
];

/// What the kube-core transforms leave for us: schemars keywords Kubernetes rejects or that would
/// change stored objects (`default`), formats it does not know, and the number-or-string fields
/// the api types mark with `x-kubernetes-int-or-string`, whose `type` (and `anyOf` of an untagged
/// enum) must go.
#[derive(Clone)]
struct KubernetesForm;

impl Transform for KubernetesForm {
    fn transform(&mut self, schema: &mut Schema) {
        transform_subschemas(self, schema);
        let Some(obj) = schema.as_object_mut() else {
            return;
        };
        for key in [
            "title",
            "default",
            "examples",
            "deprecated",
            "readOnly",
            "writeOnly",
        ] {
            obj.remove(key);
        }
        if obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            for key in ["type", "format", "minimum", "maximum", "anyOf", "oneOf"] {
                obj.remove(key);
            }
        }
        if let Some(Value::String(format)) = obj.get("format")
            && !KNOWN_FORMATS.contains(&format.as_str())
        {
            obj.remove("format");
        }
    }
}

/// Converts a schema to k8s-openapi's type, checking that nothing is lost on the way (the
/// conversion silently drops keys `JSONSchemaProps` has no field for).
fn schema_props(kind: Kind, schema: Value) -> JSONSchemaProps {
    let props: JSONSchemaProps = serde_json::from_value(schema.clone())
        .unwrap_or_else(|e| panic!("{kind} schema is not a JSONSchemaProps: {e}"));
    let back = serde_json::to_value(&props).expect("JSONSchemaProps serializes");
    if let Some(path) = first_difference(&schema, &back, String::new()) {
        panic!("{kind} schema: {path} does not survive conversion to JSONSchemaProps");
    }
    props
}

/// Where two JSON values first differ, numbers compared by value (`255` equals `255.0`).
fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => a
            .keys()
            .chain(b.keys().filter(|k| !a.contains_key(*k)))
            .find_map(|k| match (a.get(k), b.get(k)) {
                (Some(x), Some(y)) => first_difference(x, y, format!("{path}.{k}")),
                _ => Some(format!("{path}.{k}")),
            }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, format!("{path}[{i}]"))),
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(if path.is_empty() { ".".into() } else { path }),
    }
}

/// One CRD as a YAML document, headed by a comment that says where it comes from. Keys are
/// sorted and numbers with no fraction are written as integers, so the text depends only on the
/// definition.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    let value = serde_json::to_value(crd).expect("a CustomResourceDefinition serializes");
    let mut out = String::from(
        "# Generated from tabby's Rust types (datastore/src/kubernetes/crd.rs); do not edit.\n\
         # Regenerate: TABBY_UPDATE_CRDS=1 cargo nextest run -p testapi crds\n",
    );
    match &value {
        Value::Object(map) => write_map(&mut out, map, 0),
        _ => unreachable!("a CustomResourceDefinition serializes as a mapping"),
    }
    out
}

/// A block mapping at `indent` spaces, keys sorted.
fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for (i, key) in keys.into_iter().enumerate() {
        // The first entry of a mapping inside a sequence item follows its `- `.
        if i > 0 || !out.ends_with("- ") {
            pad(out, indent);
        }
        out.push_str(&scalar_text(key));
        out.push(':');
        write_value(out, &map[key], indent);
    }
}

/// What follows `key:` (or `-`): a scalar on the same line, or a nested block on the next ones.
fn write_value(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            for item in items {
                pad(out, indent + 2);
                out.push('-');
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        out.push(' ');
                        write_map(out, m, indent + 4);
                    }
                    _ => write_value(out, item, indent + 2),
                }
            }
        }
        Value::String(s) if literal_block_ok(s) => {
            out.push_str(" |-\n");
            for line in s.split('\n') {
                if !line.is_empty() {
                    pad(out, indent + 2);
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        _ => {
            out.push(' ');
            out.push_str(&match value {
                Value::Object(_) => "{}".to_string(),
                Value::Array(_) => "[]".to_string(),
                Value::String(s) => scalar_text(s),
                Value::Number(n) => number_text(n),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".to_string(),
            });
            out.push('\n');
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn number_text(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => n.to_string(),
    }
}

/// A multi-line string that reads back exactly from a `|-` block: no trailing newline (which
/// `-` would strip), a first line not starting with a space (which would change the block's
/// indentation), and nothing YAML does not allow unescaped.
fn literal_block_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.ends_with('\n')
        && !s.starts_with([' ', '\t', '\n'])
        && s.chars().all(|c| c == '\n' || c == '\t' || printable(c))
}

fn printable(c: char) -> bool {
    !c.is_control() && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// A string as a YAML scalar: plain when it cannot be read as anything but that string,
/// single-quoted when it is one printable line, else double-quoted with escapes.
fn scalar_text(s: &str) -> String {
    if plain_ok(s) {
        return s.to_string();
    }
    if s.chars().all(printable) {
        return format!("'{}'", s.replace('\'', "''"));
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c if printable(c) => q.push(c),
            c => {
                let _ = write!(q, "\\u{:04x}", c as u32);
            }
        }
    }
    q.push('"');
    q
}

/// Conservative: starts with a letter or `/`, uses only characters that are never YAML
/// indicators in the middle of a plain scalar (`:` only when no space follows), and is not a
/// word YAML 1.1 reads as a boolean or null.
fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    const SPECIAL_WORDS: &[&str] = &[
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
    ];
    (first.is_ascii_alphabetic() || first == '/')
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._/-()+,;=<>:'\"[]*&!%@|".contains(c))
        && !SPECIAL_WORDS.iter().any(|w| s.eq_ignore_ascii_case(w))
}
