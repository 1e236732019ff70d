//! Watches on a directory datastore: a task per watch that follows the change log.
//!
//! ```text
//!   log file ──poll every poll_interval──▶ watch task ──mpsc(256)──▶ Watch
//!        ▲ rename on compaction: finish the old file, reopen, TooOld if history is gone
//! ```
//!
//! The task takes no lock: writers publish a record with one `pwrite` of a checksummed frame,
//! so the task either reads a whole record or stops at an incomplete one and looks again at the
//! next poll. Only a damaged record with data after it, which no crash leaves, makes it take the
//! shared lock (so no writer is mid-`pwrite`) and look again before reporting corruption.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use api::{Kind, Resource};
use tokio::sync::mpsc;

use super::log::{LogReader, Op, Record, Tail, check_not_compacted};
use super::paths;
use crate::{Error, Revision, Watch, WatchEvent};

/// Starts a watch on the log `reader` has open; `start`, when given, is an offset in it before
/// which every record is at or below `after`.
pub(crate) fn start(
    root: PathBuf,
    mut reader: LogReader,
    start: Option<u64>,
    poll: Duration,
    kind: Option<Kind>,
    after: Revision,
) -> Result<Watch, Error> {
    let log_path = paths::log(&root);
    check_not_compacted(after.0, reader.base)?;
    if let Some(offset) = start {
        reader.offset = offset;
    }
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut follower = Follower {
            root,
            log_path,
            reader,
            cursor: after.0,
            kind,
        };
        if let Err(e) = follower.run(&tx, poll).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    Ok(Watch::from_channel(rx))
}

struct Follower {
    root: PathBuf,
    log_path: PathBuf,
    reader: LogReader,
    /// The revision of the last record delivered (or skipped by the kind filter).
    cursor: u64,
    kind: Option<Kind>,
}

type Sender = mpsc::Sender<Result<WatchEvent, Error>>;

impl Follower {
    /// Delivers records until the receiver goes away (`Ok`) or something breaks (`Err`).
    async fn run(&mut self, tx: &Sender, poll: Duration) -> Result<(), Error> {
        loop {
            // Look for a replacement before reading: whatever the old file holds then is final.
            let replaced = self.reader.replaced(&self.log_path)?;
            loop {
                let (events, tail) = self.read_batch()?;
                for event in events {
                    if tx.send(Ok(event)).await.is_err() {
                        return Ok(());
                    }
                }
                match tail {
                    Tail::More => continue,
                    Tail::Clean | Tail::Torn { .. } => break,
                    Tail::Corrupt { at } => {
                        if !self.recheck_locked()? {
                            return Err(Error::Corrupt {
                                what: format!("watching {}", self.log_path.display()),
                                reason: format!(
                                    "unreadable record at offset {at} followed by more data"
                                ),
                            });
                        }
                    }
                }
            }
            if replaced {
                self.reader = LogReader::open(&self.log_path)?;
                check_not_compacted(self.cursor, self.reader.base)?;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = tx.closed() => return Ok(()),
            }
        }
    }

    /// Reads the next complete records and decodes those the watch wants.
    fn read_batch(&mut self) -> Result<(Vec<WatchEvent>, Tail), Error> {
        let mut events = Vec::new();
        let Follower {
            reader,
            cursor,
            kind,
            log_path,
            ..
        } = self;
        let tail = reader.read_new(*cursor, |_, record| {
            *cursor = record.revision;
            if kind.is_none_or(|k| k == record.key.kind) {
                events.push(event(record, log_path)?);
            }
            Ok(())
        })?;
        Ok((events, tail))
    }

    /// Looks at the log again under the shared lock, when no writer can be mid-`pwrite`.
    /// Returns whether the damage was only a write in progress.
    fn recheck_locked(&mut self) -> Result<bool, Error> {
        let state_path = paths::state(&self.root);
        let state = File::open(&state_path).map_err(|source| Error::Io {
            what: format!("opening {} to recheck the log", state_path.display()),
            source,
        })?;
        state.lock_shared().map_err(|source| Error::Io {
            what: format!("taking the shared lock on {}", state_path.display()),
            source,
        })?;
        let mut probe = LogReader::open(&self.log_path)?;
        probe.offset = self.reader.offset;
        let still_corrupt = if probe.id == self.reader.id {
            matches!(
                probe.read_new(u64::MAX, |_, _| Ok(()))?,
                Tail::Corrupt { .. }
            )
        } else {
            false
        };
        drop(state);
        Ok(!still_corrupt)
    }
}

fn event(record: Record, log_path: &Path) -> Result<WatchEvent, Error> {
    let resource: Resource = serde_json::from_slice(&record.json).map_err(|e| Error::Corrupt {
        what: format!(
            "decoding {} at revision {} in {}",
            record.key,
            record.revision,
            log_path.display()
        ),
        reason: e.to_string(),
    })?;
    let revision = Revision(record.revision);
    Ok(match record.op {
        Op::Added => WatchEvent::Added { revision, resource },
        Op::Modified => WatchEvent::Modified { revision, resource },
        Op::Deleted => WatchEvent::Deleted { revision, resource },
    })
}
