//! Object metadata rules the apiserver applies on every write, whatever the resource
//! (`rest.BeforeCreate` / `rest.BeforeUpdate` and the object-meta validation in apimachinery).
//!
//! - Names: a DNS-1123 subdomain for most resources, a DNS-1123 label for namespaces
//!   ("Object Names and IDs" in the Kubernetes docs).
//! - Create: the server sets `uid`, `creationTimestamp` and `generation: 1`; `generateName`
//!   gets a random five-character suffix.
//! - Update: `uid` and `creationTimestamp` cannot change; `generation` goes up by one when
//!   anything outside `metadata` (and outside `status`, for resources with a status
//!   subresource) changed, the custom-resource rule.
//! - Status subresource: writes to the main resource keep the stored status; writes to
//!   `/status` keep everything but the status.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::resources::ResourceType;
use crate::status::{ApiError, Cause};

/// `metadata.<field>` as a string, "" when absent.
pub fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The `metadata` map of an object, created if missing. The object must be a JSON object.
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let obj = object.as_object_mut().expect("objects are JSON objects");
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("just made an object")
}

fn is_dns1123_label_part(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 label: at most 63 lowercase alphanumerics or '-', starting and ending
/// alphanumeric (apimachinery `IsDNS1123Label`).
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_dns1123_label_part(s)
}

