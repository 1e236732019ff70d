//! Create, get, update, patch and delete over raw HTTP, checked against the documented
//! behaviour of the Kubernetes API ("Kubernetes API Concepts" unless said otherwise).

use serde_json::{Value, json};
use testapi::client::Client;
use testapi::{Options, Server};

async fn setup() -> (Server, Client) {
    let server = Server::start(Options::default()).await.unwrap();
    let client = Client::new(server.addr());
    (server, client)
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}})
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

const PODS: &str = "/api/v1/namespaces/default/pods";

fn calico_like_crd(plural: &str, kind: &str, scope: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.crd.projectcalico.org")},
        "spec": {"group": "crd.projectcalico.org", "scope": scope,
                 "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": format!("{kind}List")},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    })
}

/// "Resource versions" / "Object Names and IDs": create returns 201 with the server-set
/// uid, creationTimestamp, generation 1 and a resourceVersion; resourceVersions come from one
/// counter across resources (etcd's revision), each write takes the next one, and a failed
/// write takes none.
#[tokio::test]
async fn create_sets_system_metadata_and_takes_the_next_revision() {
    let (server, c) = setup().await;
    let start = server.revision();
    let r = c.post(PODS, &pod("p1")).await.unwrap();
    assert_eq!(r.status, 201);
    let p1 = r.json();
    assert_eq!(p1["kind"], "Pod");
    assert_eq!(p1["apiVersion"], "v1");
    assert_eq!(p1["metadata"]["namespace"], "default");
    assert_eq!(p1["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(
        p1["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(p1["metadata"]["generation"], 1);
    assert_eq!(rv(&p1), start + 1);

    // A different resource shares the counter.
    let n1 = c
        .post("/api/v1/nodes", &json!({"metadata": {"name": "n1"}}))
        .await
        .unwrap()
        .json();
    assert_eq!(rv(&n1), start + 2);
    assert_eq!(n1["kind"], "Node");

    // A failed write takes no revision.
    assert_eq!(c.post(PODS, &pod("p1")).await.unwrap().status, 409);
    assert_eq!(server.revision(), start + 2);
    let p2 = c.post(PODS, &pod("p2")).await.unwrap().json();
    assert_eq!(rv(&p2), start + 3);
    assert_ne!(p1["metadata"]["uid"], p2["metadata"]["uid"]);

    // GET returns the stored object.
    let got = c.get(&format!("{PODS}/p1")).await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.json(), p1);
}

/// "Responses" (Status objects) and the apiserver's create checks: an existing name is 409
/// AlreadyExists; a resourceVersion on create is 400; a body namespace different from the
/// URL's is 400; a name that is not a DNS-1123 subdomain ("Object Names and IDs") is 422
/// Invalid with a cause on `metadata.name`; `generateName` gets a random suffix.
#[tokio::test]
async fn create_rejects_what_the_apiserver_rejects() {
    let (_server, c) = setup().await;
    c.post(PODS, &pod("p1")).await.unwrap();

    let r = c.post(PODS, &pod("p1")).await.unwrap();
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "pods \"p1\" already exists", "reason": "AlreadyExists",
               "details": {"name": "p1", "kind": "pods"}, "code": 409})
    );

    let mut with_rv = pod("p2");
    with_rv["metadata"]["resourceVersion"] = "5".into();
    let r = c.post(PODS, &with_rv).await.unwrap();
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (400, json!("BadRequest"))
    );
    assert_eq!(
        r.json()["message"],
        "resourceVersion should not be set on objects to be created"
    );

    let mut other_ns = pod("p3");
    other_ns["metadata"]["namespace"] = "kube-system".into();
    let r = c.post(PODS, &other_ns).await.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );

    for bad in [
        "Upper",
        "under_score",
        "-dash",
        "dash-",
        "a..b",
        &"a".repeat(254),
    ] {
        let r = c.post(PODS, &pod(bad)).await.unwrap();
        assert_eq!(r.status, 422, "{bad}");
        let s = r.json();
        assert_eq!(s["reason"], "Invalid");
        assert_eq!(s["details"]["kind"], "Pod");
        assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueInvalid");
        assert!(s["message"].as_str().unwrap().starts_with(&format!(
            "Pod \"{bad}\" is invalid: metadata.name: Invalid value"
        )));
    }
    // Dots are fine in a subdomain, not in a namespace (a label).
    assert_eq!(c.post(PODS, &pod("a.b-c.d")).await.unwrap().status, 201);
    let r = c
        .post("/api/v1/namespaces", &json!({"metadata": {"name": "a.b"}}))
        .await
        .unwrap();
    assert_eq!(r.status, 422);

    let r = c.post(PODS, &json!({"metadata": {}})).await.unwrap();
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json()["details"]["causes"][0]["reason"],
        "FieldValueRequired"
    );

    let r = c
        .post(PODS, &json!({"metadata": {"generateName": "web-"}}))
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let name = r.json()["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");

    let r = c
        .post(PODS, &json!({"kind": "Node", "metadata": {"name": "x"}}))
        .await
        .unwrap();
    assert_eq!(r.status, 400);

    // Namespaced resources are created in a namespace, not through the all-namespaces path.
    assert_eq!(
        c.post("/api/v1/pods", &pod("p9")).await.unwrap().status,
        405
    );
    let r = c
        .request("POST", PODS, Some("application/json"), Some(b"{not json"))
        .await
        .unwrap();
    assert_eq!(r.status, 400);
}

