//! CustomResourceDefinitions for Calico's kinds, generated from the `api` types.
