//! The datastore conformance suite — the one the memory and directory backends pass — run
//! against the Kubernetes backend talking to the test API server.

mod common;

use common::Cluster;
use datastore::conformance::Subject;
use datastore::kubernetes::{ConfigSource, KubeDatastore};
use datastore::{Datastore, Error, Revision};

struct Kdd {
    cluster: Cluster,
    store: KubeDatastore,
}

impl Kdd {
    fn new() -> Kdd {
        let cluster = common::cluster("conformance");
        // WorkloadEndpoints live on pods: the suite's endpoints need their pods to exist.
        for (ns, pod) in [("ns-a", "w1"), ("ns-b", "w1"), ("ns", "w")] {
            common::create_pod(&cluster, ns, pod, None);
        }
        let store =
            KubeDatastore::new(ConfigSource::Kubeconfig(cluster.kubeconfig().to_path_buf()));
        Kdd { cluster, store }
    }
}

impl Subject for Kdd {
    fn store(&self) -> &dyn Datastore {
        &self.store
    }

    fn compact(&self, keep_after: Revision) -> Result<(), Error> {
        self.cluster.server().compact(keep_after.0);
        Ok(())
    }
}

mod conformance {
    datastore::conformance_tests!(super::Kdd::new());
}