/// "Resource versions" / optimistic concurrency ("Conflicts" in "API Concepts" and the
/// API conventions): a PUT whose metadata.resourceVersion is not the stored one is 409
/// Conflict with the apiserver's message; without a resourceVersion the update is
/// unconditional. PUT on a missing object is 404; the name must match the URL; uid and
/// creationTimestamp cannot be changed.
#[tokio::test]
async fn update_is_compare_and_swap_on_resource_version() {
    let (server, c) = setup().await;
    let crd = calico_like_crd("ippools", "IPPool", "Cluster");
    assert_eq!(
        c.post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            &crd
        )
        .await
        .unwrap()
        .status,
        201
    );
    let path = "/apis/crd.projectcalico.org/v1/ippools";
    let created = c
        .post(
            path,
            &json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                            "metadata": {"name": "pool1"}, "spec": {"cidr": "198.18.0.0/16"}}),
        )
        .await
        .unwrap()
        .json();

    let mut v1 = created.clone();
    v1["spec"]["blockSize"] = 26.into();
    let r = c.put(&format!("{path}/pool1"), &v1).await.unwrap();
    assert_eq!(r.status, 200);
    let updated = r.json();
    assert_eq!(rv(&updated), rv(&created) + 1);
    assert_eq!(updated["spec"]["blockSize"], 26);
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        updated["metadata"]["creationTimestamp"],
        created["metadata"]["creationTimestamp"]
    );
    assert_eq!(updated["metadata"]["generation"], 2);

    // The stale version loses.
    let before = server.revision();
    let mut stale = created.clone();
    stale["spec"]["blockSize"] = 24.into();
    let r = c.put(&format!("{path}/pool1"), &stale).await.unwrap();
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "Operation cannot be fulfilled on ippools.crd.projectcalico.org \"pool1\": the object has been modified; please apply your changes to the latest version and try again",
               "reason": "Conflict",
               "details": {"name": "pool1", "group": "crd.projectcalico.org", "kind": "ippools"},
               "code": 409})
    );
    assert_eq!(server.revision(), before);

    // Without a resourceVersion the write is unconditional.
    let mut blind = stale.clone();
    blind["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let r = c.put(&format!("{path}/pool1"), &blind).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["spec"]["blockSize"], 24);

    // Missing object, name mismatch, uid change.
    let mut other = blind.clone();
    other["metadata"]["name"] = "pool2".into();
    let r = c.put(&format!("{path}/pool2"), &other).await.unwrap();
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (404, json!("NotFound"))
    );
    assert_eq!(
        r.json()["message"],
        "ippools.crd.projectcalico.org \"pool2\" not found"
    );
    let r = c.put(&format!("{path}/pool1"), &other).await.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "the name of the object (pool2) does not match the name on the URL (pool1)"
    );
    let mut new_uid = blind.clone();
    new_uid["metadata"]["uid"] = "00000000-0000-4000-8000-000000000000".into();
    let r = c.put(&format!("{path}/pool1"), &new_uid).await.unwrap();
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["details"]["causes"][0]["field"], "metadata.uid");
}

