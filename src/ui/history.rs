//! What the dashboard remembers between page loads: ring buffers of the
//! mesh's figures (500 points at 2 s, about 17 minutes, as Nomad's UI
//! keeps) and the recent events found by comparing one look at the node
//! with the last. Sans-IO: `observe` takes numbers and a time, and the
//! loop in `run` reads them off the node.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::node::shared::Shared;
use crate::placement::Manager;
use crate::resource::Resources;

/// Points per series.
pub const POINTS: usize = 500;
/// One point every this often.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// The node is looked at this often for events (twice per point).
pub const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Providers with their own charts at most (the rest show bars only):
/// each costs about 12 KiB.
pub const MAX_PROVIDER_SERIES: usize = 256;
/// Recent events kept for the overview.
pub const EVENTS: usize = 50;

#[derive(Debug, Clone, Default)]
pub struct Ring {
    points: VecDeque<f32>,
}

impl Ring {
    pub fn push(&mut self, v: f64) {
        if self.points.len() == POINTS {
            self.points.pop_front();
        }
        self.points.push_back(v as f32);
    }

    pub fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        self.points.iter().map(|v| *v as f64)
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn last(&self) -> Option<f64> {
        self.points.back().map(|v| *v as f64)
    }

    pub fn max(&self) -> f64 {
        self.iter().fold(0.0, f64::max)
    }
}

/// Reserved against total, for one resource.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub total: Ring,
    pub reserved: Ring,
}

impl Usage {
    fn push(&mut self, total: f64, reserved: f64) {
        self.total.push(total);
        self.reserved.push(reserved);
    }
}

#[derive(Debug, Clone, Default)]
pub struct ResourceUsage {
    /// Cores.
    pub cpu: Usage,
    /// GiB.
    pub memory: Usage,
    pub gpus: Usage,
}

impl ResourceUsage {
    fn push(&mut self, total: &Resources, reserved: &Resources) {
        const GIB: f64 = (1u64 << 30) as f64;
        self.cpu.push(
            total.cpu_millis as f64 / 1000.0,
            reserved.cpu_millis as f64 / 1000.0,
        );
        self.memory.push(
            total.memory_bytes as f64 / GIB,
            reserved.memory_bytes as f64 / GIB,
        );
        self.gpus.push(total.gpus as f64, reserved.gpus as f64);
    }
}

/// One event the overview lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the node started.
    pub at: f64,
    pub kind: &'static str,
    pub text: String,
}

/// One look at the node.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Seconds since the node started.
    pub at: f64,
    /// Member id → (name, state).
    pub members: BTreeMap<String, (String, String)>,
    /// Provider id → (name, healthy, total, reserved).
    pub providers: BTreeMap<String, (String, bool, Resources, Resources)>,
    /// This node's deployments: id → (image, state).
    pub deployments: BTreeMap<String, (String, String)>,
    pub queued: usize,
    /// Placements made so far (a counter).
    pub placements: u64,
    /// Gossip bytes sent and received so far (a counter).
    pub gossip_bytes: u64,
}

#[derive(Debug, Default)]
pub struct History {
    pub mesh: ResourceUsage,
    pub providers: HashMap<String, ResourceUsage>,
    pub queue: Ring,
    pub placements_per_minute: Ring,
    pub gossip_bytes_per_second: Ring,
    pub events: VecDeque<Event>,
    last: Option<Observation>,
    last_point: Option<f64>,
}

impl History {
    /// Takes one look; adds a point when `SAMPLE_EVERY` has passed since
    /// the last. Returns whether anything a page shows changed.
    pub fn observe(&mut self, o: Observation) -> bool {
        let changed = self.diff(&o);
        let due = self
            .last_point
            .is_none_or(|t| o.at - t >= SAMPLE_EVERY.as_secs_f64() - 0.05);
        if due {
            self.point(&o);
            self.last_point = Some(o.at);
        }
        self.last = Some(o);
        changed || due
    }

    fn point(&mut self, o: &Observation) {
        let (mut total, mut reserved) = (Resources::ZERO, Resources::ZERO);
        for (_, healthy, t, r) in o.providers.values() {
            if *healthy {
                total = total.saturating_add(t);
                reserved = reserved.saturating_add(r);
            }
        }
        self.mesh.push(&total, &reserved);
        self.providers.retain(|id, _| o.providers.contains_key(id));
        for (id, (_, _, t, r)) in &o.providers {
            if !self.providers.contains_key(id) && self.providers.len() >= MAX_PROVIDER_SERIES {
                continue;
            }
            self.providers.entry(id.clone()).or_default().push(t, r);
        }
        self.queue.push(o.queued as f64);
        let (placements, bytes) = match &self.last {
            Some(prev) if o.at > prev.at => {
                let dt = o.at - prev.at;
                (
                    o.placements.saturating_sub(prev.placements) as f64 * 60.0 / dt,
                    o.gossip_bytes.saturating_sub(prev.gossip_bytes) as f64 / dt,
                )
            }
            _ => (0.0, 0.0),
        };
        self.placements_per_minute.push(placements);
        self.gossip_bytes_per_second.push(bytes);
    }

