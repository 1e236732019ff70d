//! Defaults Calico writes into a resource when it is created or replaced, so that what is
//! stored says what is in force.

use ipnet::IpNet;

use crate::ippool::{AllowedUse, DEFAULT_BLOCK_SIZE_V4, DEFAULT_BLOCK_SIZE_V6, EncapMode};
use crate::{IPPoolSpec, Resource};

/// Fills in the defaults Calico's API server writes on create and update. Only IPPool has any:
/// blockSize 26 (IPv4) / 122 (IPv6), nodeSelector `all()`, ipipMode and vxlanMode `Never`,
/// allowedUses `[Workload, Tunnel]` (Calico `ippool.go` defaulting). BGPConfiguration's
/// defaults (ASN 64512, mesh on, port 179) are applied when read, never written, so that a later
/// change of default reaches clusters that never set them; FelixConfiguration has none.
pub fn apply_defaults(resource: &mut Resource) {
    if let Resource::IPPool(pool) = resource {
        default_ippool(&mut pool.spec);
    }
}

fn default_ippool(spec: &mut IPPoolSpec) {
    if spec.block_size.is_none() {
        spec.block_size = match spec.cidr {
            Some(IpNet::V4(_)) => Some(DEFAULT_BLOCK_SIZE_V4),
            Some(IpNet::V6(_)) => Some(DEFAULT_BLOCK_SIZE_V6),
            None => None,
        };
    }
    if spec
        .node_selector
        .as_deref()
        .is_none_or(|s| s.trim().is_empty())
    {
        spec.node_selector = Some("all()".to_string());
    }
    spec.ipip_mode.get_or_insert(EncapMode::Never);
    spec.vxlan_mode.get_or_insert(EncapMode::Never);
    if spec.allowed_uses.as_ref().is_none_or(Vec::is_empty) {
        spec.allowed_uses = Some(vec![AllowedUse::Workload, AllowedUse::Tunnel]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BGPConfiguration, BGPConfigurationSpec, IPPool, Object};

    fn pool(cidr: &str) -> Resource {
        let spec = IPPoolSpec {
            cidr: Some(cidr.parse().unwrap()),
            ..Default::default()
        };
        Resource::IPPool(Object::new("p", spec))
    }

    #[test]
    fn ippool_v4_and_v6() {
        for (cidr, block) in [("198.18.0.0/16", 26), ("2001:db8::/64", 122)] {
            let mut r = pool(cidr);
            apply_defaults(&mut r);
            let Resource::IPPool(IPPool { spec, .. }) = &r else {
                unreachable!()
            };
            assert_eq!(spec.block_size, Some(block));
            assert_eq!(spec.node_selector.as_deref(), Some("all()"));
            assert_eq!(spec.ipip_mode, Some(EncapMode::Never));
            assert_eq!(spec.vxlan_mode, Some(EncapMode::Never));
            assert_eq!(
                spec.allowed_uses,
                Some(vec![AllowedUse::Workload, AllowedUse::Tunnel])
            );
            assert_eq!(r.validate(), Ok(()));
        }
    }

    #[test]
    fn keeps_what_is_set() {
        let mut r = pool("198.18.0.0/16");
        if let Resource::IPPool(p) = &mut r {
            p.spec.block_size = Some(24);
            p.spec.ipip_mode = Some(EncapMode::CrossSubnet);
            p.spec.node_selector = Some("zone == 'a'".into());
        }
        apply_defaults(&mut r);
        let Resource::IPPool(p) = &r else {
            unreachable!()
        };
        assert_eq!(p.spec.block_size, Some(24));
        assert_eq!(p.spec.ipip_mode, Some(EncapMode::CrossSubnet));
        assert_eq!(p.spec.node_selector.as_deref(), Some("zone == 'a'"));
    }

    #[test]
    fn bgp_configuration_untouched() {
        let mut r = Resource::BGPConfiguration(BGPConfiguration::new(
            "default",
            BGPConfigurationSpec::default(),
        ));
        let before = r.clone();
        apply_defaults(&mut r);
        assert_eq!(r, before);
    }
}
