//! One running gRPC server for the Producer API on one address, owned by whoever bound it.

use super::{LimitsLayer, ListenSecurity, ProducerService, Routes, ServerAddress};
use crate::config::ProducerLimits;
use crate::proto::shipper::producer_server::ProducerServer;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A bound Producer API server; [`Listener::stop`] ends it and removes its socket file.
pub struct Listener {
    address: ServerAddress,
    cancel: CancellationToken,
    join: JoinHandle<()>,
}

impl Listener {
    /// Binds `address` and serves the Producer API for server run `uuid` there, routing by
    /// the latest `routes`, secured as `security` says (see [`super::tls`]), under `limits`
    /// (validated; see `limits.rs`).
    ///
    /// # Errors
    /// A message naming the address when it cannot be bound (in use, no permission,
    /// missing directory), or naming `ssl` when the TLS material is missing or unusable.
    pub async fn bind(
        address: ServerAddress,
        uuid: &str,
        routes: watch::Receiver<Arc<Routes>>,
        security: &ListenSecurity,
        limits: ProducerLimits,
    ) -> Result<Self, String> {
        let tls = security.server_tls(&address)?;
        // One token ends both the server and its open PersistedIndex streams: a graceful
        // shutdown waits for every connection, and inputs keep those streams open.
        let cancel = CancellationToken::new();
        let service = ProducerService::new(uuid, routes, cancel.clone()).with_limits(limits);
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder
                .tls_config(tls)
                .map_err(|err| format!("invalid config key `ssl`: unusable TLS material: {err}"))?;
        }
        let router = builder.layer(LimitsLayer::new(limits)).add_service(
            ProducerServer::new(service)
                .max_decoding_message_size(limits.max_request_bytes as usize),
        );
        let shutdown = cancel.clone().cancelled_owned();
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
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                let address = address.clone();
                tokio::spawn(async move {
                    if let Err(err) = router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                    {
                        tracing::error!(%address, error = %err, "Producer API server failed");
                    }
                })
            }
            ServerAddress::Tcp(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|err| format!("cannot listen on {address}: {err}"))?;
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let address = address.clone();
                tokio::spawn(async move {
                    if let Err(err) = router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                    {
                        tracing::error!(%address, error = %err, "Producer API server failed");
                    }
                })
            }
        };
        tracing::info!(%address, "Producer API listening");
        Ok(Listener {
            address,
            cancel,
            join,
        })
    }

    /// The address served.
    pub fn address(&self) -> &ServerAddress {
        &self.address
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
            let _ = std::fs::remove_file(path);
        }
        tracing::info!(address = %self.address, "Producer API closed");
    }
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
