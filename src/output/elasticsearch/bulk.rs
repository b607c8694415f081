//! The `_bulk` wire format: records → NDJSON body, response → one outcome per item.
//!
//! Sans-IO: no sockets and no clock here (the time for events without a timestamp comes
//! in as an argument), so every rule of PROTOCOL.md §3 is tested on bytes.

use crate::dlq::Reason;
use crate::output::document::rfc3339;
use crate::proto::shipper::messages::{value::Kind, Event, Struct, Value};
use crate::queue::Record;
use prost::Message;
use serde::Deserialize;
use std::io::Write;

mod wire;

/// The query Beats sends: the response carries only what the output reads.
pub const BULK_PATH: &str = "/_bulk?filter_path=errors,items.*.error,items.*.status";

/// Data stream used when an event names none, as Elastic Agent's default.
const DEFAULT_DATA_STREAM: (&str, &str, &str) = ("logs", "generic", "default");

/// A body ready to send, and the records it holds in order.
#[derive(Debug)]
pub struct EncodedBulk {
    /// NDJSON: an action line and a document line per record.
    pub body: Vec<u8>,
    /// Positions (in the input slice) of the records in the body, in body order.
    pub sent: Vec<usize>,
    /// Records that are not valid events (a damaged queue), with the reason.
    pub undecodable: Vec<(usize, Reason)>,
}

/// The `_id` of a record: stable across resends, unique across queues.
pub fn document_id(queue_identity: &str, seq: u64) -> String {
    let prefix = queue_identity.get(..16).unwrap_or(queue_identity);
    format!("{prefix}-{seq}")
}

/// Encodes `records` as one `_bulk` body of `create` actions into their data streams.
/// `now_rfc3339` is used as `@timestamp` for events without one (data streams need it).
///
/// Each record is written straight from its protobuf bytes ([`wire`]), without decoding
/// it into an [`Event`]; a record the direct writer does not take (damaged, or unusual
/// such as a map key given twice) goes through [`Event::decode`], which writes the same
/// document or names why the record is not an event.
pub fn encode(records: &[Record], queue_identity: &str, now_rfc3339: &str) -> EncodedBulk {
    let mut body = Vec::with_capacity(records.iter().map(|r| r.payload.len() * 2 + 160).sum());
    let mut sent = Vec::with_capacity(records.len());
    let mut undecodable = Vec::new();
    let mut writer = wire::Writer::new(queue_identity, now_rfc3339);
    for (i, record) in records.iter().enumerate() {
        let mark = body.len();
        if writer.write(&mut body, &record.payload, record.seq).is_ok() {
            sent.push(i);
            continue;
        }
        body.truncate(mark);
        match Event::decode(record.payload.as_ref()) {
            Ok(event) => {
                write_action(&mut body, &event, queue_identity, record.seq);
                write_document(&mut body, &event, now_rfc3339);
                sent.push(i);
            }
            Err(err) => undecodable.push((
                i,
                Reason {
                    status: None,
                    error_type: "undecodable".into(),
                    message: format!("queued record {} is not a valid event: {err}", record.seq),
                },
            )),
        }
    }
    EncodedBulk {
        body,
        sent,
        undecodable,
    }
}

