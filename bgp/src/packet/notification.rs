//! NOTIFICATION (RFC 4271 §4.5) with the error codes and subcodes of RFC 4271 §4.5 and §6,
//! RFC 4486 / RFC 8538 / RFC 9384 (Cease), RFC 6608 (FSM) and RFC 7313 (ROUTE-REFRESH).

use bytes::{BufMut, Bytes, BytesMut};

use super::DecodeError;

macro_rules! subcodes {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $val:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $var,)*
            /// A subcode this codec does not name; kept as received.
            Other(u8),
        }
        impl From<u8> for $name {
            fn from(v: u8) -> Self {
                match v { $($val => Self::$var,)* other => Self::Other(other) }
            }
        }
        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                match v { $($name::$var => $val,)* $name::Other(other) => other }
            }
        }
    };
}

subcodes!(
    /// RFC 4271 §4.5 Message Header Error subcodes (code 1).
    HeaderSubcode {
        Unspecific = 0,
        ConnectionNotSynchronized = 1,
        BadMessageLength = 2,
        BadMessageType = 3,
    }
);

subcodes!(
    /// RFC 4271 §4.5 OPEN Message Error subcodes (code 2); 7 is RFC 5492 §5.
    OpenSubcode {
        Unspecific = 0,
        UnsupportedVersionNumber = 1,
        BadPeerAs = 2,
        BadBgpIdentifier = 3,
        UnsupportedOptionalParameter = 4,
        UnacceptableHoldTime = 6,
        UnsupportedCapability = 7,
    }
);

subcodes!(
    /// RFC 4271 §4.5 UPDATE Message Error subcodes (code 3).
    UpdateSubcode {
        Unspecific = 0,
        MalformedAttributeList = 1,
        UnrecognizedWellKnownAttribute = 2,
        MissingWellKnownAttribute = 3,
        AttributeFlagsError = 4,
        AttributeLengthError = 5,
        InvalidOriginAttribute = 6,
        InvalidNextHopAttribute = 8,
        OptionalAttributeError = 9,
        InvalidNetworkField = 10,
        MalformedAsPath = 11,
    }
);

subcodes!(
    /// RFC 6608 §3 Finite State Machine Error subcodes (code 5).
    FsmSubcode {
        Unspecified = 0,
        UnexpectedMessageInOpenSent = 1,
        UnexpectedMessageInOpenConfirm = 2,
        UnexpectedMessageInEstablished = 3,
    }
);

subcodes!(
    /// RFC 4486 §4 Cease subcodes (code 6), plus RFC 8538 §5 Hard Reset and RFC 9384 BFD Down.
    CeaseSubcode {
        Unspecific = 0,
        MaximumPrefixesReached = 1,
        AdministrativeShutdown = 2,
        PeerDeconfigured = 3,
        AdministrativeReset = 4,
        ConnectionRejected = 5,
        OtherConfigurationChange = 6,
        ConnectionCollisionResolution = 7,
        OutOfResources = 8,
        HardReset = 9,
        BfdDown = 10,
    }
);

subcodes!(
    /// RFC 7313 §5 ROUTE-REFRESH Message Error subcodes (code 7).
    RouteRefreshSubcode {
        Reserved = 0,
        InvalidMessageLength = 1,
    }
);

/// Error code and subcode of a NOTIFICATION (RFC 4271 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationError {
    /// 1: Message Header Error (§6.1).
    MessageHeader(HeaderSubcode),
    /// 2: OPEN Message Error (§6.2).
    Open(OpenSubcode),
    /// 3: UPDATE Message Error (§6.3).
    Update(UpdateSubcode),
    /// 4: Hold Timer Expired (§6.5); the subcode is sent as received.
    HoldTimerExpired(u8),
    /// 5: Finite State Machine Error (§6.6, RFC 6608).
    Fsm(FsmSubcode),
    /// 6: Cease (§6.7, RFC 4486).
    Cease(CeaseSubcode),
    /// 7: ROUTE-REFRESH Message Error (RFC 7313 §5).
    RouteRefresh(RouteRefreshSubcode),
    /// Any other code, kept as received.
    Other { code: u8, subcode: u8 },
}

