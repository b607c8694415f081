//! One running gRPC server for the Producer API on one address, owned by whoever bound it.
//!
//! Plaintext listeners hand accepted connections to tonic as they are. A TLS listener
//! runs its own accept loop: each connection is handshaken in its own task (bounded in
//! number and time, so a slow or silent client holds no one else up) with the newest
//! config of the listener's [`TlsIdentities`], then handed to tonic. INPUT units join and
//! leave a shared TLS listener by changing its identities; established connections are
//! not touched.

use super::sni::{TlsIdentities, UnitIdentity};
use super::tls::Transport;
use super::{LimitsLayer, ListenSecurity, ProducerService, Routes, ServerAddress};
use crate::config::ProducerLimits;
use crate::proto::shipper::raw::producer_server::ProducerServer;
use futures_util::{Stream, StreamExt};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// TLS handshakes in progress at once per listener; more connections wait in the backlog.
const MAX_HANDSHAKES: usize = 64;
/// A client that has not finished its handshake by then is disconnected.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound Producer API server; [`Listener::stop`] ends it and removes its socket file.
pub struct Listener {
    address: ServerAddress,
    transport: Transport,
    tls: Option<Arc<TlsIdentities>>,
    cancel: CancellationToken,
    join: JoinHandle<()>,
    /// Device and inode of the socket file this listener put at a unix address: the path
    /// is removed on stop only while it is still ours. Another process may have bound the
    /// same path since (under today's agent the next component starts while the old one
    /// stops), and removing its socket would cut its inputs off.
    socket_file: Option<(u64, u64)>,
}

impl Listener {
    /// Binds `address` and serves the Producer API for server run `uuid` there, routing by
    /// the latest `routes`, secured as `security` says (see [`super::tls`]), under `limits`
    /// (validated; see `limits.rs`).
    ///
    /// # Errors
    /// A message naming the address when it cannot be bound (in use, no permission,
    /// missing directory), or naming `ssl` when plaintext is not allowed there or the TLS
    /// material is unusable.
    pub async fn bind(
        address: ServerAddress,
        uuid: &str,
        routes: watch::Receiver<Arc<Routes>>,
        security: ListenSecurity,
        limits: ProducerLimits,
    ) -> Result<Self, String> {
        security.check(&address)?;
        let transport = security.transport();
        let tls = match security.identity {
            Some(identity) => {
                let identities = Arc::new(TlsIdentities::default());
                identities.insert(identity)?;
                Some(identities)
            }
            None => None,
        };
        // One token ends both the server and its open PersistedIndex streams: a graceful
        // shutdown waits for every connection, and inputs keep those streams open.
        let cancel = CancellationToken::new();
        let service = ProducerService::new(uuid, routes, cancel.clone())
            .with_limits(limits)
            .at(address.clone());
        let router = tonic::transport::Server::builder()
            .layer(LimitsLayer::new(limits))
            .add_service(
                ProducerServer::new(service)
                    .max_decoding_message_size(limits.max_request_bytes as usize),
            );
        let shutdown = cancel.clone().cancelled_owned();
        let label = address.clone();
        let failed = move |err: tonic::transport::Error| {
            tracing::error!(address = %label, error = %err, "Producer API server failed");
        };
        let mut socket_file = None;
        let join = match &address {
            ServerAddress::Unix(path) => {
                remove_stale_socket(path)
                    .map_err(|err| format!("cannot listen on {address}: {err}"))?;
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
                }
                let listener = bind_private(path, security.socket_mode.0)
                    .map_err(|err| format!("cannot listen on {address}: {err}"))?;
                socket_file = file_identity(path);
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                match &tls {
                    Some(identities) => {
                        let incoming =
                            handshaken(incoming, identities.clone(), cancel.clone(), &address);
                        tokio::spawn(async move {
                            if let Err(err) = router
                                .serve_with_incoming_shutdown(incoming, shutdown)
                                .await
                            {
                                failed(err);
                            }
                        })
                    }
                    None => tokio::spawn(async move {
                        if let Err(err) = router
                            .serve_with_incoming_shutdown(incoming, shutdown)
                            .await
                        {
                            failed(err);
                        }
                    }),
                }
            }
            ServerAddress::Tcp(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|err| format!("cannot listen on {address}: {err}"))?;
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                match &tls {
                    Some(identities) => {
                        let incoming =
                            handshaken(incoming, identities.clone(), cancel.clone(), &address);
                        tokio::spawn(async move {
                            if let Err(err) = router
                                .serve_with_incoming_shutdown(incoming, shutdown)
                                .await
                            {
                                failed(err);
                            }
                        })
                    }
                    None => tokio::spawn(async move {
                        if let Err(err) = router
                            .serve_with_incoming_shutdown(incoming, shutdown)
                            .await
                        {
                            failed(err);
                        }
                    }),
                }
            }
        };
        match (&tls, &address) {
            (Some(identities), _) => tracing::info!(
                %address,
                transport = %transport,
                units = ?identities.unit_ids(),
                "Producer API listening: mutual TLS, each INPUT unit's certificate by SNI"
            ),
            (None, ServerAddress::Unix(_)) => tracing::info!(
                %address,
                transport = %transport,
                socket_mode = %security.socket_mode,
                "Producer API listening: plaintext, protected by the socket's mode"
            ),
            (None, ServerAddress::Tcp(_)) => tracing::info!(
                %address,
                transport = %transport,
                "Producer API listening: plaintext on loopback TCP"
            ),
        }
        Ok(Listener {
            address,
            transport,
            tls,
            cancel,
            join,
            socket_file,
        })
    }

    /// The address served.
    pub fn address(&self) -> &ServerAddress {
        &self.address
    }

    /// The transport served, fixed when bound.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Serves `identity`'s certificate (and admits its CA's clients) from the next handshake
    /// on, replacing that unit's earlier identity; connections already made are kept.
    ///
    /// # Errors
    /// On a plaintext listener, or when the CAs cannot make a TLS config.
    pub fn add_identity(&self, identity: UnitIdentity) -> Result<(), String> {
        let Some(identities) = &self.tls else {
            return Err(format!(
                "the Producer API at {} serves plaintext",
                self.address
            ));
        };
        let unit_id = identity.unit_id().to_string();
        identities.insert(identity)?;
        tracing::info!(address = %self.address, unit_id, units = ?identities.unit_ids(), "INPUT unit's certificate joins the Producer API");
        Ok(())
    }

    /// Stops serving `unit_id`'s certificate to new connections.
    pub fn remove_identity(&self, unit_id: &str) {
        if let Some(identities) = &self.tls {
            identities.remove(unit_id);
        }
    }

    /// The units whose certificates a TLS listener serves, in attach order.
    pub fn tls_units(&self) -> Vec<String> {
        self.tls
            .as_ref()
            .map(|identities| identities.unit_ids())
            .unwrap_or_default()
    }

    /// Stops serving, waits (at most 5 s) for the server task, and removes a unix socket file.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        match tokio::time::timeout(Duration::from_secs(5), &mut self.join).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(address = %self.address, error = %err, "Producer API task ended abnormally")
            }
            Err(_) => {
                tracing::warn!(address = %self.address, "Producer API connections did not close within 5 s; closing them");
                self.join.abort();
            }
        }
        if let ServerAddress::Unix(path) = &self.address {
            if self.socket_file.is_some() && file_identity(path) == self.socket_file {
                let _ = std::fs::remove_file(path);
            } else {
                tracing::info!(address = %self.address, "the socket path now belongs to another listener; leaving it");
            }
        }
        tracing::info!(address = %self.address, "Producer API closed");
    }
}

