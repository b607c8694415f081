//! Limits on what one Producer API listener accepts: event size, request size, events per
//! request, concurrent calls.
//!
//! They are keys of the INPUT unit block (`input.rs`); the server enforces them
//! (`server/producer.rs`, `server/listener.rs`). Every limit has a default that an input
//! of the Beats family stays well under, and every limit bounds memory: nothing a client
//! sends makes the shipper allocate more than `max_request_bytes` for one request, nor
//! hold more than `max_concurrent_streams` calls at once.

use super::{ByteSize, ConfigError};

/// Default `max_event_bytes`: Filebeat's own largest message (`max_bytes`, 10 MiB).
pub const DEFAULT_MAX_EVENT_BYTES: u64 = 10 << 20;
/// Default `max_request_bytes`: 64 MiB, room for a full batch of large events.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 64 << 20;
/// Default `max_events_per_request`: far above the batches inputs send (50 to 2,048).
pub const DEFAULT_MAX_EVENTS_PER_REQUEST: u32 = 16_384;
/// Default `max_concurrent_streams`: calls in progress at once on one listener.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1_024;
/// The largest `max_request_bytes` accepted: one request never buffers more than this.
pub const MAX_REQUEST_BYTES_CEILING: u64 = 1 << 30;

/// The Producer API limits of one listener, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerLimits {
    /// Largest protobuf-encoded event; a larger one is InvalidArgument.
    pub max_event_bytes: u64,
    /// Largest encoded PublishRequest; a larger one is ResourceExhausted before it is
    /// buffered.
    pub max_request_bytes: u64,
    /// Most events in one PublishRequest; more is InvalidArgument.
    pub max_events_per_request: u32,
    /// Most calls (publishes and open PersistedIndex streams) in progress at once on the
    /// listener, over all connections; one more is ResourceExhausted.
    pub max_concurrent_streams: u32,
}

impl Default for ProducerLimits {
    fn default() -> Self {
        ProducerLimits {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_events_per_request: DEFAULT_MAX_EVENTS_PER_REQUEST,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
        }
    }
}

impl ProducerLimits {
    /// Checks the limits together; the error names the offending key.
    pub fn validate(self) -> Result<Self, ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.into(),
            reason,
        };
        for (key, value) in [
            ("max_event_bytes", self.max_event_bytes),
            ("max_request_bytes", self.max_request_bytes),
            ("max_events_per_request", self.max_events_per_request.into()),
            ("max_concurrent_streams", self.max_concurrent_streams.into()),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if self.max_request_bytes > MAX_REQUEST_BYTES_CEILING {
            return Err(invalid(
                "max_request_bytes",
                format!(
                    "{} bytes is more than the {MAX_REQUEST_BYTES_CEILING} bytes (1GiB) one request may buffer",
                    self.max_request_bytes
                ),
            ));
        }
        if self.max_event_bytes > self.max_request_bytes {
            return Err(invalid(
                "max_event_bytes",
                format!(
                    "{} bytes is more than max_request_bytes ({} bytes): such an event could never arrive",
                    self.max_event_bytes, self.max_request_bytes
                ),
            ));
        }
        Ok(self)
    }
}

pub(super) fn default_max_event_bytes() -> ByteSize {
    ByteSize(DEFAULT_MAX_EVENT_BYTES)
}

pub(super) fn default_max_request_bytes() -> ByteSize {
    ByteSize(DEFAULT_MAX_REQUEST_BYTES)
}

pub(super) fn default_max_events_per_request() -> u32 {
    DEFAULT_MAX_EVENTS_PER_REQUEST
}

pub(super) fn default_max_concurrent_streams() -> u32 {
    DEFAULT_MAX_CONCURRENT_STREAMS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_limits_name_their_key() {
        assert!(ProducerLimits::default().validate().is_ok());
        let zero = ProducerLimits {
            max_events_per_request: 0,
            ..ProducerLimits::default()
        };
        assert_eq!(
            key_of(zero.validate().unwrap_err()),
            "max_events_per_request"
        );
        let huge = ProducerLimits {
            max_request_bytes: 2 << 30,
            ..ProducerLimits::default()
        };
        assert_eq!(key_of(huge.validate().unwrap_err()), "max_request_bytes");
        let event_over_request = ProducerLimits {
            max_event_bytes: 2 << 20,
            max_request_bytes: 1 << 20,
            ..ProducerLimits::default()
        };
        assert_eq!(
            key_of(event_over_request.validate().unwrap_err()),
            "max_event_bytes"
        );
    }
}
