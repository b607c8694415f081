//! Spawning, watching and restarting the shipper process, and counting missed check-ins.

use super::{lock, AgentEvent, Launch, MockAgentOptions, Shared};
use agent_shipper::proto::agent::State;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Sends `signal` to the running shipper; false when none runs.
pub(crate) fn signal(shared: &Shared, signal: nix::sys::signal::Signal) -> bool {
    match *lock(&shared.pid) {
        Some(pid) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).is_ok(),
        None => false,
    }
}

/// Runs the shipper, relays its stderr, and restarts it after a crash until `stop`.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    options: MockAgentOptions,
    launch: Launch,
    startup: Vec<u8>,
    stop: CancellationToken,
) {
    let mut log_file = match &options.shipper_log {
        Some(path) => match tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
        {
            Ok(file) => Some(tokio::io::BufWriter::new(file)),
            Err(err) => {
                tracing::warn!(target: "mock_agent", path = %path.display(), error = %err, "cannot open the shipper log file; not writing it");
                None
            }
        },
        None => None,
    };
    loop {
        let mut child = match Command::new(&launch.program)
            .args(&launch.args)
            .current_dir(&launch.cwd)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(err) => {
                tracing::error!(target: "mock_agent", bin = %options.shipper_bin.display(), error = %err, "cannot spawn the shipper");
                shared.emit(AgentEvent::ShipperExited {
                    code: None,
                    signal: None,
                });
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        lock(&shared.core).process_restarted();
        *lock(&shared.pid) = Some(pid);
        *lock(&shared.last_checkin) = Some(Instant::now());
        shared.emit(AgentEvent::ShipperStarted { pid });
        if let Some(mut stdin) = child.stdin.take() {
            // One StartUpInfo, no length prefix, then EOF.
            if let Err(err) = stdin.write_all(&startup).await {
                tracing::warn!(target: "mock_agent", error = %err, "writing StartUpInfo failed");
            }
        }
        let stderr = child.stderr.take();
        let relay = async {
            if let Some(stderr) = stderr {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(file) = log_file.as_mut() {
                        let written = file.write_all(line.as_bytes()).await;
                        if written.and(file.write_all(b"\n").await).is_err() {
                            tracing::warn!(target: "mock_agent", "writing the shipper log file failed; not writing it any more");
                            log_file = None;
                        }
                    }
                    shared.emit(AgentEvent::ShipperLog(line));
                }
            }
            if let Some(file) = log_file.as_mut() {
                let _ = file.flush().await;
            }
        };
        let (_, status) = tokio::join!(relay, child.wait());
        *lock(&shared.pid) = None;
        let (code, signal) = match status {
            Ok(status) => (status.code(), status.signal()),
            Err(_) => (None, None),
        };
        shared.emit(AgentEvent::ShipperExited { code, signal });
        if stop.is_cancelled() || !options.restart_on_exit {
            return;
        }
        tracing::info!(target: "mock_agent", delay_s = options.restart_delay.as_secs_f32(), "restarting the shipper");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(options.restart_delay) => {}
        }
    }
}

/// Counts periods without a check-in: 1–2 → DEGRADED, 3 → FAILED and SIGKILL.
pub(crate) async fn watch_checkins(shared: Arc<Shared>, period: Duration, stop: CancellationToken) {
    let mut reported = 0u32;
    let mut tick = tokio::time::interval(period / 10);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(last) = *lock(&shared.last_checkin) else {
            continue;
        };
        if lock(&shared.pid).is_none() {
            reported = 0;
            continue;
        }
        let misses = (last.elapsed().as_nanos() / period.as_nanos().max(1)) as u32;
        if misses == reported {
            continue;
        }
        if misses < reported {
            reported = misses;
            continue;
        }
        reported = misses;
        let state = if misses >= 3 {
            State::Failed
        } else {
            State::Degraded
        };
        shared.emit(AgentEvent::ComponentHealth { misses, state });
        if misses >= 3 {
            tracing::warn!(target: "mock_agent", "3 check-ins missed: killing the shipper");
            signal(&shared, nix::sys::signal::Signal::SIGKILL);
            *lock(&shared.last_checkin) = Some(Instant::now());
        }
    }
}
