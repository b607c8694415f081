//! The `Producer` gRPC service: PublishEvents and PersistedIndex (PROTOCOL.md §2).
//!
//! Status codes are chosen on purpose: InvalidArgument = this request can never be
//! accepted as is; FailedPrecondition = wrong server run or a stopped input, do not retry
//! as is; Unavailable = retry later (no output yet, shutting down); ResourceExhausted =
//! over a listener-wide limit, send less or later (`limits.rs`). A request breaking a
//! per-request limit (`max_events_per_request`, `max_event_bytes`) is InvalidArgument and
//! none of its events is accepted.

use super::event_check::{check_event, validate};
use super::limits::CallPermit;
use super::{RawPublishRequest, Routes, ServerAddress};
use crate::config::{DataStreamDefaults, ProducerLimits};
use crate::proto::shipper::raw::producer_server::Producer;
use crate::proto::shipper::{PersistedIndexReply, PersistedIndexRequest, PublishReply};
use crate::queue::{AppendStop, QueueError};
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
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
    /// An event's size is its bytes as sent, which the queue stores unchanged.
    fn check_limits(&self, events: &[Bytes]) -> Result<(), Status> {
        let limits = &self.limits;
        if events.len() > limits.max_events_per_request as usize {
            return Err(Status::invalid_argument(format!(
                "the request holds {} events, more than max_events_per_request ({}); split it",
                events.len(),
                limits.max_events_per_request
            )));
        }
        for (index, event) in events.iter().enumerate() {
            let bytes = event.len();
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

/// The event's bytes with the `data_stream` fields it left empty filled from `defaults`;
/// `None` when it needs nothing (the event is queued as it came). A second `data_stream`
/// holding only the filled fields is appended: protobuf merges a repeated message field
/// field by field, so the event's own values stay and its bytes are not re-encoded (one
/// copy, only for the events that need it).
fn fill_data_stream(
    event: &Bytes,
    own: Option<[&str; 3]>,
    defaults: &DataStreamDefaults,
) -> Option<Bytes> {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let own = own.unwrap_or([""; 3]);
    let wanted = [&defaults.kind, &defaults.dataset, &defaults.namespace];
    let mut filled = Vec::new();
    for (number, (own, default)) in (1u32..).zip(own.into_iter().zip(wanted)) {
        match default.as_deref() {
            Some(default) if own.is_empty() && !default.is_empty() => {
                encode_key(number, WireType::LengthDelimited, &mut filled);
                encode_varint(default.len() as u64, &mut filled);
                filled.extend_from_slice(default.as_bytes());
            }
            _ => {}
        }
    }
    if filled.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(event.len() + filled.len() + 6);
    out.extend_from_slice(event);
    encode_key(3, WireType::LengthDelimited, &mut out);
    encode_varint(filled.len() as u64, &mut out);
    out.extend_from_slice(&filled);
    Some(Bytes::from(out))
}

#[tonic::async_trait]
impl Producer for ProducerService {
    async fn publish_events(
        &self,
        request: Request<RawPublishRequest>,
    ) -> Result<Response<PublishReply>, Status> {
        let request = request.into_inner();
        if let Some(error) = request.malformed {
            return Err(Status::invalid_argument(format!(
                "the request is not a valid PublishRequest: {error}"
            )));
        }
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
        // Each event is checked by walking its bytes and queued as it came (zero copy).
        let mut entries = Vec::with_capacity(request.events.len());
        for (index, event) in request.events.into_iter().enumerate() {
            let routed = {
                let view = check_event(&event)
                    .map_err(|err| Status::invalid_argument(format!("event {index}: {err}")))?;
                let route = routes.route_at(self.address.as_ref(), view.input_id, view.stream_id);
                // The unit's default data stream first: it may be what makes the event valid.
                let filled = route
                    .and_then(|generation| routes.defaults.get(&generation))
                    .and_then(|defaults| fill_data_stream(&event, view.data_stream, defaults));
                let parts = match &filled {
                    Some(filled) => check_event(filled).map_err(|err| {
                        Status::internal(format!("event {index}: filling data_stream: {err}"))
                    })?,
                    None => view,
                };
                validate(&parts).map_err(|reason| {
                    Status::invalid_argument(format!("event {index}: {reason}"))
                })?;
                route
                    .map(|generation| (generation, filled))
                    .ok_or_else(|| (view.input_id.to_string(), view.stream_id.to_string()))
            };
            match routed {
                Ok((generation, filled)) => entries.push((generation, filled.unwrap_or(event))),
                // Accept the routable prefix; the first event decides the request's fate.
                Err(_) if index > 0 => break,
                Err((input_id, stream_id)) => {
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
    use crate::proto::shipper::messages::{DataStream, Event, Source};
    use prost::Message;

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
        let events = events
            .iter()
            .map(|event| Bytes::from(event.encode_to_vec()))
            .collect();
        let request = RawPublishRequest::new(uuid, events);
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

    /// The verdict of the Event-building path this service had before it walked bytes.
    fn validate_decoded(event: &Event) -> Result<(), String> {
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

    fn validate_bytes(event: &Event) -> Result<(), String> {
        let bytes = event.encode_to_vec();
        validate(&check_event(&bytes).map_err(|err| err.to_string())?)
    }

    #[test]
    fn validation_names_the_field() {
        assert!(validate_bytes(&event()).is_ok());
        let mut no_ts = event();
        no_ts.timestamp = None;
        assert_eq!(validate_bytes(&no_ts).unwrap_err(), "timestamp is missing");
        let mut no_dataset = event();
        no_dataset.data_stream.as_mut().unwrap().dataset.clear();
        assert_eq!(
            validate_bytes(&no_dataset).unwrap_err(),
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
        let fill = |event: &Event| {
            let bytes = Bytes::from(event.encode_to_vec());
            let view = check_event(&bytes).unwrap();
            fill_data_stream(&bytes, view.data_stream, &defaults)
                .map(|filled| Event::decode(filled).expect("the filled bytes are an Event"))
        };
        assert_eq!(fill(&event()), None, "complete");
        let mut partial = event();
        partial.data_stream.as_mut().unwrap().dataset.clear();
        let filled = fill(&partial).unwrap();
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
        let filled = fill(&bare).unwrap();
        assert_eq!(filled.data_stream.unwrap().dataset, "app.events");
        assert_eq!(filled.source, bare.source);
        assert_eq!(filled.timestamp, bare.timestamp);
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

    #[tokio::test]
    async fn malformed_events_are_invalid_argument_naming_the_event_and_field() {
        let ready = service(Some(Arc::new(MemoryQueue::new(10, 1 << 20))), true);
        let good = Bytes::from(event().encode_to_vec());
        // Event 1's `fields` holds a map entry whose key is not UTF-8.
        let mut bad = event().encode_to_vec();
        bad.extend_from_slice(&[0x2a, 0x06, 0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe]);
        let request = RawPublishRequest::new("", vec![good.clone(), Bytes::from(bad)]);
        let refused = ready
            .publish_events(Request::new(request))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused
                .message()
                .starts_with("event 1: malformed protobuf in fields:")
                && refused.message().contains("UTF-8"),
            "{}",
            refused.message()
        );
        // A body that is not a PublishRequest at all.
        let body = RawPublishRequest::decode(&[0x12, 0x05, 0x0a][..]).unwrap();
        let refused = ready.publish_events(Request::new(body)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains("not a valid PublishRequest"),
            "{}",
            refused.message()
        );
        // Nothing was queued: the next event gets id 1.
        let reply = ready
            .publish_events(Request::new(RawPublishRequest::new("", vec![good])))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.accepted_index, 1);
    }

    mod equivalence {
        //! The byte-walking path against the Event-building one it replaced.
        use super::*;
        use crate::proto::shipper::messages::{value::Kind, ListValue, Struct, Value};
        use crate::proto::shipper::PublishRequest;
        use crate::queue::Queue;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![Just(String::new()), "[a-z]{1,3}", "\\PC{0,6}"]
        }

        fn timestamp() -> impl Strategy<Value = prost_types::Timestamp> {
            (any::<i64>(), any::<i32>())
                .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos })
        }

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(None),
                any::<i32>().prop_map(|v| Some(Kind::NullValue(v))),
                (-1e12f64..1e12).prop_map(|v| Some(Kind::Float64Value(v))),
                (-1e6f32..1e6).prop_map(|v| Some(Kind::Float32Value(v))),
                any::<i32>().prop_map(|v| Some(Kind::Int32Value(v))),
                any::<i64>().prop_map(|v| Some(Kind::Int64Value(v))),
                any::<u32>().prop_map(|v| Some(Kind::Uint32Value(v))),
                any::<u64>().prop_map(|v| Some(Kind::Uint64Value(v))),
                text().prop_map(|v| Some(Kind::StringValue(v))),
                any::<bool>().prop_map(|v| Some(Kind::BoolValue(v))),
                timestamp().prop_map(|v| Some(Kind::TimestampValue(v))),
            ]
            .prop_map(|kind| Value { kind });
            leaf.prop_recursive(4, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::hash_map(text(), inner.clone(), 0..4)
                        .prop_map(|data| Some(Kind::StructValue(Struct { data }))),
                    prop::collection::vec(inner, 0..4)
                        .prop_map(|values| Some(Kind::ListValue(ListValue { values }))),
                ]
                .prop_map(|kind| Value { kind })
            })
        }

        fn structure() -> impl Strategy<Value = Struct> {
            prop::collection::hash_map(text(), value(), 0..4).prop_map(|data| Struct { data })
        }

        fn any_event() -> impl Strategy<Value = Event> {
            (
                prop::option::of(timestamp()),
                prop::option::of((prop_oneof![Just(""), Just("in"), Just("who")], text())),
                prop::option::of((text(), text(), text())),
                prop::option::of(structure()),
                prop::option::of(structure()),
            )
                .prop_map(|(timestamp, source, data_stream, metadata, fields)| Event {
                    timestamp,
                    source: source.map(|(input_id, stream_id)| Source {
                        input_id: input_id.into(),
                        stream_id,
                    }),
                    data_stream: data_stream.map(|(r#type, dataset, namespace)| DataStream {
                        r#type,
                        dataset,
                        namespace,
                    }),
                    metadata,
                    fields,
                })
        }

        /// Bytes near an encoded event: some flipped, cut or inserted.
        fn mangled() -> impl Strategy<Value = Vec<u8>> {
            (
                any_event(),
                prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
            )
                .prop_map(|(event, edits)| {
                    let mut bytes = event.encode_to_vec();
                    for (at, byte, how) in edits {
                        if bytes.is_empty() {
                            bytes.push(byte);
                            continue;
                        }
                        let at = at.index(bytes.len());
                        match how {
                            0 => bytes[at] = byte,
                            1 => bytes.insert(at, byte),
                            _ => bytes.truncate(at),
                        }
                    }
                    bytes
                })
        }

        /// What the old path decided for `bytes` arriving as one event of a request:
        /// the request decodes (else the whole request failed), then `validate`.
        fn old_path(bytes: &[u8]) -> Option<Event> {
            let mut request = vec![0x12];
            prost::encoding::encode_varint(bytes.len() as u64, &mut request);
            request.extend_from_slice(bytes);
            let mut decoded = PublishRequest::decode(request.as_slice()).ok()?;
            decoded.events.pop()
        }

        fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
            let old = old_path(bytes);
            let new = check_event(bytes);
            match (&old, &new) {
                (Some(event), Ok(view)) => {
                    prop_assert_eq!(validate(view), validate_decoded(event));
                    let source = event.source.clone().unwrap_or_default();
                    prop_assert_eq!(
                        (view.input_id, view.stream_id),
                        (source.input_id.as_str(), source.stream_id.as_str())
                    );
                    prop_assert_eq!(view.has_timestamp, event.timestamp.is_some());
                    let ds = event.data_stream.as_ref();
                    prop_assert_eq!(
                        view.data_stream.map(|p| p.map(str::to_string)),
                        ds.map(|d| [d.r#type.clone(), d.dataset.clone(), d.namespace.clone()])
                    );
                    // What is queued is what the output decodes.
                    let again = Event::decode(bytes).ok();
                    prop_assert_eq!(again.as_ref(), Some(event));
                }
                (None, Err(_)) => {}
                _ => prop_assert!(false, "prost {:?}, walker {:?}", old.is_some(), new),
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_event_gets_the_old_verdict(event in any_event()) {
                let bytes = event.encode_to_vec();
                prop_assert!(check_event(&bytes).is_ok());
                agree(&bytes)?;
            }

            #[test]
            fn damaged_bytes_are_refused_exactly_when_prost_refuses_them(bytes in mangled()) {
                agree(&bytes)?;
            }

            #[test]
            fn any_bytes_are_refused_exactly_when_prost_refuses_them(
                bytes in prop::collection::vec(any::<u8>(), 0..64)
            ) {
                agree(&bytes)?;
            }

            #[test]
            fn the_service_queues_the_bytes_it_was_sent(event in any_event()) {
                let queue = Arc::new(MemoryQueue::new(10, 1 << 20));
                let service = service(Some(queue.clone()), true);
                let bytes = Bytes::from(event.encode_to_vec());
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let reply = runtime.block_on(service.publish_events(Request::new(
                    RawPublishRequest::new("", vec![bytes.clone()]),
                )));
                let source = event.source.clone().unwrap_or_default();
                let routable = source.input_id == "in";
                match (validate_decoded(&event), routable) {
                    (Ok(()), true) => {
                        prop_assert_eq!(reply.map(|r| r.into_inner().accepted_count).ok(), Some(1));
                        let records = runtime.block_on(queue.read(10, 1 << 20)).unwrap();
                        prop_assert_eq!(&records[0].payload, &bytes);
                        prop_assert_eq!(Event::decode(records[0].payload.as_ref()).unwrap(), event);
                    }
                    (Err(reason), _) => {
                        let status = reply.unwrap_err();
                        prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
                        prop_assert_eq!(status.message(), format!("event 0: {reason}"));
                    }
                    (Ok(()), false) => {
                        prop_assert_eq!(reply.unwrap_err().code(), tonic::Code::FailedPrecondition);
                    }
                }
            }
        }

        #[test]
        fn deep_nesting_stops_where_prost_stops() {
            // `fields` → entry → value → struct → entry → value … as deep as asked.
            fn nested(levels: usize) -> Vec<u8> {
                let (mut value, mut structure) = (Vec::new(), Vec::new());
                for _ in 0..levels {
                    let mut entry = vec![0x12];
                    prost::encoding::encode_varint(value.len() as u64, &mut entry);
                    entry.extend_from_slice(&value);
                    structure = vec![0x0a];
                    prost::encoding::encode_varint(entry.len() as u64, &mut structure);
                    structure.extend_from_slice(&entry);
                    value = vec![0x52];
                    prost::encoding::encode_varint(structure.len() as u64, &mut value);
                    value.extend_from_slice(&structure);
                }
                let mut event = vec![0x2a];
                prost::encoding::encode_varint(structure.len() as u64, &mut event);
                event.extend_from_slice(&structure);
                event
            }
            let mut verdicts = Vec::new();
            for levels in 28..36 {
                let bytes = nested(levels);
                agree(&bytes).unwrap();
                verdicts.push(check_event(&bytes).is_ok());
            }
            assert!(
                verdicts.contains(&true) && verdicts.contains(&false),
                "{verdicts:?}"
            );
            // A wrongly typed map field is read as a length, as prost reads it.
            let quirk = [0x2a, 0x02, 0x08, 0x00];
            agree(&quirk).unwrap();
            assert!(check_event(&quirk).is_ok());
        }
    }
}
