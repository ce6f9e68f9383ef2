//! The Kubernetes provider against kube's mocked API service: every call it
//! makes is checked (method, path, query, body) and answered in order,
//! except those of its pod watch (a list and watches of its own pods),
//! which `fake_kube::route` answers aside: held here (the watch never
//! syncs, so every call goes to the API); `kubernetes_watch` serves it.
//! One test at the end runs against a real cluster when KUBECONFIG is set.

#[path = "support/fake_kube.rs"]
mod fake_kube;
#[path = "support/kube_script.rs"]
mod kube_script;

use kube_script::*;

// ---- capacity ---------------------------------------------------------------

#[tokio::test]
async fn capacity_is_allocatable_of_ready_nodes_minus_live_requests() {
    let (p, mut handle) = provider();
    let own = deployment_id("req-own");
    let mut web = other_pod(
        "default",
        "web",
        Some("n2"),
        &[("cpu", "250m"), ("memory", "128Mi")],
    );
    web["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "side", "image": "x", "resources": requests(&[("cpu", "0.5"), ("memory", "128Mi")])}));
    web["spec"]["initContainers"] = json!([{"name": "init", "image": "x", "resources": requests(&[("cpu", "1"), ("memory", "64Mi")])}]);
    let pods = vec![
        other_pod(
            "kube-system",
            "coredns",
            Some("n1"),
            &[("cpu", "100m"), ("memory", "70Mi")],
        ),
        // max(containers 750m / 256Mi, init 1 / 64Mi)
        web,
        // on the unready node: not counted
        other_pod(
            "default",
            "lost",
            Some("n3"),
            &[("cpu", "2"), ("memory", "1Gi")],
        ),
        // waiting for a node: counted
        other_pod(
            "default",
            "queued",
            None,
            &[("cpu", "200m"), ("memory", "1Gi")],
        ),
        // another provider's pod is someone else's load
        own_pod(
            "iarnet-other",
            "k8s-b",
            "Running",
            &[("cpu", "300m"), ("memory", "64Mi")],
        ),
        own_pod(
            &own,
            "k8s-a",
            "Running",
            &[
                ("cpu", "500m"),
                ("memory", "256Mi"),
                ("nvidia.com/gpu", "1"),
            ],
        ),
    ];
    let scenario = async {
        // The node listing comes in two pages.
        let (_, r) = expect(
            &mut handle,
            Method::GET,
            "/api/v1/nodes",
            &[("limit", "500")],
        )
        .await;
        let mut first = list(cluster_nodes()[..2].to_vec());
        first["metadata"]["continue"] = json!("page-2");
        answer(r, 200, &first);
        let (_, r) = expect(
            &mut handle,
            Method::GET,
            "/api/v1/nodes",
            &[("limit", "500"), ("continue", "page-2")],
        )
        .await;
        answer(r, 200, &list(cluster_nodes()[2..].to_vec()));
        let (_, r) = expect(
            &mut handle,
            Method::GET,
            "/api/v1/pods",
            &[("fieldSelector", LIVE), ("limit", "500")],
        )
        .await;
        answer(r, 200, &list(pods));
    };
    let d = run(scenario, p.describe()).await.expect("describe");
    assert!(d.healthy);
    assert_eq!(d.kind, ProviderKind::Kubernetes);
    assert_eq!((d.id.as_str(), d.name.as_str()), ("k8s-a", "cluster a"));
    assert_eq!(d.labels.get("gpu.model").map(String::as_str), Some(H100));
    assert_eq!(d.labels.get("region").map(String::as_str), Some("eu-west"));
    assert_eq!(
        d.capacity.total,
        res(3800 + 8000, 16 * GI + 7990 * MI, 2, 100 * GI)
    );
    assert_eq!(
        d.capacity.reserved,
        res(
            100 + 1000 + 200 + 300 + 500,
            (70 + 256 + 1024 + 64 + 256) * MI,
            1,
            0
        )
    );
    no_more_calls(p, handle).await;
}

#[tokio::test]
async fn limits_cap_the_total() {
    let (p, mut handle) = provider_with(KubeSettings {
        limits: Some(res(2000, 4 * GI, 0, 0)),
        ..settings()
    });
    let scenario = census(&mut handle, cluster_nodes(), vec![]);
    let d = run(scenario, p.describe()).await.expect("describe");
    // Storage: a zero limit is no cap.
    assert_eq!(d.capacity.total, res(2000, 4 * GI, 0, 100 * GI));
    no_more_calls(p, handle).await;
}

// ---- deploy -----------------------------------------------------------------

#[tokio::test]
async fn deploy_posts_the_expected_pod() {
    let (p, mut handle) = provider();
    let key = deployment_id("req-1");
    let mut s = spec("req-1", 500, 256 * MI, 1);
    s.name = "trainer".into();
    s.command = vec!["sh".into(), "-c".into()];
    s.args = vec!["echo hi".into()];
    s.env = BTreeMap::from([("A".to_string(), "1".to_string())]);
    s.ports = vec![
        PortSpec {
            container: 8080,
            host: 0,
            udp: false,
        },
        PortSpec {
            container: 53,
            host: 5353,
            udp: true,
        },
    ];
    s.gpu_model = Some("h100".into());
    s.labels = BTreeMap::from([("team".to_string(), "ml".to_string())]);
    let (sink, mut progress) = ProgressSink::channel();
    let mut posted = Value::Null;
    let scenario = async {
        census(&mut handle, cluster_nodes(), vec![]).await;
        let (body, r) = expect(
            &mut handle,
            Method::POST,
            PODS,
            &[("fieldManager", "iarnet")],
        )
        .await;
        posted = body.clone();
        let mut created = body;
        created["metadata"]["uid"] = json!("uid-1");
        created["status"] = json!({"phase": "Pending"});
        answer(r, 201, &created);
    };
    let d = run(scenario, p.deploy(&s, sink)).await.expect("deploy");
    assert_eq!(d.id, key);
    assert_eq!(d.request_id, "req-1");
    assert_eq!(d.provider_id, "k8s-a");
    assert_eq!(d.image, "busybox:1.36");
    assert_eq!(d.resources, s.resources);
    assert_eq!(d.state(), DeployState::Pending);
    assert_eq!(
        progress.try_recv().ok(),
        Some(Progress::State(DeployState::Pending))
    );

    assert_eq!(posted["apiVersion"], "v1");
    assert_eq!(posted["kind"], "Pod");
    let meta = &posted["metadata"];
    assert_eq!(meta["name"], json!(key));
    assert_eq!(meta["namespace"], NS);
    assert_eq!(
        meta["labels"],
        json!({"iarnet.managed": "true", "iarnet.provider": "k8s-a", "iarnet.node": "node-a",
               "iarnet.request": "req-1", "team": "ml"})
    );
    assert_eq!(
        meta["annotations"],
        json!({"iarnet.request": "req-1", "iarnet.name": "trainer", "iarnet.attempt": "1"})
    );
    let pod = &posted["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["containers"].as_array().map(Vec::len), Some(1));
    let c = &pod["containers"][0];
    assert_eq!(c["name"], "main");
    assert_eq!(c["image"], "busybox:1.36");
    assert_eq!(c["command"], json!(["sh", "-c"]));
    assert_eq!(c["args"], json!(["echo hi"]));
    assert_eq!(c["env"], json!([{"name": "A", "value": "1"}]));
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 8080, "protocol": "TCP"},
               {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"}])
    );
    let want = json!({"cpu": "500m", "memory": "268435456", "nvidia.com/gpu": "1"});
    assert_eq!(c["resources"]["requests"], want);
    assert_eq!(c["resources"]["limits"], want);
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"],
        json!([{"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": [H100]}]}])
    );
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    );

    // The next census lists the pod: it stays booked under its name.
    let scenario = census(
        &mut handle,
        cluster_nodes(),
        vec![own_pod(
            &key,
            "k8s-a",
            "Pending",
            &[
                ("cpu", "500m"),
                ("memory", "256Mi"),
                ("nvidia.com/gpu", "1"),
            ],
        )],
    );
    let d = run(scenario, p.describe()).await.expect("describe");
    assert_eq!(d.capacity.reserved, res(500, 256 * MI, 1, 0));
    no_more_calls(p, handle).await;
}

