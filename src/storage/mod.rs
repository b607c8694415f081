//! Where the queue and the dead letter queue live, who may open them, and how a backlog
//! outlives the process that queued it.
//!
//! # Layout
//! Elastic Agent 8.x runs the shipper with `-E path.data=DIR` and keeps `DIR` across
//! restarts: the queue (`DIR/queue`) and DLQ (`DIR/dlq`) live there ([`layout`]).
//! Elastic Agent 9.x runs it as an input component (`AGENT_COMPONENT_TYPE=agent-shipper`)
//! with `path.data=<home>/run/<component id>`, and deletes that directory once the
//! process has stopped after it left the policy (its last input removed, or `use_output`
//! moved). So in that mode, or whenever `-E path.state=ROOT` is given, the storage
//! directory is `ROOT/<component id>`, with `ROOT` defaulting to
//! `<parent of path.data>/agent-shipper.state`, a sibling the agent does not delete.
//!
//! # One process per directory
//! Each storage directory has a `lock` file ([`lock`]): an OS lock (`flock`) holding the
//! holder's pid. Under the agent a held lock is waited for (the agent may start the next
//! process while the old one is still stopping); standalone it is an error, as Beats'
//! "data path already locked".
//!
//! # Handoff and adoption
//! The queue never stores credentials. When a process stops with records left, it writes
//! `handoff.json` ([`handoff`], owner-only) beside its queue: for each output generation
//! that still has records, the OUTPUT unit config (with its credentials) that sends them.
//! Another process under the same root adopts the directory once it can take its lock
//! (`crate::supervisor` owns that task): it delivers the records with those credentials,
//! dead-letters into that directory's DLQ, then removes the queue and `handoff.json`.

pub mod handoff;
pub mod layout;
pub mod lock;

pub use layout::{ComponentEnv, StorageLayout};
pub use lock::{DirLock, LockError};
