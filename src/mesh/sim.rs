//! A deterministic, in-process simulator of many gossip cores.
//!
//! Every core runs the production state machine; only the network is
//! simulated: calls are delivered at once unless the target crashed, sits on
//! the other side of a partition, or the call is lost. One seed decides
//! everything, so a failing run replays exactly from the seed it prints.

use std::collections::{HashMap, HashSet, VecDeque};

use prost::Message;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::core::{Call, Identity, Mesh, MeshConfig, Reply, Target};
use super::intern::Interner;
use super::record::{Millis, Status};
use crate::proto::peer::ProviderInfo;

/// How a simulation is set up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    pub seed: u64,
    /// Probability that one call is lost (half before the callee sees it, half after).
    pub loss: f64,
    pub mesh: MeshConfig,
    /// Providers each node advertises.
    pub providers_per_node: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 16,
            seed: 1,
            loss: 0.0,
            mesh: MeshConfig::default(),
            providers_per_node: 1,
        }
    }
}

struct SimNode {
    mesh: Mesh,
    up: bool,
    group: u32,
    generation: u64,
}

/// Many cores and the network between them.
pub struct Sim {
    cfg: SimConfig,
    nodes: Vec<SimNode>,
    by_addr: HashMap<String, usize>,
    rng: SmallRng,
    interner: Interner,
    now: Millis,
    round: u64,
    bytes: u64,
    calls: u64,
    false_deaths: HashSet<(usize, usize, u64)>,
}

/// The address a simulated node listens on.
pub fn sim_addr(i: usize) -> String {
    format!("node-{i}:50051")
}

/// The id of a simulated node.
pub fn sim_id(i: usize) -> String {
    format!("n{i}")
}

impl Sim {
    /// Starts `cfg.nodes` cores; every one but node 0 knows only node 0.
    pub fn new(cfg: SimConfig) -> Sim {
        let interner = Interner::shared();
        // Numbered up front, so that each view is allocated once at its full
        // size rather than grown (and the smaller copy left with the allocator).
        for i in 0..cfg.nodes {
            interner.id(&sim_id(i));
        }
        let mut sim = Sim {
            nodes: Vec::with_capacity(cfg.nodes),
            by_addr: HashMap::new(),
            rng: SmallRng::seed_from_u64(cfg.seed),
            interner,
            now: 0,
            round: 0,
            bytes: 0,
            calls: 0,
            false_deaths: HashSet::new(),
            cfg,
        };
        for i in 0..sim.cfg.nodes {
            let mesh = sim.make_core(i, 1);
            sim.by_addr.insert(sim_addr(i), i);
            sim.nodes.push(SimNode {
                mesh,
                up: true,
                group: 0,
                generation: 1,
            });
        }
        sim
    }

    fn make_core(&mut self, i: usize, generation: u64) -> Mesh {
        let identity = Identity {
            id: sim_id(i),
            name: String::new(),
            addr: sim_addr(i),
            generation,
        };
        let seed = self.rng.random();
        let mut mesh = Mesh::with_interner(
            identity,
            self.cfg.mesh.clone(),
            seed,
            self.now,
            self.interner.clone(),
        );
        mesh.set_seeds(vec![sim_addr(0)]);
        let providers = (0..self.cfg.providers_per_node)
            .map(|p| ProviderInfo {
                id: format!("{}-p{p}", sim_id(i)),
                name: format!("docker-{p}"),
                r#type: "docker".into(),
                ..Default::default()
            })
            .collect::<Vec<_>>();
        if !providers.is_empty() {
            mesh.set_providers(providers);
        }
        mesh
    }

    pub fn seed(&self) -> u64 {
        self.cfg.seed
    }

    pub fn round(&self) -> u64 {
        self.round
    }

    pub fn now(&self) -> Millis {
        self.now
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn core(&self, i: usize) -> &Mesh {
        &self.nodes[i].mesh
    }

    pub fn core_mut(&mut self, i: usize) -> &mut Mesh {
        &mut self.nodes[i].mesh
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].up
    }

