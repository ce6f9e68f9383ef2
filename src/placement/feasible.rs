//! Feasibility: which providers can take a deployment at all, as far as the
//! cached view says. Ranking only orders what passes here; the owner still
//! re-checks under its own lock when it admits.

use std::collections::BTreeMap;

use crate::lifecycle::queue::Fit;
use crate::resource::{labels, Candidate, Capacity, Resources, Scope};

/// What a deployment needs from a provider.
#[derive(Debug, Clone, Default)]
pub struct Need<'a> {
    pub resources: Resources,
    pub gpu_model: Option<&'a str>,
    pub required_labels: Option<&'a BTreeMap<String, String>>,
    /// Preferred region (geographic strategy).
    pub region: Option<&'a str>,
    /// Only this provider.
    pub provider_id: Option<&'a str>,
    /// Only providers in this swarm scope.
    pub scope: Option<&'a Scope>,
}

impl Need<'_> {
    /// Can `c` take this deployment? Every filter must pass.
    pub fn feasible(&self, c: &Candidate) -> bool {
        healthy(c)
            && fits(c, &self.resources)
            && pinned(c, self.provider_id)
            && gpu_model(c, self.gpu_model)
            && has_labels(c, self.required_labels)
            && in_scope(c, self.scope)
    }
}

fn in_scope(c: &Candidate, scope: Option<&Scope>) -> bool {
    scope.is_none_or(|s| s.required().iter().all(|(k, _)| c.labels.contains_key(k)))
}

fn healthy(c: &Candidate) -> bool {
    c.healthy
}

fn fits(c: &Candidate, need: &Resources) -> bool {
    c.capacity.admits(need)
}

fn pinned(c: &Candidate, provider_id: Option<&str>) -> bool {
    provider_id.is_none_or(|p| p == c.id)
}

/// A case-insensitive substring of the provider's GPU model ("h100").
fn gpu_model(c: &Candidate, model: Option<&str>) -> bool {
    model.is_none_or(|m| {
        c.labels
            .get(labels::GPU_MODEL)
            .is_some_and(|have| have.to_lowercase().contains(&m.to_lowercase()))
    })
}

fn has_labels(c: &Candidate, required: Option<&BTreeMap<String, String>>) -> bool {
    required.is_none_or(|req| req.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
}

/// Why the providers cannot take a deployment now, counted per reason the
/// way Kubernetes reports a pending pod (`0/5 nodes are available: 3
/// Insufficient cpu, 2 node(s) didn't match node selector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub providers: usize,
    /// Could take it as they stand.
    pub now: usize,
    /// Could take it once enough is free (pass every filter, total holds it).
    pub later: usize,
    /// `0/4 providers can run it now: 3 insufficient cpu (needs 4, most free 2.5), …`
    pub text: String,
    /// What keeps most providers from it, as a metric label:
    /// `insufficient_cpu`, `max_deployments`, `label`, `too_small_memory`,
    /// `none_known`, or `fits` when some provider could take it now.
    pub blocker: String,
}

impl Verdict {
    /// No known provider could ever hold it, even empty. Knowing none is
    /// not never: a node that has not heard of the mesh yet soon will.
    pub fn never(&self) -> bool {
        self.providers > 0 && self.now == 0 && self.later == 0
    }
}

/// The first reason one provider cannot take it, and the amount it has
/// of the dimension that falls short.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Miss {
    Unhealthy,
    NotPinned,
    GpuModel(String),
    Label(String, String),
    /// Outside the deploy's swarm scope ("not in group gpu-lab").
    Scope(String),
    /// Its total is too small: never.
    TooSmall(Dim),
    /// Not enough free now.
    Insufficient(Dim),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dim {
    Cpu,
    Memory,
    Gpu,
    Storage,
    /// Deployment slots under a provider's `max_deployments`.
    Deployments,
}

/// Which side of a provider's capacity a dimension is read from.
#[derive(Debug, Clone, Copy)]
enum Side {
    Total,
    Free,
}

impl Miss {
    /// A short, stable name for metrics.
    fn key(&self) -> String {
        match self {
            Miss::Unhealthy => "unhealthy".into(),
            Miss::NotPinned => "not_pinned".into(),
            Miss::GpuModel(_) => "gpu_model".into(),
            Miss::Label(..) => "label".into(),
            Miss::Scope(_) => "scope".into(),
            Miss::TooSmall(d) => format!("too_small_{}", d.key()),
            Miss::Insufficient(Dim::Deployments) => "max_deployments".into(),
            Miss::Insufficient(d) => format!("insufficient_{}", d.key()),
        }
    }
}

