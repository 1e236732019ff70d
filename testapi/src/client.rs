//! A deliberately plain HTTP/1.1 client over a TCP stream, for tests that want to see the
//! wire: status codes, headers, JSON bodies and watch streams line by line, with no client
//! library interpreting them. Plain HTTP only (TLS is tested through kube).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A response, read to the end.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON (panics if it is not: tests want to know).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Where to send requests, and with which token.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    token: Option<String>,
}

async fn read_head(reader: &mut BufReader<TcpStream>) -> io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {line:?}"),
            )
        })?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
}

/// Reads one chunk of a chunked body; None at the last chunk.
async fn read_chunk(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let size =
        usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size {line:?}"),
            )
        })?;
    let mut data = vec![0; size];
    reader.read_exact(&mut data).await?;
    let mut crlf = [0u8; 2];
    reader.read_exact(&mut crlf).await?;
    Ok((size > 0).then_some(data))
}

impl Client {
    /// A client for the server at `addr`.
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, token: None }
    }

    /// The same client, sending `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: &str) -> Client {
        self.token = Some(token.to_string());
        self
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> io::Result<BufReader<TcpStream>> {
        let mut stream = TcpStream::connect(self.addr).await?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        let body = body.unwrap_or(&[]);
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        Ok(BufReader::new(stream))
    }

    /// Sends a request and reads the whole response.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        let mut reader = self.send(method, path, content_type, body).await?;
        let (status, headers) = read_head(&mut reader).await?;
        let mut body = Vec::new();
        if is_chunked(&headers) {
            while let Some(chunk) = read_chunk(&mut reader).await? {
                body.extend(chunk);
            }
        } else {
            reader.read_to_end(&mut body).await?;
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// GET.
    pub async fn get(&self, path: &str) -> io::Result<Response> {
        self.request("GET", path, None, None).await
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> io::Result<Response> {
        self.request(
            "POST",
            path,
            Some("application/json"),
            Some(&serde_json::to_vec(body)?),
        )
        .await
    }

    /// PUT a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> io::Result<Response> {
        self.request(
            "PUT",
            path,
            Some("application/json"),
            Some(&serde_json::to_vec(body)?),
        )
        .await
    }

    /// PATCH with the given Content-Type.
    pub async fn patch(
        &self,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> io::Result<Response> {
        self.request(
            "PATCH",
            path,
            Some(content_type),
            Some(&serde_json::to_vec(body)?),
        )
        .await
    }

    /// DELETE, with DeleteOptions if given.
    pub async fn delete(&self, path: &str, options: Option<&Value>) -> io::Result<Response> {
        let body = options.map(serde_json::to_vec).transpose()?;
        self.request("DELETE", path, Some("application/json"), body.as_deref())
            .await
    }

    /// Starts a watch (the path should carry `watch=true`); the status and headers are read,
    /// the events are read with [`Watch::next`].
    pub async fn watch(&self, path: &str) -> io::Result<Watch> {
        let mut reader = self.send("GET", path, None, None).await?;
        let (status, headers) = read_head(&mut reader).await?;
        Ok(Watch {
            status,
            chunked: is_chunked(&headers),
            headers,
            reader,
            pending: Vec::new(),
        })
    }
}

/// A watch response being read.
pub struct Watch {
    /// HTTP status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    chunked: bool,
    reader: BufReader<TcpStream>,
    pending: Vec<u8>,
}

impl Watch {
    /// The next event (one JSON line), or None when the stream has ended.
    pub async fn next(&mut self) -> io::Result<Option<Value>> {
        loop {
            if let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                let value = serde_json::from_slice(&line).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "watch line is not JSON ({e}): {}",
                            String::from_utf8_lossy(&line)
                        ),
                    )
                })?;
                return Ok(Some(value));
            }
            let data = if self.chunked {
                read_chunk(&mut self.reader).await?
            } else {
                let mut buf = vec![0; 8192];
                let n = self.reader.read(&mut buf).await?;
                buf.truncate(n);
                (n > 0).then_some(buf)
            };
            match data {
                Some(d) => self.pending.extend(d),
                None => return Ok(None),
            }
        }
    }

    /// The next event within `timeout`: `Ok(Some(event))`, `Ok(None)` when the stream
    /// ended, `Err(TimedOut)` when nothing came.
    pub async fn next_within(&mut self, timeout: Duration) -> io::Result<Option<Value>> {
        match tokio::time::timeout(timeout, self.next()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no watch event in time",
            )),
        }
    }
}
