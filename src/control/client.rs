//! The connection to the agent: mTLS, CheckinV2, Actions, reconnect with backoff.

use super::chunk::ExpectedAssembler;
use super::convert;
use super::pace::{CheckinPacer, Pace, MESSAGE_GAP};
use super::ControlError;
use crate::metrics::{History, StatsWatch};
use crate::proto::agent::elastic_agent_client::ElasticAgentClient;
use crate::proto::agent::{
    action_request, action_response, ActionDiagnosticUnitResult, ActionRequest, ActionResponse,
    CheckinExpected, CheckinObserved, CheckinObservedVersionInfo, ConnectionSupports, StartUpInfo,
};
use crate::supervisor::{DiagnosticsReport, SupervisorCommand, SupervisorLink};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Longest time between two check-ins; the agent counts a miss per 30 s without one.
pub const CHECKIN_INTERVAL: Duration = Duration::from_secs(20);
/// First reconnect delay; doubles up to [`RECONNECT_MAX`].
pub const RECONNECT_MIN: Duration = Duration::from_secs(1);
/// Longest reconnect delay.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// How long a DIAGNOSTICS request may wait for the supervisor's snapshot.
const DIAGNOSTICS_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the control protocol until shutdown or a fatal error.
pub struct ControlClient {
    info: StartUpInfo,
    link: SupervisorLink,
    shutdown: CancellationToken,
    checkin_interval: Duration,
    /// The sampler's figures, for DIAGNOSTICS' `stats.json`.
    stats: Option<StatsWatch>,
}

/// Why a session ended without a fatal error.
enum SessionEnd {
    Shutdown,
    Broken(String),
}

/// What survives a reconnect: the indices to echo and a half-built chunked message.
#[derive(Default)]
struct SessionMemory {
    features_idx: u64,
    component_idx: u64,
    assembler: ExpectedAssembler,
}

impl ControlClient {
    /// A client for the agent described by `info`, talking to the supervisor through
    /// `link`; it returns when `shutdown` is cancelled.
    pub fn new(info: StartUpInfo, link: SupervisorLink, shutdown: CancellationToken) -> Self {
        ControlClient {
            info,
            link,
            shutdown,
            checkin_interval: CHECKIN_INTERVAL,
            stats: None,
        }
    }

    /// Serves DIAGNOSTICS' `stats.json` from the metrics sampler (rates and ages included)
    /// instead of a bare snapshot.
    pub fn with_stats(mut self, stats: StatsWatch) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Checks in at least this often (default [`CHECKIN_INTERVAL`]).
    pub fn with_checkin_interval(mut self, interval: Duration) -> Self {
        self.checkin_interval = interval;
        self
    }

