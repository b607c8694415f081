//! End-to-end: the Producer API limits of an INPUT unit (`max_event_bytes`,
//! `max_request_bytes`, `max_events_per_request`, `max_concurrent_streams`). Each violation
//! gets its exact gRPC status, and the shipper keeps serving: a valid publish after each one
//! is accepted and delivered, and nothing of a refused request is.

mod common;

use agent_shipper::proto::agent::{State, UnitLogLevel, UnitType};
use agent_shipper::proto::shipper::messages::Event;
use agent_shipper::proto::shipper::producer_client::ProducerClient;
use agent_shipper::proto::shipper::{PersistedIndexRequest, PublishRequest};
use common::{revision, Harness, WAIT};
use integration::agent::UnitSpec;
use integration::loadgen::{self, LoadgenOptions};
use serde_json::json;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

const RUN: &str = "limits";
const INPUT_ID: &str = "filestream-limits";
const MAX_EVENT_BYTES: usize = 4 << 10;
const MAX_REQUEST_BYTES: usize = 32 << 10;
const MAX_EVENTS: usize = 50;
const MAX_STREAMS: usize = 4;

fn limited_input(h: &Harness, unit_id: &str, limits: serde_json::Value) -> UnitSpec {
    let mut config = json!({"id": unit_id, "type": "shipper", "server": h.socket(), "units": [{"id": INPUT_ID}]});
    for (key, value) in limits.as_object().unwrap() {
        config[key] = value.clone();
    }
    UnitSpec {
        id: unit_id.into(),
        kind: UnitType::Input,
        config,
        log_level: UnitLogLevel::Info,
    }
}

/// Events numbered `seqs`, each with a `message` of about `bytes` bytes.
fn events(seqs: std::ops::Range<u64>, bytes: usize) -> Vec<Event> {
    let mut options = LoadgenOptions::new("", INPUT_ID, 0);
    options.run = RUN.into();
    options.event_bytes = bytes;
    seqs.map(|seq| loadgen::make_event(&options, seq)).collect()
}

async fn publish(
    client: &mut ProducerClient<Channel>,
    events: Vec<Event>,
) -> Result<u32, tonic::Status> {
    let request = PublishRequest {
        uuid: String::new(),
        events,
    };
    tokio::time::timeout(WAIT, client.publish_events(request))
        .await
        .expect("PublishEvents answers in time")
        .map(|reply| reply.into_inner().accepted_count)
}

/// Publishes a valid batch of `seqs` and asserts every event is accepted.
async fn publish_valid(
    client: &mut ProducerClient<Channel>,
    seqs: std::ops::Range<u64>,
    accepted: &mut Vec<u64>,
) {
    let count = seqs.end - seqs.start;
    let got = publish(client, events(seqs.clone(), 100))
        .await
        .unwrap_or_else(|status| {
            panic!("a valid publish of {seqs:?} after a violation was refused: {status}")
        });
    assert_eq!(u64::from(got), count, "all of {seqs:?} accepted");
    accepted.extend(seqs);
}

