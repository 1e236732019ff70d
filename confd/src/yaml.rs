//! The speaker configuration as the YAML `tabby-bgpd` reads (`bgp::config`), so that a rendered
//! config can be written to a file, read back by [`bgp::config::Config::from_yaml`] (which checks
//! it), and snapshot-tested in a form an operator can read.

use std::fmt::Write;

use bgp::config::{Config, NextHop};
use bgp::policy::MaxPrefixAction;

/// `config` as `tabby-bgpd` YAML; `Config::from_yaml` of the result gives `config` back.
pub fn speaker_yaml(config: &Config) -> String {
    let mut y = String::new();
    let list = |v: Vec<String>| format!("[{}]", v.join(", "));
    let _ = writeln!(y, "asn: {}", config.asn);
    let _ = writeln!(y, "router_id: {}", config.router_id);
    let _ = writeln!(
        y,
        "listen: {}",
        list(config.listen.iter().map(|a| format!("\"{a}\"")).collect())
    );
    if let Some(id) = config.cluster_id {
        let _ = writeln!(y, "cluster_id: {id}");
    }
    let _ = writeln!(
        y,
        "pools: {}",
        list(config.pools.iter().map(|p| format!("\"{p}\"")).collect())
    );
    let _ = writeln!(
        y,
        "originate: {}",
        list(
            config
                .originate
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect()
        )
    );
    let _ = writeln!(
        y,
        "graceful_restart: {{enabled: {}, restart_time: {}}}",
        config.graceful_restart.enabled, config.graceful_restart.restart_time
    );
    if config.peers.is_empty() {
        let _ = writeln!(y, "peers: []");
        return y;
    }
    let _ = writeln!(y, "peers:");
    for p in &config.peers {
        let _ = writeln!(y, "  - address: \"{}\"", p.address);
        let _ = writeln!(y, "    asn: {}", p.asn);
        let _ = writeln!(y, "    port: {}", p.port);
        let _ = writeln!(y, "    passive: {}", p.passive);
        let _ = writeln!(y, "    rr_client: {}", p.rr_client);
        if let Some(pw) = &p.password {
            let _ = writeln!(y, "    password: {}", quote(pw));
        }
        let _ = writeln!(y, "    hold_time: {}", p.hold_time);
        if let Some(k) = p.keepalive {
            let _ = writeln!(y, "    keepalive: {k}");
        }
        let _ = writeln!(y, "    connect_retry: {}", p.connect_retry.as_secs());
        let _ = writeln!(y, "    ttl_security: {}", p.ttl_security);
        if let Some(m) = p.max_prefix {
            let _ = writeln!(y, "    max_prefix: {m}");
            let action = match p.max_prefix_action {
                MaxPrefixAction::Stop => "stop",
                MaxPrefixAction::Warn => "warn",
            };
            let _ = writeln!(y, "    max_prefix_action: {action}");
        }
        let _ = writeln!(y, "    import_all: {}", p.import_all);
        if let Some(s) = p.source_address {
            let _ = writeln!(y, "    source_address: \"{s}\"");
        }
        let _ = writeln!(y, "    graceful_restart: {}", p.graceful_restart);
        if p.graceful_restart {
            let _ = writeln!(y, "    restart_time: {}", p.restart_time);
        }
        match p.next_hop {
            NextHop::Default => {}
            NextHop::SelfAddress => {
                let _ = writeln!(y, "    next_hop_self: true");
            }
            NextHop::Keep => {
                let _ = writeln!(y, "    keep_next_hop: true");
            }
        }
    }
    y
}

/// A YAML double-quoted string (JSON escaping is valid YAML).
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}
