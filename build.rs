//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and writes the
//! descriptor set that gRPC reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/peer.proto",
    "proto/admin.proto",
    "proto/resource.proto",
    "proto/directory.proto",
    "proto/application.proto",
    "proto/build.proto",
    "proto/swarm.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build 0.14 prints no rerun-if-changed lines of its own.
    println!("cargo:rerun-if-changed=proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // compile_fds does not write the set: reflection needs it on disk.
    std::fs::write(
        out.join("iarnet_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    tonic_prost_build::configure()
        // JSON output of the CLI (`--output json`) prints the messages as they are.
        .type_attribute(
            ".",
            "#[derive(serde::Serialize)]\n#[serde(rename_all = \"snake_case\")]",
        )
        // Unaccounted storage is the largest uint64 on the wire; JSON says null.
        .field_attribute(
            "iarnet.resource.v1.Resources.storage_bytes",
            "#[serde(serialize_with = \"crate::proto::unlimited_as_null\")]",
        )
        // A request that does not decode is answered INVALID_ARGUMENT.
        .codec_path("crate::api::codec::StrictCodec")
        // Build context chunks are slices of one buffer, not copies.
        .bytes(".iarnet.build.v1.ContextChunk.data")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