impl Dim {
    fn key(self) -> &'static str {
        match self {
            Dim::Deployments => "deployments",
            d => d.name(),
        }
    }

    const ALL: [Dim; 5] = [
        Dim::Cpu,
        Dim::Memory,
        Dim::Gpu,
        Dim::Storage,
        Dim::Deployments,
    ];

    fn name(self) -> &'static str {
        match self {
            Dim::Cpu => "cpu",
            Dim::Memory => "memory",
            Dim::Gpu => "gpu",
            Dim::Storage => "storage",
            Dim::Deployments => "deployment slots",
        }
    }

    /// The amount of this dimension a deployment needs: one slot each.
    fn need(self, r: &Resources) -> Option<u64> {
        match self {
            Dim::Cpu => Some(r.cpu_millis),
            Dim::Memory => Some(r.memory_bytes),
            Dim::Gpu => Some(r.gpus.into()),
            Dim::Storage => Some(r.storage_bytes).filter(|s| *s != crate::resource::UNLIMITED),
            Dim::Deployments => Some(1),
        }
    }

    /// The amount of this dimension a provider has; None when it is not
    /// accounted (unlimited storage, no `max_deployments`).
    fn of(self, c: &Capacity, side: Side) -> Option<u64> {
        match (self, side) {
            (Dim::Deployments, Side::Total) => c.max_deployments.map(u64::from),
            (Dim::Deployments, Side::Free) => c
                .max_deployments
                .map(|m| u64::from(m.saturating_sub(c.deployments))),
            (d, Side::Total) => d.need(&c.total),
            (d, Side::Free) => d.need(&c.available()),
        }
    }

    /// Short by this dimension: `need` more than the provider has.
    fn short(self, c: &Capacity, side: Side, need: &Resources) -> bool {
        match (self.of(c, side), self.need(need)) {
            (Some(h), Some(n)) => n > h,
            _ => false,
        }
    }

    fn show(self, amount: u64) -> String {
        match self {
            Dim::Cpu if amount % 1000 == 0 => format!("{}", amount / 1000),
            Dim::Cpu if amount % 100 == 0 => format!("{}", amount as f64 / 1000.0),
            Dim::Cpu => format!("{amount}m"),
            Dim::Memory | Dim::Storage => bytes(amount),
            Dim::Gpu | Dim::Deployments => amount.to_string(),
        }
    }
}

fn bytes(b: u64) -> String {
    const GI: u64 = 1 << 30;
    const MI: u64 = 1 << 20;
    if b >= GI && b % (GI / 10) == 0 {
        format!("{}Gi", b as f64 / GI as f64)
    } else if b >= MI {
        format!("{}Mi", b / MI)
    } else {
        format!("{b}")
    }
}

