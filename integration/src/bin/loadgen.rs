//! `loadgen`: publish events to a shipper's Producer API and report what was promised.

use agent_shipper::server::client::ClientTlsFiles;
use anyhow::Result;
use clap::Parser;
use integration::loadgen::{self, LoadgenOptions};
use integration::progress::Progress;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Publish events through the shipper Producer API and follow persisted_index"
)]
struct Cli {
    /// Producer API address: unix:///path or host:port.
    #[arg(long)]
    server: String,
    /// source.input_id of the events.
    #[arg(long, default_value = "loadgen")]
    input_id: String,
    /// Number of events.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Size of each event's message field.
    #[arg(long, default_value_t = 200)]
    event_bytes: usize,
    /// Connect with mutual TLS (for an INPUT unit with `ssl.enabled: true`): the CA of the
    /// shipper's certificate. Without the --ssl-* options loadgen connects in plaintext,
    /// as Beats does.
    #[arg(long, value_name = "FILE", requires_all = ["ssl_cert", "ssl_key"])]
    ssl_ca: Option<std::path::PathBuf>,
    /// The client certificate to present (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["ssl_ca", "ssl_key"])]
    ssl_cert: Option<std::path::PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["ssl_ca", "ssl_cert"])]
    ssl_key: Option<std::path::PathBuf>,
    /// The name the shipper's certificate must hold, sent as SNI (the INPUT unit id picks
    /// that unit's certificate).
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    ssl_server_name: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut options = LoadgenOptions::new(&cli.server, &cli.input_id, cli.events);
    options.batch = cli.batch;
    options.event_bytes = cli.event_bytes;
    if let (Some(ca), Some(cert), Some(key)) = (cli.ssl_ca, cli.ssl_cert, cli.ssl_key) {
        let files = ClientTlsFiles {
            ca,
            cert,
            key,
            server_name: cli.ssl_server_name,
        };
        options.tls = Some(files.load().map_err(anyhow::Error::msg)?);
    }
    let started = std::time::Instant::now();
    // A progress bar on a terminal, fed from loadgen's counter five times per second.
    let progress = Progress::new(cli.events, "loadgen", "events");
    let counter = Arc::new(AtomicU64::new(0));
    options.accepted_counter = Some(counter.clone());
    let publishing = loadgen::run(&options);
    tokio::pin!(publishing);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    let report = loop {
        tokio::select! {
            report = &mut publishing => break report,
            _ = tick.tick() => progress.set(counter.load(Ordering::Relaxed)),
        }
    };
    progress.finish();
    let report = report?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "uuid": report.uuid,
            "accepted": report.accepted,
            "persisted_index": report.persisted_index,
            "promised": report.promised.len(),
            "refused": report.refused,
            "seconds": seconds,
            "events_per_s": report.accepted as f64 / seconds.max(1e-9),
        })
    );
    Ok(())
}
