//! The `agent-shipper` binary: managed mode (spawned by Elastic Agent) or `run -c FILE`.

use agent_shipper::config::{HumanDuration, ProcessSettings, StandaloneConfig};
use agent_shipper::control::{read_startup_info, ControlClient};
use agent_shipper::dlq;
use agent_shipper::logging::{self, LogFormat};
use agent_shipper::metrics::{self, http::MonitoringServer, SnapshotRequest, StatsWatch};
use agent_shipper::server::client::ClientTlsFiles;
use agent_shipper::server::ServerAddress;
use agent_shipper::storage::ComponentEnv;
use agent_shipper::supervisor::{Pipeline, Supervisor, SupervisorCommand};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "agent-shipper",
    version,
    about = "Event shipper for Elastic Agent: Producer API in, queue, output out",
    long_about = "Event shipper for Elastic Agent: inputs publish over the shipper Producer API (gRPC); \
events are queued and sent to the output.\n\n\
MODES\n\
  managed (default, no subcommand)\n\
      Elastic Agent spawns the binary and writes one StartUpInfo message to stdin. The shipper \
connects back over mTLS and follows the V2 control protocol: the OUTPUT unit configures the \
output and queue, each INPUT unit opens the Producer API where its `server` key says. A unit \
the agent expects STOPPED reports STOPPING, drains its queued events, then STOPPED.\n\
  standalone: agent-shipper run -c shipper.yml\n\
      No agent. The YAML file holds the output unit's keys plus `server`, e.g.\n\
          server: unix:///tmp/shipper.sock\n\
          type: file\n\
          path: ./out/events.ndjson\n\
          queue: {disk: {max_size: 4GiB}}\n\n\
TOOLS\n\
  agent-shipper dlq stats|list|replay|purge   inspect and replay the dead letter queue\n\n\
Logs are ECS JSON lines on stderr, as Elastic Agent reads them (--log-format text for \
people). -E takes Beats' keys (logging.level, http.enabled, http.host, http.port, path.data, \
...); a key the shipper does not use is a warning. SIGTERM stops accepting, delivers what \
is queued for up to 20 s, and exits 0."
)]
struct Cli {
    /// Beats-style setting override, e.g. `-E path.data=/var/lib/shipper` (repeatable).
    #[arg(short = 'E', value_name = "KEY=VALUE", global = true)]
    overrides: Vec<String>,

