//! Shared set-up for the end-to-end tests: a mock agent running the real binary in a
//! temporary directory, and policy building blocks.
#![allow(dead_code)]

use agent_shipper::proto::agent::{State, UnitLogLevel, UnitType};
use integration::agent::{AgentEvent, MockAgent, MockAgentOptions, Revision, UnitSpec};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Generous bound for anything a test waits on; CI machines are slow and shared.
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Harness {
    pub agent: MockAgent,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(configure: impl FnOnce(&mut MockAgentOptions)) -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("shp")
            .tempdir()
            .expect("tempdir");
        let mut options = MockAgentOptions::new(
            integration::shipper_binary().expect("shipper binary"),
            dir.path().to_path_buf(),
        );
        options.restart_delay = Duration::from_millis(500);
        configure(&mut options);
        let agent = MockAgent::start(options).await.expect("mock agent starts");
        Harness { agent, dir }
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> String {
        format!("unix://{}/shipper.sock", self.data().display())
    }

    pub fn output_file(&self) -> PathBuf {
        self.data().join("out").join("events.ndjson")
    }

    pub fn output_unit(&self) -> UnitSpec {
        output_unit(json!({"type": "file", "path": self.output_file()}))
    }

    pub fn input_unit(&self, unit_id: &str, input_id: &str) -> UnitSpec {
        UnitSpec {
            id: unit_id.into(),
            kind: UnitType::Input,
            config: json!({"id": unit_id, "type": "shipper", "server": self.socket(), "units": [{"id": input_id}]}),
            log_level: UnitLogLevel::Info,
        }
    }

    /// Shipper log lines seen so far.
    pub fn shipper_logs(&self) -> Vec<String> {
        self.agent
            .history()
            .into_iter()
            .filter_map(|e| match e {
                AgentEvent::ShipperLog(line) => Some(line),
                _ => None,
            })
            .collect()
    }

    /// Position of the first event matching `predicate` in the agent's history.
    pub fn position(&self, predicate: impl Fn(&AgentEvent) -> bool) -> Option<usize> {
        self.agent.history().iter().position(predicate)
    }

    /// SIGTERM, then SIGKILL after the spec's `timeouts.stop`, as the agent does.
    pub async fn stop(self) -> AgentEvent {
        let grace = self.agent.launch().stop_timeout;
        self.agent
            .stop(grace)
            .await
            .expect("shipper exits after SIGTERM")
    }
}

pub fn output_unit(config: serde_json::Value) -> UnitSpec {
    UnitSpec {
        id: "output-default".into(),
        kind: UnitType::Output,
        config,
        log_level: UnitLogLevel::Info,
    }
}

pub fn revision(number: u64, units: Vec<UnitSpec>) -> Revision {
    Revision { number, units }
}

pub fn observed_state(id: &str, state: State) -> impl Fn(&AgentEvent) -> bool + '_ {
    move |event| matches!(event, AgentEvent::UnitObserved { id: observed, state: s, .. } if observed == id && *s == state)
}
