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
