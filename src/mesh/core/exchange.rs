//! The client side of an exchange (open, replies, failures) and the server side
//! (answering `ExchangePeers` and `ExchangeProviders`).

use crate::mesh::FastSet;

/// Bytes of reply budget per provider set asked for beyond the digest's:
/// a call asks for about as many as one capped reply holds.
const BYTES_PER_WANT: usize = 128;

use prost::Message;
use rand::seq::SliceRandom;
use rand::Rng;
use tracing::debug;

use super::*;

impl Mesh {
    // ----- client side of an exchange ------------------------------------

    /// Starts an exchange with `target`: the first call to make.
    pub fn open(&mut self, target: Target) -> (Exchange, Call) {
        let ex = Exchange {
            target,
            phase: Phase::Opening,
            attempts: 1,
        };
        (ex, Call::Peers(self.opening_request()))
    }

    pub(super) fn opening_request(&self) -> ExchangeRequest {
        ExchangeRequest {
            sender: Some(self.self_member()),
            view_hash: self.view.hash() | 1,
            ..Default::default()
        }
    }

    /// A call of the exchange failed. Returns a retry of the opening call, or
    /// `None` when the exchange is over; a target that never answered is suspected.
    pub fn on_failure(&mut self, now: Millis, ex: &mut Exchange) -> Option<Call> {
        if ex.phase != Phase::Opening {
            return None;
        }
        if ex.attempts < OPEN_ATTEMPTS {
            ex.attempts += 1;
            return Some(Call::Peers(self.opening_request()));
        }
        if let Some(id) = ex.target.id.clone() {
            self.suspect(now, &id);
        }
        None
    }

    pub(super) fn suspect(&mut self, now: Millis, id: &str) {
        let me = self.me.id.clone();
        let k = self.cfg.suspicion_confirmations as usize + 1;
        self.restamp(id, |r, since| match r.status {
            Status::Alive => {
                debug!(member = %r.info.id, "member suspected");
                r.status = Status::Suspect;
                r.suspected_by = Suspecters::from(vec![me]);
                *since = now;
            }
            Status::Suspect if !r.suspected_by.contains(&me) && r.suspected_by.len() < k => {
                let mut by = r.suspected_by.to_vec();
                by.push(me);
                r.suspected_by = Suspecters::from(by);
            }
            _ => {}
        });
    }

    /// Feeds the answer to the exchange's last call; returns the next calls.
    pub fn on_reply(&mut self, now: Millis, ex: &mut Exchange, reply: Reply) -> Vec<Call> {
        match reply {
            Reply::Providers(resp) => {
                for set in resp.sets {
                    self.apply_provider_set(set);
                }
                Vec::new()
            }
            Reply::Peers(resp) => self.on_peers_reply(now, ex, resp),
        }
    }

    pub(super) fn on_peers_reply(
        &mut self,
        now: Millis,
        ex: &mut Exchange,
        resp: ExchangeResponse,
    ) -> Vec<Call> {
        let Some(sender) = resp.sender else {
            return Vec::new(); // an old peer: nothing versioned to learn
        };
        if sender.id == *self.me.id {
            // A seed address that turned out to be ourselves.
            self.self_addrs.insert(ex.target.addr.clone());
            return Vec::new();
        }
        self.observe_sender(now, sender);
        if let Some(hint) = resp.refute {
            self.refute(&hint);
        }
        for m in resp.members {
            let _ = self.apply_member(now, m, false);
        }
        match ex.phase {
            Phase::Opening => {
                if let Some(digest) = resp.digest {
                    // Small mesh: the whole digest came at once.
                    ex.phase = Phase::Closing;
                    let mask = bucket_mask(1, &[0]);
                    let mut calls = vec![Call::Peers(ExchangeRequest {
                        sender: Some(self.self_member()),
                        digest: Some(self.digest_for(1, &[0])),
                        members: self.missing_for(&digest.entries, 1, &mask),
                        ..Default::default()
                    })];
                    calls.extend(self.provider_call(&digest.entries, 1, &mask));
                    calls
                } else if resp.bucket_count > 0 && resp.view_hash != (self.view.hash() | 1) {
                    let k = resp
                        .bucket_count
                        .next_power_of_two()
                        .min(crate::mesh::view::FINE_BUCKETS);
                    let mine = self.view.bucket_hashes(k);
                    let mut differing: Vec<u32> = (0..k)
                        .filter(|b| resp.bucket_hashes.get(*b as usize) != mine.get(*b as usize))
                        .collect();
                    if differing.is_empty() {
                        return Vec::new();
                    }
                    differing.shuffle(&mut self.rng);
                    let buckets = self.fit_buckets(k, differing);
                    ex.phase = Phase::Negotiating { bucket_count: k };
                    vec![Call::Peers(ExchangeRequest {
                        sender: Some(self.self_member()),
                        digest: Some(self.digest_for(k, &buckets)),
                        ..Default::default()
                    })]
                } else {
                    Vec::new()
                }
            }
            Phase::Negotiating { bucket_count } => {
                ex.phase = Phase::Closing;
                let Some(digest) = resp.digest else {
                    return Vec::new();
                };
                if digest.bucket_count != bucket_count {
                    return Vec::new();
                }
                let mask = bucket_mask(bucket_count, &digest.buckets);
                let mut calls = Vec::new();
                let members = self.missing_for(&digest.entries, bucket_count, &mask);
                if !members.is_empty() {
                    calls.push(Call::Peers(ExchangeRequest {
                        sender: Some(self.self_member()),
                        members,
                        ..Default::default()
                    }));
                }
                calls.extend(self.provider_call(&digest.entries, bucket_count, &mask));
                calls
            }
            Phase::Closing => Vec::new(),
        }
    }