fn assert_status(result: Result<u32, tonic::Status>, code: Code, needle: &str) {
    match result {
        Ok(accepted) => panic!("expected {code:?}, got {accepted} events accepted"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status}");
            assert!(
                status.message().contains(needle),
                "`{needle}` not in: {}",
                status.message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_violation_gets_its_status_and_the_shipper_keeps_serving() {
    let h = Harness::start(|_| {}).await;
    let limits = json!({
        "max_event_bytes": MAX_EVENT_BYTES,
        "max_request_bytes": "32KiB",
        "max_events_per_request": MAX_EVENTS,
        "max_concurrent_streams": MAX_STREAMS,
    });
    h.agent.apply(&revision(
        1,
        vec![h.output_unit(), limited_input(&h, "input-a", limits)],
    ));
    h.agent
        .wait_for_states(
            WAIT,
            &[
                ("input-a", UnitType::Input),
                ("output-default", UnitType::Output),
            ],
            State::Healthy,
        )
        .await
        .unwrap();
    let mut client = loadgen::connect(&h.socket()).await.unwrap();
    let mut accepted = Vec::new();
    publish_valid(&mut client, 0..5, &mut accepted).await;

    // Too many events in one request: InvalidArgument, none of them taken.
    let too_many = publish(&mut client, events(100..100 + MAX_EVENTS as u64 + 1, 10)).await;
    assert_status(
        too_many,
        Code::InvalidArgument,
        "max_events_per_request (50)",
    );
    publish_valid(&mut client, 5..10, &mut accepted).await;

    // One event over max_event_bytes, after a valid one: the whole request is refused.
    let mut oversized = events(200..201, 100);
    oversized.extend(events(201..202, MAX_EVENT_BYTES + 1));
    assert_status(
        publish(&mut client, oversized).await,
        Code::InvalidArgument,
        "event 1 is",
    );
    publish_valid(&mut client, 10..15, &mut accepted).await;

    // A request over max_request_bytes made of events each under max_event_bytes, and a
    // far larger one: ResourceExhausted, decided from the length prefix.
    let over_request = events(
        300..300 + (MAX_REQUEST_BYTES / (3 << 10)) as u64 + 2,
        3 << 10,
    );
    assert_status(
        publish(&mut client, over_request).await,
        Code::ResourceExhausted,
        "max_request_bytes",
    );
    let huge = events(400..401, 8 << 20);
    assert_status(
        publish(&mut client, huge).await,
        Code::ResourceExhausted,
        "max_request_bytes",
    );
    publish_valid(&mut client, 15..20, &mut accepted).await;

    // max_concurrent_streams calls held open (PersistedIndex streams): one more is refused.
    let mut streams = Vec::new();
    for _ in 0..MAX_STREAMS {
        let request = PersistedIndexRequest {
            polling_interval: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
        };
        let mut stream = tokio::time::timeout(WAIT, client.persisted_index(request))
            .await
            .expect("PersistedIndex answers in time")
            .expect("a stream under the limit is accepted")
            .into_inner();
        let first = tokio::time::timeout(WAIT, stream.message())
            .await
            .unwrap()
            .unwrap();
        assert!(first.is_some(), "the first persisted index arrives at once");
        streams.push(stream);
    }
    assert_status(
        publish(&mut client, events(500..501, 100)).await,
        Code::ResourceExhausted,
        "max_concurrent_streams (4)",
    );
    let over = tokio::time::timeout(
        WAIT,
        client.persisted_index(PersistedIndexRequest::default()),
    )
    .await
    .unwrap();
    assert_eq!(
        over.map(|_| ()).unwrap_err().code(),
        Code::ResourceExhausted
    );

    // Closing the streams frees their share; the server sees the resets asynchronously, so
    // wait for that (bounded) before the valid publish.
    drop(streams);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let request = PersistedIndexRequest::default();
        match tokio::time::timeout(WAIT, client.persisted_index(request))
            .await
            .unwrap()
        {
            Ok(_) => break,
            Err(status)
                if status.code() == Code::ResourceExhausted
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(status) => panic!("closed streams were not released: {status}"),
        }
    }
    publish_valid(&mut client, 20..25, &mut accepted).await;

    // Everything accepted is delivered once; nothing of a refused request is.
    let counts = loadgen::wait_for_seqs_in_files(&[h.output_file()], RUN, &accepted, WAIT)
        .await
        .unwrap();
    let mut delivered: Vec<u64> = counts.keys().copied().collect();
    delivered.sort_unstable();
    assert_eq!(
        delivered, accepted,
        "exactly the accepted events were delivered"
    );
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconsistent_limits_fail_the_unit_naming_the_key() {
    let h = Harness::start(|_| {}).await;
    let limits = json!({"max_event_bytes": "2MiB", "max_request_bytes": "1MiB"});
    h.agent.apply(&revision(
        1,
        vec![h.output_unit(), limited_input(&h, "input-bad", limits)],
    ));
    h.agent
        .wait_for_states(WAIT, &[("input-bad", UnitType::Input)], State::Failed)
        .await
        .unwrap();
    let message = h
        .agent
        .observed("input-bad", UnitType::Input)
        .unwrap()
        .message;
    assert!(message.contains("max_event_bytes"), "{message}");
    h.stop().await;
}