#[tokio::test]
async fn a_cpu_only_pod_has_no_gpu_fields() {
    let (p, mut handle) = provider();
    let mut posted = Value::Null;
    let scenario = async {
        census(&mut handle, cluster_nodes(), vec![]).await;
        let (body, r) = expect(
            &mut handle,
            Method::POST,
            PODS,
            &[("fieldManager", "iarnet")],
        )
        .await;
        posted = body.clone();
        answer(r, 201, &body);
    };
    run(
        scenario,
        p.deploy(&spec("req-2", 1500, GI, 0), ProgressSink::none()),
    )
    .await
    .expect("deploy");
    let c = &posted["spec"]["containers"][0];
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "1500m", "memory": "1073741824"})
    );
    assert!(c.get("command").is_none() && c.get("env").is_none() && c.get("ports").is_none());
    assert!(posted["spec"].get("affinity").is_none());
    assert!(posted["spec"].get("tolerations").is_none());
    no_more_calls(p, handle).await;
}

#[tokio::test]
async fn deploy_that_does_not_fit_is_refused_without_a_post() {
    let (p, mut handle) = provider();
    let busy = vec![other_pod(
        "default",
        "big",
        Some("n1"),
        &[("cpu", "3"), ("memory", "1Gi")],
    )];
    // 11.8 cores allocatable, 3 requested: 9 cores do not fit.
    let scenario = census(&mut handle, cluster_nodes(), busy.clone());
    let err = run(
        scenario,
        p.deploy(&spec("req-big", 9000, GI, 0), ProgressSink::none()),
    )
    .await
    .expect_err("does not fit");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.to_string().contains("8800m"), "{err}");

    // Three GPUs on a cluster of two, and a GPU model it does not have.
    let scenario = census(&mut handle, cluster_nodes(), vec![]);
    let err = run(
        scenario,
        p.deploy(&spec("req-gpus", 100, GI, 3), ProgressSink::none()),
    )
    .await
    .expect_err("too many GPUs");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let mut a100 = spec("req-a100", 100, GI, 1);
    a100.gpu_model = Some("A100".into());
    let scenario = census(&mut handle, cluster_nodes(), vec![]);
    let err = run(scenario, p.deploy(&a100, ProgressSink::none()))
        .await
        .expect_err("no such model");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.to_string().contains(H100), "{err}");

    // An invalid spec makes no call at all.
    let err = p
        .deploy(&spec("", 100, GI, 0), ProgressSink::none())
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    no_more_calls(p, handle).await;
}

