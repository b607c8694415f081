//! HTTP routes of mock-es: cluster info, `_bulk`, `_count`, and the `/_mock/` control API,
//! with Elasticsearch 8.x status codes, error bodies and headers.

use super::auth::{Credentials, Principal};
use super::bulk::{self, BulkError, Filter, ParseOptions};
use super::faults::{Dice, Faults, RequestFault};
use super::listener::{Connection, Control};
use super::state::{Apply, RequestLog, RequestRing, State};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

/// Everything the request handlers share.
pub(crate) struct Shared {
    /// Answer 401 without valid credentials.
    pub(crate) require_auth: bool,
    /// Pull loadgen run/seq out of documents.
    pub(crate) track_loadgen: bool,
    /// Parse and keep whole documents.
    pub(crate) keep_documents: bool,
    /// Serving HTTPS.
    pub(crate) https: bool,
    /// HTTPS, when configured.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// Indexed data; one short lock per `_bulk` request.
    pub(crate) state: Mutex<State>,
    /// API keys and users.
    pub(crate) credentials: RwLock<Credentials>,
    /// Current faults.
    pub(crate) faults: Mutex<Arc<Faults>>,
    /// Seeded fault dice.
    pub(crate) dice: Dice,
    /// Recent `_bulk` requests.
    pub(crate) log: Mutex<RequestRing>,
    /// The listening socket.
    pub(crate) control: Control,
}

/// Returned to hyper to drop a connection without answering (the reset fault).
#[derive(Debug, thiserror::Error)]
#[error("connection reset by mock-es fault injection")]
pub(crate) struct Reset;

type Reply = Response<Full<Bytes>>;

/// Credentials missing, unknown or invalidated: answer 401.
struct Unauthorized;

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const CLUSTER_UUID: &str = "bW9jay1lcy1jbHVzdGVy";

fn reply(status: u16, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    // The official Go and Rust clients refuse servers that do not send this.
    headers.insert(
        "x-elastic-product",
        HeaderValue::from_static("Elasticsearch"),
    );
    response
}

fn json(status: u16, value: &serde_json::Value) -> Reply {
    reply(status, serde_json::to_vec(value).unwrap_or_default())
}

/// `{"error":{"root_cause":[..],"type":..,"reason":..},"status":N}`.
fn error(status: u16, kind: &str, reason: &str) -> Reply {
    let cause = serde_json::json!({"type": kind, "reason": reason});
    json(
        status,
        &serde_json::json!({
            "error": {"root_cause": [cause], "type": kind, "reason": reason},
            "status": status,
        }),
    )
}

fn unauthorized() -> Reply {
    let reason = "unable to authenticate with provided credentials and anonymous access is not allowed for this request";
    let mut response = json(
        401,
        &serde_json::json!({
            "error": {
                "root_cause": [{"type": "security_exception", "reason": reason,
                    "header": {"WWW-Authenticate": ["Basic realm=\"security\", charset=\"UTF-8\"", "ApiKey"]}}],
                "type": "security_exception",
                "reason": reason,
                "header": {"WWW-Authenticate": ["Basic realm=\"security\", charset=\"UTF-8\"", "ApiKey"]},
            },
            "status": 401,
        }),
    );
    let headers = response.headers_mut();
    headers.append(
        "www-authenticate",
        HeaderValue::from_static("Basic realm=\"security\", charset=\"UTF-8\""),
    );
    headers.append("www-authenticate", HeaderValue::from_static("ApiKey"));
    response
}

