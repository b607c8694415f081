//! `e2e-bench`: the end-to-end benchmark of issue 5.
//!
//! loadgen (in-process, `--publishers` concurrent PublishEvents streams) → the real
//! `agent-shipper` (standalone, disk queue, `type: elasticsearch` with an API key) →
//! `mock-es` (its own process, `--track-loadgen`, documents not kept), all on loopback and
//! unix sockets in a temporary directory. Waits (at most `--deadline-secs`) until mock-es
//! has indexed every event loadgen was promised, stops both with SIGTERM, and prints as its
//! last line one JSON object:
//!
//! `{"events","event_bytes","events_per_s","lost","indexed","duplicates_indexed","shipper_peak_rss_mb",
//! "shipper_cpu_us_per_event","mock_es_cpu_us_per_event","loadgen_cpu_us_per_event","publishers","batch",
//! "clk_tck","clk_tck_measured"}`
//!
//! - `events_per_s`: events / (first publish → the last document of the run indexed, as
//!   mock-es timed it);
//! - `lost`: promised seqs mock-es never indexed; `indexed`: documents mock-es indexed;
//!   `duplicates_indexed`: documents indexed again for a seq under another `_id`;
//! - `shipper_peak_rss_mb`: the shipper's `VmHWM` just before it is stopped;
//! - `*_cpu_us_per_event`: user + system CPU time (`/proc/<pid>/stat` fields 14 and 15, every
//!   thread) from the first publish until the last event was indexed, per event delivered
//!   (events − lost); loadgen runs in this process, so its figure is this process's. Ticks
//!   are converted with `getconf CLK_TCK` (`clk_tck`), or 100 when `getconf` is missing
//!   (`clk_tck_measured: false`);
//! - `publishers`, `batch`: the request shape (`--publishers` concurrent streams, `--batch`
//!   events per PublishEvents request).
//!
//! The binaries are taken from beside this one (`target/release`). Run through `cargo run`,
//! it first brings `agent-shipper` and `mock-es` up to date with the same cargo, so a fresh
//! clone needs nothing else and a stale shipper is never measured.
//! Figures only: nothing here asserts a timing. The exit status is 1 when the deadline
//! passed or events were lost.

use anyhow::{bail, Context, Result};
use clap::Parser;
use integration::loadgen::{self, LoadgenOptions};
use integration::mock_es::{LoadgenMissing, MockEsStats};
use integration::progress::Progress;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Parser, Debug)]
#[command(
    name = "e2e-bench",
    about = "loadgen → agent-shipper (disk queue, elasticsearch output) → mock-es; prints one JSON line"
)]
struct Cli {
    /// Events to publish.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Size of each event's message field.
    #[arg(long, default_value_t = 300)]
    event_bytes: usize,
    /// Concurrent PublishEvents streams (each on its own connection).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Events per PublishEvents request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Output `workers`.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Output `bulk_max_size`.
    #[arg(long, default_value_t = 1600)]
    bulk_max_size: usize,
    /// Output `compression_level` (0 = no gzip).
    #[arg(long, default_value_t = 1)]
    compression_level: u32,
    /// `queue.disk.durability`: `batch` or `interval` (default: the shipper's, batch).
    #[arg(long)]
    durability: Option<String>,
    /// Use the memory queue instead of the disk queue.
    #[arg(long)]
    mem_queue: bool,
    /// Give up waiting for mock-es to index everything after this long.
    #[arg(long, default_value_t = 600)]
    deadline_secs: u64,
    /// Keep the temporary directory (config, queue, logs) and print where it is.
    #[arg(long)]
    keep: bool,
    /// No progress lines: only the JSON.
    #[arg(long)]
    quiet: bool,
}

const API_KEY_ID: &str = "e2e-bench";
const API_KEY_SECRET: &str = "e2e-bench-secret";
const RUN: &str = "e2e-bench";

