//! The RIB, pure and synchronous: Adj-RIB-In per peer, the Loc-RIB and its decision process,
//! Adj-RIB-Out per peer (RFC 4271 §3.2, §9), route reflection (RFC 4456), the helper side of
//! graceful restart (RFC 4724 §4.2), import policy and max-prefix.
//!
//! The session layer drives it with events and carries out what comes back:
//!
//! ```text
//!  peer_up / receive / peer_down / end_of_rib / stale_timer_expired / originate / withdraw_origin
//!        │
//!        ▼
//!  Adj-RIB-In (post-policy) ─▶ decision process ─▶ Loc-RIB ─▶ export rules ─▶ Adj-RIB-Out
//!                                                    │                             │
//!                        RibChanges.best_changes ◀───┘   RibChanges.to_send ◀──────┘
//! ```
//!
//! Every event returns a [`RibChanges`]: the UPDATEs to send to each peer (only differences
//! from what that peer last heard, packed), the best-path changes with all equal-best next
//! hops (for felix), and an action for the session of the peer that sent the event, if any
//! (max-prefix).
//!
//! # Storage
//!
//! Built for a million routes: each prefix has one entry in a per-family hash map, and the
//! candidate paths of a prefix sit inline in that entry (one path needs no allocation of
//! its own). A path is a shared, interned attribute set ([`Arc<RouteAttrs>`]; all NLRI of an
//! UPDATE share one, as do equal sets across UPDATEs), the peer's slot and a stale flag. The
//! Adj-RIB-In of a peer is the set of paths with its slot: it is not stored a second time,
//! so operations over one peer's routes (session down, End-of-RIB sweep) walk the Loc-RIB,
//! which is O(routes) per such event, while `receive` is O(prefixes in the UPDATE). Prefixes
//! a peer sent that policy refused are kept in a set of their own per peer, for the counts.
//! The Adj-RIB-Out of a peer maps each advertised prefix to the interned attribute set it
//! was sent with.

mod import;
mod pack;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::config::NextHop;
use crate::decision::{self, Candidate};
use crate::fsm::{Cease, CeaseSubcode};
use crate::packet::{
    AfiSafi, AsPath, EncodeContext, Ipv4Prefix, Ipv6Prefix, Origin, PathAttributes, Prefix, Update,
};
use crate::policy::{
    ExportPolicy, ImportPolicy, MaxPrefixAction, MaxPrefixVerdict, PeerKind, check_max_prefix,
    max_prefix_cease_data,
};
use crate::reflection::{self, Learned, Speaker, Target};

pub use pack::prefix_wire_len;

/// The caller's name for a peer (the session layer picks them; any value is fine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

/// This speaker's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// RFC 4456 CLUSTER_ID: when set, this speaker reflects routes (see [`reflection`]).
    pub cluster_id: Option<Ipv4Addr>,
    /// What is accepted from peers (pools, default route, protected addresses).
    pub import: ImportPolicy,
    /// When set, what may be announced to external (eBGP) peers; `None`: everything the
    /// advertisement rules allow.
    pub export: Option<ExportPolicy>,
}

impl LocalConfig {
    /// A speaker with an empty import policy (which accepts nothing from peers without
    /// `import_all`) and no export policy.
    pub fn new(asn: u32, router_id: Ipv4Addr) -> Self {
        LocalConfig {
            asn,
            router_id,
            cluster_id: None,
            import: ImportPolicy::default(),
            export: None,
        }
    }
}

/// What the RIB needs to know about an Established session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub addr: IpAddr,
    pub asn: u32,
    /// The peer's BGP identifier (from its OPEN).
    pub router_id: Ipv4Addr,
    /// RFC 4456 client of ours (only meaningful with [`LocalConfig::cluster_id`]).
    pub rr_client: bool,
    pub next_hop: NextHop,
    /// Our address on this session per family, for next-hop-self. An IPv4 session carrying
    /// IPv6 routes needs `local_v6` to advertise them with our next hop.
    pub local_v4: Option<Ipv4Addr>,
    pub local_v6: Option<Ipv6Addr>,
    /// Negotiated (RFC 6793): AS numbers on the wire are four octets.
    pub four_octet_asn: bool,
    /// Negotiated (RFC 8654): UPDATEs may be up to 65535 octets.
    pub extended_messages: bool,
    /// Negotiated families; routes of other families are neither accepted nor sent.
    pub families: Vec<AfiSafi>,
    /// The peer's Restart Time when it sent the Graceful Restart capability (RFC 4724 §3);
    /// its routes are then kept as stale when the session drops without a NOTIFICATION.
    pub graceful_restart: Option<u16>,
    /// Accept prefixes outside the pools (other import rules still apply).
    pub import_all: bool,
    pub max_prefix: Option<u32>,
    pub max_prefix_action: MaxPrefixAction,
}

impl PeerInfo {
    /// An IPv4-unicast peer with defaults: not a client, default next hop, our session
    /// address unknown, 4-octet ASNs, no extended messages, no graceful restart, no limits.
    pub fn new(addr: IpAddr, asn: u32, router_id: Ipv4Addr) -> Self {
        PeerInfo {
            addr,
            asn,
            router_id,
            rr_client: false,
            next_hop: NextHop::Default,
            local_v4: None,
            local_v6: None,
            four_octet_asn: true,
            extended_messages: false,
            families: vec![AfiSafi::IPV4_UNICAST],
            graceful_restart: None,
            import_all: false,
            max_prefix: None,
            max_prefix_action: MaxPrefixAction::Stop,
        }
    }

    pub fn encode_context(&self) -> EncodeContext {
        EncodeContext {
            four_octet_asn: self.four_octet_asn,
            extended_messages: self.extended_messages,
        }
    }
}

