use std::fmt::Write;

use api::bgp::BGPConfigurationSpec;
use api::{BGPPeerSpec, FelixConfigurationSpec};

use super::*;
use crate::testutil::*;
use crate::yaml::speaker_yaml;

/// The rendered config as tabby-bgpd YAML, then where each peer came from, then warnings. Also
/// checks that the speaker's own validator accepts the YAML and reads back the same config.
fn describe(res: &Resources, node: &str) -> String {
    let p = plan(res, node).unwrap_or_else(|e| panic!("render {node}: {e}"));
    let yaml = speaker_yaml(&p.config);
    let back = Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(back, p.config, "YAML round trip");
    let mut out = format!("# node {node}\n{yaml}");
    for peer in &p.peers {
        let _ = writeln!(
            out,
            "# {} from {:?}{}{}",
            peer.config.address,
            peer.origin,
            peer.bgp_peer
                .as_deref()
                .map(|b| format!(" BGPPeer/{b}"))
                .unwrap_or_default(),
            peer.node
                .as_deref()
                .map(|n| format!(" node {n}"))
                .unwrap_or_default(),
        );
    }
    for w in &p.warnings {
        let _ = writeln!(out, "# warning: {w}");
    }
    out
}

#[test]
fn full_mesh_of_three_nodes() {
    let res = three_nodes();
    insta::assert_snapshot!(describe(&res, "n1"));
    // Every node sees the other two; the higher address string is passive on both sides.
    let n3 = render(&res, "n3").unwrap();
    assert_eq!(n3.peers.len(), 2);
    assert!(n3.peers.iter().all(|p| !p.passive));
}

#[test]
fn mesh_off_with_two_route_reflectors() {
    let res = route_reflectors();
    insta::assert_snapshot!("route_reflectors_client_n1", describe(&res, "n1"));
    insta::assert_snapshot!("route_reflectors_rr1", describe(&res, "rr1"));
}

#[test]
fn route_reflectors_with_mesh_on_stay_out_of_the_mesh() {
    let mut res = route_reflectors();
    res.bgp_configurations.clear();
    let n1 = plan(&res, "n1").unwrap();
    let got: Vec<(String, PeerOrigin)> = n1
        .peers
        .iter()
        .map(|p| (p.config.address.to_string(), p.origin))
        .collect();
    assert_eq!(
        got,
        vec![
            ("192.0.2.12".into(), PeerOrigin::Mesh),
            ("192.0.2.13".into(), PeerOrigin::Mesh),
            ("192.0.2.21".into(), PeerOrigin::Node),
            ("192.0.2.22".into(), PeerOrigin::Node),
        ]
    );
    let rr1 = plan(&res, "rr1").unwrap();
    assert!(rr1.peers.iter().all(|p| p.origin != PeerOrigin::Mesh));
    // The two reflectors share a cluster id: each other's non-clients; the others are clients.
    for p in &rr1.config.peers {
        assert_eq!(p.rr_client, p.address.to_string() != "192.0.2.22", "{p:?}");
    }
}

#[test]
fn global_peer_with_port_and_password() {
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
    secret(&mut res, "bgp-passwords", "tor", "s3cret \"quoted\"");
    insta::assert_snapshot!(describe(&res, "n1"));
}

#[test]
fn missing_password_secret_warns_and_peers_without() {
    let mut res = three_nodes();
    res.bgp_peers.push(peer(
        "tor",
        BGPPeerSpec {
            peer_ip: Some("192.0.2.1".into()),
            as_number: Some(65001),
            password: password("bgp-passwords", "tor"),
            ..BGPPeerSpec::default()
        },
    ));
    let p = plan(&res, "n1").unwrap();
    let tor = p.config.peers.iter().find(|p| p.asn == 65001).unwrap();
    assert_eq!(tor.password, None);
    assert_eq!(
        p.warnings[0].to_string(),
        "BGPPeer/tor: password secret bgp-passwords/tor not found: peering without a password"
    );
}

#[test]
fn per_node_peer() {
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
    insta::assert_snapshot!(describe(&res, "n1"));
    let n2 = render(&res, "n2").unwrap();
    assert!(n2.peers.iter().all(|p| p.asn == 64512), "{n2:?}");
}

#[test]
fn node_selector_peer() {
    let mut res = three_nodes();
    res.nodes[0] = labelled(res.nodes[0].clone(), &[("rack", "a")]);
    res.nodes[1] = labelled(res.nodes[1].clone(), &[("rack", "a")]);
    res.nodes[2] = labelled(res.nodes[2].clone(), &[("rack", "b")]);
    res.bgp_peers.push(peer(
        "rack-a-tor",
        BGPPeerSpec {
            node_selector: Some("rack == 'a'".into()),
            peer_ip: Some("198.51.100.1".into()),
            as_number: Some(65010),
            ..BGPPeerSpec::default()
        },
    ));
    insta::assert_snapshot!("node_selector_peer_n1", describe(&res, "n1"));
    insta::assert_snapshot!("node_selector_peer_n3", describe(&res, "n3"));
}

