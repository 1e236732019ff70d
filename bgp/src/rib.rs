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
//! # What the session layer does with it
//!
//! - Established → [`Rib::peer_up`] with the negotiated [`PeerInfo`]; send what comes back
//!   for that peer (the table, then End-of-RIB per family: also the restarting-speaker side
//!   of RFC 4724, see [`end_of_rib_updates`]).
//! - Each decoded UPDATE → [`Rib::receive`] (End-of-RIB included). If `peer_action` is
//!   [`PeerAction::Stop`], feed the Cease to the FSM as `Input::AutomaticStop`.
//! - Session down → [`Rib::peer_down`], `graceful` when it went without a NOTIFICATION. For
//!   a peer with the Graceful Restart capability, arm a timer for its Restart Time and call
//!   [`Rib::stale_timer_expired`] when it fires; when the peer is back, keep a timer
//!   running until its End-of-RIB (how long is the caller's choice; BIRD waits 360 s) and
//!   call the same on expiry.
//! - ROUTE-REFRESH → [`Rib::route_refresh`].
//! - `to_send` goes to each peer in order; `best_changes` to felix; [`Rib::peer_counts`],
//!   [`Rib::loc_rib`] and [`Rib::adj_rib_out`] to the status socket.
//!
//! # Storage
//!
//! Built for a million routes. Each prefix is one 16-octet bucket in a per-family hash map
//! (IPv4 keys hashed for locality, see `V4Key`; IPv6 with FxHash): the prefix and an
//! 8-octet `Dest`, which is the prefix's single
//! candidate path inline — attribute set id, peer slot, stale flag — or, for the few
//! prefixes with several paths, the index of their list. Attribute sets are interned in an
//! `AttrTable` with plain reference counts: all NLRI of an UPDATE share one, as do equal
//! sets across UPDATEs, and no atomic operation happens per route. The Adj-RIB-In of a peer
//! is the set of paths with its slot: it is not stored a second time, so operations over
//! one peer's routes (session down, End-of-RIB sweep, stale marking) walk the Loc-RIB, which
//! is O(routes) per such event, while `receive` is O(prefixes in the UPDATE). Prefixes a
//! peer sent that were refused are kept in a set of their own per peer, for the counts. The
//! Adj-RIB-Out of a peer maps each advertised prefix to the attribute set id it was sent
//! with; a route is sent again only when that id changes.
//!
//! Limits: 65,535 peers at once (slots are `u16`), 2^32 distinct attribute sets.

mod import;
mod pack;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
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

/// The equal-best next hops of a best path (see [`decision`]), sorted. Nearly every prefix
/// has one, so one is kept inline: a best-path change costs no allocation of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(from = "Vec<IpAddr>", into = "Vec<IpAddr>")]
pub enum NextHops {
    /// No route, or our own.
    #[default]
    None,
    One(IpAddr),
    /// Two or more (multipath).
    Many(Box<[IpAddr]>),
}

impl NextHops {
    pub fn as_slice(&self) -> &[IpAddr] {
        match self {
            NextHops::None => &[],
            NextHops::One(a) => std::slice::from_ref(a),
            NextHops::Many(v) => v,
        }
    }
}

impl std::ops::Deref for NextHops {
    type Target = [IpAddr];
    fn deref(&self) -> &[IpAddr] {
        self.as_slice()
    }
}

impl From<Vec<IpAddr>> for NextHops {
    fn from(v: Vec<IpAddr>) -> Self {
        match v.len() {
            0 => NextHops::None,
            1 => NextHops::One(v[0]),
            _ => NextHops::Many(v.into_boxed_slice()),
        }
    }
}

impl From<NextHops> for Vec<IpAddr> {
    fn from(n: NextHops) -> Self {
        n.as_slice().to_vec()
    }
}

