//! `loadgen`: an input that publishes through the Producer API and follows
//! `persisted_index`, so a test knows exactly which events it was promised.
//!
//! Every event carries `fields.loadgen = {run, seq}`; `seq` counts from 0 within a run, so
//! a test can check each promised event by number in whatever the output wrote.

use agent_shipper::proto::shipper::messages::{self, value::Kind, Event, Value};
use agent_shipper::proto::shipper::producer_client::ProducerClient;
use agent_shipper::proto::shipper::{PersistedIndexRequest, PublishRequest};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use tonic::transport::{Channel, ClientTlsConfig};

/// What to publish.
#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    /// Producer API address: `unix:///path`, `/path` or `host:port`.
    pub server: String,
    /// `source.input_id` of every event.
    pub input_id: String,
    /// Events to publish.
    pub events: u64,
    /// Events per PublishEvents request.
    pub batch: usize,
    /// Approximate size of each event's `message` field.
    pub event_bytes: usize,
    /// `data_stream.dataset` (type `logs`, namespace `default`).
    pub dataset: String,
    /// Run label written into every event.
    pub run: String,
    /// Give up when the server refuses for this long (Unavailable, backpressure).
    pub patience: Duration,
    /// Wait until every accepted event is persisted before returning.
    pub wait_persisted: bool,
    /// [`run_through_restarts`] only: at most this many new events per second (resends
    /// are not paced); `None` publishes as fast as the server takes them.
    pub rate_per_s: Option<u64>,
    /// [`run`] and [`run_concurrent`]: add the count of each accepted batch here, for a
    /// progress display that reads it now and then.
    pub accepted_counter: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// Connect with TLS (CA, client certificate, server name); `None` is plaintext, as
    /// Beats connects to an INPUT unit without `ssl.enabled: true`.
    pub tls: Option<ClientTlsConfig>,
}

impl LoadgenOptions {
    /// Defaults: batches of 500, 200-byte events, dataset `loadgen`, 60 s patience.
    pub fn new(server: &str, input_id: &str, events: u64) -> Self {
        LoadgenOptions {
            server: server.to_string(),
            input_id: input_id.to_string(),
            events,
            batch: 500,
            event_bytes: 200,
            dataset: "loadgen".into(),
            run: "run".into(),
            patience: Duration::from_secs(60),
            wait_persisted: true,
            rate_per_s: None,
            accepted_counter: None,
            tls: None,
        }
    }
}

/// What the server promised.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadgenReport {
    /// The server run the events were accepted by.
    pub uuid: String,
    /// Events accepted.
    pub accepted: u64,
    /// Event id of each accepted event, by loadgen seq.
    pub ids: Vec<u64>,
    /// The final persisted index reported by the server.
    pub persisted_index: u64,
    /// Seqs whose event id is at or below the persisted index: promised safe.
    pub promised: Vec<u64>,
    /// Why publishing stopped early, if it did (e.g. the input unit is stopping).
    pub refused: Option<String>,
}

/// Opens a plaintext gRPC channel to a Producer API address.
pub async fn connect(server: &str) -> Result<ProducerClient<Channel>> {
    agent_shipper::server::client::connect(server)
        .await
        .map_err(anyhow::Error::msg)
}

/// Connects to `options.server`, with `options.tls` when set.
pub async fn connect_with(options: &LoadgenOptions) -> Result<ProducerClient<Channel>> {
    match &options.tls {
        None => connect(&options.server).await,
        Some(tls) => agent_shipper::server::client::connect_tls(&options.server, tls.clone())
            .await
            .map_err(anyhow::Error::msg),
    }
}

fn string(value: impl Into<String>) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.into())),
    }
}

