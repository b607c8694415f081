//! The data path the supervisor configures: queue, output task, listeners and routes.
//!
//! INPUT units naming one `server` share its listener, as Elastic Agent gives every INPUT
//! unit of a shipper the same socket: the first binds it with its transport, socket mode
//! and limits; with TLS each unit's certificate joins and leaves the listener's SNI set
//! (`server::sni`); the listener closes when its last unit goes. Routes map each unit's
//! input ids, stream ids and unnamed policy input to its generation (`server` notes).

use crate::config::{
    DlqConfig, DurabilityMode, InputUnitConfig, OutputConfig, ProducerLimits, QueueConfig,
};
use crate::dlq::{DeadLetterQueue, DeadLetters, DlqSettings, SystemClock};
use crate::metrics::{OutputSnapshot, PipelineSnapshot};
use crate::output::{DivertTo, Drains, OutputGeneration, OutputHealth, OutputMetrics, OutputTask};
use crate::queue::{
    Barrier, DiskOptions, DiskQueue, Durability, Generation, MemoryQueue, Queue, Seq,
};
use crate::server::{ListenSecurity, Listener, Routes, ServerAddress};
use crate::storage::handoff::{Handoff, HandoffOutput};
use crate::storage::{DirLock, LockError, StorageLayout};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

struct ActiveOutput {
    unit_id: String,
    config_idx: u64,
    config: OutputConfig,
    task: OutputTask,
}

struct ActiveInput {
    config: InputUnitConfig,
    address: ServerAddress,
}

/// The pipeline of one shipper process.
pub struct Pipeline {
    uuid: String,
    /// Where the disk queue and DLQ live unless their own `path` says otherwise.
    layout: StorageLayout,
    /// The lock on `layout.dir`, taken before the queue opens.
    storage_lock: Option<DirLock>,
    /// OUTPUT unit blocks as the agent sent them, by (unit, config idx): what
    /// `handoff.json` holds for the generations with records left. In memory only.
    output_sources: HashMap<(String, u64), serde_json::Value>,
    /// The generations this process took from its own directory's `handoff.json` at
    /// start; the file is removed once none of them has records left.
    own_handoff: Option<std::collections::HashSet<(String, u64)>>,
    /// Delivers the backlogs other components left under the state root.
    adopter: Option<super::adopt::Adopter>,
    queue: Option<Arc<dyn Queue>>,
    output: Option<ActiveOutput>,
    inputs: BTreeMap<String, ActiveInput>,
    listeners: HashMap<ServerAddress, Listener>,
    routes: watch::Sender<Arc<Routes>>,
    /// Standalone mode routes every input id to the output; managed mode only known ones.
    accept_any_input: bool,
    dead_letters: Option<DeadLetters>,
    /// Seals the DLQ head and applies age retention on a timer.
    dlq_timer: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// Earlier OUTPUT configs of this process, newest last: queued records accepted under
    /// them are sent with their credentials. In memory only (they hold secrets).
    earlier_outputs: Vec<OutputGeneration>,
    /// Records of stopped inputs that go to the DLQ or are dropped instead of sent, and
    /// records acknowledged ahead of the queue's prefix (shared with the output tasks).
    drains: Arc<Drains>,
    /// Output counters of the whole process run, shared by every output generation.
    output_metrics: Arc<OutputMetrics>,
}

/// How many earlier output configs are kept for their queued records.
const EARLIER_OUTPUTS_KEPT: usize = 8;

impl Pipeline {
    /// An empty pipeline for one process run, with its data where `layout` says.
    pub fn new(accept_any_input: bool, layout: StorageLayout) -> Self {
        let (routes, _) = watch::channel(Arc::new(Routes::default()));
        Pipeline {
            uuid: uuid::Uuid::new_v4().to_string(),
            layout,
            storage_lock: None,
            output_sources: HashMap::new(),
            own_handoff: None,
            adopter: None,
            queue: None,
            output: None,
            inputs: BTreeMap::new(),
            listeners: HashMap::new(),
            routes,
            accept_any_input,
            dead_letters: None,
            dlq_timer: None,
            earlier_outputs: Vec::new(),
            drains: Arc::new(Drains::default()),
            output_metrics: Arc::new(OutputMetrics::default()),
        }
    }