impl Need<'_> {
    fn miss(&self, c: &Candidate) -> Option<Miss> {
        if !healthy(c) {
            return Some(Miss::Unhealthy);
        }
        if !pinned(c, self.provider_id) {
            return Some(Miss::NotPinned);
        }
        if let Some(m) = self.gpu_model.filter(|_| !gpu_model(c, self.gpu_model)) {
            return Some(Miss::GpuModel(m.to_string()));
        }
        if let Some(req) = self.required_labels {
            if let Some((k, v)) = req.iter().find(|(k, v)| c.labels.get(*k) != Some(*v)) {
                return Some(Miss::Label(k.clone(), v.clone()));
            }
        }
        if let Some(scope) = self.scope {
            if let Some((_, why)) = scope
                .required()
                .into_iter()
                .find(|(k, _)| !c.labels.contains_key(k))
            {
                return Some(Miss::Scope(why));
            }
        }
        let need = &self.resources;
        if let Some(d) = Dim::ALL
            .into_iter()
            .find(|d| d.short(&c.capacity, Side::Total, need))
        {
            return Some(Miss::TooSmall(d));
        }
        Dim::ALL
            .into_iter()
            .find(|d| d.short(&c.capacity, Side::Free, need))
            .map(Miss::Insufficient)
    }

    /// For the queue: could `c` take it now, once enough is free, or never?
    pub fn fit(&self, c: &Candidate) -> Fit {
        match self.miss(c) {
            None => Fit::Now,
            Some(Miss::Insufficient(_)) => Fit::Later,
            Some(_) => Fit::Never,
        }
    }

    /// Counts, over `candidates`, who could take it now, who later, and why not.
    pub fn explain(&self, candidates: &[Candidate]) -> Verdict {
        let mut counts: BTreeMap<Miss, usize> = BTreeMap::new();
        let (mut now, mut later) = (0, 0);
        // The most free (or the largest total) of a dimension that fell short.
        let mut best: BTreeMap<Miss, u64> = BTreeMap::new();
        for c in candidates {
            match self.miss(c) {
                None => now += 1,
                Some(m) => {
                    let amount = match &m {
                        Miss::TooSmall(d) => d.of(&c.capacity, Side::Total),
                        Miss::Insufficient(d) => d.of(&c.capacity, Side::Free),
                        _ => None,
                    };
                    if let Some(a) = amount {
                        let b = best.entry(m.clone()).or_default();
                        *b = (*b).max(a);
                    }
                    if matches!(m, Miss::Insufficient(_)) {
                        later += 1;
                    }
                    *counts.entry(m).or_default() += 1;
                }
            }
        }
        // Most common first, like the example in the doc above.
        let mut counts: Vec<(Miss, usize)> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let parts: Vec<String> = counts
            .iter()
            .map(|(m, n)| {
                let need = |d: &Dim| d.show(d.need(&self.resources).unwrap_or(0));
                let has = |d: &Dim| d.show(best.get(m).copied().unwrap_or(0));
                match m {
                    Miss::Unhealthy => format!("{n} unhealthy"),
                    Miss::NotPinned => format!("{n} not the pinned provider"),
                    Miss::GpuModel(model) => format!("{n} without a {model} GPU"),
                    Miss::Label(k, v) => format!("{n} label {k}={v} missing"),
                    Miss::Scope(why) => format!("{n} {why}"),
                    Miss::TooSmall(d) => format!(
                        "{n} too small for {} (needs {}, largest {})",
                        d.name(),
                        need(d),
                        has(d)
                    ),
                    Miss::Insufficient(Dim::Deployments) => {
                        format!("{n} already running their max_deployments")
                    }
                    Miss::Insufficient(d) => format!(
                        "{n} insufficient {} (needs {}, most free {})",
                        d.name(),
                        need(d),
                        has(d)
                    ),
                }
            })
            .collect();
        let blocker = match counts.first() {
            _ if now > 0 => "fits".to_string(),
            Some((m, _)) => m.key(),
            None => "none_known".to_string(),
        };
        let mut text = format!("{now}/{} providers can run it now", candidates.len());
        if candidates.is_empty() {
            text.push_str(": none known (is this node connected to the mesh?)");
        } else if !parts.is_empty() {
            text.push_str(": ");
            text.push_str(&parts.join(", "));
        }
        Verdict {
            providers: candidates.len(),
            now,
            later,
            text,
            blocker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{Capacity, ProviderKind, Tier};

    fn provider(id: &str, cpu_total: u64, cpu_used: u64, region: &str) -> Candidate {
        let r = |cpu| Resources {
            cpu_millis: cpu,
            memory_bytes: 8 << 30,
            ..Resources::ZERO
        };
        Candidate {
            id: id.into(),
            name: id.into(),
            kind: ProviderKind::Memory,
            tier: Tier::Discovered,
            owner_id: "o".into(),
            owner_addr: String::new(),
            healthy: true,
            capacity: Capacity {
                total: r(cpu_total),
                reserved: r(cpu_used).saturating_sub(&Resources {
                    memory_bytes: 8 << 30,
                    ..Resources::ZERO
                }),
                ..Capacity::default()
            },
            labels: [(labels::REGION.to_string(), region.to_string())].into(),
            version: 0,
            gpus: Vec::new(),
        }
    }

    #[test]
    fn reasons_are_counted_per_dimension_and_label_like_a_pending_pod() {
        let cands = vec![
            provider("a", 4000, 2000, "eu-west"),
            provider("b", 4000, 1500, "eu-west"),
            provider("c", 8000, 7000, "eu-west"),
            provider("d", 8000, 0, "us-east"),
        ];
        let req: BTreeMap<String, String> =
            [(labels::REGION.to_string(), "eu-west".to_string())].into();
        let need = Need {
            resources: Resources {
                cpu_millis: 4000,
                ..Resources::ZERO
            },
            required_labels: Some(&req),
            ..Need::default()
        };
        let v = need.explain(&cands);
        assert_eq!(
            v.text,
            "0/4 providers can run it now: 3 insufficient cpu (needs 4, most free 2.5), 1 label region=eu-west missing"
        );
        assert!(!v.never());
        assert_eq!((v.now, v.later), (0, 3));
        assert_eq!(v.blocker, "insufficient_cpu");

        // More than anyone has in total: never.
        let huge = Need {
            resources: Resources {
                cpu_millis: 16_000,
                ..Resources::ZERO
            },
            ..Need::default()
        };
        let v = huge.explain(&cands);
        assert!(v.never(), "{}", v.text);
        assert!(
            v.text.contains("4 too small for cpu (needs 16, largest 8)"),
            "{}",
            v.text
        );
        // A provider at its max_deployments is a dimension of its own.
        let mut full = provider("e", 8000, 0, "eu-west");
        full.capacity.max_deployments = Some(1);
        full.capacity.deployments = 1;
        let small = Need {
            resources: Resources {
                cpu_millis: 100,
                ..Resources::ZERO
            },
            ..Need::default()
        };
        let v = small.explain(&[full.clone()]);
        assert_eq!(
            v.text,
            "0/1 providers can run it now: 1 already running their max_deployments"
        );
        assert_eq!((v.now, v.later), (0, 1));
        assert_eq!(v.blocker, "max_deployments");
        assert!(!small.feasible(&full));
        full.capacity.deployments = 0;
        assert!(small.feasible(&full));
        // Knowing no provider at all is not "never": the mesh may not be heard yet.
        assert!(!Need::default().explain(&[]).never());
    }
}
