//! One allocation block: the pure maths on Calico's `IPAMBlock` layout.
//!
//! Calico (`libcalico-go/lib/ipam/ipam_block.go`): `allocations[ordinal]` is the index into
//! `attributes` of the allocation holding that ordinal, or null when free; `unallocated` is the
//! queue of free ordinals, taken from the front and given back at the back, so a freed address is
//! the last to be handed out again; `attributes[i]` is `{handle_id, secondary}` and is shared by
//! every ordinal of one allocation, and dropped (with the indices renumbered) once no ordinal
//! refers to it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use api::{AllocationAttribute, IPAMBlockSpec};
use ipnet::IpNet;

use crate::family::{Family, addr_to_u128, u128_to_addr};

/// The largest block tabby handles, in host bits. Calico's validation allows /20 (IPv4) and
/// /116 (IPv6), 12 host bits; a little headroom costs nothing.
pub const MAX_BLOCK_HOST_BITS: u8 = 16;

/// The prefix of Calico's block `affinity` field: `host:<node>`.
pub const HOST_AFFINITY_PREFIX: &str = "host:";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block {name}: spec has no cidr")]
    MissingCidr { name: String },
    #[error(
        "block {cidr}: {host_bits} host bits is more than the {MAX_BLOCK_HOST_BITS} tabby handles"
    )]
    TooLarge { cidr: IpNet, host_bits: u8 },
    #[error("block {cidr}: inconsistent allocation data: {reason}")]
    Corrupt { cidr: IpNet, reason: String },
    #[error("address {ip} is not in block {cidr}")]
    NotInBlock { ip: IpAddr, cidr: IpNet },
    #[error("address {ip} in block {cidr} is already assigned (handle {handle})")]
    AlreadyAssigned {
        ip: IpAddr,
        cidr: IpNet,
        handle: String,
    },
}

/// An `IPAMBlockSpec` whose layout has been checked, with its CIDR parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    cidr: IpNet,
    spec: IPAMBlockSpec,
}

/// What [`Block::release`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Each freed address with the handle it was held under.
    pub released: Vec<(IpAddr, Option<String>)>,
    /// Addresses of this block that were not allocated.
    pub not_allocated: Vec<IpAddr>,
}

