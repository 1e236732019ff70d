//! Path attributes (RFC 4271 §4.3, §5) and how a malformed one is handled (RFC 7606).
//!
//! [`PathAttributes`] is what the RIB works with: one typed field per attribute this speaker
//! understands, AS numbers always four octets wide (the RFC 6793 §4.2.3 merge of AS_PATH and
//! AS4_PATH is done while decoding from a 2-octet peer, and undone while encoding for one),
//! and every other attribute kept raw in `unknown`.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes, BytesMut};
use nom::bytes::complete::take;
use nom::number::complete::{be_u8, be_u16};

use super::prefix::{self, Prefix};
use super::{AS_TRANS, AfiSafi, DecodeContext, DecodeError, EncodeContext, NomResult};

/// Attribute Flags bits (RFC 4271 §4.3).
pub mod flags {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// Attribute type codes (IANA "BGP Path Attributes").
pub mod type_code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITY: u8 = 32;
}

use flags::{EXTENDED_LENGTH, OPTIONAL, PARTIAL, TRANSITIVE};
use type_code as tc;

/// ORIGIN (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// AS_PATH segment types (RFC 4271 §4.3; confederation segments RFC 5065 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentType {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

impl SegmentType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Set,
            2 => Self::Sequence,
            3 => Self::ConfedSequence,
            4 => Self::ConfedSet,
            _ => return None,
        })
    }
    /// Confederation segments (RFC 5065 §3).
    pub fn is_confed(self) -> bool {
        matches!(self, Self::ConfedSequence | Self::ConfedSet)
    }
}

/// One AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsPathSegment {
    pub kind: SegmentType,
    pub asns: Vec<u32>,
}

/// AS_PATH with 4-octet AS numbers (RFC 4271 §5.1.2, RFC 6793).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    pub segments: Vec<AsPathSegment>,
}

