//! `type: elasticsearch`: `_bulk` requests of `create` actions into data streams.
//!
//! # What it owns
//! `workers` tasks, each reading a batch from the queue (at most `bulk_max_size` events and
//! `bulk_max_bytes` bytes), sending it, and acknowledging each record once it is indexed
//! (2xx), already indexed (409: an earlier send of the same `_id` succeeded) or
//! dead-lettered (any other 4xx item). Items answered 429 or 5xx, and whole requests that
//! fail (unreachable hosts, 429, 5xx, 401 with the newest credentials), are sent again
//! after an exponential backoff with jitter; nothing is dropped.
//!
//! # Invariants
//! - A record is acknowledged only after Elasticsearch said it is indexed, or after it
//!   is in the dead letter queue. A cancelled or failed request leaves its records
//!   unacknowledged; they are sent again with the same `_id` (see [`bulk::document_id`]),
//!   so the index holds each event once.
//! - Each record is sent with the credentials of the output generation it was accepted
//!   under (its OUTPUT unit and config idx, from the queue's generation table), never with
//!   another OUTPUT unit's. After a restart, records of an OUTPUT unit whose config the
//!   agent has not sent (again) wait for it: the output holds them, unacknowledged, until
//!   it is restarted with that config or a drain diverts them (`on_remove`,
//!   `drain_timeout`); the output turns DEGRADED saying so. A config idx of a known unit
//!   other than the ones kept (the agent changed that unit in place, and never resends an
//!   old idx) uses that unit's newest config, as an earlier config that is not
//!   Elasticsearch's or cannot be built uses the current one. A 401
//!   with an older generation's credentials is retried at once with the newest ones, and
//!   that generation's later records go straight to the newest (an invalidated key does
//!   not come back), so a rotated key costs one 401, not one per batch.
//! - A 413 splits the request in halves until the item at fault is alone; that item is
//!   dead-lettered with the status. A 400 for the whole request is not any one item's
//!   fault (a proxy, a header): it is retried with backoff like a 5xx, never split, never
//!   dead-lettered.
//! - Health: DEGRADED after `degraded_timeout` without progress, with the last error as
//!   the message; HEALTHY again at the next progress. Progress is an item indexed (or
//!   already there, or dead-lettered for good): a 2xx `_bulk` whose items all failed is a
//!   failure, and its message says how many items failed and why.
//!
//! # Connection
//! [`client`] sends each request with the configured `headers` (marked sensitive, never
//! logged), to `{host}{path}/_bulk` with `parameters`, through `proxy_url` or the
//! environment's proxy (none with `proxy_disable`), keeping idle connections for
//! `idle_connection_timeout`. `tls` builds the rustls config: roots, client certificate,
//! `ssl.supported_protocols`, and the `ssl.ca_trusted_fingerprint` verifier. `workers` and
//! the other performance keys arrive already resolved from `preset` (see
//! [`crate::config::Preset`]).

pub mod bulk;
pub mod client;
mod tls;

