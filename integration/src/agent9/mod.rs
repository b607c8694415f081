//! Today's Elastic Agent (8.16+, 9.x) running agent-shipper as an input component.
//!
//! [`Agent9`] takes whole policies (outputs and inputs), derives the components the agent
//! would run ([`derive_components`]) and runs each as the agent does: one process per
//! component from the `inputs:` spec entry's `command.args` plus `-E path.data=<home>/run/
//! <component id>`, in that directory, with `AGENT_COMPONENT_ID` and
//! `AGENT_COMPONENT_TYPE=agent-shipper`. Each component gets its own mock control server
//! (a [`MockAgent`] in [`AgentGeneration::V9`]): the process cannot tell, and each
//! component's wire behaviour is the agent's.
//!
//! Policy changes, as the agent makes them: a unit that stays changes its config in place
//! (new idx); one input of several removed is expected STOPPED with the same idx and
//! dropped once STOPPED (the [`MockAgent`] rules). A component that leaves the model (its
//! last input removed, or `use_output` moved) gets no STOPPED: SIGTERM, its check-ins
//! ignored, SIGKILL after [`Agent9Options::kill_after`] (25 s); once its process is gone
//! its work directory `<home>/run/<component id>` is deleted. A component that enters the
//! model starts when the removed ones have exited, or after
//! [`Agent9Options::replace_wait`] (15 s), whichever is first, with an empty work
//! directory. Each step is an [`AgentEvent`] in [`Agent9::history`].

mod derive;

pub use derive::{derive_components, ComponentModel, DeriveError, Policy};

use crate::agent::{AckMode, AgentEvent, AgentGeneration, MockAgent, MockAgentOptions, Revision};
use crate::component::{self, ComponentSpec};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How to run today's agent.
#[derive(Debug, Clone)]
pub struct Agent9Options {
    /// The agent-shipper binary.
    pub shipper_bin: PathBuf,
    /// The spec with the `inputs:` entry (default: `agent-shipper-input.spec.yml` beside
    /// the binary, else the repository's).
    pub spec: PathBuf,
    /// The agent's home: components run in `<home>/run/<component id>`.
    pub home: PathBuf,
    /// The input type run (`agent-shipper`).
    pub input_type: String,
    /// Headers the agent was enrolled with (added to Elasticsearch OUTPUT configs).
    pub enrollment_headers: BTreeMap<String, String>,
    /// When each component's revisions are acknowledged.
    pub ack_mode: AckMode,
    /// Delay before restarting a crashed process (about 10 s in the agent).
    pub restart_delay: Duration,
    /// Period per missed check-in (30 s in the agent).
    pub miss_period: Duration,
    /// SIGTERM to SIGKILL for a component that left the model (`timeouts.stop` minus 5 s).
    pub kill_after: Duration,
    /// How long a new component waits for removed ones to exit before it starts anyway.
    pub replace_wait: Duration,
    /// Relay the processes' log lines.
    pub echo_shipper_logs: bool,
    /// Extra arguments after the spec's (the agent adds none for non-Beats).
    pub shipper_args: Vec<String>,
}

impl Agent9Options {
    /// The agent's defaults for `shipper_bin` with its home in `home`.
    pub fn new(shipper_bin: PathBuf, home: &Path) -> Self {
        Agent9Options {
            spec: component::input_spec_path_for(&shipper_bin),
            shipper_bin,
            home: home.to_path_buf(),
            input_type: component::INPUT_NAME.into(),
            enrollment_headers: BTreeMap::new(),
            ack_mode: AckMode::Immediately,
            restart_delay: Duration::from_secs(10),
            miss_period: Duration::from_secs(30),
            kill_after: Duration::from_secs(25),
            replace_wait: Duration::from_secs(15),
            echo_shipper_logs: false,
            shipper_args: Vec::new(),
        }
    }

    /// A component's work directory (its `path.data`).
    pub fn work_dir(&self, component_id: &str) -> PathBuf {
        self.home.join("run").join(component_id)
    }
}

/// A component started and not yet removed.
struct Running {
    agent: Arc<MockAgent>,
}

struct Inner {
    options: Agent9Options,
    supported_outputs: Vec<String>,
    running: Mutex<BTreeMap<String, Running>>,
    /// Components waiting to start (removed ones still running): their latest revision.
    pending: Mutex<BTreeMap<String, Revision>>,
    /// Removed components: `true` once their process is gone.
    retiring: Mutex<BTreeMap<String, watch::Receiver<bool>>>,
    history: Mutex<Vec<AgentEvent>>,
    events: broadcast::Sender<AgentEvent>,
    tasks: Mutex<tokio::task::JoinSet<()>>,
}

/// Today's agent, running agent-shipper components from policies.
pub struct Agent9 {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    fn emit(&self, event: AgentEvent) {
        tracing::info!(target: "mock_agent", "{event:?}");
        lock(&self.history).push(event.clone());
        let _ = self.events.send(event);
    }

