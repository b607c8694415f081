//! The socket side of mock-es: binding (SO_REUSEADDR), the accept loop, one task per
//! connection (optionally TLS), and pause/resume, which shut sockets down synchronously so
//! a client connecting after `pause()` returns is refused.

use super::http::{self, Shared};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use socket2::SockRef;
use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// One accepted connection, as seen by pause() and by the reset fault.
pub(crate) struct Connection {
    /// A duplicate of the socket's fd: shutting it down ends the connection the server owns.
    fd: OwnedFd,
    /// Set by `POST /_mock/pause`: pause for this long once this response is written.
    pause_after: Mutex<Option<Duration>>,
}

impl Connection {
    /// Closes the connection in both directions now, without a response.
    pub(crate) fn reset(&self) {
        let _ = SockRef::from(&self.fd).shutdown(Shutdown::Both);
    }

    /// Pauses the server for `duration` once the current response is written.
    pub(crate) fn pause_after_response(&self, duration: Duration) {
        *lock(&self.pause_after) = Some(duration);
    }
}

type Registry = Arc<Mutex<HashMap<u64, Arc<Connection>>>>;

/// A running accept loop.
struct Listening {
    listener: Arc<TcpListener>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    connections: Registry,
}

/// Owns the listening socket across pause/resume, and every task the server spawns.
pub(crate) struct Control {
    addr: SocketAddr,
    current: Mutex<Option<Listening>>,
    /// Accept loops told to stop, not yet awaited.
    stopping: Mutex<Vec<JoinHandle<()>>>,
    /// The timer that ends a `POST /_mock/pause?ms=N`.
    pause_timer: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Binds `addr` with SO_REUSEADDR, so resume() can take the same port again.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Control {
    /// Control for a server that will listen on `addr`.
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Control {
            addr,
            current: Mutex::new(None),
            stopping: Mutex::new(Vec::new()),
            pause_timer: Mutex::new(None),
        }
    }

    /// Starts the accept loop on an already bound listener.
    pub(crate) fn serve(&self, shared: &Arc<Shared>, listener: TcpListener) {
        let listener = Arc::new(listener);
        let cancel = CancellationToken::new();
        let connections: Registry = Arc::default();
        let task = tokio::spawn(accept_loop(
            shared.clone(),
            listener.clone(),
            cancel.clone(),
            connections.clone(),
        ));
        let previous = lock(&self.current).replace(Listening {
            listener,
            cancel,
            task,
            connections,
        });
        if let Some(previous) = previous {
            self.close(previous);
        }
    }

    fn close(&self, listening: Listening) {
        // shutdown() on a listening socket makes Linux drop it from the listen table at once:
        // new connections are refused from here on, not queued.
        let _ = SockRef::from(listening.listener.as_ref()).shutdown(Shutdown::Both);
        for connection in lock(&listening.connections).values() {
            connection.reset();
        }
        listening.cancel.cancel();
        lock(&self.stopping).push(listening.task);
    }

    /// Stops listening and closes every open connection. Idempotent.
    pub(crate) fn pause(&self) {
        let current = lock(&self.current).take();
        if let Some(listening) = current {
            self.close(listening);
        }
    }

    /// Waits for stopped accept loops (and their connections) to finish.
    async fn reap(&self) {
        let tasks = std::mem::take(&mut *lock(&self.stopping));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Listens again on the same address. Does nothing if already listening.
    pub(crate) async fn resume(&self, shared: &Arc<Shared>) -> std::io::Result<()> {
        self.reap().await;
        if lock(&self.current).is_some() {
            return Ok(());
        }
        let listener = bind(self.addr)?;
        if lock(&self.current).is_some() {
            // Someone else resumed meanwhile; theirs wins.
            return Ok(());
        }
        self.serve(shared, listener);
        Ok(())
    }

    /// Pauses for `duration`, then resumes (a later pause timer replaces this one).
    pub(crate) fn pause_for(&self, shared: &Arc<Shared>, duration: Duration) {
        self.pause();
        let shared = shared.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            if let Err(err) = shared.control.resume(&shared).await {
                tracing::warn!(%err, "mock-es cannot listen again after a pause");
            }
        });
        if let Some(old) = lock(&self.pause_timer).replace(timer) {
            old.abort();
        }
    }

    /// Stops everything and waits for every task.
    pub(crate) async fn stop(&self) {
        let timer = lock(&self.pause_timer).take();
        if let Some(timer) = timer {
            timer.abort();
            let _ = timer.await;
        }
        self.pause();
        self.reap().await;
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: Arc<TcpListener>,
    cancel: CancellationToken,
    connections: Registry,
) {
    let mut tasks = JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let fd = match stream.as_fd().try_clone_to_owned() {
                        Ok(fd) => fd,
                        Err(err) => {
                            tracing::warn!(%err, "mock-es cannot track a connection; dropping it");
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let connection = Arc::new(Connection { fd, pause_after: Mutex::new(None) });
                    next_id += 1;
                    lock(&connections).insert(next_id, connection.clone());
                    tasks.spawn(serve_connection(
                        shared.clone(),
                        stream,
                        connection,
                        next_id,
                        cancel.clone(),
                        connections.clone(),
                    ));
                }
                Err(err) => {
                    if cancel.is_cancelled() {
                        break;
                    }
                    tracing::debug!(%err, "mock-es accept failed");
                    // e.g. out of file descriptors: back off instead of spinning.
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    tasks.shutdown().await;
}

async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    connection: Arc<Connection>,
    id: u64,
    cancel: CancellationToken,
    connections: Registry,
) {
    let served = async {
        match &shared.tls {
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(tls) => serve_http(&shared, &connection, TokioIo::new(tls)).await,
                Err(err) => tracing::debug!(%err, "mock-es TLS handshake failed"),
            },
            None => serve_http(&shared, &connection, TokioIo::new(stream)).await,
        }
    };
    tokio::select! {
        _ = served => {}
        _ = cancel.cancelled() => {}
    }
    // Out of the registry before the socket is dropped, so pause() never shuts down a reused fd.
    lock(&connections).remove(&id);
    let pause = lock(&connection.pause_after).take();
    if let Some(duration) = pause {
        shared.control.pause_for(&shared, duration);
    }
}

async fn serve_http<I>(shared: &Arc<Shared>, connection: &Arc<Connection>, io: TokioIo<I>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(|req| http::handle(shared.clone(), connection.clone(), req));
    if let Err(err) = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service)
        .await
    {
        tracing::debug!(%err, "mock-es connection ended with an error");
    }
}
