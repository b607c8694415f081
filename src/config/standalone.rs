//! Standalone mode's YAML file (output block plus `server`) and process-wide `-E` settings:
//! Beats' names, and a key not used here is a warning, never an error (the agent owns the
//! command line; see [`ProcessSettings`]).

use super::{ConfigError, ConfigWarning, HumanDuration, OutputConfig, UnknownKeys};
use crate::supervisor::LogLevel;
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
///
/// Elastic Agent owns this command line: it passes the spec's `command.args` (Elastic's
/// shipper spec wrote `-E logging.level=info`), then `-E path.data=…`, and its
/// self-monitoring adds `-E http.*` and `-E logging.metrics.enabled=false`. So a key this
/// shipper does not know or does not use is collected in [`ProcessSettings::ignored`] and
/// logged as one warning once logging runs, never refused; a bad value of a key it uses
/// is still an error naming the key.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSettings {
    /// `path.data`: where the queue and DLQ live. Default: `data` under the working directory.
    pub data_path: Option<PathBuf>,
    /// `path.state`: the root of the per-component storage directories that outlive
    /// `path.data` (see [`crate::storage`]). Default: none, except under Elastic Agent 9.x
    /// (`AGENT_COMPONENT_TYPE=agent-shipper`): `<parent of path.data>/agent-shipper.state`.
    pub state_path: Option<PathBuf>,
    /// `control.checkin_interval`: longest time between two check-ins. Default 20s; at
    /// most 25s, because the agent counts a miss for every 30 s without one.
    pub checkin_interval: Duration,
    /// `shutdown_timeout`: how long SIGTERM may spend delivering queued events before the
    /// queue state is saved and the process exits. Default 20s, well inside the agent's
    /// SIGKILL after the spec's `timeouts.stop` (30 s by default).
    pub shutdown_timeout: Duration,
    /// `logging.level`: the log level until the agent's units name one. Default info.
    pub log_level: LogLevel,
    /// `http.enabled` (formerly `monitoring.enabled`): serve the monitoring endpoint.
    /// Default false.
    pub monitoring_enabled: bool,
    /// Where that endpoint listens, from `http.host` and `http.port` (formerly
    /// `monitoring.address`): `unix:///path`, `/path` or `ip:port`. Default
    /// `127.0.0.1:5066` (Beats' `localhost:5066`), never all interfaces unless written.
    pub monitoring_address: String,
    /// `logging.metrics.enabled`: log a `metrics` line every period. Default true, as Beats.
    pub metrics_log_enabled: bool,
    /// `logging.metrics.period`: how often that line is logged. Default 30s, as Beats.
    pub metrics_log_period: Duration,
    /// Keys given but not used here (unknown, or Beats features this shipper lacks such
    /// as `http.pprof.enabled`), in the order given; logged by [`Self::log_warnings`].
    pub ignored: Vec<String>,
    /// Deprecated names given, each with the name that replaces it.
    pub deprecated: Vec<(&'static str, &'static str)>,
}

impl ProcessSettings {
    /// `path.data`, or `./data` when not given.
    pub fn data_path(&self) -> PathBuf {
        self.data_path
            .clone()
            .unwrap_or_else(|| PathBuf::from("data"))
    }

    /// Where the queue, DLQ, lock and handoff live, given the agent's environment.
    pub fn storage_layout(
        &self,
        env: &crate::storage::ComponentEnv,
    ) -> crate::storage::StorageLayout {
        crate::storage::StorageLayout::resolve(&self.data_path(), self.state_path.as_deref(), env)
    }

    /// Logs one warning naming every ignored key, and one per deprecated name used. Call
    /// once, after logging is initialised.
    pub fn log_warnings(&self) {
        for (old, new) in &self.deprecated {
            tracing::warn!(
                key = *old,
                replacement = *new,
                "-E {old} is deprecated; write {new} (Beats' name)"
            );
        }
        if !self.ignored.is_empty() {
            tracing::warn!(
                keys = %self.ignored.join(", "),
                "ignoring -E settings this shipper does not use: {}",
                self.ignored.join(", ")
            );
        }
    }
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings {
            data_path: None,
            state_path: None,
            checkin_interval: Duration::from_secs(20),
            shutdown_timeout: Duration::from_secs(20),
            log_level: LogLevel::Info,
            monitoring_enabled: false,
            monitoring_address: format!("127.0.0.1:{DEFAULT_HTTP_PORT}"),
            metrics_log_enabled: true,
            metrics_log_period: Duration::from_secs(30),
            ignored: Vec::new(),
            deprecated: Vec::new(),
        }
    }
}

