//! The `Producer` gRPC service: PublishEvents and PersistedIndex (PROTOCOL.md §2).
//!
//! Status codes are chosen on purpose: InvalidArgument = this request can never be
//! accepted as is; FailedPrecondition = wrong server run or a stopped input, do not retry
//! as is; Unavailable = retry later (no output yet, shutting down); ResourceExhausted =
//! over a listener-wide limit, send less or later (`limits.rs`). A request breaking a
//! per-request limit (`max_events_per_request`, `max_event_bytes`) is InvalidArgument and
//! none of its events is accepted.

use super::limits::CallPermit;
use super::{Routes, ServerAddress};
use crate::config::{DataStreamDefaults, ProducerLimits};
use crate::proto::shipper::messages::Event;
use crate::proto::shipper::producer_server::Producer;
use crate::proto::shipper::{
    PersistedIndexReply, PersistedIndexRequest, PublishReply, PublishRequest,
};
use crate::queue::{AppendStop, QueueError};
use futures_util::stream::{self, BoxStream, StreamExt};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// The shortest PersistedIndex polling interval honoured.
const MIN_POLLING_INTERVAL: Duration = Duration::from_millis(10);

/// The Producer API; cheap to clone, one per listener.
#[derive(Clone)]
pub struct ProducerService {
    uuid: Arc<str>,
    routes: watch::Receiver<Arc<Routes>>,
    shutdown: CancellationToken,
    limits: ProducerLimits,
    /// The listener this service answers on: events without an input id go to the
    /// `agent-shipper` INPUT unit of this address.
    address: Option<ServerAddress>,
}

impl ProducerService {
    /// A service for one server run (`uuid`), routing by the latest `routes`; open streams
    /// end when `shutdown` is cancelled.
    pub fn new(
        uuid: &str,
        routes: watch::Receiver<Arc<Routes>>,
        shutdown: CancellationToken,
    ) -> Self {
        ProducerService {
            uuid: uuid.into(),
            routes,
            shutdown,
            limits: ProducerLimits::default(),
            address: None,
        }
    }

    /// The same service answering on the listener at `address`.
    pub fn at(mut self, address: ServerAddress) -> Self {
        self.address = Some(address);
        self
    }

