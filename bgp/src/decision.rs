//! The BGP decision process: which of the candidate paths to one prefix is best (RFC 4271
//! §9.1.2, with the RFC 4456 §9 changes for route reflection), and which are equal enough to
//! share the traffic (multipath).
//!
//! The steps run as RFC 4271 §9.1.2.2 describes them: each removes candidates from the set,
//! so the result does not depend on the order the candidates are given in (the MED step is
//! not a total order, so a pairwise "compare two paths" would be order dependent).
//!
//! 1. highest degree of preference: LOCAL_PREF, 100 when absent; a LOCAL_PREF received from
//!    an external peer is ignored (RFC 4271 §5.1.5), so eBGP routes count 100 (§9.1.1);
//! 2. locally originated over learned;
//! 3. shortest AS_PATH ([`AsPath::len_for_decision`](crate::packet::AsPath::len_for_decision):
//!    an AS_SET counts 1, confederation segments 0) (§9.1.2.2 a);
//! 4. lowest ORIGIN, IGP < EGP < INCOMPLETE (§9.1.2.2 b);
//! 5. lowest MULTI_EXIT_DISC among routes from the same neighbouring AS, a missing MED
//!    counting 0 (§9.1.2.2 c; always-compare-med off);
//! 6. eBGP over iBGP (§9.1.2.2 d);
//! 7. lowest IGP cost to the NEXT_HOP (§9.1.2.2 e): tabby runs no IGP, all costs are equal;
//! 8. lowest BGP identifier, the ORIGINATOR_ID instead of the peer's when present
//!    (§9.1.2.2 f, RFC 4456 §9);
//! 9. shortest CLUSTER_LIST (RFC 4456 §9);
//! 10. lowest peer address (§9.1.2.2 g).
//!
//! **Multipath rule**: the candidates left after step 7 are the multipath set; its next
//! hops, deduplicated, are what the best-path output carries. So paths are equal-best when
//! they tie on LOCAL_PREF, origination, AS_PATH length, ORIGIN, MED (per neighbouring AS),
//! and eBGP/iBGP; they may come from different neighbouring ASes ("as-path multipath-relax"
//! in vendor terms), which for a pod network means: every node announcing the same block
//! with the same attributes gets a share.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr};

use crate::packet::Origin;

/// What the decision process needs to know about one candidate path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Degree of preference (step 1): LOCAL_PREF for internal and local routes, 100 when
    /// absent or learned over eBGP.
    pub local_pref: u32,
    /// Originated by this speaker (step 2).
    pub local: bool,
    /// [`AsPath::len_for_decision`](crate::packet::AsPath::len_for_decision) (step 3).
    pub as_path_len: usize,
    /// ORIGIN; a path without one counts as INCOMPLETE (step 4).
    pub origin: Origin,
    /// MULTI_EXIT_DISC, 0 when absent (step 5).
    pub med: u32,
    /// The neighbouring AS from the AS_PATH (`None` for a path from inside our AS), which
    /// scopes the MED comparison (step 5).
    pub neighbor_as: Option<u32>,
    /// Learned from an external peer (step 6).
    pub ebgp: bool,
    /// ORIGINATOR_ID if present, else the peer's BGP identifier (step 8).
    pub bgp_id: Ipv4Addr,
    /// CLUSTER_LIST length (step 9).
    pub cluster_list_len: usize,
    /// The peer's address (step 10).
    pub peer_addr: IpAddr,
}

/// The outcome of [`select`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Index of the best path in the candidate slice.
    pub best: usize,
    /// Indices of the multipath set (see the module docs), in candidate order; contains
    /// `best`.
    pub multipath: Vec<usize>,
}

/// Runs the decision process over `candidates`; `None` when there are none.
pub fn select(candidates: &[Candidate]) -> Option<Selection> {
    match candidates.len() {
        0 => return None,
        1 => {
            return Some(Selection {
                best: 0,
                multipath: vec![0],
            });
        }
        _ => {}
    }
    let mut alive: Vec<usize> = (0..candidates.len()).collect();
    let c = candidates;
    keep_best(&mut alive, |i, j| c[i].local_pref.cmp(&c[j].local_pref));
    keep_best(&mut alive, |i, j| c[i].local.cmp(&c[j].local));
    keep_best(&mut alive, |i, j| c[j].as_path_len.cmp(&c[i].as_path_len));
    keep_best(&mut alive, |i, j| c[j].origin.cmp(&c[i].origin));
    // Step 5: a path goes if another path from the same neighbouring AS has a lower MED.
    let before_med = alive.clone();
    alive.retain(|&i| {
        !before_med
            .iter()
            .any(|&j| c[j].neighbor_as == c[i].neighbor_as && c[j].med < c[i].med)
    });
    keep_best(&mut alive, |i, j| c[i].ebgp.cmp(&c[j].ebgp));
    let multipath = alive.clone();
    keep_best(&mut alive, |i, j| c[j].bgp_id.cmp(&c[i].bgp_id));
    keep_best(&mut alive, |i, j| {
        c[j].cluster_list_len.cmp(&c[i].cluster_list_len)
    });
    keep_best(&mut alive, |i, j| c[j].peer_addr.cmp(&c[i].peer_addr));
    Some(Selection {
        best: alive[0],
        multipath,
    })
}

