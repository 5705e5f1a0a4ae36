//! Compiles the .proto files under svs/ (in this crate's directory) with protox (pure Rust, no
//! system protoc) and writes the descriptor set the services register for gRPC reflection.
use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "svs/directory/v1/directory.proto",
    "svs/directory/v1/groups.proto",
    "svs/stream/v1/stream.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    println!(
        "cargo:rerun-if-changed={}",
        proto_root.join("svs").display()
    );
    for proto in PROTOS {
        println!(
            "cargo:rerun-if-changed={}",
            proto_root.join(proto).display()
        );
    }
    let fds = protox::compile(PROTOS, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("svs_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Envelope fields are shared between many subscribers: Bytes makes each copy a refcount.
        .bytes(".svs")
        // Undecodable requests are INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
        .codec_path("crate::codec::ProtoCodec")
        .compile_fds(fds)?;
    Ok(())
}
