//! The behaviour every [`Datastore`] backend must have, as a suite any backend can run.
//!
//! Each check is a plain `async fn` over a fresh, empty store, so a backend's own tests can
//! call the ones they want; [`crate::conformance_tests!`] turns the whole suite into one
//! `#[tokio::test]` per check:
//!
//! ```
//! use datastore::conformance::Subject;
//! use datastore::{Datastore, Error, MemoryDatastore, Revision};
//!
//! struct Fresh(MemoryDatastore);
//!
//! impl Subject for Fresh {
//!     fn store(&self) -> &dyn Datastore {
//!         &self.0
//!     }
//!     fn compact(&self, keep_after: Revision) -> Result<(), Error> {
//!         self.0.compact(keep_after);
//!         Ok(())
//!     }
//! }
//!
//! mod conformance {
//!     datastore::conformance_tests!(super::Fresh(datastore::MemoryDatastore::new()));
//! }
//! ```
//!
//! The checks panic with a message saying what was expected; they wait at most
//! [`EVENT_TIMEOUT`] for a watch event, so a poll-based backend passes as well as a push-based
//! one.

use std::time::Duration;

use api::{IPPool, IPPoolSpec, Key, Kind, Node, NodeSpec, Resource, WorkloadEndpoint};

use crate::{Datastore, Error, Revision, Watch, WatchEvent};

/// How long a check waits for a watch event that must come.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a check waits to be sure a watch event does not come.
pub const QUIET_PERIOD: Duration = Duration::from_millis(200);

/// A backend under test: a fresh store, and how to drop its history (every backend that keeps
/// history has a way to compact it; the suite needs one to check [`Error::TooOld`]).
pub trait Subject: Send + Sync {
    fn store(&self) -> &dyn Datastore;
    fn compact(&self, keep_after: Revision) -> Result<(), Error>;
}

/// Generates one `#[tokio::test]` per conformance check, each on a fresh subject made by
/// evaluating `$subject` (an expression whose value implements [`Subject`]). The calling crate
/// needs `tokio` with the `macros` and `rt` features.
#[macro_export]
macro_rules! conformance_tests {
    ($subject:expr) => {
        $crate::conformance_tests!(@cases $subject;
            create_get_and_already_exists,
            missing_keys_are_not_found,
            update_is_compare_and_swap,
            unconditional_update,
            delete_is_compare_and_swap,
            revisions_increase_by_one_per_write,
            list_filters_by_kind_and_reports_revision,
            namespaced_keys_are_distinct,
            watch_from_list_revision_sees_exactly_later_changes,
            watch_filters_by_kind,
            watch_delivers_many_writes_in_order_exactly_once,
            delete_event_carries_last_state,
        );
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn too_old_after_compaction() {
            let subject = $subject;
            $crate::conformance::too_old_after_compaction(&subject).await;
        }
    };
    (@cases $subject:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let subject = $subject;
                $crate::conformance::$case($crate::conformance::Subject::store(&subject)).await;
            }
        )*
    };
}

fn pool(name: &str) -> Resource {
    IPPool::new(name, IPPoolSpec::default()).into()
}

fn node(name: &str) -> Resource {
    Node::new(name, NodeSpec::default()).into()
}

fn wep(namespace: &str, name: &str) -> Resource {
    let mut w = WorkloadEndpoint::new(name, Default::default());
    w.metadata.namespace = Some(namespace.to_string());
    w.into()
}

/// `r` with an annotation set, to make a visible change.
fn annotated(mut r: Resource, key: &str, value: &str) -> Resource {
    r.metadata_mut()
        .annotations
        .insert(key.to_string(), value.to_string());
    r
}

fn rev(r: &Resource) -> Revision {
    Revision::of(r)
        .expect("a valid resourceVersion")
        .unwrap_or_else(|| panic!("{} came back without a resourceVersion", r.key()))
}

/// `r` without what the store assigns: the resourceVersion, and the uid and creation time that
/// the Kubernetes API server adds.
fn without_version(mut r: Resource) -> Resource {
    let meta = r.metadata_mut();
    meta.resource_version = None;
    meta.uid = None;
    meta.creation_timestamp = None;
    meta.generation = None;
    r
}