impl PartialEq<Vec<IpAddr>> for NextHops {
    fn eq(&self, other: &Vec<IpAddr>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

/// A change of the best path of a prefix, for whoever programs forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestChange {
    pub prefix: Prefix,
    /// All equal-best next hops, sorted. Empty: no route (withdrawn) — or, when `local`, the
    /// best path is our own origination.
    pub next_hops: NextHops,
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

    /// Appends the changes of a later event (or of the next chunk of a sweep).
    fn merge(&mut self, later: RibChanges) {
        for (peer, updates) in later.to_send {
            match self.to_send.iter_mut().find(|(p, _)| *p == peer) {
                Some((_, u)) => u.extend(updates),
                None => self.to_send.push((peer, updates)),
            }
        }
        if self.best_changes.is_empty() {
            self.best_changes = later.best_changes;
        } else {
            self.best_changes.extend(later.best_changes);
        }
        if later.peer_action.is_some() {
            self.peer_action = later.peer_action;
        }
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

/// An IPv4 prefix as the Loc-RIB's key: address and length in one word, hashed so that
/// neighbouring prefixes share cache lines.
///
/// A sender's table dump comes in address order, a million /32s or /26s one after the
/// other. With a scattering hash every insert costs two cache misses in a table of tens of
/// megabytes. Here an aligned run of 8 network numbers of one length maps to 8 neighbouring
/// buckets (half a hashbrown group, two cache lines), while the runs themselves, and the
/// 7-bit tag hashbrown filters on, are spread by a multiplicative hash; runs longer than 8
/// would fill whole groups and make colliding runs probe far. Measured on the 1M /32 feed:
/// about 12 % less CPU than FxHash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct V4Key(u64);

impl V4Key {
    fn new(p: &Ipv4Prefix) -> Self {
        V4Key((u64::from(u32::from(p.addr())) << 8) | u64::from(p.prefix_len()))
    }

    fn prefix(self) -> Ipv4Prefix {
        Ipv4Prefix::new(Ipv4Addr::from((self.0 >> 8) as u32), self.0 as u8).expect("valid length")
    }
}

impl Hash for V4Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let addr = (self.0 >> 8) as u32;
        let len = self.0 as u8;
        let net = u64::from(addr.checked_shr(32 - u32::from(len)).unwrap_or(0));
        let run = ((net >> 3) ^ (u64::from(len) << 40)).wrapping_mul(FX_K);
        let run = run ^ (run >> 31);
        h.write_u64(run ^ (net & 7) ^ ((net & 0x7f) << 57));
    }
}

/// Passes on the one `u64` a [`V4Key`] writes.
#[derive(Default, Clone, Copy)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(FX_K);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type V4Map = HashMap<V4Key, Dest, BuildHasherDefault<WordHasher>>;

/// Slot of the local pseudo-peer (originated routes).
const LOCAL: u16 = 0;

/// Index of an interned attribute set in [`AttrTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AttrId(u32);

/// One candidate path of a prefix: 8 octets.
#[derive(Debug, Clone, Copy)]
struct Path {
    attrs: AttrId,
    slot: u16,
    stale: bool,
}

/// The candidate paths of one prefix (the union of the Adj-RIBs-In for it), never empty:
/// the path itself when there is one, else the index of its list in [`Multi`]. 8 octets, so
/// a hash map bucket with the prefix is 16.
#[derive(Debug, Clone, Copy)]
enum Dest {
    One(Path),
    Many(u32),
}

/// The path lists of the prefixes that have more than one path.
#[derive(Debug, Default)]
struct Multi {
    lists: Vec<Vec<Path>>,
    free: Vec<u32>,
}

impl Multi {
    fn alloc(&mut self, v: Vec<Path>) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.lists[i as usize] = v;
                i
            }
            None => {
                self.lists.push(v);
                (self.lists.len() - 1) as u32
            }
        }
    }

    fn release(&mut self, i: u32) {
        self.lists[i as usize] = Vec::new();
        self.free.push(i);
    }
}

impl Dest {
    fn paths<'a>(&'a self, m: &'a Multi) -> &'a [Path] {
        match self {
            Dest::One(p) => std::slice::from_ref(p),
            Dest::Many(i) => &m.lists[*i as usize],
        }
    }

    /// Adds the path, or replaces the one from the same slot (returned).
    fn upsert(&mut self, m: &mut Multi, path: Path) -> Option<Path> {
        match self {
            Dest::One(p) if p.slot == path.slot => Some(std::mem::replace(p, path)),
            Dest::One(p) => {
                let i = m.alloc(vec![*p, path]);
                *self = Dest::Many(i);
                None
            }
            Dest::Many(i) => {
                let v = &mut m.lists[*i as usize];
                match v.iter_mut().find(|p| p.slot == path.slot) {
                    Some(p) => Some(std::mem::replace(p, path)),
                    None => {
                        v.push(path);
                        None
                    }
                }
            }
        }
    }
}

/// Interned attribute sets, each stored once, with plain reference counts (paths and
/// Adj-RIB-Out entries): no atomic operation per route. A set whose count drops to zero is
/// freed only at the end of the batch ([`AttrTable::collect`]), so an [`AttrId`] keeps its
/// meaning for the whole batch.
#[derive(Default)]
struct AttrTable {
    sets: Vec<Option<Arc<RouteAttrs>>>,
    refs: Vec<u32>,
    index: FxMap<Arc<RouteAttrs>, u32>,
    free: Vec<u32>,
    unused: Vec<u32>,
}

impl AttrTable {
    /// The id of `a`, stored if new (with no references yet).
    fn intern(&mut self, a: RouteAttrs) -> AttrId {
        if let Some(&i) = self.index.get(&a) {
            return AttrId(i);
        }
        let a = Arc::new(a);
        let i = match self.free.pop() {
            Some(i) => {
                self.sets[i as usize] = Some(a.clone());
                self.refs[i as usize] = 0;
                i
            }
            None => {
                self.sets.push(Some(a.clone()));
                self.refs.push(0);
                (self.sets.len() - 1) as u32
            }
        };
        self.index.insert(a, i);
        self.unused.push(i);
        AttrId(i)
    }

    fn arc(&self, id: AttrId) -> &Arc<RouteAttrs> {
        self.sets[id.0 as usize]
            .as_ref()
            .expect("a referenced attribute set is live")
    }

    fn get(&self, id: AttrId) -> &RouteAttrs {
        self.arc(id)
    }

    fn retain(&mut self, id: AttrId) {
        self.refs[id.0 as usize] += 1;
    }

    fn release(&mut self, id: AttrId) {
        let r = &mut self.refs[id.0 as usize];
        *r -= 1;
        if *r == 0 {
            self.unused.push(id.0);
        }
    }

    /// Frees the sets nothing refers to any more.
    fn collect(&mut self) {
        while let Some(i) = self.unused.pop() {
            if self.refs[i as usize] == 0
                && let Some(a) = self.sets[i as usize].take()
            {
                self.index.remove(&a);
                self.free.push(i);
            }
        }
    }

    fn len(&self) -> usize {
        self.index.len()
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
    v4: V4Map,
    v6: FxMap<Ipv6Prefix, Dest>,
    multi: Multi,
    /// Indexed by slot; slot 0 is this speaker.
    facts: Vec<Facts>,
    attrs: AttrTable,
}

/// What the decision process reads, borrowed apart from the prefix maps.
#[derive(Clone, Copy)]
struct Decide<'a> {
    facts: &'a [Facts],
    attrs: &'a AttrTable,
}

