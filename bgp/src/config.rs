//! Configuration of the standalone speaker `tabby-bgpd`, read from YAML.
//!
//! ```yaml
//! asn: 64512
//! router_id: 192.0.2.1
//! listen: ["192.0.2.1:179"]        # address or address:port ([v6]:port); port 179 by default
//! cluster_id: 192.0.2.1            # optional: route reflector for peers with rr_client
//! pools: ["198.18.0.0/15"]         # import policy: only prefixes inside these are accepted
//! originate: ["198.18.4.0/26"]     # prefixes this speaker announces
//! graceful_restart: {enabled: true, restart_time: 120}
//! peers:
//!   - address: 192.0.2.2
//!     asn: 64512                   # same ASN = iBGP
//!     port: 179
//!     passive: false
//!     rr_client: true
//!     password: s3cret             # TCP MD5 (RFC 2385)
//!     hold_time: 90
//!     keepalive: 30                # default: hold_time / 3
//!     connect_retry: 1             # seconds, first retry (jittered); doubles up to 30
//!     ttl_security: false          # GTSM (RFC 5082)
//!     max_prefix: 10000
//!     max_prefix_action: stop      # stop | warn
//!     import_all: false            # true: accept prefixes outside `pools` from this peer
//!     source_address: 192.0.2.1
//!     graceful_restart: true       # default: the top-level setting
//!     restart_time: 120
//!     next_hop_self: false
//!     keep_next_hop: false
//! ```
//!
//! Reading goes YAML → `serde_json::Value` (serde-saphyr, which reports syntax errors with line
//! and column) → raw structs (serde, via `serde_path_to_error` so that unknown keys and badly
//! typed values come back with their path) → [`Config`] after the semantic checks, which name
//! the path too: `peers[1].hold_time: 2 is not allowed: must be 0 or at least 3`. All problems
//! are reported at once.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::fsm::{Capabilities, FsmConfig, GracefulRestart};
use crate::policy::{ImportPolicy, MaxPrefixAction};

/// The BGP port (RFC 4271 §8.2.1).
pub const BGP_PORT: u16 = 179;
/// Hold Time proposed unless configured (RFC 4271 §10 suggests 90 s).
pub const DEFAULT_HOLD_TIME: u16 = 90;
/// First connect retry delay unless configured, in seconds. Low: peers of a cluster start
/// together and refuse each other until they listen; the delay doubles on each failure up
/// to [`crate::fsm::CONNECT_RETRY_MAX`], with jitter (RFC 4271 §10).
pub const DEFAULT_CONNECT_RETRY: u16 = 1;
/// Restart Time advertised unless configured (RFC 4724 §4.2 suggests at most the Hold Time;
/// BIRD and GoBGP default to 120 s).
pub const DEFAULT_RESTART_TIME: u16 = 120;
/// Linux `TCP_MD5SIG_MAXKEYLEN`.
pub const MAX_MD5_KEY_LEN: usize = 80;

/// The speaker's configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Sockets to accept BGP connections on. Default: `0.0.0.0:179`.
    pub listen: Vec<SocketAddr>,
    /// RFC 4456 CLUSTER_ID; when set, this speaker reflects routes for `rr_client` peers.
    pub cluster_id: Option<Ipv4Addr>,
    pub pools: Vec<IpNet>,
    pub originate: Vec<IpNet>,
    pub graceful_restart: GracefulRestartConfig,
    pub peers: Vec<PeerConfig>,
}

/// Top-level RFC 4724 graceful restart settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    pub enabled: bool,
    /// Seconds, 1–4095.
    pub restart_time: u16,
}

/// How the NEXT_HOP of routes sent to a peer is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NextHop {
    /// RFC 4271 §5.1.3: our address towards eBGP peers, unchanged towards iBGP peers.
    #[default]
    Default,
    /// Always our address (`next_hop_self`).
    SelfAddress,
    /// Never changed, also towards eBGP peers (`keep_next_hop`).
    Keep,
}

/// One configured peer, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: IpAddr,
    pub asn: u32,
    pub port: u16,
    /// Never initiate the connection.
    pub passive: bool,
    /// RFC 4456 route reflector client.
    pub rr_client: bool,
    /// TCP MD5 signature key (RFC 2385).
    pub password: Option<String>,
    pub hold_time: u16,
    /// `None`: a third of the negotiated Hold Time.
    pub keepalive: Option<u16>,
    /// First connect retry delay.
    pub connect_retry: Duration,
    /// RFC 5082 GTSM: send with TTL 255, accept only TTL 255.
    pub ttl_security: bool,
    pub max_prefix: Option<u32>,
    pub max_prefix_action: MaxPrefixAction,
    /// Accept prefixes outside the pools from this peer.
    pub import_all: bool,
    pub source_address: Option<IpAddr>,
    /// Graceful restart for this peer (its own setting, else the top-level one).
    pub graceful_restart: bool,
    pub restart_time: u16,
    pub next_hop: NextHop,
}