/// RFC 1123 subdomain: at most 253 characters, dot-separated parts each matching
/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` (apimachinery `IsDNS1123Subdomain`).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label_part)
}

/// Validates `metadata.name` for `ty`, with the apiserver's messages.
pub fn validate_name(ty: &ResourceType, name: &str) -> Result<(), ApiError> {
    let message = if ty.name_is_label() {
        if name.len() > 63 {
            Some(format!(
                "Invalid value: {name:?}: must be no more than 63 characters"
            ))
        } else if !is_dns1123_label(name) {
            Some(format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ))
        } else {
            None
        }
    } else if name.len() > 253 {
        Some(format!(
            "Invalid value: {name:?}: must be no more than 253 characters"
        ))
    } else if !is_dns1123_subdomain(name) {
        Some(format!(
            "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ))
    } else {
        None
    };
    match message {
        None => Ok(()),
        Some(message) => Err(ApiError::invalid(
            ty,
            name,
            vec![Cause {
                reason: "FieldValueInvalid",
                field: "metadata.name".into(),
                message,
            }],
        )),
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A random 64-bit number: SplitMix64 over a per-process random seed and a counter. Enough
/// for uids and generated names; not for secrets.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| RandomState::new().hash_one(SystemTime::now()));
    let mut z = seed.wrapping_add(
        COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A version-4 UUID, as the apiserver gives every object.
pub fn new_uid() -> String {
    let hi = random_u64();
    let lo = random_u64();
    let hi = (hi & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
    let lo = (lo & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}

/// The five-character suffix `generateName` gets (apiserver `names.SimpleNameGenerator`:
/// characters without vowels or look-alikes).
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// Now as RFC 3339 UTC with second precision, the form of `metav1.Time`.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (days-to-civil from Howard Hinnant's algorithms).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Checks `apiVersion`/`kind` of a request body against the resource, filling them in when
/// absent (the apiserver decodes into the expected type and rejects a different one).
pub fn check_type(ty: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    let Some(obj) = object.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let want_version = ty.api_version();
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("kind".into(), ty.kind.clone().into());
        }
        Some(k) if k == ty.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the body of the request has kind {k:?}, this resource holds {:?}",
                ty.kind
            )));
        }
    }
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("apiVersion".into(), want_version.into());
        }
        Some(v) if v == want_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({want_version})"
            )));
        }
    }
    if obj.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(())
}

/// Applies the request namespace: sets it when absent, rejects a different one, clears it for
/// cluster-scoped resources (`rest.BeforeCreate`).
pub fn check_namespace(
    ty: &ResourceType,
    namespace: Option<&str>,
    object: &mut Value,
) -> Result<(), ApiError> {
    let meta = metadata_mut(object);
    match namespace {
        Some(ns) if ty.namespaced => match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                meta.insert("namespace".into(), ns.into());
            }
            Some(n) if n == ns => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        },
        _ => {
            meta.remove("namespace");
        }
    }
    Ok(())
}

/// The parts of an object that count for `generation`: everything but metadata (and status
/// when the resource has a status subresource).
fn generation_content(ty: &ResourceType, object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(obj) = copy.as_object_mut() {
        obj.remove("metadata");
        if ty.status_subresource {
            obj.remove("status");
        }
    }
    copy
}

/// Prepares a new object for create: system metadata and the status rules.
pub fn prepare_create(ty: &ResourceType, object: &mut Value) {
    let meta = metadata_mut(object);
    meta.insert("uid".into(), new_uid().into());
    meta.insert("creationTimestamp".into(), now_rfc3339().into());
    meta.insert("generation".into(), 1.into());
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("resourceVersion");
    let obj = object.as_object_mut().expect("checked to be an object");
    if ty.status_subresource {
        match (ty.group.as_str(), ty.plural.as_str()) {
            // podStrategy.PrepareForCreate: a new pod is Pending, whatever the client sent.
            ("", "pods") => {
                obj.insert("status".into(), serde_json::json!({"phase": "Pending"}));
            }
            // namespaceStrategy.PrepareForCreate: a new namespace is Active.
            ("", "namespaces") => {
                obj.insert("status".into(), serde_json::json!({"phase": "Active"}));
            }
            // Nodes are created with their status (the kubelet registers that way); custom
            // resources (and CRDs, whose status the server fills in) drop it.
            ("", "nodes") => {}
            _ => {
                obj.remove("status");
            }
        }
    }
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A write to the resource itself: everything but the status (when there is a status
    /// subresource).
    Main,
    /// A write to the `/status` subresource: the status only.
    Status,
    /// A test seed through [`crate::Server::put_object`]: everything, as given.
    Everything,
}

/// Builds the object an update stores from the request's `new` object and the stored `old`
/// one: keeps the immutable system metadata, applies the status rules and bumps `generation`.
pub fn prepare_update(
    ty: &ResourceType,
    name: &str,
    old: &Value,
    mut new: Value,
    part: Part,
) -> Result<Value, ApiError> {
    let old_uid = meta_str(old, "uid").to_string();
    let new_uid = meta_str(&new, "uid").to_string();
    if !new_uid.is_empty() && new_uid != old_uid {
        return Err(ApiError::invalid(
            ty,
            name,
            vec![Cause {
                reason: "FieldValueInvalid",
                field: "metadata.uid".into(),
                message: format!("Invalid value: {new_uid:?}: field is immutable"),
            }],
        ));
    }
    match part {
        Part::Status => {
            // statusStrategy.PrepareForUpdate: the stored object with the new status.
            let status = new.as_object_mut().and_then(|o| o.remove("status"));
            new = old.clone();
            let obj = new.as_object_mut().expect("stored objects are objects");
            match status {
                Some(s) => obj.insert("status".into(), s),
                None => obj.remove("status"),
            };
        }
        Part::Main if ty.status_subresource => {
            let obj = new.as_object_mut().expect("checked to be an object");
            match old.get("status") {
                Some(s) => obj.insert("status".into(), s.clone()),
                None => obj.remove("status"),
            };
        }
        Part::Main | Part::Everything => {}
    }
    let generation = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let bump = generation_content(ty, old) != generation_content(ty, &new);
    let meta = metadata_mut(&mut new);
    meta.insert("uid".into(), old_uid.into());
    match old.pointer("/metadata/creationTimestamp") {
        Some(t) => meta.insert("creationTimestamp".into(), t.clone()),
        None => meta.remove("creationTimestamp"),
    };
    meta.insert("generation".into(), (generation + i64::from(bump)).into());
    Ok(new)
}

/// Whether two stored forms are the same object, ignoring `metadata.resourceVersion` and
/// `metadata.managedFields`: an update that changes nothing else is a no-op that keeps the
/// resourceVersion (the apiserver's `GuaranteedUpdate` skips the etcd write when the encoded
/// bytes are unchanged).
pub fn same_content(a: &Value, b: &Value) -> bool {
    fn strip(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            meta.remove("managedFields");
        }
        v
    }
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        for ok in ["a", "a-b", "a.b", "0", "a1.b2-c", &"a".repeat(253)] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a_b",
            "-a",
            "a-",
            "a..b",
            "a.-b",
            ".a",
            &"a".repeat(254),
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
        assert!(is_dns1123_label("kube-system"));
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn uids_are_v4_and_distinct() {
        let a = new_uid();
        let b = new_uid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]));
    }
}
