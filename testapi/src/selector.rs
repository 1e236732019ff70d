//! Label and field selectors (`labelSelector=`, `fieldSelector=` on list and watch).
//!
//! Label selectors follow "Labels and Selectors" in the Kubernetes docs: comma-separated
//! requirements, all of which must hold; equality-based (`=`, `==`, `!=`) and set-based
//! (`in`, `notin`, `key`, `!key`) forms, plus `>` / `<` on integers as the apiserver's parser
//! accepts. `!=` and `notin` also match objects without the label.
//!
//! Field selectors ("Field Selectors"): `field=value`, `field==value`, `field!=value`, ANDed.
//! Every resource supports `metadata.name` and `metadata.namespace`; pods and nodes support a
//! few more. An unsupported field is a 400, as on the real server.

use serde_json::Value;

use crate::resources::ResourceType;

#[derive(Debug, Clone, PartialEq)]
enum LabelOp {
    Exists,
    NotExists,
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Greater(i64),
    Less(i64),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector {
    requirements: Vec<(String, LabelOp)>,
}

fn valid_label_key(key: &str) -> bool {
    // [prefix/]name: name is ≤63 chars of alphanumerics, '-', '_', '.', starting and ending
    // alphanumeric; the prefix is a DNS subdomain.
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(crate::object::is_dns1123_subdomain)
}

fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Splits on commas that are not inside parentheses.
fn split_requirements(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ')'".into());
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set of values, found {rest:?}"))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    for v in &values {
        if !valid_label_value(v) {
            return Err(format!("invalid label value: {v:?}"));
        }
    }
    Ok(values)
}

impl LabelSelector {
    /// Parses a selector string; the error says what is wrong, for a 400.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector { requirements });
        }
        for part in split_requirements(s)? {
            let part = part.trim();
            if part.is_empty() {
                return Err("empty requirement".into());
            }
            let (key, op) = if let Some(key) = part.strip_prefix('!') {
                (key.trim(), LabelOp::NotExists)
            } else if let Some((k, v)) = part.split_once("!=") {
                (k.trim(), LabelOp::NotEquals(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once("==") {
                (k.trim(), LabelOp::Equals(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once('=') {
                (k.trim(), LabelOp::Equals(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once('>') {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("{v:?} is not an integer"))?;
                (k.trim(), LabelOp::Greater(n))
            } else if let Some((k, v)) = part.split_once('<') {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("{v:?} is not an integer"))?;
                (k.trim(), LabelOp::Less(n))
            } else if let Some(idx) = part.find(" notin") {
                (
                    part[..idx].trim(),
                    LabelOp::NotIn(parse_set(&part[idx + 6..])?),
                )
            } else if let Some(idx) = part.find(" in") {
                (
                    part[..idx].trim(),
                    LabelOp::In(parse_set(&part[idx + 3..])?),
                )
            } else {
                (part, LabelOp::Exists)
            };
            if !valid_label_key(key) {
                return Err(format!("invalid label key {key:?}"));
            }
            if let LabelOp::Equals(v) | LabelOp::NotEquals(v) = &op
                && !valid_label_value(v)
            {
                return Err(format!("invalid label value: {v:?}"));
            }
            requirements.push((key.to_string(), op));
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether the selector selects nothing out (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.requirements.iter().all(|(key, op)| {
            let v = get(key);
            match op {
                LabelOp::Exists => v.is_some(),
                LabelOp::NotExists => v.is_none(),
                LabelOp::Equals(want) => v == Some(want.as_str()),
                LabelOp::NotEquals(want) => v != Some(want.as_str()),
                LabelOp::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                LabelOp::NotIn(set) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
                LabelOp::Greater(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                LabelOp::Less(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector {
    /// (field path, wanted value, true for `=`/`==`, false for `!=`).
    requirements: Vec<(String, String, bool)>,
}

/// The fields a resource can be selected on (`GetAttrs` / `SelectableFields` in the
/// apiserver's registries; custom resources only have the metadata ones here).
fn supported_field(ty: &ResourceType, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    if !ty.group.is_empty() {
        return false;
    }
    match ty.plural.as_str() {
        "pods" => matches!(
            field,
            "spec.nodeName"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "spec.hostNetwork"
                | "status.phase"
                | "status.podIP"
                | "status.nominatedNodeName"
        ),
        "nodes" => field == "spec.unschedulable",
        "namespaces" => field == "status.phase",
        _ => false,
    }
}

impl FieldSelector {
    /// Parses a selector for resource `ty`; the error says what is wrong, for a 400.
    pub fn parse(s: &str, ty: &ResourceType) -> Result<FieldSelector, String> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector { requirements });
        }
        for part in s.split(',') {
            let part = part.trim();
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if !supported_field(ty, field) {
                return Err(format!("field label not supported: {field}"));
            }
            requirements.push((field.to_string(), value.trim().to_string(), equal));
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether the selector selects nothing out.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The name this selector pins (`metadata.name=x`), which RBAC's resourceNames can match
    /// for list and watch.
    pub fn exact_name(&self) -> Option<&str> {
        self.requirements
            .iter()
            .find(|(f, _, eq)| f == "metadata.name" && *eq)
            .map(|(_, v, _)| v.as_str())
    }

    /// Whether an object satisfies every requirement. A missing field reads as "", booleans
    /// as "true"/"false".
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(field, want, equal)| {
            let mut v = object;
            for part in field.split('.') {
                v = v.get(part).unwrap_or(&Value::Null);
            }
            let got = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (got == *want) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}})
    }

    #[test]
    fn label_selector_forms() {
        let o = obj(json!({"app": "web", "tier": "front", "n": "5"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app=db"));
        assert!(m("app!=db"));
        assert!(m("missing!=x"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web,db)"));
        assert!(m("missing notin (web)"));
        assert!(!m("missing in (web)"));
        assert!(m("tier"));
        assert!(!m("!tier"));
        assert!(m("!missing"));
        assert!(m("app=web,tier in (front),!missing"));
        assert!(!m("app=web,tier=back"));
        assert!(m("n>4"));
        assert!(!m("n<5"));
    }

    #[test]
    fn label_selector_rejects_garbage() {
        for bad in [
            "app=web,",
            "a b=c",
            "app in web",
            "app in (web",
            "=x",
            "app=-x",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn field_selector_on_pods() {
        let pods = crate::resources::Registry::default()
            .get("", "v1", "pods")
            .unwrap();
        let o = obj(json!({}));
        let m = |s: &str| FieldSelector::parse(s, &pods).unwrap().matches(&o);
        assert!(m("metadata.name=p"));
        assert!(!m("metadata.name!=p"));
        assert!(m("metadata.namespace==ns,spec.nodeName=n1"));
        assert!(!m("spec.nodeName=n2"));
        assert!(m("status.phase="));
        assert!(FieldSelector::parse("spec.bogus=1", &pods).is_err());
        assert_eq!(
            FieldSelector::parse("metadata.name=p", &pods)
                .unwrap()
                .exact_name(),
            Some("p")
        );
    }
}
