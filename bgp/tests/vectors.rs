//! `(bytes, struct)` vectors captured from BIRD 2.0.12 and GoBGP 3.10.0 talking to each other.
//!
//! How they were captured (the configs and script are beside this file in `capture/`):
//!
//! ```text
//! apt-get install bird2 gobgpd tcpdump          # Debian 12: BIRD 2.0.12, GoBGP 3.10.0
//! cd bgp/tests/capture && ./run.sh              # see run.sh: it runs, in order,
//!   tcpdump -i lo -s 0 -U -w bgp.pcap 'tcp port 1790 or tcp port 1791'
//!   gobgpd -f gobgpd.toml --api-hosts 127.0.0.1:50051      # AS 65001 on 127.0.0.3/.6/.7:1791
//!   bird -c bird.conf -s bird.ctl -P bird.pid               # 127.0.0.2/.4/.5:1790
//!     peer_ibgp    127.0.0.2 AS 65001 <-> 127.0.0.3  (iBGP, IPv4+IPv6, graceful restart)
//!     peer_as2     127.0.0.4 AS 65002 <-> 127.0.0.6  (eBGP, `enable as4 off`)
//!     peer_wrongas 127.0.0.5 AS 65003 <-> 127.0.0.7  (GoBGP expects AS 65009)
//!   gobgp global rib add 198.18.1.0/24 community 65001:200 large-community 65001:3:4 \
//!         med 10 local-pref 300 nexthop 203.0.113.3
//!   gobgp global rib add 198.18.2.0/24 aspath 65100,4200000005 nexthop 203.0.113.3
//!   gobgp global rib -a ipv6 add 2001:db8:200::/48 nexthop 2001:db8::3
//!   gobgp neighbor 127.0.0.2 softresetin; birdc -s bird.ctl reload in peer_ibgp
//!   gobgp global rib del 198.18.1.0/24; gobgp global rib -a ipv6 del 2001:db8:200::/48
//!   birdc disable s6; birdc disable s4; birdc disable peer_ibgp '"maintenance"'
//! python3 extract.py bgp.pcap > msgs.txt        # one BGP message per line, hex
//! ```
//!
//! Each vector below names its line in `capture/msgs.txt`. Where the sender's encoding is the
//! canonical one (attributes in type order, Extended Length only when needed: GoBGP always,
//! BIRD except for MP_REACH/MP_UNREACH, which it puts first with Extended Length) the test
//! also checks that encoding the struct gives the captured bytes back.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use bgp::packet::*;
use bytes::Bytes;
use common::{ctx2, ctx4, enc, hex};

const HDR: &str = "ffffffffffffffffffffffffffffffff";

fn v4(s: &str) -> Ipv4Prefix {
    let (a, l) = s.split_once('/').unwrap();
    Ipv4Prefix::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
}

fn v6(s: &str) -> Ipv6Prefix {
    let (a, l) = s.split_once('/').unwrap();
    Ipv6Prefix::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
}

