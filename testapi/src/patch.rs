//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge
//! patch, which this server treats as a merge patch.
//!
//! Kubernetes API concepts, "Patch": the Content-Type selects the format. A strategic merge
//! patch differs from a merge patch only in how it merges lists of objects with a merge key
//! (containers, conditions); the maps tabby patches (labels, annotations, spec fields of
//! custom resources, for which the apiserver refuses strategic merge patch anyway) behave the
//! same under both.

use serde_json::Value;

use crate::status::ApiError;

/// The patch formats the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`, applied as a merge patch.
    StrategicMerge,
    /// `application/json-patch+json`.
    Json,
}

impl PatchType {
    /// The patch type for a Content-Type header (parameters such as `charset` ignored); 415
    /// for anything else.
    pub fn from_content_type(content_type: &str) -> Result<PatchType, ApiError> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::StrategicMerge),
            "application/json-patch+json" => Ok(PatchType::Json),
            _ => Err(ApiError::unsupported_patch_type(content_type)),
        }
    }
}

/// Applies a patch body to `target`. Malformed patches are 400; a JSON patch that cannot be
/// applied (a failed `test`, a missing path) is 422, as the apiserver answers.
pub fn apply(kind: PatchType, target: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    match kind {
        PatchType::Merge | PatchType::StrategicMerge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            let mut out = target.clone();
            merge_patch(&mut out, &patch);
            Ok(out)
        }
        PatchType::Json => {
            let ops = patch.as_array().ok_or_else(|| {
                ApiError::bad_request("a JSON patch must be an array of operations")
            })?;
            json_patch(target, ops)
        }
    }
}

/// RFC 7386 §2 MergePatch: objects merge recursively, `null` removes a member, anything else
/// (arrays included) replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let target = target.as_object_mut().expect("just made an object");
    for (k, v) in patch {
        if v.is_null() {
            target.remove(k);
        } else {
            merge_patch(target.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// RFC 6901 reference tokens of a JSON pointer (`~1` is '/', `~0` is '~').
fn pointer_tokens(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn array_index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if allow_end && token == "-" {
        return Ok(len);
    }
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) {
        return Err(format!("invalid array index {token:?}"));
    }
    let i: usize = token
        .parse()
        .map_err(|_| format!("invalid array index {token:?}"))?;
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if i > max || (!allow_end && len == 0) {
        return Err(format!("array index {i} out of bounds"));
    }
    Ok(i)
}

/// The parent container of the location `tokens` names, and the last token.
fn parent_mut<'a>(
    doc: &'a mut Value,
    tokens: &'a [String],
) -> Result<(&'a mut Value, &'a str), String> {
    let (last, parents) = tokens.split_last().ok_or("the root has no parent")?;
    let mut cur = doc;
    for t in parents {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(t)
                .ok_or_else(|| format!("missing path element {t:?}"))?,
            Value::Array(a) => {
                let i = array_index(t, a.len(), false)?;
                &mut a[i]
            }
            _ => return Err(format!("path element {t:?} is inside a scalar")),
        };
    }
    Ok((cur, last))
}

fn get<'a>(doc: &'a Value, tokens: &[String]) -> Result<&'a Value, String> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m
                .get(t)
                .ok_or_else(|| format!("missing path element {t:?}"))?,
            Value::Array(a) => &a[array_index(t, a.len(), false)?],
            _ => return Err(format!("path element {t:?} is inside a scalar")),
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    if tokens.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_mut(doc, tokens)?;
    match parent {
        Value::Object(m) => {
            m.insert(last.to_string(), value);
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true)?;
            a.insert(i, value);
        }
        _ => return Err(format!("cannot add {last:?} inside a scalar")),
    }
    Ok(())
}

fn remove(doc: &mut Value, tokens: &[String]) -> Result<Value, String> {
    let (parent, last) = parent_mut(doc, tokens)?;
    match parent {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("missing path element {last:?}")),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(format!("cannot remove {last:?} inside a scalar")),
    }
}

