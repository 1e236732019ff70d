//! Calico's Node as the core Kubernetes Node: the BGP and tunnel fields are `projectcalico.org/*`
//! annotations (libcalico-go `k8s/resources/node.go`), the labels are the Node's labels, and the
//! addresses come from those annotations and the Node's status.

use std::collections::BTreeMap;

use api::node::{NodeAddress, NodeWireguardSpec, OrchRef};
use api::{Node, NodeBgpSpec, NodeSpec, Resource};
use serde_json::{Value, json};

use super::mapping::{kept_metadata, string_map};
use crate::Error;

pub const IPV4_ADDRESS: &str = "projectcalico.org/IPv4Address";
pub const IPV6_ADDRESS: &str = "projectcalico.org/IPv6Address";
pub const AS_NUMBER: &str = "projectcalico.org/ASNumber";
pub const IPV4_IPIP_TUNNEL_ADDR: &str = "projectcalico.org/IPv4IPIPTunnelAddr";
pub const IPV4_VXLAN_TUNNEL_ADDR: &str = "projectcalico.org/IPv4VXLANTunnelAddr";
pub const IPV6_VXLAN_TUNNEL_ADDR: &str = "projectcalico.org/IPv6VXLANTunnelAddr";
pub const VXLAN_TUNNEL_MAC_ADDR: &str = "projectcalico.org/VXLANTunnelMACAddr";
pub const VXLAN_TUNNEL_MAC_ADDR_V6: &str = "projectcalico.org/VXLANTunnelMACAddrV6";
pub const ROUTE_REFLECTOR_CLUSTER_ID: &str = "projectcalico.org/RouteReflectorClusterID";
pub const IPV4_WIREGUARD_ADDR: &str = "projectcalico.org/IPv4WireguardInterfaceAddr";
pub const IPV6_WIREGUARD_ADDR: &str = "projectcalico.org/IPv6WireguardInterfaceAddr";

/// Every annotation that holds a field of the Calico Node (they are not shown as annotations).
pub const NODE_FIELDS: [&str; 11] = [
    IPV4_ADDRESS,
    IPV6_ADDRESS,
    AS_NUMBER,
    IPV4_IPIP_TUNNEL_ADDR,
    IPV4_VXLAN_TUNNEL_ADDR,
    IPV6_VXLAN_TUNNEL_ADDR,
    VXLAN_TUNNEL_MAC_ADDR,
    VXLAN_TUNNEL_MAC_ADDR_V6,
    ROUTE_REFLECTOR_CLUSTER_ID,
    IPV4_WIREGUARD_ADDR,
    IPV6_WIREGUARD_ADDR,
];

