//! `mock-agent`: plays Elastic Agent for one shipper component.
//!
//! It mints a CA and certificates, serves `ElasticAgent` on 127.0.0.1 with mTLS (client
//! certificates required), spawns the shipper binary as the real agent does (the command
//! line from the component spec's `command.args` plus `-E path.data=<run dir>`, the working
//! directory that run dir, `AGENT_COMPONENT_ID` and `AGENT_COMPONENT_TYPE`; see
//! [`crate::component`]), writes `StartUpInfo` to its stdin, wires unit configs the way
//! the agent does (an OUTPUT unit is the policy's output block minus `enabled`, `shipper`
//! and `log_level`, plus the enrollment headers; every INPUT unit without a `server` gets
//! the agent's one Producer socket and its own certificate pair in `ssl`), and follows the
//! agent's rules from PROTOCOL.md §1: replies only while the component is
//! unsettled, sends a unit's config only while its echoed idx differs, drops a unit once it
//! reports STOPPED, counts missed check-ins (1–2 → DEGRADED, 3 → FAILED and SIGKILL), and
//! restarts a crashed process after a delay, after which every config is sent again; a
//! removed unit is expected STOPPED with its config idx unchanged, and stopping sends
//! SIGTERM, then SIGKILL after the spec's `timeouts.stop`.
//!
//! It is the agent the mission asks for: a revision that stops units is acknowledged to the
//! (simulated) Fleet only after each of them reports STOPPED. [`AckMode::Immediately`]
//! plays the real agent, which acknowledges at once.
//!
//! Everything it sees is an [`AgentEvent`], logged and kept in order, so tests and the demo
//! can wait for and assert on the sequence.
//!
//! [`AgentGeneration::V9`] plays one component of today's agent (8.16+, 9.x) instead: the
//! command line from the `inputs:` spec entry, unit configs passed as derived by
//! [`crate::agent9`] (nothing injected), and [`MockAgent::retire`] for a component that
//! leaves the model (SIGTERM with no STOPPED sent, check-ins ignored, SIGKILL later).
//! [`crate::agent9::Agent9`] runs one of these per component.

mod core;
mod process;
mod service;
mod wiring;

pub use self::core::{type_name, ObservedView};
use self::wiring::Wiring;
pub use self::wiring::{ShipperCa, UnitPair};

use crate::certs::AgentCerts;
use crate::component::{self, ComponentSpec};
use agent_shipper::proto::agent::elastic_agent_server::ElasticAgentServer;
use agent_shipper::proto::agent::{
    action_request, ActionRequest, ActionResponse, AgentInfo, AgentManagedMode, ConnInfoServices,
    ConnectionSupports, StartUpInfo, State, UnitLogLevel, UnitType,
};
use anyhow::{Context, Result};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// When the agent acknowledges a revision that stops units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// After every unit the revision stops has reported STOPPED (what the mission asks).
    AfterStopped,
    /// At once, as the real Elastic Agent does.
    Immediately,
}

/// Which Elastic Agent the mock plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentGeneration {
    /// 8.6–8.15: a `shippers:` spec entry; INPUT units wired with the agent's socket and
    /// certificate pair.
    #[default]
    V8,
    /// Today's agent (8.16+, 9.x): an `inputs:` spec entry; unit configs as derived from
    /// the policy ([`crate::agent9::derive_components`]), nothing injected.
    V9,
}

impl AgentGeneration {
    /// The version the agent reports in `StartUpInfo.agent_info`.
    pub fn version(self) -> &'static str {
        match self {
            AgentGeneration::V8 => "8.8.0",
            AgentGeneration::V9 => "9.6.0",
        }
    }
}

/// Deliberately wrong start-up material, for the shipper's error paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupFault {
    /// A token the agent does not know.
    WrongToken,
    /// A CA that did not sign the agent's certificate.
    WrongCa,
    /// `services` without CheckinV2.
    NoCheckinV2,
    /// These bytes instead of a StartUpInfo.
    Garbage(Vec<u8>),
}

/// One unit of a policy revision.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitSpec {
    /// Unit id.
    pub id: String,
    /// Unit type.
    pub kind: UnitType,
    /// The unit's `source` block.
    pub config: serde_json::Value,
    /// Log level for the unit.
    pub log_level: UnitLogLevel,
}

impl UnitSpec {
    fn key(&self) -> (String, i32) {
        (self.id.clone(), self.kind as i32)
    }
}