/// The apiserver skips the storage write when an update changes nothing (GuaranteedUpdate
/// compares the encoded object): the resourceVersion stays, no revision is taken. Changes
/// only to metadata do not bump `generation` (custom resources: "generation is incremented
/// … on changes to anything but metadata").
#[tokio::test]
async fn a_no_op_update_keeps_the_resource_version() {
    let (server, c) = setup().await;
    let p = c.post(PODS, &pod("p1")).await.unwrap().json();
    let before = server.revision();
    let same = c.put(&format!("{PODS}/p1"), &p).await.unwrap();
    assert_eq!(same.status, 200);
    assert_eq!(same.json(), p);
    assert_eq!(server.revision(), before);
    // Even without a resourceVersion in the body.
    let mut no_rv = p.clone();
    no_rv["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    assert_eq!(
        rv(&c.put(&format!("{PODS}/p1"), &no_rv).await.unwrap().json()),
        rv(&p)
    );
    // A merge patch that sets what is already there.
    let r = c
        .patch(
            &format!("{PODS}/p1"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"app": "web"}}}),
        )
        .await
        .unwrap();
    assert_eq!(rv(&r.json()), rv(&p));
    assert_eq!(server.revision(), before);

    let mut relabel = p.clone();
    relabel["metadata"]["labels"]["tier"] = "front".into();
    let r = c.put(&format!("{PODS}/p1"), &relabel).await.unwrap().json();
    assert_eq!(rv(&r), before + 1);
    assert_eq!(r["metadata"]["generation"], 1);
}

/// Status subresource ("Custom resources: Status subresource"; pods and nodes likewise):
/// writes to the main resource ignore status changes, writes to /status change only the
/// status. A new pod's status is Pending whatever the client sent.
#[tokio::test]
async fn status_subresource_splits_spec_and_status() {
    let (_server, c) = setup().await;
    let mut p = pod("p1");
    p["status"] = json!({"phase": "Running", "podIP": "198.18.0.5"});
    let p = c.post(PODS, &p).await.unwrap().json();
    assert_eq!(p["status"], json!({"phase": "Pending"}));

    let mut with_status = p.clone();
    with_status["status"]["podIP"] = "198.18.0.9".into();
    with_status["metadata"]["labels"]["x"] = "y".into();
    let r = c
        .put(&format!("{PODS}/p1"), &with_status)
        .await
        .unwrap()
        .json();
    assert_eq!(r["status"], json!({"phase": "Pending"}));
    assert_eq!(r["metadata"]["labels"]["x"], "y");

    let mut status_only = r.clone();
    status_only["status"] = json!({"phase": "Running", "podIP": "198.18.0.9"});
    status_only["spec"]["nodeName"] = "elsewhere".into();
    let s = c
        .put(&format!("{PODS}/p1/status"), &status_only)
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    let s = s.json();
    assert_eq!(s["status"]["podIP"], "198.18.0.9");
    assert_eq!(s["spec"]["nodeName"], "n1");

    let r = c
        .patch(
            &format!("{PODS}/p1/status"),
            "application/merge-patch+json",
            &json!({"status": {"phase": "Succeeded"}}),
        )
        .await
        .unwrap()
        .json();
    assert_eq!(r["status"]["phase"], "Succeeded");
    assert_eq!(
        c.get(&format!("{PODS}/p1/status")).await.unwrap().json()["status"]["phase"],
        "Succeeded"
    );
    assert_eq!(
        c.get(&format!("{PODS}/p1/bogus")).await.unwrap().status,
        404
    );
}

