//! Who leads a swarm group: a deterministic function of the membership
//! view and the group's roster, with keep-majority (see the design note in
//! `swarm/mod.rs`).

use std::collections::BTreeSet;

use crate::mesh::Status;
use crate::proto::peer::{NodeMeta, Roster};

/// One member of the mesh as the swarm logic sees it.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    pub id: &'a str,
    pub status: Status,
    /// What it says of itself; None before its set arrived, and for dead
    /// or departed members (their sets are dropped).
    pub meta: Option<&'a NodeMeta>,
}

impl Peer<'_> {
    /// Its membership of `group`, if it is a member.
    pub fn membership(&self, group: &str) -> Option<&crate::proto::peer::GroupMembership> {
        self.meta?.groups.iter().find(|g| g.group == group)
    }
}

/// One member of a group as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub id: String,
    pub status: Status,
    pub joined_ms: u64,
}

/// A group as this node sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub name: String,
    pub max_members: u32,
    /// Live members (alive or suspected), oldest first.
    pub members: Vec<MemberState>,
    /// The leader, when one holds office with a majority behind it.
    pub leader: Option<String>,
    pub term: u64,
    pub epoch: u64,
    /// Wall-clock milliseconds when the leader took office.
    pub since_ms: u64,
    /// Whether the reachable members are a majority of the roster.
    pub quorum: bool,
    /// Why there is no leader, or "" when there is one.
    pub reason: String,
    /// Members beyond the maximum, who withdraw (see [`admitted`]).
    pub over: Vec<String>,
}

/// Who of `members` (oldest first) fits in a group of `max` (0: no
/// limit): those on the roster first, then the others in join order. Two
/// joins racing on two nodes can both pass the size check; this decides,
/// the same way on every node, which of them stays.
pub fn admitted<'m>(
    members: &'m [MemberState],
    roster: Option<&Roster>,
    max: u32,
) -> BTreeSet<&'m str> {
    let on_roster = |id: &str| roster.is_some_and(|r| r.members.iter().any(|m| m == id));
    let mut order: Vec<&MemberState> = members.iter().collect();
    // Stable: join order is kept on each side.
    order.sort_by_key(|m| !on_roster(&m.id));
    let keep = if max == 0 { order.len() } else { max as usize };
    order
        .into_iter()
        .take(keep)
        .map(|m| m.id.as_str())
        .collect()
}

