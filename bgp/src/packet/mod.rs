//! BGP-4 wire codec (RFC 4271 §4): pure functions from bytes to [`Message`] and back, no I/O.
//!
//! - [`frame_len`] finds where the next message ends in a byte stream;
//! - [`Message::decode`] decodes exactly one message, header included, under the
//!   [`DecodeContext`] the session negotiated;
//! - [`Message::encode`] encodes one under an [`EncodeContext`];
//! - a [`DecodeError`] becomes the NOTIFICATION RFC 4271 §6 demands with
//!   `Notification::from(&err)`. UPDATE attribute errors that RFC 7606 handles without a
//!   reset are not errors: they come back inside the [`Update`].
//!
//! ADD-PATH (RFC 7911) is not supported: NLRI carry no path identifier.

mod attributes;
mod error;
mod notification;
mod open;
mod prefix;
mod route_refresh;
mod update;

use bytes::{BufMut, Bytes, BytesMut};

pub use attributes::{
    Aggregator, AsPath, AsPathSegment, AttributeError, Community, LargeCommunity, MpNextHop,
    MpReach, MpUnreach, Origin, PathAttributes, RawAttribute, Rfc7606Action, SegmentType, flags,
    type_code,
};
pub use error::DecodeError;
pub use notification::{
    CeaseSubcode, FsmSubcode, HeaderSubcode, Notification, NotificationError, OpenSubcode,
    RouteRefreshSubcode, UpdateSubcode,
};
pub use open::{Capability, GracefulRestart, GracefulRestartFamily, Open};
pub use prefix::{
    Ipv4Prefix, Ipv6Prefix, Prefix, PrefixDecodeError, PrefixLengthError, decode_ipv4_prefixes,
    decode_ipv6_prefixes, encode_prefix,
};
pub use route_refresh::{RouteRefresh, RouteRefreshSubtype};
pub use update::Update;

/// nom results in this codec carry no error detail: each caller maps a failure to the
/// [`DecodeError`] its RFC section prescribes.
pub(crate) type NomResult<'a, T> = nom::IResult<&'a [u8], T, ()>;

/// AS_TRANS (RFC 6793 §9): stands in for a 4-octet AS number towards 2-octet speakers.
pub const AS_TRANS: u16 = 23456;
/// Header length: marker, length, type (RFC 4271 §4.1).
pub const HEADER_LEN: usize = 19;
/// Maximum message size without extended messages (RFC 4271 §4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Maximum message size with extended messages (RFC 8654 §4).
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;

/// Message types (RFC 4271 §4.1, RFC 2918 §3).
pub mod message_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// An address family: AFI (RFC 4760 §3, IANA "Address Family Numbers") and SAFI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AfiSafi {
    pub afi: u16,
    pub safi: u8,
}

impl AfiSafi {
    pub const IPV4_UNICAST: AfiSafi = AfiSafi { afi: 1, safi: 1 };
    pub const IPV6_UNICAST: AfiSafi = AfiSafi { afi: 2, safi: 1 };
}

/// What the session negotiated that changes how messages are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeContext {
    /// Both sides sent the 4-octet AS capability (RFC 6793 §4): AS_PATH and AGGREGATOR carry
    /// 4-octet AS numbers. When false, AS4_PATH / AS4_AGGREGATOR are merged in (§4.2.3).
    pub four_octet_asn: bool,
    /// Both sides sent the extended message capability (RFC 8654): up to 65535 octets.
    pub extended_messages: bool,
    /// Families both sides announced; MP_REACH/MP_UNREACH of others are ignored
    /// (RFC 4760 §7) and kept raw in [`PathAttributes::unknown`].
    pub families: Vec<AfiSafi>,
}

impl Default for DecodeContext {
    /// Before the OPENs are exchanged: 2-octet AS, 4096 octets, IPv4 unicast.
    fn default() -> Self {
        DecodeContext {
            four_octet_asn: false,
            extended_messages: false,
            families: vec![AfiSafi::IPV4_UNICAST],
        }
    }
}

impl DecodeContext {
    /// What two OPENs negotiate: each capability counts only if both sent it.
    pub fn negotiated(local: &Open, remote: &Open) -> Self {
        let theirs = remote.families();
        DecodeContext {
            four_octet_asn: local.four_octet_asn().is_some() && remote.four_octet_asn().is_some(),
            extended_messages: local.extended_message() && remote.extended_message(),
            families: local
                .families()
                .into_iter()
                .filter(|f| theirs.contains(f))
                .collect(),
        }
    }

    /// Largest message accepted (RFC 4271 §4.1, RFC 8654 §4).
    pub fn max_message_len(&self) -> usize {
        if self.extended_messages {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }
}

/// What the session negotiated that changes how messages are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EncodeContext {
    /// Write 4-octet AS numbers; when false, AS_TRANS plus AS4_PATH / AS4_AGGREGATOR
    /// (RFC 6793 §4.2.2).
    pub four_octet_asn: bool,
    /// The peer accepts messages up to 65535 octets (RFC 8654). The encoder does not split
    /// UPDATEs: callers keep them under [`EncodeContext::max_message_len`].
    pub extended_messages: bool,
}