/// "Patch" (and RFC 7386 / RFC 6902): merge patch merges maps and removes keys set to
/// null; strategic merge patch behaves the same on maps; JSON patch applies operations in
/// order and fails as a whole on a failed `test` (422). A resourceVersion in the patch is a
/// precondition (409 on mismatch). Unknown patch types are 415.
#[tokio::test]
async fn patch_types_and_preconditions() {
    let (server, c) = setup().await;
    let mut p = pod("p1");
    p["metadata"]["annotations"] = json!({"keep": "1", "drop": "2"});
    let p = c.post(PODS, &p).await.unwrap().json();
    let url = format!("{PODS}/p1");

    let r = c
        .patch(&url, "application/merge-patch+json",
               &json!({"metadata": {"labels": {"tier": "db"}, "annotations": {"drop": null, "new": "3"}}}))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let m = r.json();
    assert_eq!(m["metadata"]["labels"], json!({"app": "web", "tier": "db"}));
    assert_eq!(
        m["metadata"]["annotations"],
        json!({"keep": "1", "new": "3"})
    );
    assert_eq!(rv(&m), rv(&p) + 1);

    let r = c
        .patch(
            &url,
            "application/strategic-merge-patch+json",
            &json!({"metadata": {"labels": {"app": null}}}),
        )
        .await
        .unwrap()
        .json();
    assert_eq!(r["metadata"]["labels"], json!({"tier": "db"}));

    let r = c
        .patch(
            &url,
            "application/json-patch+json",
            &json!([{"op": "test", "path": "/metadata/labels/tier", "value": "db"},
                       {"op": "replace", "path": "/metadata/labels/tier", "value": "cache"},
                       {"op": "add", "path": "/metadata/annotations/a~1b", "value": "slash"}]),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["metadata"]["labels"]["tier"], "cache");
    assert_eq!(j["metadata"]["annotations"]["a/b"], "slash");

    let before = server.revision();
    let r = c
        .patch(
            &url,
            "application/json-patch+json",
            &json!([{"op": "replace", "path": "/metadata/labels/tier", "value": "x"},
                       {"op": "test", "path": "/metadata/labels/tier", "value": "db"}]),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (422, json!("Invalid"))
    );
    assert_eq!(server.revision(), before);
    assert_eq!(
        c.get(&url).await.unwrap().json()["metadata"]["labels"]["tier"],
        "cache"
    );

    // resourceVersion in a merge patch: a precondition.
    let stale = c
        .patch(
            &url,
            "application/merge-patch+json",
            &json!({"metadata": {"resourceVersion": rv(&p).to_string(), "labels": {"x": "1"}}}),
        )
        .await
        .unwrap();
    assert_eq!(stale.status, 409);
    assert_eq!(stale.json()["reason"], "Conflict");
    let current = rv(&j).to_string();
    let fresh = c
        .patch(
            &url,
            "application/merge-patch+json",
            &json!({"metadata": {"resourceVersion": current, "labels": {"x": "1"}}}),
        )
        .await
        .unwrap();
    assert_eq!(fresh.status, 200);
    assert_eq!(rv(&fresh.json()), rv(&j) + 1);

    let r = c
        .patch(
            &format!("{PODS}/nope"),
            "application/merge-patch+json",
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    let r = c
        .patch(&url, "application/apply-patch+yaml", &json!({}))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (415, json!("UnsupportedMediaType"))
    );
    let r = c.patch(&url, "application/json", &json!({})).await.unwrap();
    assert_eq!(r.status, 415);
    let r = c
        .patch(&url, "application/json-patch+json", &json!({"op": "add"}))
        .await
        .unwrap();
    assert_eq!(r.status, 400);
}