/// A best path as the batch compares it before and after: 12 octets, no allocation unless
/// the prefix has several paths and best-path changes are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Best {
    /// Attribute set of the best path; `NO_ROUTE`: there is none.
    attrs: u32,
    /// Index of the multipath next hops in [`Batch::multipaths`] when the prefix has
    /// several paths and best-path changes are reported; `NO_MULTIPATH` otherwise (they
    /// follow from the path).
    multipath: u32,
    slot: u16,
}

const NO_ROUTE: u32 = u32::MAX;
const NO_MULTIPATH: u32 = u32::MAX;

impl Best {
    const NONE: Best = Best {
        attrs: NO_ROUTE,
        multipath: NO_MULTIPATH,
        slot: 0,
    };

    fn of(p: &Path) -> Best {
        Best {
            attrs: p.attrs.0,
            multipath: NO_MULTIPATH,
            slot: p.slot,
        }
    }

    /// Slot and attributes of the best path (None: no route).
    fn path(&self) -> Option<(u16, AttrId)> {
        (self.attrs != NO_ROUTE).then_some((self.slot, AttrId(self.attrs)))
    }

    fn local(&self) -> bool {
        matches!(self.path(), Some((LOCAL, _)))
    }

    /// The next hops as [`BestChange`] reports them. Attribute ids keep their meaning for
    /// the whole batch, so this holds for a `before` too.
    fn next_hops(&self, attrs: &AttrTable, multipaths: &[Box<[IpAddr]>]) -> NextHops {
        match self.path() {
            None | Some((LOCAL, _)) => NextHops::None,
            Some(_) if self.multipath != NO_MULTIPATH => {
                NextHops::from(multipaths[self.multipath as usize].to_vec())
            }
            Some((_, a)) => NextHops::One(attrs.get(a).next_hop),
        }
    }
}

impl Tables {
    fn dest(&self, p: &Prefix) -> Option<&Dest> {
        match p {
            Prefix::V4(p) => self.v4.get(&V4Key::new(p)),
            Prefix::V6(p) => self.v6.get(p),
        }
    }

    /// Adds or replaces the path of `path.slot` for `p`, first noting the best path before
    /// in `batch`; returns the replaced path. One hash lookup. The caller keeps the
    /// reference counts.
    fn upsert(&mut self, p: Prefix, path: Path, batch: &mut Batch) -> Option<Path> {
        let Tables {
            v4,
            v6,
            multi,
            facts,
            attrs,
        } = self;
        let d = Decide { facts, attrs };
        match p {
            Prefix::V4(k) => upsert_in(v4, multi, d, V4Key::new(&k), p, path, batch),
            Prefix::V6(k) => upsert_in(v6, multi, d, k, p, path, batch),
        }
    }

    /// Removes the path of `slot` for `p` if `pred` holds for it, first noting the best path
    /// before in `batch`. The caller keeps the reference counts.
    fn remove(
        &mut self,
        p: Prefix,
        slot: u16,
        pred: impl Fn(&Path) -> bool,
        batch: &mut Batch,
    ) -> Option<Path> {
        let Tables {
            v4,
            v6,
            multi,
            facts,
            attrs,
        } = self;
        let d = Decide { facts, attrs };
        match p {
            Prefix::V4(k) => remove_in(v4, multi, d, V4Key::new(&k), p, slot, pred, batch),
            Prefix::V6(k) => remove_in(v6, multi, d, k, p, slot, pred, batch),
        }
    }

    fn decide(&self) -> Decide<'_> {
        Decide {
            facts: &self.facts,
            attrs: &self.attrs,
        }
    }

    /// The best path of `p`, without multipath next hops.
    fn best(&self, p: &Prefix) -> Best {
        self.dest(p)
            .map_or(Best::NONE, |d| best_of(self.decide(), &self.multi, d, None))
    }

    fn select(&self, dest: &Dest) -> (usize, Vec<IpAddr>) {
        select(self.decide(), &self.multi, dest)
    }

    /// Prefixes with a path of `slot` in `family` (all families when `None`) for which
    /// `pred` holds.
    fn prefixes_of(
        &self,
        slot: u16,
        family: Option<AfiSafi>,
        pred: impl Fn(&Path) -> bool,
    ) -> (Vec<V4Key>, Vec<Ipv6Prefix>) {
        let has = |d: &Dest| {
            d.paths(&self.multi)
                .iter()
                .any(|p| p.slot == slot && pred(p))
        };
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        if family.is_none_or(|f| f == AfiSafi::IPV4_UNICAST) {
            v4.extend(self.v4.iter().filter(|(_, d)| has(d)).map(|(k, _)| *k));
        }
        if family.is_none_or(|f| f == AfiSafi::IPV6_UNICAST) {
            v6.extend(self.v6.iter().filter(|(_, d)| has(d)).map(|(p, _)| *p));
        }
        (v4, v6)
    }

    /// Marks every path of `slot` stale; returns how many there are.
    fn mark_stale(&mut self, slot: u16) -> usize {
        let mut n = 0;
        let mut mark = |p: &mut Path| {
            if p.slot == slot {
                p.stale = true;
                n += 1;
            }
        };
        for d in self.v4.values_mut().chain(self.v6.values_mut()) {
            if let Dest::One(p) = d {
                mark(p);
            }
        }
        for v in &mut self.multi.lists {
            v.iter_mut().for_each(&mut mark);
        }
        n
    }
}

