//! The multi-version store: etcd's data model, small.
//!
//! One global revision counter across every resource (the apiserver's resourceVersion is
//! etcd's revision: Kubernetes API concepts, "Resource versions": "resource versions … are
//! backed by etcd's revisions"); every successful write takes the next revision and appends
//! one event to the log. Each key keeps its versions, so a list can be served at any revision
//! still held (paginated lists serve every page at the first page's revision: "Retrieving
//! large results sets in chunks"), and a watch can replay every change after a revision.
//! Compaction drops what etcd's compaction drops; reading or watching below the compacted
//! revision is "410 Gone".
//!
//! The store is a plain struct: the server keeps it under one mutex, so writes are serialized
//! and compare-and-swap is exact. Writers never wait on watchers: events go out on a
//! broadcast channel whose receivers, when they fall more than its capacity behind, are
//! closed (as the apiserver closes a watcher whose buffer is full).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::resources::Registry;

/// Where an object lives: resource (`group/plural`), namespace (empty when cluster-scoped),
/// name. Ordered namespace-then-name within a resource, the order lists are served in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// `group/plural`, see [`crate::resources::ResourceType::storage_key`].
    pub resource: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

/// One version of a key: the object as written at `rev`, or a tombstone.
#[derive(Debug, Clone)]
struct Version {
    rev: u64,
    object: Option<Arc<Value>>,
}

/// What a write did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key did not exist before.
    Added,
    /// The key existed and still does.
    Modified,
    /// The key was deleted.
    Deleted,
}

/// One committed write.
#[derive(Debug)]
pub struct Event {
    /// The revision this write took.
    pub rev: u64,
    /// The key written.
    pub key: Key,
    /// What happened.
    pub kind: EventKind,
    /// The object after the write; for a delete, the last stored state with
    /// `metadata.resourceVersion` set to the deletion's revision (what the apiserver's etcd3
    /// watcher sends: "the *old* object with the etcd revision for the time at which it gets
    /// deleted").
    pub object: Arc<Value>,
    /// The object before the write (None for Added).
    pub prev: Option<Arc<Value>>,
}

/// A revision below the compacted one was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// The revision asked for.
    pub requested: u64,
    /// The compacted revision: the oldest one that can still be read or watched from.
    pub compacted: u64,
}

/// The store. See the module documentation.
#[derive(Debug)]
pub struct Store {
    revision: u64,
    compacted: u64,
    objects: BTreeMap<Key, Vec<Version>>,
    log: VecDeque<Arc<Event>>,
    history_limit: Option<usize>,
    events: broadcast::Sender<Arc<Event>>,
    /// Served resource types; kept here so a CRD write and its registration are one step.
    pub registry: Registry,
}

/// Sets `metadata.resourceVersion` of an object to `rev`.
pub fn set_resource_version(object: &mut Value, rev: u64) {
    if let Some(obj) = object.as_object_mut() {
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("resourceVersion".into(), rev.to_string().into());
        }
    }
}

impl Store {
    /// An empty store at revision 1 (etcd's first revision), with a watcher buffer of
    /// `watch_buffer` events and, optionally, at most `history_limit` events of history.
    pub fn new(watch_buffer: usize, history_limit: Option<usize>) -> Store {
        let (events, _) = broadcast::channel(watch_buffer.max(1));
        Store {
            revision: 1,
            compacted: 0,
            objects: BTreeMap::new(),
            log: VecDeque::new(),
            history_limit,
            events,
            registry: Registry::default(),
        }
    }

    /// The current revision: that of the last write.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The compacted revision: reads and watches from below it are gone.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Fails when `rev` has been compacted away.
    pub fn check_available(&self, rev: u64) -> Result<(), Compacted> {
        if rev < self.compacted {
            Err(Compacted {
                requested: rev,
                compacted: self.compacted,
            })
        } else {
            Ok(())
        }
    }

    /// The current state of a key.
    pub fn get(&self, key: &Key) -> Option<Arc<Value>> {
        self.objects
            .get(key)
            .and_then(|h| h.last())
            .and_then(|v| v.object.clone())
    }

