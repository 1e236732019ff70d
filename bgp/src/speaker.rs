//! The speaker: the library API tabby-node and `tabby-bgpd` use. It binds the shared
//! [`Listener`], runs one [`Session`] per configured peer and owns the [`Rib`] in one task,
//! which carries out what the RIB returns (see the top of [`crate::rib`]).
//!
//! ```text
//!  Speaker (Clone; tabby-node, control server)
//!     │ mpsc Request: replace_config / originate / withdraw /
//!     │               best_paths / status / routes / shutdown
//!     ▼
//!  ┌──────────────────────┐  SessionHandle: send(UPDATEs), automatic_stop   ┌──────────────┐
//!  │ speaker task         │ ───────────────────────────────────────────────▶│ session task │
//!  │  Rib                 │                                                 │ (one a peer) │
//!  │  peers by (addr,port)│ ◀── mpsc (PeerId, SessionEvent) ── forwarder ◀──│              │
//!  │  stale timers        │         (one a session: tags events)            └──────────────┘
//!  └──────────────────────┘                                                          ▲
//!     │ mpsc Vec<BestChange> (Loc-RIB snapshot first)         Listener ── Incoming ──┘
//!     ▼                                                      (accepted TCP, by source address)
//!  best_paths() subscribers (felix)
//! ```
//!
//! - Peers are keyed by (address, port). [`Speaker::replace_config`] diffs the peer lists:
//!   a removed peer's session is stopped (Cease 6/3), an added one is spawned, a changed one
//!   is restarted; the other sessions are not touched. A change of a speaker-wide setting
//!   (ASN, router id, cluster id, pools, listen, graceful restart) restarts everything.
//! - Each session gets a fresh [`PeerId`] and a forwarder task that tags its events with it,
//!   so late events of a session that was replaced are recognised and ignored.
//! - Graceful restart, helper side (RFC 4724 §4.2): when a session with a peer that
//!   advertised the capability drops without a NOTIFICATION, its routes stay as stale for its
//!   Restart Time; once it is back, for at most [`STALE_PATH_TIME`] until its End-of-RIB.
//! - Graceful restart, restarting side (RFC 4724 §4.1): sessions advertise the capability
//!   with the Forwarding State bit set (felix keeps BGP routes when the speaker dies); with
//!   [`SpeakerOptions::restarting`] the sessions spawned at start also set the Restart State
//!   bit. Every initial advertisement ends with End-of-RIB per family ([`Rib::peer_up`]).
//!   Whether the speaker restarted is the caller's knowledge: `tabby-bgpd` keeps a marker
//!   file (see the binary).
//! - Limits: the [`Listener`] hands incoming connections to peers by source address only,
//!   so of two peers on one address (different ports) only the last registered gets them;
//!   the RIB's import policy (its protected addresses) is the one of the config the speaker
//!   started with until a speaker-wide change; a session's local address is its only next
//!   hop for next-hop-self, so IPv6 routes over an IPv4 session (and the reverse) cannot be
//!   sent with our next hop.
//! - Max-prefix with action stop sends the Cease and leaves the session down
//!   (AutomaticStop) until the next [`Speaker::replace_config`] (tabby-bgpd: SIGHUP), which
//!   starts it again, with the new limit if it changed.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{Config, PeerConfig};
use crate::fsm::{Cease, CeaseSubcode, DownReason, State};
use crate::packet::{AfiSafi, AsPath, NotificationError, Origin, RouteRefreshSubtype, SegmentType};
pub use crate::rib::NextHops;
use crate::rib::{
    self, LocalConfig, PeerAction, PeerId, PeerInfo, Rib, RibChanges, RouteSource, to_ipnet,
};
use crate::session::{
    self, Listener, Session, SessionEvent, SessionEventKind, SessionHandle, SessionStatus,
};

/// How long a peer that came back from a graceful restart may take to send its End-of-RIB
/// before its remaining stale routes are dropped (BIRD's default too).
pub const STALE_PATH_TIME: Duration = Duration::from_secs(360);

/// Session events queued per session before the session waits for the speaker.
const SESSION_EVENT_QUEUE: usize = 256;

/// Errors of the speaker API.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("binding the BGP listener on {addrs:?}: {source}")]
    Bind {
        addrs: Vec<SocketAddr>,
        #[source]
        source: std::io::Error,
    },
    #[error("registering peer {peer} with the listener (TCP MD5 key): {source}")]
    Register {
        peer: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the speaker task has ended")]
    Gone,
}

/// Settings of a speaker that are not in its [`Config`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpeakerOptions {
    /// The speaker restarted while its forwarding state was kept (RFC 4724 §4.1): set the
    /// Restart State bit in the OPENs of the sessions spawned at start.
    pub restarting: bool,
    /// What may be announced to eBGP peers; `None`: everything the advertisement rules allow.
    pub export: Option<crate::policy::ExportPolicy>,
}

