//! tabby's session layer against GoBGP (Debian `gobgpd`): eBGP over IPv4 and iBGP over IPv6,
//! routes both ways. Each test runs in its own network namespace with its own gobgpd (see
//! `daemons`), so it needs root.

mod daemons;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use bgp::fsm::State;
use bgp::packet::{
    AfiSafi, AsPath, Community, Ipv4Prefix, Ipv6Prefix, MpNextHop, MpReach, Origin, Prefix, Update,
};
use bgp::session::{Listener, LocalConfig, Session, SessionEvent, SessionHandle};
use daemons::{Gobgp, config, expect_established, expect_update, in_netns, poll};
use tokio::sync::mpsc;

const SECS: Duration = Duration::from_secs(20);

fn gobgp_config(asn: u32, local: &str, neighbor: &str, peer_asn: u32, family: &str) -> String {
    format!(
        r#"[global.config]
  as = {asn}
  router-id = "127.0.0.2"
  port = 179
  local-address-list = ["{local}"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "{neighbor}"
    peer-as = {peer_asn}
  [neighbors.transport.config]
    local-address = "{local}"
  [neighbors.timers.config]
    connect-retry = 1
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "{family}"
"#
    )
}

async fn start_tabby(yaml: &str) -> (SessionHandle, mpsc::Receiver<SessionEvent>, Listener) {
    let c = config(yaml);
    let listener = Listener::bind(&c.listen).await.unwrap();
    let incoming = listener.register(&c.peers[0]).unwrap();
    let (tx, rx) = mpsc::channel(1024);
    let h = Session::spawn(
        c.peers[0].clone(),
        LocalConfig::from_config(&c),
        Some(incoming),
        tx,
    );
    (h, rx, listener)
}

fn v4(s: &str) -> Ipv4Prefix {
    let (a, l) = s.split_once('/').unwrap();
    Ipv4Prefix::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
}

fn v6(s: &str) -> Ipv6Prefix {
    let (a, l) = s.split_once('/').unwrap();
    Ipv6Prefix::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
}

#[test]
fn gobgp_ebgp_ipv4_routes_flow_both_ways() {
    in_netns(&[], || async {
        let gobgp = Gobgp::start(&gobgp_config(
            65002,
            "127.0.0.2",
            "127.0.0.1",
            64512,
            "ipv4-unicast",
        ));
        let (h, mut rx, _l) = start_tabby(
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npeers:\n  - address: 127.0.0.2\n    asn: 65002\n    connect_retry: 1\n",
        )
        .await;
        let est = expect_established(&mut rx, SECS).await;
        assert!(!est.negotiated.ibgp);
        assert_eq!(est.negotiated.peer_asn, 65002);
        assert!(
            poll(SECS, || gobgp.established("127.0.0.1").then_some(()))
                .await
                .is_some()
        );

        gobgp.cli("global rib add 198.18.3.0/24 origin igp community 65002:7 med 10 aspath 65100");
        let u = expect_update(&mut rx, SECS, |u| u.nlri.contains(&v4("198.18.3.0/24"))).await;
        let a = &u.attributes;
        assert_eq!(a.origin, Some(Origin::Igp));
        assert_eq!(a.as_path, Some(AsPath::from_sequence(vec![65002, 65100])));
        assert_eq!(a.next_hop, Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(a.med, Some(10));
        assert_eq!(a.communities, vec![Community::new(65002, 7)]);

        let mut ours = Update {
            nlri: vec![v4("198.18.4.0/26")],
            ..Update::default()
        };
        ours.attributes.origin = Some(Origin::Igp);
        ours.attributes.as_path = Some(AsPath::from_sequence(vec![64512]));
        // GoBGP treats a loopback next hop as invalid (treat-as-withdraw): use a documentation
        // address; it is only an attribute here, nothing routes to it.
        ours.attributes.next_hop = Some(Ipv4Addr::new(203, 0, 113, 1));
        ours.attributes.communities = vec![Community::new(64512, 9)];
        h.send(vec![ours]);
        let rib = poll(SECS, || {
            let out = gobgp.cli("global rib 198.18.4.0/26");
            out.contains("198.18.4.0/26").then_some(out)
        })
        .await
        .unwrap_or_else(|| panic!("GoBGP did not learn 198.18.4.0/26: {}", gobgp.output()));
        assert!(rib.contains("203.0.113.1"), "{rib}");
        assert!(rib.contains("64512"), "{rib}");
        assert!(rib.contains("64512:9"), "{rib}");

        // GoBGP's withdrawal arrives as one.
        gobgp.cli("global rib del 198.18.3.0/24");
        let w = expect_update(&mut rx, SECS, |u| !u.withdrawn.is_empty()).await;
        assert_eq!(w.withdrawals(), vec![Prefix::V4(v4("198.18.3.0/24"))]);
        assert_eq!(h.status().state, State::Established);
    });
}

#[test]
fn gobgp_ibgp_ipv6_routes_flow_both_ways() {
    in_netns(&["2001:db8::1", "2001:db8::2"], || async {
        let gobgp = Gobgp::start(&gobgp_config(
            64512,
            "2001:db8::2",
            "2001:db8::1",
            64512,
            "ipv6-unicast",
        ));
        let (h, mut rx, _l) = start_tabby(
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"[2001:db8::1]:179\"]\npeers:\n  - address: 2001:db8::2\n    asn: 64512\n    connect_retry: 1\n",
        )
        .await;
        let est = expect_established(&mut rx, SECS).await;
        assert!(est.negotiated.ibgp && est.negotiated.ipv6_unicast);
        assert!(!est.negotiated.ipv4_unicast);

        gobgp.cli("global rib -a ipv6 add 2001:db8:300::/48 nexthop 2001:db8::2 local-pref 120");
        let want = Prefix::V6(v6("2001:db8:300::/48"));
        let u = expect_update(&mut rx, SECS, |u| u.announced().contains(&want)).await;
        let a = &u.attributes;
        assert_eq!(a.local_pref, Some(120));
        assert_eq!(a.as_path, Some(AsPath::default()));
        match a.mp_reach.as_ref().map(|r| r.next_hop) {
            Some(MpNextHop::V6 { global, .. }) => {
                assert_eq!(global, "2001:db8::2".parse::<Ipv6Addr>().unwrap())
            }
            other => panic!("IPv6 next hop expected, got {other:?}"),
        }

        let mut ours = Update::default();
        ours.attributes.origin = Some(Origin::Igp);
        ours.attributes.as_path = Some(AsPath::default());
        ours.attributes.local_pref = Some(100);
        ours.attributes.mp_reach = Some(MpReach {
            afi_safi: AfiSafi::IPV6_UNICAST,
            next_hop: MpNextHop::V6 {
                global: "2001:db8::1".parse().unwrap(),
                link_local: None,
            },
            nlri: vec![Prefix::V6(v6("2001:db8:400::/48"))],
        });
        h.send(vec![ours]);
        let rib = poll(SECS, || {
            let out = gobgp.cli("global rib -a ipv6 2001:db8:400::/48");
            out.contains("2001:db8:400::/48").then_some(out)
        })
        .await
        .unwrap_or_else(|| panic!("GoBGP did not learn 2001:db8:400::/48: {}", gobgp.output()));
        assert!(rib.contains("2001:db8::1"), "{rib}");
        assert_eq!(h.status().state, State::Established);
    });
}
