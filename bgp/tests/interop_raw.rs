//! The session layer against a raw BGP peer written by hand in the test: malformed UPDATEs,
//! treat-as-withdraw, hold timer expiry, connection collision, unknown peers. Each test runs in
//! its own network namespace (see `daemons`), so it needs root.

mod daemons;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bgp::fsm::{DownReason, Notification as FsmNotification, State};
use bgp::packet::{
    AsPath, Capability, CeaseSubcode, Ipv4Prefix, Message, NotificationError, Open, Origin, Update,
    UpdateSubcode,
};
use bgp::session::{Listener, LocalConfig, Session, SessionEventKind, SessionHandle};
use daemons::{RawPeer, config, expect_established, expect_update, in_netns, next_event};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const TABBY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const SECS: Duration = Duration::from_secs(10);

fn peer_open(asn: u32, id: Ipv4Addr, hold: u16) -> Open {
    Open::new(
        asn,
        hold,
        id,
        vec![
            Capability::Multiprotocol(bgp::packet::AfiSafi::IPV4_UNICAST),
            Capability::FourOctetAsn(asn),
        ],
    )
}

/// tabby at 127.0.0.1 (AS 64512), listening on :179, with one peer at 127.0.0.2.
async fn tabby(
    peer_asn: u32,
    passive: bool,
    hold: u16,
    peer_port: u16,
) -> (
    SessionHandle,
    mpsc::Receiver<bgp::session::SessionEvent>,
    Listener,
) {
    let c = config(&format!(
        "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npeers:\n  - address: 127.0.0.2\n    asn: {peer_asn}\n    port: {peer_port}\n    passive: {passive}\n    hold_time: {hold}\n    connect_retry: 1\n"
    ));
    let listener = Listener::bind(&c.listen).await.unwrap();
    let incoming = listener.register(&c.peers[0]).unwrap();
    let (tx, rx) = mpsc::channel(64);
    let h = Session::spawn(
        c.peers[0].clone(),
        LocalConfig::from_config(&c),
        Some(incoming),
        tx,
    );
    (h, rx, listener)
}

/// A raw peer that connected to a passive tabby and finished the handshake.
async fn established_raw(
    peer_asn: u32,
    hold: u16,
) -> (
    SessionHandle,
    mpsc::Receiver<bgp::session::SessionEvent>,
    Listener,
    RawPeer,
) {
    let (h, mut rx, l) = tabby(peer_asn, true, 90, 179).await;
    assert!(h.wait_for(State::Active, SECS).await);
    let mut raw = RawPeer::connect(IpAddr::V4(PEER), SocketAddr::from((TABBY, 179))).await;
    raw.handshake(peer_open(peer_asn, PEER, hold)).await;
    let est = expect_established(&mut rx, SECS).await;
    assert_eq!(est.negotiated.peer_asn, peer_asn);
    (h, rx, l, raw)
}

fn v4(a: [u8; 4], len: u8) -> Ipv4Prefix {
    Ipv4Prefix::new(Ipv4Addr::from(a), len).unwrap()
}

/// An UPDATE announcing 198.18.0.0/26 from AS `asn` with next hop 127.0.0.2.
fn announce(asn: u32) -> Update {
    let mut u = Update {
        nlri: vec![v4([198, 18, 0, 0], 26)],
        ..Update::default()
    };
    u.attributes.origin = Some(Origin::Igp);
    u.attributes.as_path = Some(AsPath::from_sequence(vec![asn]));
    u.attributes.next_hop = Some(PEER);
    u
}

async fn expect_notification(raw: &mut RawPeer, code: u8, subcode: u8) {
    match raw.recv_non_keepalive(SECS).await {
        Some(Message::Notification(n)) => {
            assert_eq!(
                (n.error.code(), n.error.subcode()),
                (code, subcode),
                "{n:?}"
            )
        }
        other => panic!("expected NOTIFICATION {code}/{subcode}, got {other:?}"),
    }
    assert_eq!(
        raw.recv(SECS).await,
        None,
        "connection closed after the NOTIFICATION"
    );
}

