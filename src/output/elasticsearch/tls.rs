//! TLS to Elasticsearch: trusted roots, client certificate, versions, and the CA fingerprint.
//!
//! The rustls config is built here rather than through reqwest's builder because
//! `ssl.ca_trusted_fingerprint` needs a certificate verifier of our own: Beats trusts a
//! server whose presented chain holds a certificate with that SHA-256, by adding that
//! certificate to the roots for the handshake. [`EsVerifier`] does the same: it looks for
//! the fingerprint among the certificates the server sent and, when one matches, verifies
//! the chain (and the hostname, unless `verification_mode` says otherwise) against the
//! configured roots plus that certificate. A chain without it is verified against the
//! configured roots alone, so the fingerprint only ever adds trust in one named CA.

use super::client::ClientConfigError;
use crate::config::{parse_fingerprint, SslConfig, TlsVersion, VerificationMode};
use std::sync::Arc;
use tokio_rustls::rustls::{
    self,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    client::WebPkiServerVerifier,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The rustls client config for `ssl`: reads the CA, certificate and key files it names.
///
/// # Errors
/// A file is unreadable or holds no PEM of the right kind, the key does not fit the
/// certificate, or a setting is out of range; the error names the key.
pub(crate) fn client_config(ssl: &SslConfig) -> Result<rustls::ClientConfig, ClientConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = roots(ssl)?;
    let fingerprint = ssl
        .ca_trusted_fingerprint
        .as_deref()
        .map(parse_fingerprint)
        .transpose()
        .map_err(|reason| error("ssl.ca_trusted_fingerprint", reason))?;
    let verifier = EsVerifier::new(roots, fingerprint, ssl.verification_mode, provider.clone())?;
    if ssl.verification_mode == VerificationMode::None {
        tracing::warn!(
            "ssl.verification_mode: none: the Elasticsearch server is not authenticated"
        );
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        if ssl.supported_protocols.is_empty() {
            vec![&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            ssl.supported_protocols
                .iter()
                .map(|version| match version {
                    TlsVersion::Tls12 => &rustls::version::TLS12,
                    TlsVersion::Tls13 => &rustls::version::TLS13,
                })
                .collect()
        };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|err| error("ssl.supported_protocols", err.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match (&ssl.certificate, &ssl.key) {
        (Some(certificate), Some(key)) => {
            let chain =
                CertificateDer::pem_slice_iter(&pem_or_file("ssl.certificate", certificate)?)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|err| {
                        error("ssl.certificate", format!("not a PEM certificate: {err}"))
                    })?;
            if chain.is_empty() {
                return Err(error("ssl.certificate", "holds no PEM certificate".into()));
            }
            // The key's content never reaches an error message.
            let key = PrivateKeyDer::from_pem_slice(&pem_or_file("ssl.key", key.expose())?)
                .map_err(|_| {
                    error(
                        "ssl.key",
                        "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".into(),
                    )
                })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| error("ssl.key", format!("does not fit ssl.certificate: {err}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    // reqwest is built for HTTP/1.1 only; a server offering h2 must not pick it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn error(key: &str, reason: String) -> ClientConfigError {
    ClientConfigError {
        key: key.into(),
        reason,
    }
}

/// Inline PEM as bytes, or the bytes of the file it names.
fn pem_or_file(key: &str, value: &str) -> Result<Vec<u8>, ClientConfigError> {
    if value.trim_start().starts_with("-----BEGIN") {
        Ok(value.as_bytes().to_vec())
    } else {
        std::fs::read(value.trim()).map_err(|err| error(key, format!("cannot read {value}: {err}")))
    }
}

/// `ssl.certificate_authorities`, or the built-in (Mozilla) roots when there are none: as
/// Beats, configured CAs replace the built-in roots.
fn roots(ssl: &SslConfig) -> Result<RootCertStore, ClientConfigError> {
    let mut roots = RootCertStore::empty();
    if ssl.certificate_authorities.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    }
    for (i, ca) in ssl.certificate_authorities.iter().enumerate() {
        let key = format!("ssl.certificate_authorities.{i}");
        let certs = CertificateDer::pem_slice_iter(&pem_or_file(&key, ca)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| error(&key, format!("not a PEM certificate: {err}")))?;
        if certs.is_empty() {
            return Err(error(&key, "holds no PEM certificate".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|err| error(&key, format!("not a usable CA certificate: {err}")))?;
        }
    }
    Ok(roots)
}

/// SHA-256 of a certificate's DER: the fingerprint Elasticsearch prints for its CA.
pub(crate) fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The server certificate check: chain against the roots (plus the certificate matching
/// `ssl.ca_trusted_fingerprint`, when the server sent one), hostname as `verification_mode`
/// says.
#[derive(Debug)]
pub(crate) struct EsVerifier {
    roots: RootCertStore,
    fingerprint: Option<[u8; 32]>,
    mode: VerificationMode,
    /// The configured roots alone, used when no presented certificate matches; none when
    /// there are no roots (then only the fingerprint can make a chain trusted).
    base: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
    provider: Arc<CryptoProvider>,
}

impl EsVerifier {
    pub(crate) fn new(
        roots: RootCertStore,
        fingerprint: Option<[u8; 32]>,
        mode: VerificationMode,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, ClientConfigError> {
        let base = if roots.is_empty() {
            None
        } else {
            let built = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots.clone()),
                provider.clone(),
            )
            .build()
            .map_err(|err| error("ssl.certificate_authorities", err.to_string()))?;
            Some(built)
        };
        Ok(EsVerifier {
            roots,
            fingerprint,
            mode,
            base,
            algorithms: provider.signature_verification_algorithms,
            provider,
        })
    }

    /// The verifier for this chain: the configured roots plus the presented certificate
    /// whose SHA-256 is the configured fingerprint, if any.
    fn verifier_for(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let unknown_issuer = || rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let matching = self.fingerprint.and_then(|wanted| {
            std::iter::once(end_entity)
                .chain(intermediates)
                .find(|cert| fingerprint(cert) == wanted)
        });
        let Some(trusted) = matching else {
            return self.base.clone().ok_or_else(unknown_issuer);
        };
        let mut roots = self.roots.clone();
        roots.add(trusted.clone().into_owned()).map_err(|err| {
            rustls::Error::General(format!(
                "ssl.ca_trusted_fingerprint: the matching certificate is not a usable CA: {err}"
            ))
        })?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|err| rustls::Error::General(err.to_string()))
    }
}

impl ServerCertVerifier for EsVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.mode == VerificationMode::None {
            return Ok(ServerCertVerified::assertion());
        }
        let verifier = self.verifier_for(end_entity, intermediates)?;
        match verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // `certificate`: the chain must be trusted, any name is accepted. webpki checks
            // the name last, so this error means the chain itself passed.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.mode == VerificationMode::Certificate => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    /// A CA and a `localhost` server certificate it signed, both DER.
    fn ca_and_server(name: &str) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();
        (ca_cert.der().clone(), server_cert.der().clone())
    }

    fn verifier(fingerprint: Option<[u8; 32]>, mode: VerificationMode) -> EsVerifier {
        // Empty roots: only the fingerprint can make a chain trusted.
        EsVerifier::new(
            RootCertStore::empty(),
            fingerprint,
            mode,
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .unwrap()
    }

    fn verify(
        verifier: &EsVerifier,
        leaf: &CertificateDer<'_>,
        chain: &[CertificateDer<'_>],
        name: &str,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verifier.verify_server_cert(
            leaf,
            chain,
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
    }

    #[test]
    fn a_chain_holding_the_fingerprinted_ca_is_trusted_with_its_hostname_checked() {
        let (ca, leaf) = ca_and_server("fingerprinted CA");
        let trusting = verifier(Some(fingerprint(&ca)), VerificationMode::Full);
        verify(&trusting, &leaf, std::slice::from_ref(&ca), "localhost").unwrap();
        // The fingerprint vouches for the CA, not for any name.
        let wrong_name =
            verify(&trusting, &leaf, std::slice::from_ref(&ca), "es.example").unwrap_err();
        assert!(
            matches!(
                wrong_name,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{wrong_name:?}"
        );
        let any_name = verifier(Some(fingerprint(&ca)), VerificationMode::Certificate);
        verify(&any_name, &leaf, std::slice::from_ref(&ca), "es.example").unwrap();
    }

    #[test]
    fn a_chain_without_the_fingerprinted_certificate_is_refused() {
        let (ca, leaf) = ca_and_server("server's CA");
        let (other_ca, _) = ca_and_server("another CA");
        // Another CA's fingerprint, whatever the server sends.
        let other = verifier(Some(fingerprint(&other_ca)), VerificationMode::Full);
        let err = verify(&other, &leaf, std::slice::from_ref(&ca), "localhost").unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{err:?}"
        );
        // Sending the other CA along does not help: it did not sign the leaf.
        let err = verify(&other, &leaf, &[ca.clone(), other_ca.clone()], "localhost").unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
        // The right fingerprint, but the server does not present its CA.
        let right = verifier(Some(fingerprint(&ca)), VerificationMode::Full);
        verify(&right, &leaf, &[], "localhost").unwrap_err();
        // No fingerprint, no configured CA: nothing is trusted.
        verify(
            &verifier(None, VerificationMode::Full),
            &leaf,
            &[ca],
            "localhost",
        )
        .unwrap_err();
    }

    #[test]
    fn the_fingerprint_is_the_sha256_elasticsearch_prints() {
        let (ca, _) = ca_and_server("printed CA");
        let hex: String = fingerprint(&ca)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        let with_colons = hex
            .as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            parse_fingerprint(&hex.to_lowercase()).unwrap(),
            fingerprint(&ca)
        );
        assert_eq!(parse_fingerprint(&with_colons).unwrap(), fingerprint(&ca));
        assert!(parse_fingerprint(&hex[2..]).is_err());
        assert!(parse_fingerprint(&format!("zz{}", &hex[2..])).is_err());
    }

    #[test]
    fn a_client_certificate_loads_inline_and_a_key_that_does_not_fit_is_named() {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let ssl = |certificate: &str, key: &str| SslConfig {
            certificate: Some(certificate.to_string()),
            key: Some(crate::config::Secret::new(key)),
            ..SslConfig::default()
        };
        client_config(&ssl(&cert.pem(), &key.serialize_pem())).unwrap();
        let other = KeyPair::generate().unwrap();
        let err = client_config(&ssl(&cert.pem(), &other.serialize_pem())).unwrap_err();
        assert_eq!(err.key, "ssl.key", "{err}");
        assert!(!err.reason.contains("PRIVATE KEY"), "{err}");
        let err = client_config(&ssl("/no/such/cert.pem", &key.serialize_pem())).unwrap_err();
        assert_eq!(err.key, "ssl.certificate", "{err}");
        let err = client_config(&ssl(&cert.pem(), "-----BEGIN NOTHING-----")).unwrap_err();
        assert_eq!(err.key, "ssl.key", "{err}");
    }
}
