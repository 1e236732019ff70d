//! Replay tests for the calculation: a recorded sequence of input events, and after each
//! `expect` the whole desired state felix must compute, in [`felix::Desired::render`] form.
//!
//! File format (`tests/replay/*.replay`), one item per line:
//! `local NODE UNDERLAY` once at the top; then inputs: `pool|node|affinity|wep NAME JSON`
//! (Calico v3 spec YAML shapes, as JSON), `remove pool|node|affinity|wep NAME`,
//! `config JSON`, `bgp PREFIX [NEXTHOP...]`, `mtu IFACE N|gone`; then `expect` followed by the
//! rendered state and `end`. `TABBY_BLESS=1` rewrites the expectations from the current code.

use std::path::Path;

use felix::{Calculator, Input, LocalNode};

fn input(line: &str) -> Input {
    felix::script::parse_line(line).unwrap_or_else(|e| panic!("{e}"))
}

fn replay(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let bless = std::env::var_os("TABBY_BLESS").is_some();
    let mut out = String::new();
    let mut calc: Option<Calculator> = None;
    let mut lines = text.lines();
    let mut failures = Vec::new();
    while let Some(line) = lines.next() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if let Some(rest) = l.strip_prefix("local ") {
            let mut it = rest.split_whitespace();
            calc = Some(Calculator::new(LocalNode {
                name: it.next().unwrap().into(),
                underlay_dev: it.next().unwrap().into(),
            }));
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let c = calc.as_mut().expect("`local` first");
        if l == "expect" {
            let mut want = String::new();
            for e in lines.by_ref() {
                if e.trim() == "end" {
                    break;
                }
                want.push_str(e.trim());
                want.push('\n');
            }
            let got = c.desired().render();
            if got != want {
                failures.push(format!(
                    "{}: after line {l:?}\n--- want\n{want}--- got\n{got}",
                    path.display()
                ));
            }
            out.push_str("expect\n");
            out.push_str(&got);
            out.push_str("end\n");
            continue;
        }
        c.apply(input(l));
        out.push_str(line);
        out.push('\n');
    }
    if bless {
        std::fs::write(path, out).unwrap();
    } else {
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

#[test]
fn replay_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "replay") {
            replay(&p);
            n += 1;
        }
    }
    assert!(n >= 2, "replay files found: {n}");
}
