//! `tabby-felix`: felix on its own, fed from a file of input lines (`felix::script` syntax), in
//! the network namespace it is started in. For test rigs (the IPIP VM test) and for debugging;
//! in a cluster, `tabby-node` runs felix and feeds it from the datastore.
//!
//! `tabby-felix NODE UNDERLAY_DEV INPUT_FILE [RESYNC_SECONDS]` — runs until killed.

use std::time::Duration;

use felix::agent::{AgentConfig, AgentMsg, channels, run};
use felix::{LocalNode, script};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: tabby-felix NODE UNDERLAY_DEV INPUT_FILE [RESYNC_SECONDS]");
        std::process::exit(2);
    }
    let text = std::fs::read_to_string(&args[3]).unwrap_or_else(|e| {
        eprintln!("reading {}: {e}", args[3]);
        std::process::exit(1)
    });
    let mut inputs = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        match script::parse_line(line) {
            Ok(i) => inputs.push(i),
            Err(e) => {
                eprintln!("{}: {e}", args[3]);
                std::process::exit(1)
            }
        }
    }
    let mut cfg = AgentConfig::new(LocalNode {
        name: args[1].clone(),
        underlay_dev: args[2].clone(),
    });
    cfg.mtu_file = None;
    cfg.resync_interval = args
        .get(4)
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let (h, rx, stx) = channels();
        let agent = tokio::spawn(run(cfg, rx, stx));
        for i in inputs {
            h.tx.send(AgentMsg::Input(i)).await.expect("agent alive");
        }
        h.tx.send(AgentMsg::InSync).await.expect("agent alive");
        let mut status = h.status.clone();
        let tx = h.tx;
        while status.changed().await.is_ok() {
            let s = status.borrow().clone();
            eprintln!(
                "tabby-felix: pass {} routes {:?} error {:?}",
                s.passes, s.routes, s.last_error
            );
        }
        drop(tx);
        if let Ok(Err(e)) = agent.await {
            eprintln!("tabby-felix: {e}");
            std::process::exit(1);
        }
    });
}
