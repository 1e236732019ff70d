//! `tabby-node`: the per-node agent (see the `node` crate for what it does).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ipam::Family;
use node::agent::{self, NodeConfig};
use node::autodetect::{self, Method, Setting};
use node::startup::{self, DefaultPool};
use tracing::{error, info, warn};

#[derive(Debug, Parser)]
#[command(
    name = "tabby-node",
    version,
    about = "tabby's per-node agent: confd, BGP speaker and felix in one process"
)]
struct Args {
    /// This node's name (default: the hostname).
    #[arg(long, env = "NODENAME")]
    node_name: Option<String>,
    /// Where resources live: dir:PATH or memory:.
    #[arg(
        long,
        env = "TABBY_DATASTORE",
        default_value = "dir:/var/lib/tabby/datastore"
    )]
    datastore: String,
    /// Holds the node-name file and the MTU file the CNI plugin reads.
    #[arg(long, env = "TABBY_STATE_DIR", default_value = "/var/lib/tabby")]
    state_dir: PathBuf,
    /// Calico's IP_AUTODETECTION_METHOD: first-found, interface=REGEX, skip-interface=REGEX,
    /// can-reach=DEST, cidr=CIDR (regexes and CIDRs: comma-separated lists).
    #[arg(long, env = "IP_AUTODETECTION_METHOD", default_value = "first-found")]
    ip_autodetection_method: String,
    /// The node's IPv4 address with prefix length, or `autodetect` (the default).
    #[arg(long, env = "IP")]
    ip: Option<String>,
    /// The node's IPv6 address with prefix length, `autodetect`, or `none` (the default).
    #[arg(long, env = "IP6")]
    ip6: Option<String>,
    /// As --ip-autodetection-method, for IPv6 (with `--ip6 autodetect`).
    #[arg(long, env = "IP6_AUTODETECTION_METHOD", default_value = "first-found")]
    ip6_autodetection_method: String,
    /// `/liveness` and `/readiness` (Calico: localhost:9099).
    #[arg(long, env = "TABBY_HEALTH_LISTEN", default_value = "127.0.0.1:9099")]
    health_listen: SocketAddr,
    /// Prometheus `/metrics` (Calico: felix's port 9091 on every address).
    #[arg(long, env = "TABBY_METRICS_LISTEN", default_value = "0.0.0.0:9091")]
    metrics_listen: SocketAddr,
    /// The interface that carries node-to-node traffic (default: the one with the node address).
    #[arg(long, env = "TABBY_UNDERLAY_DEV")]
    underlay_dev: Option<String>,
    /// The control socket `tabbyctl node status` / `node routes` read.
    #[arg(long, env = "TABBY_CONTROL_SOCKET", default_value = bgp::control::DEFAULT_SOCKET)]
    control_socket: PathBuf,
    /// Where BGP password secrets are mounted (`<dir>/<secret>/<key>`).
    #[arg(long, env = "TABBY_BGP_SECRETS_DIR")]
    bgp_secrets_dir: Option<PathBuf>,
    /// Seconds a pod address on this node may stay without its pod before it is freed (Calico
    /// kube-controllers' leak grace period: 15 min); 0 turns the collector off.
    #[arg(long, env = "TABBY_IPAM_GC_GRACE_SECONDS", default_value_t = 900)]
    ipam_gc_grace_seconds: u64,
    /// Seconds between two looks for such addresses.
    #[arg(long, env = "TABBY_IPAM_GC_INTERVAL_SECONDS", default_value_t = 300)]
    ipam_gc_interval_seconds: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Install the CNI plugin binaries, its kubeconfig and the conflist on the host, then
    /// exit (the DaemonSet's init container).
    InstallCni(node::install_cni::InstallCniArgs),
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn config(args: Args) -> Result<NodeConfig, node::Error> {
    let env = |k: &str| std::env::var(k).ok();
    let node_name = args
        .node_name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(hostname);
    let v4 = Setting::parse("IP", args.ip.as_deref(), Family::V4, Setting::Autodetect)?;
    if v4 == Setting::None {
        return Err(node::Error::Setting {
            name: "IP".into(),
            value: "none".into(),
            reason: "tabby nodes need an IPv4 address".into(),
        });
    }
    let v4_method = args.ip_autodetection_method.parse::<Method>()?;
    let found = autodetect::resolve(&v4, &v4_method, Family::V4)?.expect("IPv4 is never none here");
    let v6 = Setting::parse("IP6", args.ip6.as_deref(), Family::V6, Setting::None)?;
    let v6_method = args.ip6_autodetection_method.parse::<Method>()?;
    let ipv6 = match autodetect::resolve(&v6, &v6_method, Family::V6)? {
        Some(a) => match a.addr {
            ipnet::IpNet::V6(n) => Some(n),
            ipnet::IpNet::V4(_) => unreachable!("resolve returns the family asked for"),
        },
        None => None,
    };
    let ipv4 = match found.addr {
        ipnet::IpNet::V4(n) => n,
        ipnet::IpNet::V6(_) => unreachable!("resolve returns the family asked for"),
    };
    let underlay_dev = match args.underlay_dev {
        Some(d) => d,
        None if !found.iface.is_empty() => found.iface.clone(),
        None => {
            return Err(node::Error::Setting {
                name: "IP".into(),
                value: found.addr.to_string(),
                reason: "no local interface holds this address: set --underlay-dev".into(),
            });
        }
    };
    info!(node = %node_name, address = %found.addr, ipv6 = ?ipv6, interface = %found.iface, "node address");
    Ok(NodeConfig {
        mtu_file: Some(args.state_dir.join("mtu")),
        node_name,
        state_dir: args.state_dir,
        ipv4,
        ipv6,
        underlay_dev,
        as_number: startup::as_number_from_env(&env)?,
        default_pool: DefaultPool::from_env(&env)?,
        health_listen: args.health_listen,
        metrics_listen: args.metrics_listen,
        control_socket: args.control_socket,
        ipam_gc: (args.ipam_gc_grace_seconds > 0).then(|| {
            (
                std::time::Duration::from_secs(args.ipam_gc_grace_seconds),
                std::time::Duration::from_secs(args.ipam_gc_interval_seconds.max(1)),
            )
        }),
    })
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let datastore = args.datastore.clone();
    let secrets = args.bgp_secrets_dir.clone();
    let cfg = config(args)?;
    let ds = datastore::open(&datastore)?;
    if std::env::var_os("TABBY_CNI_KUBECONFIG_REFRESH").is_some_and(|v| v == "true") {
        tokio::spawn(refresh_cni_kubeconfig());
    }
    agent::startup(&ds, &cfg).await?;
    let updates = agent::config_source(ds.clone(), cfg.node_name.clone(), secrets);
    agent::run(ds, cfg, updates, agent::shared_snapshot()).await?;
    Ok(())
}

/// The install-cni settings, all from the environment the chart gives both containers.
#[derive(Parser)]
struct CniEnv {
    #[command(flatten)]
    install: node::install_cni::InstallCniArgs,
}

/// Keeps the CNI plugin's kubeconfig token current (`TABBY_CNI_KUBECONFIG_REFRESH=true`).
async fn refresh_cni_kubeconfig() {
    let args = match CniEnv::try_parse_from(["tabby-node"]) {
        Ok(a) => a.install,
        Err(e) => {
            error!("CNI kubeconfig refresh is off: {e}");
            return;
        }
    };
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        every.tick().await;
        match node::install_cni::refresh_kubeconfig(&args) {
            Ok(true) => info!("CNI kubeconfig rewritten with the current service-account token"),
            Ok(false) => {}
            Err(e) => warn!("refreshing the CNI kubeconfig: {e}"),
        }
    }
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
    let mut args = Args::parse();
    if let Some(Command::InstallCni(a)) = args.command.take() {
        return match node::install_cni::install(&a) {
            Ok(done) => {
                info!(?done, "CNI plugin installed");
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
