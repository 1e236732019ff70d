//! The local control socket of a speaker (`tabby-bgpd`, tabby-node), read by
//! `tabbyctl node status` and `tabbyctl node routes`.
//!
//! A Unix stream socket, default [`DEFAULT_SOCKET`]. The protocol is newline-delimited JSON:
//! each request is one line, each answer one line, and a connection may carry several.
//!
//! ```text
//! → {"command":"status"}
//! ← {"status":{"asn":64512,"router_id":"192.0.2.1",…,"peers":[{"address":"192.0.2.12",…}]}}
//! → {"command":"routes"}
//! ← {"routes":[{"prefix":"198.18.4.0/26","next_hops":["192.0.2.12"],…}]}
//! → {"command":"nonsense"}
//! ← {"error":"bad request: unknown variant `nonsense`, …"}
//! ```
//!
//! The types here are shared by the server ([`serve`]) and the client ([`request`]).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::speaker::{Route, Speaker, StatusReport};

/// Where `tabby-bgpd` and tabby-node listen unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/tabby/bgp.sock";

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// A request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// The speaker and each peer: state, since, last error, prefix counts.
    Status,
    /// The Loc-RIB with next hops.
    Routes,
}

/// An answer line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Status(StatusReport),
    Routes(Vec<Route>),
    Error(String),
}

/// Errors of the control socket, server and client side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("is tabby-bgpd / tabby-node running? no socket at {}", path.display())]
    NoSocket { path: PathBuf },
    #[error("connecting to the control socket {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to the control socket {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the answer from {}: {source}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} closed the connection without answering", path.display())]
    NoAnswer { path: PathBuf },
    #[error("the speaker at {} answered: {message}", path.display())]
    Remote { path: PathBuf, message: String },
    #[error("binding the control socket {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A running control server; dropping it stops accepting (the socket file stays: call
/// [`Server::close`] to remove it).
pub struct Server {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Server {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting and removes the socket file.
    pub fn close(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `speaker` on a Unix socket at `path`: creates the parent directory, replaces a
/// stale socket file, and answers each connection in a task of its own.
pub fn serve(path: &Path, speaker: Speaker) -> Result<Server, ControlError> {
    let bind_err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, speaker.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "accepting on the control socket");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(Server {
        path: path.to_path_buf(),
        task,
    })
}

async fn connection(stream: UnixStream, speaker: Speaker) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) => return,
            Ok(n) if n > MAX_REQUEST => return,
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "reading a control request");
                return;
            }
        }
        if line.trim().is_empty() {
            continue;
        }
        let response = answer(&line, &speaker).await;
        let mut out = serde_json::to_vec(&response).expect("responses serialize");
        out.push(b'\n');
        if w.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn answer(line: &str, speaker: &Speaker) -> Response {
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return Response::Error(format!("bad request: {e}")),
    };
    let result = match req {
        Request::Status => speaker.status_report().await.map(Response::Status),
        Request::Routes => speaker.routes().await.map(Response::Routes),
    };
    result.unwrap_or_else(|e| Response::Error(e.to_string()))
}

/// Sends one request to the socket at `path` and returns the answer; an
/// [`Response::Error`] becomes [`ControlError::Remote`].
pub async fn request(path: &Path, req: &Request) -> Result<Response, ControlError> {
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.kind() == io::ErrorKind::ConnectionRefused =>
        {
            return Err(ControlError::NoSocket {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(ControlError::Connect {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let io_err = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(req).expect("requests serialize");
    line.push(b'\n');
    w.write_all(&line).await.map_err(io_err)?;
    let mut answer = String::new();
    BufReader::new(r)
        .read_line(&mut answer)
        .await
        .map_err(io_err)?;
    if answer.is_empty() {
        return Err(ControlError::NoAnswer {
            path: path.to_path_buf(),
        });
    }
    match serde_json::from_str(&answer) {
        Ok(Response::Error(message)) => Err(ControlError::Remote {
            path: path.to_path_buf(),
            message,
        }),
        Ok(r) => Ok(r),
        Err(source) => Err(ControlError::Decode {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn request_wire_form() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"command":"status"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"command":"routes"}"#).unwrap(),
            Request::Routes
        );
        assert_eq!(
            serde_json::to_string(&Response::Error("x".into())).unwrap(),
            r#"{"error":"x"}"#
        );
    }

    #[tokio::test]
    async fn absent_socket_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bgp.sock");
        let e = request(&path, &Request::Status).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "is tabby-bgpd / tabby-node running? no socket at {}",
                path.display()
            )
        );
    }

    #[tokio::test]
    async fn serves_status_routes_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/bgp.sock");
        let c = Config::from_yaml(
            "asn: 64512\nrouter_id: 127.0.0.1\nlisten: [\"127.0.0.1:179\"]\noriginate: [\"198.18.4.0/26\"]\npeers:\n  - address: 127.0.0.9\n    asn: 65000\n    passive: true\n",
        )
        .unwrap();
        let mut c = c;
        c.listen = vec!["127.0.0.1:0".parse().unwrap()];
        let speaker = Speaker::start(c).await.unwrap();
        let server = serve(&path, speaker.clone()).unwrap();
        let Response::Status(s) = request(&path, &Request::Status).await.unwrap() else {
            panic!("expected status");
        };
        assert_eq!(s.asn, 64512);
        assert_eq!(s.peers[0].peer_type, "ebgp");
        let Response::Routes(r) = request(&path, &Request::Routes).await.unwrap() else {
            panic!("expected routes");
        };
        assert_eq!(r.len(), 1);

        let mut raw = UnixStream::connect(&path).await.unwrap();
        raw.write_all(b"{\"command\":\"nonsense\"}\n")
            .await
            .unwrap();
        let mut line = String::new();
        BufReader::new(&mut raw).read_line(&mut line).await.unwrap();
        assert!(line.starts_with("{\"error\":\"bad request"), "{line}");

        server.close();
        assert!(!path.exists());
        speaker.shutdown().await.unwrap();
    }
}