    /// Records what changed since the last look as events.
    fn diff(&mut self, o: &Observation) -> bool {
        let Some(prev) = self.last.take() else {
            return true;
        };
        let mut events = Vec::new();
        for (id, (name, state)) in &o.members {
            match prev.members.get(id) {
                None => events.push(("member", format!("{name} joined ({state})"))),
                Some((_, was)) if was != state => {
                    events.push(("member", format!("{name}: {was} → {state}")))
                }
                _ => {}
            }
        }
        for (id, (name, healthy, ..)) in &o.providers {
            match prev.providers.get(id) {
                None => events.push(("provider", format!("provider {name} added"))),
                Some((_, was, ..)) if was != healthy => events.push((
                    "provider",
                    format!(
                        "provider {name} is {}",
                        if *healthy {
                            "healthy again"
                        } else {
                            "unhealthy"
                        }
                    ),
                )),
                _ => {}
            }
        }
        for (id, (name, ..)) in &prev.providers {
            if !o.providers.contains_key(id) {
                events.push(("provider", format!("provider {name} removed")));
            }
        }
        for (id, (image, state)) in &o.deployments {
            match prev.deployments.get(id) {
                None => events.push(("deployment", format!("{id} ({image}): {state}"))),
                Some((_, was)) if was != state => {
                    events.push(("deployment", format!("{id} ({image}): {was} → {state}")))
                }
                _ => {}
            }
        }
        let queue_changed = prev.queued != o.queued;
        let changed = !events.is_empty() || queue_changed;
        for (kind, text) in events {
            if self.events.len() == EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(Event {
                at: o.at,
                kind,
                text,
            });
        }
        self.last = Some(prev);
        changed
    }
}

/// The history behind a lock, and a version that moves whenever a look
/// found a change: live pages wait on it.
pub struct Recorder {
    pub history: Mutex<History>,
    version: watch::Sender<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            history: Mutex::default(),
            version: watch::channel(0).0,
        }
    }
}

impl Recorder {
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub fn observe(&self, o: Observation) {
        let changed = self.history.lock().expect("history lock").observe(o);
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
    }
}

/// Looks at the node every `LOOK_EVERY` until cancelled.
pub async fn run(
    recorder: Arc<Recorder>,
    shared: Arc<Shared>,
    manager: Arc<Manager>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(LOOK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let o = look(&shared, &manager, started.elapsed().as_secs_f64()).await;
        recorder.observe(o);
    }
}

async fn look(shared: &Shared, manager: &Manager, at: f64) -> Observation {
    let members = shared
        .mesh()
        .view()
        .iter()
        .map(|e| {
            (
                e.info.id.to_string(),
                (e.info.name.clone(), e.status.as_str().to_string()),
            )
        })
        .collect();
    let providers = manager
        .candidates()
        .into_iter()
        .map(|c| {
            (
                c.id,
                (c.name, c.healthy, c.capacity.total, c.capacity.reserved),
            )
        })
        .collect();
    let deployments = manager
        .list_local()
        .await
        .into_iter()
        .map(|d| {
            (
                d.id.clone(),
                (d.image.clone(), d.state().name().to_string()),
            )
        })
        .collect();
    let gossip = shared.stats.snapshot();
    Observation {
        at,
        members,
        providers,
        deployments,
        queued: manager.queued_by_class().values().sum(),
        placements: manager.placement_counts().iter().map(|(_, _, n)| n).sum(),
        gossip_bytes: gossip.bytes_sent + gossip.bytes_received,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpu: u64) -> Resources {
        Resources {
            cpu_millis: cpu,
            memory_bytes: 1 << 30,
            gpus: 0,
            storage_bytes: 0,
        }
    }

    fn look_at(at: f64, state: &str, queued: usize, placements: u64) -> Observation {
        let mut o = Observation {
            at,
            queued,
            placements,
            gossip_bytes: (at * 100.0) as u64,
            ..Default::default()
        };
        o.members
            .insert("n1".into(), ("node-1".into(), state.into()));
        o.providers.insert(
            "p1".into(),
            ("docker".into(), true, res(4000), res(1000 * queued as u64)),
        );
        o
    }

    #[test]
    fn points_every_two_seconds_and_rates_from_counters() {
        let mut h = History::default();
        assert!(h.observe(look_at(0.0, "alive", 0, 0)));
        assert!(!h.observe(look_at(1.0, "alive", 0, 0)), "nothing changed");
        assert!(h.observe(look_at(2.0, "alive", 1, 10)));
        assert_eq!(h.queue.len(), 2);
        assert_eq!(h.mesh.cpu.total.last(), Some(4.0));
        assert_eq!(h.mesh.cpu.reserved.last(), Some(1.0));
        // 10 placements in the 1 s since the last look: 600 a minute.
        assert_eq!(h.placements_per_minute.last(), Some(600.0));
        assert_eq!(h.gossip_bytes_per_second.last(), Some(100.0));
        assert_eq!(h.providers["p1"].cpu.total.len(), 2);
    }

    #[test]
    fn rings_keep_the_last_points() {
        let mut r = Ring::default();
        for i in 0..(POINTS + 10) {
            r.push(i as f64);
        }
        assert_eq!(r.len(), POINTS);
        assert_eq!(r.iter().next(), Some(10.0));
        assert_eq!(r.max(), (POINTS + 9) as f64);
    }

    #[test]
    fn changes_become_events() {
        let mut h = History::default();
        h.observe(look_at(0.0, "alive", 0, 0));
        h.observe(look_at(1.0, "suspect", 0, 0));
        let mut gone = look_at(2.0, "suspect", 0, 0);
        gone.providers.clear();
        gone.deployments
            .insert("iarnet-1".into(), ("nginx".into(), "running".into()));
        h.observe(gone);
        let texts: Vec<&str> = h.events.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "node-1: alive → suspect",
                "provider docker removed",
                "iarnet-1 (nginx): running"
            ]
        );
        assert!(h.providers.is_empty(), "a removed provider's charts go");
    }
}
