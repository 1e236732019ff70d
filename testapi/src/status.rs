//! Failures as the API server reports them: a `metav1.Status` object with an HTTP code, a
//! machine-readable `reason` and a human message.
//!
//! Kubernetes API concepts, "Responses": errors are returned as `kind: Status` objects, and
//! clients (kube's `ErrorResponse`, client-go's `apierrors`) branch on `reason` and `code`, so
//! both and the message wording follow the apiserver's `k8s.io/apimachinery/pkg/api/errors`
//! constructors. Note the quirk kept from the real server: for NotFound, AlreadyExists,
//! Conflict and Forbidden, `details.kind` holds the *resource* (plural, e.g. `pods`), while for
//! Invalid it holds the Kind (`Pod`).

use std::fmt;

use serde_json::{Map, Value, json};

use crate::resources::ResourceType;

/// One failed request, ready to be rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status code (also the Status's `code`).
    pub code: u16,
    /// The Status's `reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Expired`, …).
    pub reason: &'static str,
    /// The human-readable message.
    pub message: String,
    /// The Status's `details`, if any.
    pub details: Option<Value>,
    /// `metadata.continue` of the Status: an expired continue token comes back with a token
    /// that continues the list inconsistently (at the newest revision).
    pub continue_token: Option<String>,
}

/// One `details.causes[]` entry of an Invalid status.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, …
    pub reason: &'static str,
    /// The field path, e.g. `metadata.name`.
    pub field: String,
    /// What is wrong with it, e.g. `Invalid value: "Foo": a lowercase RFC 1123 subdomain …`.
    pub message: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            continue_token: None,
        }
    }

    fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// `details` naming a resource (plural) and object, as `NewNotFound` and friends fill it.
    fn resource_details(ty: &ResourceType, name: &str) -> Value {
        let mut d = Map::new();
        if !name.is_empty() {
            d.insert("name".into(), name.into());
        }
        if !ty.group.is_empty() {
            d.insert("group".into(), ty.group.clone().into());
        }
        d.insert("kind".into(), ty.plural.clone().into());
        Value::Object(d)
    }

    /// 404 NotFound: `pods "x" not found`.
    pub fn not_found(ty: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", ty.qualified_resource()),
        )
        .with_details(Self::resource_details(ty, name))
    }

    /// 404 for a path that names no resource this server serves.
    pub fn unknown_resource() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// 409 AlreadyExists: `pods "x" already exists`.
    pub fn already_exists(ty: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", ty.qualified_resource()),
        )
        .with_details(Self::resource_details(ty, name))
    }

    /// 409 Conflict: `Operation cannot be fulfilled on pods "x": <why>`.
    pub fn conflict(ty: &ResourceType, name: &str, why: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                ty.qualified_resource()
            ),
        )
        .with_details(Self::resource_details(ty, name))
    }

    /// The optimistic-concurrency Conflict (`registry.OptimisticLockErrorMsg`).
    pub fn modified(ty: &ResourceType, name: &str) -> ApiError {
        Self::conflict(
            ty,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid: `Pod "X" is invalid: metadata.name: Invalid value: …`.
    pub fn invalid(ty: &ResourceType, name: &str, causes: Vec<Cause>) -> ApiError {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let summary = if summary.len() == 1 {
            summary[0].clone()
        } else {
            format!("[{}]", summary.join(", "))
        };
        let mut details = Map::new();
        details.insert("name".into(), name.into());
        if !ty.group.is_empty() {
            details.insert("group".into(), ty.group.clone().into());
        }
        details.insert("kind".into(), ty.kind.clone().into());
        details.insert(
            "causes".into(),
            causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect(),
        );
        ApiError::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {summary}", ty.qualified_kind()),
        )
        .with_details(Value::Object(details))
    }

    /// 422 without a field (json-patch application failures use this, as the apiserver's
    /// `NewGenericServerResponse(422, …)` does).
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(422, "Invalid", message)
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 410 Expired (a compacted resourceVersion or continue token).
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    /// 401 Unauthorized (no or a wrong bearer token).
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden, worded like the RBAC authorizer's denial.
    pub fn forbidden(user: &str, attrs: &crate::rbac::Attributes) -> ApiError {
        let resource = match &attrs.subresource {
            Some(sub) => format!("{}/{sub}", attrs.resource),
            None => attrs.resource.clone(),
        };
        let qualified = if attrs.group.is_empty() {
            resource.clone()
        } else {
            format!("{resource}.{}", attrs.group)
        };
        let subject = match &attrs.name {
            Some(n) => format!("{qualified} \"{n}\""),
            None => qualified,
        };
        let scope = match &attrs.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let mut details = Map::new();
        if let Some(n) = &attrs.name {
            details.insert("name".into(), n.clone().into());
        }
        if !attrs.group.is_empty() {
            details.insert("group".into(), attrs.group.clone().into());
        }
        details.insert("kind".into(), attrs.resource.clone().into());
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "{subject} is forbidden: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
                attrs.verb, attrs.group
            ),
        )
        .with_details(Value::Object(details))
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(method: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
        .with_details(json!({}))
    }

    /// 415 UnsupportedMediaType for a PATCH body type the server does not know.
    pub fn unsupported_patch_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
            ),
        )
    }

    /// 413 for bodies over the apiserver's 3 MiB request limit.
    pub fn too_large() -> ApiError {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        )
    }

    /// 504 Timeout for a resourceVersion newer than anything stored (`Too large resource
    /// version`, what the watch cache answers after waiting for it in vain).
    pub fn too_large_resource_version(requested: u64, current: u64) -> ApiError {
        ApiError::new(
            504,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        )
        .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}))
    }

    /// The Status object for this failure.
    pub fn to_status(&self) -> Value {
        let mut metadata = Map::new();
        if let Some(c) = &self.continue_token {
            metadata.insert("continue".into(), c.clone().into());
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": metadata,
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            status["details"] = d.clone();
        }
        status
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The Status a successful delete of a resource that does not return the deleted object
/// answers with (`finalizeDelete` in the generic registry), e.g. for nodes.
pub fn delete_success(ty: &ResourceType, name: &str, uid: &str) -> Value {
    let mut details = Map::new();
    details.insert("name".into(), name.into());
    if !ty.group.is_empty() {
        details.insert("group".into(), ty.group.clone().into());
    }
    details.insert("kind".into(), ty.plural.clone().into());
    if !uid.is_empty() {
        details.insert("uid".into(), uid.into());
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
