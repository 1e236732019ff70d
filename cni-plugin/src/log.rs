//! Logging to `log_file_path` at `log_level` (Calico: `/var/log/calico/cni/cni.log`). Without
//! a file, warnings and errors go to stderr, which runtimes keep; stdout is the result's alone.

use std::sync::Arc;

use tracing_subscriber::EnvFilter;

use crate::config::NetConf;

pub fn init(conf: &NetConf) {
    let level = conf.log_level.as_deref().unwrap_or("warn").to_lowercase();
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_timer(tracing_subscriber::fmt::time::uptime());
    let file = conf.log_file_path.as_ref().and_then(|p| {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    let _ = match file {
        Some(f) => builder.with_writer(Arc::new(f)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}
