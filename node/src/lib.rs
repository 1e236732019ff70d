//! tabby-node: the per-node agent.
pub fn run() {}