/// A whole policy: the units the component should run.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    /// Policy revision number.
    pub number: u64,
    /// Every unit of the component in this revision.
    pub units: Vec<UnitSpec>,
}

/// Something the agent saw or did, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// The shipper process was started.
    ShipperStarted {
        /// Its pid.
        pid: u32,
    },
    /// The shipper process ended.
    ShipperExited {
        /// Exit code, if it exited.
        code: Option<i32>,
        /// Signal, if it was killed.
        signal: Option<i32>,
    },
    /// One line of the shipper's stderr.
    ShipperLog(String),
    /// A CheckinV2 message arrived.
    CheckinReceived,
    /// A unit's reported state, message or idx changed.
    UnitObserved {
        /// Unit id.
        id: String,
        /// Unit type number.
        kind: i32,
        /// Its state.
        state: State,
        /// Its message.
        message: String,
    },
    /// A unit is reported that is not expected (and not STOPPED): the agent marks it FAILED.
    UnexpectedUnit {
        /// Unit id.
        id: String,
        /// Unit type number.
        kind: i32,
    },
    /// A policy revision was handed to the component.
    RevisionApplied(u64),
    /// The revision was acknowledged to Fleet.
    RevisionAcknowledged(u64),
    /// The component health the agent derives from missed check-ins.
    ComponentHealth {
        /// Consecutive 30 s periods without a check-in.
        misses: u32,
        /// DEGRADED or FAILED.
        state: State,
    },
    /// A stream was refused (bad token, duplicate, late first message).
    StreamRefused(String),
    /// A CheckinV2 stream was accepted.
    StreamOpened,
    /// The CheckinV2 stream ended.
    StreamClosed,
    /// The unit opened its Actions stream with the `init` response.
    ActionsOpened,
    /// An expected message was sent, in this many pieces (more than one when chunked).
    ExpectedSent {
        /// Pieces, the terminator included.
        pieces: usize,
    },
    /// A check-in arrived after the component left the model: ignored (no reply, no
    /// bookkeeping), as today's agent does.
    CheckinIgnored,
    /// Today's agent: a component entered the model; its process starts now.
    ComponentStarted {
        /// Component id (`agent-shipper-<output name>`).
        id: String,
        /// Its `path.data` and working directory (`<home>/run/<component id>`), empty.
        work_dir: PathBuf,
    },
    /// Today's agent: a component left the model (its last input removed, or `use_output`
    /// moved): SIGTERM sent, no STOPPED.
    ComponentRemoved {
        /// Component id.
        id: String,
    },
    /// Today's agent: a removed component's process did not exit in time: SIGKILL sent.
    ComponentKilled {
        /// Component id.
        id: String,
    },
    /// Today's agent: a removed component's process has exited.
    ComponentExited {
        /// Component id.
        id: String,
        /// Exit code, if it exited.
        code: Option<i32>,
        /// Signal, if it was killed.
        signal: Option<i32>,
    },
    /// Today's agent: a component was started before the removed one exited (the wait
    /// for the old process is bounded).
    ComponentStartedBeforeExit {
        /// The new component.
        id: String,
        /// The removed ones still running.
        still_running: Vec<String>,
    },
    /// Today's agent: a removed component's work directory was deleted after its process
    /// stopped (its `path.data`, with whatever it kept there).
    WorkDirDeleted {
        /// Component id.
        id: String,
        /// The directory.
        path: PathBuf,
    },
}

