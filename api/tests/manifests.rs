//! The manifests in `tests/manifests/` (written from Calico's documented examples) must parse,
//! validate and survive JSON and YAML round trips; each invalid variant must be rejected with
//! the path of the field at fault.

use std::fs;
use std::path::Path;

use api::{
    IPPool, Kind, ParseError, Resource, parse_documents, to_yaml, to_yaml_documents, validate_pools,
};

fn manifests() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests");
    let mut files: Vec<(String, String)> = fs::read_dir(&dir)
        .expect("tests/manifests exists")
        .map(|e| {
            let path = e.expect("readable directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = fs::read_to_string(&path).expect("readable manifest");
            (name, text)
        })
        .collect();
    files.sort();
    files
}

fn pools(resources: &[Resource]) -> Vec<IPPool> {
    resources
        .iter()
        .filter_map(|r| match r {
            Resource::IPPool(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

/// What each manifest holds, in order.
const EXPECTED: &[(&str, &[Kind])] = &[
    ("bgpconfiguration-node.yaml", &[Kind::BGPConfiguration]),
    ("bgpconfiguration.yaml", &[Kind::BGPConfiguration]),
    ("bgppeer-global.yaml", &[Kind::BGPPeer]),
    ("bgppeer-keep-next-hop.yaml", &[Kind::BGPPeer]),
    ("bgppeer-node.yaml", &[Kind::BGPPeer]),
    ("bgppeer-password.yaml", &[Kind::BGPPeer]),
    ("bgppeer-selector.yaml", &[Kind::BGPPeer, Kind::BGPPeer]),
    ("felixconfiguration-node.yaml", &[Kind::FelixConfiguration]),
    ("felixconfiguration.yaml", &[Kind::FelixConfiguration]),
    ("ipamconfig.yaml", &[Kind::IPAMConfig]),
    ("ippool-ipip-always.yaml", &[Kind::IPPool]),
    ("ippool-ipip-crosssubnet.yaml", &[Kind::IPPool]),
    ("ippool-ipv6.yaml", &[Kind::IPPool]),
    ("ippool-never.yaml", &[Kind::IPPool]),
    ("ippool-vxlan-always.yaml", &[Kind::IPPool]),
    ("ippool-vxlan-crosssubnet.yaml", &[Kind::IPPool]),
    ("ippoollist.yaml", &[Kind::IPPool, Kind::IPPool]),
    (
        "list.yaml",
        &[Kind::IPPool, Kind::BGPPeer, Kind::ClusterInformation],
    ),
    (
        "multi-doc.yaml",
        &[
            Kind::IPPool,
            Kind::IPPool,
            Kind::BGPConfiguration,
            Kind::BGPPeer,
        ],
    ),
    ("node.yaml", &[Kind::Node]),
    ("resources.json", &[Kind::IPPool, Kind::BGPPeer]),
];

#[test]
fn every_manifest_is_listed() {
    let names: Vec<String> = manifests().into_iter().map(|(n, _)| n).collect();
    let expected: Vec<&str> = EXPECTED.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, expected);
}

#[test]
fn manifests_parse_and_validate() {
    for (name, text) in manifests() {
        let resources = parse_documents(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let kinds: Vec<Kind> = resources.iter().map(Resource::kind).collect();
        let want = EXPECTED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| k.to_vec());
        assert_eq!(Some(kinds), want, "{name}");
        for r in &resources {
            r.validate()
                .unwrap_or_else(|e| panic!("{name}: {} {}: {e}", r.kind(), r.name()));
        }
        validate_pools(&pools(&resources)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn manifests_round_trip_through_json() {
    for (name, text) in manifests() {
        for r in parse_documents(&text).unwrap() {
            let value = serde_json::to_value(&r).unwrap();
            let back = Resource::from_json_value(value.clone())
                .unwrap_or_else(|e| panic!("{name}: {e}: {value}"));
            assert_eq!(back, r, "{name}");
            let json = serde_json::to_string_pretty(&r).unwrap();
            assert_eq!(
                parse_documents(&json).unwrap(),
                vec![r.clone()],
                "{name}: {json}"
            );
        }
    }
}

#[test]
fn manifests_round_trip_through_yaml() {
    for (name, text) in manifests() {
        let resources = parse_documents(&text).unwrap();
        for r in &resources {
            let yaml = to_yaml(r);
            assert_eq!(
                parse_documents(&yaml).unwrap(),
                vec![r.clone()],
                "{name}:\n{yaml}"
            );
        }
        let all = to_yaml_documents(&resources);
        assert_eq!(parse_documents(&all).unwrap(), resources, "{name}:\n{all}");
    }
}

#[test]
fn documented_values_land_in_fields() {
    let text = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests/bgppeer-node.yaml"),
    )
    .unwrap();
    let Resource::BGPPeer(peer) = &parse_documents(&text).unwrap()[0] else {
        panic!()
    };
    assert_eq!(peer.spec.as_number, Some(64513), "asNumber as a string");
    assert_eq!(peer.spec.peer_ip.as_deref(), Some("192.0.2.254:1179"));
    assert_eq!(api::parse_duration("2m30s").unwrap().as_secs(), 150);
}

// ---- invalid variants ---------------------------------------------------------------------

fn doc(kind: &str, name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

fn pool(spec: &str) -> String {
    doc("IPPool", "pool", spec)
}

fn peer(spec: &str) -> String {
    doc("BGPPeer", "peer", spec)
}

fn bgpconfig(name: &str, spec: &str) -> String {
    doc("BGPConfiguration", name, spec)
}

fn node(spec: &str) -> String {
    doc("Node", "node-1", spec)
}

fn felix(name: &str, spec: &str) -> String {
    doc("FelixConfiguration", name, spec)
}

/// The field path of the first error reading or validating `text`, and the error's text.
fn first_error(text: &str) -> Option<(String, String)> {
    let resources = match parse_documents(text) {
        Ok(r) => r,
        Err(e @ ParseError::Document(_)) => {
            return Some((e.field().unwrap_or("").to_string(), e.to_string()));
        }
        Err(e) => return Some((String::new(), e.to_string())),
    };
    for r in &resources {
        if let Err(e) = r.validate() {
            return Some((e.field.clone(), e.to_string()));
        }
    }
    validate_pools(&pools(&resources))
        .err()
        .map(|e| (e.field.clone(), e.to_string()))
}

#[test]
fn invalid_variants_name_the_field() {
    let cases: Vec<(&str, String, &str)> = vec![
        // IPPool
        ("unmasked CIDR", pool("cidr: 198.18.0.1/16"), "spec.cidr"),
        ("missing CIDR", pool("natOutgoing: true"), "spec.cidr"),
        ("CIDR not parseable", pool("cidr: 198.18.0.0/33"), "spec.cidr"),
        ("link-local pool", pool("cidr: 169.254.0.0/24"), "spec.cidr"),
        (
            "overlapping pools",
            format!(
                "{}---\n{}",
                pool("cidr: 198.18.0.0/16"),
                doc("IPPool", "other", "cidr: 198.18.128.0/24")
            ),
            "spec.cidr",
        ),
        ("IPIP on IPv6", pool("cidr: 2001:db8::/64\nipipMode: CrossSubnet"), "spec.ipipMode"),
        ("IPIP and VXLAN", pool("cidr: 198.18.0.0/16\nipipMode: Always\nvxlanMode: CrossSubnet"), "spec.ipipMode"),
        ("unknown encap mode", pool("cidr: 198.18.0.0/16\nipipMode: Sometimes"), "spec.ipipMode"),
        ("blockSize 33", pool("cidr: 198.18.0.0/16\nblockSize: 33"), "spec.blockSize"),
        ("blockSize 19", pool("cidr: 198.18.0.0/16\nblockSize: 19"), "spec.blockSize"),
        ("IPv6 blockSize 115", pool("cidr: 2001:db8::/64\nblockSize: 115"), "spec.blockSize"),
        ("IPv6 blockSize 129", pool("cidr: 2001:db8::/64\nblockSize: 129"), "spec.blockSize"),
        ("block larger than pool", pool("cidr: 198.18.0.0/26\nblockSize: 24"), "spec.blockSize"),
        ("blockSize not a number", pool("cidr: 198.18.0.0/16\nblockSize: x"), "spec.blockSize"),
        ("bad nodeSelector", pool("cidr: 198.18.0.0/16\nnodeSelector: zone == a"), "spec.nodeSelector"),
        ("bad namespaceSelector", pool("cidr: 198.18.0.0/16\nnamespaceSelector: has(x"), "spec.namespaceSelector"),
        ("LoadBalancer with Workload", pool("cidr: 198.18.0.0/16\nallowedUses: [LoadBalancer, Workload]"), "spec.allowedUses"),
        ("unknown field", pool("cidr: 198.18.0.0/16\nipipmod: Always"), "spec.ipipmod"),
        // Names and envelope
        ("upper-case name", doc("IPPool", "Pool", "cidr: 198.18.0.0/16"), "metadata.name"),
        ("name with underscore", doc("IPPool", "my_pool", "cidr: 198.18.0.0/16"), "metadata.name"),
        ("empty name", doc("IPPool", "''", "cidr: 198.18.0.0/16"), "metadata.name"),
        (
            "namespace on a cluster resource",
            pool("cidr: 198.18.0.0/16").replace("  name: pool\n", "  name: pool\n  namespace: default\n"),
            "metadata.namespace",
        ),
        (
            "bad label",
            pool("cidr: 198.18.0.0/16").replace("  name: pool\n", "  name: pool\n  labels: {'a b': x}\n"),
            "metadata.labels",
        ),
        ("CRD apiVersion", pool("cidr: 198.18.0.0/16").replace("projectcalico.org/v3", "crd.projectcalico.org/v1"), "apiVersion"),
        ("unknown kind", doc("GlobalNetworkPolicy", "p", "selector: all()"), "kind"),
        ("metadata unknown field", pool("cidr: 198.18.0.0/16").replace("  name: pool\n", "  name: pool\n  nmae: x\n"), "metadata.nmae"),
        // BGPPeer
        ("ASN 0", peer("peerIP: 192.0.2.1\nasNumber: 0"), "spec.asNumber"),
        ("ASN above 32 bits", peer("peerIP: 192.0.2.1\nasNumber: 4294967296"), "spec.asNumber"),
        ("ASN not a number", peer("peerIP: 192.0.2.1\nasNumber: sixty"), "spec.asNumber"),
        ("local ASN 0", peer("peerIP: 192.0.2.1\nasNumber: 64512\nlocalASNumber: 0"), "spec.localASNumber"),
        ("peerIP not an IP", peer("peerIP: 192.0.2.300\nasNumber: 64512"), "spec.peerIP"),
        ("peerIP port 0", peer("peerIP: 192.0.2.1:0\nasNumber: 64512"), "spec.peerIP"),
        ("peerIP v6 without port", peer("peerIP: '[2001:db8::1]'\nasNumber: 64512"), "spec.peerIP"),
        ("peerIP v4 in brackets", peer("peerIP: '[192.0.2.1]:179'\nasNumber: 64512"), "spec.peerIP"),
        ("peerIP hostname", peer("peerIP: tor.example:179\nasNumber: 64512"), "spec.peerIP"),
        ("peerIP without AS", peer("peerIP: 192.0.2.1"), "spec.asNumber"),
        ("neither peerIP nor selector", peer("nodeSelector: all()"), "spec.peerIP"),
        ("peerIP with peerSelector", peer("peerIP: 192.0.2.1\npeerSelector: has(rr)"), "spec.peerIP"),
        ("asNumber with peerSelector", peer("asNumber: 64512\npeerSelector: has(rr)"), "spec.asNumber"),
        ("node with nodeSelector", peer("node: n1\nnodeSelector: all()\npeerSelector: has(rr)"), "spec.node"),
        ("bad node name", peer("node: N1\npeerSelector: has(rr)"), "spec.node"),
        ("bad peerSelector", peer("peerSelector: rr = 'true'"), "spec.peerSelector"),
        ("bad nodeSelector", peer("nodeSelector: \"a in {'x'\"\npeerSelector: has(rr)"), "spec.nodeSelector"),
        ("bad maxRestartTime", peer("peerIP: 192.0.2.1\nasNumber: 64512\nmaxRestartTime: '120'"), "spec.maxRestartTime"),
        (
            "password without secret name",
            peer("peerIP: 192.0.2.1\nasNumber: 64512\npassword:\n  secretKeyRef: {name: '', key: k}"),
            "spec.password.secretKeyRef.name",
        ),
        ("bad sourceAddress", peer("peerIP: 192.0.2.1\nasNumber: 64512\nsourceAddress: NodeIP"), "spec.sourceAddress"),
        // BGPConfiguration
        ("BGPConfiguration ASN 0", bgpconfig("default", "asNumber: 0"), "spec.asNumber"),
        ("BGPConfiguration bad name", bgpconfig("global", "logSeverityScreen: Info"), "metadata.name"),
        ("per-node asNumber", bgpconfig("node.n1", "asNumber: 64512"), "spec.asNumber"),
        ("per-node mesh", bgpconfig("node.n1", "nodeToNodeMeshEnabled: false"), "spec.nodeToNodeMeshEnabled"),
        ("bad mesh restart time", bgpconfig("default", "nodeMeshMaxRestartTime: 2 minutes"), "spec.nodeMeshMaxRestartTime"),
        ("bad service CIDR", bgpconfig("default", "serviceClusterIPs:\n- cidr: 10.96.0.0/40"), "spec.serviceClusterIPs[0].cidr"),
        ("bad community", bgpconfig("default", "communities:\n- {name: c, value: '70000:1'}"), "spec.communities[0].value"),
        (
            "unknown community in advertisement",
            bgpconfig("default", "prefixAdvertisements:\n- {cidr: 198.18.0.0/26, communities: [nope]}"),
            "spec.prefixAdvertisements[0].communities[0]",
        ),
        ("bad log level", bgpconfig("default", "logSeverityScreen: Loud"), "spec.logSeverityScreen"),
        ("listenPort too big", bgpconfig("default", "listenPort: 70000"), "spec.listenPort"),
        ("listenPort 0", bgpconfig("default", "listenPort: 0"), "spec.listenPort"),
        // Node
        ("node ipv4Address without prefix", node("bgp: {ipv4Address: 192.0.2.11}"), "spec.bgp.ipv4Address"),
        ("node ipv4Address IPv6", node("bgp: {ipv4Address: '2001:db8::1/64'}"), "spec.bgp.ipv4Address"),
        ("node ipv6Address IPv4", node("bgp: {ipv6Address: 192.0.2.11/24}"), "spec.bgp.ipv6Address"),
        ("node IPIP tunnel address", node("bgp: {ipv4Address: 192.0.2.11/24, ipv4IPIPTunnelAddr: 198.18.0.1/32}"), "spec.bgp.ipv4IPIPTunnelAddr"),
        ("node ASN 0", node("bgp: {ipv4Address: 192.0.2.11/24, asNumber: 0}"), "spec.bgp.asNumber"),
        ("node RR cluster ID", node("bgp: {ipv4Address: 192.0.2.11/24, routeReflectorClusterID: rr1}"), "spec.bgp.routeReflectorClusterID"),
        ("node empty bgp", node("bgp: {}"), "spec.bgp"),
        ("node VXLAN tunnel address", node("ipv4VXLANTunnelAddr: 2001:db8::1"), "spec.ipv4VXLANTunnelAddr"),
        ("node VXLAN v6 tunnel address", node("ipv6VXLANTunnelAddr: 198.18.0.1"), "spec.ipv6VXLANTunnelAddr"),
        ("node VTEP MAC", node("vxlanTunnelMACAddr: 66:cf:23:df:22"), "spec.vxlanTunnelMACAddr"),
        ("node address", node("addresses:\n- address: not-an-ip"), "spec.addresses[0].address"),
        (
            "node address type",
            node("addresses:\n- {address: 192.0.2.1, type: PublicIP}"),
            "spec.addresses[0].type",
        ),
        // FelixConfiguration
        ("Felix bad name", felix("node-1", "logSeverityScreen: Info"), "metadata.name"),
        ("Felix bad duration", felix("default", "routeRefreshInterval: '90'"), "spec.routeRefreshInterval"),
        ("Felix negative duration", felix("default", "iptablesRefreshInterval: -10s"), "spec.iptablesRefreshInterval"),
        ("Felix VNI 0", felix("default", "vxlanVNI: 0"), "spec.vxlanVNI"),
        ("Felix VNI above 24 bits", felix("default", "vxlanVNI: 16777216"), "spec.vxlanVNI"),
        ("Felix port too big", felix("default", "vxlanPort: 70000"), "spec.vxlanPort"),
        ("Felix failsafe protocol", felix("default", "failsafeInboundHostPorts:\n- {protocol: ICMP, port: 0}"), "spec.failsafeInboundHostPorts[0].protocol"),
        ("Felix unknown field", felix("default", "ipipEnable: true"), "spec.ipipEnable"),
        ("Felix natOutgoingAddress", felix("default", "natOutgoingAddress: nat.example"), "spec.natOutgoingAddress"),
        ("Felix route table range", felix("default", "routeTableRange: {min: 250, max: 1}"), "spec.routeTableRange"),
        (
            "Felix conntrack timeout",
            felix("default", "bpfConntrackTimeouts: {tcpSynSent: soon}"),
            "spec.bpfConntrackTimeouts.tcpSynSent",
        ),
        ("Felix log level", felix("default", "logSeverityScreen: Chatty"), "spec.logSeverityScreen"),
        // Singletons and IPAM objects
        ("ClusterInformation name", doc("ClusterInformation", "cluster", "datastoreReady: true"), "metadata.name"),
        ("IPAMConfig name", doc("IPAMConfig", "ipam", "strictAffinity: true"), "metadata.name"),
        ("IPAMConfig negative max blocks", doc("IPAMConfig", "default", "maxBlocksPerHost: -1"), "spec.maxBlocksPerHost"),
        ("IPAMBlock name", doc("IPAMBlock", "block", "cidr: 198.18.0.64/26"), "metadata.name"),
        ("IPAMBlock unmasked", doc("IPAMBlock", "198-18-0-65-26", "cidr: 198.18.0.65/26"), "spec.cidr"),
        ("IPAMBlock affinity", doc("IPAMBlock", "198-18-0-64-26", "cidr: 198.18.0.64/26\naffinity: n1"), "spec.affinity"),
        ("BlockAffinity name", doc("BlockAffinity", "n1", "state: confirmed\nnode: n1\ncidr: 198.18.0.64/26"), "metadata.name"),
        ("IPAMHandle name", doc("IPAMHandle", "h", "handleID: k8s-pod-network.abc"), "metadata.name"),
        // WorkloadEndpoint
        ("WorkloadEndpoint without namespace", doc("WorkloadEndpoint", "n1-k8s-pod-eth0", "node: n1"), "metadata.namespace"),
        (
            "WorkloadEndpoint bad ipNetworks",
            doc("WorkloadEndpoint", "n1-k8s-pod-eth0", "ipNetworks: [198.18.0.5]")
                .replace("  name: n1", "  namespace: default\n  name: n1"),
            "spec.ipNetworks[0]",
        ),
        (
            "WorkloadEndpoint bad MAC",
            doc("WorkloadEndpoint", "n1-k8s-pod-eth0", "mac: ee-ee")
                .replace("  name: n1", "  namespace: default\n  name: n1"),
            "spec.mac",
        ),
        // Lists
        (
            "typed list with another kind",
            "apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- {apiVersion: projectcalico.org/v3, kind: BGPPeer, metadata: {name: p}}\n".to_string(),
            "kind",
        ),
        (
            "list item with bad field",
            "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: p}, spec: {cidr: 198.18.0.0/16, natOutgoing: maybe}}\n".to_string(),
            "spec.natOutgoing",
        ),
        (
            "JSON with a bad field",
            r#"{"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "p"}, "spec": {"cidr": 5}}"#.to_string(),
            "spec.cidr",
        ),
    ];
    let mut failures = Vec::new();
    for (what, text, field) in &cases {
        match first_error(text) {
            Some((got, _)) if got == *field => {}
            Some((got, msg)) => {
                failures.push(format!("{what}: field {got:?}, want {field:?} ({msg})"))
            }
            None => failures.push(format!("{what}: accepted\n{text}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn error_messages_read_well() {
    let text = format!(
        "{}---\n{}",
        pool("cidr: 198.18.0.0/16"),
        doc("IPPool", "pool-a", "cidr: 198.19.0.0/16\nblockSize: x")
    );
    assert_eq!(
        first_error(&text).unwrap().1,
        "document 2 (IPPool pool-a): spec.blockSize: invalid type: string \"x\", expected u8"
    );
    assert_eq!(
        first_error(&pool("cidr: 198.18.0.0/16\nblockSize: 33"))
            .unwrap()
            .1,
        "spec.blockSize: 33 is outside 20..32 for IPv4"
    );
    let (_, msg) = first_error(&pool("cidr: 198.18.0.0/16\nipipmod: Always")).unwrap();
    assert!(
        msg.starts_with("document 1 (IPPool pool): spec.ipipmod: unknown field `ipipmod`, expected one of `cidr`"),
        "{msg}"
    );
}
