//! Mutual TLS for a Producer API listener shared by several INPUT units: each unit's own
//! certificate, chosen by SNI, and the client certificates of any unit's CA.
//!
//! The agent gives every INPUT unit of a shipper the same `server` and its own certificate
//! pair (named after the unit id, signed by one CA per shipper). One listener therefore
//! holds a set of [`UnitIdentity`]s that changes as units join and leave. Each change builds
//! a new rustls `ServerConfig`; the accept loop takes the newest one for each new
//! connection, so connections already made keep theirs and are never dropped by a change.
//!
//! - **Certificate.** The SNI name picks the unit whose certificate is valid for that name
//!   (its subject alternative names), or whose unit id it is. Without SNI, or with a name
//!   no unit's certificate holds, the certificate of the longest-attached unit is presented:
//!   gRPC clients on a unix socket send `localhost` (grpc-go's authority for `unix://`), which
//!   no agent-made unit certificate holds; every unit's certificate chains to the same agent
//!   CA, so a client checking the chain only accepts any of them, and a stable choice keeps
//!   what a reconnecting client sees from changing.
//! - **Client certificates** are verified against the union of the units' CAs. The agent
//!   uses one CA per shipper, so the union is that CA; the unit an event counts for is
//!   decided by routing (`source.input_id`), not by the handshake, so per-unit CAs would
//!   buy no isolation while refusing a client that sends the shared `localhost` name.

use crate::config::InputSslConfig;
use std::sync::{Arc, RwLock};
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// One INPUT unit's TLS material, parsed and checked.
#[derive(Debug)]
pub struct UnitIdentity {
    unit_id: String,
    key: Arc<CertifiedKey>,
    cas: Vec<CertificateDer<'static>>,
}

impl UnitIdentity {
    /// Reads `ssl` (inline PEM or file paths) for `unit_id`.
    ///
    /// # Errors
    /// A message naming the `ssl` key that is unreadable, holds no PEM, or whose key does
    /// not match the certificate. The key's content is never quoted.
    pub fn load(unit_id: &str, ssl: &InputSslConfig) -> Result<Self, String> {
        let certificate = pem("ssl.certificate", ssl.certificate.as_deref().unwrap_or(""))?;
        let chain = CertificateDer::pem_slice_iter(&certificate)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("invalid config key `ssl.certificate`: {err}"))?;
        if chain.is_empty() {
            return Err("invalid config key `ssl.certificate`: holds no certificate".into());
        }
        let key =
            match &ssl.key {
                Some(key) => pem("ssl.key", key.expose())?,
                None => return Err(
                    "missing config key `ssl.key`: mutual TLS needs the server certificate's key"
                        .into(),
                ),
            };
        // The parser's error may quote a line of the key: only the key's name is reported.
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|_| {
            "invalid config key `ssl.key`: holds no PKCS#8, PKCS#1 or SEC1 private key".to_string()
        })?;
        let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|err| {
            format!("invalid config key `ssl.key`: does not fit `ssl.certificate`: {err}")
        })?;
        let mut cas = Vec::new();
        for (i, ca) in ssl.certificate_authorities.iter().enumerate() {
            let name = format!("ssl.certificate_authorities.{i}");
            let bytes = pem(&name, ca)?;
            for cert in CertificateDer::pem_slice_iter(&bytes) {
                cas.push(cert.map_err(|err| format!("invalid config key `{name}`: {err}"))?);
            }
        }
        if cas.is_empty() {
            return Err("missing config key `ssl.certificate_authorities`: mutual TLS needs the CA that client certificates must chain to".into());
        }
        Ok(UnitIdentity {
            unit_id: unit_id.to_string(),
            key: Arc::new(key),
            cas,
        })
    }

    /// The INPUT unit this material belongs to.
    pub fn unit_id(&self) -> &str {
        &self.unit_id
    }

    /// True when the SNI `name` asks for this unit: its id, or a name its certificate holds.
    fn serves(&self, name: &str) -> bool {
        if name == self.unit_id {
            return true;
        }
        let (Ok(name), Some(leaf)) = (ServerName::try_from(name), self.key.cert.first()) else {
            return false;
        };
        webpki::EndEntityCert::try_from(leaf)
            .and_then(|leaf| leaf.verify_is_valid_for_subject_name(&name))
            .is_ok()
    }
}

