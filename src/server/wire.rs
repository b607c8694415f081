//! Reads protobuf wire format from a byte slice by prost's rules, for the Producer API's
//! zero-copy path (`raw_request.rs`, `event_check.rs`).
//!
//! The point is agreement with prost: bytes this reader walks without error are bytes
//! prost decodes, and the other way round. So it copies prost 0.14's rules, including the
//! odd ones: a varint is at most ten bytes and the tenth at most 1; a key above `u32::MAX`,
//! field number 0 or wire type 6/7 is an error; unknown fields are skipped, groups
//! included; and the recursion limit of 100 counts every nested message, map entry and
//! group, and is checked before skipping any unknown field ([`Budget`]).

use std::fmt;

/// Wire types.
pub(crate) const VARINT: u8 = 0;
pub(crate) const FIXED64: u8 = 1;
pub(crate) const LEN: u8 = 2;
pub(crate) const START_GROUP: u8 = 3;
pub(crate) const END_GROUP: u8 = 4;
pub(crate) const FIXED32: u8 = 5;

/// prost's `DecodeContext` recursion count for the fields of the message being read: the
/// top-level message starts at 100, each nested message, map entry or group takes one,
/// and at 0 neither a nested message nor an unknown field may be read.
pub(crate) type Budget = u32;

/// The budget of a top-level message's fields (prost's `RECURSION_LIMIT`).
pub(crate) const TOP_BUDGET: Budget = 100;

/// What is wrong with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireErrorKind {
    /// A length or fixed-size field runs past the end of its message.
    Truncated,
    /// A varint longer than ten bytes or past 64 bits, or cut off.
    BadVarint,
    /// A key above `u32::MAX`, field number 0, or wire type 6 or 7.
    BadKey,
    /// A known field with the wrong wire type.
    WrongWireType,
    /// A string that is not UTF-8.
    BadUtf8,
    /// Nested deeper than prost's recursion limit.
    TooDeep,
    /// A group end without its start, or with another field number.
    BadGroup,
}

/// An error and the byte offset (from the start of the walked bytes) where it was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireError {
    /// What is wrong.
    pub kind: WireErrorKind,
    /// Where, in bytes from the start.
    pub at: usize,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            WireErrorKind::Truncated => "a field runs past the end of its message",
            WireErrorKind::BadVarint => "invalid varint",
            WireErrorKind::BadKey => "invalid field key",
            WireErrorKind::WrongWireType => "a field has the wrong wire type",
            WireErrorKind::BadUtf8 => "a string is not valid UTF-8",
            WireErrorKind::TooDeep => "nested deeper than the recursion limit (100)",
            WireErrorKind::BadGroup => "an unmatched group end",
        };
        write!(f, "{what} at byte {}", self.at)
    }
}

/// Result of reading.
pub type WireResult<T> = Result<T, WireError>;

