//! An in-memory datastore for unit tests: the same semantics as the real backends (revisions,
//! compare-and-swap, watches that resume and can be compacted away), none of the persistence.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use api::{Key, Kind, Resource};
use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::{Datastore, Error, Listing, Revision, Watch, WatchEvent};

/// How many changes the in-memory change log keeps before the oldest are compacted away.
const DEFAULT_LOG_CAPACITY: usize = 100_000;

#[derive(Clone)]
pub struct MemoryDatastore {
    state: Arc<Mutex<State>>,
    revision_tx: Arc<watch::Sender<u64>>,
}

struct State {
    revision: u64,
    objects: BTreeMap<Key, Resource>,
    /// Every change after `compacted`, oldest first.
    log: VecDeque<WatchEvent>,
    /// Changes at or below this revision are no longer in the log.
    compacted: u64,
    log_capacity: usize,
}

impl Default for MemoryDatastore {
    fn default() -> Self {
        MemoryDatastore::with_log_capacity(DEFAULT_LOG_CAPACITY)
    }
}

impl MemoryDatastore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A datastore whose change log keeps only the last `capacity` changes.
    pub fn with_log_capacity(capacity: usize) -> Self {
        let (revision_tx, _) = watch::channel(0);
        MemoryDatastore {
            state: Arc::new(Mutex::new(State {
                revision: 0,
                objects: BTreeMap::new(),
                log: VecDeque::new(),
                compacted: 0,
                log_capacity: capacity.max(1),
            })),
            revision_tx: Arc::new(revision_tx),
        }
    }

    /// Drops change history up to and including `revision`, as etcd's compaction does.
    pub fn compact(&self, revision: Revision) {
        let mut st = self.state.lock().expect("memory datastore lock");
        while st.log.front().is_some_and(|e| e.revision() <= revision) {
            st.log.pop_front();
        }
        st.compacted = st.compacted.max(revision.0.min(st.revision));
    }

    fn commit(&self, st: &mut State, make: impl FnOnce(Revision) -> WatchEvent) -> Resource {
        st.revision += 1;
        let event = make(Revision(st.revision));
        let resource = event.resource().clone();
        st.log.push_back(event);
        while st.log.len() > st.log_capacity {
            let dropped = st.log.pop_front().expect("non-empty log");
            st.compacted = dropped.revision().0;
        }
        self.revision_tx.send_replace(st.revision);
        resource
    }
}

fn stamped(mut resource: Resource, revision: Revision) -> Resource {
    resource.metadata_mut().resource_version = Some(revision.to_string());
    resource
}

#[async_trait]
impl Datastore for MemoryDatastore {
    async fn get(&self, key: &Key) -> Result<Resource, Error> {
        let st = self.state.lock().expect("memory datastore lock");
        st.objects
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NotFound(key.clone()))
    }

    async fn list(&self, kind: Kind) -> Result<Listing, Error> {
        let st = self.state.lock().expect("memory datastore lock");
        let items = st
            .objects
            .iter()
            .filter(|(k, _)| k.kind == kind)
            .map(|(_, r)| r.clone())
            .collect();
        Ok(Listing {
            items,
            revision: Revision(st.revision),
        })
    }

    async fn create(&self, resource: Resource) -> Result<Resource, Error> {
        let key = resource.key();
        let mut st = self.state.lock().expect("memory datastore lock");
        if st.objects.contains_key(&key) {
            return Err(Error::AlreadyExists(key));
        }
        let stored = self.commit(&mut st, |revision| WatchEvent::Added {
            revision,
            resource: stamped(resource, revision),
        });
        st.objects.insert(key, stored.clone());
        Ok(stored)
    }

    async fn update(&self, resource: Resource) -> Result<Resource, Error> {
        let key = resource.key();
        let expected = Revision::of(&resource)?;
        let mut st = self.state.lock().expect("memory datastore lock");
        let current = match st.objects.get(&key) {
            Some(r) => Revision::of(r)?.unwrap_or_default(),
            None => return Err(Error::NotFound(key)),
        };
        if let Some(expected) = expected.filter(|e| *e != current) {
            return Err(Error::Conflict {
                key,
                expected,
                current,
            });
        }
        let stored = self.commit(&mut st, |revision| WatchEvent::Modified {
            revision,
            resource: stamped(resource, revision),
        });
        st.objects.insert(key, stored.clone());
        Ok(stored)
    }

    async fn delete(&self, key: &Key, expected: Option<Revision>) -> Result<Resource, Error> {
        let mut st = self.state.lock().expect("memory datastore lock");
        let current = match st.objects.get(key) {
            Some(r) => Revision::of(r)?.unwrap_or_default(),
            None => return Err(Error::NotFound(key.clone())),
        };
        if let Some(expected) = expected.filter(|e| *e != current) {
            return Err(Error::Conflict {
                key: key.clone(),
                expected,
                current,
            });
        }
        let last = st.objects.remove(key).expect("present");
        self.commit(&mut st, |revision| WatchEvent::Deleted {
            revision,
            resource: last,
        });
        // The deleted event carries the last stored state; return the same.
        Ok(st.log.back().expect("just logged").resource().clone())
    }

    async fn watch(&self, kind: Option<Kind>, after: Revision) -> Result<Watch, Error> {
        {
            let st = self.state.lock().expect("memory datastore lock");
            if after.0 < st.compacted {
                return Err(Error::TooOld {
                    requested: after,
                    oldest: Revision(st.compacted),
                });
            }
        }
        let (tx, rx) = mpsc::channel(256);
        let state = self.state.clone();
        let mut revisions = self.revision_tx.subscribe();
        tokio::spawn(async move {
            let mut cursor = after.0;
            loop {
                // Collect what is new under the lock, send it without holding the lock.
                let batch: Result<Vec<WatchEvent>, Error> = {
                    let st = state.lock().expect("memory datastore lock");
                    if cursor < st.compacted {
                        Err(Error::TooOld {
                            requested: Revision(cursor),
                            oldest: Revision(st.compacted),
                        })
                    } else {
                        let start = st.log.partition_point(|e| e.revision().0 <= cursor);
                        Ok(st.log.iter().skip(start).cloned().collect())
                    }
                };
                match batch {
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    Ok(events) => {
                        for event in events {
                            cursor = event.revision().0;
                            if kind.is_none_or(|k| k == event.resource().kind())
                                && tx.send(Ok(event)).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                }
                tokio::select! {
                    changed = revisions.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Watch::from_channel(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::Subject;

    struct Fresh(MemoryDatastore);

    impl Subject for Fresh {
        fn store(&self) -> &dyn Datastore {
            &self.0
        }

        fn compact(&self, keep_after: Revision) -> Result<(), Error> {
            self.0.compact(keep_after);
            Ok(())
        }
    }

    mod conformance {
        crate::conformance_tests!(super::Fresh(super::MemoryDatastore::new()));
    }
}