    /// Objects of `resource` (in `namespace` if given) as they were at revision `rev`, in key
    /// order, starting strictly after `after` (namespace, name) if given. The caller has
    /// checked `rev` with [`Store::check_available`].
    pub fn range_at<'a>(
        &'a self,
        resource: &'a str,
        namespace: Option<&'a str>,
        rev: u64,
        after: Option<(&str, &str)>,
    ) -> impl Iterator<Item = (&'a Key, Arc<Value>)> + 'a {
        use std::ops::Bound;
        let start = match (after, namespace) {
            (Some((ns, name)), _) => Bound::Excluded(Key {
                resource: resource.to_string(),
                namespace: ns.to_string(),
                name: name.to_string(),
            }),
            (None, ns) => Bound::Included(Key {
                resource: resource.to_string(),
                namespace: ns.unwrap_or("").to_string(),
                name: String::new(),
            }),
        };
        self.objects
            .range((start, Bound::Unbounded))
            .take_while(move |(k, _)| {
                k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .filter_map(move |(k, history)| {
                history
                    .iter()
                    .rev()
                    .find(|v| v.rev <= rev)
                    .and_then(|v| v.object.clone())
                    .map(|o| (k, o))
            })
    }

    /// Events after revision `after` (exclusive), oldest first. The caller has checked
    /// `after` with [`Store::check_available`].
    pub fn events_after(&self, after: u64) -> impl Iterator<Item = &Arc<Event>> {
        // The log is ordered by revision; find the first event past `after`.
        let start = self.log.partition_point(|e| e.rev <= after);
        self.log.range(start..)
    }

    /// A receiver of every event committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Commits a write of `key`: `Some(object)` stores it, `None` deletes. Takes the next
    /// revision, stamps it into `metadata.resourceVersion`, logs and broadcasts the event.
    /// Returns the event. Panics if asked to delete a key that does not exist (callers check).
    pub fn commit(&mut self, key: Key, object: Option<Value>) -> Arc<Event> {
        let rev = self.revision + 1;
        let history = self.objects.entry(key.clone()).or_default();
        let prev = history.last().and_then(|v| v.object.clone());
        let (kind, stored, event_object) = match object {
            Some(mut obj) => {
                set_resource_version(&mut obj, rev);
                let obj = Arc::new(obj);
                let kind = if prev.is_some() {
                    EventKind::Modified
                } else {
                    EventKind::Added
                };
                (kind, Some(obj.clone()), obj)
            }
            None => {
                let mut last = prev
                    .as_deref()
                    .expect("commit: deleting a key that does not exist")
                    .clone();
                set_resource_version(&mut last, rev);
                (EventKind::Deleted, None, Arc::new(last))
            }
        };
        history.push(Version {
            rev,
            object: stored,
        });
        self.revision = rev;
        let event = Arc::new(Event {
            rev,
            key,
            kind,
            object: event_object,
            prev,
        });
        self.log.push_back(event.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event.clone());
        if let Some(limit) = self.history_limit
            && self.log.len() > limit
        {
            let drop_through = self.log[self.log.len() - limit - 1].rev;
            self.compact(drop_through);
        }
        event
    }

    /// etcd compaction: forgets every version at or below `rev` that a read at `rev` or later
    /// cannot see, and every event at or below `rev`. Reads and watches from below `rev` fail
    /// with [`Compacted`] afterwards; from `rev` itself they still work.
    pub fn compact(&mut self, rev: u64) {
        let rev = rev.min(self.revision);
        if rev <= self.compacted {
            return;
        }
        self.compacted = rev;
        // Only keys written in the dropped events can hold versions to forget: older versions
        // were trimmed by the previous compaction.
        let mut touched = Vec::new();
        while self.log.front().is_some_and(|e| e.rev <= rev) {
            let e = self.log.pop_front().expect("front exists");
            touched.push(e.key.clone());
        }
        for key in touched {
            let Some(history) = self.objects.get_mut(&key) else {
                continue;
            };
            // Keep the newest version at or below `rev` (what a read at `rev` sees), unless it
            // is a tombstone, and everything after it.
            if let Some(last_old) = history.iter().rposition(|v| v.rev <= rev) {
                let keep_from = if history[last_old].object.is_none() {
                    last_old + 1
                } else {
                    last_old
                };
                history.drain(..keep_from);
            }
            if history.is_empty() {
                self.objects.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str) -> Key {
        Key {
            resource: "/pods".into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn names_at(store: &Store, rev: u64) -> Vec<String> {
        store
            .range_at("/pods", None, rev, None)
            .map(|(k, _)| k.name.clone())
            .collect()
    }

    #[test]
    fn reads_at_old_revisions_see_old_state() {
        let mut s = Store::new(16, None);
        s.commit(key("a"), Some(json!({"v": 1}))); // rev 2
        s.commit(key("b"), Some(json!({"v": 1}))); // rev 3
        s.commit(key("a"), None); // rev 4
        assert_eq!(names_at(&s, 2), ["a"]);
        assert_eq!(names_at(&s, 3), ["a", "b"]);
        assert_eq!(names_at(&s, 4), ["b"]);
        assert_eq!(s.revision(), 4);
    }

    #[test]
    fn deleted_event_carries_the_deletion_revision() {
        let mut s = Store::new(16, None);
        s.commit(key("a"), Some(json!({"metadata": {"name": "a"}})));
        let e = s.commit(key("a"), None);
        assert_eq!(e.kind, EventKind::Deleted);
        assert_eq!(e.object["metadata"]["resourceVersion"], "3");
        assert_eq!(e.prev.as_ref().unwrap()["metadata"]["resourceVersion"], "2");
    }

    #[test]
    fn compaction_keeps_what_reads_at_the_compacted_revision_see() {
        let mut s = Store::new(16, None);
        s.commit(key("a"), Some(json!({"v": 1}))); // 2
        s.commit(key("a"), Some(json!({"v": 2}))); // 3
        s.commit(key("b"), Some(json!({"v": 1}))); // 4
        s.commit(key("b"), None); // 5
        s.commit(key("c"), Some(json!({"v": 1}))); // 6
        s.compact(5);
        assert_eq!(
            s.check_available(4),
            Err(Compacted {
                requested: 4,
                compacted: 5
            })
        );
        assert!(s.check_available(5).is_ok());
        assert_eq!(names_at(&s, 5), ["a"]);
        assert_eq!(names_at(&s, 6), ["a", "c"]);
        assert_eq!(s.range_at("/pods", None, 5, None).next().unwrap().1["v"], 2);
        assert_eq!(s.events_after(5).map(|e| e.rev).collect::<Vec<_>>(), [6]);
        // The tombstoned key is gone for good.
        assert!(!s.objects.contains_key(&key("b")));
    }

    #[test]
    fn history_limit_compacts_automatically() {
        let mut s = Store::new(16, Some(2));
        for i in 0..5 {
            s.commit(key("a"), Some(json!({"v": i}))); // 2..=6
        }
        assert_eq!(s.events_after(0).map(|e| e.rev).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(s.compacted(), 4);
        assert!(s.check_available(3).is_err());
        assert!(s.check_available(4).is_ok());
    }
}
