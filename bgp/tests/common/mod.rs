//! Helpers shared by the codec's integration tests.
#![allow(dead_code)]

use bgp::packet::{AfiSafi, DecodeContext, EncodeContext};

/// Hex (whitespace allowed) to bytes.
pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A session that negotiated 4-octet ASNs and IPv4 + IPv6 unicast (the BIRD ↔ GoBGP iBGP
/// session of the captures).
pub fn ctx4() -> DecodeContext {
    DecodeContext {
        four_octet_asn: true,
        extended_messages: false,
        families: vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST],
    }
}

/// A session with a 2-octet-AS peer (BIRD with `enable as4 off`), IPv4 unicast only.
pub fn ctx2() -> DecodeContext {
    DecodeContext {
        four_octet_asn: false,
        extended_messages: false,
        families: vec![AfiSafi::IPV4_UNICAST],
    }
}

pub fn enc(ctx: &DecodeContext) -> EncodeContext {
    EncodeContext::from(ctx)
}
