//! `GET /metrics`: [`Stats`] in the Prometheus text exposition format (version 0.0.4).
//!
//! Names are `agent_shipper_*` with the unit in the name (`_bytes`, `_seconds`, `_total`
//! for counters); unit states are one gauge per unit with the state as a label, so a query
//! such as `agent_shipper_unit_state{state="STOPPING"} == 1` finds draining units.

use super::snapshot::Stats;
use std::fmt::Write;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric of `stats`.
pub fn render(stats: &Stats) -> String {
    let mut out = Exposition::default();
    out.gauge(
        "agent_shipper_uptime_seconds",
        "Seconds since the shipper started.",
        &[],
        stats.uptime_ms as f64 / 1000.0,
    );
    out.header(
        "agent_shipper_unit_state",
        "gauge",
        "1 for the state each unit reports now.",
    );
    for unit in &stats.units {
        let kind = unit.kind.to_string();
        let state = serde_json::to_value(unit.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        out.sample(
            "agent_shipper_unit_state",
            &[
                ("unit_id", &unit.id),
                ("unit_type", &kind),
                ("state", &state),
            ],
            1.0,
        );
    }
    out.header(
        "agent_shipper_unit_revision",
        "gauge",
        "Policy revision of each unit's applied config.",
    );
    for unit in &stats.units {
        let kind = unit.kind.to_string();
        out.sample(
            "agent_shipper_unit_revision",
            &[("unit_id", &unit.id), ("unit_type", &kind)],
            unit.revision as f64,
        );
    }
    out.header(
        "agent_shipper_drain_pending_events",
        "gauge",
        "Events a STOPPING unit still has to drain.",
    );
    for drain in &stats.drains {
        let kind = drain.unit_type.to_string();
        out.sample(
            "agent_shipper_drain_pending_events",
            &[("unit_id", &drain.unit_id), ("unit_type", &kind)],
            drain.pending_events as f64,
        );
    }
    if let Some(queue) = &stats.queue {
        let q = &queue.stats;
        let labels: &[(&str, &str)] = &[("queue", q.kind)];
        out.gauge(
            "agent_shipper_queue_events",
            "Unacknowledged events in the queue.",
            labels,
            q.events as f64,
        );
        out.gauge(
            "agent_shipper_queue_bytes",
            "Bytes the queue holds (file bytes on disk).",
            labels,
            q.bytes as f64,
        );
        out.gauge(
            "agent_shipper_queue_oldest_unacked_age_seconds",
            "Age of the oldest unacknowledged event (0 when the queue is empty).",
            labels,
            queue.oldest_unacked_age_ms as f64 / 1000.0,
        );
        out.counter(
            "agent_shipper_queue_written_events_total",
            "Events written (the queue's last sequence number).",
            labels,
            q.head as f64,
        );
        out.counter(
            "agent_shipper_queue_acked_events_total",
            "Events acknowledged (the contiguous acknowledged prefix).",
            labels,
            q.acked as f64,
        );
        out.counter(
            "agent_shipper_queue_write_batches_total",
            "Group-commit writes.",
            labels,
            q.write_batches as f64,
        );
        out.counter(
            "agent_shipper_queue_fsyncs_total",
            "fdatasync calls.",
            labels,
            q.fsyncs as f64,
        );
        out.counter(
            "agent_shipper_queue_corrupted_events_total",
            "Events lost to damaged queue files.",
            labels,
            q.corrupted_events as f64,
        );
        out.counter(
            "agent_shipper_queue_quarantined_segments_total",
            "Damaged segments set aside.",
            labels,
            q.quarantined_segments as f64,
        );
    }
    let m = &stats.output.metrics;
    out.counter(
        "agent_shipper_output_requests_total",
        "Requests sent by the output.",
        &[],
        m.requests as f64,
    );
    out.counter(
        "agent_shipper_output_request_failures_total",
        "Requests without a 2xx answer.",
        &[],
        m.request_failures as f64,
    );
    out.counter(
        "agent_shipper_output_request_duration_seconds_total",
        "Time spent in output requests; divide by agent_shipper_output_requests_total for the mean.",
        &[],
        m.latency_ms_total as f64 / 1000.0,
    );
    out.counter(
        "agent_shipper_output_events_acked_total",
        "Events acknowledged to the queue (delivered or dead-lettered).",
        &[],
        m.events_acked as f64,
    );
    out.counter(
        "agent_shipper_output_events_retried_total",
        "Event sends that will be retried.",
        &[],
        m.events_retried as f64,
    );
    out.counter(
        "agent_shipper_output_events_dead_lettered_total",
        "Events sent to the dead letter queue.",
        &[],
        m.events_dead_lettered as f64,
    );
    out.counter(
        "agent_shipper_output_events_duplicate_total",
        "Events answered 409 (indexed by an earlier send).",
        &[],
        m.events_duplicate as f64,
    );
    out.counter(
        "agent_shipper_output_events_dropped_total",
        "Events of removed inputs skipped on purpose.",
        &[],
        m.events_dropped as f64,
    );
    out.header(
        "agent_shipper_output_failures_total",
        "counter",
        "Non-2xx answers (items and whole requests) by HTTP status; 0 = no answer.",
    );
    for (status, count) in &m.failed_by_status {
        out.sample(
            "agent_shipper_output_failures_total",
            &[("status", &status.to_string())],
            *count as f64,
        );
    }
    if let Some(current) = &stats.output.current {
        out.gauge(
            "agent_shipper_output_healthy",
            "1 while the output delivers, 0 while it is degraded.",
            &[("unit_id", &current.unit_id), ("type", current.kind)],
            if current.health == "healthy" {
                1.0
            } else {
                0.0
            },
        );
    }
    if let Some(dlq) = &stats.dlq {
        out.gauge(
            "agent_shipper_dlq_events",
            "Entries in the dead letter queue.",
            &[],
            dlq.entries as f64,
        );
        out.gauge(
            "agent_shipper_dlq_bytes",
            "Bytes of the dead letter queue's segments.",
            &[],
            dlq.queue_size_in_bytes as f64,
        );
        out.gauge(
            "agent_shipper_dlq_max_bytes",
            "The dead letter queue's size bound.",
            &[],
            dlq.max_queue_size_in_bytes as f64,
        );
        out.counter(
            "agent_shipper_dlq_dropped_events_total",
            "Entries refused or deleted because the DLQ was full.",
            &[],
            dlq.dropped_events as f64,
        );
        out.counter(
            "agent_shipper_dlq_expired_events_total",
            "Entries deleted by age retention.",
            &[],
            dlq.expired_events as f64,
        );
        out.counter(
            "agent_shipper_dlq_damaged_heads_total",
            "DLQ heads a crash left torn, cut back or set aside when opened.",
            &[],
            dlq.damaged_heads as f64,
        );
    }
    out.text
}

#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.header(name, "gauge", help);
        self.sample(name, labels, value);
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.header(name, "counter", help);
        self.sample(name, labels, value);
    }
}

