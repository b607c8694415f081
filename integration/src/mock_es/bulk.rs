//! The `_bulk` wire format for mock-es: NDJSON parsing into items (borrowing from the body),
//! the cheap document probe, and the response writer (including `filter_path`).

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;
use std::io::Write;

/// A `_bulk` body that cannot be taken apart: the whole request is answered 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {reason}")]
pub(crate) struct BulkError {
    /// Elasticsearch error type, e.g. `x_content_parse_exception`.
    pub(crate) kind: &'static str,
    /// Human-readable reason.
    pub(crate) reason: String,
}

impl BulkError {
    fn new(kind: &'static str, reason: impl Into<String>) -> Self {
        BulkError {
            kind,
            reason: reason.into(),
        }
    }
}

/// The operation of one bulk item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `create`: the only op a data stream takes.
    Create,
    /// `index`.
    Index,
    /// `update`.
    Update,
    /// `delete` (no document line).
    Delete,
}

impl Op {
    /// The action name as it appears in the request and the response.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Index => "index",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// What the probe found in a document line.
#[derive(Debug)]
pub(crate) enum Doc<'a> {
    /// No document line (`delete`).
    Absent,
    /// Not a JSON object.
    Malformed(String),
    /// A JSON object.
    Probed {
        /// A top-level `@timestamp` is present.
        has_timestamp: bool,
        /// The top-level field named by `Faults::reject_field` is present.
        rejected: bool,
        /// `loadgen.run` / `loadgen.seq` (top level, or under `fields`), when tracked.
        loadgen: Option<(Cow<'a, str>, u64)>,
        /// The whole document, when documents are kept.
        source: Option<serde_json::Value>,
    },
}

/// One bulk item: an action line and its document.
#[derive(Debug)]
pub(crate) struct Item<'a> {
    /// The action.
    pub(crate) op: Op,
    /// `_index` from the action line, else the index in the URL path.
    pub(crate) index: Option<Cow<'a, str>>,
    /// `_id` from the action line.
    pub(crate) id: Option<Cow<'a, str>>,
    /// The probed document.
    pub(crate) doc: Doc<'a>,
}

/// How much of each document to look at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParseOptions<'r> {
    /// Index from `/{index}/_bulk`, used when an action line has no `_index`.
    pub(crate) default_index: Option<&'r str>,
    /// `Faults::reject_field`.
    pub(crate) reject_field: Option<&'r str>,
    /// Pull `loadgen.{run,seq}` out of each document.
    pub(crate) track_loadgen: bool,
    /// Parse each document fully into a `serde_json::Value`.
    pub(crate) keep_documents: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum ActionLine<'a> {
    Create(#[serde(borrow)] Meta<'a>),
    Index(#[serde(borrow)] Meta<'a>),
    Update(#[serde(borrow)] Meta<'a>),
    Delete(#[serde(borrow)] Meta<'a>),
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(rename = "_index", borrow, default)]
    index: Option<Cow<'a, str>>,
    #[serde(rename = "_id", borrow, default)]
    id: Option<Cow<'a, str>>,
}

const TERMINATED: &str = "The bulk request must be terminated by a newline [\\n]";

/// Splits a (decompressed) `_bulk` body into items.
pub(crate) fn parse<'a>(
    body: &'a [u8],
    options: &ParseOptions<'a>,
) -> Result<Vec<Item<'a>>, BulkError> {
    if !body.is_empty() && body.last() != Some(&b'\n') {
        return Err(BulkError::new("illegal_argument_exception", TERMINATED));
    }
    let mut lines = body.split(|b| *b == b'\n').enumerate().peekable();
    let mut items = Vec::with_capacity(body.len() / 256 + 1);
    while let Some((number, line)) = lines.next() {
        let line = trim(line);
        if line.is_empty() {
            continue;
        }
        let action: ActionLine<'a> = serde_json::from_slice(line).map_err(|err| {
            let kind = if err.is_data() {
                "illegal_argument_exception"
            } else {
                "x_content_parse_exception"
            };
            BulkError::new(
                kind,
                format!("Malformed action/metadata line [{}]: {err}", number + 1),
            )
        })?;
        let (op, meta) = match action {
            ActionLine::Create(meta) => (Op::Create, meta),
            ActionLine::Index(meta) => (Op::Index, meta),
            ActionLine::Update(meta) => (Op::Update, meta),
            ActionLine::Delete(meta) => (Op::Delete, meta),
        };
        let doc = if op == Op::Delete {
            Doc::Absent
        } else {
            match lines.next() {
                Some((_, doc_line)) if !trim(doc_line).is_empty() => probe(trim(doc_line), options),
                _ => return Err(BulkError::new("illegal_argument_exception", TERMINATED)),
            }
        };
        let index = meta
            .index
            .or_else(|| options.default_index.map(Cow::Borrowed));
        if index.is_none() {
            return Err(BulkError::new(
                "action_request_validation_exception",
                format!("Validation Failed: {}: index is missing;", items.len() + 1),
            ));
        }
        items.push(Item {
            op,
            index,
            id: meta.id,
            doc,
        });
    }
    if items.is_empty() {
        return Err(BulkError::new(
            "action_request_validation_exception",
            "Validation Failed: 1: no requests added;",
        ));
    }
    Ok(items)
}

