//! The local-directory datastore: tabby's embedded default, shared safely by every process on
//! one host (tabby-node, the CNI plugin exec'd per pod, tabbyctl).
//!
//! # Layout
//!
//! ```text
//! <root>/state                          lock file + how far objects have caught up (state.rs)
//! <root>/log                            the change log: header + framed records (log.rs)
//! <root>/objects/<plural>/<name>.json   current state of each resource, resourceVersion set
//! <root>/objects/workloadendpoints/<namespace>/<name>.json
//! <root>/tmp/                           write-then-rename scratch
//! ```
//!
//! # Concurrency
//!
//! Every operation takes an `flock` on `state`: shared for get/list, exclusive for
//! create/update/delete/compact. Within one process a mutex serialises the handle's own
//! operations first, so one lock is held per process at a time. Watches take no lock: they poll
//! the log for growth every [`DirOptions::poll_interval`] and read only complete, checksummed
//! records, which a writer publishes with a single `pwrite`.
//!
//! # Writes, and why a `kill -9` at any instant is safe
//!
//! Under the exclusive lock a writer
//! 1. catches up with the log (below) and truncates a torn record left at its end by a writer
//!    that died mid-`pwrite`;
//! 2. replays onto the object files every record past the revision `state` says was applied
//!    (a writer that died between steps 4 and 6);
//! 3. checks the compare-and-swap against the current object;
//! 4. appends one record `len | crc32 | revision | op | key | JSON` to the log — **this is the
//!    commit point**: a complete record is a committed write, watchers deliver it;
//! 5. writes the object file to `tmp/` and renames it into place (or unlinks it for a delete);
//! 6. stores the record's revision as applied in `state`.
//!
//! A death before 4 completes leaves nothing or a torn record (ignored by readers, truncated by
//! the next writer): the write did not happen. A death after 4 leaves a committed record that
//! step 2 of the next writer (or of a reader, which upgrades to the exclusive lock for it)
//! applies; replay is idempotent because each record carries the resource's whole new state.
//! Object files are only ever replaced by `rename`, so no reader sees half an object. The one
//! revision counter is the last record's revision (or the log's compaction point when it holds no
//! record), so it only grows.
//!
//! # Reads, and why they do not rescan
//!
//! Each handle caches the objects it has read (and the absence of those it looked for) together
//! with the log offset it has read up to. Under the lock it first reads the records appended
//! since, which carry each changed key and its new JSON, and updates its cache from them; so a
//! get or a CAS check costs one short log read, and a list of a kind reads that kind's directory
//! only the first time. Resources are parsed from JSON only when asked for.
//!
//! # Compaction
//!
//! [`DirDatastore::compact`] drops the history at or below a revision: it writes a new log
//! holding only later records and renames it over the old one. A write that leaves the log longer
//! than [`DirOptions::log_limit`] compacts automatically, keeping the newest quarter of the limit.
//! Watches notice the rename, finish the old file (which they still hold open) and continue in
//! the new one, or end with [`Error::TooOld`] when what they still needed was dropped.
//!
//! # fsync
//!
//! By default nothing is fsynced. A write reaches the kernel's page cache before it is
//! acknowledged, which is all that surviving the death of any process needs — and the IPAM
//! plugin makes about three writes per pod, which at several milliseconds per `fdatasync` on
//! ordinary disks would cost more than everything else in pod start-up. A power loss may lose
//! the last seconds of writes: those belonged to pods that died with the node and are set up
//! again after boot. It must not leave the store unreadable or inconsistent, so after a reboot
//! (the boot id in `state` differs) the first writer reconciles the whole log against the object
//! files, newest revision winning per key, and moves the revision past every object found.
//! [`DirOptions::fsync`] makes every write `fdatasync` the log before it is acknowledged (and
//! compaction sync its new log before the rename), for operators who need acknowledged writes to
//! survive a power loss and accept the cost.

mod log;
mod paths;
mod state;
mod watch;

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use api::{Key, Kind, Resource};
use async_trait::async_trait;

use crate::{Datastore, Error, Listing, Revision, Watch};
use log::{HEADER_LEN, LogReader, Op, Record, Tail};
use state::Applied;

