//! HTTP for `_bulk`: hosts with failover and load spread, credentials, headers, proxy, TLS,
//! gzip.
//!
//! Proxies follow Beats: `proxy_url` when set; otherwise `HTTPS_PROXY`/`HTTP_PROXY` from
//! the environment, minus `NO_PROXY` and (as Go does) loopback hosts; nothing at all with
//! `proxy_disable`.

use super::bulk::{error_summary, BULK_PATH};
use crate::config::{proxy_url, Credentials, ElasticsearchConfig};
use base64::Engine;
use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE,
};
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
    /// Each host's `_bulk` URL: path prefix and `parameters` included.
    bulk_urls: Vec<String>,
    /// The hosts, for messages.
    hosts: Vec<String>,
    /// `headers`, sent with every request (marked sensitive: values stay out of logs).
    headers: HeaderMap,
    next_host: AtomicUsize,
    authorization: Option<HeaderValue>,
    credentials: String,
    compression_level: u32,
}

impl BulkClient {
    /// A client for `config`; reads the CA, certificate and key files it names.
    ///
    /// # Errors
    /// A CA, certificate or key file cannot be read or holds nothing usable, the proxy URL
    /// or a header is unusable, or the credentials are.
    pub fn new(config: &ElasticsearchConfig) -> Result<Self, ClientConfigError> {
        let hosts = config
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                config.host_url(h).map_err(|reason| ClientConfigError {
                    key: format!("hosts.{i}"),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bulk_urls = hosts
            .iter()
            .map(|host| bulk_url(host, &config.path_prefix(), &config.parameters))
            .collect();
        let headers = header_map("headers", &config.headers)?;
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

        let idle = config.idle_connection_timeout.get();
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout.get())
            .connect_timeout(config.timeout.get().min(std::time::Duration::from_secs(10)))
            .pool_max_idle_per_host(config.workers.max(1) * 2)
            // 0 keeps idle connections open, as Beats' idle_connection_timeout: 0.
            .pool_idle_timeout((!idle.is_zero()).then_some(idle))
            .tcp_nodelay(true)
            .use_preconfigured_tls(super::tls::client_config(&config.ssl)?);
        builder = configure_proxy(builder, config)?;
        let http = builder.build().map_err(|err| ClientConfigError {
            key: "ssl".into(),
            reason: error_chain(&err),
        })?;
        Ok(BulkClient {
            http,
            bulk_urls,
            hosts,
            headers,
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
            let index = (start + i) % self.hosts.len();
            let host = &self.hosts[index];
            let mut request = self
                .http
                .post(&self.bulk_urls[index])
                .headers(self.headers.clone())
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

/// `{host}{path}/_bulk?filter_path=…&{parameters}`, the parameters URL-encoded.
fn bulk_url(
    host: &str,
    path: &str,
    parameters: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut url = format!("{host}{path}{BULK_PATH}");
    if !parameters.is_empty() {
        let mut query = reqwest::Url::parse("http://x/").expect("a constant URL parses");
        query.query_pairs_mut().extend_pairs(parameters);
        if let Some(encoded) = query.query() {
            url.push('&');
            url.push_str(encoded);
        }
    }
    url
}

/// A header map from config, values marked sensitive (they may be tokens).
fn header_map(
    group: &str,
    headers: &std::collections::BTreeMap<String, crate::config::Secret>,
) -> Result<HeaderMap, ClientConfigError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let invalid = |reason: &str| ClientConfigError {
            key: format!("{group}.{name}"),
            reason: reason.into(),
        };
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid("is not a valid HTTP header name"))?;
        let mut value = HeaderValue::from_str(value.expose())
            .map_err(|_| invalid("the value holds characters not allowed in an HTTP header"))?;
        value.set_sensitive(true);
        map.append(header, value);
    }
    Ok(map)
}

/// `proxy_url`, `proxy_headers`, `proxy_disable`, or the environment's proxies.
fn configure_proxy(
    builder: reqwest::ClientBuilder,
    config: &ElasticsearchConfig,
) -> Result<reqwest::ClientBuilder, ClientConfigError> {
    if config.proxy_disable {
        return Ok(builder.no_proxy());
    }
    let proxy_error = |reason: String| ClientConfigError {
        key: "proxy_url".into(),
        reason,
    };
    let headers = header_map("proxy_headers", &config.proxy_headers)?;
    let with_headers = |proxy: reqwest::Proxy| {
        if headers.is_empty() {
            proxy
        } else {
            proxy.headers(headers.clone())
        }
    };
    if let Some(url) = &config.proxy_url {
        let url = proxy_url(url).map_err(proxy_error)?;
        let proxy = reqwest::Proxy::all(&url).map_err(|err| proxy_error(error_chain(&err)))?;
        tracing::info!(proxy = %redact_userinfo(&url), "elasticsearch requests go through a proxy");
        return Ok(builder.proxy(with_headers(proxy)));
    }
    // As Go's ProxyFromEnvironment: the usual variables, never for loopback hosts.
    let var = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    };
    let no_proxy = {
        let listed = var(["NO_PROXY", "no_proxy"]).unwrap_or_default();
        reqwest::NoProxy::from_string(&format!("{listed},localhost,127.0.0.0/8,::1"))
    };
    let mut builder = builder.no_proxy();
    for (names, https) in [
        (["HTTPS_PROXY", "https_proxy"], true),
        (["HTTP_PROXY", "http_proxy"], false),
    ] {
        let Some(url) = var(names) else { continue };
        let proxy = if https {
            reqwest::Proxy::https(url.as_str())
        } else {
            reqwest::Proxy::http(url.as_str())
        };
        match proxy {
            Ok(proxy) => builder = builder.proxy(with_headers(proxy.no_proxy(no_proxy.clone()))),
            Err(err) => tracing::warn!(
                variable = names[0],
                error = %error_chain(&err),
                "ignoring an unusable proxy variable"
            ),
        }
    }
    Ok(builder)
}

/// A proxy URL for a log line: `user:password@` replaced by `[redacted]@`.
fn redact_userinfo(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("redacted");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bulk_url_has_the_path_prefix_and_the_encoded_parameters() {
        let none = std::collections::BTreeMap::new();
        assert_eq!(
            bulk_url("https://es:9200", "", &none),
            format!("https://es:9200{BULK_PATH}")
        );
        let parameters = std::collections::BTreeMap::from([
            ("pipeline".to_string(), "my pipe&x".to_string()),
            ("refresh".to_string(), "false".to_string()),
        ]);
        assert_eq!(
            bulk_url("http://h:1", "/es", &parameters),
            format!("http://h:1/es{BULK_PATH}&pipeline=my+pipe%26x&refresh=false")
        );
    }

    #[test]
    fn proxy_credentials_are_not_logged() {
        assert_eq!(
            redact_userinfo("http://user:pa55@proxy:3128"),
            "http://redacted@proxy:3128/"
        );
        assert_eq!(redact_userinfo("http://proxy:3128"), "http://proxy:3128");
    }
}