/// A change of the best path of a prefix, for whoever programs forwarding (felix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BestChange {
    pub prefix: IpNet,
    /// All equal-best next hops, sorted (one inline, no allocation; a JSON list). Empty: the
    /// prefix is gone — or, when `local`, the best path is this speaker's own origination.
    pub next_hops: NextHops,
    pub local: bool,
}

impl From<rib::BestChange> for BestChange {
    fn from(c: rib::BestChange) -> Self {
        BestChange {
            prefix: to_ipnet(&c.prefix),
            next_hops: c.next_hops,
            local: c.local,
        }
    }
}

/// One peer as `tabbyctl node status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub port: u16,
    pub asn: u32,
    /// `ibgp`, `ebgp` or `rr-client` (an iBGP peer we reflect for).
    pub peer_type: String,
    /// The RFC 4271 §8 state: `Idle`, `Connect`, `Active`, `OpenSent`, `OpenConfirm`,
    /// `Established`.
    pub state: String,
    /// When `state` was entered, in seconds since the Unix epoch.
    pub since: u64,
    /// How many times the session has reached Established.
    pub established_count: u64,
    /// Why the last session or attempt ended.
    pub last_error: Option<String>,
    /// The session was stopped (max-prefix with action stop) and stays down.
    pub stopped: bool,
    /// Prefixes the peer announces (accepted + rejected).
    pub received: usize,
    /// Prefixes kept after import policy (stale ones included).
    pub accepted: usize,
    pub rejected: usize,
    /// Of `accepted`, kept as stale while the peer restarts.
    pub stale: usize,
    /// Prefixes in its Adj-RIB-Out.
    pub advertised: usize,
}

/// The speaker and its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    pub cluster_id: Option<Ipv4Addr>,
    pub listen: Vec<SocketAddr>,
    /// Prefixes in the Loc-RIB.
    pub routes: usize,
    pub peers: Vec<PeerStatus>,
}

/// One Loc-RIB entry as `tabbyctl node routes` shows it: the best path's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub prefix: IpNet,
    /// All equal-best next hops; empty for our own prefixes.
    pub next_hops: Vec<IpAddr>,
    /// Originated by this speaker.
    pub local: bool,
    /// The peer the best path came from.
    pub from: Option<IpAddr>,
    /// AS_PATH as BIRD prints it (`{…}` for sets).
    pub as_path: String,
    pub origin: String,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    /// The best path is kept for a restarting peer.
    pub stale: bool,
    /// Candidate paths for the prefix.
    pub paths: usize,
}

enum Request {
    Replace(Box<Config>, oneshot::Sender<Result<(), SpeakerError>>),
    Originate(IpNet),
    Withdraw(IpNet),
    Subscribe(oneshot::Sender<mpsc::UnboundedReceiver<Vec<BestChange>>>),
    Status(oneshot::Sender<StatusReport>),
    Routes(oneshot::Sender<Vec<Route>>),
    Shutdown(oneshot::Sender<()>),
}

/// A running speaker. Clones talk to the same task; the task ends after
/// [`Speaker::shutdown`] (or when every clone is dropped, which stops sessions with Cease
/// 6/3 without waiting).
#[derive(Clone)]
pub struct Speaker {
    tx: mpsc::UnboundedSender<Request>,
    local_addrs: Vec<SocketAddr>,
}

impl Speaker {
    /// Binds the listener, originates the configured prefixes and starts a session per peer.
    pub async fn start(config: Config) -> Result<Speaker, SpeakerError> {
        Self::start_with(config, SpeakerOptions::default()).await
    }

    /// [`Speaker::start`] with options.
    pub async fn start_with(
        config: Config,
        options: SpeakerOptions,
    ) -> Result<Speaker, SpeakerError> {
        let listener = bind(&config.listen).await?;
        let local_addrs = listener.local_addrs().to_vec();
        let (events_tx, events_rx) = mpsc::channel(SESSION_EVENT_QUEUE);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut rib = new_rib(&config, &options);
        // Best-path changes are worked out only while someone subscribes (`best_paths`):
        // a standalone tabby-bgpd has no one to give them to.
        rib.report_best_changes(false);
        let mut task = Task {
            rib,
            config: Config {
                peers: Vec::new(),
                ..config.clone()
            },
            options,
            listener,
            peers: HashMap::new(),
            by_id: HashMap::new(),
            next_id: 0,
            events_tx,
            events_rx,
            requests: rx,
            subscribers: Vec::new(),
            config_origins: BTreeSet::new(),
            api_origins: BTreeSet::new(),
        };
        task.originate_config(&config.originate);
        let restarting = task.options.restarting;
        for p in config.peers {
            task.add_peer(p, restarting)?;
        }
        info!(
            asn = task.config.asn,
            router_id = %task.config.router_id,
            listen = ?local_addrs,
            peers = task.peers.len(),
            restarting,
            "BGP speaker started"
        );
        tokio::spawn(task.run());
        Ok(Speaker { tx, local_addrs })
    }