/// The Calico Node for a core Node object.
pub fn from_core(object: &Value) -> Result<Resource, Error> {
    let meta = kept_metadata(object);
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut annotations = string_map(object.pointer("/metadata/annotations"));
    let mut take = |k: &str| annotations.remove(k);
    let bgp = NodeBgpSpec {
        ipv4_address: take(IPV4_ADDRESS),
        ipv6_address: take(IPV6_ADDRESS),
        ipv4_ipip_tunnel_addr: take(IPV4_IPIP_TUNNEL_ADDR),
        as_number: match take(AS_NUMBER) {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| Error::Corrupt {
                what: format!("Node {name}"),
                reason: format!("annotation {AS_NUMBER} is {s:?}, not an AS number"),
            })?),
        },
        route_reflector_cluster_id: take(ROUTE_REFLECTOR_CLUSTER_ID),
    };
    let wireguard = NodeWireguardSpec {
        interface_ipv4_address: take(IPV4_WIREGUARD_ADDR),
        interface_ipv6_address: take(IPV6_WIREGUARD_ADDR),
    };
    let mut spec = NodeSpec {
        ipv4_vxlan_tunnel_addr: take(IPV4_VXLAN_TUNNEL_ADDR),
        vxlan_tunnel_mac_addr: take(VXLAN_TUNNEL_MAC_ADDR),
        ipv6_vxlan_tunnel_addr: take(IPV6_VXLAN_TUNNEL_ADDR),
        vxlan_tunnel_mac_addr_v6: take(VXLAN_TUNNEL_MAC_ADDR_V6),
        orch_refs: vec![OrchRef {
            node_name: Some(name.clone()),
            orchestrator: "k8s".to_string(),
        }],
        ..Default::default()
    };
    // Calico lists the BGP addresses first (without their prefix length), then the kubelet's.
    for a in [&bgp.ipv4_address, &bgp.ipv6_address].into_iter().flatten() {
        let address = a.split('/').next().unwrap_or(a).to_string();
        spec.addresses.push(NodeAddress {
            address,
            type_: Some("CalicoNodeIP".to_string()),
        });
    }
    if let Some(status) = object
        .pointer("/status/addresses")
        .and_then(Value::as_array)
    {
        for a in status {
            let kind = a.get("type").and_then(Value::as_str).unwrap_or_default();
            if (kind == "InternalIP" || kind == "ExternalIP")
                && let Some(address) = a.get("address").and_then(Value::as_str)
            {
                spec.addresses.push(NodeAddress {
                    address: address.to_string(),
                    type_: Some(kind.to_string()),
                });
            }
        }
    }
    if bgp != NodeBgpSpec::default() {
        spec.bgp = Some(bgp);
    }
    if wireguard != NodeWireguardSpec::default() {
        spec.wireguard = Some(wireguard);
    }
    let mut node = Node::new(name, spec);
    node.metadata.labels = string_map(object.pointer("/metadata/labels"));
    node.metadata.annotations = annotations;
    node.metadata.resource_version = meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    node.metadata.uid = meta.get("uid").and_then(Value::as_str).map(str::to_string);
    node.metadata.creation_timestamp = meta
        .get("creationTimestamp")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(node.into())
}

/// The annotations a Calico Node is stored as: its own annotations plus one per field.
pub fn annotations(node: &Node) -> BTreeMap<String, String> {
    let mut out = node.metadata.annotations.clone();
    // A user annotation cannot shadow a field.
    for k in NODE_FIELDS {
        out.remove(k);
    }
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            out.insert(k.to_string(), v.clone());
        }
    };
    if let Some(bgp) = &node.spec.bgp {
        put(IPV4_ADDRESS, &bgp.ipv4_address);
        put(IPV6_ADDRESS, &bgp.ipv6_address);
        put(IPV4_IPIP_TUNNEL_ADDR, &bgp.ipv4_ipip_tunnel_addr);
        put(AS_NUMBER, &bgp.as_number.map(|n| n.to_string()));
        put(ROUTE_REFLECTOR_CLUSTER_ID, &bgp.route_reflector_cluster_id);
    }
    if let Some(wg) = &node.spec.wireguard {
        put(IPV4_WIREGUARD_ADDR, &wg.interface_ipv4_address);
        put(IPV6_WIREGUARD_ADDR, &wg.interface_ipv6_address);
    }
    put(IPV4_VXLAN_TUNNEL_ADDR, &node.spec.ipv4_vxlan_tunnel_addr);
    put(VXLAN_TUNNEL_MAC_ADDR, &node.spec.vxlan_tunnel_mac_addr);
    put(IPV6_VXLAN_TUNNEL_ADDR, &node.spec.ipv6_vxlan_tunnel_addr);
    put(
        VXLAN_TUNNEL_MAC_ADDR_V6,
        &node.spec.vxlan_tunnel_mac_addr_v6,
    );
    out
}

/// A new core Node carrying a Calico Node (for clusters where tabby creates the Node itself;
/// normally the kubelet has).
pub fn to_new_core(node: &Node) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.metadata.name,
            "labels": node.metadata.labels,
            "annotations": annotations(node),
        },
    })
}

/// A JSON merge patch (RFC 7386) turning `current`'s string map into `desired`: changed keys
/// set, missing keys `null`.
pub fn map_patch(current: &BTreeMap<String, String>, desired: &BTreeMap<String, String>) -> Value {
    let mut patch = serde_json::Map::new();
    for (k, v) in desired {
        if current.get(k) != Some(v) {
            patch.insert(k.clone(), Value::String(v.clone()));
        }
    }
    for k in current.keys() {
        if !desired.contains_key(k) {
            patch.insert(k.clone(), Value::Null);
        }
    }
    Value::Object(patch)
}