fn trim(line: &[u8]) -> &[u8] {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |at| at + 1);
    &line[start..end]
}

fn probe<'a>(line: &'a [u8], options: &ParseOptions<'_>) -> Doc<'a> {
    let seed = ProbeSeed {
        reject_field: options.reject_field,
        track_loadgen: options.track_loadgen,
    };
    let mut de = serde_json::Deserializer::from_slice(line);
    let probed = seed.deserialize(&mut de).and_then(|found| {
        de.end()?;
        Ok(found)
    });
    let found = match probed {
        Ok(found) => found,
        Err(err) => return Doc::Malformed(err.to_string()),
    };
    let source = if options.keep_documents {
        match serde_json::from_slice(line) {
            Ok(value) => Some(value),
            Err(err) => return Doc::Malformed(err.to_string()),
        }
    } else {
        None
    };
    Doc::Probed {
        has_timestamp: found.has_timestamp,
        rejected: found.rejected,
        loadgen: found.loadgen,
        source,
    }
}

/// What the probe reads from a document: only these fields are looked at, the rest skipped.
struct Probe<'a> {
    has_timestamp: bool,
    rejected: bool,
    loadgen: Option<(Cow<'a, str>, u64)>,
}

struct ProbeSeed<'r> {
    reject_field: Option<&'r str>,
    track_loadgen: bool,
}

#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct FieldsProbe<'a> {
    #[serde(borrow, default)]
    loadgen: Option<LoadgenProbe<'a>>,
}

#[derive(Deserialize)]
struct LoadgenProbe<'a> {
    #[serde(borrow, default)]
    run: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
}

impl<'a> LoadgenProbe<'a> {
    fn pair(self) -> Option<(Cow<'a, str>, u64)> {
        Some((self.run?, self.seq?))
    }
}