/// Beats' monitoring port.
const DEFAULT_HTTP_PORT: u16 = 5066;

impl ProcessSettings {
    /// Every `-E` key this shipper uses (the reference doc is checked against this list).
    /// `monitoring.enabled` and `monitoring.address` are deprecated names of `http.*`.
    /// Any other key is accepted and ignored with a warning.
    pub const KNOWN_KEYS: &[&str] = &[
        "path.data",
        "path.state",
        "control.checkin_interval",
        "shutdown_timeout",
        "logging.level",
        "logging.to_stderr",
        "logging.metrics.enabled",
        "logging.metrics.period",
        "http.enabled",
        "http.host",
        "http.port",
        "monitoring.enabled",
        "monitoring.address",
    ];

    /// Applies `key=value` overrides in order; a key not in [`Self::KNOWN_KEYS`] lands in
    /// `ignored`, a bad value of a known key is an error naming it.
    pub fn from_overrides<'a>(
        overrides: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ConfigError> {
        let mut settings = ProcessSettings::default();
        let mut http_host: Option<String> = None;
        let mut http_port: Option<u16> = None;
        let mut old_address: Option<String> = None;
        for item in overrides {
            let (key, value) = item.split_once('=').ok_or_else(|| ConfigError::Invalid {
                key: item.to_string(),
                reason: "an -E override must look like key=value".into(),
            })?;
            let key = key.trim();
            match key {
                "path.data" => settings.data_path = Some(PathBuf::from(value.trim())),
                "path.state" => {
                    let value = value.trim();
                    if value.is_empty() {
                        return Err(ConfigError::Invalid {
                            key: key.into(),
                            reason: "expected a directory, e.g. /var/lib/agent-shipper.state, found an empty value".into(),
                        });
                    }
                    settings.state_path = Some(PathBuf::from(value));
                }
                "control.checkin_interval" => {
                    settings.checkin_interval = duration_setting(key, value, |interval| {
                        (interval.is_zero() || interval > Duration::from_secs(25)).then_some(
                            "is outside 1ms..=25s (the agent counts a miss per 30 s without a check-in)",
                        )
                    })?
                }
                "shutdown_timeout" => {
                    settings.shutdown_timeout = duration_setting(key, value, |timeout| {
                        (timeout > Duration::from_secs(29)).then_some(
                            "is longer than 29s: the agent sends SIGKILL when the spec's timeouts.stop (30 s by default) has passed since SIGTERM",
                        )
                    })?
                }
                "logging.level" => settings.log_level = parse_level(value)?,
                "logging.to_stderr" => {
                    // Logs always go to stderr, where the agent reads them.
                    if !parse_bool(key, value)? {
                        settings
                            .ignored
                            .push(format!("{key}=false (logs always go to stderr)"));
                    }
                }
                "logging.metrics.enabled" => settings.metrics_log_enabled = parse_bool(key, value)?,
                "logging.metrics.period" => {
                    settings.metrics_log_period = duration_setting(key, value, |period| {
                        (period < Duration::from_millis(100)).then_some("is shorter than 100ms")
                    })?
                }
                "http.enabled" => settings.monitoring_enabled = parse_bool(key, value)?,
                "monitoring.enabled" => {
                    note_deprecated(&mut settings, "monitoring.enabled", "http.enabled");
                    settings.monitoring_enabled = parse_bool(key, value)?
                }
                "http.host" => http_host = Some(value.trim().to_string()),
                "http.port" => {
                    http_port = Some(value.trim().parse().map_err(|_| ConfigError::Invalid {
                        key: key.into(),
                        reason: format!(
                            "expected a port number 0..=65535, found `{}`",
                            value.trim()
                        ),
                    })?)
                }
                "monitoring.address" => {
                    note_deprecated(
                        &mut settings,
                        "monitoring.address",
                        "http.host and http.port",
                    );
                    old_address = Some(value.trim().to_string());
                }
                other => settings.ignored.push(other.to_string()),
            }
        }
        settings.monitoring_address = match (http_host, http_port, old_address) {
            (None, None, Some(address)) => checked_address("monitoring.address", address)?,
            (host, port, _) => {
                let host = host.unwrap_or_else(|| "localhost".into());
                checked_address(
                    "http.host",
                    http_address(&host, port.unwrap_or(DEFAULT_HTTP_PORT))?,
                )?
            }
        };
        Ok(settings)
    }
}

fn note_deprecated(settings: &mut ProcessSettings, old: &'static str, new: &'static str) {
    if !settings.deprecated.iter().any(|(seen, _)| *seen == old) {
        settings.deprecated.push((old, new));
    }
}