    /// Picks as many of `buckets` as fit one message, in the given order.
    pub(super) fn fit_buckets(&self, k: u32, buckets: Vec<u32>) -> Vec<u32> {
        const ENTRY_BYTES: usize = 40;
        let sizes = self.view.bucket_sizes(k);
        let mut budget = self.cfg.max_message_bytes / 2;
        let mut chosen = Vec::new();
        for b in buckets {
            let cost = sizes.get(b as usize).copied().unwrap_or(0) * ENTRY_BYTES + 8;
            if cost > budget && !chosen.is_empty() {
                continue;
            }
            budget = budget.saturating_sub(cost);
            chosen.push(b);
        }
        chosen
    }

    pub(super) fn digest_for(&self, k: u32, buckets: &[u32]) -> Digest {
        let mask = bucket_mask(k, buckets);
        // Sized for the buckets' share of the view: no regrowth of a message
        // that can hold thousands of entries.
        let share = self.view.len() * buckets.len() / k.max(1) as usize;
        let mut entries = Vec::with_capacity(share + share / 4 + 8);
        entries.extend(self.view.in_buckets(k, &mask).map(|e| e.digest()));
        Digest {
            bucket_count: k,
            buckets: buckets.to_vec(),
            entries,
        }
    }

    /// Provider sets the peer lacks and the ones it has newer, given its digest.
    pub(super) fn provider_call(
        &mut self,
        theirs: &[MemberDigest],
        k: u32,
        mask: &[bool],
    ) -> Option<Call> {
        let mut map = FastMap::with_capacity_and_hasher(theirs.len(), Default::default());
        map.extend(theirs.iter().map(|d| (d.id.as_str(), d)));
        let theirs: FastMap<&str, &MemberDigest> = map;
        let mut sets = Vec::new();
        let mut wants = Vec::new();
        let mut budget = self.cfg.max_message_bytes;
        for e in self.view.in_buckets(k, mask) {
            if e.status.is_tombstone() {
                continue;
            }
            let Some(d) = theirs.get(&*e.info.id) else {
                continue;
            };
            if d.generation != e.info.generation {
                continue;
            }
            let held = e.held_version();
            if held > d.provider_version {
                if let Some(set) = &e.providers {
                    let len = set.encoded_len();
                    if len <= budget {
                        budget -= len;
                        sets.push(ProviderSet::clone(set));
                    }
                }
            } else if d.provider_version > held && e.info.id != self.me.id {
                wants.push(MemberDigest {
                    id: String::from(&*e.info.id),
                    generation: e.info.generation,
                    provider_version: held,
                    ..Default::default()
                });
            }
        }
        // Sets this node knows it lacks from member records alone (a joining
        // node lacks them all): ask for them too, whatever the digest
        // covered, in random order so concurrent exchanges fetch different ones.
        let asked: FastSet<&str> = wants.iter().map(|w| w.id.as_str()).collect();
        let room = (self.cfg.max_message_bytes / BYTES_PER_WANT).saturating_sub(wants.len());
        // A uniform sample (reservoir) of the lacking sets, without
        // allocating for the ones left out.
        let mut sample: Vec<&Entry> = Vec::with_capacity(room);
        let mut seen = 0usize;
        let scanned = if self.view.lacking_len() > 0 {
            self.view.len()
        } else {
            0
        };
        for e in self.view.iter().take(scanned) {
            if e.status.is_tombstone()
                || e.provider_version <= e.held_version()
                || e.info.id == self.me.id
                || asked.contains(&*e.info.id)
            {
                continue;
            }
            seen += 1;
            if sample.len() < room {
                sample.push(e);
            } else {
                let j = self.rng.random_range(0..seen);
                if j < room {
                    sample[j] = e;
                }
            }
        }
        let extra: Vec<MemberDigest> = sample
            .into_iter()
            .map(|e| MemberDigest {
                id: String::from(&*e.info.id),
                generation: e.info.generation,
                provider_version: e.held_version(),
                ..Default::default()
            })
            .collect();
        wants.extend(extra);
        if sets.is_empty() && wants.is_empty() {
            return None;
        }
        Some(Call::Providers(ProviderExchangeRequest {
            providers: Vec::new(),
            sets,
            wants,
            sender_id: String::from(&*self.me.id),
        }))
    }

