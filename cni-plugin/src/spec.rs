//! CNI specification 1.1.0 types, written by hand with serde, and the conversion of a result to
//! the version a runtime asked for.
//!
//! Source: containernetworking/cni `SPEC.md` (spec-v1.1.0) and `pkg/types/{100,040}`. Versions
//! before 1.0.0 carry `"version": "4" | "6"` in each IP config; 1.1.0 added interface `mtu`,
//! `socketPath`, `pciID` and route `mtu`, `advmss`, `priority`, `table`, `scope`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The spec version this plugin implements.
pub const CURRENT_VERSION: &str = "1.1.0";

/// Every version a runtime may ask for, oldest first (as `supportedVersions` lists them).
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The GC argument: attachments the runtime still holds (SPEC.md, "GC: Clean up any stale
/// resources").
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";

/// A version we know, in the order the spec introduced them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        Some(match s {
            // 0.3.0 and 0.3.1 share one result format (pkg/types/040 handles both).
            "0.3.0" | "0.3.1" => Version::V0_3_1,
            "0.4.0" => Version::V0_4_0,
            "1.0.0" => Version::V1_0_0,
            "1.1.0" => Version::V1_1_0,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Versions before 1.0.0 mark each IP with its family.
    fn has_ip_version_field(self) -> bool {
        self < Version::V1_0_0
    }
}

/// One interface a plugin created or knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// 1.1.0 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for an interface inside the container; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// 1.1.0 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// 1.1.0 and later.
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// One address assigned to an interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into the result's `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route the plugin installed (or wants installed) in the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings, both in network configuration and in results.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

/// The success result of ADD (and the `prevResult` of DEL / CHECK), in the 1.1.0 shape. It
/// also reads older shapes: the `version` field of 0.3.x / 0.4.0 IPs is ignored on input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// This result as JSON in the format of `version`: fields the version does not know are
    /// dropped and, before 1.0.0, each IP gets its `version`.
    pub fn to_version(&self, version: Version) -> serde_json::Value {
        let mut r = self.clone();
        r.cni_version = version.as_str().to_string();
        if version < Version::V1_1_0 {
            for i in &mut r.interfaces {
                i.mtu = None;
                i.socket_path = None;
                i.pci_id = None;
            }
            for route in &mut r.routes {
                *route = Route::new(route.dst, route.gw);
            }
        }
        let mut value = serde_json::to_value(&r).expect("a CNI result always serializes");
        if version.has_ip_version_field()
            && let Some(ips) = value.get_mut("ips").and_then(|v| v.as_array_mut())
        {
            for (ip, cfg) in ips.iter_mut().zip(&r.ips) {
                let family = match cfg.address {
                    IpNet::V4(_) => "4",
                    IpNet::V6(_) => "6",
                };
                ip["version"] = family.into();
            }
        }
        value
    }
}

/// The error result every command prints on failure (SPEC.md, "Error").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResult {
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// The result of VERSION.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionResult {
    pub cni_version: String,
    pub supported_versions: Vec<String>,
}

impl VersionResult {
    pub fn ours() -> VersionResult {
        VersionResult {
            cni_version: CURRENT_VERSION.to_string(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// One attachment in a GC request's `cni.dev/valid-attachments`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// Well-known error codes (SPEC.md, "Error"; pkg/types/types.go).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT_VARIABLES: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot add containers now.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// STATUS: and existing containers may be damaged.
    pub const PLUGIN_NOT_AVAILABLE_CONTAINERS_DAMAGED: u32 = 51;
    /// tabby's own codes start at 100.
    pub const IPAM_FAILURE: u32 = 100;
    pub const DATAPLANE_FAILURE: u32 = 101;
    pub const DATASTORE_FAILURE: u32 = 102;
    pub const POOL_EXHAUSTED: u32 = 103;
    pub const DELEGATE_FAILURE: u32 = 104;
    pub const CHECK_MISMATCH: u32 = 105;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// SPEC.md (spec-v1.1.0), "Add: example" result of the bridge plugin, as printed there.
    const SPEC_ADD_RESULT_1_1_0: &str = r#"{
        "cniVersion": "1.1.0",
        "interfaces": [
            { "name": "cni0", "mac": "00:11:22:33:44:55" },
            { "name": "veth3243", "mac": "55:44:33:22:11:11" },
            { "name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue" }
        ],
        "ips": [ { "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2 } ],
        "routes": [ { "dst": "0.0.0.0/0" } ],
        "dns": { "nameservers": [ "10.1.0.1" ] }
    }"#;

    #[test]
    fn reads_and_writes_the_spec_example_result() {
        let r: CniResult = serde_json::from_str(SPEC_ADD_RESULT_1_1_0).unwrap();
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(
            r.interfaces[2].sandbox.as_deref(),
            Some("/var/run/netns/blue")
        );
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(r.dns.nameservers, ["10.1.0.1"]);
        let back = r.to_version(Version::V1_1_0);
        let expected: serde_json::Value = serde_json::from_str(SPEC_ADD_RESULT_1_1_0).unwrap();
        assert_eq!(back, expected);
    }

    #[test]
    fn old_versions_get_ip_version_and_lose_new_fields() {
        let mut r: CniResult = serde_json::from_str(SPEC_ADD_RESULT_1_1_0).unwrap();
        r.interfaces[0].mtu = Some(1400);
        r.routes[0].scope = Some(253);
        r.ips.push(IpConfig {
            address: "2001:db8::5/128".parse().unwrap(),
            gateway: None,
            interface: Some(2),
        });
        for v in [Version::V0_3_1, Version::V0_4_0] {
            let j = r.to_version(v);
            assert_eq!(j["cniVersion"], v.as_str());
            assert_eq!(j["ips"][0]["version"], "4");
            assert_eq!(j["ips"][1]["version"], "6");
            assert!(j["interfaces"][0].get("mtu").is_none());
            assert_eq!(j["routes"][0], json!({"dst": "0.0.0.0/0"}));
        }
        let j = r.to_version(Version::V1_0_0);
        assert!(j["ips"][0].get("version").is_none());
        assert!(j["interfaces"][0].get("mtu").is_none());
        let j = r.to_version(Version::V1_1_0);
        assert_eq!(j["interfaces"][0]["mtu"], 1400);
        assert_eq!(j["routes"][0]["scope"], 253);
    }

    /// A 0.4.0 prevResult, as podman 4 sends on DEL (pkg/types/040 shape).
    #[test]
    fn reads_an_0_4_0_prev_result() {
        let j = json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "mac": "52:54:00:00:00:01", "sandbox": "/run/netns/x"}],
            "ips": [{"version": "4", "interface": 0, "address": "198.18.0.5/32"}],
            "dns": {}
        });
        let r: CniResult = serde_json::from_value(j).unwrap();
        assert_eq!(r.ips[0].address, "198.18.0.5/32".parse::<IpNet>().unwrap());
    }

