//! Running the built plugins exactly as a runtime does: `CNI_*` in the environment, the
//! configuration on stdin, the result on stdout, from inside the node's network namespace.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Netns, Node, tag};

pub const NETWORK: &str = "k8s-pod-network";
pub const NODE: &str = "node-1";

pub fn cni_path() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tabby"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// What one plugin call printed and how it exited.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }

    /// A CNI error: exit 1 and the error JSON with `code`, whose message contains `needle`.
    #[track_caller]
    pub fn cni_error(&self, code: u64, needle: &str) -> Value {
        assert_eq!(self.code, 1, "{self:?}");
        let j = self.json();
        assert_eq!(j["code"], code, "{j}");
        let msg = j["msg"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        assert!(j["cniVersion"].is_string(), "{j}");
        j
    }
}

/// One node with a datastore, a state directory and an IP pool, as a test's world.
pub struct Harness {
    pub node: Node,
    pub dir: PathBuf,
    pub datastore: String,
    pub rt: tokio::runtime::Runtime,
    pub ds: Arc<dyn datastore::Datastore>,
}

impl Harness {
    /// A node with the pool `198.18.0.0/16` (blockSize 26).
    pub fn new() -> Harness {
        Harness::with_pool("198.18.0.0/16", None)
    }

    pub fn with_pool(cidr: &str, block_size: Option<u8>) -> Harness {
        let dir = std::env::temp_dir().join(format!("tabby-cni-{}", tag()));
        std::fs::create_dir_all(&dir).unwrap();
        let datastore = format!("dir:{}", dir.join("datastore").display());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ds = datastore::open(&datastore).unwrap();
        let h = Harness {
            node: Node::new(1),
            dir,
            datastore,
            rt,
            ds,
        };
        h.add_pool("default-ipv4-ippool", cidr, block_size);
        h
    }

    pub fn add_pool(&self, name: &str, cidr: &str, block_size: Option<u8>) {
        let pool = api::IPPool::new(
            name,
            api::IPPoolSpec {
                cidr: Some(cidr.parse().unwrap()),
                block_size,
                ..Default::default()
            },
        );
        self.rt.block_on(self.ds.create(pool.into())).unwrap();
    }

    /// The network configuration a runtime would pass, in `version`, with `extra` keys merged.
    pub fn conf(&self, version: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": NETWORK,
            "type": "tabby",
            "ipam": {"type": "tabby-ipam"},
            "mtu": 0,
            "nodename": NODE,
            "datastore": self.datastore,
            "state_dir": self.dir.join("state"),
            "dns": {"nameservers": ["198.18.0.10"]},
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    /// Runs our `plugin` with `command` in the node's netns.
    pub fn exec(
        &self,
        plugin: &str,
        command: &str,
        container_id: &str,
        netns: Option<&Path>,
        args: &str,
        stdin: &[u8],
    ) -> Outcome {
        self.exec_from(
            &cni_path(),
            plugin,
            command,
            container_id,
            netns,
            args,
            stdin,
        )
    }

    /// Runs `plugin` from the directory `cni_path` (also its CNI_PATH) in the node's netns.
    #[allow(clippy::too_many_arguments)]
    pub fn exec_from(
        &self,
        cni_path: &Path,
        plugin: &str,
        command: &str,
        container_id: &str,
        netns: Option<&Path>,
        args: &str,
        stdin: &[u8],
    ) -> Outcome {
        let node = File::open(self.node.ns.path()).unwrap();
        let fd = node.as_raw_fd();
        let mut cmd = Command::new(cni_path.join(plugin));
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", cni_path)
            .env("CNI_ARGS", args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(n) = netns {
            cmd.env("CNI_NETNS", n);
        }
        // SAFETY: setns is async-signal-safe; fd stays open in the parent until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin);
        let out = child.wait_with_output().unwrap();
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `tabby` for a pod `default/<pod>` with container id `cid`.
    pub fn tabby(
        &self,
        command: &str,
        cid: &str,
        pod: &str,
        netns: Option<&Netns>,
        conf: &Value,
    ) -> Outcome {
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={cid}"
        );
        let path = netns.map(|n| n.path());
        self.exec(
            "tabby",
            command,
            cid,
            path.as_deref(),
            &args,
            conf.to_string().as_bytes(),
        )
    }

    pub fn list(&self, kind: api::Kind) -> Vec<api::Resource> {
        self.rt.block_on(self.ds.list(kind)).unwrap().items
    }

    /// Handles of allocations held now.
    pub fn handles(&self) -> Vec<String> {
        self.list(api::Kind::IPAMHandle)
            .into_iter()
            .filter_map(|r| match r {
                api::Resource::IPAMHandle(h) if !h.spec.deleted => Some(h.spec.handle_id),
                _ => None,
            })
            .collect()
    }

    /// Addresses allocated in any block.
    pub fn allocated(&self) -> usize {
        self.list(api::Kind::IPAMBlock)
            .into_iter()
            .map(|r| match r {
                api::Resource::IPAMBlock(b) => {
                    b.spec.allocations.iter().filter(|a| a.is_some()).count()
                }
                _ => 0,
            })
            .sum()
    }

    pub fn endpoints(&self) -> Vec<api::WorkloadEndpoint> {
        self.list(api::Kind::WorkloadEndpoint)
            .into_iter()
            .filter_map(|r| match r {
                api::Resource::WorkloadEndpoint(w) => Some(w),
                _ => None,
            })
            .collect()
    }

    /// cali* links in the node.
    pub fn cali_links(&self) -> Vec<String> {
        self.node
            .ns
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .filter(|n| n.starts_with("cali"))
            .collect()
    }

    /// Routes tabby owns (protocol 80) in the node.
    pub fn our_routes(&self) -> Vec<String> {
        self.node
            .ns
            .ip(&["route", "show", "proto", "80"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// As [`Harness::assert_clean`], after giving the kernel up to 5 s: links in a deleted
    /// netns go away in the kernel's asynchronous namespace cleanup.
    #[track_caller]
    pub fn assert_clean_eventually(&self) {
        let start = std::time::Instant::now();
        while !self.cali_links().is_empty() && start.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.assert_clean();
    }

    /// Nothing of any attachment is left: no link, route, allocation or endpoint.
    #[track_caller]
    pub fn assert_clean(&self) {
        assert_eq!(self.cali_links(), Vec::<String>::new(), "cali links left");
        assert_eq!(self.our_routes(), Vec::<String>::new(), "routes left");
        assert_eq!(self.handles(), Vec::<String>::new(), "handles left");
        assert_eq!(self.allocated(), 0, "addresses left");
        assert!(self.endpoints().is_empty(), "endpoints left");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
