//! The Producer API: inputs publish events here; we validate, route and queue them.
//!
//! A thin adapter in the manner of tonic's examples: [`ProducerService`] takes each
//! request as its events' bytes ([`RawPublishRequest`]), checks each event by walking
//! those bytes ([`check_event`]), asks the current [`Routes`] which generation the event
//! belongs to, appends the bytes unchanged to the queue and maps every outcome to a
//! deliberate gRPC status (see [`producer`]).
//! The supervisor is the only writer of [`Routes`]; the service reads the latest snapshot
//! per request through a `watch` channel, so there is no shared lock on the data path.
//!
//! Routing follows what Beats' shipper output sends (libbeat/outputs/shipper, 8.x):
//! `source.input_id` is the event's `@metadata.input_id` and `source.stream_id` its
//! `@metadata.stream_id`, which Beats' agent manager sets to the policy input's `id` and
//! the stream's `id`. An event goes to the INPUT unit whose config names its input id (a
//! `units[].id` or a `units[].config.id`), else whose `units[].config.streams[].id` names
//! its stream id; an event with no input id goes to the one INPUT unit with a policy input
//! that has no `id`, if exactly one has (the agent allows one such input per type).
//!
//! Today's agent runs us as an input (`type: agent-shipper`): each INPUT unit is one policy
//! input, its `id` is the input id clients send, and an event with no input id goes to the
//! one such unit on the listener it arrived at ([`Routes::unnamed_at`]). Its `data_stream`
//! fills what the event's own leaves empty ([`Routes::defaults`]).

mod address;
pub mod client;
mod event_check;
mod limits;
mod listener;
mod producer;
mod raw_request;
pub mod sni;
pub mod tls;
mod wire;

pub use address::ServerAddress;
pub use event_check::{check_event, validate as validate_event, EventView, MalformedEvent};
pub use limits::{CallPermit, LimitsLayer, LimitsService};
pub use listener::Listener;
pub(crate) use listener::{bind_private, remove_stale_socket};
pub use producer::ProducerService;
pub use raw_request::RawPublishRequest;
pub use sni::{TlsIdentities, UnitIdentity};
pub use tls::{ListenSecurity, Transport};
pub use wire::{WireError, WireErrorKind};

use crate::config::DataStreamDefaults;
use crate::queue::{GenerationId, Queue};
use std::collections::HashMap;
use std::sync::Arc;

/// Where each input's events go right now. Rebuilt by the supervisor on every change.
#[derive(Clone, Default)]
pub struct Routes {
    /// The queue, once one exists (it outlives outputs).
    pub queue: Option<Arc<dyn Queue>>,
    /// True while an output runs; without one, publishes are answered Unavailable.
    pub output_ready: bool,
    /// Generation per known `source.input_id`.
    pub inputs: HashMap<String, GenerationId>,
    /// Generation per known `source.stream_id`, for an input id that is not known.
    pub streams: HashMap<String, GenerationId>,
    /// For events without an input id: the one INPUT unit with a policy input without `id`.
    pub unnamed: Option<GenerationId>,
    /// Standalone mode: every input id goes to this generation.
    pub any_input: Option<GenerationId>,
    /// For events without an input id arriving at a listener: the one `agent-shipper`
    /// INPUT unit on that `server`.
    pub unnamed_at: HashMap<ServerAddress, GenerationId>,
    /// The `data_stream` an event of a generation falls back to, field by field.
    pub defaults: HashMap<GenerationId, DataStreamDefaults>,
}

impl Routes {
    /// The generation for an event's input and stream ids, if either is known.
    pub fn route(&self, input_id: &str, stream_id: &str) -> Option<GenerationId> {
        self.route_at(None, input_id, stream_id)
    }

    /// [`Routes::route`] for an event that arrived at `listener`: an event without an
    /// input id goes first to the `agent-shipper` unit of that listener.
    pub fn route_at(
        &self,
        listener: Option<&ServerAddress>,
        input_id: &str,
        stream_id: &str,
    ) -> Option<GenerationId> {
        let at_listener = || {
            input_id
                .is_empty()
                .then(|| listener.and_then(|address| self.unnamed_at.get(address).copied()))
                .flatten()
        };
        let by_input = (!input_id.is_empty())
            .then(|| self.inputs.get(input_id).copied())
            .flatten();
        let by_stream = || {
            (!stream_id.is_empty())
                .then(|| self.streams.get(stream_id).copied())
                .flatten()
        };
        let unnamed = || input_id.is_empty().then_some(self.unnamed).flatten();
        by_input
            .or_else(by_stream)
            .or_else(at_listener)
            .or_else(unnamed)
            .or(self.any_input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Generation, MemoryQueue};

    #[test]
    fn input_id_then_stream_id_then_the_one_unnamed_input() {
        let queue = MemoryQueue::new(10, 1 << 20);
        let generation = |unit: &str| {
            queue.register(Generation {
                input_unit: unit.into(),
                output_unit: "out".into(),
                output_config_idx: 1,
            })
        };
        let (a, b, c) = (generation("a"), generation("b"), generation("c"));
        let routes = Routes {
            inputs: HashMap::from([("logfile-1".into(), a)]),
            streams: HashMap::from([("logfile-1.syslog".into(), b)]),
            unnamed: Some(c),
            ..Routes::default()
        };
        assert_eq!(routes.route("logfile-1", "logfile-1.syslog"), Some(a));
        assert_eq!(routes.route("gone", "logfile-1.syslog"), Some(b));
        assert_eq!(routes.route("", "unknown"), Some(c));
        assert_eq!(
            routes.route("gone", ""),
            None,
            "a named input nobody knows is not sent to the unnamed one"
        );
        assert_eq!(Routes::default().route("", ""), None);
    }

    #[test]
    fn an_event_without_input_id_goes_to_the_input_of_the_listener_it_arrived_at() {
        let queue = MemoryQueue::new(10, 1 << 20);
        let generation = |unit: &str| {
            queue.register(Generation {
                input_unit: unit.into(),
                output_unit: "out".into(),
                output_config_idx: 1,
            })
        };
        let (a, b) = (generation("a"), generation("b"));
        let (at_a, at_b) = (
            ServerAddress::parse("/run/a.sock").unwrap(),
            ServerAddress::parse("/run/b.sock").unwrap(),
        );
        let routes = Routes {
            inputs: HashMap::from([("input-a".into(), a), ("input-b".into(), b)]),
            unnamed_at: HashMap::from([(at_a.clone(), a), (at_b.clone(), b)]),
            ..Routes::default()
        };
        assert_eq!(routes.route_at(Some(&at_a), "", ""), Some(a));
        assert_eq!(routes.route_at(Some(&at_b), "", ""), Some(b));
        assert_eq!(
            routes.route_at(Some(&at_a), "input-b", ""),
            Some(b),
            "a named input goes where its name says"
        );
        assert_eq!(routes.route_at(Some(&at_a), "other", ""), None);
        assert_eq!(routes.route("", ""), None, "no listener, no owner");
    }
}
