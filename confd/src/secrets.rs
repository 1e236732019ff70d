//! BGP passwords from a directory of secrets, the edge where the render's secrets are read.
//!
//! Layout: `<dir>/<secret name>/<key>`, the file's content (one trailing newline stripped) is
//! the value. This is exactly what Kubernetes writes when a Secret is mounted as a volume
//! (`volumes: - secret: {secretName: bgp-passwords}` mounted at `<dir>/bgp-passwords`), so a
//! BGPPeer's `password.secretKeyRef: {name: bgp-passwords, key: tor1}` is read from
//! `<dir>/bgp-passwords/tor1`. Calico's confd reads the Secret through the API instead; a
//! mounted directory keeps tabby-node free of Secret RBAC and works with every datastore.

use std::collections::BTreeMap;
use std::path::Path;

use crate::render::Resources;

/// Every secret value the BGPPeers and the BGPConfigurations of `res` refer to, read from
/// `dir`. Missing or unreadable files are left out: the render warns about them.
pub fn load(dir: &Path, res: &Resources) -> BTreeMap<String, BTreeMap<String, String>> {
    let refs = res
        .bgp_peers
        .iter()
        .filter_map(|p| p.spec.password.as_ref())
        .chain(
            res.bgp_configurations
                .iter()
                .filter_map(|c| c.spec.node_mesh_password.as_ref()),
        )
        .filter_map(|p| p.secret_key_ref.as_ref());
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in refs {
        // A name or key with a path separator would escape the directory.
        let safe = |s: &str| !s.is_empty() && !s.contains('/') && s != "." && s != "..";
        if !safe(&r.name) || !safe(&r.key) {
            continue;
        }
        if let Ok(mut v) = std::fs::read_to_string(dir.join(&r.name).join(&r.key)) {
            if v.ends_with('\n') {
                v.pop();
                if v.ends_with('\r') {
                    v.pop();
                }
            }
            out.entry(r.name.clone())
                .or_default()
                .insert(r.key.clone(), v);
        }
    }
    out
}
