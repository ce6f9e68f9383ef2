//! GPUs: inventory through NVML (or an in-memory twin) and assignment of
//! specific GPUs, by UUID, to deployments.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use tracing::debug;

use super::error::ResourceError;

/// One GPU as NVML reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_bytes: u64,
    /// Memory in use when last read, by any process.
    pub memory_used_bytes: u64,
    /// Percent of time a kernel ran over the last sample period.
    pub utilization_pct: u32,
}

/// One GPU of a provider as its owner last read it, in the provider's
/// record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuStatus {
    pub gpu: GpuInfo,
    /// Deployments holding it now (one exclusively, or any number shared).
    pub holders: u32,
}

/// Reads the GPU inventory of this machine.
pub trait GpuProbe: Send + Sync {
    /// The GPUs present now; a machine without a driver has none.
    fn inventory(&self) -> Vec<GpuInfo>;

    /// A fresh reading, or why none could be taken (then the last one
    /// stands: a passing driver error must not take every GPU away).
    fn read(&self) -> Result<Vec<GpuInfo>, String> {
        Ok(self.inventory())
    }
}

/// The real probe: NVIDIA's management library, loaded at run time.
#[derive(Debug, Default)]
pub struct NvmlProbe;

impl GpuProbe for NvmlProbe {
    fn inventory(&self) -> Vec<GpuInfo> {
        self.read().unwrap_or_else(|e| {
            // No driver or no library is the normal case off GPU hosts.
            debug!(error = %e, "no NVIDIA GPUs visible");
            Vec::new()
        })
    }

    fn read(&self) -> Result<Vec<GpuInfo>, String> {
        // Loading the library and initialising NVML costs far more than a
        // reading: once per process.
        static NVML: OnceLock<Result<nvml_wrapper::Nvml, String>> = OnceLock::new();
        let nvml = NVML
            .get_or_init(|| nvml_wrapper::Nvml::init().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)?;
        nvml_inventory(nvml).map_err(|e| e.to_string())
    }
}

fn nvml_inventory(
    nvml: &nvml_wrapper::Nvml,
) -> Result<Vec<GpuInfo>, nvml_wrapper::error::NvmlError> {
    let mut out = Vec::new();
    for index in 0..nvml.device_count()? {
        let dev = nvml.device_by_index(index)?;
        let memory = dev.memory_info().ok();
        out.push(GpuInfo {
            index,
            uuid: dev.uuid()?,
            model: dev.name()?,
            memory_bytes: memory.as_ref().map_or(0, |m| m.total),
            memory_used_bytes: memory.as_ref().map_or(0, |m| m.used),
            utilization_pct: dev.utilization_rates().map(|u| u.gpu).unwrap_or(0),
        });
    }
    Ok(out)
}

/// Steps of the figures a provider's record carries: gossip sends the
/// whole record on every change, and a busy GPU's exact figures change on
/// every reading.
const UTILIZATION_STEP_PCT: u32 = 5;
const MEMORY_STEP_BYTES: u64 = 256 << 20;

/// A reading rounded to the steps above (to the nearest step).
fn coarse(mut g: GpuInfo) -> GpuInfo {
    let u = UTILIZATION_STEP_PCT;
    g.utilization_pct = ((g.utilization_pct + u / 2) / u * u).min(100);
    let m = MEMORY_STEP_BYTES;
    g.memory_used_bytes = g.memory_used_bytes.saturating_add(m / 2) / m * m;
    g
}

/// Keeps a provider's GPUs fresh: the ones it started with (within its
/// `resource_limits.gpu`), re-read for memory in use and utilisation; one
/// the probe no longer sees is no longer offered until it returns.
pub struct GpuRefresh {
    probe: Arc<dyn GpuProbe>,
    known: BTreeSet<String>,
}

impl GpuRefresh {
    pub fn new(probe: Arc<dyn GpuProbe>, pool: &GpuPool) -> GpuRefresh {
        GpuRefresh {
            probe,
            known: pool.gpus.iter().map(|g| g.uuid.clone()).collect(),
        }
    }

    pub fn follows_any(&self) -> bool {
        !self.known.is_empty()
    }

