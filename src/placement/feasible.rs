//! Feasibility: which providers can take a deployment at all, as far as the
//! cached view says. Ranking only orders what passes here; the owner still
//! re-checks under its own lock when it admits.

use std::collections::BTreeMap;

use crate::resource::{labels, Candidate, Resources};

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
}

impl Need<'_> {
    /// Can `c` take this deployment? Every filter must pass.
    pub fn feasible(&self, c: &Candidate) -> bool {
        healthy(c)
            && fits(c, &self.resources)
            && pinned(c, self.provider_id)
            && gpu_model(c, self.gpu_model)
            && has_labels(c, self.required_labels)
    }
}

fn healthy(c: &Candidate) -> bool {
    c.healthy
}

fn fits(c: &Candidate, need: &Resources) -> bool {
    c.capacity.available().fits(need)
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
