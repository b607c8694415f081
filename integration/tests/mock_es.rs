//! mock-es driven directly over HTTP on 127.0.0.1: statuses, auth, encodings, faults,
//! pause/resume, loadgen duplicate counting and TLS.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use integration::mock_es::{Faults, MockEs, MockEsOptions, TlsIdentity};
use serde_json::{json, Value};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::rustls;

const WAIT: Duration = Duration::from_secs(10);
const DS: &str = "logs-app-default";

/// One answered request.
struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// A request on a fresh connection; `Err` for connection-level failures.
async fn send_on<S>(
    io: S,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> anyhow::Result<Answer>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(io)).await?;
    let driver = tokio::spawn(conn);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body)))?)
        .await;
    let result = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.into_body().collect().await?.to_bytes();
            Ok(Answer {
                status,
                headers,
                body,
            })
        }
        Err(err) => Err(err.into()),
    };
    drop(sender);
    let _ = driver.await;
    result
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> anyhow::Result<Answer> {
    timeout(WAIT, async {
        let stream = TcpStream::connect(addr).await?;
        send_on(stream, method, path, headers, body).await
    })
    .await?
}

fn api_key(id: &str, key: &str) -> (&'static str, String) {
    (
        "authorization",
        format!(
            "ApiKey {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{key}"))
        ),
    )
}

fn ndjson() -> (&'static str, String) {
    ("content-type", "application/x-ndjson".to_string())
}

/// `create` lines for (index, id, document).
fn bulk_body(items: &[(&str, Option<&str>, Value)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (index, id, doc) in items {
        let action = match id {
            Some(id) => json!({"create": {"_index": index, "_id": id}}),
            None => json!({"create": {"_index": index}}),
        };
        body.extend_from_slice(action.to_string().as_bytes());
        body.push(b'\n');
        body.extend_from_slice(doc.to_string().as_bytes());
        body.push(b'\n');
    }
    body
}

fn doc(n: u64) -> Value {
    json!({"@timestamp": "2026-01-01T00:00:00Z", "message": format!("event {n}")})
}

fn statuses(answer: &Answer) -> Vec<u64> {
    answer.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["create"]["status"].as_u64().expect("status"))
        .collect()
}

async fn started() -> MockEs {
    let es = timeout(WAIT, MockEs::start(MockEsOptions::default()))
        .await
        .expect("in time")
        .expect("starts");
    es.add_api_key("k1", "s1", &["logs-*-default"]);
    es
}

async fn bulk(es: &MockEs, body: Vec<u8>) -> Answer {
    send(
        es.addr(),
        "POST",
        "/_bulk",
        &[api_key("k1", "s1"), ndjson()],
        body,
    )
    .await
    .expect("answered")
}

async fn stop(es: MockEs) {
    timeout(WAIT, es.stop()).await.expect("stops in time");
}

#[tokio::test]
async fn create_counts_and_conflicts() {
    let es = started().await;
    let body = bulk_body(&[(DS, Some("a"), doc(1)), (DS, Some("b"), doc(2))]);
    let answer = bulk(&es, body.clone()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer
            .headers
            .get("x-elastic-product")
            .map(|v| v.as_bytes()),
        Some(&b"Elasticsearch"[..])
    );
    let value = answer.json();
    assert_eq!(value["errors"], false);
    let first = &value["items"][0]["create"];
    assert_eq!(first["status"], 201);
    assert_eq!(first["result"], "created");
    assert_eq!(first["_id"], "a");
    assert_eq!(first["_index"], ".ds-logs-app-default-2026.11.22-000001");
    assert_eq!(first["_version"], 1);
    assert_eq!(value["items"][1]["create"]["_seq_no"], 1);
    assert_eq!(es.counts().get(DS), Some(&2));

    let count = send(
        es.addr(),
        "GET",
        "/logs-app-default/_count",
        &[api_key("k1", "s1")],
        vec![],
    )
    .await
    .expect("answered");
    assert_eq!(count.json()["count"], 2);

    // The same _ids again: 409 each, nothing more indexed.
    let again = bulk(&es, body).await;
    let value = again.json();
    assert_eq!(value["errors"], true);
    assert_eq!(statuses(&again), vec![409, 409]);
    assert_eq!(
        value["items"][0]["create"]["error"]["type"],
        "version_conflict_engine_exception"
    );
    assert_eq!(
        value["items"][0]["create"]["error"]["reason"],
        "[a]: version conflict, document already exists (current version [1])"
    );
    assert_eq!(es.counts().get(DS), Some(&2));
    let docs = es.documents(DS);
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].0, "a");
    assert_eq!(docs[1].1["message"], "event 2");

    // Without _id: one is generated.
    let generated = bulk(&es, bulk_body(&[(DS, None, doc(3))])).await;
    let id = generated.json()["items"][0]["create"]["_id"].clone();
    assert!(id.as_str().is_some_and(|id| id.len() == 20), "{id}");
    let stats = es.stats();
    assert_eq!(stats.indexed, 3);
    assert_eq!(stats.conflicts_409, 2);
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.bulk_items, 5);
    let log = es.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].items, 2);
    assert_eq!(log[0].status, 200);
    assert_eq!(log[0].content_type.as_deref(), Some("application/x-ndjson"));
    assert!(log[0]
        .authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("ApiKey ")));
    stop(es).await;
}

