//! A small HTTP forward proxy for tests: answers `CONNECT`, tunnels to one upstream, and
//! records each tunnel's target and headers.
//!
//! Every `CONNECT` goes to the same upstream address whatever its target, so a test can give
//! the shipper a host that is not reachable directly (a closed port) and know that whatever
//! reached the upstream came through here. Other methods get `501`: the shipper reaches
//! https hosts through a proxy with `CONNECT` only.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The most bytes of a request head read before giving up on it.
const MAX_HEAD: usize = 16 << 10;

/// One `CONNECT` as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// `host:port` asked for.
    pub target: String,
    /// Headers of the `CONNECT` request, names lowercase.
    pub headers: BTreeMap<String, String>,
}

/// A running proxy; [`ForwardProxy::stop`] ends it and every tunnel.
pub struct ForwardProxy {
    addr: SocketAddr,
    tunnels: Arc<Mutex<Vec<Tunnel>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ForwardProxy {
    /// Listens on 127.0.0.1 and tunnels every `CONNECT` to `upstream`.
    ///
    /// # Errors
    /// The listening socket cannot be bound.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<ForwardProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let seen = tunnels.clone();
        let task = tokio::spawn(async move {
            // Connection tasks belong to this set: aborting the accept loop ends them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            connections.spawn(serve(stream, upstream, seen.clone()));
                        }
                        Err(_) => break,
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(ForwardProxy {
            addr,
            tunnels,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`, for `proxy_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The tunnels opened so far, oldest first.
    pub fn tunnels(&self) -> Vec<Tunnel> {
        self.tunnels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Stops listening and closes every tunnel.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// One client connection: read the head, open the tunnel, copy both ways until either
/// side closes.
async fn serve(mut client: TcpStream, upstream: SocketAddr, tunnels: Arc<Mutex<Vec<Tunnel>>>) {
    let Some((request_line, headers)) = read_head(&mut client).await else {
        return;
    };
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return;
    };
    if !method.eq_ignore_ascii_case("CONNECT") {
        let _ = client
            .write_all(
                b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
        return;
    }
    tunnels
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(Tunnel {
            target: target.to_string(),
            headers,
        });
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

/// The request line and headers, once `\r\n\r\n` arrived; `None` if the client closed
/// first or sent more than [`MAX_HEAD`] bytes without one. `CONNECT` has no body, and a
/// client waits for the answer before sending tunnel bytes, so nothing past the head is
/// read here.
async fn read_head(client: &mut TcpStream) -> Option<(String, BTreeMap<String, String>)> {
    let mut head = Vec::with_capacity(1024);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD || client.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next()?.to_string();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Some((request_line, headers))
}
