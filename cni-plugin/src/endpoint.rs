//! The WorkloadEndpoint the plugin records for each attachment, named and shaped as Calico's
//! CNI plugin writes it, so felix and tabbyctl find pods where a Calico user expects them.

use std::collections::BTreeMap;

use api::{WorkloadEndpoint, WorkloadEndpointSpec};
use ipnet::IpNet;

/// Annotation naming the CNI network that wrote an endpoint, so GC of one network never
/// touches another's endpoints.
pub const NETWORK_ANNOTATION: &str = "tabby.dev/network";

/// Calico escapes `-` as `--` inside each part of an endpoint name, so the parts stay
/// recoverable (libcalico-go `names.WorkloadEndpointIdentifiers`).
fn escape(part: &str) -> String {
    part.replace('-', "--")
}

/// Who an endpoint belongs to.
#[derive(Clone, Debug)]
pub struct Identity<'a> {
    pub node: &'a str,
    /// (namespace, pod) from CNI_ARGS, when the runtime is Kubernetes.
    pub pod: Option<(&'a str, &'a str)>,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

impl Identity<'_> {
    /// (namespace, name): `<node>-k8s-<pod>-<iface>` in the pod's namespace, or
    /// `<node>-cni-<containerID>-<iface>` in `default` without Kubernetes names (Calico).
    pub fn key(&self) -> (String, String) {
        match self.pod {
            Some((ns, pod)) => (
                ns.to_string(),
                format!(
                    "{}-k8s-{}-{}",
                    escape(self.node),
                    escape(pod),
                    escape(self.ifname)
                ),
            ),
            None => (
                "default".to_string(),
                format!(
                    "{}-cni-{}-{}",
                    escape(self.node),
                    escape(self.container_id),
                    escape(self.ifname)
                ),
            ),
        }
    }

    pub fn api_key(&self) -> api::Key {
        let (ns, name) = self.key();
        api::Key::namespaced(api::Kind::WorkloadEndpoint, ns, name)
    }

    pub fn endpoint(
        &self,
        network: &str,
        host_veth: &str,
        mac: &str,
        ips: &[IpNet],
    ) -> WorkloadEndpoint {
        let (ns, name) = self.key();
        let orchestrator = if self.pod.is_some() { "k8s" } else { "cni" };
        let mut wep = WorkloadEndpoint::new(
            name,
            WorkloadEndpointSpec {
                orchestrator: Some(orchestrator.to_string()),
                workload: self.pod.is_none().then(|| self.container_id.to_string()),
                node: Some(self.node.to_string()),
                container_id: Some(self.container_id.to_string()),
                pod: self.pod.map(|(_, p)| p.to_string()),
                endpoint: Some(self.ifname.to_string()),
                ip_networks: ips.iter().map(|n| n.to_string()).collect(),
                profiles: vec![format!("kns.{ns}")],
                interface_name: Some(host_veth.to_string()),
                mac: Some(mac.to_string()),
                ..Default::default()
            },
        );
        wep.metadata.namespace = Some(ns.clone());
        wep.metadata.labels = BTreeMap::from([
            ("projectcalico.org/namespace".to_string(), ns),
            (
                "projectcalico.org/orchestrator".to_string(),
                orchestrator.to_string(),
            ),
        ]);
        wep.metadata.annotations =
            BTreeMap::from([(NETWORK_ANNOTATION.to_string(), network.to_string())]);
        wep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_calico() {
        let id = Identity {
            node: "node-1",
            pod: Some(("kube-system", "coredns-abc")),
            container_id: "c1",
            ifname: "eth0",
        };
        assert_eq!(
            id.key(),
            ("kube-system".into(), "node--1-k8s-coredns--abc-eth0".into())
        );
        let id = Identity { pod: None, ..id };
        assert_eq!(id.key(), ("default".into(), "node--1-cni-c1-eth0".into()));
    }

    #[test]
    fn endpoint_fields() {
        let id = Identity {
            node: "n1",
            pod: Some(("default", "web")),
            container_id: "c1",
            ifname: "eth0",
        };
        let w = id.endpoint(
            "k8s-pod-network",
            "cali68caf03a5f4",
            "02:00:00:00:00:01",
            &["198.18.0.5/32".parse().unwrap()],
        );
        assert_eq!(w.kind, "WorkloadEndpoint");
        assert_eq!(w.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(w.spec.container_id.as_deref(), Some("c1"));
        assert_eq!(w.spec.ip_networks, ["198.18.0.5/32"]);
        assert_eq!(w.spec.interface_name.as_deref(), Some("cali68caf03a5f4"));
        assert_eq!(w.spec.profiles, ["kns.default"]);
    }
}
