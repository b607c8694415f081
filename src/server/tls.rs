//! How a Producer API listener is secured: unix socket mode, and mutual TLS from `ssl`.
//!
//! # Policy
//! - A unix socket is owner-only (`socket_mode`, default 0600): file permissions are the
//!   access control there. TLS is applied on top when `ssl` carries material, as the agent
//!   hands the same `ssl` block for unix sockets.
//! - A TCP listener needs mutual TLS (`ssl.certificate`, `ssl.key`,
//!   `ssl.certificate_authorities`): a client without a certificate signed by one of those
//!   CAs is refused during the handshake. Plaintext TCP is allowed only on a loopback
//!   address, with a warning: any local user can publish there, which is no worse than a
//!   local user reaching the unix socket's directory, but a unix socket is preferred.
//!   Anything else is refused with an error naming `ssl`.

use super::ServerAddress;
use crate::config::{InputSslConfig, SocketMode};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// How one listener is secured.
#[derive(Clone, Debug, Default)]
pub struct ListenSecurity {
    /// Permission bits of a unix socket.
    pub socket_mode: SocketMode,
    /// mTLS material; `None` serves plaintext.
    pub tls: Option<InputSslConfig>,
}

impl ListenSecurity {
    /// The settings an INPUT unit's config asks for (an empty `ssl` block is plaintext).
    pub fn from_input(ssl: Option<&InputSslConfig>, socket_mode: SocketMode) -> Self {
        ListenSecurity {
            socket_mode,
            tls: ssl.filter(|ssl| !ssl.is_empty()).cloned(),
        }
    }

    /// Checks that `address` may be served with these settings and builds the TLS config.
    ///
    /// # Errors
    /// A message naming the `ssl` key: plaintext on a non-loopback TCP address, or
    /// unreadable / invalid PEM material.
    pub fn server_tls(&self, address: &ServerAddress) -> Result<Option<ServerTlsConfig>, String> {
        let Some(ssl) = &self.tls else {
            return match address {
                ServerAddress::Tcp(addr) if !addr.ip().is_loopback() => Err(format!(
                    "invalid config key `ssl`: the Producer API on TCP address {addr} needs mutual TLS \
                     (ssl.certificate, ssl.key and ssl.certificate_authorities); only a loopback address \
                     or a unix socket may go without"
                )),
                ServerAddress::Tcp(addr) => {
                    tracing::warn!(%addr, "Producer API on loopback TCP without TLS: every local user can publish; prefer a unix socket or set ssl");
                    Ok(None)
                }
                ServerAddress::Unix(_) => Ok(None),
            };
        };
        let certificate = ssl.certificate.as_deref().unwrap_or_default();
        let cert = pem("ssl.certificate", certificate)?;
        let key =
            match &ssl.key {
                // Inline key material must never be echoed: only the key's name is reported.
                Some(key) => pem("ssl.key", key.expose())?,
                None => return Err(
                    "missing config key `ssl.key`: mutual TLS needs the server certificate's key"
                        .into(),
                ),
            };
        let mut cas = Vec::new();
        for (i, ca) in ssl.certificate_authorities.iter().enumerate() {
            cas.extend(pem(&format!("ssl.certificate_authorities.{i}"), ca)?);
            cas.push(b'\n');
        }
        // A client CA makes tonic (rustls) require and verify a client certificate.
        Ok(Some(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(cert, key))
                .client_ca_root(Certificate::from_pem(cas))
                .client_auth_optional(false),
        ))
    }
}

/// Inline PEM as is, otherwise the file at `value`; the error names `key`, never the content.
fn pem(key: &str, value: &str) -> Result<Vec<u8>, String> {
    let bytes = if value.trim_start().starts_with("-----BEGIN") {
        value.as_bytes().to_vec()
    } else {
        std::fs::read(value)
            .map_err(|err| format!("invalid config key `{key}`: cannot read {value}: {err}"))?
    };
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN") {
        return Err(format!("invalid config key `{key}`: holds no PEM block"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_tcp_is_refused_unless_loopback() {
        let security = ListenSecurity::default();
        let err = security
            .server_tls(&ServerAddress::parse("0.0.0.0:5044").unwrap())
            .unwrap_err();
        assert!(err.contains("`ssl`"), "{err}");
        assert!(security
            .server_tls(&ServerAddress::parse("127.0.0.1:5044").unwrap())
            .unwrap()
            .is_none());
        assert!(security
            .server_tls(&ServerAddress::parse("unix:///tmp/x.sock").unwrap())
            .unwrap()
            .is_none());
    }

    #[test]
    fn an_empty_ssl_block_is_plaintext_and_a_bad_path_is_named() {
        let empty = InputSslConfig::default();
        assert!(
            ListenSecurity::from_input(Some(&empty), SocketMode::DEFAULT)
                .tls
                .is_none()
        );
        let ssl = InputSslConfig {
            certificate_authorities: vec!["/nonexistent/ca.pem".into()],
            certificate: Some("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into()),
            key: Some(crate::config::Secret::new(
                "-----BEGIN PRIVATE KEY-----\nsecretbytes\n",
            )),
        };
        let err = ListenSecurity::from_input(Some(&ssl), SocketMode::DEFAULT)
            .server_tls(&ServerAddress::parse("0.0.0.0:1").unwrap())
            .unwrap_err();
        assert!(err.contains("ssl.certificate_authorities.0"), "{err}");
        assert!(!err.contains("secretbytes"), "{err}");
    }
}
