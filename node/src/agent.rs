//! The wiring: one process, these tasks and channels.
//!
//! ```text
//!  datastore ──list+watch──▶ confd::watch ──ConfdUpdate (mpsc)──┐
//!      │                                                         ▼
//!      │            ┌──────────────────────── main loop (select!) ─────────────────────────┐
//!      │            │ Speaker(cfg) ──▶ Speaker::start_with / replace_config                │
//!      │            │ Felix(inputs), InSync ───────────────┐                               │
//!      │            │ best paths ──▶ Input::BgpRoute ──────┼──AgentMsg (mpsc)──▶ felix agent ──▶ kernel
//!      │            │ felix Status (watch) ──┐             │                       (calc +   │
//!      │            │ status tick (2 s) ─────┼──▶ Snapshot (Arc<Mutex>)            managers) │
//!      │            │ SIGTERM / SIGINT ──▶ exit(0)   ▲                                     │
//!      │            └────────────────────────────────┼─────────────────────────────────────┘
//!      │   BGP speaker ◀──Speaker clone── control socket ◀── tabbyctl node status / routes
//!      │     │ Vec<BestChange> (mpsc) ──▶ main loop  │
//!      │     └─ status_report ───────────────────────┤
//!      ├──IPPool watch──▶ tunnel task ──▶ IPAM + Node (tunnel addresses, VTEP MAC)
//!      └──every 10 s───▶ IPAM usage task ────────────┤
//!                                                    ▼
//!                           HTTP responder: /liveness /readiness /metrics
//! ```
//!
//! Shutdown (SIGTERM, SIGINT): the process exits with status 0 without a word to anyone.
//! felix stops where it is (it never removes kernel state on the way out), and no BGP session
//! is closed with a NOTIFICATION: the kernel closes the TCP connections, which an RFC 4724 §4.2
//! helper (every tabby node, BIRD with `graceful restart`) treats as a graceful restart, keeping
//! our routes, marked stale, for the Restart Time we advertised (confd renders it, 120 s by
//! default). The restart marker (`tabby-node.running` beside the control socket) stays, so the
//! next start sets the Restart State bit and peers keep those routes until our End-of-RIB. The
//! run directory is a tmpfs: after a reboot, which loses the kernel routes too, the bit is clear.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bgp::config::Config as SpeakerConfig;
use bgp::speaker::{BestChange, Speaker, SpeakerOptions};
use confd::watch::{ConfdUpdate, RenderOptions};
use datastore::Datastore;
use felix::Input;
use felix::agent::{AgentConfig, AgentMsg};
use ipnet::{Ipv4Net, Ipv6Net};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::Error;
use crate::metrics::{self, Shared, Snapshot};
use crate::startup;

/// How often the speaker's status is read into the snapshot.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(2);
/// How often IPAM usage is read for `/metrics`.
pub const IPAM_INTERVAL: Duration = Duration::from_secs(10);
/// The restart marker's file name, beside the control socket.
pub const RESTART_MARKER: &str = "tabby-node.running";

/// Everything tabby-node runs with, resolved from flags and environment.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_name: String,
    pub state_dir: PathBuf,
    /// The detected (or given) node address with its prefix length.
    pub ipv4: Ipv4Net,
    /// The node's IPv6 address (`IP6`), if it has one.
    pub ipv6: Option<Ipv6Net>,
    pub underlay_dev: String,
    pub as_number: Option<u32>,
    pub default_pool: startup::DefaultPool,
    pub health_listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub control_socket: PathBuf,
    /// felix writes the pod MTU here for the CNI plugin (`<state_dir>/mtu`).
    pub mtu_file: Option<PathBuf>,
    /// Free pod addresses whose pod is gone: (grace period, interval); `None`: off.
    pub ipam_gc: Option<(Duration, Duration)>,
}

