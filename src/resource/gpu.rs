//! GPUs: inventory through NVML (or an in-memory twin) and assignment of
//! specific GPUs, by UUID, to deployments.

use std::collections::{BTreeMap, BTreeSet};

use tracing::debug;

use super::error::ResourceError;

/// One GPU as NVML reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_bytes: u64,
    /// Percent of time a kernel ran over the last sample period.
    pub utilization_pct: u32,
}

/// Reads the GPU inventory of this machine.
pub trait GpuProbe: Send + Sync {
    /// The GPUs present now; a machine without a driver has none.
    fn inventory(&self) -> Vec<GpuInfo>;
}

/// The real probe: NVIDIA's management library, loaded at run time.
#[derive(Debug, Default)]
pub struct NvmlProbe;

impl GpuProbe for NvmlProbe {
    fn inventory(&self) -> Vec<GpuInfo> {
        match nvml_inventory() {
            Ok(gpus) => gpus,
            Err(e) => {
                // No driver or no library is the normal case off GPU hosts.
                debug!(error = %e, "no NVIDIA GPUs visible");
                Vec::new()
            }
        }
    }
}

fn nvml_inventory() -> Result<Vec<GpuInfo>, nvml_wrapper::error::NvmlError> {
    let nvml = nvml_wrapper::Nvml::init()?;
    let mut out = Vec::new();
    for index in 0..nvml.device_count()? {
        let dev = nvml.device_by_index(index)?;
        out.push(GpuInfo {
            index,
            uuid: dev.uuid()?,
            model: dev.name()?,
            memory_bytes: dev.memory_info().map(|m| m.total).unwrap_or(0),
            utilization_pct: dev.utilization_rates().map(|u| u.gpu).unwrap_or(0),
        });
    }
    Ok(out)
}

/// The in-memory twin of NVML, for tests and simulations.
#[derive(Debug, Clone, Default)]
pub struct FakeGpus(pub Vec<GpuInfo>);

impl FakeGpus {
    /// `count` GPUs of `model`, with UUIDs `GPU-<model>-<i>`.
    pub fn uniform(count: u32, model: &str) -> FakeGpus {
        FakeGpus(
            (0..count)
                .map(|index| GpuInfo {
                    index,
                    uuid: format!("GPU-{}-{index}", model.replace(' ', "-")),
                    model: model.to_string(),
                    memory_bytes: 80 << 30,
                    utilization_pct: 0,
                })
                .collect(),
        )
    }
}

impl GpuProbe for FakeGpus {
    fn inventory(&self) -> Vec<GpuInfo> {
        self.0.clone()
    }
}

#[derive(Debug, Clone, Default)]
struct Holders {
    exclusive: Option<String>,
    shared: BTreeSet<String>,
}

impl Holders {
    fn is_free(&self) -> bool {
        self.exclusive.is_none() && self.shared.is_empty()
    }
}

/// Which deployment holds which GPU. A GPU is held by one deployment
/// exclusively, or by any number that asked for sharing; never both.
#[derive(Debug, Clone, Default)]
pub struct GpuPool {
    gpus: Vec<GpuInfo>,
    holders: BTreeMap<String, Holders>,
}

impl GpuPool {
    pub fn new(gpus: Vec<GpuInfo>) -> GpuPool {
        let mut pool = GpuPool::default();
        pool.refresh(gpus);
        pool
    }

    /// Takes a new inventory; assignments to GPUs still present are kept.
    pub fn refresh(&mut self, gpus: Vec<GpuInfo>) {
        for g in &gpus {
            self.holders.entry(g.uuid.clone()).or_default();
        }
        self.gpus = gpus;
    }

    pub fn gpus(&self) -> &[GpuInfo] {
        &self.gpus
    }

    /// GPUs nobody holds.
    pub fn free_count(&self) -> u32 {
        self.gpus
            .iter()
            .filter(|g| self.holders.get(&g.uuid).is_none_or(Holders::is_free))
            .count() as u32
    }

    /// Distinct models present, for the `gpu.model` label.
    pub fn models(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.gpus.iter().map(|g| g.model.as_str()).collect();
        set.into_iter().map(String::from).collect()
    }

