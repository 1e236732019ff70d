//! Decode errors and the NOTIFICATION each one demands (RFC 4271 §6, RFC 7606, RFC 7313).

use bytes::Bytes;
use thiserror::Error;

use super::notification::{
    HeaderSubcode, Notification, NotificationError, OpenSubcode, RouteRefreshSubcode, UpdateSubcode,
};

/// Why a message could not be decoded. Every variant maps to exactly one NOTIFICATION
/// (`Notification::from(&err)`), so the session only has to send it and close.
///
/// UPDATE attribute errors that RFC 7606 handles without a session reset never show up here:
/// they decode to an [`Update`](super::Update) whose `error_handling` says what was done.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// RFC 4271 §6.1: the marker is not all ones → 1/1 Connection Not Synchronized.
    #[error("message header: marker is not all ones")]
    ConnectionNotSynchronized,
    /// RFC 4271 §6.1: the length field is out of range for the header or for the message
    /// type, or the buffer does not hold exactly that many octets → 1/2, data = the length.
    #[error("message header: bad message length {length}")]
    BadMessageLength { length: u16 },
    /// RFC 4271 §6.1: unknown message type → 1/3, data = the type.
    #[error("message header: bad message type {msg_type}")]
    BadMessageType { msg_type: u8 },

    /// RFC 4271 §6.2: version is not 4 → 2/1, data = 2-octet largest supported version (4).
    #[error("OPEN: unsupported version {version}")]
    UnsupportedVersionNumber { version: u8 },
    /// RFC 7607 §2: AS 0 in My Autonomous System or the 4-octet AS capability → 2/2.
    #[error("OPEN: bad peer AS {asn}")]
    BadPeerAs { asn: u32 },
    /// RFC 6286 §2.2: a BGP Identifier of 0 → 2/3.
    #[error("OPEN: bad BGP identifier 0.0.0.0")]
    BadBgpIdentifier,
    /// RFC 4271 §6.2: an optional parameter type we do not know → 2/4.
    #[error("OPEN: unsupported optional parameter type {param_type}")]
    UnsupportedOptionalParameter { param_type: u8 },
    /// RFC 4271 §6.2: hold time of 1 or 2 seconds → 2/6.
    #[error("OPEN: unacceptable hold time {hold_time}")]
    UnacceptableHoldTime { hold_time: u16 },
    /// RFC 4271 §4.5: an OPEN whose optional parameters or capabilities do not parse (lengths
    /// inconsistent, a known capability of the wrong size); no subcode fits → 2/0 Unspecific.
    #[error("OPEN: malformed optional parameters: {detail}")]
    MalformedOpen { detail: &'static str },

    /// RFC 4271 §6.3, RFC 7606 §4: Withdrawn Routes Length or Total Path Attribute Length
    /// overruns the message, or MP_REACH_NLRI / MP_UNREACH_NLRI appears twice
    /// (RFC 7606 §3 g) → 3/1 Malformed Attribute List.
    #[error("UPDATE: malformed attribute list: {detail}")]
    MalformedAttributeList { detail: &'static str },
    /// RFC 4271 §6.3: a well-known (non-optional) attribute we do not know → 3/2, data = the
    /// attribute.
    #[error("UPDATE: unrecognized well-known attribute {type_code}")]
    UnrecognizedWellKnownAttribute { type_code: u8, attribute: Bytes },
    /// RFC 4271 §6.3: a flags error on an attribute for which RFC 7606 keeps the session reset
    /// (MP_REACH_NLRI / MP_UNREACH_NLRI) → 3/4, data = the attribute.
    #[error("UPDATE: attribute flags error on type {type_code}")]
    AttributeFlagsError { type_code: u8, attribute: Bytes },
    /// RFC 7606 §7.11 / §5.3: MP_REACH_NLRI / MP_UNREACH_NLRI malformed (next hop length,
    /// NLRI that do not parse): the NLRI cannot be located, so the session is reset → 3/9
    /// Optional Attribute Error (the subcode RFC 4760 §7 names), data = the attribute.
    #[error("UPDATE: malformed optional attribute {type_code}: {detail}")]
    OptionalAttributeError {
        type_code: u8,
        attribute: Bytes,
        detail: &'static str,
    },
    /// RFC 4271 §6.3, RFC 7606 §5.3: withdrawn routes or NLRI field syntactically wrong
    /// (prefix length > 32, prefix overrunning the field) → 3/10 Invalid Network Field.
    #[error("UPDATE: invalid network field: {detail}")]
    InvalidNetworkField { detail: &'static str },

    /// RFC 7313 §5: ROUTE-REFRESH whose length is not 23 → 7/1 Invalid Message Length, data =
    /// the whole message.
    #[error("ROUTE-REFRESH: invalid message length {length}")]
    RouteRefreshInvalidLength { length: u16, message: Bytes },
}

impl From<&DecodeError> for Notification {
    /// The (code, subcode, data) RFC 4271 §6.1–6.3 (and RFC 7313 §5) prescribe for the error.
    fn from(e: &DecodeError) -> Self {
        use DecodeError as E;
        let (error, data): (NotificationError, Bytes) = match e {
            E::ConnectionNotSynchronized => (
                NotificationError::MessageHeader(HeaderSubcode::ConnectionNotSynchronized),
                Bytes::new(),
            ),
            E::BadMessageLength { length } => (
                NotificationError::MessageHeader(HeaderSubcode::BadMessageLength),
                Bytes::copy_from_slice(&length.to_be_bytes()),
            ),
            E::BadMessageType { msg_type } => (
                NotificationError::MessageHeader(HeaderSubcode::BadMessageType),
                Bytes::copy_from_slice(&[*msg_type]),
            ),
            E::UnsupportedVersionNumber { .. } => (
                NotificationError::Open(OpenSubcode::UnsupportedVersionNumber),
                Bytes::from_static(&[0, 4]),
            ),
            E::BadPeerAs { .. } => (
                NotificationError::Open(OpenSubcode::BadPeerAs),
                Bytes::new(),
            ),
            E::BadBgpIdentifier => (
                NotificationError::Open(OpenSubcode::BadBgpIdentifier),
                Bytes::new(),
            ),
            E::UnsupportedOptionalParameter { .. } => (
                NotificationError::Open(OpenSubcode::UnsupportedOptionalParameter),
                Bytes::new(),
            ),
            E::UnacceptableHoldTime { .. } => (
                NotificationError::Open(OpenSubcode::UnacceptableHoldTime),
                Bytes::new(),
            ),
            E::MalformedOpen { .. } => (
                NotificationError::Open(OpenSubcode::Unspecific),
                Bytes::new(),
            ),
            E::MalformedAttributeList { .. } => (
                NotificationError::Update(UpdateSubcode::MalformedAttributeList),
                Bytes::new(),
            ),
            E::UnrecognizedWellKnownAttribute { attribute, .. } => (
                NotificationError::Update(UpdateSubcode::UnrecognizedWellKnownAttribute),
                attribute.clone(),
            ),
            E::AttributeFlagsError { attribute, .. } => (
                NotificationError::Update(UpdateSubcode::AttributeFlagsError),
                attribute.clone(),
            ),
            E::OptionalAttributeError { attribute, .. } => (
                NotificationError::Update(UpdateSubcode::OptionalAttributeError),
                attribute.clone(),
            ),
            E::InvalidNetworkField { .. } => (
                NotificationError::Update(UpdateSubcode::InvalidNetworkField),
                Bytes::new(),
            ),
            E::RouteRefreshInvalidLength { message, .. } => (
                NotificationError::RouteRefresh(RouteRefreshSubcode::InvalidMessageLength),
                message.clone(),
            ),
        };
        Notification { error, data }
    }
}

impl From<DecodeError> for Notification {
    fn from(e: DecodeError) -> Self {
        Notification::from(&e)
    }
}
