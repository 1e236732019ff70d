//! The `tabby-bgpd` binary against BIRD 2 (Debian `bird2`): routes both ways with their
//! attributes, route reflection in both directions, graceful restart after kill -9,
//! max-prefix, live config change (SIGHUP), the control socket. Each test runs in its own
//! network namespace (see `daemons`), so it needs root; every process is killed and every
//! temp file removed on drop, also when the test fails.

mod daemons;
mod interop_speaker_harness;

use std::net::IpAddr;
use std::time::Duration;

use bgp::speaker::PeerStatus;
use daemons::{Bird, in_netns, poll};
use interop_speaker_harness::{Bgpd, SECS};

/// A BIRD with static routes to export and the given BGP protocols (name, body).
fn bird_conf(router_id: &str, statics: &[&str], protocols: &[(&str, &str)]) -> String {
    let s: String = statics
        .iter()
        .map(|p| format!("  route {p} blackhole;\n"))
        .collect();
    let mut c = format!(
        "router id {router_id};\nlog \"bird.log\" all;\nprotocol device {{}}\nprotocol static s4 {{\n  ipv4;\n{s}}}\n\
         filter ex4 {{\n  if net = 198.18.1.0/26 then {{ bgp_med = 50; bgp_community.add((65002,100)); }}\n  accept;\n}}\n"
    );
    for (name, body) in protocols {
        c.push_str(&format!("protocol bgp {name} {{\n{body}\n}}\n"));
    }
    c
}

/// A BGP protocol body towards tabby-bgpd.
fn bird_bgp(local: &str, local_as: u32, neighbor: &str, neighbor_as: u32, extra: &str) -> String {
    format!(
        "  local {local} as {local_as};\n  neighbor {neighbor} as {neighbor_as};\n  strict bind yes;\n  multihop;\n  connect retry time 1;\n  error wait time 1, 2;\n{extra}  ipv4 {{ import all; export filter ex4; }};"
    )
}

/// Waits until `birdc show route PREFIX all` shows a route from protocol `proto`.
async fn bird_learns(bird: &Bird, prefix: &str, proto: &str) -> String {
    poll(SECS, || {
        let out = bird.birdc(&format!("show route {prefix} all"));
        out.contains(&format!("[{proto} ")).then_some(out)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "BIRD did not learn {prefix} from {proto}: {}\n{}",
            bird.birdc("show route all"),
            bird.output()
        )
    })
}

async fn bird_established(bird: &Bird, proto: &str) {
    poll(SECS, || bird.established(proto).then_some(()))
        .await
        .unwrap_or_else(|| panic!("BIRD's {proto} not Established: {}", bird.output()));
}

