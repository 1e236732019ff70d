//! Reading and writing resource files the way `calicoctl apply -f` does: YAML with one or more
//! documents (`---`), JSON (one object, several, or an array), `kind: List` and typed lists such
//! as `IPPoolList`. Every error names the document, the resource and the field.
//!
//! YAML is first read into a `serde_json::Value` (serde-saphyr), then each document is typed
//! through `serde_path_to_error`, which is what gives errors their field path.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{API_VERSION, Kind, Resource};

/// `apiVersion` of Kubernetes' generic `kind: List`.
const CORE_V1: &str = "v1";
/// The group Calico stores its CRDs in; resources in files are written in v3 instead.
const CRD_API_VERSION: &str = "crd.projectcalico.org/v1";

/// Why a file of resources could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text is not YAML at all (bad indentation, unclosed quote, …).
    #[error("reading YAML: {source}")]
    Yaml {
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// The text looked like JSON (it starts with `{` or `[`) but is not.
    #[error("reading JSON: {source}")]
    Json {
        #[source]
        source: serde_json::Error,
    },
    /// One document is well-formed but is not a resource tabby accepts.
    #[error(transparent)]
    Document(#[from] DocumentError),
}

impl ParseError {
    /// The path of the offending field (`spec.blockSize`), when the error is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ParseError::Document(d) => d.field.as_deref(),
            _ => None,
        }
    }
}

/// What is wrong with one document (or one item of a list document).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct DocumentError {
    /// The document's position in the file, counting from 1 (a JSON array's elements count as
    /// documents).
    pub index: usize,
    /// The position in `items` when the document is a list, counting from 0.
    pub item: Option<usize>,
    /// The `kind` the document says it is, if it says.
    pub kind: Option<String>,
    /// `metadata.name`, if the document has one.
    pub name: Option<String>,
    /// The path of the offending field (`spec.blockSize`), if the error is about one.
    pub field: Option<String>,
    pub reason: String,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.index)?;
        if let Some(item) = self.item {
            write!(f, ", items[{item}]")?;
        }
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) if !n.is_empty() => write!(f, " ({k} {n})")?,
            (Some(k), _) => write!(f, " ({k})")?,
            (None, Some(n)) if !n.is_empty() => write!(f, " ({n})")?,
            _ => {}
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.reason)
    }
}

/// Where in the file a document came from, to build errors with.
#[derive(Clone, Copy)]
struct At {
    index: usize,
    item: Option<usize>,
}

impl At {
    fn error(self, doc: &Value, field: Option<&str>, reason: impl Into<String>) -> DocumentError {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        DocumentError {
            index: self.index,
            item: self.item,
            kind: text(doc.get("kind")),
            name: text(doc.get("metadata").and_then(|m| m.get("name"))),
            field: field.map(str::to_string),
            reason: reason.into(),
        }
    }
}

/// Reads every resource in `text`: YAML (several documents separated by `---`), or JSON (an
/// object, several concatenated objects, or an array). `kind: List` and typed lists
/// (`IPPoolList`) are flattened into their items. Empty documents are skipped. Resources are
/// typed but not validated: call [`Resource::validate`] for that.
pub fn parse_documents(text: &str) -> Result<Vec<Resource>, ParseError> {
    let docs = read_values(text)?;
    let mut out = Vec::new();
    for (n, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let at = At {
            index: n + 1,
            item: None,
        };
        read_document(doc, at, &mut out)?;
    }
    Ok(out)
}

/// Reads one resource, with errors as [`parse_documents`] gives them for document 1.
pub fn parse_one(value: Value) -> Result<Resource, DocumentError> {
    let at = At {
        index: 1,
        item: None,
    };
    let mut out = Vec::new();
    read_document(value.clone(), at, &mut out)?;
    match out.len() {
        1 => Ok(out.remove(0)),
        n => Err(at.error(&value, None, format!("expected one resource, found {n}"))),
    }
}

fn read_values(text: &str) -> Result<Vec<Value>, ParseError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut docs = Vec::new();
        for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            match v.map_err(|source| ParseError::Json { source })? {
                Value::Array(items) => docs.extend(items),
                other => docs.push(other),
            }
        }
        return Ok(docs);
    }
    serde_saphyr::from_multiple::<Value>(text).map_err(|source| ParseError::Yaml {
        source: Box::new(source),
    })
}

/// The kind a `kind:` value names: Calico's names, plus `IPAMConfiguration`, the v3 API's name
/// for what its CRD (and tabby) call IPAMConfig.
fn kind_named(name: &str) -> Option<Kind> {
    if name == "IPAMConfiguration" {
        return Some(Kind::IPAMConfig);
    }
    Kind::ALL.into_iter().find(|k| k.as_str() == name)
}

