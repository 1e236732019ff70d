//! The directory datastore shared by real OS processes: concurrent writers seen by a watcher in
//! another process, compare-and-swap under contention, and writers killed with SIGKILL.
//!
//! Worker processes are this test binary run again (`current_exe() --exact worker`), told what
//! to do by environment variables; the `worker` test does nothing when they are absent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use api::{IPAMHandle, IPAMHandleSpec, Key, Kind, Node, NodeSpec, Resource};
use datastore::{Datastore, DirDatastore, DirOptions, Error, Revision, WatchEvent};

const ROLE: &str = "TABBY_DS_WORKER";
const DIR: &str = "TABBY_DS_DIR";
const ID: &str = "TABBY_DS_ID";
const COUNT: &str = "TABBY_DS_COUNT";
/// Overrides [`DirOptions::log_limit`] in a worker, to make it compact often.
const LOG_LIMIT: &str = "TABBY_DS_LOG_LIMIT";

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempDir(std::env::temp_dir().join(format!(
            "tabby-dir-processes-{tag}-{}-{n}",
            std::process::id()
        )))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options() -> DirOptions {
    let defaults = DirOptions::default();
    DirOptions {
        poll_interval: Duration::from_millis(2),
        log_limit: std::env::var(LOG_LIMIT)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(defaults.log_limit),
        ..defaults
    }
}

fn spawn(role: &str, dir: &Path, id: usize, count: usize) -> Child {
    spawn_with(role, dir, id, count, &[])
}

fn spawn_with(role: &str, dir: &Path, id: usize, count: usize, env: &[(&str, &str)]) -> Child {
    Command::new(std::env::current_exe().expect("the test binary's path"))
        .envs(env.iter().copied())
        .args(["--exact", "worker", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .env(ID, id.to_string())
        .env(COUNT, count.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawning a worker process")
}

fn wait_ok(mut child: Child, what: &str) {
    let status = child.wait().expect("waiting for a worker");
    assert!(status.success(), "{what} exited with {status}");
}

fn node(name: &str) -> Resource {
    Node::new(name, NodeSpec::default()).into()
}

fn annotated(mut r: Resource, key: &str, value: String) -> Resource {
    r.metadata_mut().annotations.insert(key.to_string(), value);
    r
}

fn rev(r: &Resource) -> Revision {
    Revision::of(r).unwrap().unwrap()
}

/// Entry point of every worker process.
#[test]
fn worker() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR).expect("worker dir"));
    let id: usize = std::env::var(ID).unwrap().parse().unwrap();
    let count: usize = std::env::var(COUNT).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ds = DirDatastore::open_with(&dir, options()).expect("worker opens the store");
        match role.as_str() {
            "writer" => writer(&ds, id, count).await,
            "counter" => counter(&ds, count).await,
            "crasher" => crasher(&ds, id).await,
            other => panic!("unknown worker role {other:?}"),
        }
    });
}

/// Creates node `w<id>`, updates it `count` times with `seq` = 0, 1, …, and deletes it.
async fn writer(ds: &DirDatastore, id: usize, count: usize) {
    let mut n = ds.create(node(&format!("w{id}"))).await.expect("create");
    for seq in 0..count {
        n = ds
            .update(annotated(n, "seq", seq.to_string()))
            .await
            .expect("update own node");
    }
    ds.delete(&n.key(), Some(rev(&n))).await.expect("delete");
}

/// Adds one to the shared counter `count` times, each a get + compare-and-swap retry loop.
async fn counter(ds: &DirDatastore, count: usize) {
    let key = Key::new(Kind::IPAMHandle, "counter");
    for _ in 0..count {
        loop {
            let Resource::IPAMHandle(mut h) = ds.get(&key).await.expect("get counter") else {
                panic!("counter is an IPAMHandle");
            };
            *h.spec.block.entry("count".into()).or_default() += 1;
            match ds.update(h.into()).await {
                Ok(_) => break,
                Err(Error::Conflict { .. }) => continue,
                Err(e) => panic!("incrementing: {e}"),
            }
        }
    }
}

