//! Prometheus metrics of a node: latency histograms recorded as calls
//! happen, and gauges read from the node's state at each scrape.
//!
//! - [`gossip`]: the counters the gossip loop keeps;
//! - [`calls`]: CallProvider latency, as caller and as owner;
//! - [`process`]: the standard `process_*` metrics.

pub mod calls;
pub mod gossip;
pub mod process;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use gossip::StatsSnapshot;
use process::ProcessStats;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// "client" (this node called another) or "server" (it answered).
    pub side: String,
    pub method: String,
    /// The gRPC code name, "ok" on success.
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabel {
    pub priority: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabel {
    pub tier: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// placed, refused (one candidate said no) or failed (the whole request).
    pub outcome: String,
    /// The tier placed on, or why a candidate or the request was refused.
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// gossip, call_provider, management or health.
    pub surface: String,
    /// not_allowed, unauthenticated, rate_limited, spoofed.
    pub reason: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 0.25 ms .. ~4 s: gossip calls, bounded by the call timeout.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

fn slow_latency() -> Histogram {
    // 1 ms .. ~9 min: a CallProvider deploy includes the image pull.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// What a node records as it runs. Cheap to clone: every metric is shared.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// One gossip call (ExchangePeers or ExchangeProviders) as the caller saw it.
    pub gossip_call_seconds: HistogramFamily<KindLabel>,
    /// CallProvider, from both sides.
    pub provider_call_seconds: HistogramFamily<CallLabels>,
    /// Scrapes served, so an operator can tell a dead scraper from a quiet node.
    pub scrapes: Counter,
    /// Calls refused by authentication, access lists or rate limits.
    pub refusals: Family<RefusalLabels, Counter>,
    /// Peers discovered over mDNS (each instance counted when first resolved).
    pub mdns_discovered: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            gossip_call_seconds: Family::new_with_constructor(latency),
            provider_call_seconds: Family::new_with_constructor(slow_latency),
            scrapes: Counter::default(),
            refusals: Family::default(),
            mdns_discovered: Counter::default(),
        }
    }
}

fn queue_wait() -> Histogram {
    // 50 ms .. ~14 h: a queued deploy waits for capacity, up to its timeout.
    Histogram::new(exponential_buckets(0.05, 3.0, 14))
}

/// What a home's queue did since start; shared by the queue worker and the
/// scrape (every field is an atomic handle).
#[derive(Debug, Clone)]
pub struct QueueMetrics {
    /// Queued deploys that a capacity change let run.
    pub unblocked: Counter,
    /// Queued deploys whose queue_timeout passed.
    pub timeouts: Counter,
    /// Time spent queued by those that left the queue (ran, expired, failed).
    pub wait_seconds: Histogram,
}

impl Default for QueueMetrics {
    fn default() -> QueueMetrics {
        QueueMetrics {
            unblocked: Counter::default(),
            timeouts: Counter::default(),
            wait_seconds: queue_wait(),
        }
    }
}

/// What a home did when owners died, since start.
#[derive(Debug, Clone, Default)]
pub struct FailoverMetrics {
    /// Replacements placed (or being placed) for deployments whose owner died.
    pub reschedules: Counter,
    /// Deployments reported lost: their owner died and no policy moves them.
    pub lost: Counter,
    /// Stale attempts an owner stopped because a newer one runs elsewhere.
    pub fenced: Counter,
    /// Scale calls that changed a service's wanted count.
    pub scales: Counter,
    /// Deployments this node evicted, as an owner, to admit higher-priority work.
    pub preemptions: Counter,
    /// Deployments of this home queued again after an owner evicted them.
    pub preempted_requeued: Counter,
    /// Deployments this owner stopped because their home stayed out of
    /// reach past their `stop_after_disconnect`.
    pub disconnect_stops: Counter,
}

