//! A Producer API client connection, for tools that publish to a shipper (`dlq replay`,
//! the test load generator).

use super::ServerAddress;
use crate::proto::shipper::producer_client::ProducerClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Connects to a Producer API at `unix:///path`, `/path` or `host:port`.
///
/// # Errors
/// A message naming the address when it is invalid or nothing answers there.
pub async fn connect(server: &str) -> Result<ProducerClient<Channel>, String> {
    Ok(ProducerClient::new(connect_channel(server).await?)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// The gRPC channel [`connect`] uses, for clients that bring their own codec.
///
/// # Errors
/// A message naming the address when it is invalid or nothing answers there.
pub async fn connect_channel(server: &str) -> Result<Channel, String> {
    connect_channel_tls(server, None).await
}

/// [`connect`] over TLS: `tls` names the CA to trust, the server name and (for a shipper
/// that requires mutual TLS) the client certificate to present.
///
/// # Errors
/// A message naming the address when it is invalid, nothing answers there, or the TLS
/// handshake fails (e.g. the server refuses the client certificate).
pub async fn connect_tls(
    server: &str,
    tls: ClientTlsConfig,
) -> Result<ProducerClient<Channel>, String> {
    Ok(
        ProducerClient::new(connect_channel_tls(server, Some(tls)).await?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20),
    )
}

/// PEM files a command-line tool presents to a shipper that requires mutual TLS.
#[derive(Debug, Clone)]
pub struct ClientTlsFiles {
    /// The CA that signed the shipper's certificate.
    pub ca: std::path::PathBuf,
    /// The client certificate (chain).
    pub cert: std::path::PathBuf,
    /// The client certificate's private key.
    pub key: std::path::PathBuf,
    /// The name the shipper's certificate is checked against.
    pub server_name: String,
}

impl ClientTlsFiles {
    /// Reads the files into a TLS config.
    ///
    /// # Errors
    /// A message naming the option and the file that could not be read. The key's content
    /// is never quoted.
    pub fn load(&self) -> Result<ClientTlsConfig, String> {
        let read = |option: &str, path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|err| format!("{option} {}: cannot read it: {err}", path.display()))
        };
        let ca = read("--ssl-ca", &self.ca)?;
        let cert = read("--ssl-cert", &self.cert)?;
        let key = read("--ssl-key", &self.key)?;
        Ok(ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
            .identity(tonic::transport::Identity::from_pem(cert, key))
            .domain_name(self.server_name.clone()))
    }
}

/// The gRPC channel of [`connect_tls`], plaintext when `tls` is `None`.
///
/// # Errors
/// As [`connect_tls`].
pub async fn connect_channel_tls(
    server: &str,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, String> {
    let address = ServerAddress::parse(server)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // For a unix socket the authority only names the TLS server.
    let authority = match &address {
        ServerAddress::Unix(_) => "localhost".to_string(),
        ServerAddress::Tcp(addr) => addr.to_string(),
    };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{authority}"))
        .map_err(|err| format!("invalid address {server}: {err}"))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|err| format!("invalid TLS settings for {server}: {err}"))?;
    }
    match address {
        ServerAddress::Unix(path) => connect_unix(&endpoint, path).await,
        ServerAddress::Tcp(_) => endpoint.connect().await,
    }
    .map_err(|err| {
        // The transport error alone says "transport error"; its sources say why.
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        format!("cannot connect to the Producer API at {server}: {message}")
    })
}

/// Connects `endpoint` (its TLS settings included) over the unix socket at `path`; the
/// endpoint's URI then only names the TLS server, not where to connect.
pub(crate) async fn connect_unix(
    endpoint: &Endpoint,
    path: std::path::PathBuf,
) -> Result<Channel, tonic::transport::Error> {
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}