impl NotificationError {
    /// Builds the typed form from the two wire octets.
    pub fn from_codes(code: u8, subcode: u8) -> Self {
        match code {
            1 => Self::MessageHeader(subcode.into()),
            2 => Self::Open(subcode.into()),
            3 => Self::Update(subcode.into()),
            4 => Self::HoldTimerExpired(subcode),
            5 => Self::Fsm(subcode.into()),
            6 => Self::Cease(subcode.into()),
            7 => Self::RouteRefresh(subcode.into()),
            code => Self::Other { code, subcode },
        }
    }

    /// The Error Code octet.
    pub fn code(&self) -> u8 {
        match self {
            Self::MessageHeader(_) => 1,
            Self::Open(_) => 2,
            Self::Update(_) => 3,
            Self::HoldTimerExpired(_) => 4,
            Self::Fsm(_) => 5,
            Self::Cease(_) => 6,
            Self::RouteRefresh(_) => 7,
            Self::Other { code, .. } => *code,
        }
    }

    /// The Error Subcode octet.
    pub fn subcode(&self) -> u8 {
        match *self {
            Self::MessageHeader(s) => s.into(),
            Self::Open(s) => s.into(),
            Self::Update(s) => s.into(),
            Self::HoldTimerExpired(s) => s,
            Self::Fsm(s) => s.into(),
            Self::Cease(s) => s.into(),
            Self::RouteRefresh(s) => s.into(),
            Self::Other { subcode, .. } => subcode,
        }
    }
}

/// A NOTIFICATION message (RFC 4271 §4.5): the error and its variable-length data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub error: NotificationError,
    pub data: Bytes,
}

impl Notification {
    /// A NOTIFICATION without data.
    pub fn new(error: NotificationError) -> Self {
        Notification {
            error,
            data: Bytes::new(),
        }
    }

    /// Cease / Administrative Shutdown or Reset with a Shutdown Communication
    /// (RFC 9003 §2: one length octet, then at most 255 octets of UTF-8).
    pub fn shutdown(subcode: CeaseSubcode, message: &str) -> Self {
        let mut msg = message.as_bytes();
        if msg.len() > 255 {
            let mut end = 255;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            msg = &msg[..end];
        }
        let mut data = BytesMut::with_capacity(1 + msg.len());
        data.put_u8(msg.len() as u8);
        data.put_slice(msg);
        Notification {
            error: NotificationError::Cease(subcode),
            data: data.freeze(),
        }
    }

    /// The Shutdown Communication of a Cease / Administrative Shutdown or Reset
    /// (RFC 9003 §2), if the data holds a well-formed one.
    pub fn shutdown_communication(&self) -> Option<&str> {
        match self.error {
            NotificationError::Cease(
                CeaseSubcode::AdministrativeShutdown | CeaseSubcode::AdministrativeReset,
            ) => {
                let (&len, rest) = self.data.split_first()?;
                std::str::from_utf8(rest.get(..usize::from(len))?).ok()
            }
            _ => None,
        }
    }

    /// Decodes the body (after the header). RFC 4271 §6.1: a NOTIFICATION is at least 21
    /// octets, which [`super::Message::decode`] checks before calling this.
    pub(crate) fn decode_body(body: &[u8]) -> Result<Self, DecodeError> {
        match body {
            [code, subcode, data @ ..] => Ok(Notification {
                error: NotificationError::from_codes(*code, *subcode),
                data: Bytes::copy_from_slice(data),
            }),
            _ => Err(DecodeError::BadMessageLength {
                length: (19 + body.len()) as u16,
            }),
        }
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        out.put_u8(self.error.code());
        out.put_u8(self.error.subcode());
        out.put_slice(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..=9u8 {
            for subcode in 0..=12u8 {
                let e = NotificationError::from_codes(code, subcode);
                assert_eq!((e.code(), e.subcode()), (code, subcode));
            }
        }
        assert_eq!(
            NotificationError::from_codes(6, 4),
            NotificationError::Cease(CeaseSubcode::AdministrativeReset)
        );
    }

    #[test]
    fn shutdown_communication_is_truncated_on_a_char_boundary() {
        let long = "é".repeat(200);
        let n = Notification::shutdown(CeaseSubcode::AdministrativeReset, &long);
        assert_eq!(n.data[0], 254);
        assert_eq!(n.shutdown_communication().unwrap().chars().count(), 127);
    }
}
