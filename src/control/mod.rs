//! The V2 control-protocol client: how Elastic Agent tells us what to run.
//!
//! # What it owns
//! The connection to the agent and nothing else. [`startup`] reads the one `StartUpInfo`
//! the agent writes to stdin. [`client`] connects with mTLS, runs the `CheckinV2` and
//! `Actions` streams, and reconnects with backoff (1 s doubling to 30 s) when they break.
//! Expected units are converted ([`convert`]) into typed commands for the supervisor; the
//! supervisor's observed units come back through a `watch` channel and are checked in at
//! once when a state or applied idx changes, at most once a second when only a message
//! changes ([`pace`]: a drain's progress would otherwise be one check-in per batch), and
//! at least every [`client::CHECKIN_INTERVAL`].
//!
//! # Rules it follows (PROTOCOL.md §1)
//! - The first check-in is sent before anything is awaited, with the token and version.
//! - Every unit's applied `config_state_idx` and the last `features_idx`/`component_idx`
//!   are echoed. A reply is never awaited: a settled unit gets none.
//! - Chunked expected messages are reassembled ([`chunk`]) before anyone sees them.
//! - Fatal (exit non-zero with the reason): undecodable StartUpInfo, no CheckinV2 service,
//!   bad TLS material or a failed handshake before the first session, a refused token.

pub mod chunk;
pub mod client;
pub mod convert;
pub mod pace;
pub mod startup;

pub use client::ControlClient;
pub use startup::{read_startup_info, StartupError};

/// Why the control client gave up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The certificates or key in StartUpInfo are unusable.
    #[error("the TLS material from the agent is unusable: {0}")]
    TlsMaterial(String),
    /// The TLS handshake with the agent failed (wrong CA, server name, or client cert).
    #[error("TLS handshake with the agent at {addr} failed: {reason}")]
    TlsHandshake {
        /// The agent's address.
        addr: String,
        /// What rustls reported.
        reason: String,
    },
    /// The agent refused our token.
    #[error("the agent refused the connection token (PermissionDenied): {0}")]
    TokenRefused(String),
    /// The address in StartUpInfo cannot be used.
    #[error("the agent address `{addr}` is invalid: {reason}")]
    BadAddress {
        /// The address as given.
        addr: String,
        /// Why it is invalid.
        reason: String,
    },
}