#[tokio::test]
async fn data_stream_rules_per_item() {
    let es = started().await;
    let mut body = bulk_body(&[
        (DS, Some("ok"), doc(1)),
        ("metrics-app-default", Some("x"), doc(2)),
        (DS, Some("no-ts"), json!({"message": "no timestamp"})),
    ]);
    body.extend_from_slice(b"{\"index\":{\"_index\":\"logs-app-default\"}}\n{\"@timestamp\":1}\n");
    let answer = bulk(&es, body).await;
    let value = answer.json();
    let items = value["items"].as_array().expect("items");
    assert_eq!(items[0]["create"]["status"], 201);
    let forbidden = &items[1]["create"];
    assert_eq!(forbidden["status"], 403);
    assert_eq!(forbidden["error"]["type"], "security_exception");
    assert!(forbidden["error"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("API key id [k1]") && r.contains("[metrics-app-default]")));
    assert_eq!(items[2]["create"]["status"], 400);
    assert_eq!(
        items[2]["create"]["error"]["reason"],
        "data stream timestamp field [@timestamp] is missing"
    );
    assert_eq!(items[3]["index"]["status"], 400);
    assert_eq!(
        items[3]["index"]["error"]["type"],
        "illegal_argument_exception"
    );
    assert_eq!(es.counts().get(DS), Some(&1));
    assert_eq!(es.counts().get("metrics-app-default"), None);
    let stats = es.stats();
    assert_eq!((stats.forbidden_403, stats.rejected_400), (1, 2));
    stop(es).await;
}

#[tokio::test]
async fn auth_api_keys_users_and_invalidation() {
    let es = started().await;
    es.add_user("elastic", "changeme", &["*"]);
    let info = send(es.addr(), "GET", "/", &[api_key("k1", "s1")], vec![])
        .await
        .expect("answered");
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["version"]["number"], "8.17.0");
    assert_eq!(info.json()["tagline"], "You Know, for Search");

    let anonymous = send(es.addr(), "GET", "/", &[], vec![])
        .await
        .expect("answered");
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["error"]["type"], "security_exception");

    let wrong = send(
        es.addr(),
        "POST",
        "/_bulk",
        &[api_key("k1", "nope"), ndjson()],
        bulk_body(&[(DS, None, doc(1))]),
    )
    .await
    .expect("answered");
    assert_eq!(wrong.status, 401);

    let basic = (
        "authorization",
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("elastic:changeme")
        ),
    );
    let as_user = send(
        es.addr(),
        "POST",
        "/_bulk",
        &[basic, ndjson()],
        bulk_body(&[("metrics-x-default", None, doc(1))]),
    )
    .await
    .expect("answered");
    assert_eq!(statuses(&as_user), vec![201]);

    assert_eq!(
        statuses(&bulk(&es, bulk_body(&[(DS, None, doc(2))])).await),
        vec![201]
    );
    es.invalidate_api_key("k1");
    let invalidated = bulk(&es, bulk_body(&[(DS, None, doc(3))])).await;
    assert_eq!(invalidated.status, 401);
    assert_eq!(
        invalidated.json()["error"]["reason"],
        "unable to authenticate with provided credentials and anonymous access is not allowed for this request"
    );
    // Keys can be added over the control API too.
    let added = send(
        es.addr(),
        "POST",
        "/_mock/api_keys",
        &[("content-type", "application/json".into())],
        json!({"id": "k2", "key": "s2", "allowed": ["logs-*"]})
            .to_string()
            .into_bytes(),
    )
    .await
    .expect("answered");
    assert_eq!(added.status, 200);
    let with_k2 = send(
        es.addr(),
        "POST",
        "/_bulk",
        &[api_key("k2", "s2"), ndjson()],
        bulk_body(&[(DS, None, doc(4))]),
    )
    .await
    .expect("answered");
    assert_eq!(statuses(&with_k2), vec![201]);
    assert_eq!(es.stats().unauthorized_401, 3);
    stop(es).await;
}

