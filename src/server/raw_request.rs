//! `PublishRequest` as the Producer API reads it: its uuid and the raw bytes of each event.
//!
//! [`RawPublishRequest`] stands in for the generated `PublishRequest` on the server side
//! only (build.rs maps the type for the server stub; clients keep the generated one).
//! Decoding takes the request body as one [`Bytes`] (with tonic's buffer, a reference
//! count, not a copy), walks its top-level fields by prost's rules (`wire.rs`), and keeps
//! each event as a slice of it: one allocation per request (the slice list), none per
//! event or field. The events are validated later, from their bytes (`event_check.rs`),
//! and queued as they came: they are the protobuf encoding of an `Event`, the queue's
//! record format.
//!
//! Decoding never fails: a request that is not a valid `PublishRequest` decodes with
//! [`RawPublishRequest::malformed`] set, and the service answers InvalidArgument naming
//! the problem (prost's codec would have answered Internal).

use super::wire::{Reader, WireError, WireResult, TOP_BUDGET};
use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};
use prost::DecodeError;

/// A `PublishRequest` whose events are left encoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawPublishRequest {
    /// `uuid` (field 1).
    pub uuid: String,
    /// Each event's encoded bytes (field 2), in order.
    pub events: Vec<Bytes>,
    /// Why the body is not a `PublishRequest`, if it is not.
    pub malformed: Option<WireError>,
}

impl RawPublishRequest {
    /// A request of `uuid` and already encoded events (for tests and tools).
    pub fn new(uuid: impl Into<String>, events: Vec<Bytes>) -> Self {
        RawPublishRequest {
            uuid: uuid.into(),
            events,
            malformed: None,
        }
    }

    /// Reads a whole request body.
    pub fn from_bytes(body: Bytes) -> Self {
        let mut request = RawPublishRequest::default();
        if let Err(error) = request.read(&body) {
            request = RawPublishRequest {
                malformed: Some(error),
                ..RawPublishRequest::default()
            };
        }
        request
    }

    fn read(&mut self, body: &Bytes) -> WireResult<()> {
        // Two passes over the top-level keys: count, then slice into a list of that size.
        let count = Self::walk(body, |_| {})?;
        let mut events = Vec::with_capacity(count);
        let mut uuid = None;
        Self::walk(body, |field| match field {
            Field::Uuid(text) => uuid = Some(text),
            Field::Event(start, end) => events.push(body.slice(start..end)),
        })?;
        self.events = events;
        if let Some(text) = uuid {
            self.uuid = text.to_string();
        }
        Ok(())
    }

    /// Calls `each` per uuid and event field in order; returns the number of events.
    fn walk<'a>(body: &'a [u8], mut each: impl FnMut(Field<'a>)) -> WireResult<usize> {
        let mut r = Reader::new(body);
        let mut count = 0;
        while !r.done() {
            match r.key()? {
                (1, wire_type) => each(Field::Uuid(r.string_field(wire_type)?)),
                (2, wire_type) => {
                    let (event, _) = r.message_field(wire_type, TOP_BUDGET)?;
                    count += 1;
                    each(Field::Event(event.at(), r.at()));
                }
                (field, wire_type) => r.skip(field, wire_type, TOP_BUDGET)?,
            }
        }
        Ok(count)
    }
}

enum Field<'a> {
    Uuid(&'a str),
    Event(usize, usize),
}

impl prost::Message for RawPublishRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.uuid.is_empty() {
            prost::encoding::string::encode(1, &self.uuid, buf);
        }
        for event in &self.events {
            prost::encoding::encode_key(2, WireType::LengthDelimited, buf);
            prost::encoding::encode_varint(event.len() as u64, buf);
            buf.put_slice(event);
        }
    }

    /// The whole body at once (see the module doc); never an error.
    fn merge(&mut self, mut buf: impl Buf) -> Result<(), DecodeError> {
        let body = buf.copy_to_bytes(buf.remaining());
        let more = RawPublishRequest::from_bytes(body);
        if more.malformed.is_some() {
            *self = more;
        } else if self.malformed.is_none() {
            if !more.uuid.is_empty() || self.uuid.is_empty() {
                self.uuid = more.uuid;
            }
            self.events.extend(more.events);
        }
        Ok(())
    }

    /// Only reached through prost's helpers for nested messages, which nothing uses.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => prost::encoding::string::merge(wire_type, &mut self.uuid, buf, ctx),
            2 => {
                let mut event = Bytes::new();
                prost::encoding::bytes::merge(wire_type, &mut event, buf, ctx)?;
                self.events.push(event);
                Ok(())
            }
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let uuid = if self.uuid.is_empty() {
            0
        } else {
            prost::encoding::string::encoded_len(1, &self.uuid)
        };
        uuid + self
            .events
            .iter()
            .map(|event| {
                prost::encoding::key_len(2)
                    + prost::encoding::encoded_len_varint(event.len() as u64)
                    + event.len()
            })
            .sum::<usize>()
    }

    fn clear(&mut self) {
        *self = RawPublishRequest::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::shipper::messages::{DataStream, Event};
    use crate::proto::shipper::PublishRequest;
    use prost::Message;

    fn event(dataset: &str) -> Event {
        Event {
            data_stream: Some(DataStream {
                dataset: dataset.into(),
                ..DataStream::default()
            }),
            ..Event::default()
        }
    }

    #[test]
    fn events_are_slices_of_the_body_and_re_encode_to_it() {
        let request = PublishRequest {
            uuid: "run-1".into(),
            events: vec![event("a"), Event::default(), event("c")],
        };
        let body = Bytes::from(request.encode_to_vec());
        let raw = RawPublishRequest::decode(body.clone()).unwrap();
        assert_eq!(raw.malformed, None);
        assert_eq!(raw.uuid, "run-1");
        let decoded: Vec<Event> = raw
            .events
            .iter()
            .map(|bytes| Event::decode(bytes.as_ref()).unwrap())
            .collect();
        assert_eq!(decoded, request.events);
        assert_eq!(raw.encode_to_vec(), body.to_vec());
        assert_eq!(raw.encoded_len(), body.len());
        // Zero copy: the event bytes live in the body's buffer.
        let inside = body.as_ptr_range();
        assert!(raw.events[0].as_ptr() >= inside.start && raw.events[0].as_ptr() < inside.end);
    }

    #[test]
    fn a_malformed_body_decodes_with_the_reason() {
        // Field 2 claims 4 GiB.
        let raw = RawPublishRequest::decode(&[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f][..]).unwrap();
        assert!(raw.malformed.is_some());
        assert!(raw.events.is_empty());
        assert!(PublishRequest::decode(&[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f][..]).is_err());
        // An event field with a varint wire type.
        let raw = RawPublishRequest::decode(&[0x10, 0x01][..]).unwrap();
        assert!(raw.malformed.is_some());
    }
}
