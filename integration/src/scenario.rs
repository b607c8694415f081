//! Scenario files: policy revisions plus the steps the mock agent plays, in YAML.
//!
//! ```yaml
//! revisions:
//!   - revision: 1
//!     units:
//!       - {id: output-default, type: output, config: {type: file, path: "{data}/out/events.ndjson"}}
//!       - {id: input-a, type: input, config: {id: input-a, type: shipper, server: "unix://{data}/a.sock", units: [{id: filestream-a}]}}
//! steps:
//!   - apply: 1
//!   - wait_healthy: 30s
//!   - publish: {server: "unix://{data}/a.sock", input_id: filestream-a, events: 1000}
//!   - apply: 2
//!   - wait_acknowledged: {revision: 2, timeout: 60s}
//! ```
//! `{data}` in any string is replaced by the shipper's data directory.

use crate::agent::{AgentEvent, MockAgent, Revision, UnitSpec};
use crate::loadgen::{self, LoadgenOptions};
use agent_shipper::config::HumanDuration;
use agent_shipper::proto::agent::{State, UnitLogLevel, UnitType};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

/// A parsed scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Policy revisions by number.
    pub revisions: Vec<RevisionSpec>,
    /// What to do, in order.
    pub steps: Vec<Step>,
}

/// One revision in a scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevisionSpec {
    /// Its number.
    pub revision: u64,
    /// Its units.
    pub units: Vec<UnitEntry>,
}

/// One unit in a scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitEntry {
    /// Unit id.
    pub id: String,
    /// `input` or `output`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The unit's source block.
    pub config: serde_json::Value,
    /// `error`, `warn`, `info` (default), `debug` or `trace`.
    #[serde(default)]
    pub log_level: Option<String>,
}

/// Publish step settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishStep {
    /// Producer API address.
    pub server: String,
    /// `source.input_id`.
    pub input_id: String,
    /// How many events.
    pub events: u64,
    /// Wait until the shipper says every event is persisted (default true).
    #[serde(default = "yes")]
    pub wait_persisted: bool,
}

fn yes() -> bool {
    true
}

/// Wait-for-ack step settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckStep {
    /// The revision.
    pub revision: u64,
    /// How long to wait at most.
    pub timeout: HumanDuration,
}

/// One scenario step.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Apply the revision with this number.
    Apply(u64),
    /// Wait until every expected unit is observed HEALTHY.
    WaitHealthy(HumanDuration),
    /// Publish events with loadgen and wait until they are persisted.
    Publish(PublishStep),
    /// Wait until a revision is acknowledged.
    WaitAcknowledged(AckStep),
}

fn substitute(value: &mut serde_json::Value, data: &str) {
    match value {
        serde_json::Value::String(text) => *text = text.replace("{data}", data),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, data)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| substitute(v, data)),
        _ => {}
    }
}

fn log_level(name: Option<&str>) -> Result<UnitLogLevel> {
    Ok(match name.unwrap_or("info") {
        "error" => UnitLogLevel::Error,
        "warn" => UnitLogLevel::Warn,
        "info" => UnitLogLevel::Info,
        "debug" => UnitLogLevel::Debug,
        "trace" => UnitLogLevel::Trace,
        other => bail!("unknown log_level `{other}`"),
    })
}

impl Scenario {
    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        // Through JSON values, so steps are plain maps (`- apply: 1`) rather than YAML tags.
        let value: serde_json::Value = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("parsing scenario {}", path.display()))?;
        serde_json::from_value(value)
            .with_context(|| format!("invalid scenario {}", path.display()))
    }

    /// The revision with this number, with `{data}` substituted.
    pub fn revision(&self, number: u64, data: &Path) -> Result<Revision> {
        let spec = self
            .revisions
            .iter()
            .find(|r| r.revision == number)
            .with_context(|| format!("the scenario has no revision {number}"))?;
        let data = data.display().to_string();
        let units = spec
            .units
            .iter()
            .map(|unit| {
                let kind = match unit.kind.as_str() {
                    "input" => UnitType::Input,
                    "output" => UnitType::Output,
                    other => bail!(
                        "unit {}: type must be input or output, not `{other}`",
                        unit.id
                    ),
                };
                let mut config = unit.config.clone();
                substitute(&mut config, &data);
                Ok(UnitSpec {
                    id: unit.id.clone(),
                    kind,
                    config,
                    log_level: log_level(unit.log_level.as_deref())?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Revision { number, units })
    }

    /// Plays every step against `agent`.
    pub async fn play(&self, agent: &MockAgent, data: &Path) -> Result<()> {
        let mut current: Option<Revision> = None;
        for step in &self.steps {
            match step {
                Step::Apply(number) => {
                    let revision = self.revision(*number, data)?;
                    agent.apply(&revision);
                    current = Some(revision);
                }
                Step::WaitHealthy(timeout) => {
                    let revision = current.as_ref().context("wait_healthy before any apply")?;
                    let units: Vec<(&str, UnitType)> = revision
                        .units
                        .iter()
                        .map(|u| (u.id.as_str(), u.kind))
                        .collect();
                    agent
                        .wait_for_states(timeout.get(), &units, State::Healthy)
                        .await?;
                    tracing::info!(target: "mock_agent", "all units of revision {} are HEALTHY", revision.number);
                }
                Step::Publish(publish) => {
                    let mut options = LoadgenOptions::new(
                        &publish
                            .server
                            .replace("{data}", &data.display().to_string()),
                        &publish.input_id,
                        publish.events,
                    );
                    options.run = publish.input_id.clone();
                    options.wait_persisted = publish.wait_persisted;
                    let report = loadgen::run(&options).await?;
                    tracing::info!(
                        target: "loadgen",
                        "published {} events as {}: accepted {}, persisted index {}, promised {}",
                        publish.events, publish.input_id, report.accepted, report.persisted_index, report.promised.len()
                    );
                }
                Step::WaitAcknowledged(ack) => {
                    let revision = ack.revision;
                    agent
                        .wait_for(
                            ack.timeout.get(),
                            &format!("acknowledgement of revision {revision}"),
                            |e| *e == AgentEvent::RevisionAcknowledged(revision),
                        )
                        .await?;
                }
            }
        }
        Ok(())
    }
}