async fn expect_down(rx: &mut mpsc::Receiver<bgp::session::SessionEvent>, want: DownReason) {
    loop {
        match next_event(rx, SECS).await.kind {
            SessionEventKind::Down { reason, graceful } => {
                assert_eq!(reason, want);
                assert!(!graceful);
                return;
            }
            SessionEventKind::Update(_) => {}
            other => panic!("expected Down, got {other:?}"),
        }
    }
}

#[test]
fn update_round_trips_with_a_raw_peer() {
    in_netns(&[], || async {
        let (h, mut rx, _l, mut raw) = established_raw(65002, 90).await;
        raw.send(&Message::Update(announce(65002))).await;
        let u = expect_update(&mut rx, SECS, |u| !u.nlri.is_empty()).await;
        assert_eq!(u, announce(65002));

        let mut ours = announce(64512);
        ours.attributes.next_hop = Some(TABBY);
        h.send(vec![ours.clone()]);
        assert_eq!(
            raw.recv_non_keepalive(SECS).await,
            Some(Message::Update(ours))
        );
        let s = h.status();
        assert_eq!(s.state, State::Established);
        assert_eq!((s.updates_in, s.updates_out), (1, 1));
        assert!(s.messages_in >= 3 && s.messages_out >= 3);
    });
}

#[test]
fn malformed_update_gets_invalid_network_field() {
    in_netns(&[], || async {
        let (h, mut rx, _l, mut raw) = established_raw(65002, 90).await;
        // NLRI with prefix length 33 (RFC 4271 §6.3 → 3/10 Invalid Network Field).
        let mut bad = announce(65002);
        bad.nlri.clear();
        let mut b = Message::Update(bad).encode(&Default::default()).to_vec();
        b.extend_from_slice(&[33, 198, 18, 0, 0, 0]);
        let len = b.len() as u16;
        b[16..18].copy_from_slice(&len.to_be_bytes());
        raw.send_raw(&b).await;
        expect_notification(&mut raw, 3, 10).await;
        expect_down(
            &mut rx,
            DownReason::NotificationSent(FsmNotification::new(3, 10)),
        )
        .await;
        // The session comes back on its own once the peer reconnects.
        assert!(h.wait_for(State::Active, SECS).await);
        let mut raw = RawPeer::connect(IpAddr::V4(PEER), SocketAddr::from((TABBY, 179))).await;
        raw.handshake(peer_open(65002, PEER, 90)).await;
        expect_established(&mut rx, SECS).await;
    });
}

#[test]
fn ebgp_leftmost_as_mismatch_is_malformed_as_path() {
    in_netns(&[], || async {
        let (_h, mut rx, _l, mut raw) = established_raw(65002, 90).await;
        raw.send(&Message::Update(announce(65003))).await;
        expect_notification(&mut raw, 3, u8::from(UpdateSubcode::MalformedAsPath)).await;
        expect_down(
            &mut rx,
            DownReason::NotificationSent(FsmNotification::new(3, 11)),
        )
        .await;
    });
}

#[test]
fn treat_as_withdraw_keeps_the_session_up() {
    in_netns(&[], || async {
        let (h, mut rx, _l, mut raw) = established_raw(65002, 90).await;
        raw.send(&Message::Update(announce(65002))).await;
        expect_update(&mut rx, SECS, |u| !u.nlri.is_empty()).await;
        // ORIGIN with the undefined value 7: RFC 7606 §7.1 treat-as-withdraw.
        let mut b = Message::Update(announce(65002))
            .encode(&Default::default())
            .to_vec();
        // Attributes start after the header (19), withdrawn length (2) and attribute length
        // (2); ORIGIN is first: flags, type, length, value.
        assert_eq!(b[23 + 1], 1, "ORIGIN first");
        b[23 + 3] = 7;
        raw.send_raw(&b).await;
        let u = expect_update(&mut rx, SECS, |_| true).await;
        assert!(u.announced().is_empty());
        assert_eq!(u.withdrawn, vec![v4([198, 18, 0, 0], 26)]);
        assert!(u.treat_as_withdraw());
        // Still up: a KEEPALIVE goes through, no NOTIFICATION arrives.
        raw.send(&Message::Keepalive).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(h.status().state, State::Established);
        // LOCAL_PREF from an eBGP peer is discarded (RFC 7606 §7.5), the route kept.
        let mut lp = announce(65002);
        lp.attributes.local_pref = Some(300);
        raw.send(&Message::Update(lp)).await;
        let u = expect_update(&mut rx, SECS, |_| true).await;
        assert_eq!(u.attributes.local_pref, None);
        assert_eq!(u.announced().len(), 1);
        assert_eq!(h.status().state, State::Established);
    });
}