impl AsPath {
    /// An AS_PATH of one AS_SEQUENCE (empty if `asns` is).
    pub fn from_sequence(asns: Vec<u32>) -> Self {
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![AsPathSegment {
                kind: SegmentType::Sequence,
                asns,
            }],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.asns.is_empty())
    }

    /// Path length for best-path selection, RFC 4271 §9.1.2.2 (a): an AS_SET counts as 1
    /// whatever its size; RFC 5065 §5.3: confederation segments count 0.
    pub fn len_for_decision(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentType::Sequence => s.asns.len(),
                SegmentType::Set => 1,
                SegmentType::ConfedSequence | SegmentType::ConfedSet => 0,
            })
            .sum()
    }

    /// Whether `asn` appears anywhere in the path (RFC 4271 §9.1.2: loop detection).
    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// The neighbouring AS: the first AS of a leading AS_SEQUENCE (RFC 4271 §9.1.2.2 (c)
    /// compares MED only between routes from the same neighbouring AS).
    pub fn neighbor_as(&self) -> Option<u32> {
        self.segments
            .iter()
            .find(|s| !s.kind.is_confed())
            .filter(|s| s.kind == SegmentType::Sequence)
            .and_then(|s| s.asns.first().copied())
    }

    /// The AS that originated the route: the last AS of a trailing AS_SEQUENCE.
    pub fn origin_as(&self) -> Option<u32> {
        self.segments
            .last()
            .filter(|s| s.kind == SegmentType::Sequence)
            .and_then(|s| s.asns.last().copied())
    }

    /// Prepends `asn` `times` times, as a speaker does when advertising to an external peer
    /// (RFC 4271 §5.1.2 (b)): into the leading AS_SEQUENCE if there is one with room, else as
    /// a new AS_SEQUENCE.
    pub fn prepend(&mut self, asn: u32, times: usize) {
        self.prepend_kind(SegmentType::Sequence, asn, times);
    }

    /// Prepends `asn` in an AS_CONFED_SEQUENCE, for a peer in another member AS of our
    /// confederation (RFC 5065 §4.1).
    pub fn prepend_confed(&mut self, asn: u32) {
        self.prepend_kind(SegmentType::ConfedSequence, asn, 1);
    }

    /// Removes leading confederation segments, before advertising outside the confederation
    /// (RFC 5065 §4.1 (c)).
    pub fn strip_confed(&mut self) {
        while self.segments.first().is_some_and(|s| s.kind.is_confed()) {
            self.segments.remove(0);
        }
    }

    fn prepend_kind(&mut self, kind: SegmentType, asn: u32, times: usize) {
        for _ in 0..times {
            match self.segments.first_mut() {
                Some(s) if s.kind == kind && s.asns.len() < 255 => s.asns.insert(0, asn),
                _ => self.segments.insert(
                    0,
                    AsPathSegment {
                        kind,
                        asns: vec![asn],
                    },
                ),
            }
        }
    }

    /// Decodes AS_PATH / AS4_PATH with 2- or 4-octet AS numbers. RFC 7606 §7.2: an unknown
    /// segment type, a zero segment length, or a segment overrunning the attribute make the
    /// whole AS_PATH malformed.
    fn decode(mut v: &[u8], four_octet: bool) -> Option<AsPath> {
        let mut segments = Vec::new();
        while !v.is_empty() {
            let (rest, seg) = parse_segment(v, four_octet).ok()?;
            segments.push(seg);
            v = rest;
        }
        Some(AsPath { segments })
    }

    /// Encodes with 2- or 4-octet AS numbers; AS numbers that do not fit two octets become
    /// AS_TRANS (RFC 6793 §4.2.2). Segments longer than 255 are split.
    fn encode(&self, four_octet: bool, out: &mut BytesMut) {
        for s in &self.segments {
            for chunk in s.asns.chunks(255) {
                out.put_u8(s.kind as u8);
                out.put_u8(chunk.len() as u8);
                for &asn in chunk {
                    if four_octet {
                        out.put_u32(asn);
                    } else {
                        out.put_u16(u16::try_from(asn).unwrap_or(AS_TRANS));
                    }
                }
            }
        }
    }

    fn needs_four_octets(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.asns.iter().any(|&a| a > 0xffff))
    }

    /// RFC 6793 §4.2.3: rebuild the real path from AS_PATH (with AS_TRANS) and AS4_PATH.
    fn merge_as4(self, as4: AsPath) -> AsPath {
        let n_as = self.len_for_decision();
        let n_as4 = as4.len_for_decision();
        if n_as < n_as4 {
            // "the AS4_PATH attribute ... MUST be ignored".
            return self;
        }
        let mut need = n_as - n_as4;
        let mut lead = Vec::new();
        for seg in self.segments {
            if seg.kind.is_confed() {
                // A confed segment is taken when leading or adjacent to a taken segment.
                lead.push(seg);
                continue;
            }
            if need == 0 {
                break;
            }
            match seg.kind {
                SegmentType::Set => {
                    need -= 1;
                    lead.push(seg);
                }
                _ => {
                    let take = need.min(seg.asns.len());
                    need -= take;
                    lead.push(AsPathSegment {
                        kind: seg.kind,
                        asns: seg.asns[..take].to_vec(),
                    });
                }
            }
        }
        let mut segments = lead;
        let mut tail = as4.segments.into_iter();
        // Join a partial leading AS_SEQUENCE with AS4_PATH's first AS_SEQUENCE.
        if let (Some(last), Some(first)) = (segments.last_mut(), tail.as_slice().first())
            && last.kind == SegmentType::Sequence
            && first.kind == SegmentType::Sequence
            && last.asns.len() + first.asns.len() <= 255
        {
            last.asns.extend_from_slice(&first.asns);
            tail.next();
        }
        segments.extend(tail);
        AsPath { segments }
    }
}

fn parse_segment(i: &[u8], four_octet: bool) -> NomResult<'_, AsPathSegment> {
    let (i, kind) = be_u8(i)?;
    let (i, count) = be_u8(i)?;
    let kind = SegmentType::from_u8(kind).ok_or(nom::Err::Error(()))?;
    if count == 0 {
        return Err(nom::Err::Error(()));
    }
    let width = if four_octet { 4 } else { 2 };
    let (i, raw) = take(usize::from(count) * width)(i)?;
    let asns = raw
        .chunks_exact(width)
        .map(|c| {
            if four_octet {
                u32::from_be_bytes([c[0], c[1], c[2], c[3]])
            } else {
                u32::from(u16::from_be_bytes([c[0], c[1]]))
            }
        })
        .collect();
    Ok((i, AsPathSegment { kind, asns }))
}

/// AGGREGATOR (RFC 4271 §5.1.7), AS always four octets wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aggregator {
    pub asn: u32,
    pub address: Ipv4Addr,
}

/// A COMMUNITIES value (RFC 1997): high 16 bits an AS, low 16 bits local.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// RFC 1997: do not advertise outside the AS (or confederation).
    pub const NO_EXPORT: Community = Community(0xffff_ff01);
    /// RFC 1997: do not advertise to any peer.
    pub const NO_ADVERTISE: Community = Community(0xffff_ff02);
    /// RFC 1997: do not advertise to external peers, even within a confederation.
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xffff_ff03);
    /// RFC 8326: lower preference, for graceful shutdown.
    pub const GRACEFUL_SHUTDOWN: Community = Community(0xffff_0000);

    pub fn new(asn: u16, value: u16) -> Self {
        Community((u32::from(asn) << 16) | u32::from(value))
    }
    pub fn asn(self) -> u16 {
        (self.0 >> 16) as u16
    }
    pub fn value(self) -> u16 {
        self.0 as u16
    }
}