fn header(headers: &HeaderMap, name: impl hyper::header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// Percent-decodes a query component (`+` is a space).
fn decode(component: &str) -> String {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The (decoded) value of query parameter `name`.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

impl Shared {
    /// `Ok(None)` when auth is off, `Ok(Some)` for valid credentials, `Err` (401) otherwise.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Arc<Principal>>, Unauthorized> {
        if !self.require_auth {
            return Ok(None);
        }
        let creds = self
            .credentials
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match creds.authenticate(headers.get(AUTHORIZATION).map(HeaderValue::as_bytes)) {
            Some(principal) => Ok(Some(principal)),
            None => Err(Unauthorized),
        }
    }

    fn count_401(&self) {
        lock(&self.state).stats.unauthorized_401 += 1;
    }
}

/// Routes one request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    req: Request<Incoming>,
) -> Result<Reply, Reset> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.first() == Some(&"_mock") {
        return Ok(control(&shared, &connection, req, &segments[1..]).await);
    }
    let method = req.method().clone();
    let is_bulk = matches!(segments.as_slice(), ["_bulk"] | [_, "_bulk"]);
    if is_bulk && (method == Method::POST || method == Method::PUT) {
        return bulk_request(&shared, &connection, req).await;
    }
    // Everything else needs valid credentials, though only _bulk looks at privileges.
    if let Err(Unauthorized) = shared.authenticate(req.headers()) {
        shared.count_401();
        return Ok(unauthorized());
    }
    Ok(match (&method, segments.as_slice()) {
        (&Method::GET | &Method::HEAD, []) => json(
            200,
            &serde_json::json!({
                "name": "mock-es",
                "cluster_name": "mock",
                "cluster_uuid": CLUSTER_UUID,
                "version": {
                    "number": "8.17.0",
                    "build_flavor": "default",
                    "build_type": "docker",
                    "build_hash": "0000000000000000000000000000000000000000",
                    "build_date": "2024-12-11T12:08:05.663969764Z",
                    "build_snapshot": false,
                    "lucene_version": "9.12.0",
                    "minimum_wire_compatibility_version": "7.17.0",
                    "minimum_index_compatibility_version": "7.0.0",
                },
                "tagline": "You Know, for Search",
            }),
        ),
        (&Method::GET, ["_license"]) => json(
            200,
            &serde_json::json!({"license": {"status": "active", "uid": CLUSTER_UUID, "type": "basic",
                "issue_date_in_millis": 0, "max_nodes": 1000, "issued_to": "mock", "issuer": "elasticsearch",
                "start_date_in_millis": -1}}),
        ),
        (&Method::GET | &Method::POST, [name, "_count"]) => match lock(&shared.state).count(name) {
            Some(count) => json(
                200,
                &serde_json::json!({"count": count,
                        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}}),
            ),
            None => error(
                404,
                "index_not_found_exception",
                &format!("no such index [{name}]"),
            ),
        },
        _ => json(
            400,
            &serde_json::json!({"error": format!("no handler found for uri [{path}] and method [{method}]")}),
        ),
    })
}

/// Headers other than those [`RequestLog`] has fields for, lowercase names.
fn other_headers(headers: &hyper::HeaderMap) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::<String, String>::new();
    for (name, value) in headers {
        if [AUTHORIZATION, CONTENT_TYPE, CONTENT_ENCODING].contains(name) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_string())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

/// What `_bulk` sent back, for the request log.
struct Logged {
    status: u16,
    items: usize,
}

async fn bulk_request(
    shared: &Arc<Shared>,
    connection: &Arc<Connection>,
    req: Request<Incoming>,
) -> Result<Reply, Reset> {
    let (parts, body) = req.into_parts();
    let mut entry = RequestLog {
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map_or_else(
            || parts.uri.path().to_string(),
            |pq| pq.as_str().to_string(),
        ),
        authorization: header(&parts.headers, AUTHORIZATION),
        content_type: header(&parts.headers, CONTENT_TYPE),
        content_encoding: header(&parts.headers, CONTENT_ENCODING),
        body_bytes: 0,
        items: 0,
        status: 0,
        answered_at_us: 0,
        headers: other_headers(&parts.headers),
    };
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(Reset),
    };
    entry.body_bytes = body.len();
    let outcome = bulk(shared, connection, &parts, body).await;
    let (result, logged) = match outcome {
        Ok((reply, logged)) => (Ok(reply), logged),
        Err(Reset) => (
            Err(Reset),
            Logged {
                status: 0,
                items: 0,
            },
        ),
    };
    entry.status = logged.status;
    entry.answered_at_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    entry.items = logged.items;
    lock(&shared.log).push(entry);
    result
}

