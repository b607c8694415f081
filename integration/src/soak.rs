//! The soak with faults (issue 8): steady load through the shipper under mock-agent while
//! mock-es injects faults, the agent rotates the output API key and removes and re-adds an
//! input, and the shipper is SIGKILLed at random; then every promised event is accounted for.
//!
//! Two loadgen publishers (`input-a`, always present, and `input-b`, removed and re-added
//! every other rotation) publish at a steady rate with [`loadgen::run_through_restarts`],
//! which resends what a killed shipper never confirmed. A rotation is a new revision with
//! a new OUTPUT unit and a new API key; the old key is invalidated once the agent has
//! acknowledged the revision (after the old output reported STOPPED). Kill times come
//! from a seeded RNG. At the end the faults stop, the last revision keeps both inputs, the
//! publishers drain, and [`check_delivery`] counts where each promised event went.

use crate::agent::{MockAgent, MockAgentOptions, Revision, UnitSpec};
use crate::loadgen::{self, LoadgenOptions};
use crate::mock_es::{Faults, MockEs, MockEsOptions};
use crate::scenario::{check_delivery, DeliveryCheck};
use agent_shipper::proto::agent::{State, UnitLogLevel, UnitType};
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How to soak.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The `agent-shipper` binary.
    pub shipper_bin: PathBuf,
    /// The shipper's data directory.
    pub data_dir: PathBuf,
    /// How long the faulty phase lasts (the final drain comes after).
    pub duration: Duration,
    /// Seed of the kill schedule and of mock-es's fault dice.
    pub seed: u64,
    /// New events per second and publisher (two publishers).
    pub rate_per_s: u64,
    /// Least time between two key rotations (the next waits for the last's acknowledgement).
    pub rotate_every: Duration,
    /// SIGKILLs come at uniformly random gaps in this range.
    pub kill_gap: (Duration, Duration),
    /// The faults mock-es injects during the faulty phase.
    pub faults: Faults,
    /// How long the final drain may take.
    pub drain_timeout: Duration,
    /// Append the shipper's own log lines here.
    pub shipper_log: Option<PathBuf>,
}

impl SoakOptions {
    /// Defaults: 180 s, 500 events/s per publisher, a rotation every 5 s, a kill every
    /// 5–15 s, 3% 429s, 3% 503s, 1% item 429/5xx, 2% connection resets, 5 ms latency.
    pub fn new(shipper_bin: PathBuf, data_dir: PathBuf, seed: u64) -> Self {
        SoakOptions {
            shipper_bin,
            data_dir,
            duration: Duration::from_secs(180),
            seed,
            rate_per_s: 500,
            rotate_every: Duration::from_secs(5),
            kill_gap: (Duration::from_secs(5), Duration::from_secs(15)),
            faults: Faults {
                request_429_rate: 0.03,
                request_5xx_rate: 0.03,
                item_429_rate: 0.01,
                item_5xx_rate: 0.01,
                reset_rate: 0.02,
                latency_ms: 5,
                ..Faults::default()
            },
            drain_timeout: Duration::from_secs(120),
            shipper_log: None,
        }
    }
}

/// What the soak did and where every promised event went.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    /// Promised, indexed, dead-lettered, duplicates, lost.
    pub delivery: DeliveryCheck,
    /// SIGKILLs sent to a running shipper.
    pub kills: u64,
    /// Faults mock-es injected: resets, 429s and 5xx (requests and items).
    pub faults: u64,
    /// Output API key rotations (revisions after the first).
    pub rotations: u64,
    /// Times `input-b` was removed or added again.
    pub input_changes: u64,
    /// Events loadgen sent again because a killed shipper never confirmed them or never
    /// answered their publish: the only legitimate source of duplicates.
    pub resent: u64,
    /// Of `resent`: events of a publish the shipper never answered.
    pub unanswered: u64,
    /// Events indexed more often than loadgen sent them (`(run, seq, times indexed,
    /// times sent)`, the first few): each is a duplicate the shipper made.
    pub unexplained: Vec<(String, u64, u32, u32)>,
    /// How many events were indexed more often than loadgen sent them.
    pub unexplained_count: u64,
    /// Wall time, faulty phase and final drain.
    pub elapsed: Duration,
}

