//! Scenario files: policy revisions plus the steps the mock agent plays, in YAML.
//!
//! ```yaml
//! revisions:
//!   - revision: 1
//!     units:
//!       - {id: output-default, type: output, config: {type: file, path: "{data}/out/events.ndjson"}}
//!       - {id: input-a, type: input, config: {id: input-a, type: shipper, units: [{id: filestream-a}]}}
//! steps:
//!   - apply: 1
//!   - wait_healthy: 30s
//!   - publish: {input_id: filestream-a, events: 1000}
//!   - apply: 2
//!   - wait_acknowledged: {revision: 2, timeout: 60s}
//! ```
//! `{data}` in any string is replaced by the shipper's data directory, and `{es}` by the
//! URL of the scenario's mock Elasticsearch (top-level `elasticsearch:` with `api_keys`
//! and `faults`), which `mock-agent` starts in-process. Steps beyond the above:
//! `es_faults: {...}` (change the injected faults), `invalidate_api_key: ID` (what Fleet
//! does with the old key once a revision is acknowledged), `kill` (SIGKILL the shipper;
//! the agent restarts it), `wait_delivered: 60s` (every promised event indexed once or in
//! the DLQ; logs the count of lost events).
//!
//! Units are written as the policy has them; the mock agent wires them as the real agent
//! does (see [`crate::agent`]): an output block loses `enabled`, `shipper` and `log_level`
//! and gains the top-level `enrollment_headers`; an INPUT unit without `server` gets the
//! agent's Producer socket and its own certificate pair. `publish` connects as Beats does:
//! to the `server` of the INPUT unit that lists its `input_id` (unless the step names one),
//! in plaintext unless that unit's `ssl.enabled` is true.

use crate::agent::{AgentEvent, MockAgent, Revision, UnitSpec};
use crate::loadgen::{self, LoadgenOptions};
use crate::mock_es::{Faults, MockEs};
use agent_shipper::config::HumanDuration;
use agent_shipper::proto::agent::{State, UnitLogLevel, UnitType};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// A parsed scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Policy revisions by number.
    pub revisions: Vec<RevisionSpec>,
    /// What to do, in order.
    pub steps: Vec<Step>,
    /// The URL substituted for `{es}` (set by the player once mock-es runs).
    #[serde(skip)]
    pub es_url: Option<String>,
    /// A mock Elasticsearch to start for the scenario.
    #[serde(default)]
    pub elasticsearch: Option<EsSpec>,
    /// Headers the agent was enrolled with (added to Elasticsearch output blocks).
    #[serde(default)]
    pub enrollment_headers: std::collections::BTreeMap<String, String>,
}

/// The scenario's mock Elasticsearch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EsSpec {
    /// API keys it accepts.
    #[serde(default)]
    pub api_keys: Vec<ApiKeySpec>,
    /// Faults injected from the start.
    #[serde(default)]
    pub faults: Faults,
}

/// One API key of the mock Elasticsearch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    /// Key id.
    pub id: String,
    /// The secret part.
    pub key: String,
    /// Data-stream patterns it may write to.
    pub allowed: Vec<String>,
}

