//! Which pools one request may use (Calico `determinePools` in `libcalico-go/lib/ipam`).

use std::collections::BTreeMap;

use api::ippool::AssignmentMode;
use api::{AllowedUse, IPPool, Selector};
use ipnet::IpNet;

use crate::error::IpamError;
use crate::family::Family;

/// The pools a request for `family` addresses from `node` may draw from, in the order to try.
///
/// - With `requested` empty: every pool of the family that is enabled, allows `use_`, is in
///   Automatic assignment mode and whose nodeSelector matches the node's labels. A pool whose
///   selector does not parse is skipped (and logged), never used.
/// - With `requested` (pool names or CIDRs, as the CNI plugin's `ipv4_pools` / `ipv6_pools`
///   give them): exactly those, in that order; each must exist, be of the family, be enabled,
///   allow `use_` and select the node, or the request fails saying which and why. Manual pools
///   are only ever used this way.
pub fn select_pools<'a>(
    pools: &'a [IPPool],
    node: &str,
    labels: &BTreeMap<String, String>,
    family: Family,
    requested: &[String],
    use_: AllowedUse,
) -> Result<Vec<&'a IPPool>, IpamError> {
    let of_family = |p: &&IPPool| p.spec.cidr.is_some_and(|c| Family::of_net(&c) == family);
    if requested.is_empty() {
        let chosen: Vec<&IPPool> = pools
            .iter()
            .filter(of_family)
            .filter(|p| {
                !p.spec.disabled
                    && p.spec.allows(use_)
                    && p.spec.assignment_mode.unwrap_or_default() == AssignmentMode::Automatic
            })
            .filter(|p| match Selector::parse(p.spec.node_selector()) {
                Ok(sel) => sel.matches(labels),
                Err(e) => {
                    tracing::warn!(pool = %p.metadata.name, error = %e, "skipping pool with an invalid nodeSelector");
                    false
                }
            })
            .collect();
        if chosen.is_empty() {
            return Err(IpamError::NoPools {
                node: node.to_string(),
                family,
                use_,
            });
        }
        return Ok(chosen);
    }
    let mut chosen = Vec::new();
    for want in requested {
        let want_net = want.parse::<IpNet>().ok().map(|n| n.trunc());
        let pool = pools
            .iter()
            .find(|p| {
                p.metadata.name == *want
                    || (want_net.is_some() && p.spec.cidr.map(|c| c.trunc()) == want_net)
            })
            .ok_or_else(|| IpamError::PoolNotFound {
                requested: want.clone(),
            })?;
        let unusable = |reason: String| IpamError::PoolUnusable {
            pool: pool.metadata.name.clone(),
            node: node.to_string(),
            reason,
        };
        if !of_family(&pool) {
            return Err(unusable(format!("it is not an {family} pool")));
        }
        if pool.spec.disabled {
            return Err(unusable("it is disabled".to_string()));
        }
        if !pool.spec.allows(use_) {
            return Err(unusable(format!("its allowedUses exclude {use_:?}")));
        }
        let selector = Selector::parse(pool.spec.node_selector())
            .map_err(|e| unusable(format!("its nodeSelector is invalid: {e}")))?;
        if !selector.matches(labels) {
            return Err(unusable(format!(
                "its nodeSelector {:?} does not select the node",
                pool.spec.node_selector()
            )));
        }
        if !chosen.iter().any(|p: &&IPPool| std::ptr::eq(*p, pool)) {
            chosen.push(pool);
        }
    }
    Ok(chosen)
}

/// The pool (of any state) whose CIDR contains `net`, if any.
pub fn pool_containing<'a>(pools: &'a [IPPool], net: &IpNet) -> Option<&'a IPPool> {
    pools
        .iter()
        .find(|p| p.spec.cidr.is_some_and(|c| c.contains(net)))
}

#[cfg(test)]
mod tests {
    use api::IPPoolSpec;

    use super::*;

    fn pool(name: &str, cidr: &str, f: impl FnOnce(&mut IPPoolSpec)) -> IPPool {
        let mut spec = IPPoolSpec {
            cidr: Some(cidr.parse().unwrap()),
            ..IPPoolSpec::default()
        };
        f(&mut spec);
        IPPool::new(name, spec)
    }

    fn names(v: &[&IPPool]) -> Vec<String> {
        v.iter().map(|p| p.metadata.name.clone()).collect()
    }

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn fixture() -> Vec<IPPool> {
        vec![
            pool("plain", "198.18.0.0/24", |_| {}),
            pool("v6", "2001:db8::/64", |_| {}),
            pool("off", "198.18.1.0/24", |s| s.disabled = true),
            pool("rack-a", "198.18.2.0/24", |s| {
                s.node_selector = Some("rack == 'a'".into())
            }),
            pool("tunnels", "198.18.3.0/24", |s| {
                s.allowed_uses = Some(vec![AllowedUse::Tunnel])
            }),
            pool("manual", "198.18.4.0/24", |s| {
                s.assignment_mode = Some(AssignmentMode::Manual)
            }),
            pool("broken", "198.18.5.0/24", |s| {
                s.node_selector = Some("((".into())
            }),
        ]
    }

    #[test]
    fn automatic_choice_filters_every_rule() {
        let pools = fixture();
        let got = select_pools(
            &pools,
            "n1",
            &labels(&[]),
            Family::V4,
            &[],
            AllowedUse::Workload,
        )
        .unwrap();
        assert_eq!(names(&got), ["plain"]);
        let got = select_pools(
            &pools,
            "n1",
            &labels(&[("rack", "a")]),
            Family::V4,
            &[],
            AllowedUse::Tunnel,
        )
        .unwrap();
        assert_eq!(names(&got), ["plain", "rack-a", "tunnels"]);
        let got = select_pools(
            &pools,
            "n1",
            &labels(&[]),
            Family::V6,
            &[],
            AllowedUse::Workload,
        )
        .unwrap();
        assert_eq!(names(&got), ["v6"]);
    }

    #[test]
    fn no_usable_pool_is_an_error() {
        let pools = vec![pool("off", "198.18.1.0/24", |s| s.disabled = true)];
        let err = select_pools(
            &pools,
            "n1",
            &labels(&[]),
            Family::V4,
            &[],
            AllowedUse::Workload,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no enabled IPv4 pool allows Workload addresses for node n1"
        );
    }

    #[test]
    fn explicit_choice_by_name_or_cidr() {
        let pools = fixture();
        let req = vec!["manual".to_string(), "198.18.0.0/24".to_string()];
        let got = select_pools(
            &pools,
            "n1",
            &labels(&[]),
            Family::V4,
            &req,
            AllowedUse::Workload,
        )
        .unwrap();
        assert_eq!(names(&got), ["manual", "plain"]);
    }

    #[test]
    fn explicit_choice_says_why_a_pool_is_refused() {
        let pools = fixture();
        let cases = [
            ("off", "it is disabled"),
            ("rack-a", "does not select the node"),
            ("tunnels", "exclude Workload"),
            ("v6", "not an IPv4 pool"),
            ("broken", "nodeSelector is invalid"),
        ];
        for (name, why) in cases {
            let err = select_pools(
                &pools,
                "n1",
                &labels(&[]),
                Family::V4,
                &[name.to_string()],
                AllowedUse::Workload,
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(why), "{name}: {err}");
            assert!(err.contains(name), "{name}: {err}");
        }
        let err = select_pools(
            &pools,
            "n1",
            &labels(&[]),
            Family::V4,
            &["10.0.0.0/8".to_string()],
            AllowedUse::Workload,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "requested pool 10.0.0.0/8 does not exist");
    }
}
