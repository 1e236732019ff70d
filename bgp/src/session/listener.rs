//! The speaker's listening sockets, shared by all peers: accepts BGP connections and hands each
//! one to the session of the peer it comes from, by source address. Connections from addresses
//! no peer is configured for are closed at once (RFC 4271 §8: a speaker only talks to
//! configured peers).
//!
//! TCP MD5 keys (RFC 2385) are installed on every listening socket for each registered peer
//! with a password, so the kernel checks the peer's SYN; GTSM (RFC 5082) is set on the
//! accepted socket of a peer with `ttl_security`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::PeerConfig;
use crate::sockopt;

/// Incoming connections queued per peer before its session takes them.
const PER_PEER_BACKLOG: usize = 4;

struct PeerEntry {
    token: u64,
    tx: mpsc::Sender<TcpStream>,
    ttl_security: bool,
    has_password: bool,
}

struct Shared {
    sockets: Vec<Arc<TcpListener>>,
    peers: Mutex<HashMap<IpAddr, PeerEntry>>,
    next_token: Mutex<u64>,
}

/// The listening sockets of one speaker, dispatching accepted connections to peer sessions.
/// Dropping it stops accepting.
pub struct Listener {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    local_addrs: Vec<SocketAddr>,
}

/// A peer's share of the [`Listener`]: the connections accepted from its address. Dropping it
/// unregisters the peer (and removes its MD5 key from the listening sockets).
pub struct Incoming {
    rx: mpsc::Receiver<TcpStream>,
    shared: Arc<Shared>,
    peer: IpAddr,
    token: u64,
}

impl Incoming {
    /// The next accepted connection from the peer.
    pub async fn recv(&mut self) -> Option<TcpStream> {
        self.rx.recv().await
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let mut peers = self
            .shared
            .peers
            .lock()
            .expect("listener peer map poisoned");
        if peers.get(&self.peer).is_some_and(|e| e.token == self.token) {
            let e = peers.remove(&self.peer).expect("checked");
            if e.has_password {
                for s in &self.shared.sockets {
                    // Removing a key that is gone anyway is harmless.
                    let _ = sockopt::set_md5_key(s.as_raw_fd(), self.peer, None);
                }
            }
        }
    }
}

impl Listener {
    /// Binds every address (port 179 is the BGP port, RFC 4271 §8.2.1) and starts accepting.
    pub async fn bind(addrs: &[SocketAddr]) -> io::Result<Listener> {
        let mut sockets = Vec::new();
        let mut local_addrs = Vec::new();
        for a in addrs {
            let l = TcpListener::bind(a).await.map_err(|e| {
                io::Error::new(e.kind(), format!("binding the BGP listener on {a}: {e}"))
            })?;
            local_addrs.push(l.local_addr()?);
            sockets.push(Arc::new(l));
        }
        let shared = Arc::new(Shared {
            sockets,
            peers: Mutex::new(HashMap::new()),
            next_token: Mutex::new(0),
        });
        let tasks = shared
            .sockets
            .iter()
            .map(|s| tokio::spawn(accept_loop(s.clone(), shared.clone())))
            .collect();
        Ok(Listener {
            shared,
            tasks,
            local_addrs,
        })
    }

    /// The bound addresses (with the real port when 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Routes connections from `peer.address` to the returned [`Incoming`], installing the
    /// peer's MD5 key on the listening sockets. A second registration of the same address
    /// replaces the first.
    pub fn register(&self, peer: &PeerConfig) -> io::Result<Incoming> {
        let addr = peer.address.to_canonical();
        if let Some(pw) = &peer.password {
            for s in &self.shared.sockets {
                let v6 = sockopt::is_v6_socket(s.as_raw_fd())?;
                // An IPv6-only peer cannot reach an IPv4 socket: no key to install there.
                if !v6 && addr.is_ipv6() {
                    continue;
                }
                sockopt::set_md5_key(s.as_raw_fd(), addr, Some(pw.as_bytes()))?;
            }
        }
        let (tx, rx) = mpsc::channel(PER_PEER_BACKLOG);
        let token = {
            let mut t = self.shared.next_token.lock().expect("token poisoned");
            *t += 1;
            *t
        };
        self.shared
            .peers
            .lock()
            .expect("listener peer map poisoned")
            .insert(
                addr,
                PeerEntry {
                    token,
                    tx,
                    ttl_security: peer.ttl_security,
                    has_password: peer.password.is_some(),
                },
            );
        Ok(Incoming {
            rx,
            shared: self.shared.clone(),
            peer: addr,
            token,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn accept_loop(socket: Arc<TcpListener>, shared: Arc<Shared>) {
    loop {
        let (stream, from) = match socket.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accepting a BGP connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = from.ip().to_canonical();
        let target = {
            let peers = shared.peers.lock().expect("listener peer map poisoned");
            peers.get(&ip).map(|e| (e.tx.clone(), e.ttl_security))
        };
        let Some((tx, ttl_security)) = target else {
            info!(%from, "rejecting BGP connection from an address that is not a configured peer");
            continue;
        };
        if ttl_security && let Err(e) = sockopt::set_gtsm(stream.as_raw_fd()) {
            warn!(%from, error = %e, "closing connection: cannot set GTSM");
            continue;
        }
        if tx.try_send(stream).is_err() {
            debug!(%from, "closing connection: the peer's session is not taking connections");
        }
    }
}
