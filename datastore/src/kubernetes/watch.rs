//! Watches over the Kubernetes API.
//!
//! ```text
//!  per kind:  follow(kind) ── kube watch (resourceVersion, bookmarks) ──▶ Tracker ──┐
//!             (re-watch from the last event/bookmark when the server ends a stream;  │
//!              a 410 Gone ends the watch with TooOld)                                │
//!  one kind:  ───────────────────────────────────────────────────────────────────────┴──▶ Watch
//!  all kinds: follow × 11 ──▶ merge (revision order; gaps wait up to WINDOW) ──────────▶ Watch
//! ```
//!
//! Kubernetes has no watch across resource types, so `watch(None, …)` runs one per kind and
//! merges them. Each stream is in order on its own; the merge releases an event at once when
//! its revision directly follows the last released one, and otherwise holds it up to
//! [`WINDOW`], lowest revision first, which puts events from different kinds back in revision
//! order unless one stream lags by more than the window.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use api::{Key, Kind, Resource};
use futures_util::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, WatchEvent as KubeEvent, WatchParams};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::mapping::{self, Storage};
use super::{node, workload};
use crate::{Error, Revision, Watch, WatchEvent};

/// How long the merge of several kinds holds an event before releasing it in revision order.
pub const WINDOW: Duration = Duration::from_millis(100);
/// The server-side timeout asked for each watch request; the watch is renewed after it.
const WATCH_TIMEOUT_SECS: u32 = 290;
/// Pause before re-watching after a transport error.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

type Sender = mpsc::Sender<Result<WatchEvent, Error>>;

pub fn start(client: kube::Client, kind: Option<Kind>, after: Revision) -> Watch {
    let (tx, rx) = mpsc::channel(1024);
    match kind {
        Some(kind) => {
            tokio::spawn(follow(client, kind, after, tx));
        }
        None => {
            let (inner_tx, inner_rx) = mpsc::channel(1024);
            for kind in Kind::ALL {
                tokio::spawn(follow(client.clone(), kind, after, inner_tx.clone()));
            }
            tokio::spawn(merge(inner_rx, tx, after));
        }
    }
    Watch::from_channel(rx)
}

