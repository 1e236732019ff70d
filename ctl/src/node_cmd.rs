//! `tabbyctl node status` and `tabbyctl node routes`: what this node's BGP speaker
//! (tabby-bgpd or tabby-node) says over its control socket ([`bgp::control`]). They do not
//! need the datastore.
//!
//! `node status` prints the table calicoctl prints (times in UTC):
//!
//! ```text
//! tabby BGP speaker is running (AS 64512, router id 192.0.2.1, 3 routes).
//!
//! IPv4 BGP status
//! +--------------+-------------------+-------+----------+-------------+
//! | PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO     |
//! +--------------+-------------------+-------+----------+-------------+
//! | 192.0.2.12   | ibgp              | up    | 06:40:01 | Established |
//! +--------------+-------------------+-------+----------+-------------+
//!
//! IPv6 BGP status
//! No IPv6 peers found.
//! ```
//!
//! `-o json` prints the speaker's answer as it is, with each peer's prefix counts.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bgp::control::{self, Request, Response};
use bgp::speaker::{PeerStatus, Route, StatusReport};

use crate::cli::{NodeCommand, NodeOutput};
use crate::error::CtlError;

pub async fn run(cmd: NodeCommand, out: &mut dyn Write) -> Result<(), CtlError> {
    match cmd {
        NodeCommand::Status(args) => {
            let report = status(&args.socket).await?;
            let text = match args.output {
                NodeOutput::Json => json(&report)?,
                NodeOutput::Table => status_text(&report, now_secs()),
            };
            emit(out, &text)
        }
        NodeCommand::Routes(args) => {
            let routes = routes(&args.socket).await?;
            let text = match args.output {
                NodeOutput::Json => json(&routes)?,
                NodeOutput::Table => routes_text(&routes),
            };
            emit(out, &text)
        }
    }
}

/// The speaker's error becomes the command's (the control socket error says what to check:
/// "is tabby-bgpd / tabby-node running? no socket at …").
fn control_err(e: control::ControlError) -> CtlError {
    CtlError::Usage(e.to_string())
}

async fn status(socket: &Path) -> Result<StatusReport, CtlError> {
    match control::request(socket, &Request::Status)
        .await
        .map_err(control_err)?
    {
        Response::Status(s) => Ok(s),
        other => Err(unexpected(socket, &other)),
    }
}

async fn routes(socket: &Path) -> Result<Vec<Route>, CtlError> {
    match control::request(socket, &Request::Routes)
        .await
        .map_err(control_err)?
    {
        Response::Routes(r) => Ok(r),
        other => Err(unexpected(socket, &other)),
    }
}