#[tokio::test]
async fn gzip_bodies_and_filter_path() {
    let es = started().await;
    let body = bulk_body(&[(DS, Some("z1"), doc(1)), (DS, Some("z2"), doc(2))]);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&body).expect("gzip");
    let gzipped = encoder.finish().expect("gzip");
    let compressed_len = gzipped.len();
    let answer = send(
        es.addr(),
        "POST",
        "/_bulk?filter_path=errors,items.*.error,items.*.status",
        &[
            api_key("k1", "s1"),
            ndjson(),
            ("content-encoding", "gzip".into()),
        ],
        gzipped,
    )
    .await
    .expect("answered");
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        json!({"errors": false, "items": [{"create": {"status": 201}}, {"create": {"status": 201}}]})
    );
    assert_eq!(es.counts().get(DS), Some(&2));
    let log = es.requests();
    assert_eq!(log[0].content_encoding.as_deref(), Some("gzip"));
    assert_eq!(log[0].body_bytes, compressed_len);
    assert_eq!(
        log[0].path,
        "/_bulk?filter_path=errors,items.*.error,items.*.status"
    );

    // The index in the path is the default for action lines without _index.
    let on_path = send(
        es.addr(),
        "PUT",
        "/logs-app-default/_bulk",
        &[api_key("k1", "s1"), ndjson()],
        b"{\"create\":{}}\n{\"@timestamp\":1}\n".to_vec(),
    )
    .await
    .expect("answered");
    assert_eq!(statuses(&on_path), vec![201]);
    assert_eq!(es.counts().get(DS), Some(&3));
    stop(es).await;
}

#[tokio::test]
async fn malformed_ndjson_is_a_whole_request_400() {
    let es = started().await;
    let answer = bulk(&es, b"{\"create\":{\"_index\":\n".to_vec()).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error"]["type"], "x_content_parse_exception");
    assert_eq!(answer.json()["status"], 400);
    let unterminated = bulk(&es, b"{\"create\":{\"_index\":\"logs-a-b\"}}\n{}".to_vec()).await;
    assert_eq!(unterminated.status, 400);
    assert_eq!(
        unterminated.json()["error"]["type"],
        "illegal_argument_exception"
    );
    assert!(es.counts().is_empty());
    stop(es).await;
}

#[tokio::test]
async fn reject_field_fails_only_that_item() {
    let es = started().await;
    es.set_faults(Faults {
        reject_field: Some("poison".into()),
        ..Faults::default()
    });
    let mut poisoned = doc(2);
    poisoned["poison"] = json!("x");
    let answer = bulk(
        &es,
        bulk_body(&[(DS, Some("p1"), doc(1)), (DS, Some("p2"), poisoned)]),
    )
    .await;
    assert_eq!(statuses(&answer), vec![201, 400]);
    let error = &answer.json()["items"][1]["create"]["error"];
    assert_eq!(error["type"], "mapper_parsing_exception");
    assert!(error["reason"].as_str().is_some_and(
        |r| r.starts_with("failed to parse field [poison] of type [long] in document with id 'p2'")
    ));
    assert_eq!(es.counts().get(DS), Some(&1));
    stop(es).await;
}

#[tokio::test]
async fn whole_request_faults() {
    let es = started().await;
    let body = bulk_body(&[(DS, Some("f1"), doc(1))]);

    es.set_faults(Faults {
        max_request_bytes: Some(body.len() - 1),
        ..Faults::default()
    });
    assert_eq!(bulk(&es, body.clone()).await.status, 413);

    es.set_faults(Faults {
        request_429_rate: 1.0,
        ..Faults::default()
    });
    let rejected = bulk(&es, body.clone()).await;
    assert_eq!(rejected.status, 429);
    assert_eq!(
        rejected.json()["error"]["type"],
        "es_rejected_execution_exception"
    );

    es.set_faults(Faults {
        request_5xx_rate: 1.0,
        ..Faults::default()
    });
    assert_eq!(bulk(&es, body.clone()).await.status, 503);

    es.set_faults(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    });
    let reset = send(
        es.addr(),
        "POST",
        "/_bulk",
        &[api_key("k1", "s1"), ndjson()],
        body.clone(),
    )
    .await;
    assert!(reset.is_err(), "expected a connection error");

    // Faults set over the control API; item faults index nothing.
    let put = send(
        es.addr(),
        "PUT",
        "/_mock/faults",
        &[("content-type", "application/json".into())],
        json!({"item_429_rate": 1.0}).to_string().into_bytes(),
    )
    .await
    .expect("answered");
    assert_eq!(put.status, 200);
    let items = bulk(&es, body.clone()).await;
    assert_eq!(statuses(&items), vec![429]);
    es.set_faults(Faults {
        item_5xx_rate: 1.0,
        ..Faults::default()
    });
    let items = bulk(&es, body.clone()).await;
    assert!(statuses(&items).iter().all(|s| *s == 500 || *s == 503));
    assert!(es.counts().is_empty());

    es.set_faults(Faults::default());
    assert_eq!(statuses(&bulk(&es, body).await), vec![201]);
    let stats = es.stats();
    assert_eq!(stats.too_large_413, 1);
    assert_eq!(stats.rejected_429, 2);
    assert_eq!(stats.errors_5xx, 2);
    assert_eq!(stats.resets, 1);
    assert_eq!(stats.indexed, 1);
    let http_stats = send(es.addr(), "GET", "/_mock/stats", &[], vec![])
        .await
        .expect("answered");
    assert_eq!(http_stats.json()["resets"], 1);
    stop(es).await;
}

