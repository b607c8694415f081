//! How the agent hands units to a shipper component (`component.go`, `manager_shipper.go`):
//! output blocks cut to what it sends, and the Producer wiring of INPUT units (one socket,
//! one CA per component, one certificate pair per unit).

use super::UnitSpec;
use crate::certs::{client_rsa_key, CertError};
use agent_shipper::proto::agent::UnitType;
use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::collections::BTreeMap;

/// One unit's certificate pair, as the agent writes it into an INPUT unit's `ssl`.
#[derive(Clone, PartialEq, Eq)]
pub struct UnitPair {
    /// The certificate (CN and DNS name = the unit id; server and client use).
    pub cert_pem: String,
    /// Its RSA key in PKCS#1 PEM, as the agent writes it.
    pub key_pem: String,
}

impl std::fmt::Debug for UnitPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnitPair { .. }")
    }
}

/// The CA the agent mints per shipper component for its Producer connections
/// (`manager_shipper.go`): every INPUT unit gets a pair signed by it, named after the unit.
pub struct ShipperCa {
    /// The CA certificate, for `ssl.certificate_authorities`.
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl ShipperCa {
    /// A fresh CA.
    pub fn mint() -> Result<Self, CertError> {
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "mock-agent shipper CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&ca_key)?;
        Ok(ShipperCa {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, ca_key),
        })
    }

    /// A pair named `name` (DNS name and CN), for both server and client use, like the
    /// agent's `GeneratePairWithName`. The RSA key is this process's one throwaway key:
    /// generating 2048-bit keys per unit is slow, and each certificate is still its own.
    pub fn pair(&self, name: &str) -> Result<UnitPair, CertError> {
        let (pkcs8, pkcs1) = client_rsa_key()?;
        let key = KeyPair::from_pem(pkcs8)?;
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "elastic-fleet");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(UnitPair {
            cert_pem: cert.pem(),
            key_pem: pkcs1.clone(),
        })
    }
}

/// The agent's per-component Producer wiring: one CA, one pair per INPUT unit, kept
/// while the unit exists (`manager_shipper.go`).
pub(crate) struct Wiring {
    pub(crate) server: String,
    pub(crate) ca: ShipperCa,
    pub(crate) pairs: BTreeMap<String, UnitPair>,
    pub(crate) headers: BTreeMap<String, String>,
}

impl Wiring {
    /// The unit as the agent would hand it over.
    pub(crate) fn wire(&mut self, unit: &UnitSpec) -> Result<UnitSpec> {
        let mut unit = unit.clone();
        let serde_json::Value::Object(config) = &mut unit.config else {
            return Ok(unit);
        };
        match unit.kind {
            UnitType::Output => {
                for key in ["enabled", "shipper", "log_level"] {
                    config.remove(key);
                }
                let elasticsearch =
                    config.get("type").and_then(|t| t.as_str()) == Some("elasticsearch");
                if elasticsearch && !self.headers.is_empty() {
                    let headers = config
                        .entry("headers")
                        .or_insert_with(|| serde_json::json!({}));
                    if let serde_json::Value::Object(headers) = headers {
                        for (name, value) in &self.headers {
                            headers.insert(name.clone(), value.clone().into());
                        }
                    }
                }
            }
            UnitType::Input => {
                if config.contains_key("server") {
                    // Wired by the test itself (a TCP address, its own TLS material).
                    return Ok(unit);
                }
                let pair = match self.pairs.get(&unit.id) {
                    Some(pair) => pair.clone(),
                    None => {
                        let pair = self.ca.pair(&unit.id)?;
                        self.pairs.insert(unit.id.clone(), pair.clone());
                        pair
                    }
                };
                config.insert("server".into(), self.server.clone().into());
                // The agent replaces `ssl` whole and never writes `enabled`, so Beats
                // connects in plaintext. An `ssl.enabled` in the test's unit is kept: it is
                // the mock's one way to exercise the TLS path.
                let enabled = config
                    .get("ssl")
                    .and_then(|ssl| ssl.get("enabled"))
                    .cloned();
                let mut ssl = serde_json::json!({
                    "certificate_authorities": [self.ca.ca_pem],
                    "certificate": pair.cert_pem,
                    "key": pair.key_pem,
                });
                if let (Some(enabled), Some(map)) = (enabled, ssl.as_object_mut()) {
                    map.insert("enabled".into(), enabled);
                }
                config.insert("ssl".into(), ssl);
            }
        }
        Ok(unit)
    }
}
