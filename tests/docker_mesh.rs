//! End to end across nodes with the real Docker engine: node A knows node
//! B's Docker provider only through gossip, deploys onto it over
//! CallProvider, reads its logs and stops it, all through A's gRPC API;
//! the image B pulls for A reports its progress through A.

mod common;
#[path = "support/docker.rs"]
mod docker_support;
#[path = "support/registry.rs"]
mod registry;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use iarnet::proto::resource as pb;
use iarnet::proto::resource::resource_service_client::ResourceServiceClient;
use iarnet::resource::docker::{DockerProvider, DockerSettings};
use iarnet::resource::{Provider, Resources};
use tonic::Code;

use common::{start_with, wait_until};
use docker_support::{
    containers_labelled, engine, ensure_test_image, suffix, wait_for, Cleanup, TEST_IMAGE,
};

const WAIT: Duration = Duration::from_secs(30);

async fn docker_provider(id: &str, node: &str) -> Arc<dyn Provider> {
    let settings = DockerSettings {
        id: id.to_string(),
        name: "docker".into(),
        endpoint: None,
        tls: None,
        limits: Some(Resources {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            gpus: 0,
            storage_bytes: u64::MAX,
        }),
        max_deployments: None,
        labels: BTreeMap::new(),
        node_id: node.to_string(),
        gpus: Vec::new(),
    };
    Arc::new(
        DockerProvider::connect(settings)
            .await
            .expect("the local Docker engine answers"),
    )
}

fn spec(request_id: &str, provider_id: &str) -> pb::DeploySpec {
    pb::DeploySpec {
        request_id: request_id.into(),
        image: TEST_IMAGE.into(),
        command: vec!["sh".into(), "-c".into()],
        args: vec!["echo hello-from-b; sleep 300".into()],
        cpu: "250m".into(),
        memory: "32Mi".into(),
        provider_id: provider_id.into(),
        ..Default::default()
    }
}