/// The connections of `incoming` after a TLS handshake with the newest config of
/// `identities`; a failed handshake is logged and the connection dropped. Ends with `cancel`.
fn handshaken<IO, S>(
    mut incoming: S,
    identities: Arc<TlsIdentities>,
    cancel: CancellationToken,
    address: &ServerAddress,
) -> impl Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<IO>>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Stream<Item = std::io::Result<IO>> + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
    let address = address.clone();
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => break,
                next = incoming.next() => next,
            };
            let stream = match next {
                Some(Ok(stream)) => stream,
                // Accept errors go to tonic as they would without TLS.
                Some(Err(err)) => {
                    if tx.send(Err(err)).await.is_err() {
                        break;
                    }
                    continue;
                }
                None => break,
            };
            // Waiting for a permit leaves new connections in the kernel's backlog.
            let permit = tokio::select! {
                _ = cancel.cancelled() => break,
                permit = handshakes.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let Some(acceptor) = identities.acceptor() else {
                continue;
            };
            let tx = tx.clone();
            let address = address.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(%address, error = %err, "Producer API refused a connection: TLS handshake failed")
                    }
                    Err(_) => {
                        tracing::warn!(%address, "Producer API refused a connection: no TLS handshake within 10 s")
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Binds a unix socket at `path` that is never reachable with wider permissions than `mode`.
///
/// `bind` creates the socket file with `0777 & !umask`, and it accepts connections from
/// that moment, so a `chmod` after `bind` leaves a window in which any local user can
/// connect. Changing the umask around `bind` would close it, but the umask is per process:
/// another thread creating a directory at that moment (the queue, the DLQ) would get the
/// narrowed mode too. Instead the socket is bound inside a fresh directory of mode 0700
/// next to `path` (nobody else can even reach the socket there), given `mode`, and then
/// renamed into place; the rename is atomic and keeps the mode. The private directory is
/// in the same directory, hence the same filesystem, as `path`.
pub(crate) fn bind_private(
    path: &std::path::Path,
    mode: u32,
) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    // Short names keep the temporary path within the 107-byte limit of socket paths.
    let private = parent.join(format!(".sb-{:08x}", fastrand::u32(..)));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let temp = private.join("s");
    let result = (|| {
        let listener = tokio::net::UnixListener::bind(&temp)?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&temp, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&temp);
    let _ = std::fs::remove_dir(&private);
    result
}

/// Device and inode of the file at `path` (not following a symlink), if any.
fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()))
}

/// Removes a socket left by an earlier run; refuses to remove anything that is not a socket.
pub(crate) fn remove_stale_socket(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn bind_at(path: &std::path::Path) -> Listener {
        let (_routes_tx, routes) = watch::channel(Arc::new(Routes::default()));
        Listener::bind(
            ServerAddress::Unix(path.to_path_buf()),
            "run-1",
            routes,
            ListenSecurity::default(),
            ProducerLimits::default(),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn stopping_leaves_a_socket_another_listener_has_bound_since() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shipper.sock");
        let old = bind_at(&path).await;
        // The next process binds the same path while the old one is still stopping.
        let new = bind_at(&path).await;
        old.stop().await;
        assert!(
            std::os::unix::net::UnixStream::connect(&path).is_ok(),
            "the new listener's socket is still reachable after the old one stopped"
        );
        new.stop().await;
        assert!(!path.exists(), "a listener removes its own socket file");
    }
}
