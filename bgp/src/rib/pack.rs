//! Turning a batch of per-peer route changes into UPDATE messages: prefixes sharing one
//! attribute set go in as few UPDATEs as fit under the session's message size
//! ([`EncodeContext::max_message_len`], RFC 4271 §4.1 / RFC 8654), IPv4 in the NLRI and
//! Withdrawn Routes fields, IPv6 in MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760).

use std::net::IpAddr;
use std::sync::Arc;

use crate::packet::{
    AfiSafi, EncodeContext, Ipv4Prefix, Ipv6Prefix, Message, MpNextHop, MpReach, MpUnreach, Prefix,
    Update,
};

use super::{FxMap, RouteAttrs};

/// Octets a prefix takes in NLRI or withdrawn routes: the length octet and the address
/// octets the length needs (RFC 4271 §4.3).
pub fn prefix_wire_len(p: &Prefix) -> usize {
    let len = match p {
        Prefix::V4(p) => p.prefix_len(),
        Prefix::V6(p) => p.prefix_len(),
    };
    1 + usize::from(len).div_ceil(8)
}

/// The changes for one peer, collected while a batch runs.
#[derive(Default)]
pub(crate) struct Outgoing {
    withdraw_v4: Vec<Ipv4Prefix>,
    withdraw_v6: Vec<Ipv6Prefix>,
    /// Announcements by attribute set, in the order the sets were first used.
    groups: Vec<(Arc<RouteAttrs>, Vec<Prefix>)>,
    /// Attribute set (by address) → index in `groups`.
    index: FxMap<usize, usize>,
}

impl Outgoing {
    pub(crate) fn is_empty(&self) -> bool {
        self.withdraw_v4.is_empty() && self.withdraw_v6.is_empty() && self.groups.is_empty()
    }

    pub(crate) fn withdraw(&mut self, p: Prefix) {
        match p {
            Prefix::V4(p) => self.withdraw_v4.push(p),
            Prefix::V6(p) => self.withdraw_v6.push(p),
        }
    }

    pub(crate) fn announce(&mut self, attrs: &Arc<RouteAttrs>, p: Prefix) {
        let key = Arc::as_ptr(attrs) as usize;
        let i = *self.index.entry(key).or_insert_with(|| {
            self.groups.push((attrs.clone(), Vec::new()));
            self.groups.len() - 1
        });
        self.groups[i].1.push(p);
    }

    /// The UPDATEs: withdrawals first, then one or more per attribute set.
    pub(crate) fn into_updates(self, ctx: &EncodeContext) -> Vec<Update> {
        let mut out = Vec::new();
        pack_withdrawals(self.withdraw_v4, self.withdraw_v6, ctx, &mut out);
        for (attrs, prefixes) in self.groups {
            pack_announcements(&attrs, prefixes, ctx, &mut out);
        }
        out
    }
}

/// Splits `items` into runs whose encoded prefixes fit in `room` octets each.
fn chunks<T: Copy>(items: &[T], room: usize, len: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut used = 0;
    for item in items {
        let l = len(item);
        if used + l > room && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            used = 0;
        }
        cur.push(*item);
        used += l;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn encoded_len(u: &Update, ctx: &EncodeContext) -> usize {
    Message::Update(u.clone()).encode(ctx).len()
}

/// Withdrawals: IPv4 in the Withdrawn Routes field, IPv6 in MP_UNREACH_NLRI.
pub(crate) fn pack_withdrawals(
    v4: Vec<Ipv4Prefix>,
    v6: Vec<Ipv6Prefix>,
    ctx: &EncodeContext,
    out: &mut Vec<Update>,
) {
    let max = ctx.max_message_len();
    if !v4.is_empty() {
        let room = max - encoded_len(&Update::default(), ctx);
        for run in chunks(&v4, room, |p| prefix_wire_len(&Prefix::V4(*p))) {
            out.push(Update {
                withdrawn: run,
                ..Default::default()
            });
        }
    }
    if !v6.is_empty() {
        let unreach = |withdrawn| {
            let mut u = Update::default();
            u.attributes.mp_unreach = Some(MpUnreach {
                afi_safi: AfiSafi::IPV6_UNICAST,
                withdrawn,
            });
            u
        };
        // One octet spare: the attribute may need the Extended Length form once filled.
        let room = max - encoded_len(&unreach(Vec::new()), ctx) - 1;
        let prefixes: Vec<Prefix> = v6.into_iter().map(Prefix::V6).collect();
        for run in chunks(&prefixes, room, prefix_wire_len) {
            out.push(unreach(run));
        }
    }
}

/// Announcements of `prefixes` with `attrs` (all of the family of `attrs.next_hop`).
pub(crate) fn pack_announcements(
    attrs: &RouteAttrs,
    prefixes: Vec<Prefix>,
    ctx: &EncodeContext,
    out: &mut Vec<Update>,
) {
    let max = ctx.max_message_len();
    let (v4, v6): (Vec<Prefix>, Vec<Prefix>) = prefixes
        .into_iter()
        .partition(|p| matches!(p, Prefix::V4(_)));
    match attrs.next_hop {
        IpAddr::V4(nh) if !v4.is_empty() => {
            let mut base = Update {
                attributes: attrs.attrs.clone(),
                ..Default::default()
            };
            base.attributes.next_hop = Some(nh);
            let room = max.saturating_sub(encoded_len(&base, ctx)).max(5);
            for run in chunks(&v4, room, prefix_wire_len) {
                let mut u = base.clone();
                u.nlri = run
                    .into_iter()
                    .filter_map(|p| match p {
                        Prefix::V4(p) => Some(p),
                        Prefix::V6(_) => None,
                    })
                    .collect();
                out.push(u);
            }
        }
        IpAddr::V6(global) if !v6.is_empty() => {
            let mut base = Update {
                attributes: attrs.attrs.clone(),
                ..Default::default()
            };
            base.attributes.mp_reach = Some(MpReach {
                afi_safi: AfiSafi::IPV6_UNICAST,
                next_hop: MpNextHop::V6 {
                    global,
                    link_local: None,
                },
                nlri: Vec::new(),
            });
            let room = max.saturating_sub(encoded_len(&base, ctx) + 1).max(17);
            for run in chunks(&v6, room, prefix_wire_len) {
                let mut u = base.clone();
                if let Some(r) = u.attributes.mp_reach.as_mut() {
                    r.nlri = run;
                }
                out.push(u);
            }
        }
        _ => {}
    }
}