use super::backoff::Backoff;
use super::health::HealthTracker;
use super::metrics::OutputMetrics;
use super::{dead_letter, divert, dlq_failure, LoopContext, OutputGeneration, Rejected};
use crate::config::{ElasticsearchConfig, OutputKind};
use crate::dlq::Reason;
use crate::queue::{GenerationId, Record, Seq};
use bulk::ItemOutcome;
pub use client::{BulkClient, ClientConfigError, RequestError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One generation's client.
struct Target {
    unit_id: String,
    config_idx: u64,
    client: BulkClient,
    /// Shared mutable state by design: set by the first worker that got a 401 with these
    /// (earlier) credentials; from then on this generation's records use the newest.
    refused: std::sync::atomic::AtomicBool,
}

/// What every worker of one output shares: read-only after start.
struct Shared {
    config: ElasticsearchConfig,
    /// Clients by (OUTPUT unit, config idx); `newest` is the current config's.
    targets: HashMap<(String, u64), Arc<Target>>,
    newest: Arc<Target>,
    /// Generation id → client, filled as ids are met (the table only grows).
    by_generation: std::sync::Mutex<HashMap<GenerationId, Arc<Target>>>,
    health: Arc<HealthTracker>,
    metrics: Arc<OutputMetrics>,
}

/// Clients by (OUTPUT unit, config idx), the current generation's first; `None` for an
/// earlier generation known to have no client of its own (its records use the current
/// one).
type GenerationClients = Vec<((String, u64), Option<BulkClient>)>;

/// Builds the clients for the current generation and the earlier ones still known.
///
/// # Errors
/// The current config's client cannot be built (a CA file is unreadable, …). An earlier
/// generation's failure is logged and that generation falls back to the newest client.
pub(crate) fn prepare(
    current: &OutputGeneration,
    config: &ElasticsearchConfig,
    earlier: &[OutputGeneration],
) -> Result<GenerationClients, ClientConfigError> {
    let mut clients = vec![(
        (current.unit_id.clone(), current.config_idx),
        Some(BulkClient::new(config)?),
    )];
    for generation in earlier {
        let key = (generation.unit_id.clone(), generation.config_idx);
        let OutputKind::Elasticsearch(old) = &generation.kind else {
            clients.push((key, None));
            continue;
        };
        match BulkClient::new(old) {
            Ok(client) => clients.push((key, Some(client))),
            Err(err) => {
                clients.push((key, None));
                tracing::warn!(
                "unit.id" = %generation.unit_id,
                "unit.type" = "output",
                config_idx = generation.config_idx,
                error = %err,
                "an earlier output config cannot be used; its events go with the newest credentials"
                )
            }
        }
    }
    Ok(clients)
}

/// Runs the workers until cancelled or the queue is closed and empty.
pub(crate) async fn run(
    config: ElasticsearchConfig,
    clients: GenerationClients,
    context: LoopContext,
    health: Arc<HealthTracker>,
    metrics: Arc<OutputMetrics>,
) {
    let mut targets = HashMap::new();
    let mut newest: Option<Arc<Target>> = None;
    for ((unit_id, config_idx), client) in clients {
        let Some(client) = client else {
            if let Some(newest) = &newest {
                targets.insert((unit_id, config_idx), newest.clone());
            }
            continue;
        };
        let target = Arc::new(Target {
            unit_id: unit_id.clone(),
            config_idx,
            client,
            refused: std::sync::atomic::AtomicBool::new(false),
        });
        newest.get_or_insert_with(|| target.clone());
        targets.insert((unit_id, config_idx), target);
    }
    let Some(newest) = newest else { return };
    tracing::info!(
        hosts = %config.hosts.join(","),
        preset = config.preset.map_or("none", |preset| preset.name()),
        workers = config.workers,
        bulk_max_size = config.bulk_max_size,
        idle_connection_timeout = %config.idle_connection_timeout,
        proxy = config.proxy_url.is_some(),
        credentials = newest.client.credentials(),
        earlier_generations = targets.len() - 1,
        "elasticsearch output started"
    );
    first_output_start();
    let shared = Arc::new(Shared {
        config,
        targets,
        newest,
        by_generation: std::sync::Mutex::new(HashMap::new()),
        health,
        metrics,
    });
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..shared.config.workers {
        workers.spawn(worker(shared.clone(), context.clone()));
    }
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(Err(err)) => tracing::error!(error = %err, "elasticsearch worker ended abnormally"),
                Some(Ok(())) => {}
                None => break,
            },
            _ = ticker.tick() => shared.health.check(Instant::now()),
        }
    }
    if context.cancel.is_cancelled() {
        // Unacknowledged records of interrupted requests go to the next reader.
        context.queue.rewind();
    }
    tracing::info!(
        acked_since_start = shared.metrics.snapshot().events_acked,
        "elasticsearch output stopped"
    );
}