/// Releases events in revision order: at once when an event's revision follows the last one
/// released (nothing can be missing before it), otherwise after holding it for [`WINDOW`] in
/// case an event of another kind with a lower revision is still on its way.
async fn merge(mut rx: mpsc::Receiver<Result<WatchEvent, Error>>, tx: Sender, after: Revision) {
    let mut held = Held::default();
    let mut released = after;
    loop {
        let deadline = held.oldest_arrival().map(|t| t + WINDOW);
        tokio::select! {
            _ = tx.closed() => return,
            item = rx.recv() => match item {
                Some(Ok(event)) => held.push(event),
                Some(Err(e)) => {
                    // Deliver what came before the error, then the error: the watch ends.
                    while let Some(event) = held.pop() {
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                None => return,
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
        }
        let now = Instant::now();
        while let Some((revision, arrived)) = held.peek() {
            if revision.0 > released.0 + 1 && arrived + WINDOW > now {
                break;
            }
            let event = held.pop().expect("peeked");
            released = released.max(revision);
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    }
}

/// Events waiting in the merge, lowest revision first (equal revisions in arrival order).
#[derive(Default)]
struct Held {
    order: BinaryHeap<Reverse<(Revision, u64)>>,
    events: HashMap<u64, (Instant, WatchEvent)>,
    seq: u64,
}

impl Held {
    fn push(&mut self, event: WatchEvent) {
        self.seq += 1;
        self.order.push(Reverse((event.revision(), self.seq)));
        self.events.insert(self.seq, (Instant::now(), event));
    }

    fn peek(&self) -> Option<(Revision, Instant)> {
        let Reverse((revision, s)) = self.order.peek()?;
        Some((*revision, self.events[s].0))
    }

    fn pop(&mut self) -> Option<WatchEvent> {
        let Reverse((_, s)) = self.order.pop()?;
        self.events.remove(&s).map(|(_, e)| e)
    }

    fn oldest_arrival(&self) -> Option<Instant> {
        self.events.values().map(|(t, _)| *t).min()
    }
}

/// The revision in a watch "too old" message: `too old resource version: 5 (8)` → 8.
fn oldest_in(message: &str, requested: Revision) -> Revision {
    message
        .rsplit_once('(')
        .and_then(|(_, rest)| rest.trim_end_matches(')').trim().parse().ok())
        .map(Revision)
        .unwrap_or(Revision(requested.0 + 1))
}

/// Ends a watch with TooOld: the history after `requested` is gone (410), the caller re-lists.
async fn too_old(tx: &Sender, requested: Revision, message: &str) {
    let _ = tx
        .send(Err(Error::TooOld {
            requested,
            oldest: oldest_in(message, requested),
        }))
        .await;
}

/// Follows one kind from `after` until the receiver goes away or the history is gone.
async fn follow(client: kube::Client, kind: Kind, after: Revision, tx: Sender) {
    let api: Api<DynamicObject> = Api::all_with(client, &mapping::api_resource(kind));
    let mut tracker = Tracker::new(kind);
    if mapping::storage(kind) == Storage::Pod {
        tokio::select! {
            _ = tx.closed() => return,
            r = tracker.seed(&api, after) => if let Err(e) = r {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
    let mut revision = after;
    loop {
        // Bookmarks are on by default: they move `revision` on even when this kind is quiet, so a
        // re-watch after compaction elsewhere does not fail with 410.
        let params = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
        let from = revision.to_string();
        let started = tokio::select! {
            _ = tx.closed() => return,
            r = api.watch(&params, &from) => r,
        };
        let stream = match started {
            Ok(s) => s,
            Err(kube::Error::Api(s)) if s.code == 410 => {
                return too_old(&tx, revision, &s.message).await;
            }
            Err(e) => {
                tracing::warn!(%kind, %revision, error = %e, "watch request failed; retrying");
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(RETRY_PAUSE) => continue,
                }
            }
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            let item = tokio::select! {
                _ = tx.closed() => return,
                item = stream.next() => item,
            };
            let (change, object) = match item {
                // The server ended this request (timeoutSeconds): watch again from where we are.
                None => break,
                Some(Ok(KubeEvent::Added(o))) => (Change::Added, o),
                Some(Ok(KubeEvent::Modified(o))) => (Change::Modified, o),
                Some(Ok(KubeEvent::Deleted(o))) => (Change::Deleted, o),
                Some(Ok(KubeEvent::Bookmark(b))) => {
                    if let Ok(r) = b.metadata.resource_version.parse() {
                        revision = Revision(r);
                    }
                    continue;
                }
                Some(Ok(KubeEvent::Error(s))) if s.code == 410 => {
                    return too_old(&tx, revision, &s.message).await;
                }
                Some(Ok(KubeEvent::Error(s))) => {
                    tracing::warn!(%kind, %revision, code = s.code, message = %s.message, "watch error; re-watching");
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(%kind, %revision, error = %e, "watch stream failed; re-watching");
                    break;
                }
            };
            let value = match serde_json::to_value(object) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(%kind, error = %e, "undecodable watch object skipped");
                    continue;
                }
            };
            let key = Key::new(kind, "");
            let event_revision = match mapping::object_revision(&key, &value) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            revision = event_revision;
            match tracker.event(change, event_revision, &value) {
                Ok(Some(event)) => {
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%kind, error = %e, "object that is not a valid {kind} skipped");
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Added,
    Modified,
    Deleted,
}

/// Turns object events of one storage into resource events: one pod event may be an endpoint
/// appearing, changing or going away, and a Node's status heartbeats are not Calico changes.
struct Tracker {
    kind: Kind,
    /// The last resource seen per object (Nodes and Pods only), keyed by namespace/name.
    last: HashMap<(String, String), Resource>,
}

fn object_id(v: &Value) -> (String, String) {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

/// Equal apart from the resourceVersion.
fn same_content(a: &Resource, b: &Resource) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    a.metadata_mut().resource_version = None;
    b.metadata_mut().resource_version = None;
    a == b
}

impl Tracker {
    fn new(kind: Kind) -> Tracker {
        Tracker {
            kind,
            last: HashMap::new(),
        }
    }

    /// Records the endpoints of pods unchanged since `after` (their state now is their state
    /// then), so that a later change to them is reported as one.
    async fn seed(&mut self, api: &Api<DynamicObject>, after: Revision) -> Result<(), Error> {
        if after == Revision(0) {
            return Ok(());
        }
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default().limit(500);
            if let Some(t) = &token {
                params = params.continue_token(t);
            }
            let page = api.list(&params).await.map_err(|e| {
                Error::Unavailable(format!(
                    "listing pods to start a WorkloadEndpoint watch: {e}"
                ))
            })?;
            for item in page.items {
                let v = serde_json::to_value(item).map_err(|e| Error::Corrupt {
                    what: "a pod".into(),
                    reason: e.to_string(),
                })?;
                let key = Key::new(self.kind, "");
                if mapping::object_revision(&key, &v)? <= after
                    && let Ok(Some(w)) = workload::from_pod(&v)
                {
                    self.last.insert(object_id(&v), w);
                }
            }
            match page.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(()),
            }
        }
    }

    fn event(
        &mut self,
        change: Change,
        revision: Revision,
        object: &Value,
    ) -> Result<Option<WatchEvent>, Error> {
        let make = |change: Change, resource: Resource| match change {
            Change::Added => WatchEvent::Added { revision, resource },
            Change::Modified => WatchEvent::Modified { revision, resource },
            Change::Deleted => WatchEvent::Deleted { revision, resource },
        };
        match mapping::storage(self.kind) {
            Storage::Crd => Ok(Some(make(
                change,
                mapping::from_custom_object(self.kind, object)?,
            ))),
            Storage::CoreNode => {
                let id = object_id(object);
                let resource = node::from_core(object)?;
                if change == Change::Deleted {
                    self.last.remove(&id);
                    return Ok(Some(make(change, resource)));
                }
                let unchanged = self
                    .last
                    .get(&id)
                    .is_some_and(|prev| same_content(prev, &resource));
                self.last.insert(id, resource.clone());
                Ok((!unchanged || change == Change::Added).then(|| make(change, resource)))
            }
            Storage::Pod => {
                let id = object_id(object);
                let now = if change == Change::Deleted {
                    None
                } else {
                    workload::from_pod(object)?
                };
                let before = match &now {
                    Some(w) => self.last.insert(id, w.clone()),
                    None => self.last.remove(&id),
                };
                Ok(match (before, now) {
                    (None, None) if change == Change::Deleted => {
                        workload::from_pod(object)?.map(|w| make(Change::Deleted, w))
                    }
                    (None, None) => None,
                    (None, Some(w)) => Some(make(Change::Added, w)),
                    (Some(prev), Some(w)) if same_content(&prev, &w) => None,
                    (Some(_), Some(w)) => Some(make(Change::Modified, w)),
                    (Some(prev), None) => Some(make(Change::Deleted, prev)),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(rv: &str, annotations: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default", "resourceVersion": rv,
            "annotations": annotations}, "spec": {"nodeName": "n1"}})
    }

    #[test]
    fn pod_events_become_endpoint_events() {
        let mut t = Tracker::new(Kind::WorkloadEndpoint);
        let with = json!({workload::CONTAINER_ID: "c1", workload::POD_IPS: "198.18.0.4/32"});
        // A pod without an endpoint is nothing.
        assert!(
            t.event(Change::Added, Revision(1), &pod("1", json!({})))
                .unwrap()
                .is_none()
        );
        let e = t
            .event(Change::Modified, Revision(2), &pod("2", with.clone()))
            .unwrap();
        assert!(matches!(
            e,
            Some(WatchEvent::Added {
                revision: Revision(2),
                ..
            })
        ));
        // Only the pod's status changed: the endpoint did not.
        assert!(
            t.event(Change::Modified, Revision(3), &pod("3", with))
                .unwrap()
                .is_none()
        );
        let e = t
            .event(Change::Modified, Revision(4), &pod("4", json!({})))
            .unwrap();
        match e {
            Some(WatchEvent::Deleted { revision, resource }) => {
                assert_eq!(revision, Revision(4));
                assert_eq!(resource.metadata().resource_version.as_deref(), Some("3"));
            }
            other => panic!("expected Deleted, got {other:?}"),
        }
    }

    fn added(revision: u64) -> WatchEvent {
        WatchEvent::Added {
            revision: Revision(revision),
            resource: api::IPPool::new(format!("p{revision}"), Default::default()).into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn merge_restores_revision_order_and_waits_only_for_gaps() {
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        tokio::spawn(merge(in_rx, out_tx, Revision(2)));
        // 4 comes before 3 (another kind's stream was slower): 4 waits, 3 frees both.
        in_tx.send(Ok(added(4))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(out_rx.try_recv().is_err(), "4 waits for 3");
        in_tx.send(Ok(added(3))).await.unwrap();
        let got = [
            out_rx.recv().await.unwrap().unwrap().revision(),
            out_rx.recv().await.unwrap().unwrap().revision(),
        ];
        assert_eq!(got, [Revision(3), Revision(4)]);
        // A gap that never fills (another object took revision 5): 6 goes after the window.
        let start = Instant::now();
        in_tx.send(Ok(added(6))).await.unwrap();
        assert_eq!(
            out_rx.recv().await.unwrap().unwrap().revision(),
            Revision(6)
        );
        assert!(start.elapsed() >= WINDOW);
        // The next one in sequence goes at once.
        let start = Instant::now();
        in_tx.send(Ok(added(7))).await.unwrap();
        assert_eq!(
            out_rx.recv().await.unwrap().unwrap().revision(),
            Revision(7)
        );
        assert!(start.elapsed() < WINDOW);
    }

    #[test]
    fn too_old_messages_name_the_oldest_revision() {
        assert_eq!(
            oldest_in("too old resource version: 5 (8)", Revision(5)),
            Revision(8)
        );
        assert_eq!(oldest_in("gone", Revision(5)), Revision(6));
    }
}
