//! Membership and provider discovery by gossip.
//!
//! # Design note
//!
//! **Records are owner-written and versioned.** Each node owns its member
//! record: id, name, address, a *generation* (a new one on every start, so a
//! restart is a new member that supersedes its old self at once) and an
//! *incarnation* that only the owner raises. It also owns its provider set,
//! which carries a version and travels whole (a removed provider disappears by
//! being absent from a newer set; sets of dead members are dropped).
//!
//! **Failure detection is SWIM-style suspicion with owner refutation**
//! (memberlist/Lifeguard), chosen over phi-accrual heartbeats because
//! heartbeats must be relayed for every node every round: traffic per node
//! grows linearly with N even when nothing changes (chitchat's known limit).
//! Here the exchanges themselves are the probes: a node whose opening call
//! fails twice is marked SUSPECT by the caller (a record any node may write,
//! at the member's current incarnation). The suspicion spreads; the member,
//! as soon as any exchange shows it the suspicion, refutes it by raising its
//! incarnation. Only that owner-written incarnation outranks a suspicion, so a
//! relayed copy can never keep a dead node alive (the original's zombie bug).
//! A suspicion turns into DEAD after `suspicion_mult * max(1, log10 N)` rounds
//! when three independent nodes confirmed it, and up to `suspicion_max_mult`
//! times longer for a lone suspicion (Lifeguard: real crashes gather
//! confirmations quickly, lost packets do not). Suspecters re-probe their
//! suspects every round so a live node hears of it and refutes fast.
//! A leaving node gossips LEFT about itself, which every node applies at once.
//!
//! **Precedence** ([`record::Stamp::supersedes`]) is one lexicographic key:
//! generation, then LEFT (final for a generation), then incarnation, then
//! ALIVE < SUSPECT < DEAD, then suspicion confirmations. A total order, so all
//! replicas converge whatever order records arrive in (property-tested).
//!
//! **Tombstones.** DEAD and LEFT members stay in the view (and are gossiped)
//! for `tombstone_grace`, then are deleted and their last (generation,
//! incarnation) is remembered for ten times longer, so a peer that still holds
//! an old copy cannot bring them back. A node that finds itself held dead
//! refutes with a higher incarnation; a restarted one arrives as a new
//! generation.
//!
//! **Anti-entropy in one number when nothing changed.** Each node keeps the
//! XOR of its entries' hashes, updated on every change. An exchange opens with
//! that hash: equal hashes end it (one small call, the steady state, constant
//! in N). On a mismatch the callee returns per-bucket hashes (ids hash into
//! up to 4,096 buckets; a small view sends its whole digest instead), the
//! caller sends its digest for the differing buckets, and each side then
//! sends only the records the other lacks: unknown members first, then the
//! most out of date, each message capped at `max_message_size`. Provider
//! sets follow in `ExchangeProviders`, pushed where the peer is behind and
//! pulled where it is ahead. Peers get a push-pull exchange with `fanout`
//! random live members per round, plus re-probes of suspects, now and then a
//! dead member (probability dead/(live+1)) and a seed, so partitions heal.
//!
//! **Sans-IO.** [`Mesh`] takes ticks and messages with the time passed in and
//! randomness from a seeded RNG; `node::gossip` drives it over tonic and
//! [`sim::Sim`] drives thousands of cores deterministically in one process.
//!
//! # Modules
//! - [`record`]: member records, their ordering, stable hashing.
//! - [`view`]: the member table with an incrementally kept hash.
//! - [`core`]: the sans-IO protocol state machine ([`Mesh`]).
//! - [`intern`]: member numbers; sharing of immutable records between cores.
//! - [`sim`]: a deterministic in-process simulator of many cores.

pub mod core;
pub mod intern;
pub mod limits;
pub mod record;
pub mod sim;
pub mod view;

/// A map with a fixed-seed hasher: iteration order depends only on what
/// was inserted, so protocol decisions replay exactly from a seed.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::FixedState>;

pub use self::core::{Call, Exchange, Identity, Mesh, MeshConfig, Reply, Target};
pub use self::record::{Millis, Status};

#[cfg(test)]
mod tests;
