//! What mock-es has indexed: data streams, `_id` dedupe, kept documents, loadgen counts and
//! statistics, all changed in one short critical section per `_bulk` request.

use super::auth::Principal;
use super::bulk::{Doc, Item, Op, Outcome};
use super::faults::ItemFault;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::SystemTime;

/// Counters since start. `rejected_429` and `errors_5xx` count whole requests and items.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockEsStats {
    /// `_bulk` requests received (including those answered with a fault or 401).
    pub requests: u64,
    /// Items in `_bulk` requests that were looked at.
    pub bulk_items: u64,
    /// Documents indexed.
    pub indexed: u64,
    /// Items answered 409 (the `_id` already exists).
    pub conflicts_409: u64,
    /// Items and requests answered 400.
    pub rejected_400: u64,
    /// Items answered 403.
    pub forbidden_403: u64,
    /// Requests answered 401.
    pub unauthorized_401: u64,
    /// Requests and items answered 429.
    pub rejected_429: u64,
    /// Requests and items answered 5xx.
    pub errors_5xx: u64,
    /// Requests answered 413.
    pub too_large_413: u64,
    /// Connections closed by the reset fault.
    pub resets: u64,
    /// Documents indexed whose loadgen (run, seq) was already indexed under another `_id`.
    pub duplicates_indexed: u64,
}

impl MockEsStats {
    /// Counts one status answered for a whole request or an item.
    pub(crate) fn count_status(&mut self, status: u16) {
        match status {
            400 => self.rejected_400 += 1,
            401 => self.unauthorized_401 += 1,
            403 => self.forbidden_403 += 1,
            409 => self.conflicts_409 += 1,
            413 => self.too_large_413 += 1,
            429 => self.rejected_429 += 1,
            500..=599 => self.errors_5xx += 1,
            _ => {}
        }
    }
}

/// One `_bulk` request as received, for tests to inspect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLog {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The `Authorization` header as received.
    pub authorization: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// Body size as received (compressed, if it was).
    pub body_bytes: usize,
    /// Items in the body (0 when it was not parsed).
    pub items: usize,
    /// Status of the response (0 for a reset connection).
    pub status: u16,
    /// When the answer was ready, in microseconds since the Unix epoch.
    #[serde(default)]
    pub answered_at_us: u64,
    /// Every other header as received (names lowercase; repeated headers joined by `, `),
    /// so tests can see configured `headers` arrive.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// The last [`RequestLog::CAPACITY`] `_bulk` requests.
#[derive(Default)]
pub(crate) struct RequestRing {
    entries: VecDeque<RequestLog>,
}

impl RequestLog {
    /// How many requests the ring keeps.
    pub const CAPACITY: usize = 1000;
}

impl RequestRing {
    /// Appends, dropping the oldest entry when full.
    pub(crate) fn push(&mut self, entry: RequestLog) {
        if self.entries.len() == RequestLog::CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// Oldest first.
    pub(crate) fn snapshot(&self) -> Vec<RequestLog> {
        self.entries.iter().cloned().collect()
    }
}

/// `_id`s are kept as 64-bit SipHash digests (fixed keys): an id set for tens of millions of
/// documents stays small. A false 409 needs a 64-bit collision, ~1e-5 at 20M ids.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdSet = HashSet<u64, BuildHasherDefault<PassThroughHasher>>;

fn id_digest(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(id.as_bytes());
    hasher.finish()
}

#[derive(Default)]
struct DataStream {
    ids: IdSet,
    count: u64,
    next_seq_no: u64,
    documents: Vec<(String, serde_json::Value)>,
}

/// What was indexed of one loadgen run.
#[derive(Default)]
struct LoadgenRun {
    /// Times indexed, by seq (seqs are dense from 0).
    seqs: Vec<u32>,
    /// Seqs indexed at least once.
    distinct: u64,
    /// Documents indexed.
    total: u64,
    /// When a document of the run was last indexed.
    last_indexed: Option<SystemTime>,
}

/// Which seqs of a loadgen run below some bound were never indexed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadgenMissing {
    /// Seqs looked at: `0..upto`.
    pub upto: u64,
    /// How many of them were never indexed.
    pub missing: u64,
    /// The first of those (at most the limit asked for), ascending.
    pub seqs: Vec<u64>,
    /// Seqs indexed at least once (any seq, also at or above `upto`).
    pub distinct: u64,
    /// Documents indexed beyond the first for their seq (duplicates under other `_id`s).
    pub duplicates: u64,
    /// When a document of the run was last indexed, in milliseconds since the Unix epoch.
    pub last_indexed_unix_ms: Option<u64>,
}