/// Under `cargo run` (`$CARGO` set), builds the shipper and mock-es in this binary's
/// profile so that the ones beside it are current.
fn build_peers() -> Result<()> {
    let Ok(cargo) = std::env::var("CARGO") else {
        return Ok(());
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let release = std::env::current_exe()?
        .parent()
        .and_then(|dir| dir.file_name())
        .is_some_and(|name| name == "release");
    let mut command = std::process::Command::new(cargo);
    command.current_dir(&workspace).args([
        "build",
        "--quiet",
        "-p",
        "agent-shipper",
        "--bin",
        "agent-shipper",
        "-p",
        "integration",
        "--bin",
        "mock-es",
    ]);
    if release {
        command.arg("--release");
    }
    let status = command
        .status()
        .context("running cargo build for the shipper and mock-es")?;
    if !status.success() {
        bail!("building agent-shipper and mock-es failed ({status})");
    }
    Ok(())
}

/// A binary built beside this one (`$MOCK_ES_BIN` for mock-es if set).
fn sibling_binary(name: &str, env: &str) -> Result<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let candidate = exe.with_file_name(name);
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "{name} not found next to {}; build it first with `cargo build --release -p integration --bins`",
        exe.display()
    )
}

/// The last lines a child wrote on stderr, kept while it is drained so the pipe never fills.
#[derive(Clone, Default)]
struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    const LINES: usize = 40;

    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == Self::LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// Reads `reader` line by line into `tail` until EOF; returns how many lines mention
/// WARN or ERROR.
fn drain<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
    tail: Tail,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        let mut warnings = 0;
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("\"WARN\"") || line.contains("\"ERROR\"") {
                warnings += 1;
            }
            tail.push(line);
        }
        warnings
    })
}

/// One GET to mock-es's control API (HTTP/1.1, connection closed after the answer).
async fn get_json<T: serde::de::DeserializeOwned>(addr: &str, path: &str) -> Result<T> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .with_context(|| format!("GET {path}: no answer within 10s"))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: not an HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    serde_json::from_str(body).with_context(|| format!("GET {path}: {body}"))
}

fn sigterm(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// SIGTERM, then SIGKILL if it has not exited within `grace`.
async fn stop(child: &mut Child, grace: Duration) -> Result<std::process::ExitStatus> {
    sigterm(child);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => Ok(status?),
        Err(_) => {
            child.kill().await?;
            Ok(child.wait().await?)
        }
    }
}

/// `VmHWM` of a process in MiB.
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// User + system CPU ticks in one `/proc/<pid>/stat` line: fields 14 (`utime`) and 15
/// (`stime`). The second field, `(comm)`, may hold spaces and parentheses, so fields are
/// counted from its last `)`.
fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // After `)`: state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`), and whether it was
/// measured; 100 (Linux's USER_HZ everywhere this runs) when `getconf` is not there.
fn clock_ticks() -> (f64, bool) {
    let measured = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|hz| *hz > 0.0);
    match measured {
        Some(hz) => (hz, true),
        None => (100.0, false),
    }
}

/// Consumed CPU time (user + system, every thread) of a process, in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

struct MockEsProcess {
    child: Child,
    addr: String,
    stderr: tokio::task::JoinHandle<u64>,
    tail: Tail,
}