    /// The server run id inputs see.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// Where the queue and DLQ live.
    pub fn layout(&self) -> &StorageLayout {
        &self.layout
    }

    /// Whether this process holds the storage directory's lock.
    pub fn storage_locked(&self) -> bool {
        self.storage_lock.is_some()
    }

    /// Takes the storage directory's lock now, once; held for the process's life.
    ///
    /// # Errors
    /// [`LockError::Held`] while another process holds it; [`LockError::Io`].
    pub fn lock_storage(&mut self) -> Result<(), LockError> {
        if self.storage_lock.is_none() {
            self.storage_lock = Some(DirLock::try_acquire(&self.layout.dir)?);
        }
        Ok(())
    }

    /// Keeps a lock taken by a wait (see [`DirLock::acquire_waiting`]) on the storage
    /// directory, and starts adopting what other components left under the state root.
    pub fn storage_locked_by(&mut self, lock: DirLock) {
        self.storage_lock = Some(lock);
        self.start_adoption();
    }

    /// Starts the adoption task (once), when the layout has a state root.
    pub fn start_adoption(&mut self) {
        if self.adopter.is_some() {
            return;
        }
        if let Some(root) = &self.layout.root {
            self.adopter = Some(super::adopt::Adopter::spawn(
                root.clone(),
                self.layout.dir.clone(),
            ));
        }
    }

    /// Remembers the OUTPUT unit block `source` behind (unit, idx), for `handoff.json`.
    pub fn note_output_source(
        &mut self,
        unit_id: &str,
        config_idx: u64,
        source: serde_json::Value,
    ) {
        self.output_sources
            .insert((unit_id.to_string(), config_idx), source);
    }

    /// Watches the queue's acknowledged prefix, once a queue exists.
    pub fn acked(&self) -> Option<watch::Receiver<Seq>> {
        self.queue.as_ref().map(|q| q.acked())
    }

    /// Watches the output's health, while an output runs.
    pub fn health(&self) -> Option<watch::Receiver<OutputHealth>> {
        self.output.as_ref().map(|o| o.task.health())
    }

    /// The OUTPUT unit currently delivering.
    pub fn output_unit(&self) -> Option<&str> {
        self.output.as_ref().map(|o| o.unit_id.as_str())
    }

    /// The acknowledged prefix now.
    pub fn acked_now(&self) -> Seq {
        self.queue.as_ref().map(|q| q.stats().acked).unwrap_or(0)
    }

    /// Wakes when an output acknowledged records ahead of the queue's prefix.
    pub fn acked_ahead(&self) -> tokio::sync::watch::Receiver<u64> {
        self.drains.ledger.subscribe()
    }

    /// Events of an INPUT unit not yet acknowledged (delivered, dead-lettered, dropped):
    /// its own records, whatever holds the queue's acknowledged prefix.
    pub fn pending_for_input(&self, unit_id: &str) -> u64 {
        let Some(queue) = &self.queue else {
            return 0;
        };
        // The count first, then the prefix: see `output::ledger` on why this is never low.
        let behind_prefix = queue.pending_for_input(unit_id);
        let prefix = queue.stats().acked;
        let ahead: u64 = self
            .drains
            .ledger
            .acked_above(prefix)
            .into_iter()
            .filter(|(id, _)| {
                queue
                    .generation(*id)
                    .is_some_and(|g| g.input_unit == unit_id)
            })
            .map(|(_, n)| n)
            .sum();
        behind_prefix.saturating_sub(ahead)
    }

    /// Unacknowledged events of every unit.
    pub fn pending_all(&self) -> u64 {
        self.queue
            .as_ref()
            .map(|q| q.barrier_all().pending)
            .unwrap_or(0)
    }

