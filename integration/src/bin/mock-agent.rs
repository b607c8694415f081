//! `mock-agent`: spawns agent-shipper under a mock Elastic Agent and plays a scenario file.
//!
//! `--agent 8.15` (the default) plays Elastic Agent 8.6–8.15 with a shipper: the command
//! line comes from the component spec (`agent-shipper.spec.yml`), the shipper runs in
//! `<home>/run/shipper-default` with `-E path.data=` that directory, and its Producer
//! socket is in `<home>/tmp`.
//!
//! `--agent 9` plays today's agent, which runs agent-shipper as an input component from
//! `agent-shipper-input.spec.yml`: `--policy FILE` holds the policies to apply in turn
//! (see [`PolicyFile`]); each component runs in `<home>/run/<component id>`.

use anyhow::{Context, Result};
use clap::Parser;
use integration::agent::{AckMode, MockAgent, MockAgentOptions};
use integration::agent9::{Agent9, Agent9Options, Policy};
use integration::scenario::{EsSpec, Scenario};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The policy file of `--agent 9`:
///
/// ```yaml
/// elasticsearch: {api_keys: [{id: k1, key: s1, allowed: ["logs-*-default"]}]}   # optional mock-es
/// enrollment_headers: {}
/// policies:
///   - revision: 1
///     outputs: {default: {type: elasticsearch, hosts: ["{es}"], api_key: "k1:s1"}}
///     inputs: [{id: app, type: agent-shipper, use_output: default, server: "unix://{home}/tmp/app.sock"}]
///     hold: 30s        # how long this policy stays before the next (default 10s)
/// ```
/// `{es}` is the URL of the mock Elasticsearch, `{home}` the agent's home directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    elasticsearch: Option<EsSpec>,
    #[serde(default)]
    enrollment_headers: std::collections::BTreeMap<String, String>,
    policies: Vec<PolicyStep>,
}

/// One policy and how long it stays.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyStep {
    #[serde(default)]
    revision: u64,
    #[serde(default)]
    outputs: std::collections::BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    inputs: Vec<serde_json::Value>,
    #[serde(default)]
    hold: Option<agent_shipper::config::HumanDuration>,
}

impl PolicyStep {
    fn policy(&self) -> Policy {
        Policy {
            revision: self.revision,
            outputs: self.outputs.clone(),
            inputs: self.inputs.clone(),
        }
    }
}

/// Which agent to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Generation {
    /// Elastic Agent 8.6–8.15: a shipper from `agent-shipper.spec.yml`.
    #[value(name = "8.15")]
    V8,
    /// Today's agent (8.16+, 9.x): an input component from `agent-shipper-input.spec.yml`.
    #[value(name = "9")]
    V9,
}

#[derive(Parser)]
#[command(
    name = "mock-agent",
    about = "Play Elastic Agent for agent-shipper: spawn it, send policy revisions, acknowledge them after the stopped units report STOPPED"
)]
struct Cli {
    /// Which Elastic Agent to play.
    #[arg(long, value_enum, default_value = "8.15")]
    agent: Generation,
    /// Scenario file (revisions and steps); `--agent 8.15`.
    #[arg(long, short = 's', required_if_eq("agent", "8.15"))]
    scenario: Option<PathBuf>,
    /// Policy file (policies in turn); `--agent 9`.
    #[arg(long, short = 'p', required_if_eq("agent", "9"))]
    policy: Option<PathBuf>,
    /// The agent-shipper binary (default: next to this binary).
    #[arg(long)]
    shipper: Option<PathBuf>,
    /// The component spec (default: `agent-shipper.spec.yml`, or with `--agent 9`
    /// `agent-shipper-input.spec.yml`, beside the binary, else the repository's).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// The agent's home directory (default: a fresh temporary directory); the shipper's
    /// data is in `<home>/run/shipper-default`.
    #[arg(long)]
    home: Option<PathBuf>,
    /// Acknowledge revisions at once, as the real agent does.
    #[arg(long)]
    ack_immediately: bool,
    /// Relay the shipper's JSON log lines.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    shipper_logs: bool,
    /// Also append the shipper's raw stderr (JSON log lines) to this file, e.g. for `timeline`.
    #[arg(long)]
    shipper_log: Option<PathBuf>,
    /// An extra argument for the shipper (repeatable), after the spec's `command.args`,
    /// e.g. `--shipper-arg=-E --shipper-arg=logging.metrics.period=1s`.
    #[arg(long = "shipper-arg", allow_hyphen_values = true)]
    shipper_args: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if cli.agent == Generation::V9 {
        return run_agent9(cli).await;
    }
    let scenario_path = cli.scenario.clone().context("--scenario is required")?;
    let mut scenario = Scenario::load(&scenario_path)?;
    let es = match &scenario.elasticsearch {
        Some(spec) => Some(spec.start().await?),
        None => None,
    };
    scenario.es_url = es.as_ref().map(|es| es.url());
    let shipper = match cli.shipper {
        Some(path) => path,
        None => integration::shipper_binary()?,
    };
    let temp = tempfile::Builder::new()
        .prefix("shipper-demo")
        .tempdir()
        .context("creating a data directory")?;
    let home = cli.home.unwrap_or_else(|| temp.path().to_path_buf());
    let mut options = MockAgentOptions::in_home(shipper, &home);
    if let Some(spec) = cli.spec {
        options.spec = spec;
    }
    let data = options.data_dir.clone();
    options.enrollment_headers = scenario.enrollment_headers.clone();
    options.echo_shipper_logs = cli.shipper_logs;
    options.shipper_log = cli.shipper_log;
    options.shipper_args = cli.shipper_args;
    if cli.ack_immediately {
        options.ack_mode = AckMode::Immediately;
    }
    let agent = MockAgent::start(options).await?;
    let played = scenario.play(&agent, &data, es.as_ref()).await;
    let stop_timeout = agent.launch().stop_timeout;
    let exit = agent.stop(stop_timeout).await;
    if let Some(es) = es {
        es.stop().await;
    }
    played?;
    tracing::info!(target: "mock_agent", "scenario complete; shipper exit: {:?}", exit?);
    Ok(())
}

