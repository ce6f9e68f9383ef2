//! The `gossip.*` keys: round length, fanout and failure detection.

use std::time::Duration;

use super::parser::Parser;
use super::Key;

pub(super) const INTERVAL: Key = Key::new(
    "gossip.interval",
    "1s",
    "round length; each round contacts `fanout` random live peers",
)
.env("IARNET_GOSSIP_INTERVAL");
pub(super) const FANOUT: Key =
    Key::new("gossip.fanout", "3", "random live peers per round").env("IARNET_GOSSIP_FANOUT");
pub(super) const CALL_TIMEOUT: Key = Key::new(
    "gossip.call_timeout",
    "500ms",
    "deadline of one gossip call",
);
pub(super) const SUSPICION_MULT: Key = Key::new(
    "gossip.suspicion_mult",
    "1.5",
    "shortest suspicion in rounds per log10(members)",
);
pub(super) const SUSPICION_MAX_MULT: Key = Key::new(
    "gossip.suspicion_max_mult",
    "4",
    "longest (lone) suspicion as a multiple of the shortest",
);
pub(super) const TOMBSTONE_GRACE: Key = Key::new(
    "gossip.tombstone_grace",
    "60s",
    "how long dead or departed members are kept",
);
pub(super) const MAX_MESSAGE_SIZE: Key = Key::new(
    "gossip.max_message_size",
    "512Ki",
    "soft cap of one gossip message",
);
pub(super) const SEED_RESOLVE_INTERVAL: Key = Key::new(
    "gossip.seed_resolve_interval",
    "30s",
    "how often seed names are resolved again in DNS",
);

pub(super) const KEYS: &[Key] = &[
    INTERVAL,
    FANOUT,
    CALL_TIMEOUT,
    SUSPICION_MULT,
    SUSPICION_MAX_MULT,
    TOMBSTONE_GRACE,
    MAX_MESSAGE_SIZE,
    SEED_RESOLVE_INTERVAL,
];

/// Gossip and failure-detection tunables. Each field names its key; the
/// key's default is in [`KEYS`] above.
#[derive(Debug, Clone, PartialEq)]
pub struct GossipConfig {
    /// Round length (`gossip.interval`).
    pub interval: Duration,
    /// Random live peers per round (`gossip.fanout`).
    pub fanout: usize,
    /// Deadline of one gossip call (`gossip.call_timeout`).
    pub call_timeout: Duration,
    /// Shortest suspicion in rounds per log10(members) (`gossip.suspicion_mult`).
    pub suspicion_mult: f64,
    /// Longest suspicion as a multiple of the shortest (`gossip.suspicion_max_mult`).
    pub suspicion_max_mult: f64,
    /// How long dead or departed members are kept (`gossip.tombstone_grace`).
    pub tombstone_grace: Duration,
    /// Soft cap of one gossip message (`gossip.max_message_size`).
    pub max_message_bytes: usize,
    /// How often seed names are re-resolved in DNS (`gossip.seed_resolve_interval`).
    pub seed_resolve_interval: Duration,
}

impl Parser<'_> {
    pub(super) fn gossip(&mut self) -> GossipConfig {
        GossipConfig {
            interval: self.duration(
                &INTERVAL,
                Duration::from_millis(10),
                Duration::from_secs(3600),
            ),
            fanout: self.int(&FANOUT, 1, 64) as usize,
            call_timeout: self.duration(
                &CALL_TIMEOUT,
                Duration::from_millis(1),
                Duration::from_secs(600),
            ),
            suspicion_mult: self.float(&SUSPICION_MULT, 0.1, 100.0),
            suspicion_max_mult: self.float(&SUSPICION_MAX_MULT, 1.0, 100.0),
            tombstone_grace: self.duration(
                &TOMBSTONE_GRACE,
                Duration::from_secs(1),
                Duration::from_secs(7 * 86_400),
            ),
            max_message_bytes: self.bytes(&MAX_MESSAGE_SIZE, 4 << 10, 2 << 20),
            seed_resolve_interval: self.duration(
                &SEED_RESOLVE_INTERVAL,
                Duration::from_secs(1),
                Duration::from_secs(86_400),
            ),
        }
    }
}