/// A LARGE_COMMUNITY value (RFC 8092 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global_admin: u32,
    pub local_data_1: u32,
    pub local_data_2: u32,
}

/// The next hop of MP_REACH_NLRI (RFC 4760 §3; IPv6: RFC 2545 §3, global address and an
/// optional link-local one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MpNextHop {
    V4(Ipv4Addr),
    V6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
}

/// MP_REACH_NLRI (RFC 4760 §3) for IPv4 or IPv6 unicast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    pub afi_safi: AfiSafi,
    pub next_hop: MpNextHop,
    pub nlri: Vec<Prefix>,
}

/// MP_UNREACH_NLRI (RFC 4760 §4) for IPv4 or IPv6 unicast. Empty `withdrawn` and no other
/// attribute in the UPDATE is that family's End-of-RIB (RFC 4724 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    pub afi_safi: AfiSafi,
    pub withdrawn: Vec<Prefix>,
}

/// An attribute this codec does not interpret, kept as received (flags without the Extended
/// Length bit, which the encoder sets from the value's size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAttribute {
    pub flags: u8,
    pub type_code: u8,
    pub value: Bytes,
}

impl RawAttribute {
    /// What to send on when passing the route to another peer (RFC 4271 §5): an optional
    /// transitive attribute we do not recognise is passed on with the Partial bit set; an
    /// optional non-transitive one is dropped.
    pub fn pass_on(&self) -> Option<RawAttribute> {
        if self.flags & OPTIONAL != 0 && self.flags & TRANSITIVE != 0 {
            Some(RawAttribute {
                flags: self.flags | PARTIAL,
                ..self.clone()
            })
        } else {
            None
        }
    }
}

/// The path attributes of an UPDATE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathAttributes {
    pub origin: Option<Origin>,
    pub as_path: Option<AsPath>,
    /// NEXT_HOP (RFC 4271 §5.1.3), for the IPv4 NLRI of the UPDATE's NLRI field.
    pub next_hop: Option<Ipv4Addr>,
    /// MULTI_EXIT_DISC (RFC 4271 §5.1.4).
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<Aggregator>,
    /// COMMUNITIES (RFC 1997), in received order; empty means absent.
    pub communities: Vec<Community>,
    /// LARGE_COMMUNITY (RFC 8092); empty means absent.
    pub large_communities: Vec<LargeCommunity>,
    /// ORIGINATOR_ID (RFC 4456 §8).
    pub originator_id: Option<Ipv4Addr>,
    /// CLUSTER_LIST (RFC 4456 §8); empty means absent.
    pub cluster_list: Vec<Ipv4Addr>,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    /// Everything else, including MP_REACH/UNREACH of families not negotiated.
    pub unknown: Vec<RawAttribute>,
}

impl PathAttributes {
    /// True when no attribute is present.
    pub fn is_empty(&self) -> bool {
        *self == PathAttributes::default()
    }

    /// The unknown attributes to send on with a route learned here (RFC 4271 §5; see
    /// [`RawAttribute::pass_on`]).
    pub fn unknown_to_pass_on(&self) -> Vec<RawAttribute> {
        self.unknown
            .iter()
            .filter_map(RawAttribute::pass_on)
            .collect()
    }
}

/// What RFC 7606 says to do about a malformed attribute that does not reset the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rfc7606Action {
    /// RFC 7606 §2: every NLRI in the UPDATE (NLRI field and MP_REACH_NLRI) is withdrawn.
    TreatAsWithdraw,
    /// RFC 7606 §2: the attribute is dropped and the UPDATE otherwise used as is.
    AttributeDiscard,
}

/// A malformed attribute handled as RFC 7606 says, for logging and for the session to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeError {
    pub type_code: u8,
    pub action: Rfc7606Action,
    /// Which rule applied, with its section.
    pub reason: &'static str,
}

/// (Optional, Transitive) bits each known attribute must have (RFC 4271 §5, RFC 4760,
/// RFC 6793, RFC 8092, RFC 4456, RFC 1997).
fn expected_flags(t: u8) -> Option<u8> {
    Some(match t {
        tc::ORIGIN | tc::AS_PATH | tc::NEXT_HOP | tc::LOCAL_PREF | tc::ATOMIC_AGGREGATE => {
            TRANSITIVE
        }
        tc::MULTI_EXIT_DISC
        | tc::ORIGINATOR_ID
        | tc::CLUSTER_LIST
        | tc::MP_REACH_NLRI
        | tc::MP_UNREACH_NLRI => OPTIONAL,
        tc::AGGREGATOR
        | tc::COMMUNITIES
        | tc::AS4_PATH
        | tc::AS4_AGGREGATOR
        | tc::LARGE_COMMUNITY => OPTIONAL | TRANSITIVE,
        _ => return None,
    })
}