/// How a [`DirDatastore`] trades durability and history against speed.
#[derive(Clone, Debug)]
pub struct DirOptions {
    /// `fdatasync` the log before acknowledging each write (see the module docs). Off by default.
    pub fsync: bool,
    /// Compact automatically once the log grows past this many bytes.
    pub log_limit: u64,
    /// How often a watch looks for new records.
    pub poll_interval: Duration,
}

impl Default for DirOptions {
    fn default() -> Self {
        DirOptions {
            fsync: false,
            log_limit: 64 << 20,
            poll_interval: Duration::from_millis(5),
        }
    }
}

/// A datastore kept in a local directory and shared by any number of processes on this host.
/// Cloning gives another handle on the same cache.
#[derive(Clone)]
pub struct DirDatastore {
    shared: Arc<Shared>,
}

struct Shared {
    root: PathBuf,
    options: DirOptions,
    /// The `state` file: the `flock` target and the applied-revision record.
    state: File,
    boot_id: [u8; 36],
    inner: Mutex<Inner>,
}

/// What one handle knows, valid as of `revision` (the last revision in the log when it last
/// held the lock).
struct Inner {
    log: LogReader,
    revision: u64,
    cache: BTreeMap<Key, Slot>,
    /// Kinds whose every object is in `cache`.
    complete: HashSet<Kind>,
}

/// A cached object, or the knowledge that there is none.
enum Slot {
    Absent,
    Present(Entry),
}

struct Entry {
    /// The revision of the object's last write (its resourceVersion).
    revision: u64,
    /// The object as stored.
    json: Vec<u8>,
    /// `json` parsed, once somebody asked (boxed: most entries are never parsed).
    parsed: Option<Box<Resource>>,
}

impl Entry {
    fn resource(&mut self, key: &Key) -> Result<&Resource, Error> {
        if self.parsed.is_none() {
            self.parsed = Some(Box::new(parse(&self.json, &|| {
                format!("decoding stored {key}")
            })?));
        }
        Ok(self.parsed.as_ref().expect("just parsed"))
    }
}

fn parse(json: &[u8], what: &dyn Fn() -> String) -> Result<Resource, Error> {
    serde_json::from_slice(json).map_err(|e| Error::Corrupt {
        what: what(),
        reason: e.to_string(),
    })
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Holds an `flock` until dropped.
struct FileLock<'a>(&'a File);

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // Closing the descriptor would release it too; the descriptor lives on, so unlock.
        let _ = self.0.unlock();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Shared,
    Exclusive,
}

impl DirDatastore {
    /// Opens the datastore in `root`, creating the directory and its layout if they are missing,
    /// and repairing what a crashed writer left behind.
    pub fn open(root: impl AsRef<Path>) -> Result<DirDatastore, Error> {
        DirDatastore::open_with(root, DirOptions::default())
    }

    pub fn open_with(root: impl AsRef<Path>, options: DirOptions) -> Result<DirDatastore, Error> {
        let root = root.as_ref().to_path_buf();
        let at = |what: &str| format!("opening datastore {}: {what}", root.display());
        for dir in [root.clone(), paths::tmp(&root), paths::objects(&root)] {
            std::fs::create_dir_all(&dir)
                .map_err(io(at(&format!("creating {}", dir.display()))))?;
        }
        for kind in Kind::ALL {
            let dir = paths::kind_dir(&root, kind);
            std::fs::create_dir_all(&dir)
                .map_err(io(at(&format!("creating {}", dir.display()))))?;
        }
        let state = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(paths::state(&root))
            .map_err(io(at("opening the state file")))?;
        let boot_id = state::boot_id();
        state.lock().map_err(io(at("taking the exclusive lock")))?;
        let guard = FileLock(&state);
        let log_path = paths::log(&root);
        if !log_path.exists() {
            // A new store, or one whose log was removed by hand: start the revision above every
            // object present so revisions keep growing.
            let base = max_object_revision(&root)?;
            write_new_log(&root, base, &[], options.fsync)?;
            state::write(
                &state,
                Applied {
                    revision: base,
                    boot_id,
                },
            )
            .map_err(io(at("writing the state file")))?;
        }
        let log = LogReader::open(&log_path)?;
        drop(guard);
        let store = DirDatastore {
            shared: Arc::new(Shared {
                root,
                options,
                state,
                boot_id,
                inner: Mutex::new(Inner {
                    log,
                    revision: 0,
                    cache: BTreeMap::new(),
                    complete: HashSet::new(),
                }),
            }),
        };
        // Repair now, so a broken store is reported by open rather than by the first write.
        drop(store.locked(Mode::Exclusive)?);
        Ok(store)
    }

