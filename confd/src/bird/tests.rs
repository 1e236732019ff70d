use std::process::Command;

use super::*;
use crate::testutil::*;

/// Runs `bird -p` (parse the configuration and exit) on `text`; panics with BIRD's message.
fn bird_parses(name: &str, text: &str) {
    let dir = std::env::temp_dir().join(format!("tabby-confd-bird-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.conf"));
    std::fs::write(&file, text).unwrap();
    let out = Command::new("bird")
        .arg("-p")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("running `bird -p` (Debian package bird2): {e}"));
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir(&dir);
    assert!(
        out.status.success(),
        "bird -p rejects the {name} config: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_topology_renders_a_config_bird_accepts() {
    for (name, res, node) in topologies() {
        let text = render_bird(&res, node, &BirdOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        bird_parses(name, &text);
        insta::assert_snapshot!(name, text);
    }
}

#[test]
fn kernel_export_can_be_off() {
    let opts = BirdOptions {
        kernel_export: false,
    };
    let text = render_bird(&three_nodes(), "n1", &opts).unwrap();
    assert!(text.contains("    export none;\n"), "{text}");
    assert!(
        !text.contains("export filter tabby_kernel_export"),
        "{text}"
    );
    bird_parses("kernel_export_off", &text);
}

#[test]
fn bird_and_speaker_agree_on_every_peer() {
    for (name, res, node) in topologies() {
        let config = crate::render(&res, node).unwrap();
        let text = render_bird(&res, node, &BirdOptions::default()).unwrap();
        let neighbors = text.matches("\n  neighbor ").count();
        assert_eq!(neighbors, config.peers.len(), "{name}");
        for p in &config.peers {
            assert!(
                text.contains(&format!(
                    "  neighbor {} port {} as {};",
                    p.address, p.port, p.asn
                )),
                "{name}: {p:?}"
            );
        }
        for n in &config.originate {
            assert!(
                text.contains(&format!("  route {n} blackhole;")),
                "{name}: {n}"
            );
        }
    }
}

#[test]
fn a_password_bird_cannot_quote_is_an_error() {
    let mut res = three_nodes();
    res.bgp_peers.push(peer(
        "tor",
        api::BGPPeerSpec {
            peer_ip: Some("192.0.2.1".into()),
            as_number: Some(65001),
            password: password("pw", "tor"),
            ..api::BGPPeerSpec::default()
        },
    ));
    secret(&mut res, "pw", "tor", "a\"b");
    let err = render_bird(&res, "n1", &BirdOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "rendering BGP config for node n1: password: \"(hidden)\" is not valid: contains a double \
         quote or a line break, which a BIRD string cannot hold"
    );
}
