//! Resource builders for the tests: a small cluster on the documentation ranges.

use api::bgp::{BGPPassword, SecretKeyRef, ServiceCidr};
use api::{
    AffinityState, BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec, BlockAffinity,
    BlockAffinitySpec, EncapMode, IPPool, IPPoolSpec, Node, NodeBgpSpec, NodeSpec,
};

use crate::render::Resources;

pub fn node(name: &str, ip: &str) -> Node {
    Node::new(
        name,
        NodeSpec {
            bgp: Some(NodeBgpSpec {
                ipv4_address: Some(format!("{ip}/24")),
                ..NodeBgpSpec::default()
            }),
            ..NodeSpec::default()
        },
    )
}

pub fn labelled(mut n: Node, labels: &[(&str, &str)]) -> Node {
    for (k, v) in labels {
        n.metadata.labels.insert(k.to_string(), v.to_string());
    }
    n
}

pub fn with_asn(mut n: Node, asn: u32) -> Node {
    n.spec.bgp.as_mut().expect("bgp").as_number = Some(asn);
    n
}

pub fn route_reflector(mut n: Node, cluster_id: &str) -> Node {
    n.spec.bgp.as_mut().expect("bgp").route_reflector_cluster_id = Some(cluster_id.into());
    labelled(n, &[("route-reflector", "true")])
}

pub fn pool(name: &str, cidr: &str) -> IPPool {
    IPPool::new(
        name,
        IPPoolSpec {
            cidr: Some(cidr.parse().expect("cidr")),
            ipip_mode: Some(EncapMode::Never),
            vxlan_mode: Some(EncapMode::Never),
            ..IPPoolSpec::default()
        },
    )
}

pub fn affinity(node: &str, cidr: &str) -> BlockAffinity {
    let net = cidr.parse().expect("cidr");
    BlockAffinity::new(
        api::ipam::affinity_name(node, &net),
        BlockAffinitySpec {
            state: AffinityState::Confirmed,
            node: node.into(),
            cidr: Some(net),
            ..BlockAffinitySpec::default()
        },
    )
}

pub fn bgp_config(spec: BGPConfigurationSpec) -> BGPConfiguration {
    BGPConfiguration::new("default", spec)
}

pub fn mesh_off() -> BGPConfiguration {
    bgp_config(BGPConfigurationSpec {
        node_to_node_mesh_enabled: Some(false),
        ..BGPConfigurationSpec::default()
    })
}

pub fn peer(name: &str, spec: BGPPeerSpec) -> BGPPeer {
    BGPPeer::new(name, spec)
}

pub fn password(secret: &str, key: &str) -> Option<BGPPassword> {
    Some(BGPPassword {
        secret_key_ref: Some(SecretKeyRef {
            name: secret.into(),
            key: key.into(),
            optional: None,
        }),
    })
}

pub fn cidrs(list: &[&str]) -> Vec<ServiceCidr> {
    list.iter()
        .map(|c| ServiceCidr {
            cidr: c.to_string(),
        })
        .collect()
}

pub fn secret(res: &mut Resources, name: &str, key: &str, value: &str) {
    res.secrets
        .entry(name.into())
        .or_default()
        .insert(key.into(), value.into());
}

/// Three nodes n1..n3 on 192.0.2.0/24, pool 198.18.0.0/16, one block each.
pub fn three_nodes() -> Resources {
    Resources {
        pools: vec![pool("default-ipv4-ippool", "198.18.0.0/16")],
        nodes: vec![
            node("n1", "192.0.2.11"),
            node("n2", "192.0.2.12"),
            node("n3", "192.0.2.13"),
        ],
        affinities: vec![
            affinity("n1", "198.18.0.0/26"),
            affinity("n2", "198.18.0.64/26"),
            affinity("n3", "198.18.0.128/26"),
        ],
        ..Resources::default()
    }
}

/// Mesh off, two route reflectors (rr1, rr2, cluster id 192.0.2.200) and three clients, all
/// peering with the reflectors through one BGPPeer with a peerSelector.
pub fn route_reflectors() -> Resources {
    let mut res = three_nodes();
    res.nodes
        .push(route_reflector(node("rr1", "192.0.2.21"), "192.0.2.200"));
    res.nodes
        .push(route_reflector(node("rr2", "192.0.2.22"), "192.0.2.200"));
    res.bgp_configurations.push(mesh_off());
    res.bgp_peers.push(peer(
        "peer-with-route-reflectors",
        BGPPeerSpec {
            node_selector: Some("all()".into()),
            peer_selector: Some("route-reflector == 'true'".into()),
            ..BGPPeerSpec::default()
        },
    ));
    res
}

