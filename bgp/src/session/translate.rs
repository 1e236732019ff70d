//! Pure translations between the wire codec ([`crate::packet`]) and the FSM ([`crate::fsm`]),
//! and the UPDATE checks the codec leaves to the session because they need to know the peer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;

use crate::fsm::{self, Capabilities, Input, OpenSummary};
use crate::packet::{
    self, AfiSafi, AttributeError, Capability, DecodeError, GracefulRestartFamily, MpNextHop,
    MpUnreach, NotificationError, Open, OpenSubcode, Prefix, Rfc7606Action, SegmentType, Update,
    UpdateSubcode, type_code,
};

/// What we advertise beyond what [`fsm::Capabilities`] summarises: the per-family graceful
/// restart flags (RFC 4724 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenExtras {
    /// Forwarding State (F) bit for every family in our Graceful Restart capability: our
    /// forwarding state (felix's routes) survived the restart of the speaker.
    pub forwarding_preserved: bool,
    /// Restart State (R) bit: we have just restarted (RFC 4724 §4.1).
    pub restarting: bool,
}

/// Our OPEN on the wire, from the FSM's summary of it.
pub fn open_from_summary(s: &OpenSummary, extras: &OpenExtras) -> Open {
    let c = &s.capabilities;
    let mut families = Vec::new();
    if c.ipv4_unicast {
        families.push(AfiSafi::IPV4_UNICAST);
    }
    if c.ipv6_unicast {
        families.push(AfiSafi::IPV6_UNICAST);
    }
    let mut caps: Vec<Capability> = families
        .iter()
        .map(|f| Capability::Multiprotocol(*f))
        .collect();
    if c.route_refresh {
        caps.push(Capability::RouteRefresh);
    }
    if c.extended_messages {
        caps.push(Capability::ExtendedMessage);
    }
    if let Some(gr) = c.graceful_restart {
        caps.push(Capability::GracefulRestart(packet::GracefulRestart {
            restart_state: gr.restarting() || extras.restarting,
            notification: gr.flags & fsm::GracefulRestart::NOTIFICATION != 0,
            restart_time: gr.restart_time & 0x0fff,
            families: families
                .iter()
                .map(|&afi_safi| GracefulRestartFamily {
                    afi_safi,
                    forwarding_preserved: extras.forwarding_preserved,
                })
                .collect(),
        }));
    }
    if c.four_octet_asn {
        caps.push(Capability::FourOctetAsn(s.asn));
    }
    Open::new(s.asn, s.hold_time, s.router_id, caps)
}

/// The FSM's view of a received OPEN (RFC 6793 §4.1: AS_TRANS resolved through the 4-octet AS
/// capability; RFC 4760 §8: no multiprotocol capability means IPv4 unicast).
pub fn summary_from_open(o: &Open) -> OpenSummary {
    let families = o.families();
    OpenSummary {
        version: fsm::BGP_VERSION,
        asn: o.asn(),
        hold_time: o.hold_time,
        router_id: o.bgp_identifier,
        capabilities: Capabilities {
            four_octet_asn: o.four_octet_asn().is_some(),
            ipv4_unicast: families.contains(&AfiSafi::IPV4_UNICAST),
            ipv6_unicast: families.contains(&AfiSafi::IPV6_UNICAST),
            route_refresh: o.route_refresh(),
            graceful_restart: o.graceful_restart().map(|gr| fsm::GracefulRestart {
                restart_time: gr.restart_time,
                flags: if gr.restart_state {
                    fsm::GracefulRestart::RESTARTING
                } else {
                    0
                } | if gr.notification {
                    fsm::GracefulRestart::NOTIFICATION
                } else {
                    0
                },
            }),
            extended_messages: o.extended_message(),
        },
    }
}

pub fn to_fsm_notification(n: &packet::Notification) -> fsm::Notification {
    fsm::Notification {
        code: n.error.code(),
        subcode: n.error.subcode(),
        data: n.data.to_vec(),
    }
}

pub fn to_packet_notification(n: &fsm::Notification) -> packet::Notification {
    packet::Notification {
        error: NotificationError::from_codes(n.code, n.subcode),
        data: Bytes::copy_from_slice(&n.data),
    }
}

