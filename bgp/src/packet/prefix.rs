//! IPv4 and IPv6 prefixes as carried in NLRI and withdrawn routes (RFC 4271 §4.3,
//! RFC 4760 §5): a length octet, then the fewest octets that hold that many bits.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};
use thiserror::Error;

/// A prefix length longer than the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("prefix length {len} exceeds {max}")]
pub struct PrefixLengthError {
    pub len: u8,
    pub max: u8,
}

/// An IPv4 prefix; the host bits are always zero, so equal prefixes compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

/// An IPv6 prefix; the host bits are always zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Prefix {
    addr: Ipv6Addr,
    len: u8,
}

/// A prefix of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prefix {
    V4(Ipv4Prefix),
    V6(Ipv6Prefix),
}

impl Ipv4Prefix {
    /// The prefix `addr/len`, with host bits cleared; rejects `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, PrefixLengthError> {
        if len > 32 {
            return Err(PrefixLengthError { len, max: 32 });
        }
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Ok(Ipv4Prefix {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            len,
        })
    }
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
    /// True for the default route 0.0.0.0/0.
    pub fn is_default(&self) -> bool {
        self.len == 0
    }
    /// Whether `addr` lies inside this prefix.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        Ipv4Prefix::new(addr, self.len)
            .map(|p| p.addr == self.addr)
            .unwrap_or(false)
    }
}

impl Ipv6Prefix {
    /// The prefix `addr/len`, with host bits cleared; rejects `len > 128`.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, PrefixLengthError> {
        if len > 128 {
            return Err(PrefixLengthError { len, max: 128 });
        }
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        Ok(Ipv6Prefix {
            addr: Ipv6Addr::from(u128::from(addr) & mask),
            len,
        })
    }
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
    pub fn is_default(&self) -> bool {
        self.len == 0
    }
    pub fn contains(&self, addr: Ipv6Addr) -> bool {
        Ipv6Prefix::new(addr, self.len)
            .map(|p| p.addr == self.addr)
            .unwrap_or(false)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}
impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}
impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prefix::V4(p) => p.fmt(f),
            Prefix::V6(p) => p.fmt(f),
        }
    }
}
impl From<Ipv4Prefix> for Prefix {
    fn from(p: Ipv4Prefix) -> Self {
        Prefix::V4(p)
    }
}
impl From<Ipv6Prefix> for Prefix {
    fn from(p: Ipv6Prefix) -> Self {
        Prefix::V6(p)
    }
}

/// Why a run of encoded prefixes could not be read (RFC 7606 §5.3: this resets the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PrefixDecodeError {
    #[error("prefix length {0} too long for the address family")]
    BadLength(u8),
    #[error("prefix overruns the field")]
    Truncated,
}

/// Reads one `(length, prefix octets)` pair with at most `max_len` bits; returns the length, the
/// address octets zero-padded to 16, and the rest of the input. Trailing bits past the length
/// are ignored, as RFC 4271 §4.3 says they are irrelevant.
fn take_prefix(buf: &[u8], max_len: u8) -> Result<(u8, [u8; 16], &[u8]), PrefixDecodeError> {
    let (&len, rest) = buf.split_first().ok_or(PrefixDecodeError::Truncated)?;
    if len > max_len {
        return Err(PrefixDecodeError::BadLength(len));
    }
    let n = usize::from(len).div_ceil(8);
    let octets = rest.get(..n).ok_or(PrefixDecodeError::Truncated)?;
    let mut addr = [0u8; 16];
    addr[..n].copy_from_slice(octets);
    Ok((len, addr, &rest[n..]))
}

/// Decodes a whole field of IPv4 prefixes (withdrawn routes, NLRI, MP NLRI with AFI 1).
pub fn decode_ipv4_prefixes(mut buf: &[u8]) -> Result<Vec<Ipv4Prefix>, PrefixDecodeError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (len, a, rest) = take_prefix(buf, 32)?;
        let addr = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
        out.push(Ipv4Prefix::new(addr, len).expect("length checked"));
        buf = rest;
    }
    Ok(out)
}

/// Decodes a whole field of IPv6 prefixes (MP NLRI with AFI 2).
pub fn decode_ipv6_prefixes(mut buf: &[u8]) -> Result<Vec<Ipv6Prefix>, PrefixDecodeError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (len, a, rest) = take_prefix(buf, 128)?;
        out.push(Ipv6Prefix::new(Ipv6Addr::from(a), len).expect("length checked"));
        buf = rest;
    }
    Ok(out)
}

/// Canonical encoding: the length, then exactly `ceil(len / 8)` octets, host bits zero.
pub fn encode_ipv4_prefix(p: &Ipv4Prefix, out: &mut BytesMut) {
    let n = usize::from(p.len).div_ceil(8);
    out.put_u8(p.len);
    out.put_slice(&p.addr.octets()[..n]);
}

/// Canonical encoding of an IPv6 prefix.
pub fn encode_ipv6_prefix(p: &Ipv6Prefix, out: &mut BytesMut) {
    let n = usize::from(p.len).div_ceil(8);
    out.put_u8(p.len);
    out.put_slice(&p.addr.octets()[..n]);
}

/// Canonical encoding of a prefix of either family.
pub fn encode_prefix(p: &Prefix, out: &mut BytesMut) {
    match p {
        Prefix::V4(p) => encode_ipv4_prefix(p, out),
        Prefix::V6(p) => encode_ipv6_prefix(p, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_cleared() {
        let p = Ipv4Prefix::new(Ipv4Addr::new(198, 18, 0, 77), 26).unwrap();
        assert_eq!(p.to_string(), "198.18.0.64/26");
        assert!(p.contains(Ipv4Addr::new(198, 18, 0, 100)));
        assert!(!p.contains(Ipv4Addr::new(198, 18, 0, 1)));
    }

    #[test]
    fn bad_lengths_are_rejected() {
        assert!(Ipv4Prefix::new(Ipv4Addr::UNSPECIFIED, 33).is_err());
        assert!(Ipv6Prefix::new(Ipv6Addr::UNSPECIFIED, 129).is_err());
        assert_eq!(
            decode_ipv4_prefixes(&[33, 1, 2, 3, 4, 5]),
            Err(PrefixDecodeError::BadLength(33))
        );
        assert_eq!(
            decode_ipv4_prefixes(&[24, 1, 2]),
            Err(PrefixDecodeError::Truncated)
        );
        assert_eq!(
            decode_ipv6_prefixes(&[129]),
            Err(PrefixDecodeError::BadLength(129))
        );
    }

    #[test]
    fn round_trip_and_trailing_bits() {
        let v = decode_ipv4_prefixes(&[0, 26, 198, 18, 0, 0x7f, 32, 1, 2, 3, 4]).unwrap();
        assert_eq!(v[0].to_string(), "0.0.0.0/0");
        assert_eq!(v[1].to_string(), "198.18.0.64/26");
        let mut out = BytesMut::new();
        v.iter().for_each(|p| encode_ipv4_prefix(p, &mut out));
        assert_eq!(&out[..], &[0, 26, 198, 18, 0, 0x40, 32, 1, 2, 3, 4]);
    }
}
