//! The tokio session layer: one task per configured peer that owns the TCP connection(s) and
//! the [`Fsm`]s, and only translates between them.
//!
//! ```text
//!  speaker ──SessionHandle (Command: Send/Start/Stop/RouteRefresh)──▶ ┌──────────────┐
//!  speaker ◀──────────── mpsc SessionEvent ─────────────────────────── │ session task │
//!  Listener ── Incoming (accepted TcpStream for this peer) ─────────▶ │  Fsm × 1..2  │
//!  connect task ── Internal::Connected ─────────────────────────────▶ │  timers      │
//!  reader task per connection ── Internal::Message / Closed ───────▶ │              │
//!  writer task per connection ◀── encoded messages (unbounded) ────── └──────────────┘
//! ```
//!
//! - Every FSM [`Output`] is performed in order: NOTIFICATION before `DropConnection` (the
//!   writer flushes what it was given before it closes), `StartTimer` (re)starts a deadline,
//!   expiries of stopped timers are fed anyway and ignored by the FSM.
//! - One FSM per connection (RFC 4271 §8). An incoming connection while ours has sent its OPEN
//!   gets a second FSM; when an OPEN arrives and both exist, [`collision::resolve`] picks the
//!   loser, which gets `OpenCollisionDump` (RFC 4271 §6.8). When one FSM is left Idle and the
//!   other lives, the Idle one is dropped.
//! - Each reader decodes with [`DecodeContext::default`] until the peer's OPEN, then with
//!   [`DecodeContext::negotiated`] from both OPENs. A [`DecodeError`] becomes the FSM event that
//!   sends `Notification::from(&err)`.
//! - UPDATEs get the session-level checks ([`translate::check_update`]); treat-as-withdraw
//!   (RFC 7606) is delivered as a withdrawal, never as a reset.
//! - The session knows nothing of the RIB: it emits [`SessionEvent`]s and sends the
//!   [`Update`]s it is given.

mod listener;
mod translate;

pub use listener::{Incoming, Listener};
pub use translate::{
    OpenExtras, UpdateCheck, as_withdrawal, check_update, decode_error_input, notification_input,
    open_from_summary, summary_from_open, to_fsm_notification, to_packet_notification,
};

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use crate::collision::{self, Existing, Resolution, Speaker};
use crate::config::{Config, GracefulRestartConfig, PeerConfig};
use crate::fsm::{
    Cease, CeaseSubcode, DownReason, Fsm, FsmConfig, Input, Negotiated, OpenSummary, Output, State,
    Timer,
};
use crate::packet::{
    AfiSafi, DecodeContext, DecodeError, EncodeContext, Message, Open, RouteRefresh, Update,
    frame_len,
};
use crate::sockopt;

/// How long a closing connection may take to flush its last messages (a NOTIFICATION).
const FLUSH_GRACE: Duration = Duration::from_secs(3);

/// What a session needs to know about the local speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Advertise RFC 8654 extended messages (up to 65535 octets).
    pub extended_messages: bool,
    /// RFC 4724 §3: the F bit for each family of our Graceful Restart capability.
    pub forwarding_preserved: bool,
    /// RFC 4724 §3: the R bit, set by a speaker that has just restarted (RFC 4724 §4.1).
    pub restarting: bool,
}

impl LocalConfig {
    /// The speaker's settings from tabby-bgpd's config; extended messages are advertised, the
    /// forwarding state is kept across a restart (felix does not flush BGP routes when the
    /// speaker dies), and we are not restarting.
    pub fn from_config(c: &Config) -> Self {
        LocalConfig {
            asn: c.asn,
            router_id: c.router_id,
            extended_messages: true,
            forwarding_preserved: true,
            restarting: false,
        }
    }

    /// The FSM settings for `peer`, as [`Config::fsm_config`] makes them, plus the extended
    /// message capability.
    pub fn fsm_config(&self, peer: &PeerConfig) -> FsmConfig {
        let c = Config {
            asn: self.asn,
            router_id: self.router_id,
            listen: Vec::new(),
            cluster_id: None,
            pools: Vec::new(),
            originate: Vec::new(),
            graceful_restart: GracefulRestartConfig {
                enabled: peer.graceful_restart,
                restart_time: peer.restart_time,
            },
            peers: Vec::new(),
        };
        let mut f = c.fsm_config(peer);
        f.capabilities.extended_messages = self.extended_messages;
        f
    }

    fn extras(&self) -> OpenExtras {
        OpenExtras {
            forwarding_preserved: self.forwarding_preserved,
            restarting: self.restarting,
        }
    }
}

/// A session came up: what both sides agreed on, and the OPENs as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Established {
    pub negotiated: Negotiated,
    pub remote_open: Open,
    pub local_open: Open,
    /// What UPDATEs are decoded with on this session.
    pub decode: DecodeContext,
    pub local_addr: SocketAddr,
    pub remote_addr: SocketAddr,
}

