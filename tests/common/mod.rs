//! Helpers for tests that run real nodes on 127.0.0.1.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use iarnet::config::Config;
use iarnet::mesh::Status;
use iarnet::node::{self, MemberSnapshot, NodeHandle, ProviderSetup};
use iarnet::resource::Provider;

/// Starts a node with fast loopback settings, seeded by `seeds`, without
/// an internal provider.
pub async fn start(id: &str, seeds: &[String]) -> NodeHandle {
    start_with(id, seeds, Vec::new(), true).await
}

/// Starts a node whose internal providers are `providers`.
pub async fn start_with(
    id: &str,
    seeds: &[String],
    providers: Vec<Arc<dyn Provider>>,
    allow_remote_access: bool,
) -> NodeHandle {
    let mut cfg = Config::loopback(id);
    cfg.initial_peers = seeds.to_vec();
    cfg.resources.allow_remote_access = allow_remote_access;
    node::start_with(cfg, ProviderSetup::Given(providers))
        .await
        .expect("node starts on 127.0.0.1:0")
}

/// Polls `check` until it returns true; fails naming what was expected and
/// what was last seen. Deadlines are generous: this asserts behaviour, not speed.
#[track_caller]
pub fn wait_until<'a, F>(
    what: &'a str,
    timeout: Duration,
    mut check: F,
) -> impl std::future::Future<Output = ()> + 'a
where
    F: FnMut() -> Result<(), String> + 'a,
{
    let caller = std::panic::Location::caller();
    async move {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = match check() {
                Ok(()) => return,
                Err(seen) => seen,
            };
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{caller}: timed out after {timeout:?} waiting for {what}; last seen: {seen}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The members `node` holds in `status`, by id.
pub fn ids_in(node: &NodeHandle, status: Status) -> Vec<String> {
    node.members()
        .into_iter()
        .filter(|m| m.status == status)
        .map(|m| m.id)
        .collect()
}

pub fn find(node: &NodeHandle, id: &str) -> Option<MemberSnapshot> {
    node.members().into_iter().find(|m| m.id == id)
}

/// `Ok` when every node in `nodes` holds exactly `expected` ids alive.
pub fn all_see_alive(nodes: &[&NodeHandle], expected: &[String]) -> Result<(), String> {
    let mut want = expected.to_vec();
    want.sort();
    for n in nodes {
        let mut alive = ids_in(n, Status::Alive);
        alive.sort();
        if alive != want {
            return Err(format!("{} sees alive {:?}", n.id(), alive));
        }
    }
    Ok(())
}
