//! The server through kube, the client the Kubernetes datastore backend uses: the calls it
//! makes parse, and failures come back as the `kube::Error::Api` statuses it branches on.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;
use testapi::{Options, Server};

async fn setup() -> (Server, kube::Client) {
    let server = Server::start(Options::default()).await.unwrap();
    let config = kube::Config::new(server.url().parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    (server, client)
}

fn api_error(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason),
        other => panic!("not an API error: {other}"),
    }
}

/// Typed core resources: create, get, replace with compare-and-swap (409 Conflict on a
/// stale resourceVersion), merge patch, paged list, delete (the deleted object for pods, a
/// Status for nodes) and a watch from a resourceVersion.
#[tokio::test]
async fn typed_core_resources_through_kube() {
    let (_server, client) = setup().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p1", "labels": {"app": "web"}},
                                              "spec": {"containers": [{"name": "c", "image": "i"}]}}))
        .unwrap();
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    assert!(created.metadata.uid.is_some());
    assert_eq!(
        api_error(pods.create(&PostParams::default(), &p).await.unwrap_err()),
        (409, "AlreadyExists".into())
    );
    assert_eq!(
        api_error(pods.get("nope").await.unwrap_err()),
        (404, "NotFound".into())
    );

    let mut newer = created.clone();
    newer
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("v".into(), "2".into());
    let replaced = pods
        .replace("p1", &PostParams::default(), &newer)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(
        api_error(
            pods.replace("p1", &PostParams::default(), &newer)
                .await
                .unwrap_err()
        ),
        (409, "Conflict".into())
    );

    let patched = pods
        .patch(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"a": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.annotations.unwrap()["a"], "1");

    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..5 {
        let n: Node =
            serde_json::from_value(json!({"metadata": {"name": format!("n{i}")}})).unwrap();
        nodes.create(&PostParams::default(), &n).await.unwrap();
    }
    let page = nodes.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.metadata.remaining_item_count, Some(3));
    let rest = nodes
        .list(
            &ListParams::default()
                .limit(10)
                .continue_token(page.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 3);

    let from = rest.metadata.resource_version.clone().unwrap();
    let stream = nodes
        .watch(&WatchParams::default().timeout(5), &from)
        .await
        .unwrap();
    let mut stream = stream.boxed();
    let deleted = nodes.delete("n0", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_right(), "nodes answer a delete with a Status");
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Deleted(n) => assert_eq!(n.metadata.name.as_deref(), Some("n0")),
        other => panic!("expected Deleted, got {other:?}"),
    }
    let gone = pods.delete("p1", &DeleteParams::default()).await.unwrap();
    assert_eq!(gone.left().unwrap().metadata.name.as_deref(), Some("p1"));
}

/// Custom resources through `DynamicObject` with an `ApiResource`, as the datastore backend
/// addresses Calico's CRDs, and a bookmark-enabled watch.
#[tokio::test]
async fn custom_resources_through_kube() {
    let (server, client) = setup().await;
    server
        .register_crd(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "blockaffinities.crd.projectcalico.org"},
            "spec": {"group": "crd.projectcalico.org", "scope": "Cluster",
                     "names": {"plural": "blockaffinities", "kind": "BlockAffinity"},
                     "versions": [{"name": "v1", "served": true, "storage": true}]}
        }))
        .unwrap();
    let gvk = GroupVersionKind::gvk("crd.projectcalico.org", "v1", "BlockAffinity");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "blockaffinities");
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let obj = DynamicObject::new("n1-198-18-0-0-26", &ar)
        .data(json!({"spec": {"node": "n1", "cidr": "198.18.0.0/26", "state": "pending"}}));
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();

    let mut watch = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    let mut confirmed = created.clone();
    confirmed.data["spec"]["state"] = "confirmed".into();
    api.replace("n1-198-18-0-0-26", &PostParams::default(), &confirmed)
        .await
        .unwrap();
    match watch.next().await.unwrap().unwrap() {
        WatchEvent::Modified(o) => assert_eq!(o.data["spec"]["state"], "confirmed"),
        other => panic!("expected Modified, got {other:?}"),
    }
    match watch.next().await.unwrap().unwrap() {
        WatchEvent::Bookmark(b) => {
            assert_eq!(b.metadata.resource_version, server.revision().to_string())
        }
        other => panic!("expected Bookmark, got {other:?}"),
    }
    // A stale replace is a Conflict the backend can retry on.
    assert_eq!(
        api_error(
            api.replace("n1-198-18-0-0-26", &PostParams::default(), &created)
                .await
                .unwrap_err()
        )
        .0,
        409
    );

    server.compact(server.revision());
    let mut expired = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match expired.next().await.unwrap().unwrap() {
        WatchEvent::Error(s) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("expected Error, got {other:?}"),
    }
}