/// A cursor over one message's bytes: `data[pos..end]`, offsets kept relative to `data`.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over all of `data`.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader {
            data,
            pos: 0,
            end: data.len(),
        }
    }

    /// Whether the message is read to its end.
    pub(crate) fn done(&self) -> bool {
        self.pos >= self.end
    }

    /// The offset of the next byte.
    pub(crate) fn at(&self) -> usize {
        self.pos
    }

    fn error(&self, kind: WireErrorKind) -> WireError {
        WireError { kind, at: self.pos }
    }

    /// A varint, by prost's `decode_varint`.
    pub(crate) fn varint(&mut self) -> WireResult<u64> {
        let mut value = 0u64;
        let available = &self.data[self.pos..self.end];
        for (i, &byte) in available.iter().enumerate().take(10) {
            if i == 9 && byte > 1 {
                return Err(self.error(WireErrorKind::BadVarint));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.pos += i + 1;
                return Ok(value);
            }
        }
        Err(self.error(WireErrorKind::BadVarint))
    }

    /// The next field number and wire type, by prost's `decode_key`.
    pub(crate) fn key(&mut self) -> WireResult<(u32, u8)> {
        let at = self.pos;
        let key = self.varint()?;
        let bad = WireError {
            kind: WireErrorKind::BadKey,
            at,
        };
        let key = u32::try_from(key).map_err(|_| bad)?;
        let wire_type = (key & 7) as u8;
        if wire_type > FIXED32 || key >> 3 == 0 {
            return Err(bad);
        }
        Ok((key >> 3, wire_type))
    }

    /// `n` bytes.
    fn take(&mut self, n: u64) -> WireResult<&'a [u8]> {
        let left = (self.end - self.pos) as u64;
        if n > left {
            return Err(self.error(WireErrorKind::Truncated));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.data[start..self.pos])
    }

    /// A length prefix and that many bytes, as a reader of their own.
    pub(crate) fn delimited(&mut self) -> WireResult<Reader<'a>> {
        let len = self.varint()?;
        let start = self.pos;
        self.take(len)?;
        Ok(Reader {
            data: self.data,
            pos: start,
            end: self.pos,
        })
    }

    /// The bytes of a length-delimited field of wire type `wire_type`, with their offset.
    pub(crate) fn bytes_field(&mut self, wire_type: u8) -> WireResult<(usize, &'a [u8])> {
        self.expect(wire_type, LEN)?;
        let len = self.varint()?;
        let start = self.pos;
        Ok((start, self.take(len)?))
    }

    fn expect(&self, wire_type: u8, expected: u8) -> WireResult<()> {
        if wire_type == expected {
            Ok(())
        } else {
            Err(self.error(WireErrorKind::WrongWireType))
        }
    }

    /// A `string` field (prost's `string::merge`): wire type, length, UTF-8.
    pub(crate) fn string_field(&mut self, wire_type: u8) -> WireResult<&'a str> {
        let (start, bytes) = self.bytes_field(wire_type)?;
        std::str::from_utf8(bytes).map_err(|_| WireError {
            kind: WireErrorKind::BadUtf8,
            at: start,
        })
    }

    /// A scalar field: checks the wire type and steps over the value.
    pub(crate) fn scalar_field(&mut self, wire_type: u8, expected: u8) -> WireResult<()> {
        self.expect(wire_type, expected)?;
        match expected {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            FIXED32 => self.take(4).map(drop),
            _ => self.take_len().map(drop),
        }
    }

    fn take_len(&mut self) -> WireResult<&'a [u8]> {
        let len = self.varint()?;
        self.take(len)
    }

    /// A nested message field (prost's `message::merge`): wire type, then the recursion
    /// limit, then its bytes. Its fields get `budget - 1`.
    pub(crate) fn message_field(
        &mut self,
        wire_type: u8,
        budget: Budget,
    ) -> WireResult<(Reader<'a>, Budget)> {
        self.expect(wire_type, LEN)?;
        if budget == 0 {
            return Err(self.error(WireErrorKind::TooDeep));
        }
        Ok((self.delimited()?, budget - 1))
    }

    /// A map entry (prost's `hash_map::merge`): prost reads a length prefix whatever the
    /// wire type says, so this does too. Its fields get `budget - 1`.
    pub(crate) fn map_entry(&mut self, budget: Budget) -> WireResult<(Reader<'a>, Budget)> {
        if budget == 0 {
            return Err(self.error(WireErrorKind::TooDeep));
        }
        Ok((self.delimited()?, budget - 1))
    }

    /// Skips a field nobody reads (prost's `skip_field`), groups included.
    pub(crate) fn skip(&mut self, field: u32, wire_type: u8, budget: Budget) -> WireResult<()> {
        if budget == 0 {
            return Err(self.error(WireErrorKind::TooDeep));
        }
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.take_len().map(drop),
            FIXED32 => self.take(4).map(drop),
            START_GROUP => loop {
                // Each key consumes at least one byte: bounded by the message length.
                let (inner, inner_type) = self.key()?;
                if inner_type == END_GROUP {
                    if inner != field {
                        return Err(self.error(WireErrorKind::BadGroup));
                    }
                    return Ok(());
                }
                self.skip(inner, inner_type, budget - 1)?;
            },
            _ => Err(self.error(WireErrorKind::BadGroup)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_follow_prost() {
        assert_eq!(Reader::new(&[0x96, 0x01]).varint(), Ok(150));
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Reader::new(&max).varint(), Ok(u64::MAX));
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(
            Reader::new(&over).varint().unwrap_err().kind,
            WireErrorKind::BadVarint
        );
        assert!(Reader::new(&[0x80]).varint().is_err(), "cut off");
        assert!(Reader::new(&[]).varint().is_err());
    }

    #[test]
    fn keys_and_lengths_are_checked() {
        assert_eq!(
            Reader::new(&[0x00]).key().unwrap_err().kind,
            WireErrorKind::BadKey
        );
        assert_eq!(
            Reader::new(&[0x0e]).key().unwrap_err().kind,
            WireErrorKind::BadKey
        );
        assert_eq!(Reader::new(&[0x0a]).key(), Ok((1, LEN)));
        let mut r = Reader::new(&[0x05, 1, 2]);
        assert_eq!(r.delimited().err().unwrap().kind, WireErrorKind::Truncated);
    }

    #[test]
    fn groups_are_skipped_and_must_match() {
        // Field 1 group holding field 2 varint 7, then its end.
        let mut r = Reader::new(&[0x10, 0x07, 0x0c]);
        assert!(r.skip(1, START_GROUP, TOP_BUDGET).is_ok());
        assert!(r.done());
        let mut r = Reader::new(&[0x14]);
        assert_eq!(
            r.skip(1, START_GROUP, TOP_BUDGET).unwrap_err().kind,
            WireErrorKind::BadGroup
        );
        assert!(Reader::new(&[]).skip(1, END_GROUP, 1).is_err());
        assert_eq!(
            Reader::new(&[0x01]).skip(1, VARINT, 0).unwrap_err().kind,
            WireErrorKind::TooDeep
        );
    }
}
