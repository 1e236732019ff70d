//! `tabby-lab`: a tabby cluster in network namespaces on this machine.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tests::cluster::Mode;
use tests::lab;

#[derive(Parser)]
#[command(
    version,
    about = "A tabby cluster in network namespaces: nodes, a router, pods"
)]
struct Cli {
    /// Where the lab keeps its datastore, node state, logs and its record (lab.json).
    #[arg(long, global = true, default_value = "/var/run/tabby-lab")]
    state_dir: PathBuf,
    /// Where tabby-node, tabby, tabby-ipam and tabbyctl are; default: next to tabby-lab.
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the cluster, check all pairs of pods, print routes, peers and a packet's path.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, value_enum, default_value_t = Mode::None)]
        mode: Mode,
        #[arg(long, default_value_t = 1)]
        pods_per_node: usize,
    },
    /// up (3 nodes, no encapsulation), switch none → VXLAN → CrossSubnet → none with
    /// `tabbyctl patch`, timing convergence after each switch, then down.
    Demo,
    /// Add a node (with a pod) to the running lab and check every pod reaches it.
    AddNode,
    /// Remove everything the lab built (also after a crash or Ctrl-C).
    Down,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tests::sys::catch_interrupts();
    let r = match cli.command {
        Cmd::Up {
            nodes,
            mode,
            pods_per_node,
        } => lab::up(&cli.state_dir, cli.bin_dir, nodes, mode, pods_per_node),
        Cmd::Demo => lab::demo(&cli.state_dir, cli.bin_dir),
        Cmd::AddNode => lab::add_node(&cli.state_dir),
        Cmd::Down => lab::down(&cli.state_dir),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tabby-lab: {e}");
            ExitCode::FAILURE
        }
    }
}
