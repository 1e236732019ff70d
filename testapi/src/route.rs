//! Request paths and query parameters: what a URL asks for.
//!
//! Kubernetes API concepts, "Resource URIs": `/api/v1/<resource>` for the core group,
//! `/apis/<group>/<version>/<resource>` otherwise; namespaced resources are under
//! `…/namespaces/<ns>/<resource>`, and a resource without the namespace segment lists across
//! all namespaces; `…/<resource>/<name>[/<subresource>]` addresses one object. The verb comes
//! from the method and whether a name is given, as the apiserver's `RequestInfoFactory`
//! derives it (`GET` collection → list, `?watch=true` → watch, …).

use std::collections::HashMap;
use std::time::Duration;

use crate::status::ApiError;

/// A resource request, parsed from method, path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRequest {
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Namespace, when the path has one.
    pub namespace: Option<String>,
    /// Resource (plural).
    pub resource: String,
    /// Object name, when the path has one.
    pub name: Option<String>,
    /// Subresource (`status`), when the path has one.
    pub subresource: Option<String>,
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: &'static str,
}

/// What a path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A resource or collection.
    Resource(ResourceRequest),
    /// Discovery and other non-resource paths (`/version`, `/api`, `/apis/<group>`, …).
    NonResource(String),
}

/// Go's `strconv.ParseBool`, which the apiserver uses for boolean query parameters.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Decodes `%XX` escapes and, in query strings, '+' as space.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query string as a map (the last value wins for repeated keys).
pub fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Subresources of a namespace (`/api/v1/namespaces/<ns>/status`), which are not namespaced
/// resources called "status" (`namespaceSubresources` in `RequestInfoFactory`).
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// Parses a request. `watch` is the `watch` query parameter, already parsed.
pub fn parse(method: &str, path: &str, watch: bool) -> Route {
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect();
    let non_resource = || Route::NonResource(path.to_string());
    let (group, version, rest) = match segments.first().map(String::as_str) {
        Some("api") if segments.len() >= 3 => (String::new(), segments[1].clone(), &segments[2..]),
        Some("apis") if segments.len() >= 4 => {
            (segments[1].clone(), segments[2].clone(), &segments[3..])
        }
        _ => return non_resource(),
    };
    let mut namespace = None;
    let mut rest = rest;
    if rest[0] == "namespaces"
        && rest.len() > 2
        && !NAMESPACE_SUBRESOURCES.contains(&rest[2].as_str())
    {
        namespace = Some(rest[1].clone());
        rest = &rest[2..];
    }
    if rest.is_empty() || rest.len() > 3 || rest.iter().any(String::is_empty) {
        return non_resource();
    }
    let resource = rest[0].clone();
    let name = rest.get(1).cloned();
    let subresource = rest.get(2).cloned();
    let verb = match (method, name.is_some()) {
        ("GET" | "HEAD", _) if watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    };
    Route::Resource(ResourceRequest {
        group,
        version,
        namespace,
        resource,
        name,
        subresource,
        verb,
    })
}

/// List and watch parameters (`metav1.ListOptions`).
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub label_selector: String,
    /// `fieldSelector`.
    pub field_selector: String,
    /// `limit` (0: no limit).
    pub limit: usize,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
    /// `allowWatchBookmarks`.
    pub allow_bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
}

impl ListOptions {
    /// Reads the options from a parsed query; malformed values are a 400.
    pub fn from_query(q: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
        let flag = |name: &str| -> Result<Option<bool>, ApiError> {
            match q.get(name) {
                None => Ok(None),
                Some(v) => parse_bool(v).map(Some).ok_or_else(|| {
                    ApiError::bad_request(format!("invalid boolean for {name}: {v:?}"))
                }),
            }
        };
        let number = |name: &str| -> Result<Option<u64>, ApiError> {
            match q.get(name) {
                None => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| ApiError::bad_request(format!("invalid value for {name}: {v:?}"))),
            }
        };
        let non_empty = |name: &str| q.get(name).filter(|v| !v.is_empty()).cloned();
        Ok(ListOptions {
            label_selector: q.get("labelSelector").cloned().unwrap_or_default(),
            field_selector: q.get("fieldSelector").cloned().unwrap_or_default(),
            limit: number("limit")?.unwrap_or(0) as usize,
            continue_token: non_empty("continue"),
            resource_version: non_empty("resourceVersion"),
            resource_version_match: non_empty("resourceVersionMatch"),
            allow_bookmarks: flag("allowWatchBookmarks")?.unwrap_or(false),
            timeout: number("timeoutSeconds")?
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            send_initial_events: flag("sendInitialEvents")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(method: &str, path: &str) -> ResourceRequest {
        match parse(method, path, false) {
            Route::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let r = res("GET", "/api/v1/namespaces/default/pods/p1");
        assert_eq!(
            (
                r.group.as_str(),
                r.namespace.as_deref(),
                r.resource.as_str(),
                r.name.as_deref(),
                r.verb
            ),
            ("", Some("default"), "pods", Some("p1"), "get")
        );
        let r = res("GET", "/api/v1/pods");
        assert_eq!((r.namespace, r.verb), (None, "list"));
        let r = res("GET", "/api/v1/namespaces/kube-system");
        assert_eq!(
            (r.resource.as_str(), r.name.as_deref(), r.namespace),
            ("namespaces", Some("kube-system"), None)
        );
        let r = res("PUT", "/api/v1/namespaces/ns1/status");
        assert_eq!(
            (
                r.resource.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("namespaces", Some("ns1"), Some("status"))
        );
        let r = res("PATCH", "/apis/crd.projectcalico.org/v1/ippools/pool-1");
        assert_eq!(
            (
                r.group.as_str(),
                r.version.as_str(),
                r.resource.as_str(),
                r.verb
            ),
            ("crd.projectcalico.org", "v1", "ippools", "patch")
        );
        let r = res("PUT", "/api/v1/namespaces/ns/pods/p/status");
        assert_eq!(r.subresource.as_deref(), Some("status"));
        assert_eq!(res("DELETE", "/api/v1/nodes").verb, "deletecollection");
        assert!(
            matches!(parse("GET", "/api/v1/nodes", true), Route::Resource(r) if r.verb == "watch")
        );
        assert_eq!(
            parse("GET", "/apis", false),
            Route::NonResource("/apis".into())
        );
        assert_eq!(
            parse("GET", "/version", false),
            Route::NonResource("/version".into())
        );
    }

    #[test]
    fn queries() {
        let q = parse_query(Some(
            "labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=1&limit=5",
        ));
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        let o = ListOptions::from_query(&q).unwrap();
        assert_eq!(o.limit, 5);
        assert!(ListOptions::from_query(&parse_query(Some("limit=x"))).is_err());
        assert_eq!(percent_decode("100%", true), "100%");
    }
}
