//! A Producer API client connection, for tools that publish to a shipper (`dlq replay`,
//! the test load generator).

use super::ServerAddress;
use crate::proto::shipper::producer_client::ProducerClient;
use tonic::transport::{Channel, Endpoint};

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
    let address = ServerAddress::parse(server)?;
    match address {
        ServerAddress::Unix(path) => {
            connect_unix(&Endpoint::from_static("http://localhost"), path).await
        }
        ServerAddress::Tcp(addr) => match Endpoint::from_shared(format!("http://{addr}")) {
            Ok(endpoint) => endpoint.connect().await,
            Err(err) => return Err(format!("invalid address {server}: {err}")),
        },
    }
    .map_err(|err| format!("cannot connect to the Producer API at {server}: {err}"))
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
