//! Calico's WorkloadEndpoint as annotations on its Pod.
//!
//! Calico keeps no WorkloadEndpoint objects in a Kubernetes cluster: its CNI plugin writes
//! `cni.projectcalico.org/podIP`, `podIPs` and `containerID` on the Pod at ADD and clears them at
//! DEL, and everything else (node, interface name, profiles, labels) is derived from the Pod
//! (libcalico-go `k8s/conversion`). tabby writes the same three annotations, so Calico tools read
//! our pods and we read theirs, plus one of its own, [`ENDPOINT`], holding the fields that cannot
//! be derived (the host veth's MAC, the endpoint's own annotations, a non-standard name).

use api::{Resource, WorkloadEndpoint, WorkloadEndpointSpec};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use super::mapping::{kept_metadata, string_map};
use crate::Error;

pub const POD_IP: &str = "cni.projectcalico.org/podIP";
pub const POD_IPS: &str = "cni.projectcalico.org/podIPs";
pub const CONTAINER_ID: &str = "cni.projectcalico.org/containerID";
/// tabby's own: the endpoint as written, as JSON (`{"name", "labels", "annotations", "spec"}`).
pub const ENDPOINT: &str = "tabby.dev/endpoint";

/// Every annotation a WorkloadEndpoint is stored in.
pub const ANNOTATIONS: [&str; 4] = [POD_IP, POD_IPS, CONTAINER_ID, ENDPOINT];

/// Calico's host veth name for a pod: `cali` + the first 11 hex digits of SHA-1("ns.pod").
pub fn interface_name(namespace: &str, pod: &str) -> String {
    let digest = Sha1::digest(format!("{namespace}.{pod}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("cali{}", &hex[..11])
}

/// Calico's endpoint name `<node>-k8s-<pod>-<iface>`, `-` doubled inside each part.
pub fn endpoint_name(node: &str, pod: &str, iface: &str) -> String {
    let esc = |s: &str| s.replace('-', "--");
    format!("{}-k8s-{}-{}", esc(node), esc(pod), esc(iface))
}

/// The pod a Calico endpoint name points at; a name not in Calico's form is taken to be the
/// pod's own name.
pub fn pod_of(name: &str) -> String {
    let mut parts = vec![String::new()];
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '-' {
            if chars.peek() == Some(&'-') {
                chars.next();
                parts.last_mut().expect("one part").push('-');
            } else {
                parts.push(String::new());
            }
        } else {
            parts.last_mut().expect("one part").push(c);
        }
    }
    match parts.as_slice() {
        [node, k8s, pod, iface]
            if k8s == "k8s" && !node.is_empty() && !pod.is_empty() && !iface.is_empty() =>
        {
            pod.clone()
        }
        _ => name.to_string(),
    }
}

fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// Whether a pod carries an endpoint.
pub fn has_endpoint(pod: &Value) -> bool {
    annotation(pod, CONTAINER_ID).is_some()
        || annotation(pod, POD_IPS).is_some()
        || annotation(pod, POD_IP).is_some()
        || annotation(pod, ENDPOINT).is_some()
}

/// The pod's endpoint, if it has one.
pub fn from_pod(pod: &Value) -> Result<Option<Resource>, Error> {
    if !has_endpoint(pod) {
        return Ok(None);
    }
    let meta = kept_metadata(pod);
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let pod_name = s(meta.get("name"));
    let namespace = s(meta.get("namespace"));
    let node = s(pod.pointer("/spec/nodeName"));
    let what = || format!("endpoint of pod {namespace}/{pod_name}");
    let stored: Option<Value> = match annotation(pod, ENDPOINT) {
        None => None,
        Some(text) => Some(serde_json::from_str(text).map_err(|e| Error::Corrupt {
            what: what(),
            reason: format!("annotation {ENDPOINT}: {e}"),
        })?),
    };
    let mut wep: WorkloadEndpoint = match &stored {
        Some(stored) => {
            let spec: WorkloadEndpointSpec = serde_json::from_value(
                stored.get("spec").cloned().unwrap_or(json!({})),
            )
            .map_err(|e| Error::Corrupt {
                what: what(),
                reason: format!("annotation {ENDPOINT}: {e}"),
            })?;
            let mut w = WorkloadEndpoint::new(s(stored.get("name")), spec);
            w.metadata.labels = string_map(stored.get("labels"));
            w.metadata.annotations = string_map(stored.get("annotations"));
            w
        }
        // A pod written by Calico's CNI plugin: derive the endpoint as Calico does.
        None => {
            let name = if node.is_empty() {
                pod_name.clone()
            } else {
                endpoint_name(&node, &pod_name, "eth0")
            };
            let mut profiles = vec![format!("kns.{namespace}")];
            let sa = s(pod.pointer("/spec/serviceAccountName"));
            if !sa.is_empty() {
                profiles.push(format!("ksa.{namespace}.{sa}"));
            }
            let mut w = WorkloadEndpoint::new(
                name,
                WorkloadEndpointSpec {
                    orchestrator: Some("k8s".into()),
                    node: (!node.is_empty()).then(|| node.clone()),
                    pod: Some(pod_name.clone()),
                    endpoint: Some("eth0".into()),
                    service_account_name: (!sa.is_empty()).then_some(sa),
                    profiles,
                    interface_name: Some(interface_name(&namespace, &pod_name)),
                    ..Default::default()
                },
            );
            w.metadata.labels = string_map(pod.pointer("/metadata/labels"));
            w.metadata
                .labels
                .insert("projectcalico.org/namespace".into(), namespace.clone());
            w.metadata
                .labels
                .insert("projectcalico.org/orchestrator".into(), "k8s".into());
            w
        }
    };
    // Calico's annotations are the truth for addresses and container, whoever wrote them.
    wep.spec.container_id = annotation(pod, CONTAINER_ID)
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    wep.spec.ip_networks = match annotation(pod, POD_IPS).or(annotation(pod, POD_IP)) {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    wep.metadata.namespace = Some(namespace);
    wep.metadata.resource_version = meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    wep.metadata.uid = meta.get("uid").and_then(Value::as_str).map(str::to_string);
    wep.metadata.creation_timestamp = meta
        .get("creationTimestamp")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Some(wep.into()))
}

/// The merge patch that writes `wep` onto its pod, only if the pod is still at
/// `resource_version`.
pub fn write_patch(wep: &WorkloadEndpoint, resource_version: &str) -> Value {
    let ips = wep.spec.ip_networks.join(",");
    let stored = json!({
        "name": wep.metadata.name,
        "labels": wep.metadata.labels,
        "annotations": wep.metadata.annotations,
        "spec": wep.spec,
    });
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        CONTAINER_ID.into(),
        Value::String(wep.spec.container_id.clone().unwrap_or_default()),
    );
    match wep.spec.ip_networks.first() {
        Some(first) => {
            annotations.insert(POD_IP.into(), Value::String(first.clone()));
            annotations.insert(POD_IPS.into(), Value::String(ips));
        }
        None => {
            annotations.insert(POD_IP.into(), Value::Null);
            annotations.insert(POD_IPS.into(), Value::Null);
        }
    }
    annotations.insert(ENDPOINT.into(), Value::String(stored.to_string()));
    json!({"metadata": {"resourceVersion": resource_version, "annotations": annotations}})
}

