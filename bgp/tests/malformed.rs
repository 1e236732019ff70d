//! Malformed input → the NOTIFICATION RFC 4271 §6 demands, or the RFC 7606 action.
//! Each row is hand-built from the RFC text it names; the valid parts are taken from the
//! captured vectors (see vectors.rs).

mod common;

use bgp::packet::*;
use common::{ctx2, ctx4, hex};

const MARKER: &str = "ffffffffffffffffffffffffffffffff";

/// A whole message with a correct header around `body_hex`.
fn msg(msg_type: u8, body_hex: &str) -> Vec<u8> {
    let body = hex(body_hex);
    let mut v = hex(MARKER);
    v.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    v.push(msg_type);
    v.extend_from_slice(&body);
    v
}

/// An UPDATE body from withdrawn routes, attributes and NLRI (hex), lengths filled in.
fn update(withdrawn: &str, attrs: &str, nlri: &str) -> Vec<u8> {
    let (w, a) = (hex(withdrawn), hex(attrs));
    let body = format!("{:04x}{withdrawn}{:04x}{attrs}{nlri}", w.len(), a.len());
    msg(2, &body)
}

const ORIGIN: &str = "40010100";
const AS_PATH4: &str = "4002060201" /* one AS_SEQUENCE of 1 */;
const AS_PATH4_VAL: &str = "0000fde9";
const NEXT_HOP: &str = "400304cb007102";
const NLRI: &str = "18c61201";

fn base_attrs() -> String {
    format!("{ORIGIN}{AS_PATH4}{AS_PATH4_VAL}{NEXT_HOP}")
}

/// An OPEN body: version, AS, hold time, id, optional parameters (hex).
fn open(version: u8, asn: u16, hold: u16, id: u32, params: &str) -> Vec<u8> {
    let p = hex(params);
    msg(
        1,
        &format!(
            "{version:02x}{asn:04x}{hold:04x}{id:08x}{:02x}{params}",
            p.len()
        ),
    )
}