/// How to run the mock agent.
#[derive(Debug, Clone)]
pub struct MockAgentOptions {
    /// The `agent-shipper` binary.
    pub shipper_bin: PathBuf,
    /// The component spec the command line comes from (default: the one beside the
    /// binary, else the repository's `agent-shipper.spec.yml`).
    pub spec: PathBuf,
    /// The component id (`<shipper name>-<output name>` in the agent).
    pub component_id: String,
    /// `path.data` and working directory for the shipper (`<home>/run/<component id>`
    /// under the agent).
    pub data_dir: PathBuf,
    /// The Producer address the agent gives every INPUT unit that names no `server`.
    pub agent_server: String,
    /// Headers the agent was enrolled with: added to every Elasticsearch output block.
    pub enrollment_headers: BTreeMap<String, String>,
    /// When revisions are acknowledged.
    pub ack_mode: AckMode,
    /// The period per missed check-in (30 s in the real agent).
    pub miss_period: Duration,
    /// Delay before restarting a crashed shipper (about 10 s in the real agent).
    pub restart_delay: Duration,
    /// Offer CheckinChunking and split expected messages larger than this many bytes.
    pub chunk_limit: Option<usize>,
    /// Break the start-up material on purpose.
    pub startup_fault: Option<StartupFault>,
    /// Restart the shipper when it exits unexpectedly.
    pub restart_on_exit: bool,
    /// Relay the shipper's stderr to our log.
    pub echo_shipper_logs: bool,
    /// Extra command-line arguments for the shipper, after the spec's `command.args` and
    /// before `-E path.data` (where the agent puts its monitoring flags).
    pub shipper_args: Vec<String>,
    /// Also append the shipper's stderr lines, as they are, to this file (across
    /// restarts), e.g. for the `timeline` tool.
    pub shipper_log: Option<PathBuf>,
    /// Which agent to play (default: 8.6–8.15).
    pub generation: AgentGeneration,
    /// [`AgentGeneration::V9`]: the input type (`AGENT_COMPONENT_TYPE`, and the `inputs:`
    /// entry run).
    pub input_type: String,
}

impl MockAgentOptions {
    /// Defaults of the real agent for `shipper_bin` with data (and, for INPUT units that
    /// name no `server`, the Producer socket `shipper.sock`) in `data_dir`.
    pub fn new(shipper_bin: PathBuf, data_dir: PathBuf) -> Self {
        MockAgentOptions {
            spec: component::spec_path_for(&shipper_bin),
            shipper_bin,
            component_id: DEFAULT_COMPONENT_ID.into(),
            agent_server: format!("unix://{}", data_dir.join("shipper.sock").display()),
            data_dir,
            enrollment_headers: BTreeMap::new(),
            ack_mode: AckMode::AfterStopped,
            miss_period: Duration::from_secs(30),
            restart_delay: Duration::from_secs(10),
            chunk_limit: None,
            startup_fault: None,
            restart_on_exit: true,
            echo_shipper_logs: false,
            shipper_args: Vec::new(),
            shipper_log: None,
            generation: AgentGeneration::V8,
            input_type: component::INPUT_NAME.into(),
        }
    }

    /// The real agent's layout under `home`: data and working directory
    /// `<home>/run/<component id>`, the Producer socket in `<home>/tmp` (the agent names it
    /// by a hash of the component id; here it is the id itself).
    pub fn in_home(shipper_bin: PathBuf, home: &Path) -> Self {
        let mut options =
            MockAgentOptions::new(shipper_bin, home.join("run").join(DEFAULT_COMPONENT_ID));
        options.agent_server = format!(
            "unix://{}",
            home.join("tmp")
                .join(format!("{DEFAULT_COMPONENT_ID}.sock"))
                .display()
        );
        options
    }
}

/// The component id of a shipper `shipper` for the output `default`.
pub const DEFAULT_COMPONENT_ID: &str = "shipper-default";

struct StreamSlot {
    id: u64,
    tx: mpsc::Sender<Result<agent_shipper::proto::agent::CheckinExpected, tonic::Status>>,
    chunking: bool,
}

/// State shared by the gRPC service, the process supervisor and the test API.
/// Shared mutable state by design: each lock is held for a few statements, never across
/// an `.await`.
pub(crate) struct Shared {
    token: String,
    core: Mutex<self::core::Core>,
    events: broadcast::Sender<AgentEvent>,
    history: Mutex<Vec<AgentEvent>>,
    stream: Mutex<Option<StreamSlot>>,
    next_stream_id: Mutex<u64>,
    actions: Mutex<Option<mpsc::Sender<Result<ActionRequest, tonic::Status>>>>,
    pending_actions: Mutex<HashMap<String, oneshot::Sender<ActionResponse>>>,
    last_checkin: Mutex<Option<Instant>>,
    checkins: Mutex<Vec<Instant>>,
    pid: Mutex<Option<u32>>,
    chunk_limit: Option<usize>,
    echo_logs: bool,
    tasks: Mutex<JoinSet<()>>,
    /// The component left the model: check-ins are ignored.
    retired: std::sync::atomic::AtomicBool,
    /// Run once, in the check-in handler, when their unit is first seen STOPPED.
    stopped_probes: Mutex<Vec<(self::core::UnitKey, StoppedProbe)>>,
}

