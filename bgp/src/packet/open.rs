//! OPEN (RFC 4271 §4.2) and the capabilities it carries (RFC 5492): multiprotocol
//! (RFC 4760 §8), route refresh (RFC 2918 §2), extended messages (RFC 8654 §3), graceful
//! restart (RFC 4724 §3, N bit RFC 8538 §2), 4-octet AS numbers (RFC 6793 §3). Capabilities
//! this codec does not know are kept raw, so they can be logged and compared.

use std::net::Ipv4Addr;

use bytes::{BufMut, Bytes, BytesMut};
use nom::bytes::complete::take;
use nom::number::complete::{be_u8, be_u16, be_u32};

use super::{AS_TRANS, AfiSafi, DecodeError, NomResult};

/// RFC 5492 §4: optional parameter type 2 carries capabilities.
const PARAM_CAPABILITIES: u8 = 2;

/// One capability (RFC 5492 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Code 1, RFC 4760 §8: the sender can carry routes of this AFI/SAFI.
    Multiprotocol(AfiSafi),
    /// Code 2, RFC 2918 §2: the sender accepts ROUTE-REFRESH.
    RouteRefresh,
    /// Code 6, RFC 8654 §3: messages up to 65535 octets.
    ExtendedMessage,
    /// Code 64, RFC 4724 §3.
    GracefulRestart(GracefulRestart),
    /// Code 65, RFC 6793 §3: the sender's real AS number.
    FourOctetAsn(u32),
    /// Any other capability, as received.
    Unknown { code: u8, value: Bytes },
}

/// The Graceful Restart capability (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GracefulRestart {
    /// Restart State (R) bit: the sender has restarted and is not waiting for our End-of-RIB.
    pub restart_state: bool,
    /// Notification (N) bit, RFC 8538 §2: graceful restart also covers NOTIFICATIONs.
    pub notification: bool,
    /// Restart Time in seconds (12 bits).
    pub restart_time: u16,
    /// The families whose state the sender keeps across a restart.
    pub families: Vec<GracefulRestartFamily>,
}

/// One AFI/SAFI tuple of the Graceful Restart capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartFamily {
    pub afi_safi: AfiSafi,
    /// Forwarding State (F) bit: forwarding state was preserved for this family.
    pub forwarding_preserved: bool,
}

