//! A mixed cluster: node1 and node2 run tabby-node, node3 runs BIRD 2 with the configuration
//! confd's `render_bird` writes for it (the way a Calico node runs BIRD from confd's
//! template); all pods reach each other, unencapsulated, with node3's routes programmed by
//! BIRD. Needs root, iproute2, iputils-ping, nftables and BIRD 2.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use tests::cluster::{Bins, Cluster, Mode};

/// As in `lab.rs`: the other packages' binaries, built once into `target/lab-e2e`.
fn bin_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = Path::new(env!("CARGO_BIN_EXE_tabby-lab"))
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("lab-e2e");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "node",
                "-p",
                "cni-plugin",
                "-p",
                "ctl",
                "--bins",
            ])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building the tabby binaries");
        target.join("debug")
    })
}

/// Everything in the datastore that the render reads.
fn resources(datastore: &str) -> confd::Resources {
    let ds = datastore::open(datastore).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut res = confd::Resources::default();
    rt.block_on(async {
        for kind in api::Kind::ALL {
            for r in ds.list(kind).await.unwrap().items {
                res.insert(r);
            }
        }
    });
    res
}

#[test]
fn mixed_cluster_with_a_bird_node() {
    let bins = Bins::locate(Some(bin_dir().to_path_buf())).unwrap();
    let dir = std::env::temp_dir().join(format!("tabby-lab-bird-{}", std::process::id()));
    let mut c = Cluster::create(&dir, bins, Mode::None).unwrap();
    let r = (|| {
        c.build_router()?;
        for _ in 0..3 {
            c.add_node(3)?;
        }
        for i in 0..3 {
            c.peer_with_router(i)?;
        }
        c.run_router_bgp()?;
        c.start_node(0)?;
        c.start_node(1)?;
        c.wait_node_started(0)?;
        c.wait_node_started(1)?;
        c.prepare_bird_node(2)?;
        for i in 0..3 {
            c.add_pod(i)?;
        }
        // node3 has no felix: do for its pod's veth what felix would.
        c.host_veth_sysctls(2)?;
        let conf = confd::render_bird(
            &resources(&c.rec.datastore()),
            "node3",
            &confd::BirdOptions::default(),
        )
        .map_err(|e| tests::Error::Command {
            what: "render_bird for node3".into(),
            detail: e.to_string(),
        })?;
        c.run_bird_on_node(2, &conf)?;
        c.wait_converged(Mode::None, Duration::from_secs(90))
    })();
    if let Err(e) = r {
        let bird = |args: &[&str]| {
            Command::new("birdc")
                .arg("-s")
                .arg(c.rec.nodes[2].dir.join("bird.ctl"))
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        panic!(
            "{e}\n--- node3 routes:\n{}\n--- birdc show protocols:\n{}\n--- bird.conf:\n{}\n{}",
            tests::sys::ip_in(&c.rec.nodes[2].ns, &["route"]).unwrap_or_default(),
            bird(&["show", "protocols"]),
            std::fs::read_to_string(c.rec.nodes[2].dir.join("bird.conf")).unwrap_or_default(),
            c.logs_tail(20)
        );
    }
    // node3's routes to the other nodes' blocks are BIRD's; theirs to node3's are tabby's. Pods
    // can already ping through the ToR router before BIRD's mesh sessions are up, so this waits
    // (bounded) for BIRD to have learned every block.
    let covers = |bird_routes: &str, ip: &str| {
        bird_routes.lines().any(|l| {
            let net = l.split_whitespace().next().unwrap_or("");
            net.split('/').next().is_some_and(|a| {
                a.rsplit_once('.').map(|x| x.0) == ip.rsplit_once('.').map(|x| x.0)
            })
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let bird_routes =
            tests::sys::ip_in(&c.rec.nodes[2].ns, &["route", "show", "proto", "bird"])
                .unwrap_or_default();
        let missing: Vec<String> = (0..2)
            .map(|i| {
                c.rec
                    .pods
                    .iter()
                    .find(|p| p.node == i)
                    .unwrap()
                    .ip
                    .to_string()
            })
            .filter(|ip| !covers(&bird_routes, ip))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node3 has no BIRD route to {missing:?} after 60 s: {bird_routes}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // And the tabby nodes' mesh sessions with BIRD are up.
    for i in 0..2 {
        let bird = std::net::IpAddr::V4(c.rec.nodes[2].addr);
        assert!(
            c.bgp_peers(i).contains(&(bird, true)),
            "node{}: {}",
            i + 1,
            c.bgp_status(i)
        );
    }
}
