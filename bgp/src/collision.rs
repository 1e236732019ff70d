//! Connection collision detection and resolution (RFC 4271 §6.8), pure.
//!
//! Two BGP speakers that connect to each other at the same time end up with two TCP
//! connections, one initiated by each side. Each connection has its own [`crate::fsm::Fsm`].
//! When an OPEN arrives on one of them, the session layer calls [`resolve`] with the state of
//! the other one; if it names a connection to dump, the session layer feeds
//! [`crate::fsm::Input::OpenCollisionDump`] to that connection's FSM (instead of the OPEN, when
//! it is the connection the OPEN arrived on), which sends Cease 6/7 "Connection Collision
//! Resolution" and closes it.

use std::net::Ipv4Addr;

use crate::fsm::State;

/// Which side initiated a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// We connected to the peer (our `Output::Connect`, then `Tcp_CR_Acked`).
    Local,
    /// The peer connected to us (`TcpConnectionConfirmed`).
    Remote,
}

impl Origin {
    /// The other side.
    pub fn other(self) -> Origin {
        match self {
            Origin::Local => Origin::Remote,
            Origin::Remote => Origin::Local,
        }
    }
}

/// A speaker's identity as far as collision resolution goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speaker {
    pub router_id: Ipv4Addr,
    pub asn: u32,
}

/// The connection that is already there when an OPEN arrives on the other one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Existing {
    pub origin: Origin,
    pub state: State,
}

/// What to do about two connections to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// No collision to resolve: let the OPEN be processed.
    NoCollision,
    /// Feed `OpenCollisionDump` to the connection with this origin; the other one survives.
    Dump(Origin),
}

/// Which side's connection survives a collision (RFC 4271 §6.8 steps 1–3, RFC 6286 §2.3).
///
/// The BGP Identifiers are compared as unsigned 32-bit integers (host byte order); the
/// connection initiated by the speaker with the higher identifier survives. RFC 6286 §2.3 lets
/// two eBGP speakers share an identifier; then the connection initiated by the speaker with the
/// larger AS number survives. Equal identifier and AS cannot pass the §6.2 checks; we keep the
/// locally initiated connection then, so the answer is still deterministic.
pub fn survivor(local: Speaker, remote: Speaker) -> Origin {
    let l = u32::from(local.router_id);
    let r = u32::from(remote.router_id);
    if l != r {
        if l > r { Origin::Local } else { Origin::Remote }
    } else if remote.asn > local.asn {
        Origin::Remote
    } else {
        Origin::Local
    }
}

