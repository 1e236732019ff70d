//! The per-peer BGP session finite state machine (RFC 4271 §8), sans-IO.
//!
//! [`Fsm::process`] takes one RFC 4271 §8.1 event ([`Input`]) and returns the actions the
//! session layer must carry out, in order ([`Output`]): open or drop the TCP connection, send a
//! message, arm or stop a timer. The FSM owns no socket, no clock and no codec type: the tokio
//! session task translates sockets, timers and decoded messages into [`Input`]s and performs the
//! [`Output`]s. Updates pass through untouched as the generic payload `U`.
//!
//! One `Fsm` drives one TCP connection, as RFC 4271 §8 describes ("one for each configured peer,
//! plus one for each incoming TCP connection for which the peer has not yet been identified").
//! When two connections to the same peer race, the session layer runs
//! [`crate::collision::resolve`] on receipt of an OPEN and feeds
//! [`Input::OpenCollisionDump`] to the loser.
//!
//! Optional session attributes (RFC 4271 §8.1.1) as implemented:
//!
//! | attribute | value |
//! |---|---|
//! | AllowAutomaticStart | [`FsmConfig::allow_automatic_start`] (restart after [`Timer::IdleHold`]) |
//! | AllowAutomaticStop | true ([`Input::AutomaticStop`], e.g. max-prefix) |
//! | CollisionDetectEstablishedState | false |
//! | DampPeerOscillations | false: exponential backoff instead |
//! | DelayOpen | false |
//! | PassiveTcpEstablishment | [`FsmConfig::passive`] or the `*_with_PassiveTcpEstablishment` events |
//! | SendNOTIFICATIONwithoutOPEN | false |
//! | TrackTcpState | false |

use std::net::Ipv4Addr;
use std::time::Duration;

/// BGP version this speaker implements (RFC 4271 §4.2).
pub const BGP_VERSION: u8 = 4;

/// RFC 4271 §8.2.2 (OpenSent): "it is suggested that the HoldTimer be set to a large value
/// ... A HoldTimer value of 4 minutes is suggested."
pub const LARGE_HOLD_TIME: Duration = Duration::from_secs(240);

/// Cap of the connect retry backoff. RFC 4271 §10 suggests 120 s for ConnectRetryTime; the
/// peers of a pod network are a cluster's own nodes, mostly started together, and a node
/// back after a reboot should not wait two minutes for a peer that refused it while it
/// was down. A peer that connects to us meanwhile is taken at once anyway
/// ([`Fsm::accepts_while_idle`]).
pub const CONNECT_RETRY_MAX: Duration = Duration::from_secs(30);

/// NOTIFICATION error codes (RFC 4271 §4.5).
pub mod error_code {
    /// Message Header Error.
    pub const MESSAGE_HEADER: u8 = 1;
    /// OPEN Message Error.
    pub const OPEN_MESSAGE: u8 = 2;
    /// UPDATE Message Error.
    pub const UPDATE_MESSAGE: u8 = 3;
    /// Hold Timer Expired.
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;
}

/// OPEN Message Error subcodes (RFC 4271 §4.5, §6.2).
pub mod open_subcode {
    /// Unsupported Version Number.
    pub const UNSUPPORTED_VERSION: u8 = 1;
    /// Bad Peer AS.
    pub const BAD_PEER_AS: u8 = 2;
    /// Bad BGP Identifier.
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    /// Unacceptable Hold Time.
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
}

/// Finite State Machine Error subcodes (RFC 6608 §3).
pub mod fsm_subcode {
    /// Unspecified Error: an unexpected event that is not a message (e.g. a timer).
    pub const UNSPECIFIED: u8 = 0;
    /// Receive Unexpected Message in OpenSent State.
    pub const OPEN_SENT: u8 = 1;
    /// Receive Unexpected Message in OpenConfirm State.
    pub const OPEN_CONFIRM: u8 = 2;
    /// Receive Unexpected Message in Established State.
    pub const ESTABLISHED: u8 = 3;
}

/// Cease subcodes (RFC 4486 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CeaseSubcode {
    /// Maximum Number of Prefixes Reached.
    MaxPrefixesReached = 1,
    /// Administrative Shutdown.
    AdministrativeShutdown = 2,
    /// Peer De-configured.
    PeerDeconfigured = 3,
    /// Administrative Reset.
    AdministrativeReset = 4,
    /// Connection Rejected.
    ConnectionRejected = 5,
    /// Other Configuration Change.
    OtherConfigurationChange = 6,
    /// Connection Collision Resolution (RFC 4271 §6.8).
    ConnectionCollisionResolution = 7,
    /// Out of Resources.
    OutOfResources = 8,
}

/// Why a stop event stops the session: the Cease subcode and its data, e.g. an RFC 8203
/// shutdown communication for [`CeaseSubcode::AdministrativeShutdown`] or the RFC 4486 §4
/// (AFI, SAFI, upper bound) for [`CeaseSubcode::MaxPrefixesReached`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cease {
    pub subcode: CeaseSubcode,
    pub data: Vec<u8>,
}

impl Cease {
    /// A Cease with no data.
    pub fn new(subcode: CeaseSubcode) -> Self {
        Cease {
            subcode,
            data: Vec::new(),
        }
    }

    /// RFC 4486: Cease 6/2, the operator shut the session down.
    pub fn administrative_shutdown() -> Self {
        Self::new(CeaseSubcode::AdministrativeShutdown)
    }

    /// RFC 4486: Cease 6/4, the operator reset the session (follow with a start event).
    pub fn administrative_reset() -> Self {
        Self::new(CeaseSubcode::AdministrativeReset)
    }
}

/// A NOTIFICATION message's content (RFC 4271 §4.5), sent or received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION with no data.
    pub fn new(code: u8, subcode: u8) -> Self {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }
}

impl From<Cease> for Notification {
    fn from(c: Cease) -> Self {
        Notification {
            code: error_code::CEASE,
            subcode: c.subcode as u8,
            data: c.data,
        }
    }
}

/// The session states of RFC 4271 §8.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// The timers the FSM asks the session layer to run (RFC 4271 §8.1.3, §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
    /// RFC 4271 §8.1.3 Event 13's IdleHoldTimer, used here without DampPeerOscillations: the
    /// backoff delay before an automatic restart from Idle.
    IdleHold,
}

const TIMERS: [Timer; 4] = [
    Timer::ConnectRetry,
    Timer::Hold,
    Timer::Keepalive,
    Timer::IdleHold,
];

impl Timer {
    fn index(self) -> usize {
        self as usize
    }
}

/// RFC 4724 §3 Graceful Restart capability, as far as the FSM cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GracefulRestart {
    /// Restart Time in seconds (12 bits on the wire).
    pub restart_time: u16,
    /// Restart Flags, the 4 high bits of the capability: [`GracefulRestart::RESTARTING`] (R),
    /// [`GracefulRestart::NOTIFICATION`] (N, RFC 8538).
    pub flags: u8,
}

impl GracefulRestart {
    /// R bit: the sender has restarted (RFC 4724 §3).
    pub const RESTARTING: u8 = 0x8;
    /// N bit: the sender supports Graceful Restart for NOTIFICATIONs (RFC 8538 §2).
    pub const NOTIFICATION: u8 = 0x4;

    /// Whether the R bit is set.
    pub fn restarting(&self) -> bool {
        self.flags & Self::RESTARTING != 0
    }
}

/// Capabilities (RFC 5492) advertised in an OPEN, summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// RFC 6793 Support for 4-octet AS number.
    pub four_octet_asn: bool,
    /// RFC 4760 Multiprotocol IPv4 unicast. The session layer sets this also when the peer sent
    /// no Multiprotocol capability at all (RFC 4760 §8: IPv4 unicast is then implied).
    pub ipv4_unicast: bool,
    /// RFC 4760 Multiprotocol IPv6 unicast.
    pub ipv6_unicast: bool,
    /// RFC 2918 Route Refresh.
    pub route_refresh: bool,
    /// RFC 4724 Graceful Restart, if advertised.
    pub graceful_restart: Option<GracefulRestart>,
    /// RFC 8654 Extended Message.
    pub extended_messages: bool,
}

impl Default for Capabilities {
    /// What tabby advertises unless told otherwise: 4-octet ASNs, both unicast families, route
    /// refresh; no graceful restart, no extended messages.
    fn default() -> Self {
        Capabilities {
            four_octet_asn: true,
            ipv4_unicast: true,
            ipv6_unicast: true,
            route_refresh: true,
            graceful_restart: None,
            extended_messages: false,
        }
    }
}

/// An OPEN message (RFC 4271 §4.2) as the FSM needs it, free of the wire codec's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSummary {
    pub version: u8,
    /// The speaker's AS: the 4-octet AS from the RFC 6793 capability when present, otherwise
    /// the 2-octet My Autonomous System field (RFC 6793 §4.1: AS_TRANS already resolved).
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: Capabilities,
}

/// What both sides agreed on, handed out with [`Output::SessionEstablished`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_asn: u32,
    pub peer_router_id: Ipv4Addr,
    /// True when the peer is in our AS.
    pub ibgp: bool,
    /// RFC 4271 §4.2: the smaller of both Hold Times; 0 means no hold or keepalive timers.
    pub hold_time: u16,
    /// Seconds between our KEEPALIVEs; 0 when `hold_time` is 0.
    pub keepalive: u16,
    pub four_octet_asn: bool,
    pub ipv4_unicast: bool,
    pub ipv6_unicast: bool,
    pub route_refresh: bool,
    pub extended_messages: bool,
    /// The peer's Graceful Restart capability, when both sides advertised one.
    pub peer_graceful_restart: Option<GracefulRestart>,
}

