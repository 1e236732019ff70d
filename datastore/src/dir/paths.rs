//! Where each piece of a directory datastore lives, and how a [`Key`] becomes a file name.

use std::path::{Path, PathBuf};

use api::Key;

/// The lock file: `flock`ed shared by readers and exclusive by writers, and the record of how
/// far the object files have caught up with the log (see [`super::state`]).
pub(crate) fn state(root: &Path) -> PathBuf {
    root.join("state")
}

/// The change log (see [`super::log`]).
pub(crate) fn log(root: &Path) -> PathBuf {
    root.join("log")
}

/// Scratch space for write-then-rename; on the same file system as everything it replaces.
pub(crate) fn tmp(root: &Path) -> PathBuf {
    root.join("tmp")
}

pub(crate) fn objects(root: &Path) -> PathBuf {
    root.join("objects")
}

/// `objects/<plural>/` — one directory per kind.
pub(crate) fn kind_dir(root: &Path, kind: api::Kind) -> PathBuf {
    objects(root).join(kind.plural())
}

/// `objects/<plural>/[<namespace>/]<name>.json`.
pub(crate) fn object(root: &Path, key: &Key) -> PathBuf {
    let mut p = kind_dir(root, key.kind);
    if key.kind.namespaced() {
        p.push(component(key.namespace.as_deref().unwrap_or("")));
    }
    p.push(format!("{}.json", component(&key.name)));
    p
}

/// Longest encoded name kept verbatim; longer ones are shortened and given a hash suffix so the
/// file name (plus `.json`) stays under the 255-byte limit of Linux file systems.
const MAX_VERBATIM: usize = 200;

/// A name or namespace as one path component: ASCII letters, digits, `-`, `_` and non-leading
/// `.` stay as they are, every other byte becomes `%XX`, and the empty string becomes `%`. So
/// no name can become `.`, `..`, a hidden file or a path with a `/`, and distinct names give
/// distinct files (a hashed tail keeps overlong names distinct with overwhelming probability;
/// the file's content names its key, which readers check).
pub(crate) fn component(s: &str) -> String {
    if s.is_empty() {
        return "%".to_string();
    }
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX_VERBATIM {
        let mut cut = 150;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        let hash = fnv1a(s.as_bytes());
        let crc = super::log::crc32(s.as_bytes());
        out = format!("{}~{hash:016x}{crc:08x}", &out[..cut]);
    }
    out
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::Kind;

    #[test]
    fn names_become_safe_distinct_components() {
        assert_eq!(component("n1-198-18-0-0-26"), "n1-198-18-0-0-26");
        assert_eq!(component("k8s-pod-network.abc"), "k8s-pod-network.abc");
        assert_eq!(component(""), "%");
        assert_eq!(component(".."), "%2E.");
        assert_eq!(component("a/b"), "a%2Fb");
        assert_eq!(component("%2F"), "%252F");
        assert_ne!(component("a/b"), component("a%2Fb"));
        let long_a = "a".repeat(300);
        let long_b = format!("{}b", "a".repeat(299));
        assert!(component(&long_a).len() < 240);
        assert_ne!(component(&long_a), component(&long_b));
    }

    #[test]
    fn namespaced_kinds_get_a_namespace_directory() {
        let root = Path::new("/s");
        assert_eq!(
            object(root, &Key::new(Kind::IPPool, "default-ipv4-ippool")),
            Path::new("/s/objects/ippools/default-ipv4-ippool.json")
        );
        assert_eq!(
            object(
                root,
                &Key::namespaced(Kind::WorkloadEndpoint, "kube-system", "n1-k8s-p-eth0")
            ),
            Path::new("/s/objects/workloadendpoints/kube-system/n1-k8s-p-eth0.json")
        );
    }
}
