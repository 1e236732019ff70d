//! Acting on a `CheckReport`: each item re-verified against the datastore before any write.

use super::store::backoff;
use super::*;

impl Ipam {
    pub(super) async fn repair_leak(
        &self,
        leak: &check::LeakedAddress,
        sum: &mut RepairSummary,
    ) -> Result<(), IpamError> {
        let what = format!("releasing leaked address {}", leak.ip);
        for attempt in 0..self.max_retries {
            let Some(stored) = self.read_block(leak.block).await? else {
                sum.skipped
                    .push(format!("{}: block {} is gone", leak.ip, leak.block));
                return Ok(());
            };
            let holder = stored
                .block
                .attribute_of(leak.ip)
                .map(|a| a.handle_id.clone());
            if holder.as_ref() != Some(&leak.handle) {
                sum.skipped.push(format!(
                    "{}: no longer held by handle {}",
                    leak.ip,
                    leak.handle.as_deref().unwrap_or("<none>")
                ));
                return Ok(());
            }
            if let Some(h) = &leak.handle
                && self.get_handle(h).await?.is_some()
            {
                sum.skipped
                    .push(format!("{}: handle {h} exists again", leak.ip));
                return Ok(());
            }
            let mut block = stored.block.clone();
            block.release(&[leak.ip]);
            let written = if block.is_empty() && block.spec().affinity.is_none() {
                self.delete_block(&stored, &what).await?
            } else {
                self.write_block(&stored.meta, block, &what).await?
            };
            if written {
                sum.released_addresses.push(leak.ip);
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(IpamError::Conflict {
            what,
            retries: self.max_retries,
        })
    }

    /// Sets a handle's counts to what the blocks hold now, deleting it when they hold nothing;
    /// only if its revision is still `reported`.
    pub(super) async fn repair_handle(
        &self,
        handle: &str,
        reported: Option<&str>,
        sum: &mut RepairSummary,
    ) -> Result<(), IpamError> {
        let what = format!("repairing handle {handle}");
        let Some(current) = self.get_handle(handle).await? else {
            sum.skipped.push(format!("handle {handle}: already gone"));
            return Ok(());
        };
        if current.metadata.resource_version.as_deref() != reported {
            sum.skipped
                .push(format!("handle {handle}: changed since the report"));
            return Ok(());
        }
        let mut actual: BTreeMap<String, u32> = BTreeMap::new();
        for sb in self.list_blocks().await? {
            let n = sb.block.ips_by_handle(handle).len() as u32;
            if n > 0 {
                actual.insert(sb.block.cidr().to_string(), n);
            }
        }
        let rev = Revision::of(&Resource::IPAMHandle(current.clone()))
            .map_err(|e| IpamError::datastore(what.clone(), e))?;
        let outcome = if actual.is_empty() {
            self.ds
                .delete(&Key::new(Kind::IPAMHandle, handle), rev)
                .await
                .map(|_| true)
        } else {
            let mut next = current.clone();
            next.spec.block = actual;
            self.ds.update(next.into()).await.map(|_| false)
        };
        match outcome {
            Ok(true) => sum.deleted_handles.push(handle.to_string()),
            Ok(false) => sum.corrected_handles.push(handle.to_string()),
            Err(DsError::Conflict { .. } | DsError::NotFound(_)) => sum
                .skipped
                .push(format!("handle {handle}: changed while repairing")),
            Err(e) => return Err(IpamError::datastore(what, e)),
        }
        Ok(())
    }
}