impl EsSpec {
    /// Starts the mock Elasticsearch this spec describes, on 127.0.0.1.
    pub async fn start(&self) -> Result<MockEs> {
        let es = MockEs::start(crate::mock_es::MockEsOptions {
            keep_documents: false,
            ..Default::default()
        })
        .await?;
        for key in &self.api_keys {
            let allowed: Vec<&str> = key.allowed.iter().map(String::as_str).collect();
            es.add_api_key(&key.id, &key.key, &allowed);
        }
        es.set_faults(self.faults.clone());
        tracing::info!(target: "mock_es", "mock Elasticsearch listening on {}", es.url());
        Ok(es)
    }
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
    /// Producer API address (default: the `server` the agent gave the INPUT unit that
    /// lists `input_id`).
    #[serde(default)]
    pub server: Option<String>,
    /// `source.input_id`.
    pub input_id: String,
    /// How many events.
    pub events: u64,
    /// Wait until the shipper says every event is persisted (default true).
    #[serde(default = "yes")]
    pub wait_persisted: bool,
    /// `data_stream.dataset` (default `loadgen`).
    #[serde(default)]
    pub dataset: Option<String>,
    /// Run label in the events (default: the input id); distinct runs number their
    /// events apart.
    #[serde(default)]
    pub run: Option<String>,
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
    /// Change the mock Elasticsearch's injected faults.
    EsFaults(Faults),
    /// Invalidate an API key in the mock Elasticsearch (Fleet, after an acknowledgement).
    InvalidateApiKey(String),
    /// SIGKILL the shipper; the agent restarts it and sends every unit config again.
    Kill,
    /// Wait until every promised event is indexed or dead-lettered; log what was lost.
    WaitDelivered(HumanDuration),
    /// Right after an `apply`: wait for a unit to be observed STOPPED and log how long the
    /// drain took, its throughput, and the time from Elasticsearch's last answer to the
    /// agent seeing STOPPED.
    MeasureStop(MeasureStopStep),
    /// Publish and time until every event is indexed (the output's normal throughput).
    TimedPublish(PublishStep),
}

/// Measure-stop step settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureStopStep {
    /// The unit id.
    pub unit: String,
    /// How long to wait at most.
    pub timeout: HumanDuration,
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn substitute(value: &mut serde_json::Value, data: &str, es: &str) {
    match value {
        serde_json::Value::String(text) => *text = text.replace("{data}", data).replace("{es}", es),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, data, es)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| substitute(v, data, es)),
        _ => {}
    }
}

/// What became of the promised events, by loadgen run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryCheck {
    /// Events the shipper said were persisted.
    pub promised: u64,
    /// Of those, indexed in the mock Elasticsearch.
    pub indexed: u64,
    /// Of those, in the dead letter queue (and not indexed).
    pub dead_lettered: u64,
    /// Of those, nowhere.
    pub lost: u64,
    /// Indexed more than once.
    pub duplicates: u64,
    /// The dead-lettered ones by the DLQ entry's reason: its `error_type`, or `status N`
    /// when Elasticsearch answered (`403` → `status 403`). A test compares this with
    /// the reasons its settings promise (`input_removed`, `drain_timeout`, …).
    pub reasons: BTreeMap<String, u64>,
}

/// How a DLQ entry's reason is counted in [`DeliveryCheck::reasons`].
fn reason_label(reason: &agent_shipper::dlq::Reason) -> String {
    match reason.status {
        Some(status) => format!("status {status}"),
        None => reason.error_type.clone(),
    }
}

/// The loadgen `(run, seq)` of every dead-lettered event under `dlq_dir`.
pub fn dead_lettered_seqs(dlq_dir: &Path) -> HashSet<(String, u64)> {
    dead_lettered_reasons(dlq_dir).into_keys().collect()
}

/// The loadgen `(run, seq)` of every dead-lettered event under `dlq_dir`, with the
/// reason it was dead-lettered for (see [`DeliveryCheck::reasons`]).
pub fn dead_lettered_reasons(dlq_dir: &Path) -> HashMap<(String, u64), String> {
    use agent_shipper::proto::shipper::messages::value::Kind;
    use prost::Message;
    let mut seqs = HashMap::new();
    let mut reader = agent_shipper::dlq::DlqReader::new(dlq_dir);
    for _ in 0..100_000 {
        let Ok(Some((_, entries))) = reader.next_segment() else {
            break;
        };
        for (_, entry) in entries {
            let Ok(event) =
                agent_shipper::proto::shipper::messages::Event::decode(entry.event.as_ref())
            else {
                continue;
            };
            let Some(Kind::StructValue(tag)) = event
                .fields
                .as_ref()
                .and_then(|f| f.data.get("loadgen"))
                .and_then(|v| v.kind.clone())
            else {
                continue;
            };
            let run = match tag.data.get("run").and_then(|v| v.kind.clone()) {
                Some(Kind::StringValue(run)) => run,
                _ => continue,
            };
            if let Some(Kind::Uint64Value(seq)) = tag.data.get("seq").and_then(|v| v.kind.clone()) {
                seqs.insert((run, seq), reason_label(&entry.reason));
            }
        }
    }
    seqs
}