/// Decides a collision when an OPEN from `remote` arrives on the connection of origin
/// `open_on`, while the other connection to the same peer is `existing`.
///
/// Which existing connections are examined (RFC 4271 §6.8):
/// - OpenConfirm: always ("MUST examine all of its connections that are in the OpenConfirm
///   state").
/// - OpenSent: yes. The RFC allows it "if it knows the BGP Identifier of the peer by means
///   outside of the protocol"; both connections go to the same configured peer address, so
///   the identifier just received is that peer's.
/// - Established: CollisionDetectEstablishedState is off, so the Established session always
///   wins and the new connection is dumped ("the new connection is closed").
/// - Idle, Connect, Active: that connection has not reached OPEN exchange; no collision.
pub fn resolve(local: Speaker, remote: Speaker, open_on: Origin, existing: Existing) -> Resolution {
    debug_assert_ne!(
        open_on, existing.origin,
        "one FSM per connection: at most one connection of each origin"
    );
    match existing.state {
        State::Idle | State::Connect | State::Active => Resolution::NoCollision,
        State::Established => Resolution::Dump(open_on),
        State::OpenSent | State::OpenConfirm => Resolution::Dump(survivor(local, remote).other()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speaker(id: [u8; 4], asn: u32) -> Speaker {
        Speaker {
            router_id: Ipv4Addr::from(id),
            asn,
        }
    }

    #[test]
    fn higher_identifier_side_keeps_its_connection() {
        let low = speaker([192, 0, 2, 1], 64512);
        let high = speaker([192, 0, 2, 2], 64512);
        assert_eq!(survivor(high, low), Origin::Local);
        assert_eq!(survivor(low, high), Origin::Remote);
    }

    #[test]
    fn identifiers_compare_as_unsigned_integers() {
        // 128.0.0.1 > 127.255.255.255 only when compared unsigned (as i32 it would be negative).
        let big = speaker([128, 0, 0, 1], 64512);
        let small = speaker([127, 255, 255, 255], 64512);
        assert_eq!(survivor(big, small), Origin::Local);
        assert_eq!(survivor(small, big), Origin::Remote);
        // Octet order matters: 10.0.0.2 < 10.0.1.1.
        assert_eq!(
            survivor(speaker([10, 0, 0, 2], 1), speaker([10, 0, 1, 1], 1)),
            Origin::Remote
        );
    }

    #[test]
    fn equal_identifiers_fall_back_to_the_larger_as() {
        let a = speaker([192, 0, 2, 1], 64512);
        let b = speaker([192, 0, 2, 1], 65001);
        assert_eq!(survivor(a, b), Origin::Remote);
        assert_eq!(survivor(b, a), Origin::Local);
    }

    #[test]
    fn open_confirm_collision_dumps_the_connection_of_the_lower_side() {
        let local = speaker([192, 0, 2, 1], 64512);
        let remote = speaker([192, 0, 2, 2], 64512);
        // We initiated a connection that reached OpenConfirm; the peer's connection now brings
        // its OPEN. The peer has the higher identifier, so its connection survives and ours
        // gets Cease 6/7.
        let existing = Existing {
            origin: Origin::Local,
            state: State::OpenConfirm,
        };
        assert_eq!(
            resolve(local, remote, Origin::Remote, existing),
            Resolution::Dump(Origin::Local)
        );
        // Same race seen from the peer: it dumps the connection we initiated, the one the OPEN
        // (ours) arrived on.
        let existing = Existing {
            origin: Origin::Remote,
            state: State::OpenConfirm,
        };
        assert_eq!(
            resolve(remote, local, Origin::Local, existing),
            Resolution::Dump(Origin::Remote)
        );
    }

    #[test]
    fn open_sent_connections_are_examined_too() {
        let local = speaker([192, 0, 2, 9], 64512);
        let remote = speaker([192, 0, 2, 2], 64512);
        let existing = Existing {
            origin: Origin::Local,
            state: State::OpenSent,
        };
        assert_eq!(
            resolve(local, remote, Origin::Remote, existing),
            Resolution::Dump(Origin::Remote)
        );
    }

    #[test]
    fn established_session_always_wins() {
        let local = speaker([192, 0, 2, 9], 64512);
        let remote = speaker([192, 0, 2, 2], 64512);
        for open_on in [Origin::Local, Origin::Remote] {
            let existing = Existing {
                origin: open_on.other(),
                state: State::Established,
            };
            assert_eq!(
                resolve(local, remote, open_on, existing),
                Resolution::Dump(open_on)
            );
        }
    }

    #[test]
    fn connections_before_open_exchange_do_not_collide() {
        let local = speaker([192, 0, 2, 1], 64512);
        let remote = speaker([192, 0, 2, 2], 64512);
        for state in [State::Idle, State::Connect, State::Active] {
            let existing = Existing {
                origin: Origin::Local,
                state,
            };
            assert_eq!(
                resolve(local, remote, Origin::Remote, existing),
                Resolution::NoCollision
            );
        }
    }

    #[test]
    fn dumping_via_the_fsm_sends_cease_6_7() {
        use crate::fsm::{Fsm, FsmConfig, Input, Notification, Output};
        let local = speaker([192, 0, 2, 1], 64512);
        let remote = speaker([192, 0, 2, 2], 64512);
        let mut ours = Fsm::new(FsmConfig::new(64512, local.router_id, 64512));
        ours.process::<()>(Input::ManualStart);
        ours.process::<()>(Input::TcpCrAcked);
        let Resolution::Dump(Origin::Local) = resolve(
            local,
            remote,
            Origin::Remote,
            Existing {
                origin: Origin::Local,
                state: ours.state(),
            },
        ) else {
            panic!("the lower side's connection must be dumped");
        };
        let out = ours.process::<()>(Input::OpenCollisionDump);
        assert_eq!(out[0], Output::SendNotification(Notification::new(6, 7)));
        assert_eq!(ours.state(), State::Idle);
    }
}
