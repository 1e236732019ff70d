//! The felix agent: one task that owns the calculation and every manager.
//!
//! ```text
//!  node agent (datastore watch, BGP speaker)
//!        │ AgentMsg::Input(Input) / InSync            (mpsc, bounded)
//!        ▼
//!  ┌──────────────── agent task ─────────────────┐
//!  │ Calculator::apply ──▶ Desired               │     link dump ──▶ InterfaceMtu inputs
//!  │        │ (only once InSync has arrived)     │
//!  │        ▼ one pass, in dependency order:     │
//!  │   devices up (tunl0, vxlan.calico) →        │──▶ kernel (rtnetlink, /proc/sys, nft)
//!  │   sysctls → neighbours/FDB → routes →       │
//!  │   devices down → nft → MTU file             │
//!  └─────────────────────────────────────────────┘
//!        ▲ queue_resync on all managers                 │ Status (watch)
//!        │                                              ▼
//!  resync timer (routeRefreshInterval)           tests, health endpoint
//!  netlink multicast: link, addr, route (ours), neigh (permanent); IPv4 and IPv6
//!        └──▶ debounce (50 ms) ──▶ resync
//!  sysctl check timer (1 s) ──▶ sysctls only
//! ```
//!
//! Nothing is removed before the first `InSync`: a restarting felix keeps the kernel as it was
//! until it knows the whole desired state, and a datastore outage (no inputs) changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::NetlinkPayload;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::calc::{Calculator, Input, LocalNode};
use crate::links::{LinkManager, LinkPhase};
use crate::model::{IPIP_DEVICE, RouteTarget, VXLAN_DEVICE, WORKLOAD_PREFIX};
use crate::mtu::{DEFAULT_MTU_FILE, write_mtu_file};
use crate::neigh::NeighManager;
use crate::netlink::{Netlink, link_mtu, link_name};
use crate::nft::NftManager;
use crate::routes::{NetlinkRoutes, RouteManager, RouteStats, resolve_gateways};
use crate::sysctl::{ProcSys, SysctlManager};
use crate::{Error, PROTO_TABBY};

/// How long the agent waits after a netlink event for more before it resyncs.
pub const REPAIR_DEBOUNCE: Duration = Duration::from_millis(50);

/// How often the sysctls alone are re-read. Writing `/proc/sys` raises no netlink event that
/// rtnetlink can decode (netconf messages are not parsed by netlink-packet-route 0.34), so a
/// cheap poll of a few files per pod is what repairs `proxy_arp=0` or `forwarding=0` at once.
pub const SYSCTL_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What the node agent sends felix.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // Inputs are the common case; boxing them buys nothing.
pub enum AgentMsg {
    Input(Input),
    /// Every resource has been sent once: felix may now remove what is not desired.
    InSync,
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub local: LocalNode,
    /// `None`: do not write an MTU file.
    pub mtu_file: Option<PathBuf>,
    /// Overrides FelixConfiguration `routeRefreshInterval`.
    pub resync_interval: Option<Duration>,
}

impl AgentConfig {
    pub fn new(local: LocalNode) -> Self {
        AgentConfig {
            local,
            mtu_file: Some(PathBuf::from(DEFAULT_MTU_FILE)),
            resync_interval: None,
        }
    }
}

/// What the agent reports after each pass.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// Apply passes completed since start.
    pub passes: u64,
    /// Passes triggered by a netlink event or the timer rather than an input.
    pub resyncs: u64,
    pub routes: RouteStats,
    pub last_error: Option<String>,
    pub in_sync: bool,
}

/// The channel ends the node agent holds.
pub struct AgentHandle {
    pub tx: mpsc::Sender<AgentMsg>,
    pub status: watch::Receiver<Status>,
}

/// Creates the channels; run [`run`] with the other ends on the runtime that owns the
/// network namespace felix should program.
pub fn channels() -> (AgentHandle, mpsc::Receiver<AgentMsg>, watch::Sender<Status>) {
    let (tx, rx) = mpsc::channel(1024);
    let (stx, srx) = watch::channel(Status::default());
    (AgentHandle { tx, status: srx }, rx, stx)
}

/// Parses a Calico duration (`90s`, `1m30s`, `500ms`, `2h`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = s.trim().chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'h' => 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(n * unit);
        any = true;
    }
    if !num.is_empty() {
        return None;
    }
    any.then_some(total)
}