fn unexpected(socket: &Path, r: &Response) -> CtlError {
    CtlError::Usage(format!(
        "unexpected answer from {}: {r:?}",
        socket.display()
    ))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, CtlError> {
    let mut s = serde_json::to_string_pretty(v)
        .map_err(|e| CtlError::Usage(format!("encoding JSON: {e}")))?;
    s.push('\n');
    Ok(s)
}

fn emit(out: &mut dyn Write, text: &str) -> Result<(), CtlError> {
    out.write_all(text.as_bytes())
        .map_err(|source| CtlError::Write {
            what: "standard output".into(),
            source,
        })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// calicoctl's STATE column: `up` when Established, `down` when stopped, `start` while
/// trying.
fn state_column(p: &PeerStatus) -> &'static str {
    if p.state == "Established" {
        "up"
    } else if p.stopped {
        "down"
    } else {
        "start"
    }
}

/// calicoctl's INFO column: the FSM state, and why the last attempt failed.
fn info_column(p: &PeerStatus) -> String {
    match (&p.last_error, p.state.as_str()) {
        (Some(e), s) if s != "Established" => format!("{s} Error: {e}"),
        (_, s) => s.to_string(),
    }
}

/// Time of day (UTC) when `secs` is today, else the date, as calicoctl's SINCE.
fn since_column(secs: u64, now: u64) -> String {
    let (day, tod) = (secs / 86_400, secs % 86_400);
    if day == now / 86_400 {
        format!("{:02}:{:02}:{:02}", tod / 3600, (tod % 3600) / 60, tod % 60)
    } else {
        let (y, m, d) = civil_from_days(day as i64);
        format!("{y:04}-{m:02}-{d:02}")
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The text of `node status`.
pub fn status_text(r: &StatusReport, now: u64) -> String {
    let mut s = format!(
        "tabby BGP speaker is running (AS {}, router id {}{}, {} routes).\n",
        r.asn,
        r.router_id,
        r.cluster_id
            .map(|c| format!(", cluster id {c}"))
            .unwrap_or_default(),
        r.routes
    );
    for (family, v4) in [("IPv4", true), ("IPv6", false)] {
        s.push_str(&format!("\n{family} BGP status\n"));
        let rows: Vec<Vec<String>> = r
            .peers
            .iter()
            .filter(|p| p.address.is_ipv4() == v4)
            .map(|p| {
                vec![
                    peer_address(p),
                    p.peer_type.clone(),
                    state_column(p).into(),
                    since_column(p.since, now),
                    info_column(p),
                ]
            })
            .collect();
        if rows.is_empty() {
            s.push_str(&format!("No {family} peers found.\n"));
        } else {
            s.push_str(&boxed(
                &["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
                &rows,
            ));
        }
    }
    s
}

fn peer_address(p: &PeerStatus) -> String {
    if p.port == bgp::config::BGP_PORT {
        p.address.to_string()
    } else {
        match p.address {
            IpAddr::V4(a) => format!("{a}:{}", p.port),
            IpAddr::V6(a) => format!("[{a}]:{}", p.port),
        }
    }
}

/// The text of `node routes`.
pub fn routes_text(routes: &[Route]) -> String {
    if routes.is_empty() {
        return "No routes.\n".into();
    }
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            let hops = if r.local {
                "local".to_string()
            } else {
                r.next_hops
                    .iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut info = Vec::new();
            if r.stale {
                info.push("stale".to_string());
            }
            if r.paths > 1 {
                info.push(format!("{} paths", r.paths));
            }
            vec![
                r.prefix.to_string(),
                hops,
                r.from.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
                r.as_path.clone(),
                r.local_pref.map(|l| l.to_string()).unwrap_or_default(),
                r.med.map(|m| m.to_string()).unwrap_or_default(),
                r.origin.clone(),
                info.join(", "),
            ]
        })
        .collect();
    boxed(
        &[
            "PREFIX",
            "NEXT HOPS",
            "FROM",
            "AS PATH",
            "LOCAL PREF",
            "MED",
            "ORIGIN",
            "INFO",
        ],
        &rows,
    )
}

/// A bordered table with centred headings, as calicoctl's tablewriter prints it.
fn boxed(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let mut s = rule.clone();
    for (h, w) in header.iter().zip(&widths) {
        s.push_str(&format!("| {h:^w$} "));
    }
    s.push_str("|\n");
    s.push_str(&rule);
    for row in rows {
        for (c, w) in row.iter().zip(&widths) {
            s.push_str(&format!("| {c:<w$} "));
        }
        s.push_str("|\n");
    }
    s.push_str(&rule);
    s
}

/// Pure formatting here; the command against a live speaker is tested with two
/// in-process speakers peering on loopback (no root needed).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use bgp::config::Config;
    use bgp::speaker::Speaker;
    use clap::Parser;

    fn peer(state: &str) -> PeerStatus {
        PeerStatus {
            address: "192.0.2.12".parse().unwrap(),
            port: 179,
            asn: 64512,
            peer_type: "ibgp".into(),
            state: state.into(),
            since: 1_795_000_000,
            established_count: 1,
            last_error: Some("connection failed or closed".into()),
            stopped: false,
            received: 3,
            accepted: 2,
            rejected: 1,
            stale: 0,
            advertised: 1,
        }
    }

    #[test]
    fn status_table_like_calicoctl() {
        let r = StatusReport {
            asn: 64512,
            router_id: "192.0.2.1".parse().unwrap(),
            cluster_id: None,
            listen: vec![],
            routes: 3,
            peers: vec![peer("Established")],
        };
        let text = status_text(&r, 1_795_000_100);
        assert_eq!(
            text,
            "tabby BGP speaker is running (AS 64512, router id 192.0.2.1, 3 routes).\n\
             \n\
             IPv4 BGP status\n\
             +--------------+-----------+-------+----------+-------------+\n\
             | PEER ADDRESS | PEER TYPE | STATE |  SINCE   |    INFO     |\n\
             +--------------+-----------+-------+----------+-------------+\n\
             | 192.0.2.12   | ibgp      | up    | 11:06:40 | Established |\n\
             +--------------+-----------+-------+----------+-------------+\n\
             \n\
             IPv6 BGP status\n\
             No IPv6 peers found.\n"
        );
    }

    #[test]
    fn columns_for_sessions_that_are_down() {
        let p = peer("Active");
        assert_eq!(state_column(&p), "start");
        assert_eq!(info_column(&p), "Active Error: connection failed or closed");
        assert_eq!(
            since_column(1_795_000_000, 1_795_000_000 + 86_400),
            "2026-11-18"
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[tokio::test]
    async fn absent_socket_says_what_to_check() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("bgp.sock");
        let cli = Cli::parse_from([
            "tabbyctl",
            "--datastore",
            "dir:/nonexistent/never-opened",
            "node",
            "status",
            "--socket",
            sock.to_str().unwrap(),
        ]);
        let e = crate::run(cli, &mut Vec::new()).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "is tabby-bgpd / tabby-node running? no socket at {}",
                sock.display()
            )
        );
    }

    /// A speaker on `me` (port chosen by the kernel) with one iBGP peer.
    fn speaker_config(me: &str, peer: &str, peer_port: u16, passive: bool, block: &str) -> Config {
        let mut c = Config::from_yaml(&format!(
            "asn: 64512\nrouter_id: {me}\nlisten: [\"{me}:179\"]\npools: [\"198.18.0.0/15\"]\noriginate: [\"{block}\"]\npeers:\n  - address: {peer}\n    asn: 64512\n    port: {peer_port}\n    passive: {passive}\n    connect_retry: 1\n    source_address: {me}\n"
        ))
        .unwrap();
        c.listen = vec![format!("{me}:0").parse().unwrap()];
        c
    }

    /// `tabbyctl node status -o json` and `node routes` against two speakers peering over
    /// loopback, one of them serving the control socket as tabby-bgpd does.
    #[tokio::test]
    async fn node_status_json_and_routes_against_a_running_speaker() {
        let b = Speaker::start(speaker_config(
            "127.0.0.2",
            "127.0.0.1",
            179,
            true,
            "198.18.2.0/26",
        ))
        .await
        .unwrap();
        let port_b = b.local_addrs()[0].port();
        let a = Speaker::start(speaker_config(
            "127.0.0.1",
            "127.0.0.2",
            port_b,
            false,
            "198.18.1.0/26",
        ))
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("bgp.sock");
        let server = control::serve(&sock, a.clone()).unwrap();
        let args = |cmd: &str, json: bool| {
            let mut v = vec![
                "tabbyctl".to_string(),
                "node".into(),
                cmd.into(),
                "--socket".into(),
                sock.display().to_string(),
            ];
            if json {
                v.extend(["-o".into(), "json".into()]);
            }
            Cli::parse_from(v)
        };

        let mut tries = 0;
        let (r, text) = loop {
            let mut out = Vec::new();
            crate::run(args("status", true), &mut out).await.unwrap();
            let r: StatusReport = serde_json::from_slice(&out).unwrap();
            if r.peers[0].state == "Established" && r.peers[0].accepted == 1 {
                break (r, String::from_utf8(out).unwrap());
            }
            tries += 1;
            assert!(
                tries < 100,
                "not up: {r:?}\nother side: {:?}",
                b.status().await
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        let p = &r.peers[0];
        assert_eq!((p.received, p.accepted, p.advertised), (1, 1, 1), "{p:?}");
        assert_eq!(p.port, port_b);
        assert!(text.contains("\"received\": 1"), "{text}");
        assert!(text.contains("\"advertised\": 1"), "{text}");

        let mut out = Vec::new();
        crate::run(args("status", false), &mut out).await.unwrap();
        let table = String::from_utf8(out).unwrap();
        assert!(
            table.contains(&format!("| 127.0.0.2:{port_b} | ibgp      | up    |")),
            "{table}"
        );
        assert!(table.contains("| Established |"), "{table}");

        let mut out = Vec::new();
        crate::run(args("routes", false), &mut out).await.unwrap();
        let table = String::from_utf8(out).unwrap();
        assert!(table.contains("| 198.18.1.0/26 | local"), "{table}");
        assert!(
            table.contains("| 198.18.2.0/26 | 127.0.0.2 | 127.0.0.2 |"),
            "{table}"
        );

        let mut out = Vec::new();
        crate::run(args("routes", true), &mut out).await.unwrap();
        let routes: Vec<Route> = serde_json::from_slice(&out).unwrap();
        assert_eq!(routes.len(), 2);

        server.close();
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }
}
