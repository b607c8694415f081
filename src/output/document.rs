//! Turns a queued event into the JSON document an output writes.

use crate::proto::shipper::messages::{value::Kind, Event, Struct, Value};
use serde_json::{Map, Value as Json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A queued payload that is not a valid event (only possible with a damaged queue).
#[derive(Debug, thiserror::Error)]
#[error("queued record {seq} is not a valid event: {reason}")]
pub struct DocumentError {
    /// The record's sequence number.
    pub seq: u64,
    /// The decoder's message.
    pub reason: String,
}

/// The document for `event`: its fields at the top level, `@timestamp`, `data_stream`.
pub fn event_document(event: &Event) -> Map<String, Json> {
    let mut doc = match &event.fields {
        Some(fields) => struct_to_json(fields),
        None => Map::new(),
    };
    if let Some(ts) = &event.timestamp {
        doc.insert("@timestamp".into(), Json::String(rfc3339(ts)));
    }
    if let Some(ds) = &event.data_stream {
        doc.insert(
            "data_stream".into(),
            serde_json::json!({"type": ds.r#type, "dataset": ds.dataset, "namespace": ds.namespace}),
        );
    }
    doc
}

/// Formats a protobuf timestamp as RFC 3339 UTC (`2026-11-22T10:00:00.123456789Z`).
pub fn rfc3339(ts: &prost_types::Timestamp) -> String {
    let nanos = ts.nanos.clamp(0, 999_999_999) as u32;
    let time = if ts.seconds >= 0 {
        UNIX_EPOCH + Duration::new(ts.seconds as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(ts.seconds.unsigned_abs())
            + Duration::from_nanos(nanos as u64)
    };
    humantime::format_rfc3339_nanos(clamp_time(time)).to_string()
}

fn clamp_time(time: SystemTime) -> SystemTime {
    // humantime formats years 1970..=9999 only.
    let max = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    time.clamp(UNIX_EPOCH, max)
}

/// Converts a messages `Struct` to a JSON object.
pub fn struct_to_json(value: &Struct) -> Map<String, Json> {
    value
        .data
        .iter()
        .map(|(key, value)| (key.clone(), value_to_json(value)))
        .collect()
}

fn value_to_json(value: &Value) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::Float64Value(v)) => float(*v),
        Some(Kind::Float32Value(v)) => float(f64::from(*v)),
        Some(Kind::Int32Value(v)) => Json::from(*v),
        Some(Kind::Int64Value(v)) => Json::from(*v),
        Some(Kind::Uint32Value(v)) => Json::from(*v),
        Some(Kind::Uint64Value(v)) => Json::from(*v),
        Some(Kind::StringValue(v)) => Json::String(v.clone()),
        Some(Kind::BoolValue(v)) => Json::Bool(*v),
        Some(Kind::StructValue(v)) => Json::Object(struct_to_json(v)),
        Some(Kind::ListValue(v)) => Json::Array(v.values.iter().map(value_to_json).collect()),
        Some(Kind::TimestampValue(v)) => Json::String(rfc3339(v)),
    }
}

fn float(v: f64) -> Json {
    // JSON has no NaN or infinity; null is what Beats writes for them.
    serde_json::Number::from_f64(v)
        .map(Json::Number)
        .unwrap_or(Json::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::shipper::messages::{DataStream, ListValue};

    fn string(v: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(v.into())),
        }
    }

    #[test]
    fn document_has_fields_timestamp_and_data_stream() {
        let mut fields = Struct::default();
        fields.data.insert("message".into(), string("hello"));
        fields.data.insert(
            "nan".into(),
            Value {
                kind: Some(Kind::Float64Value(f64::NAN)),
            },
        );
        fields.data.insert(
            "tags".into(),
            Value {
                kind: Some(Kind::ListValue(ListValue {
                    values: vec![string("a")],
                })),
            },
        );
        let event = Event {
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            data_stream: Some(DataStream {
                r#type: "logs".into(),
                dataset: "app".into(),
                namespace: "default".into(),
            }),
            fields: Some(fields),
            ..Event::default()
        };
        let doc = Json::Object(event_document(&event));
        assert_eq!(doc["message"], "hello");
        assert_eq!(doc["nan"], Json::Null);
        assert_eq!(doc["tags"][0], "a");
        assert_eq!(doc["@timestamp"], "2023-11-14T22:13:20.000000005Z");
        assert_eq!(doc["data_stream"]["dataset"], "app");
    }
}