type StoppedProbe = Box<dyn FnOnce() + Send>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn emit(&self, event: AgentEvent) {
        match &event {
            AgentEvent::ShipperLog(line) => {
                if self.echo_logs {
                    tracing::info!(target: "shipper", "{line}");
                }
            }
            AgentEvent::CheckinReceived => {
                tracing::debug!(target: "mock_agent", "check-in received")
            }
            AgentEvent::CheckinIgnored => {
                tracing::debug!(target: "mock_agent", "check-in ignored: the component left the model")
            }
            AgentEvent::UnitObserved {
                id,
                kind,
                state,
                message,
            } => tracing::info!(
                target: "mock_agent",
                "unit {id} ({}) observed {}: {message}",
                type_name(*kind),
                state.as_str_name()
            ),
            AgentEvent::RevisionAcknowledged(n) => {
                tracing::info!(target: "mock_agent", "policy revision {n} acknowledged to Fleet")
            }
            AgentEvent::RevisionApplied(n) => {
                tracing::info!(target: "mock_agent", "policy revision {n} applied")
            }
            other => tracing::info!(target: "mock_agent", "{other:?}"),
        }
        lock(&self.history).push(event.clone());
        let _ = self.events.send(event);
    }

    /// Sends the expected state as it is now. The message is built while the stream is
    /// held, so two sends racing (a check-in's reply and a test's change) leave the
    /// newest state last on the wire, as the real agent's single sender does.
    fn push_expected(&self) {
        let pieces = {
            let slot = lock(&self.stream);
            let Some(slot) = slot.as_ref() else { return };
            let message = lock(&self.core).expected_message();
            let pieces = match (slot.chunking, self.chunk_limit) {
                (true, Some(limit)) => service::chunk(message, limit),
                _ => vec![message],
            };
            let count = pieces.len();
            for piece in pieces {
                if slot.tx.try_send(Ok(piece)).is_err() {
                    tracing::warn!(target: "mock_agent", "expected message not sent: the stream is full or closed");
                }
            }
            count
        };
        self.emit(AgentEvent::ExpectedSent { pieces });
    }
}

/// A running mock agent with its shipper process.
pub struct MockAgent {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    supervisor: tokio::task::JoinHandle<()>,
    watchdog: tokio::task::JoinHandle<()>,
    next_action: Mutex<u64>,
    wiring: Mutex<Wiring>,
    launch: Launch,
    generation: AgentGeneration,
}

/// How a retired component's process ended ([`MockAgent::retire`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Retired {
    /// Its [`AgentEvent::ShipperExited`].
    pub exit: AgentEvent,
    /// True when it needed the SIGKILL.
    pub killed: bool,
}

/// How the shipper process is started, as the agent derives it from the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Environment the agent adds.
    pub env: Vec<(String, String)>,
    /// SIGTERM to SIGKILL when stopping (the spec's `timeouts.stop`).
    pub stop_timeout: Duration,
}

impl Launch {
    /// The `AGENT_COMPONENT_ID` the process gets.
    pub fn component_id(&self) -> String {
        self.env
            .iter()
            .find(|(name, _)| name == "AGENT_COMPONENT_ID")
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    }

    fn from_spec(options: &MockAgentOptions) -> Result<Self> {
        let spec = ComponentSpec::load(&options.spec)?;
        let platform = component::this_platform();
        let (command, component_type) = match options.generation {
            AgentGeneration::V8 => {
                let shipper = spec.shipper_for(&platform).with_context(|| {
                    format!(
                        "{} has no shipper for this platform ({platform})",
                        options.spec.display()
                    )
                })?;
                (shipper.command.clone(), shipper.name.clone())
            }
            AgentGeneration::V9 => {
                let input = spec
                    .input_for(&options.input_type, &platform)
                    .with_context(|| {
                        format!(
                            "{} has no `inputs:` entry `{}` for this platform ({platform})",
                            options.spec.display(),
                            options.input_type
                        )
                    })?;
                // The agent's type is the policy input's type, not the entry's alias.
                (input.command.clone(), options.input_type.clone())
            }
        };
        let command = command.unwrap_or_default();
        let mut env: Vec<(String, String)> = command
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        env.push(("AGENT_COMPONENT_ID".into(), options.component_id.clone()));
        env.push(("AGENT_COMPONENT_TYPE".into(), component_type));
        Ok(Launch {
            program: options.shipper_bin.clone(),
            args: component::command_args(&command, &options.shipper_args, &options.data_dir),
            cwd: options.data_dir.clone(),
            env,
            stop_timeout: command.timeouts.stop(),
        })
    }
}

