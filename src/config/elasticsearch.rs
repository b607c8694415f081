//! `type: elasticsearch`: where the cluster is, how to authenticate, how to batch and retry.
//!
//! Key names follow the Beats Elasticsearch output, so a policy written for Beats (or by
//! Fleet) reads the same here. Credentials, header values and the client key are
//! [`Secret`]s: they never appear in a Debug print, a log line, a diagnostic or a config error.
//!
//! `preset` fills in the performance keys a Beats preset sets (see [`Preset`]); a key written
//! in the block wins over the preset's value, with a warning. Keys Beats has and a shipper
//! that never drops an event has no use for (`max_retries`, `loadbalance`, …) are accepted,
//! each with a warning that says why it changes nothing.

use super::{
    from_value, from_value_noting_unknown, ByteSize, ConfigError, ConfigWarning, HumanDuration,
    Secret,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The parsed `type: elasticsearch` block.
///
/// Unknown keys are not refused by serde here: the caller collects them (see
/// [`super::UnknownKeys`]), so one type serves the standalone file and the OUTPUT unit.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ElasticsearchConfig {
    /// Cluster nodes, `https://host:9200` or `host:9200` (scheme from `protocol`); at least one.
    pub hosts: Vec<String>,
    /// Beats performance preset; fills in the keys it sets that the block does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// Scheme of hosts written without one: `http` (default) or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// URL path prefix before `/_bulk`, for a cluster behind a reverse proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Query parameters added to every `_bulk` request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// HTTP headers sent with every request; values are secrets (they may carry tokens).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
    /// HTTP(S) proxy for every request: a URL, or `host:port` for http.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    /// Use no proxy at all: neither `proxy_url` nor `HTTP_PROXY`/`HTTPS_PROXY`.
    #[serde(default)]
    pub proxy_disable: bool,
    /// Headers sent to the proxy (on `CONNECT` for https hosts); values are secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy_headers: BTreeMap<String, Secret>,
    /// Idle pooled connections are closed after this long; 0 keeps them. Default 3s (as
    /// the Beats `balanced` preset).
    #[serde(default = "default_idle_connection_timeout")]
    pub idle_connection_timeout: HumanDuration,
    /// Accepted for Beats compatibility; no effect (see [`IGNORED_KEYS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_older_versions: Option<bool>,
    /// Accepted for Beats compatibility; no effect (see [`IGNORED_KEYS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escape_html: Option<bool>,
    /// Accepted for Beats compatibility; no effect (see [`IGNORED_KEYS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadbalance: Option<bool>,
    /// Accepted for Beats compatibility; no effect (see [`IGNORED_KEYS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i64>,
    /// Accepted because Fleet writes it; no effect (see [`IGNORED_KEYS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_sha256: Option<String>,
    /// `id:key` as Fleet writes it; sent as `Authorization: ApiKey base64(id:key)`.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Basic authentication user (with `password`); not together with `api_key`.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic authentication password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// TLS settings for `https://` hosts.
    #[serde(default)]
    pub ssl: SslConfig,
    /// gzip level of request bodies, 0 (off) to 9. Default 1, as Beats.
    #[serde(default = "default_compression_level")]
    pub compression_level: u32,
    /// Most events in one `_bulk` request. Default 1600, as Beats.
    #[serde(default = "default_bulk_max_size")]
    pub bulk_max_size: usize,
    /// Most uncompressed body bytes in one `_bulk` request. Default 10MiB.
    #[serde(default = "default_bulk_max_bytes")]
    pub bulk_max_bytes: ByteSize,
    /// Concurrent bulk requests (each with its own batch). Default 1.
    #[serde(default = "default_workers", alias = "worker")]
    pub workers: usize,
    /// Time limit of one HTTP request. Default 90s, as Beats.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Retry delays after a failed request.
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// The OUTPUT unit turns DEGRADED after this long without a successful bulk request.
    /// Default 30s.
    #[serde(default = "default_degraded_timeout")]
    pub degraded_timeout: HumanDuration,
}

