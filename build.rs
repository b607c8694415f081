//! Compiles `proto/` with protox (pure Rust), so building needs no system `protoc`.
//!
//! Twice: once for the messages, clients and servers of both protocols (`OUT_DIR`), and
//! once more for the shipper's Producer server alone (`OUT_DIR/raw_server`), whose
//! `PublishRequest` is `server::RawPublishRequest`: the uuid and each event's bytes,
//! decoded without building `Event`s (see `src/server/raw_request.rs`). Both request
//! types have the same wire format; clients keep the generated one.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/elastic-agent-client.proto", "proto/shipper.proto"];
    for file in files.iter().chain(["proto/shipper-messages.proto"].iter()) {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;

    let raw_server = PathBuf::from(std::env::var("OUT_DIR")?).join("raw_server");
    std::fs::create_dir_all(&raw_server)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&raw_server)
        .extern_path(".elastic.agent.shipper.v1", "crate::proto::shipper")
        .extern_path(
            ".elastic.agent.shipper.v1.messages",
            "crate::proto::shipper::messages",
        )
        .extern_path(
            ".elastic.agent.shipper.v1.PublishRequest",
            "crate::server::RawPublishRequest",
        )
        .compile_fds(protox::compile(["proto/shipper.proto"], ["proto"])?)?;
    Ok(())
}