/// Inline PEM as is, otherwise the file at `value`; the error names `key`, never the content.
pub(crate) fn pem(key: &str, value: &str) -> Result<Vec<u8>, String> {
    let bytes = if value.trim_start().starts_with("-----BEGIN") {
        value.as_bytes().to_vec()
    } else if value.trim().is_empty() {
        return Err(format!("missing config key `{key}`"));
    } else {
        std::fs::read(value)
            .map_err(|err| format!("invalid config key `{key}`: cannot read {value}: {err}"))?
    };
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN") {
        return Err(format!("invalid config key `{key}`: holds no PEM block"));
    }
    Ok(bytes)
}

fn provider() -> CryptoProvider {
    ring::default_provider()
}

/// Picks a unit's certificate by SNI; see the module notes for the default.
#[derive(Debug)]
struct SniResolver {
    /// In attach order: the first is the default.
    units: Vec<Arc<UnitIdentity>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello
            .server_name()
            .and_then(|name| self.units.iter().find(|unit| unit.serves(name)))
            .or_else(|| self.units.first())?;
        Some(chosen.key.clone())
    }
}

/// The TLS identities of the INPUT units sharing one listener.
#[derive(Debug, Default)]
pub struct TlsIdentities {
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    units: Vec<Arc<UnitIdentity>>,
    config: Option<Arc<ServerConfig>>,
}

impl TlsIdentities {
    /// Adds `identity`, replacing the same unit's earlier one (keeping its place).
    ///
    /// # Errors
    /// When no server config can be made from the union of the CAs (e.g. a CA rustls
    /// refuses); the set is then left as it was.
    pub fn insert(&self, identity: UnitIdentity) -> Result<(), String> {
        let identity = Arc::new(identity);
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut units = state.units.clone();
        match units.iter_mut().find(|u| u.unit_id == identity.unit_id) {
            Some(slot) => *slot = identity,
            None => units.push(identity),
        }
        state.config = Some(build(&units)?);
        state.units = units;
        Ok(())
    }

    /// Removes `unit_id`'s identity; new handshakes no longer see it.
    pub fn remove(&self, unit_id: &str) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let units: Vec<_> = state
            .units
            .iter()
            .filter(|u| u.unit_id != unit_id)
            .cloned()
            .collect();
        if units.len() == state.units.len() {
            return;
        }
        // The remaining set built before (each was checked on insert), so this succeeds;
        // if it did not, keeping the older config is safer than serving none.
        if units.is_empty() {
            state.config = None;
        } else {
            match build(&units) {
                Ok(config) => state.config = Some(config),
                Err(err) => tracing::error!(error = %err, "Producer API TLS config not rebuilt"),
            }
        }
        state.units = units;
    }

    /// The INPUT units whose certificates are served, in attach order.
    pub fn unit_ids(&self) -> Vec<String> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.units.iter().map(|u| u.unit_id.clone()).collect()
    }

    /// An acceptor for one new connection, with the newest config; `None` with no unit.
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.config.clone().map(TlsAcceptor::from)
    }
}

fn build(units: &[Arc<UnitIdentity>]) -> Result<Arc<ServerConfig>, String> {
    let mut roots = RootCertStore::empty();
    for unit in units {
        for ca in &unit.cas {
            roots.add(ca.clone()).map_err(|err| {
                format!(
                    "invalid config key `ssl.certificate_authorities` of INPUT unit `{}`: {err}",
                    unit.unit_id
                )
            })?;
        }
    }
    let provider = Arc::new(provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|err| format!("invalid config key `ssl.certificate_authorities`: {err}"))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS: {err}"))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SniResolver {
            units: units.to_vec(),
        }));
    // gRPC runs on HTTP/2, and grpc-go refuses a TLS server that does not say so by ALPN.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