/// A path's attributes as the RIB keeps them: the UPDATE's attributes without NEXT_HOP,
/// MP_REACH_NLRI and MP_UNREACH_NLRI, and the next hop of whichever carried it. Locally
/// originated routes have the unspecified address as next hop ("this speaker").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAttrs {
    pub attrs: PathAttributes,
    pub next_hop: IpAddr,
}

impl Hash for RouteAttrs {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let a = &self.attrs;
        self.next_hop.hash(h);
        a.origin.hash(h);
        a.as_path.hash(h);
        a.med.hash(h);
        a.local_pref.hash(h);
        a.atomic_aggregate.hash(h);
        a.aggregator.hash(h);
        a.communities.hash(h);
        a.large_communities.hash(h);
        a.originator_id.hash(h);
        a.cluster_list.hash(h);
        for u in &a.unknown {
            (u.flags, u.type_code, &u.value).hash(h);
        }
    }
}

/// Where a Loc-RIB path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteSource {
    /// [`Rib::originate`].
    Local,
    Peer(PeerId),
}

/// One path in [`Rib::loc_rib`] output.
#[derive(Debug, Clone, Copy)]
pub struct RouteView<'a> {
    pub source: RouteSource,
    pub attrs: &'a RouteAttrs,
    /// Kept for a restarting peer (RFC 4724 §4.2) and not refreshed yet.
    pub stale: bool,
}

/// One Loc-RIB entry.
#[derive(Debug, Clone)]
pub struct LocRibEntry<'a> {
    pub prefix: Prefix,
    pub best: RouteView<'a>,
    /// The multipath next hops (see [`decision`]), sorted; empty when the best path is ours.
    pub next_hops: Vec<IpAddr>,
    /// Every candidate path, the best among them.
    pub paths: Vec<RouteView<'a>>,
}

/// A change of the best path of a prefix, for whoever programs forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestChange {
    pub prefix: Prefix,
    /// All equal-best next hops, sorted. Empty: no route (withdrawn) — or, when `local`, the
    /// best path is our own origination.
    pub next_hops: Vec<IpAddr>,
    /// The best path is this speaker's own ([`Rib::originate`]).
    pub local: bool,
}

/// What the session of the peer that caused an event must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAction {
    /// Send this Cease (6/1 with RFC 4486 §4 data: max-prefix with action stop) and close
    /// (`fsm::Input::AutomaticStop`). The RIB has already dropped the peer's routes and
    /// ignores it until the next [`Rib::peer_up`].
    Stop(Cease),
    /// The peer went over its max-prefix limit with action warn (reported once per
    /// crossing).
    Warn { count: usize, limit: u32 },
}

/// What an event changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RibChanges {
    /// UPDATEs to send, per peer, in order.
    pub to_send: Vec<(PeerId, Vec<Update>)>,
    pub best_changes: Vec<BestChange>,
    pub peer_action: Option<PeerAction>,
}

impl RibChanges {
    pub fn is_empty(&self) -> bool {
        self.to_send.is_empty() && self.best_changes.is_empty() && self.peer_action.is_none()
    }

    /// The UPDATEs for one peer (empty if none).
    pub fn updates_for(&self, peer: PeerId) -> &[Update] {
        self.to_send
            .iter()
            .find(|(p, _)| *p == peer)
            .map(|(_, u)| u.as_slice())
            .unwrap_or(&[])
    }
}

/// Prefix counts of one peer, for status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerCounts {
    /// Prefixes the peer currently announces: accepted + rejected.
    pub received: usize,
    /// In its Adj-RIB-In after import policy and loop checks (stale ones included).
    pub accepted: usize,
    pub rejected: usize,
    /// In its Adj-RIB-Out.
    pub advertised: usize,
    /// Of `accepted`, kept as stale for a restarting peer.
    pub stale: usize,
}

/// The End-of-RIB markers to send after the initial advertisement to a peer (RFC 4724 §2,
/// restarting-speaker and helper side alike), one per family it negotiated.
pub fn end_of_rib_updates(families: &[AfiSafi]) -> Vec<Update> {
    families
        .iter()
        .filter(|f| **f == AfiSafi::IPV4_UNICAST || **f == AfiSafi::IPV6_UNICAST)
        .map(|f| Update::end_of_rib(*f))
        .collect()
}

/// The family of a prefix.
pub fn afi_safi(p: &Prefix) -> AfiSafi {
    match p {
        Prefix::V4(_) => AfiSafi::IPV4_UNICAST,
        Prefix::V6(_) => AfiSafi::IPV6_UNICAST,
    }
}

/// `ipnet` form of a prefix.
pub fn to_ipnet(p: &Prefix) -> IpNet {
    match p {
        Prefix::V4(p) => IpNet::V4(Ipv4Net::new(p.addr(), p.prefix_len()).expect("valid length")),
        Prefix::V6(p) => IpNet::V6(Ipv6Net::new(p.addr(), p.prefix_len()).expect("valid length")),
    }
}

/// Codec form of an `ipnet` prefix (host bits cleared).
pub fn from_ipnet(n: &IpNet) -> Prefix {
    match n {
        IpNet::V4(n) => Prefix::V4(Ipv4Prefix::new(n.addr(), n.prefix_len()).expect("valid")),
        IpNet::V6(n) => Prefix::V6(Ipv6Prefix::new(n.addr(), n.prefix_len()).expect("valid")),
    }
}

// ---------------------------------------------------------------------------------------
// Storage.

/// FxHash (as in rustc): the RIB's keys are prefixes it hashes millions of times, and
/// SipHash's flooding resistance buys nothing against peers that can simply send routes.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const FX_K: u64 = 0xf135_7aea_2e62_a9c5;

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = self.0.wrapping_add(w).wrapping_mul(FX_K);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FxMap<K, V> = HashMap<K, V, FxBuild>;
type FxSet<K> = HashSet<K, FxBuild>;

