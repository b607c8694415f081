//! The OUTPUT unit's configuration: which output, and the queue in front of it.
//!
//! The block is flat, as in an Elastic Agent policy: `type` picks the output, the output's
//! own keys sit beside it, and `queue` is shared by all outputs. It is parsed in two steps
//! (shared keys, then the output type's keys); the keys neither step knows are collected and
//! then refused or warned about, as [`UnknownKeys`] says.

use super::{
    from_value_noting_unknown, ByteSize, ConfigError, ConfigWarning, ElasticsearchConfig,
    HumanDuration, UnknownKeys,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Keys every output type accepts, beside `type`.
const SHARED_KEYS: &[&str] = &["queue", "dlq"];

/// The key that picks the output; read by hand, as it decides which struct reads the rest.
pub(crate) const TYPE_KEY: &str = "type";

/// The parsed OUTPUT unit configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputConfig {
    /// Where events go.
    pub kind: OutputKind,
    /// The queue between the Producer API and the output.
    pub queue: QueueConfig,
    /// Where undeliverable events go.
    pub dlq: DlqConfig,
}

/// `dlq:` the dead letter queue, with Logstash's setting names.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct DlqConfig {
    /// Keep undeliverable events (default true). When false they are dropped and counted.
    pub enabled: bool,
    /// Directory. Default: `<path.data>/dlq`.
    pub path: Option<PathBuf>,
    /// Most bytes kept. Default 1GiB.
    pub max_bytes: ByteSize,
    /// `drop_newer` (default: refuse new entries when full) or `drop_older` (FIFO).
    pub storage_policy: crate::dlq::StoragePolicy,
    /// Age retention.
    pub retain: DlqRetain,
    /// Entries become visible to readers at least this often. Default 5s.
    pub flush_interval: HumanDuration,
}

/// `dlq.retain`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct DlqRetain {
    /// Delete entries older than this (`7d`, `12h`, `30m`, `90s`); none by default.
    pub age: Option<HumanDuration>,
}

impl Default for DlqConfig {
    fn default() -> Self {
        DlqConfig {
            enabled: true,
            path: None,
            max_bytes: ByteSize(1 << 30),
            storage_policy: crate::dlq::StoragePolicy::DropNewer,
            retain: DlqRetain::default(),
            flush_interval: HumanDuration(std::time::Duration::from_secs(5)),
        }
    }
}

/// The output destinations this build knows.
#[derive(Debug, Clone, PartialEq)]
// One value per config change, never in a hot path or a collection: boxing would only add
// noise to every match.
#[allow(clippy::large_enum_variant)]
pub enum OutputKind {
    /// NDJSON lines in a local file, rotated by size.
    File(FileOutputConfig),
    /// `_bulk` requests to an Elasticsearch cluster.
    Elasticsearch(ElasticsearchConfig),
}

impl OutputKind {
    /// The `type` name as written in configs.
    pub fn type_name(&self) -> &'static str {
        match self {
            OutputKind::File(_) => "file",
            OutputKind::Elasticsearch(_) => "elasticsearch",
        }
    }
}

/// `type: file`: one JSON document per line.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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

/// `queue:` exactly one of `mem` (bounded, lost on crash) or `disk` (durable, the default).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub enum QueueConfig {
    /// `queue.mem`: held in memory only; its content is lost if the process dies.
    #[serde(rename = "mem")]
    Memory(MemoryQueueConfig),
    /// `queue.disk`: segment files under `path.data`, synced before events are confirmed.
    #[serde(rename = "disk")]
    Disk(DiskQueueConfig),
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig::Disk(DiskQueueConfig::default())
    }
}

/// When disk queue appends become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityMode {
    /// One fdatasync per write batch, before PublishEvents is answered (the default).
    #[default]
    Batch,
    /// One fdatasync per `sync_interval`; persisted_index moves then.
    Interval,
}

