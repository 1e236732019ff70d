//! Node IP autodetection: Calico's `IP_AUTODETECTION_METHOD` (and `IP6_AUTODETECTION_METHOD`)
//! forms, for either address family.
//!
//! | method | picks |
//! |---|---|
//! | `first-found` (default) | the first global address on an up interface that is not on the exclude list |
//! | `interface=REGEX[,REGEX]` | the first address on an interface whose name matches one of the expressions |
//! | `skip-interface=REGEX[,REGEX]` | as first-found, also skipping interfaces that match |
//! | `can-reach=DEST` | the local address the kernel picks to reach DEST (a UDP connect, nothing sent) |
//! | `cidr=CIDR[,CIDR]` | the first address inside one of the CIDRs |
//!
//! The choice is a pure function over a list of [`InterfaceAddr`]s ([`choose`]); reading the list
//! (`getifaddrs(3)`) and the UDP connect are the I/O edges ([`local_addresses`], [`detect`]).
//!
//! Calico matches interface names with Go regular expressions, unanchored (`MatchString`). The
//! workspace has no regex crate, so [`Regex`] implements the subset those settings use in
//! practice: literals, `.`, `[a-z0-9]` / `[^…]` classes, `*` `+` `?`, `|`, `(…)`, `^` and `$`,
//! and `\` escapes (`\.`, `\d`, `\w`). Anything else is rejected when the method is parsed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};

use ipam::Family;
use ipnet::IpNet;

use crate::Error;

/// Calico's `DEFAULT_INTERFACES_TO_EXCLUDE`: never a node address, whatever the method (except
/// an explicit `interface=`).
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^lo$",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    "^vxlan\\.calico.*",
    "^vxlan-v6\\.calico.*",
    "^wireguard\\.cali.*",
    "^wg-v6\\.cali.*",
    "^nodelocaldns.*",
];

/// One address of one interface, as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub iface: String,
    /// Interface index: the enumeration order (Calico walks `net.Interfaces()`, by index).
    pub index: u32,
    pub up: bool,
    pub loopback: bool,
    /// Address with the interface's prefix length (`192.0.2.11/24`, `2001:db8::11/64`).
    pub addr: IpNet,
}

/// A parsed `IP_AUTODETECTION_METHOD`.
#[derive(Clone, Debug)]
pub enum Method {
    FirstFound,
    Interface(Vec<Regex>),
    SkipInterface(Vec<Regex>),
    CanReach(String),
    Cidr(Vec<IpNet>),
}

impl std::str::FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Method, Error> {
        let bad = |reason: String| Error::Autodetect(format!("method {s:?}: {reason}"));
        let s = s.trim();
        if s.is_empty() || s == "first-found" {
            return Ok(Method::FirstFound);
        }
        let Some((kind, arg)) = s.split_once('=') else {
            return Err(bad(
                "expected first-found, interface=, skip-interface=, can-reach= or cidr=".into(),
            ));
        };
        if arg.trim().is_empty() {
            return Err(bad("the value after = is empty".into()));
        }
        let regexes = |arg: &str| -> Result<Vec<Regex>, Error> {
            arg.split(',')
                .map(|r| Regex::new(r.trim()).map_err(|e| bad(e.to_string())))
                .collect()
        };
        match kind {
            "interface" => Ok(Method::Interface(regexes(arg)?)),
            "skip-interface" => Ok(Method::SkipInterface(regexes(arg)?)),
            "can-reach" => Ok(Method::CanReach(arg.trim().to_string())),
            "cidr" => arg
                .split(',')
                .map(|c| {
                    c.trim()
                        .parse::<IpNet>()
                        .map(|n| n.trunc())
                        .map_err(|e| bad(format!("{c:?}: {e}")))
                })
                .collect::<Result<_, _>>()
                .map(Method::Cidr),
            other => Err(bad(format!("unknown method {other:?}"))),
        }
    }
}

fn excluded(iface: &str) -> bool {
    DEFAULT_EXCLUDES
        .iter()
        .any(|p| Regex::new(p).expect("built-in pattern").is_match(iface))
}

/// Calico only takes global unicast addresses: not loopback, not link-local (169.254/16,
/// fe80::/10), not multicast.
fn global(a: &InterfaceAddr) -> bool {
    match a.addr.addr() {
        IpAddr::V4(ip) => {
            !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified() && !ip.is_multicast()
        }
        IpAddr::V6(ip) => {
            !ip.is_loopback()
                && !ip.is_unicast_link_local()
                && !ip.is_unspecified()
                && !ip.is_multicast()
        }
    }
}