/// Does the one-time startup work: node-name file, default pool, Node resource, tunnel
/// addresses. Errors here stop the node (as calico-node's startup does).
pub async fn startup(ds: &Arc<dyn Datastore>, cfg: &NodeConfig) -> Result<(), Error> {
    startup::write_nodename(&cfg.state_dir, &cfg.node_name)?;
    startup::ensure_default_pool(ds.as_ref(), &cfg.default_pool).await?;
    startup::ensure_node(
        ds.as_ref(),
        &cfg.node_name,
        cfg.ipv4,
        cfg.ipv6,
        cfg.as_number,
    )
    .await?;
    startup::reconcile_tunnels(ds, &cfg.node_name).await?;
    Ok(())
}

/// Whether a datastore change can change which tunnel addresses this node needs: any IPPool
/// change, or a change of this node's labels (pool node selectors). Our own tunnel-address
/// writes to the Node do not count, or each would trigger the next.
pub fn tunnel_relevant(
    ev: &datastore::WatchEvent,
    node: &str,
    labels: &mut Option<std::collections::BTreeMap<String, String>>,
) -> bool {
    match ev.resource() {
        api::Resource::IPPool(_) => true,
        api::Resource::Node(n) if n.metadata.name == node => {
            let now = match ev {
                datastore::WatchEvent::Deleted { .. } => None,
                _ => Some(n.metadata.labels.clone()),
            };
            let changed = *labels != now;
            *labels = now;
            changed
        }
        _ => false,
    }
}

/// Re-runs [`startup::reconcile_tunnels`] whenever [`tunnel_relevant`] says so; a failure is
/// retried after a second.
async fn tunnel_task(ds: Arc<dyn Datastore>, node: String) {
    let retry = || tokio::time::sleep(Duration::from_secs(1));
    loop {
        let (after, mut labels) = match ds.list(api::Kind::Node).await {
            Ok(l) => {
                let labels = l.items.iter().find_map(|r| match r {
                    api::Resource::Node(n) if n.metadata.name == node => {
                        Some(n.metadata.labels.clone())
                    }
                    _ => None,
                });
                (l.revision, labels)
            }
            Err(e) => {
                warn!(error = %e, "listing Nodes for tunnel addresses");
                retry().await;
                continue;
            }
        };
        if let Err(e) = startup::reconcile_tunnels(&ds, &node).await {
            warn!(error = %e, "reconciling tunnel addresses");
            retry().await;
            continue;
        }
        let mut w = match ds.watch(None, after).await {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "watching IPPools and Nodes");
                retry().await;
                continue;
            }
        };
        loop {
            match w.next().await {
                Some(Ok(ev)) => {
                    if !tunnel_relevant(&ev, &node, &mut labels) {
                        continue;
                    }
                    // A switch between modes often comes as a few writes: let them land.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while let Ok(Some(Ok(ev))) =
                        tokio::time::timeout(Duration::from_millis(1), w.next()).await
                    {
                        tunnel_relevant(&ev, &node, &mut labels);
                    }
                    if let Err(e) = startup::reconcile_tunnels(&ds, &node).await {
                        warn!(error = %e, "reconciling tunnel addresses");
                        break;
                    }
                }
                Some(Err(e)) => {
                    debug!(error = %e, "watch ended: re-listing");
                    break;
                }
                None => break,
            }
        }
        retry().await;
    }
}

/// Reads IPAM usage of this node into the snapshot now and then.
async fn ipam_task(ds: Arc<dyn Datastore>, node: String, shared: Shared) {
    loop {
        match startup::ipam_usage(&ds, &node).await {
            Ok((blocks, addrs)) => {
                let mut s = shared.lock().expect("snapshot lock");
                s.ipam_blocks = Some(blocks);
                s.ipam_addresses = Some(addrs);
            }
            Err(e) => debug!(error = %e, "reading IPAM usage"),
        }
        tokio::time::sleep(IPAM_INTERVAL).await;
    }
}

