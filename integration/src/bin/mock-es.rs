//! `mock-es`: run the mock Elasticsearch server from `integration::mock_es` until SIGTERM or
//! ctrl-c; prints `mock-es listening on http://ADDR` once it accepts connections.

use anyhow::{bail, Context, Result};
use clap::Parser;
use integration::mock_es::{Faults, MockEs, MockEsOptions, TlsIdentity};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(
    name = "mock-es",
    about = "A mock Elasticsearch 8.x _bulk endpoint with fault injection"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9200")]
    listen: SocketAddr,
    /// API key `ID:KEY:PATTERN[,PATTERN]` (patterns glob with `*`); repeatable.
    #[arg(long = "api-key", value_name = "ID:KEY:PATTERNS")]
    api_keys: Vec<String>,
    /// Basic-auth user `NAME:PASS:PATTERN[,PATTERN]`; repeatable.
    #[arg(long = "user", value_name = "NAME:PASS:PATTERNS")]
    users: Vec<String>,
    /// Accept requests without credentials (and write anywhere).
    #[arg(long)]
    no_auth: bool,
    /// Keep every indexed document in memory (off: only ids and counts).
    #[arg(long)]
    keep_documents: bool,
    /// Count documents per loadgen (run, seq), to find duplicates and losses.
    #[arg(long)]
    track_loadgen: bool,
    /// Seed of the fault-injection RNG.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Fraction of _bulk requests answered 429 as a whole.
    #[arg(long, default_value_t = 0.0)]
    request_429_rate: f64,
    /// Fraction of items answered 429.
    #[arg(long, default_value_t = 0.0)]
    item_429_rate: f64,
    /// Fraction of _bulk requests answered 503 as a whole.
    #[arg(long, default_value_t = 0.0)]
    request_5xx_rate: f64,
    /// Fraction of items answered 500/503.
    #[arg(long, default_value_t = 0.0)]
    item_5xx_rate: f64,
    /// Delay before answering each _bulk request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Delay after indexing a _bulk request's items, before answering, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_after_index_ms: u64,
    /// Items whose document has this top-level field are answered 400.
    #[arg(long)]
    reject_field: Option<String>,
    /// Fraction of _bulk requests whose connection is closed without an answer.
    #[arg(long, default_value_t = 0.0)]
    reset_rate: f64,
    /// Bodies (decompressed) larger than this are answered 413.
    #[arg(long)]
    max_request_bytes: Option<usize>,
}

/// Splits `NAME:SECRET:P1,P2` (the secret may not contain `:`).
fn principal(spec: &str, what: &str) -> Result<(String, String, Vec<String>)> {
    let mut parts = spec.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(secret), Some(patterns)) if !name.is_empty() && !patterns.is_empty() => {
            Ok((
                name.to_string(),
                secret.to_string(),
                patterns.split(',').map(str::to_string).collect(),
            ))
        }
        _ => bail!("--{what} wants NAME:SECRET:PATTERN[,PATTERN], got {spec:?}"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity {
            cert_pem: std::fs::read_to_string(cert)
                .with_context(|| format!("reading {}", cert.display()))?,
            key_pem: std::fs::read_to_string(key)
                .with_context(|| format!("reading {}", key.display()))?,
        }),
        _ => None,
    };
    let api_keys = cli
        .api_keys
        .iter()
        .map(|spec| principal(spec, "api-key"))
        .collect::<Result<Vec<_>>>()?;
    let users = cli
        .users
        .iter()
        .map(|spec| principal(spec, "user"))
        .collect::<Result<Vec<_>>>()?;
    if !cli.no_auth && api_keys.is_empty() && users.is_empty() {
        bail!("give at least one --api-key or --user, or --no-auth");
    }
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let server = MockEs::start(MockEsOptions {
        listen: cli.listen,
        require_auth: !cli.no_auth,
        keep_documents: cli.keep_documents,
        track_loadgen: cli.track_loadgen,
        seed: cli.seed,
        tls,
        client_ca_pem: None,
    })
    .await?;
    for (id, key, patterns) in &api_keys {
        let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
        server.add_api_key(id, key, &patterns);
    }
    for (name, password, patterns) in &users {
        let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
        server.add_user(name, password, &patterns);
    }
    server.set_faults(Faults {
        request_429_rate: cli.request_429_rate,
        item_429_rate: cli.item_429_rate,
        request_5xx_rate: cli.request_5xx_rate,
        item_5xx_rate: cli.item_5xx_rate,
        latency_ms: cli.latency_ms,
        latency_after_index_ms: cli.latency_after_index_ms,
        reject_field: cli.reject_field.clone(),
        reset_rate: cli.reset_rate,
        max_request_bytes: cli.max_request_bytes,
        // Set through `PUT /_mock/faults` when needed.
        ..Faults::default()
    });
    let mut stdout = std::io::stdout();
    writeln!(stdout, "mock-es listening on {}", server.url())?;
    stdout.flush()?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result.context("waiting for ctrl-c")?,
    }
    let stats = server.stats();
    server.stop().await;
    eprintln!("{}", serde_json::to_string(&stats)?);
    Ok(())
}