/// The FSM event for a received NOTIFICATION: RFC 4271 §8.1.2 Event 24 for an OPEN version
/// error (2/1), Event 25 otherwise.
pub fn notification_input<U>(n: &packet::Notification) -> Input<U> {
    let f = to_fsm_notification(n);
    match n.error {
        NotificationError::Open(OpenSubcode::UnsupportedVersionNumber) => Input::NotifMsgVerErr(f),
        _ => Input::NotifMsg(f),
    }
}

/// The FSM event for a message that failed to decode, carrying the NOTIFICATION RFC 4271 §6
/// demands: Events 21 (header), 22 (OPEN) and 28 (UPDATE).
pub fn decode_error_input<U>(e: &DecodeError) -> Input<U> {
    let n = to_fsm_notification(&packet::Notification::from(e));
    match n.code {
        fsm::error_code::OPEN_MESSAGE => Input::BgpOpenMsgErr(n),
        fsm::error_code::UPDATE_MESSAGE => Input::UpdateMsgErr(n),
        // Header errors, and the ROUTE-REFRESH length error (RFC 7313 §5), which also closes
        // the session with its own NOTIFICATION in every state.
        _ => Input::BgpHeaderErr(n),
    }
}

/// What the session knows about a peer that the UPDATE checks need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateCheck {
    pub ibgp: bool,
    pub peer_asn: u32,
    /// Our end of the connection: a next hop equal to it is a loop.
    pub local_addr: IpAddr,
}

/// The session-level UPDATE checks the codec cannot do, since they depend on the peer:
///
/// - RFC 4271 §6.3: from an external peer, the leftmost AS of AS_PATH must be the peer's AS;
///   otherwise 3/11 Malformed AS_PATH (a session reset: RFC 7606 keeps it one, §7.2 leaves this
///   check to RFC 4271).
/// - RFC 7606 §7.5: LOCAL_PREF from an external peer is discarded.
/// - RFC 4271 §6.3 / RFC 7606 §7.3: a semantically wrong NEXT_HOP (0.0.0.0, multicast,
///   broadcast, our own address) makes the routes unusable: treat-as-withdraw.
///   RFC 4760 / RFC 2545: the same for MP_REACH_NLRI's next hop.
///
/// Returns the NOTIFICATION for a session reset, or the UPDATE to deliver, treat-as-withdraw
/// turned into plain withdrawals ([`as_withdrawal`]).
pub fn check_update(mut u: Update, c: &UpdateCheck) -> Result<Update, fsm::Notification> {
    let announces = !u.nlri.is_empty() || u.attributes.mp_reach.is_some();
    if !c.ibgp && announces {
        if let Some(path) = &u.attributes.as_path {
            let first = path.segments.first();
            let leftmost_ok = match first {
                // Confederation segments never come from an external peer outside the
                // confederation; the Sequence check below still applies after them.
                Some(s) if s.kind == SegmentType::Sequence => s.asns.first() == Some(&c.peer_asn),
                Some(s) if s.kind == SegmentType::Set => false,
                Some(_) => false,
                // An empty AS_PATH from an external peer cannot name the peer's AS.
                None => false,
            };
            if !leftmost_ok {
                return Err(fsm::Notification::new(
                    fsm::error_code::UPDATE_MESSAGE,
                    u8::from(UpdateSubcode::MalformedAsPath),
                ));
            }
        }
        if u.attributes.local_pref.take().is_some() {
            u.attribute_errors.push(AttributeError {
                type_code: type_code::LOCAL_PREF,
                action: Rfc7606Action::AttributeDiscard,
                reason: "RFC 7606 §7.5: LOCAL_PREF from an external peer",
            });
        }
    }
    if !u.nlri.is_empty()
        && let Some(nh) = u.attributes.next_hop
        && !ipv4_next_hop_ok(nh, c.local_addr)
    {
        u.attribute_errors.push(AttributeError {
            type_code: type_code::NEXT_HOP,
            action: Rfc7606Action::TreatAsWithdraw,
            reason: "RFC 4271 §6.3: NEXT_HOP is unspecified, multicast, broadcast or ours",
        });
    }
    if let Some(r) = &u.attributes.mp_reach {
        let ok = match r.next_hop {
            MpNextHop::V4(a) => ipv4_next_hop_ok(a, c.local_addr),
            MpNextHop::V6 { global, .. } => ipv6_next_hop_ok(global, c.local_addr),
        };
        if !ok {
            u.attribute_errors.push(AttributeError {
                type_code: type_code::MP_REACH_NLRI,
                action: Rfc7606Action::TreatAsWithdraw,
                reason: "RFC 4760 §3: MP_REACH_NLRI next hop is unspecified, multicast or ours",
            });
        }
    }
    Ok(as_withdrawal(u))
}

