//! Calico's `projectcalico.org/v3` resources as tabby reads and writes them: types with Calico's
//! field names and defaults, validation with field paths, and the selector language. Pure: no I/O.
//!
//! - [`parse_documents`] reads what `calicoctl apply -f` reads (multi-document YAML, JSON,
//!   lists); [`to_yaml`] and [`to_yaml_list`] print what `calicoctl get -o yaml` prints.
//! - [`Resource::validate`] and [`validate_pools`] reject what Calico's validator rejects, naming
//!   the field (`spec.blockSize: 33 is outside 20..32 for IPv4`).
//! - [`apply_defaults`] fills in what Calico writes on create (IPPool block size, modes, uses).
//! - [`Selector`] parses, prints and evaluates Calico label selectors.

pub mod bgp;
pub mod cluster;
pub mod defaults;
pub mod duration;
pub mod felix;
pub mod ipam;
pub mod ippool;
pub mod kind;
pub mod meta;
pub mod node;
pub mod numorstring;
pub mod parse;
pub mod resource;
pub mod selector;
pub mod validate;
pub mod workload;

pub use bgp::{BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec};
pub use cluster::{ClusterInformation, ClusterInformationSpec};
pub use defaults::apply_defaults;
pub use duration::{DurationError, parse_duration};
pub use felix::{FelixConfiguration, FelixConfigurationSpec};
pub use ipam::{
    AffinityState, AllocationAttribute, BlockAffinity, BlockAffinitySpec, IPAMBlock, IPAMBlockSpec,
    IPAMConfig, IPAMConfigSpec, IPAMHandle, IPAMHandleSpec,
};
pub use ippool::{AllowedUse, EncapMode, IPPool, IPPoolSpec};
pub use kind::{Key, Kind};
pub use meta::{API_VERSION, Object, ObjectMeta, Spec};
pub use node::{Node, NodeBgpSpec, NodeSpec};
pub use parse::{
    DocumentError, ParseError, parse_documents, parse_one, to_list_value, to_yaml,
    to_yaml_documents, to_yaml_list,
};
pub use resource::Resource;
pub use selector::Selector;
pub use validate::{ValidationError, validate_pools};
pub use workload::{WorkloadEndpoint, WorkloadEndpointSpec};