/// Picks the node address of `family` among `addrs` for every method but `can-reach` (which
/// needs the kernel's route lookup: see [`detect`], then [`by_address`]).
pub fn choose(method: &Method, family: Family, addrs: &[InterfaceAddr]) -> Option<InterfaceAddr> {
    let mut sorted: Vec<&InterfaceAddr> = addrs.iter().collect();
    sorted.sort_by_key(|a| a.index);
    let usable =
        |a: &&&InterfaceAddr| Family::of_net(&a.addr) == family && a.up && !a.loopback && global(a);
    let pick = |extra: &dyn Fn(&InterfaceAddr) -> bool| {
        sorted
            .iter()
            .filter(usable)
            .find(|a| extra(a))
            .map(|a| (**a).clone())
    };
    match method {
        Method::FirstFound => pick(&|a| !excluded(&a.iface)),
        Method::Interface(res) => pick(&|a| res.iter().any(|r| r.is_match(&a.iface))),
        Method::SkipInterface(res) => {
            pick(&|a| !excluded(&a.iface) && !res.iter().any(|r| r.is_match(&a.iface)))
        }
        Method::Cidr(nets) => {
            pick(&|a| !excluded(&a.iface) && nets.iter().any(|n| n.contains(&a.addr.addr())))
        }
        Method::CanReach(_) => None,
    }
}

/// The interface address holding `ip` (can-reach: the kernel chose `ip` as source).
pub fn by_address(ip: IpAddr, addrs: &[InterfaceAddr]) -> Option<InterfaceAddr> {
    addrs.iter().find(|a| a.addr.addr() == ip).cloned()
}

/// Every IPv4 and IPv6 address of every interface (`getifaddrs(3)`).
pub fn local_addresses() -> Result<Vec<InterfaceAddr>, Error> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(Error::Io {
            what: "listing interface addresses (getifaddrs)".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr whose family field is always readable.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let (addr, prefix) = if family == libc::AF_INET {
            // SAFETY: AF_INET addresses (and their netmasks) are sockaddr_in.
            let (a, m) = unsafe {
                (
                    &*(ifa.ifa_addr as *const libc::sockaddr_in),
                    &*(ifa.ifa_netmask as *const libc::sockaddr_in),
                )
            };
            let mask = u32::from_be(m.sin_addr.s_addr);
            (
                IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                mask.leading_ones() as u8,
            )
        } else if family == libc::AF_INET6 {
            // SAFETY: AF_INET6 addresses (and their netmasks) are sockaddr_in6.
            let (a, m) = unsafe {
                (
                    &*(ifa.ifa_addr as *const libc::sockaddr_in6),
                    &*(ifa.ifa_netmask as *const libc::sockaddr_in6),
                )
            };
            let mask = u128::from_be_bytes(m.sin6_addr.s6_addr);
            (
                IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                mask.leading_ones() as u8,
            )
        } else {
            continue;
        };
        // SAFETY: ifa_name is a NUL-terminated C string.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: as above.
        let index = unsafe { libc::if_nametoindex(ifa.ifa_name) };
        let flags = ifa.ifa_flags;
        out.push(InterfaceAddr {
            iface: name.to_string_lossy().into_owned(),
            index,
            up: flags & libc::IFF_UP as u32 != 0,
            loopback: flags & libc::IFF_LOOPBACK as u32 != 0,
            addr: IpNet::new(addr, prefix).expect("a netmask's prefix fits its family"),
        });
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Detects this node's `family` address by `method` on this host (in this network namespace).
pub fn detect(method: &Method, family: Family) -> Result<InterfaceAddr, Error> {
    let addrs = local_addresses()?;
    let found = match method {
        Method::CanReach(dest) => {
            let local = route_source(dest, family)?;
            by_address(local, &addrs)
        }
        m => choose(m, family, &addrs),
    };
    found.ok_or_else(|| {
        Error::Autodetect(format!(
            "no {family:?} address matches {method:?} among {:?}",
            addrs
                .iter()
                .map(|a| format!("{} {}", a.iface, a.addr))
                .collect::<Vec<_>>()
        ))
    })
}

/// What Calico's `IP` / `IP6` variables say: detect, none, or this address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setting {
    Autodetect,
    /// No address of this family (`IP6=none`, the IPv6 default).
    None,
    /// An address with prefix length; a bare address gets /32 (/128).
    Address(IpNet),
}

impl Setting {
    /// Parses `IP` (`name`) for `family`; unset or empty means `default`.
    pub fn parse(
        name: &str,
        value: Option<&str>,
        family: Family,
        default: Setting,
    ) -> Result<Setting, Error> {
        let v = match value.map(str::trim) {
            None | Some("") => return Ok(default),
            Some(v) => v,
        };
        let bad = |reason: &str| Error::Setting {
            name: name.into(),
            value: v.into(),
            reason: reason.into(),
        };
        match v {
            "autodetect" => Ok(Setting::Autodetect),
            "none" => Ok(Setting::None),
            _ => {
                let net = v
                    .parse::<IpNet>()
                    .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| bad("expected autodetect, none, or an address (with /prefix)"))?;
                if Family::of_net(&net) != family {
                    return Err(bad(&format!("not an {family:?} address")));
                }
                Ok(Setting::Address(net))
            }
        }
    }
}

