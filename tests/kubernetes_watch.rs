//! The Kubernetes provider's pod watch against kube's mocked API service:
//! `status` and `list` answer from the watch's store with no call to the
//! API, fall back to the API while it is not synced or failing, read back
//! their own writes, and the watch stops with the provider.

#[path = "support/fake_kube.rs"]
mod fake_kube;
#[path = "support/kube_script.rs"]
mod kube_script;

use kube_script::*;

// ---- the pod watch ---------------------------------------------------------------

/// Polls `done` until it holds; fails naming `what` after 10 s.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asks `status` of a pod the watch holds until it reads `want`. Every
/// answer must come from the watch: a call to the API would go unanswered
/// and time out here.
async fn wait_for_state(p: &KubernetesProvider, key: &str, want: DeployState) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = tokio::time::timeout_at(deadline, p.status(key))
            .await
            .unwrap_or_else(|_| panic!("status of {key} did not answer from the watch"))
            .expect("status")
            .state();
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status of {key} stayed {got:?}; expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Awaits a call the watch's store must answer: one that asks the API
/// instead goes unanswered and fails here.
async fn from_watch<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| panic!("{what} asked the API instead of answering from the watch"))
}

/// A pod as a watch event carries it: with a resourceVersion.
fn at_version(mut pod: Value, version: u64) -> Value {
    pod["metadata"]["resourceVersion"] = json!(version.to_string());
    pod
}

/// Serves the pod watch with `pods` and waits until the provider is synced.
async fn serve_watch(p: &KubernetesProvider, watches: &Watches, pods: Vec<Value>) {
    watches.set(WatchMode::Serve(pods));
    wait_until("the pod watch has synced", || p.watching()).await;
}

#[tokio::test]
async fn status_follows_the_watch_without_a_get() {
    let (p, handle) = provider();
    let watches = handle.watches().clone();
    let key = deployment_id("req");
    let pending = own_pod(
        &key,
        "k8s-a",
        "Pending",
        &[("cpu", "100m"), ("memory", "64Mi")],
    );
    serve_watch(&p, &watches, vec![pending.clone()]).await;
    let d = from_watch("status", p.status(&key)).await.expect("status");
    assert_eq!(
        (d.id.as_str(), d.state()),
        (key.as_str(), DeployState::Pending)
    );
    assert_eq!(d.resources, res(100, 64 * MI, 0, 0));

    let running = with_status(
        pending.clone(),
        json!({"phase": "Running", "startTime": "2025-01-01T00:00:05Z"}),
    );
    watches.push("MODIFIED", &at_version(running, 2));
    wait_for_state(&p, &key, DeployState::Running).await;
    // A bookmark moves the watch on and changes nothing.
    watches.push(
        "BOOKMARK",
        &json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "3"}}),
    );
    watches.push(
        "MODIFIED",
        &at_version(with_status(pending, json!({"phase": "Succeeded"})), 4),
    );
    wait_for_state(&p, &key, DeployState::Exited(0)).await;
    assert_eq!(watches.requests(), (1, 1), "one list, one watch, no relist");
    // No GET (nor anything else) reached the API.
    no_more_calls(p, handle).await;
}

