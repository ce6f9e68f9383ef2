//! One contract, run against every provider: the in-memory twin, Docker on
//! this machine's real engine, and Kubernetes on a stateful fake API server.
//! Whatever the placement layer relies on (ids, idempotent deploys, the
//! books, the error codes, what stop leaves behind) is checked here, so the
//! twin the other tests use cannot drift from the real providers.

#[path = "support/docker.rs"]
mod docker_support;
#[path = "support/fake_kube.rs"]
mod fake_kube;

use std::collections::BTreeMap;

use futures::StreamExt;
use iarnet::resource::docker::{DockerProvider, DockerSettings};
use iarnet::resource::kubernetes::{KubeSettings, KubernetesProvider};
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::validate::deployment_id;
use iarnet::resource::{
    DeploySpec, LogOptions, Priority, PriorityClass, ProgressSink, Provider, Resources,
};
use tonic::Code;

use docker_support::{ensure_test_image, suffix, Cleanup, TEST_IMAGE};
use fake_kube::FakeKube;

const MI: u64 = 1 << 20;

/// What every provider under test offers.
fn total() -> Resources {
    Resources {
        cpu_millis: 2000,
        memory_bytes: 1 << 30,
        gpus: 0,
        storage_bytes: 0,
    }
}

fn spec(image: &str, request_id: &str, cpu_millis: u64) -> DeploySpec {
    DeploySpec {
        request_id: request_id.to_string(),
        name: "suite".into(),
        image: image.to_string(),
        command: vec!["sh".into(), "-c".into()],
        args: vec!["echo suite; sleep 300".into()],
        resources: Resources {
            cpu_millis,
            memory_bytes: 64 * MI,
            gpus: 0,
            storage_bytes: 0,
        },
        ..Default::default()
    }
}

async fn reserved(p: &dyn Provider) -> Resources {
    p.describe().await.expect("describe").capacity.reserved
}

async fn listed(p: &dyn Provider, id: &str) -> usize {
    let all = p.list().await.expect("list");
    all.iter()
        .filter(|d| d.id == id && !d.state().is_final())
        .count()
}

/// Every provider under test runs at most this many deployments at once.
const MAX_DEPLOYMENTS: Option<u32> = Some(2);

