//! LIST over raw HTTP: collections, pagination, selectors and resourceVersion semantics,
//! checked against "Kubernetes API Concepts".

use serde_json::{Value, json};
use testapi::client::Client;
use testapi::{Options, Server};

async fn setup() -> (Server, Client) {
    let server = Server::start(Options::default()).await.unwrap();
    let client = Client::new(server.addr());
    (server, client)
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn node(c: &Client, name: &str, labels: Value) -> Value {
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

async fn pod(c: &Client, ns: &str, name: &str, node: &str) {
    let r = c
        .post(
            &format!("/api/v1/namespaces/{ns}/pods"),
            &json!({"metadata": {"name": name}, "spec": {"nodeName": node}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201);
}

/// "Collections": a list is a `<Kind>List` whose items carry apiVersion and kind, with
/// `metadata.resourceVersion` the revision the list was read at ("the resourceVersion of the
/// collection"). `/api/v1/pods` lists every namespace; a namespaced path only its own.
/// Items come in key order: namespace, then name.
#[tokio::test]
async fn lists_are_kind_list_in_key_order() {
    let (server, c) = setup().await;
    pod(&c, "b-ns", "p1", "n1").await;
    pod(&c, "a-ns", "z", "n1").await;
    pod(&c, "a-ns", "a", "n2").await;
    node(&c, "n1", json!({})).await; // a write elsewhere moves the revision too

    let all = c.get("/api/v1/pods").await.unwrap();
    assert_eq!(all.status, 200);
    let all = all.json();
    assert_eq!(all["kind"], "PodList");
    assert_eq!(all["apiVersion"], "v1");
    assert_eq!(rv(&all), server.revision());
    assert_eq!(names(&all), ["a", "z", "p1"]);
    for item in all["items"].as_array().unwrap() {
        assert_eq!(item["kind"], "Pod");
        assert_eq!(item["apiVersion"], "v1");
    }
    assert!(all["metadata"].get("continue").is_none());

    let one = c.get("/api/v1/namespaces/a-ns/pods").await.unwrap().json();
    assert_eq!(names(&one), ["a", "z"]);
    let empty = c.get("/api/v1/namespaces/none/pods").await.unwrap().json();
    assert_eq!(empty["items"], json!([]));
}

/// "Retrieving large results sets in chunks": `limit` caps a page, `continue` fetches the
/// next, `remainingItemCount` says how many are left, and every page is served at the
/// first page's resourceVersion: changes made between pages do not show.
#[tokio::test]
async fn pages_are_one_consistent_snapshot() {
    let (_server, c) = setup().await;
    for n in ["n1", "n2", "n3", "n4", "n5"] {
        node(&c, n, json!({"v": "old"})).await;
    }
    let p1 = c.get("/api/v1/nodes?limit=2").await.unwrap().json();
    assert_eq!(names(&p1), ["n1", "n2"]);
    assert_eq!(p1["metadata"]["remainingItemCount"], 3);
    let snapshot = rv(&p1);
    let token = p1["metadata"]["continue"].as_str().unwrap().to_string();

    // Change the world between pages.
    c.delete("/api/v1/nodes/n3", None).await.unwrap();
    c.patch(
        "/api/v1/nodes/n4",
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"v": "new"}}}),
    )
    .await
    .unwrap();
    node(&c, "n35", json!({"v": "new"})).await;

    let p2 = c
        .get(&format!("/api/v1/nodes?limit=2&continue={token}"))
        .await
        .unwrap()
        .json();
    assert_eq!(names(&p2), ["n3", "n4"]);
    assert_eq!(p2["items"][1]["metadata"]["labels"]["v"], "old");
    assert_eq!(rv(&p2), snapshot);
    assert_eq!(p2["metadata"]["remainingItemCount"], 1);
    let token = p2["metadata"]["continue"].as_str().unwrap().to_string();
    let p3 = c
        .get(&format!("/api/v1/nodes?limit=2&continue={token}"))
        .await
        .unwrap()
        .json();
    assert_eq!(names(&p3), ["n5"]);
    assert_eq!(rv(&p3), snapshot);
    assert!(p3["metadata"].get("continue").is_none());
    assert!(p3["metadata"].get("remainingItemCount").is_none());

    // A fresh list sees the new state.
    let fresh = c.get("/api/v1/nodes").await.unwrap().json();
    assert_eq!(names(&fresh), ["n1", "n2", "n35", "n4", "n5"]);

    // A continue token is not to be combined with a resourceVersion, and garbage is 400.
    let r = c
        .get(&format!(
            "/api/v1/nodes?limit=2&continue={token}&resourceVersion=1"
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        c.get("/api/v1/nodes?limit=2&continue=garbage")
            .await
            .unwrap()
            .status,
        400
    );
}

/// "Retrieving large results sets in chunks": a continue token whose resourceVersion has been
/// compacted is 410 Gone (reason Expired), with the apiserver's message and a token that
/// continues at the newest revision instead (inconsistently).
#[tokio::test]
async fn a_compacted_continue_token_is_expired() {
    let (server, c) = setup().await;
    for n in ["n1", "n2", "n3"] {
        node(&c, n, json!({})).await;
    }
    let p1 = c.get("/api/v1/nodes?limit=1").await.unwrap().json();
    let token = p1["metadata"]["continue"].as_str().unwrap().to_string();
    c.delete("/api/v1/nodes/n2", None).await.unwrap();
    server.compact(server.revision());

    let r = c
        .get(&format!("/api/v1/nodes?limit=1&continue={token}"))
        .await
        .unwrap();
    assert_eq!(r.status, 410);
    let s = r.json();
    assert_eq!(s["reason"], "Expired");
    assert_eq!(s["code"], 410);
    assert_eq!(
        s["message"],
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."
    );
    let inconsistent = s["metadata"]["continue"].as_str().unwrap();
    let rest = c
        .get(&format!("/api/v1/nodes?continue={inconsistent}"))
        .await
        .unwrap()
        .json();
    assert_eq!(names(&rest), ["n3"]);
    assert_eq!(rv(&rest), server.revision());
}

/// "Labels and Selectors" and "Field Selectors": `=`, `==`, `!=`, `in`, `notin`, `key`,
/// `!key`; fields metadata.name, metadata.namespace and, for pods, spec.nodeName; an
/// unsupported field or a malformed selector is 400. With a selector the server does not
/// report remainingItemCount.
#[tokio::test]
async fn label_and_field_selectors() {
    let (_server, c) = setup().await;
    node(&c, "n1", json!({"zone": "a", "rr": "true"})).await;
    node(&c, "n2", json!({"zone": "b"})).await;
    node(&c, "n3", json!({"zone": "c"})).await;
    node(&c, "n4", json!({})).await;
    let q = |sel: &'static str| {
        let c = c.clone();
        async move {
            let r = c.get(&format!("/api/v1/nodes?{sel}")).await.unwrap();
            assert_eq!(r.status, 200, "{sel}: {}", String::from_utf8_lossy(&r.body));
            names(&r.json())
        }
    };
    assert_eq!(q("labelSelector=zone%3Da").await, ["n1"]);
    assert_eq!(q("labelSelector=zone%3D%3Db").await, ["n2"]);
    assert_eq!(q("labelSelector=zone%21%3Da").await, ["n2", "n3", "n4"]);
    assert_eq!(q("labelSelector=zone+in+%28a%2Cc%29").await, ["n1", "n3"]);
    assert_eq!(
        q("labelSelector=zone+notin+%28a%2Cc%29").await,
        ["n2", "n4"]
    );
    assert_eq!(q("labelSelector=zone").await, ["n1", "n2", "n3"]);
    assert_eq!(q("labelSelector=%21zone").await, ["n4"]);
    assert_eq!(q("labelSelector=zone%2Crr%3Dtrue").await, ["n1"]);
    assert_eq!(q("fieldSelector=metadata.name%3Dn3").await, ["n3"]);
    assert_eq!(
        q("fieldSelector=metadata.name%21%3Dn3").await,
        ["n1", "n2", "n4"]
    );

    let page = c
        .get("/api/v1/nodes?labelSelector=zone&limit=1")
        .await
        .unwrap()
        .json();
    assert_eq!(names(&page), ["n1"]);
    assert!(page["metadata"]["continue"].is_string());
    assert!(page["metadata"].get("remainingItemCount").is_none());

    pod(&c, "ns1", "p1", "n1").await;
    pod(&c, "ns2", "p2", "n2").await;
    let on_n2 = c
        .get("/api/v1/pods?fieldSelector=spec.nodeName%3Dn2")
        .await
        .unwrap()
        .json();
    assert_eq!(names(&on_n2), ["p2"]);
    let in_ns1 = c
        .get("/api/v1/pods?fieldSelector=metadata.namespace%3Dns1")
        .await
        .unwrap()
        .json();
    assert_eq!(names(&in_ns1), ["p1"]);

    let r = c
        .get("/api/v1/nodes?fieldSelector=spec.nodeName%3Dn2")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (400, json!("BadRequest"))
    );
    assert_eq!(
        r.json()["message"],
        "field label not supported: spec.nodeName"
    );
    assert_eq!(
        c.get("/api/v1/nodes?labelSelector=zone+in+a")
            .await
            .unwrap()
            .status,
        400
    );
}

