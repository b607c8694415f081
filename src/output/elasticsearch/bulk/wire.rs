//! The direct writer for `_bulk`: a queued event's protobuf bytes → its action and document lines,
//! without building an `Event` (which costs an allocation per string, map and value).
//!
//! It writes exactly what `write_action` and `write_document` write for the decoded
//! event (object keys in wire order rather than hash order), and declines what it would
//! have to interpret as prost does in corner cases: a top-level field, a map key or a
//! `Value` kind given twice, group wire types, nesting deeper than [`MAX_DEPTH`], and
//! anything malformed. The caller then decodes the record instead.

use super::{write_data_stream_and_close, write_float, write_str, DEFAULT_DATA_STREAM};
use crate::output::document::rfc3339;
use std::io::Write;

/// Not written here; [`super::encode`] decodes the record with prost instead.
#[derive(Debug)]
pub(super) struct Declined;

type Result<T> = std::result::Result<T, Declined>;

/// Deepest nesting of values written directly (prost's own limit is 100 messages).
pub(super) const MAX_DEPTH: u32 = 32;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// Reads protobuf wire format from a slice.
struct Cursor<'p> {
    buf: &'p [u8],
}

impl<'p> Cursor<'p> {
    fn new(buf: &'p [u8]) -> Self {
        Cursor { buf }
    }

    fn done(&self) -> bool {
        self.buf.is_empty()
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for (i, &byte) in self.buf.iter().enumerate().take(10) {
            if i == 9 && byte > 1 {
                return Err(Declined);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(Declined)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        let (head, rest) = self.buf.split_first_chunk::<N>().ok_or(Declined)?;
        self.buf = rest;
        Ok(*head)
    }

    fn bytes(&mut self) -> Result<&'p [u8]> {
        let len = usize::try_from(self.varint()?).map_err(|_| Declined)?;
        if len > self.buf.len() {
            return Err(Declined);
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    fn str(&mut self) -> Result<&'p str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Declined)
    }

    /// The next field number and wire type.
    fn tag(&mut self) -> Result<(u32, u8)> {
        let tag = u32::try_from(self.varint()?).map_err(|_| Declined)?;
        if tag >> 3 == 0 {
            return Err(Declined);
        }
        Ok((tag >> 3, (tag & 7) as u8))
    }

    /// Skips a field this writer has no use for (as prost skips unknown fields).
    fn skip(&mut self, wire_type: u8) -> Result<()> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.fixed::<8>().map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => self.fixed::<4>().map(drop),
            _ => Err(Declined),
        }
    }

    /// A string field: checks the wire type, reads and checks UTF-8.
    fn string_field(&mut self, wire_type: u8) -> Result<&'p str> {
        if wire_type != LEN {
            return Err(Declined);
        }
        self.str()
    }

    fn varint_field(&mut self, wire_type: u8) -> Result<u64> {
        if wire_type != VARINT {
            return Err(Declined);
        }
        self.varint()
    }

    fn message_field(&mut self, wire_type: u8) -> Result<&'p [u8]> {
        if wire_type != LEN {
            return Err(Declined);
        }
        self.bytes()
    }
}

/// `google.protobuf.Timestamp` → `(seconds, nanos)`.
fn timestamp(bytes: &[u8]) -> Result<prost_types::Timestamp> {
    let mut ts = prost_types::Timestamp::default();
    let mut c = Cursor::new(bytes);
    while !c.done() {
        match c.tag()? {
            (1, wt) => ts.seconds = c.varint_field(wt)? as i64,
            (2, wt) => ts.nanos = c.varint_field(wt)? as i32,
            (_, wt) => c.skip(wt)?,
        }
    }
    Ok(ts)
}

/// The string fields numbered `1..=N` of a message (`Source`, `DataStream`), last wins.
fn strings<const N: usize>(bytes: &[u8]) -> Result<[&str; N]> {
    let mut values = [""; N];
    let mut c = Cursor::new(bytes);
    while !c.done() {
        let (field, wt) = c.tag()?;
        match values.get_mut((field as usize).wrapping_sub(1)) {
            Some(value) => *value = c.string_field(wt)?,
            None => c.skip(wt)?,
        }
    }
    Ok(values)
}

/// Map keys of the structs being written, as offsets into the payload, for the check
/// that no struct names a key twice.
struct Keys<'p, 's> {
    payload: &'p [u8],
    stack: &'s mut Vec<(usize, usize)>,
}

impl Keys<'_, '_> {
    /// `key` is empty or a slice of the payload.
    fn push(&mut self, key: &str) {
        let offset = if key.is_empty() {
            0
        } else {
            key.as_ptr() as usize - self.payload.as_ptr() as usize
        };
        self.stack.push((offset, key.len()));
    }