    /// Connects and keeps connected; returns `Ok` on shutdown.
    ///
    /// # Errors
    /// The fatal cases of [`ControlError`]: unusable TLS material, a TLS handshake that
    /// fails before any session was established, a refused token.
    pub async fn run(mut self) -> Result<(), ControlError> {
        let endpoint = endpoint(&self.info)?;
        let mut memory = SessionMemory::default();
        let mut delay = RECONNECT_MIN;
        let mut ever_connected = false;
        loop {
            let mut established = false;
            let end = self.session(&endpoint, &mut memory, &mut established).await;
            ever_connected |= established;
            let reason = match end {
                Ok(SessionEnd::Shutdown) => return Ok(()),
                Ok(SessionEnd::Broken(reason)) => reason,
                Err(err @ ControlError::TlsHandshake { .. }) if !ever_connected => return Err(err),
                Err(
                    err @ (ControlError::TokenRefused(_)
                    | ControlError::TlsMaterial(_)
                    | ControlError::BadAddress { .. }),
                ) => return Err(err),
                Err(err) => err.to_string(),
            };
            if established {
                delay = RECONNECT_MIN;
            }
            tracing::warn!(addr = %self.info.addr, %reason, retry_in_s = delay.as_secs(), "control connection to the agent lost; reconnecting");
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RECONNECT_MAX);
        }
    }

    /// The check-in to send now; marks the observed state as seen and tells `pacer`.
    fn observed_message(
        &mut self,
        memory: &SessionMemory,
        pacer: &mut CheckinPacer,
        first: bool,
    ) -> CheckinObserved {
        let observed = self.link.observed.borrow_and_update().clone();
        let units = observed.iter().map(convert::observed_unit).collect();
        pacer.sent(observed, std::time::Instant::now());
        let offers_chunking = self
            .info
            .supports
            .contains(&(ConnectionSupports::CheckinChunking as i32));
        CheckinObserved {
            token: self.info.token.clone(),
            units,
            version_info: first.then(|| CheckinObservedVersionInfo {
                name: "agent-shipper".into(),
                meta: [
                    ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
                    (
                        "build_hash".to_string(),
                        option_env!("AGENT_SHIPPER_COMMIT")
                            .unwrap_or("dev")
                            .to_string(),
                    ),
                ]
                .into_iter()
                .collect(),
                build_hash: option_env!("AGENT_SHIPPER_COMMIT")
                    .unwrap_or("dev")
                    .to_string(),
            }),
            features_idx: memory.features_idx,
            component_idx: memory.component_idx,
            units_timestamp: None,
            supports: if offers_chunking {
                vec![ConnectionSupports::CheckinChunking as i32]
            } else {
                Vec::new()
            },
            pid: u64::from(std::process::id()),
        }
    }

    async fn session(
        &mut self,
        endpoint: &Endpoint,
        memory: &mut SessionMemory,
        established: &mut bool,
    ) -> Result<SessionEnd, ControlError> {
        let addr = self.info.addr.clone();
        let channel = match connect(endpoint, &addr).await {
            Ok(channel) => channel,
            Err(failure) => return failure,
        };
        let max = match self.info.max_message_size {
            0 => 4 << 20,
            n => n as usize,
        };
        let mut client = ElasticAgentClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);

        // The first check-in goes into the stream before anything is awaited.
        let (checkin_tx, checkin_rx) = mpsc::channel::<CheckinObserved>(8);
        let mut pacer = CheckinPacer::new(MESSAGE_GAP);
        // A message-only change held back by the pacer, and when it is due.
        let mut deferred: Option<tokio::time::Instant> = None;
        let first = self.observed_message(memory, &mut pacer, true);
        let _ = checkin_tx.try_send(first);
        let mut expected = match client.checkin_v2(ReceiverStream::new(checkin_rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return classify_status(status, &addr),
        };
        *established = true;
        tracing::info!(%addr, "connected to Elastic Agent");
        // The agent answers the Actions call only with its first request, so the stream
        // runs beside the check-in loop and never holds it up.
        let actions = run_actions(
            client.clone(),
            self.info.token.clone(),
            self.link.commands.clone(),
            self.stats.clone(),
            addr.clone(),
        );
        tokio::pin!(actions);

        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + self.checkin_interval,
            self.checkin_interval,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let send_now = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                message = expected.message() => match message {
                    Ok(Some(piece)) => match memory.assembler.push(piece) {
                        // A change of the echoed indices alone is reported at once too.
                        Some(whole) => self.forward_expected(memory, whole),
                        None => false,
                    },
                    Ok(None) => return Ok(SessionEnd::Broken("the agent closed the CheckinV2 stream".into())),
                    Err(status) => return classify_status(status, &addr),
                },
                changed = self.link.observed.changed() => {
                    if changed.is_err() {
                        return Ok(SessionEnd::Shutdown);
                    }
                    let now = std::time::Instant::now();
                    match pacer.decide(&self.link.observed.borrow(), now) {
                        Pace::Now => true,
                        Pace::At(at) => {
                            let at = tokio::time::Instant::from_std(at);
                            deferred = Some(deferred.map_or(at, |d| d.min(at)));
                            false
                        }
                        Pace::Nothing => false,
                    }
                }
                _ = sleep_until(deferred) => true,
                _ = ticker.tick() => true,
                end = &mut actions => return end,
            };
            if send_now {
                deferred = None;
                let message = self.observed_message(memory, &mut pacer, false);
                if checkin_tx.send(message).await.is_err() {
                    return Ok(SessionEnd::Broken(
                        "the CheckinV2 stream closed while sending".into(),
                    ));
                }
                tracing::debug!("checked in");
                ticker.reset();
            }
        }
    }

    /// Hands the expected units to the supervisor (latest wins, never blocks); true when
    /// the indices to echo changed.
    fn forward_expected(&mut self, memory: &mut SessionMemory, expected: CheckinExpected) -> bool {
        let indices_changed = memory.features_idx != expected.features_idx
            || memory.component_idx != expected.component_idx;
        memory.features_idx = expected.features_idx;
        memory.component_idx = expected.component_idx;
        let units = expected.units.iter().map(convert::expected_unit).collect();
        tracing::debug!(units = expected.units.len(), "expected state received");
        self.link.expected.send_replace(Some(Arc::new(units)));
        indices_changed
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Runs the Actions stream: the `init` response first, then one answer per request.
async fn run_actions(
    mut client: ElasticAgentClient<Channel>,
    token: String,
    commands: mpsc::Sender<SupervisorCommand>,
    stats: Option<StatsWatch>,
    addr: String,
) -> Result<SessionEnd, ControlError> {
    let (action_tx, action_rx) = mpsc::channel::<ActionResponse>(8);
    let _ = action_tx.try_send(ActionResponse {
        token: token.clone(),
        id: "init".into(),
        status: action_response::Status::Success as i32,
        result: b"{}".to_vec(),
        diagnostic: Vec::new(),
    });
    let mut requests = match client.actions(ReceiverStream::new(action_rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return classify_status(status, &addr),
    };
    loop {
        match requests.message().await {
            Ok(Some(request)) => {
                let response = answer_action(&token, &commands, stats.as_ref(), request).await;
                if action_tx.send(response).await.is_err() {
                    return Ok(SessionEnd::Broken(
                        "the Actions stream closed while answering".into(),
                    ));
                }
            }
            Ok(None) => {
                return Ok(SessionEnd::Broken(
                    "the agent closed the Actions stream".into(),
                ))
            }
            Err(status) => return classify_status(status, &addr),
        }
    }
}

async fn answer_action(
    token: &str,
    commands: &mpsc::Sender<SupervisorCommand>,
    stats: Option<&StatsWatch>,
    request: ActionRequest,
) -> ActionResponse {
    let mut response = ActionResponse {
        token: token.to_string(),
        id: request.id.clone(),
        status: action_response::Status::Failed as i32,
        result: Vec::new(),
        diagnostic: Vec::new(),
    };
    if request.r#type != action_request::Type::Diagnostics as i32 {
        tracing::info!(action = %request.name, id = %request.id, "refusing unsupported action");
        response.result = serde_json::to_vec(&serde_json::json!({
            "error": format!("action `{}` is not supported by agent-shipper", request.name)
        }))
        .unwrap_or_default();
        return response;
    }
    let (reply_tx, reply_rx) = oneshot::channel();
    let report = match commands
        .send(SupervisorCommand::Diagnostics(reply_tx))
        .await
    {
        Ok(()) => tokio::time::timeout(DIAGNOSTICS_TIMEOUT, reply_rx)
            .await
            .ok()
            .and_then(Result::ok),
        Err(_) => None,
    };
    let Some(report) = report else {
        response.result = br#"{"error":"the supervisor did not answer in time"}"#.to_vec();
        return response;
    };
    response.status = action_response::Status::Success as i32;
    response.result = b"{}".to_vec();
    response.diagnostic = diagnostic_files(report, stats);
    tracing::info!(id = %request.id, "answered diagnostics request");
    response
}

/// The DIAGNOSTICS files: every one JSON, none holding a secret (configs come redacted).
fn diagnostic_files(
    report: DiagnosticsReport,
    stats: Option<&StatsWatch>,
) -> Vec<ActionDiagnosticUnitResult> {
    let now = SystemTime::now();
    let sampled = stats.and_then(|s| s.borrow().clone());
    let stats = match sampled {
        Some(stats) => serde_json::to_value(&*stats),
        // No sample yet: the figures of this instant, without rates.
        None => serde_json::to_value(
            History::new(std::time::Instant::now())
                .observe(std::time::Instant::now(), report.snapshot),
        ),
    }
    .unwrap_or_else(|err| serde_json::json!({ "error": err.to_string() }));
    let transitions = serde_json::to_value(&report.transitions)
        .unwrap_or_else(|err| serde_json::json!({ "error": err.to_string() }));
    [
        (
            "units",
            "units.json",
            "state, message and drain progress of every unit",
            report.units,
        ),
        (
            "stats",
            "stats.json",
            "units, queue, output, dead letter queue and drains, as GET /stats serves them",
            stats,
        ),
        (
            "config",
            "config.json",
            "the effective configuration with secrets redacted",
            report.config,
        ),
        (
            "transitions",
            "transitions.json",
            "the most recent unit state changes, oldest first",
            transitions,
        ),
    ]
    .into_iter()
    .map(
        |(name, filename, description, content)| ActionDiagnosticUnitResult {
            name: name.into(),
            filename: filename.into(),
            description: description.into(),
            content_type: "application/json".into(),
            content: serde_json::to_vec_pretty(&content).unwrap_or_default(),
            generated: Some(now.into()),
        },
    )
    .collect()
}

fn endpoint(info: &StartUpInfo) -> Result<Endpoint, ControlError> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&info.ca_cert))
        .identity(Identity::from_pem(&info.peer_cert, &info.peer_key))
        .domain_name(info.server_name.clone());
    let uri = match info.addr.strip_prefix("unix://") {
        // The authority is only used for TLS's server name, which is set above.
        Some(_) => "https://localhost".to_string(),
        None => format!("https://{}", info.addr),
    };
    Endpoint::from_shared(uri)
        .map_err(|err| ControlError::BadAddress {
            addr: info.addr.clone(),
            reason: err.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)
        .map_err(|err| ControlError::TlsMaterial(error_chain(&err)))
}