    /// SPEC.md, "Error" example.
    #[test]
    fn error_result_shape() {
        let spec = r#"{
          "cniVersion": "1.1.0",
          "code": 7,
          "msg": "Invalid Configuration",
          "details": "Network 192.168.0.0/31 too small to allocate from."
        }"#;
        let e: ErrorResult = serde_json::from_str(spec).unwrap();
        assert_eq!(e.code, code::INVALID_NETWORK_CONFIG);
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::from_str::<serde_json::Value>(spec).unwrap()
        );
    }

    /// SPEC.md, "VERSION" example output shape.
    #[test]
    fn version_result_shape() {
        let v = serde_json::to_value(VersionResult::ours()).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
    }

    /// SPEC.md, "GC example" attachment list.
    #[test]
    fn valid_attachments() {
        let j = json!([{"containerID": "a", "ifname": "eth0"}]);
        let a: Vec<Attachment> = serde_json::from_value(j).unwrap();
        assert_eq!(a[0].container_id, "a");
    }

    #[test]
    fn versions_parse() {
        for s in SUPPORTED_VERSIONS {
            assert_eq!(Version::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(Version::parse("0.3.0"), Some(Version::V0_3_1));
        assert_eq!(Version::parse("0.2.0"), None);
        assert_eq!(Version::parse("2.0.0"), None);
    }

    mod roundtrip {
        use proptest::prelude::*;

        use super::*;

        fn ip_config() -> impl Strategy<Value = IpConfig> {
            prop_oneof![
                (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, p)| IpNet::new(a.into(), p).unwrap()),
                (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, p)| IpNet::new(a.into(), p).unwrap()),
            ]
            .prop_flat_map(|address| {
                (Just(address), proptest::option::of(0usize..4)).prop_map(|(address, interface)| {
                    IpConfig {
                        address,
                        gateway: None,
                        interface,
                    }
                })
            })
        }

        proptest! {
            /// A result written in any version reads back with the same addresses, and the
            /// IP `version` field is present exactly before 1.0.0 and names the right family.
            #[test]
            fn every_version_reads_back(ips in proptest::collection::vec(ip_config(), 0..4),
                                        names in proptest::collection::vec("[a-z0-9]{1,15}", 0..3)) {
                let r = CniResult {
                    cni_version: CURRENT_VERSION.into(),
                    interfaces: names.into_iter().map(|name| Interface { name, mtu: Some(1500), ..Default::default() }).collect(),
                    ips,
                    routes: vec![Route::new("0.0.0.0/0".parse().unwrap(), None)],
                    dns: Dns::default(),
                };
                for v in [Version::V0_3_1, Version::V0_4_0, Version::V1_0_0, Version::V1_1_0] {
                    let j = r.to_version(v);
                    let back: CniResult = serde_json::from_value(j.clone()).unwrap();
                    prop_assert_eq!(&back.ips, &r.ips);
                    prop_assert_eq!(back.interfaces.len(), r.interfaces.len());
                    for (ij, ip) in j["ips"].as_array().map(Vec::as_slice).unwrap_or(&[]).iter().zip(&r.ips) {
                        let family = if ip.address.addr().is_ipv4() { "4" } else { "6" };
                        if v < Version::V1_0_0 {
                            prop_assert_eq!(&ij["version"], family);
                        } else {
                            prop_assert!(ij.get("version").is_none());
                        }
                    }
                }
            }
        }
    }
}
