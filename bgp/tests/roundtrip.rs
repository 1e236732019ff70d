//! proptest: arbitrary messages in the canonical subset encode, then decode to themselves.
//!
//! The canonical subset excludes what decoding normalises or reinterprets: duplicate or
//! RFC 7606-flagged attributes, an UPDATE with NLRI but no mandatory attributes, more than
//! 253 octets of capabilities, and (for 2-octet peers) confederation segments after the
//! first ordinary segment or an AGGREGATOR that makes RFC 6793 §4.2.3 ignore AS4_PATH.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use bgp::packet::*;
use bytes::Bytes;
use common::{ctx2, ctx4, enc};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn afi_safi() -> impl Strategy<Value = AfiSafi> {
    prop_oneof![
        Just(AfiSafi::IPV4_UNICAST),
        Just(AfiSafi::IPV6_UNICAST),
        (any::<u16>(), any::<u8>()).prop_map(|(afi, safi)| AfiSafi { afi, safi }),
    ]
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        afi_safi().prop_map(Capability::Multiprotocol),
        Just(Capability::RouteRefresh),
        Just(Capability::ExtendedMessage),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..4096,
            vec((afi_safi(), any::<bool>()), 0..5)
        )
            .prop_map(|(r, n, t, f)| Capability::GracefulRestart(GracefulRestart {
                restart_state: r,
                notification: n,
                restart_time: t,
                families: f
                    .into_iter()
                    .map(|(afi_safi, forwarding_preserved)| GracefulRestartFamily {
                        afi_safi,
                        forwarding_preserved
                    })
                    .collect(),
            })),
        (1u32..).prop_map(Capability::FourOctetAsn),
        (any::<u8>(), vec(any::<u8>(), 0..10))
            .prop_filter("known code", |(c, _)| ![1, 2, 6, 64, 65].contains(c))
            .prop_map(|(code, v)| Capability::Unknown {
                code,
                value: Bytes::from(v)
            }),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    (
        1u16..,
        prop_oneof![Just(0u16), 3u16..],
        1u32..,
        vec(capability(), 0..8),
    )
        .prop_map(|(my_as, hold_time, id, capabilities)| Open {
            my_as,
            hold_time,
            bgp_identifier: Ipv4Addr::from(id),
            capabilities,
        })
}

fn v4_prefix() -> impl Strategy<Value = Ipv4Prefix> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Ipv4Prefix::new(Ipv4Addr::from(a), l).unwrap())
}

fn v6_prefix() -> impl Strategy<Value = Ipv6Prefix> {
    (any::<u128>(), 0u8..=128).prop_map(|(a, l)| Ipv6Prefix::new(Ipv6Addr::from(a), l).unwrap())
}

fn asn() -> impl Strategy<Value = u32> {
    prop_oneof![1u32..65536, 65536u32..].prop_filter("AS_TRANS", |a| *a != 23456)
}

fn two_octet_asn() -> impl Strategy<Value = u32> {
    (1u32..65536).prop_filter("AS_TRANS", |a| *a != 23456)
}

fn segment(kinds: Vec<SegmentType>, two_octet: bool) -> impl Strategy<Value = AsPathSegment> {
    let asn = if two_octet {
        two_octet_asn().boxed()
    } else {
        asn().boxed()
    };
    (proptest::sample::select(kinds), vec(asn, 1..8))
        .prop_map(|(kind, asns)| AsPathSegment { kind, asns })
}

/// RFC 6793 §4.2.2: AS4_PATH carries no confederation segments, so towards a 2-octet peer
/// confederation member ASes must fit two octets.
fn as_path(four_octet: bool) -> impl Strategy<Value = AsPath> {
    use SegmentType::*;
    (
        vec(segment(vec![ConfedSequence, ConfedSet], !four_octet), 0..2),
        vec(segment(vec![Sequence, Set], false), 0..4),
    )
        .prop_map(|(mut confed, rest)| {
            confed.extend(rest);
            AsPath { segments: confed }
        })
}

fn mp_reach() -> impl Strategy<Value = MpReach> {
    let v6_nh = (any::<u128>(), option::of(any::<u128>())).prop_map(|(g, ll)| MpNextHop::V6 {
        global: Ipv6Addr::from(g),
        link_local: ll.map(Ipv6Addr::from),
    });
    prop_oneof![
        (
            prop_oneof![
                any::<u32>().prop_map(|a| MpNextHop::V4(Ipv4Addr::from(a))),
                v6_nh.clone()
            ],
            vec(v4_prefix().prop_map(Prefix::V4), 0..20)
        )
            .prop_map(|(next_hop, nlri)| MpReach {
                afi_safi: AfiSafi::IPV4_UNICAST,
                next_hop,
                nlri
            }),
        (v6_nh, vec(v6_prefix().prop_map(Prefix::V6), 0..20)).prop_map(|(next_hop, nlri)| {
            MpReach {
                afi_safi: AfiSafi::IPV6_UNICAST,
                next_hop,
                nlri,
            }
        }),
    ]
}

fn mp_unreach() -> impl Strategy<Value = MpUnreach> {
    prop_oneof![
        vec(v4_prefix().prop_map(Prefix::V4), 0..20).prop_map(|withdrawn| MpUnreach {
            afi_safi: AfiSafi::IPV4_UNICAST,
            withdrawn
        }),
        vec(v6_prefix().prop_map(Prefix::V6), 0..20).prop_map(|withdrawn| MpUnreach {
            afi_safi: AfiSafi::IPV6_UNICAST,
            withdrawn
        }),
    ]
}