/// The result of decoding the path attributes field.
pub(crate) struct DecodedAttributes {
    pub attrs: PathAttributes,
    pub errors: Vec<AttributeError>,
    /// Which type codes were present (well-formed or not), for the missing-attribute check.
    pub seen: [bool; 256],
}

/// Decodes the Path Attributes field of an UPDATE. Session-resetting errors (RFC 7606 §3 g,
/// §5.3, §7.11, and RFC 4271 §6.3 for unrecognized well-known attributes) are returned as
/// `Err`; everything else is recorded in `errors`.
pub(crate) fn decode_attributes(
    buf: &[u8],
    ctx: &DecodeContext,
) -> Result<DecodedAttributes, DecodeError> {
    let mut a = PathAttributes::default();
    let mut errors = Vec::new();
    let mut seen = [false; 256];
    let mut as4_path = None;
    let mut as4_aggregator = None;
    let mut i = buf;
    let taw = |t, reason| AttributeError {
        type_code: t,
        action: Rfc7606Action::TreatAsWithdraw,
        reason,
    };
    let discard = |t, reason| AttributeError {
        type_code: t,
        action: Rfc7606Action::AttributeDiscard,
        reason,
    };

    while !i.is_empty() {
        let Ok((rest, (fl, t, hdr_len, value))) = parse_attribute(i) else {
            // RFC 7606 §4: an attribute overrunning the Total Path Attribute Length, or too
            // few octets left for an attribute header: treat-as-withdraw, and the Total Path
            // Attribute Length is taken as correct for locating the NLRI.
            let t = i.get(1).copied().unwrap_or(0);
            errors.push(taw(
                t,
                "RFC 7606 §4: attribute overruns the path attributes field",
            ));
            break;
        };
        let whole = Bytes::copy_from_slice(&i[..hdr_len + value.len()]);
        i = rest;

        if seen[usize::from(t)] {
            // RFC 7606 §3 (g): MP_REACH/MP_UNREACH twice resets the session; any other
            // repeated attribute is discarded, keeping the first.
            if t == tc::MP_REACH_NLRI || t == tc::MP_UNREACH_NLRI {
                return Err(DecodeError::MalformedAttributeList {
                    detail: "MP_REACH_NLRI or MP_UNREACH_NLRI appears more than once",
                });
            }
            errors.push(discard(t, "RFC 7606 §3 (g): repeated attribute"));
            continue;
        }
        seen[usize::from(t)] = true;

        let Some(expected) = expected_flags(t) else {
            if fl & OPTIONAL == 0 {
                return Err(DecodeError::UnrecognizedWellKnownAttribute {
                    type_code: t,
                    attribute: whole,
                });
            }
            a.unknown.push(RawAttribute {
                flags: fl & (OPTIONAL | TRANSITIVE | PARTIAL),
                type_code: t,
                value: Bytes::copy_from_slice(value),
            });
            continue;
        };
        if fl & (OPTIONAL | TRANSITIVE) != expected {
            match t {
                // RFC 7606 §7.11: the NLRI cannot be trusted; session reset.
                tc::MP_REACH_NLRI | tc::MP_UNREACH_NLRI => {
                    return Err(DecodeError::AttributeFlagsError {
                        type_code: t,
                        attribute: whole,
                    });
                }
                // RFC 7606 §3 (c) defers to the attribute's own rule where it has one: these
                // are "attribute discard" (RFC 7606 §7.6, §7.7; RFC 6793 §6).
                tc::ATOMIC_AGGREGATE | tc::AGGREGATOR | tc::AS4_PATH | tc::AS4_AGGREGATOR => {
                    errors.push(discard(
                        t,
                        "RFC 7606 §3 (c): Optional/Transitive flags conflict on an attribute-discard attribute",
                    ));
                }
                _ => errors.push(taw(
                    t,
                    "RFC 7606 §3 (c): Optional/Transitive flags conflict",
                )),
            }
            continue;
        }

        let v = value;
        match t {
            tc::ORIGIN => match v {
                [0] => a.origin = Some(Origin::Igp),
                [1] => a.origin = Some(Origin::Egp),
                [2] => a.origin = Some(Origin::Incomplete),
                _ => errors.push(taw(
                    t,
                    "RFC 7606 §7.1: ORIGIN length not 1 or undefined value",
                )),
            },
            tc::AS_PATH => match AsPath::decode(v, ctx.four_octet_asn) {
                Some(p) => a.as_path = Some(p),
                None => errors.push(taw(t, "RFC 7606 §7.2: malformed AS_PATH")),
            },
            tc::NEXT_HOP => match <[u8; 4]>::try_from(v) {
                Ok(o) => a.next_hop = Some(Ipv4Addr::from(o)),
                Err(_) => errors.push(taw(t, "RFC 7606 §7.3: NEXT_HOP length not 4")),
            },
            tc::MULTI_EXIT_DISC => match <[u8; 4]>::try_from(v) {
                Ok(o) => a.med = Some(u32::from_be_bytes(o)),
                Err(_) => errors.push(taw(t, "RFC 7606 §7.4: MULTI_EXIT_DISC length not 4")),
            },
            tc::LOCAL_PREF => match <[u8; 4]>::try_from(v) {
                Ok(o) => a.local_pref = Some(u32::from_be_bytes(o)),
                Err(_) => errors.push(taw(t, "RFC 7606 §7.5: LOCAL_PREF length not 4")),
            },
            tc::ATOMIC_AGGREGATE => {
                if v.is_empty() {
                    a.atomic_aggregate = true;
                } else {
                    errors.push(discard(t, "RFC 7606 §7.6: ATOMIC_AGGREGATE length not 0"));
                }
            }
            tc::AGGREGATOR => match decode_aggregator(v, ctx.four_octet_asn) {
                Some(agg) => a.aggregator = Some(agg),
                None => errors.push(discard(t, "RFC 7606 §7.7: AGGREGATOR length not 6 or 8")),
            },
            tc::COMMUNITIES => {
                if v.is_empty() || !v.len().is_multiple_of(4) {
                    errors.push(taw(
                        t,
                        "RFC 7606 §7.8: COMMUNITIES length not a non-zero multiple of 4",
                    ));
                } else {
                    a.communities = v
                        .chunks_exact(4)
                        .map(|c| Community(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                        .collect();
                }
            }
            tc::ORIGINATOR_ID => match <[u8; 4]>::try_from(v) {
                Ok(o) => a.originator_id = Some(Ipv4Addr::from(o)),
                Err(_) => errors.push(taw(t, "RFC 7606 §7.9: ORIGINATOR_ID length not 4")),
            },
            tc::CLUSTER_LIST => {
                if v.is_empty() || !v.len().is_multiple_of(4) {
                    errors.push(taw(
                        t,
                        "RFC 7606 §7.10: CLUSTER_LIST length not a non-zero multiple of 4",
                    ));
                } else {
                    a.cluster_list = v
                        .chunks_exact(4)
                        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                        .collect();
                }
            }
            tc::LARGE_COMMUNITY => {
                if v.is_empty() || !v.len().is_multiple_of(12) {
                    errors.push(taw(
                        t,
                        "RFC 8092 §6: LARGE_COMMUNITY length not a non-zero multiple of 12",
                    ));
                } else {
                    a.large_communities = v
                        .chunks_exact(12)
                        .map(|c| LargeCommunity {
                            global_admin: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                            local_data_1: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                            local_data_2: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                        })
                        .collect();
                }
            }
            tc::MP_REACH_NLRI => match decode_mp_reach(v, ctx) {
                Ok(Some(r)) => a.mp_reach = Some(r),
                // RFC 4760 §7: a family we did not negotiate is ignored (kept raw).
                Ok(None) => a.unknown.push(RawAttribute {
                    flags: OPTIONAL,
                    type_code: t,
                    value: Bytes::copy_from_slice(v),
                }),
                Err(detail) => {
                    return Err(DecodeError::OptionalAttributeError {
                        type_code: t,
                        attribute: whole,
                        detail,
                    });
                }
            },
            tc::MP_UNREACH_NLRI => match decode_mp_unreach(v, ctx) {
                Ok(Some(r)) => a.mp_unreach = Some(r),
                Ok(None) => a.unknown.push(RawAttribute {
                    flags: OPTIONAL,
                    type_code: t,
                    value: Bytes::copy_from_slice(v),
                }),
                Err(detail) => {
                    return Err(DecodeError::OptionalAttributeError {
                        type_code: t,
                        attribute: whole,
                        detail,
                    });
                }
            },
            // RFC 6793 §4.1: AS4_PATH/AS4_AGGREGATOR between two NEW speakers are ignored.
            tc::AS4_PATH if ctx.four_octet_asn => {}
            tc::AS4_AGGREGATOR if ctx.four_octet_asn => {}
            tc::AS4_PATH => {
                let p = AsPath::decode(v, true);
                match p {
                    Some(p) if !p.segments.iter().any(|s| s.kind.is_confed()) => as4_path = Some(p),
                    _ => errors.push(discard(t, "RFC 6793 §6: malformed AS4_PATH")),
                }
            }
            tc::AS4_AGGREGATOR => match decode_aggregator(v, true) {
                Some(agg) => as4_aggregator = Some(agg),
                None => errors.push(discard(t, "RFC 6793 §6: AS4_AGGREGATOR length not 8")),
            },
            _ => unreachable!("expected_flags covers exactly the decoded types"),
        }
    }

    // RFC 6793 §4.2.3: reconstruct the 4-octet path from a 2-octet peer.
    if !ctx.four_octet_asn {
        let agg_is_trans = a.aggregator.is_none_or(|g| g.asn == u32::from(AS_TRANS));
        if agg_is_trans {
            if let (Some(_), Some(agg4)) = (a.aggregator, as4_aggregator) {
                a.aggregator = Some(agg4);
            }
            if let Some(p4) = as4_path
                && let Some(p) = a.as_path.take()
            {
                a.as_path = Some(p.merge_as4(p4));
            }
        }
    }
    Ok(DecodedAttributes {
        attrs: a,
        errors,
        seen,
    })
}

/// One attribute: (flags, type, header length, value).
fn parse_attribute(i: &[u8]) -> NomResult<'_, (u8, u8, usize, &[u8])> {
    let (i, fl) = be_u8(i)?;
    let (i, t) = be_u8(i)?;
    let (i, len, hdr) = if fl & EXTENDED_LENGTH != 0 {
        let (i, l) = be_u16(i)?;
        (i, usize::from(l), 4)
    } else {
        let (i, l) = be_u8(i)?;
        (i, usize::from(l), 3)
    };
    let (i, v) = take(len)(i)?;
    Ok((i, (fl, t, hdr, v)))
}

fn decode_aggregator(v: &[u8], four_octet: bool) -> Option<Aggregator> {
    match (four_octet, v) {
        (true, [a, b, c, d, x @ ..]) if x.len() == 4 => Some(Aggregator {
            asn: u32::from_be_bytes([*a, *b, *c, *d]),
            address: Ipv4Addr::new(x[0], x[1], x[2], x[3]),
        }),
        (false, [a, b, x @ ..]) if x.len() == 4 => Some(Aggregator {
            asn: u32::from(u16::from_be_bytes([*a, *b])),
            address: Ipv4Addr::new(x[0], x[1], x[2], x[3]),
        }),
        _ => None,
    }
}

fn parse_afi_safi(i: &[u8]) -> NomResult<'_, AfiSafi> {
    let (i, afi) = be_u16(i)?;
    let (i, safi) = be_u8(i)?;
    Ok((i, AfiSafi { afi, safi }))
}