/// Everything indexed, behind the server's one state lock.
pub(crate) struct State {
    streams: HashMap<String, DataStream>,
    /// Loadgen runs by name.
    loadgen: HashMap<String, LoadgenRun>,
    /// The time of the request being applied (one clock read per request).
    now: SystemTime,
    /// Counters.
    pub(crate) stats: MockEsStats,
    id_prefix: [u8; 7],
    next_generated: u64,
    keep_documents: bool,
}

/// Per-request context for [`State::apply`].
pub(crate) struct Apply<'p> {
    /// Who sent the request; `None` when auth is off.
    pub(crate) principal: Option<&'p Principal>,
    /// Name of the reject field, for the 400 reason.
    pub(crate) reject_field: Option<&'p str>,
    /// Items into this data stream are answered 429 `cluster_block_exception`.
    pub(crate) blocked_index: Option<&'p str>,
    /// One roll per item.
    pub(crate) item_faults: Vec<Option<ItemFault>>,
}

fn failed(status: u16, kind: &'static str, reason: String, backing: bool) -> Outcome {
    Outcome::Failed {
        status,
        kind,
        reason,
        backing,
    }
}

impl State {
    /// Empty state; generated ids start with bytes derived from `seed`.
    pub(crate) fn new(keep_documents: bool, seed: u64) -> Self {
        let mut id_prefix = [0u8; 7];
        id_prefix.copy_from_slice(&seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes()[..7]);
        State {
            streams: HashMap::new(),
            loadgen: HashMap::new(),
            now: SystemTime::UNIX_EPOCH,
            stats: MockEsStats::default(),
            id_prefix,
            next_generated: 0,
            keep_documents,
        }
    }