/// Decodes `bytes`, compares with `want`, and checks the encoding: byte-exact if
/// `canonical`, else that it decodes back to the same struct.
fn check(bytes_hex: &str, ctx: &DecodeContext, want: &Message, canonical: bool) {
    let bytes = hex(&format!("{HDR}{bytes_hex}"));
    let got = Message::decode(&bytes, ctx).expect("captured message decodes");
    assert_eq!(&got, want);
    assert_eq!(frame_len(&bytes, ctx), Ok(Some(bytes.len())));
    let out = want.encode(&enc(ctx));
    if canonical {
        assert_eq!(
            hex_of(&out),
            hex_of(&bytes),
            "encoding differs from the capture"
        );
    } else {
        assert_eq!(&Message::decode(&out, ctx).unwrap(), want);
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn gr(families: &[AfiSafi]) -> Capability {
    Capability::GracefulRestart(GracefulRestart {
        restart_state: false,
        notification: false,
        restart_time: 120,
        families: families
            .iter()
            .map(|&afi_safi| GracefulRestartFamily {
                afi_safi,
                forwarding_preserved: false,
            })
            .collect(),
    })
}

/// msgs.txt line 1: BIRD's OPEN on peer_ibgp.
#[test]
fn open_from_bird() {
    let want = Message::Open(Open {
        my_as: 65001,
        hold_time: 240,
        bgp_identifier: Ipv4Addr::new(127, 0, 0, 2),
        capabilities: vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::RouteRefresh,
            gr(&[AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]),
            Capability::FourOctetAsn(65001),
            // Enhanced route refresh (RFC 7313) and long-lived graceful restart.
            Capability::Unknown {
                code: 70,
                value: Bytes::new(),
            },
            Capability::Unknown {
                code: 71,
                value: Bytes::new(),
            },
        ],
    });
    check(
        "00430104fde900f07f0000022602240104000100010104000200010200400a0078000101000002010041040000fde946004700",
        &DecodeContext::default(),
        &want,
        true,
    );
    let Message::Open(o) = want else {
        unreachable!()
    };
    assert_eq!(o.asn(), 65001);
    assert!(o.route_refresh() && !o.extended_message());
    assert_eq!(
        o.families(),
        vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]
    );
}

/// msgs.txt line 2: GoBGP's OPEN to BIRD (FQDN and extended next hop capabilities kept raw).
#[test]
fn open_from_gobgp() {
    let want = Message::Open(Open {
        my_as: 65001,
        hold_time: 90,
        bgp_identifier: Ipv4Addr::new(127, 0, 0, 3),
        capabilities: vec![
            Capability::RouteRefresh,
            Capability::Unknown {
                code: 73,
                value: Bytes::from_static(&[2, b'v', b'm', 0]),
            },
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::FourOctetAsn(65001),
            gr(&[AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]),
            Capability::Unknown {
                code: 5,
                value: Bytes::from_static(&[0, 1, 0, 1, 0, 2]),
            },
        ],
    });
    check(
        "004d0104fde9005a7f00000330022e0200490402766d0001040001000101040002000141040000fde9400a007800010100000201000506000100010002",
        &DecodeContext::default(),
        &want,
        true,
    );
}

/// msgs.txt line 12: BIRD's OPEN with `enable as4 off`: no 4-octet AS capability, no MP for
/// IPv6, graceful restart without families.
#[test]
fn open_from_bird_as4_off() {
    let want = Message::Open(Open {
        my_as: 65002,
        hold_time: 240,
        bgp_identifier: Ipv4Addr::new(127, 0, 0, 2),
        capabilities: vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::RouteRefresh,
            gr(&[]),
            Capability::Unknown {
                code: 70,
                value: Bytes::new(),
            },
            Capability::Unknown {
                code: 71,
                value: Bytes::new(),
            },
        ],
    });
    check(
        "002f0104fdea00f07f00000212021001040001000102004002007846004700",
        &DecodeContext::default(),
        &want,
        true,
    );
    // What the session negotiates with GoBGP's OPEN (line 17, same as line 2 minus FQDN).
    let Message::Open(bird) = want else {
        unreachable!()
    };
    let gobgp = Open::new(
        65001,
        90,
        Ipv4Addr::new(127, 0, 0, 3),
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::FourOctetAsn(65001),
        ],
    );
    assert_eq!(DecodeContext::negotiated(&gobgp, &bird), ctx2());
}

/// msgs.txt lines 3, 4: KEEPALIVE both ways.
#[test]
fn keepalive() {
    check("001304", &ctx4(), &Message::Keepalive, true);
}

/// msgs.txt line 5 (GoBGP) and line 11 (BIRD): IPv6 unicast End-of-RIB.
#[test]
fn end_of_rib_ipv6() {
    let want = Message::Update(Update::end_of_rib(AfiSafi::IPV6_UNICAST));
    check("001d0200000006800f03000201", &ctx4(), &want, true);
    let Message::Update(u) = want else {
        unreachable!()
    };
    assert_eq!(u.as_end_of_rib(), Some(AfiSafi::IPV6_UNICAST));
}