#[tokio::test]
async fn list_answers_from_the_watch() {
    let (p, handle) = provider();
    let watches = handle.watches().clone();
    let (a, b, c) = (deployment_id("a"), deployment_id("b"), deployment_id("c"));
    serve_watch(
        &p,
        &watches,
        vec![
            own_pod(&b, "k8s-a", "Succeeded", &[]),
            own_pod(&a, "k8s-a", "Running", &[]),
            // Not this provider's: never listed, even if a watch shows it.
            own_pod("iarnet-theirs", "k8s-b", "Running", &[]),
        ],
    )
    .await;
    let states = |all: Vec<iarnet::resource::Deployment>| -> Vec<(String, DeployState)> {
        all.into_iter().map(|d| (d.id.clone(), d.state())).collect()
    };
    let mut want = vec![
        (a.clone(), DeployState::Running),
        (b.clone(), DeployState::Exited(0)),
    ];
    want.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        states(from_watch("list", p.list()).await.expect("list")),
        want
    );

    watches.push(
        "DELETED",
        &at_version(own_pod(&a, "k8s-a", "Running", &[]), 2),
    );
    watches.push(
        "ADDED",
        &at_version(own_pod(&c, "k8s-a", "Pending", &[]), 3),
    );
    let mut want = vec![
        (b.clone(), DeployState::Exited(0)),
        (c.clone(), DeployState::Pending),
    ];
    want.sort_by(|x, y| x.0.cmp(&y.0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = tokio::time::timeout_at(deadline, p.list())
            .await
            .expect("list answered from the watch")
            .expect("list");
        let got = states(got);
        if got == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "list stayed {got:?}; expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    no_more_calls(p, handle).await;
}

#[tokio::test]
async fn status_asks_the_api_while_the_watch_is_not_synced_or_failing() {
    let (p, mut handle) = provider();
    let watches = handle.watches().clone();
    let key = deployment_id("req");
    let path = format!("{PODS}/{key}");
    let pending = own_pod(&key, "k8s-a", "Pending", &[]);
    let running = with_status(pending.clone(), json!({"phase": "Running"}));

    // Not synced yet (its list is unanswered): a GET.
    assert!(!p.watching());
    let scenario = async {
        let (_, r) = expect(&mut handle, Method::GET, &path, &[]).await;
        answer(r, 200, &running);
    };
    let d = run(scenario, p.status(&key)).await.expect("status");
    assert_eq!(d.state(), DeployState::Running);

    // Synced, then the watch fails and may not list again: GETs again,
    // with the API's answers and errors as before.
    serve_watch(&p, &watches, vec![pending.clone()]).await;
    assert_eq!(
        from_watch("status", p.status(&key))
            .await
            .expect("status")
            .state(),
        DeployState::Pending
    );
    watches.set(WatchMode::Refuse(403));
    watches.push("ERROR", &status(500, "InternalError", "the watch broke"));
    wait_until("the failed watch is noticed", || !p.watching()).await;
    let scenario = async {
        let (_, r) = expect(&mut handle, Method::GET, &path, &[]).await;
        answer(r, 200, &running);
        let (_, r) = expect(&mut handle, Method::GET, &path, &[]).await;
        answer(r, 403, &status(403, "Forbidden", "pods is forbidden"));
    };
    let (ok, refused) = run(scenario, async {
        (p.status(&key).await, p.status(&key).await)
    })
    .await;
    assert_eq!(ok.expect("status").state(), DeployState::Running);
    assert_eq!(
        refused.expect_err("forbidden").code(),
        Code::PermissionDenied
    );

    // It restarts from a fresh list (after backoff) and answers again.
    wait_until("the watch tried to list again", || {
        watches.requests().0 >= 2
    })
    .await;
    assert!(!p.watching(), "a refused relist is not synced");
    serve_watch(&p, &watches, vec![at_version(running, 7)]).await;
    wait_for_state(&p, &key, DeployState::Running).await;
    no_more_calls(p, handle).await;
}

#[tokio::test]
async fn a_stop_is_read_back_before_the_watch_shows_it() {
    let (p, mut handle) = provider();
    let watches = handle.watches().clone();
    let key = deployment_id("req");
    let path = format!("{PODS}/{key}");
    let running = at_version(own_pod(&key, "k8s-a", "Running", &[]), 1);
    let other = deployment_id("other");
    let other_pod = own_pod(&other, "k8s-a", "Running", &[]);
    serve_watch(&p, &watches, vec![running.clone(), other_pod.clone()]).await;
    let mut deleting = at_version(running.clone(), 2);
    deleting["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:02:00Z");

    // stop reads the pod fresh; the store still shows it running, so the
    // status right after asks the API.
    let scenario = async {
        let (_, r) = expect(&mut handle, Method::GET, &path, &[]).await;
        answer(r, 200, &running);
        let (_, r) = expect(&mut handle, Method::DELETE, &path, &[]).await;
        answer(r, 200, &deleting);
        let (_, r) = expect(&mut handle, Method::GET, &path, &[]).await;
        answer(r, 200, &deleting);
    };
    let (stopped, after) = run(scenario, async {
        (p.stop(&key).await, p.status(&key).await)
    })
    .await;
    assert_eq!(stopped.expect("stop").state(), DeployState::Stopped);
    assert_eq!(after.expect("status").state(), DeployState::Stopped);

    // Once the watch has shown the delete, the store answers again (a
    // later change of another pod shows the watch got that far).
    watches.push("MODIFIED", &deleting);
    watches.push(
        "MODIFIED",
        &at_version(with_status(other_pod, json!({"phase": "Succeeded"})), 3),
    );
    wait_for_state(&p, &other, DeployState::Exited(0)).await;
    wait_for_state(&p, &key, DeployState::Stopped).await;
    no_more_calls(p, handle).await;
}

#[tokio::test]
async fn the_watch_stops_when_the_provider_is_dropped() {
    let (p, mut handle) = provider();
    let watches = handle.watches().clone();
    let key = deployment_id("req");
    let pending = own_pod(&key, "k8s-a", "Pending", &[]);
    serve_watch(&p, &watches, vec![pending.clone()]).await;
    // A change seen shows the watch stream is open.
    let running = with_status(pending, json!({"phase": "Running"}));
    watches.push("MODIFIED", &at_version(running, 2));
    wait_for_state(&p, &key, DeployState::Running).await;

    drop(p);
    tokio::time::timeout(Duration::from_secs(10), watches.closed())
        .await
        .expect("the watch stream is closed once the provider is gone");
    let next = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("the client shuts down");
    assert!(next.is_none(), "a call after the provider was dropped");
}

/// The stateful fake the provider suite uses serves a watch the provider
/// syncs from and keeps (a broken stream would unsync it), and what it
/// writes reads back at once.
#[tokio::test]
async fn the_stateful_fake_serves_the_pod_watch() {
    let api = fake_kube::FakeKube::new("2", "1Gi");
    let p = KubernetesProvider::new(api.client(NS), settings());
    wait_until("the pod watch has synced", || p.watching()).await;
    let d = p
        .deploy(&spec("req-w", 100, 64 * MI, 0), ProgressSink::none())
        .await
        .expect("deploy");
    assert_eq!(
        p.status(&d.id).await.expect("status").state(),
        DeployState::Running
    );
    assert_eq!(p.list().await.expect("list").len(), 1);
    p.stop(&d.id).await.expect("stop");
    let err = p.status(&d.id).await.expect_err("stopped");
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(p.list().await.expect("list").is_empty());
    assert!(p.watching(), "the fake's watch stream stays usable");
}
