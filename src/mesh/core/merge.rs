//! Merging records from the network into the view: direct evidence,
//! refutation, precedence, provider sets, and what a peer lacks.

use prost::Message;
use tracing::{debug, info};

use super::*;

impl Mesh {
    // ----- merging -------------------------------------------------------

    /// The sender's own record: direct evidence it is alive. Returns a hint
    /// when we hold it suspected, dead or forgotten at its incarnation or above.
    pub(super) fn observe_sender(&mut self, now: Millis, sender: Member) -> Option<MemberDigest> {
        let id = sender.id.clone();
        let generation = sender.generation;
        let inc = sender.incarnation;
        let _ = self.apply_member(now, sender, true);
        if let Some((g, i, _)) = self.forgotten.get(id.as_str()) {
            if *g == generation && *i >= inc {
                return Some(MemberDigest {
                    id,
                    generation,
                    incarnation: *i,
                    status: Status::Dead.to_proto(),
                    ..Default::default()
                });
            }
        }
        let e = self.view.get(&id)?;
        (e.info.generation == generation
            && matches!(e.status, Status::Suspect | Status::Dead)
            && e.incarnation >= inc)
            .then(|| e.digest())
    }

    /// Another node holds us suspected or dead: outdate that with a higher incarnation.
    pub(super) fn refute(&mut self, hint: &MemberDigest) {
        let Some(status) = Status::from_proto(hint.status) else {
            return;
        };
        if hint.id != *self.me.id
            || hint.generation != self.me.generation
            || !matches!(status, Status::Suspect | Status::Dead)
            || hint.incarnation < self.incarnation
            || self.status == Status::Left
        {
            return;
        }
        self.incarnation = hint.incarnation + 1;
        debug!(incarnation = self.incarnation, "refuting suspicion");
        self.sync_self();
    }

    pub(super) fn refute_from_digest(&mut self, entries: &[MemberDigest]) {
        if let Some(d) = entries.iter().find(|d| d.id == *self.me.id) {
            let d = d.clone();
            self.refute(&d);
        }
    }

    /// Merges one member record; `direct` when it came from the member itself.
    pub fn apply_member(&mut self, now: Millis, m: Member, direct: bool) -> Result<bool, Rejected> {
        let Some(stamp) = Stamp::of_member(&m) else {
            return Err(Rejected::Malformed);
        };
        if m.id.is_empty() || m.addr.is_empty() {
            return Err(Rejected::Malformed);
        }
        if m.id == *self.me.id {
            if m.generation == self.me.generation {
                self.refute(&MemberDigest {
                    id: m.id,
                    generation: m.generation,
                    incarnation: m.incarnation,
                    status: m.status,
                    ..Default::default()
                });
            }
            return Ok(false);
        }
        if let Some((g, i, _)) = self.forgotten.get(m.id.as_str()) {
            let refuted = m.generation == *g && stamp.status == Status::Alive && m.incarnation > *i;
            if m.generation < *g || (m.generation == *g && !refuted) {
                return Err(Rejected::Forgotten);
            }
            self.forgotten.remove(m.id.as_str());
        }
        let k = self.cfg.suspicion_confirmations as usize + 1;
        let Some(old) = self.view.get(&m.id) else {
            let info = self.interner.info(&m.id, m.name, m.addr, m.generation);
            let rec = self.interner.record(Record {
                info,
                incarnation: m.incarnation,
                status: stamp.status,
                provider_version: m.provider_version,
                providers: None,
                suspected_by: interned_ids(&self.interner, &m.suspected_by, k),
            });
            info!(member = %m.id, status = stamp.status.as_str(), "member discovered");
            self.view
                .put(Entry::new(rec, if direct { now } else { NEVER }), now);
            return Ok(true);
        };
        let old_stamp = old.stamp();
        if stamp.supersedes(&old_stamp) {
            let info = if old.info.generation == m.generation {
                old.info.clone()
            } else {
                self.interner.info(&m.id, m.name, m.addr, m.generation)
            };
            let same_gen = old.info.generation == m.generation;
            let status_changed = old.status != stamp.status || !same_gen;
            if status_changed {
                info!(member = %m.id, from = old.status.as_str(), to = stamp.status.as_str(), "member state changed");
            }
            let suspected_by = if stamp.status == Status::Suspect
                && old.status == Status::Suspect
                && old.incarnation == m.incarnation
                && same_gen
            {
                union_ids(&old.suspected_by, &self.interner, &m.suspected_by, k)
            } else {
                interned_ids(&self.interner, &m.suspected_by, k)
            };
            let rec = self.interner.record(Record {
                info,
                incarnation: m.incarnation,
                status: stamp.status,
                provider_version: if same_gen {
                    old.provider_version.max(m.provider_version)
                } else {
                    m.provider_version
                },
                providers: if same_gen {
                    old.providers.clone()
                } else {
                    None
                },
                suspected_by,
            });
            let since = if status_changed || old.incarnation != m.incarnation {
                now
            } else {
                self.view.since(old)
            };
            let last_heard = if direct { now } else { old.last_heard };
            self.view.put(Entry::new(rec, last_heard), since);
            return Ok(true);
        }
        // Not newer. Still: confirmations to merge, and direct contact to note.
        let merge = stamp.status == Status::Suspect
            && old_stamp
                == Stamp {
                    confirmations: old_stamp.confirmations,
                    ..stamp
                }
            && m.suspected_by
                .iter()
                .any(|s| !old.suspected_by.iter().any(|o| **o == **s));
        let old_generation = old.info.generation;
        let number = old.info.number;
        if merge {
            let merged = union_ids(&old.suspected_by, &self.interner, &m.suspected_by, k);
            self.restamp_at(number, |r, _| r.suspected_by = merged);
        }
        if direct && old_generation == m.generation {
            self.view.update_at(number, |e, _| e.last_heard = now);
        }
        if merge {
            Ok(true)
        } else {
            Err(Rejected::Stale)
        }
    }