    /// The directory this datastore lives in.
    pub fn path(&self) -> &Path {
        &self.shared.root
    }

    /// The current revision: that of the last write by any process.
    pub fn revision(&self) -> Result<Revision, Error> {
        let (inner, _lock) = self.locked(Mode::Shared)?;
        Ok(Revision(inner.revision))
    }

    /// The compaction point: watches from a revision below it get [`Error::TooOld`].
    pub fn oldest(&self) -> Result<Revision, Error> {
        let (inner, _lock) = self.locked(Mode::Shared)?;
        Ok(Revision(inner.log.base))
    }

    /// Drops the change history at or below `keep_after` (capped at the current revision), as
    /// etcd's compaction does. Returns the new compaction point.
    pub fn compact(&self, keep_after: Revision) -> Result<Revision, Error> {
        let (mut inner, _lock) = self.locked(Mode::Exclusive)?;
        let keep_after = keep_after.0.min(inner.revision);
        self.shared.compact_locked(&mut inner, keep_after)?;
        Ok(Revision(inner.log.base))
    }

    /// Takes the handle's mutex and the file lock, and brings the handle up to date with the
    /// log. A reader that finds the objects behind the log takes the exclusive lock instead and
    /// has them repaired first.
    fn locked(&self, mode: Mode) -> Result<(MutexGuard<'_, Inner>, FileLock<'_>), Error> {
        let sh = &*self.shared;
        let mut inner = sh.inner.lock().unwrap_or_else(|p| p.into_inner());
        let lock = sh.flock(mode)?;
        sh.sync(&mut inner, mode)?;
        if sh.objects_current(&inner)? {
            return Ok((inner, lock));
        }
        let lock = if mode == Mode::Shared {
            drop(lock);
            let lock = sh.flock(Mode::Exclusive)?;
            sh.sync(&mut inner, Mode::Exclusive)?;
            lock
        } else {
            lock
        };
        sh.repair(&mut inner)?;
        Ok((inner, lock))
    }
}