fn check_api_version(doc: &Value, at: At, allow_core_v1: bool) -> Result<(), DocumentError> {
    match doc.get("apiVersion") {
        None | Some(Value::Null) => Err(at.error(
            doc,
            Some("apiVersion"),
            format!("missing; resources are written as apiVersion: {API_VERSION}"),
        )),
        Some(Value::String(v)) if v == API_VERSION => Ok(()),
        Some(Value::String(v)) if allow_core_v1 && v == CORE_V1 => Ok(()),
        Some(Value::String(v)) if v == CRD_API_VERSION => Err(at.error(
            doc,
            Some("apiVersion"),
            format!(
                "{CRD_API_VERSION} is the CRD form Calico stores in Kubernetes; write resources \
                 as {API_VERSION}"
            ),
        )),
        Some(v) => Err(at.error(
            doc,
            Some("apiVersion"),
            format!("{v} is not supported; expected {API_VERSION}"),
        )),
    }
}

fn read_document(doc: Value, at: At, out: &mut Vec<Resource>) -> Result<(), DocumentError> {
    if !doc.is_object() {
        return Err(at.error(
            &doc,
            None,
            "expected a mapping with apiVersion, kind, metadata and spec",
        ));
    }
    let kind = match doc.get("kind") {
        Some(Value::String(k)) => k.clone(),
        None | Some(Value::Null) => return Err(at.error(&doc, Some("kind"), "missing")),
        Some(other) => return Err(at.error(&doc, Some("kind"), format!("{other} is not a kind"))),
    };
    if kind == "List" {
        check_api_version(&doc, at, true)?;
        return read_list(doc, at, None, out);
    }
    if let Some(k) = kind.strip_suffix("List").and_then(kind_named) {
        check_api_version(&doc, at, false)?;
        return read_list(doc, at, Some(k), out);
    }
    check_api_version(&doc, at, false)?;
    let Some(k) = kind_named(&kind) else {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(at.error(
            &doc,
            Some("kind"),
            format!("unknown kind {kind:?}; tabby handles {}", known.join(", ")),
        ));
    };
    out.push(typed(doc, k, at)?);
    Ok(())
}

/// A `kind: List` (items of any kind, each complete) or a typed list such as `IPPoolList`
/// (items of that kind, which may leave out apiVersion and kind, as `kubectl` prints them).
fn read_list(
    mut doc: Value,
    at: At,
    kind: Option<Kind>,
    out: &mut Vec<Resource>,
) -> Result<(), DocumentError> {
    if let Some(extra) = doc.as_object().and_then(|m| {
        m.keys()
            .find(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "items"))
    }) {
        return Err(at.error(
            &doc,
            Some(extra),
            format!(
                "unknown field `{extra}`, expected one of `apiVersion`, `kind`, `metadata`, `items`"
            ),
        ));
    }
    let items = match doc.get_mut("items").map(Value::take) {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(at.error(&doc, Some("items"), "must be a list of resources")),
    };
    for (i, mut item) in items.into_iter().enumerate() {
        let item_at = At {
            index: at.index,
            item: Some(i),
        };
        if let (Some(k), Some(map)) = (kind, item.as_object_mut()) {
            map.entry("apiVersion")
                .or_insert_with(|| Value::from(API_VERSION));
            let item_kind = map.entry("kind").or_insert_with(|| Value::from(k.as_str()));
            if item_kind.as_str().and_then(kind_named) != Some(k) {
                let found = item_kind.clone();
                return Err(item_at.error(
                    &item,
                    Some("kind"),
                    format!("{found} in a {k}List; items must all be {k}"),
                ));
            }
        }
        if item.is_null() {
            continue;
        }
        if item
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List"))
        {
            return Err(item_at.error(&item, Some("kind"), "lists cannot be nested"));
        }
        read_document(item, item_at, out)?;
    }
    Ok(())
}

/// How many scalars one document may have re-read as another type (see [`coerce`]).
const MAX_COERCIONS: usize = 256;

type PathError = serde_path_to_error::Error<serde_json::Error>;

/// Types one document as `kind`, with the failing field's path in the error.
fn typed(mut doc: Value, kind: Kind, at: At) -> Result<Resource, DocumentError> {
    // Store the canonical kind name (an `IPAMConfiguration` becomes an `IPAMConfig`).
    if let Some(map) = doc.as_object_mut() {
        map.insert("kind".to_string(), Value::from(kind.as_str()));
    }
    let mut coercions = 0;
    loop {
        let err = match type_as(doc.clone(), kind) {
            Ok(resource) => return Ok(resource),
            Err(e) => e,
        };
        if coercions < MAX_COERCIONS && coerce(&mut doc, &err) {
            coercions += 1;
            continue;
        }
        let path = err.path().to_string();
        let field = (path != ".").then_some(path);
        return Err(at.error(&doc, field.as_deref(), err.into_inner().to_string()));
    }
}