/// Beats' `http.host` (a unix socket URL or a host) with `http.port`, as a listen address.
fn http_address(host: &str, port: u16) -> Result<String, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: "http.host".into(),
        reason,
    };
    if host.is_empty() {
        return Err(invalid(
            "expected `unix:///path`, an IP address or `localhost`".into(),
        ));
    }
    if host.starts_with("npipe://") {
        return Err(invalid(format!(
            "`{host}` is a Windows named pipe; this shipper runs on unix: write `unix:///path`"
        )));
    }
    if host.starts_with("unix://") || host.starts_with('/') {
        return Ok(host.to_string());
    }
    if host == "localhost" {
        return Ok(format!("127.0.0.1:{port}"));
    }
    match host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) => Ok(format!("[{ip}]:{port}")),
        Ok(std::net::IpAddr::V4(ip)) => Ok(format!("{ip}:{port}")),
        Err(_) => Err(invalid(format!(
            "`{host}` is not `unix:///path`, an IP address or `localhost` (host names are not resolved)"
        ))),
    }
}

fn checked_address(key: &str, address: String) -> Result<String, ConfigError> {
    crate::server::ServerAddress::parse(&address)
        .map(|_| address)
        .map_err(|reason| ConfigError::Invalid {
            key: key.into(),
            reason,
        })
}

