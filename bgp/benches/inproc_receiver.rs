//! A stand-in receiver for builds without the `tabby-bgpd` binary: the bench binary run again
//! (with `TABBY_BENCH_INPROC_RECEIVER=1 --config FILE --socket PATH`) as a one-peer speaker
//! built from the library's pieces, `session::Listener` + `session::Session` + `rib::Rib`,
//! the way the daemon wires them for a receive-only peer. Its control socket answers any
//! request with `{"peers":[{"address":…, "accepted": N}]}`, the count the bench polls.
//!
//! It is a separate process so that its CPU time and peak RSS are measured like a daemon's.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bgp::config::Config;
use bgp::packet::AfiSafi;
use bgp::rib::{self, PeerId, PeerInfo, Rib};
use bgp::session::{self, Listener, Session, SessionEventKind};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

pub const ENV: &str = "TABBY_BENCH_INPROC_RECEIVER";

/// Runs the receiver until killed.
pub fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{k} missing"))
    };
    let config = Config::load(&arg("--config")).unwrap_or_else(|e| panic!("{e}"));
    let socket = arg("--socket");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(config, socket));
}

async fn run(config: Config, socket: PathBuf) {
    let count = Arc::new(AtomicU64::new(0));
    let peer = config.peers[0].clone();
    let addr = peer.address;
    let control = tokio::net::UnixListener::bind(&socket).expect("control socket");
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = control.accept().await {
            let (r, mut w) = s.into_split();
            let mut line = String::new();
            let _ = BufReader::new(r).read_line(&mut line).await;
            let reply = serde_json::json!({"peers": [{
                "address": addr.to_string(),
                "accepted": c.load(Ordering::Relaxed),
            }]});
            let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
        }
    });

    let listener = Listener::bind(&config.listen).await.expect("listen");
    let incoming = listener.register(&peer).expect("register peer");
    let (tx, mut rx) = mpsc::channel(1024);
    let handle = Session::spawn(
        peer.clone(),
        session::LocalConfig::from_config(&config),
        Some(incoming),
        tx,
    );
    let mut rib = Rib::new(rib::LocalConfig {
        import: config.import_policy(),
        ..rib::LocalConfig::new(config.asn, config.router_id)
    });
    let id = PeerId(1);
    while let Some(ev) = rx.recv().await {
        match ev.kind {
            SessionEventKind::Established(e) => {
                let n = &e.negotiated;
                let mut info = PeerInfo::new(addr, n.peer_asn, n.peer_router_id);
                info.import_all = peer.import_all;
                info.four_octet_asn = n.four_octet_asn;
                info.extended_messages = n.extended_messages;
                info.families = [
                    (n.ipv4_unicast, AfiSafi::IPV4_UNICAST),
                    (n.ipv6_unicast, AfiSafi::IPV6_UNICAST),
                ]
                .into_iter()
                .filter_map(|(on, f)| on.then_some(f))
                .collect();
                if let IpAddr::V4(a) = e.local_addr.ip() {
                    info.local_v4 = Some(a);
                }
                let ch = rib.peer_up(id, info);
                handle.send(ch.updates_for(id).to_vec());
            }
            SessionEventKind::Update(u) => {
                rib.receive(id, u);
                count.store(rib.peer_counts(id).accepted as u64, Ordering::Relaxed);
            }
            SessionEventKind::Down { graceful, .. } => {
                rib.peer_down(id, graceful);
                count.store(0, Ordering::Relaxed);
            }
            SessionEventKind::RouteRefresh(_) => {}
        }
    }
}
