//! A line-oriented text form of felix's inputs, used by the replay tests and by the
//! `tabby-felix` binary (which the IPIP VM test runs inside its guest):
//!
//! ```text
//! pool|node|affinity|wep NAME JSON      resource update (Calico v3 spec shape, as JSON)
//! remove pool|node|affinity|wep NAME    resource deletion
//! config JSON                           FelixConfiguration spec
//! bgp PREFIX [NEXTHOP...]               best route from the speaker (none = withdrawn)
//! mtu IFACE N|gone                      host interface MTU
//! ```

use crate::calc::Input;

fn json<T: serde::de::DeserializeOwned>(line: &str, s: &str) -> Result<T, String> {
    serde_json::from_str(s).map_err(|e| format!("{line:?}: {e}"))
}

/// Parses one input line (see the module documentation).
pub fn parse_line(line: &str) -> Result<Input, String> {
    let mut it = line.trim().splitn(3, ' ');
    let verb = it.next().unwrap_or("");
    let a = it.next().unwrap_or("");
    let rest = it.next().unwrap_or("");
    Ok(match verb {
        "pool" => Input::PoolUpdate(a.into(), json(line, rest)?),
        "node" => Input::NodeUpdate(a.into(), json(line, rest)?),
        "affinity" => Input::AffinityUpdate(a.into(), json(line, rest)?),
        "wep" => Input::WorkloadUpdate(a.into(), json(line, rest)?),
        "config" => Input::Config(json(line, line.trim()["config".len()..].trim())?),
        "remove" => match a {
            "pool" => Input::PoolRemove(rest.into()),
            "node" => Input::NodeRemove(rest.into()),
            "affinity" => Input::AffinityRemove(rest.into()),
            "wep" => Input::WorkloadRemove(rest.into()),
            _ => return Err(format!("{line:?}: cannot remove {a:?}")),
        },
        "bgp" => Input::BgpRoute(
            a.parse().map_err(|e| format!("{line:?}: {e}"))?,
            rest.split_whitespace()
                .map(|h| h.parse().map_err(|e| format!("{line:?}: {e}")))
                .collect::<Result<_, _>>()?,
        ),
        "mtu" => Input::InterfaceMtu(a.into(), rest.trim().parse().ok()),
        _ => return Err(format!("unknown input line {line:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert!(matches!(
            parse_line(r#"pool p {"cidr":"198.18.0.0/16","ipipMode":"Always"}"#),
            Ok(Input::PoolUpdate(n, _)) if n == "p"
        ));
        assert_eq!(
            parse_line("remove node n2"),
            Ok(Input::NodeRemove("n2".into()))
        );
        assert_eq!(
            parse_line("mtu eth0 gone"),
            Ok(Input::InterfaceMtu("eth0".into(), None))
        );
        assert!(matches!(parse_line("config {}"), Ok(Input::Config(_))));
        assert!(parse_line("bgp 198.18.0.0/26 192.0.2.1").is_ok());
        assert!(parse_line("pool p {").is_err());
        assert!(parse_line("frobnicate").is_err());
    }
}