#[tokio::test]
async fn deploy_is_idempotent_on_the_request_id() {
    let (p, mut handle) = provider();
    let key = deployment_id("req-1");
    let path = format!("{PODS}/{key}");

    // The pod exists but has ended (so the census does not list it): the
    // POST conflicts and the existing pod is returned.
    let mut done = own_pod(
        &key,
        "k8s-a",
        "Succeeded",
        &[("cpu", "100m"), ("memory", "64Mi")],
    );
    done["status"]["containerStatuses"] = json!([{"name": "main", "image": "busybox:1.36", "imageID": "", "ready": false,
        "restartCount": 0, "state": {"terminated": {"exitCode": 0, "finishedAt": "2025-01-01T00:01:00Z"}}}]);
    let scenario = async {
        census(&mut handle, cluster_nodes(), vec![]).await;
        let (_, r) = expect(
            &mut handle,
            Method::POST,
            PODS,
            &[("fieldManager", "iarnet")],
        )
        .await;
        answer(
            r,
            409,
            &status(
                409,
                "AlreadyExists",
                &format!("pods \"{key}\" already exists"),
            ),
        );
        let (body, r) = expect(&mut handle, Method::GET, &path, &[]).await;
        assert_eq!(body, Value::Null);
        answer(r, 200, &done);
    };
    let d = run(
        scenario,
        p.deploy(&spec("req-1", 100, 64 * MI, 0), ProgressSink::none()),
    )
    .await
    .expect("deploy");
    assert_eq!(d.id, key);
    assert_eq!(d.state(), DeployState::Exited(0));
    // It ended: nothing stays reserved for it.
    let scenario = census(&mut handle, cluster_nodes(), vec![]);
    let desc = run(scenario, p.describe()).await.expect("describe");
    assert_eq!(desc.capacity.reserved, Resources::ZERO);

    // A running pod for the request is in the census: no POST at all.
    let running = own_pod(
        &key,
        "k8s-a",
        "Running",
        &[("cpu", "100m"), ("memory", "64Mi")],
    );
    let scenario = census(&mut handle, cluster_nodes(), vec![running]);
    let d = run(
        scenario,
        p.deploy(&spec("req-1", 100, 64 * MI, 0), ProgressSink::none()),
    )
    .await
    .expect("deploy again");
    assert_eq!(
        (d.id.as_str(), d.state()),
        (key.as_str(), DeployState::Running)
    );

    // A pod of that name that is not this provider's is not taken over.
    let foreign = own_pod(&key, "k8s-b", "Running", &[]);
    let scenario = async {
        census(&mut handle, cluster_nodes(), vec![]).await;
        let (_, r) = expect(
            &mut handle,
            Method::POST,
            PODS,
            &[("fieldManager", "iarnet")],
        )
        .await;
        answer(r, 409, &status(409, "AlreadyExists", "exists"));
        let (_, r) = expect(&mut handle, Method::GET, &path, &[]).await;
        answer(r, 200, &foreign);
    };
    let err = run(
        scenario,
        p.deploy(&spec("req-1", 100, 64 * MI, 0), ProgressSink::none()),
    )
    .await
    .expect_err("foreign pod");
    assert_eq!(err.code(), Code::Internal, "{err}");
    no_more_calls(p, handle).await;
}