    /// Starts a component's process with an empty work directory and hands it `revision`.
    async fn start_component(&self, id: &str, revision: Revision) -> Result<()> {
        let options = &self.options;
        let work_dir = options.work_dir(id);
        if work_dir.exists() {
            std::fs::remove_dir_all(&work_dir)
                .with_context(|| format!("emptying {}", work_dir.display()))?;
        }
        let mut agent_options =
            MockAgentOptions::new(options.shipper_bin.clone(), work_dir.clone());
        agent_options.spec = options.spec.clone();
        agent_options.generation = AgentGeneration::V9;
        agent_options.input_type = options.input_type.clone();
        agent_options.component_id = id.to_string();
        agent_options.agent_server = String::new();
        agent_options.ack_mode = options.ack_mode;
        agent_options.restart_delay = options.restart_delay;
        agent_options.miss_period = options.miss_period;
        agent_options.echo_shipper_logs = options.echo_shipper_logs;
        agent_options.shipper_args = options.shipper_args.clone();
        let agent = MockAgent::start(agent_options).await?;
        agent.apply(&revision);
        // Running before the event: whoever saw ComponentStarted finds it in `component`.
        lock(&self.running).insert(
            id.to_string(),
            Running {
                agent: Arc::new(agent),
            },
        );
        self.emit(AgentEvent::ComponentStarted {
            id: id.to_string(),
            work_dir,
        });
        Ok(())
    }

    /// Waits until every removed component's process is gone, at most `replace_wait`;
    /// returns those still running.
    async fn wait_for_retired(&self) -> Vec<String> {
        let waiting: Vec<(String, watch::Receiver<bool>)> = lock(&self.retiring)
            .iter()
            .map(|(id, rx)| (id.clone(), rx.clone()))
            .collect();
        let deadline = tokio::time::Instant::now() + self.options.replace_wait;
        let mut still = Vec::new();
        for (id, mut rx) in waiting {
            let gone = tokio::time::timeout_at(deadline, rx.wait_for(|gone| *gone)).await;
            if !matches!(gone, Ok(Ok(_))) {
                still.push(id);
            }
        }
        still
    }
}

impl Agent9 {
    /// An agent with no policy yet (nothing runs); checks the spec now.
    pub fn new(options: Agent9Options) -> Result<Self> {
        let spec = ComponentSpec::load(&options.spec)?;
        let platform = component::this_platform();
        let input = spec
            .input_for(&options.input_type, &platform)
            .with_context(|| {
                format!(
                    "{} has no `inputs:` entry `{}` for {platform}",
                    options.spec.display(),
                    options.input_type
                )
            })?;
        let supported_outputs = input.outputs.clone();
        std::fs::create_dir_all(options.home.join("run"))
            .with_context(|| format!("creating {}/run", options.home.display()))?;
        let (events, _) = broadcast::channel(4096);
        Ok(Agent9 {
            inner: Arc::new(Inner {
                options,
                supported_outputs,
                running: Mutex::new(BTreeMap::new()),
                pending: Mutex::new(BTreeMap::new()),
                retiring: Mutex::new(BTreeMap::new()),
                history: Mutex::new(Vec::new()),
                events,
                tasks: Mutex::new(tokio::task::JoinSet::new()),
            }),
        })
    }

    /// The options it runs with.
    pub fn options(&self) -> &Agent9Options {
        &self.inner.options
    }

    /// The component model `policy` gives (what [`Agent9::apply`] will run).
    pub fn derive(&self, policy: &Policy) -> Result<Vec<ComponentModel>, DeriveError> {
        derive_components(
            policy,
            &self.inner.options.input_type,
            &self.inner.supported_outputs,
            &self.inner.options.enrollment_headers,
        )
    }