#[tokio::test]
async fn pause_refuses_and_resume_serves_again() {
    let es = started().await;
    // A connection open across the pause is closed too.
    let idle = timeout(WAIT, TcpStream::connect(es.addr()))
        .await
        .expect("in time")
        .expect("connects");
    es.pause();
    let refused = timeout(WAIT, TcpStream::connect(es.addr()))
        .await
        .expect("in time");
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    let on_idle = timeout(WAIT, send_on(idle, "GET", "/_mock/stats", &[], Vec::new()))
        .await
        .expect("in time");
    assert!(on_idle.is_err(), "a paused server answered");

    timeout(WAIT, es.resume())
        .await
        .expect("in time")
        .expect("resumes");
    assert_eq!(
        statuses(&bulk(&es, bulk_body(&[(DS, None, doc(1))])).await),
        vec![201]
    );

    // Paused over HTTP for a while: the answer arrives, then the server comes back by itself.
    let paused = send(es.addr(), "POST", "/_mock/pause?ms=300", &[], vec![])
        .await
        .expect("answered");
    assert_eq!(paused.status, 200);
    let back = timeout(WAIT, async {
        loop {
            if let Ok(answer) = send(es.addr(), "GET", "/_mock/counts", &[], vec![]).await {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("back within the wait");
    assert_eq!(back.json()[DS], 1);
    stop(es).await;
}

#[tokio::test]
async fn loadgen_duplicates_are_counted() {
    let es = started().await;
    let event = |seq: u64| json!({"@timestamp": "2026-01-01T00:00:00Z", "fields": {"loadgen": {"run": "r1", "seq": seq}}});
    let top_level = |seq: u64| json!({"@timestamp": 1, "loadgen": {"run": "r1", "seq": seq}});
    let answer = bulk(
        &es,
        bulk_body(&[
            (DS, Some("i0"), event(0)),
            (DS, Some("i1"), event(1)),
            (DS, Some("i1"), event(1)),  // same _id: 409, not a duplicate
            (DS, Some("i1b"), event(1)), // same seq, new _id: a duplicate
            (DS, None, top_level(2)),
        ]),
    )
    .await;
    assert_eq!(statuses(&answer), vec![201, 201, 409, 201, 201]);
    let counts = es.loadgen_counts("r1");
    assert_eq!(counts.get(&0), Some(&1));
    assert_eq!(counts.get(&1), Some(&2));
    assert_eq!(counts.get(&2), Some(&1));
    assert_eq!(es.stats().duplicates_indexed, 1);
    assert!(es.loadgen_counts("other").is_empty());
    let summary = send(es.addr(), "GET", "/_mock/loadgen/r1", &[], vec![])
        .await
        .expect("answered");
    assert_eq!(
        summary.json(),
        json!({"distinct": 3, "duplicates": 1, "total": 4})
    );
    stop(es).await;
}

#[tokio::test]
async fn serves_https() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let options = MockEsOptions {
        tls: Some(TlsIdentity {
            cert_pem: cert.cert.pem(),
            key_pem: cert.signing_key.serialize_pem(),
        }),
        require_auth: false,
        ..MockEsOptions::default()
    };
    let es = timeout(WAIT, MockEs::start(options))
        .await
        .expect("in time")
        .expect("starts");
    assert!(es.url().starts_with("https://127.0.0.1:"));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let answer = timeout(WAIT, async {
        let tcp = TcpStream::connect(es.addr()).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
        let tls = connector.connect(name, tcp).await?;
        send_on(
            tls,
            "POST",
            "/_bulk",
            &[ndjson()],
            bulk_body(&[(DS, None, doc(1))]),
        )
        .await
    })
    .await
    .expect("in time")
    .expect("answered over TLS");
    assert_eq!(statuses(&answer), vec![201]);
    stop(es).await;
}
