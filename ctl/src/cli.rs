//! Command-line shape, as close to calicoctl's as clap allows.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The default datastore: the local directory tabby-node uses.
pub const DEFAULT_DATASTORE: &str = "dir:/var/lib/tabby/datastore";

#[derive(Debug, Parser)]
#[command(
    name = "tabbyctl",
    version,
    about = "Manage tabby resources, IPAM and nodes (calicoctl-style)"
)]
pub struct Cli {
    /// Where resources live: `dir:PATH` (the local-directory datastore), `kubernetes` (the
    /// cluster in KUBECONFIG / ~/.kube/config, or in-cluster) or `kubernetes:KUBECONFIG`.
    #[arg(long, global = true, env = "TABBY_DATASTORE", default_value = DEFAULT_DATASTORE)]
    pub datastore: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or replace the resources in a file (`-` for stdin).
    Apply(FileArgs),
    /// Create the resources in a file; fails for any that exist.
    Create {
        #[command(flatten)]
        file: FileArgs,
        /// Do not fail when a resource already exists.
        #[arg(long)]
        skip_exists: bool,
    },
    /// Replace existing resources with the ones in a file.
    Replace(FileArgs),
    /// Delete resources named in a file, or one resource by kind and name.
    Delete {
        /// Resource kind (ippool, bgppeer, ...), when not using -f.
        kind: Option<String>,
        /// Resource name, when not using -f.
        name: Option<String>,
        #[arg(short = 'f', long = "filename")]
        file: Option<PathBuf>,
        /// Namespace (WorkloadEndpoint only).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Do not fail when a resource does not exist.
        #[arg(long)]
        skip_not_exists: bool,
    },
    /// Show resources of one kind.
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Ps)]
        output: Output,
        /// Namespace (WorkloadEndpoint only); default: every namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Change one resource with a JSON merge patch (RFC 7386).
    Patch {
        kind: String,
        name: String,
        #[arg(short = 'p', long = "patch")]
        patch: String,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// IP address management.
    #[command(subcommand)]
    Ipam(IpamCommand),
    /// This node's BGP speaker, over its control socket (no datastore needed).
    #[command(subcommand)]
    Node(NodeCommand),
    /// Print the version.
    Version,
}

#[derive(Debug, Args)]
pub struct FileArgs {
    /// The file to read, or `-` for stdin.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table with calicoctl's columns.
    Ps,
    /// The table with more columns.
    Wide,
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// BGP peers: address, type, state, since, info (like `calicoctl node status`).
    Status(NodeArgs),
    /// The speaker's Loc-RIB with next hops.
    Routes(NodeArgs),
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The speaker's control socket (tabby-bgpd --socket, or tabby-node's).
    #[arg(long, default_value = bgp::control::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = NodeOutput::Table)]
    pub output: NodeOutput,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NodeOutput {
    /// calicoctl's bordered table.
    Table,
    /// The speaker's answer as JSON (with each peer's prefix counts).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum IpamCommand {
    /// Usage per pool (and per block with --show-blocks).
    Show {
        #[arg(long)]
        show_blocks: bool,
    },
    /// Find leaked addresses, orphaned handles and blocks of departed nodes.
    Check {
        /// Write the report as JSON to this file (for `ipam release --from-report`).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// Release an address, or everything a check report found.
    Release {
        #[arg(
            long,
            conflicts_with = "from_report",
            required_unless_present = "from_report"
        )]
        ip: Option<IpAddr>,
        #[arg(long)]
        from_report: Option<PathBuf>,
    },
}
