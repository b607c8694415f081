//! End-to-end: an OUTPUT unit written as Fleet writes the Elasticsearch output block.
//!
//! The block has a `preset`, `headers`, a `proxy_url` with `proxy_headers`, an
//! `ssl.ca_trusted_fingerprint` instead of a CA file, `protocol`, `path`, `parameters`, a
//! Beats key without meaning here and keys the shipper does not know. The unit must be
//! HEALTHY and each setting must be seen in effect: at mock-es, at the proxy, in
//! DIAGNOSTICS and in the log.

mod common;

use agent_shipper::proto::agent::{State, UnitType};
use common::{output_unit, revision, Harness, WAIT};
use integration::agent::AgentEvent;
use integration::certs::AgentCerts;
use integration::loadgen::{self, LoadgenOptions};
use integration::mock_es::{MockEs, MockEsOptions, TlsIdentity};
use integration::proxy::ForwardProxy;
use serde_json::json;
use std::time::Duration;
use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};

const KEY_ID: &str = "fleet-key";
const KEY_SECRET: &str = "fleet-Secret-1a2b3c";
const HEADER_VALUE: &str = "tenant-token-7q8w9e";
const PROXY_TOKEN: &str = "proxy-token-4r5t6y";

/// Hex SHA-256 of the first certificate in `pem`, as Elasticsearch prints its CA's.
fn fingerprint(pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    ring::digest::digest(&ring::digest::SHA256, der.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first value under `key` anywhere in a JSON document.
fn find<'a>(value: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map
            .get(key)
            .or_else(|| map.values().find_map(|v| find(v, key))),
        serde_json::Value::Array(items) => items.iter().find_map(|v| find(v, key)),
        _ => None,
    }
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
async fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_written_output_block_is_healthy_and_each_setting_takes_effect() {
    let certs = AgentCerts::mint().unwrap();
    // As Elasticsearch's auto-configured TLS: the server presents its CA in the chain.
    let es = MockEs::start(MockEsOptions {
        tls: Some(TlsIdentity {
            cert_pem: format!("{}{}", certs.server_cert_pem, certs.ca_pem),
            key_pem: certs.server_key_pem.clone(),
        }),
        ..MockEsOptions::default()
    })
    .await
    .unwrap();
    es.add_api_key(KEY_ID, KEY_SECRET, &["logs-*-default"]);
    let proxy = ForwardProxy::start(es.addr()).await.unwrap();
    // A closed port: the host is reachable only through the proxy, which tunnels every
    // CONNECT to mock-es.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };

    let h = Harness::start(|_| {}).await;
    let output = output_unit(json!({
        "type": "elasticsearch",
        "hosts": [format!("localhost:{closed_port}")],
        "protocol": "https",
        "path": "/prefix",
        "parameters": {"refresh": "false"},
        "api_key": format!("{KEY_ID}:{KEY_SECRET}"),
        "preset": "throughput",
        "headers": {"X-Fleet-Tenant": HEADER_VALUE},
        "proxy_url": proxy.url(),
        "proxy_headers": {"X-Proxy-Token": PROXY_TOKEN},
        // Dotted, as Fleet writes it, beside a nested `ssl` block.
        "ssl.ca_trusted_fingerprint": fingerprint(&certs.ca_pem),
        "ssl": {"renegotiation": "never"},
        "allow_older_versions": true,
        "index": "not-used-by-the-shipper",
    }));
    h.agent.apply(&revision(
        1,
        vec![output, h.input_unit("input-a", "filestream-a")],
    ));
    h.agent
        .wait_for_states(
            WAIT,
            &[
                ("output-default", UnitType::Output),
                ("input-a", UnitType::Input),
            ],
            State::Healthy,
        )
        .await
        .unwrap();

    let mut options = LoadgenOptions::new(&h.socket(), "filestream-a", 300);
    options.run = "fleet".into();
    let report = loadgen::run(&options).await.unwrap();
    assert_eq!(report.promised.len(), 300, "{report:?}");
    eventually(Duration::from_secs(60), "every event indexed", || {
        let counts = es.loadgen_counts("fleet");
        report.promised.iter().all(|seq| counts.contains_key(seq))
    })
    .await;

    // headers, path, parameters: on every request mock-es saw.
    let requests = es.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(
            request.headers.get("x-fleet-tenant").map(String::as_str),
            Some(HEADER_VALUE),
            "{request:?}"
        );
        assert!(
            request.path.starts_with("/prefix/_bulk?") && request.path.contains("refresh=false"),
            "{}",
            request.path
        );
    }
    // proxy_url, proxy_headers: the only way to the closed port is the proxy's tunnel.
    let tunnels = proxy.tunnels();
    assert!(!tunnels.is_empty());
    for tunnel in &tunnels {
        assert_eq!(tunnel.target, format!("localhost:{closed_port}"));
        assert_eq!(
            tunnel.headers.get("x-proxy-token").map(String::as_str),
            Some(PROXY_TOKEN)
        );
    }

    // preset: the effective config in DIAGNOSTICS, header values redacted.
    let diagnostics = h.agent.diagnostics().await.unwrap();
    let config = diagnostics
        .diagnostic
        .iter()
        .find(|file| file.filename == "config.json")
        .expect("DIAGNOSTICS has config.json");
    let config: serde_json::Value = serde_json::from_slice(&config.content).unwrap();
    let output = &config["output"]["config"];
    assert_eq!(output["preset"], "throughput", "{output}");
    assert_eq!(output["workers"], 4, "{output}");
    assert_eq!(output["bulk_max_size"], 1600, "{output}");
    assert_eq!(output["idle_connection_timeout"], "15s", "{output}");
    assert_eq!(
        output["headers"]["X-Fleet-Tenant"], "[redacted]",
        "{output}"
    );
    for file in &diagnostics.diagnostic {
        let text = String::from_utf8_lossy(&file.content);
        for secret in [HEADER_VALUE, PROXY_TOKEN, KEY_SECRET] {
            assert!(!text.contains(secret), "{secret} is in {}", file.filename);
        }
    }

    // The log: the output started with the preset's 4 workers; one warning per key the
    // shipper ignores, each named with its full path; no header value anywhere.
    let logs = h.shipper_logs();
    let started = logs
        .iter()
        .find(|line| line.contains("elasticsearch output started"))
        .expect("the output logged its start");
    let started: serde_json::Value = serde_json::from_str(started).unwrap();
    assert_eq!(find(&started, "workers"), Some(&json!(4)), "{started}");
    for key in ["ssl.renegotiation", "index", "allow_older_versions"] {
        let warned = logs
            .iter()
            .filter(|line| line.contains(&format!("config key `{key}`")))
            .count();
        assert_eq!(
            warned,
            1,
            "one warning naming `{key}`:\n{}",
            logs.join("\n")
        );
    }
    for secret in [HEADER_VALUE, PROXY_TOKEN, KEY_SECRET] {
        assert!(
            !logs.iter().any(|line| line.contains(secret)),
            "{secret} is in the log"
        );
    }
    let failed = h.position(|e| {
        matches!(e, AgentEvent::UnitObserved { id, state: State::Failed, .. } if id == "output-default")
    });
    assert_eq!(failed, None, "the output unit never reported FAILED");

    h.stop().await;
    proxy.stop().await;
    es.stop().await;
}

