//! The timeline on a small fixed log: what is parsed, skipped and printed, in order.

use super::*;

/// A log as the demo writes it: raw ECS JSON lines, a relayed (prefixed) line, noise; the
/// first two lines have the field names shipper logs had before ECS (`timestamp`, `target`,
/// `unit_id`), which must still chart.
const LOG: &str = r#"{"timestamp":"2026-11-22T13:50:00.000000Z","level":"INFO","message":"StartUpInfo received; connecting to Elastic Agent","target":"agent_shipper"}
{"timestamp":"2026-11-22T13:50:00.100000Z","level":"INFO","message":"unit state changed","target":"agent_shipper::unit","unit_id":"output-rev1","unit_type":"output","from":"STARTING","to":"HEALTHY","reason":"ready","revision":1}
2026-11-22T13:50:00.200000Z  INFO shipper: {"@timestamp":"2026-11-22T13:50:00.200000Z","log.level":"info","message":"unit state changed","log.logger":"agent_shipper::unit","unit.id":"input-b","unit.type":"input","from":"STARTING","to":"HEALTHY","reason":"accepting events","revision":1}
not json at all
{"broken": 
{"@timestamp":"2026-11-22T13:50:01.000000Z","log.level":"info","message":"metrics","log.logger":"agent_shipper::metrics","period_ms":1000,"queue_events":12345,"queue_bytes":456789,"events_written":1000,"events_acked":980,"output_requests":3,"output_events_retried":0,"output_events_dead_lettered":0,"dlq_events":0,"drains":0}
{"@timestamp":"2026-11-22T13:50:01.500000Z","log.level":"info","message":"checked in","log.logger":"agent_shipper::control"}
{"@timestamp":"2026-11-22T13:50:02.000000Z","log.level":"info","message":"unit state changed","log.logger":"agent_shipper::unit","unit.id":"input-b","unit.type":"input","from":"HEALTHY","to":"STOPPING","reason":"draining 100000 events","revision":2,"pending_events":100000}
{"@timestamp":"2026-11-22T13:50:02.000100Z","log.level":"info","message":"drain started","log.logger":"agent_shipper::unit","unit.id":"input-b","unit.type":"input","barrier":105000,"pending_events":100000}
{"@timestamp":"2026-11-22T13:50:03.000000Z","log.level":"info","message":"drain progress","log.logger":"agent_shipper::unit","unit.id":"input-b","unit.type":"input","pending_events":51234,"barrier":105000,"acked":53766}
{"@timestamp":"2026-11-22T13:50:03.000000Z","log.level":"info","message":"metrics","log.logger":"agent_shipper::metrics","period_ms":1000,"queue_events":60000,"queue_bytes":900000,"events_written":0,"events_acked":50000,"dlq_events":2,"drains":1}
{"@timestamp":"2026-11-22T13:50:04.250000Z","log.level":"info","message":"drain finished","log.logger":"agent_shipper::unit","unit.id":"input-b","unit.type":"input","barrier":105000,"acked":105000,"ack_to_stopped_us":34}
{"@timestamp":"2026-11-22T13:50:04.250100Z","log.level":"info","message":"unit state changed","log.logger":"agent_shipper::unit","unit.id":"input-b","unit.type":"input","from":"STOPPING","to":"STOPPED","reason":"drained","revision":2}
"#;

fn transitions(log: &Log) -> Vec<(String, String, String)> {
    log.entries
        .iter()
        .filter_map(|e| match &e.record {
            Record::Transition(t) => Some((t.unit_id.clone(), t.from.clone(), t.to.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn parses_transitions_in_order_and_skips_foreign_lines() {
    let log = parse_log(LOG);
    let got = transitions(&log);
    let want = [
        ("output-rev1", "STARTING", "HEALTHY"),
        ("input-b", "STARTING", "HEALTHY"),
        ("input-b", "HEALTHY", "STOPPING"),
        ("input-b", "STOPPING", "STOPPED"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(got, want);
    // "not json", the broken object and "checked in" are skipped; the prefixed line is not.
    assert_eq!(log.skipped, 3);
    let stopping = log
        .entries
        .iter()
        .find_map(|e| match &e.record {
            Record::Transition(t) if t.to == "STOPPING" => Some(t.clone()),
            _ => None,
        })
        .expect("the STOPPING transition");
    assert_eq!(stopping.pending_events, Some(100_000));
    assert_eq!(stopping.revision, Some(2));
    assert_eq!(stopping.reason, "draining 100000 events");
    let metrics: Vec<u64> = log
        .entries
        .iter()
        .filter_map(|e| match &e.record {
            Record::Metrics(m) => Some(m.queue_events),
            _ => None,
        })
        .collect();
    assert_eq!(metrics, [12345, 60000]);
}

#[test]
fn bands_follow_each_unit_state_by_state() {
    let log = parse_log(LOG);
    let bands = bands(&log);
    let ids: Vec<&str> = bands.iter().map(|b| b.unit_id.as_str()).collect();
    assert_eq!(ids, ["output-rev1", "input-b"]);
    let input_b: Vec<(f64, f64, &str)> = bands[1]
        .segments
        .iter()
        .map(|s| (s.start_s, s.end_s, s.state.as_str()))
        .collect();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    assert_eq!(input_b.len(), 3);
    assert!(close(input_b[0].0, 0.2) && close(input_b[0].1, 2.0) && input_b[0].2 == "HEALTHY");
    assert!(close(input_b[1].0, 2.0) && close(input_b[1].1, 4.2501) && input_b[1].2 == "STOPPING");
    assert_eq!(input_b[2].2, "STOPPED");
}

#[test]
fn text_lists_transitions_with_offsets_then_drains_and_depth() {
    let text = text::render(&parse_log(LOG));
    let lines: Vec<&str> = text.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{text}"))
    };
    let started = at("shipper process started");
    let output = at("output-rev1 (output)");
    let stopping = at("HEALTHY      → STOPPING");
    let stopped = at("STOPPING     → STOPPED");
    assert!(
        started < output && output < stopping && stopping < stopped,
        "{text}"
    );
    assert!(lines[stopping].trim_start().starts_with("2.000"), "{text}");
    assert!(lines[stopping].contains("100000"), "{text}");
    assert!(lines[stopping].contains("draining 100000 events"), "{text}");
    assert!(lines[stopped].trim_start().starts_with("4.250"), "{text}");
    assert!(
        text.contains(
            "input-b: 100000 events at 2.000 s, finished at 4.250 s (2.250 s), 1 progress lines"
        ),
        "{text}"
    );
    assert!(
        text.contains("Queue depth (metrics lines): 2 samples"),
        "{text}"
    );
    assert!(text.contains("max 60000 events at 3.000 s"), "{text}");
}

#[test]
fn svg_has_a_band_per_unit_and_the_depth_series() {
    let log = parse_log(LOG);
    let svg = svg::render(&log, &bands(&log)).expect("a chart");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("output-rev1 (output)"));
    assert!(svg.contains("input-b (input)"));
    assert!(svg.contains("STOPPING"));
    assert!(svg.contains("queue events (metrics)"));
}

#[test]
fn empty_log_says_so() {
    let log = parse_log("hello\n");
    assert!(text::render(&log).starts_with("no shipper log records"));
    assert!(matches!(svg::render(&log, &[]), Err(svg::SvgError::Empty)));
}