/// msgs.txt lines 6, 9 (and 20, 29): IPv4 unicast End-of-RIB, an empty UPDATE.
#[test]
fn end_of_rib_ipv4() {
    let want = Message::Update(Update::end_of_rib(AfiSafi::IPV4_UNICAST));
    check("00170200000000", &ctx4(), &want, true);
    let Message::Update(u) = want else {
        unreachable!()
    };
    assert_eq!(u.as_end_of_rib(), Some(AfiSafi::IPV4_UNICAST));
}

/// msgs.txt line 7: BIRD, iBGP, 198.18.0.64/26 with next hop self (`next hop address`).
#[test]
fn update_v4_from_bird_plain() {
    let want = Message::Update(Update {
        nlri: vec![v4("198.18.0.64/26")],
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            next_hop: Some(Ipv4Addr::new(203, 0, 113, 2)),
            local_pref: Some(100),
            ..Default::default()
        },
        ..Default::default()
    });
    check(
        "0031020000001540010100400200400304cb007102400504000000641ac6120040",
        &ctx4(),
        &want,
        true,
    );
}

/// msgs.txt line 8: BIRD, iBGP, 198.18.0.0/26 with MED, LOCAL_PREF, COMMUNITIES (one of them
/// NO_EXPORT) and LARGE_COMMUNITY set by the export filter in bird.conf.
#[test]
fn update_v4_from_bird_with_communities() {
    let want = Message::Update(Update {
        nlri: vec![v4("198.18.0.0/26")],
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            next_hop: Some(Ipv4Addr::new(203, 0, 113, 2)),
            med: Some(50),
            local_pref: Some(200),
            communities: vec![Community::new(65001, 100), Community::NO_EXPORT],
            large_communities: vec![LargeCommunity {
                global_admin: 65001,
                local_data_1: 1,
                local_data_2: 2,
            }],
            ..Default::default()
        },
        ..Default::default()
    });
    check(
        "0052020000003640010100400200400304cb00710280040400000032400504000000c8c00808fde90064ffffff01c0200c0000fde900000001000000021ac6120000",
        &ctx4(),
        &want,
        true,
    );
}

/// msgs.txt line 10: BIRD, MP_REACH_NLRI for 2001:db8:100::/48 (BIRD's non-canonical
/// attribute order and Extended Length).
#[test]
fn update_v6_mp_reach_from_bird() {
    let want = Message::Update(Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            local_pref: Some(100),
            mp_reach: Some(MpReach {
                afi_safi: AfiSafi::IPV6_UNICAST,
                next_hop: MpNextHop::V6 {
                    global: "2001:db8::2".parse::<Ipv6Addr>().unwrap(),
                    link_local: None,
                },
                nlri: vec![Prefix::V6(v6("2001:db8:100::/48"))],
            }),
            ..Default::default()
        },
        ..Default::default()
    });
    check(
        "0045020000002e900e001c0002011020010db8000000000000000000000002003020010db801004001010040020040050400000064",
        &ctx4(),
        &want,
        false,
    );
    let Message::Update(u) = want else {
        unreachable!()
    };
    assert_eq!(u.announced(), vec![Prefix::V6(v6("2001:db8:100::/48"))]);
}

fn gobgp_198_18_1(as_path: AsPath, local_pref: Option<u32>) -> Message {
    Message::Update(Update {
        nlri: vec![v4("198.18.1.0/24")],
        attributes: PathAttributes {
            origin: Some(Origin::Incomplete),
            as_path: Some(as_path),
            next_hop: Some(Ipv4Addr::new(203, 0, 113, 3)),
            med: Some(10),
            local_pref,
            communities: vec![Community::new(65001, 200)],
            large_communities: vec![LargeCommunity {
                global_admin: 65001,
                local_data_1: 3,
                local_data_2: 4,
            }],
            ..Default::default()
        },
        ..Default::default()
    })
}

