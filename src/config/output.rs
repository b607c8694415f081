//! The OUTPUT unit's configuration: which output, and the queue in front of it.
//!
//! The block is flat, as in an Elastic Agent policy: `type` picks the output, the output's
//! own keys sit beside it, and `queue` is shared by all outputs. It is parsed in two steps
//! (shared keys, then the output type's keys) so that each step can refuse unknown keys.

use super::{from_value, ByteSize, ConfigError};
use serde::Deserialize;
use std::path::PathBuf;

/// Keys every output type accepts, beside `type`.
const SHARED_KEYS: &[&str] = &["queue"];

/// The parsed OUTPUT unit configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputConfig {
    /// Where events go.
    pub kind: OutputKind,
    /// The queue between the Producer API and the output.
    pub queue: QueueConfig,
}

/// The output destinations this build knows.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputKind {
    /// NDJSON lines in a local file, rotated by size.
    File(FileOutputConfig),
}

impl OutputKind {
    /// The `type` name as written in configs.
    pub fn type_name(&self) -> &'static str {
        match self {
            OutputKind::File(_) => "file",
        }
    }
}

/// `type: file`: one JSON document per line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOutputConfig {
    /// File to append to; rotated files get `.1`, `.2`, … suffixes.
    pub path: PathBuf,
    /// Rotate once the file reaches this size. Default 10MiB.
    #[serde(default = "default_rotate_every")]
    pub rotate_every_bytes: ByteSize,
    /// How many files to keep, the active one included. Default 7, at least 2.
    #[serde(default = "default_number_of_files")]
    pub number_of_files: u32,
}

fn default_rotate_every() -> ByteSize {
    ByteSize(10 << 20)
}

fn default_number_of_files() -> u32 {
    7
}

/// `queue:` exactly one of `mem` (bounded, lost on crash) or, later, `disk`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum QueueConfig {
    /// `queue.mem`: held in memory only; its content is lost if the process dies.
    #[serde(rename = "mem")]
    Memory(MemoryQueueConfig),
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig::Memory(MemoryQueueConfig::default())
    }
}

/// `queue.mem` settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryQueueConfig {
    /// Most events held at once. Default 65536.
    pub events: u64,
    /// Most event bytes held at once. Default 64MiB.
    pub bytes: ByteSize,
}

impl Default for MemoryQueueConfig {
    fn default() -> Self {
        MemoryQueueConfig {
            events: 65_536,
            bytes: ByteSize(64 << 20),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SharedKeys {
    #[serde(default)]
    queue: QueueConfig,
}

impl OutputConfig {
    /// Parses an output block (a unit's `source`, or a standalone file's top level).
    pub fn from_value(value: serde_json::Value) -> Result<Self, ConfigError> {
        let serde_json::Value::Object(mut map) = value else {
            return Err(ConfigError::Invalid {
                key: String::new(),
                reason: "the output config must be a mapping of keys to values".into(),
            });
        };
        let kind = match map.remove("type") {
            Some(serde_json::Value::String(kind)) => kind,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "type".into(),
                    reason: format!("expected a string such as `file`, found {other}"),
                })
            }
            None => {
                return Err(ConfigError::Missing {
                    key: "type".into(),
                    reason: "the output type, e.g. `file`".into(),
                })
            }
        };
        let mut shared = serde_json::Map::new();
        for key in SHARED_KEYS {
            if let Some(value) = map.remove(*key) {
                shared.insert((*key).to_string(), value);
            }
        }
        let shared: SharedKeys = from_value(serde_json::Value::Object(shared), "")?;
        validate_queue(&shared.queue)?;
        let rest = serde_json::Value::Object(map);
        let kind = match kind.as_str() {
            "file" => {
                let file: FileOutputConfig = from_value(rest, "")?;
                if file.number_of_files < 2 {
                    return Err(ConfigError::Invalid {
                        key: "number_of_files".into(),
                        reason: format!("must be at least 2, found {}", file.number_of_files),
                    });
                }
                if file.rotate_every_bytes.bytes() == 0 {
                    return Err(ConfigError::Invalid {
                        key: "rotate_every_bytes".into(),
                        reason: "must be greater than 0".into(),
                    });
                }
                OutputKind::File(file)
            }
            other => {
                return Err(ConfigError::Invalid {
                    key: "type".into(),
                    reason: format!("unknown output type `{other}`; this build supports `file`"),
                })
            }
        };
        Ok(OutputConfig {
            kind,
            queue: shared.queue,
        })
    }
}

fn validate_queue(queue: &QueueConfig) -> Result<(), ConfigError> {
    match queue {
        QueueConfig::Memory(mem) => {
            if mem.events == 0 {
                return Err(ConfigError::Invalid {
                    key: "queue.mem.events".into(),
                    reason: "must be greater than 0".into(),
                });
            }
            if mem.bytes.bytes() == 0 {
                return Err(ConfigError::Invalid {
                    key: "queue.mem.bytes".into(),
                    reason: "must be greater than 0".into(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key_of(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { key, .. } | ConfigError::Missing { key, .. } => key,
            other => panic!("no key in {other:?}"),
        }
    }

    #[test]
    fn file_output_with_defaults() {
        let config =
            OutputConfig::from_value(json!({"type": "file", "path": "out.ndjson"})).unwrap();
        assert_eq!(config.queue, QueueConfig::default());
        let OutputKind::File(file) = config.kind;
        assert_eq!(file.number_of_files, 7);
        assert_eq!(file.rotate_every_bytes, ByteSize(10 << 20));
    }

    #[test]
    fn queue_settings_are_read() {
        let config = OutputConfig::from_value(
            json!({"type": "file", "path": "o", "queue": {"mem": {"events": 10, "bytes": "1MiB"}}}),
        )
        .unwrap();
        assert_eq!(
            config.queue,
            QueueConfig::Memory(MemoryQueueConfig {
                events: 10,
                bytes: ByteSize(1 << 20)
            })
        );
    }

    #[test]
    fn every_bad_key_is_named() {
        let cases = [
            (json!({"path": "o"}), "type"),
            (json!({"type": 3, "path": "o"}), "type"),
            (json!({"type": "kafka", "path": "o"}), "type"),
            (json!({"type": "file"}), "path"),
            (json!({"type": "file", "path": "o", "pth": "x"}), "pth"),
            (
                json!({"type": "file", "path": "o", "number_of_files": 1}),
                "number_of_files",
            ),
            (
                json!({"type": "file", "path": "o", "queue": {"mem": {"events": 0}}}),
                "queue.mem.events",
            ),
            (
                json!({"type": "file", "path": "o", "queue": {"mem": {"evnts": 5}}}),
                "queue.mem.evnts",
            ),
            (
                json!({"type": "file", "path": "o", "queue": {"ram": {}}}),
                "queue",
            ),
            (
                json!({"type": "file", "path": "o", "queue": {"mem": {"bytes": "5 parsecs"}}}),
                "queue.mem.bytes",
            ),
        ];
        for (value, expected_key) in cases {
            let err = OutputConfig::from_value(value.clone()).unwrap_err();
            assert_eq!(key_of(err.clone()), expected_key, "{value} gave {err}");
        }
    }
}