#[test]
fn bgpd_bird_ebgp_routes_flow_both_ways() {
    in_netns(&[], || async {
        let dir = tempfile::tempdir().unwrap();
        let bird = Bird::start(&bird_conf(
            "127.0.0.2",
            &["198.18.1.0/26", "198.18.1.64/26", "10.9.0.0/16"],
            &[(
                "tabby",
                &bird_bgp("127.0.0.2", 65002, "127.0.0.1", 64512, ""),
            )],
        ));
        let bgpd = Bgpd::start(
            dir.path(),
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npools: [\"198.18.0.0/15\"]\noriginate: [\"198.18.4.0/26\"]\npeers:\n  - address: 127.0.0.2\n    asn: 65002\n    connect_retry: 1\n",
        );
        bgpd.wait_established("127.0.0.2").await;

        // BIRD → tabby: the attributes as BIRD sent them; 10.9.0.0/16 is outside the pools.
        let r = bgpd.learns("198.18.1.0/26", |_| true).await;
        assert_eq!(r.next_hops, vec!["127.0.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.from, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(r.as_path, "65002");
        assert_eq!(r.origin, "IGP");
        assert_eq!(r.med, Some(50));
        assert!(!r.local);
        bgpd.learns("198.18.1.64/26", |r| r.med.is_none()).await;
        let p = bgpd.peer("127.0.0.2").await;
        assert_eq!((p.received, p.accepted, p.rejected), (3, 2, 1), "{p:?}");
        assert_eq!(p.peer_type, "ebgp");
        assert!(
            bgpd.routes()
                .await
                .iter()
                .all(|r| r.prefix.to_string() != "10.9.0.0/16")
        );

        // tabby → BIRD: our block with our AS and our address as next hop; BIRD's own
        // routes are not sent back.
        let route = bird_learns(&bird, "198.18.4.0/26", "tabby").await;
        assert!(route.contains("BGP.as_path: 64512"), "{route}");
        assert!(route.contains("BGP.next_hop: 127.0.0.1"), "{route}");
        assert!(route.contains("BGP.origin: IGP"), "{route}");
        assert_eq!(p.advertised, 1, "{p:?}");

        // A withdrawal in BIRD (static route gone) reaches tabby.
        std::fs::write(
            bird.dir().join("bird.conf"),
            bird_conf(
                "127.0.0.2",
                &["198.18.1.0/26"],
                &[(
                    "tabby",
                    &bird_bgp("127.0.0.2", 65002, "127.0.0.1", 64512, ""),
                )],
            ),
        )
        .unwrap();
        bird.birdc("configure");
        let gone: ipnet::IpNet = "198.18.1.64/26".parse().unwrap();
        let end = tokio::time::Instant::now() + SECS;
        while bgpd.routes().await.iter().any(|r| r.prefix == gone) {
            assert!(tokio::time::Instant::now() < end, "withdrawal not seen");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(bgpd.peer("127.0.0.2").await.established_count, 1);
    });
}

#[test]
fn bgpd_reflects_for_two_bird_clients() {
    in_netns(&[], || async {
        let dir = tempfile::tempdir().unwrap();
        let b2 = Bird::start(&bird_conf(
            "127.0.0.2",
            &["198.18.2.0/26"],
            &[(
                "tabby",
                &bird_bgp("127.0.0.2", 64512, "127.0.0.1", 64512, ""),
            )],
        ));
        let b3 = Bird::start(&bird_conf(
            "127.0.0.3",
            &["198.18.3.0/26"],
            &[(
                "tabby",
                &bird_bgp("127.0.0.3", 64512, "127.0.0.1", 64512, ""),
            )],
        ));
        let bgpd = Bgpd::start(
            dir.path(),
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\ncluster_id: 127.0.0.1\npools: [\"198.18.0.0/15\"]\npeers:\n  - address: 127.0.0.2\n    asn: 64512\n    rr_client: true\n    connect_retry: 1\n  - address: 127.0.0.3\n    asn: 64512\n    rr_client: true\n    connect_retry: 1\n",
        );
        bgpd.wait_established("127.0.0.2").await;
        bgpd.wait_established("127.0.0.3").await;
        assert_eq!(bgpd.peer("127.0.0.2").await.peer_type, "rr-client");

        let r = bird_learns(&b2, "198.18.3.0/26", "tabby").await;
        assert!(r.contains("BGP.originator_id: 127.0.0.3"), "{r}");
        assert!(r.contains("BGP.cluster_list: 127.0.0.1"), "{r}");
        assert!(
            r.contains("BGP.next_hop: 127.0.0.3"),
            "reflection keeps the next hop: {r}"
        );
        let r = bird_learns(&b3, "198.18.2.0/26", "tabby").await;
        assert!(r.contains("BGP.originator_id: 127.0.0.2"), "{r}");
        assert!(r.contains("BGP.cluster_list: 127.0.0.1"), "{r}");
        let p = bgpd.peer("127.0.0.2").await;
        assert_eq!((p.accepted, p.advertised), (1, 1), "{p:?}");
    });
}

#[test]
fn bird_reflects_for_two_bgpd_clients() {
    in_netns(&[], || async {
        let d1 = tempfile::tempdir().unwrap();
        let d3 = tempfile::tempdir().unwrap();
        let client = |addr: &str| {
            bird_bgp(
                "127.0.0.2",
                64512,
                addr,
                64512,
                "  rr client;\n  rr cluster id 127.0.0.2;\n",
            )
        };
        let c1 = client("127.0.0.1");
        let c3 = client("127.0.0.3");
        let rr = Bird::start(&bird_conf("127.0.0.2", &[], &[("t1", &c1), ("t3", &c3)]));
        let conf = |me: &str, block: &str| {
            format!(
                "asn: 64512\nrouter_id: {me}\nlisten: [\"{me}:179\"]\npools: [\"198.18.0.0/15\"]\noriginate: [\"{block}\"]\npeers:\n  - address: 127.0.0.2\n    asn: 64512\n    connect_retry: 1\n    source_address: {me}\n"
            )
        };
        let a = Bgpd::start(d1.path(), &conf("127.0.0.1", "198.18.11.0/26"));
        let b = Bgpd::start(d3.path(), &conf("127.0.0.3", "198.18.13.0/26"));
        a.wait_established("127.0.0.2").await;
        b.wait_established("127.0.0.2").await;
        bird_established(&rr, "t1").await;

        let r = a.learns("198.18.13.0/26", |_| true).await;
        assert_eq!(r.next_hops, vec!["127.0.0.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.originator_id, Some("127.0.0.3".parse().unwrap()));
        assert_eq!(
            r.cluster_list,
            vec!["127.0.0.2".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        assert_eq!(r.local_pref, Some(100));
        let r = b.learns("198.18.11.0/26", |_| true).await;
        assert_eq!(r.originator_id, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(r.next_hops, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    });
}

#[test]
fn bgpd_graceful_restart_bird_keeps_stale_routes_until_end_of_rib() {
    in_netns(&[], || async {
        let dir = tempfile::tempdir().unwrap();
        let bird = Bird::start(&bird_conf(
            "127.0.0.2",
            &["198.18.1.0/26"],
            &[(
                "tabby",
                &bird_bgp(
                    "127.0.0.2",
                    64512,
                    "127.0.0.1",
                    64512,
                    "  graceful restart on;\n  graceful restart time 120;\n",
                ),
            )],
        ));
        let yaml = |blocks: &str| {
            format!(
                "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npools: [\"198.18.0.0/15\"]\noriginate: [{blocks}]\ngraceful_restart: {{enabled: true, restart_time: 120}}\npeers:\n  - address: 127.0.0.2\n    asn: 64512\n    connect_retry: 1\n"
            )
        };
        let mut bgpd = Bgpd::start(dir.path(), &yaml("\"198.18.4.0/26\", \"198.18.4.64/26\""));
        bgpd.wait_established("127.0.0.2").await;
        bird_learns(&bird, "198.18.4.64/26", "tabby").await;
        let proto = bird.birdc("show protocols all tabby");
        assert!(
            !proto.contains("Restart recovery"),
            "R bit on first start: {proto}"
        );

        // Crash: no NOTIFICATION, the socket just closes. BIRD enters graceful restart for
        // us and keeps both routes (BIRD 2 marks them stale internally; `show route` does not
        // print the flag, `show protocols all` shows the restart in progress).
        bgpd.kill9();
        poll(SECS, || {
            bird.birdc("show protocols all tabby")
                .contains("Neighbor graceful restart active")
                .then_some(())
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "BIRD did not start graceful restart: {}",
                bird.birdc("show protocols all tabby")
            )
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let kept = bird.birdc("show route");
        assert!(
            kept.contains("198.18.4.0/26") && kept.contains("198.18.4.64/26"),
            "BIRD dropped tabby's routes during the restart: {kept}"
        );

        // Restart without 198.18.4.64/26: the restart marker is there, so the OPEN has the R
        // bit; after our End-of-RIB BIRD drops the stale route we did not send again and
        // keeps (refreshed, no longer stale) the one we did.
        let bgpd = Bgpd::start(dir.path(), &yaml("\"198.18.4.0/26\""));
        assert!(bgpd.output().contains("restarting"), "{}", bgpd.output());
        bgpd.wait_established("127.0.0.2").await;
        bird_established(&bird, "tabby").await;
        let proto = bird.birdc("show protocols all tabby");
        assert!(proto.contains("Restart recovery"), "no R bit seen: {proto}");
        poll(SECS, || {
            (!bird.birdc("show route 198.18.4.64/26").contains("[tabby")).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("stale route kept after End-of-RIB: {}", bird.output()));
        bird_learns(&bird, "198.18.4.0/26", "tabby").await;
        let proto = bird.birdc("show protocols all tabby");
        assert!(
            !proto.contains("Neighbor graceful restart active"),
            "{proto}"
        );
        drop(bgpd);
    });
}

#[test]
fn bgpd_max_prefix_stops_the_session() {
    in_netns(&[], || async {
        let dir = tempfile::tempdir().unwrap();
        let bird = Bird::start(&bird_conf(
            "127.0.0.2",
            &["198.18.1.0/26", "198.18.1.64/26", "198.18.1.128/26"],
            &[(
                "tabby",
                &bird_bgp("127.0.0.2", 65002, "127.0.0.1", 64512, ""),
            )],
        ));
        let yaml = |limit: u32| {
            format!(
                "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npools: [\"198.18.0.0/15\"]\npeers:\n  - address: 127.0.0.2\n    asn: 65002\n    connect_retry: 1\n    max_prefix: {limit}\n    max_prefix_action: stop\n"
            )
        };
        let bgpd = Bgpd::start(dir.path(), &yaml(2));
        let end = tokio::time::Instant::now() + SECS;
        let p = loop {
            let p = bgpd.peer("127.0.0.2").await;
            if p.stopped {
                break p;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "{p:?}\n{}",
                bgpd.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(p.accepted, 0, "routes dropped: {p:?}");
        poll(SECS, || {
            bird.birdc("show protocols all tabby")
                .contains("Maximum number of prefixes reached")
                .then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{}", bird.birdc("show protocols all tabby")));
        // It stays down: BIRD retries, tabby refuses.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let p = bgpd.peer("127.0.0.2").await;
        assert_ne!(p.state, "Established", "{p:?}");
        assert_eq!(p.established_count, 1, "{p:?}");
        assert!(
            p.last_error
                .as_deref()
                .is_some_and(|e| e.contains("maximum number of prefixes")),
            "{p:?}"
        );
        assert!(bgpd.routes().await.is_empty());

        // A reload brings it back; with the same limit it trips again, with a higher one it
        // stays up.
        bgpd.reload(&yaml(2));
        let end = tokio::time::Instant::now() + SECS;
        loop {
            let p = bgpd.peer("127.0.0.2").await;
            if p.established_count == 2 && p.stopped {
                break;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "{p:?}\n{}",
                bgpd.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bgpd.reload(&yaml(10));
        bgpd.learns("198.18.1.128/26", |_| true).await;
        let p = bgpd.wait_established("127.0.0.2").await;
        assert_eq!((p.accepted, p.stopped), (3, false), "{p:?}");
    });
}

#[test]
fn bgpd_max_prefix_warn_keeps_the_session() {
    in_netns(&[], || async {
        let dir = tempfile::tempdir().unwrap();
        let _bird = Bird::start(&bird_conf(
            "127.0.0.2",
            &["198.18.1.0/26", "198.18.1.64/26", "198.18.1.128/26"],
            &[(
                "tabby",
                &bird_bgp("127.0.0.2", 65002, "127.0.0.1", 64512, ""),
            )],
        ));
        // On one thread, as BIRD runs.
        let bgpd = Bgpd::start_with(
            dir.path(),
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npools: [\"198.18.0.0/15\"]\npeers:\n  - address: 127.0.0.2\n    asn: 65002\n    connect_retry: 1\n    max_prefix: 2\n    max_prefix_action: warn\n",
            &["--threads", "1"],
        );
        bgpd.learns("198.18.1.128/26", |_| true).await;
        bgpd.learns("198.18.1.0/26", |_| true).await;
        let p = bgpd.wait_established("127.0.0.2").await;
        assert_eq!((p.accepted, p.stopped, p.established_count), (3, false, 1));
        assert!(
            bgpd.output().contains("max-prefix exceeded"),
            "{}",
            bgpd.output()
        );
    });
}

#[test]
fn bgpd_live_config_change_leaves_other_sessions_alone() {
    in_netns(&[], || async {
        let dir = tempfile::tempdir().unwrap();
        let b2 = Bird::start(&bird_conf(
            "127.0.0.2",
            &["198.18.2.0/26"],
            &[(
                "tabby",
                &bird_bgp("127.0.0.2", 65002, "127.0.0.1", 64512, ""),
            )],
        ));
        let b3 = Bird::start(&bird_conf(
            "127.0.0.3",
            &["198.18.3.0/26"],
            &[(
                "tabby",
                &bird_bgp("127.0.0.3", 65003, "127.0.0.1", 64512, ""),
            )],
        ));
        let one = "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npools: [\"198.18.0.0/15\"]\noriginate: [\"198.18.4.0/26\"]\npeers:\n  - address: 127.0.0.2\n    asn: 65002\n    connect_retry: 1\n";
        let two = format!("{one}  - address: 127.0.0.3\n    asn: 65003\n    connect_retry: 1\n");
        let mut bgpd = Bgpd::start(dir.path(), one);
        let p2 = bgpd.wait_established("127.0.0.2").await;
        bgpd.learns("198.18.2.0/26", |_| true).await;
        assert_eq!(bgpd.status().await.peers.len(), 1);

        // Add a peer: it comes up and gets 198.18.2.0/26 from the first one.
        bgpd.reload(&two);
        bgpd.wait_established("127.0.0.3").await;
        bgpd.learns("198.18.3.0/26", |_| true).await;
        let r = bird_learns(&b3, "198.18.2.0/26", "tabby").await;
        assert!(r.contains("BGP.as_path: 64512 65002"), "{r}");
        bird_learns(&b2, "198.18.3.0/26", "tabby").await;
        let after = bgpd.peer("127.0.0.2").await;
        assert_eq!(after.state, "Established");
        assert_eq!(after.since, p2.since, "first session reset: {after:?}");
        assert_eq!(after.established_count, 1, "{after:?}");

        // And remove it again: its routes go, the first session still untouched.
        bgpd.reload(one);
        let gone: ipnet::IpNet = "198.18.3.0/26".parse().unwrap();
        let end = tokio::time::Instant::now() + SECS;
        while bgpd.routes().await.iter().any(|r| r.prefix == gone) {
            assert!(
                tokio::time::Instant::now() < end,
                "routes of the removed peer stay"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(bgpd.status().await.peers.len(), 1);
        poll(SECS, || (!b3.established("tabby")).then_some(()))
            .await
            .expect("removed peer still Established");
        let after = bgpd.peer("127.0.0.2").await;
        assert_eq!((after.since, after.established_count), (p2.since, 1));
        assert!(b2.established("tabby"));

        // SIGTERM closes the sessions with a Cease and removes the socket.
        let st = bgpd.terminate();
        assert!(st.success(), "{st:?}");
        assert!(!dir.path().join("bgp.sock").exists());
        assert!(!dir.path().join("tabby-bgpd.running").exists());
        poll(SECS, || {
            b2.birdc("show protocols all tabby")
                .contains("Administrative shutdown")
                .then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{}", b2.birdc("show protocols all tabby")));
    });
}

#[test]
fn bgpd_bird_ebgp_ipv6_routes_flow_both_ways() {
    in_netns(&["2001:db8::1", "2001:db8::2"], || async {
        let dir = tempfile::tempdir().unwrap();
        let bird = Bird::start(
            "router id 127.0.0.2;\nlog \"bird.log\" all;\nprotocol device {}\n\
             protocol static s6 {\n  ipv6;\n  route 2001:db8:100::/48 blackhole;\n}\n\
             protocol bgp tabby {\n  local 2001:db8::2 as 65002;\n  neighbor 2001:db8::1 as 64512;\n  strict bind yes;\n  multihop;\n  connect retry time 1;\n  ipv6 { import all; export all; };\n}\n",
        );
        let bgpd = Bgpd::start(
            dir.path(),
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"[2001:db8::1]:179\"]\npools: [\"2001:db8:100::/40\"]\noriginate: [\"2001:db8:104::/48\"]\npeers:\n  - address: 2001:db8::2\n    asn: 65002\n    connect_retry: 1\n",
        );
        bgpd.wait_established("2001:db8::2").await;
        let r = bgpd.learns("2001:db8:100::/48", |_| true).await;
        assert_eq!(r.next_hops, vec!["2001:db8::2".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.as_path, "65002");
        let route = bird_learns(&bird, "2001:db8:104::/48", "tabby").await;
        assert!(route.contains("BGP.as_path: 64512"), "{route}");
        assert!(route.contains("BGP.next_hop: 2001:db8::1"), "{route}");
        let s = bgpd.status().await;
        assert_eq!((s.peers[0].accepted, s.peers[0].advertised), (1, 1));
    });
}

/// kill -9 of a BIRD (found by its config path, since the harness keeps the child private).
fn kill9_bird(bird: &Bird) {
    let conf = bird.dir().join("bird.conf");
    let conf = conf.to_str().unwrap();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with("bird\0") && cmdline.contains(conf) {
            // SAFETY: a signal to the BIRD this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return;
        }
    }
    panic!("no bird process with {conf}");
}

fn bird_gr(restart_time: u32, statics: &[&str]) -> String {
    bird_conf(
        "127.0.0.2",
        statics,
        &[(
            "tabby",
            &bird_bgp(
                "127.0.0.2",
                64512,
                "127.0.0.1",
                64512,
                &format!("  graceful restart on;\n  graceful restart time {restart_time};\n"),
            ),
        )],
    )
}

const GR_HELPER: &str = "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npools: [\"198.18.0.0/15\"]\ngraceful_restart: {enabled: true, restart_time: 120}\npeers:\n  - address: 127.0.0.2\n    asn: 64512\n    connect_retry: 1\n";

/// Waits until tabby-bgpd's peer 127.0.0.2 satisfies `pred`.
async fn wait_peer(bgpd: &Bgpd, what: &str, pred: impl Fn(&PeerStatus) -> bool) -> PeerStatus {
    let end = tokio::time::Instant::now() + SECS;
    loop {
        let p = bgpd.peer("127.0.0.2").await;
        if pred(&p) {
            return p;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{what}: {p:?}\n{}",
            bgpd.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn bgpd_helps_a_restarting_bird_until_its_end_of_rib() {
    in_netns(&[], || async {
        let dir = tempfile::tempdir().unwrap();
        let bird = Bird::start(&bird_gr(120, &["198.18.1.0/26", "198.18.1.64/26"]));
        let bgpd = Bgpd::start(dir.path(), GR_HELPER);
        bgpd.wait_established("127.0.0.2").await;
        bgpd.learns("198.18.1.64/26", |r| !r.stale).await;
        bgpd.learns("198.18.1.0/26", |r| !r.stale).await;

        // BIRD crashes: its routes stay, stale, for its restart time.
        kill9_bird(&bird);
        let p = wait_peer(&bgpd, "routes not kept as stale", |p| {
            p.state != "Established" && p.stale == 2
        })
        .await;
        assert_eq!(p.accepted, 2, "{p:?}");
        bgpd.learns("198.18.1.64/26", |r| r.stale).await;

        // It comes back with one route: after its End-of-RIB the other one is gone and the
        // kept one is fresh.
        drop(bird);
        let _bird = Bird::start(&bird_gr(120, &["198.18.1.0/26"]));
        wait_peer(&bgpd, "stale routes not swept", |p| {
            p.state == "Established" && p.stale == 0 && p.accepted == 1
        })
        .await;
        let routes = bgpd.routes().await;
        assert_eq!(routes.len(), 1, "{routes:?}");
        assert!(!routes[0].stale, "{routes:?}");
    });
}

#[test]
fn bgpd_drops_stale_routes_when_the_restart_time_runs_out() {
    in_netns(&[], || async {
        let dir = tempfile::tempdir().unwrap();
        let bird = Bird::start(&bird_gr(2, &["198.18.1.0/26"]));
        let bgpd = Bgpd::start(dir.path(), GR_HELPER);
        bgpd.learns("198.18.1.0/26", |r| !r.stale).await;
        kill9_bird(&bird);
        wait_peer(&bgpd, "routes not kept as stale", |p| p.stale == 1).await;
        // BIRD's restart time is 2 s and it does not come back.
        wait_peer(&bgpd, "stale routes outlived the restart time", |p| {
            p.accepted == 0
        })
        .await;
        assert!(bgpd.routes().await.is_empty());
    });
}
