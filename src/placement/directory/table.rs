//! The directory entries one node holds for others, sans-IO: where each
//! deployment whose id the ring maps here lives, as its home and its owner
//! registered it. An entry not refreshed within [`ENTRY_TTL_MS`] is dropped,
//! so what a vanished registrant left behind does not linger.

use std::collections::HashMap;

/// A node as an entry names it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeRef {
    pub id: String,
    pub addr: String,
}

/// Where one deployment lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub deployment_id: String,
    pub request_id: String,
    /// The node that placed it and keeps its record.
    pub home: Option<NodeRef>,
    /// The node whose provider runs it (None while queued).
    pub owner: Option<NodeRef>,
    pub provider_id: String,
    pub provider_name: String,
    pub provider_kind: String,
}

/// Who registered an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Registrant {
    Home,
    Owner,
}

impl Registrant {
    pub fn as_str(self) -> &'static str {
        match self {
            Registrant::Home => "home",
            Registrant::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Registrant {
        if s == "owner" {
            Registrant::Owner
        } else {
            Registrant::Home
        }
    }
}

/// How long an entry lives without a refresh; registrants refresh every
/// [`REFRESH_MS`](super::registrar::REFRESH_MS), three times within it.
pub const ENTRY_TTL_MS: u64 = 16 * 60_000;

/// One registration: where, until when, and the node that made it.
type Slot = Option<(Location, u64, String)>;

#[derive(Debug, Clone, Default)]
struct Entry {
    home: Slot,
    owner: Slot,
}

impl Entry {
    /// The home's word first (it knows both ends), the owner's to fill in.
    fn merged(&self) -> Option<Location> {
        match (&self.home, &self.owner) {
            (Some((h, ..)), Some((o, ..))) => {
                let mut l = h.clone();
                if l.owner.is_none() {
                    l.owner = o.owner.clone();
                    l.provider_id = o.provider_id.clone();
                    l.provider_name = o.provider_name.clone();
                    l.provider_kind = o.provider_kind.clone();
                }
                Some(l)
            }
            (Some((h, ..)), None) => Some(h.clone()),
            (None, Some((o, ..))) => Some(o.clone()),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Table {
    entries: HashMap<String, Entry>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes in one registration by node `from` at `now`.
    pub fn register(&mut self, l: Location, by: Registrant, from: &str, now: u64) {
        let e = self.entries.entry(l.deployment_id.clone()).or_default();
        let slot = match by {
            Registrant::Home => &mut e.home,
            Registrant::Owner => &mut e.owner,
        };
        *slot = Some((l, now.saturating_add(ENTRY_TTL_MS), from.to_string()));
    }

    /// Node `from` no longer answers for `id`: its registrations go.
    pub fn forget(&mut self, id: &str, from: &str) {
        if let Some(e) = self.entries.get_mut(id) {
            for slot in [&mut e.home, &mut e.owner] {
                if slot.as_ref().is_some_and(|(.., by)| by == from) {
                    *slot = None;
                }
            }
            if e.home.is_none() && e.owner.is_none() {
                self.entries.remove(id);
            }
        }
    }

    /// Where `id` lives, if an unexpired registration says.
    pub fn get(&self, id: &str, now: u64) -> Option<Location> {
        let e = self.entries.get(id)?;
        let live = |s: &Slot| s.as_ref().filter(|(_, until, _)| *until > now).cloned();
        Entry {
            home: live(&e.home),
            owner: live(&e.owner),
        }
        .merged()
    }

    /// Drops what was not refreshed in time.
    pub fn expire(&mut self, now: u64) {
        self.entries.retain(|_, e| {
            for slot in [&mut e.home, &mut e.owner] {
                if slot.as_ref().is_some_and(|(_, until, _)| *until <= now) {
                    *slot = None;
                }
            }
            e.home.is_some() || e.owner.is_some()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> Option<NodeRef> {
        Some(NodeRef {
            id: id.into(),
            addr: format!("{id}:1"),
        })
    }

    #[test]
    fn the_home_and_the_owner_fill_one_entry_and_both_expire() {
        let mut t = Table::default();
        let from_owner = Location {
            deployment_id: "d".into(),
            owner: node("o"),
            provider_id: "o/docker".into(),
            ..Location::default()
        };
        t.register(from_owner.clone(), Registrant::Owner, "o", 0);
        assert_eq!(t.get("d", 1), Some(from_owner.clone()));
        // The home, still queueing it, knows no owner: the owner's fills in.
        let from_home = Location {
            deployment_id: "d".into(),
            request_id: "r".into(),
            home: node("h"),
            ..Location::default()
        };
        t.register(from_home, Registrant::Home, "h", 10);
        let l = t.get("d", 11).unwrap();
        assert_eq!((l.home, l.owner), (node("h"), node("o")));
        assert_eq!(l.request_id, "r");
        // The owner's registration lapses first; the home's stays.
        let l = t.get("d", ENTRY_TTL_MS + 5).unwrap();
        assert_eq!((l.home, l.owner), (node("h"), None));
        t.expire(ENTRY_TTL_MS + 20);
        assert!(t.is_empty());
        // Forgetting by both removes it.
        t.register(from_owner, Registrant::Owner, "o", 0);
        t.forget("d", "h");
        assert_eq!(t.len(), 1);
        t.forget("d", "o");
        assert!(t.get("d", 1).is_none());
    }
}