    /// Creates the queue on first use and (re)starts the output with `config`.
    pub async fn configure_output(
        &mut self,
        unit_id: &str,
        config_idx: u64,
        revision: u64,
        config: OutputConfig,
    ) -> Result<(), String> {
        if self.dead_letters.is_none() && config.dlq.enabled {
            self.lock_storage().map_err(|err| format!("dlq: {err}"))?;
            self.open_dlq(&config.dlq).await?;
        }
        let queue = match &self.queue {
            Some(queue) => {
                if self
                    .output
                    .as_ref()
                    .is_some_and(|o| o.config.queue != config.queue)
                {
                    tracing::warn!(
                        "unit.id" = unit_id,
                        "unit.type" = "output",
                        "queue settings changed; the new settings apply after a restart"
                    );
                }
                queue.clone()
            }
            None => {
                self.lock_storage().map_err(|err| format!("queue: {err}"))?;
                let queue = open_queue(&config.queue, &self.layout.queue_dir()).await?;
                self.queue = Some(queue.clone());
                self.take_own_handoff();
                queue
            }
        };
        let current = OutputGeneration {
            unit_id: unit_id.to_string(),
            config_idx,
            kind: config.kind.clone(),
        };
        let previous = self.output.take();
        if let Some(old) = &previous {
            let generation = OutputGeneration {
                unit_id: old.unit_id.clone(),
                config_idx: old.config_idx,
                kind: old.config.kind.clone(),
            };
            self.keep_earlier_output(generation);
        }
        self.earlier_outputs
            .retain(|g| (&g.unit_id, g.config_idx) != (&current.unit_id, current.config_idx));
        let mut earlier = self.earlier_outputs.clone();
        earlier.reverse(); // newest first
        if let Some(old) = previous {
            old.task.stop().await;
        }
        let task = match OutputTask::spawn(
            &current,
            &earlier,
            queue.clone(),
            self.dead_letters.clone(),
            self.drains.clone(),
            revision,
            self.output_metrics.clone(),
        ) {
            Ok(task) => task,
            Err(reason) => {
                // The old output is stopped and nothing reads the queue: refuse publishes
                // (Unavailable) rather than accept events no output will take.
                tracing::error!("unit.id" = unit_id, "unit.type" = "output", %reason, "the output cannot start; publishes are refused until a config that works arrives");
                self.publish_routes();
                return Err(reason);
            }
        };
        self.output = Some(ActiveOutput {
            unit_id: unit_id.to_string(),
            config_idx,
            config,
            task,
        });
        self.publish_routes();
        Ok(())
    }

    async fn open_dlq(&mut self, config: &DlqConfig) -> Result<(), String> {
        let settings = DlqSettings {
            dir: config.path.clone().unwrap_or_else(|| self.layout.dlq_dir()),
            max_bytes: config.max_bytes.bytes(),
            storage_policy: config.storage_policy,
            retain_age: config.retain.age.map(|a| a.get()),
            flush_interval: config.flush_interval.get(),
        };
        let dir = settings.dir.clone();
        let opened = tokio::task::spawn_blocking(move || {
            DeadLetterQueue::open(settings, Arc::new(SystemClock))
        })
        .await
        .map_err(|err| format!("dlq: opening failed: {err}"))?
        .map_err(|err| {
            format!(
                "dlq.path: cannot open the dead letter queue at {}: {err}",
                dir.display()
            )
        })?;
        let dead_letters = DeadLetters::new(opened);
        let stop = CancellationToken::new();
        let timer = dead_letters.spawn_timer(config.flush_interval.get(), stop.clone());
        self.dlq_timer = Some((stop, timer));
        self.dead_letters = Some(dead_letters);
        tracing::info!(path = %dir.display(), "dead letter queue open");
        Ok(())
    }

