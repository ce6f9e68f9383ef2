//! This node's side of the swarm: the groups it joined, the rosters and
//! pools it carries, and the record it gossips about itself. Sans-IO: the
//! node's loop passes in the view and the wall clock.

use std::collections::BTreeMap;

use super::groups::{self, GroupState, Peer};
use super::pools;
use super::SwarmError;
use crate::mesh::Status;
use crate::proto::peer::{GroupMembership, NodeMeta, PoolRecord, Roster};

/// The most members a group may be created with.
pub const MAX_GROUP_SIZE: u32 = 1024;

/// This node's swarm state.
#[derive(Debug)]
pub struct Swarm {
    me: String,
    /// allow_remote, models, started_ms, tls: fixed for this run.
    base: NodeMeta,
    memberships: BTreeMap<String, GroupMembership>,
    rosters: BTreeMap<String, Roster>,
    pools: BTreeMap<String, PoolRecord>,
    /// How long an incumbent must stay gone before this node replaces it.
    takeover_delay_ms: u64,
    /// Takeovers waiting out that delay: the roster they would replace
    /// (epoch, leader) and when this node first wanted to.
    pending: BTreeMap<String, (u64, String, u64)>,
    /// Groups this node withdrew from, with why, not yet reported.
    withdrawn: Vec<(String, String)>,
    /// The memberships and pools last handed out to be saved.
    saved: Option<NodeMeta>,
}

impl Swarm {
    pub fn new(me: &str, base: NodeMeta) -> Swarm {
        Swarm {
            me: me.to_string(),
            base,
            memberships: BTreeMap::new(),
            rosters: BTreeMap::new(),
            pools: BTreeMap::new(),
            takeover_delay_ms: 0,
            pending: BTreeMap::new(),
            withdrawn: Vec::new(),
            saved: None,
        }
    }

    /// Takes back the memberships and pools a previous run saved. A member
    /// keeps its join time, so it keeps its place among the oldest.
    pub fn restore(&mut self, saved: NodeMeta) {
        for g in saved.groups {
            self.memberships.insert(g.group.clone(), g);
        }
        for p in &saved.pools {
            pools::merge(&mut self.pools, p);
        }
        self.saved = Some(self.durable());
    }

    /// What outlives a restart: memberships and pools.
    fn durable(&self) -> NodeMeta {
        NodeMeta {
            groups: self.memberships.values().cloned().collect(),
            pools: self.pools.values().cloned().collect(),
            ..NodeMeta::default()
        }
    }

    /// The memberships and pools to save, when they changed since the
    /// last call.
    pub fn take_unsaved(&mut self) -> Option<NodeMeta> {
        let now = self.durable();
        if self.saved.as_ref() == Some(&now) {
            return None;
        }
        self.saved = Some(now.clone());
        Some(now)
    }

    /// Waits `ms` (and one more step) before replacing a leader that looks
    /// gone. After a partition heals, the cut-off side's death reports can
    /// reach the majority a moment before the leader's refutation does; a
    /// gossip interval of patience keeps that from moving leadership.
    pub fn with_takeover_delay(mut self, ms: u64) -> Swarm {
        self.takeover_delay_ms = ms;
        self
    }