/// The same state apart from the resourceVersion: a Deleted event's resource is the last state,
/// and its resourceVersion is either that state's (the local backends) or the deletion's (the
/// Kubernetes API server sets it so).
fn same_state(a: &Resource, b: &Resource) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    a.metadata_mut().resource_version = None;
    b.metadata_mut().resource_version = None;
    a == b
}

/// The next event, failing the check if none comes within [`EVENT_TIMEOUT`].
pub async fn next_event(watch: &mut Watch) -> WatchEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended while an event was expected"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

/// Fails the check if an event arrives within [`QUIET_PERIOD`].
pub async fn expect_quiet(watch: &mut Watch) {
    if let Ok(Some(e)) = tokio::time::timeout(QUIET_PERIOD, watch.next()).await {
        panic!("expected no more watch events, got {e:?}");
    }
}

pub async fn create_get_and_already_exists(ds: &dyn Datastore) {
    let created = ds.create(pool("p1")).await.expect("create p1");
    assert!(rev(&created) > Revision(0), "create sets resourceVersion");
    let got = ds.get(&Key::new(Kind::IPPool, "p1")).await.expect("get p1");
    assert_eq!(got, created, "get returns what create stored");
    assert_eq!(without_version(got), pool("p1"));
    match ds.create(pool("p1")).await {
        Err(Error::AlreadyExists(key)) => assert_eq!(key, Key::new(Kind::IPPool, "p1")),
        other => panic!("second create of p1: expected AlreadyExists, got {other:?}"),
    }
    // The same name in another kind is another resource.
    ds.create(node("p1"))
        .await
        .expect("a Node named like a pool");
}