/// Folds a felix status into the snapshot: route counters add up over passes (felix reports
/// only the last pass), and the first pass after inputs were sent closes a convergence
/// measurement. Passes a watch coalesced are counted once.
pub fn record_felix_status(
    s: &mut Snapshot,
    st: felix::agent::Status,
    last_passes: &mut u64,
    pending_since: &mut Option<Instant>,
) {
    if st.passes > *last_passes {
        s.routes_replaced += st.routes.replaced as u64;
        s.routes_deleted += st.routes.deleted as u64;
        s.routes_failed += st.routes.failed as u64;
        *last_passes = st.passes;
        if st.in_sync
            && let Some(t) = pending_since.take()
        {
            s.convergence.observe(t.elapsed());
        }
    }
    s.felix = st;
}

/// felix inputs for a batch of best-path changes: remote paths become routes; our own
/// origination (and withdrawn prefixes) remove the BGP route.
pub fn bgp_inputs(changes: Vec<BestChange>) -> Vec<Input> {
    changes
        .into_iter()
        .map(|c| {
            let hops = if c.local {
                Vec::new()
            } else {
                c.next_hops.into()
            };
            Input::BgpRoute(c.prefix, hops)
        })
        .collect()
}

/// Binds the health and metrics listeners (one when they are the same address).
async fn serve_http(cfg: &NodeConfig, shared: &Shared) -> Result<(), Error> {
    let mut addrs = vec![cfg.health_listen];
    if cfg.metrics_listen != cfg.health_listen {
        addrs.push(cfg.metrics_listen);
    }
    for a in addrs {
        let l = TcpListener::bind(a).await.map_err(|source| Error::Io {
            what: format!("binding the health/metrics listener on {a}"),
            source,
        })?;
        info!(listen = %a, "serving /liveness /readiness /metrics");
        tokio::spawn(metrics::serve(l, shared.clone()));
    }
    Ok(())
}

/// The running pieces the main loop owns.
struct Running {
    speaker: Option<Speaker>,
    control: Option<bgp::control::Server>,
    best: Option<mpsc::UnboundedReceiver<Vec<BestChange>>>,
    felix: mpsc::Sender<AgentMsg>,
    /// When felix was last given inputs it has not applied yet.
    pending_since: Option<Instant>,
    /// A speaker config that could not be applied (say, port 179 still taken): retried on
    /// every status tick until it is, or until confd sends a newer one.
    failed_config: Option<SpeakerConfig>,
}

impl Running {
    async fn send_felix(&mut self, inputs: Vec<Input>) {
        if inputs.is_empty() {
            return;
        }
        self.pending_since.get_or_insert_with(Instant::now);
        for i in inputs {
            if self.felix.send(AgentMsg::Input(i)).await.is_err() {
                error!("felix has stopped");
                return;
            }
        }
    }

    async fn speaker_config(
        &mut self,
        cfg: SpeakerConfig,
        control_socket: &std::path::Path,
        restarting: bool,
    ) -> Result<(), Error> {
        if let Some(s) = &self.speaker {
            return Ok(s.replace_config(cfg).await?);
        }
        let options = SpeakerOptions {
            restarting,
            export: None,
        };
        let speaker = Speaker::start_with(cfg, options).await?;
        self.best = Some(speaker.best_paths().await?);
        match bgp::control::serve(control_socket, speaker.clone()) {
            Ok(server) => {
                info!(socket = %control_socket.display(), "control socket ready");
                self.control = Some(server);
            }
            // The node works without it; `tabbyctl node status` will say no socket.
            Err(e) => error!("{e}"),
        }
        self.speaker = Some(speaker);
        Ok(())
    }
}

