//! FelixConfiguration: the dataplane agent's settings (`default` for the cluster, `node.<name>`
//! per node).

use serde::{Deserialize, Serialize};

use crate::{Kind, Object, Spec};

pub type FelixConfiguration = Object<FelixConfigurationSpec>;

/// Calico: the VXLAN network identifier felix uses for `vxlan.calico`.
pub const DEFAULT_VXLAN_VNI: u32 = 4096;
/// Calico: the UDP port of VXLAN traffic (the IANA port).
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// Calico: felix re-reads the kernel's routes this often.
pub const DEFAULT_ROUTE_REFRESH_INTERVAL: &str = "90s";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FelixConfigurationSpec {
    #[serde(
        rename = "ipipEnabled",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipip_enabled: Option<bool>,
    /// 0 or absent: computed from the underlay MTU.
    #[serde(rename = "ipipMTU", default, skip_serializing_if = "Option::is_none")]
    pub ipip_mtu: Option<u32>,
    #[serde(
        rename = "vxlanEnabled",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_enabled: Option<bool>,
    #[serde(rename = "vxlanMTU", default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mtu: Option<u32>,
    #[serde(
        rename = "vxlanMTUV6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_mtu_v6: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_port: Option<u16>,
    #[serde(rename = "vxlanVNI", default, skip_serializing_if = "Option::is_none")]
    pub vxlan_vni: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_refresh_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_outgoing_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu_iface_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_refresh_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_route_protocol: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_external_routes: Option<bool>,
    #[serde(
        rename = "ipv6Support",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_support: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_enabled: Option<bool>,
}

impl Spec for FelixConfigurationSpec {
    const KIND: Kind = Kind::FelixConfiguration;
}

impl FelixConfigurationSpec {
    pub fn vxlan_vni(&self) -> u32 {
        self.vxlan_vni.unwrap_or(DEFAULT_VXLAN_VNI)
    }

    pub fn vxlan_port(&self) -> u16 {
        self.vxlan_port.unwrap_or(DEFAULT_VXLAN_PORT)
    }
}
