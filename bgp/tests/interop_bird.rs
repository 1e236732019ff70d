//! tabby's session layer against BIRD 2 (Debian `bird2`): iBGP and eBGP, IPv4 and IPv6,
//! routes both ways, TCP MD5 (right and wrong password), GTSM. Each test runs in its own
//! network namespace with its own BIRD (see `daemons`), so it needs root.

mod daemons;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use bgp::fsm::State;
use bgp::packet::{
    AfiSafi, AsPath, Community, Ipv4Prefix, Ipv6Prefix, LargeCommunity, MpNextHop, MpReach, Origin,
    Prefix, Update,
};
use bgp::session::{Listener, LocalConfig, Session, SessionEvent, SessionHandle};
use daemons::{Bird, config, expect_established, expect_update, in_netns, poll};
use tokio::sync::mpsc;

const SECS: Duration = Duration::from_secs(20);

/// BIRD's side of every test: a device protocol, static routes to export, and one BGP
/// protocol named `tabby` with the given body.
fn bird_config(router_id: &str, statics4: &[&str], statics6: &[&str], bgp: &str) -> String {
    let s4: String = statics4
        .iter()
        .map(|p| format!("  route {p} blackhole;\n"))
        .collect();
    let s6: String = statics6
        .iter()
        .map(|p| format!("  route {p} blackhole;\n"))
        .collect();
    format!(
        r#"router id {router_id};
log "bird.log" all;
protocol device {{}}
protocol static s4 {{
  ipv4;
{s4}}}
protocol static s6 {{
  ipv6;
{s6}  route 2001:db8::/64 via "lo";
}}
filter ex4 {{
  if net = 198.18.1.0/26 then {{
    bgp_med = 50;
    bgp_community.add((65002,100));
    bgp_large_community.add((65002,1,2));
  }}
  accept;
}}
filter ex6 {{
  if net ~ 2001:db8::/64 then reject;
  accept;
}}
protocol bgp tabby {{
{bgp}
}}
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

/// Waits until `birdc show route for PREFIX all` shows a BGP route from tabby; returns it.
async fn bird_learns(bird: &Bird, prefix: &str) -> String {
    poll(SECS, || {
        let out = bird.birdc(&format!("show route {prefix} all"));
        out.contains("[tabby").then_some(out)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "BIRD did not learn {prefix}: {}\n{}",
            bird.birdc("show route all"),
            bird.output()
        )
    })
}

#[test]
fn bird_ibgp_ipv4_routes_flow_both_ways() {
    in_netns(&[], || async {
        let bird = Bird::start(&bird_config(
            "127.0.0.2",
            &["198.18.1.0/26", "198.18.1.64/26"],
            &[],
            "  local 127.0.0.2 as 64512;\n  neighbor 127.0.0.1 as 64512;\n  strict bind yes;\n  multihop;\n  connect retry time 1;\n  graceful restart on;\n  ipv4 { import all; export filter ex4; next hop self; };",
        ));
        let (h, mut rx, _l) = start_tabby(
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npeers:\n  - address: 127.0.0.2\n    asn: 64512\n    graceful_restart: true\n",
        )
        .await;
        let est = expect_established(&mut rx, SECS).await;
        assert!(est.negotiated.ibgp && est.negotiated.four_octet_asn);
        assert!(est.negotiated.peer_graceful_restart.is_some());
        assert_eq!(est.remote_open.bgp_identifier, Ipv4Addr::new(127, 0, 0, 2));
        assert!(bird.established("tabby"), "{}", bird.output());

        // BIRD's routes arrive decoded, with their attributes, and then its End-of-RIB.
        let mut got = Vec::new();
        while got.len() < 2 {
            got.push(expect_update(&mut rx, SECS, |u| !u.nlri.is_empty()).await);
        }
        got.sort_by_key(|u| u.nlri.clone());
        assert_eq!(got[1].nlri, vec![v4("198.18.1.64/26")]);
        assert_eq!(got[1].attributes.med, None);
        let u = &got[0];
        assert_eq!(u.nlri, vec![v4("198.18.1.0/26")]);
        let a = &u.attributes;
        assert_eq!(a.origin, Some(Origin::Igp));
        assert_eq!(a.as_path, Some(AsPath::default()));
        assert_eq!(a.next_hop, Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(a.med, Some(50));
        assert_eq!(a.local_pref, Some(100));
        assert_eq!(a.communities, vec![Community::new(65002, 100)]);
        assert_eq!(
            a.large_communities,
            vec![LargeCommunity {
                global_admin: 65002,
                local_data_1: 1,
                local_data_2: 2
            }]
        );
        let eor = expect_update(&mut rx, SECS, |_| true).await;
        assert_eq!(eor.as_end_of_rib(), Some(AfiSafi::IPV4_UNICAST));

        // Our UPDATE reaches BIRD's table.
        let mut ours = Update {
            nlri: vec![v4("198.18.2.0/26")],
            ..Update::default()
        };
        ours.attributes.origin = Some(Origin::Igp);
        ours.attributes.as_path = Some(AsPath::default());
        ours.attributes.next_hop = Some(Ipv4Addr::new(127, 0, 0, 1));
        ours.attributes.local_pref = Some(150);
        ours.attributes.communities = vec![Community::new(64512, 7)];
        h.send(vec![ours]);
        let route = bird_learns(&bird, "198.18.2.0/26").await;
        assert!(route.contains("BGP.local_pref: 150"), "{route}");
        assert!(route.contains("(64512,7)"), "{route}");
        assert!(route.contains("BGP.next_hop: 127.0.0.1"), "{route}");

        // And a withdrawal removes it.
        h.send(vec![Update {
            withdrawn: vec![v4("198.18.2.0/26")],
            ..Update::default()
        }]);
        poll(SECS, || {
            (!bird.birdc("show route 198.18.2.0/26").contains("[tabby")).then_some(())
        })
        .await
        .expect("BIRD still has the withdrawn route");
        assert_eq!(h.status().state, State::Established);
        assert!(h.status().updates_out == 2);
    });
}

#[test]
fn bird_ebgp_ipv6_routes_flow_both_ways() {
    in_netns(&["2001:db8::1", "2001:db8::2"], || async {
        let bird = Bird::start(&bird_config(
            "127.0.0.2",
            &[],
            &["2001:db8:100::/48"],
            "  local 2001:db8::2 as 65002;\n  neighbor 2001:db8::1 as 64512;\n  strict bind yes;\n  multihop;\n  connect retry time 1;\n  ipv6 { import all; export filter ex6; next hop self; };",
        ));
        let (h, mut rx, _l) = start_tabby(
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"[2001:db8::1]:179\"]\npeers:\n  - address: 2001:db8::2\n    asn: 65002\n",
        )
        .await;
        let est = expect_established(&mut rx, SECS).await;
        assert!(!est.negotiated.ibgp && est.negotiated.ipv6_unicast);
        assert_eq!(
            est.remote_addr.ip(),
            "2001:db8::2".parse::<IpAddr>().unwrap()
        );

        let want = Prefix::V6(v6("2001:db8:100::/48"));
        let u = expect_update(&mut rx, SECS, |u| u.announced().contains(&want)).await;
        let a = &u.attributes;
        assert_eq!(a.as_path, Some(AsPath::from_sequence(vec![65002])));
        assert_eq!(a.local_pref, None, "eBGP carries no LOCAL_PREF");
        let r = a.mp_reach.as_ref().unwrap();
        assert_eq!(r.afi_safi, AfiSafi::IPV6_UNICAST);
        match r.next_hop {
            MpNextHop::V6 { global, .. } => {
                assert_eq!(global, "2001:db8::2".parse::<Ipv6Addr>().unwrap())
            }
            other => panic!("IPv6 next hop expected, got {other:?}"),
        }

        let mut ours = Update::default();
        ours.attributes.origin = Some(Origin::Igp);
        ours.attributes.as_path = Some(AsPath::from_sequence(vec![64512]));
        ours.attributes.mp_reach = Some(MpReach {
            afi_safi: AfiSafi::IPV6_UNICAST,
            next_hop: MpNextHop::V6 {
                global: "2001:db8::1".parse().unwrap(),
                link_local: None,
            },
            nlri: vec![Prefix::V6(v6("2001:db8:200::/48"))],
        });
        h.send(vec![ours]);
        let route = bird_learns(&bird, "2001:db8:200::/48").await;
        assert!(route.contains("BGP.as_path: 64512"), "{route}");
        assert!(route.contains("2001:db8::1"), "{route}");
    });
}

#[test]
fn bird_ebgp_ipv4_with_gtsm() {
    in_netns(&[], || async {
        let bird = Bird::start(&bird_config(
            "127.0.0.2",
            &["198.18.1.0/26"],
            &[],
            "  local 127.0.0.2 as 65002;\n  neighbor 127.0.0.1 as 64512;\n  strict bind yes;\n  multihop 1;\n  ttl security on;\n  connect retry time 1;\n  ipv4 { import all; export filter ex4; next hop self; };",
        ));
        let (_h, mut rx, _l) = start_tabby(
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npeers:\n  - address: 127.0.0.2\n    asn: 65002\n    ttl_security: true\n",
        )
        .await;
        expect_established(&mut rx, SECS).await;
        let u = expect_update(&mut rx, SECS, |u| u.nlri.contains(&v4("198.18.1.0/26"))).await;
        assert_eq!(
            u.attributes.as_path,
            Some(AsPath::from_sequence(vec![65002]))
        );
        assert!(bird.established("tabby"));
    });
}

const MD5_BGP: &str = "  local 127.0.0.2 as 64512;\n  neighbor 127.0.0.1 as 64512;\n  strict bind yes;\n  multihop;\n  connect retry time 1;\n  password \"s3cret\";\n  ipv4 { import all; export filter ex4; next hop self; };";

#[test]
fn bird_md5_session_comes_up() {
    in_netns(&[], || async {
        let bird = Bird::start(&bird_config("127.0.0.2", &["198.18.1.0/26"], &[], MD5_BGP));
        let (h, mut rx, _l) = start_tabby(
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npeers:\n  - address: 127.0.0.2\n    asn: 64512\n    password: s3cret\n    connect_retry: 1\n",
        )
        .await;
        expect_established(&mut rx, SECS).await;
        expect_update(&mut rx, SECS, |u| u.nlri.contains(&v4("198.18.1.0/26"))).await;
        assert!(bird.established("tabby"), "{}", bird.output());
        assert_eq!(h.status().state, State::Established);
    });
}

#[test]
fn bird_md5_wrong_password_never_comes_up() {
    in_netns(&[], || async {
        let bird = Bird::start(&bird_config("127.0.0.2", &["198.18.1.0/26"], &[], MD5_BGP));
        let (h, mut rx, _l) = start_tabby(
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npeers:\n  - address: 127.0.0.2\n    asn: 64512\n    password: wrong\n    connect_retry: 1\n",
        )
        .await;
        // Several connect retries on both sides, and no OPEN ever exchanged.
        let got = tokio::time::timeout(Duration::from_secs(8), rx.recv()).await;
        assert!(got.is_err(), "no session event expected, got {got:?}");
        let s = h.status();
        assert!(
            matches!(s.state, State::Connect | State::Active | State::Idle),
            "{s:?}"
        );
        assert_eq!(s.messages_in, 0);
        assert!(!bird.established("tabby"));
    });
}

#[test]
fn bird_both_sides_connect_at_once() {
    in_netns(&[], || async {
        // Both sides active with a 1 s retry: whichever connections cross, exactly one session
        // comes up and stays up (RFC 4271 §6.8).
        let bird = Bird::start(&bird_config(
            "127.0.0.2",
            &["198.18.1.0/26"],
            &[],
            "  local 127.0.0.2 as 64512;\n  neighbor 127.0.0.1 as 64512;\n  strict bind yes;\n  multihop;\n  connect delay time 1;\n  connect retry time 1;\n  ipv4 { import all; export filter ex4; next hop self; };",
        ));
        let (h, mut rx, _l) = start_tabby(
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npeers:\n  - address: 127.0.0.2\n    asn: 64512\n    connect_retry: 1\n",
        )
        .await;
        expect_established(&mut rx, SECS).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let s = h.status();
        assert_eq!(s.state, State::Established);
        assert_eq!(s.established_count, 1);
        assert!(bird.established("tabby"));
    });
}