/// Counts, for every `(run, promised seqs)`, where the events are now.
pub fn check_delivery(
    es: &MockEs,
    dlq_dir: &Path,
    promised: &[(String, Vec<u64>)],
) -> DeliveryCheck {
    let dead = dead_lettered_reasons(dlq_dir);
    let mut check = DeliveryCheck::default();
    for (run, seqs) in promised {
        let counts = es.loadgen_counts(run);
        check.duplicates += counts.values().filter(|n| **n > 1).count() as u64;
        for seq in seqs {
            check.promised += 1;
            if counts.contains_key(seq) {
                check.indexed += 1;
            } else if let Some(reason) = dead.get(&(run.clone(), *seq)) {
                check.dead_lettered += 1;
                *check.reasons.entry(reason.clone()).or_default() += 1;
            } else {
                check.lost += 1;
            }
        }
    }
    check
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

/// Where and how a Beat publishing as `publish.input_id` connects: the `server` of the
/// INPUT unit (as the agent wired it) that lists the input, over TLS only when that unit's
/// `ssl.enabled` is true (Beats' rule in `libbeat/outputs/shipper`), presenting the unit's
/// own pair. The server name checked is the unit id, the one name in the agent's pair (a
/// Beat dialing a unix socket would ask for `localhost`; the agent never enables TLS).
fn beats_connection(
    agent: &MockAgent,
    current: Option<&Revision>,
    publish: &PublishStep,
) -> Result<(String, Option<tonic::transport::ClientTlsConfig>)> {
    let unit = current.and_then(|revision| {
        revision.units.iter().find(|unit| {
            unit.kind == UnitType::Input
                && unit.config["units"]
                    .as_array()
                    .is_some_and(|units| units.iter().any(|u| u["id"] == *publish.input_id))
        })
    });
    let config = unit.and_then(|unit| agent.expected_config(&unit.id, UnitType::Input));
    let server = match (&publish.server, &config) {
        (Some(server), _) => server.clone(),
        (None, Some(config)) => config["server"]
            .as_str()
            .context("the INPUT unit has no server")?
            .to_string(),
        (None, None) => bail!(
            "publish as {}: no INPUT unit of the current revision lists it; name a `server`",
            publish.input_id
        ),
    };
    let (Some(unit), Some(config)) = (unit, config) else {
        return Ok((server, None));
    };
    let ssl = &config["ssl"];
    if ssl["enabled"] != serde_json::Value::Bool(true) {
        return Ok((server, None));
    }
    let pem = |key: &str| ssl[key].as_str().map(str::to_owned);
    let (Some(ca), Some(cert), Some(key)) = (
        ssl["certificate_authorities"][0].as_str(),
        pem("certificate"),
        pem("key"),
    ) else {
        bail!("unit {}: ssl.enabled without a CA and a pair", unit.id);
    };
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .identity(tonic::transport::Identity::from_pem(cert, key))
        .domain_name(unit.id.clone());
    Ok((server, Some(tls)))
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
        let es = self.es_url.clone().unwrap_or_default();
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
                substitute(&mut config, &data, &es);
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

    /// Plays every step against `agent`, with `es` as the scenario's Elasticsearch.
    pub async fn play(&self, agent: &MockAgent, data: &Path, es: Option<&MockEs>) -> Result<()> {
        let mut current: Option<Revision> = None;
        let mut promised: Vec<(String, Vec<u64>)> = Vec::new();
        let need_es = |step: &str| {
            es.with_context(|| format!("`{step}` needs `elasticsearch:` in the scenario"))
        };
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
                Step::Publish(publish) | Step::TimedPublish(publish) => {
                    let timed = matches!(step, Step::TimedPublish(_));
                    let started = std::time::Instant::now();
                    let (server, tls) = beats_connection(agent, current.as_ref(), publish)?;
                    let server = server.replace("{data}", &data.display().to_string());
                    let mut options =
                        LoadgenOptions::new(&server, &publish.input_id, publish.events);
                    options.tls = tls;
                    options.run = publish
                        .run
                        .clone()
                        .unwrap_or_else(|| publish.input_id.clone());
                    options.wait_persisted = publish.wait_persisted;
                    if let Some(dataset) = &publish.dataset {
                        options.dataset = dataset.clone();
                    }
                    let report = loadgen::run(&options).await?;
                    promised.push((options.run.clone(), report.promised.clone()));
                    if timed {
                        let es = need_es("timed_publish")?;
                        let deadline =
                            tokio::time::Instant::now() + std::time::Duration::from_secs(120);
                        while (es.loadgen_counts(&options.run).len() as u64)
                            < report.promised.len() as u64
                        {
                            if tokio::time::Instant::now() > deadline {
                                bail!("timed_publish: events not indexed within 120s");
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        }
                        let secs = started.elapsed().as_secs_f64();
                        tracing::info!(
                            target: "mock_agent",
                            "normal throughput: {} events published and indexed in {:.2}s = {:.0} events/s",
                            report.promised.len(), secs, report.promised.len() as f64 / secs
                        );
                    }
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
                Step::EsFaults(faults) => {
                    need_es("es_faults")?.set_faults(faults.clone());
                    tracing::info!(target: "mock_es", "faults now {faults:?}");
                }
                Step::InvalidateApiKey(id) => {
                    need_es("invalidate_api_key")?.invalidate_api_key(id);
                    tracing::info!(target: "fleet", "api key {id} invalidated in Elasticsearch");
                }
                Step::MeasureStop(measure) => {
                    let es = need_es("measure_stop")?;
                    let unit = measure.unit.clone();
                    let started = std::time::Instant::now();
                    let stopping = agent
                        .wait_for(measure.timeout.get(), &format!("{unit} STOPPING"), |e| {
                            matches!(e, AgentEvent::UnitObserved { id, state: State::Stopping, .. } if *id == unit)
                        })
                        .await?;
                    agent
                        .wait_for(measure.timeout.get(), &format!("{unit} STOPPED"), |e| {
                            matches!(e, AgentEvent::UnitObserved { id, state: State::Stopped, .. } if *id == unit)
                        })
                        .await?;
                    let observed_us = unix_us();
                    let drain = started.elapsed().as_secs_f64();
                    let pending: u64 = match stopping {
                        AgentEvent::UnitObserved { message, .. } => message
                            .split_whitespace()
                            .find_map(|w| w.parse().ok())
                            .unwrap_or(0),
                        _ => 0,
                    };
                    let last_answer = es
                        .requests()
                        .iter()
                        .filter(|r| r.status == 200 && r.answered_at_us <= observed_us)
                        .map(|r| r.answered_at_us)
                        .max()
                        .unwrap_or(0);
                    tracing::info!(
                        target: "mock_agent",
                        "drain of {unit}: {pending} events in {drain:.2}s = {:.0} events/s; last bulk answer to STOPPED seen by the agent: {:.1} ms",
                        pending as f64 / drain,
                        observed_us.saturating_sub(last_answer) as f64 / 1000.0
                    );
                }
                Step::Kill => {
                    agent.kill_shipper();
                    tracing::info!(target: "mock_agent", "shipper SIGKILLed; it will be restarted");
                }
                Step::WaitDelivered(timeout) => {
                    let es = need_es("wait_delivered")?;
                    let dlq = data.join("dlq");
                    let deadline = tokio::time::Instant::now() + timeout.get();
                    let check = loop {
                        let check = check_delivery(es, &dlq, &promised);
                        if check.lost == 0 || tokio::time::Instant::now() >= deadline {
                            break check;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    };
                    tracing::info!(
                        target: "mock_agent",
                        "delivery check: promised {}, indexed {}, dead-lettered {} {:?}, duplicates {}, lost {}",
                        check.promised, check.indexed, check.dead_lettered, check.reasons, check.duplicates, check.lost
                    );
                    if check.lost > 0 {
                        bail!("{} promised events were lost", check.lost);
                    }
                }
            }
        }
        Ok(())
    }
}