async fn start_mock_es() -> Result<MockEsProcess> {
    let binary = sibling_binary("mock-es", "MOCK_ES_BIN")?;
    let mut child = Command::new(&binary)
        .args(["--listen", "127.0.0.1:0", "--track-loadgen", "--api-key"])
        .arg(format!("{API_KEY_ID}:{API_KEY_SECRET}:logs-*"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let tail = Tail::default();
    let stderr = drain(child.stderr.take().context("mock-es stderr")?, tail.clone());
    let mut stdout = BufReader::new(child.stdout.take().context("mock-es stdout")?).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
        .await
        .context("mock-es did not say where it listens within 20s")??
        .context("mock-es exited before listening")?;
    let addr = line
        .strip_prefix("mock-es listening on http://")
        .with_context(|| format!("unexpected first line from mock-es: {line}"))?
        .to_string();
    Ok(MockEsProcess {
        child,
        addr,
        stderr,
        tail,
    })
}

struct ShipperProcess {
    child: Child,
    pid: u32,
    stderr: tokio::task::JoinHandle<u64>,
    tail: Tail,
}

fn shipper_config(cli: &Cli, socket: &Path, es_addr: &str) -> String {
    let mut config = format!(
        "server: unix://{}\n\
         type: elasticsearch\n\
         hosts: [\"http://{es_addr}\"]\n\
         api_key: \"{API_KEY_ID}:{API_KEY_SECRET}\"\n\
         compression_level: {}\n\
         bulk_max_size: {}\n\
         workers: {}\n",
        socket.display(),
        cli.compression_level,
        cli.bulk_max_size,
        cli.workers,
    );
    if cli.mem_queue {
        config.push_str("queue: {mem: {}}\n");
    } else if let Some(durability) = &cli.durability {
        config.push_str(&format!("queue: {{disk: {{durability: {durability}}}}}\n"));
    }
    config
}

async fn start_shipper(cli: &Cli, dir: &Path, es_addr: &str) -> Result<(ShipperProcess, String)> {
    let socket = dir.join("shipper.sock");
    let config = dir.join("shipper.yml");
    std::fs::write(&config, shipper_config(cli, &socket, es_addr))?;
    let binary = integration::shipper_binary()?;
    let mut child = Command::new(&binary)
        .arg("-E")
        .arg(format!("path.data={}", dir.join("data").display()))
        .args(["run", "-c"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = child.id().context("the shipper has no pid")?;
    let mut lines = BufReader::new(child.stderr.take().context("shipper stderr")?).lines();
    let tail = Tail::default();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let ready = line.contains("Producer API listening");
            tail.push(line);
            if ready {
                return true;
            }
        }
        false
    })
    .await;
    if ready != Ok(true) {
        bail!(
            "the shipper's Producer API did not come up within 30s:\n{}",
            tail.lines().join("\n")
        );
    }
    let stderr = drain(lines.into_inner(), tail.clone());
    Ok((
        ShipperProcess {
            child,
            pid,
            stderr,
            tail,
        },
        format!("unix://{}", socket.display()),
    ))
}

/// Milliseconds since the Unix epoch.
fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    build_peers()?;
    // A bar of events indexed in mock-es, on a terminal only; the figures stay on stdout.
    let progress = if cli.quiet {
        Progress::hidden()
    } else {
        Progress::new(cli.events, "e2e-bench: indexed", "events")
    };
    let say = |text: String| {
        if !cli.quiet {
            progress.suspend(|| println!("{text}"));
        }
    };
    let dir = tempfile::Builder::new().prefix("e2e-bench-").tempdir()?;
    let mut mock_es = start_mock_es().await?;
    let (mut shipper, server) = match start_shipper(&cli, dir.path(), &mock_es.addr).await {
        Ok(started) => started,
        Err(err) => {
            let _ = stop(&mut mock_es.child, Duration::from_secs(5)).await;
            return Err(err);
        }
    };
    say(format!(
        "e2e-bench: {} events of {} bytes, {} publisher(s) × batches of {}; shipper pid {} (workers {}, bulk_max_size {}, compression_level {}, {} queue); mock-es pid {} on {}",
        cli.events,
        cli.event_bytes,
        cli.publishers,
        cli.batch,
        shipper.pid,
        cli.workers,
        cli.bulk_max_size,
        cli.compression_level,
        if cli.mem_queue { "memory" } else { "disk" },
        mock_es.child.id().unwrap_or(0),
        mock_es.addr,
    ));

    let mut options = LoadgenOptions::new(&server, "e2e-bench", cli.events);
    options.batch = cli.batch;
    options.event_bytes = cli.event_bytes;
    options.run = RUN.into();
    options.patience = Duration::from_secs(60);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(cli.deadline_secs);
    let self_pid = std::process::id();
    let mock_pid = mock_es.child.id().unwrap_or(0);
    let (hz, hz_measured) = clock_ticks();
    let cpu_at_start = [
        cpu_ticks(self_pid),
        cpu_ticks(shipper.pid),
        cpu_ticks(mock_pid),
    ];
    let started_at = SystemTime::now();
    let started = Instant::now();
    let publishing = {
        let options = options.clone();
        let publishers = cli.publishers;
        tokio::spawn(async move { loadgen::run_concurrent(&options, publishers).await })
    };
    tokio::pin!(publishing);

    // Progress while publishing; then wait for every promised event in mock-es.
    let missing_path = |limit: u64| {
        format!(
            "/_mock/loadgen/{RUN}/missing?upto={}&limit={limit}",
            cli.events
        )
    };
    let mut report = None;
    let mut published_after = None;
    let mut last_progress = Instant::now();
    let mut last_missing: Option<LoadgenMissing>;
    let mut lost = None;
    let mut timed_out = false;
    loop {
        if report.is_none() {
            tokio::select! {
                joined = &mut publishing => {
                    let published = joined.context("loadgen panicked")??;
                    published_after = Some(started.elapsed());
                    say(format!(
                        "published: {} accepted, {} promised in {:.2}s ({:.0} events/s into the queue){}",
                        published.accepted,
                        published.promised.len(),
                        started.elapsed().as_secs_f64(),
                        published.accepted as f64 / started.elapsed().as_secs_f64(),
                        published.refused.as_ref().map(|r| format!("; refused: {r}")).unwrap_or_default(),
                    ));
                    report = Some(published);
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // With every seq promised a count suffices; otherwise the missing seqs are listed.
        let all_promised = report
            .as_ref()
            .is_some_and(|r| r.promised.len() as u64 == cli.events);
        let limit = if report.is_some() && !all_promised {
            cli.events
        } else {
            0
        };
        let missing: LoadgenMissing = get_json(&mock_es.addr, &missing_path(limit)).await?;
        progress.set(missing.distinct);
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            say(format!(
                "{:6.1}s: mock-es indexed {} distinct ({} duplicates)",
                started.elapsed().as_secs_f64(),
                missing.distinct,
                missing.duplicates
            ));
        }
        if let Some(report) = &report {
            let lost_now = if all_promised {
                missing.missing
            } else {
                let never: std::collections::HashSet<u64> = missing.seqs.iter().copied().collect();
                report.promised.iter().filter(|s| never.contains(s)).count() as u64
            };
            lost = Some(lost_now);
            if lost_now == 0 {
                last_missing = Some(missing);
                break;
            }
        }
        last_missing = Some(missing);
        if tokio::time::Instant::now() >= deadline {
            timed_out = true;
            say(format!(
                "deadline of {}s passed before every promised event was indexed",
                cli.deadline_secs
            ));
            break;
        }
    }
    progress.finish();
    let elapsed_wall = started.elapsed();
    let cpu_at_end = [
        cpu_ticks(self_pid),
        cpu_ticks(shipper.pid),
        cpu_ticks(mock_pid),
    ];
    let rss = peak_rss_mb(shipper.pid);
    if report.is_none() {
        publishing.abort();
    }

    let shipper_status = stop(&mut shipper.child, Duration::from_secs(30)).await?;
    let shipper_warnings = shipper.stderr.await.unwrap_or(0);
    let mock_status = stop(&mut mock_es.child, Duration::from_secs(10)).await?;
    let _ = mock_es.stderr.await;
    let final_stats: Option<MockEsStats> = mock_es
        .tail
        .lines()
        .iter()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok());

    let last_indexed_ms = last_missing.as_ref().and_then(|m| m.last_indexed_unix_ms);
    let seconds = match (timed_out, last_indexed_ms) {
        (false, Some(end)) => end.saturating_sub(unix_ms(started_at)) as f64 / 1000.0,
        _ => elapsed_wall.as_secs_f64(),
    }
    .max(1e-3);
    let indexed = final_stats.as_ref().map_or(0, |s| s.indexed);
    let duplicates = final_stats.as_ref().map_or_else(
        || last_missing.as_ref().map_or(0, |m| m.duplicates),
        |s| s.duplicates_indexed,
    );
    let lost = lost.unwrap_or(cli.events);
    // CPU seconds of each process over the run: loadgen (this process), shipper, mock-es.
    let cpu_seconds: Vec<Option<f64>> = cpu_at_start
        .iter()
        .zip(&cpu_at_end)
        .map(|(a, b)| Some(b.as_ref()?.saturating_sub(*a.as_ref()?) as f64 / hz))
        .collect();
    let delivered = cli.events.saturating_sub(lost);
    let per_event = |seconds: Option<f64>| {
        seconds
            .filter(|_| delivered > 0)
            .map(|s| (s * 1e6 / delivered as f64 * 100.0).round() / 100.0)
    };
    if !cli.quiet {
        let names = ["loadgen (this process)", "agent-shipper", "mock-es"];
        let wall = elapsed_wall.as_secs_f64();
        for (i, name) in names.iter().enumerate() {
            if let Some(seconds) = cpu_seconds[i] {
                println!(
                    "cpu {name}: {seconds:.2}s over {wall:.2}s ({:.0}% of one core)",
                    100.0 * seconds / wall
                );
            }
        }
        if let Some(after) = published_after {
            println!(
                "publishing took {:.2}s; last event indexed {:.2}s after the first publish",
                after.as_secs_f64(),
                seconds
            );
        }
        if let Some(stats) = &final_stats {
            println!(
                "mock-es: {} requests, {} items, {} indexed, {} conflicts (409), {} 429, {} 5xx; exit {mock_status}",
                stats.requests,
                stats.bulk_items,
                stats.indexed,
                stats.conflicts_409,
                stats.rejected_429,
                stats.errors_5xx
            );
        }
        println!("shipper: exit {shipper_status}, {shipper_warnings} WARN/ERROR log lines");
        if shipper_warnings > 0 || !shipper_status.success() || timed_out {
            for line in shipper.tail.lines() {
                println!("shipper: {line}");
            }
        }
    }
    if cli.keep {
        let kept = dir.keep();
        if !cli.quiet {
            println!("kept {}", kept.display());
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "events": cli.events,
            "event_bytes": cli.event_bytes,
            "events_per_s": (cli.events as f64 / seconds).round(),
            "lost": lost,
            "indexed": indexed,
            "duplicates_indexed": duplicates,
            "shipper_peak_rss_mb": rss.map(|mb| (mb * 10.0).round() / 10.0),
            "shipper_cpu_us_per_event": per_event(cpu_seconds[1]),
            "mock_es_cpu_us_per_event": per_event(cpu_seconds[2]),
            "loadgen_cpu_us_per_event": per_event(cpu_seconds[0]),
            "publishers": cli.publishers,
            "batch": cli.batch,
            "clk_tck": hz,
            "clk_tck_measured": hz_measured,
        })
    );
    if timed_out || lost > 0 {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_are_utime_plus_stime_whatever_the_command_name() {
        // Fields: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime cutime cstime ...
        let plain =
            "4242 (agent-shipper) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 8 9 20 0 4 0";
        assert_eq!(stat_ticks(plain), Some(1234 + 567));
        // A command name with spaces and parentheses, even one that looks like fields.
        let odd = "7 (a) b (c) 1 2 3) R 1 7 7 0 -1 0 0 0 0 0 10 20 30 40 20 0 1 0";
        assert_eq!(stat_ticks(odd), Some(30));
        assert_eq!(stat_ticks("7 (x) R 1 2"), None, "too few fields");
        assert_eq!(stat_ticks("no parenthesis at all"), None);
        assert_eq!(
            stat_ticks("7 (x) R 1 7 7 0 -1 0 0 0 0 0 ten 20"),
            None,
            "not a number"
        );
    }
}