const KNOWN: [u8; 15] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 17, 18, 32];

fn unknown_attrs() -> impl Strategy<Value = Vec<RawAttribute>> {
    proptest::collection::btree_map(
        any::<u8>().prop_filter("known type", |t| !KNOWN.contains(t)),
        (
            proptest::sample::select(vec![0x80u8, 0xc0, 0xe0, 0xa0]),
            vec(any::<u8>(), 0..300),
        ),
        0..3,
    )
    .prop_map(|m: BTreeMap<u8, (u8, Vec<u8>)>| {
        m.into_iter()
            .map(|(type_code, (flags, v))| RawAttribute {
                flags,
                type_code,
                value: Bytes::from(v),
            })
            .collect()
    })
}

prop_compose! {
    fn attributes(four_octet: bool)(
        origin in option::of(prop_oneof![Just(Origin::Igp), Just(Origin::Egp), Just(Origin::Incomplete)]),
        as_path in option::of(as_path(four_octet)),
        next_hop in option::of(any::<u32>().prop_map(Ipv4Addr::from)),
        med in option::of(any::<u32>()),
        local_pref in option::of(any::<u32>()),
        atomic_aggregate in any::<bool>(),
        aggregator in option::of((asn(), any::<u32>())),
        communities in vec(any::<u32>().prop_map(Community), 0..5),
        large in vec((any::<u32>(), any::<u32>(), any::<u32>()), 0..3),
        originator_id in option::of(any::<u32>().prop_map(Ipv4Addr::from)),
        cluster_list in vec(any::<u32>().prop_map(Ipv4Addr::from), 0..4),
        mp_reach in option::of(mp_reach()),
        mp_unreach in option::of(mp_unreach()),
        unknown in unknown_attrs(),
    ) -> PathAttributes {
        // RFC 6793 §4.2.3 ignores AS4_PATH when AGGREGATOR is a real 2-octet AS: keep 2-octet
        // aggregators out of the 2-octet-peer round trip.
        let aggregator = aggregator
            .filter(|(a, _)| four_octet || *a > 0xffff)
            .map(|(asn, addr)| Aggregator { asn, address: Ipv4Addr::from(addr) });
        PathAttributes {
            origin, as_path, next_hop, med, local_pref, atomic_aggregate, aggregator, communities,
            large_communities: large.into_iter().map(|(g, a, b)| LargeCommunity {
                global_admin: g, local_data_1: a, local_data_2: b,
            }).collect(),
            originator_id, cluster_list, mp_reach, mp_unreach, unknown,
        }
    }
}

fn update(four_octet: bool) -> impl Strategy<Value = Update> {
    (
        vec(v4_prefix(), 0..30),
        attributes(four_octet),
        vec(v4_prefix(), 0..30),
    )
        .prop_map(|(withdrawn, mut attributes, nlri)| {
            // RFC 7606 §3 (d): with NLRI, the mandatory attributes must be there.
            if !nlri.is_empty() || attributes.mp_reach.is_some() {
                attributes.origin.get_or_insert(Origin::Igp);
                attributes.as_path.get_or_insert_with(AsPath::default);
            }
            if !nlri.is_empty() {
                attributes
                    .next_hop
                    .get_or_insert(Ipv4Addr::new(192, 0, 2, 1));
            }
            Update {
                withdrawn,
                attributes,
                nlri,
                attribute_errors: Vec::new(),
            }
        })
}

fn message(four_octet: bool) -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update(four_octet).prop_map(Message::Update),
        (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..40)).prop_map(|(c, s, d)| {
            Message::Notification(Notification {
                error: NotificationError::from_codes(c, s),
                data: Bytes::from(d),
            })
        }),
        Just(Message::Keepalive),
        (afi_safi(), any::<u8>()).prop_map(|(afi_safi, st)| {
            Message::RouteRefresh(RouteRefresh {
                afi_safi,
                subtype: st.into(),
            })
        }),
    ]
}

proptest! {
    #[test]
    fn round_trip_four_octet_session(m in message(true)) {
        let ctx = ctx4();
        let bytes = m.encode(&enc(&ctx));
        prop_assert!(bytes.len() <= MAX_MESSAGE_LEN);
        prop_assert_eq!(frame_len(&bytes, &ctx), Ok(Some(bytes.len())));
        prop_assert_eq!(Message::decode(&bytes, &ctx), Ok(m));
    }

    #[test]
    fn round_trip_two_octet_session(u in update(false)) {
        // IPv4 unicast only on this session, so MP attributes of IPv6 would come back raw.
        let mut ctx = ctx2();
        ctx.families.push(AfiSafi::IPV6_UNICAST);
        let m = Message::Update(u);
        let bytes = m.encode(&enc(&ctx));
        prop_assert_eq!(Message::decode(&bytes, &ctx), Ok(m));
    }

    #[test]
    fn encoding_is_stable(m in message(true)) {
        // decode(encode(m)) re-encodes to the same bytes.
        let ctx = ctx4();
        let bytes = m.encode(&enc(&ctx));
        let again = Message::decode(&bytes, &ctx).unwrap().encode(&enc(&ctx));
        prop_assert_eq!(bytes, again);
    }
}