/// Events published on each policy's first input under `--agent 9` (with a mock
/// Elasticsearch), checked at the end: every one indexed once, "lost 0".
const EVENTS_PER_POLICY: u64 = 2_000;

/// `--agent 9`: applies each policy of the file in turn, holding each as long as it says,
/// then stops the agent (SIGTERM to every component).
async fn run_agent9(cli: Cli) -> Result<()> {
    let path = cli
        .policy
        .clone()
        .context("--policy is required with --agent 9")?;
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: PolicyFile =
        serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let es = match &file.elasticsearch {
        Some(spec) => Some(spec.start().await?),
        None => None,
    };
    let shipper = match cli.shipper {
        Some(path) => path,
        None => integration::shipper_binary()?,
    };
    let temp = tempfile::Builder::new()
        .prefix("shipper-agent9")
        .tempdir()
        .context("creating a home directory")?;
    let home = cli.home.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(home.join("tmp"))
        .with_context(|| format!("creating {}/tmp", home.display()))?;
    let mut options = Agent9Options::new(shipper, &home);
    if let Some(spec) = cli.spec {
        options.spec = spec;
    }
    options.enrollment_headers = file.enrollment_headers.clone();
    options.echo_shipper_logs = cli.shipper_logs;
    options.shipper_args = cli.shipper_args;
    options.ack_mode = if cli.ack_immediately {
        AckMode::Immediately
    } else {
        AckMode::AfterStopped
    };
    tracing::info!(target: "mock_agent", home = %home.display(), spec = %options.spec.display(), "playing Elastic Agent 9");
    let agent = Agent9::new(options)?;
    let es_url = es.as_ref().map(|es| es.url()).unwrap_or_default();
    let mut played = Ok(());
    let mut promised: Vec<(String, Vec<u64>)> = Vec::new();
    for step in &file.policies {
        let policy = substitute(&step.policy(), &home, &es_url)?;
        if let Err(err) = agent.apply(&policy).await {
            played = Err(err);
            break;
        }
        let hold = step.hold.map_or(Duration::from_secs(10), |h| h.get());
        tracing::info!(target: "mock_agent", revision = policy.revision, components = ?agent.component_ids(), "policy applied; holding it for {hold:?}");
        // With a mock Elasticsearch, each policy's first input gets events to deliver.
        let publish = async {
            let Some(input) = policy.inputs.first().filter(|_| es.is_some()) else {
                return Ok(());
            };
            let (Some(id), Some(server)) = (
                input.get("id").and_then(|v| v.as_str()),
                input.get("server").and_then(|v| v.as_str()),
            ) else {
                return Ok(());
            };
            let run = format!("rev{}", policy.revision);
            let mut options =
                integration::loadgen::LoadgenOptions::new(server, id, EVENTS_PER_POLICY);
            options.run = run.clone();
            options.batch = 100;
            // The component may still be starting (or replacing the one before it).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let report = loop {
                match integration::loadgen::run(&options).await {
                    Ok(report) => break report,
                    Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            tracing::info!(target: "mock_agent", revision = policy.revision, accepted = report.accepted, "published on input {id}");
            promised.push((run, report.promised));
            anyhow::Ok(())
        };
        let (published, ()) = tokio::join!(publish, tokio::time::sleep(hold));
        if let Err(err) = published {
            played = Err(err);
            break;
        }
    }
    if let (Some(es), true) = (&es, played.is_ok()) {
        let dlq = home.join("run").join("agent-shipper.state").join("dlq");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let check = loop {
            let check = integration::scenario::check_delivery(es, &dlq, &promised);
            if check.lost == 0 || tokio::time::Instant::now() >= deadline {
                break check;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        tracing::info!(
            target: "mock_agent",
            "delivery check: promised {}, indexed {}, dead-lettered {} {:?}, duplicates {}, lost {}",
            check.promised, check.indexed, check.dead_lettered, check.reasons, check.duplicates, check.lost
        );
        if check.lost > 0 {
            played = Err(anyhow::anyhow!("{} promised events were lost", check.lost));
        }
    }
    for (id, exit) in agent.stop().await {
        tracing::info!(target: "mock_agent", component = %id, "stopped: {exit:?}");
    }
    if let Some(es) = es {
        es.stop().await;
    }
    played
}

/// The policy with `{home}` and `{es}` replaced in every string.
fn substitute(policy: &Policy, home: &Path, es_url: &str) -> Result<Policy> {
    fn walk(value: &mut serde_json::Value, home: &str, es: &str) {
        match value {
            serde_json::Value::String(s) => *s = s.replace("{home}", home).replace("{es}", es),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| walk(v, home, es)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| walk(v, home, es)),
            _ => {}
        }
    }
    let home = home.display().to_string();
    let mut policy = policy.clone();
    for value in policy.outputs.values_mut().chain(policy.inputs.iter_mut()) {
        walk(value, &home, es_url);
    }
    Ok(policy)
}
