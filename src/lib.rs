//! agent-shipper: an event shipper that Elastic Agent runs as a V2 control-protocol unit.
//!
//! Data flows one way (see `../shared/DESIGN.md`):
//! `control` (agent protocol) → `supervisor` (unit states, pipeline owner) → `server`
//! (Producer API) → `queue` → `output`. Configuration is parsed in `config`.
#![deny(missing_docs)]

pub mod config;
pub mod control;
pub mod dlq;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod private_fs;
pub mod proto;
pub mod queue;
pub mod server;
pub mod storage;
pub mod supervisor;