fn type_as(doc: Value, kind: Kind) -> Result<Resource, PathError> {
    fn de<T: DeserializeOwned>(v: Value) -> Result<T, PathError> {
        serde_path_to_error::deserialize(v)
    }
    Ok(match kind {
        Kind::IPPool => Resource::IPPool(de(doc)?),
        Kind::Node => Resource::Node(de(doc)?),
        Kind::BGPConfiguration => Resource::BGPConfiguration(de(doc)?),
        Kind::BGPPeer => Resource::BGPPeer(de(doc)?),
        Kind::FelixConfiguration => Resource::FelixConfiguration(de(doc)?),
        Kind::IPAMConfig => Resource::IPAMConfig(de(doc)?),
        Kind::ClusterInformation => Resource::ClusterInformation(de(doc)?),
        Kind::WorkloadEndpoint => Resource::WorkloadEndpoint(de(doc)?),
        Kind::IPAMBlock => Resource::IPAMBlock(de(doc)?),
        Kind::BlockAffinity => Resource::BlockAffinity(de(doc)?),
        Kind::IPAMHandle => Resource::IPAMHandle(de(doc)?),
    })
}

/// calicoctl reads YAML through `sigs.k8s.io/yaml`, which types scalars by the Go field they
/// land in: `rack: 1` fills a string label with `"1"`, and YAML 1.1's `yes`/`on`/`off` fill a
/// bool. When typing failed on such a scalar, rewrite it the way calicoctl would read it and
/// report whether anything changed.
fn coerce(doc: &mut Value, err: &PathError) -> bool {
    let message = err.inner().to_string();
    let Some(slot) = value_at(doc, err.path()) else {
        return false;
    };
    if message.ends_with("expected a string") {
        let text = match slot {
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return false,
        };
        *slot = Value::String(text);
        return true;
    }
    if message.ends_with("expected a boolean")
        && let Value::String(s) = slot
    {
        let b = match s.as_str() {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
                true
            }
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False"
            | "FALSE" => false,
            _ => return false,
        };
        *slot = Value::Bool(b);
        return true;
    }
    false
}

fn value_at<'v>(doc: &'v mut Value, path: &serde_path_to_error::Path) -> Option<&'v mut Value> {
    use serde_path_to_error::Segment;
    let mut v = doc;
    for segment in path.iter() {
        v = match segment {
            Segment::Seq { index } => v.get_mut(*index)?,
            Segment::Map { key } => v.get_mut(key.as_str())?,
            Segment::Enum { .. } | Segment::Unknown => return None,
        };
    }
    Some(v)
}

fn yaml<T: serde::Serialize>(value: &T) -> String {
    // Our types are plain structs, strings, numbers and maps with string keys, all of which
    // YAML can represent; a failure here would be a bug in serde-saphyr.
    serde_saphyr::to_string(value).expect("resources always serialize to YAML")
}

/// One resource as a YAML document, as `calicoctl get -o yaml` prints it.
pub fn to_yaml(resource: &Resource) -> String {
    yaml(resource)
}

/// Several resources as a multi-document YAML stream (`---` between documents), which
/// [`parse_documents`] reads back.
pub fn to_yaml_documents(resources: &[Resource]) -> String {
    resources
        .iter()
        .map(to_yaml)
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A list document: `apiVersion`, `kind`, `items`, in the order `calicoctl` prints them.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ListDocument<'a> {
    api_version: &'static str,
    kind: String,
    items: &'a [Resource],
}

fn list_document(resources: &[Resource]) -> ListDocument<'_> {
    let first = resources.first().map(Resource::kind);
    let same = first.filter(|k| resources.iter().all(|r| r.kind() == *k));
    let (api_version, kind) = match same {
        Some(k) => (API_VERSION, format!("{k}List")),
        None => (CORE_V1, "List".to_string()),
    };
    ListDocument {
        api_version,
        kind,
        items: resources,
    }
}

/// Several resources as one list document, as `calicoctl get -o yaml` prints a listing: a typed
/// list (`IPPoolList`) when all are of one kind, else a `kind: List`.
pub fn to_list_value(resources: &[Resource]) -> Value {
    serde_json::to_value(list_document(resources)).expect("resources always serialize to JSON")
}

