//! The neighbour and FDB manager: permanent ARP entries (VTEP IP → VTEP MAC on vxlan.calico,
//! pod IP → pod MAC on its cali veth) and permanent FDB entries on vxlan.calico (VTEP MAC →
//! remote node address). Only permanent entries on vxlan.calico and cali* devices are felix's;
//! learned entries and every other device are left alone.

use std::collections::BTreeMap;
use std::net::IpAddr;

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use tracing::warn;

use crate::Error;
use crate::model::{Mac, VXLAN_DEVICE, VXLAN6_DEVICE, WORKLOAD_PREFIX};
use crate::netlink::{ACKED, Netlink, REPLACE};

type NeighKey = (u32, IpAddr);

pub struct NeighManager {
    nl: Netlink,
    neighbours: BTreeMap<(String, IpAddr), Mac>,
    fdb: BTreeMap<(String, Mac), IpAddr>,
    ifindex: BTreeMap<String, u32>,
    dirty: bool,
}

/// What one pass changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NeighStats {
    pub neigh_set: usize,
    pub neigh_deleted: usize,
    pub fdb_set: usize,
    pub fdb_deleted: usize,
}

impl NeighManager {
    pub fn new(nl: Netlink) -> Self {
        NeighManager {
            nl,
            neighbours: BTreeMap::new(),
            fdb: BTreeMap::new(),
            ifindex: BTreeMap::new(),
            dirty: true,
        }
    }

    pub fn set_desired(
        &mut self,
        neighbours: &BTreeMap<(String, IpAddr), Mac>,
        fdb: &BTreeMap<(String, Mac), IpAddr>,
    ) {
        if self.neighbours != *neighbours || self.fdb != *fdb {
            self.neighbours = neighbours.clone();
            self.fdb = fdb.clone();
            self.dirty = true;
        }
    }

    pub fn set_interfaces(&mut self, ifindex: &BTreeMap<String, u32>) {
        if self.ifindex != *ifindex {
            self.ifindex = ifindex.clone();
            self.dirty = true;
        }
    }

    pub fn queue_resync(&mut self) {
        self.dirty = true;
    }

    pub fn dirty(&self) -> bool {
        self.dirty
    }

    fn ours(&self, index: u32) -> bool {
        self.ifindex.iter().any(|(n, i)| {
            *i == index
                && (n == VXLAN_DEVICE || n == VXLAN6_DEVICE || n.starts_with(WORKLOAD_PREFIX))
        })
    }

    pub async fn apply(&mut self) -> Result<NeighStats, Error> {
        let mut stats = NeighStats::default();
        if !self.dirty {
            return Ok(stats);
        }
        let mut missing_device = false;
        let mut want: BTreeMap<NeighKey, Mac> = BTreeMap::new();
        for ((dev, ip), mac) in &self.neighbours {
            match self.ifindex.get(dev) {
                Some(i) => {
                    want.insert((*i, *ip), *mac);
                }
                None => missing_device = true,
            }
        }
        // FDB entries by (device index, MAC).
        let mut fdb_want: BTreeMap<(u32, Mac), IpAddr> = BTreeMap::new();
        for ((dev, mac), ip) in &self.fdb {
            match self.ifindex.get(dev) {
                Some(i) => {
                    fdb_want.insert((*i, *mac), *ip);
                }
                None => missing_device = true,
            }
        }
        let vteps: Vec<u32> = [VXLAN_DEVICE, VXLAN6_DEVICE]
            .iter()
            .filter_map(|d| self.ifindex.get(*d).copied())
            .collect();

        let mut actual: BTreeMap<NeighKey, Mac> = BTreeMap::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            for m in self.dump(family).await? {
                if m.header.state == NeighbourState::Permanent
                    && self.ours(m.header.ifindex)
                    && let (Some(ip), Some(mac)) = (dst(&m), lladdr(&m))
                {
                    actual.insert((m.header.ifindex, ip), mac);
                }
            }
        }
        let mut fdb_actual: BTreeMap<(u32, Mac), IpAddr> = BTreeMap::new();
        if !vteps.is_empty() {
            for m in self.dump(AddressFamily::Bridge).await? {
                if vteps.contains(&m.header.ifindex)
                    && m.header.state == NeighbourState::Permanent
                    && let (Some(ip), Some(mac)) = (dst(&m), lladdr(&m))
                    && mac != Mac([0; 6])
                {
                    fdb_actual.insert((m.header.ifindex, mac), ip);
                }
            }
        }

