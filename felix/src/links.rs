//! The link manager: `tunl0` and `vxlan.calico`, found by name, with their MTU, MAC, up state and
//! their one /32 address. Nothing else on the host is touched.
//!
//! A VXLAN device whose VNI, port, local address, parent or learning flag differs from the
//! desired one is deleted and recreated (the kernel cannot change those in place); MTU, MAC and
//! up state are set in place.

use std::collections::BTreeSet;
use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use tracing::{info, warn};

use crate::Error;
use crate::model::{
    Devices, IPIP_DEVICE, IpipDevice, Mac, VXLAN_DEVICE, VXLAN6_DEVICE, VxlanDevice,
};
use crate::netlink::{ACKED, CREATE, Netlink, link_mtu, link_name};

pub struct LinkManager {
    nl: Netlink,
    desired: Devices,
    dirty: bool,
    ensure_failed: bool,
}

/// Which half of a link pass: create and update wanted devices, or remove unwanted ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkPhase {
    Ensure,
    Remove,
}

/// What the manager read of one link.
struct Link<'a> {
    msg: &'a LinkMessage,
}

impl Link<'_> {
    fn index(&self) -> u32 {
        self.msg.header.index
    }
    fn up(&self) -> bool {
        self.msg.header.flags.contains(LinkFlags::Up)
    }
    fn mtu(&self) -> Option<u32> {
        link_mtu(self.msg)
    }
    fn mac(&self) -> Option<Mac> {
        self.msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(b) if b.len() == 6 => {
                Some(Mac(b.as_slice().try_into().expect("6 bytes")))
            }
            _ => None,
        })
    }
    fn info(&self) -> (Option<&InfoKind>, Option<&InfoData>) {
        let mut kind = None;
        let mut data = None;
        for a in &self.msg.attributes {
            if let LinkAttribute::LinkInfo(infos) = a {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => kind = Some(k),
                        LinkInfo::Data(d) => data = Some(d),
                        _ => {}
                    }
                }
            }
        }
        (kind, data)
    }
}

fn find<'a>(links: &'a [LinkMessage], name: &str) -> Option<Link<'a>> {
    links
        .iter()
        .find(|l| link_name(l) == Some(name))
        .map(|msg| Link { msg })
}

impl LinkManager {
    pub fn new(nl: Netlink) -> Self {
        LinkManager {
            nl,
            desired: Devices::default(),
            dirty: true,
            ensure_failed: false,
        }
    }

    pub fn set_desired(&mut self, d: &Devices) {
        if self.desired != *d {
            self.desired = d.clone();
            self.dirty = true;
        }
    }

