//! Directory-backend tests within one process: the conformance suite, persistence across
//! handles, repair after simulated crashes, compaction. Tests across processes are in
//! `datastore/tests/dir_processes.rs`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::conformance::Subject;

/// A directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "tabby-dir-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Fresh {
    store: DirDatastore,
    _dir: TempDir,
}

impl Fresh {
    fn new() -> Fresh {
        let dir = TempDir::new("conformance");
        let options = DirOptions {
            poll_interval: Duration::from_millis(2),
            ..DirOptions::default()
        };
        Fresh {
            store: DirDatastore::open_with(dir.path(), options).expect("open a fresh store"),
            _dir: dir,
        }
    }
}

impl Subject for Fresh {
    fn store(&self) -> &dyn Datastore {
        &self.store
    }

    fn compact(&self, keep_after: Revision) -> Result<(), Error> {
        self.store.compact(keep_after).map(drop)
    }
}

impl Fresh {
    /// A store that applies the log to the object files after every write.
    fn applying_every_write() -> Fresh {
        let dir = TempDir::new("conformance-apply");
        let options = DirOptions {
            poll_interval: Duration::from_millis(2),
            apply_batch: 0,
            ..DirOptions::default()
        };
        Fresh {
            store: DirDatastore::open_with(dir.path(), options).expect("open a fresh store"),
            _dir: dir,
        }
    }
}

mod conformance {
    crate::conformance_tests!(super::Fresh::new());
}

mod conformance_applying_every_write {
    crate::conformance_tests!(super::Fresh::applying_every_write());
}

fn node(name: &str) -> Resource {
    api::Node::new(name, api::NodeSpec::default()).into()
}

fn annotated(mut r: Resource, key: &str, value: &str) -> Resource {
    r.metadata_mut()
        .annotations
        .insert(key.to_string(), value.to_string());
    r
}

fn fast() -> DirOptions {
    DirOptions {
        poll_interval: Duration::from_millis(2),
        ..DirOptions::default()
    }
}

fn rev(r: &Resource) -> u64 {
    Revision::of(r).unwrap().unwrap().0
}

/// Appends raw bytes to the log, as a writer that dies at the right moment would leave them.
fn append_to_log(root: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = File::options().append(true).open(paths::log(root)).unwrap();
    f.write_all(bytes).unwrap();
}

fn record(revision: u64, op: Op, resource: &Resource) -> Record {
    Record {
        revision,
        op,
        key: resource.key(),
        json: serde_json::to_vec(resource).unwrap(),
    }
}

#[tokio::test]
async fn handles_see_each_others_writes() {
    let dir = TempDir::new("handles");
    let a = DirDatastore::open_with(dir.path(), fast()).unwrap();
    let created = a.create(node("n1")).await.unwrap();
    let b = DirDatastore::open_with(dir.path(), fast()).unwrap();
    assert_eq!(b.get(&created.key()).await.unwrap(), created);
    assert_eq!(
        b.list(Kind::Node).await.unwrap().items,
        vec![created.clone()]
    );
    // a has n1 cached; b's update must reach it through the log, not a stale cache.
    let updated = b
        .update(annotated(created.clone(), "by", "b"))
        .await
        .unwrap();
    assert_eq!(a.get(&created.key()).await.unwrap(), updated);
    assert_eq!(
        a.list(Kind::Node).await.unwrap().items,
        vec![updated.clone()]
    );
    assert!(matches!(
        a.update(annotated(created.clone(), "by", "a")).await,
        Err(Error::Conflict { .. })
    ));
    b.delete(&created.key(), None).await.unwrap();
    assert!(matches!(
        a.get(&created.key()).await,
        Err(Error::NotFound(_))
    ));
    assert!(a.list(Kind::Node).await.unwrap().items.is_empty());
    drop((a, b));
    let c = DirDatastore::open(dir.path()).unwrap();
    assert_eq!(c.revision().unwrap(), Revision(rev(&updated) + 1));
}