/// `queue.disk` settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct DiskQueueConfig {
    /// Queue directory. Default: `<path.data>/queue`.
    pub path: Option<PathBuf>,
    /// Most bytes of segment files on disk; a full queue pushes back. Default 4GiB.
    pub max_size: ByteSize,
    /// Segment file size. Default 64MiB.
    pub segment_size: ByteSize,
    /// `batch` (default) or `interval`.
    pub durability: DurabilityMode,
    /// Sync period for `durability: interval`. Default 1s.
    pub sync_interval: HumanDuration,
    /// Recently written bytes kept in memory for the output. Default 8MiB.
    pub read_ahead: ByteSize,
}

impl Default for DiskQueueConfig {
    fn default() -> Self {
        DiskQueueConfig {
            path: None,
            max_size: ByteSize(4 << 30),
            segment_size: ByteSize(64 << 20),
            durability: DurabilityMode::Batch,
            sync_interval: HumanDuration(std::time::Duration::from_secs(1)),
            read_ahead: ByteSize(8 << 20),
        }
    }
}

/// `queue.mem` settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
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

/// The keys of [`SHARED_KEYS`], read before the output type's own struct.
#[derive(Deserialize)]
pub(super) struct SharedKeys {
    #[serde(default)]
    queue: QueueConfig,
    #[serde(default)]
    dlq: DlqConfig,
}

/// An accepted output block and what the user should hear about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedOutput {
    /// The config.
    pub config: OutputConfig,
    /// Unknown keys (under [`UnknownKeys::Warn`]), keys that change nothing, values that
    /// won over a preset; to be logged once when the config is applied.
    pub warnings: Vec<ConfigWarning>,
}

impl OutputConfig {
    /// Parses an output block refusing unknown keys, as a standalone file is read.
    pub fn from_value(value: serde_json::Value) -> Result<Self, ConfigError> {
        Self::parse(value, UnknownKeys::Refuse).map(|parsed| parsed.config)
    }