#[test]
fn hold_timer_expires_when_the_peer_goes_silent() {
    in_netns(&[], || async {
        let (h, mut rx, _l, mut raw) = established_raw(65002, 3).await;
        assert_eq!(h.status().negotiated.unwrap().hold_time, 3);
        // Say nothing: tabby's hold timer (3 s) expires → 4/0.
        let start = std::time::Instant::now();
        expect_notification(&mut raw, 4, 0).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_secs(6),
            "{waited:?}"
        );
        expect_down(&mut rx, DownReason::HoldTimerExpired).await;
    });
}

#[test]
fn keepalives_keep_a_short_hold_time_session_up() {
    in_netns(&[], || async {
        let (h, _rx, _l, mut raw) = established_raw(65002, 3).await;
        // tabby sends a KEEPALIVE every second; answering them keeps it up past the hold time.
        for _ in 0..5 {
            assert_eq!(raw.recv(SECS).await, Some(Message::Keepalive));
            raw.send(&Message::Keepalive).await;
        }
        assert_eq!(h.status().state, State::Established);
    });
}

#[test]
fn collision_keeps_the_connection_of_the_higher_router_id() {
    in_netns(&[], || async {
        // The raw peer listens on 127.0.0.2:1179 for tabby's connection.
        let l = TcpListener::bind((PEER, 1179)).await.unwrap();
        let (h, mut rx, _listener) = tabby(65002, false, 90, 1179).await;
        let (s, _) = tokio::time::timeout(SECS, l.accept())
            .await
            .unwrap()
            .unwrap();
        let mut ours = RawPeer::new(s); // initiated by tabby
        let Some(Message::Open(_)) = ours.recv(SECS).await else {
            panic!("expected tabby's OPEN")
        };
        // Meanwhile the peer connects too.
        let mut theirs = RawPeer::connect(IpAddr::V4(PEER), SocketAddr::from((TABBY, 179))).await;
        let Some(Message::Open(_)) = theirs.recv(SECS).await else {
            panic!("expected tabby's OPEN on the second connection")
        };
        // Identifiers compare as integers: tabby's 127.0.0.1 > the peer's 10.9.9.9, so the
        // connection tabby initiated survives (§6.8) and the peer's gets Cease 6/7.
        let open = peer_open(65002, Ipv4Addr::new(10, 9, 9, 9), 90);
        theirs.send(&Message::Open(open.clone())).await;
        ours.send(&Message::Open(open.clone())).await;
        match theirs.recv_non_keepalive(SECS).await {
            Some(Message::Notification(n)) => assert_eq!(
                n.error,
                NotificationError::Cease(CeaseSubcode::ConnectionCollisionResolution)
            ),
            other => panic!("expected Cease 6/7 on the peer's connection, got {other:?}"),
        }
        assert_eq!(ours.recv(SECS).await, Some(Message::Keepalive));
        ours.send(&Message::Keepalive).await;
        let est = expect_established(&mut rx, SECS).await;
        assert_eq!(
            est.remote_addr.port(),
            1179,
            "tabby's own connection survived"
        );
        assert_eq!(h.status().state, State::Established);
    });
}