async fn deploy(
    client: &mut ResourceServiceClient<tonic::transport::Channel>,
    spec: pb::DeploySpec,
) -> Result<(pb::Placement, pb::Deployment), tonic::Status> {
    use pb::deploy_event::Event;
    let mut stream = client.deploy(spec).await?.into_inner();
    let (mut placement, mut deployment) = (None, None);
    while let Some(ev) = stream.next().await {
        match ev?.event {
            Some(Event::Placement(p)) => placement = Some(p),
            Some(Event::Deployment(d)) => deployment = Some(d),
            _ => {}
        }
    }
    Ok((
        placement.expect("a placement event"),
        deployment.expect("a deployment event"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_through_a_lands_in_bs_docker_and_is_operated_through_a() {
    ensure_test_image();
    let run = suffix();
    let (b_id, c_id) = (format!("e2e-b-{run}"), format!("e2e-c-{run}"));
    let b_provider = format!("{b_id}/docker");
    let c_provider = format!("{c_id}/docker");
    let _clean_b = Cleanup(b_provider.clone());
    let _clean_c = Cleanup(c_provider.clone());

    let b = start_with(
        &b_id,
        &[],
        vec![docker_provider(&b_provider, &b_id).await],
        true,
    )
    .await;
    // C has remote access off: it advertises nothing and refuses CallProvider.
    let c = start_with(
        &c_id,
        &[b.advertise_addr()],
        vec![docker_provider(&c_provider, &c_id).await],
        false,
    )
    .await;
    let a = start_with(
        &format!("e2e-a-{run}"),
        &[b.advertise_addr()],
        Vec::new(),
        true,
    )
    .await;
    wait_until("A to discover B's provider and see C", WAIT, || {
        let cands = a.manager().candidates();
        let seen_c = a.members().iter().any(|m| m.id == c.id());
        if seen_c && cands.iter().any(|p| p.id == b_provider) {
            Ok(())
        } else {
            Err(format!("{cands:?}"))
        }
    })
    .await;
    assert!(a.manager().candidates().iter().all(|p| p.id != c_provider));

    let mut api = ResourceServiceClient::connect(format!("http://{}", a.local_addr()))
        .await
        .unwrap();
    let request = format!("e2e-{run}");
    let (placement, d) = deploy(&mut api, spec(&request, ""))
        .await
        .expect("deployed through A");
    assert_eq!(
        (placement.owner_id.as_str(), placement.tier.as_str()),
        (b_id.as_str(), "discovered")
    );
    assert_eq!(d.state, "running");

    // The container really runs in the engine, labelled as B's.
    let docker = engine().await;
    let found = containers_labelled(&docker, "iarnet.provider", &b_provider).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0]
            .state
            .as_ref()
            .map(|s| format!("{s:?}").to_lowercase()),
        Some("running".into())
    );
    let labels = found[0].labels.clone().unwrap_or_default();
    assert_eq!(labels.get("iarnet.node"), Some(&b_id));
    assert_eq!(labels.get("iarnet.request"), Some(&request));

    // A retry of the same request through A makes no second container.
    let (_, again) = deploy(&mut api, spec(&request, "")).await.unwrap();
    assert_eq!(again.id, d.id);
    assert_eq!(
        containers_labelled(&docker, "iarnet.provider", &b_provider)
            .await
            .len(),
        1
    );

    // Logs through A.
    let text = wait_for("the container's output through A", WAIT, || {
        let mut api = api.clone();
        let id = d.id.clone();
        async move {
            let lines: Vec<_> = api
                .logs(pb::LogsRequest {
                    id,
                    tail: 0,
                    follow: false,
                })
                .await
                .ok()?
                .into_inner()
                .collect()
                .await;
            let text: Vec<String> = lines
                .into_iter()
                .filter_map(|l| l.ok())
                .map(|l| l.text)
                .collect();
            text.iter()
                .any(|t| t.contains("hello-from-b"))
                .then_some(text)
        }
    })
    .await;
    assert!(text.iter().any(|t| t == "hello-from-b"), "{text:?}");

    // Status through A names the owner.
    let got = api
        .get_deployment(pb::GetDeploymentRequest { id: d.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.owner_id.as_str(), got.state.as_str()),
        (b_id.as_str(), "running")
    );

    // C's provider cannot be used from A: it is not advertised, so a deploy
    // pinned to it could never run; it is refused clearly and nothing starts on C.
    let err = deploy(&mut api, spec(&format!("e2e-c-{run}"), &c_provider))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not the pinned provider"), "{err:?}");
    assert!(containers_labelled(&docker, "iarnet.provider", &c_provider)
        .await
        .is_empty());

    // Stop through A: the container is gone from the engine.
    let stopped = api
        .stop(pb::StopRequest { id: d.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.state, "stopped");
    assert!(containers_labelled(&docker, "iarnet.provider", &b_provider)
        .await
        .is_empty());
    wait_until("B's freed capacity to reach A", WAIT, || {
        let p = a
            .manager()
            .candidates()
            .into_iter()
            .find(|p| p.id == b_provider)
            .unwrap();
        if p.capacity.reserved.cpu_millis == 0 {
            Ok(())
        } else {
            Err(format!("{:?}", p.capacity))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_providers_are_accepted_only_after_a_live_test() {
    ensure_test_image();
    let run = suffix();
    let node = start_with(&format!("ext-{run}"), &[], Vec::new(), true).await;
    let peer = start_with(
        &format!("ext-peer-{run}"),
        &[node.advertise_addr()],
        Vec::new(),
        true,
    )
    .await;
    let mut api = ResourceServiceClient::connect(format!("http://{}", node.local_addr()))
        .await
        .unwrap();

    // An engine that does not answer is refused, naming the endpoint.
    let err = api
        .register_provider(pb::RegisterProviderRequest {
            r#type: "docker".into(),
            name: "nowhere".into(),
            endpoint: "tcp://127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("127.0.0.1:1"), "{}", err.message());

    // A cluster's token never shows in an error.
    let err = api
        .register_provider(pb::RegisterProviderRequest {
            r#type: "k8s".into(),
            name: "cluster".into(),
            endpoint: "https://127.0.0.1:1".into(),
            token: "s3cr3t-token-value".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(!err.message().contains("s3cr3t"), "{}", err.message());
    assert!(
        node.manager().candidates().is_empty(),
        "nothing was registered"
    );

    // This machine's engine, registered as an external host, is accepted,
    // advertised (without its endpoint) and placed on.
    let entry = api
        .register_provider(pb::RegisterProviderRequest {
            r#type: "docker".into(),
            name: "local-engine".into(),
            endpoint: "unix:///var/run/docker.sock".into(),
            labels: [("site".to_string(), "lab".to_string())].into(),
            ..Default::default()
        })
        .await
        .expect("the local engine answers")
        .into_inner();
    assert_eq!(entry.tier, "external");
    let _clean = Cleanup(entry.id.clone());
    wait_until("the external provider to reach the peer", WAIT, || {
        let seen = peer
            .manager()
            .candidates()
            .into_iter()
            .find(|c| c.id == entry.id);
        match seen {
            Some(c) if c.labels.get("site").map(String::as_str) == Some("lab") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let err = api
        .register_provider(pb::RegisterProviderRequest {
            r#type: "docker".into(),
            name: "local-engine".into(),
            endpoint: "unix:///var/run/docker.sock".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "a second registration under the same name"
    );

    api.unregister_provider(pb::UnregisterProviderRequest {
        id: entry.id.clone(),
    })
    .await
    .unwrap();
    wait_until("the provider to vanish from the peer's view", WAIT, || {
        if peer.manager().candidates().iter().any(|c| c.id == entry.id) {
            Err("still there".into())
        } else {
            Ok(())
        }
    })
    .await;
    let err = api
        .unregister_provider(pb::UnregisterProviderRequest {
            id: entry.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_deploy_reports_the_owners_image_pull_through_the_home() {
    use pb::deploy_event::Event;
    ensure_test_image();
    let run = suffix();
    let docker = engine().await;
    // 8 MiB of layer: the engine reports the download in several steps.
    let registry = registry::serve(&docker, TEST_IMAGE, 8 << 20).await;
    let image = registry.image(&format!("iarnet-test/pulled-{run}"), "1");
    let _image_gone = RemoveImage(image.clone());
    let b_id = format!("pull-b-{run}");
    let b_provider = format!("{b_id}/docker");
    let _clean_b = Cleanup(b_provider.clone());
    let b = start_with(
        &b_id,
        &[],
        vec![docker_provider(&b_provider, &b_id).await],
        true,
    )
    .await;
    let a = start_with(
        &format!("pull-a-{run}"),
        &[b.advertise_addr()],
        Vec::new(),
        true,
    )
    .await;
    wait_until("A to discover B's provider", WAIT, || {
        let cands = a.manager().candidates();
        if cands.iter().any(|p| p.id == b_provider) {
            Ok(())
        } else {
            Err(format!("{cands:?}"))
        }
    })
    .await;

    let mut api = ResourceServiceClient::connect(format!("http://{}", a.local_addr()))
        .await
        .unwrap();
    let mut pulled = spec(&format!("pull-{run}"), &b_provider);
    pulled.image = image.clone();
    let mut stream = api
        .deploy(pulled)
        .await
        .expect("deploy through A")
        .into_inner();
    let mut events = Vec::new();
    while let Some(ev) = stream.next().await {
        events.push(ev.expect("a deploy event").event.expect("an event"));
    }

    // B's pull steps reached A, in the engine's order, before the end.
    let layer = &registry.new_layer["sha256:".len().."sha256:".len() + 12];
    let steps: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Pull(p) if p.layer == layer => Some(p.status.as_str()),
            _ => None,
        })
        .collect();
    let first = |s: &str| steps.iter().position(|x| *x == s);
    let (fs, complete) = (first("Pulling fs layer"), first("Pull complete"));
    assert!(
        fs.is_some() && complete.is_some() && fs < complete,
        "the new layer's steps through A: {steps:?}"
    );
    let downloading = events.iter().find_map(|e| match e {
        Event::Pull(p) if p.layer == layer && p.status == "Downloading" => Some(p),
        _ => None,
    });
    if let Some(d) = downloading {
        assert!(d.total > 0 && d.current <= d.total, "{d:?}");
    }
    let states: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::State(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    assert!(states.contains(&"pulling"), "{states:?}");
    let pull_at = events
        .iter()
        .position(|e| matches!(e, Event::Pull(_)))
        .unwrap();
    let end_at = events
        .iter()
        .position(|e| matches!(e, Event::Deployment(_)))
        .expect("the deployment ends the stream");
    assert!(pull_at < end_at);
    let Event::Deployment(d) = &events[end_at] else {
        unreachable!()
    };
    assert_eq!(
        (d.owner_id.as_str(), d.state.as_str()),
        (b_id.as_str(), "running")
    );
    api.stop(pb::StopRequest { id: d.id.clone() })
        .await
        .unwrap();
}

/// Removes an image tag when dropped, also when the test panics.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}