/// Why a session that was Established went down ([`Output::SessionDown`]), or why the last
/// attempt ended ([`Fsm::last_error`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// ManualStop or AutomaticStop; a Cease was sent if a connection was up.
    Stopped(Cease),
    /// Our Hold Timer expired (NOTIFICATION 4/0 sent).
    HoldTimerExpired,
    /// The TCP connection failed or was closed by the peer.
    ConnectionFailed,
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// We sent this NOTIFICATION because of an error (OPEN, UPDATE, header, FSM, collision).
    NotificationSent(Notification),
    /// An event that closes the connection without a NOTIFICATION (RFC 4271 §8.2.2 "any other
    /// event" in Connect and Active).
    UnexpectedEvent,
}

/// An RFC 4271 §8.1 event. `U` is the decoded UPDATE, passed through to
/// [`Output::DeliverUpdate`].
///
/// Not modelled: Events 6/7 (DampPeerOscillations), 12/20 (DelayOpen), 14/15
/// (TcpConnection_Valid / Tcp_CR_Invalid: the session layer only accepts connections from the
/// configured peer address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<U = ()> {
    /// Event 1: ManualStart
    ManualStart,
    /// Event 2: ManualStop. RFC 4486: Cease 6/2 for a shutdown, 6/4 for a reset.
    ManualStop(Cease),
    /// Event 3: AutomaticStart
    AutomaticStart,
    /// Event 4: ManualStart_with_PassiveTcpEstablishment
    ManualStartPassive,
    /// Event 5: AutomaticStart_with_PassiveTcpEstablishment
    AutomaticStartPassive,
    /// Event 8: AutomaticStop (e.g. Cease 6/1 when a max-prefix limit with action stop is hit)
    AutomaticStop(Cease),
    /// Event 9: ConnectRetryTimer_Expires
    ConnectRetryTimerExpires,
    /// Event 10: HoldTimer_Expires
    HoldTimerExpires,
    /// Event 11: KeepaliveTimer_Expires
    KeepaliveTimerExpires,
    /// Event 13: IdleHoldTimer_Expires
    IdleHoldTimerExpires,
    /// Event 16: Tcp_CR_Acked (our outgoing connection is up)
    TcpCrAcked,
    /// Event 17: TcpConnectionConfirmed (an incoming connection from the peer was accepted).
    /// In Connect this FSM adopts the incoming connection: the session layer abandons its own
    /// pending attempt. In OpenSent, OpenConfirm and Established it is ignored: the session
    /// layer runs the new connection on a second FSM and resolves the collision (§6.8).
    TcpConnectionConfirmed,
    /// Event 18: TcpConnectionFails
    TcpConnectionFails,
    /// Event 19: BGPOpen (a well-formed OPEN; §6.2 semantic checks happen in the FSM)
    BgpOpen(OpenSummary),
    /// Event 21: BGPHeaderErr (the NOTIFICATION the codec says §6.1 demands)
    BgpHeaderErr(Notification),
    /// Event 22: BGPOpenMsgErr (the NOTIFICATION the codec says §6.2 demands)
    BgpOpenMsgErr(Notification),
    /// Event 23: OpenCollisionDump (this connection lost collision resolution, §6.8)
    OpenCollisionDump,
    /// Event 24: NotifMsgVerErr (a NOTIFICATION with an OPEN version error)
    NotifMsgVerErr(Notification),
    /// Event 25: NotifMsg
    NotifMsg(Notification),
    /// Event 26: KeepAliveMsg
    KeepAliveMsg,
    /// Event 27: UpdateMsg
    UpdateMsg(U),
    /// Event 28: UpdateMsgErr (the NOTIFICATION the codec says §6.3 demands)
    UpdateMsgErr(Notification),
    /// Not an RFC event: the session layer sent an UPDATE. RFC 4271 §8.2.2 (Established): "Each
    /// time the local system sends a KEEPALIVE or UPDATE message, it restarts its
    /// KeepaliveTimer".
    UpdateSent,
}

impl<U> Input<U> {
    /// True for the events that are received BGP messages (RFC 6608 picks the FSM error
    /// subcode by state only for those).
    fn is_message(&self) -> bool {
        matches!(
            self,
            Input::BgpOpen(_)
                | Input::BgpOpenMsgErr(_)
                | Input::NotifMsg(_)
                | Input::NotifMsgVerErr(_)
                | Input::KeepAliveMsg
                | Input::UpdateMsg(_)
                | Input::UpdateMsgErr(_)
        )
    }
}

/// An action for the session layer, to be performed in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<U = ()> {
    /// Initiate a TCP connection to the peer.
    Connect,
    /// Close the TCP connection (or abandon the connection attempt).
    DropConnection,
    /// Send an OPEN with these contents.
    SendOpen(OpenSummary),
    /// Send a KEEPALIVE.
    SendKeepalive,
    /// Send a NOTIFICATION (before any [`Output::DropConnection`] that follows it).
    SendNotification(Notification),
    /// Start the timer, or restart it if running, to fire once after `duration`.
    StartTimer { timer: Timer, duration: Duration },
    /// Stop the timer. Expiry events of a stopped timer that still arrive are ignored.
    StopTimer(Timer),
    /// The state changed.
    StateChanged { from: State, to: State },
    /// OpenConfirm → Established: start exchanging routes with these parameters.
    SessionEstablished(Negotiated),
    /// Established → Idle: RFC 4271 §8.2.2 "deletes all routes associated with this
    /// connection".
    SessionDown { reason: DownReason },
    /// A received UPDATE for the Adj-RIB-In.
    DeliverUpdate(U),
}

/// Per-peer FSM configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsmConfig {
    pub local_asn: u32,
    pub local_router_id: Ipv4Addr,
    /// The AS the peer must announce (RFC 4271 §6.2 Bad Peer AS otherwise).
    pub peer_asn: u32,
    /// Hold Time we propose: 0 or at least 3 (RFC 4271 §4.2).
    pub hold_time: u16,
    /// Keepalive interval; `None` means a third of the negotiated Hold Time (RFC 4271 §10).
    /// Never more than a third of the negotiated Hold Time.
    pub keepalive: Option<u16>,
    /// First ConnectRetryTimer / IdleHoldTimer delay; doubles on each attempt.
    pub connect_retry: Duration,
    /// Cap of the doubling ([`CONNECT_RETRY_MAX`] by default).
    pub connect_retry_max: Duration,
    /// PassiveTcpEstablishment, Calico/BIRD `passive`: never initiate a connection.
    pub passive: bool,
    /// AllowAutomaticStart: after a failure, restart on its own once [`Timer::IdleHold`] fires.
    pub allow_automatic_start: bool,
    /// What we advertise.
    pub capabilities: Capabilities,
    /// Seed of the jitter generator, so tests and replays are deterministic.
    pub jitter_seed: u64,
}

impl FsmConfig {
    /// Defaults for a peer: hold time 90 s, connect retry 1 s doubling up to
    /// [`CONNECT_RETRY_MAX`], active, automatic restart, [`Capabilities::default`].
    pub fn new(local_asn: u32, local_router_id: Ipv4Addr, peer_asn: u32) -> Self {
        FsmConfig {
            local_asn,
            local_router_id,
            peer_asn,
            hold_time: 90,
            keepalive: None,
            connect_retry: Duration::from_secs(1),
            connect_retry_max: CONNECT_RETRY_MAX,
            passive: false,
            allow_automatic_start: true,
            capabilities: Capabilities::default(),
            jitter_seed: 0,
        }
    }

    fn ibgp(&self) -> bool {
        self.local_asn == self.peer_asn
    }
}

/// The session FSM of one connection to one peer.
#[derive(Debug, Clone)]
pub struct Fsm {
    config: FsmConfig,
    state: State,
    /// RFC 4271 §8: ConnectRetryCounter, for status output.
    connect_retry_counter: u32,
    /// Exponent of the connect retry backoff; reset when a session is Established or the
    /// operator starts or stops the peer.
    backoff: u32,
    rng: u64,
    running: [bool; 4],
    negotiated: Option<Negotiated>,
    last_error: Option<DownReason>,
}

/// How a transition to Idle treats the ConnectRetryCounter and the automatic restart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// ManualStop: counter to zero, no restart.
    Manual,
    /// AutomaticStop: counter + 1, no restart.
    Automatic,
    /// Any failure: counter + 1, restart after the backoff if allowed.
    Failure,
    /// NotifMsgVerErr: counter unchanged, restart after the backoff if allowed.
    VersionError,
}