/// `{type}-{dataset}-{namespace}` of an event, defaults filled in.
pub fn data_stream_name(event: &Event) -> String {
    let (default_type, default_dataset, default_namespace) = DEFAULT_DATA_STREAM;
    let pick = |value: Option<&str>, default: &'static str| -> String {
        match value {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => default.to_string(),
        }
    };
    let ds = event.data_stream.as_ref();
    format!(
        "{}-{}-{}",
        pick(ds.map(|d| d.r#type.as_str()), default_type),
        pick(ds.map(|d| d.dataset.as_str()), default_dataset),
        pick(ds.map(|d| d.namespace.as_str()), default_namespace)
    )
}

fn write_action(out: &mut Vec<u8>, event: &Event, queue_identity: &str, seq: u64) {
    out.extend_from_slice(br#"{"create":{"_index":"#);
    write_str(out, &data_stream_name(event));
    out.extend_from_slice(br#","_id":"#);
    write_str(out, &document_id(queue_identity, seq));
    // Beats routes an event to an ingest pipeline named in its `@metadata.pipeline`.
    if let Some(Value {
        kind: Some(Kind::StringValue(pipeline)),
    }) = event.metadata.as_ref().and_then(|m| m.data.get("pipeline"))
    {
        out.extend_from_slice(br#","pipeline":"#);
        write_str(out, pipeline);
    }
    out.extend_from_slice(b"}}\n");
}

/// The document: the event's fields, then `@timestamp` and `data_stream` (which win over
/// fields of the same name, as they decide where and when the event is indexed).
fn write_document(out: &mut Vec<u8>, event: &Event, now_rfc3339: &str) {
    out.push(b'{');
    let mut first = true;
    if let Some(fields) = &event.fields {
        for (key, value) in &fields.data {
            if key == "@timestamp" || key == "data_stream" {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(out, key);
            out.push(b':');
            write_value(out, value);
        }
    }
    if !first {
        out.push(b',');
    }
    out.extend_from_slice(br#""@timestamp":"#);
    match &event.timestamp {
        Some(ts) => write_str(out, &rfc3339(ts)),
        None => write_str(out, now_rfc3339),
    }
    write_data_stream_and_close(out, &data_stream_name(event));
}

/// `,"data_stream":{type,dataset,namespace}}` and the newline that end a document line;
/// `name` is `{type}-{dataset}-{namespace}`, split at its first two dashes.
fn write_data_stream_and_close(out: &mut Vec<u8>, name: &str) {
    let mut parts = name.splitn(3, '-');
    out.extend_from_slice(br#","data_stream":{"type":"#);
    write_str(out, parts.next().unwrap_or_default());
    out.extend_from_slice(br#","dataset":"#);
    write_str(out, parts.next().unwrap_or_default());
    out.extend_from_slice(br#","namespace":"#);
    write_str(out, parts.next().unwrap_or_default());
    out.extend_from_slice(b"}}\n");
}

fn write_str(out: &mut Vec<u8>, text: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn write_struct(out: &mut Vec<u8>, value: &Struct) {
    out.push(b'{');
    for (i, (key, value)) in value.data.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => out.extend_from_slice(b"null"),
        Some(Kind::Float64Value(v)) => write_float(out, *v),
        Some(Kind::Float32Value(v)) => write_float(out, f64::from(*v)),
        Some(Kind::Int32Value(v)) => {
            let _ = write!(out, "{v}");
        }
        Some(Kind::Int64Value(v)) => {
            let _ = write!(out, "{v}");
        }
        Some(Kind::Uint32Value(v)) => {
            let _ = write!(out, "{v}");
        }
        Some(Kind::Uint64Value(v)) => {
            let _ = write!(out, "{v}");
        }
        Some(Kind::StringValue(v)) => write_str(out, v),
        Some(Kind::BoolValue(v)) => out.extend_from_slice(if *v { b"true" } else { b"false" }),
        Some(Kind::StructValue(v)) => write_struct(out, v),
        Some(Kind::ListValue(v)) => {
            out.push(b'[');
            for (i, item) in v.values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Some(Kind::TimestampValue(v)) => write_str(out, &rfc3339(v)),
    }
}

fn write_float(out: &mut Vec<u8>, v: f64) {
    // JSON has no NaN or infinity; null is what Beats writes for them.
    match serde_json::Number::from_f64(v) {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// What became of one item of a `_bulk` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Indexed (2xx).
    Indexed,
    /// 409: a document with this `_id` exists, i.e. an earlier send of this record
    /// succeeded. Delivered.
    AlreadyIndexed,
    /// 429 or 5xx: send it again later.
    Retry(Reason),
    /// Any other status: it can never be indexed as it is.
    Reject(Reason),
}

impl ItemOutcome {
    /// The outcome of an item with `status` and, on failure, ES's error type and reason.
    pub fn from_status(status: u16, error_type: &str, reason: &str) -> Self {
        let reason = || Reason {
            status: Some(status),
            error_type: error_type.to_string(),
            message: reason.to_string(),
        };
        match status {
            200..=299 => ItemOutcome::Indexed,
            409 => ItemOutcome::AlreadyIndexed,
            429 | 500..=599 => ItemOutcome::Retry(reason()),
            _ => ItemOutcome::Reject(reason()),
        }
    }

    /// Whether the record is done with (indexed now or before).
    pub fn is_delivered(&self) -> bool {
        matches!(self, ItemOutcome::Indexed | ItemOutcome::AlreadyIndexed)
    }
}

/// A 2xx `_bulk` body that does not say what happened to each item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable _bulk response: {0}")]
pub struct ResponseError(pub String);

#[derive(Deserialize)]
struct Response {
    errors: bool,
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, Item>>,
}

#[derive(Deserialize)]
struct Head {
    errors: bool,
}

#[derive(Deserialize)]
struct Item {
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

#[derive(Deserialize)]
struct ItemError {
    #[serde(default, rename = "type")]
    error_type: String,
    #[serde(default)]
    reason: String,
}

/// Reads a 2xx `_bulk` response for `sent` items.
///
/// # Errors
/// The body is not a bulk response, or it has another number of items than was sent (the
/// caller then sends them all again; the `_id`s make that safe).
pub fn parse_response(body: &[u8], sent: usize) -> Result<Vec<ItemOutcome>, ResponseError> {
    let head: Head = serde_json::from_slice(body).map_err(|e| ResponseError(e.to_string()))?;
    if !head.errors {
        return Ok(vec![ItemOutcome::Indexed; sent]);
    }
    let response: Response =
        serde_json::from_slice(body).map_err(|e| ResponseError(e.to_string()))?;
    debug_assert!(response.errors);
    if response.items.len() != sent {
        return Err(ResponseError(format!(
            "{} items in the response for {sent} sent",
            response.items.len()
        )));
    }
    Ok(response
        .items
        .iter()
        .map(|item| match item.values().next() {
            Some(item) => {
                let (error_type, reason) = item
                    .error
                    .as_ref()
                    .map(|e| (e.error_type.as_str(), e.reason.as_str()))
                    .unwrap_or(("", ""));
                ItemOutcome::from_status(item.status, error_type, reason)
            }
            None => ItemOutcome::Retry(Reason {
                status: None,
                error_type: "empty_item".into(),
                message: "the response item names no action".into(),
            }),
        })
        .collect())
}

/// `error.type: error.reason` of an error body, or its first 200 bytes.
pub fn error_summary(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: ItemError,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => format!("{}: {}", parsed.error.error_type, parsed.error.reason),
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            text.trim().to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::shipper::messages::DataStream;
    use crate::queue::GenerationId;
    use bytes::Bytes;

    fn record(seq: u64, event: &Event) -> Record {
        Record {
            seq,
            generation: GenerationId(0),
            payload: Bytes::from(event.encode_to_vec()),
        }
    }

    fn event(dataset: &str) -> Event {
        let mut fields = Struct::default();
        fields.data.insert(
            "message".into(),
            Value {
                kind: Some(Kind::StringValue("hi \"there\"".into())),
            },
        );
        fields.data.insert(
            "data_stream".into(),
            Value {
                kind: Some(Kind::StringValue("ignored".into())),
            },
        );
        Event {
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            data_stream: Some(DataStream {
                r#type: "logs".into(),
                dataset: dataset.into(),
                namespace: "prod".into(),
            }),
            fields: Some(fields),
            ..Event::default()
        }
    }

    #[test]
    fn body_is_create_actions_into_data_streams_with_stable_ids() {
        let records = vec![
            record(7, &event("app")),
            Record {
                seq: 8,
                generation: GenerationId(0),
                payload: Bytes::from_static(b"\xff\xff"),
            },
            record(9, &Event::default()),
        ];
        let encoded = encode(&records, "0123456789abcdef0123", "2026-11-22T00:00:00Z");
        assert_eq!(encoded.sent, vec![0, 2]);
        assert_eq!(encoded.undecodable.len(), 1);
        assert_eq!(encoded.undecodable[0].0, 1);
        let lines: Vec<serde_json::Value> = encoded
            .body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["create"]["_index"], "logs-app-prod");
        assert_eq!(lines[0]["create"]["_id"], "0123456789abcdef-7");
        assert_eq!(lines[1]["message"], "hi \"there\"");
        assert_eq!(lines[1]["@timestamp"], "2023-11-14T22:13:20.000000000Z");
        assert_eq!(lines[1]["data_stream"]["dataset"], "app");
        assert_eq!(lines[1]["data_stream"]["namespace"], "prod");
        // No data stream and no timestamp: Elastic Agent's default stream, the send time.
        assert_eq!(lines[2]["create"]["_index"], "logs-generic-default");
        assert_eq!(lines[3]["@timestamp"], "2026-11-22T00:00:00Z");
        // The same record encodes to the same action: a resend is a 409, not a duplicate.
        let again = encode(&records, "0123456789abcdef0123", "2026-11-22T00:00:00Z");
        let first_line = |body: &[u8]| body.split(|b| *b == b'\n').next().unwrap().to_vec();
        assert_eq!(first_line(&again.body), first_line(&encoded.body));
    }

    /// What the decoded-event writers produce: the reference for the direct writer.
    fn reference(records: &[Record], identity: &str, now: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for record in records {
            let event = Event::decode(record.payload.as_ref()).unwrap();
            write_action(&mut body, &event, identity, record.seq);
            write_document(&mut body, &event, now);
        }
        body
    }

    fn json_lines(body: &[u8]) -> Vec<serde_json::Value> {
        body.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    fn value(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    fn rich_event() -> Event {
        let mut inner = Struct::default();
        inner.data.insert("n".into(), value(Kind::Int32Value(-7)));
        inner.data.insert("z".into(), Value { kind: None });
        let mut fields = Struct::default();
        for (key, kind) in [
            ("message", Kind::StringValue("line \u{1} \"q\" é\n".into())),
            ("f64", Kind::Float64Value(1.5e300)),
            ("nan", Kind::Float64Value(f64::NAN)),
            ("f32", Kind::Float32Value(0.1)),
            ("i64", Kind::Int64Value(i64::MIN)),
            ("u32", Kind::Uint32Value(u32::MAX)),
            ("u64", Kind::Uint64Value(u64::MAX)),
            ("yes", Kind::BoolValue(true)),
            ("no", Kind::BoolValue(false)),
            ("null", Kind::NullValue(0)),
            ("inner", Kind::StructValue(inner.clone())),
            (
                "list",
                Kind::ListValue(crate::proto::shipper::messages::ListValue {
                    values: vec![
                        value(Kind::StringValue("a".into())),
                        value(Kind::StructValue(inner)),
                        value(Kind::ListValue(Default::default())),
                    ],
                }),
            ),
            (
                "when",
                Kind::TimestampValue(prost_types::Timestamp {
                    seconds: 1_800_000_000,
                    nanos: 5,
                }),
            ),
            ("@timestamp", Kind::StringValue("ignored".into())),
            ("", Kind::StringValue("empty key".into())),
        ] {
            fields.data.insert(key.into(), value(kind));
        }
        let mut metadata = Struct::default();
        metadata.data.insert(
            "pipeline".into(),
            value(Kind::StringValue("my-pipe".into())),
        );
        metadata
            .data
            .insert("other".into(), value(Kind::BoolValue(true)));
        Event {
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_789,
            }),
            source: Some(crate::proto::shipper::messages::Source {
                input_id: "in".into(),
                stream_id: "s".into(),
            }),
            data_stream: Some(DataStream {
                r#type: "metrics".into(),
                dataset: "".into(),
                namespace: "ns".into(),
            }),
            metadata: Some(metadata),
            fields: Some(fields),
        }
    }

    #[test]
    fn the_direct_writer_writes_what_the_decoded_event_writes() {
        let mut no_pipeline = rich_event();
        no_pipeline
            .metadata
            .as_mut()
            .unwrap()
            .data
            .insert("pipeline".into(), value(Kind::Int32Value(1)));
        let events = [
            rich_event(),
            no_pipeline,
            event("app"),
            Event::default(),
            Event {
                fields: Some(Struct::default()),
                ..Event::default()
            },
        ];
        let records: Vec<Record> = events
            .iter()
            .enumerate()
            .map(|(i, e)| record(i as u64 * 1000, e))
            .collect();
        let identity = "ab\"cdef0123456789xyz";
        let now = "2026-11-22T00:00:00Z";
        let encoded = encode(&records, identity, now);
        assert_eq!(encoded.sent, (0..events.len()).collect::<Vec<_>>());
        assert_eq!(
            json_lines(&encoded.body),
            json_lines(&reference(&records, identity, now))
        );
        let lines = json_lines(&encoded.body);
        assert_eq!(lines[0]["create"]["pipeline"], "my-pipe");
        assert_eq!(lines[0]["create"]["_index"], "metrics-generic-ns");
        assert!(lines[2]["create"].get("pipeline").is_none());
        // Every record went the direct way: the body is byte for byte what the writer makes.
        let mut writer = wire::Writer::new(identity, now);
        let mut direct = Vec::new();
        for r in &records {
            writer.write(&mut direct, &r.payload, r.seq).unwrap();
        }
        assert_eq!(direct, encoded.body);
    }

    #[test]
    fn unusual_or_damaged_records_take_the_decoding_path() {
        let base = event("app").encode_to_vec();
        // `fields` given twice: prost merges the two maps; so must the body.
        let mut extra = Struct::default();
        extra
            .data
            .insert("second".into(), value(Kind::BoolValue(true)));
        let mut merged = base.clone();
        prost::encoding::message::encode(5, &extra, &mut merged);
        // A map key given twice: the last one wins.
        let mut twice = base.clone();
        let mut again = Struct::default();
        again
            .data
            .insert("message".into(), value(Kind::StringValue("last".into())));
        let mut entry = Vec::new();
        prost::encoding::message::encode(5, &again, &mut entry);
        twice.extend_from_slice(&entry);
        let payloads = [
            merged,
            twice,
            // Cut short, and not UTF-8 inside a string.
            base[..base.len() - 3].to_vec(),
            {
                let mut bad = base.clone();
                let at = bad.windows(2).position(|w| w == b"hi").unwrap();
                bad[at] = 0xff;
                bad
            },
        ];
        let records: Vec<Record> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| Record {
                seq: i as u64,
                generation: GenerationId(0),
                payload: Bytes::from(p.clone()),
            })
            .collect();
        let mut writer = wire::Writer::new("q", "now");
        for r in &records {
            assert!(writer.write(&mut Vec::new(), &r.payload, r.seq).is_err());
        }
        let encoded = encode(&records, "q", "2026-11-22T00:00:00Z");
        assert_eq!(encoded.sent, vec![0, 1]);
        assert_eq!(
            encoded
                .undecodable
                .iter()
                .map(|(i, _)| *i)
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(
            json_lines(&encoded.body),
            json_lines(&reference(&records[..2], "q", "2026-11-22T00:00:00Z"))
        );
        let lines = json_lines(&encoded.body);
        assert_eq!(lines[1]["second"], true);
        assert_eq!(lines[3]["message"], "last");
    }

    #[test]
    fn statuses_follow_protocol_section_3() {
        assert_eq!(ItemOutcome::from_status(201, "", ""), ItemOutcome::Indexed);
        assert_eq!(
            ItemOutcome::from_status(409, "version_conflict_engine_exception", "exists"),
            ItemOutcome::AlreadyIndexed
        );
        assert!(matches!(
            ItemOutcome::from_status(429, "x", "y"),
            ItemOutcome::Retry(_)
        ));
        assert!(matches!(
            ItemOutcome::from_status(503, "x", "y"),
            ItemOutcome::Retry(_)
        ));
        match ItemOutcome::from_status(400, "mapper_parsing_exception", "bad field") {
            ItemOutcome::Reject(reason) => {
                assert_eq!(reason.status, Some(400));
                assert_eq!(reason.error_type, "mapper_parsing_exception");
                assert_eq!(reason.message, "bad field");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ItemOutcome::from_status(403, "security_exception", "no"),
            ItemOutcome::Reject(_)
        ));
    }

    #[test]
    fn responses_are_read_item_by_item() {
        assert_eq!(
            parse_response(
                br#"{"errors":false,"items":[{"create":{"status":201}}]}"#,
                1
            )
            .unwrap(),
            vec![ItemOutcome::Indexed]
        );
        let body = br#"{"errors":true,"items":[
            {"create":{"status":201}},
            {"create":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
            {"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"busy"}}},
            {"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"bad"}}}]}"#;
        let outcomes = parse_response(body, 4).unwrap();
        assert_eq!(outcomes[0], ItemOutcome::Indexed);
        assert_eq!(outcomes[1], ItemOutcome::AlreadyIndexed);
        assert!(matches!(outcomes[2], ItemOutcome::Retry(_)));
        assert!(
            matches!(&outcomes[3], ItemOutcome::Reject(r) if r.error_type == "mapper_parsing_exception")
        );
        assert!(
            parse_response(body, 3).is_err(),
            "an item count mismatch is an error"
        );
        assert!(parse_response(b"<html>", 1).is_err());
    }

    #[test]
    fn error_bodies_are_summarised() {
        let body = br#"{"error":{"type":"security_exception","reason":"unable to authenticate"},"status":401}"#;
        assert_eq!(
            error_summary(body),
            "security_exception: unable to authenticate"
        );
        assert_eq!(error_summary(b"Bad Gateway"), "Bad Gateway");
    }
}
