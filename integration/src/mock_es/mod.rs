//! `mock_es`: a mock Elasticsearch 8.x that speaks enough of `_bulk` for the shipper's
//! output to be tested and benchmarked against it, with injectable faults.
//!
//! # What it owns
//! - [`listener`]: the socket, accept loop and connections; pause/resume.
//! - [`http`]: routes: `GET /` (cluster info), `POST|PUT /_bulk` and `/{index}/_bulk`,
//!   `GET /{data_stream}/_count`, `GET /_license`, and the unauthenticated control API
//!   under `/_mock/` (`stats`, `counts`, `requests`, `loadgen/{run}`,
//!   `loadgen/{run}/missing?upto=N[&limit=K]`, `PUT faults`,
//!   `POST api_keys`, `POST api_keys/{id}/_invalidate`, `POST pause?ms=N`).
//! - [`bulk`]: NDJSON → items (borrowing from the body), the document probe, the response
//!   writer (with `filter_path`).
//! - [`state`]: data streams, `_id` dedupe, kept documents, loadgen counts, statistics.
//! - [`auth`]: API keys, users, allowed index patterns.
//! - [`faults`]: [`Faults`] and the seeded dice.
//!
//! # Behaviour (as Elasticsearch 8.x)
//! Every index is a data stream: only `create` is accepted (`index`/`update`/`delete` → item
//! 400), documents need a top-level `@timestamp` (else item 400), `_index` in answers is the
//! backing index `.ds-{name}-2026.11.22-000001`. A `_bulk` item is decided in this order:
//! 403 (outside the principal's patterns) → 400 (op, unparsable document, no `@timestamp`,
//! `reject_field`) → 429 `cluster_block_exception` (`blocked_index`) → 409 (`_id` already in
//! the data stream) → injected item fault (429/5xx)
//! → 201. Whole-request checks run before: 401 → reset → latency → 406 (Content-Type not
//! JSON/NDJSON) → 413 → injected 400 → 429 → 503 → 400 (malformed NDJSON). Responses carry
//! `X-Elastic-Product: Elasticsearch`.
//!
//! # Invariants
//! - An item is indexed only when it is answered 201; faults never index.
//! - One lock of the state per `_bulk` request (dedupe + insert + counters), never held
//!   across an `.await`; the response is written after the lock is released.
//! - `_id` dedupe keeps 64-bit digests, not strings (see [`state`]); with
//!   `keep_documents: false` a generated `_id` is not remembered (it cannot recur).
//! - After [`MockEs::pause`] returns, new connections are refused and open ones are closed:
//!   the sockets are shut down synchronously, not when a task next runs.
//! - Every task has an owner: connection tasks belong to their accept loop's `JoinSet`; accept
//!   loops and the pause timer to the server; [`MockEs::stop`] awaits them all.
//!
//! # Performance
//! With `keep_documents: false`, the document line is only probed: `@timestamp` presence,
//! `reject_field`, and `loadgen.{run,seq}` (top level, or under `fields`) when tracked;
//! everything else is skipped without allocating. Loadgen seqs are counted in a dense
//! `Vec<u32>` per run.

mod auth;
mod bulk;
mod faults;
mod http;
mod listener;
mod state;

pub use faults::Faults;
pub use state::{LoadgenMissing, MockEsStats, RequestLog};

use anyhow::Context;
use auth::Credentials;
use faults::Dice;
use http::{lock, Shared};
use listener::Control;
use state::{RequestRing, State};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use tokio_rustls::rustls;

/// How to run a [`MockEs`].
#[derive(Clone, Debug)]
pub struct MockEsOptions {
    /// Address to listen on; default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Answer 401 to requests without valid credentials; default true.
    pub require_auth: bool,
    /// Store every indexed document (tests); default true. False for benchmarks.
    pub keep_documents: bool,
    /// Count indexed documents per loadgen (run, seq); default true.
    pub track_loadgen: bool,
    /// Seed of the fault-injection RNG; default 0.
    pub seed: u64,
    /// Serve HTTPS with this identity; default none (plain HTTP).
    pub tls: Option<TlsIdentity>,
    /// With `tls`: require a client certificate signed by this CA (PEM), as Elasticsearch
    /// with `xpack.security.http.ssl.client_authentication: required`; default none.
    pub client_ca_pem: Option<String>,
}

impl Default for MockEsOptions {
    fn default() -> Self {
        MockEsOptions {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            require_auth: true,
            keep_documents: true,
            track_loadgen: true,
            seed: 0,
            tls: None,
            client_ca_pem: None,
        }
    }
}

/// A certificate chain and its private key, both PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    /// Leaf first, then intermediates.
    pub cert_pem: String,
    /// PKCS#8, PKCS#1 or SEC1 private key.
    pub key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of debug output.
        f.write_str("TlsIdentity { .. }")
    }
}