impl Shared {
    fn flock(&self, mode: Mode) -> Result<FileLock<'_>, Error> {
        let (r, what) = match mode {
            Mode::Shared => (self.state.lock_shared(), "shared"),
            Mode::Exclusive => (self.state.lock(), "exclusive"),
        };
        r.map_err(io(format!(
            "taking the {what} lock on {}",
            paths::state(&self.root).display()
        )))?;
        Ok(FileLock(&self.state))
    }

    /// Reads what other processes appended to the log since this handle last looked, and
    /// updates the cache from it. Under the exclusive lock, also cuts off a torn record.
    fn sync(&self, inner: &mut Inner, mode: Mode) -> Result<(), Error> {
        let log_path = paths::log(&self.root);
        if inner.log.replaced(&log_path)? {
            let log = LogReader::open(&log_path)?;
            if log.base > inner.revision {
                // History this handle has not seen was compacted away: forget everything and
                // read objects afresh.
                inner.cache.clear();
                inner.complete.clear();
            }
            inner.log = log;
        }
        loop {
            let Inner {
                log,
                revision,
                cache,
                ..
            } = &mut *inner;
            let tail = log.read_new(|_, record| {
                if record.revision > *revision {
                    *revision = record.revision;
                    apply_to_cache(cache, record);
                }
                Ok(())
            })?;
            match tail {
                Tail::More => continue,
                Tail::Clean => break,
                Tail::Torn { at } => {
                    if mode == Mode::Exclusive {
                        log.file.set_len(at).map_err(io(format!(
                            "truncating a torn record at offset {at} of {}",
                            log_path.display()
                        )))?;
                    }
                    break;
                }
                Tail::Corrupt { at } => {
                    return Err(Error::Corrupt {
                        what: format!("reading {}", log_path.display()),
                        reason: format!("unreadable record at offset {at} followed by more data"),
                    });
                }
            }
        }
        inner.revision = inner.revision.max(inner.log.base);
        Ok(())
    }

    fn read_state(&self) -> Result<Option<Applied>, Error> {
        state::read(&self.state).map_err(io(format!(
            "reading {}",
            paths::state(&self.root).display()
        )))
    }

    fn write_state(&self, revision: u64) -> Result<(), Error> {
        state::write(
            &self.state,
            Applied {
                revision,
                boot_id: self.boot_id,
            },
        )
        .map_err(io(format!(
            "writing {}",
            paths::state(&self.root).display()
        )))
    }

    /// Whether the object files hold exactly the log's state, as written on this boot.
    fn objects_current(&self, inner: &Inner) -> Result<bool, Error> {
        Ok(self
            .read_state()?
            .is_some_and(|a| a.revision == inner.revision && a.boot_id == self.boot_id))
    }

    /// Brings the object files in line with the log (exclusive lock held, handle synced).
    fn repair(&self, inner: &mut Inner) -> Result<(), Error> {
        let applied = self.read_state()?;
        let tail_only = applied
            .filter(|a| a.boot_id == self.boot_id && a.revision <= inner.revision)
            .map(|a| a.revision);
        match tail_only {
            Some(after) => {
                tracing::info!(
                    store = %self.root.display(),
                    applied = after,
                    revision = inner.revision,
                    "replaying change log records a crashed writer did not apply"
                );
                self.reconcile(inner, after)?;
            }
            None => {
                tracing::warn!(
                    store = %self.root.display(),
                    "state unreadable, ahead of the log or from an earlier boot: \
                     reconciling the whole change log with the object files"
                );
                self.reconcile(inner, 0)?;
                let newest = max_object_revision(&self.root)?;
                if newest > inner.revision {
                    // Objects got further than the log did (a power loss kept the renames but
                    // not the log's tail): history up to them is unknown, so start it after.
                    write_new_log(&self.root, newest, &[], self.options.fsync)?;
                    inner.log = LogReader::open(&paths::log(&self.root))?;
                    inner.revision = newest;
                }
                inner.cache.clear();
                inner.complete.clear();
            }
        }
        self.write_state(inner.revision)
    }

    /// Applies, per key, the last log record after `after` to the object file unless the file
    /// already holds that or a newer revision.
    fn reconcile(&self, inner: &mut Inner, after: u64) -> Result<(), Error> {
        let log_path = paths::log(&self.root);
        let mut reader = LogReader::open(&log_path)?;
        let mut last: BTreeMap<Key, Record> = BTreeMap::new();
        loop {
            let tail = reader.read_new(|_, record| {
                if record.revision > after {
                    last.insert(record.key.clone(), record);
                }
                Ok(())
            })?;
            match tail {
                Tail::More => continue,
                Tail::Clean | Tail::Torn { .. } => break,
                Tail::Corrupt { at } => {
                    return Err(Error::Corrupt {
                        what: format!("replaying {}", log_path.display()),
                        reason: format!("unreadable record at offset {at} followed by more data"),
                    });
                }
            }
        }
        for (key, record) in last {
            let path = paths::object(&self.root, &key);
            let on_disk = match std::fs::read(&path) {
                Ok(json) => Some(
                    parse(&json, &|| format!("reading {}", path.display()))
                        .ok()
                        .and_then(|r| Revision::of(&r).ok().flatten())
                        .map_or(0, |r| r.0),
                ),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
            };
            let newer_on_disk = on_disk.is_some_and(|rev| rev > record.revision);
            if newer_on_disk {
                continue;
            }
            match record.op {
                Op::Added | Op::Modified => {
                    if on_disk != Some(record.revision) {
                        self.write_object(&key, &record.json)?;
                    }
                }
                Op::Deleted => {
                    if on_disk.is_some() {
                        self.remove_object(&key)?;
                    }
                }
            }
            inner.cache.remove(&key);
        }
        Ok(())
    }

    fn write_object(&self, key: &Key, json: &[u8]) -> Result<(), Error> {
        let path = paths::object(&self.root, key);
        let tmp = paths::tmp(&self.root).join("object.json");
        std::fs::write(&tmp, json).map_err(io(format!("writing {key} to {}", tmp.display())))?;
        match std::fs::rename(&tmp, &path) {
            Err(e) if e.kind() == ErrorKind::NotFound && key.kind.namespaced() => {
                let dir = path.parent().expect("object paths have a parent");
                std::fs::create_dir_all(dir).map_err(io(format!(
                    "creating namespace directory {}",
                    dir.display()
                )))?;
                std::fs::rename(&tmp, &path)
            }
            r => r,
        }
        .map_err(io(format!("renaming {key} into {}", path.display())))
    }

    fn remove_object(&self, key: &Key) -> Result<(), Error> {
        let path = paths::object(&self.root, key);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(io(format!("removing {key} at {}", path.display()))(e))
            }
            _ => Ok(()),
        }
    }

    /// The current state of `key`, from the cache or else its file (lock held, handle synced).
    fn current<'a>(&self, inner: &'a mut Inner, key: &Key) -> Result<Option<&'a mut Entry>, Error> {
        if !inner.cache.contains_key(key) {
            let slot = self.load(key)?;
            inner.cache.insert(key.clone(), slot);
        }
        Ok(match inner.cache.get_mut(key) {
            Some(Slot::Present(e)) => Some(e),
            _ => None,
        })
    }

    fn load(&self, key: &Key) -> Result<Slot, Error> {
        let path = paths::object(&self.root, key);
        match std::fs::read(&path) {
            Ok(json) => Ok(Slot::Present(entry_from_file(json, &path)?)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Slot::Absent),
            Err(e) => Err(io(format!("reading {key} from {}", path.display()))(e)),
        }
    }

    /// Fills the cache with every object of `kind` (lock held, handle synced).
    fn load_kind(&self, inner: &mut Inner, kind: Kind) -> Result<(), Error> {
        if inner.complete.contains(&kind) {
            return Ok(());
        }
        let dir = paths::kind_dir(&self.root, kind);
        let mut files = Vec::new();
        if kind.namespaced() {
            for ns in read_dir(&dir)? {
                if ns.is_dir() {
                    files.extend(read_dir(&ns)?);
                }
            }
        } else {
            files = read_dir(&dir)?;
        }
        for path in files {
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let json = match std::fs::read(&path) {
                Ok(json) => json,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
            };
            let mut entry = entry_from_file(json, &path)?;
            let key = entry
                .resource(&Key::new(kind, path.display().to_string()))?
                .key();
            inner.cache.insert(key, Slot::Present(entry));
        }
        inner.complete.insert(kind);
        Ok(())
    }

    /// Commits one record: log, then object file, then state (exclusive lock held, handle
    /// synced and repaired). The cache takes the new state.
    fn commit(
        &self,
        inner: &mut Inner,
        record: Record,
        parsed: Option<Resource>,
    ) -> Result<(), Error> {
        let frame = record.encode();
        let at = inner.log.offset;
        let log_path = paths::log(&self.root);
        if let Err(e) = inner.log.file.write_all_at(&frame, at) {
            // Leave no partial record behind for others to wait on.
            let _ = inner.log.file.set_len(at);
            return Err(io(format!(
                "appending {} for {} to {}",
                record.revision,
                record.key,
                log_path.display()
            ))(e));
        }
        if self.options.fsync {
            inner.log.file.sync_data().map_err(io(format!(
                "syncing {} after revision {}",
                log_path.display(),
                record.revision
            )))?;
        }
        inner.log.offset = at + frame.len() as u64;
        inner.revision = record.revision;
        // From here on the write is committed: failing to apply it is repaired by the next
        // writer (or reader), so it is reported but not returned.
        let applied = match record.op {
            Op::Added | Op::Modified => self.write_object(&record.key, &record.json),
            Op::Deleted => self.remove_object(&record.key),
        };
        match applied.and_then(|()| self.write_state(record.revision)) {
            Ok(()) => {}
            Err(e) => tracing::warn!(
                error = %e,
                revision = record.revision,
                "committed to the change log but not applied; the next operation repairs it"
            ),
        }
        let slot = match record.op {
            Op::Deleted => Slot::Absent,
            Op::Added | Op::Modified => Slot::Present(Entry {
                revision: record.revision,
                json: record.json,
                parsed: parsed.map(Box::new),
            }),
        };
        inner.cache.insert(record.key, slot);
        if inner.log.offset > self.options.log_limit
            && let Err(e) = self.auto_compact(inner)
        {
            tracing::warn!(error = %e, "automatic compaction of the change log failed");
        }
        Ok(())
    }

    /// Compacts so that about a quarter of `log_limit` of the newest history stays.
    fn auto_compact(&self, inner: &mut Inner) -> Result<(), Error> {
        let keep_from = inner.log.offset.saturating_sub(self.options.log_limit / 4);
        let mut reader = LogReader::open(&paths::log(&self.root))?;
        let revision = inner.revision;
        let mut keep_after = revision;
        loop {
            let tail = reader.read_new(|at, record| {
                if at >= keep_from && keep_after == revision {
                    keep_after = record.revision - 1;
                }
                Ok(())
            })?;
            if tail != Tail::More {
                break;
            }
        }
        self.compact_locked(inner, keep_after)
    }

    /// Rewrites the log without the records at or below `keep_after` (exclusive lock held,
    /// handle synced).
    fn compact_locked(&self, inner: &mut Inner, keep_after: u64) -> Result<(), Error> {
        if keep_after <= inner.log.base {
            return Ok(());
        }
        let log_path = paths::log(&self.root);
        let mut reader = LogReader::open(&log_path)?;
        let mut start = None;
        loop {
            let tail = reader.read_new(|at, record| {
                if start.is_none() && record.revision > keep_after {
                    start = Some(at);
                }
                Ok(())
            })?;
            if tail != Tail::More {
                break;
            }
        }
        let end = inner.log.offset;
        let start = start.unwrap_or(end);
        let mut kept = vec![0u8; (end - start) as usize];
        let n = log::read_full_at(&inner.log.file, &mut kept, start)
            .map_err(io(format!("reading {} for compaction", log_path.display())))?;
        kept.truncate(n);
        write_new_log(&self.root, keep_after, &kept, self.options.fsync)?;
        let mut log = LogReader::open(&log_path)?;
        log.offset = HEADER_LEN + kept.len() as u64;
        inner.log = log;
        tracing::debug!(store = %self.root.display(), keep_after, "compacted the change log");
        Ok(())
    }
}

