//! The netlink edge: one rtnetlink connection, raw requests, and dumps of the tables felix reads.
//! Everything above this module speaks in felix's own types; everything netlink-shaped is here.

use futures_util::StreamExt;
use futures_util::stream::{self, FuturesUnordered};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload,
};

use crate::Error;

/// How many requests are in flight at once on a bulk operation. Pipelining is what lets a
/// 10,000-route program keep pace with `ip -batch` (which waits for each ack in turn but pays no
/// task switch); the bound keeps the socket's receive buffer from overflowing with acks.
pub const PIPELINE: usize = 128;

/// Flags for a create-or-replace request (`ip route replace`, `ip neigh replace`).
pub const REPLACE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
/// Flags for a create-only request (`ip link add`, `ip addr add`).
pub const CREATE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
/// Flags for a single get (`ip route get`).
pub const GET: u16 = NLM_F_REQUEST;
/// Flags for a delete or set request.
pub const ACKED: u16 = NLM_F_REQUEST | NLM_F_ACK;

/// A handle on an rtnetlink socket in the current thread's network namespace.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a connection and spawns its driver on the current tokio runtime.
    pub fn connect() -> Result<Netlink, Error> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Sends one request and collects the replies; a NACK becomes an error.
    pub async fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut handle = self.handle.clone();
        let mut resp = handle
            .request(req)
            .map_err(|e| Error::Netlink(e.to_string()))?;
        let mut out = Vec::new();
        while let Some(m) = resp.next().await {
            match m.payload {
                NetlinkPayload::InnerMessage(i) => out.push(i),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(Error::Kernel(e.to_io()));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    pub async fn dump(&self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, Error> {
        self.request(msg, NLM_F_REQUEST | NLM_F_DUMP).await
    }

    /// Sends many requests, [`PIPELINE`] in flight at a time; returns the failures by index.
    pub async fn bulk(&self, msgs: Vec<(RouteNetlinkMessage, u16)>) -> Vec<(usize, Error)> {
        let mut failures = Vec::new();
        let mut pending = FuturesUnordered::new();
        let mut it = stream::iter(msgs.into_iter().enumerate());
        loop {
            while pending.len() < PIPELINE {
                match it.next().await {
                    Some((i, (m, f))) => {
                        pending.push(async move { (i, self.request(m, f).await) });
                    }
                    None => break,
                }
            }
            match pending.next().await {
                Some((i, Err(e))) => failures.push((i, e)),
                Some(_) => {}
                None => break,
            }
        }
        failures
    }

    pub async fn links(&self) -> Result<Vec<LinkMessage>, Error> {
        let msgs = self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .await?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .collect())
    }
}

/// A link's name from its attributes.
pub fn link_name(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

pub fn link_mtu(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

/// Messages per `sendmsg` in [`batch`]. The kernel handles every message of a send in turn and
/// answers each with its own ack; this bounds the acks queued on our socket at once.
pub const BATCH_CHUNK: usize = 128;

/// Sends many requests packed into few `sendmsg` calls on a socket of its own (rtnetlink, like
/// `ip -batch`, but without a syscall pair per request), and collects one ack per request.
/// Blocking: meant for the agent's own thread, which has nothing else to do meanwhile.
/// Returns the failures by index.
pub fn batch(msgs: Vec<(RouteNetlinkMessage, u16)>) -> Result<Vec<(usize, Error)>, Error> {
    use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(Error::Socket)?;
    sock.bind_auto().map_err(Error::Socket)?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(Error::Socket)?;
    // Acks without the request echoed back.
    let _ = sock.set_cap_ack(true);
    let mut failures = Vec::new();
    let mut rbuf = vec![0u8; 1 << 16];
    let mut sbuf = Vec::with_capacity(BATCH_CHUNK * 128);
    let total = msgs.len();
    let mut it = msgs.into_iter().enumerate().peekable();
    while it.peek().is_some() {
        sbuf.clear();
        let mut pending = 0usize;
        for (i, (m, flags)) in it.by_ref().take(BATCH_CHUNK) {
            let mut nm = NetlinkMessage::from(m);
            nm.header.flags = flags;
            nm.header.sequence_number = i as u32 + 1;
            nm.finalize();
            let start = sbuf.len();
            sbuf.resize(start + nm.buffer_len(), 0);
            nm.serialize(&mut sbuf[start..]);
            pending += 1;
        }
        sock.send(&sbuf, 0).map_err(|e| Error::Io {
            what: "sending a batch of netlink requests".into(),
            source: e,
        })?;
        while pending > 0 {
            let n = sock.recv(&mut &mut rbuf[..], 0).map_err(|e| Error::Io {
                what: "receiving netlink acks".into(),
                source: e,
            })?;
            let mut off = 0;
            while off + 16 <= n {
                let b = &rbuf[off..n];
                let len = u32::from_ne_bytes(b[0..4].try_into().expect("4")) as usize;
                let kind = u16::from_ne_bytes(b[4..6].try_into().expect("2"));
                let seq = u32::from_ne_bytes(b[8..12].try_into().expect("4"));
                if len < 16 || len > b.len() {
                    break;
                }
                // NLMSG_ERROR: an ack (code 0) or a NACK (-errno).
                if kind == 2 && len >= 20 {
                    let code = i32::from_ne_bytes(b[16..20].try_into().expect("4"));
                    pending = pending.saturating_sub(1);
                    if code != 0 && seq >= 1 && (seq as usize) <= total {
                        failures.push((
                            seq as usize - 1,
                            Error::Kernel(std::io::Error::from_raw_os_error(-code)),
                        ));
                    }
                }
                off += (len + 3) & !3;
            }
        }
    }
    Ok(failures)
}
