//! The Docker provider against this machine's real engine: no mocks. The
//! image is built locally (tests/support/build-test-image.sh) because no
//! registry is reachable; every test has its own provider id and request
//! ids, and removes its containers even when it fails.

#[path = "support/docker.rs"]
mod docker_support;

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::query_parameters::InspectContainerOptions;
use futures::StreamExt;
use iarnet::resource::docker::{DockerProvider, DockerSettings};
use iarnet::resource::{
    DeploySpec, DeployState, LogOptions, Progress, ProgressSink, Provider, ResourceError,
    Resources, RestartPolicy,
};
use tonic::Code;

use docker_support::{
    containers_labelled, engine, ensure_test_image, suffix, wait_for, Cleanup, TEST_IMAGE,
};

const WAIT: Duration = Duration::from_secs(30);

fn limits() -> Resources {
    Resources {
        cpu_millis: 2000,
        memory_bytes: 1 << 30,
        gpus: 0,
        storage_bytes: 0,
    }
}

fn settings(id: &str, limits: Resources) -> DockerSettings {
    DockerSettings {
        id: id.to_string(),
        name: format!("{id} (test)"),
        endpoint: None,
        tls: None,
        limits: Some(limits),
        max_deployments: None,
        labels: BTreeMap::from([("region".to_string(), "test".to_string())]),
        node_id: "node-test".into(),
        gpus: Vec::new(),
    }
}

/// A provider with a fresh id, and the guard that removes its containers.
async fn provider(test: &str, limits: Resources) -> (DockerProvider, Cleanup) {
    ensure_test_image();
    let id = format!("t-{test}-{}", suffix());
    let cleanup = Cleanup(id.clone());
    let p = DockerProvider::connect(settings(&id, limits))
        .await
        .expect("connect to the local Docker engine");
    (p, cleanup)
}

fn spec(request_id: &str, script: &str) -> DeploySpec {
    DeploySpec {
        request_id: request_id.to_string(),
        name: "test".into(),
        image: TEST_IMAGE.into(),
        command: vec!["sh".into(), "-c".into()],
        args: vec![script.to_string()],
        resources: Resources {
            cpu_millis: 250,
            memory_bytes: 64 << 20,
            gpus: 0,
            storage_bytes: 0,
        },
        labels: BTreeMap::from([("team".to_string(), "iarnet-tests".to_string())]),
        ..Default::default()
    }
}

const HELLO: &str = "echo hello-iarnet; echo oops-iarnet >&2; sleep 300";

async fn reserved(p: &DockerProvider) -> Resources {
    p.describe().await.expect("describe").capacity.reserved
}