fn entry_from_file(json: Vec<u8>, path: &Path) -> Result<Entry, Error> {
    let what = || format!("reading {}", path.display());
    let resource = parse(&json, &what)?;
    let revision = Revision::of(&resource)?.map_or(0, |r| r.0);
    Ok(Entry {
        revision,
        json,
        parsed: Some(Box::new(resource)),
    })
}

fn apply_to_cache(cache: &mut BTreeMap<Key, Slot>, record: Record) {
    let slot = match record.op {
        Op::Deleted => Slot::Absent,
        Op::Added | Op::Modified => Slot::Present(Entry {
            revision: record.revision,
            json: record.json,
            parsed: None,
        }),
    };
    cache.insert(record.key, slot);
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("listing {}", dir.display()))(e)),
    };
    entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io(format!("listing {}", dir.display())))
}

/// The highest resourceVersion among all object files (0 for none).
fn max_object_revision(root: &Path) -> Result<u64, Error> {
    let mut max = 0;
    let mut dirs = vec![paths::objects(root)];
    while let Some(dir) = dirs.pop() {
        for path in read_dir(&dir)? {
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let json =
                    std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
                let rev = entry_from_file(json, &path)?.revision;
                max = max.max(rev);
            }
        }
    }
    Ok(max)
}

/// Replaces the log with one whose history starts after `base` and holds `records` (framed).
fn write_new_log(root: &Path, base: u64, records: &[u8], fsync: bool) -> Result<(), Error> {
    let tmp = paths::tmp(root).join("log");
    let log_path = paths::log(root);
    let what = format!(
        "writing a new change log (after revision {base}) to {}",
        tmp.display()
    );
    let mut bytes = Vec::with_capacity(HEADER_LEN as usize + records.len());
    bytes.extend_from_slice(&log::encode_header(base));
    bytes.extend_from_slice(records);
    let file = File::create(&tmp).map_err(io(what.clone()))?;
    file.write_all_at(&bytes, 0).map_err(io(what.clone()))?;
    if fsync {
        file.sync_all().map_err(io(what))?;
    }
    std::fs::rename(&tmp, &log_path).map_err(io(format!(
        "renaming the new change log over {}",
        log_path.display()
    )))?;
    if fsync {
        File::open(root)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("syncing directory {}", root.display())))?;
    }
    Ok(())
}