impl<'de> DeserializeSeed<'de> for ProbeSeed<'_> {
    type Value = Probe<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Probe<'de>, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ProbeSeed<'_> {
    type Value = Probe<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Probe<'de>, A::Error> {
        let mut found = Probe {
            has_timestamp: false,
            rejected: false,
            loadgen: None,
        };
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if key == "@timestamp" {
                found.has_timestamp = true;
            } else if self.reject_field == Some(key.as_ref()) {
                found.rejected = true;
            }
            if self.track_loadgen && key == "loadgen" {
                let loadgen: Option<LoadgenProbe<'de>> = map.next_value()?;
                if let Some(pair) = loadgen.and_then(LoadgenProbe::pair) {
                    found.loadgen = Some(pair);
                }
            } else if self.track_loadgen && key == "fields" {
                let fields: Option<FieldsProbe<'de>> = map.next_value()?;
                if found.loadgen.is_none() {
                    found.loadgen = fields.and_then(|f| f.loadgen).and_then(LoadgenProbe::pair);
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Which parts of the response `filter_path` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Filter {
    took: bool,
    errors: bool,
    /// Item fields kept (bits of `FIELD_*`); `ALL_FIELDS` keeps whole items.
    item_fields: u16,
}

const FIELD_INDEX: u16 = 1;
const FIELD_ID: u16 = 1 << 1;
const FIELD_VERSION: u16 = 1 << 2;
const FIELD_RESULT: u16 = 1 << 3;
const FIELD_SHARDS: u16 = 1 << 4;
const FIELD_SEQ_NO: u16 = 1 << 5;
const FIELD_PRIMARY_TERM: u16 = 1 << 6;
const FIELD_STATUS: u16 = 1 << 7;
const FIELD_ERROR: u16 = 1 << 8;
const ALL_FIELDS: u16 = (1 << 9) - 1;

impl Filter {
    /// No `filter_path`: everything.
    pub(crate) const ALL: Filter = Filter {
        took: true,
        errors: true,
        item_fields: ALL_FIELDS,
    };

    /// Reads a (percent-decoded) `filter_path` value such as
    /// `errors,items.*.error,items.*.status`.
    pub(crate) fn parse(value: &str) -> Filter {
        let mut filter = Filter {
            took: false,
            errors: false,
            item_fields: 0,
        };
        for path in value.split(',').map(str::trim) {
            let mut parts = path.splitn(3, '.');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("*" | "**"), _, _) => return Filter::ALL,
                (Some("took"), None, _) => filter.took = true,
                (Some("errors"), None, _) => filter.errors = true,
                (Some("items"), None | Some("*" | "**"), None) => filter.item_fields = ALL_FIELDS,
                (Some("items"), Some(_), Some(field)) => {
                    let field = field.split('.').next().unwrap_or(field);
                    filter.item_fields |= match field {
                        "_index" => FIELD_INDEX,
                        "_id" => FIELD_ID,
                        "_version" => FIELD_VERSION,
                        "result" => FIELD_RESULT,
                        "_shards" => FIELD_SHARDS,
                        "_seq_no" => FIELD_SEQ_NO,
                        "_primary_term" => FIELD_PRIMARY_TERM,
                        "status" => FIELD_STATUS,
                        "error" => FIELD_ERROR,
                        "*" | "**" => ALL_FIELDS,
                        _ => 0,
                    };
                }
                _ => {}
            }
        }
        filter
    }
}

/// The answer for one item.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Indexed: 201 `created`.
    Created {
        /// `_id` (generated when the action had none).
        id: String,
        /// `_seq_no` within the data stream.
        seq_no: u64,
    },
    /// Not indexed.
    Failed {
        /// Item status.
        status: u16,
        /// Elasticsearch error type.
        kind: &'static str,
        /// Reason text.
        reason: String,
        /// `_index` is the backing index (`.ds-...`) rather than the name asked for.
        backing: bool,
    },
}

impl Outcome {
    /// The item's HTTP status.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Outcome::Created { .. } => 201,
            Outcome::Failed { status, .. } => *status,
        }
    }
}

/// The backing index name of a data stream, as a fresh 8.x cluster names it.
pub(crate) fn backing_index(data_stream: &str) -> String {
    format!(".ds-{data_stream}-2026.11.22-000001")
}

fn write_str(buf: &mut Vec<u8>, s: &str) {
    // Only fails on a writer error; a Vec never fails.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// Writes the `_bulk` response body.
pub(crate) fn write_response(
    items: &[Item<'_>],
    outcomes: &[Outcome],
    took_ms: u64,
    filter: Filter,
) -> Vec<u8> {
    let errors = outcomes.iter().any(|o| o.status() >= 300);
    let mut buf = Vec::with_capacity(32 + outcomes.len() * 220);
    buf.push(b'{');
    let mut first = true;
    let mut sep = |buf: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            buf.push(b',');
        }
    };
    if filter.took {
        sep(&mut buf);
        let _ = write!(buf, "\"took\":{took_ms}");
    }
    if filter.errors {
        sep(&mut buf);
        let _ = write!(buf, "\"errors\":{errors}");
    }
    if filter.item_fields != 0 {
        let mut items_buf = Vec::with_capacity(outcomes.len() * 200);
        let mut any = false;
        for (item, outcome) in items.iter().zip(outcomes) {
            let mark = items_buf.len();
            if any {
                items_buf.push(b',');
            }
            if write_item(&mut items_buf, item, outcome, filter.item_fields) {
                any = true;
            } else {
                items_buf.truncate(mark);
            }
        }
        if any {
            sep(&mut buf);
            buf.extend_from_slice(b"\"items\":[");
            buf.extend_from_slice(&items_buf);
            buf.push(b']');
        }
    }
    buf.push(b'}');
    buf
}