    /// Starts accepting events for an INPUT unit, listening where it says. INPUT units
    /// share a listener when they name the same `server` (the agent gives all of them one
    /// socket): with TLS, the unit's certificate joins that listener's SNI set.
    pub async fn attach_input(
        &mut self,
        unit_id: &str,
        config: InputUnitConfig,
    ) -> Result<(), String> {
        let address = ServerAddress::parse(&config.server)
            .map_err(|reason| format!("invalid config key `server`: {reason}"))?;
        let security = ListenSecurity::for_input(unit_id, config.ssl.as_ref(), config.socket_mode)?;
        self.listen_for(unit_id, &address, security, config.limits())
            .await?;
        if let Some(queue) = &self.queue {
            queue.unseal_input(unit_id);
        }
        self.drains.diversions.clear(unit_id);
        let previous = self
            .inputs
            .insert(unit_id.to_string(), ActiveInput { config, address });
        if let Some(previous) = previous {
            self.release(unit_id, &previous.address).await;
        }
        self.publish_routes();
        Ok(())
    }

    /// Binds a standalone listener whose events go to the output (socket mode 0600, no
    /// TLS: refused on TCP addresses other than loopback; the default limits).
    pub async fn listen(&mut self, address: &ServerAddress) -> Result<(), String> {
        if self.listeners.contains_key(address) {
            return Ok(());
        }
        let listener = Listener::bind(
            address.clone(),
            &self.uuid,
            self.routes.subscribe(),
            ListenSecurity::default(),
            ProducerLimits::default(),
        )
        .await?;
        self.listeners.insert(address.clone(), listener);
        Ok(())
    }

    /// Makes `address` serve `unit_id` as `security` says. An address already bound keeps
    /// its transport, socket mode and limits; a TLS unit adds its certificate there. A unit
    /// that is alone on its listener and changes transport gets the listener rebound.
    async fn listen_for(
        &mut self,
        unit_id: &str,
        address: &ServerAddress,
        security: ListenSecurity,
        limits: ProducerLimits,
    ) -> Result<(), String> {
        if let Some(listener) = self.listeners.get(address) {
            if listener.transport() == security.transport() {
                security.check(address)?;
                match security.identity {
                    Some(identity) => listener.add_identity(identity)?,
                    None => {
                        tracing::info!(%address, unit_id, transport = %listener.transport(), "INPUT unit shares the Producer API")
                    }
                }
                return Ok(());
            }
            let others: Vec<&str> = self
                .inputs
                .iter()
                .filter(|(id, input)| id.as_str() != unit_id && &input.address == address)
                .map(|(id, _)| id.as_str())
                .collect();
            if !others.is_empty() {
                return Err(format!(
                    "invalid config key `ssl.enabled`: the Producer API at {address} serves {} for INPUT units {others:?}; every INPUT unit on one server must ask for the same (this one asks for {})",
                    listener.transport(),
                    security.transport()
                ));
            }
            tracing::info!(%address, unit_id, from = %listener.transport(), to = %security.transport(), "Producer API transport changes: rebinding");
            if let Some(listener) = self.listeners.remove(address) {
                listener.stop().await;
            }
        }
        let listener = Listener::bind(
            address.clone(),
            &self.uuid,
            self.routes.subscribe(),
            security,
            limits,
        )
        .await?;
        self.listeners.insert(address.clone(), listener);
        Ok(())
    }

    /// `unit_id` no longer uses `address`: its certificate leaves that listener, which
    /// closes when no INPUT unit uses it any more.
    async fn release(&mut self, unit_id: &str, address: &ServerAddress) {
        let still_here = |input: &ActiveInput| &input.address == address;
        if self.inputs.get(unit_id).is_some_and(still_here) {
            return;
        }
        if self.inputs.values().any(still_here) {
            if let Some(listener) = self.listeners.get(address) {
                listener.remove_identity(unit_id);
            }
            return;
        }
        if let Some(listener) = self.listeners.remove(address) {
            listener.stop().await;
        }
    }

    /// Refuses new events of an INPUT unit; returns its drain barrier, whose `pending`
    /// leaves out what was acknowledged ahead of the queue's prefix.
    pub fn begin_input_drain(&mut self, unit_id: &str) -> Barrier {
        match &self.queue {
            Some(queue) => {
                let barrier = queue.seal_input(unit_id);
                Barrier {
                    seq: barrier.seq,
                    pending: self.pending_for_input(unit_id).min(barrier.pending),
                }
            }
            None => Barrier { seq: 0, pending: 0 },
        }
    }