impl MockAgent {
    /// Starts the agent's server and spawns the shipper.
    pub async fn start(options: MockAgentOptions) -> Result<Self> {
        let launch = Launch::from_spec(&options)?;
        let wiring = Wiring {
            server: options.agent_server.clone(),
            ca: ShipperCa::mint()?,
            pairs: BTreeMap::new(),
            headers: options.enrollment_headers.clone(),
        };
        if let Some(socket) = options.agent_server.strip_prefix("unix://") {
            if let Some(dir) = Path::new(socket).parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
        }
        let certs = AgentCerts::mint()?;
        let token = format!(
            "token-{}",
            std::process::id() ^ (Instant::now().elapsed().subsec_nanos())
        );
        let (events, _) = broadcast::channel(65_536);
        let shared = Arc::new(Shared {
            token: token.clone(),
            core: Mutex::new(self::core::Core::new(options.ack_mode)),
            events,
            history: Mutex::new(Vec::new()),
            stream: Mutex::new(None),
            next_stream_id: Mutex::new(0),
            actions: Mutex::new(None),
            pending_actions: Mutex::new(HashMap::new()),
            last_checkin: Mutex::new(None),
            checkins: Mutex::new(Vec::new()),
            pid: Mutex::new(None),
            chunk_limit: options.chunk_limit,
            echo_logs: options.echo_shipper_logs,
            tasks: Mutex::new(JoinSet::new()),
            retired: std::sync::atomic::AtomicBool::new(false),
            stopped_probes: Mutex::new(Vec::new()),
        });

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the agent's port")?;
        let addr = listener.local_addr()?;
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                &certs.server_cert_pem,
                &certs.server_key_pem,
            ))
            .client_ca_root(Certificate::from_pem(&certs.ca_pem));
        let stop = CancellationToken::new();
        let router = Server::builder()
            .tls_config(tls)
            .context("agent TLS config")?
            .add_service(ElasticAgentServer::new(service::AgentService::new(
                shared.clone(),
            )));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server_stop = stop.clone();
        let server = tokio::spawn(async move {
            if let Err(err) = router
                .serve_with_incoming_shutdown(incoming, server_stop.cancelled_owned())
                .await
            {
                tracing::error!(target: "mock_agent", error = %err, "agent server failed");
            }
        });
        tracing::info!(target: "mock_agent", %addr, "ElasticAgent control server listening (mTLS)");

        let startup = startup_bytes(&options, &certs, &token, addr)?;
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("creating {}", options.data_dir.display()))?;
        tracing::info!(target: "mock_agent", program = %launch.program.display(), args = ?launch.args, cwd = %launch.cwd.display(), "spawning the shipper as the spec says");
        let supervisor = tokio::spawn(process::supervise(
            shared.clone(),
            options.clone(),
            launch.clone(),
            startup,
            stop.clone(),
        ));
        let watchdog = tokio::spawn(process::watch_checkins(
            shared.clone(),
            options.miss_period,
            stop.clone(),
        ));
        Ok(MockAgent {
            shared,
            addr,
            stop,
            server,
            supervisor,
            watchdog,
            next_action: Mutex::new(0),
            wiring: Mutex::new(wiring),
            launch,
            generation: options.generation,
        })
    }

    /// How the shipper is started (program, args, working directory, env, stop timeout).
    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    /// The Producer address the agent gives INPUT units that name no `server`.
    pub fn agent_server(&self) -> String {
        lock(&self.wiring).server.clone()
    }

    /// The config the agent hands the component for a unit (after its own wiring).
    pub fn expected_config(&self, id: &str, kind: UnitType) -> Option<serde_json::Value> {
        lock(&self.shared.core).expected_config(id, kind as i32)
    }

    /// The agent's control address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Hands a policy revision to the component.
    pub fn apply(&self, revision: &Revision) {
        let revision = match self.generation {
            AgentGeneration::V8 => self.wire(revision),
            // Derived from the policy already, and today's agent injects nothing.
            AgentGeneration::V9 => revision.clone(),
        };
        let events = lock(&self.shared.core).apply(&revision);
        for event in events {
            self.shared.emit(event);
        }
        self.shared.push_expected();
    }

    /// The revision as the agent hands it over: output blocks cut to what the agent sends,
    /// INPUT units given the shared server and their own pair (pairs of units gone are
    /// forgotten, as the agent does).
    fn wire(&self, revision: &Revision) -> Revision {
        let mut wiring = lock(&self.wiring);
        let ids: std::collections::BTreeSet<&str> = revision
            .units
            .iter()
            .filter(|u| u.kind == UnitType::Input)
            .map(|u| u.id.as_str())
            .collect();
        wiring.pairs.retain(|id, _| ids.contains(id.as_str()));
        let units = revision
            .units
            .iter()
            .map(|unit| {
                wiring.wire(unit).unwrap_or_else(|err| {
                    tracing::error!(target: "mock_agent", unit = %unit.id, error = %err, "cannot wire the unit; sending it as written");
                    unit.clone()
                })
            })
            .collect();
        Revision {
            number: revision.number,
            units,
        }
    }

    /// Changes a unit's log level without a config change.
    pub fn set_log_level(&self, id: &str, kind: UnitType, level: UnitLogLevel) -> bool {
        let changed = lock(&self.shared.core).set_log_level(id, kind as i32, level as i32);
        if changed {
            self.shared.push_expected();
        }
        changed
    }

    /// Every event so far, in order.
    pub fn history(&self) -> Vec<AgentEvent> {
        lock(&self.shared.history).clone()
    }

    /// When each check-in arrived.
    pub fn checkin_times(&self) -> Vec<Instant> {
        lock(&self.shared.checkins).clone()
    }

    /// Leaves a unit out of the expected messages (`hold`), or sends it again at once;
    /// a test's way to have a unit's config arrive after the others.
    pub fn withhold(&self, id: &str, kind: UnitType, hold: bool) {
        lock(&self.shared.core).withhold(id, kind as i32, hold);
        if !hold {
            self.shared.push_expected();
        }
    }

    /// Check-ins so far whose only news was units' messages or payloads.
    pub fn message_only_checkins(&self) -> u64 {
        lock(&self.shared.core).message_only_checkins()
    }

    /// The last observed view of a unit.
    pub fn observed(&self, id: &str, kind: UnitType) -> Option<ObservedView> {
        lock(&self.shared.core).observed(id, kind as i32).cloned()
    }

    /// Runs `probe` at the instant the agent first sees the unit report STOPPED: inside the
    /// check-in handler, before it replies or acknowledges a revision. What the probe finds
    /// (deliveries counted by mock-es, lines in the output file) is what was true when the
    /// unit said it was done, not later. The result arrives on the returned receiver; a
    /// probe whose unit never reports STOPPED is dropped with the agent.
    pub fn probe_when_stopped<T: Send + 'static>(
        &self,
        id: &str,
        kind: UnitType,
        probe: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let run: StoppedProbe = Box::new(move || {
            let _ = tx.send(probe());
        });
        lock(&self.shared.stopped_probes).push(((id.to_string(), kind as i32), run));
        rx
    }

    /// Whether the unit is still expected (units are dropped after reporting STOPPED).
    pub fn is_expected(&self, id: &str, kind: UnitType) -> bool {
        lock(&self.shared.core).is_expected(id, kind as i32)
    }

    /// Revisions acknowledged so far.
    pub fn acknowledged(&self) -> Vec<u64> {
        lock(&self.shared.core).acknowledged().to_vec()
    }

    /// The running shipper's pid.
    pub fn shipper_pid(&self) -> Option<u32> {
        *lock(&self.shared.pid)
    }

    /// Waits until an event matching `predicate` has happened (now or before), at most
    /// `timeout`; returns the event.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        predicate: impl Fn(&AgentEvent) -> bool,
    ) -> Result<AgentEvent> {
        let mut receiver = self.shared.events.subscribe();
        if let Some(found) = lock(&self.shared.history).iter().find(|e| predicate(e)) {
            return Ok(found.clone());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Ok(event)) if predicate(&event) => return Ok(event),
                Ok(Ok(_)) => {}
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    if let Some(found) = lock(&self.shared.history).iter().find(|e| predicate(e)) {
                        return Ok(found.clone());
                    }
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    anyhow::bail!("agent stopped while waiting for {what}")
                }
                Err(_) => anyhow::bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
    }

    /// Waits until at least `count` events matching `predicate` have happened in total.
    pub async fn wait_for_count(
        &self,
        timeout: Duration,
        what: &str,
        count: usize,
        predicate: impl Fn(&AgentEvent) -> bool,
    ) -> Result<()> {
        let mut receiver = self.shared.events.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = lock(&self.shared.history)
                .iter()
                .filter(|e| predicate(e))
                .count();
            if seen >= count {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    anyhow::bail!("agent stopped while waiting for {what}")
                }
                Ok(_) => {}
                Err(_) => anyhow::bail!(
                    "timed out after {timeout:?} waiting for {what} ({seen} of {count} seen)"
                ),
            }
        }
    }

    /// Waits until every listed unit is observed in `state`.
    pub async fn wait_for_states(
        &self,
        timeout: Duration,
        units: &[(&str, UnitType)],
        state: State,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut receiver = self.shared.events.subscribe();
        loop {
            let all = units
                .iter()
                .all(|(id, kind)| self.observed(id, *kind).is_some_and(|o| o.state == state));
            if all {
                return Ok(());
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                let seen: Vec<_> = units
                    .iter()
                    .map(|(id, kind)| (id.to_string(), self.observed(id, *kind)))
                    .collect();
                anyhow::bail!(
                    "timed out waiting for {units:?} to be {}; observed: {seen:?}",
                    state.as_str_name()
                );
            }
            let _ = tokio::time::timeout(remaining, receiver.recv()).await;
        }
    }

    /// Ends the current CheckinV2 stream from the agent's side.
    pub fn drop_stream(&self) -> bool {
        let slot = lock(&self.shared.stream).take();
        match slot {
            Some(slot) => {
                let _ = slot.tx.try_send(Err(tonic::Status::unavailable(
                    "stream dropped by the mock agent",
                )));
                true
            }
            None => false,
        }
    }

    /// Sends a DIAGNOSTICS action and waits (at most 20 s) for the answer.
    pub async fn diagnostics(&self) -> Result<ActionResponse> {
        self.action(ActionRequest {
            name: "diagnostics".into(),
            r#type: action_request::Type::Diagnostics as i32,
            level: action_request::Level::All as i32,
            ..ActionRequest::default()
        })
        .await
    }

    /// Sends any action and waits (at most 20 s) for the answer.
    pub async fn action(&self, mut request: ActionRequest) -> Result<ActionResponse> {
        let id = {
            let mut next = lock(&self.next_action);
            *next += 1;
            format!("action-{next}")
        };
        request.id = id.clone();
        let (reply_tx, reply_rx) = oneshot::channel();
        lock(&self.shared.pending_actions).insert(id.clone(), reply_tx);
        // The unit opens Actions right after CheckinV2; give it a moment to do so.
        self.wait_for(Duration::from_secs(20), "an Actions stream", |e| {
            *e == AgentEvent::ActionsOpened
        })
        .await?;
        let sender = lock(&self.shared.actions)
            .clone()
            .context("no Actions stream is open")?;
        sender
            .send(Ok(request))
            .await
            .context("Actions stream closed")?;
        tokio::time::timeout(Duration::from_secs(20), reply_rx)
            .await
            .context("no answer to the action within 20 s")?
            .context("Actions stream closed before the answer")
    }

    /// Sends SIGKILL to the shipper (it is restarted when `restart_on_exit` is set).
    pub fn kill_shipper(&self) -> bool {
        process::signal(&self.shared, nix::sys::signal::Signal::SIGKILL)
    }

    /// Sends SIGTERM to the shipper and returns at once (the agent keeps running; with
    /// `restart_on_exit` it restarts the shipper after it exits).
    pub fn terminate_shipper(&self) -> bool {
        process::signal(&self.shared, nix::sys::signal::Signal::SIGTERM)
    }

    /// The component leaves the model, as today's agent removes it: from now on check-ins
    /// are ignored and nothing is sent (no STOPPED); SIGTERM, then SIGKILL after
    /// `kill_after` (the agent's is `timeouts.stop` minus 5 s, 25 s by default). Returns
    /// the exit, once the process is gone (at most a few seconds after the SIGKILL); the
    /// control server stops with it.
    pub async fn retire(&self, kill_after: Duration) -> Result<Retired> {
        self.shared
            .retired
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // No restart after this exit, and no more missed check-in counting.
        self.stop.cancel();
        let exited = |e: &AgentEvent| matches!(e, AgentEvent::ShipperExited { .. });
        let last_exit = || {
            lock(&self.shared.history)
                .iter()
                .rev()
                .find(|e| exited(e))
                .cloned()
        };
        if !process::signal(&self.shared, nix::sys::signal::Signal::SIGTERM) {
            let exit = last_exit().context("no shipper process ran")?;
            return Ok(Retired {
                exit,
                killed: false,
            });
        }
        let started = self.history().len();
        let wait_exit = |timeout: Duration| {
            let shared = self.shared.clone();
            async move {
                let mut receiver = shared.events.subscribe();
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    if let Some(found) = lock(&shared.history)[started..]
                        .iter()
                        .find(|e| exited(e))
                        .cloned()
                    {
                        return Some(found);
                    }
                    if lock(&shared.pid).is_none() {
                        return lock(&shared.history)
                            .iter()
                            .rev()
                            .find(|e| exited(e))
                            .cloned();
                    }
                    if tokio::time::timeout_at(deadline, receiver.recv())
                        .await
                        .is_err()
                    {
                        return None;
                    }
                }
            }
        };
        if let Some(exit) = wait_exit(kill_after).await {
            return Ok(Retired {
                exit,
                killed: false,
            });
        }
        tracing::warn!(target: "mock_agent", component = %self.launch.component_id(), "no exit within {kill_after:?} of SIGTERM: SIGKILL");
        process::signal(&self.shared, nix::sys::signal::Signal::SIGKILL);
        let exit = wait_exit(Duration::from_secs(10))
            .await
            .context("the shipper did not exit after SIGKILL")?;
        Ok(Retired { exit, killed: true })
    }

    /// True once [`MockAgent::retire`] was called.
    pub fn is_retired(&self) -> bool {
        self.shared
            .retired
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// SIGTERM to the shipper, as the agent does when the component is removed; waits for
    /// the exit (SIGKILL after `grace`; the agent's is [`Launch::stop_timeout`]), stops the
    /// agent, and returns the exit event.
    pub async fn stop(self, grace: Duration) -> Result<AgentEvent> {
        self.stop.cancel();
        let sent = process::signal(&self.shared, nix::sys::signal::Signal::SIGTERM);
        let exited = if sent {
            match self
                .wait_for(grace, "shipper exit after SIGTERM", |e| {
                    matches!(e, AgentEvent::ShipperExited { .. })
                })
                .await
            {
                Ok(event) => Some(event),
                Err(_) => {
                    process::signal(&self.shared, nix::sys::signal::Signal::SIGKILL);
                    None
                }
            }
        } else {
            // Already gone (e.g. after [`MockAgent::terminate_shipper`]): its last exit.
            lock(&self.shared.history)
                .iter()
                .rev()
                .find(|e| matches!(e, AgentEvent::ShipperExited { .. }))
                .cloned()
        };
        let _ = self.supervisor.await;
        let _ = self.watchdog.await;
        let _ = self.server.await;
        let mut tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        tasks.shutdown().await;
        exited.context("the shipper did not exit within the grace period after SIGTERM")
    }
}

