//! The `ElasticAgent` gRPC service of the mock agent.

use super::core::UnitKey;
use super::{lock, AgentEvent, Shared, StoppedProbe, StreamSlot};
use agent_shipper::proto::agent::elastic_agent_server::ElasticAgent;
use agent_shipper::proto::agent::{
    action_response, ActionRequest, ActionResponse, CheckinExpected, CheckinObserved,
    ConnectionSupports, State,
};
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// How long the agent waits for a stream's first message.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct AgentService {
    shared: Arc<Shared>,
}

impl AgentService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        AgentService { shared }
    }
}

impl Shared {
    fn on_checkin(&self, message: &CheckinObserved, first: bool) {
        if self.retired.load(std::sync::atomic::Ordering::SeqCst) {
            // The component left the model: today's agent no longer reads it.
            self.emit(AgentEvent::CheckinIgnored);
            return;
        }
        let now = Instant::now();
        *lock(&self.last_checkin) = Some(now);
        lock(&self.checkins).push(now);
        self.emit(AgentEvent::CheckinReceived);
        self.run_stopped_probes(message);
        let (events, reply) = lock(&self.core).on_checkin(message, first);
        for event in events {
            self.emit(event);
        }
        if reply {
            self.push_expected();
        }
    }
}

impl Shared {
    /// Runs the probes of units this check-in reports STOPPED for the first time, before
    /// the check-in changes anything else.
    fn run_stopped_probes(&self, message: &CheckinObserved) {
        let newly_stopped: Vec<UnitKey> = {
            let core = lock(&self.core);
            message
                .units
                .iter()
                .filter(|unit| unit.state == State::Stopped as i32)
                .filter(|unit| {
                    core.observed(&unit.id, unit.r#type)
                        .is_none_or(|seen| seen.state != State::Stopped)
                })
                .map(|unit| (unit.id.clone(), unit.r#type))
                .collect()
        };
        if newly_stopped.is_empty() {
            return;
        }
        let due: Vec<StoppedProbe> = {
            let mut probes = lock(&self.stopped_probes);
            let (due, waiting) = std::mem::take(&mut *probes)
                .into_iter()
                .partition(|(key, _)| newly_stopped.contains(key));
            *probes = waiting;
            due.into_iter().map(|(_, probe)| probe).collect()
        };
        for probe in due {
            probe();
        }
    }
}

/// Splits `message` as the agent does when it is larger than `limit` bytes: pieces share
/// one `units_timestamp`, the first carries the non-unit fields, an empty piece ends the set.
pub(crate) fn chunk(message: CheckinExpected, limit: usize) -> Vec<CheckinExpected> {
    if message.encoded_len() <= limit || message.units.len() <= 1 {
        return vec![message];
    }
    let stamp: prost_types::Timestamp = std::time::SystemTime::now().into();
    let mut first = message.clone();
    first.units.clear();
    first.units_timestamp = Some(stamp);
    let mut pieces = vec![first];
    for unit in message.units {
        let current = pieces.last_mut().expect("at least the first piece");
        if !current.units.is_empty() && current.encoded_len() + unit.encoded_len() > limit {
            pieces.push(CheckinExpected {
                units_timestamp: Some(stamp),
                ..CheckinExpected::default()
            });
        }
        pieces.last_mut().expect("just pushed").units.push(unit);
    }
    pieces.push(CheckinExpected {
        units_timestamp: Some(stamp),
        ..CheckinExpected::default()
    });
    pieces
}

#[tonic::async_trait]
impl ElasticAgent for AgentService {
    type CheckinV2Stream = ReceiverStream<Result<CheckinExpected, Status>>;

    async fn checkin_v2(
        &self,
        request: Request<Streaming<CheckinObserved>>,
    ) -> Result<Response<Self::CheckinV2Stream>, Status> {
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, inbound.message()).await {
            Err(_) => {
                self.shared
                    .emit(AgentEvent::StreamRefused("no check-in within 5 s".into()));
                return Err(Status::deadline_exceeded(
                    "no check-in within 5 s of opening the stream",
                ));
            }
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => {
                return Err(Status::cancelled("stream closed before the first check-in"))
            }
            Ok(Ok(Some(message))) => message,
        };
        if first.token != self.shared.token {
            self.shared
                .emit(AgentEvent::StreamRefused("unknown token".into()));
            return Err(Status::permission_denied("invalid token"));
        }
        let (tx, rx) = mpsc::channel(256);
        let stream_id = {
            let mut slot = lock(&self.shared.stream);
            if slot.is_some() {
                drop(slot);
                self.shared
                    .emit(AgentEvent::StreamRefused("duplicate stream".into()));
                return Err(Status::already_exists(
                    "a CheckinV2 stream for this token is already open",
                ));
            }
            let mut next = lock(&self.shared.next_stream_id);
            *next += 1;
            *slot = Some(StreamSlot {
                id: *next,
                tx,
                chunking: self.shared.chunk_limit.is_some()
                    && first
                        .supports
                        .contains(&(ConnectionSupports::CheckinChunking as i32)),
            });
            *next
        };
        self.shared.emit(AgentEvent::StreamOpened);
        self.shared.on_checkin(&first, true);
        let shared = self.shared.clone();
        lock(&self.shared.tasks).spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                shared.on_checkin(&message, false);
            }
            let mut slot = lock(&shared.stream);
            if slot.as_ref().is_some_and(|s| s.id == stream_id) {
                *slot = None;
            }
            drop(slot);
            shared.emit(AgentEvent::StreamClosed);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ActionsStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<ActionRequest, Status>> + Send + 'static>,
    >;

    async fn actions(
        &self,
        request: Request<Streaming<ActionResponse>>,
    ) -> Result<Response<Self::ActionsStream>, Status> {
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(message))) => message,
            _ => return Err(Status::deadline_exceeded("no init response within 5 s")),
        };
        if first.token != self.shared.token {
            return Err(Status::permission_denied("invalid token"));
        }
        if first.id != "init" || first.status != action_response::Status::Success as i32 {
            return Err(Status::invalid_argument(
                "the first Actions message must be the `init` response",
            ));
        }
        let (tx, mut rx) = mpsc::channel(16);
        // The newest Actions stream is the one requests go to.
        *lock(&self.shared.actions) = Some(tx);
        self.shared.emit(AgentEvent::ActionsOpened);
        let shared = self.shared.clone();
        lock(&self.shared.tasks).spawn(async move {
            while let Ok(Some(response)) = inbound.message().await {
                if let Some(waiter) = lock(&shared.pending_actions).remove(&response.id) {
                    let _ = waiter.send(response);
                }
            }
        });
        // Like the real agent (grpc-go sends headers with the first message), the response
        // starts only when there is a first request: a unit must not wait for it.
        let Some(first_request) = rx.recv().await else {
            return Err(Status::cancelled("the agent is shutting down"));
        };
        let requests = tokio_stream::StreamExt::chain(
            tokio_stream::once(first_request),
            ReceiverStream::new(rx),
        );
        Ok(Response::new(Box::pin(requests)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_shipper::control::chunk::ExpectedAssembler;
    use agent_shipper::proto::agent::UnitExpected;

    #[test]
    fn chunks_reassemble_into_the_original_units() {
        let message = CheckinExpected {
            units: (0..20)
                .map(|i| UnitExpected {
                    id: format!("unit-{i:02}-{}", "x".repeat(50)),
                    ..UnitExpected::default()
                })
                .collect(),
            features_idx: 3,
            ..CheckinExpected::default()
        };
        let pieces = chunk(message.clone(), 300);
        assert!(pieces.len() > 3, "split into several pieces");
        let mut assembler = ExpectedAssembler::default();
        let mut whole = None;
        for piece in pieces {
            whole = assembler.push(piece).or(whole);
        }
        let whole = whole.expect("complete after the terminator");
        assert_eq!(whole.units, message.units);
        assert_eq!(whole.features_idx, 3);
    }
}
