//! confd: resources in, speaker and felix configuration out.
//!
//! - [`mod@render`]: pure, `(resources, node) -> bgp::config::Config` (Calico's mesh, route
//!   reflector, BGPPeer and origination rules; see the module docs for each rule's source), and
//!   [`felix_config`], the merged FelixConfiguration.
//! - [`bird`]: the same plan as a BIRD 2 configuration file, for a node that runs BIRD.
//! - [`felix_inputs`]: felix's inputs for a node, and the difference between two states.
//! - [`watch`]: the loop that lists, watches, re-renders and sends only what changed.
//! - [`secrets`]: BGP passwords from a mounted secrets directory; [`yaml`]: the speaker config as
//!   `tabby-bgpd` YAML.
//!
//! In tabby-node:
//!
//! ```no_run
//! # async fn example(ds: std::sync::Arc<dyn datastore::Datastore>) {
//! use confd::{ConfdUpdate, RenderOptions};
//!
//! let opts = RenderOptions {
//!     secrets_dir: Some("/etc/tabby/secrets".into()),
//!     ..RenderOptions::default()
//! };
//! let (tx, mut rx) = tokio::sync::mpsc::channel(64);
//! tokio::spawn(confd::run(ds, "n1".into(), opts, tx));
//! while let Some(update) = rx.recv().await {
//!     match update {
//!         ConfdUpdate::Speaker(config) => { /* hand *config to the speaker */ }
//!         ConfdUpdate::Felix(inputs) => { /* apply each input to felix's calculator */ }
//!         ConfdUpdate::InSync => { /* the first complete state has been sent */ }
//!     }
//! }
//! # }
//! ```

pub mod bird;
pub mod felix_inputs;
pub mod render;
pub mod secrets;
pub mod watch;
pub mod yaml;

#[cfg(test)]
mod testutil;

pub use bird::{BirdOptions, render_bird};
pub use felix_inputs::{FelixKey, FelixState, felix_diff, felix_state};
pub use render::{
    PeerOrigin, Plan, RenderError, RenderedPeer, Resources, Warning, felix_config, plan, render,
};
pub use watch::{ConfdError, ConfdUpdate, RenderOptions, run, snapshot};
pub use yaml::speaker_yaml;
