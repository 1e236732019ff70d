//! UPDATE (RFC 4271 §4.3), with the error handling of RFC 7606: a malformed attribute that
//! does not break the message's framing yields an [`Update`] whose `attribute_errors` say what
//! was done, instead of a session reset.

use bytes::{BufMut, BytesMut};
use nom::bytes::complete::take;
use nom::number::complete::be_u16;

use super::attributes::{
    self, AttributeError, MpUnreach, PathAttributes, Rfc7606Action, type_code as tc,
};
use super::prefix::{self, Ipv4Prefix, Prefix};
use super::{AfiSafi, DecodeContext, DecodeError, EncodeContext, NomResult};

/// An UPDATE message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Withdrawn Routes field (IPv4 unicast).
    pub withdrawn: Vec<Ipv4Prefix>,
    pub attributes: PathAttributes,
    /// NLRI field (IPv4 unicast).
    pub nlri: Vec<Ipv4Prefix>,
    /// Malformed attributes handled per RFC 7606 (never encoded). If any says
    /// [`Rfc7606Action::TreatAsWithdraw`], every NLRI of this UPDATE must be handled as
    /// withdrawn: use [`Update::announced`] and [`Update::withdrawals`], which do that.
    pub attribute_errors: Vec<AttributeError>,
}

impl Update {
    /// The End-of-RIB marker for a family (RFC 4724 §2): an empty UPDATE for IPv4 unicast,
    /// an UPDATE with only an empty MP_UNREACH_NLRI otherwise.
    pub fn end_of_rib(afi_safi: AfiSafi) -> Self {
        let mut u = Update::default();
        if afi_safi != AfiSafi::IPV4_UNICAST {
            u.attributes.mp_unreach = Some(MpUnreach {
                afi_safi,
                withdrawn: Vec::new(),
            });
        }
        u
    }

    /// Which family's End-of-RIB this UPDATE is, if it is one (RFC 4724 §2).
    pub fn as_end_of_rib(&self) -> Option<AfiSafi> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() || !self.attribute_errors.is_empty()
        {
            return None;
        }
        let a = &self.attributes;
        if a.is_empty() {
            return Some(AfiSafi::IPV4_UNICAST);
        }
        let only_unreach = PathAttributes {
            mp_unreach: None,
            ..a.clone()
        }
        .is_empty();
        match &a.mp_unreach {
            Some(u) if only_unreach && u.withdrawn.is_empty() => Some(u.afi_safi),
            _ => None,
        }
    }

    /// RFC 7606 §2: whether the UPDATE is to be treated as a withdrawal of all its NLRI.
    pub fn treat_as_withdraw(&self) -> bool {
        self.attribute_errors
            .iter()
            .any(|e| e.action == Rfc7606Action::TreatAsWithdraw)
    }

    /// Every prefix this UPDATE announces with `attributes` (NLRI field and MP_REACH_NLRI);
    /// none when it is to be treated as withdraw.
    pub fn announced(&self) -> Vec<Prefix> {
        if self.treat_as_withdraw() {
            return Vec::new();
        }
        self.reachable()
    }

    /// Every prefix this UPDATE withdraws: Withdrawn Routes, MP_UNREACH_NLRI and, when it is
    /// to be treated as withdraw (RFC 7606 §2), its NLRI and MP_REACH_NLRI too.
    pub fn withdrawals(&self) -> Vec<Prefix> {
        let mut v: Vec<Prefix> = self.withdrawn.iter().copied().map(Prefix::V4).collect();
        if let Some(u) = &self.attributes.mp_unreach {
            v.extend(u.withdrawn.iter().copied());
        }
        if self.treat_as_withdraw() {
            v.extend(self.reachable());
        }
        v
    }

    fn reachable(&self) -> Vec<Prefix> {
        let mut v: Vec<Prefix> = self.nlri.iter().copied().map(Prefix::V4).collect();
        if let Some(r) = &self.attributes.mp_reach {
            v.extend(r.nlri.iter().copied());
        }
        v
    }

    /// Decodes the body after the header (RFC 4271 §4.3, §6.3; RFC 7606).
    pub(crate) fn decode_body(body: &[u8], ctx: &DecodeContext) -> Result<Self, DecodeError> {
        // RFC 4271 §6.3: lengths overrunning the message → Malformed Attribute List
        // (RFC 7606 §5.3 keeps this a session reset: the NLRI cannot be located).
        let (rest, withdrawn) =
            length_prefixed(body).map_err(|_| DecodeError::MalformedAttributeList {
                detail: "Withdrawn Routes Length overruns the message",
            })?;
        let (nlri, attrs) =
            length_prefixed(rest).map_err(|_| DecodeError::MalformedAttributeList {
                detail: "Total Path Attribute Length overruns the message",
            })?;
        let withdrawn = prefix::decode_ipv4_prefixes(withdrawn).map_err(|_| {
            DecodeError::InvalidNetworkField {
                detail: "withdrawn routes do not parse",
            }
        })?;
        let nlri =
            prefix::decode_ipv4_prefixes(nlri).map_err(|_| DecodeError::InvalidNetworkField {
                detail: "NLRI do not parse",
            })?;
        let decoded = attributes::decode_attributes(attrs, ctx)?;
        let mut errors = decoded.errors;
        let a = decoded.attrs;

        // RFC 7606 §3 (d): a missing well-known mandatory attribute → treat-as-withdraw. They
        // are mandatory only when the UPDATE carries NLRI (RFC 4271 §5, RFC 4760 §4: an
        // UPDATE with only MP_UNREACH_NLRI needs no other attribute), and NEXT_HOP only for
        // NLRI in the NLRI field (RFC 4760 §3).
        if !nlri.is_empty() || a.mp_reach.is_some() {
            let mut required = vec![tc::ORIGIN, tc::AS_PATH];
            if !nlri.is_empty() {
                required.push(tc::NEXT_HOP);
            }
            for t in required {
                if !decoded.seen[usize::from(t)] {
                    errors.push(AttributeError {
                        type_code: t,
                        action: Rfc7606Action::TreatAsWithdraw,
                        reason: "RFC 7606 §3 (d): missing well-known mandatory attribute",
                    });
                }
            }
        }
        Ok(Update {
            withdrawn,
            attributes: a,
            nlri,
            attribute_errors: errors,
        })
    }

    pub(crate) fn encode_body(&self, ctx: &EncodeContext, out: &mut BytesMut) {
        let mut w = BytesMut::new();
        self.withdrawn
            .iter()
            .for_each(|p| prefix::encode_ipv4_prefix(p, &mut w));
        out.put_u16(w.len() as u16);
        out.put_slice(&w);
        let mut a = BytesMut::new();
        attributes::encode_attributes(&self.attributes, ctx, &mut a);
        out.put_u16(a.len() as u16);
        out.put_slice(&a);
        self.nlri
            .iter()
            .for_each(|p| prefix::encode_ipv4_prefix(p, out));
    }
}

/// A 2-octet length and that many octets.
fn length_prefixed(i: &[u8]) -> NomResult<'_, &[u8]> {
    let (i, len) = be_u16(i)?;
    take(len)(i)
}
