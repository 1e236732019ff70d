//! The write and read operations on one resource: create, get, update, patch, delete.
//!
//! Each runs under the store lock from the first read to the commit, so preconditions
//! (resourceVersion, uid) are compared against exactly the state being replaced: the
//! optimistic concurrency of Kubernetes API concepts, "Resource versions" / "Conflicts".
//! A failed write commits nothing and takes no revision.

use serde_json::Value;

use crate::crd;
use crate::object::{
    self, Part, check_namespace, check_type, meta_str, metadata_mut, prepare_create,
    prepare_update, same_content, validate_name,
};
use crate::resources::ResourceType;
use crate::status::{self, ApiError, Cause};
use crate::store::{Key, Store};

/// The storage key of an object of `ty`.
pub fn key(ty: &ResourceType, namespace: Option<&str>, name: &str) -> Key {
    Key {
        resource: ty.storage_key(),
        namespace: if ty.namespaced {
            namespace.unwrap_or("").to_string()
        } else {
            String::new()
        },
        name: name.to_string(),
    }
}

/// GET one object.
pub fn get(
    store: &Store,
    ty: &ResourceType,
    namespace: Option<&str>,
    name: &str,
) -> Result<Value, ApiError> {
    store
        .get(&key(ty, namespace, name))
        .map(|o| (*o).clone())
        .ok_or_else(|| ApiError::not_found(ty, name))
}

/// Registers what a CRD object serves (after the CRD write is known to succeed).
fn register_crd(
    store: &mut Store,
    crd_type: &ResourceType,
    crd_object: &Value,
) -> Result<(), ApiError> {
    let types = crd::resource_types(crd_type, crd_object)?;
    let first = &types[0];
    store
        .registry
        .remove_all(&first.group.clone(), &first.plural.clone());
    for t in types {
        store.registry.insert(t);
    }
    Ok(())
}