/// The node's address of `family` as `setting` asks: detected by `method`, or the given one
/// (with its interface when a local interface holds it, else an empty interface name).
pub fn resolve(
    setting: &Setting,
    method: &Method,
    family: Family,
) -> Result<Option<InterfaceAddr>, Error> {
    match setting {
        Setting::None => Ok(None),
        Setting::Autodetect => detect(method, family).map(Some),
        Setting::Address(net) => {
            let addrs = local_addresses()?;
            Ok(Some(by_address(net.addr(), &addrs).unwrap_or(
                InterfaceAddr {
                    iface: String::new(),
                    index: 0,
                    up: true,
                    loopback: false,
                    addr: *net,
                },
            )))
        }
    }
}

/// The source address the kernel would use towards `dest` (an address or a host name):
/// a connected UDP socket sends nothing, but has a local address.
fn route_source(dest: &str, family: Family) -> Result<IpAddr, Error> {
    let err = |e: std::io::Error| Error::Io {
        what: format!("can-reach={dest}: finding the route"),
        source: e,
    };
    let target: SocketAddr = match dest.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, 80),
        Err(_) => (dest, 80)
            .to_socket_addrs()
            .map_err(err)?
            .find(|a| Family::of_addr(&a.ip()) == family)
            .ok_or_else(|| Error::Autodetect(format!("can-reach={dest}: no {family:?} address")))?,
    };
    if Family::of_addr(&target.ip()) != family {
        return Err(Error::Autodetect(format!(
            "can-reach={dest}: not an {family:?} destination"
        )));
    }
    let any = match family {
        Family::V4 => "0.0.0.0:0",
        Family::V6 => "[::]:0",
    };
    let sock = UdpSocket::bind(any).map_err(err)?;
    sock.connect(target).map_err(err)?;
    Ok(sock.local_addr().map_err(err)?.ip())
}

/// The small regular-expression subset described at the top of the module. Unanchored, as
/// Go's `MatchString`.
#[derive(Clone, Debug)]
pub struct Regex {
    source: String,
    alt: Alt,
}

type Alt = Vec<Vec<Piece>>;

#[derive(Clone, Debug)]
struct Piece {
    atom: Atom,
    min: usize,
    max: usize,
}

#[derive(Clone, Debug)]
enum Atom {
    Char(char),
    Any,
    /// Ranges, negated.
    Class(Vec<(char, char)>, bool),
    Group(Alt),
    Start,
    End,
}

/// Why an interface expression was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("interface pattern {pattern:?}: {reason}")]
pub struct RegexError {
    pub pattern: String,
    pub reason: String,
}