/// Something a session reports to the speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    /// The configured peer address.
    pub peer: IpAddr,
    pub kind: SessionEventKind,
}

// UPDATEs are nearly every event and are consumed right away; boxing them would cost an
// allocation per message for no gain (as in `packet::Message`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEventKind {
    /// OpenConfirm → Established: send the Adj-RIB-Out now.
    Established(Box<Established>),
    /// A received UPDATE, checked; treat-as-withdraw already turned into withdrawals.
    Update(Update),
    /// Established → Idle: drop (or, when `graceful`, mark stale) the peer's routes.
    Down {
        reason: DownReason,
        /// RFC 4724 §4.2: the peer advertised Graceful Restart and the session ended without
        /// a NOTIFICATION (the TCP connection failed or was closed): keep its routes as stale.
        graceful: bool,
    },
    /// The peer asks for our Adj-RIB-Out of a family again (RFC 2918, RFC 7313 subtypes).
    RouteRefresh(RouteRefresh),
}

/// What a session shows about itself (for `tabbyctl node status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub peer: SocketAddr,
    pub state: State,
    /// When `state` was entered.
    pub since: SystemTime,
    pub last_error: Option<DownReason>,
    /// What was agreed, while Established.
    pub negotiated: Option<Negotiated>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub updates_in: u64,
    pub updates_out: u64,
    /// How many times the session reached Established.
    pub established_count: u64,
}

enum Command {
    Send(Vec<Update>),
    Start,
    Stop(Cease),
    AutomaticStop(Cease),
    RouteRefresh(AfiSafi),
}

/// The speaker's handle on a session task. Dropping it stops the session with Cease 6/3
/// (Peer De-configured) and ends the task.
pub struct SessionHandle {
    peer: IpAddr,
    cmd: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<SessionStatus>,
    task: JoinHandle<()>,
}

impl SessionHandle {
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    /// Queues UPDATEs for the peer. They are sent only while Established (each one restarts
    /// the KeepaliveTimer, RFC 4271 §8.2.2); otherwise dropped, since the speaker sends its
    /// whole Adj-RIB-Out on [`SessionEventKind::Established`] anyway.
    pub fn send(&self, updates: Vec<Update>) {
        let _ = self.cmd.send(Command::Send(updates));
    }

    /// ManualStart (RFC 4271 Event 1).
    pub fn start(&self) {
        let _ = self.cmd.send(Command::Start);
    }

    /// ManualStop (RFC 4271 Event 2) with this Cease.
    pub fn stop(&self, cease: Cease) {
        let _ = self.cmd.send(Command::Stop(cease));
    }

    /// AutomaticStop (RFC 4271 Event 8) with this Cease, e.g. 6/1 when the speaker finds the
    /// peer over its max-prefix limit: the session stays down until [`SessionHandle::start`].
    pub fn automatic_stop(&self, cease: Cease) {
        let _ = self.cmd.send(Command::AutomaticStop(cease));
    }

    /// Sends a ROUTE-REFRESH for `family` (RFC 2918), if the peer supports it.
    pub fn route_refresh(&self, family: AfiSafi) {
        let _ = self.cmd.send(Command::RouteRefresh(family));
    }

    /// A snapshot of the status.
    pub fn status(&self) -> SessionStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch(&self) -> watch::Receiver<SessionStatus> {
        self.status.clone()
    }

