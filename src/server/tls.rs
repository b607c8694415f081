//! How a Producer API listener is secured: plaintext on an owner-only unix socket, or
//! mutual TLS with each INPUT unit's own certificate (`sni.rs`).
//!
//! # Policy
//! - TLS only when the INPUT unit says `ssl.enabled: true`. That is Beats' rule: its shipper
//!   output (libbeat/outputs/shipper, 8.x) dials TLS only when `ssl.enabled` is true, and
//!   Elastic Agent 8.6–8.15 writes `ssl` (CA, certificate, key) without `enabled`, so every
//!   Beat under an agent connects in plaintext. Serving TLS whenever `ssl` is present would
//!   refuse all of them. (Beats' other outputs treat an `ssl` block without `enabled` as on;
//!   the shipper output is the exception, and it is the one that talks to us.)
//! - Plaintext on a unix socket: the socket is owner-only (`socket_mode`, default 0600) and
//!   bound so it is never reachable with wider permissions: file permissions are the access
//!   control, as they are for the agent's own control socket.
//! - A TCP listener needs mutual TLS: a client without a certificate signed by one of the
//!   units' CAs is refused during the handshake. Plaintext TCP is allowed only on a loopback
//!   address, with a warning: any local user can publish there, which is no worse than a
//!   local user reaching the unix socket's directory, but a unix socket is preferred.
//!   Anything else is refused with an error naming `ssl`.
//! - Every INPUT unit on one `server` must agree on plaintext or TLS: the listener's
//!   transport is fixed when it is bound, and a unit asking for the other one is refused
//!   (FAILED naming `ssl.enabled`) rather than silently served differently.

use super::sni::UnitIdentity;
use super::ServerAddress;
use crate::config::{InputSslConfig, SocketMode};
use std::fmt;

/// How one listener is secured.
#[derive(Debug, Default)]
pub struct ListenSecurity {
    /// Permission bits of a unix socket.
    pub socket_mode: SocketMode,
    /// The INPUT unit's TLS identity with `ssl.enabled: true`; `None` serves plaintext.
    pub identity: Option<UnitIdentity>,
}

/// The transport a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// No TLS: an owner-only unix socket or a loopback TCP port.
    Plaintext,
    /// Mutual TLS, a certificate per INPUT unit chosen by SNI.
    MutualTls,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Plaintext => "plaintext",
            Transport::MutualTls => "mutual TLS",
        })
    }
}

impl ListenSecurity {
    /// The settings INPUT unit `unit_id` asks for: its TLS material is read only with
    /// `ssl.enabled: true`.
    ///
    /// # Errors
    /// A message naming the `ssl` key whose material is unreadable or unusable.
    pub fn for_input(
        unit_id: &str,
        ssl: Option<&InputSslConfig>,
        socket_mode: SocketMode,
    ) -> Result<Self, String> {
        let identity = match ssl {
            Some(ssl) if ssl.is_enabled() => Some(UnitIdentity::load(unit_id, ssl)?),
            Some(_) => {
                tracing::info!(
                    unit_id,
                    "ssl without `enabled: true`: the Producer API serves this unit in plaintext, as Beats' shipper output connects then"
                );
                None
            }
            None => None,
        };
        Ok(ListenSecurity {
            socket_mode,
            identity,
        })
    }

    /// The transport these settings ask for.
    pub fn transport(&self) -> Transport {
        match self.identity {
            Some(_) => Transport::MutualTls,
            None => Transport::Plaintext,
        }
    }

    /// Checks that `address` may be served with these settings.
    ///
    /// # Errors
    /// A message naming `ssl` for plaintext on a non-loopback TCP address.
    pub fn check(&self, address: &ServerAddress) -> Result<(), String> {
        if self.identity.is_some() {
            return Ok(());
        }
        match address {
            ServerAddress::Tcp(addr) if !addr.ip().is_loopback() => Err(format!(
                "invalid config key `ssl`: the Producer API on TCP address {addr} needs mutual TLS \
                 (ssl.enabled: true with ssl.certificate, ssl.key and ssl.certificate_authorities); \
                 only a loopback address or a unix socket may go without"
            )),
            ServerAddress::Tcp(addr) => {
                tracing::warn!(%addr, "Producer API on loopback TCP without TLS: every local user can publish; prefer a unix socket or set ssl.enabled: true");
                Ok(())
            }
            ServerAddress::Unix(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_tcp_is_refused_unless_loopback() {
        let security = ListenSecurity::default();
        let err = security
            .check(&ServerAddress::parse("0.0.0.0:5044").unwrap())
            .unwrap_err();
        assert!(err.contains("`ssl`"), "{err}");
        assert!(security
            .check(&ServerAddress::parse("127.0.0.1:5044").unwrap())
            .is_ok());
        assert!(security
            .check(&ServerAddress::parse("unix:///tmp/x.sock").unwrap())
            .is_ok());
    }

    #[test]
    fn only_enabled_ssl_is_read_and_a_bad_path_is_named() {
        let mut ssl = InputSslConfig {
            enabled: None,
            certificate_authorities: vec!["/nonexistent/ca.pem".into()],
            certificate: Some("/nonexistent/cert.pem".into()),
            key: Some(crate::config::Secret::new(
                "-----BEGIN PRIVATE KEY-----\nsecretbytes\n",
            )),
        };
        let plain = ListenSecurity::for_input("u", Some(&ssl), SocketMode::DEFAULT).unwrap();
        assert_eq!(plain.transport(), Transport::Plaintext);
        ssl.enabled = Some(true);
        let err = ListenSecurity::for_input("u", Some(&ssl), SocketMode::DEFAULT).unwrap_err();
        assert!(err.contains("ssl.certificate"), "{err}");
        ssl.certificate = Some("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into());
        let err = ListenSecurity::for_input("u", Some(&ssl), SocketMode::DEFAULT).unwrap_err();
        assert!(!err.contains("secretbytes"), "{err}");
    }
}
