//! `mock-agent`: spawns agent-shipper under a mock Elastic Agent and plays a scenario file.
//!
//! It plays the real agent's layout: the command line comes from the component spec
//! (`agent-shipper.spec.yml`), the shipper runs in `<home>/run/shipper-default` with
//! `-E path.data=` that directory, and its Producer socket is in `<home>/tmp`.

use anyhow::{Context, Result};
use clap::Parser;
use integration::agent::{AckMode, MockAgent, MockAgentOptions};
use integration::scenario::Scenario;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "mock-agent",
    about = "Play Elastic Agent for agent-shipper: spawn it, send policy revisions, acknowledge them after the stopped units report STOPPED"
)]
struct Cli {
    /// Scenario file (revisions and steps).
    #[arg(long, short = 's')]
    scenario: PathBuf,
    /// The agent-shipper binary (default: next to this binary).
    #[arg(long)]
    shipper: Option<PathBuf>,
    /// The component spec (default: `agent-shipper.spec.yml` beside the binary, else the
    /// repository's).
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
    let mut scenario = Scenario::load(&cli.scenario)?;
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