/// The merge patch that clears the endpoint from its pod (CNI DEL), only if the pod is still at
/// `resource_version`.
pub fn clear_patch(resource_version: &str) -> Value {
    let annotations: serde_json::Map<String, Value> = ANNOTATIONS
        .iter()
        .map(|k| (k.to_string(), Value::Null))
        .collect();
    json!({"metadata": {"resourceVersion": resource_version, "annotations": annotations}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_calicos() {
        // Calico's test vector: kube-system/coredns-abc on node-1.
        assert_eq!(
            endpoint_name("node-1", "coredns-abc", "eth0"),
            "node--1-k8s-coredns--abc-eth0"
        );
        assert_eq!(pod_of("node--1-k8s-coredns--abc-eth0"), "coredns-abc");
        assert_eq!(pod_of("w1"), "w1");
        assert_eq!(pod_of("a-b"), "a-b");
        assert!(interface_name("default", "nginx").starts_with("cali"));
        assert_eq!(interface_name("default", "nginx").len(), 15);
    }

    #[test]
    fn a_pod_written_by_calico_reads_as_an_endpoint() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "shop", "resourceVersion": "12",
                "labels": {"app": "web"},
                "annotations": {POD_IP: "198.18.0.5/32", POD_IPS: "198.18.0.5/32,2001:db8::5/128",
                    CONTAINER_ID: "abc"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "default"}
        });
        let Some(Resource::WorkloadEndpoint(w)) = from_pod(&pod).unwrap() else {
            panic!("no endpoint")
        };
        assert_eq!(w.metadata.name, "n1-k8s-web--1-eth0");
        assert_eq!(w.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(w.spec.ip_networks, ["198.18.0.5/32", "2001:db8::5/128"]);
        assert_eq!(w.spec.container_id.as_deref(), Some("abc"));
        assert_eq!(w.spec.node.as_deref(), Some("n1"));
        assert_eq!(w.spec.profiles, ["kns.shop", "ksa.shop.default"]);
        assert_eq!(w.metadata.labels["app"], "web");
        assert_eq!(w.metadata.resource_version.as_deref(), Some("12"));
    }

    #[test]
    fn what_we_write_reads_back() {
        let mut w = WorkloadEndpoint::new(
            "n1-k8s-web-eth0",
            WorkloadEndpointSpec {
                node: Some("n1".into()),
                pod: Some("web".into()),
                container_id: Some("c1".into()),
                ip_networks: vec!["198.18.0.9/32".into()],
                mac: Some("ee:ee:ee:ee:ee:ee".into()),
                interface_name: Some("cali0123456789a".into()),
                ..Default::default()
            },
        );
        w.metadata.namespace = Some("default".into());
        w.metadata
            .annotations
            .insert("tabby.dev/network".into(), "k8s-pod-network".into());
        let patch = write_patch(&w, "3");
        assert_eq!(patch["metadata"]["resourceVersion"], "3");
        assert_eq!(patch["metadata"]["annotations"][POD_IP], "198.18.0.9/32");
        let mut pod = json!({"metadata": {"name": "web", "namespace": "default",
            "resourceVersion": "4", "annotations": patch["metadata"]["annotations"].clone()},
            "spec": {"nodeName": "n1"}});
        let Some(Resource::WorkloadEndpoint(back)) = from_pod(&pod).unwrap() else {
            panic!("no endpoint")
        };
        w.metadata.resource_version = Some("4".into());
        assert_eq!(back, w);
        // DEL clears every annotation we wrote.
        let clear = clear_patch("4");
        for k in ANNOTATIONS {
            pod["metadata"]["annotations"][k] = clear["metadata"]["annotations"][k].clone();
            assert!(clear["metadata"]["annotations"][k].is_null());
        }
        pod["metadata"]["annotations"] = json!({});
        assert!(from_pod(&pod).unwrap().is_none());
    }
}
