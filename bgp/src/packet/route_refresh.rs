//! ROUTE-REFRESH (RFC 2918 §3), with the Enhanced Route Refresh subtypes of RFC 7313 §3.

use bytes::{BufMut, BytesMut};

use super::AfiSafi;

/// The octet between AFI and SAFI: reserved (0) in RFC 2918, the message subtype in RFC 7313.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteRefreshSubtype {
    /// 0: a plain route refresh request.
    Request,
    /// 1: Beginning of Route Refresh (BoRR).
    Begin,
    /// 2: End of Route Refresh (EoRR).
    End,
    /// RFC 7313 §5: other values are ignored by the receiver; kept as received.
    Other(u8),
}

impl From<u8> for RouteRefreshSubtype {
    fn from(v: u8) -> Self {
        match v {
            0 => Self::Request,
            1 => Self::Begin,
            2 => Self::End,
            v => Self::Other(v),
        }
    }
}

impl From<RouteRefreshSubtype> for u8 {
    fn from(v: RouteRefreshSubtype) -> u8 {
        match v {
            RouteRefreshSubtype::Request => 0,
            RouteRefreshSubtype::Begin => 1,
            RouteRefreshSubtype::End => 2,
            RouteRefreshSubtype::Other(v) => v,
        }
    }
}

/// A ROUTE-REFRESH message: "send me your Adj-RIB-Out for this family again".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteRefresh {
    pub afi_safi: AfiSafi,
    pub subtype: RouteRefreshSubtype,
}

impl RouteRefresh {
    /// A plain RFC 2918 request.
    pub fn request(afi_safi: AfiSafi) -> Self {
        RouteRefresh {
            afi_safi,
            subtype: RouteRefreshSubtype::Request,
        }
    }

    /// The body is exactly 4 octets; [`super::Message::decode`] checked the length.
    pub(crate) fn decode_body(b: &[u8; 4]) -> Self {
        RouteRefresh {
            afi_safi: AfiSafi {
                afi: u16::from_be_bytes([b[0], b[1]]),
                safi: b[3],
            },
            subtype: b[2].into(),
        }
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        out.put_u16(self.afi_safi.afi);
        out.put_u8(self.subtype.into());
        out.put_u8(self.afi_safi.safi);
    }
}