#[test]
fn collision_yields_to_a_peer_with_a_higher_router_id() {
    in_netns(&[], || async {
        let l = TcpListener::bind((PEER, 1179)).await.unwrap();
        let (h, mut rx, _listener) = tabby(65002, false, 90, 1179).await;
        let (s, _) = tokio::time::timeout(SECS, l.accept())
            .await
            .unwrap()
            .unwrap();
        let mut ours = RawPeer::new(s);
        let Some(Message::Open(_)) = ours.recv(SECS).await else {
            panic!("expected tabby's OPEN")
        };
        let mut theirs = RawPeer::connect(IpAddr::V4(PEER), SocketAddr::from((TABBY, 179))).await;
        let Some(Message::Open(_)) = theirs.recv(SECS).await else {
            panic!("expected tabby's OPEN on the second connection")
        };
        // 200.0.0.1 > 127.0.0.1: the connection the peer initiated survives.
        let open = peer_open(65002, Ipv4Addr::new(200, 0, 0, 1), 90);
        ours.send(&Message::Open(open.clone())).await;
        match ours.recv_non_keepalive(SECS).await {
            Some(Message::Notification(n)) => assert_eq!(
                n.error,
                NotificationError::Cease(CeaseSubcode::ConnectionCollisionResolution)
            ),
            other => panic!("expected Cease 6/7 on tabby's connection, got {other:?}"),
        }
        theirs.send(&Message::Open(open)).await;
        assert_eq!(theirs.recv(SECS).await, Some(Message::Keepalive));
        theirs.send(&Message::Keepalive).await;
        let est = expect_established(&mut rx, SECS).await;
        assert_ne!(
            est.remote_addr.port(),
            1179,
            "the peer's connection survived"
        );
        assert!(h.wait_for(State::Established, SECS).await);
        // No second session and no restart from the dumped FSM.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(h.status().state, State::Established);
        assert_eq!(h.status().established_count, 1);
    });
}

#[test]
fn collision_dumps_the_existing_connection_when_the_open_comes_on_the_winner() {
    in_netns(&[], || async {
        let l = TcpListener::bind((PEER, 1179)).await.unwrap();
        let (h, mut rx, _listener) = tabby(65002, false, 90, 1179).await;
        let (s, _) = tokio::time::timeout(SECS, l.accept())
            .await
            .unwrap()
            .unwrap();
        let mut ours = RawPeer::new(s);
        let Some(Message::Open(_)) = ours.recv(SECS).await else {
            panic!("expected tabby's OPEN")
        };
        let mut theirs = RawPeer::connect(IpAddr::V4(PEER), SocketAddr::from((TABBY, 179))).await;
        let Some(Message::Open(_)) = theirs.recv(SECS).await else {
            panic!("expected tabby's OPEN on the second connection")
        };
        // The OPEN arrives first on the peer's connection, the winner (200.0.0.1 > 127.0.0.1):
        // tabby dumps its own connection, which is still in OpenSent, and goes on with this one.
        let open = peer_open(65002, Ipv4Addr::new(200, 0, 0, 1), 90);
        theirs.send(&Message::Open(open)).await;
        match ours.recv_non_keepalive(SECS).await {
            Some(Message::Notification(n)) => assert_eq!(
                n.error,
                NotificationError::Cease(CeaseSubcode::ConnectionCollisionResolution)
            ),
            other => panic!("expected Cease 6/7 on tabby's connection, got {other:?}"),
        }
        assert_eq!(theirs.recv(SECS).await, Some(Message::Keepalive));
        theirs.send(&Message::Keepalive).await;
        let est = expect_established(&mut rx, SECS).await;
        assert_ne!(est.remote_addr.port(), 1179);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(h.status().state, State::Established);
        assert_eq!(h.status().established_count, 1);
    });
}