/// msgs.txt line 22: GoBGP, iBGP, 198.18.1.0/24 with MED, LOCAL_PREF, communities.
#[test]
fn update_v4_from_gobgp_ibgp() {
    check(
        "004d020000003240010102400200400304cb0071038004040000000a4005040000012cc00804fde900c8c0200c0000fde9000000030000000418c61201",
        &ctx4(),
        &gobgp_198_18_1(AsPath::default(), Some(300)),
        true,
    );
}

/// msgs.txt line 21: GoBGP to the 2-octet peer: AS_PATH with 2-octet AS numbers.
#[test]
fn update_v4_from_gobgp_two_octet_peer() {
    check(
        "004a020000002f400101024002040201fde9400304cb0071038004040000000ac00804fde900c8c0200c0000fde9000000030000000418c61201",
        &ctx2(),
        &gobgp_198_18_1(AsPath::from_sequence(vec![65001]), None),
        true,
    );
}

/// msgs.txt line 23: GoBGP, iBGP, AS_PATH 65100 4200000005 in 4-octet encoding.
#[test]
fn update_v4_four_octet_as_path() {
    let want = Message::Update(Update {
        nlri: vec![v4("198.18.2.0/24")],
        attributes: PathAttributes {
            origin: Some(Origin::Incomplete),
            as_path: Some(AsPath::from_sequence(vec![65100, 4_200_000_005])),
            next_hop: Some(Ipv4Addr::new(203, 0, 113, 3)),
            local_pref: Some(100),
            ..Default::default()
        },
        ..Default::default()
    });
    check(
        "003a020000001f4001010240020a02020000fe4cfa56ea05400304cb0071034005040000006418c61202",
        &ctx4(),
        &want,
        true,
    );
}

/// msgs.txt line 24: the same route to the 2-octet peer: AS_PATH 65001 65100 AS_TRANS plus
/// AS4_PATH 65001 65100 4200000005, merged per RFC 6793 §4.2.3 and re-split on encode.
#[test]
fn update_v4_as4_path_merge() {
    let want = Message::Update(Update {
        nlri: vec![v4("198.18.2.0/24")],
        attributes: PathAttributes {
            origin: Some(Origin::Incomplete),
            as_path: Some(AsPath::from_sequence(vec![65001, 65100, 4_200_000_005])),
            next_hop: Some(Ipv4Addr::new(203, 0, 113, 3)),
            ..Default::default()
        },
        ..Default::default()
    });
    check(
        "00420200000027400101024002080203fde9fe4c5ba0400304cb007103c0110e02030000fde90000fe4cfa56ea0518c61202",
        &ctx2(),
        &want,
        true,
    );
}

/// msgs.txt line 25: GoBGP, MP_REACH_NLRI for 2001:db8:200::/48.
#[test]
fn update_v6_mp_reach_from_gobgp() {
    let want = Message::Update(Update {
        attributes: PathAttributes {
            origin: Some(Origin::Incomplete),
            as_path: Some(AsPath::default()),
            local_pref: Some(100),
            mp_reach: Some(MpReach {
                afi_safi: AfiSafi::IPV6_UNICAST,
                next_hop: MpNextHop::V6 {
                    global: "2001:db8::3".parse::<Ipv6Addr>().unwrap(),
                    link_local: None,
                },
                nlri: vec![Prefix::V6(v6("2001:db8:200::/48"))],
            }),
            ..Default::default()
        },
        ..Default::default()
    });
    check(
        "0044020000002d4001010240020040050400000064800e1c0002011020010db8000000000000000000000003003020010db80200",
        &ctx4(),
        &want,
        true,
    );
}

/// msgs.txt lines 26 and 30: BIRD's ROUTE-REFRESH for IPv4 and IPv6 (`birdc reload in`).
#[test]
fn route_refresh() {
    check(
        "00170500010001",
        &ctx4(),
        &Message::RouteRefresh(RouteRefresh::request(AfiSafi::IPV4_UNICAST)),
        true,
    );
    check(
        "00170500020001",
        &ctx4(),
        &Message::RouteRefresh(RouteRefresh::request(AfiSafi::IPV6_UNICAST)),
        true,
    );
}

