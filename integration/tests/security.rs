//! End-to-end security: mTLS on TCP, owner-only sockets and files, no secret in any output.

mod common;

use agent_shipper::proto::agent::{State, UnitLogLevel, UnitType};
use agent_shipper::proto::shipper::messages::{
    value::Kind, DataStream, Event, Source, Struct, Value,
};
use agent_shipper::proto::shipper::PublishRequest;
use agent_shipper::server::client::connect_tls;
use base64::Engine;
use common::{observed_state, output_unit, revision, Harness, WAIT};
use integration::agent::{AgentEvent, UnitSpec};
use integration::certs::{AgentCerts, UnitPairs};
use integration::loadgen::{self, LoadgenOptions};
use integration::mock_es::{MockEs, MockEsOptions};
use serde_json::json;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::UnixTime;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as RustlsError, RootCertStore,
    SignatureScheme,
};
use tokio_rustls::TlsConnector;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

fn input(id: &str, input_id: &str, extra: serde_json::Value) -> UnitSpec {
    let mut config = json!({"id": id, "type": "shipper", "units": [{"id": input_id}]});
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    UnitSpec {
        id: id.into(),
        kind: UnitType::Input,
        config,
        log_level: UnitLogLevel::Info,
    }
}

/// A loopback port nobody listens on right now (the shipper's config needs a number).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// Publishes 10 events of `input_id` over `tls`; the error text when refused.
async fn publish_tls(server: &str, input_id: &str, tls: ClientTlsConfig) -> Result<u64, String> {
    let mut client = connect_tls(server, tls).await?;
    let options = LoadgenOptions::new(server, input_id, 10);
    let events = (0..10)
        .map(|seq| loadgen::make_event(&options, seq))
        .collect();
    let reply = tokio::time::timeout(
        WAIT,
        client.publish_events(PublishRequest {
            uuid: String::new(),
            events,
        }),
    )
    .await
    .map_err(|_| "publish timed out".to_string())?
    .map_err(|status| status.to_string())?
    .into_inner();
    Ok(u64::from(reply.accepted_count))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_producer_api_admits_only_clients_with_a_certificate_of_the_configured_ca() {
    let ours = AgentCerts::mint().unwrap();
    let theirs = AgentCerts::mint().unwrap();
    let h = Harness::start(|_| {}).await;
    let pki = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: &str| {
        let path = pki.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    let ssl = json!({
        "enabled": true,
        "certificate": write("server.pem", &ours.server_cert_pem),
        "key": write("server.key", &ours.server_key_pem),
        "certificate_authorities": [write("ca.pem", &ours.ca_pem)],
    });
    let port = free_port();
    let server = format!("127.0.0.1:{port}");
    let unix_server = format!("unix://{}/tls.sock", h.data().display());
    h.agent.apply(&revision(
        1,
        vec![
            h.output_unit(),
            input(
                "input-tls",
                "filestream-tls",
                json!({"server": server, "ssl": ssl}),
            ),
            // `ssl.enabled: true` applies on unix sockets too.
            input(
                "input-unix",
                "filestream-unix",
                json!({"server": unix_server, "ssl": ssl}),
            ),
            // Not loopback and no ssl: refused before anything is bound.
            input(
                "input-open",
                "filestream-open",
                json!({"server": format!("0.0.0.0:{}", free_port())}),
            ),
            // Nor with the agent's `ssl` block, which without `enabled` means plaintext.
            input(
                "input-open-agent-ssl",
                "filestream-open-agent-ssl",
                json!({"server": format!("0.0.0.0:{}", free_port()), "ssl": {
                    "certificate_authorities": [ours.ca_pem], "certificate": ours.server_cert_pem,
                    "key": ours.server_key_pem,
                }}),
            ),
        ],
    ));
    h.agent
        .wait_for_states(
            WAIT,
            &[
                ("input-tls", UnitType::Input),
                ("input-unix", UnitType::Input),
            ],
            State::Healthy,
        )
        .await
        .unwrap();
    let failed = h
        .agent
        .wait_for(WAIT, "input-open FAILED", |e| {
            matches!(e, AgentEvent::UnitObserved { id, state: State::Failed, .. } if id == "input-open")
        })
        .await
        .unwrap();
    let AgentEvent::UnitObserved { message, .. } = failed else {
        unreachable!()
    };
    assert!(message.contains("`ssl`"), "the error names ssl: {message}");
    let failed = h
        .agent
        .wait_for(WAIT, "input-open-agent-ssl FAILED", |e| {
            matches!(e, AgentEvent::UnitObserved { id, state: State::Failed, .. } if id == "input-open-agent-ssl")
        })
        .await
        .unwrap();
    let AgentEvent::UnitObserved { message, .. } = failed else {
        unreachable!()
    };
    assert!(
        message.contains("ssl.enabled"),
        "the error says how: {message}"
    );

    let trust_ours = || {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ours.ca_pem))
            .domain_name("localhost")
    };
    let signed_by_ours = Identity::from_pem(&ours.client_cert_pem, &ours.client_key_pem);
    let signed_by_theirs = Identity::from_pem(&theirs.client_cert_pem, &theirs.client_key_pem);

    assert_eq!(
        publish_tls(
            &server,
            "filestream-tls",
            trust_ours().identity(signed_by_ours)
        )
        .await,
        Ok(10),
        "a client certificate signed by the configured CA is admitted"
    );
    let without = publish_tls(&server, "filestream-tls", trust_ours()).await;
    assert!(
        without.is_err(),
        "a client without a certificate is refused: {without:?}"
    );
    let other_ca = publish_tls(
        &server,
        "filestream-tls",
        trust_ours().identity(signed_by_theirs),
    )
    .await;
    assert!(
        other_ca.is_err(),
        "a certificate of another CA is refused: {other_ca:?}"
    );
    assert_eq!(
        publish_tls(
            &unix_server,
            "filestream-unix",
            trust_ours().identity(Identity::from_pem(
                &ours.client_cert_pem,
                &ours.client_key_pem
            ))
        )
        .await,
        Ok(10),
        "mTLS over the unix socket"
    );
    let unix_without = publish_tls(&unix_server, "filestream-unix", trust_ours()).await;
    assert!(unix_without.is_err(), "{unix_without:?}");
    let mut plain = LoadgenOptions::new(&server, "filestream-tls", 10);
    plain.patience = Duration::from_secs(2);
    assert!(
        loadgen::run(&plain).await.is_err(),
        "a plaintext client gets nothing through"
    );

    // `dlq replay` reaches such a shipper only with a client certificate.
    let dlq = pki.path().join("dlq");
    let mut options = LoadgenOptions::new(&unix_server, "filestream-unix", 20);
    options.run = "replay-tls".into();
    {
        use agent_shipper::dlq::{
            DeadLetterQueue, DlqEntry, DlqSettings, Reason, StoragePolicy, SystemClock,
        };
        use prost::Message;
        let store = DeadLetterQueue::open(
            DlqSettings {
                dir: dlq.clone(),
                max_bytes: 1 << 30,
                storage_policy: StoragePolicy::DropNewer,
                retain_age: None,
                flush_interval: Duration::from_secs(5),
            },
            std::sync::Arc::new(SystemClock),
        )
        .unwrap();
        let entries: Vec<DlqEntry> = (0..20)
            .map(|seq| DlqEntry {
                event: loadgen::make_event(&options, seq).encode_to_vec().into(),
                reason: Reason {
                    status: Some(503),
                    error_type: "unavailable".into(),
                    message: "test".into(),
                },
                input_unit: "input-unix".into(),
                output_unit: "output-default".into(),
                revision: 1,
                dead_lettered_at_ms: 1_700_000_000_000,
            })
            .collect();
        assert_eq!(store.write(&entries).written, 20);
        store.flush();
    }
    let replay = |tls: &[&str]| {
        let mut command = tokio::process::Command::new(integration::shipper_binary().unwrap());
        command
            .args(["dlq", "--path"])
            .arg(&dlq)
            .args(["replay", "--server", &unix_server])
            .args(tls);
        async move {
            tokio::time::timeout(WAIT, command.output())
                .await
                .expect("replay finished in time")
                .unwrap()
        }
    };
    let refused = replay(&[]).await;
    assert!(!refused.status.success(), "plaintext replay is refused");
    let cert_alone = replay(&["--ssl-cert", "client.pem"]).await;
    let stderr = String::from_utf8_lossy(&cert_alone.stderr);
    assert!(
        !cert_alone.status.success() && stderr.contains("--ssl-ca"),
        "a certificate without its CA and key is a usage error naming them: {stderr}"
    );
    let client_cert = write("client.pem", &ours.client_cert_pem);
    let client_key = write("client.key", &ours.client_key_pem);
    let ca = pki.path().join("ca.pem").display().to_string();
    let replayed = replay(&[
        "--ssl-ca",
        &ca,
        "--ssl-cert",
        &client_cert,
        "--ssl-key",
        &client_key,
    ])
    .await;
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let expected: Vec<u64> = (0..20).collect();
    let counts = loadgen::wait_for_seqs_in_files(&[h.output_file()], "replay-tls", &expected, WAIT)
        .await
        .unwrap();
    assert_eq!(counts.len(), 20, "every replayed event reached the output");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_the_queue_and_the_dlq_are_owner_only() {
    let es = MockEs::start(MockEsOptions::default()).await.unwrap();
    es.add_api_key("modes", "modes-secret", &["logs-*-default"]);
    let h = Harness::start(|_| {}).await;
    let group_socket = h.data().join("group.sock");
    h.agent.apply(&revision(
        1,
        vec![
            output_unit(json!({
                "type": "elasticsearch", "hosts": [es.url()], "api_key": "modes:modes-secret",
                "dlq": {"flush_interval": "200ms"},
            })),
            h.input_unit("input-a", "filestream-a"),
            input(
                "input-g",
                "filestream-g",
                json!({"server": format!("unix://{}", group_socket.display()), "socket_mode": "0660"}),
            ),
        ],
    ));
    h.agent
        .wait_for_states(
            WAIT,
            &[
                ("output-default", UnitType::Output),
                ("input-a", UnitType::Input),
                ("input-g", UnitType::Input),
            ],
            State::Healthy,
        )
        .await
        .unwrap();
    let socket = h.data().join("shipper.sock");
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_socket());
    assert_eq!(mode(&socket), 0o600, "the default socket mode");
    assert_eq!(mode(&group_socket), 0o660, "socket_mode applies");

    // Events in the queue, and one in the DLQ (its namespace is not allowed: 403).
    let options = LoadgenOptions::new(&h.socket(), "filestream-a", 20);
    let mut events: Vec<_> = (0..20)
        .map(|seq| loadgen::make_event(&options, seq))
        .collect();
    if let Some(ds) = events[5].data_stream.as_mut() {
        ds.namespace = "forbidden".into();
    }
    let mut client = loadgen::connect(&h.socket()).await.unwrap();
    let reply = client
        .publish_events(PublishRequest {
            uuid: String::new(),
            events,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.accepted_count, 20);
    let deadline = tokio::time::Instant::now() + WAIT;
    let dlq = h.data().join("dlq");
    while !std::fs::read_dir(&dlq)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".dlq"))
        })
        .unwrap_or(false)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no sealed DLQ segment appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(client);
    let data = h.data().to_path_buf();
    h.agent
        .stop(Duration::from_secs(25))
        .await
        .expect("shipper exits after SIGTERM");

    let mut seen = Vec::new();
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                assert_eq!(
                    mode(&path),
                    0o700,
                    "{} is a directory the shipper made",
                    path.display()
                );
                stack.push(path);
            } else if kind.is_file() {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                seen.push(path.strip_prefix(&data).unwrap().display().to_string());
            }
        }
    }
    seen.sort();
    for expected in ["queue/lock", "queue/queue.id", "queue/checkpoint.json"] {
        assert!(
            seen.iter().any(|p| p == expected),
            "{expected} not in {seen:?}"
        );
    }
    assert!(
        seen.iter()
            .any(|p| p.starts_with("queue/") && p.ends_with(".seg")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|p| p.starts_with("dlq/")), "{seen:?}");
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_the_unit_messages_the_diagnostics_or_the_data_dir() {
    const KEY_ID: &str = "leak-key";
    const WRONG_KEY: &str = "Wr0ng-K3y-5ecret-e1f2";
    const USER: &str = "leak-user";
    const PASSWORD: &str = "Pa55-w0rd-Secret-a9b8";
    let es = MockEs::start(MockEsOptions::default()).await.unwrap();
    es.add_user(USER, PASSWORD, &["logs-*-default"]);
    let h = Harness::start(|_| {}).await;
    let output = |auth: serde_json::Value| {
        let mut config = json!({
            "type": "elasticsearch", "hosts": [es.url()], "degraded_timeout": "1s",
            "backoff": {"init": "100ms", "max": "300ms"},
        });
        for (key, value) in auth.as_object().unwrap() {
            config[key] = value.clone();
        }
        UnitSpec {
            log_level: UnitLogLevel::Trace,
            ..output_unit(config)
        }
    };
    let api_key = format!("{KEY_ID}:{WRONG_KEY}");
    let input = UnitSpec {
        log_level: UnitLogLevel::Trace,
        ..h.input_unit("input-a", "filestream-a")
    };

    // Both credentials at once: a config error that must not quote either.
    h.agent.apply(&revision(
        1,
        vec![
            output(json!({"api_key": api_key, "username": USER, "password": PASSWORD})),
            input.clone(),
        ],
    ));
    h.agent
        .wait_for(WAIT, "output FAILED", |e| {
            matches!(e, AgentEvent::UnitObserved { id, state: State::Failed, .. } if id == "output-default")
        })
        .await
        .unwrap();

    // An api key Elasticsearch does not know: 401 on every request, DEGRADED.
    h.agent.apply(&revision(
        2,
        vec![output(json!({"api_key": api_key})), input.clone()],
    ));
    h.agent
        .wait_for_states(WAIT, &[("input-a", UnitType::Input)], State::Healthy)
        .await
        .unwrap();
    let mut options = LoadgenOptions::new(&h.socket(), "filestream-a", 50);
    options.run = "secrets".into();
    let report = loadgen::run(&options).await.unwrap();
    assert_eq!(report.promised.len(), 50);
    h.agent
        .wait_for(WAIT, "output DEGRADED by the 401", |e| {
            matches!(e, AgentEvent::UnitObserved { id, state: State::Degraded, .. } if id == "output-default")
        })
        .await
        .unwrap();
    let diagnostics_401 = h.agent.diagnostics().await.unwrap();

    // Basic auth that works: the queued events go out.
    h.agent.apply(&revision(
        3,
        vec![
            output(json!({"username": USER, "password": PASSWORD})),
            input,
        ],
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while es.loadgen_counts("secrets").len() < 50 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events not delivered after the fix"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let diagnostics = h.agent.diagnostics().await.unwrap();
    let data = h.data().to_path_buf();
    let history = h.agent.history();
    let exit = h.agent.stop(Duration::from_secs(25)).await.unwrap();

    let b64 = |text: String| base64::engine::general_purpose::STANDARD.encode(text);
    let secrets = [
        WRONG_KEY.to_string(),
        PASSWORD.to_string(),
        b64(api_key.clone()),
        b64(format!("{USER}:{PASSWORD}")),
    ];
    let mut places: Vec<(String, Vec<u8>)> = vec![(
        "the mock agent's record of the run (shipper stderr, unit messages)".into(),
        format!("{history:?} {exit:?}").into_bytes(),
    )];
    for (label, response) in [
        ("diagnostics during the 401s", &diagnostics_401),
        ("diagnostics", &diagnostics),
    ] {
        places.push((format!("{label}: result"), response.result.clone()));
        for file in &response.diagnostic {
            places.push((format!("{label}: {}", file.filename), file.content.clone()));
        }
    }
    let mut stack = vec![data];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                places.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    assert!(
        places.len() > 5,
        "the run left files and diagnostics to check"
    );
    let logs = String::from_utf8_lossy(&places[0].1).into_owned();
    assert!(logs.contains("401"), "the 401 path was taken and logged");
    for (place, bytes) in &places {
        for secret in &secrets {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "a secret ({}…) is in {place}", &secret[..4]);
        }
    }
    es.stop().await;
}

/// An event as Beats' shipper output (libbeat/outputs/shipper, 8.x) builds it: `source`
/// from `@metadata.input_id` / `stream_id` (set by Beats' agent manager to the policy
/// input's and stream's ids), `data_stream` from the event's `data_stream.*` fields,
/// `metadata` the event's `@metadata`, `fields` its fields.
fn beats_event(input_id: Option<&str>, stream_id: &str, dataset: &str, seq: u64) -> Event {
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.into())),
    };
    let object = |pairs: Vec<(&str, Value)>| Value {
        kind: Some(Kind::StructValue(Struct {
            data: pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        })),
    };
    let mut metadata = vec![
        ("beat", text("filebeat")),
        ("type", text("_doc")),
        ("version", text("8.15.0")),
        ("stream_id", text(stream_id)),
    ];
    if let Some(id) = input_id {
        metadata.push(("input_id", text(id)));
    }
    let fields = object(vec![
        ("message", text(&format!("beats line {seq}"))),
        (
            "seq",
            Value {
                kind: Some(Kind::Uint64Value(seq)),
            },
        ),
        (
            "data_stream",
            object(vec![
                ("type", text("logs")),
                ("dataset", text(dataset)),
                ("namespace", text("default")),
            ]),
        ),
        ("event", object(vec![("dataset", text(dataset))])),
        ("input", object(vec![("type", text("filestream"))])),
    ]);
    let struct_of = |value: Value| match value.kind {
        Some(Kind::StructValue(s)) => Some(s),
        _ => None,
    };
    Event {
        timestamp: Some(std::time::SystemTime::now().into()),
        metadata: struct_of(object(metadata)),
        fields: struct_of(fields),
        source: Some(Source {
            input_id: input_id.unwrap_or_default().into(),
            stream_id: stream_id.into(),
        }),
        data_stream: Some(DataStream {
            r#type: "logs".into(),
            dataset: dataset.into(),
            namespace: "default".into(),
        }),
    }
}

