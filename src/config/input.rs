//! The INPUT unit's configuration: which inputs publish through us, and where we listen.
//!
//! Two shapes, told apart by `type`:
//!
//! - `type: shipper`, as Elastic Agent 8.6–8.15 writes it for a shipper: `{id, type:
//!   shipper, units: [{id, config}], server, ssl}`. The unit's `id` is the input
//!   component's id (`<input type>-<output name>`); `units[].id` are that component's unit
//!   ids (`<component id>-<policy input id>`) and `units[].config` the policy input as
//!   written, whose `id` (the policy input id) and `streams[].id` are what Beats puts in
//!   `source.input_id` / `source.stream_id`. Each of them routes events to this unit. The
//!   agent gives every INPUT unit of a shipper the same unix socket as `server`, and `ssl`
//!   this unit's own certificate pair; it is used only with `ssl.enabled: true`, Beats'
//!   own rule (the agent never writes `enabled`). Every key is ours or the agent's, so an
//!   unknown key is a typo and refused.
//! - `type: agent-shipper`, an input of today's agent (8.16+, 9.x): the policy input block
//!   as the user wrote it, minus `enabled`, `use_output` and `log_level`, plus
//!   `policy.revision` (so every Fleet revision sends it again with a new idx). Its `id` is
//!   the policy input id, which routes events; an event with no `source.input_id` that
//!   arrives on this unit's `server` is this unit's; `data_stream` fills what an event
//!   leaves out of its own. The agent injects nothing (no `units`, no `ssl`), and Fleet
//!   adds keys of its own (`meta`, `package_policy_id`, `streams` …): an unknown key is a
//!   warning naming it, as for OUTPUT blocks, and only keys we use with bad values fail.
//!
//! In both, `socket_mode` is the unix socket's permission bits.

use super::limits::{
    default_max_concurrent_streams, default_max_event_bytes, default_max_events_per_request,
    default_max_request_bytes,
};
use super::{
    from_value_noting_unknown, ByteSize, ConfigError, ConfigWarning, ProducerLimits, Secret,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The `type` of an 8.6–8.15 shipper INPUT unit.
pub const SHIPPER_TYPE: &str = "shipper";
/// The `type` of an `agent-shipper` input of today's agent (the `inputs:` spec's name).
pub const INPUT_TYPE: &str = "agent-shipper";

/// Keys only an `agent-shipper` input block has; a `type: shipper` block refuses them.
const INPUT_ONLY_KEYS: &[&str] = &[
    "policy",
    "data_stream",
    "streams",
    "meta",
    "name",
    "revision",
    "package_policy_id",
];

/// Which agent generation wrote the block (told by its `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputShape {
    /// `type: shipper`: a shipper of Elastic Agent 8.6–8.15.
    Shipper,
    /// `type: agent-shipper`: an input component of today's agent.
    Input,
}

/// The parsed INPUT unit configuration (either shape; see the module doc).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct InputUnitConfig {
    /// The input component's id (`type: shipper`), or the policy input id (`type:
    /// agent-shipper`, where events carrying it in `source.input_id` are this unit's).
    #[serde(default)]
    pub id: String,
    /// `shipper` (8.6–8.15) or `agent-shipper` (today's agent).
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
    /// `type: agent-shipper` only: the data stream an event's own `data_stream` falls back
    /// to, field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_stream: Option<DataStreamDefaults>,
    /// `type: agent-shipper` only: the policy revision the agent adds to the block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyInfo>,
    /// `type: agent-shipper` only: the input's streams; each `streams[].id` routes events
    /// carrying it in `source.stream_id`. Not echoed (not ours to interpret).
    #[serde(default, skip_serializing)]
    pub streams: Vec<serde_json::Value>,
    /// `type: agent-shipper` only: Fleet's package information, carried unread.
    #[serde(default, skip_serializing)]
    pub meta: Option<serde_json::Value>,
    /// `type: agent-shipper` only: the input's name in the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `type: agent-shipper` only: the integration policy's own revision (Fleet's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// `type: agent-shipper` only: Fleet's integration policy id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_policy_id: Option<String>,
}

