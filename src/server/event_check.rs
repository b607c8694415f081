//! Validates one queued-to-be `Event` by walking its protobuf bytes, without building it.
//!
//! [`check_event`] walks every byte of an encoded `Event` (PROTOCOL.md §2) by prost's rules
//! (`wire.rs`): the bytes it accepts are bytes [`Event::decode`] decodes, so the output
//! can always read what the Producer API queued, and it refuses exactly what prost would
//! have refused when the event came inside a `PublishRequest` (one level of the
//! recursion limit is the request's). It returns what the Producer API needs to know of
//! the event: whether it has a timestamp, its data stream parts and its source ids, with
//! prost's merge rules for a field given more than once (the last value of each string
//! wins; a message given twice is present). [`validate`] then applies the checks the
//! output needs, with the messages the service always gave.
//!
//! [`Event::decode`]: prost::Message::decode

use super::wire::{Budget, Reader, WireError, WireResult, FIXED32, FIXED64, TOP_BUDGET, VARINT};
use std::fmt;

/// The budget of an event's fields inside a `PublishRequest`.
const EVENT_BUDGET: Budget = TOP_BUDGET - 1;

/// What the Producer API reads of an event; strings borrow the event's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventView<'a> {
    /// `timestamp` is present.
    pub has_timestamp: bool,
    /// `data_stream` `type`, `dataset`, `namespace`, when `data_stream` is present.
    pub data_stream: Option<[&'a str; 3]>,
    /// `source.input_id` (empty without a source).
    pub input_id: &'a str,
    /// `source.stream_id` (empty without a source).
    pub stream_id: &'a str,
}

/// Why an event's bytes are not an `Event`: the top-level field and the wire error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedEvent {
    /// `timestamp`, `source`, `data_stream`, `metadata`, `fields`, or `event` for the
    /// event's own framing and unknown fields.
    pub field: &'static str,
    /// What and where (bytes from the event's start).
    pub error: WireError,
}

impl fmt::Display for MalformedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == "event" {
            write!(f, "malformed protobuf: {}", self.error)
        } else {
            write!(f, "malformed protobuf in {}: {}", self.field, self.error)
        }
    }
}

/// Walks the encoded `Event` in `bytes`; see the module doc.
pub fn check_event(bytes: &[u8]) -> Result<EventView<'_>, MalformedEvent> {
    let mut view = EventView::default();
    let mut r = Reader::new(bytes);
    let framing = |error| MalformedEvent {
        field: "event",
        error,
    };
    while !r.done() {
        let (field, wire_type) = r.key().map_err(framing)?;
        let name = match field {
            1 => "timestamp",
            2 => "source",
            3 => "data_stream",
            4 => "metadata",
            5 => "fields",
            _ => {
                r.skip(field, wire_type, EVENT_BUDGET).map_err(framing)?;
                continue;
            }
        };
        let named = |error| MalformedEvent { field: name, error };
        let (mut m, budget) = r.message_field(wire_type, EVENT_BUDGET).map_err(named)?;
        match field {
            1 => {
                timestamp(&mut m, budget).map_err(named)?;
                view.has_timestamp = true;
            }
            2 => {
                let [input_id, stream_id] =
                    strings(&mut m, budget, [view.input_id, view.stream_id]).map_err(named)?;
                (view.input_id, view.stream_id) = (input_id, stream_id);
            }
            3 => {
                let before = view.data_stream.unwrap_or([""; 3]);
                view.data_stream = Some(strings(&mut m, budget, before).map_err(named)?);
            }
            _ => structure(&mut m, budget).map_err(named)?,
        }
    }
    Ok(view)
}

/// Checks what the output needs of an event; the message names the field.
pub fn validate(event: &EventView<'_>) -> Result<(), String> {
    if !event.has_timestamp {
        return Err("timestamp is missing".into());
    }
    let Some(parts) = event.data_stream else {
        return Err("data_stream is missing".into());
    };
    for (name, value) in ["type", "dataset", "namespace"].into_iter().zip(parts) {
        if value.is_empty() {
            return Err(format!("data_stream.{name} is empty"));
        }
    }
    Ok(())
}

/// `google.protobuf.Timestamp`: `seconds` and `nanos`, both varints.
fn timestamp(r: &mut Reader<'_>, budget: Budget) -> WireResult<()> {
    while !r.done() {
        match r.key()? {
            (1 | 2, wire_type) => r.scalar_field(wire_type, VARINT)?,
            (field, wire_type) => r.skip(field, wire_type, budget)?,
        }
    }
    Ok(())
}

/// A message of string fields numbered `1..=N` (`Source`, `DataStream`), merged into
/// `values`: the last occurrence of each wins.
fn strings<'a, const N: usize>(
    r: &mut Reader<'a>,
    budget: Budget,
    mut values: [&'a str; N],
) -> WireResult<[&'a str; N]> {
    while !r.done() {
        let (field, wire_type) = r.key()?;
        match values.get_mut((field as usize).wrapping_sub(1)) {
            Some(value) => *value = r.string_field(wire_type)?,
            None => r.skip(field, wire_type, budget)?,
        }
    }
    Ok(values)
}

/// A `Struct`: `map<string, Value> data = 1`.
fn structure(r: &mut Reader<'_>, budget: Budget) -> WireResult<()> {
    while !r.done() {
        match r.key()? {
            (1, _) => {
                let (mut entry, budget) = r.map_entry(budget)?;
                while !entry.done() {
                    match entry.key()? {
                        (1, wire_type) => drop(entry.string_field(wire_type)?),
                        (2, wire_type) => {
                            let (mut v, budget) = entry.message_field(wire_type, budget)?;
                            value(&mut v, budget)?;
                        }
                        (field, wire_type) => entry.skip(field, wire_type, budget)?,
                    }
                }
            }
            (field, wire_type) => r.skip(field, wire_type, budget)?,
        }
    }
    Ok(())
}

/// A `Value` (oneof `kind`, fields 1 to 12).
fn value(r: &mut Reader<'_>, budget: Budget) -> WireResult<()> {
    while !r.done() {
        match r.key()? {
            // null (an enum), int32, int64, uint32, uint64, bool.
            (1 | 4 | 5 | 6 | 7 | 9, wire_type) => r.scalar_field(wire_type, VARINT)?,
            (2, wire_type) => r.scalar_field(wire_type, FIXED64)?,
            (3, wire_type) => r.scalar_field(wire_type, FIXED32)?,
            (8, wire_type) => drop(r.string_field(wire_type)?),
            (10, wire_type) => {
                let (mut m, budget) = r.message_field(wire_type, budget)?;
                structure(&mut m, budget)?;
            }
            (11, wire_type) => {
                let (mut list, budget) = r.message_field(wire_type, budget)?;
                while !list.done() {
                    match list.key()? {
                        (1, wire_type) => {
                            let (mut item, budget) = list.message_field(wire_type, budget)?;
                            value(&mut item, budget)?;
                        }
                        (field, wire_type) => list.skip(field, wire_type, budget)?,
                    }
                }
            }
            (12, wire_type) => {
                let (mut m, budget) = r.message_field(wire_type, budget)?;
                timestamp(&mut m, budget)?;
            }
            (field, wire_type) => r.skip(field, wire_type, budget)?,
        }
    }
    Ok(())
}
