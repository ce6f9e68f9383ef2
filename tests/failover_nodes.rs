//! Failover across real nodes on 127.0.0.1 with in-memory providers: when
//! the owner of a deployment dies (killed, no goodbye), its home places the
//! next attempt elsewhere once the gossip layer declares the owner dead and
//! the policy's grace has passed; the attempt is recorded and carried with
//! the replacement; without a policy the deployment is reported lost.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use iarnet::config::Config;
use iarnet::node::{self, NodeHandle, ProviderSetup};
use iarnet::proto::resource as pb;
use iarnet::proto::resource::resource_service_client::ResourceServiceClient;
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::{Provider, Resources};

const WAIT: Duration = Duration::from_secs(60);

type Api = ResourceServiceClient<tonic::transport::Channel>;

fn provider(id: &str) -> Arc<MemoryProvider> {
    Arc::new(MemoryProvider::new(
        id,
        Resources {
            cpu_millis: 4_000,
            memory_bytes: 4 << 30,
            ..Resources::ZERO
        },
        BTreeMap::new(),
    ))
}

async fn start(id: &str, seeds: &[String], providers: Vec<Arc<dyn Provider>>) -> NodeHandle {
    let mut cfg = Config::loopback(id);
    cfg.initial_peers = seeds.to_vec();
    node::start_with(cfg, ProviderSetup::Given(providers))
        .await
        .expect("node starts on 127.0.0.1:0")
}

async fn deploy(api: &mut Api, spec: pb::DeploySpec) -> pb::Deployment {
    let mut stream = api.deploy(spec).await.unwrap().into_inner();
    let mut deployment = None;
    while let Some(ev) = stream.next().await {
        if let Some(pb::deploy_event::Event::Deployment(d)) = ev.unwrap().event {
            deployment = Some(d);
        }
    }
    deployment.expect("a deploy ends with its deployment")
}

