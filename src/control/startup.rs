//! Reads and checks the `StartUpInfo` the agent writes to our stdin.

use crate::proto::agent::{ConnInfoServices, StartUpInfo};
use prost::Message;
use std::io::{IsTerminal, Read};

/// Why the StartUpInfo cannot be used; each message says what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// stdin is a terminal: nobody is going to write a StartUpInfo.
    #[error("stdin is a terminal, but managed mode expects Elastic Agent to write a StartUpInfo message to stdin; to run without an agent use `agent-shipper run -c shipper.yml`")]
    Terminal,
    /// Reading stdin failed.
    #[error("could not read the StartUpInfo from stdin: {0}")]
    Read(std::io::Error),
    /// stdin closed without a byte.
    #[error("stdin was empty: Elastic Agent writes a StartUpInfo message to stdin in managed mode; to run without an agent use `agent-shipper run -c shipper.yml`")]
    Empty,
    /// The bytes are not a StartUpInfo.
    #[error("the StartUpInfo could not be decoded from the {len} bytes read from stdin: {reason}")]
    Decode {
        /// Bytes read.
        len: usize,
        /// The protobuf decoder's message.
        reason: String,
    },
    /// The agent does not offer CheckinV2.
    #[error("the agent does not offer the CheckinV2 service (offered: {offered}); this shipper speaks only the V2 control protocol")]
    NoCheckinV2 {
        /// The services the agent listed.
        offered: String,
    },
    /// A field the connection needs is empty.
    #[error("the StartUpInfo has no {0}")]
    Missing(&'static str),
}

/// Reads stdin to EOF and decodes one StartUpInfo from it.
pub fn read_startup_info() -> Result<StartUpInfo, StartupError> {
    let mut stdin = std::io::stdin().lock();
    if stdin.is_terminal() {
        return Err(StartupError::Terminal);
    }
    let mut bytes = Vec::new();
    // The agent sends a few KiB; refuse to buffer more than 16 MiB of garbage.
    (&mut stdin)
        .take(16 << 20)
        .read_to_end(&mut bytes)
        .map_err(StartupError::Read)?;
    decode_startup_info(&bytes)
}

/// Decodes and checks a StartUpInfo.
pub fn decode_startup_info(bytes: &[u8]) -> Result<StartUpInfo, StartupError> {
    if bytes.is_empty() {
        return Err(StartupError::Empty);
    }
    let info = StartUpInfo::decode(bytes).map_err(|err| StartupError::Decode {
        len: bytes.len(),
        reason: err.to_string(),
    })?;
    if !info
        .services
        .contains(&(ConnInfoServices::CheckinV2 as i32))
    {
        let offered: Vec<String> = info
            .services
            .iter()
            .map(|s| {
                ConnInfoServices::try_from(*s)
                    .map(|s| s.as_str_name().to_string())
                    .unwrap_or_else(|_| format!("unknown({s})"))
            })
            .collect();
        return Err(StartupError::NoCheckinV2 {
            offered: if offered.is_empty() {
                "none".into()
            } else {
                offered.join(", ")
            },
        });
    }
    for (empty, what) in [
        (info.addr.is_empty(), "agent address (addr)"),
        (info.token.is_empty(), "token"),
        (info.ca_cert.is_empty(), "CA certificate (ca_cert)"),
        (info.peer_cert.is_empty(), "client certificate (peer_cert)"),
        (info.peer_key.is_empty(), "client key (peer_key)"),
    ] {
        if empty {
            return Err(StartupError::Missing(what));
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> StartUpInfo {
        StartUpInfo {
            addr: "localhost:6789".into(),
            server_name: "localhost".into(),
            token: "t".into(),
            ca_cert: b"ca".to_vec(),
            peer_cert: b"cert".to_vec(),
            peer_key: b"key".to_vec(),
            services: vec![ConnInfoServices::CheckinV2 as i32],
            ..StartUpInfo::default()
        }
    }

    #[test]
    fn valid_info_decodes() {
        let info = decode_startup_info(&valid().encode_to_vec()).unwrap();
        assert_eq!(info.token, "t");
    }

    #[test]
    fn garbage_and_empty_input_are_named() {
        assert!(matches!(decode_startup_info(b""), Err(StartupError::Empty)));
        let err = decode_startup_info(b"\xff\xff\xff\xff garbage").unwrap_err();
        assert!(err.to_string().contains("could not be decoded"), "{err}");
    }

    #[test]
    fn missing_checkin_v2_is_refused_with_what_was_offered() {
        let mut info = valid();
        info.services = vec![ConnInfoServices::Checkin as i32];
        let err = decode_startup_info(&info.encode_to_vec()).unwrap_err();
        assert!(err.to_string().contains("offered: Checkin"), "{err}");
    }

    #[test]
    fn missing_token_is_named() {
        let mut info = valid();
        info.token.clear();
        let err = decode_startup_info(&info.encode_to_vec()).unwrap_err();
        assert!(err.to_string().contains("token"), "{err}");
    }
}
