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
//!   under (its OUTPUT unit and config idx, from the queue's generation table). A
//!   generation this process has no config for (restarted since) uses the newest. A 401
//!   with an older generation's credentials is retried at once with the newest ones, and
//!   that generation's later records go straight to the newest (an invalidated key does
//!   not come back), so a rotated key costs one 401, not one per batch.
//! - A 413 (or a 400 for the whole request) splits the request in halves until the item
//!   at fault is alone; that item is dead-lettered with the status.
//! - Health: DEGRADED after `degraded_timeout` without a successful request, with the
//!   last error as the message; HEALTHY again at the next success.
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
use super::{dead_letter, divert, LoopContext, OutputGeneration, Rejected};
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

/// Clients by (OUTPUT unit, config idx), the current generation's first.
type GenerationClients = Vec<((String, u64), BulkClient)>;

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
        BulkClient::new(config)?,
    )];
    for generation in earlier {
        let OutputKind::Elasticsearch(old) = &generation.kind else {
            continue;
        };
        match BulkClient::new(old) {
            Ok(client) => {
                clients.push(((generation.unit_id.clone(), generation.config_idx), client))
            }
            Err(err) => tracing::warn!(
                "unit.id" = %generation.unit_id,
                "unit.type" = "output",
                config_idx = generation.config_idx,
                error = %err,
                "an earlier output config cannot be used; its events go with the newest credentials"
            ),
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
    let mut newest = None;
    for ((unit_id, config_idx), client) in clients {
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
    done: Vec<Seq>,
    rejected: Vec<Rejected>,
    retry: Vec<Pending>,
    /// The last failure, for health and logs.
    failure: Option<String>,
    /// Whether some request got a 2xx answer.
    answered: bool,
}

impl Shared {
    fn target_for(&self, context: &LoopContext, generation: GenerationId) -> Arc<Target> {
        let mut cache = self.by_generation.lock().unwrap_or_else(|p| p.into_inner());
        let target = cache
            .entry(generation)
            .or_insert_with(|| {
                context
                    .queue
                    .generation(generation)
                    .and_then(|g| {
                        self.targets
                            .get(&(g.output_unit.clone(), g.output_config_idx))
                            .cloned()
                    })
                    .unwrap_or_else(|| self.newest.clone())
            })
            .clone();
        if target.refused.load(std::sync::atomic::Ordering::Relaxed) {
            self.newest.clone()
        } else {
            target
        }
    }
}

/// Delivers one batch completely (indexed or dead-lettered). Returns false when cancelled
/// first; the records not yet acknowledged are then left for the next reader.
async fn deliver_batch(shared: &Shared, context: &LoopContext, batch: Vec<Record>) -> bool {
    let mut pending: Vec<Pending> = batch
        .into_iter()
        .map(|record| Pending {
            target: shared.target_for(context, record.generation),
            record,
        })
        .collect();
    let mut backoff = Backoff::new(
        shared.config.backoff.init.get(),
        shared.config.backoff.max.get(),
    );
    loop {
        if !context.diversions.is_empty() {
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
        let Pass {
            done,
            rejected,
            retry,
            failure,
            answered,
        } = pass;
        if answered {
            shared.health.success();
        }
        let mut acked = done;
        acked.extend(rejected.iter().map(|r| r.record.seq));
        shared.metrics.dead_lettered(rejected.len() as u64);
        dead_letter(context, rejected).await;
        ack_seqs(context, acked, &shared.metrics);
        if retry.is_empty() {
            return true;
        }
        let delay = backoff.next_delay();
        let reason = failure.unwrap_or_else(|| "items to retry".into());
        if !answered {
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
        }
        pending = retry;
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
    ack_seqs(context, handled, &shared.metrics);
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

/// Acknowledges `seqs` as contiguous ranges.
fn ack_seqs(context: &LoopContext, mut seqs: Vec<Seq>, metrics: &OutputMetrics) {
    if seqs.is_empty() {
        return;
    }
    metrics.acked(seqs.len() as u64);
    seqs.sort_unstable();
    let mut first = seqs[0];
    let mut last = first;
    for &seq in &seqs[1..] {
        if seq == last + 1 {
            last = seq;
        } else {
            context.queue.ack(first, last);
            first = seq;
            last = seq;
        }
    }
    context.queue.ack(first, last);
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
                pass.answered = true;
                match bulk::parse_response(&reply, sent.len()) {
                    Ok(outcomes) => {
                        for (record, outcome) in sent.into_iter().zip(outcomes) {
                            shared.metrics.item(&outcome);
                            match outcome {
                                ItemOutcome::Indexed | ItemOutcome::AlreadyIndexed => {
                                    pass.done.push(record.seq)
                                }
                                ItemOutcome::Reject(reason) => {
                                    pass.rejected.push(Rejected { record, reason })
                                }
                                ItemOutcome::Retry(reason) => {
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
                Some(413) | Some(400) if sent.len() > 1 => {
                    tracing::info!(events = sent.len(), %err, "splitting the bulk request");
                    let (a, b) = split(sent);
                    groups.push((target.clone(), b));
                    groups.push((target, a));
                }
                Some(status @ (413 | 400)) => {
                    let summary = match &err {
                        RequestError::Status { summary, .. } => summary.clone(),
                        other => other.to_string(),
                    };
                    for record in sent {
                        pass.rejected.push(Rejected {
                            record,
                            reason: Reason {
                                status: Some(status),
                                error_type: if status == 413 {
                                    "request_entity_too_large".into()
                                } else {
                                    "bad_request".into()
                                },
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
