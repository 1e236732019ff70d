//! LIST: collections, at a revision, in pages.
//!
//! Kubernetes API concepts:
//! - "Retrieving large results sets in chunks": `limit` caps a page; `metadata.continue` is an
//!   opaque token for the next page, and every page is served at the revision of the first,
//!   so the pages together are one consistent snapshot. A token whose revision has been
//!   compacted is `410 Expired`, and that Status carries a token that continues at the newest
//!   revision instead (inconsistently), as the etcd3 store's `compactedContinue` does.
//!   `remainingItemCount` counts the items after the page; it is left out when a selector is
//!   used, since the server cannot know it cheaply then.
//! - "Semantics for get and list": `resourceVersion` unset is the most recent state;
//!   `resourceVersionMatch=Exact` (or, the legacy rule, a non-"0" resourceVersion together
//!   with `limit`) serves exactly that revision, 410 if compacted; otherwise
//!   `NotOlderThan`: the newest state, which is never older than any revision given.
//! - The list's `metadata.resourceVersion` is the revision it was read at.
//!
//! The continue token is base64url of `{"v":"meta.k8s.io/v1","rv":REV,"start":"KEY\u0000"}`,
//! the form the apiserver uses (rv -1: continue at the newest revision).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::resources::ResourceType;
use crate::route::ListOptions;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Key, Store};

#[derive(Serialize, Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

const TOKEN_VERSION: &str = "meta.k8s.io/v1";

fn encode_continue(rv: i64, last: &Key, namespaced: bool) -> String {
    let start = if namespaced {
        format!("{}/{}\u{0}", last.namespace, last.name)
    } else {
        format!("{}\u{0}", last.name)
    };
    let json = serde_json::to_vec(&ContinueToken {
        v: TOKEN_VERSION.into(),
        rv,
        start,
    })
    .expect("token serializes");
    URL_SAFE_NO_PAD.encode(json)
}

/// (revision or -1, namespace, name after which to continue).
fn decode_continue(token: &str, namespaced: bool) -> Result<(i64, String, String), ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad("not base64"))?;
    let t: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| bad("not a token"))?;
    if t.v != TOKEN_VERSION {
        return Err(bad(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    let start = t.start.strip_suffix('\u{0}').unwrap_or(&t.start);
    let (ns, name) = if namespaced {
        let (ns, name) = start
            .split_once('/')
            .ok_or_else(|| bad("no namespace in key"))?;
        (ns.to_string(), name.to_string())
    } else {
        (String::new(), start.to_string())
    };
    if t.rv == 0 || t.rv < -1 {
        return Err(bad("incorrect encoded start resourceVersion"));
    }
    Ok((t.rv, ns, name))
}

/// A parsed numeric resourceVersion parameter.
pub fn parse_rv(rv: &str) -> Result<u64, ApiError> {
    rv.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))
}