/// An OPEN message (RFC 4271 §4.2). The version is always 4: anything else is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// My Autonomous System: the 2-octet AS, or AS_TRANS (23456) when the real one needs
    /// four octets (RFC 6793 §4.2.1). See [`Open::asn`].
    pub my_as: u16,
    /// Hold Time in seconds: 0 or at least 3.
    pub hold_time: u16,
    pub bgp_identifier: Ipv4Addr,
    /// All capabilities, from every Capabilities optional parameter in order. Encoded as one
    /// parameter, as BIRD and GoBGP do.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// An OPEN for `asn`: My Autonomous System is `asn` when it fits in two octets and
    /// AS_TRANS otherwise; add [`Capability::FourOctetAsn`] yourself to talk to NEW speakers.
    pub fn new(
        asn: u32,
        hold_time: u16,
        bgp_identifier: Ipv4Addr,
        capabilities: Vec<Capability>,
    ) -> Self {
        let my_as = u16::try_from(asn).unwrap_or(AS_TRANS);
        Open {
            my_as,
            hold_time,
            bgp_identifier,
            capabilities,
        }
    }

    /// The sender's AS: the 4-octet AS capability if present (RFC 6793 §4.1), else My AS.
    pub fn asn(&self) -> u32 {
        self.four_octet_asn().unwrap_or(u32::from(self.my_as))
    }

    /// The 4-octet AS capability's value.
    pub fn four_octet_asn(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAsn(asn) => Some(*asn),
            _ => None,
        })
    }

    /// The families announced with the multiprotocol capability. RFC 4760 §8 / RFC 4271:
    /// a speaker that announces none carries IPv4 unicast only.
    pub fn families(&self) -> Vec<AfiSafi> {
        let v: Vec<AfiSafi> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(f) => Some(*f),
                _ => None,
            })
            .collect();
        if v.is_empty() {
            vec![AfiSafi::IPV4_UNICAST]
        } else {
            v
        }
    }

    pub fn route_refresh(&self) -> bool {
        self.capabilities.contains(&Capability::RouteRefresh)
    }

    pub fn extended_message(&self) -> bool {
        self.capabilities.contains(&Capability::ExtendedMessage)
    }

    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
    }

    /// Decodes the body after the header (RFC 4271 §4.2, errors per §6.2).
    pub(crate) fn decode_body(body: &[u8]) -> Result<Self, DecodeError> {
        let (rest, (version, my_as, hold_time, id, opt_len)) =
            parse_fixed(body).map_err(|_| DecodeError::MalformedOpen {
                detail: "short OPEN",
            })?;
        if version != 4 {
            return Err(DecodeError::UnsupportedVersionNumber { version });
        }
        if my_as == 0 {
            return Err(DecodeError::BadPeerAs { asn: 0 });
        }
        if hold_time == 1 || hold_time == 2 {
            return Err(DecodeError::UnacceptableHoldTime { hold_time });
        }
        if id == 0 {
            return Err(DecodeError::BadBgpIdentifier);
        }
        if rest.len() != usize::from(opt_len) {
            return Err(DecodeError::MalformedOpen {
                detail: "Optional Parameters Length does not match the message",
            });
        }
        let mut params = rest;
        let mut capabilities = Vec::new();
        while !params.is_empty() {
            let (r, (ptype, value)) =
                parse_tlv(params).map_err(|_| DecodeError::MalformedOpen {
                    detail: "optional parameter overruns the OPEN",
                })?;
            params = r;
            if ptype != PARAM_CAPABILITIES {
                return Err(DecodeError::UnsupportedOptionalParameter { param_type: ptype });
            }
            let mut caps = value;
            while !caps.is_empty() {
                let (r, (code, value)) =
                    parse_tlv(caps).map_err(|_| DecodeError::MalformedOpen {
                        detail: "capability overruns its optional parameter",
                    })?;
                caps = r;
                capabilities.push(decode_capability(code, value)?);
            }
        }
        Ok(Open {
            my_as,
            hold_time,
            bgp_identifier: Ipv4Addr::from(id),
            capabilities,
        })
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        out.put_u8(4);
        out.put_u16(self.my_as);
        out.put_u16(self.hold_time);
        out.put_slice(&self.bgp_identifier.octets());
        let mut caps = BytesMut::new();
        for c in &self.capabilities {
            encode_capability(c, &mut caps);
        }
        if caps.is_empty() {
            out.put_u8(0);
        } else {
            // RFC 9072 extended optional parameters are not supported: capabilities beyond 253
            // octets are cut at a capability boundary rather than sent malformed.
            let mut cut = caps.len();
            if cut > 253 {
                cut = 0;
                let mut i = 0;
                while i + 2 <= caps.len() {
                    let next = i + 2 + usize::from(caps[i + 1]);
                    if next > 253 {
                        break;
                    }
                    cut = next;
                    i = next;
                }
            }
            out.put_u8((cut + 2) as u8);
            out.put_u8(PARAM_CAPABILITIES);
            out.put_u8(cut as u8);
            out.put_slice(&caps[..cut]);
        }
    }
}

type Fixed = (u8, u16, u16, u32, u8);

fn parse_fixed(i: &[u8]) -> NomResult<'_, Fixed> {
    let (i, version) = be_u8(i)?;
    let (i, my_as) = be_u16(i)?;
    let (i, hold) = be_u16(i)?;
    let (i, id) = be_u32(i)?;
    let (i, opt_len) = be_u8(i)?;
    Ok((i, (version, my_as, hold, id, opt_len)))
}

/// A one-octet type, one-octet length, value triple (optional parameters and capabilities).
fn parse_tlv(i: &[u8]) -> NomResult<'_, (u8, &[u8])> {
    let (i, t) = be_u8(i)?;
    let (i, l) = be_u8(i)?;
    let (i, v) = take(l)(i)?;
    Ok((i, (t, v)))
}