/// A running mock Elasticsearch server. Dropping it without [`MockEs::stop`] leaves the
/// accept loop running until the runtime shuts down.
pub struct MockEs {
    shared: Arc<Shared>,
    addr: SocketAddr,
    https: bool,
}

fn tls_acceptor(
    identity: &TlsIdentity,
    client_ca_pem: Option<&str>,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("mock-es: cannot read the TLS certificate PEM")?;
    anyhow::ensure!(
        !certs.is_empty(),
        "mock-es: no certificate in the TLS certificate PEM"
    );
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .context("mock-es: cannot read the TLS key PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("mock-es: TLS protocol versions")?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots
                    .add(cert.context("mock-es: cannot read the client CA PEM")?)
                    .context("mock-es: unusable client CA")?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .context("mock-es: client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("mock-es: TLS certificate and key do not fit")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl MockEs {
    /// Binds and starts serving.
    ///
    /// # Errors
    /// The address cannot be bound, or the TLS identity is unusable.
    pub async fn start(options: MockEsOptions) -> anyhow::Result<MockEs> {
        let tls = options
            .tls
            .as_ref()
            .map(|identity| tls_acceptor(identity, options.client_ca_pem.as_deref()))
            .transpose()?;
        let listener = listener::bind(options.listen)
            .with_context(|| format!("mock-es: cannot listen on {}", options.listen))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            require_auth: options.require_auth,
            track_loadgen: options.track_loadgen,
            keep_documents: options.keep_documents,
            https: tls.is_some(),
            tls,
            state: Mutex::new(State::new(options.keep_documents, options.seed)),
            credentials: RwLock::new(Credentials::default()),
            faults: Mutex::new(Arc::new(Faults::default())),
            dice: Dice::new(options.seed),
            log: Mutex::new(RequestRing::default()),
            control: Control::new(addr),
        });
        shared.control.serve(&shared, listener);
        Ok(MockEs {
            https: shared.https,
            shared,
            addr,
        })
    }

    /// The address served (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://...` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Adds an API key allowed to write to data streams matching `allowed` (`*` glob, e.g.
    /// `logs-*-default`).
    pub fn add_api_key(&self, id: &str, key: &str, allowed: &[&str]) {
        self.credentials().add_api_key(id, key, allowed);
    }

    /// Adds a Basic-auth user allowed to write to data streams matching `allowed`.
    pub fn add_user(&self, username: &str, password: &str, allowed: &[&str]) {
        self.credentials().add_user(username, password, allowed);
    }

    /// Later requests with this API key are answered 401.
    pub fn invalidate_api_key(&self, id: &str) {
        self.credentials().invalidate_api_key(id);
    }

    fn credentials(&self) -> std::sync::RwLockWriteGuard<'_, Credentials> {
        self.shared
            .credentials
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the injected faults (for requests that arrive from now on).
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = Arc::new(faults);
    }

    /// Stops listening and closes open connections: clients get connection refused until
    /// [`MockEs::resume`]. Idempotent.
    pub fn pause(&self) {
        self.shared.control.pause();
    }

    /// Listens again on the same address.
    ///
    /// # Errors
    /// The address cannot be bound again (taken by someone else meanwhile).
    pub async fn resume(&self) -> anyhow::Result<()> {
        self.shared
            .control
            .resume(&self.shared)
            .await
            .with_context(|| format!("mock-es: cannot listen on {} again", self.addr))
    }

    /// Counters since start.
    pub fn stats(&self) -> MockEsStats {
        lock(&self.shared.state).stats.clone()
    }

    /// Indexed documents per data stream.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.state).counts()
    }

    /// `(_id, source)` of each document indexed into `data_stream`, in index order (empty
    /// unless `keep_documents`).
    pub fn documents(&self, data_stream: &str) -> Vec<(String, serde_json::Value)> {
        lock(&self.shared.state).documents(data_stream)
    }

    /// loadgen seq → times indexed for `run` (more than 1: a duplicate under different `_id`s).
    pub fn loadgen_counts(&self, run: &str) -> HashMap<u64, u32> {
        lock(&self.shared.state).loadgen_counts(run)
    }

    /// Seqs of loadgen `run` below `upto` never indexed (the first `limit` listed).
    pub fn loadgen_missing(&self, run: &str, upto: u64, limit: usize) -> LoadgenMissing {
        lock(&self.shared.state).loadgen_missing(run, upto, limit)
    }

    /// The last 1000 `_bulk` requests, oldest first.
    pub fn requests(&self) -> Vec<RequestLog> {
        lock(&self.shared.log).snapshot()
    }

    /// Stops serving and waits for every task to end.
    pub async fn stop(self) {
        self.shared.control.stop().await;
    }
}
