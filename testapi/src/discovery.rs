//! Non-resource paths: `/version`, health checks and minimal API discovery (`/api`,
//! `/api/v1`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>`), enough for clients that
//! discover resources instead of being told them (kube's `Discovery`, kubectl).

use hyper::Response;
use serde_json::{Value, json};

use crate::http::{bytes_response, json_response};
use crate::resources::ResourceType;
use crate::server::Shared;
use crate::status::ApiError;
use crate::watch::Body;

fn verbs(status: bool) -> Value {
    if status {
        json!(["get", "patch", "update"])
    } else {
        json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ])
    }
}

fn resource_list(group_version: &str, types: &[&ResourceType]) -> Value {
    let mut resources = Vec::new();
    for t in types {
        resources.push(json!({
            "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
            "kind": t.kind, "verbs": verbs(false),
        }));
        if t.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                "kind": t.kind, "verbs": verbs(true),
            }));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

fn group(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

/// Serves a non-resource GET.
pub fn serve(shared: &Shared, method: &str, path: &str) -> Result<Response<Body>, ApiError> {
    if method != "GET" && method != "HEAD" {
        return Err(ApiError::method_not_allowed(method));
    }
    let path = path.trim_end_matches('/');
    match path {
        "/healthz" | "/livez" | "/readyz" => {
            return Ok(bytes_response(200, "text/plain", b"ok".to_vec()));
        }
        "/version" => {
            return Ok(json_response(
                200,
                &json!({
                    "major": "1", "minor": "33", "gitVersion": "v1.33.0-testapi",
                    "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
                    "goVersion": "", "compiler": "", "platform": "linux/amd64",
                }),
            ));
        }
        _ => {}
    }
    let registry = shared.store.lock().expect("store lock").registry.clone();
    let all: Vec<&ResourceType> = registry.all().map(|t| &**t).collect();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let body = match segments.as_slice() {
        ["api"] => json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}]}),
        ["api", "v1"] => {
            let core: Vec<&ResourceType> =
                all.iter().copied().filter(|t| t.group.is_empty()).collect();
            resource_list("v1", &core)
        }
        ["apis"] => {
            let mut groups: Vec<(String, Vec<String>)> = Vec::new();
            for t in all.iter().filter(|t| !t.group.is_empty()) {
                match groups.iter_mut().find(|(g, _)| *g == t.group) {
                    Some((_, vs)) if !vs.contains(&t.version) => vs.push(t.version.clone()),
                    Some(_) => {}
                    None => groups.push((t.group.clone(), vec![t.version.clone()])),
                }
            }
            let groups: Vec<Value> = groups.iter().map(|(g, vs)| group(g, vs)).collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        ["apis", g] => {
            let mut versions: Vec<String> = all
                .iter()
                .filter(|t| t.group == *g)
                .map(|t| t.version.clone())
                .collect();
            versions.dedup();
            if versions.is_empty() {
                return Err(ApiError::unknown_resource());
            }
            let mut v = group(g, &versions);
            v["kind"] = "APIGroup".into();
            v["apiVersion"] = "v1".into();
            v
        }
        ["apis", g, v] => {
            let types: Vec<&ResourceType> = all
                .iter()
                .copied()
                .filter(|t| t.group == *g && t.version == *v)
                .collect();
            if types.is_empty() {
                return Err(ApiError::unknown_resource());
            }
            resource_list(&format!("{g}/{v}"), &types)
        }
        _ => return Err(ApiError::unknown_resource()),
    };
    Ok(json_response(200, &body))
}
