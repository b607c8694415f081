//! Standalone mode's YAML file (output block plus `server`) and process-wide `-E` settings.

use super::{ConfigError, ConfigWarning, HumanDuration, OutputConfig, UnknownKeys};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The one key a standalone file adds to the output block; read by hand before the rest.
pub(crate) const SERVER_KEY: &str = "server";

/// `agent-shipper run -c FILE`: the output unit's schema plus the Producer API address.
#[derive(Debug, Clone, PartialEq)]
pub struct StandaloneConfig {
    /// Where the Producer API listens: `unix:///path`, `/path` or `host:port`.
    pub server: String,
    /// The output and queue, exactly as an OUTPUT unit would configure them.
    pub output: OutputConfig,
    /// Accepted keys that change nothing, values that won over a preset: to be logged.
    pub warnings: Vec<ConfigWarning>,
}

impl StandaloneConfig {
    /// Reads and validates a standalone config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Unreadable {
            origin: path.display().to_string(),
            reason: err.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses standalone YAML text; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let value: serde_json::Value =
            serde_yaml_ng::from_str(text).map_err(|err| ConfigError::Unreadable {
                origin: origin.to_string(),
                reason: err.to_string(),
            })?;
        let serde_json::Value::Object(mut map) = value else {
            return Err(ConfigError::Unreadable {
                origin: origin.to_string(),
                reason: "the file must hold a mapping of keys to values".into(),
            });
        };
        let server = match map.remove(SERVER_KEY) {
            Some(serde_json::Value::String(server)) if !server.trim().is_empty() => server,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: SERVER_KEY.into(),
                    reason: format!("expected a unix socket path or host:port, found {other}"),
                })
            }
            None => {
                return Err(ConfigError::Missing {
                    key: SERVER_KEY.into(),
                    reason: "where the Producer API listens, e.g. `unix:///tmp/shipper.sock`"
                        .into(),
                })
            }
        };
        // The file is the user's own: an unknown key is a typo, refused.
        let parsed = OutputConfig::parse(serde_json::Value::Object(map), UnknownKeys::Refuse)?;
        Ok(StandaloneConfig {
            server,
            output: parsed.config,
            warnings: parsed.warnings,
        })
    }
}

/// Process-wide settings given as Beats-style `-E key=value` overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSettings {
    /// `path.data`: where the queue and DLQ live. Default: `data` under the working directory.
    pub data_path: Option<PathBuf>,
    /// `control.checkin_interval`: longest time between two check-ins. Default 20s; at
    /// most 25s, because the agent counts a miss for every 30 s without one.
    pub checkin_interval: Duration,
    /// `shutdown_timeout`: how long SIGTERM may spend delivering queued events before the
    /// queue state is saved and the process exits. Default 20s, below the agent's 25 s kill.
    pub shutdown_timeout: Duration,
    /// `monitoring.enabled`: serve `/stats`, `/metrics` and `/health` over HTTP. Default false.
    pub monitoring_enabled: bool,
    /// `monitoring.address`: where that endpoint listens: `unix:///path`, `/path` or
    /// `host:port`. Default `127.0.0.1:5066` (the Beats port), never all interfaces unless
    /// written here.
    pub monitoring_address: String,
    /// `logging.metrics.enabled`: log a `metrics` line every period. Default true, as Beats.
    pub metrics_log_enabled: bool,
    /// `logging.metrics.period`: how often that line is logged. Default 30s, as Beats.
    pub metrics_log_period: Duration,
}

impl ProcessSettings {
    /// `path.data`, or `./data` when not given.
    pub fn data_path(&self) -> PathBuf {
        self.data_path
            .clone()
            .unwrap_or_else(|| PathBuf::from("data"))
    }
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings {
            data_path: None,
            checkin_interval: Duration::from_secs(20),
            shutdown_timeout: Duration::from_secs(20),
            monitoring_enabled: false,
            monitoring_address: "127.0.0.1:5066".into(),
            metrics_log_enabled: true,
            metrics_log_period: Duration::from_secs(30),
        }
    }
}

impl ProcessSettings {
    /// Every `-E` key `from_overrides` accepts; any other key is refused before the match
    /// below, so this list is the whole truth (and the reference doc is checked against it).
    pub const KNOWN_KEYS: &[&str] = &[
        "path.data",
        "control.checkin_interval",
        "shutdown_timeout",
        "monitoring.enabled",
        "monitoring.address",
        "logging.metrics.enabled",
        "logging.metrics.period",
    ];