#[tokio::test]
async fn a_failed_create_releases_its_reservation() {
    let (p, mut handle) = provider();
    let scenario = async {
        census(&mut handle, cluster_nodes(), vec![]).await;
        let (_, r) = expect(
            &mut handle,
            Method::POST,
            PODS,
            &[("fieldManager", "iarnet")],
        )
        .await;
        let mut invalid = status(
            422,
            "Invalid",
            "Pod \"x\" is invalid: metadata.labels: Invalid value",
        );
        invalid["details"] = json!({"causes": [{"reason": "FieldValueInvalid", "message": "Invalid value", "field": "metadata.labels"}]});
        answer(r, 422, &invalid);
    };
    let err = run(
        scenario,
        p.deploy(&spec("req-1", 1000, GI, 0), ProgressSink::none()),
    )
    .await
    .expect_err("invalid");
    match &err {
        ResourceError::InvalidSpec { field, .. } => assert_eq!(field, "metadata.labels"),
        other => panic!("{other:?}"),
    }
    let scenario = census(&mut handle, cluster_nodes(), vec![]);
    let d = run(scenario, p.describe()).await.expect("describe");
    assert_eq!(d.capacity.reserved, Resources::ZERO);
    no_more_calls(p, handle).await;
}

// ---- status, list, logs, stop -------------------------------------------------