fn decode_capability(code: u8, v: &[u8]) -> Result<Capability, DecodeError> {
    let bad = |detail| Err(DecodeError::MalformedOpen { detail });
    Ok(match code {
        1 => match v {
            [a0, a1, _reserved, safi] => Capability::Multiprotocol(AfiSafi {
                afi: u16::from_be_bytes([*a0, *a1]),
                safi: *safi,
            }),
            _ => return bad("multiprotocol capability is not 4 octets"),
        },
        2 if v.is_empty() => Capability::RouteRefresh,
        2 => return bad("route refresh capability is not empty"),
        6 if v.is_empty() => Capability::ExtendedMessage,
        6 => return bad("extended message capability is not empty"),
        64 => {
            if v.len() < 2 || !(v.len() - 2).is_multiple_of(4) {
                return bad("graceful restart capability length is not 2 + 4n");
            }
            let head = u16::from_be_bytes([v[0], v[1]]);
            let families = v[2..]
                .chunks_exact(4)
                .map(|c| GracefulRestartFamily {
                    afi_safi: AfiSafi {
                        afi: u16::from_be_bytes([c[0], c[1]]),
                        safi: c[2],
                    },
                    forwarding_preserved: c[3] & 0x80 != 0,
                })
                .collect();
            Capability::GracefulRestart(GracefulRestart {
                restart_state: head & 0x8000 != 0,
                notification: head & 0x4000 != 0,
                restart_time: head & 0x0fff,
                families,
            })
        }
        65 => match v {
            [a, b, c, d] => {
                let asn = u32::from_be_bytes([*a, *b, *c, *d]);
                if asn == 0 {
                    return Err(DecodeError::BadPeerAs { asn });
                }
                Capability::FourOctetAsn(asn)
            }
            _ => return bad("4-octet AS capability is not 4 octets"),
        },
        code => Capability::Unknown {
            code,
            value: Bytes::copy_from_slice(v),
        },
    })
}

fn encode_capability(c: &Capability, out: &mut BytesMut) {
    match c {
        Capability::Multiprotocol(f) => {
            out.put_slice(&[1, 4]);
            out.put_u16(f.afi);
            out.put_u8(0);
            out.put_u8(f.safi);
        }
        Capability::RouteRefresh => out.put_slice(&[2, 0]),
        Capability::ExtendedMessage => out.put_slice(&[6, 0]),
        Capability::GracefulRestart(gr) => {
            let n = gr.families.len().min(63);
            out.put_u8(64);
            out.put_u8((2 + 4 * n) as u8);
            let mut head = gr.restart_time & 0x0fff;
            if gr.restart_state {
                head |= 0x8000;
            }
            if gr.notification {
                head |= 0x4000;
            }
            out.put_u16(head);
            for f in &gr.families[..n] {
                out.put_u16(f.afi_safi.afi);
                out.put_u8(f.afi_safi.safi);
                out.put_u8(if f.forwarding_preserved { 0x80 } else { 0 });
            }
        }
        Capability::FourOctetAsn(asn) => {
            out.put_slice(&[65, 4]);
            out.put_u32(*asn);
        }
        Capability::Unknown { code, value } => {
            let n = value.len().min(255);
            out.put_u8(*code);
            out.put_u8(n as u8);
            out.put_slice(&value[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_octet_asn_uses_as_trans() {
        let o = Open::new(
            4_200_000_001,
            90,
            Ipv4Addr::new(192, 0, 2, 1),
            vec![Capability::FourOctetAsn(4_200_000_001)],
        );
        assert_eq!(o.my_as, AS_TRANS);
        assert_eq!(o.asn(), 4_200_000_001);
        assert_eq!(
            Open::new(65001, 90, Ipv4Addr::LOCALHOST, vec![]).asn(),
            65001
        );
    }

    #[test]
    fn no_multiprotocol_capability_means_ipv4_unicast() {
        let o = Open::new(
            65001,
            90,
            Ipv4Addr::LOCALHOST,
            vec![Capability::RouteRefresh],
        );
        assert_eq!(o.families(), vec![AfiSafi::IPV4_UNICAST]);
    }

    #[test]
    fn graceful_restart_bits() {
        // R and N set, restart time 300, IPv6 unicast with forwarding preserved.
        let v = [0xc1, 0x2c, 0x00, 0x02, 0x01, 0x80];
        let Capability::GracefulRestart(gr) = decode_capability(64, &v).unwrap() else {
            panic!()
        };
        assert!(gr.restart_state && gr.notification);
        assert_eq!(gr.restart_time, 300);
        assert_eq!(
            gr.families,
            vec![GracefulRestartFamily {
                afi_safi: AfiSafi::IPV6_UNICAST,
                forwarding_preserved: true
            }]
        );
        let mut out = BytesMut::new();
        encode_capability(&Capability::GracefulRestart(gr), &mut out);
        assert_eq!(&out[2..], &v);
    }

    #[test]
    fn oversized_capabilities_are_cut_at_a_boundary() {
        let caps = (0..30)
            .map(|i| Capability::Unknown {
                code: 200,
                value: Bytes::from(vec![i; 10]),
            })
            .collect();
        let o = Open {
            my_as: 1,
            hold_time: 90,
            bgp_identifier: Ipv4Addr::LOCALHOST,
            capabilities: caps,
        };
        let mut out = BytesMut::new();
        o.encode_body(&mut out);
        let back = Open::decode_body(&out).unwrap();
        assert_eq!(back.capabilities.len(), 21);
    }
}
