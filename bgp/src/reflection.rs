//! Who hears which route, and with which attributes: iBGP split horizon (RFC 4271 §9.2),
//! route reflection (RFC 4456 §6, §8), the loop checks on input, and the attribute and
//! NEXT_HOP rewrites on output.
//!
//! Advertisement matrix ([`may_advertise`]); "—" = not advertised:
//!
//! | learned from \ to    | eBGP peer | iBGP client | iBGP non-client |
//! |----------------------|-----------|-------------|-----------------|
//! | this speaker (local) | yes       | yes         | yes             |
//! | eBGP peer            | yes       | yes         | yes             |
//! | iBGP client (RR)     | yes       | yes         | yes             |
//! | iBGP non-client (RR) | yes       | yes         | —               |
//! | iBGP peer (no RR)    | yes       | —           | —               |
//!
//! A route is never sent back to the peer it was learned from (the RIB checks that).
//!
//! NEXT_HOP ([`export`]) per [`NextHop`] mode:
//!
//! | mode          | to eBGP            | to iBGP                                         |
//! |---------------|--------------------|-------------------------------------------------|
//! | `Default`     | our session address| unchanged for learned routes (reflected or eBGP-learned, RFC 4271 §5.1.3); our session address for locally originated ones |
//! | `SelfAddress` | our session address| our session address                             |
//! | `Keep`        | unchanged          | unchanged                                       |
//!
//! Locally originated routes have no next hop to keep, so they always carry our session
//! address. The address is the one of the prefix's family (`local_v4` for IPv4 prefixes,
//! `local_v6` for IPv6 ones); when the session has none of that family, or a kept next hop
//! is of the other family, the route is not advertised to that peer. A received IPv6
//! link-local next hop is never passed on: it is only meaningful on the link it came from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::NextHop;
use crate::packet::{AsPath, Community, PathAttributes};
use crate::rib::RouteAttrs;

/// Where a route in the Loc-RIB came from, as far as advertising it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Originated by this speaker.
    Local,
    /// From an external peer.
    Ebgp,
    /// From an internal peer that is our route reflector client.
    IbgpClient,
    /// From any other internal peer (with no cluster id set, every internal peer).
    IbgpNonClient,
}

/// The peer a route is to be advertised to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub ebgp: bool,
    /// Our route reflector client (only meaningful when we have a cluster id).
    pub rr_client: bool,
    pub next_hop: NextHop,
    /// Our address on the session, per family, for next-hop-self.
    pub local_v4: Option<Ipv4Addr>,
    pub local_v6: Option<Ipv6Addr>,
}

/// Our own identity, as the rewrites need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speaker {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// RFC 4456 CLUSTER_ID; `Some` makes this speaker a route reflector.
    pub cluster_id: Option<Ipv4Addr>,
}

/// Why a received route was dropped as a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopReason {
    /// RFC 4271 §9.1.2: our AS is in the AS_PATH of a route from an external peer.
    AsPath,
    /// RFC 4456 §8: the ORIGINATOR_ID is our router id: we sent this route.
    OriginatorId,
    /// RFC 4456 §8: our CLUSTER_ID is in the CLUSTER_LIST: the route went round the cluster.
    ClusterList,
}

/// The loop checks on input. A route failing one is not used (RFC 4271 §9.1.2 says it is
/// "excluded from the Phase 2 decision function"; here it counts as rejected).
pub fn input_loop(attrs: &PathAttributes, from_ebgp: bool, me: &Speaker) -> Option<LoopReason> {
    if from_ebgp && attrs.as_path.as_ref().is_some_and(|p| p.contains(me.asn)) {
        return Some(LoopReason::AsPath);
    }
    if attrs.originator_id == Some(me.router_id) {
        return Some(LoopReason::OriginatorId);
    }
    if me
        .cluster_id
        .is_some_and(|id| attrs.cluster_list.contains(&id))
    {
        return Some(LoopReason::ClusterList);
    }
    None
}