/// The event with loadgen number `seq`.
pub fn make_event(options: &LoadgenOptions, seq: u64) -> Event {
    let mut loadgen = messages::Struct::default();
    loadgen
        .data
        .insert("run".into(), string(options.run.clone()));
    loadgen.data.insert(
        "seq".into(),
        Value {
            kind: Some(Kind::Uint64Value(seq)),
        },
    );
    let mut fields = messages::Struct::default();
    fields
        .data
        .insert("message".into(), string("x".repeat(options.event_bytes)));
    fields.data.insert(
        "loadgen".into(),
        Value {
            kind: Some(Kind::StructValue(loadgen)),
        },
    );
    Event {
        timestamp: Some(SystemTime::now().into()),
        source: Some(messages::Source {
            input_id: options.input_id.clone(),
            stream_id: "loadgen".into(),
        }),
        data_stream: Some(messages::DataStream {
            r#type: "logs".into(),
            dataset: options.dataset.clone(),
            namespace: "default".into(),
        }),
        metadata: None,
        fields: Some(fields),
    }
}

/// Publishes `options.events` events, then waits (up to `options.patience`) until the
/// server says all accepted ones are persisted.
pub async fn run(options: &LoadgenOptions) -> Result<LoadgenReport> {
    let mut client = connect_with(options).await?;
    let published = publish_range(options, 0..options.events).await?;
    let mut report = LoadgenReport {
        uuid: published.uuid,
        accepted: published.ids.len() as u64,
        ids: published.ids,
        refused: published.refused,
        ..LoadgenReport::default()
    };
    if report.accepted > 0 && options.wait_persisted {
        let last = *report.ids.last().unwrap_or(&0);
        report.persisted_index =
            wait_persisted(&mut client, &report.uuid, last, options.patience).await?;
    }
    report.promised = report
        .ids
        .iter()
        .enumerate()
        .filter(|(_, id)| **id <= report.persisted_index)
        .map(|(seq, _)| seq as u64)
        .collect();
    Ok(report)
}

/// As [`run`], with `publishers` concurrent PublishEvents streams, each on its own
/// connection and publishing its own contiguous share of the seqs `0..options.events`.
/// `ids` then holds the ids of the accepted events in seq order (a publisher refused part
/// way leaves its remaining seqs out); `promised` is exact in both cases.
///
/// # Errors
/// A publisher fails as [`run`] would, or the publishers were answered by different server
/// runs.
pub async fn run_concurrent(options: &LoadgenOptions, publishers: usize) -> Result<LoadgenReport> {
    let publishers = publishers.max(1) as u64;
    let share = options.events.div_ceil(publishers);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..publishers {
        let range = (n * share).min(options.events)..((n + 1) * share).min(options.events);
        let options = options.clone();
        tasks.spawn(async move {
            let start = range.start;
            let published = publish_range(&options, range).await?;
            anyhow::Ok((start, published))
        });
    }
    let mut parts = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        parts.push(joined.context("a publisher panicked")??);
    }
    parts.sort_by_key(|(start, _)| *start);
    let mut report = LoadgenReport::default();
    let mut seq_of_id: Vec<(u64, u64)> = Vec::with_capacity(options.events as usize);
    let mut refused = Vec::new();
    for (start, published) in &parts {
        if !published.uuid.is_empty() {
            if report.uuid.is_empty() {
                report.uuid = published.uuid.clone();
            } else if report.uuid != published.uuid {
                bail!(
                    "publishers were answered by different server runs ({} and {})",
                    report.uuid,
                    published.uuid
                );
            }
        }
        seq_of_id.extend(
            published
                .ids
                .iter()
                .enumerate()
                .map(|(i, id)| (start + i as u64, *id)),
        );
        refused.extend(published.refused.clone());
    }
    report.accepted = seq_of_id.len() as u64;
    report.ids = seq_of_id.iter().map(|(_, id)| *id).collect();
    report.refused = refused.into_iter().next();
    if report.accepted > 0 && options.wait_persisted {
        let last = report.ids.iter().copied().max().unwrap_or(0);
        let mut client = connect_with(options).await?;
        report.persisted_index =
            wait_persisted(&mut client, &report.uuid, last, options.patience).await?;
    }
    report.promised = seq_of_id
        .iter()
        .filter(|(_, id)| *id <= report.persisted_index)
        .map(|(seq, _)| *seq)
        .collect();
    Ok(report)
}

/// What one publisher was answered.
#[derive(Debug, Default)]
struct Published {
    uuid: String,
    /// Event id of each accepted event, in seq order from the range's start.
    ids: Vec<u64>,
    refused: Option<String>,
}

