//! The BIRD configuration `render_bird` writes, run for real: several BIRD 2 daemons, one per
//! rendered node, in a private network namespace, must establish every session the render
//! planned and learn each other's blocks, through the mesh (with an MD5 mesh password) and
//! through a route reflector. Needs root (for the namespace) and Debian's `bird2`.
//!
//! Nodes use loopback addresses (127.0.0.x, all local on `lo`) and each listens on its own
//! port (per-node BGPConfiguration `listenPort`), so that the daemons can share the namespace.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::bgp::{BGPConfigurationSpec, BGPPassword, SecretKeyRef};
use api::{
    AffinityState, BGPConfiguration, BGPPeer, BGPPeerSpec, BlockAffinity, BlockAffinitySpec,
    IPPool, IPPoolSpec, Node, NodeBgpSpec, NodeSpec,
};
use confd::{BirdOptions, Resources, render_bird};

fn node(name: &str, ip: &str, port: u16, rr: Option<&str>) -> (Node, BGPConfiguration) {
    let mut n = Node::new(
        name,
        NodeSpec {
            bgp: Some(NodeBgpSpec {
                ipv4_address: Some(format!("{ip}/8")),
                route_reflector_cluster_id: rr.map(str::to_string),
                ..NodeBgpSpec::default()
            }),
            ..NodeSpec::default()
        },
    );
    if rr.is_some() {
        n.metadata
            .labels
            .insert("route-reflector".into(), "true".into());
    }
    let cfg = BGPConfiguration::new(
        format!("node.{name}"),
        BGPConfigurationSpec {
            listen_port: Some(port),
            ..BGPConfigurationSpec::default()
        },
    );
    (n, cfg)
}

fn block(node: &str, cidr: &str) -> BlockAffinity {
    BlockAffinity::new(
        format!("{node}-block"),
        BlockAffinitySpec {
            state: AffinityState::Confirmed,
            node: node.into(),
            cidr: Some(cidr.parse().unwrap()),
            ..BlockAffinitySpec::default()
        },
    )
}

fn cluster(nodes: &[(&str, &str, u16, Option<&str>)]) -> Resources {
    let mut res = Resources {
        pools: vec![IPPool::new(
            "pool",
            IPPoolSpec {
                cidr: Some("198.18.0.0/16".parse().unwrap()),
                ..IPPoolSpec::default()
            },
        )],
        ..Resources::default()
    };
    for (i, (name, ip, port, rr)) in nodes.iter().enumerate() {
        let (n, c) = node(name, ip, *port, *rr);
        res.nodes.push(n);
        res.bgp_configurations.push(c);
        res.affinities
            .push(block(name, &format!("198.18.{i}.0/26")));
    }
    res
}

/// Runs `test` on a thread inside a new network namespace with `lo` up.
fn in_netns(test: impl FnOnce() + Send + 'static) {
    let t = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespace membership.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) (this test needs root): {}",
            std::io::Error::last_os_error()
        );
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
        test();
    });
    if let Err(panic) = t.join() {
        std::panic::resume_unwind(panic);
    }
}

/// One BIRD daemon, killed on drop (and when the test process dies).
struct Bird {
    name: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Bird {
    fn start(name: &str, config: &str) -> Bird {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("bird.conf");
        std::fs::write(&conf, config).unwrap();
        let log = std::fs::File::create(dir.path().join("bird.out")).unwrap();
        let mut cmd = Command::new("bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(dir.path().join("bird.ctl"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("starting bird (Debian package bird2)");
        let bird = Bird {
            name: name.into(),
            child,
            dir,
        };
        let ctl = bird.dir.path().join("bird.ctl");
        assert!(
            wait(Duration::from_secs(5), || ctl.exists()),
            "{name}: bird did not start: {}",
            bird.output()
        );
        bird
    }

    fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(self.dir.path().join("bird.ctl"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bird.out")).unwrap_or_default()
    }

    /// Waits until every BGP protocol is Established and every prefix is in the table.
    fn converges(&self, protocols: usize, prefixes: &[&str]) {
        let ok = wait(Duration::from_secs(30), || {
            let p = self.birdc(&["show", "protocols"]);
            let established = p
                .lines()
                .filter(|l| l.contains(" BGP ") && l.contains("Established"))
                .count();
            established == protocols
                && prefixes.iter().all(|net| {
                    self.birdc(&["show", "route", "for", net])
                        .contains(&net.to_string())
                })
        });
        assert!(
            ok,
            "{}: not converged to {protocols} sessions and {prefixes:?}:\n{}\n{}\n{}",
            self.name,
            self.birdc(&["show", "protocols", "all"]),
            self.birdc(&["show", "route", "all"]),
            self.output()
        );
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn start(res: &Resources, node: &str) -> Bird {
    let opts = BirdOptions {
        kernel_export: false,
    };
    let text = render_bird(res, node, &opts).unwrap();
    Bird::start(node, &text)
}

#[test]
fn mesh_of_three_birds_with_a_mesh_password() {
    let mut res = cluster(&[
        ("n1", "127.0.0.11", 1791, None),
        ("n2", "127.0.0.12", 1792, None),
        ("n3", "127.0.0.13", 1793, None),
    ]);
    res.bgp_configurations.push(BGPConfiguration::new(
        "default",
        BGPConfigurationSpec {
            node_mesh_password: Some(BGPPassword {
                secret_key_ref: Some(SecretKeyRef {
                    name: "bgp".into(),
                    key: "mesh".into(),
                    optional: None,
                }),
            }),
            ..BGPConfigurationSpec::default()
        },
    ));
    res.secrets
        .entry("bgp".into())
        .or_default()
        .insert("mesh".into(), "mesh-s3cret".into());
    in_netns(move || {
        let birds: Vec<Bird> = ["n1", "n2", "n3"].iter().map(|n| start(&res, n)).collect();
        let all = ["198.18.0.0/26", "198.18.1.0/26", "198.18.2.0/26"];
        for b in &birds {
            b.converges(2, &all);
        }
    });
}

#[test]
fn route_reflector_passes_blocks_between_clients() {
    let mut res = cluster(&[
        ("n1", "127.0.0.11", 1794, None),
        ("n2", "127.0.0.12", 1795, None),
        ("rr1", "127.0.0.21", 1796, Some("127.0.0.200")),
    ]);
    res.bgp_configurations.push(BGPConfiguration::new(
        "default",
        BGPConfigurationSpec {
            node_to_node_mesh_enabled: Some(false),
            ..BGPConfigurationSpec::default()
        },
    ));
    res.bgp_peers.push(BGPPeer::new(
        "peer-with-rrs",
        BGPPeerSpec {
            node_selector: Some("!has(route-reflector)".into()),
            peer_selector: Some("has(route-reflector)".into()),
            ..BGPPeerSpec::default()
        },
    ));
    in_netns(move || {
        let n1 = start(&res, "n1");
        let n2 = start(&res, "n2");
        let rr1 = start(&res, "rr1");
        let all = ["198.18.0.0/26", "198.18.1.0/26", "198.18.2.0/26"];
        // Clients have one session (to the RR) yet learn each other's block.
        n1.converges(1, &all);
        n2.converges(1, &all);
        rr1.converges(2, &all);
    });
}
