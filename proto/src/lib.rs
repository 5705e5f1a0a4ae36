//! svs-proto: the gRPC API generated from `svs/**/*.proto` (types, client and server stubs), the
//! codec they use, and the descriptor set for gRPC reflection. docs/protocol.md says what the
//! bytes inside the messages mean.

#![forbid(unsafe_code)]

pub mod codec;

/// `svs.directory.v1`: registration, presence and the encrypted-message relay.
pub mod directory {
    tonic::include_proto!("svs.directory.v1");
}

/// `svs.stream.v1`: the video library and paced frame streams.
pub mod stream {
    tonic::include_proto!("svs.stream.v1");

    impl Frame {
        /// The picture's bytes, whichever codec (empty if none came).
        pub fn picture_bytes(&self) -> &[u8] {
            match &self.picture {
                Some(frame::Picture::Jpeg(b) | frame::Picture::H264(b)) => b,
                None => &[],
            }
        }

        /// The JPEG, if this frame is one.
        pub fn jpeg(&self) -> Option<&[u8]> {
            match &self.picture {
                Some(frame::Picture::Jpeg(b)) => Some(b),
                _ => None,
            }
        }
    }
}

/// Encoded `FileDescriptorSet` of every svs .proto file, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/svs_descriptor.bin"));
