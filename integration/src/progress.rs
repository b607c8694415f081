//! Progress bars for long runs (loadgen, e2e-bench): drawn on stderr only when it is a
//! terminal and `CI` is not set; otherwise every call does nothing.
//!
//! The bar is fed from a counter by the caller a few times per second, never from a hot
//! loop; indicatif redraws at most 20 times per second on its own.

use std::io::IsTerminal;

/// A progress bar that may be switched off.
#[derive(Debug, Clone)]
pub struct Progress(Option<indicatif::ProgressBar>);

/// True when a bar would be seen by a person: stderr is a terminal and `CI` is unset.
pub fn wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

impl Progress {
    /// A bar of `total` `unit`s (e.g. "events") labelled `what`, shown only if [`wanted`].
    pub fn new(total: u64, what: &str, unit: &str) -> Self {
        if !wanted() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new(total);
        let template = format!(
            "{{prefix}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})"
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        bar.set_prefix(what.to_string());
        Progress(Some(bar))
    }

    /// A bar that never draws.
    pub fn hidden() -> Self {
        Progress(None)
    }

    /// Moves the bar to `position`.
    pub fn set(&self, position: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(position);
        }
    }

    /// Runs `f` with the bar cleared, so lines printed by `f` are not torn by it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.0 {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_bar_runs_what_it_suspends_and_ignores_the_rest() {
        let bar = Progress::hidden();
        bar.set(10);
        assert_eq!(bar.suspend(|| 7), 7);
        bar.finish();
    }
}
