//! End-to-end: SIGKILL the shipper at random moments while loadgen publishes; every event
//! the shipper confirmed persisted must reach the output.

mod common;

use agent_shipper::proto::agent::{State, UnitType};
use common::{revision, Harness, WAIT};
use integration::agent::AgentEvent;
use integration::loadgen::{self, LoadgenOptions};
use std::time::Duration;

/// A small deterministic generator for the kill schedule; the seed is printed so a failing
/// schedule can be replayed.
struct Schedule(u64);

impl Schedule {
    fn next_delay(&mut self) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Duration::from_millis(30 + (self.0 >> 33) % 300)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_persisted_event_survives_twenty_sigkills() {
    const KILLS: usize = 20;
    let h = Harness::start(|options| options.restart_delay = Duration::from_millis(100)).await;
    let output = common::output_unit(serde_json::json!({
        "type": "file", "path": h.output_file(), "rotate_every_bytes": "1GiB"
    }));
    h.agent.apply(&revision(
        1,
        vec![output, h.input_unit("input-a", "filestream-a")],
    ));
    h.agent
        .wait_for_states(WAIT, &[("input-a", UnitType::Input)], State::Healthy)
        .await
        .unwrap();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill schedule seed: {seed}");
    let mut schedule = Schedule(seed);
    let mut options = LoadgenOptions::new(&h.socket(), "filestream-a", 0);
    options.run = "crash".into();
    options.batch = 200;
    options.patience = Duration::from_secs(60);
    let stop = tokio_util::sync::CancellationToken::new();
    let publisher = {
        let stop = stop.clone();
        tokio::spawn(async move { loadgen::run_through_restarts(&options, stop).await })
    };

    let started = std::time::Instant::now();
    for kill in 1..=KILLS {
        tokio::time::sleep(schedule.next_delay()).await;
        let before = h
            .agent
            .history()
            .iter()
            .filter(|e| matches!(e, AgentEvent::ShipperStarted { .. }))
            .count();
        assert!(h.agent.kill_shipper(), "kill {kill}: no shipper running");
        h.agent
            .wait_for_count(WAIT, "restart after SIGKILL", before + 1, |e| {
                matches!(e, AgentEvent::ShipperStarted { .. })
            })
            .await
            .unwrap();
        h.agent
            .wait_for_states(WAIT, &[("input-a", UnitType::Input)], State::Healthy)
            .await
            .unwrap();
    }
    stop.cancel();
    let report = tokio::time::timeout(Duration::from_secs(90), publisher)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    eprintln!(
        "{KILLS} kills in {:.1} s: {} events promised, {} resent, {} server runs, {} failed connects",
        started.elapsed().as_secs_f64(),
        report.promised.len(),
        report.resent,
        report.server_runs,
        report.failed_connects
    );
    assert!(
        report.server_runs >= KILLS / 2,
        "loadgen published across the restarts ({} runs)",
        report.server_runs
    );
    assert!(
        report.promised.len() > 1_000,
        "a real load: {}",
        report.promised.len()
    );

    let promised: Vec<u64> = report.promised.iter().copied().collect();
    let counts = loadgen::wait_for_seqs_in_files(
        &[h.output_file()],
        "crash",
        &promised,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let lost: Vec<u64> = promised
        .iter()
        .filter(|seq| !counts.contains_key(seq))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} persisted events lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    h.stop().await;
}