fn waiting(reason: &str, message: &str) -> Value {
    json!({"phase": "Pending", "containerStatuses": [{"name": "main", "image": "busybox:1.36", "imageID": "",
        "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason, "message": message}}}]})
}

#[tokio::test]
async fn status_maps_pod_phases() {
    let (p, mut handle) = provider();
    let key = deployment_id("req");
    let path = format!("{PODS}/{key}");
    let base = own_pod(
        &key,
        "k8s-a",
        "Pending",
        &[("cpu", "100m"), ("memory", "64Mi")],
    );
    let terminated = |code: i32| {
        json!({"phase": "Failed", "containerStatuses": [{"name": "main", "image": "busybox:1.36", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": "Error",
                      "startedAt": "2025-01-01T00:00:05Z", "finishedAt": "2025-01-01T00:01:00Z"}}}]})
    };
    let mut deleting = with_status(base.clone(), json!({"phase": "Running"}));
    deleting["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:02:00Z");
    let cases = vec![
        (
            with_status(base.clone(), json!({"phase": "Pending"})),
            DeployState::Pending,
        ),
        (
            with_status(base.clone(), waiting("ContainerCreating", "")),
            DeployState::Pulling,
        ),
        (
            with_status(base.clone(), waiting("ErrImagePull", "manifest unknown")),
            DeployState::Failed("ErrImagePull: manifest unknown".into()),
        ),
        (
            with_status(
                base.clone(),
                json!({"phase": "Running", "startTime": "2025-01-01T00:00:05Z"}),
            ),
            DeployState::Running,
        ),
        (
            with_status(base.clone(), json!({"phase": "Succeeded"})),
            DeployState::Exited(0),
        ),
        (
            with_status(base.clone(), terminated(3)),
            DeployState::Exited(3),
        ),
        (
            with_status(
                base.clone(),
                json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
            ),
            DeployState::Failed("Evicted: The node was low on resource: memory.".into()),
        ),
        (deleting, DeployState::Stopped),
    ];
    for (pod, want) in cases {
        let scenario = async {
            let (_, r) = expect(&mut handle, Method::GET, &path, &[]).await;
            answer(r, 200, &pod);
        };
        let d = run(scenario, p.status(&key)).await.expect("status");
        assert_eq!(d.state(), want, "{}", pod["status"]);
        assert_eq!(
            (d.id.as_str(), d.request_id.as_str()),
            (key.as_str(), "req")
        );
        assert_eq!(d.resources, res(100, 64 * MI, 0, 0));
        assert_eq!(
            d.history.first().map(|c| &c.state),
            Some(&DeployState::Pending)
        );
    }

    // An exited pod's history: created, ran, ended.
    let scenario = async {
        let (_, r) = expect(&mut handle, Method::GET, &path, &[]).await;
        answer(r, 200, &with_status(base.clone(), terminated(1)));
    };
    let d = run(scenario, p.status(&key)).await.expect("status");
    let states: Vec<DeployState> = d.history.iter().map(|c| c.state.clone()).collect();
    assert_eq!(
        states,
        vec![
            DeployState::Pending,
            DeployState::Running,
            DeployState::Exited(1)
        ]
    );

    // Pods that are not this provider's are not found, and names that
    // cannot be pods never reach the API.
    let scenario = async {
        let (_, r) = expect(&mut handle, Method::GET, &format!("{PODS}/coredns"), &[]).await;
        answer(r, 200, &other_pod(NS, "coredns", Some("n1"), &[]));
        let (_, r) = expect(&mut handle, Method::GET, &format!("{PODS}/gone"), &[]).await;
        answer(r, 404, &status(404, "NotFound", "pods \"gone\" not found"));
    };
    let (a, b) = run(scenario, async {
        (p.status("coredns").await, p.status("gone").await)
    })
    .await;
    assert_eq!(a.expect_err("foreign").code(), Code::NotFound);
    assert_eq!(b.expect_err("gone").code(), Code::NotFound);
    let err = p.status("../../secrets/token").await.expect_err("bad name");
    assert_eq!(err.code(), Code::NotFound);
    no_more_calls(p, handle).await;
}

#[tokio::test]
async fn list_selects_this_providers_pods() {
    let (p, mut handle) = provider();
    let (a, b) = (deployment_id("a"), deployment_id("b"));
    let scenario = async {
        let (_, r) = expect(
            &mut handle,
            Method::GET,
            PODS,
            &[("labelSelector", OWN), ("limit", "500")],
        )
        .await;
        answer(
            r,
            200,
            &list(vec![
                own_pod(&b, "k8s-a", "Succeeded", &[]),
                own_pod(&a, "k8s-a", "Running", &[]),
            ]),
        );
    };
    let all = run(scenario, p.list()).await.expect("list");
    let got: Vec<(String, DeployState)> = all.iter().map(|d| (d.id.clone(), d.state())).collect();
    let mut want = vec![(a, DeployState::Running), (b, DeployState::Exited(0))];
    want.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(got, want);
    no_more_calls(p, handle).await;
}

#[tokio::test]
async fn logs_follow_and_tail() {
    let (p, mut handle) = provider();
    let key = deployment_id("req");
    let path = format!("{PODS}/{key}");
    let log = format!("{path}/log");
    let running = own_pod(&key, "k8s-a", "Running", &[]);
    let scenario = async {
        let (_, r) = expect(&mut handle, Method::GET, &path, &[]).await;
        answer(r, 200, &running);
        let (_, r) = expect(
            &mut handle,
            Method::GET,
            &log,
            &[
                ("container", "main"),
                ("follow", "true"),
                ("tailLines", "2"),
            ],
        )
        .await;
        answer_text(r, "second\nthird\n");
    };
    let lines = run(scenario, async {
        let stream = p
            .logs(
                &key,
                LogOptions {
                    tail: Some(2),
                    follow: true,
                },
            )
            .await
            .expect("logs");
        stream.collect::<Vec<_>>().await
    })
    .await;
    let text: Vec<String> = lines
        .into_iter()
        .map(|l| {
            let l = l.expect("line");
            assert!(!l.stderr);
            l.text
        })
        .collect();
    assert_eq!(text, vec!["second", "third"]);

    // All of it, once; and a container that has not started yet.
    let scenario = async {
        let (_, r) = expect(&mut handle, Method::GET, &path, &[]).await;
        answer(r, 200, &running);
        let (_, r) = expect(&mut handle, Method::GET, &log, &[("container", "main")]).await;
        answer_text(r, "only\n");
        let (_, r) = expect(&mut handle, Method::GET, &path, &[]).await;
        answer(r, 200, &running);
        let (_, r) = expect(&mut handle, Method::GET, &log, &[("container", "main")]).await;
        answer(
            r,
            400,
            &status(
                400,
                "BadRequest",
                "container \"main\" in pod is waiting to start: ContainerCreating",
            ),
        );
    };
    let (all, early) = run(scenario, async {
        let all: Vec<_> = p
            .logs(&key, LogOptions::default())
            .await
            .expect("logs")
            .collect()
            .await;
        (all, p.logs(&key, LogOptions::default()).await.err())
    })
    .await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].as_ref().expect("line").text, "only");
    let early = early.expect("not started");
    assert_eq!(early.code(), Code::Unavailable, "{early}");
    assert!(early.to_string().contains("waiting to start"), "{early}");
    no_more_calls(p, handle).await;
}