impl Released {
    /// How many addresses each handle gave back.
    pub fn per_handle(&self) -> BTreeMap<String, u32> {
        let mut counts = BTreeMap::new();
        for (_, handle) in &self.released {
            if let Some(h) = handle {
                *counts.entry(h.clone()).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// `host:<node>` for a node, as Calico writes it.
pub fn host_affinity(node: &str) -> String {
    format!("{HOST_AFFINITY_PREFIX}{node}")
}

/// The node named by a `host:<node>` affinity.
pub fn affinity_node(affinity: &str) -> Option<&str> {
    affinity.strip_prefix(HOST_AFFINITY_PREFIX)
}

impl Block {
    /// An empty block: every ordinal free, queued in address order (Calico `newBlock`).
    pub fn new(
        cidr: IpNet,
        affinity: Option<String>,
        strict_affinity: bool,
    ) -> Result<Block, BlockError> {
        let cidr = cidr.trunc();
        let size = block_size(&cidr)?;
        Ok(Block {
            cidr,
            spec: IPAMBlockSpec {
                cidr: Some(cidr),
                affinity,
                affinity_claim_time: None,
                strict_affinity,
                allocations: vec![None; size],
                unallocated: (0..size).collect(),
                attributes: Vec::new(),
                deleted: false,
                sequence_number: Some(0),
                sequence_number_for_allocation: Default::default(),
            },
        })
    }

    /// Checks a stored block: one allocation slot per address, attribute indices in range, and
    /// `unallocated` holding each free ordinal exactly once and nothing else.
    pub fn from_spec(name: &str, spec: IPAMBlockSpec) -> Result<Block, BlockError> {
        let cidr = spec
            .cidr
            .ok_or_else(|| BlockError::MissingCidr {
                name: name.to_string(),
            })?
            .trunc();
        let size = block_size(&cidr)?;
        let corrupt = |reason: String| BlockError::Corrupt { cidr, reason };
        if spec.allocations.len() != size {
            return Err(corrupt(format!(
                "{} allocation slots for {size} addresses",
                spec.allocations.len()
            )));
        }
        if let Some((ord, idx)) = spec
            .allocations
            .iter()
            .enumerate()
            .find_map(|(o, a)| a.filter(|i| *i >= spec.attributes.len()).map(|i| (o, i)))
        {
            return Err(corrupt(format!(
                "ordinal {ord} refers to attribute {idx} of {}",
                spec.attributes.len()
            )));
        }
        let mut seen = BTreeSet::new();
        for &ord in &spec.unallocated {
            if ord >= size {
                return Err(corrupt(format!(
                    "unallocated ordinal {ord} is out of range"
                )));
            }
            if !seen.insert(ord) {
                return Err(corrupt(format!(
                    "ordinal {ord} is queued twice in unallocated"
                )));
            }
            if spec.allocations[ord].is_some() {
                return Err(corrupt(format!(
                    "ordinal {ord} is both allocated and unallocated"
                )));
            }
        }
        let free = spec.allocations.iter().filter(|a| a.is_none()).count();
        if free != seen.len() {
            return Err(corrupt(format!(
                "{free} free ordinals but {} queued in unallocated",
                seen.len()
            )));
        }
        Ok(Block { cidr, spec })
    }

    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    pub fn spec(&self) -> &IPAMBlockSpec {
        &self.spec
    }

    pub fn into_spec(self) -> IPAMBlockSpec {
        self.spec
    }

    /// Number of addresses in the block.
    pub fn size(&self) -> usize {
        self.spec.allocations.len()
    }

    pub fn free(&self) -> usize {
        self.spec.unallocated.len()
    }

    pub fn in_use(&self) -> usize {
        self.size() - self.free()
    }

    pub fn is_empty(&self) -> bool {
        self.free() == self.size()
    }

    /// The node this block is affine to, from `affinity: host:<node>`.
    pub fn affine_node(&self) -> Option<&str> {
        self.spec.affinity.as_deref().and_then(affinity_node)
    }

    pub fn set_affinity(&mut self, affinity: Option<String>) {
        self.spec.affinity = affinity;
        self.bump();
    }

    /// Ordinal of an address within the block.
    pub fn ordinal_of(&self, ip: IpAddr) -> Option<usize> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        Some((addr_to_u128(ip) - addr_to_u128(self.cidr.network())) as usize)
    }

    /// Address at an ordinal. Panics when the ordinal is outside the block, which is a bug.
    pub fn ip_of(&self, ordinal: usize) -> IpAddr {
        assert!(
            ordinal < self.size(),
            "ordinal {ordinal} outside {}",
            self.cidr
        );
        u128_to_addr(
            self.family(),
            addr_to_u128(self.cidr.network()) + ordinal as u128,
        )
    }

    /// Takes up to `n` free ordinals from the front of `unallocated` for one allocation
    /// (Calico `autoAssign`); fewer when the block has fewer free.
    pub fn auto_assign(
        &mut self,
        n: usize,
        handle: Option<&str>,
        attrs: &BTreeMap<String, String>,
    ) -> Vec<IpAddr> {
        let n = n.min(self.free());
        if n == 0 {
            return Vec::new();
        }
        let attr = self.find_or_add_attribute(handle, attrs);
        let ordinals: Vec<usize> = self.spec.unallocated.drain(..n).collect();
        for &ord in &ordinals {
            self.spec.allocations[ord] = Some(attr);
        }
        self.bump();
        ordinals.into_iter().map(|o| self.ip_of(o)).collect()
    }

    /// Assigns one given address (Calico `assign`): an error when it is outside the block or
    /// already held.
    pub fn assign(
        &mut self,
        ip: IpAddr,
        handle: Option<&str>,
        attrs: &BTreeMap<String, String>,
    ) -> Result<(), BlockError> {
        let ord = self.ordinal_of(ip).ok_or(BlockError::NotInBlock {
            ip,
            cidr: self.cidr,
        })?;
        if let Some(idx) = self.spec.allocations[ord] {
            return Err(BlockError::AlreadyAssigned {
                ip,
                cidr: self.cidr,
                handle: self.spec.attributes[idx]
                    .handle_id
                    .clone()
                    .unwrap_or_else(|| "<none>".to_string()),
            });
        }
        let attr = self.find_or_add_attribute(handle, attrs);
        self.spec.allocations[ord] = Some(attr);
        self.spec.unallocated.retain(|o| *o != ord);
        self.bump();
        Ok(())
    }

    /// Frees addresses; each freed ordinal goes to the back of `unallocated` (Calico
    /// `release`). Addresses outside the block or not allocated are reported, not errors.
    pub fn release(&mut self, ips: &[IpAddr]) -> Released {
        let mut out = Released::default();
        for &ip in ips {
            match self.ordinal_of(ip) {
                Some(ord) if self.spec.allocations[ord].is_some() => {
                    let idx = self.spec.allocations[ord].take().expect("checked");
                    self.spec.unallocated.push(ord);
                    out.released
                        .push((ip, self.spec.attributes[idx].handle_id.clone()));
                }
                _ => out.not_allocated.push(ip),
            }
        }
        if !out.released.is_empty() {
            self.delete_unused_attributes();
            self.bump();
        }
        out
    }

    /// Frees every address held under `handle` (Calico `releaseByHandle`).
    pub fn release_handle(&mut self, handle: &str) -> Vec<IpAddr> {
        let ips = self.ips_by_handle(handle);
        self.release(&ips);
        ips
    }

    /// The addresses held under `handle`, in ordinal order.
    pub fn ips_by_handle(&self, handle: &str) -> Vec<IpAddr> {
        self.allocated()
            .filter(|(_, a)| a.handle_id.as_deref() == Some(handle))
            .map(|(ip, _)| ip)
            .collect()
    }

    /// Every allocated address with its attribute, in ordinal order.
    pub fn allocated(&self) -> impl Iterator<Item = (IpAddr, &AllocationAttribute)> + '_ {
        self.spec
            .allocations
            .iter()
            .enumerate()
            .filter_map(|(ord, a)| a.map(|idx| (self.ip_of(ord), &self.spec.attributes[idx])))
    }

    /// The attribute an address is held under, if it is allocated.
    pub fn attribute_of(&self, ip: IpAddr) -> Option<&AllocationAttribute> {
        let ord = self.ordinal_of(ip)?;
        self.spec.allocations[ord].map(|idx| &self.spec.attributes[idx])
    }

    /// How many addresses each handle holds here; allocations without a handle count under
    /// `None`.
    pub fn handle_counts(&self) -> BTreeMap<Option<String>, u32> {
        let mut counts = BTreeMap::new();
        for (_, attr) in self.allocated() {
            *counts.entry(attr.handle_id.clone()).or_insert(0) += 1;
        }
        counts
    }

    fn find_or_add_attribute(
        &mut self,
        handle: Option<&str>,
        attrs: &BTreeMap<String, String>,
    ) -> usize {
        if let Some(i) = self
            .spec
            .attributes
            .iter()
            .position(|a| a.handle_id.as_deref() == handle && &a.secondary == attrs)
        {
            return i;
        }
        self.spec.attributes.push(AllocationAttribute {
            handle_id: handle.map(str::to_string),
            secondary: attrs.clone(),
            ..AllocationAttribute::default()
        });
        self.spec.attributes.len() - 1
    }

    /// Drops attributes no ordinal refers to and renumbers the references (Calico
    /// `deleteUnusedAttributes`), so a long-lived block does not accumulate dead entries.
    fn delete_unused_attributes(&mut self) {
        let mut used = vec![false; self.spec.attributes.len()];
        for idx in self.spec.allocations.iter().flatten() {
            used[*idx] = true;
        }
        let mut renumber = vec![0; used.len()];
        let mut next = 0;
        for (i, u) in used.iter().enumerate() {
            if *u {
                renumber[i] = next;
                next += 1;
            }
        }
        let mut i = 0;
        self.spec.attributes.retain(|_| {
            i += 1;
            used[i - 1]
        });
        for idx in self.spec.allocations.iter_mut().flatten() {
            *idx = renumber[*idx];
        }
    }

    /// Calico bumps `sequenceNumber` on every change of a block.
    fn bump(&mut self) {
        self.spec.sequence_number = Some(self.spec.sequence_number.unwrap_or(0) + 1);
    }
}

/// Number of addresses in a block CIDR, refusing blocks larger than [`MAX_BLOCK_HOST_BITS`].
pub fn block_size(cidr: &IpNet) -> Result<usize, BlockError> {
    let host_bits = cidr.max_prefix_len() - cidr.prefix_len();
    if host_bits > MAX_BLOCK_HOST_BITS {
        return Err(BlockError::TooLarge {
            cidr: *cidr,
            host_bits,
        });
    }
    Ok(1usize << host_bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn attrs(pod: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("pod".to_string(), pod.to_string())])
    }

    #[test]
    fn new_v4_block_is_all_free_in_address_order() {
        let b = Block::new(net("198.18.0.64/26"), Some(host_affinity("n1")), false).unwrap();
        assert_eq!(b.size(), 64);
        assert_eq!(b.free(), 64);
        assert_eq!(b.in_use(), 0);
        assert!(b.is_empty());
        assert_eq!(b.affine_node(), Some("n1"));
        assert_eq!(b.ip_of(0), ip("198.18.0.64"));
        assert_eq!(b.ip_of(63), ip("198.18.0.127"));
        assert_eq!(b.ordinal_of(ip("198.18.0.100")), Some(36));
        assert_eq!(b.ordinal_of(ip("198.18.0.128")), None);
    }

    #[test]
    fn new_v6_block_maps_ordinals() {
        let b = Block::new(net("2001:db8::40/122"), None, false).unwrap();
        assert_eq!(b.size(), 64);
        assert_eq!(b.ip_of(1), ip("2001:db8::41"));
        assert_eq!(b.ordinal_of(ip("2001:db8::7f")), Some(63));
        assert_eq!(b.ordinal_of(ip("2001:db8::80")), None);
        assert_eq!(b.ordinal_of(ip("198.18.0.1")), None);
    }

    #[test]
    fn cidr_is_truncated_and_size_is_bounded() {
        let b = Block::new(net("198.18.0.77/26"), None, false).unwrap();
        assert_eq!(b.cidr(), net("198.18.0.64/26"));
        assert!(matches!(
            Block::new(net("2001:db8::/64"), None, false),
            Err(BlockError::TooLarge { host_bits: 64, .. })
        ));
    }

    #[test]
    fn auto_assign_takes_from_front_and_shares_attribute() {
        let mut b = Block::new(net("198.18.0.0/30"), None, false).unwrap();
        let got = b.auto_assign(3, Some("h1"), &attrs("p1"));
        assert_eq!(
            got,
            vec![ip("198.18.0.0"), ip("198.18.0.1"), ip("198.18.0.2")]
        );
        assert_eq!(b.spec().attributes.len(), 1);
        assert_eq!(b.in_use(), 3);
        let more = b.auto_assign(5, Some("h2"), &attrs("p2"));
        assert_eq!(more, vec![ip("198.18.0.3")]);
        assert!(b.auto_assign(1, Some("h3"), &attrs("p3")).is_empty());
        assert_eq!(b.free() + b.in_use(), b.size());
    }

    #[test]
    fn released_ordinals_go_to_the_back() {
        let mut b = Block::new(net("198.18.0.0/30"), None, false).unwrap();
        b.auto_assign(2, Some("h1"), &attrs("p1"));
        let r = b.release(&[ip("198.18.0.0"), ip("198.18.0.3")]);
        assert_eq!(r.released, vec![(ip("198.18.0.0"), Some("h1".to_string()))]);
        assert_eq!(r.not_allocated, vec![ip("198.18.0.3")]);
        assert_eq!(b.spec().unallocated, vec![2, 3, 0]);
        assert_eq!(
            b.auto_assign(3, Some("h2"), &attrs("p2")),
            vec![ip("198.18.0.2"), ip("198.18.0.3"), ip("198.18.0.0")]
        );
    }

    #[test]
    fn unused_attributes_are_dropped_and_renumbered() {
        let mut b = Block::new(net("198.18.0.0/29"), None, false).unwrap();
        b.auto_assign(1, Some("h1"), &attrs("p1"));
        b.auto_assign(1, Some("h2"), &attrs("p2"));
        b.auto_assign(1, Some("h3"), &attrs("p3"));
        assert_eq!(b.release_handle("h1"), vec![ip("198.18.0.0")]);
        assert_eq!(b.spec().attributes.len(), 2);
        assert_eq!(b.ips_by_handle("h3"), vec![ip("198.18.0.2")]);
        assert_eq!(
            b.attribute_of(ip("198.18.0.1"))
                .unwrap()
                .handle_id
                .as_deref(),
            Some("h2")
        );
        let stored = b.clone().into_spec();
        assert_eq!(Block::from_spec("x", stored).unwrap(), b);
    }

    #[test]
    fn assign_specific_ip_v6() {
        let mut b = Block::new(net("2001:db8::/122"), None, false).unwrap();
        b.assign(ip("2001:db8::5"), Some("h"), &BTreeMap::new())
            .unwrap();
        assert!(matches!(
            b.assign(ip("2001:db8::5"), Some("g"), &BTreeMap::new()),
            Err(BlockError::AlreadyAssigned { .. })
        ));
        assert!(matches!(
            b.assign(ip("2001:db8::1:5"), Some("g"), &BTreeMap::new()),
            Err(BlockError::NotInBlock { .. })
        ));
        assert_eq!(b.in_use(), 1);
        assert!(!b.spec().unallocated.contains(&5));
        let counts = b.handle_counts();
        assert_eq!(counts.get(&Some("h".to_string())), Some(&1));
    }

    #[test]
    fn from_spec_rejects_inconsistent_layouts() {
        let good = Block::new(net("198.18.0.0/30"), None, false)
            .unwrap()
            .into_spec();
        let mut twice = good.clone();
        twice.unallocated.push(0);
        let mut missing = good.clone();
        missing.unallocated.pop();
        let mut dangling = good.clone();
        dangling.allocations[3] = Some(0);
        let mut short = good.clone();
        short.allocations.pop();
        for (spec, want) in [
            (twice, "queued twice"),
            (missing, "free ordinals"),
            (dangling, "refers to attribute"),
            (short, "allocation slots"),
        ] {
            let err = Block::from_spec("b", spec).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        let no_cidr = IPAMBlockSpec::default();
        assert_eq!(
            Block::from_spec("b", no_cidr).unwrap_err().to_string(),
            "block b: spec has no cidr"
        );
    }
}