async fn get(api: &mut Api, id: &str) -> pb::Deployment {
    api.get_deployment(pb::GetDeploymentRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until `home` sees `n` providers.
async fn sees_providers(home: &NodeHandle, n: usize) {
    common::wait_until(
        &format!("the home to see {n} providers"),
        WAIT,
        || match home.manager().candidates().len() {
            m if m == n => Ok(()),
            m => Err(format!("{m} providers")),
        },
    )
    .await;
}

async fn api_of(node: &NodeHandle) -> Api {
    ResourceServiceClient::connect(format!("http://{}", node.local_addr()))
        .await
        .unwrap()
}

/// Polls deployment `id` until `done` holds of it.
async fn get_until(
    api: &mut Api,
    id: &str,
    what: &str,
    done: impl Fn(&pb::Deployment) -> bool,
) -> pb::Deployment {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = get(api, id).await;
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{what}: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A home without a provider and three owners, all seeing each other.
async fn mesh(tag: &str) -> (NodeHandle, Vec<(NodeHandle, Arc<MemoryProvider>)>) {
    let home = start(&format!("{tag}-home"), &[], Vec::new()).await;
    let seed = [home.advertise_addr()];
    let mut owners = Vec::new();
    for i in 0..3 {
        let p = provider(&format!("{tag}-p{i}"));
        let n = start(
            &format!("{tag}-o{i}"),
            &seed,
            vec![p.clone() as Arc<dyn Provider>],
        )
        .await;
        owners.push((n, p));
    }
    sees_providers(&home, 3).await;
    (home, owners)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_owners_deployment_is_placed_again_elsewhere_as_the_next_attempt() {
    let (home, mut owners) = mesh("fo").await;
    let mut api = api_of(&home).await;
    let d = deploy(
        &mut api,
        pb::DeploySpec {
            request_id: "fo-web".into(),
            image: "iarnet-test/busybox:1".into(),
            cpu: "1".into(),
            memory: "64Mi".into(),
            reschedule: Some(pb::Reschedule {
                after: "1s".into(),
                delay: "100ms".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((d.attempt, d.state.as_str()), (1, "running"));
    let first = d.owner_id.clone();
    let i = owners.iter().position(|(n, _)| n.id() == first).unwrap();
    let (dead, _) = owners.remove(i);
    let killed = Instant::now();
    dead.kill();

    let moved = {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = get(&mut api, "fo-web").await;
            if got.attempt == 2 && got.state == "running" {
                break got;
            }
            assert!(Instant::now() < deadline, "never rescheduled: {got:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    println!(
        "failover: owner killed -> attempt 2 running in {:?} (gossip interval {:?}, grace 1s)",
        killed.elapsed(),
        home.config().gossip.interval
    );
    assert_ne!(moved.owner_id, first, "not back on the dead node");
    assert!(owners.iter().any(|(n, _)| n.id() == moved.owner_id));
    assert_eq!(moved.attempts.len(), 2, "{:?}", moved.attempts);
    assert_eq!(moved.attempts[0].owner_id, first);
    assert!(
        moved.attempts[0].ended.contains("declared dead"),
        "{:?}",
        moved.attempts
    );
    assert!(moved.attempts[1].ended.is_empty());
    // The replacement carries its attempt and home with it.
    let (_, p) = owners
        .iter()
        .find(|(n, _)| n.id() == moved.owner_id)
        .unwrap();
    let on_owner = p.status(&d.id).await.unwrap();
    assert_eq!(
        (on_owner.attempt, on_owner.home.as_str()),
        (2, home.id().as_str())
    );
    assert_eq!(home.manager().failover_metrics().reschedules.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_policy_a_dead_owners_deployment_is_reported_lost() {
    let (home, mut owners) = mesh("lost").await;
    let mut api = api_of(&home).await;
    let d = deploy(
        &mut api,
        pb::DeploySpec {
            request_id: "lost-1".into(),
            image: "iarnet-test/busybox:1".into(),
            cpu: "1".into(),
            memory: "64Mi".into(),
            ..Default::default()
        },
    )
    .await;
    let i = owners
        .iter()
        .position(|(n, _)| n.id() == d.owner_id)
        .unwrap();
    owners.remove(i).0.kill();
    let deadline = Instant::now() + WAIT;
    loop {
        let got = get(&mut api, "lost-1").await;
        if got.state == "failed" {
            assert!(got.reason.starts_with("lost: its owner node"), "{got:?}");
            assert_eq!(got.attempt, 1);
            break;
        }
        assert!(Instant::now() < deadline, "never reported lost: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_stops_what_asked_for_it_once_its_home_stayed_away_that_long() {
    let p = provider("sad-p");
    let owner = start("sad-o", &[], vec![p.clone() as Arc<dyn Provider>]).await;
    let home = start("sad-home", &[owner.advertise_addr()], Vec::new()).await;
    sees_providers(&home, 1).await;
    let mut api = api_of(&home).await;
    let spec = |id: &str, after: &str| pb::DeploySpec {
        request_id: id.into(),
        image: "iarnet-test/busybox:1".into(),
        cpu: "1".into(),
        memory: "64Mi".into(),
        stop_after_disconnect: after.into(),
        ..Default::default()
    };
    // Bad input names the field and places nothing.
    let bad = api.deploy(spec("bad", "soon")).await;
    let bad = match bad {
        Err(s) => s,
        Ok(stream) => stream
            .into_inner()
            .next()
            .await
            .expect("an answer")
            .unwrap_err(),
    };
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("stop_after_disconnect"), "{bad:?}");
    assert_eq!(deploy(&mut api, spec("keeps", "")).await.state, "running");
    assert_eq!(
        deploy(&mut api, spec("gives-up", "2s")).await.state,
        "running"
    );

    let state = |req: &str| {
        futures::executor::block_on(p.list())
            .unwrap()
            .into_iter()
            .find(|d| d.request_id == req)
            .map(|d| d.state())
    };
    assert!(state("gives-up").is_some_and(|s| !s.is_final()));
    let killed = Instant::now();
    home.kill();
    // Stopped is removed from the provider, as Docker removes the container.
    common::wait_until(
        "the owner to stop what asked for it",
        WAIT,
        || match state("gives-up") {
            None => Ok(()),
            Some(s) => Err(format!("{s:?}")),
        },
    )
    .await;
    // Not before the home was declared dead and 2 s more had passed.
    assert!(killed.elapsed() >= Duration::from_secs(2));
    assert!(
        state("keeps").is_some_and(|s| !s.is_final()),
        "work that did not ask keeps running"
    );
    println!(
        "stop_after_disconnect 2s: stopped {:?} after the home was killed",
        killed.elapsed()
    );
    assert!(owner
        .metrics()
        .await
        .contains("iarnet_disconnect_stops_total 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_back_from_the_dead_stops_its_stale_attempt() {
    let home = start("fe-home", &[], Vec::new()).await;
    let seed = [home.advertise_addr()];
    let p1 = provider("fe-p1");
    let p2 = provider("fe-p2");
    let store1: Arc<dyn iarnet::store::Store> = Arc::new(iarnet::store::MemoryStore::new());
    let cfg1 = || {
        let mut c = Config::loopback("fe-o1");
        c.initial_peers = seed.to_vec();
        c
    };
    let o1 = node::start_with_store(
        cfg1(),
        ProviderSetup::Given(vec![p1.clone() as Arc<dyn Provider>]),
        store1.clone(),
    )
    .await
    .unwrap();
    let _o2 = start("fe-o2", &seed, vec![p2.clone() as Arc<dyn Provider>]).await;
    sees_providers(&home, 2).await;
    let mut api = api_of(&home).await;
    let d = deploy(
        &mut api,
        pb::DeploySpec {
            request_id: "fe-svc".into(),
            image: "iarnet-test/busybox:1".into(),
            cpu: "1".into(),
            memory: "64Mi".into(),
            provider_id: "fe-p1".into(),
            reschedule: Some(pb::Reschedule {
                after: "500ms".into(),
                delay: "100ms".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(d.owner_id, "fe-o1");

    // o1 vanishes, its container still "running" (its provider lives on).
    o1.kill();
    let deadline = Instant::now() + WAIT;
    while get(&mut api, "fe-svc").await.attempt != 2 {
        assert!(Instant::now() < deadline, "never rescheduled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(p2.status(&d.id).await.unwrap().attempt, 2);
    assert_eq!(
        p1.status(&d.id).await.unwrap().attempt,
        1,
        "two copies for now"
    );

    // o1 comes back: it learns that attempt 2 exists and stops its copy.
    let o1 = node::start_with_store(
        cfg1(),
        ProviderSetup::Given(vec![p1.clone() as Arc<dyn Provider>]),
        store1,
    )
    .await
    .unwrap();
    let deadline = Instant::now() + WAIT;
    while p1.status(&d.id).await.is_ok() {
        assert!(Instant::now() < deadline, "the stale attempt kept running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        p2.status(&d.id).await.unwrap().attempt,
        2,
        "the current one runs on"
    );
    assert_eq!(o1.manager().failover_metrics().fenced.get(), 1);
    let got = get(&mut api, "fe-svc").await;
    assert_eq!(
        (got.attempt, got.owner_id.as_str(), got.state.as_str()),
        (2, "fe-o2", "running")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_home_killed_during_a_reschedule_storm_loses_and_duplicates_nothing() {
    const N: usize = 24;
    let store: Arc<dyn iarnet::store::Store> = Arc::new(iarnet::store::MemoryStore::new());
    let home_cfg = || {
        let mut c = Config::loopback("st-home");
        // The test reads every deployment every 100 ms.
        c.security.rate_limit.token_rate = 1e6;
        c.security.rate_limit.token_burst = 1e6;
        c
    };
    let home = node::start_with_store(home_cfg(), ProviderSetup::Given(Vec::new()), store.clone())
        .await
        .unwrap();
    let seed = [home.advertise_addr()];
    let mut owners = Vec::new();
    for i in 0..4 {
        let p = provider(&format!("st-p{i}"));
        let n = start(
            &format!("st-o{i}"),
            &seed,
            vec![p.clone() as Arc<dyn Provider>],
        )
        .await;
        owners.push((n, p));
    }
    sees_providers(&home, 4).await;
    let mut api = api_of(&home).await;
    for i in 0..N {
        deploy(
            &mut api,
            pb::DeploySpec {
                request_id: format!("st-{i}"),
                image: "iarnet-test/busybox:1".into(),
                cpu: "100m".into(),
                memory: "16Mi".into(),
                strategy: "round-robin".into(),
                reschedule: Some(pb::Reschedule {
                    after: "300ms".into(),
                    delay: "10ms".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await;
    }
    // Two owners die: about half the deployments must move.
    let doomed: Vec<String> = owners[..2].iter().map(|(n, _)| n.id()).collect();
    let survivors: Vec<(NodeHandle, Arc<MemoryProvider>)> = owners.split_off(2);
    for (n, _) in owners {
        n.kill();
    }
    // Kill the home in the middle of the storm.
    common::wait_until("the reschedule storm to begin", WAIT, || {
        match home.manager().failover_metrics().reschedules.get() {
            0 => Err("no reschedule yet".to_string()),
            _ => Ok(()),
        }
    })
    .await;
    let moved_before = home.manager().failover_metrics().reschedules.get();
    home.kill();
    let home = node::start_with_store(
        {
            let mut c = home_cfg();
            c.initial_peers = vec![survivors[0].0.advertise_addr()];
            c
        },
        ProviderSetup::Given(Vec::new()),
        store,
    )
    .await
    .unwrap();
    let mut api = api_of(&home).await;
    // Every acknowledged deployment runs again, on a survivor, exactly once.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut copies: BTreeMap<String, usize> = BTreeMap::new();
        for (_, p) in &survivors {
            for d in p.list().await.unwrap() {
                if !d.state().is_final() {
                    *copies.entry(d.request_id.clone()).or_default() += 1;
                }
            }
        }
        let mut waiting = Vec::new();
        for i in 0..N {
            let d = get(&mut api, &format!("st-{i}")).await;
            if d.state != "running" || doomed.contains(&d.owner_id) {
                waiting.push(format!(
                    "st-{i}: {} on {} attempt {} ({})",
                    d.state, d.owner_id, d.attempt, d.reason
                ));
            }
        }
        let all_running = waiting.is_empty();
        if all_running && copies.len() == N {
            assert!(
                copies.values().all(|n| *n == 1),
                "a deployment runs twice: {copies:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every deployment came back ({} of {N} on survivors; {moved_before} moved before the kill): {copies:?}\nwaiting: {waiting:#?}",
            copies.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replacement_with_nowhere_to_go_waits_in_the_queue_until_room_appears() {
    let small = |id: &str| {
        Arc::new(MemoryProvider::new(
            id,
            Resources {
                cpu_millis: 1_000,
                memory_bytes: 1 << 30,
                ..Resources::ZERO
            },
            BTreeMap::new(),
        ))
    };
    let home = start("nw-home", &[], Vec::new()).await;
    let seed = [home.advertise_addr()];
    let o1 = start("nw-o1", &seed, vec![provider("nw-p1") as Arc<dyn Provider>]).await;
    let _o2 = start("nw-o2", &seed, vec![small("nw-p2") as Arc<dyn Provider>]).await;
    sees_providers(&home, 2).await;
    let mut api = api_of(&home).await;
    let d = deploy(
        &mut api,
        pb::DeploySpec {
            request_id: "nw-big".into(),
            image: "iarnet-test/busybox:1".into(),
            cpu: "3".into(),
            memory: "64Mi".into(),
            reschedule: Some(pb::Reschedule {
                after: "500ms".into(),
                delay: "100ms".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(d.owner_id, o1.id());
    o1.kill();

    // Only 1 CPU left in the mesh: attempt 2 waits in the queue, saying why.
    let queued = get_until(&mut api, "nw-big", "never queued", |d| d.state == "queued").await;
    assert_eq!(queued.attempt, 2, "{queued:?}");
    assert!(
        queued
            .reason
            .starts_with("its owner node nw-o1 was declared dead; 0/1 providers can run it now"),
        "{queued:?}"
    );
    assert!(
        home.manager()
            .queue()
            .iter()
            .any(|(e, _)| e.record.id == d.id),
        "in the queue proper"
    );

    // A node with room joins: the queue places it there.
    let o3 = start("nw-o3", &seed, vec![provider("nw-p3") as Arc<dyn Provider>]).await;
    let placed = get_until(&mut api, "nw-big", "never placed", |d| d.state == "running").await;
    assert_eq!(
        (placed.attempt, placed.owner_id.as_str()),
        (2, o3.id().as_str())
    );
    assert_eq!(placed.attempts.len(), 2, "{:?}", placed.attempts);
    assert!(home.manager().queue().is_empty());
}

/// A home that went down between writing its intent (`Placing` on another
/// node's provider) and hearing the owner's answer settles each such
/// record by asking the owner once it hears from it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_home_settles_the_placements_it_never_heard_back_about() {
    use iarnet::resource::validate::deployment_id;
    use iarnet::store::{DeploymentRecord, MemoryStore, Store, Stored};

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let home = node::start_with_store(
        Config::loopback("uc-home"),
        ProviderSetup::Given(Vec::new()),
        store.clone(),
    )
    .await
    .unwrap();
    let p = provider("uc-p0");
    let owner = start(
        "uc-o0",
        &[home.advertise_addr()],
        vec![p.clone() as Arc<dyn Provider>],
    )
    .await;
    sees_providers(&home, 1).await;
    let mut api = api_of(&home).await;
    let made = deploy(
        &mut api,
        pb::DeploySpec {
            request_id: "uc-made".into(),
            image: "iarnet-test/busybox:1".into(),
            cpu: "100m".into(),
            memory: "16Mi".into(),
            reschedule: Some(pb::Reschedule {
                after: "1s".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(made.state, "running");
    home.kill();

    // What the store holds had the home died before each answer came:
    // - "uc-made": the owner made it;
    // - "uc-never": the owner never did, and a reschedule policy allows
    //   the next attempt;
    // - "uc-plain": the owner never did, and there is no policy.
    let mut rec = store.deployment(&made.id).unwrap().unwrap();
    rec.push(Stored::Placing);
    store.put_deployment(&rec).unwrap();
    let never = |request: &str, policy: bool| {
        let id = deployment_id(request);
        let mut r = DeploymentRecord::new(&id, request, &rec.image, rec.placed_on.clone());
        r.set_resources(rec.resources());
        r.note_attempt(1, &rec.placed_on.provider_id, &rec.placed_on.owner_id);
        r.spec = rec.spec.clone().filter(|_| policy).map(|mut s| {
            s.request_id = request.to_string();
            s
        });
        r.push(Stored::Placing);
        store.put_deployment(&r).unwrap();
        id
    };
    let never_id = never("uc-never", true);
    let plain_id = never("uc-plain", false);

    let home = node::start_with_store(
        {
            let mut c = Config::loopback("uc-home");
            c.initial_peers = vec![owner.advertise_addr()];
            c
        },
        ProviderSetup::Given(Vec::new()),
        store.clone(),
    )
    .await
    .unwrap();
    let mut api = api_of(&home).await;
    let settled = |id: &str| {
        store
            .deployment(id)
            .unwrap()
            .is_some_and(|r| r.state() != Stored::Placing)
    };
    common::wait_until("the three records to settle", WAIT, || {
        match [&made.id, &never_id, &plain_id]
            .into_iter()
            .filter(|id| !settled(id))
            .count()
        {
            0 => Ok(()),
            n => Err(format!("{n} still placing")),
        }
    })
    .await;

    let kept = store.deployment(&made.id).unwrap().unwrap();
    assert_eq!((kept.state(), kept.attempt), (Stored::Running, 1));
    let again = get_until(&mut api, "uc-never", "the next attempt runs", |d| {
        d.state == "running"
    })
    .await;
    assert_eq!(again.attempt, 2, "{again:?}");
    assert!(
        again.attempts[0].ended.contains("never made attempt 1"),
        "{:?}",
        again.attempts
    );
    assert_eq!(p.status(&never_id).await.unwrap().attempt, 2);
    let plain = get(&mut api, "uc-plain").await;
    assert_eq!(plain.state, "failed", "{plain:?}");
    assert!(plain.reason.contains("never made it"), "{plain:?}");
    assert!(
        p.status(&plain_id).await.is_err(),
        "nothing was made for it"
    );
}