/// Slot of the local pseudo-peer (originated routes).
const LOCAL: u32 = 0;

/// One candidate path of a prefix: 16 octets.
#[derive(Debug, Clone)]
struct Path {
    attrs: Arc<RouteAttrs>,
    slot: u32,
    stale: bool,
}

/// The candidate paths of one prefix (the union of the Adj-RIBs-In for it), never empty.
#[derive(Debug)]
enum Dest {
    One(Path),
    // Boxed so that the enum stays one pointer plus the niche in `Path::stale`: 16 octets
    // a prefix instead of 24, for the common single-path case.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Path>>),
}

impl Dest {
    fn paths(&self) -> &[Path] {
        match self {
            Dest::One(p) => std::slice::from_ref(p),
            Dest::Many(v) => v,
        }
    }

    fn paths_mut(&mut self) -> &mut [Path] {
        match self {
            Dest::One(p) => std::slice::from_mut(p),
            Dest::Many(v) => v,
        }
    }

    /// Adds the path, or replaces the one from the same slot (returned).
    fn upsert(&mut self, path: Path) -> Option<Path> {
        if let Some(p) = self.paths_mut().iter_mut().find(|p| p.slot == path.slot) {
            return Some(std::mem::replace(p, path));
        }
        match self {
            Dest::One(p) => {
                let first = p.clone();
                *self = Dest::Many(Box::new(vec![first, path]));
            }
            Dest::Many(v) => v.push(path),
        }
        None
    }
}

/// Removes the path of `slot` (if `pred` holds for it); drops the entry when it was the last.
fn remove_path<K: Hash + Eq + Copy>(
    map: &mut FxMap<K, Dest>,
    key: K,
    slot: u32,
    pred: impl Fn(&Path) -> bool,
) -> Option<Path> {
    let dest = map.get_mut(&key)?;
    match dest {
        Dest::One(p) if p.slot == slot && pred(p) => match map.remove(&key) {
            Some(Dest::One(p)) => Some(p),
            _ => None,
        },
        Dest::One(_) => None,
        Dest::Many(v) => {
            let i = v.iter().position(|p| p.slot == slot && pred(p))?;
            let removed = v.swap_remove(i);
            if v.len() == 1 {
                let last = v.pop().expect("one left");
                *dest = Dest::One(last);
            }
            Some(removed)
        }
    }
}

/// Interned attribute sets, so equal ones are stored once.
#[derive(Default)]
struct Interner {
    set: FxSet<Arc<RouteAttrs>>,
}

impl Interner {
    fn intern(&mut self, a: RouteAttrs) -> Arc<RouteAttrs> {
        if let Some(x) = self.set.get(&a) {
            return x.clone();
        }
        let x = Arc::new(a);
        self.set.insert(x.clone());
        x
    }

    /// Forgets `a` if the caller's reference is the last one outside the interner.
    fn release(&mut self, a: Arc<RouteAttrs>) {
        if Arc::strong_count(&a) == 2 {
            self.set.remove(&*a);
        }
    }
}

/// What the decision process needs to know about a slot.
#[derive(Debug, Clone, Copy)]
struct Facts {
    ebgp: bool,
    rr_client: bool,
    router_id: Ipv4Addr,
    addr: IpAddr,
}

/// The Loc-RIB with everything the decision process reads.
struct Tables {
    v4: FxMap<Ipv4Prefix, Dest>,
    v6: FxMap<Ipv6Prefix, Dest>,
    /// Indexed by slot; slot 0 is this speaker.
    facts: Vec<Facts>,
    interner: Interner,
}

/// A best path as the batch compares it before and after.
#[derive(Debug, Clone)]
struct Best {
    local: bool,
    next_hops: Vec<IpAddr>,
    /// Slot and attributes of the best path (None: no route).
    path: Option<(u32, Arc<RouteAttrs>)>,
}

impl Best {
    const NONE: Best = Best {
        local: false,
        next_hops: Vec::new(),
        path: None,
    };
}

impl Tables {
    fn dest(&self, p: &Prefix) -> Option<&Dest> {
        match p {
            Prefix::V4(p) => self.v4.get(p),
            Prefix::V6(p) => self.v6.get(p),
        }
    }

    /// Adds or replaces the path of `path.slot` for `p`, first noting the best path before
    /// in `batch`; returns the replaced path. One hash lookup.
    fn upsert(&mut self, p: Prefix, path: Path, batch: &mut Batch) -> Option<Path> {
        let Tables { v4, v6, facts, .. } = self;
        match p {
            Prefix::V4(k) => upsert_in(v4, facts, k, p, path, batch),
            Prefix::V6(k) => upsert_in(v6, facts, k, p, path, batch),
        }
    }

    /// Removes the path of `slot` for `p` if `pred` holds for it, first noting the best path
    /// before in `batch`.
    fn remove(
        &mut self,
        p: Prefix,
        slot: u32,
        pred: impl Fn(&Path) -> bool,
        batch: &mut Batch,
    ) -> Option<Path> {
        let Tables { v4, v6, facts, .. } = self;
        match p {
            Prefix::V4(k) => remove_in(v4, facts, k, p, slot, pred, batch),
            Prefix::V6(k) => remove_in(v6, facts, k, p, slot, pred, batch),
        }
    }

    fn best(&self, p: &Prefix) -> Best {
        self.dest(p).map_or(Best::NONE, |d| best_of(&self.facts, d))
    }

    fn select(&self, dest: &Dest) -> (usize, Vec<IpAddr>) {
        select(&self.facts, dest)
    }

