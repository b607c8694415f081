//! HTTP for `_bulk`: hosts with failover and load spread, credentials, TLS, gzip.

use super::bulk::{error_summary, BULK_PATH};
use crate::config::{normalize_host, Credentials, ElasticsearchConfig, VerificationMode};
use base64::Engine;
use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why a `_bulk` request got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No host could be reached (refused, reset, timed out, TLS failure).
    #[error("cannot reach Elasticsearch ({hosts}): {message}")]
    Connection {
        /// The hosts tried.
        hosts: String,
        /// The last error.
        message: String,
    },
    /// A host answered the whole request with a non-2xx status.
    #[error("{status} from {host}: {summary}")]
    Status {
        /// Which host.
        host: String,
        /// The HTTP status.
        status: u16,
        /// `error.type: error.reason` from the body.
        summary: String,
    },
}

impl RequestError {
    /// The HTTP status, when a host answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RequestError::Status { status, .. } => Some(*status),
            RequestError::Connection { .. } => None,
        }
    }
}

/// A building error, naming the config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config key `{key}`: {reason}")]
pub struct ClientConfigError {
    /// The key.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// Sends `_bulk` bodies for one output generation (its hosts, credentials and TLS).
pub struct BulkClient {
    http: reqwest::Client,
    hosts: Vec<String>,
    next_host: AtomicUsize,
    authorization: Option<HeaderValue>,
    credentials: String,
    compression_level: u32,
}

impl BulkClient {
    /// A client for `config`; reads the CA files it names.
    ///
    /// # Errors
    /// A CA file cannot be read or holds no certificate, or the credentials are unusable.
    pub fn new(config: &ElasticsearchConfig) -> Result<Self, ClientConfigError> {
        let hosts = config
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                normalize_host(h).map_err(|reason| ClientConfigError {
                    key: format!("hosts.{i}"),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let credentials = config.credentials().map_err(|err| ClientConfigError {
            key: "api_key".into(),
            reason: err.to_string(),
        })?;
        let authorization = match &credentials {
            Credentials::None => None,
            Credentials::ApiKey { id_and_key, .. } => Some(format!(
                "ApiKey {}",
                base64::engine::general_purpose::STANDARD.encode(id_and_key.expose())
            )),
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()))
            )),
        }
        .map(|value| {
            HeaderValue::from_str(&value)
                .map(|mut v| {
                    // Keeps the value out of HTTP-level debug logs.
                    v.set_sensitive(true);
                    v
                })
                .map_err(|_| ClientConfigError {
                    key: "api_key".into(),
                    reason: "contains characters not allowed in an HTTP header".into(),
                })
        })
        .transpose()?;

        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout.get())
            .connect_timeout(config.timeout.get().min(std::time::Duration::from_secs(10)))
            .pool_max_idle_per_host(config.workers.max(1) * 2)
            .tcp_nodelay(true)
            .no_proxy();
        if !config.ssl.certificate_authorities.is_empty() {
            // As Beats: configured CAs replace the built-in roots.
            builder = builder.tls_built_in_root_certs(false);
            for (i, ca) in config.ssl.certificate_authorities.iter().enumerate() {
                let key = format!("ssl.certificate_authorities.{i}");
                let pem = if ca.trim_start().starts_with("-----BEGIN") {
                    ca.clone().into_bytes()
                } else {
                    std::fs::read(ca).map_err(|err| ClientConfigError {
                        key: key.clone(),
                        reason: format!("cannot read {ca}: {err}"),
                    })?
                };
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
                    ClientConfigError {
                        key: key.clone(),
                        reason: format!("not a PEM certificate: {err}"),
                    }
                })?;
                if certs.is_empty() {
                    return Err(ClientConfigError {
                        key,
                        reason: "holds no PEM certificate".into(),
                    });
                }
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
        }
        builder = match config.ssl.verification_mode {
            VerificationMode::Full | VerificationMode::Strict => builder,
            VerificationMode::Certificate => builder.danger_accept_invalid_hostnames(true),
            VerificationMode::None => {
                tracing::warn!(
                    "ssl.verification_mode: none: the Elasticsearch server is not authenticated"
                );
                builder.danger_accept_invalid_certs(true)
            }
        };
        let http = builder.build().map_err(|err| ClientConfigError {
            key: "ssl".into(),
            reason: error_chain(&err),
        })?;
        Ok(BulkClient {
            http,
            hosts,
            next_host: AtomicUsize::new(0),
            authorization,
            credentials: credentials.describe(),
            compression_level: config.compression_level,
        })
    }

    /// Who this client authenticates as, for logs (`api key <id>`), never the secret.
    pub fn credentials(&self) -> &str {
        &self.credentials
    }

    /// gzip-compresses `body` at the configured level (or hands it back at level 0).
    pub fn prepare(&self, body: Vec<u8>) -> Bytes {
        if self.compression_level == 0 {
            return Bytes::from(body);
        }
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::new(self.compression_level),
        );
        // Writing into a Vec cannot fail.
        let _ = encoder.write_all(&body);
        Bytes::from(encoder.finish().unwrap_or_default())
    }

    /// POSTs a prepared body to `_bulk`. Starts at the next host in turn (load spread) and
    /// moves on to the others when one cannot be reached (failover); a host that answers,
    /// whatever the status, ends the attempt.
    ///
    /// # Errors
    /// No host reachable, or a non-2xx answer.
    pub async fn bulk(&self, body: Bytes) -> Result<Bytes, RequestError> {
        let start = self.next_host.fetch_add(1, Ordering::Relaxed);
        let mut last_error = String::new();
        for i in 0..self.hosts.len() {
            let host = &self.hosts[(start + i) % self.hosts.len()];
            let mut request = self
                .http
                .post(format!("{host}{BULK_PATH}"))
                .header(CONTENT_TYPE, "application/x-ndjson")
                .body(body.clone());
            if self.compression_level > 0 {
                request = request.header(CONTENT_ENCODING, "gzip");
            }
            if let Some(authorization) = &self.authorization {
                request = request.header(AUTHORIZATION, authorization.clone());
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(err) => {
                    last_error = format!("{host}: {}", error_chain(&err));
                    tracing::debug!(error = %last_error, "bulk request failed; trying the next host");
                    continue;
                }
            };
            let status = response.status().as_u16();
            let bytes = match response.bytes().await {
                Ok(bytes) => bytes,
                Err(err) => {
                    last_error = format!("{host}: reading the response: {}", error_chain(&err));
                    continue;
                }
            };
            if (200..300).contains(&status) {
                return Ok(bytes);
            }
            return Err(RequestError::Status {
                host: host.clone(),
                status,
                summary: error_summary(&bytes),
            });
        }
        Err(RequestError::Connection {
            hosts: self.hosts.join(", "),
            message: last_error,
        })
    }
}

/// An error and its causes, `outer: inner: innermost`, without repeats.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}