/// The higher of two rosters of one group: higher term, then epoch, then
/// leader id, so every node that has seen both picks the same one. Term
/// comes first: a leader cut off with a minority may have written epochs
/// the majority never saw before electing its successor, and that
/// successor's roster must still win after the heal.
pub fn newer<'a>(a: Option<&'a Roster>, b: Option<&'a Roster>) -> Option<&'a Roster> {
    let rank = |r: &'a Roster| (r.term, r.epoch, &r.leader);
    match (a, b) {
        (Some(x), Some(y)) => Some(if rank(y) > rank(x) { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The newest roster of `group` among the peers' records and `own`.
pub fn best_roster<'a>(
    group: &str,
    peers: &[Peer<'a>],
    own: Option<&'a Roster>,
) -> Option<&'a Roster> {
    peers
        .iter()
        .filter_map(|p| p.meta)
        .flat_map(|m| m.rosters.iter().filter(|r| r.group == group))
        .fold(own, |best, r| newer(best, Some(r)))
}

/// Derives `group`'s state from `me`'s view, and the roster `me` must
/// write when it takes office or, as leader, sees the membership change.
///
/// - Members are the live peers whose record lists the group.
/// - Quorum: the roster's members (minus those known to have left: a
///   goodbye, or alive without the membership) and the live members who
///   joined since must be reachable by more than half; on an exact half, the side holding the
///   lowest id keeps it (Akka's keep-majority). Suspected members count as
///   reachable until declared dead. A group with no roster yet (just
///   created) has quorum.
/// - The incumbent (the roster's leader) keeps office while it is a live
///   member; otherwise the oldest alive member (joined first, then lowest
///   id) takes it, but only once no member is suspected (a converged view).
pub fn derive(
    group: &str,
    me: &str,
    peers: &[Peer<'_>],
    roster: Option<&Roster>,
    now_ms: u64,
) -> (GroupState, Option<Roster>) {
    let mut members: Vec<MemberState> = peers
        .iter()
        .filter(|p| !p.status.is_tombstone())
        .filter_map(|p| {
            p.membership(group).map(|m| MemberState {
                id: p.id.to_string(),
                status: p.status,
                joined_ms: m.joined_ms,
            })
        })
        .collect();
    members.sort_by(|a, b| (a.joined_ms, &a.id).cmp(&(b.joined_ms, &b.id)));
    let max_members = peers
        .iter()
        .filter_map(|p| {
            p.membership(group)
                .map(|m| (m.joined_ms, p.id, m.max_members))
        })
        .min()
        .map_or(0, |(_, _, max)| max);
    let fits = admitted(&members, roster, max_members);
    let over: Vec<String> = members
        .iter()
        .filter(|m| !fits.contains(m.id.as_str()))
        .map(|m| m.id.clone())
        .collect();
    let alive: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.status == Status::Alive && fits.contains(m.id.as_str()))
        .map(|m| m.id.as_str())
        .collect();
    let converged = members.iter().all(|m| m.status == Status::Alive);
    let mut state = GroupState {
        name: group.to_string(),
        max_members,
        members: members.clone(),
        leader: None,
        term: roster.map_or(0, |r| r.term),
        epoch: roster.map_or(0, |r| r.epoch),
        since_ms: 0,
        quorum: true,
        reason: String::new(),
        over,
    };
    if let Some(r) = roster {
        let left = |id: &str| {
            peers.iter().any(|p| {
                p.id == id
                    && (p.status == Status::Left
                        || (!p.status.is_tombstone()
                            && p.meta.is_some()
                            && p.membership(group).is_none()))
            })
        };
        // Members who joined since the roster was written count too: a
        // leader that dies before writing them in must not strand them.
        let counted: BTreeSet<&str> = r
            .members
            .iter()
            .map(String::as_str)
            .filter(|id| !left(id))
            .chain(
                members
                    .iter()
                    .map(|m| m.id.as_str())
                    .filter(|id| fits.contains(id)),
            )
            .collect();
        // A suspected member still counts until it is declared dead, as a
        // suspected incumbent keeps office: a passing suspicion (a slow
        // round on a loaded host) must not cost the group its leader.
        let reachable: BTreeSet<&str> = members
            .iter()
            .map(|m| m.id.as_str())
            .filter(|id| fits.contains(id))
            .collect();
        let present = counted.iter().filter(|id| reachable.contains(*id)).count();
        let lowest_present = counted
            .iter()
            .min()
            .is_some_and(|id| reachable.contains(id));
        state.quorum = counted.is_empty()
            || 2 * present > counted.len()
            || (2 * present == counted.len() && lowest_present);
        if !state.quorum {
            state.reason = format!(
                "no majority: {present} of the roster's {} members reachable",
                counted.len()
            );
            return (state, None);
        }
    }
    // A suspected incumbent keeps office until it is declared dead.
    let incumbent = roster
        .map(|r| r.leader.as_str())
        .filter(|l| members.iter().any(|m| m.id == *l));
    let alive_ids: Vec<String> = {
        let mut ids: Vec<String> = alive.iter().map(|s| s.to_string()).collect();
        ids.sort();
        ids
    };
    match incumbent {
        Some(leader) => {
            let r = roster.expect("an incumbent comes from a roster");
            state.leader = Some(leader.to_string());
            state.since_ms = r.since_ms;
            // The leader keeps the roster equal to the converged membership.
            if leader == me && converged && r.members != alive_ids {
                let next = Roster {
                    epoch: r.epoch + 1,
                    members: alive_ids,
                    ..r.clone()
                };
                state.epoch = next.epoch;
                return (state, Some(next));
            }
            (state, None)
        }
        None => {
            let Some(oldest) = members.iter().find(|m| alive.contains(m.id.as_str())) else {
                state.reason = "no member is reachable".into();
                return (state, None);
            };
            if oldest.id != me || !converged {
                state.reason = if converged {
                    format!("{} is taking office", oldest.id)
                } else {
                    "waiting for suspected members to be confirmed or refuted".into()
                };
                return (state, None);
            }
            let next = Roster {
                group: group.to_string(),
                epoch: roster.map_or(1, |r| r.epoch + 1),
                term: roster.map_or(1, |r| r.term + 1),
                leader: me.to_string(),
                members: alive_ids,
                since_ms: now_ms,
            };
            state.leader = Some(me.to_string());
            state.term = next.term;
            state.epoch = next.epoch;
            state.since_ms = now_ms;
            (state, Some(next))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::peer::GroupMembership;

    fn meta(groups: &[(&str, u64)], rosters: Vec<Roster>) -> NodeMeta {
        NodeMeta {
            groups: groups
                .iter()
                .map(|(g, joined)| GroupMembership {
                    group: g.to_string(),
                    max_members: 5,
                    joined_ms: *joined,
                })
                .collect(),
            rosters,
            ..Default::default()
        }
    }

    fn roster(epoch: u64, leader: &str, members: &[&str]) -> Roster {
        Roster {
            group: "g".into(),
            epoch,
            term: epoch,
            leader: leader.into(),
            members: members.iter().map(|s| s.to_string()).collect(),
            since_ms: 1,
        }
    }

    #[test]
    fn a_new_group_is_led_by_its_oldest_member() {
        let (a, b) = (meta(&[("g", 10)], vec![]), meta(&[("g", 20)], vec![]));
        let peers = [
            Peer {
                id: "b",
                status: Status::Alive,
                meta: Some(&b),
            },
            Peer {
                id: "a",
                status: Status::Alive,
                meta: Some(&a),
            },
        ];
        let (state, write) = derive("g", "a", &peers, None, 99);
        assert_eq!(state.leader.as_deref(), Some("a"));
        let write = write.expect("the oldest takes office");
        assert_eq!((write.epoch, write.term, write.since_ms), (1, 1, 99));
        assert_eq!(write.members, ["a", "b"]);
        // b waits for a's roster and writes nothing.
        let (state, write) = derive("g", "b", &peers, None, 99);
        assert_eq!(state.leader, None);
        assert!(write.is_none());
        assert!(
            state.reason.contains("a is taking office"),
            "{}",
            state.reason
        );
    }

    #[test]
    fn the_incumbent_keeps_office_and_the_next_oldest_replaces_it_when_dead() {
        let r = roster(1, "a", &["a", "b", "c"]);
        let (b, c) = (
            meta(&[("g", 20)], vec![r.clone()]),
            meta(&[("g", 30)], vec![r.clone()]),
        );
        let mut peers = vec![
            Peer {
                id: "a",
                status: Status::Dead,
                meta: None,
            },
            Peer {
                id: "b",
                status: Status::Alive,
                meta: Some(&b),
            },
            Peer {
                id: "c",
                status: Status::Alive,
                meta: Some(&c),
            },
        ];
        let (state, write) = derive("g", "b", &peers, Some(&r), 50);
        assert_eq!(state.leader.as_deref(), Some("b"));
        let w = write.unwrap();
        assert_eq!((w.epoch, w.term, w.leader.as_str()), (2, 2, "b"));
        assert_eq!(w.members, ["b", "c"]);
        // While a is only suspected nobody takes office.
        peers[0].status = Status::Suspect;
        peers[0].meta = Some(&b);
        let (state, write) = derive("g", "b", &peers, Some(&r), 50);
        assert!(write.is_none());
        assert_eq!(state.leader.as_deref(), Some("a"));
    }

    #[test]
    fn a_minority_side_has_no_leader_and_an_even_split_keeps_the_lowest_id() {
        let r = roster(3, "a", &["a", "b", "c", "d", "e"]);
        let m = meta(&[("g", 1)], vec![r.clone()]);
        let side = |alive: &[&'static str]| -> Vec<Peer<'_>> {
            ["a", "b", "c", "d", "e"]
                .into_iter()
                .map(|id| Peer {
                    id,
                    status: if alive.contains(&id) {
                        Status::Alive
                    } else {
                        Status::Dead
                    },
                    meta: alive.contains(&id).then_some(&m),
                })
                .collect()
        };
        let (minority, write) = derive("g", "a", &side(&["a", "b"]), Some(&r), 9);
        assert!(!minority.quorum && minority.leader.is_none() && write.is_none());
        assert!(
            minority.reason.contains("2 of the roster's 5"),
            "{}",
            minority.reason
        );
        let (majority, write) = derive("g", "c", &side(&["c", "d", "e"]), Some(&r), 9);
        assert!(majority.quorum);
        assert_eq!(majority.leader.as_deref(), Some("c"));
        assert_eq!(write.unwrap().members, ["c", "d", "e"]);

        let r4 = roster(3, "a", &["a", "b", "c", "d"]);
        let half = |alive: &[&'static str]| -> Vec<Peer<'_>> {
            ["a", "b", "c", "d"]
                .into_iter()
                .map(|id| Peer {
                    id,
                    status: if alive.contains(&id) {
                        Status::Alive
                    } else {
                        Status::Dead
                    },
                    meta: alive.contains(&id).then_some(&m),
                })
                .collect()
        };
        assert!(derive("g", "a", &half(&["a", "b"]), Some(&r4), 9).0.quorum);
        assert!(!derive("g", "c", &half(&["c", "d"]), Some(&r4), 9).0.quorum);
    }

    #[test]
    fn a_suspicion_alone_costs_no_quorum() {
        let r = roster(3, "a", &["a", "b", "c", "d", "e"]);
        let m = meta(&[("g", 1)], vec![r.clone()]);
        let with = |suspect: Status| -> Vec<Peer<'_>> {
            ["a", "b", "c", "d", "e"]
                .into_iter()
                .map(|id| {
                    let status = if ["a", "b"].contains(&id) {
                        Status::Alive
                    } else {
                        suspect
                    };
                    Peer {
                        id,
                        status,
                        meta: (!status.is_tombstone()).then_some(&m),
                    }
                })
                .collect()
        };
        let (state, write) = derive("g", "a", &with(Status::Suspect), Some(&r), 9);
        assert!(state.quorum, "{state:?}");
        assert_eq!(state.leader.as_deref(), Some("a"));
        assert!(
            write.is_none(),
            "no roster change while members are suspected"
        );
        // Declared dead, they no longer count.
        let (state, _) = derive("g", "a", &with(Status::Dead), Some(&r), 9);
        assert!(!state.quorum && state.leader.is_none(), "{state:?}");
    }

    #[test]
    fn members_who_left_do_not_count_against_the_majority() {
        let r = roster(1, "a", &["a", "b"]);
        let b = meta(&[("g", 2)], vec![r.clone()]);
        let gone = meta(&[], vec![]);
        let peers = [
            Peer {
                id: "a",
                status: Status::Alive,
                meta: Some(&gone),
            },
            Peer {
                id: "b",
                status: Status::Alive,
                meta: Some(&b),
            },
        ];
        let (state, write) = derive("g", "b", &peers, Some(&r), 7);
        assert!(state.quorum);
        assert_eq!(state.leader.as_deref(), Some("b"));
        assert_eq!(write.unwrap().members, ["b"]);
    }

    #[test]
    fn the_newer_roster_wins_everywhere() {
        let (x, y) = (roster(2, "a", &[]), roster(2, "b", &[]));
        assert_eq!(newer(Some(&x), Some(&y)).unwrap().leader, "b");
        assert_eq!(newer(Some(&y), Some(&x)).unwrap().leader, "b");
        let z = roster(3, "a", &[]);
        assert_eq!(newer(Some(&y), Some(&z)).unwrap().epoch, 3);
        // A later term wins over more epochs written in an earlier one.
        let stale = Roster {
            term: 1,
            ..roster(9, "a", &[])
        };
        let successor = roster(2, "b", &[]);
        assert_eq!(newer(Some(&stale), Some(&successor)).unwrap().leader, "b");
        assert_eq!(newer(Some(&successor), Some(&stale)).unwrap().leader, "b");
    }
}