    /// Parses an output block (a unit's `source`, or a standalone file's top level); an
    /// unknown key is an error or a warning as `unknown` says. Bad values of known keys are
    /// errors either way.
    pub fn parse(
        value: serde_json::Value,
        unknown: UnknownKeys,
    ) -> Result<ParsedOutput, ConfigError> {
        let serde_json::Value::Object(map) = value else {
            return Err(ConfigError::Invalid {
                key: String::new(),
                reason: "the output config must be a mapping of keys to values".into(),
            });
        };
        let mut map = expand_dotted(map, "")?;
        let kind = match map.remove(TYPE_KEY) {
            Some(serde_json::Value::String(kind)) => kind,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: TYPE_KEY.into(),
                    reason: format!("expected a string such as `file`, found {other}"),
                })
            }
            None => {
                return Err(ConfigError::Missing {
                    key: TYPE_KEY.into(),
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
        // serde_ignored's path leaves out enum variants: `queue.x` is really `queue.mem.x`.
        let queue_variant = match shared.get("queue") {
            Some(serde_json::Value::Object(queue)) if queue.len() == 1 => {
                queue.keys().next().cloned()
            }
            _ => None,
        };
        let mut unknown_keys = Vec::new();
        let mut warnings = Vec::new();
        let shared: SharedKeys =
            from_value_noting_unknown(serde_json::Value::Object(shared), "", &mut unknown_keys)?;
        if let Some(variant) = queue_variant {
            for key in &mut unknown_keys {
                if let Some(rest) = key.strip_prefix("queue.") {
                    *key = format!("queue.{variant}.{rest}");
                }
            }
        }
        settle_unknown(&mut unknown_keys, unknown, &mut warnings)?;
        validate_queue(&shared.queue)?;
        validate_dlq(&shared.dlq)?;
        let kind = match kind.as_str() {
            "file" => {
                let file: FileOutputConfig = from_value_noting_unknown(
                    serde_json::Value::Object(map),
                    "",
                    &mut unknown_keys,
                )?;
                settle_unknown(&mut unknown_keys, unknown, &mut warnings)?;
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
            "elasticsearch" => {
                let parsed = ElasticsearchConfig::parse(map, &mut unknown_keys);
                // A typo is reported before what it may have caused (a missing key).
                settle_unknown(&mut unknown_keys, unknown, &mut warnings)?;
                let (es, es_warnings) = parsed?;
                warnings.extend(es_warnings);
                OutputKind::Elasticsearch(es)
            }
            other => {
                return Err(ConfigError::Invalid {
                    key: TYPE_KEY.into(),
                    reason: format!(
                    "unknown output type `{other}`; this build supports `elasticsearch` and `file`"
                ),
                })
            }
        };
        Ok(ParsedOutput {
            config: OutputConfig {
                kind,
                queue: shared.queue,
                dlq: shared.dlq,
            },
            warnings,
        })
    }

    /// The block as [`OutputConfig::from_value`] would read it, defaults filled in and every
    /// secret written as `[redacted]`: the "effective config" of diagnostics.
    pub fn effective(&self) -> serde_json::Value {
        let kind = match &self.kind {
            OutputKind::File(file) => serde_json::to_value(file),
            OutputKind::Elasticsearch(es) => serde_json::to_value(es),
        };
        let mut block = match kind {
            Ok(serde_json::Value::Object(map)) => map,
            // Config types serialize to maps; anything else would be a bug worth seeing.
            Ok(other) => return serde_json::json!({ "error": format!("unexpected {other}") }),
            Err(err) => return serde_json::json!({ "error": err.to_string() }),
        };
        block.insert(TYPE_KEY.into(), self.kind.type_name().into());
        for (key, value) in [
            ("queue", serde_json::to_value(&self.queue)),
            ("dlq", serde_json::to_value(&self.dlq)),
        ] {
            block.insert(
                key.into(),
                value.unwrap_or_else(|err| err.to_string().into()),
            );
        }
        serde_json::Value::Object(block)
    }
}

/// Keys whose values are maps of names (header names, query parameters), never of paths.
const FREE_FORM_KEYS: &[&str] = &["headers", "proxy_headers", "parameters"];

/// `ssl.ca_trusted_fingerprint: x` → `ssl: {ca_trusted_fingerprint: x}`, at every level, as
/// Beats' config library reads a dotted key. Fleet writes that key dotted, and Beats users
/// write `ssl.certificate_authorities: [...]` in YAML. A key given both ways with values
/// that cannot merge is an error naming it.
fn expand_dotted(
    map: serde_json::Map<String, serde_json::Value>,
    parent: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, ConfigError> {
    let mut out = serde_json::Map::new();
    for (key, value) in map {
        let path = super::join_key(parent, &key);
        let value = match value {
            serde_json::Value::Object(inner) if !FREE_FORM_KEYS.contains(&key.as_str()) => {
                serde_json::Value::Object(expand_dotted(inner, &path)?)
            }
            other => other,
        };
        let parts: Vec<&str> = key.split('.').collect();
        if parts.len() == 1 || parts.iter().any(|part| part.is_empty()) {
            merge_key(&mut out, key, value, parent)?;
            continue;
        }
        let nested = parts[1..].iter().rev().fold(value, |inner, part| {
            serde_json::Value::Object(serde_json::Map::from_iter([(part.to_string(), inner)]))
        });
        merge_key(&mut out, parts[0].to_string(), nested, parent)?;
    }
    Ok(out)
}

/// Inserts `key: value` into `map`, merging maps; two values for one key is an error.
fn merge_key(
    map: &mut serde_json::Map<String, serde_json::Value>,
    key: String,
    value: serde_json::Value,
    parent: &str,
) -> Result<(), ConfigError> {
    let path = super::join_key(parent, &key);
    match (map.get_mut(&key), value) {
        (None, value) => {
            map.insert(key, value);
            Ok(())
        }
        (Some(serde_json::Value::Object(existing)), serde_json::Value::Object(more)) => {
            for (inner_key, inner_value) in more {
                merge_key(existing, inner_key, inner_value, &path)?;
            }
            Ok(())
        }
        (Some(_), _) => Err(invalid(
            &path,
            "is given twice (once as a dotted key such as `ssl.key`, once nested)".into(),
        )),
    }
}

/// Refuses the first unknown key, or turns each into a warning; empties `found`.
fn settle_unknown(
    found: &mut Vec<String>,
    unknown: UnknownKeys,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<(), ConfigError> {
    let keys = std::mem::take(found);
    match unknown {
        UnknownKeys::Refuse => match keys.into_iter().next() {
            Some(key) => Err(invalid(
                &key,
                "unknown field; docs/configuration.md lists every key".into(),
            )),
            None => Ok(()),
        },
        UnknownKeys::Warn => {
            warnings.extend(keys.into_iter().map(|key| ConfigWarning {
                key,
                message: "unknown key, ignored (this output has no such setting)".into(),
            }));
            Ok(())
        }
    }
}

fn invalid(key: &str, reason: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason,
    }
}

fn validate_dlq(dlq: &DlqConfig) -> Result<(), ConfigError> {
    if dlq.max_bytes.bytes() < 64 << 10 {
        return Err(invalid(
            "dlq.max_bytes",
            format!("must be at least 64KiB, found {}", dlq.max_bytes.bytes()),
        ));
    }
    if dlq.flush_interval.get().is_zero() {
        return Err(invalid(
            "dlq.flush_interval",
            "must be greater than 0".into(),
        ));
    }
    if dlq
        .retain
        .age
        .is_some_and(|age| age.get().as_millis() % 1000 != 0)
    {
        return Err(invalid(
            "dlq.retain.age",
            "use whole d, h, m or s units, e.g. `7d` or `90s`".into(),
        ));
    }
    if dlq.retain.age.is_some_and(|age| age.get().is_zero()) {
        return Err(invalid("dlq.retain.age", "must be greater than 0".into()));
    }
    Ok(())
}

fn validate_queue(queue: &QueueConfig) -> Result<(), ConfigError> {
    match queue {
        QueueConfig::Memory(mem) => {
            if mem.events == 0 {
                return Err(invalid("queue.mem.events", "must be greater than 0".into()));
            }
            if mem.bytes.bytes() == 0 {
                return Err(invalid("queue.mem.bytes", "must be greater than 0".into()));
            }
        }
        QueueConfig::Disk(disk) => {
            const MIN: u64 = 64 << 10;
            if disk.segment_size.bytes() < MIN {
                return Err(invalid(
                    "queue.disk.segment_size",
                    format!(
                        "must be at least 64KiB, found {}",
                        disk.segment_size.bytes()
                    ),
                ));
            }
            if disk.max_size.bytes() < 2 * disk.segment_size.bytes() {
                return Err(invalid(
                    "queue.disk.max_size",
                    format!(
                        "must be at least twice queue.disk.segment_size ({} bytes), found {}",
                        disk.segment_size.bytes(),
                        disk.max_size.bytes()
                    ),
                ));
            }
            if disk.read_ahead.bytes() < MIN {
                return Err(invalid(
                    "queue.disk.read_ahead",
                    format!("must be at least 64KiB, found {}", disk.read_ahead.bytes()),
                ));
            }
            if disk.durability == DurabilityMode::Interval && disk.sync_interval.get().is_zero() {
                return Err(invalid(
                    "queue.disk.sync_interval",
                    "must be greater than 0 with durability: interval".into(),
                ));
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
    fn effective_config_reads_back_and_hides_secrets() {
        let file = OutputConfig::from_value(json!({
            "type": "file", "path": "/tmp/o.ndjson",
            "queue": {"disk": {"max_size": "1GiB", "sync_interval": "250ms"}},
            "dlq": {"retain": {"age": "7d"}}
        }))
        .unwrap();
        assert_eq!(OutputConfig::from_value(file.effective()).unwrap(), file);
        let es = OutputConfig::from_value(json!({
            "type": "elasticsearch", "hosts": ["http://127.0.0.1:9200"],
            "api_key": "id:very-secret-key"
        }))
        .unwrap();
        let effective = es.effective();
        let text = effective.to_string();
        assert!(!text.contains("very-secret-key"), "{text}");
        assert_eq!(effective["api_key"], "[redacted]");
        assert_eq!(effective["bulk_max_size"], 1600);
        assert_eq!(effective["timeout"], "90s");
        assert_eq!(effective["queue"]["disk"]["max_size"], 4u64 << 30);
    }

    #[test]
    fn file_output_with_defaults() {
        let config =
            OutputConfig::from_value(json!({"type": "file", "path": "out.ndjson"})).unwrap();
        assert_eq!(config.queue, QueueConfig::Disk(DiskQueueConfig::default()));
        let OutputKind::File(file) = config.kind else {
            panic!("not a file output")
        };
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

    #[test]
    fn debug_of_an_output_config_and_its_credentials_prints_no_secret() {
        for (auth, secret) in [
            (json!({"api_key": "id:Api-K3y-Secret"}), "Api-K3y-Secret"),
            (
                json!({"username": "u", "password": "Pa55-Secret"}),
                "Pa55-Secret",
            ),
        ] {
            let mut value = json!({"type": "elasticsearch", "hosts": ["http://127.0.0.1:9200"]});
            for (key, v) in auth.as_object().unwrap() {
                value[key] = v.clone();
            }
            let config = OutputConfig::from_value(value).unwrap();
            let printed = format!("{config:?} {config:#?}");
            assert!(!printed.contains(secret), "{printed}");
            assert!(printed.contains("[redacted]"), "{printed}");
            let OutputKind::Elasticsearch(es) = &config.kind else {
                panic!("{config:?}")
            };
            let credentials = format!("{:?}", es.credentials().unwrap());
            assert!(!credentials.contains(secret), "{credentials}");
        }
    }

    #[test]
    fn under_the_agent_unknown_keys_are_warnings_naming_their_full_path() {
        let block = json!({
            "type": "elasticsearch", "hosts": ["https://es:9200"], "preset": "balanced",
            "ssl": {"renegotiation": "never", "certificate_authorities": []},
            "queue": {"mem": {"events": 10, "flush": {"timeout": "1s"}}},
            "bulk_max_size": 1600, "shipper_only": {"nested": 1}
        });
        let parsed = OutputConfig::parse(block.clone(), UnknownKeys::Warn).unwrap();
        let mut keys: Vec<&str> = parsed.warnings.iter().map(|w| w.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["queue.mem.flush", "shipper_only", "ssl.renegotiation"],
            "{:?}",
            parsed.warnings
        );
        // A standalone file refuses the same block, naming the first unknown key.
        let err = OutputConfig::parse(block, UnknownKeys::Refuse).unwrap_err();
        assert!(err.to_string().contains("queue.mem.flush"), "{err}");
        // A bad value of a known key is an error under the agent too.
        let err = OutputConfig::parse(
            json!({"type": "elasticsearch", "hosts": ["h:1"], "workers": "four", "x": 1}),
            UnknownKeys::Warn,
        )
        .unwrap_err();
        assert_eq!(key_of(err), "workers");
    }

    #[test]
    fn dotted_keys_read_as_nested_ones_as_in_beats() {
        let dotted = OutputConfig::from_value(json!({
            "type": "elasticsearch", "hosts": ["https://es:9200"],
            "ssl.ca_trusted_fingerprint": "ab".repeat(32),
            "ssl": {"verification_mode": "certificate"},
            "queue.mem.events": 10,
            "headers": {"X.Dotted.Name": "v"}
        }))
        .unwrap();
        let OutputKind::Elasticsearch(es) = &dotted.kind else {
            panic!("{dotted:?}")
        };
        assert_eq!(es.ssl.ca_trusted_fingerprint, Some("ab".repeat(32)));
        assert_eq!(
            es.ssl.verification_mode,
            super::super::VerificationMode::Certificate
        );
        assert!(es.headers.contains_key("X.Dotted.Name"));
        assert!(matches!(
            dotted.queue,
            QueueConfig::Memory(MemoryQueueConfig { events: 10, .. })
        ));
        let err = OutputConfig::from_value(json!({
            "type": "file", "path": "o", "dlq.max_bytes": "1MiB", "dlq": {"max_bytes": "2MiB"}
        }))
        .unwrap_err();
        assert_eq!(key_of(err), "dlq.max_bytes");
    }
}