/// `data_stream:` of an `agent-shipper` input: what an event that leaves a field of its
/// own `data_stream` empty gets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct DataStreamDefaults {
    /// `logs`, `metrics`, …
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The dataset, e.g. `app.events`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// The namespace, e.g. `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl DataStreamDefaults {
    /// True when no field is set (an empty string counts as unset).
    pub fn is_empty(&self) -> bool {
        [&self.kind, &self.dataset, &self.namespace]
            .iter()
            .all(|v| v.as_deref().is_none_or(str::is_empty))
    }
}

/// `policy:` the agent adds to an `agent-shipper` input block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct PolicyInfo {
    /// The agent policy's revision: bumped by every Fleet change, which sends the block
    /// again with a new config idx.
    pub revision: u64,
}

/// An INPUT block accepted, with what the user should hear about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedInput {
    /// The configuration.
    pub config: InputUnitConfig,
    /// Keys ignored (an `agent-shipper` block's unknown keys), to log once.
    pub warnings: Vec<ConfigWarning>,
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
    /// Parses a unit's `source`, dropping the warnings (see [`Self::parse`]).
    pub fn from_value(value: serde_json::Value) -> Result<Self, ConfigError> {
        Self::parse(value).map(|parsed| parsed.config)
    }

    /// Parses a unit's `source` of either shape; `type` decides which. A `type: shipper`
    /// block refuses unknown keys; a `type: agent-shipper` block warns about them.
    pub fn parse(value: serde_json::Value) -> Result<ParsedInput, ConfigError> {
        let kind = match value.get("type") {
            None => {
                return Err(ConfigError::Missing {
                    key: "type".into(),
                    reason: format!("`{SHIPPER_TYPE}` (Elastic Agent 8.6–8.15) or `{INPUT_TYPE}` (an input of today's agent)"),
                })
            }
            Some(serde_json::Value::String(kind)) => kind.clone(),
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "type".into(),
                    reason: format!("expected a string, found {other}"),
                })
            }
        };
        let shape = match kind.as_str() {
            SHIPPER_TYPE => InputShape::Shipper,
            INPUT_TYPE => InputShape::Input,
            other => {
                return Err(ConfigError::Invalid {
                    key: "type".into(),
                    reason: format!("expected `{SHIPPER_TYPE}` (Elastic Agent 8.6–8.15) or `{INPUT_TYPE}` (an input of today's agent), found `{other}`"),
                })
            }
        };
        let keys: Vec<String> = value
            .as_object()
            .map(|map| map.keys().cloned().collect())
            .unwrap_or_default();
        match shape {
            InputShape::Shipper => {
                if let Some(key) = keys.iter().find(|k| INPUT_ONLY_KEYS.contains(&k.as_str())) {
                    return Err(ConfigError::Invalid {
                        key: key.clone(),
                        reason: format!("unknown field for `type: {SHIPPER_TYPE}`; it belongs to a `type: {INPUT_TYPE}` input of today's agent"),
                    });
                }
                if !keys.iter().any(|k| k == "id") {
                    return Err(ConfigError::Missing {
                        key: "id".into(),
                        reason: "the input component's id".into(),
                    });
                }
            }
            InputShape::Input => {
                if keys.iter().any(|k| k == "units") {
                    return Err(ConfigError::Invalid {
                        key: "units".into(),
                        reason: format!("a `type: {INPUT_TYPE}` input has no `units`: its events are routed by its own `id` (that is the 8.6–8.15 `type: {SHIPPER_TYPE}` shape)"),
                    });
                }
            }
        }
        let mut unknown = Vec::new();
        let config: InputUnitConfig = from_value_noting_unknown(value, "", &mut unknown)?;
        let mut warnings = Vec::new();
        match shape {
            InputShape::Shipper => {
                if let Some(key) = unknown.into_iter().next() {
                    return Err(ConfigError::Invalid {
                        key,
                        reason: "unknown field; docs/configuration.md lists every key".into(),
                    });
                }
            }
            InputShape::Input => {
                warnings.extend(unknown.into_iter().map(|key| ConfigWarning {
                    key,
                    message: "unknown key, ignored (agent-shipper does not use it)".into(),
                }));
            }
        }
        config.validate()?;
        Ok(ParsedInput { config, warnings })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let config = self;
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
        for (index, stream) in config.streams.iter().enumerate() {
            if !stream.is_object() {
                return Err(ConfigError::Invalid {
                    key: format!("streams.{index}"),
                    reason: "must be a map (with an optional `id`)".into(),
                });
            }
            if let Some(id) = stream.get("id") {
                if !id.is_string() {
                    return Err(ConfigError::Invalid {
                        key: format!("streams.{index}.id"),
                        reason: format!("expected a string, found {id}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Which agent generation's shape this is.
    pub fn shape(&self) -> InputShape {
        if self.kind == INPUT_TYPE {
            InputShape::Input
        } else {
            InputShape::Shipper
        }
    }

    /// The default data stream of an `agent-shipper` input, when it sets any field.
    pub fn data_stream_defaults(&self) -> Option<&DataStreamDefaults> {
        self.data_stream.as_ref().filter(|ds| !ds.is_empty())
    }

    /// True for an `agent-shipper` input: events without a `source.input_id` that arrive
    /// on its `server` are its own.
    pub fn owns_unnamed_on_server(&self) -> bool {
        self.shape() == InputShape::Input
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
    /// `units` is empty. For `type: agent-shipper`: its `id`, the policy input id.
    pub fn input_ids(&self) -> Vec<String> {
        if self.shape() == InputShape::Input {
            // The policy input id: what a client sets as `source.input_id`.
            return (!self.id.is_empty())
                .then(|| self.id.clone())
                .into_iter()
                .collect();
        }
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

    /// The `source.stream_id` values whose events this unit accepts: `units[].config.streams[].id`
    /// (`type: shipper`) or `streams[].id` (`type: agent-shipper`).
    pub fn stream_ids(&self) -> Vec<String> {
        if self.shape() == InputShape::Input {
            return self
                .streams
                .iter()
                .filter_map(|stream| stream.get("id").and_then(serde_json::Value::as_str))
                .filter(|id| !id.is_empty())
                .map(str::to_string)
                .collect();
        }
        self.units
            .iter()
            .flat_map(|unit| unit.stream_ids())
            .map(str::to_string)
            .collect()
    }

    /// True when one of `units` is a policy input without an `id`: Beats then sends its
    /// events with an empty `source.input_id`. (An `agent-shipper` input claims those on
    /// its own `server` instead: [`Self::owns_unnamed_on_server`].)
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

    /// The block today's agent sends for a policy input `{id: app-events, type:
    /// agent-shipper, use_output: default, server, data_stream}` in revision 7, with the
    /// keys Fleet adds.
    fn input_block() -> serde_json::Value {
        json!({
            "id": "app-events",
            "type": "agent-shipper",
            "name": "app events",
            "revision": 3,
            "package_policy_id": "c0ffee",
            "meta": {"package": {"name": "agent_shipper", "version": "1.0.0"}},
            "server": "unix:///run/agent-shipper/app.sock",
            "data_stream": {"type": "logs", "dataset": "app.events", "namespace": "default"},
            "streams": [{"id": "app-events.audit", "data_stream": {"dataset": "app.audit"}}],
            "policy": {"revision": 7},
        })
    }

    #[test]
    fn todays_agent_input_block_parses_and_routes_by_its_policy_input_id() {
        let parsed = InputUnitConfig::parse(input_block()).unwrap();
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let config = parsed.config;
        assert_eq!(config.shape(), InputShape::Input);
        assert_eq!(config.input_ids(), ["app-events"]);
        assert_eq!(config.stream_ids(), ["app-events.audit"]);
        assert!(config.owns_unnamed_on_server());
        assert!(!config.has_unnamed_input(), "no process-wide unnamed route");
        assert_eq!(config.policy, Some(PolicyInfo { revision: 7 }));
        assert_eq!(
            config.data_stream_defaults(),
            Some(&DataStreamDefaults {
                kind: Some("logs".into()),
                dataset: Some("app.events".into()),
                namespace: Some("default".into()),
            })
        );
        assert_eq!(config.on_remove, OnRemove::Drain);
        assert_eq!(config.limits(), ProducerLimits::default());
        assert!(config.ssl.is_none(), "nothing injected");
    }

    #[test]
    fn a_minimal_input_block_needs_only_type_and_server() {
        let config = InputUnitConfig::from_value(json!({
            "type": "agent-shipper", "server": "/run/s.sock", "policy": {"revision": 1}
        }))
        .unwrap();
        assert!(config.input_ids().is_empty());
        assert!(config.data_stream_defaults().is_none());
        let config = InputUnitConfig::from_value(json!({
            "id": "x", "type": "agent-shipper", "server": "/s", "data_stream": {"namespace": "prod"}
        }))
        .unwrap();
        assert_eq!(
            config.data_stream_defaults().unwrap().namespace.as_deref(),
            Some("prod")
        );
    }

    #[test]
    fn unknown_keys_of_an_input_block_are_warnings_naming_them() {
        let mut block = input_block();
        block["processors"] = json!([{"add_fields": {"fields": {"a": 1}}}]);
        block["data_stream"]["elasticsearch"] = json!({"dynamic_dataset": true});
        block["policy"]["id"] = json!("p1");
        let parsed = InputUnitConfig::parse(block).unwrap();
        let mut keys: Vec<&str> = parsed.warnings.iter().map(|w| w.key.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["data_stream.elasticsearch", "policy.id", "processors"]
        );
        // The same key in an 8.x shipper block is a typo: refused, named.
        let err = InputUnitConfig::from_value(
            json!({"id": "x", "type": "shipper", "server": "s", "processors": []}),
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "processors"),
            "{err}"
        );
    }

    #[test]
    fn keys_we_use_with_bad_values_fail_an_input_block_naming_them() {
        let with = |key: &str, value: serde_json::Value| {
            let mut block = input_block();
            block[key] = value;
            InputUnitConfig::from_value(block).unwrap_err()
        };
        for (key, value, named) in [
            ("server", json!(""), "server"),
            ("socket_mode", json!("0666"), "socket_mode"),
            ("on_remove", json!("explode"), "on_remove"),
            ("drain_timeout", json!("soon"), "drain_timeout"),
            (
                "max_events_per_request",
                json!(-1),
                "max_events_per_request",
            ),
            ("data_stream", json!({"dataset": 5}), "data_stream.dataset"),
            ("policy", json!({"revision": "seven"}), "policy.revision"),
            ("streams", json!([{"id": 1}]), "streams.0.id"),
            ("ssl", json!({"enabeld": true}), "ssl.enabeld"),
            ("units", json!([{"id": "a"}]), "units"),
        ] {
            let err = with(key, value);
            let found = match &err {
                ConfigError::Invalid { key, .. } | ConfigError::Missing { key, .. } => key,
                other => panic!("{other:?}"),
            };
            assert_eq!(found, named, "{err}");
        }
        let mut block = input_block();
        block.as_object_mut().unwrap().remove("server");
        let err = InputUnitConfig::from_value(block).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Missing { key, .. } if key == "server"),
            "{err}"
        );
        // Keys of today's agent in an 8.x block are refused, naming the key.
        let err = InputUnitConfig::from_value(
            json!({"id": "x", "type": "shipper", "server": "s", "policy": {"revision": 1}}),
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, reason } if key == "policy" && reason.contains("agent-shipper")),
            "{err}"
        );
        let err =
            InputUnitConfig::from_value(json!({"type": "shipper", "server": "s"})).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Missing { key, .. } if key == "id"),
            "{err}"
        );
        let err = InputUnitConfig::from_value(json!({"id": "x", "server": "s"})).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Missing { key, .. } if key == "type"),
            "{err}"
        );
    }

    #[test]
    fn the_effective_config_of_an_input_block_holds_no_stream_or_meta_content() {
        let config = InputUnitConfig::from_value(input_block()).unwrap();
        let echoed = serde_json::to_value(&config).unwrap();
        assert!(echoed.get("streams").is_none() && echoed.get("meta").is_none());
        assert_eq!(echoed["policy"]["revision"], 7);
        assert_eq!(echoed["data_stream"]["dataset"], "app.events");
    }
}