impl Regex {
    pub fn new(pattern: &str) -> Result<Regex, RegexError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut pos = 0;
        let err = |reason: &str| RegexError {
            pattern: pattern.to_string(),
            reason: reason.to_string(),
        };
        let alt = parse_alt(&chars, &mut pos).map_err(err)?;
        if pos != chars.len() {
            return Err(err("unbalanced )"));
        }
        Ok(Regex {
            source: pattern.to_string(),
            alt,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, s: &str) -> bool {
        let chars: Vec<char> = s.chars().collect();
        (0..=chars.len()).any(|start| {
            let mut found = false;
            match_alt(&self.alt, &chars, start, &mut |_| {
                found = true;
                true
            });
            found
        })
    }
}

fn parse_alt(c: &[char], pos: &mut usize) -> Result<Alt, &'static str> {
    let mut alt: Alt = vec![Vec::new()];
    while *pos < c.len() {
        let ch = c[*pos];
        match ch {
            ')' => break,
            '|' => {
                *pos += 1;
                alt.push(Vec::new());
                continue;
            }
            '*' | '+' | '?' => {
                let last = alt
                    .last_mut()
                    .and_then(|s| s.last_mut())
                    .ok_or("quantifier with nothing before it")?;
                if last.min != 1 || last.max != 1 {
                    return Err("repeated quantifier");
                }
                (last.min, last.max) = match ch {
                    '*' => (0, usize::MAX),
                    '+' => (1, usize::MAX),
                    _ => (0, 1),
                };
                *pos += 1;
                continue;
            }
            _ => {}
        }
        *pos += 1;
        let atom = match ch {
            '.' => Atom::Any,
            '^' => Atom::Start,
            '$' => Atom::End,
            '(' => {
                if c.get(*pos) == Some(&'?') {
                    return Err("(? groups are not supported");
                }
                let inner = parse_alt(c, pos)?;
                if c.get(*pos) != Some(&')') {
                    return Err("missing )");
                }
                *pos += 1;
                Atom::Group(inner)
            }
            '[' => parse_class(c, pos)?,
            '\\' => {
                let e = *c.get(*pos).ok_or("trailing \\")?;
                *pos += 1;
                match e {
                    'd' => Atom::Class(vec![('0', '9')], false),
                    'w' => Atom::Class(vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')], false),
                    e if e.is_ascii_alphanumeric() => return Err("unsupported escape"),
                    e => Atom::Char(e),
                }
            }
            '{' => return Err("{n,m} repetition is not supported"),
            ch => Atom::Char(ch),
        };
        alt.last_mut().expect("alt is never empty").push(Piece {
            atom,
            min: 1,
            max: 1,
        });
    }
    Ok(alt)
}

fn parse_class(c: &[char], pos: &mut usize) -> Result<Atom, &'static str> {
    let mut negated = false;
    if c.get(*pos) == Some(&'^') {
        negated = true;
        *pos += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let ch = *c.get(*pos).ok_or("missing ]")?;
        *pos += 1;
        if ch == ']' && !first {
            break;
        }
        first = false;
        let lo = if ch == '\\' {
            let e = *c.get(*pos).ok_or("trailing \\")?;
            *pos += 1;
            e
        } else {
            ch
        };
        if c.get(*pos) == Some(&'-') && c.get(*pos + 1).is_some_and(|n| *n != ']') {
            let hi = c[*pos + 1];
            *pos += 2;
            if hi < lo {
                return Err("range out of order");
            }
            ranges.push((lo, hi));
        } else {
            ranges.push((lo, lo));
        }
    }
    Ok(Atom::Class(ranges, negated))
}

/// Backtracking match: calls `k` with every end position `alt` can reach from `i`; stops when
/// `k` returns true.
fn match_alt(alt: &Alt, s: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    alt.iter().any(|seq| match_seq(seq, s, i, k))
}

fn match_seq(seq: &[Piece], s: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    let Some((p, rest)) = seq.split_first() else {
        return k(i);
    };
    match_piece(p, 0, s, i, &mut |j| match_seq(rest, s, j, k))
}

/// Greedy repetition of one piece, `count` times matched so far.
fn match_piece(
    p: &Piece,
    count: usize,
    s: &[char],
    i: usize,
    k: &mut dyn FnMut(usize) -> bool,
) -> bool {
    if count < p.max
        && match_atom(&p.atom, s, i, &mut |j| {
            // Beyond the minimum, an empty iteration cannot make progress: stop repeating.
            (j != i || count < p.min) && match_piece(p, count + 1, s, j, k)
        })
    {
        return true;
    }
    count >= p.min && k(i)
}