/// msgs.txt line 33 (GoBGP) and 39 (BIRD): IPv4 withdrawals.
#[test]
fn withdraw_v4() {
    let want = Message::Update(Update {
        withdrawn: vec![v4("198.18.1.0/24")],
        ..Default::default()
    });
    check("001b02000418c612010000", &ctx4(), &want, true);
    let want = Message::Update(Update {
        withdrawn: vec![v4("198.18.0.64/26"), v4("198.18.0.0/26")],
        ..Default::default()
    });
    check("002102000a1ac61200401ac61200000000", &ctx4(), &want, true);
    let Message::Update(u) = want else {
        unreachable!()
    };
    assert_eq!(u.withdrawals().len(), 2);
    assert!(u.announced().is_empty() && u.as_end_of_rib().is_none());
}

fn mp_unreach(p: &str) -> Message {
    Message::Update(Update {
        attributes: PathAttributes {
            mp_unreach: Some(MpUnreach {
                afi_safi: AfiSafi::IPV6_UNICAST,
                withdrawn: vec![Prefix::V6(v6(p))],
            }),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// msgs.txt line 36 (GoBGP, canonical) and 38 (BIRD, Extended Length): IPv6 withdrawals.
#[test]
fn withdraw_v6_mp_unreach() {
    check(
        "0024020000000d800f0a0002013020010db80200",
        &ctx4(),
        &mp_unreach("2001:db8:200::/48"),
        true,
    );
    check(
        "0025020000000e900f000a0002013020010db80100",
        &ctx4(),
        &mp_unreach("2001:db8:100::/48"),
        false,
    );
}

/// msgs.txt line 16: GoBGP rejects BIRD's OPEN from AS 65003 (expects 65009): 2/2.
#[test]
fn notification_bad_peer_as() {
    let want = Message::Notification(Notification::new(NotificationError::Open(
        OpenSubcode::BadPeerAs,
    )));
    check("0015030202", &ctx4(), &want, true);
}

/// msgs.txt line 40: `birdc disable peer_ibgp "maintenance"`: Cease / Administrative
/// Shutdown with an RFC 9003 Shutdown Communication; line 41: the same without one.
#[test]
fn notification_cease_shutdown() {
    let want = Message::Notification(Notification::shutdown(
        CeaseSubcode::AdministrativeShutdown,
        "maintenance",
    ));
    check("00210306020b6d61696e74656e616e6365", &ctx4(), &want, true);
    let Message::Notification(n) = want else {
        unreachable!()
    };
    assert_eq!(n.shutdown_communication(), Some("maintenance"));
    assert_eq!((n.error.code(), n.error.subcode()), (6, 2));
    let want = Message::Notification(Notification::new(NotificationError::Cease(
        CeaseSubcode::AdministrativeShutdown,
    )));
    check("0015030602", &ctx2(), &want, true);
}

/// Every line of msgs.txt decodes, and every line frames correctly when all messages of one
/// direction are concatenated into a stream.
#[test]
fn whole_capture_decodes_and_frames() {
    let text = include_str!("capture/msgs.txt");
    let mut stream = Vec::new();
    for line in text.lines() {
        let hexs = line.rsplit(' ').next().unwrap();
        let b = hex(hexs);
        // peer_as2 runs on 127.0.0.4 <-> 127.0.0.6 without 4-octet AS numbers.
        let ctx = if line.contains("127.0.0.4:") || line.contains("127.0.0.6:1791 -> 127.0.0.4") {
            ctx2()
        } else {
            ctx4()
        };
        let m = Message::decode(&b, &ctx).unwrap_or_else(|e| panic!("{line}: {e}"));
        if let Message::Update(u) = &m {
            assert!(
                u.attribute_errors.is_empty(),
                "{line}: {:?}",
                u.attribute_errors
            );
        }
        stream.extend_from_slice(&b);
    }
    let mut rest = &stream[..];
    let mut n = 0;
    while let Some(len) = frame_len(rest, &ctx4()).unwrap() {
        rest = &rest[len..];
        n += 1;
    }
    assert!(rest.is_empty());
    assert_eq!(n, text.lines().count());
}