/// Runs the node until SIGTERM or SIGINT (then the process exits 0, see the module docs).
/// `updates` is the configuration source (confd's watch loop); `shared` is what the HTTP
/// endpoints read.
pub async fn run(
    ds: Arc<dyn Datastore>,
    cfg: NodeConfig,
    mut updates: mpsc::Receiver<ConfdUpdate>,
    shared: Shared,
) -> Result<(), Error> {
    let mut term = signal(SignalKind::terminate()).map_err(|source| Error::Io {
        what: "installing the SIGTERM handler".into(),
        source,
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|source| Error::Io {
        what: "installing the SIGINT handler".into(),
        source,
    })?;
    shared.lock().expect("snapshot lock").node = cfg.node_name.clone();
    serve_http(&cfg, &shared).await?;

    let marker = cfg
        .control_socket
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(RESTART_MARKER);
    let restarting = marker.exists();
    if let Some(dir) = marker.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&marker, format!("{}\n", std::process::id())) {
        warn!(marker = %marker.display(), error = %e, "writing the restart marker");
    }
    if restarting {
        info!(
            marker = %marker.display(),
            "restart marker found: the last run ended without a reboot and the kernel kept its routes; restarting gracefully (RFC 4724 R bit)"
        );
    }

    let (handle, felix_rx, felix_status) = felix::agent::channels();
    let mut fcfg = AgentConfig::new(felix::LocalNode {
        name: cfg.node_name.clone(),
        underlay_dev: cfg.underlay_dev.clone(),
    });
    fcfg.mtu_file = cfg.mtu_file.clone();
    tokio::spawn(async move {
        if let Err(e) = felix::agent::run(fcfg, felix_rx, felix_status).await {
            error!("felix stopped: {e}");
        }
    });
    tokio::spawn(tunnel_task(ds.clone(), cfg.node_name.clone()));
    tokio::spawn(ipam_task(ds.clone(), cfg.node_name.clone(), shared.clone()));
    if let Some((grace, interval)) = cfg.ipam_gc {
        tokio::spawn(crate::ipam_gc::run(
            ds.clone(),
            cfg.node_name.clone(),
            grace,
            interval,
        ));
    }

    let mut status = handle.status.clone();
    let mut run = Running {
        speaker: None,
        control: None,
        best: None,
        felix: handle.tx.clone(),
        pending_since: None,
        failed_config: None,
    };
    let mut last_passes = 0;
    let mut status_tick = tokio::time::interval(STATUS_INTERVAL);
    let mut updates_open = true;
    loop {
        tokio::select! {
            u = updates.recv(), if updates_open => match u {
                Some(ConfdUpdate::Speaker(c)) => {
                    shared.lock().expect("snapshot lock").configured_peers = c.peers.len();
                    if let Err(e) = run.speaker_config((*c).clone(), &cfg.control_socket, restarting).await {
                        error!("applying the BGP configuration (retrying every {STATUS_INTERVAL:?}): {e}");
                        run.failed_config = Some(*c);
                    } else {
                        run.failed_config = None;
                    }
                    status_tick.reset_immediately();
                }
                Some(ConfdUpdate::Felix(inputs)) => run.send_felix(inputs).await,
                Some(ConfdUpdate::InSync) => {
                    run.pending_since.get_or_insert_with(Instant::now);
                    let _ = run.felix.send(AgentMsg::InSync).await;
                    shared.lock().expect("snapshot lock").confd_in_sync = true;
                    info!("datastore in sync");
                }
                None => {
                    warn!("the configuration source stopped: running on with the last state");
                    updates_open = false;
                }
            },
            Some(batch) = async { run.best.as_mut()?.recv().await }, if run.best.is_some() => {
                run.send_felix(bgp_inputs(batch)).await;
            }
            Ok(()) = status.changed() => {
                let st = status.borrow_and_update().clone();
                let mut s = shared.lock().expect("snapshot lock");
                record_felix_status(&mut s, st, &mut last_passes, &mut run.pending_since);
            }
            _ = status_tick.tick() => {
                if let Some(c) = run.failed_config.take()
                    && let Err(e) = run.speaker_config(c.clone(), &cfg.control_socket, restarting).await
                {
                    debug!("applying the BGP configuration: {e}");
                    run.failed_config = Some(c);
                }
                if let Some(sp) = &run.speaker {
                    match sp.status_report().await {
                        Ok(r) => shared.lock().expect("snapshot lock").speaker = Some(r),
                        Err(e) => warn!("reading the speaker's status: {e}"),
                    }
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!(
        "stopping: kernel routes stay, BGP sessions drop without a NOTIFICATION (graceful restart)"
    );
    // The control socket goes; the restart marker stays (see the module docs).
    if let Some(c) = run.control.take() {
        c.close();
    }
    // Exit before any Speaker clone is dropped: dropping the last one would send Cease.
    std::process::exit(0);
}

/// The configuration source: confd's watch loop over the datastore.
pub fn config_source(
    ds: Arc<dyn Datastore>,
    node: String,
    secrets_dir: Option<PathBuf>,
) -> mpsc::Receiver<ConfdUpdate> {
    let (tx, rx) = mpsc::channel(64);
    let opts = RenderOptions {
        secrets_dir,
        ..RenderOptions::default()
    };
    tokio::spawn(async move {
        if let Err(e) = confd::watch::run(ds, node, opts, tx).await {
            error!("{e}");
        }
    });
    rx
}

/// A snapshot shared with the HTTP endpoints.
pub fn shared_snapshot() -> Shared {
    Arc::new(Mutex::new(Snapshot::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn felix_status_feeds_counters_and_convergence() {
        let mut s = Snapshot::default();
        let mut last = 0;
        let mut pending = Some(Instant::now());
        // Before InSync: counted, but no convergence sample yet.
        let mut st = felix::agent::Status {
            passes: 1,
            ..Default::default()
        };
        st.routes.replaced = 3;
        record_felix_status(&mut s, st.clone(), &mut last, &mut pending);
        assert_eq!(s.routes_replaced, 3);
        assert_eq!(s.convergence.count, 0);
        assert!(pending.is_some());
        // The first in-sync pass closes the measurement.
        st.passes = 2;
        st.in_sync = true;
        st.routes.replaced = 2;
        st.routes.deleted = 1;
        record_felix_status(&mut s, st.clone(), &mut last, &mut pending);
        assert_eq!((s.routes_replaced, s.routes_deleted), (5, 1));
        assert_eq!(s.convergence.count, 1);
        assert!(pending.is_none());
        // The same status again (a watch wake-up without a new pass) counts nothing.
        record_felix_status(&mut s, st, &mut last, &mut pending);
        assert_eq!(s.routes_replaced, 5);
        assert!(s.felix.in_sync);
    }

    #[test]
    fn tunnel_task_reacts_to_pools_and_own_labels_only() {
        use datastore::{Revision, WatchEvent};
        let ev = |r: api::Resource| WatchEvent::Modified {
            revision: Revision(1),
            resource: r,
        };
        let mut labels = Some(Default::default());
        let pool = api::IPPool::new("p", Default::default());
        assert!(tunnel_relevant(&ev(pool.into()), "n1", &mut labels));
        let mut n1 = api::Node::new("n1", Default::default());
        // Our own tunnel-address write: labels unchanged.
        assert!(!tunnel_relevant(&ev(n1.clone().into()), "n1", &mut labels));
        n1.metadata.labels.insert("rack".into(), "r1".into());
        assert!(tunnel_relevant(&ev(n1.clone().into()), "n1", &mut labels));
        assert!(!tunnel_relevant(&ev(n1.into()), "n1", &mut labels));
        let mut n2 = api::Node::new("n2", Default::default());
        n2.metadata.labels.insert("rack".into(), "r2".into());
        assert!(!tunnel_relevant(&ev(n2.into()), "n1", &mut labels));
    }

    #[test]
    fn best_paths_become_bgp_routes() {
        let got = bgp_inputs(vec![
            BestChange {
                prefix: "198.18.1.0/26".parse().unwrap(),
                next_hops: vec!["192.0.2.12".parse().unwrap()].into(),
                local: false,
            },
            BestChange {
                prefix: "198.18.0.0/26".parse().unwrap(),
                next_hops: Vec::new().into(),
                local: true,
            },
            BestChange {
                prefix: "198.18.2.0/26".parse().unwrap(),
                next_hops: Vec::new().into(),
                local: false,
            },
        ]);
        assert_eq!(
            got,
            vec![
                Input::BgpRoute(
                    "198.18.1.0/26".parse().unwrap(),
                    vec!["192.0.2.12".parse().unwrap()]
                ),
                Input::BgpRoute("198.18.0.0/26".parse().unwrap(), vec![]),
                Input::BgpRoute("198.18.2.0/26".parse().unwrap(), vec![]),
            ]
        );
    }
}