impl PeerConfig {
    /// Whether this is an internal peer of a speaker in `local_asn`.
    pub fn is_ibgp(&self, local_asn: u32) -> bool {
        self.asn == local_asn
    }

    /// The socket address to connect to.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// The problems found in a configuration, each with the path of its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading BGP config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("BGP config is not valid YAML: {0}")]
    Syntax(String),
    #[error("BGP config is invalid:\n{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The path-tagged problems, empty for read and syntax errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            _ => &[],
        }
    }
}

/// One invalid key: `peers[1].hold_time: 2 is not allowed: must be 0 or at least 3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key's path, e.g. `peers[1].hold_time`; empty for the document itself.
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  {p}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    asn: u32,
    router_id: Ipv4Addr,
    listen: Option<Vec<String>>,
    cluster_id: Option<Ipv4Addr>,
    #[serde(default)]
    pools: Vec<String>,
    #[serde(default)]
    originate: Vec<String>,
    graceful_restart: Option<RawGracefulRestart>,
    #[serde(default)]
    peers: Vec<RawPeer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGracefulRestart {
    #[serde(default)]
    enabled: bool,
    restart_time: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    address: IpAddr,
    asn: u32,
    port: Option<u16>,
    #[serde(default)]
    passive: bool,
    #[serde(default)]
    rr_client: bool,
    password: Option<String>,
    hold_time: Option<u16>,
    keepalive: Option<u16>,
    connect_retry: Option<u16>,
    #[serde(default)]
    ttl_security: bool,
    max_prefix: Option<u32>,
    max_prefix_action: Option<MaxPrefixAction>,
    #[serde(default)]
    import_all: bool,
    source_address: Option<IpAddr>,
    graceful_restart: Option<bool>,
    restart_time: Option<u16>,
    #[serde(default)]
    next_hop_self: bool,
    #[serde(default)]
    keep_next_hop: bool,
}

/// Collects problems while checking.
#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn fail(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            reason: reason.into(),
        });
    }

    /// RFC 7607 (0), RFC 6793 (23456, AS_TRANS), RFC 7300 (65535, 4294967295).
    fn asn(&mut self, path: &str, asn: u32) {
        let why = match asn {
            0 => "reserved (RFC 7607)",
            23456 => "AS_TRANS, reserved for 2-octet compatibility (RFC 6793)",
            65535 | 4294967295 => "reserved (RFC 7300)",
            _ => return,
        };
        self.fail(path, format!("{asn} is not allowed: {why}"));
    }

    fn prefixes(&mut self, key: &str, raw: &[String]) -> Vec<IpNet> {
        let mut nets = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let path = format!("{key}[{i}]");
            match s.trim().parse::<IpNet>() {
                Err(_) => self.fail(
                    path,
                    format!("{s:?} is not a CIDR prefix like 198.18.0.0/15 or 2001:db8::/48"),
                ),
                Ok(net) if net.trunc() != net => self.fail(
                    path,
                    format!("{net} has host bits set: did you mean {}?", net.trunc()),
                ),
                Ok(net) if net.prefix_len() == 0 => {
                    self.fail(path, format!("{net} is not allowed: a default route"))
                }
                Ok(net) if nets.contains(&net) => self.fail(path, format!("{net} is listed twice")),
                Ok(net) => nets.push(net),
            }
        }
        nets
    }

    fn listen(&mut self, raw: Option<&[String]>) -> Vec<SocketAddr> {
        let Some(raw) = raw else {
            return vec![SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), BGP_PORT)];
        };
        let mut addrs = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let path = format!("listen[{i}]");
            match parse_listen(s.trim()) {
                None => self.fail(
                    path,
                    format!(
                        "{s:?} is not an address or address:port \
                         (192.0.2.1, 192.0.2.1:179, [2001:db8::1]:179)"
                    ),
                ),
                Some(a) if a.port() == 0 => {
                    self.fail(path, format!("{a} is not allowed: port must be 1-65535"))
                }
                Some(a) if addrs.contains(&a) => self.fail(path, format!("{a} is listed twice")),
                Some(a) => addrs.push(a),
            }
        }
        addrs
    }

    fn restart_time(&mut self, path: &str, t: u16) {
        if !(1..=4095).contains(&t) {
            self.fail(
                path,
                format!("{t} is not allowed: must be 1-4095 seconds (12 bits, RFC 4724 §3)"),
            );
        }
    }
}

/// `192.0.2.1`, `192.0.2.1:179`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:179`.
fn parse_listen(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, BGP_PORT));
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<Ipv6Addr>()
        .ok()
        .map(|ip| SocketAddr::new(ip.into(), BGP_PORT))
}