    pub fn queue_resync(&mut self) {
        self.dirty = true;
    }

    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Reconciles both devices for one phase; returns whether it changed any link (the caller
    /// then re-reads interface indexes). The agent runs [`LinkPhase::Ensure`] before routes and
    /// [`LinkPhase::Remove`] after them, so that a device is never removed while routes still
    /// point at it (the kernel would drop those routes before their replacements exist).
    pub async fn apply(&mut self, links: &[LinkMessage], phase: LinkPhase) -> Result<bool, Error> {
        if !self.dirty {
            return Ok(false);
        }
        if phase == LinkPhase::Ensure {
            self.ensure_failed = false;
        }
        let vx = self
            .vxlan(links, phase, VXLAN_DEVICE, self.desired.vxlan.as_ref())
            .await;
        let vx6 = self
            .vxlan(links, phase, VXLAN6_DEVICE, self.desired.vxlan6.as_ref())
            .await;
        let ip = self.ipip(links, phase).await;
        match (vx, vx6, ip) {
            (Ok(a), Ok(b), Ok(c)) => {
                if phase == LinkPhase::Remove && !self.ensure_failed {
                    self.dirty = false;
                }
                Ok(a || b || c)
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                self.ensure_failed = true;
                Err(e)
            }
        }
    }

    /// `vxlan.calico` or `vxlan-v6.calico`.
    async fn vxlan(
        &self,
        links: &[LinkMessage],
        phase: LinkPhase,
        name: &str,
        want: Option<&VxlanDevice>,
    ) -> Result<bool, Error> {
        let cur = find(links, name);
        let Some(want) = want else {
            if let (Some(l), LinkPhase::Remove) = (cur, phase) {
                info!(device = name, "no pool uses it: removing the device");
                self.delete(l.index()).await?;
                return Ok(true);
            }
            return Ok(false);
        };
        if phase == LinkPhase::Remove {
            return Ok(false);
        }
        let parent = find(links, &want.parent).ok_or_else(|| {
            Error::Netlink(format!(
                "creating {name}: parent device {} not found",
                want.parent
            ))
        })?;
        let matches = cur
            .as_ref()
            .is_some_and(|l| vxlan_matches(l, want, parent.index()));
        let mut changed = false;
        if let (Some(l), false) = (&cur, matches) {
            info!(device = name, "settings differ: recreating the device");
            self.delete(l.index()).await?;
        }
        let index = if matches {
            let l = cur.expect("matched");
            let mut set = Vec::new();
            if l.mtu() != Some(want.mtu) {
                set.push(LinkAttribute::Mtu(want.mtu));
            }
            if let Some(mac) = want.mac
                && l.mac() != Some(mac)
            {
                set.push(LinkAttribute::Address(mac.0.to_vec()));
            }
            if !set.is_empty() || !l.up() {
                self.set(l.index(), set).await?;
                changed = true;
            }
            l.index()
        } else {
            changed = true;
            self.create_vxlan(name, want, parent.index()).await?
        };
        self.addresses(index, want.address).await?;
        Ok(changed)
    }

    async fn create_vxlan(
        &self,
        name: &str,
        want: &VxlanDevice,
        parent: u32,
    ) -> Result<u32, Error> {
        let mut m = LinkMessage::default();
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m.attributes.push(LinkAttribute::Mtu(want.mtu));
        if let Some(mac) = want.mac {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::Id(want.vni),
                match want.local {
                    IpAddr::V4(a) => InfoVxlan::Local(a),
                    IpAddr::V6(a) => InfoVxlan::Local6(a),
                },
                InfoVxlan::Link(parent),
                InfoVxlan::Port(want.port),
                InfoVxlan::Learning(false),
            ])),
        ]));
        self.nl
            .request(RouteNetlinkMessage::NewLink(m), CREATE)
            .await
            .map_err(|e| Error::Netlink(format!("creating {name}: {e}")))?;
        info!(device = name, vni = want.vni, "created");
        let links = self.nl.links().await?;
        find(&links, name)
            .map(|l| l.index())
            .ok_or_else(|| Error::Netlink(format!("{name} vanished after creation")))
    }

    async fn ipip(&self, links: &[LinkMessage], phase: LinkPhase) -> Result<bool, Error> {
        let cur = find(links, IPIP_DEVICE);
        let Some(want) = &self.desired.ipip else {
            // The fallback tunl0 cannot be deleted while the ipip module is loaded: take our
            // address off and set it down, as Calico does.
            if let (Some(l), LinkPhase::Remove) = (cur, phase) {
                let had = !self.current_addresses(l.index()).await?.is_empty();
                if l.up() || had {
                    info!(
                        device = IPIP_DEVICE,
                        "no pool uses IPIP: taking the device down"
                    );
                    self.addresses(l.index(), None).await?;
                    self.set_down(l.index()).await?;
                    return Ok(true);
                }
            }
            return Ok(false);
        };
        if phase == LinkPhase::Remove {
            return Ok(false);
        }
        let mut changed = false;
        let l = match cur {
            Some(l) => l,
            None => {
                self.create_ipip(want).await?;
                changed = true;
                let links = self.nl.links().await?;
                let index = find(&links, IPIP_DEVICE)
                    .map(|l| l.index())
                    .ok_or_else(|| Error::Netlink(format!("{IPIP_DEVICE} missing")))?;
                self.set(index, vec![LinkAttribute::Mtu(want.mtu)]).await?;
                self.addresses(index, want.address.map(IpAddr::V4)).await?;
                return Ok(changed);
            }
        };
        if l.mtu() != Some(want.mtu) || !l.up() {
            self.set(l.index(), vec![LinkAttribute::Mtu(want.mtu)])
                .await?;
            changed = true;
        }
        changed |= self
            .addresses(l.index(), want.address.map(IpAddr::V4))
            .await?;
        Ok(changed)
    }

    async fn create_ipip(&self, want: &IpipDevice) -> Result<(), Error> {
        let mut m = LinkMessage::default();
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(IPIP_DEVICE.into()));
        m.attributes.push(LinkAttribute::Mtu(want.mtu));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::IpIp,
            )]));
        self.nl
            .request(RouteNetlinkMessage::NewLink(m), CREATE)
            .await
            .map_err(|e| {
                Error::Netlink(format!(
                    "creating {IPIP_DEVICE} (is the ipip module available?): {e}"
                ))
            })?;
        Ok(())
    }

    async fn delete(&self, index: u32) -> Result<(), Error> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.nl
            .request(RouteNetlinkMessage::DelLink(m), ACKED)
            .await
            .map(|_| ())
    }

    /// Sets attributes and brings the link up.
    async fn set(&self, index: u32, attrs: Vec<LinkAttribute>) -> Result<(), Error> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes = attrs;
        self.nl
            .request(RouteNetlinkMessage::SetLink(m), ACKED)
            .await
            .map(|_| ())
    }

    async fn set_down(&self, index: u32) -> Result<(), Error> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.change_mask = LinkFlags::Up;
        self.nl
            .request(RouteNetlinkMessage::SetLink(m), ACKED)
            .await
            .map(|_| ())
    }

    /// The device's addresses of both families, link-local IPv6 excluded (the kernel's own).
    async fn current_addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, Error> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = AddressMessage::default();
            req.header.family = family;
            let msgs = self.nl.dump(RouteNetlinkMessage::GetAddress(req)).await?;
            for m in msgs {
                let RouteNetlinkMessage::NewAddress(a) = m else {
                    continue;
                };
                if a.header.index != index {
                    continue;
                }
                let ip = a.attributes.iter().find_map(|at| match at {
                    AddressAttribute::Local(ip) => Some(*ip),
                    AddressAttribute::Address(ip @ IpAddr::V6(_)) => Some(*ip),
                    _ => None,
                });
                match ip {
                    Some(IpAddr::V6(v6)) if v6.segments()[0] & 0xffc0 == 0xfe80 => {}
                    Some(ip) if ip.is_ipv4() == (family == AddressFamily::Inet) => {
                        out.push((ip, a.header.prefix_len))
                    }
                    _ => {}
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Makes `index` carry exactly `want` as a host address (/32 or /128), or no address at all
    /// (link-local IPv6 aside).
    async fn addresses(&self, index: u32, want: Option<IpAddr>) -> Result<bool, Error> {
        let host_len = |ip: &IpAddr| if ip.is_ipv4() { 32 } else { 128 };
        let have = self.current_addresses(index).await?;
        let mut changed = false;
        for (ip, len) in &have {
            if Some(*ip) != want || *len != host_len(ip) {
                self.nl
                    .request(
                        RouteNetlinkMessage::DelAddress(addr_message(index, *ip, *len)),
                        ACKED,
                    )
                    .await?;
                changed = true;
            }
        }
        if let Some(ip) = want
            && !have.contains(&(ip, host_len(&ip)))
        {
            self.nl
                .request(
                    RouteNetlinkMessage::NewAddress(addr_message(index, ip, host_len(&ip))),
                    CREATE,
                )
                .await?;
            changed = true;
        }
        if changed {
            let set: BTreeSet<_> = want.into_iter().collect();
            info!(index, addresses = ?set, "tunnel address set");
        }
        Ok(changed)
    }
}

fn addr_message(index: u32, ip: IpAddr, len: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.prefix_len = len;
    m.header.index = index;
    if ip.is_ipv4() {
        m.attributes.push(AddressAttribute::Local(ip));
    }
    m.attributes.push(AddressAttribute::Address(ip));
    m
}

fn vxlan_matches(l: &Link<'_>, want: &VxlanDevice, parent: u32) -> bool {
    let (kind, data) = l.info();
    if kind != Some(&InfoKind::Vxlan) {
        return false;
    }
    let Some(InfoData::Vxlan(attrs)) = data else {
        return false;
    };
    let (mut vni, mut port, mut local, mut link, mut learning) = (None, None, None, None, None);
    for a in attrs {
        match a {
            InfoVxlan::Id(v) => vni = Some(*v),
            InfoVxlan::Port(p) => port = Some(*p),
            InfoVxlan::Local(ip) => local = Some(IpAddr::V4(*ip)),
            InfoVxlan::Local6(ip) => local = Some(IpAddr::V6(*ip)),
            InfoVxlan::Link(i) => link = Some(*i),
            InfoVxlan::Learning(b) => learning = Some(*b),
            _ => {}
        }
    }
    let ok = vni == Some(want.vni)
        && port == Some(want.port)
        && local == Some(want.local)
        && link == Some(parent)
        && learning != Some(true);
    if !ok {
        warn!(
            ?vni,
            ?port,
            ?local,
            ?link,
            ?learning,
            "a VXLAN device differs from the desired settings"
        );
    }
    ok
}
