//! Parses the `server` setting into a listen address.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the Producer API listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerAddress {
    /// A unix socket at this path (`unix:///path` or a bare absolute path).
    Unix(PathBuf),
    /// A TCP address (`host:port`).
    Tcp(SocketAddr),
}

impl ServerAddress {
    /// Parses `unix:///path`, `/path`, `npipe`-free `host:port` forms.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("`{text}` names no socket path"));
            }
            return Ok(ServerAddress::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') {
            return Ok(ServerAddress::Unix(PathBuf::from(text)));
        }
        let hostport = text.strip_prefix("tcp://").unwrap_or(text);
        let hostport = hostport.replace("localhost:", "127.0.0.1:");
        hostport.parse::<SocketAddr>().map(ServerAddress::Tcp).map_err(|_| {
            format!("`{text}` is neither unix:///path nor host:port with a numeric IP (e.g. 127.0.0.1:50051)")
        })
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddress::Unix(path) => write!(f, "unix://{}", path.display()),
            ServerAddress::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unix_and_tcp_forms() {
        assert_eq!(
            ServerAddress::parse("unix:///run/s.sock").unwrap(),
            ServerAddress::Unix("/run/s.sock".into())
        );
        assert_eq!(
            ServerAddress::parse("/run/s.sock").unwrap(),
            ServerAddress::Unix("/run/s.sock".into())
        );
        assert_eq!(
            ServerAddress::parse("localhost:5000").unwrap(),
            ServerAddress::Tcp("127.0.0.1:5000".parse().unwrap())
        );
        assert_eq!(
            ServerAddress::parse("[::1]:5000").unwrap(),
            ServerAddress::Tcp("[::1]:5000".parse().unwrap())
        );
        assert!(ServerAddress::parse("unix://").is_err());
        assert!(ServerAddress::parse("example.com")
            .unwrap_err()
            .contains("example.com"));
    }
}