    /// Log line format on stderr.
    #[arg(long, value_enum, default_value = "json", global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run without Elastic Agent, configured from a YAML file.
    Run {
        /// The config file: the output unit's keys plus `server`.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
    /// Inspect, replay or empty the dead letter queue (works while the shipper runs).
    Dlq {
        /// The DLQ directory. Default: `<path.data>/dlq`, or `<path.state>/<component>/dlq`.
        #[arg(long, value_name = "DIR", global = true)]
        path: Option<PathBuf>,
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// Entries, segments and bytes on disk, as one JSON object.
    Stats,
    /// Entries as JSON lines, oldest first (only sealed segments; the head is sealed
    /// every `dlq.flush_interval`).
    List {
        /// Only entries whose error type or message contains this.
        #[arg(long)]
        reason: Option<String>,
        /// Only entries of this data stream, e.g. `logs-app-default`.
        #[arg(long)]
        data_stream: Option<String>,
        /// Only entries dead-lettered at least this long ago (`90s`, `30m`, `12h`, `7d`).
        #[arg(long)]
        older_than: Option<HumanDuration>,
        /// Only entries dead-lettered at most this long ago.
        #[arg(long)]
        newer_than: Option<HumanDuration>,
    },
    /// Publish every entry back through a running shipper's Producer API, then remove it.
    Replay {
        /// The shipper's Producer API: `unix:///path` or `host:port`.
        #[arg(long)]
        server: String,
        /// Publish under this input id instead of the original one (for removed inputs).
        #[arg(long)]
        input_id: Option<String>,
        /// For a shipper whose input has `ssl.enabled: true` (mutual TLS): the CA of its
        /// certificate. Without these options, replay connects in plaintext.
        #[arg(long, value_name = "FILE", requires_all = ["ssl_cert", "ssl_key"])]
        ssl_ca: Option<PathBuf>,
        /// The client certificate to present (PEM).
        #[arg(long, value_name = "FILE", requires_all = ["ssl_ca", "ssl_key"])]
        ssl_cert: Option<PathBuf>,
        /// The client certificate's key (PEM).
        #[arg(long, value_name = "FILE", requires_all = ["ssl_ca", "ssl_cert"])]
        ssl_key: Option<PathBuf>,
        /// The name the shipper's certificate must hold, sent as SNI: the INPUT unit id
        /// picks that unit's certificate when several share the server.
        #[arg(long, value_name = "NAME", default_value = "localhost")]
        ssl_server_name: String,
    },
    /// Delete every entry.
    Purge,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Settings first, so `logging.level` applies from the first line; what they have to
    // say (ignored keys, deprecated names, a bad value) is logged once logging runs.
    let settings = ProcessSettings::from_overrides(cli.overrides.iter().map(String::as_str));
    let level = settings
        .as_ref()
        .map(|settings| settings.log_level)
        .unwrap_or_default();
    let log_control = logging::init(cli.log_format, level);
    if let Ok(settings) = &settings {
        settings.log_warnings();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = settings.context("bad -E override").and_then(|settings| {
        if let Some(dir) = &settings.data_path {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create path.data {}", dir.display()))?;
        }
        match cli.command {
            None => runtime.block_on(managed(settings, log_control)),
            Some(Command::Run { config }) => runtime.block_on(standalone(settings, config)),
            Some(Command::Dlq { path, action }) => {
                let dir = path.unwrap_or_else(|| {
                    settings.storage_layout(&ComponentEnv::from_env()).dlq_dir()
                });
                runtime.block_on(dlq_command(&dir, action))
            }
        }
    });
    // Stray tasks must not hold the exit hostage.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "agent-shipper exiting");
            ExitCode::FAILURE
        }
    }
}

async fn managed(settings: ProcessSettings, log_control: logging::LogControl) -> Result<()> {
    let info = tokio::task::spawn_blocking(read_startup_info)
        .await
        .context("stdin reader failed")?
        .context("managed mode")?;
    tracing::info!(addr = %info.addr, server_name = %info.server_name, "StartUpInfo received; connecting to Elastic Agent");
    let shutdown = CancellationToken::new();
    let (supervisor, link) = Supervisor::new(
        Pipeline::new(false, settings.storage_layout(&ComponentEnv::from_env())),
        Some(log_control),
    );
    let commands = link.commands.clone();
    let observability = Observability::start(
        &settings,
        Box::new(move |reply| {
            commands
                .try_send(SupervisorCommand::Snapshot(reply))
                .is_ok()
        }),
    )
    .await?;
    let supervisor = tokio::spawn(supervisor.run(shutdown.clone()));
    let control = ControlClient::new(info, link, shutdown.clone())
        .with_checkin_interval(settings.checkin_interval)
        .with_stats(observability.stats.clone());
    let control = tokio::spawn(control.run());
    let outcome = tokio::select! {
        signal = terminate_signal() => {
            tracing::info!(signal, "stop requested; delivering what is queued");
            Ok(())
        }
        result = control => match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(anyhow::Error::new(err).context("control protocol")),
            Err(err) => Err(anyhow::anyhow!("control task failed: {err}")),
        },
    };
    shutdown.cancel();
    let pipeline = supervisor.await.context("supervisor task failed")?;
    let timeout = if outcome.is_ok() {
        settings.shutdown_timeout
    } else {
        Duration::from_secs(2)
    };
    pipeline.shutdown(timeout).await;
    observability.stop().await;
    outcome
}