/// Publishes the events numbered `seqs` in batches of `options.batch`, one request at a
/// time, retrying what the server could not take yet. Requests are written straight to
/// protobuf bytes by a [`raw::Publisher`] on its own connection: building [`Event`]s to
/// have prost encode them cost loadgen more CPU than the shipper spent queueing them.
async fn publish_range(options: &LoadgenOptions, seqs: std::ops::Range<u64>) -> Result<Published> {
    let mut publisher = raw::Publisher::connect(options).await?;
    let mut published = Published {
        ids: Vec::with_capacity((seqs.end - seqs.start) as usize),
        ..Published::default()
    };
    let mut next = seqs.start;
    let mut stalled_since: Option<tokio::time::Instant> = None;
    while next < seqs.end {
        let end = (next + options.batch as u64).min(seqs.end);
        match publisher.publish(&published.uuid, next..end).await {
            Ok(reply) => {
                if published.uuid.is_empty() {
                    published.uuid = reply.uuid.clone();
                }
                let count = u64::from(reply.accepted_count).min(end - next);
                if count > 0 {
                    let first_id = reply.accepted_index + 1 - count;
                    published.ids.extend(first_id..=reply.accepted_index);
                    next += count;
                    if let Some(counter) = &options.accepted_counter {
                        counter.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                    }
                    stalled_since = None;
                } else {
                    wait_or_give_up(&mut stalled_since, options.patience, "the queue stays full")
                        .await?;
                }
            }
            Err(status) if status.code() == tonic::Code::Unavailable => {
                wait_or_give_up(&mut stalled_since, options.patience, status.message()).await?;
            }
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                published.refused = Some(status.message().to_string());
                break;
            }
            Err(status) => bail!("PublishEvents failed: {status}"),
        }
    }
    Ok(published)
}

async fn wait_or_give_up(
    since: &mut Option<tokio::time::Instant>,
    patience: Duration,
    why: &str,
) -> Result<()> {
    let start = *since.get_or_insert_with(tokio::time::Instant::now);
    if start.elapsed() > patience {
        bail!("gave up after {patience:?}: {why}");
    }
    // Backpressure: come back shortly with the rest.
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(())
}

/// Follows PersistedIndex until it reaches `target` or `patience` runs out; returns the
/// last value seen.
pub async fn wait_persisted(
    client: &mut ProducerClient<Channel>,
    uuid: &str,
    target: u64,
    patience: Duration,
) -> Result<u64> {
    let request = PersistedIndexRequest {
        polling_interval: Some(prost_types::Duration {
            seconds: 0,
            nanos: 20_000_000,
        }),
    };
    let mut stream = client
        .persisted_index(request)
        .await
        .context("PersistedIndex")?
        .into_inner();
    let deadline = tokio::time::Instant::now() + patience;
    let mut last = 0;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(reply))) => {
                if reply.uuid != uuid {
                    bail!(
                        "the server restarted (uuid {} → {}): events after {last} must be resent",
                        uuid,
                        reply.uuid
                    );
                }
                last = reply.persisted_index;
                if last >= target {
                    return Ok(last);
                }
            }
            Ok(Ok(None)) => return Ok(last),
            Ok(Err(status)) => bail!("PersistedIndex failed: {status}"),
            Err(_) => return Ok(last),
        }
    }
}