/// What an owner's leases did since start (atomic handles, shared with the scrape).
#[derive(Debug, Clone, Default)]
pub struct LeaseMetrics {
    pub granted: Counter,
    /// Renewed by their holder (RenewLease).
    pub renewed: Counter,
    /// Renewed by the owner itself (auto_renew).
    pub auto_renewed: Counter,
    /// Released by their holder, or ended by a stop.
    pub released: Counter,
    pub expired: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByLabel {
    /// holder (RenewLease) or owner (auto_renew).
    pub by: String,
}

/// The node's state at one scrape.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub gossip: StatsSnapshot,
    /// Members by state (alive, suspect, dead, left), this node included.
    pub peers: Vec<(String, u64)>,
    /// Providers this node can place on, by tier.
    pub providers: Vec<(String, u64)>,
    /// Deployments on this node's own providers, by state.
    pub deployments: Vec<(String, u64)>,
    /// (outcome, reason, count) since start.
    pub placements: Vec<(String, String, u64)>,
    /// This process (None where it cannot be read).
    pub process: Option<ProcessStats>,
    /// Deploys queued at this node, by priority class.
    pub queued: Vec<(String, u64)>,
    /// The head of the queue by what blocks each entry (insufficient_cpu, …).
    pub queue_blocked: Vec<(String, u64)>,
    pub queue: QueueMetrics,
    /// Leases this node keeps as an owner, by state.
    pub leases: Vec<(String, u64)>,
    pub lease: LeaseMetrics,
    pub failover: FailoverMetrics,
    /// Services kept at this node: (service id, wanted replicas, skew).
    pub services: Vec<(String, u64, u64)>,
    /// Applications kept at this node, by status (created, running, ...).
    pub applications: Vec<(String, u64)>,
    /// Round trips to each live peer: (peer id, smoothed, p99), seconds.
    pub peer_rtts: Vec<(String, f64, f64)>,
    /// Swarm groups as this node sees them: (group, members, term, whether
    /// this node leads it).
    pub groups: Vec<(String, u64, u64, bool)>,
    /// Resource pools this node carries.
    pub pools: u64,
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self, s: &Snapshot) -> String {
        self.scrapes.inc();
        let mut root = Registry::default();
        if let Some(p) = &s.process {
            register_process(&mut root, p);
        }
        let r = root.sub_registry_with_prefix("iarnet");
        r.register(
            "gossip_call_seconds",
            "Latency of one gossip call, by kind (peers or providers)",
            self.gossip_call_seconds.clone(),
        );
        r.register(
            "provider_call_seconds",
            "Latency of CallProvider and image build calls, by side, method (`build` for those) and gRPC code",
            self.provider_call_seconds.clone(),
        );
        r.register("scrapes", "Metric scrapes served", self.scrapes.clone());
        r.register(
            "mdns_discovered",
            "Peers discovered over mDNS, each counted when first resolved",
            self.mdns_discovered.clone(),
        );
        r.register(
            "refusals",
            "Calls refused by authentication, access lists or rate limits, by surface and reason",
            self.refusals.clone(),
        );
        let g = &s.gossip;
        let counters = [
            ("gossip_rounds", "Gossip rounds run", g.rounds),
            ("gossip_calls", "Gossip calls sent", g.calls_sent),
            (
                "gossip_call_failures",
                "Gossip calls that failed or timed out",
                g.calls_failed,
            ),
            (
                "gossip_sent_bytes",
                "Encoded bytes of gossip requests sent and responses returned",
                g.bytes_sent,
            ),
            (
                "gossip_received_bytes",
                "Encoded bytes of gossip responses and requests received",
                g.bytes_received,
            ),
        ];
        for (name, help, v) in counters {
            r.register(name, help, ConstCounter::new(v));
        }
        r.register(
            "peers",
            "Members this node knows, by state (this node included)",
            gauges(&s.peers, |state| StateLabel { state }),
        );
        r.register(
            "providers",
            "Providers this node can place on, by tier",
            gauges(&s.providers, |tier| TierLabel { tier }),
        );
        r.register(
            "deployments",
            "Deployments on this node's own providers, by state",
            gauges(&s.deployments, |state| StateLabel { state }),
        );
        r.register(
            "applications",
            "Applications kept at this node, by status",
            gauges(&s.applications, |state| StateLabel { state }),
        );
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        for (outcome, reason, n) in &s.placements {
            outcomes
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.clone(),
                    reason: reason.clone(),
                })
                .inc_by(*n);
        }
        r.register(
            "placements",
            "Placement decisions: placed (by tier), refused by a candidate or failed (by reason)",
            outcomes,
        );
        r.register(
            "queued_deployments",
            "Deploys waiting in this node's queue, by priority class",
            gauges(&s.queued, |priority| PriorityLabel { priority }),
        );
        r.register(
            "queue_blocked",
            "Why the first 256 queued deploys wait: what keeps most providers from each (fits: others are ahead)",
            gauges(&s.queue_blocked, |reason| ReasonLabel { reason }),
        );
        r.register(
            "queue_unblocked",
            "Queued deploys that ran once capacity grew",
            s.queue.unblocked.clone(),
        );
        r.register(
            "queue_timeouts",
            "Queued deploys whose queue_timeout passed",
            s.queue.timeouts.clone(),
        );
        r.register(
            "queue_wait_seconds",
            "Time deploys spent queued, counted when they left the queue",
            s.queue.wait_seconds.clone(),
        );
        r.register(
            "leases",
            "Leases this node keeps as the owner of their providers, by state",
            gauges(&s.leases, |state| StateLabel { state }),
        );
        r.register(
            "lease_grants",
            "Leases granted on this node's providers",
            s.lease.granted.clone(),
        );
        let renewals = Family::<ByLabel, Counter>::default();
        renewals
            .get_or_create(&ByLabel {
                by: "holder".into(),
            })
            .inc_by(s.lease.renewed.get());
        renewals
            .get_or_create(&ByLabel { by: "owner".into() })
            .inc_by(s.lease.auto_renewed.get());
        r.register(
            "lease_renewals",
            "Lease renewals, by the holder (RenewLease) or the owner (auto_renew)",
            renewals,
        );
        r.register(
            "lease_releases",
            "Leases released by their holder or ended by a stop",
            s.lease.released.clone(),
        );
        r.register(
            "lease_expiries",
            "Leases that ran out: their deployments were stopped",
            s.lease.expired.clone(),
        );
        r.register(
            "reschedules",
            "Replacements placed for deployments whose owner node was declared dead",
            s.failover.reschedules.clone(),
        );
        r.register(
            "lost_deployments",
            "Deployments reported lost: their owner died and no reschedule policy moves them",
            s.failover.lost.clone(),
        );
        r.register(
            "fenced_attempts",
            "Stale attempts stopped because a newer attempt runs elsewhere",
            s.failover.fenced.clone(),
        );
        r.register(
            "disconnect_stops",
            "Deployments stopped by their owner because their home stayed out of reach past stop_after_disconnect",
            s.failover.disconnect_stops.clone(),
        );
        r.register(
            "preemptions",
            "Deployments this node evicted from its providers to admit higher-priority work",
            s.failover.preemptions.clone(),
        );
        r.register(
            "preempted_requeued",
            "Deployments of this home queued again after an owner preempted them",
            s.failover.preempted_requeued.clone(),
        );
        r.register(
            "service_scales",
            "Scale calls on services kept at this node",
            s.failover.scales.clone(),
        );
        let wanted: Vec<(String, u64)> = s
            .services
            .iter()
            .map(|(id, n, _)| (id.clone(), *n))
            .collect();
        let skew: Vec<(String, u64)> = s
            .services
            .iter()
            .map(|(id, _, k)| (id.clone(), *k))
            .collect();
        r.register(
            "service_replicas",
            "Replicas each service kept at this node should have",
            gauges(&wanted, |service| ServiceLabel { service }),
        );
        r.register(
            "service_skew",
            "The largest difference in replicas between two spread values of each service",
            gauges(&skew, |service| ServiceLabel { service }),
        );
        register_swarm(r, s);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &root);
        out
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RttLabels {
    peer: String,
    /// ewma (smoothed, weight 1/8) or p99 (of the last 128).
    stat: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

/// Round trips per peer and the swarm's groups and pools.
fn register_swarm(r: &mut Registry, s: &Snapshot) {
    let rtt = Family::<RttLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (peer, ewma, p99) in &s.peer_rtts {
        for (stat, v) in [("ewma", ewma), ("p99", p99)] {
            rtt.get_or_create(&RttLabels {
                peer: peer.clone(),
                stat,
            })
            .set(*v);
        }
    }
    r.register(
        "peer_rtt_seconds",
        "Round-trip time of gossip calls to each live peer: smoothed (ewma) and p99 of the last 128",
        rtt,
    );
    let members: Vec<(String, u64)> = s
        .groups
        .iter()
        .map(|(g, n, _, _)| (g.clone(), *n))
        .collect();
    let terms: Vec<(String, u64)> = s
        .groups
        .iter()
        .map(|(g, _, t, _)| (g.clone(), *t))
        .collect();
    let leads: Vec<(String, u64)> = s
        .groups
        .iter()
        .map(|(g, _, _, me)| (g.clone(), u64::from(*me)))
        .collect();
    r.register(
        "swarm_group_members",
        "Live members of each swarm group",
        gauges(&members, |group| GroupLabel { group }),
    );
    r.register(
        "swarm_group_term",
        "The term of each swarm group's leader (0 while it has none)",
        gauges(&terms, |group| GroupLabel { group }),
    );
    r.register(
        "swarm_group_leader",
        "1 for each swarm group this node leads",
        gauges(&leads, |group| GroupLabel { group }),
    );
    let pools = Gauge::<i64>::default();
    pools.set(s.pools as i64);
    r.register("swarm_pools", "Resource pools this node carries", pools);
}

/// The names every exporter uses, unprefixed, so standard dashboards work.
fn register_process(r: &mut Registry, p: &ProcessStats) {
    let gauge = |v: f64| {
        let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        g.set(v);
        g
    };
    r.register(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        ConstCounter::new(p.cpu_seconds),
    );
    r.register(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        gauge(p.resident_memory_bytes as f64),
    );
    r.register(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
        gauge(p.virtual_memory_bytes as f64),
    );
    r.register(
        "process_open_fds",
        "Number of open file descriptors",
        gauge(p.open_fds as f64),
    );
    if let Some(max) = p.max_fds {
        r.register(
            "process_max_fds",
            "Maximum number of open file descriptors",
            gauge(max as f64),
        );
    }
    r.register(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds",
        gauge(p.start_time_seconds),
    );
}

fn gauges<L>(values: &[(String, u64)], label: impl Fn(String) -> L) -> Family<L, Gauge>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Gauge>::default();
    for (k, v) in values {
        family.get_or_create(&label(k.clone())).set(*v as i64);
    }
    family
}