    /// The barrier for draining everything (the OUTPUT unit stops).
    pub fn begin_output_drain(&mut self) -> Barrier {
        match &self.queue {
            Some(queue) => queue.barrier_all(),
            None => Barrier { seq: 0, pending: 0 },
        }
    }

    /// Sends the queued records of a stopping INPUT unit to `to` instead of the output.
    pub fn divert_input(&self, unit_id: &str, to: DivertTo) {
        self.drains.diversions.set(unit_id, to);
    }

    /// Records of an INPUT unit diverted so far.
    pub fn diverted(&self, unit_id: &str) -> u64 {
        self.drains.diversions.diverted(unit_id)
    }

    /// After a restart of the same component: the credentials of the generations the last
    /// run left records of, from its `handoff.json`, join the earlier outputs.
    fn take_own_handoff(&mut self) {
        if self.layout.root.is_none() {
            return;
        }
        let handoff = match Handoff::read(&self.layout.dir) {
            Ok(Some(handoff)) => handoff,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "handoff.json of this component is unusable; its queued events wait for their OUTPUT unit's config from the agent");
                return;
            }
        };
        let mut taken = 0;
        self.own_handoff = Some(
            handoff
                .outputs
                .iter()
                .map(|o| (o.unit_id.clone(), o.config_idx))
                .collect(),
        );
        for output in handoff.outputs {
            let key = (output.unit_id.clone(), output.config_idx);
            if self.output_sources.contains_key(&key) {
                continue;
            }
            match OutputConfig::parse(output.config.clone(), crate::config::UnknownKeys::Warn) {
                Ok(parsed) => {
                    self.keep_earlier_output(OutputGeneration {
                        unit_id: output.unit_id,
                        config_idx: output.config_idx,
                        kind: parsed.config.kind,
                    });
                    self.output_sources.insert(key, output.config);
                    taken += 1;
                }
                Err(err) => {
                    tracing::warn!(unit_id = %output.unit_id, config_idx = output.config_idx, error = %err, "an output config in handoff.json is invalid; its events wait for the agent's")
                }
            }
        }
        tracing::info!(path = %self.layout.handoff_path().display(), generations = taken, "took the output configs of the last run's queued events from handoff.json");
    }

    /// Removes this directory's `handoff.json` (a secret on disk) once the generations it
    /// was read for have no records left; until then a SIGKILL would still need it.
    pub fn retire_own_handoff(&mut self) {
        let (Some(generations), Some(queue)) = (&self.own_handoff, &self.queue) else {
            return;
        };
        let still_needed = queue
            .pending_generations()
            .iter()
            .any(|(g, _)| generations.contains(&(g.output_unit.clone(), g.output_config_idx)));
        if still_needed {
            return;
        }
        self.own_handoff = None;
        match Handoff::remove(&self.layout.dir) {
            Ok(()) => {
                tracing::info!(path = %self.layout.handoff_path().display(), "handoff.json removed: the last run's queued events are delivered")
            }
            Err(err) => tracing::warn!(error = %err, "cannot remove handoff.json"),
        }
    }

    /// Writes `handoff.json` for the generations that still have records (state-root mode
    /// and a disk queue only): whoever opens this queue next sends them with their own
    /// credentials. The one file holding a secret; owner-only, removed once the queue is
    /// empty.
    fn write_handoff(&self, queue: &Arc<dyn Queue>) {
        if self.layout.root.is_none() || queue.stats().kind != "disk" {
            return;
        }
        let mut outputs: Vec<HandoffOutput> = Vec::new();
        let mut unknown = 0u64;
        for (generation, pending) in queue.pending_generations() {
            let key = (generation.output_unit.clone(), generation.output_config_idx);
            if let Some(known) = outputs
                .iter_mut()
                .find(|o| (&o.unit_id, o.config_idx) == (&key.0, key.1))
            {
                known.pending_events += pending;
                continue;
            }
            match self.output_sources.get(&key) {
                Some(config) => outputs.push(HandoffOutput {
                    unit_id: key.0,
                    config_idx: key.1,
                    pending_events: pending,
                    config: config.clone(),
                }),
                None => unknown += pending,
            }
        }
        if unknown > 0 {
            tracing::warn!(events = unknown, "queued events of an output generation whose config this process never had: the next process holds them for the agent's config");
        }
        if outputs.is_empty() {
            return;
        }
        let handoff = Handoff {
            version: crate::storage::handoff::VERSION,
            component_id: self
                .layout
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            written_at_ms: crate::metrics::unix_ms_now(),
            outputs,
        };
        let pending: u64 = handoff.outputs.iter().map(|o| o.pending_events).sum();
        match handoff.write(&self.layout.dir) {
            Ok(()) => tracing::info!(
                path = %self.layout.handoff_path().display(),
                generations = handoff.outputs.len(),
                pending_events = pending,
                "handoff written: the output configs of the queued events are kept (owner-only) for whoever opens this queue next"
            ),
            Err(err) => {
                tracing::error!(error = %err, pending_events = pending, "cannot write handoff.json: events left in the queue wait for their OUTPUT unit's config from the agent")
            }
        }
    }

    /// Adds `generation` to the earlier outputs (newest last, replacing an entry of the same
    /// unit and idx), keeping at most [`EARLIER_OUTPUTS_KEPT`].
    fn keep_earlier_output(&mut self, generation: OutputGeneration) {
        self.earlier_outputs
            .retain(|g| (&g.unit_id, g.config_idx) != (&generation.unit_id, generation.config_idx));
        self.earlier_outputs.push(generation);
        if self.earlier_outputs.len() > EARLIER_OUTPUTS_KEPT {
            self.earlier_outputs.remove(0);
        }
    }

    /// Keeps an OUTPUT unit's config that is expected STOPPED (the agent resends it after
    /// a restart) so its queued records go with its credentials; restarts the running
    /// output so it knows them.
    pub async fn remember_output(
        &mut self,
        unit_id: &str,
        config_idx: u64,
        config: OutputConfig,
        revision: u64,
    ) -> Result<(), String> {
        let known = self
            .earlier_outputs
            .iter()
            .any(|g| g.unit_id == unit_id && g.config_idx == config_idx);
        let running = self
            .output
            .as_ref()
            .is_some_and(|o| o.unit_id == unit_id && o.config_idx == config_idx);
        if known || running {
            return Ok(());
        }
        self.keep_earlier_output(OutputGeneration {
            unit_id: unit_id.to_string(),
            config_idx,
            kind: config.kind,
        });
        tracing::info!(
            unit_id,
            config_idx,
            "kept the config of a stopping output for its queued events"
        );
        if let Some(current) = &self.output {
            let (id, idx, config) = (
                current.unit_id.clone(),
                current.config_idx,
                current.config.clone(),
            );
            self.configure_output(&id, idx, revision, config).await?;
        }
        Ok(())
    }

    /// Forgets an INPUT unit: its ids stop routing and its listener closes if unused.
    pub async fn detach_input(&mut self, unit_id: &str) {
        if let Some(input) = self.inputs.remove(unit_id) {
            self.publish_routes();
            self.release(unit_id, &input.address).await;
        }
    }

    /// Stops the output if `unit_id` is the one running.
    pub async fn stop_output(&mut self, unit_id: &str) {
        if self.output.as_ref().is_some_and(|o| o.unit_id == unit_id) {
            if let Some(output) = self.output.take() {
                output.task.stop().await;
            }
            self.publish_routes();
        }
    }

    fn publish_routes(&self) {
        let mut routes = Routes {
            queue: self.queue.clone(),
            output_ready: self.output.is_some(),
            ..Routes::default()
        };
        if let (Some(queue), Some(output)) = (&self.queue, &self.output) {
            let generation = |input_unit: &str| {
                queue.register(Generation {
                    input_unit: input_unit.to_string(),
                    output_unit: output.unit_id.clone(),
                    output_config_idx: output.config_idx,
                })
            };
            if self.accept_any_input {
                routes.any_input = Some(generation(""));
            }
            let mut unnamed = Vec::new();
            let mut unnamed_at: HashMap<&ServerAddress, Vec<_>> = HashMap::new();
            for (unit_id, input) in &self.inputs {
                let id = generation(unit_id);
                if input.config.owns_unnamed_on_server() {
                    unnamed_at.entry(&input.address).or_default().push(id);
                }
                if let Some(defaults) = input.config.data_stream_defaults() {
                    routes.defaults.insert(id, defaults.clone());
                }
                for input_id in input.config.input_ids() {
                    routes.inputs.insert(input_id, id);
                }
                for stream_id in input.config.stream_ids() {
                    routes.streams.entry(stream_id).or_insert(id);
                }
                if input.config.has_unnamed_input() {
                    unnamed.push(id);
                }
            }
            // Events without an input id are routable only when one unit can be meant.
            if let [only] = unnamed[..] {
                routes.unnamed = Some(only);
            }
            // Likewise per listener for `agent-shipper` inputs: two on one server share
            // no unnamed events (a client there must name its input).
            for (address, ids) in unnamed_at {
                match ids[..] {
                    [only] => {
                        routes.unnamed_at.insert(address.clone(), only);
                    }
                    _ => {
                        tracing::warn!(%address, inputs = ids.len(), "several agent-shipper inputs share this server: events without source.input_id there are refused")
                    }
                }
            }
        }
        self.routes.send_replace(Arc::new(routes));
    }

    /// Queue figures, for diagnostics' `units.json`: the [`Pipeline::snapshot`] figures in
    /// that file's long-standing shape, plus the run id and the listeners.
    pub fn stats(&self) -> serde_json::Value {
        let PipelineSnapshot {
            queue,
            output,
            output_metrics,
            dlq,
            ..
        } = self.snapshot();
        serde_json::json!({
            "uuid": self.uuid,
            "dlq": dlq,
            "queue": queue,
            "output": output.map(|o| serde_json::json!({
                "unit_id": o.unit_id,
                "config_idx": o.config_idx,
                "type": o.kind,
                "metrics": output_metrics,
            })),
            "listeners": self.listeners.keys().map(|a| a.to_string()).collect::<Vec<_>>(),
        })
    }

    /// The pipeline's figures now (units are the supervisor's to add).
    pub fn snapshot(&self) -> PipelineSnapshot {
        PipelineSnapshot {
            units: Vec::new(),
            drains: Vec::new(),
            queue: self.queue.as_ref().map(|q| q.stats()),
            output: self.output.as_ref().map(|o| {
                let health = o.task.health().borrow().clone();
                OutputSnapshot {
                    unit_id: o.unit_id.clone(),
                    config_idx: o.config_idx,
                    kind: o.config.kind.type_name(),
                    health: match health {
                        OutputHealth::Healthy => "healthy",
                        OutputHealth::Degraded(_) => "degraded",
                    },
                    health_reason: match health {
                        OutputHealth::Healthy => None,
                        OutputHealth::Degraded(reason) => Some(reason),
                    },
                }
            }),
            output_metrics: self.output_metrics.snapshot(),
            dlq: self.dead_letters.as_ref().map(|d| d.metrics()),
        }
    }

    /// The effective configuration, secrets redacted: the output block, the inputs and the
    /// addresses listened on (for DIAGNOSTICS).
    pub fn effective_config(&self) -> serde_json::Value {
        serde_json::json!({
            "output": self.output.as_ref().map(|o| serde_json::json!({
                "unit_id": o.unit_id,
                "config_idx": o.config_idx,
                "config": o.config.effective(),
            })),
            "inputs": self.inputs.iter().map(|(unit_id, input)| serde_json::json!({
                "unit_id": unit_id,
                "config": input.config,
            })).collect::<Vec<_>>(),
            "data_path": self.layout.dir,
            "state_root": self.layout.root,
            "listeners": self.listeners.keys().map(|a| a.to_string()).collect::<Vec<_>>(),
        })
    }

    /// Stops accepting, lets the output deliver for at most `timeout`, then stops it.
    pub async fn shutdown(mut self, timeout: Duration) {
        // The handoff written now replaces the one read at start.
        self.own_handoff = None;
        if let Some(queue) = &self.queue {
            queue.close();
            if queue.barrier_all().pending > 0 {
                self.write_handoff(queue);
            }
        }
        for (_, listener) in self.listeners.drain() {
            listener.stop().await;
        }
        if let (Some(queue), Some(_)) = (&self.queue, &self.output) {
            let target = queue.barrier_all();
            let mut acked = queue.acked();
            let drained =
                tokio::time::timeout(timeout, acked.wait_for(|acked| *acked >= target.seq)).await;
            let left = queue.barrier_all().pending;
            match drained {
                Ok(_) => tracing::info!(delivered = target.pending, "queue drained for shutdown"),
                Err(_) if queue.stats().kind == "memory" => tracing::warn!(
                    lost = left,
                    timeout_ms = timeout.as_millis() as u64,
                    "shutdown timeout reached; events left in the memory queue are lost"
                ),
                Err(_) => tracing::info!(
                    left_in_queue = left,
                    timeout_ms = timeout.as_millis() as u64,
                    "shutdown timeout reached; the events left stay in the disk queue and are sent after a restart"
                ),
            }
        }
        if let Some(output) = self.output.take() {
            output.task.stop().await;
        }
        if let Some(adopter) = self.adopter.take() {
            adopter.stop().await;
        }
        if let Some(dead_letters) = &self.dead_letters {
            dead_letters.flush().await;
        }
        if let Some((stop, timer)) = self.dlq_timer.take() {
            stop.cancel();
            let _ = timer.await;
        }
        if let Some(queue) = &self.queue {
            queue.persist().await;
            let stats = queue.stats();
            tracing::info!(
                kind = stats.kind,
                unacked_events = stats.events,
                head = stats.head,
                acked = stats.acked,
                "queue state saved"
            );
            if stats.events == 0 && self.layout.root.is_some() {
                match Handoff::remove(&self.layout.dir) {
                    Ok(()) => {}
                    Err(err) => tracing::warn!(error = %err, "cannot remove handoff.json"),
                }
            }
        }
    }
}