fn startup_bytes(
    options: &MockAgentOptions,
    certs: &AgentCerts,
    token: &str,
    addr: SocketAddr,
) -> Result<Vec<u8>> {
    let mut info = StartUpInfo {
        addr: addr.to_string(),
        server_name: "localhost".into(),
        token: token.to_string(),
        ca_cert: certs.ca_pem.clone().into_bytes(),
        peer_cert: certs.client_cert_pem.clone().into_bytes(),
        peer_key: certs.client_key_pem.clone().into_bytes(),
        services: vec![ConnInfoServices::CheckinV2 as i32],
        supports: if options.chunk_limit.is_some() {
            vec![ConnectionSupports::CheckinChunking as i32]
        } else {
            Vec::new()
        },
        max_message_size: 0,
        agent_info: Some(AgentInfo {
            id: "mock-agent".into(),
            version: options.generation.version().into(),
            snapshot: false,
            mode: AgentManagedMode::Managed as i32,
            unprivileged: false,
        }),
    };
    match &options.startup_fault {
        None => {}
        Some(StartupFault::WrongToken) => info.token = "not-the-token".into(),
        Some(StartupFault::WrongCa) => info.ca_cert = AgentCerts::mint()?.ca_pem.into_bytes(),
        Some(StartupFault::NoCheckinV2) => info.services = vec![ConnInfoServices::Checkin as i32],
        Some(StartupFault::Garbage(bytes)) => return Ok(bytes.clone()),
    }
    Ok(info.encode_to_vec())
}
