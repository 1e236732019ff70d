//! RIB unit tests: each RFC 4456 rule, split horizon, loops, next hops, multipath, graceful
//! restart, max-prefix, import policy, packing, IPv6, and a replay of a recorded event
//! sequence.

use std::fmt::Write as _;

use super::*;
use crate::packet::{Community, Message, MpNextHop, MpReach, MpUnreach};

const ASN: u32 = 64512;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn pfx(s: &str) -> Prefix {
    from_ipnet(&s.parse().unwrap())
}
fn p4(s: &str) -> Ipv4Prefix {
    match pfx(s) {
        Prefix::V4(p) => p,
        Prefix::V6(_) => panic!("{s} is not IPv4"),
    }
}

/// Speaker 192.0.2.1 in AS 64512, pools 198.18.0.0/15 and 2001:db8:1::/48.
fn local(cluster_id: Option<&str>) -> LocalConfig {
    LocalConfig {
        asn: ASN,
        router_id: v4("192.0.2.1"),
        cluster_id: cluster_id.map(v4),
        import: ImportPolicy {
            pools: vec![
                "198.18.0.0/15".parse().unwrap(),
                "2001:db8:1::/48".parse().unwrap(),
            ],
            protected: vec![ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3")],
        },
        export: None,
    }
}

/// A peer at 192.0.2.`n` (router id the same), both families, our side 192.0.2.1 /
/// 2001:db8::1.
fn peer(n: u8, asn: u32) -> PeerInfo {
    let mut p = PeerInfo::new(
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)),
        asn,
        Ipv4Addr::new(192, 0, 2, n),
    );
    p.local_v4 = Some(v4("192.0.2.1"));
    p.local_v6 = Some("2001:db8::1".parse().unwrap());
    p.families = vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST];
    p
}
fn ibgp(n: u8) -> PeerInfo {
    peer(n, ASN)
}
fn client(n: u8) -> PeerInfo {
    PeerInfo {
        rr_client: true,
        ..ibgp(n)
    }
}
fn ebgp(n: u8, asn: u32) -> PeerInfo {
    peer(n, asn)
}

/// An IPv4 announcement; the AS_PATH is `path`.
fn announce(prefixes: &[&str], nh: &str, path: &[u32]) -> Update {
    Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(path.to_vec())),
            next_hop: Some(v4(nh)),
            ..Default::default()
        },
        nlri: prefixes.iter().map(|s| p4(s)).collect(),
        ..Default::default()
    }
}

fn announce_with(
    prefixes: &[&str],
    nh: &str,
    path: &[u32],
    f: impl FnOnce(&mut PathAttributes),
) -> Update {
    let mut u = announce(prefixes, nh, path);
    f(&mut u.attributes);
    u
}