#[tokio::test]
async fn stop_deletes_the_pod_then_it_is_not_found() {
    let (p, mut handle) = provider();
    let key = deployment_id("req");
    let path = format!("{PODS}/{key}");
    let running = own_pod(
        &key,
        "k8s-a",
        "Running",
        &[("cpu", "100m"), ("memory", "64Mi")],
    );
    let scenario = async {
        let (_, r) = expect(&mut handle, Method::GET, &path, &[]).await;
        answer(r, 200, &running);
        let (body, r) = expect(&mut handle, Method::DELETE, &path, &[]).await;
        assert_eq!(
            body,
            json!({"preconditions": {"uid": format!("uid-{key}")}})
        );
        let mut deleting = running.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:02:00Z");
        answer(r, 200, &deleting);
        // The second stop finds nothing.
        let (_, r) = expect(&mut handle, Method::GET, &path, &[]).await;
        answer(
            r,
            404,
            &status(404, "NotFound", &format!("pods \"{key}\" not found")),
        );
    };
    let (first, second) = run(scenario, async { (p.stop(&key).await, p.stop(&key).await) }).await;
    let d = first.expect("stop");
    assert_eq!(d.state(), DeployState::Stopped);
    let err = second.expect_err("already gone");
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        matches!(err, ResourceError::NotFound(ref m) if m.contains(&key)),
        "{err}"
    );

    // A pod of the namespace that iarnet did not make is never deleted.
    let scenario = async {
        let (_, r) = expect(&mut handle, Method::GET, &format!("{PODS}/postgres-0"), &[]).await;
        answer(r, 200, &other_pod(NS, "postgres-0", Some("n1"), &[]));
    };
    let err = run(scenario, p.stop("postgres-0"))
        .await
        .expect_err("foreign");
    assert_eq!(err.code(), Code::NotFound);
    no_more_calls(p, handle).await;
}