    /// Prefixes with a path of `slot` in `family` (all families when `None`) for which
    /// `pred` holds.
    fn prefixes_of(
        &self,
        slot: u32,
        family: Option<AfiSafi>,
        pred: impl Fn(&Path) -> bool,
    ) -> Vec<Prefix> {
        let has = |d: &Dest| d.paths().iter().any(|p| p.slot == slot && pred(p));
        let mut out = Vec::new();
        if family.is_none_or(|f| f == AfiSafi::IPV4_UNICAST) {
            out.extend(
                self.v4
                    .iter()
                    .filter(|(_, d)| has(d))
                    .map(|(p, _)| Prefix::V4(*p)),
            );
        }
        if family.is_none_or(|f| f == AfiSafi::IPV6_UNICAST) {
            out.extend(
                self.v6
                    .iter()
                    .filter(|(_, d)| has(d))
                    .map(|(p, _)| Prefix::V6(*p)),
            );
        }
        out
    }
}

fn candidate(facts: &[Facts], path: &Path) -> Candidate {
    let f = &facts[path.slot as usize];
    let a = &path.attrs.attrs;
    let local = path.slot == LOCAL;
    let as_path = a.as_path.as_ref();
    Candidate {
        local_pref: if f.ebgp {
            100
        } else {
            a.local_pref.unwrap_or(100)
        },
        local,
        as_path_len: as_path.map_or(0, AsPath::len_for_decision),
        origin: a.origin.unwrap_or(Origin::Incomplete),
        med: a.med.unwrap_or(0),
        neighbor_as: as_path.and_then(AsPath::neighbor_as),
        ebgp: f.ebgp,
        bgp_id: a.originator_id.unwrap_or(f.router_id),
        cluster_list_len: a.cluster_list.len(),
        peer_addr: f.addr,
    }
}

/// The decision process over the paths of `dest`: index of the best path, and the
/// multipath next hops.
fn select(facts: &[Facts], dest: &Dest) -> (usize, Vec<IpAddr>) {
    let paths = dest.paths();
    if paths.len() == 1 {
        let p = &paths[0];
        let nh = if p.slot == LOCAL {
            Vec::new()
        } else {
            vec![p.attrs.next_hop]
        };
        return (0, nh);
    }
    let cands: Vec<Candidate> = paths.iter().map(|p| candidate(facts, p)).collect();
    let s = decision::select(&cands).expect("a destination has paths");
    let mut nh: Vec<IpAddr> = if paths[s.best].slot == LOCAL {
        Vec::new()
    } else {
        s.multipath
            .iter()
            .map(|&i| paths[i].attrs.next_hop)
            .collect()
    };
    nh.sort();
    nh.dedup();
    (s.best, nh)
}

/// The best path of a destination, as a batch compares it.
fn best_of(facts: &[Facts], dest: &Dest) -> Best {
    let (i, next_hops) = select(facts, dest);
    let path = &dest.paths()[i];
    Best {
        local: path.slot == LOCAL,
        next_hops,
        path: Some((path.slot, path.attrs.clone())),
    }
}

fn upsert_in<K: Hash + Eq + Copy>(
    map: &mut FxMap<K, Dest>,
    facts: &[Facts],
    key: K,
    prefix: Prefix,
    path: Path,
    batch: &mut Batch,
) -> Option<Path> {
    match map.entry(key) {
        std::collections::hash_map::Entry::Occupied(mut o) => {
            batch.note(prefix, || best_of(facts, o.get()));
            o.get_mut().upsert(path)
        }
        std::collections::hash_map::Entry::Vacant(v) => {
            batch.note(prefix, || Best::NONE);
            v.insert(Dest::One(path));
            None
        }
    }
}

fn remove_in<K: Hash + Eq + Copy>(
    map: &mut FxMap<K, Dest>,
    facts: &[Facts],
    key: K,
    prefix: Prefix,
    slot: u32,
    pred: impl Fn(&Path) -> bool,
    batch: &mut Batch,
) -> Option<Path> {
    let Some(dest) = map.get(&key) else {
        batch.note(prefix, || Best::NONE);
        return None;
    };
    batch.note(prefix, || best_of(facts, dest));
    remove_path(map, key, slot, pred)
}

/// Per-peer state, kept while the peer is up and, for graceful restart, while it has stale
/// routes.
#[derive(Debug)]
struct PeerState {
    id: PeerId,
    info: PeerInfo,
    up: bool,
    /// Max-prefix stop tripped: ignore the peer until the next `peer_up`.
    stopped: bool,
    accepted: usize,
    stale: usize,
    rejected: FxSet<Prefix>,
    adj_rib_out: FxMap<Prefix, Arc<RouteAttrs>>,
    max_prefix_warned: bool,
}

/// The prefixes an event touched, with their best path before it.
#[derive(Default)]
struct Batch {
    before: FxMap<Prefix, Best>,
    order: Vec<Prefix>,
    /// Attribute sets dropped during the batch, to let go of in the interner at the end.
    released: Vec<Arc<RouteAttrs>>,
    action: Option<PeerAction>,
}

impl Batch {
    /// Records the best path of `p` before the batch changes it, the first time only.
    fn note(&mut self, p: Prefix, before: impl FnOnce() -> Best) {
        if let std::collections::hash_map::Entry::Vacant(v) = self.before.entry(p) {
            v.insert(before());
            self.order.push(p);
        }
    }
}

/// Adj-RIBs-In, Loc-RIB and Adj-RIBs-Out of one speaker.
pub struct Rib {
    local: LocalConfig,
    import: import::ImportCheck,
    tables: Tables,
    /// Indexed by slot; `None` at slot 0 (this speaker).
    peers: Vec<Option<PeerState>>,
    slots: HashMap<PeerId, u32>,
}