    /// A fresh reading of the GPUs this provider offers, or None when none
    /// could be taken (the last one stands). Read outside any lock: a
    /// driver call may block.
    pub fn read(&self, provider: &str) -> Option<Vec<GpuInfo>> {
        match self.probe.read() {
            Ok(gpus) => Some(
                gpus.into_iter()
                    .filter(|g| self.known.contains(&g.uuid))
                    .map(coarse)
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(provider, error = %e, "cannot read the GPUs: keeping the last reading");
                None
            }
        }
    }
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
                    memory_used_bytes: 0,
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

/// The in-memory twin of a driver whose readings change: a test sets
/// what the next reading returns, or makes it fail.
#[derive(Debug)]
pub struct GpuReadings(std::sync::Mutex<Result<Vec<GpuInfo>, String>>);

impl GpuReadings {
    pub fn new(gpus: Vec<GpuInfo>) -> GpuReadings {
        GpuReadings(std::sync::Mutex::new(Ok(gpus)))
    }

    pub fn set(&self, gpus: Vec<GpuInfo>) {
        *self.0.lock().expect("readings lock") = Ok(gpus);
    }

    pub fn fail(&self, why: &str) {
        *self.0.lock().expect("readings lock") = Err(why.to_string());
    }
}

impl GpuProbe for GpuReadings {
    fn inventory(&self) -> Vec<GpuInfo> {
        self.read().unwrap_or_default()
    }

    fn read(&self) -> Result<Vec<GpuInfo>, String> {
        self.0.lock().expect("readings lock").clone()
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
    /// A GPU no longer present is not offered (its holders keep their
    /// claim, should it return).
    pub fn refresh(&mut self, gpus: Vec<GpuInfo>) {
        for g in &gpus {
            self.holders.entry(g.uuid.clone()).or_default();
        }
        self.gpus = gpus;
    }

    pub fn gpus(&self) -> &[GpuInfo] {
        &self.gpus
    }

    /// Each GPU offered, with how many deployments hold it.
    pub fn statuses(&self) -> Vec<GpuStatus> {
        self.gpus
            .iter()
            .map(|g| GpuStatus {
                gpu: g.clone(),
                holders: self.holders.get(&g.uuid).map_or(0, |h| {
                    h.shared.len() as u32 + u32::from(h.exclusive.is_some())
                }),
            })
            .collect()
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

    #[test]
    fn a_refresh_follows_the_gpus_it_started_with_and_keeps_the_last_reading_on_error() {
        let start = FakeGpus::uniform(2, "NVIDIA H100").0;
        let mut pool = GpuPool::new(start.clone());
        let held = pool.assign("a", 1, None, false).unwrap();
        let readings = Arc::new(GpuReadings::new(start.clone()));
        let refresh = GpuRefresh::new(readings.clone(), &pool);

        // Fresh figures, and a GPU this provider never offered (another
        // provider's, or beyond resource_limits.gpu) stays out.
        let mut now = start.clone();
        now[0].utilization_pct = 87;
        now[0].memory_used_bytes = (10 << 30) + 1000;
        let mut stranger = now[1].clone();
        stranger.uuid = "GPU-other".into();
        now.push(stranger);
        readings.set(now);
        pool.refresh(refresh.read("p").unwrap());
        let statuses = pool.statuses();
        assert_eq!(statuses.len(), 2);
        assert_eq!(
            (
                statuses[0].gpu.utilization_pct,
                statuses[0].gpu.memory_used_bytes
            ),
            (85, 10 << 30),
            "rounded to 5 % and 256 MiB steps"
        );
        let holders: Vec<u32> = statuses.iter().map(|s| s.holders).collect();
        let expect: Vec<u32> = start
            .iter()
            .map(|g| u32::from(held.contains(&g.uuid)))
            .collect();
        assert_eq!(holders, expect);

        // A failed reading changes nothing.
        readings.fail("NVML: GPU is lost");
        assert_eq!(refresh.read("p"), None);

        // A GPU that vanished is not offered; it returns with its holder.
        readings.set(vec![start[1].clone()]);
        pool.refresh(refresh.read("p").unwrap());
        assert_eq!(pool.gpus().len(), 1);
        readings.set(start.clone());
        pool.refresh(refresh.read("p").unwrap());
        assert_eq!(pool.held_by("a"), held);
    }
}