    fn generate_id(&mut self) -> String {
        let mut raw = [0u8; 15];
        raw[..7].copy_from_slice(&self.id_prefix);
        raw[7..].copy_from_slice(&self.next_generated.to_be_bytes());
        self.next_generated += 1;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// Decides every item of one request and indexes the ones that succeed.
    /// `items` come in request order; so do the outcomes.
    pub(crate) fn apply(&mut self, items: &mut [Item<'_>], ctx: Apply<'_>) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(items.len());
        self.now = SystemTime::now();
        self.stats.bulk_items += items.len() as u64;
        for (n, item) in items.iter_mut().enumerate() {
            let fault = ctx.item_faults.get(n).copied().flatten();
            let outcome = self.apply_one(item, &ctx, fault);
            self.stats.count_status(outcome.status());
            outcomes.push(outcome);
        }
        outcomes
    }

    fn apply_one(
        &mut self,
        item: &mut Item<'_>,
        ctx: &Apply<'_>,
        fault: Option<ItemFault>,
    ) -> Outcome {
        let index = item.index.as_deref().unwrap_or("");
        if let Some(principal) = ctx.principal {
            if !principal.may_write(index) {
                return failed(
                    403,
                    "security_exception",
                    format!(
                        "action [indices:data/write/bulk[s]] is unauthorized for {} on indices [{index}], \
                         this action is granted by the index privileges [create_doc,create,index,write,all]",
                        principal.description
                    ),
                    false,
                );
            }
        }
        if item.op != Op::Create {
            return failed(
                400,
                "illegal_argument_exception",
                format!(
                    "only write ops with an op_type of create are allowed in data streams (op [{}])",
                    item.op.name()
                ),
                false,
            );
        }
        let id_text = item.id.as_deref().unwrap_or("");
        let (has_timestamp, rejected) = match &item.doc {
            Doc::Probed {
                has_timestamp,
                rejected,
                ..
            } => (*has_timestamp, *rejected),
            Doc::Malformed(err) => {
                return failed(
                    400,
                    "mapper_parsing_exception",
                    format!("failed to parse: {err}"),
                    true,
                )
            }
            Doc::Absent => (false, false),
        };
        if !has_timestamp {
            return failed(
                400,
                "illegal_argument_exception",
                "data stream timestamp field [@timestamp] is missing".to_string(),
                true,
            );
        }
        if rejected {
            return failed(
                400,
                "mapper_parsing_exception",
                format!(
                    "failed to parse field [{}] of type [long] in document with id '{id_text}'. \
                     Preview of field's value: 'mock'",
                    ctx.reject_field.unwrap_or("")
                ),
                true,
            );
        }
        if ctx.blocked_index == Some(index) {
            return failed(
                429,
                "cluster_block_exception",
                format!(
                    "index [{index}] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, \
                     index has read-only-allow-delete block];"
                ),
                false,
            );
        }
        let keep = self.keep_documents;
        let digest = item.id.as_deref().map(id_digest);
        if let (Some(digest), Some(stream)) = (digest, self.streams.get(index)) {
            if stream.ids.contains(&digest) {
                return failed(
                    409,
                    "version_conflict_engine_exception",
                    format!("[{id_text}]: version conflict, document already exists (current version [1])"),
                    true,
                );
            }
        }
        match fault {
            Some(ItemFault::TooManyRequests) => {
                return failed(
                    429,
                    "es_rejected_execution_exception",
                    "rejected execution of primary operation [shard_id=[0], coordinating_and_primary_bytes=0, \
                     replica_bytes=0, all_bytes=0, primary_operation_bytes=0, max_coordinating_and_primary_bytes=0]"
                        .to_string(),
                    true,
                )
            }
            Some(ItemFault::Internal) => {
                return failed(
                    500,
                    "exception",
                    "mock-es injected an internal error".to_string(),
                    true,
                )
            }
            Some(ItemFault::Unavailable) => {
                return failed(
                    503,
                    "unavailable_shards_exception",
                    "[0] primary shard is not active (mock-es injected)".to_string(),
                    true,
                )
            }
            None => {}
        }
        // Indexed from here on: the data stream exists from its first document.
        let stream = match self.streams.get_mut(index) {
            Some(stream) => stream,
            None => self.streams.entry(index.to_string()).or_default(),
        };
        let seq_no = stream.next_seq_no;
        stream.next_seq_no += 1;
        stream.count += 1;
        let id = match (&item.id, digest) {
            (Some(id), Some(digest)) => {
                stream.ids.insert(digest);
                id.to_string()
            }
            _ => {
                let id = self.generate_id();
                let stream = self.streams.entry(index.to_string()).or_default();
                if keep {
                    stream.ids.insert(id_digest(&id));
                }
                id
            }
        };
        self.stats.indexed += 1;
        if let Doc::Probed {
            loadgen, source, ..
        } = &mut item.doc
        {
            if keep {
                if let (Some(source), Some(stream)) = (source.take(), self.streams.get_mut(index)) {
                    stream.documents.push((id.clone(), source));
                }
            }
            if let Some((run, seq)) = loadgen {
                let tracked = match self.loadgen.get_mut(run.as_ref()) {
                    Some(tracked) => tracked,
                    None => self.loadgen.entry(run.to_string()).or_default(),
                };
                tracked.last_indexed = Some(self.now);
                let at = usize::try_from(*seq).unwrap_or(usize::MAX);
                // Guard against an absurd seq blowing up memory: dense tracking up to 2^32.
                if at < (1 << 32) {
                    if tracked.seqs.len() <= at {
                        tracked.seqs.resize(at + 1, 0);
                    }
                    if tracked.seqs[at] > 0 {
                        self.stats.duplicates_indexed += 1;
                    } else {
                        tracked.distinct += 1;
                    }
                    tracked.seqs[at] += 1;
                    tracked.total += 1;
                }
            }
        }
        Outcome::Created { id, seq_no }
    }

    /// Indexed documents per data stream.
    pub(crate) fn counts(&self) -> BTreeMap<String, u64> {
        self.streams
            .iter()
            .map(|(name, stream)| (name.clone(), stream.count))
            .collect()
    }

    /// Documents of one data stream in index order (empty unless documents are kept).
    pub(crate) fn documents(&self, data_stream: &str) -> Vec<(String, serde_json::Value)> {
        self.streams
            .get(data_stream)
            .map(|stream| stream.documents.clone())
            .unwrap_or_default()
    }

    /// Documents in one data stream, if it exists.
    pub(crate) fn count(&self, data_stream: &str) -> Option<u64> {
        self.streams.get(data_stream).map(|stream| stream.count)
    }

    /// seq -> times indexed for one loadgen run.
    pub(crate) fn loadgen_counts(&self, run: &str) -> HashMap<u64, u32> {
        self.loadgen
            .get(run)
            .map(|tracked| {
                tracked
                    .seqs
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(seq, n)| (seq as u64, *n))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Seqs of `run` below `upto` never indexed (the first `limit` of them listed), with
    /// the run's totals; without walking a map, so it stays cheap at millions of seqs.
    pub(crate) fn loadgen_missing(&self, run: &str, upto: u64, limit: usize) -> LoadgenMissing {
        let empty = LoadgenRun::default();
        let tracked = self.loadgen.get(run).unwrap_or(&empty);
        let mut report = LoadgenMissing {
            upto,
            last_indexed_unix_ms: tracked.last_indexed.map(|at| {
                at.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }),
            distinct: tracked.distinct,
            duplicates: tracked.total - tracked.distinct,
            ..LoadgenMissing::default()
        };
        let seen = tracked.seqs.len() as u64;
        if limit == 0 && seen <= upto {
            // Every seq indexed is below `upto`: a count needs no walk (a poll stays cheap).
            report.missing = upto - tracked.distinct;
            return report;
        }
        for seq in 0..upto.min(seen) {
            if tracked.seqs[seq as usize] == 0 {
                report.missing += 1;
                if report.seqs.len() < limit {
                    report.seqs.push(seq);
                }
            }
        }
        if upto > seen {
            report.missing += upto - seen;
            let room = limit.saturating_sub(report.seqs.len()) as u64;
            report.seqs.extend(seen..upto.min(seen + room));
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_es::bulk::{parse, ParseOptions};

    fn run(state: &mut State, body: &str, faults: Vec<Option<ItemFault>>) -> Vec<u16> {
        let options = ParseOptions {
            default_index: None,
            reject_field: Some("bad"),
            track_loadgen: true,
            keep_documents: true,
        };
        let mut items = parse(body.as_bytes(), &options).expect("parses");
        state
            .apply(
                &mut items,
                Apply {
                    principal: None,
                    reject_field: Some("bad"),
                    blocked_index: None,
                    item_faults: faults,
                },
            )
            .iter()
            .map(Outcome::status)
            .collect()
    }

    #[test]
    fn create_conflict_and_loadgen_duplicates() {
        let mut state = State::new(true, 1);
        let doc = |id: &str, seq: u64| {
            format!(
                "{{\"create\":{{\"_index\":\"logs-a-default\",\"_id\":\"{id}\"}}}}\n\
                 {{\"@timestamp\":\"t\",\"loadgen\":{{\"run\":\"r\",\"seq\":{seq}}}}}\n"
            )
        };
        let body = format!("{}{}{}", doc("a", 0), doc("a", 0), doc("b", 0));
        assert_eq!(run(&mut state, &body, vec![]), vec![201, 409, 201]);
        assert_eq!(state.stats.duplicates_indexed, 1);
        assert_eq!(state.loadgen_counts("r").get(&0), Some(&2));
        assert_eq!(state.count("logs-a-default"), Some(2));
        assert_eq!(state.documents("logs-a-default").len(), 2);
        let missing = state.loadgen_missing("r", 3, 1);
        assert_eq!((missing.missing, missing.seqs.clone()), (2, vec![1]));
        assert_eq!((missing.distinct, missing.duplicates), (1, 1));
        assert!(missing.last_indexed_unix_ms.is_some());
        assert_eq!(state.loadgen_missing("r", 3, 0).missing, 2);
        assert_eq!(state.loadgen_missing("r", 0, 0).missing, 0);
        assert_eq!(state.loadgen_missing("other", 2, 10).seqs, vec![0, 1]);

        let faulted = run(
            &mut state,
            &format!("{}{}", doc("c", 1), doc("a", 1)),
            vec![Some(ItemFault::TooManyRequests), Some(ItemFault::Internal)],
        );
        // The fault hits c (would have succeeded); a still conflicts.
        assert_eq!(faulted, vec![429, 409]);
        assert_eq!(state.count("logs-a-default"), Some(2));
        assert!(!state.loadgen_counts("r").contains_key(&1));
    }

    #[test]
    fn data_stream_rules() {
        let mut state = State::new(false, 1);
        let body = concat!(
            "{\"index\":{\"_index\":\"logs-a-default\"}}\n{\"@timestamp\":1}\n",
            "{\"create\":{\"_index\":\"logs-a-default\"}}\n{\"message\":1}\n",
            "{\"create\":{\"_index\":\"logs-a-default\"}}\n{\"@timestamp\":1,\"bad\":2}\n",
            "{\"create\":{\"_index\":\"logs-a-default\"}}\n[]\n",
            "{\"create\":{\"_index\":\"logs-a-default\"}}\n{\"@timestamp\":1}\n",
            "{\"create\":{\"_index\":\"logs-a-default\"}}\n{\"@timestamp\":1}\n",
        );
        assert_eq!(
            run(&mut state, body, vec![]),
            vec![400, 400, 400, 400, 201, 201]
        );
        assert_eq!(state.stats.rejected_400, 4);
        assert!(state.documents("logs-a-default").is_empty());
    }
}