/// Opens the queue `config` describes; a disk queue is opened off the runtime threads.
async fn open_queue(config: &QueueConfig, default_dir: &Path) -> Result<Arc<dyn Queue>, String> {
    match config {
        QueueConfig::Memory(mem) => {
            tracing::warn!("using the memory queue: queued events are lost if the process dies");
            Ok(Arc::new(MemoryQueue::new(mem.events, mem.bytes.bytes())))
        }
        QueueConfig::Disk(disk) => {
            let options = DiskOptions {
                dir: disk
                    .path
                    .clone()
                    .unwrap_or_else(|| default_dir.to_path_buf()),
                max_size: disk.max_size.bytes(),
                segment_size: disk.segment_size.bytes(),
                durability: match disk.durability {
                    DurabilityMode::Batch => Durability::Batch,
                    DurabilityMode::Interval => Durability::Interval(disk.sync_interval.get()),
                },
                read_ahead: disk.read_ahead.bytes(),
            };
            let dir = options.dir.clone();
            let opened = tokio::task::spawn_blocking(move || DiskQueue::open(options))
                .await
                .map_err(|err| format!("queue.disk: opening the queue failed: {err}"))?;
            match opened {
                Ok(queue) => Ok(Arc::new(queue)),
                Err(err) => Err(format!(
                    "queue.disk.path: cannot open the queue at {}: {err}",
                    dir.display()
                )),
            }
        }
    }
}
