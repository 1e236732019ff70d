//! The confd loop: list, render, watch, re-render, send only what changed.
//!
//! ```text
//!            ┌──────────── list ×7 kinds (retry with backoff) ◀── TooOld ───┐
//!            ▼                                                               │
//!  Datastore ──▶ cache: Key → Resource ──▶ Resources ─┬─ render ──▶ Config ──┼─ ≠ last? ─▶ Speaker
//!            ▲        ▲ apply event                    └─ felix_state ─ diff ─┼─ non-empty ▶ Felix
//!            │        │                                                      │         (then InSync once)
//!            └─ watch(all kinds, after = last revision) ─── events ──────────┘
//!                     ▲ secrets poll tick re-renders (passwords live outside the datastore)
//! ```
//!
//! The cache is only ever replaced by a newer complete list or changed by a watch event, so a
//! datastore outage or a compaction never empties it: on `TooOld` the loop lists again and sends
//! the difference between what it last sent and the new list; on any other error it keeps the
//! last good state and retries with exponential backoff.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::{Key, Kind, Resource};
use bgp::config::Config;
use datastore::{Datastore, Error as DsError, Revision, WatchEvent};
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, warn};

use crate::felix_inputs::{FelixState, felix_diff, felix_state};
use crate::render::{RenderError, Resources, Warning, plan};

/// The kinds the render and felix read.
pub const KINDS: [Kind; 7] = [
    Kind::IPPool,
    Kind::Node,
    Kind::BGPConfiguration,
    Kind::BGPPeer,
    Kind::FelixConfiguration,
    Kind::BlockAffinity,
    Kind::WorkloadEndpoint,
];

/// How the loop renders and retries.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    /// Where BGP password secrets are mounted: `<dir>/<secret name>/<key>` (see
    /// [`crate::secrets`]). `None`: no passwords.
    pub secrets_dir: Option<PathBuf>,
    /// How often the secrets directory is read again, since a changed secret is no datastore
    /// event.
    pub secrets_poll: Duration,
    /// First delay after a datastore error; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            secrets_dir: None,
            secrets_poll: Duration::from_secs(10),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
        }
    }
}

/// What the loop hands to tabby-node.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfdUpdate {
    /// A new speaker configuration, different from the previous one sent. Not sent while the
    /// node cannot be rendered (its Node resource is missing or has no IPv4 BGP address): the
    /// [`RenderError`] is logged and the previous configuration stays in force.
    Speaker(Box<Config>),
    /// felix inputs that changed since the previous batch (the first batch is everything).
    Felix(Vec<felix::calc::Input>),
    /// Sent once, after the first speaker config and felix batch.
    InSync,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfdError {
    #[error("confd: the node name is empty")]
    EmptyNodeName,
}

/// Lists everything the render reads, once: for one-shot renders (`tabbyctl`, writing a BIRD
/// config in the lab). Secrets are read from `secrets_dir` when given.
pub async fn snapshot(
    ds: &dyn Datastore,
    secrets_dir: Option<&std::path::Path>,
) -> Result<Resources, DsError> {
    let mut res = Resources::default();
    for kind in KINDS {
        for r in ds.list(kind).await?.items {
            res.insert(r);
        }
    }
    if let Some(dir) = secrets_dir {
        res.secrets = crate::secrets::load(dir, &res);
    }
    Ok(res)
}

/// Runs until `out` is closed (then returns `Ok`). Datastore errors are retried forever.
pub async fn run(
    ds: Arc<dyn Datastore>,
    node: String,
    opts: RenderOptions,
    out: mpsc::Sender<ConfdUpdate>,
) -> Result<(), ConfdError> {
    if node.is_empty() {
        return Err(ConfdError::EmptyNodeName);
    }
    let span = tracing::info_span!("confd", node = %node);
    let mut lp = Loop {
        ds,
        node,
        opts,
        out,
        cache: BTreeMap::new(),
        revision: Revision(0),
        listed_at: BTreeMap::new(),
        last_speaker: None,
        last_felix: FelixState::new(),
        last_error: None,
        last_warnings: Vec::new(),
        backoff: Duration::ZERO,
    };
    async move {
        if !lp.relist().await
            || !lp.publish().await
            || lp.out.send(ConfdUpdate::InSync).await.is_err()
        {
            return;
        }
        info!(revision = %lp.revision, resources = lp.cache.len(), "in sync");
        lp.follow().await;
    }
    .instrument(span)
    .await;
    Ok(())
}