    /// Waits until the session is in `state`, up to `timeout`; returns whether it got there.
    pub async fn wait_for(&self, state: State, timeout: Duration) -> bool {
        let mut w = self.status.clone();
        tokio::time::timeout(timeout, w.wait_for(|s| s.state == state))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops the session with Cease 6/3 and waits for the task to send its NOTIFICATION and
    /// end.
    pub async fn shutdown(self) {
        let SessionHandle { cmd, task, .. } = self;
        drop(cmd);
        let _ = task.await;
    }
}

/// The session layer's entry point.
pub struct Session;

impl Session {
    /// Starts the session task for `peer` (ManualStart right away). `incoming` carries the
    /// connections the speaker's [`Listener`] accepted from the peer; without it the session
    /// only connects out. Events go to `events`; a slow receiver slows the session down.
    pub fn spawn(
        peer: PeerConfig,
        local: LocalConfig,
        incoming: Option<Incoming>,
        events: mpsc::Sender<SessionEvent>,
    ) -> SessionHandle {
        let fsm_config = local.fsm_config(&peer);
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(SessionStatus {
            peer: peer.socket_addr(),
            state: State::Idle,
            since: SystemTime::now(),
            last_error: None,
            negotiated: None,
            messages_in: 0,
            messages_out: 0,
            updates_in: 0,
            updates_out: 0,
            established_count: 0,
        });
        let span = tracing::info_span!("bgp_session", peer = %peer.address);
        let addr = peer.address;
        let task = Task::new(peer, local, fsm_config, incoming, cmd_rx, events, status_tx);
        let task = tokio::spawn(task.run().instrument(span));
        SessionHandle {
            peer: addr,
            cmd: cmd_tx,
            status: status_rx,
            task,
        }
    }
}

/// What connection tasks tell the session task.
#[allow(clippy::large_enum_variant)] // messages, mostly UPDATEs, as for `SessionEventKind`
enum Internal {
    Connected {
        id: u64,
        result: io::Result<TcpStream>,
    },
    Message {
        id: u64,
        msg: Result<Message, DecodeError>,
    },
    Closed {
        id: u64,
        error: Option<io::Error>,
    },
}

/// One TCP connection of a [`Conn`].
struct ConnIo {
    id: u64,
    origin: collision::Origin,
    local_addr: SocketAddr,
    remote_addr: SocketAddr,
    writer: mpsc::UnboundedSender<Bytes>,
    writer_task: JoinHandle<()>,
    reader_task: JoinHandle<()>,
    remote_open: Option<Open>,
    decode: DecodeContext,
    encode: EncodeContext,
}

/// One FSM and its connection and timers.
struct Conn {
    serial: u64,
    fsm: Fsm,
    deadlines: [Option<Instant>; 4],
    io: Option<ConnIo>,
    established: Option<Negotiated>,
}

const TIMERS: [Timer; 4] = [
    Timer::ConnectRetry,
    Timer::Hold,
    Timer::Keepalive,
    Timer::IdleHold,
];

fn timer_index(t: Timer) -> usize {
    match t {
        Timer::ConnectRetry => 0,
        Timer::Hold => 1,
        Timer::Keepalive => 2,
        Timer::IdleHold => 3,
    }
}

fn expiry(t: Timer) -> Input<Update> {
    match t {
        Timer::ConnectRetry => Input::ConnectRetryTimerExpires,
        Timer::Hold => Input::HoldTimerExpires,
        Timer::Keepalive => Input::KeepaliveTimerExpires,
        Timer::IdleHold => Input::IdleHoldTimerExpires,
    }
}

impl Conn {
    fn new(serial: u64, config: FsmConfig) -> Self {
        Conn {
            serial,
            fsm: Fsm::new(config),
            deadlines: [None; 4],
            io: None,
            established: None,
        }
    }
}

struct Task {
    peer: PeerConfig,
    local: LocalConfig,
    fsm_config: FsmConfig,
    local_open: Open,
    primary: Conn,
    second: Option<Conn>,
    /// The pending outgoing connection attempt of the primary FSM.
    connecting: Option<(u64, JoinHandle<()>)>,
    next_id: u64,
    internal_tx: mpsc::Sender<Internal>,
    internal_rx: mpsc::Receiver<Internal>,
    incoming: Option<Incoming>,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<SessionEvent>,
    pending: Vec<SessionEventKind>,
    status: watch::Sender<SessionStatus>,
    closing: Vec<JoinHandle<()>>,
}

impl Task {
    fn new(
        peer: PeerConfig,
        local: LocalConfig,
        fsm_config: FsmConfig,
        incoming: Option<Incoming>,
        cmd_rx: mpsc::UnboundedReceiver<Command>,
        events: mpsc::Sender<SessionEvent>,
        status: watch::Sender<SessionStatus>,
    ) -> Self {
        let summary = OpenSummary {
            version: crate::fsm::BGP_VERSION,
            asn: fsm_config.local_asn,
            hold_time: fsm_config.hold_time,
            router_id: fsm_config.local_router_id,
            capabilities: fsm_config.capabilities,
        };
        let local_open = open_from_summary(&summary, &local.extras());
        let (internal_tx, internal_rx) = mpsc::channel(64);
        Task {
            primary: Conn::new(0, fsm_config.clone()),
            peer,
            local,
            fsm_config,
            local_open,
            second: None,
            connecting: None,
            next_id: 1,
            internal_tx,
            internal_rx,
            incoming,
            cmd_rx,
            events,
            pending: Vec::new(),
            status,
            closing: Vec::new(),
        }
    }