/// Reads NDJSON files written by the file output and counts each loadgen seq of `run`.
pub fn count_seqs_in_files(paths: &[std::path::PathBuf], run: &str) -> Result<HashMap<u64, u32>> {
    let mut counts = HashMap::new();
    for path in paths {
        let text = match std::fs::read(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        for line in text.lines() {
            // A line torn by a killed writer is not an event: the file output ends it at its
            // next start, and the event, never acknowledged, is written again in full.
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if doc["loadgen"]["run"] == run {
                if let Some(seq) = doc["loadgen"]["seq"].as_u64() {
                    *counts.entry(seq).or_insert(0) += 1;
                }
            }
        }
    }
    Ok(counts)
}

/// Waits (polling every 50 ms, at most `timeout`) until every seq in `expected` of `run`
/// is in the files; returns the counts seen last. The output writes asynchronously:
/// persisted means safe in the queue, not yet written.
pub async fn wait_for_seqs_in_files(
    paths: &[std::path::PathBuf],
    run: &str,
    expected: &[u64],
    timeout: Duration,
) -> Result<HashMap<u64, u32>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // The files are being written meanwhile: a failed read is tried again.
        match count_seqs_in_files(paths, run) {
            Ok(counts) if expected.iter().all(|seq| counts.contains_key(seq)) => return Ok(counts),
            Ok(counts) if tokio::time::Instant::now() >= deadline => return Ok(counts),
            Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What [`run_through_restarts`] was promised.
#[derive(Debug, Clone, Default)]
pub struct RestartReport {
    /// Loadgen seqs the shipper confirmed persisted (id ≤ persisted_index, same uuid).
    pub promised: std::collections::BTreeSet<u64>,
    /// Events sent more than once because their first send may have been queued: accepted
    /// but not confirmed persisted by a server run that went away, or sent in a publish
    /// whose answer was lost with the connection (`unanswered`). Each can be indexed
    /// twice (under two queue sequence numbers), so duplicates never exceed this.
    pub resent: u64,
    /// Which events were sent again, and how often: seq → extra sends. An event may be
    /// indexed at most once more than this; any more is a duplicate the shipper made.
    pub resent_seqs: std::collections::BTreeMap<u64, u32>,
    /// Of `resent`: events of a publish that failed without an answer from the server,
    /// the connection broken mid-request; they may or may not have been queued.
    pub unanswered: u64,
    /// Distinct server runs (uuids) seen.
    pub server_runs: usize,
    /// Connection attempts that failed (the server was down).
    pub failed_connects: u64,
}

/// Publishes until `stop` is cancelled, surviving server restarts: events not confirmed
/// persisted under the uuid that accepted them are sent again after a reconnect. After
/// `stop`, keeps going (at most `options.patience`) until every event sent so far is
/// confirmed.
pub async fn run_through_restarts(
    options: &LoadgenOptions,
    stop: tokio_util::sync::CancellationToken,
) -> Result<RestartReport> {
    use std::collections::VecDeque;
    let mut report = RestartReport::default();
    let mut uuids = std::collections::HashSet::new();
    // Events to send (again), and events accepted by the current run but not yet confirmed.
    let mut to_send: VecDeque<u64> = VecDeque::new();
    let mut awaiting: Vec<(u64, u64)> = Vec::new();
    let mut next_new: u64 = 0;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let started = tokio::time::Instant::now();
    'connect: loop {
        // A new connection may be a new server run: whatever was unconfirmed goes again.
        for (seq, _) in awaiting.drain(..) {
            to_send.push_back(seq);
            report.resent += 1;
            *report.resent_seqs.entry(seq).or_default() += 1;
        }
        if stop.is_cancelled() {
            let deadline = *drain_deadline
                .get_or_insert_with(|| tokio::time::Instant::now() + options.patience);
            if to_send.is_empty() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} events were never confirmed persisted within {:?} after stopping",
                    to_send.len(),
                    options.patience
                );
            }
        }
        let mut client = match connect_with(options).await {
            Ok(client) => client,
            Err(_) => {
                report.failed_connects += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let mut uuid = String::new();
        loop {
            let draining = stop.is_cancelled();
            if draining && to_send.is_empty() && awaiting.is_empty() {
                break 'connect;
            }
            // Paced: no more new events than the rate allows by now.
            let allowed = options.rate_per_s.map_or(u64::MAX, |rate| {
                (started.elapsed().as_secs_f64() * rate as f64) as u64
            });
            let mut seqs: Vec<u64> = Vec::with_capacity(options.batch);
            while seqs.len() < options.batch {
                match to_send.pop_front() {
                    Some(seq) => seqs.push(seq),
                    None if !draining && next_new < allowed => {
                        seqs.push(next_new);
                        next_new += 1;
                    }
                    None => break,
                }
            }
            if !seqs.is_empty() {
                let events = seqs.iter().map(|seq| make_event(options, *seq)).collect();
                let request = PublishRequest {
                    uuid: uuid.clone(),
                    events,
                };
                let reply = match client.publish_events(request).await {
                    Ok(reply) => reply.into_inner(),
                    Err(status) => {
                        // Down, restarting, a new run, or the input is not (yet) a unit:
                        // reconnect shortly and send these again. If the answer was lost
                        // with the connection (the shipper SIGKILLed after queueing the
                        // batch, before answering), the batch may be queued already: the
                        // second send can be indexed a second time, so it counts as resent.
                        if maybe_queued(&status) {
                            tracing::debug!(
                                run = %options.run, first = seqs[0], events = seqs.len(), %status,
                                "publish unanswered, the events may be queued: sending them again"
                            );
                            report.resent += seqs.len() as u64;
                            report.unanswered += seqs.len() as u64;
                            for seq in &seqs {
                                *report.resent_seqs.entry(*seq).or_default() += 1;
                            }
                        }
                        for seq in seqs.into_iter().rev() {
                            to_send.push_front(seq);
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue 'connect;
                    }
                };
                if uuid.is_empty() {
                    uuid = reply.uuid.clone();
                    uuids.insert(uuid.clone());
                }
                let count = (reply.accepted_count as usize).min(seqs.len());
                for seq in seqs[count..].iter().rev() {
                    to_send.push_front(*seq);
                }
                if count > 0 {
                    let first_id = reply.accepted_index + 1 - count as u64;
                    awaiting.extend(
                        seqs[..count]
                            .iter()
                            .enumerate()
                            .map(|(i, seq)| (*seq, first_id + i as u64)),
                    );
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let persisted = match client
                .persisted_index(PersistedIndexRequest {
                    polling_interval: None,
                })
                .await
            {
                Ok(stream) => match stream.into_inner().message().await {
                    Ok(Some(answer)) if answer.uuid == uuid => answer.persisted_index,
                    _ => continue 'connect,
                },
                Err(_) => continue 'connect,
            };
            awaiting.retain(|(seq, id)| {
                let confirmed = *id <= persisted;
                if confirmed {
                    report.promised.insert(*seq);
                }
                !confirmed
            });
            if seqs.is_empty() {
                // Waiting for confirmations, or for the rate to allow more.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    report.server_runs = uuids.len();
    Ok(report)
}

/// Whether a failed PublishEvents may still have queued its events: true when the
/// request went out but the connection broke before an answer came (reset, broken pipe);
/// false when the server answered with an error status (it queues nothing then) or when
/// no connection was made (refused, no socket).
fn maybe_queued(status: &tonic::Status) -> bool {
    // A status decoded from the server's answer has no source; a transport failure has.
    let mut source = std::error::Error::source(status);
    if source.is_none() {
        return false;
    }
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) {
                return false;
            }
        }
        source = err.source();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::maybe_queued;
    use std::io::{Error, ErrorKind};

    // Regression (soak duplicates not explained by `resent`): a SIGKILLed shipper had
    // queued a batch whose answer was lost with the connection; loadgen sent it again
    // without counting it, and mock-es indexed those events twice.
    #[test]
    fn an_unanswered_publish_may_have_been_queued() {
        for kind in [ErrorKind::ConnectionReset, ErrorKind::BrokenPipe] {
            let status = tonic::Status::from_error(Box::new(Error::new(kind, "gone")));
            assert!(maybe_queued(&status), "{kind:?}");
        }
        for kind in [ErrorKind::ConnectionRefused, ErrorKind::NotFound] {
            let status = tonic::Status::from_error(Box::new(Error::new(kind, "nobody there")));
            assert!(!maybe_queued(&status), "{kind:?}");
        }
        assert!(!maybe_queued(&tonic::Status::failed_precondition(
            "input removed"
        )));
        assert!(!maybe_queued(&tonic::Status::unavailable(
            "no output is running"
        )));
    }
}

/// Publishing without building [`Event`]s: each request is written straight to protobuf
/// bytes from parts encoded once per run, and sent with a codec that passes them through.
/// The server decodes exactly what [`make_event`] would have produced (tested below).
mod raw {
    use super::LoadgenOptions;
    use agent_shipper::proto::shipper::PublishReply;
    use anyhow::Result;
    use bytes::{BufMut, Bytes};
    use prost::encoding::encode_varint;
    use prost::Message;
    use std::time::SystemTime;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::Channel;
    use tonic::Status;

    const PUBLISH_EVENTS: &str = "/elastic.agent.shipper.v1.Producer/PublishEvents";

    /// Appends field `field` holding `content` (wire type 2).
    fn len_field(buf: &mut Vec<u8>, field: u64, content: &[u8]) {
        encode_varint(field << 3 | 2, buf);
        encode_varint(content.len() as u64, buf);
        buf.extend_from_slice(content);
    }

    /// Appends a `map<string, Value>` entry (field 1 of `Struct`).
    fn map_entry(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
        let mut entry = Vec::with_capacity(key.len() + value.len() + 8);
        len_field(&mut entry, 1, key.as_bytes());
        len_field(&mut entry, 2, value);
        len_field(buf, 1, &entry);
    }

    /// A `Value` holding `string_value`.
    fn string_value(text: &str) -> Vec<u8> {
        let mut value = Vec::with_capacity(text.len() + 4);
        len_field(&mut value, 8, text.as_bytes());
        value
    }

    /// The parts of a loadgen event that do not change from one seq to the next.
    pub(super) struct EventTemplate {
        /// `source` and `data_stream` (fields 2 and 3 of `Event`).
        source_and_stream: Vec<u8>,
        /// The `message` entry of `fields`.
        message_entry: Vec<u8>,
        /// The `run` entry of `fields.loadgen`.
        run_entry: Vec<u8>,
        /// Buffers reused from one event to the next, innermost first.
        scratch: [Vec<u8>; 5],
    }

    impl EventTemplate {
        pub(super) fn new(options: &LoadgenOptions) -> Self {
            let mut source = Vec::new();
            len_field(&mut source, 1, options.input_id.as_bytes());
            len_field(&mut source, 2, b"loadgen");
            let mut stream = Vec::new();
            len_field(&mut stream, 1, b"logs");
            len_field(&mut stream, 2, options.dataset.as_bytes());
            len_field(&mut stream, 3, b"default");
            let mut source_and_stream = Vec::new();
            len_field(&mut source_and_stream, 2, &source);
            len_field(&mut source_and_stream, 3, &stream);
            let mut message_entry = Vec::new();
            map_entry(
                &mut message_entry,
                "message",
                &string_value(&"x".repeat(options.event_bytes)),
            );
            let mut run_entry = Vec::new();
            map_entry(&mut run_entry, "run", &string_value(&options.run));
            EventTemplate {
                source_and_stream,
                message_entry,
                run_entry,
                scratch: Default::default(),
            }
        }

        /// Appends `Event` number `seq`, stamped `timestamp`, as field 2 of a
        /// `PublishRequest`.
        pub(super) fn write_event(
            &mut self,
            out: &mut Vec<u8>,
            seq: u64,
            timestamp: &prost_types::Timestamp,
        ) {
            let [value, entry, loadgen, fields, event] = &mut self.scratch;
            // fields.loadgen = {run, seq}: a Value with struct_value (10).
            value.clear();
            encode_varint(7 << 3, value); // uint64_value
            encode_varint(seq, value);
            entry.clear();
            len_field(entry, 1, b"seq");
            len_field(entry, 2, value);
            loadgen.clear();
            loadgen.extend_from_slice(&self.run_entry);
            len_field(loadgen, 1, entry);
            value.clear();
            len_field(value, 10, loadgen);
            entry.clear();
            len_field(entry, 1, b"loadgen");
            len_field(entry, 2, value);
            fields.clear();
            fields.extend_from_slice(&self.message_entry);
            len_field(fields, 1, entry);
            event.clear();
            value.clear();
            if timestamp.seconds != 0 {
                encode_varint(1 << 3, value);
                encode_varint(timestamp.seconds as u64, value);
            }
            if timestamp.nanos != 0 {
                encode_varint(2 << 3, value);
                encode_varint(i64::from(timestamp.nanos) as u64, value);
            }
            len_field(event, 1, value);
            event.extend_from_slice(&self.source_and_stream);
            len_field(event, 5, fields);
            len_field(out, 2, event);
        }

        /// A `PublishRequest` for the events numbered `seqs`.
        pub(super) fn request(&mut self, uuid: &str, seqs: std::ops::Range<u64>) -> Vec<u8> {
            let per_event = self.message_entry.len() + self.source_and_stream.len() + 96;
            let mut body = Vec::with_capacity(per_event * (seqs.end - seqs.start) as usize + 64);
            if !uuid.is_empty() {
                len_field(&mut body, 1, uuid.as_bytes());
            }
            for seq in seqs {
                let timestamp = SystemTime::now().into();
                self.write_event(&mut body, seq, &timestamp);
            }
            body
        }
    }

    /// Sends pre-encoded requests, decodes `PublishReply`.
    #[derive(Clone, Copy, Default)]
    struct RawCodec;

    struct PassThrough;

    impl Encoder for PassThrough {
        type Item = Bytes;
        type Error = Status;

        fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    struct ReplyDecoder;

    impl Decoder for ReplyDecoder {
        type Item = PublishReply;
        type Error = Status;

        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<PublishReply>, Status> {
            PublishReply::decode(src)
                .map(Some)
                .map_err(|err| Status::internal(err.to_string()))
        }
    }

    impl Codec for RawCodec {
        type Encode = Bytes;
        type Decode = PublishReply;
        type Encoder = PassThrough;
        type Decoder = ReplyDecoder;

        fn encoder(&mut self) -> PassThrough {
            PassThrough
        }

        fn decoder(&mut self) -> ReplyDecoder {
            ReplyDecoder
        }
    }

    /// One connection publishing pre-encoded requests.
    pub(super) struct Publisher {
        grpc: tonic::client::Grpc<Channel>,
        template: EventTemplate,
    }

    impl Publisher {
        /// Connects to `options.server` as [`super::connect`] does.
        pub(super) async fn connect(options: &LoadgenOptions) -> Result<Self> {
            let channel = agent_shipper::server::client::connect_channel_tls(
                &options.server,
                options.tls.clone(),
            )
            .await
            .map_err(anyhow::Error::msg)?;
            Ok(Publisher {
                grpc: tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20),
                template: EventTemplate::new(options),
            })
        }

        /// PublishEvents with the events numbered `seqs`.
        pub(super) async fn publish(
            &mut self,
            uuid: &str,
            seqs: std::ops::Range<u64>,
        ) -> Result<PublishReply, Status> {
            let body = Bytes::from(self.template.request(uuid, seqs));
            self.grpc
                .ready()
                .await
                .map_err(|err| Status::unknown(format!("Service was not ready: {err}")))?;
            self.grpc
                .unary(
                    tonic::Request::new(body),
                    PathAndQuery::from_static(PUBLISH_EVENTS),
                    RawCodec,
                )
                .await
                .map(tonic::Response::into_inner)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use agent_shipper::proto::shipper::PublishRequest;

        #[test]
        fn raw_requests_decode_to_the_events_make_event_builds() {
            let mut options = LoadgenOptions::new("unix:///x", "input-é", 3);
            options.event_bytes = 300;
            options.run = "run \"1\"".into();
            let mut template = EventTemplate::new(&options);
            let seqs = [0, 1, 127, 128, 300_000, u64::MAX];
            for (uuid, range) in [("", 0..2), ("4f1c-uuid", 127..129)] {
                let bytes = template.request(uuid, range.clone());
                let request = PublishRequest::decode(bytes.as_slice()).unwrap();
                assert_eq!(request.uuid, uuid);
                let got: Vec<_> = request.events.into_iter().collect();
                assert_eq!(got.len(), (range.end - range.start) as usize);
                for (event, seq) in got.into_iter().zip(range) {
                    let mut expected = super::super::make_event(&options, seq);
                    expected.timestamp = event.timestamp;
                    assert!(event.timestamp.is_some());
                    assert_eq!(event, expected);
                }
            }
            for seq in seqs {
                let mut out = Vec::new();
                let timestamp = prost_types::Timestamp {
                    seconds: 1_800_000_000,
                    nanos: 7,
                };
                template.write_event(&mut out, seq, &timestamp);
                let request = PublishRequest::decode(out.as_slice()).unwrap();
                let mut expected = super::super::make_event(&options, seq);
                expected.timestamp = Some(timestamp);
                assert_eq!(request.events, vec![expected]);
            }
        }
    }
}