impl Rib {
    pub fn new(local: LocalConfig) -> Self {
        let me = Facts {
            ebgp: false,
            rr_client: false,
            router_id: local.router_id,
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        Rib {
            import: import::ImportCheck::new(&local.import),
            local,
            tables: Tables {
                v4: FxMap::default(),
                v6: FxMap::default(),
                facts: vec![me],
                interner: Interner::default(),
            },
            peers: vec![None],
            slots: HashMap::new(),
        }
    }

    pub fn local_config(&self) -> &LocalConfig {
        &self.local
    }

    fn speaker(&self) -> Speaker {
        Speaker {
            asn: self.local.asn,
            router_id: self.local.router_id,
            cluster_id: self.local.cluster_id,
        }
    }

    fn state(&self, slot: u32) -> &PeerState {
        self.peers[slot as usize].as_ref().expect("live slot")
    }

    fn state_mut(&mut self, slot: u32) -> &mut PeerState {
        self.peers[slot as usize].as_mut().expect("live slot")
    }

    /// The session with `id` reached Established with `info`. Returns the initial
    /// advertisement for it (the current Adj-RIB-Out contents, packed, then one End-of-RIB
    /// per negotiated family, RFC 4724 §2) in `to_send`. If the peer comes back from a
    /// graceful restart, its stale routes stay until [`Rib::end_of_rib`] or
    /// [`Rib::stale_timer_expired`] — unless it no longer has the capability, in which case
    /// they go now (RFC 4724 §4.2) and the changes that causes are in the result too.
    pub fn peer_up(&mut self, id: PeerId, info: PeerInfo) -> RibChanges {
        let ebgp = info.asn != self.local.asn;
        let facts = Facts {
            ebgp,
            rr_client: info.rr_client && !ebgp,
            router_id: info.router_id,
            addr: info.addr,
        };
        let slot = match self.slots.get(&id) {
            Some(&s) => s,
            None => {
                let s = self.peers.len() as u32;
                self.peers.push(None);
                self.tables.facts.push(facts);
                self.slots.insert(id, s);
                s
            }
        };
        let mut batch = Batch::default();
        let drop_stale = match &mut self.peers[slot as usize] {
            Some(st) => {
                // A second peer_up without peer_down: start over towards it.
                st.up = false;
                st.stopped = false;
                batch
                    .released
                    .extend(std::mem::take(&mut st.adj_rib_out).into_values());
                st.stale > 0 && info.graceful_restart.is_none()
            }
            None => false,
        };
        if drop_stale {
            self.remove_all(slot, None, true, &mut batch);
        }
        self.tables.facts[slot as usize] = facts;
        let mut changes = self.finish(batch);

        let old = self.peers[slot as usize].take();
        let mut st = PeerState {
            id,
            info,
            up: true,
            stopped: false,
            accepted: old.as_ref().map_or(0, |o| o.accepted),
            stale: old.as_ref().map_or(0, |o| o.stale),
            rejected: FxSet::default(),
            adj_rib_out: FxMap::default(),
            max_prefix_warned: false,
        };
        let mut out = pack::Outgoing::default();
        let mut memo = ExportMemo::default();
        let prefixes: Vec<Prefix> = self
            .tables
            .v4
            .keys()
            .map(|p| Prefix::V4(*p))
            .chain(self.tables.v6.keys().map(|p| Prefix::V6(*p)))
            .filter(|p| st.info.families.contains(&afi_safi(p)))
            .collect();
        let me = self.speaker();
        for p in prefixes {
            let best = self.tables.best(&p);
            let export = export_for(
                &self.local,
                &me,
                &mut self.tables,
                &best,
                slot,
                &st,
                &p,
                &mut memo,
            );
            if let Some(a) = export {
                out.announce(&a, p);
                st.adj_rib_out.insert(p, a);
            }
        }
        let mut updates = out.into_updates(&st.info.encode_context());
        updates.extend(end_of_rib_updates(&st.info.families));
        self.peers[slot as usize] = Some(st);
        changes.to_send.push((id, updates));
        changes
    }

    /// The session went down. `graceful`: it dropped without a NOTIFICATION (RFC 4724 §4.2;
    /// with RFC 8538 also after a NOTIFICATION other than Hard Reset — the caller decides).
    /// If so and the peer has the Graceful Restart capability, its routes are kept as stale
    /// (still used) until it refreshes them, or [`Rib::stale_timer_expired`], which the
    /// caller calls after the peer's restart time; otherwise they are withdrawn now.
    pub fn peer_down(&mut self, id: PeerId, graceful: bool) -> RibChanges {
        let Some(&slot) = self.slots.get(&id) else {
            return RibChanges::default();
        };
        let Some(st) = self.peers[slot as usize].as_mut() else {
            return RibChanges::default();
        };
        let mut batch = Batch::default();
        st.up = false;
        st.rejected = FxSet::default();
        batch
            .released
            .extend(std::mem::take(&mut st.adj_rib_out).into_values());
        let keep = graceful && st.info.graceful_restart.is_some() && !st.stopped;
        if keep {
            let mut stale = 0;
            for d in self
                .tables
                .v4
                .values_mut()
                .chain(self.tables.v6.values_mut())
            {
                for p in d.paths_mut() {
                    if p.slot == slot {
                        p.stale = true;
                        stale += 1;
                    }
                }
            }
            self.state_mut(slot).stale = stale;
        } else {
            self.remove_all(slot, None, false, &mut batch);
        }
        let changes = self.finish(batch);
        self.forget_if_idle(slot);
        changes
    }

    /// The peer sent End-of-RIB for `family` (RFC 4724 §4.2): its stale routes of that
    /// family that it did not re-advertise are withdrawn.
    pub fn end_of_rib(&mut self, id: PeerId, family: AfiSafi) -> RibChanges {
        let Some(&slot) = self.slots.get(&id) else {
            return RibChanges::default();
        };
        if self.peers[slot as usize]
            .as_ref()
            .is_none_or(|st| st.stale == 0)
        {
            return RibChanges::default();
        }
        let mut batch = Batch::default();
        self.remove_all(slot, Some(family), true, &mut batch);
        self.finish(batch)
    }

    /// The peer's restart time (or the caller's stale-path time) ran out: all its stale
    /// routes are withdrawn (RFC 4724 §4.2).
    pub fn stale_timer_expired(&mut self, id: PeerId) -> RibChanges {
        let Some(&slot) = self.slots.get(&id) else {
            return RibChanges::default();
        };
        if self.peers[slot as usize].is_none() {
            return RibChanges::default();
        }
        let mut batch = Batch::default();
        self.remove_all(slot, None, true, &mut batch);
        let changes = self.finish(batch);
        self.forget_if_idle(slot);
        changes
    }

    /// Drops the state of a peer that is down and has no routes left (its slot stays
    /// reserved for its id).
    fn forget_if_idle(&mut self, slot: u32) {
        if self.peers[slot as usize]
            .as_ref()
            .is_some_and(|st| !st.up && st.accepted == 0)
        {
            self.peers[slot as usize] = None;
        }
    }

    /// Removes the paths of `slot` (only stale ones if `stale_only`) in `family` (or all).
    fn remove_all(
        &mut self,
        slot: u32,
        family: Option<AfiSafi>,
        stale_only: bool,
        batch: &mut Batch,
    ) {
        let pred = |p: &Path| !stale_only || p.stale;
        let prefixes = self.tables.prefixes_of(slot, family, pred);
        let mut removed = 0;
        let mut stale = 0;
        for p in prefixes {
            if let Some(path) = self.tables.remove(p, slot, pred, batch) {
                removed += 1;
                stale += usize::from(path.stale);
                batch.released.push(path.attrs);
            }
        }
        if let Some(st) = self.peers[slot as usize].as_mut() {
            st.accepted -= removed;
            st.stale -= stale;
        }
    }

    /// An UPDATE from `id`. Withdrawals and announcements are applied (RFC 7606
    /// treat-as-withdraw included), announcements through the loop checks
    /// ([`reflection::input_loop`]) and the import policy; an End-of-RIB is handed to
    /// [`Rib::end_of_rib`]. O(prefixes in the UPDATE).
    pub fn receive(&mut self, id: PeerId, mut update: Update) -> RibChanges {
        let Some(&slot) = self.slots.get(&id) else {
            return RibChanges::default();
        };
        match &self.peers[slot as usize] {
            Some(st) if st.up && !st.stopped => {}
            _ => return RibChanges::default(),
        }
        if let Some(family) = update.as_end_of_rib() {
            return self.end_of_rib(id, family);
        }
        let mut batch = Batch::default();
        for p in update.withdrawals() {
            self.withdraw_one(slot, p, &mut batch);
        }
        if !update.treat_as_withdraw() {
            let family = update
                .attributes
                .mp_reach
                .as_ref()
                .map_or(AfiSafi::IPV4_UNICAST, |r| r.afi_safi);
            let mut attrs = std::mem::take(&mut update.attributes);
            let v4_nh = attrs.next_hop.take();
            let mp = attrs.mp_reach.take();
            attrs.mp_unreach = None;
            let nlri = std::mem::take(&mut update.nlri);
            let ebgp = self.tables.facts[slot as usize].ebgp;
            let looped = reflection::input_loop(&attrs, ebgp, &self.speaker());
            if !nlri.is_empty() {
                let nh = v4_nh.map(IpAddr::V4);
                let prefixes = nlri.into_iter().map(Prefix::V4);
                self.announce(
                    slot,
                    attrs.clone(),
                    nh,
                    looped.is_some(),
                    prefixes,
                    &mut batch,
                );
            }
            if let Some(mp) = mp
                && self.state(slot).info.families.contains(&mp.afi_safi)
            {
                let nh = match mp.next_hop {
                    crate::packet::MpNextHop::V4(a) => IpAddr::V4(a),
                    crate::packet::MpNextHop::V6 { global, .. } => IpAddr::V6(global),
                };
                self.announce(
                    slot,
                    attrs,
                    Some(nh),
                    looped.is_some(),
                    mp.nlri.into_iter(),
                    &mut batch,
                );
            }
            self.check_max_prefix(slot, family, &mut batch);
        }
        self.finish(batch)
    }

    fn withdraw_one(&mut self, slot: u32, p: Prefix, batch: &mut Batch) {
        let st = self.state_mut(slot);
        if !st.rejected.is_empty() && st.rejected.remove(&p) {
            return;
        }
        if let Some(old) = self.tables.remove(p, slot, |_| true, batch) {
            let st = self.state_mut(slot);
            st.accepted -= 1;
            st.stale -= usize::from(old.stale);
            batch.released.push(old.attrs);
        }
    }

    fn announce(
        &mut self,
        slot: u32,
        attrs: PathAttributes,
        next_hop: Option<IpAddr>,
        looped: bool,
        prefixes: impl Iterator<Item = Prefix>,
        batch: &mut Batch,
    ) {
        let shared = next_hop.map(|nh| {
            self.tables.interner.intern(RouteAttrs {
                attrs,
                next_hop: nh,
            })
        });
        let import_all = self.state(slot).info.import_all;
        for p in prefixes {
            let ok = !looped && shared.is_some() && self.import.accepts(&p, import_all);
            if !ok {
                self.withdraw_one(slot, p, batch);
                self.state_mut(slot).rejected.insert(p);
                continue;
            }
            let st = self.state_mut(slot);
            if !st.rejected.is_empty() {
                st.rejected.remove(&p);
            }
            let path = Path {
                attrs: shared.clone().expect("checked"),
                slot,
                stale: false,
            };
            match self.tables.upsert(p, path, batch) {
                Some(old) => {
                    self.state_mut(slot).stale -= usize::from(old.stale);
                    batch.released.push(old.attrs);
                }
                None => self.state_mut(slot).accepted += 1,
            }
        }
        if let Some(a) = shared {
            batch.released.push(a);
        }
    }

    /// RFC 4486: max-prefix after an UPDATE from the peer in `slot`.
    fn check_max_prefix(&mut self, slot: u32, family: AfiSafi, batch: &mut Batch) {
        let st = self.state(slot);
        let verdict = check_max_prefix(st.accepted, st.info.max_prefix, st.info.max_prefix_action);
        match verdict {
            MaxPrefixVerdict::Ok => self.state_mut(slot).max_prefix_warned = false,
            MaxPrefixVerdict::Warn { count, limit } => {
                let st = self.state_mut(slot);
                if !st.max_prefix_warned {
                    st.max_prefix_warned = true;
                    tracing::warn!(peer = %st.info.addr, count, limit, "max-prefix exceeded");
                    batch.action = Some(PeerAction::Warn { count, limit });
                }
            }
            MaxPrefixVerdict::Stop { count, limit } => {
                let st = self.state_mut(slot);
                tracing::warn!(peer = %st.info.addr, count, limit, "max-prefix exceeded, stopping");
                st.stopped = true;
                st.rejected = FxSet::default();
                batch
                    .released
                    .extend(std::mem::take(&mut st.adj_rib_out).into_values());
                self.remove_all(slot, None, false, batch);
                batch.action = Some(PeerAction::Stop(Cease {
                    subcode: CeaseSubcode::MaxPrefixesReached,
                    data: max_prefix_cease_data(family.afi, family.safi, limit),
                }));
            }
        }
    }

    /// Announces one of this node's prefixes (ORIGIN IGP, empty AS_PATH, LOCAL_PREF 100 to
    /// internal peers, our session address as next hop; IPv6 in MP_REACH_NLRI).
    pub fn originate(&mut self, prefix: Prefix) -> RibChanges {
        let next_hop = match prefix {
            Prefix::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Prefix::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let attrs = self.tables.interner.intern(RouteAttrs {
            attrs: PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::default()),
                local_pref: Some(100),
                ..Default::default()
            },
            next_hop,
        });
        let mut batch = Batch::default();
        let path = Path {
            attrs,
            slot: LOCAL,
            stale: false,
        };
        if let Some(old) = self.tables.upsert(prefix, path, &mut batch) {
            batch.released.push(old.attrs);
        }
        self.finish(batch)
    }

