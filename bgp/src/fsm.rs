//! Session FSM (RFC 4271 §8).