fn decode_nlri(afi_safi: AfiSafi, v: &[u8]) -> Result<Vec<Prefix>, &'static str> {
    if afi_safi == AfiSafi::IPV4_UNICAST {
        prefix::decode_ipv4_prefixes(v)
            .map(|p| p.into_iter().map(Prefix::V4).collect())
            .map_err(|_| "RFC 7606 §5.3: IPv4 prefixes do not parse")
    } else {
        prefix::decode_ipv6_prefixes(v)
            .map(|p| p.into_iter().map(Prefix::V6).collect())
            .map_err(|_| "RFC 7606 §5.3: IPv6 prefixes do not parse")
    }
}

fn supported(f: AfiSafi, ctx: &DecodeContext) -> bool {
    (f == AfiSafi::IPV4_UNICAST || f == AfiSafi::IPV6_UNICAST) && ctx.families.contains(&f)
}

/// MP_REACH_NLRI (RFC 4760 §3). `Ok(None)`: a family not negotiated. `Err`: RFC 7606 §7.11,
/// the next hop length is inconsistent or the NLRI do not parse → session reset.
fn decode_mp_reach(v: &[u8], ctx: &DecodeContext) -> Result<Option<MpReach>, &'static str> {
    let (rest, afi_safi) =
        parse_afi_safi(v).map_err(|_| "MP_REACH_NLRI shorter than its header")?;
    if !supported(afi_safi, ctx) {
        return Ok(None);
    }
    let parsed: NomResult<'_, (&[u8], u8)> = (|| {
        let (i, nh_len) = be_u8(rest)?;
        let (i, nh) = take(nh_len)(i)?;
        let (i, reserved) = be_u8(i)?;
        Ok((i, (nh, reserved)))
    })();
    let (nlri, (nh, _reserved)) =
        parsed.map_err(|_| "MP_REACH_NLRI next hop overruns the attribute")?;
    let next_hop = match (afi_safi == AfiSafi::IPV4_UNICAST, nh.len()) {
        (true, 4) => MpNextHop::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])),
        // RFC 2545 §3 (and RFC 8950 §3 for IPv4 NLRI): 16 or 32 octets.
        (_, 16) => MpNextHop::V6 {
            global: v6(&nh[..16]),
            link_local: None,
        },
        (_, 32) => MpNextHop::V6 {
            global: v6(&nh[..16]),
            link_local: Some(v6(&nh[16..])),
        },
        _ => return Err("RFC 7606 §7.11: MP_REACH_NLRI next hop length inconsistent with the AFI"),
    };
    Ok(Some(MpReach {
        afi_safi,
        next_hop,
        nlri: decode_nlri(afi_safi, nlri)?,
    }))
}

