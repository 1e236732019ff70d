//! The local-directory datastore: tabby's embedded default, shared safely by every process on
//! one host (tabby-node, the CNI plugin exec'd per pod, tabbyctl).
//!
//! # Layout
//!
//! ```text
//! <root>/state                          lock file + how far objects have caught up (state.rs)
//! <root>/log                            the change log: header + framed records (log.rs)
//! <root>/objects/<plural>/<name>.json   each resource as of the applied revision
//! <root>/objects/workloadendpoints/<namespace>/<name>.json
//! <root>/tmp/                           write-then-rename scratch
//! ```
//!
//! # Concurrency
//!
//! Every operation takes an `flock` on `state`: shared for get/list, exclusive for
//! create/update/delete/compact/checkpoint. Within one process a mutex serialises the handle's own
//! operations first, so one lock is held per process at a time. Watches take no lock: they poll
//! the log for growth every [`DirOptions::poll_interval`] and read only complete, checksummed
//! records, which a writer publishes with a single `pwrite`.
//!
//! # Writes, and why a `kill -9` at any instant is safe
//!
//! The store's state is the object files as of the *applied revision* recorded in `state`,
//! with the log records after it on top. Under the exclusive lock a writer
//! 1. catches up with the log (below) and truncates a torn record left at its end by a writer
//!    that died mid-`pwrite`;
//! 2. checks the compare-and-swap against the current object;
//! 3. appends one record `len | crc32 | revision | op | key | JSON` to the log — **this is the
//!    commit point**: a complete record is a committed write, readers and watchers take it;
//! 4. once more than [`DirOptions::apply_batch`] bytes of the log are unapplied, applies them:
//!    for each key changed since the applied revision, writes its last state to `tmp/` and
//!    renames it into place (or unlinks it for a delete), then records the new applied
//!    revision and log offset in `state`.
//!
//! A death before 3 completes leaves nothing or a torn record (ignored by readers, cut off by
//! the next writer): the write did not happen. A death after 3 leaves a committed record in the
//! log, which is where readers find it. A death inside 4 leaves some object files newer than
//! the applied revision says, which is harmless: every key they belong to has a record after
//! the applied revision, readers take that record over the file, and the next application
//! writes the same files again (it is idempotent: each record carries the whole new state).
//! Object files are only ever replaced by `rename`, so no reader sees half an object. The one
//! revision counter is the last record's revision (or the log's compaction point when it holds
//! no record), so it only grows.
//!
//! Deferring step 4 is what makes writes cheap: appending to the log is one `pwrite`, while
//! creating and renaming a file costs a file-system journal transaction (hundreds of
//! microseconds on a busy ext4), and IPAM rewrites the same block object on every allocation,
//! which a batch writes once. With `apply_batch` 0 every write applies itself.
//!
//! # Reads, and why they do not rescan
//!
//! Each handle caches the objects it has read (and the absence of those it looked for) together
//! with the log offset it has read up to. Under the lock it first reads the records appended
//! since, which carry each changed key and its new JSON, and updates its cache from them; so a
//! get or a CAS check costs one short log read, and a list of a kind reads that kind's directory
//! only the first time. A new handle starts at the applied offset `state` records, so it reads at
//! most about `apply_batch` bytes of log. Resources are parsed from JSON only when asked for.
//!
//! # Compaction
//!
//! [`DirDatastore::compact`] drops the history at or below a revision: it applies the log, then
//! writes a new log holding only later records and renames it over the old one. A write that
//! leaves the log longer than [`DirOptions::log_limit`] compacts automatically, keeping the
//! newest quarter of the limit. Watches notice the rename, finish the old file (which they
//! still hold open) and continue in the new one, or end with [`Error::TooOld`] when what they
//! still needed was dropped.
//!
//! # fsync
//!
//! By default nothing is fsynced. A write reaches the kernel's page cache before it is
//! acknowledged, which is all that surviving the death of any process needs — and the IPAM
//! plugin makes about three writes per pod, which at several milliseconds per `fdatasync` on
//! ordinary disks would cost more than everything else in pod start-up. A power loss may lose
//! the last seconds of writes: those belonged to pods that died with the node and are set up
//! again after boot. It must not leave the store unreadable or inconsistent, so after a reboot
//! (the boot id in `state` differs) the first process to take the lock reconciles the whole log
//! with the object files, newest revision winning per key, and moves the revision past every
//! object found.
//!
//! [`DirOptions::fsync`] makes every write `fdatasync` the log before it is acknowledged, and
//! compaction sync the object files whose records it drops and its new log before the rename,
//! for operators who need acknowledged writes to survive a power loss and accept the cost
//! (object files need no sync per write: after a reboot they are rebuilt from the durable log).
//!
//! # Blocking
//!
//! The operations do their file I/O and wait for the lock on the calling thread, without
//! `spawn_blocking`: they are short (a write holds the lock for a few system calls, the write
//! that applies a batch for one rename per object changed in it, a compaction for one copy of
//! the retained log), and handing each to a blocking thread would cost more than most of them
//! take. No lock is held across an `.await`.

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
    /// Apply the log to the object files once this many bytes of it are unapplied (0: after
    /// every write). A handle opening the store reads at most about this much of the log; a
    /// write that triggers the application writes each object changed since once.
    pub apply_batch: u64,
    /// How often a watch looks for new records.
    pub poll_interval: Duration,
}