/// iBGP split horizon and the RFC 4456 §6 reflection rules: whether a route learned as
/// `from` may be advertised to `to` (see the module's matrix).
pub fn may_advertise(from: Learned, to: &Target, route_reflector: bool) -> bool {
    match from {
        Learned::Local | Learned::Ebgp => true,
        _ if to.ebgp => true,
        // RFC 4456 §6: "A route from a Client peer: reflect to all the Non-Client peers and
        // also to the Client peers".
        Learned::IbgpClient => route_reflector,
        // RFC 4456 §6: "A route from a Non-Client IBGP peer: reflect to all the Clients".
        // Without reflection, RFC 4271 §9.2: never to another internal peer.
        Learned::IbgpNonClient => route_reflector && to.rr_client,
    }
}

/// The attributes to advertise `route` with to `to`, or `None` when it must not be
/// advertised there (communities, or no usable next hop). `originator` is the BGP
/// identifier of the peer the route was learned from; `v6` says the prefix is IPv6.
///
/// - to eBGP: our AS prepended (RFC 4271 §5.1.2), LOCAL_PREF removed (§5.1.5), MED removed
///   unless we set it (§5.1.4: not passed from one neighbouring AS to another),
///   ORIGINATOR_ID and CLUSTER_LIST removed (RFC 4456 §8: they never leave the AS);
/// - to iBGP: LOCAL_PREF set to our degree of preference (§5.1.5);
///   reflected routes (learned over iBGP) get ORIGINATOR_ID set to the originating peer's
///   router id when absent and our CLUSTER_ID prepended to the CLUSTER_LIST (RFC 4456 §8);
/// - unknown optional transitive attributes go on with the Partial bit, unknown
///   non-transitive ones are dropped (RFC 4271 §5);
/// - RFC 1997: NO_ADVERTISE goes to no peer, NO_EXPORT and NO_EXPORT_SUBCONFED to no eBGP
///   peer.
pub fn export(
    route: &RouteAttrs,
    from: Learned,
    originator: Ipv4Addr,
    to: &Target,
    me: &Speaker,
    v6: bool,
) -> Option<RouteAttrs> {
    let communities = &route.attrs.communities;
    if communities.contains(&Community::NO_ADVERTISE) {
        return None;
    }
    if to.ebgp
        && (communities.contains(&Community::NO_EXPORT)
            || communities.contains(&Community::NO_EXPORT_SUBCONFED))
    {
        return None;
    }
    let next_hop = export_next_hop(route.next_hop, from, to, v6)?;
    let mut a = route.attrs.clone();
    a.next_hop = None;
    a.mp_reach = None;
    a.mp_unreach = None;
    if from != Learned::Local {
        a.unknown = a.unknown_to_pass_on();
    }
    if to.ebgp {
        a.as_path
            .get_or_insert_with(AsPath::default)
            .prepend(me.asn, 1);
        a.local_pref = None;
        if from != Learned::Local {
            a.med = None;
        }
        a.originator_id = None;
        a.cluster_list.clear();
    } else {
        a.as_path.get_or_insert_with(AsPath::default);
        a.local_pref = Some(match from {
            Learned::Ebgp => 100,
            _ => a.local_pref.unwrap_or(100),
        });
        if matches!(from, Learned::IbgpClient | Learned::IbgpNonClient) {
            a.originator_id.get_or_insert(originator);
            if let Some(id) = me.cluster_id {
                a.cluster_list.insert(0, id);
            }
        }
    }
    Some(RouteAttrs { attrs: a, next_hop })
}