/// Writes until killed: creates, updates (some with payloads spanning many pages, so a kill
/// can land inside one write) and deletes nodes.
async fn crasher(ds: &DirDatastore, id: usize) {
    for i in 0usize.. {
        let name = format!("c{id}-{i}");
        let big = "x".repeat(if i % 3 == 0 { 200_000 } else { 100 });
        let n = match ds.create(node(&name)).await {
            Ok(n) => n,
            Err(Error::AlreadyExists(_)) => continue,
            Err(e) => panic!("create {name}: {e}"),
        };
        let n = ds
            .update(annotated(n, "big", big))
            .await
            .expect("update with payload");
        if i % 2 == 0 {
            ds.delete(&n.key(), None).await.expect("delete");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_four_writer_processes_exactly_once_in_order() {
    const WRITERS: usize = 4;
    const UPDATES: usize = 60;
    let dir = TempDir::new("watch");
    let ds = DirDatastore::open_with(&dir.0, options()).unwrap();
    ds.create(node("before")).await.unwrap();
    let start = ds.list(Kind::Node).await.unwrap().revision;
    let mut watch = ds.watch(Some(Kind::Node), start).await.unwrap();
    let children: Vec<Child> = (0..WRITERS)
        .map(|i| spawn("writer", &dir.0, i, UPDATES))
        .collect();
    // Each writer makes 1 create + UPDATES updates + 1 delete.
    let total = WRITERS * (UPDATES + 2);
    let mut next_rev = start.0 + 1;
    let mut seen = [0usize; WRITERS];
    for _ in 0..total {
        let e = datastore::conformance::next_event(&mut watch).await;
        assert_eq!(
            e.revision(),
            Revision(next_rev),
            "gapless, in revision order"
        );
        next_rev += 1;
        let name = e.resource().name().to_string();
        let i: usize = name[1..].parse().expect("writer node");
        let k = seen[i];
        match &e {
            WatchEvent::Added { .. } => assert_eq!(k, 0, "{name} created first"),
            WatchEvent::Modified { resource, .. } => assert_eq!(
                resource.metadata().annotations["seq"],
                (k - 1).to_string(),
                "{name}'s updates in its order"
            ),
            WatchEvent::Deleted { resource, .. } => {
                assert_eq!(k, UPDATES + 1, "{name} deleted last");
                assert_eq!(
                    resource.metadata().annotations["seq"],
                    (UPDATES - 1).to_string()
                );
            }
        }
        seen[i] += 1;
    }
    for child in children {
        wait_ok(child, "writer");
    }
    datastore::conformance::expect_quiet(&mut watch).await;
    assert_eq!(seen, [UPDATES + 2; WRITERS]);
    assert_eq!(ds.revision().unwrap(), Revision(next_rev - 1));
    assert_eq!(ds.list(Kind::Node).await.unwrap().items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_counter_is_exact_under_four_processes() {
    const PROCESSES: usize = 4;
    const INCREMENTS: usize = 100;
    let dir = TempDir::new("cas");
    let ds = DirDatastore::open_with(&dir.0, options()).unwrap();
    let counter = IPAMHandle::new(
        "counter",
        IPAMHandleSpec {
            handle_id: "counter".into(),
            ..IPAMHandleSpec::default()
        },
    );
    let created = ds.create(counter.into()).await.unwrap();
    let children: Vec<Child> = (0..PROCESSES)
        .map(|i| spawn("counter", &dir.0, i, INCREMENTS))
        .collect();
    for child in children {
        wait_ok(child, "counter");
    }
    let Resource::IPAMHandle(h) = ds
        .get(&Key::new(Kind::IPAMHandle, "counter"))
        .await
        .unwrap()
    else {
        panic!("counter is an IPAMHandle");
    };
    assert_eq!(h.spec.block["count"], (PROCESSES * INCREMENTS) as u32);
    // Exactly one successful write per increment.
    assert_eq!(
        ds.revision().unwrap(),
        Revision(rev(&created).0 + (PROCESSES * INCREMENTS) as u64)
    );
}

/// Folds the whole history (a watch from 0) into the state it describes.
async fn replayed_state(ds: &DirDatastore, upto: Revision) -> BTreeMap<Key, Resource> {
    let mut state = BTreeMap::new();
    if upto == Revision(0) {
        return state;
    }
    let mut watch = ds.watch(None, Revision(0)).await.unwrap();
    loop {
        let e = datastore::conformance::next_event(&mut watch).await;
        match &e {
            WatchEvent::Added { resource, .. } | WatchEvent::Modified { resource, .. } => {
                state.insert(resource.key(), resource.clone());
            }
            WatchEvent::Deleted { resource, .. } => {
                state.remove(&resource.key());
            }
        }
        if e.revision() == upto {
            return state;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_killed_mid_stream_leave_a_consistent_store() {
    const ROUNDS: usize = 6;
    let dir = TempDir::new("crash");
    let mut last = Revision(0);
    for round in 0..ROUNDS {
        // Two writers at once, so one may die while the other waits for the lock.
        let children: Vec<Child> = (0..2).map(|i| spawn("crasher", &dir.0, i, 0)).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Any handle opened here repairs what an earlier round left.
            let ds = DirDatastore::open_with(&dir.0, options()).unwrap();
            if ds.revision().unwrap().0 > last.0 + 20 * (round as u64 + 1) {
                break;
            }
            assert!(Instant::now() < deadline, "writers made no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(3 + 7 * round as u64)).await;
        for mut child in children {
            child.kill().expect("SIGKILL a writer");
            child.wait().unwrap();
        }
        let ds = DirDatastore::open_with(&dir.0, options()).expect("reopen after SIGKILL");
        let revision = ds.revision().unwrap();
        assert!(revision > last, "revision only grows");
        last = revision;
        let mut listed = BTreeMap::new();
        for kind in Kind::ALL {
            let listing = ds.list(kind).await.expect("list after SIGKILL");
            assert_eq!(listing.revision, revision);
            for item in listing.items {
                assert!(rev(&item) <= revision, "no object is ahead of the revision");
                listed.insert(item.key(), item);
            }
        }
        let replayed = replayed_state(&ds, revision).await;
        assert_eq!(
            listed, replayed,
            "round {round}: objects are exactly what the change log says"
        );
        // And once the log is applied, the object files alone say the same.
        assert_eq!(ds.checkpoint().unwrap(), revision);
        let fresh = DirDatastore::open_with(&dir.0, options()).unwrap();
        let mut from_files = BTreeMap::new();
        for kind in Kind::ALL {
            for item in fresh.list(kind).await.unwrap().items {
                from_files.insert(item.key(), item);
            }
        }
        assert_eq!(from_files, replayed, "round {round}: applied object files");
    }
}

/// Every object of every kind, as a handle on `dir` sees them.
async fn everything(ds: &DirDatastore) -> BTreeMap<Key, Resource> {
    let mut all = BTreeMap::new();
    for kind in Kind::ALL {
        for item in ds.list(kind).await.expect("list").items {
            all.insert(item.key(), item);
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_killed_while_compacting_leave_a_readable_store() {
    const ROUNDS: usize = 4;
    let dir = TempDir::new("crash-compact");
    // 200 kB payloads against a 1 MB limit: a compaction every few writes.
    let env = [(LOG_LIMIT, "1000000")];
    let mut last = Revision(0);
    for round in 0..ROUNDS {
        let children: Vec<Child> = (0..2)
            .map(|i| spawn_with("crasher", &dir.0, i, 0, &env))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ds = DirDatastore::open_with(&dir.0, options()).unwrap();
            if ds.oldest().unwrap() > last && ds.revision().unwrap().0 > last.0 + 30 {
                break;
            }
            assert!(Instant::now() < deadline, "writers made no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(2 + 5 * round as u64)).await;
        for mut child in children {
            child.kill().expect("SIGKILL a writer");
            child.wait().unwrap();
        }
        let ds = DirDatastore::open_with(&dir.0, options()).expect("reopen after SIGKILL");
        let revision = ds.revision().unwrap();
        assert!(revision > last, "revision only grows");
        assert!(ds.oldest().unwrap() <= revision);
        last = revision;
        let seen = everything(&ds).await;
        assert!(seen.values().all(|r| rev(r) <= revision));
        // The history that is left agrees with the objects on every key it mentions.
        let oldest = ds.oldest().unwrap();
        let mut watch = ds.watch(None, oldest).await.unwrap();
        let mut last_word = BTreeMap::new();
        for expected in oldest.0 + 1..=revision.0 {
            let e = datastore::conformance::next_event(&mut watch).await;
            assert_eq!(e.revision(), Revision(expected), "gapless history");
            let state = match &e {
                WatchEvent::Deleted { .. } => None,
                WatchEvent::Added { resource, .. } | WatchEvent::Modified { resource, .. } => {
                    Some(resource.clone())
                }
            };
            last_word.insert(e.resource().key(), state);
        }
        for (key, state) in &last_word {
            assert_eq!(seen.get(key), state.as_ref(), "round {round}: {key}");
        }
        assert_eq!(ds.checkpoint().unwrap(), revision);
        let fresh = DirDatastore::open_with(&dir.0, options()).unwrap();
        assert_eq!(
            everything(&fresh).await,
            seen,
            "round {round}: applied object files"
        );
    }
}