    /// Stops announcing one of this node's prefixes.
    pub fn withdraw_origin(&mut self, prefix: Prefix) -> RibChanges {
        let mut batch = Batch::default();
        if let Some(old) = self.tables.remove(prefix, LOCAL, |_| true, &mut batch) {
            batch.released.push(old.attrs);
        }
        self.finish(batch)
    }

    /// ROUTE-REFRESH (RFC 2918) from the peer: its whole Adj-RIB-Out for `family` again,
    /// then End-of-RIB (RFC 7313 would bracket it; a plain End-of-RIB is what BIRD accepts
    /// too).
    pub fn route_refresh(&self, id: PeerId, family: AfiSafi) -> Vec<Update> {
        let Some(st) = self
            .slots
            .get(&id)
            .and_then(|&s| self.peers[s as usize].as_ref())
        else {
            return Vec::new();
        };
        if !st.up || !st.info.families.contains(&family) {
            return Vec::new();
        }
        let mut out = pack::Outgoing::default();
        for (p, a) in &st.adj_rib_out {
            if afi_safi(p) == family {
                out.announce(a, *p);
            }
        }
        let mut updates = out.into_updates(&st.info.encode_context());
        updates.push(Update::end_of_rib(family));
        updates
    }

    /// Prefix counts of a peer (zero for an unknown one).
    pub fn peer_counts(&self, id: PeerId) -> PeerCounts {
        let Some(st) = self
            .slots
            .get(&id)
            .and_then(|&s| self.peers[s as usize].as_ref())
        else {
            return PeerCounts::default();
        };
        PeerCounts {
            received: st.accepted + st.rejected.len(),
            accepted: st.accepted,
            rejected: st.rejected.len(),
            advertised: st.adj_rib_out.len(),
            stale: st.stale,
        }
    }

