//! Health and metrics: what `/liveness`, `/readiness` and `/metrics` answer, computed from a
//! [`Snapshot`] the agent keeps up to date, and the small HTTP/1.1 responder that serves them.
//!
//! The responder understands exactly what probes and Prometheus send: one `GET` per
//! connection, answered with `Connection: close`. Anything else gets 404 or 405.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bgp::speaker::StatusReport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

/// RFC 4271 §8 states, in the order `/metrics` lists them.
pub const BGP_STATES: [&str; 6] = [
    "Idle",
    "Connect",
    "Active",
    "OpenSent",
    "OpenConfirm",
    "Established",
];

/// Upper bounds (seconds) of the convergence histogram.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus histogram with fixed [`BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Per bucket, not cumulative; one more for +Inf.
    pub counts: [u64; BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum += s;
        self.count += 1;
    }
}

/// Everything the endpoints report, as last seen by the agent.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub node: String,
    /// confd has sent its first complete state.
    pub confd_in_sync: bool,
    pub felix: felix::agent::Status,
    /// Route changes felix made since start (its status carries only the last pass).
    pub routes_replaced: u64,
    pub routes_deleted: u64,
    pub routes_failed: u64,
    /// `None` until the speaker runs.
    pub speaker: Option<StatusReport>,
    /// BGP sessions the config asks for (0: no peers, BGP does not gate readiness).
    pub configured_peers: usize,
    /// Blocks affine to this node and addresses in use in them.
    pub ipam_blocks: Option<usize>,
    pub ipam_addresses: Option<usize>,
    /// From a felix input being sent to the pass that applied it.
    pub convergence: Histogram,
}

/// Shared between the agent (writer) and the HTTP responder (reader).
pub type Shared = Arc<Mutex<Snapshot>>;

/// Readiness: felix has the whole state and applied it, and every configured BGP session is
/// Established (or there are none). The text says what is missing.
pub fn readiness(s: &Snapshot) -> (bool, String) {
    let mut missing = Vec::new();
    if !s.confd_in_sync {
        missing.push("datastore not in sync yet".to_string());
    }
    if !s.felix.in_sync || s.felix.passes == 0 {
        missing.push("felix has not applied the dataplane yet".to_string());
    }
    if s.configured_peers > 0 {
        match &s.speaker {
            None => missing.push("BGP speaker not started".to_string()),
            Some(r) => {
                for p in r.peers.iter().filter(|p| p.state != "Established") {
                    missing.push(format!("BGP peer {} is {}", p.address, p.state));
                }
            }
        }
    }
    if missing.is_empty() {
        (true, "ready\n".into())
    } else {
        (false, missing.join("\n") + "\n")
    }
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition (format 0.0.4) of a snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    metric(
        "tabby_node_ready",
        "gauge",
        "1 when /readiness answers 200.",
        &[(String::new(), b(readiness(s).0))],
    );

    let peers = s
        .speaker
        .as_ref()
        .map(|r| r.peers.as_slice())
        .unwrap_or(&[]);
    let by_state: Vec<(String, f64)> = BGP_STATES
        .iter()
        .map(|st| {
            let n = peers.iter().filter(|p| p.state == *st).count();
            (format!("{{state=\"{st}\"}}"), n as f64)
        })
        .collect();
    metric(
        "tabby_bgp_peers",
        "gauge",
        "BGP peers by session state.",
        &by_state,
    );
    let per_peer = |f: &dyn Fn(&bgp::speaker::PeerStatus) -> usize| -> Vec<(String, f64)> {
        peers
            .iter()
            .map(|p| {
                (
                    format!("{{peer=\"{}\"}}", esc(&p.address.to_string())),
                    f(p) as f64,
                )
            })
            .collect()
    };
    metric(
        "tabby_bgp_prefixes_received",
        "gauge",
        "Prefixes a peer announces (accepted and rejected).",
        &per_peer(&|p| p.received),
    );
    metric(
        "tabby_bgp_prefixes_accepted",
        "gauge",
        "Prefixes from a peer kept after import policy.",
        &per_peer(&|p| p.accepted),
    );
    metric(
        "tabby_bgp_prefixes_advertised",
        "gauge",
        "Prefixes in a peer's Adj-RIB-Out.",
        &per_peer(&|p| p.advertised),
    );
    let established: Vec<(String, f64)> = per_peer(&|p| p.established_count as usize);
    metric(
        "tabby_bgp_established_total",
        "counter",
        "Times a session reached Established.",
        &established,
    );
    metric(
        "tabby_bgp_loc_rib_prefixes",
        "gauge",
        "Prefixes in the Loc-RIB.",
        &[(
            String::new(),
            s.speaker.as_ref().map_or(0, |r| r.routes) as f64,
        )],
    );

    let f = &s.felix;
    metric(
        "tabby_felix_in_sync",
        "gauge",
        "felix has received the whole state.",
        &[(String::new(), b(f.in_sync))],
    );
    metric(
        "tabby_felix_passes_total",
        "counter",
        "Dataplane reconcile passes.",
        &[(String::new(), f.passes as f64)],
    );
    metric(
        "tabby_felix_resyncs_total",
        "counter",
        "Passes started by a timer or a kernel event rather than an input.",
        &[(String::new(), f.resyncs as f64)],
    );
    metric(
        "tabby_felix_last_pass_failed",
        "gauge",
        "1 when the last pass reported an error.",
        &[(String::new(), b(f.last_error.is_some()))],
    );
    metric(
        "tabby_felix_routes_programmed_total",
        "counter",
        "Kernel route changes felix made, by operation.",
        &[
            ("{op=\"replace\"}".into(), s.routes_replaced as f64),
            ("{op=\"delete\"}".into(), s.routes_deleted as f64),
            ("{op=\"failed\"}".into(), s.routes_failed as f64),
        ],
    );
    metric(
        "tabby_felix_routes_waiting_for_device",
        "gauge",
        "Desired routes whose device does not exist yet (last pass).",
        &[(String::new(), f.routes.no_device as f64)],
    );

    let name = "tabby_dataplane_convergence_seconds";
    let _ = writeln!(
        o,
        "# HELP {name} From an input reaching felix to the pass that applied it."
    );
    let _ = writeln!(o, "# TYPE {name} histogram");
    let mut cum = 0;
    for (i, le) in BUCKETS.iter().enumerate() {
        cum += s.convergence.counts[i];
        let _ = writeln!(o, "{name}_bucket{{le=\"{le}\"}} {cum}");
    }
    cum += s.convergence.counts[BUCKETS.len()];
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {cum}");
    let _ = writeln!(o, "{name}_sum {}", s.convergence.sum);
    let _ = writeln!(o, "{name}_count {}", s.convergence.count);

    let node = format!("{{node=\"{}\"}}", esc(&s.node));
    let mut metric = |name: &str, help: &str, v: Option<usize>| {
        if let Some(v) = v {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} gauge");
            let _ = writeln!(o, "{name}{node} {v}");
        }
    };
    metric(
        "tabby_ipam_blocks",
        "IPAM blocks affine to this node.",
        s.ipam_blocks,
    );
    metric(
        "tabby_ipam_addresses_in_use",
        "Addresses in use in this node's blocks.",
        s.ipam_addresses,
    );
    o
}