/// Keeps the candidates that rank highest under `rank` (`Greater` = `i` better than `j`).
fn keep_best(alive: &mut Vec<usize>, rank: impl Fn(usize, usize) -> Ordering) {
    if alive.len() < 2 {
        return;
    }
    let mut top = alive[0];
    for &i in &alive[1..] {
        if rank(i, top) == Ordering::Greater {
            top = i;
        }
    }
    alive.retain(|&i| rank(i, top) == Ordering::Equal);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An iBGP path from 192.0.2.`n` with router id 192.0.2.`n`, all else neutral.
    fn ibgp(n: u8) -> Candidate {
        Candidate {
            local_pref: 100,
            local: false,
            as_path_len: 0,
            origin: Origin::Igp,
            med: 0,
            neighbor_as: None,
            ebgp: false,
            bgp_id: Ipv4Addr::new(192, 0, 2, n),
            cluster_list_len: 0,
            peer_addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)),
        }
    }

    /// Asserts that `winner` beats `loser` whatever the order they come in.
    fn beats(winner: Candidate, loser: Candidate) {
        assert_eq!(select(&[winner, loser]).unwrap().best, 0, "{winner:?}");
        assert_eq!(select(&[loser, winner]).unwrap().best, 1, "{winner:?}");
    }

    #[test]
    fn no_candidates_no_best() {
        assert_eq!(select(&[]), None);
    }

    #[test]
    fn step1_highest_local_pref() {
        let mut a = ibgp(9);
        a.local_pref = 200;
        let mut b = ibgp(1);
        b.as_path_len = 0;
        let mut a_long = a;
        a_long.as_path_len = 5;
        beats(a_long, b);
    }

    #[test]
    fn step2_locally_originated() {
        let mut a = ibgp(9);
        a.local = true;
        a.as_path_len = 3;
        beats(a, ibgp(1));
    }

    #[test]
    fn step3_shortest_as_path() {
        let mut a = ibgp(9);
        a.as_path_len = 1;
        a.origin = Origin::Incomplete;
        let mut b = ibgp(1);
        b.as_path_len = 2;
        beats(a, b);
    }

    #[test]
    fn step4_lowest_origin() {
        let mut a = ibgp(9);
        a.origin = Origin::Egp;
        a.med = 50;
        let mut b = ibgp(1);
        b.origin = Origin::Incomplete;
        beats(a, b);
    }

    #[test]
    fn step5_lowest_med_same_neighbor_as() {
        let mut a = ibgp(9);
        a.neighbor_as = Some(65001);
        a.med = 10;
        let mut b = ibgp(1);
        b.neighbor_as = Some(65001);
        b.med = 20;
        beats(a, b);
    }

    #[test]
    fn step5_med_ignored_across_neighbor_ases() {
        // Different neighbouring ASes: MED not compared, router id decides.
        let mut a = ibgp(1);
        a.neighbor_as = Some(65001);
        a.med = 500;
        let mut b = ibgp(9);
        b.neighbor_as = Some(65002);
        b.med = 0;
        beats(a, b);
        // And the classic non-transitive triple gives the same answer in every order.
        let mut c = ibgp(5);
        c.neighbor_as = Some(65001);
        c.med = 100;
        let orders = [[a, b, c], [b, c, a], [c, a, b], [c, b, a]];
        let bests: Vec<_> = orders
            .iter()
            .map(|o| o[select(o).unwrap().best].bgp_id)
            .collect();
        assert!(bests.iter().all(|&id| id == bests[0]), "{bests:?}");
        assert_eq!(bests[0], Ipv4Addr::new(192, 0, 2, 5));
    }

    #[test]
    fn step5_missing_med_counts_zero() {
        let mut a = ibgp(9);
        a.neighbor_as = Some(65001);
        let mut b = ibgp(1);
        b.neighbor_as = Some(65001);
        b.med = 1;
        beats(a, b);
    }

    #[test]
    fn step6_ebgp_over_ibgp() {
        let mut a = ibgp(9);
        a.ebgp = true;
        beats(a, ibgp(1));
    }

    #[test]
    fn step8_lowest_bgp_identifier() {
        let a = ibgp(1);
        let mut b = ibgp(2);
        b.peer_addr = "192.0.2.0".parse().unwrap();
        beats(a, b);
    }

    #[test]
    fn step9_shortest_cluster_list() {
        let mut a = ibgp(1);
        a.cluster_list_len = 1;
        a.peer_addr = "192.0.2.200".parse().unwrap();
        let mut b = ibgp(1);
        b.cluster_list_len = 2;
        beats(a, b);
    }

    #[test]
    fn step10_lowest_peer_address() {
        let mut a = ibgp(7);
        a.peer_addr = "192.0.2.3".parse().unwrap();
        let mut b = ibgp(7);
        b.peer_addr = "192.0.2.4".parse().unwrap();
        beats(a, b);
    }

    #[test]
    fn multipath_is_the_set_before_the_router_id_step() {
        let a = ibgp(3);
        let b = ibgp(1);
        let mut c = ibgp(2);
        c.med = 5; // same (absent) neighbouring AS, higher MED: not equal-best
        let mut d = ibgp(4);
        d.cluster_list_len = 3; // cluster list comes after: still equal-best
        let s = select(&[a, b, c, d]).unwrap();
        assert_eq!(s.best, 1);
        assert_eq!(s.multipath, vec![0, 1, 3]);
    }
}