    async fn run(mut self) {
        self.feed(0, Input::ManualStart);
        self.flush_events().await;
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => break,
                },
                Some(ev) = self.internal_rx.recv() => self.internal(ev),
                Some(stream) = recv_incoming(&mut self.incoming) => self.accepted(stream),
                _ = sleep_until(deadline), if deadline.is_some() => self.fire_timers(),
            }
            self.flush_events().await;
        }
        // The speaker dropped us: the peer is de-configured (RFC 4486 Cease 6/3).
        self.stop_all(Cease::new(CeaseSubcode::PeerDeconfigured));
        self.flush_events().await;
        if let Some((_, h)) = self.connecting.take() {
            h.abort();
        }
        for h in self.closing.drain(..) {
            let _ = tokio::time::timeout(FLUSH_GRACE, h).await;
        }
    }

    async fn flush_events(&mut self) {
        for kind in std::mem::take(&mut self.pending) {
            let ev = SessionEvent {
                peer: self.peer.address,
                kind,
            };
            // A speaker that stopped listening is not our problem.
            let _ = self.events.send(ev).await;
        }
        self.closing.retain(|h| !h.is_finished());
    }

    fn next_deadline(&self) -> Option<Instant> {
        std::iter::once(&self.primary)
            .chain(self.second.as_ref())
            .flat_map(|c| c.deadlines.iter().flatten())
            .min()
            .copied()
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        for c in std::iter::once(&mut self.primary).chain(self.second.as_mut()) {
            for t in TIMERS {
                let d = &mut c.deadlines[timer_index(t)];
                if d.is_some_and(|d| d <= now) {
                    *d = None;
                    due.push((c.serial, t));
                }
            }
        }
        for (serial, t) in due {
            self.feed(serial, expiry(t));
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Send(updates) => self.send_updates(updates),
            Command::Start => self.feed(self.primary.serial, Input::ManualStart),
            Command::Stop(cease) => self.stop_all(cease),
            Command::AutomaticStop(cease) => {
                if let Some(s) = self.second.as_ref().map(|c| c.serial) {
                    self.feed(s, Input::AutomaticStop(cease.clone()));
                }
                self.feed(self.primary.serial, Input::AutomaticStop(cease));
            }
            Command::RouteRefresh(family) => {
                let ok = self.primary.fsm.state() == State::Established
                    && self
                        .primary
                        .established
                        .as_ref()
                        .is_some_and(|n| n.route_refresh);
                if ok {
                    let serial = self.primary.serial;
                    self.write(
                        serial,
                        &Message::RouteRefresh(RouteRefresh::request(family)),
                    );
                } else {
                    debug!("not sending ROUTE-REFRESH: not Established or not supported");
                }
            }
        }
    }

    fn stop_all(&mut self, cease: Cease) {
        if let Some(s) = self.second.as_ref().map(|c| c.serial) {
            self.feed(s, Input::ManualStop(cease.clone()));
        }
        self.feed(self.primary.serial, Input::ManualStop(cease));
    }

    fn send_updates(&mut self, updates: Vec<Update>) {
        let serial = self.primary.serial;
        if self.primary.fsm.state() != State::Established {
            debug!(
                count = updates.len(),
                "dropping UPDATEs queued while not Established"
            );
            return;
        }
        let Some(enc) = self.primary.io.as_ref().map(|io| io.encode) else {
            return;
        };
        for u in updates {
            let bytes = Message::Update(u).encode(&enc);
            if bytes.len() > enc.max_message_len() {
                warn!(
                    len = bytes.len(),
                    max = enc.max_message_len(),
                    "not sending an UPDATE larger than the peer accepts"
                );
                continue;
            }
            if !self.write_bytes(serial, bytes) {
                return;
            }
            self.status.send_modify(|s| s.updates_out += 1);
            self.feed(serial, Input::UpdateSent);
            if self.primary.serial != serial || self.primary.fsm.state() != State::Established {
                return;
            }
        }
    }

    fn internal(&mut self, ev: Internal) {
        match ev {
            Internal::Connected { id, result } => {
                if self.connecting.as_ref().map(|c| c.0) != Some(id) {
                    // Abandoned attempt that completed anyway: the stream closes when dropped.
                    return;
                }
                self.connecting = None;
                let serial = self.primary.serial;
                match result {
                    Ok(stream) if self.primary.io.is_none() => {
                        if let Err(e) = self.attach(serial, stream, collision::Origin::Local, id) {
                            warn!(error = %e, "outgoing connection unusable");
                            self.feed(serial, Input::TcpConnectionFails);
                            return;
                        }
                        self.feed(serial, Input::TcpCrAcked);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!(error = %e, "connecting to the peer");
                        self.feed(serial, Input::TcpConnectionFails);
                    }
                }
            }
            Internal::Message { id, msg } => {
                let Some(serial) = self.serial_of_io(id) else {
                    return;
                };
                self.received(serial, msg);
            }
            Internal::Closed { id, error } => {
                let Some(serial) = self.serial_of_io(id) else {
                    return;
                };
                match error {
                    Some(e) => info!(error = %e, "connection failed"),
                    None => info!("connection closed by the peer"),
                }
                self.feed(serial, Input::TcpConnectionFails);
            }
        }
    }

    fn serial_of_io(&self, id: u64) -> Option<u64> {
        std::iter::once(&self.primary)
            .chain(self.second.as_ref())
            .find(|c| c.io.as_ref().is_some_and(|io| io.id == id))
            .map(|c| c.serial)
    }

    fn conn(&mut self, serial: u64) -> Option<&mut Conn> {
        if self.primary.serial == serial {
            Some(&mut self.primary)
        } else {
            self.second.as_mut().filter(|c| c.serial == serial)
        }
    }

    fn other(&self, serial: u64) -> Option<&Conn> {
        if self.primary.serial == serial {
            self.second.as_ref()
        } else {
            Some(&self.primary)
        }
    }

    /// An incoming connection from the peer (RFC 4271 Event 17).
    fn accepted(&mut self, stream: TcpStream) {
        let id = self.next_id;
        self.next_id += 1;
        let from = stream.peer_addr().ok();
        match self.primary.fsm.state() {
            State::Idle if !self.primary.fsm.accepts_while_idle() => {
                debug!(?from, "refusing connection while Idle");
            }
            // Idle waiting to restart: the FSM takes the peer's connection (see
            // `Fsm::accepts_while_idle`).
            State::Idle | State::Connect | State::Active if self.primary.io.is_none() => {
                // The FSM adopts the incoming connection; abandon our own attempt.
                if let Some((_, h)) = self.connecting.take() {
                    h.abort();
                }
                let serial = self.primary.serial;
                if let Err(e) = self.attach(serial, stream, collision::Origin::Remote, id) {
                    warn!(error = %e, "incoming connection unusable");
                    return;
                }
                self.feed(serial, Input::TcpConnectionConfirmed);
            }
            _ if self.second.is_some() => {
                debug!(?from, "refusing a third connection from the peer");
            }
            _ => {
                // A second connection: its own FSM, collision resolved on OPEN (§6.8).
                let serial = self.next_id;
                self.next_id += 1;
                self.second = Some(Conn::new(serial, self.fsm_config.clone()));
                // Attached first: `tidy` drops a second FSM without a connection.
                if let Err(e) = self.attach(serial, stream, collision::Origin::Remote, id) {
                    warn!(error = %e, "incoming connection unusable");
                    self.second = None;
                    return;
                }
                self.feed(serial, Input::ManualStartPassive);
                self.feed(serial, Input::TcpConnectionConfirmed);
            }
        }
    }

    /// Gives a connection to the FSM `serial`: spawns its reader and writer.
    fn attach(
        &mut self,
        serial: u64,
        stream: TcpStream,
        origin: collision::Origin,
        id: u64,
    ) -> io::Result<()> {
        stream.set_nodelay(true)?;
        let local_addr = sockopt::canonical(stream.local_addr()?);
        let remote_addr = sockopt::canonical(stream.peer_addr()?);
        info!(%local_addr, %remote_addr, ?origin, "connection up");
        let (r, w) = stream.into_split();
        let (wtx, wrx) = mpsc::unbounded_channel();
        let writer_task = tokio::spawn(writer(w, wrx).in_current_span());
        let reader_task = tokio::spawn(
            reader(r, id, self.local_open.clone(), self.internal_tx.clone()).in_current_span(),
        );
        let Some(c) = self.conn(serial) else {
            writer_task.abort();
            reader_task.abort();
            return Ok(());
        };
        c.io = Some(ConnIo {
            id,
            origin,
            local_addr,
            remote_addr,
            writer: wtx,
            writer_task,
            reader_task,
            remote_open: None,
            decode: DecodeContext::default(),
            encode: EncodeContext::default(),
        });
        Ok(())
    }

    /// A message (or a decode error) from the connection of FSM `serial`.
    fn received(&mut self, serial: u64, msg: Result<Message, DecodeError>) {
        if msg.is_ok() {
            self.status.send_modify(|s| s.messages_in += 1);
        }
        let input = match msg {
            Err(e) => {
                warn!(error = %e, "malformed message from the peer");
                decode_error_input(&e)
            }
            Ok(Message::Open(open)) => {
                let local_open = self.local_open.clone();
                let Some(c) = self.conn(serial) else { return };
                let Some(io) = c.io.as_mut() else { return };
                io.decode = DecodeContext::negotiated(&local_open, &open);
                io.encode = EncodeContext::from(&io.decode);
                io.remote_open = Some(open.clone());
                let summary = summary_from_open(&open);
                if self.resolve_collision(serial, &summary) {
                    return;
                }
                Input::BgpOpen(summary)
            }
            Ok(Message::Update(u)) => {
                self.status.send_modify(|s| s.updates_in += 1);
                let Some(c) = self.conn(serial) else { return };
                match (&c.established, &c.io) {
                    (Some(n), Some(io)) if c.fsm.state() == State::Established => {
                        let check = UpdateCheck {
                            ibgp: n.ibgp,
                            peer_asn: n.peer_asn,
                            local_addr: io.local_addr.ip(),
                        };
                        match check_update(u, &check) {
                            Ok(u) => {
                                for e in &u.attribute_errors {
                                    info!(type_code = e.type_code, action = ?e.action, reason = e.reason, "UPDATE attribute error handled without reset");
                                }
                                Input::UpdateMsg(u)
                            }
                            Err(n) => {
                                warn!(
                                    code = n.code,
                                    subcode = n.subcode,
                                    "UPDATE fails the session checks"
                                );
                                Input::UpdateMsgErr(n)
                            }
                        }
                    }
                    _ => Input::UpdateMsg(u),
                }
            }
            Ok(Message::Notification(n)) => {
                info!(code = n.error.code(), subcode = n.error.subcode(), communication = ?n.shutdown_communication(), "NOTIFICATION from the peer");
                notification_input(&n)
            }
            Ok(Message::Keepalive) => Input::KeepAliveMsg,
            Ok(Message::RouteRefresh(r)) => {
                let established =
                    self.conn(serial).map(|c| c.fsm.state()) == Some(State::Established);
                if established {
                    self.pending.push(SessionEventKind::RouteRefresh(r));
                } else {
                    debug!("ignoring ROUTE-REFRESH before Established");
                }
                return;
            }
        };
        self.feed(serial, input);
    }

    /// RFC 4271 §6.8 on receipt of an OPEN on `serial` while another connection exists.
    /// Returns true when the OPEN's own connection was dumped.
    fn resolve_collision(&mut self, serial: u64, open: &OpenSummary) -> bool {
        let Some(other) = self.other(serial) else {
            return false;
        };
        let (Some(other_io), Some(this_origin)) = (
            other.io.as_ref(),
            std::iter::once(&self.primary)
                .chain(self.second.as_ref())
                .find(|c| c.serial == serial)
                .and_then(|c| c.io.as_ref())
                .map(|io| io.origin),
        ) else {
            return false;
        };
        let other_serial = other.serial;
        let existing = Existing {
            origin: other_io.origin,
            state: other.fsm.state(),
        };
        let dump_this = if existing.origin == this_origin {
            // Two connections from the same side (the peer reconnected before the old one
            // died): an Established session wins as in §6.8, otherwise the newer one does.
            match existing.state {
                State::Idle | State::Connect | State::Active => return false,
                State::Established => true,
                _ => false,
            }
        } else {
            let local = Speaker {
                router_id: self.local.router_id,
                asn: self.local.asn,
            };
            let remote = Speaker {
                router_id: open.router_id,
                asn: open.asn,
            };
            match collision::resolve(local, remote, this_origin, existing) {
                Resolution::NoCollision => return false,
                Resolution::Dump(o) => o == this_origin,
            }
        };
        info!(
            dump = if dump_this { "new" } else { "existing" },
            "connection collision (RFC 4271 §6.8)"
        );
        if dump_this {
            self.feed(serial, Input::OpenCollisionDump);
            true
        } else {
            self.feed(other_serial, Input::OpenCollisionDump);
            false
        }
    }

    /// Feeds one event to FSM `serial` and performs its outputs in order.
    fn feed(&mut self, serial: u64, input: Input<Update>) {
        let Some(c) = self.conn(serial) else { return };
        let outputs = c.fsm.process(input);
        for o in outputs {
            self.perform(serial, o);
        }
        self.tidy();
        self.publish();
    }

    fn perform(&mut self, serial: u64, o: Output<Update>) {
        match o {
            Output::Connect => {
                if serial != self.primary.serial {
                    return;
                }
                if let Some((_, h)) = self.connecting.take() {
                    h.abort();
                }
                let id = self.next_id;
                self.next_id += 1;
                let peer = self.peer.clone();
                let tx = self.internal_tx.clone();
                let h = tokio::spawn(
                    async move {
                        let result = connect(&peer).await;
                        let _ = tx.send(Internal::Connected { id, result }).await;
                    }
                    .in_current_span(),
                );
                self.connecting = Some((id, h));
            }
            Output::DropConnection => {
                if serial == self.primary.serial
                    && let Some((_, h)) = self.connecting.take()
                {
                    h.abort();
                }
                let Some(c) = self.conn(serial) else { return };
                if let Some(io) = c.io.take() {
                    io.reader_task.abort();
                    // Dropping the sender lets the writer flush (a NOTIFICATION) and close.
                    drop(io.writer);
                    let w = io.writer_task;
                    let reaper = tokio::spawn(async move {
                        let abort = w.abort_handle();
                        if tokio::time::timeout(FLUSH_GRACE, w).await.is_err() {
                            abort.abort();
                        }
                    });
                    self.closing.push(reaper);
                }
            }
            Output::SendOpen(summary) => {
                let open = open_from_summary(&summary, &self.local.extras());
                self.write(serial, &Message::Open(open));
            }
            Output::SendKeepalive => self.write(serial, &Message::Keepalive),
            Output::SendNotification(n) => {
                warn!(code = n.code, subcode = n.subcode, "sending NOTIFICATION");
                self.write(serial, &Message::Notification(to_packet_notification(&n)));
            }
            Output::StartTimer { timer, duration } => {
                if let Some(c) = self.conn(serial) {
                    c.deadlines[timer_index(timer)] = Some(Instant::now() + duration);
                }
            }
            Output::StopTimer(timer) => {
                if let Some(c) = self.conn(serial) {
                    c.deadlines[timer_index(timer)] = None;
                }
            }
            Output::StateChanged { from, to } => {
                debug!(?from, ?to, serial, "state changed");
            }
            Output::SessionEstablished(negotiated) => {
                let local_open = self.local_open.clone();
                let Some(c) = self.conn(serial) else { return };
                c.established = Some(negotiated.clone());
                let Some(io) = c.io.as_ref() else { return };
                info!(
                    peer_asn = negotiated.peer_asn,
                    router_id = %negotiated.peer_router_id,
                    hold_time = negotiated.hold_time,
                    "session Established"
                );
                let est = Established {
                    negotiated,
                    remote_open: io.remote_open.clone().expect("OPEN received"),
                    local_open,
                    decode: io.decode.clone(),
                    local_addr: io.local_addr,
                    remote_addr: io.remote_addr,
                };
                self.status.send_modify(|s| s.established_count += 1);
                self.pending
                    .push(SessionEventKind::Established(Box::new(est)));
            }
            Output::SessionDown { reason } => {
                let Some(c) = self.conn(serial) else { return };
                let had_gr = c
                    .established
                    .take()
                    .is_some_and(|n| n.peer_graceful_restart.is_some());
                let graceful = had_gr
                    && matches!(
                        reason,
                        DownReason::ConnectionFailed | DownReason::UnexpectedEvent
                    );
                info!(?reason, graceful, "session down");
                self.pending
                    .push(SessionEventKind::Down { reason, graceful });
            }
            Output::DeliverUpdate(u) => self.pending.push(SessionEventKind::Update(u)),
        }
    }

    fn write(&mut self, serial: u64, msg: &Message) {
        let Some(enc) = self
            .conn(serial)
            .and_then(|c| c.io.as_ref())
            .map(|io| io.encode)
        else {
            return;
        };
        self.write_bytes(serial, msg.encode(&enc));
    }

    fn write_bytes(&mut self, serial: u64, bytes: Bytes) -> bool {
        let Some(io) = self.conn(serial).and_then(|c| c.io.as_ref()) else {
            return false;
        };
        let ok = io.writer.send(bytes).is_ok();
        if ok {
            self.status.send_modify(|s| s.messages_out += 1);
        }
        ok
    }

    /// One FSM per live connection: when one of two FSMs has lost its connection (Idle, or
    /// back to Active after a failure in OpenSent), it is dropped and the other one, which
    /// still has its connection, is the primary.
    fn tidy(&mut self) {
        let Some(second) = &self.second else { return };
        if second.io.is_none() {
            self.second = None;
        } else if self.primary.io.is_none() {
            let second = self.second.take().expect("checked");
            let old = std::mem::replace(&mut self.primary, second);
            if let Some((_, h)) = self.connecting.take() {
                h.abort();
            }
            drop(old);
        }
    }

    fn publish(&mut self) {
        let state = self.primary.fsm.state();
        let last_error = self.primary.fsm.last_error().cloned();
        let negotiated = self.primary.established.clone();
        self.status.send_if_modified(|s| {
            let mut changed = false;
            if s.state != state {
                s.state = state;
                s.since = SystemTime::now();
                changed = true;
            }
            if s.last_error != last_error && last_error.is_some() {
                s.last_error = last_error;
                changed = true;
            }
            if s.negotiated != negotiated {
                s.negotiated = negotiated;
                changed = true;
            }
            changed
        });
    }
}

