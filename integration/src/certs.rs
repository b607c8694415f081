//! Mints the throwaway CA and certificates the mock agent and the shipper use for mTLS.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use std::sync::OnceLock;

/// PEM material for one agent run.
#[derive(Clone)]
pub struct AgentCerts {
    /// The CA both sides trust.
    pub ca_pem: String,
    /// The agent's server certificate (SAN `localhost`, `127.0.0.1`, `::1`).
    pub server_cert_pem: String,
    /// Its key.
    pub server_key_pem: String,
    /// The client certificate handed to the shipper in StartUpInfo.
    pub client_cert_pem: String,
    /// Its key: RSA in PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`), as the real agent sends it.
    pub client_key_pem: String,
}

/// One RSA key per test process: 2048-bit generation is slow, and the key is throwaway.
/// Returns the key as PKCS#8 PEM (what rcgen reads) and PKCS#1 PEM (what the agent sends).
pub(crate) fn client_rsa_key() -> Result<&'static (String, String), CertError> {
    static KEY: OnceLock<(String, String)> = OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key);
    }
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
        .map_err(|err| CertError::Rsa(err.to_string()))?;
    let pkcs8 = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|err| CertError::Rsa(err.to_string()))?;
    let pkcs1 = key
        .to_pkcs1_pem(LineEnding::LF)
        .map_err(|err| CertError::Rsa(err.to_string()))?;
    Ok(KEY.get_or_init(|| (pkcs8.to_string(), pkcs1.to_string())))
}

impl std::fmt::Debug for AgentCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of debug output.
        f.write_str("AgentCerts { .. }")
    }
}

/// Errors while minting certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused.
    #[error("cannot mint test certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// RSA key generation or encoding failed.
    #[error("cannot make the RSA client key: {0}")]
    Rsa(String),
}

impl AgentCerts {
    /// A fresh CA with a server and a client certificate signed by it.
    pub fn mint() -> Result<Self, CertError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mock-agent test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server_params = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        let (client_pkcs8, client_pkcs1) = client_rsa_key()?;
        let client_key = KeyPair::from_pem(client_pkcs8)?;
        let mut client_params = CertificateParams::new(Vec::<String>::new())?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "agent-shipper");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &issuer)?;

        Ok(AgentCerts {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_pkcs1.clone(),
        })
    }
}

/// The material the agent (8.6–8.15) gives a shipper's INPUT units: one CA per shipper and
/// one pair per unit, named after the unit id (subject and DNS name), for client and
/// server use; keys in PKCS#1 as the agent writes them for the first unit.
#[derive(Clone)]
pub struct UnitPairs {
    /// The shipper's CA.
    pub ca_pem: String,
    /// `(unit id, certificate PEM, key PEM)` per unit, in the order asked for.
    pub pairs: Vec<(String, String, String)>,
}

impl std::fmt::Debug for UnitPairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnitPairs { .. }")
    }
}

impl UnitPairs {
    /// A fresh CA and a pair for each of `unit_ids`. The first unit's key is RSA in
    /// PKCS#1 (as the agent's `authority` package writes it); the others are ECDSA, which
    /// is quicker to make and exercises another key format.
    pub fn mint(unit_ids: &[&str]) -> Result<Self, CertError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(vec!["localhost".to_string()])?;
        ca_params
            .distinguished_name
            .push(DnType::OrganizationName, "elastic-fleet");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let mut pairs = Vec::new();
        for (i, unit_id) in unit_ids.iter().enumerate() {
            let (key, key_pem) = if i == 0 {
                let (pkcs8, pkcs1) = client_rsa_key()?;
                (KeyPair::from_pem(pkcs8)?, pkcs1.clone())
            } else {
                let key = KeyPair::generate()?;
                let pem = key.serialize_pem();
                (key, pem)
            };
            let mut params = CertificateParams::new(vec![unit_id.to_string()])?;
            params
                .distinguished_name
                .push(DnType::OrganizationName, "elastic-fleet");
            params.distinguished_name.push(DnType::CommonName, *unit_id);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let cert = params.signed_by(&key, &issuer)?;
            pairs.push((unit_id.to_string(), cert.pem(), key_pem));
        }
        Ok(UnitPairs {
            ca_pem: ca_cert.pem(),
            pairs,
        })
    }

    /// The INPUT unit's `ssl` block as the agent writes it (inline PEM, no `enabled`).
    pub fn ssl_block(&self, unit_id: &str) -> serde_json::Value {
        let (_, cert, key) = self
            .pairs
            .iter()
            .find(|(id, _, _)| id == unit_id)
            .expect("a pair was minted for this unit");
        serde_json::json!({
            "certificate_authorities": [self.ca_pem],
            "certificate": cert,
            "key": key,
        })
    }
}
