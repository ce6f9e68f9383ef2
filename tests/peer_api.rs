//! PeerService as other programs see it: old-protocol clients, CallProvider
//! codes, and reflection v1 (grpcurl covers v1alpha).

mod common;

use std::time::Duration;

use common::{start, wait_until};
use iarnet::proto::peer::peer_service_client::PeerServiceClient;
use iarnet::proto::peer::{
    ExchangeRequest, ProviderCallRequest, ProviderExchangeRequest, ProviderInfo,
};
use tonic::Code;

async fn client(addr: &str) -> PeerServiceClient<tonic::transport::Channel> {
    PeerServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
}

#[tokio::test]
async fn an_old_protocol_client_gets_addresses_and_providers() {
    let a = start("old-a", &[]).await;
    let b = start("old-b", &[a.advertise_addr()]).await;
    b.set_providers(vec![ProviderInfo {
        id: "old-b-docker".into(),
        r#type: "docker".into(),
        ..Default::default()
    }]);
    wait_until("a to learn b's provider", Duration::from_secs(20), || {
        if a.providers().len() == 1 {
            Ok(())
        } else {
            Err(format!("{:?}", a.providers()))
        }
    })
    .await;

    // Only the fields the original protocol defined.
    let mut c = client(&a.advertise_addr()).await;
    let peers = c
        .exchange_peers(ExchangeRequest {
            known_peers: vec!["10.9.9.9:50051".into()],
            ..Default::default()
        })
        .await
        .expect("old-style exchange answered")
        .into_inner();
    assert_eq!(peers.known_peers, vec![b.advertise_addr()]);
    let providers = c
        .exchange_providers(ProviderExchangeRequest::default())
        .await
        .expect("old-style provider exchange answered")
        .into_inner();
    assert_eq!(providers.providers.len(), 1);
    assert_eq!(providers.providers[0].id, "old-b-docker");
    assert_eq!(
        a.members().len(),
        2,
        "the old client's unversioned data changed nothing"
    );
}

#[tokio::test]
async fn call_provider_answers_with_precise_codes() {
    let mine = iarnet::resource::memory::MemoryProvider::new(
        "mine",
        iarnet::resource::Resources {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            gpus: 0,
            storage_bytes: 0,
        },
        Default::default(),
    );
    let a = common::start_with("call-a", &[], vec![std::sync::Arc::new(mine)], true).await;
    let mut c = client(&a.advertise_addr()).await;
    let call = |provider: &str, method: &str| ProviderCallRequest {
        provider_id: provider.into(),
        method: method.into(),
        payload: Vec::new(),
        ..Default::default()
    };
    let code = |r: Result<tonic::Response<_>, tonic::Status>| r.expect_err("an error").code();
    assert_eq!(
        code(c.call_provider(call("", "Deploy")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.call_provider(call("mine", "")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.call_provider(call("elsewhere", "Deploy")).await),
        Code::NotFound
    );
    let err = c
        .call_provider(call("mine", "Frobnicate"))
        .await
        .expect_err("not implemented");
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("Frobnicate"), "{}", err.message());
    let garbage = ProviderCallRequest {
        payload: vec![0xff; 7],
        ..call("mine", "status")
    };
    let err = c.call_provider(garbage).await.expect_err("malformed");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("status"), "{}", err.message());
    // A well-formed call on an owned provider answers with a typed payload.
    let ok = c
        .call_provider(call("mine", "capacity"))
        .await
        .expect("capacity")
        .into_inner();
    let entry =
        <iarnet::proto::resource::ProviderEntry as prost::Message>::decode(ok.response.as_slice())
            .expect("a ProviderEntry");
    assert!(ok.success);
    assert_eq!(entry.capacity.unwrap().total.unwrap().cpu_millis, 2000);
    assert_eq!(a.members().len(), 1);
}

#[tokio::test]
async fn a_record_without_identity_is_rejected_and_changes_nothing() {
    let a = start("bad-a", &[]).await;
    let before = a.members();
    let mut c = client(&a.advertise_addr()).await;
    let err = c
        .exchange_peers(ExchangeRequest {
            sender: Some(iarnet::proto::peer::Member {
                id: String::new(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("rejected");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("sender.id"), "{}", err.message());
    assert_eq!(before, a.members());
}

#[tokio::test]
async fn reflection_v1_lists_every_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let a = start("refl-a", &[]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", a.advertise_addr()))
        .expect("valid uri")
        .connect()
        .await
        .expect("connects");
    let mut c = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = c
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection v1 served")
        .into_inner();
    let resp = stream.message().await.expect("a reply").expect("not empty");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection reply {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for s in [
        "peer.PeerService",
        "iarnet.admin.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == s), "{s} missing from {names:?}");
    }
}

/// Sends raw bytes as a request, so malformed messages can be tried.
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

async fn raw_call(addr: &str, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn malformed_and_oversize_messages_get_clear_codes_and_change_nothing() {
    let a = start("hostile-a", &[]).await;
    let addr = a.advertise_addr();
    let before = a.members();
    // A field tag with wire type 7 (invalid), then a truncated varint.
    for (path, body) in [
        ("/peer.PeerService/ExchangePeers", vec![0x0f, 0xff]),
        ("/peer.PeerService/ExchangeProviders", vec![0x12, 0x80]),
        (
            "/peer.PeerService/CallProvider",
            vec![0x1a, 0xff, 0xff, 0xff],
        ),
        (
            "/iarnet.resource.v1.ResourceService/Deploy",
            vec![0x0a, 0x05, 0x01],
        ),
    ] {
        let s = raw_call(&addr, path, body).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{path}: {s:?}");
        assert!(s.message().contains("not a valid"), "{path}: {s:?}");
    }
    // Over the 4 MiB message limit.
    let s = raw_call(&addr, "/peer.PeerService/ExchangePeers", vec![0; 5 << 20])
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    // A well-formed message with an oversize field.
    let mut c = client(&addr).await;
    let s = c
        .exchange_peers(ExchangeRequest {
            known_peers: vec!["h".repeat(10_000)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().starts_with("known_peers[0]:"), "{s:?}");

    assert_eq!(a.members(), before, "no garbage reached the view");
    let health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
    .check(tonic_health::pb::HealthCheckRequest::default())
    .await
    .expect("still healthy");
    assert_eq!(health.into_inner().status, 1);
}