    /// The addresses the listener is bound to (the real port when 0 was configured).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Applies a new configuration. Peers are diffed by (address, port): only removed,
    /// added and changed peers' sessions are touched.
    pub async fn replace_config(&self, config: Config) -> Result<(), SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Replace(Box::new(config), tx))?;
        rx.await.map_err(|_| SpeakerError::Gone)?
    }

    /// Announces `prefix` from this speaker (in addition to the configured ones).
    pub fn originate(&self, prefix: IpNet) -> Result<(), SpeakerError> {
        self.send(Request::Originate(prefix.trunc()))
    }

    /// Stops announcing a prefix given to [`Speaker::originate`].
    pub fn withdraw(&self, prefix: IpNet) -> Result<(), SpeakerError> {
        self.send(Request::Withdraw(prefix.trunc()))
    }

    /// A stream of best-path changes: first the whole Loc-RIB, then every change, in
    /// batches. Unbounded: a subscriber that stops reading makes the speaker buffer.
    pub async fn best_paths(
        &self,
    ) -> Result<mpsc::UnboundedReceiver<Vec<BestChange>>, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Subscribe(tx))?;
        rx.await.map_err(|_| SpeakerError::Gone)
    }

    /// Status of the speaker and each peer.
    pub async fn status_report(&self) -> Result<StatusReport, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Status(tx))?;
        rx.await.map_err(|_| SpeakerError::Gone)
    }

    /// Status of each peer, sorted by address and port.
    pub async fn status(&self) -> Result<Vec<PeerStatus>, SpeakerError> {
        Ok(self.status_report().await?.peers)
    }

    /// The Loc-RIB with next hops, sorted by prefix.
    pub async fn routes(&self) -> Result<Vec<Route>, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Routes(tx))?;
        rx.await.map_err(|_| SpeakerError::Gone)
    }

    /// Stops every session with Cease 6/2 (Administrative Shutdown), waits for the
    /// NOTIFICATIONs to go out, and ends the speaker task.
    pub async fn shutdown(&self) -> Result<(), SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Shutdown(tx))?;
        rx.await.map_err(|_| SpeakerError::Gone)
    }

    fn send(&self, r: Request) -> Result<(), SpeakerError> {
        self.tx.send(r).map_err(|_| SpeakerError::Gone)
    }
}

async fn bind(addrs: &[SocketAddr]) -> Result<Listener, SpeakerError> {
    Listener::bind(addrs)
        .await
        .map_err(|source| SpeakerError::Bind {
            addrs: addrs.to_vec(),
            source,
        })
}

