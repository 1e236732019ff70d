//! confd: resources in, speaker and felix configuration out. Pure.
