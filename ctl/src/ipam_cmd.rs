//! `tabbyctl ipam show | check | release`.

use std::io::Write;
use std::sync::Arc;

use datastore::Datastore;
use ipam::{CheckReport, Ipam};

use crate::cli::IpamCommand;
use crate::error::CtlError;
use crate::output::render_table;

fn ipam_err(action: impl Into<String>) -> impl FnOnce(ipam::IpamError) -> CtlError {
    let action = action.into();
    move |source| CtlError::Ipam { action, source }
}

fn emit(out: &mut dyn Write, text: &str) -> Result<(), CtlError> {
    out.write_all(text.as_bytes())
        .map_err(|source| CtlError::Write {
            what: "standard output".into(),
            source,
        })
}

/// `n (p%)` as calicoctl prints usage.
fn with_percent(n: u128, total: u128) -> String {
    let pct = (n * 100).checked_div(total).unwrap_or(0);
    format!("{n} ({pct}%)")
}

pub async fn run(
    ds: Arc<dyn Datastore>,
    cmd: IpamCommand,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let ipam = Ipam::new(ds);
    match cmd {
        IpamCommand::Show { show_blocks } => {
            let usage = ipam.usage().await.map_err(ipam_err("reading IPAM usage"))?;
            let mut rows = Vec::new();
            for pool in &usage.pools {
                rows.push(vec![
                    "IP Pool".to_string(),
                    pool.cidr.to_string(),
                    pool.total.to_string(),
                    with_percent(pool.in_use, pool.total),
                    with_percent(pool.free, pool.total),
                    String::new(),
                ]);
                if show_blocks {
                    for b in &pool.blocks {
                        rows.push(block_row(b));
                    }
                }
            }
            if show_blocks {
                for b in &usage.blocks_outside_pools {
                    let mut row = block_row(b);
                    row[0] = "Block (no pool)".into();
                    rows.push(row);
                }
            }
            let header = [
                "GROUPING",
                "CIDR",
                "IPS TOTAL",
                "IPS IN USE",
                "IPS FREE",
                "NODE",
            ];
            emit(out, &render_table(&header, &rows))
        }
        IpamCommand::Check { output } => {
            let report = ipam.check().await.map_err(ipam_err("checking IPAM"))?;
            emit(out, &describe_report(&report))?;
            if let Some(path) = output {
                let json = serde_json::to_string_pretty(&report).expect("reports serialize");
                std::fs::write(&path, json + "\n").map_err(|source| CtlError::Write {
                    what: path.display().to_string(),
                    source,
                })?;
                emit(out, &format!("Report written to {}\n", path.display()))?;
            }
            Ok(())
        }
        IpamCommand::Release { ip: Some(ip), .. } => {
            let missing = ipam
                .release_ips(&[ip])
                .await
                .map_err(ipam_err(format!("releasing {ip}")))?;
            if missing.contains(&ip) {
                return Err(CtlError::Usage(format!(
                    "releasing {ip}: the address is not allocated"
                )));
            }
            emit(out, &format!("Successfully released IP address {ip}\n"))
        }
        IpamCommand::Release {
            from_report: Some(path),
            ..
        } => {
            let text = std::fs::read_to_string(&path).map_err(|source| CtlError::Read {
                path: path.clone(),
                source,
            })?;
            let report: CheckReport = serde_json::from_str(&text).map_err(|e| {
                CtlError::Usage(format!("{}: not an ipam check report: {e}", path.display()))
            })?;
            let summary = ipam
                .release_from_report(&report)
                .await
                .map_err(ipam_err(format!(
                    "releasing what {} reports",
                    path.display()
                )))?;
            let mut text = format!(
                "Released {} address(es), deleted {} handle(s), corrected {} handle(s), released {} block(s), resolved {} affinity(ies)\n",
                summary.released_addresses.len(),
                summary.deleted_handles.len(),
                summary.corrected_handles.len(),
                summary.released_blocks.len(),
                summary.resolved_affinities.len(),
            );
            for skipped in &summary.skipped {
                text.push_str(&format!("Skipped: {skipped}\n"));
            }
            emit(out, &text)
        }
        IpamCommand::Release { .. } => Err(CtlError::Usage(
            "ipam release needs --ip IP or --from-report FILE".into(),
        )),
    }
}

fn block_row(b: &ipam::BlockUsage) -> Vec<String> {
    let total = b.total as u128;
    vec![
        "Block".to_string(),
        b.cidr.to_string(),
        b.total.to_string(),
        with_percent(b.in_use as u128, total),
        with_percent(b.free as u128, total),
        b.node.clone().unwrap_or_else(|| "(none)".into()),
    ]
}

/// A human summary of a check report: one line per finding, then a verdict.
pub fn describe_report(report: &CheckReport) -> String {
    let s = &report.summary;
    let mut text = format!(
        "Checked {} block(s), {} affinity(ies), {} handle(s); {} address(es) in use\n",
        s.blocks, s.affinities, s.handles, s.addresses_in_use
    );
    for leak in &report.leaked_addresses {
        text.push_str(&format!(
            "Leaked address {} in block {}: handle {} does not exist\n",
            leak.ip,
            leak.block,
            leak.handle.as_deref().unwrap_or("(none)")
        ));
    }
    for h in &report.handles_without_addresses {
        text.push_str(&format!("Handle {} holds no address\n", h.handle));
    }
    for h in &report.handle_mismatches {
        text.push_str(&format!(
            "Handle {} records {:?} but blocks hold {:?}\n",
            h.handle, h.recorded, h.actual
        ));
    }
    for b in &report.blocks_of_missing_nodes {
        text.push_str(&format!(
            "Block {} is affine to node {} which no longer exists ({} address(es) in use)\n",
            b.block, b.node, b.in_use
        ));
    }
    for a in &report.pending_affinities {
        text.push_str(&format!(
            "Affinity {} of node {} is stuck in state {:?}\n",
            a.name, a.node, a.state
        ));
    }
    for c in &report.corrupt_blocks {
        text.push_str(&format!("Block {} is corrupt: {}\n", c.name, c.reason));
    }
    if report.is_clean() {
        text.push_str("IPAM is consistent: no problems found\n");
    } else {
        text.push_str("Problems found: run `tabbyctl ipam check -o report.json` then `tabbyctl ipam release --from-report report.json`\n");
    }
    text
}
