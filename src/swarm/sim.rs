//! The swarm logic over the gossip simulator: each simulated core gets a
//! [`Swarm`] stepped once a round with the simulator's clock, so groups,
//! leaders, partitions and pools run deterministically in one process.

use super::{peers_of, GroupState, Swarm};
use crate::mesh::sim::{sim_id, Sim, SimConfig};
use crate::proto::peer::NodeMeta;

pub struct SwarmSim {
    pub sim: Sim,
    pub swarms: Vec<Swarm>,
}

impl SwarmSim {
    pub fn new(cfg: SimConfig) -> SwarmSim {
        let delay = cfg.mesh.gossip_interval;
        let swarms = (0..cfg.nodes)
            .map(|i| Swarm::new(&sim_id(i), NodeMeta::default()).with_takeover_delay(delay))
            .collect();
        SwarmSim {
            sim: Sim::new(cfg),
            swarms,
        }
    }

    /// One gossip round, then one swarm step on every live core.
    pub fn step(&mut self) {
        self.sim.step();
        for i in 0..self.swarms.len() {
            self.publish(i);
        }
    }

    /// Steps core `i`'s swarm and publishes its record.
    pub fn publish(&mut self, i: usize) {
        if !self.sim.is_up(i) {
            return;
        }
        let now = self.sim.now();
        let meta = {
            let peers = peers_of(self.sim.core(i));
            self.swarms[i].step(&peers, now)
        };
        self.sim.core_mut(i).set_meta(meta);
    }

    /// Core `i` joins `group` as it sees it now, and publishes at once.
    pub fn join(&mut self, i: usize, group: &str) -> Result<GroupState, super::SwarmError> {
        let now = self.sim.now();
        let joined = {
            let peers = peers_of(self.sim.core(i));
            self.swarms[i].join_group(group, &peers, now)
        };
        self.publish(i);
        joined
    }

    /// Runs rounds until `done` holds or `max` pass; the rounds taken.
    pub fn run_until(&mut self, max: u64, mut done: impl FnMut(&SwarmSim) -> bool) -> Option<u64> {
        for r in 0..=max {
            if done(self) {
                return Some(r);
            }
            self.step();
        }
        None
    }

    /// `group` as core `i` sees it.
    pub fn group(&self, i: usize, group: &str) -> Option<GroupState> {
        let peers = peers_of(self.sim.core(i));
        self.swarms[i]
            .groups(&peers, self.sim.now())
            .into_iter()
            .find(|g| g.name == group)
    }

    /// The leader core `i` sees for `group`.
    pub fn leader(&self, i: usize, group: &str) -> Option<String> {
        self.group(i, group).and_then(|g| g.leader)
    }
}
