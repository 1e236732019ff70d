//! Which interfaces count as the underlay for the MTU calculation (Calico's `mtuIfacePattern`),
//! and the MTU file the CNI plugin reads.
//!
//! The pattern is a regular expression in Calico. felix needs only the small subset that such
//! patterns use (`^ $ ( ) | [..] . * + ?` and `\` escapes), so it carries a tiny backtracking
//! matcher rather than a regex engine.

use std::path::Path;

/// Calico's default `mtuIfacePattern`.
pub const DEFAULT_MTU_IFACE_PATTERN: &str = r"^((en|wl|ww|sl|ib)[Popsx].*|(eth|wlan|wwan).*)";

/// Where the CNI plugin reads the pod MTU from (Calico: `/var/lib/calico/mtu`).
pub const DEFAULT_MTU_FILE: &str = "/var/lib/tabby/mtu";

/// A compiled interface-name pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    alts: Vec<Vec<Item>>,
}

#[derive(Clone, Debug)]
enum Node {
    Char(char),
    Any,
    Class(bool, Vec<(char, char)>),
    Group(Vec<Vec<Item>>),
    Start,
    End,
}

#[derive(Clone, Debug)]
struct Item {
    node: Node,
    min: usize,
    max: Option<usize>,
}

impl Pattern {
    pub fn new(src: &str) -> Result<Pattern, String> {
        let chars: Vec<char> = src.chars().collect();
        let mut pos = 0;
        let alts = parse_alt(&chars, &mut pos)?;
        if pos != chars.len() {
            return Err(format!(
                "pattern {src:?}: unexpected {:?} at {pos}",
                chars[pos]
            ));
        }
        Ok(Pattern { alts })
    }

    /// Unanchored search, like Go's `regexp.MatchString`.
    pub fn is_match(&self, text: &str) -> bool {
        let t: Vec<char> = text.chars().collect();
        (0..=t.len()).any(|s| alt(&self.alts, &t, s, &|_| true))
    }
}

fn parse_alt(c: &[char], pos: &mut usize) -> Result<Vec<Vec<Item>>, String> {
    let mut alts = vec![parse_seq(c, pos)?];
    while c.get(*pos) == Some(&'|') {
        *pos += 1;
        alts.push(parse_seq(c, pos)?);
    }
    Ok(alts)
}

fn parse_seq(c: &[char], pos: &mut usize) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    while let Some(&ch) = c.get(*pos) {
        let node = match ch {
            '|' | ')' => break,
            '(' => {
                *pos += 1;
                let g = parse_alt(c, pos)?;
                if c.get(*pos) != Some(&')') {
                    return Err("pattern: unclosed group".into());
                }
                Node::Group(g)
            }
            '[' => {
                *pos += 1;
                let neg = c.get(*pos) == Some(&'^');
                if neg {
                    *pos += 1;
                }
                let mut ranges = Vec::new();
                while let Some(&x) = c.get(*pos) {
                    if x == ']' && !ranges.is_empty() {
                        break;
                    }
                    if c.get(*pos + 1) == Some(&'-') && c.get(*pos + 2).is_some_and(|&y| y != ']') {
                        ranges.push((x, c[*pos + 2]));
                        *pos += 3;
                    } else {
                        ranges.push((x, x));
                        *pos += 1;
                    }
                }
                if c.get(*pos) != Some(&']') {
                    return Err("pattern: unclosed class".into());
                }
                Node::Class(neg, ranges)
            }
            '.' => Node::Any,
            '^' => Node::Start,
            '$' => Node::End,
            '\\' => {
                *pos += 1;
                match c.get(*pos) {
                    Some('d') => Node::Class(false, vec![('0', '9')]),
                    Some(&e) => Node::Char(e),
                    None => return Err("pattern: trailing backslash".into()),
                }
            }
            other => Node::Char(other),
        };
        *pos += 1;
        let (min, max) = match c.get(*pos) {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            _ => (1, Some(1)),
        };
        if !(min == 1 && max == Some(1)) {
            *pos += 1;
        }
        items.push(Item { node, min, max });
    }
    Ok(items)
}

fn alt(alts: &[Vec<Item>], t: &[char], p: usize, k: &dyn Fn(usize) -> bool) -> bool {
    alts.iter().any(|s| seq(s, t, p, k))
}

fn seq(items: &[Item], t: &[char], p: usize, k: &dyn Fn(usize) -> bool) -> bool {
    match items.split_first() {
        None => k(p),
        Some((it, rest)) => rep(it, 0, t, p, &|q| seq(rest, t, q, k)),
    }
}

fn rep(it: &Item, count: usize, t: &[char], p: usize, k: &dyn Fn(usize) -> bool) -> bool {
    let may_more = it.max.is_none_or(|m| count < m);
    (may_more
        && one(&it.node, t, p, &|q| {
            (q > p || count < it.min) && rep(it, count + 1, t, q, k)
        }))
        || (count >= it.min && k(p))
}

fn one(n: &Node, t: &[char], p: usize, k: &dyn Fn(usize) -> bool) -> bool {
    match n {
        Node::Char(c) => t.get(p) == Some(c) && k(p + 1),
        Node::Any => p < t.len() && k(p + 1),
        Node::Class(neg, ranges) => {
            t.get(p)
                .is_some_and(|ch| ranges.iter().any(|&(lo, hi)| lo <= *ch && *ch <= hi) != *neg)
                && k(p + 1)
        }
        Node::Group(g) => alt(g, t, p, k),
        Node::Start => p == 0 && k(p),
        Node::End => p == t.len() && k(p),
    }
}

/// Writes the pod MTU for the CNI plugin, only when it changed (atomically: temp file + rename).
pub fn write_mtu_file(path: &Path, mtu: u32) -> std::io::Result<bool> {
    let content = format!("{mtu}\n");
    if std::fs::read_to_string(path).ok().as_deref() == Some(content.as_str()) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pattern_matches_calico_underlays() {
        let p = Pattern::new(DEFAULT_MTU_IFACE_PATTERN).unwrap();
        for yes in [
            "eth0", "eth1", "ens3", "enp0s3", "wlan0", "wlp2s0", "ibp2s0",
        ] {
            assert!(p.is_match(yes), "{yes}");
        }
        for no in [
            "lo",
            "cali123",
            "tunl0",
            "vxlan.calico",
            "docker0",
            "en",
            "br0",
        ] {
            assert!(!p.is_match(no), "{no}");
        }
    }

    #[test]
    fn custom_patterns() {
        let p = Pattern::new("^(uplink|bond)[0-9]+$").unwrap();
        assert!(p.is_match("uplink12"));
        assert!(!p.is_match("uplink"));
        assert!(!p.is_match("xuplink1"));
        let p = Pattern::new(r"eth\d?").unwrap();
        assert!(p.is_match("myeth"));
        let p = Pattern::new("^[^c].*").unwrap();
        assert!(p.is_match("eth0") && !p.is_match("cali1"));
        assert!(Pattern::new("(eth").is_err());
    }

    #[test]
    fn mtu_file_written_once() {
        let dir = std::env::temp_dir().join(format!("tabby-mtu-{}", std::process::id()));
        let f = dir.join("sub/mtu");
        assert!(write_mtu_file(&f, 1450).unwrap());
        assert!(!write_mtu_file(&f, 1450).unwrap());
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "1450\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