    /// Number of prefixes in the Loc-RIB.
    pub fn len(&self) -> usize {
        self.tables.v4.len() + self.tables.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of distinct attribute sets stored (interned).
    pub fn attribute_sets(&self) -> usize {
        self.tables.interner.set.len()
    }

    fn view<'a>(&'a self, p: &'a Path) -> RouteView<'a> {
        RouteView {
            source: if p.slot == LOCAL {
                RouteSource::Local
            } else {
                RouteSource::Peer(self.slot_id(p.slot))
            },
            attrs: &p.attrs,
            stale: p.stale,
        }
    }

    fn slot_id(&self, slot: u32) -> PeerId {
        self.peers[slot as usize]
            .as_ref()
            .map(|st| st.id)
            .or_else(|| {
                self.slots
                    .iter()
                    .find(|(_, s)| **s == slot)
                    .map(|(id, _)| *id)
            })
            .expect("a path's slot has an id")
    }

    fn entry<'a>(&'a self, prefix: Prefix, dest: &'a Dest) -> LocRibEntry<'a> {
        let (best, next_hops) = self.tables.select(dest);
        let paths: Vec<RouteView<'a>> = dest.paths().iter().map(|p| self.view(p)).collect();
        LocRibEntry {
            prefix,
            best: paths[best],
            next_hops,
            paths,
        }
    }

    /// The Loc-RIB entry of one prefix.
    pub fn get(&self, prefix: &Prefix) -> Option<LocRibEntry<'_>> {
        self.tables.dest(prefix).map(|d| self.entry(*prefix, d))
    }

