//! Issue 4's mesh proof: a full iBGP mesh of 50 `tabby-bgpd` speakers on 127.0.1.1–127.0.1.50
//! in a network namespace of its own, each originating its own /26 from 198.18.0.0/15. Every
//! speaker must learn every other's block (read from each control socket's `routes`); then
//! speaker 1 originates a new block through a config reload (SIGHUP) and every other speaker
//! must learn it. Times are printed, and only a generous bound is asserted.
//!
//! Needs root (for the namespace). `TABBY_MESH_N` changes the number of speakers.

mod bgpd;

use std::time::Duration;

/// Generous: the mesh converges in seconds on a laptop; CI runners are slower and shared.
const BOUND: Duration = Duration::from_secs(60);

#[test]
fn full_mesh_of_50_learns_every_block_and_a_new_one() {
    let n: usize = std::env::var("TABBY_MESH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let bin = bgpd::bgpd_binary(Some(env!("CARGO_BIN_EXE_tabby-bgpd")))
        .expect("the tabby-bgpd binary Cargo built");
    let f = bgpd::in_own_netns(move || bgpd::run_mesh(&bin, n, BOUND))
        .unwrap_or_else(|e| panic!("mesh of {n}: {e}"));
    println!(
        "mesh of {}: all sessions up {:.3} s and every speaker has every block {:.3} s after start; new block on all {} others {:.3} s after SIGHUP; CPU {:.2} s in all, peak RSS {:.1} MB per speaker at most",
        f.speakers,
        f.sessions_up.as_secs_f64(),
        f.initial.as_secs_f64(),
        f.speakers - 1,
        f.new_block.as_secs_f64(),
        f.cpu.as_secs_f64(),
        f.max_peak_rss_kib as f64 / 1024.0
    );
    assert!(f.initial < BOUND + BOUND && f.new_block < BOUND);
}
