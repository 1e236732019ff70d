//! ClusterInformation: the cluster-wide singleton `default`.

use serde::{Deserialize, Serialize};

use crate::{Kind, Object, Spec};

pub type ClusterInformation = Object<ClusterInformationSpec>;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterInformationSpec {
    #[serde(
        rename = "clusterGUID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_guid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calico_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore_ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Spec for ClusterInformationSpec {
    const KIND: Kind = Kind::ClusterInformation;
}