/// `ssl:` for the Elasticsearch connection.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct SslConfig {
    /// CA certificates to trust instead of the built-in roots: file paths or inline PEM.
    pub certificate_authorities: Vec<String>,
    /// `full` (default), `strict`, `certificate` (no hostname check) or `none`.
    pub verification_mode: VerificationMode,
    /// Client certificate for Elasticsearch (PKI authentication): a file path or inline PEM,
    /// with `key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The client certificate's private key: a file path or inline PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    /// Hex SHA-256 of a CA certificate: when the server's chain holds a certificate with
    /// this fingerprint, it is trusted as a root for that handshake (as Beats does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_trusted_fingerprint: Option<String>,
    /// TLS versions allowed: `TLSv1.2`, `TLSv1.3`; empty means both.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub supported_protocols: Vec<TlsVersion>,
}

/// A TLS version, with Beats' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "TLSv1.2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

/// Scheme for hosts written as `host:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Plain HTTP (the default).
    #[default]
    Http,
    /// HTTPS.
    Https,
}

impl Protocol {
    /// `http` or `https`.
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

/// A Beats Elasticsearch-output performance preset (`libbeat/outputs/elasticsearch`
/// `config_presets.go`). Its values for the keys this output has are [`PresetValues`]; its
/// `queue.mem.*` values are not applied: the queue here is chosen by `queue` (durable disk by
/// default), and a preset must not trade durability for memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// One worker, 1600 events, 3s idle connections: Beats' default for Fleet.
    Balanced,
    /// Four workers, 1600 events, 15s idle connections.
    Throughput,
    /// One worker, 1600 events, 1s idle connections: many agents, few connections each.
    Scale,
    /// One worker, 50 events per request, 60s idle connections.
    Latency,
    /// No values: the keys in the block (or their defaults) alone.
    Custom,
}

/// The values a [`Preset`] gives the keys this output has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresetValues {
    /// `bulk_max_size`.
    pub bulk_max_size: usize,
    /// `workers` (Beats: `worker`).
    pub workers: usize,
    /// `compression_level`.
    pub compression_level: u32,
    /// `idle_connection_timeout`.
    pub idle_connection_timeout: Duration,
}

impl Preset {
    /// The preset's values, as Beats defines them; none for `custom`.
    pub fn values(self) -> Option<PresetValues> {
        let (bulk_max_size, workers, idle_secs) = match self {
            Preset::Balanced => (1600, 1, 3),
            Preset::Throughput => (1600, 4, 15),
            Preset::Scale => (1600, 1, 1),
            Preset::Latency => (50, 1, 60),
            Preset::Custom => return None,
        };
        Some(PresetValues {
            bulk_max_size,
            workers,
            compression_level: 1,
            idle_connection_timeout: Duration::from_secs(idle_secs),
        })
    }

    /// The name as written in configs.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Balanced => "balanced",
            Preset::Throughput => "throughput",
            Preset::Scale => "scale",
            Preset::Latency => "latency",
            Preset::Custom => "custom",
        }
    }
}

/// The key that names the preset; read first, since it fills in others.
const PRESET_KEY: &str = "preset";

/// Beats keys accepted with a warning, and why each changes nothing here.
pub const IGNORED_KEYS: &[(&str, &str)] = &[
    (
        "allow_older_versions",
        "has no effect: the shipper does not check the Elasticsearch version; it sends `create` actions into data streams, which Elasticsearch 7.9 and later accept",
    ),
    (
        "escape_html",
        "has no effect: event strings are sent as JSON without HTML escaping",
    ),
    (
        "loadbalance",
        "has no effect: requests always start at the next host in turn and move on to the others when one cannot be reached",
    ),
    (
        "max_retries",
        "has no effect: the shipper never drops an event after some retries; it retries until Elasticsearch indexes or rejects it (a rejected event goes to the dead letter queue)",
    ),
    (
        "ca_sha256",
        "has no effect: it is Fleet's copy of the Fleet Server CA fingerprint; to trust a CA by fingerprint use `ssl.ca_trusted_fingerprint`",
    ),
];

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationMode {
    /// Chain and hostname (the default).
    #[default]
    Full,
    /// Chain and hostname; the same as `full` here.
    Strict,
    /// Chain only, any hostname.
    Certificate,
    /// Nothing: for tests only, the connection is not authenticated.
    None,
}

/// `backoff:` delays between retries: exponential from `init` to `max`, with jitter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct BackoffConfig {
    /// First delay. Default 1s, as Beats.
    pub init: HumanDuration,
    /// Longest delay. Default 60s, as Beats.
    pub max: HumanDuration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            init: HumanDuration(Duration::from_secs(1)),
            max: HumanDuration(Duration::from_secs(60)),
        }
    }
}

