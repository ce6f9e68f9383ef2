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
    pub mod directory {
        pub mod v1 {
            tonic::include_proto!("iarnet.directory.v1");
        }
    }
    pub mod application {
        pub mod v1 {
            tonic::include_proto!("iarnet.application.v1");
        }
    }
    pub mod build {
        pub mod v1 {
            tonic::include_proto!("iarnet.build.v1");
        }
    }
    pub mod swarm {
        pub mod v1 {
            tonic::include_proto!("iarnet.swarm.v1");
        }
    }
    pub mod resource {
        // DeployEvent's last event carries the whole Deployment (its lease
        // included); one per deploy stream, so boxing it would buy nothing.
        #[allow(clippy::large_enum_variant)]
        pub mod v1 {
            tonic::include_proto!("iarnet.resource.v1");
        }
    }
}

/// The operator API (package `iarnet.admin.v1`).
pub use iarnet::admin::v1 as admin;

/// The resource plane API and CallProvider payloads (package `iarnet.resource.v1`).
pub use iarnet::resource::v1 as resource;

/// The deployment directory between nodes (package `iarnet.directory.v1`).
pub use iarnet::directory::v1 as directory;

/// Applications from Git (package `iarnet.application.v1`).
pub use iarnet::application::v1 as application;

/// Image builds on another node's provider (package `iarnet.build.v1`).
pub use iarnet::build::v1 as build;

/// Swarm groups, pools and node health (package `iarnet.swarm.v1`).
pub use iarnet::swarm::v1 as swarm;

/// Encoded `FileDescriptorSet` of every iarnet proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/iarnet_descriptor.bin"));

/// Serializes the largest `uint64` (storage that is not accounted) as `null`, so JSON
/// output shows unaccounted storage as absent rather than 18446744073709551615.
pub fn unlimited_as_null<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    if *v == u64::MAX {
        s.serialize_none()
    } else {
        s.serialize_u64(*v)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn unaccounted_storage_is_null_in_json() {
        let r = super::iarnet::resource::v1::Resources {
            cpu_millis: 1000,
            storage_bytes: u64::MAX,
            ..Default::default()
        };
        let json = serde_json::to_value(r).unwrap();
        assert!(json["storage_bytes"].is_null(), "{json}");
        assert_eq!(json["cpu_millis"], 1000);
    }

    #[test]
    fn descriptor_set_decodes_and_keeps_the_original_wire_names() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .expect("the embedded descriptor set decodes");
        let peer = fds
            .file
            .iter()
            .find(|f| f.package() == "peer")
            .expect("package peer (the original's) is present");
        let service = &peer.service[0];
        assert_eq!(service.name(), "PeerService");
        let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        assert_eq!(
            methods,
            ["ExchangePeers", "ExchangeProviders", "CallProvider"]
        );
        let field = |msg: &str, name: &str| {
            peer.message_type
                .iter()
                .find(|m| m.name() == msg)
                .and_then(|m| m.field.iter().find(|f| f.name() == name))
                .map(|f| f.number())
        };
        assert_eq!(field("ExchangeRequest", "known_peers"), Some(1));
        assert_eq!(field("ProviderCallRequest", "payload"), Some(3));
        assert_eq!(field("ProviderCallResponse", "error"), Some(3));
        for (i, name) in ["id", "name", "type", "host", "port", "status"]
            .iter()
            .enumerate()
        {
            assert_eq!(
                field("ProviderInfo", name),
                Some(i as i32 + 1),
                "ProviderInfo.{name}"
            );
        }
    }
}