fn stamped(mut resource: Resource, revision: u64) -> Resource {
    resource.metadata_mut().resource_version = Some(revision.to_string());
    resource
}

fn encode(resource: &Resource) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(resource).map_err(|e| Error::Corrupt {
        what: format!("encoding {}", resource.key()),
        reason: e.to_string(),
    })
}

/// Keys the log's framing can carry (names and namespaces are u16-length-prefixed).
fn check_key(key: &Key) -> Result<(), Error> {
    const MAX: usize = 4096;
    let ns = key.namespace.as_ref().map_or(0, |n| n.len());
    if key.name.len() > MAX || ns > MAX {
        return Err(Error::InvalidKey {
            key: key.clone(),
            reason: format!("names and namespaces are limited to {MAX} bytes"),
        });
    }
    Ok(())
}

#[async_trait]
impl Datastore for DirDatastore {
    async fn get(&self, key: &Key) -> Result<Resource, Error> {
        let (mut inner, _lock) = self.locked(Mode::Shared)?;
        match self.shared.current(&mut inner, key)? {
            Some(entry) => Ok(entry.resource(key)?.clone()),
            None => Err(Error::NotFound(key.clone())),
        }
    }

    async fn list(&self, kind: Kind) -> Result<Listing, Error> {
        let (mut inner, _lock) = self.locked(Mode::Shared)?;
        self.shared.load_kind(&mut inner, kind)?;
        let revision = Revision(inner.revision);
        let mut items = Vec::new();
        for (key, slot) in inner.cache.iter_mut().filter(|(k, _)| k.kind == kind) {
            if let Slot::Present(entry) = slot {
                items.push(entry.resource(key)?.clone());
            }
        }
        Ok(Listing { items, revision })
    }

