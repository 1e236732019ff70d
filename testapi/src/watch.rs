//! WATCH: a chunked stream of change events, one JSON object per line.
//!
//! Kubernetes API concepts, "Efficient detection of changes" and "Semantics for watch":
//! - `resourceVersion=R`: every change after R, in order, each once, then live ones.
//! - unset or `"0"`: a synthetic ADDED for every object that exists, then live changes.
//! - R older than the history kept: HTTP 200 and a single ERROR event whose object is a
//!   `410 Expired` Status, `too old resource version: R (OLDEST)`, then the stream ends
//!   ("410 Gone responses"; OLDEST is the oldest revision one can still watch from).
//! - `allowWatchBookmarks=true`: BOOKMARK events carrying only the revision the stream has
//!   reached ("Watch bookmarks"); here one every bookmark interval.
//! - `sendInitialEvents=true` (with `resourceVersionMatch=NotOlderThan` and bookmarks): the
//!   synthetic ADDEDs, then a BOOKMARK annotated `k8s.io/initial-events-end: "true"`
//!   ("Streaming lists").
//! - `timeoutSeconds` ends the stream cleanly.
//! - With a selector, an object that stops matching is reported as DELETED (with its previous
//!   content at the new revision) and one that starts matching as ADDED, as the apiserver's
//!   watch filtering does.
//!
//! A watcher that falls more than the broadcast buffer behind is closed, as the apiserver's
//! cacher closes a watcher whose buffer is full; writes never wait for a watcher.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::StreamBody;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Frame;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};

use crate::list::parse_rv;
use crate::resources::ResourceType;
use crate::route::ListOptions;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Event, EventKind, Store, set_resource_version};

/// What a watcher wants to see.
struct Filter {
    resource: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    /// The event this watcher sees for a committed write, if any.
    fn translate(&self, ev: &Event) -> Option<Out> {
        if ev.key.resource != self.resource
            || self
                .namespace
                .as_ref()
                .is_some_and(|ns| *ns != ev.key.namespace)
        {
            return None;
        }
        let prev_matches = ev.prev.as_deref().is_some_and(|p| self.matches(p));
        match ev.kind {
            EventKind::Deleted => prev_matches.then(|| Out::Event("DELETED", ev.object.clone())),
            EventKind::Added | EventKind::Modified => {
                let cur_matches = self.matches(&ev.object);
                match (prev_matches, cur_matches) {
                    (true, true) => Some(Out::Event("MODIFIED", ev.object.clone())),
                    (false, true) => Some(Out::Event("ADDED", ev.object.clone())),
                    (true, false) => {
                        let mut gone = (**ev.prev.as_ref().expect("prev matched")).clone();
                        set_resource_version(&mut gone, ev.rev);
                        Some(Out::Event("DELETED", Arc::new(gone)))
                    }
                    (false, false) => None,
                }
            }
        }
    }
}

/// One line of the stream.
enum Out {
    Event(&'static str, Arc<Value>),
    Bookmark { rev: u64, initial_end: bool },
    Error(Value),
}

/// The body type of every response.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

struct State {
    backlog: VecDeque<Out>,
    rx: broadcast::Receiver<Arc<Event>>,
    filter: Filter,
    /// The revision the stream has caught up with: every event up to it was seen.
    seen: u64,
    bookmarks: Option<Interval>,
    deadline: Option<Pin<Box<Sleep>>>,
    kind: String,
    api_version: String,
    /// Set after an ERROR event: the stream ends once the backlog is out.
    finished: bool,
}

impl State {
    fn line(&self, out: Out) -> Bytes {
        #[derive(Serialize)]
        struct Line<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            object: &'a Value,
        }
        let (kind, object) = match out {
            Out::Event(k, o) => (k, (*o).clone()),
            Out::Bookmark { rev, initial_end } => {
                let mut metadata = json!({"resourceVersion": rev.to_string()});
                if initial_end {
                    metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                }
                (
                    "BOOKMARK",
                    json!({"kind": self.kind, "apiVersion": self.api_version, "metadata": metadata}),
                )
            }
            Out::Error(status) => ("ERROR", status),
        };
        let mut bytes = serde_json::to_vec(&Line {
            kind,
            object: &object,
        })
        .expect("values serialize");
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    /// Takes in one committed event; false when the stream must end.
    fn take(&mut self, ev: Result<Arc<Event>, RecvError>) -> bool {
        match ev {
            Ok(ev) => {
                if ev.rev > self.seen {
                    self.seen = ev.rev;
                    if let Some(out) = self.filter.translate(&ev) {
                        self.backlog.push_back(out);
                    }
                }
                true
            }
            Err(RecvError::Lagged(n)) => {
                tracing::info!(
                    resource = %self.filter.resource,
                    missed = n,
                    "closing a watcher that fell behind"
                );
                false
            }
            Err(RecvError::Closed) => false,
        }
    }