fn ipv4_next_hop_ok(a: Ipv4Addr, local: IpAddr) -> bool {
    !(a.is_unspecified() || a.is_multicast() || a.is_broadcast() || IpAddr::V4(a) == local)
}

fn ipv6_next_hop_ok(a: Ipv6Addr, local: IpAddr) -> bool {
    !(a.is_unspecified() || a.is_multicast() || IpAddr::V6(a) == local)
}

/// RFC 7606 §2 treat-as-withdraw, made explicit: an UPDATE whose NLRI are to be withdrawn
/// becomes one that only withdraws them (IPv4 in Withdrawn Routes, IPv6 in MP_UNREACH_NLRI).
/// `attribute_errors` are kept so the receiver can log them.
pub fn as_withdrawal(u: Update) -> Update {
    if !u.treat_as_withdraw() {
        return u;
    }
    let mut withdrawn = Vec::new();
    let mut v6 = Vec::new();
    for p in u.withdrawals() {
        match p {
            Prefix::V4(p) => withdrawn.push(p),
            Prefix::V6(_) => v6.push(p),
        }
    }
    let mut out = Update {
        withdrawn,
        attribute_errors: u.attribute_errors,
        ..Update::default()
    };
    if !v6.is_empty() {
        out.attributes.mp_unreach = Some(MpUnreach {
            afi_safi: AfiSafi::IPV6_UNICAST,
            withdrawn: v6,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{AsPath, Ipv4Prefix, Ipv6Prefix, MpReach, Origin};

    fn summary() -> OpenSummary {
        OpenSummary {
            version: 4,
            asn: 4_200_000_001,
            hold_time: 90,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            capabilities: Capabilities {
                graceful_restart: Some(fsm::GracefulRestart {
                    restart_time: 120,
                    flags: 0,
                }),
                ..Capabilities::default()
            },
        }
    }

    #[test]
    fn our_open_round_trips_through_the_summary() {
        let extras = OpenExtras {
            forwarding_preserved: true,
            restarting: false,
        };
        let mut s = summary();
        s.capabilities.extended_messages = true;
        let open = open_from_summary(&s, &extras);
        assert_eq!(open.my_as, packet::AS_TRANS);
        assert_eq!(open.asn(), 4_200_000_001);
        assert!(open.extended_message() && open.route_refresh());
        let gr = open.graceful_restart().unwrap();
        assert_eq!(gr.restart_time, 120);
        assert_eq!(gr.families.len(), 2);
        assert!(gr.families.iter().all(|f| f.forwarding_preserved));
        assert_eq!(summary_from_open(&open), s);
    }

    #[test]
    fn no_multiprotocol_capability_means_ipv4_only() {
        let o = Open::new(65001, 90, Ipv4Addr::new(192, 0, 2, 2), vec![]);
        let s = summary_from_open(&o);
        assert!(s.capabilities.ipv4_unicast && !s.capabilities.ipv6_unicast);
        assert!(!s.capabilities.four_octet_asn);
        assert_eq!(s.asn, 65001);
    }

    #[test]
    fn notifications_convert_both_ways() {
        let p = packet::Notification::shutdown(packet::CeaseSubcode::AdministrativeShutdown, "bye");
        let f = to_fsm_notification(&p);
        assert_eq!((f.code, f.subcode), (6, 2));
        assert_eq!(to_packet_notification(&f), p);
        let ver = packet::Notification::new(NotificationError::Open(
            OpenSubcode::UnsupportedVersionNumber,
        ));
        assert!(matches!(
            notification_input::<()>(&ver),
            Input::NotifMsgVerErr(_)
        ));
        assert!(matches!(notification_input::<()>(&p), Input::NotifMsg(_)));
    }

    #[test]
    fn decode_errors_map_to_their_events() {
        let e = DecodeError::InvalidNetworkField { detail: "x" };
        assert_eq!(
            decode_error_input::<()>(&e),
            Input::UpdateMsgErr(fsm::Notification::new(3, 10))
        );
        let e = DecodeError::BadBgpIdentifier;
        assert_eq!(
            decode_error_input::<()>(&e),
            Input::BgpOpenMsgErr(fsm::Notification::new(2, 3))
        );
        let e = DecodeError::ConnectionNotSynchronized;
        assert_eq!(
            decode_error_input::<()>(&e),
            Input::BgpHeaderErr(fsm::Notification::new(1, 1))
        );
    }

    fn v4(s: &str) -> Ipv4Prefix {
        let (a, l) = s.split_once('/').unwrap();
        Ipv4Prefix::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
    }

    fn update(path: Vec<u32>, nh: [u8; 4]) -> Update {
        let mut u = Update {
            nlri: vec![v4("198.18.0.0/26")],
            ..Update::default()
        };
        u.attributes.origin = Some(Origin::Igp);
        u.attributes.as_path = Some(AsPath::from_sequence(path));
        u.attributes.next_hop = Some(Ipv4Addr::from(nh));
        u
    }

    const EBGP: UpdateCheck = UpdateCheck {
        ibgp: false,
        peer_asn: 65002,
        local_addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
    };

    #[test]
    fn ebgp_leftmost_as_must_be_the_peer() {
        assert!(check_update(update(vec![65002, 65100], [127, 0, 0, 2]), &EBGP).is_ok());
        assert_eq!(
            check_update(update(vec![65100], [127, 0, 0, 2]), &EBGP),
            Err(fsm::Notification::new(3, 11))
        );
        let ibgp = UpdateCheck { ibgp: true, ..EBGP };
        assert!(check_update(update(vec![], [127, 0, 0, 2]), &ibgp).is_ok());
        // A pure withdrawal carries no AS_PATH to check.
        let w = Update {
            withdrawn: vec![v4("198.18.0.0/26")],
            ..Update::default()
        };
        assert_eq!(check_update(w.clone(), &EBGP), Ok(w));
    }

    #[test]
    fn ebgp_local_pref_is_discarded() {
        let mut u = update(vec![65002], [127, 0, 0, 2]);
        u.attributes.local_pref = Some(200);
        let out = check_update(u, &EBGP).unwrap();
        assert_eq!(out.attributes.local_pref, None);
        assert_eq!(
            out.attribute_errors[0].action,
            Rfc7606Action::AttributeDiscard
        );
        assert_eq!(out.announced().len(), 1);
    }

    #[test]
    fn bad_next_hops_are_treated_as_withdraw() {
        for nh in [
            [0, 0, 0, 0],
            [224, 0, 0, 5],
            [255, 255, 255, 255],
            [127, 0, 0, 1],
        ] {
            let out = check_update(update(vec![65002], nh), &EBGP).unwrap();
            assert!(out.announced().is_empty(), "{nh:?}");
            assert_eq!(out.withdrawn, vec![v4("198.18.0.0/26")]);
            assert!(out.nlri.is_empty() && out.attributes.next_hop.is_none());
        }
    }

    #[test]
    fn bad_ipv6_next_hop_withdraws_through_mp_unreach() {
        let p = Prefix::V6(Ipv6Prefix::new("2001:db8:1::".parse().unwrap(), 48).unwrap());
        let mut u = Update::default();
        u.attributes.origin = Some(Origin::Igp);
        u.attributes.as_path = Some(AsPath::from_sequence(vec![65002]));
        u.attributes.mp_reach = Some(MpReach {
            afi_safi: AfiSafi::IPV6_UNICAST,
            next_hop: MpNextHop::V6 {
                global: Ipv6Addr::UNSPECIFIED,
                link_local: None,
            },
            nlri: vec![p],
        });
        let out = check_update(u, &EBGP).unwrap();
        assert_eq!(out.withdrawals(), vec![p]);
        assert!(out.attributes.mp_reach.is_none());
    }
}