    async fn create(&self, resource: Resource) -> Result<Resource, Error> {
        let key = resource.key();
        check_key(&key)?;
        let (mut inner, _lock) = self.locked(Mode::Exclusive)?;
        if self.shared.current(&mut inner, &key)?.is_some() {
            return Err(Error::AlreadyExists(key));
        }
        let revision = inner.revision + 1;
        let stored = stamped(resource, revision);
        let record = Record {
            revision,
            op: Op::Added,
            key,
            json: encode(&stored)?,
        };
        self.shared
            .commit(&mut inner, record, Some(stored.clone()))?;
        Ok(stored)
    }

    async fn update(&self, resource: Resource) -> Result<Resource, Error> {
        let key = resource.key();
        check_key(&key)?;
        let expected = Revision::of(&resource)?;
        let (mut inner, _lock) = self.locked(Mode::Exclusive)?;
        let current = match self.shared.current(&mut inner, &key)? {
            Some(entry) => Revision(entry.revision),
            None => return Err(Error::NotFound(key)),
        };
        if let Some(expected) = expected.filter(|e| *e != current) {
            return Err(Error::Conflict {
                key,
                expected,
                current,
            });
        }
        let revision = inner.revision + 1;
        let stored = stamped(resource, revision);
        let record = Record {
            revision,
            op: Op::Modified,
            key,
            json: encode(&stored)?,
        };
        self.shared
            .commit(&mut inner, record, Some(stored.clone()))?;
        Ok(stored)
    }

    async fn delete(&self, key: &Key, expected: Option<Revision>) -> Result<Resource, Error> {
        let (mut inner, _lock) = self.locked(Mode::Exclusive)?;
        let revision = inner.revision + 1;
        let (json, last) = match self.shared.current(&mut inner, key)? {
            Some(entry) => {
                let current = Revision(entry.revision);
                if let Some(expected) = expected.filter(|e| *e != current) {
                    return Err(Error::Conflict {
                        key: key.clone(),
                        expected,
                        current,
                    });
                }
                let last = entry.resource(key)?.clone();
                (entry.json.clone(), last)
            }
            None => return Err(Error::NotFound(key.clone())),
        };
        let record = Record {
            revision,
            op: Op::Deleted,
            key: key.clone(),
            json,
        };
        self.shared.commit(&mut inner, record, None)?;
        Ok(last)
    }

    async fn watch(&self, kind: Option<Kind>, after: Revision) -> Result<Watch, Error> {
        watch::start(
            self.shared.root.clone(),
            self.shared.options.poll_interval,
            kind,
            after,
        )
    }
}

#[cfg(test)]
mod tests;