/// Checks a `resourceVersionMatch` value against the other parameters (the apiserver's
/// `ValidateListOptions`).
pub fn validate_match(opts: &ListOptions) -> Result<(), ApiError> {
    match opts.resource_version_match.as_deref() {
        None => Ok(()),
        Some("NotOlderThan" | "Exact") if opts.resource_version.is_none() => {
            Err(ApiError::unprocessable(
                "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            ))
        }
        Some("Exact") if opts.resource_version.as_deref() == Some("0") => {
            Err(ApiError::unprocessable(
                "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ))
        }
        Some("NotOlderThan" | "Exact") => Ok(()),
        Some(other) => Err(ApiError::unprocessable(format!(
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
        ))),
    }
}

/// One page of a list, ready to serialize.
pub struct Page {
    kind: String,
    api_version: String,
    resource_version: u64,
    continue_token: Option<String>,
    remaining: Option<usize>,
    items: Vec<Arc<Value>>,
}

impl Page {
    /// The `<Kind>List` JSON.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            kind: &'a str,
            api_version: &'a str,
            metadata: Map<String, Value>,
            items: Vec<&'a Value>,
        }
        let mut metadata = Map::new();
        metadata.insert(
            "resourceVersion".into(),
            self.resource_version.to_string().into(),
        );
        if let Some(c) = &self.continue_token {
            metadata.insert("continue".into(), c.clone().into());
        }
        if let Some(r) = self.remaining {
            metadata.insert("remainingItemCount".into(), r.into());
        }
        serde_json::to_vec(&Out {
            kind: &self.kind,
            api_version: &self.api_version,
            metadata,
            items: self.items.iter().map(|i| &**i).collect(),
        })
        .expect("values serialize")
    }

    /// The items of the page.
    pub fn items(&self) -> &[Arc<Value>] {
        &self.items
    }
}

/// Lists `ty` objects (in `namespace`, or all) per the options.
pub fn list(
    store: &Store,
    ty: &ResourceType,
    namespace: Option<&str>,
    opts: &ListOptions,
) -> Result<Page, ApiError> {
    validate_match(opts)?;
    let labels = LabelSelector::parse(&opts.label_selector)
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(&opts.field_selector, ty).map_err(ApiError::bad_request)?;
    let current = store.revision();
    let (rev, after) = if let Some(token) = &opts.continue_token {
        if opts.resource_version.is_some() {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (rv, ns, name) = decode_continue(token, ty.namespaced)?;
        if rv == -1 {
            (current, Some((ns, name)))
        } else {
            let rv = rv as u64;
            if store.check_available(rv).is_err() {
                let mut err = ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                );
                err.continue_token = Some(encode_continue(
                    -1,
                    &Key {
                        resource: ty.storage_key(),
                        namespace: ns,
                        name,
                    },
                    ty.namespaced,
                ));
                return Err(err);
            }
            (rv, Some((ns, name)))
        }
    } else {
        let exact = match (
            opts.resource_version.as_deref(),
            opts.resource_version_match.as_deref(),
        ) {
            (Some(_), Some("Exact")) => true,
            (Some(rv), None) => rv != "0" && opts.limit > 0,
            _ => false,
        };
        match opts.resource_version.as_deref() {
            None | Some("0") => (current, None),
            Some(rv) => {
                let rv = parse_rv(rv)?;
                if rv > current {
                    return Err(ApiError::too_large_resource_version(rv, current));
                }
                if exact {
                    store.check_available(rv).map_err(|c| {
                        ApiError::expired(format!(
                            "too old resource version: {} ({})",
                            c.requested, c.compacted
                        ))
                    })?;
                    (rv, None)
                } else {
                    (current, None)
                }
            }
        }
    };
    let resource = ty.storage_key();
    let after_ref = after.as_ref().map(|(ns, n)| (ns.as_str(), n.as_str()));
    let selecting = !labels.is_empty() || !fields.is_empty();
    let mut matching = store
        .range_at(&resource, namespace, rev, after_ref)
        .filter(|(_, o)| labels.matches(o) && fields.matches(o));
    let mut items = Vec::new();
    let mut last_key = None;
    for (k, o) in matching.by_ref() {
        items.push(o);
        if opts.limit > 0 && items.len() == opts.limit {
            last_key = Some(k.clone());
            break;
        }
    }
    let (continue_token, remaining) = match last_key {
        Some(last) => {
            let rest = matching.count();
            if rest == 0 {
                (None, None)
            } else {
                (
                    Some(encode_continue(rev as i64, &last, ty.namespaced)),
                    (!selecting).then_some(rest),
                )
            }
        }
        None => (None, None),
    };
    Ok(Page {
        kind: ty.list_kind.clone(),
        api_version: ty.api_version(),
        resource_version: rev,
        continue_token,
        remaining,
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let key = Key {
            resource: "/pods".into(),
            namespace: "ns".into(),
            name: "p".into(),
        };
        let t = encode_continue(42, &key, true);
        assert_eq!(
            decode_continue(&t, true).unwrap(),
            (42, "ns".into(), "p".into())
        );
        let t = encode_continue(7, &key, false);
        assert_eq!(
            decode_continue(&t, false).unwrap(),
            (7, "".into(), "p".into())
        );
        assert_eq!(decode_continue("!!", false).unwrap_err().code, 400);
    }
}