// ---- errors -------------------------------------------------------------------

#[tokio::test]
async fn forbidden_is_permission_denied() {
    let (p, mut handle) = provider();
    let key = deployment_id("req");
    let scenario = async {
        refuse_nodes(&mut handle).await;
        refuse_nodes(&mut handle).await;
        let (_, r) = expect(&mut handle, Method::GET, &format!("{PODS}/{key}"), &[]).await;
        answer(r, 403, &status(403, "Forbidden", "pods is forbidden"));
    };
    let (deployed, described, stat) = run(scenario, async {
        (
            p.deploy(&spec("req", 100, 64 * MI, 0), ProgressSink::none())
                .await,
            p.describe().await,
            p.status(&key).await,
        )
    })
    .await;
    let err = deployed.expect_err("forbidden");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.to_string().contains("cannot list resource"), "{err}");
    assert!(err.to_string().contains("set resource_limits"), "{err}");
    // describe reports the provider unhealthy instead of failing.
    assert!(!described.expect("describe").healthy);
    assert_eq!(stat.expect_err("forbidden").code(), Code::PermissionDenied);
    no_more_calls(p, handle).await;
}

/// A namespace-scoped service account may not list nodes (nor pods
/// cluster-wide): with `resource_limits` set, they are the capacity, and
/// the provider's own pods in its namespace are booked against them.
#[tokio::test]
async fn without_list_on_nodes_resource_limits_are_the_capacity() {
    let (p, mut handle) = provider_with(KubeSettings {
        limits: Some(res(3000, 6 * GI, 0, 0)),
        ..settings()
    });
    let scenario = async {
        refuse_nodes(&mut handle).await;
        // Only its namespace's pods are listed, with the same selector.
        let (_, r) = expect(
            &mut handle,
            Method::GET,
            PODS,
            &[("fieldSelector", LIVE), ("limit", "500")],
        )
        .await;
        answer(
            r,
            200,
            &list(vec![
                own_pod(
                    "iarnet-a",
                    "k8s-a",
                    "Running",
                    &[("cpu", "1"), ("memory", "1Gi")],
                ),
                other_pod(NS, "theirs", Some("node-1"), &[("cpu", "500m")]),
            ]),
        );
    };
    let d = run(scenario, p.describe()).await.expect("describe");
    assert!(d.healthy, "a namespace-only identity still serves: {d:?}");
    assert_eq!(d.capacity.total.cpu_millis, 3000);
    assert_eq!(d.capacity.total.memory_bytes, 6 * GI);
    // Its own pod is booked; the other pod draws on the cluster, not on it.
    assert_eq!(d.capacity.reserved.cpu_millis, 1000, "{:?}", d.capacity);
    assert_eq!(d.capacity.reserved.memory_bytes, GI);
    no_more_calls(p, handle).await;
}

#[tokio::test]
async fn a_broken_connection_is_unavailable() {
    let (p, mut handle) = provider();
    let scenario = async {
        let (_, r) = expect(
            &mut handle,
            Method::GET,
            "/api/v1/nodes",
            &[("limit", "500")],
        )
        .await;
        r.send_error(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        let (_, r) = expect(
            &mut handle,
            Method::GET,
            "/api/v1/nodes",
            &[("limit", "500")],
        )
        .await;
        answer(r, 503, &status(503, "ServiceUnavailable", "etcd is down"));
    };
    let (a, b) = run(scenario, async {
        (
            p.deploy(&spec("req", 100, 64 * MI, 0), ProgressSink::none())
                .await,
            p.deploy(&spec("req", 100, 64 * MI, 0), ProgressSink::none())
                .await,
        )
    })
    .await;
    for err in [a.expect_err("refused"), b.expect_err("503")] {
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.to_string().contains("k8s-a"), "{err}");
    }
    no_more_calls(p, handle).await;
}