    /// Checks the keys pushed since `start` are distinct, then forgets them.
    fn close(&mut self, start: usize) -> Result<()> {
        let payload = self.payload;
        let key = |&(at, len): &(usize, usize)| &payload[at..at + len];
        let keys = &mut self.stack[start..];
        let distinct = if keys.len() <= 16 {
            (1..keys.len()).all(|i| keys[..i].iter().all(|k| key(k) != key(&keys[i])))
        } else {
            keys.sort_unstable_by(|a, b| key(a).cmp(key(b)));
            keys.windows(2).all(|w| key(&w[0]) != key(&w[1]))
        };
        self.stack.truncate(start);
        distinct.then_some(()).ok_or(Declined)
    }
}

/// Writes the entries of a `Struct` as `"key":value` pairs (after a comma unless
/// `first`); with `skip_reserved`, `@timestamp` and `data_stream` are checked but not
/// written. Returns whether the next pair needs a comma.
fn write_entries(
    out: &mut Vec<u8>,
    keys: &mut Keys<'_, '_>,
    bytes: &[u8],
    mut first: bool,
    skip_reserved: bool,
    depth: u32,
) -> Result<bool> {
    let start = keys.stack.len();
    let mut c = Cursor::new(bytes);
    while !c.done() {
        let (field, wt) = c.tag()?;
        if field != 1 {
            c.skip(wt)?;
            continue;
        }
        let (key, value) = map_entry(c.message_field(wt)?)?;
        keys.push(key);
        let mark = out.len();
        if !first {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_value(out, keys, value, depth + 1)?;
        if skip_reserved && (key == "@timestamp" || key == "data_stream") {
            out.truncate(mark);
        } else {
            first = false;
        }
    }
    keys.close(start)?;
    Ok(first)
}

/// A `map<string, Value>` entry: its key and its value's bytes (empty: no value).
fn map_entry(bytes: &[u8]) -> Result<(&str, &[u8])> {
    let (mut key, mut value) = (None, None);
    let mut c = Cursor::new(bytes);
    while !c.done() {
        match c.tag()? {
            (1, wt) if key.is_none() => key = Some(c.string_field(wt)?),
            (2, wt) if value.is_none() => value = Some(c.message_field(wt)?),
            (1 | 2, _) => return Err(Declined),
            (_, wt) => c.skip(wt)?,
        }
    }
    Ok((key.unwrap_or(""), value.unwrap_or(&[])))
}

fn write_value(out: &mut Vec<u8>, keys: &mut Keys<'_, '_>, bytes: &[u8], depth: u32) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Declined);
    }
    let mut written = false;
    let mut c = Cursor::new(bytes);
    while !c.done() {
        let (field, wt) = c.tag()?;
        if !(1..=12).contains(&field) {
            c.skip(wt)?;
            continue;
        }
        if std::mem::replace(&mut written, true) {
            // A second kind: prost keeps the last (merging messages); decline.
            return Err(Declined);
        }
        match field {
            1 => {
                c.varint_field(wt)?;
                out.extend_from_slice(b"null");
            }
            2 if wt == FIXED64 => write_float(out, f64::from_le_bytes(c.fixed::<8>()?)),
            3 if wt == FIXED32 => write_float(out, f64::from(f32::from_le_bytes(c.fixed::<4>()?))),
            4 => {
                let _ = write!(out, "{}", c.varint_field(wt)? as i32);
            }
            5 => {
                let _ = write!(out, "{}", c.varint_field(wt)? as i64);
            }
            6 => {
                let _ = write!(out, "{}", c.varint_field(wt)? as u32);
            }
            7 => {
                let _ = write!(out, "{}", c.varint_field(wt)?);
            }
            8 => write_str(out, c.string_field(wt)?),
            9 => out.extend_from_slice(if c.varint_field(wt)? != 0 {
                b"true"
            } else {
                b"false"
            }),
            10 => {
                let fields = c.message_field(wt)?;
                out.push(b'{');
                write_entries(out, keys, fields, true, false, depth)?;
                out.push(b'}');
            }
            11 => {
                let list = c.message_field(wt)?;
                out.push(b'[');
                let mut items = Cursor::new(list);
                let mut first = true;
                while !items.done() {
                    match items.tag()? {
                        (1, wt) => {
                            let item = items.message_field(wt)?;
                            if !std::mem::take(&mut first) {
                                out.push(b',');
                            }
                            write_value(out, keys, item, depth + 1)?;
                        }
                        (_, wt) => items.skip(wt)?,
                    }
                }
                out.push(b']');
            }
            12 => write_str(out, &rfc3339(&timestamp(c.message_field(wt)?)?)),
            _ => return Err(Declined),
        }
    }
    if !written {
        out.extend_from_slice(b"null");
    }
    Ok(())
}