/// RFC 6902 §4: applies the operations in order, all or nothing.
pub fn json_patch(target: &Value, ops: &[Value]) -> Result<Value, ApiError> {
    let mut doc = target.clone();
    for op in ops {
        let field = |name: &str| -> Result<&str, ApiError> {
            op.get(name).and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request(format!("JSON patch operation {op} has no string {name:?}"))
            })
        };
        let kind = field("op")?;
        let path = pointer_tokens(field("path")?).map_err(ApiError::bad_request)?;
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                ApiError::bad_request(format!("JSON patch operation {op} has no \"value\""))
            })
        };
        let applied: Result<(), String> = match kind {
            "add" => add(&mut doc, &path, value()?),
            "remove" => remove(&mut doc, &path).map(drop),
            "replace" => {
                let v = value()?;
                remove(&mut doc, &path).and_then(|_| add(&mut doc, &path, v))
            }
            "move" => {
                let from = pointer_tokens(field("from")?).map_err(ApiError::bad_request)?;
                if path.starts_with(&from) && path.len() > from.len() {
                    Err("cannot move a value into one of its children".into())
                } else {
                    remove(&mut doc, &from).and_then(|v| add(&mut doc, &path, v))
                }
            }
            "copy" => {
                let from = pointer_tokens(field("from")?).map_err(ApiError::bad_request)?;
                get(&doc, &from)
                    .cloned()
                    .and_then(|v| add(&mut doc, &path, v))
            }
            "test" => {
                let want = value()?;
                match get(&doc, &path) {
                    Ok(got) if *got == want => Ok(()),
                    _ => Err(format!(
                        "testing value {} failed: test failed",
                        field("path")?
                    )),
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown JSON patch operation {other:?}"
                )));
            }
        };
        applied.map_err(ApiError::unprocessable)?;
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// RFC 7386 Appendix A, the test cases.
    #[test]
    fn rfc7386_examples() {
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
        for (target, patch, want) in cases {
            let mut t = target.clone();
            merge_patch(&mut t, &patch);
            assert_eq!(t, want, "{target} + {patch}");
        }
    }

    /// RFC 6902 Appendix A examples (a selection, including the failing `test`).
    #[test]
    fn rfc6902_examples() {
        let ok = |doc: Value, ops: Value| json_patch(&doc, ops.as_array().unwrap()).unwrap();
        assert_eq!(
            ok(
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz","value":"qux"}])
            ),
            json!({"baz":"qux","foo":"bar"})
        );
        assert_eq!(
            ok(
                json!({"foo":["bar","baz"]}),
                json!([{"op":"add","path":"/foo/1","value":"qux"}])
            ),
            json!({"foo":["bar","qux","baz"]})
        );
        assert_eq!(
            ok(
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"remove","path":"/baz"}])
            ),
            json!({"foo":"bar"})
        );
        assert_eq!(
            ok(
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"replace","path":"/baz","value":"boo"}])
            ),
            json!({"baz":"boo","foo":"bar"})
        );
        assert_eq!(
            ok(
                json!({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}),
                json!([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}])
            ),
            json!({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}})
        );
        assert_eq!(
            ok(
                json!({"foo":["bar"]}),
                json!([{"op":"add","path":"/foo/-","value":["abc","def"]}])
            ),
            json!({"foo":["bar",["abc","def"]]})
        );
        assert_eq!(
            ok(
                json!({"/":9,"~1":10}),
                json!([{"op":"test","path":"/~01","value":10}])
            ),
            json!({"/":9,"~1":10})
        );
        assert_eq!(
            ok(
                json!({"a":{"b":1}}),
                json!([{"op":"copy","from":"/a","path":"/c"}])
            ),
            json!({"a":{"b":1},"c":{"b":1}})
        );
        let err = json_patch(
            &json!({"baz":"qux"}),
            json!([{"op":"test","path":"/baz","value":"bar"}])
                .as_array()
                .unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        let err = json_patch(
            &json!({"foo":"bar"}),
            json!([{"op":"add","path":"/baz/bat","value":"qux"}])
                .as_array()
                .unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        let err = json_patch(
            &json!({}),
            json!([{"op":"frob","path":"/a"}]).as_array().unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.code, 400);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8").unwrap(),
            PatchType::Merge
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml")
                .unwrap_err()
                .code,
            415
        );
    }
}