/// A gRPC code as a short label value ("ok", "unavailable", ...).
pub fn code_label(code: tonic::Code) -> String {
    if code == tonic::Code::Ok {
        return "ok".to_string();
    }
    let name = format!("{code:?}");
    let mut out = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_every_family_with_labels() {
        let m = Metrics::default();
        m.gossip_call_seconds
            .get_or_create(&KindLabel {
                kind: "peers".into(),
            })
            .observe(0.002);
        let text = m.render(&Snapshot {
            peers: vec![("alive".into(), 3), ("dead".into(), 1)],
            providers: vec![("discovered".into(), 2)],
            deployments: vec![("running".into(), 1)],
            placements: vec![("refused".into(), "exhausted".into(), 4)],
            queued: vec![("batch".into(), 2)],
            leases: vec![("active".into(), 1)],
            queue_blocked: vec![("insufficient_cpu".into(), 2)],
            services: vec![("web".into(), 3, 1)],
            applications: vec![("running".into(), 2)],
            process: Some(ProcessStats {
                resident_memory_bytes: 1 << 20,
                open_fds: 9,
                ..ProcessStats::default()
            }),
            ..Snapshot::default()
        });
        for needle in [
            "iarnet_peers{state=\"alive\"} 3",
            "iarnet_peers{state=\"dead\"} 1",
            "iarnet_providers{tier=\"discovered\"} 2",
            "iarnet_deployments{state=\"running\"} 1",
            "iarnet_placements_total{outcome=\"refused\",reason=\"exhausted\"} 4",
            "iarnet_gossip_call_seconds_count{kind=\"peers\"} 1",
            "iarnet_gossip_rounds_total 0",
            "process_resident_memory_bytes 1048576",
            "process_open_fds 9",
            "iarnet_queued_deployments{priority=\"batch\"} 2",
            "iarnet_queue_unblocked_total 0",
            "iarnet_queue_blocked{reason=\"insufficient_cpu\"} 2",
            "iarnet_queue_timeouts_total 0",
            "iarnet_queue_wait_seconds_count 0",
            "iarnet_leases{state=\"active\"} 1",
            "iarnet_lease_grants_total 0",
            "iarnet_lease_renewals_total{by=\"owner\"} 0",
            "iarnet_lease_releases_total 0",
            "iarnet_lease_expiries_total 0",
            "iarnet_service_replicas{service=\"web\"} 3",
            "iarnet_service_skew{service=\"web\"} 1",
            "iarnet_service_scales_total 0",
            "iarnet_applications{state=\"running\"} 2",
            "process_cpu_seconds_total 0",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }

    #[test]
    fn code_labels_are_snake_case() {
        assert_eq!(code_label(tonic::Code::Ok), "ok");
        assert_eq!(
            code_label(tonic::Code::DeadlineExceeded),
            "deadline_exceeded"
        );
        assert_eq!(code_label(tonic::Code::Unavailable), "unavailable");
    }
}