struct Loop {
    ds: Arc<dyn Datastore>,
    node: String,
    opts: RenderOptions,
    out: mpsc::Sender<ConfdUpdate>,
    cache: BTreeMap<Key, Resource>,
    /// The newest revision the cache reflects; the watch resumes after it.
    revision: Revision,
    /// Each kind's list revision: watch events at or below it are already in the cache.
    listed_at: BTreeMap<Kind, Revision>,
    last_speaker: Option<Config>,
    last_felix: FelixState,
    last_error: Option<RenderError>,
    last_warnings: Vec<Warning>,
    backoff: Duration,
}

impl Loop {
    async fn sleep_backoff(&mut self) {
        self.backoff = (self.backoff * 2).clamp(self.opts.retry_min, self.opts.retry_max);
        tokio::time::sleep(self.backoff).await;
    }

    /// Lists every kind until it succeeds, then replaces the cache. Returns false if `out` was
    /// closed meanwhile.
    async fn relist(&mut self) -> bool {
        loop {
            if self.out.is_closed() {
                return false;
            }
            match self.list_all().await {
                Ok((cache, listed_at)) => {
                    self.backoff = Duration::ZERO;
                    self.cache = cache;
                    // Watch from the oldest list; newer kinds skip what they already have.
                    self.revision = listed_at.values().copied().min().unwrap_or_default();
                    self.listed_at = listed_at;
                    return true;
                }
                Err(e) => {
                    warn!(error = %e, "listing resources failed; keeping the last state and retrying");
                    self.sleep_backoff().await;
                }
            }
        }
    }

    async fn list_all(
        &self,
    ) -> Result<(BTreeMap<Key, Resource>, BTreeMap<Kind, Revision>), DsError> {
        let mut cache = BTreeMap::new();
        let mut listed_at = BTreeMap::new();
        for kind in KINDS {
            let listing = self.ds.list(kind).await?;
            for r in listing.items {
                cache.insert(r.key(), r);
            }
            listed_at.insert(kind, listing.revision);
        }
        Ok((cache, listed_at))
    }

