//! One running gRPC server for the Producer API on one address, owned by whoever bound it.

use super::{LimitsLayer, ProducerService, Routes, ServerAddress};
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
    /// the latest `routes`, under `limits` (validated; see `limits.rs`).
    ///
    /// # Errors
    /// A message naming the address when it cannot be bound (in use, no permission,
    /// missing directory).
    pub async fn bind(
        address: ServerAddress,
        uuid: &str,
        routes: watch::Receiver<Arc<Routes>>,
        limits: ProducerLimits,
    ) -> Result<Self, String> {
        // One token ends both the server and its open PersistedIndex streams: a graceful
        // shutdown waits for every connection, and inputs keep those streams open.
        let cancel = CancellationToken::new();
        let service = ProducerService::new(uuid, routes, cancel.clone()).with_limits(limits);
        let router = tonic::transport::Server::builder()
            .layer(LimitsLayer::new(limits))
            .add_service(
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
                let listener = tokio::net::UnixListener::bind(path)
                    .map_err(|err| format!("cannot listen on {address}: {err}"))?;
                // Only the owner (the agent's user) may publish.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|err| format!("cannot restrict {address} to mode 0600: {err}"))?;
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

fn remove_stale_socket(path: &std::path::Path) -> std::io::Result<()> {
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