struct Dataplane {
    nl: Netlink,
    links: LinkManager,
    routes: RouteManager<NetlinkRoutes>,
    neigh: NeighManager,
    sysctls: SysctlManager<ProcSys>,
    nft: NftManager,
    mtu_file: Option<PathBuf>,
    /// Host interfaces whose MTU we last fed to the calculation.
    known_mtus: BTreeMap<String, u32>,
}

impl Dataplane {
    fn queue_resync(&mut self) {
        self.links.queue_resync();
        self.routes.queue_resync();
        self.neigh.queue_resync();
        self.nft.queue_resync();
        self.sysctls.queue_resync();
    }

    /// One pass over every table. Errors in one table do not stop the others.
    async fn apply(&mut self, calc: &mut Calculator) -> Result<RouteStats, Error> {
        let mut links = self.nl.links().await?;
        // Feed underlay MTUs into the calculation (our own devices and workloads excluded).
        let mut mtus = BTreeMap::new();
        for l in &links {
            if let (Some(n), Some(m)) = (link_name(l), link_mtu(l))
                && n != "lo"
                && n != IPIP_DEVICE
                && n != VXLAN_DEVICE
                && !n.starts_with(WORKLOAD_PREFIX)
            {
                mtus.insert(n.to_string(), m);
            }
        }
        if mtus != self.known_mtus {
            let gone: BTreeSet<_> = self
                .known_mtus
                .keys()
                .filter(|k| !mtus.contains_key(*k))
                .cloned()
                .collect();
            for g in gone {
                calc.apply(Input::InterfaceMtu(g, None));
            }
            for (k, v) in &mtus {
                calc.apply(Input::InterfaceMtu(k.clone(), Some(*v)));
            }
            self.known_mtus = mtus;
        }
        let d = calc.desired();
        let mut first_err: Option<Error> = None;
        let mut note = |what: &str, e: Error| {
            warn!(error = %e, "{what}");
            first_err.get_or_insert(e);
        };

        self.links.set_desired(&d.devices);
        match self.links.apply(&links, LinkPhase::Ensure).await {
            Ok(true) => links = self.nl.links().await?,
            Ok(false) => {}
            Err(e) => note("creating or updating tunnel devices", e),
        }
        let ifindex: BTreeMap<String, u32> = links
            .iter()
            .filter_map(|l| Some((link_name(l)?.to_string(), l.header.index)))
            .collect();

        self.sysctls.set_desired(&d.sysctls);
        if let Err(e) = self.sysctls.apply() {
            note("reconciling sysctls", e);
        }

        self.neigh.set_interfaces(&ifindex);
        self.neigh.set_desired(&d.neighbours, &d.fdb);
        if let Err(e) = self.neigh.apply().await {
            note("reconciling neighbours", e);
        }

        let off_link: BTreeSet<IpAddr> = d
            .routes
            .values()
            .filter_map(|t| match t {
                RouteTarget::Via {
                    gw, onlink: false, ..
                } => Some(*gw),
                _ => None,
            })
            .collect();
        let recursive = resolve_gateways(&self.nl, off_link).await;
        self.routes.set_recursive(&recursive);
        self.routes.set_interfaces(&ifindex);
        self.routes.set_desired(&d.routes);
        let stats = match self.routes.apply().await {
            Ok(s) => s,
            Err(e) => {
                note("reconciling routes", e);
                RouteStats::default()
            }
        };

        // Devices no longer wanted go only now that no route of ours points at them.
        if let Err(e) = self.links.apply(&links, LinkPhase::Remove).await {
            note("removing tunnel devices", e);
        }

        self.nft.set_desired(&d.nat);
        if let Err(e) = self.nft.apply() {
            note("reconciling nft table", e);
        }

        if let Some(path) = &self.mtu_file
            && let Err(e) = write_mtu_file(path, d.pod_mtu)
        {
            note(
                "writing the MTU file",
                Error::Io {
                    what: format!("writing {}", path.display()),
                    source: e,
                },
            );
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }
}

/// Whether a netlink notification can mean drift in something felix owns.
fn relevant(msg: &RouteNetlinkMessage) -> bool {
    match msg {
        RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => {
            u8::from(r.header.protocol) == PROTO_TABBY
        }
        RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n) => {
            use netlink_packet_route::neighbour::NeighbourState;
            // Learned entries come and go all the time; ours are permanent.
            n.header.state == NeighbourState::Permanent
                || matches!(msg, RouteNetlinkMessage::DelNeighbour(_))
        }
        _ => true,
    }
}