fn announce6(prefixes: &[&str], nh: &str, path: &[u32]) -> Update {
    Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(path.to_vec())),
            mp_reach: Some(MpReach {
                afi_safi: AfiSafi::IPV6_UNICAST,
                next_hop: MpNextHop::V6 {
                    global: nh.parse().unwrap(),
                    link_local: None,
                },
                nlri: prefixes.iter().map(|s| pfx(s)).collect(),
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn withdraw(prefixes: &[&str]) -> Update {
    Update {
        withdrawn: prefixes.iter().map(|s| p4(s)).collect(),
        ..Default::default()
    }
}

/// What one UPDATE list says, per prefix: (prefix, Some((next hop, attributes))) for an
/// announcement, (prefix, None) for a withdrawal. End-of-RIB markers are skipped.
fn flatten(updates: &[Update]) -> Vec<(Prefix, Option<(IpAddr, PathAttributes)>)> {
    let mut out = Vec::new();
    for u in updates {
        if u.as_end_of_rib().is_some() {
            continue;
        }
        for p in u.withdrawals() {
            out.push((p, None));
        }
        let mut a = u.attributes.clone();
        a.next_hop = None;
        a.mp_reach = None;
        a.mp_unreach = None;
        for p in &u.nlri {
            let nh = IpAddr::V4(u.attributes.next_hop.expect("NEXT_HOP with NLRI"));
            out.push((Prefix::V4(*p), Some((nh, a.clone()))));
        }
        if let Some(r) = &u.attributes.mp_reach {
            let nh = match r.next_hop {
                MpNextHop::V4(x) => IpAddr::V4(x),
                MpNextHop::V6 { global, .. } => IpAddr::V6(global),
            };
            for p in &r.nlri {
                out.push((*p, Some((nh, a.clone()))));
            }
        }
    }
    out
}

fn sent(c: &RibChanges, to: PeerId) -> Vec<(Prefix, Option<(IpAddr, PathAttributes)>)> {
    flatten(c.updates_for(to))
}

/// The prefixes announced to `to` in `c`.
fn announced_to(c: &RibChanges, to: PeerId) -> Vec<Prefix> {
    sent(c, to)
        .into_iter()
        .filter_map(|(p, a)| a.map(|_| p))
        .collect()
}

fn best(rib: &Rib, p: &str) -> Option<Vec<IpAddr>> {
    rib.get(&pfx(p)).map(|e| e.next_hops)
}

const A: PeerId = PeerId(1);
const B: PeerId = PeerId(2);
const C: PeerId = PeerId(3);
const D: PeerId = PeerId(4);
const E: PeerId = PeerId(5);

#[test]
fn peer_up_sends_table_then_end_of_rib_per_family() {
    let mut rib = Rib::new(local(None));
    rib.originate(pfx("198.18.4.0/26"));
    rib.originate(pfx("2001:db8:1:4::/122"));
    let c = rib.peer_up(A, ibgp(9));
    let u = c.updates_for(A);
    assert_eq!(u.len(), 4, "{u:#?}");
    assert_eq!(u[2].as_end_of_rib(), Some(AfiSafi::IPV4_UNICAST));
    assert_eq!(u[3].as_end_of_rib(), Some(AfiSafi::IPV6_UNICAST));
    let routes = flatten(u);
    assert_eq!(routes.len(), 2);
    assert!(c.best_changes.is_empty());
    assert_eq!(rib.peer_counts(A).advertised, 2);
    assert_eq!(
        end_of_rib_updates(&[AfiSafi::IPV4_UNICAST]),
        vec![Update::default()]
    );
}

#[test]
fn originate_goes_to_ibgp_with_next_hop_self_and_local_pref() {
    let mut rib = Rib::new(local(None));
    rib.peer_up(A, ibgp(9));
    let c = rib.originate(pfx("198.18.4.0/26"));
    assert_eq!(
        c.best_changes,
        vec![BestChange {
            prefix: pfx("198.18.4.0/26"),
            next_hops: NextHops::None,
            local: true
        }]
    );
    let s = sent(&c, A);
    let (nh, a) = s[0].1.clone().unwrap();
    assert_eq!(nh, ip("192.0.2.1"));
    assert_eq!(a.origin, Some(Origin::Igp));
    assert_eq!(a.as_path, Some(AsPath::default()));
    assert_eq!(a.local_pref, Some(100));
    let c = rib.withdraw_origin(pfx("198.18.4.0/26"));
    assert_eq!(sent(&c, A), vec![(pfx("198.18.4.0/26"), None)]);
    assert!(c.best_changes[0].next_hops.is_empty());
    assert!(!c.best_changes[0].local);
    assert_eq!(rib.attribute_sets(), 0, "interned sets are let go");
}

#[test]
fn ibgp_split_horizon_without_reflection() {
    let mut rib = Rib::new(local(None));
    rib.peer_up(A, ibgp(9));
    rib.peer_up(B, ibgp(10));
    rib.peer_up(E, ebgp(20, 65020));
    let c = rib.receive(A, announce(&["198.18.8.0/26"], "192.0.2.9", &[]));
    assert!(c.updates_for(A).is_empty(), "never back to the sender");
    assert!(
        c.updates_for(B).is_empty(),
        "RFC 4271 §9.2: not to other iBGP"
    );
    assert_eq!(announced_to(&c, E), vec![pfx("198.18.8.0/26")]);
    // eBGP-learned goes to every iBGP peer.
    let c = rib.receive(E, announce(&["198.18.9.0/26"], "192.0.2.20", &[65020]));
    assert_eq!(announced_to(&c, A), vec![pfx("198.18.9.0/26")]);
    assert_eq!(announced_to(&c, B), vec![pfx("198.18.9.0/26")]);
    assert!(c.updates_for(E).is_empty());
}

/// A route reflector (cluster 192.0.2.100) with clients A, B, non-clients C, D, eBGP E.
fn reflector() -> Rib {
    let mut rib = Rib::new(local(Some("192.0.2.100")));
    rib.peer_up(A, client(9));
    rib.peer_up(B, client(10));
    rib.peer_up(C, ibgp(11));
    rib.peer_up(D, ibgp(12));
    rib.peer_up(E, ebgp(20, 65020));
    rib
}

fn receivers(c: &RibChanges) -> Vec<PeerId> {
    let mut v: Vec<PeerId> = c
        .to_send
        .iter()
        .filter(|(_, u)| !flatten(u).is_empty())
        .map(|(p, _)| *p)
        .collect();
    v.sort();
    v
}

#[test]
fn reflection_from_client_goes_to_clients_and_non_clients() {
    let mut rib = reflector();
    let c = rib.receive(A, announce(&["198.18.8.0/26"], "192.0.2.9", &[]));
    assert_eq!(receivers(&c), vec![B, C, D, E]);
    for to in [B, C, D] {
        let (nh, a) = sent(&c, to)[0].1.clone().unwrap();
        assert_eq!(nh, ip("192.0.2.9"), "reflected: next hop unchanged");
        assert_eq!(a.originator_id, Some(v4("192.0.2.9")));
        assert_eq!(a.cluster_list, vec![v4("192.0.2.100")]);
    }
    let (_, a) = sent(&c, E)[0].1.clone().unwrap();
    assert_eq!(a.originator_id, None);
    assert!(a.cluster_list.is_empty());
}

#[test]
fn reflection_from_non_client_goes_to_clients_only() {
    let mut rib = reflector();
    let c = rib.receive(C, announce(&["198.18.8.0/26"], "192.0.2.11", &[]));
    assert_eq!(receivers(&c), vec![A, B, E]);
    let (_, a) = sent(&c, A)[0].1.clone().unwrap();
    assert_eq!(a.originator_id, Some(v4("192.0.2.11")));
    assert_eq!(a.cluster_list, vec![v4("192.0.2.100")]);
}

#[test]
fn reflection_of_ebgp_routes_goes_to_everyone_unreflected() {
    let mut rib = reflector();
    let c = rib.receive(E, announce(&["198.18.8.0/26"], "192.0.2.20", &[65020]));
    assert_eq!(receivers(&c), vec![A, B, C, D]);
    let (nh, a) = sent(&c, C)[0].1.clone().unwrap();
    assert_eq!(nh, ip("192.0.2.20"), "iBGP default: next hop unchanged");
    assert_eq!(a.originator_id, None, "not reflected: no ORIGINATOR_ID");
    assert!(a.cluster_list.is_empty());
    assert_eq!(a.local_pref, Some(100));
}

#[test]
fn reflection_keeps_existing_originator_and_prepends_cluster_id() {
    let mut rib = reflector();
    let c = rib.receive(
        A,
        announce_with(&["198.18.8.0/26"], "192.0.2.50", &[], |a| {
            a.originator_id = Some(v4("192.0.2.50"));
            a.cluster_list = vec![v4("192.0.2.200")];
        }),
    );
    let (_, a) = sent(&c, C)[0].1.clone().unwrap();
    assert_eq!(a.originator_id, Some(v4("192.0.2.50")));
    assert_eq!(a.cluster_list, vec![v4("192.0.2.100"), v4("192.0.2.200")]);
}

#[test]
fn originator_id_loop_is_dropped() {
    let mut rib = reflector();
    let c = rib.receive(
        A,
        announce_with(&["198.18.8.0/26"], "192.0.2.9", &[], |a| {
            a.originator_id = Some(v4("192.0.2.1"));
        }),
    );
    assert!(c.is_empty(), "{c:?}");
    assert!(rib.is_empty());
    let n = rib.peer_counts(A);
    assert_eq!((n.received, n.accepted, n.rejected), (1, 0, 1));
}

#[test]
fn cluster_list_loop_is_dropped() {
    let mut rib = reflector();
    rib.receive(C, announce(&["198.18.8.0/26"], "192.0.2.11", &[]));
    // The same prefix comes back round the cluster: the old path from A is replaced by
    // nothing (implicit withdraw), C's stays.
    rib.receive(A, announce(&["198.18.8.0/26"], "192.0.2.9", &[]));
    let c = rib.receive(
        A,
        announce_with(&["198.18.8.0/26"], "192.0.2.9", &[], |a| {
            a.cluster_list = vec![v4("192.0.2.7"), v4("192.0.2.100")];
        }),
    );
    assert_eq!(best(&rib, "198.18.8.0/26"), Some(vec![ip("192.0.2.11")]));
    assert_eq!(c.best_changes[0].next_hops, vec![ip("192.0.2.11")]);
    assert_eq!(rib.peer_counts(A).rejected, 1);
    assert_eq!(rib.peer_counts(A).accepted, 0);
}

#[test]
fn ebgp_as_path_loop_is_dropped() {
    let mut rib = Rib::new(local(None));
    rib.peer_up(E, ebgp(20, 65020));
    let c = rib.receive(
        E,
        announce(&["198.18.8.0/26"], "192.0.2.20", &[65020, ASN, 65030]),
    );
    assert!(c.best_changes.is_empty());
    assert!(rib.is_empty());
    assert_eq!(rib.peer_counts(E).rejected, 1);
}

#[test]
fn ebgp_export_prepends_our_as_and_strips_internal_attributes() {
    let mut rib = reflector();
    let c = rib.receive(
        A,
        announce_with(&["198.18.8.0/26"], "192.0.2.9", &[], |a| {
            a.local_pref = Some(300);
            a.med = Some(5);
            a.originator_id = Some(v4("192.0.2.50"));
            a.cluster_list = vec![v4("192.0.2.200")];
        }),
    );
    let (nh, a) = sent(&c, E)[0].1.clone().unwrap();
    assert_eq!(nh, ip("192.0.2.1"), "eBGP: our session address");
    assert_eq!(a.as_path, Some(AsPath::from_sequence(vec![ASN])));
    assert_eq!(a.local_pref, None);
    assert_eq!(a.med, None);
    assert_eq!(a.originator_id, None);
    assert!(a.cluster_list.is_empty());
}

#[test]
fn next_hop_modes_per_peer() {
    let mut rib = Rib::new(local(Some("192.0.2.100")));
    let mut self_client = client(9);
    self_client.next_hop = NextHop::SelfAddress;
    let mut keep_ebgp = ebgp(21, 65021);
    keep_ebgp.next_hop = NextHop::Keep;
    rib.peer_up(A, self_client);
    rib.peer_up(B, client(10));
    rib.peer_up(C, keep_ebgp);
    rib.peer_up(E, ebgp(20, 65020));
    let c = rib.receive(B, announce(&["198.18.8.0/26"], "192.0.2.10", &[]));
    assert_eq!(
        sent(&c, A)[0].1.as_ref().unwrap().0,
        ip("192.0.2.1"),
        "self"
    );
    assert_eq!(
        sent(&c, C)[0].1.as_ref().unwrap().0,
        ip("192.0.2.10"),
        "keep"
    );
    assert_eq!(
        sent(&c, E)[0].1.as_ref().unwrap().0,
        ip("192.0.2.1"),
        "eBGP"
    );
    // Locally originated: self to everyone, Keep included.
    let c = rib.originate(pfx("198.18.4.0/26"));
    for to in [A, B, C, E] {
        assert_eq!(sent(&c, to)[0].1.as_ref().unwrap().0, ip("192.0.2.1"));
    }
}

#[test]
fn multipath_carries_all_equal_best_next_hops() {
    let mut rib = Rib::new(local(None));
    rib.peer_up(A, ibgp(9));
    rib.peer_up(B, ibgp(10));
    rib.peer_up(C, ibgp(11));
    rib.peer_up(E, ebgp(20, 65020));
    rib.receive(B, announce(&["198.18.8.0/26"], "192.0.2.10", &[]));
    let c = rib.receive(A, announce(&["198.18.8.0/26"], "192.0.2.9", &[]));
    assert_eq!(
        c.best_changes[0].next_hops,
        vec![ip("192.0.2.9"), ip("192.0.2.10")]
    );
    // Router id decides which one is advertised: A (192.0.2.9) replaces B's, but towards
    // the eBGP peer both look the same (next hop self, our AS): nothing to send.
    assert_eq!(
        rib.get(&pfx("198.18.8.0/26")).unwrap().best.source,
        RouteSource::Peer(A)
    );
    assert!(c.updates_for(E).is_empty());
    // A higher MED (same neighbouring AS: ours) is not equal-best.
    let c = rib.receive(
        C,
        announce_with(&["198.18.8.0/26"], "192.0.2.11", &[], |a| a.med = Some(10)),
    );
    assert!(c.best_changes.is_empty());
    assert!(c.to_send.is_empty());
    let e = rib.get(&pfx("198.18.8.0/26")).unwrap();
    assert_eq!(e.paths.len(), 3);
    assert_eq!(e.best.source, RouteSource::Peer(A));
    // The best one goes: B's takes over alone (C's MED is still higher).
    let c = rib.receive(A, withdraw(&["198.18.8.0/26"]));
    assert_eq!(c.best_changes[0].next_hops, vec![ip("192.0.2.10")]);
    assert!(c.updates_for(E).is_empty());
    assert_eq!(
        rib.get(&pfx("198.18.8.0/26")).unwrap().best.source,
        RouteSource::Peer(B)
    );
}

#[test]
fn identical_reannouncement_sends_nothing() {
    let mut rib = Rib::new(local(None));
    rib.peer_up(A, ibgp(9));
    rib.peer_up(E, ebgp(20, 65020));
    rib.receive(A, announce(&["198.18.8.0/26"], "192.0.2.9", &[]));
    let c = rib.receive(A, announce(&["198.18.8.0/26"], "192.0.2.9", &[]));
    assert!(c.is_empty(), "{c:?}");
    // A MED change is not visible to the eBGP peer (MED is not passed on): nothing sent.
    let c = rib.receive(
        A,
        announce_with(&["198.18.8.0/26"], "192.0.2.9", &[], |a| a.med = Some(3)),
    );
    assert!(c.to_send.is_empty(), "{c:?}");
    assert!(c.best_changes.is_empty());
    assert_eq!(rib.peer_counts(E).advertised, 1);
}

#[test]
fn graceful_restart_keeps_stale_until_end_of_rib() {
    let mut rib = Rib::new(local(None));
    let mut a = ibgp(9);
    a.graceful_restart = Some(120);
    rib.peer_up(A, a.clone());
    rib.peer_up(E, ebgp(20, 65020));
    rib.receive(
        A,
        announce(&["198.18.8.0/26", "198.18.9.0/26"], "192.0.2.9", &[]),
    );
    let c = rib.peer_down(A, true);
    assert!(c.is_empty(), "stale routes stay in use: {c:?}");
    assert_eq!(rib.peer_counts(A).stale, 2);
    assert!(rib.get(&pfx("198.18.8.0/26")).unwrap().best.stale);
    // It comes back and re-advertises one of the two.
    rib.peer_up(A, a);
    let c = rib.receive(A, announce(&["198.18.8.0/26"], "192.0.2.9", &[]));
    assert!(c.is_empty(), "refresh with the same attributes: {c:?}");
    assert_eq!(rib.peer_counts(A).stale, 1);
    let c = rib.receive(A, Update::end_of_rib(AfiSafi::IPV4_UNICAST));
    assert_eq!(
        c.best_changes,
        vec![BestChange {
            prefix: pfx("198.18.9.0/26"),
            next_hops: NextHops::None,
            local: false
        }]
    );
    assert_eq!(sent(&c, E), vec![(pfx("198.18.9.0/26"), None)]);
    assert_eq!(best(&rib, "198.18.8.0/26"), Some(vec![ip("192.0.2.9")]));
    assert_eq!(rib.peer_counts(A).stale, 0);
}

#[test]
fn graceful_restart_timer_expiry_drops_all_stale() {
    let mut rib = Rib::new(local(None));
    let mut a = ibgp(9);
    a.graceful_restart = Some(120);
    rib.peer_up(A, a);
    rib.receive(
        A,
        announce(&["198.18.8.0/26", "198.18.9.0/26"], "192.0.2.9", &[]),
    );
    rib.receive(A, announce6(&["2001:db8:1:8::/64"], "2001:db8::9", &[]));
    rib.peer_down(A, true);
    assert_eq!(rib.len(), 3);
    let c = rib.stale_timer_expired(A);
    assert_eq!(c.best_changes.len(), 3);
    assert!(c.best_changes.iter().all(|b| b.next_hops.is_empty()));
    assert!(rib.is_empty());
    assert_eq!(rib.peer_counts(A), PeerCounts::default());
    assert_eq!(rib.attribute_sets(), 0);
}

#[test]
fn down_without_graceful_restart_drops_routes_at_once() {
    for (gr, graceful) in [(None, true), (Some(120), false)] {
        let mut rib = Rib::new(local(None));
        let mut a = ibgp(9);
        a.graceful_restart = gr;
        rib.peer_up(A, a);
        rib.receive(A, announce(&["198.18.8.0/26"], "192.0.2.9", &[]));
        let c = rib.peer_down(A, graceful);
        assert_eq!(c.best_changes.len(), 1, "{gr:?} {graceful}");
        assert!(rib.is_empty());
    }
}

#[test]
fn graceful_restart_peer_back_without_capability_loses_stale_at_once() {
    let mut rib = Rib::new(local(None));
    let mut a = ibgp(9);
    a.graceful_restart = Some(120);
    rib.peer_up(A, a);
    rib.receive(A, announce(&["198.18.8.0/26"], "192.0.2.9", &[]));
    rib.peer_down(A, true);
    let c = rib.peer_up(A, ibgp(9));
    assert_eq!(c.best_changes.len(), 1);
    assert!(rib.is_empty());
}

#[test]
fn max_prefix_stop_sends_cease_and_drops_the_peer() {
    let mut rib = Rib::new(local(None));
    let mut a = ibgp(9);
    a.max_prefix = Some(2);
    rib.peer_up(A, a);
    let c = rib.receive(
        A,
        announce(&["198.18.8.0/26", "198.18.9.0/26"], "192.0.2.9", &[]),
    );
    assert_eq!(c.peer_action, None);
    let c = rib.receive(A, announce(&["198.18.10.0/26"], "192.0.2.9", &[]));
    assert_eq!(
        c.peer_action,
        Some(PeerAction::Stop(Cease {
            subcode: CeaseSubcode::MaxPrefixesReached,
            data: vec![0, 1, 1, 0, 0, 0, 2],
        }))
    );
    assert_eq!(
        c.best_changes.len(),
        2,
        "the two earlier ones are withdrawn"
    );
    assert!(rib.is_empty());
    assert!(
        rib.receive(A, announce(&["198.18.8.0/26"], "192.0.2.9", &[]))
            .is_empty()
    );
    rib.peer_down(A, false);
}

#[test]
fn max_prefix_warn_keeps_routes_and_warns_once() {
    let mut rib = Rib::new(local(None));
    let mut a = ibgp(9);
    a.max_prefix = Some(1);
    a.max_prefix_action = MaxPrefixAction::Warn;
    rib.peer_up(A, a);
    let c = rib.receive(
        A,
        announce(&["198.18.8.0/26", "198.18.9.0/26"], "192.0.2.9", &[]),
    );
    assert_eq!(c.peer_action, Some(PeerAction::Warn { count: 2, limit: 1 }));
    let c = rib.receive(A, announce(&["198.18.10.0/26"], "192.0.2.9", &[]));
    assert_eq!(c.peer_action, None, "once per crossing");
    assert_eq!(rib.len(), 3);
}

#[test]
fn import_policy_and_counts() {
    let mut rib = Rib::new(local(None));
    rib.peer_up(A, ibgp(9));
    let mut all = ebgp(20, 65020);
    all.import_all = true;
    rib.peer_up(E, all);
    let offered = [
        "198.18.8.0/26",  // in the pool
        "203.0.113.0/24", // outside the pools
        "0.0.0.0/0",      // default route
        "192.0.2.0/24",   // covers a protected address
    ];
    rib.receive(A, announce(&offered, "192.0.2.9", &[]));
    let n = rib.peer_counts(A);
    assert_eq!((n.received, n.accepted, n.rejected), (4, 1, 3));
    rib.receive(E, announce(&offered, "192.0.2.20", &[65020]));
    let n = rib.peer_counts(E);
    assert_eq!(
        (n.received, n.accepted, n.rejected),
        (4, 2, 2),
        "import_all"
    );
    assert!(rib.get(&pfx("203.0.113.0/24")).is_some());
    assert!(rib.get(&pfx("0.0.0.0/0")).is_none());
    rib.receive(A, withdraw(&["203.0.113.0/24", "198.18.8.0/26"]));
    let n = rib.peer_counts(A);
    assert_eq!((n.received, n.accepted, n.rejected), (2, 0, 2));
    assert_eq!(
        rib.peer_counts(E).advertised,
        0,
        "nothing back to the sender"
    );
    assert_eq!(rib.peer_counts(A).advertised, 2, "E's two to A");
}

#[test]
fn export_policy_limits_what_external_peers_hear() {
    let mut cfg = local(None);
    cfg.export = Some(ExportPolicy {
        node_blocks: vec!["198.18.4.0/26".parse().unwrap()],
        service_ranges: vec![],
    });
    let mut rib = Rib::new(cfg);
    rib.peer_up(A, ibgp(9));
    rib.peer_up(E, ebgp(20, 65020));
    let c = rib.originate(pfx("198.18.4.0/26"));
    assert_eq!(announced_to(&c, E), vec![pfx("198.18.4.0/26")]);
    let c = rib.receive(A, announce(&["198.18.8.0/26"], "192.0.2.9", &[]));
    assert!(c.updates_for(E).is_empty(), "another node's block");
}

#[test]
fn treat_as_withdraw_removes_the_routes() {
    let mut rib = Rib::new(local(None));
    rib.peer_up(A, ibgp(9));
    rib.receive(A, announce(&["198.18.8.0/26"], "192.0.2.9", &[]));
    let mut u = announce(&["198.18.8.0/26"], "192.0.2.9", &[]);
    u.attribute_errors.push(crate::packet::AttributeError {
        type_code: 1,
        action: crate::packet::Rfc7606Action::TreatAsWithdraw,
        reason: "test",
    });
    let c = rib.receive(A, u);
    assert!(c.best_changes[0].next_hops.is_empty());
    assert!(rib.is_empty());
}

#[test]
fn ipv6_via_mp_reach() {
    let mut rib = Rib::new(local(None));
    rib.peer_up(A, ibgp(9));
    rib.peer_up(E, ebgp(20, 65020));
    let c = rib.receive(A, announce6(&["2001:db8:1:8::/64"], "2001:db8::9", &[]));
    assert_eq!(c.best_changes[0].next_hops, vec![ip("2001:db8::9")]);
    let u = c.updates_for(E);
    assert_eq!(u.len(), 1);
    let r = u[0].attributes.mp_reach.as_ref().unwrap();
    assert_eq!(r.afi_safi, AfiSafi::IPV6_UNICAST);
    assert_eq!(
        r.next_hop,
        MpNextHop::V6 {
            global: "2001:db8::1".parse().unwrap(),
            link_local: None
        }
    );
    assert!(u[0].nlri.is_empty() && u[0].attributes.next_hop.is_none());
    // Originated IPv6 to iBGP: MP_REACH with our v6 address.
    let c = rib.originate(pfx("2001:db8:1:4::/122"));
    let (nh, _) = sent(&c, A)[0].1.clone().unwrap();
    assert_eq!(nh, ip("2001:db8::1"));
    // Withdrawal: MP_UNREACH.
    let c = rib.receive(
        A,
        Update {
            attributes: PathAttributes {
                mp_unreach: Some(MpUnreach {
                    afi_safi: AfiSafi::IPV6_UNICAST,
                    withdrawn: vec![pfx("2001:db8:1:8::/64")],
                }),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let u = c.updates_for(E);
    assert_eq!(
        u[0].attributes.mp_unreach.as_ref().unwrap().withdrawn,
        vec![pfx("2001:db8:1:8::/64")]
    );
    // A v4-only peer hears no IPv6.
    let mut v4_only = ibgp(11);
    v4_only.families = vec![AfiSafi::IPV4_UNICAST];
    let c = rib.peer_up(C, v4_only);
    assert_eq!(c.updates_for(C), &[Update::default()][..]);
}

#[test]
fn updates_are_packed_and_split_at_the_size_limit() {
    let mut rib = Rib::new(local(None));
    let mut a = ebgp(20, 65020);
    a.import_all = true;
    rib.peer_up(A, a);
    rib.peer_up(B, ibgp(9));
    let mut big = ibgp(10);
    big.extended_messages = true;
    rib.peer_up(C, big);
    let n = 3000usize;
    let nlri: Vec<Ipv4Prefix> = (0..n as u32)
        .map(|i| Ipv4Prefix::new(Ipv4Addr::from(0xc612_0000 + i), 32).unwrap())
        .collect();
    let mut u = announce(&[], "192.0.2.20", &[65020]);
    u.nlri = nlri.clone();
    let c = rib.receive(A, u);
    assert_eq!(c.best_changes.len(), n);
    for (to, ctx) in [
        (B, EncodeContext::default()),
        (
            C,
            EncodeContext {
                four_octet_asn: true,
                extended_messages: true,
            },
        ),
    ] {
        let updates = c.updates_for(to);
        let mut seen = Vec::new();
        for u in updates {
            let len = Message::Update(u.clone()).encode(&ctx).len();
            assert!(len <= ctx.max_message_len(), "{len}");
            seen.extend(u.nlri.iter().copied());
        }
        seen.sort();
        let mut want = nlri.clone();
        want.sort();
        assert_eq!(seen, want, "every prefix once");
        // 5 octets a /32: about (max - header and attributes) / 5 per UPDATE.
        let per = (ctx.max_message_len() - 60) / 5;
        assert!(
            updates.len() <= n.div_ceil(per),
            "{} UPDATEs",
            updates.len()
        );
        assert!(updates.len() >= n.div_ceil(ctx.max_message_len() / 5));
    }
    // Withdrawals pack too.
    let c = rib.peer_down(A, false);
    let w = c.updates_for(B);
    assert!(w.len() >= 4 && w.len() <= 5, "{}", w.len());
    for u in w {
        assert!(
            Message::Update(u.clone())
                .encode(&EncodeContext::default())
                .len()
                <= 4096
        );
    }
    assert_eq!(rib.attribute_sets(), 0);
}

#[test]
fn ipv6_packing_stays_under_the_limit() {
    let mut out = Vec::new();
    let attrs = RouteAttrs {
        attrs: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            ..Default::default()
        },
        next_hop: ip("2001:db8::1"),
    };
    let prefixes: Vec<Prefix> = (0..2000u128)
        .map(|i| {
            Prefix::V6(
                Ipv6Prefix::new(Ipv6Addr::from(0x2001_0db8_0001_u128 << 80 | i), 128).unwrap(),
            )
        })
        .collect();
    let ctx = EncodeContext::default();
    pack::pack_announcements(&attrs, prefixes.clone(), &ctx, &mut out);
    let mut n = 0;
    for u in &out {
        assert!(Message::Update(u.clone()).encode(&ctx).len() <= 4096);
        n += u.attributes.mp_reach.as_ref().unwrap().nlri.len();
    }
    assert_eq!(n, 2000);
    assert_eq!(out.len(), 2000usize.div_ceil(4000 / 17));
    let mut w = Vec::new();
    let v6: Vec<Ipv6Prefix> = prefixes
        .iter()
        .map(|p| match p {
            Prefix::V6(p) => *p,
            Prefix::V4(_) => unreachable!(),
        })
        .collect();
    pack::pack_withdrawals(Vec::new(), v6, &ctx, &mut w);
    for u in &w {
        assert!(Message::Update(u.clone()).encode(&ctx).len() <= 4096);
    }
    assert_eq!(w.len(), out.len());
}

#[test]
fn no_advertise_community_is_kept_to_ourselves() {
    let mut rib = Rib::new(local(Some("192.0.2.100")));
    rib.peer_up(A, client(9));
    rib.peer_up(B, client(10));
    let c = rib.receive(
        A,
        announce_with(&["198.18.8.0/26"], "192.0.2.9", &[], |a| {
            a.communities = vec![Community::NO_ADVERTISE]
        }),
    );
    assert_eq!(c.best_changes.len(), 1);
    assert!(c.to_send.is_empty());
}

#[test]
fn path_storage_is_compact() {
    assert_eq!(std::mem::size_of::<Path>(), 8);
    assert_eq!(std::mem::size_of::<Dest>(), 8);
    assert_eq!(std::mem::size_of::<(V4Key, Dest)>(), 16);
}

// ---------------------------------------------------------------------------------------
// Replay: a recorded sequence of events, the outputs rendered as text.

fn render(out: &mut String, what: &str, c: &RibChanges, names: &[(PeerId, &str)]) {
    let name = |id: PeerId| names.iter().find(|(p, _)| *p == id).unwrap().1;
    writeln!(out, "> {what}").unwrap();
    let mut bests = c.best_changes.clone();
    bests.sort_by_key(|b| b.prefix);
    for b in bests {
        let nh: Vec<String> = b.next_hops.iter().map(|n| n.to_string()).collect();
        let what = if b.local {
            "local".to_string()
        } else if nh.is_empty() {
            "unreachable".to_string()
        } else {
            nh.join(",")
        };
        writeln!(out, "best {} {what}", b.prefix).unwrap();
    }
    for (id, updates) in &c.to_send {
        for u in updates {
            if let Some(f) = u.as_end_of_rib() {
                writeln!(out, "{} eor {}/{}", name(*id), f.afi, f.safi).unwrap();
            }
        }
        // Sorted: the order of prefixes in a table dump is the hash map's.
        let mut routes = flatten(updates);
        routes.sort_by_key(|(p, _)| *p);
        for (p, a) in routes {
            match a {
                None => writeln!(out, "{} withdraw {p}", name(*id)).unwrap(),
                Some((nh, a)) => {
                    let path: Vec<String> = a
                        .as_path
                        .iter()
                        .flat_map(|p| p.segments.iter().flat_map(|s| s.asns.iter()))
                        .map(|x| x.to_string())
                        .collect();
                    let mut line = format!(
                        "{} announce {p} nh {nh} path [{}]",
                        name(*id),
                        path.join(" ")
                    );
                    if let Some(lp) = a.local_pref {
                        write!(line, " lp {lp}").unwrap();
                    }
                    if let Some(o) = a.originator_id {
                        write!(line, " originator {o}").unwrap();
                    }
                    if !a.cluster_list.is_empty() {
                        let cl: Vec<String> =
                            a.cluster_list.iter().map(|c| c.to_string()).collect();
                        write!(line, " clusters [{}]", cl.join(" ")).unwrap();
                    }
                    writeln!(out, "{line}").unwrap();
                }
            }
        }
    }
    if let Some(a) = &c.peer_action {
        writeln!(out, "action {a:?}").unwrap();
    }
}

/// A route reflector with two clients (n2, n3, graceful restart), a non-client (n4) and a
/// top-of-rack eBGP peer (tor): the life of a small cluster.
#[test]
fn replay_route_reflector_cluster() {
    let names = [(A, "n2"), (B, "n3"), (C, "n4"), (E, "tor")];
    let mut rib = Rib::new(local(Some("192.0.2.100")));
    let mut out = String::new();
    let gr_client = |n| {
        let mut p = client(n);
        p.families = vec![AfiSafi::IPV4_UNICAST];
        p.graceful_restart = Some(120);
        p
    };
    let mut tor = ebgp(20, 65020);
    tor.families = vec![AfiSafi::IPV4_UNICAST];
    tor.import_all = true;
    let mut n4 = ibgp(11);
    n4.families = vec![AfiSafi::IPV4_UNICAST];
    let r = rib.originate(pfx("198.18.0.0/26"));
    render(&mut out, "originate 198.18.0.0/26", &r, &names);
    let r = rib.peer_up(A, gr_client(9));
    render(&mut out, "n2 up", &r, &names);
    let r = rib.peer_up(B, gr_client(10));
    render(&mut out, "n3 up", &r, &names);
    let r = rib.peer_up(C, n4);
    render(&mut out, "n4 up", &r, &names);
    let r = rib.peer_up(E, tor);
    render(&mut out, "tor up", &r, &names);
    let r = rib.receive(A, announce(&["198.18.0.64/26"], "192.0.2.9", &[]));
    render(&mut out, "n2 announces its block", &r, &names);
    let r = rib.receive(C, announce(&["198.18.0.128/26"], "192.0.2.11", &[]));
    render(&mut out, "n4 announces its block", &r, &names);
    let r = rib.receive(
        E,
        announce(&["203.0.113.0/24", "0.0.0.0/0"], "192.0.2.20", &[65020]),
    );
    render(&mut out, "tor announces a range and a default", &r, &names);
    let r = rib.receive(B, announce(&["198.18.0.64/26"], "192.0.2.10", &[]));
    render(
        &mut out,
        "n3 announces the same block (anycast)",
        &r,
        &names,
    );
    let r = rib.peer_down(A, true);
    render(&mut out, "n2 restarts", &r, &names);
    let r = rib.peer_up(A, gr_client(9));
    render(&mut out, "n2 back", &r, &names);
    let r = rib.receive(A, Update::end_of_rib(AfiSafi::IPV4_UNICAST));
    render(&mut out, "n2 end-of-rib, nothing re-announced", &r, &names);
    let r = rib.peer_down(C, false);
    render(&mut out, "n4 down hard", &r, &names);
    let r = rib.withdraw_origin(pfx("198.18.0.0/26"));
    render(&mut out, "withdraw 198.18.0.0/26", &r, &names);
    let want = "\
> originate 198.18.0.0/26
best 198.18.0.0/26 local
> n2 up
n2 eor 1/1
n2 announce 198.18.0.0/26 nh 192.0.2.1 path [] lp 100
> n3 up
n3 eor 1/1
n3 announce 198.18.0.0/26 nh 192.0.2.1 path [] lp 100
> n4 up
n4 eor 1/1
n4 announce 198.18.0.0/26 nh 192.0.2.1 path [] lp 100
> tor up
tor eor 1/1
tor announce 198.18.0.0/26 nh 192.0.2.1 path [64512]
> n2 announces its block
best 198.18.0.64/26 192.0.2.9
n3 announce 198.18.0.64/26 nh 192.0.2.9 path [] lp 100 originator 192.0.2.9 clusters [192.0.2.100]
n4 announce 198.18.0.64/26 nh 192.0.2.9 path [] lp 100 originator 192.0.2.9 clusters [192.0.2.100]
tor announce 198.18.0.64/26 nh 192.0.2.1 path [64512]
> n4 announces its block
best 198.18.0.128/26 192.0.2.11
n2 announce 198.18.0.128/26 nh 192.0.2.11 path [] lp 100 originator 192.0.2.11 clusters [192.0.2.100]
n3 announce 198.18.0.128/26 nh 192.0.2.11 path [] lp 100 originator 192.0.2.11 clusters [192.0.2.100]
tor announce 198.18.0.128/26 nh 192.0.2.1 path [64512]
> tor announces a range and a default
best 203.0.113.0/24 192.0.2.20
n2 announce 203.0.113.0/24 nh 192.0.2.20 path [65020] lp 100
n3 announce 203.0.113.0/24 nh 192.0.2.20 path [65020] lp 100
n4 announce 203.0.113.0/24 nh 192.0.2.20 path [65020] lp 100
> n3 announces the same block (anycast)
best 198.18.0.64/26 192.0.2.9,192.0.2.10
> n2 restarts
> n2 back
n2 eor 1/1
n2 announce 198.18.0.0/26 nh 192.0.2.1 path [] lp 100
n2 announce 198.18.0.128/26 nh 192.0.2.11 path [] lp 100 originator 192.0.2.11 clusters [192.0.2.100]
n2 announce 203.0.113.0/24 nh 192.0.2.20 path [65020] lp 100
> n2 end-of-rib, nothing re-announced
best 198.18.0.64/26 192.0.2.10
n2 announce 198.18.0.64/26 nh 192.0.2.10 path [] lp 100 originator 192.0.2.10 clusters [192.0.2.100]
n3 withdraw 198.18.0.64/26
n4 announce 198.18.0.64/26 nh 192.0.2.10 path [] lp 100 originator 192.0.2.10 clusters [192.0.2.100]
> n4 down hard
best 198.18.0.128/26 unreachable
n2 withdraw 198.18.0.128/26
n3 withdraw 198.18.0.128/26
tor withdraw 198.18.0.128/26
> withdraw 198.18.0.0/26
best 198.18.0.0/26 unreachable
n2 withdraw 198.18.0.0/26
n3 withdraw 198.18.0.0/26
tor withdraw 198.18.0.0/26
";
    assert_eq!(out, want, "\n{out}");
}

// ---------------------------------------------------------------------------------------
// A sanity figure for the benchmark: 1,000,000 /32s from one eBGP peer, packed as BIRD
// packs them. Prints time and memory; asserts only correctness.

/// Time this thread has spent on a CPU, in ns (the machine may be busy with other work).
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn million_routes_sanity_figure() {
    const N: u32 = 1_000_000;
    let mut cfg = local(None);
    cfg.import.pools = vec!["100.64.0.0/10".parse().unwrap()];
    let mut rib = Rib::new(cfg);
    rib.peer_up(E, ebgp(20, 65020));
    // BIRD fills 4096-octet UPDATEs: about 800 /32s each.
    let per_update = 800u32;
    let updates: Vec<Update> = (0..N.div_ceil(per_update))
        .map(|i| {
            let mut u = announce(&[], "192.0.2.20", &[65020]);
            u.nlri = (i * per_update..((i + 1) * per_update).min(N))
                .map(|k| Ipv4Prefix::new(Ipv4Addr::from(0x6440_0000 + k), 32).unwrap())
                .collect();
            u
        })
        .collect();
    let rss_before = rss_bytes();
    let cpu_before = thread_cpu_ns();
    let start = std::time::Instant::now();
    let mut best_changes = 0;
    for u in updates {
        best_changes += rib.receive(E, u).best_changes.len();
    }
    let elapsed = start.elapsed();
    let cpu = thread_cpu_ns()
        .zip(cpu_before)
        .map(|(a, b)| (a - b) as f64 / 1e9);
    let rss_after = rss_bytes();
    assert_eq!(best_changes, N as usize);
    assert_eq!(rib.len(), N as usize);
    assert_eq!(rib.peer_counts(E).accepted, N as usize);
    let per_route = match (rss_before, rss_after) {
        (Some(b), Some(a)) => format!("{:.0}", a.saturating_sub(b) as f64 / f64::from(N)),
        _ => "?".into(),
    };
    println!(
        "1M /32 routes: {:.3} s wall, {} s CPU ({:.0} ns/route wall), ~{per_route} bytes/route \
         RSS growth, {} attribute sets",
        elapsed.as_secs_f64(),
        cpu.map_or("?".into(), |c| format!("{c:.3}")),
        elapsed.as_nanos() as f64 / f64::from(N),
        rib.attribute_sets()
    );
    let start = std::time::Instant::now();
    let c = rib.peer_down(E, false);
    println!(
        "1M /32 routes: session down withdraws them in {:.3} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(c.best_changes.len(), N as usize);
    assert!(rib.is_empty());
}

#[test]
fn route_refresh_resends_the_adj_rib_out() {
    let mut rib = Rib::new(local(None));
    rib.peer_up(E, ebgp(20, 65020));
    rib.originate(pfx("198.18.4.0/26"));
    rib.originate(pfx("198.18.4.64/26"));
    let u = rib.route_refresh(E, AfiSafi::IPV4_UNICAST);
    assert_eq!(u.len(), 2, "one packed UPDATE and End-of-RIB: {u:#?}");
    assert_eq!(u[0].nlri.len(), 2);
    assert_eq!(u[1].as_end_of_rib(), Some(AfiSafi::IPV4_UNICAST));
    let mut out: Vec<Prefix> = rib.adj_rib_out(E).map(|(p, _)| p).collect();
    out.sort();
    assert_eq!(out, vec![pfx("198.18.4.0/26"), pfx("198.18.4.64/26")]);
    assert!(
        rib.route_refresh(PeerId(99), AfiSafi::IPV4_UNICAST)
            .is_empty()
    );
}

#[test]
fn loc_rib_lists_every_path_with_its_source() {
    let mut rib = Rib::new(local(None));
    rib.peer_up(A, ibgp(9));
    rib.peer_up(B, ibgp(10));
    rib.originate(pfx("198.18.8.0/26"));
    rib.receive(A, announce(&["198.18.8.0/26"], "192.0.2.9", &[]));
    rib.receive(B, announce(&["198.18.9.0/26"], "192.0.2.10", &[]));
    let mut entries: Vec<_> = rib.loc_rib().collect();
    entries.sort_by_key(|e| e.prefix);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].best.source, RouteSource::Local);
    assert!(entries[0].next_hops.is_empty());
    let mut sources: Vec<_> = entries[0].paths.iter().map(|p| p.source).collect();
    sources.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(sources, vec![RouteSource::Local, RouteSource::Peer(A)]);
    assert_eq!(entries[1].best.source, RouteSource::Peer(B));
    assert_eq!(entries[1].best.attrs.next_hop, ip("192.0.2.10"));
    assert_eq!(entries[1].next_hops, vec![ip("192.0.2.10")]);
}

#[test]
fn slots_are_reused_after_a_peer_is_gone() {
    let mut rib = Rib::new(local(None));
    for round in 0..3u32 {
        for n in 0..4u32 {
            let id = PeerId(round * 10 + n);
            rib.peer_up(id, ibgp(9 + n as u8));
            rib.receive(id, announce(&["198.18.8.0/26"], "192.0.2.9", &[]));
        }
        for n in 0..4u32 {
            rib.peer_down(PeerId(round * 10 + n), false);
        }
    }
    assert!(rib.is_empty());
    assert_eq!(rib.peers.len(), 5, "slot 0 and four reused ones");
    assert_eq!(rib.attribute_sets(), 0);
}

#[test]
fn ipv4_prefix_with_ipv6_next_hop_does_not_hide_the_ipv6_one() {
    // RFC 8950-style IPv4 NLRI with an IPv6 next hop share the attribute set with an IPv6
    // prefix; the export of one must not stand in for the other.
    let mut rib = Rib::new(local(Some("192.0.2.100")));
    let mut a = client(9);
    a.import_all = true;
    rib.peer_up(A, a);
    let mut v4_over_v6 = announce6(&["2001:db8:1:8::/64"], "2001:db8::9", &[]);
    if let Some(r) = v4_over_v6.attributes.mp_reach.as_mut() {
        r.afi_safi = AfiSafi::IPV4_UNICAST;
        r.nlri = vec![pfx("198.18.8.0/26")];
    }
    rib.receive(A, v4_over_v6);
    rib.receive(A, announce6(&["2001:db8:1:8::/64"], "2001:db8::9", &[]));
    assert_eq!(rib.len(), 2);
    assert_eq!(rib.attribute_sets(), 1);
    let c = rib.peer_up(B, client(10));
    assert_eq!(announced_to(&c, B), vec![pfx("2001:db8:1:8::/64")]);
}

#[test]
fn max_prefix_stop_then_new_session_counts_from_zero() {
    for (split, report) in [(false, true), (true, true), (false, false), (true, false)] {
        let mut rib = Rib::new(local(None));
        rib.report_best_changes(report);
        let p3 = ["198.18.8.0/26", "198.18.9.0/26", "198.18.10.0/26"];
        for round in 0..2 {
            let mut a = ibgp(9);
            a.max_prefix = Some(2);
            rib.peer_up(A, a);
            if split {
                rib.receive(A, announce(&p3[..2], "192.0.2.9", &[]));
                let c = rib.receive(A, announce(&p3[2..], "192.0.2.9", &[]));
                assert!(
                    matches!(c.peer_action, Some(PeerAction::Stop(_))),
                    "{round}"
                );
            } else {
                let c = rib.receive(A, announce(&p3, "192.0.2.9", &[]));
                assert!(
                    matches!(c.peer_action, Some(PeerAction::Stop(_))),
                    "{round}"
                );
            }
            assert!(rib.is_empty(), "split {split} round {round}");
            assert_eq!(rib.peer_counts(A).accepted, 0);
            rib.peer_down(A, false);
        }
        let mut b = ibgp(9);
        b.max_prefix = Some(10);
        rib.peer_up(B, b);
        rib.receive(B, announce(&p3, "192.0.2.9", &[]));
        assert_eq!(rib.peer_counts(B).accepted, 3, "split {split}");
    }
}
