//! One suite, run against the in-memory twin and the redb store.

use super::*;
use crate::resource::{DeployState, StateChange};

fn placed_on() -> PlacedOn {
    PlacedOn {
        provider_id: "n1/docker".into(),
        provider_name: "docker".into(),
        kind: "docker".into(),
        tier: "internal".into(),
        owner_id: "n1".into(),
        owner_addr: String::new(),
    }
}

fn record(id: &str) -> DeploymentRecord {
    let mut r = DeploymentRecord {
        id: format!("iarnet-{id}"),
        request_id: id.into(),
        image: "busybox".into(),
        cpu_millis: 100,
        memory_bytes: 64 << 20,
        gpus_wanted: 0,
        storage_bytes: 0,
        placed_on: placed_on(),
        gpus: vec![],
        history: vec![],
        adopted: false,
        labels: Default::default(),
        attempt: 0,
        attempts: Vec::new(),
        spec: None,
    };
    r.push(Stored::Placing);
    r
}

fn suite(store: &dyn Store) {
    // Empty at first.
    assert_eq!(store.identity().unwrap(), None);
    assert!(store.deployments().unwrap().is_empty());
    assert!(store.peers().unwrap().is_empty());

    // Round trip.
    let id = IdentityRecord {
        node_id: "n1".into(),
        generation: 7,
    };
    store.set_identity(&id).unwrap();
    assert_eq!(store.identity().unwrap(), Some(id));
    let a = record("a");
    store.put_deployment(&a).unwrap();
    assert_eq!(store.deployment(&a.id).unwrap(), Some(a.clone()));
    assert_eq!(store.deployment("nope").unwrap(), None);

    // History append, then overwrite.
    let mut a2 = a.clone();
    a2.observe(&crate::resource::Deployment {
        id: a.id.clone(),
        request_id: "a".into(),
        provider_id: "n1/docker".into(),
        image: "busybox".into(),
        resources: a.resources(),
        gpus: vec![],
        history: vec![
            StateChange {
                state: DeployState::Pending,
                at: std::time::SystemTime::now(),
            },
            StateChange {
                state: DeployState::Running,
                at: std::time::SystemTime::now(),
            },
        ],
        lease: None,
        labels: Default::default(),
        restarts: 0,
        attempt: 1,
        home: String::new(),
        attempts: Vec::new(),
        preemptible: None,
        stop_after_disconnect_ms: None,
        health: None,
        ports: Vec::new(),
        group: String::new(),
    });
    store.put_deployment(&a2).unwrap();
    let back = store.deployment(&a.id).unwrap().unwrap();
    assert_eq!(
        back.history
            .iter()
            .map(|c| c.state.clone())
            .collect::<Vec<_>>(),
        vec![Stored::Placing, Stored::Pending, Stored::Running]
    );
    assert_eq!(back.to_deployment().state(), DeployState::Running);
    let mut a3 = back.clone();
    a3.push(Stored::Stopping);
    a3.push(Stored::Stopped);
    a3.push(Stored::Stopped);
    store.put_deployment(&a3).unwrap();
    let back = store.deployment(&a.id).unwrap().unwrap();
    assert_eq!(back.history.len(), 5, "a repeated state is not appended");
    assert_eq!(back.state(), Stored::Stopped);
    assert_eq!(
        back.to_deployment()
            .history
            .iter()
            .map(|c| c.state.name())
            .collect::<Vec<_>>(),
        vec!["pending", "running", "stopped"],
        "placing and stopping are the manager's, not the client's"
    );

    let b = record("b");
    store.put_deployment(&b).unwrap();
    let ids: Vec<String> = store
        .deployments()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec!["iarnet-a".to_string(), "iarnet-b".to_string()]);
    store.remove_deployment(&b.id).unwrap();
    assert_eq!(store.deployments().unwrap().len(), 1);

    // Providers and peers.
    let p = ProviderRecord {
        id: "n1/ext".into(),
        name: "ext".into(),
        kind: "docker".into(),
        endpoint: "tcp://10.0.0.1:2376".into(),
        labels: [("region".to_string(), "eu".to_string())].into(),
        max_deployments: Some(2),
    };
    store.put_provider(&p).unwrap();
    assert_eq!(store.providers().unwrap(), vec![p.clone()]);
    store.remove_provider(&p.id).unwrap();
    assert!(store.providers().unwrap().is_empty());
    let peers = vec!["10.0.0.2:9000".to_string(), "10.0.0.3:9000".to_string()];
    store.set_peers(&peers).unwrap();
    assert_eq!(store.peers().unwrap(), peers);

    // A queue entry and its record go in and out together.
    let mut waiting = record("q");
    waiting.history.clear();
    waiting.push(Stored::Queued {
        reason: "0/1 providers can run it now".into(),
    });
    let q = QueuedRecord {
        id: waiting.id.clone(),
        spec: crate::resource::DeploySpec {
            request_id: "q".into(),
            image: "busybox".into(),
            env: [("TOKEN".to_string(), "kept until placed".to_string())].into(),
            ..Default::default()
        },
        strategy: Some("binpack".into()),
        region: None,
        provider_id: None,
        priority: Priority::from_parts("batch", 3).unwrap(),
        seq: 9,
        enqueued_ms: 1_000,
        deadline_ms: Some(61_000),
        wait_for_capacity: false,
    };
    store.put_queued(&q, &waiting).unwrap();
    assert_eq!(store.queued().unwrap(), vec![q.clone()]);
    assert_eq!(store.deployment(&q.id).unwrap(), Some(waiting.clone()));
    let mut expired = waiting.clone();
    expired.push(Stored::Expired {
        reason: "waited 1m".into(),
    });
    store.remove_queued(&q.id, &expired).unwrap();
    assert!(store.queued().unwrap().is_empty());
    assert_eq!(
        store
            .deployment(&q.id)
            .unwrap()
            .unwrap()
            .to_deployment()
            .state(),
        DeployState::Expired("waited 1m".into())
    );
    // Left queued for the reopen check below.
    store.put_queued(&q, &waiting).unwrap();
}

#[test]
fn memory_store_passes_the_suite() {
    suite(&MemoryStore::new());
}

#[test]
fn redb_store_passes_the_suite_and_keeps_it_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_dir(dir.path()).unwrap();
    suite(&store);
    let before = store.deployments().unwrap();
    drop(store);
    let store = RedbStore::open_dir(dir.path()).unwrap();
    assert_eq!(store.deployments().unwrap(), before);
    assert_eq!(store.identity().unwrap().unwrap().generation, 7);
    assert_eq!(store.peers().unwrap().len(), 2);
    assert_eq!(store.queued().unwrap().len(), 1);
}

#[test]
fn a_second_open_of_the_same_file_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = RedbStore::open_dir(dir.path()).unwrap();
    match RedbStore::open_dir(dir.path()) {
        Err(StoreError::Locked { path }) => assert!(path.ends_with("iarnet.redb"), "{path}"),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("expected Locked, the file opened twice"),
    }
}

#[test]
fn a_corrupt_record_is_reported_with_its_key() {
    let e = decode::<DeploymentRecord>("iarnet-x", b"{not json").unwrap_err();
    assert!(e.to_string().contains("iarnet-x"), "{e}");
}
