//! The Producer API: inputs publish events here; we validate, route and queue them.
//!
//! A thin adapter in the manner of tonic's examples: [`ProducerService`] decodes, checks
//! each event, asks the current [`Routes`] which generation the event belongs to, appends
//! to the queue and maps every outcome to a deliberate gRPC status (see [`producer`]).
//! The supervisor is the only writer of [`Routes`]; the service reads the latest snapshot
//! per request through a `watch` channel, so there is no shared lock on the data path.

mod address;
pub mod client;
mod limits;
mod listener;
mod producer;
pub mod tls;

pub use address::ServerAddress;
pub use limits::{CallPermit, LimitsLayer, LimitsService};
pub use listener::Listener;
pub(crate) use listener::{bind_private, remove_stale_socket};
pub use producer::ProducerService;
pub use tls::ListenSecurity;

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
    /// Standalone mode: every input id goes to this generation.
    pub any_input: Option<GenerationId>,
}

impl Routes {
    /// The generation for an input id, if the input is known.
    pub fn route(&self, input_id: &str) -> Option<GenerationId> {
        self.inputs.get(input_id).copied().or(self.any_input)
    }
}