async fn worker(shared: Arc<Shared>, context: LoopContext) {
    let max_events = shared.config.bulk_max_size;
    let max_bytes = shared.config.bulk_max_bytes.bytes() as usize;
    loop {
        let batch = tokio::select! {
            biased;
            _ = context.cancel.cancelled() => return,
            batch = context.queue.read(max_events, max_bytes) => batch,
        };
        let Some(batch) = batch else { return };
        if !deliver_batch(&shared, &context, batch).await {
            return;
        }
    }
}

/// A record on its way, with the client it goes with.
struct Pending {
    record: Record,
    target: Arc<Target>,
}

/// What one pass over the pending records produced.
#[derive(Default)]
struct Pass {
    done: Vec<(Seq, GenerationId)>,
    rejected: Vec<Rejected>,
    retry: Vec<Pending>,
    /// The last failure, for health and logs.
    failure: Option<String>,
    /// Items answered 429/5xx in 2xx answers, and the items those answers held.
    items_failed: usize,
    items_answered: usize,
}

impl Pass {
    /// Whether some record got a final answer (indexed, already there, dead-lettered).
    fn progressed(&self) -> bool {
        !self.done.is_empty() || !self.rejected.is_empty()
    }

    /// Why nothing progressed, for health and logs.
    fn reason(&self) -> String {
        let last = self
            .failure
            .clone()
            .unwrap_or_else(|| "items to retry".into());
        if self.items_failed > 0 {
            format!(
                "{} of {} items failed, last: {last}",
                self.items_failed, self.items_answered
            )
        } else {
            last
        }
    }
}

impl Shared {
    /// The client for records of `generation`; `None` while this output has no
    /// credentials of that generation's OUTPUT unit (see the module docs).
    fn target_for(&self, context: &LoopContext, generation: GenerationId) -> Option<Arc<Target>> {
        let mut cache = self.by_generation.lock().unwrap_or_else(|p| p.into_inner());
        let target = match cache.get(&generation) {
            Some(target) => target.clone(),
            None => {
                let target = match context.queue.generation(generation) {
                    // Not in the table: nothing says whose the record is.
                    None => self.newest.clone(),
                    Some(g) => self.target_of(&g.output_unit, g.output_config_idx)?,
                };
                cache.insert(generation, target.clone());
                target
            }
        };
        if target.refused.load(std::sync::atomic::Ordering::Relaxed) {
            Some(self.newest.clone())
        } else {
            Some(target)
        }
    }

    /// That config's client, or the unit's newest kept config's; `None` for a unit this
    /// output has no config of.
    fn target_of(&self, unit_id: &str, config_idx: u64) -> Option<Arc<Target>> {
        if let Some(target) = self.targets.get(&(unit_id.to_string(), config_idx)) {
            return Some(target.clone());
        }
        self.targets
            .iter()
            .filter(|((unit, _), _)| unit == unit_id)
            .max_by_key(|((_, idx), _)| *idx)
            .map(|(_, target)| target.clone())
    }
}

/// Delivers one batch completely (indexed or dead-lettered). Returns false when cancelled
/// first; the records not yet acknowledged are then left for the next reader.
async fn deliver_batch(shared: &Shared, context: &LoopContext, batch: Vec<Record>) -> bool {
    let mut pending = Vec::with_capacity(batch.len());
    let mut waiting = Vec::new();
    for record in batch {
        match shared.target_for(context, record.generation) {
            Some(target) => pending.push(Pending { record, target }),
            None => waiting.push(record),
        }
    }
    if !pending.is_empty() && !deliver_pending(shared, context, pending).await {
        return false;
    }
    hold_without_credentials(shared, context, waiting).await
}

/// How often held records are checked against the diversion rules.
const HOLD_CHECK: Duration = Duration::from_millis(250);

/// When the first Elasticsearch output of this process started (shortly after the agent's
/// first check-in): outputs restart at every key rotation, the process does not.
fn first_output_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// How long records wait for their OUTPUT unit's config after the first output started. The
/// agent sends every unit it still runs, those expected STOPPED too, in its first check-in
/// after a restart; a config that has not come by then belongs to a unit the agent forgot.
const HOLD_MAX: Duration = Duration::from_secs(10);