/// What one request gets: status, content type, body.
pub fn respond(method: &str, path: &str, s: &Snapshot) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let path = path.split('?').next().unwrap_or(path);
    if method != "GET" && method != "HEAD" {
        return (405, TEXT, "method not allowed\n".into());
    }
    match path {
        "/liveness" | "/livez" => (200, TEXT, "alive\n".into()),
        "/readiness" | "/readyz" => match readiness(s) {
            (true, body) => (200, TEXT, body),
            (false, body) => (503, TEXT, body),
        },
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", render(s)),
        _ => (404, TEXT, "not found\n".into()),
    }
}

/// Parses the request line of an HTTP/1.x request head: `(method, path)`.
pub fn parse_request_line(head: &[u8]) -> Option<(String, String)> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (m, p, v) = (parts.next()?, parts.next()?, parts.next()?);
    (v.starts_with("HTTP/1.") && p.starts_with('/') && parts.next().is_none())
        .then(|| (m.to_string(), p.to_string()))
}

/// Formats a whole response (`Connection: close`; no body for HEAD).
pub fn format_response(status: u16, ctype: &str, body: &str, head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

async fn connection(mut stream: TcpStream, shared: Shared) {
    let mut buf = Vec::with_capacity(512);
    let read = async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || buf.len() + n > MAX_HEAD {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if !matches!(
        tokio::time::timeout(Duration::from_secs(5), read).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let out = match parse_request_line(&buf) {
        Some((m, p)) => {
            let snap = shared.lock().expect("snapshot lock").clone();
            let (status, ctype, body) = respond(&m, &p, &snap);
            format_response(status, ctype, &body, m == "HEAD")
        }
        None => format_response(400, "text/plain", "bad request\n", false),
    };
    if let Err(e) = stream.write_all(&out).await {
        debug!(error = %e, "writing an HTTP response");
    }
    let _ = stream.shutdown().await;
}

/// Serves `/liveness`, `/readiness` and `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, shared.clone()));
            }
            Err(e) => {
                debug!(error = %e, "accepting an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bgp::speaker::PeerStatus;

    fn peer(addr: &str, state: &str) -> PeerStatus {
        PeerStatus {
            address: addr.parse().unwrap(),
            port: 179,
            asn: 64512,
            peer_type: "ibgp".into(),
            state: state.into(),
            since: 0,
            established_count: 1,
            last_error: None,
            stopped: false,
            received: 2,
            accepted: 2,
            rejected: 0,
            stale: 0,
            advertised: 1,
        }
    }

    fn converged() -> Snapshot {
        let mut s = Snapshot {
            node: "n1".into(),
            confd_in_sync: true,
            configured_peers: 2,
            ipam_blocks: Some(1),
            ipam_addresses: Some(3),
            routes_replaced: 4,
            ..Snapshot::default()
        };
        s.felix.in_sync = true;
        s.felix.passes = 3;
        s.speaker = Some(StatusReport {
            asn: 64512,
            router_id: "192.0.2.11".parse().unwrap(),
            cluster_id: None,
            listen: vec![],
            routes: 3,
            peers: vec![
                peer("192.0.2.12", "Established"),
                peer("192.0.2.13", "Established"),
            ],
        });
        s.convergence.observe(Duration::from_millis(30));
        s.convergence.observe(Duration::from_secs(20));
        s
    }

    #[test]
    fn ready_only_when_felix_applied_and_sessions_are_up() {
        assert!(readiness(&converged()).0);
        let mut s = converged();
        s.speaker.as_mut().unwrap().peers[1].state = "Active".into();
        let (ok, why) = readiness(&s);
        assert!(!ok);
        assert_eq!(why, "BGP peer 192.0.2.13 is Active\n");
        let mut s = converged();
        s.felix.passes = 0;
        assert!(!readiness(&s).0);
        // No peers configured: BGP does not gate readiness.
        let mut s = converged();
        s.configured_peers = 0;
        s.speaker = None;
        assert!(readiness(&s).0);
        assert!(!readiness(&Snapshot::default()).0);
    }

    #[test]
    fn metrics_text() {
        let text = render(&converged());
        for line in [
            "tabby_node_ready 1",
            "tabby_bgp_peers{state=\"Established\"} 2",
            "tabby_bgp_peers{state=\"Idle\"} 0",
            "tabby_bgp_prefixes_received{peer=\"192.0.2.12\"} 2",
            "tabby_bgp_prefixes_advertised{peer=\"192.0.2.13\"} 1",
            "tabby_bgp_loc_rib_prefixes 3",
            "tabby_felix_passes_total 3",
            "tabby_felix_routes_programmed_total{op=\"replace\"} 4",
            "tabby_dataplane_convergence_seconds_bucket{le=\"0.025\"} 0",
            "tabby_dataplane_convergence_seconds_bucket{le=\"0.05\"} 1",
            "tabby_dataplane_convergence_seconds_bucket{le=\"10\"} 1",
            "tabby_dataplane_convergence_seconds_bucket{le=\"+Inf\"} 2",
            "tabby_dataplane_convergence_seconds_count 2",
            "tabby_ipam_blocks{node=\"n1\"} 1",
            "tabby_ipam_addresses_in_use{node=\"n1\"} 3",
            "# TYPE tabby_felix_passes_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line is `name{labels} value` with a numeric value.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let v = l.rsplit(' ').next().unwrap();
            assert!(v.parse::<f64>().is_ok(), "{l}");
        }
    }

    #[test]
    fn http_routing() {
        let s = converged();
        assert_eq!(respond("GET", "/liveness", &s).0, 200);
        assert_eq!(respond("GET", "/readiness", &s).0, 200);
        assert_eq!(respond("GET", "/readiness", &Snapshot::default()).0, 503);
        assert_eq!(respond("GET", "/metrics?x=1", &s).0, 200);
        assert_eq!(respond("GET", "/nope", &s).0, 404);
        assert_eq!(respond("POST", "/metrics", &s).0, 405);
        assert_eq!(
            parse_request_line(b"GET /readiness HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET".into(), "/readiness".into()))
        );
        assert_eq!(parse_request_line(b"garbage\r\n\r\n"), None);
        let r = String::from_utf8(format_response(503, "text/plain", "no\n", false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(r.contains("Content-Length: 3\r\n"));
        assert!(r.ends_with("\r\n\r\nno\n"));
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let shared: Shared = Arc::new(Mutex::new(converged()));
        let server = tokio::spawn(serve(l, shared.clone()));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/readiness").await.starts_with("HTTP/1.1 200 OK"));
        shared.lock().unwrap().felix.in_sync = false;
        assert!(get("/readiness").await.starts_with("HTTP/1.1 503"));
        assert!(get("/metrics").await.contains("tabby_felix_in_sync 0"));
        server.abort();
    }
}
