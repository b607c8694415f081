//! The monitoring endpoint: `GET /stats`, `GET /metrics`, `GET /health`, `GET /shipper` over
//! HTTP/1.1 on a unix socket or a TCP address (`-E http.host`/`http.port`, 127.0.0.1:5066
//! by default).
//!
//! Handlers only read the latest [`Stats`](super::Stats) from a `watch` channel, so a scrape
//! costs the pipeline nothing (`/stats` also reads `/proc/self` for the process section).
//! `/health` answers 200 while no unit is FAILED and the output is not degraded, 503
//! otherwise, with the reasons as JSON. `/shipper` and the `beat`/`system` sections of
//! `/stats` are what Elastic Agent's self-monitoring scrapes ([`super::agent`]).

use super::{prometheus, StatsWatch};
use crate::server::ServerAddress;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use tokio_util::sync::CancellationToken;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitoringError {
    /// The address could not be bound.
    #[error("http.host: cannot listen on {address}: {source}")]
    Bind {
        /// The configured address.
        address: String,
        /// The OS's reason.
        source: std::io::Error,
    },
}

/// A running endpoint.
pub struct MonitoringServer {
    /// Where it listens (the real port when `:0` was asked for).
    pub address: ServerAddress,
    join: tokio::task::JoinHandle<()>,
}

impl MonitoringServer {
    /// Binds `address` and serves until `shutdown`.
    pub async fn start(
        address: &ServerAddress,
        stats: StatsWatch,
        shutdown: CancellationToken,
    ) -> Result<Self, MonitoringError> {
        let bind_error = |source| MonitoringError::Bind {
            address: address.to_string(),
            source,
        };
        let (bound, join) = match address {
            ServerAddress::Unix(path) => {
                crate::server::remove_stale_socket(path).map_err(bind_error)?;
                // The figures are no secret, but only the owner has any business here.
                let listener = crate::server::bind_private(path, 0o600).map_err(bind_error)?;
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                (
                    address.clone(),
                    spawn_accept_loop(incoming, stats, shutdown),
                )
            }
            ServerAddress::Tcp(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(bind_error)?;
                let local = listener.local_addr().map_err(bind_error)?;
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                (
                    ServerAddress::Tcp(local),
                    spawn_accept_loop(incoming, stats, shutdown),
                )
            }
        };
        if let ServerAddress::Tcp(addr) = &bound {
            if !addr.ip().is_loopback() {
                tracing::warn!(address = %bound, "the monitoring endpoint listens beyond this host, as http.host says");
            }
        }
        tracing::info!(address = %bound, "monitoring endpoint listening (GET /stats, /metrics, /health, /shipper)");
        Ok(MonitoringServer {
            address: bound,
            join,
        })
    }

    /// Waits for the accept loop to end (after `shutdown`); removes a unix socket.
    pub async fn stopped(self) {
        let _ = self.join.await;
        if let ServerAddress::Unix(path) = &self.address {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Serves every accepted connection on its own task until `shutdown`. Accept errors (e.g.
/// out of file descriptors) are logged and retried after a pause, so a burst of them
/// neither spins nor ends the endpoint.
fn spawn_accept_loop<S>(
    mut incoming: impl futures_util::Stream<Item = std::io::Result<S>> + Unpin + Send + 'static,
    stats: StatsWatch,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::StreamExt;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = incoming.next() => match accepted {
                    Some(Ok(stream)) => serve_connection(stream, stats.clone()),
                    Some(Err(err)) => {
                        tracing::warn!(error = %err, "monitoring endpoint: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    None => break,
                },
            }
        }
    })
}

fn serve_connection<S>(stream: S, stats: StatsWatch)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |request| {
            let stats = stats.clone();
            async move { Ok::<_, Infallible>(respond(&request, &stats)) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(10))
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "monitoring connection ended with an error");
        }
    });
}

fn respond<B>(request: &Request<B>, stats: &StatsWatch) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "application/json",
            r#"{"error":"only GET is supported"}"#.into(),
        );
    }
    let latest = stats.borrow().clone();
    let path = request.uri().path();
    let Some(latest) = latest else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            r#"{"error":"no figures yet; the first sample is taken within a second of start"}"#
                .into(),
        );
    };
    match path {
        "/stats" => match super::agent::stats_body(&latest)
            .and_then(|body| serde_json::to_string_pretty(&body))
        {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(err) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                serde_json::json!({ "error": err.to_string() }).to_string(),
            ),
        },
        "/shipper" => reply(
            StatusCode::OK,
            "application/json",
            super::agent::shipper_body(&latest).to_string(),
        ),
        "/metrics" => reply(
            StatusCode::OK,
            prometheus::CONTENT_TYPE,
            prometheus::render(&latest),
        ),
        "/health" => {
            let mut problems: Vec<String> = latest
                .units
                .iter()
                .filter(|u| u.state == crate::supervisor::ReportedState::Failed)
                .map(|u| format!("{} unit {} FAILED: {}", u.kind, u.id, u.message))
                .collect();
            if let Some(output) = &latest.output.current {
                if output.health != "healthy" {
                    problems.push(format!(
                        "output {} degraded: {}",
                        output.unit_id,
                        output.health_reason.as_deref().unwrap_or("unknown reason")
                    ));
                }
            }
            let status = if problems.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::json!({
                "status": if problems.is_empty() { "healthy" } else { "unhealthy" },
                "problems": problems,
            });
            reply(status, "application/json", body.to_string())
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "application/json",
            serde_json::json!({
                "error": format!("no such path `{path}`; try /stats, /metrics, /health or /shipper")
            })
            .to_string(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
