//! The INPUT unit's configuration: which inputs publish through us, and where we listen.
//!
//! Shape as Elastic Agent 8.6–8.15 writes it for a shipper: `{id, type: shipper, units:
//! [{id, config}], server, ssl}`. The unit's `id` is the input component's id
//! (`<input type>-<output name>`); `units[].id` are that component's unit ids
//! (`<component id>-<policy input id>`) and `units[].config` the policy input as written,
//! whose `id` (the policy input id) and `streams[].id` are what Beats puts in
//! `source.input_id` / `source.stream_id` (from `@metadata.input_id` / `stream_id`, which
//! its agent manager sets from those ids). Each of them routes events to this unit.
//! `server` is the Producer API address: the agent gives every INPUT unit of a shipper the
//! same unix socket. `ssl` is this unit's own certificate pair and the agent's CA; it is
//! used only with `ssl.enabled: true`, Beats' own rule (its shipper output dials TLS only
//! then, and the agent never writes `enabled`), otherwise the socket's owner-only mode is
//! the protection. `socket_mode` is the unix socket's permission bits.

use super::limits::{
    default_max_concurrent_streams, default_max_event_bytes, default_max_events_per_request,
    default_max_request_bytes,
};
use super::{from_value, ByteSize, ConfigError, ProducerLimits, Secret};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The parsed INPUT unit configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputUnitConfig {
    /// The input component's id.
    pub id: String,
    /// Always `shipper` when the agent wires an input to us.
    #[serde(rename = "type")]
    pub kind: String,
    /// The input units whose events arrive here, keyed by `source.input_id`.
    #[serde(default)]
    pub units: Vec<InputSourceUnit>,
    /// Where the Producer API listens: `unix:///path`, `/path` or `host:port`.
    pub server: String,
    /// TLS material the agent hands us for the Producer API: mutual TLS only with
    /// `ssl.enabled: true` (required on TCP addresses other than loopback).
    #[serde(default)]
    pub ssl: Option<InputSslConfig>,
    /// Permission bits of a unix socket `server`. Default `0600` (owner only).
    #[serde(default)]
    pub socket_mode: SocketMode,
    /// What to do with this input's queued events when the unit is stopped. Default `drain`.
    #[serde(default)]
    pub on_remove: OnRemove,
    /// How long a drain may take before the events left go to the dead letter queue.
    /// Default: no limit (the agent sets none per unit).
    #[serde(default)]
    pub drain_timeout: Option<super::HumanDuration>,
    /// Largest encoded event the Producer API accepts (see `limits.rs`). Default 10MiB.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: ByteSize,
    /// Largest encoded PublishRequest. Default 64MiB.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: ByteSize,
    /// Most events in one PublishRequest. Default 16384.
    #[serde(default = "default_max_events_per_request")]
    pub max_events_per_request: u32,
    /// Most calls in progress at once on this unit's listener. Default 1024.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
}

/// One input unit of the component that publishes through this INPUT unit.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSourceUnit {
    /// The id events carry in `source.input_id`.
    pub id: String,
    /// The input's own configuration; not ours to interpret (and never echoed: it may hold
    /// the input's credentials).
    #[serde(default, skip_serializing)]
    pub config: Option<serde_json::Value>,
}

/// `ssl:` of an INPUT unit, as the agent writes it for the Producer API. Each value is a
/// file path or inline PEM. With `enabled: true`, clients must present a certificate that
/// chains to `certificate_authorities` (mutual TLS); without it the block is carried but
/// unused, as Beats' shipper output then dials plaintext. Serialized for the effective
/// config with the key as `[redacted]`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputSslConfig {
    /// Serve mutual TLS with this material. Absent (as the agent writes it) or `false`:
    /// plaintext, exactly when Beats' shipper output connects in plaintext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The CAs that client certificates must chain to.
    pub certificate_authorities: Vec<String>,
    /// The server's certificate (chain).
    pub certificate: Option<String>,
    /// The server certificate's private key; never printed.
    pub key: Option<Secret>,
}

