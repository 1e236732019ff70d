//! The `tabby-bgpd` binary against GoBGP (Debian `gobgpd`): an iBGP session over IPv4 with
//! routes both ways and their attributes, between addresses from 198.51.100.0/24 on the
//! namespace's `lo`. Runs in its own network namespace (see `daemons`),
//! so it needs root; every process is killed and every temp file removed on drop.

mod daemons;
mod interop_speaker_harness;

use std::net::IpAddr;

use daemons::{Gobgp, in_netns, poll, run};
use interop_speaker_harness::{Bgpd, SECS};

const GOBGP: &str = r#"[global.config]
  as = 64512
  router-id = "198.51.100.2"
  port = 179
  local-address-list = ["198.51.100.2"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.51.100.1"
    peer-as = 64512
  [neighbors.transport.config]
    local-address = "198.51.100.2"
  [neighbors.timers.config]
    connect-retry = 1
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
"#;

#[test]
fn bgpd_gobgp_ibgp_routes_flow_both_ways() {
    in_netns(&[], || async {
        // GoBGP refuses loopback next hops ("invalid nexthop address"): documentation
        // addresses on this namespace's lo instead.
        for a in ["198.51.100.1/32", "198.51.100.2/32"] {
            run(&["ip", "addr", "add", a, "dev", "lo"]);
        }
        let dir = tempfile::tempdir().unwrap();
        let gobgp = Gobgp::start(GOBGP);
        let bgpd = Bgpd::start(
            dir.path(),
            "asn: 64512\nrouter_id: 198.51.100.1\nlisten: [\"198.51.100.1:179\"]\npools: [\"198.18.0.0/15\"]\noriginate: [\"198.18.4.0/26\"]\npeers:\n  - address: 198.51.100.2\n    asn: 64512\n    connect_retry: 1\n",
        );
        bgpd.wait_established("198.51.100.2").await;

        gobgp
            .cli("global rib add 198.18.3.0/24 origin igp community 65002:7 med 10 local-pref 120");
        let r = bgpd.learns("198.18.3.0/24", |_| true).await;
        assert_eq!(r.next_hops, vec!["198.51.100.2".parse::<IpAddr>().unwrap()]);
        assert_eq!((r.med, r.local_pref), (Some(10), Some(120)));
        assert_eq!(r.as_path, "");
        assert_eq!(r.origin, "IGP");

        let rib = poll(SECS, || {
            let out = gobgp.cli("global rib 198.18.4.0/26");
            out.contains("198.18.4.0/26").then_some(out)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "GoBGP did not learn 198.18.4.0/26: {}\n{}\n{}",
                gobgp.cli("neighbor 198.51.100.1 adj-in"),
                gobgp.cli("global rib"),
                gobgp.output()
            )
        });
        assert!(rib.contains("198.51.100.1"), "next hop is tabby: {rib}");

        // Withdrawn in GoBGP, gone from tabby.
        gobgp.cli("global rib del 198.18.3.0/24");
        let gone: ipnet::IpNet = "198.18.3.0/24".parse().unwrap();
        let end = tokio::time::Instant::now() + SECS;
        while bgpd.routes().await.iter().any(|r| r.prefix == gone) {
            assert!(tokio::time::Instant::now() < end, "withdrawal not seen");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let p = bgpd.peer("198.51.100.2").await;
        assert_eq!((p.accepted, p.advertised, p.established_count), (0, 1, 1));
    });
}
