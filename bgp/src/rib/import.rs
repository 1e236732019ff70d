//! [`ImportPolicy::check`] compiled to integer masks, because the RIB runs it once per
//! received prefix: same answers (a test checks them against the policy's own), a few
//! nanoseconds instead of `ipnet`'s general containment per pool and protected address.

use ipnet::IpNet;

use crate::packet::Prefix;
use crate::policy::ImportPolicy;

#[derive(Debug, Clone, Default)]
pub(crate) struct ImportCheck {
    pools4: Vec<(u32, u8)>,
    pools6: Vec<(u128, u8)>,
    protected4: Vec<u32>,
    protected6: Vec<u128>,
}

fn mask4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl ImportCheck {
    pub(crate) fn new(policy: &ImportPolicy) -> Self {
        let mut c = ImportCheck::default();
        for pool in &policy.pools {
            match pool {
                IpNet::V4(n) => c.pools4.push((u32::from(n.network()), n.prefix_len())),
                IpNet::V6(n) => c.pools6.push((u128::from(n.network()), n.prefix_len())),
            }
        }
        for a in &policy.protected {
            match a {
                std::net::IpAddr::V4(a) => c.protected4.push(u32::from(*a)),
                std::net::IpAddr::V6(a) => c.protected6.push(u128::from(*a)),
            }
        }
        c
    }

    /// Whether `prefix` is accepted (see [`ImportPolicy::check`]).
    pub(crate) fn accepts(&self, prefix: &Prefix, import_all: bool) -> bool {
        match prefix {
            Prefix::V4(p) => {
                let (addr, len) = (u32::from(p.addr()), p.prefix_len());
                len != 0
                    && !self.protected4.iter().any(|a| a & mask4(len) == addr)
                    && (import_all
                        || self
                            .pools4
                            .iter()
                            .any(|&(net, l)| l <= len && addr & mask4(l) == net))
            }
            Prefix::V6(p) => {
                let (addr, len) = (u128::from(p.addr()), p.prefix_len());
                len != 0
                    && !self.protected6.iter().any(|a| a & mask6(len) == addr)
                    && (import_all
                        || self
                            .pools6
                            .iter()
                            .any(|&(net, l)| l <= len && addr & mask6(l) == net))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rib::{from_ipnet, to_ipnet};

    #[test]
    fn same_answers_as_the_policy() {
        let policy = ImportPolicy {
            pools: vec![
                "198.18.0.0/15".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8:1::/48".parse().unwrap(),
            ],
            protected: vec![
                "192.0.2.1".parse().unwrap(),
                "198.18.7.9".parse().unwrap(),
                "2001:db8:ffff::1".parse().unwrap(),
            ],
        };
        let check = ImportCheck::new(&policy);
        let mut n = 0;
        for addr in [
            "0.0.0.0",
            "198.18.0.0",
            "198.18.7.9",
            "198.19.255.255",
            "198.16.0.0",
            "192.0.2.1",
            "10.1.2.3",
            "203.0.113.7",
        ] {
            for len in 0..=32u8 {
                let net: IpNet = format!("{addr}/{len}").parse::<IpNet>().unwrap().trunc();
                for all in [false, true] {
                    let want = policy.check(&net, all).is_ok();
                    let p = from_ipnet(&net);
                    assert_eq!(check.accepts(&p, all), want, "{net} import_all={all}");
                    assert_eq!(to_ipnet(&p), net);
                    n += 1;
                }
            }
        }
        for addr in ["::", "2001:db8:1::", "2001:db8:ffff::1", "2001:db8:2::"] {
            for len in (0..=128u8).step_by(4) {
                let net: IpNet = format!("{addr}/{len}").parse::<IpNet>().unwrap().trunc();
                for all in [false, true] {
                    let want = policy.check(&net, all).is_ok();
                    assert_eq!(check.accepts(&from_ipnet(&net), all), want, "{net} {all}");
                    n += 1;
                }
            }
        }
        assert!(n > 700);
    }
}