impl SoakReport {
    /// Events indexed more often than loadgen sent them, matched event by event (a total
    /// of duplicates under the total resent would hide a shipper's duplicate behind a
    /// legitimate resend of another event): each is a shipper bug (an event indexed
    /// under two `_id`s although it was queued once), so the soak fails on any.
    pub fn unexplained_duplicates(&self) -> u64 {
        self.unexplained_count
    }
}

const SOCKET: &str = "shipper.sock";

fn key_id(n: u64) -> String {
    format!("soak-key-{n}")
}

fn key_secret(n: u64) -> String {
    format!("soak-secret-{n}")
}

/// Revision `n`: output `output-n` with key `n`; `input-a`, and `input-b` when `with_b`.
fn revision(n: u64, with_b: bool, options: &SoakOptions, es: &MockEs) -> Revision {
    let server = format!("unix://{}/{SOCKET}", options.data_dir.display());
    let input = |id: &str, stream: &str| UnitSpec {
        id: id.to_string(),
        kind: UnitType::Input,
        config: serde_json::json!({"id": id, "type": "shipper", "server": server, "units": [{"id": stream}]}),
        log_level: UnitLogLevel::Info,
    };
    let mut units = vec![
        UnitSpec {
            id: format!("output-{n}"),
            kind: UnitType::Output,
            config: serde_json::json!({
                "type": "elasticsearch", "hosts": [es.url()],
                "api_key": format!("{}:{}", key_id(n), key_secret(n)),
                "bulk_max_size": 500, "backoff": {"init": "50ms", "max": "1s"},
                "dlq": {"flush_interval": "500ms"},
            }),
            log_level: UnitLogLevel::Info,
        },
        input("input-a", "filestream-a"),
    ];
    if with_b {
        units.push(input("input-b", "filestream-b"));
    }
    Revision { number: n, units }
}

