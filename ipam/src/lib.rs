//! Block IPAM: pools → blocks → addresses, with per-node block affinity.