fn candidate(d: Decide<'_>, path: &Path) -> Candidate {
    let f = &d.facts[usize::from(path.slot)];
    let a = &d.attrs.get(path.attrs).attrs;
    let as_path = a.as_path.as_ref();
    Candidate {
        local_pref: if f.ebgp {
            100
        } else {
            a.local_pref.unwrap_or(100)
        },
        local: path.slot == LOCAL,
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
fn select(d: Decide<'_>, m: &Multi, dest: &Dest) -> (usize, Vec<IpAddr>) {
    let paths = dest.paths(m);
    if paths.len() == 1 {
        let p = &paths[0];
        let nh = if p.slot == LOCAL {
            Vec::new()
        } else {
            vec![d.attrs.get(p.attrs).next_hop]
        };
        return (0, nh);
    }
    let cands: Vec<Candidate> = paths.iter().map(|p| candidate(d, p)).collect();
    let s = decision::select(&cands).expect("a destination has paths");
    let mut nh: Vec<IpAddr> = if paths[s.best].slot == LOCAL {
        Vec::new()
    } else {
        s.multipath
            .iter()
            .map(|&i| d.attrs.get(paths[i].attrs).next_hop)
            .collect()
    };
    nh.sort();
    nh.dedup();
    (s.best, nh)
}

/// The best path of a destination, as a batch compares it; with the multipath next hops
/// stored in `multipaths` if given and there are several paths. A single path needs no
/// decision.
fn best_of(
    d: Decide<'_>,
    m: &Multi,
    dest: &Dest,
    multipaths: Option<&mut Vec<Box<[IpAddr]>>>,
) -> Best {
    match dest {
        Dest::One(p) => Best::of(p),
        Dest::Many(_) => {
            let (i, next_hops) = select(d, m, dest);
            let mut best = Best::of(&dest.paths(m)[i]);
            if let Some(mps) = multipaths
                && best.slot != LOCAL
            {
                best.multipath = mps.len() as u32;
                mps.push(next_hops.into_boxed_slice());
            }
            best
        }
    }
}

fn upsert_in<K: Hash + Eq + Copy, S: BuildHasher>(
    map: &mut HashMap<K, Dest, S>,
    m: &mut Multi,
    d: Decide<'_>,
    key: K,
    prefix: Prefix,
    path: Path,
    batch: &mut Batch,
) -> Option<Path> {
    match map.entry(key) {
        std::collections::hash_map::Entry::Occupied(mut o) => {
            let before = best_of(d, m, o.get(), batch.multipaths());
            let old = o.get_mut().upsert(m, path);
            let after = best_of(d, m, o.get(), batch.multipaths());
            batch.note(prefix, before, after);
            old
        }
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(Dest::One(path));
            batch.note(prefix, Best::NONE, Best::of(&path));
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn remove_in<K: Hash + Eq + Copy, S: BuildHasher>(
    map: &mut HashMap<K, Dest, S>,
    m: &mut Multi,
    d: Decide<'_>,
    key: K,
    prefix: Prefix,
    slot: u16,
    pred: impl Fn(&Path) -> bool,
    batch: &mut Batch,
) -> Option<Path> {
    // Nothing there: nothing changes, nothing to note.
    let std::collections::hash_map::Entry::Occupied(mut o) = map.entry(key) else {
        return None;
    };
    let dest = o.get_mut();
    let removed = match *dest {
        Dest::One(p) if p.slot == slot && pred(&p) => {
            o.remove();
            batch.note(prefix, Best::of(&p), Best::NONE);
            return Some(p);
        }
        Dest::One(_) => return None,
        Dest::Many(i) => {
            let v = &mut m.lists[i as usize];
            let j = v.iter().position(|p| p.slot == slot && pred(p))?;
            let before = best_of(d, m, dest, batch.multipaths());
            let v = &mut m.lists[i as usize];
            let removed = v.swap_remove(j);
            if v.len() == 1 {
                *dest = Dest::One(v[0]);
                m.release(i);
            }
            let after = best_of(d, m, dest, batch.multipaths());
            batch.note(prefix, before, after);
            removed
        }
    };
    Some(removed)
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
    adj_rib_out: FxMap<Prefix, AttrId>,
    max_prefix_warned: bool,
}

impl PeerState {
    /// Empties the Adj-RIB-Out (the session is gone or starts over).
    fn clear_adj_rib_out(&mut self, attrs: &mut AttrTable) {
        for (_, id) in self.adj_rib_out.drain() {
            attrs.release(id);
        }
    }
}

/// A prefix an event touched: its best path before the event and after it.
struct Touched {
    prefix: Prefix,
    before: Best,
    after: Best,
}

/// The prefixes an event touched, in order, each once. A plain list: a prefix is nearly
/// always touched once per event, so instead of a map keyed by prefix a one-bit-per-slot
/// filter tells when it may have been touched before, and only then is the list searched.
struct Batch {
    touched: Vec<Touched>,
    /// The filter (empty when the caller knows its prefixes are distinct).
    seen: Vec<u64>,
    /// Right shift taking a prefix hash to a bit index in `seen`.
    shift: u32,
    /// Compute the multipath next hops of prefixes with several paths (best-path changes
    /// are reported).
    multipath: bool,
    /// Those next hops, for [`Best::multipath`].
    multipaths: Vec<Box<[IpAddr]>>,
    action: Option<PeerAction>,
}

/// Prefixes a sweep over one peer's routes (session down, End-of-RIB, stale timer) handles
/// per batch, so that the list of touched prefixes stays small next to the table.
const SWEEP_CHUNK: usize = 65_536;

impl Batch {
    /// A batch whose prefixes are distinct (a sweep, or a single prefix), in `touched`
    /// (empty; reused so that its memory is warm).
    fn distinct(mut touched: Vec<Touched>, n: usize, multipath: bool) -> Self {
        touched.reserve(n);
        Batch {
            touched,
            seen: Vec::new(),
            shift: 0,
            multipath,
            multipaths: Vec::new(),
            action: None,
        }
    }

    /// A batch for about `n` prefixes that may repeat (an UPDATE's withdrawals and NLRI).
    fn with_capacity(mut touched: Vec<Touched>, n: usize, multipath: bool) -> Self {
        // 32 bits a prefix: a false hit, which costs a search of the list, about 3 % of
        // the time at the end of the batch.
        let bits = (n.max(2) * 32).next_power_of_two();
        touched.reserve(n);
        Batch {
            touched,
            seen: vec![0; bits.div_ceil(64)],
            shift: 64 - bits.trailing_zeros(),
            multipath,
            multipaths: Vec::new(),
            action: None,
        }
    }

    /// Where [`best_of`] puts multipath next hops, if they are wanted.
    fn multipaths(&mut self) -> Option<&mut Vec<Box<[IpAddr]>>> {
        self.multipath.then_some(&mut self.multipaths)
    }

    /// Records that `p` went from `before` to `after`; a prefix touched again keeps its
    /// first `before`. Inlined: built in place, the entry is written once.
    #[inline(always)]
    fn note(&mut self, p: Prefix, before: Best, after: Best) {
        if !self.seen.is_empty() {
            let h = (prefix_hash(&p) >> self.shift) as usize;
            let (word, bit) = (h / 64, 1u64 << (h % 64));
            if self.seen[word] & bit != 0 {
                if let Some(t) = self.touched.iter_mut().rev().find(|t| t.prefix == p) {
                    t.after = after;
                    return;
                }
            } else {
                self.seen[word] |= bit;
            }
        }
        self.touched.push(Touched {
            prefix: p,
            before,
            after,
        });
    }
}

/// A well-mixed hash of a prefix (for [`Batch`]'s filter: its top bits are used).
fn prefix_hash(p: &Prefix) -> u64 {
    let w = match p {
        Prefix::V4(p) => (u64::from(u32::from(p.addr())) << 8) | u64::from(p.prefix_len()),
        Prefix::V6(p) => {
            let a = u128::from(p.addr());
            ((a >> 64) as u64).wrapping_mul(FX_K) ^ (a as u64) ^ u64::from(p.prefix_len())
        }
    };
    let h = w.wrapping_mul(FX_K);
    h ^ (h >> 29)
}

/// Adj-RIBs-In, Loc-RIB and Adj-RIBs-Out of one speaker.
pub struct Rib {
    local: LocalConfig,
    import: import::ImportCheck,
    tables: Tables,
    /// Indexed by slot; `None` at slot 0 (this speaker) and at free slots.
    peers: Vec<Option<PeerState>>,
    slots: HashMap<PeerId, u16>,
    free_slots: Vec<u16>,
    /// Report best-path changes in [`RibChanges::best_changes`] (see
    /// [`Rib::report_best_changes`]).
    report_best: bool,
    /// The list of the last batch, empty, for the next one: fresh memory for every UPDATE
    /// costs more than the work on it.
    spare: Vec<Touched>,
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
                v4: V4Map::default(),
                v6: FxMap::default(),
                multi: Multi::default(),
                facts: vec![me],
                attrs: AttrTable::default(),
            },
            peers: vec![None],
            slots: HashMap::new(),
            free_slots: Vec::new(),
            report_best: true,
            spare: Vec::new(),
        }
    }

    /// Whether events report best-path changes (on by default). Off, when no one programs
    /// forwarding from them (a standalone route reflector), `best_changes` stays empty and
    /// the multipath next hops are never computed: only what the Adj-RIBs-Out need is.
    pub fn report_best_changes(&mut self, on: bool) {
        self.report_best = on;
    }

    fn batch(&mut self, n: usize) -> Batch {
        Batch::with_capacity(std::mem::take(&mut self.spare), n, self.report_best)
    }

    fn distinct_batch(&mut self, n: usize) -> Batch {
        Batch::distinct(std::mem::take(&mut self.spare), n, self.report_best)
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

    fn state(&self, slot: u16) -> &PeerState {
        self.peers[usize::from(slot)].as_ref().expect("live slot")
    }

    fn state_mut(&mut self, slot: u16) -> &mut PeerState {
        self.peers[usize::from(slot)].as_mut().expect("live slot")
    }

    /// The session with `id` reached Established with `info`. Returns the initial
    /// advertisement for it (the current Adj-RIB-Out contents, packed, then one End-of-RIB
    /// per negotiated family, RFC 4724 §2) in `to_send`. If the peer comes back from a
    /// graceful restart, its stale routes stay until [`Rib::end_of_rib`] or
    /// [`Rib::stale_timer_expired`] — unless it no longer has the capability, in which case
    /// they go now (RFC 4724 §4.2) and the changes that causes are in the result too.
    ///
    /// # Panics
    ///
    /// With more than 65,535 peers at once.
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
                let s = match self.free_slots.pop() {
                    Some(s) => s,
                    None => {
                        let s = u16::try_from(self.peers.len()).expect("at most 65535 peers");
                        self.peers.push(None);
                        self.tables.facts.push(facts);
                        s
                    }
                };
                self.slots.insert(id, s);
                s
            }
        };
        let drop_stale = match &mut self.peers[usize::from(slot)] {
            Some(st) => {
                // A second peer_up without peer_down: start over towards it.
                st.up = false;
                st.stopped = false;
                st.clear_adj_rib_out(&mut self.tables.attrs);
                st.stale > 0 && info.graceful_restart.is_none()
            }
            None => false,
        };
        let mut changes = if drop_stale {
            self.remove_all(slot, None, true)
        } else {
            RibChanges::default()
        };
        self.tables.facts[usize::from(slot)] = facts;

        let old = self.peers[usize::from(slot)].take();
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
            .map(|k| Prefix::V4(k.prefix()))
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
                out.announce(self.tables.attrs.arc(a), p);
                self.tables.attrs.retain(a);
                st.adj_rib_out.insert(p, a);
            }
        }
        let mut updates = out.into_updates(&st.info.encode_context());
        updates.extend(end_of_rib_updates(&st.info.families));
        self.peers[usize::from(slot)] = Some(st);
        self.tables.attrs.collect();
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
        let Some(st) = self.peers[usize::from(slot)].as_mut() else {
            return RibChanges::default();
        };
        st.up = false;
        st.rejected = FxSet::default();
        st.clear_adj_rib_out(&mut self.tables.attrs);
        let keep = graceful && st.info.graceful_restart.is_some() && !st.stopped;
        let changes = if keep {
            let stale = self.tables.mark_stale(slot);
            self.state_mut(slot).stale = stale;
            RibChanges::default()
        } else {
            self.remove_all(slot, None, false)
        };
        self.tables.attrs.collect();
        self.forget_if_idle(slot);
        changes
    }

    /// The peer sent End-of-RIB for `family` (RFC 4724 §4.2): its stale routes of that
    /// family that it did not re-advertise are withdrawn.
    pub fn end_of_rib(&mut self, id: PeerId, family: AfiSafi) -> RibChanges {
        let Some(&slot) = self.slots.get(&id) else {
            return RibChanges::default();
        };
        if self.peers[usize::from(slot)]
            .as_ref()
            .is_none_or(|st| st.stale == 0)
        {
            return RibChanges::default();
        }
        self.remove_all(slot, Some(family), true)
    }

    /// The peer's restart time (or the caller's stale-path time) ran out: all its stale
    /// routes are withdrawn (RFC 4724 §4.2).
    pub fn stale_timer_expired(&mut self, id: PeerId) -> RibChanges {
        let Some(&slot) = self.slots.get(&id) else {
            return RibChanges::default();
        };
        if self.peers[usize::from(slot)].is_none() {
            return RibChanges::default();
        }
        let changes = self.remove_all(slot, None, true);
        self.forget_if_idle(slot);
        changes
    }

    /// Frees the slot of a peer that is down and has no routes left.
    fn forget_if_idle(&mut self, slot: u16) {
        let idle = self.peers[usize::from(slot)]
            .as_ref()
            .filter(|st| !st.up && st.accepted == 0)
            .map(|st| st.id);
        if let Some(id) = idle {
            self.peers[usize::from(slot)] = None;
            self.slots.remove(&id);
            self.free_slots.push(slot);
        }
    }

    /// Removes the paths of `slot` (only stale ones if `stale_only`) in `family` (or all),
    /// [`SWEEP_CHUNK`] prefixes a batch: the memory it takes beyond the table is the list of
    /// the peer's prefixes (8 octets each for IPv4) and one chunk's batch, not a record of
    /// every prefix's best path at once.
    fn remove_all(&mut self, slot: u16, family: Option<AfiSafi>, stale_only: bool) -> RibChanges {
        let pred = |p: &Path| !stale_only || p.stale;
        let (v4, v6) = self.tables.prefixes_of(slot, family, pred);
        let prefixes = v4
            .into_iter()
            .map(|k| Prefix::V4(k.prefix()))
            .chain(v6.into_iter().map(Prefix::V6));
        let mut changes = RibChanges::default();
        let mut batch = self.distinct_batch(SWEEP_CHUNK);
        let mut removed = 0;
        let mut stale = 0;
        for p in prefixes {
            if let Some(path) = self.tables.remove(p, slot, pred, &mut batch) {
                removed += 1;
                stale += usize::from(path.stale);
                self.tables.attrs.release(path.attrs);
            }
            if batch.touched.len() == SWEEP_CHUNK {
                let full = std::mem::replace(&mut batch, Batch::distinct(Vec::new(), 0, false));
                let ch = self.finish(full);
                changes.merge(ch);
                batch = self.distinct_batch(SWEEP_CHUNK);
            }
        }
        if let Some(st) = self.peers[usize::from(slot)].as_mut() {
            st.accepted -= removed;
            st.stale -= stale;
        }
        let ch = self.finish(batch);
        changes.merge(ch);
        changes
    }

    /// An UPDATE from `id`. Withdrawals and announcements are applied (RFC 7606
    /// treat-as-withdraw included), announcements through the loop checks
    /// ([`reflection::input_loop`]) and the import policy; an End-of-RIB is handed to
    /// [`Rib::end_of_rib`]. O(prefixes in the UPDATE).
    pub fn receive(&mut self, id: PeerId, mut update: Update) -> RibChanges {
        let Some(&slot) = self.slots.get(&id) else {
            return RibChanges::default();
        };
        match &self.peers[usize::from(slot)] {
            Some(st) if st.up && !st.stopped => {}
            _ => return RibChanges::default(),
        }
        if let Some(family) = update.as_end_of_rib() {
            return self.end_of_rib(id, family);
        }
        let mut batch = self.batch(
            update.nlri.len()
                + update.withdrawn.len()
                + update
                    .attributes
                    .mp_reach
                    .as_ref()
                    .map_or(0, |r| r.nlri.len()),
        );
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
            let ebgp = self.tables.facts[usize::from(slot)].ebgp;
            let looped = reflection::input_loop(&attrs, ebgp, &self.speaker()).is_some();
            if !nlri.is_empty() {
                let nh = v4_nh.map(IpAddr::V4);
                let prefixes = nlri.into_iter().map(Prefix::V4);
                self.announce(slot, attrs.clone(), nh, looped, prefixes, &mut batch);
            }
            if let Some(mp) = mp
                && self.state(slot).info.families.contains(&mp.afi_safi)
            {
                let nh = match mp.next_hop {
                    crate::packet::MpNextHop::V4(a) => IpAddr::V4(a),
                    crate::packet::MpNextHop::V6 { global, .. } => IpAddr::V6(global),
                };
                let prefixes = mp.nlri.into_iter();
                self.announce(slot, attrs, Some(nh), looped, prefixes, &mut batch);
            }
            self.check_max_prefix(slot, family, &mut batch);
        }
        let stop = matches!(batch.action, Some(PeerAction::Stop(_)));
        if !stop {
            return self.finish(batch);
        }
        // Max-prefix stop: the peer's routes go. Those this UPDATE touched go in its batch
        // (one change each, from before the UPDATE); the rest in a sweep after it, whose
        // batches must not start before this one ends (attribute ids live for one batch).
        let touched: Vec<Prefix> = batch.touched.iter().map(|t| t.prefix).collect();
        for p in touched {
            self.withdraw_one(slot, p, &mut batch);
        }
        let mut changes = self.finish(batch);
        changes.merge(self.remove_all(slot, None, false));
        changes
    }

    fn withdraw_one(&mut self, slot: u16, p: Prefix, batch: &mut Batch) {
        let st = self.state_mut(slot);
        if !st.rejected.is_empty() && st.rejected.remove(&p) {
            return;
        }
        if let Some(old) = self.tables.remove(p, slot, |_| true, batch) {
            self.tables.attrs.release(old.attrs);
            let st = self.state_mut(slot);
            st.accepted -= 1;
            st.stale -= usize::from(old.stale);
        }
    }

    fn announce(
        &mut self,
        slot: u16,
        attrs: PathAttributes,
        next_hop: Option<IpAddr>,
        looped: bool,
        prefixes: impl Iterator<Item = Prefix>,
        batch: &mut Batch,
    ) {
        let shared = next_hop.map(|nh| {
            self.tables.attrs.intern(RouteAttrs {
                attrs,
                next_hop: nh,
            })
        });
        let import_all = self.state(slot).info.import_all;
        for p in prefixes {
            let accepted = shared.filter(|_| !looped && self.import.accepts(&p, import_all));
            let Some(id) = accepted else {
                self.withdraw_one(slot, p, batch);
                self.state_mut(slot).rejected.insert(p);
                continue;
            };
            let st = self.state_mut(slot);
            if !st.rejected.is_empty() {
                st.rejected.remove(&p);
            }
            let path = Path {
                attrs: id,
                slot,
                stale: false,
            };
            self.tables.attrs.retain(id);
            match self.tables.upsert(p, path, batch) {
                Some(old) => {
                    self.tables.attrs.release(old.attrs);
                    self.state_mut(slot).stale -= usize::from(old.stale);
                }
                None => self.state_mut(slot).accepted += 1,
            }
        }
    }

    /// RFC 4486: max-prefix after an UPDATE from the peer in `slot`.
    fn check_max_prefix(&mut self, slot: u16, family: AfiSafi, batch: &mut Batch) {
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
                let Rib { peers, tables, .. } = self;
                let st = peers[usize::from(slot)].as_mut().expect("live slot");
                tracing::warn!(peer = %st.info.addr, count, limit, "max-prefix exceeded, stopping");
                st.stopped = true;
                st.rejected = FxSet::default();
                st.clear_adj_rib_out(&mut tables.attrs);
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
        let id = self.tables.attrs.intern(RouteAttrs {
            attrs: PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::default()),
                local_pref: Some(100),
                ..Default::default()
            },
            next_hop,
        });
        let mut batch = self.distinct_batch(1);
        let path = Path {
            attrs: id,
            slot: LOCAL,
            stale: false,
        };
        self.tables.attrs.retain(id);
        if let Some(old) = self.tables.upsert(prefix, path, &mut batch) {
            self.tables.attrs.release(old.attrs);
        }
        self.finish(batch)
    }

    /// Stops announcing one of this node's prefixes.
    pub fn withdraw_origin(&mut self, prefix: Prefix) -> RibChanges {
        let mut batch = self.distinct_batch(1);
        if let Some(old) = self.tables.remove(prefix, LOCAL, |_| true, &mut batch) {
            self.tables.attrs.release(old.attrs);
        }
        self.finish(batch)
    }

    /// ROUTE-REFRESH (RFC 2918) from the peer: its whole Adj-RIB-Out for `family` again,
    /// then End-of-RIB (RFC 7313 would bracket it; a plain End-of-RIB is what BIRD accepts
    /// too).
    pub fn route_refresh(&self, id: PeerId, family: AfiSafi) -> Vec<Update> {
        let Some(st) = self.peer(id) else {
            return Vec::new();
        };
        if !st.up || !st.info.families.contains(&family) {
            return Vec::new();
        }
        let mut out = pack::Outgoing::default();
        for (p, a) in &st.adj_rib_out {
            if afi_safi(p) == family {
                out.announce(self.tables.attrs.arc(*a), *p);
            }
        }
        let mut updates = out.into_updates(&st.info.encode_context());
        updates.push(Update::end_of_rib(family));
        updates
    }

    fn peer(&self, id: PeerId) -> Option<&PeerState> {
        self.slots
            .get(&id)
            .and_then(|&s| self.peers[usize::from(s)].as_ref())
    }

    /// Prefix counts of a peer (zero for an unknown one).
    pub fn peer_counts(&self, id: PeerId) -> PeerCounts {
        let Some(st) = self.peer(id) else {
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
        self.tables.attrs.len()
    }

    fn view(&self, p: &Path) -> RouteView<'_> {
        RouteView {
            source: if p.slot == LOCAL {
                RouteSource::Local
            } else {
                RouteSource::Peer(self.state(p.slot).id)
            },
            attrs: self.tables.attrs.get(p.attrs),
            stale: p.stale,
        }
    }

    fn entry(&self, prefix: Prefix, dest: &Dest) -> LocRibEntry<'_> {
        let (best, next_hops) = self.tables.select(dest);
        let paths: Vec<RouteView<'_>> = dest
            .paths(&self.tables.multi)
            .iter()
            .map(|p| self.view(p))
            .collect();
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
            .map(|(k, d)| self.entry(Prefix::V4(k.prefix()), d));
        let v6 = self
            .tables
            .v6
            .iter()
            .map(|(p, d)| self.entry(Prefix::V6(*p), d));
        v4.chain(v6)
    }

    /// What was last advertised to a peer, in no particular order.
    pub fn adj_rib_out(&self, id: PeerId) -> impl Iterator<Item = (Prefix, &RouteAttrs)> + '_ {
        self.peer(id).into_iter().flat_map(|st| {
            st.adj_rib_out
                .iter()
                .map(|(p, a)| (*p, self.tables.attrs.get(*a)))
        })
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
            report_best,
            spare,
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
        let report = *report_best;
        // The peers that may be sent something, found once a batch.
        let targets: Vec<u16> = (0..peers.len())
            .filter(|&i| peers[i].as_ref().is_some_and(|st| st.up && !st.stopped))
            .map(|i| i as u16)
            .collect();
        let multipaths = std::mem::take(&mut batch.multipaths);
        for Touched {
            prefix: p,
            before,
            after,
        } in batch.touched.drain(..)
        {
            if before == after {
                continue;
            }
            if report {
                let next_hops = after.next_hops(&tables.attrs, &multipaths);
                if before.local() != after.local()
                    || before.next_hops(&tables.attrs, &multipaths) != next_hops
                {
                    changes.best_changes.push(BestChange {
                        prefix: p,
                        next_hops,
                        local: after.local(),
                    });
                }
            }
            if before.path() == after.path() {
                continue;
            }
            for &slot in &targets {
                let i = usize::from(slot);
                let (Some(st), out) = (peers[i].as_mut(), &mut outgoing[i]) else {
                    continue;
                };
                match export_for(local, &me, tables, &after, slot, st, &p, &mut memo) {
                    Some(a) => {
                        if st.adj_rib_out.get(&p) == Some(&a) {
                            continue;
                        }
                        out.get_or_insert_with(Default::default)
                            .announce(tables.attrs.arc(a), p);
                        tables.attrs.retain(a);
                        if let Some(old) = st.adj_rib_out.insert(p, a) {
                            tables.attrs.release(old);
                        }
                    }
                    None if st.adj_rib_out.is_empty() => {}
                    None => {
                        if let Some(old) = st.adj_rib_out.remove(&p) {
                            out.get_or_insert_with(Default::default).withdraw(p);
                            tables.attrs.release(old);
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
        tables.attrs.collect();
        if batch.touched.capacity() > spare.capacity() {
            *spare = batch.touched;
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
    to: u16,
    st: &PeerState,
    prefix: &Prefix,
    memo: &mut ExportMemo,
) -> Option<AttrId> {
    let (from, attrs) = best.path()?;
    if from == to || !st.info.families.contains(&afi_safi(prefix)) {
        return None;
    }
    let to_facts = tables.facts[usize::from(to)];
    if to_facts.ebgp
        && let Some(policy) = &local.export
        && !policy.allows(&to_ipnet(prefix), PeerKind::External)
    {
        return None;
    }
    let v6 = matches!(prefix, Prefix::V6(_));
    let key = (attrs, from, to, v6);
    // Neighbouring prefixes mostly share their attributes: try the last answer first.
    if let Some((k, out)) = memo.last
        && k == key
    {
        return out;
    }
    if let Some(out) = memo.map.get(&key) {
        memo.last = Some((key, *out));
        return *out;
    }
    let from_facts = tables.facts[usize::from(from)];
    let learned = if from == LOCAL {
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
            tables.attrs.get(attrs),
            learned,
            from_facts.router_id,
            &target,
            me,
            v6,
        )
        .map(|a| tables.attrs.intern(a))
    } else {
        None
    };
    memo.map.insert(key, out);
    memo.last = Some((key, out));
    out
}

/// Export results within one batch, by (attribute set, from slot, to slot, IPv6 prefix: the
/// next hop rules depend on the family). Attribute ids are stable within a batch
/// ([`AttrTable::collect`] runs at its end).
#[derive(Default)]
struct ExportMemo {
    map: FxMap<ExportKey, Option<AttrId>>,
    last: Option<(ExportKey, Option<AttrId>)>,
}

type ExportKey = (AttrId, u16, u16, bool);