fn match_atom(a: &Atom, s: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    match a {
        Atom::Char(c) => s.get(i) == Some(c) && k(i + 1),
        Atom::Any => i < s.len() && k(i + 1),
        Atom::Class(ranges, neg) => {
            s.get(i)
                .is_some_and(|ch| ranges.iter().any(|(lo, hi)| (lo..=hi).contains(&ch)) != *neg)
                && k(i + 1)
        }
        Atom::Group(alt) => match_alt(alt, s, i, k),
        Atom::Start => i == 0 && k(i),
        Atom::End => i == s.len() && k(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(iface: &str, index: u32, addr: &str) -> InterfaceAddr {
        InterfaceAddr {
            iface: iface.into(),
            index,
            up: true,
            loopback: iface == "lo",
            addr: addr.parse().unwrap(),
        }
    }

    fn host() -> Vec<InterfaceAddr> {
        vec![
            a("lo", 1, "127.0.0.1/8"),
            a("docker0", 2, "172.17.0.1/16"),
            a("eth0", 3, "192.0.2.11/24"),
            a("eth1", 4, "198.51.100.7/24"),
            a("tunl0", 5, "198.18.0.1/32"),
            a("vxlan.calico", 6, "198.18.0.2/32"),
            a("cali1234567890a", 7, "169.254.1.1/32"),
            a("ens5", 8, "203.0.113.9/25"),
        ]
    }

    fn pick(method: &str, addrs: &[InterfaceAddr]) -> Option<String> {
        pick_in(Family::V4, method, addrs)
    }

    fn pick_in(family: Family, method: &str, addrs: &[InterfaceAddr]) -> Option<String> {
        choose(&method.parse().unwrap(), family, addrs).map(|a| format!("{} {}", a.iface, a.addr))
    }

    #[test]
    fn first_found_skips_loopback_docker_and_calico_devices() {
        assert_eq!(
            pick("first-found", &host()).as_deref(),
            Some("eth0 192.0.2.11/24")
        );
        assert_eq!(pick("", &host()).as_deref(), Some("eth0 192.0.2.11/24"));
        // Enumeration order is the interface index, not the list order.
        let mut rev = host();
        rev.reverse();
        assert_eq!(
            pick("first-found", &rev).as_deref(),
            Some("eth0 192.0.2.11/24")
        );
    }

    #[test]
    fn first_found_skips_down_interfaces_and_link_local_addresses() {
        let mut h = host();
        h[2].up = false;
        h.insert(0, a("eth9", 0, "169.254.3.3/16"));
        assert_eq!(
            pick("first-found", &h).as_deref(),
            Some("eth1 198.51.100.7/24")
        );
        let only_tunnels = vec![a("lo", 1, "127.0.0.1/8"), a("tunl0", 2, "198.18.0.1/32")];
        assert_eq!(pick("first-found", &only_tunnels), None);
    }

    #[test]
    fn interface_regexes_are_unanchored_and_comma_separated() {
        assert_eq!(
            pick("interface=eth1", &host()).as_deref(),
            Some("eth1 198.51.100.7/24")
        );
        assert_eq!(
            pick("interface=ens.*", &host()).as_deref(),
            Some("ens5 203.0.113.9/25")
        );
        assert_eq!(
            pick("interface=nope,eth1", &host()).as_deref(),
            Some("eth1 198.51.100.7/24")
        );
        assert_eq!(pick("interface=^th", &host()), None);
        assert_eq!(
            pick("interface=th1$", &host()).as_deref(),
            Some("eth1 198.51.100.7/24")
        );
        assert_eq!(
            pick("interface=(ens|eth)[1-9]", &host()).as_deref(),
            Some("eth1 198.51.100.7/24")
        );
        // An explicit interface= may name what first-found would skip.
        assert_eq!(
            pick("interface=docker0", &host()).as_deref(),
            Some("docker0 172.17.0.1/16")
        );
    }

    #[test]
    fn skip_interface_and_cidr() {
        assert_eq!(
            pick("skip-interface=eth0", &host()).as_deref(),
            Some("eth1 198.51.100.7/24")
        );
        assert_eq!(
            pick("cidr=203.0.113.0/24", &host()).as_deref(),
            Some("ens5 203.0.113.9/25")
        );
        assert_eq!(
            pick("cidr=10.0.0.0/8, 198.51.100.0/24", &host()).as_deref(),
            Some("eth1 198.51.100.7/24")
        );
        // Addresses on excluded devices are never chosen by cidr=.
        assert_eq!(pick("cidr=198.18.0.0/15", &host()), None);
    }

    #[test]
    fn can_reach_maps_the_source_address_to_its_interface() {
        let got = by_address("198.51.100.7".parse().unwrap(), &host()).unwrap();
        assert_eq!(got.iface, "eth1");
        assert_eq!(got.addr.prefix_len(), 24);
        assert_eq!(by_address("10.9.9.9".parse().unwrap(), &host()), None);
        assert!(choose(&Method::CanReach("192.0.2.1".into()), Family::V4, &host()).is_none());
    }

    #[test]
    fn can_reach_on_loopback_finds_lo() {
        // Real I/O but harmless: a connected UDP socket sends nothing.
        let got = detect(&Method::CanReach("127.0.0.1".into()), Family::V4).unwrap();
        assert_eq!(got.addr.addr(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        // Asking for one family with a destination of the other is an error, not a guess.
        assert!(detect(&Method::CanReach("127.0.0.1".into()), Family::V6).is_err());
    }

    #[test]
    fn ip_and_ip6_settings() {
        let v4 = |v: Option<&str>| Setting::parse("IP", v, Family::V4, Setting::Autodetect);
        assert_eq!(v4(None).unwrap(), Setting::Autodetect);
        assert_eq!(v4(Some("")).unwrap(), Setting::Autodetect);
        assert_eq!(v4(Some("autodetect")).unwrap(), Setting::Autodetect);
        assert_eq!(
            v4(Some("192.0.2.11/24")).unwrap(),
            Setting::Address("192.0.2.11/24".parse().unwrap())
        );
        assert_eq!(
            v4(Some("192.0.2.11")).unwrap(),
            Setting::Address("192.0.2.11/32".parse().unwrap())
        );
        let e = v4(Some("2001:db8::1")).unwrap_err().to_string();
        assert!(e.contains("IP=") && e.contains("V4"), "{e}");
        assert!(v4(Some("bogus")).is_err());
        let v6 = |v: Option<&str>| Setting::parse("IP6", v, Family::V6, Setting::None);
        assert_eq!(v6(None).unwrap(), Setting::None);
        assert_eq!(v6(Some("none")).unwrap(), Setting::None);
        assert_eq!(
            v6(Some("2001:db8::11/64")).unwrap(),
            Setting::Address("2001:db8::11/64".parse().unwrap())
        );
        assert_eq!(
            resolve(&Setting::None, &Method::FirstFound, Family::V6).unwrap(),
            None
        );
    }

    #[test]
    fn ipv6_addresses_are_chosen_apart_from_ipv4() {
        let mut h = host();
        h.push(a("eth0", 3, "fe80::1/64"));
        h.push(a("eth0", 3, "2001:db8::11/64"));
        h.push(a("eth1", 4, "2001:db8:1::7/64"));
        h.push(a("tunl0", 5, "2001:db8:ff::1/128"));
        h.push(a("lo", 1, "::1/128"));
        assert_eq!(
            pick_in(Family::V6, "first-found", &h).as_deref(),
            Some("eth0 2001:db8::11/64")
        );
        assert_eq!(
            pick("first-found", &h).as_deref(),
            Some("eth0 192.0.2.11/24")
        );
        assert_eq!(
            pick_in(Family::V6, "interface=eth1", &h).as_deref(),
            Some("eth1 2001:db8:1::7/64")
        );
        assert_eq!(
            pick_in(Family::V6, "cidr=2001:db8:1::/48", &h).as_deref(),
            Some("eth1 2001:db8:1::7/64")
        );
        assert_eq!(pick_in(Family::V6, "first-found", &host()), None);
    }

    #[test]
    fn bad_methods_are_rejected_with_the_reason() {
        for bad in [
            "interface=",
            "cidr=300.0.0.0/8",
            "magic",
            "bogus=1",
            "interface=eth{2}",
            "interface=(eth",
        ] {
            let e = bad.parse::<Method>().unwrap_err().to_string();
            assert!(e.contains(bad.split('=').next().unwrap()), "{bad}: {e}");
        }
    }

    #[test]
    fn regex_subset() {
        let m = |p: &str, s: &str| Regex::new(p).unwrap().is_match(s);
        assert!(m("^eth.*", "eth0"));
        assert!(!m("^eth.*", "veth0"));
        assert!(m("eth", "veth0"));
        assert!(m("^vxlan\\.calico.*", "vxlan.calico"));
        assert!(!m("^vxlan\\.calico$", "vxlanXcalico"));
        assert!(m("^en[a-z]+[0-9]$", "ens5"));
        assert!(!m("^en[^s]", "ens5"));
        assert!(m("^(a|bc)+$", "abcbca"));
        assert!(!m("^(a|bc)+$", "abcb"));
        assert!(m("^x?y$", "y"));
        assert!(m("^\\d+$", "123"));
        assert!(m("^(a*)*$", "aaaa"));
        assert!(m("", "anything"));
        assert!(m("^$", ""));
    }
}