#[test]
fn per_node_asn() {
    let mut res = three_nodes();
    res.bgp_configurations
        .push(bgp_config(BGPConfigurationSpec {
            as_number: Some(64600),
            ..BGPConfigurationSpec::default()
        }));
    res.nodes[1] = with_asn(res.nodes[1].clone(), 65002);
    insta::assert_snapshot!("per_node_asn_n1", describe(&res, "n1"));
    insta::assert_snapshot!("per_node_asn_n2", describe(&res, "n2"));
}

#[test]
fn mixed_mesh_and_external_tor() {
    let mut res = three_nodes();
    res.bgp_configurations
        .push(bgp_config(BGPConfigurationSpec {
            node_mesh_max_restart_time: Some("90s".into()),
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
    insta::assert_snapshot!(describe(&res, "n2"));
}

#[test]
fn disabled_and_no_export_pools() {
    let mut res = three_nodes();
    let mut disabled = pool("disabled", "198.19.0.0/24");
    disabled.spec.disabled = true;
    let mut no_export = pool("no-export", "198.19.1.0/24");
    no_export.spec.disable_bgp_export = true;
    res.pools.push(disabled);
    res.pools.push(no_export);
    res.affinities.push(affinity("n1", "198.19.0.0/26"));
    res.affinities.push(affinity("n1", "198.19.1.0/26"));
    // Not in any pool: the pool was deleted.
    res.affinities.push(affinity("n1", "203.0.113.0/26"));
    let mut pending = affinity("n1", "198.18.1.0/26");
    pending.spec.state = AffinityState::Pending;
    res.affinities.push(pending);
    insta::assert_snapshot!(describe(&res, "n1"));
}

#[test]
fn service_ranges_are_originated() {
    let mut res = three_nodes();
    res.bgp_configurations
        .push(bgp_config(BGPConfigurationSpec {
            service_cluster_ips: cidrs(&["10.96.0.0/12"]),
            service_external_ips: cidrs(&["203.0.113.0/25", "not-a-cidr"]),
            service_load_balancer_ips: cidrs(&["203.0.113.128/25"]),
            ..BGPConfigurationSpec::default()
        }));
    insta::assert_snapshot!(describe(&res, "n1"));
    res.nodes[0] = labelled(res.nodes[0].clone(), &[(EXCLUDE_FROM_LB_LABEL, "true")]);
    let excluded = plan(&res, "n1").unwrap();
    assert!(excluded.service_ranges.is_empty());
    assert_eq!(excluded.config.originate, excluded.blocks);
}

#[test]
fn global_bgp_peer_beats_node_specific_to_the_same_address() {
    let mut res = three_nodes();
    res.bgp_peers.push(peer(
        "a-node-specific",
        BGPPeerSpec {
            node: Some("n1".into()),
            peer_ip: Some("192.0.2.1".into()),
            as_number: Some(65099),
            ..BGPPeerSpec::default()
        },
    ));
    res.bgp_peers.push(peer(
        "z-global",
        BGPPeerSpec {
            peer_ip: Some("192.0.2.1".into()),
            as_number: Some(65001),
            ..BGPPeerSpec::default()
        },
    ));
    let p = plan(&res, "n1").unwrap();
    let tor: Vec<_> = p
        .peers
        .iter()
        .filter(|p| p.config.address.to_string() == "192.0.2.1")
        .collect();
    assert_eq!(tor.len(), 1);
    assert_eq!(tor[0].bgp_peer.as_deref(), Some("z-global"));
    assert_eq!(tor[0].config.asn, 65001);
}

#[test]
fn explicit_peering_to_a_node_replaces_its_mesh_session() {
    let mut res = three_nodes();
    res.bgp_peers.push(peer(
        "n1-n2",
        BGPPeerSpec {
            node: Some("n1".into()),
            peer_selector: Some("kubernetes.io/hostname == 'n2'".into()),
            password: password("pw", "n1-n2"),
            ..BGPPeerSpec::default()
        },
    ));
    res.nodes[1] = labelled(res.nodes[1].clone(), &[("kubernetes.io/hostname", "n2")]);
    secret(&mut res, "pw", "n1-n2", "x");
    for (me, other) in [("n1", "192.0.2.12"), ("n2", "192.0.2.11")] {
        let p = plan(&res, me).unwrap();
        let to: Vec<_> = p
            .peers
            .iter()
            .filter(|p| p.config.address.to_string() == other)
            .collect();
        assert_eq!(to.len(), 1, "{me}");
        assert_ne!(to[0].origin, PeerOrigin::Mesh, "{me}");
        assert_eq!(to[0].config.password.as_deref(), Some("x"), "{me}");
    }
}

#[test]
fn never_a_peer_to_ourselves() {
    let mut res = three_nodes();
    res.bgp_peers.push(peer(
        "everyone",
        BGPPeerSpec {
            peer_selector: Some("all()".into()),
            ..BGPPeerSpec::default()
        },
    ));
    let c = render(&res, "n1").unwrap();
    assert!(
        c.peers
            .iter()
            .all(|p| p.address.to_string() != "192.0.2.11")
    );
    assert_eq!(c.peers.len(), 2);
}

#[test]
fn bad_peers_are_skipped_with_a_warning() {
    let mut res = three_nodes();
    res.bgp_peers.push(peer(
        "bad-ip",
        BGPPeerSpec {
            peer_ip: Some("not-an-ip".into()),
            as_number: Some(65001),
            ..BGPPeerSpec::default()
        },
    ));
    res.bgp_peers.push(peer(
        "bad-selector",
        BGPPeerSpec {
            peer_selector: Some("((".into()),
            ..BGPPeerSpec::default()
        },
    ));
    let p = plan(&res, "n1").unwrap();
    assert_eq!(p.config.peers.len(), 2);
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
}

#[test]
fn errors_name_the_node() {
    let mut res = three_nodes();
    assert_eq!(
        render(&res, "n9").unwrap_err(),
        RenderError::NodeNotFound("n9".into())
    );
    res.nodes[0].spec.bgp = None;
    assert_eq!(
        render(&res, "n1").unwrap_err().to_string(),
        "rendering BGP config for node n1: spec.bgp.ipv4Address is not set, so there is no \
         router id (the speaker needs an IPv4 address)"
    );
    // The others render without n1 in their mesh.
    assert_eq!(render(&res, "n2").unwrap().peers.len(), 1);
}

#[test]
fn listen_port_per_node_and_global() {
    let mut res = three_nodes();
    res.bgp_configurations
        .push(bgp_config(BGPConfigurationSpec {
            listen_port: Some(1179),
            ..BGPConfigurationSpec::default()
        }));
    res.bgp_configurations.push(api::BGPConfiguration::new(
        "node.n2",
        BGPConfigurationSpec {
            listen_port: Some(2179),
            ..BGPConfigurationSpec::default()
        },
    ));
    let n1 = render(&res, "n1").unwrap();
    assert_eq!(n1.listen[0].port(), 1179);
    let ports: Vec<u16> = n1.peers.iter().map(|p| p.port).collect();
    assert_eq!(ports, vec![2179, 1179]);
    assert_eq!(render(&res, "n2").unwrap().listen[0].port(), 2179);
}

#[test]
fn felix_config_node_fields_win() {
    let mut res = three_nodes();
    res.felix_configurations.push(api::FelixConfiguration::new(
        "default",
        FelixConfigurationSpec {
            vxlan_vni: Some(4096),
            ipip_mtu: Some(1440),
            ..FelixConfigurationSpec::default()
        },
    ));
    res.felix_configurations.push(api::FelixConfiguration::new(
        "node.n1",
        FelixConfigurationSpec {
            ipip_mtu: Some(1400),
            vxlan_port: Some(4790),
            ..FelixConfigurationSpec::default()
        },
    ));
    let n1 = felix_config(&res, "n1");
    assert_eq!(
        (n1.vxlan_vni, n1.ipip_mtu, n1.vxlan_port),
        (Some(4096), Some(1400), Some(4790))
    );
    let n2 = felix_config(&res, "n2");
    assert_eq!((n2.ipip_mtu, n2.vxlan_port), (Some(1440), None));
}

#[test]
fn every_topology_is_a_config_the_speaker_accepts() {
    for (name, res, node) in topologies() {
        let config = render(&res, node).unwrap_or_else(|e| panic!("{name}: {e}"));
        let yaml = speaker_yaml(&config);
        let back = Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
        assert_eq!(back, config, "{name}");
    }
}

#[test]
fn unusable_peer_addresses_are_skipped() {
    let mut res = three_nodes();
    res.bgp_peers.push(peer(
        "zero",
        BGPPeerSpec {
            peer_ip: Some("0.0.0.0".into()),
            as_number: Some(65001),
            ..BGPPeerSpec::default()
        },
    ));
    let p = plan(&res, "n1").unwrap();
    assert_eq!(p.config.peers.len(), 2);
    assert_eq!(
        p.warnings[0].to_string(),
        "BGPPeer/zero: 0.0.0.0 is not a unicast address: skipped"
    );
}
