//! Directory-backend tests within one process: the conformance suite, persistence across
//! handles, repair after simulated crashes, compaction. Tests across processes are in
//! `datastore/tests/dir_processes.rs`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::conformance::Subject;

/// A directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "tabby-dir-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Fresh {
    store: DirDatastore,
    _dir: TempDir,
}

impl Fresh {
    fn new() -> Fresh {
        let dir = TempDir::new("conformance");
        let options = DirOptions {
            poll_interval: Duration::from_millis(2),
            ..DirOptions::default()
        };
        Fresh {
            store: DirDatastore::open_with(dir.path(), options).expect("open a fresh store"),
            _dir: dir,
        }
    }
}

impl Subject for Fresh {
    fn store(&self) -> &dyn Datastore {
        &self.store
    }

    fn compact(&self, keep_after: Revision) -> Result<(), Error> {
        self.store.compact(keep_after).map(drop)
    }
}

mod conformance {
    crate::conformance_tests!(super::Fresh::new());
}