/// "Semantics for get and list": resourceVersionMatch=Exact serves the state at that
/// revision (410 once compacted); the legacy rule gives a non-"0" resourceVersion with
/// `limit` Exact semantics too (KEP-2523); NotOlderThan and "0" serve the newest state; a
/// revision the server has not reached is "Too large resource version" (504);
/// resourceVersionMatch without resourceVersion is invalid.
#[tokio::test]
async fn resource_version_semantics_for_list() {
    let (server, c) = setup().await;
    node(&c, "n1", json!({})).await;
    let r1 = server.revision();
    node(&c, "n2", json!({})).await;
    c.delete("/api/v1/nodes/n1", None).await.unwrap();
    let now = server.revision();

    let exact = c
        .get(&format!(
            "/api/v1/nodes?resourceVersion={r1}&resourceVersionMatch=Exact"
        ))
        .await
        .unwrap()
        .json();
    assert_eq!(names(&exact), ["n1"]);
    assert_eq!(rv(&exact), r1);
    let legacy = c
        .get(&format!("/api/v1/nodes?resourceVersion={r1}&limit=10"))
        .await
        .unwrap()
        .json();
    assert_eq!(names(&legacy), ["n1"]);
    for q in [
        format!("resourceVersion={r1}&resourceVersionMatch=NotOlderThan"),
        format!("resourceVersion={r1}"),
        "resourceVersion=0".into(),
    ] {
        let l = c.get(&format!("/api/v1/nodes?{q}")).await.unwrap().json();
        assert_eq!(names(&l), ["n2"], "{q}");
        assert_eq!(rv(&l), now, "{q}");
    }
    let future = c
        .get(&format!("/api/v1/nodes?resourceVersion={}", now + 5))
        .await
        .unwrap();
    assert_eq!(future.status, 504);
    assert_eq!(future.json()["reason"], "Timeout");
    assert_eq!(
        c.get("/api/v1/nodes?resourceVersionMatch=Exact")
            .await
            .unwrap()
            .status,
        422
    );
    assert_eq!(
        c.get("/api/v1/nodes?resourceVersion=abc")
            .await
            .unwrap()
            .status,
        400
    );

    server.compact(now);
    let r = c
        .get(&format!(
            "/api/v1/nodes?resourceVersion={r1}&resourceVersionMatch=Exact"
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 410);
    assert_eq!(r.json()["reason"], "Expired");
    assert_eq!(
        r.json()["message"],
        format!("too old resource version: {r1} ({now})")
    );
    // The compacted revision itself is still readable.
    let at_now = c
        .get(&format!(
            "/api/v1/nodes?resourceVersion={now}&resourceVersionMatch=Exact"
        ))
        .await
        .unwrap();
    assert_eq!(names(&at_now.json()), ["n2"]);
}