/// Runs felix until the input channel closes. Must run on a runtime whose I/O happens on threads
/// in the network namespace to program (a current-thread runtime on a thread that `setns`ed).
pub async fn run(
    cfg: AgentConfig,
    mut rx: mpsc::Receiver<AgentMsg>,
    status: watch::Sender<Status>,
) -> Result<(), Error> {
    let nl = Netlink::connect()?;
    let (conn, _, mut events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv6Route,
        MulticastGroup::Neigh,
    ])
    .map_err(Error::Socket)?;
    tokio::spawn(conn);

    let mut calc = Calculator::new(cfg.local.clone());
    let mut dp = Dataplane {
        links: LinkManager::new(nl.clone()),
        routes: RouteManager::new(NetlinkRoutes::new(nl.clone())),
        neigh: NeighManager::new(nl.clone()),
        sysctls: SysctlManager::new(ProcSys::default()),
        nft: NftManager::new(),
        mtu_file: cfg.mtu_file.clone(),
        known_mtus: BTreeMap::new(),
        nl,
    };
    let interval_for = |c: &Calculator| {
        cfg.resync_interval.unwrap_or_else(|| {
            c.config()
                .route_refresh_interval
                .as_deref()
                .and_then(parse_duration)
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(90))
        })
    };
    let mut interval = interval_for(&calc);
    let mut next_resync = Instant::now() + interval;
    let mut repair_at: Option<Instant> = None;
    let mut in_sync = false;
    let mut next_sysctl_check = Instant::now() + SYSCTL_CHECK_INTERVAL;
    info!(node = %cfg.local.name, "felix starting");

    loop {
        let mut work = false;
        let mut resync = false;
        tokio::select! {
            msg = rx.recv() => {
                let Some(first) = msg else { break };
                let mut next = Some(first);
                while let Some(m) = next {
                    match m {
                        AgentMsg::Input(i) => work |= calc.apply(i),
                        AgentMsg::InSync => {
                            work |= !in_sync;
                            in_sync = true;
                        }
                    }
                    next = rx.try_recv().ok();
                }
            }
            Some((ev, _)) = events.next() => {
                if let NetlinkPayload::InnerMessage(m) = &ev.payload
                    && relevant(m)
                    && repair_at.is_none()
                {
                    repair_at = Some(Instant::now() + REPAIR_DEBOUNCE);
                }
            }
            _ = sleep_until(repair_at.unwrap_or(next_resync)), if repair_at.is_some() => {
                repair_at = None;
                resync = true;
            }
            _ = sleep_until(next_resync) => {
                next_resync = Instant::now() + interval;
                resync = true;
            }
            _ = sleep_until(next_sysctl_check) => {
                next_sysctl_check = Instant::now() + SYSCTL_CHECK_INTERVAL;
                dp.sysctls.queue_resync();
                if in_sync && let Err(e) = dp.sysctls.apply() {
                    debug!(error = %e, "sysctl check");
                }
            }
        }
        let new_interval = interval_for(&calc);
        if new_interval != interval {
            interval = new_interval;
            next_resync = Instant::now() + interval;
        }
        if !in_sync || !(work || resync) {
            continue;
        }
        if resync {
            dp.queue_resync();
        }
        let pass = status.borrow().passes + 1;
        let res = dp
            .apply(&mut calc)
            .instrument(info_span!("pass", n = pass, resync))
            .await;
        status.send_modify(|s| {
            s.passes += 1;
            s.resyncs += u64::from(resync);
            s.in_sync = in_sync;
            match &res {
                Ok(r) => {
                    s.routes = *r;
                    s.last_error = None;
                }
                Err(e) => s.last_error = Some(e.to_string()),
            }
        });
        if let Err(e) = res {
            debug!(error = %e, "pass finished with errors; retrying at the next resync");
            // Retry sooner than the full interval.
            next_resync = next_resync.min(Instant::now() + Duration::from_secs(1));
        }
    }
    info!("input channel closed: felix stops, leaving the dataplane as it is");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration(""), None);
    }
}