impl Default for DirOptions {
    fn default() -> Self {
        DirOptions {
            fsync: false,
            log_limit: 64 << 20,
            apply_batch: 64 << 10,
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
    /// The cache is empty and `log` is at the start of the log: the next sync may jump to
    /// where `state` says the applied records end instead of reading the whole log.
    cold: bool,
    /// What `state` said when this handle last took the lock (or wrote it since).
    applied: Option<Applied>,
}

impl Inner {
    fn forget(&mut self) {
        self.cache.clear();
        self.complete.clear();
        self.cold = true;
    }
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
                    log_base: base,
                    log_offset: HEADER_LEN,
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
                    cold: true,
                    applied: None,
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

    /// Applies every logged change to the object files now (writes do it once
    /// [`DirOptions::apply_batch`] bytes of the log are unapplied), so the object files alone
    /// hold the current state: before copying them elsewhere, say. Returns the revision they
    /// hold.
    pub fn checkpoint(&self) -> Result<Revision, Error> {
        let (mut inner, _lock) = self.locked(Mode::Exclusive)?;
        self.shared.apply(&mut inner)?;
        Ok(Revision(inner.revision))
    }

    /// Takes the handle's mutex and the file lock, and brings the handle up to date with the
    /// log. A reader that cannot trust the object files (see [`Shared::state_trusted`]) takes
    /// the exclusive lock instead and has them repaired first.
    fn locked(&self, mode: Mode) -> Result<(MutexGuard<'_, Inner>, FileLock<'_>), Error> {
        let sh = &*self.shared;
        let mut inner = match sh.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => {
                // An operation panicked halfway through updating the handle: start it over
                // from the files rather than trust a half-updated cache.
                let mut inner = poisoned.into_inner();
                inner.log = LogReader::open(&paths::log(&sh.root))?;
                inner.revision = 0;
                inner.forget();
                sh.inner.clear_poison();
                inner
            }
        };
        let lock = sh.flock(mode)?;
        sh.sync(&mut inner, mode)?;
        inner.applied = sh.read_state()?;
        if sh.state_trusted(&inner) {
            return Ok((inner, lock));
        }
        let lock = if mode == Mode::Shared {
            drop(lock);
            let lock = sh.flock(Mode::Exclusive)?;
            sh.sync(&mut inner, Mode::Exclusive)?;
            inner.applied = sh.read_state()?;
            lock
        } else {
            lock
        };
        if !sh.state_trusted(&inner) {
            sh.repair(&mut inner)?;
        }
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
            let forget = log.base > inner.revision;
            inner.log = log;
            if forget {
                // History this handle has not seen was compacted away: forget everything and
                // read objects afresh.
                inner.forget();
            }
        }
        if inner.cold {
            inner.cold = false;
            self.skip_applied(inner)?;
        }
        loop {
            let Inner {
                log,
                revision,
                cache,
                ..
            } = &mut *inner;
            let tail = log.read_new(*revision, |_, record| {
                *revision = record.revision;
                apply_to_cache(cache, record);
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

    /// Moves a cold handle to the end of the applied records, as `state` records it: the object
    /// files hold everything up to there, so the cache need learn only the rest from the log.
    fn skip_applied(&self, inner: &mut Inner) -> Result<(), Error> {
        let Some(applied) = self.read_state()? else {
            return Ok(());
        };
        let len = inner
            .log
            .file
            .metadata()
            .map_err(io("checking the change log's length"))?
            .len();
        if applied.boot_id == self.boot_id
            && applied.log_base == inner.log.base
            && (HEADER_LEN..=len).contains(&applied.log_offset)
            && applied.revision >= inner.revision
        {
            inner.log.offset = applied.log_offset;
            inner.revision = applied.revision;
        }
        Ok(())
    }

    fn read_state(&self) -> Result<Option<Applied>, Error> {
        state::read(&self.state).map_err(io(format!(
            "reading {}",
            paths::state(&self.root).display()
        )))
    }

    /// Records that the object files hold everything the handle has read of the log.
    fn write_state(&self, inner: &mut Inner) -> Result<(), Error> {
        let applied = Applied {
            revision: inner.revision,
            log_base: inner.log.base,
            log_offset: inner.log.offset,
            boot_id: self.boot_id,
        };
        state::write(&self.state, applied).map_err(io(format!(
            "writing {}",
            paths::state(&self.root).display()
        )))?;
        inner.applied = Some(applied);
        Ok(())
    }

    /// Whether the object files can be read as the state at `state`'s applied revision, with
    /// the log after it on top: `state` is readable, was written on this boot (the page cache
    /// has not been lost since) and is not ahead of the log.
    fn state_trusted(&self, inner: &Inner) -> bool {
        inner
            .applied
            .is_some_and(|a| a.boot_id == self.boot_id && a.revision <= inner.revision)
    }

    /// Rebuilds trust in the object files after a reboot or a damaged `state` (exclusive lock
    /// held, handle synced).
    fn repair(&self, inner: &mut Inner) -> Result<(), Error> {
        tracing::warn!(
            store = %self.root.display(),
            "state unreadable, ahead of the log or from an earlier boot: \
             reconciling the whole change log with the object files"
        );
        self.reconcile(inner)?;
        let newest = max_object_revision(&self.root)?;
        if newest > inner.revision {
            // Objects got further than the log did (a power loss kept the renames but not the
            // log's tail): history up to them is unknown, so start it after.
            write_new_log(&self.root, newest, &[], self.options.fsync)?;
            inner.log = LogReader::open(&paths::log(&self.root))?;
            inner.revision = newest;
        }
        inner.forget();
        inner.cold = false;
        self.write_state(inner)
    }

    /// Whether enough of the log is unapplied to apply it now.
    fn apply_due(&self, inner: &Inner) -> bool {
        match inner.applied {
            Some(a) if a.revision == inner.revision => false,
            Some(a) if a.log_base == inner.log.base => {
                inner.log.offset.saturating_sub(a.log_offset) > self.options.apply_batch
            }
            _ => true,
        }
    }

    /// Applies the log after the applied revision to the object files: per key, its last
    /// record (exclusive lock held, handle synced, state trusted).
    fn apply(&self, inner: &mut Inner) -> Result<(), Error> {
        let Some(applied) = inner.applied else {
            return Err(Error::Corrupt {
                what: format!("applying the change log of {}", self.root.display()),
                reason: "no applied revision recorded".into(),
            });
        };
        if applied.revision == inner.revision {
            return Ok(());
        }
        let log_path = paths::log(&self.root);
        let mut reader = LogReader::open(&log_path)?;
        if applied.log_base == reader.base
            && (HEADER_LEN..=inner.log.offset).contains(&applied.log_offset)
        {
            reader.offset = applied.log_offset;
        }
        let mut last: BTreeMap<Key, Record> = BTreeMap::new();
        loop {
            let tail = reader.read_new(applied.revision, |_, record| {
                last.insert(record.key.clone(), record);
                Ok(())
            })?;
            match tail {
                Tail::More => continue,
                Tail::Clean | Tail::Torn { .. } => break,
                Tail::Corrupt { at } => {
                    return Err(Error::Corrupt {
                        what: format!("applying {}", log_path.display()),
                        reason: format!("unreadable record at offset {at} followed by more data"),
                    });
                }
            }
        }
        for (key, record) in &last {
            match record.op {
                Op::Added | Op::Modified => self.write_object(key, &record.json)?,
                Op::Deleted => self.remove_object(key)?,
            }
        }
        self.write_state(inner)
    }

    /// Applies, per key, the last record in the whole log to the object file unless the file
    /// already holds that or a newer revision.
    fn reconcile(&self, inner: &mut Inner) -> Result<(), Error> {
        let log_path = paths::log(&self.root);
        let mut reader = LogReader::open(&log_path)?;
        let mut last: BTreeMap<Key, Record> = BTreeMap::new();
        loop {
            let tail = reader.read_new(0, |_, record| {
                last.insert(record.key.clone(), record);
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
            Ok(json) => {
                let entry = entry_from_file(json, &path)?;
                let found = entry.parsed.as_ref().expect("entry_from_file parses").key();
                if found != *key {
                    // Only a hashed overlong name could collide, or a file put there by hand.
                    return Err(Error::Corrupt {
                        what: format!("reading {key} from {}", path.display()),
                        reason: format!("the file holds {found}"),
                    });
                }
                Ok(Slot::Present(entry))
            }
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
            let entry = entry_from_file(json, &path)?;
            let key = entry.parsed.as_ref().expect("entry_from_file parses").key();
            if key.kind != kind {
                return Err(Error::Corrupt {
                    what: format!("listing {kind} from {}", path.display()),
                    reason: format!("the file holds {key}"),
                });
            }
            // A cached slot came from the log after the applied revision, or from this very
            // file: either way it is at least as new.
            inner.cache.entry(key).or_insert(Slot::Present(entry));
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
        // A failed sync cannot take the record back (watchers may have delivered it already):
        // the write is applied like any other and the caller learns it may not be durable.
        let synced = if self.options.fsync {
            inner.log.file.sync_data().map_err(io(format!(
                "syncing {} after revision {} (the write is committed but may not survive a \
                 power loss)",
                log_path.display(),
                record.revision
            )))
        } else {
            Ok(())
        };
        inner.log.offset = at + frame.len() as u64;
        inner.revision = record.revision;
        let key = record.key.clone();
        let slot = match record.op {
            Op::Deleted => Slot::Absent,
            Op::Added | Op::Modified => Slot::Present(Entry {
                revision: record.revision,
                json: record.json,
                parsed: parsed.map(Box::new),
            }),
        };
        inner.cache.insert(key, slot);
        // From here on the write is committed: failing to apply the log is retried by the next
        // writer, so it is reported but not returned.
        if self.apply_due(inner)
            && let Err(e) = self.apply(inner)
        {
            tracing::warn!(
                error = %e,
                revision = inner.revision,
                "applying the change log to the object files failed; the next write retries"
            );
            return synced;
        }
        if inner.log.offset > self.options.log_limit
            && let Err(e) = self.auto_compact(inner)
        {
            tracing::warn!(error = %e, "automatic compaction of the change log failed");
        }
        synced
    }

    /// Compacts so that about a quarter of `log_limit` of the newest history stays.
    fn auto_compact(&self, inner: &mut Inner) -> Result<(), Error> {
        let keep_from = inner.log.offset.saturating_sub(self.options.log_limit / 4);
        let mut reader = LogReader::open(&paths::log(&self.root))?;
        let revision = inner.revision;
        let mut keep_after = revision;
        loop {
            let tail = reader.read_new(0, |at, record| {
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
        // The records about to go must be in the object files first.
        self.apply(inner)?;
        let log_path = paths::log(&self.root);
        let mut reader = LogReader::open(&log_path)?;
        let mut start = None;
        let mut dropped = std::collections::BTreeSet::new();
        let base = inner.log.base;
        loop {
            let tail = reader.read_new(base, |at, record| {
                if record.revision <= keep_after {
                    dropped.insert(record.key);
                } else {
                    start.get_or_insert(at);
                }
                Ok(())
            })?;
            if tail != Tail::More {
                break;
            }
        }
        if self.options.fsync {
            // The records about to go were the only durable copy of these objects' latest
            // state; make the object files durable before dropping them.
            self.sync_objects(&dropped)?;
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
        self.write_state(inner)?;
        tracing::debug!(store = %self.root.display(), keep_after, "compacted the change log");
        Ok(())
    }
}

impl Shared {
    /// `fsync`s the object files of `keys` (those that exist) and the directories holding
    /// them, so their contents and their renames and unlinks survive a power loss.
    fn sync_objects(&self, keys: &std::collections::BTreeSet<Key>) -> Result<(), Error> {
        let mut dirs = std::collections::BTreeSet::new();
        for key in keys {
            let path = paths::object(&self.root, key);
            match File::open(&path) {
                Ok(f) => f
                    .sync_all()
                    .map_err(io(format!("syncing {key} at {}", path.display())))?,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("opening {} to sync it", path.display()))(e)),
            }
            if let Some(dir) = path.parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
        for dir in dirs {
            match File::open(&dir) {
                Ok(d) => d
                    .sync_all()
                    .map_err(io(format!("syncing directory {}", dir.display())))?,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("opening {} to sync it", dir.display()))(e)),
            }
        }
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
        let log = LogReader::open(&paths::log(&self.shared.root))?;
        // Where in the log to start: every record before the handle's own position is at or
        // below its revision, so a watch from there or later (the usual list-then-watch) need
        // not read the log from its beginning.
        let start = self.shared.inner.lock().ok().and_then(|inner| {
            (inner.log.id == log.id && inner.revision <= after.0).then_some(inner.log.offset)
        });
        watch::start(
            self.shared.root.clone(),
            log,
            start,
            self.shared.options.poll_interval,
            kind,
            after,
        )
    }
}

#[cfg(test)]
mod tests;