/// [`bind`], retried for a second while the sockets of a dropped listener close (their
/// accept tasks are aborted, not yet gone).
async fn rebind(addrs: &[SocketAddr]) -> Result<Listener, SpeakerError> {
    let mut tries = 0;
    loop {
        match bind(addrs).await {
            Err(SpeakerError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && tries < 20 =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

fn new_rib(config: &Config, options: &SpeakerOptions) -> Rib {
    Rib::new(LocalConfig {
        asn: config.asn,
        router_id: config.router_id,
        cluster_id: config.cluster_id,
        import: config.import_policy(),
        export: options.export.clone(),
    })
}

type PeerKey = (IpAddr, u16);

fn key_of(p: &PeerConfig) -> PeerKey {
    (p.address, p.port)
}

struct Peer {
    config: PeerConfig,
    id: PeerId,
    handle: SessionHandle,
    /// The peer's Restart Time from its last OPEN, when it advertised Graceful Restart.
    restart_time: Option<u16>,
    /// When its stale routes are dropped.
    stale_deadline: Option<Instant>,
    /// Stopped for max-prefix.
    stopped: bool,
}

struct Task {
    /// The speaker-wide settings in force (`peers` is empty: see `peers`).
    config: Config,
    options: SpeakerOptions,
    listener: Listener,
    rib: Rib,
    peers: HashMap<PeerKey, Peer>,
    by_id: HashMap<PeerId, PeerKey>,
    next_id: u32,
    events_tx: mpsc::Sender<(PeerId, SessionEvent)>,
    events_rx: mpsc::Receiver<(PeerId, SessionEvent)>,
    requests: mpsc::UnboundedReceiver<Request>,
    subscribers: Vec<mpsc::UnboundedSender<Vec<BestChange>>>,
    config_origins: BTreeSet<IpNet>,
    api_origins: BTreeSet<IpNet>,
}

impl Task {
    async fn run(mut self) {
        loop {
            let deadline = self.peers.values().filter_map(|p| p.stale_deadline).min();
            tokio::select! {
                r = self.requests.recv() => match r {
                    Some(Request::Shutdown(done)) => {
                        self.stop_all(Cease::administrative_shutdown()).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(r) => self.request(r).await,
                    None => {
                        self.stop_all(Cease::new(CeaseSubcode::PeerDeconfigured)).await;
                        return;
                    }
                },
                Some((id, ev)) = self.events_rx.recv() => self.event(id, ev),
                () = sleep_until(deadline) => self.stale_timers(),
            }
        }
    }

    async fn request(&mut self, r: Request) {
        match r {
            Request::Replace(c, done) => {
                let _ = done.send(self.replace(*c).await);
            }
            Request::Originate(p) => {
                if self.api_origins.insert(p) && !self.config_origins.contains(&p) {
                    let ch = self.rib.originate(rib::from_ipnet(&p));
                    self.apply(ch, None);
                }
            }
            Request::Withdraw(p) => {
                if self.api_origins.remove(&p) && !self.config_origins.contains(&p) {
                    let ch = self.rib.withdraw_origin(rib::from_ipnet(&p));
                    self.apply(ch, None);
                }
            }
            Request::Subscribe(reply) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let snapshot: Vec<BestChange> = self
                    .rib
                    .loc_rib()
                    .map(|e| BestChange {
                        prefix: to_ipnet(&e.prefix),
                        next_hops: e.next_hops.into(),
                        local: e.best.source == RouteSource::Local,
                    })
                    .collect();
                if !snapshot.is_empty() {
                    let _ = tx.send(snapshot);
                }
                self.subscribers.push(tx);
                self.rib.report_best_changes(true);
                let _ = reply.send(rx);
            }
            Request::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Request::Routes(reply) => {
                let _ = reply.send(self.routes());
            }
            Request::Shutdown(_) => unreachable!("handled in run"),
        }
    }

    fn originate_config(&mut self, prefixes: &[IpNet]) {
        let want: BTreeSet<IpNet> = prefixes.iter().map(|p| p.trunc()).collect();
        let gone: Vec<IpNet> = self.config_origins.difference(&want).copied().collect();
        let new: Vec<IpNet> = want.difference(&self.config_origins).copied().collect();
        self.config_origins = want;
        for p in gone {
            if !self.api_origins.contains(&p) {
                let ch = self.rib.withdraw_origin(rib::from_ipnet(&p));
                self.apply(ch, None);
            }
        }
        for p in new {
            if !self.api_origins.contains(&p) {
                let ch = self.rib.originate(rib::from_ipnet(&p));
                self.apply(ch, None);
            }
        }
    }

    /// Spawns the session of a peer.
    fn add_peer(&mut self, config: PeerConfig, restarting: bool) -> Result<(), SpeakerError> {
        let incoming =
            self.listener
                .register(&config)
                .map_err(|source| SpeakerError::Register {
                    peer: config.socket_addr(),
                    source,
                })?;
        let mut local = session::LocalConfig::from_config(&self.config);
        local.restarting = restarting;
        let id = PeerId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let (tx, mut rx) = mpsc::channel(SESSION_EVENT_QUEUE);
        let handle = Session::spawn(config.clone(), local, Some(incoming), tx);
        let out = self.events_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if out.send((id, ev)).await.is_err() {
                    break;
                }
            }
        });
        let key = key_of(&config);
        self.by_id.insert(id, key);
        self.peers.insert(
            key,
            Peer {
                config,
                id,
                handle,
                restart_time: None,
                stale_deadline: None,
                stopped: false,
            },
        );
        Ok(())
    }

    /// Stops a peer's session (without waiting for it) and withdraws its routes.
    fn remove_peer(&mut self, key: PeerKey, cease: Cease) -> Option<JoinHandle<()>> {
        let p = self.peers.remove(&key)?;
        self.by_id.remove(&p.id);
        p.handle.stop(cease);
        let ch = self.rib.peer_down(p.id, false);
        self.apply(ch, None);
        Some(tokio::spawn(p.handle.shutdown()))
    }

    async fn stop_all(&mut self, cease: Cease) {
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        let waits: Vec<_> = keys
            .into_iter()
            .filter_map(|k| self.remove_peer(k, cease.clone()))
            .collect();
        for w in waits {
            let _ = w.await;
        }
    }

    async fn replace(&mut self, new: Config) -> Result<(), SpeakerError> {
        let old = &self.config;
        let global = new.asn != old.asn
            || new.router_id != old.router_id
            || new.cluster_id != old.cluster_id
            || new.pools != old.pools
            || new.listen != old.listen
            || new.graceful_restart != old.graceful_restart;
        if global {
            info!("speaker-wide settings changed: restarting every session");
            self.stop_all(Cease::new(CeaseSubcode::OtherConfigurationChange))
                .await;
            let gone: Vec<BestChange> = self
                .rib
                .loc_rib()
                .map(|e| BestChange {
                    prefix: to_ipnet(&e.prefix),
                    next_hops: NextHops::None,
                    local: false,
                })
                .collect();
            self.publish(gone);
            self.rib = new_rib(&new, &self.options);
            self.rib.report_best_changes(!self.subscribers.is_empty());
            self.config_origins.clear();
            for p in self.api_origins.clone() {
                let ch = self.rib.originate(rib::from_ipnet(&p));
                self.apply(ch, None);
            }
            if new.listen != self.config.listen {
                // Close the old sockets first: the new set may reuse an address and port.
                self.listener = bind(&[]).await?;
                self.listener = rebind(&new.listen).await?;
            }
        }
        self.config = Config {
            peers: Vec::new(),
            ..new.clone()
        };
        self.originate_config(&new.originate);

        let wanted: HashMap<PeerKey, &PeerConfig> =
            new.peers.iter().map(|p| (key_of(p), p)).collect();
        let current: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in current {
            let keep = wanted.get(&k).is_some_and(|c| **c == self.peers[&k].config);
            if keep {
                let p = self.peers.get_mut(&k).expect("listed");
                if p.stopped {
                    // A reload is how an operator brings back a session max-prefix stopped.
                    info!(peer = %k.0, port = k.1, "restarting the session stopped for max-prefix");
                    p.stopped = false;
                    p.handle.start();
                }
            } else {
                let cease = if wanted.contains_key(&k) {
                    Cease::new(CeaseSubcode::OtherConfigurationChange)
                } else {
                    Cease::new(CeaseSubcode::PeerDeconfigured)
                };
                info!(peer = %k.0, port = k.1, "peer removed or changed: stopping its session");
                // Not waited for: the session sends its Cease on its own.
                let _ = self.remove_peer(k, cease);
            }
        }
        // A restarted peer registers its address with the listener again; the old session's
        // registration is dropped by token, so the order does not matter.
        for p in new.peers {
            if !self.peers.contains_key(&key_of(&p)) {
                info!(peer = %p.address, port = p.port, "starting session");
                self.add_peer(p, false)?;
            }
        }
        Ok(())
    }

    fn event(&mut self, id: PeerId, ev: SessionEvent) {
        let Some(key) = self.by_id.get(&id).copied() else {
            return; // a session that was removed or replaced
        };
        match ev.kind {
            SessionEventKind::Established(est) => {
                let p = self.peers.get_mut(&key).expect("by_id and peers agree");
                let n = &est.negotiated;
                let mut families = Vec::new();
                if n.ipv4_unicast {
                    families.push(AfiSafi::IPV4_UNICAST);
                }
                if n.ipv6_unicast {
                    families.push(AfiSafi::IPV6_UNICAST);
                }
                let (local_v4, local_v6) = match est.local_addr.ip().to_canonical() {
                    IpAddr::V4(a) => (Some(a), None),
                    IpAddr::V6(a) => (None, Some(a)),
                };
                let restart_time = n.peer_graceful_restart.map(|g| g.restart_time);
                let info = PeerInfo {
                    addr: p.config.address,
                    asn: n.peer_asn,
                    router_id: n.peer_router_id,
                    rr_client: p.config.rr_client,
                    next_hop: p.config.next_hop,
                    local_v4,
                    local_v6,
                    four_octet_asn: n.four_octet_asn,
                    extended_messages: n.extended_messages,
                    families,
                    graceful_restart: restart_time,
                    import_all: p.config.import_all,
                    max_prefix: p.config.max_prefix,
                    max_prefix_action: p.config.max_prefix_action,
                };
                p.restart_time = restart_time;
                p.stopped = false;
                let had_stale = self.rib.peer_counts(id).stale > 0;
                let ch = self.rib.peer_up(id, info);
                let p = self.peers.get_mut(&key).expect("present");
                p.stale_deadline =
                    (had_stale && restart_time.is_some()).then(|| Instant::now() + STALE_PATH_TIME);
                self.apply(ch, Some(id));
            }
            SessionEventKind::Update(u) => {
                let eor = u.as_end_of_rib().is_some();
                let ch = self.rib.receive(id, u);
                self.apply(ch, Some(id));
                if eor
                    && self.rib.peer_counts(id).stale == 0
                    && let Some(p) = self.peers.get_mut(&key)
                {
                    p.stale_deadline = None;
                }
            }
            SessionEventKind::Down { reason, graceful } => {
                let p = self.peers.get_mut(&key).expect("present");
                let keep = graceful && p.restart_time.is_some() && !p.stopped;
                p.stale_deadline = keep.then(|| {
                    Instant::now() + Duration::from_secs(p.restart_time.unwrap_or(0).into())
                });
                info!(peer = %key.0, reason = %down_reason(&reason), graceful = keep, "session down");
                let ch = self.rib.peer_down(id, graceful);
                self.apply(ch, Some(id));
            }
            SessionEventKind::RouteRefresh(r) => {
                if r.subtype == RouteRefreshSubtype::Request {
                    let updates = self.rib.route_refresh(id, r.afi_safi);
                    if let Some(p) = self.peers.get(&key) {
                        p.handle.send(updates);
                    }
                }
            }
        }
    }

    fn stale_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .peers
            .values_mut()
            .filter(|p| p.stale_deadline.is_some_and(|d| d <= now))
            .map(|p| {
                p.stale_deadline = None;
                p.id
            })
            .collect();
        for id in due {
            info!(peer = ?id, "stale routes expired");
            let ch = self.rib.stale_timer_expired(id);
            self.apply(ch, None);
        }
    }

    /// Sends what the RIB produced, publishes best-path changes, and acts on the peer
    /// action for `from`.
    fn apply(&mut self, ch: RibChanges, from: Option<PeerId>) {
        let RibChanges {
            to_send,
            best_changes,
            peer_action,
        } = ch;
        for (id, updates) in to_send {
            if updates.is_empty() {
                continue;
            }
            if let Some(p) = self.by_id.get(&id).and_then(|k| self.peers.get(k)) {
                p.handle.send(updates);
            }
        }
        if !best_changes.is_empty() && !self.subscribers.is_empty() {
            self.publish(best_changes.into_iter().map(BestChange::from).collect());
        }
        if let (Some(action), Some(id)) = (peer_action, from)
            && let Some(key) = self.by_id.get(&id).copied()
            && let Some(p) = self.peers.get_mut(&key)
        {
            match action {
                PeerAction::Stop(cease) => {
                    warn!(peer = %key.0, limit = ?p.config.max_prefix, "max-prefix reached: stopping the session");
                    p.stopped = true;
                    p.stale_deadline = None;
                    p.handle.automatic_stop(cease);
                }
                PeerAction::Warn { count, limit } => {
                    warn!(peer = %key.0, count, limit, "max-prefix exceeded");
                }
            }
        }
    }

    fn publish(&mut self, changes: Vec<BestChange>) {
        if changes.is_empty() {
            return;
        }
        self.subscribers.retain(|s| !s.is_closed());
        self.rib.report_best_changes(!self.subscribers.is_empty());
        if let Some((last, rest)) = self.subscribers.split_last() {
            for s in rest {
                let _ = s.send(changes.clone());
            }
            let _ = last.send(changes);
        }
    }

    fn status(&self) -> StatusReport {
        let mut peers: Vec<PeerStatus> = self
            .peers
            .values()
            .map(|p| {
                let s: SessionStatus = p.handle.status();
                let counts = self.rib.peer_counts(p.id);
                let ibgp = p.config.is_ibgp(self.config.asn);
                let peer_type = if !ibgp {
                    "ebgp"
                } else if p.config.rr_client && self.config.cluster_id.is_some() {
                    "rr-client"
                } else {
                    "ibgp"
                };
                PeerStatus {
                    address: p.config.address,
                    port: p.config.port,
                    asn: p.config.asn,
                    peer_type: peer_type.into(),
                    state: state_name(s.state).into(),
                    since: unix_secs(s.since),
                    established_count: s.established_count,
                    last_error: s.last_error.as_ref().map(down_reason),
                    stopped: p.stopped,
                    received: counts.received,
                    accepted: counts.accepted,
                    rejected: counts.rejected,
                    stale: counts.stale,
                    advertised: counts.advertised,
                }
            })
            .collect();
        peers.sort_by_key(|p| (p.address, p.port));
        StatusReport {
            asn: self.config.asn,
            router_id: self.config.router_id,
            cluster_id: self.config.cluster_id,
            listen: self.listener.local_addrs().to_vec(),
            routes: self.rib.len(),
            peers,
        }
    }

    fn routes(&self) -> Vec<Route> {
        let mut out: Vec<Route> = self
            .rib
            .loc_rib()
            .map(|e| {
                let a = &e.best.attrs.attrs;
                let from = match e.best.source {
                    RouteSource::Local => None,
                    RouteSource::Peer(id) => self.by_id.get(&id).map(|k| k.0),
                };
                Route {
                    prefix: to_ipnet(&e.prefix),
                    next_hops: e.next_hops.clone(),
                    local: e.best.source == RouteSource::Local,
                    from,
                    as_path: a.as_path.as_ref().map(as_path_text).unwrap_or_default(),
                    origin: match a.origin {
                        Some(Origin::Igp) => "IGP",
                        Some(Origin::Egp) => "EGP",
                        Some(Origin::Incomplete) | None => "incomplete",
                    }
                    .into(),
                    local_pref: a.local_pref,
                    med: a.med,
                    originator_id: a.originator_id,
                    cluster_list: a.cluster_list.clone(),
                    stale: e.best.stale,
                    paths: e.paths.len(),
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (a.prefix.addr(), a.prefix.prefix_len()).cmp(&(b.prefix.addr(), b.prefix.prefix_len()))
        });
        out
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Idle => "Idle",
        State::Connect => "Connect",
        State::Active => "Active",
        State::OpenSent => "OpenSent",
        State::OpenConfirm => "OpenConfirm",
        State::Established => "Established",
    }
}

fn as_path_text(p: &AsPath) -> String {
    let mut parts = Vec::new();
    for s in &p.segments {
        let asns: Vec<String> = s.asns.iter().map(u32::to_string).collect();
        match s.kind {
            SegmentType::Sequence => parts.push(asns.join(" ")),
            SegmentType::Set => parts.push(format!("{{{}}}", asns.join(" "))),
            SegmentType::ConfedSequence => parts.push(format!("({})", asns.join(" "))),
            SegmentType::ConfedSet => parts.push(format!("[{}]", asns.join(" "))),
        }
    }
    parts.join(" ")
}

/// An operator's wording of why a session ended.
pub fn down_reason(r: &DownReason) -> String {
    match r {
        DownReason::Stopped(c) => format!("stopped: {}", cease_text(c.subcode)),
        DownReason::HoldTimerExpired => "hold timer expired".into(),
        DownReason::ConnectionFailed => "connection failed or closed".into(),
        DownReason::NotificationReceived(n) => {
            format!(
                "received NOTIFICATION: {}",
                notification_text(n.code, n.subcode)
            )
        }
        DownReason::NotificationSent(n) => {
            format!(
                "sent NOTIFICATION: {}",
                notification_text(n.code, n.subcode)
            )
        }
        DownReason::UnexpectedEvent => "unexpected event".into(),
    }
}

fn cease_text(c: CeaseSubcode) -> &'static str {
    match c {
        CeaseSubcode::MaxPrefixesReached => "maximum number of prefixes reached",
        CeaseSubcode::AdministrativeShutdown => "administrative shutdown",
        CeaseSubcode::PeerDeconfigured => "peer de-configured",
        CeaseSubcode::AdministrativeReset => "administrative reset",
        CeaseSubcode::ConnectionRejected => "connection rejected",
        CeaseSubcode::OtherConfigurationChange => "other configuration change",
        CeaseSubcode::ConnectionCollisionResolution => "connection collision resolution",
        CeaseSubcode::OutOfResources => "out of resources",
        #[allow(unreachable_patterns)]
        _ => "cease",
    }
}