/// Runs a standalone shipper with `output` and `env`, publishes 50 events, and waits until
/// mock-es indexed them all; then stops it.
async fn ship_standalone(
    es: &MockEs,
    output: serde_json::Value,
    env: &[(&str, String)],
    run: &str,
) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::Builder::new().prefix("shp").tempdir().unwrap();
    let server = format!("unix://{}/s.sock", dir.path().display());
    let mut config = output;
    config["server"] = json!(server);
    let path = dir.path().join("shipper.yml");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    let mut command = tokio::process::Command::new(integration::shipper_binary().unwrap());
    command
        .arg("-E")
        .arg(format!("path.data={}", dir.path().join("data").display()))
        .args(["run", "-c"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        command.env_remove(var);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("Producer API listening") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(ready, Ok(true)),
        "the standalone shipper did not come up"
    );
    // Keep reading stderr so the shipper never blocks on a full pipe.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let mut options = LoadgenOptions::new(&server, "input-1", 50);
    options.run = run.into();
    let report = loadgen::run(&options).await.unwrap();
    assert_eq!(report.promised.len(), 50, "{report:?}");
    eventually(Duration::from_secs(30), "every event indexed", || {
        let counts = es.loadgen_counts(run);
        report.promised.iter().all(|seq| counts.contains_key(seq))
    })
    .await;
    let _ = child.kill().await;
    drain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_proxies_skip_loopback_and_proxy_disable_turns_every_proxy_off() {
    let certs = AgentCerts::mint().unwrap();
    let es = MockEs::start(MockEsOptions {
        tls: Some(TlsIdentity {
            cert_pem: certs.server_cert_pem.clone(),
            key_pem: certs.server_key_pem.clone(),
        }),
        ..MockEsOptions::default()
    })
    .await
    .unwrap();
    es.add_api_key(KEY_ID, KEY_SECRET, &["logs-*-default"]);
    let proxy = ForwardProxy::start(es.addr()).await.unwrap();
    let output = |extra: serde_json::Value| {
        let mut block = json!({
            "type": "elasticsearch",
            "hosts": [format!("https://localhost:{}", es.addr().port())],
            "api_key": format!("{KEY_ID}:{KEY_SECRET}"),
            "ssl": {"certificate_authorities": [certs.ca_pem.clone()]},
        });
        for (key, value) in extra.as_object().unwrap() {
            block[key] = value.clone();
        }
        block
    };
    // As Go's ProxyFromEnvironment: HTTPS_PROXY applies, but never to a loopback host.
    ship_standalone(
        &es,
        output(json!({})),
        &[("HTTPS_PROXY", proxy.url())],
        "env",
    )
    .await;
    assert_eq!(
        proxy.tunnels(),
        [],
        "a loopback host went through HTTPS_PROXY"
    );
    // proxy_disable wins over proxy_url and the environment.
    ship_standalone(
        &es,
        output(json!({"proxy_url": proxy.url(), "proxy_disable": true})),
        &[("HTTPS_PROXY", proxy.url())],
        "disabled",
    )
    .await;
    assert_eq!(
        proxy.tunnels(),
        [],
        "proxy_disable: true still used a proxy"
    );
    // The same block without proxy_disable goes through the proxy: the checks above can fail.
    ship_standalone(
        &es,
        output(json!({"proxy_url": proxy.url()})),
        &[],
        "proxied",
    )
    .await;
    assert!(!proxy.tunnels().is_empty());
    proxy.stop().await;
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_ssl_certificate_and_ssl_key_is_presented_to_elasticsearch() {
    let certs = AgentCerts::mint().unwrap();
    // mock-es refuses a handshake without a client certificate signed by the test CA.
    let es = MockEs::start(MockEsOptions {
        tls: Some(TlsIdentity {
            cert_pem: certs.server_cert_pem.clone(),
            key_pem: certs.server_key_pem.clone(),
        }),
        client_ca_pem: Some(certs.ca_pem.clone()),
        ..MockEsOptions::default()
    })
    .await
    .unwrap();
    es.add_api_key(KEY_ID, KEY_SECRET, &["logs-*-default"]);
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("client.key");
    std::fs::write(&key_path, &certs.client_key_pem).unwrap();
    // The certificate inline, the key as a file: both forms Beats accepts.
    let output = json!({
        "type": "elasticsearch",
        "hosts": [format!("https://localhost:{}", es.addr().port())],
        "api_key": format!("{KEY_ID}:{KEY_SECRET}"),
        "ssl": {
            "certificate_authorities": [certs.ca_pem.clone()],
            "certificate": certs.client_cert_pem.clone(),
            "key": key_path,
        },
    });
    ship_standalone(&es, output, &[], "pki").await;
    es.stop().await;
}