#[tokio::test]
async fn deploy_runs_a_labelled_limited_container_and_stop_removes_it() {
    let (p, _cleanup) = provider("run", limits()).await;
    let docker = engine().await;
    let rid = format!("run-{}", suffix());
    let (sink, mut rx) = ProgressSink::channel();
    let d = p.deploy(&spec(&rid, HELLO), sink).await.expect("deploy");

    assert_eq!(d.request_id, rid);
    assert_eq!(d.provider_id, p.id());
    assert_eq!(d.state(), DeployState::Running, "{:?}", d.history);
    let states: Vec<DeployState> = d.history.iter().map(|c| c.state.clone()).collect();
    assert_eq!(
        states,
        [
            DeployState::Pending,
            DeployState::Starting,
            DeployState::Running
        ]
    );
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    for s in [
        DeployState::Pending,
        DeployState::Starting,
        DeployState::Running,
    ] {
        assert!(
            events.contains(&Progress::State(s.clone())),
            "{s} in {events:?}"
        );
    }

    // What the engine itself says.
    let name = p.container_name(&d.id);
    assert!(name.starts_with(&format!("{}.", d.id)), "{name}");
    let c = docker
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
        .expect("the container exists");
    assert_eq!(c.state.as_ref().and_then(|s| s.running), Some(true));
    let labels = c.config.as_ref().and_then(|c| c.labels.clone()).unwrap();
    for (k, v) in [
        ("iarnet.managed", "true"),
        ("iarnet.provider", p.id()),
        ("iarnet.node", "node-test"),
        ("iarnet.request", rid.as_str()),
        ("iarnet.cpu_millis", "250"),
        ("iarnet.memory_bytes", "67108864"),
        ("iarnet.gpus", ""),
        ("iarnet.gpu_shared", "false"),
        ("team", "iarnet-tests"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    let hc = c.host_config.unwrap();
    assert_eq!(hc.nano_cpus, Some(250_000_000));
    assert_eq!(hc.memory, Some(64 << 20));
    assert!(
        hc.device_requests.unwrap_or_default().is_empty(),
        "no GPUs asked"
    );

    // The provider's own view.
    assert_eq!(reserved(&p).await, spec(&rid, HELLO).resources);
    assert_eq!(p.status(&d.id).await.unwrap().state(), DeployState::Running);
    let listed = p.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, d.id);
    let desc = p.describe().await.unwrap();
    assert!(desc.healthy);
    assert_eq!(desc.labels.get("region").map(String::as_str), Some("test"));
    assert!(!desc.endpoint.is_empty());

    // Stop: gone from the engine, capacity back.
    let stopped = p.stop(&d.id).await.expect("stop");
    assert_eq!(stopped.state(), DeployState::Stopped);
    let err = docker
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    assert_eq!(reserved(&p).await, Resources::ZERO);
    assert_eq!(p.stop(&d.id).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(p.status(&d.id).await.unwrap_err().code(), Code::NotFound);
    assert!(p.list().await.unwrap().is_empty());
    for odd in ["../../info", "a?b", ""] {
        assert_eq!(
            p.status(odd).await.unwrap_err().code(),
            Code::NotFound,
            "{odd}"
        );
    }
}

#[tokio::test]
async fn logs_tail_and_follow() {
    let (p, _cleanup) = provider("logs", limits()).await;
    let d = p
        .deploy(
            &spec(&format!("logs-{}", suffix()), HELLO),
            ProgressSink::none(),
        )
        .await
        .unwrap();

    let lines = wait_for("hello-iarnet in the tail", WAIT, || async {
        let opts = LogOptions {
            tail: Some(10),
            follow: false,
        };
        let lines: Vec<_> = p.logs(&d.id, opts).await.unwrap().collect().await;
        let lines: Vec<_> = lines.into_iter().map(|l| l.unwrap()).collect();
        let both = lines.iter().any(|l| l.text == "hello-iarnet")
            && lines.iter().any(|l| l.text == "oops-iarnet");
        both.then_some(lines)
    })
    .await;
    let hello = lines.iter().find(|l| l.text == "hello-iarnet").unwrap();
    let oops = lines.iter().find(|l| l.text == "oops-iarnet").unwrap();
    assert!(!hello.stderr && oops.stderr, "{lines:?}");

    let tail1: Vec<_> = p
        .logs(
            &d.id,
            LogOptions {
                tail: Some(1),
                follow: false,
            },
        )
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(tail1.len(), 1, "{tail1:?}");

    // Follow: the stream stays open on a running container and yields what it printed.
    let mut follow = p
        .logs(
            &d.id,
            LogOptions {
                tail: None,
                follow: true,
            },
        )
        .await
        .unwrap();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(line) = follow.next().await {
            if line.unwrap().text == "hello-iarnet" {
                return true;
            }
        }
        false
    })
    .await
    .expect("follow yields the line");
    assert!(found);
    drop(follow);

    assert_eq!(
        p.logs("iarnet-0000000000000000", LogOptions::default())
            .await
            .err()
            .map(|e| e.code()),
        Some(Code::NotFound)
    );
    p.stop(&d.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_request_id_makes_exactly_one_container() {
    let (p, _cleanup) = provider("idem", limits()).await;
    let docker = engine().await;
    let one = spec(&format!("idem-{}", suffix()), HELLO);

    // Sequentially.
    let a = p.deploy(&one, ProgressSink::none()).await.unwrap();
    let b = p.deploy(&one, ProgressSink::none()).await.unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(
        containers_labelled(&docker, "iarnet.request", &one.request_id)
            .await
            .len(),
        1
    );
    assert_eq!(reserved(&p).await, one.resources, "reserved once");

    // Concurrently, on one provider and on a twin with the same id (a
    // second process of the same node): the name decides.
    let two = spec(&format!("idem-race-{}", suffix()), HELLO);
    let twin = DockerProvider::connect(settings(p.id(), limits()))
        .await
        .unwrap();
    let (x, y, z) = tokio::join!(
        p.deploy(&two, ProgressSink::none()),
        p.deploy(&two, ProgressSink::none()),
        twin.deploy(&two, ProgressSink::none()),
    );
    let (x, y, z) = (x.unwrap(), y.unwrap(), z.unwrap());
    assert!(x.id == y.id && y.id == z.id);
    assert_eq!(
        containers_labelled(&docker, "iarnet.request", &two.request_id)
            .await
            .len(),
        1
    );
    assert_eq!(
        containers_labelled(&docker, "iarnet.provider", p.id())
            .await
            .len(),
        2
    );
    let both = one.resources.saturating_add(&two.resources);
    assert_eq!(reserved(&p).await, both);

    p.stop(&a.id).await.unwrap();
    p.stop(&x.id).await.unwrap();
    assert_eq!(reserved(&p).await, Resources::ZERO);
    assert_eq!(
        reserved(&twin).await,
        Resources::ZERO,
        "the twin sees them gone"
    );
}

/// Two providers on one engine (two nodes on one host, or a deployment
/// rescheduled from one to the other while the first still runs it): each
/// keeps its own container of the same deployment and stops only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn providers_sharing_an_engine_each_run_their_own_copy() {
    let (p, _cleanup) = provider("share1", limits()).await;
    let (q, _cleanup_q) = provider("share2", limits()).await;
    let docker = engine().await;
    let one = spec(&format!("share-{}", suffix()), HELLO);
    let a = p.deploy(&one, ProgressSink::none()).await.unwrap();
    let b = q.deploy(&one, ProgressSink::none()).await.unwrap();
    assert_eq!(a.id, b.id, "one deployment id");
    assert_ne!(p.container_name(&a.id), q.container_name(&b.id));
    let copies = containers_labelled(&docker, "iarnet.request", &one.request_id).await;
    assert_eq!(copies.len(), 2, "{copies:?}");
    assert_eq!(p.list().await.unwrap().len(), 1);
    assert_eq!(q.list().await.unwrap().len(), 1);

    assert_eq!(p.stop(&a.id).await.unwrap().state(), DeployState::Stopped);
    assert_eq!(p.status(&a.id).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(q.status(&b.id).await.unwrap().state(), DeployState::Running);
    assert_eq!(
        containers_labelled(&docker, "iarnet.request", &one.request_id)
            .await
            .len(),
        1
    );
    q.stop(&b.id).await.unwrap();
}

/// A container named by deployment id alone (the naming of earlier
/// releases) is still found, stopped and counted after an upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_named_by_an_earlier_release_is_still_managed() {
    let (p, _cleanup) = provider("legacy", limits()).await;
    let docker = engine().await;
    let one = spec(&format!("legacy-{}", suffix()), HELLO);
    let d = p.deploy(&one, ProgressSink::none()).await.unwrap();
    // Rename it the way an earlier release named it, and look afresh.
    docker
        .rename_container(
            &p.container_name(&d.id),
            bollard::query_parameters::RenameContainerOptionsBuilder::default()
                .name(&d.id)
                .build(),
        )
        .await
        .unwrap();
    let fresh = DockerProvider::connect(settings(p.id(), limits()))
        .await
        .unwrap();
    assert_eq!(
        fresh.status(&d.id).await.unwrap().state(),
        DeployState::Running
    );
    assert_eq!(fresh.list().await.unwrap()[0].id, d.id);
    assert_eq!(reserved(&fresh).await, one.resources);
    // A retried deploy returns it rather than making a second one.
    assert_eq!(
        fresh.deploy(&one, ProgressSink::none()).await.unwrap().id,
        d.id
    );
    assert_eq!(
        containers_labelled(&docker, "iarnet.request", &one.request_id)
            .await
            .len(),
        1
    );
    fresh.stop(&d.id).await.unwrap();
    assert!(
        containers_labelled(&docker, "iarnet.request", &one.request_id)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn request_beyond_the_limits_is_exhausted_and_creates_nothing() {
    let small = Resources {
        cpu_millis: 500,
        memory_bytes: 256 << 20,
        gpus: 0,
        storage_bytes: 0,
    };
    let (p, _cleanup) = provider("big", small).await;
    let docker = engine().await;
    let mut big = spec(&format!("big-{}", suffix()), HELLO);
    big.resources.cpu_millis = 1000;
    let err = p.deploy(&big, ProgressSink::none()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.to_string().contains(p.id()), "{err}");
    let mut gpu = spec(&format!("gpu-{}", suffix()), HELLO);
    gpu.resources.gpus = 1;
    assert_eq!(
        p.deploy(&gpu, ProgressSink::none())
            .await
            .unwrap_err()
            .code(),
        Code::ResourceExhausted
    );
    assert!(containers_labelled(&docker, "iarnet.provider", p.id())
        .await
        .is_empty());
    assert_eq!(reserved(&p).await, Resources::ZERO);

    // What fits still deploys, and the next one no longer fits.
    let mut fits = spec(&format!("fits-{}", suffix()), HELLO);
    fits.resources.cpu_millis = 400;
    let d = p.deploy(&fits, ProgressSink::none()).await.unwrap();
    let mut more = spec(&format!("more-{}", suffix()), HELLO);
    more.resources.cpu_millis = 200;
    assert_eq!(
        p.deploy(&more, ProgressSink::none())
            .await
            .unwrap_err()
            .code(),
        Code::ResourceExhausted
    );
    assert_eq!(
        containers_labelled(&docker, "iarnet.provider", p.id())
            .await
            .len(),
        1
    );
    p.stop(&d.id).await.unwrap();
}

#[tokio::test]
async fn a_restarted_provider_adopts_its_running_containers() {
    let (first, _cleanup) = provider("restart", limits()).await;
    let a = first
        .deploy(
            &spec(&format!("ra-{}", suffix()), HELLO),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    let mut bigger = spec(&format!("rb-{}", suffix()), HELLO);
    bigger.resources.cpu_millis = 500;
    bigger.resources.memory_bytes = 128 << 20;
    let b = first.deploy(&bigger, ProgressSink::none()).await.unwrap();
    let before = reserved(&first).await;
    assert_eq!(before.cpu_millis, 750);

    // The same provider id connecting again (a restarted node).
    let second = DockerProvider::connect(settings(first.id(), limits()))
        .await
        .unwrap();
    assert_eq!(reserved(&second).await, before);
    let seen = second.list().await.unwrap();
    assert_eq!(seen.len(), 2);
    let adopted = seen.iter().find(|d| d.id == b.id).unwrap();
    assert_eq!(adopted.request_id, bigger.request_id);
    assert_eq!(adopted.resources, bigger.resources);
    assert_eq!(adopted.state(), DeployState::Running);
    assert!(
        adopted
            .history
            .iter()
            .any(|c| c.state == DeployState::Running),
        "{:?}",
        adopted.history
    );

    // The restarted one refuses what no longer fits, then stops everything.
    let mut huge = spec(&format!("rh-{}", suffix()), HELLO);
    huge.resources.cpu_millis = 1500;
    assert_eq!(
        second
            .deploy(&huge, ProgressSink::none())
            .await
            .unwrap_err()
            .code(),
        Code::ResourceExhausted
    );
    second.stop(&a.id).await.unwrap();
    second.stop(&b.id).await.unwrap();
    assert_eq!(reserved(&second).await, Resources::ZERO);
    assert_eq!(
        reserved(&first).await,
        Resources::ZERO,
        "vanished containers hold nothing"
    );
}

#[tokio::test]
async fn a_failed_pull_is_failed_precondition_and_reserves_nothing() {
    let (p, _cleanup) = provider("pull", limits()).await;
    let docker = engine().await;
    let mut absent = spec(&format!("pull-{}", suffix()), HELLO);
    absent.image = "iarnet-test/absent:1".into();
    let (sink, mut rx) = ProgressSink::channel();
    let err = p.deploy(&absent, sink).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    match &err {
        ResourceError::PullFailed { image, reason } => {
            assert_eq!(image, "iarnet-test/absent:1");
            assert!(!reason.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("iarnet-test/absent:1") && text.contains("cannot pull"),
        "{text}"
    );
    let mut pulling = false;
    while let Ok(e) = rx.try_recv() {
        pulling |= e == Progress::State(DeployState::Pulling);
    }
    assert!(pulling, "the pull was reported");
    assert_eq!(reserved(&p).await, Resources::ZERO);
    assert!(containers_labelled(&docker, "iarnet.provider", p.id())
        .await
        .is_empty());
    assert!(p.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_invalid_spec_names_its_field() {
    let (p, _cleanup) = provider("invalid", limits()).await;
    let field = |e: ResourceError| match e {
        ResourceError::InvalidSpec { field, .. } => field,
        other => panic!("{other:?}"),
    };
    let mut s = spec(&format!("inv-{}", suffix()), HELLO);
    s.resources.cpu_millis = 0;
    let err = p.deploy(&s, ProgressSink::none()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(field(err), "cpu");
    let mut s = spec(&format!("inv-{}", suffix()), HELLO);
    s.image = "Not A/Valid:image".into();
    assert_eq!(
        field(p.deploy(&s, ProgressSink::none()).await.unwrap_err()),
        "image"
    );
    let mut s = spec(&format!("inv-{}", suffix()), HELLO);
    s.env.insert("1BAD".into(), "x".into());
    assert_eq!(
        field(p.deploy(&s, ProgressSink::none()).await.unwrap_err()),
        "env.1BAD"
    );
    let mut s = spec("", HELLO);
    s.request_id.clear();
    assert_eq!(
        field(p.deploy(&s, ProgressSink::none()).await.unwrap_err()),
        "request_id"
    );
    assert_eq!(reserved(&p).await, Resources::ZERO);
    assert!(p.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_exited_container_releases_its_reservation() {
    let (p, _cleanup) = provider("exit", limits()).await;
    let d = p
        .deploy(
            &spec(&format!("exit-{}", suffix()), "exit 3"),
            ProgressSink::none(),
        )
        .await
        .unwrap();
    let done = wait_for("the container to exit", WAIT, || async {
        let d = p.status(&d.id).await.unwrap();
        matches!(d.state(), DeployState::Exited(_)).then_some(d)
    })
    .await;
    assert_eq!(done.state(), DeployState::Exited(3));
    assert_eq!(
        done.history.first().map(|c| &c.state),
        Some(&DeployState::Pending)
    );
    assert_eq!(reserved(&p).await, Resources::ZERO);
    let listed = p.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state(), DeployState::Exited(3));
    // Retrying the request returns the exited deployment, not a new container.
    let again = p
        .deploy(&spec(&done.request_id, "exit 3"), ProgressSink::none())
        .await
        .unwrap();
    assert_eq!(again.id, d.id);
    assert_eq!(again.state(), DeployState::Exited(3));
    assert_eq!(reserved(&p).await, Resources::ZERO);
    assert_eq!(p.stop(&d.id).await.unwrap().state(), DeployState::Stopped);
}

#[tokio::test]
async fn a_failing_container_is_restarted_up_to_its_limit_then_failed() {
    let (p, _cleanup) = provider("restart", limits()).await;
    let mut flaky = spec(&format!("flaky-{}", suffix()), "echo try; exit 3");
    flaky.restart = RestartPolicy::OnFailure { max: 2 };
    let d = p.deploy(&flaky, ProgressSink::none()).await.unwrap();
    // The engine restarts it twice (100 ms, then 200 ms later), then gives up.
    let done = wait_for("the restarts to run out", WAIT, || async {
        let d = p.status(&d.id).await.unwrap();
        d.state().is_final().then_some(d)
    })
    .await;
    assert_eq!(
        done.state(),
        DeployState::Failed("exited with code 3 after 2 restarts (restart on-failure:2)".into()),
        "{:?}",
        done.history
    );
    assert_eq!(done.restarts, 2);
    assert_eq!(
        reserved(&p).await,
        Resources::ZERO,
        "a failed one holds nothing"
    );
    let listed = p.list().await.unwrap();
    assert!(
        matches!(listed[0].state(), DeployState::Failed(_)),
        "{listed:?}"
    );
    // What the engine was told.
    let inspect = engine()
        .await
        .inspect_container(&p.container_name(&d.id), None)
        .await
        .unwrap();
    let policy = inspect.host_config.unwrap().restart_policy.unwrap();
    assert_eq!(policy.maximum_retry_count, Some(2));
    assert_eq!(inspect.restart_count, Some(2));
    p.stop(&d.id).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_engine_is_unavailable() {
    for endpoint in [
        "unix:///nonexistent/iarnet/docker.sock",
        "tcp://127.0.0.1:1",
    ] {
        let mut s = settings("t-unreachable", limits());
        s.endpoint = Some(endpoint.into());
        let err = DockerProvider::connect(s).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        let text = err.to_string();
        assert!(text.contains(endpoint), "names the endpoint: {text}");
        assert!(text.contains("dockerd"), "says what to check: {text}");
    }
    let mut s = settings("t-unreachable", limits());
    s.endpoint = Some("ftp://example".into());
    assert_eq!(
        DockerProvider::connect(s).await.unwrap_err().code(),
        Code::Unavailable
    );
}

#[tokio::test]
async fn host_totals_come_from_docker_info() {
    ensure_test_image();
    let id = format!("t-info-{}", suffix());
    let _cleanup = Cleanup(id.clone());
    let mut s = settings(&id, limits());
    s.limits = None;
    let p = DockerProvider::connect(s).await.unwrap();
    let d = p.describe().await.unwrap();
    assert!(d.healthy);
    assert!(d.capacity.total.cpu_millis >= 1000, "{d:?}");
    assert!(d.capacity.total.memory_bytes >= 64 << 20, "{d:?}");
    assert_eq!(d.capacity.reserved, Resources::ZERO);
}
