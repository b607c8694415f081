//! Process logging: ECS JSON lines on stderr as Beats write them (text on request), with a
//! level the agent can change at run time without restarting anything.
//!
//! # Why this shape
//! Elastic Agent reads each stderr line of a component as JSON and re-logs it with the
//! keys of the component spec's log section, which default to Beats' ECS names:
//! `@timestamp` (Go layout `2006-01-02T15:04:05.000Z0700`), `log.level` (zap's lowercase
//! names) and `message`. It applies a unit's own log level to a line that carries that
//! unit's `unit.id`. A line it cannot parse is re-logged at INFO with the agent's clock, so
//! every other shape loses levels and times. [`EcsJson`] writes exactly that: `@timestamp`
//! (UTC, milliseconds, `Z`), `log.level`, `message`, `log.logger` (the event's target, e.g.
//! `agent_shipper::unit`), `ecs.version`, then the event's own fields in the order written,
//! with dotted names such as `unit.id` kept flat as Beats write them.
//!
//! zap has no TRACE: a TRACE event is written as `debug`, so the agent keeps it.

use crate::supervisor::LogLevel;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{
    layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter, Registry,
};

/// The ECS version Beats 8.x stamp on their log lines.
pub const ECS_VERSION: &str = "1.6.0";

/// Log line format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One ECS JSON object per line (the default; what the agent reads).
    Json,
    /// Human-readable text.
    Text,
}

/// Changes the active log level; cheap to clone.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    base: LogLevel,
}

fn filter_for(level: LogLevel) -> EnvFilter {
    // Our own crate at the chosen level; dependencies stay at warn unless RUST_LOG says more.
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    EnvFilter::try_new(format!("{base},agent_shipper={}", level.as_filter()))
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,agent_shipper={}", level.as_filter())))
}

impl LogControl {
    /// Applies `level` at once.
    pub fn set(&self, level: LogLevel) {
        if let Err(err) = self.handle.reload(filter_for(level)) {
            tracing::warn!(error = %err, "could not change the log level");
        }
    }

    /// The level given at start (`-E logging.level`), in force while no unit names one.
    pub fn base(&self) -> LogLevel {
        self.base
    }
}

/// Installs the global subscriber at `level`; returns the handle that changes the level.
pub fn init(format: LogFormat, level: LogLevel) -> LogControl {
    let (filter, handle) = reload::Layer::new(filter_for(level));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(EcsJson)
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
    LogControl {
        handle,
        base: level,
    }
}

/// Formats each event as one ECS JSON line (see the module notes).
#[derive(Debug, Clone, Copy, Default)]
pub struct EcsJson;

/// Keys every line starts with; an event field of the same name is written as
/// `fields.<name>` so no key appears twice.
const RESERVED: &[&str] = &[
    "@timestamp",
    "log.level",
    "message",
    "log.logger",
    "ecs.version",
];

/// zap's name for a tracing level.
pub fn zap_level(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warn",
        tracing::Level::INFO => "info",
        // zap has no trace; the agent maps "trace" to debug anyway.
        _ => "debug",
    }
}

impl<S, N> FormatEvent<S, N> for EcsJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let line = ecs_line(
            std::time::SystemTime::now(),
            event.metadata().level(),
            event.metadata().target(),
            |visitor| event.record(visitor),
        );
        writer.write_str(&line)?;
        writer.write_char('\n')
    }
}

/// One ECS line (without the newline) for an event recorded by `record`.
fn ecs_line(
    at: std::time::SystemTime,
    level: &tracing::Level,
    target: &str,
    record: impl FnOnce(&mut FieldCollector),
) -> String {
    let mut fields = FieldCollector::default();
    record(&mut fields);
    let mut line = String::with_capacity(256);
    let mut put = |key: &str, value: &serde_json::Value| {
        line.push(if line.is_empty() { '{' } else { ',' });
        // Serialising a str or a Value cannot fail.
        line.push_str(&serde_json::to_string(key).unwrap_or_default());
        line.push(':');
        line.push_str(&serde_json::to_string(value).unwrap_or_default());
    };
    put(
        "@timestamp",
        &humantime::format_rfc3339_millis(at).to_string().into(),
    );
    put("log.level", &zap_level(level).into());
    put("message", &fields.message.take().unwrap_or_default().into());
    put("log.logger", &target.into());
    put("ecs.version", &ECS_VERSION.into());
    for (name, value) in &fields.fields {
        if RESERVED.contains(&name.as_str()) {
            put(&format!("fields.{name}"), value);
        } else {
            put(name, value);
        }
    }
    line.push('}');
    line
}

/// Collects an event's fields in the order they were written.
#[derive(Default)]
struct FieldCollector {
    message: Option<String>,
    fields: Vec<(String, serde_json::Value)>,
}

impl FieldCollector {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" && self.message.is_none() {
            self.message = Some(match value {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            });
        } else {
            self.fields.push((field.name().to_string(), value));
        }
    }
}

impl Visit for FieldCollector {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = serde_json::Number::from_f64(value)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| value.to_string().into());
        self.put(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};

    /// Captures what the formatter writes, for one dispatcher scope.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines_of(emit: impl FnOnce()) -> Vec<serde_json::Value> {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(EcsJson)
                .with_writer(move || sink.clone()),
        );
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn lines_carry_the_keys_the_agent_reads() {
        let lines = lines_of(|| {
            tracing::warn!(target: "agent_shipper::unit", { "unit.id" = %"input-a", "unit.type" = "input", pending_events = 3u64, ok = true }, "drain started");
            tracing::trace!(target: "agent_shipper", "fine detail");
        });
        let line = &lines[0];
        assert_eq!(line["log.level"], "warn");
        assert_eq!(line["message"], "drain started");
        assert_eq!(line["log.logger"], "agent_shipper::unit");
        assert_eq!(line["ecs.version"], ECS_VERSION);
        assert_eq!(line["unit.id"], "input-a");
        assert_eq!(line["unit.type"], "input");
        assert_eq!(line["pending_events"], 3);
        assert_eq!(line["ok"], true);
        assert_eq!(lines[1]["log.level"], "debug", "zap has no trace");
    }

    #[test]
    fn timestamp_is_utc_with_exactly_three_fraction_digits() {
        let at = UNIX_EPOCH + Duration::from_micros(1_764_588_000_123_456);
        let line = ecs_line(at, &tracing::Level::INFO, "t", |_| {});
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["@timestamp"], "2025-12-01T11:20:00.123Z");
        let on_the_second = ecs_line(UNIX_EPOCH, &tracing::Level::INFO, "t", |_| {});
        assert!(
            on_the_second.contains(r#""@timestamp":"1970-01-01T00:00:00.000Z""#),
            "{on_the_second}"
        );
        assert!(line.starts_with(r#"{"@timestamp":"#), "{line}");
    }

    #[test]
    fn a_field_named_like_a_reserved_key_does_not_duplicate_it() {
        let lines = lines_of(|| {
            tracing::info!(target: "agent_shipper", { "ecs.version" = "x" }, "hello \"quoted\"\nnext");
        });
        assert_eq!(lines[0]["ecs.version"], ECS_VERSION);
        assert_eq!(lines[0]["fields.ecs.version"], "x");
        assert_eq!(lines[0]["message"], "hello \"quoted\"\nnext");
    }
}