pub async fn missing_keys_are_not_found(ds: &dyn Datastore) {
    let key = Key::new(Kind::Node, "absent");
    assert!(matches!(ds.get(&key).await, Err(Error::NotFound(k)) if k == key));
    assert!(matches!(
        ds.update(node("absent")).await,
        Err(Error::NotFound(k)) if k == key
    ));
    assert!(matches!(ds.delete(&key, None).await, Err(Error::NotFound(k)) if k == key));
    assert!(matches!(
        ds.delete(&key, Some(Revision(1))).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn update_is_compare_and_swap(ds: &dyn Datastore) {
    let v1 = ds.create(node("n1")).await.expect("create n1");
    let v2 = ds
        .update(annotated(v1.clone(), "step", "2"))
        .await
        .expect("update from the current revision");
    assert!(rev(&v2) > rev(&v1));
    assert_eq!(v2.metadata().annotations["step"], "2");
    match ds.update(annotated(v1.clone(), "step", "stale")).await {
        Err(Error::Conflict {
            key,
            expected,
            current,
        }) => {
            assert_eq!(key, v1.key());
            assert_eq!(expected, rev(&v1));
            assert_eq!(current, rev(&v2));
        }
        other => panic!("update from a stale revision: expected Conflict, got {other:?}"),
    }
    let got = ds.get(&v1.key()).await.expect("get n1");
    assert_eq!(got, v2, "a conflicting update writes nothing");
}

pub async fn unconditional_update(ds: &dyn Datastore) {
    let v1 = ds.create(node("n1")).await.expect("create n1");
    let v2 = ds
        .update(annotated(v1.clone(), "a", "1"))
        .await
        .expect("update");
    let v3 = ds
        .update(without_version(annotated(v1.clone(), "a", "forced")))
        .await
        .expect("update without resourceVersion is unconditional");
    assert!(rev(&v3) > rev(&v2));
    assert_eq!(ds.get(&v1.key()).await.expect("get"), v3);
}

pub async fn delete_is_compare_and_swap(ds: &dyn Datastore) {
    let v1 = ds.create(pool("p1")).await.expect("create");
    let v2 = ds
        .update(annotated(v1.clone(), "x", "y"))
        .await
        .expect("update");
    match ds.delete(&v1.key(), Some(rev(&v1))).await {
        Err(Error::Conflict {
            expected, current, ..
        }) => {
            assert_eq!(expected, rev(&v1));
            assert_eq!(current, rev(&v2));
        }
        other => panic!("delete at a stale revision: expected Conflict, got {other:?}"),
    }
    assert_eq!(ds.get(&v1.key()).await.expect("still there"), v2);
    let last = ds
        .delete(&v1.key(), Some(rev(&v2)))
        .await
        .expect("delete at the current revision");
    assert_eq!(last, v2, "delete returns the last state");
    assert!(matches!(ds.get(&v1.key()).await, Err(Error::NotFound(_))));

    let other = ds.create(pool("p2")).await.expect("create p2");
    let last = ds
        .delete(&other.key(), None)
        .await
        .expect("unconditional delete");
    assert_eq!(last, other);
    // A deleted name can be created again.
    ds.create(pool("p1")).await.expect("re-create p1");
}

pub async fn revisions_increase_by_one_per_write(ds: &dyn Datastore) {
    let start = ds.list(Kind::Node).await.expect("list").revision;
    let mut last = start;
    let mut expect_next = |r: Revision, what: &str| {
        assert_eq!(r, Revision(last.0 + 1), "{what}: revision after {last}");
        last = r;
    };
    let a = ds.create(node("a")).await.expect("create a");
    expect_next(rev(&a), "create a");
    let b = ds.create(pool("b")).await.expect("create b");
    expect_next(rev(&b), "create b");
    // Failed writes do not use up revisions.
    assert!(ds.create(node("a")).await.is_err());
    assert!(ds.update(annotated(a.clone(), "k", "v")).await.is_ok());
    assert!(ds.update(annotated(a.clone(), "k", "stale")).await.is_err());
    let listed = ds.list(Kind::Node).await.expect("list");
    expect_next(listed.revision, "update a");
    assert_eq!(
        rev(&listed.items[0]),
        listed.revision,
        "resourceVersion is the revision of the last write"
    );
    ds.delete(&b.key(), None).await.expect("delete b");
    let after_delete = ds.list(Kind::IPPool).await.expect("list").revision;
    expect_next(after_delete, "delete b");
}

pub async fn list_filters_by_kind_and_reports_revision(ds: &dyn Datastore) {
    let empty = ds.list(Kind::IPPool).await.expect("list empty");
    assert!(empty.items.is_empty());
    let mut pools = Vec::new();
    for name in ["p3", "p1", "p2"] {
        pools.push(ds.create(pool(name)).await.expect("create pool"));
    }
    ds.create(node("n1")).await.expect("create node");
    let listing = ds.list(Kind::IPPool).await.expect("list pools");
    let mut names: Vec<&str> = listing.items.iter().map(|r| r.name()).collect();
    names.sort();
    assert_eq!(names, ["p1", "p2", "p3"]);
    for item in &listing.items {
        let created = pools
            .iter()
            .find(|p| p.name() == item.name())
            .expect("known");
        assert_eq!(
            item, created,
            "list returns stored objects with resourceVersion"
        );
    }
    let node_listing = ds.list(Kind::Node).await.expect("list nodes");
    assert_eq!(node_listing.items.len(), 1);
    assert!(
        listing.revision >= pools.iter().map(rev).max().expect("three pools"),
        "a list's revision is at least every item's"
    );
    assert_eq!(node_listing.revision, Revision(listing.revision.0));
}

pub async fn namespaced_keys_are_distinct(ds: &dyn Datastore) {
    let a = ds.create(wep("ns-a", "w1")).await.expect("create ns-a/w1");
    let b = ds.create(wep("ns-b", "w1")).await.expect("create ns-b/w1");
    let key_a = Key::namespaced(Kind::WorkloadEndpoint, "ns-a", "w1");
    let key_b = Key::namespaced(Kind::WorkloadEndpoint, "ns-b", "w1");
    assert_eq!(a.key(), key_a);
    assert_eq!(ds.get(&key_a).await.expect("get a"), a);
    assert_eq!(ds.get(&key_b).await.expect("get b"), b);
    assert!(matches!(
        ds.create(wep("ns-a", "w1")).await,
        Err(Error::AlreadyExists(k)) if k == key_a
    ));
    assert!(matches!(
        ds.get(&Key::namespaced(Kind::WorkloadEndpoint, "ns-c", "w1"))
            .await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        ds.list(Kind::WorkloadEndpoint)
            .await
            .expect("list")
            .items
            .len(),
        2
    );
    ds.delete(&key_a, None).await.expect("delete a");
    let left = ds.list(Kind::WorkloadEndpoint).await.expect("list").items;
    assert_eq!(left, vec![b]);
}

pub async fn watch_from_list_revision_sees_exactly_later_changes(ds: &dyn Datastore) {
    let n1 = ds.create(node("n1")).await.expect("create n1");
    ds.create(node("n2")).await.expect("create n2");
    let listing = ds.list(Kind::Node).await.expect("list");
    let mut watch = ds
        .watch(Some(Kind::Node), listing.revision)
        .await
        .expect("watch from the list revision");
    let n3 = ds.create(node("n3")).await.expect("create n3");
    let n1b = ds
        .update(annotated(n1.clone(), "k", "v"))
        .await
        .expect("update n1");
    let last = ds.delete(&n3.key(), None).await.expect("delete n3");
    let e = next_event(&mut watch).await;
    assert_eq!(
        e,
        WatchEvent::Added {
            revision: rev(&n3),
            resource: n3.clone()
        }
    );
    let e = next_event(&mut watch).await;
    assert_eq!(
        e,
        WatchEvent::Modified {
            revision: rev(&n1b),
            resource: n1b.clone()
        }
    );
    let e = next_event(&mut watch).await;
    assert!(
        matches!(&e, WatchEvent::Deleted { resource, .. } if same_state(resource, &last)),
        "expected the deletion of {last:?}, got {e:?}"
    );
    assert!(e.revision() > rev(&n1b));
    expect_quiet(&mut watch).await;
}

pub async fn watch_filters_by_kind(ds: &dyn Datastore) {
    let start = ds.list(Kind::IPPool).await.expect("list").revision;
    let mut pools = ds
        .watch(Some(Kind::IPPool), start)
        .await
        .expect("watch pools");
    let mut all = ds.watch(None, start).await.expect("watch all");
    ds.create(node("n1")).await.expect("create node");
    let p = ds.create(pool("p1")).await.expect("create pool");
    ds.create(wep("ns", "w")).await.expect("create wep");
    let e = next_event(&mut pools).await;
    assert_eq!(e.resource(), &p, "the pool watch sees only the pool");
    expect_quiet(&mut pools).await;
    let kinds: Vec<Kind> = [
        next_event(&mut all).await,
        next_event(&mut all).await,
        next_event(&mut all).await,
    ]
    .iter()
    .map(|e| e.resource().kind())
    .collect();
    assert_eq!(kinds, [Kind::Node, Kind::IPPool, Kind::WorkloadEndpoint]);
}

pub async fn watch_delivers_many_writes_in_order_exactly_once(ds: &dyn Datastore) {
    const NODES: usize = 10;
    const ROUNDS: usize = 30;
    let start = ds.list(Kind::Node).await.expect("list").revision;
    let mut watch = ds.watch(None, start).await.expect("watch");
    let mut current = Vec::new();
    for i in 0..NODES {
        current.push(ds.create(node(&format!("n{i}"))).await.expect("create"));
    }
    let stale_rev = rev(&current[0]);
    for round in 0..ROUNDS {
        for n in current.iter_mut() {
            *n = ds
                .update(annotated(n.clone(), "round", &round.to_string()))
                .await
                .expect("update");
        }
        // A conflicting write in between must not show up.
        let mut stale = annotated(current[0].clone(), "stale", "yes");
        stale.metadata_mut().resource_version = Some(stale_rev.to_string());
        assert!(ds.update(stale).await.is_err());
    }
    let total = NODES * (ROUNDS + 1);
    let mut expected_rev = start.0;
    let mut seen_per_node = [0usize; NODES];
    for _ in 0..total {
        let e = next_event(&mut watch).await;
        expected_rev += 1;
        assert_eq!(
            e.revision(),
            Revision(expected_rev),
            "events come in revision order"
        );
        let r = e.resource();
        assert_eq!(
            rev(r),
            e.revision(),
            "an event's object carries its revision"
        );
        let i: usize = r.name()[1..].parse().expect("node index");
        let round = r.metadata().annotations.get("round").cloned();
        // A node's k-th event is its creation (k = 0) or its update in round k - 1.
        let k = seen_per_node[i];
        assert_eq!(
            round,
            k.checked_sub(1).map(|r| r.to_string()),
            "{}'s writes arrive in its order",
            r.name()
        );
        assert_eq!(matches!(e, WatchEvent::Added { .. }), k == 0);
        seen_per_node[i] += 1;
    }
    expect_quiet(&mut watch).await;
    assert!(seen_per_node.iter().all(|n| *n == ROUNDS + 1));
}

pub async fn delete_event_carries_last_state(ds: &dyn Datastore) {
    let v1 = ds.create(pool("p1")).await.expect("create");
    let v2 = ds
        .update(annotated(v1.clone(), "last", "words"))
        .await
        .expect("update");
    let mut watch = ds.watch(Some(Kind::IPPool), rev(&v2)).await.expect("watch");
    ds.delete(&v2.key(), None).await.expect("delete");
    match next_event(&mut watch).await {
        WatchEvent::Deleted { revision, resource } => {
            assert!(revision > rev(&v2));
            assert!(same_state(&resource, &v2), "the last state: {resource:?}");
            let version = rev(&resource);
            assert!(
                version == rev(&v2) || version == revision,
                "the last state's resourceVersion is its own or the deletion's, got {version}"
            );
        }
        other => panic!("expected Deleted, got {other:?}"),
    }
}

pub async fn too_old_after_compaction(subject: &dyn Subject) {
    let ds = subject.store();
    let mut first = ds.create(node("n1")).await.expect("create");
    let mut written = vec![rev(&first)];
    for i in 0..5 {
        first = ds
            .update(annotated(first.clone(), "i", &i.to_string()))
            .await
            .expect("update");
        written.push(rev(&first));
    }
    let before = rev(&first);
    let mut early = ds
        .watch(None, Revision(1))
        .await
        .expect("watch before compaction");
    subject.compact(Revision(before.0 - 2)).expect("compact");
    match ds.watch(None, Revision(1)).await {
        Err(Error::TooOld { requested, oldest }) => {
            assert_eq!(requested, Revision(1));
            assert!(oldest >= Revision(before.0 - 2));
        }
        Err(e) => panic!("watch from a compacted revision: expected TooOld, got {e}"),
        Ok(mut w) => match tokio::time::timeout(EVENT_TIMEOUT, w.next()).await {
            Ok(Some(Err(Error::TooOld { .. }))) => {}
            other => panic!("watch from a compacted revision: expected TooOld, got {other:?}"),
        },
    }
    // History after the compaction point is still there.
    let mut recent = ds
        .watch(None, Revision(before.0 - 1))
        .await
        .expect("watch after the compaction point");
    assert_eq!(next_event(&mut recent).await.revision(), before);
    let later = ds
        .create(node("n2"))
        .await
        .expect("create after compaction");
    assert_eq!(next_event(&mut recent).await.revision(), rev(&later));
    assert!(rev(&later) > before, "compaction never lowers the revision");
    // A watch that started before compaction either keeps going or is told it is too old;
    // it never skips events silently. (Revisions need not be contiguous: in a Kubernetes cluster
    // other objects take revisions too.)
    written.push(rev(&later));
    // The early watch is from revision 1: it sees what was written after it.
    written.retain(|r| *r > Revision(1));
    let mut expected = written.into_iter();
    loop {
        match tokio::time::timeout(EVENT_TIMEOUT, early.next()).await {
            Ok(Some(Ok(e))) => {
                let want = expected.next();
                assert_eq!(Some(e.revision()), want, "no event skipped");
                if want == Some(rev(&later)) {
                    break;
                }
            }
            Ok(Some(Err(Error::TooOld { .. }))) => break,
            other => panic!("early watch: unexpected {other:?}"),
        }
    }
}