/// [`to_list_value`] as YAML, fields in document order.
pub fn to_yaml_list(resources: &[Resource]) -> String {
    yaml(&list_document(resources))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 198.18.0.0/16
  blockSize: 26
";

    fn doc_err(text: &str) -> DocumentError {
        match parse_documents(text) {
            Err(ParseError::Document(d)) => d,
            other => panic!("expected a document error, got {other:?}"),
        }
    }

    #[test]
    fn one_yaml_document() {
        let res = parse_documents(POOL).unwrap();
        assert_eq!(res.len(), 1);
        assert_eq!(res[0].kind(), Kind::IPPool);
        assert_eq!(res[0].name(), "pool-a");
    }

    #[test]
    fn wrong_type_names_document_resource_and_field() {
        let text = format!(
            "{POOL}---\n{}",
            POOL.replace("pool-a", "pool-b").replace("26", "x")
        );
        let e = doc_err(&text);
        assert_eq!(e.field.as_deref(), Some("spec.blockSize"));
        assert_eq!(
            e.to_string(),
            "document 2 (IPPool pool-b): spec.blockSize: invalid type: string \"x\", expected u8"
        );
    }

    #[test]
    fn unknown_field_is_an_error() {
        let e = doc_err(&POOL.replace("blockSize: 26", "ipipmod: Always"));
        assert!(
            e.reason
                .starts_with("unknown field `ipipmod`, expected one of"),
            "{e}"
        );
        assert_eq!(e.field.as_deref(), Some("spec.ipipmod"));
    }

    #[test]
    fn api_versions() {
        let e = doc_err(&POOL.replace("projectcalico.org/v3", "crd.projectcalico.org/v1"));
        assert_eq!(e.field.as_deref(), Some("apiVersion"));
        assert!(
            e.reason.contains("write resources as projectcalico.org/v3"),
            "{e}"
        );
        let e = doc_err(&POOL.replace("apiVersion: projectcalico.org/v3\n", ""));
        assert_eq!(e.field.as_deref(), Some("apiVersion"));
        let e = doc_err(&POOL.replace("projectcalico.org/v3", "v1"));
        assert_eq!(e.field.as_deref(), Some("apiVersion"));
    }

    #[test]
    fn unknown_kind() {
        let e = doc_err(&POOL.replace("kind: IPPool", "kind: NetworkPolicy"));
        assert_eq!(e.field.as_deref(), Some("kind"));
        assert!(
            e.to_string()
                .starts_with("document 1 (NetworkPolicy pool-a): kind: unknown kind")
        );
    }

    #[test]
    fn ipam_configuration_alias() {
        let text = "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\nspec: {strictAffinity: true}\n";
        let res = parse_documents(text).unwrap();
        assert_eq!(res[0].kind(), Kind::IPAMConfig);
        let Resource::IPAMConfig(c) = &res[0] else {
            unreachable!()
        };
        assert_eq!(c.kind, "IPAMConfig");
    }

    #[test]
    fn empty_and_comment_documents_are_skipped() {
        assert!(parse_documents("").unwrap().is_empty());
        let text = format!("# leading comment\n---\n{POOL}---\n");
        assert_eq!(parse_documents(&text).unwrap().len(), 1);
    }

    #[test]
    fn json_forms() {
        let one = r#"{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"p"},"spec":{"cidr":"198.18.0.0/16"}}"#;
        assert_eq!(parse_documents(one).unwrap().len(), 1);
        assert_eq!(parse_documents(&format!("[{one},{one}]")).unwrap().len(), 2);
        assert_eq!(parse_documents(&format!("{one}\n{one}")).unwrap().len(), 2);
        assert!(matches!(
            parse_documents("{\"kind\":"),
            Err(ParseError::Json { .. })
        ));
    }

    #[test]
    fn list_items_errors_name_the_item() {
        let text = "apiVersion: projectcalico.org/v3
kind: IPPoolList
items:
- metadata: {name: a}
  spec: {cidr: 198.18.0.0/24}
- metadata: {name: b}
  spec: {cidr: 198.18.1.0/24, blockSize: [1]}
";
        let e = doc_err(text);
        assert_eq!(e.item, Some(1));
        assert!(
            e.to_string()
                .starts_with("document 1, items[1] (IPPool b): spec.blockSize: "),
            "{e}"
        );
    }

    #[test]
    fn list_with_unknown_field() {
        let e = doc_err("apiVersion: v1\nkind: List\nitem: []\n");
        assert_eq!(e.field.as_deref(), Some("item"));
        assert_eq!(
            e.to_string(),
            "document 1 (List): item: unknown field `item`, expected one of `apiVersion`, `kind`, \
             `metadata`, `items`"
        );
    }

    #[test]
    fn typed_list_rejects_other_kinds() {
        let text = "apiVersion: projectcalico.org/v3
kind: IPPoolList
items:
- apiVersion: projectcalico.org/v3
  kind: BGPPeer
  metadata: {name: a}
";
        assert_eq!(doc_err(text).field.as_deref(), Some("kind"));
    }

    #[test]
    fn scalars_are_read_as_calicoctl_reads_them() {
        let text = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: p
  labels: {rack: 1, enabled: true}
spec: {cidr: 198.18.0.0/16, natOutgoing: yes, disabled: off, nodeSelector: 5}
";
        let res = parse_documents(text).unwrap();
        let Resource::IPPool(p) = &res[0] else {
            unreachable!()
        };
        assert_eq!(p.metadata.labels["rack"], "1");
        assert_eq!(p.metadata.labels["enabled"], "true");
        assert!(p.spec.nat_outgoing);
        assert!(!p.spec.disabled);
        assert_eq!(p.spec.node_selector.as_deref(), Some("5"));
        let e = doc_err(&text.replace("natOutgoing: yes", "natOutgoing: maybe"));
        assert_eq!(e.field.as_deref(), Some("spec.natOutgoing"));
    }

    #[test]
    fn yaml_syntax_error() {
        assert!(matches!(
            parse_documents("a: [1, 2\n"),
            Err(ParseError::Yaml { .. })
        ));
    }

    #[test]
    fn yaml_round_trip() {
        let res = parse_documents(POOL).unwrap();
        let text = to_yaml_documents(&[res[0].clone(), res[0].clone()]);
        assert_eq!(
            parse_documents(&text).unwrap(),
            vec![res[0].clone(), res[0].clone()]
        );
        let list = to_yaml_list(&res);
        assert!(
            list.starts_with("apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n"),
            "{list}"
        );
        assert_eq!(parse_documents(&list).unwrap(), res);
    }

    fn arb_pool() -> impl proptest::strategy::Strategy<Value = Resource> {
        use crate::ippool::{AllowedUse, AssignmentMode, EncapMode};
        use crate::{IPPool, IPPoolSpec};
        use proptest::prelude::*;
        let mode = prop_oneof![
            Just(None),
            Just(Some(EncapMode::Never)),
            Just(Some(EncapMode::Always)),
            Just(Some(EncapMode::CrossSubnet)),
        ];
        let uses = prop_oneof![
            Just(None),
            Just(Some(vec![AllowedUse::Workload])),
            Just(Some(vec![AllowedUse::Tunnel, AllowedUse::Workload])),
            Just(Some(vec![AllowedUse::LoadBalancer])),
        ];
        (
            (any::<u32>(), 8u8..=32),
            (mode.clone(), mode),
            (any::<bool>(), any::<bool>(), any::<bool>()),
            (proptest::option::of(20u8..=32), uses),
            (
                proptest::option::of("[a-z]{1,5} == '[a-z0-9 ]{0,5}'"),
                proptest::option::of(prop_oneof![
                    Just(AssignmentMode::Automatic),
                    Just(AssignmentMode::Manual)
                ]),
            ),
            "[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?",
        )
            .prop_map(
                |(
                    (addr, len),
                    (ipip, vxlan),
                    (nat, disabled, no_export),
                    (block, uses),
                    (sel, assign),
                    name,
                )| {
                    let net = ipnet::Ipv4Net::new(addr.into(), len).unwrap().trunc();
                    let spec = IPPoolSpec {
                        cidr: Some(net.into()),
                        ipip_mode: ipip,
                        vxlan_mode: vxlan,
                        nat_outgoing: nat,
                        disabled,
                        disable_bgp_export: no_export,
                        block_size: block,
                        node_selector: sel,
                        allowed_uses: uses,
                        assignment_mode: assign,
                        ..Default::default()
                    };
                    Resource::IPPool(IPPool::new(name, spec))
                },
            )
    }

    proptest::proptest! {
        /// Whatever we print, we read back as it was, as YAML and as JSON.
        #[test]
        fn printed_pools_parse_back(pool in arb_pool()) {
            let yaml = to_yaml(&pool);
            proptest::prop_assert_eq!(parse_documents(&yaml).unwrap(), vec![pool.clone()], "{}", yaml);
            let json = serde_json::to_string(&pool).unwrap();
            proptest::prop_assert_eq!(parse_documents(&json).unwrap(), vec![pool], "{}", json);
        }
    }
}