    /// Groups this node withdrew from since the last call, with why.
    pub fn take_withdrawn(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.withdrawn)
    }

    pub fn id(&self) -> &str {
        &self.me
    }

    pub fn models(&self) -> &[String] {
        &self.base.models
    }

    /// The record this node gossips about itself now. It carries only the
    /// rosters this node wrote as leader: members keep the newest roster
    /// they saw in memory (so it outlives its leader, and a minority still
    /// counts against it) without re-gossiping it, which would make every
    /// join cost a set change on every member.
    pub fn meta(&self) -> NodeMeta {
        NodeMeta {
            groups: self.memberships.values().cloned().collect(),
            rosters: self
                .rosters
                .values()
                .filter(|r| r.leader == self.me)
                .cloned()
                .collect(),
            pools: self.pools.values().cloned().collect(),
            ..self.base.clone()
        }
    }

    /// One step: adopt newer rosters and pools from `peers` (every other
    /// member), take office or update the roster where this node leads,
    /// and return the record to gossip.
    pub fn step(&mut self, peers: &[Peer<'_>], now_ms: u64) -> NodeMeta {
        for p in peers.iter().filter_map(|p| p.meta) {
            for r in &p.pools {
                pools::merge(&mut self.pools, r);
            }
        }
        pools::prune(&mut self.pools, now_ms);
        let names: Vec<String> = self.memberships.keys().cloned().collect();
        self.rosters.retain(|g, _| self.memberships.contains_key(g));
        self.pending.retain(|g, _| self.memberships.contains_key(g));
        for g in names {
            let own = self.meta();
            let all = with_me(peers, &self.me, &own);
            let best = groups::best_roster(&g, &all, self.rosters.get(&g)).cloned();
            if let Some(r) = &best {
                self.rosters.insert(g.clone(), r.clone());
            }
            let (state, write) = groups::derive(&g, &self.me, &all, best.as_ref(), now_ms);
            if state.over.contains(&self.me) {
                self.withdraw(&g, &state);
                continue;
            }
            let Some(write) = write else {
                self.pending.remove(&g);
                continue;
            };
            if let Some(r) = best.as_ref().filter(|r| r.leader != self.me) {
                let wanted = (r.epoch, r.leader.clone());
                let since = match self.pending.get(&g) {
                    Some((e, l, since)) if (*e, l) == (wanted.0, &wanted.1) => *since,
                    _ => {
                        self.pending.insert(g.clone(), (wanted.0, wanted.1, now_ms));
                        continue;
                    }
                };
                if now_ms.saturating_sub(since) < self.takeover_delay_ms {
                    continue;
                }
            }
            self.pending.remove(&g);
            self.rosters.insert(g.clone(), write);
        }
        self.meta()
    }

    /// Leaves `g`, whose size this node's join pushed over the maximum in a
    /// race with another join that ranks first.
    fn withdraw(&mut self, g: &str, state: &GroupState) {
        self.memberships.remove(g);
        self.rosters.remove(g);
        self.pending.remove(g);
        self.withdrawn.push((
            g.to_string(),
            format!(
                "group {g:?} is full: {} members joined for {} places, and this node's join came later",
                state.members.len(),
                state.max_members
            ),
        ));
    }

    /// Whether this node waits to replace `group`'s leader (see
    /// [`Swarm::with_takeover_delay`]).
    fn taking_office(&self, group: &str) -> bool {
        self.pending.contains_key(group)
    }

    /// Every group some live member belongs to, as this node sees it.
    pub fn groups(&self, peers: &[Peer<'_>], now_ms: u64) -> Vec<GroupState> {
        let own = self.meta();
        let all = with_me(peers, &self.me, &own);
        let mut names: Vec<&str> = all
            .iter()
            .filter(|p| !p.status.is_tombstone())
            .filter_map(|p| p.meta)
            .flat_map(|m| m.groups.iter().map(|g| g.group.as_str()))
            .collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|g| {
                let best = groups::best_roster(g, &all, self.rosters.get(g));
                let mut state = groups::derive(g, &self.me, &all, best, now_ms).0;
                if self.taking_office(g) && state.leader.as_deref() == Some(self.me.as_str()) {
                    // Not in office until the roster is written.
                    state.leader = None;
                    state.reason = format!("{} is taking office", self.me);
                    (state.term, state.epoch) = best.map_or((0, 0), |r| (r.term, r.epoch));
                    state.since_ms = 0;
                }
                state
            })
            .collect()
    }

    /// Creates `name` with this node as its first member.
    pub fn create_group(
        &mut self,
        name: &str,
        max_members: u32,
        peers: &[Peer<'_>],
        now_ms: u64,
    ) -> Result<(), SwarmError> {
        super::check_name("name", name)?;
        if !(1..=MAX_GROUP_SIZE).contains(&max_members) {
            return Err(SwarmError::invalid(
                "max_members",
                format!("must be between 1 and {MAX_GROUP_SIZE}"),
            ));
        }
        if let Some(g) = self
            .groups(peers, now_ms)
            .into_iter()
            .find(|g| g.name == name)
        {
            return Err(SwarmError::AlreadyExists(format!(
                "group {name:?} already exists with {} member(s); join it instead",
                g.members.len()
            )));
        }
        self.memberships.insert(
            name.to_string(),
            GroupMembership {
                group: name.to_string(),
                max_members,
                joined_ms: now_ms,
            },
        );
        Ok(())
    }

    /// Joins an existing group, refused when it is full.
    pub fn join_group(
        &mut self,
        name: &str,
        peers: &[Peer<'_>],
        now_ms: u64,
    ) -> Result<GroupState, SwarmError> {
        super::check_name("group", name)?;
        let Some(g) = self
            .groups(peers, now_ms)
            .into_iter()
            .find(|g| g.name == name)
        else {
            return Err(SwarmError::NotFound(format!(
                "no live member belongs to a group {name:?}; create it, or list groups to check the name"
            )));
        };
        if self.memberships.contains_key(name) {
            return Ok(g);
        }
        if g.members.len() >= g.max_members as usize {
            return Err(SwarmError::Full(format!(
                "group {name:?} is full: {} of {} members",
                g.members.len(),
                g.max_members
            )));
        }
        self.memberships.insert(
            name.to_string(),
            GroupMembership {
                group: name.to_string(),
                max_members: g.max_members,
                joined_ms: now_ms,
            },
        );
        Ok(g)
    }

    /// Leaves a group this node is in.
    pub fn leave_group(&mut self, name: &str) -> Result<(), SwarmError> {
        if self.memberships.remove(name).is_none() {
            return Err(SwarmError::NotFound(format!(
                "this node is not a member of group {name:?}"
            )));
        }
        self.rosters.remove(name);
        Ok(())
    }

    /// The newest roster of `group` this node has seen.
    pub fn roster(&self, group: &str) -> Option<&Roster> {
        self.rosters.get(group)
    }

    /// Holds `r` as the newest roster seen of its group, as if it had
    /// been written here or heard of.
    #[cfg(test)]
    pub(crate) fn hold_roster(&mut self, r: Roster) {
        self.rosters.insert(r.group.clone(), r);
    }

    pub fn is_member(&self, group: &str) -> bool {
        self.memberships.contains_key(group)
    }

    /// Creates, changes or deletes a pool (a newer record for its name).
    pub fn put_pool(&mut self, record: PoolRecord) {
        pools::merge(&mut self.pools, &record);
    }

    pub fn pool(&self, name: &str) -> Option<&PoolRecord> {
        self.pools.get(name).filter(|p| !p.deleted)
    }

    /// Every pool not deleted.
    pub fn pools(&self) -> Vec<PoolRecord> {
        self.pools
            .values()
            .filter(|p| !p.deleted)
            .cloned()
            .collect()
    }

    /// Changes whenever a pool record does (placement labels candidates by pool).
    pub fn pools_stamp(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in self.pools.values() {
            (&p.name, p.updated_ms, &p.writer, p.deleted).hash(&mut h);
        }
        h.finish()
    }

    /// Every pool record held, deleted ones included (what is gossiped).
    pub fn pool_records(&self) -> impl Iterator<Item = &PoolRecord> {
        self.pools.values()
    }
}

/// `peers` with this node's current record added (it is always alive to itself).
fn with_me<'a>(peers: &[Peer<'a>], me: &'a str, own: &'a NodeMeta) -> Vec<Peer<'a>> {
    peers
        .iter()
        .filter(|p| p.id != me)
        .copied()
        .chain([Peer {
            id: me,
            status: Status::Alive,
            meta: Some(own),
        }])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_join_full_and_leave() {
        let mut a = Swarm::new("a", NodeMeta::default());
        let mut b = Swarm::new("b", NodeMeta::default());
        let mut c = Swarm::new("c", NodeMeta::default());
        a.create_group("lab", 2, &[], 10).unwrap();
        let ma = a.step(&[], 10);
        assert_eq!(ma.rosters[0].leader, "a");
        let pa = Peer {
            id: "a",
            status: Status::Alive,
            meta: Some(&ma),
        };
        assert!(matches!(
            b.create_group("lab", 2, &[pa], 11),
            Err(SwarmError::AlreadyExists(_))
        ));
        b.join_group("lab", &[pa], 12).unwrap();
        let mb = b.step(&[pa], 12);
        let pb = Peer {
            id: "b",
            status: Status::Alive,
            meta: Some(&mb),
        };
        let err = c.join_group("lab", &[pa, pb], 13).unwrap_err();
        assert_eq!(err.to_string(), "group \"lab\" is full: 2 of 2 members");
        assert!(matches!(
            c.join_group("nope", &[pa, pb], 13),
            Err(SwarmError::NotFound(_))
        ));
        // a, the leader, counts b in its roster.
        let ma = a.step(&[pb], 14);
        assert_eq!(ma.rosters[0].members, ["a", "b"]);
        assert_eq!(ma.rosters[0].term, 1);
        b.leave_group("lab").unwrap();
        assert!(matches!(b.leave_group("lab"), Err(SwarmError::NotFound(_))));
    }

    #[test]
    fn pools_spread_to_every_node_and_survive_their_creator() {
        let mut a = Swarm::new("a", NodeMeta::default());
        let mut b = Swarm::new("b", NodeMeta::default());
        a.put_pool(PoolRecord {
            name: "gpus".into(),
            updated_ms: 5,
            writer: "a".into(),
            ..Default::default()
        });
        let ma = a.step(&[], 5);
        let mb = b.step(
            &[Peer {
                id: "a",
                status: Status::Alive,
                meta: Some(&ma),
            }],
            6,
        );
        drop(a);
        assert_eq!(mb.pools.len(), 1);
        let mb = b.step(
            &[Peer {
                id: "a",
                status: Status::Dead,
                meta: None,
            }],
            7,
        );
        assert_eq!(mb.pools[0].name, "gpus");
    }
}