/// An INPUT unit as elastic-agent 8.15's `componentToShipperConfig` and `injectShipperConn`
/// write it: the component's id, its units `<component>-<policy input id>` with the policy
/// input as `config`, the shared `server`, and this unit's own pair in `ssl`.
fn agent_input(
    component: &str,
    policy_input: serde_json::Value,
    server: &str,
    ssl: serde_json::Value,
) -> UnitSpec {
    let unit_id = format!(
        "{component}-{}",
        policy_input["id"]
            .as_str()
            .unwrap_or(component.split('-').next().unwrap())
    );
    UnitSpec {
        id: component.into(),
        kind: UnitType::Input,
        config: json!({
            "id": component, "type": "shipper",
            "units": [{"id": unit_id, "config": policy_input}],
            "server": server, "ssl": ssl,
        }),
        log_level: UnitLogLevel::Info,
    }
}

async fn publish_plain(server: &str, events: Vec<Event>) -> Result<u32, tonic::Status> {
    let mut client = loadgen::connect(server).await.unwrap();
    client
        .publish_events(PublishRequest {
            uuid: String::new(),
            events,
        })
        .await
        .map(|reply| reply.into_inner().accepted_count)
}

async fn wait_for_documents(
    es: &MockEs,
    data_stream: &str,
    count: usize,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let documents = es.documents(data_stream);
        if documents.len() >= count {
            return documents.into_iter().map(|(_, doc)| doc).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{data_stream}: {} of {count} documents indexed",
            documents.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beats_publishes_in_plaintext_with_the_agents_ssl_block_and_is_routed_by_its_ids() {
    let es = MockEs::start(MockEsOptions::default()).await.unwrap();
    es.add_api_key("beats", "beats-secret", &["logs-*-default"]);
    let pki = UnitPairs::mint(&["filestream-default", "log-default"]).unwrap();
    let h = Harness::start(|_| {}).await;
    // One socket for every INPUT unit, as the agent's connectShippers does.
    let server = h.socket();
    let filestream = agent_input(
        "filestream-default",
        json!({"id": "filestream-syslog-1", "type": "filestream",
               "streams": [{"id": "filestream-syslog-1.syslog", "paths": ["/var/log/syslog"]}]}),
        &server,
        pki.ssl_block("filestream-default"),
    );
    // A policy input without `id`: Beats sends its events with no input id.
    let log = agent_input(
        "log-default",
        json!({"type": "log", "streams": [{"paths": ["/var/log/app.log"]}]}),
        &server,
        pki.ssl_block("log-default"),
    );
    let output = output_unit(json!({
        "type": "elasticsearch", "hosts": [es.url()], "api_key": "beats:beats-secret",
    }));
    h.agent
        .apply(&revision(1, vec![output.clone(), filestream.clone(), log]));
    h.agent
        .wait_for_states(
            WAIT,
            &[
                ("output-default", UnitType::Output),
                ("filestream-default", UnitType::Input),
                ("log-default", UnitType::Input),
            ],
            State::Healthy,
        )
        .await
        .unwrap();
    let socket = h.data().join("shipper.sock");
    assert_eq!(
        mode(&socket),
        0o600,
        "plaintext is protected by the socket's mode"
    );
    assert!(
        h.shipper_logs()
            .iter()
            .any(|line| line.contains("Producer API listening: plaintext")),
        "the log says which transport is served"
    );

    // A plaintext client, as Beats dials without `ssl.enabled: true`.
    let syslog: Vec<Event> = (0..5)
        .map(|seq| {
            beats_event(
                Some("filestream-syslog-1"),
                "filestream-syslog-1.syslog",
                "system.syslog",
                seq,
            )
        })
        .collect();
    assert_eq!(publish_plain(&server, syslog).await.unwrap(), 5);
    // Routed by the stream id alone when the input id is one we do not know.
    let by_stream = vec![beats_event(
        Some("renamed"),
        "filestream-syslog-1.syslog",
        "system.syslog",
        5,
    )];
    assert_eq!(publish_plain(&server, by_stream).await.unwrap(), 1);
    let unnamed: Vec<Event> = (0..3)
        .map(|seq| beats_event(None, "", "app", seq))
        .collect();
    assert_eq!(publish_plain(&server, unnamed).await.unwrap(), 3);
    let stranger = publish_plain(&server, vec![beats_event(Some("nobody"), "", "app", 0)])
        .await
        .unwrap_err();
    assert_eq!(
        stranger.code(),
        tonic::Code::FailedPrecondition,
        "{stranger:?}"
    );

    let docs = wait_for_documents(&es, "logs-system.syslog-default", 6).await;
    assert_eq!(docs.len(), 6);
    assert!(
        docs.iter().any(|d| d["message"] == "beats line 0"),
        "{docs:?}"
    );
    wait_for_documents(&es, "logs-app-default", 3).await;

    // Each event counted for its own unit: without log-default, its events have no route
    // while filestream's still do.
    h.agent.apply(&revision(2, vec![output, filestream]));
    h.agent
        .wait_for(WAIT, "log-default STOPPED", |e| {
            matches!(e, AgentEvent::UnitObserved { id, state: State::Stopped, .. } if id == "log-default")
        })
        .await
        .unwrap();
    let refused = publish_plain(&server, vec![beats_event(None, "", "app", 3)])
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    let syslog = vec![beats_event(
        Some("filestream-syslog-1"),
        "filestream-syslog-1.syslog",
        "system.syslog",
        6,
    )];
    assert_eq!(publish_plain(&server, syslog).await.unwrap(), 1);
    wait_for_documents(&es, "logs-system.syslog-default", 7).await;
    h.stop().await;
    es.stop().await;
}

/// Checks the server's chain but not its name: what a client that asks for `localhost`
/// (grpc-go's name for a unix socket) and checks only the chain sees.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(RustlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A TLS client over the unix socket at `path` asking for `sni`, presenting `identity`
/// (certificate PEM, key PEM), checking the server's name too unless `chain_only`; the
/// leaf certificate the server presented.
async fn presented_leaf(
    path: &Path,
    ca_pem: &str,
    sni: &str,
    identity: (&str, &str),
    chain_only: bool,
) -> CertificateDer<'static> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let roots = Arc::new(roots);
    let chain = CertificateDer::pem_slice_iter(identity.0.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(identity.1.as_bytes()).unwrap();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if chain_only {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
    } else {
        builder.with_root_certificates(roots)
    };
    let mut config = builder.with_client_auth_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let stream = tokio::net::UnixStream::connect(path).await.unwrap();
    let tls = tokio::time::timeout(
        WAIT,
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(sni.to_string()).unwrap(), stream),
    )
    .await
    .expect("handshake in time")
    .expect("handshake succeeds");
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]), "gRPC's ALPN");
    session.peer_certificates().unwrap()[0].clone()
}

