//! Generated protobuf types and gRPC stubs for both protocols (see `proto/`).
#![allow(missing_docs, clippy::all)]

/// Elastic Agent V2 control protocol (`package proto`).
pub mod agent {
    tonic::include_proto!("proto");
}

/// Shipper Producer API (`package elastic.agent.shipper.v1`).
pub mod shipper {
    tonic::include_proto!("elastic.agent.shipper.v1");

    /// Event messages (`package elastic.agent.shipper.v1.messages`).
    pub mod messages {
        tonic::include_proto!("elastic.agent.shipper.v1.messages");
    }

    /// The Producer server stub whose `PublishRequest` is
    /// [`crate::server::RawPublishRequest`] (build.rs): what the shipper serves.
    pub mod raw {
        include!(concat!(
            env!("OUT_DIR"),
            "/raw_server/elastic.agent.shipper.v1.rs"
        ));
    }
}