/// Holds records whose OUTPUT unit's credentials this output does not have, so that none
/// goes out with another unit's key while the agent may still send that unit: until the
/// output is replaced (returns false: they go to the next reader, which may know them), a
/// diversion takes them, or [`HOLD_MAX`] has passed since the first output started. Then the
/// unit is gone from the agent's policy (typically: its drain had finished and the crash
/// came before the checkpoint, so its records come back as a resend) and the records go
/// with the newest credentials, as for an unknown generation; a WARN line says so.
async fn hold_without_credentials(
    shared: &Shared,
    context: &LoopContext,
    mut waiting: Vec<Record>,
) -> bool {
    if waiting.is_empty() {
        return true;
    }
    let units: std::collections::BTreeSet<String> = waiting
        .iter()
        .filter_map(|r| context.queue.generation(r.generation))
        .map(|g| format!("{}#{}", g.output_unit, g.output_config_idx))
        .collect();
    let units = units.into_iter().collect::<Vec<_>>().join(", ");
    let reason = format!(
        "queued events wait for the config of OUTPUT unit {units}, which the agent has not sent since the restart; they are sent with no other unit's credentials"
    );
    tracing::warn!(events = waiting.len(), %reason, "events held");
    let give_up = first_output_start() + HOLD_MAX;
    loop {
        shared.health.failure(reason.clone(), Instant::now());
        tokio::select! {
            biased;
            _ = context.cancel.cancelled() => return false,
            _ = tokio::time::sleep(HOLD_CHECK) => {}
        }
        if !context.drains.diversions.is_empty() {
            let (keep, handled) = divert(context, &shared.metrics, waiting).await;
            ack(context, handled, &shared.metrics);
            waiting = keep;
            if waiting.is_empty() {
                return true;
            }
        }
        if Instant::now() >= give_up {
            break;
        }
    }
    tracing::warn!(
        events = waiting.len(),
        units = %units,
        waited_s = HOLD_MAX.as_secs(),
        "the agent no longer runs these OUTPUT units: their queued events go with the newest output's credentials"
    );
    let pending: Vec<Pending> = {
        let mut cache = shared
            .by_generation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        waiting
            .into_iter()
            .map(|record| {
                cache.insert(record.generation, shared.newest.clone());
                Pending {
                    target: shared.newest.clone(),
                    record,
                }
            })
            .collect()
    };
    deliver_pending(shared, context, pending).await
}

/// Delivers records whose client is known completely; false when cancelled first.
async fn deliver_pending(
    shared: &Shared,
    context: &LoopContext,
    mut pending: Vec<Pending>,
) -> bool {
    let mut backoff = Backoff::new(
        shared.config.backoff.init.get(),
        shared.config.backoff.max.get(),
    );
    let mut rules = context.drains.diversions.subscribe();
    loop {
        rules.borrow_and_update();
        if !context.drains.diversions.is_empty() {
            pending = apply_diversions(shared, context, pending).await;
            if pending.is_empty() {
                return true;
            }
        }
        let pass = tokio::select! {
            biased;
            _ = context.cancel.cancelled() => return false,
            pass = send_pass(shared, context, pending) => pass,
        };
        let progressed = pass.progressed();
        let reason = pass.reason();
        let Pass {
            done,
            rejected,
            retry,
            ..
        } = pass;
        if progressed {
            shared.health.success();
        }
        let mut acked = done;
        if !store_rejected(shared, context, rejected, &mut acked).await {
            ack(context, acked, &shared.metrics);
            return false;
        }
        ack(context, acked, &shared.metrics);
        if retry.is_empty() {
            return true;
        }
        let delay = backoff.next_delay();
        if !progressed {
            shared.health.failure(reason.clone(), Instant::now());
        }
        shared.metrics.retried(retry.len() as u64);
        tracing::warn!(
            events = retry.len(),
            retry_in_ms = delay.as_millis() as u64,
            %reason,
            "bulk delivery incomplete; will retry"
        );
        tokio::select! {
            biased;
            _ = context.cancel.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
            _ = context.diversions_changed(&mut rules) => {}
        }
        pending = retry;
    }
}

