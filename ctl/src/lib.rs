//! tabbyctl: calicoctl's commands over tabby's datastore. `main.rs` parses arguments and calls
//! [`run`]; everything else lives here so tests can drive it in-process too.

// A command fails at most once, on its way out: the size of the error value costs nothing here.
#![allow(clippy::result_large_err)]

pub mod cli;
pub mod error;
pub mod ipam_cmd;
pub mod node_cmd;
pub mod output;
pub mod resources;

use std::io::Write;

use cli::{Cli, Command};
use error::CtlError;
use resources::Action;

/// Runs one command, writing what the operator should see to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CtlError> {
    if let Command::Version = cli.command {
        return writeln!(out, "tabbyctl {}", env!("CARGO_PKG_VERSION")).map_err(|source| {
            CtlError::Write {
                what: "standard output".into(),
                source,
            }
        });
    }
    // The speaker's control socket, not the datastore, answers node commands.
    if let Command::Node(cmd) = cli.command {
        return node_cmd::run(cmd, out).await;
    }
    let ds = datastore::open(&cli.datastore).map_err(|source| CtlError::Open {
        spec: cli.datastore.clone(),
        source,
    })?;
    let store = ds.clone();
    let ds = ds.as_ref();
    match cli.command {
        Command::Apply(f) => resources::run_file(ds, &f.file, Action::Apply, out).await,
        Command::Create { file, skip_exists } => {
            resources::run_file(ds, &file.file, Action::Create { skip_exists }, out).await
        }
        Command::Replace(f) => resources::run_file(ds, &f.file, Action::Replace, out).await,
        Command::Delete {
            kind,
            name,
            file,
            namespace,
            skip_not_exists,
        } => match (file, kind, name) {
            (Some(file), None, None) => {
                resources::run_file(ds, &file, Action::Delete { skip_not_exists }, out).await
            }
            (None, Some(kind), Some(name)) => {
                resources::delete_one(ds, &kind, &name, namespace.as_deref(), skip_not_exists, out)
                    .await
            }
            _ => Err(CtlError::Usage(
                "delete takes either -f FILE or KIND NAME".into(),
            )),
        },
        Command::Get {
            kind,
            name,
            output,
            namespace,
        } => {
            resources::get(
                ds,
                &kind,
                name.as_deref(),
                namespace.as_deref(),
                output,
                out,
            )
            .await
        }
        Command::Patch {
            kind,
            name,
            patch,
            namespace,
        } => resources::patch(ds, &kind, &name, namespace.as_deref(), &patch, out).await,
        Command::Ipam(cmd) => ipam_cmd::run(store, cmd, out).await,
        Command::Version | Command::Node(_) => unreachable!("handled above"),
    }
}