#[tokio::test]
async fn a_committed_record_a_writer_did_not_apply_is_replayed() {
    let dir = TempDir::new("replay");
    let ds = DirDatastore::open_with(dir.path(), fast()).unwrap();
    let n1 = ds.create(node("n1")).await.unwrap();
    let n2 = ds.create(node("n2")).await.unwrap();
    drop(ds);
    // A writer appended these and was killed before touching the objects or the state.
    let n1b = annotated(n1.clone(), "v", "3");
    let mut n1b = n1b;
    n1b.metadata_mut().resource_version = Some("3".into());
    let mut n3 = node("n3");
    n3.metadata_mut().resource_version = Some("4".into());
    let mut frames = record(3, Op::Modified, &n1b).encode();
    frames.extend(record(4, Op::Added, &n3).encode());
    frames.extend(record(5, Op::Deleted, &n2).encode());
    append_to_log(dir.path(), &frames);

    // A reader takes the log's word over the object files.
    let reader = DirDatastore::open_with(dir.path(), fast()).unwrap();
    assert_eq!(reader.revision().unwrap(), Revision(5));
    let listed = reader.list(Kind::Node).await.unwrap().items;
    assert_eq!(listed, vec![n1b.clone(), n3.clone()]);
    assert!(matches!(
        reader.get(&n2.key()).await,
        Err(Error::NotFound(_))
    ));
    // Applying the log brings the files there too.
    assert_eq!(reader.checkpoint().unwrap(), Revision(5));
    let on_disk: Resource =
        serde_json::from_slice(&std::fs::read(paths::object(dir.path(), &n1.key())).unwrap())
            .unwrap();
    assert_eq!(on_disk, n1b);
    assert!(!paths::object(dir.path(), &n2.key()).exists());
    let applied = state::read(&File::open(paths::state(dir.path())).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(applied.revision, 5);
    let next = reader.create(node("n4")).await.unwrap();
    assert_eq!(rev(&next), 6);
}

#[tokio::test]
async fn a_torn_record_is_ignored_and_then_cut_off() {
    let dir = TempDir::new("torn");
    let ds = DirDatastore::open_with(dir.path(), fast()).unwrap();
    let n1 = ds.create(node("n1")).await.unwrap();
    let len_before = std::fs::metadata(paths::log(dir.path())).unwrap().len();
    let frame = record(2, Op::Added, &node("ghost")).encode();
    append_to_log(dir.path(), &frame[..frame.len() / 2]);

    let other = DirDatastore::open_with(dir.path(), fast()).unwrap();
    assert_eq!(other.revision().unwrap(), Revision(1));
    assert!(matches!(
        other.get(&Key::new(Kind::Node, "ghost")).await,
        Err(Error::NotFound(_))
    ));
    let mut watch = other.watch(None, Revision(1)).await.unwrap();
    crate::conformance::expect_quiet(&mut watch).await;

    let n2 = other.create(node("n2")).await.unwrap();
    assert_eq!(rev(&n2), 2);
    let len_after = std::fs::metadata(paths::log(dir.path())).unwrap().len();
    assert_eq!(
        len_after,
        len_before + record(2, Op::Added, &n2).encode().len() as u64
    );
    match crate::conformance::next_event(&mut watch).await {
        crate::WatchEvent::Added { resource, .. } => assert_eq!(resource, n2),
        other => panic!("expected n2's creation, got {other:?}"),
    }
    assert_eq!(ds.list(Kind::Node).await.unwrap().items, vec![n1, n2]);
}

#[tokio::test]
async fn damage_in_the_middle_of_the_log_is_reported() {
    let dir = TempDir::new("corrupt");
    let ds = DirDatastore::open_with(dir.path(), fast()).unwrap();
    ds.create(node("n1")).await.unwrap();
    ds.create(node("n2")).await.unwrap();
    let log = std::fs::read(paths::log(dir.path())).unwrap();
    let mut damaged = log.clone();
    damaged[HEADER_LEN as usize + 20] ^= 0x55;
    std::fs::write(paths::log(dir.path()), &damaged).unwrap();
    // The damaged record is not applied yet: the store cannot be read.
    assert!(matches!(
        DirDatastore::open(dir.path()),
        Err(Error::Corrupt { .. })
    ));
    std::fs::write(paths::log(dir.path()), &log).unwrap();
    ds.checkpoint().unwrap();
    drop(ds);
    std::fs::write(paths::log(dir.path()), &damaged).unwrap();
    // Now state points past the damage, so a fresh handle does not trip over it...
    let ds = DirDatastore::open(dir.path()).unwrap();
    // ...but reading the history does.
    let mut watch = ds.watch(None, Revision(0)).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Some(Err(Error::Corrupt { .. }))) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_store_from_an_earlier_boot_is_reconciled_whole() {
    let dir = TempDir::new("reboot");
    let ds = DirDatastore::open_with(dir.path(), fast()).unwrap();
    let n1 = ds.create(node("n1")).await.unwrap();
    let n2 = ds.create(node("n2")).await.unwrap();
    let n1b = ds.update(annotated(n1.clone(), "k", "v")).await.unwrap();
    ds.delete(&n2.key(), None).await.unwrap();
    drop(ds);
    // After a power loss the renames may have reached the disk in any order: n1 is back at
    // its first version and the deleted n2 is still there.
    std::fs::write(
        paths::object(dir.path(), &n1.key()),
        serde_json::to_vec(&n1).unwrap(),
    )
    .unwrap();
    std::fs::write(
        paths::object(dir.path(), &n2.key()),
        serde_json::to_vec(&n2).unwrap(),
    )
    .unwrap();
    let state_file = File::options()
        .read(true)
        .write(true)
        .open(paths::state(dir.path()))
        .unwrap();
    let mut applied = state::read(&state_file).unwrap().unwrap();
    applied.boot_id = *b"00000000-0000-0000-0000-000000000000";
    state::write(&state_file, applied).unwrap();

    let ds = DirDatastore::open_with(dir.path(), fast()).unwrap();
    assert_eq!(ds.list(Kind::Node).await.unwrap().items, vec![n1b]);
    assert_eq!(ds.revision().unwrap(), Revision(4));
}

#[tokio::test]
async fn objects_ahead_of_the_log_move_the_revision_past_them() {
    let dir = TempDir::new("ahead");
    let ds = DirDatastore::open_with(dir.path(), fast()).unwrap();
    ds.create(node("n1")).await.unwrap();
    drop(ds);
    // The log lost its tail in a power loss; an object written at revision 1000 survived.
    let mut survivor = node("n9");
    survivor.metadata_mut().resource_version = Some("1000".into());
    std::fs::write(
        paths::object(dir.path(), &survivor.key()),
        serde_json::to_vec(&survivor).unwrap(),
    )
    .unwrap();
    std::fs::write(paths::state(dir.path()), b"garbage").unwrap();

    let ds = DirDatastore::open_with(dir.path(), fast()).unwrap();
    assert_eq!(ds.revision().unwrap(), Revision(1000));
    assert_eq!(ds.get(&survivor.key()).await.unwrap(), survivor);
    assert!(matches!(
        ds.watch(None, Revision(1)).await,
        Err(Error::TooOld { .. })
    ));
    let next = ds.create(node("n10")).await.unwrap();
    assert_eq!(rev(&next), 1001);
}

#[tokio::test]
async fn a_removed_log_restarts_above_every_object() {
    let dir = TempDir::new("nolog");
    let ds = DirDatastore::open_with(dir.path(), fast()).unwrap();
    for i in 0..3 {
        ds.create(node(&format!("n{i}"))).await.unwrap();
    }
    // The log is part of the store until it is applied.
    ds.checkpoint().unwrap();
    drop(ds);
    std::fs::remove_file(paths::log(dir.path())).unwrap();
    let ds = DirDatastore::open_with(dir.path(), fast()).unwrap();
    assert_eq!(ds.revision().unwrap(), Revision(3));
    assert_eq!(ds.list(Kind::Node).await.unwrap().items.len(), 3);
    assert_eq!(rev(&ds.create(node("n3")).await.unwrap()), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_compacts_itself_and_watches_follow_or_are_told() {
    let dir = TempDir::new("autocompact");
    let options = DirOptions {
        log_limit: 16 << 10,
        ..fast()
    };
    let ds = DirDatastore::open_with(dir.path(), options.clone()).unwrap();
    let mut early = ds.watch(None, Revision(0)).await.unwrap();
    let mut n = ds.create(node("n")).await.unwrap();
    for i in 0..400 {
        n = ds.update(annotated(n, "i", &i.to_string())).await.unwrap();
    }
    let log_len = std::fs::metadata(paths::log(dir.path())).unwrap().len();
    assert!(log_len <= options.log_limit, "log is {log_len} bytes");
    let oldest = ds.oldest().unwrap();
    assert!(oldest > Revision(0));
    assert!(matches!(
        ds.watch(None, Revision(0)).await,
        Err(Error::TooOld { .. })
    ));
    // The early watch has fallen behind several compactions: it gets every event in order
    // or TooOld, never a gap.
    let mut seen = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), early.next()).await {
            Ok(Some(Ok(e))) => {
                assert_eq!(e.revision(), Revision(seen + 1));
                seen += 1;
                if seen == rev(&n) {
                    break;
                }
            }
            Ok(Some(Err(Error::TooOld { .. }))) => break,
            other => panic!("early watch: unexpected {other:?}"),
        }
    }
    // A fresh handle reads the compacted store.
    let fresh = DirDatastore::open(dir.path()).unwrap();
    assert_eq!(fresh.get(&n.key()).await.unwrap(), n);
    let mut recent = fresh.watch(None, Revision(rev(&n) - 1)).await.unwrap();
    assert_eq!(
        crate::conformance::next_event(&mut recent).await.revision(),
        Revision(rev(&n))
    );
}

