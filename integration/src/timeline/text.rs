//! The human-readable timeline: one line per unit transition, then drains, restarts and
//! queue depth summarised.

use super::offset_s;
use super::parse::{Log, Metrics, Record};
use std::fmt::Write;

/// At most this many queue-depth rows; longer runs are sampled evenly.
const DEPTH_ROWS: usize = 20;

/// Renders `log` as text.
pub fn render(log: &Log) -> String {
    let mut out = String::new();
    let Some(start) = log.start() else {
        out.push_str("no shipper log records found\n");
        return out;
    };
    let _ = writeln!(
        out,
        "Unit timeline (t = seconds since {}; {} records, {} other lines skipped)",
        humantime::format_rfc3339_millis(start),
        log.entries.len(),
        log.skipped
    );
    let _ = writeln!(
        out,
        "{:>9}  {:<24} {:<12}   {:<12} {:>4} {:>9}  reason",
        "t(s)", "unit", "from", "to", "rev", "pending"
    );
    for entry in &log.entries {
        let t = offset_s(start, entry.at);
        match &entry.record {
            Record::Transition(tr) => {
                let unit = format!("{} ({})", tr.unit_id, tr.unit_type);
                let revision = tr.revision.map_or("-".to_string(), |r| r.to_string());
                let pending = tr.pending_events.map_or("-".to_string(), |p| p.to_string());
                let _ = writeln!(
                    out,
                    "{t:>9.3}  {unit:<24} {:<12} → {:<12} {revision:>4} {pending:>9}  {}",
                    tr.from, tr.to, tr.reason
                );
            }
            Record::ProcessStarted => {
                let _ = writeln!(out, "{t:>9.3}  -- shipper process started --");
            }
            _ => {}
        }
    }
    drains(&mut out, log, start);
    depth(&mut out, log, start);
    out
}

fn drains(out: &mut String, log: &Log, start: std::time::SystemTime) {
    let mut lines = Vec::new();
    for (n, entry) in log.entries.iter().enumerate() {
        let Record::DrainStarted {
            unit_id,
            pending_events,
        } = &entry.record
        else {
            continue;
        };
        let began = offset_s(start, entry.at);
        let mut samples = 0usize;
        let mut finished = None;
        for later in &log.entries[n + 1..] {
            match &later.record {
                Record::DrainProgress { unit_id: u, .. } if u == unit_id => samples += 1,
                Record::DrainFinished { unit_id: u } if u == unit_id => {
                    finished = Some(offset_s(start, later.at));
                    break;
                }
                Record::DrainStarted { unit_id: u, .. } if u == unit_id => break,
                _ => {}
            }
        }
        let end = match finished {
            Some(t) => format!("finished at {t:.3} s ({:.3} s)", t - began),
            None => "not finished in this log".to_string(),
        };
        lines.push(format!(
            "  {unit_id}: {pending_events} events at {began:.3} s, {end}, {samples} progress lines"
        ));
    }
    if !lines.is_empty() {
        let _ = writeln!(out, "\nDrains:");
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
    }
}

fn depth(out: &mut String, log: &Log, start: std::time::SystemTime) {
    let samples: Vec<(f64, &Metrics)> = log
        .entries
        .iter()
        .filter_map(|e| match &e.record {
            Record::Metrics(m) => Some((offset_s(start, e.at), m)),
            _ => None,
        })
        .collect();
    let _ = writeln!(
        out,
        "\nQueue depth (metrics lines): {} samples",
        samples.len()
    );
    let Some((max_t, max)) = samples
        .iter()
        .max_by_key(|(_, m)| m.queue_events)
        .map(|(t, m)| (*t, m.queue_events))
    else {
        return;
    };
    let written: u64 = samples.iter().map(|(_, m)| m.events_written).sum();
    let acked: u64 = samples.iter().map(|(_, m)| m.events_acked).sum();
    let _ = writeln!(
        out,
        "  max {max} events at {max_t:.3} s; written {written}, acked {acked} over the samples"
    );
    let _ = writeln!(
        out,
        "{:>9}  {:>12} {:>12} {:>9} {:>9} {:>6}",
        "t(s)", "queue_events", "queue_bytes", "written", "acked", "dlq"
    );
    let step = samples.len().div_ceil(DEPTH_ROWS).max(1);
    let last = samples.len() - 1;
    for (n, (t, m)) in samples.iter().enumerate() {
        if n % step != 0 && n != last {
            continue;
        }
        let _ = writeln!(
            out,
            "{t:>9.3}  {:>12} {:>12} {:>9} {:>9} {:>6}",
            m.queue_events, m.queue_bytes, m.events_written, m.events_acked, m.dlq_events
        );
    }
}