/// Beats' level names (`warning` and `warn` alike, `critical` as error).
fn parse_level(value: &str) -> Result<LogLevel, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "error" | "critical" => Ok(LogLevel::Error),
        "warning" | "warn" => Ok(LogLevel::Warn),
        "info" => Ok(LogLevel::Info),
        "debug" => Ok(LogLevel::Debug),
        "trace" => Ok(LogLevel::Trace),
        other => Err(ConfigError::Invalid {
            key: "logging.level".into(),
            reason: format!("expected debug, info, warning, error or critical, found `{other}`"),
        }),
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
    fn overrides_accept_path_data_and_ignore_unknown_keys() {
        let settings =
            ProcessSettings::from_overrides(["path.data=/var/lib/shipper", "path.dta=/x"]).unwrap();
        assert_eq!(settings.data_path, Some(PathBuf::from("/var/lib/shipper")));
        assert_eq!(settings.ignored, vec!["path.dta".to_string()]);
        assert!(ProcessSettings::from_overrides(["path.data"]).is_err());
        let fast = ProcessSettings::from_overrides(["control.checkin_interval=200ms"]).unwrap();
        assert_eq!(fast.checkin_interval, Duration::from_millis(200));
        let err = ProcessSettings::from_overrides(["control.checkin_interval=30s"]).unwrap_err();
        assert!(
            err.to_string().contains("control.checkin_interval"),
            "{err}"
        );
        let err = ProcessSettings::from_overrides(["shutdown_timeout=30s"]).unwrap_err();
        assert!(err.to_string().contains("timeouts.stop"), "{err}");
        assert!(ProcessSettings::from_overrides(["shutdown_timeout=29s"]).is_ok());
    }

    #[test]
    fn path_state_names_the_state_root_and_an_empty_one_is_refused() {
        let settings = ProcessSettings::from_overrides([
            "path.data=/h/run/agent-shipper-a",
            "path.state=/var/lib/shipper-state",
        ])
        .unwrap();
        assert_eq!(
            settings.state_path,
            Some(PathBuf::from("/var/lib/shipper-state"))
        );
        let layout = settings.storage_layout(&crate::storage::ComponentEnv::default());
        assert_eq!(
            layout.dir,
            PathBuf::from("/var/lib/shipper-state/agent-shipper-a")
        );
        let err = ProcessSettings::from_overrides(["path.state= "]).unwrap_err();
        assert!(
            err.to_string().contains("path.state") && err.to_string().contains("empty"),
            "{err}"
        );
        // Without it (and outside Elastic Agent 9.x) path.data stays the storage.
        let plain = ProcessSettings::from_overrides(["path.data=/d"]).unwrap();
        assert_eq!(
            plain
                .storage_layout(&crate::storage::ComponentEnv::default())
                .dir,
            PathBuf::from("/d")
        );
    }

    #[test]
    fn the_agents_command_line_is_accepted() {
        // What Elastic Agent 8.15 passes a shipper: spec args, path.data, self-monitoring.
        let settings = ProcessSettings::from_overrides([
            "logging.level=info",
            "path.data=/opt/agent/run/shipper-default",
            "http.enabled=true",
            "http.host=unix:///tmp/elastic-agent/abc.sock",
            "http.pprof.enabled=true",
            "http.buffer.enabled=true",
            "logging.metrics.enabled=false",
            "logging.to_stderr=true",
            "logging.files.rotateeverybytes=10485760",
        ])
        .unwrap();
        assert_eq!(settings.log_level, LogLevel::Info);
        assert!(settings.monitoring_enabled);
        assert_eq!(
            settings.monitoring_address,
            "unix:///tmp/elastic-agent/abc.sock"
        );
        assert!(!settings.metrics_log_enabled);
        assert_eq!(
            settings.ignored,
            [
                "http.pprof.enabled",
                "http.buffer.enabled",
                "logging.files.rotateeverybytes"
            ]
        );
        assert!(settings.deprecated.is_empty());
    }

    #[test]
    fn log_levels_use_beats_names() {
        for (name, level) in [
            ("debug", LogLevel::Debug),
            ("info", LogLevel::Info),
            ("warning", LogLevel::Warn),
            ("warn", LogLevel::Warn),
            ("error", LogLevel::Error),
            ("critical", LogLevel::Error),
        ] {
            let item = format!("logging.level={name}");
            let settings = ProcessSettings::from_overrides([item.as_str()]).unwrap();
            assert_eq!(settings.log_level, level, "{name}");
        }
        let err = ProcessSettings::from_overrides(["logging.level=loud"]).unwrap_err();
        assert!(err.to_string().contains("logging.level"), "{err}");
        assert!(err.to_string().contains("loud"), "{err}");
    }

    #[test]
    fn http_host_and_port_form_the_monitoring_address() {
        let address = |items: &[&str]| {
            ProcessSettings::from_overrides(items.iter().copied()).map(|s| s.monitoring_address)
        };
        assert_eq!(address(&[]).unwrap(), "127.0.0.1:5066");
        assert_eq!(address(&["http.port=6000"]).unwrap(), "127.0.0.1:6000");
        assert_eq!(
            address(&["http.host=::1", "http.port=0"]).unwrap(),
            "[::1]:0"
        );
        assert_eq!(address(&["http.host=0.0.0.0"]).unwrap(), "0.0.0.0:5066");
        for (items, key) in [
            (&["http.host=npipe:///shipper"][..], "http.host"),
            (&["http.host=example.com"][..], "http.host"),
            (&["http.port=http"][..], "http.port"),
            (&["http.enabled=yes"][..], "http.enabled"),
        ] {
            let err = address(items).unwrap_err();
            assert!(err.to_string().contains(key), "{items:?}: {err}");
        }
    }

    #[test]
    fn old_monitoring_names_still_work_and_are_reported_once() {
        let settings = ProcessSettings::from_overrides([
            "monitoring.enabled=true",
            "monitoring.address=unix:///run/shipper-monitor.sock",
            "monitoring.enabled=true",
            "logging.metrics.period=1s",
        ])
        .unwrap();
        assert!(settings.monitoring_enabled);
        assert_eq!(
            settings.monitoring_address,
            "unix:///run/shipper-monitor.sock"
        );
        assert_eq!(
            settings.deprecated,
            [
                ("monitoring.enabled", "http.enabled"),
                ("monitoring.address", "http.host and http.port")
            ]
        );
        assert_eq!(settings.metrics_log_period, Duration::from_secs(1));
        // The Beats names win when both are given.
        let both = ProcessSettings::from_overrides([
            "monitoring.address=unix:///old.sock",
            "http.host=unix:///new.sock",
        ])
        .unwrap();
        assert_eq!(both.monitoring_address, "unix:///new.sock");
        let err = ProcessSettings::from_overrides(["monitoring.enabled=yes"]).unwrap_err();
        assert!(err.to_string().contains("monitoring.enabled"), "{err}");
        let err = ProcessSettings::from_overrides(["monitoring.address= "]).unwrap_err();
        assert!(err.to_string().contains("monitoring.address"), "{err}");
        let err = ProcessSettings::from_overrides(["logging.metrics.period=10ms"]).unwrap_err();
        assert!(err.to_string().contains("logging.metrics.period"), "{err}");
    }

    #[test]
    fn every_known_key_has_a_handler() {
        // A key in KNOWN_KEYS without a match arm would land in `ignored`.
        for key in ProcessSettings::KNOWN_KEYS {
            for value in ["1s", "true", "info", "/tmp/x", "1"] {
                let item = format!("{key}={value}");
                if let Ok(settings) = ProcessSettings::from_overrides([item.as_str()]) {
                    assert!(settings.ignored.is_empty(), "{key}: {:?}", settings.ignored);
                }
            }
        }
    }
}