#[tokio::test]
async fn a_handle_left_behind_by_compaction_rereads_the_objects() {
    let dir = TempDir::new("behind");
    let a = DirDatastore::open_with(dir.path(), fast()).unwrap();
    let b = DirDatastore::open_with(dir.path(), fast()).unwrap();
    let n1 = a.create(node("n1")).await.unwrap();
    assert_eq!(b.get(&n1.key()).await.unwrap(), n1);
    let n1b = a.update(annotated(n1.clone(), "k", "v")).await.unwrap();
    let gone = a.create(node("gone")).await.unwrap();
    a.delete(&gone.key(), None).await.unwrap();
    a.compact(a.revision().unwrap()).unwrap();
    // b last synced at revision 1; the records it missed are gone from the log.
    assert_eq!(b.get(&n1.key()).await.unwrap(), n1b);
    assert_eq!(b.list(Kind::Node).await.unwrap().items, vec![n1b]);
    assert_eq!(b.revision().unwrap(), a.revision().unwrap());
}

#[tokio::test]
async fn unusual_names_round_trip() {
    let dir = TempDir::new("names");
    let ds = DirDatastore::open_with(dir.path(), fast()).unwrap();
    let names = ["..", ".hidden", "a/b", "ünïcødé", &"long".repeat(80), "%41"];
    for name in names {
        ds.create(node(name)).await.unwrap();
    }
    let fresh = DirDatastore::open(dir.path()).unwrap();
    let mut listed: Vec<String> = fresh
        .list(Kind::Node)
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.name().to_string())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    for name in names {
        fresh.get(&Key::new(Kind::Node, name)).await.unwrap();
    }
    assert!(matches!(
        ds.create(node(&"x".repeat(5000))).await,
        Err(Error::InvalidKey { .. })
    ));
}

