//! `timeline`: turns an agent-shipper log into a text timeline of unit transitions and
//! queue depth, and an SVG chart of both.

use anyhow::{Context, Result};
use clap::Parser;
use integration::timeline;
use std::io::Read;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "timeline",
    about = "Read an agent-shipper log (JSON lines; other lines are skipped) and write a unit timeline as text and SVG"
)]
struct Cli {
    /// The log file (`-` or none: standard input).
    log: Option<PathBuf>,
    /// Write the text timeline here (default: standard output).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Write the SVG chart here (default: no chart).
    #[arg(long)]
    svg: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let input = match cli.log.as_deref() {
        None => read_stdin()?,
        Some(path) if path.as_os_str() == "-" => read_stdin()?,
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
    };
    let log = timeline::parse_log(&input);
    let text = timeline::text::render(&log);
    match &cli.text {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    if let Some(path) = &cli.svg {
        let svg = timeline::svg::render(&log, &timeline::bands(&log))?;
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn read_stdin() -> Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading standard input")?;
    Ok(text)
}