    /// Follows the datastore until `out` is closed.
    async fn follow(&mut self) {
        let mut secrets_tick = tokio::time::interval(self.opts.secrets_poll);
        secrets_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        secrets_tick.tick().await;
        loop {
            let mut watch = match self.ds.watch(None, self.revision).await {
                Ok(w) => w,
                Err(DsError::TooOld { .. }) => {
                    info!(revision = %self.revision, "watch revision compacted; listing again");
                    if !self.relist().await || !self.publish().await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, revision = %self.revision, "watch failed; retrying");
                    self.sleep_backoff().await;
                    continue;
                }
            };
            self.backoff = Duration::ZERO;
            loop {
                tokio::select! {
                    ev = watch.next() => match ev {
                        Some(Ok(ev)) => {
                            self.apply(ev);
                            // Take whatever else is already there before rendering once.
                            while let Some(Some(Ok(ev))) = watch.next().now_or_never() {
                                self.apply(ev);
                            }
                            if !self.publish().await {
                                return;
                            }
                        }
                        Some(Err(DsError::TooOld { .. })) => {
                            info!(revision = %self.revision, "watch fell behind compaction; listing again");
                            if !self.relist().await || !self.publish().await {
                                return;
                            }
                            break;
                        }
                        Some(Err(e)) => {
                            warn!(error = %e, "watch error; resuming after backoff");
                            self.sleep_backoff().await;
                            break;
                        }
                        None => {
                            debug!("watch ended; resuming");
                            break;
                        }
                    },
                    _ = secrets_tick.tick(), if self.opts.secrets_dir.is_some() => {
                        if !self.publish().await {
                            return;
                        }
                    }
                    _ = self.out.closed() => return,
                }
            }
        }
    }

    fn apply(&mut self, ev: WatchEvent) {
        let rev = ev.revision();
        self.revision = self.revision.max(rev);
        let kind = ev.resource().kind();
        if !KINDS.contains(&kind) || self.listed_at.get(&kind).is_some_and(|l| rev <= *l) {
            return;
        }
        match ev {
            WatchEvent::Added { resource, .. } | WatchEvent::Modified { resource, .. } => {
                self.cache.insert(resource.key(), resource);
            }
            WatchEvent::Deleted { resource, .. } => {
                self.cache.remove(&resource.key());
            }
        }
    }

    fn resources(&self) -> Resources {
        let mut res: Resources = self.cache.values().cloned().collect();
        if let Some(dir) = &self.opts.secrets_dir {
            res.secrets = crate::secrets::load(dir, &res);
        }
        res
    }

    /// Renders the cache and sends what changed. Returns false once `out` is closed.
    async fn publish(&mut self) -> bool {
        let res = self.resources();
        let mut sends = Vec::new();
        match plan(&res, &self.node) {
            Ok(p) => {
                self.last_error = None;
                if p.warnings != self.last_warnings {
                    for w in &p.warnings {
                        warn!("{w}");
                    }
                    self.last_warnings = p.warnings;
                }
                if self.last_speaker.as_ref() != Some(&p.config) {
                    info!(
                        peers = p.config.peers.len(),
                        originate = p.config.originate.len(),
                        "speaker config changed"
                    );
                    self.last_speaker = Some(p.config.clone());
                    sends.push(ConfdUpdate::Speaker(Box::new(p.config)));
                }
            }
            Err(e) => {
                if self.last_error.as_ref() != Some(&e) {
                    warn!(error = %e, "keeping the last speaker config");
                    self.last_error = Some(e);
                }
            }
        }
        let felix = felix_state(&res, &self.node);
        let changes = felix_diff(&self.last_felix, &felix);
        self.last_felix = felix;
        if !changes.is_empty() {
            debug!(inputs = changes.len(), "felix inputs changed");
            sends.push(ConfdUpdate::Felix(changes));
        }
        for s in sends {
            // A full channel means the speaker or felix is busy: waiting for it is right.
            if self.out.send(s).await.is_err() {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use api::{EncapMode, WorkloadEndpoint, WorkloadEndpointSpec};
    use async_trait::async_trait;
    use datastore::{Listing, MemoryDatastore, Watch};
    use felix::calc::Input;

    use super::*;
    use crate::testutil::*;

    async fn seed(ds: &MemoryDatastore) {
        let res = three_nodes();
        for p in res.pools {
            ds.create(Resource::IPPool(p)).await.unwrap();
        }
        for n in res.nodes {
            ds.create(Resource::Node(n)).await.unwrap();
        }
        for a in res.affinities {
            ds.create(Resource::BlockAffinity(a)).await.unwrap();
        }
        let mut wep = WorkloadEndpoint::new(
            "n2-k8s-pod1-eth0",
            WorkloadEndpointSpec {
                node: Some("n2".into()),
                ip_networks: vec!["198.18.0.65/32".into()],
                ..WorkloadEndpointSpec::default()
            },
        );
        wep.metadata.namespace = Some("default".into());
        ds.create(Resource::WorkloadEndpoint(wep)).await.unwrap();
    }

    fn start(ds: Arc<dyn Datastore>) -> mpsc::Receiver<ConfdUpdate> {
        let (tx, rx) = mpsc::channel(16);
        let opts = RenderOptions {
            retry_min: Duration::from_millis(5),
            retry_max: Duration::from_millis(20),
            ..RenderOptions::default()
        };
        tokio::spawn(run(ds, "n1".into(), opts, tx));
        rx
    }

    async fn next(rx: &mut mpsc::Receiver<ConfdUpdate>) -> ConfdUpdate {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an update within 5 s")
            .expect("confd running")
    }

    async fn nothing_more(rx: &mut mpsc::Receiver<ConfdUpdate>) {
        if let Ok(u) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            panic!("unexpected update {u:?}");
        }
    }

    /// Runs to InSync and returns the initial speaker config and felix batch.
    async fn synced(rx: &mut mpsc::Receiver<ConfdUpdate>) -> (Config, Vec<Input>) {
        let ConfdUpdate::Speaker(c) = next(rx).await else {
            panic!("speaker first")
        };
        let ConfdUpdate::Felix(f) = next(rx).await else {
            panic!("felix second")
        };
        assert_eq!(next(rx).await, ConfdUpdate::InSync);
        (*c, f)
    }

    async fn get_pool(ds: &MemoryDatastore) -> api::IPPool {
        let key = Key {
            kind: Kind::IPPool,
            namespace: None,
            name: "default-ipv4-ippool".into(),
        };
        match ds.get(&key).await.unwrap() {
            Resource::IPPool(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn initial_sync_sends_speaker_felix_then_in_sync() {
        let ds = MemoryDatastore::new();
        seed(&ds).await;
        let mut rx = start(Arc::new(ds));
        let (config, felix) = synced(&mut rx).await;
        assert_eq!(config, crate::render(&three_nodes(), "n1").unwrap());
        // Config, 1 pool, 3 nodes, 3 affinities, 1 workload (of another node, too).
        assert_eq!(felix.len(), 9, "{felix:#?}");
        assert!(matches!(felix[0], Input::Config(_)));
        assert!(
            felix.iter().any(
                |i| matches!(i, Input::WorkloadUpdate(k, _) if k == "default/n2-k8s-pod1-eth0")
            )
        );
        nothing_more(&mut rx).await;
    }

    #[tokio::test]
    async fn pool_mode_change_sends_exactly_the_pool_update() {
        let ds = MemoryDatastore::new();
        seed(&ds).await;
        let mut rx = start(Arc::new(ds.clone()));
        synced(&mut rx).await;
        let mut p = get_pool(&ds).await;
        p.spec.vxlan_mode = Some(EncapMode::Always);
        let spec = p.spec.clone();
        ds.update(Resource::IPPool(p)).await.unwrap();
        assert_eq!(
            next(&mut rx).await,
            ConfdUpdate::Felix(vec![Input::PoolUpdate("default-ipv4-ippool".into(), spec)])
        );
        nothing_more(&mut rx).await;
    }

    #[tokio::test]
    async fn a_new_node_adds_a_mesh_peer() {
        let ds = MemoryDatastore::new();
        seed(&ds).await;
        let mut rx = start(Arc::new(ds.clone()));
        let (before, _) = synced(&mut rx).await;
        let n4 = node("n4", "192.0.2.14");
        let spec = n4.spec.clone();
        ds.create(Resource::Node(n4)).await.unwrap();
        let ConfdUpdate::Speaker(after) = next(&mut rx).await else {
            panic!("speaker update")
        };
        assert_eq!(after.peers.len(), before.peers.len() + 1);
        assert!(
            after
                .peers
                .iter()
                .any(|p| p.address.to_string() == "192.0.2.14")
        );
        assert_eq!(
            next(&mut rx).await,
            ConfdUpdate::Felix(vec![Input::NodeUpdate("n4".into(), spec)])
        );
        nothing_more(&mut rx).await;
    }

    #[tokio::test]
    async fn unchanged_writes_send_nothing() {
        let ds = MemoryDatastore::new();
        seed(&ds).await;
        let mut rx = start(Arc::new(ds.clone()));
        synced(&mut rx).await;
        // A new revision with the same content, and a kind confd does not read.
        let p = get_pool(&ds).await;
        ds.update(Resource::IPPool(p)).await.unwrap();
        ds.create(Resource::IPAMConfig(api::IPAMConfig::new(
            "default",
            api::IPAMConfigSpec::default(),
        )))
        .await
        .unwrap();
        nothing_more(&mut rx).await;
    }

    #[tokio::test]
    async fn compaction_relists_and_sends_only_the_difference() {
        let ds = MemoryDatastore::new();
        seed(&ds).await;
        let flaky = Arc::new(Flaky {
            inner: ds.clone(),
            failures: AtomicUsize::new(0),
            lists: AtomicUsize::new(0),
        });
        let mut rx = start(flaky.clone());
        synced(&mut rx).await;
        assert_eq!(flaky.lists.load(Ordering::SeqCst), KINDS.len());
        // Two writes and a compaction before the watch task gets to run (the test runtime
        // is single-threaded and none of these calls yields): the watch gets TooOld.
        let n4 = node("n4", "192.0.2.14");
        let n4_spec = n4.spec.clone();
        ds.create(Resource::Node(n4)).await.unwrap();
        let key = Key {
            kind: Kind::BlockAffinity,
            namespace: None,
            name: "n3-198-18-0-128-26".into(),
        };
        ds.delete(&key, None).await.unwrap();
        ds.compact(Revision(u64::MAX));
        let ConfdUpdate::Speaker(c) = next(&mut rx).await else {
            panic!("speaker update")
        };
        assert_eq!(c.peers.len(), 3);
        assert_eq!(
            next(&mut rx).await,
            ConfdUpdate::Felix(vec![
                Input::NodeUpdate("n4".into(), n4_spec),
                Input::AffinityRemove("n3-198-18-0-128-26".into()),
            ])
        );
        nothing_more(&mut rx).await;
        assert_eq!(
            flaky.lists.load(Ordering::SeqCst),
            2 * KINDS.len(),
            "one re-list"
        );
        // And the loop follows the datastore again afterwards.
        let mut p = get_pool(&ds).await;
        p.spec.nat_outgoing = true;
        ds.update(Resource::IPPool(p)).await.unwrap();
        assert!(matches!(next(&mut rx).await, ConfdUpdate::Felix(f) if f.len() == 1));
    }

    /// A datastore whose first lists fail, and that counts lists.
    struct Flaky {
        inner: MemoryDatastore,
        failures: AtomicUsize,
        lists: AtomicUsize,
    }

    #[async_trait]
    impl Datastore for Flaky {
        async fn get(&self, key: &Key) -> Result<Resource, DsError> {
            self.inner.get(key).await
        }
        async fn list(&self, kind: Kind) -> Result<Listing, DsError> {
            if self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(DsError::Unavailable("test outage".into()));
            }
            self.lists.fetch_add(1, Ordering::SeqCst);
            self.inner.list(kind).await
        }
        async fn create(&self, r: Resource) -> Result<Resource, DsError> {
            self.inner.create(r).await
        }
        async fn update(&self, r: Resource) -> Result<Resource, DsError> {
            self.inner.update(r).await
        }
        async fn delete(&self, key: &Key, e: Option<Revision>) -> Result<Resource, DsError> {
            self.inner.delete(key, e).await
        }
        async fn watch(&self, kind: Option<Kind>, after: Revision) -> Result<Watch, DsError> {
            self.inner.watch(kind, after).await
        }
    }

    #[tokio::test]
    async fn datastore_errors_are_retried() {
        let inner = MemoryDatastore::new();
        seed(&inner).await;
        let ds = Flaky {
            inner,
            failures: AtomicUsize::new(3),
            lists: AtomicUsize::new(0),
        };
        let mut rx = start(Arc::new(ds));
        let (config, _) = synced(&mut rx).await;
        assert_eq!(config.peers.len(), 2);
    }

    #[tokio::test]
    async fn an_unknown_node_gets_felix_inputs_but_no_speaker_config() {
        let ds = MemoryDatastore::new();
        seed(&ds).await;
        let (tx, mut rx) = mpsc::channel(16);
        tokio::spawn(run(
            Arc::new(ds.clone()),
            "n9".into(),
            RenderOptions::default(),
            tx,
        ));
        assert!(matches!(next(&mut rx).await, ConfdUpdate::Felix(_)));
        assert_eq!(next(&mut rx).await, ConfdUpdate::InSync);
        // The node registers: now the speaker config comes.
        ds.create(Resource::Node(node("n9", "192.0.2.19")))
            .await
            .unwrap();
        assert!(matches!(next(&mut rx).await, ConfdUpdate::Speaker(c) if c.peers.len() == 3));
    }

    #[tokio::test]
    async fn stops_during_an_outage_when_the_receiver_is_dropped() {
        let ds = Flaky {
            inner: MemoryDatastore::new(),
            failures: AtomicUsize::new(usize::MAX),
            lists: AtomicUsize::new(0),
        };
        let (tx, rx) = mpsc::channel(16);
        let opts = RenderOptions {
            retry_min: Duration::from_millis(5),
            retry_max: Duration::from_millis(20),
            ..RenderOptions::default()
        };
        let task = tokio::spawn(run(Arc::new(ds), "n1".into(), opts, tx));
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn snapshot_lists_what_the_render_reads() {
        let ds = MemoryDatastore::new();
        seed(&ds).await;
        let res = snapshot(&ds, None).await.unwrap();
        assert_eq!(
            crate::render(&res, "n1").unwrap(),
            crate::render(&three_nodes(), "n1").unwrap()
        );
        assert_eq!(res.workloads.len(), 1);
    }

    #[tokio::test]
    async fn stops_when_the_receiver_is_dropped() {
        let ds = MemoryDatastore::new();
        seed(&ds).await;
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(run(Arc::new(ds), "n1".into(), RenderOptions::default(), tx));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops")
            .unwrap()
            .unwrap();
    }
}