    // ----- server side ---------------------------------------------------

    /// Answers an `ExchangePeers` call.
    pub fn handle_exchange(&mut self, now: Millis, req: ExchangeRequest) -> ExchangeResponse {
        let Some(sender) = req.sender else {
            // An old client: answer in the original's terms.
            return ExchangeResponse {
                known_peers: self.live_addrs(),
                sender: Some(self.self_member()),
                ..Default::default()
            };
        };
        let mut resp = ExchangeResponse::default();
        if sender.id != *self.me.id {
            resp.refute = self.observe_sender(now, sender);
        }
        if let Some(hint) = req.refute {
            self.refute(&hint);
        }
        for m in req.members {
            let _ = self.apply_member(now, m, false);
        }
        if let Some(digest) = req.digest {
            let k = digest
                .bucket_count
                .clamp(1, crate::mesh::view::FINE_BUCKETS)
                .next_power_of_two();
            let mask = bucket_mask(k, &digest.buckets);
            self.refute_from_digest(&digest.entries);
            resp.members = self.missing_for(&digest.entries, k, &mask);
            if k > 1 {
                // Whole buckets only, as many as fit: the caller learns which were covered.
                let covered = self.fit_buckets(k, digest.buckets);
                resp.digest = Some(self.digest_for(k, &covered));
            }
        } else if req.view_hash != 0 && req.view_hash != (self.view.hash() | 1) {
            let k = bucket_count_for(self.view.len());
            if k == 1 {
                resp.digest = Some(self.digest_for(1, &[0]));
            } else {
                resp.bucket_count = k;
                resp.bucket_hashes = self.view.bucket_hashes(k);
            }
        }
        resp.sender = Some(self.self_member());
        resp.view_hash = self.view.hash() | 1;
        resp
    }

    /// Answers an `ExchangeProviders` call.
    pub fn handle_providers(&mut self, req: ProviderExchangeRequest) -> ProviderExchangeResponse {
        if req.sets.is_empty() && req.wants.is_empty() && req.sender_id.is_empty() {
            // An old client: a flat list of everything live.
            return ProviderExchangeResponse {
                providers: self.providers(),
                sets: Vec::new(),
            };
        }
        for set in req.sets {
            self.apply_provider_set(set);
        }
        let mut sets = Vec::new();
        let mut budget = self.cfg.max_message_bytes;
        for want in req.wants {
            let Some(e) = self.view.get(&want.id) else {
                continue;
            };
            let Some(set) = &e.providers else { continue };
            if e.info.generation == want.generation && set.version > want.provider_version {
                let len = set.encoded_len();
                if len > budget {
                    break;
                }
                budget -= len;
                sets.push(ProviderSet::clone(set));
            }
        }
        ProviderExchangeResponse {
            providers: Vec::new(),
            sets,
        }
    }

    pub(super) fn live_addrs(&self) -> Vec<String> {
        self.view
            .iter()
            .filter(|e| !e.status.is_tombstone() && e.info.id != self.me.id)
            .map(|e| e.info.addr.clone())
            .collect()
    }
}
