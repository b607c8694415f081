//! The INPUT unit's configuration: which inputs publish through us, and where we listen.
//!
//! Shape as Elastic Agent writes it for a shipper: `{id, type: shipper, units: [{id,
//! config}], server, ssl}`. `units[].id` are the input ids that events carry in
//! `source.input_id`; `server` is the Producer API address for this input component.

use super::{from_value, ConfigError};
use serde::{Deserialize, Serialize};

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
    /// TLS material the agent hands us for the Producer API (used on TCP listeners).
    #[serde(default, serialize_with = "super::secret::redact_present")]
    pub ssl: Option<serde_json::Value>,
    /// What to do with this input's queued events when the unit is stopped. Default `drain`.
    #[serde(default)]
    pub on_remove: OnRemove,
    /// How long a drain may take before the events left go to the dead letter queue.
    /// Default: no limit (the agent sets none per unit).
    #[serde(default)]
    pub drain_timeout: Option<super::HumanDuration>,
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

    /// The input ids whose events this unit accepts; the component id when `units` is empty.
    pub fn input_ids(&self) -> Vec<String> {
        if self.units.is_empty() {
            vec![self.id.clone()]
        } else {
            self.units.iter().map(|unit| unit.id.clone()).collect()
        }
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
        assert_eq!(config.on_remove, OnRemove::Drain);
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
}