/// serde's "missing field `x`" names the container; point at the key instead.
fn problem_from_serde(path: &serde_path_to_error::Path, message: String) -> Problem {
    let parent = path.to_string();
    let parent = if parent == "." { String::new() } else { parent };
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let path = if parent.is_empty() {
            field.to_string()
        } else {
            format!("{parent}.{field}")
        };
        return Problem {
            path,
            reason: "required but missing".into(),
        };
    }
    Problem {
        path: parent,
        reason: message,
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_yaml(&text)
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let value: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let problem = problem_from_serde(e.path(), e.inner().to_string());
            ConfigError::Invalid(vec![problem])
        })?;
        Config::check(raw)
    }

    fn check(raw: RawConfig) -> Result<Config, ConfigError> {
        let mut c = Checker::default();
        c.asn("asn", raw.asn);
        if raw.router_id.is_unspecified() {
            c.fail(
                "router_id",
                "0.0.0.0 is not allowed: the BGP identifier must be non-zero (RFC 6286)",
            );
        }
        let listen = c.listen(raw.listen.as_deref());
        if raw.cluster_id.is_some_and(|id| id.is_unspecified()) {
            c.fail(
                "cluster_id",
                "0.0.0.0 is not allowed: the CLUSTER_ID must be non-zero",
            );
        }
        let pools = c.prefixes("pools", &raw.pools);
        let originate = c.prefixes("originate", &raw.originate);
        let graceful_restart = match raw.graceful_restart {
            None => GracefulRestartConfig {
                enabled: false,
                restart_time: DEFAULT_RESTART_TIME,
            },
            Some(gr) => {
                let restart_time = gr.restart_time.unwrap_or(DEFAULT_RESTART_TIME);
                c.restart_time("graceful_restart.restart_time", restart_time);
                GracefulRestartConfig {
                    enabled: gr.enabled,
                    restart_time,
                }
            }
        };

        let mut peers = Vec::with_capacity(raw.peers.len());
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, p) in raw.peers.into_iter().enumerate() {
            let at = |key: &str| format!("peers[{i}].{key}");
            let ibgp = p.asn == raw.asn;
            if p.address.is_unspecified() || p.address.is_multicast() {
                c.fail(
                    at("address"),
                    format!("{} is not allowed: not a unicast address", p.address),
                );
            }
            c.asn(&at("asn"), p.asn);
            let port = p.port.unwrap_or(BGP_PORT);
            if port == 0 {
                c.fail(at("port"), "0 is not allowed: must be 1-65535");
            }
            if let Some(first) = seen.insert(SocketAddr::new(p.address, port), i) {
                c.fail(
                    at("address"),
                    format!(
                        "{} port {port} is already configured as peers[{first}]",
                        p.address
                    ),
                );
            }
            if p.rr_client {
                if raw.cluster_id.is_none() {
                    c.fail(at("rr_client"), "requires a top-level cluster_id");
                }
                if !ibgp {
                    c.fail(
                        at("rr_client"),
                        format!(
                            "only an iBGP peer (asn {}) can be a route reflector client \
                             (RFC 4456), this one has asn {}",
                            raw.asn, p.asn
                        ),
                    );
                }
            }
            if let Some(pw) = &p.password {
                if pw.is_empty() {
                    c.fail(at("password"), "must not be empty (omit it for no TCP MD5)");
                } else if pw.len() > MAX_MD5_KEY_LEN {
                    c.fail(
                        at("password"),
                        format!(
                            "is {} bytes long: TCP MD5 keys are at most {MAX_MD5_KEY_LEN} bytes",
                            pw.len()
                        ),
                    );
                }
            }
            let hold_time = p.hold_time.unwrap_or(DEFAULT_HOLD_TIME);
            if hold_time == 1 || hold_time == 2 {
                c.fail(
                    at("hold_time"),
                    format!("{hold_time} is not allowed: must be 0 or at least 3"),
                );
            }
            if let Some(k) = p.keepalive {
                if hold_time == 0 {
                    c.fail(
                        at("keepalive"),
                        "not allowed with hold_time 0: no KEEPALIVEs are sent then",
                    );
                } else if k == 0 {
                    c.fail(at("keepalive"), "0 is not allowed: must be at least 1");
                } else if hold_time >= 3 && k > hold_time / 3 {
                    c.fail(
                        at("keepalive"),
                        format!(
                            "{k} is not allowed: must be at most a third of hold_time ({})",
                            hold_time / 3
                        ),
                    );
                }
            }
            let connect_retry = p.connect_retry.unwrap_or(DEFAULT_CONNECT_RETRY);
            if connect_retry == 0 {
                c.fail(
                    at("connect_retry"),
                    "0 is not allowed: must be at least 1 second",
                );
            }
            if p.max_prefix == Some(0) {
                c.fail(at("max_prefix"), "0 is not allowed: must be at least 1");
            }
            if p.max_prefix_action.is_some() && p.max_prefix.is_none() {
                c.fail(at("max_prefix_action"), "has no effect without max_prefix");
            }
            if let Some(src) = p.source_address {
                if src.is_unspecified() || src.is_multicast() {
                    c.fail(
                        at("source_address"),
                        format!("{src} is not allowed: not a unicast address"),
                    );
                } else if src.is_ipv4() != p.address.is_ipv4() {
                    c.fail(
                        at("source_address"),
                        format!(
                            "{src} is not the same address family as address {}",
                            p.address
                        ),
                    );
                }
            }
            let gr = p.graceful_restart.unwrap_or(graceful_restart.enabled);
            let restart_time = match p.restart_time {
                Some(t) => {
                    c.restart_time(&at("restart_time"), t);
                    if !gr {
                        c.fail(
                            at("restart_time"),
                            "has no effect: graceful restart is off for this peer",
                        );
                    }
                    t
                }
                None => graceful_restart.restart_time,
            };
            let next_hop = match (p.next_hop_self, p.keep_next_hop) {
                (true, true) => {
                    c.fail(at("keep_next_hop"), "cannot be combined with next_hop_self");
                    NextHop::Default
                }
                (true, false) => NextHop::SelfAddress,
                (false, true) => NextHop::Keep,
                (false, false) => NextHop::Default,
            };
            peers.push(PeerConfig {
                address: p.address,
                asn: p.asn,
                port,
                passive: p.passive,
                rr_client: p.rr_client,
                password: p.password,
                hold_time,
                keepalive: p.keepalive,
                connect_retry: Duration::from_secs(connect_retry.into()),
                ttl_security: p.ttl_security,
                max_prefix: p.max_prefix,
                max_prefix_action: p.max_prefix_action.unwrap_or_default(),
                import_all: p.import_all,
                source_address: p.source_address,
                graceful_restart: gr,
                restart_time,
                next_hop,
            });
        }

        if !c.problems.is_empty() {
            return Err(ConfigError::Invalid(c.problems));
        }
        Ok(Config {
            asn: raw.asn,
            router_id: raw.router_id,
            listen,
            cluster_id: raw.cluster_id,
            pools,
            originate,
            graceful_restart,
            peers,
        })
    }

    /// The FSM settings for one of [`Config::peers`].
    pub fn fsm_config(&self, peer: &PeerConfig) -> FsmConfig {
        let mut fsm = FsmConfig::new(self.asn, self.router_id, peer.asn);
        fsm.hold_time = peer.hold_time;
        fsm.keepalive = peer.keepalive;
        fsm.connect_retry = peer.connect_retry;
        fsm.passive = peer.passive;
        fsm.capabilities = Capabilities {
            graceful_restart: peer.graceful_restart.then_some(GracefulRestart {
                restart_time: peer.restart_time,
                flags: 0,
            }),
            ..Capabilities::default()
        };
        // Different peers back off on different schedules, yet reproducibly.
        fsm.jitter_seed = match peer.address {
            IpAddr::V4(a) => u32::from(a).into(),
            IpAddr::V6(a) => u128::from(a) as u64,
        } ^ u64::from(peer.port) << 32;
        fsm
    }

    /// The import policy: the pools, and as protected addresses the router id, the specific
    /// listen addresses, and every peer and source address.
    pub fn import_policy(&self) -> ImportPolicy {
        let mut protected = vec![IpAddr::V4(self.router_id)];
        protected.extend(
            self.listen
                .iter()
                .map(|a| a.ip())
                .filter(|ip| !ip.is_unspecified()),
        );
        for p in &self.peers {
            protected.push(p.address);
            protected.extend(p.source_address);
        }
        protected.sort();
        protected.dedup();
        ImportPolicy {
            pools: self.pools.clone(),
            protected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
asn: 64512
router_id: 192.0.2.1
listen: ["192.0.2.1:179"]        # address:port pairs; port 179 by default
cluster_id: 192.0.2.1            # optional: act as route reflector for peers with rr_client
pools: ["198.18.0.0/15"]         # import policy: only prefixes inside these are accepted
originate: ["198.18.4.0/26"]     # prefixes this speaker announces
peers:
  - address: 192.0.2.2
    asn: 64512                   # same ASN = iBGP
    port: 179
    passive: false
    rr_client: true
    password: s3cret             # TCP MD5
    hold_time: 90
    ttl_security: false
    max_prefix: 10000
    import_all: false            # true: accept prefixes outside `pools` from this peer
"#;

    fn minimal(extra_top: &str, peer: &str) -> String {
        format!(
            "asn: 64512\nrouter_id: 192.0.2.1\n{extra_top}peers:\n  - address: 192.0.2.2\n    asn: 64512\n{peer}"
        )
    }

    /// The problems of an invalid config, as `path: reason` strings.
    fn problems(yaml: &str) -> Vec<String> {
        match Config::from_yaml(yaml) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => {
                assert!(!e.problems().is_empty(), "{e}");
                e.problems().iter().map(|p| p.to_string()).collect()
            }
        }
    }

    fn assert_problem(yaml: &str, want: &str) {
        let got = problems(yaml);
        assert!(
            got.iter().any(|p| p == want),
            "want {want:?} among {got:#?}"
        );
    }

    fn assert_problem_starts(yaml: &str, want: &str) {
        let got = problems(yaml);
        assert!(
            got.iter().any(|p| p.starts_with(want)),
            "want {want:?}… among {got:#?}"
        );
    }

    #[test]
    fn example_parses() {
        let c = Config::from_yaml(EXAMPLE).unwrap();
        assert_eq!(c.asn, 64512);
        assert_eq!(c.router_id, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(c.listen, vec!["192.0.2.1:179".parse().unwrap()]);
        assert_eq!(c.cluster_id, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(c.pools, vec!["198.18.0.0/15".parse::<IpNet>().unwrap()]);
        assert_eq!(c.originate, vec!["198.18.4.0/26".parse::<IpNet>().unwrap()]);
        assert_eq!(
            c.peers,
            vec![PeerConfig {
                address: "192.0.2.2".parse().unwrap(),
                asn: 64512,
                port: 179,
                passive: false,
                rr_client: true,
                password: Some("s3cret".into()),
                hold_time: 90,
                keepalive: None,
                connect_retry: Duration::from_secs(1),
                ttl_security: false,
                max_prefix: Some(10000),
                max_prefix_action: MaxPrefixAction::Stop,
                import_all: false,
                source_address: None,
                graceful_restart: false,
                restart_time: 120,
                next_hop: NextHop::Default,
            }]
        );
        assert!(c.peers[0].is_ibgp(c.asn));
    }

    #[test]
    fn defaults() {
        let c = Config::from_yaml("asn: 64512\nrouter_id: 192.0.2.1\n").unwrap();
        assert_eq!(c.listen, vec!["0.0.0.0:179".parse().unwrap()]);
        assert!(c.peers.is_empty() && c.pools.is_empty() && c.originate.is_empty());
        assert_eq!(
            c.graceful_restart,
            GracefulRestartConfig {
                enabled: false,
                restart_time: 120
            }
        );
        let c = Config::from_yaml(&minimal("", "")).unwrap();
        assert_eq!(c.peers[0].port, 179);
        assert_eq!(c.peers[0].hold_time, 90);
        assert_eq!(c.peers[0].next_hop, NextHop::Default);
    }

    #[test]
    fn all_optional_peer_keys() {
        let c = Config::from_yaml(&minimal(
            "graceful_restart: {enabled: true, restart_time: 300}\n",
            "    keepalive: 10\n    connect_retry: 30\n    source_address: 192.0.2.1\n    \
             max_prefix: 5\n    max_prefix_action: warn\n    restart_time: 60\n    \
             next_hop_self: true\n    ttl_security: true\n    passive: true\n",
        ))
        .unwrap();
        let p = &c.peers[0];
        assert_eq!(p.keepalive, Some(10));
        assert_eq!(p.connect_retry, Duration::from_secs(30));
        assert_eq!(p.source_address, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(p.max_prefix_action, MaxPrefixAction::Warn);
        assert!(p.graceful_restart, "inherited from the top level");
        assert_eq!(p.restart_time, 60);
        assert_eq!(p.next_hop, NextHop::SelfAddress);
        assert!(p.ttl_security && p.passive);
        assert_eq!(c.graceful_restart.restart_time, 300);

        let c = Config::from_yaml(&minimal(
            "graceful_restart: {enabled: true}\n",
            "    graceful_restart: false\n    keep_next_hop: true\n",
        ))
        .unwrap();
        assert!(!c.peers[0].graceful_restart);
        assert_eq!(c.peers[0].next_hop, NextHop::Keep);
    }

    #[test]
    fn listen_forms() {
        let c = Config::from_yaml(
            "asn: 64512\nrouter_id: 192.0.2.1\nlisten: ['192.0.2.1', '192.0.2.1:1179', \
             '[2001:db8::1]:179', '2001:db8::2', '[2001:db8::3]', '::']\n",
        )
        .unwrap();
        let want: Vec<SocketAddr> = [
            "192.0.2.1:179",
            "192.0.2.1:1179",
            "[2001:db8::1]:179",
            "[2001:db8::2]:179",
            "[2001:db8::3]:179",
            "[::]:179",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(c.listen, want);
        let c = Config::from_yaml("asn: 64512\nrouter_id: 192.0.2.1\nlisten: []\n").unwrap();
        assert!(c.listen.is_empty());
    }

    #[test]
    fn unquoted_ipv6_peer_address() {
        let c = Config::from_yaml(
            "asn: 64512\nrouter_id: 192.0.2.1\npeers:\n  - address: 2001:db8::2\n    asn: 65001\n",
        )
        .unwrap();
        assert_eq!(c.peers[0].address, "2001:db8::2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn yaml_syntax_error_has_line_and_column() {
        let err = Config::from_yaml("asn: 1\npeers: [\n").unwrap_err();
        let ConfigError::Syntax(msg) = &err else {
            panic!("{err:?}");
        };
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let err = Config::from_yaml("asn: 64512\nasn: 64513\nrouter_id: 192.0.2.1\n").unwrap_err();
        assert!(
            err.to_string().contains("duplicate mapping key: asn"),
            "{err}"
        );
    }

    #[test]
    fn unknown_top_level_key() {
        assert_problem_starts(
            "asn: 64512\nrouter_id: 192.0.2.1\nrouterid: 192.0.2.1\n",
            "routerid: unknown field `routerid`",
        );
    }

    #[test]
    fn unknown_peer_key_has_its_path() {
        let yaml = format!(
            "{}  - address: 192.0.2.3\n    asn: 64512\n    holdtime: 90\n",
            minimal("", "")
        );
        assert_problem_starts(&yaml, "peers[1].holdtime: unknown field `holdtime`");
    }

    #[test]
    fn unknown_graceful_restart_key() {
        assert_problem_starts(
            "asn: 64512\nrouter_id: 192.0.2.1\ngraceful_restart: {enable: true}\n",
            "graceful_restart.enable: unknown field",
        );
    }

    #[test]
    fn missing_keys_name_the_key() {
        assert_problem("router_id: 192.0.2.1\n", "asn: required but missing");
        assert_problem(
            "asn: 64512\nrouter_id: 192.0.2.1\npeers:\n  - address: 192.0.2.2\n",
            "peers[0].asn: required but missing",
        );
    }

    #[test]
    fn badly_typed_values_have_their_path() {
        assert_problem_starts(
            &minimal("", "    hold_time: 70000\n"),
            "peers[0].hold_time: invalid value",
        );
        assert_problem_starts(
            &minimal("", "    hold_time: ninety\n"),
            "peers[0].hold_time: invalid type",
        );
        assert_problem_starts(
            &minimal("", "    passive: 3\n"),
            "peers[0].passive: invalid type",
        );
        assert_problem_starts("asn: -1\nrouter_id: 192.0.2.1\n", "asn: invalid value");
        assert_problem_starts(
            "asn: 64512\nrouter_id: 192.0.2\n",
            "router_id: invalid IPv4 address",
        );
        assert_problem_starts(
            &minimal("", "    max_prefix_action: drop\n"),
            "peers[0].max_prefix_action: unknown variant `drop`",
        );
        assert_problem_starts(
            "asn: 64512\nrouter_id: 192.0.2.1\npeers:\n  - address: node-2\n    asn: 1\n",
            "peers[0].address: invalid IP address",
        );
    }

    #[test]
    fn reserved_asns_are_rejected() {
        for (asn, why) in [
            (0u32, "reserved (RFC 7607)"),
            (
                23456,
                "AS_TRANS, reserved for 2-octet compatibility (RFC 6793)",
            ),
            (65535, "reserved (RFC 7300)"),
            (4294967295, "reserved (RFC 7300)"),
        ] {
            assert_problem(
                &format!("asn: {asn}\nrouter_id: 192.0.2.1\n"),
                &format!("asn: {asn} is not allowed: {why}"),
            );
            assert_problem(
                &format!(
                    "asn: 64512\nrouter_id: 192.0.2.1\npeers:\n  - address: 192.0.2.2\n    asn: {asn}\n"
                ),
                &format!("peers[0].asn: {asn} is not allowed: {why}"),
            );
        }
        // 4-octet ASNs are fine.
        Config::from_yaml("asn: 4200000000\nrouter_id: 192.0.2.1\n").unwrap();
    }

    #[test]
    fn zero_router_id_is_rejected() {
        assert_problem(
            "asn: 64512\nrouter_id: 0.0.0.0\n",
            "router_id: 0.0.0.0 is not allowed: the BGP identifier must be non-zero (RFC 6286)",
        );
    }

    #[test]
    fn zero_cluster_id_is_rejected() {
        assert_problem(
            "asn: 64512\nrouter_id: 192.0.2.1\ncluster_id: 0.0.0.0\n",
            "cluster_id: 0.0.0.0 is not allowed: the CLUSTER_ID must be non-zero",
        );
    }

    #[test]
    fn bad_listen_entries() {
        let base = "asn: 64512\nrouter_id: 192.0.2.1\n";
        assert_problem_starts(
            &format!("{base}listen: ['192.0.2.1:179', 'localhost:179']\n"),
            "listen[1]: \"localhost:179\" is not an address or address:port",
        );
        assert_problem_starts(
            &format!("{base}listen: ['2001:db8::1:179:x']\n"),
            "listen[0]: ",
        );
        assert_problem(
            &format!("{base}listen: ['192.0.2.1:0']\n"),
            "listen[0]: 192.0.2.1:0 is not allowed: port must be 1-65535",
        );
        assert_problem(
            &format!("{base}listen: ['192.0.2.1', '192.0.2.1:179']\n"),
            "listen[1]: 192.0.2.1:179 is listed twice",
        );
    }

    #[test]
    fn bad_prefixes() {
        let base = "asn: 64512\nrouter_id: 192.0.2.1\n";
        assert_problem(
            &format!("{base}pools: ['198.18.0.1/15']\n"),
            "pools[0]: 198.18.0.1/15 has host bits set: did you mean 198.18.0.0/15?",
        );
        assert_problem_starts(
            &format!("{base}pools: ['198.18.0.0/15', '198.18.0.0']\n"),
            "pools[1]: \"198.18.0.0\" is not a CIDR prefix",
        );
        assert_problem(
            &format!("{base}originate: ['0.0.0.0/0']\n"),
            "originate[0]: 0.0.0.0/0 is not allowed: a default route",
        );
        assert_problem(
            &format!("{base}originate: ['198.18.4.0/26', '198.18.4.0/26']\n"),
            "originate[1]: 198.18.4.0/26 is listed twice",
        );
        assert_problem_starts(
            &format!("{base}pools: ['198.18.0.0/33']\n"),
            "pools[0]: \"198.18.0.0/33\" is not a CIDR prefix",
        );
    }

    #[test]
    fn bad_peer_address() {
        assert_problem(
            "asn: 64512\nrouter_id: 192.0.2.1\npeers:\n  - address: 0.0.0.0\n    asn: 64512\n",
            "peers[0].address: 0.0.0.0 is not allowed: not a unicast address",
        );
        assert_problem(
            "asn: 64512\nrouter_id: 192.0.2.1\npeers:\n  - address: 224.0.0.5\n    asn: 64512\n",
            "peers[0].address: 224.0.0.5 is not allowed: not a unicast address",
        );
    }

    #[test]
    fn duplicate_peers_are_rejected_but_other_ports_are_fine() {
        let dup = format!(
            "{}  - address: 192.0.2.2\n    asn: 64512\n",
            minimal("", "")
        );
        assert_problem(
            &dup,
            "peers[1].address: 192.0.2.2 port 179 is already configured as peers[0]",
        );
        let other_port = format!(
            "{}  - address: 192.0.2.2\n    asn: 64512\n    port: 1179\n",
            minimal("", "")
        );
        assert_eq!(Config::from_yaml(&other_port).unwrap().peers.len(), 2);
    }

    #[test]
    fn zero_port_is_rejected() {
        assert_problem(
            &minimal("", "    port: 0\n"),
            "peers[0].port: 0 is not allowed: must be 1-65535",
        );
    }

    #[test]
    fn hold_time_must_be_zero_or_at_least_three() {
        let yaml = format!(
            "{}  - address: 192.0.2.3\n    asn: 64512\n    hold_time: 2\n",
            minimal("", "")
        );
        assert_problem(
            &yaml,
            "peers[1].hold_time: 2 is not allowed: must be 0 or at least 3",
        );
        assert_problem(
            &minimal("", "    hold_time: 1\n"),
            "peers[0].hold_time: 1 is not allowed: must be 0 or at least 3",
        );
        for ok in [0, 3, 65535] {
            Config::from_yaml(&minimal("", &format!("    hold_time: {ok}\n"))).unwrap();
        }
    }

    #[test]
    fn keepalive_rules() {
        assert_problem(
            &minimal("", "    hold_time: 90\n    keepalive: 31\n"),
            "peers[0].keepalive: 31 is not allowed: must be at most a third of hold_time (30)",
        );
        assert_problem(
            &minimal("", "    keepalive: 0\n"),
            "peers[0].keepalive: 0 is not allowed: must be at least 1",
        );
        assert_problem(
            &minimal("", "    hold_time: 0\n    keepalive: 10\n"),
            "peers[0].keepalive: not allowed with hold_time 0: no KEEPALIVEs are sent then",
        );
        Config::from_yaml(&minimal("", "    hold_time: 90\n    keepalive: 30\n")).unwrap();
    }

    #[test]
    fn connect_retry_must_be_positive() {
        assert_problem(
            &minimal("", "    connect_retry: 0\n"),
            "peers[0].connect_retry: 0 is not allowed: must be at least 1 second",
        );
    }

    #[test]
    fn rr_client_needs_cluster_id_and_ibgp() {
        assert_problem(
            &minimal("", "    rr_client: true\n"),
            "peers[0].rr_client: requires a top-level cluster_id",
        );
        assert_problem(
            "asn: 64512\nrouter_id: 192.0.2.1\ncluster_id: 192.0.2.1\npeers:\n  - address: 192.0.2.2\n    asn: 65001\n    rr_client: true\n",
            "peers[0].rr_client: only an iBGP peer (asn 64512) can be a route reflector client (RFC 4456), this one has asn 65001",
        );
    }

    #[test]
    fn password_rules() {
        assert_problem(
            &minimal("", "    password: ''\n"),
            "peers[0].password: must not be empty (omit it for no TCP MD5)",
        );
        let long = "x".repeat(81);
        assert_problem(
            &minimal("", &format!("    password: {long}\n")),
            "peers[0].password: is 81 bytes long: TCP MD5 keys are at most 80 bytes",
        );
        Config::from_yaml(&minimal("", &format!("    password: {}\n", "x".repeat(80)))).unwrap();
    }

    #[test]
    fn max_prefix_rules() {
        assert_problem(
            &minimal("", "    max_prefix: 0\n"),
            "peers[0].max_prefix: 0 is not allowed: must be at least 1",
        );
        assert_problem(
            &minimal("", "    max_prefix_action: warn\n"),
            "peers[0].max_prefix_action: has no effect without max_prefix",
        );
    }

    #[test]
    fn source_address_rules() {
        assert_problem(
            &minimal("", "    source_address: 2001:db8::1\n"),
            "peers[0].source_address: 2001:db8::1 is not the same address family as address 192.0.2.2",
        );
        assert_problem(
            &minimal("", "    source_address: 0.0.0.0\n"),
            "peers[0].source_address: 0.0.0.0 is not allowed: not a unicast address",
        );
    }

    #[test]
    fn restart_time_rules() {
        assert_problem(
            "asn: 64512\nrouter_id: 192.0.2.1\ngraceful_restart: {enabled: true, restart_time: 4096}\n",
            "graceful_restart.restart_time: 4096 is not allowed: must be 1-4095 seconds (12 bits, RFC 4724 §3)",
        );
        assert_problem(
            &minimal("", "    graceful_restart: true\n    restart_time: 0\n"),
            "peers[0].restart_time: 0 is not allowed: must be 1-4095 seconds (12 bits, RFC 4724 §3)",
        );
        assert_problem(
            &minimal("", "    restart_time: 60\n"),
            "peers[0].restart_time: has no effect: graceful restart is off for this peer",
        );
    }

    #[test]
    fn next_hop_options_are_exclusive() {
        assert_problem(
            &minimal("", "    next_hop_self: true\n    keep_next_hop: true\n"),
            "peers[0].keep_next_hop: cannot be combined with next_hop_self",
        );
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let err = Config::from_yaml(
            "asn: 0\nrouter_id: 0.0.0.0\npeers:\n  - address: 192.0.2.2\n    asn: 64512\n    hold_time: 2\n",
        )
        .unwrap_err();
        assert_eq!(err.problems().len(), 3, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("\n  peers[0].hold_time: 2 is not allowed: must be 0 or at least 3"),
            "{text}"
        );
    }

    #[test]
    fn fsm_config_from_peer() {
        let c = Config::from_yaml(&minimal(
            "graceful_restart: {enabled: true, restart_time: 90}\n",
            "    hold_time: 30\n    keepalive: 5\n    passive: true\n    connect_retry: 2\n",
        ))
        .unwrap();
        let f = c.fsm_config(&c.peers[0]);
        assert_eq!((f.local_asn, f.peer_asn), (64512, 64512));
        assert_eq!(f.local_router_id, c.router_id);
        assert_eq!(f.hold_time, 30);
        assert_eq!(f.keepalive, Some(5));
        assert!(f.passive);
        assert_eq!(f.connect_retry, Duration::from_secs(2));
        assert_eq!(
            f.capabilities.graceful_restart,
            Some(GracefulRestart {
                restart_time: 90,
                flags: 0
            })
        );
    }

    #[test]
    fn import_policy_protects_own_and_peer_addresses() {
        let c = Config::from_yaml(EXAMPLE).unwrap();
        let p = c.import_policy();
        assert_eq!(p.pools, c.pools);
        assert_eq!(
            p.protected,
            vec![
                "192.0.2.1".parse::<IpAddr>().unwrap(),
                "192.0.2.2".parse().unwrap()
            ]
        );
    }
}