/// POST: creates an object. `part` is [`Part::Everything`] for test seeds (status kept as
/// given, uid and creationTimestamp kept when set), [`Part::Main`] for API requests.
pub fn create(
    store: &mut Store,
    ty: &ResourceType,
    namespace: Option<&str>,
    mut object: Value,
    part: Part,
) -> Result<Value, ApiError> {
    check_type(ty, &mut object)?;
    if ty.namespaced && namespace.is_none() && part != Part::Everything {
        return Err(ApiError::method_not_allowed("POST"));
    }
    if part != Part::Everything && !meta_str(&object, "resourceVersion").is_empty() {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    check_namespace(ty, namespace, &mut object)?;
    let generate_name = meta_str(&object, "generateName").to_string();
    let mut name = meta_str(&object, "name").to_string();
    let generated = name.is_empty();
    if generated && generate_name.is_empty() {
        return Err(ApiError::invalid(
            ty,
            "",
            vec![Cause {
                reason: "FieldValueRequired",
                field: "metadata.name".into(),
                message: "Required value: name or generateName is required".into(),
            }],
        ));
    }
    // A generated name that is taken is tried again a few times, as the apiserver does.
    for attempt in 0.. {
        if generated {
            name = format!("{generate_name}{}", object::name_suffix());
            metadata_mut(&mut object).insert("name".into(), name.clone().into());
        }
        validate_name(ty, &name)?;
        if store.get(&key(ty, namespace, &name)).is_none() {
            break;
        }
        if !generated || attempt == 7 {
            return Err(ApiError::already_exists(ty, &name));
        }
    }
    let (uid, created) = (
        meta_str(&object, "uid").to_string(),
        meta_str(&object, "creationTimestamp").to_string(),
    );
    let status = object.get("status").cloned();
    prepare_create(ty, &mut object);
    if part == Part::Everything {
        let meta = metadata_mut(&mut object);
        if !uid.is_empty() {
            meta.insert("uid".into(), uid.into());
        }
        if !created.is_empty() {
            meta.insert("creationTimestamp".into(), created.into());
        }
        let obj = object.as_object_mut().expect("checked to be an object");
        match status {
            Some(s) => obj.insert("status".into(), s),
            None => obj.remove("status"),
        };
    }
    if ty.is_crd() {
        crd::resource_types(ty, &object)?;
        object["status"] = crd::accepted_status(&object);
    }
    let event = store.commit(key(ty, namespace, &name), Some(object));
    if ty.is_crd() {
        register_crd(store, ty, &event.object)?;
    }
    Ok((*event.object).clone())
}

/// The shared tail of PUT and PATCH: `new` replaces the stored object if its
/// `metadata.resourceVersion` (when set) is the stored one.
fn replace(
    store: &mut Store,
    ty: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    old: &Value,
    mut new: Value,
    part: Part,
) -> Result<Value, ApiError> {
    check_type(ty, &mut new)?;
    let body_name = meta_str(&new, "name");
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    check_namespace(ty, namespace, &mut new)?;
    let wanted = meta_str(&new, "resourceVersion");
    if !wanted.is_empty() && wanted != meta_str(old, "resourceVersion") {
        return Err(ApiError::modified(ty, name));
    }
    let mut new = prepare_update(ty, name, old, new, part)?;
    if ty.is_crd() {
        crd::resource_types(ty, &new)?;
        // The server owns a CRD's status.
        if let Some(s) = old.get("status") {
            new["status"] = s.clone();
        }
    }
    if same_content(old, &new) {
        return Ok(old.clone());
    }
    let event = store.commit(key(ty, namespace, name), Some(new));
    if ty.is_crd() {
        register_crd(store, ty, &event.object)?;
    }
    Ok((*event.object).clone())
}

/// PUT: replaces an object (or its status, with `part` [`Part::Status`]).
pub fn update(
    store: &mut Store,
    ty: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    new: Value,
    part: Part,
) -> Result<Value, ApiError> {
    let old = get(store, ty, namespace, name)?;
    replace(store, ty, namespace, name, &old, new, part)
}

/// PATCH: applies a patch to the stored object and stores the result. A
/// `metadata.resourceVersion` the patch sets is a precondition.
pub fn patch(
    store: &mut Store,
    ty: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    kind: crate::patch::PatchType,
    body: &[u8],
    part: Part,
) -> Result<Value, ApiError> {
    let old = get(store, ty, namespace, name)?;
    let new = crate::patch::apply(kind, &old, body)?;
    if !new.is_object() {
        return Err(ApiError::bad_request(
            "the patched object is not a JSON object",
        ));
    }
    replace(store, ty, namespace, name, &old, new, part)
}

/// DELETE: removes an object, if the DeleteOptions' preconditions hold. Answers with the
/// object as last stored (or a Success Status for resources that do not return it).
pub fn delete(
    store: &mut Store,
    ty: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    options: &Value,
) -> Result<Value, ApiError> {
    let old = get(store, ty, namespace, name)?;
    let precondition = |field: &str| {
        options
            .pointer(&format!("/preconditions/{field}"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(uid) = precondition("uid") {
        let have = meta_str(&old, "uid");
        if uid != have {
            return Err(ApiError::conflict(
                ty,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
            ));
        }
    }
    if let Some(rv) = precondition("resourceVersion") {
        let have = meta_str(&old, "resourceVersion");
        if rv != have {
            return Err(ApiError::conflict(
                ty,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"
                ),
            ));
        }
    }
    store.commit(key(ty, namespace, name), None);
    if ty.is_crd() {
        let group = old
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or("");
        let plural = old
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or("");
        store.registry.remove_all(group, plural);
    }
    if ty.returns_deleted_object() {
        Ok(old)
    } else {
        Ok(status::delete_success(ty, name, meta_str(&old, "uid")))
    }
}

/// Create or replace, unconditionally and with everything as given: the test seed behind
/// [`crate::Server::put_object`].
pub fn put(
    store: &mut Store,
    ty: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    mut object: Value,
) -> Result<Value, ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request("objects are JSON objects"));
    }
    let meta = metadata_mut(&mut object);
    meta.insert("name".into(), name.into());
    meta.remove("resourceVersion");
    match store.get(&key(ty, namespace, name)) {
        None => create(store, ty, namespace, object, Part::Everything),
        Some(old) => {
            let old = (*old).clone();
            replace(store, ty, namespace, name, &old, object, Part::Everything)
        }
    }
}