fn publisher(
    options: &SoakOptions,
    stream: &str,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Result<loadgen::RestartReport>> {
    let server = format!("unix://{}/{SOCKET}", options.data_dir.display());
    let mut load = LoadgenOptions::new(&server, stream, u64::MAX);
    load.run = stream.to_string();
    load.dataset = "soak".into();
    load.batch = 100;
    load.rate_per_s = Some(options.rate_per_s);
    load.patience = options.drain_timeout;
    tokio::spawn(async move { loadgen::run_through_restarts(&load, stop).await })
}

/// Runs the soak; the report says what happened. Fails if the harness itself breaks
/// (a revision never acknowledged, a publisher error), not when events are lost or
/// duplicated: the caller reads `report.delivery.lost` and [`SoakReport::unexplained_duplicates`].
pub async fn run(options: &SoakOptions) -> Result<SoakReport> {
    let started = Instant::now();
    let es = MockEs::start(MockEsOptions {
        keep_documents: false,
        seed: options.seed,
        ..MockEsOptions::default()
    })
    .await?;
    let mut agent_options =
        MockAgentOptions::new(options.shipper_bin.clone(), options.data_dir.clone());
    agent_options.restart_delay = Duration::from_millis(300);
    agent_options.shipper_log = options.shipper_log.clone();
    let agent = MockAgent::start(agent_options).await?;
    let result = play(options, &agent, &es, started).await;
    let grace = agent.launch().stop_timeout;
    let stopped = agent.stop(grace).await;
    es.stop().await;
    let report = result?;
    stopped?;
    Ok(report)
}

async fn play(
    options: &SoakOptions,
    agent: &MockAgent,
    es: &MockEs,
    started: Instant,
) -> Result<SoakReport> {
    let mut report = SoakReport::default();
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut kill_gap = || rng.gen_range(options.kill_gap.0..=options.kill_gap.1);
    es.add_api_key(&key_id(1), &key_secret(1), &["logs-*-default"]);
    let mut current = 1u64;
    let mut with_b = true;
    agent.apply(&revision(current, with_b, options, es));
    let units = [
        ("output-1", UnitType::Output),
        ("input-a", UnitType::Input),
        ("input-b", UnitType::Input),
    ];
    agent
        .wait_for_states(Duration::from_secs(30), &units, State::Healthy)
        .await?;
    es.set_faults(options.faults.clone());
    let stop = CancellationToken::new();
    let publishers = [
        publisher(options, "filestream-a", stop.clone()),
        publisher(options, "filestream-b", stop.clone()),
    ];

    let faulty_until = Instant::now() + options.duration;
    let mut next_kill = Instant::now() + kill_gap();
    let mut next_rotation = Instant::now() + options.rotate_every;
    // The revision whose acknowledgement lets the previous key go.
    let mut awaiting_ack: Option<u64> = None;
    let tick = Duration::from_millis(50);
    let max_ticks = (options.duration.as_millis() / tick.as_millis()) as u64 + 10;
    for _ in 0..max_ticks {
        let now = Instant::now();
        if now >= faulty_until {
            break;
        }
        if let Some(n) = awaiting_ack {
            if agent.acknowledged().contains(&n) {
                es.invalidate_api_key(&key_id(n - 1));
                awaiting_ack = None;
            }
        }
        if awaiting_ack.is_none() && now >= next_rotation {
            current += 1;
            es.add_api_key(&key_id(current), &key_secret(current), &["logs-*-default"]);
            // Every other rotation also removes input-b, the next adds it back.
            if current.is_multiple_of(2) {
                with_b = !with_b;
                report.input_changes += 1;
            }
            agent.apply(&revision(current, with_b, options, es));
            report.rotations += 1;
            awaiting_ack = Some(current);
            next_rotation = now + options.rotate_every;
        }
        if now >= next_kill {
            if agent.kill_shipper() {
                report.kills += 1;
            }
            next_kill = now + kill_gap();
        }
        tokio::time::sleep(tick).await;
    }

    // The end: no more faults; a last revision with both inputs, so both publishers can
    // finish; wait for its acknowledgement and retire the previous key.
    es.set_faults(Faults::default());
    if !with_b {
        current += 1;
        es.add_api_key(&key_id(current), &key_secret(current), &["logs-*-default"]);
        agent.apply(&revision(current, true, options, es));
        report.rotations += 1;
        report.input_changes += 1;
    }
    let ack_deadline = Instant::now() + options.drain_timeout;
    let max_polls = options.drain_timeout.as_millis() / 50 + 1;
    for _ in 0..max_polls {
        if agent.acknowledged().contains(&current) || Instant::now() >= ack_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !agent.acknowledged().contains(&current) {
        bail!(
            "revision {current} was not acknowledged within {:?}",
            options.drain_timeout
        );
    }
    if current > 1 {
        es.invalidate_api_key(&key_id(current - 1));
    }
    stop.cancel();
    let mut promised = Vec::new();
    let mut resent_seqs = Vec::new();
    for (publisher, run) in publishers.into_iter().zip(["filestream-a", "filestream-b"]) {
        let published =
            tokio::time::timeout(options.drain_timeout + Duration::from_secs(10), publisher)
                .await
                .with_context(|| format!("publisher {run} did not finish"))?
                .with_context(|| format!("publisher {run} panicked"))??;
        report.resent += published.resent;
        report.unanswered += published.unanswered;
        promised.push((run.to_string(), published.promised.into_iter().collect()));
        resent_seqs.push((run, published.resent_seqs));
    }
    let deadline = Instant::now() + options.drain_timeout;
    let dlq = options.data_dir.join("dlq");
    let max_checks = options.drain_timeout.as_millis() / 250 + 1;
    for _ in 0..max_checks {
        report.delivery = check_delivery(es, &dlq, &promised);
        if report.delivery.lost == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Duplicates event by event: an event sent n times may be indexed at most n times.
    for (run, resent) in &resent_seqs {
        let mut indexed: Vec<(u64, u32)> = es.loadgen_counts(run).into_iter().collect();
        indexed.sort_unstable();
        for (seq, times) in indexed {
            let sent = 1 + resent.get(&seq).copied().unwrap_or(0);
            if times > sent {
                report.unexplained_count += 1;
                if report.unexplained.len() < 10 {
                    report.unexplained.push((run.to_string(), seq, times, sent));
                }
            }
        }
    }
    let stats = es.stats();
    report.faults = stats.resets + stats.rejected_429 + stats.errors_5xx;
    report.elapsed = started.elapsed();
    if report.delivery.promised == 0 {
        bail!("no event was promised: the soak published nothing");
    }
    Ok(report)
}