impl EncodeContext {
    pub fn max_message_len(&self) -> usize {
        if self.extended_messages {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }
}

impl From<&DecodeContext> for EncodeContext {
    fn from(c: &DecodeContext) -> Self {
        EncodeContext {
            four_octet_asn: c.four_octet_asn,
            extended_messages: c.extended_messages,
        }
    }
}

/// A BGP message.
// UPDATE is by far the most common message and is consumed right away, so boxing it would
// cost an allocation per message for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// How many octets the next message in `buf` takes, once they have all arrived.
///
/// `Ok(None)`: not enough data yet. `Err`: the stream is broken (bad marker or a length out
/// of range, RFC 4271 §6.1) and the session must send the NOTIFICATION and close.
pub fn frame_len(buf: &[u8], ctx: &DecodeContext) -> Result<Option<usize>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let length = check_header(buf, ctx)?;
    Ok((buf.len() >= usize::from(length)).then_some(usize::from(length)))
}

/// Marker and length checks of RFC 4271 §6.1; returns the length field.
fn check_header(buf: &[u8], ctx: &DecodeContext) -> Result<u16, DecodeError> {
    if buf[..16].iter().any(|&b| b != 0xff) {
        return Err(DecodeError::ConnectionNotSynchronized);
    }
    let length = u16::from_be_bytes([buf[16], buf[17]]);
    if usize::from(length) < HEADER_LEN || usize::from(length) > ctx.max_message_len() {
        return Err(DecodeError::BadMessageLength { length });
    }
    Ok(length)
}

impl Message {
    /// Decodes exactly one message, header included (`buf` as delimited by [`frame_len`]).
    pub fn decode(buf: &[u8], ctx: &DecodeContext) -> Result<Message, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::BadMessageLength {
                length: buf.len() as u16,
            });
        }
        let length = check_header(buf, ctx)?;
        if usize::from(length) != buf.len() {
            return Err(DecodeError::BadMessageLength { length });
        }
        let msg_type = buf[18];
        let body = &buf[HEADER_LEN..];
        // RFC 4271 §6.1: per-type minimum (and for KEEPALIVE exact) lengths.
        let bad_len = Err(DecodeError::BadMessageLength { length });
        match msg_type {
            message_type::OPEN => {
                if buf.len() < 29 {
                    return bad_len;
                }
                Open::decode_body(body).map(Message::Open)
            }
            message_type::UPDATE => {
                if buf.len() < 23 {
                    return bad_len;
                }
                Update::decode_body(body, ctx).map(Message::Update)
            }
            message_type::NOTIFICATION => {
                if buf.len() < 21 {
                    return bad_len;
                }
                Notification::decode_body(body).map(Message::Notification)
            }
            message_type::KEEPALIVE => {
                if buf.len() != HEADER_LEN {
                    return bad_len;
                }
                Ok(Message::Keepalive)
            }
            message_type::ROUTE_REFRESH => match <&[u8; 4]>::try_from(body) {
                Ok(b) => Ok(Message::RouteRefresh(RouteRefresh::decode_body(b))),
                // RFC 7313 §5: 7/1 with the whole message as data.
                Err(_) => Err(DecodeError::RouteRefreshInvalidLength {
                    length,
                    message: Bytes::copy_from_slice(buf),
                }),
            },
            msg_type => Err(DecodeError::BadMessageType { msg_type }),
        }
    }

    /// Encodes the message, header included.
    pub fn encode(&self, ctx: &EncodeContext) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_slice(&[0xff; 16]);
        out.put_u16(0);
        out.put_u8(self.message_type());
        match self {
            Message::Open(o) => o.encode_body(&mut out),
            Message::Update(u) => u.encode_body(ctx, &mut out),
            Message::Notification(n) => n.encode_body(&mut out),
            Message::Keepalive => {}
            Message::RouteRefresh(r) => r.encode_body(&mut out),
        }
        let len = out.len().min(0xffff) as u16;
        out[16..18].copy_from_slice(&len.to_be_bytes());
        out.freeze()
    }

    /// The type octet (RFC 4271 §4.1).
    pub fn message_type(&self) -> u8 {
        match self {
            Message::Open(_) => message_type::OPEN,
            Message::Update(_) => message_type::UPDATE,
            Message::Notification(_) => message_type::NOTIFICATION,
            Message::Keepalive => message_type::KEEPALIVE,
            Message::RouteRefresh(_) => message_type::ROUTE_REFRESH,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn negotiation_takes_what_both_sent() {
        let a = Open::new(
            65001,
            90,
            Ipv4Addr::new(192, 0, 2, 1),
            vec![
                Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
                Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
                Capability::FourOctetAsn(65001),
                Capability::ExtendedMessage,
            ],
        );
        let b = Open::new(
            65002,
            90,
            Ipv4Addr::new(192, 0, 2, 2),
            vec![
                Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
                Capability::FourOctetAsn(65002),
            ],
        );
        let ctx = DecodeContext::negotiated(&a, &b);
        assert!(ctx.four_octet_asn && !ctx.extended_messages);
        assert_eq!(ctx.families, vec![AfiSafi::IPV6_UNICAST]);
        assert_eq!(ctx.max_message_len(), 4096);
    }

    #[test]
    fn keepalive_frames_and_round_trips() {
        let ctx = DecodeContext::default();
        let b = Message::Keepalive.encode(&EncodeContext::default());
        assert_eq!(b.len(), 19);
        assert_eq!(frame_len(&b[..18], &ctx), Ok(None));
        assert_eq!(frame_len(&b, &ctx), Ok(Some(19)));
        assert_eq!(Message::decode(&b, &ctx), Ok(Message::Keepalive));
    }
}
