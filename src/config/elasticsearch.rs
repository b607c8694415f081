//! `type: elasticsearch`: where the cluster is, how to authenticate, how to batch and retry.
//!
//! Key names follow the Beats Elasticsearch output, so a policy written for Beats reads the
//! same here. Credentials are [`Secret`]s: they never appear in a Debug print, a log line or
//! a config error.

use super::{ByteSize, ConfigError, HumanDuration, Secret};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The parsed `type: elasticsearch` block.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// Cluster nodes, `https://host:9200` or `host:9200` (http); at least one.
    pub hosts: Vec<String>,
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
#[serde(deny_unknown_fields, default)]
pub struct SslConfig {
    /// CA certificates to trust instead of the built-in roots: file paths or inline PEM.
    pub certificate_authorities: Vec<String>,
    /// `full` (default), `strict`, `certificate` (no hostname check) or `none`.
    pub verification_mode: VerificationMode,
}

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
#[serde(deny_unknown_fields, default)]
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
            normalize_host(host).map_err(|reason| invalid(&format!("hosts.{i}"), reason))?;
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

/// `host:port` → `http://host:port`; a URL keeps its scheme. Only http and https; no
/// trailing slash.
pub fn normalize_host(host: &str) -> Result<String, String> {
    let host = host.trim();
    if host.is_empty() {
        return Err("is empty; write e.g. `https://localhost:9200`".into());
    }
    let with_scheme = if host.contains("://") {
        host.to_string()
    } else {
        format!("http://{host}")
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
        let config: ElasticsearchConfig = super::super::from_value(value, "")?;
        config.validate()?;
        Ok(config)
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
}
