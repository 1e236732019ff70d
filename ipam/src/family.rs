//! Address families and the integer arithmetic on addresses that block and candidate maths use.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// IPv4 or IPv6. Requests, pools and blocks are always of exactly one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of_net(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub fn of_addr(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Address width in bits: 32 or 128.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The address as an unsigned integer (IPv4 in the low 32 bits).
pub(crate) fn addr_to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `family` whose integer value is `value` (truncated to the family's width).
pub(crate) fn u128_to_addr(family: Family, value: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// The `prefix`-long network containing `addr`.
pub(crate) fn containing_net(addr: IpAddr, prefix: u8) -> Option<IpNet> {
    IpNet::new(addr, prefix).ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_round_trip_both_families() {
        for s in [
            "198.18.0.65",
            "0.0.0.0",
            "255.255.255.255",
            "2001:db8::1",
            "::",
        ] {
            let a: IpAddr = s.parse().unwrap();
            assert_eq!(u128_to_addr(Family::of_addr(&a), addr_to_u128(a)), a);
        }
    }

    #[test]
    fn containing_net_truncates() {
        let a: IpAddr = "198.18.0.77".parse().unwrap();
        assert_eq!(
            containing_net(a, 26).unwrap(),
            "198.18.0.64/26".parse::<IpNet>().unwrap()
        );
        assert!(containing_net(a, 33).is_none());
    }
}
