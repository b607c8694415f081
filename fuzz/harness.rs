//! What each fuzz target does with its bytes, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/`) and the stable regression test (`tests/fuzz_regressions.rs`).
//!
//! Every function feeds the bytes to one of the shipper's decoders and returns `Ok` with a
//! summary or `Err` with the decoder's typed error as text. A panic (including a failed
//! `assert!` on a round-trip invariant below) is a finding. The targets that need well-
//! formed framing to get anywhere (segments) read the input as a small program that builds
//! frames with correct checksums, so the fuzzer reaches the decoders behind the CRC.

use agent_shipper::config::{InputUnitConfig, OutputConfig, ProducerLimits, StandaloneConfig};
use agent_shipper::control::convert::struct_to_json;
use agent_shipper::control::startup::decode_startup_info;
use agent_shipper::dlq::{read_entries, DlqEntry};
use agent_shipper::proto::shipper::messages::Event;
use agent_shipper::proto::shipper::raw::producer_server::Producer;
use agent_shipper::proto::shipper::PublishRequest;
use agent_shipper::queue::disk::codec::{
    decode_frame, encode_frame, scan_segment, segment_header, FrameStatus,
};
use agent_shipper::queue::{Generation, MemoryQueue, Queue};
use agent_shipper::server::{
    check_event, validate_event, ProducerService, RawPublishRequest, Routes,
};
use bytes::Bytes;
use prost::Message;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// A target's verdict on one input: a summary, or the typed error it gave.
pub type Outcome = Result<String, String>;

/// A target: bytes in, verdict out.
pub type Target = fn(&[u8]) -> Outcome;

/// Every target by name (the names of `fuzz/fuzz_targets/*.rs`).
pub const TARGETS: &[(&str, Target)] = &[
    ("queue_frame", queue_frame),
    ("queue_segment", queue_segment),
    ("dlq_entry", dlq_entry),
    ("dlq_segment", dlq_segment),
    ("startup_info", startup_info),
    ("unit_config", unit_config),
    ("publish_request", publish_request),
    ("event_check", event_check),
];

/// One queue frame at the start of the bytes.
pub fn queue_frame(data: &[u8]) -> Outcome {
    let buf = Bytes::copy_from_slice(data);
    match decode_frame(&buf) {
        FrameStatus::Valid(frame, len) => {
            let mut again = Vec::new();
            encode_frame(&mut again, frame.seq, frame.generation, &frame.payload);
            assert_eq!(
                &again[..],
                &data[..len],
                "a valid frame re-encodes to its bytes"
            );
            Ok(format!("frame seq {} of {len} bytes", frame.seq))
        }
        FrameStatus::Incomplete => Err("incomplete".into()),
        FrameStatus::Corrupted(reason) => Err(reason.into()),
    }
}

/// Builds segment bytes from a little program; the first byte picks raw or built.
///
/// Raw (first byte even): the rest is the whole file. Built: a valid header for sequence
/// 1 (or `u64::MAX - 2` when bit 1 of the first byte is set, to reach the top of the
/// sequence space), then for each op byte `op`: `< 128` a frame (next sequence number) whose payload is
/// the next `op` bytes; `128..192` the next `op - 127` bytes as garbage; `>= 192` skips
/// `op - 191` sequence numbers.
pub fn build_segment(data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    if mode % 2 == 0 {
        return rest.to_vec();
    }
    let mut seq = if mode & 2 == 0 { 1 } else { u64::MAX - 2 };
    let mut out = segment_header(seq).to_vec();
    let mut at = 0;
    // Each op consumes at least one byte: bounded by the input length.
    while let Some(&op) = rest.get(at) {
        at += 1;
        match op {
            0..=127 => {
                let end = (at + op as usize).min(rest.len());
                encode_frame(&mut out, seq, u32::from(mode), &rest[at..end]);
                seq = seq.wrapping_add(1);
                at = end;
            }
            128..=191 => {
                let end = (at + (op - 127) as usize).min(rest.len());
                out.extend_from_slice(&rest[at..end]);
                at = end;
            }
            _ => seq = seq.wrapping_add(u64::from(op - 191)),
        }
    }
    out
}