/// The contract. `image` is one the provider can run; the provider was
/// made with [`MAX_DEPLOYMENTS`].
async fn suite(p: &dyn Provider, image: &str) {
    let tag = suffix();
    let d = p.describe().await.expect("describe");
    assert_eq!(d.id, p.id(), "describe names the provider");
    assert!(d.healthy, "a reachable provider is healthy");
    assert!(
        d.capacity.total.cpu_millis >= 2000 && d.capacity.total.memory_bytes >= 1 << 30,
        "capacity offered: {:?}",
        d.capacity.total
    );
    assert_eq!(
        reserved(p).await,
        Resources::ZERO,
        "nothing reserved at first"
    );

    // Bad input is refused, names the field, and reserves nothing.
    let mut bad = spec(image, &format!("bad-{tag}"), 250);
    bad.image.clear();
    let e = p.deploy(&bad, ProgressSink::none()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.to_string().contains("image"), "names the field: {e}");
    assert_eq!(reserved(p).await, Resources::ZERO);

    // A deploy that fits nowhere is refused as exhausted, and leaves nothing.
    let huge_id = format!("huge-{tag}");
    let e = p
        .deploy(&spec(image, &huge_id, 100_000), ProgressSink::none())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert_eq!(reserved(p).await, Resources::ZERO);
    assert_eq!(listed(p, &deployment_id(&huge_id)).await, 0);

    // A deploy is named after its request and holds what it asked for.
    let rid = format!("web-{tag}");
    let mut web = spec(image, &rid, 250);
    // Preemptible: its priority travels with it, for its owner to compare.
    web.preemptible = true;
    web.priority = Priority {
        class: PriorityClass::Batch,
        value: -3,
    };
    // Placed for a swarm group: the group stays with the workload, so a
    // member that leaves can be asked to stop the group's work.
    web.scope.group = Some("lab".into());
    let d = p.deploy(&web, ProgressSink::none()).await.expect("deploy");
    assert_eq!(d.id, deployment_id(&rid));
    assert_eq!(d.request_id, rid);
    assert_eq!(d.provider_id, p.id());
    assert_eq!(d.image, image);
    assert_eq!(d.resources, web.resources);
    assert!(!d.state().is_final(), "just deployed: {:?}", d.history);
    assert_eq!(reserved(p).await, web.resources);

    // The same request again is the same deployment, reserved once.
    let again = p.deploy(&web, ProgressSink::none()).await.expect("retry");
    assert_eq!(again.id, d.id);
    assert_eq!(
        reserved(p).await,
        web.resources,
        "a retry reserves nothing more"
    );

    // It can be found, listed once, and read.
    let s = p.status(&d.id).await.expect("status");
    assert_eq!(
        (s.id.as_str(), s.request_id.as_str()),
        (d.id.as_str(), rid.as_str())
    );
    assert_eq!(s.preemptible, Some(web.priority), "kept with the workload");
    assert_eq!(s.group, "lab", "the group is kept with the workload");
    let all = p.list().await.expect("list");
    let listed_web = all.iter().find(|x| x.id == d.id).expect("listed");
    assert_eq!(listed_web.preemptible, Some(web.priority));
    assert_eq!(listed_web.group, "lab");
    assert_eq!(listed(p, &d.id).await, 1);
    let mut logs = p
        .logs(&d.id, LogOptions::default())
        .await
        .expect("logs of a live deployment");
    // A line or the end, never an error.
    if let Some(line) = logs.next().await {
        line.expect("a log line");
    }
    drop(logs);

    // A second request fits beside the first; the books add up.
    let db = spec(image, &format!("db-{tag}"), 500);
    let d2 = p
        .deploy(&db, ProgressSink::none())
        .await
        .expect("second deploy");
    assert_ne!(d2.id, d.id);
    let both = reserved(p).await;
    assert_eq!(both.cpu_millis, 750);
    assert_eq!(both.memory_bytes, 128 * MI);

    // A third fits the CPU but not max_deployments: refused as exhausted,
    // naming the limit, with nothing left behind.
    let cap = p.describe().await.expect("describe").capacity;
    assert_eq!((cap.max_deployments, cap.deployments), (MAX_DEPLOYMENTS, 2));
    let third_id = format!("third-{tag}");
    let e = p
        .deploy(&spec(image, &third_id, 100), ProgressSink::none())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(e.to_string().contains("max_deployments"), "{e}");
    assert_eq!(reserved(p).await.cpu_millis, 750);
    assert_eq!(listed(p, &deployment_id(&third_id)).await, 0);

    // Stop ends a deployment and frees what it held; it is gone after.
    let stopped = p.stop(&d.id).await.expect("stop");
    assert!(stopped.state().is_final(), "{:?}", stopped.history);
    assert_eq!(reserved(p).await, db.resources);
    assert_eq!(listed(p, &d.id).await, 0);
    assert_eq!(
        p.describe().await.expect("describe").capacity.deployments,
        1
    );
    let e = p.status(&d.id).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "status after stop: {e}");
    let e = p.stop(&d.id).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "a second stop: {e}");
    p.stop(&d2.id).await.expect("stop the second");
    assert_eq!(reserved(p).await, Resources::ZERO, "all released");

    // Unknown ids are not found, whatever is asked of them.
    let unknown = deployment_id(&format!("never-{tag}"));
    for e in [
        p.status(&unknown).await.unwrap_err(),
        p.stop(&unknown).await.unwrap_err(),
        p.logs(&unknown, LogOptions::default())
            .await
            .err()
            .expect("logs"),
    ] {
        assert_eq!(e.code(), Code::NotFound, "{e}");
    }
    let e = p.status("../../etc").await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::NotFound,
        "odd ids are simply not found: {e}"
    );
}

#[tokio::test]
async fn the_memory_twin_keeps_the_contract() {
    let p = MemoryProvider::new("suite-memory", total(), BTreeMap::new())
        .with_max_deployments(MAX_DEPLOYMENTS);
    suite(&p, "busybox:1.36").await;
}

#[tokio::test]
async fn docker_keeps_the_contract() {
    ensure_test_image();
    let id = format!("t-suite-{}", suffix());
    let _cleanup = Cleanup(id.clone());
    let p = DockerProvider::connect(DockerSettings {
        id: id.clone(),
        name: id.clone(),
        limits: Some(total()),
        max_deployments: MAX_DEPLOYMENTS,
        node_id: "node-suite".into(),
        ..Default::default()
    })
    .await
    .expect("connect to the local Docker engine");
    suite(&p, TEST_IMAGE).await;
}

#[tokio::test]
async fn kubernetes_keeps_the_contract() {
    let api = FakeKube::new("2", "1Gi");
    let p = KubernetesProvider::new(
        api.client("iarnet"),
        KubeSettings {
            id: "suite-k8s".into(),
            name: "suite cluster".into(),
            namespace: "iarnet".into(),
            node_id: "node-suite".into(),
            labels: BTreeMap::new(),
            limits: None,
            max_deployments: MAX_DEPLOYMENTS,
        },
    );
    suite(&p, "busybox:1.36").await;
    assert_eq!(api.pod_count(), 0, "stop deleted every pod");
}
