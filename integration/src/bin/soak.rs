//! `soak`: steady load through agent-shipper under mock-agent with Elasticsearch faults,
//! API key rotations, input removals and random SIGKILLs; exits non-zero if an event the
//! shipper promised was lost, or if more events were indexed twice than loadgen sent twice.

use anyhow::{Context, Result};
use clap::Parser;
use integration::soak::{self, SoakOptions};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "soak",
    about = "Soak agent-shipper with faults, key rotations, input changes and SIGKILLs; check every promised event",
    args_override_self = true
)]
struct Cli {
    /// Length of the faulty phase, e.g. 180s or 3m (the final drain comes after).
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed of the kill schedule and the fault dice (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// New events per second per publisher (two publishers).
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Least time between API key rotations.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    rotate_every: Duration,
    /// The agent-shipper binary (default: next to this binary).
    #[arg(long)]
    shipper: Option<PathBuf>,
    /// Append the shipper's own log lines to this file (e.g. for `timeline`).
    #[arg(long)]
    shipper_log: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,soak=info".into()),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("soak seed: {seed} (rerun with --seed {seed})");
    let shipper = match cli.shipper {
        Some(path) => path,
        None => integration::shipper_binary()?,
    };
    let data = tempfile::Builder::new()
        .prefix("shipper-soak")
        .tempdir()
        .context("creating a data directory")?;
    let mut options = SoakOptions::new(shipper, data.path().to_path_buf(), seed);
    options.duration = cli.duration;
    options.rate_per_s = cli.rate;
    options.rotate_every = cli.rotate_every;
    options.shipper_log = cli.shipper_log;
    let report = soak::run(&options).await?;
    let d = &report.delivery;
    println!(
        "soak: {:.0} s, seed {seed}: promised {}, indexed {}, dead-lettered {}, duplicates {}, lost {}; \
         kills {}, faults injected {}, key rotations {}, input removals/additions {}, resent {} ({} unanswered)",
        report.elapsed.as_secs_f64(),
        d.promised,
        d.indexed,
        d.dead_lettered,
        d.duplicates,
        d.lost,
        report.kills,
        report.faults,
        report.rotations,
        report.input_changes,
        report.resent,
        report.unanswered
    );
    if report.unexplained_duplicates() > 0 {
        let kept = data.keep();
        anyhow::bail!(
            "{} events were indexed more often than loadgen sent them, e.g. (run, seq, indexed, sent) {:?} (seed {seed}; data kept in {})",
            report.unexplained_count,
            report.unexplained,
            kept.display()
        );
    }
    if d.lost > 0 {
        let kept = data.keep();
        anyhow::bail!(
            "{} promised events were lost (seed {seed}; data kept in {})",
            d.lost,
            kept.display()
        );
    }
    Ok(())
}
