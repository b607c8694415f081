//! Process logging: structured lines on stderr (JSON by default, text on request), with a
//! level the agent can change at run time without restarting anything.

use crate::supervisor::LogLevel;
use tracing_subscriber::{
    layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter, Registry,
};

/// Log line format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (the default; what the agent collects).
    Json,
    /// Human-readable text.
    Text,
}

/// Changes the active log level; cheap to clone.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
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
}

/// Installs the global subscriber at INFO; returns the handle that changes the level.
pub fn init(format: LogFormat) -> LogControl {
    let (filter, handle) = reload::Layer::new(filter_for(LogLevel::Info));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
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
    LogControl { handle }
}