    /// The same service enforcing `limits` (validated) on each request; the default is
    /// [`ProducerLimits::default`].
    pub fn with_limits(mut self, limits: ProducerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Checks the request-wide limits and each event's size; the message names the limit.
    fn check_limits(&self, events: &[Event]) -> Result<(), Status> {
        let limits = &self.limits;
        if events.len() > limits.max_events_per_request as usize {
            return Err(Status::invalid_argument(format!(
                "the request holds {} events, more than max_events_per_request ({}); split it",
                events.len(),
                limits.max_events_per_request
            )));
        }
        for (index, event) in events.iter().enumerate() {
            let bytes = event.encoded_len();
            if bytes as u64 > limits.max_event_bytes {
                return Err(Status::invalid_argument(format!(
                    "event {index} is {bytes} bytes encoded, more than max_event_bytes ({}); no event of this request was accepted",
                    limits.max_event_bytes
                )));
            }
        }
        Ok(())
    }
}

/// Fills the fields of the event's `data_stream` it left empty from `defaults`; `None`
/// when nothing was filled (the event is queued as it came).
fn fill_data_stream(event: &Event, defaults: &DataStreamDefaults) -> Option<Event> {
    let current = event.data_stream.clone().unwrap_or_default();
    let pick = |own: &str, default: &Option<String>| match default {
        Some(default) if own.is_empty() && !default.is_empty() => Some(default.clone()),
        _ => None,
    };
    let kind = pick(&current.r#type, &defaults.kind);
    let dataset = pick(&current.dataset, &defaults.dataset);
    let namespace = pick(&current.namespace, &defaults.namespace);
    if kind.is_none() && dataset.is_none() && namespace.is_none() {
        return None;
    }
    let mut filled = event.clone();
    filled.data_stream = Some(crate::proto::shipper::messages::DataStream {
        r#type: kind.unwrap_or(current.r#type),
        dataset: dataset.unwrap_or(current.dataset),
        namespace: namespace.unwrap_or(current.namespace),
    });
    Some(filled)
}

/// Checks what the output needs of an event; the message names the field.
fn validate(event: &Event) -> Result<(), String> {
    if event.timestamp.is_none() {
        return Err("timestamp is missing".into());
    }
    let Some(ds) = &event.data_stream else {
        return Err("data_stream is missing".into());
    };
    for (name, value) in [
        ("type", &ds.r#type),
        ("dataset", &ds.dataset),
        ("namespace", &ds.namespace),
    ] {
        if value.is_empty() {
            return Err(format!("data_stream.{name} is empty"));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl Producer for ProducerService {
    async fn publish_events(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishReply>, Status> {
        let request = request.into_inner();
        if !request.uuid.is_empty() && request.uuid != *self.uuid {
            let mut status = Status::failed_precondition(format!(
                "this shipper run is {}, the request names {}: the shipper restarted; resend everything after your last persisted index",
                self.uuid, request.uuid
            ));
            if let Ok(value) = self.uuid.parse() {
                status.metadata_mut().insert("x-shipper-uuid", value);
            }
            return Err(status);
        }
        if request.events.is_empty() {
            return Err(Status::invalid_argument(
                "PublishEvents needs at least one event",
            ));
        }
        self.check_limits(&request.events)?;
        let routes = self.routes.borrow().clone();
        let (Some(queue), true) = (routes.queue.clone(), routes.output_ready) else {
            return Err(Status::unavailable("no output is running; retry later"));
        };
        let mut entries = Vec::with_capacity(request.events.len());
        for (index, event) in request.events.iter().enumerate() {
            let (input_id, stream_id) = event
                .source
                .as_ref()
                .map(|s| (s.input_id.as_str(), s.stream_id.as_str()))
                .unwrap_or(("", ""));
            let route = routes.route_at(self.address.as_ref(), input_id, stream_id);
            // The unit's default data stream first: it may be what makes the event valid.
            let filled = route
                .and_then(|generation| routes.defaults.get(&generation))
                .and_then(|defaults| fill_data_stream(event, defaults));
            let event = filled.as_ref().unwrap_or(event);
            validate(event)
                .map_err(|reason| Status::invalid_argument(format!("event {index}: {reason}")))?;
            match route {
                Some(generation) => entries.push((generation, event.encode_to_vec().into())),
                // Accept the routable prefix; the first event decides the request's fate.
                None if index > 0 => break,
                None => {
                    return Err(Status::failed_precondition(format!(
                        "event {index}: input `{input_id}` (stream `{stream_id}`) is not part of any running input unit of this shipper"
                    )))
                }
            }
        }
        let appended = queue.append(entries).await.map_err(|err| match err {
            QueueError::Closed => {
                Status::unavailable("the shipper is shutting down; retry after it restarts")
            }
        })?;
        if appended.accepted == 0 {
            match &appended.stopped_by {
                Some(AppendStop::Sealed { input_unit }) => {
                    return Err(Status::failed_precondition(format!(
                        "input unit `{input_unit}` is stopping (removed from the policy): its queued events are being drained and new events are refused"
                    )))
                }
                Some(AppendStop::TooLarge { bytes }) => {
                    return Err(Status::invalid_argument(format!(
                        "event 0 is {bytes} bytes encoded, more than a queue record can hold"
                    )))
                }
                // Backpressure that names the cause: the disk, not the queue's own limit.
                Some(AppendStop::Storage { reason }) => {
                    return Err(Status::resource_exhausted(format!(
                        "queue: {reason}; nothing of this request was accepted, retry later"
                    )))
                }
                Some(AppendStop::Full) | None => {}
            }
        }
        tracing::debug!(
            accepted = appended.accepted,
            last_seq = appended.last_seq,
            "events published"
        );
        Ok(Response::new(PublishReply {
            uuid: self.uuid.to_string(),
            accepted_count: appended.accepted as u32,
            accepted_index: appended.last_seq.unwrap_or(0),
        }))
    }

    type PersistedIndexStream = BoxStream<'static, Result<PersistedIndexReply, Status>>;

    async fn persisted_index(
        &self,
        request: Request<PersistedIndexRequest>,
    ) -> Result<Response<Self::PersistedIndexStream>, Status> {
        // Open streams count against max_concurrent_streams until they end.
        let permit = request.extensions().get::<CallPermit>().cloned();
        let interval = request
            .into_inner()
            .polling_interval
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or_default();
        // A tiny interval would spin this stream; answering faster than 10 ms helps nobody.
        let interval = if interval.is_zero() {
            interval
        } else {
            interval.max(MIN_POLLING_INTERVAL)
        };
        let Some(queue) = self.routes.borrow().queue.clone() else {
            return Err(Status::unavailable(
                "no output is configured yet; retry later",
            ));
        };
        let mut persisted = queue.persisted();
        let uuid = self.uuid.to_string();
        let first = PersistedIndexReply {
            uuid: uuid.clone(),
            persisted_index: *persisted.borrow_and_update(),
        };
        if interval.is_zero() {
            return Ok(Response::new(
                stream::once(async move { Ok(first) })
                    .map(move |reply| {
                        let _held = &permit;
                        reply
                    })
                    .boxed(),
            ));
        }
        let shutdown = self.shutdown.clone();
        let updates = stream::unfold((persisted, shutdown), move |(mut persisted, shutdown)| {
            let uuid = uuid.clone();
            async move {
                // Poll at the requested interval, answering only when the value moved.
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(interval) => {}
                    }
                    match persisted.has_changed() {
                        Ok(true) => {
                            let persisted_index = *persisted.borrow_and_update();
                            let reply = PersistedIndexReply {
                                uuid,
                                persisted_index,
                            };
                            return Some((Ok(reply), (persisted, shutdown)));
                        }
                        Ok(false) => continue,
                        Err(_) => return None,
                    }
                }
            }
        });
        Ok(Response::new(
            stream::once(async move { Ok(first) })
                .chain(updates)
                .map(move |reply| {
                    let _held = &permit;
                    reply
                })
                .boxed(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::shipper::messages::{DataStream, Source};

    fn event() -> Event {
        Event {
            timestamp: Some(prost_types::Timestamp::default()),
            source: Some(Source {
                input_id: "in".into(),
                stream_id: String::new(),
            }),
            data_stream: Some(DataStream {
                r#type: "logs".into(),
                dataset: "d".into(),
                namespace: "n".into(),
            }),
            ..Event::default()
        }
    }

    use crate::queue::{Generation, MemoryQueue, Queue};
    use std::collections::HashMap;

    fn service(queue: Option<Arc<MemoryQueue>>, output_ready: bool) -> ProducerService {
        let mut inputs = HashMap::new();
        if let Some(queue) = &queue {
            let generation = queue.register(Generation {
                input_unit: "unit-in".into(),
                output_unit: "out".into(),
                output_config_idx: 1,
            });
            inputs.insert("in".to_string(), generation);
        }
        let routes = Routes {
            queue: queue.map(|q| q as Arc<dyn Queue>),
            output_ready,
            inputs,
            ..Routes::default()
        };
        let (_tx, rx) = watch::channel(Arc::new(routes));
        ProducerService::new("run-1", rx, CancellationToken::new())
    }

    async fn publish(
        service: &ProducerService,
        uuid: &str,
        events: Vec<Event>,
    ) -> Result<PublishReply, Status> {
        let request = PublishRequest {
            uuid: uuid.into(),
            events,
        };
        service
            .publish_events(Request::new(request))
            .await
            .map(Response::into_inner)
    }

    #[tokio::test]
    async fn status_codes_say_whether_to_retry() {
        let no_output = service(Some(Arc::new(MemoryQueue::new(10, 1 << 20))), false);
        assert_eq!(
            publish(&no_output, "", vec![event()])
                .await
                .unwrap_err()
                .code(),
            tonic::Code::Unavailable
        );

        let ready = service(Some(Arc::new(MemoryQueue::new(10, 1 << 20))), true);
        assert_eq!(
            publish(&ready, "", vec![]).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let wrong_run = publish(&ready, "run-0", vec![event()]).await.unwrap_err();
        assert_eq!(wrong_run.code(), tonic::Code::FailedPrecondition);
        assert_eq!(wrong_run.metadata().get("x-shipper-uuid").unwrap(), "run-1");

        let mut stranger = event();
        stranger.source.as_mut().unwrap().input_id = "who".into();
        let unknown = publish(&ready, "", vec![stranger.clone()])
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::FailedPrecondition);
        assert!(unknown.message().contains("`who`"), "{}", unknown.message());
        // A routable prefix is accepted; the stranger is left for the input to resend.
        let reply = publish(&ready, "run-1", vec![event(), stranger])
            .await
            .unwrap();
        assert_eq!(
            (
                reply.accepted_count,
                reply.accepted_index,
                reply.uuid.as_str()
            ),
            (1, 1, "run-1")
        );

        let mut bad = event();
        bad.data_stream = None;
        let invalid = publish(&ready, "", vec![event(), bad]).await.unwrap_err();
        assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
        assert!(
            invalid.message().starts_with("event 1:"),
            "{}",
            invalid.message()
        );
    }

    #[tokio::test]
    async fn full_queue_accepts_a_prefix_and_a_stopping_input_is_refused() {
        let queue = Arc::new(MemoryQueue::new(3, 1 << 20));
        let service = service(Some(queue.clone()), true);
        let reply = publish(
            &service,
            "",
            vec![event(), event(), event(), event(), event()],
        )
        .await
        .unwrap();
        assert_eq!((reply.accepted_count, reply.accepted_index), (3, 3));
        queue.seal_input("unit-in");
        let refused = publish(&service, "", vec![event()]).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(
            refused.message().contains("`unit-in` is stopping"),
            "{}",
            refused.message()
        );
    }

    #[tokio::test]
    async fn per_request_limits_are_invalid_argument_and_accept_nothing() {
        let queue = Arc::new(MemoryQueue::new(100, 1 << 20));
        let limited = service(Some(queue.clone()), true).with_limits(ProducerLimits {
            max_event_bytes: 200,
            max_events_per_request: 3,
            ..ProducerLimits::default()
        });
        let too_many = publish(&limited, "", vec![event(); 4]).await.unwrap_err();
        assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
        assert!(
            too_many.message().contains("max_events_per_request (3)"),
            "{}",
            too_many.message()
        );
        let mut big = event();
        big.source.as_mut().unwrap().stream_id = "x".repeat(300);
        let too_big = publish(&limited, "", vec![event(), big]).await.unwrap_err();
        assert_eq!(too_big.code(), tonic::Code::InvalidArgument);
        assert!(
            too_big.message().starts_with("event 1 is ")
                && too_big.message().contains("max_event_bytes (200)"),
            "{}",
            too_big.message()
        );
        // Nothing of the refused requests was queued: the next event gets id 1.
        let reply = publish(&limited, "", vec![event(); 3]).await.unwrap();
        assert_eq!((reply.accepted_count, reply.accepted_index), (3, 3));
    }

    #[test]
    fn validation_names_the_field() {
        assert!(validate(&event()).is_ok());
        let mut no_ts = event();
        no_ts.timestamp = None;
        assert_eq!(validate(&no_ts).unwrap_err(), "timestamp is missing");
        let mut no_dataset = event();
        no_dataset.data_stream.as_mut().unwrap().dataset.clear();
        assert_eq!(
            validate(&no_dataset).unwrap_err(),
            "data_stream.dataset is empty"
        );
    }

    #[test]
    fn a_default_data_stream_fills_only_what_the_event_left_empty() {
        let defaults = DataStreamDefaults {
            kind: Some("logs".into()),
            dataset: Some("app.events".into()),
            namespace: Some("default".into()),
        };
        assert_eq!(fill_data_stream(&event(), &defaults), None, "complete");
        let mut partial = event();
        partial.data_stream.as_mut().unwrap().dataset.clear();
        let filled = fill_data_stream(&partial, &defaults).unwrap();
        assert_eq!(
            filled.data_stream,
            Some(DataStream {
                r#type: "logs".into(),
                dataset: "app.events".into(),
                namespace: "n".into(),
            })
        );
        let mut bare = event();
        bare.data_stream = None;
        let filled = fill_data_stream(&bare, &defaults).unwrap();
        assert_eq!(filled.data_stream.unwrap().dataset, "app.events");
        assert_eq!(filled.source, bare.source);
    }

    #[tokio::test]
    async fn an_unnamed_event_on_an_inputs_listener_is_its_own_with_its_defaults() {
        let queue = Arc::new(MemoryQueue::new(10, 1 << 20));
        let generation = queue.register(Generation {
            input_unit: "agent-shipper-default-app".into(),
            output_unit: "out".into(),
            output_config_idx: 1,
        });
        let address = ServerAddress::parse("/run/app.sock").unwrap();
        let routes = Routes {
            queue: Some(queue.clone() as Arc<dyn Queue>),
            output_ready: true,
            unnamed_at: HashMap::from([(address.clone(), generation)]),
            defaults: HashMap::from([(
                generation,
                DataStreamDefaults {
                    kind: Some("logs".into()),
                    dataset: Some("app.events".into()),
                    namespace: Some("default".into()),
                },
            )]),
            ..Routes::default()
        };
        let (_tx, rx) = watch::channel(Arc::new(routes));
        let at_app =
            ProducerService::new("run-1", rx.clone(), CancellationToken::new()).at(address);
        let mut unnamed = event();
        unnamed.source = None;
        unnamed.data_stream = None;
        let reply = publish(&at_app, "", vec![unnamed.clone()]).await.unwrap();
        assert_eq!(reply.accepted_count, 1);
        let elsewhere = ProducerService::new("run-1", rx, CancellationToken::new())
            .at(ServerAddress::parse("/run/other.sock").unwrap());
        let mut complete = event();
        complete.source = None;
        let err = publish(&elsewhere, "", vec![complete]).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
        let err = publish(&elsewhere, "", vec![unnamed]).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    }
}