#[test]
fn a_failed_second_connection_frees_its_slot() {
    in_netns(&[], || async {
        let l = TcpListener::bind((PEER, 1179)).await.unwrap();
        let (h, mut rx, _listener) = tabby(65002, false, 90, 1179).await;
        let (s, _) = tokio::time::timeout(SECS, l.accept())
            .await
            .unwrap()
            .unwrap();
        let mut ours = RawPeer::new(s);
        assert!(matches!(ours.recv(SECS).await, Some(Message::Open(_))));
        // A second connection from the peer that dies in OpenSent, twice: each time tabby
        // drops its FSM, so the next one is taken too.
        for _ in 0..2 {
            let mut theirs =
                RawPeer::connect(IpAddr::V4(PEER), SocketAddr::from((TABBY, 179))).await;
            assert!(matches!(theirs.recv(SECS).await, Some(Message::Open(_))));
            drop(theirs);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ours.send(&Message::Open(peer_open(65002, PEER, 90))).await;
        assert_eq!(ours.recv(SECS).await, Some(Message::Keepalive));
        ours.send(&Message::Keepalive).await;
        let est = expect_established(&mut rx, SECS).await;
        assert_eq!(est.remote_addr.port(), 1179);
        assert_eq!(h.status().state, State::Established);
    });
}

#[test]
fn unknown_peers_are_rejected_and_stop_sends_cease() {
    in_netns(&[], || async {
        let (h, mut rx, _l, mut raw) = established_raw(65002, 90).await;
        // 127.0.0.3 is not configured: the connection is closed without a word.
        let mut stranger = RawPeer::connect(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
            SocketAddr::from((TABBY, 179)),
        )
        .await;
        assert_eq!(stranger.recv(SECS).await, None);
        // An operator stop sends Cease 6/2 and reports the session down.
        h.stop(bgp::fsm::Cease::administrative_shutdown());
        expect_notification(&mut raw, 6, 2).await;
        expect_down(
            &mut rx,
            DownReason::Stopped(bgp::fsm::Cease::administrative_shutdown()),
        )
        .await;
        assert!(h.wait_for(State::Idle, SECS).await);
    });
}

/// RFC 5082: with `ttl_security` tabby's segments carry TTL 255, so a listener that requires
/// it (IP_MINTTL 255) accepts the connection; without it the SYN (TTL 64) is dropped.
#[test]
fn gtsm_sends_ttl_255() {
    in_netns(&[], || async {
        for (ttl_security, reachable) in [(true, true), (false, false)] {
            let l = TcpListener::bind((PEER, 1179)).await.unwrap();
            bgp::sockopt::set_gtsm(std::os::fd::AsRawFd::as_raw_fd(&l)).unwrap();
            let c = config(&format!(
                "asn: 64512\nrouter_id: 127.0.0.1\npeers:\n  - address: 127.0.0.2\n    asn: 65002\n    port: 1179\n    ttl_security: {ttl_security}\n    connect_retry: 1\n"
            ));
            let (tx, _rx) = mpsc::channel(8);
            let h = Session::spawn(c.peers[0].clone(), LocalConfig::from_config(&c), None, tx);
            let accepted = tokio::time::timeout(Duration::from_secs(3), l.accept()).await;
            assert_eq!(accepted.is_ok(), reachable, "ttl_security: {ttl_security}");
            if let Ok(Ok((s, _))) = accepted {
                let mut raw = RawPeer::new(s);
                assert!(matches!(raw.recv(SECS).await, Some(Message::Open(_))));
            }
            h.shutdown().await;
        }
    });
}

/// RFC 4724: a peer that advertised Graceful Restart and drops the TCP connection without a
/// NOTIFICATION goes down gracefully (its routes are to be kept as stale); a ROUTE-REFRESH
/// from it reaches the speaker as an event.
#[test]
fn graceful_down_and_route_refresh_events() {
    in_netns(&[], || async {
        let c = config(
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npeers:\n  - address: 127.0.0.2\n    asn: 64512\n    passive: true\n    graceful_restart: true\n    restart_time: 90\n",
        );
        let listener = Listener::bind(&c.listen).await.unwrap();
        let incoming = listener.register(&c.peers[0]).unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let h = Session::spawn(
            c.peers[0].clone(),
            LocalConfig::from_config(&c),
            Some(incoming),
            tx,
        );
        assert!(h.wait_for(State::Active, SECS).await);
        let mut raw = RawPeer::connect(IpAddr::V4(PEER), SocketAddr::from((TABBY, 179))).await;
        let mut open = peer_open(64512, PEER, 90);
        open.capabilities.push(Capability::RouteRefresh);
        open.capabilities
            .push(Capability::GracefulRestart(bgp::packet::GracefulRestart {
                restart_time: 120,
                ..Default::default()
            }));
        let ours = raw.handshake(open).await;
        let gr = ours
            .graceful_restart()
            .expect("tabby advertises graceful restart");
        assert_eq!(gr.restart_time, 90);
        assert!(gr.families.iter().all(|f| f.forwarding_preserved));
        let est = expect_established(&mut rx, SECS).await;
        assert!(est.negotiated.peer_graceful_restart.is_some());

        let rr = bgp::packet::RouteRefresh::request(bgp::packet::AfiSafi::IPV4_UNICAST);
        raw.send(&Message::RouteRefresh(rr)).await;
        match next_event(&mut rx, SECS).await.kind {
            SessionEventKind::RouteRefresh(got) => assert_eq!(got, rr),
            other => panic!("expected RouteRefresh, got {other:?}"),
        }
        drop(raw);
        match next_event(&mut rx, SECS).await.kind {
            SessionEventKind::Down { reason, graceful } => {
                assert_eq!(reason, DownReason::ConnectionFailed);
                assert!(graceful);
            }
            other => panic!("expected Down, got {other:?}"),
        }
    });
}

/// A dual-stack listener on [::]:179 sees an IPv4 peer as an IPv4-mapped address; it is still
/// dispatched to the peer configured as 127.0.0.2.
#[test]
fn dual_stack_listener_dispatches_ipv4_peers() {
    in_netns(&[], || async {
        let c = config(
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"[::]:179\"]\npeers:\n  - address: 127.0.0.2\n    asn: 65002\n    passive: true\n    password: s3cret\n",
        );
        let listener = Listener::bind(&c.listen).await.unwrap();
        let incoming = listener.register(&c.peers[0]).unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let _h = Session::spawn(
            c.peers[0].clone(),
            LocalConfig::from_config(&c),
            Some(incoming),
            tx,
        );
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::from((PEER, 0))).unwrap();
        bgp::sockopt::set_md5_key(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            IpAddr::V4(TABBY),
            Some(b"s3cret"),
        )
        .unwrap();
        let s = sock.connect(SocketAddr::from((TABBY, 179))).await.unwrap();
        let mut raw = RawPeer::new(s);
        raw.handshake(peer_open(65002, PEER, 90)).await;
        let est = expect_established(&mut rx, SECS).await;
        assert_eq!(est.remote_addr.ip(), IpAddr::V4(PEER));
    });
}

