//! [`Resource`]: any one resource, whatever its kind.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    BGPConfiguration, BGPPeer, BlockAffinity, ClusterInformation, FelixConfiguration, IPAMBlock,
    IPAMConfig, IPAMHandle, IPPool, Key, Kind, Node, ObjectMeta, WorkloadEndpoint,
};

/// One resource of any kind. It serializes exactly as its inner object does (the `kind` field
/// says which), so a stored or printed resource is the YAML an operator wrote.
///
/// FelixConfiguration, with its hundred optional settings, is much larger than the other
/// variants; resources are few and short-lived, and matching on unboxed objects keeps every
/// caller simple, so the size difference is accepted rather than boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    IPPool(IPPool),
    Node(Node),
    BGPConfiguration(BGPConfiguration),
    BGPPeer(BGPPeer),
    FelixConfiguration(FelixConfiguration),
    IPAMConfig(IPAMConfig),
    ClusterInformation(ClusterInformation),
    WorkloadEndpoint(WorkloadEndpoint),
    IPAMBlock(IPAMBlock),
    BlockAffinity(BlockAffinity),
    IPAMHandle(IPAMHandle),
}

/// Applies `$body` to the inner object of whatever variant `$res` is.
macro_rules! each_variant {
    ($res:expr, $obj:ident => $body:expr) => {
        match $res {
            Resource::IPPool($obj) => $body,
            Resource::Node($obj) => $body,
            Resource::BGPConfiguration($obj) => $body,
            Resource::BGPPeer($obj) => $body,
            Resource::FelixConfiguration($obj) => $body,
            Resource::IPAMConfig($obj) => $body,
            Resource::ClusterInformation($obj) => $body,
            Resource::WorkloadEndpoint($obj) => $body,
            Resource::IPAMBlock($obj) => $body,
            Resource::BlockAffinity($obj) => $body,
            Resource::IPAMHandle($obj) => $body,
        }
    };
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::IPPool(_) => Kind::IPPool,
            Resource::Node(_) => Kind::Node,
            Resource::BGPConfiguration(_) => Kind::BGPConfiguration,
            Resource::BGPPeer(_) => Kind::BGPPeer,
            Resource::FelixConfiguration(_) => Kind::FelixConfiguration,
            Resource::IPAMConfig(_) => Kind::IPAMConfig,
            Resource::ClusterInformation(_) => Kind::ClusterInformation,
            Resource::WorkloadEndpoint(_) => Kind::WorkloadEndpoint,
            Resource::IPAMBlock(_) => Kind::IPAMBlock,
            Resource::BlockAffinity(_) => Kind::BlockAffinity,
            Resource::IPAMHandle(_) => Kind::IPAMHandle,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        each_variant!(self, o => &o.metadata)
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        each_variant!(self, o => &mut o.metadata)
    }

    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// Where this resource lives in the datastore.
    pub fn key(&self) -> Key {
        let meta = self.metadata();
        let namespace = if self.kind().namespaced() {
            meta.namespace.clone()
        } else {
            None
        };
        Key {
            kind: self.kind(),
            namespace,
            name: meta.name.clone(),
        }
    }

    /// The datastore revision this copy was read at, if any.
    pub fn resource_version(&self) -> Option<&str> {
        self.metadata().resource_version.as_deref()
    }

    /// Decodes a resource from a JSON value, dispatching on its `kind` field. Unknown fields
    /// are errors, and an error names the field it is about (`spec.blockSize: invalid type…`).
    pub fn from_json_value(value: serde_json::Value) -> Result<Resource, serde_json::Error> {
        let kind_name = value
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| serde_json::Error::custom("missing field `kind`"))?;
        let kind = Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind_name)
            .ok_or_else(|| serde_json::Error::custom(format!("unknown kind {kind_name:?}")))?;
        fn de<T: serde::de::DeserializeOwned>(
            value: serde_json::Value,
        ) -> Result<T, serde_json::Error> {
            serde_path_to_error::deserialize(value).map_err(|e| {
                let path = e.path().to_string();
                if path == "." {
                    e.into_inner()
                } else {
                    serde_json::Error::custom(format!("{path}: {}", e.into_inner()))
                }
            })
        }
        Ok(match kind {
            Kind::IPPool => Resource::IPPool(de(value)?),
            Kind::Node => Resource::Node(de(value)?),
            Kind::BGPConfiguration => Resource::BGPConfiguration(de(value)?),
            Kind::BGPPeer => Resource::BGPPeer(de(value)?),
            Kind::FelixConfiguration => Resource::FelixConfiguration(de(value)?),
            Kind::IPAMConfig => Resource::IPAMConfig(de(value)?),
            Kind::ClusterInformation => Resource::ClusterInformation(de(value)?),
            Kind::WorkloadEndpoint => Resource::WorkloadEndpoint(de(value)?),
            Kind::IPAMBlock => Resource::IPAMBlock(de(value)?),
            Kind::BlockAffinity => Resource::BlockAffinity(de(value)?),
            Kind::IPAMHandle => Resource::IPAMHandle(de(value)?),
        })
    }
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        each_variant!(self, o => o.serialize(serializer))
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Resource::from_json_value(value).map_err(D::Error::custom)
    }
}

macro_rules! from_object {
    ($($variant:ident),*) => {
        $(impl From<$variant> for Resource {
            fn from(o: $variant) -> Resource {
                Resource::$variant(o)
            }
        })*
    };
}

from_object!(
    IPPool,
    Node,
    BGPConfiguration,
    BGPPeer,
    FelixConfiguration,
    IPAMConfig,
    ClusterInformation,
    WorkloadEndpoint,
    IPAMBlock,
    BlockAffinity,
    IPAMHandle
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_json_value_names_the_field() {
        let v = serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "p"}, "spec": {"cidr": "198.18.0.0/16", "blockSize": "x"}
        });
        let e = Resource::from_json_value(v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.blockSize: invalid type: string \"x\", expected u8"
        );
    }

    #[test]
    fn key_and_serde_round_trip() {
        let pool = IPPool::new("p", crate::IPPoolSpec::default());
        let r = Resource::from(pool);
        assert_eq!(r.key(), Key::new(Kind::IPPool, "p"));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(serde_json::from_value::<Resource>(v).unwrap(), r);
    }
}