async fn bulk(
    shared: &Arc<Shared>,
    connection: &Arc<Connection>,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<(Reply, Logged), Reset> {
    let started = Instant::now();
    let whole = |status: u16, reply: Reply| {
        let mut state = lock(&shared.state);
        state.stats.requests += 1;
        state.stats.count_status(status);
        Ok((reply, Logged { status, items: 0 }))
    };
    let principal = match shared.authenticate(&parts.headers) {
        Ok(principal) => principal,
        Err(Unauthorized) => return whole(401, unauthorized()),
    };
    let faults = lock(&shared.faults).clone();
    if shared.dice.reset(&faults) {
        {
            let mut state = lock(&shared.state);
            state.stats.requests += 1;
            state.stats.resets += 1;
        }
        connection.reset();
        return Err(Reset);
    }
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase());
    match &content_type {
        None => {
            return whole(
                406,
                json(
                    406,
                    &serde_json::json!({"error": "Content-Type header is missing", "status": 406}),
                ),
            )
        }
        Some(kind) if !kind.contains("json") => {
            return whole(
                406,
                json(
                    406,
                    &serde_json::json!({"error": format!("Content-Type header [{kind}] is not supported"), "status": 406}),
                ),
            )
        }
        Some(_) => {}
    }
    let decoded = match decompress(&parts.headers, body, faults.max_request_bytes) {
        Ok(decoded) => decoded,
        Err(Decompress::TooLarge) => return whole(413, too_large()),
        Err(Decompress::Invalid(reason)) => {
            return whole(400, error(400, "illegal_argument_exception", &reason))
        }
    };
    if faults
        .max_request_bytes
        .is_some_and(|max| decoded.len() > max)
    {
        return whole(413, too_large());
    }
    match shared.dice.request_fault(&faults) {
        Some(RequestFault::BadRequest) => {
            return whole(
                400,
                error(
                    400,
                    "illegal_argument_exception",
                    "request rejected as a whole (mock-es injected: as a proxy or a refused header would)",
                ),
            )
        }
        Some(RequestFault::TooManyRequests) => {
            return whole(
                429,
                error(
                    429,
                    "es_rejected_execution_exception",
                    "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, \
                     replica_bytes=0, all_bytes=0, coordinating_operation_bytes=0, max_coordinating_and_primary_bytes=0]",
                ),
            )
        }
        Some(RequestFault::Unavailable) => {
            return whole(
                503,
                error(
                    503,
                    "unavailable_shards_exception",
                    "[.ds-mock][0] primary shard is not active (mock-es injected)",
                ),
            )
        }
        None => {}
    }
    let query = parts.uri.query();
    let filter = query_param(query, "filter_path").map_or(Filter::ALL, |f| Filter::parse(&f));
    let path = parts.uri.path();
    let default_index = path
        .trim_start_matches('/')
        .split_once('/')
        .map(|(index, _)| index)
        .filter(|index| !index.is_empty() && *index != "_bulk");
    let options = ParseOptions {
        default_index,
        reject_field: faults.reject_field.as_deref(),
        track_loadgen: shared.track_loadgen,
        keep_documents: shared.keep_documents,
    };
    let mut items = match bulk::parse(&decoded, &options) {
        Ok(items) => items,
        Err(BulkError { kind, reason }) => return whole(400, error(400, kind, &reason)),
    };
    let item_faults = shared.dice.item_faults(&faults, items.len());
    let outcomes = {
        let mut state = lock(&shared.state);
        state.stats.requests += 1;
        state.apply(
            &mut items,
            Apply {
                principal: principal.as_deref(),
                reject_field: faults.reject_field.as_deref(),
                blocked_index: faults.blocked_index.as_deref(),
                item_faults,
            },
        )
    };
    if faults.latency_after_index_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_after_index_ms)).await;
    }
    let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let body = bulk::write_response(&items, &outcomes, took, filter);
    Ok((
        reply(200, body),
        Logged {
            status: 200,
            items: items.len(),
        },
    ))
}

/// The 413 answer for a body over `max_request_bytes`.
fn too_large() -> Reply {
    error(
        413,
        "content_too_long_exception",
        "request body is too large (mock-es max_request_bytes)",
    )
}

enum Decompress {
    TooLarge,
    Invalid(String),
}

/// Undoes `Content-Encoding: gzip|deflate`, stopping once past `max` bytes.
fn decompress(headers: &HeaderMap, body: Bytes, max: Option<usize>) -> Result<Bytes, Decompress> {
    let encoding = headers.get(CONTENT_ENCODING).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .trim()
            .to_ascii_lowercase()
    });
    let reader: Box<dyn Read + '_> = match encoding.as_deref() {
        None | Some("") | Some("identity") => return Ok(body),
        Some("gzip") | Some("x-gzip") => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        Some("deflate") => Box::new(flate2::read::ZlibDecoder::new(&body[..])),
        Some(other) => {
            return Err(Decompress::Invalid(format!(
                "unsupported Content-Encoding [{other}]"
            )))
        }
    };
    let limit = max.map_or(u64::MAX, |max| max as u64 + 1);
    // A gzip member ends with its uncompressed size (mod 2^32): sized from it, the output
    // is never moved by a reallocation (that copying was a quarter of mock-es's CPU).
    let hinted = match encoding.as_deref() {
        Some("gzip") | Some("x-gzip") => body
            .last_chunk::<4>()
            .map(|size| u32::from_le_bytes(*size) as usize + 1),
        _ => None,
    };
    let capacity = hinted
        .unwrap_or(body.len() * 6)
        .min(max.map_or(usize::MAX, |max| max + 1))
        .min(256 << 20);
    let mut out = Vec::with_capacity(capacity);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|err| Decompress::Invalid(format!("cannot decompress the request body: {err}")))?;
    if max.is_some_and(|max| out.len() > max) {
        return Err(Decompress::TooLarge);
    }
    Ok(Bytes::from(out))
}

