//! WATCH over raw HTTP, and concurrent writers, checked against "Kubernetes API Concepts"
//! ("Efficient detection of changes", "Semantics for watch", "Watch bookmarks", "Streaming
//! lists").

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testapi::client::{Client, Watch};
use testapi::{Options, Server};

const WAIT: Duration = Duration::from_secs(5);

async fn setup(options: Options) -> (Server, Client) {
    let server = Server::start(options).await.unwrap();
    let client = Client::new(server.addr());
    (server, client)
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn next(w: &mut Watch) -> Value {
    w.next_within(WAIT)
        .await
        .unwrap()
        .expect("the stream ended early")
}

/// (type, name, resourceVersion) of an event.
fn summary(e: &Value) -> (String, String, u64) {
    (
        e["type"].as_str().unwrap().to_string(),
        e["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        rv(&e["object"]),
    )
}

async fn put_node(c: &Client, name: &str, labels: Value) -> Value {
    let r = c
        .post(
            "/api/v1/nodes",
            &json!({"metadata": {"name": name, "labels": labels}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    r.json()
}

async fn label_node(c: &Client, name: &str, labels: Value) -> Value {
    let r = c
        .patch(
            &format!("/api/v1/nodes/{name}"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": labels}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    r.json()
}

/// "Semantics for watch", resourceVersion set: "Start a watch at the exact resource version.
/// The watch events are for all changes after the provided resource version." Each change
/// once, in order, then live changes; the stream is chunked JSON lines. A DELETED event's
/// object is the last state with the resourceVersion of the deletion (the apiserver's etcd3
/// watcher: "the *old* object with the etcd revision for the time at which it gets deleted").
#[tokio::test]
async fn watch_from_a_revision_replays_every_change_once_in_order() {
    let (server, c) = setup(Options::default()).await;
    put_node(&c, "before", json!({})).await;
    let from = server.revision();
    let a = put_node(&c, "a", json!({})).await;
    let a2 = label_node(&c, "a", json!({"x": "1"})).await;
    put_node(&c, "b", json!({})).await;
    c.post(
        "/api/v1/namespaces/ns/pods",
        &json!({"metadata": {"name": "other-resource"}}),
    )
    .await
    .unwrap();
    let del = c.delete("/api/v1/nodes/a", None).await.unwrap();
    assert_eq!(del.status, 200);
    let deleted_at = server.revision();

    let mut w = c
        .watch(&format!("/api/v1/nodes?watch=true&resourceVersion={from}"))
        .await
        .unwrap();
    assert_eq!(w.status, 200);
    assert!(
        w.headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v == "chunked")
    );
    let got: Vec<_> = [
        next(&mut w).await,
        next(&mut w).await,
        next(&mut w).await,
        next(&mut w).await,
    ]
    .iter()
    .map(summary)
    .collect();
    assert_eq!(
        got,
        [
            ("ADDED".into(), "a".into(), rv(&a)),
            ("MODIFIED".into(), "a".into(), rv(&a2)),
            ("ADDED".into(), "b".into(), rv(&a2) + 1),
            ("DELETED".into(), "a".into(), deleted_at),
        ]
    );
    // Nothing more until a live change, which arrives next.
    assert!(w.next_within(Duration::from_millis(300)).await.is_err());
    let c2 = put_node(&c, "live", json!({})).await;
    let e = next(&mut w).await;
    assert_eq!(summary(&e), ("ADDED".into(), "live".into(), rv(&c2)));
    assert_eq!(e["object"]["kind"], "Node");
    assert_eq!(e["object"]["apiVersion"], "v1");

    // The DELETED event's object is the last stored state, at the deletion's revision.
    let mut w2 = c
        .watch(&format!(
            "/api/v1/nodes?watch=1&resourceVersion={}",
            rv(&a2)
        ))
        .await
        .unwrap();
    next(&mut w2).await; // ADDED b
    let d = next(&mut w2).await;
    assert_eq!(d["type"], "DELETED");
    assert_eq!(d["object"]["metadata"]["labels"], json!({"x": "1"}));
    assert_eq!(rv(&d["object"]), deleted_at);
}

/// "Semantics for watch", resourceVersion unset or "0": "To establish initial state, the
/// watch begins with synthetic 'Added' events of all resources instances that exist at the
/// starting resource version", then live changes. A namespaced watch sees its namespace only.
#[tokio::test]
async fn watch_from_now_starts_with_synthetic_added_events() {
    let (_server, c) = setup(Options::default()).await;
    for (ns, name) in [
        ("ns1", "p1"),
        ("ns1", "p2"),
        ("ns2", "p3"),
        ("ns3", "p1"),
        ("ns3", "p2"),
    ] {
        c.post(
            &format!("/api/v1/namespaces/{ns}/pods"),
            &json!({"metadata": {"name": name}}),
        )
        .await
        .unwrap();
    }
    for (ns, query) in [
        ("ns1", "watch=true"),
        ("ns3", "watch=true&resourceVersion=0"),
    ] {
        let mut w = c
            .watch(&format!("/api/v1/namespaces/{ns}/pods?{query}"))
            .await
            .unwrap();
        let first: Vec<_> = [next(&mut w).await, next(&mut w).await]
            .iter()
            .map(|e| summary(e).0 + &summary(e).1)
            .collect();
        assert_eq!(first, ["ADDEDp1", "ADDEDp2"], "{query}");
        c.post(
            "/api/v1/namespaces/ns2/pods",
            &json!({"metadata": {"generateName": "x-"}}),
        )
        .await
        .unwrap();
        let mine = c
            .post(
                &format!("/api/v1/namespaces/{ns}/pods"),
                &json!({"metadata": {"generateName": "y-"}}),
            )
            .await
            .unwrap()
            .json();
        let e = next(&mut w).await;
        assert_eq!(e["type"], "ADDED");
        assert_eq!(e["object"]["metadata"]["name"], mine["metadata"]["name"]);
    }
    let mut all = c.watch("/api/v1/pods?watch=true").await.unwrap();
    let mut n = 0;
    while all.next_within(Duration::from_millis(300)).await.is_ok() {
        n += 1;
    }
    assert_eq!(n, 9);
}

/// "410 Gone responses": a watch from a resourceVersion older than the history kept is
/// answered with HTTP 200 and one ERROR event holding a 410 Expired Status ("too old
/// resource version: R (OLDEST)"), then the stream ends. Both explicit compaction and the
/// history limit cause it.
#[tokio::test]
async fn watch_from_a_compacted_revision_gets_an_expired_error_event() {
    let (server, c) = setup(Options::default()).await;
    put_node(&c, "a", json!({})).await;
    let old = server.revision();
    put_node(&c, "b", json!({})).await;
    put_node(&c, "c", json!({})).await;
    server.compact(server.revision() - 1);
    let oldest = server.revision() - 1;

    let mut w = c
        .watch(&format!("/api/v1/nodes?watch=true&resourceVersion={old}"))
        .await
        .unwrap();
    assert_eq!(w.status, 200);
    let e = next(&mut w).await;
    assert_eq!(
        e,
        json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("too old resource version: {old} ({oldest})"), "reason": "Expired", "code": 410}})
    );
    assert!(
        w.next_within(WAIT).await.unwrap().is_none(),
        "the stream ends after the error"
    );

    // From the compacted revision itself, the history is still there.
    let mut ok = c
        .watch(&format!(
            "/api/v1/nodes?watch=true&resourceVersion={oldest}"
        ))
        .await
        .unwrap();
    assert_eq!(summary(&next(&mut ok).await).1, "c");

    let (limited, c) = setup(Options {
        history_limit: Some(3),
        ..Default::default()
    })
    .await;
    let first = put_node(&c, "n0", json!({})).await;
    for i in 1..6 {
        put_node(&c, &format!("n{i}"), json!({})).await;
    }
    let mut w = c
        .watch(&format!(
            "/api/v1/nodes?watch=true&resourceVersion={}",
            rv(&first)
        ))
        .await
        .unwrap();
    let e = next(&mut w).await;
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["object"]["code"], 410);
    let keep_from = limited.revision() - 3;
    let mut w = c
        .watch(&format!(
            "/api/v1/nodes?watch=true&resourceVersion={keep_from}"
        ))
        .await
        .unwrap();
    assert_eq!(next(&mut w).await["type"], "ADDED");
}

/// "Watch bookmarks": with allowWatchBookmarks=true the server sends BOOKMARK events whose
/// object has only kind, apiVersion and metadata.resourceVersion, the revision the stream has
/// reached (writes to other resources included), so a client can resume from there.
#[tokio::test]
async fn bookmarks_carry_the_current_revision() {
    let (server, c) = setup(Options {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    put_node(&c, "n1", json!({})).await;
    let mut w = c
        .watch("/api/v1/nodes?watch=true&allowWatchBookmarks=true")
        .await
        .unwrap();
    assert_eq!(next(&mut w).await["type"], "ADDED");
    c.post(
        "/api/v1/namespaces/ns/pods",
        &json!({"metadata": {"name": "p"}}),
    )
    .await
    .unwrap();
    // Bookmarks come every 200 ms; the first may predate the pod write, a later one has it.
    let mut b = next(&mut w).await;
    for _ in 0..10 {
        assert_eq!(b["type"], "BOOKMARK");
        if rv(&b["object"]) == server.revision() {
            break;
        }
        assert!(rv(&b["object"]) < server.revision());
        b = next(&mut w).await;
    }
    assert_eq!(
        b,
        json!({"type": "BOOKMARK", "object": {"kind": "Node", "apiVersion": "v1",
               "metadata": {"resourceVersion": server.revision().to_string()}}})
    );
    // Resuming from a bookmark misses nothing after it.
    let n2 = put_node(&c, "n2", json!({})).await;
    let mut resumed = c
        .watch(&format!(
            "/api/v1/nodes?watch=true&resourceVersion={}",
            rv(&b["object"])
        ))
        .await
        .unwrap();
    assert_eq!(
        summary(&next(&mut resumed).await),
        ("ADDED".into(), "n2".into(), rv(&n2))
    );

    // Without allowWatchBookmarks there are none.
    let mut quiet = c
        .watch(&format!(
            "/api/v1/nodes?watch=true&resourceVersion={}",
            server.revision()
        ))
        .await
        .unwrap();
    assert!(quiet.next_within(Duration::from_millis(700)).await.is_err());
}

/// "Streaming lists": sendInitialEvents=true (with resourceVersionMatch=NotOlderThan and
/// allowWatchBookmarks=true) sends the current objects as ADDED, then a BOOKMARK annotated
/// `k8s.io/initial-events-end: "true"`; without those two parameters it is invalid.
#[tokio::test]
async fn streaming_list_ends_initial_events_with_an_annotated_bookmark() {
    let (server, c) = setup(Options {
        bookmark_interval: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    put_node(&c, "n1", json!({})).await;
    put_node(&c, "n2", json!({})).await;
    let mut w = c
        .watch("/api/v1/nodes?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
        .await
        .unwrap();
    assert_eq!(summary(&next(&mut w).await).1, "n1");
    assert_eq!(summary(&next(&mut w).await).1, "n2");
    let b = next(&mut w).await;
    assert_eq!(b["type"], "BOOKMARK");
    assert_eq!(
        b["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(rv(&b["object"]), server.revision());
    let r = c
        .get("/api/v1/nodes?watch=true&sendInitialEvents=true")
        .await
        .unwrap();
    assert_eq!(r.status, 422);
}

/// "Semantics for watch": `timeoutSeconds` limits the watch; the stream then ends cleanly
/// (the chunked body terminates).
#[tokio::test]
async fn timeout_seconds_ends_the_stream() {
    let (_server, c) = setup(Options::default()).await;
    let start = Instant::now();
    let mut w = c
        .watch("/api/v1/nodes?watch=true&timeoutSeconds=1")
        .await
        .unwrap();
    assert!(w.next_within(WAIT).await.unwrap().is_none());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

/// Selectors on a watch ("Semantics for watch" with labelSelector / fieldSelector, as the
/// apiserver filters events): an object that starts matching arrives as ADDED, one that stops
/// matching as DELETED (its previous content at the new revision); `metadata.name=` watches
/// one object (kube's `watch_object`), as does a watch on the object's own path.
#[tokio::test]
async fn selectors_filter_and_translate_events() {
    let (server, c) = setup(Options::default()).await;
    put_node(&c, "n1", json!({"zone": "a"})).await;
    put_node(&c, "n2", json!({"zone": "b"})).await;
    let from = server.revision();
    let mut w = c
        .watch(&format!(
            "/api/v1/nodes?watch=true&resourceVersion={from}&labelSelector=zone%3Da"
        ))
        .await
        .unwrap();
    let mut by_name = c
        .watch(&format!(
            "/api/v1/nodes?watch=true&resourceVersion={from}&fieldSelector=metadata.name%3Dn2"
        ))
        .await
        .unwrap();
    let mut by_path = c
        .watch(&format!(
            "/api/v1/nodes/n2?watch=true&resourceVersion={from}"
        ))
        .await
        .unwrap();

    let moved_in = label_node(&c, "n2", json!({"zone": "a"})).await;
    let moved_out = label_node(&c, "n1", json!({"zone": "c"})).await;
    label_node(&c, "n1", json!({"zone": "d"})).await; // not matching before or after: nothing

    let e = next(&mut w).await;
    assert_eq!(summary(&e), ("ADDED".into(), "n2".into(), rv(&moved_in)));
    let e = next(&mut w).await;
    assert_eq!(summary(&e), ("DELETED".into(), "n1".into(), rv(&moved_out)));
    assert_eq!(
        e["object"]["metadata"]["labels"]["zone"], "a",
        "the previous content"
    );
    assert!(w.next_within(Duration::from_millis(300)).await.is_err());

    for stream in [&mut by_name, &mut by_path] {
        let e = next(stream).await;
        assert_eq!(summary(&e), ("MODIFIED".into(), "n2".into(), rv(&moved_in)));
        assert!(
            stream
                .next_within(Duration::from_millis(300))
                .await
                .is_err()
        );
    }
    let r = c
        .get("/api/v1/nodes?watch=true&fieldSelector=spec.nodeName%3Dx")
        .await
        .unwrap();
    assert_eq!(r.status, 400);
}

/// Writes never wait for watchers; a watcher that falls too far behind is closed, as the
/// apiserver's cacher closes watchers whose buffer is full ("Forcing watcher close due to
/// unresponsiveness"); a client then re-watches from its last resourceVersion.
#[tokio::test]
async fn a_slow_watcher_is_closed_and_never_blocks_writes() {
    let (server, c) = setup(Options {
        watch_buffer: 16,
        ..Default::default()
    })
    .await;
    let start_rv = server.revision();
    let mut slow = c
        .watch(&format!(
            "/api/v1/nodes?watch=true&resourceVersion={start_rv}"
        ))
        .await
        .unwrap();
    // Large objects fill the socket buffers quickly, so the server-side receiver lags.
    let big = "x".repeat(256 * 1024);
    let started = Instant::now();
    for i in 0..150 {
        let r = c
            .post(
                "/api/v1/nodes",
                &json!({"metadata": {"name": format!("n{i}"), "annotations": {"big": big}}}),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201);
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "writes were held up: {:?}",
        started.elapsed()
    );
    let mut received = 0;
    while let Some(e) = slow.next_within(WAIT).await.unwrap() {
        assert_eq!(e["type"], "ADDED");
        received += 1;
    }
    eprintln!("the slow watcher got {received} of 150 events before it was closed");
    assert!(
        received < 150,
        "the slow watcher was not closed ({received} events)"
    );

    // A watcher that keeps up gets everything through the same small buffer.
    let from = server.revision();
    let mut prompt = c
        .watch(&format!(
            "/api/v1/namespaces/ns/pods?watch=true&resourceVersion={from}"
        ))
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 200 {
            let e = prompt
                .next_within(WAIT)
                .await
                .unwrap()
                .expect("stream ended");
            assert_eq!(e["type"], "ADDED");
            n += 1;
        }
        n
    });
    for i in 0..200 {
        let r = c
            .post(
                "/api/v1/namespaces/ns/pods",
                &json!({"metadata": {"name": format!("p{i}")}}),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201);
    }
    assert_eq!(reader.await.unwrap(), 200);
}

/// Optimistic concurrency under load ("Resource versions": compare-and-swap on
/// resourceVersion): many clients incrementing one counter with GET + PUT and retry on 409
/// lose no increment, and every successful write took exactly one revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_compare_and_swap_loses_nothing() {
    let (server, c) = setup(Options::default()).await;
    c.post(
        "/api/v1/nodes",
        &json!({"metadata": {"name": "counter", "annotations": {"n": "0"}}}),
    )
    .await
    .unwrap();
    let start = server.revision();
    let mut from = c
        .watch(&format!("/api/v1/nodes?watch=true&resourceVersion={start}"))
        .await
        .unwrap();
    let (workers, per_worker) = (8, 25);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..per_worker {
                loop {
                    let mut node = c.get("/api/v1/nodes/counter").await.unwrap().json();
                    let n: u64 = node["metadata"]["annotations"]["n"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    node["metadata"]["annotations"]["n"] = (n + 1).to_string().into();
                    let r = c.put("/api/v1/nodes/counter", &node).await.unwrap();
                    match r.status {
                        200 => break,
                        409 => conflicts += 1,
                        other => panic!("unexpected {other}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = workers * per_worker;
    let node = c.get("/api/v1/nodes/counter").await.unwrap().json();
    assert_eq!(node["metadata"]["annotations"]["n"], total.to_string());
    assert_eq!(server.revision(), start + total);
    assert_eq!(rv(&node), start + total);
    // The watch saw each write once, in revision order.
    for i in 1..=total {
        let e = next(&mut from).await;
        assert_eq!(rv(&e["object"]), start + i);
        assert_eq!(e["object"]["metadata"]["annotations"]["n"], i.to_string());
    }
}

/// Shutting the server down ends open watches and stops listening (what a test relies on to
/// simulate an apiserver going away).
#[tokio::test]
async fn shutdown_ends_watches_and_stops_listening() {
    let (server, c) = setup(Options::default()).await;
    let mut w = c.watch("/api/v1/nodes?watch=true").await.unwrap();
    assert!(
        w.next_within(Duration::from_millis(200)).await.is_err(),
        "no events yet"
    );
    server.shutdown().await;
    assert!(matches!(w.next_within(WAIT).await, Ok(None) | Err(_)));
    assert!(c.get("/api/v1/nodes").await.is_err());
}
