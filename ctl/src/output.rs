//! Printing resources: calicoctl's tables, YAML and JSON.

use std::io::Write;

use api::{Kind, Resource};

use crate::cli::Output;
use crate::error::CtlError;

/// Prints resources in the requested form. `single` is set when one resource was asked for by
/// name: YAML and JSON then print the object itself rather than a list, as calicoctl does.
pub fn print_resources(
    out: &mut dyn Write,
    kind: Kind,
    items: &[Resource],
    output: Output,
    single: bool,
    revision: Option<String>,
) -> Result<(), CtlError> {
    let text = match output {
        Output::Ps | Output::Wide => table(kind, items, output == Output::Wide),
        Output::Json => {
            let value = document(kind, items, single, revision);
            serde_json::to_string_pretty(&value).expect("JSON values serialize") + "\n"
        }
        Output::Yaml => {
            let value = document(kind, items, single, revision);
            serde_saphyr::to_string(&value).map_err(|e| CtlError::Write {
                what: format!("{kind} as YAML"),
                source: std::io::Error::other(e.to_string()),
            })?
        }
    };
    out.write_all(text.as_bytes())
        .map_err(|source| CtlError::Write {
            what: "standard output".into(),
            source,
        })
}

fn document(
    kind: Kind,
    items: &[Resource],
    single: bool,
    revision: Option<String>,
) -> serde_json::Value {
    if single && items.len() == 1 {
        return serde_json::to_value(&items[0]).expect("resources serialize");
    }
    let mut metadata = serde_json::Map::new();
    if let Some(rev) = revision {
        metadata.insert("resourceVersion".into(), rev.into());
    }
    serde_json::json!({
        "apiVersion": api::API_VERSION,
        "kind": format!("{}List", kind.as_str()),
        "metadata": metadata,
        "items": items,
    })
}

/// A table with calicoctl's columns for the kind.
pub fn table(kind: Kind, items: &[Resource], wide: bool) -> String {
    let (header, rows): (Vec<&str>, Vec<Vec<String>>) = match kind {
        Kind::IPPool => {
            let header = if wide {
                vec![
                    "NAME",
                    "CIDR",
                    "NAT",
                    "IPIPMODE",
                    "VXLANMODE",
                    "DISABLED",
                    "DISABLEBGPEXPORT",
                    "SELECTOR",
                ]
            } else {
                vec!["NAME", "CIDR", "SELECTOR"]
            };
            let rows = items
                .iter()
                .filter_map(|r| match r {
                    Resource::IPPool(p) => Some(p),
                    _ => None,
                })
                .map(|p| {
                    let s = &p.spec;
                    let cidr = s.cidr.map(|c| c.to_string()).unwrap_or_default();
                    if wide {
                        vec![
                            p.metadata.name.clone(),
                            cidr,
                            s.nat_outgoing.to_string(),
                            s.ipip_mode().as_str().to_string(),
                            s.vxlan_mode().as_str().to_string(),
                            s.disabled.to_string(),
                            s.disable_bgp_export.to_string(),
                            s.node_selector().to_string(),
                        ]
                    } else {
                        vec![p.metadata.name.clone(), cidr, s.node_selector().to_string()]
                    }
                })
                .collect();
            (header, rows)
        }
        Kind::Node => {
            let header = if wide {
                vec!["NAME", "ASN", "IPV4", "IPV6"]
            } else {
                vec!["NAME"]
            };
            let rows = items
                .iter()
                .filter_map(|r| match r {
                    Resource::Node(n) => Some(n),
                    _ => None,
                })
                .map(|n| {
                    let bgp = n.spec.bgp.clone().unwrap_or_default();
                    if wide {
                        vec![
                            n.metadata.name.clone(),
                            bgp.as_number
                                .map(|a| a.to_string())
                                .unwrap_or_else(|| "(64512)".into()),
                            bgp.ipv4_address.unwrap_or_default(),
                            bgp.ipv6_address.unwrap_or_default(),
                        ]
                    } else {
                        vec![n.metadata.name.clone()]
                    }
                })
                .collect();
            (header, rows)
        }
        Kind::BGPPeer => {
            let header = if wide {
                vec!["NAME", "PEERIP", "NODE", "ASN", "PEERSELECTOR"]
            } else {
                vec!["NAME", "PEERIP", "NODE", "ASN"]
            };
            let rows = items
                .iter()
                .filter_map(|r| match r {
                    Resource::BGPPeer(p) => Some(p),
                    _ => None,
                })
                .map(|p| {
                    let s = &p.spec;
                    let node = match (&s.node, &s.node_selector) {
                        (Some(n), _) if !n.is_empty() => n.clone(),
                        (_, Some(sel)) if !sel.is_empty() => sel.clone(),
                        _ => "(global)".into(),
                    };
                    let mut row = vec![
                        p.metadata.name.clone(),
                        s.peer_ip.clone().unwrap_or_default(),
                        node,
                        s.as_number.map(|a| a.to_string()).unwrap_or_default(),
                    ];
                    if wide {
                        row.push(s.peer_selector.clone().unwrap_or_default());
                    }
                    row
                })
                .collect();
            (header, rows)
        }
        Kind::BGPConfiguration => {
            let header = vec!["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"];
            let rows = items
                .iter()
                .filter_map(|r| match r {
                    Resource::BGPConfiguration(c) => Some(c),
                    _ => None,
                })
                .map(|c| {
                    let s = &c.spec;
                    vec![
                        c.metadata.name.clone(),
                        s.log_severity_screen
                            .clone()
                            .unwrap_or_else(|| "Info".into()),
                        s.node_to_node_mesh_enabled().to_string(),
                        s.as_number
                            .map(|a| a.to_string())
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            (header, rows)
        }
        Kind::WorkloadEndpoint => {
            let header = vec!["NAMESPACE", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE"];
            let rows = items
                .iter()
                .filter_map(|r| match r {
                    Resource::WorkloadEndpoint(w) => Some(w),
                    _ => None,
                })
                .map(|w| {
                    let s = &w.spec;
                    vec![
                        w.metadata.namespace.clone().unwrap_or_default(),
                        s.pod
                            .clone()
                            .or_else(|| s.workload.clone())
                            .unwrap_or_default(),
                        s.node.clone().unwrap_or_default(),
                        s.ip_networks.join(","),
                        s.interface_name.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            (header, rows)
        }
        Kind::IPAMConfig => {
            let header = vec!["NAME", "STRICTAFFINITY", "MAXBLOCKSPERHOST"];
            let rows = items
                .iter()
                .filter_map(|r| match r {
                    Resource::IPAMConfig(c) => Some(c),
                    _ => None,
                })
                .map(|c| {
                    vec![
                        c.metadata.name.clone(),
                        c.spec.strict_affinity.to_string(),
                        c.spec.max_blocks_per_host().to_string(),
                    ]
                })
                .collect();
            (header, rows)
        }
        _ => (
            vec!["NAME"],
            items.iter().map(|r| vec![r.name().to_string()]).collect(),
        ),
    };
    render_table(&header, &rows)
}

/// Left-aligned columns separated by three spaces, like calicoctl's tabwriter output.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut text = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 < widths.len() {
                l.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            } else {
                l.push_str(cell);
            }
        }
        text.push_str(l.trim_end());
        text.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    text
}