#[derive(Deserialize)]
struct NewApiKey {
    id: String,
    key: String,
    #[serde(default)]
    allowed: Vec<String>,
}

/// `/_mock/...`: no auth.
async fn control(
    shared: &Arc<Shared>,
    connection: &Arc<Connection>,
    req: Request<Incoming>,
    segments: &[&str],
) -> Reply {
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => return error(400, "illegal_argument_exception", &err.to_string()),
    };
    let ack = || json(200, &serde_json::json!({"acknowledged": true}));
    match (&method, segments) {
        (&Method::GET, ["stats"]) => {
            let stats = lock(&shared.state).stats.clone();
            json(200, &serde_json::to_value(stats).unwrap_or_default())
        }
        (&Method::GET, ["counts"]) => {
            let counts = lock(&shared.state).counts();
            json(200, &serde_json::to_value(counts).unwrap_or_default())
        }
        (&Method::GET, ["requests"]) => {
            let log = lock(&shared.log).snapshot();
            json(200, &serde_json::to_value(log).unwrap_or_default())
        }
        (&Method::GET, ["loadgen", run]) => {
            let counts = lock(&shared.state).loadgen_counts(run);
            let distinct = counts.len() as u64;
            let total: u64 = counts.values().map(|n| u64::from(*n)).sum();
            json(
                200,
                &serde_json::json!({"distinct": distinct, "duplicates": total - distinct, "total": total}),
            )
        }
        (&Method::GET, ["loadgen", run, "missing"]) => {
            let param =
                |name: &str| query_param(query.as_deref(), name).and_then(|v| v.parse().ok());
            match param("upto") {
                Some(upto) => {
                    let limit = param("limit").map_or(1000, |l: u64| l as usize);
                    let missing = lock(&shared.state).loadgen_missing(run, upto, limit);
                    json(200, &serde_json::to_value(missing).unwrap_or_default())
                }
                None => error(400, "illegal_argument_exception", "missing needs ?upto=N"),
            }
        }
        (&Method::PUT | &Method::POST, ["faults"]) => match serde_json::from_slice::<Faults>(&body)
        {
            Ok(faults) => {
                *lock(&shared.faults) = Arc::new(faults);
                ack()
            }
            Err(err) => error(400, "x_content_parse_exception", &err.to_string()),
        },
        (&Method::POST | &Method::PUT, ["api_keys"]) => {
            match serde_json::from_slice::<NewApiKey>(&body) {
                Ok(new) => {
                    let allowed: Vec<&str> = new.allowed.iter().map(String::as_str).collect();
                    shared
                        .credentials
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .add_api_key(&new.id, &new.key, &allowed);
                    ack()
                }
                Err(err) => error(400, "x_content_parse_exception", &err.to_string()),
            }
        }
        (&Method::POST, ["api_keys", id, "_invalidate"]) => {
            shared
                .credentials
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .invalidate_api_key(id);
            ack()
        }
        (&Method::POST, ["pause"]) => {
            let ms = query_param(query.as_deref(), "ms").and_then(|ms| ms.parse::<u64>().ok());
            match ms {
                Some(ms) => {
                    connection.pause_after_response(Duration::from_millis(ms));
                    let mut reply = ack();
                    reply
                        .headers_mut()
                        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
                    reply
                }
                None => error(400, "illegal_argument_exception", "pause needs ?ms=N"),
            }
        }
        _ => error(
            404,
            "resource_not_found_exception",
            &format!(
                "no mock-es control endpoint [{method} /_mock/{}]",
                segments.join("/")
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let query = Some("pretty&filter_path=errors%2Citems.%2A.status,items.*.error&x=a+b");
        assert_eq!(
            query_param(query, "filter_path").as_deref(),
            Some("errors,items.*.status,items.*.error")
        );
        assert_eq!(query_param(query, "x").as_deref(), Some("a b"));
        assert_eq!(query_param(query, "pretty").as_deref(), Some(""));
        assert_eq!(query_param(query, "missing"), None);
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%4"), "%4");
    }
}
