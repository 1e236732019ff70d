//! felix: the only writer of kernel networking state on a node.