/// The speaker's max-prefix action: AutomaticStop with Cease 6/1 and its RFC 4486 data; the
/// session stays down (no automatic restart) until started again.
#[test]
fn automatic_stop_for_max_prefix_stays_down_until_started() {
    in_netns(&[], || async {
        let (h, mut rx, _l, mut raw) = established_raw(65002, 90).await;
        let cease = bgp::fsm::Cease {
            subcode: bgp::fsm::CeaseSubcode::MaxPrefixesReached,
            data: bgp::policy::max_prefix_cease_data(1, 1, 10),
        };
        h.automatic_stop(cease.clone());
        match raw.recv_non_keepalive(SECS).await {
            Some(Message::Notification(n)) => {
                assert_eq!((n.error.code(), n.error.subcode()), (6, 1));
                assert_eq!(n.data.to_vec(), cease.data);
            }
            other => panic!("expected Cease 6/1, got {other:?}"),
        }
        expect_down(&mut rx, DownReason::Stopped(cease)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(h.status().state, State::Idle);
        h.start();
        assert!(h.wait_for(State::Active, SECS).await);
    });
}

/// Outgoing connections come from the configured source address and go to the configured
/// port.
#[test]
fn connects_from_the_source_address() {
    in_netns(&[], || async {
        let l = TcpListener::bind((PEER, 1179)).await.unwrap();
        let c = config(
            "asn: 64512\nrouter_id: 127.0.0.1\npeers:\n  - address: 127.0.0.2\n    asn: 65002\n    port: 1179\n    source_address: 127.0.0.5\n",
        );
        let (tx, _rx) = mpsc::channel(8);
        let _h = Session::spawn(c.peers[0].clone(), LocalConfig::from_config(&c), None, tx);
        let (s, from) = tokio::time::timeout(SECS, l.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)));
        let mut raw = RawPeer::new(s);
        let Some(Message::Open(open)) = raw.recv(SECS).await else {
            panic!("expected tabby's OPEN")
        };
        assert_eq!(open.asn(), 64512);
        assert_eq!(open.bgp_identifier, TABBY);
    });
}