/// Label values may hold anything a unit id holds; the format escapes `\`, `"` and newline.
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{History, PipelineSnapshot, UnitSnapshot};
    use crate::queue::QueueStats;
    use crate::supervisor::{ReportedState, UnitKind};

    #[test]
    fn renders_units_queue_and_escaped_labels() {
        let mut history = History::new(std::time::Instant::now());
        let stats = history.observe(
            std::time::Instant::now(),
            PipelineSnapshot {
                units: vec![UnitSnapshot {
                    id: "in\"put\\1\n".into(),
                    kind: UnitKind::Input,
                    state: ReportedState::Stopping,
                    message: String::new(),
                    config_idx: 3,
                    revision: 7,
                }],
                queue: Some(QueueStats {
                    kind: "disk",
                    events: 12,
                    head: 40,
                    acked: 28,
                    ..QueueStats::default()
                }),
                ..PipelineSnapshot::default()
            },
        );
        let text = render(&stats);
        assert!(
            text.contains(
                "agent_shipper_unit_state{unit_id=\"in\\\"put\\\\1\\n\",unit_type=\"input\",state=\"STOPPING\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("agent_shipper_queue_events{queue=\"disk\"} 12\n"),
            "{text}"
        );
        assert!(
            text.contains("agent_shipper_queue_written_events_total{queue=\"disk\"} 40\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE agent_shipper_output_requests_total counter\n"),
            "{text}"
        );
        // Every sample line belongs to a metric announced by a TYPE line just before it.
        let mut announced = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                announced = rest.split(' ').next().unwrap_or_default().to_string();
            } else if !line.starts_with('#') {
                assert!(
                    line.starts_with(&announced),
                    "{line} after TYPE {announced}"
                );
            }
        }
    }
}
