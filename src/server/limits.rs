//! The Producer API limits enforced below the service, where tonic's transport sees a call:
//! concurrent calls per listener, and the status of a request over `max_request_bytes`.
//!
//! [`LimitsLayer`] wraps a listener's whole router:
//! - Each call takes a permit of one semaphore per listener before its request body is
//!   read; with none left it is answered ResourceExhausted at once, so at most
//!   `max_concurrent_streams` requests are ever being buffered. The permit travels in the
//!   request's extensions ([`CallPermit`]); a PersistedIndex stream keeps a clone for as
//!   long as it is open, so open streams count too.
//! - tonic refuses a message longer than `max_decoding_message_size` from its 5-byte length
//!   prefix, before buffering it, but answers OutOfRange; gRPC's own servers answer
//!   ResourceExhausted ("try a smaller request"), which is what inputs expect, so that one
//!   status is rewritten with a message naming `max_request_bytes`.
//!
//! The per-request limits that need the decoded request (`max_event_bytes`,
//! `max_events_per_request`) are checked by the service (`producer.rs`).

use crate::config::ProducerLimits;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::http;
use tonic::{Code, Status};

/// A call's share of `max_concurrent_streams`, held until every clone is dropped.
#[derive(Clone, Debug)]
pub struct CallPermit(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// The layer for one listener's router; clones share the listener's semaphore.
#[derive(Clone, Debug)]
pub struct LimitsLayer {
    permits: Arc<Semaphore>,
    limits: ProducerLimits,
}

impl LimitsLayer {
    /// A layer enforcing `limits` (validated) for one listener.
    pub fn new(limits: ProducerLimits) -> Self {
        LimitsLayer {
            permits: Arc::new(Semaphore::new(limits.max_concurrent_streams as usize)),
            limits,
        }
    }
}

impl<S> tower::Layer<S> for LimitsLayer {
    type Service = LimitsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LimitsService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`LimitsLayer`] makes.
#[derive(Clone, Debug)]
pub struct LimitsService<S> {
    inner: S,
    layer: LimitsLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> tower::Service<http::Request<B>> for LimitsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let limits = self.layer.limits;
        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            tracing::warn!(
                max_concurrent_streams = limits.max_concurrent_streams,
                "Producer API call refused: too many calls in progress"
            );
            let status = Status::resource_exhausted(format!(
                "more than max_concurrent_streams ({}) calls are in progress on this Producer API listener; retry later",
                limits.max_concurrent_streams
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let permit = CallPermit(Arc::new(permit));
        request.extensions_mut().insert(permit.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            drop(permit);
            Ok(too_large_is_resource_exhausted(response, &limits))
        })
    }
}

/// Rewrites tonic's OutOfRange for an over-long message into ResourceExhausted.
fn too_large_is_resource_exhausted(
    response: http::Response<tonic::body::Body>,
    limits: &ProducerLimits,
) -> http::Response<tonic::body::Body> {
    let too_large = response.extensions().get::<Status>().is_some_and(|status| {
        status.code() == Code::OutOfRange && status.message().contains("message length too large")
    });
    if !too_large {
        return response;
    }
    tracing::warn!(
        max_request_bytes = limits.max_request_bytes,
        "PublishEvents refused: request larger than max_request_bytes"
    );
    Status::resource_exhausted(format!(
        "the request is larger than max_request_bytes ({} bytes); send fewer or smaller events per request",
        limits.max_request_bytes
    ))
    .into_http()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    fn limits(streams: u32) -> ProducerLimits {
        ProducerLimits {
            max_concurrent_streams: streams,
            max_request_bytes: 1024,
            ..ProducerLimits::default()
        }
    }

    fn code(response: &http::Response<tonic::body::Body>) -> Option<Code> {
        response.extensions().get::<Status>().map(Status::code)
    }

    fn answering(
        status: Status,
    ) -> impl Service<
        http::Request<()>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future = std::future::Ready<
            Result<http::Response<tonic::body::Body>, std::convert::Infallible>,
        >,
    > + Clone {
        tower::service_fn(move |_: http::Request<()>| {
            std::future::ready(Ok(status.clone().into_http()))
        })
    }

    #[tokio::test]
    async fn only_tonics_message_too_large_becomes_resource_exhausted() {
        let too_large = Status::out_of_range(
            "Error, decoded message length too large: found 2048 bytes, the limit is: 1024 bytes",
        );
        let response = LimitsLayer::new(limits(4))
            .layer(answering(too_large))
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(code(&response), Some(Code::ResourceExhausted));
        let message = response
            .extensions()
            .get::<Status>()
            .unwrap()
            .message()
            .to_string();
        assert!(
            message.contains("max_request_bytes (1024 bytes)"),
            "{message}"
        );

        let other = LimitsLayer::new(limits(4))
            .layer(answering(Status::out_of_range("some other range")))
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(code(&other), Some(Code::OutOfRange));
    }

    #[tokio::test]
    async fn a_call_over_the_limit_is_refused_until_a_permit_is_released() {
        // The inner service keeps each call's permit, as an open stream does.
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = held.clone();
        let inner = tower::service_fn(move |request: http::Request<()>| {
            let permit = request.extensions().get::<CallPermit>().cloned();
            keep.lock().unwrap().push(permit);
            std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(
                tonic::body::Body::default(),
            )))
        });
        let mut service = LimitsLayer::new(limits(2)).layer(inner);
        for _ in 0..2 {
            let response = service
                .ready()
                .await
                .unwrap()
                .call(http::Request::new(()))
                .await
                .unwrap();
            assert_eq!(code(&response), None);
        }
        let refused = service
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(code(&refused), Some(Code::ResourceExhausted));
        held.lock().unwrap().pop();
        let again = service
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(code(&again), None, "a released permit is usable again");
    }
}