/// The `string_value` of a `Value` that is a string (checked already).
fn string_value(bytes: &[u8]) -> Option<&str> {
    let mut c = Cursor::new(bytes);
    let mut found = None;
    while !c.done() {
        match c.tag().ok()? {
            (8, wt) => found = Some(c.string_field(wt).ok()?),
            (1..=12, _) => return None,
            (_, wt) => c.skip(wt).ok()?,
        }
    }
    found
}

/// Writes records of one `_bulk` body; keeps its buffers from one record to the next.
pub(super) struct Writer<'a> {
    /// The `_id` prefix, JSON-escaped, without quotes.
    id_prefix: Vec<u8>,
    now: &'a str,
    name: String,
    scratch: Vec<u8>,
    keys: Vec<(usize, usize)>,
}

impl<'a> Writer<'a> {
    pub(super) fn new(queue_identity: &str, now_rfc3339: &'a str) -> Self {
        let prefix = queue_identity.get(..16).unwrap_or(queue_identity);
        let mut id_prefix = Vec::with_capacity(prefix.len() + 2);
        write_str(&mut id_prefix, prefix);
        id_prefix.pop();
        id_prefix.remove(0);
        Writer {
            id_prefix,
            now: now_rfc3339,
            name: String::new(),
            scratch: Vec::new(),
            keys: Vec::new(),
        }
    }

    /// Appends the action and document lines of the event in `payload`. On error
    /// `out` may hold part of them: the caller truncates.
    pub(super) fn write(&mut self, out: &mut Vec<u8>, payload: &[u8], seq: u64) -> Result<()> {
        let mut top: [Option<&[u8]>; 5] = [None; 5];
        let mut c = Cursor::new(payload);
        while !c.done() {
            let (field, wt) = c.tag()?;
            match top.get_mut((field as usize).wrapping_sub(1)) {
                Some(slot) if slot.is_none() => *slot = Some(c.message_field(wt)?),
                // Given twice: prost merges the two messages.
                Some(_) => return Err(Declined),
                None => c.skip(wt)?,
            }
        }
        let [timestamp_bytes, source, data_stream, metadata, fields] = top;
        let timestamp = timestamp_bytes.map(timestamp).transpose()?;
        if let Some(source) = source {
            strings::<2>(source)?;
        }
        let [kind, dataset, namespace] = match data_stream {
            Some(bytes) => strings::<3>(bytes)?,
            None => ["", "", ""],
        };
        let (default_type, default_dataset, default_namespace) = DEFAULT_DATA_STREAM;
        fn pick<'x>(value: &'x str, default: &'static str) -> &'x str {
            if value.is_empty() {
                default
            } else {
                value
            }
        }
        self.name.clear();
        self.name.push_str(pick(kind, default_type));
        self.name.push('-');
        self.name.push_str(pick(dataset, default_dataset));
        self.name.push('-');
        self.name.push_str(pick(namespace, default_namespace));
        let mut keys = Keys {
            payload,
            stack: &mut self.keys,
        };
        let pipeline = match metadata {
            Some(bytes) => metadata_pipeline(&mut self.scratch, &mut keys, bytes)?,
            None => None,
        };

        out.extend_from_slice(br#"{"create":{"_index":"#);
        write_str(out, &self.name);
        out.extend_from_slice(br#","_id":""#);
        out.extend_from_slice(&self.id_prefix);
        let _ = write!(out, "-{seq}\"");
        if let Some(pipeline) = pipeline {
            out.extend_from_slice(br#","pipeline":"#);
            write_str(out, pipeline);
        }
        out.extend_from_slice(b"}}\n");

        out.push(b'{');
        let first = match fields {
            Some(bytes) => write_entries(out, &mut keys, bytes, true, true, 0)?,
            None => true,
        };
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(br#""@timestamp":"#);
        match &timestamp {
            Some(ts) => write_str(out, &rfc3339(ts)),
            None => write_str(out, self.now),
        }
        write_data_stream_and_close(out, &self.name);
        Ok(())
    }
}

/// Checks the whole `metadata` struct and returns its `pipeline`, if a string.
fn metadata_pipeline<'p>(
    scratch: &mut Vec<u8>,
    keys: &mut Keys<'_, '_>,
    bytes: &'p [u8],
) -> Result<Option<&'p str>> {
    scratch.clear();
    write_entries(scratch, keys, bytes, true, false, 0)?;
    let mut pipeline = None;
    let mut c = Cursor::new(bytes);
    while !c.done() {
        match c.tag()? {
            (1, wt) => {
                let (key, value) = map_entry(c.message_field(wt)?)?;
                if key == "pipeline" {
                    pipeline = string_value(value);
                }
            }
            (_, wt) => c.skip(wt)?,
        }
    }
    Ok(pipeline)
}