    /// The whole Loc-RIB, in no particular order.
    pub fn loc_rib(&self) -> impl Iterator<Item = LocRibEntry<'_>> + '_ {
        let v4 = self
            .tables
            .v4
            .iter()
            .map(|(p, d)| self.entry(Prefix::V4(*p), d));
        let v6 = self
            .tables
            .v6
            .iter()
            .map(|(p, d)| self.entry(Prefix::V6(*p), d));
        v4.chain(v6)
    }

    /// What was last advertised to a peer, in no particular order.
    pub fn adj_rib_out(&self, id: PeerId) -> impl Iterator<Item = (Prefix, &RouteAttrs)> + '_ {
        self.slots
            .get(&id)
            .and_then(|&s| self.peers[s as usize].as_ref())
            .into_iter()
            .flat_map(|st| st.adj_rib_out.iter().map(|(p, a)| (*p, &**a)))
    }

    /// Ends a batch: compares each touched prefix's best path with the one before, reports
    /// the changes, brings every Adj-RIB-Out up to date and packs the UPDATEs.
    fn finish(&mut self, mut batch: Batch) -> RibChanges {
        let mut changes = RibChanges {
            peer_action: batch.action.take(),
            ..Default::default()
        };
        let Rib {
            local,
            tables,
            peers,
            ..
        } = self;
        let me = Speaker {
            asn: local.asn,
            router_id: local.router_id,
            cluster_id: local.cluster_id,
        };
        let mut outgoing: Vec<Option<pack::Outgoing>> = Vec::new();
        outgoing.resize_with(peers.len(), || None);
        let mut memo = ExportMemo::default();
        let order = std::mem::take(&mut batch.order);
        for p in order {
            let before = batch.before.remove(&p).unwrap_or(Best::NONE);
            let mut after = tables.best(&p);
            let same_path = match (&before.path, &after.path) {
                (None, None) => true,
                (Some((s1, a1)), Some((s2, a2))) => s1 == s2 && Arc::ptr_eq(a1, a2),
                _ => false,
            };
            if before.local != after.local || before.next_hops != after.next_hops {
                changes.best_changes.push(BestChange {
                    prefix: p,
                    next_hops: std::mem::take(&mut after.next_hops),
                    local: after.local,
                });
            }
            if same_path {
                continue;
            }
            for (slot, (st, out)) in peers.iter_mut().zip(outgoing.iter_mut()).enumerate() {
                let Some(st) = st.as_mut().filter(|st| st.up && !st.stopped) else {
                    continue;
                };
                let want = export_for(local, &me, tables, &after, slot as u32, st, &p, &mut memo);
                match want {
                    Some(a) => {
                        if st.adj_rib_out.get(&p).is_some_and(|o| Arc::ptr_eq(o, &a)) {
                            continue;
                        }
                        out.get_or_insert_with(Default::default).announce(&a, p);
                        if let Some(old) = st.adj_rib_out.insert(p, a) {
                            batch.released.push(old);
                        }
                    }
                    None => {
                        if let Some(old) = st.adj_rib_out.remove(&p) {
                            out.get_or_insert_with(Default::default).withdraw(p);
                            batch.released.push(old);
                        }
                    }
                }
            }
        }
        for (st, out) in peers.iter().zip(outgoing) {
            if let (Some(st), Some(out)) = (st, out.filter(|o| !o.is_empty())) {
                changes
                    .to_send
                    .push((st.id, out.into_updates(&st.info.encode_context())));
            }
        }
        drop(memo);
        drop(batch.before);
        while let Some(a) = batch.released.pop() {
            tables.interner.release(a);
        }
        changes
    }
}

/// The attributes the best path `best` of `prefix` is advertised with to the peer in slot
/// `to` (whose state is `st`), or `None` when it is not advertised there.
#[allow(clippy::too_many_arguments)]
fn export_for(
    local: &LocalConfig,
    me: &Speaker,
    tables: &mut Tables,
    best: &Best,
    to: u32,
    st: &PeerState,
    prefix: &Prefix,
    memo: &mut ExportMemo,
) -> Option<Arc<RouteAttrs>> {
    let (from, attrs) = best.path.as_ref()?;
    if *from == to || !st.info.families.contains(&afi_safi(prefix)) {
        return None;
    }
    let to_facts = tables.facts[to as usize];
    if to_facts.ebgp
        && let Some(policy) = &local.export
        && !policy.allows(&to_ipnet(prefix), PeerKind::External)
    {
        return None;
    }
    let key = (Arc::as_ptr(attrs) as usize, *from, to);
    if let Some((_, out)) = memo.0.get(&key) {
        return out.clone();
    }
    let from_facts = tables.facts[*from as usize];
    let learned = if *from == LOCAL {
        Learned::Local
    } else if from_facts.ebgp {
        Learned::Ebgp
    } else if from_facts.rr_client && local.cluster_id.is_some() {
        Learned::IbgpClient
    } else {
        Learned::IbgpNonClient
    };
    let target = Target {
        ebgp: to_facts.ebgp,
        rr_client: to_facts.rr_client,
        next_hop: st.info.next_hop,
        local_v4: st.info.local_v4,
        local_v6: st.info.local_v6,
    };
    let out = if reflection::may_advertise(learned, &target, local.cluster_id.is_some()) {
        reflection::export(
            attrs,
            learned,
            from_facts.router_id,
            &target,
            me,
            matches!(prefix, Prefix::V6(_)),
        )
        .map(|a| tables.interner.intern(a))
    } else {
        None
    };
    memo.0.insert(key, (attrs.clone(), out.clone()));
    out
}

/// Export results within one batch: (attribute set address, from slot, to slot) → result.
/// The input set is held so its address stays unique while the memo lives.
#[derive(Default)]
struct ExportMemo(FxMap<MemoKey, (Arc<RouteAttrs>, Option<Arc<RouteAttrs>>)>);

/// (attribute set address, from slot, to slot).
type MemoKey = (usize, u32, u32);