    /// Bytes sent by all nodes together (requests and responses) so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes
    }

    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Distinct (observer, member, incarnation) where a live member was declared dead.
    pub fn false_deaths(&self) -> usize {
        self.false_deaths.len()
    }

    /// One gossip round: every live core ticks and runs its exchanges.
    pub fn step(&mut self) {
        self.now += self.cfg.mesh.gossip_interval;
        self.round += 1;
        let mut order: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].up)
            .collect();
        order.shuffle(&mut self.rng);
        for i in order {
            let now = self.now;
            let targets = self.nodes[i].mesh.tick(now);
            for t in targets {
                self.exchange(i, t);
            }
        }
        self.record_false_deaths();
    }

    /// Runs rounds until `done` holds or `max_rounds` pass; returns the rounds taken.
    pub fn run_until(
        &mut self,
        max_rounds: u64,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<u64> {
        let start = self.round;
        while self.round - start < max_rounds {
            if done(self) {
                return Some(self.round - start);
            }
            self.step();
        }
        done(self).then(|| self.round - start)
    }

    fn exchange(&mut self, from: usize, target: Target) {
        let now = self.now;
        let (mut ex, first) = self.nodes[from].mesh.open(target.clone());
        let mut queue = VecDeque::from([first]);
        while let Some(call) = queue.pop_front() {
            match self.deliver(from, &target.addr, call) {
                Some(reply) => {
                    let next = self.nodes[from].mesh.on_reply(now, &mut ex, reply);
                    queue.extend(next);
                }
                None => {
                    if let Some(retry) = self.nodes[from].mesh.on_failure(now, &mut ex) {
                        queue.push_front(retry);
                    } else {
                        break;
                    }
                }
            }
        }
    }

    fn deliver(&mut self, from: usize, addr: &str, call: Call) -> Option<Reply> {
        self.calls += 1;
        self.bytes += match &call {
            Call::Peers(r) => r.encoded_len(),
            Call::Providers(r) => r.encoded_len(),
        } as u64;
        let to = *self.by_addr.get(addr)?;
        if !self.nodes[to].up || self.nodes[to].group != self.nodes[from].group {
            return None;
        }
        let roll: f64 = self.rng.random();
        if roll < self.cfg.loss / 2.0 {
            return None;
        }
        let now = self.now;
        let reply = match call {
            Call::Peers(r) => Reply::Peers(self.nodes[to].mesh.handle_exchange(now, r)),
            Call::Providers(r) => Reply::Providers(self.nodes[to].mesh.handle_providers(r)),
        };
        self.bytes += match &reply {
            Reply::Peers(r) => r.encoded_len(),
            Reply::Providers(r) => r.encoded_len(),
        } as u64;
        if roll < self.cfg.loss {
            return None;
        }
        Some(reply)
    }

    fn record_false_deaths(&mut self) {
        for (obs, node) in self.nodes.iter().enumerate() {
            // Most views hold nobody dead: no scan for them.
            if !node.up || node.mesh.view().dead_len() == 0 {
                continue;
            }
            for e in node.mesh.view().iter() {
                if e.status != Status::Dead {
                    continue;
                }
                let Some(j) = self.by_addr.get(&e.info.addr).copied() else {
                    continue;
                };
                let target = &self.nodes[j];
                if target.up && target.generation == e.info.generation {
                    self.false_deaths.insert((obs, j, e.incarnation));
                }
            }
        }
    }

    /// Stops node `i` without a goodbye.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
    }

    /// Stops node `i` after it says goodbye to a few peers.
    pub fn leave(&mut self, i: usize) {
        let goodbyes = self.nodes[i].mesh.leave();
        for (target, req) in goodbyes {
            let _ = self.deliver(i, &target.addr, Call::Peers(req));
        }
        self.nodes[i].up = false;
    }

    /// Starts node `i` again as a new generation with a fresh state.
    pub fn restart(&mut self, i: usize) {
        let generation = self.nodes[i].generation + 1;
        let mesh = self.make_core(i, generation);
        self.nodes[i] = SimNode {
            mesh,
            up: true,
            group: self.nodes[i].group,
            generation,
        };
    }

    /// Splits the network: calls between nodes of different groups fail.
    pub fn partition(&mut self, group_of: impl Fn(usize) -> u32) {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            node.group = group_of(i);
        }
    }

    pub fn heal(&mut self) {
        for node in &mut self.nodes {
            node.group = 0;
        }
    }

    /// Whether node `obs` holds every node in `expected` alive at its current
    /// generation with its current provider set, and no other live member.
    pub fn sees_exactly(&self, obs: usize, expected: &[usize]) -> bool {
        let view = self.nodes[obs].mesh.view();
        let live = view.iter().filter(|e| !e.status.is_tombstone()).count();
        live == expected.len()
            && expected.iter().all(|j| {
                let node = &self.nodes[*j];
                view.get(node.mesh.id()).is_some_and(|e| {
                    e.status == Status::Alive
                        && e.info.generation == node.generation
                        && e.held_version()
                            == node
                                .mesh
                                .view()
                                .get(node.mesh.id())
                                .map_or(0, |s| s.held_version())
                })
            })
    }

    /// Every live node sees exactly the live nodes (hash check first, then one full check).
    pub fn converged(&self) -> bool {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].up)
            .collect();
        let Some(first) = up.first() else { return true };
        let hash = self.nodes[*first].mesh.view_hash();
        up.iter().all(|i| self.nodes[*i].mesh.view_hash() == hash) && self.sees_exactly(*first, &up)
    }

    /// Nodes of `group` see exactly the live nodes of `group`.
    pub fn converged_within(&self, members: &[usize]) -> bool {
        members
            .iter()
            .filter(|i| self.nodes[**i].up)
            .all(|i| self.sees_exactly(*i, members))
    }

    /// Every live node holds node `j`'s current generation as dead, departed or deleted.
    pub fn gone_everywhere(&self, j: usize) -> bool {
        let id = sim_id(j);
        let generation = self.nodes[j].generation;
        self.nodes.iter().filter(|n| n.up).all(|n| {
            n.mesh
                .view()
                .get(&id)
                .is_none_or(|e| e.info.generation != generation || e.status.is_tombstone())
        })
    }
}
