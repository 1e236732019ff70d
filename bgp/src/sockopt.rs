//! The socket options a BGP session needs beyond plain TCP, set with `setsockopt(2)`:
//!
//! - TCP MD5 signatures (RFC 2385): Linux `TCP_MD5SIG` with a `struct tcp_md5sig` that names
//!   the peer address and its key. Set on an outgoing socket before `connect`, and on every
//!   listening socket once per peer that has a password, so the SYN of that peer is verified.
//! - GTSM, the Generalized TTL Security Mechanism (RFC 5082): send with TTL / hop limit 255
//!   (`IP_TTL`, `IPV6_UNICAST_HOPS`) and drop everything that arrives with less
//!   (`IP_MINTTL`, `IPV6_MINHOPCOUNT`), for directly connected peers.
//!
//! All functions take a raw file descriptor, so they work on tokio and std sockets alike.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;

/// Linux `TCP_MD5SIG_MAXKEYLEN` (include/uapi/linux/tcp.h).
pub const TCP_MD5SIG_MAXKEYLEN: usize = 80;

/// RFC 5082 §3: the TTL a GTSM speaker sends with and requires, for peers one hop away.
pub const GTSM_TTL: u8 = 255;

/// Linux `struct tcp_md5sig` (include/uapi/linux/tcp.h):
///
/// ```c
/// struct tcp_md5sig {
///     struct __kernel_sockaddr_storage tcpm_addr; /* address associated */
///     __u8  tcpm_flags;                            /* extension flags */
///     __u8  tcpm_prefixlen;                        /* address prefix */
///     __u16 tcpm_keylen;                           /* key length */
///     int   tcpm_ifindex;                          /* device index for scope */
///     __u8  tcpm_key[TCP_MD5SIG_MAXKEYLEN];        /* key (binary) */
/// };
/// ```
///
/// `libc` has the option number but not the struct. With `tcpm_flags` 0 the kernel reads only
/// the address and the key (the pre-4.13 layout, where flags, prefix length and ifindex were
/// padding), so this works on every kernel that has `TCP_MD5SIG`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TcpMd5Sig {
    pub addr: libc::sockaddr_storage,
    pub flags: u8,
    pub prefixlen: u8,
    pub keylen: u16,
    pub ifindex: libc::c_int,
    pub key: [u8; TCP_MD5SIG_MAXKEYLEN],
}

impl TcpMd5Sig {
    /// The option value that installs `key` for `peer` (an empty key removes it).
    ///
    /// `v6_socket`: the socket is AF_INET6; an IPv4 peer is then named by its IPv4-mapped
    /// address, as a dual-stack socket sees it.
    pub fn new(peer: IpAddr, key: &[u8], v6_socket: bool) -> io::Result<Self> {
        if key.len() > TCP_MD5SIG_MAXKEYLEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "TCP MD5 key of {} octets is longer than {TCP_MD5SIG_MAXKEYLEN}",
                    key.len()
                ),
            ));
        }
        // SAFETY: all-zero is a valid value of this plain C struct.
        let mut sig: TcpMd5Sig = unsafe { mem::zeroed() };
        write_sockaddr(&mut sig.addr, peer, v6_socket);
        sig.keylen = key.len() as u16;
        sig.key[..key.len()].copy_from_slice(key);
        Ok(sig)
    }
}

/// Writes `ip` (port 0) into a `sockaddr_storage` as `sockaddr_in` or `sockaddr_in6`.
fn write_sockaddr(storage: &mut libc::sockaddr_storage, ip: IpAddr, v6_socket: bool) {
    let ip = match ip {
        IpAddr::V4(v4) if v6_socket => IpAddr::V6(v4.to_ipv6_mapped()),
        ip => ip,
    };
    match ip {
        IpAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = 0;
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.octets()),
            };
        }
        IpAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = 0;
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: v6.octets(),
            };
        }
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the socket is AF_INET6.
pub fn is_v6_socket(fd: RawFd) -> io::Result<bool> {
    // SAFETY: getsockname writes at most `len` octets into the storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let rc =
        unsafe { libc::getsockname(fd, &mut storage as *mut _ as *mut libc::sockaddr, &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(libc::c_int::from(storage.ss_family) == libc::AF_INET6)
}

/// RFC 2385: sign and verify every segment to and from `peer` with `key` (None removes the
/// key). On a listening socket, call once per peer.
pub fn set_md5_key(fd: RawFd, peer: IpAddr, key: Option<&[u8]>) -> io::Result<()> {
    let v6 = is_v6_socket(fd)?;
    let sig = TcpMd5Sig::new(peer, key.unwrap_or_default(), v6)?;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("setting the TCP MD5 key (TCP_MD5SIG) for peer {peer}: {e}"),
        )
    })
}