/// DELETE ("Deletion" in the API conventions, `DeleteOptions.preconditions`): answers 200 with
/// the object as last stored; preconditions on uid and resourceVersion are 409 Conflict when
/// they do not hold; a missing object is 404. Nodes answer with a Success Status instead of
/// the object (the node registry does not set ReturnDeletedObject).
#[tokio::test]
async fn delete_with_preconditions() {
    let (server, c) = setup().await;
    let p = c.post(PODS, &pod("p1")).await.unwrap().json();
    let url = format!("{PODS}/p1");

    let r = c
        .delete(
            &url,
            Some(&json!({"kind": "DeleteOptions", "apiVersion": "v1",
                                   "preconditions": {"resourceVersion": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json()["message"],
        format!(
            "Operation cannot be fulfilled on pods \"p1\": Precondition failed: ResourceVersion in precondition: 1, ResourceVersion in object meta: {}",
            rv(&p)
        )
    );
    let r = c
        .delete(
            &url,
            Some(&json!({"preconditions": {"uid": "not-the-uid"}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 409);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("Precondition failed: UID in precondition: not-the-uid")
    );

    let before = server.revision();
    let r = c
        .delete(&url, Some(&json!({"preconditions": {"uid": p["metadata"]["uid"], "resourceVersion": rv(&p).to_string()}})))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), p);
    assert_eq!(server.revision(), before + 1);
    assert_eq!(c.get(&url).await.unwrap().status, 404);
    assert_eq!(c.delete(&url, None).await.unwrap().status, 404);

    let n = c
        .post("/api/v1/nodes", &json!({"metadata": {"name": "n1"}}))
        .await
        .unwrap()
        .json();
    let r = c.delete("/api/v1/nodes/n1", None).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
               "details": {"name": "n1", "kind": "nodes", "uid": n["metadata"]["uid"]}})
    );
}

/// deletecollection ("Kubernetes API Concepts", "Collections"): deletes what the selectors
/// select, one object at a time.
#[tokio::test]
async fn delete_collection_by_label() {
    let (_server, c) = setup().await;
    c.post(PODS, &pod("a")).await.unwrap();
    let mut other = pod("b");
    other["metadata"]["labels"]["app"] = "db".into();
    c.post(PODS, &other).await.unwrap();
    let r = c
        .delete(&format!("{PODS}?labelSelector=app%3Dweb"), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    let left = c.get(PODS).await.unwrap().json();
    assert_eq!(left["items"][0]["metadata"]["name"], "b");
    assert_eq!(left["items"].as_array().unwrap().len(), 1);
}

/// An unknown resource is 404 NotFound ("the server could not find the requested
/// resource"), as is a cluster-scoped resource addressed under a namespace.
#[tokio::test]
async fn unknown_resources_are_not_found() {
    let (_server, c) = setup().await;
    for path in [
        "/apis/crd.projectcalico.org/v1/ippools",
        "/api/v1/services",
        "/api/v1/namespaces/default/nodes",
    ] {
        let r = c.get(path).await.unwrap();
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            r.json(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "the server could not find the requested resource", "reason": "NotFound",
                   "details": {}, "code": 404}),
            "{path}"
        );
    }
    let r = c.get("/api/v1/nodes/missing").await.unwrap();
    assert_eq!(
        r.json()["details"],
        json!({"name": "missing", "kind": "nodes"})
    );
    assert_eq!(r.json()["message"], "nodes \"missing\" not found");
}

