//! The Kubernetes backend ("KDD"): resources live where Calico keeps them in a Kubernetes
//! cluster, so a cluster can move between Calico and tabby.
#[cfg(feature = "crds")]
pub mod crd;