thread_local! {
    static SCRATCH: (tempfile::TempDir, PathBuf) = {
        let dir = tempfile::tempdir().expect("a scratch directory for segment files");
        let path = dir.path().join("00000000000000000001.seg");
        (dir, path)
    };
}

fn with_file<T>(contents: &[u8], read: impl FnOnce(&std::path::Path) -> T) -> T {
    SCRATCH.with(|(_, path)| {
        std::fs::write(path, contents).expect("scratch file written");
        read(path)
    })
}

/// A whole queue segment file, as opening a queue scans it.
pub fn queue_segment(data: &[u8]) -> Outcome {
    let file = build_segment(data);
    with_file(&file, |path| match scan_segment(path) {
        Ok(scan) => {
            assert!(
                scan.valid_len <= file.len() as u64,
                "valid prefix within the file"
            );
            assert!(scan.meta.last_seq >= scan.meta.first_seq.saturating_sub(1));
            Ok(format!(
                "segment to seq {}, {} valid bytes, damage {:?}",
                scan.meta.last_seq, scan.valid_len, scan.damage
            ))
        }
        Err(err) => Err(err.to_string()),
    })
}

/// One DLQ entry (a frame's payload).
pub fn dlq_entry(data: &[u8]) -> Outcome {
    match DlqEntry::decode(&Bytes::copy_from_slice(data)) {
        Ok(entry) => {
            let again = DlqEntry::decode(&Bytes::from(entry.encode()))
                .map_err(|err| format!("a decoded entry does not decode again: {err}"));
            assert_eq!(again.as_ref().ok(), Some(&entry), "entry round trip");
            Ok(format!("entry from {}", entry.input_unit))
        }
        Err(err) => Err(err.to_string()),
    }
}

/// A whole DLQ segment file, as the DLQ reader reads it.
pub fn dlq_segment(data: &[u8]) -> Outcome {
    let file = build_segment(data);
    with_file(&file, |path| match read_entries(path) {
        Ok(entries) => Ok(format!("{} entries", entries.len())),
        Err(err) => Err(err.to_string()),
    })
}

/// The StartUpInfo the agent writes to stdin.
pub fn startup_info(data: &[u8]) -> Outcome {
    decode_startup_info(data)
        .map(|info| format!("agent at {}", info.addr))
        .map_err(|err| err.to_string())
}

/// A unit config. First byte: bits 0-1 pick the encoding (0 JSON, 1 protobuf Struct as the
/// agent sends it, 2 standalone YAML), bit 2 the schema (OUTPUT or INPUT unit).
pub fn unit_config(data: &[u8]) -> Outcome {
    let Some((&mode, rest)) = data.split_first() else {
        return Err("empty".into());
    };
    let value = match mode & 3 {
        0 => serde_json::from_slice(rest).map_err(|err| format!("json: {err}"))?,
        1 => {
            let source =
                prost_types::Struct::decode(rest).map_err(|err| format!("protobuf: {err}"))?;
            struct_to_json(&source)
        }
        _ => {
            let text = std::str::from_utf8(rest).map_err(|err| format!("utf-8: {err}"))?;
            return StandaloneConfig::parse(text, "fuzz")
                .map(|config| format!("standalone on {}", config.server))
                .map_err(|err| err.to_string());
        }
    };
    if mode & 4 == 0 {
        OutputConfig::from_value(value)
            .map(|config| format!("{config:?}").len().to_string())
            .map_err(|err| err.to_string())
    } else {
        InputUnitConfig::from_value(value)
            .map(|config| format!("input {} on {}", config.id, config.server))
            .map_err(|err| err.to_string())
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
}

/// Limits small enough that the fuzzer meets them.
pub const FUZZ_LIMITS: ProducerLimits = ProducerLimits {
    max_event_bytes: 4 << 10,
    max_request_bytes: 64 << 10,
    max_events_per_request: 64,
    max_concurrent_streams: 4,
};

/// A PublishRequest body, decoded as the server's codec does (uuid and raw events) and
/// handled by the real service over a memory queue routing input ids `""` and `in`.
pub fn publish_request(data: &[u8]) -> Outcome {
    if data.len() as u64 > FUZZ_LIMITS.max_request_bytes {
        return Err("over max_request_bytes".into());
    }
    let request = RawPublishRequest::decode(data).map_err(|err| format!("protobuf: {err}"))?;
    assert_eq!(
        request.malformed.is_none(),
        PublishRequest::decode(data).is_ok(),
        "the raw decoder and prost disagree on the request framing"
    );
    let queue = Arc::new(MemoryQueue::new(1_000, 1 << 20));
    let generation = queue.register(Generation {
        input_unit: "unit-in".into(),
        output_unit: "out".into(),
        output_config_idx: 1,
    });
    let routes = Routes {
        queue: Some(queue as Arc<dyn Queue>),
        output_ready: true,
        inputs: HashMap::from([(String::new(), generation), ("in".into(), generation)]),
        unnamed: Some(generation),
        ..Routes::default()
    };
    let (_keep, routes) = tokio::sync::watch::channel(Arc::new(routes));
    let service =
        ProducerService::new("run-1", routes, Default::default()).with_limits(FUZZ_LIMITS);
    let events = request.events.len();
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            match service.publish_events(tonic::Request::new(request)).await {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    assert!(reply.accepted_count as usize <= events);
                    Ok(format!("{} accepted", reply.accepted_count))
                }
                Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
            }
        })
    })
}