/// The merge patch that makes the core Node `current` carry `node`, only if `current` is still
/// at `resource_version` (a resourceVersion in a patch is a precondition).
pub fn patch_for(current: &Value, node: &Node, resource_version: &str) -> Value {
    let labels = map_patch(
        &string_map(current.pointer("/metadata/labels")),
        &node.metadata.labels,
    );
    let annotations = map_patch(
        &string_map(current.pointer("/metadata/annotations")),
        &annotations(node),
    );
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "labels": labels,
            "annotations": annotations,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Node {
        let mut n = Node::new(
            "n1",
            NodeSpec {
                bgp: Some(NodeBgpSpec {
                    ipv4_address: Some("192.0.2.11/24".into()),
                    as_number: Some(64513),
                    ipv4_ipip_tunnel_addr: Some("198.18.0.1".into()),
                    route_reflector_cluster_id: Some("224.0.0.1".into()),
                    ..Default::default()
                }),
                ipv4_vxlan_tunnel_addr: Some("198.18.0.2".into()),
                vxlan_tunnel_mac_addr: Some("66:aa:bb:cc:dd:ee".into()),
                ..Default::default()
            },
        );
        n.metadata.labels.insert("rack".into(), "r1".into());
        n.metadata.annotations.insert("note".into(), "x".into());
        n
    }

    #[test]
    fn node_fields_are_calico_annotations() {
        let a = annotations(&sample());
        assert_eq!(a[IPV4_ADDRESS], "192.0.2.11/24");
        assert_eq!(a[AS_NUMBER], "64513");
        assert_eq!(a[IPV4_IPIP_TUNNEL_ADDR], "198.18.0.1");
        assert_eq!(a[IPV4_VXLAN_TUNNEL_ADDR], "198.18.0.2");
        assert_eq!(a[VXLAN_TUNNEL_MAC_ADDR], "66:aa:bb:cc:dd:ee");
        assert_eq!(a[ROUTE_REFLECTOR_CLUSTER_ID], "224.0.0.1");
        assert_eq!(a["note"], "x");
    }

    #[test]
    fn core_node_reads_back_with_kubelet_addresses() {
        let mut core = to_new_core(&sample());
        core["metadata"]["resourceVersion"] = json!("5");
        core["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"] = json!("0");
        core["status"] = json!({"addresses": [
            {"type": "InternalIP", "address": "192.0.2.11"},
            {"type": "Hostname", "address": "n1"}
        ]});
        let Resource::Node(back) = from_core(&core).unwrap() else {
            panic!("not a node")
        };
        let want = sample();
        assert_eq!(back.spec.bgp, want.spec.bgp);
        assert_eq!(
            back.spec.vxlan_tunnel_mac_addr,
            want.spec.vxlan_tunnel_mac_addr
        );
        assert_eq!(back.metadata.labels, want.metadata.labels);
        assert_eq!(back.metadata.annotations.len(), 2, "note and the kubelet's");
        assert_eq!(back.metadata.resource_version.as_deref(), Some("5"));
        let addrs: Vec<_> = back.spec.addresses.iter().map(|a| &a.address).collect();
        assert_eq!(addrs, ["192.0.2.11", "192.0.2.11"]);
    }

    #[test]
    fn patch_removes_what_is_gone_and_keeps_the_precondition() {
        let mut current = to_new_core(&sample());
        current["metadata"]["annotations"]["kubeadm.alpha.kubernetes.io/cri-socket"] = json!("x");
        let mut n = sample();
        n.spec.bgp.as_mut().unwrap().route_reflector_cluster_id = None;
        n.metadata
            .annotations
            .insert("kubeadm.alpha.kubernetes.io/cri-socket".into(), "x".into());
        let p = patch_for(&current, &n, "9");
        assert_eq!(p["metadata"]["resourceVersion"], "9");
        assert_eq!(
            p["metadata"]["annotations"],
            json!({ROUTE_REFLECTOR_CLUSTER_ID: null})
        );
        assert_eq!(p["metadata"]["labels"], json!({}));
    }
}