fn default_compression_level() -> u32 {
    1
}
fn default_bulk_max_size() -> usize {
    1600
}
fn default_bulk_max_bytes() -> ByteSize {
    ByteSize(10 << 20)
}
fn default_workers() -> usize {
    1
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(90))
}
fn default_degraded_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_idle_connection_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(3))
}

/// How requests authenticate.
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    /// No `Authorization` header.
    None,
    /// `Authorization: ApiKey base64(id:key)`.
    ApiKey {
        /// The key's id (not secret; safe to log).
        id: String,
        /// `id:key` as configured.
        id_and_key: Secret,
    },
    /// `Authorization: Basic base64(user:password)`.
    Basic {
        /// The user (safe to log).
        username: String,
        /// The password.
        password: Secret,
    },
}

impl Credentials {
    /// Who these credentials are, for log lines: `api key <id>`, `user <name>`, `none`.
    pub fn describe(&self) -> String {
        match self {
            Credentials::None => "no credentials".into(),
            Credentials::ApiKey { id, .. } => format!("api key {id}"),
            Credentials::Basic { username, .. } => format!("user {username}"),
        }
    }
}

impl ElasticsearchConfig {
    /// Reads a `type: elasticsearch` block (without `type`, `queue`, `dlq`): applies
    /// `preset` to the keys the block leaves out, pushes every unknown key onto `unknown`,
    /// and validates. The warnings say which explicit keys won over the preset and which
    /// accepted keys change nothing.
    pub(crate) fn parse(
        mut block: serde_json::Map<String, serde_json::Value>,
        unknown: &mut Vec<String>,
    ) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        let preset: Option<Preset> = match block.get(PRESET_KEY) {
            Some(value) => from_value(value.clone(), PRESET_KEY)?,
            None => None,
        };
        let values = preset.and_then(Preset::values);
        // Keys the block sets itself, among those the preset would fill in.
        let mut explicit = Vec::new();
        if let Some(values) = &values {
            let filled = [
                (
                    "bulk_max_size",
                    &["bulk_max_size"][..],
                    serde_json::json!(values.bulk_max_size),
                ),
                (
                    "workers",
                    &["workers", "worker"][..],
                    serde_json::json!(values.workers),
                ),
                (
                    "compression_level",
                    &["compression_level"][..],
                    serde_json::json!(values.compression_level),
                ),
                (
                    "idle_connection_timeout",
                    &["idle_connection_timeout"][..],
                    serde_json::json!(HumanDuration(values.idle_connection_timeout).to_string()),
                ),
            ];
            for (key, names, value) in filled {
                match names.iter().find(|name| block.contains_key(**name)) {
                    Some(name) => explicit.push((key, *name)),
                    None => {
                        block.insert(key.to_string(), value);
                    }
                }
            }
        }
        let config: ElasticsearchConfig =
            from_value_noting_unknown(serde_json::Value::Object(block), "", unknown)?;
        config.validate()?;
        let mut warnings = Vec::new();
        if let (Some(preset), Some(values)) = (preset, values) {
            for (key, written) in explicit {
                let (mine, theirs) = match key {
                    "bulk_max_size" => (
                        config.bulk_max_size.to_string(),
                        values.bulk_max_size.to_string(),
                    ),
                    "workers" => (config.workers.to_string(), values.workers.to_string()),
                    "compression_level" => (
                        config.compression_level.to_string(),
                        values.compression_level.to_string(),
                    ),
                    _ => (
                        config.idle_connection_timeout.to_string(),
                        HumanDuration(values.idle_connection_timeout).to_string(),
                    ),
                };
                if mine != theirs {
                    warnings.push(ConfigWarning {
                        key: written.to_string(),
                        message: format!(
                            "the value written ({mine}) wins over preset `{}`'s {theirs} (Beats would apply the preset's value; set `preset: custom` to silence this)",
                            preset.name()
                        ),
                    });
                }
            }
        }
        for (key, why) in IGNORED_KEYS {
            let set = match *key {
                "allow_older_versions" => config.allow_older_versions.is_some(),
                "escape_html" => config.escape_html.is_some(),
                "loadbalance" => config.loadbalance.is_some(),
                "max_retries" => config.max_retries.is_some(),
                _ => config.ca_sha256.is_some(),
            };
            if set {
                warnings.push(ConfigWarning {
                    key: key.to_string(),
                    message: format!("accepted for Beats compatibility and {why}"),
                });
            }
        }
        Ok((config, warnings))
    }

    /// The URL of `host` (an entry of `hosts`): `protocol` for a host without a scheme,
    /// no trailing slash.
    pub fn host_url(&self, host: &str) -> Result<String, String> {
        normalize_host_with(host, self.protocol.unwrap_or_default())
    }

    /// `path` as a prefix: `/prefix` without a trailing slash, or empty.
    pub fn path_prefix(&self) -> String {
        match self.path.as_deref().map(|p| p.trim().trim_matches('/')) {
            Some(path) if !path.is_empty() => format!("/{path}"),
            _ => String::new(),
        }
    }

    /// Checks what serde cannot: hosts, the credential combination, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.into(),
            reason,
        };
        if self.hosts.is_empty() {
            return Err(ConfigError::Missing {
                key: "hosts".into(),
                reason: "at least one Elasticsearch URL, e.g. `https://localhost:9200`".into(),
            });
        }
        for (i, host) in self.hosts.iter().enumerate() {
            self.host_url(host)
                .map_err(|reason| invalid(&format!("hosts.{i}"), reason))?;
        }
        if let Some(path) = &self.path {
            if path.contains(['?', '#']) || path.chars().any(char::is_whitespace) {
                return Err(invalid(
                    "path",
                    "must be a URL path such as `/elasticsearch`, without `?`, `#` or spaces"
                        .into(),
                ));
            }
        }
        for (group, headers) in [
            ("headers", &self.headers),
            ("proxy_headers", &self.proxy_headers),
        ] {
            for (name, value) in headers {
                let key = format!("{group}.{name}");
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(invalid(&key, "is not a valid HTTP header name".into()));
                }
                if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
                    // The value is not quoted: it may be a token.
                    return Err(invalid(
                        &key,
                        "the value holds characters not allowed in an HTTP header".into(),
                    ));
                }
            }
        }
        if let Some(proxy) = &self.proxy_url {
            proxy_url(proxy).map_err(|reason| invalid("proxy_url", reason))?;
        }
        match (&self.ssl.certificate, &self.ssl.key) {
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    key: "ssl.key".into(),
                    reason: "ssl.certificate is set; a client certificate needs its key".into(),
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    key: "ssl.certificate".into(),
                    reason: "ssl.key is set; a client key needs its certificate".into(),
                })
            }
            _ => {}
        }
        if let Some(fingerprint) = &self.ssl.ca_trusted_fingerprint {
            parse_fingerprint(fingerprint)
                .map_err(|reason| invalid("ssl.ca_trusted_fingerprint", reason))?;
        }
        self.credentials()?;
        if self.compression_level > 9 {
            return Err(invalid(
                "compression_level",
                format!("must be 0 (off) to 9, found {}", self.compression_level),
            ));
        }
        if self.bulk_max_size == 0 {
            return Err(invalid("bulk_max_size", "must be at least 1".into()));
        }
        if self.bulk_max_bytes.bytes() < 1024 {
            return Err(invalid(
                "bulk_max_bytes",
                format!(
                    "must be at least 1KiB, found {}",
                    self.bulk_max_bytes.bytes()
                ),
            ));
        }
        if self.workers == 0 || self.workers > 64 {
            return Err(invalid(
                "workers",
                format!("must be 1 to 64, found {}", self.workers),
            ));
        }
        if self.timeout.get().is_zero() {
            return Err(invalid("timeout", "must be greater than 0".into()));
        }
        if self.backoff.init.get().is_zero() {
            return Err(invalid("backoff.init", "must be greater than 0".into()));
        }
        if self.backoff.max < self.backoff.init {
            return Err(invalid(
                "backoff.max",
                "must not be shorter than backoff.init".into(),
            ));
        }
        if self.degraded_timeout.get().is_zero() {
            return Err(invalid("degraded_timeout", "must be greater than 0".into()));
        }
        for (i, ca) in self.ssl.certificate_authorities.iter().enumerate() {
            if ca.trim().is_empty() {
                return Err(invalid(
                    &format!("ssl.certificate_authorities.{i}"),
                    "is empty; give a file path or a PEM certificate".into(),
                ));
            }
        }
        Ok(())
    }

    /// The credentials the config names.
    ///
    /// # Errors
    /// `api_key` together with `username`/`password`, a password without a user (or the
    /// other way round), or an `api_key` that is not `id:key`. The message never quotes
    /// the secret.
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        };
        match (&self.api_key, &self.username, &self.password) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(invalid(
                "api_key",
                "api_key and username/password are both set; use one of them",
            )),
            (Some(key), None, None) => match key.expose().split_once(':') {
                Some((id, rest)) if !id.is_empty() && !rest.is_empty() => Ok(Credentials::ApiKey {
                    id: id.to_string(),
                    id_and_key: key.clone(),
                }),
                _ => Err(invalid(
                    "api_key",
                    "must be `id:key`, as Fleet writes it (the value is not shown)",
                )),
            },
            (None, Some(user), Some(password)) => Ok(Credentials::Basic {
                username: user.clone(),
                password: password.clone(),
            }),
            (None, Some(_), None) => Err(ConfigError::Missing {
                key: "password".into(),
                reason: "username is set; basic authentication needs both".into(),
            }),
            (None, None, Some(_)) => Err(ConfigError::Missing {
                key: "username".into(),
                reason: "password is set; basic authentication needs both".into(),
            }),
            (None, None, None) => Ok(Credentials::None),
        }
    }
}