async fn recv_incoming(incoming: &mut Option<Incoming>) -> Option<TcpStream> {
    match incoming {
        Some(i) => i.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Opens the TCP connection to the peer: from the source address, with the MD5 key and GTSM
/// set before the SYN goes out.
async fn connect(peer: &PeerConfig) -> io::Result<TcpStream> {
    let addr = peer.socket_addr();
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(src) = peer.source_address {
        sock.bind(SocketAddr::new(src, 0))
            .map_err(|e| io::Error::new(e.kind(), format!("binding source address {src}: {e}")))?;
    }
    if let Some(pw) = &peer.password {
        sockopt::set_md5_key(sock.as_raw_fd(), peer.address, Some(pw.as_bytes()))?;
    }
    if peer.ttl_security {
        sockopt::set_gtsm(sock.as_raw_fd())?;
    }
    sock.connect(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("connecting to {addr}: {e}")))
}

/// Writes what it is given, in order; when the session drops the sender, flushes and closes.
async fn writer(mut w: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    while let Some(b) = rx.recv().await {
        if let Err(e) = w.write_all(&b).await {
            debug!(error = %e, "writing to the peer");
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// Frames and decodes the byte stream: with the default context up to the peer's OPEN, then
/// with what both OPENs negotiated. Stops after the first error.
async fn reader(mut r: OwnedReadHalf, id: u64, local_open: Open, tx: mpsc::Sender<Internal>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut ctx = DecodeContext::default();
    loop {
        loop {
            let n = match frame_len(&buf, &ctx) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Internal::Message { id, msg: Err(e) }).await;
                    return;
                }
            };
            let frame = buf.split_to(n);
            let msg = Message::decode(&frame, &ctx);
            let stop = msg.is_err();
            if let Ok(Message::Open(o)) = &msg {
                ctx = DecodeContext::negotiated(&local_open, o);
            }
            if tx.send(Internal::Message { id, msg }).await.is_err() || stop {
                return;
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        match r.read_buf(&mut buf).await {
            Ok(0) => {
                let _ = tx.send(Internal::Closed { id, error: None }).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Internal::Closed { id, error: Some(e) }).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The task over real loopback sockets in the current namespace (no root needed); the
    //! interop tests in `tests/interop_*.rs` cover the rest in their own namespaces.
    use super::*;
    use crate::packet::{AsPath, Capability, Ipv4Prefix, Origin};

    const SECS: Duration = Duration::from_secs(10);

    async fn recv(s: &mut TcpStream, buf: &mut BytesMut, ctx: &DecodeContext) -> Message {
        loop {
            if let Some(n) = frame_len(buf, ctx).unwrap() {
                return Message::decode(&buf.split_to(n), ctx).unwrap();
            }
            let n = tokio::time::timeout(SECS, s.read_buf(buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed");
        }
    }

    #[tokio::test]
    async fn passive_session_establishes_and_exchanges_updates() {
        let listener = Listener::bind(&["127.0.0.1:0".parse().unwrap()])
            .await
            .unwrap();
        let port = listener.local_addrs()[0].port();
        let c = Config::from_yaml(
            "asn: 64512\nrouter_id: 192.0.2.1\npeers:\n  - address: 127.0.0.1\n    asn: 65002\n    passive: true\n",
        )
        .unwrap();
        let incoming = listener.register(&c.peers[0]).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let h = Session::spawn(
            c.peers[0].clone(),
            LocalConfig::from_config(&c),
            Some(incoming),
            tx,
        );
        assert!(h.wait_for(State::Active, SECS).await);

        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut buf = BytesMut::new();
        let open = Open::new(
            65002,
            90,
            Ipv4Addr::new(192, 0, 2, 2),
            vec![Capability::FourOctetAsn(65002)],
        );
        let enc = EncodeContext::default();
        s.write_all(&Message::Open(open.clone()).encode(&enc))
            .await
            .unwrap();
        let Message::Open(theirs) = recv(&mut s, &mut buf, &DecodeContext::default()).await else {
            panic!("expected an OPEN");
        };
        assert_eq!(theirs.asn(), 64512);
        let ctx = DecodeContext::negotiated(&open, &theirs);
        assert_eq!(recv(&mut s, &mut buf, &ctx).await, Message::Keepalive);
        s.write_all(&Message::Keepalive.encode(&enc)).await.unwrap();
        let SessionEventKind::Established(est) = rx.recv().await.unwrap().kind else {
            panic!("expected Established");
        };
        assert_eq!(est.remote_open, open);
        assert!(est.decode.four_octet_asn);

        let mut u = Update {
            nlri: vec![Ipv4Prefix::new(Ipv4Addr::new(198, 18, 0, 0), 26).unwrap()],
            ..Update::default()
        };
        u.attributes.origin = Some(Origin::Igp);
        u.attributes.as_path = Some(AsPath::from_sequence(vec![65002]));
        u.attributes.next_hop = Some(Ipv4Addr::new(192, 0, 2, 2));
        let enc = EncodeContext::from(&ctx);
        s.write_all(&Message::Update(u.clone()).encode(&enc))
            .await
            .unwrap();
        assert_eq!(
            rx.recv().await.unwrap().kind,
            SessionEventKind::Update(u.clone())
        );

        h.send(vec![u.clone()]);
        assert_eq!(recv(&mut s, &mut buf, &ctx).await, Message::Update(u));

        h.shutdown().await;
        let Message::Notification(n) = recv(&mut s, &mut buf, &ctx).await else {
            panic!("expected a NOTIFICATION");
        };
        assert_eq!((n.error.code(), n.error.subcode()), (6, 3));
    }
}
