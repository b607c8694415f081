//! End-to-end: the real binary under the mock agent, through unit life cycles.

mod common;

use agent_shipper::proto::agent::{State, UnitLogLevel, UnitType};
use common::{observed_state, revision, Harness, WAIT};
use integration::agent::AgentEvent;
use integration::loadgen::{self, LoadgenOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_reach_healthy_and_every_published_event_is_written() {
    let h = Harness::start(|_| {}).await;
    h.agent.apply(&revision(
        1,
        vec![h.output_unit(), h.input_unit("input-a", "filestream-a")],
    ));
    h.agent
        .wait_for_states(
            WAIT,
            &[
                ("output-default", UnitType::Output),
                ("input-a", UnitType::Input),
            ],
            State::Healthy,
        )
        .await
        .unwrap();

    let mut options = LoadgenOptions::new(&h.socket(), "filestream-a", 10_000);
    options.run = "ten-thousand".into();
    let report = loadgen::run(&options).await.unwrap();
    assert_eq!(report.accepted, 10_000);
    assert_eq!(
        report.promised.len(),
        10_000,
        "every accepted event is promised once written"
    );

    let counts =
        loadgen::wait_for_seqs_in_files(&[h.output_file()], "ten-thousand", &report.promised, WAIT)
            .await
            .unwrap();
    let missing: Vec<u64> = (0..10_000)
        .filter(|seq| !counts.contains_key(seq))
        .collect();
    let doubled: Vec<u64> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(seq, _)| *seq)
        .collect();
    assert!(
        missing.is_empty(),
        "{} events missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(doubled.is_empty(), "events written twice: {doubled:?}");

    let exit = h.stop().await;
    assert_eq!(
        exit,
        AgentEvent::ShipperExited {
            code: Some(0),
            signal: None
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_input_drains_before_stopped_and_the_revision_is_acknowledged_after() {
    let h = Harness::start(|_| {}).await;
    // Block the output: a file where its directory should be. Events pile up in the queue.
    std::fs::write(h.data().join("out"), b"not a directory").unwrap();
    h.agent.apply(&revision(
        1,
        vec![
            h.output_unit(),
            h.input_unit("input-a", "filestream-a"),
            h.input_unit("input-b", "filestream-b"),
        ],
    ));
    h.agent
        .wait_for_states(
            WAIT,
            &[("input-a", UnitType::Input), ("input-b", UnitType::Input)],
            State::Healthy,
        )
        .await
        .unwrap();
    let mut options = LoadgenOptions::new(&h.socket(), "filestream-b", 2_000);
    options.run = "b".into();
    options.wait_persisted = false;
    let report = loadgen::run(&options).await.unwrap();
    assert_eq!(report.accepted, 2_000);
    h.agent
        .wait_for(
            WAIT,
            "output DEGRADED",
            observed_state("output-default", State::Degraded),
        )
        .await
        .unwrap();

    // What the output file holds at the instant the agent first sees input-b STOPPED.
    let output_file = h.output_file();
    let at_stopped = h
        .agent
        .probe_when_stopped("input-b", UnitType::Input, move || {
            loadgen::count_seqs_in_files(&[output_file], "b").map_err(|err| err.to_string())
        });
    h.agent.apply(&revision(
        2,
        vec![h.output_unit(), h.input_unit("input-a", "filestream-a")],
    ));
    h.agent
        .wait_for(
            WAIT,
            "input-b STOPPING",
            observed_state("input-b", State::Stopping),
        )
        .await
        .unwrap();
    let stopping = h.agent.observed("input-b", UnitType::Input).unwrap();
    assert!(
        stopping.message.contains("draining 2000"),
        "{}",
        stopping.message
    );
    assert_eq!(stopping.payload.unwrap()["pending_events"], 2000);
    assert!(
        !h.agent.acknowledged().contains(&2),
        "no acknowledgement while events are pending"
    );

    // New events from the stopping input are refused with a clear reason.
    let mut late = LoadgenOptions::new(&h.socket(), "filestream-b", 10);
    late.run = "late".into();
    let refused = loadgen::run(&late).await.unwrap();
    assert_eq!(refused.accepted, 0);
    assert!(
        refused.refused.as_deref().unwrap_or("").contains("input-b"),
        "{:?}",
        refused.refused
    );

    // Unblock: the drain completes, then STOPPED, then the acknowledgement.
    std::fs::remove_file(h.data().join("out")).unwrap();
    h.agent
        .wait_for(WAIT, "revision 2 acknowledged", |e| {
            *e == AgentEvent::RevisionAcknowledged(2)
        })
        .await
        .unwrap();
    let stopping_at = h
        .position(observed_state("input-b", State::Stopping))
        .unwrap();
    let stopped_at = h
        .position(observed_state("input-b", State::Stopped))
        .expect("STOPPED observed");
    let acked_at = h
        .position(|e| *e == AgentEvent::RevisionAcknowledged(2))
        .unwrap();
    assert!(
        stopping_at < stopped_at && stopped_at < acked_at,
        "order: {stopping_at} < {stopped_at} < {acked_at}"
    );

    // Written before STOPPED: counted at the instant STOPPED arrived, not afterwards.
    let written_at_stopped = tokio::time::timeout(WAIT, at_stopped)
        .await
        .expect("the STOPPED probe ran")
        .expect("the probe answered")
        .expect("the output file is readable");
    let missing: Vec<u64> = (0..2_000)
        .filter(|seq| !written_at_stopped.contains_key(seq))
        .collect();
    assert!(
        missing.is_empty(),
        "input-b reported STOPPED with {} of its events not yet written, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let counts = loadgen::count_seqs_in_files(&[h.output_file()], "b").unwrap();
    assert_eq!(counts.len(), 2_000);
    assert!(counts.values().all(|n| *n == 1));
    // The shipper logged the transitions with the pending count.
    let logs = h.shipper_logs();
    assert!(logs.iter().any(|l| l.contains(r#""to":"STOPPING""#)
        && l.contains(r#""pending_events":2000"#)
        && l.contains("input-b")));
    assert!(logs
        .iter()
        .any(|l| l.contains(r#""to":"STOPPED""#) && l.contains("input-b")));
    // And the agent forgot the unit once it reported STOPPED.
    assert!(!h.agent.is_expected("input-b", UnitType::Input));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_fails_the_unit_with_the_key_in_the_message() {
    let h = Harness::start(|_| {}).await;
    let bad = common::output_unit(serde_json::json!({
        "type": "file", "path": h.output_file(), "queue": {"mem": {"events": 0}}
    }));
    h.agent.apply(&revision(1, vec![bad]));
    h.agent
        .wait_for(
            WAIT,
            "output FAILED",
            observed_state("output-default", State::Failed),
        )
        .await
        .unwrap();
    let failed = h
        .agent
        .observed("output-default", UnitType::Output)
        .unwrap();
    assert!(
        failed.message.contains("queue.mem.events"),
        "{}",
        failed.message
    );

    // A corrected config brings it back.
    h.agent.apply(&revision(2, vec![h.output_unit()]));
    h.agent
        .wait_for_states(
            WAIT,
            &[("output-default", UnitType::Output)],
            State::Healthy,
        )
        .await
        .unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_change_applies_without_restart() {
    let h = Harness::start(|_| {}).await;
    h.agent.apply(&revision(
        1,
        vec![h.output_unit(), h.input_unit("input-a", "filestream-a")],
    ));
    h.agent
        .wait_for_states(WAIT, &[("input-a", UnitType::Input)], State::Healthy)
        .await
        .unwrap();
    let is_debug = |e: &AgentEvent| matches!(e, AgentEvent::ShipperLog(line) if line.contains(r#""log.level":"debug""#));
    assert!(h.position(is_debug).is_none(), "INFO by default");
    let pid = h.agent.shipper_pid();

    assert!(h
        .agent
        .set_log_level("output-default", UnitType::Output, UnitLogLevel::Debug));
    h.agent
        .wait_for(
            WAIT,
            "log level change logged",
            |e| matches!(e, AgentEvent::ShipperLog(l) if l.contains("log level changed")),
        )
        .await
        .unwrap();
    let mut options = LoadgenOptions::new(&h.socket(), "filestream-a", 10);
    options.run = "debug".into();
    loadgen::run(&options).await.unwrap();
    h.agent
        .wait_for(WAIT, "a DEBUG line", is_debug)
        .await
        .unwrap();
    assert_eq!(h.agent.shipper_pid(), pid, "same process");
    let starts = h
        .agent
        .history()
        .iter()
        .filter(|e| matches!(e, AgentEvent::ShipperStarted { .. }))
        .count();
    assert_eq!(starts, 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_stream_reconnects_and_units_stay_healthy() {
    let h = Harness::start(|_| {}).await;
    h.agent.apply(&revision(
        1,
        vec![h.output_unit(), h.input_unit("input-a", "filestream-a")],
    ));
    h.agent
        .wait_for_states(WAIT, &[("input-a", UnitType::Input)], State::Healthy)
        .await
        .unwrap();
    assert!(h.agent.drop_stream());
    h.agent
        .wait_for(
            WAIT,
            "reconnect",
            |e| matches!(e, AgentEvent::ShipperLog(l) if l.contains("reconnecting")),
        )
        .await
        .unwrap();
    h.agent
        .wait_for_count(WAIT, "a second CheckinV2 stream", 2, |e| {
            *e == AgentEvent::StreamOpened
        })
        .await
        .unwrap();
    h.agent
        .wait_for_states(
            WAIT,
            &[
                ("output-default", UnitType::Output),
                ("input-a", UnitType::Input),
            ],
            State::Healthy,
        )
        .await
        .unwrap();
    // The units never left HEALTHY: only one HEALTHY observation each, no restart.
    let healthy_reports = h
        .agent
        .history()
        .iter()
        .filter(|e| observed_state("input-a", State::Healthy)(e))
        .count();
    assert_eq!(healthy_reports, 1);
    // Events still flow.
    let report = loadgen::run(&LoadgenOptions::new(&h.socket(), "filestream-a", 100))
        .await
        .unwrap();
    assert_eq!(report.promised.len(), 100);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_shipper_is_restarted_and_reconfigured() {
    let h = Harness::start(|_| {}).await;
    h.agent.apply(&revision(
        1,
        vec![h.output_unit(), h.input_unit("input-a", "filestream-a")],
    ));
    h.agent
        .wait_for_states(WAIT, &[("input-a", UnitType::Input)], State::Healthy)
        .await
        .unwrap();
    let first = h.agent.shipper_pid();
    assert!(h.agent.kill_shipper());
    h.agent
        .wait_for(
            WAIT,
            "restart",
            |e| matches!(e, AgentEvent::ShipperStarted { pid } if Some(*pid) != first),
        )
        .await
        .unwrap();
    // The new process reports no idx, so the agent sends every config again.
    h.agent
        .wait_for_states(
            WAIT,
            &[
                ("output-default", UnitType::Output),
                ("input-a", UnitType::Input),
            ],
            State::Healthy,
        )
        .await
        .unwrap();
    let report = loadgen::run(&LoadgenOptions::new(&h.socket(), "filestream-a", 100))
        .await
        .unwrap();
    assert_eq!(report.promised.len(), 100);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_checkins_degrade_then_fail_and_kill_the_component() {
    // A shortened clock on both sides: check-ins every 200 ms, a miss per idle second.
    let h = Harness::start(|options| {
        options.miss_period = Duration::from_secs(1);
        options.shipper_args = vec!["-E".into(), "control.checkin_interval=200ms".into()];
    })
    .await;
    h.agent.apply(&revision(1, vec![h.output_unit()]));
    h.agent
        .wait_for_states(
            WAIT,
            &[("output-default", UnitType::Output)],
            State::Healthy,
        )
        .await
        .unwrap();
    // Three idle seconds of regular check-ins: no period is missed.
    let before = h.agent.checkin_times().len();
    h.agent
        .wait_for_count(WAIT, "15 idle check-ins", before + 15, |e| {
            *e == AgentEvent::CheckinReceived
        })
        .await
        .unwrap();
    let is_health = |e: &AgentEvent| matches!(e, AgentEvent::ComponentHealth { .. });
    assert!(
        h.position(is_health).is_none(),
        "a regularly checking-in shipper is never counted as missing"
    );

    let pid = h.agent.shipper_pid().unwrap();
    // A frozen process cannot check in.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    h.agent
        .wait_for(WAIT, "DEGRADED", |e| {
            matches!(
                e,
                AgentEvent::ComponentHealth {
                    state: State::Degraded,
                    ..
                }
            )
        })
        .await
        .unwrap();
    h.agent
        .wait_for(WAIT, "FAILED", |e| {
            matches!(
                e,
                AgentEvent::ComponentHealth {
                    misses: 3,
                    state: State::Failed
                }
            )
        })
        .await
        .unwrap();
    h.agent
        .wait_for(WAIT, "killed", |e| {
            matches!(
                e,
                AgentEvent::ShipperExited {
                    signal: Some(9),
                    ..
                }
            )
        })
        .await
        .unwrap();
    h.agent
        .wait_for(
            WAIT,
            "restarted",
            |e| matches!(e, AgentEvent::ShipperStarted { pid: p } if *p != pid),
        )
        .await
        .unwrap();
    h.agent
        .wait_for_states(
            WAIT,
            &[("output-default", UnitType::Output)],
            State::Healthy,
        )
        .await
        .unwrap();
    h.stop().await;
}

/// Real time: the shipper's interval is 20 s and the agent allows 30 s, so this waits for
/// two idle check-ins (about 40 s) and checks no gap exceeds 25 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_unit_checks_in_at_least_every_25_seconds() {
    let h = Harness::start(|_| {}).await;
    h.agent.apply(&revision(1, vec![h.output_unit()]));
    h.agent
        .wait_for_states(
            WAIT,
            &[("output-default", UnitType::Output)],
            State::Healthy,
        )
        .await
        .unwrap();
    let settled = std::time::Instant::now();
    let before = h.agent.checkin_times().len();
    h.agent
        .wait_for_count(
            Duration::from_secs(70),
            "two idle check-ins",
            before + 2,
            |e| *e == AgentEvent::CheckinReceived,
        )
        .await
        .unwrap();
    let idle: Vec<_> = h
        .agent
        .checkin_times()
        .into_iter()
        .filter(|t| *t > settled)
        .collect();
    let mut previous = settled;
    for at in idle {
        let gap = at - previous;
        assert!(
            gap <= Duration::from_secs(25),
            "gap of {gap:?} between check-ins"
        );
        previous = at;
    }
    assert!(
        h.position(|e| matches!(e, AgentEvent::ComponentHealth { .. }))
            .is_none(),
        "no missed period"
    );
    h.stop().await;
}

/// Regression: an input's open PersistedIndex stream must not keep its listener (and so
/// the supervisor) from stopping when the input unit is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_input_with_an_open_persisted_index_stream_does_not_hang() {
    let h = Harness::start(|_| {}).await;
    let rev1 = vec![h.output_unit(), h.input_unit("input-a", "filestream-a")];
    h.agent.apply(&revision(1, rev1.clone()));
    h.agent
        .wait_for_states(WAIT, &[("input-a", UnitType::Input)], State::Healthy)
        .await
        .unwrap();
    let mut client = loadgen::connect(&h.socket()).await.unwrap();
    let request = agent_shipper::proto::shipper::PersistedIndexRequest {
        polling_interval: Some(prost_types::Duration {
            seconds: 0,
            nanos: 50_000_000,
        }),
    };
    let mut stream = client.persisted_index(request).await.unwrap().into_inner();
    assert!(
        stream.message().await.unwrap().is_some(),
        "first answer at once"
    );

    h.agent.apply(&revision(2, vec![h.output_unit()]));
    h.agent
        .wait_for(WAIT, "revision 2 acknowledged", |e| {
            *e == AgentEvent::RevisionAcknowledged(2)
        })
        .await
        .unwrap();
    // The stream is closed by the shipper rather than left hanging.
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await;
    assert!(
        end.is_ok(),
        "the PersistedIndex stream stayed open after its input was removed"
    );
    // The supervisor still answers: the input can be added back.
    h.agent.apply(&revision(3, rev1));
    h.agent
        .wait_for_states(WAIT, &[("input-a", UnitType::Input)], State::Healthy)
        .await
        .unwrap();
    let report = loadgen::run(&LoadgenOptions::new(&h.socket(), "filestream-a", 10))
        .await
        .unwrap();
    assert_eq!(report.promised.len(), 10);
    h.stop().await;
}

/// `2006-01-02T15:04:05.000Z0700`, the layout Elastic Agent parses `@timestamp` with:
/// exactly three fraction digits, then `Z` or a `+hhmm`/`-hhmm` offset.
fn is_agent_timestamp(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range.clone())
            .is_some_and(|s| s.len() == range.len() && s.iter().all(u8::is_ascii_digit))
    };
    let zone = &b.get(23..).unwrap_or_default();
    digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && b.get(10) == Some(&b'T')
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19)
        && b.get(19) == Some(&b'.')
        && digits(20..23)
        && (*zone == b"Z"
            || (zone.len() == 5
                && (zone[0] == b'+' || zone[0] == b'-')
                && zone[1..].iter().all(u8::is_ascii_digit)))
}

#[test]
fn agent_timestamp_layout_check_is_strict() {
    assert!(is_agent_timestamp("2026-12-01T11:20:00.123Z"));
    assert!(is_agent_timestamp("2026-12-01T11:20:00.123+0100"));
    for bad in [
        "2026-12-01T11:20:00.123456Z",
        "2026-12-01T11:20:00Z",
        "2026-12-01T11:20:00.123+01:00",
        "2026-12-01 11:20:00.123Z",
        "2026-12-01T11:20:00.123",
    ] {
        assert!(!is_agent_timestamp(bad), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stderr_line_of_a_demo_run_is_what_the_agent_parses() {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/demo.yml");
    let scenario = integration::scenario::Scenario::load(&demo).unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let log_file = log_dir.path().join("shipper.log");
    let h = Harness::start(|options| {
        // As Elastic's shipper spec: the level until the units say otherwise.
        options.shipper_args = [
            "-E",
            "logging.level=info",
            "-E",
            "logging.metrics.period=1s",
        ]
        .map(String::from)
        .to_vec();
        // Every stderr line, as it came, up to the exit after SIGTERM.
        options.shipper_log = Some(log_file.clone());
    })
    .await;
    scenario.play(&h.agent, h.data(), None).await.unwrap();
    // A per-unit level: input-a at debug, so debug lines are part of the run.
    assert!(h
        .agent
        .set_log_level("input-a", UnitType::Input, UnitLogLevel::Debug));
    // Publish only once the level is applied, or the debug lines may never come.
    h.agent
        .wait_for(
            WAIT,
            "log level change logged",
            |e| matches!(e, AgentEvent::ShipperLog(l) if l.contains("log level changed")),
        )
        .await
        .unwrap();
    let mut options = LoadgenOptions::new(&h.socket(), "filestream-a", 10);
    options.run = "debug".into();
    loadgen::run(&options).await.unwrap();
    h.agent
        .wait_for(
            WAIT,
            "a debug line",
            |e| matches!(e, AgentEvent::ShipperLog(l) if l.contains(r#""log.level":"debug""#)),
        )
        .await
        .unwrap();
    let exit = h.stop().await;
    assert_eq!(
        exit,
        AgentEvent::ShipperExited {
            code: Some(0),
            signal: None
        }
    );
    let text = std::fs::read_to_string(&log_file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("stop requested")),
        "the log goes on to the stop: {text}"
    );

    const ZAP_LEVELS: &[&str] = &["debug", "info", "warn", "error", "dpanic", "panic", "fatal"];
    let mut unit_lines = 0;
    let mut levels = std::collections::BTreeSet::new();
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
        let at = value["@timestamp"].as_str().unwrap_or_default();
        assert!(is_agent_timestamp(at), "@timestamp {at:?}: {line}");
        let level = value["log.level"].as_str().unwrap_or_default();
        assert!(ZAP_LEVELS.contains(&level), "log.level {level:?}: {line}");
        levels.insert(level.to_string());
        assert!(value["message"].is_string(), "no message: {line}");
        assert_eq!(value["ecs.version"], "1.6.0", "{line}");
        assert!(value["log.logger"].is_string(), "{line}");
        let about_a_unit = value["log.logger"] == "agent_shipper::unit"
            || value["message"] == "unit state changed";
        if about_a_unit {
            unit_lines += 1;
            assert!(
                value["unit.id"].as_str().is_some_and(|id| !id.is_empty()),
                "a unit line without unit.id: {line}"
            );
            assert!(
                matches!(value["unit.type"].as_str(), Some("input" | "output")),
                "{line}"
            );
        }
    }
    assert!(unit_lines >= 6, "{lines:#?}");
    assert!(
        levels.contains("info") && levels.contains("debug"),
        "{levels:?}"
    );
    // Revision 2 removed input-b: its drain and STOPPED are unit lines naming it.
    assert!(lines
        .iter()
        .any(|l| l.contains(r#""to":"STOPPED""#) && l.contains(r#""unit.id":"input-b""#)));
}