fn leaf_of(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ssl_enabled_each_input_unit_on_one_server_presents_its_own_certificate_by_sni() {
    let pki = UnitPairs::mint(&["filestream-default", "log-default"]).unwrap();
    let h = Harness::start(|_| {}).await;
    let server = h.socket();
    let enabled = |unit: &str| {
        let mut ssl = pki.ssl_block(unit);
        ssl["enabled"] = json!(true);
        ssl
    };
    let filestream = agent_input(
        "filestream-default",
        json!({"id": "filestream-syslog-1", "type": "filestream", "streams": [{"id": "filestream-syslog-1.syslog"}]}),
        &server,
        enabled("filestream-default"),
    );
    let log = agent_input(
        "log-default",
        json!({"id": "log-app-1", "type": "log", "streams": [{"id": "log-app-1.app"}]}),
        &server,
        enabled("log-default"),
    );
    h.agent.apply(&revision(
        1,
        vec![h.output_unit(), filestream.clone(), log.clone()],
    ));
    h.agent
        .wait_for_states(
            WAIT,
            &[
                ("filestream-default", UnitType::Input),
                ("log-default", UnitType::Input),
            ],
            State::Healthy,
        )
        .await
        .unwrap();
    assert!(
        h.shipper_logs()
            .iter()
            .any(|line| line.contains("Producer API listening: mutual TLS")),
        "the log says which transport is served"
    );
    let socket = h.data().join("shipper.sock");
    let pair = |unit: usize| {
        let (_, cert, key) = &pki.pairs[unit];
        (cert.as_str(), key.as_str())
    };
    let a = presented_leaf(&socket, &pki.ca_pem, "filestream-default", pair(0), false).await;
    let b = presented_leaf(&socket, &pki.ca_pem, "log-default", pair(1), false).await;
    assert_ne!(a, b, "two units on one server, two certificates");
    assert_eq!(
        a,
        leaf_of(pair(0).0),
        "filestream-default's own certificate"
    );
    assert_eq!(b, leaf_of(pair(1).0), "log-default's own certificate");
    // A name no unit's certificate holds (what grpc-go sends on a unix socket) gets the
    // longest-attached unit's.
    let default = presented_leaf(&socket, &pki.ca_pem, "localhost", pair(1), true).await;
    assert_eq!(default, a, "the first unit attached is the default");

    // gRPC clients: with the unit's pair and name, Beats-shaped events are accepted; without
    // a client certificate the handshake is refused.
    let tls_for = |unit: usize| {
        let (name, cert, key) = &pki.pairs[unit];
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
            .domain_name(name.clone())
            .identity(Identity::from_pem(cert, key))
    };
    let mut log_client = connect_tls(&server, tls_for(1)).await.unwrap();
    let publish = |events: Vec<Event>| PublishRequest {
        uuid: String::new(),
        events,
    };
    let app = |seq| beats_event(Some("log-app-1"), "log-app-1.app", "app", seq);
    let reply = log_client
        .publish_events(publish(vec![app(0)]))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().accepted_count, 1);
    let without = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("log-default");
    let refused = match connect_tls(&server, without).await {
        Err(err) => err,
        Ok(mut client) => client
            .publish_events(publish(vec![app(1)]))
            .await
            .unwrap_err()
            .to_string(),
    };
    assert!(
        !refused.is_empty(),
        "a client without a certificate is refused"
    );
    let plain = publish_plain_result(&server, vec![app(1)]).await;
    assert!(
        plain.is_err(),
        "a plaintext client gets nothing through: {plain:?}"
    );
    // loadgen, told to use TLS, publishes with the unit's pair (as `--ssl-*` does).
    let mut options = LoadgenOptions::new(&server, "log-app-1", 20);
    options.tls = Some(tls_for(1));
    let report = loadgen::run(&options).await.unwrap();
    assert_eq!(report.promised.len(), 20, "{report:?}");

    // filestream-default leaves: its certificate is no longer served, and log-default's
    // connection, made before, keeps publishing.
    h.agent
        .apply(&revision(2, vec![h.output_unit(), log.clone()]));
    h.agent
        .wait_for(WAIT, "filestream-default STOPPED", |e| {
            matches!(e, AgentEvent::UnitObserved { id, state: State::Stopped, .. } if id == "filestream-default")
        })
        .await
        .unwrap();
    let reply = log_client
        .publish_events(publish(vec![app(2)]))
        .await
        .unwrap();
    assert_eq!(
        reply.into_inner().accepted_count,
        1,
        "the established connection is kept"
    );
    let now = presented_leaf(&socket, &pki.ca_pem, "log-default", pair(1), false).await;
    assert_eq!(now, b);
    let default = presented_leaf(&socket, &pki.ca_pem, "localhost", pair(1), true).await;
    assert_eq!(default, b, "the remaining unit is the default now");
    // It comes back: its certificate is served again by its name.
    let back_at = h.agent.history().len();
    h.agent
        .apply(&revision(3, vec![h.output_unit(), log, filestream]));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !h.agent.history()[back_at..]
        .iter()
        .any(observed_state("filestream-default", State::Healthy))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "filestream-default HEALTHY again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = presented_leaf(&socket, &pki.ca_pem, "filestream-default", pair(0), false).await;
    assert_eq!(again, a);
    let default = presented_leaf(&socket, &pki.ca_pem, "localhost", pair(0), true).await;
    assert_eq!(
        default, b,
        "the default stays with the longest-attached unit"
    );
    h.stop().await;
}

async fn publish_plain_result(server: &str, events: Vec<Event>) -> Result<u32, String> {
    let mut client = loadgen::connect(server).await.map_err(|e| e.to_string())?;
    tokio::time::timeout(
        WAIT,
        client.publish_events(PublishRequest {
            uuid: String::new(),
            events,
        }),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map(|reply| reply.into_inner().accepted_count)
    .map_err(|status| status.to_string())
}
