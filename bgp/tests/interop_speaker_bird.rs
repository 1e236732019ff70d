//! The `tabby-bgpd` binary against BIRD 2 (Debian `bird2`): routes both ways with their
//! attributes, route reflection in both directions, graceful restart after kill -9,
//! max-prefix, live config change (SIGHUP), the control socket. Each test runs in its own
//! network namespace (see `daemons`), so it needs root; every process is killed and every
//! temp file removed on drop, also when the test fails.

mod daemons;

use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bgp::control::{self, Request, Response};
use bgp::speaker::{PeerStatus, Route, StatusReport};
use daemons::{Bird, in_netns, poll};

const SECS: Duration = Duration::from_secs(20);

/// A `tabby-bgpd` process with its config, socket and log in `dir` (owned by the test, so
/// a restarted daemon finds its restart marker).
struct Bgpd {
    child: Option<Child>,
    dir: PathBuf,
}

impl Bgpd {
    fn start(dir: &Path, yaml: &str) -> Bgpd {
        std::fs::write(dir.join("bgpd.yaml"), yaml).expect("writing the config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("bgpd.log"))
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tabby-bgpd"));
        cmd.arg("--config")
            .arg(dir.join("bgpd.yaml"))
            .arg("--socket")
            .arg(dir.join("bgp.sock"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("starting tabby-bgpd");
        let b = Bgpd {
            child: Some(child),
            dir: dir.to_path_buf(),
        };
        let up = std::iter::repeat_with(|| {
            std::thread::sleep(Duration::from_millis(100));
            b.socket().exists()
        })
        .take(100)
        .any(|x| x);
        assert!(up, "tabby-bgpd did not start: {}", b.output());
        b
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("bgp.sock")
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("bgpd.log")).unwrap_or_default()
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }

    /// Rewrites the config and sends SIGHUP.
    fn reload(&self, yaml: &str) {
        std::fs::write(self.dir.join("bgpd.yaml"), yaml).expect("writing the config");
        self.signal(libc::SIGHUP);
    }

    /// kill -9, as a crash would.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut c = self.child.take().expect("running");
        for _ in 0..100 {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        panic!("tabby-bgpd did not exit on SIGTERM: {}", self.output());
    }

    async fn status(&self) -> StatusReport {
        match control::request(&self.socket(), &Request::Status).await {
            Ok(Response::Status(s)) => s,
            other => panic!("status: {other:?}"),
        }
    }

    async fn routes(&self) -> Vec<Route> {
        match control::request(&self.socket(), &Request::Routes).await {
            Ok(Response::Routes(r)) => r,
            other => panic!("routes: {other:?}"),
        }
    }

    async fn find_peer(&self, addr: &str) -> Option<PeerStatus> {
        let a: IpAddr = addr.parse().unwrap();
        self.status()
            .await
            .peers
            .into_iter()
            .find(|p| p.address == a)
    }

    async fn peer(&self, addr: &str) -> PeerStatus {
        self.find_peer(addr)
            .await
            .unwrap_or_else(|| panic!("no peer {addr}"))
    }

    /// Waits until the session with `addr` is configured and Established.
    async fn wait_established(&self, addr: &str) -> PeerStatus {
        let end = tokio::time::Instant::now() + SECS;
        loop {
            let p = self.find_peer(addr).await;
            if let Some(p) = p.as_ref().filter(|p| p.state == "Established") {
                return p.clone();
            }
            assert!(
                tokio::time::Instant::now() < end,
                "session with {addr} not Established: {p:?}\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the Loc-RIB has `prefix` (with a route satisfying `pred`).
    async fn learns(&self, prefix: &str, pred: impl Fn(&Route) -> bool) -> Route {
        let p: ipnet::IpNet = prefix.parse().unwrap();
        let end = tokio::time::Instant::now() + SECS;
        loop {
            if let Some(r) = self
                .routes()
                .await
                .into_iter()
                .find(|r| r.prefix == p && pred(r))
            {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "tabby-bgpd did not learn {prefix}: {:?}\n{}",
                self.routes().await,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Bgpd {
    fn drop(&mut self) {
        self.kill9();
    }
}

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
        let bgpd = Bgpd::start(
            dir.path(),
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npools: [\"198.18.0.0/15\"]\npeers:\n  - address: 127.0.0.2\n    asn: 65002\n    connect_retry: 1\n    max_prefix: 2\n    max_prefix_action: stop\n",
        );
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
