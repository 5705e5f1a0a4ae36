//! Generated protocol types and the descriptor set for gRPC reflection.

/// `svs.directory.v1`: registration, presence and the encrypted-message relay.
pub mod directory {
    tonic::include_proto!("svs.directory.v1");
}

/// `svs.stream.v1`: the video library and paced frame streams.
pub mod stream {
    tonic::include_proto!("svs.stream.v1");
}

/// Encoded `FileDescriptorSet` of every svs .proto file, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/svs_descriptor.bin"));