/// RFC 5082 §3: send with TTL (hop limit) 255 and accept only segments that still have 255,
/// i.e. that come from a directly connected peer.
pub fn set_gtsm(fd: RawFd) -> io::Result<()> {
    let ttl = libc::c_int::from(GTSM_TTL);
    fn ctx(what: &'static str) -> impl Fn(io::Error) -> io::Error {
        move |e| io::Error::new(e.kind(), format!("setting {what} for GTSM: {e}"))
    }
    if is_v6_socket(fd)? {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)
            .map_err(ctx("IPV6_UNICAST_HOPS"))?;
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &ttl)
            .map_err(ctx("IPV6_MINHOPCOUNT"))?;
        // A dual-stack socket talking to an IPv4-mapped peer sends and checks IPv4 headers.
        // These fail on IPv6-only sockets, which is harmless.
        let _ = setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &ttl);
        let _ = setsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &ttl);
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &ttl).map_err(ctx("IP_TTL"))?;
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &ttl).map_err(ctx("IP_MINTTL"))?;
    }
    Ok(())
}

/// The peer address as the socket family sees it: IPv4-mapped IPv6 addresses become IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
    use std::os::fd::AsRawFd;

    fn bytes(sig: &TcpMd5Sig) -> &[u8] {
        // SAFETY: a repr(C) struct of plain integers, read as octets.
        unsafe {
            std::slice::from_raw_parts(sig as *const _ as *const u8, mem::size_of::<TcpMd5Sig>())
        }
    }

    #[test]
    fn struct_layout_matches_the_kernel() {
        // 128 (sockaddr_storage) + 1 + 1 + 2 + 4 + 80, no padding.
        assert_eq!(mem::size_of::<TcpMd5Sig>(), 216);
        assert_eq!(mem::offset_of!(TcpMd5Sig, flags), 128);
        assert_eq!(mem::offset_of!(TcpMd5Sig, prefixlen), 129);
        assert_eq!(mem::offset_of!(TcpMd5Sig, keylen), 130);
        assert_eq!(mem::offset_of!(TcpMd5Sig, ifindex), 132);
        assert_eq!(mem::offset_of!(TcpMd5Sig, key), 136);
    }

    #[test]
    fn ipv4_peer_packs_as_sockaddr_in() {
        let sig =
            TcpMd5Sig::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)), b"s3cret", false).unwrap();
        let b = bytes(&sig);
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), libc::AF_INET as u16);
        assert_eq!(&b[2..4], &[0, 0], "port");
        assert_eq!(&b[4..8], &[127, 0, 0, 9], "address in network order");
        assert!(b[8..128].iter().all(|&x| x == 0));
        assert_eq!(
            &b[128..136],
            &[0, 0, 6, 0, 0, 0, 0, 0][..],
            "flags, prefix, keylen, ifindex"
        );
        assert_eq!(&b[136..142], b"s3cret");
        assert!(b[142..].iter().all(|&x| x == 0));
    }

    #[test]
    fn ipv6_peer_packs_as_sockaddr_in6() {
        let addr: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let sig = TcpMd5Sig::new(IpAddr::V6(addr), b"k", true).unwrap();
        let b = bytes(&sig);
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), libc::AF_INET6 as u16);
        assert_eq!(&b[4..8], &[0, 0, 0, 0], "flowinfo");
        assert_eq!(&b[8..24], &addr.octets());
        assert_eq!(sig.keylen, 1);
    }

    #[test]
    fn ipv4_peer_on_a_v6_socket_is_mapped() {
        let sig = TcpMd5Sig::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), b"k", true).unwrap();
        let b = bytes(&sig);
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), libc::AF_INET6 as u16);
        assert_eq!(
            &b[8..24],
            &Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped().octets()
        );
    }

    #[test]
    fn overlong_keys_are_refused() {
        let key = [b'x'; 81];
        assert!(TcpMd5Sig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), &key, false).is_err());
    }

    #[test]
    fn options_apply_to_a_real_socket() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = l.as_raw_fd();
        assert!(!is_v6_socket(fd).unwrap());
        let peer = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        set_md5_key(fd, peer, Some(b"s3cret")).unwrap();
        set_md5_key(fd, peer, None).unwrap();
        set_gtsm(fd).unwrap();
    }

    #[test]
    fn ipv4_peers_get_mapped_keys_on_a_dual_stack_socket() {
        let Ok(l) = TcpListener::bind("[::1]:0") else {
            return; // no IPv6 here
        };
        let fd = l.as_raw_fd();
        assert!(is_v6_socket(fd).unwrap());
        set_md5_key(fd, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), Some(b"k")).unwrap();
        set_md5_key(fd, "2001:db8::2".parse().unwrap(), Some(b"k")).unwrap();
        set_gtsm(fd).unwrap();
    }
}