#[tokio::test]
async fn a_record_larger_than_a_read_chunk_is_delivered() {
    let dir = TempDir::new("large");
    let ds = DirDatastore::open_with(dir.path(), fast()).unwrap();
    let mut watch = ds.watch(None, Revision(0)).await.unwrap();
    let big = annotated(node("big"), "payload", &"z".repeat(5 << 20));
    let stored = ds.create(big).await.unwrap();
    let small = ds.create(node("small")).await.unwrap();
    assert_eq!(
        crate::conformance::next_event(&mut watch).await.resource(),
        &stored
    );
    assert_eq!(
        crate::conformance::next_event(&mut watch).await.resource(),
        &small
    );
    let fresh = DirDatastore::open(dir.path()).unwrap();
    assert_eq!(fresh.get(&stored.key()).await.unwrap(), stored);
}

#[tokio::test]
async fn fsync_mode_writes_compacts_and_reads_back() {
    let dir = TempDir::new("fsync");
    let options = DirOptions {
        fsync: true,
        ..fast()
    };
    let ds = DirDatastore::open_with(dir.path(), options.clone()).unwrap();
    let mut n = ds.create(node("n1")).await.unwrap();
    let w = ds
        .create({
            let mut w = api::WorkloadEndpoint::new("w", Default::default());
            w.metadata.namespace = Some("ns".into());
            w.into()
        })
        .await
        .unwrap();
    for i in 0..3 {
        n = ds.update(annotated(n, "i", &i.to_string())).await.unwrap();
    }
    ds.delete(&w.key(), None).await.unwrap();
    assert_eq!(ds.compact(ds.revision().unwrap()).unwrap(), Revision(6));
    let fresh = DirDatastore::open_with(dir.path(), options).unwrap();
    assert_eq!(fresh.list(Kind::Node).await.unwrap().items, vec![n]);
    assert!(
        fresh
            .list(Kind::WorkloadEndpoint)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn writes_reach_the_object_files_in_batches() {
    let dir = TempDir::new("batches");
    let options = DirOptions {
        apply_batch: 4 << 10,
        ..fast()
    };
    let ds = DirDatastore::open_with(dir.path(), options.clone()).unwrap();
    let n0 = ds.create(node("n0")).await.unwrap();
    assert!(
        !paths::object(dir.path(), &n0.key()).exists(),
        "a single small write stays in the log"
    );
    // Another handle (another process, as far as the store can tell) sees it all the same.
    let other = DirDatastore::open_with(dir.path(), options).unwrap();
    assert_eq!(other.get(&n0.key()).await.unwrap(), n0);
    let mut hot = n0;
    for i in 0..100 {
        hot = ds
            .update(annotated(hot, "i", &i.to_string()))
            .await
            .unwrap();
    }
    let on_disk: Resource =
        serde_json::from_slice(&std::fs::read(paths::object(dir.path(), &hot.key())).unwrap())
            .unwrap();
    assert!(
        rev(&on_disk) > 1 && rev(&on_disk) <= rev(&hot),
        "applied in batches as the log grew"
    );
    assert_eq!(other.get(&hot.key()).await.unwrap(), hot);
    assert_eq!(ds.checkpoint().unwrap(), Revision(rev(&hot)));
    let on_disk: Resource =
        serde_json::from_slice(&std::fs::read(paths::object(dir.path(), &hot.key())).unwrap())
            .unwrap();
    assert_eq!(on_disk, hot);
}

/// Copies a store directory (files and subdirectories) to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

async fn nodes(ds: &DirDatastore) -> Vec<Resource> {
    ds.list(Kind::Node).await.unwrap().items
}

#[tokio::test]
async fn a_kill_at_any_byte_of_the_last_record_leaves_the_previous_state() {
    let dir = TempDir::new("every-byte");
    let ds = DirDatastore::open_with(dir.path(), fast()).unwrap();
    let n1 = ds.create(node("n1")).await.unwrap();
    let n2 = ds.create(node("n2")).await.unwrap();
    let before = nodes(&ds).await;
    let start = std::fs::metadata(paths::log(dir.path())).unwrap().len();
    let n1b = ds.update(annotated(n1, "last", "write")).await.unwrap();
    let after = nodes(&ds).await;
    assert_eq!(after, vec![n1b, n2]);
    let full = std::fs::read(paths::log(dir.path())).unwrap();
    drop(ds);
    let scratch = TempDir::new("every-byte-copy");
    // Every byte of the frame and key, then every 16th of the JSON, and its last bytes: a
    // directory copy per cut is slow on a busy disk.
    let end = full.len() as u64;
    let cuts =
        (start..=end).filter(|c| c - start < 40 || (c - start).is_multiple_of(16) || end - c < 3);
    for cut in cuts {
        let _ = std::fs::remove_dir_all(scratch.path());
        copy_dir(dir.path(), scratch.path());
        std::fs::write(paths::log(scratch.path()), &full[..cut as usize]).unwrap();
        let ds = DirDatastore::open_with(scratch.path(), fast()).unwrap();
        let complete = cut == full.len() as u64;
        assert_eq!(
            nodes(&ds).await,
            if complete {
                after.clone()
            } else {
                before.clone()
            },
            "log cut at {cut} of {}",
            full.len()
        );
        assert_eq!(
            ds.revision().unwrap(),
            Revision(if complete { 3 } else { 2 })
        );
        // The next write cuts the torn record off and takes the next revision.
        let n3 = ds.create(node("n3")).await.unwrap();
        assert_eq!(rev(&n3), if complete { 4 } else { 3 });
        let reopened = DirDatastore::open_with(scratch.path(), fast()).unwrap();
        assert_eq!(reopened.get(&n3.key()).await.unwrap(), n3);
    }
}

#[tokio::test]
async fn an_application_cut_short_is_finished_by_the_next_one() {
    let dir = TempDir::new("half-applied");
    let options = DirOptions {
        apply_batch: 1 << 20,
        ..fast()
    };
    let ds = DirDatastore::open_with(dir.path(), options.clone()).unwrap();
    let mut all = Vec::new();
    for i in 0..6 {
        all.push(ds.create(node(&format!("n{i}"))).await.unwrap());
    }
    let gone = all.remove(0);
    ds.delete(&gone.key(), None).await.unwrap();
    all[0] = ds
        .update(annotated(all[0].clone(), "k", "v"))
        .await
        .unwrap();
    drop(ds);
    // The applying writer got as far as two of the files before it was killed.
    for r in &all[..2] {
        std::fs::write(
            paths::object(dir.path(), &r.key()),
            serde_json::to_vec(r).unwrap(),
        )
        .unwrap();
    }
    let ds = DirDatastore::open_with(dir.path(), options).unwrap();
    assert_eq!(nodes(&ds).await, all);
    ds.checkpoint().unwrap();
    let fresh = DirDatastore::open(dir.path()).unwrap();
    assert_eq!(nodes(&fresh).await, all);
    assert!(!paths::object(dir.path(), &gone.key()).exists());
}

#[tokio::test]
async fn a_compaction_cut_short_leaves_a_readable_store() {
    let dir = TempDir::new("compaction-crash");
    let ds = DirDatastore::open_with(dir.path(), fast()).unwrap();
    let mut n = ds.create(node("n")).await.unwrap();
    for i in 0..5 {
        n = ds.update(annotated(n, "i", &i.to_string())).await.unwrap();
    }
    let state_before = std::fs::read(paths::state(dir.path())).unwrap();
    // Killed after writing the new log but before renaming it: a stray tmp/log.
    std::fs::write(paths::tmp(dir.path()).join("log"), b"half a log").unwrap();
    let other = DirDatastore::open_with(dir.path(), fast()).unwrap();
    assert_eq!(other.get(&n.key()).await.unwrap(), n);
    // Killed after the rename but before recording it in state.
    ds.compact(Revision(4)).unwrap();
    std::fs::write(paths::state(dir.path()), &state_before).unwrap();
    let fresh = DirDatastore::open_with(dir.path(), fast()).unwrap();
    assert_eq!(fresh.revision().unwrap(), Revision(6));
    assert_eq!(fresh.get(&n.key()).await.unwrap(), n);
    assert_eq!(fresh.oldest().unwrap(), Revision(4));
    let n2 = fresh.create(node("n2")).await.unwrap();
    assert_eq!(rev(&n2), 7);
    assert_eq!(other.list(Kind::Node).await.unwrap().items, vec![n, n2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_on_shared_and_separate_handles_increment_exactly() {
    const TASKS: usize = 8;
    const INCREMENTS: usize = 40;
    let dir = TempDir::new("tasks");
    let first = DirDatastore::open_with(dir.path(), fast()).unwrap();
    let counter = first.create(node("counter")).await.unwrap();
    let second = DirDatastore::open_with(dir.path(), fast()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        // Half the tasks share one handle (its mutex), half another (its own flock).
        let ds = if t % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let key = counter.key();
        tasks.push(tokio::spawn(async move {
            for _ in 0..INCREMENTS {
                loop {
                    let current = ds.get(&key).await.unwrap();
                    let n: usize = current
                        .metadata()
                        .annotations
                        .get("n")
                        .map_or(0, |v| v.parse().unwrap());
                    match ds
                        .update(annotated(current, "n", &(n + 1).to_string()))
                        .await
                    {
                        Ok(_) => break,
                        Err(Error::Conflict { .. }) => tokio::task::yield_now().await,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let last = first.get(&counter.key()).await.unwrap();
    assert_eq!(
        last.metadata().annotations["n"],
        (TASKS * INCREMENTS).to_string()
    );
    assert_eq!(rev(&last), 1 + (TASKS * INCREMENTS) as u64);
}