    /// Applies `key=value` overrides in order; an unknown key is an error naming it.
    pub fn from_overrides<'a>(
        overrides: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ConfigError> {
        let mut settings = ProcessSettings::default();
        for item in overrides {
            let (key, value) = item.split_once('=').ok_or_else(|| ConfigError::Invalid {
                key: item.to_string(),
                reason: "an -E override must look like key=value".into(),
            })?;
            let key = key.trim();
            if !Self::KNOWN_KEYS.contains(&key) {
                return Err(unknown_setting(key));
            }
            match key {
                "path.data" => settings.data_path = Some(PathBuf::from(value.trim())),
                "control.checkin_interval" => {
                    settings.checkin_interval = duration_setting(key, value, |interval| {
                        (interval.is_zero() || interval > Duration::from_secs(25)).then_some(
                            "is outside 1ms..=25s (the agent counts a miss per 30 s without a check-in)",
                        )
                    })?
                }
                "shutdown_timeout" => {
                    settings.shutdown_timeout = duration_setting(key, value, |timeout| {
                        (timeout > Duration::from_secs(24)).then_some(
                            "is longer than 24s: the agent kills the process 25 s after SIGTERM",
                        )
                    })?
                }
                "monitoring.enabled" => {
                    settings.monitoring_enabled = parse_bool("monitoring.enabled", value)?
                }
                "monitoring.address" => {
                    let address = value.trim();
                    if address.is_empty() {
                        return Err(ConfigError::Invalid {
                            key: "monitoring.address".into(),
                            reason: "expected `unix:///path`, `/path` or `host:port`".into(),
                        });
                    }
                    settings.monitoring_address = address.to_string();
                }
                "logging.metrics.enabled" => {
                    settings.metrics_log_enabled = parse_bool("logging.metrics.enabled", value)?
                }
                "logging.metrics.period" => {
                    settings.metrics_log_period = duration_setting(key, value, |period| {
                        (period < Duration::from_millis(100)).then_some("is shorter than 100ms")
                    })?
                }
                other => return Err(unknown_setting(other)),
            }
        }
        Ok(settings)
    }
}

/// A duration setting; `refuse` says why a parsed value is out of range, if it is.
fn duration_setting(
    key: &str,
    value: &str,
    refuse: impl Fn(Duration) -> Option<&'static str>,
) -> Result<Duration, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: key.into(),
        reason,
    };
    let duration = value.parse::<HumanDuration>().map_err(invalid)?.get();
    match refuse(duration) {
        Some(why) => Err(invalid(format!("`{}` {why}", value.trim()))),
        None => Ok(duration),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(ConfigError::Invalid {
            key: key.into(),
            reason: format!("expected `true` or `false`, found `{other}`"),
        }),
    }
}

fn unknown_setting(key: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: format!(
            "unknown -E setting; known: {}",
            ProcessSettings::KNOWN_KEYS.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_file_parses() {
        let config = StandaloneConfig::parse(
            "server: unix:///tmp/s.sock\ntype: file\npath: /tmp/out.ndjson\n",
            "test.yml",
        )
        .unwrap();
        assert_eq!(config.server, "unix:///tmp/s.sock");
        assert_eq!(config.output.kind.type_name(), "file");
    }

    #[test]
    fn standalone_errors_name_the_key_or_the_file() {
        let err = StandaloneConfig::parse("type: file\npath: o\n", "a.yml").unwrap_err();
        assert!(err.to_string().contains("`server`"), "{err}");
        let err = StandaloneConfig::parse("server: s\ntype: file\npath: o\nworkers: 2\n", "a.yml")
            .unwrap_err();
        assert!(err.to_string().contains("`workers`"), "{err}");
        let err = StandaloneConfig::parse("server: [unclosed\n", "a.yml").unwrap_err();
        assert!(err.to_string().contains("a.yml"), "{err}");
    }

    #[test]
    fn overrides_accept_path_data_and_refuse_unknown_keys() {
        let settings = ProcessSettings::from_overrides(["path.data=/var/lib/shipper"]).unwrap();
        assert_eq!(settings.data_path, Some(PathBuf::from("/var/lib/shipper")));
        let err = ProcessSettings::from_overrides(["path.dta=/x"]).unwrap_err();
        assert!(err.to_string().contains("path.dta"), "{err}");
        assert!(
            err.to_string()
                .contains("known: path.data, control.checkin_interval"),
            "{err}"
        );
        assert!(ProcessSettings::from_overrides(["path.data"]).is_err());
        let fast = ProcessSettings::from_overrides(["control.checkin_interval=200ms"]).unwrap();
        assert_eq!(fast.checkin_interval, Duration::from_millis(200));
        let err = ProcessSettings::from_overrides(["control.checkin_interval=30s"]).unwrap_err();
        assert!(
            err.to_string().contains("control.checkin_interval"),
            "{err}"
        );
    }

    #[test]
    fn monitoring_and_metrics_log_settings() {
        let settings = ProcessSettings::from_overrides([
            "monitoring.enabled=true",
            "monitoring.address=unix:///run/shipper-monitor.sock",
            "logging.metrics.period=1s",
        ])
        .unwrap();
        assert!(settings.monitoring_enabled);
        assert_eq!(
            settings.monitoring_address,
            "unix:///run/shipper-monitor.sock"
        );
        assert_eq!(settings.metrics_log_period, Duration::from_secs(1));
        let err = ProcessSettings::from_overrides(["monitoring.enabled=yes"]).unwrap_err();
        assert!(err.to_string().contains("monitoring.enabled"), "{err}");
        let err = ProcessSettings::from_overrides(["logging.metrics.period=10ms"]).unwrap_err();
        assert!(err.to_string().contains("logging.metrics.period"), "{err}");
    }

    #[test]
    fn every_known_key_has_a_handler() {
        // A key in KNOWN_KEYS without a match arm would be refused as unknown.
        for key in ProcessSettings::KNOWN_KEYS {
            let item = format!("{key}=1s");
            if let Err(err) = ProcessSettings::from_overrides([item.as_str()]) {
                assert!(!err.to_string().contains("unknown"), "{key}: {err}");
            }
        }
    }
}
