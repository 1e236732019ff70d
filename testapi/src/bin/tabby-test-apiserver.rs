//! `tabby-test-apiserver`: runs the test API server until killed.
//!
//! ```text
//! tabby-test-apiserver --listen 127.0.0.1:0 --kubeconfig OUT [--crds DIR] [--token T] [--tls]
//!                      [--history N] [--bookmark-interval SECONDS]
//! ```
//! Prints the server URL on stdout once it serves, and writes a kubeconfig to OUT.

use std::path::PathBuf;
use std::time::Duration;

use testapi::{Options, Server};

const USAGE: &str = "usage: tabby-test-apiserver --listen ADDR --kubeconfig OUT [--crds DIR] [--token T] [--tls] [--history N] [--bookmark-interval SECONDS]";

struct Args {
    options: Options,
    kubeconfig: PathBuf,
    crds: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut options = Options::default();
    let mut kubeconfig = None;
    let mut crds = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--listen" => {
                let v = value()?;
                options.listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value()?)),
            "--crds" => crds = Some(PathBuf::from(value()?)),
            "--token" => options.token = Some(value()?),
            "--tls" => options.tls = true,
            "--history" => {
                let v = value()?;
                options.history_limit = Some(v.parse().map_err(|e| format!("--history {v}: {e}"))?);
            }
            "--bookmark-interval" => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .map_err(|e| format!("--bookmark-interval {v}: {e}"))?;
                options.bookmark_interval = Duration::from_secs_f64(secs);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(Args {
        options,
        kubeconfig: kubeconfig.ok_or_else(|| format!("--kubeconfig is required\n{USAGE}"))?,
        crds,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let server = Server::start(args.options).await?;
    if let Some(dir) = &args.crds {
        let n = server.register_crds_from_dir(dir)?;
        eprintln!(
            "registered {n} CustomResourceDefinitions from {}",
            dir.display()
        );
    }
    server.write_kubeconfig(&args.kubeconfig)?;
    println!("{}", server.url());
    use std::io::Write;
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}
