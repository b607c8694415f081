//! The SVG chart: queue depth over time above, one band per unit coloured by state below.

use super::parse::{Log, Record};
use super::{offset_s, Band};
use plotters::prelude::*;
use std::collections::BTreeMap;

/// Chart width in pixels.
const WIDTH: u32 = 1000;
/// Height of the queue-depth chart in pixels.
const DEPTH_HEIGHT: u32 = 360;
/// Height of one unit band in pixels.
const BAND_HEIGHT: u32 = 30;
/// Left label area of both charts, wide enough for a unit id.
const LABEL_WIDTH: u32 = 150;
/// Right margin of both charts, where the state legend goes.
const LEGEND_WIDTH: u32 = 130;

/// Why no chart could be drawn.
#[derive(Debug, thiserror::Error)]
pub enum SvgError {
    /// The log has no record to chart.
    #[error("the log has no shipper records to chart")]
    Empty,
    /// plotters failed (it reports errors as text).
    #[error("drawing the chart: {0}")]
    Draw(String),
}

fn state_colour(state: &str) -> RGBColor {
    match state {
        "HEALTHY" => RGBColor(76, 175, 80),
        "STARTING" => RGBColor(144, 202, 249),
        "CONFIGURING" => RGBColor(33, 150, 243),
        "STOPPING" => RGBColor(255, 152, 0),
        "STOPPED" => RGBColor(158, 158, 158),
        "DEGRADED" => RGBColor(255, 235, 59),
        "FAILED" => RGBColor(229, 57, 53),
        _ => RGBColor(121, 85, 72),
    }
}

const SERIES_COLOURS: [RGBColor; 4] = [
    RGBColor(230, 81, 0),
    RGBColor(123, 31, 162),
    RGBColor(0, 121, 107),
    RGBColor(93, 64, 55),
];

/// Queue-depth series: the metrics gauge, then each drain's pending events by unit.
fn depth_series(log: &Log) -> Vec<(String, Vec<(f64, f64)>)> {
    let Some(start) = log.start() else {
        return Vec::new();
    };
    let mut queue = Vec::new();
    let mut drains: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for entry in &log.entries {
        let t = offset_s(start, entry.at);
        match &entry.record {
            Record::Metrics(m) => queue.push((t, m.queue_events as f64)),
            Record::DrainStarted {
                unit_id,
                pending_events,
            }
            | Record::DrainProgress {
                unit_id,
                pending_events,
            } => drains
                .entry(unit_id)
                .or_default()
                .push((t, *pending_events as f64)),
            Record::DrainFinished { unit_id } => drains.entry(unit_id).or_default().push((t, 0.0)),
            _ => {}
        }
    }
    let mut series = Vec::new();
    if !queue.is_empty() {
        series.push(("queue events (metrics)".to_string(), queue));
    }
    for (unit, points) in drains {
        series.push((format!("{unit}: events left to drain"), points));
    }
    series
}

/// Renders the chart of `log` (with its unit `bands`) as an SVG document.
pub fn render(log: &Log, bands: &[Band]) -> Result<String, SvgError> {
    let start = log.start().ok_or(SvgError::Empty)?;
    let last = log
        .entries
        .iter()
        .map(|e| offset_s(start, e.at))
        .fold(0.0, f64::max);
    // A little room after the last line, so a state entered at the very end shows.
    let end = (last * 1.03).max(last + 0.2).max(1.0);
    let restarts: Vec<f64> = log
        .entries
        .iter()
        .filter(|e| e.record == Record::ProcessStarted)
        .map(|e| offset_s(start, e.at))
        .skip(1)
        .collect();
    let mut svg = String::new();
    draw(&mut svg, log, bands, end, &restarts).map_err(|e| SvgError::Draw(e.to_string()))?;
    Ok(svg)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(svg: &mut String, log: &Log, bands: &[Band], end: f64, restarts: &[f64]) -> DrawResult {
    let x_label = |x: &f64| {
        if end < 20.0 {
            format!("{x:.1} s")
        } else {
            format!("{x:.0} s")
        }
    };
    let last = bands
        .iter()
        .flat_map(|b| b.segments.iter().map(|s| s.end_s))
        .fold(0.0, f64::max);
    let band_area = 70 + BAND_HEIGHT * bands.len().max(1) as u32;
    let height = DEPTH_HEIGHT + band_area;
    let root = SVGBackend::with_string(svg, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(DEPTH_HEIGHT);

    let series = depth_series(log);
    let ymax = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let mut depth = ChartBuilder::on(&upper)
        .caption("Queue depth and unit states", ("sans-serif", 20))
        .margin(10)
        .margin_right(LEGEND_WIDTH)
        .x_label_area_size(30)
        .y_label_area_size(LABEL_WIDTH)
        .build_cartesian_2d(0f64..end, 0f64..ymax)?;
    depth
        .configure_mesh()
        .y_desc("events")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_label_formatter(&x_label)
        .draw()?;
    for (n, (label, points)) in series.into_iter().enumerate() {
        let colour = if n == 0 && label.starts_with("queue") {
            BLUE
        } else {
            SERIES_COLOURS[n % SERIES_COLOURS.len()]
        };
        depth
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    for t in restarts {
        depth.draw_series(LineSeries::new(
            [(*t, 0.0), (*t, ymax)],
            RED.stroke_width(1),
        ))?;
    }
    if !restarts.is_empty() {
        depth
            .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
            .label("shipper (re)started")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    }
    depth
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let rows = bands.len().max(1) as f64;
    let mut states = ChartBuilder::on(&lower)
        .margin(10)
        .margin_right(LEGEND_WIDTH)
        .x_label_area_size(30)
        .y_label_area_size(LABEL_WIDTH)
        .build_cartesian_2d(0f64..end, 0f64..rows)?;
    states
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("seconds since the first log line")
        .x_label_formatter(&x_label)
        .draw()?;
    let mut seen: Vec<&str> = Vec::new();
    for (row, band) in bands.iter().enumerate() {
        let y = rows - row as f64 - 1.0;
        states.draw_series(band.segments.iter().map(|s| {
            Rectangle::new(
                [
                    (s.start_s, y + 0.15),
                    (if s.end_s >= last { end } else { s.end_s }, y + 0.85),
                ],
                state_colour(&s.state).filled(),
            )
        }))?;
        for s in &band.segments {
            if !seen.contains(&s.state.as_str()) {
                seen.push(&s.state);
            }
        }
        let (px, py) = states.backend_coord(&(0.0, y + 0.5));
        root.draw(&Text::new(
            format!("{} ({})", band.unit_id, band.unit_type),
            (px - LABEL_WIDTH as i32 + 5, py - 7),
            ("sans-serif", 13),
        ))?;
    }
    for t in restarts {
        states.draw_series(LineSeries::new(
            [(*t, 0.0), (*t, rows)],
            RED.stroke_width(1),
        ))?;
    }
    let legend_x = (WIDTH - LEGEND_WIDTH + 20) as i32;
    let (_, top) = states.backend_coord(&(0.0, rows));
    for (n, state) in seen.iter().enumerate() {
        let y = top + 18 * n as i32;
        root.draw(&Rectangle::new(
            [(legend_x, y), (legend_x + 12, y + 12)],
            state_colour(state).filled(),
        ))?;
        root.draw(&Text::new(
            state.to_string(),
            (legend_x + 18, y),
            ("sans-serif", 12),
        ))?;
    }
    root.present()?;
    Ok(())
}
