//! Unit timeline: turns a shipper log into a text timeline and an SVG chart of queue depth
//! and unit states over time.
//!
//! [`parse`] reads JSON log lines (unit transitions, drain progress, periodic metrics) and
//! skips everything else; [`text`] writes one line per transition plus summaries; [`svg`]
//! draws the chart. Both renderings work from [`Log`] and the state bands built here, so
//! they cannot disagree.

pub mod parse;
pub mod svg;
pub mod text;

pub use parse::{parse_log, Entry, Log, Record};

use std::time::SystemTime;

/// Seconds from `start` to `at` (negative never: clamped at 0).
pub fn offset_s(start: SystemTime, at: SystemTime) -> f64 {
    at.duration_since(start).map_or(0.0, |d| d.as_secs_f64())
}

/// One stretch of time a unit spent in a state.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Start, seconds from the log's start.
    pub start_s: f64,
    /// End, seconds from the log's start.
    pub end_s: f64,
    /// Reported state, e.g. `HEALTHY`.
    pub state: String,
}

/// The states of one unit over time, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Unit id.
    pub unit_id: String,
    /// `input` or `output`.
    pub unit_type: String,
    /// Its states, back to back from its first transition to the end of the log.
    pub segments: Vec<Segment>,
}

/// A band per unit, in the order units first appear. A unit's state after the shipper
/// restarts continues from its next transition; the gap until then keeps the last state.
pub fn bands(log: &Log) -> Vec<Band> {
    let Some(start) = log.start() else {
        return Vec::new();
    };
    let end = log
        .entries
        .iter()
        .map(|e| offset_s(start, e.at))
        .fold(0.0, f64::max);
    let mut bands: Vec<Band> = Vec::new();
    for entry in &log.entries {
        let Record::Transition(t) = &entry.record else {
            continue;
        };
        let at = offset_s(start, entry.at);
        let index = match bands.iter().position(|b| b.unit_id == t.unit_id) {
            Some(index) => index,
            None => {
                bands.push(Band {
                    unit_id: t.unit_id.clone(),
                    unit_type: t.unit_type.clone(),
                    segments: Vec::new(),
                });
                bands.len() - 1
            }
        };
        let segments = &mut bands[index].segments;
        if let Some(last) = segments.last_mut() {
            last.end_s = at;
        }
        segments.push(Segment {
            start_s: at,
            end_s: end,
            state: t.to.clone(),
        });
    }
    bands
}

#[cfg(test)]
mod tests;