/// One encoded `Event`, walked by the Producer API's byte validator ([`check_event`]) and
/// decoded by prost as the event of a `PublishRequest` (the path the validator replaced):
/// both must accept or both refuse, agree on what validation and routing read, and what
/// the walker accepts must decode on its own (the output decodes queued bytes so).
pub fn event_check(data: &[u8]) -> Outcome {
    if data.len() as u64 > FUZZ_LIMITS.max_request_bytes {
        return Err("over max_request_bytes".into());
    }
    let mut request = vec![0x12];
    prost::encoding::encode_varint(data.len() as u64, &mut request);
    request.extend_from_slice(data);
    let decoded = PublishRequest::decode(request.as_slice())
        .ok()
        .and_then(|mut request| request.events.pop());
    match (decoded, check_event(data)) {
        (Some(event), Ok(view)) => {
            assert_eq!(view.has_timestamp, event.timestamp.is_some(), "timestamp");
            let source = event.source.clone().unwrap_or_default();
            assert_eq!(
                (view.input_id, view.stream_id),
                (source.input_id.as_str(), source.stream_id.as_str()),
                "source"
            );
            let parts = event
                .data_stream
                .as_ref()
                .map(|d| [d.r#type.as_str(), d.dataset.as_str(), d.namespace.as_str()]);
            assert_eq!(view.data_stream, parts, "data_stream");
            assert_eq!(
                Event::decode(data).ok().as_ref(),
                Some(&event),
                "the queued bytes decode to the same event"
            );
            validate_event(&view).map(|()| "valid event".to_string())
        }
        (None, Err(malformed)) => Err(malformed.to_string()),
        (decoded, walked) => panic!(
            "prost and the byte walker disagree: prost decoded {}, the walker said {walked:?}",
            decoded.is_some()
        ),
    }
}

/// A few well-formed inputs per target: the seed corpus (written to `fuzz/seeds/`).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use agent_shipper::proto::agent::{ConnInfoServices, StartUpInfo};
    use agent_shipper::proto::shipper::messages::value::Kind;
    use agent_shipper::proto::shipper::messages::{DataStream, ListValue, Source, Struct, Value};
    let kind = |kind: Kind| Value { kind: Some(kind) };
    let mut frame = Vec::new();
    encode_frame(&mut frame, 7, 1, b"\x0a\x02\x08\x01");
    let entry = DlqEntry {
        event: Bytes::from_static(b"\x0a\x02\x08\x01"),
        reason: agent_shipper::dlq::Reason {
            status: Some(400),
            error_type: "mapper_parsing_exception".into(),
            message: "failed to parse".into(),
        },
        input_unit: "input-a".into(),
        output_unit: "output-default".into(),
        revision: 3,
        dead_lettered_at_ms: 1_700_000_000_000,
    }
    .encode();
    // Built segments: mode 1, then two frames, garbage, a skipped seq, a frame.
    let mut segment = vec![
        1u8, 4, b'a', b'b', b'c', b'd', 2, b'x', b'y', 130, 0xff, 0, 0, 193,
    ];
    segment.extend_from_slice(&[5, 1, 2, 3, 4, 5]);
    let mut dlq_segment = vec![1u8, entry.len() as u8];
    dlq_segment.extend_from_slice(&entry);
    let startup = StartUpInfo {
        addr: "localhost:6789".into(),
        server_name: "localhost".into(),
        token: "token".into(),
        ca_cert: b"ca".to_vec(),
        peer_cert: b"cert".to_vec(),
        peer_key: b"key".to_vec(),
        services: vec![ConnInfoServices::CheckinV2 as i32],
        ..StartUpInfo::default()
    }
    .encode_to_vec();
    let output = serde_json::json!({
        "type": "elasticsearch", "hosts": ["http://127.0.0.1:9200"], "api_key": "id:key",
        "queue": {"disk": {"max_size": "1GiB"}}, "dlq": {"enabled": true}
    });
    let input = serde_json::json!({
        "id": "filestream-default", "type": "shipper", "server": "unix:///tmp/s.sock",
        "units": [{"id": "filestream-a"}], "max_event_bytes": "1MiB", "on_remove": "drain"
    });
    let with_mode = |mode: u8, body: Vec<u8>| [vec![mode], body].concat();
    let agent_struct = agent_shipper::control::convert::json_to_struct(&input).encode_to_vec();
    let yaml = b"server: unix:///tmp/s.sock\ntype: file\npath: /tmp/out.ndjson\n".to_vec();
    let event = Event {
        timestamp: Some(prost_types::Timestamp::default()),
        source: Some(Source {
            input_id: "in".into(),
            stream_id: "s".into(),
        }),
        data_stream: Some(DataStream {
            r#type: "logs".into(),
            dataset: "d".into(),
            namespace: "n".into(),
        }),
        ..Event::default()
    };
    let rich = Event {
        fields: Some(Struct {
            data: HashMap::from([
                (
                    "message".to_string(),
                    kind(Kind::StringValue("hello".into())),
                ),
                ("n".to_string(), kind(Kind::Int64Value(-3))),
                ("ratio".to_string(), kind(Kind::Float64Value(0.5))),
                (
                    "nested".to_string(),
                    kind(Kind::StructValue(Struct {
                        data: HashMap::from([(
                            "list".to_string(),
                            kind(Kind::ListValue(ListValue {
                                values: vec![
                                    kind(Kind::BoolValue(true)),
                                    kind(Kind::NullValue(0)),
                                    kind(Kind::TimestampValue(prost_types::Timestamp::default())),
                                ],
                            })),
                        )]),
                    })),
                ),
            ]),
        }),
        metadata: Some(Struct {
            data: HashMap::from([("pipeline".to_string(), kind(Kind::StringValue("p".into())))]),
        }),
        ..event.clone()
    }
    .encode_to_vec();
    let single = event.encode_to_vec();
    let publish = PublishRequest {
        uuid: String::new(),
        events: vec![event.clone(), event],
    }
    .encode_to_vec();
    vec![
        ("queue_frame", frame),
        ("queue_segment", segment),
        ("dlq_entry", entry),
        ("dlq_segment", dlq_segment),
        ("startup_info", startup),
        (
            "unit_config",
            with_mode(0, serde_json::to_vec(&output).unwrap_or_default()),
        ),
        ("unit_config", with_mode(5, agent_struct)),
        ("unit_config", with_mode(2, yaml)),
        ("publish_request", publish),
        ("event_check", single),
        ("event_check", rich),
    ]
}