impl InputSslConfig {
    /// True when the Producer API serves mutual TLS with this block: `enabled: true` only.
    pub fn is_enabled(&self) -> bool {
        self.enabled == Some(true)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        // Material that is not used is not checked: Beats' output ignores it too.
        if !self.is_enabled() {
            return Ok(());
        }
        let missing = |key: &str, what: &str| {
            ConfigError::Missing {
            key: format!("ssl.{key}"),
            reason: format!("ssl.enabled: true needs {what} (ssl.certificate, ssl.key and ssl.certificate_authorities go together)"),
        }
        };
        if self
            .certificate
            .as_deref()
            .is_none_or(|c| c.trim().is_empty())
        {
            return Err(missing("certificate", "the server certificate"));
        }
        if self
            .key
            .as_ref()
            .is_none_or(|k| k.expose().trim().is_empty())
        {
            return Err(missing("key", "the server certificate's key"));
        }
        if self.certificate_authorities.is_empty() {
            return Err(missing(
                "certificate_authorities",
                "the CA that client certificates must chain to",
            ));
        }
        for (i, ca) in self.certificate_authorities.iter().enumerate() {
            if ca.trim().is_empty() {
                return Err(ConfigError::Invalid {
                    key: format!("ssl.certificate_authorities.{i}"),
                    reason: "is empty; give a file path or a PEM certificate".into(),
                });
            }
        }
        Ok(())
    }
}

impl InputSourceUnit {
    /// The policy input's own `id` in `config` (Beats' `@metadata.input_id`), if any.
    pub fn policy_input_id(&self) -> Option<&str> {
        self.config
            .as_ref()
            .and_then(|config| config.get("id"))
            .and_then(serde_json::Value::as_str)
            .filter(|id| !id.is_empty())
    }

