//! Typed, validated configuration: output unit blocks, input unit blocks, standalone files.
//!
//! Every setting arrives either as a unit's `source` Struct (managed mode) or from a YAML
//! file (standalone mode); both are turned into a `serde_json::Value` first and then into
//! the typed structs here, so the two modes share one schema. Every error names the offending
//! key with its full dotted path (`queue.max_events`). An unknown key in an output block is an
//! error in a standalone file (a typo is the user's) and a warning in an OUTPUT unit (the
//! agent writes the policy's output block as Fleet made it, keys for other outputs included):
//! see [`UnknownKeys`].
//! [`keys`] lists every key by walking these types; `docs/configuration.md` is checked
//! against it.

mod duration;
mod elasticsearch;
mod input;
pub mod keys;
mod limits;
mod output;
mod secret;
mod size;
mod standalone;

pub use duration::HumanDuration;
pub use elasticsearch::{
    normalize_host, normalize_host_with, parse_fingerprint, proxy_url, BackoffConfig, Credentials,
    ElasticsearchConfig, Preset, PresetValues, Protocol, SslConfig, TlsVersion, VerificationMode,
    IGNORED_KEYS,
};
pub use input::{
    DataStreamDefaults, InputShape, InputSslConfig, InputUnitConfig, OnRemove, ParsedInput,
    PolicyInfo, SocketMode, INPUT_TYPE, SHIPPER_TYPE,
};
pub use limits::ProducerLimits;
pub use output::{
    DiskQueueConfig, DlqConfig, DlqRetain, DurabilityMode, FileOutputConfig, MemoryQueueConfig,
    OutputConfig, OutputKind, ParsedOutput, QueueConfig,
};
pub use secret::Secret;
pub use size::ByteSize;
pub use standalone::{ProcessSettings, StandaloneConfig};

use serde::de::DeserializeOwned;

/// A configuration that could not be accepted; the message names the key and the reason.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A key holds a value of the wrong type or shape, or is not a known key.
    #[error("invalid config key `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the key, e.g. `queue.max_events`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A required key is absent.
    #[error("missing config key `{key}`: {reason}")]
    Missing {
        /// Dotted path of the key.
        key: String,
        /// What it is for.
        reason: String,
    },
    /// The document itself could not be read (a YAML syntax error, an unreadable file).
    #[error("cannot read config {origin}: {reason}")]
    Unreadable {
        /// Where the document came from (a path, or `unit <id>`).
        origin: String,
        /// The parser's or the OS's message.
        reason: String,
    },
}

impl ConfigError {
    /// Prefixes the key with `parent.` so nested parsers can report full paths.
    pub fn under(self, parent: &str) -> Self {
        let join = |key: String| {
            if parent.is_empty() {
                key
            } else if key.is_empty() {
                parent.to_string()
            } else {
                format!("{parent}.{key}")
            }
        };
        match self {
            ConfigError::Invalid { key, reason } => ConfigError::Invalid {
                key: join(key),
                reason,
            },
            ConfigError::Missing { key, reason } => ConfigError::Missing {
                key: join(key),
                reason,
            },
            other => other,
        }
    }
}

/// What an output block's parser does with a key no config type knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownKeys {
    /// An error naming the key: a standalone file, whose typos are the user's.
    Refuse,
    /// A [`ConfigWarning`] naming the key: an OUTPUT unit, whose block the agent writes.
    Warn,
}

/// Something about an accepted config the user should hear of: a key ignored, or a value
/// that replaced another. Logged once per config by whoever applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Dotted path of the key.
    pub key: String,
    /// What happens because of it; never quotes a value that could be a secret.
    pub message: String,
}

impl ConfigWarning {
    /// Logs the warning at WARN, with `unit_id` when it is about an OUTPUT unit.
    pub fn log(&self, unit_id: Option<&str>) {
        match unit_id {
            Some(unit_id) => tracing::warn!(
                target: "agent_shipper::config",
                unit_id,
                key = %self.key,
                "config key `{}`: {}",
                self.key,
                self.message
            ),
            None => tracing::warn!(
                target: "agent_shipper::config",
                key = %self.key,
                "config key `{}`: {}",
                self.key,
                self.message
            ),
        }
    }
}

/// Deserializes `value` into `T`, turning serde's error into a [`ConfigError`] whose key is
/// the dotted path (under `prefix`) of the value that failed.
pub(crate) fn from_value<T: DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|err| path_error(err, prefix))
}

/// [`from_value`] for types that do not deny unknown fields: each key `T` ignored is pushed
/// onto `unknown` as a dotted path under `prefix`, for the caller to refuse or warn about.
pub(crate) fn from_value_noting_unknown<T: DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
    unknown: &mut Vec<String>,
) -> Result<T, ConfigError> {
    let mut note = |path: serde_ignored::Path<'_>| {
        // serde_ignored writes `?` for an Option level (`dlq.retain.?.x`); the user wrote none.
        let key = path
            .to_string()
            .split('.')
            .filter(|part| *part != "?" && !part.is_empty())
            .collect::<Vec<_>>()
            .join(".");
        unknown.push(join_key(prefix, &key));
    };
    serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut note))
        .map_err(|err| path_error(err, prefix))
}

/// `parent.key`, or either alone when the other is empty.
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    match (parent.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (false, true) => parent.to_string(),
        (false, false) => format!("{parent}.{key}"),
    }
}

fn path_error<E: std::fmt::Display>(
    err: serde_path_to_error::Error<E>,
    prefix: &str,
) -> ConfigError {
    // The path already ends in the unknown key's name when a key is unknown.
    let key = err.path().to_string();
    let reason = err.into_inner().to_string();
    let key = if key == "." { String::new() } else { key };
    // serde reports a missing key at its parent; name the key itself.
    if let Some(field) = reason
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        let key = if key.is_empty() {
            field.to_string()
        } else {
            format!("{key}.{field}")
        };
        return ConfigError::Missing {
            key,
            reason: "this key is required".into(),
        }
        .under(prefix);
    }
    ConfigError::Invalid { key, reason }.under(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        count: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)]
        inner: Inner,
    }

    #[test]
    fn unknown_key_is_named_with_its_full_path() {
        let err = from_value::<Outer>(serde_json::json!({"inner": {"count": 1, "cuont": 2}}), "")
            .unwrap_err();
        match err {
            ConfigError::Invalid { key, reason } => {
                assert_eq!(key, "inner.cuont");
                assert!(reason.contains("unknown field"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn wrong_type_names_the_key_under_the_prefix() {
        let err = from_value::<Outer>(serde_json::json!({"inner": {"count": "many"}}), "output")
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "output.inner.count"),
            "{err:?}"
        );
    }
}