#[tokio::test]
async fn connecting_reports_the_endpoint_and_never_the_token() {
    let token = "s3cr3t-t0ken-value";
    // Nothing listens on port 1.
    let err = KubernetesProvider::connect_token("https://127.0.0.1:1", token, settings())
        .await
        .expect_err("nothing listens");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(!format!("{err} {err:?}").contains(token));

    let err = KubernetesProvider::connect_token("not a url", token, settings())
        .await
        .expect_err("bad url");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(!format!("{err} {err:?}").contains(token));

    let err = KubernetesProvider::connect_kubeconfig("/nonexistent/kubeconfig", settings())
        .await
        .expect_err("no file");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");

    let (p, _handle) = provider();
    let shown = format!("{p:?}");
    assert!(shown.contains("k8s-a") && shown.contains(NS), "{shown}");
}

// ---- a real cluster -------------------------------------------------------------

/// Deploys a tiny pod on the cluster of `$KUBECONFIG` (namespace
/// `$IARNET_K8S_NAMESPACE`, default `default`), waits for it to run, reads
/// its logs and stops it. `cargo test --test kubernetes_provider -- --ignored`
#[tokio::test]
#[ignore = "needs a cluster: set KUBECONFIG"]
async fn real_cluster_round_trip() {
    use kube::runtime::wait::await_condition;

    let Some(path) = std::env::var_os("KUBECONFIG") else {
        eprintln!("KUBECONFIG is not set; skipping");
        return;
    };
    let namespace = std::env::var("IARNET_K8S_NAMESPACE").unwrap_or_else(|_| "default".into());
    let p = KubernetesProvider::connect_kubeconfig(
        &path,
        KubeSettings {
            namespace: namespace.clone(),
            ..settings()
        },
    )
    .await
    .expect("connect");
    let d = p.describe().await.expect("describe");
    assert!(d.healthy && d.capacity.total.cpu_millis > 0, "{d:?}");

    let request_id = format!(
        "it-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    );
    let mut s = spec(&request_id, 50, 16 * MI, 0);
    s.command = vec!["sh".into(), "-c".into()];
    s.args = vec!["echo hello from iarnet; echo done; sleep 3600".into()];
    let made = p.deploy(&s, ProgressSink::none()).await.expect("deploy");
    assert_eq!(
        p.deploy(&s, ProgressSink::none()).await.expect("again").id,
        made.id
    );

    let client = kube::Client::try_default().await.expect("client");
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client, &namespace);
    let started = |pod: Option<&k8s_openapi::api::core::v1::Pod>| {
        pod.and_then(|p| p.status.as_ref()?.phase.as_deref())
            .is_some_and(|phase| phase != "Pending")
    };
    tokio::time::timeout(
        Duration::from_secs(180),
        await_condition(pods.clone(), &made.id, started),
    )
    .await
    .expect("the pod starts within 3 minutes")
    .expect("watch");
    assert_eq!(
        p.status(&made.id).await.expect("status").state(),
        DeployState::Running
    );

    // Follow until both lines are there.
    let mut stream = p
        .logs(
            &made.id,
            LogOptions {
                tail: None,
                follow: true,
            },
        )
        .await
        .expect("logs");
    let mut seen = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("log lines come")
    {
        seen.push(line.expect("line").text);
        if seen.iter().any(|l| l == "done") {
            break;
        }
    }
    assert_eq!(seen, vec!["hello from iarnet", "done"]);
    drop(stream);

    let listed = p.list().await.expect("list");
    assert!(listed.iter().any(|d| d.id == made.id));
    assert_eq!(
        p.stop(&made.id).await.expect("stop").state(),
        DeployState::Stopped
    );
    let gone = |pod: Option<&k8s_openapi::api::core::v1::Pod>| pod.is_none();
    tokio::time::timeout(
        Duration::from_secs(120),
        await_condition(pods, &made.id, gone),
    )
    .await
    .expect("the pod goes within 2 minutes")
    .expect("watch");
    let err = p.stop(&made.id).await.expect_err("gone");
    assert_eq!(err.code(), Code::NotFound, "{err}");
}