/// Dead-letters `rejected`, adding each stored one to `acked`. While the DLQ cannot store
/// some (its files fail) they are retried after a pause, with the reason in the output's
/// health, and never acknowledged. False when cancelled first: what was not stored stays
/// unacknowledged in the queue.
async fn store_rejected(
    shared: &Shared,
    context: &LoopContext,
    mut rejected: Vec<Rejected>,
    acked: &mut Vec<(Seq, GenerationId)>,
) -> bool {
    let mut backoff = Backoff::new(
        shared.config.backoff.init.get(),
        shared.config.backoff.max.get(),
    );
    loop {
        let ids: Vec<(Seq, GenerationId)> = rejected
            .iter()
            .map(|r| (r.record.seq, r.record.generation))
            .collect();
        let unstored = dead_letter(context, rejected).await;
        shared
            .metrics
            .dead_lettered((ids.len() - unstored.len()) as u64);
        let held: std::collections::HashSet<Seq> = unstored.iter().map(|r| r.record.seq).collect();
        acked.extend(ids.into_iter().filter(|(seq, _)| !held.contains(seq)));
        if unstored.is_empty() {
            return true;
        }
        let reason = dlq_failure(context);
        shared.health.failure(reason.clone(), Instant::now());
        let delay = backoff.next_delay();
        tracing::warn!(events = unstored.len(), retry_in_ms = delay.as_millis() as u64, %reason, "will retry");
        tokio::select! {
            biased;
            _ = context.cancel.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        rejected = unstored;
    }
}

/// Dead-letters or drops (and acknowledges) the pending records of stopped inputs that
/// the diversion rules name; returns the rest, each with its client.
async fn apply_diversions(
    shared: &Shared,
    context: &LoopContext,
    pending: Vec<Pending>,
) -> Vec<Pending> {
    let (records, targets): (Vec<Record>, Vec<Arc<Target>>) =
        pending.into_iter().map(|p| (p.record, p.target)).unzip();
    let by_seq: HashMap<Seq, Arc<Target>> = records.iter().map(|r| r.seq).zip(targets).collect();
    let (keep, handled) = divert(context, &shared.metrics, records).await;
    ack(context, handled, &shared.metrics);
    keep.into_iter()
        .map(|record| Pending {
            target: by_seq
                .get(&record.seq)
                .cloned()
                .unwrap_or_else(|| shared.newest.clone()),
            record,
        })
        .collect()
}

/// Acknowledges `records` (sequence number and generation each) and counts them.
fn ack(context: &LoopContext, mut records: Vec<(Seq, GenerationId)>, metrics: &OutputMetrics) {
    if records.is_empty() {
        return;
    }
    metrics.acked(records.len() as u64);
    context.ack(&mut records);
}

/// Sends every pending record once (splitting requests that are too large), grouped by
/// the client each goes with.
async fn send_pass(shared: &Shared, context: &LoopContext, pending: Vec<Pending>) -> Pass {
    let mut pass = Pass::default();
    // Work list of requests to make: records that go together with one client.
    let mut groups: Vec<(Arc<Target>, Vec<Record>)> = Vec::new();
    for p in pending {
        match groups.iter_mut().find(|(t, _)| Arc::ptr_eq(t, &p.target)) {
            Some((_, records)) => records.push(p.record),
            None => groups.push((p.target, vec![p.record])),
        }
    }
    let max_bytes = shared.config.bulk_max_bytes.bytes() as usize;
    let identity = context.queue.identity().to_string();
    while let Some((target, records)) = groups.pop() {
        let now = crate::output::document::rfc3339(&std::time::SystemTime::now().into());
        let encoded = bulk::encode(&records, &identity, &now);
        for (i, reason) in encoded.undecodable {
            pass.rejected.push(Rejected {
                record: records[i].clone(),
                reason,
            });
        }
        if encoded.sent.is_empty() {
            continue;
        }
        let sent: Vec<Record> = encoded.sent.iter().map(|&i| records[i].clone()).collect();
        if encoded.body.len() > max_bytes && sent.len() > 1 {
            let (a, b) = split(sent);
            groups.push((target.clone(), b));
            groups.push((target, a));
            continue;
        }
        let body = target.client.prepare(encoded.body);
        let started = Instant::now();
        let result = target.client.bulk(body).await;
        shared.metrics.request(
            started.elapsed(),
            result.as_ref().map(|_| ()).map_err(|e| e.status()),
        );
        match result {
            Ok(reply) => {
                pass.items_answered += sent.len();
                match bulk::parse_response(&reply, sent.len()) {
                    Ok(outcomes) => {
                        for (record, outcome) in sent.into_iter().zip(outcomes) {
                            shared.metrics.item(&outcome);
                            match outcome {
                                ItemOutcome::Indexed | ItemOutcome::AlreadyIndexed => {
                                    pass.done.push((record.seq, record.generation))
                                }
                                ItemOutcome::Reject(reason) => {
                                    pass.rejected.push(Rejected { record, reason })
                                }
                                ItemOutcome::Retry(reason) => {
                                    pass.items_failed += 1;
                                    pass.failure = Some(format!(
                                        "item {}: {}: {}",
                                        reason.status.unwrap_or_default(),
                                        reason.error_type,
                                        reason.message
                                    ));
                                    pass.retry.push(Pending {
                                        record,
                                        target: target.clone(),
                                    });
                                }
                            }
                        }
                    }
                    Err(err) => {
                        pass.failure = Some(err.to_string());
                        pass.retry.extend(sent.into_iter().map(|record| Pending {
                            record,
                            target: target.clone(),
                        }));
                    }
                }
            }
            Err(err) => match err.status() {
                Some(413) if sent.len() > 1 => {
                    tracing::info!(events = sent.len(), %err, "splitting the bulk request");
                    let (a, b) = split(sent);
                    groups.push((target.clone(), b));
                    groups.push((target, a));
                }
                Some(413) => {
                    let summary = match &err {
                        RequestError::Status { summary, .. } => summary.clone(),
                        other => other.to_string(),
                    };
                    for record in sent {
                        pass.rejected.push(Rejected {
                            record,
                            reason: Reason {
                                status: Some(413),
                                error_type: "request_entity_too_large".into(),
                                message: summary.clone(),
                            },
                        });
                    }
                }
                Some(401) if !Arc::ptr_eq(&target, &shared.newest) => {
                    let first = !target
                        .refused
                        .swap(true, std::sync::atomic::Ordering::Relaxed);
                    if first {
                        tracing::warn!(
                            "unit.id" = %target.unit_id,
                            "unit.type" = "output",
                            config_idx = target.config_idx,
                            credentials = target.client.credentials(),
                            newest = shared.newest.client.credentials(),
                            events = sent.len(),
                            "401 with an earlier generation's credentials; retrying with the newest, and sending that generation's later events with the newest too"
                        );
                    } else {
                        // A batch that was already on its way with the old credentials.
                        tracing::debug!(
                            "unit.id" = %target.unit_id,
                            "unit.type" = "output",
                            config_idx = target.config_idx,
                            events = sent.len(),
                            "401 with an earlier generation's credentials; retrying with the newest"
                        );
                    }
                    groups.push((shared.newest.clone(), sent));
                }
                _ => {
                    let describe = match err.status() {
                        Some(401) => {
                            format!("{err} (credentials: {})", target.client.credentials())
                        }
                        _ => err.to_string(),
                    };
                    pass.failure = Some(describe);
                    pass.retry.extend(sent.into_iter().map(|record| Pending {
                        record,
                        target: target.clone(),
                    }));
                }
            },
        }
    }
    pass
}

fn split(mut records: Vec<Record>) -> (Vec<Record>, Vec<Record>) {
    let tail = records.split_off(records.len() / 2);
    (records, tail)
}
