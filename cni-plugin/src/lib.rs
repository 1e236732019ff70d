//! The tabby CNI plugin and the tabby-ipam IPAM plugin.