impl Fsm {
    /// A new FSM in Idle.
    pub fn new(config: FsmConfig) -> Self {
        let rng = config.jitter_seed;
        Fsm {
            config,
            state: State::Idle,
            connect_retry_counter: 0,
            backoff: 0,
            rng,
            running: [false; 4],
            negotiated: None,
            last_error: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &FsmConfig {
        &self.config
    }

    /// RFC 4271 §8: ConnectRetryCounter.
    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    /// The negotiated parameters, from OpenConfirm until the session goes down.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Why the last session or attempt ended.
    pub fn last_error(&self) -> Option<&DownReason> {
        self.last_error.as_ref()
    }

    /// Whether the FSM believes `timer` is running.
    pub fn timer_running(&self, timer: Timer) -> bool {
        self.running[timer.index()]
    }

    /// In Idle, whether an incoming connection from the peer is taken (see
    /// [`Input::TcpConnectionConfirmed`] in Idle): only while an automatic restart is
    /// pending, never after a manual or automatic stop.
    pub fn accepts_while_idle(&self) -> bool {
        self.state == State::Idle
            && self.config.allow_automatic_start
            && self.running[Timer::IdleHold.index()]
    }

    /// Feed one event; returns the actions to perform, in order.
    pub fn process<U>(&mut self, input: Input<U>) -> Vec<Output<U>> {
        let mut out = Vec::new();
        // A timer that we stopped may still fire in the session layer (a race, not an event).
        let timer = match input {
            Input::ConnectRetryTimerExpires => Some(Timer::ConnectRetry),
            Input::HoldTimerExpires => Some(Timer::Hold),
            Input::KeepaliveTimerExpires => Some(Timer::Keepalive),
            Input::IdleHoldTimerExpires => Some(Timer::IdleHold),
            _ => None,
        };
        if let Some(t) = timer {
            if !self.running[t.index()] {
                return out;
            }
            self.running[t.index()] = false;
        }
        match self.state {
            State::Idle => self.idle(input, &mut out),
            State::Connect | State::Active => self.connect_or_active(input, &mut out),
            State::OpenSent | State::OpenConfirm | State::Established => {
                self.opened(input, &mut out)
            }
        }
        out
    }

    /// RFC 4271 §8.2.2, Idle state.
    fn idle<U>(&mut self, input: Input<U>, out: &mut Vec<Output<U>>) {
        let passive = match input {
            Input::ManualStart | Input::ManualStartPassive => {
                self.backoff = 0;
                self.stop_timer(Timer::IdleHold, out);
                matches!(input, Input::ManualStartPassive)
            }
            Input::AutomaticStart | Input::IdleHoldTimerExpires => {
                self.stop_timer(Timer::IdleHold, out);
                false
            }
            Input::AutomaticStartPassive => {
                self.stop_timer(Timer::IdleHold, out);
                true
            }
            Input::ManualStop(_) => {
                // Ignored by the RFC; we also cancel a pending automatic restart.
                self.backoff = 0;
                self.stop_timer(Timer::IdleHold, out);
                return;
            }
            Input::TcpConnectionConfirmed if self.accepts_while_idle() => {
                // The peer connected while we wait to restart (IdleHoldTimer running after a
                // failure, AllowAutomaticStart). RFC 4271 §8.2.2 has Idle ignore Event 17,
                // but an automatic start may come at any time (§8.1.1: the IdleHoldTimer
                // only "holds" a restart to damp oscillations, and DampPeerOscillations is
                // off), and a passive one (Event 5, AutomaticStart_with_
                // PassiveTcpEstablishment) takes Idle to Active, where Event 17 is a
                // confirmed connection. So the two in a row: restart now, passively, with
                // the peer's connection. Refusing it instead leaves two speakers started
                // together refusing each other until their backoffs happen to meet.
                self.stop_timer(Timer::IdleHold, out);
                self.connect_retry_counter = 0;
                self.negotiated = None;
                self.set_state(State::Active, out);
                self.connect_or_active(Input::TcpConnectionConfirmed, out);
                return;
            }
            // RFC 4271 §8.2.2: any other event in Idle is ignored.
            _ => return,
        };
        self.connect_retry_counter = 0;
        self.negotiated = None;
        if passive || self.config.passive {
            // Listen only. With the `passive` attribute the peer never gets an outgoing
            // connection, so no ConnectRetryTimer is armed either.
            if !self.config.passive {
                let d = self.retry_delay(false);
                self.start_timer(Timer::ConnectRetry, d, out);
            }
            self.set_state(State::Active, out);
        } else {
            let d = self.retry_delay(false);
            self.start_timer(Timer::ConnectRetry, d, out);
            out.push(Output::Connect);
            self.set_state(State::Connect, out);
        }
    }

    /// RFC 4271 §8.2.2, Connect and Active states (DelayOpen false).
    fn connect_or_active<U>(&mut self, input: Input<U>, out: &mut Vec<Output<U>>) {
        match input {
            Input::ManualStart
            | Input::AutomaticStart
            | Input::ManualStartPassive
            | Input::AutomaticStartPassive
            | Input::UpdateSent => {}
            Input::ManualStop(cease) => {
                self.backoff = 0;
                self.enter_idle(None, DownReason::Stopped(cease), Stop::Manual, out);
            }
            Input::ConnectRetryTimerExpires => {
                if self.config.passive {
                    return;
                }
                if self.state == State::Connect {
                    out.push(Output::DropConnection);
                }
                let d = self.retry_delay(true);
                self.start_timer(Timer::ConnectRetry, d, out);
                out.push(Output::Connect);
                self.set_state(State::Connect, out);
            }
            Input::TcpCrAcked | Input::TcpConnectionConfirmed => {
                self.stop_timer(Timer::ConnectRetry, out);
                out.push(Output::SendOpen(self.local_open()));
                self.start_timer(Timer::Hold, LARGE_HOLD_TIME, out);
                self.set_state(State::OpenSent, out);
            }
            Input::TcpConnectionFails => {
                self.enter_idle(None, DownReason::ConnectionFailed, Stop::Failure, out);
            }
            Input::NotifMsgVerErr(n) => {
                self.enter_idle(
                    None,
                    DownReason::NotificationReceived(n),
                    Stop::VersionError,
                    out,
                );
            }
            Input::AutomaticStop(cease) => {
                self.enter_idle(None, DownReason::Stopped(cease), Stop::Automatic, out);
            }
            // BGPHeaderErr, BGPOpenMsgErr (SendNOTIFICATIONwithoutOPEN false) and every other
            // event: drop the connection and go to Idle.
            _ => self.enter_idle(None, DownReason::UnexpectedEvent, Stop::Failure, out),
        }
    }

    /// RFC 4271 §8.2.2, OpenSent, OpenConfirm and Established states: the connection is up
    /// and our OPEN is sent, so every error is reported with a NOTIFICATION.
    fn opened<U>(&mut self, input: Input<U>, out: &mut Vec<Output<U>>) {
        let state = self.state;
        match input {
            Input::ManualStart
            | Input::AutomaticStart
            | Input::ManualStartPassive
            | Input::AutomaticStartPassive => {}
            // A second TCP connection: tracked by the session layer per §6.8.
            Input::TcpCrAcked | Input::TcpConnectionConfirmed => {}
            Input::ManualStop(cease) => {
                self.backoff = 0;
                let n = Notification::from(cease.clone());
                self.enter_idle(Some(n), DownReason::Stopped(cease), Stop::Manual, out);
            }
            Input::AutomaticStop(cease) => {
                let n = Notification::from(cease.clone());
                self.enter_idle(Some(n), DownReason::Stopped(cease), Stop::Automatic, out);
            }
            Input::HoldTimerExpires => {
                let n = Notification::new(error_code::HOLD_TIMER_EXPIRED, 0);
                self.enter_idle(Some(n), DownReason::HoldTimerExpired, Stop::Failure, out);
            }
            Input::KeepaliveTimerExpires if state != State::OpenSent => {
                out.push(Output::SendKeepalive);
                self.restart_keepalive(out);
            }
            Input::UpdateSent if state == State::Established => self.restart_keepalive(out),
            Input::UpdateSent => {}
            Input::TcpConnectionFails if state == State::OpenSent => {
                // RFC 4271 §8.2.2 (OpenSent): close, restart the ConnectRetryTimer, → Active.
                out.push(Output::DropConnection);
                self.stop_timer(Timer::Hold, out);
                if !self.config.passive {
                    let d = self.retry_delay(true);
                    self.start_timer(Timer::ConnectRetry, d, out);
                }
                self.last_error = Some(DownReason::ConnectionFailed);
                self.set_state(State::Active, out);
            }
            Input::TcpConnectionFails => {
                self.enter_idle(None, DownReason::ConnectionFailed, Stop::Failure, out);
            }
            Input::BgpOpen(open) if state == State::OpenSent => self.open_received(open, out),
            Input::BgpHeaderErr(n) => {
                // §6.1 demands the header error's own NOTIFICATION in every state.
                self.enter_idle(
                    Some(n.clone()),
                    DownReason::NotificationSent(n),
                    Stop::Failure,
                    out,
                );
            }
            Input::BgpOpenMsgErr(n) if state != State::Established => {
                self.enter_idle(
                    Some(n.clone()),
                    DownReason::NotificationSent(n),
                    Stop::Failure,
                    out,
                );
            }
            Input::OpenCollisionDump => {
                let n = Notification::from(Cease::new(CeaseSubcode::ConnectionCollisionResolution));
                self.enter_idle(
                    Some(n.clone()),
                    DownReason::NotificationSent(n),
                    Stop::Failure,
                    out,
                );
            }
            Input::NotifMsgVerErr(n) => {
                self.enter_idle(
                    None,
                    DownReason::NotificationReceived(n),
                    Stop::VersionError,
                    out,
                );
            }
            // RFC 4271 lists NotifMsg among OpenSent's "other events" (answer with an FSM
            // error); we go Idle silently in every state instead, so the peer's reason (say, 2/2
            // Bad Peer AS for our OPEN) is what `last_error` keeps.
            Input::NotifMsg(n) => {
                self.enter_idle(
                    None,
                    DownReason::NotificationReceived(n),
                    Stop::Failure,
                    out,
                );
            }
            Input::KeepAliveMsg if state == State::OpenConfirm => {
                self.backoff = 0;
                self.restart_hold(out);
                self.set_state(State::Established, out);
                let negotiated = self
                    .negotiated
                    .clone()
                    .expect("OpenConfirm is only entered with negotiated parameters");
                out.push(Output::SessionEstablished(negotiated));
            }
            Input::KeepAliveMsg if state == State::Established => self.restart_hold(out),
            Input::UpdateMsg(update) if state == State::Established => {
                self.restart_hold(out);
                out.push(Output::DeliverUpdate(update));
            }
            Input::UpdateMsgErr(n) if state == State::Established => {
                self.enter_idle(
                    Some(n.clone()),
                    DownReason::NotificationSent(n),
                    Stop::Failure,
                    out,
                );
            }
            // Any other event: FSM error (RFC 4271 §8.2.2, subcodes from RFC 6608 §3).
            other => {
                let subcode = if other.is_message() {
                    match state {
                        State::OpenSent => fsm_subcode::OPEN_SENT,
                        State::OpenConfirm => fsm_subcode::OPEN_CONFIRM,
                        _ => fsm_subcode::ESTABLISHED,
                    }
                } else {
                    fsm_subcode::UNSPECIFIED
                };
                let n = Notification::new(error_code::FSM, subcode);
                self.enter_idle(
                    Some(n.clone()),
                    DownReason::NotificationSent(n),
                    Stop::Failure,
                    out,
                );
            }
        }
    }

    /// RFC 4271 §8.2.2 (OpenSent) Event 19 with the §6.2 checks.
    fn open_received<U>(&mut self, open: OpenSummary, out: &mut Vec<Output<U>>) {
        if let Err(n) = validate_open(&self.config, &open) {
            self.enter_idle(
                Some(n.clone()),
                DownReason::NotificationSent(n),
                Stop::Failure,
                out,
            );
            return;
        }
        let negotiated = negotiate(&self.config, &open);
        self.stop_timer(Timer::ConnectRetry, out);
        out.push(Output::SendKeepalive);
        self.negotiated = Some(negotiated);
        if self.negotiated_hold() == 0 {
            // RFC 4271 §4.4: a Hold Time of zero means no KEEPALIVEs and no hold timer.
            self.stop_timer(Timer::Hold, out);
        } else {
            self.restart_keepalive(out);
            self.restart_hold(out);
        }
        self.set_state(State::OpenConfirm, out);
    }

    fn negotiated_hold(&self) -> u16 {
        self.negotiated.as_ref().map_or(0, |n| n.hold_time)
    }

    fn restart_hold<U>(&mut self, out: &mut Vec<Output<U>>) {
        let hold = self.negotiated_hold();
        if hold != 0 {
            self.start_timer(Timer::Hold, Duration::from_secs(hold.into()), out);
        }
    }

    fn restart_keepalive<U>(&mut self, out: &mut Vec<Output<U>>) {
        let keepalive = self.negotiated.as_ref().map_or(0, |n| n.keepalive);
        if keepalive != 0 {
            self.start_timer(Timer::Keepalive, Duration::from_secs(keepalive.into()), out);
        }
    }

    /// The OPEN we send.
    fn local_open(&self) -> OpenSummary {
        OpenSummary {
            version: BGP_VERSION,
            asn: self.config.local_asn,
            hold_time: self.config.hold_time,
            router_id: self.config.local_router_id,
            capabilities: self.config.capabilities,
        }
    }

    /// Every transition to Idle: NOTIFICATION first, then timers, connection, state.
    fn enter_idle<U>(
        &mut self,
        notification: Option<Notification>,
        reason: DownReason,
        stop: Stop,
        out: &mut Vec<Output<U>>,
    ) {
        if let Some(n) = notification {
            out.push(Output::SendNotification(n));
        }
        for t in TIMERS {
            self.stop_timer(t, out);
        }
        out.push(Output::DropConnection);
        match stop {
            Stop::Manual => self.connect_retry_counter = 0,
            Stop::Automatic | Stop::Failure => {
                self.connect_retry_counter = self.connect_retry_counter.saturating_add(1)
            }
            Stop::VersionError => {}
        }
        let was = self.state;
        self.negotiated = None;
        self.set_state(State::Idle, out);
        if was == State::Established {
            out.push(Output::SessionDown {
                reason: reason.clone(),
            });
        }
        self.last_error = Some(reason);
        if self.config.allow_automatic_start && matches!(stop, Stop::Failure | Stop::VersionError) {
            let d = self.retry_delay(true);
            self.start_timer(Timer::IdleHold, d, out);
        }
    }

    fn set_state<U>(&mut self, to: State, out: &mut Vec<Output<U>>) {
        let from = self.state;
        if from != to {
            self.state = to;
            out.push(Output::StateChanged { from, to });
        }
    }

    fn start_timer<U>(&mut self, timer: Timer, duration: Duration, out: &mut Vec<Output<U>>) {
        self.running[timer.index()] = true;
        out.push(Output::StartTimer { timer, duration });
    }

    fn stop_timer<U>(&mut self, timer: Timer, out: &mut Vec<Output<U>>) {
        if self.running[timer.index()] {
            self.running[timer.index()] = false;
            out.push(Output::StopTimer(timer));
        }
    }

    /// The next ConnectRetryTimer / IdleHoldTimer delay: `connect_retry · 2^n`, capped at
    /// `connect_retry_max`, times a jitter factor in [0.75, 1.0] (RFC 4271 §10: "jitter ...
    /// should be applied to the timers associated with ... ConnectRetryTimer"). `n` counts
    /// failures (`advance`: this delay follows one): a start does not use a step up, so the
    /// first restart after a refused connection comes after `connect_retry`, not twice that.
    fn retry_delay(&mut self, advance: bool) -> Duration {
        let base = self
            .config
            .connect_retry
            .saturating_mul(1u32 << self.backoff.min(16));
        let capped = base.min(self.config.connect_retry_max.max(self.config.connect_retry));
        if advance {
            self.backoff = self.backoff.saturating_add(1);
        }
        let r = splitmix64(&mut self.rng);
        // 53 random bits → a uniform factor in [0.75, 1.0).
        let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
        capped.mul_f64(0.75 + 0.25 * unit)
    }
}

/// SplitMix64: a tiny, good-enough deterministic generator for timer jitter.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// RFC 4271 §6.2 checks of a received OPEN, in the RFC's order; the error is the NOTIFICATION
/// to send.
pub fn validate_open(config: &FsmConfig, open: &OpenSummary) -> Result<(), Notification> {
    if open.version != BGP_VERSION {
        // §6.2: "the Data field is a 2-octet unsigned integer, which indicates the largest,
        // locally-supported version number less than the version the remote BGP peer bid".
        return Err(Notification {
            code: error_code::OPEN_MESSAGE,
            subcode: open_subcode::UNSUPPORTED_VERSION,
            data: u16::from(BGP_VERSION).to_be_bytes().to_vec(),
        });
    }
    if open.asn != config.peer_asn {
        return Err(Notification::new(
            error_code::OPEN_MESSAGE,
            open_subcode::BAD_PEER_AS,
        ));
    }
    if open.hold_time == 1 || open.hold_time == 2 {
        // §4.2: "The Hold Time MUST be either zero or at least three seconds."
        return Err(Notification::new(
            error_code::OPEN_MESSAGE,
            open_subcode::UNACCEPTABLE_HOLD_TIME,
        ));
    }
    // RFC 6286 §2.2: the identifier is a non-zero 32-bit number; unique within an AS, so an
    // internal peer must not share ours.
    if open.router_id.is_unspecified()
        || (config.ibgp() && open.router_id == config.local_router_id)
    {
        return Err(Notification::new(
            error_code::OPEN_MESSAGE,
            open_subcode::BAD_BGP_IDENTIFIER,
        ));
    }
    Ok(())
}

/// Hold time, keepalive and capabilities both sides agreed on (RFC 4271 §4.2, §10).
pub fn negotiate(config: &FsmConfig, open: &OpenSummary) -> Negotiated {
    let hold_time = config.hold_time.min(open.hold_time);
    let keepalive = if hold_time == 0 {
        0
    } else {
        let third = hold_time / 3;
        config
            .keepalive
            .filter(|&k| k > 0)
            .unwrap_or(third)
            .min(third)
    };
    let ours = &config.capabilities;
    let theirs = &open.capabilities;
    Negotiated {
        peer_asn: open.asn,
        peer_router_id: open.router_id,
        ibgp: config.ibgp(),
        hold_time,
        keepalive,
        four_octet_asn: ours.four_octet_asn && theirs.four_octet_asn,
        ipv4_unicast: ours.ipv4_unicast && theirs.ipv4_unicast,
        ipv6_unicast: ours.ipv6_unicast && theirs.ipv6_unicast,
        route_refresh: ours.route_refresh && theirs.route_refresh,
        extended_messages: ours.extended_messages && theirs.extended_messages,
        peer_graceful_restart: ours.graceful_restart.and(theirs.graceful_restart),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const PEER_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const ASN: u32 = 64512;

    type In = Input<&'static str>;
    type Out = Output<&'static str>;

    fn config() -> FsmConfig {
        FsmConfig::new(ASN, LOCAL_ID, ASN)
    }

    fn peer_open() -> OpenSummary {
        OpenSummary {
            version: 4,
            asn: ASN,
            hold_time: 90,
            router_id: PEER_ID,
            capabilities: Capabilities::default(),
        }
    }

    /// Feeds all events; returns the outputs of the last one.
    fn drive(fsm: &mut Fsm, events: impl IntoIterator<Item = In>) -> Vec<Out> {
        let mut last = Vec::new();
        for e in events {
            last = fsm.process(e);
        }
        last
    }

    fn fsm_in(state: State) -> Fsm {
        fsm_in_with(config(), state)
    }

    fn fsm_in_with(config: FsmConfig, state: State) -> Fsm {
        let mut fsm = Fsm::new(config);
        let path: Vec<In> = match state {
            State::Idle => vec![],
            State::Connect => vec![In::ManualStart],
            State::Active => vec![In::ManualStartPassive],
            State::OpenSent => vec![In::ManualStart, In::TcpCrAcked],
            State::OpenConfirm => vec![In::ManualStart, In::TcpCrAcked, In::BgpOpen(peer_open())],
            State::Established => vec![
                In::ManualStart,
                In::TcpCrAcked,
                In::BgpOpen(peer_open()),
                In::KeepAliveMsg,
            ],
        };
        drive(&mut fsm, path);
        assert_eq!(fsm.state(), state);
        fsm
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Replaces jittered durations of the retry timers with zero so tests can compare.
    fn unjitter(out: Vec<Out>) -> Vec<Out> {
        out.into_iter()
            .map(|o| match o {
                Output::StartTimer {
                    timer: t @ (Timer::ConnectRetry | Timer::IdleHold),
                    ..
                } => Output::StartTimer {
                    timer: t,
                    duration: Duration::ZERO,
                },
                o => o,
            })
            .collect()
    }

    fn start(timer: Timer) -> Out {
        Output::StartTimer {
            timer,
            duration: Duration::ZERO,
        }
    }

    fn changed(from: State, to: State) -> Out {
        Output::StateChanged { from, to }
    }

    fn notif(code: u8, subcode: u8) -> Out {
        Output::SendNotification(Notification::new(code, subcode))
    }

    fn sent_notification(out: &[Out]) -> Option<&Notification> {
        out.iter().find_map(|o| match o {
            Output::SendNotification(n) => Some(n),
            _ => None,
        })
    }

    // ---- Idle ----

    #[test]
    fn idle_manual_start_connects() {
        let mut fsm = fsm_in(State::Idle);
        let out = unjitter(fsm.process(In::ManualStart));
        assert_eq!(
            out,
            vec![
                start(Timer::ConnectRetry),
                Output::Connect,
                changed(State::Idle, State::Connect)
            ]
        );
        assert_eq!(fsm.connect_retry_counter(), 0);
    }

    #[test]
    fn idle_automatic_start_connects() {
        let mut fsm = fsm_in(State::Idle);
        let out = unjitter(fsm.process(In::AutomaticStart));
        assert!(out.contains(&Output::Connect));
        assert_eq!(fsm.state(), State::Connect);
    }

    #[test]
    fn idle_manual_start_passive_goes_active_without_connect() {
        let mut fsm = fsm_in(State::Idle);
        let out = unjitter(fsm.process(In::ManualStartPassive));
        assert_eq!(
            out,
            vec![
                start(Timer::ConnectRetry),
                changed(State::Idle, State::Active)
            ]
        );
    }

    #[test]
    fn idle_automatic_start_passive_goes_active() {
        let mut fsm = fsm_in(State::Idle);
        fsm.process(In::AutomaticStartPassive);
        assert_eq!(fsm.state(), State::Active);
    }

    #[test]
    fn passive_config_never_connects() {
        let mut cfg = config();
        cfg.passive = true;
        let mut fsm = Fsm::new(cfg);
        let out = fsm.process(In::ManualStart);
        assert_eq!(out, vec![changed(State::Idle, State::Active)]);
        // No ConnectRetryTimer runs, so a stray expiry does nothing.
        assert!(fsm.process(In::ConnectRetryTimerExpires).is_empty());
        assert_eq!(fsm.state(), State::Active);
        // A failure restarts into Active again, never into Connect.
        let out = unjitter(drive(
            &mut fsm,
            [In::TcpConnectionConfirmed, In::TcpConnectionFails],
        ));
        assert!(!out.contains(&Output::Connect));
        assert_eq!(fsm.state(), State::Active);
        assert!(!fsm.timer_running(Timer::ConnectRetry));
    }

    #[test]
    fn idle_ignores_other_events() {
        for e in [
            In::ManualStop(Cease::administrative_shutdown()),
            In::AutomaticStop(Cease::new(CeaseSubcode::MaxPrefixesReached)),
            In::TcpCrAcked,
            In::TcpConnectionConfirmed,
            In::TcpConnectionFails,
            In::BgpOpen(peer_open()),
            In::KeepAliveMsg,
            In::UpdateMsg("u"),
            In::NotifMsg(Notification::new(6, 2)),
            In::HoldTimerExpires,
        ] {
            let mut fsm = fsm_in(State::Idle);
            assert!(fsm.process(e.clone()).is_empty(), "{e:?}");
            assert_eq!(fsm.state(), State::Idle);
        }
    }

    // ---- Connect ----

    #[test]
    fn connect_ignores_start_events() {
        let mut fsm = fsm_in(State::Connect);
        assert!(fsm.process(In::ManualStart).is_empty());
        assert!(fsm.process(In::AutomaticStart).is_empty());
        assert_eq!(fsm.state(), State::Connect);
    }

    #[test]
    fn connect_manual_stop_goes_idle_without_notification() {
        let mut fsm = fsm_in(State::Connect);
        let out = fsm.process(In::ManualStop(Cease::administrative_shutdown()));
        assert_eq!(
            out,
            vec![
                Output::StopTimer(Timer::ConnectRetry),
                Output::DropConnection,
                changed(State::Connect, State::Idle)
            ]
        );
        assert_eq!(fsm.connect_retry_counter(), 0);
        assert!(!fsm.timer_running(Timer::IdleHold), "no automatic restart");
    }

    #[test]
    fn connect_retry_timer_expiry_retries() {
        let mut fsm = fsm_in(State::Connect);
        let out = unjitter(fsm.process(In::ConnectRetryTimerExpires));
        assert_eq!(
            out,
            vec![
                Output::DropConnection,
                start(Timer::ConnectRetry),
                Output::Connect
            ]
        );
        assert_eq!(fsm.state(), State::Connect);
    }

    #[test]
    fn connect_tcp_cr_acked_sends_open_with_large_hold_timer() {
        let mut fsm = fsm_in(State::Connect);
        let out = fsm.process(In::TcpCrAcked);
        assert_eq!(
            out,
            vec![
                Output::StopTimer(Timer::ConnectRetry),
                Output::SendOpen(OpenSummary {
                    version: 4,
                    asn: ASN,
                    hold_time: 90,
                    router_id: LOCAL_ID,
                    capabilities: Capabilities::default(),
                }),
                Output::StartTimer {
                    timer: Timer::Hold,
                    duration: secs(240)
                },
                changed(State::Connect, State::OpenSent)
            ]
        );
    }

    #[test]
    fn connect_tcp_connection_confirmed_sends_open() {
        let mut fsm = fsm_in(State::Connect);
        let out = fsm.process(In::TcpConnectionConfirmed);
        assert!(matches!(out[1], Output::SendOpen(_)));
        assert_eq!(fsm.state(), State::OpenSent);
    }

    #[test]
    fn connect_tcp_fails_goes_idle_and_schedules_restart() {
        let mut fsm = fsm_in(State::Connect);
        let out = unjitter(fsm.process(In::TcpConnectionFails));
        assert_eq!(
            out,
            vec![
                Output::StopTimer(Timer::ConnectRetry),
                Output::DropConnection,
                changed(State::Connect, State::Idle),
                start(Timer::IdleHold)
            ]
        );
        assert_eq!(fsm.connect_retry_counter(), 1);
        assert_eq!(fsm.last_error(), Some(&DownReason::ConnectionFailed));
        // IdleHoldTimer_Expires restarts like AutomaticStart.
        let out = unjitter(fsm.process(In::IdleHoldTimerExpires));
        assert_eq!(
            out,
            vec![
                start(Timer::ConnectRetry),
                Output::Connect,
                changed(State::Idle, State::Connect)
            ]
        );
    }

    /// Not RFC 4271 §8.2.2 to the letter (Idle ignores Event 17), but what it allows: an
    /// automatic start may happen while the IdleHoldTimer runs (it only damps restarts), and
    /// AutomaticStart_with_PassiveTcpEstablishment (Event 5) then Event 17 takes Idle to
    /// Active to OpenSent. A peer that connects while we wait to restart is taken at once.
    #[test]
    fn idle_hold_accepts_the_peers_connection() {
        let mut fsm = fsm_in(State::Connect);
        fsm.process(In::TcpConnectionFails);
        assert!(fsm.accepts_while_idle());
        let out = fsm.process(In::TcpConnectionConfirmed);
        assert_eq!(out[0], Output::StopTimer(Timer::IdleHold));
        assert_eq!(out[1], changed(State::Idle, State::Active));
        assert!(matches!(out[2], Output::SendOpen(_)));
        assert_eq!(
            *out.last().unwrap(),
            changed(State::Active, State::OpenSent)
        );
        assert!(!out.contains(&Output::Connect));
        assert_eq!(fsm.state(), State::OpenSent);
        assert!(!fsm.timer_running(Timer::IdleHold));
        assert!(fsm.timer_running(Timer::Hold));
        // The stale IdleHold expiry is no event any more.
        assert!(fsm.process(In::IdleHoldTimerExpires).is_empty());
    }

    #[test]
    fn idle_after_stop_refuses_connections() {
        // After a ManualStop, or an AutomaticStop (max-prefix): no restart is pending, so a
        // connection from the peer is ignored as §8.2.2 says.
        let mut fsm = fsm_in(State::OpenSent);
        fsm.process(In::AutomaticStop(Cease::new(
            CeaseSubcode::MaxPrefixesReached,
        )));
        assert!(!fsm.accepts_while_idle());
        assert!(fsm.process(In::TcpConnectionConfirmed).is_empty());
        assert_eq!(fsm.state(), State::Idle);
        let mut fsm = fsm_in(State::Connect);
        fsm.process(In::ManualStop(Cease::administrative_shutdown()));
        assert!(fsm.process(In::TcpConnectionConfirmed).is_empty());
    }

    #[test]
    fn no_automatic_restart_when_not_allowed() {
        let mut cfg = config();
        cfg.allow_automatic_start = false;
        let mut fsm = fsm_in_with(cfg, State::Connect);
        let out = fsm.process(In::TcpConnectionFails);
        assert!(!out.iter().any(|o| matches!(
            o,
            Output::StartTimer {
                timer: Timer::IdleHold,
                ..
            }
        )));
    }

    #[test]
    fn connect_notif_ver_err_goes_idle_without_counting() {
        let mut fsm = fsm_in(State::Connect);
        fsm.process(In::NotifMsgVerErr(Notification::new(2, 1)));
        assert_eq!(fsm.state(), State::Idle);
        assert_eq!(fsm.connect_retry_counter(), 0);
    }

    #[test]
    fn connect_other_events_go_idle_without_notification() {
        for e in [
            In::BgpOpen(peer_open()),
            In::KeepAliveMsg,
            In::UpdateMsg("u"),
            In::NotifMsg(Notification::new(6, 2)),
            In::BgpHeaderErr(Notification::new(1, 1)),
            In::BgpOpenMsgErr(Notification::new(2, 4)),
            In::OpenCollisionDump,
        ] {
            let mut fsm = fsm_in(State::Connect);
            let out = fsm.process(e.clone());
            assert_eq!(sent_notification(&out), None, "{e:?}");
            assert!(out.contains(&Output::DropConnection));
            assert_eq!(fsm.state(), State::Idle, "{e:?}");
            assert_eq!(fsm.connect_retry_counter(), 1);
        }
    }

    #[test]
    fn connect_automatic_stop_goes_idle_without_restart() {
        let mut fsm = fsm_in(State::Connect);
        fsm.process(In::AutomaticStop(Cease::new(
            CeaseSubcode::PeerDeconfigured,
        )));
        assert_eq!(fsm.state(), State::Idle);
        assert!(!fsm.timer_running(Timer::IdleHold));
    }

    // ---- Active ----

    #[test]
    fn active_connect_retry_expiry_goes_connect() {
        let mut fsm = fsm_in(State::Active);
        let out = unjitter(fsm.process(In::ConnectRetryTimerExpires));
        assert_eq!(
            out,
            vec![
                start(Timer::ConnectRetry),
                Output::Connect,
                changed(State::Active, State::Connect)
            ]
        );
    }

    #[test]
    fn active_tcp_connection_confirmed_sends_open() {
        let mut fsm = fsm_in(State::Active);
        let out = fsm.process(In::TcpConnectionConfirmed);
        assert!(out.iter().any(|o| matches!(o, Output::SendOpen(_))));
        assert_eq!(fsm.state(), State::OpenSent);
    }

    #[test]
    fn active_manual_stop_goes_idle() {
        let mut fsm = fsm_in(State::Active);
        fsm.process(In::ManualStop(Cease::administrative_shutdown()));
        assert_eq!(fsm.state(), State::Idle);
        assert!(!fsm.timer_running(Timer::ConnectRetry));
    }

    #[test]
    fn active_tcp_fails_goes_idle() {
        let mut fsm = fsm_in(State::Active);
        fsm.process(In::TcpConnectionFails);
        assert_eq!(fsm.state(), State::Idle);
        assert_eq!(fsm.connect_retry_counter(), 1);
    }

    #[test]
    fn active_other_event_goes_idle() {
        let mut fsm = fsm_in(State::Active);
        let out = fsm.process(In::KeepAliveMsg);
        assert_eq!(sent_notification(&out), None);
        assert_eq!(fsm.state(), State::Idle);
    }

    // ---- OpenSent ----

    #[test]
    fn open_sent_valid_open_goes_open_confirm() {
        let mut fsm = fsm_in(State::OpenSent);
        let mut open = peer_open();
        open.hold_time = 30;
        let out = fsm.process(In::BgpOpen(open));
        assert_eq!(
            out,
            vec![
                Output::SendKeepalive,
                Output::StartTimer {
                    timer: Timer::Keepalive,
                    duration: secs(10)
                },
                Output::StartTimer {
                    timer: Timer::Hold,
                    duration: secs(30)
                },
                changed(State::OpenSent, State::OpenConfirm)
            ]
        );
        assert_eq!(fsm.negotiated().unwrap().hold_time, 30);
        assert_eq!(fsm.negotiated().unwrap().keepalive, 10);
    }

    #[test]
    fn open_sent_zero_hold_time_means_no_timers() {
        let mut fsm = fsm_in(State::OpenSent);
        let mut open = peer_open();
        open.hold_time = 0;
        let out = fsm.process(In::BgpOpen(open));
        assert_eq!(
            out,
            vec![
                Output::SendKeepalive,
                Output::StopTimer(Timer::Hold),
                changed(State::OpenSent, State::OpenConfirm)
            ]
        );
        let out = fsm.process(In::KeepAliveMsg);
        assert!(!out.iter().any(|o| matches!(o, Output::StartTimer { .. })));
        assert_eq!(fsm.state(), State::Established);
        assert!(!fsm.timer_running(Timer::Hold));
        assert!(!fsm.timer_running(Timer::Keepalive));
    }

    #[test]
    fn open_sent_unsupported_version_2_1() {
        let mut fsm = fsm_in(State::OpenSent);
        let mut open = peer_open();
        open.version = 5;
        let out = unjitter(fsm.process(In::BgpOpen(open)));
        assert_eq!(
            out,
            vec![
                Output::SendNotification(Notification {
                    code: 2,
                    subcode: 1,
                    data: vec![0, 4]
                }),
                Output::StopTimer(Timer::Hold),
                Output::DropConnection,
                changed(State::OpenSent, State::Idle),
                start(Timer::IdleHold)
            ]
        );
        assert_eq!(fsm.connect_retry_counter(), 1);
    }

    #[test]
    fn open_sent_bad_peer_as_2_2() {
        let mut fsm = fsm_in(State::OpenSent);
        let mut open = peer_open();
        open.asn = 64513;
        let out = fsm.process(In::BgpOpen(open));
        assert_eq!(out[0], notif(2, 2));
        assert_eq!(fsm.state(), State::Idle);
    }

    #[test]
    fn open_sent_zero_identifier_2_3() {
        let mut fsm = fsm_in(State::OpenSent);
        let mut open = peer_open();
        open.router_id = Ipv4Addr::UNSPECIFIED;
        assert_eq!(fsm.process(In::BgpOpen(open))[0], notif(2, 3));
    }

    #[test]
    fn open_sent_ibgp_identifier_equal_to_ours_2_3() {
        let mut fsm = fsm_in(State::OpenSent);
        let mut open = peer_open();
        open.router_id = LOCAL_ID;
        assert_eq!(fsm.process(In::BgpOpen(open))[0], notif(2, 3));
    }

    #[test]
    fn open_sent_ebgp_identifier_equal_to_ours_is_allowed() {
        let mut cfg = config();
        cfg.peer_asn = 65001;
        let mut fsm = fsm_in_with(cfg, State::OpenSent);
        let mut open = peer_open();
        open.asn = 65001;
        open.router_id = LOCAL_ID;
        fsm.process(In::BgpOpen(open));
        assert_eq!(fsm.state(), State::OpenConfirm);
        assert!(!fsm.negotiated().unwrap().ibgp);
    }

    #[test]
    fn open_sent_hold_time_1_or_2_is_2_6() {
        for hold in [1, 2] {
            let mut fsm = fsm_in(State::OpenSent);
            let mut open = peer_open();
            open.hold_time = hold;
            assert_eq!(fsm.process(In::BgpOpen(open))[0], notif(2, 6));
        }
    }

    #[test]
    fn open_sent_hold_timer_expiry_4_0() {
        let mut fsm = fsm_in(State::OpenSent);
        let out = fsm.process(In::HoldTimerExpires);
        assert_eq!(out[0], notif(4, 0));
        assert_eq!(fsm.state(), State::Idle);
        assert_eq!(fsm.last_error(), Some(&DownReason::HoldTimerExpired));
    }

    #[test]
    fn open_sent_manual_stop_sends_cease_6_2() {
        let mut fsm = fsm_in(State::OpenSent);
        let out = fsm.process(In::ManualStop(Cease::administrative_shutdown()));
        assert_eq!(
            out,
            vec![
                notif(6, 2),
                Output::StopTimer(Timer::Hold),
                Output::DropConnection,
                changed(State::OpenSent, State::Idle)
            ]
        );
        assert_eq!(fsm.connect_retry_counter(), 0);
    }

    #[test]
    fn open_sent_automatic_stop_sends_cease() {
        let mut fsm = fsm_in(State::OpenSent);
        let out = fsm.process(In::AutomaticStop(Cease::new(CeaseSubcode::OutOfResources)));
        assert_eq!(out[0], notif(6, 8));
        assert_eq!(fsm.connect_retry_counter(), 1);
        assert!(!fsm.timer_running(Timer::IdleHold));
    }

    #[test]
    fn open_sent_tcp_fails_goes_active() {
        let mut fsm = fsm_in(State::OpenSent);
        let out = unjitter(fsm.process(In::TcpConnectionFails));
        assert_eq!(
            out,
            vec![
                Output::DropConnection,
                Output::StopTimer(Timer::Hold),
                start(Timer::ConnectRetry),
                changed(State::OpenSent, State::Active)
            ]
        );
    }

    #[test]
    fn open_sent_second_connection_is_ignored() {
        let mut fsm = fsm_in(State::OpenSent);
        assert!(fsm.process(In::TcpConnectionConfirmed).is_empty());
        assert_eq!(fsm.state(), State::OpenSent);
    }

    #[test]
    fn open_sent_collision_dump_sends_cease_6_7() {
        let mut fsm = fsm_in(State::OpenSent);
        let out = fsm.process(In::OpenCollisionDump);
        assert_eq!(out[0], notif(6, 7));
        assert_eq!(fsm.state(), State::Idle);
    }

    #[test]
    fn open_sent_header_and_open_errors_send_their_notification() {
        for n in [Notification::new(1, 2), Notification::new(2, 4)] {
            for e in [In::BgpHeaderErr(n.clone()), In::BgpOpenMsgErr(n.clone())] {
                let mut fsm = fsm_in(State::OpenSent);
                let out = fsm.process(e);
                assert_eq!(out[0], Output::SendNotification(n.clone()));
                assert_eq!(fsm.state(), State::Idle);
            }
        }
    }

    #[test]
    fn open_sent_notif_ver_err_goes_idle_silently() {
        let mut fsm = fsm_in(State::OpenSent);
        let out = fsm.process(In::NotifMsgVerErr(Notification::new(2, 1)));
        assert_eq!(sent_notification(&out), None);
        assert_eq!(fsm.state(), State::Idle);
        assert_eq!(fsm.connect_retry_counter(), 0);
    }

    #[test]
    fn open_sent_unexpected_messages_are_fsm_error_5_1() {
        for e in [
            In::KeepAliveMsg,
            In::UpdateMsg("u"),
            In::UpdateMsgErr(Notification::new(3, 1)),
        ] {
            let mut fsm = fsm_in(State::OpenSent);
            let out = fsm.process(e.clone());
            assert_eq!(out[0], notif(5, 1), "{e:?}");
            assert_eq!(fsm.state(), State::Idle);
        }
    }

    #[test]
    fn open_sent_notification_goes_idle_and_keeps_the_peers_reason() {
        let mut fsm = fsm_in(State::OpenSent);
        let n = Notification::new(2, 2);
        let out = fsm.process(In::NotifMsg(n.clone()));
        assert_eq!(sent_notification(&out), None);
        assert_eq!(fsm.state(), State::Idle);
        assert_eq!(fsm.last_error(), Some(&DownReason::NotificationReceived(n)));
    }

    #[test]
    fn open_sent_connect_retry_expiry_is_fsm_error_5_0() {
        // Only reachable if the session layer's timer is still running: simulate by arming it.
        let mut fsm = fsm_in(State::OpenSent);
        fsm.running[Timer::ConnectRetry.index()] = true;
        let out: Vec<Out> = fsm.process(In::ConnectRetryTimerExpires);
        assert_eq!(out[0], notif(5, 0));
    }

    // ---- OpenConfirm ----

    #[test]
    fn open_confirm_keepalive_establishes() {
        let mut fsm = fsm_in(State::OpenConfirm);
        let out = fsm.process(In::KeepAliveMsg);
        let negotiated = fsm.negotiated().unwrap().clone();
        assert_eq!(
            out,
            vec![
                Output::StartTimer {
                    timer: Timer::Hold,
                    duration: secs(90)
                },
                changed(State::OpenConfirm, State::Established),
                Output::SessionEstablished(negotiated.clone())
            ]
        );
        assert_eq!(
            negotiated,
            Negotiated {
                peer_asn: ASN,
                peer_router_id: PEER_ID,
                ibgp: true,
                hold_time: 90,
                keepalive: 30,
                four_octet_asn: true,
                ipv4_unicast: true,
                ipv6_unicast: true,
                route_refresh: true,
                extended_messages: false,
                peer_graceful_restart: None,
            }
        );
    }

    #[test]
    fn open_confirm_keepalive_timer_sends_keepalive() {
        let mut fsm = fsm_in(State::OpenConfirm);
        let out = fsm.process(In::KeepaliveTimerExpires);
        assert_eq!(
            out,
            vec![
                Output::SendKeepalive,
                Output::StartTimer {
                    timer: Timer::Keepalive,
                    duration: secs(30)
                }
            ]
        );
    }

    #[test]
    fn open_confirm_hold_timer_expiry_4_0() {
        let mut fsm = fsm_in(State::OpenConfirm);
        let out = fsm.process(In::HoldTimerExpires);
        assert_eq!(out[0], notif(4, 0));
        assert_eq!(fsm.state(), State::Idle);
        assert!(!fsm.timer_running(Timer::Keepalive));
    }

    #[test]
    fn open_confirm_notification_goes_idle() {
        let mut fsm = fsm_in(State::OpenConfirm);
        let n = Notification::new(6, 5);
        let out = fsm.process(In::NotifMsg(n.clone()));
        assert_eq!(sent_notification(&out), None);
        assert_eq!(fsm.state(), State::Idle);
        assert_eq!(fsm.last_error(), Some(&DownReason::NotificationReceived(n)));
    }

    #[test]
    fn open_confirm_tcp_fails_goes_idle() {
        let mut fsm = fsm_in(State::OpenConfirm);
        fsm.process(In::TcpConnectionFails);
        assert_eq!(fsm.state(), State::Idle);
    }

    #[test]
    fn open_confirm_collision_dump_6_7() {
        let mut fsm = fsm_in(State::OpenConfirm);
        let out = fsm.process(In::OpenCollisionDump);
        assert_eq!(out[0], notif(6, 7));
        assert_eq!(fsm.state(), State::Idle);
    }

    #[test]
    fn open_confirm_manual_stop_admin_reset_6_4() {
        let mut fsm = fsm_in(State::OpenConfirm);
        let out = fsm.process(In::ManualStop(Cease::administrative_reset()));
        assert_eq!(out[0], notif(6, 4));
        assert_eq!(fsm.state(), State::Idle);
        // The reset's second half: the operator's start.
        fsm.process(In::ManualStart);
        assert_eq!(fsm.state(), State::Connect);
    }

    #[test]
    fn open_confirm_unexpected_messages_are_fsm_error_5_2() {
        for e in [
            In::BgpOpen(peer_open()),
            In::UpdateMsg("u"),
            In::UpdateMsgErr(Notification::new(3, 1)),
        ] {
            let mut fsm = fsm_in(State::OpenConfirm);
            let out = fsm.process(e.clone());
            assert_eq!(out[0], notif(5, 2), "{e:?}");
            assert_eq!(fsm.state(), State::Idle);
        }
    }

    // ---- Established ----

    #[test]
    fn established_update_is_delivered_and_restarts_hold_timer() {
        let mut fsm = fsm_in(State::Established);
        let out = fsm.process(In::UpdateMsg("u1"));
        assert_eq!(
            out,
            vec![
                Output::StartTimer {
                    timer: Timer::Hold,
                    duration: secs(90)
                },
                Output::DeliverUpdate("u1")
            ]
        );
    }

    #[test]
    fn established_keepalive_restarts_hold_timer() {
        let mut fsm = fsm_in(State::Established);
        let out = fsm.process(In::KeepAliveMsg);
        assert_eq!(
            out,
            vec![Output::StartTimer {
                timer: Timer::Hold,
                duration: secs(90)
            }]
        );
    }

    #[test]
    fn established_keepalive_timer_sends_keepalive() {
        let mut fsm = fsm_in(State::Established);
        let out = fsm.process(In::KeepaliveTimerExpires);
        assert_eq!(
            out,
            vec![
                Output::SendKeepalive,
                Output::StartTimer {
                    timer: Timer::Keepalive,
                    duration: secs(30)
                }
            ]
        );
    }

    #[test]
    fn established_update_sent_restarts_keepalive_timer() {
        let mut fsm = fsm_in(State::Established);
        let out = fsm.process(In::UpdateSent);
        assert_eq!(
            out,
            vec![Output::StartTimer {
                timer: Timer::Keepalive,
                duration: secs(30)
            }]
        );
    }

    #[test]
    fn configured_keepalive_is_used_but_never_above_a_third() {
        let mut cfg = config();
        cfg.keepalive = Some(10);
        let fsm = fsm_in_with(cfg.clone(), State::Established);
        assert_eq!(fsm.negotiated().unwrap().keepalive, 10);
        cfg.keepalive = Some(60);
        let fsm = fsm_in_with(cfg, State::Established);
        assert_eq!(fsm.negotiated().unwrap().keepalive, 30);
    }

    #[test]
    fn established_hold_timer_expiry_4_0_and_session_down() {
        let mut fsm = fsm_in(State::Established);
        let out = unjitter(fsm.process(In::HoldTimerExpires));
        assert_eq!(
            out,
            vec![
                notif(4, 0),
                Output::StopTimer(Timer::Keepalive),
                Output::DropConnection,
                changed(State::Established, State::Idle),
                Output::SessionDown {
                    reason: DownReason::HoldTimerExpired
                },
                start(Timer::IdleHold)
            ]
        );
        assert_eq!(fsm.negotiated(), None);
    }

    #[test]
    fn established_manual_stop_cease_6_2_with_shutdown_communication() {
        let mut fsm = fsm_in(State::Established);
        let cease = Cease {
            subcode: CeaseSubcode::AdministrativeShutdown,
            data: b"\x0dmaintenance 1".to_vec(),
        };
        let out = fsm.process(In::ManualStop(cease.clone()));
        assert_eq!(
            out,
            vec![
                Output::SendNotification(Notification {
                    code: 6,
                    subcode: 2,
                    data: cease.data.clone()
                }),
                Output::StopTimer(Timer::Hold),
                Output::StopTimer(Timer::Keepalive),
                Output::DropConnection,
                changed(State::Established, State::Idle),
                Output::SessionDown {
                    reason: DownReason::Stopped(cease)
                }
            ]
        );
    }

    #[test]
    fn established_automatic_stop_max_prefix_6_1() {
        let mut fsm = fsm_in(State::Established);
        let out = fsm.process(In::AutomaticStop(Cease::new(
            CeaseSubcode::MaxPrefixesReached,
        )));
        assert_eq!(out[0], notif(6, 1));
        assert!(out.iter().any(|o| matches!(o, Output::SessionDown { .. })));
    }

    #[test]
    fn established_notification_goes_down() {
        let mut fsm = fsm_in(State::Established);
        let n = Notification::new(6, 2);
        let out = fsm.process(In::NotifMsg(n.clone()));
        assert_eq!(sent_notification(&out), None);
        assert!(out.contains(&Output::SessionDown {
            reason: DownReason::NotificationReceived(n)
        }));
    }

    #[test]
    fn established_tcp_fails_goes_down() {
        let mut fsm = fsm_in(State::Established);
        let out = fsm.process(In::TcpConnectionFails);
        assert!(out.contains(&Output::SessionDown {
            reason: DownReason::ConnectionFailed
        }));
        assert_eq!(fsm.state(), State::Idle);
    }

    #[test]
    fn established_update_error_sends_its_notification() {
        let mut fsm = fsm_in(State::Established);
        let n = Notification::new(3, 3);
        let out = fsm.process(In::UpdateMsgErr(n.clone()));
        assert_eq!(out[0], Output::SendNotification(n));
        assert_eq!(fsm.state(), State::Idle);
    }

    #[test]
    fn established_collision_dump_6_7() {
        let mut fsm = fsm_in(State::Established);
        assert_eq!(fsm.process(In::OpenCollisionDump)[0], notif(6, 7));
    }

    #[test]
    fn established_unexpected_open_is_fsm_error_5_3() {
        for e in [
            In::BgpOpen(peer_open()),
            In::BgpOpenMsgErr(Notification::new(2, 4)),
        ] {
            let mut fsm = fsm_in(State::Established);
            let out = fsm.process(e);
            assert_eq!(out[0], notif(5, 3));
            assert!(out.iter().any(|o| matches!(o, Output::SessionDown { .. })));
        }
    }

    #[test]
    fn established_header_error_sends_header_notification() {
        let mut fsm = fsm_in(State::Established);
        let out = fsm.process(In::BgpHeaderErr(Notification::new(1, 1)));
        assert_eq!(out[0], notif(1, 1));
    }

    #[test]
    fn established_ignores_second_connection_and_starts() {
        let mut fsm = fsm_in(State::Established);
        assert!(fsm.process(In::TcpConnectionConfirmed).is_empty());
        assert!(fsm.process(In::ManualStart).is_empty());
        assert_eq!(fsm.state(), State::Established);
    }

    // ---- timers and backoff ----

    #[test]
    fn stale_timer_expiry_is_ignored() {
        let mut fsm = fsm_in(State::Established);
        fsm.process(In::ManualStop(Cease::administrative_shutdown()));
        assert!(fsm.process(In::HoldTimerExpires).is_empty());
        assert!(fsm.process(In::KeepaliveTimerExpires).is_empty());
        assert!(fsm.process(In::ConnectRetryTimerExpires).is_empty());
        assert!(fsm.process(In::IdleHoldTimerExpires).is_empty());
        assert_eq!(fsm.state(), State::Idle);
    }

    fn retry_delays(seed: u64, n: usize) -> Vec<Duration> {
        let mut cfg = config();
        cfg.jitter_seed = seed;
        let mut fsm = fsm_in_with(cfg, State::Connect);
        (0..n)
            .map(|_| {
                fsm.process::<()>(Input::ConnectRetryTimerExpires)
                    .into_iter()
                    .find_map(|o| match o {
                        Output::StartTimer {
                            timer: Timer::ConnectRetry,
                            duration,
                        } => Some(duration),
                        _ => None,
                    })
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn connect_retry_backs_off_exponentially_with_jitter() {
        let delays = retry_delays(7, 8);
        // ManualStart armed the timer with 1 s without a step up (no failure yet); each
        // expiry is one: 1, 2, 4, 8, 16, then capped at CONNECT_RETRY_MAX (30 s).
        let nominal = [1, 2, 4, 8, 16, 30, 30, 30];
        for (d, n) in delays.iter().zip(nominal) {
            let n = secs(n);
            assert!(*d >= n.mul_f64(0.75) && *d <= n, "{d:?} vs {n:?}");
        }
        assert_eq!(delays, retry_delays(7, 8), "same seed, same delays");
        assert_ne!(delays, retry_delays(8, 8), "jitter depends on the seed");
    }

    #[test]
    fn backoff_resets_when_established() {
        let mut fsm = fsm_in(State::Connect);
        for _ in 0..5 {
            fsm.process::<()>(Input::ConnectRetryTimerExpires);
        }
        drive(
            &mut fsm,
            [In::TcpCrAcked, In::BgpOpen(peer_open()), In::KeepAliveMsg],
        );
        let out = fsm.process(In::TcpConnectionFails);
        let restart = out
            .iter()
            .find_map(|o| match o {
                Output::StartTimer {
                    timer: Timer::IdleHold,
                    duration,
                } => Some(*duration),
                _ => None,
            })
            .unwrap();
        assert!(restart <= secs(5), "{restart:?}");
    }

    #[test]
    fn full_session_and_reconnect() {
        let mut fsm = Fsm::new(config());
        let mut all = Vec::new();
        for e in [
            In::ManualStart,
            In::TcpCrAcked,
            In::BgpOpen(peer_open()),
            In::KeepAliveMsg,
            In::UpdateMsg("u"),
            In::HoldTimerExpires,
            In::IdleHoldTimerExpires,
        ] {
            all.extend(fsm.process(e));
        }
        let states: Vec<State> = all
            .iter()
            .filter_map(|o| match o {
                Output::StateChanged { to, .. } => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(
            states,
            [
                State::Connect,
                State::OpenSent,
                State::OpenConfirm,
                State::Established,
                State::Idle,
                State::Connect
            ]
        );
    }

    // ---- invariants over random event sequences ----

    fn any_event() -> impl proptest::strategy::Strategy<Value = In> {
        use proptest::prelude::*;
        let open = (
            prop::sample::select(vec![0u16, 1, 3, 30, 90, 240]),
            prop::sample::select(vec![ASN, 65001]),
            prop::sample::select(vec![PEER_ID, LOCAL_ID, Ipv4Addr::UNSPECIFIED]),
            prop::sample::select(vec![4u8, 3]),
        )
            .prop_map(|(hold_time, asn, router_id, version)| {
                In::BgpOpen(OpenSummary {
                    version,
                    asn,
                    hold_time,
                    router_id,
                    capabilities: Capabilities::default(),
                })
            });
        let fixed = prop::sample::select(vec![
            In::ManualStart,
            In::ManualStop(Cease::administrative_shutdown()),
            In::AutomaticStart,
            In::ManualStartPassive,
            In::AutomaticStartPassive,
            In::AutomaticStop(Cease::new(CeaseSubcode::MaxPrefixesReached)),
            In::ConnectRetryTimerExpires,
            In::HoldTimerExpires,
            In::KeepaliveTimerExpires,
            In::IdleHoldTimerExpires,
            In::TcpCrAcked,
            In::TcpConnectionConfirmed,
            In::TcpConnectionFails,
            In::BgpHeaderErr(Notification::new(1, 2)),
            In::BgpOpenMsgErr(Notification::new(2, 4)),
            In::OpenCollisionDump,
            In::NotifMsgVerErr(Notification::new(2, 1)),
            In::NotifMsg(Notification::new(6, 2)),
            In::KeepAliveMsg,
            In::KeepAliveMsg,
            In::UpdateMsg("u"),
            In::UpdateMsgErr(Notification::new(3, 1)),
            In::UpdateSent,
        ]);
        prop_oneof![4 => fixed, 1 => open]
    }

    proptest::proptest! {
        #[test]
        fn invariants_hold_for_any_event_sequence(
            events in proptest::collection::vec(any_event(), 0..60),
            passive in proptest::bool::ANY,
        ) {
            let mut cfg = config();
            cfg.passive = passive;
            let mut fsm = Fsm::new(cfg);
            let mut running = std::collections::HashSet::new();
            for e in events {
                let before = fsm.state();
                let fired = match e {
                    In::ConnectRetryTimerExpires => Some(Timer::ConnectRetry),
                    In::HoldTimerExpires => Some(Timer::Hold),
                    In::KeepaliveTimerExpires => Some(Timer::Keepalive),
                    In::IdleHoldTimerExpires => Some(Timer::IdleHold),
                    _ => None,
                };
                if let Some(t) = fired {
                    running.remove(&t);
                }
                let out = fsm.process(e.clone());
                let mut state = before;
                let mut notified = false;
                for o in &out {
                    match o {
                        Output::StartTimer { timer, duration } => {
                            assert!(!duration.is_zero());
                            running.insert(*timer);
                        }
                        Output::StopTimer(t) => {
                            assert!(running.remove(t), "stopped {t:?} that was not running");
                        }
                        Output::StateChanged { from, to } => {
                            assert_eq!(*from, state);
                            assert_ne!(from, to);
                            state = *to;
                        }
                        Output::Connect => assert!(!passive, "passive peer connected out"),
                        Output::SendNotification(_) => notified = true,
                        Output::DropConnection => {
                            assert_ne!(before, State::Idle);
                            notified = false;
                        }
                        Output::SessionEstablished(_) => assert_eq!(state, State::Established),
                        Output::SessionDown { .. } => assert_eq!(before, State::Established),
                        Output::DeliverUpdate(_) => assert_eq!(state, State::Established),
                        Output::SendOpen(_) | Output::SendKeepalive => {}
                    }
                }
                assert!(!notified, "NOTIFICATION without closing the connection: {e:?}");
                assert_eq!(state, fsm.state());
                for t in TIMERS {
                    assert_eq!(fsm.timer_running(t), running.contains(&t), "{t:?}");
                }
                let hold = fsm.negotiated().map_or(0, |n| n.hold_time);
                match fsm.state() {
                    State::Idle => assert!(running.iter().all(|t| *t == Timer::IdleHold)),
                    State::Connect | State::Active => {
                        assert!(running.iter().all(|t| *t == Timer::ConnectRetry))
                    }
                    State::OpenSent => assert_eq!(
                        running.iter().copied().collect::<Vec<_>>(),
                        vec![Timer::Hold]
                    ),
                    State::OpenConfirm | State::Established => {
                        assert!(fsm.negotiated().is_some());
                        assert_eq!(running.contains(&Timer::Hold), hold != 0);
                        assert_eq!(running.contains(&Timer::Keepalive), hold != 0);
                        assert!(!running.contains(&Timer::ConnectRetry));
                    }
                }
            }
        }
    }
}
