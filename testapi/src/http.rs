//! The HTTP front: authentication, authorization, routing to the operations, and rendering
//! results and failures as JSON.
//!
//! ```text
//!  request ─▶ bearer token? ──401──▶ Status
//!               │
//!               ▼
//!            route::parse ──▶ non-resource ──▶ discovery
//!               │
//!               ▼
//!            RBAC rules? ──403──▶ Status
//!               │
//!               ▼
//!            registry lookup ──404──▶ Status
//!               │
//!               ▼
//!            rest / list (under the store lock) ──▶ object | list | Status
//!            watch::start ──▶ chunked event stream
//! ```

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

use crate::object::Part;
use crate::patch::PatchType;
use crate::rbac::{self, Attributes};
use crate::route::{self, ListOptions, Route, parse_bool, parse_query};
use crate::server::Shared;
use crate::status::ApiError;
use crate::watch::Body;
use crate::{discovery, list, rest, watch};

/// The apiserver's limit on request bodies (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// A response with a body of bytes.
pub fn bytes_response(code: u16, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(UnsyncBoxBody::new(
        Full::new(Bytes::from(body)).map_err(|never| match never {}),
    ));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A JSON response.
pub fn json_response(code: u16, value: &Value) -> Response<Body> {
    bytes_response(
        code,
        "application/json",
        serde_json::to_vec(value).expect("values serialize"),
    )
}

fn error_response(err: &ApiError) -> Response<Body> {
    json_response(err.code, &err.to_status())
}

/// Serves one request; never fails at the HTTP level (failures are Status objects).
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let response = match serve(&shared, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code, reason = e.reason, "request failed");
            error_response(&e)
        }
    };
    Ok(response)
}

fn bearer_token(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

async fn serve(shared: &Shared, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    if let Some(token) = &shared.options.token
        && bearer_token(&req) != Some(token.as_str())
    {
        return Err(ApiError::unauthorized());
    }
    let method = req.method().as_str().to_string();
    let query = parse_query(req.uri().query());
    let watching = query
        .get("watch")
        .and_then(|v| parse_bool(v))
        .unwrap_or(false);
    let rr = match route::parse(&method, req.uri().path(), watching) {
        Route::NonResource(path) => return discovery::serve(shared, &method, &path),
        Route::Resource(rr) => rr,
    };
    let mut opts = ListOptions::from_query(&query)?;
    // A watch on one object's path is a watch on its collection, narrowed to the name.
    if rr.verb == "watch"
        && let Some(name) = &rr.name
    {
        opts.field_selector = match opts.field_selector.as_str() {
            "" => format!("metadata.name={name}"),
            other => format!("{other},metadata.name={name}"),
        };
    }
    if let Some(rules) = &shared.options.rbac {
        let name = rr.name.clone().or_else(|| {
            if matches!(rr.verb, "list" | "watch") {
                opts.field_selector
                    .split(',')
                    .filter_map(|r| r.trim().split_once('='))
                    .find(|(f, _)| f.trim() == "metadata.name")
                    .map(|(_, v)| v.trim_start_matches('=').trim().to_string())
            } else {
                None
            }
        });
        let attributes = Attributes {
            verb: rr.verb.to_string(),
            group: rr.group.clone(),
            resource: rr.resource.clone(),
            subresource: rr.subresource.clone(),
            namespace: rr.namespace.clone(),
            name,
        };
        if !rbac::allowed(rules, &attributes) {
            return Err(ApiError::forbidden(&shared.options.user, &attributes));
        }
    }
    let ty = shared
        .store
        .lock()
        .expect("store lock")
        .registry
        .get(&rr.group, &rr.version, &rr.resource)
        .ok_or_else(ApiError::unknown_resource)?;
    if rr.namespace.is_some() && !ty.namespaced {
        return Err(ApiError::unknown_resource());
    }
    let part = match rr.subresource.as_deref() {
        None => Part::Main,
        Some("status") if ty.status_subresource => {
            if !matches!(rr.verb, "get" | "update" | "patch") {
                return Err(ApiError::method_not_allowed(&method));
            }
            Part::Status
        }
        Some(_) => return Err(ApiError::unknown_resource()),
    };
    let ns = rr.namespace.as_deref();
    let name = rr.name.as_deref().unwrap_or("");
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match rr.verb {
        "watch" => {
            let body = watch::start(
                &shared.store,
                &ty,
                ns,
                &opts,
                shared.options.bookmark_interval,
            )?;
            let mut resp = Response::new(body);
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(resp)
        }
        "list" => {
            let page = {
                let store = shared.store.lock().expect("store lock");
                list::list(&store, &ty, ns, &opts)?
            };
            Ok(bytes_response(200, "application/json", page.to_json()))
        }
        "get" => {
            let store = shared.store.lock().expect("store lock");
            Ok(json_response(200, &rest::get(&store, &ty, ns, name)?))
        }
        "create" => {
            if rr.name.is_some() {
                return Err(ApiError::method_not_allowed(&method));
            }
            let object = parse_json(&read_body(req).await?)?;
            let mut store = shared.store.lock().expect("store lock");
            Ok(json_response(
                201,
                &rest::create(&mut store, &ty, ns, object, Part::Main)?,
            ))
        }
        "update" => {
            if rr.name.is_none() {
                return Err(ApiError::method_not_allowed(&method));
            }
            let object = parse_json(&read_body(req).await?)?;
            let mut store = shared.store.lock().expect("store lock");
            Ok(json_response(
                200,
                &rest::update(&mut store, &ty, ns, name, object, part)?,
            ))
        }
        "patch" => {
            if rr.name.is_none() {
                return Err(ApiError::method_not_allowed(&method));
            }
            let kind = PatchType::from_content_type(&content_type)?;
            let body = read_body(req).await?;
            let mut store = shared.store.lock().expect("store lock");
            Ok(json_response(
                200,
                &rest::patch(&mut store, &ty, ns, name, kind, &body, part)?,
            ))
        }
        "delete" => {
            let body = read_body(req).await?;
            let options = if body.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                parse_json(&body)?
            };
            let mut store = shared.store.lock().expect("store lock");
            Ok(json_response(
                200,
                &rest::delete(&mut store, &ty, ns, name, &options)?,
            ))
        }
        "deletecollection" => {
            // Deletes what a list with the same selectors returns, one object (and one
            // revision) at a time, and answers with the list of deleted objects.
            let mut store = shared.store.lock().expect("store lock");
            let mut current = opts.clone();
            current.limit = 0;
            current.continue_token = None;
            current.resource_version = None;
            current.resource_version_match = None;
            let page = list::list(&store, &ty, ns, &current)?;
            let mut deleted = Vec::new();
            for item in page.items() {
                let item_ns = item.pointer("/metadata/namespace").and_then(Value::as_str);
                let item_name = crate::object::meta_str(item, "name");
                rest::delete(&mut store, &ty, item_ns, item_name, &Value::Null)?;
                deleted.push((**item).clone());
            }
            Ok(json_response(
                200,
                &serde_json::json!({
                    "kind": ty.list_kind,
                    "apiVersion": ty.api_version(),
                    "metadata": {"resourceVersion": store.revision().to_string()},
                    "items": deleted,
                }),
            ))
        }
        _ => Err(ApiError::method_not_allowed(&method)),
    }
}
