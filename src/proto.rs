//! Generated protobuf and gRPC code, and the descriptor set served by reflection.

/// The node-to-node protocol (package `peer`, wire-compatible with the original).
pub mod peer {
    tonic::include_proto!("peer");
}

/// Module nesting mirrors the proto package so generated cross-package paths resolve.
#[allow(clippy::module_inception)]
pub mod iarnet {
    pub mod admin {
        pub mod v1 {
            tonic::include_proto!("iarnet.admin.v1");
        }
    }
}

/// The operator API (package `iarnet.admin.v1`).
pub use iarnet::admin::v1 as admin;

/// Encoded `FileDescriptorSet` of every iarnet proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/iarnet_descriptor.bin"));