async fn standalone(settings: ProcessSettings, path: PathBuf) -> Result<()> {
    let config = StandaloneConfig::load(&path).context("standalone mode")?;
    let address = ServerAddress::parse(&config.server)
        .map_err(|reason| anyhow::anyhow!("invalid config key `server`: {reason}"))
        .with_context(|| format!("standalone mode: {}", path.display()))?;
    let mut pipeline = Pipeline::new(true, settings.storage_layout(&ComponentEnv::from_env()));
    // Two standalone shippers on one directory would corrupt each other's queue: an
    // error, as Beats' "data path already locked by another beat".
    pipeline
        .lock_storage()
        .map_err(|err| anyhow::anyhow!(err.in_use_message()))?;
    let (ask, mut asked) = tokio::sync::mpsc::channel::<SnapshotRequest>(4);
    let observability = Observability::start(
        &settings,
        Box::new(move |reply| ask.try_send(reply).is_ok()),
    )
    .await?;
    for warning in &config.warnings {
        warning.log(None);
    }
    pipeline.start_adoption();
    pipeline
        .configure_output("standalone", 0, 0, config.output)
        .await
        .map_err(anyhow::Error::msg)?;
    pipeline
        .listen(&address)
        .await
        .map_err(anyhow::Error::msg)?;
    tracing::info!(config = %path.display(), %address, "running standalone");
    let signal = terminate_signal();
    tokio::pin!(signal);
    let signal = loop {
        tokio::select! {
            signal = &mut signal => break signal,
            Some(reply) = asked.recv() => {
                let _ = reply.send(pipeline.snapshot());
            }
        }
    };
    tracing::info!(signal, "stop requested; delivering what is queued");
    pipeline.shutdown(settings.shutdown_timeout).await;
    observability.stop().await;
    Ok(())
}

/// The metrics sampler (and its log line) and the optional monitoring endpoint.
struct Observability {
    stats: StatsWatch,
    stop: CancellationToken,
    sampler: tokio::task::JoinHandle<()>,
    server: Option<MonitoringServer>,
}

impl Observability {
    async fn start(settings: &ProcessSettings, ask: metrics::sampler::Ask) -> Result<Self> {
        let stop = CancellationToken::new();
        let period = settings
            .metrics_log_enabled
            .then_some(settings.metrics_log_period);
        let (stats, sampler) = metrics::sampler::spawn(ask, period, stop.clone());
        let mut server = None;
        if settings.monitoring_enabled {
            let address = ServerAddress::parse(&settings.monitoring_address)
                .map_err(|reason| anyhow::anyhow!("invalid -E http.host: {reason}"))?;
            // Shipping goes on without the endpoint: a port in use must not stop delivery.
            match MonitoringServer::start(&address, stats.clone(), stop.clone()).await {
                Ok(started) => server = Some(started),
                Err(err) => tracing::error!(error = %err, "monitoring endpoint not started"),
            }
        }
        Ok(Observability {
            stats,
            stop,
            sampler,
            server,
        })
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.sampler.await;
        if let Some(server) = self.server {
            server.stopped().await;
        }
    }
}

async fn dlq_command(dir: &std::path::Path, action: DlqAction) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match action {
        DlqAction::Stats => dlq::cli::stats(dir, &mut out),
        DlqAction::List {
            reason,
            data_stream,
            older_than,
            newer_than,
        } => {
            let filter = dlq::cli::ListFilter {
                reason,
                data_stream,
                older_than,
                newer_than,
            };
            let listed = dlq::cli::list(dir, &filter, &mut out)?;
            tracing::info!(listed, path = %dir.display(), "dlq list done");
            Ok(())
        }
        DlqAction::Replay {
            server,
            input_id,
            ssl_ca,
            ssl_cert,
            ssl_key,
            ssl_server_name,
        } => {
            let tls = match (ssl_ca, ssl_cert, ssl_key) {
                (Some(ca), Some(cert), Some(key)) => Some(
                    ClientTlsFiles {
                        ca,
                        cert,
                        key,
                        server_name: ssl_server_name,
                    }
                    .load()
                    .map_err(anyhow::Error::msg)?,
                ),
                // clap requires all three together.
                _ => None,
            };
            let replayed =
                dlq::cli::replay(dir, &server, input_id.as_deref(), tls, &mut out).await?;
            tracing::info!(replayed, path = %dir.display(), "dlq replay done");
            Ok(())
        }
        DlqAction::Purge => {
            let deleted = dlq::cli::purge(dir)?;
            tracing::info!(deleted, path = %dir.display(), "dlq purge done");
            Ok(())
        }
    }
}

async fn terminate_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