    /// The next line, or None when the stream ends.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(out) = self.backlog.pop_front() {
                return Some(self.line(out));
            }
            if self.finished {
                return None;
            }
            let wake = {
                let State {
                    rx,
                    deadline,
                    bookmarks,
                    ..
                } = self;
                let deadline = async {
                    match deadline.as_mut() {
                        Some(d) => d.as_mut().await,
                        None => std::future::pending().await,
                    }
                };
                let tick = async {
                    match bookmarks.as_mut() {
                        Some(i) => {
                            i.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    _ = deadline => Wake::Deadline,
                    ev = rx.recv() => Wake::Event(ev),
                    _ = tick => Wake::Bookmark,
                }
            };
            match wake {
                Wake::Deadline => return None,
                Wake::Event(ev) => {
                    if !self.take(ev) {
                        return None;
                    }
                }
                Wake::Bookmark => {
                    // Catch up with everything already committed, so the bookmark's revision
                    // never skips an event this watcher has not sent.
                    loop {
                        match self.rx.try_recv() {
                            Ok(ev) => {
                                self.take(Ok(ev));
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Lagged(n)) => {
                                self.take(Err(RecvError::Lagged(n)));
                                return None;
                            }
                            Err(TryRecvError::Closed) => return None,
                        }
                    }
                    self.backlog.push_back(Out::Bookmark {
                        rev: self.seen,
                        initial_end: false,
                    });
                }
            }
        }
    }
}

/// Why a waiting watcher woke up.
enum Wake {
    Deadline,
    Event(Result<Arc<Event>, RecvError>),
    Bookmark,
}

/// Starts a watch on `ty` (in `namespace`, or all). Parameter errors are returned before any
/// byte is sent; an expired resourceVersion becomes an ERROR event in a 200 stream.
pub fn start(
    store: &std::sync::Mutex<Store>,
    ty: &ResourceType,
    namespace: Option<&str>,
    opts: &ListOptions,
    bookmark_interval: Duration,
) -> Result<Body, ApiError> {
    let labels = LabelSelector::parse(&opts.label_selector)
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(&opts.field_selector, ty).map_err(ApiError::bad_request)?;
    crate::list::validate_match(opts)?;
    if opts.send_initial_events == Some(true)
        && (!opts.allow_bookmarks || opts.resource_version_match.as_deref() != Some("NotOlderThan"))
    {
        return Err(ApiError::unprocessable(
            "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan",
        ));
    }
    let requested = match opts.resource_version.as_deref() {
        None | Some("0") => None,
        Some(rv) => Some(parse_rv(rv)?),
    };
    let filter = Filter {
        resource: ty.storage_key(),
        namespace: namespace.map(str::to_string),
        labels,
        fields,
    };
    let mut backlog = VecDeque::new();
    let mut finished = false;
    let (rx, seen) = {
        let store = store.lock().expect("store lock");
        let current = store.revision();
        let initial_events = match opts.send_initial_events {
            Some(v) => v,
            None => requested.is_none(),
        };
        if initial_events {
            for (_, object) in store.range_at(&filter.resource, namespace, current, None) {
                if filter.matches(&object) {
                    backlog.push_back(Out::Event("ADDED", object));
                }
            }
            if opts.send_initial_events == Some(true) {
                backlog.push_back(Out::Bookmark {
                    rev: current,
                    initial_end: true,
                });
            }
        } else if let Some(rv) = requested {
            match store.check_available(rv) {
                Ok(()) => {
                    for ev in store.events_after(rv) {
                        if let Some(out) = filter.translate(ev) {
                            backlog.push_back(out);
                        }
                    }
                }
                Err(c) => {
                    backlog.push_back(Out::Error(
                        ApiError::expired(format!(
                            "too old resource version: {} ({})",
                            c.requested, c.compacted
                        ))
                        .to_status(),
                    ));
                    finished = true;
                }
            }
        }
        // A resourceVersion from the future: start there, skipping what comes before it.
        (store.subscribe(), current.max(requested.unwrap_or(0)))
    };
    let bookmarks = opts.allow_bookmarks.then(|| {
        let mut i = tokio::time::interval_at(Instant::now() + bookmark_interval, bookmark_interval);
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        i
    });
    let state = State {
        backlog,
        rx,
        filter,
        seen,
        bookmarks,
        deadline: opts.timeout.map(|t| Box::pin(tokio::time::sleep(t))),
        kind: ty.kind.clone(),
        api_version: ty.api_version(),
        finished,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        st.next()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), st))
    });
    Ok(UnsyncBoxBody::new(StreamBody::new(stream)))
}
