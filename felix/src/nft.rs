//! The nftables manager: one table of ours, `inet tabby` (IPv4 and IPv6), replaced atomically (one `nft -f`
//! transaction deletes and re-adds it) whenever the desired rules change or the kernel's copy
//! drifts. Drift is detected by comparing the kernel's JSON listing (handles stripped) with the
//! listing taken right after our last write. Nothing outside the table is touched.
//!
//! Rules, after Calico's masquerade manager (`masq_mgr.go`): traffic from a natOutgoing pool to
//! anything outside every pool is masqueraded (or SNATed to `natOutgoingAddress`); forwarding to
//! and from pool CIDRs is accepted.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use std::collections::BTreeSet;
use tracing::info;

use crate::Error;
use crate::model::NatRules;

/// Our table: `table inet tabby`.
pub const FAMILY: &str = "inet";
/// Our table's name.
pub const TABLE: &str = "tabby";

/// Renders the table in nft's own syntax, as one transaction that replaces any previous copy.
pub fn render(n: &NatRules) -> String {
    fn set(name: &str, kind: &str, elems: Vec<String>) -> String {
        let mut s = format!("  set {name} {{\n    type {kind}; flags interval; auto-merge\n");
        if !elems.is_empty() {
            s.push_str(&format!("    elements = {{ {} }}\n", elems.join(", ")));
        }
        s.push_str("  }\n");
        s
    }
    fn strings<T: ToString>(s: &BTreeSet<T>) -> Vec<String> {
        s.iter().map(|n| n.to_string()).collect()
    }
    let snat = match n.nat_outgoing_address {
        Some(a) => format!("snat ip to {a}"),
        None => "masquerade fully-random".to_string(),
    };
    let mut t = format!(
        "table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\ntable {FAMILY} {TABLE} {{\n"
    );
    t.push_str(&set("all-ipam-pools", "ipv4_addr", strings(&n.all_pools)));
    t.push_str(&set("masq-ipam-pools", "ipv4_addr", strings(&n.masq_pools)));
    t.push_str(&set(
        "all-ipam-pools-v6",
        "ipv6_addr",
        strings(&n.all_pools6),
    ));
    t.push_str(&set(
        "masq-ipam-pools-v6",
        "ipv6_addr",
        strings(&n.masq_pools6),
    ));
    t.push_str(&format!(
        "  chain nat-outgoing {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         ip saddr @masq-ipam-pools ip daddr != @all-ipam-pools {snat}\n    \
         ip6 saddr @masq-ipam-pools-v6 ip6 daddr != @all-ipam-pools-v6 masquerade fully-random\n  }}\n"
    ));
    t.push_str(
        "  chain forward {\n    type filter hook forward priority filter; policy accept;\n    \
         ip saddr @all-ipam-pools accept\n    ip daddr @all-ipam-pools accept\n    \
         ip6 saddr @all-ipam-pools-v6 accept\n    ip6 daddr @all-ipam-pools-v6 accept\n  }\n}\n",
    );
    t
}

pub struct NftManager {
    desired: Option<NatRules>,
    /// The kernel's listing right after our last write.
    written: Option<Value>,
    dirty: bool,
}

impl Default for NftManager {
    fn default() -> Self {
        Self::new()
    }
}

impl NftManager {
    pub fn new() -> Self {
        NftManager {
            desired: None,
            written: None,
            dirty: true,
        }
    }

    pub fn set_desired(&mut self, n: &NatRules) {
        if self.desired.as_ref() != Some(n) {
            self.desired = Some(n.clone());
            self.written = None;
            self.dirty = true;
        }
    }

    pub fn queue_resync(&mut self) {
        self.dirty = true;
    }

    /// Returns whether it rewrote the table.
    pub fn apply(&mut self) -> Result<bool, Error> {
        if !self.dirty {
            return Ok(false);
        }
        let Some(want) = &self.desired else {
            return Ok(false);
        };
        if let Some(w) = &self.written
            && list_table().ok().as_ref() == Some(w)
        {
            self.dirty = false;
            return Ok(false);
        }
        if let Err(e) = nft_stdin(&render(want)) {
            if matches!(&e, Error::NftMissing) {
                // Not installed: say so once per desired state rather than on every pass.
                self.dirty = false;
            }
            return Err(e);
        }
        self.written = Some(list_table()?);
        self.dirty = false;
        info!(table = TABLE, "nft table written");
        Ok(true)
    }
}

fn nft_stdin(script: &str) -> Result<(), Error> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NftMissing,
            _ => Error::Nft(format!("running nft: {e}")),
        })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|e| Error::Nft(format!("writing to nft: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Nft(format!("waiting for nft: {e}")))?;
    if !out.status.success() {
        return Err(Error::Nft(format!(
            "applying table {TABLE}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// `nft -j list table inet tabby` without the parts that change on every write.
pub fn list_table() -> Result<Value, Error> {
    let out = Command::new("nft")
        .args(["-j", "list", "table", FAMILY, TABLE])
        .output()
        .map_err(|e| Error::Nft(format!("running nft: {e}")))?;
    if !out.status.success() {
        return Err(Error::Nft(format!(
            "listing table {TABLE}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Nft(format!("parsing nft JSON: {e}")))?;
    strip(&mut v);
    Ok(v)
}

fn strip(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("handle");
            m.remove("metainfo");
            for x in m.values_mut() {
                strip(x);
            }
        }
        Value::Array(a) => {
            a.retain(|x| x.get("metainfo").is_none());
            for x in a.iter_mut() {
                strip(x);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_masquerade_and_snat() {
        let mut n = NatRules::default();
        n.all_pools.insert("198.18.0.0/16".parse().unwrap());
        n.all_pools.insert("198.19.0.0/16".parse().unwrap());
        n.masq_pools.insert("198.18.0.0/16".parse().unwrap());
        let t = render(&n);
        assert!(t.starts_with("table inet tabby {}\ndelete table inet tabby\n"));
        assert!(t.contains("elements = { 198.18.0.0/16, 198.19.0.0/16 }"));
        assert!(t.contains(
            "ip saddr @masq-ipam-pools ip daddr != @all-ipam-pools masquerade fully-random"
        ));
        n.nat_outgoing_address = Some("192.0.2.200".parse().unwrap());
        assert!(render(&n).contains("!= @all-ipam-pools snat ip to 192.0.2.200"));
        n.masq_pools6.insert("2001:db8:ff::/48".parse().unwrap());
        assert!(render(&n).contains(
            "type ipv6_addr; flags interval; auto-merge\n    elements = { 2001:db8:ff::/48 }"
        ));
        // No pools: empty sets, still valid.
        assert!(!render(&NatRules::default()).contains("elements"));
    }
}