    /// Assigns `count` GPUs (of `model`, when given) to `key`; returns their
    /// UUIDs. Calling again for a key that holds GPUs returns the same ones.
    pub fn assign(
        &mut self,
        key: &str,
        count: u32,
        model: Option<&str>,
        shared: bool,
    ) -> Result<Vec<String>, ResourceError> {
        let held = self.held_by(key);
        if !held.is_empty() || count == 0 {
            return Ok(held);
        }
        let model_ok =
            |g: &GpuInfo| model.is_none_or(|m| g.model.to_lowercase().contains(&m.to_lowercase()));
        let mut candidates: Vec<(usize, &GpuInfo)> = self
            .gpus
            .iter()
            .filter(|g| model_ok(g))
            .filter_map(|g| {
                let h = self.holders.get(&g.uuid)?;
                match (shared, h.exclusive.is_some()) {
                    (false, _) if h.is_free() => Some((0, g)),
                    (true, false) => Some((h.shared.len(), g)),
                    _ => None,
                }
            })
            .collect();
        // Sharers spread over the least-shared GPUs; index breaks ties.
        candidates.sort_by_key(|(load, g)| (*load, g.index));
        if (candidates.len() as u32) < count {
            let what = model.map_or("GPUs".to_string(), |m| format!("{m} GPUs"));
            return Err(ResourceError::Exhausted {
                provider: format!("gpu pool ({} {what} usable now)", candidates.len()),
                need: super::types::Resources {
                    gpus: count,
                    ..Default::default()
                },
                available: super::types::Resources {
                    gpus: candidates.len() as u32,
                    ..Default::default()
                },
            });
        }
        let uuids: Vec<String> = candidates
            .iter()
            .take(count as usize)
            .map(|(_, g)| g.uuid.clone())
            .collect();
        for u in &uuids {
            self.hold(u, key, shared);
        }
        Ok(uuids)
    }

    /// Records an assignment found in the backend after a restart.
    pub fn adopt(&mut self, key: &str, uuids: &[String], shared: bool) {
        for u in uuids {
            self.hold(u, key, shared);
        }
    }

    fn hold(&mut self, uuid: &str, key: &str, shared: bool) {
        let h = self.holders.entry(uuid.to_string()).or_default();
        if shared {
            h.shared.insert(key.to_string());
        } else {
            h.exclusive = Some(key.to_string());
        }
    }

    pub fn release(&mut self, key: &str) {
        for h in self.holders.values_mut() {
            if h.exclusive.as_deref() == Some(key) {
                h.exclusive = None;
            }
            h.shared.remove(key);
        }
    }

    pub fn held_by(&self, key: &str) -> Vec<String> {
        self.gpus
            .iter()
            .filter(|g| {
                self.holders
                    .get(&g.uuid)
                    .is_some_and(|h| h.exclusive.as_deref() == Some(key) || h.shared.contains(key))
            })
            .map(|g| g.uuid.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mixed() -> GpuPool {
        let mut gpus = FakeGpus::uniform(2, "NVIDIA H100 80GB HBM3").0;
        let mut a100 = FakeGpus::uniform(2, "NVIDIA A100-SXM4-40GB").0;
        for (i, g) in a100.iter_mut().enumerate() {
            g.index = 2 + i as u32;
        }
        gpus.extend(a100);
        GpuPool::new(gpus)
    }

    #[test]
    fn exclusive_gpus_are_never_shared() {
        let mut pool = mixed();
        let a = pool.assign("a", 3, None, false).unwrap();
        assert_eq!(a.len(), 3);
        let b = pool.assign("b", 1, None, false).unwrap();
        assert!(!a.contains(&b[0]));
        let err = pool.assign("c", 1, None, false).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        pool.release("a");
        assert_eq!(pool.free_count(), 3);
        assert_eq!(pool.assign("c", 3, None, false).unwrap().len(), 3);
    }

    #[test]
    fn model_filter_and_specific_uuids() {
        let mut pool = mixed();
        let h = pool.assign("h", 2, Some("h100"), false).unwrap();
        assert!(h.iter().all(|u| u.contains("H100")), "{h:?}");
        assert!(pool.assign("x", 1, Some("H100"), false).is_err());
        assert_eq!(pool.held_by("h"), h);
        assert_eq!(
            pool.assign("h", 2, Some("h100"), false).unwrap(),
            h,
            "retry gets the same GPUs"
        );
    }

    #[test]
    fn sharing_only_when_asked() {
        let mut pool = GpuPool::new(FakeGpus::uniform(1, "T4").0);
        let s1 = pool.assign("s1", 1, None, true).unwrap();
        let s2 = pool.assign("s2", 1, None, true).unwrap();
        assert_eq!(s1, s2);
        assert!(
            pool.assign("e", 1, None, false).is_err(),
            "a shared GPU is not exclusive"
        );
        pool.release("s1");
        pool.release("s2");
        let e = pool.assign("e", 1, None, false).unwrap();
        assert!(
            pool.assign("s3", 1, None, true).is_err(),
            "an exclusive GPU is not shared"
        );
        assert_eq!(e, s1);
    }

    #[test]
    fn refresh_keeps_assignments() {
        let mut pool = mixed();
        let a = pool.assign("a", 1, Some("A100"), false).unwrap();
        pool.refresh(mixed().gpus().to_vec());
        assert_eq!(pool.held_by("a"), a);
        assert_eq!(pool.models().len(), 2);
    }

    #[test]
    fn no_driver_means_no_gpus() {
        // On machines without libnvidia-ml this is empty, quietly; on a GPU
        // host it lists real devices with UUIDs.
        for g in NvmlProbe.inventory() {
            assert!(
                g.uuid.starts_with("GPU-") || g.uuid.starts_with("MIG-"),
                "{g:?}"
            );
        }
    }
}