    /// The `streams[].id` of `config` (Beats' `@metadata.stream_id`).
    pub fn stream_ids(&self) -> Vec<&str> {
        self.config
            .as_ref()
            .and_then(|config| config.get("streams"))
            .and_then(serde_json::Value::as_array)
            .map(|streams| {
                streams
                    .iter()
                    .filter_map(|stream| stream.get("id").and_then(serde_json::Value::as_str))
                    .filter(|id| !id.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Permission bits of the Producer API's unix socket, written as an octal string (`"0660"`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SocketMode(pub u32);

impl SocketMode {
    /// Owner read and write only.
    pub const DEFAULT: SocketMode = SocketMode(0o600);

    fn validate(self) -> Result<(), ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            key: "socket_mode".into(),
            reason: format!("{self}: {reason}"),
        };
        if self.0 & !0o777 != 0 {
            return Err(invalid("only permission bits (at most 0777) may be set"));
        }
        if self.0 & 0o600 != 0o600 {
            return Err(invalid("the owner must keep read and write (0600)"));
        }
        if self.0 & 0o007 != 0 {
            return Err(invalid(
                "must not grant other users access: anyone who can connect can publish events",
            ));
        }
        Ok(())
    }
}

impl Default for SocketMode {
    fn default() -> Self {
        SocketMode::DEFAULT
    }
}

impl fmt::Display for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl fmt::Debug for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SocketMode({self})")
    }
}

/// Written back as configured: a quoted octal string such as `"0600"`.
impl Serialize for SocketMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SocketMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A string only: YAML reads an unquoted 0660 as a decimal or an octal number
        // depending on the version, and 660 decimal is a very different mode.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SocketMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an octal mode as a quoted string, e.g. \"0660\"")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<SocketMode, E> {
                let digits = value.trim().trim_start_matches("0o");
                if digits.is_empty()
                    || digits.len() > 4
                    || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
                {
                    return Err(E::custom(format!(
                        "`{value}` is not an octal mode such as \"0660\""
                    )));
                }
                u32::from_str_radix(digits, 8)
                    .map(SocketMode)
                    .map_err(|err| E::custom(format!("`{value}`: {err}")))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<SocketMode, E> {
                Err(E::custom(format!("found the number {value}; write the mode as a quoted octal string, e.g. \"0660\"")))
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<SocketMode, E> {
                Err(E::custom(format!("found the number {value}; write the mode as a quoted octal string, e.g. \"0660\"")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Policy for an input's queued events when its unit is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRemove {
    /// Deliver every queued event, then report STOPPED.
    #[default]
    Drain,
    /// Move the queued events to the dead letter queue, then report STOPPED.
    DeadLetter,
    /// Skip the queued events (counted in the log and the STOPPED message).
    Drop,
}

impl InputUnitConfig {
    /// Parses a unit's `source`.
    pub fn from_value(value: serde_json::Value) -> Result<Self, ConfigError> {
        let config: InputUnitConfig = from_value(value, "")?;
        if config.kind != "shipper" {
            return Err(ConfigError::Invalid {
                key: "type".into(),
                reason: format!("expected `shipper`, found `{}`", config.kind),
            });
        }
        if config.server.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "server".into(),
                reason: "must name a unix socket path or host:port".into(),
            });
        }
        if let Some(ssl) = &config.ssl {
            ssl.validate()?;
        }
        config.socket_mode.validate()?;
        config.limits().validate()?;
        for (index, unit) in config.units.iter().enumerate() {
            if unit.id.is_empty() {
                return Err(ConfigError::Invalid {
                    key: format!("units.{index}.id"),
                    reason: "must not be empty".into(),
                });
            }
        }
        Ok(config)
    }

    /// The Producer API limits this unit asks for (validated by [`Self::from_value`]).
    pub fn limits(&self) -> ProducerLimits {
        ProducerLimits {
            max_event_bytes: self.max_event_bytes.bytes(),
            max_request_bytes: self.max_request_bytes.bytes(),
            max_events_per_request: self.max_events_per_request,
            max_concurrent_streams: self.max_concurrent_streams,
        }
    }

    /// The `source.input_id` values whose events this unit accepts: each `units[].id` and
    /// each policy input id `units[].config.id` (what Beats sends); the component id when
    /// `units` is empty.
    pub fn input_ids(&self) -> Vec<String> {
        if self.units.is_empty() {
            return vec![self.id.clone()];
        }
        let mut ids: Vec<String> = Vec::with_capacity(self.units.len() * 2);
        for unit in &self.units {
            ids.push(unit.id.clone());
            if let Some(id) = unit.policy_input_id() {
                ids.push(id.to_string());
            }
        }
        ids.dedup();
        ids
    }

    /// The `source.stream_id` values whose events this unit accepts: `units[].config.streams[].id`.
    pub fn stream_ids(&self) -> Vec<String> {
        self.units
            .iter()
            .flat_map(|unit| unit.stream_ids())
            .map(str::to_string)
            .collect()
    }

    /// True when one of `units` is a policy input without an `id`: Beats then sends its
    /// events with an empty `source.input_id`.
    pub fn has_unnamed_input(&self) -> bool {
        self.units
            .iter()
            .any(|unit| unit.config.is_some() && unit.policy_input_id().is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agent_shaped_block_parses() {
        let config = InputUnitConfig::from_value(json!({
            "id": "filestream-default",
            "type": "shipper",
            "units": [{"id": "filestream-a", "config": {"paths": ["/var/log/*.log"]}}],
            "server": "unix:///run/shipper.sock",
            "ssl": {"certificate_authorities": []}
        }))
        .unwrap();
        assert_eq!(config.input_ids(), vec!["filestream-a".to_string()]);
        assert!(config.has_unnamed_input());
        assert_eq!(config.on_remove, OnRemove::Drain);
        assert_eq!(config.limits(), ProducerLimits::default());
    }

    /// The shape of `componentToShipperConfig` in elastic-agent 8.15 for a policy input
    /// `{id: logfile-system-1, streams: [{id: logfile-system.syslog-1}]}` under output `default`.
    #[test]
    fn beats_ids_come_from_the_policy_inputs_in_units_config() {
        let config = InputUnitConfig::from_value(json!({
            "id": "log-default",
            "type": "shipper",
            "units": [
                {"id": "log-default-logfile-system-1", "config": {
                    "id": "logfile-system-1", "type": "log",
                    "streams": [{"id": "logfile-system.syslog-1", "paths": ["/var/log/syslog"]}, {"paths": []}],
                }},
                {"id": "log-default-log", "config": {"type": "log", "streams": []}},
            ],
            "server": "unix:///tmp/elastic-agent/abc.sock",
            "ssl": {"certificate_authorities": ["-----BEGIN CERTIFICATE-----"], "certificate": "c", "key": "k"},
        }))
        .unwrap();
        assert_eq!(
            config.input_ids(),
            [
                "log-default-logfile-system-1",
                "logfile-system-1",
                "log-default-log"
            ]
        );
        assert_eq!(config.stream_ids(), ["logfile-system.syslog-1"]);
        assert!(config.has_unnamed_input(), "the second input has no id");
        assert!(
            !config.ssl.as_ref().unwrap().is_enabled(),
            "the agent's block has no `enabled`: plaintext, and its material is not checked"
        );
    }

    #[test]
    fn limits_parse_with_units_and_are_checked_together() {
        let config = InputUnitConfig::from_value(json!({
            "id": "x", "type": "shipper", "server": "s",
            "max_event_bytes": "64KiB", "max_request_bytes": 1048576,
            "max_events_per_request": 10, "max_concurrent_streams": 4
        }))
        .unwrap();
        assert_eq!(
            config.limits(),
            ProducerLimits {
                max_event_bytes: 64 << 10,
                max_request_bytes: 1 << 20,
                max_events_per_request: 10,
                max_concurrent_streams: 4,
            }
        );
        let err = InputUnitConfig::from_value(
            json!({"id": "x", "type": "shipper", "server": "s", "max_event_bytes": "2MiB", "max_request_bytes": "1MiB"}),
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "max_event_bytes"),
            "{err}"
        );
        let err = InputUnitConfig::from_value(
            json!({"id": "x", "type": "shipper", "server": "s", "max_concurrent_streams": -1}),
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "max_concurrent_streams"),
            "{err}"
        );
    }

    #[test]
    fn bad_keys_are_named() {
        let err = InputUnitConfig::from_value(
            json!({"id": "x", "type": "shipper", "server": "s", "srever": 1}),
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "srever"),
            "{err}"
        );
        let err = InputUnitConfig::from_value(json!({"id": "x", "type": "beats", "server": "s"}))
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "type"),
            "{err}"
        );
        let err = InputUnitConfig::from_value(json!({"id": "x", "type": "shipper"})).unwrap_err();
        assert!(err.to_string().contains("server"), "{err}");
        let err = InputUnitConfig::from_value(
            json!({"id": "x", "type": "shipper", "server": "s", "on_remove": "explode"}),
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "on_remove"),
            "{err}"
        );
    }

    #[test]
    fn ssl_material_goes_together_and_the_key_never_prints() {
        let base = || json!({"id": "x", "type": "shipper", "server": "127.0.0.1:1"});
        let mut value = base();
        value["ssl"] = json!({"enabled": true, "certificate": "/c.pem", "key": "-----BEGIN PRIVATE KEY-----hunter2"});
        let err = InputUnitConfig::from_value(value).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Missing { key, .. } if key == "ssl.certificate_authorities"),
            "{err}"
        );
        let mut value = base();
        value["ssl"] = json!({"enabled": true, "certificate_authorities": ["/ca.pem"], "certificate": "/c.pem", "key": "hunter2"});
        let config = InputUnitConfig::from_value(value).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("[redacted]"), "{printed}");
        let mut value = base();
        value["ssl"] = json!({"enabled": true, "certificate_authorities": ["/ca.pem"], "certificate": "/c.pem"});
        let err = InputUnitConfig::from_value(value).unwrap_err();
        assert!(err.to_string().contains("ssl.key"), "{err}");
        // Not enabled: the material is carried, never used, so never checked.
        let mut value = base();
        value["ssl"] = json!({"enabled": false, "certificate": "/c.pem"});
        assert!(InputUnitConfig::from_value(value).is_ok());
    }

    #[test]
    fn socket_mode_is_an_owner_only_octal_string() {
        let with = |mode: serde_json::Value| {
            InputUnitConfig::from_value(
                json!({"id": "x", "type": "shipper", "server": "/s", "socket_mode": mode}),
            )
        };
        assert_eq!(
            InputUnitConfig::from_value(json!({"id": "x", "type": "shipper", "server": "/s"}))
                .unwrap()
                .socket_mode,
            SocketMode(0o600)
        );
        assert_eq!(with(json!("0660")).unwrap().socket_mode, SocketMode(0o660));
        for bad in [
            json!("0666"),
            json!("0400"),
            json!("9"),
            json!(660),
            json!("01600"),
        ] {
            let err = with(bad.clone()).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key, .. } if key == "socket_mode"),
                "{bad}: {err}"
            );
        }
    }
}