/// Writes one item; false if the filter left nothing of it.
fn write_item(buf: &mut Vec<u8>, item: &Item<'_>, outcome: &Outcome, fields: u16) -> bool {
    let index = item.index.as_deref().unwrap_or("");
    let _ = write!(buf, "{{\"{}\":{{", item.op.name());
    let start = buf.len();
    let field = |buf: &mut Vec<u8>, name: &str| {
        if buf.len() > start {
            buf.push(b',');
        }
        buf.push(b'"');
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b"\":");
    };
    match outcome {
        Outcome::Created { id, seq_no } => {
            if fields & FIELD_INDEX != 0 {
                field(buf, "_index");
                write_str(buf, &backing_index(index));
            }
            if fields & FIELD_ID != 0 {
                field(buf, "_id");
                write_str(buf, id);
            }
            if fields & FIELD_VERSION != 0 {
                field(buf, "_version");
                buf.push(b'1');
            }
            if fields & FIELD_RESULT != 0 {
                field(buf, "result");
                buf.extend_from_slice(b"\"created\"");
            }
            if fields & FIELD_SHARDS != 0 {
                field(buf, "_shards");
                buf.extend_from_slice(br#"{"total":2,"successful":1,"failed":0}"#);
            }
            if fields & FIELD_SEQ_NO != 0 {
                field(buf, "_seq_no");
                let _ = write!(buf, "{seq_no}");
            }
            if fields & FIELD_PRIMARY_TERM != 0 {
                field(buf, "_primary_term");
                buf.push(b'1');
            }
            if fields & FIELD_STATUS != 0 {
                field(buf, "status");
                buf.extend_from_slice(b"201");
            }
        }
        Outcome::Failed {
            status,
            kind,
            reason,
            backing,
        } => {
            let index_name = if *backing {
                backing_index(index)
            } else {
                index.to_string()
            };
            if fields & FIELD_INDEX != 0 {
                field(buf, "_index");
                write_str(buf, &index_name);
            }
            if fields & FIELD_ID != 0 {
                if let Some(id) = &item.id {
                    field(buf, "_id");
                    write_str(buf, id);
                }
            }
            if fields & FIELD_STATUS != 0 {
                field(buf, "status");
                let _ = write!(buf, "{status}");
            }
            if fields & FIELD_ERROR != 0 {
                field(buf, "error");
                buf.extend_from_slice(b"{\"type\":");
                write_str(buf, kind);
                buf.extend_from_slice(b",\"reason\":");
                write_str(buf, reason);
                if *backing {
                    buf.extend_from_slice(
                        b",\"index_uuid\":\"bW9jay1lcy1pbmRleA\",\"shard\":\"0\",\"index\":",
                    );
                    write_str(buf, &index_name);
                }
                buf.push(b'}');
            }
        }
    }
    let wrote = buf.len() > start;
    buf.extend_from_slice(b"}}");
    wrote
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: ParseOptions<'static> = ParseOptions {
        default_index: None,
        reject_field: Some("bad"),
        track_loadgen: true,
        keep_documents: false,
    };

    #[test]
    fn parses_actions_and_probes_documents() {
        let body = concat!(
            r#"{"create":{"_index":"logs-a-default","_id":"x\"1"}}"#,
            "\n",
            r#"{"@timestamp":"2026-01-01","bad":1,"loadgen":{"run":"r","seq":7},"msg":[1,{"a":2}]}"#,
            "\n\n",
            r#"{"index":{"_index":"logs-a-default"}}"#,
            "\n",
            r#"{"fields":{"loadgen":{"run":"r2","seq":8}}}"#,
            "\n",
            r#"{"delete":{"_index":"logs-a-default","_id":"z"}}"#,
            "\n",
            r#"{"create":{"_index":"logs-a-default"}}"#,
            "\n",
            "[1]\n",
        );
        let items = parse(body.as_bytes(), &OPTS).expect("parses");
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].op, Op::Create);
        assert_eq!(items[0].id.as_deref(), Some("x\"1"));
        match &items[0].doc {
            Doc::Probed {
                has_timestamp,
                rejected,
                loadgen,
                source,
            } => {
                assert!(has_timestamp);
                assert!(rejected);
                assert_eq!(loadgen, &Some((Cow::Borrowed("r"), 7)));
                assert!(source.is_none());
            }
            other => panic!("unexpected {other:?}"),
        }
        match &items[1].doc {
            Doc::Probed {
                has_timestamp,
                loadgen,
                ..
            } => {
                assert!(!has_timestamp);
                assert_eq!(loadgen, &Some((Cow::Borrowed("r2"), 8)));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(items[2].doc, Doc::Absent));
        assert!(matches!(items[3].doc, Doc::Malformed(_)));
    }

    #[test]
    fn rejects_malformed_bodies() {
        let err = parse(b"{\"create\":{}}\n{}", &OPTS).expect_err("no final newline");
        assert_eq!(err.kind, "illegal_argument_exception");
        let err = parse(b"{\"create\":\n", &OPTS).expect_err("broken json");
        assert_eq!(err.kind, "x_content_parse_exception");
        let err = parse(b"{\"frob\":{}}\n{}\n", &OPTS).expect_err("unknown action");
        assert_eq!(err.kind, "illegal_argument_exception");
        let err = parse(b"{\"create\":{}}\n{}\n", &OPTS).expect_err("no index");
        assert_eq!(err.kind, "action_request_validation_exception");
        let err = parse(b"\n", &OPTS).expect_err("empty");
        assert_eq!(err.kind, "action_request_validation_exception");
    }

    #[test]
    fn filter_path_as_beats_sends_it() {
        let filter = Filter::parse("errors,items.*.error,items.*.status");
        assert_eq!(
            filter,
            Filter {
                took: false,
                errors: true,
                item_fields: FIELD_ERROR | FIELD_STATUS
            }
        );
        let body = b"{\"create\":{\"_index\":\"logs-a-b\",\"_id\":\"1\"}}\n{}\n{\"create\":{\"_index\":\"logs-a-b\"}}\n{}\n";
        let items = parse(body, &OPTS).expect("parses");
        let outcomes = vec![
            Outcome::Created {
                id: "1".into(),
                seq_no: 0,
            },
            Outcome::Failed {
                status: 409,
                kind: "version_conflict_engine_exception",
                reason: "r".into(),
                backing: true,
            },
        ];
        let out = write_response(&items, &outcomes, 3, filter);
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid json");
        assert_eq!(
            value,
            serde_json::json!({"errors":true,"items":[
                {"create":{"status":201}},
                {"create":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"r",
                    "index_uuid":"bW9jay1lcy1pbmRleA","shard":"0","index":".ds-logs-a-b-2026.11.22-000001"}}}
            ]})
        );
        let full = write_response(&items, &outcomes, 3, Filter::ALL);
        let value: serde_json::Value = serde_json::from_slice(&full).expect("valid json");
        assert_eq!(value["took"], 3);
        assert_eq!(value["items"][0]["create"]["result"], "created");
        assert_eq!(
            value["items"][0]["create"]["_index"],
            ".ds-logs-a-b-2026.11.22-000001"
        );
        let only_errors = write_response(&items, &outcomes, 3, Filter::parse("items.*.error"));
        let value: serde_json::Value = serde_json::from_slice(&only_errors).expect("valid json");
        assert_eq!(value["items"].as_array().map(Vec::len), Some(1));
    }
}