fn notification_text(code: u8, subcode: u8) -> String {
    let what = match NotificationError::from_codes(code, subcode) {
        NotificationError::Cease(_) => {
            let c = match subcode {
                1 => CeaseSubcode::MaxPrefixesReached,
                2 => CeaseSubcode::AdministrativeShutdown,
                3 => CeaseSubcode::PeerDeconfigured,
                4 => CeaseSubcode::AdministrativeReset,
                5 => CeaseSubcode::ConnectionRejected,
                6 => CeaseSubcode::OtherConfigurationChange,
                7 => CeaseSubcode::ConnectionCollisionResolution,
                8 => CeaseSubcode::OutOfResources,
                _ => return format!("cease (6/{subcode})"),
            };
            return format!("cease: {}", cease_text(c));
        }
        NotificationError::HoldTimerExpired(_) => "hold timer expired",
        NotificationError::MessageHeader(_) => "message header error",
        NotificationError::Open(_) => "OPEN message error",
        NotificationError::Update(_) => "UPDATE message error",
        NotificationError::Fsm(_) => "FSM error",
        NotificationError::RouteRefresh(_) => "ROUTE-REFRESH message error",
        NotificationError::Other { .. } => "error",
    };
    format!("{what} ({code}/{subcode})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::AsPathSegment;

    #[test]
    fn as_path_text_like_bird() {
        let p = AsPath {
            segments: vec![
                AsPathSegment {
                    kind: SegmentType::Sequence,
                    asns: vec![65001, 65002],
                },
                AsPathSegment {
                    kind: SegmentType::Set,
                    asns: vec![1, 2],
                },
            ],
        };
        assert_eq!(as_path_text(&p), "65001 65002 {1 2}");
    }

    #[test]
    fn down_reasons_read_well() {
        let r = DownReason::Stopped(Cease::new(CeaseSubcode::MaxPrefixesReached));
        assert_eq!(
            down_reason(&r),
            "stopped: maximum number of prefixes reached"
        );
    }

    /// A speaker with one passive peer that never connects: starts, reports, originates,
    /// streams best paths, takes a new config and shuts down (no root needed).
    #[tokio::test]
    async fn speaker_api_on_loopback() {
        let c = Config::from_yaml(
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\npools: [\"198.18.0.0/15\"]\noriginate: [\"198.18.4.0/26\"]\npeers:\n  - address: 127.0.0.9\n    asn: 64512\n    passive: true\n",
        )
        .unwrap();
        let mut c = c;
        c.listen = vec!["127.0.0.1:0".parse().unwrap()];
        let s = Speaker::start(c.clone()).await.unwrap();
        let mut best = s.best_paths().await.unwrap();
        let first = best.recv().await.unwrap();
        assert_eq!(
            first,
            vec![BestChange {
                prefix: "198.18.4.0/26".parse().unwrap(),
                next_hops: NextHops::None,
                local: true
            }]
        );
        s.originate("198.18.5.0/26".parse().unwrap()).unwrap();
        let next = best.recv().await.unwrap();
        assert_eq!(next[0].prefix, "198.18.5.0/26".parse::<IpNet>().unwrap());
        let st = s.status_report().await.unwrap();
        assert_eq!(st.routes, 2);
        assert_eq!(st.peers.len(), 1);
        assert_eq!(st.peers[0].peer_type, "ibgp");
        assert_ne!(st.peers[0].state, "Established");
        let routes = s.routes().await.unwrap();
        assert_eq!(routes.len(), 2);
        assert!(routes.iter().all(|r| r.local));

        let mut c2 = c.clone();
        c2.originate.clear();
        let mut extra = c.peers[0].clone();
        extra.address = "127.0.0.10".parse().unwrap();
        c2.peers.push(extra);
        s.replace_config(c2).await.unwrap();
        let gone = best.recv().await.unwrap();
        assert_eq!(
            gone,
            vec![BestChange {
                prefix: "198.18.4.0/26".parse().unwrap(),
                next_hops: NextHops::None,
                local: false
            }]
        );
        assert_eq!(s.status().await.unwrap().len(), 2);
        s.withdraw("198.18.5.0/26".parse().unwrap()).unwrap();
        assert!(best.recv().await.unwrap()[0].next_hops.is_empty());
        assert_eq!(s.routes().await.unwrap().len(), 0);
        s.shutdown().await.unwrap();
        assert!(s.status().await.is_err());
    }

    /// A speaker on `me` (port chosen by the kernel) with iBGP peers `(address, port,
    /// passive)`; loopback addresses other than 127.0.0.1 need no root on Linux.
    fn pair_config(me: &str, peers: &[(&str, u16, bool)], originate: &[&str]) -> Config {
        let mut y = format!(
            "asn: 64512\nrouter_id: {me}\nlisten: [\"{me}:179\"]\npools: [\"198.18.0.0/15\"]\noriginate: {originate:?}\npeers:\n"
        );
        for (addr, port, passive) in peers {
            y.push_str(&format!(
                "  - address: {addr}\n    asn: 64512\n    port: {port}\n    passive: {passive}\n    connect_retry: 1\n    source_address: {me}\n"
            ));
        }
        let mut c = Config::from_yaml(&y).unwrap();
        c.listen = vec![format!("{me}:0").parse().unwrap()];
        c
    }

    async fn next_change(rx: &mut mpsc::UnboundedReceiver<Vec<BestChange>>) -> Vec<BestChange> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a best-path change in time")
            .expect("stream open")
    }

    /// Two speakers peering over loopback: best paths stream with the peer's next hop,
    /// adding a peer leaves the existing session alone, withdrawals and a removed peer's
    /// routes reach the stream.
    #[tokio::test]
    async fn two_speakers_exchange_best_paths() {
        let b = Speaker::start(pair_config("127.0.0.2", &[("127.0.0.1", 179, true)], &[]))
            .await
            .unwrap();
        let port_b = b.local_addrs()[0].port();
        let a_config = pair_config(
            "127.0.0.1",
            &[("127.0.0.2", port_b, false)],
            &["198.18.1.0/26"],
        );
        let a = Speaker::start(a_config.clone()).await.unwrap();
        let mut best = b.best_paths().await.unwrap();
        let got = next_change(&mut best).await;
        assert_eq!(
            got,
            vec![BestChange {
                prefix: "198.18.1.0/26".parse().unwrap(),
                next_hops: vec!["127.0.0.1".parse().unwrap()].into(),
                local: false
            }]
        );
        let before = b.status().await.unwrap()[0].clone();
        assert_eq!((before.state.as_str(), before.accepted), ("Established", 1));

        // B gets a second (passive, silent) peer: the first session is not touched.
        let b2 = pair_config(
            "127.0.0.2",
            &[("127.0.0.1", 179, true), ("127.0.0.3", 179, true)],
            &[],
        );
        b.replace_config(b2).await.unwrap();
        let after = b.status().await.unwrap();
        assert_eq!(after.len(), 2);
        assert_eq!(after[0].since, before.since);
        assert_eq!(after[0].established_count, 1);

        // A originates and withdraws through the API.
        a.originate("198.18.1.64/26".parse().unwrap()).unwrap();
        assert_eq!(
            next_change(&mut best).await[0].prefix.to_string(),
            "198.18.1.64/26"
        );
        a.withdraw("198.18.1.64/26".parse().unwrap()).unwrap();
        let w = next_change(&mut best).await;
        assert_eq!(w[0].prefix.to_string(), "198.18.1.64/26");
        assert!(w[0].next_hops.is_empty() && !w[0].local);

        // A shuts down (Cease): B withdraws what it learned at once.
        a.shutdown().await.unwrap();
        let w = next_change(&mut best).await;
        assert_eq!(w[0].prefix.to_string(), "198.18.1.0/26");
        assert!(w[0].next_hops.is_empty());
        assert!(b.routes().await.unwrap().is_empty());
        b.shutdown().await.unwrap();
    }

    /// A new listen set that reuses the old address and port: the old sockets are closed
    /// before the new ones are bound.
    #[tokio::test]
    async fn listen_change_rebinds() {
        let c = pair_config("127.0.0.5", &[("127.0.0.9", 179, true)], &[]);
        let s = Speaker::start(c.clone()).await.unwrap();
        let port = s.local_addrs()[0].port();
        let mut c2 = c.clone();
        c2.listen = vec![
            format!("127.0.0.5:{port}").parse().unwrap(),
            format!("127.0.0.6:{port}").parse().unwrap(),
        ];
        s.replace_config(c2.clone()).await.unwrap();
        let st = s.status_report().await.unwrap();
        assert_eq!(st.listen, c2.listen);
        assert_eq!(st.peers.len(), 1);
        s.shutdown().await.unwrap();
    }
}
