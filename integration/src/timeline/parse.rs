//! Reading a shipper log: JSON lines in, typed timeline records out; anything else skipped.
//!
//! A line may carry a prefix (mock-agent relays the shipper's stderr as
//! `<time> INFO shipper: {...}`): the JSON object starts at the first `{`. Lines that are
//! not JSON, lack a time, or carry a message this tool does not chart are counted as
//! skipped, never an error.
//!
//! The shipper writes ECS keys (`@timestamp`, `log.logger`, `unit.id`, `unit.type`); logs
//! written before that used `timestamp`, `target`, `unit_id` and `unit_type`, and are still
//! read, so old runs still chart.

use std::time::SystemTime;

/// One unit transition (`"unit state changed"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Unit id.
    pub unit_id: String,
    /// `input` or `output`.
    pub unit_type: String,
    /// Reported state before.
    pub from: String,
    /// Reported state after.
    pub to: String,
    /// Why (the unit's message).
    pub reason: String,
    /// Policy revision.
    pub revision: Option<u64>,
    /// Events still to drain (STOPPING only).
    pub pending_events: Option<u64>,
}

/// One periodic metrics line (`agent_shipper::metrics`, `"metrics"`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metrics {
    /// Events in the queue (gauge).
    pub queue_events: u64,
    /// Bytes in the queue (gauge).
    pub queue_bytes: u64,
    /// Events written in the period.
    pub events_written: u64,
    /// Events acknowledged in the period.
    pub events_acked: u64,
    /// Events in the dead letter queue (gauge).
    pub dlq_events: u64,
}

/// What a log line says, as far as the timeline cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A unit changed state.
    Transition(Transition),
    /// Periodic metrics.
    Metrics(Metrics),
    /// A drain started: the unit and its backlog.
    DrainStarted {
        /// Unit id.
        unit_id: String,
        /// Events to drain.
        pending_events: u64,
    },
    /// A drain is on its way: events of the unit still queued.
    DrainProgress {
        /// Unit id.
        unit_id: String,
        /// Events still to drain.
        pending_events: u64,
    },
    /// A drain reached its barrier.
    DrainFinished {
        /// Unit id.
        unit_id: String,
    },
    /// The process started (`StartUpInfo received…` or `running standalone`), so restarts show.
    ProcessStarted,
}

/// A record with its time.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When the shipper logged it.
    pub at: SystemTime,
    /// What it said.
    pub record: Record,
}

/// Every record of a log, in file order, and how many lines were skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Log {
    /// The records.
    pub entries: Vec<Entry>,
    /// Lines that were not shipper JSON or said nothing charted.
    pub skipped: usize,
}

impl Log {
    /// The time of the first record, the origin of every offset.
    pub fn start(&self) -> Option<SystemTime> {
        self.entries.iter().map(|e| e.at).min()
    }
}

/// Parses a whole log.
pub fn parse_log(text: &str) -> Log {
    let mut log = Log::default();
    for line in text.lines() {
        match parse_line(line) {
            Some(entry) => log.entries.push(entry),
            None => log.skipped += 1,
        }
    }
    log
}

/// The value of the first of `keys` present (the ECS name first, then the old one).
fn field<'a>(value: &'a serde_json::Value, keys: &[&str]) -> Option<&'a serde_json::Value> {
    keys.iter().find_map(|key| value.get(*key))
}

fn text(value: &serde_json::Value, key: &str) -> Option<String> {
    text_of(value, &[key])
}

fn text_of(value: &serde_json::Value, keys: &[&str]) -> Option<String> {
    match field(value, keys)? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn number(value: &serde_json::Value, key: &str) -> Option<u64> {
    value.get(key)?.as_u64()
}

/// Parses one line; `None` for a line the timeline does not use.
pub fn parse_line(line: &str) -> Option<Entry> {
    let json = &line[line.find('{')?..];
    let value: serde_json::Value = serde_json::from_str(json.trim_end()).ok()?;
    let at = field(&value, &["@timestamp", "timestamp"])?.as_str()?;
    let at = humantime::parse_rfc3339_weak(at).ok()?;
    let target = field(&value, &["log.logger", "target"])
        .and_then(|t| t.as_str())
        .unwrap_or("");
    let message = value.get("message").and_then(|m| m.as_str())?;
    let unit_id = || text_of(&value, &["unit.id", "unit_id"]);
    let record = match message {
        "unit state changed" => Record::Transition(Transition {
            unit_id: unit_id()?,
            unit_type: text_of(&value, &["unit.type", "unit_type"]).unwrap_or_default(),
            from: text(&value, "from")?,
            to: text(&value, "to")?,
            reason: text(&value, "reason").unwrap_or_default(),
            revision: number(&value, "revision"),
            pending_events: number(&value, "pending_events"),
        }),
        "metrics" if target.ends_with("metrics") => Record::Metrics(Metrics {
            queue_events: number(&value, "queue_events")?,
            queue_bytes: number(&value, "queue_bytes").unwrap_or(0),
            events_written: number(&value, "events_written").unwrap_or(0),
            events_acked: number(&value, "events_acked").unwrap_or(0),
            dlq_events: number(&value, "dlq_events").unwrap_or(0),
        }),
        "drain started" => Record::DrainStarted {
            unit_id: unit_id()?,
            pending_events: number(&value, "pending_events").unwrap_or(0),
        },
        "drain progress" => Record::DrainProgress {
            unit_id: unit_id()?,
            pending_events: number(&value, "pending_events")?,
        },
        "drain finished" => Record::DrainFinished {
            unit_id: unit_id()?,
        },
        m if m.starts_with("StartUpInfo received") || m == "running standalone" => {
            Record::ProcessStarted
        }
        _ => return None,
    };
    Some(Entry { at, record })
}