    pub(super) fn apply_provider_set(&mut self, set: ProviderSet) {
        if set.owner_id == *self.me.id {
            return;
        }
        let Some(e) = self.view.get(&set.owner_id) else {
            return;
        };
        if e.status.is_tombstone()
            || e.info.generation != set.owner_generation
            || set.version <= e.held_version()
            || set.providers.iter().any(|p| p.owner_id != set.owner_id)
        {
            return;
        }
        let number = e.info.number;
        let set = self.interner.set(number, set);
        let version = set.version;
        self.restamp_at(number, |r, _| {
            r.providers = Some(set);
            r.provider_version = r.provider_version.max(version);
        });
    }

    /// Member records the peer lacks in the given buckets, most out of date
    /// first (unknown members, then by how far behind), capped to one message.
    pub(super) fn missing_for(
        &self,
        theirs: &[MemberDigest],
        k: u32,
        mask: &[bool],
    ) -> Vec<Member> {
        let mut map = FastMap::with_capacity_and_hasher(theirs.len(), Default::default());
        map.extend(
            theirs
                .iter()
                .filter_map(|d| Some((d.id.as_str(), Stamp::of_digest(d)?))),
        );
        let theirs: FastMap<&str, Stamp> = map;
        let mut candidates: Vec<(u64, &Entry)> = self
            .view
            .in_buckets(k, mask)
            .filter_map(|e| match theirs.get(&*e.info.id) {
                None => Some((u64::MAX, e)),
                Some(s) if e.stamp().supersedes(s) => {
                    let gap = if s.generation != e.info.generation {
                        u64::MAX - 1
                    } else {
                        e.incarnation.saturating_sub(s.incarnation) + 1
                    };
                    Some((gap, e))
                }
                Some(_) => None,
            })
            .collect();
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        let mut budget = self.cfg.max_message_bytes;
        let mut out = Vec::new();
        for (_, e) in candidates {
            let m = e.to_member();
            let len = m.encoded_len() + 2;
            if len > budget {
                break;
            }
            budget -= len;
            out.push(m);
        }
        out
    }
}