    /// Makes `policy` the agent's policy. Components that stay get their new units at
    /// once; removed ones are stopped in the background; new ones start now, or, while
    /// removed ones are still running, in the background once they exit (at most
    /// `replace_wait` later): wait for [`AgentEvent::ComponentStarted`].
    pub async fn apply(&self, policy: &Policy) -> Result<()> {
        let model = self.derive(policy)?;
        let inner = &self.inner;
        inner.emit(AgentEvent::RevisionApplied(policy.revision));
        let wanted: BTreeMap<String, Revision> = model
            .into_iter()
            .map(|component| {
                (
                    component.id,
                    Revision {
                        number: policy.revision,
                        units: component.units,
                    },
                )
            })
            .collect();
        // Left the model: SIGTERM, no STOPPED; the work directory goes once it is gone.
        let removed: Vec<(String, Running)> = {
            let mut running = lock(&inner.running);
            let ids: Vec<String> = running
                .keys()
                .filter(|id| !wanted.contains_key(*id))
                .cloned()
                .collect();
            ids.into_iter()
                .filter_map(|id| running.remove(&id).map(|r| (id, r)))
                .collect()
        };
        lock(&inner.pending).retain(|id, _| wanted.contains_key(id));
        for (id, component) in removed {
            self.retire(id, component);
        }
        let mut to_start = Vec::new();
        for (id, revision) in wanted {
            let running = lock(&inner.running).get(&id).map(|r| r.agent.clone());
            match running {
                Some(agent) => agent.apply(&revision),
                None => {
                    let waiting = lock(&inner.pending).insert(id.clone(), revision);
                    if waiting.is_none() {
                        to_start.push(id);
                    }
                }
            }
        }
        if to_start.is_empty() {
            return Ok(());
        }
        if lock(&inner.retiring).is_empty() {
            for id in to_start {
                let revision = lock(&inner.pending).remove(&id);
                if let Some(revision) = revision {
                    inner.start_component(&id, revision).await?;
                }
            }
            return Ok(());
        }
        let task_inner = inner.clone();
        lock(&inner.tasks).spawn(async move {
            let still_running = task_inner.wait_for_retired().await;
            for id in to_start {
                // A later policy may have dropped it, or changed its units meanwhile.
                let Some(revision) = lock(&task_inner.pending).remove(&id) else {
                    continue;
                };
                if !still_running.is_empty() {
                    task_inner.emit(AgentEvent::ComponentStartedBeforeExit {
                        id: id.clone(),
                        still_running: still_running.clone(),
                    });
                }
                if let Err(err) = task_inner.start_component(&id, revision).await {
                    tracing::error!(target: "mock_agent", component = %id, error = %err, "cannot start the component");
                }
            }
        });
        Ok(())
    }

    fn retire(&self, id: String, component: Running) {
        let inner = self.inner.clone();
        let (gone_tx, gone_rx) = watch::channel(false);
        lock(&inner.retiring).insert(id.clone(), gone_rx);
        inner.emit(AgentEvent::ComponentRemoved { id: id.clone() });
        let task_inner = inner.clone();
        lock(&inner.tasks).spawn(async move {
            let inner = task_inner;
            let kill_after = inner.options.kill_after;
            match component.agent.retire(kill_after).await {
                Ok(retired) => {
                    if retired.killed {
                        inner.emit(AgentEvent::ComponentKilled { id: id.clone() });
                    }
                    let (code, signal) = match retired.exit {
                        AgentEvent::ShipperExited { code, signal } => (code, signal),
                        _ => (None, None),
                    };
                    inner.emit(AgentEvent::ComponentExited {
                        id: id.clone(),
                        code,
                        signal,
                    });
                }
                Err(err) => {
                    tracing::error!(target: "mock_agent", component = %id, error = %err, "stopping the component failed")
                }
            }
            // Once the process has stopped, the agent deletes the component's work
            // directory: its `path.data`, and whatever was kept there.
            let work_dir = inner.options.work_dir(&id);
            match std::fs::remove_dir_all(&work_dir) {
                Ok(()) => inner.emit(AgentEvent::WorkDirDeleted {
                    id: id.clone(),
                    path: work_dir,
                }),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::warn!(target: "mock_agent", path = %work_dir.display(), error = %err, "cannot delete the work directory")
                }
            }
            let _ = gone_tx.send(true);
            lock(&inner.retiring).remove(&id);
        });
    }

    /// A running component's mock control server (with its own history and waits).
    pub fn component(&self, id: &str) -> Option<Arc<MockAgent>> {
        lock(&self.inner.running).get(id).map(|r| r.agent.clone())
    }

    /// The ids of the running components.
    pub fn component_ids(&self) -> Vec<String> {
        lock(&self.inner.running).keys().cloned().collect()
    }

    /// Every component-level event so far, in order (each component's own events are in
    /// its [`MockAgent::history`]).
    pub fn history(&self) -> Vec<AgentEvent> {
        lock(&self.inner.history).clone()
    }

    /// Waits until an event matching `predicate` has happened, at most `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        predicate: impl Fn(&AgentEvent) -> bool,
    ) -> Result<AgentEvent> {
        let mut receiver = self.inner.events.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = lock(&self.inner.history).iter().find(|e| predicate(e)) {
                return Ok(found.clone());
            }
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    anyhow::bail!("agent stopped while waiting for {what}")
                }
                Err(_) => anyhow::bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
    }

    /// Agent shutdown: every component gets SIGTERM (SIGKILL after `kill_after`); work
    /// directories are kept, as the agent keeps them across its own restarts. Returns
    /// each component's exit.
    pub async fn stop(self) -> Vec<(String, Result<AgentEvent>)> {
        let running: Vec<(String, Running)> = std::mem::take(&mut *lock(&self.inner.running))
            .into_iter()
            .collect();
        lock(&self.inner.pending).clear();
        let kill_after = self.inner.options.kill_after;
        let mut exits = Vec::new();
        for (id, component) in running {
            let exit = component.agent.retire(kill_after).await.map(|r| r.exit);
            exits.push((id, exit));
        }
        let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        // Removed components finish their own stop (bounded by kill_after).
        let bound = kill_after + Duration::from_secs(15);
        let _ =
            tokio::time::timeout(bound, async { while tasks.join_next().await.is_some() {} }).await;
        tasks.shutdown().await;
        exits
    }
}