async fn connect(
    endpoint: &Endpoint,
    addr: &str,
) -> Result<Channel, Result<SessionEnd, ControlError>> {
    let result = match addr.strip_prefix("unix://") {
        Some(path) => crate::server::client::connect_unix(endpoint, path.into()).await,
        None => endpoint.connect().await,
    };
    result.map_err(|err| match tls_failure(&err) {
        Some(reason) => Err(ControlError::TlsHandshake {
            addr: addr.to_string(),
            reason,
        }),
        None => Ok(SessionEnd::Broken(format!(
            "cannot connect to {addr}: {}",
            error_chain(&err)
        ))),
    })
}

fn classify_status(status: tonic::Status, addr: &str) -> Result<SessionEnd, ControlError> {
    if status.code() == tonic::Code::PermissionDenied {
        return Err(ControlError::TokenRefused(status.message().to_string()));
    }
    if let Some(reason) = tls_failure(&status) {
        return Err(ControlError::TlsHandshake {
            addr: addr.to_string(),
            reason,
        });
    }
    Ok(SessionEnd::Broken(format!(
        "{}: {}",
        status.code(),
        error_chain(&status)
    )))
}

/// The rustls error somewhere in the chain, if any: those do not heal by retrying.
fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<tokio_rustls::rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>())
            {
                return Some(tls.to_string());
            }
        }
        current = err.source();
    }
    None
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(err) = current {
        let part = err.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = err.source();
    }
    text
}