/// (what, bytes, context, code, subcode, data)
type ErrorRow = (&'static str, Vec<u8>, DecodeContext, u8, u8, Vec<u8>);

#[test]
fn errors_map_to_notifications() {
    let ok_params = "0206410400000001";
    let mp_v6_bad_nh = "800e0b00020105aabbccddee0000";
    let unknown_well_known = "40630100";
    // (what, bytes, context, code, subcode, data)
    let rows: Vec<ErrorRow> = vec![
        // RFC 4271 §6.1 header errors.
        (
            "bad marker",
            hex("feffffffffffffffffffffffffffffff001304"),
            ctx4(),
            1,
            1,
            vec![],
        ),
        (
            "length below 19",
            hex(&format!("{MARKER}001204")),
            ctx4(),
            1,
            2,
            vec![0x00, 0x12],
        ),
        (
            "length above 4096 without extended messages",
            [hex(&format!("{MARKER}100102")), vec![0; 4096 - 19 + 1]].concat(),
            ctx4(),
            1,
            2,
            vec![0x10, 0x01],
        ),
        (
            "length field disagrees with the buffer",
            hex(&format!("{MARKER}00130400")),
            ctx4(),
            1,
            2,
            vec![0, 0x13],
        ),
        (
            "KEEPALIVE longer than 19",
            msg(4, "00"),
            ctx4(),
            1,
            2,
            vec![0, 20],
        ),
        (
            "OPEN shorter than 29",
            msg(1, "04fde900f07f000002"),
            ctx4(),
            1,
            2,
            vec![0, 28],
        ),
        (
            "UPDATE shorter than 23",
            msg(2, "000000"),
            ctx4(),
            1,
            2,
            vec![0, 22],
        ),
        (
            "NOTIFICATION shorter than 21",
            msg(3, "06"),
            ctx4(),
            1,
            2,
            vec![0, 20],
        ),
        ("unknown message type", msg(6, ""), ctx4(), 1, 3, vec![6]),
        // RFC 7313 §5.
        (
            "ROUTE-REFRESH of 5 octets",
            msg(5, "0001000100"),
            ctx4(),
            7,
            1,
            msg(5, "0001000100"),
        ),
        // RFC 4271 §6.2 OPEN errors.
        (
            "OPEN version 3",
            open(3, 65001, 90, 1, ok_params),
            ctx4(),
            2,
            1,
            vec![0, 4],
        ),
        (
            "OPEN AS 0 (RFC 7607)",
            open(4, 0, 90, 1, ok_params),
            ctx4(),
            2,
            2,
            vec![],
        ),
        (
            "4-octet AS capability of 0",
            open(4, 23456, 90, 1, "0206410400000000"),
            ctx4(),
            2,
            2,
            vec![],
        ),
        (
            "BGP identifier 0 (RFC 6286)",
            open(4, 65001, 90, 0, ok_params),
            ctx4(),
            2,
            3,
            vec![],
        ),
        (
            "optional parameter type 1",
            open(4, 65001, 90, 1, "0100"),
            ctx4(),
            2,
            4,
            vec![],
        ),
        (
            "hold time 1",
            open(4, 65001, 1, 1, ok_params),
            ctx4(),
            2,
            6,
            vec![],
        ),
        (
            "hold time 2",
            open(4, 65001, 2, 1, ok_params),
            ctx4(),
            2,
            6,
            vec![],
        ),
        (
            "optional parameters length past the message",
            msg(1, "04fde9005a0000000109020641040000"),
            ctx4(),
            2,
            0,
            vec![],
        ),
        (
            "capability overruns its parameter",
            open(4, 65001, 90, 1, "0203410400"),
            ctx4(),
            2,
            0,
            vec![],
        ),
        (
            "4-octet AS capability of 3 octets",
            open(4, 65001, 90, 1, "020541030000fd"),
            ctx4(),
            2,
            0,
            vec![],
        ),
        // RFC 4271 §6.3 / RFC 7606 session resets.
        (
            "withdrawn routes length overruns",
            msg(2, "00100000"),
            ctx4(),
            3,
            1,
            vec![],
        ),
        (
            "total attribute length overruns",
            msg(2, "00000010"),
            ctx4(),
            3,
            1,
            vec![],
        ),
        (
            "withdrawn prefix length 33",
            update("21c6120100ff", "", ""),
            ctx4(),
            3,
            10,
            vec![],
        ),
        (
            "NLRI prefix truncated",
            update("", &base_attrs(), "18c612"),
            ctx4(),
            3,
            10,
            vec![],
        ),
        (
            "MP_REACH_NLRI twice (RFC 7606 §3 g)",
            update("", &format!("{}800f03000201800f03000201", base_attrs()), ""),
            ctx4(),
            3,
            1,
            vec![],
        ),
        (
            "MP_REACH_NLRI next hop of 5 octets (RFC 7606 §7.11)",
            update("", &format!("{ORIGIN}{mp_v6_bad_nh}"), ""),
            ctx4(),
            3,
            9,
            hex(mp_v6_bad_nh),
        ),
        (
            "MP_UNREACH_NLRI with a bad IPv6 prefix (RFC 7606 §5.3)",
            update("", "800f0400020181", ""),
            ctx4(),
            3,
            9,
            hex("800f0400020181"),
        ),
        (
            "MP_UNREACH_NLRI marked transitive",
            update("", "c00f03000201", ""),
            ctx4(),
            3,
            4,
            hex("c00f03000201"),
        ),
        (
            "unrecognized well-known attribute",
            update("", &format!("{}{unknown_well_known}", base_attrs()), NLRI),
            ctx4(),
            3,
            2,
            hex(unknown_well_known),
        ),
    ];
    for (what, bytes, ctx, code, subcode, data) in rows {
        let err = match Message::decode(&bytes, &ctx) {
            Err(e) => e,
            Ok(m) => panic!("{what}: decoded to {m:?}"),
        };
        let n = Notification::from(&err);
        assert_eq!(
            (n.error.code(), n.error.subcode(), &n.data[..]),
            (code, subcode, &data[..]),
            "{what}: {err}"
        );
        // The NOTIFICATION itself encodes and decodes.
        let wire = Message::Notification(n.clone()).encode(&EncodeContext::default());
        assert_eq!(
            Message::decode(&wire, &ctx4()),
            Ok(Message::Notification(n)),
            "{what}"
        );
    }
}

#[test]
fn frame_len_rejects_broken_streams_early() {
    let c = ctx4();
    assert_eq!(frame_len(&hex(MARKER), &c), Ok(None));
    assert_eq!(
        frame_len(&hex(&format!("{MARKER}0017020000")), &c),
        Ok(None)
    );
    assert_eq!(
        frame_len(&hex(&format!("{MARKER}2000020000")), &c),
        Err(DecodeError::BadMessageLength { length: 0x2000 })
    );
    assert_eq!(
        frame_len(&hex("00ffffffffffffffffffffffffffffff001304"), &c),
        Err(DecodeError::ConnectionNotSynchronized)
    );
    // RFC 8654: with extended messages 0x2000 is a valid length.
    let ext = DecodeContext {
        extended_messages: true,
        ..ctx4()
    };
    assert_eq!(
        frame_len(&hex(&format!("{MARKER}2000020000")), &ext),
        Ok(None)
    );
}

#[test]
fn extended_message_accepted_when_negotiated() {
    // An UPDATE with 1300 /24s in the NLRI: 5200 + 23 + attributes octets.
    let nlri: String = (0..1300u32)
        .map(|i| format!("18c6{:02x}{:02x}", (i >> 8) as u8 | 0x12, i as u8))
        .collect();
    let bytes = update("", &base_attrs(), &nlri);
    assert!(bytes.len() > 4096);
    assert!(Message::decode(&bytes, &ctx4()).is_err());
    let ext = DecodeContext {
        extended_messages: true,
        ..ctx4()
    };
    let Ok(Message::Update(u)) = Message::decode(&bytes, &ext) else {
        panic!()
    };
    assert_eq!(u.nlri.len(), 1300);
    let enc = EncodeContext {
        four_octet_asn: true,
        extended_messages: true,
    };
    assert_eq!(&Message::Update(u).encode(&enc)[..], &bytes[..]);
}

#[test]
fn rfc7606_attribute_errors() {
    use Rfc7606Action::{AttributeDiscard as D, TreatAsWithdraw as W};
    let asp = format!("{AS_PATH4}{AS_PATH4_VAL}");
    // (what, attributes hex, context, type code reported, action)
    let rows: Vec<(&str, String, DecodeContext, u8, Rfc7606Action)> = vec![
        (
            "ORIGIN value 3 (§7.1)",
            format!("40010103{asp}{NEXT_HOP}"),
            ctx4(),
            1,
            W,
        ),
        (
            "ORIGIN of 2 octets (§7.1)",
            format!("4001020000{asp}{NEXT_HOP}"),
            ctx4(),
            1,
            W,
        ),
        (
            "ORIGIN flagged optional (§3 c)",
            format!("c0010100{asp}{NEXT_HOP}"),
            ctx4(),
            1,
            W,
        ),
        (
            "AGGREGATOR flagged non-transitive (§3 c, §7.7)",
            format!("{}80070800000001c0000201", base_attrs()),
            ctx4(),
            7,
            D,
        ),
        (
            "MED flagged transitive (§3 c)",
            format!("{}c004040000000a", base_attrs()),
            ctx4(),
            4,
            W,
        ),
        (
            "AS_PATH segment type 5 (§7.2)",
            format!("{ORIGIN}4002060501{AS_PATH4_VAL}{NEXT_HOP}"),
            ctx4(),
            2,
            W,
        ),
        (
            "AS_PATH segment of length 0 (§7.2)",
            format!("{ORIGIN}4002020200{NEXT_HOP}"),
            ctx4(),
            2,
            W,
        ),
        (
            "AS_PATH segment overrun (§7.2)",
            format!("{ORIGIN}4002060202{AS_PATH4_VAL}{NEXT_HOP}"),
            ctx4(),
            2,
            W,
        ),
        (
            "NEXT_HOP of 5 octets (§7.3)",
            format!("{ORIGIN}{asp}400305cb00710200"),
            ctx4(),
            3,
            W,
        ),
        (
            "MED of 3 octets (§7.4)",
            format!("{}800403000000", base_attrs()),
            ctx4(),
            4,
            W,
        ),
        (
            "LOCAL_PREF of 2 octets (§7.5)",
            format!("{}4005020000", base_attrs()),
            ctx4(),
            5,
            W,
        ),
        (
            "ATOMIC_AGGREGATE of 1 octet (§7.6)",
            format!("{}40060100", base_attrs()),
            ctx4(),
            6,
            D,
        ),
        (
            "AGGREGATOR of 7 octets (§7.7)",
            format!("{}c007070000fde9c00002", base_attrs()),
            ctx4(),
            7,
            D,
        ),
        (
            "2-octet AGGREGATOR on a 4-octet session (§7.7)",
            format!("{}c00706fde9c0000201", base_attrs()),
            ctx4(),
            7,
            D,
        ),
        (
            "COMMUNITIES of 3 octets (§7.8)",
            format!("{}c00803fde900", base_attrs()),
            ctx4(),
            8,
            W,
        ),
        (
            "COMMUNITIES empty (§7.8)",
            format!("{}c00800", base_attrs()),
            ctx4(),
            8,
            W,
        ),
        (
            "ORIGINATOR_ID of 3 octets (§7.9)",
            format!("{}800903c00002", base_attrs()),
            ctx4(),
            9,
            W,
        ),
        (
            "CLUSTER_LIST of 6 octets (§7.10)",
            format!("{}800a06c0000201c000", base_attrs()),
            ctx4(),
            10,
            W,
        ),
        (
            "LARGE_COMMUNITY of 11 octets (RFC 8092 §6)",
            format!("{}c0200b0000fde900000001000000", base_attrs()),
            ctx4(),
            32,
            W,
        ),
        (
            "ORIGIN missing (§3 d)",
            format!("{asp}{NEXT_HOP}"),
            ctx4(),
            1,
            W,
        ),
        (
            "NEXT_HOP missing (§3 d)",
            format!("{ORIGIN}{asp}"),
            ctx4(),
            3,
            W,
        ),
        (
            "MED twice (§3 g)",
            format!("{}8004040000000a8004040000000b", base_attrs()),
            ctx4(),
            4,
            D,
        ),
        (
            "attribute overruns the field (§4)",
            format!("{}c0080a0000", base_attrs()),
            ctx4(),
            8,
            W,
        ),
        (
            "one octet left over (§4)",
            format!("{}c0", base_attrs()),
            ctx4(),
            0,
            W,
        ),
        (
            "AS4_PATH with a zero-length segment (RFC 6793 §6)",
            format!("{ORIGIN}40020402010001{NEXT_HOP}c011020200"),
            ctx2(),
            17,
            D,
        ),
        (
            "AS4_AGGREGATOR of 6 octets (RFC 6793 §6)",
            format!("{ORIGIN}40020402010001{NEXT_HOP}c007065ba0c0000201c01206fde9c0000201"),
            ctx2(),
            18,
            D,
        ),
    ];
    for (what, attrs, ctx, type_code, action) in rows {
        let bytes = update("", &attrs, NLRI);
        let u = match Message::decode(&bytes, &ctx) {
            Ok(Message::Update(u)) => u,
            other => panic!("{what}: {other:?}"),
        };
        assert!(
            u.attribute_errors
                .iter()
                .any(|e| e.type_code == type_code && e.action == action),
            "{what}: {:?}",
            u.attribute_errors
        );
        let nlri = vec![Prefix::V4(
            Ipv4Prefix::new("198.18.1.0".parse().unwrap(), 24).unwrap(),
        )];
        if action == Rfc7606Action::TreatAsWithdraw {
            assert!(u.treat_as_withdraw(), "{what}");
            assert!(u.announced().is_empty(), "{what}");
            assert_eq!(u.withdrawals(), nlri, "{what}");
        } else {
            assert!(!u.treat_as_withdraw(), "{what}: {:?}", u.attribute_errors);
            assert_eq!(u.announced(), nlri, "{what}");
        }
    }
}

#[test]
fn treat_as_withdraw_covers_mp_reach() {
    // GoBGP's IPv6 UPDATE (vectors.rs, msgs.txt line 25) with ORIGIN value 9.
    let attrs = "400101094002004005040000006480\
                 0e1c0002011020010db8000000000000000000000003003020010db80200";
    let Ok(Message::Update(u)) = Message::decode(&update("", attrs, ""), &ctx4()) else {
        panic!()
    };
    assert!(u.treat_as_withdraw());
    assert_eq!(u.withdrawals().len(), 1);
    assert!(u.announced().is_empty());
}

#[test]
fn unknown_families_are_ignored() {
    // MP_REACH_NLRI for IPv6 on a session that negotiated IPv4 only (RFC 4760 §7).
    let attrs = "400101024002004005040000006480\
                 0e1c0002011020010db8000000000000000000000003003020010db80200";
    let Ok(Message::Update(u)) = Message::decode(&update("", attrs, ""), &ctx2()) else {
        panic!()
    };
    assert!(u.attributes.mp_reach.is_none());
    assert_eq!(u.attributes.unknown.len(), 1);
    assert!(u.attribute_errors.is_empty() && u.announced().is_empty());
}

#[test]
fn unknown_optional_transitive_is_kept_and_passed_on_partial() {
    let attrs = format!("{}c0630301020380640100", base_attrs());
    let Ok(Message::Update(u)) = Message::decode(&update("", &attrs, NLRI), &ctx4()) else {
        panic!()
    };
    assert_eq!(u.attributes.unknown.len(), 2);
    let passed = u.attributes.unknown_to_pass_on();
    assert_eq!(passed.len(), 1);
    assert_eq!((passed[0].type_code, passed[0].flags), (0x63, 0xe0));
    // And it encodes back as received.
    assert_eq!(
        &Message::Update(u).encode(&EncodeContext {
            four_octet_asn: true,
            extended_messages: false
        })[..],
        &update("", &attrs, NLRI)[..]
    );
}