/// The NEXT_HOP rule of the module docs.
fn export_next_hop(current: IpAddr, from: Learned, to: &Target, v6: bool) -> Option<IpAddr> {
    let own = if v6 {
        to.local_v6.map(IpAddr::V6)
    } else {
        to.local_v4.map(IpAddr::V4)
    };
    let keep = (from != Learned::Local && !current.is_unspecified()).then_some(current);
    let chosen = match to.next_hop {
        NextHop::SelfAddress => own,
        NextHop::Keep => keep.or(own),
        NextHop::Default if to.ebgp => own,
        NextHop::Default => keep.or(own),
    }?;
    (chosen.is_ipv6() == v6).then_some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Origin;

    const ME: Speaker = Speaker {
        asn: 64512,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        cluster_id: None,
    };
    const RR: Speaker = Speaker {
        cluster_id: Some(Ipv4Addr::new(192, 0, 2, 100)),
        ..ME
    };

    fn target(ebgp: bool, rr_client: bool) -> Target {
        Target {
            ebgp,
            rr_client,
            next_hop: NextHop::Default,
            local_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
            local_v6: Some("2001:db8::1".parse().unwrap()),
        }
    }

    fn route(nh: &str) -> RouteAttrs {
        RouteAttrs {
            attrs: PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::default()),
                local_pref: Some(150),
                med: Some(7),
                ..Default::default()
            },
            next_hop: nh.parse().unwrap(),
        }
    }

    #[test]
    fn reflection_matrix() {
        use Learned::*;
        let ebgp = target(true, false);
        let client = target(false, true);
        let non_client = target(false, false);
        let cases = [
            (Local, [true, true, true], [true, true, true]),
            (Ebgp, [true, true, true], [true, true, true]),
            (IbgpClient, [true, true, true], [true, false, false]),
            (IbgpNonClient, [true, true, false], [true, false, false]),
        ];
        for (from, with_rr, without_rr) in cases {
            for (i, to) in [ebgp, client, non_client].iter().enumerate() {
                assert_eq!(may_advertise(from, to, true), with_rr[i], "{from:?} {i} rr");
                assert_eq!(
                    may_advertise(from, to, false),
                    without_rr[i],
                    "{from:?} {i}"
                );
            }
        }
    }

    #[test]
    fn loop_checks() {
        let mut a = route("192.0.2.9").attrs;
        a.as_path = Some(AsPath::from_sequence(vec![65001, 64512]));
        assert_eq!(input_loop(&a, true, &ME), Some(LoopReason::AsPath));
        assert_eq!(
            input_loop(&a, false, &ME),
            None,
            "AS_PATH is checked on eBGP input"
        );
        let mut a = route("192.0.2.9").attrs;
        a.originator_id = Some(ME.router_id);
        assert_eq!(input_loop(&a, false, &ME), Some(LoopReason::OriginatorId));
        let mut a = route("192.0.2.9").attrs;
        a.cluster_list = vec![Ipv4Addr::new(192, 0, 2, 7), Ipv4Addr::new(192, 0, 2, 100)];
        assert_eq!(input_loop(&a, false, &RR), Some(LoopReason::ClusterList));
        assert_eq!(input_loop(&a, false, &ME), None);
    }

    #[test]
    fn reflected_route_gets_originator_id_and_cluster_list() {
        let r = route("192.0.2.9");
        let out = export(
            &r,
            Learned::IbgpClient,
            Ipv4Addr::new(192, 0, 2, 9),
            &target(false, true),
            &RR,
            false,
        )
        .unwrap();
        assert_eq!(out.attrs.originator_id, Some(Ipv4Addr::new(192, 0, 2, 9)));
        assert_eq!(out.attrs.cluster_list, vec![Ipv4Addr::new(192, 0, 2, 100)]);
        assert_eq!(out.next_hop, r.next_hop, "reflected: next hop unchanged");
        assert_eq!(out.attrs.local_pref, Some(150));
        // An existing ORIGINATOR_ID is kept; the cluster id goes in front.
        let mut r2 = r.clone();
        r2.attrs.originator_id = Some(Ipv4Addr::new(192, 0, 2, 50));
        r2.attrs.cluster_list = vec![Ipv4Addr::new(192, 0, 2, 200)];
        let out = export(
            &r2,
            Learned::IbgpNonClient,
            Ipv4Addr::new(192, 0, 2, 9),
            &target(false, true),
            &RR,
            false,
        )
        .unwrap();
        assert_eq!(out.attrs.originator_id, Some(Ipv4Addr::new(192, 0, 2, 50)));
        assert_eq!(
            out.attrs.cluster_list,
            vec![Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 200)]
        );
    }

    #[test]
    fn ebgp_export_prepends_and_strips() {
        let mut r = route("192.0.2.9");
        r.attrs.originator_id = Some(Ipv4Addr::new(192, 0, 2, 50));
        r.attrs.cluster_list = vec![Ipv4Addr::new(192, 0, 2, 200)];
        let out = export(
            &r,
            Learned::IbgpClient,
            Ipv4Addr::new(192, 0, 2, 9),
            &target(true, false),
            &RR,
            false,
        )
        .unwrap();
        assert_eq!(out.attrs.as_path, Some(AsPath::from_sequence(vec![64512])));
        assert_eq!(out.attrs.local_pref, None);
        assert_eq!(out.attrs.med, None);
        assert_eq!(out.attrs.originator_id, None);
        assert!(out.attrs.cluster_list.is_empty());
        assert_eq!(out.next_hop, "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn next_hop_rules_per_role() {
        use Learned::*;
        let own4: IpAddr = "192.0.2.1".parse().unwrap();
        let theirs: IpAddr = "192.0.2.9".parse().unwrap();
        let unspec: IpAddr = Ipv4Addr::UNSPECIFIED.into();
        let cases = [
            // (mode, to ebgp, from, route's next hop, expected)
            (NextHop::Default, false, IbgpClient, theirs, theirs),
            (NextHop::Default, false, Ebgp, theirs, theirs),
            (NextHop::Default, false, Local, unspec, own4),
            (NextHop::Default, true, IbgpNonClient, theirs, own4),
            (NextHop::Default, true, Local, unspec, own4),
            (NextHop::SelfAddress, false, IbgpClient, theirs, own4),
            (NextHop::SelfAddress, true, Ebgp, theirs, own4),
            (NextHop::Keep, true, Ebgp, theirs, theirs),
            (NextHop::Keep, true, Local, unspec, own4),
            (NextHop::Keep, false, IbgpClient, theirs, theirs),
        ];
        for (mode, ebgp, from, nh, want) in cases {
            let mut t = target(ebgp, true);
            t.next_hop = mode;
            let mut r = route("0.0.0.0");
            r.next_hop = nh;
            let out = export(&r, from, Ipv4Addr::new(192, 0, 2, 9), &t, &RR, false).unwrap();
            assert_eq!(out.next_hop, want, "{mode:?} ebgp={ebgp} {from:?}");
        }
    }

    #[test]
    fn next_hop_needs_an_address_of_the_family() {
        let mut t = target(true, false);
        t.local_v6 = None;
        let r = route("2001:db8::9");
        let me = Ipv4Addr::new(192, 0, 2, 9);
        assert!(export(&r, Learned::Ebgp, me, &t, &ME, true).is_none());
        t.next_hop = NextHop::Keep;
        assert!(export(&r, Learned::Ebgp, me, &t, &ME, true).is_some());
        // An IPv4 next hop for an IPv6 prefix is not something we can send.
        let r = route("192.0.2.9");
        assert!(export(&r, Learned::Ebgp, me, &t, &ME, true).is_none());
    }

    #[test]
    fn well_known_communities() {
        let mut r = route("192.0.2.9");
        r.attrs.communities = vec![Community::NO_EXPORT];
        let me = Ipv4Addr::new(192, 0, 2, 9);
        assert!(export(&r, Learned::Ebgp, me, &target(true, false), &ME, false).is_none());
        assert!(export(&r, Learned::Ebgp, me, &target(false, false), &ME, false).is_some());
        r.attrs.communities = vec![Community::NO_ADVERTISE];
        assert!(export(&r, Learned::Ebgp, me, &target(false, false), &ME, false).is_none());
    }
}