        let mut reqs = Vec::new();
        for (k, mac) in &want {
            if actual.get(k) != Some(mac) {
                reqs.push((
                    RouteNetlinkMessage::NewNeighbour(neigh_msg(k.0, k.1, *mac)),
                    REPLACE,
                ));
                stats.neigh_set += 1;
            }
        }
        for (k, mac) in &actual {
            if !want.contains_key(k) {
                reqs.push((
                    RouteNetlinkMessage::DelNeighbour(neigh_msg(k.0, k.1, *mac)),
                    ACKED,
                ));
                stats.neigh_deleted += 1;
            }
        }
        for (k @ (index, mac), ip) in &fdb_want {
            if fdb_actual.get(k) != Some(ip) {
                if let Some(old) = fdb_actual.get(k) {
                    // An FDB entry's destination is part of its key: drop the old one.
                    let old = fdb_msg(*index, *mac, *old);
                    reqs.push((RouteNetlinkMessage::DelNeighbour(old), ACKED));
                }
                reqs.push((
                    RouteNetlinkMessage::NewNeighbour(fdb_msg(*index, *mac, *ip)),
                    REPLACE,
                ));
                stats.fdb_set += 1;
            }
        }
        for (k @ (index, mac), ip) in &fdb_actual {
            if !fdb_want.contains_key(k) {
                reqs.push((
                    RouteNetlinkMessage::DelNeighbour(fdb_msg(*index, *mac, *ip)),
                    ACKED,
                ));
                stats.fdb_deleted += 1;
            }
        }
        let failures = self.nl.bulk(reqs).await;
        for (_, e) in &failures {
            warn!(error = %e, "programming a neighbour or FDB entry");
        }
        self.dirty = missing_device || !failures.is_empty();
        Ok(stats)
    }

    async fn dump(&self, family: AddressFamily) -> Result<Vec<NeighbourMessage>, Error> {
        let mut req = NeighbourMessage::default();
        req.header.family = family;
        Ok(self
            .nl
            .dump(RouteNetlinkMessage::GetNeighbour(req))
            .await?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => Some(n),
                _ => None,
            })
            .collect())
    }
}

fn dst(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        // FDB entries (family AF_BRIDGE) carry an NDA_DST that netlink-packet-route leaves
        // undecoded.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => Some(IpAddr::from(<[u8; 4]>::try_from(b.as_slice()).ok()?)),
            16 => Some(IpAddr::from(<[u8; 16]>::try_from(b.as_slice()).ok()?)),
            _ => None,
        },
        _ => None,
    })
}

fn lladdr(m: &NeighbourMessage) -> Option<Mac> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
            Some(Mac(b.as_slice().try_into().expect("6 bytes")))
        }
        _ => None,
    })
}

/// `ip neigh replace IP lladdr MAC dev DEV nud permanent`
fn neigh_msg(index: u32, ip: IpAddr, mac: Mac) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(NeighbourAttribute::Destination(neigh_addr(ip)));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    m
}

fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

/// `bridge fdb replace MAC dev vxlan.calico dst IP self permanent`
fn fdb_msg(index: u32, mac: Mac, ip: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(neigh_addr(ip)));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdb_destinations_decode_from_raw_bytes() {
        // What a dump of family AF_BRIDGE yields: NDA_DST left as raw bytes.
        let mut m = fdb_msg(4, Mac([0x66, 0, 0, 0, 0, 2]), "192.0.2.12".parse().unwrap());
        m.attributes[1] =
            NeighbourAttribute::Destination(NeighbourAddress::Other(vec![192, 0, 2, 12]));
        assert_eq!(dst(&m), Some("192.0.2.12".parse().unwrap()));
        assert_eq!(lladdr(&m), Some(Mac([0x66, 0, 0, 0, 0, 2])));
        assert_eq!(
            m.header.flags,
            NeighbourFlags::Own,
            "FDB entries are `self`"
        );
        assert_eq!(m.header.state, NeighbourState::Permanent);
    }

    #[test]
    fn neighbour_entries_are_permanent() {
        let m = neigh_msg(
            7,
            "198.18.0.65".parse().unwrap(),
            Mac([0x66, 0, 0, 0, 0, 2]),
        );
        assert_eq!(
            (m.header.ifindex, m.header.state),
            (7, NeighbourState::Permanent)
        );
        assert_eq!(dst(&m), Some("198.18.0.65".parse().unwrap()));
    }
}