/// `proxy_url` as a URL: `host:port` means `http://host:port`; http and https proxies only.
pub fn proxy_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    let url = if text.contains("://") {
        text.to_string()
    } else {
        format!("http://{text}")
    };
    let parsed = reqwest::Url::parse(&url).map_err(|err| format!("not a URL: {err}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme must be http or https, found `{}`",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(url)
}

/// `ssl.ca_trusted_fingerprint` as 32 bytes: hex, case-insensitive, `:` separators allowed.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let hex: Vec<u8> = text.trim().bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 {
        return Err(format!(
            "must be the hex SHA-256 of a CA certificate (64 hex digits), found {} digits",
            hex.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(high), Some(low)) => out[i] = (high * 16 + low) as u8,
            _ => return Err("holds a character that is not a hex digit".into()),
        }
    }
    Ok(out)
}

/// `host:port` → `http://host:port`; a URL keeps its scheme. Only http and https; no
/// trailing slash.
pub fn normalize_host(host: &str) -> Result<String, String> {
    normalize_host_with(host, Protocol::Http)
}

/// [`normalize_host`] with `protocol` for a host without a scheme.
pub fn normalize_host_with(host: &str, protocol: Protocol) -> Result<String, String> {
    let host = host.trim();
    if host.is_empty() {
        return Err("is empty; write e.g. `https://localhost:9200`".into());
    }
    let with_scheme = if host.contains("://") {
        host.to_string()
    } else {
        format!("{}://{host}", protocol.scheme())
    };
    let scheme = with_scheme.split("://").next().unwrap_or_default();
    if scheme != "http" && scheme != "https" {
        return Err(format!("`{host}`: the scheme must be http or https"));
    }
    let rest = &with_scheme[scheme.len() + 3..];
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.contains(' ') {
        return Err(format!(
            "`{host}` is not a URL such as `https://localhost:9200` (credentials go in api_key or username/password)"
        ));
    }
    Ok(with_scheme.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Result<ElasticsearchConfig, ConfigError> {
        parse_noting(value).map(|(config, _, _)| config)
    }

    /// The config, its warnings and its unknown keys; an unknown key is an error here, as
    /// in a standalone file.
    fn parse_noting(
        value: serde_json::Value,
    ) -> Result<(ElasticsearchConfig, Vec<ConfigWarning>, Vec<String>), ConfigError> {
        let serde_json::Value::Object(block) = value else {
            panic!("not a map")
        };
        let mut unknown = Vec::new();
        let (config, warnings) = ElasticsearchConfig::parse(block, &mut unknown)?;
        if let Some(key) = unknown.first() {
            return Err(ConfigError::Invalid {
                key: key.clone(),
                reason: "unknown field".into(),
            });
        }
        Ok((config, warnings, unknown))
    }

    #[test]
    fn defaults_follow_beats() {
        let config = parse(json!({"hosts": ["localhost:9200"]})).unwrap();
        assert_eq!(config.compression_level, 1);
        assert_eq!(config.bulk_max_size, 1600);
        assert_eq!(config.workers, 1);
        assert_eq!(config.backoff.init.get(), Duration::from_secs(1));
        assert_eq!(config.backoff.max.get(), Duration::from_secs(60));
        assert_eq!(config.credentials().unwrap(), Credentials::None);
        assert_eq!(
            normalize_host("localhost:9200").unwrap(),
            "http://localhost:9200"
        );
        assert_eq!(
            normalize_host("https://es.example:9243/").unwrap(),
            "https://es.example:9243"
        );
    }

    #[test]
    fn api_key_and_basic_auth_together_is_an_error() {
        let err = parse(json!({"hosts": ["h:1"], "api_key": "id:secretvalue", "username": "u", "password": "p"}))
            .unwrap_err();
        assert!(err.to_string().contains("api_key"), "{err}");
        assert!(!err.to_string().contains("secretvalue"), "{err}");
    }

    #[test]
    fn a_malformed_api_key_is_refused_without_quoting_it() {
        let err = parse(json!({"hosts": ["h:1"], "api_key": "nocolonsecret"})).unwrap_err();
        assert!(err.to_string().contains("id:key"), "{err}");
        assert!(!err.to_string().contains("nocolonsecret"), "{err}");
        let debug = format!(
            "{:?}",
            parse(json!({"hosts": ["h:1"], "api_key": "abc:topsecret"})).unwrap()
        );
        assert!(!debug.contains("topsecret"), "{debug}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (json!({"hosts": []}), "hosts"),
            (json!({"hosts": ["ftp://x"]}), "hosts.0"),
            (json!({"hosts": ["h:1", "user:pw@h:2"]}), "hosts.1"),
            (
                json!({"hosts": ["h:1"], "compression_level": 10}),
                "compression_level",
            ),
            (json!({"hosts": ["h:1"], "workers": 0}), "workers"),
            (json!({"hosts": ["h:1"], "timeout": "soon"}), "timeout"),
            (
                json!({"hosts": ["h:1"], "backoff": {"init": "2s", "max": "1s"}}),
                "backoff.max",
            ),
            (
                json!({"hosts": ["h:1"], "backoff": {"inti": "2s"}}),
                "backoff.inti",
            ),
            (
                json!({"hosts": ["h:1"], "ssl": {"verification_mode": "maybe"}}),
                "ssl.verification_mode",
            ),
            (json!({"hosts": ["h:1"], "password": "p"}), "username"),
            (
                json!({"hosts": ["h:1"], "bulk_max_sise": 5}),
                "bulk_max_sise",
            ),
        ];
        for (value, key) in cases {
            let err = parse(value.clone()).unwrap_err();
            let named = match &err {
                ConfigError::Invalid { key, .. } | ConfigError::Missing { key, .. } => key.clone(),
                other => panic!("{other:?}"),
            };
            assert_eq!(named, key, "{value} gave {err}");
        }
    }

    #[test]
    fn a_preset_fills_in_the_keys_the_block_leaves_out() {
        let (config, warnings, _) =
            parse_noting(json!({"hosts": ["h:1"], "preset": "throughput"})).unwrap();
        assert_eq!(config.workers, 4);
        assert_eq!(config.bulk_max_size, 1600);
        assert_eq!(config.compression_level, 1);
        assert_eq!(
            config.idle_connection_timeout.get(),
            Duration::from_secs(15)
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        let latency = parse(json!({"hosts": ["h:1"], "preset": "latency"})).unwrap();
        assert_eq!((latency.bulk_max_size, latency.workers), (50, 1));
        assert_eq!(
            latency.idle_connection_timeout.get(),
            Duration::from_secs(60)
        );
        let scale = parse(json!({"hosts": ["h:1"], "preset": "scale"})).unwrap();
        assert_eq!(scale.idle_connection_timeout.get(), Duration::from_secs(1));
        // custom and no preset: the keys' own defaults.
        for block in [
            json!({"hosts": ["h:1"], "preset": "custom"}),
            json!({"hosts": ["h:1"]}),
        ] {
            let config = parse(block).unwrap();
            assert_eq!((config.workers, config.bulk_max_size), (1, 1600));
            assert_eq!(config.idle_connection_timeout.get(), Duration::from_secs(3));
        }
    }

    #[test]
    fn explicit_keys_win_over_the_preset_with_one_warning_each() {
        let (config, warnings, _) = parse_noting(json!({
            "hosts": ["h:1"], "preset": "throughput",
            "worker": 2, "bulk_max_size": 800, "idle_connection_timeout": "15s"
        }))
        .unwrap();
        assert_eq!(config.workers, 2);
        assert_eq!(config.bulk_max_size, 800);
        // Values the preset does not set keep coming from it.
        assert_eq!(config.compression_level, 1);
        let keys: Vec<&str> = warnings.iter().map(|w| w.key.as_str()).collect();
        // The same value as the preset's is no conflict.
        assert_eq!(keys, ["bulk_max_size", "worker"], "{warnings:?}");
        assert!(warnings[1].message.contains("throughput"), "{warnings:?}");
        assert!(warnings[1].message.contains('4'), "{warnings:?}");
        let custom =
            parse_noting(json!({"hosts": ["h:1"], "preset": "custom", "workers": 3})).unwrap();
        assert_eq!(custom.0.workers, 3);
        assert!(custom.1.is_empty());
    }

    #[test]
    fn beats_keys_without_meaning_here_are_accepted_with_one_warning_each() {
        let (_, warnings, _) = parse_noting(json!({
            "hosts": ["h:1"], "allow_older_versions": true, "escape_html": false,
            "loadbalance": true, "max_retries": 3
        }))
        .unwrap();
        let keys: Vec<&str> = warnings.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "allow_older_versions",
                "escape_html",
                "loadbalance",
                "max_retries"
            ]
        );
        assert!(warnings[3].message.contains("never drops"), "{warnings:?}");
        let err = parse(json!({"hosts": ["h:1"], "max_retries": "many"})).unwrap_err();
        assert!(err.to_string().contains("max_retries"), "{err}");
    }

    #[test]
    fn connection_keys_are_read_and_their_bad_values_named() {
        let config = parse(json!({
            "hosts": ["es1:9200", "http://es2:9200"], "protocol": "https", "path": "/es/",
            "parameters": {"pipeline": "p 1"}, "headers": {"X-Tenant": "t1"},
            "proxy_url": "proxy.local:3128", "proxy_headers": {"Proxy-Authorization": "Basic eA=="},
            "ssl": {"certificate": "/c.pem", "key": "/k.pem", "supported_protocols": ["TLSv1.3"],
                    "ca_trusted_fingerprint": "AB".repeat(32)}
        }))
        .unwrap();
        assert_eq!(config.host_url("es1:9200").unwrap(), "https://es1:9200");
        assert_eq!(
            config.host_url("http://es2:9200").unwrap(),
            "http://es2:9200"
        );
        assert_eq!(config.path_prefix(), "/es");
        assert_eq!(config.ssl.supported_protocols, [TlsVersion::Tls13]);
        let debug = format!("{config:?}");
        assert!(!debug.contains("t1") && !debug.contains("eA=="), "{debug}");
        let cases = [
            (json!({"proxy_url": "socks5://p:1080"}), "proxy_url"),
            (json!({"protocol": "ftp"}), "protocol"),
            (json!({"path": "/a?b"}), "path"),
            (json!({"headers": {"Bad Name": "v"}}), "headers.Bad Name"),
            (json!({"headers": {"X-A": "line\nbreak"}}), "headers.X-A"),
            (json!({"ssl": {"certificate": "/c.pem"}}), "ssl.key"),
            (json!({"ssl": {"key": "/k.pem"}}), "ssl.certificate"),
            (
                json!({"ssl": {"ca_trusted_fingerprint": "abc"}}),
                "ssl.ca_trusted_fingerprint",
            ),
            (
                json!({"ssl": {"supported_protocols": ["TLSv1.1"]}}),
                "ssl.supported_protocols[0]",
            ),
            (json!({"preset": "fast"}), "preset"),
            (
                json!({"idle_connection_timeout": "soon"}),
                "idle_connection_timeout",
            ),
        ];
        for (extra, key) in cases {
            let mut block = json!({"hosts": ["h:1"]});
            for (k, v) in extra.as_object().unwrap() {
                block[k] = v.clone();
            }
            let err = parse(block.clone()).unwrap_err();
            let named = match &err {
                ConfigError::Invalid { key, .. } | ConfigError::Missing { key, .. } => key.clone(),
                other => panic!("{other:?}"),
            };
            assert_eq!(named, key, "{block} gave {err}");
            assert!(!err.to_string().contains("line\nbreak"), "{err}");
        }
    }
}
