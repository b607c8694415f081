//! `queue-bench`: the disk queue against the disk itself, in one run on one directory.
//!
//! (a) raw baseline: the same total bytes written sequentially in 1 MiB blocks, one
//!     `fdatasync` per block; (b) the queue: records appended by concurrent producers with
//!     default durability, read and acknowledged by a concurrent consumer.
//! `--mode backlog` instead fills the queue with no consumer, reports peak RSS, reopens
//! it (timed), then drains it. The last line printed is one JSON object.

use agent_shipper::queue::{DiskOptions, DiskQueue, Durability, Generation, Queue};
use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Producers and a consumer at once.
    Throughput,
    /// Fill first, reopen, then drain.
    Backlog,
}

#[derive(Parser)]
#[command(
    name = "queue-bench",
    about = "Measure the disk queue against raw sequential writes with fdatasync"
)]
struct Cli {
    /// Bytes per record.
    #[arg(long, default_value_t = 256)]
    record_bytes: usize,
    /// Number of records.
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,
    /// Directory to measure in (created; its `queue-bench-*` content is removed).
    #[arg(long)]
    dir: PathBuf,
    /// Concurrent producers.
    #[arg(long, default_value_t = 4)]
    producers: u64,
    /// Records per append (one PublishEvents request).
    #[arg(long, default_value_t = 1024)]
    batch: u64,
    /// What to measure.
    #[arg(long, value_enum, default_value = "throughput")]
    mode: Mode,
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn raw_baseline(dir: &Path, total: u64) -> Result<f64> {
    let path = dir.join("queue-bench-raw.bin");
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let block = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    let mut written = 0u64;
    while written < total {
        let n = (total - written).min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        file.sync_data()?;
        written += n as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(total as f64 / seconds / 1e6)
}

fn options(dir: &Path, total: u64) -> DiskOptions {
    DiskOptions {
        dir: dir.join("queue-bench-queue"),
        max_size: (total * 2).max(256 << 20),
        segment_size: 64 << 20,
        durability: Durability::Batch,
        read_ahead: 8 << 20,
    }
}

async fn produce(queue: Arc<DiskQueue>, cli: &Cli) -> Result<()> {
    let generation = queue.register(Generation {
        input_unit: "bench".into(),
        output_unit: "bench".into(),
        output_config_idx: 1,
    });
    let payload = Bytes::from(vec![0x42u8; cli.record_bytes]);
    let per_producer = cli.records / cli.producers;
    let mut producers = tokio::task::JoinSet::new();
    for p in 0..cli.producers {
        let queue = queue.clone();
        let payload = payload.clone();
        let count = if p == cli.producers - 1 {
            cli.records - per_producer * (cli.producers - 1)
        } else {
            per_producer
        };
        let batch = cli.batch;
        producers.spawn(async move {
            let mut sent = 0;
            while sent < count {
                let n = batch.min(count - sent);
                let events = (0..n).map(|_| (generation, payload.clone())).collect();
                let appended = queue.append(events).await?;
                sent += appended.accepted as u64;
                if appended.accepted == 0 {
                    tokio::task::yield_now().await;
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = producers.join_next().await {
        result??;
    }
    Ok(())
}

async fn consume(queue: Arc<DiskQueue>, records: u64) -> Result<()> {
    let mut seen = 0;
    while seen < records {
        let batch = queue
            .read(4096, 8 << 20)
            .await
            .context("queue closed early")?;
        let (first, last) = (batch[0].seq, batch[batch.len() - 1].seq);
        seen += batch.len() as u64;
        queue.ack(first, last);
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.dir)?;
    let total = cli.records * cli.record_bytes as u64;
    let queue_dir = options(&cli.dir, total).dir;
    let _ = std::fs::remove_dir_all(&queue_dir);

    let raw_mb_per_s = raw_baseline(&cli.dir, total)?;
    eprintln!("raw: {raw_mb_per_s:.1} MB/s (1 MiB blocks, fdatasync each)");

    let mut reopen_ms = None;
    let started = Instant::now();
    let seconds = match cli.mode {
        Mode::Throughput => {
            let queue = Arc::new(DiskQueue::open(options(&cli.dir, total))?);
            let consumer = tokio::spawn(consume(queue.clone(), cli.records));
            produce(queue.clone(), &cli).await?;
            consumer.await??;
            let seconds = started.elapsed().as_secs_f64();
            queue.close();
            queue.persist().await;
            seconds
        }
        Mode::Backlog => {
            let queue = Arc::new(DiskQueue::open(options(&cli.dir, total))?);
            produce(queue.clone(), &cli).await?;
            let filled = started.elapsed().as_secs_f64();
            eprintln!(
                "backlog of {} MB written in {filled:.2} s; peak RSS so far {:.1} MiB",
                total / 1_000_000,
                peak_rss_mb()
            );
            queue.close();
            queue.persist().await;
            drop(queue);
            let reopen = Instant::now();
            let queue = Arc::new(
                tokio::task::spawn_blocking({
                    let options = options(&cli.dir, total);
                    move || DiskQueue::open(options)
                })
                .await??,
            );
            reopen_ms = Some(reopen.elapsed().as_secs_f64() * 1e3);
            consume(queue.clone(), cli.records).await?;
            queue.close();
            queue.persist().await;
            started.elapsed().as_secs_f64()
        }
    };
    let _ = std::fs::remove_dir_all(&queue_dir);
    let events_per_s = cli.records as f64 / seconds;
    let mb_per_s = total as f64 / seconds / 1e6;
    let mut line = serde_json::json!({
        "record_bytes": cli.record_bytes,
        "records": cli.records,
        "events_per_s": events_per_s.round(),
        "mb_per_s": (mb_per_s * 10.0).round() / 10.0,
        "raw_mb_per_s": (raw_mb_per_s * 10.0).round() / 10.0,
        "ratio_to_raw": (mb_per_s / raw_mb_per_s * 100.0).round() / 100.0,
        "peak_rss_mb": (peak_rss_mb() * 10.0).round() / 10.0,
    });
    if let Some(ms) = reopen_ms {
        line["mode"] = "backlog".into();
        line["reopen_ms"] = ((ms * 10.0).round() / 10.0).into();
    }
    println!("{line}");
    Ok(())
}