fn v6(o: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(o);
    Ipv6Addr::from(a)
}

/// MP_UNREACH_NLRI (RFC 4760 §4).
fn decode_mp_unreach(v: &[u8], ctx: &DecodeContext) -> Result<Option<MpUnreach>, &'static str> {
    let (rest, afi_safi) =
        parse_afi_safi(v).map_err(|_| "MP_UNREACH_NLRI shorter than its header")?;
    if !supported(afi_safi, ctx) {
        return Ok(None);
    }
    Ok(Some(MpUnreach {
        afi_safi,
        withdrawn: decode_nlri(afi_safi, rest)?,
    }))
}

/// Encodes the path attributes in ascending type code order with the Extended Length bit
/// only where the value needs it, as GoBGP does; for a 2-octet peer
/// (`ctx.four_octet_asn == false`) AS_PATH and AGGREGATOR carry AS_TRANS and AS4_PATH /
/// AS4_AGGREGATOR carry the real numbers (RFC 6793 §4.2.2).
pub(crate) fn encode_attributes(a: &PathAttributes, ctx: &EncodeContext, out: &mut BytesMut) {
    let mut list: Vec<(u8, u8, BytesMut)> = Vec::new();
    let mut push = |t: u8, fl: u8, f: &dyn Fn(&mut BytesMut)| {
        let mut v = BytesMut::new();
        f(&mut v);
        list.push((t, fl, v));
    };
    if let Some(o) = a.origin {
        push(tc::ORIGIN, TRANSITIVE, &|v| v.put_u8(o as u8));
    }
    if let Some(p) = &a.as_path {
        push(tc::AS_PATH, TRANSITIVE, &|v| {
            p.encode(ctx.four_octet_asn, v)
        });
        // RFC 6793 §4.2.2: AS4_PATH only when needed, and without confederation segments.
        let as4 = AsPath {
            segments: p
                .segments
                .iter()
                .filter(|s| !s.kind.is_confed())
                .cloned()
                .collect(),
        };
        if !ctx.four_octet_asn && as4.needs_four_octets() {
            push(tc::AS4_PATH, OPTIONAL | TRANSITIVE, &|v| {
                as4.encode(true, v)
            });
        }
    }
    if let Some(nh) = a.next_hop {
        push(tc::NEXT_HOP, TRANSITIVE, &|v| v.put_slice(&nh.octets()));
    }
    if let Some(m) = a.med {
        push(tc::MULTI_EXIT_DISC, OPTIONAL, &|v| v.put_u32(m));
    }
    if let Some(lp) = a.local_pref {
        push(tc::LOCAL_PREF, TRANSITIVE, &|v| v.put_u32(lp));
    }
    if a.atomic_aggregate {
        push(tc::ATOMIC_AGGREGATE, TRANSITIVE, &|_| {});
    }
    if let Some(agg) = a.aggregator {
        push(tc::AGGREGATOR, OPTIONAL | TRANSITIVE, &|v| {
            if ctx.four_octet_asn {
                v.put_u32(agg.asn);
            } else {
                v.put_u16(u16::try_from(agg.asn).unwrap_or(AS_TRANS));
            }
            v.put_slice(&agg.address.octets());
        });
        if !ctx.four_octet_asn && agg.asn > 0xffff {
            push(tc::AS4_AGGREGATOR, OPTIONAL | TRANSITIVE, &|v| {
                v.put_u32(agg.asn);
                v.put_slice(&agg.address.octets());
            });
        }
    }
    if !a.communities.is_empty() {
        push(tc::COMMUNITIES, OPTIONAL | TRANSITIVE, &|v| {
            a.communities.iter().for_each(|c| v.put_u32(c.0))
        });
    }
    if let Some(id) = a.originator_id {
        push(tc::ORIGINATOR_ID, OPTIONAL, &|v| v.put_slice(&id.octets()));
    }
    if !a.cluster_list.is_empty() {
        push(tc::CLUSTER_LIST, OPTIONAL, &|v| {
            a.cluster_list.iter().for_each(|c| v.put_slice(&c.octets()))
        });
    }
    if let Some(r) = &a.mp_reach {
        push(tc::MP_REACH_NLRI, OPTIONAL, &|v| {
            v.put_u16(r.afi_safi.afi);
            v.put_u8(r.afi_safi.safi);
            match r.next_hop {
                MpNextHop::V4(a) => {
                    v.put_u8(4);
                    v.put_slice(&a.octets());
                }
                MpNextHop::V6 { global, link_local } => {
                    v.put_u8(if link_local.is_some() { 32 } else { 16 });
                    v.put_slice(&global.octets());
                    if let Some(ll) = link_local {
                        v.put_slice(&ll.octets());
                    }
                }
            }
            v.put_u8(0);
            r.nlri.iter().for_each(|p| prefix::encode_prefix(p, v));
        });
    }
    if let Some(u) = &a.mp_unreach {
        push(tc::MP_UNREACH_NLRI, OPTIONAL, &|v| {
            v.put_u16(u.afi_safi.afi);
            v.put_u8(u.afi_safi.safi);
            u.withdrawn.iter().for_each(|p| prefix::encode_prefix(p, v));
        });
    }
    if !a.large_communities.is_empty() {
        push(tc::LARGE_COMMUNITY, OPTIONAL | TRANSITIVE, &|v| {
            for c in &a.large_communities {
                v.put_u32(c.global_admin);
                v.put_u32(c.local_data_1);
                v.put_u32(c.local_data_2);
            }
        });
    }
    for u in &a.unknown {
        push(
            u.type_code,
            u.flags & (OPTIONAL | TRANSITIVE | PARTIAL),
            &|v| v.put_slice(&u.value),
        );
    }
    list.sort_by_key(|(t, _, _)| *t);
    for (t, fl, v) in list {
        if v.len() > 255 {
            out.put_u8(fl | EXTENDED_LENGTH);
            out.put_u8(t);
            out.put_u16(v.len().min(0xffff) as u16);
        } else {
            out.put_u8(fl);
            out.put_u8(t);
            out.put_u8(v.len() as u8);
        }
        out.put_slice(&v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(a: &[u32]) -> AsPathSegment {
        AsPathSegment {
            kind: SegmentType::Sequence,
            asns: a.to_vec(),
        }
    }

    #[test]
    fn len_for_decision_counts_sets_once_and_confed_not_at_all() {
        let p = AsPath {
            segments: vec![
                AsPathSegment {
                    kind: SegmentType::ConfedSequence,
                    asns: vec![65010, 65011],
                },
                seq(&[65001, 65002]),
                AsPathSegment {
                    kind: SegmentType::Set,
                    asns: vec![1, 2, 3],
                },
            ],
        };
        assert_eq!(p.len_for_decision(), 3);
        assert!(p.contains(65011) && p.contains(2) && !p.contains(4));
        assert_eq!(p.neighbor_as(), Some(65001));
        assert_eq!(p.origin_as(), None);
    }

    #[test]
    fn prepend_extends_leading_sequence() {
        let mut p = AsPath::from_sequence(vec![65002]);
        p.prepend(65001, 2);
        assert_eq!(p, AsPath::from_sequence(vec![65001, 65001, 65002]));
        let mut q = AsPath {
            segments: vec![AsPathSegment {
                kind: SegmentType::Set,
                asns: vec![7],
            }],
        };
        q.prepend(65001, 1);
        assert_eq!(q.segments[0], seq(&[65001]));
        q.prepend_confed(65100);
        assert_eq!(q.segments[0].kind, SegmentType::ConfedSequence);
        q.strip_confed();
        assert_eq!(q.len_for_decision(), 2);
    }

    #[test]
    fn as4_merge_rfc6793() {
        // AS_PATH from a 2-octet peer: 65001 65100 AS_TRANS; AS4_PATH: 65100 4200000005.
        let old = AsPath::from_sequence(vec![65001, 65100, 23456]);
        let as4 = AsPath::from_sequence(vec![65100, 4_200_000_005]);
        assert_eq!(
            old.merge_as4(as4),
            AsPath::from_sequence(vec![65001, 65100, 4_200_000_005])
        );
        // AS4_PATH longer than AS_PATH is ignored.
        let old = AsPath::from_sequence(vec![23456]);
        let as4 = AsPath::from_sequence(vec![1, 4_200_000_005]);
        assert_eq!(old.clone().merge_as4(as4), old);
    }

    #[test]
    fn pass_on_sets_partial_only_for_optional_transitive() {
        let t = RawAttribute {
            flags: OPTIONAL | TRANSITIVE,
            type_code: 99,
            value: Bytes::new(),
        };
        assert_eq!(t.pass_on().unwrap().flags, OPTIONAL | TRANSITIVE | PARTIAL);
        let nt = RawAttribute {
            flags: OPTIONAL,
            type_code: 99,
            value: Bytes::new(),
        };
        assert!(nt.pass_on().is_none());
    }
}