/// "Extend the Kubernetes API with CustomResourceDefinitions": creating a CRD serves its
/// group/version/plural at the declared scope (and marks it Established); the CRD's name
/// must be `<plural>.<group>`; deleting it stops serving the resource.
#[tokio::test]
async fn crds_register_custom_resources() {
    let (_server, c) = setup().await;
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let r = c
        .post(crds, &calico_like_crd("bgppeers", "BGPPeer", "Cluster"))
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let conditions = r.json()["status"]["conditions"].clone();
    assert!(
        conditions
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    );

    let peers = "/apis/crd.projectcalico.org/v1/bgppeers";
    let r = c.post(peers, &json!({"metadata": {"name": "rr1"}, "spec": {"peerIP": "192.0.2.1", "asNumber": 64512}})).await.unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["kind"], "BGPPeer");
    assert_eq!(r.json()["apiVersion"], "crd.projectcalico.org/v1");
    let list = c.get(peers).await.unwrap().json();
    assert_eq!(list["kind"], "BGPPeerList");
    assert_eq!(list["items"][0]["spec"]["asNumber"], 64512);
    // Cluster-scoped: not under a namespace.
    assert_eq!(
        c.get("/apis/crd.projectcalico.org/v1/namespaces/default/bgppeers")
            .await
            .unwrap()
            .status,
        404
    );

    let mut namespaced = calico_like_crd("networkpolicies", "NetworkPolicy", "Namespaced");
    namespaced["spec"]["versions"][0]["subresources"] = json!({"status": {}});
    assert_eq!(c.post(crds, &namespaced).await.unwrap().status, 201);
    let np = "/apis/crd.projectcalico.org/v1/namespaces/ns1/networkpolicies";
    let r = c
        .post(
            np,
            &json!({"metadata": {"name": "deny"}, "spec": {"order": 1}, "status": {"x": 1}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["metadata"]["namespace"], "ns1");
    assert!(
        r.json().get("status").is_none(),
        "status is dropped on create with a status subresource"
    );
    let all = c
        .get("/apis/crd.projectcalico.org/v1/networkpolicies")
        .await
        .unwrap()
        .json();
    assert_eq!(all["items"].as_array().unwrap().len(), 1);

    let mut misnamed = calico_like_crd("ippools", "IPPool", "Cluster");
    misnamed["metadata"]["name"] = "pools.crd.projectcalico.org".into();
    let r = c.post(crds, &misnamed).await.unwrap();
    assert_eq!(r.status, 422);

    assert_eq!(
        c.delete(&format!("{crds}/bgppeers.crd.projectcalico.org"), None)
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(c.get(peers).await.unwrap().status, 404);
}

/// `register_crds_from_dir` reads multi-document YAML manifests, as `kubectl apply -f dir`
/// would, skipping other kinds; `put_object`/`get_object` seed and read objects directly.
#[tokio::test]
async fn crds_from_a_directory_and_direct_seeding() {
    let (server, c) = setup().await;
    let dir = std::env::temp_dir().join(format!("testapi-crds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("crds.yaml"),
        "# Calico-style CRDs\n---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
         metadata:\n  name: ippools.crd.projectcalico.org\nspec:\n  group: crd.projectcalico.org\n  scope: Cluster\n\
         \x20 names:\n    kind: IPPool\n    listKind: IPPoolList\n    plural: ippools\n    singular: ippool\n\
         \x20 versions:\n  - name: v1\n    served: true\n    storage: true\n---\n\
         apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: ipamblocks.crd.projectcalico.org\n\
         spec:\n  group: crd.projectcalico.org\n  scope: Cluster\n  names: {kind: IPAMBlock, plural: ipamblocks}\n\
         \x20 versions: [{name: v1, served: true, storage: true}]\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ignored}\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
    let n = server.register_crds_from_dir(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        c.get("/apis/crd.projectcalico.org/v1/ipamblocks")
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        c.get("/apis/crd.projectcalico.org/v1/ippools")
            .await
            .unwrap()
            .json()["kind"],
        "IPPoolList"
    );

    let seeded = server
        .put_object(
            "/api/v1/namespaces/default/pods/seed",
            json!({"metadata": {"name": "seed"}, "status": {"podIP": "198.18.0.1"}}),
        )
        .unwrap();
    assert_eq!(seeded["status"]["podIP"], "198.18.0.1");
    assert_eq!(c.get(&format!("{PODS}/seed")).await.unwrap().json(), seeded);
    assert_eq!(
        server
            .get_object("/api/v1/namespaces/default/pods/seed")
            .unwrap(),
        seeded
    );
    assert!(server.put_object("/api/v1/pods/seed", json!({})).is_err());
    server
        .delete_object("/api/v1/namespaces/default/pods/seed")
        .unwrap();
    assert!(
        server
            .get_object("/api/v1/namespaces/default/pods/seed")
            .is_none()
    );
}

/// Minimal discovery ("Discovery API"): `/api` lists v1, `/apis` the groups (custom ones
/// included once registered), `/apis/<group>/<version>` the resources with their verbs and
/// status subresources; `/version` answers.
#[tokio::test]
async fn discovery_lists_the_served_resources() {
    let (server, c) = setup().await;
    assert_eq!(
        c.get("/api").await.unwrap().json()["versions"],
        json!(["v1"])
    );
    let core = c.get("/api/v1").await.unwrap().json();
    assert_eq!(core["kind"], "APIResourceList");
    let names: Vec<&str> = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"pods") && names.contains(&"pods/status") && names.contains(&"nodes"),
        "{names:?}"
    );
    server
        .register_crd(calico_like_crd("ippools", "IPPool", "Cluster"))
        .unwrap();
    let groups = c.get("/apis").await.unwrap().json();
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "crd.projectcalico.org")
    );
    let calico = c
        .get("/apis/crd.projectcalico.org/v1")
        .await
        .unwrap()
        .json();
    assert_eq!(calico["resources"][0]["kind"], "IPPool");
    assert_eq!(calico["resources"][0]["namespaced"], false);
    assert_eq!(
        c.get("/apis/nothing.example.org/v1").await.unwrap().status,
        404
    );
    assert_eq!(c.get("/version").await.unwrap().json()["major"], "1");
}
