//! `tabby-bgpd`: the speaker as a standalone daemon (a route reflector outside the cluster,
//! and the tests' speaker). Thin: [`bgp::speaker::Speaker`] plus [`bgp::control::serve`].
//!
//! - SIGTERM / SIGINT: every session is closed with Cease 6/2, the socket and the restart
//!   marker are removed, exit 0.
//! - SIGHUP: the config file is read again and applied with `replace_config`; a bad file is
//!   logged and the running config kept.
//! - Graceful restart, restarting side: a marker file (`--state-file`, by default
//!   `tabby-bgpd.running` beside the socket) exists while the daemon runs. Found at start,
//!   it means the last run ended without a clean shutdown (crash, kill -9) while felix kept
//!   the routes, so the sessions set the Restart State bit (RFC 4724 §4.1). The run dir is
//!   a tmpfs, so a reboot (which loses the forwarding state) clears it.

use std::path::PathBuf;
use std::process::ExitCode;

use bgp::config::Config;
use bgp::control;
use bgp::speaker::{Speaker, SpeakerOptions};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

#[derive(Debug, Parser)]
#[command(
    name = "tabby-bgpd",
    version,
    about = "tabby's BGP-4 speaker as a daemon"
)]
struct Args {
    /// The YAML config (see bgp/README.md).
    #[arg(long)]
    config: PathBuf,
    /// The control socket `tabbyctl node` reads.
    #[arg(long, default_value = control::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Marker that the daemon is running; default: `tabby-bgpd.running` beside the socket.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Worker threads; 1 (the default) runs every session and the RIB on one thread, as BIRD
    /// does. The RIB is one task whatever this is, and each UPDATE crosses from its session's
    /// task to it: on two threads that is a cross-thread wakeup and cold caches per message
    /// (1M-route feed: ~0.20 s CPU on 2 threads, ~0.17 s on 1). More threads only help many
    /// busy sessions' decoding.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let mut builder = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads.into());
        b
    };
    let runtime = builder
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(&args.config)?;
    let marker = args.state_file.clone().unwrap_or_else(|| {
        args.socket
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("tabby-bgpd.running")
    });
    let restarting = marker.exists();
    if restarting {
        info!(marker = %marker.display(), "previous run did not shut down cleanly: restarting (RFC 4724 R bit)");
    }
    let options = SpeakerOptions {
        restarting,
        export: None,
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let speaker = Speaker::start_with(config, options).await?;
    let server = control::serve(&args.socket, speaker.clone())?;
    // Written once running, so that a start that fails (bad listen address, say) does not
    // make the next one look like a restart.
    if let Some(dir) = marker.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("creating the run dir {}: {e}", dir.display()))?;
    }
    std::fs::write(&marker, format!("{}\n", std::process::id()))
        .map_err(|e| format!("writing the restart marker {}: {e}", marker.display()))?;
    info!(socket = %args.socket.display(), "control socket ready");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match Config::load(&args.config) {
                Ok(c) => match speaker.replace_config(c).await {
                    Ok(()) => info!(config = %args.config.display(), "config reloaded"),
                    Err(e) => error!("applying the reloaded config: {e}"),
                },
                Err(e) => error!("reloading the config, keeping the running one: {e}"),
            },
        }
    }
    info!("shutting down: closing sessions");
    server.close();
    speaker.shutdown().await?;
    let _ = std::fs::remove_file(&marker);
    Ok(())
}