/// The topologies every renderer is snapshot-tested on: (name, resources, node to render).
pub fn topologies() -> Vec<(&'static str, Resources, &'static str)> {
    use api::BGPPeerSpec;
    use api::bgp::BGPConfigurationSpec;

    let mut out = vec![("full_mesh", three_nodes(), "n1")];
    out.push(("route_reflectors_client", route_reflectors(), "n1"));
    out.push(("route_reflectors_rr", route_reflectors(), "rr1"));

    let mut res = three_nodes();
    res.bgp_peers.push(peer(
        "tor",
        BGPPeerSpec {
            peer_ip: Some("192.0.2.1:1179".into()),
            as_number: Some(64512),
            password: password("bgp-passwords", "tor"),
            ..BGPPeerSpec::default()
        },
    ));
    secret(&mut res, "bgp-passwords", "tor", "s3cret");
    out.push(("global_peer_port_password", res, "n1"));

    let mut res = three_nodes();
    res.bgp_peers.push(peer(
        "n1-tor",
        BGPPeerSpec {
            node: Some("n1".into()),
            peer_ip: Some("192.0.2.1".into()),
            as_number: Some(65001),
            ..BGPPeerSpec::default()
        },
    ));
    out.push(("per_node_peer", res, "n1"));

    let mut res = three_nodes();
    res.nodes[0] = labelled(res.nodes[0].clone(), &[("rack", "a")]);
    res.bgp_peers.push(peer(
        "rack-a-tor",
        BGPPeerSpec {
            node_selector: Some("rack == 'a'".into()),
            peer_ip: Some("198.51.100.1".into()),
            as_number: Some(65010),
            ..BGPPeerSpec::default()
        },
    ));
    out.push(("node_selector_peer", res, "n1"));

    let mut res = three_nodes();
    res.nodes[1] = with_asn(res.nodes[1].clone(), 65002);
    out.push(("per_node_asn", res, "n2"));

    let mut res = three_nodes();
    res.bgp_configurations
        .push(bgp_config(BGPConfigurationSpec {
            node_mesh_max_restart_time: Some("90s".into()),
            listen_port: Some(1179),
            ..BGPConfigurationSpec::default()
        }));
    res.bgp_peers.push(peer(
        "tor",
        BGPPeerSpec {
            peer_ip: Some("192.0.2.1".into()),
            as_number: Some(65001),
            keep_original_next_hop: Some(true),
            max_restart_time: Some("5m".into()),
            ttl_security: Some(1),
            ..BGPPeerSpec::default()
        },
    ));
    res.bgp_peers.push(peer(
        "tor-v6",
        BGPPeerSpec {
            peer_ip: Some("[2001:db8::1]:179".into()),
            as_number: Some(65001),
            next_hop_mode: Some("Self".into()),
            source_address: Some("None".into()),
            ..BGPPeerSpec::default()
        },
    ));
    out.push(("mixed_mesh_and_tor", res, "n2"));

    let mut res = three_nodes();
    let mut disabled = pool("disabled", "198.19.0.0/24");
    disabled.spec.disabled = true;
    let mut no_export = pool("no-export", "198.19.1.0/24");
    no_export.spec.disable_bgp_export = true;
    let mut vxlan = pool("vxlan", "198.19.2.0/24");
    vxlan.spec.vxlan_mode = Some(api::EncapMode::Always);
    res.pools.extend([disabled, no_export, vxlan]);
    res.affinities.push(affinity("n1", "198.19.0.0/26"));
    res.affinities.push(affinity("n1", "198.19.1.0/26"));
    res.affinities.push(affinity("n1", "198.19.2.0/26"));
    out.push(("disabled_and_no_export_pools", res, "n1"));

    let mut res = three_nodes();
    res.bgp_configurations
        .push(bgp_config(BGPConfigurationSpec {
            service_cluster_ips: cidrs(&["10.96.0.0/12"]),
            service_external_ips: cidrs(&["203.0.113.0/25"]),
            service_load_balancer_ips: cidrs(&["203.0.113.128/25", "2001:db8:5::/112"]),
            ..BGPConfigurationSpec::default()
        }));
    out.push(("service_ranges", res, "n1"));
    out
}
